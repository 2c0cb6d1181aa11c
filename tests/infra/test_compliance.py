"""Compliance over the real app in both stages: cdk-nag AwsSolutions and cfn-lint."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import pytest

from stacks.shared.nag import GRANULAR_RULES, MIN_REASON_LENGTH
from tests.conftest import SYNTHS, once_per_run, run_folder

if TYPE_CHECKING:  # cfn-lint is imported where it runs: a worker that lints nothing does not load it
    from cfnlint.rules import Match
    from cfnlint.runner import Runner


def test_cdk_nag_reports_nothing_unsuppressed(each_stage: Any) -> None:
    # Errors, warnings and infos alike: cdk-nag reports them as annotations, which the CDK CLI shows per stack
    # (cdk.json keeps them out of the app's validation report: tests/infra/test_regions.py says why).
    for stack_id, messages in each_stage.messages.items():
        findings = [m for m in messages if "AwsSolutions-" in m["data"]]
        assert findings == [], f"{stack_id}: {findings}"


def test_every_suppression_is_reasoned_and_granular_where_the_rule_is(each_stage: Any) -> None:
    seen = 0
    for template in each_stage.templates.values():
        for logical_id, resource in template["Resources"].items():
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                seen += 1
                assert len(rule["reason"]) >= MIN_REASON_LENGTH, (logical_id, rule)
                if rule["id"] in GRANULAR_RULES:
                    assert rule.get("applies_to"), (logical_id, rule)
                    for item in rule["applies_to"]:
                        # Each item is one literal finding (no regex), never a catch-all action.
                        assert isinstance(item, str) and item.startswith(("Action::", "Resource::", "Policy::")), rule
                        assert item not in ("Action::*", "Action::bedrock:*", "Action::s3:*", "Action::iam:*"), rule
    assert seen > 0


def test_no_rule_is_suppressed_on_a_whole_stack(each_stage: Any) -> None:
    for stack in each_stage.stacks.values():
        assert "cdk_nag" not in json.dumps(each_stage.templates[stack.node.id].get("Metadata", {}))


@functools.cache
def _linter(region: str) -> Runner:
    """One cfn-lint runner per region, its rules loaded once (as the cfn-lint CLI runs many templates)."""
    from cfnlint.config import ConfigMixIn
    from cfnlint.runner import Runner

    return Runner(ConfigMixIn(regions=[region]))


def lint(text: str, region: str) -> list[Match]:
    """What ``cfnlint.api.lint(text, regions=[region])`` returns, without loading the rules again."""
    from cfnlint.decode.decode import decode_str

    template, errors = decode_str(text)
    if errors or template is None:
        return list(errors or [])
    return list(_linter(region).validate_template(template))


def cfn_lint_errors(template: dict[str, Any], region: str, factory: pytest.TempPathFactory) -> list[str]:
    """cfn-lint's errors (E rules) on ``template``. Variants share most of their stacks (a setting changes the
    stacks that read it), so a template with the same text in the same region is linted once per run."""
    text = json.dumps(template)

    def run() -> list[str]:
        return [
            f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
            for m in lint(text, region)
            if m.rule.id.startswith("E")
        ]

    return once_per_run(run_folder(factory), f"cfn-lint:{region}:{text}", run)


@pytest.mark.parametrize("stage", SYNTHS)
def test_cfn_lint_reports_no_error(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stage: str
) -> None:
    synth = request.getfixturevalue(stage)
    for stack_id, template in synth.templates.items():
        errors = cfn_lint_errors(template, synth.config.region, tmp_path_factory)
        assert errors == [], f"{stack_id}: {errors}"


def test_cfn_lint_still_catches_an_invalid_property() -> None:
    # Canary: the linter is really running with the resource schemas, also on a runner that has linted before.
    from cfnlint.api import ManualArgs
    from cfnlint.api import lint as api_lint

    bad = {"Resources": {"G": {"Type": "AWS::Bedrock::Guardrail", "Properties": {"Name": "g"}}}}
    good = {"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}
    assert lint(json.dumps(good), "us-east-1") == []
    rule_ids = {m.rule.id for m in lint(json.dumps(bad), "us-east-1")}
    assert "E3003" in rule_ids  # required BlockedInputMessaging / BlockedOutputsMessaging missing
    assert rule_ids == {m.rule.id for m in api_lint(json.dumps(bad), config=ManualArgs(regions=["us-east-1"]))}


def test_an_output_called_a_name_holds_a_name_not_an_arn(each_stage: Any) -> None:
    """`Ref` returns a resource type's primary identifier (its registry schema), which for some types is the ARN
    (AWS::SageMaker::Cluster): an output named *Name that is a Ref must be of a type whose identifier is a name."""
    from stacks.shared.registry import resource_schema

    wrong = []
    for stack_id, template in each_stage.templates.items():
        for key, output in template.get("Outputs", {}).items():
            ref = output["Value"].get("Ref") if isinstance(output["Value"], dict) else None
            if not key.endswith("Name") or ref not in template["Resources"]:
                continue
            schema = resource_schema(template["Resources"][ref]["Type"]) or {}
            identifier = schema.get("primaryIdentifier", [""])
            if len(identifier) != 1 or identifier[0].endswith(("Arn", "ARN")):
                wrong.append(f"{stack_id}.{key}: Ref returns {identifier}")
    assert wrong == []


def test_an_alarm_on_a_queue_metric_keeps_its_state_when_the_idle_queue_stops_reporting(each_stage: Any) -> None:
    # SQS reports a queue's metrics only while the queue is active (six hours after the last call on it): an alarm
    # that read the gap as "notBreaching" would turn OK while the dead letters are still there (stacks/shared/alarms.py)
    queue_alarms = [
        (stack_id, logical_id, alarm["Properties"].get("TreatMissingData"))
        for stack_id, template in each_stage.templates.items()
        for logical_id, alarm in template["Resources"].items()
        if alarm["Type"] == "AWS::CloudWatch::Alarm" and alarm["Properties"].get("Namespace") == "AWS/SQS"
    ]
    assert queue_alarms, "every variant alarms on a dead-letter queue"
    assert {missing for _, _, missing in queue_alarms} == {"ignore"}, queue_alarms


def test_every_kit_custom_resource_answers_cloudformation_within_minutes(each_stage: Any) -> None:
    """A custom resource without ServiceTimeout holds a create, update or delete for CloudFormation's default hour
    when its function never answers (aws-resource-cloudformation-customresource.html): each of the kit's own (its
    service token a kit function, with the Powertools layer) sets one longer than its function's timeout."""
    from stacks.shared.python_function import POWERTOOLS_LAYER_ACCOUNT

    seen = 0
    for stack_id, template in each_stage.templates.items():
        resources = template["Resources"]
        for logical_id, resource in resources.items():
            is_custom = (
                resource["Type"].startswith("Custom::") or resource["Type"] == "AWS::CloudFormation::CustomResource"
            )
            token = resource.get("Properties", {}).get("ServiceToken") if is_custom else None
            if not (isinstance(token, dict) and "Fn::GetAtt" in token):
                continue
            function = resources.get(token["Fn::GetAtt"][0], {})
            layers = json.dumps(function.get("Properties", {}).get("Layers", []))
            if function.get("Type") != "AWS::Lambda::Function" or POWERTOOLS_LAYER_ACCOUNT not in layers:
                continue  # the CDK's own providers
            seen += 1
            timeout = int(resource["Properties"].get("ServiceTimeout", 3600))
            assert timeout < 3600 and timeout > function["Properties"]["Timeout"], (stack_id, logical_id, timeout)
    assert seen >= 1
