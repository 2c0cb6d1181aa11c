"""Level 2, RAG: ``kit l2 …`` uploads documents to the knowledge base's bucket, shows and follows the ingestion
pipeline, and asks the GenAiKit-2-Rag API (SigV4-signed). Its ``kit doctor`` checks: access to the embedding
model, and the Bedrock quotas the query API meets at api_throttle_rate (knowledge-base calls, ApplyGuardrail)."""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kit import aws
from kit.aws import KitError, KitUsageError, Target
from kit.doctor import LEVELS, WARN, Check, Needs, QuotaBook, check_model_access, increase, quota_rows
from kit.operator import (
    call_api,
    cell,
    check_object_keys,
    compact,
    console,
    current_target,
    echo_json,
    finish,
    int_range,
    json_object,
    json_option,
    kv_table,
    remember_target,
    target_options,
    upload_file,
    wait_options,
    when,
)
from rag_ingest.names import COMPLETE, INGESTION_RUNNING
from stacks.level2_rag.names import DOCUMENTS_PREFIX_OUTPUT, WHOLE_BUCKET

KB_MAX_FILE_BYTES = 50 * 1024 * 1024  # Bedrock Knowledge Bases ingest files up to 50 MB
# The formats of "Supported document formats and limits" (.html only; "Plain text (ASCII only)" for .txt),
# https://docs.aws.amazon.com/bedrock/latest/userguide/knowledge-base-ds.html
KB_FILE_TYPES = frozenset({".txt", ".md", ".html", ".doc", ".docx", ".csv", ".xls", ".xlsx", ".pdf"})
KB_FILE_TYPES_HINT = ".txt (ASCII only) .md .html .doc(x) .csv .xls(x) .pdf"
# A document's metadata sidecar is "<document file name>.metadata.json" beside it, and "must not exceed the limit
# of 10 KB" (https://docs.aws.amazon.com/bedrock/latest/userguide/s3-data-source-connector.html). KB read as KiB.
SIDECAR_SUFFIX = ".metadata.json"
SIDECAR_MAX_BYTES = 10 * 1024
# On S3 Vectors "you can attach up to 1 KB of custom metadata (including both filterable and non-filterable
# metadata) and 35 metadata keys per vector ... If the metadata exceeds these limits, the ingestion job will throw
# an exception" (https://docs.aws.amazon.com/bedrock/latest/userguide/knowledge-base-setup.html#metadata-support).
S3VECTORS_METADATA_MAX_BYTES = 1024
S3VECTORS_METADATA_MAX_KEYS = 35
# What `sync --wait` counts as pending. A change the ingest function re-queued with a delay is counted as delayed
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-resources-required-process-messages.html).
QUEUE_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
# How long `sync --wait` watches an idle pipeline before it says "done" when no job started during the wait: S3
# event notifications "can sometimes take a minute or longer"
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/EventNotifications.html), and the queue's approximate
# counts "may not achieve consistency until at least 1 minute after the producers stop sending messages"
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_GetQueueAttributes.html).
SETTLE_S = 60
# A job can end COMPLETE with failed documents (numberOfDocumentsFailed,
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html); failureReasons
# holds up to 2,048 entries of up to 2,048 characters each (botocore's bedrock-agent model): the first few are shown.
SHOWN_REASONS = 5
REASON_CHARS = 400


# The IAM actions the `kit l2` commands call with the operator's credentials (the README's "Operator
# permissions"); tests/kit/test_operator_permissions.py derives them from the code and compares.
OPERATOR_ACTIONS: dict[str, tuple[str, ...]] = {
    "l2": (
        "bedrock:GetIngestionJob",
        "bedrock:ListIngestionJobs",
        "cloudformation:DescribeStacks",
        "cloudformation:ListStackResources",
        "execute-api:Invoke",
        "s3:PutObject",
        "sqs:GetQueueAttributes",
    ),
}


