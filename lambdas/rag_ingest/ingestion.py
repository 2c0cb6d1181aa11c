"""The ingestion core: turn the queued document changes into as few ingestion jobs as possible, losing none.

The queue is the durable record of "something changed since the last job started". An ingestion job scans the
whole data source when it starts, so it covers every change made before its start. Hence the invariant this
module keeps: **a change's message is deleted only after an ingestion job started after the change was sent**
(our StartIngestionJob call succeeded after the message had been received, so after it was sent).

``sync``:

1. Nothing pending in the queue (visible + in flight) -> stop, without calling Bedrock.
2. A job of this data source is STARTING / IN_PROGRESS / STOPPING -> busy, without receiving anything (so
   receive counts do not grow while a job runs and good messages never drift to the dead-letter queue).
3. Drain: receive 10 at a time (short polls) until the queue answers empty twice, MAX_MESSAGES_PER_RUN is
   reached or the time budget (remaining time minus a reserve) runs out. Each message is a change or poison;
   poison is never deleted (the redrive policy moves it to the dead-letter queue) and is logged with why.
4. StartIngestionJob once for all changes, with a client token derived from their message ids (a retried
   call is idempotent). If it fails, nothing is lost: busy answers (Conflict, Throttling, ServiceQuotaExceeded)
   make the messages visible again in RELEASE_VISIBILITY_S and return busy; other errors do the same and are
   re-raised (Lambda retries the asynchronous invocation). Messages already received REQUEUE_AT_RECEIVE_COUNT
   times are first copied back to the queue (a fresh copy has a receive count of 0) and only then deleted, so
   repeated busy answers can never push a valid change into the dead-letter queue.
5. After the job started: delete the changes' messages (batches of 10, failed entries retried; a change whose
   delete failed is harmless, the next job covers it again).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.errors import aws_error_code, aws_error_message, trim
from rag_ingest.changes import Change, PoisonMessage, parse_change
from rag_ingest.settings import Settings

BUSY_CODES = frozenset({"ConflictException", "ThrottlingException", "ServiceQuotaExceededException"})
RUNNING_STATUSES = ("STARTING", "IN_PROGRESS", "STOPPING")
FINISHED_STATUSES = frozenset({"COMPLETE", "FAILED", "STOPPED"})
NO_PENDING = "no pending changes"
SQS_BATCH = 10
VISIBILITY_MARGIN_S = 30  # received messages stay hidden a bit longer than the run can last
MAX_VISIBILITY_S = 43_200
RELEASE_VISIBILITY_S = 60  # after a busy answer, the messages come back this soon
DRAIN_RESERVE_MS = 20_000  # kept for StartIngestionJob and the deletes after the drain
DEFAULT_RUN_MS = 60_000  # the time budget when there is no Lambda context
EMPTY_RECEIVES_TO_STOP = 2  # short polls sample a subset of SQS servers: one empty answer is not proof
REQUEUE_AT_RECEIVE_COUNT = 3  # below the queue's maxReceiveCount (5), with room for approximate counts
BATCH_ATTEMPTS = 3
MAX_JOB_PAGES = 5
RECEIVE_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp"]
PENDING_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
MAX_REPORTED_REASONS = 10
MAX_LOGGED_REASONS = 100


@dataclass(frozen=True)
class Deps:
    """What the core needs: clients, settings, a logger and the time left in this run."""

    sqs: Any
    agent: Any
    settings: Settings
    log: Any
    remaining_ms: Callable[[], int]


def remaining_time(context: Any) -> Callable[[], int]:
    """The Lambda context's remaining time, or a DEFAULT_RUN_MS budget from now when there is no context."""
    method = getattr(context, "get_remaining_time_in_millis", None)
    if callable(method):
        return lambda: int(method())
    deadline = time.monotonic() + DEFAULT_RUN_MS / 1000
    return lambda: int((deadline - time.monotonic()) * 1000)


@dataclass(frozen=True)
class QueuedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_ms: int


@dataclass(frozen=True)
class Drained:
    changes: list[tuple[QueuedMessage, Change]]
    poison: list[tuple[QueuedMessage, str]]
    stopped_by: str  # "empty" | "cap" | "time"


