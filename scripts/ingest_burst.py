"""Burst simulation of the Level 2 ingestion pipeline, offline: does the ingest function ever lose a change?

The world: an S3 bucket whose changes reach an SQS queue (moto, with a redrive policy to a dead-letter queue
after 5 receives) as EventBridge events, and a fake bedrock-agent whose ingestion jobs go STARTING ->
IN_PROGRESS -> COMPLETE on a simulated clock, which raises a real ConflictException (a botocore ClientError)
when a job of the data source is already running, and which checks every request and response against
botocore's service model (including the length, pattern and enum constraints botocore itself skips).
moto's SQS runs on the same simulated clock, so visibility timeouts and SentTimestamp follow it.

``run_burst`` sends waves of document events (created and deleted, many on the same keys) with poison
messages mixed in, while a job is already running and while another job races the function's start
(a genuine conflict), and invokes the real handler (``rag_ingest.handler.handler``) with ``{"action": "sync"}``
on schedule until the queue is empty. Every change is tracked from its send to the job that covers it.

    python scripts/ingest_burst.py [--events 1000] [--seed 7]

prints the figures; ``scripts/bench.py`` imports ``run_burst``. Exit status 1 if a change was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from unittest import mock

REGION = "us-east-1"
ACCOUNT = "123456789012"
KNOWLEDGE_BASE_ID = "KBSIM00001"
DATA_SOURCE_ID = "DSSIM00001"
DATA_SOURCE_REVISION = "0123456789abcdef"  # the stack's digest of the data source's properties (16 hex digits)
BUCKET = "kit-documents-sim"
PREFIX = "docs/"
MAX_RECEIVE_COUNT = 5
FUNCTION_TIMEOUT_MS = 120_000  # the stack's ingest function timeout
STARTING_MS = 5_000  # how long a simulated job stays STARTING
EPOCH_MS = 1_800_000_000_000


# --- simulated time ----------------------------------------------------------------------------------------


class SimClock:
    """Milliseconds since the epoch, advanced explicitly (and by 1 ms on every simulated API call)."""

    def __init__(self, start_ms: int = EPOCH_MS) -> None:
        self.now_ms = start_ms

    def advance(self, ms: int = 1) -> int:
        self.now_ms += ms
        return self.now_ms

    def advance_to(self, at_ms: int) -> None:
        self.now_ms = max(self.now_ms, at_ms)

    def datetime(self, at_ms: int | None = None) -> datetime:
        return datetime.fromtimestamp((self.now_ms if at_ms is None else at_ms) / 1000, tz=UTC)


@contextlib.contextmanager
def moto_sqs_on(clock: SimClock) -> Iterator[None]:
    """Make moto's SQS backend read the simulated clock (visibility timeouts, SentTimestamp, redrive)."""
    import moto.sqs.models as sqs_models

    with (
        mock.patch.object(sqs_models, "unix_time", lambda dt=None: clock.now_ms / 1000),
        mock.patch.object(sqs_models, "unix_time_millis", lambda dt=None: float(clock.now_ms)),
    ):
        yield


# --- strict request/response checks against botocore's model ----------------------------------------------


def validate_strict(params: Any, shape: Any) -> None:
    """botocore's own validation (types, required members, minimums) plus maximums, patterns and enums.

    Raises botocore's ParamValidationError listing every problem.
    """
    from botocore.exceptions import ParamValidationError
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += constraint_problems(params, shape)
    if problems:
        raise ParamValidationError(report="\n".join(problems))


def constraint_problems(params: Any, shape: Any) -> list[str]:
    """What the service would refuse in ``params`` that botocore's client-side validation lets through: its
    ParamValidator checks types, required members and minimums, not maximums, patterns or enums."""
    problems: list[str] = []
    _check_constraints(params, shape, shape.name, problems)
    return problems


