"""The first states of a state machine that may be started with any JSON value, not only an object.

    ReadInput (wraps the input: $.input) ─► CheckInputType: not an object (a list, string, number, boolean or
    null) ─► not_an_object
    ─► the caller's own checks, which may read any field of $.input

CheckInputType is the one JSONata state of an otherwise JSONPath state machine: JSONPath Choice rules cannot tell
a list from an object, and telling them apart by a serialized copy of the input (States.JsonToString) doubled the
execution's state, so that an input object over half the payload quota failed with States.DataLimitExceeded,
which no Catch catches (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
JSONata's $type reads the input without copying it.
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

# A state may use JSONata while the state machine keeps JSONPath (not the other way round):
# https://docs.aws.amazon.com/step-functions/latest/dg/statemachine-structure.html (QueryLanguage). A JSONata Choice
# rule is a Condition that evaluates to true or false, and $states.input is the state's input:
# https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html,
# https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html. $type names the JSON type of a value
# ("object", "array", "string", "number", "boolean", "null"): https://docs.jsonata.org/object-functions#type
IS_AN_OBJECT = "{% $type($states.input.input) = 'object' %}"


def wrapped_input(
    scope: Construct, not_an_object: sfn.IChainable, checks: sfn.IChainable, *, read_comment: str | None = None
) -> sfn.Pass:
    """ReadInput, wired through CheckInputType to ``checks`` (an object) or ``not_an_object`` (anything else)."""
    start = sfn.Pass(scope, "ReadInput", comment=read_comment, parameters={"input": sfn.JsonPath.entire_payload})
    start.next(
        sfn.Choice.jsonata(
            scope,
            "CheckInputType",
            comment="Only an object has fields to read: a list, string, number, boolean or null is refused",
        )
        .when(sfn.Condition.jsonata(IS_AN_OBJECT), checks)
        .otherwise(not_an_object)
    )
    return start