@dataclass
class SyncResult:
    started: bool = False
    busy: bool = False
    reason: str | None = None
    job_id: str | None = None
    running_job_id: str | None = None
    changes: int = 0
    objects: int = 0
    poison: int = 0
    deleted: int = 0
    delete_failed: int = 0
    requeued: int = 0
    released: int = 0
    drain_stopped_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The function's answer for this run."""
        if self.reason == NO_PENDING:
            return {"action": "sync", "started": False, "reason": NO_PENDING}
        body: dict[str, Any] = {"action": "sync", "started": self.started, "busy": self.busy}
        optional = {"reason": self.reason, "jobId": self.job_id, "runningJobId": self.running_job_id}
        body.update({name: value for name, value in optional.items() if value is not None})
        body.update(
            changes=self.changes,
            objects=self.objects,
            poison=self.poison,
            deleted=self.deleted,
            deleteFailed=self.delete_failed,
            requeued=self.requeued,
            released=self.released,
        )
        return body


# --- sync --------------------------------------------------------------------------------------------------


def sync(deps: Deps) -> SyncResult:
    """One scheduled run: coalesce every pending change into at most one new ingestion job."""
    if pending_messages(deps) == 0:
        return SyncResult(reason=NO_PENDING)
    running = find_running_job(deps)
    if running is not None:
        job_id, status = running.get("ingestionJobId"), running.get("status")
        return SyncResult(busy=True, reason=f"ingestion job {job_id} is {status}", running_job_id=job_id)

    drained = drain(deps, visibility_timeout_s(deps.remaining_ms()))
    for message, why in drained.poison:
        deps.log.warning(
            "Poison message: left for the dead-letter queue",
            extra={"message_id": message.message_id, "reason": why, "receive_count": message.receive_count},
        )
    result = SyncResult(poison=len(drained.poison), drain_stopped_by=drained.stopped_by)
    if not drained.changes:
        result.reason = "no document change received"
        return result
    messages = [message for message, _ in drained.changes]
    result.changes, result.objects = len(messages), len({(c.bucket, c.key) for _, c in drained.changes})
    try:
        job = start_job(deps, messages)
    except Exception as exc:
        code = aws_error_code(exc)
        result.requeued, result.released = protect(deps, messages)
        if code in BUSY_CODES:
            result.busy, result.reason = True, f"StartIngestionJob answered {code}"
            deps.log.info(
                "Ingestion is busy: the changes stay queued",
                extra={"aws_error_code": code, "changes": result.changes, "requeued": result.requeued},
            )
            return result
        deps.log.error(
            "StartIngestionJob failed: the changes stay queued",
            extra={
                "aws_error_code": code or type(exc).__name__,
                "aws_message": trim(aws_error_message(exc) or str(exc)),
                "changes": result.changes,
                "requeued": result.requeued,
            },
        )
        raise
    result.started, result.job_id = True, str(job.get("ingestionJobId"))
    result.deleted, result.delete_failed = delete_messages(deps, messages)
    return result


def pending_messages(deps: Deps) -> int:
    """Messages in the queue, visible or in flight (approximate, as SQS counts them)."""
    response = deps.sqs.get_queue_attributes(QueueUrl=deps.settings.queue_url, AttributeNames=PENDING_ATTRIBUTES)
    attributes = response.get("Attributes") or {}
    return sum(int(attributes.get(name) or 0) for name in PENDING_ATTRIBUTES)


def find_running_job(deps: Deps) -> dict[str, Any] | None:
    """A STARTING / IN_PROGRESS / STOPPING job of the data source, if any."""
    params: dict[str, Any] = {
        **_data_source(deps.settings),
        "filters": [{"attribute": "STATUS", "operator": "EQ", "values": list(RUNNING_STATUSES)}],
        "maxResults": 10,
    }
    for _ in range(MAX_JOB_PAGES):
        response = deps.agent.list_ingestion_jobs(**params)
        jobs = response.get("ingestionJobSummaries") or []
        if jobs:
            return dict(jobs[0])
        token = response.get("nextToken")
        if not token:
            return None
        params["nextToken"] = token
    return None


