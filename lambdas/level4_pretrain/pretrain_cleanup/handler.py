"""Custom resource (every stage): when the Level 4 training-job stack is deleted, stop the work it started.

The state machine starts SageMaker training jobs (createTrainingJob.sync) that CloudFormation does not know.
Deleting a state machine does not stop them: "A state machine is deleted only when all its executions are
completed. On the next state transition, the state machine's executions are terminated."
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html). A running job would
keep billing its instances until its MaxRuntime, with its role and bucket deleted underneath it (and, in the
cluster's VPC, its network interfaces in the cluster's subnets). CloudFormation deletes this resource first (it
depends on the state machine, the training role, the bucket and its own role) and on that Delete the function:

1. stops the state machine's running executions, so none starts a job meanwhile, and lets a call in flight land;
2. stops the stack's training jobs still running and waits until they have stopped (common/training_cleanup.py:
   a name the state machine gives, ``<prefix>-<stage>-pt-`` + the MD5 of the execution ARN, AND output to this
   stack's bucket). SageMaker uploads the checkpoints while the job stops, so a stopped run resumes from them.

Nothing is deleted, so it runs in prod too. It acts only when the stack itself is being deleted (a Delete sent
because an update replaced or removed the resource does nothing); Create and Update only check the properties.
Every call has short timeouts and few retries, and a deadline well before the function's timeout:
CloudFormation always gets an answer, SUCCESS or FAILED naming what is left; running the destroy again resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from common.executions import stop_executions
from common.stack_cleanup import CleanupError, Deadline, answer, require_properties
from common.training_cleanup import StackTrainingJobs, last_look, stop_training_jobs

logger = Logger()

PHYSICAL_ID = "pretrain-jobs-cleanup"
PROPERTIES = ("StateMachineArn", "NamePrefix", "TrainingOutputUri")
CAUSE = "The Level 4 training-job stack is being deleted"
RETRY_HINT = (
    "The state machine, the training role, the bucket and this function are kept while the cleanup fails; fix the "
    "cause and run the destroy again."
)
RESUME_HINT = (
    "The state machine, the training role, the bucket and this function are kept while the cleanup fails; run the "
    "destroy again to resume."
)


@dataclass(frozen=True)
class Scope:
    """This stack's state machine and the training jobs it starts."""

    state_machine_arn: str
    training_jobs: StackTrainingJobs

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> Scope:
        require_properties(props, PROPERTIES)
        if not str(props["TrainingOutputUri"]).startswith("s3://"):
            raise CleanupError(f"TrainingOutputUri must be an s3:// URI, not {props['TrainingOutputUri']!r}")
        return cls(
            str(props["StateMachineArn"]),
            StackTrainingJobs(str(props["NamePrefix"]), str(props["TrainingOutputUri"])),
        )


def on_delete(event: dict[str, Any], deadline: Deadline) -> str:
    scope = Scope.from_properties(event["ResourceProperties"])
    stopped: set[str] = set()
    executions = stop_executions(scope.state_machine_arn, deadline, CAUSE, stopped)
    if executions:
        # A CreateTrainingJob call a stopped execution had in flight lands meanwhile.
        deadline.pause("letting the stopped executions' calls in flight land")
    jobs = stop_training_jobs(scope.training_jobs, deadline)
    late, late_jobs = last_look(scope.state_machine_arn, scope.training_jobs, deadline, CAUSE, stopped)
    executions += late
    jobs += late_jobs
    if jobs:
        logger.info("Stopped training jobs", extra={"jobs": jobs})
    return f"stopped {len(jobs)} training job(s) [{', '.join(jobs)}] and {executions} execution(s)"


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    answer(
        event,
        context,
        validate=Scope.from_properties,  # a wrong property fails now, not on destroy
        on_delete=on_delete,
        removes="running training jobs",
        physical_id=PHYSICAL_ID,
        retry_hint=RETRY_HINT,
        resume_hint=RESUME_HINT,
        logger=logger,
    )