def _check_constraints(value: Any, shape: Any, path: str, problems: list[str]) -> None:
    meta, kind = shape.metadata, shape.type_name
    if kind == "structure" and isinstance(value, dict) and not meta.get("document"):
        for name, member in shape.members.items():
            if name in value:
                _check_constraints(value[name], member, f"{path}.{name}", problems)
    elif kind == "list" and isinstance(value, list):
        _check_max(path, len(value), meta, "length", problems)
        for index, item in enumerate(value):
            _check_constraints(item, shape.member, f"{path}[{index}]", problems)
    elif kind == "map" and isinstance(value, dict):
        _check_max(path, len(value), meta, "length", problems)
        for key, item in value.items():
            _check_constraints(key, shape.key, f"{path}.<key>", problems)
            _check_constraints(item, shape.value, f"{path}.{key}", problems)
    elif kind == "string" and isinstance(value, str):
        _check_max(path, len(value), meta, "length", problems)
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
        pattern = meta.get("pattern")
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error:
                return  # a Java-only construct: botocore's check is all we have
            if compiled.fullmatch(value) is None:
                problems.append(f"{path}: {value!r} does not match {pattern}")
    elif kind in ("integer", "long") and isinstance(value, int):
        _check_max(path, value, meta, "value", problems)


def _check_max(path: str, size: int, meta: dict[str, Any], what: str, problems: list[str]) -> None:
    if "max" in meta and size > meta["max"]:
        problems.append(f"{path}: {what} {size} is above the maximum {meta['max']}")


# --- the fake bedrock-agent --------------------------------------------------------------------------------


@dataclass
class SimJob:
    job_id: str
    started_ms: int
    duration_ms: int
    by: str  # "function" or "external"
    client_token: str | None = None
    description: str | None = None
    final_status: str = "COMPLETE"
    statistics: dict[str, int] = field(default_factory=dict)
    failure_reasons: list[str] = field(default_factory=list)

    def status(self, now_ms: int) -> str:
        if now_ms < self.started_ms + STARTING_MS:
            return "STARTING"
        if now_ms < self.started_ms + self.duration_ms:
            return "IN_PROGRESS"
        return self.final_status

    def running(self, now_ms: int) -> bool:
        return self.status(now_ms) in ("STARTING", "IN_PROGRESS", "STOPPING")


@dataclass(frozen=True)
class StartAttempt:
    at_ms: int
    client_token: str | None
    description: str | None
    outcome: str  # "started", "idempotent" or an error code
    job_id: str | None = None


@functools.cache
def _model_client() -> Any:
    """A bedrock-agent client for its service model and modeled exception classes; the fake never sends with it,
    so one serves every fake of the process."""
    import boto3

    return boto3.client("bedrock-agent", region_name=REGION, aws_access_key_id="sim", aws_secret_access_key="sim")


