"""The operator commands' shared parts: which deployment a command talks to, options, output formatting,
signed API calls, uploads, and following a Step Functions execution.

Each level's commands live in their own module (``kit/level1_prompt.py`` … ``kit/level4_pretrain.py``) and
find their stack the way ``make deploy`` named it (``<stack id>-<stage>`` in the config's region); everything
else comes from the stack's outputs, so no ARN or URL is ever copied by hand. The options ``--stage``,
``--region``, ``--profile`` and ``-c key=value`` go on the level's group (``kit l2 --stage prod ask …``);
a parent group that defines options of the same names passes them down.

Exit status: 0 done, 1 an AWS or API error (or a followed job that did not succeed, or a wait that timed
out), 2 a usage or configuration error.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from common.s3 import S3_KEY_MAX_BYTES
from common.training_cleanup import BUSY_TRAINING
from kit import aws, sigv4
from kit.aws import KitError, KitUsageError, Target
from stacks.shared.facts import HISTORY_EVENT_QUOTA, STAGES

TARGET_KEY = "genai_kit.target"
EXECUTION_RUNNING = "RUNNING"
HISTORY_PAGE_EVENTS = 1_000  # GetExecutionHistory maxResults: 1,000 at most (botocore stepfunctions)
HISTORY_PAGES = -(-HISTORY_EVENT_QUOTA // HISTORY_PAGE_EVENTS)  # the whole history a Standard execution can have
# The newest events read for the state entered last: after a Task state is entered, each attempt writes about three
# events (scheduled, started, failed), and the Level 3 job start may make 24 (its quota wait and throttling retries).
CURRENT_STATE_EVENTS = 100
SHOWN_JSON_CHARS = 400


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


def wait_options(
    timeout_s: int | None, poll_s: float, timeout_default: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--timeout and --poll-seconds for a command that follows something until it finishes; ``timeout_default``
    describes a default the command works out itself (shown instead of ``timeout_s``; None: it works it out)."""

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
            show_default=timeout_default or True,
            help="Give up waiting after this many seconds (the job itself keeps running).",
        )(func)

    return decorate


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer as it came.")(func)


def console() -> Console:
    """A console on the current stdout (created per command, so test runners that swap stdout see it)."""
    return Console(highlight=False)


def cell(value: Any) -> Text:
    """A table cell that shows ``value`` literally (no rich markup in AWS or model text)."""
    return Text("" if value is None else str(value))


