"""Properties every state machine of the kit keeps, whatever its level."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.infra.asl import AslUnsupported, resolve, state_machines


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition.get("States", {}).items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _states(state[key])


def _resolved(template: dict[str, Any], part: Any) -> str:
    """A part of a definition's Fn::Join; a cross-stack value (Fn::GetStackOutput) sits inside a JSON string."""
    try:
        return resolve(template, part)
    except AslUnsupported:
        return "cross-stack-value"


def _definitions(templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for stack_id, template in templates.items():
        for logical_id, properties in state_machines(template).items():
            body = properties["DefinitionString"]
            if isinstance(body, dict):
                separator, parts = body["Fn::Join"]
                body = separator.join(_resolved(template, part) for part in parts)
            yield f"{stack_id}/{logical_id}", json.loads(body)


def notification_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """SNS publish states whose failure would decide the run's outcome. An error a state does not catch fails
    the execution (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html), so a topic
    that stays unavailable after the retries would turn a trained model into a failed run: each notification
    retries, then catches every error into the state it would have gone to anyway."""
    found = []
    for machine, definition in _definitions(templates):
        for name, state in _states(definition):
            if state.get("Type") != "Task" or not str(state.get("Resource", "")).endswith(":::sns:publish"):
                continue
            catches = [c["Next"] for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]]
            if not state.get("Retry"):
                found.append(f"{machine}.{name}: no Retry")
            if catches != [state.get("Next")]:
                found.append(f"{machine}.{name}: a failed publish goes to {catches or 'the end of the run'}")
    return found


def test_a_notification_never_decides_the_outcome_of_a_run(each_stage: Any) -> None:
    assert sum(1 for _ in _definitions(each_stage.templates)) >= 5
    assert notification_findings(each_stage.templates) == []
    # Canary: a publish without a Catch is found.
    state = {"Type": "Task", "Resource": "arn:aws:states:::sns:publish", "Next": "Done", "Retry": [{}]}
    machine = {"Type": "AWS::StepFunctions::StateMachine", "Properties": {"DefinitionString": "{}"}}
    machine["Properties"]["DefinitionString"] = json.dumps({"StartAt": "N", "States": {"N": state}})
    assert notification_findings({"S": {"Resources": {"M": machine}}}) == [
        "S/M.N: a failed publish goes to the end of the run"
    ]


# The errors Step Functions reports for a Lambda invocation Lambda itself could not run: its transient service
# exceptions and, "when Lambda hits the maximum number of invocations", Lambda.TooManyRequestsException
# (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
LAMBDA_TRANSIENT_ERRORS = {
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def _invokes_lambda(state: dict[str, Any]) -> bool:
    """A Task that invokes a function: the optimized integration, or the function's ARN as the Resource (what
    LambdaInvoke writes with payload_response_only)."""
    resource = str(state.get("Resource", ""))
    return state.get("Type") == "Task" and (resource.endswith(":::lambda:invoke") or ":lambda:" in resource)


def lambda_retry_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Lambda tasks that fail the run on an error Lambda raised before the function ran: each is retried first
    (a retrier for States.ALL or States.TaskFailed would retry the function's own errors too, so it does not count)."""
    found = []
    for machine, definition in _definitions(templates):
        for name, state in _states(definition):
            if not _invokes_lambda(state):
                continue
            retried = {error for retrier in state.get("Retry", []) for error in retrier["ErrorEquals"]}
            for error in sorted(LAMBDA_TRANSIENT_ERRORS - retried):
                found.append(f"{machine}.{name}: {error} is not retried")
    return found


def test_a_lambda_task_waits_out_lambdas_own_errors_and_throttling(each_stage: Any) -> None:
    tasks = [
        state
        for _, definition in _definitions(each_stage.templates)
        for _, state in _states(definition)
        if _invokes_lambda(state)
    ]
    assert len(tasks) >= 2  # Level 3's two validators
    assert lambda_retry_findings(each_stage.templates) == []


def test_the_lambda_retry_guard_sees_a_task_that_is_not_retried() -> None:
    retry = [{"ErrorEquals": ["Lambda.ServiceException"]}]
    states = {
        "V": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Retry": retry, "Next": "W"},
        "W": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": True},
    }
    definition = json.dumps({"StartAt": "V", "States": states})
    template = {"Resources": {"M": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {}}}}
    template["Resources"]["M"]["Properties"]["DefinitionString"] = definition
    findings = lambda_retry_findings({"S": template})
    assert "S/M.V: Lambda.TooManyRequestsException is not retried" in findings
    assert "S/M.W: Lambda.ServiceException is not retried" in findings