class FakeBedrockAgent:
    """The three bedrock-agent operations the ingest function calls, on a simulated clock.

    Every request and response is checked against botocore's service model (``validate_strict``); errors
    are the client's own modeled exception classes (real botocore ClientErrors).
    """

    def __init__(
        self,
        clock: SimClock,
        *,
        knowledge_base_id: str = KNOWLEDGE_BASE_ID,
        data_source_id: str = DATA_SOURCE_ID,
        job_duration_ms: int = 150_000,
    ) -> None:
        self._client = _model_client()
        self.exceptions = self._client.exceptions
        self.clock = clock
        self.knowledge_base_id = knowledge_base_id
        self.data_source_id = data_source_id
        self.job_duration_ms = job_duration_ms
        self.jobs: list[SimJob] = []
        self.start_attempts: list[StartAttempt] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.scripted_start_errors: deque[str] = deque()
        self.races: deque[int] = deque()

    # -- scenario controls --

    def add_job(
        self, *, started_ms: int, duration_ms: int | None = None, by: str = "external", **kwargs: Any
    ) -> SimJob:
        job = SimJob(
            job_id=f"JOB{len(self.jobs) + 1:07d}",
            started_ms=started_ms,
            duration_ms=self.job_duration_ms if duration_ms is None else duration_ms,
            by=by,
            **kwargs,
        )
        self.jobs.append(job)
        return job

    def race_next_start(self, duration_ms: int | None = None) -> None:
        """Someone else starts a job just before the function's next StartIngestionJob lands (a real conflict)."""
        self.races.append(self.job_duration_ms if duration_ms is None else duration_ms)

    def fail_next_start(self, code: str) -> None:
        """The next StartIngestionJob raises ``code`` without starting anything (e.g. the account's quota)."""
        self.scripted_start_errors.append(code)

    def running_job(self, at_ms: int | None = None) -> SimJob | None:
        now = self.clock.now_ms if at_ms is None else at_ms
        return next((job for job in self.jobs if job.started_ms <= now and job.running(now)), None)

    # -- operations --

    def list_ingestion_jobs(self, **params: Any) -> dict[str, Any]:
        self._request("ListIngestionJobs", params)
        now = self.clock.now_ms
        jobs = [job for job in self.jobs if job.started_ms <= now]
        for condition in params.get("filters") or []:
            jobs = [job for job in jobs if job.status(now) in condition["values"]]
        order = params.get("sortBy") or {"attribute": "STARTED_AT", "order": "DESCENDING"}
        if order["attribute"] == "STARTED_AT":
            jobs.sort(key=lambda job: job.started_ms, reverse=order["order"] == "DESCENDING")
        else:
            jobs.sort(key=lambda job: job.status(now), reverse=order["order"] == "DESCENDING")
        offset = int(params.get("nextToken") or 0)
        limit = int(params.get("maxResults") or 1000)
        page = jobs[offset : offset + limit]
        response: dict[str, Any] = {"ingestionJobSummaries": [self._summary(job) for job in page]}
        if offset + limit < len(jobs):
            response["nextToken"] = str(offset + limit)
        return self._response("ListIngestionJobs", response)

    def start_ingestion_job(self, **params: Any) -> dict[str, Any]:
        self._request("StartIngestionJob", params)
        now = self.clock.now_ms
        token, description = params.get("clientToken"), params.get("description")
        same = next((job for job in self.jobs if token is not None and job.client_token == token), None)
        if same is not None:
            self.start_attempts.append(StartAttempt(now, token, description, "idempotent", same.job_id))
            return self._response("StartIngestionJob", {"ingestionJob": self._detail(same)})
        if self.races:
            self.add_job(started_ms=now, duration_ms=self.races.popleft(), by="external")
            self.clock.advance()
        if self.scripted_start_errors:
            code = self.scripted_start_errors.popleft()
            self.start_attempts.append(StartAttempt(self.clock.now_ms, token, description, code))
            raise self.error("StartIngestionJob", code, f"Simulated {code}.")
        running = self.running_job()
        if running is not None:
            self.start_attempts.append(StartAttempt(self.clock.now_ms, token, description, "ConflictException"))
            raise self.error(
                "StartIngestionJob",
                "ConflictException",
                f"Ingestion job {running.job_id} is {running.status(self.clock.now_ms)} for this data source.",
            )
        job = self.add_job(started_ms=self.clock.now_ms, by="function", client_token=token, description=description)
        self.start_attempts.append(StartAttempt(job.started_ms, token, description, "started", job.job_id))
        return self._response("StartIngestionJob", {"ingestionJob": self._detail(job)})

    def get_ingestion_job(self, **params: Any) -> dict[str, Any]:
        self._request("GetIngestionJob", params)
        job = next((job for job in self.jobs if job.job_id == params["ingestionJobId"]), None)
        if job is None:
            raise self.error("GetIngestionJob", "ResourceNotFoundException", "No such ingestion job.")
        return self._response("GetIngestionJob", {"ingestionJob": self._detail(job)})

    def error(self, operation: str, code: str, message: str) -> Exception:
        """The client's modeled exception for ``code`` (a botocore ClientError subclass)."""
        shape = self._client.meta.service_model.shape_for(code)
        status = shape.metadata.get("error", {}).get("httpStatusCode", 400)
        response: Any = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
            "message": message,
        }
        exception_class: Any = self.exceptions.from_code(code)
        error: Exception = exception_class(response, operation)
        return error

    # -- helpers --

    def _request(self, operation: str, params: dict[str, Any]) -> None:
        self.clock.advance()
        model = self._client.meta.service_model.operation_model(operation)
        validate_strict(params, model.input_shape)
        if (params.get("knowledgeBaseId"), params.get("dataSourceId")) != (self.knowledge_base_id, self.data_source_id):
            raise self.error(operation, "ResourceNotFoundException", "Unknown knowledge base or data source.")
        self.calls.append((operation, dict(params)))

    def _response(self, operation: str, response: dict[str, Any]) -> dict[str, Any]:
        validate_strict(response, self._client.meta.service_model.operation_model(operation).output_shape)
        return response

    def _summary(self, job: SimJob) -> dict[str, Any]:
        now = self.clock.now_ms
        summary: dict[str, Any] = {
            "knowledgeBaseId": self.knowledge_base_id,
            "dataSourceId": self.data_source_id,
            "ingestionJobId": job.job_id,
            "status": job.status(now),
            "startedAt": self.clock.datetime(job.started_ms),
            "updatedAt": self.clock.datetime(min(now, job.started_ms + job.duration_ms)),
        }
        if job.description:
            summary["description"] = job.description
        # A summary carries the job's statistics, as the real one does (failureReasons only in the detail):
        # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobSummary.html
        if job.statistics:
            summary["statistics"] = dict(job.statistics)
        return summary

    def _detail(self, job: SimJob) -> dict[str, Any]:
        detail = self._summary(job)
        if job.failure_reasons:
            detail["failureReasons"] = list(job.failure_reasons)
        return detail


