"""Behaviour of the Level 2 ingest function, offline.

SQS is moto (a real queue with a redrive policy to a dead-letter queue after 5 receives) on a simulated
clock; bedrock-agent is the fake of ``scripts/ingest_burst.py`` (every request checked against botocore's
service model, jobs STARTING -> IN_PROGRESS -> COMPLETE, a real ConflictException while a job runs), except
for ``reconcile``, where a botocore Stubber on the real client returns the job statistics.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import Stubber
from moto import mock_aws
from moto.sqs.models import sqs_backends

import rag_ingest.handler
from common.errors import ConfigurationError
from rag_ingest import aws, ingestion, settings
from rag_ingest.changes import Change, PoisonMessage, parse_change
from scripts import ingest_burst
from scripts.ingest_burst import (
    ACCOUNT,
    BUCKET,
    DATA_SOURCE_ID,
    KNOWLEDGE_BASE_ID,
    PREFIX,
    REGION,
    FakeBedrockAgent,
    RecordingSQS,
    SimClock,
    SimContext,
    Tracker,
    create_queues,
    moto_sqs_on,
    object_event,
    poison_bodies,
    validate_strict,
)

from .conftest import emf_documents

NAMESPACE = "GenAiKitTest"
SERVICE = "rag-ingest-test"
LAMBDAS_DIR = Path(rag_ingest.handler.__file__).resolve().parents[1]
SYNC = {"action": "sync"}
RECONCILE = {"action": "reconcile"}


clear_caches = ingest_burst.clear_function_caches


@pytest.fixture(autouse=True)
def ingest_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The function's environment (QUEUE_URL is set by the ``world`` fixture); fresh lazy caches."""
    env = ingest_burst.function_env("https://sqs.us-east-1.amazonaws.com/123456789012/unset")
    env.update(POWERTOOLS_SERVICE_NAME=SERVICE, POWERTOOLS_METRICS_NAMESPACE=NAMESPACE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MAX_MESSAGES_PER_RUN", raising=False)
    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the ingest function's Powertools Logger writes (one JSON document a line)."""
    stream = io.StringIO()
    log_handler = rag_ingest.handler.logger.registered_handler
    assert isinstance(log_handler, logging.StreamHandler)
    previous = log_handler.setStream(stream)
    try:
        yield stream
    finally:
        log_handler.setStream(previous)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


@dataclass
class World:
    """moto SQS and the fake bedrock-agent on one simulated clock, wired into the function."""

    clock: SimClock
    sqs: Any
    queue_url: str
    dlq_url: str
    agent: FakeBedrockAgent
    tracker: Tracker
    function_sqs: RecordingSQS
    rng: random.Random

    def send(self, body: str) -> str:
        message_id: str = self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)["MessageId"]
        self.tracker.sent(message_id, body, change_id=ingest_burst.change_id_of(body))
        self.clock.advance()
        return message_id

    def send_changes(self, count: int, keys: int = 3) -> list[str]:
        kinds = ("created", "deleted")
        return [self.send(object_event(self.rng, kinds[i % 2], f"{PREFIX}doc-{i % keys}.md")) for i in range(count)]

    def sync(self, context: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = rag_ingest.handler.handler(SYNC, cast(Any, context or SimContext()))
        return result

    def advance(self, seconds: float) -> None:
        self.clock.advance(int(seconds * 1000))

    def _messages(self, name: str) -> list[Any]:
        return list(sqs_backends[ACCOUNT][REGION].get_queue(name)._messages)

    def receive_counts(self) -> list[int]:
        return [m.approximate_receive_count for m in self._messages("changes")]

    def visible(self) -> list[bool]:
        return [m.visible for m in self._messages("changes")]

    def queued_bodies(self) -> list[str]:
        return [m.body for m in self._messages("changes")]

    def dead_letter_bodies(self) -> list[str]:
        return [m.body for m in self._messages("changes-dlq")]

    def start_outcomes(self) -> list[str]:
        return [attempt.outcome for attempt in self.agent.start_attempts]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    clock = SimClock()
    with mock_aws(), moto_sqs_on(clock):
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, dlq_url = create_queues(sqs)
        monkeypatch.setenv("QUEUE_URL", queue_url)
        agent = FakeBedrockAgent(clock)
        tracker = Tracker(clock, agent)
        function_sqs = RecordingSQS(sqs, tracker)
        monkeypatch.setattr(aws, "get_sqs_client", lambda: function_sqs)
        monkeypatch.setattr(aws, "get_agent_client", lambda: agent)
        yield World(clock, sqs, queue_url, dlq_url, agent, tracker, function_sqs, random.Random(3))


# --- the burst ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def burst() -> ingest_burst.BurstResult:
    return ingest_burst.run_burst()


def test_burst_of_1000_changes_needs_at_most_three_starts_and_loses_nothing(burst: ingest_burst.BurstResult) -> None:
    assert burst.events_in == 1000
    assert burst.start_calls <= 3
    assert 1 <= burst.jobs_started <= burst.start_calls
    assert burst.lost == 0
    assert burst.deleted_before_cover == 0
    assert burst.queue_left == 0
    assert burst.receives_while_job_running == 0
    assert burst.busy_syncs >= 2  # the burst really met a running job and a conflict


def test_burst_every_change_is_covered_by_a_job_started_after_it_was_sent(burst: ingest_burst.BurstResult) -> None:
    trace = burst.trace
    assert trace is not None
    assert len(trace.change_sent_ms) == burst.events_in
    function_jobs = [job for job in trace.jobs if job.by == "function"]
    for change_id, sent_ms in trace.change_sent_ms.items():
        assert any(job.started_ms > sent_ms for job in trace.jobs), change_id
    # The function's own jobs alone cover every change it deleted, and every deletion came after that start.
    for change_id, deleted_ms in trace.deletions:
        sent_ms = trace.change_sent_ms[change_id]
        assert any(sent_ms < job.started_ms <= deleted_ms for job in function_jobs), change_id
    assert {change_id for change_id, _ in trace.deletions} == set(trace.change_sent_ms)


def test_burst_met_a_running_job_and_a_real_conflict(burst: ingest_burst.BurstResult) -> None:
    trace = burst.trace
    assert trace is not None
    outcomes = [attempt.outcome for attempt in trace.start_attempts]
    assert outcomes[0] == "ConflictException"
    assert outcomes.count("started") == burst.jobs_started
    assert [job.by for job in trace.jobs][:2] == ["external", "external"]  # running at t0, and the race
    for attempt in trace.start_attempts:
        assert attempt.description is not None
        assert attempt.description.endswith("changes")


def test_burst_dead_letters_exactly_the_poison_messages(burst: ingest_burst.BurstResult) -> None:
    trace = burst.trace
    assert trace is not None
    assert burst.poison_in == 20
    assert sorted(trace.dead_letter_bodies) == sorted(trace.poison_bodies)
    assert burst.dead_lettered == burst.poison_in
    assert burst.dead_lettered_changes == 0
    assert burst.poison_deleted == 0


def test_burst_main_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert ingest_burst.main(["--events", "120", "--poison", "3", "--waves", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("events in", "jobs started", "lost", "wall time"):
        assert label in out
    assert "120" in out


def test_burst_with_another_seed_and_shape(capsys: pytest.CaptureFixture[str]) -> None:
    result = ingest_burst.run_burst(300, waves=3, poison=6, keys=5, seed=11, wave_interval_s=200)
    assert (result.lost, result.deleted_before_cover, result.queue_left) == (0, 0, 0)
    assert (result.dead_lettered, result.dead_lettered_changes) == (6, 0)
    assert result.start_calls <= 4


# --- sync, step by step ------------------------------------------------------------------------------------


def test_empty_queue_makes_no_bedrock_call(world: World) -> None:
    assert world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
    assert world.agent.calls == []
    assert world.tracker.receive_calls == []


def test_busy_data_source_receives_nothing(world: World) -> None:
    running = world.agent.add_job(started_ms=world.clock.now_ms - 10_000)
    world.send_changes(5)

    result = world.sync()

    assert result["busy"] is True
    assert result["started"] is False
    assert result["runningJobId"] == running.job_id
    assert result["reason"] == f"ingestion job {running.job_id} is IN_PROGRESS"
    assert world.tracker.receive_calls == []
    assert world.receive_counts() == [0] * 5
    assert [op for op, _ in world.agent.calls] == ["ListIngestionJobs"]
    assert world.agent.calls[0][1]["filters"] == [
        {"attribute": "STATUS", "operator": "EQ", "values": ["STARTING", "IN_PROGRESS", "STOPPING"]}
    ]


def test_starting_job_also_counts_as_busy(world: World) -> None:
    world.agent.add_job(started_ms=world.clock.now_ms)
    world.send_changes(1)
    assert world.sync()["reason"].endswith("is STARTING")
    assert world.receive_counts() == [0]


def test_changes_are_coalesced_into_one_job_then_deleted(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ids = world.send_changes(25, keys=4)
    world.send(poison_bodies(world.rng, 1)[0])

    result = world.sync()

    job = world.agent.jobs[-1]
    assert result == {
        "action": "sync",
        "started": True,
        "busy": False,
        "jobId": job.job_id,
        "changes": 25,
        "objects": 4,
        "poison": 1,
        "deleted": 25,
        "deleteFailed": 0,
        "requeued": 0,
        "released": 0,
    }
    assert job.description == "25 changes"
    assert job.client_token == ingestion.client_token([ingestion.QueuedMessage(i, "", "", 0, 0) for i in reversed(ids)])
    assert len(world.queued_bodies()) == 1  # only the poison message is left
    emf = emf_documents(capsys.readouterr().out)[-1]
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["KnowledgeBaseId", "service"]]
    assert (emf["KnowledgeBaseId"], emf["service"]) == (KNOWLEDGE_BASE_ID, SERVICE)
    values = {
        name: emf[name] for name in ("ChangesCoalesced", "IngestionJobsStarted", "IngestionBusy", "PoisonMessages")
    }
    assert values == {
        "ChangesCoalesced": [25.0],
        "IngestionJobsStarted": [1.0],
        "IngestionBusy": [0.0],
        "PoisonMessages": [1.0],
    }


def test_single_change_description(world: World) -> None:
    world.send_changes(1)
    world.sync()
    assert world.agent.jobs[-1].description == "1 change"


@pytest.mark.parametrize("code", ["ConflictException", "ThrottlingException", "ServiceQuotaExceededException"])
def test_busy_answer_on_start_deletes_nothing_and_the_next_sync_starts(world: World, code: str) -> None:
    if code == "ConflictException":
        world.agent.race_next_start(duration_ms=90_000)  # another job starts just before ours: a real conflict
    else:
        world.agent.fail_next_start(code)
    world.send_changes(12)

    result = world.sync()

    assert result["busy"] is True
    assert result["reason"] == f"StartIngestionJob answered {code}"
    assert (result["changes"], result["deleted"], result["released"]) == (12, 0, 12)
    assert world.tracker.deletions == []
    assert world.receive_counts() == [1] * 12
    world.advance(59)
    assert not any(world.visible())
    world.advance(2)
    assert all(world.visible())  # the messages come back after 60 s, not after the run's visibility timeout

    world.advance(120)  # the racing job, if any, has finished
    result = world.sync()

    assert result["started"] is True
    assert result["deleted"] == 12
    assert world.queued_bodies() == []
    assert world.start_outcomes() == [code, "started"]
    started = world.agent.jobs[-1].started_ms
    assert all(sent < started for sent in world.tracker.change_sent_ms.values())


def test_other_aws_error_is_raised_nothing_deleted_and_changes_come_back(world: World, logs: io.StringIO) -> None:
    world.agent.fail_next_start("AccessDeniedException")
    world.send_changes(3)

    with pytest.raises(ClientError) as raised:
        world.sync()

    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    assert world.tracker.deletions == []
    world.advance(61)
    assert world.visible() == [True] * 3
    [failure] = [r for r in records(logs) if r["message"] == "StartIngestionJob failed: the changes stay queued"]
    assert (failure["level"], failure["aws_error_code"], failure["changes"]) == ("ERROR", "AccessDeniedException", 3)


def test_repeated_busy_answers_never_dead_letter_a_change(world: World) -> None:
    """Six quota errors in a row: every change is received six times, yet none reaches the DLQ."""
    for _ in range(6):
        world.agent.fail_next_start("ServiceQuotaExceededException")
    world.send_changes(4)
    original = sorted(world.queued_bodies())

    requeued = 0
    for _ in range(6):
        result = world.sync()
        assert result["busy"] is True
        requeued += result["requeued"]
        assert max(world.receive_counts()) <= ingestion.REQUEUE_AT_RECEIVE_COUNT
        world.advance(61)

    assert requeued >= 4
    assert world.dead_letter_bodies() == []
    assert sorted(world.queued_bodies()) == original  # the same changes, as fresh copies
    result = world.sync()
    assert (result["started"], result["changes"]) == (True, 4)
    assert world.queued_bodies() == []
    assert world.tracker.deleted_before_cover == 0


def test_a_refused_requeue_still_releases_the_changes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sqs:SendMessage the requeue fails; the changes are released and stay queued all the same."""
    for _ in range(3):
        world.agent.fail_next_start("ThrottlingException")
    world.send_changes(2)

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "SendMessageBatch")

    monkeypatch.setattr(world.function_sqs, "send_message_batch", refuse)
    results = []
    for _ in range(3):
        results.append(world.sync())
        world.advance(61)

    assert [(r["requeued"], r["released"]) for r in results] == [(0, 2), (0, 2), (0, 2)]
    assert world.receive_counts() == [3, 3]
    assert world.tracker.deletions == []
    assert world.sync()["deleted"] == 2


def test_poison_is_logged_with_the_reason_and_reaches_the_dead_letter_queue(world: World, logs: io.StringIO) -> None:
    bodies = poison_bodies(world.rng, 6)
    for body in bodies:
        world.send(body)

    for _ in range(6):
        result = world.sync()
        assert result["started"] is False
        world.advance(151)  # the run's visibility timeout: remaining time (120 s) + 30 s

    assert world.agent.start_attempts == []
    assert sorted(world.dead_letter_bodies()) == sorted(bodies)
    assert world.queued_bodies() == []
    warnings = [r for r in records(logs) if r["message"] == "Poison message: left for the dead-letter queue"]
    reasons = {r["reason"] for r in warnings}
    assert "the body is not valid JSON" in reasons
    assert "the body is not a JSON object" in reasons
    assert any(reason.startswith("bucket 'someone-elses-bucket'") for reason in reasons)
    assert any("outside the documents prefix" in reason for reason in reasons)
    assert all(r["level"] == "WARNING" and r["message_id"] for r in warnings)


def test_received_messages_stay_hidden_longer_than_the_run(world: World) -> None:
    world.send(poison_bodies(world.rng, 1)[0])
    world.sync(SimContext(remaining_ms=100_000))

    world.advance(129)
    assert world.visible() == [False]
    world.advance(2)
    assert world.visible() == [True]


def test_cap_limits_one_run(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_MESSAGES_PER_RUN", "15")
    world.send_changes(40)

    result = world.sync()

    assert (result["changes"], result["deleted"]) == (15, 15)
    assert len(world.queued_bodies()) == 25


def test_time_budget_stops_the_drain(world: World) -> None:
    world.send_changes(50)

    class Shrinking(SimContext):
        def get_remaining_time_in_millis(self) -> int:
            self.remaining_ms -= 1_000
            return self.remaining_ms

    # 1 s passes per look at the clock: 22.5 s left when the run starts (visibility), then 21.5 s and 20.5 s
    # before the two receives, then 19.5 s, under the 20 s kept for the start and the deletes.
    result = world.sync(Shrinking(remaining_ms=ingestion.DRAIN_RESERVE_MS + 3_500))

    assert len(world.tracker.receive_calls) == 2
    assert (result["changes"], result["deleted"]) == (20, 20)
    assert len(world.queued_bodies()) == 30


def test_a_failed_delete_is_retried_and_a_sender_fault_is_reported(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.send_changes(3)
    real = world.function_sqs.delete_message_batch
    calls: list[list[str]] = []

    def flaky(**params: Any) -> dict[str, Any]:
        ids = [entry["Id"] for entry in params["Entries"]]
        calls.append(ids)
        if len(calls) == 1:  # first attempt: entry 0 fails on the server side, entry 1 by our fault
            keep = [e for e in params["Entries"] if e["Id"] not in ("0", "1")]
            response = real(QueueUrl=params["QueueUrl"], Entries=keep)
            response["Failed"] = [
                {"Id": "0", "SenderFault": False, "Code": "InternalError", "Message": "try again"},
                {"Id": "1", "SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": "bad handle"},
            ]
            return response
        return real(**params)

    monkeypatch.setattr(world.function_sqs, "delete_message_batch", flaky)

    result = world.sync()

    assert calls == [["0", "1", "2"], ["0"]]
    assert (result["deleted"], result["deleteFailed"]) == (2, 1)


def test_client_token_is_stable_order_free_and_valid() -> None:
    messages = [ingestion.QueuedMessage(f"id-{i}", "", "", 0, 0) for i in range(3)]
    token = ingestion.client_token(messages)
    assert token == ingestion.client_token(list(reversed(messages)))
    assert token != ingestion.client_token(messages[:2])
    agent = FakeBedrockAgent(SimClock())
    params = {"knowledgeBaseId": KNOWLEDGE_BASE_ID, "dataSourceId": DATA_SOURCE_ID, "clientToken": token}
    agent.start_ingestion_job(**params, description="3 changes")
    again = agent.start_ingestion_job(**params, description="3 changes")  # a retried call: the same job
    assert again["ingestionJob"]["ingestionJobId"] == agent.jobs[0].job_id
    assert [a.outcome for a in agent.start_attempts] == ["started", "idempotent"]


# --- overlapping runs (no reserved concurrency) -------------------------------------------------------------
# The function is not limited to one concurrent run: the hourly reconcile and the sync schedule can fire at the
# same moment, and a retried or slow run can meet the next one. A second run may start at any step of the first;
# Bedrock runs one job per data source, so at most one of two overlapping starts succeeds, and a message is only
# deleted by the run whose own job started after the message was sent.

OVERLAP_POINTS = ("receive", "start", "delete")


def _run_inside(world: World, monkeypatch: pytest.MonkeyPatch, point: str) -> list[dict[str, Any]]:
    """Run a second sync (with 3 fresh changes sent just before it) inside run A's first call at ``point``."""
    inner: list[dict[str, Any]] = []
    target, name = {
        "receive": (world.function_sqs, "receive_message"),
        "start": (world.agent, "start_ingestion_job"),
        "delete": (world.function_sqs, "delete_message_batch"),
    }[point]
    real = getattr(target, name)

    def overlapped(**params: Any) -> Any:
        if not inner:
            inner.append({})  # only the first call of run A is overlapped (and not run B's own calls)
            if point == "receive":
                answer = real(**params)  # A already holds its first batch when B starts
                world.send_changes(3, keys=3)
                inner[0] = world.sync()
                return answer
            world.send_changes(3, keys=3)
            inner[0] = world.sync()
        return real(**params)

    monkeypatch.setattr(target, name, overlapped)
    return inner


@pytest.mark.parametrize("point", OVERLAP_POINTS)
def test_overlapping_runs_lose_no_change_and_delete_each_once(
    world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    # Given 14 queued changes, and a second run B that starts while run A is at ``point``
    sent = world.send_changes(14, keys=7)
    inner = _run_inside(world, monkeypatch, point)

    # When A finishes, then the schedule keeps running every 5 minutes until the queue is empty
    outer = world.sync()
    [b] = inner
    results = [outer]
    for _ in range(6):
        if not world.queued_bodies():
            break
        world.advance(300)
        results.append(world.sync())

    # Then at most one of the two overlapping starts succeeded; the other run was told "busy"
    assert [outer["started"], b["started"]].count(True) == 1
    assert True in (outer.get("busy"), b.get("busy"))
    # every change (A's 14, B's 3) was deleted exactly once, and only after a job that started after it was sent
    assert len(world.tracker.change_sent_ms) == len(sent) + 3
    deleted = [change_id for change_id, _ in world.tracker.deletions]
    assert sorted(deleted) == sorted(world.tracker.change_sent_ms)
    assert world.tracker.deleted_before_cover == 0
    assert world.queued_bodies() == [] and world.dead_letter_bodies() == []
    # two runs that overlapped cost at most one extra job
    assert sum(1 for job in world.agent.jobs if job.by == "function") <= 2


def test_a_run_that_meets_a_running_job_of_an_overlapping_run_receives_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.send_changes(5)
    inner = _run_inside(world, monkeypatch, "delete")  # B starts after A's job started, before A deletes

    outer = world.sync()

    [b] = inner
    assert outer["started"] is True and outer["deleted"] == 5
    assert b["busy"] is True and b["runningJobId"] == outer["jobId"]
    assert b["changes"] == 0  # B drained nothing: it stopped at the running job
    assert world.receive_counts() == [0, 0, 0]  # B's own three changes wait, untouched, for the next run


# --- non-schedule events and configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "sync",
        {},
        {"action": "drain"},
        {"action": "sync", "extra": 1},
        {"Records": [{"eventSource": "aws:sqs", "body": "{}"}]},
        json.loads(object_event(random.Random(1), "created", f"{PREFIX}a.md")),
        {"httpMethod": "POST", "path": "/ask", "requestContext": {}},
    ],
)
def test_non_schedule_event_is_a_graceful_error(world: World, event: Any, logs: io.StringIO) -> None:
    world.send_changes(1)

    result = rag_ingest.handler.handler(event, cast(Any, SimContext()))

    assert set(result) == {"error"}
    assert result["error"]["code"] == "unsupported_event"
    assert '{"action": "sync"}' in result["error"]["message"]
    assert world.agent.calls == []
    assert world.tracker.receive_calls == []
    assert [r["message"] for r in records(logs)] == ["Unsupported event"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUEUE_URL", None),
        ("QUEUE_URL", "changes"),
        ("KNOWLEDGE_BASE_ID", None),
        ("KNOWLEDGE_BASE_ID", "kb-1"),
        ("DATA_SOURCE_ID", "TOO-LONG-ID-1"),
        ("DOCUMENTS_BUCKET", "Not_A_Bucket"),
        ("MAX_MESSAGES_PER_RUN", "0"),
        ("MAX_MESSAGES_PER_RUN", "lots"),
        ("POWERTOOLS_METRICS_NAMESPACE", None),
    ],
)
def test_configuration_error_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError) as raised:
        rag_ingest.handler.handler(SYNC, cast(Any, SimContext()))

    assert name in raised.value.message


