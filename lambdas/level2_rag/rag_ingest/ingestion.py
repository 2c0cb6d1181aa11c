"""The ingestion core: turn the queued document changes into as few ingestion jobs as possible, losing none.

The queue is the durable record of "something changed since the last job started". An ingestion job scans the
whole data source when it starts, so it covers every change made before its start. Hence the invariant this
module keeps: **a change's message is deleted only after an ingestion job started after the change was sent**
(our StartIngestionJob call succeeded after the message had been received, so after it was sent).

``sync``:

1. Is the data source in sync under its current configuration? Each job the function starts carries the
   data source's revision (DATA_SOURCE_REVISION: the stack's digest of the data source's properties) in its
   description. It is in sync when the newest COMPLETE job of the data source carries the current revision,
   no job of another revision started after it, and no job of the current revision started after it ended
   FAILED or STOPPED. Otherwise the run starts a **full sync** even with an empty queue. That covers a
   new stack or a replaced knowledge base / data source (S3 events cannot be relied on for documents that were
   in the bucket before the data source existed: the sample corpus can land before the bucket's EventBridge
   delivery is active) and a data source updated in place: a new ``rag_documents_prefix`` leaves the data
   source id as it is (the S3 inclusion prefixes are not create-only in the AWS::Bedrock::DataSource registry
   schema), and the documents already under the new prefix send no S3 event. A job of another revision started
   after the newest COMPLETE one means the configuration changed back while it ran (a rollback): that needs a
   full sync too. So does a job of ours that ended FAILED or STOPPED after it: its changes' messages were
   deleted when it started (step 6), so the queue no longer holds them, and only another job ingests what it
   left out. Once in sync, it is remembered for the life of the execution environment (a new data source id
   or revision is a new function configuration, hence new environments), except by the hourly reconcile
   (``retry_full_sync``), which reads the job history again: a job started after the data source was seen in
   sync may have failed since. A job that ended FAILED or STOPPED is retried by that reconcile, not every few
   minutes, or at once when a change is pending; so is (once: RETRY_FAILED_DOCUMENTS) a job of ours that
   ended COMPLETE with failed documents.
2. Nothing pending in the queue (visible + in flight) and in sync -> stop, without calling Bedrock again.
3. A job of this data source is STARTING / IN_PROGRESS / STOPPING -> busy, without receiving anything (so
   receive counts do not grow while a job runs and good messages never drift to the dead-letter queue).
4. Drain: receive 10 at a time (short polls) until the queue answers empty twice, MAX_MESSAGES_PER_RUN is reached,
   the time budget runs out (a reserve, and as long again as the drain took, are kept for the start and the
   deletes), or a later ReceiveMessage fails (the run goes on with what it holds). Each message is read on its own:
   anything that goes wrong reading a body makes that message, and only that message, poison; poison is never
   deleted (the redrive policy moves it to the dead-letter queue) and is logged with why. A change of a key outside
   the documents prefix (queued under a previous prefix), or an old version the bucket's lifecycle removed
   (``Change.noncurrent``), is moot, not poison: it is held, released and deleted like a change, but never starts a
   job by itself (see ``sync``). A valid change received for the REQUEUE_AT_RECEIVE_COUNT-th time (or later) is
   re-queued at once: a fresh copy (receive count 0, carrying when its change was first queued) is sent, then the
   original deleted.
5. StartIngestionJob once for all changes, with a client token derived from their message ids (a retried
   call is idempotent). Any failure after the first message was received (this call, or anything else) makes
   the held changes visible again in RELEASE_VISIBILITY_S; busy answers (Conflict, Throttling,
   ServiceQuotaExceeded) then return busy, other errors are re-raised (Lambda retries the invocation).
6. After the job started: delete the changes' messages (batches of 10, failed entries retried; a change whose
   delete failed is harmless, the next job covers it again). Should that job end FAILED or STOPPED, or COMPLETE
   with failed documents, step 1 finds the data source out of sync until a later job of the revision completes
   (a retry of failed documents that fails again counts as complete: its failures are left to the alarm).

No SQS batch call here raises: a refused release, re-queue or delete leaves the message where it is, and it
comes back when its visibility timeout ends. So a valid change's message reaches the dead-letter queue only if
it is received a 6th time, i.e. its re-queue failed in each of the runs that received it for the 3rd, 4th and
5th time (SQS refused SendMessageBatch or DeleteMessageBatch for it each time), never because of a busy,
failing or slow Bedrock, a failed ReceiveMessage or visibility change, or a run that timed out.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from common.errors import aws_error_code, aws_error_message, trim
from rag_ingest.aws import CALL_BUDGET_S
from rag_ingest.changes import Change, PoisonMessage, covered, parse_change
from rag_ingest.names import COMPLETE, INGESTION_RUNNING
from rag_ingest.settings import Settings

BUSY_CODES = frozenset({"ConflictException", "ThrottlingException", "ServiceQuotaExceededException"})
# A job that ended so ingested only part of the changes (a stopped sync: "select Sync again to ingest the rest
# of your data", https://docs.aws.amazon.com/bedrock/latest/userguide/kb-managed-sync.html).
UNFINISHED_STATUSES = frozenset({"FAILED", "STOPPED"})
FINISHED_STATUSES = frozenset({COMPLETE, *UNFINISHED_STATUSES})
NO_PENDING = "no pending changes"
FULL_SYNC = "full sync: the data source is not in sync under its current configuration"
# A COMPLETE job can still have failed documents (numberOfDocumentsFailed,
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html); a later job
# indexes a document not indexed yet (https://docs.aws.amazon.com/bedrock/latest/userguide/kb-direct-ingestion.html).
# The reconcile retries such a job of ours once: the retry carries this text, and its own failures are left to the
# DocumentsFailed alarm (a document that always fails, e.g. over 50 MB, must not start a job every hour).
# Only a retry that carried no change of its own is final: a job that retried and also ingested new changes
# (describe_job: "...; 3 changes") gets its one retry too, or a failed new document would never be retried.
RETRY_FAILED_DOCUMENTS = "retry of the documents that failed in job"
RETRY_TAG = re.compile(rf"^{RETRY_FAILED_DOCUMENTS} ([0-9a-zA-Z]{{10}}) \[revision [0-9a-f]{{16}}\]$")
# Whether such a retry takes the failed documents again is not settled by AWS's pages: "Syncing is incremental, so
# Amazon Bedrock only processes added, modified, or deleted documents since the last sync" (kb-managed-sync.html)
# against the direct-ingestion page's check of whether each document "has already been indexed". So a retry whose
# indexed and failed documents together fall short of its job's failed count is not taken as clearing them: the
# shortfall stays in DocumentsFailed (JobReport.unretried) until a change of the documents starts a job of its own.
# The revision a job was started under, at the end of its description (at most 200 characters).
REVISION_TAG = re.compile(r"\[revision ([0-9a-f]{16})\]$")
# ReceiveMessage MaxNumberOfMessages, "Valid values: 1 to 10" (botocore sqs; DeleteMessageBatch takes 10 too).
SQS_BATCH = 10
VISIBILITY_MARGIN_S = 30  # received messages stay hidden a bit longer than the run can last
# ChangeMessageVisibility: "The maximum is 12 hours" (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html).
MAX_VISIBILITY_S = 43_200
MAX_DELAY_S = 900  # SendMessage DelaySeconds: 0 to 900 (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatchRequestEntry.html)
RELEASE_VISIBILITY_S = 60  # after a failed start, the messages come back this soon (before the next sync)
# Kept for StartIngestionJob after the drain: the longest the call may take with its client's retries (52 s; it was
# 20 s, shorter than the call's own worst case). The deletes after it take one DeleteMessageBatch per ReceiveMessage
# (10 messages each), so the drain also keeps back as long as it has run: it stops once what is left, less this
# reserve, is no more than what it has used.
DRAIN_RESERVE_MS = CALL_BUDGET_S * 1000
DEFAULT_RUN_MS = 60_000  # the time budget when there is no Lambda context
EMPTY_RECEIVES_TO_STOP = 2  # short polls sample a subset of SQS servers: one empty answer is not proof
# The queue's maxReceiveCount is 5: SQS moves a message to the dead-letter queue when it would be received a 6th
# time. Re-queuing from the 3rd receive leaves three runs to succeed, and room for approximate counts.
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html
REQUEUE_AT_RECEIVE_COUNT = 3
BATCH_ATTEMPTS = 3
# ListIngestionJobs pages hold up to 1,000 (botocore bedrock-agent maxResults). One page of 200 holds every job an
# hour can end at the shortest sync interval, twice over (a test derives that bound); 5 pages read the 1,000 newest.
JOB_PAGE_SIZE = 200
MAX_JOB_PAGES = 5
RECEIVE_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp"]
# A re-queued copy is a new message: SQS counts its age (ApproximateAgeOfOldestMessage, the stale-change alarm) from
# the copy. The copy carries when its change was first queued (epoch milliseconds, a Number message attribute,
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-metadata.html), so the
# function can report how long the oldest change it holds has waited (the OldestChangeAge metric and its alarm).
FIRST_QUEUED_ATTRIBUTE = "FirstQueuedAt"
PENDING_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
MAX_REPORTED_REASONS = 10
# How often the reconcile schedule runs (stacks/level2_rag/stack.py); a job is reported by the first run after it ended.
RECONCILE_EVERY = timedelta(hours=1)
MAX_LOGGED_REASONS = 100

# (knowledge base id, data source id, revision) seen in sync in this execution environment.
_synced: set[tuple[str, str, str]] = set()


def forget_synced() -> None:
    """Forget which data sources were seen in sync (tests; a new execution environment starts empty)."""
    _synced.clear()


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
    first_queued_ms: int = 0  # when its change was first queued, for a re-queued copy (0: this message's own send)

    @property
    def waiting_since_ms(self) -> int:
        """When the change this message holds was first queued."""
        return self.first_queued_ms or self.sent_ms


@dataclass
class Drained:
    """What one run received, filled in as the drain goes (so a failure still knows what it holds)."""

    received: dict[str, QueuedMessage] = field(default_factory=dict)  # message id -> newest delivery
    parsed: dict[str, Change] = field(default_factory=dict)  # every document change, covered or not
    outside: set[str] = field(default_factory=set)  # changes of keys outside the documents prefix (moot)
    expired: set[str] = field(default_factory=set)  # old versions the bucket's lifecycle removed (moot)
    unreadable: dict[str, str] = field(default_factory=dict)  # message id -> why it is poison
    requeued: set[str] = field(default_factory=set)  # originals deleted after a fresh copy was queued
    stopped_by: str = "empty"  # "empty" | "cap" | "time" | "error"

    @property
    def changes(self) -> list[tuple[QueuedMessage, Change]]:
        """The changes the data source covers (what a job is started for)."""
        moot = self.outside | self.expired
        return [(self.received[i], change) for i, change in self.parsed.items() if i not in moot]

    @property
    def poison(self) -> list[tuple[QueuedMessage, str]]:
        return [(self.received[message_id], why) for message_id, why in self.unreadable.items()]

    def held(self) -> list[QueuedMessage]:
        """The changes' messages (moot ones too) this run still holds (received, not replaced by a fresh copy)."""
        return [self.received[message_id] for message_id in self.parsed if message_id not in self.requeued]