# --- the recording SQS client ------------------------------------------------------------------------------


@dataclass
class Tracker:
    """Who sent what when, which job covers it, and every deletion, for the invariants."""

    clock: SimClock
    agent: FakeBedrockAgent
    change_sent_ms: dict[str, int] = field(default_factory=dict)  # change id -> first send
    message_change: dict[str, str] = field(default_factory=dict)  # message id -> change id (valid only)
    poison_messages: set[str] = field(default_factory=set)
    live_copies: dict[str, int] = field(default_factory=dict)  # change id -> messages holding it
    receipt_message: dict[str, str] = field(default_factory=dict)
    deletions: list[tuple[str, int]] = field(default_factory=list)  # (change id, at)
    deleted_before_cover: int = 0
    deleted_poison: int = 0
    requeued: int = 0
    receive_calls: list[int] = field(default_factory=list)
    receives_while_running: int = 0

    def covered(self, change_id: str, at_ms: int) -> bool:
        """A job started after the change was sent, and no later than ``at_ms``."""
        sent = self.change_sent_ms[change_id]
        return any(sent < job.started_ms <= at_ms for job in self.agent.jobs)

    def sent(self, message_id: str, body: str, *, change_id: str | None) -> None:
        if change_id is None:
            self.poison_messages.add(message_id)
            return
        self.change_sent_ms.setdefault(change_id, self.clock.now_ms)
        self.message_change[message_id] = change_id
        self.live_copies[change_id] = self.live_copies.get(change_id, 0) + 1

    def deleted(self, message_id: str) -> None:
        change_id = self.message_change.get(message_id)
        if change_id is None:
            self.deleted_poison += int(message_id in self.poison_messages)
            return
        self.live_copies[change_id] -= 1
        self.deletions.append((change_id, self.clock.now_ms))
        if self.live_copies[change_id] == 0 and not self.covered(change_id, self.clock.now_ms):
            self.deleted_before_cover += 1


class RecordingSQS:
    """The function's SQS client: the real (moto) client, with every call recorded and 1 ms of clock."""

    def __init__(self, client: Any, tracker: Tracker) -> None:
        self._client = client
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**params: Any) -> Any:
            self._tracker.clock.advance()
            return method(**params)

        return call

    def receive_message(self, **params: Any) -> dict[str, Any]:
        tracker = self._tracker
        tracker.clock.advance()
        tracker.receive_calls.append(tracker.clock.now_ms)
        if tracker.agent.running_job() is not None:
            tracker.receives_while_running += 1
        response: dict[str, Any] = self._client.receive_message(**params)
        for message in response.get("Messages") or []:
            tracker.receipt_message[message["ReceiptHandle"]] = message["MessageId"]
        return response

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        self._tracker.clock.advance()
        response: dict[str, Any] = self._client.delete_message_batch(**params)
        handles = {entry["Id"]: entry["ReceiptHandle"] for entry in params["Entries"]}
        for done in response.get("Successful") or []:
            self._tracker.deleted(self._tracker.receipt_message[handles[done["Id"]]])
        return response

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        self._tracker.clock.advance()
        response: dict[str, Any] = self._client.send_message_batch(**params)
        bodies = {entry["Id"]: entry["MessageBody"] for entry in params["Entries"]}
        for done in response.get("Successful") or []:
            body = bodies[done["Id"]]
            self._tracker.sent(done["MessageId"], body, change_id=change_id_of(body))
            self._tracker.requeued += 1
        return response