def test_settings_defaults() -> None:
    parsed = settings.get_settings()
    assert (parsed.documents_prefix, parsed.max_messages_per_run, parsed.service_name) == (PREFIX, 10_000, SERVICE)


def test_module_imports_without_env_and_without_boto3() -> None:
    code = "import sys, rag_ingest.handler; assert 'boto3' not in sys.modules; print('ok')"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(LAMBDAS_DIR)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_clients_are_lazy_cached_with_short_timeouts() -> None:
    for factory, service in ((aws.get_sqs_client, "sqs"), (aws.get_agent_client, "bedrock-agent")):
        client = factory()
        assert factory() is client
        assert client.meta.service_model.service_name == service
        assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 10)
        assert client.meta.config.retries == {"total_max_attempts": 3, "mode": "standard"}


def test_tracer_in_lambda_annotates_the_action(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class FakeTracer:
        def capture_lambda_handler(self, fn: Any, capture_response: bool = True) -> Any:
            seen["capture_response"] = capture_response
            return fn

        def put_annotation(self, key: str, value: Any) -> None:
            seen[key] = value

    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setattr("common.observability.Tracer", FakeTracer)

    assert world.sync()["reason"] == "no pending changes"
    assert seen == {"capture_response": False, "Action": "sync"}


# --- reading messages --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "detail_type"), [("created", "Object Created"), ("deleted", "Object Deleted")])
def test_parse_change_reads_eventbridge_s3_events(kind: str, detail_type: str) -> None:
    body = object_event(random.Random(2), kind, f"{PREFIX}a b/ü.md")
    event = json.loads(body)
    assert event["detail-type"] == detail_type
    assert parse_change(body, bucket=BUCKET, prefix=PREFIX) == Change(kind, BUCKET, f"{PREFIX}a b/ü.md", event["id"])
    assert parse_change(body, bucket=BUCKET).key == f"{PREFIX}a b/ü.md"  # no prefix: the whole bucket


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "the body is not valid JSON"),
        ("{", "the body is not valid JSON"),
        ("null", "the body is not valid JSON"),
        ("[1]", "the body is not a JSON object"),
        ('{"source": "aws.s3"}', "detail-type is null, not Object Created or Object Deleted"),
        ('{"source": "aws.ec2", "detail-type": "Object Created"}', "source is 'aws.ec2', not aws.s3"),
        (
            '{"source": "aws.s3", "detail-type": "Object Restore Completed"}',
            "detail-type is 'Object Restore Completed'",
        ),
        ('{"source": "aws.s3", "detail-type": "Object Created", "detail": []}', "detail.bucket.name is missing"),
        (
            json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": BUCKET}}}),
            "detail.object.key is missing",
        ),
        (
            object_event(random.Random(1), "created", f"{PREFIX}a", bucket="other"),
            "bucket 'other' is not the documents",
        ),
        (object_event(random.Random(1), "created", "elsewhere/a"), "key 'elsewhere/a' is outside the documents prefix"),
    ],
)
def test_parse_change_rejects_poison_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse_change(body, bucket=BUCKET, prefix=PREFIX)
    assert raised.value.reason.startswith(reason)


