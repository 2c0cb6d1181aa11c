"""Compliance over the real app in both stages: cdk-nag AwsSolutions and cfn-lint."""

from __future__ import annotations

import base64
import csv
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stacks.shared.nag import (
    GRANULAR_RULES,
    MIN_REASON_LENGTH,
    WILDCARD_FINDING,
    WILDCARD_RULE,
    claimed_without_resource_type,
    names,
    wildcard_actions,
    wildcard_reason,
)
from tests.conftest import SYNTHS, once_per_run, run_folder
from tests.infra.helpers import as_list, expand_action, iam_reference

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


# --- What cdk-nag suppressed, as its reports record it ------------------------------------------------------
# cdk-nag writes one NagReport CSV per stack into the cloud assembly (each variant's own folder), one row per rule
# and resource; a suppressed finding's row carries the reason of the first suppression that matched it, prefixed
# with "[<finding>] " for a granular rule (cdk-nag 2.38.2, lib/nag-pack.js ignoreRule, lib/nag-logger.js).

Row = tuple[str, str, str]  # rule id, construct path, reported reason


def suppressed_rows(assembly_dir: Path) -> set[Row]:
    rows = set()
    reports = sorted(Path(assembly_dir).glob("AwsSolutions-*-NagReport.csv"))
    assert reports, f"no cdk-nag report in {assembly_dir}"
    for report in reports:
        with report.open(newline="") as lines:
            rows |= {
                (row["Rule ID"], row["Resource ID"], row["Exception Reason"])
                for row in csv.DictReader(lines)
                if row["Compliance"] == "Suppressed"
            }
    return rows


def construct_paths(synth: Any) -> dict[str, dict[str, str]]:
    """Each stack's construct path of each logical id, as the cloud assembly records it (the CSVs name constructs;
    a template names a resource's path only when the CLI turns path metadata on)."""
    manifest = json.loads((Path(synth.assembly_dir) / "manifest.json").read_text())
    paths = {}
    for stack_id, stack in synth.stacks.items():
        artifact = manifest["artifacts"][stack.artifact_id]
        metadata = artifact.get("metadata") or {}
        if "additionalMetadataFile" in artifact:
            metadata = json.loads((Path(synth.assembly_dir) / artifact["additionalMetadataFile"]).read_text())
        paths[stack_id] = {
            entry["data"]: path.lstrip("/")
            for path, entries in metadata.items()
            for entry in entries
            if entry["type"] == "aws:cdk:logicalId"
        }
    return paths


def suppression_items(
    templates: dict[str, dict[str, Any]], paths: dict[str, dict[str, str]]
) -> Iterator[tuple[str, str, str | None, str]]:
    """Every (rule id, construct path, item or None for a rule that is not granular, reason) the templates carry."""
    for stack_id, template in templates.items():
        for logical_id, resource in template["Resources"].items():
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                reason = base64.b64decode(rule["reason"]).decode() if rule.get("is_reason_encoded") else rule["reason"]
                for item in rule.get("applies_to") or [None]:
                    yield rule["id"], paths[stack_id][logical_id], item, reason


def reported(rule_id: str, path: str, item: str | None, reason: str) -> Row:
    """The report row of a finding this suppression item was the one to suppress."""
    return rule_id, path, reason if item is None else f"[{item}] {reason}"


Variant = tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]], set[Row]]  # templates, paths, report rows


def variant_record(synth: Any) -> Variant:
    return synth.templates, construct_paths(synth), suppressed_rows(synth.assembly_dir)


def dead_suppressions(variants: dict[str, Variant]) -> list[str]:
    """Suppression items (rule, construct, item, reason) that suppressed no finding in a variant that has them."""
    return [
        f"{variant}: {key[0]} on {key[1]} [{key[2]}]: {key[3]}"
        for variant, (templates, paths, rows) in variants.items()
        for key in dict.fromkeys(suppression_items(templates, paths))
        if reported(*key) not in rows
    ]


def test_every_suppression_suppresses_a_finding_in_every_variant_that_has_it(request: pytest.FixtureRequest) -> None:
    """A suppression that suppresses nothing (the rule finds the resource compliant, the rule is gone from the
    pinned cdk-nag, or an earlier suppression already answers the finding) would silently accept a later regression
    under a reason nobody re-read. Every item must be the one cdk-nag reports for a finding in each variant that
    carries it: an item written for one configuration only (a deployment mode's grant) is added in that one only.
    Before, "in some variant" let Level 3's pipeline carry the deployment and throughput items with ft_deploy none."""
    variants = {name: variant_record(request.getfixturevalue(name)) for name in SYNTHS}
    assert dead_suppressions(variants) == []


