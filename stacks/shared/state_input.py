"""The first states of a state machine that may be started with any JSON value, not only an object.

    ReadInput (wraps the input: $.input) ─► CheckInputType: a string, number, boolean or null ─► not_an_object
    ─► SerializeInput ($.inputText: an object serializes as {…}, a list as […], which Choice rules can match)

The caller chains its own checks after SerializeInput (a list is told from an object there).
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


def wrapped_input(
    scope: Construct, not_an_object: sfn.IChainable, *, read_comment: str | None = None
) -> tuple[sfn.Pass, sfn.Pass]:
    """(ReadInput, SerializeInput), wired through CheckInputType to ``not_an_object``."""
    start = sfn.Pass(scope, "ReadInput", comment=read_comment, parameters={"input": sfn.JsonPath.entire_payload})
    serialize = sfn.Pass(
        scope,
        "SerializeInput",
        comment="An object serializes as {…}, a list as […]: Choice rules cannot tell them apart otherwise",
        parameters={"text": sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.input"))},
        result_path="$.inputText",
    )
    start.next(
        sfn.Choice(scope, "CheckInputType")
        .when(
            sfn.Condition.or_(
                sfn.Condition.is_string("$.input"),
                sfn.Condition.is_numeric("$.input"),
                sfn.Condition.is_boolean("$.input"),
                sfn.Condition.is_null("$.input"),
            ),
            not_an_object,
        )
        .otherwise(serialize)
    )
    return start, serialize
