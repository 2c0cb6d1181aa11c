"""Lambda entry point of the Level 2 ingestion function (``rag_ingest.handler.handler``).

Invoked by two EventBridge schedules with constant input (or directly with the same dict):

- ``{"action": "sync"}``: coalesce the queued document changes into one ingestion job (``ingestion.sync``),
  or start a full sync while the data source is not in sync under its current configuration;
- ``{"action": "reconcile"}``: a report of every ingestion job that ended since the previous reconcile run
  (metrics, and its ``failureReasons`` in the log), then the same sync, which reads the job history afresh and
  retries a job that ended FAILED or STOPPED, or COMPLETE with failed documents (once).

Any other event is logged and answered with ``{"error": {...}}`` without raising (a retry cannot fix it).
AWS errors other than "busy" are re-raised after logging, so Lambda retries the asynchronous invocation;
the changes stay queued either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.errors import trim
from common.metric_names import KNOWLEDGE_BASE_DIMENSION
from common.observability import make_tracer, publish
from rag_ingest import aws, ingestion
from rag_ingest.names import DOCUMENTS_FAILED, INGESTION_JOB_FAILED, OLDEST_CHANGE_AGE
from rag_ingest.settings import get_settings

logger = Logger()

ACTIONS = ("sync", "reconcile")
# The time an EventBridge scheduled event was due: its "time" field, ISO-8601 UTC to the second, e.g.
# "2022-04-31T17:00:00Z" (https://docs.aws.amazon.com/eventbridge/latest/ref/overiew-event-structure.html).
RECONCILE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    return make_tracer(logger)


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    """EMF metrics in the configured namespace."""
    settings = get_settings()
    return Metrics(namespace=settings.metrics_namespace, service=settings.service_name)


def _publish(values: Mapping[str, tuple[MetricUnit, float]]) -> None:
    publish(get_metrics(), values, {KNOWLEDGE_BASE_DIMENSION: get_settings().knowledge_base_id}, logger)


def parse_action(event: Any) -> str | None:
    """``sync`` or ``reconcile`` for the schedules' input; None for anything else. The reconcile schedule adds the
    time it was due (its event's ``time``, RECONCILE_TIME), which must then be an ISO-8601 UTC time."""
    if not isinstance(event, dict) or event.get("action") not in ACTIONS:
        return None
    if set(event) == {"action"}:
        return str(event["action"])
    if event["action"] == "reconcile" and set(event) == {"action", "time"} and scheduled_time(event) is not None:
        return "reconcile"
    return None


def scheduled_time(event: dict[str, Any]) -> datetime | None:
    """The reconcile's due time (``"2026-12-02T14:00:27Z"``) to the minute, or None when the event carries none or a
    bad one. To the minute: a rate schedule's events come an hour apart give or take seconds, so two consecutive
    windows meet."""
    text = event.get("time")
    if not isinstance(text, str) or not RECONCILE_TIME.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(second=0)
    except ValueError:
        return None


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    action = parse_action(event)
    if action is None:
        shown = sorted(str(key)[:40] for key in event)[:10] if isinstance(event, dict) else []
        logger.warning("Unsupported event", extra={"event_type": type(event).__name__, "event_keys": shown})
        return {
            "error": {
                "code": "unsupported_event",
                "message": 'This function expects {"action": "sync"} or {"action": "reconcile"} '
                "(the input of its EventBridge schedules).",
            }
        }
    result: dict[str, Any] = get_runner()(event, context)
    return result


@lru_cache(maxsize=1)
def get_runner() -> Any:
    """``run``, wrapped by the Tracer (without capturing the response) when tracing is on."""
    tracer = get_tracer()
    if tracer is None:
        return run
    return tracer.capture_lambda_handler(run, capture_response=False)


def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run one validated action with the lazily created clients."""
    action = str(event["action"])
    tracer = get_tracer()
    if tracer is not None:
        tracer.put_annotation(key="Action", value=action)
    deps = ingestion.Deps(
        sqs=aws.get_sqs_client(),
        agent=aws.get_agent_client(),
        settings=get_settings(),
        log=logger,
        remaining_ms=ingestion.remaining_time(context),
    )
    if action == "sync":
        return run_sync(deps).to_dict()
    return run_reconcile(deps, scheduled_time(event))


def _oldest_change_age(result: ingestion.SyncResult) -> dict[str, tuple[MetricUnit, float]]:
    """How long the oldest change the run received has waited since it was first queued, re-queued copies included
    (their SQS age starts over): the OldestChangeAge alarm sees what SQS's own age metric misses. Nothing when the
    run received no change."""
    if result.waiting_since_ms is None:
        return {}
    waited_s = max(0.0, now().timestamp() - result.waiting_since_ms / 1000)
    return {OLDEST_CHANGE_AGE: (MetricUnit.Seconds, round(waited_s))}


def _failed_after_receiving(result: ingestion.SyncResult) -> None:
    """A run that failed after receiving changes (StartIngestionJob refused with anything but busy, an error while
    reading them): it still reports their age, since the changes stay queued and each re-queued copy's SQS age
    starts over, so without it neither 24-hour alarm could fire however long the failure lasts."""
    age = _oldest_change_age(result)
    if age:
        _publish(age)


def run_sync(deps: ingestion.Deps, *, retry_full_sync: bool = False) -> ingestion.SyncResult:
    result = ingestion.sync(deps, retry_full_sync=retry_full_sync, on_failure=_failed_after_receiving)
    # A run that found nothing to do writes no metric: a custom metric is billed for each hour it is written in
    # (https://aws.amazon.com/cloudwatch/pricing/), so an idle knowledge base costs nothing here.
    if result.started or result.busy or result.poison:
        values = {
            "ChangesCoalesced": (MetricUnit.Count, result.changes if result.started else 0),
            "IngestionJobsStarted": (MetricUnit.Count, int(result.started)),
            "IngestionBusy": (MetricUnit.Count, int(result.busy)),
            "PoisonMessages": (MetricUnit.Count, result.poison),
            **_oldest_change_age(result),
        }
        _publish(values)
    logger.info("Sync finished", extra={"sync": result.to_dict(), "drain_stopped_by": result.drain_stopped_by})
    return result


def run_reconcile(deps: ingestion.Deps, due: datetime | None = None) -> dict[str, Any]:
    """Report the jobs that ended in the hour before ``due`` (the time the schedule was due; now when not given),
    then sync even when the report failed (the sync's error is raised first).

    The window ends at the due time, not when the run starts: Lambda runs a failed asynchronous invocation again a
    minute or two later, and a throttled one up to hours later
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html), and a window measured from
    the start would skip the jobs that ended between the two; the hourly due times tile the hours without a gap.
    The report comes first: the sync retries a job that ended FAILED or STOPPED (or COMPLETE with failed
    documents), and the retry would otherwise be the newest job, so a failure would never reach the alarms.
    """
    report_error: Exception | None = None
    recent: ingestion.RecentJobs | None = None
    at = due or now()
    try:
        recent = ingestion.recent_jobs(deps, at - ingestion.RECONCILE_EVERY)
    except Exception as exc:
        report_error = exc
    else:
        if recent.newest is None:
            logger.info("No ingestion job has run yet")
        else:
            _report_jobs(recent, at)
    try:
        sync_result = run_sync(deps, retry_full_sync=True).to_dict()
    except Exception:
        if report_error is not None:
            logger.error("Could not report the ingestion jobs", exc_info=report_error)
        raise
    if report_error is not None:
        raise report_error
    newest = recent.newest if recent else None
    ended = [job.job_id for job in recent.jobs if _ended_since(job, at)] if recent else []
    return {
        "action": "reconcile",
        "sync": sync_result,
        "job": newest.to_dict() if newest else None,
        "jobsReported": ended,
    }


def now() -> datetime:
    return datetime.now(UTC)


def _ended_since(report: ingestion.JobReport, at: datetime) -> bool:
    """Whether the job ended in the hour up to ``at``: a later end is the next window's (a job whose end time is not
    known is reported)."""
    return (
        report.finished
        and ingestion.finished_since(report, at - ingestion.RECONCILE_EVERY)
        and (report.updated_at is None or not ingestion.finished_since(report, at))
    )


def _report_jobs(recent: ingestion.RecentJobs, at: datetime) -> None:
    """Metrics of each job that finished since the previous reconcile run; of an older newest job, only its failure.

    With the sync every few minutes several jobs can end within the hour: each is reported (one EMF document each),
    so the failed documents of an earlier one are not hidden by a later, clean one. IngestionJobFailed stays 1
    every hour while the newest job is a failed one, and DocumentsFailed stays at its count while the newest job
    has failed documents, or is a retry that did not take all of its job's failed ones again (JobReport.unretried),
    so their alarms stay in ALARM; nothing is written once the newest job is an older success:
    the alarms treat missing data as not breaching.
    """
    newest = recent.jobs[0]
    if not newest.finished:
        fields = {"job_id": newest.job_id, "status": newest.status, **newest.to_dict()["statistics"]}
        logger.info("The newest ingestion job is still running; it is reported once finished", extra=fields)
    for report in recent.jobs:
        if not report.finished:
            continue
        if _ended_since(report, at):
            _publish(
                {
                    "DocumentsScanned": (MetricUnit.Count, report.scanned),
                    "DocumentsIndexed": (MetricUnit.Count, report.indexed),
                    "DocumentsDeleted": (MetricUnit.Count, report.deleted),
                    DOCUMENTS_FAILED: (MetricUnit.Count, report.failed_signal),
                    "DocumentsSkipped": (MetricUnit.Count, report.skipped),
                    INGESTION_JOB_FAILED: (MetricUnit.Count, int(report.status == "FAILED")),
                }
            )
        elif report is newest:
            still: dict[str, tuple[MetricUnit, float]] = {}
            if report.status == "FAILED":
                still[INGESTION_JOB_FAILED] = (MetricUnit.Count, 1)
            if report.failed_signal:
                still[DOCUMENTS_FAILED] = (MetricUnit.Count, report.failed_signal)
            if still:
                _publish(still)
        _log_job(report)
    if not recent.read_to_end:
        logger.warning(
            "More ingestion jobs ended since the previous reconcile than were read; the oldest are not reported",
            extra={"reported": len(recent.jobs), "pages": ingestion.MAX_JOB_PAGES},
        )


def _log_job(report: ingestion.JobReport) -> None:
    """The job's report, and its failure reasons (each trimmed, at most MAX_LOGGED_REASONS of them).

    A STOPPED job does not count as failed: it is what a StopIngestionJob call leaves (someone meant it; the
    function never calls it, https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJob.html).
    It is logged as a warning; if it was the function's, the sync that follows starts a job for the rest.
    """
    fields = {"job_id": report.job_id, "status": report.status, **report.to_dict()["statistics"]}
    logger.info("Ingestion job report", extra=fields)
    if report.status == "STOPPED":
        logger.warning("An ingestion job was stopped before it finished", extra=fields)
    if report.unretried:
        logger.warning(
            "A retry indexed or failed fewer documents than its job failed; DocumentsFailed keeps the rest until "
            "a change of those documents (fix, replace or delete them in the bucket) starts a job of its own",
            extra={"job_id": report.job_id, "retry_of": report.retry_of, "not_retried": report.unretried},
        )
    if report.failure_reasons:
        log = logger.error if report.status == "FAILED" else logger.warning
        log(
            "Ingestion job failure reasons",
            extra={
                "job_id": report.job_id,
                "status": report.status,
                "documents_failed": report.failed,
                "failure_reasons": [trim(reason) for reason in report.failure_reasons[: ingestion.MAX_LOGGED_REASONS]],
                "failure_reason_count": len(report.failure_reasons),
            },
        )
    elif report.status == "FAILED":
        logger.error("Ingestion job failed without failure reasons", extra=fields)
    elif report.failed:
        logger.warning("Ingestion job had failed documents but no failure reasons", extra=fields)