@click.group()
@target_options
@click.pass_context
def l2(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 2, RAG: upload documents, watch the sync, ask the GenAiKit-2-Rag API."""
    remember_target(ctx, stage, region, profile, context_pairs)


def _documents_prefix(outputs: Mapping[str, str], stack_name: str) -> str:
    """The prefix the data source reads ("" for the whole bucket). Required: without it an upload would land
    outside what the knowledge base ingests."""
    prefix = aws.require_output(outputs, DOCUMENTS_PREFIX_OUTPUT, stack_name)
    return "" if prefix == WHOLE_BUCKET else prefix


def _files(paths: Sequence[str]) -> Iterator[tuple[Path, str]]:
    """(file, key suffix) for each file given, and for every visible file under each folder given."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(path)
                if found.is_file() and not any(part.startswith(".") for part in relative.parts):
                    yield found, relative.as_posix()
        else:
            yield path, path.name


@functools.cache
def _attribute_value_fields() -> tuple[str, ...]:
    """The value members of a typed metadata attribute (stringValue, numberValue, ...), from botocore's
    bedrock-agent model: the sidecar's typed form is a MetadataAttributeValue."""
    shape = aws.service_model("bedrock-agent").shape_for("MetadataAttributeValue")
    return tuple(name for name in shape.members if name != "type")


def _stored_value(attribute: Any) -> Any:
    """What the vector stores for one attribute: the typed form's value, or the simplified form's value itself."""
    if isinstance(attribute, dict) and isinstance(attribute.get("value"), dict):
        typed = attribute["value"]
        found = [typed[name] for name in _attribute_value_fields() if name in typed]
        if len(found) == 1:
            return found[0]
    return attribute


def _metadata_bytes(attributes: Mapping[str, Any]) -> int:
    """The custom metadata a vector carries for these attributes: keys and values as compact UTF-8 JSON."""
    stored = {key: _stored_value(value) for key, value in attributes.items()}
    return len(json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode())


def _read_sidecar(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(metadataAttributes, None) for a sidecar Bedrock can read, or (None, why not)."""
    try:
        size = path.stat().st_size
        if size > SIDECAR_MAX_BYTES:
            return None, f"{path}: {size:,} bytes; a metadata file must not exceed 10 KB ({SIDECAR_MAX_BYTES:,} bytes)"
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror})"
    except (UnicodeError, ValueError) as exc:
        return None, f"{path}: not UTF-8 JSON ({exc})"
    attributes = document.get("metadataAttributes") if isinstance(document, dict) else None
    if not isinstance(attributes, dict):
        return None, f'{path}: not a JSON object with a "metadataAttributes" object'
    return attributes, None


def _s3_vectors_problem(path: Path, attributes: Mapping[str, Any]) -> str | None:
    keys, size = len(attributes), _metadata_bytes(attributes)
    if keys > S3VECTORS_METADATA_MAX_KEYS:
        return f"{path}: {keys} metadata keys; S3 Vectors takes at most {S3VECTORS_METADATA_MAX_KEYS} per vector"
    if size > S3VECTORS_METADATA_MAX_BYTES:
        return (
            f"{path}: {size:,} bytes of metadata (keys and values as compact JSON); S3 Vectors takes at most "
            f"1 KB ({S3VECTORS_METADATA_MAX_BYTES:,} bytes) of custom metadata per vector"
        )
    return None


def _check_sidecars(files: Sequence[tuple[Path, str]]) -> dict[Path, dict[str, Any]]:
    """Every metadata sidecar among the files, read; KitUsageError listing every one Bedrock would refuse."""
    sidecars: dict[Path, dict[str, Any]] = {}
    problems: list[str] = []
    for path, _ in files:
        if path.name.endswith(SIDECAR_SUFFIX):
            attributes, problem = _read_sidecar(path)
            if problem:
                problems.append(problem)
            elif attributes is not None:
                sidecars[path] = attributes
    if problems:
        raise KitUsageError("metadata files the knowledge base cannot ingest:\n  " + "\n  ".join(problems))
    return sidecars


@l2.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True), metavar="FILES...")
@click.option("--prefix", default="", help="A folder under the documents prefix, e.g. team-a/.")
def upload(paths: tuple[str, ...], prefix: str) -> None:
    """Upload files (or folders) to the knowledge base's documents bucket and prefix.

    A document's metadata goes in ``<document file name>.metadata.json`` beside it: the upload refuses one over
    10 KB, one that is not a JSON object with ``metadataAttributes``, and, on S3 Vectors, one over 1 KB of
    metadata or 35 keys (docs/level-2-rag.md). It refuses, before the first upload, a file whose key S3 cannot
    store (a name that is not UTF-8, a key over 1,024 bytes).
    """
    files = list(_files(paths))
    if not files:
        raise KitUsageError("nothing to upload: the folders given hold no files")
    too_big = [
        f"{path} ({path.stat().st_size / 1e6:.1f} MB)" for path, _ in files if path.stat().st_size > KB_MAX_FILE_BYTES
    ]
    if too_big:
        raise KitUsageError("a knowledge base ingests files up to 50 MB; too large: " + ", ".join(too_big))
    sidecars = _check_sidecars(files)
    sub = prefix.strip("/")
    target = current_target()
    outputs = target.outputs("2")
    bucket = aws.require_output(outputs, "DocumentsBucketName", target.stack_name("2"))
    # The deployed stack's store (its VectorStore output); the configuration's for a stack deployed without it.
    if (outputs.get("VectorStore") or target.config.rag.vector_store) == "s3vectors":
        over = [problem for path, attrs in sidecars.items() if (problem := _s3_vectors_problem(path, attrs))]
        if over:
            raise KitUsageError("metadata files the knowledge base cannot ingest:\n  " + "\n  ".join(over))
    base = _documents_prefix(outputs, target.stack_name("2")) + (f"{sub}/" if sub else "")
    check_object_keys([(path, base + suffix) for path, suffix in files])
    out = console()
    suffixes = {suffix for _, suffix in files}
    for path, suffix in files:
        document = suffix.removesuffix(SIDECAR_SUFFIX)
        if path in sidecars and document not in suffixes:
            out.print(
                Text(
                    f"warning: {path} has no document {Path(document).name} in this upload: Bedrock applies it only "
                    f"to s3://{bucket}/{base}{document}",
                    "yellow",
                )
            )
    for path, suffix in files:
        uri = upload_file(target, path, bucket, base + suffix)
        note = ""
        if path.suffix.lower() not in KB_FILE_TYPES and path not in sidecars:
            note = f" (not a type Bedrock parses by default: {KB_FILE_TYPES_HINT})"
        out.print(Text(f"uploaded {uri}{note}"))
    minutes = target.config.rag.sync_interval_minutes
    out.print(
        Text(
            f"The pipeline starts an ingestion job within {minutes} min; follow it with: "
            f"{target.kit_command('l2', 'sync --wait')}",
            "dim",
        )
    )


class PendingUnknown(NamedTuple):
    """The ingestion queues could not be read: why, and whether asking again can help (a denied call or a stack
    without the queue answers the same every time; a throttled or unreachable one may not)."""

    reason: str
    lasting: bool


def _pending_changes(target: Target) -> tuple[int, int, int] | PendingUnknown:
    """(waiting, in flight, dead letters) in the ingestion queues, or why they could not be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = target.stack_name("2")
    try:
        queues: dict[str, str] = {}
        paginator = target.client("cloudformation").get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=name):
            for resource in page["StackResourceSummaries"]:
                if resource["ResourceType"] == "AWS::SQS::Queue":
                    queues[str(resource["LogicalResourceId"])] = str(resource.get("PhysicalResourceId", ""))
        changes = next((url for logical, url in queues.items() if logical.startswith("IngestionChanges")), None)
        dead = next((url for logical, url in queues.items() if logical.startswith("IngestionDeadLetters")), None)
        if changes is None:
            return PendingUnknown(f"the ingestion queue is not in {name}: redeploy it", lasting=True)
        sqs = target.client("sqs")
        attributes = sqs.get_queue_attributes(QueueUrl=changes, AttributeNames=QUEUE_COUNTS)["Attributes"]
        visible, in_flight, delayed = (int(attributes.get(name, 0)) for name in QUEUE_COUNTS)
        dead_count = 0
        if dead:
            dead_attrs = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=QUEUE_COUNTS[:1])["Attributes"]
            dead_count = int(dead_attrs.get(QUEUE_COUNTS[0], 0))
        return visible + delayed, in_flight, dead_count
    except (BotoCoreError, ClientError) as exc:
        reason = aws.explain(exc, "reading the ingestion queue", target.region, target.profile) or str(exc)
        return PendingUnknown(reason, lasting=aws.is_access_denied(exc))
    except KitError as exc:  # the session itself (a missing profile)
        return PendingUnknown(exc.message, lasting=True)


