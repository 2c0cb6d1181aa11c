"""Custom resource (every stage): when the Level 2 stack is deleted, stop its knowledge base's ingestion jobs.

The ingest function starts ingestion jobs outside CloudFormation: a full sync after every deploy, and one job per
batch of document changes. The data source's delete handler needs only bedrock:GetDataSource and
bedrock:DeleteDataSource (the AWS::Bedrock::DataSource registry schema), so CloudFormation stops no job, and
DeleteDataSource declares ConflictException (botocore bedrock-agent 2023-06-05): a destroy soon after a deploy, while
the first sync runs, could fail in DELETE_FAILED. The ingest function and its schedules are deleted before this
resource (the function depends on it), so no new run starts; on that Delete the function:

1. stops the data source's jobs that are STARTING or IN_PROGRESS and waits until none is active;
2. waits until the ingest function's timeout has passed since it began (a run in flight when its function was
   deleted may still start a job), then looks once more and stops what it finds.

Nothing is deleted, so it runs in prod too. It acts when the stack itself is being deleted, and when a failed
first create rolls back (ROLLBACK_IN_PROGRESS: the sync schedule may have started the first sync meanwhile); Create
and Update only check the properties. CloudFormation always gets an answer, SUCCESS or FAILED naming what is left;
running the destroy again resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from common import stack_cleanup
from common.stack_cleanup import (
    DELETE_IN_PROGRESS,
    CleanupError,
    Deadline,
    answer,
    client_factory,
    error_code,
    require_properties,
    wait_until_done,
)
from rag_ingest.names import INGESTION_RUNNING

logger = Logger()

PHYSICAL_ID = "rag-ingestion-cleanup"
# Stopping jobs deletes nothing: a failed first create's rollback is stopped too, as it deletes the data source.
ACTS_WHEN = (DELETE_IN_PROGRESS, "ROLLBACK_IN_PROGRESS")
PROPERTIES = ("KnowledgeBaseId", "DataSourceId", "IngestTimeoutSeconds")
# The jobs that still run (IngestionJobStatus, botocore bedrock-agent). A STOPPING job is waited for, not stopped.
ACTIVE = INGESTION_RUNNING
STOPPABLE = tuple(status for status in ACTIVE if status != "STOPPING")
# Bedrock runs one ingestion job at a time per data source, so the active ones are among the newest: the first page,
# newest first (ListIngestionJobs maxResults: 1 to 1000).
NEWEST = 25
RETRY_HINT = (
    "The knowledge base, the data source and this function are kept while the cleanup fails; fix the cause and run "
    "the destroy again."
)
RESUME_HINT = "The knowledge base and the data source are kept while a job still runs; run the destroy again."

agent = client_factory("bedrock-agent")


@dataclass(frozen=True)
class Scope:
    """The data source whose jobs are stopped, and how long an ingest run may last."""

    knowledge_base_id: str
    data_source_id: str
    ingest_timeout_s: int

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> Scope:
        require_properties(props, PROPERTIES)
        try:
            timeout = int(props["IngestTimeoutSeconds"])
        except (TypeError, ValueError):
            raise CleanupError(
                f"IngestTimeoutSeconds must be a number of seconds, not {props['IngestTimeoutSeconds']!r}"
            ) from None
        return cls(str(props["KnowledgeBaseId"]), str(props["DataSourceId"]), timeout)


def active_jobs(scope: Scope) -> dict[str, str]:
    """The data source's active jobs: id -> status. A data source already gone has none."""
    try:
        page = agent().list_ingestion_jobs(
            knowledgeBaseId=scope.knowledge_base_id,
            dataSourceId=scope.data_source_id,
            sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"},
            maxResults=NEWEST,
        )
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            return {}
        raise
    return {
        str(job["ingestionJobId"]): str(job["status"])
        for job in page["ingestionJobSummaries"]
        if job["status"] in ACTIVE
    }


def stop_active(scope: Scope, deadline: Deadline, seen: set[str]) -> list[str]:
    """Stop every active job that is not stopping yet; the ids of the active ones (added to ``seen``)."""
    active = active_jobs(scope)
    seen.update(active)
    for job_id, status in active.items():
        if status not in STOPPABLE:
            continue
        deadline.check("stopping the knowledge base's ingestion jobs")
        try:
            agent().stop_ingestion_job(
                knowledgeBaseId=scope.knowledge_base_id, dataSourceId=scope.data_source_id, ingestionJobId=job_id
            )
        except ClientError as err:
            # Ended or stopping meanwhile (Conflict, Validation), or gone. Which statuses Bedrock stops is not
            # documented ("Stops a currently running data ingestion job", API_agent_StopIngestionJob.html): a job
            # it refused to stop while STARTING is asked again on the next look.
            if error_code(err) not in ("ConflictException", "ValidationException", "ResourceNotFoundException"):
                raise
    return sorted(active)


def stop_jobs(scope: Scope, deadline: Deadline) -> list[str]:
    """Stop the active jobs and wait until none is active, asking again on each look; the ids of those that were."""
    seen: set[str] = set()
    if stop_active(scope, deadline, seen):
        wait_until_done(lambda: stop_active(scope, deadline, seen), "waiting for the ingestion jobs to stop", deadline)
    return sorted(seen)


def on_delete(event: dict[str, Any], deadline: Deadline) -> str:
    scope = Scope.from_properties(event["ResourceProperties"])
    began = stack_cleanup.clock()
    jobs = stop_jobs(scope, deadline)
    while stack_cleanup.clock() - began < scope.ingest_timeout_s:
        deadline.pause("letting an ingest run in flight end")
    late = [job for job in stop_jobs(scope, deadline) if job not in jobs]
    if jobs or late:
        logger.info("Stopped ingestion jobs", extra={"jobs": jobs + late})
    return f"stopped {len(jobs) + len(late)} ingestion job(s) [{', '.join(jobs + late)}]"


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    answer(
        event,
        context,
        validate=Scope.from_properties,  # a wrong property fails now, not on destroy
        on_delete=on_delete,
        removes="running ingestion jobs",
        acts_when=ACTS_WHEN,
        physical_id=PHYSICAL_ID,
        retry_hint=RETRY_HINT,
        resume_hint=RESUME_HINT,
        logger=logger,
    )