def test_a_suppression_that_suppresses_nothing_is_found() -> None:
    # Canary: an item with no report row, and one shadowed by an earlier suppression of the same finding.
    path = "S/Policy/Resource"
    rules = [
        {"id": "AwsSolutions-IAM5", "reason": "first", "applies_to": ["Resource::*"]},
        {"id": "AwsSolutions-IAM5", "reason": "second", "applies_to": ["Resource::*", "Action::s3:Get*"]},
        {"id": "AwsSolutions-SQS3", "reason": "not a finding"},
    ]
    template = {"Resources": {"P": {"Metadata": {"cdk_nag": {"rules_to_suppress": rules}}}}}
    rows = {("AwsSolutions-IAM5", path, "[Resource::*] first"), ("AwsSolutions-IAM5", path, "[Action::s3:Get*] second")}
    assert dead_suppressions({"v": ({"S": template}, {"S": {"P": path}}, rows)}) == [
        "v: AwsSolutions-IAM5 on S/Policy/Resource [Resource::*]: second",
        "v: AwsSolutions-SQS3 on S/Policy/Resource [None]: not a finding",
    ]
    # An item used in one variant and carried unused by another is dead in that other one.
    one = [{"id": "AwsSolutions-IAM5", "reason": "r", "applies_to": ["Resource::a/*"]}]
    carried = {"S": {"Resources": {"P": {"Metadata": {"cdk_nag": {"rules_to_suppress": one}}}}}}
    used = {("AwsSolutions-IAM5", path, "[Resource::a/*] r")}
    assert dead_suppressions(
        {"with": (carried, {"S": {"P": path}}, used), "without": (carried, {"S": {"P": path}}, set())}
    ) == ["without: AwsSolutions-IAM5 on S/Policy/Resource [Resource::a/*]: r"]


def _resource_types(action: str) -> list[str]:
    """Every resource type (required or optional) the Service Authorization Reference gives ``action`` (for a
    wildcard action, of every action it stands for)."""
    service = action.split(":", 1)[0]
    return sorted(
        {
            resource_type["name"]
            for name in expand_action(action)
            for resource_type in iam_reference().actions.get_action_details(service, name)["resourceTypes"]
        }
    )


def _kit_function_roles(template: dict[str, Any]) -> set[str]:
    from stacks.shared.python_function import POWERTOOLS_LAYER_ACCOUNT

    return {
        resource["Properties"]["Role"]["Fn::GetAtt"][0]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
        and POWERTOOLS_LAYER_ACCOUNT in json.dumps(resource["Properties"].get("Layers", []))
    }


def wildcard_findings(variant: Variant) -> list[str]:
    """What the reason cdk-nag reports for each policy's "*" gets wrong. An action listed as having no resource type
    must have none in the Service Authorization Reference (not merely no required one); any other action granted on
    "*" that has a resource type, even an optional one, must be named (``service:Action``) by the reason, which
    then is a person's reason for it; a kit function's policy must name every action it grants on "*"."""
    templates, paths, rows = variant
    found = []
    for stack_id, template in templates.items():
        functions = _kit_function_roles(template)
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            actions = wildcard_actions(resource["Properties"]["PolicyDocument"])
            if not actions:
                continue
            path = paths[stack_id][logical_id]
            prefix = f"[{WILDCARD_FINDING}] "
            reasons = [r for rule, at, r in rows if rule == WILDCARD_RULE and at == path and r.startswith(prefix)]
            if len(reasons) != 1:
                found.append(f"{stack_id}/{logical_id}: {len(reasons)} reported reasons for {WILDCARD_FINDING}")
                continue
            reason = reasons[0].removeprefix(prefix)
            claimed = claimed_without_resource_type(reason)
            for action in claimed:
                if action not in actions:
                    found.append(f"{stack_id}/{logical_id}: lists {action}, which it does not grant on '*'")
                elif types := _resource_types(action):
                    found.append(f"{stack_id}/{logical_id}: lists {action} as having no resource type; it has {types}")
            for action in set(actions) - set(claimed):
                if _resource_types(action) and not names(reason, action):
                    found.append(f"{stack_id}/{logical_id}: {action} has a resource type; scope it or name it")
            roles = {role.get("Ref") for role in as_list(resource["Properties"].get("Roles", []))}
            if roles & functions:
                unnamed = [a for a in actions if a not in claimed and not names(reason, a)]
                if unnamed:
                    found.append(f"{stack_id}/{logical_id}: a kit function's reason leaves out {unnamed}")
    return found