def _newest_job(agent: Any, kb: str, ds: str) -> dict[str, Any] | None:
    summaries = agent.list_ingestion_jobs(
        knowledgeBaseId=kb,
        dataSourceId=ds,
        sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"},
        maxResults=1,
    )["ingestionJobSummaries"]
    if not summaries:
        return None
    job_id = summaries[0]["ingestionJobId"]
    return dict(agent.get_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds, ingestionJobId=job_id)["ingestionJob"])


def _job_line(job: Mapping[str, Any] | None) -> str:
    if job is None:
        return "no ingestion job has run yet"
    stats = job.get("statistics") or {}
    counts = (
        f"scanned {stats.get('numberOfDocumentsScanned', 0)} · "
        f"new {stats.get('numberOfNewDocumentsIndexed', 0)} · "
        f"modified {stats.get('numberOfModifiedDocumentsIndexed', 0)} · "
        f"deleted {stats.get('numberOfDocumentsDeleted', 0)} · "
        f"failed {stats.get('numberOfDocumentsFailed', 0)} · "
        f"skipped {stats.get('numberOfDocumentsSkipped', 0)}"
    )
    return f"{job['ingestionJobId']} {job['status']} · {counts}"


def _pending_line(pending: tuple[int, int, int] | PendingUnknown, minutes: int) -> str:
    if isinstance(pending, PendingUnknown):
        return f"unknown ({pending.reason})"
    waiting, in_flight, _ = pending
    if not waiting + in_flight:
        return "none"
    flight = f" (+{in_flight} being handled)" if in_flight else ""
    return f"{waiting} change(s) waiting{flight}: the pipeline starts a job every {minutes} min"