# --- the fake bedrock-agent is itself checked --------------------------------------------------------------


def test_fake_agent_rejects_requests_the_real_model_rejects() -> None:
    agent = FakeBedrockAgent(SimClock())
    base = {"knowledgeBaseId": KNOWLEDGE_BASE_ID, "dataSourceId": DATA_SOURCE_ID}
    for bad in (
        {**base, "clientToken": "short"},
        {**base, "clientToken": "x" * 40 + "_"},
        {**base, "description": "d" * 201},
        {"knowledgeBaseId": "kb", "dataSourceId": DATA_SOURCE_ID},
        {**base, "unknown": 1},
    ):
        with pytest.raises(ParamValidationError):
            agent.start_ingestion_job(**bad)
    with pytest.raises(ParamValidationError):
        agent.list_ingestion_jobs(**base, filters=[{"attribute": "STATUS", "operator": "IN", "values": []}])
    assert agent.jobs == []


def test_fake_agent_jobs_progress_and_conflict() -> None:
    clock = SimClock()
    agent = FakeBedrockAgent(clock, job_duration_ms=60_000)
    base = {"knowledgeBaseId": KNOWLEDGE_BASE_ID, "dataSourceId": DATA_SOURCE_ID}
    job = agent.start_ingestion_job(**base, clientToken="a" * 40)["ingestionJob"]
    assert job["status"] == "STARTING"
    with pytest.raises(agent.exceptions.ConflictException) as conflict:
        agent.start_ingestion_job(**base, clientToken="b" * 40)
    assert isinstance(conflict.value, ClientError)
    assert conflict.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    clock.advance(10_000)
    assert (
        agent.get_ingestion_job(**base, ingestionJobId=job["ingestionJobId"])["ingestionJob"]["status"] == "IN_PROGRESS"
    )
    clock.advance(60_000)
    assert agent.get_ingestion_job(**base, ingestionJobId=job["ingestionJobId"])["ingestionJob"]["status"] == "COMPLETE"
    assert agent.start_ingestion_job(**base, clientToken="c" * 40)["ingestionJob"]["status"] == "STARTING"


