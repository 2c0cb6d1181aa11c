"""Custom resource (every stage): on stack deletion, stop what Level 3 on SageMaker runs; in the sandbox also leave
nothing of it billing.

The SageMaker fine-tuning pipeline creates training jobs (SageMaker), import jobs and imported models (Bedrock
Custom Model Import) with the services' APIs; CloudFormation does not know them. Deleting the state machine does
not stop a running training job: "A state machine is deleted only when all its executions are completed. On the
next state transition, the state machine's executions are terminated."
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html), and a task waiting
for its createTrainingJob.sync job makes its next transition only when the job ends (MaxRuntime at the latest).
A successful run keeps its imported model. CloudFormation deletes this resource first (it depends on the state
machine, the artifacts bucket, the training role and its own role) and on that Delete the function, in every
``Mode``:

1. stops the pipeline's running executions, so nothing new is created meanwhile, and lets a call in flight land;
2. stops the kit's training jobs that are still running and waits until they have stopped;

and in ``StopAndDelete`` mode (the sandbox) only:

3. waits for the kit's import jobs still in progress: Bedrock has no API to stop one, and a job that completes
   creates a model;
4. deletes the kit's imported models.

``StopOnly`` (prod, which keeps its imported models) ends after step 2 and calls no Bedrock API; its role is
granted none.

"The kit's" means both: a name the pipeline gives (``<name prefix>-<stage>-sft-`` + the MD5 of the execution ARN
in 32 lowercase hex digits; the training job, the import job and the model share it) AND this stack's artifacts
bucket: a training job writing its output there, an import job or model imported from that job's merged model
there. The bucket's name is unique, so models of other stages, other deployments whose prefix starts the same
way, and models imported by hand are left alone (a model that has such a name but another source is named in the
answer).

It acts only when the stack itself is being deleted. Create and Update only check the properties. Every call has
short timeouts and few retries, and a deadline well before the function's timeout: CloudFormation always gets an
answer, SUCCESS or FAILED naming what is left; running the destroy again resumes where this one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from common.executions import stop_executions
from common.stack_cleanup import (
    CleanupError,
    Deadline,
    answer,
    client_factory,
    delete_when_free,
    pages,
    require_properties,
    wait_until_done,
)
from common.training_cleanup import StackTrainingJobs, is_run_name, last_look, same_uri, stop_training_jobs
from sagemaker_cleanup.names import MODES, NAME_SLOT, STOP_AND_DELETE, STOP_ONLY

logger = Logger()

PHYSICAL_ID = "sagemaker-finetune-cleanup"
PROPERTIES = ("Mode", "StateMachineArn", "NamePrefix", "TrainingOutputUri")
CAUSE = "The SageMaker fine-tuning stack is being deleted"
RETRY_HINT = (
    "The state machine, the artifacts bucket and this function are kept while the cleanup fails; fix the cause "
    "and run the destroy again."
)
RESUME_HINT = (
    "The state machine, the artifacts bucket and this function are kept while the cleanup fails; run the destroy "
    "again to resume."
)

bedrock = client_factory("bedrock")


@dataclass(frozen=True)
class Scope:
    """What belongs to this stack: the names the pipeline gives, and this stack's artifacts bucket."""

    state_machine_arn: str
    name_prefix: str
    training_output_uri: str  # s3://<artifacts>/output/
    import_source_uri: str | None  # s3://<artifacts>/output/{name}/output/model/merged/; None: stop-only

    @property
    def deletes_models(self) -> bool:
        return self.import_source_uri is not None

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> Scope:
        require_properties(props, PROPERTIES)
        mode, source = props["Mode"], props.get("ImportSourceUri")
        if mode not in MODES:
            raise CleanupError(f"Mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == STOP_AND_DELETE and (not source or str(source).count(NAME_SLOT) != 1):
            raise CleanupError(
                f"ImportSourceUri {source!r} must hold {NAME_SLOT} once, where the training job's name goes "
                f"(Mode {STOP_AND_DELETE})"
            )
        if mode == STOP_ONLY and source is not None:
            # A stop-only resource names no models: it could not delete them anyway (its role has no Bedrock action).
            raise CleanupError(f"ImportSourceUri {source!r} is not taken in Mode {STOP_ONLY}: it deletes no models")
        return cls(
            str(props["StateMachineArn"]),
            str(props["NamePrefix"]),
            str(props["TrainingOutputUri"]),
            str(source) if mode == STOP_AND_DELETE else None,
        )

    @property
    def training_jobs(self) -> StackTrainingJobs:
        """The pipeline's training jobs: its names, writing their output to this stack's artifacts bucket."""
        return StackTrainingJobs(self.name_prefix, self.training_output_uri)

    def has_kit_name(self, name: str) -> bool:
        """The prefix followed by exactly the hash the pipeline names an execution's job and model by: another
        deployment whose name prefix extends this one's ("<prefix>prod-sft-<hash>") does not match."""
        return is_run_name(name, self.name_prefix)

    def imported_from_here(self, source: dict[str, Any] | None, name: str) -> bool:
        """An import (job or model) of the merged model the pipeline's training job of that name wrote here."""
        if self.import_source_uri is None:
            return False
        uri = (source or {}).get("s3DataSource", {}).get("s3Uri")
        return same_uri(uri, self.import_source_uri.replace(NAME_SLOT, name))


@dataclass
class Report:
    stop_only: bool = False
    executions: int = 0
    training_jobs: int = 0
    import_jobs: int = 0
    models: list[str] = field(default_factory=list)
    not_ours: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        stopped = f"stopped {self.training_jobs} training job(s) and {self.executions} pipeline execution(s)"
        if self.stop_only:
            return f"{stopped}; imported models and import jobs left in place ({STOP_ONLY})"
        text = (
            f"deleted {len(self.models)} imported model(s) [{', '.join(self.models)}]; waited for "
            f"{self.import_jobs} import job(s); {stopped}"
        )
        if self.not_ours:
            text += (
                f"; left {len(self.not_ours)} model(s) with the kit's name that this stack did not import: "
                f"[{', '.join(self.not_ours)}]"
            )
        return text


def wait_for_imports(scope: Scope, deadline: Deadline) -> int:
    """Wait until the kit's import jobs in progress have ended: Bedrock cannot stop one, and one that completes
    creates a model (deleted next)."""
    ours: dict[str, str] = {}
    summaries = pages(
        bedrock().list_model_import_jobs,
        "modelImportJobSummaries",
        nameContains=scope.name_prefix,
        statusEquals="InProgress",
    )
    for summary in list(summaries):
        if not scope.has_kit_name(summary["jobName"]):
            continue
        deadline.check("looking at import jobs in progress")
        job = bedrock().get_model_import_job(jobIdentifier=summary["jobArn"])
        if scope.imported_from_here(job.get("modelDataSource"), summary["jobName"]):
            ours[summary["jobArn"]] = summary["jobName"]

    def in_progress() -> list[str]:
        # botocore bedrock 2023-04-20 GetModelImportJobResponse requires no member: an answer without status is
        # taken as still in progress and asked again on the wait's next pass (its summary was InProgress).
        return [
            name
            for arn, name in ours.items()
            if bedrock().get_model_import_job(jobIdentifier=arn).get("status", "InProgress") == "InProgress"
        ]

    wait_until_done(in_progress, "waiting for import jobs to end (Bedrock cannot stop them)", deadline)
    return len(ours)


def find_models(scope: Scope, deadline: Deadline, report: Report) -> list[dict[str, str]]:
    """The kit's imported models: the pipeline's name AND imported from this stack's bucket."""
    ours = []
    for summary in list(pages(bedrock().list_imported_models, "modelSummaries", nameContains=scope.name_prefix)):
        name = summary["modelName"]
        if not scope.has_kit_name(name):
            continue
        deadline.check("looking at imported models")
        model = bedrock().get_imported_model(modelIdentifier=summary["modelArn"])
        if scope.imported_from_here(model.get("modelDataSource"), name):
            ours.append({"arn": summary["modelArn"], "name": name})
        else:
            report.not_ours.append(name)
    return ours


def delete_models(models: list[dict[str, str]], deadline: Deadline) -> list[str]:
    for model in models:
        doing = f"deleting imported model {model['name']}"
        delete_when_free(bedrock().delete_imported_model, doing, deadline, modelIdentifier=model["arn"])
        logger.info("Deleted an imported model", extra={"model": model["name"]})
    return [model["name"] for model in models]


def on_delete(event: dict[str, Any], deadline: Deadline) -> str:
    scope = Scope.from_properties(event["ResourceProperties"])
    report = Report(stop_only=not scope.deletes_models)
    looked: set[str] = set()
    report.executions = stop_executions(scope.state_machine_arn, deadline, CAUSE, looked)
    if report.executions:
        # A CreateTrainingJob or CreateModelImportJob call a stopped execution had in flight lands meanwhile.
        deadline.pause("letting the stopped executions' calls in flight land")
    stopped = stop_training_jobs(scope.training_jobs, deadline)
    if scope.deletes_models:
        report.import_jobs = wait_for_imports(scope, deadline)
        report.models = delete_models(find_models(scope, deadline, report), deadline)
    # A run started meanwhile trains first (an import comes only after its training job ends): a last look stops it
    # and its job.
    late, late_jobs = last_look(scope.state_machine_arn, scope.training_jobs, deadline, CAUSE, looked)
    report.executions += late
    stopped += late_jobs
    if stopped:
        logger.info("Stopped training jobs", extra={"jobs": stopped})
    report.training_jobs = len(stopped)
    logger.info("Cleanup done", extra={"report": str(report)})
    return str(report)


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    answer(
        event,
        context,
        validate=Scope.from_properties,  # a wrong property fails now, not on destroy
        on_delete=on_delete,
        removes="training jobs and imported models",
        physical_id=PHYSICAL_ID,
        retry_hint=RETRY_HINT,
        resume_hint=RESUME_HINT,
        logger=logger,
    )