SYNC_WAIT_S = 1800  # the default --timeout of sync --wait


def sync_wait_timeout(timeout: int, given: bool, interval_minutes: int) -> int:
    """--timeout, or by default long enough for one sync interval and a job after it: a change may wait a whole
    rag_sync_interval_minutes (up to 60) before the job that indexes it starts."""
    return timeout if given else max(timeout, interval_minutes * 60 + SYNC_WAIT_S)


@l2.command()
@click.option("--wait", is_flag=True, help="Follow the newest ingestion job until it and the pending changes are done.")
@wait_options(timeout_s=SYNC_WAIT_S, poll_s=10, timeout_default="the sync interval + 1800")
def sync(wait: bool, timeout: int, poll_seconds: float) -> None:
    """Show the pending document changes and the newest ingestion job.

    The command never starts a job itself (--wait waits by default one sync interval and 30 minutes more): the
    pipeline coalesces every pending change into one job every rag_sync_interval_minutes, or starts a full sync
    while the data source is not in sync under its current configuration (a new stack, or a changed
    rag_documents_prefix), and retries hourly a job that ended FAILED or STOPPED (or, once, COMPLETE with failed
    documents). With --wait this follows it (waiting for the first job when there is none yet) until no change is
    pending and either a job that started after the wait began has ended or the pipeline stayed idle for a minute
    (an upload's S3 event can take that long to be queued; right after a configuration change it may still end on
    the old configuration's last job); exit 1 if the job failed, any of its documents failed, the pending changes
    cannot be read (at once when the call is denied), or the wait timed out.
    """
    target = current_target()
    outputs = target.outputs("2")
    name = target.stack_name("2")
    kb = aws.require_output(outputs, "KnowledgeBaseId", name)
    ds = aws.require_output(outputs, "DataSourceId", name)
    agent = target.client("bedrock-agent")
    minutes = target.config.rag.sync_interval_minutes
    out = console()
    with aws.aws_errors("reading the ingestion jobs", target.region, target.profile):
        job = _newest_job(agent, kb, ds)
    pending = _pending_changes(target)
    rows: list[tuple[str, Any]] = [
        ("Knowledge base", f"{kb} (data source {ds})"),
        (
            "Documents",
            f"s3://{aws.require_output(outputs, 'DocumentsBucketName', name)}/{_documents_prefix(outputs, name)}",
        ),
        ("Pending changes", _pending_line(pending, minutes)),
        ("Newest job", _job_line(job)),
    ]
    if job is not None:
        rows.append(("Started", f"{when(job.get('startedAt'))} (updated {when(job.get('updatedAt'))})"))
    if not isinstance(pending, PendingUnknown) and pending[2]:
        dead = f"{pending[2]} message(s) in the dead-letter queue (unreadable changes, or events not delivered)"
        # The alarm notifies on its change of state only: while the queue holds any message, a new one raises nothing.
        handled = "delete each once handled, or the DLQ alarm raises nothing for the next"
        rows.append(("Dead letters", Text(f"{dead}: {handled}", "yellow")))
    out.print(kv_table(rows))
    if wait:
        given = click.get_current_context().get_parameter_source("timeout") != click.core.ParameterSource.DEFAULT
        timeout = sync_wait_timeout(timeout, given, minutes)
        job = _follow_ingestion(out, target, agent, kb, ds, job, timeout=timeout, poll_seconds=poll_seconds)
    failed = _show_failures(out, job, target, kb, ds) + _show_untaken(out, agent, job, target, kb, ds)
    if wait:
        finish(COMPLETE if job is None else str(job["status"]))
        if failed:
            click.get_current_context().exit(1)


