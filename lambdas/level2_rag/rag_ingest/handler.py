"""Lambda entry point of the Level 2 ingestion function (``rag_ingest.handler.handler``).

Invoked by two EventBridge schedules with constant input (or directly with the same dict):

- ``{"action": "sync"}``: coalesce the queued document changes into one ingestion job (``ingestion.sync``),
  or start a full sync while the data source is not in sync under its current configuration;
- ``{"action": "reconcile"}``: a report of the newest ingestion job (metrics, and its ``failureReasons`` in the
  log), then the same sync, which reads the job history afresh and retries a job that ended FAILED or STOPPED.

Any other event is logged and answered with ``{"error": {...}}`` without raising (a retry cannot fix it).
AWS errors other than "busy" are re-raised after logging, so Lambda retries the asynchronous invocation;
the changes stay queued either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.observability import make_tracer, publish
from rag_ingest import aws, ingestion
from rag_ingest.settings import get_settings

logger = Logger()

ACTIONS = ("sync", "reconcile")


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    return make_tracer(logger)


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    """EMF metrics in the configured namespace."""
    settings = get_settings()
    return Metrics(namespace=settings.metrics_namespace, service=settings.service_name)


def _publish(values: Mapping[str, tuple[MetricUnit, float]]) -> None:
    publish(get_metrics(), values, {"KnowledgeBaseId": get_settings().knowledge_base_id}, logger)


def parse_action(event: Any) -> str | None:
    """``sync`` or ``reconcile`` for the schedules' constant input; None for anything else."""
    if isinstance(event, dict) and set(event) == {"action"} and event["action"] in ACTIONS:
        return str(event["action"])
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
    return run_reconcile(deps)


def run_sync(deps: ingestion.Deps, *, retry_full_sync: bool = False) -> ingestion.SyncResult:
    result = ingestion.sync(deps, retry_full_sync=retry_full_sync)
    # A run that found nothing to do writes no metric: a custom metric is billed for each hour it is written in
    # (https://aws.amazon.com/cloudwatch/pricing/), so an idle knowledge base costs nothing here.
    if result.started or result.busy or result.poison:
        _publish(
            {
                "ChangesCoalesced": (MetricUnit.Count, result.changes if result.started else 0),
                "IngestionJobsStarted": (MetricUnit.Count, int(result.started)),
                "IngestionBusy": (MetricUnit.Count, int(result.busy)),
                "PoisonMessages": (MetricUnit.Count, result.poison),
            }
        )
    logger.info("Sync finished", extra={"sync": result.to_dict(), "drain_stopped_by": result.drain_stopped_by})
    return result


def run_reconcile(deps: ingestion.Deps) -> dict[str, Any]:
    """Report the newest job, then sync even when the report failed (the sync's error is raised first).

    The report comes first: the sync retries a job that ended FAILED or STOPPED, and the retry would otherwise
    be the newest job, so a failure would never reach IngestionJobFailed.
    """
    report_error: Exception | None = None
    report: ingestion.JobReport | None = None
    try:
        report = ingestion.newest_job(deps)
    except Exception as exc:
        report_error = exc
    else:
        if report is None:
            logger.info("No ingestion job has run yet")
        else:
            _report_job(report, now())
    try:
        sync_result = run_sync(deps, retry_full_sync=True).to_dict()
    except Exception:
        if report_error is not None:
            logger.error("Could not report the newest ingestion job", exc_info=report_error)
        raise
    if report_error is not None:
        raise report_error
    return {"action": "reconcile", "sync": sync_result, "job": report.to_dict() if report else None}


def now() -> datetime:
    return datetime.now(UTC)


def _report_job(report: ingestion.JobReport, at: datetime) -> None:
    """Metrics of a job that finished since the previous reconcile run; of an older one, only a failure.

    IngestionJobFailed stays 1 every hour while the newest job is a failed one (its alarm stays in ALARM), and
    nothing is written once the newest job is an older success: the alarm treats missing data as not breaching.
    A STOPPED job does not count as failed: it is what a StopIngestionJob call leaves (someone meant it; the
    function never calls it, https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJob.html).
    It is logged as a warning; if it was the function's, the sync that follows starts a job for the rest.
    """
    fields = {"job_id": report.job_id, "status": report.status, **report.to_dict()["statistics"]}
    if not report.finished:
        logger.info("The newest ingestion job is still running; it is reported once finished", extra=fields)
        return
    failed = report.status == "FAILED"
    if ingestion.finished_since(report, at - ingestion.RECONCILE_EVERY):
        _publish(
            {
                "DocumentsScanned": (MetricUnit.Count, report.scanned),
                "DocumentsIndexed": (MetricUnit.Count, report.indexed),
                "DocumentsDeleted": (MetricUnit.Count, report.deleted),
                "DocumentsFailed": (MetricUnit.Count, report.failed),
                "IngestionJobFailed": (MetricUnit.Count, int(failed)),
            }
        )
    elif failed:
        _publish({"IngestionJobFailed": (MetricUnit.Count, 1)})
    logger.info("Ingestion job report", extra=fields)
    if report.status == "STOPPED":
        logger.warning("The newest ingestion job was stopped before it finished", extra=fields)
    if report.failure_reasons:
        log = logger.error if report.status == "FAILED" else logger.warning
        log(
            "Ingestion job failure reasons",
            extra={
                "job_id": report.job_id,
                "status": report.status,
                "failure_reasons": report.failure_reasons[: ingestion.MAX_LOGGED_REASONS],
                "failure_reason_count": len(report.failure_reasons),
            },
        )
    elif report.status == "FAILED":
        logger.error("Ingestion job failed without failure reasons", extra=fields)
