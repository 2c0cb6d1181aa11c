"""Names made from a Step Functions execution: a prefix and a hash of the execution ARN, 32 hex digits.

Not the execution name: StartExecution allows 80 characters there (a console start uses a 36-character UUID), more
than SageMaker's and Bedrock's 63-character names leave after a prefix that carries the name prefix and the stage.
The ARN is unique per account, region, state machine and execution name, so the hash is too, and whoever knows the
ARN (the state machine from ``$$.Execution.Id``, a teardown from the status event's ``executionArn``, the kit from
StartExecution's answer) computes the same name. Neither the CDK nor pydantic is imported: the kit loads this module.
"""

from __future__ import annotations

import hashlib

# What an execution creates is named by a hash of its ARN (32 hex digits), so the teardown can find it.
NAME_HASH = "MD5"
HASH_DIGITS = 32


def execution_id(execution_arn_path: str) -> str:
    """The intrinsic that names what one execution creates: a hash of its execution ARN (32 hex digits).

    The pipeline applies it to ``$$.Execution.Id``; the teardown to the ended execution's ARN from the Step
    Functions status event, so it finds what that execution created by name.
    """
    return f"States.Hash({execution_arn_path}, '{NAME_HASH}')"


def execution_hash(execution_arn: str) -> str:
    """What ``execution_id`` computes in Step Functions for this execution ARN: States.Hash gives the digest in
    lowercase hex (https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html), here the MD5
    of the ARN, 32 digits. A name, not a secret: the kit finds what a run created by it."""
    return hashlib.new(NAME_HASH.lower(), execution_arn.encode("utf-8"), usedforsecurity=False).hexdigest()


def hashed_name(prefix: str, execution_arn_path: str) -> str:
    """The intrinsic for ``prefix`` followed by the hash of the execution ARN at ``execution_arn_path``."""
    return f"States.Format('{prefix}{{}}', {execution_id(execution_arn_path)})"


def name_for(prefix: str, execution_arn: str) -> str:
    """What ``hashed_name(prefix, …)`` gives in Step Functions for this execution ARN."""
    return f"{prefix}{execution_hash(execution_arn)}"
