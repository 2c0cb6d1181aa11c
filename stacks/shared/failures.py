"""Fail states whose cause carries the error the run ended on, not a pointer to somewhere else.

A Fail state's Cause becomes the execution's cause, which DescribeExecution, the console and ``kit ... status``
show. A fixed text ("See the notification") sent the reader to the topic, which has no subscriber until
``alarm_email`` is set, so the error was left to be dug out of the execution history. ``reported_fail`` writes the
state's summary and then, as JSON, the details its notification carried (the caught error, ``{"Error", "Cause"}``,
the job status that failed, the deployment left behind).

The state is a JSONata state in an otherwise JSONPath state machine, which the Amazon States Language allows
(https://docs.aws.amazon.com/step-functions/latest/dg/statemachine-structure.html, QueryLanguage); a JSONata Fail
state's Cause may be an expression (https://docs.aws.amazon.com/step-functions/latest/dg/state-fail.html). JSONata,
not a JSONPath CausePath, for two reasons: ``$exists`` keeps a detail that is absent from becoming a
States.QueryEvaluationError (a CausePath that selects nothing fails the Fail state itself), and ``$substring`` keeps
the text within the 32,768 characters an execution's cause may hold (ExecutionFailedEventDetails,
https://docs.aws.amazon.com/step-functions/latest/apireference/API_ExecutionFailedEventDetails.html), which a
caught cause already that long, serialized once more, would not.
"""

from __future__ import annotations

import json
import re

from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

# ExecutionFailedEventDetails: cause, "Maximum length of 32768"
# (https://docs.aws.amazon.com/step-functions/latest/apireference/API_ExecutionFailedEventDetails.html).
CAUSE_MAX_CHARS = 32768
# What the cause says when the state's input holds no detail at the path (a path no Choice had checked).
NO_DETAIL = "no detail was recorded at {path}"

# A JSONPath of plain field names from the root, the only form the states' details take ($.error, $.status).
_FIELD_PATH = re.compile(r"\$(\.[A-Za-z][A-Za-z0-9_]*)+")


def cause_expression(summary: str, *detail_paths: str) -> str:
    """The JSONata Cause: ``<summary>: <detail>; <detail>...``, each detail the state input's value at its path as
    JSON (or NO_DETAIL), at most CAUSE_MAX_CHARS characters in all."""
    if not detail_paths:
        raise ValueError("reported_fail needs at least one detail path; a fixed cause is a plain sfn.Fail")
    details = []
    for path in detail_paths:
        if not _FIELD_PATH.fullmatch(path):
            raise ValueError(f"detail path {path!r}: a JSONPath of field names from the root ($.error) is needed")
        value = "$states.input" + path[1:]
        # json.dumps writes a double-quoted literal with JSON's escapes, which JSONata's string literals share.
        details.append(f"($exists({value}) ? $string({value}) : {json.dumps(NO_DETAIL.format(path=path))})")
    text = f" & {json.dumps('; ')} & ".join(details)
    return f"{{% $substring({json.dumps(f'{summary}: ')} & {text}, 0, {CAUSE_MAX_CHARS}) %}}"


def reported_fail(scope: Construct, construct_id: str, *, error: str, summary: str, details: list[str]) -> sfn.Fail:
    """A Fail state named ``construct_id`` that ends the run with ``error`` and, as its cause, ``summary`` followed by
    the state input's values at ``details`` as JSON (what the run's notification carries, and what it caught)."""
    return sfn.Fail.jsonata(scope, construct_id, error=error, cause=cause_expression(summary, *details))


def input_rejected(scope: Construct) -> sfn.Fail:
    """InputRejected: the end of a run whose input its checks refused (the refusal, ``{"Error", "Cause"}``, is at
    ``$.error``)."""
    return reported_fail(
        scope, "InputRejected", error="InvalidInput", summary="The run's input was refused", details=["$.error"]
    )


def end_after(notify: tasks.SnsPublish, end: sfn.IChainable) -> None:
    """Go on from ``notify`` to ``end``, also when the publish still fails after its retries: a notification never
    decides a run's outcome (the Catch keeps the run's ``$.error``, putting the publish's own at ``$.notifyError``)."""
    notify.add_catch(end, errors=["States.ALL"], result_path="$.notifyError")
    notify.next(end)
