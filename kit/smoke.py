"""Smoke-test a deployed kit, level by level: ``kit l1 …`` to ``kit l4 …``.

Each group finds its stack the way ``make deploy`` named it (``<stack id>-<stage>`` in the config's region)
and reads everything else from the stack's outputs, so no ARN or URL is ever copied by hand. The options
``--stage``, ``--region``, ``--profile`` and ``-c key=value`` go on the group (``kit l2 --stage prod ask …``);
a parent group that defines options of the same names passes them down.

Exit status: 0 done, 1 an AWS or API error (or a followed job that did not succeed, or a wait that timed
out), 2 a usage or configuration error.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kit import aws, sigv4
from kit.aws import KitError, KitUsageError, StackNotDeployed, Target
from kit.templates import STAGES

TARGET_KEY = "genai_kit.target"
KB_MAX_FILE_BYTES = 50 * 1024 * 1024  # Bedrock Knowledge Bases ingest files up to 50 MB
KB_FILE_TYPES = frozenset({".txt", ".md", ".html", ".htm", ".doc", ".docx", ".csv", ".xls", ".xlsx", ".pdf"})
DATASETS_PREFIX = "datasets/"  # the only prefix the Level 3 customization role may read
CUSTOMIZATION_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")  # stacks/config.py's (a test keeps them equal)
INGESTION_RUNNING = frozenset({"STARTING", "IN_PROGRESS", "STOPPING"})
EXECUTION_RUNNING = "RUNNING"
HISTORY_PAGES = 10  # at most 10,000 events read for a summary
SHOWN_JSON_CHARS = 400
_SAGEMAKER_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


# --- shared plumbing ------------------------------------------------------------------------------------------


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--stage, --region, --profile and -c KEY=VALUE: which deployment a command talks to."""
    options = [
        click.option("--stage", type=click.Choice(STAGES), help="The kit stage (default: cdk.json's)."),
        click.option("--region", help="The AWS region (default: the kit config's, where make deploy put it)."),
        click.option("--profile", help="The AWS profile (default: AWS_PROFILE or the default credential chain)."),
        click.option(
            "-c",
            "--context",
            "context_pairs",
            multiple=True,
            metavar="KEY=VALUE",
            help="A config override, as given to make deploy with CDK_ARGS (repeatable).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def remember_target(
    ctx: click.Context, stage: str | None, region: str | None, profile: str | None, pairs: Sequence[str]
) -> Target:
    """Store the command's Target in ``ctx.meta`` (shared by the whole command chain) and return it.

    Values given here win; then a Target a parent stored; then a parent group's parameters of the same name.
    """
    previous = ctx.meta.get(TARGET_KEY)

    def inherited(name: str) -> Any:
        if isinstance(previous, Target):
            value = {"stage": previous.stage, "region": previous.region_override, "profile": previous.profile}[name]
            if value:
                return value
        parent = ctx.parent
        while parent is not None:
            if parent.params.get(name):
                return parent.params[name]
            parent = parent.parent
        return None

    context = dict(previous.context) if isinstance(previous, Target) else {}
    context.update(aws.parse_context_pairs(pairs))
    target = Target(
        stage=stage or inherited("stage"),
        region_override=region or inherited("region"),
        profile=profile or inherited("profile"),
        context=context,
    )
    ctx.meta[TARGET_KEY] = target
    return target


def current_target() -> Target:
    ctx = click.get_current_context()
    target = ctx.meta.get(TARGET_KEY)
    if not isinstance(target, Target):
        target = remember_target(ctx, None, None, None, ())
    return target


def wait_options(timeout_s: int, poll_s: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--timeout and --poll-seconds for a command that follows something until it finishes."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--poll-seconds",
            type=click.FloatRange(min=0),
            default=poll_s,
            show_default=True,
            help="Seconds between status checks.",
        )(func)
        return click.option(
            "--timeout",
            type=click.IntRange(min=0),
            default=timeout_s,
            show_default=True,
            help="Give up waiting after this many seconds (the job itself keeps running).",
        )(func)

    return decorate


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer as it came.")(func)


def console() -> Console:
    """A console on the current stdout (created per command, so test runners that swap stdout see it)."""
    return Console(highlight=False)


def _text(value: Any) -> Text:
    """A table cell that shows ``value`` literally (no rich markup in AWS or model text)."""
    return Text("" if value is None else str(value))


def _kv_table(rows: Sequence[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else _text(value))
    return table


def _when(moment: Any) -> str:
    if not isinstance(moment, datetime):
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _elapsed(start: Any, stop: Any = None) -> str:
    if not isinstance(start, datetime):
        return "-"
    end = stop if isinstance(stop, datetime) else datetime.now(UTC)
    return _duration((end - start).total_seconds())


def _compact(raw: Any, limit: int = SHOWN_JSON_CHARS) -> str:
    """A JSON document (or any text) on one line, cut to ``limit`` characters."""
    text = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        text = json.dumps(json.loads(text), separators=(",", ":"))
    except (TypeError, ValueError):
        text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_value(raw: str) -> str:
    """A value given as text, or as @path to read it from a file."""
    if raw.startswith("@") and len(raw) > 1:
        try:
            return Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise KitUsageError(f"cannot read {raw[1:]}: {exc.strerror}") from None
    return raw


def _json_object(raw: str | None, option: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(_read_value(raw))
    except ValueError as exc:
        raise KitUsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise KitUsageError(f'{option} must be a JSON object, e.g. \'{{"epochCount": "2"}}\'')
    return value


def _call_api(level: str, method: str, path: str, body: Any | None = None) -> Any:
    """Call a route of the level's API (its ApiUrl output), signed with the caller's credentials."""
    target = current_target()
    base = target.output(level, "ApiUrl")
    credentials = target.credentials()
    try:
        return sigv4.call(method, sigv4.join(base, path), body, credentials)
    except sigv4.ApiError as err:
        raise KitError(f"the API answered {err}") from None
    except sigv4.ApiUnreachable as err:
        raise KitError(str(err)) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _upload(target: Target, path: Path, bucket: str, key: str) -> str:
    """Upload one file; returns its s3:// URI."""
    from boto3.exceptions import S3UploadFailedError

    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    s3 = target.client("s3")
    with aws.aws_errors(f"uploading {path} to s3://{bucket}/{key}", target.region):
        try:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        except S3UploadFailedError as exc:
            raise KitError(f"uploading {path} to s3://{bucket}/{key} failed: {exc}") from None
    return f"s3://{bucket}/{key}"


# --- Step Functions executions (Level 3 and Level 4) ---------------------------------------------------------


def _current_state(sfn: Any, arn: str) -> str | None:
    """The state the execution entered last."""
    events = sfn.get_execution_history(executionArn=arn, reverseOrder=True, maxResults=25)["events"]
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if details:
            return str(details["name"])
    return None


def _history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    paginator = sfn.get_paginator("get_execution_history")
    for number, page in enumerate(paginator.paginate(executionArn=arn, PaginationConfig={"PageSize": 1000})):
        events.extend(page["events"])
        if number + 1 >= HISTORY_PAGES:
            break
    return events


def _states_visited(events: Sequence[Mapping[str, Any]]) -> str:
    """The states in the order first entered, with how often each ran (``PollJob ×12``)."""
    counts: dict[str, int] = {}
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if details:
            counts[str(details["name"])] = counts.get(str(details["name"]), 0) + 1
    return " → ".join(f"{name} ×{n}" if n > 1 else name for name, n in counts.items()) or "-"


def _failure(description: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    if description.get("error") or description.get("cause"):
        return str(description.get("error") or ""), str(description.get("cause") or "")
    for event in reversed(events):
        for key, value in event.items():
            if key.endswith("FailedEventDetails") or key.endswith("AbortedEventDetails"):
                return str(value.get("error") or ""), str(value.get("cause") or "")
    return None


def print_execution(out: Console, sfn: Any, arn: str, description: Mapping[str, Any] | None = None) -> str:
    """A summary of one execution: status, timing, input, states visited, error or output. Returns the status."""
    with aws.aws_errors("reading the execution", sfn.meta.region_name):
        description = description or sfn.describe_execution(executionArn=arn)
        events = _history(sfn, arn)
    status = str(description["status"])
    style = {"SUCCEEDED": "green", EXECUTION_RUNNING: "cyan"}.get(status, "red")
    stop = description.get("stopDate")
    rows: list[tuple[str, Any]] = [
        ("Execution", description.get("name") or arn.rsplit(":", 1)[-1]),
        ("Status", Text(status, style=style)),
        (
            "Started",
            f"{_when(description.get('startDate'))} ({_elapsed(description.get('startDate'), stop)}"
            + (" so far)" if status == EXECUTION_RUNNING else ")"),
        ),
        ("Input", _compact(description.get("input") or "{}")),
        ("States", _states_visited(events)),
    ]
    failure = _failure(description, events) if status != "SUCCEEDED" else None
    if failure:
        rows.append(("Error", failure[0] or "-"))
        rows.append(("Cause", _compact(failure[1]) if failure[1] else "-"))
    if status == "SUCCEEDED" and description.get("output"):
        rows.append(("Output", _compact(description["output"])))
    rows.append(("ARN", arn))
    out.print(_kv_table(rows))
    return status


def follow_execution(
    out: Console,
    sfn: Any,
    arn: str,
    *,
    timeout: int,
    poll_seconds: float,
    resume_hint: str,
    detail: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> dict[str, Any]:
    """Poll an execution until it stops or ``timeout`` passes; prints each change of status or state."""
    deadline = time.monotonic() + timeout
    shown = None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with (
        aws.aws_errors("following the execution", sfn.meta.region_name),
        Progress(*columns, console=out, transient=True) as progress,
    ):
        task = progress.add_task("starting", total=None)
        while True:
            description: dict[str, Any] = sfn.describe_execution(executionArn=arn)
            status = str(description["status"])
            parts = [status]
            if status == EXECUTION_RUNNING:
                state = _current_state(sfn, arn)
                extra = detail(description) if detail else None
                parts += [p for p in (state, extra) if p]
            line = " · ".join(parts)
            progress.update(task, description=line)
            if line != shown:
                progress.console.print(Text(f"{datetime.now(UTC):%H:%M:%S} {line}"))
                shown = line
            if status != EXECUTION_RUNNING:
                return description
            if time.monotonic() >= deadline:
                raise KitError(f"still {line} after {timeout} s (the execution keeps running): {resume_hint}")
            time.sleep(poll_seconds)


def _finish(status: str) -> None:
    """Exit 1 when a followed execution or job did not succeed."""
    if status not in ("SUCCEEDED", "COMPLETE"):
        click.get_current_context().exit(1)


def _execution_name() -> str:
    return f"kit-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


# --- Level 1 --------------------------------------------------------------------------------------------------


@click.group()
@target_options
@click.pass_context
def l1(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 1, prompt engineering: call the GenAiKit-1-Prompt API (SigV4)."""
    remember_target(ctx, stage, region, profile, context_pairs)


@l1.command()
@json_option
def templates(as_json: bool) -> None:
    """List the managed prompt templates and the variables each expects."""
    answer = _call_api("1", "GET", "templates")
    if as_json:
        _echo_json(answer)
        return
    items = answer.get("templates") or []
    if not items:
        click.echo("No templates: add a JSON file to prompts/ and deploy again.")
        return
    table = Table("Template", "Variables", "Description")
    for item in items:
        table.add_row(
            _text(item.get("name")), _text(", ".join(item.get("variables") or [])), _text(item.get("description"))
        )
    console().print(table)


def _print_completion(answer: Mapping[str, Any]) -> None:
    click.echo(answer.get("text", ""))
    usage = answer.get("usage") or {}
    meta = [
        str(answer.get("modelId", "")),
        f"stop: {answer.get('stopReason', '-')}",
        f"{usage.get('inputTokens', '?')} in / {usage.get('outputTokens', '?')} out tokens",
        f"{answer.get('latencyMs', '?')} ms",
    ]
    if answer.get("template"):
        meta.insert(0, f"template {answer['template']}")
    out = console()
    out.print(Text(" · ".join(meta), style="dim"))
    guardrail = answer.get("guardrail") or {}
    if guardrail.get("intervened"):
        out.print(Text(f"The guardrail intervened ({guardrail.get('action') or 'blocked or masked'}).", style="yellow"))


@l1.command()
@click.argument("text")
@click.option("--system", help="A system prompt (or @file).")
@click.option("--temperature", type=float, help="0 to 1 (default: the stack's text_temperature).")
@click.option("--top-p", type=float, help="0 to 1.")
@click.option("--max-tokens", type=int, help="1 to 4096 (default: the stack's text_max_tokens).")
@json_option
def prompt(
    text: str,
    system: str | None,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    as_json: bool,
) -> None:
    """Send a free-form prompt (TEXT, or @file) to POST /prompt."""
    body: dict[str, Any] = {"prompt": _read_value(text)}
    optional = {"system": system and _read_value(system), "temperature": temperature, "topP": top_p}
    optional["maxTokens"] = max_tokens
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = _call_api("1", "POST", "prompt", body)
    if as_json:
        _echo_json(answer)
    else:
        _print_completion(answer)


@l1.command()
@click.argument("name")
@click.argument("variables", nargs=-1, metavar="KEY=VALUE...")
@json_option
def template(name: str, variables: tuple[str, ...], as_json: bool) -> None:
    """Run the managed template NAME with its variables (a value may be @file)."""
    values: dict[str, str] = {}
    for pair in variables:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KitUsageError(f"template variables are KEY=VALUE, got {pair!r}")
        values[key] = _read_value(value)
    answer = _call_api("1", "POST", f"templates/{quote(name, safe='')}", {"variables": values})
    if as_json:
        _echo_json(answer)
    else:
        _print_completion(answer)


# --- Level 2 --------------------------------------------------------------------------------------------------


@click.group()
@target_options
@click.pass_context
def l2(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 2, RAG: upload documents, watch the sync, ask the GenAiKit-2-Rag API."""
    remember_target(ctx, stage, region, profile, context_pairs)


def _documents_prefix(outputs: Mapping[str, str]) -> str:
    prefix = outputs.get("DocumentsPrefix", "")
    return "" if prefix.startswith("(") else prefix  # "(whole bucket)"


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


@l2.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True), metavar="FILES...")
@click.option("--prefix", default="", help="A folder under the documents prefix, e.g. team-a/.")
def upload(paths: tuple[str, ...], prefix: str) -> None:
    """Upload files (or folders) to the knowledge base's documents bucket and prefix."""
    files = list(_files(paths))
    if not files:
        raise KitUsageError("nothing to upload: the folders given hold no files")
    too_big = [
        f"{path} ({path.stat().st_size / 1e6:.1f} MB)" for path, _ in files if path.stat().st_size > KB_MAX_FILE_BYTES
    ]
    if too_big:
        raise KitUsageError("a knowledge base ingests files up to 50 MB; too large: " + ", ".join(too_big))
    sub = prefix.strip("/")
    target = current_target()
    outputs = target.outputs("2")
    bucket = aws.require_output(outputs, "DocumentsBucketName", target.stack_name("2"))
    base = _documents_prefix(outputs) + (f"{sub}/" if sub else "")
    out = console()
    for path, suffix in files:
        uri = _upload(target, path, bucket, base + suffix)
        note = ""
        if path.suffix.lower() not in KB_FILE_TYPES and not path.name.endswith(".metadata.json"):
            note = " (not a type Bedrock parses by default: .txt .md .html .doc(x) .csv .xls(x) .pdf)"
        out.print(Text(f"uploaded {uri}{note}"))
    minutes = target.config.rag.sync_interval_minutes
    out.print(
        Text(f"The pipeline starts an ingestion job within {minutes} min; follow it with: kit l2 sync --wait", "dim")
    )


def _pending_changes(target: Target) -> tuple[int, int, int] | str:
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
            return "the ingestion queue is not in the stack"
        sqs = target.client("sqs")
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = sqs.get_queue_attributes(QueueUrl=changes, AttributeNames=names)["Attributes"]
        dead_count = 0
        if dead:
            dead_attrs = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=names[:1])["Attributes"]
            dead_count = int(dead_attrs.get(names[0], 0))
        return int(attributes.get(names[0], 0)), int(attributes.get(names[1], 0)), dead_count
    except (BotoCoreError, ClientError) as exc:
        return aws.explain(exc, "reading the ingestion queue", target.region) or str(exc)


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
        f"failed {stats.get('numberOfDocumentsFailed', 0)}"
    )
    return f"{job['ingestionJobId']} {job['status']} · {counts}"


def _pending_line(pending: tuple[int, int, int] | str, minutes: int) -> str:
    if isinstance(pending, str):
        return f"unknown ({pending})"
    waiting, in_flight, _ = pending
    if not waiting + in_flight:
        return "none"
    flight = f" (+{in_flight} being handled)" if in_flight else ""
    return f"{waiting} change(s) waiting{flight}: the pipeline starts a job every {minutes} min"


def _pending_total(pending: tuple[int, int, int] | str) -> int:
    return 0 if isinstance(pending, str) else pending[0] + pending[1]


@l2.command()
@click.option("--wait", is_flag=True, help="Follow the newest ingestion job until it and the pending changes are done.")
@wait_options(timeout_s=1800, poll_s=10)
def sync(wait: bool, timeout: int, poll_seconds: float) -> None:
    """Show the pending document changes and the newest ingestion job.

    The command never starts a job itself: the pipeline coalesces every pending change into one job every
    rag_sync_interval_minutes, or starts a full sync while the data source has never completed a job (a new
    stack). With --wait this follows it (waiting for the first job when there is none yet); exit 1 if the
    job failed or the wait timed out.
    """
    target = current_target()
    outputs = target.outputs("2")
    name = target.stack_name("2")
    kb = aws.require_output(outputs, "KnowledgeBaseId", name)
    ds = aws.require_output(outputs, "DataSourceId", name)
    agent = target.client("bedrock-agent")
    minutes = target.config.rag.sync_interval_minutes
    out = console()
    with aws.aws_errors("reading the ingestion jobs", target.region):
        job = _newest_job(agent, kb, ds)
    pending = _pending_changes(target)
    rows: list[tuple[str, Any]] = [
        ("Knowledge base", f"{kb} (data source {ds})"),
        ("Documents", f"s3://{outputs.get('DocumentsBucketName', '?')}/{_documents_prefix(outputs)}"),
        ("Pending changes", _pending_line(pending, minutes)),
        ("Newest job", _job_line(job)),
    ]
    if job is not None:
        rows.append(("Started", f"{_when(job.get('startedAt'))} (updated {_when(job.get('updatedAt'))})"))
    if not isinstance(pending, str) and pending[2]:
        rows.append(("Dead letters", Text(f"{pending[2]} change(s) failed 5 times: see the DLQ alarm", "yellow")))
    out.print(_kv_table(rows))
    if wait:
        job = _follow_ingestion(out, target, agent, kb, ds, job, timeout=timeout, poll_seconds=poll_seconds)
    for reason in (job or {}).get("failureReasons") or []:
        out.print(Text(f"failure: {reason}", style="red"))
    if wait:
        _finish("COMPLETE" if job is None else str(job["status"]))


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
    """Poll until no job runs and no change is pending (the pipeline has caught up), or the timeout."""
    deadline = time.monotonic() + timeout
    minutes = target.config.rag.sync_interval_minutes
    shown = None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task("checking", total=None)
        first = True
        while True:
            if not first:
                with aws.aws_errors("reading the ingestion jobs", target.region):
                    job = _newest_job(agent, kb, ds)
            pending = _pending_changes(target)
            first = False
            running = job is not None and job["status"] in INGESTION_RUNNING
            waiting = _pending_total(pending)
            if running:
                line = _job_line(job)
            elif waiting:
                line = f"waiting for the pipeline to start a job for {waiting} pending change(s)"
            elif job is None:  # a new data source: the pipeline starts its first, full sync on schedule
                waiting = 1
                line = "waiting for the pipeline to start the first (full) sync of this data source"
            else:
                line = _job_line(job)
            progress.update(task, description=line)
            if line != shown:
                progress.console.print(Text(f"{datetime.now(UTC):%H:%M:%S} {line}"))
                shown = line
            if not running and not waiting:
                return job
            if time.monotonic() >= deadline:
                hint = f"the pipeline runs every {minutes} min; run kit l2 sync --wait again"
                raise KitError(f"still {line} after {timeout} s: {hint}")
            time.sleep(poll_seconds)


def _filter(raw: str | None) -> dict[str, Any] | None:
    return _json_object(raw, "--filter")


@l2.command()
@click.argument("question")
@click.option("--session-id", help="Continue the conversation of an earlier answer.")
@click.option("--results", type=int, help="How many chunks to retrieve (1-25; default: the stack's).")
@click.option("--filter", "filter_json", metavar="JSON", help="A Bedrock RetrievalFilter on document metadata.")
@json_option
def ask(question: str, session_id: str | None, results: int | None, filter_json: str | None, as_json: bool) -> None:
    """Ask QUESTION: an answer from your documents, with citations (POST /ask)."""
    body: dict[str, Any] = {"question": question}
    optional = {"sessionId": session_id, "numberOfResults": results, "filter": _filter(filter_json)}
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = _call_api("2", "POST", "ask", body)
    if as_json:
        _echo_json(answer)
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
            out.print(Text(f" [{number}] {uri}: {_compact(snippet, 160)}"))
    else:
        out.print(Text("\nNo citations: the answer is not grounded in your documents.", style="yellow"))
    if (answer.get("guardrail") or {}).get("intervened"):
        out.print(Text("The guardrail intervened.", style="yellow"))
    if answer.get("sessionId"):
        out.print(Text(f"Follow up with: --session-id {answer['sessionId']}", style="dim"))


@l2.command()
@click.argument("query")
@click.option("--results", type=int, help="How many chunks (1-25; default: the stack's).")
@click.option("--filter", "filter_json", metavar="JSON", help="A Bedrock RetrievalFilter on document metadata.")
@json_option
def retrieve(query: str, results: int | None, filter_json: str | None, as_json: bool) -> None:
    """Retrieve the chunks that match QUERY, with scores and sources (POST /retrieve)."""
    body: dict[str, Any] = {"query": query}
    optional = {"numberOfResults": results, "filter": _filter(filter_json)}
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = _call_api("2", "POST", "retrieve", body)
    if as_json:
        _echo_json(answer)
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
            _text(item.get("uri")),
            _text(_compact(item.get("text") or "", 200)),
        )
    console().print(table)


# --- Level 3 --------------------------------------------------------------------------------------------------


@click.group()
@target_options
@click.pass_context
def l3(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 3, fine-tuning: validate data locally, start the pipeline, follow it."""
    remember_target(ctx, stage, region, profile, context_pairs)


def _validator() -> Any:
    """The Level 3 validator package (lambdas/finetune_validate), the same code the pipeline runs."""
    aws.checkout()  # the checkout this command runs in is the one the validator is imported from
    import finetune_validate.__main__ as command

    return command


def _validate_locally(
    training: str,
    validation: str | None,
    base_model: str,
    hyperparameters: Mapping[str, Any],
    customization_type: str = "FINE_TUNING",
) -> tuple[bool, str]:
    """(valid, the validator's human-readable report)."""
    command = _validator()
    from finetune_validate.formats import UnsupportedBaseModel, UnsupportedCustomizationType
    from finetune_validate.validator import validate_files

    try:
        report = validate_files(
            training,
            base_model_id=base_model,
            validation_path=validation,
            hyperparameters=hyperparameters,
            customization_type=customization_type,
        )
    except UnsupportedBaseModel as exc:
        raise KitUsageError(f"--base-model: {exc}") from None
    except UnsupportedCustomizationType as exc:
        raise KitUsageError(f"--customization-type: {exc}") from None
    return bool(report["valid"]), str(command.render(report, training, validation, command.SHOWN_PER_KIND))


@l3.command()
@click.argument("training", type=click.Path(exists=True, dir_okay=False), metavar="FILE")
@click.option("--base-model", metavar="ID", help="The customization base model (default: ft_base_model_id).")
@click.option("--validation", type=click.Path(exists=True, dir_okay=False), metavar="FILE", help="A validation file.")
@click.option("--hyperparameters", metavar="JSON", help="A JSON object of strings (default: ft_hyperparameters).")
@click.option("--customization-type", type=click.Choice(CUSTOMIZATION_TYPES), help="Default: ft_customization_type.")
def validate(
    training: str,
    base_model: str | None,
    validation: str | None,
    hyperparameters: str | None,
    customization_type: str | None,
) -> None:
    """Check a JSON Lines training file offline, with the pipeline's own validator (exit 1 if invalid)."""
    target = current_target()
    model = base_model or target.config.finetune.base_model_id
    params = _json_object(hyperparameters, "--hyperparameters")
    valid, text = _validate_locally(
        training,
        validation,
        model,
        params if params is not None else target.config.finetune.hyperparameters,
        customization_type or target.config.finetune.customization_type,
    )
    click.echo(text)
    if not valid:
        click.get_current_context().exit(1)


def _dataset_key(key: str, option: str) -> str:
    if not key.startswith(DATASETS_PREFIX) or key == DATASETS_PREFIX:
        raise KitUsageError(f"{option} must be a key under {DATASETS_PREFIX} (the only prefix the job may read)")
    return key


@l3.command()
@click.option("--training-key", metavar="KEY", help="The training file's key in the data bucket (datasets/...).")
@click.option("--validation-key", metavar="KEY", help="The validation file's key (datasets/...).")
@click.option(
    "--upload",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Validate and upload FILE to datasets/ first.",
)
@click.option(
    "--upload-validation",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Upload a validation FILE to datasets/ first.",
)
@click.option("--base-model", metavar="ID", help="The base model (default: the stack's ft_base_model_id).")
@click.option("--customization-type", type=click.Choice(CUSTOMIZATION_TYPES), help="Default: ft_customization_type.")
@click.option("--hyperparameters", metavar="JSON", help="A JSON object of strings; replaces the defaults.")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends.")
@wait_options(timeout_s=30 * 3600, poll_s=30)
def start(
    training_key: str | None,
    validation_key: str | None,
    upload: str | None,
    upload_validation: str | None,
    base_model: str | None,
    customization_type: str | None,
    hyperparameters: str | None,
    wait: bool,
    timeout: int,
    poll_seconds: float,
) -> None:
    """Start the fine-tuning pipeline (StartExecution) with a job request.

    With --upload the data is validated locally before it is uploaded; the pipeline validates it again.
    """
    target = current_target()
    training_key = training_key or (f"{DATASETS_PREFIX}{Path(upload).name}" if upload else None)
    if not training_key:
        raise KitUsageError("give --training-key KEY (under datasets/) or --upload FILE")
    _dataset_key(training_key, "--training-key")
    if upload_validation and not validation_key:
        validation_key = f"{DATASETS_PREFIX}{Path(upload_validation).name}"
    if validation_key:
        _dataset_key(validation_key, "--validation-key")
    params = _json_object(hyperparameters, "--hyperparameters")
    if base_model:
        try:
            _validator()
            from finetune_validate.formats import UnsupportedBaseModel, resolve_model

            resolve_model(base_model)
        except UnsupportedBaseModel as exc:
            raise KitUsageError(f"--base-model: {exc}") from None
    outputs = target.outputs("3")
    name = target.stack_name("3")
    machine = aws.require_output(outputs, "StateMachineArn", name)
    out = console()
    if upload or upload_validation:
        bucket = aws.require_output(outputs, "DataBucketName", name)
        model = base_model or target.config.finetune.base_model_id
        hyper = params if params is not None else target.config.finetune.hyperparameters
        if upload:
            valid, text = _validate_locally(upload, upload_validation, model, hyper)
            if not valid:
                click.echo(text)
                raise KitError("the data is invalid: nothing was uploaded or started")
        for path, key in ((upload, training_key), (upload_validation, validation_key)):
            if path and key:
                out.print(Text(f"uploaded {_upload(target, Path(path), bucket, key)}"))
    request: dict[str, Any] = {"trainingKey": training_key}
    optional = {
        "validationKey": validation_key,
        "baseModelId": base_model,
        "customizationType": customization_type,
        "hyperparameters": params,
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    sfn = target.client("stepfunctions")
    with aws.aws_errors("starting the fine-tuning pipeline", target.region):
        arn = str(
            sfn.start_execution(stateMachineArn=machine, name=_execution_name(), input=json.dumps(request))[
                "executionArn"
            ]
        )
    out.print(Text(f"started {arn}"))
    out.print(Text(f"request {json.dumps(request)}", style="dim"))
    if not wait:
        out.print(Text(f"Follow it with: kit l3 status {arn} --wait", style="dim"))
        return
    final = follow_execution(
        out, sfn, arn, timeout=timeout, poll_seconds=poll_seconds, resume_hint=f"kit l3 status {arn} --wait"
    )
    _finish(print_execution(out, sfn, arn, final))


def _execution_arn(sfn: Any, machine: str, given: str | None) -> str | None:
    """The execution given (ARN or name), or the state machine's newest one (None: it has none)."""
    if given:
        if given.startswith("arn:"):
            return given
        return machine.replace(":stateMachine:", ":execution:", 1) + ":" + given
    with aws.aws_errors("listing executions", sfn.meta.region_name):
        executions = sfn.list_executions(stateMachineArn=machine, maxResults=1)["executions"]
    return str(executions[0]["executionArn"]) if executions else None


def show_status(
    level: str,
    execution: str | None,
    *,
    wait: bool,
    timeout: int,
    poll_seconds: float,
    start_hint: str,
    detail: Callable[[str], Callable[[Mapping[str, Any]], str | None]] | None = None,
) -> None:
    """The status command of a level with a state machine: summary, or follow then summary."""
    target = current_target()
    machine = target.output(level, "StateMachineArn")
    sfn = target.client("stepfunctions")
    arn = _execution_arn(sfn, machine, execution)
    if arn is None:
        raise KitError(f"no executions of {machine.rsplit(':', 1)[-1]} yet: start one with {start_hint}")
    out = console()
    description = None
    if wait:
        command = "l3" if level == "3" else "l4"
        description = follow_execution(
            out,
            sfn,
            arn,
            timeout=timeout,
            poll_seconds=poll_seconds,
            resume_hint=f"kit {command} status {arn} --wait",
            detail=detail(arn) if detail else None,
        )
    final = print_execution(out, sfn, arn, description)
    if wait:
        _finish(final)


@l3.command()
@click.argument("execution", required=False, metavar="[EXECUTION_ARN]")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends (exit 1 unless it succeeds).")
@wait_options(timeout_s=30 * 3600, poll_s=30)
def status(execution: str | None, wait: bool, timeout: int, poll_seconds: float) -> None:
    """Summarize a pipeline execution (default: the newest): status, states visited, error or output."""
    show_status(
        "3", execution, wait=wait, timeout=timeout, poll_seconds=poll_seconds, start_hint="kit l3 start --upload FILE"
    )


# --- Level 4 --------------------------------------------------------------------------------------------------


@click.group()
@target_options
@click.pass_context
def l4(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 4, pre-training: run a training job (GenAiKit-4-Pretrain-Jobs), inspect the HyperPod cluster."""
    remember_target(ctx, stage, region, profile, context_pairs)


def _training_job_detail(execution_arn: str) -> Callable[[Mapping[str, Any]], str | None]:
    """The SageMaker training job's own status, shown while the execution runs."""
    target = current_target()
    job_name = f"{target.config.name_prefix}-pretrain-{execution_arn.rsplit(':', 1)[-1]}"

    def detail(_: Mapping[str, Any]) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            job = target.client("sagemaker").describe_training_job(TrainingJobName=job_name)
        except (BotoCoreError, ClientError):
            return None  # not created yet, or not readable: the execution's status still shows
        return f"training job {job_name}: {job.get('TrainingJobStatus')}/{job.get('SecondaryStatus')}"

    return detail


@l4.command()
@click.option("--name", help="The execution name (the training job is <name_prefix>-pretrain-<name>).")
@click.option(
    "--resume-from",
    "resume_from",
    metavar="EXECUTION",
    help="Continue the run of an earlier execution (name or ARN) from its checkpoints instead of starting anew.",
)
@click.option("--wait", is_flag=True, help="Follow the execution until the training job ends.")
@wait_options(timeout_s=6 * 3600, poll_s=30)
def submit(name: str | None, resume_from: str | None, wait: bool, timeout: int, poll_seconds: float) -> None:
    """Start one multi-node training job through the Jobs stack's state machine.

    Each execution checkpoints under its own prefix, checkpoints/<execution>/, so a new run starts at step 0.
    With --resume-from the job starts from the newest checkpoint of that earlier execution's run and keeps
    checkpointing there (the state machine refuses a name with no checkpoints).
    """
    import re

    target = current_target()
    execution = name or _execution_name()
    job_name = f"{target.config.name_prefix}-pretrain-{execution}"
    if not re.match(_SAGEMAKER_NAME, job_name):
        raise KitUsageError(
            f"--name makes the training job name {job_name!r}: SageMaker needs 1-63 letters, digits and '-'"
        )
    earlier = resume_from.rsplit(":", 1)[-1] if resume_from else None
    if earlier is not None and not re.match(_SAGEMAKER_NAME, f"{target.config.name_prefix}-pretrain-{earlier}"):
        raise KitUsageError(f"--resume-from {resume_from!r} is not the name of an execution that ran a training job")
    if earlier == execution:
        raise KitUsageError("--resume-from names this execution itself: give the earlier execution's name")
    outputs = target.outputs("4-jobs")
    machine = aws.require_output(outputs, "StateMachineArn", target.stack_name("4-jobs"))
    sfn = target.client("stepfunctions")
    out = console()
    execution_input = json.dumps({"resumeFrom": earlier} if earlier else {})
    with aws.aws_errors("starting the training-job state machine", target.region):
        arn = str(sfn.start_execution(stateMachineArn=machine, name=execution, input=execution_input)["executionArn"])
    settings = target.config.pretrain
    checkpoints = f"s3://{outputs.get('ArtifactsBucketName', '?')}/checkpoints/{earlier or execution}/"
    out.print(Text(f"started {arn}"))
    out.print(
        Text(
            f"training job {job_name}: {settings.job_instance_count} x {settings.job_instance_type}, "
            + (f"resuming from the checkpoints in {checkpoints}" if earlier else f"checkpoints in {checkpoints}"),
            style="dim",
        )
    )
    if not wait:
        out.print(Text(f"Follow it with: kit l4 status {execution} --wait", style="dim"))
        return
    final = follow_execution(
        out,
        sfn,
        arn,
        timeout=timeout,
        poll_seconds=poll_seconds,
        resume_hint=f"kit l4 status {execution} --wait",
        detail=_training_job_detail(arn),
    )
    _finish(print_execution(out, sfn, arn, final))


@l4.command(name="status")
@click.argument("execution", required=False, metavar="[EXECUTION]")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends (exit 1 unless it succeeds).")
@wait_options(timeout_s=6 * 3600, poll_s=30)
def l4_status(execution: str | None, wait: bool, timeout: int, poll_seconds: float) -> None:
    """Summarize a training-job execution (ARN or name; default: the newest)."""
    show_status(
        "4-jobs",
        execution,
        wait=wait,
        timeout=timeout,
        poll_seconds=poll_seconds,
        start_hint="kit l4 submit",
        detail=_training_job_detail,
    )


# API-driven Slurm: HyperPod puts every node in this partition (the default) besides its group's own one.
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-ref.html#sagemaker-hyperpod-ref-slurm-config
HYPERPOD_UNIVERSAL_PARTITION = "dev"


def _slurm_summary(orchestrator: Mapping[str, Any]) -> str:
    """How HyperPod runs Slurm: configured through the API (with its strategy) or by lifecycle scripts."""
    slurm = orchestrator.get("Slurm")
    if slurm is None:
        return ", ".join(orchestrator) or "Slurm (configured by lifecycle scripts)"
    return f"Slurm, configured through the API ({slurm.get('SlurmConfigStrategy') or 'Managed'} strategy)"


def _group_storage(group: Mapping[str, Any]) -> str:
    mounts = [
        f"FSx {config['FsxLustreConfig'].get('MountPath') or '/fsx'}"
        for config in group.get("InstanceStorageConfigs") or []
        if "FsxLustreConfig" in config
    ]
    return ", ".join(mounts) or "-"


@l4.command()
def cluster() -> None:
    """Show the HyperPod cluster: status, instance groups with their Slurm role and partition, and nodes."""
    target = current_target()
    try:
        outputs = target.outputs("4-cluster")
    except StackNotDeployed as exc:
        note = " (the cluster bills while it exists; the zero-idle path is kit l4 submit)"
        raise StackNotDeployed(exc.message + note) from None
    name = aws.require_output(outputs, "ClusterName", target.stack_name("4-cluster"))
    sagemaker = target.client("sagemaker")
    from botocore.exceptions import ClientError

    with aws.aws_errors(f"reading cluster {name}", target.region):
        try:
            described = sagemaker.describe_cluster(ClusterName=name)
        except ClientError as exc:
            if aws.error_code(exc) in ("ResourceNotFound", "ValidationException"):
                raise KitError(
                    f"cluster {name} is not there although {target.stack_name('4-cluster')} is deployed: "
                    "see the stack's events; make destroy and deploy again"
                ) from None
            raise
        nodes: list[dict[str, Any]] = []
        for page in sagemaker.get_paginator("list_cluster_nodes").paginate(ClusterName=name):
            nodes.extend(page["ClusterNodeSummaries"])
    out = console()
    state = str(described.get("ClusterStatus", "?"))
    rows: list[tuple[str, Any]] = [
        ("Cluster", name),
        ("Status", Text(state, style="green" if state == "InService" else "yellow")),
        ("Created", _when(described.get("CreationTime"))),
        ("Orchestrator", _slurm_summary(described.get("Orchestrator") or {})),
    ]
    if described.get("FailureMessage"):
        rows.append(("Failure", Text(str(described["FailureMessage"]), style="red")))
    out.print(_kv_table(rows))
    groups = Table(
        "Group",
        "Slurm node",
        "Partition",
        "Instance type",
        "Current",
        "Target",
        "Shared storage",
        "Status",
        title="Instance groups",
    )
    partitions: list[str] = []
    for group in described.get("InstanceGroups") or []:
        slurm = group.get("SlurmConfig") or {}
        own = list(slurm.get("PartitionNames") or [])
        partitions += [p for p in own if p not in partitions]
        groups.add_row(
            _text(group.get("InstanceGroupName")),
            _text(slurm.get("NodeType") or "-"),
            _text(", ".join([*own, HYPERPOD_UNIVERSAL_PARTITION]) if own else "-"),
            _text(group.get("InstanceType")),
            _text(group.get("CurrentCount", 0)),
            _text(group.get("TargetCount", 0)),
            _text(_group_storage(group)),
            _text(group.get("Status")),
        )
    out.print(groups)
    if partitions:
        out.print(
            Text(
                f"Slurm partitions: {', '.join(partitions)}, and {HYPERPOD_UNIVERSAL_PARTITION} (the default, every "
                f"node); nodes are named after their group (<group>-1, <group>-2, ...). From the controller or "
                f"login node: sbatch --partition {partitions[0]} workloads/pretrain/slurm/pretrain.sbatch",
                style="dim",
            )
        )
    if not nodes:
        out.print(Text("No nodes yet.", style="yellow"))
        return
    table = Table("Group", "Instance", "Type", "Status", "Launched", "Private DNS", title="Nodes")
    for node in nodes:
        table.add_row(
            _text(node.get("InstanceGroupName")),
            _text(node.get("InstanceId")),
            _text(node.get("InstanceType")),
            _text((node.get("InstanceStatus") or {}).get("Status")),
            _text(_when(node.get("LaunchTime"))),
            _text(node.get("PrivateDnsHostname") or "-"),
        )
    out.print(table)
    controller = target.config.pretrain.controller.name
    first = next((n for n in nodes if n.get("InstanceGroupName") == controller), nodes[0])
    cluster_id = str(described.get("ClusterArn", outputs.get("ClusterArn", ""))).rsplit("/", 1)[-1]
    out.print(
        Text(
            "Connect: aws ssm start-session --target "
            f"sagemaker-cluster:{cluster_id}_{first.get('InstanceGroupName')}-{first.get('InstanceId')}",
            style="dim",
        )
    )