@dataclass
class SyncResult:
    started: bool = False
    busy: bool = False
    reason: str | None = None
    job_id: str | None = None
    running_job_id: str | None = None
    full_sync: bool = False
    changes: int = 0
    objects: int = 0
    outside_prefix: int = 0
    expired_versions: int = 0
    poison: int = 0
    deleted: int = 0
    delete_failed: int = 0
    requeued: int = 0
    released: int = 0
    drain_stopped_by: str | None = None
    waiting_since_ms: int | None = None  # when the oldest document change received was first queued

    def to_dict(self) -> dict[str, Any]:
        """The function's answer for this run."""
        if self.reason == NO_PENDING:
            return {"action": "sync", "started": False, "reason": NO_PENDING}
        body: dict[str, Any] = {"action": "sync", "started": self.started, "busy": self.busy}
        optional = {"reason": self.reason, "jobId": self.job_id, "runningJobId": self.running_job_id}
        body.update({name: value for name, value in optional.items() if value is not None})
        body.update(
            fullSync=self.full_sync,
            changes=self.changes,
            objects=self.objects,
            outsidePrefix=self.outside_prefix,
            expiredVersions=self.expired_versions,
            poison=self.poison,
            deleted=self.deleted,
            deleteFailed=self.delete_failed,
            requeued=self.requeued,
            released=self.released,
        )
        return body

    def count(self, drained: Drained) -> None:
        changes = drained.changes
        self.changes, self.objects = len(changes), len({(c.bucket, c.key) for _, c in changes})
        self.outside_prefix, self.expired_versions = len(drained.outside), len(drained.expired)
        self.poison, self.requeued = len(drained.unreadable), len(drained.requeued)
        self.drain_stopped_by = drained.stopped_by
        self.waiting_since_ms = min((message.waiting_since_ms for message, _ in changes), default=None)


