"""The history events a Standard execution writes, counted on a synthesized state machine definition.

Step Functions fails a Standard execution whose history reaches 25,000 events
(https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html, "Maximum execution history size").
The event types are botocore's HistoryEventType (https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html).
Per visit a state writes <Type>StateEntered and <Type>StateExited (a Fail state only FailStateEntered); a Task
also TaskScheduled, TaskStarted and TaskSucceeded, plus TaskSubmitted for .sync and .waitForTaskToken; each
attempt a retrier repeats writes TaskScheduled, TaskStarted (TaskSubmitted) and TaskFailed. The execution adds
ExecutionStarted and its end event.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import botocore.session

EXECUTION_EVENTS = ("ExecutionStarted", "ExecutionSucceeded")
DEFAULT_MAX_ATTEMPTS = 3  # a retrier without MaxAttempts (Amazon States Language)


@functools.cache
def event_types() -> frozenset[str]:
    model = botocore.session.get_session().get_service_model("stepfunctions")
    return frozenset(model.shape_for("HistoryEventType").enum)


def _known(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in event_types()]
    assert not unknown, f"not Step Functions history event types: {unknown}"
    return names


def _submits(state: dict[str, Any]) -> bool:
    resource = str(state.get("Resource", ""))
    return resource.endswith((".sync", ".waitForTaskToken")) or ".sync:" in resource


def visit_events(state: dict[str, Any]) -> list[str]:
    """The events one visit of ``state`` writes when it succeeds (or is caught) at its first attempt."""
    kind = state["Type"]
    names = [f"{kind}StateEntered"] if kind == "Fail" else [f"{kind}StateEntered", f"{kind}StateExited"]
    if kind == "Task":
        names[1:1] = ["TaskScheduled", "TaskStarted", *(["TaskSubmitted"] if _submits(state) else []), "TaskSucceeded"]
    return _known(names)


def retry_events(state: dict[str, Any]) -> int:
    """The events every retry of ``state`` may add, each retrier spending all its attempts."""
    attempts = sum(retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS) for retrier in state.get("Retry", []))
    per_attempt = _known(
        ["TaskScheduled", "TaskStarted", *(["TaskSubmitted"] if _submits(state) else []), "TaskFailed"]
    )
    return attempts * len(per_attempt)


def successors(state: dict[str, Any]) -> Iterator[str]:
    if "Next" in state:
        yield state["Next"]
    if "Default" in state:
        yield state["Default"]
    for rule in state.get("Choices", []):
        yield rule["Next"]
    for catcher in state.get("Catch", []):
        yield catcher["Next"]


def loops(definition: dict[str, Any]) -> dict[str, list[str]]:
    """Each loop of the definition by its first state (the target of the edge that closes it): its states."""
    states = definition["States"]
    for state in states.values():
        assert state["Type"] not in ("Map", "Parallel"), "nested state machines: count their branches too"
    found: dict[str, list[str]] = {}
    stack: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        stack.append(name)
        for target in dict.fromkeys(successors(states[name])):
            if target in stack:
                found[target] = stack[stack.index(target) :]
            elif target not in done:
                visit(target)
        stack.pop()
        done.add(name)

    visit(definition["StartAt"])
    return found


def loop_events(definition: dict[str, Any], head: str) -> int:
    """The events one pass of the loop starting at ``head`` writes (no retries)."""
    states = definition["States"]
    return sum(len(visit_events(states[name])) for name in loops(definition)[head])


def longest_run_events(definition: dict[str, Any]) -> int:
    """The most events an execution writes on any path, every loop passed once and every retry spent."""
    states = definition["States"]
    closing = {(cycle[-1], head) for head, cycle in loops(definition).items()}

    @functools.cache
    def longest(name: str) -> int:
        state = states[name]
        after = [longest(t) for t in dict.fromkeys(successors(state)) if (name, t) not in closing]
        return len(visit_events(state)) + retry_events(state) + max(after, default=0)

    return len(_known(list(EXECUTION_EVENTS))) + longest(definition["StartAt"])


# --- the time a path can take: Wait states and every retrier's back-off ------------------------------------------
DEFAULT_INTERVAL_S = 1  # a retrier without IntervalSeconds (Amazon States Language)
DEFAULT_BACKOFF = 2.0  # ... without BackoffRate


def waiting_seconds(state: dict[str, Any]) -> float:
    """The longest one visit of ``state`` waits, apart from its calls: a Wait state's Seconds, and the back-off of
    every retrier spending all its attempts (an error matches one retrier; the sum bounds any mix of errors), each
    interval capped by MaxDelaySeconds where set."""
    seconds = float(state.get("Seconds", 0)) if state["Type"] == "Wait" else 0.0
    assert state["Type"] != "Wait" or "Seconds" in state, "a Wait by path or timestamp: bound it here"
    for retrier in state.get("Retry", []):
        interval = retrier.get("IntervalSeconds", DEFAULT_INTERVAL_S)
        backoff = retrier.get("BackoffRate", DEFAULT_BACKOFF)
        cap = retrier.get("MaxDelaySeconds", float("inf"))
        attempts = retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS)
        seconds += sum(min(interval * backoff**attempt, cap) for attempt in range(attempts))
    return seconds


def loop_seconds(definition: dict[str, Any], head: str) -> float:
    """What one pass of the loop starting at ``head`` may wait."""
    states = definition["States"]
    return sum(waiting_seconds(states[name]) for name in loops(definition)[head])


def longest_run_seconds(definition: dict[str, Any]) -> float:
    """The most any path waits, every loop passed once."""
    states = definition["States"]
    closing = {(cycle[-1], head) for head, cycle in loops(definition).items()}

    @functools.cache
    def longest(name: str) -> float:
        after = [longest(t) for t in dict.fromkeys(successors(states[name])) if (name, t) not in closing]
        return waiting_seconds(states[name]) + max(after, default=0.0)

    return longest(definition["StartAt"])