def test_strict_validation_checks_what_botocore_skips() -> None:
    shape = (
        boto3.client("bedrock-agent", region_name=REGION)
        .meta.service_model.operation_model("StartIngestionJob")
        .input_shape
    )
    validate_strict({"knowledgeBaseId": "ABCDEFGHIJ", "dataSourceId": "ABCDEFGHIJ", "clientToken": "a" * 33}, shape)
    with pytest.raises(ParamValidationError, match="above the maximum 200"):
        validate_strict(
            {"knowledgeBaseId": "ABCDEFGHIJ", "dataSourceId": "ABCDEFGHIJ", "description": "d" * 201}, shape
        )
    with pytest.raises(ParamValidationError, match="does not match"):
        validate_strict({"knowledgeBaseId": "ABCDEFGHIJK", "dataSourceId": "ABCDEFGHIJ"}, shape)


# --- reconcile (botocore Stubber on the real bedrock-agent client) -----------------------------------------


@pytest.fixture
def agent_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, World]]:
    clock = SimClock()
    with mock_aws(), moto_sqs_on(clock):
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, dlq_url = create_queues(sqs)
        monkeypatch.setenv("QUEUE_URL", queue_url)
        client = boto3.client("bedrock-agent", region_name=REGION)
        fake = FakeBedrockAgent(clock)
        tracker = Tracker(clock, fake)
        function_sqs = RecordingSQS(sqs, tracker)
        monkeypatch.setattr(aws, "get_sqs_client", lambda: function_sqs)
        monkeypatch.setattr(aws, "get_agent_client", lambda: client)
        with Stubber(client) as stub:
            yield stub, World(clock, sqs, queue_url, dlq_url, fake, tracker, function_sqs, random.Random(5))
            stub.assert_no_pending_responses()