def change_id_of(body: str) -> str | None:
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):  # poison of every kind, including a deeply nested body
        return None
    return event.get("id") if isinstance(event, dict) and isinstance(event.get("id"), str) else None


# --- the world: document events and poison ------------------------------------------------------------------


def object_event(rng: random.Random, kind: str, key: str, *, bucket: str = BUCKET, at: datetime | None = None) -> str:
    """An EventBridge "Object Created"/"Object Deleted" event for S3, as the rule delivers it to SQS."""
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": {"key": key, "sequencer": f"{rng.getrandbits(64):016X}"},
        "request-id": f"{rng.getrandbits(64):016X}",
        "requester": ACCOUNT,
    }
    if kind == "created":
        detail["object"].update(size=rng.randint(100, 50_000), etag=f"{rng.getrandbits(128):032x}")
        detail["reason"] = "PutObject"
    else:
        detail["deletion-type"] = "Permanently Deleted"
        detail["reason"] = "DeleteObject"
    event = {
        "version": "0",
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "detail-type": "Object Created" if kind == "created" else "Object Deleted",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": (at or datetime(2027, 1, 1, tzinfo=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": detail,
    }
    return json.dumps(event)


def poison_bodies(rng: random.Random, count: int) -> list[str]:
    """Messages that are not document changes of the knowledge base, of every kind the function rejects (a change
    of a key outside the prefix is not one: it is moot, from a previous prefix, and deleted, not dead-lettered)."""
    makers: list[Callable[[], str]] = [
        lambda: "{not json",
        lambda: json.dumps(["an", "array"]),
        lambda: json.dumps({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"}),
        lambda: object_event(rng, "created", f"{PREFIX}x.txt", bucket="someone-elses-bucket"),
        lambda: json.dumps(
            {"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": BUCKET}}}
        ),
    ]
    return [makers[i % len(makers)]() for i in range(count)]


# --- the burst -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstTrace:
    change_sent_ms: dict[str, int]
    jobs: list[SimJob]
    start_attempts: list[StartAttempt]
    deletions: list[tuple[str, int]]
    dead_letter_bodies: list[str]
    poison_bodies: list[str]


@dataclass(frozen=True)
class BurstResult:
    events_in: int
    jobs_started: int
    lost: int
    deleted_before_cover: int
    dead_lettered: int
    wall_seconds: float
    poison_in: int = 0
    start_calls: int = 0
    dead_lettered_changes: int = 0
    poison_deleted: int = 0
    queue_left: int = 0
    syncs: int = 0
    busy_syncs: int = 0
    receives_while_job_running: int = 0
    requeued: int = 0
    sim_seconds: float = 0.0
    trace: BurstTrace | None = field(default=None, repr=False, compare=False)