def _documents_failed(job: Mapping[str, Any] | None) -> int:
    return int(((job or {}).get("statistics") or {}).get("numberOfDocumentsFailed") or 0)


def _show_failures(out: Console, job: Mapping[str, Any] | None, target: Target, kb: str, ds: str) -> int:
    """Print the job's failed-document count and its first failure reasons; returns the count."""
    if job is None:
        return 0
    failed = _documents_failed(job)
    reasons = [str(reason) for reason in job.get("failureReasons") or []]
    for reason in reasons[:SHOWN_REASONS]:
        out.print(Text(f"failure: {compact(reason, REASON_CHARS)}", style="red"))
    more = len(reasons) - SHOWN_REASONS
    if failed or more > 0:
        read = (
            f"aws bedrock-agent get-ingestion-job {target.cli_options()} --knowledge-base-id {kb} "
            f"--data-source-id {ds} --ingestion-job-id {job['ingestionJobId']}"
        )
        shown = f"{more} more reason(s); " if more > 0 else ""
        head = f"{failed} document(s) failed to be ingested in job {job['ingestionJobId']}. " if failed else ""
        fix = "Fix or remove each one in the bucket; its change starts a new job. " if failed else ""
        out.print(Text(f"{head}{fix}{shown}all the reasons: {read}", style="red" if failed else "yellow"))
    return failed


def _show_untaken(out: Console, agent: Any, job: Mapping[str, Any] | None, target: Target, kb: str, ds: str) -> int:
    """For a newest job that is the pipeline's retry of another job's failed documents and took fewer of them again
    than failed (the reconcile's DocumentsFailed keeps them: rag_ingest.ingestion.RETRY_TAG), say so with that
    job's failures; returns how many it did not take again."""
    if job is None or job.get("status") != COMPLETE:
        return 0
    aws.checkout()  # the pipeline's own reading of a job, from this checkout
    from rag_ingest.ingestion import read_job, untaken

    retry = read_job(dict(job))
    if retry.retry_of is None:
        return 0
    with aws.aws_errors("reading the job the newest one retried", target.region, target.profile):
        try:
            answer = agent.get_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds, ingestionJobId=retry.retry_of)
        except Exception as exc:
            if aws.error_code(exc) == "ResourceNotFoundException":
                return 0
            raise
    original = answer["ingestionJob"]
    count = untaken(retry, read_job(original))
    if count:
        out.print(
            Text(
                f"Job {retry.job_id} retried the failed documents of job {retry.retry_of} and did not take "
                f"{count} of them again (Bedrock syncs incrementally: an unchanged document may not be taken "
                "again), so the DocumentsFailed alarm keeps them.",
                style="red",
            )
        )
        _show_failures(out, original, target, kb, ds)
    return count


