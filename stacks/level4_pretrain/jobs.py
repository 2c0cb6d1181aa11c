"""The training-job path's parts: the artifacts bucket's prefixes, the input checks before a training job, and the
training code packaged as the SageMaker toolkit expects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, Stack
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.level4_pretrain.names import CHECKPOINTS_PREFIX
from stacks.level4_pretrain.storage import ROOT
from stacks.shared import build_dir
from stacks.shared.conditions import listed_a_key
from stacks.shared.state_input import wrapped_input
from workloads.pretrain.checkpoints import PREFIX as CHECKPOINT_FILE_PREFIX

if TYPE_CHECKING:
    from stacks.level4_pretrain.settings import PretrainSettings

WORKLOAD_DIR = ROOT / "workloads" / "pretrain"
CODE_PREFIX = "code/"
OUTPUT_PREFIX = "output/"
# Bounded retries for the notification publishes and the checkpoint lookup: transient errors pass, a lasting
# one still ends in the failure path within about half a minute (2 + 4 + 8 s of back-off).
RETRY_INTERVAL = Duration.seconds(2)
RETRY_ATTEMPTS = 3
RETRY_BACKOFF = 2.0
# Time an execution allows beyond the job's own limit: provisioning, the image and data download before training
# and the model upload after it are not counted in MaxRuntimeInSeconds.
EXECUTION_MARGIN_HOURS = 2


def stopping_condition(settings: PretrainSettings) -> dict[str, int]:
    """CreateTrainingJob StoppingCondition: MaxRuntimeInSeconds, and MaxWaitTimeInSeconds with managed spot
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html)."""
    stopping = {"MaxRuntimeInSeconds": settings.job_max_runtime_hours * 3600}
    if settings.job_spot:
        stopping["MaxWaitTimeInSeconds"] = settings.job_max_wait_hours * 3600
    return stopping


def execution_timeout(settings: PretrainSettings) -> Duration:
    """The state machine's TimeoutSeconds: the job's longest possible life plus the margin. An execution that timed
    out before its job ended would fail with States.Timeout, which no Catch sees: no notification, job running."""
    longest = max(stopping_condition(settings).values())
    return Duration.seconds(longest + EXECUTION_MARGIN_HOURS * 3600)


class InputChecks:
    """The states before the training job: the execution input is checked, and the checkpoint prefix chosen.

    Any JSON value can start an execution. Given a list or a string, a ResultPath (the task's ``$.training``, the
    Catch's ``$.error``) has no object to write into, and a JSONPath that finds nothing is a ``States.Runtime``
    error, which no Catch catches, not even ``States.ALL``: the execution failed and no one was told. Every path
    the input can take therefore goes through Choice rules (the input's JSON type, IsPresent, Is<type>) before
    anything reads a field or writes a result, and bad input ends in the failure notification:

        ReadInput (wraps the input: $.input) ─► CheckInputType: not an object (a list, string, ...) ─► rejected
        ─► CheckInput: no resumeFrom ─► NewCheckpoints: checkpoints/<this execution>/
                       resumeFrom not a string ─► rejected
                       else ─► FindCheckpoints (ListObjectsV2, 1 key) ─► none ─► rejected
                                                                     └─► ResumeCheckpoints:
                                                                         checkpoints/<resumeFrom>/
    """

    def __init__(
        self,
        scope: Construct,
        *,
        bucket_name: str,
        train: sfn.IChainable,
        invalid: sfn.IChainable,
        failed: sfn.IChainable,
    ) -> None:
        stack = Stack.of(scope)
        prefix_uri = f"s3://{bucket_name}/{CHECKPOINTS_PREFIX}{{}}/"

        def rejected(state_id: str, cause: str, *values: str) -> sfn.Pass:
            """A Pass that states why in ``$.error`` (as a Catch would) and goes on to the failure notification."""
            error = {"Error": "InvalidInput", "Cause": sfn.JsonPath.format(cause, *values) if values else cause}
            state = sfn.Pass(scope, state_id, parameters=error, result_path="$.error")
            state.next(invalid)
            return state

        usage = 'the execution input must be a JSON object: {} or {"resumeFrom": "<earlier execution name>"}'
        not_an_object = rejected("InputNotAnObject", usage)
        check = sfn.Choice(scope, "CheckInput")
        self.start = wrapped_input(
            scope,
            not_an_object,
            check,
            read_comment="Any JSON value can start an execution: wrap it, so that every later path finds an object",
        )
        # The two states that choose the prefix output it alone ({"checkpoints": {"s3Uri": ...}}): the input, which
        # may be up to StartExecution's 256 KiB, is not carried into the training job's states. There the job's
        # description (the .sync task's result, several KiB) or a failure's Cause (up to 32,768 characters:
        # API_ExecutionFailedEventDetails) would be added to it, and a state output over the payload quota is
        # States.DataLimitExceeded, which no Catch catches
        # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html): a finished job
        # would end the run with no notification.
        new = sfn.Pass(
            scope,
            "NewCheckpoints",
            comment="A new run: this execution's own prefix, empty (a training job name is never reused)",
            parameters={
                "checkpoints": {"s3Uri": sfn.JsonPath.format(prefix_uri, sfn.JsonPath.string_at("$$.Execution.Name"))}
            },
        )
        resume = sfn.Pass(
            scope,
            "ResumeCheckpoints",
            comment="Resume: the earlier run's prefix; SageMaker copies its checkpoints down before training",
            parameters={
                "checkpoints": {"s3Uri": sfn.JsonPath.format(prefix_uri, sfn.JsonPath.string_at("$.input.resumeFrom"))}
            },
        )
        checkpoint_files = f"{CHECKPOINTS_PREFIX}{{}}/{CHECKPOINT_FILE_PREFIX}-"
        find = sfn.CustomState(
            scope,
            "FindCheckpoints",
            state_json={
                "Type": "Task",
                "Comment": "Resuming a run that left no checkpoints would silently train from step 0",
                "Resource": f"arn:{stack.partition}:states:::aws-sdk:s3:listObjectsV2",
                "Parameters": {
                    "Bucket": bucket_name,
                    # A checkpoint file the program wrote (ckpt-<step>.pt), not a temporary a killed save left
                    "Prefix.$": f"States.Format('{checkpoint_files}', $.input.resumeFrom)",
                    "MaxKeys": 1,  # at most one key: the answer, kept whole at $.found, stays small
                },
                # No ResultSelector: botocore s3 2006-03-01 ListObjectsV2Output requires no member, and a
                # ResultSelector path that selects nothing (an answer without KeyCount) is a States.Runtime error
                # no Catch takes; CheckpointsFound reads KeyCount only where present (conditions.listed_a_key).
                "ResultPath": "$.found",
            },
        )
        find.add_retry(
            errors=["States.ALL"], interval=RETRY_INTERVAL, max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF
        )
        find.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        none_found = rejected(
            "NothingToResume",
            f"no checkpoints under {prefix_uri}: resumeFrom names the execution whose run to continue",
            sfn.JsonPath.string_at("$.input.resumeFrom"),
        )
        find.next(sfn.Choice(scope, "CheckpointsFound").when(listed_a_key("$.found"), resume).otherwise(none_found))
        (
            check.when(sfn.Condition.not_(sfn.Condition.is_present("$.input.resumeFrom")), new)
            .when(
                sfn.Condition.not_(sfn.Condition.is_string("$.input.resumeFrom")),
                rejected("ResumeFromNotAString", "resumeFrom must be a string: the name of an earlier execution"),
            )
            .otherwise(find)
        )
        new.next(train)
        resume.next(train)


def sourcedir_asset() -> str:
    """A folder holding code/sourcedir.tar.gz, built deterministically from workloads/pretrain."""
    from workloads.pretrain.package_sourcedir import sourcedir_bytes

    return build_dir.sourcedir_asset("sourcedir-asset", CODE_PREFIX, sourcedir_bytes())