def test_every_wildcard_reason_names_what_it_covers(request: pytest.FixtureRequest) -> None:
    for name in SYNTHS:
        assert wildcard_findings(variant_record(request.getfixturevalue(name))) == [], name


def test_a_wildcard_reason_that_hides_an_action_is_found() -> None:
    # Canary: a kit function whose "*" carries an action with an optional resource type (sagemaker:ListTags)
    # under a reason that lists it as having none, and one that the reason does not name at all.
    from stacks.shared.python_function import POWERTOOLS_LAYER_ACCOUNT

    def template(actions: list[str], reason: str) -> Variant:
        path = "S/Fn/Role/DefaultPolicy/Resource"
        statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
        policy = {
            "Type": "AWS::IAM::Policy",
            "Properties": {"PolicyDocument": {"Statement": [statement]}, "Roles": [{"Ref": "R"}]},
        }
        layer = f"arn:aws:lambda:us-east-1:{POWERTOOLS_LAYER_ACCOUNT}:layer:x:1"
        function = {
            "Type": "AWS::Lambda::Function",
            "Properties": {"Role": {"Fn::GetAtt": ["R", "Arn"]}, "Layers": [layer]},
        }
        resources = {"P": policy, "F": function}
        rows = {(WILDCARD_RULE, path, f"[{WILDCARD_FINDING}] {reason}")}
        return {"S": {"Resources": resources}}, {"S": {"P": path}}, rows

    xray = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    explanation = "Lambda's active tracing needs the xray actions."
    derived = wildcard_reason(sorted([*xray, "sagemaker:ListTags"]), [explanation])
    assert wildcard_findings(template([*xray, "sagemaker:ListTags"], derived)) != []
    assert wildcard_findings(template([*xray, "bedrock:RetrieveAndGenerate"], explanation)) == [
        "S/P: a kit function's reason leaves out ['bedrock:RetrieveAndGenerate', 'xray:PutTelemetryRecords', "
        "'xray:PutTraceSegments']"
    ]
    named = wildcard_reason(sorted([*xray, "sagemaker:ListTags"]), [explanation, "sagemaker:ListTags reads tags."])
    assert wildcard_findings(template([*xray, "sagemaker:ListTags"], named)) == []
    assert claimed_without_resource_type(named) == sorted(xray)


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
        (stack_id, alarm["Properties"].get("MetricName"), alarm["Properties"].get("TreatMissingData"))
        for stack_id, template in each_stage.templates.items()
        for alarm in template["Resources"].values()
        if alarm["Type"] == "AWS::CloudWatch::Alarm" and alarm["Properties"].get("Namespace") == "AWS/SQS"
    ]
    assert queue_alarms, "every variant alarms on a dead-letter queue"
    # The one exception: SQS reports the age of the oldest message only while the queue holds one, so for Level 2's
    # stale-change alarm no data is the good state (stacks/level2_rag/stack.py).
    expected = {"ApproximateNumberOfMessagesVisible": "ignore", "ApproximateAgeOfOldestMessage": "notBreaching"}
    assert {metric for _, metric, _ in queue_alarms} <= set(expected), queue_alarms
    assert [alarm for alarm in queue_alarms if alarm[2] != expected[alarm[1]]] == []


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


def test_every_stack_carries_the_kit_and_user_tags_for_what_its_template_cannot_tag(each_stage: Any) -> None:
    """CDK's custom-resource providers are raw resources without template tags; CloudFormation gives them the
    stack's tags at create (aws-properties-resource-tags.html), so an account that requires tags on create
    (an SCP on aws:RequestTag) accepts them. Every stack carries the kit tag and the user's tags; a level stack
    also its stage."""
    from stacks.level3_finetune.names import JOB_TAG_KEY
    from stacks.shared.facts import KIT_NAME
    from stacks.shared.settings import KIT_TAG_KEYS

    assert JOB_TAG_KEY in KIT_TAG_KEYS

    user = dict(each_stage.config.deployment.tags)
    for stack_id, stack in each_stage.stacks.items():
        wanted = {"kit": KIT_NAME, **user}
        if stack_id != "GenAiKit-0-ApiGatewayAccount":  # one stack for every stage: no stage tag
            wanted["kit-stage"] = each_stage.config.stage
        assert wanted.items() <= stack.tags.items(), (stack_id, stack.tags)
        assert set(stack.tags) - set(user) <= set(KIT_TAG_KEYS)  # the keys a user tag may not take