def _follow_ingestion(
    out: Console,
    target: Target,
    agent: Any,
    kb: str,
    ds: str,
    job: dict[str, Any] | None,
    *,
    timeout: int,
    poll_seconds: float,
) -> dict[str, Any] | None:
    """Poll until no job runs and no change is pending (the pipeline has caught up), or the timeout.

    Caught up means idle and either the newest job is one that started after the wait began (another id than the
    newest job then: it covers every document in the bucket), or the pipeline stayed idle for SETTLE_S: a change
    uploaded just before may not be queued yet.
    """
    deadline = time.monotonic() + timeout
    # A job the pipeline starts from now on has another id than the newest one now: told apart by id, not by
    # comparing this machine's clock with Bedrock's startedAt (a slow laptop clock took an older job for a new one).
    first_id = job.get("ingestionJobId") if job is not None else None
    resume = target.kit_command("l2", "sync --wait")
    try:
        idle_since: float | None = None
        minutes = target.config.rag.sync_interval_minutes
        shown: str | None = None
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=out, transient=True) as progress:
            task = progress.add_task("checking", total=None)
            first = True
            while True:
                if not first:
                    try:
                        with aws.aws_errors("reading the ingestion jobs", target.region, target.profile):
                            job = _newest_job(agent, kb, ds)
                    except KitError as exc:
                        raise KitError(
                            f"{exc.message}; the pipeline keeps running: follow it again with {resume}"
                        ) from None
                pending = _pending_changes(target)
                first = False
                running = job is not None and job["status"] in INGESTION_RUNNING
                # Unknown is never idle: a wait that cannot see the queue must not settle on the previous job.
                unknown: str | None = None
                if isinstance(pending, PendingUnknown):
                    if pending.lasting:
                        raise KitError(f"cannot tell whether document changes are pending: {pending.reason}")
                    unknown, waiting = pending.reason, 0
                else:
                    waiting = pending[0] + pending[1]
                if running:
                    line = _job_line(job)
                elif unknown:
                    line = f"pending changes unknown ({unknown}); reading the queue again"
                elif waiting:
                    line = f"waiting for the pipeline to start a job for {waiting} pending change(s)"
                elif job is None:  # a new data source: the pipeline starts its first, full sync on schedule
                    waiting = 1
                    line = "waiting for the pipeline to start the first (full) sync of this data source"
                else:
                    line = _job_line(job)
                idle = not running and not waiting and unknown is None
                if not idle:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                newer = job is not None and job.get("ingestionJobId") != first_id
                settled = idle_since is not None and (newer or time.monotonic() - idle_since >= SETTLE_S)
                if idle and not settled:
                    line = f"{line}; no change pending: watching {SETTLE_S} s for one S3 may still deliver"
                shown = _shown(progress, line, shown)
                progress.update(task, description=line)
                if settled:
                    return job
                if time.monotonic() >= deadline:
                    if unknown:
                        raise KitError(f"cannot tell whether document changes are pending after {timeout} s: {unknown}")
                    hint = f"the pipeline runs every {minutes} min; run {resume} again"
                    raise KitError(f"still {line} after {timeout} s: {hint}")
                time.sleep(poll_seconds)
    except KeyboardInterrupt:
        # As every --wait: the pipeline runs on, and the command says how to follow it again (exit 130).
        click.echo(f"Stopped following; the pipeline keeps running: follow it again with {resume}", err=True)
        click.get_current_context().exit(130)
        raise  # not reached: exit raises


def _shown(progress: Progress, line: str, shown: str | None) -> str:
    """Print ``line`` with the time once, when it differs from the last line shown; returns it."""
    if line != shown:
        progress.console.print(Text(f"{datetime.now(UTC):%H:%M:%S} {line}"))
    return line


def _filter(raw: str | None) -> dict[str, Any] | None:
    return json_object(raw, "--filter", '{"equals": {"key": "team", "value": "docs"}}')


@l2.command()
@click.argument("question")
@click.option("--session-id", help="Continue the conversation of an earlier answer.")
@click.option(
    "--results",
    type=int_range("rag_api", "AskRequest", "numberOfResults"),
    help="How many chunks to retrieve (default: the stack's).",
)
@click.option("--filter", "filter_json", metavar="JSON", help="A Bedrock RetrievalFilter on document metadata.")
@json_option
def ask(question: str, session_id: str | None, results: int | None, filter_json: str | None, as_json: bool) -> None:
    """Ask QUESTION: an answer from your documents, with citations (POST /ask)."""
    body: dict[str, Any] = {"question": question}
    optional = {"sessionId": session_id, "numberOfResults": results, "filter": _filter(filter_json)}
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = call_api("2", "POST", "ask", body)
    if as_json:
        echo_json(answer)
        return
    click.echo(answer.get("answer", ""))
    out = console()
    sources: dict[str, str] = {}
    for citation in answer.get("citations") or []:
        for source in citation.get("sources") or []:
            sources.setdefault(str(source.get("uri") or "?"), str(source.get("snippet") or ""))
    if sources:
        out.print(Text("\nSources:", style="bold"))
        for number, (uri, snippet) in enumerate(sources.items(), start=1):
            out.print(Text(f" [{number}] {uri}: {compact(snippet, 160)}"))
    else:
        out.print(Text("\nNo citations: the answer is not grounded in your documents.", style="yellow"))
    if (answer.get("guardrail") or {}).get("intervened"):
        out.print(Text("The guardrail intervened.", style="yellow"))
    if answer.get("sessionId"):
        out.print(
            Text(f"Follow up with: --session-id {answer['sessionId']} (while Bedrock keeps the session)", style="dim")
        )


