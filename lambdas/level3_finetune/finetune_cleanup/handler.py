"""Custom resource (every stage): on stack deletion, stop Level 3's work and remove what serves its custom models;
in the sandbox also remove the models, before CloudFormation deletes the key.

The Level 3 pipeline creates custom models, on-demand deployments and Provisioned Throughput with the Bedrock
API; CloudFormation does not know them. Deleting the state machine does not end a run in time: "A state machine
is deleted only when all its executions are completed. On the next state transition, the state machine's
executions are terminated." (https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html)
A run holding its throughput in the ``KeepProvisionedThroughput`` Wait state makes that transition only hours
later and would never reach its delete step, leaving a throughput billed hourly with no end
(https://docs.aws.amazon.com/bedrock/latest/userguide/prov-throughput.html). The models are encrypted with the
stack's customer managed key, so a sandbox deletion that schedules the key for deletion would also leave them
unusable and still billing. CloudFormation deletes this resource before the key and the state machine (it
depends on both), and on that Delete the function, in every ``Mode``:

1. stops the pipeline's running executions, so nothing new is created meanwhile, and lets a call in flight land;
2. stops the kit's customization jobs that are still running and waits until they have stopped;
3. finds the kit's custom models: named by the pipeline (``<prefix>-model-`` + 12 hex digits) AND encrypted
   with this stack's key; nothing else is touched;
4. deletes the on-demand deployments and Provisioned Throughput serving those models and waits until they
   are gone (Bedrock refuses to delete a model that still serves). A throughput with a commitment cannot be
   deleted before its term ends: it is left alone, everything else is still deleted, and the answer is then
   FAILED naming it and the end of its term;

and in ``DeleteModels`` mode (the sandbox) only:

5. deletes the models, except one that a throughput with a commitment still serves.

``KeepModels`` (prod, which retains its key, buckets and models) ends after step 4: it never calls
DeleteCustomModel, and its role is not granted it.

It acts only when the stack itself is being deleted (a Delete sent because an update removed the resource
leaves everything alone). Create and Update only check the properties. Every call has short timeouts and few
retries, and a deadline well before the function's timeout: CloudFormation always gets an answer, SUCCESS or
FAILED with what is left and what to do, and a stack is never held for an hour. A FAILED delete keeps the key,
so nothing becomes unusable; running the destroy again resumes where this one stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from common.executions import stop_executions
from common.stack_cleanup import (
    CleanupError,
    Deadline,
    answer,
    client_factory,
    delete_when_free,
    error_code,
    pages,
    require_properties,
    tolerate,
    wait_until_done,
)
from finetune_cleanup.names import DELETE_MODELS, KEEP_MODELS, MODES
from finetune_cleanup.stop import STOP_REFUSED

logger = Logger()

PHYSICAL_ID = "finetune-custom-model-cleanup"
CAUSE = "The fine-tuning stack is being deleted"
NAME_ID = "(?:[0-9a-f]{32}|[0-9a-f]{12})"  # the pipeline ends every name with a 32-hex hash (12 hex before)
BUSY_JOB_STATUSES = ("InProgress", "Stopping")
# DeleteCustomModelDeployment and DeleteProvisionedModelThroughput both list ConflictException (botocore bedrock
# 2023-04-20 model): busy for now, so the delete is asked again on the wait's next pass. Gone counts as deleted.
GONE = "ResourceNotFoundException"
BUSY = "ConflictException"
PROPERTIES = ("Mode", "KeyArn", "ModelNamePrefix", "JobNamePrefix", "StateMachineArn")
RETRY_HINT = "The key is kept while the cleanup fails; fix the cause and run the destroy again."
RESUME_HINT = "The key is kept while the cleanup fails; run the destroy again to resume."

bedrock = client_factory("bedrock")


@dataclass(frozen=True)
class Scope:
    """What belongs to this stack: names the pipeline gives, and the stack's key."""

    key_arn: str
    model_prefix: str
    job_prefix: str
    state_machine_arn: str
    deletes_models: bool

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> Scope:
        require_properties(props, PROPERTIES)
        if props["Mode"] not in MODES:
            raise CleanupError(f"Mode {props['Mode']!r} is not one of {', '.join(MODES)}")
        return cls(
            props["KeyArn"],
            props["ModelNamePrefix"],
            props["JobNamePrefix"],
            props["StateMachineArn"],
            deletes_models=props["Mode"] == DELETE_MODELS,
        )

    def is_model_name(self, name: str) -> bool:
        return re.fullmatch(re.escape(self.model_prefix) + NAME_ID, name) is not None

    def is_job_name(self, name: str) -> bool:
        return re.fullmatch(re.escape(self.job_prefix) + NAME_ID, name) is not None


