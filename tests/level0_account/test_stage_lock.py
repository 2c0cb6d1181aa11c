"""The invocation-logging stack's stage lock: a deploy from another stage fails before anything changes."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from stage_lock import handler as stage_lock

from common import custom_resource
from tests.lambda_helpers import FakeContext, cloudformation_answers

STACK = "GenAiKit-0-InvocationLogging"


def event(kind: str, stage: str, physical: str | None = None) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": "https://cfn-response.example/abc",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/GenAiKit-0-InvocationLogging/1",
        "RequestId": "r-1",
        "LogicalResourceId": "StageLockF993175E",
        "ResourceType": "Custom::KitStageLock",
        "ResourceProperties": {"ServiceToken": "arn:f", "Stage": stage, "StackName": STACK},
        **({"PhysicalResourceId": physical} if physical else {}),
    }


@pytest.fixture
def answers() -> Any:
    found: list[dict[str, Any]] = []
    with mock.patch.object(custom_resource.urllib.request, "urlopen", cloudformation_answers(found)):
        yield found


def run(request: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
    stage_lock.handler(request, FakeContext())
    [answer] = answers
    answers.clear()
    return answer


def test_create_records_the_stage_in_the_physical_id(answers: Any) -> None:
    answer = run(event("Create", "prod"), answers)
    assert (answer["Status"], answer["PhysicalResourceId"]) == ("SUCCESS", "stage-prod")


def test_a_redeploy_from_the_same_stage_passes_with_the_same_id(answers: Any) -> None:
    answer = run(event("Update", "prod", "stage-prod"), answers)
    assert (answer["Status"], answer["PhysicalResourceId"]) == ("SUCCESS", "stage-prod")


def test_a_deploy_from_another_stage_fails_naming_both_stages_and_the_ways_out(answers: Any) -> None:
    answer = run(event("Update", "sandbox", "stage-prod"), answers)
    assert answer["Status"] == "FAILED"
    assert answer["PhysicalResourceId"] == "stage-prod"  # a new id would make CloudFormation replace the lock
    reason = answer["Reason"]
    assert f"{STACK} was deployed by stage prod; this deploy (stage sandbox)" in reason
    assert "-c stage=prod" in reason and "--exclusively" in reason and "nothing was changed" in reason


def test_the_ways_out_carry_the_options_that_put_the_opt_in_stack_in_the_app(answers: Any) -> None:
    """Before: "Deploy it with -c stage=prod", which finds no stack: the app builds it only with invocation_logging
    true (cdk.json has false), so the command must say so."""
    request = event("Update", "sandbox", "stage-prod")
    request["ResourceProperties"]["Options"] = "-c invocation_logging=true"
    reason = run(request, answers)["Reason"]
    assert "Deploy it with -c stage=prod -c invocation_logging=true;" in reason
    assert f"destroy {STACK} with -c stage=prod -c invocation_logging=true first" in reason


def test_the_rollback_of_a_refused_deploy_passes(answers: Any) -> None:
    # CloudFormation rolls back with the old properties (stage prod) while the id still records prod.
    assert run(event("Update", "sandbox", "stage-prod"), answers)["Status"] == "FAILED"
    answer = run(event("Update", "prod", "stage-prod"), answers)
    assert (answer["Status"], answer["PhysicalResourceId"]) == ("SUCCESS", "stage-prod")


@pytest.mark.parametrize("stage", ["prod", "sandbox"])
def test_delete_always_releases(answers: Any, stage: str) -> None:
    answer = run(event("Delete", stage, "stage-prod"), answers)
    assert (answer["Status"], answer["Reason"], answer["PhysicalResourceId"]) == ("SUCCESS", "released", "stage-prod")


def test_a_request_without_a_stage_or_of_an_unknown_type_fails_and_changes_nothing(answers: Any) -> None:
    missing = run(event("Create", ""), answers)
    assert (missing["Status"], missing["Reason"]) == ("FAILED", "the Stage property is missing: nothing changed")
    odd = run(event("Replace", "prod", "stage-prod"), answers)
    assert odd["Status"] == "FAILED" and "unknown request type 'Replace'" in odd["Reason"]


def test_an_unexpected_error_still_answers(answers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: dict[str, Any]) -> tuple[str, str, str]:
        raise KeyError("x")

    monkeypatch.setattr(stage_lock, "decide", broken)
    # The resource keeps its id (a new one on an Update would make CloudFormation delete the old one)
    update = run(event("Update", "prod", "stage-prod"), answers)
    assert (update["Status"], update["Reason"], update["PhysicalResourceId"]) == ("FAILED", "KeyError", "stage-prod")
    delete = run(event("Delete", "prod", "stage-prod"), answers)
    assert (delete["Status"], delete["PhysicalResourceId"]) == ("SUCCESS", "stage-prod")
    create = run(event("Create", "prod"), answers)
    assert (create["Status"], create["PhysicalResourceId"]) == ("FAILED", "stage-unknown")