# --- sync --------------------------------------------------------------------------------------------------


def sync(
    deps: Deps, *, retry_full_sync: bool = False, on_failure: Callable[[SyncResult], None] | None = None
) -> SyncResult:
    """One scheduled run: coalesce every pending change into at most one new ingestion job.

    Starts a full sync while the data source is not in sync under its current revision (``_history_in_sync``);
    ``retry_full_sync`` (the reconcile) reads the job history again, and also retries when the newest job ended
    FAILED or STOPPED. A run that fails after receiving changes gives ``on_failure`` what it counted (the oldest
    change's first-queued time among them) before the error is raised.
    """
    pending = pending_messages(deps)
    full = not data_source_synced(deps, fresh=retry_full_sync)
    if pending == 0 and not full:
        return SyncResult(reason=NO_PENDING)
    running = find_running_job(deps)
    if running is not None:
        job_id, status = running.get("ingestionJobId"), running.get("status")
        return SyncResult(
            busy=True, reason=f"ingestion job {job_id} is {status}", running_job_id=job_id, full_sync=full
        )
    previous, revision, retry_of = "", deps.settings.data_source_revision, ""
    if full:
        newest = newest_summary(deps)
        if newest is not None:
            previous = str(newest.get("ingestionJobId"))
            retry_of = previous if documents_to_retry(newest, revision) else ""
            # Only a failed attempt at this revision waits for the reconcile (a broken role would otherwise start
            # a job every few minutes); after a COMPLETE job of another revision (a configuration change) the
            # full sync starts now.
            failed_here = bool(retry_of) or (
                newest.get("status") != COMPLETE and job_revision(newest) in (None, revision)
            )
            if pending == 0 and failed_here and not retry_full_sync:
                ended = f"ended {newest.get('status')}"
                if retry_of:
                    ended = f"{ended} with {documents_failed(newest)} failed document(s)"
                reason = f"ingestion job {previous} {ended}; the hourly reconcile retries it"
                return SyncResult(reason=reason, full_sync=True)

    result = SyncResult(full_sync=full)
    drained = Drained()
    starting = False
    try:
        drain(deps, visibility_timeout_s(deps.remaining_ms()), drained)
        result.count(drained)
        for message, why in drained.poison:
            deps.log.warning(
                "Poison message: left for the dead-letter queue",
                extra={"message_id": message.message_id, "reason": why, "receive_count": message.receive_count},
            )
        if drained.outside:
            keys = sorted({drained.parsed[message_id].key for message_id in drained.outside})
            deps.log.info(
                "Changes outside the documents prefix: the data source no longer covers them",
                extra={"changes": len(drained.outside), "keys": keys[:MAX_REPORTED_REASONS], "full_sync": full},
            )
        if not drained.changes and not full:
            # In sync under the current revision, a moot change can go: should a later configuration cover its
            # key again, that revision finds this one's COMPLETE job newer than its own and starts a full sync.
            result.deleted, result.delete_failed = delete_messages(deps, drained.held())
            result.reason = "no document change received"
            return result
        starting = True
        covering = [drained.received[message_id] for message_id in drained.parsed]
        job = start_job(deps, covering, changes=result.changes, full=full, previous=previous, retry_of=retry_of)
    except Exception as exc:
        result.count(drained)
        result.released = release(deps, drained.held())
        code = aws_error_code(exc)
        if starting and code in BUSY_CODES:
            result.busy, result.reason = True, f"StartIngestionJob answered {code}"
            deps.log.info(
                "Ingestion is busy: the changes stay queued",
                extra={"aws_error_code": code, "changes": result.changes, "requeued": result.requeued},
            )
            return result
        if starting:
            headline = "StartIngestionJob failed: the changes stay queued"
        elif drained.received:
            headline = "Sync failed after receiving changes: they stay queued"
        else:
            headline = "Sync failed before receiving anything"
        deps.log.error(
            headline,
            extra={
                "aws_error_code": code or type(exc).__name__,
                "aws_message": trim(aws_error_message(exc) or str(exc)),
                "changes": result.changes,
                "requeued": result.requeued,
                "released": result.released,
            },
        )
        if on_failure is not None:
            on_failure(result)
        raise
    result.started, result.job_id = True, str(job.get("ingestionJobId"))
    result.deleted, result.delete_failed = delete_messages(deps, drained.held())
    if full:
        deps.log.info(
            "Full sync started",
            extra={"job_id": result.job_id, "previous_job_id": previous or None, "retry_of": retry_of or None},
        )
    return result