@l2.command()
@click.argument("query")
@click.option("--results", type=int_range("rag_api", "RetrieveRequest", "numberOfResults"), help="How many chunks.")
@click.option("--filter", "filter_json", metavar="JSON", help="A Bedrock RetrievalFilter on document metadata.")
@json_option
def retrieve(query: str, results: int | None, filter_json: str | None, as_json: bool) -> None:
    """Retrieve the chunks that match QUERY, with scores and sources (POST /retrieve)."""
    body: dict[str, Any] = {"query": query}
    optional = {"numberOfResults": results, "filter": _filter(filter_json)}
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = call_api("2", "POST", "retrieve", body)
    if as_json:
        echo_json(answer)
        return
    items = answer.get("results") or []
    if not items:
        click.echo("No matching chunks: are the documents ingested? (kit l2 sync)")
        return
    table = Table("#", "Score", "Source", "Text")
    for number, item in enumerate(items, start=1):
        score = item.get("score")
        table.add_row(
            str(number),
            f"{score:.3f}" if isinstance(score, (int, float)) else "-",
            cell(item.get("uri")),
            cell(compact(item.get("text") or "", 200)),
        )
    console().print(table)


# --- kit doctor ---------------------------------------------------------------------------------------------

# The Bedrock quotas the query API meets at the stage's api_throttle_rate, as Service Quotas names them
# (https://docs.aws.amazon.com/general/latest/gr/bedrock.html). Each /ask or /retrieve makes one knowledge-base
# call; AWS does not raise these two (Adjustable: No), so only a lower rate helps.
KB_RATE_QUOTAS = (
    "(Knowledge Bases) Retrieve requests per second",  # L-F0D0E0B9
    "(Knowledge Bases) RetrieveAndGenerate requests per second",  # L-AFA1CDAB
)
# ApplyGuardrail on the returned chunks or snippets: calls, and text units of each policy the guardrail enables.
GUARDRAIL_CALLS_QUOTA = "(Guardrails) On-demand ApplyGuardrail requests per second"  # L-9072D6F0
GUARDRAIL_UNITS = "(Guardrails) On-demand ApplyGuardrail {} policy text units per second"
CONTENT_UNITS_QUOTA = GUARDRAIL_UNITS.format("Content filter")  # L-01F3CD81
TOPIC_UNITS_QUOTA = GUARDRAIL_UNITS.format("Denied topic")  # L-124DCF3D
PII_UNITS_QUOTA = GUARDRAIL_UNITS.format("Sensitive information filter")  # L-CFCAAB0E
# On the Standard tier (guardrail_tier=standard) the content filters and the denied topic, the policies that have
# tiers (https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-tiers.html), count against quotas of
# their own, which Service Quotas names with " (standard)" (L-6B3D3DE4 and L-5755FAB6; AWS's quota page lists the
# Classic ones only, so a Region without them shows a WARN row naming the quota it looked for).
STANDARD_TIER_QUOTAS = {
    CONTENT_UNITS_QUOTA: f"{CONTENT_UNITS_QUOTA} (standard)",
    TOPIC_UNITS_QUOTA: f"{TOPIC_UNITS_QUOTA} (standard)",
}
# The query API's methods that call ApplyGuardrail. API Gateway applies the stage's throttle to each method ("Per-API,
# per-stage throttling limits are applied at the API method level for a stage",
# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-request-throttling.html), so each admits
# api_throttle_rate requests per second of its own, and the guardrail quotas meet their sum.
GUARDED_ROUTES = ("POST /ask", "POST /retrieve")
TEXT_UNIT_CHARS = 1000  # a text unit holds up to 1,000 characters (https://aws.amazon.com/bedrock/pricing/)
CHARS_PER_TOKEN = 4  # "1 token is about 4 characters": an estimate of a chunk's size