@dataclass
class SimContext:
    """The parts of a Lambda context the handler reads."""

    remaining_ms: int = FUNCTION_TIMEOUT_MS
    function_name: str = "rag-ingest"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:rag-ingest"
    aws_request_id: str = "sim-request"
    log_group_name: str = "/aws/lambda/rag-ingest"
    log_stream_name: str = "sim"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def function_env(queue_url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "sim",
        "AWS_SECRET_ACCESS_KEY": "sim",
        "AWS_SESSION_TOKEN": "sim",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "rag-ingest",
        "POWERTOOLS_METRICS_NAMESPACE": "GenAiKitSim",
        "QUEUE_URL": queue_url,
        "KNOWLEDGE_BASE_ID": KNOWLEDGE_BASE_ID,
        "DATA_SOURCE_ID": DATA_SOURCE_ID,
        "DOCUMENTS_BUCKET": BUCKET,
        "DOCUMENTS_PREFIX": PREFIX,
        "DATA_SOURCE_REVISION": DATA_SOURCE_REVISION,
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def clear_function_caches() -> None:
    """Forget the ingest function's lazily created settings, clients, metrics and tracer, and what it saw."""
    from rag_ingest import aws, handler, ingestion, settings

    forget = getattr(ingestion, "forget_synced", None)  # which data sources the function saw in sync
    if forget is not None:
        forget()
    for factory in (
        settings.get_settings,
        aws.get_sqs_client,
        aws.get_agent_client,
        handler.get_metrics,
        handler.get_tracer,
        handler.get_runner,
    ):
        clear = getattr(factory, "cache_clear", None)  # a test or the burst may have patched a factory
        if clear is not None:
            clear()


def create_queues(sqs: Any, *, visibility_s: int = 180) -> tuple[str, str]:
    """The change queue and its dead-letter queue (maxReceiveCount 5), as the stack builds them."""
    dlq_url = sqs.create_queue(QueueName="changes-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
    attributes = {"RedrivePolicy": redrive, "VisibilityTimeout": str(visibility_s)}
    queue_url = sqs.create_queue(QueueName="changes", Attributes=attributes)["QueueUrl"]
    return queue_url, dlq_url


def queue_depth(sqs: Any, queue_url: str) -> int:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def peek_all(sqs: Any, queue_url: str) -> list[str]:
    """Every body in a queue (received with a zero visibility timeout, after the simulation)."""
    bodies: dict[str, str] = {}
    for _ in range(1000):
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages")
        if not batch:
            break
        bodies.update((m["MessageId"], m["Body"]) for m in batch)
    return list(bodies.values())


def run_burst(
    events: int = 1000,
    *,
    waves: int = 8,
    poison: int = 20,
    keys: int = 40,
    seed: int = 7,
    wave_interval_s: int = 60,
    sync_interval_s: int = 60,
    job_duration_s: int = 150,
    max_sim_s: int = 4 * 3600,
    quiet: bool = True,
) -> BurstResult:
    """Simulate a burst of ``events`` document changes (plus ``poison`` bad messages) and the scheduled syncs.

    Timeline: a job started by someone else is running when the burst begins; the waves arrive every
    ``wave_interval_s``; the function's first StartIngestionJob is raced by another job (a real
    ConflictException); ``{"action": "sync"}`` runs every ``sync_interval_s`` until the queue is empty.
    """
    import boto3
    from moto import mock_aws
    from moto.sqs.models import sqs_backends

    from rag_ingest import aws
    from rag_ingest import handler as ingest_handler

    wall_start = time.perf_counter()
    rng = random.Random(seed)
    clock = SimClock()
    start_ms = clock.now_ms
    key_names = [f"{PREFIX}doc-{i:03d}.md" for i in range(keys)]
    bodies: list[tuple[str, str | None]] = []  # (body, change id or None for poison)
    for _ in range(events):
        body = object_event(rng, rng.choices(("created", "deleted"), weights=(7, 3))[0], rng.choice(key_names))
        bodies.append((body, change_id_of(body)))
    bad = poison_bodies(rng, poison)
    for body in bad:
        bodies.insert(rng.randrange(len(bodies) + 1), (body, None))
    per_wave = -(-len(bodies) // waves)
    wave_plan = [bodies[i : i + per_wave] for i in range(0, len(bodies), per_wave)]

    log_level = ingest_handler.logger.log_level
    with contextlib.ExitStack() as stack:
        stack.enter_context(environment({**function_env("pending"), "POWERTOOLS_TRACE_DISABLED": "true"}))
        stack.enter_context(mock_aws())
        stack.enter_context(moto_sqs_on(clock))
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, dlq_url = create_queues(sqs)
        queues = sqs_backends[ACCOUNT][REGION]
        os.environ["QUEUE_URL"] = queue_url
        agent = FakeBedrockAgent(clock, job_duration_ms=job_duration_s * 1000)
        tracker = Tracker(clock, agent)
        function_sqs = RecordingSQS(sqs, tracker)
        stack.enter_context(mock.patch.object(aws, "get_sqs_client", lambda: function_sqs))
        stack.enter_context(mock.patch.object(aws, "get_agent_client", lambda: agent))
        stack.callback(clear_function_caches)
        clear_function_caches()
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the EMF documents
            ingest_handler.logger.setLevel(logging.ERROR)
            stack.callback(ingest_handler.logger.setLevel, log_level)

        # A job someone else started is running when the burst begins; the first start will be raced.
        agent.add_job(started_ms=start_ms - 60_000, by="external")
        agent.race_next_start()

        next_wave, wave_index = start_ms, 0
        next_sync = start_ms + 45_000
        syncs = busy = 0
        end_ms = start_ms + max_sim_s * 1000
        while clock.now_ms < end_ms:
            if wave_index < len(wave_plan) and next_wave <= next_sync:
                clock.advance_to(next_wave)
                for body, change_id in wave_plan[wave_index]:
                    # S3's event notification lands in the queue: put it in moto's queue as SendMessage would
                    # (no signed HTTP round trip per event; the function's own calls still go through a client).
                    message_id = queues.send_message(queue_url.rsplit("/", 1)[-1], body).id
                    tracker.sent(message_id, body, change_id=change_id)
                    clock.advance()
                wave_index += 1
                next_wave += wave_interval_s * 1000
                continue
            clock.advance_to(next_sync)
            result = ingest_handler.handler({"action": "sync"}, cast(Any, SimContext()))
            syncs += 1
            busy += int(bool(result.get("busy")))
            next_sync += sync_interval_s * 1000
            if wave_index >= len(wave_plan) and queue_depth(sqs, queue_url) == 0:
                break

        sim_seconds = (clock.now_ms - start_ms) / 1000
        queue_left = queue_depth(sqs, queue_url)
        clock.advance(3600_000)  # let every visibility timeout pass before looking into the queues
        dead_letter_bodies = peek_all(sqs, dlq_url)

    dead_changes = {change_id_of(body) for body in dead_letter_bodies} & set(tracker.change_sent_ms)
    lost = sum(1 for change_id in tracker.change_sent_ms if not tracker.covered(change_id, clock.now_ms))
    started = [attempt for attempt in agent.start_attempts if attempt.outcome == "started"]
    return BurstResult(
        events_in=events,
        jobs_started=len(started),
        lost=lost,
        deleted_before_cover=tracker.deleted_before_cover,
        dead_lettered=len(dead_letter_bodies),
        wall_seconds=round(time.perf_counter() - wall_start, 3),
        poison_in=poison,
        start_calls=len(agent.start_attempts),
        dead_lettered_changes=len(dead_changes),
        poison_deleted=tracker.deleted_poison,
        queue_left=queue_left,
        syncs=syncs,
        busy_syncs=busy,
        receives_while_job_running=tracker.receives_while_running,
        requeued=tracker.requeued,
        sim_seconds=sim_seconds,
        trace=BurstTrace(
            change_sent_ms=dict(tracker.change_sent_ms),
            jobs=list(agent.jobs),
            start_attempts=list(agent.start_attempts),
            deletions=list(tracker.deletions),
            dead_letter_bodies=dead_letter_bodies,
            poison_bodies=bad,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="document events in the burst (default 1000)")
    parser.add_argument("--poison", type=int, default=20, help="poison messages mixed in (default 20)")
    parser.add_argument("--waves", type=int, default=8, help="waves the events arrive in (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    result = run_burst(args.events, waves=args.waves, poison=args.poison, seed=args.seed)
    rows = [
        ("events in", result.events_in),
        ("poison messages in", result.poison_in),
        ("StartIngestionJob calls", result.start_calls),
        ("jobs started", result.jobs_started),
        ("lost", result.lost),
        ("deleted before a covering job started", result.deleted_before_cover),
        ("dead-lettered (all poison)", f"{result.dead_lettered} ({result.dead_lettered_changes} changes)"),
        ("left in the queue", result.queue_left),
        ("syncs (busy)", f"{result.syncs} ({result.busy_syncs})"),
        ("receives while a job ran", result.receives_while_job_running),
        ("simulated time", f"{result.sim_seconds:.0f} s"),
        ("wall time", f"{result.wall_seconds:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    ok = result.lost == 0 and result.deleted_before_cover == 0 and result.dead_lettered_changes == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