def visibility_timeout_s(remaining_ms: int) -> int:
    """How long received messages stay hidden: a bit more than what is left of this run."""
    return min(MAX_VISIBILITY_S, max(0, math.ceil(remaining_ms / 1000)) + VISIBILITY_MARGIN_S)


def drain(deps: Deps, visibility_s: int) -> Drained:
    """Receive until the queue answers empty twice, the cap is reached or the time budget runs out."""
    settings = deps.settings
    cap = settings.max_messages_per_run
    received: dict[str, QueuedMessage] = {}
    empty_answers, stopped_by = 0, "empty"
    while True:
        if len(received) >= cap:
            stopped_by = "cap"
            break
        if deps.remaining_ms() < DRAIN_RESERVE_MS:
            stopped_by = "time"
            break
        response = deps.sqs.receive_message(
            QueueUrl=settings.queue_url,
            MaxNumberOfMessages=min(SQS_BATCH, cap - len(received)),
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=RECEIVE_ATTRIBUTES,
        )
        batch = response.get("Messages") or []
        if not batch:
            empty_answers += 1
            if empty_answers >= EMPTY_RECEIVES_TO_STOP:
                break
            continue
        empty_answers = 0
        for raw in batch:
            message = _queued(raw)
            received[message.message_id] = message
    changes: list[tuple[QueuedMessage, Change]] = []
    poison: list[tuple[QueuedMessage, str]] = []
    for message in received.values():
        try:
            changes.append(
                (
                    message,
                    parse_change(message.body, bucket=settings.documents_bucket, prefix=settings.documents_prefix),
                )
            )
        except PoisonMessage as bad:
            poison.append((message, bad.reason))
    return Drained(changes=changes, poison=poison, stopped_by=stopped_by)


def client_token(messages: Sequence[QueuedMessage]) -> str:
    """Idempotency token of one StartIngestionJob: the same messages give the same token (64 hex digits)."""
    return hashlib.sha256("\n".join(sorted(m.message_id for m in messages)).encode()).hexdigest()


def describe_changes(count: int) -> str:
    return "1 change" if count == 1 else f"{count} changes"


def start_job(deps: Deps, messages: Sequence[QueuedMessage]) -> dict[str, Any]:
    response = deps.agent.start_ingestion_job(
        **_data_source(deps.settings),
        clientToken=client_token(messages),
        description=describe_changes(len(messages)),
    )
    job: dict[str, Any] = response["ingestionJob"]
    return job


def protect(deps: Deps, messages: Sequence[QueuedMessage]) -> tuple[int, int]:
    """After a failed start: requeue messages near the redrive limit, make the others visible again soon.

    Returns (requeued, released). Never raises: whatever SQS refuses here simply comes back when its
    visibility timeout ends (a requeue that fails leaves the original message in place).
    """
    aged = [m for m in messages if m.receive_count >= REQUEUE_AT_RECEIVE_COUNT]
    others = [m for m in messages if m.receive_count < REQUEUE_AT_RECEIVE_COUNT]
    requeued: list[QueuedMessage] = []
    if aged:
        try:
            entries = [{"Id": str(i), "MessageBody": m.body} for i, m in enumerate(aged)]
            sent, _ = _in_batches(deps.sqs.send_message_batch, deps.settings.queue_url, entries)
            requeued = [m for i, m in enumerate(aged) if str(i) in sent]
            delete_messages(deps, requeued)  # each copy is queued: its original may go
        except Exception:
            deps.log.warning("Could not requeue changes near the redrive limit", exc_info=True)
        others += [m for m in aged if m not in requeued]
    try:
        released = change_visibility(deps, others, RELEASE_VISIBILITY_S)
    except Exception:
        deps.log.warning("Could not release the changes; they return after the visibility timeout", exc_info=True)
        released = 0
    return len(requeued), released


def delete_messages(deps: Deps, messages: Sequence[QueuedMessage]) -> tuple[int, int]:
    """DeleteMessageBatch in batches of 10, retrying failed entries; (deleted, still failed)."""
    entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
    done, failures = _in_batches(deps.sqs.delete_message_batch, deps.settings.queue_url, entries)
    if failures:
        deps.log.warning(
            "Some messages could not be deleted; the next job covers their changes again",
            extra={"failed": len(failures), "codes": sorted({str(f.get("Code")) for f in failures})},
        )
    return len(done), len(failures)