def guardrail_load(target: Target) -> tuple[int, int]:
    """(ApplyGuardrail calls, text units per enabled policy) of one request with the default number of results.

    An estimate from the config: rag_max_results chunks of the largest size the chunking makes (tokens x
    CHARS_PER_TOKEN; a hierarchical search returns the parent chunks), packed as the function packs them, each
    call's characters counted in text units of 1,000 (rounded up). A blocked batch is re-checked in halves (more
    calls) and repeated texts are sent once (fewer): neither is counted.
    """
    # How the query function packs texts into ApplyGuardrail calls, read from the function's own module.
    from rag_api.guardrail import MAX_CALLS, MAX_CHARS_PER_CALL

    rag = target.config.rag
    tokens = rag.hierarchical_parent_tokens if rag.chunking_strategy == "hierarchical" else rag.chunk_max_tokens
    chunk = tokens * CHARS_PER_TOKEN
    per_call = max(1, MAX_CHARS_PER_CALL // chunk)
    full, rest = divmod(rag.max_results, per_call)
    calls = ([per_call * chunk] * full + ([rest * chunk] if rest else []))[:MAX_CALLS]
    return len(calls), sum(math.ceil(chars / TEXT_UNIT_CHARS) for chars in calls)


def _policy_quotas(target: Target) -> list[str]:
    """The text-unit quotas of the policies the guardrail applies to model output (the function's source OUTPUT):
    the prompt-attack filter is off on output (stacks/shared/guardrail.py), the five content filters are unless
    their strength is NONE."""
    guardrail = target.config.guardrail
    enabled = {
        CONTENT_UNITS_QUOTA: guardrail.content_filter_strength != "NONE",
        TOPIC_UNITS_QUOTA: guardrail.deny_investment_advice,
        PII_UNITS_QUOTA: bool(guardrail.pii_anonymize or guardrail.pii_block),
    }
    tiered = STANDARD_TIER_QUOTAS if guardrail.tier == "standard" else {}
    return [tiered.get(quota, quota) for quota, on in enabled.items() if on]


def rate_needs(target: Target) -> tuple[dict[str, int], dict[str, int]]:
    """(the knowledge-base quotas, the guardrail quotas) -> what api_throttle_rate needs of each, per second. Each
    knowledge-base quota meets one method (Retrieve: /retrieve, RetrieveAndGenerate: /ask); the guardrail quotas meet
    both."""
    rate = target.config.api_throttle_rate
    calls, units = guardrail_load(target)
    routes = len(GUARDED_ROUTES)
    knowledge_base = {quota: math.ceil(rate) for quota in KB_RATE_QUOTAS}
    guardrail = {GUARDRAIL_CALLS_QUOTA: math.ceil(rate * routes * calls)}
    guardrail.update({quota: math.ceil(rate * routes * units) for quota in _policy_quotas(target)})
    return knowledge_base, guardrail


def doctor_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    knowledge_base, guardrail = rate_needs(target)
    return [
        f"Model access: {target.config.rag.embedding_model_id}",
        *(f"Quota: {q}" for q in {**knowledge_base, **guardrail}),
    ]


def doctor_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    """The knowledge base embeds with this model: the account must have access to it in the region. The query API
    admits api_throttle_rate requests per second: the knowledge-base and ApplyGuardrail quotas must take them."""
    model_id = target.config.rag.embedding_model_id
    knowledge_base, guardrail = rate_needs(target)
    calls, units = guardrail_load(target)
    per_request = {GUARDRAIL_CALLS_QUOTA: calls, **{quota: units for quota in _policy_quotas(target)}}
    rate = target.config.api_throttle_rate

    def fixed(quota: str, value: float, code: str, needed: int) -> str:
        return (
            f"AWS does not raise this quota ({code}): set api_throttle_rate to {value:g} or less "
            f"(now {rate:g}; a caller beyond it gets 429)"
        )

    def lower_or_raise(quota: str, value: float, code: str, needed: int) -> str:
        request = increase("bedrock", quota, code, needed, target)
        each = per_request[quota]
        routes = len(GUARDED_ROUTES)
        admits = math.floor(value / (each * routes))
        why = f"each request needs about {each}, and {routes} methods each admit api_throttle_rate {rate:g}"
        lower = f"; or set api_throttle_rate to {admits} or less" if admits >= 1 else ""
        return f"{why}; {request}{lower}"

    # A rate quota below the need is WARN, not FIX: the stack deploys and works, and a caller beyond what Bedrock
    # admits gets 429 `throttled` with Retry-After (nothing is lost). The defaults are such a case in most Regions
    # (docs/level-2-rag.md, "Quotas and limits"), which a FIX row would turn into a failed preflight.
    return [
        check_model_access(target, model_id, model_id, key="rag_embedding_model_id"),
        *quota_rows(target, book, "bedrock", knowledge_base, below=fixed, short=WARN),
        *quota_rows(target, book, "bedrock", guardrail, below=lower_or_raise, short=WARN),
    ]
