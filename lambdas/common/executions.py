"""Stopping a state machine's running executions on stack deletion, for the cleanups whose stack has one (kept apart
from common/stack_cleanup.py, so that a cleanup without a state machine does not carry Step Functions calls)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from common import stack_cleanup
from common.stack_cleanup import Deadline


def stop_executions(
    state_machine_arn: str, deadline: Deadline, cause: str, stopped_before: set[str] | None = None
) -> int:
    """Stop the state machine's running executions, so none creates anything meanwhile; how many were stopped.

    ``stopped_before``: the executions an earlier look stopped, skipped (ListExecutions is eventually consistent:
    one just stopped may still be listed RUNNING); each execution stopped now is added to it.
    """
    stopped = 0
    skipped = stopped_before if stopped_before is not None else set()
    running = stack_cleanup.pages(
        stack_cleanup.client("stepfunctions").list_executions,
        "executions",
        stateMachineArn=state_machine_arn,
        statusFilter="RUNNING",
    )
    try:
        listed = list(running)
    except ClientError as err:
        # Deleted outside the stack: nothing of it runs, and failing here would fail every destroy (DELETE_FAILED).
        if stack_cleanup.error_code(err) == "StateMachineDoesNotExist":
            return 0
        raise
    for execution in listed:
        if execution["executionArn"] in skipped:
            continue
        skipped.add(execution["executionArn"])
        deadline.check("stopping the pipeline's executions")
        try:
            stack_cleanup.client("stepfunctions").stop_execution(
                executionArn=execution["executionArn"], error="StackDeleted", cause=cause
            )
            stopped += 1
        except ClientError as err:
            if stack_cleanup.error_code(err) != "ExecutionDoesNotExist":
                raise
    return stopped