DATA_SOURCE = {"knowledgeBaseId": KNOWLEDGE_BASE_ID, "dataSourceId": DATA_SOURCE_ID}
NEWEST = {**DATA_SOURCE, "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"}, "maxResults": 1}
STARTED = datetime(2027, 1, 1, 10, 0, tzinfo=UTC)
UPDATED = datetime(2027, 1, 1, 10, 7, tzinfo=UTC)


def job_detail(status: str, **extra: Any) -> dict[str, Any]:
    return {
        **DATA_SOURCE,
        "ingestionJobId": "JOB0000042",
        "status": status,
        "startedAt": STARTED,
        "updatedAt": UPDATED,
        **extra,
    }


def stub_newest(stub: Stubber, status: str, **extra: Any) -> None:
    summary = {k: v for k, v in job_detail(status).items()}
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [summary]}, NEWEST)
    stub.add_response(
        "get_ingestion_job",
        {"ingestionJob": job_detail(status, **extra)},
        {**DATA_SOURCE, "ingestionJobId": "JOB0000042"},
    )


STATISTICS = {
    "numberOfDocumentsScanned": 120,
    "numberOfMetadataDocumentsScanned": 0,
    "numberOfNewDocumentsIndexed": 30,
    "numberOfModifiedDocumentsIndexed": 12,
    "numberOfMetadataDocumentsModified": 0,
    "numberOfDocumentsDeleted": 5,
    "numberOfDocumentsFailed": 2,
    "numberOfDocumentsSkipped": 71,
}
REASONS = ["s3://kit-documents-sim/docs/big.pdf: file exceeds 50 MB", "s3://kit-documents-sim/docs/x.bin: unsupported"]


