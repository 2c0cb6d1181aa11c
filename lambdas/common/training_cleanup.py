"""Stopping a stack's SageMaker training jobs when the stack is deleted: the step the cleanups of Level 3's
SageMaker path and Level 4's training-job path share (each runs it after stopping its state machine's executions,
so no execution starts a new job meanwhile).

A stack's state machine names each training job ``<name prefix>`` + the MD5 of the execution ARN in lowercase hex
(stacks/shared/execution_names.py) and writes its output under one URI of the stack's own bucket. A job is the
stack's when it has both: the name alone would also match another deployment whose name prefix extends this one
(``<prefix>prod-pt-<hash>``) or a job started by hand with a copied name; the bucket's name is unique.

StopTrainingJob sends SIGTERM and gives the job 120 s to save, then SageMaker uploads the checkpoints and the output;
the job is ``Stopping`` until then and ``Stopped`` after:
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html
The step waits for ``Stopped``: a stopping job still bills, writes to the stack's bucket with the stack's role and,
in a VPC, holds its network interfaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from common.executions import stop_executions
from common.stack_cleanup import Deadline, client_factory, pages, tolerate, wait_until_done

# What follows the prefix in a name a state machine gives: States.Hash MD5 of the execution ARN, lowercase hex.
RUN_ID = re.compile(r"[0-9a-f]{32}")
# TrainingJobStatus values of a job that still runs (ListTrainingJobs StatusEquals):
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListTrainingJobs.html
BUSY_TRAINING = ("InProgress", "Stopping")

sagemaker = client_factory("sagemaker")


def same_uri(a: str | None, b: str) -> bool:
    """Two S3 URIs of the same prefix (a trailing '/' or not)."""
    return a is not None and a.rstrip("/") == b.rstrip("/")


def is_run_name(name: str, name_prefix: str) -> bool:
    """The prefix followed by exactly the hash a state machine names an execution's job (and model) by."""
    return name.startswith(name_prefix) and RUN_ID.fullmatch(name[len(name_prefix) :]) is not None


@dataclass(frozen=True)
class StackTrainingJobs:
    """The training jobs one stack starts: named ``name_prefix`` + the run hash, output under ``output_uri``."""

    name_prefix: str
    output_uri: str  # s3://<the stack's bucket>/<output prefix>/ (the jobs' OutputDataConfig.S3OutputPath)

    def has_kit_name(self, name: str) -> bool:
        return is_run_name(name, self.name_prefix)

    def wrote_here(self, training_job: dict[str, Any]) -> bool:
        """A training job whose output goes to this stack's bucket, where the stack's state machine puts it."""
        return same_uri(training_job.get("OutputDataConfig", {}).get("S3OutputPath"), self.output_uri)


def stop_training_jobs(jobs: StackTrainingJobs, deadline: Deadline) -> list[str]:
    """Stop the stack's running training jobs and wait until none of them is running or stopping; the names of
    those that were (all stopped now). A job of another prefix, or with the name but another bucket, is not
    touched."""
    ours: list[str] = []
    for status in BUSY_TRAINING:
        summaries = pages(
            sagemaker().list_training_jobs,
            "TrainingJobSummaries",
            token="NextToken",
            NameContains=jobs.name_prefix,
            StatusEquals=status,
        )
        for summary in list(summaries):
            name = summary["TrainingJobName"]
            if not jobs.has_kit_name(name) or name in ours:
                continue
            deadline.check("looking at running training jobs")
            job = sagemaker().describe_training_job(TrainingJobName=name)
            if not jobs.wrote_here(job):
                continue
            ours.append(name)
            if job["TrainingJobStatus"] == "InProgress":
                # A job that ended meanwhile answers ValidationException: nothing to stop (botocore's model declares
                # ResourceNotFound only; the ValidationException is the service's answer seen in public reports,
                # e.g. awslabs/benchmark-ai issue 928). The wait below reads every job again either way.
                tolerate(
                    sagemaker().stop_training_job, ("ValidationException", "ResourceNotFound"), TrainingJobName=name
                )

    def still_running() -> list[str]:
        return [
            name
            for name in ours
            if sagemaker().describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in BUSY_TRAINING
        ]

    wait_until_done(still_running, "waiting for training jobs to stop", deadline)
    return ours


def last_look(
    state_machine_arn: str, jobs: StackTrainingJobs, deadline: Deadline, cause: str, stopped_before: set[str]
) -> tuple[int, list[str]]:
    """Executions started after the first look, stopped too, with any training job they created; how many
    executions, and which jobs. The state machine takes starts until CloudFormation deletes it (`kit l4 submit`
    during a destroy), and a run that reaches its training job before DeleteStateMachine ends it would train on
    with the stack's role and bucket gone: DeleteStateMachine ends an execution only "on the next state
    transition" (https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html), which
    a .sync training task makes when its job ends. ``stopped_before``: the executions the first look stopped."""
    late = stop_executions(state_machine_arn, deadline, cause, stopped_before)
    if not late:
        return 0, []
    deadline.pause("letting the late executions' calls in flight land")
    return late, stop_training_jobs(jobs, deadline)