def kv_table(rows: Sequence[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else cell(value))
    return table


def when(moment: Any) -> str:
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


def compact(raw: Any, limit: int = SHOWN_JSON_CHARS) -> str:
    """A JSON document (or any text) on one line, cut to ``limit`` characters."""
    text = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        text = json.dumps(json.loads(text), separators=(",", ":"))
    except (TypeError, ValueError):
        text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_value(raw: str) -> str:
    """A value given as text, or as @path to read it from a file."""
    if raw.startswith("@") and len(raw) > 1:
        try:
            return Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise KitUsageError(f"cannot read {raw[1:]}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise KitUsageError(f"cannot read {raw[1:]}: not UTF-8 text (byte {exc.start})") from None
    return raw


def json_object(raw: str | None, option: str, example: str) -> dict[str, Any] | None:
    """The option's JSON object (or @file); a usage error naming ``option`` and showing ``example`` otherwise."""
    if raw is None:
        return None
    try:
        value = json.loads(read_value(raw))
    except ValueError as exc:
        raise KitUsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise KitUsageError(f"{option} must be a JSON object, e.g. '{example}'")
    return value


def call_api(level: str, method: str, path: str, body: Any | None = None) -> dict[str, Any]:
    """Call a route of the level's API (its ApiUrl output), signed with the caller's credentials."""
    target = current_target()
    base = target.output(level, "ApiUrl")
    credentials = target.credentials()
    url = sigv4.join(base, path)
    try:
        # Credentials that refresh (SSO, assumed roles) are fetched when the request is signed: their errors are
        # explained as any other AWS error.
        with aws.aws_errors(f"signing the call to {url}", target.region, target.profile):
            answer = sigv4.call(method, url, body, credentials)
    except sigv4.ApiError as err:
        raise KitError(f"the API answered {err}") from None
    except sigv4.ApiUnreachable as err:
        raise KitError(str(err)) from None
    except OSError as err:  # e.g. a connection the server closed mid-answer (urllib does not wrap it)
        raise KitError(f"calling {url} failed: {err!r}") from None
    if not isinstance(answer, dict):  # the kit's APIs answer a JSON object: something in between answered this
        raise KitError(f"{url} answered {json.dumps(answer)[:200]}, not the kit API's JSON object: a proxy in the way?")
    return answer


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def shown_path(path: Path) -> str:
    """A path as text a terminal can print, whatever bytes its name holds (undecodable ones as \\x escapes)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def object_key_problem(path: Path, key: str) -> str | None:
    """Why S3 cannot store ``path`` under ``key``, or None."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{shown_path(path)}: its name is not UTF-8 text, which an S3 key must be (rename the file)"
    if size > S3_KEY_MAX_BYTES:
        return f"{shown_path(path)}: its key is {size:,} bytes of UTF-8; S3 takes at most {S3_KEY_MAX_BYTES:,}"
    return None


def check_object_keys(uploads: Sequence[tuple[Path, str]]) -> None:
    """KitUsageError naming every file S3 cannot store under its key: called before the first upload, so a
    refused name never leaves a folder half uploaded (or a document uploaded without its metadata file)."""
    problems = [problem for path, key in uploads if (problem := object_key_problem(path, key))]
    if problems:
        raise KitUsageError("files S3 cannot store (nothing was uploaded):\n  " + "\n  ".join(problems))


def upload_file(target: Target, path: Path, bucket: str, key: str) -> str:
    """Upload one file; returns its s3:// URI."""
    from boto3.exceptions import S3UploadFailedError

    check_object_keys([(path, key)])
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    s3 = target.client("s3")
    with aws.aws_errors(f"uploading {path} to s3://{bucket}/{key}", target.region, target.profile):
        try:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        except S3UploadFailedError as exc:
            # boto3 wraps the AWS error (ClientError) of the upload in this one (its __context__): explained as
            # every other command explains it (expired credentials, access denied, ...).
            action = f"uploading {path} to s3://{bucket}/{key}"
            cause = exc.__context__
            told = aws.explain(cause, action, target.region, target.profile) if cause is not None else None
            raise KitError(told or f"{action} failed: {exc}") from None
    return f"s3://{bucket}/{key}"


def request_range(package: str, schema: str, field: str) -> tuple[Any, Any]:
    """(minimum, maximum) of ``field`` in request ``schema`` of the function ``package``: the API's own bounds
    (request_schemas.json, which the function validates with), so an option outside them is a usage error (exit 2)
    before any AWS call."""
    import importlib.resources

    schemas = json.loads((importlib.resources.files(package) / "request_schemas.json").read_text())
    spec = schemas[schema]["properties"][field]
    return spec["minimum"], spec["maximum"]


def float_range(package: str, schema: str, field: str) -> click.FloatRange:
    return click.FloatRange(*request_range(package, schema, field))


def int_range(package: str, schema: str, field: str) -> click.IntRange:
    return click.IntRange(*request_range(package, schema, field))


# --- Step Functions executions (the levels that run a state machine) ------------------------------------------


def _current_state(sfn: Any, arn: str) -> str | None:
    """The state the execution entered last."""
    events = sfn.get_execution_history(executionArn=arn, reverseOrder=True, maxResults=CURRENT_STATE_EVENTS)["events"]
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if details:
            return str(details["name"])
    return None


def _history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    paginator = sfn.get_paginator("get_execution_history")
    for number, page in enumerate(
        paginator.paginate(executionArn=arn, PaginationConfig={"PageSize": HISTORY_PAGE_EVENTS})
    ):
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


# The history events that end an execution other than by success, and carry its error and cause
# (https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html).
_ENDING_DETAILS = ("executionFailedEventDetails", "executionTimedOutEventDetails", "executionAbortedEventDetails")


def _failure(
    description: Mapping[str, Any], events: Sequence[Mapping[str, Any]], last: Mapping[str, Any] | None = None
) -> tuple[str, str] | None:
    """Why an execution did not succeed: DescribeExecution's error (given "if the state machine execution
    failed"), else its ending event (``last``, read newest-first: the history read for the states may stop before
    the end), else the newest failure in the history. A timed-out run's reason is its ExecutionTimedOut event,
    not an earlier task error its retries already overcame."""
    if description.get("error") or description.get("cause"):
        return str(description.get("error") or ""), str(description.get("cause") or "")
    for key in _ENDING_DETAILS:
        details = (last or {}).get(key)
        if details is not None:
            return str(details.get("error") or ""), str(details.get("cause") or "")
    for event in reversed(events):
        for key, value in event.items():
            if key.endswith(("FailedEventDetails", "AbortedEventDetails", "TimedOutEventDetails")):
                return str(value.get("error") or ""), str(value.get("cause") or "")
    return None


# DescribeExecution's answers for an execution that is not there: a well-formed ARN no execution has, and a
# malformed one (botocore stepfunctions model: ExecutionDoesNotExist, InvalidArn).
NO_SUCH_EXECUTION = ("ExecutionDoesNotExist", "InvalidArn")


class NoSuchExecution(KitError):
    """The execution named does not exist."""


def describe_existing(sfn: Any, arn: str) -> dict[str, Any]:
    """DescribeExecution of ``arn``; a KitError saying so when there is no such execution (a mistyped name), not
    the AWS error, and not told as a wait that stopped while the execution keeps running."""
    from botocore.exceptions import ClientError

    with aws.aws_errors("reading the execution", sfn.meta.region_name, aws.client_profile(sfn)):
        try:
            found: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        except ClientError as exc:
            if aws.error_code(exc) not in NO_SUCH_EXECUTION:
                raise
            raise NoSuchExecution(
                f"no execution {arn}: check the name or ARN (without one, the status command shows the newest "
                "execution)"
            ) from None
    return found


def print_execution(out: Console, sfn: Any, arn: str, description: Mapping[str, Any] | None = None) -> str:
    """A summary of one execution: status, timing, input, states visited, error or output. Returns the status."""
    description = description or describe_existing(sfn, arn)
    with aws.aws_errors("reading the execution", sfn.meta.region_name, aws.client_profile(sfn)):
        events = _history(sfn, arn)
    status = str(description["status"])
    style = {"SUCCEEDED": "green", EXECUTION_RUNNING: "cyan"}.get(status, "red")
    stop = description.get("stopDate")
    rows: list[tuple[str, Any]] = [
        ("Execution", description.get("name") or arn.rsplit(":", 1)[-1]),
        ("Status", Text(status, style=style)),
        (
            "Started",
            f"{when(description.get('startDate'))} ({_elapsed(description.get('startDate'), stop)}"
            + (" so far)" if status == EXECUTION_RUNNING else ")"),
        ),
        ("Input", compact(description.get("input") or "{}")),
        ("States", _states_visited(events)),
    ]
    failure = None
    if status not in ("SUCCEEDED", EXECUTION_RUNNING):
        with aws.aws_errors("reading the execution", sfn.meta.region_name, aws.client_profile(sfn)):
            last = sfn.get_execution_history(executionArn=arn, reverseOrder=True, maxResults=1)["events"]
        failure = _failure(description, events, last[0] if last else None)
    if failure:
        rows.append(("Error", failure[0] or "-"))
        rows.append(("Cause", compact(failure[1]) if failure[1] else "-"))
    if status == "SUCCEEDED" and description.get("output"):
        rows.append(("Output", compact(description["output"])))
    rows.append(("ARN", arn))
    out.print(kv_table(rows))
    return status


# How long after its state machine's TimeoutSeconds an execution's end is still waited for (its last transitions).
MACHINE_TIMEOUT_MARGIN_S = 120
# The wait when the state machine sets no TimeoutSeconds (a Standard execution may otherwise run a year).
UNBOUNDED_MACHINE_WAIT_S = 24 * 3600
FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT = "until the state machine's own timeout"


def machine_wait_s(sfn: Any, arn: str, now: datetime | None = None) -> int:
    """Seconds from ``now`` until the execution's state machine would have timed it out (its definition's
    TimeoutSeconds from the execution's start), plus MACHINE_TIMEOUT_MARGIN_S: a wait that long sees the end of any
    run the deployed configuration allows, whatever -c values it was deployed with."""
    execution = sfn.describe_execution(executionArn=arn)
    definition = sfn.describe_state_machine(stateMachineArn=execution["stateMachineArn"])["definition"]
    try:
        limit = json.loads(definition).get("TimeoutSeconds")
    except (ValueError, AttributeError):
        limit = None
    if not isinstance(limit, int) or isinstance(limit, bool):
        return UNBOUNDED_MACHINE_WAIT_S
    elapsed = ((now or datetime.now(UTC)) - execution["startDate"]).total_seconds()
    return max(0, int(limit + MACHINE_TIMEOUT_MARGIN_S - elapsed))


def follow_execution(
    out: Console,
    sfn: Any,
    arn: str,
    *,
    timeout: int | None,
    poll_seconds: float,
    resume_hint: str,
    detail: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> dict[str, Any]:
    """Poll an execution until it stops or ``timeout`` passes; prints each change of status or state.

    However the following stops (the timeout, an AWS error such as credentials that expired during a wait of
    hours, or Ctrl-C) the execution keeps running, and the message says how to resume following it. Ctrl-C exits
    with 130 (128 + SIGINT, as a shell reports it) instead of click's "Aborted!" and 1.
    """
    shown = None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        describe_existing(sfn, arn)  # a name no execution has is not a wait to resume (NoSuchExecution)
        if timeout is None:
            with aws.aws_errors("reading the execution's state machine", sfn.meta.region_name, aws.client_profile(sfn)):
                timeout = machine_wait_s(sfn, arn)
        deadline = time.monotonic() + timeout
        with (
            aws.aws_errors("following the execution", sfn.meta.region_name, aws.client_profile(sfn)),
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
                    break
                time.sleep(poll_seconds)
    except NoSuchExecution:
        raise
    except KitError as exc:
        raise KitError(f"{exc.message}; the execution keeps running: then follow it with {resume_hint}") from None
    except KeyboardInterrupt:
        click.echo(f"Stopped following; the execution keeps running: follow it again with {resume_hint}", err=True)
        click.get_current_context().exit(130)
    raise KitError(f"still {line} after {timeout} s (the execution keeps running): {resume_hint}")


def finish(status: str) -> None:
    """Exit 1 when a followed execution or job did not succeed."""
    if status not in ("SUCCEEDED", "COMPLETE"):
        click.get_current_context().exit(1)


def deployed_name_prefix(execution_arn: str, stage: str, machine_part: str) -> str:
    """The name_prefix the deployed stack was made with, read from the state machine it names
    ``<name_prefix>-<stage>-<machine_part>``: an execution ARN is
    ``arn:<partition>:states:<region>:<account>:execution:<StateMachineName>:<ExecutionId>`` (the Service
    Authorization Reference's Step Functions "execution" resource). Names the pipeline derives from it then match
    the stack even when it was deployed with ``-c name_prefix=...`` and the command was run without it."""
    fields = execution_arn.split(":")
    machine = fields[6] if len(fields) == 8 and fields[5] == "execution" else ""
    ending = f"-{stage}-{machine_part}"
    if not machine.endswith(ending) or machine == ending:
        raise KitError(
            f"{execution_arn} is not an execution of a kit state machine of stage {stage} "
            f"(<name_prefix>{ending}): give an execution's name, or the ARN of one of this stage's"
        )
    return machine.removesuffix(ending)


# Any name StartExecution accepts: 1-80 characters (botocore's Name shape), without white space, brackets,
# wildcards, " # % \ ^ | ~ ` $ & , ; : / or control characters (U+0000-001F, U+007F-009F, U+FFFE-FFFF)
# (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html). A --resume-from names one.
EXECUTION_NAME = re.compile(r"[^<>{}\[\]?*\"#%\\^|~`$&,;:/\s\x00-\x1f\x7f-\x9f\ufffe\uffff]{1,80}")


def execution_name() -> str:
    # 32 random bits besides the second: the name is also the folder a start uploads its data to (kit l3), which
    # two starts in the same second must not share.
    return f"kit-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


# DescribeExecution's statuses after which the execution runs nothing more: botocore's ExecutionStatus without
# RUNNING and PENDING_REDRIVE (a redrive was asked: it runs again). A job that resumes a run shares its checkpoint
# prefix, and "if a checkpoint is deleted in the SageMaker AI container, it will also be deleted in the S3 folder"
# (https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints.html): each job's pruning would delete the
# other's checkpoints.
EXECUTION_ENDED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
# At most this many running executions are read for their resumeFrom (ListExecutions pages of 100, then a
# DescribeExecution each): more, and the kit cannot tell, so it refuses.
RESUMERS_READ = 100


def _resumed_from(described: Mapping[str, Any]) -> str | None:
    try:
        given = json.loads(described.get("input") or "{}")
    except ValueError:
        return None
    earlier = given.get("resumeFrom") if isinstance(given, dict) else None
    return earlier if isinstance(earlier, str) else None


def execution_arn(machine: str, name: str) -> str:
    """The ARN of execution ``name`` of state machine ``machine`` (the ARN, with execution for stateMachine)."""
    return machine.replace(":stateMachine:", ":execution:", 1) + ":" + name


def start_run(target: Target, sfn: Any, machine: str, name: str, execution_input: str, action: str, level: str) -> str:
    """StartExecution of run ``name``; its ARN. When the call fails after the client's retries, the answer may be
    what was lost, not the start: the run is looked up by name first, and a running one with this start's input is
    this start's. Otherwise the error names the run, so that starting a second, paid run is a choice, not a reflex.
    """
    try:
        with aws.aws_errors(action, target.region, target.profile):
            return str(sfn.start_execution(stateMachineArn=machine, name=name, input=execution_input)["executionArn"])
    except KitError as error:
        arn = execution_arn(machine, name)
        found = _described(sfn, arn)
        status = str(found.get("status", "")) if found is not None else ""
        if found is not None and status == "RUNNING" and _same_input(found, execution_input):
            return arn
        command = target.kit_command(level, f"status {name}")
        if found is not None and status == "RUNNING":
            # Running with other input: "The execution has the same name as another execution (but a different
            # input)" (botocore's ExecutionAlreadyExists; API_StartExecution). It is another run's, which this start
            # must neither follow nor report as its own.
            raise KitError(
                f"{error} (an execution named {name} is already RUNNING with other input: it is another run, so "
                f"start this one under another name; `{command}` shows it)"
            ) from None
        if found is not None:
            # A closed execution keeps its name: "When the original execution is closed, the
            # ExecutionAlreadyExists message is returned regardless of input", and the name may be reused "90 days
            # after it closes" (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html).
            # With other input it is another run's; with this input it is an earlier run's, or this start's if its
            # answer was lost and it ended already: either way no second start is made.
            started = found.get("startDate")
            since = f", started {started.isoformat(timespec='seconds')}" if isinstance(started, datetime) else ""
            whose = (
                "with this input: an earlier run, or this start if its answer was lost and it ended already"
                if _same_input(found, execution_input)
                else "with other input"
            )
            raise KitError(
                f"{error} (an execution named {name} already exists and is {status}{since}, {whose}: Step Functions "
                f"keeps a closed execution's name for 90 days, so start the run under another name; `{command}` shows "
                "it)"
            ) from None
        raise KitError(
            f"{error} (run {name}: if it may have started, check with `{command}` before starting again)"
        ) from None


def _described(sfn: Any, arn: str) -> Mapping[str, Any] | None:
    """DescribeExecution of ``arn``; None when it cannot be read (none by that name, or any error)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return dict(sfn.describe_execution(executionArn=arn))
    except (BotoCoreError, ClientError):
        return None


def _same_input(found: Mapping[str, Any], execution_input: str) -> bool:
    """Whether execution ``found`` was given ``execution_input`` (as JSON, not as text)."""
    try:
        return bool(json.loads(found.get("input") or "null") == json.loads(execution_input))
    except ValueError:
        return False


# A resumed run keeps checkpointing under the prefix of the run it resumed (checkpoints/<resumeFrom>/), so resuming
# it means resuming that first run: at most this many resumes are followed back.
MAX_RESUME_HOPS = 20


def resumed_root(sfn: Any, machine: str, earlier: str) -> tuple[str, tuple[str, ...]]:
    """The run whose checkpoint prefix ``earlier`` wrote to: ``earlier`` itself, or, when it resumed a run, that
    run's (each execution's input resumeFrom, followed back). Also every name on the way, ``earlier`` first. A name
    no execution has (checkpoints copied there by hand) ends the chain."""
    from botocore.exceptions import ClientError

    names = [earlier]
    with aws.aws_errors(f"reading execution {earlier}", sfn.meta.region_name, aws.client_profile(sfn)):
        for _ in range(MAX_RESUME_HOPS):
            arn = execution_arn(machine, names[-1])
            try:
                previous = _resumed_from(sfn.describe_execution(executionArn=arn))
            except ClientError as exc:
                if aws.error_code(exc) != "ExecutionDoesNotExist":
                    raise
                break
            if previous is None or previous in names:
                break
            names.append(previous)
    return names[-1], tuple(names)


def check_resumable(
    sfn: Any,
    machine: str,
    earlier: str,
    checkpoints: str,
    *,
    missing: str | None = None,
    chain: tuple[str, ...] = (),
    training_job: tuple[Any, Callable[[str], str]] | None = None,
) -> dict[str, Any] | None:
    """DescribeExecution of ``earlier`` (None: there is no such execution; KitError ``missing`` when given) once it
    is sure no job but the new one would write ``checkpoints``: KitError unless ``earlier`` (and every run of
    ``chain``, the resumes that wrote there too, resumed_root) has ended and no running execution of ``machine``
    already resumes from one of them. The check and the start are two calls: two starts at once may both pass.

    ``training_job`` (a SageMaker client, and the job name of an execution's ARN): an execution that ended
    abnormally may have left its training job Stopping, still uploading to the prefix (StopTrainingJob: SIGTERM, then
    120 s; https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html), so each one's job
    must have stopped too."""
    from botocore.exceptions import ClientError

    arn = execution_arn(machine, earlier)
    again = f"two jobs on {checkpoints} would delete each other's checkpoints: wait for it to end, or stop it"
    writers = {earlier, *chain}
    with aws.aws_errors(f"reading execution {earlier}", sfn.meta.region_name, aws.client_profile(sfn)):
        for other_name in sorted(set(chain) - {earlier}):
            other_arn = execution_arn(machine, other_name)
            other_status = str(sfn.describe_execution(executionArn=other_arn)["status"])
            if other_status not in EXECUTION_ENDED:
                raise KitError(f"--resume-from {other_name}: that execution is {other_status}; {again}")
        try:
            described: dict[str, Any] | None = sfn.describe_execution(executionArn=arn)
        except ClientError as exc:
            if aws.error_code(exc) != "ExecutionDoesNotExist":
                raise
            if missing:
                raise KitError(missing) from None
            described = None
        status = str(described["status"]) if described else None
        if status is not None and status not in EXECUTION_ENDED:
            raise KitError(f"--resume-from {earlier}: that execution is {status}; {again}")
        if training_job is not None:
            sagemaker, job_of = training_job
            for name in sorted(writers):
                job = job_of(execution_arn(machine, name))
                try:
                    job_status = str(sagemaker.describe_training_job(TrainingJobName=job)["TrainingJobStatus"])
                except ClientError as exc:
                    if not aws.not_found(exc):  # any other refusal is no proof that no job runs
                        raise
                    continue  # no job: the run ended before it started one
                if job_status in BUSY_TRAINING:  # a job that may still write
                    raise KitError(f"--resume-from {name}: its training job {job} is {job_status}; {again}")
        running: list[str] = []
        token: dict[str, str] = {}
        while len(running) <= RESUMERS_READ:
            page = sfn.list_executions(stateMachineArn=machine, statusFilter=EXECUTION_RUNNING, maxResults=100, **token)
            running += [str(e["executionArn"]) for e in page["executions"]]
            if not page.get("nextToken"):
                break
            token = {"nextToken": str(page["nextToken"])}
        if len(running) > RESUMERS_READ:
            raise KitError(
                f"--resume-from {earlier}: more than {RESUMERS_READ} executions of {machine.rsplit(':', 1)[-1]} "
                "are running, too many to check that none resumes from it already: wait for some to end"
            )
        for other in running:
            if (resumes := _resumed_from(sfn.describe_execution(executionArn=other))) in writers:
                raise KitError(
                    f"--resume-from {resumes}: execution {other.rsplit(':', 1)[-1]} is {EXECUTION_RUNNING} and "
                    f"resumes from it already; {again}"
                )
    return described


def _execution_arn(sfn: Any, machine: str, given: str | None) -> str | None:
    """The execution given (ARN or name), or the state machine's newest one (None: it has none)."""
    if given:
        if given.startswith("arn:"):
            return given
        return execution_arn(machine, given)
    with aws.aws_errors("listing executions", sfn.meta.region_name, aws.client_profile(sfn)):
        executions = sfn.list_executions(stateMachineArn=machine, maxResults=1)["executions"]
    return str(executions[0]["executionArn"]) if executions else None


def show_status(
    level: str,
    execution: str | None,
    *,
    group: str,
    wait: bool,
    timeout: int | None,
    poll_seconds: float,
    start_hint: str,
    detail: Callable[[str], Callable[[Mapping[str, Any]], str | None]] | None = None,
    rows: Callable[[str, str], Sequence[tuple[str, Any]]] | None = None,
) -> None:
    """The status command of a level with a state machine: summary, or follow then summary.

    ``level`` is the stack's key (its StateMachineArn output is followed), ``group`` the level's command group
    (``l3``), named in the hint that resumes a wait and in ``start_hint``, the command that starts a run
    (``start --upload FILE``); both carry this command's --stage, --region, --profile and -c. ``rows`` (the
    execution's ARN and status) adds the level's own rows under the summary, such as the job it ran.
    """
    target = current_target()
    machine = target.output(level, "StateMachineArn")
    sfn = target.client("stepfunctions")
    arn = _execution_arn(sfn, machine, execution)
    if arn is None:
        start = target.kit_command(group, start_hint)
        raise KitError(f"no executions of {machine.rsplit(':', 1)[-1]} yet: start one with {start}")
    out = console()
    description = None
    if wait:
        description = follow_execution(
            out,
            sfn,
            arn,
            timeout=timeout,
            poll_seconds=poll_seconds,
            resume_hint=target.kit_command(group, f"status {arn} --wait"),
            detail=detail(arn) if detail else None,
        )
    final = print_execution(out, sfn, arn, description)
    if rows:
        out.print(kv_table(rows(arn, final)))
    if wait:
        finish(final)