def test_reconcile_reports_the_newest_job_metrics_and_failure_reasons(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "COMPLETE", statistics=STATISTICS, failureReasons=REASONS)

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result == {
        "action": "reconcile",
        "sync": {"action": "sync", "started": False, "reason": "no pending changes"},
        "job": {
            "jobId": "JOB0000042",
            "status": "COMPLETE",
            "startedAt": STARTED.isoformat(),
            "updatedAt": UPDATED.isoformat(),
            "statistics": {"scanned": 120, "indexed": 42, "deleted": 5, "failed": 2},
            "failureReasons": REASONS,
            "failureReasonCount": 2,
        },
    }
    sync_doc, job_doc = emf_documents(capsys.readouterr().out)
    assert sync_doc["IngestionJobsStarted"] == [0.0]
    assert job_doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["KnowledgeBaseId", "service"]]
    assert {
        name: job_doc[name]
        for name in (
            "DocumentsScanned",
            "DocumentsIndexed",
            "DocumentsDeleted",
            "DocumentsFailed",
            "IngestionJobFailed",
        )
    } == {
        "DocumentsScanned": [120.0],
        "DocumentsIndexed": [42.0],
        "DocumentsDeleted": [5.0],
        "DocumentsFailed": [2.0],
        "IngestionJobFailed": [0.0],
    }
    [reasons] = [r for r in records(logs) if r["message"] == "Ingestion job failure reasons"]
    assert (reasons["level"], reasons["job_id"], reasons["failure_reasons"]) == ("WARNING", "JOB0000042", REASONS)