def change_visibility(deps: Deps, messages: Sequence[QueuedMessage], seconds: int) -> int:
    entries = [
        {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds} for i, m in enumerate(messages)
    ]
    done, _ = _in_batches(deps.sqs.change_message_visibility_batch, deps.settings.queue_url, entries)
    return len(done)


def _in_batches(
    call: Callable[..., dict[str, Any]], queue_url: str, entries: list[dict[str, Any]]
) -> tuple[set[str], list[dict[str, Any]]]:
    """Run an SQS batch action 10 entries at a time, retrying entries that failed through no fault of ours."""
    succeeded: set[str] = set()
    failures: list[dict[str, Any]] = []
    for offset in range(0, len(entries), SQS_BATCH):
        batch = entries[offset : offset + SQS_BATCH]
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            response = call(QueueUrl=queue_url, Entries=batch)
            succeeded.update(str(item["Id"]) for item in response.get("Successful") or [])
            failed = list(response.get("Failed") or [])
            retry = [item for item in failed if not item.get("SenderFault")]
            failures.extend(item for item in failed if item.get("SenderFault"))  # retrying cannot help
            if not retry:
                break
            if attempt == BATCH_ATTEMPTS:
                failures.extend(retry)
                break
            retry_ids = {str(item["Id"]) for item in retry}
            batch = [entry for entry in batch if entry["Id"] in retry_ids]
    return succeeded, failures


def _queued(raw: dict[str, Any]) -> QueuedMessage:
    attributes = raw.get("Attributes") or {}
    return QueuedMessage(
        message_id=str(raw["MessageId"]),
        receipt_handle=str(raw["ReceiptHandle"]),
        body=str(raw.get("Body") or ""),
        receive_count=int(attributes.get("ApproximateReceiveCount") or 0),
        sent_ms=int(attributes.get("SentTimestamp") or 0),
    )


def _data_source(settings: Settings) -> dict[str, str]:
    return {"knowledgeBaseId": settings.knowledge_base_id, "dataSourceId": settings.data_source_id}


# --- reconcile: report the newest job ----------------------------------------------------------------------


@dataclass(frozen=True)
class JobReport:
    job_id: str
    status: str
    started_at: str | None
    updated_at: str | None
    scanned: int
    indexed: int
    deleted: int
    failed: int
    failure_reasons: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "status": self.status,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
            "statistics": {
                "scanned": self.scanned,
                "indexed": self.indexed,
                "deleted": self.deleted,
                "failed": self.failed,
            },
            "failureReasons": self.failure_reasons[:MAX_REPORTED_REASONS],
            "failureReasonCount": len(self.failure_reasons),
        }


def newest_job(deps: Deps) -> JobReport | None:
    """The most recently started job of the data source (ListIngestionJobs, then GetIngestionJob)."""
    response = deps.agent.list_ingestion_jobs(
        **_data_source(deps.settings),
        sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"},
        maxResults=1,
    )
    summaries = response.get("ingestionJobSummaries") or []
    if not summaries:
        return None
    job = deps.agent.get_ingestion_job(**_data_source(deps.settings), ingestionJobId=summaries[0]["ingestionJobId"])
    return read_job(job["ingestionJob"])


def read_job(job: dict[str, Any]) -> JobReport:
    stats = job.get("statistics") or {}

    def count(*names: str) -> int:
        return sum(int(stats.get(name) or 0) for name in names)

    return JobReport(
        job_id=str(job.get("ingestionJobId")),
        status=str(job.get("status")),
        started_at=_iso(job.get("startedAt")),
        updated_at=_iso(job.get("updatedAt")),
        scanned=count("numberOfDocumentsScanned"),
        indexed=count("numberOfNewDocumentsIndexed", "numberOfModifiedDocumentsIndexed"),
        deleted=count("numberOfDocumentsDeleted"),
        failed=count("numberOfDocumentsFailed"),
        failure_reasons=[str(reason) for reason in job.get("failureReasons") or []],
    )


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)
