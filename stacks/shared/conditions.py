"""Choice conditions on members an AWS answer may leave out.

A Choice rule that compares a path the state's input does not hold is a States.Runtime error, which no Retry or
Catch takes, not even States.ALL (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html):
the execution fails and no one is told. The Choice page documents the guard: in an ``And``, a comparison after an
``IsPresent: true`` rule on the same path is evaluated only when the path exists
(https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-choice-state.html). It documents no
evaluation order for ``Or``, so each rule of an ``Or`` below carries its own guard and is safe whichever order the
rules are evaluated in.
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn


def equals_where_present(path: str, *values: str) -> sfn.Condition:
    """``path`` is present and equals one of ``values``: And[IsPresent, StringEquals] (or an Or of them)."""
    equals = [sfn.Condition.string_equals(path, value) for value in values]
    return sfn.Condition.and_(
        sfn.Condition.is_present(path), equals[0] if len(equals) == 1 else sfn.Condition.or_(*equals)
    )


def absent_or_equals(path: str, value: str) -> sfn.Condition:
    """``path`` is absent, or present and equal to ``value``: Or[Not(IsPresent), And[IsPresent, StringEquals]]."""
    return sfn.Condition.or_(sfn.Condition.not_(sfn.Condition.is_present(path)), equals_where_present(path, value))


def listed_a_key(answer: str) -> sfn.Condition:
    """A ListObjectsV2 answer kept whole at ``answer`` lists at least one key.

    botocore s3 2006-03-01 ListObjectsV2Output requires no member, KeyCount included, so KeyCount is compared only
    where present. An answer without it counts as listing a key when it holds Contents, and as listing none
    otherwise: Contents is a flattened XML list in the same model, so S3 sends no element, and the answer has no
    member, when no key matches. A lookup that finds nothing rejects the run with a notification before any job.
    """
    count, contents = f"{answer}.KeyCount", f"{answer}.Contents"
    return sfn.Condition.or_(
        sfn.Condition.and_(sfn.Condition.is_present(count), sfn.Condition.number_greater_than(count, 0)),
        sfn.Condition.and_(sfn.Condition.not_(sfn.Condition.is_present(count)), sfn.Condition.is_present(contents)),
    )