def test_reconcile_failed_job_counts_as_failed_and_logs_an_error(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "FAILED", failureReasons=["The knowledge base role cannot read the bucket."])

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result["job"]["status"] == "FAILED"
    job_doc = emf_documents(capsys.readouterr().out)[-1]
    assert job_doc["IngestionJobFailed"] == [1.0]
    assert job_doc["DocumentsScanned"] == [0.0]
    [reasons] = [r for r in records(logs) if r["message"] == "Ingestion job failure reasons"]
    assert reasons["level"] == "ERROR"
    assert reasons["failure_reasons"] == ["The knowledge base role cannot read the bucket."]


def test_reconcile_does_not_report_a_running_job(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str]
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "IN_PROGRESS", statistics=STATISTICS)

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result["job"]["status"] == "IN_PROGRESS"
    [sync_doc] = emf_documents(capsys.readouterr().out)
    assert "DocumentsScanned" not in sync_doc


def test_reconcile_without_any_job(agent_stub: tuple[Stubber, World]) -> None:
    stub, _ = agent_stub
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, NEWEST)

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result["job"] is None


def test_reconcile_runs_the_sync_first_and_still_reports_when_it_fails(
    agent_stub: tuple[Stubber, World], logs: io.StringIO
) -> None:
    stub, world = agent_stub
    world.send_changes(2)
    running = {"attribute": "STATUS", "operator": "EQ", "values": ["STARTING", "IN_PROGRESS", "STOPPING"]}
    stub.add_response(
        "list_ingestion_jobs", {"ingestionJobSummaries": []}, {**DATA_SOURCE, "filters": [running], "maxResults": 10}
    )
    stub.add_client_error("start_ingestion_job", "ValidationException", "bad", 400)
    stub_newest(stub, "COMPLETE", statistics=STATISTICS)

    with pytest.raises(ClientError):
        rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    messages = [r["message"] for r in records(logs)]
    assert "StartIngestionJob failed: the changes stay queued" in messages
    assert "Ingestion job report" in messages
    assert world.tracker.deletions == []


def test_reconcile_raises_the_sync_error_when_the_report_fails_too(agent_stub: tuple[Stubber, World]) -> None:
    stub, world = agent_stub
    world.send_changes(1)
    running = {"attribute": "STATUS", "operator": "EQ", "values": ["STARTING", "IN_PROGRESS", "STOPPING"]}
    stub.add_response(
        "list_ingestion_jobs", {"ingestionJobSummaries": []}, {**DATA_SOURCE, "filters": [running], "maxResults": 10}
    )
    stub.add_client_error("start_ingestion_job", "ValidationException", "bad", 400)
    stub.add_client_error("list_ingestion_jobs", "InternalServerException", "later", 500)

    with pytest.raises(ClientError) as raised:
        rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert raised.value.response["Error"]["Code"] == "ValidationException"