def pending_messages(deps: Deps) -> int:
    """Messages in the queue, visible or in flight (approximate, as SQS counts them)."""
    response = deps.sqs.get_queue_attributes(QueueUrl=deps.settings.queue_url, AttributeNames=PENDING_ATTRIBUTES)
    attributes = response.get("Attributes") or {}
    return sum(int(attributes.get(name) or 0) for name in PENDING_ATTRIBUTES)


def data_source_synced(deps: Deps, *, fresh: bool = False) -> bool:
    """True once the data source is in sync under its current revision (remembered for this environment).

    ``fresh`` reads the job history even when remembered (and forgets it when no longer in sync): a job started
    since may have ended FAILED or STOPPED.
    """
    settings = deps.settings
    key = (settings.knowledge_base_id, settings.data_source_id, settings.data_source_revision)
    if key in _synced and not fresh:
        return True
    if not _history_in_sync(deps):
        _synced.discard(key)
        return False
    _synced.add(key)
    return True


def _history_in_sync(deps: Deps) -> bool:
    """Whether the newest COMPLETE job carries the current revision, no job of another revision followed it, no
    job of the current revision that followed it ended FAILED or STOPPED, and it has no failed documents to retry.

    A data source updated in place (its id unchanged) must be synced again: each time its contents or its
    configuration change, "you must sync the data source so that it is re-indexed"
    (https://docs.aws.amazon.com/bedrock/latest/userguide/kb-ds-update.html). A job without a revision (started
    by someone else, or before revisions) proves nothing about the configuration it ran under; only a job of
    ours had its changes' messages deleted, so only its failure leaves changes that nothing else would ingest.
    """
    current = deps.settings.data_source_revision
    params: dict[str, Any] = {
        **_data_source(deps.settings),
        "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"},
        "maxResults": JOB_PAGE_SIZE,
    }
    other_since = False
    for _ in range(MAX_JOB_PAGES):
        response = deps.agent.list_ingestion_jobs(**params)
        for job in response.get("ingestionJobSummaries") or []:
            revision, status = job_revision(job), job.get("status")
            if status == COMPLETE:
                return revision == current and not other_since and not documents_to_retry(job, current)
            if status in UNFINISHED_STATUSES and revision == current:
                return False  # the changes it covered are no longer queued: another job must ingest them
            other_since = other_since or revision not in (None, current)
        token = response.get("nextToken")
        if not token:
            return False
        params["nextToken"] = token
    # Pages that never reached a COMPLETE job: assume in sync (rather than start a job every run) unless the
    # configuration changed.
    return not other_since