@dataclass
class Report:
    keeps_models: bool = False
    executions: int = 0
    jobs: int = 0
    deployments: int = 0
    throughputs: int = 0
    models: list[str] | None = None

    def __str__(self) -> str:
        serving = f"{self.deployments} deployment(s), {self.throughputs} Provisioned Throughput(s)"
        stopped = f"stopped {self.jobs} customization job(s) and {self.executions} pipeline execution(s)"
        if self.keeps_models:
            return f"deleted {serving}; {stopped}; custom models kept ({KEEP_MODELS})"
        models = self.models or []
        return f"deleted {len(models)} custom model(s) [{', '.join(models)}], {serving}; {stopped}"


def stop_jobs(scope: Scope, deadline: Deadline) -> int:
    """Stop the kit's running customization jobs (named by the pipeline, encrypting with the key); wait."""
    ours: dict[str, str] = {}
    summaries = pages(
        bedrock().list_model_customization_jobs, "modelCustomizationJobSummaries", nameContains=scope.job_prefix
    )
    for summary in list(summaries):
        if summary["status"] not in BUSY_JOB_STATUSES or not scope.is_job_name(summary["jobName"]):
            continue
        deadline.check("looking at running customization jobs")
        job = bedrock().get_model_customization_job(jobIdentifier=summary["jobArn"])
        if job.get("outputModelKmsKeyArn") != scope.key_arn:
            continue
        ours[summary["jobArn"]] = summary["jobName"]
        # botocore bedrock 2023-04-20 GetModelCustomizationJobResponse does not require status (its summary does):
        # without it, the summary's busy status stands, as the pipeline's JobStatus? polls again without it.
        if (job.get("status") or summary["status"]) == "InProgress":
            # Refused (already stopping, just ended): the wait below reads the job again.
            tolerate(bedrock().stop_model_customization_job, STOP_REFUSED, jobIdentifier=summary["jobArn"])
            logger.info("Stopped a customization job", extra={"job": summary["jobName"]})

    def still_running() -> list[str]:
        # No status (not required, as above): still busy, asked again on the wait's next pass.
        return [
            name
            for arn, name in ours.items()
            if bedrock().get_model_customization_job(jobIdentifier=arn).get("status", "InProgress") in BUSY_JOB_STATUSES
        ]

    wait_until_done(still_running, "waiting for customization jobs to stop", deadline)
    return len(ours)


def find_models(scope: Scope, deadline: Deadline) -> list[dict[str, str]]:
    """The kit's custom models: the pipeline's name AND this stack's key. Anything else is not ours.

    Every custom model is listed and its name checked here: ListCustomModels' nameContains is documented as "the job
    name contains these characters" (botocore bedrock 2023-04-20), and a filter that matched job names would find
    none of the kit's models, leaving them billing after the key is scheduled for deletion."""
    ours = []
    for summary in list(pages(bedrock().list_custom_models, "modelSummaries")):
        if not scope.is_model_name(summary["modelName"]):
            continue
        deadline.check("looking at custom models")
        model = bedrock().get_custom_model(modelIdentifier=summary["modelArn"])
        if model.get("modelKmsKeyArn") == scope.key_arn:
            ours.append({"arn": summary["modelArn"], "name": summary["modelName"]})
    return ours


