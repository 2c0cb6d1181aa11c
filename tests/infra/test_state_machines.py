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