def job_revision(summary: dict[str, Any]) -> str | None:
    """The revision a job was started under (the tag at the end of its description), if it carries one."""
    match = REVISION_TAG.search(str(summary.get("description") or ""))
    return match.group(1) if match else None


def documents_failed(job: dict[str, Any]) -> int:
    """numberOfDocumentsFailed of a job: its ListIngestionJobs summary carries the statistics too
    (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobSummary.html)."""
    return int((job.get("statistics") or {}).get("numberOfDocumentsFailed") or 0)


def documents_to_retry(summary: dict[str, Any], revision: str) -> bool:
    """Whether a job of ours at ``revision`` ended COMPLETE with failed documents, and was not itself the retry.

    Its changes' messages were deleted when it started, so only another job ingests what failed; one retry only.
    """
    return (
        summary.get("status") == COMPLETE
        and job_revision(summary) == revision
        and documents_failed(summary) > 0
        and not RETRY_TAG.match(str(summary.get("description") or ""))
    )


def find_running_job(deps: Deps) -> dict[str, Any] | None:
    """A STARTING / IN_PROGRESS / STOPPING job of the data source, if any in the first MAX_JOB_PAGES pages of the
    listing filtered by those statuses (a page may come back empty with a token)."""
    params: dict[str, Any] = {
        **_data_source(deps.settings),
        "filters": [{"attribute": "STATUS", "operator": "EQ", "values": list(INGESTION_RUNNING)}],
        "maxResults": JOB_PAGE_SIZE,
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


def newest_summary(deps: Deps) -> dict[str, Any] | None:
    """The most recently started job of the data source (its ListIngestionJobs summary), if any."""
    response = deps.agent.list_ingestion_jobs(
        **_data_source(deps.settings),
        sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"},
        maxResults=1,
    )
    summaries = response.get("ingestionJobSummaries") or []
    return dict(summaries[0]) if summaries else None


def visibility_timeout_s(remaining_ms: int) -> int:
    """How long received messages stay hidden: a bit more than what is left of this run."""
    return min(MAX_VISIBILITY_S, max(0, math.ceil(remaining_ms / 1000)) + VISIBILITY_MARGIN_S)


def drain(deps: Deps, visibility_s: int, drained: Drained) -> None:
    """Receive until the queue answers empty twice, the cap is reached, the time budget runs out (as much time
    again as the drain took is kept for the deletes, besides DRAIN_RESERVE_MS) or SQS fails.

    Fills ``drained`` as it goes, so that the caller holds what was received whatever happens. Only a failure of the
    first ReceiveMessage is raised (nothing is held then); a later one stops the drain with what was received.
    """
    settings = deps.settings
    cap = settings.max_messages_per_run
    empty_answers = 0
    at_start_ms = deps.remaining_ms()
    while True:
        if len(drained.received) >= cap:
            drained.stopped_by = "cap"
            break
        remaining_ms = deps.remaining_ms()
        if remaining_ms - DRAIN_RESERVE_MS <= at_start_ms - remaining_ms:
            drained.stopped_by = "time"
            break
        try:
            response = deps.sqs.receive_message(
                QueueUrl=settings.queue_url,
                MaxNumberOfMessages=min(SQS_BATCH, cap - len(drained.received)),
                VisibilityTimeout=visibility_s,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=RECEIVE_ATTRIBUTES,
                MessageAttributeNames=[FIRST_QUEUED_ATTRIBUTE],
            )
        except Exception as exc:
            if not drained.received:
                raise
            deps.log.warning(
                "ReceiveMessage failed: the run goes on with the messages received so far",
                extra={"aws_error_code": aws_error_code(exc) or type(exc).__name__, "held": len(drained.received)},
            )
            drained.stopped_by = "error"
            break
        batch = response.get("Messages") or []
        if not batch:
            empty_answers += 1
            if empty_answers >= EMPTY_RECEIVES_TO_STOP:
                drained.stopped_by = "empty"
                break
            continue
        empty_answers = 0
        aged: list[QueuedMessage] = []
        for raw in batch:
            message = _queued(raw)
            drained.received[message.message_id] = message
            why = _read(deps.settings, message, drained)
            if why is not None:
                drained.unreadable[message.message_id] = why
            elif message.receive_count >= REQUEUE_AT_RECEIVE_COUNT and message.message_id not in drained.requeued:
                aged.append(message)
        if aged:
            drained.requeued.update(requeue(deps, aged, delay_s=min(MAX_DELAY_S, visibility_s)))


def _read(settings: Settings, message: QueuedMessage, drained: Drained) -> str | None:
    """Record the change a message holds; the reason it is poison otherwise. Never raises."""
    try:
        change = parse_change(message.body, bucket=settings.documents_bucket)
        drained.parsed[message.message_id] = change
        if not covered(change.key, settings.documents_prefix):
            drained.outside.add(message.message_id)
        elif change.noncurrent:
            drained.expired.add(message.message_id)
    except PoisonMessage as bad:
        return bad.reason
    except Exception as exc:  # whatever else reading this one body raised: this message alone is poison
        return f"the body could not be read ({type(exc).__name__})"
    return None


def client_token(messages: Sequence[QueuedMessage], salt: str = "") -> str:
    """Idempotency token of one StartIngestionJob: the same messages give the same token (64 hex digits).

    ``salt`` tells apart starts that hold the same messages but must be distinct jobs (a full sync retried
    after a failed one carries the failed job's id).
    """
    ids = "\n".join(sorted(m.message_id for m in messages))
    return hashlib.sha256((f"{salt}\n{ids}" if salt else ids).encode()).hexdigest()


def full_sync_salt(settings: Settings, previous: str) -> str:
    """What sets a full sync's token apart: the data source and its revision (a replaced or reconfigured one
    starts from the same queue) and the newest job before it (a retry after a failed full sync must start a new
    job, not answer the old one)."""
    ids = f"{settings.knowledge_base_id}:{settings.data_source_id}:{settings.data_source_revision}"
    return f"full-sync:{ids}:{previous}"


def describe_changes(count: int) -> str:
    return "1 change" if count == 1 else f"{count} changes"


def describe_job(count: int, *, full: bool, revision: str, retry_of: str = "") -> str:
    """The job's description, ending with the revision it runs under (at most 200 characters, as
    StartIngestionJob allows); a full sync that retries the failed documents of ``retry_of`` starts with
    RETRY_FAILED_DOCUMENTS."""
    text = describe_changes(count)
    if full:
        why = f"{RETRY_FAILED_DOCUMENTS} {retry_of}" if retry_of else FULL_SYNC
        text = f"{why}; {text}" if count else why
    return f"{text} [revision {revision}]"


def start_job(
    deps: Deps,
    messages: Sequence[QueuedMessage],
    *,
    changes: int,
    full: bool = False,
    previous: str = "",
    retry_of: str = "",
) -> dict[str, Any]:
    """Start the job that covers ``messages`` (``changes`` of them covered by the data source)."""
    response = deps.agent.start_ingestion_job(
        **_data_source(deps.settings),
        clientToken=client_token(messages, full_sync_salt(deps.settings, previous) if full else ""),
        description=describe_job(changes, full=full, revision=deps.settings.data_source_revision, retry_of=retry_of),
    )
    job: dict[str, Any] = response["ingestionJob"]
    return job


def requeue(deps: Deps, messages: Sequence[QueuedMessage], *, delay_s: int = 0) -> set[str]:
    """Queue a fresh copy of each message (receive count 0), then delete the original; never raises.

    The copies are delayed by ``delay_s`` (the drain passes the run's visibility timeout), so this run does not
    receive its own copies; they come back when the originals would have. Returns the ids of the messages whose
    original is gone. A copy that could not be sent leaves its original in place; an original that could not be
    deleted stays held (the copy is a harmless duplicate).
    """
    entries = [
        {
            "Id": str(i),
            "MessageBody": m.body,
            "DelaySeconds": delay_s,
            "MessageAttributes": {
                FIRST_QUEUED_ATTRIBUTE: {"DataType": "Number", "StringValue": str(m.waiting_since_ms)},
            },
        }
        for i, m in enumerate(messages)
    ]
    sent, failures = _in_batches(deps.sqs.send_message_batch, deps.settings.queue_url, entries)
    copied = [m for i, m in enumerate(messages) if str(i) in sent]
    gone = _delete(deps, copied)
    if failures or len(gone) < len(copied):
        deps.log.warning(
            "Some changes near the redrive limit could not be re-queued; the next runs try again",
            extra={"not_sent": len(failures), "not_deleted": len(copied) - len(gone), "codes": _codes(failures)},
        )
    return {m.message_id for m in gone}


def release(deps: Deps, messages: Sequence[QueuedMessage]) -> int:
    """After a failure: make the held changes visible again in RELEASE_VISIBILITY_S; never raises.

    Whatever SQS refuses here comes back anyway when the run's visibility timeout ends.
    """
    if not messages:
        return 0
    entries = [
        {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": RELEASE_VISIBILITY_S}
        for i, m in enumerate(messages)
    ]
    done, failures = _in_batches(deps.sqs.change_message_visibility_batch, deps.settings.queue_url, entries)
    if failures:
        deps.log.warning(
            "Some changes could not be released; they return after the visibility timeout",
            extra={"failed": len(failures), "codes": _codes(failures)},
        )
    return len(done)


def delete_messages(deps: Deps, messages: Sequence[QueuedMessage]) -> tuple[int, int]:
    """Delete the messages a started job covers; (deleted, still failed). Never raises."""
    gone = _delete(deps, messages)
    return len(gone), len(messages) - len(gone)


def _delete(deps: Deps, messages: Sequence[QueuedMessage]) -> list[QueuedMessage]:
    """DeleteMessageBatch in batches of 10, retrying failed entries; the messages deleted."""
    entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
    done, failures = _in_batches(deps.sqs.delete_message_batch, deps.settings.queue_url, entries)
    if failures:
        deps.log.warning(
            "Some messages could not be deleted; the next job covers their changes again",
            extra={"failed": len(failures), "codes": _codes(failures)},
        )
    return [m for i, m in enumerate(messages) if str(i) in done]


def _codes(failures: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({str(f.get("Code")) for f in failures})


def _in_batches(
    call: Callable[..., dict[str, Any]], queue_url: str, entries: list[dict[str, Any]]
) -> tuple[set[str], list[dict[str, Any]]]:
    """Run an SQS batch action 10 entries at a time, retrying entries that failed through no fault of ours.

    Never raises: a call that raises (after botocore's own retries) fails its whole batch, with the error's
    code (or the exception's name for a timeout or a connection error) as each entry's ``Code``.
    """
    succeeded: set[str] = set()
    failures: list[dict[str, Any]] = []
    for offset in range(0, len(entries), SQS_BATCH):
        batch = entries[offset : offset + SQS_BATCH]
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                response = call(QueueUrl=queue_url, Entries=batch)
            except Exception as exc:
                code = aws_error_code(exc) or type(exc).__name__
                failures.extend({"Id": entry["Id"], "Code": code, "SenderFault": None} for entry in batch)
                break
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
        first_queued_ms=_first_queued_ms(raw.get("MessageAttributes") or {}),
    )


def _first_queued_ms(attributes: dict[str, Any]) -> int:
    """The copy's FIRST_QUEUED_ATTRIBUTE; 0 when absent (EventBridge's own messages) or not a whole number."""
    value = (attributes.get(FIRST_QUEUED_ATTRIBUTE) or {}).get("StringValue")
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


def _data_source(settings: Settings) -> dict[str, str]:
    return {"knowledgeBaseId": settings.knowledge_base_id, "dataSourceId": settings.data_source_id}


# --- reconcile: report every job that ended since the previous run -----------------------------------------


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
    # numberOfDocumentsSkipped: "source documents that were skipped during ingestion"; the API reference says no
    # more (which files it counts is undocumented), so it is reported, not alarmed on
    # (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html).
    skipped: int = 0
    failure_reasons: list[str] = field(default_factory=list)
    description: str = ""
    # A retry of ours (RETRY_TAG) that indexed and failed fewer documents than its job failed: the ones it may not
    # have taken again (see RETRY_TAG), counted in failed_signal.
    unretried: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def retry_of(self) -> str | None:
        """The job whose failed documents this job of ours retried, with no change of its own (else None)."""
        match = RETRY_TAG.match(self.description)
        return match.group(1) if match else None

    @property
    def failed_signal(self) -> int:
        """What DocumentsFailed reports for the job: its failed documents and the ones its retry left untaken."""
        return self.failed + self.unretried

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
                "skipped": self.skipped,
            },
            "failureReasons": self.failure_reasons[:MAX_REPORTED_REASONS],
            "failureReasonCount": len(self.failure_reasons),
        }