def _serving(model_arn: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    deployments = pages(bedrock().list_custom_model_deployments, "modelDeploymentSummaries", modelArnEquals=model_arn)
    throughputs = pages(
        bedrock().list_provisioned_model_throughputs, "provisionedModelSummaries", modelArnEquals=model_arn
    )
    return list(deployments), list(throughputs)


def _commitment_end(throughput: dict[str, Any]) -> datetime | None:
    """When the commitment of a throughput ends, while it has one; None for a throughput Bedrock deletes now.

    botocore bedrock model, DeleteProvisionedModelThroughput: "You can't delete a Provisioned Throughput before
    the commitment term is over." That throughput alone stays; everything else is still deleted."""
    expires: datetime | None = throughput.get("commitmentExpirationTime")
    if throughput.get("commitmentDuration") and expires and expires > datetime.now(UTC):
        return expires
    return None


def _refusal(committed: list[dict[str, Any]], report: Report) -> str:
    """Why the cleanup fails while throughputs with a commitment serve kit models: each, and when its term ends;
    then what this run did remove."""
    each = "; ".join(
        f"Provisioned Throughput {t['provisionedModelName']} serves a kit model with a {t['commitmentDuration']} "
        f"commitment until {t['commitmentExpirationTime'].isoformat()}"
        for t in committed
    )
    it, date = ("it", "that date") if len(committed) == 1 else ("them", "the last of these dates")
    return (
        f"{each}; Bedrock does not delete {it} before then. Destroy the stack after {date} (the key is kept "
        f"until then). This run {report}."
    )


def _ask_delete(call: Any, **params: Any) -> bool:
    """Ask for a delete: True once asked (accepted, or already gone); False while busy (asked again later)."""
    try:
        call(**params)
    except ClientError as err:
        if error_code(err) == BUSY:
            return False
        if error_code(err) != GONE:
            raise
    return True


@dataclass
class Committed:
    """What a commitment keeps: its throughputs, and the models they serve (which cannot be deleted)."""

    throughputs: list[dict[str, Any]]
    model_arns: set[str]


def remove_serving(models: list[dict[str, str]], deadline: Deadline, report: Report) -> Committed:
    """Delete every deployment and throughput serving the models, and wait until none is left but those with a
    commitment, which are returned (as the last look found them)."""
    requested: set[str] = set()
    committed = Committed([], set())

    def pending() -> list[str]:
        left = []
        committed.throughputs.clear()
        committed.model_arns.clear()
        for model in models:
            deadline.check("deleting deployments and Provisioned Throughput")
            deployments, throughputs = _serving(model["arn"])
            for deployment in deployments:
                arn = deployment["customModelDeploymentArn"]
                left.append(deployment["customModelDeploymentName"])
                if arn not in requested and _ask_delete(
                    bedrock().delete_custom_model_deployment, customModelDeploymentIdentifier=arn
                ):
                    requested.add(arn)
                    report.deployments += 1
            for throughput in throughputs:
                arn = throughput["provisionedModelArn"]
                if arn not in requested and _commitment_end(throughput):
                    committed.throughputs.append(throughput)
                    committed.model_arns.add(model["arn"])
                    continue
                left.append(throughput["provisionedModelName"])
                if arn not in requested and _ask_delete(
                    bedrock().delete_provisioned_model_throughput, provisionedModelId=arn
                ):
                    requested.add(arn)
                    report.throughputs += 1
        return left

    wait_until_done(pending, "waiting for deployments and Provisioned Throughput to be deleted", deadline)
    return committed


def delete_models(models: list[dict[str, str]], deadline: Deadline) -> list[str]:
    for model in models:
        doing = f"deleting custom model {model['name']}"  # a model still serving for a moment is busy
        delete_when_free(bedrock().delete_custom_model, doing, deadline, modelIdentifier=model["arn"])
        logger.info("Deleted a custom model", extra={"model": model["name"]})
    return [model["name"] for model in models]


def on_delete(event: dict[str, Any], deadline: Deadline) -> str:
    scope = Scope.from_properties(event["ResourceProperties"])
    report = Report(keeps_models=not scope.deletes_models)
    stopped: set[str] = set()
    report.executions = stop_executions(scope.state_machine_arn, deadline, CAUSE, stopped)
    if report.executions:
        # A CreateModelCustomizationJob or CreateProvisionedModelThroughput a stopped execution had in flight
        # lands meanwhile, so the looks below find what it created.
        deadline.pause("letting the stopped executions' calls in flight land")
    report.jobs = stop_jobs(scope, deadline)
    models = find_models(scope, deadline)
    committed = remove_serving(models, deadline, report)
    if scope.deletes_models:
        # A model a committed throughput still serves cannot go (Bedrock refuses while it serves); the others can.
        report.models = delete_models([m for m in models if m["arn"] not in committed.model_arns], deadline)
    # A last look: a run started after the first one (the upload starter, an Express state machine, goes on with a
    # start it is retrying after its own deletion, https://docs.aws.amazon.com/step-functions/latest/apireference/
    # API_DeleteStateMachine.html) is stopped too, with any job it created. A job stopped this early leaves no model.
    late = stop_executions(scope.state_machine_arn, deadline, CAUSE, stopped)  # not those the first look stopped
    if late:
        report.executions += late
        deadline.pause("letting the late executions' calls in flight land")
        report.jobs += stop_jobs(scope, deadline)
    if committed.throughputs:
        logger.info("Cleanup done but for committed throughputs", extra={"report": str(report)})
        raise CleanupError(_refusal(committed.throughputs, report))
    logger.info("Cleanup done", extra={"report": str(report)})
    return str(report)


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    answer(
        event,
        context,
        validate=Scope.from_properties,  # a wrong property fails now, not on destroy
        on_delete=on_delete,
        removes="custom models and what serves them",
        physical_id=PHYSICAL_ID,
        retry_hint=RETRY_HINT,
        resume_hint=RESUME_HINT,
        logger=logger,
    )
