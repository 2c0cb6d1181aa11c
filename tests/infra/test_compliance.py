"""Compliance over the real app in both stages: cdk-nag AwsSolutions and cfn-lint."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from stacks.shared.nag import GRANULAR_RULES, MIN_REASON_LENGTH
from tests.conftest import SYNTHS


def test_cdk_nag_reports_nothing_unsuppressed(each_stage: Any) -> None:
    # Errors already fail synthesis (the fixture would not exist); warnings and infos must be absent too.
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


@pytest.mark.parametrize("stage", SYNTHS)
def test_cfn_lint_reports_no_error(request: pytest.FixtureRequest, stage: str) -> None:
    synth = request.getfixturevalue(stage)
    for stack_id, template in synth.templates.items():
        matches = lint(json.dumps(template), config=ManualArgs(regions=[synth.config.region]))
        errors = [
            f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches if m.rule.id.startswith("E")
        ]
        assert errors == [], f"{stack_id}: {errors}"


def test_cfn_lint_still_catches_an_invalid_property() -> None:
    # Canary: the linter is really running with the resource schemas.
    bad = {"Resources": {"G": {"Type": "AWS::Bedrock::Guardrail", "Properties": {"Name": "g"}}}}
    rule_ids = {m.rule.id for m in lint(json.dumps(bad), config=ManualArgs(regions=["us-east-1"]))}
    assert "E3003" in rule_ids  # required BlockedInputMessaging / BlockedOutputsMessaging missing
