"""What the training-job path names its SageMaker training jobs; the stack and ``kit l4`` import it (no CDK here).

A job is ``<name_prefix>-<stage>-pt-<MD5 of the execution ARN>``. The stage keeps the sandbox's and prod's jobs,
notification rules and grants apart when both deploy to one account and region; the hash (32 hex digits) keeps any
execution name StartExecution accepts (up to 80 characters) within SageMaker's 63: the longest name prefix (17) and
stage (7) make 61. Checkpoints stay under the execution NAME (``checkpoints/<execution name>/`` in the stage's own
bucket), which is what a resumed run names.
"""

from __future__ import annotations

from stacks.shared.execution_names import hashed_name, name_for

JOB_NAME_PART = "pt"
# Each execution's checkpoints, under its name (a resumed run reuses the earlier one's): the state machine's input
# checks, the training role's grants and `kit l4` read it.
CHECKPOINTS_PREFIX = "checkpoints/"


def job_prefix(name_prefix: str, stage: str) -> str:
    """The start of every training-job name of one deployment (the EventBridge rule and the grants match it)."""
    return f"{name_prefix}-{stage}-{JOB_NAME_PART}-"


def job_name_intrinsic(prefix: str, execution_arn_path: str) -> str:
    """The intrinsic that names an execution's training job in the state machine (``$$.Execution.Id``)."""
    return hashed_name(prefix, execution_arn_path)


def job_name(name_prefix: str, stage: str, execution_arn: str) -> str:
    """The training job the state machine starts for this execution ARN (what ``kit l4`` shows and looks up)."""
    return name_for(job_prefix(name_prefix, stage), execution_arn)