def finished_since(report: JobReport, since: datetime) -> bool:
    """Whether the job's last update (its end, once finished) is after ``since``; true when it is not known."""
    if report.updated_at is None:
        return True
    return datetime.fromisoformat(report.updated_at) > since


@dataclass(frozen=True)
class RecentJobs:
    """The newest job of the data source, then every older one that ended after ``since`` (newest first)."""

    jobs: list[JobReport]
    read_to_end: bool  # False: MAX_JOB_PAGES did not reach a job that ended before ``since``

    @property
    def newest(self) -> JobReport | None:
        return self.jobs[0] if self.jobs else None


def recent_jobs(deps: Deps, since: datetime) -> RecentJobs:
    """The newest job and every job that ended after ``since`` (ListIngestionJobs by start time, newest first).

    A data source runs one job at a time, so the first job (after the newest) that ended before ``since`` is older
    than the window and so are all before it: the listing stops there, or after MAX_JOB_PAGES pages. A job's
    detail (GetIngestionJob: its failureReasons) is read only when there is something to read in it.
    """
    params: dict[str, Any] = {
        **_data_source(deps.settings),
        "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"},
        "maxResults": JOB_PAGE_SIZE,
    }
    summaries: list[dict[str, Any]] = []
    for _ in range(MAX_JOB_PAGES):
        response = deps.agent.list_ingestion_jobs(**params)
        for job in response.get("ingestionJobSummaries") or []:
            if summaries and not _updated_since(job, since):  # the newest job is reported however old
                return RecentJobs(_reports(deps, summaries), True)
            summaries.append(dict(job))
        token = response.get("nextToken")
        if not token:
            return RecentJobs(_reports(deps, summaries), True)
        params["nextToken"] = token
    return RecentJobs(_reports(deps, summaries), False)


