"""The name the sweep gives the teardown it starts, read by the stack too (stacks/level3_finetune/teardown.py: a
teardown named so reports only what it stopped or deleted)."""

from __future__ import annotations

import hashlib

SWEEP_PREFIX = "sweep-"
# Step Functions execution statuses after which a run is torn down (a SUCCEEDED run cleaned up itself): the
# EventBridge rule's pattern and the hourly sweep's backstop read the same.
ENDED_ABNORMALLY = ("FAILED", "TIMED_OUT", "ABORTED")


def sweep_name(execution_arn: str, redrive_count: int = 0) -> str:
    """The teardown's execution name for an ended run: 6 + 64 characters, within StartExecution's 80. A redriven
    run keeps its ARN ("Redriven executions use the same state machine definition and execution ARN",
    API_RedriveExecution) and may end abnormally again: each redrive (ListExecutions' redriveCount) gets a name of
    its own, so the sweep does not take the second end for one it already swept."""
    key = execution_arn if redrive_count == 0 else f"{execution_arn}#redrive-{redrive_count}"
    return SWEEP_PREFIX + hashlib.sha256(key.encode()).hexdigest()