def _reports(deps: Deps, summaries: list[dict[str, Any]]) -> list[JobReport]:
    """Each job's report; a finished retry's with what it left untaken (RETRY_TAG), from its job's failed count."""
    reports = [_report(deps, summary) for summary in summaries]
    listed = {report.job_id: report for report in reports}
    checked: list[JobReport] = []
    for report in reports:
        original = report.retry_of
        if original is not None and report.status == COMPLETE:
            before = listed.get(original) or _job_report(deps, original)
            if before is not None and (count := untaken(report, before)):
                report = replace(report, unretried=count)
        checked.append(report)
    return checked


def untaken(retry: JobReport, original: JobReport) -> int:
    """How many of ``original``'s failed documents its ``retry`` did not take again: what its indexed and failed
    documents together fall short of them (see RETRY_TAG)."""
    return max(0, original.failed - retry.indexed - retry.failed)


def _job_report(deps: Deps, job_id: str) -> JobReport | None:
    """GetIngestionJob's report of ``job_id``; None when Bedrock no longer has the job."""
    try:
        job = deps.agent.get_ingestion_job(**_data_source(deps.settings), ingestionJobId=job_id)
    except Exception as exc:
        if aws_error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return read_job(job["ingestionJob"])


def _updated_since(summary: dict[str, Any], since: datetime) -> bool:
    """updatedAt is a required member of IngestionJobSummary (botocore bedrock-agent), which botocore parses into an
    aware datetime."""
    return bool(summary["updatedAt"] > since)


def _report(deps: Deps, summary: dict[str, Any]) -> JobReport:
    """The job's report: from its summary, or from GetIngestionJob when it may hold failureReasons."""
    status = summary.get("status")
    if "statistics" in summary and status not in UNFINISHED_STATUSES and not documents_failed(summary):
        return read_job(summary)
    job = deps.agent.get_ingestion_job(**_data_source(deps.settings), ingestionJobId=summary["ingestionJobId"])
    return read_job(job["ingestionJob"])


def read_job(job: dict[str, Any]) -> JobReport:
    """A job's report from its GetIngestionJob detail (or its summary, which has no failureReasons)."""
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
        skipped=count("numberOfDocumentsSkipped"),
        failure_reasons=[str(reason) for reason in job.get("failureReasons") or []],
        description=str(job.get("description") or ""),
    )


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)
