"""Behaviour of the Level 2 ingest function, offline.

SQS is moto (a real queue with a redrive policy to a dead-letter queue after 5 receives) on a simulated
clock; bedrock-agent is the fake of ``scripts/ingest_burst.py`` (every request checked against botocore's
service model, jobs STARTING -> IN_PROGRESS -> COMPLETE, a real ConflictException while a job runs), except
for ``reconcile``, where a botocore Stubber on the real client returns the job statistics.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlparse

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from moto import mock_aws
from moto.sqs.models import sqs_backends

import rag_ingest.handler
from common.errors import ConfigurationError
from rag_ingest import aws, ingestion, settings
from rag_ingest.changes import Change, PoisonMessage, covered, parse_change
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
from stacks.level2_rag.settings import RagSettings
from stacks.shared.python_function import stage_function_code
from tests.lambda_helpers import emf_documents

NAMESPACE = "GenAiKitTest"
SERVICE = "rag-ingest-test"
# The function's asset as Lambda sees it: its package and lambdas/common side by side.
ASSET_DIR = stage_function_code("rag_ingest")
SYNC = {"action": "sync"}
RECONCILE = {"action": "reconcile"}
DATA_SOURCE = {"knowledgeBaseId": KNOWLEDGE_BASE_ID, "dataSourceId": DATA_SOURCE_ID}
# The stack's digest of the data source's properties (DATA_SOURCE_REVISION), and the tag jobs carry it in.
REVISION = ingest_burst.DATA_SOURCE_REVISION
TAGGED = f" [revision {REVISION}]"
HISTORY = {
    **DATA_SOURCE,
    "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"},
    "maxResults": ingestion.JOB_PAGE_SIZE,
}
FULL_SYNC_SALT = f"full-sync:{KNOWLEDGE_BASE_ID}:{DATA_SOURCE_ID}:{REVISION}:"
RUNNING_FILTER = {"attribute": "STATUS", "operator": "EQ", "values": ["STARTING", "IN_PROGRESS", "STOPPING"]}


clear_caches = ingest_burst.clear_function_caches


@pytest.fixture(autouse=True)
def ingest_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The function's environment (QUEUE_URL is set by the ``world`` fixture); fresh lazy caches."""
    env = ingest_burst.function_env("https://sqs.us-east-1.amazonaws.com/123456789012/unset")
    env.update(POWERTOOLS_SERVICE_NAME=SERVICE, POWERTOOLS_METRICS_NAMESPACE=NAMESPACE, DATA_SOURCE_REVISION=REVISION)
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
        # Filling the queue is the test's part, not the function's: the message goes straight into moto's backend,
        # which is all moto's SendMessage does for a plain body (without a signed HTTP round trip per message).
        message_id: str = self._queue_backend().send_message(queue_name(self.queue_url), body).id
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

    @staticmethod
    def _queue_backend() -> Any:
        return sqs_backends[ACCOUNT][REGION]

    def _messages(self, name: str) -> list[Any]:
        return list(self._queue_backend().get_queue(name)._messages)

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


PAST_SYNC_MS = 86_400_000  # the seeded world's data source completed a job a day before the test begins


def make_world(monkeypatch: pytest.MonkeyPatch, *, synced: bool) -> Iterator[World]:
    """A world whose data source has completed a job (``synced``), or a new one that never ran a job."""
    with mock_aws():
        yield from world_in(moto_sqs_client(), monkeypatch, synced=synced)


@functools.cache
def moto_sqs_client() -> Any:
    """The SQS client the function is given: a real botocore client (request validation, serialization and
    parsing as the function's own), unsigned, since moto checks no signature (it reads the account from the
    access key, and these credentials are fake: moto's default account either way).

    One client serves every test: moto intercepts a client whatever mock was active when it was made, each test's
    mock starts with empty backends, and the client keeps no state between calls (legacy retries: no quota).
    """
    return boto3.client("sqs", region_name=REGION, config=Config(signature_version=UNSIGNED))


class BackendQueues:
    """The calls of ``create_queues`` made straight on moto's backend, as moto's CreateQueue and GetQueueAttributes
    handlers make them: the queues are the test's set-up, not the function's work (which goes through a client)."""

    @staticmethod
    def create_queue(*, QueueName: str, Attributes: dict[str, str] | None = None) -> dict[str, str]:
        queue = sqs_backends[ACCOUNT][REGION].create_queue(QueueName, None, **(Attributes or {}))
        return {"QueueUrl": queue.url(urlparse(SQS_ENDPOINT))}

    @staticmethod
    def get_queue_attributes(*, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": sqs_backends[ACCOUNT][REGION].get_queue_attributes(queue_name(QueueUrl), AttributeNames)}


def queue_name(queue_url: str) -> str:
    return queue_url.rsplit("/", 1)[-1]


def world_in(sqs: Any, monkeypatch: pytest.MonkeyPatch, *, synced: bool) -> Iterator[World]:
    """A world on fresh queues of an active moto mock (deleted afterwards), on its own simulated clock."""
    clock = SimClock()
    with moto_sqs_on(clock):
        queue_url, dlq_url = create_queues(BackendQueues())
        monkeypatch.setenv("QUEUE_URL", queue_url)
        agent = FakeBedrockAgent(clock)
        if synced:
            past = clock.now_ms - PAST_SYNC_MS
            agent.add_job(started_ms=past, duration_ms=600_000, by="earlier", description=f"1 change{TAGGED}")
        tracker = Tracker(clock, agent)
        function_sqs = RecordingSQS(sqs, tracker)
        monkeypatch.setattr(aws, "get_sqs_client", lambda: function_sqs)
        monkeypatch.setattr(aws, "get_agent_client", lambda: agent)
        monkeypatch.setattr(rag_ingest.handler, "now", clock.datetime)  # the reconcile's window, on the same clock
        try:
            yield World(clock, sqs, queue_url, dlq_url, agent, tracker, function_sqs, random.Random(3))
        finally:
            for url in (queue_url, dlq_url):
                sqs_backends[ACCOUNT][REGION].delete_queue(queue_name(url))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The usual case: a data source in sync (a COMPLETE job in its history)."""
    yield from make_world(monkeypatch, synced=True)


@pytest.fixture
def new_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A data source that has never completed an ingestion job (a new stack, or a replaced data source)."""
    yield from make_world(monkeypatch, synced=False)


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
        assert attempt.description.endswith(f"changes{TAGGED}")


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


def test_empty_queue_of_a_synced_data_source_asks_bedrock_once_per_environment(world: World) -> None:
    for _ in range(3):
        assert world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
        world.advance(300)

    # One look at the job history (is the newest COMPLETE job of this revision?) on the first run, remembered.
    assert world.agent.calls == [("ListIngestionJobs", HISTORY)]
    assert world.tracker.receive_calls == []
    assert world.agent.start_attempts == []


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
    assert [op for op, _ in world.agent.calls] == ["ListIngestionJobs", "ListIngestionJobs"]
    assert world.agent.calls[1][1]["filters"] == [RUNNING_FILTER]


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
        "fullSync": False,
        "changes": 25,
        "objects": 4,
        "outsidePrefix": 0,
        "expiredVersions": 0,
        "poison": 1,
        "deleted": 25,
        "deleteFailed": 0,
        "requeued": 0,
        "released": 0,
    }
    assert job.description == f"25 changes{TAGGED}"
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
    assert world.agent.jobs[-1].description == f"1 change{TAGGED}"


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
    """Six quota errors in a row: every change is refused six times, yet none reaches the DLQ."""
    for _ in range(6):
        world.agent.fail_next_start("ServiceQuotaExceededException")
    world.send_changes(4)
    original = sorted(world.queued_bodies())

    results = []
    while len(results) < 30 and not any(r["started"] for r in results):
        results.append(world.sync())
        assert max(world.receive_counts(), default=0) <= ingestion.REQUEUE_AT_RECEIVE_COUNT
        world.advance(61)

    assert world.start_outcomes() == ["ServiceQuotaExceededException"] * 6 + ["started"]
    assert sum(r.get("requeued", 0) for r in results) >= 4
    # Each change is re-queued by the run that receives it for the REQUEUE_AT_RECEIVE_COUNT-th time, not later
    assert [r["requeued"] for r in results[: ingestion.REQUEUE_AT_RECEIVE_COUNT]] == [0, 0, 4]
    assert world.dead_letter_bodies() == []
    assert results[-1]["changes"] == 4
    assert world.queued_bodies() == []
    assert len(original) == len(world.tracker.change_sent_ms) == 4
    assert all(world.tracker.covered(change, world.clock.now_ms) for change in world.tracker.change_sent_ms)
    assert world.tracker.deleted_before_cover == 0


def test_a_change_requeued_while_ingestion_stays_busy_reports_how_long_it_has_waited(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """StartIngestionJob refused for over a day: every third receive queues a change again as a new message, so
    SQS's age of the oldest message (the stale-change alarm) never nears a day, but the copies carry when the change
    was first queued and each run writes the oldest change's wait (OldestChangeAge, alarmed at 24 hours)."""
    for _ in range(40):
        world.agent.fail_next_start("ServiceQuotaExceededException")
    world.send_changes(2)
    first_queued_ms = world.clock.now_ms
    capsys.readouterr()
    results = []
    for _ in range(26):  # one run an hour for 26 hours, each refused
        results.append(world.sync())
        world.advance(3600)
    assert all(r["busy"] and not r["started"] for r in results)
    assert sum(r["requeued"] for r in results) >= 8  # each change queued again every third run
    # SQS's own age: of the newest copy, hours at most
    oldest_in_queue_ms = min(m.sent_timestamp for m in world._messages("changes"))
    assert world.clock.now_ms - int(oldest_in_queue_ms) < 4 * 3600_000
    waits = [doc["OldestChangeAge"] for doc in emf_documents(capsys.readouterr().out) if "OldestChangeAge" in doc]
    assert len(waits) == len(results)
    assert waits[0] == [0.0]
    ran_last_ms = world.clock.now_ms - 3600_000
    assert waits[-1] == [float(round((ran_last_ms - first_queued_ms) / 1000))]
    assert waits[-1][0] >= 86_400  # the alarm's threshold (STALE_CHANGE_AGE)
    assert world.dead_letter_bodies() == []


def test_a_change_whose_start_keeps_failing_still_reports_how_long_it_has_waited(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """StartIngestionJob refused with an error that is not "busy" (an SCP denying it, say) for over a day: each run
    raises (IngestFunctionErrorsAlarm, once), the changes stay queued and are re-queued every third receive, so
    SQS's age never nears a day. Before: a failed run wrote no metric, so neither 24-hour alarm could fire."""
    for _ in range(40):
        world.agent.fail_next_start("AccessDeniedException")
    world.send_changes(2)
    first_queued_ms = world.clock.now_ms
    capsys.readouterr()
    for _ in range(26):  # one run an hour for 26 hours, each failing
        with pytest.raises(ClientError, match="AccessDeniedException"):
            world.sync()
        world.advance(3600)
    oldest_in_queue_ms = min(m.sent_timestamp for m in world._messages("changes"))
    assert world.clock.now_ms - int(oldest_in_queue_ms) < 4 * 3600_000  # SQS's own age: hours at most
    waits = [doc["OldestChangeAge"] for doc in emf_documents(capsys.readouterr().out) if "OldestChangeAge" in doc]
    assert len(waits) == 26
    ran_last_ms = world.clock.now_ms - 3600_000
    assert waits[-1] == [float(round((ran_last_ms - first_queued_ms) / 1000))]
    assert waits[-1][0] >= 86_400  # the alarm's threshold (STALE_CHANGE_AGE)
    assert world.dead_letter_bodies() == []


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, 0),  # EventBridge's own message: its SentTimestamp is when the change was queued
        ({"FirstQueuedAt": {"DataType": "Number", "StringValue": "1700000000000"}}, 1_700_000_000_000),
        ({"FirstQueuedAt": {"DataType": "Number", "StringValue": "1.7e12"}}, 0),
        ({"FirstQueuedAt": {"DataType": "String", "StringValue": "soon"}}, 0),
        ({"FirstQueuedAt": {"DataType": "Number", "StringValue": "-5"}}, 0),
    ],
)
def test_a_copys_first_queued_time_is_read_only_when_whole(attributes: dict[str, Any], expected: int) -> None:
    raw = {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "Attributes": {"SentTimestamp": "42"}}
    message = ingestion._queued({**raw, "MessageAttributes": attributes})
    assert message.first_queued_ms == expected
    assert message.waiting_since_ms == (expected or 42)


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
    # 10, then the 5 left under the cap; no receive of 0 messages after it (SQS takes 1 to 10:
    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ReceiveMessage.html)
    assert len(world.tracker.receive_calls) == 2


def test_time_budget_stops_the_drain(world: World) -> None:
    world.send_changes(50)

    class Shrinking(SimContext):
        def get_remaining_time_in_millis(self) -> int:
            self.remaining_ms -= 1_000
            return self.remaining_ms

    # 1 s passes per look at the clock: the reserve + 10.5 s left when the run starts (visibility), + 9.5 s when the
    # drain starts, then + 8.5 s to + 5.5 s before the four receives (each leaves more beyond the reserve than the
    # drain has used: 8.5 s over 1 s ... 5.5 s over 4 s), then + 4.5 s, less than the 5 s used. The deletes take one
    # batch call per receive, so they get as long as the drain had.
    result = world.sync(Shrinking(remaining_ms=ingestion.DRAIN_RESERVE_MS + 10_500))

    assert len(world.tracker.receive_calls) == 4
    assert (result["changes"], result["deleted"]) == (40, 40)
    assert len(world.queued_bodies()) == 10


def test_the_drain_keeps_back_the_longest_start_ingestion_job_its_client_may_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: 20 s, while the client's 3 attempts of 3 s connect + 10 s read alone take 39 s: a run killed after the
    start but before the deletes brings its changes back for one more job. Read from the client as built."""
    from rag_ingest import aws
    from stacks.level2_rag.stack import INGEST_TIMEOUT

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.get_agent_client.cache_clear()
    config = aws.get_agent_client().meta.config
    aws.get_agent_client.cache_clear()
    attempts = config.retries["total_max_attempts"]
    # botocore standard mode: a wait of at most 2**i s before retry i+1, plus at most 5 s for x-amz-retry-after
    waits = sum(2**i + 5 for i in range(attempts - 1))
    assert (attempts * (config.connect_timeout + config.read_timeout) + waits) * 1000 <= ingestion.DRAIN_RESERVE_MS
    # ... and the run still has time to drain: the reserve is under half the function's timeout.
    assert INGEST_TIMEOUT.to_seconds() * 1000 / 2 > ingestion.DRAIN_RESERVE_MS


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


# --- the first sync: a data source that has never completed a job -----------------------------------------
# S3 events cannot be relied on for documents that were in the bucket before the data source existed (the sample
# corpus can land before the bucket's EventBridge delivery is active; a replaced data source starts empty), so a
# data source without a COMPLETE job gets a full sync, with or without queued changes.


def test_a_new_data_source_gets_a_full_sync_without_any_queued_change(new_world: World) -> None:
    result = new_world.sync()

    assert (result["started"], result["fullSync"], result["changes"]) == (True, True, 0)
    [job] = new_world.agent.jobs
    assert (job.by, job.description, job.job_id) == ("function", ingestion.FULL_SYNC + TAGGED, result["jobId"])

    new_world.advance(60)
    assert new_world.sync()["reason"] == f"ingestion job {job.job_id} is IN_PROGRESS"  # no second job meanwhile
    new_world.advance(200)  # the job completed: the data source is in sync, the runs go quiet
    assert new_world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
    calls = len(new_world.agent.calls)
    assert new_world.sync()["reason"] == "no pending changes"
    assert len(new_world.agent.calls) == calls  # remembered: no Bedrock call at all any more
    assert len(new_world.agent.jobs) == 1


def test_the_full_sync_coalesces_the_queued_changes_and_deletes_them(new_world: World) -> None:
    new_world.send_changes(3)

    result = new_world.sync()

    assert (result["started"], result["fullSync"], result["changes"], result["deleted"]) == (True, True, 3, 3)
    assert new_world.agent.jobs[-1].description == f"{ingestion.FULL_SYNC}; 3 changes{TAGGED}"
    assert new_world.queued_bodies() == []


def test_a_running_job_of_a_new_data_source_is_waited_for_and_then_counts_as_the_sync(new_world: World) -> None:
    running = new_world.agent.add_job(started_ms=new_world.clock.now_ms - 10_000, description=f"x{TAGGED}")

    result = new_world.sync()

    assert (result["busy"], result["fullSync"], result["runningJobId"]) == (True, True, running.job_id)
    assert new_world.tracker.receive_calls == []
    new_world.advance(300)  # it completed
    assert new_world.sync()["reason"] == "no pending changes"
    assert new_world.agent.start_attempts == []


def test_a_job_without_a_revision_is_waited_for_but_proves_nothing(new_world: World) -> None:
    # Started by someone else (or by the function before revisions): what configuration it ran under is unknown.
    running = new_world.agent.add_job(started_ms=new_world.clock.now_ms - 10_000, by="console")

    assert new_world.sync()["runningJobId"] == running.job_id
    new_world.advance(300)  # it completed
    result = new_world.sync()

    assert (result["started"], result["fullSync"]) == (True, True)
    assert new_world.agent.jobs[-1].description == ingestion.FULL_SYNC + TAGGED


def reconfigure(monkeypatch: pytest.MonkeyPatch, *, prefix: str, revision: str) -> None:
    """A deploy that updated the data source in place: the same id, a new prefix and revision (a new function
    configuration, hence new execution environments)."""
    monkeypatch.setenv("DOCUMENTS_PREFIX", prefix)
    monkeypatch.setenv("DATA_SOURCE_REVISION", revision)
    clear_caches()


NEW_PREFIX, NEW_REVISION = "library/", "fedcba9876543210"


def test_a_new_prefix_on_the_same_data_source_gets_a_full_sync_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.sync()["reason"] == "no pending changes"  # in sync under the old prefix
    reconfigure(monkeypatch, prefix=NEW_PREFIX, revision=NEW_REVISION)

    # The documents already under the new prefix send no S3 event: only a full sync reads them, and it starts
    # with an empty queue on the next sync run, not an hour later.
    result = world.sync()

    assert (result["started"], result["fullSync"], result["changes"]) == (True, True, 0)
    [attempt] = world.agent.start_attempts
    assert attempt.description == f"{ingestion.FULL_SYNC} [revision {NEW_REVISION}]"
    world.advance(300)  # it completed: in sync under the new revision
    assert world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
    assert len(world.agent.start_attempts) == 1


def test_changes_queued_under_the_old_prefix_are_moot_not_poison(
    world: World, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    old = world.send_changes(3)  # queued under the old prefix, not yet drained when the prefix changes
    reconfigure(monkeypatch, prefix=NEW_PREFIX, revision=NEW_REVISION)
    current = world.send(object_event(world.rng, "created", f"{NEW_PREFIX}a.md"))

    result = world.sync()

    # The full sync reads the data source as it is now; a change of a key it no longer covers is moot. The
    # messages go with the job, never to the dead-letter queue (where they would raise the alarm).
    assert (result["started"], result["fullSync"], result["changes"]) == (True, True, 1)
    assert (result["outsidePrefix"], result["poison"], result["deleted"]) == (3, 0, 4)
    assert world.agent.start_attempts[0].description == f"{ingestion.FULL_SYNC}; 1 change [revision {NEW_REVISION}]"
    assert world.agent.start_attempts[0].client_token == ingestion.client_token(
        [ingestion.QueuedMessage(i, "", "", 0, 0) for i in [*old, current]],
        f"full-sync:{KNOWLEDGE_BASE_ID}:{DATA_SOURCE_ID}:{NEW_REVISION}:{world.agent.jobs[0].job_id}",
    )
    assert world.tracker.deleted_before_cover == 0
    assert world.queued_bodies() == world.dead_letter_bodies() == []
    [moot] = [r for r in records(logs) if r["message"].startswith("Changes outside the documents prefix")]
    assert (moot["level"], moot["changes"], moot["keys"]) == ("INFO", 3, [f"{PREFIX}doc-{i}.md" for i in range(3)])


def expired_version_event(rng: random.Random, key: str) -> str:
    """S3's event when the bucket's lifecycle removes an old version for good
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/EventBridge.html)."""
    event = json.loads(object_event(rng, "deleted", key))
    event["detail"]["reason"] = "Lifecycle Expiration"
    return json.dumps(event)


def test_an_old_version_the_lifecycle_removed_starts_no_job(world: World) -> None:
    """The documents bucket expires noncurrent versions after 30 days: each removal is an Object Deleted event, but
    the current document is unchanged, so it starts no job; it goes with the next job that does start."""
    world.send(expired_version_event(world.rng, f"{PREFIX}old.md"))
    world.send(expired_version_event(world.rng, f"{PREFIX}older.md"))
    alone = world.sync()
    assert (alone["started"], alone["reason"], alone["expiredVersions"], alone["deleted"]) == (
        False,
        "no document change received",
        2,
        2,
    )
    assert world.agent.start_attempts == [] and world.queued_bodies() == world.dead_letter_bodies() == []
    # With a real change: one job for that change only, and the removal's message goes with it
    world.send(expired_version_event(world.rng, f"{PREFIX}old.md"))
    world.send_changes(1)
    both = world.sync()
    assert (both["started"], both["changes"], both["expiredVersions"], both["deleted"]) == (True, 1, 1, 2)
    assert world.agent.start_attempts[0].description == f"1 change{TAGGED}"


@pytest.mark.parametrize(
    ("reason", "deletion", "noncurrent"),
    [
        ("Lifecycle Expiration", "Permanently Deleted", True),  # an old version removed for good
        ("Lifecycle Expiration", "Delete Marker Created", False),  # a current version expired: a real delete
        ("DeleteObject", "Permanently Deleted", False),  # a user removed a version, maybe the current one
    ],
)
def test_only_a_lifecycle_permanent_delete_is_an_old_version(reason: str, deletion: str, noncurrent: bool) -> None:
    event = json.loads(object_event(random.Random(3), "deleted", f"{PREFIX}a.md"))
    event["detail"].update({"reason": reason, "deletion-type": deletion})
    assert parse_change(json.dumps(event), bucket=BUCKET).noncurrent is noncurrent
    created = json.loads(object_event(random.Random(3), "created", f"{PREFIX}a.md"))
    created["detail"]["reason"] = reason
    assert parse_change(json.dumps(created), bucket=BUCKET).noncurrent is False


def test_moot_changes_alone_start_no_job_in_sync(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.send_changes(2)
    reconfigure(monkeypatch, prefix=NEW_PREFIX, revision=NEW_REVISION)
    # In sync under the new revision already (its full sync completed) when the old changes are drained.
    done = f"{ingestion.FULL_SYNC} [revision {NEW_REVISION}]"
    world.agent.add_job(started_ms=world.clock.now_ms - 300_000, duration_ms=60_000, description=done)

    result = world.sync()

    assert (result["started"], result["reason"], result["outsidePrefix"], result["deleted"]) == (
        False,
        "no document change received",
        2,
        2,
    )
    assert world.agent.start_attempts == []
    assert world.queued_bodies() == world.dead_letter_bodies() == []


def test_a_configuration_changed_back_during_its_full_sync_gets_a_full_sync_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.send_changes(2)
    reconfigure(monkeypatch, prefix=NEW_PREFIX, revision=NEW_REVISION)
    assert world.sync()["outsidePrefix"] == 2  # the new revision's full sync started; the old changes went with it
    reconfigure(monkeypatch, prefix=PREFIX, revision=REVISION)  # rolled back before that job completed

    # The newest COMPLETE job is of the old revision again, but a job of another revision followed it: the old
    # changes the other revision dropped as moot matter again, and only a full sync covers them.
    assert world.sync()["busy"] is True
    world.advance(300)
    result = world.sync()

    assert (result["started"], result["fullSync"]) == (True, True)
    assert world.agent.start_attempts[-1].description == ingestion.FULL_SYNC + TAGGED
    assert world.tracker.deleted_before_cover == 0


def test_a_failed_full_sync_is_retried_by_the_hourly_reconcile_not_by_every_sync(new_world: World) -> None:
    failed = new_world.agent.add_job(
        started_ms=new_world.clock.now_ms - 600_000, duration_ms=60_000, final_status="FAILED", by="function"
    )

    waiting = new_world.sync()
    assert waiting["started"] is False
    assert waiting["reason"] == f"ingestion job {failed.job_id} ended FAILED; the hourly reconcile retries it"
    assert new_world.agent.start_attempts == []

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert (result["sync"]["started"], result["sync"]["fullSync"]) == (True, True)
    [attempt] = new_world.agent.start_attempts
    assert attempt.outcome == "started"  # a new job, not the failed one answered again for an equal token
    assert attempt.client_token == ingestion.client_token([], FULL_SYNC_SALT + failed.job_id)
    assert result["job"]["jobId"] == failed.job_id  # reported before the retry replaced it as the newest job


# A job of the function that ends FAILED or STOPPED has had its changes' messages deleted when it started: the
# queue no longer holds them, and Bedrock syncs incrementally, so only another job ingests what it left out
# ("select Sync again to ingest the rest of your data", https://docs.aws.amazon.com/bedrock/latest/userguide/kb-managed-sync.html).


@pytest.mark.parametrize("status", ["FAILED", "STOPPED"])
def test_a_job_that_ended_unfinished_after_a_complete_one_is_retried_by_the_reconcile(
    world: World, status: str, capsys: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    # Given the seeded COMPLETE job of this revision, then a job of the function for changes that ended ``status``
    ended = world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000,
        duration_ms=60_000,
        final_status=status,
        by="function",
        description=f"2 changes{TAGGED}",
    )

    # When the sync schedule runs with an empty queue: not "no pending changes", but no job every few minutes
    waiting = world.sync()
    assert (waiting["started"], waiting["fullSync"]) == (False, True)
    assert waiting["reason"] == f"ingestion job {ended.job_id} ended {status}; the hourly reconcile retries it"
    assert world.agent.start_attempts == []

    # When the hourly reconcile runs: it reports the job, then starts a new one (a fresh token, salted with it)
    capsys.readouterr()
    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert (result["job"]["jobId"], result["job"]["status"]) == (ended.job_id, status)
    assert (result["sync"]["started"], result["sync"]["fullSync"]) == (True, True)
    [retry] = world.agent.start_attempts
    assert (retry.outcome, retry.description) == ("started", ingestion.FULL_SYNC + TAGGED)
    assert retry.client_token == ingestion.client_token([], FULL_SYNC_SALT + ended.job_id)
    # A FAILED job raises the alarm; a STOPPED one (someone called StopIngestionJob) is a warning only
    [job_doc] = [doc for doc in emf_documents(capsys.readouterr().out) if "IngestionJobFailed" in doc]
    assert job_doc["IngestionJobFailed"] == [1.0 if status == "FAILED" else 0.0]
    stopped = [r for r in records(logs) if r["message"] == "An ingestion job was stopped before it finished"]
    assert [r["level"] for r in stopped] == (["WARNING"] if status == "STOPPED" else [])

    world.advance(300)  # the retry completed: in sync again, the runs go quiet
    assert world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
    assert len(world.agent.start_attempts) == 1


@pytest.mark.parametrize("status", ["FAILED", "STOPPED"])
def test_the_reconcile_reads_the_history_again_in_an_environment_that_saw_the_data_source_in_sync(
    world: World, status: str
) -> None:
    # Given an environment that saw the data source in sync, then started a job for 2 changes and deleted them
    world.send_changes(2)
    started = world.sync()
    assert (started["started"], started["fullSync"], started["deleted"]) == (True, False, 2)
    [job] = [job for job in world.agent.jobs if job.job_id == started["jobId"]]
    job.final_status = status
    world.advance(300)  # the job ended ``status``; the queue is empty
    # This environment's sync runs still remember the data source in sync (and ask Bedrock nothing)
    calls = len(world.agent.calls)
    assert world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
    assert len(world.agent.calls) == calls

    # When the hourly reconcile runs in the same environment: it reads the history, and syncs again
    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert (result["sync"]["started"], result["sync"]["fullSync"]) == (True, True)
    retry = world.agent.start_attempts[-1]
    assert retry.outcome == "started"
    assert retry.client_token == ingestion.client_token([], FULL_SYNC_SALT + job.job_id)
    world.advance(300)  # the retry completed
    assert world.sync()["reason"] == "no pending changes"
    assert len(world.agent.start_attempts) == 2


def test_an_environment_that_learns_from_the_reconcile_it_is_out_of_sync_forgets_it_was_in_sync(world: World) -> None:
    # Given an environment that saw the data source in sync, whose next job (2 changes) then ended FAILED
    world.send_changes(2)
    started = world.sync()
    [job] = [job for job in world.agent.jobs if job.job_id == started["jobId"]]
    job.final_status = "FAILED"
    world.advance(300)
    assert world.sync()["reason"] == "no pending changes"  # still remembered in sync: Bedrock is not asked
    # When the reconcile finds that out, but its full sync is refused for now
    world.agent.fail_next_start("ServiceQuotaExceededException")
    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))
    assert result["sync"]["busy"] is True and result["sync"]["fullSync"] is True
    # Then this environment's sync runs no longer take the data source for in sync: they read the history, and
    # leave the retry to the next reconcile (not one start every run)
    calls = len(world.agent.calls)
    answer = world.sync()
    assert answer["reason"] == f"ingestion job {job.job_id} ended FAILED; the hourly reconcile retries it"
    assert answer["fullSync"] is True and len(world.agent.calls) > calls


def test_an_unfinished_job_someone_else_started_needs_no_retry(world: World) -> None:
    # A job without our revision deleted no message: whatever it left out is still queued or was ingested.
    world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000, duration_ms=60_000, final_status="FAILED", by="console"
    )

    assert world.sync() == {"action": "sync", "started": False, "reason": "no pending changes"}
    rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))
    assert world.agent.start_attempts == []


# A job can end COMPLETE with failed documents (numberOfDocumentsFailed is separate from its status,
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html), and its changes'
# messages were deleted when it started. A later job indexes a document not indexed yet
# (https://docs.aws.amazon.com/bedrock/latest/userguide/kb-direct-ingestion.html).
BIG = "s3://kit-documents-sim/docs/big.pdf: file exceeds 50 MB"
ONE_FAILED = {"numberOfDocumentsScanned": 3, "numberOfNewDocumentsIndexed": 1, "numberOfDocumentsFailed": 1}


def reconcile() -> dict[str, Any]:
    result: dict[str, Any] = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))
    return result


def documents_failed_metrics(out: str) -> list[list[float]]:
    return [doc["DocumentsFailed"] for doc in emf_documents(out) if "DocumentsFailed" in doc]


def test_the_reconcile_reports_every_job_that_ended_since_its_previous_run(
    world: World, capsys: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    # Given two jobs of the function that ended within the hour: the earlier with failed documents, then a clean one
    now = world.clock.now_ms
    failing = world.agent.add_job(
        started_ms=now - 50 * 60_000,
        duration_ms=60_000,
        by="function",
        description=f"2 changes{TAGGED}",
        statistics={"numberOfDocumentsScanned": 9, "numberOfDocumentsFailed": 2},
        failure_reasons=["s3://kit-documents-sim/docs/" + "x" * 2000, BIG],  # up to 2,048 characters each
    )
    clean = world.agent.add_job(
        started_ms=now - 20 * 60_000,
        duration_ms=60_000,
        by="function",
        description=f"1 change{TAGGED}",
        statistics={"numberOfDocumentsScanned": 9, "numberOfNewDocumentsIndexed": 1},
    )
    capsys.readouterr()

    result = reconcile()

    # Then both are reported, newest first, and not the seeded job that ended a day earlier
    assert result["jobsReported"] == [clean.job_id, failing.job_id]
    assert result["job"]["jobId"] == clean.job_id
    assert documents_failed_metrics(capsys.readouterr().out) == [[0.0], [2.0]]
    [reasons] = [r for r in records(logs) if r["message"] == "Ingestion job failure reasons"]
    assert (reasons["level"], reasons["job_id"], reasons["documents_failed"]) == ("WARNING", failing.job_id, 2)
    assert len(reasons["failure_reasons"][0]) <= 500 and reasons["failure_reasons"][1] == BIG  # trimmed
    # Only the job with failures had its detail read: a summary carries the statistics
    assert [params["ingestionJobId"] for op, params in world.agent.calls if op == "GetIngestionJob"] == [failing.job_id]


def test_a_late_or_retried_reconcile_reports_the_hour_up_to_its_due_time_so_the_windows_meet(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the window ended when the run started. Lambda runs a failed asynchronous invocation again minutes
    later, so a retry covered (T+2min-1h, T+2min] and the next run (T+1h-1h, ...]: a job that ended between T-1h and
    T-1h+2min was in neither. Now each run reports the hour up to its event's due time (to the minute)."""
    due = world.clock.datetime().replace(second=0, microsecond=0) + timedelta(hours=2)
    due_ms = int(due.timestamp() * 1000)
    early = world.agent.add_job(started_ms=due_ms - 62 * 60_000, duration_ms=60_000, by="function")  # ends T-61min
    inside = world.agent.add_job(started_ms=due_ms - 59 * 60_000, duration_ms=60_000, by="function")  # ends T-58min
    after = world.agent.add_job(started_ms=due_ms + 60_000, duration_ms=60_000, by="function")  # ends T+2min
    world.clock.advance_to(due_ms + 30 * 60_000)  # the retry runs half an hour late
    capsys.readouterr()

    def run(at: datetime) -> list[str]:
        event = {**RECONCILE, "time": f"{at:%Y-%m-%dT%H:%M}:27Z"}  # a due time with its seconds
        result: dict[str, Any] = rag_ingest.handler.handler(event, cast(Any, SimContext()))
        return list(result["jobsReported"])

    reported = [run(due - timedelta(hours=1)), run(due)]
    world.clock.advance_to(due_ms + 70 * 60_000)
    reported.append(run(due + timedelta(hours=1)))
    # Each job once, in the window it ended in (the reconcile's own syncs may start and report jobs of their own);
    # the run due at T does not report the job that ended after T, though it ran after that.
    ours = {early.job_id: 0, inside.job_id: 1, after.job_id: 2}
    for job_id, window in ours.items():
        assert [i for i, jobs in enumerate(reported) if job_id in jobs] == [window], (job_id, reported)


@pytest.mark.parametrize(
    "event",
    [
        {"action": "reconcile", "time": "2026-12-02 14:00:00"},
        {"action": "reconcile", "time": "2026-13-02T14:00:00Z"},
        {"action": "reconcile", "time": 1764684000},
        {"action": "sync", "time": "2026-12-02T14:00:00Z"},
        {"action": "reconcile", "time": "2026-12-02T14:00:00Z", "extra": 1},
    ],
)
def test_a_reconcile_time_that_is_not_an_eventbridge_time_is_an_unsupported_event(event: dict[str, Any]) -> None:
    assert rag_ingest.handler.parse_action(event) is None


def test_the_reconcile_report_reads_every_job_an_hour_at_the_shortest_interval_can_end() -> None:
    # The shortest sync interval the settings allow (their constraint, not a copy of it)
    [shortest] = [m.ge for m in RagSettings.model_fields["sync_interval_minutes"].metadata if hasattr(m, "ge")]
    # Each scheduled run, and the hourly reconcile, starts at most one job; one more may have been running when the
    # hour began. Others' jobs (the console, `kit l2 sync`) are allowed as many again.
    ended_in_an_hour = 60 // shortest + 1 + 1
    assert 2 * ended_in_an_hour <= ingestion.MAX_JOB_PAGES * ingestion.JOB_PAGE_SIZE
    # and one page holds them all, so the hourly listing is one call
    assert 2 * ended_in_an_hour <= ingestion.JOB_PAGE_SIZE


def test_the_reconcile_report_reads_a_bounded_number_of_pages(world: World, logs: io.StringIO) -> None:
    # Given more jobs ended within the hour than MAX_JOB_PAGES pages hold
    count = ingestion.MAX_JOB_PAGES * ingestion.JOB_PAGE_SIZE + 5
    start = world.clock.now_ms - 3_000_000
    for i in range(count):
        world.agent.add_job(
            started_ms=start + i * 2_500,
            duration_ms=2_000,
            by="function",
            description=f"1 change{TAGGED}",
            statistics={"numberOfDocumentsScanned": 1},
        )

    result = reconcile()

    assert len(result["jobsReported"]) == ingestion.MAX_JOB_PAGES * ingestion.JOB_PAGE_SIZE
    warned = [r for r in records(logs) if r["message"].startswith("More ingestion jobs ended since the previous")]
    assert [r["level"] for r in warned] == ["WARNING"]


def test_a_complete_job_with_failed_documents_is_retried_once_by_the_reconcile(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job of the function for 2 changes that ended COMPLETE with a failed document
    ended = world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000,
        duration_ms=60_000,
        by="function",
        description=f"2 changes{TAGGED}",
        statistics=ONE_FAILED,
        failure_reasons=[BIG],
    )

    # When the sync schedule runs with an empty queue: it leaves the retry to the reconcile
    waiting = world.sync()
    assert (waiting["started"], waiting["fullSync"]) == (False, True)
    assert waiting["reason"] == (
        f"ingestion job {ended.job_id} ended COMPLETE with 1 failed document(s); the hourly reconcile retries it"
    )
    assert world.agent.start_attempts == []

    # When the reconcile runs: it reports the job (DocumentsFailed 1), then starts the retry
    capsys.readouterr()
    first = reconcile()
    assert first["jobsReported"] == [ended.job_id]
    assert documents_failed_metrics(capsys.readouterr().out) == [[1.0]]
    assert (first["sync"]["started"], first["sync"]["fullSync"]) == (True, True)
    [retry] = world.agent.start_attempts
    assert (retry.outcome, retry.description) == (
        "started",
        f"{ingestion.RETRY_FAILED_DOCUMENTS} {ended.job_id}{TAGGED}",
    )
    assert retry.client_token == ingestion.client_token([], FULL_SYNC_SALT + ended.job_id)

    # Given the document always fails (over 50 MB): the retry ends COMPLETE with it failed again
    [job] = [job for job in world.agent.jobs if job.job_id == retry.job_id]
    job.statistics, job.failure_reasons = dict(ONE_FAILED), [BIG]
    world.advance(3600)

    # Then the next reconciles report it and keep DocumentsFailed for the alarm, but start no other job
    second = reconcile()
    assert second["jobsReported"] == [job.job_id]
    world.advance(3600)
    third = reconcile()
    assert (third["jobsReported"], third["job"]["jobId"]) == ([], job.job_id)
    assert documents_failed_metrics(capsys.readouterr().out) == [[1.0], [1.0]]
    for result in (second, third):
        assert result["sync"] == {"action": "sync", "started": False, "reason": "no pending changes"}
    assert world.sync()["reason"] == "no pending changes"
    assert len(world.agent.start_attempts) == 1


def test_a_retry_that_also_ingested_new_changes_gets_its_own_retry(world: World) -> None:
    """A sync that finds the retry due and changes queued starts one job for both. A new document that fails in
    it was never retried, so that job is retried once more; only a retry with no change of its own is final."""
    # Given a job of the function that ended COMPLETE with a failed document, and 3 changes queued since
    ended = world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000,
        duration_ms=60_000,
        by="function",
        description=f"2 changes{TAGGED}",
        statistics=ONE_FAILED,
        failure_reasons=[BIG],
    )
    world.send_changes(3)
    # When the sync runs: one job retries the failed document and ingests the changes
    assert world.sync()["started"] is True
    [combined] = world.agent.start_attempts
    assert combined.description == f"{ingestion.RETRY_FAILED_DOCUMENTS} {ended.job_id}; 3 changes{TAGGED}"
    # Given one of the new documents fails in it
    [job] = [job for job in world.agent.jobs if job.job_id == combined.job_id]
    job.statistics = dict(ONE_FAILED)
    world.advance(3600)
    # Then the reconcile retries that job, with no change of its own
    assert reconcile()["sync"]["started"] is True
    retry = world.agent.start_attempts[-1]
    assert retry.description == f"{ingestion.RETRY_FAILED_DOCUMENTS} {combined.job_id}{TAGGED}"
    # And that retry is final: when it fails too, no other job starts
    [job] = [job for job in world.agent.jobs if job.job_id == retry.job_id]
    job.statistics = dict(ONE_FAILED)
    world.advance(3600)
    assert reconcile()["sync"]["started"] is False
    world.advance(3600)
    assert reconcile()["sync"]["started"] is False
    assert [a.job_id for a in world.agent.start_attempts] == [combined.job_id, retry.job_id]


def test_a_retry_that_indexes_the_failed_documents_clears_the_metric(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    ended = world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000,
        duration_ms=60_000,
        by="function",
        description=f"1 change{TAGGED}",
        statistics=ONE_FAILED,
    )
    assert reconcile()["sync"]["started"] is True
    retry = world.agent.jobs[-1]
    retry.statistics = {"numberOfDocumentsScanned": 3, "numberOfNewDocumentsIndexed": 1}
    world.advance(3600)
    capsys.readouterr()

    assert reconcile()["jobsReported"] == [retry.job_id]
    world.advance(3600)
    assert reconcile()["jobsReported"] == []

    assert documents_failed_metrics(capsys.readouterr().out) == [[0.0]]  # then nothing: the alarm returns to OK
    assert [a.job_id for a in world.agent.start_attempts] == [retry.job_id] and ended.job_id != retry.job_id


def test_a_retry_that_takes_no_failed_document_again_keeps_the_metric_until_a_change_does(
    world: World, capsys: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    """Syncing is incremental: Bedrock "only processes added, modified, or deleted documents since the last sync"
    (kb-managed-sync.html). Before: a retry that took no document again ended COMPLETE with nothing failed, its
    DocumentsFailed 0 returned the alarm to OK, and the document stayed out of the index with nothing pointing at
    it. Now the documents it left untaken stay counted until a change of the documents starts a job of its own."""
    ended = world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000,
        duration_ms=60_000,
        by="function",
        description=f"1 change{TAGGED}",
        statistics={"numberOfDocumentsScanned": 3, "numberOfDocumentsFailed": 2},
    )
    assert reconcile()["sync"]["started"] is True
    retry = world.agent.jobs[-1]
    # The retry scanned the documents and took none of them again (or took one: it is still one short).
    retry.statistics = {"numberOfDocumentsScanned": 3}
    world.advance(3600)
    capsys.readouterr()

    assert reconcile()["jobsReported"] == [retry.job_id]
    world.advance(3600)
    assert reconcile()["jobsReported"] == []  # the retry is the newest job, older than the hour: its signal stays
    assert documents_failed_metrics(capsys.readouterr().out) == [[2.0], [2.0]]
    warnings = [json.loads(line) for line in logs.getvalue().splitlines() if "fewer documents" in line]
    assert warnings and {(w["job_id"], w["retry_of"], w["not_retried"]) for w in warnings} == {
        (retry.job_id, ended.job_id, 2)
    }
    assert [a.job_id for a in world.agent.start_attempts] == [retry.job_id]  # the retry is still final

    # A change of the documents starts a job of its own; when it ends clean, the metric returns to 0.
    world.send_changes(1)
    assert world.sync()["started"] is True
    fixed = world.agent.jobs[-1]
    fixed.statistics = {"numberOfDocumentsScanned": 3, "numberOfModifiedDocumentsIndexed": 2}
    world.advance(3600)
    assert reconcile()["jobsReported"] == [fixed.job_id]
    assert documents_failed_metrics(capsys.readouterr().out) == [[0.0]]


def test_a_retry_whose_job_bedrock_no_longer_has_reports_its_own_count(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job a retry names is read with GetIngestionJob when it is not among the listed ones; one Bedrock no
    longer has (ResourceNotFoundException) leaves the retry's own count."""
    retry = world.agent.add_job(
        started_ms=world.clock.now_ms - 120_000,
        duration_ms=60_000,
        by="function",
        description=f"{ingestion.RETRY_FAILED_DOCUMENTS} JOB9999999{TAGGED}",
        statistics={"numberOfDocumentsScanned": 3, "numberOfDocumentsFailed": 1},
    )
    capsys.readouterr()
    assert reconcile()["jobsReported"] == [retry.job_id]
    assert documents_failed_metrics(capsys.readouterr().out) == [[1.0]]
    asked = [params.get("ingestionJobId") for name, params in world.agent.calls if name == "GetIngestionJob"]
    assert "JOB9999999" in asked


def test_a_retry_whose_job_cannot_be_read_now_fails_the_report_rather_than_report_it_clean(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a job Bedrock no longer has is skipped: a throttled GetIngestionJob of the job a retry names fails the
    report (the run raises, so Lambda runs it again) instead of reporting the retry's own 0 and clearing the alarm."""
    ended = world.agent.add_job(
        started_ms=world.clock.now_ms - 600_000,
        duration_ms=60_000,
        by="function",
        description=f"1 change{TAGGED}",
        statistics={"numberOfDocumentsScanned": 3, "numberOfDocumentsFailed": 2},
    )
    assert reconcile()["sync"]["started"] is True
    retry = world.agent.jobs[-1]
    retry.statistics = {"numberOfDocumentsScanned": 3}  # it took none of the two again
    world.advance(3600)  # the job it retried ended before this window: it is read with GetIngestionJob
    capsys.readouterr()
    read = world.agent.get_ingestion_job

    def throttled(**params: Any) -> dict[str, Any]:
        if params["ingestionJobId"] == ended.job_id:
            raise world.agent.error("GetIngestionJob", "ThrottlingException", "Rate exceeded.")
        return read(**params)

    monkeypatch.setattr(world.agent, "get_ingestion_job", throttled)

    with pytest.raises(ClientError, match="ThrottlingException"):
        reconcile()
    assert documents_failed_metrics(capsys.readouterr().out) == []  # no report, so no 0 for the alarm

    monkeypatch.setattr(world.agent, "get_ingestion_job", read)  # Lambda's next attempt, the throttling over
    assert reconcile()["jobsReported"] == [retry.job_id]
    assert documents_failed_metrics(capsys.readouterr().out) == [[2.0]]


def test_a_replaced_data_source_gets_its_own_full_sync(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.sync()["reason"] == "no pending changes"  # the old data source is in sync (and remembered)

    # A configuration change replaced the data source: the function gets a new DATA_SOURCE_ID.
    replaced = FakeBedrockAgent(world.clock, data_source_id="DSSIM00002")
    monkeypatch.setattr(aws, "get_agent_client", lambda: replaced)
    monkeypatch.setenv("DATA_SOURCE_ID", "DSSIM00002")
    settings.get_settings.cache_clear()

    result = world.sync()

    assert (result["started"], result["fullSync"]) == (True, True)
    assert [job.by for job in replaced.jobs] == ["function"]


# --- reading each message on its own -----------------------------------------------------------------------

DEEP_ARRAY = "[" * 50_000 + "]" * 50_000
DEEP_OBJECT = '{"a":' * 30_000 + "1" + "}" * 30_000


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_parse_change_turns_a_deeply_nested_body_into_poison(body: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse_change(body, bucket=BUCKET)
    assert raised.value.reason == "the body could not be parsed (RecursionError)"


def test_parse_change_shows_nested_values_without_rendering_them() -> None:
    nested = "[" * 500 + "]" * 500
    with pytest.raises(PoisonMessage) as raised:
        parse_change('{"source": "aws.s3", "detail-type": ' + nested + "}", bucket=BUCKET)
    assert raised.value.reason == "detail-type is an array, not Object Created or Object Deleted"


def test_a_deeply_nested_body_is_poison_alone_and_the_changes_go_through(world: World, logs: io.StringIO) -> None:
    world.send_changes(3)
    world.send(DEEP_ARRAY)

    result = world.sync()

    assert (result["started"], result["changes"], result["poison"], result["deleted"]) == (True, 3, 1, 3)
    assert world.queued_bodies() == [DEEP_ARRAY]
    for _ in range(6):
        world.advance(300)
        world.sync()
    assert world.dead_letter_bodies() == [DEEP_ARRAY]
    assert world.queued_bodies() == []
    reasons = {r["reason"] for r in records(logs) if r["message"] == "Poison message: left for the dead-letter queue"}
    assert reasons == {"the body could not be parsed (RecursionError)"}


@pytest.mark.parametrize(
    "error",
    [RecursionError(), MemoryError(), TypeError("x"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), KeyError("k")],
    ids=lambda error: type(error).__name__,
)
def test_any_failure_reading_one_body_makes_only_that_message_poison(
    world: World, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    real = ingestion.parse_change
    odd = object_event(world.rng, "created", f"{PREFIX}odd.md")

    def reading(body: Any, **kwargs: Any) -> Change:
        if body == odd:
            raise error
        return real(body, **kwargs)

    monkeypatch.setattr(ingestion, "parse_change", reading)
    world.send_changes(2)
    world.send(odd)

    result = world.sync()

    assert (result["started"], result["changes"], result["poison"], result["deleted"]) == (True, 2, 1, 2)
    assert world.queued_bodies() == [odd]


# --- failures after messages were received ------------------------------------------------------------------


def _fail_call(target: Any, name: str, fail_on: set[int], error: Callable[[], BaseException]) -> list[int]:
    """Make the n-th call (1-based, counted over the whole test) of ``target.name`` raise ``error()``."""
    real = getattr(target, name)
    seen: list[int] = []

    def call(**params: Any) -> Any:
        seen.append(len(seen) + 1)
        if len(seen) in fail_on:
            raise error()
        return real(**params)

    setattr(target, name, call)
    return seen


def _sqs_error(code: str, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, operation
    )


def test_a_throttled_first_receive_fails_the_run_and_is_not_taken_for_a_busy_knowledge_base(
    world: World, logs: io.StringIO
) -> None:
    """A busy answer is StartIngestionJob's (the changes then wait in the queue for the next run); the same code
    from SQS before anything was received is a failure of the run, raised so that its error metric and alarm see
    it, and nothing is held."""
    world.send_changes(3)
    _fail_call(world.function_sqs, "receive_message", {1}, lambda: _sqs_error("ThrottlingException", "ReceiveMessage"))

    with pytest.raises(ClientError, match="ThrottlingException"):
        world.sync()

    assert world.agent.start_attempts == [] and world.receive_counts() == [0] * 3
    assert "Sync failed before receiving anything" in [r["message"] for r in records(logs)]


def test_a_failed_later_receive_keeps_what_was_received_and_starts_the_job(world: World, logs: io.StringIO) -> None:
    world.send_changes(15)
    _fail_call(world.function_sqs, "receive_message", {2}, lambda: _sqs_error("InternalError", "ReceiveMessage"))

    result = world.sync()

    assert (result["started"], result["changes"], result["deleted"]) == (True, 10, 10)
    assert world.receive_counts() == [0] * 5  # the other five were never received: they wait for the next run
    assert "ReceiveMessage failed: the run goes on with the messages received so far" in [
        r["message"] for r in records(logs)
    ]
    world.advance(300)
    assert world.sync()["deleted"] == 5
    assert world.queued_bodies() == [] and world.dead_letter_bodies() == []


def test_a_later_receive_failing_in_every_run_never_dead_letters_a_change(world: World) -> None:
    """Every run: the second ReceiveMessage fails and Bedrock is throttled. Eight runs, no change in the DLQ."""
    world.send_changes(15)
    _fail_call(
        world.function_sqs,
        "receive_message",
        set(range(2, 200, 2)),
        lambda: _sqs_error("InternalError", "ReceiveMessage"),
    )
    for _ in range(8):
        world.agent.fail_next_start("ThrottlingException")

    for _ in range(8):
        world.sync()
        world.advance(300)
    for _ in range(8):
        if not world.queued_bodies():
            break
        world.sync()
        world.advance(300)

    assert world.dead_letter_bodies() == []
    assert world.queued_bodies() == []
    assert world.tracker.deleted_before_cover == 0
    assert all(world.tracker.covered(change, world.clock.now_ms) for change in world.tracker.change_sent_ms)


class Killed(BaseException):
    """Lambda ending a run at its timeout: no except clause and no finally of the function runs on."""


def test_runs_killed_after_receiving_never_dead_letter_a_change(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.send_changes(6)
    seen = _fail_call(world.agent, "start_ingestion_job", set(range(1, 7)), Killed)

    for _ in range(6):
        with pytest.raises(Killed):
            world.sync()
        world.advance(300)  # the killed run's messages come back after its visibility timeout
    world.sync()

    assert len(seen) == 7
    assert world.agent.start_attempts[-1].outcome == "started"
    assert world.dead_letter_bodies() == []
    assert world.queued_bodies() == []  # the fresh copies queued at the 3rd receives were covered and deleted
    assert world.tracker.deleted_before_cover == 0


def test_a_release_that_fails_still_leaves_the_changes_queued(world: World) -> None:
    world.send_changes(4)
    world.agent.fail_next_start("InternalServerException")
    _fail_call(
        world.function_sqs,
        "change_message_visibility_batch",
        {1},
        lambda: ReadTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com/"),
    )

    with pytest.raises(ClientError):
        world.sync()

    assert world.tracker.deletions == []
    world.advance(151)  # released or not, they come back after the run's visibility timeout
    assert world.visible() == [True] * 4
    assert world.sync()["deleted"] == 4


def test_a_delete_that_raises_after_the_start_is_counted_not_raised(world: World, logs: io.StringIO) -> None:
    world.send_changes(12)
    _fail_call(
        world.function_sqs,
        "delete_message_batch",
        {2},
        lambda: EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com/"),
    )

    result = world.sync()

    assert (result["started"], result["deleted"], result["deleteFailed"]) == (True, 10, 2)
    [warning] = [r for r in records(logs) if r["message"].startswith("Some messages could not be deleted")]
    assert warning["codes"] == ["EndpointConnectionError"]


# --- guard: a fault at every call of a sync run -------------------------------------------------------------
# Record the AWS calls of a clean run, then for every position k and every kind of fault, make the k-th call of
# each of the first FAULTY_RUNS runs fail (more runs than the queue's maxReceiveCount), keep the schedule going
# until the queue is empty, and check that the dead-letter queue holds exactly the unreadable messages and that
# every valid change was covered by a job started after it was sent (and deleted only after that).

FAULTY_RUNS = 6  # more runs than the queue's maxReceiveCount (5)
# A call that took effect but whose answer was lost (a ReceiveMessage whose messages never reach the function) is
# invisible to the function: it cannot re-queue what it never saw. The guarantee covers up to two such losses in a
# row for one message (a re-queue at its 3rd, 4th or 5th receive is enough), so the guard injects them in two runs.
LOST_ANSWER_RUNS = 2


def faulty_runs(kind: str) -> int:
    return LOST_ANSWER_RUNS if kind == "answer_lost" else FAULTY_RUNS


MAX_RUNS = 40
SQS_ENDPOINT = "https://sqs.us-east-1.amazonaws.com/"
AGENT_ENDPOINT = "https://bedrock-agent.us-east-1.amazonaws.com/"
SQS_OPERATIONS = frozenset(
    {
        "get_queue_attributes",
        "receive_message",
        "delete_message_batch",
        "send_message_batch",
        "change_message_visibility_batch",
    }
)
AGENT_OPERATIONS = frozenset({"list_ingestion_jobs", "start_ingestion_job", "get_ingestion_job"})
# Two ClientErrors (throttled: the "busy" answer of StartIngestionJob; access denied: any other error code), a
# timeout and a connection failure that had no effect, and a call that took effect but whose answer was lost.
FAULT_KINDS = ("throttled", "access_denied", "read_timeout", "connection", "answer_lost")


class FaultInjector:
    """Counts the AWS calls of the current run; the k-th one fails with the chosen kind of fault."""

    def __init__(self, agent: FakeBedrockAgent) -> None:
        self.agent = agent
        self.calls: list[tuple[str, str]] = []
        self.fail_at: int | None = None
        self.kind = ""
        self.injected: list[tuple[str, str]] = []

    def begin_run(self, fail_at: int | None, kind: str = "") -> None:
        self.calls, self.fail_at, self.kind = [], fail_at, kind

    def wrap(self, service: str, target: Any, operations: frozenset[str]) -> Any:
        injector = self

        class Faulty:
            def __getattr__(self, name: str) -> Any:
                method = getattr(target, name)
                if name not in operations:
                    return method

                def call(**params: Any) -> Any:
                    injector.calls.append((service, name))
                    if len(injector.calls) != injector.fail_at:
                        return method(**params)
                    injector.injected.append((name, injector.kind))
                    if injector.kind == "answer_lost":  # the call took effect, its answer never arrived
                        method(**params)
                    raise injector.fault(service, name)

                return call

        return Faulty()

    def fault(self, service: str, name: str) -> Exception:
        endpoint = SQS_ENDPOINT if service == "sqs" else AGENT_ENDPOINT
        if self.kind in ("read_timeout", "answer_lost"):
            return ReadTimeoutError(endpoint_url=endpoint)
        if self.kind == "connection":
            return EndpointConnectionError(endpoint_url=endpoint)
        operation = "".join(part.title() for part in name.split("_"))
        throttled = self.kind == "throttled"
        if service == "bedrock-agent":
            code = "ThrottlingException" if throttled else "AccessDeniedException"
            return self.agent.error(operation, code, "injected")
        return _sqs_error("RequestThrottled" if throttled else "AccessDenied", operation)


@contextlib.contextmanager
def _faulty_pipeline(
    sqs: Any, monkeypatch: pytest.MonkeyPatch, synced: bool, fail_at: int | None, kind: str
) -> Iterator[tuple[World, FaultInjector, list[list[tuple[str, str]]], list[str]]]:
    """Run the schedule with the fault until the queue is empty; the world, the injector and each run's calls."""
    worlds = world_in(sqs, monkeypatch, synced=synced)
    world = next(worlds)
    try:
        injector = FaultInjector(world.agent)
        faulty_sqs = injector.wrap("sqs", world.function_sqs, SQS_OPERATIONS)
        faulty_agent = injector.wrap("bedrock-agent", world.agent, AGENT_OPERATIONS)
        monkeypatch.setattr(aws, "get_sqs_client", lambda: faulty_sqs)
        monkeypatch.setattr(aws, "get_agent_client", lambda: faulty_agent)
        clear_caches()
        # A change outside the prefix (queued under a previous one) is moot, not poison: deleted like a change.
        odd = [DEEP_ARRAY, "{not json", object_event(world.rng, "created", "outside/x.md")]
        poison = odd[:2]
        world.send_changes(9, keys=4)
        for body in odd:
            world.send(body)
        world.send_changes(5, keys=4)
        runs: list[list[tuple[str, str]]] = []
        for run in range(MAX_RUNS):
            injector.begin_run(fail_at if run < faulty_runs(kind) else None, kind)
            with contextlib.suppress(ClientError, BotoCoreError):  # the invocation failed; the schedule runs on
                world.sync()
            runs.append(list(injector.calls))
            world.advance(300)
            if run >= faulty_runs(kind) and not world.queued_bodies() and world.agent.running_job() is None:
                break
        yield world, injector, runs, poison
    finally:
        worlds.close()


def _assert_nothing_lost(world: World, poison: list[str], label: str) -> None:
    assert sorted(world.dead_letter_bodies()) == sorted(poison), label  # the unreadable ones, and only them
    assert world.queued_bodies() == [], label
    assert world.tracker.deleted_before_cover == 0, label
    valid = set(world.tracker.change_sent_ms) - {ingest_burst.change_id_of(body) for body in poison}
    now = world.clock.now_ms
    assert [change for change in valid if not world.tracker.covered(change, now)] == [], label
    assert {change for change, _ in world.tracker.deletions} == valid, label


@pytest.mark.parametrize("synced", [True, False], ids=["synced", "new-data-source"])
def test_guard_a_fault_at_every_call_never_dead_letters_a_valid_change(
    monkeypatch: pytest.MonkeyPatch, synced: bool
) -> None:
    with mock_aws():  # one mock for every scenario (each gets fresh queues, a fresh agent and its own clock)
        sqs = moto_sqs_client()
        # The clean run, recorded: every AWS call a sync makes (the first run drains, starts and deletes).
        with _faulty_pipeline(sqs, monkeypatch, synced, None, "") as (world, _, clean_runs, poison):
            _assert_nothing_lost(world, poison, "clean")
        first_run = clean_runs[0]
        operations = {name for _, name in first_run}
        assert {"get_queue_attributes", "list_ingestion_jobs", "receive_message", "start_ingestion_job"} <= operations
        assert "delete_message_batch" in operations

        injected: set[tuple[str, str]] = set()
        for position in range(1, len(first_run) + 1):
            for kind in FAULT_KINDS:
                label = f"call #{position} ({first_run[position - 1][1]}) fails with {kind} in {faulty_runs(kind)} runs"
                with _faulty_pipeline(sqs, monkeypatch, synced, position, kind) as (world, injector, _, poison):
                    _assert_nothing_lost(world, poison, label)
                assert injector.injected, label
                injected.update(injector.injected)
    # every operation of the clean run met every kind of fault
    assert {(name, kind) for name in operations for kind in FAULT_KINDS} <= injected


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
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ASSET_DIR)}
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
        disabled = False  # Powertools' own switch: tracing is on

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
    assert parse_change(body, bucket=BUCKET) == Change(kind, BUCKET, f"{PREFIX}a b/ü.md", event["id"])
    assert covered(f"{PREFIX}a b/ü.md", PREFIX)
    assert covered(f"{PREFIX}a b/ü.md", "")  # no prefix: the whole bucket
    assert not covered("elsewhere/a", PREFIX)  # read all the same: the caller decides (a moot change)
    assert parse_change(object_event(random.Random(2), kind, "elsewhere/a"), bucket=BUCKET).key == "elsewhere/a"


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
    ],
)
def test_parse_change_rejects_poison_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        parse_change(body, bucket=BUCKET)
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
        sqs = moto_sqs_client()
        queue_url, dlq_url = create_queues(BackendQueues())
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


def stub_synced(stub: Stubber, synced: bool = True) -> None:
    """The sync's first question: is the newest COMPLETE job of the data source one of this revision?"""
    summaries = [job_detail("COMPLETE", description=f"2 changes{TAGGED}")] if synced else []
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": summaries}, HISTORY)


def stub_not_running(stub: Stubber) -> None:
    stub.add_response(
        "list_ingestion_jobs",
        {"ingestionJobSummaries": []},
        {**DATA_SOURCE, "filters": [RUNNING_FILTER], "maxResults": ingestion.JOB_PAGE_SIZE},
    )


def stub_newest(stub: Stubber, status: str, **extra: Any) -> None:
    """The report's listing holds one job (its summary without statistics), so its detail is read."""
    summary = {k: v for k, v in job_detail(status).items()}
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": [summary]}, HISTORY)
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
CLEAN_STATISTICS = {**STATISTICS, "numberOfDocumentsFailed": 0}
REASONS = ["s3://kit-documents-sim/docs/big.pdf: file exceeds 50 MB", "s3://kit-documents-sim/docs/x.bin: unsupported"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The reconcile run's time: by default 10 minutes after the stubbed job's last update."""
    at = [UPDATED + timedelta(minutes=10)]
    monkeypatch.setattr(rag_ingest.handler, "now", lambda: at[0])
    return at


def test_reconcile_reports_the_newest_job_metrics_and_failure_reasons(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str], logs: io.StringIO, clock: list[datetime]
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "COMPLETE", statistics=STATISTICS, failureReasons=REASONS)
    stub_synced(stub)

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result == {
        "action": "reconcile",
        "sync": {"action": "sync", "started": False, "reason": "no pending changes"},
        "job": {
            "jobId": "JOB0000042",
            "status": "COMPLETE",
            "startedAt": STARTED.isoformat(),
            "updatedAt": UPDATED.isoformat(),
            "statistics": {"scanned": 120, "indexed": 42, "deleted": 5, "failed": 2, "skipped": 71},
            "failureReasons": REASONS,
            "failureReasonCount": 2,
        },
        "jobsReported": ["JOB0000042"],
    }
    [job_doc] = emf_documents(capsys.readouterr().out)  # the sync found nothing to do: it wrote no metric
    assert job_doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["KnowledgeBaseId", "service"]]
    assert {
        name: job_doc[name]
        for name in (
            "DocumentsScanned",
            "DocumentsIndexed",
            "DocumentsDeleted",
            "DocumentsFailed",
            "DocumentsSkipped",
            "IngestionJobFailed",
        )
    } == {
        "DocumentsScanned": [120.0],
        "DocumentsIndexed": [42.0],
        "DocumentsDeleted": [5.0],
        "DocumentsFailed": [2.0],
        "DocumentsSkipped": [71.0],  # numberOfDocumentsSkipped: reported, not dropped
        "IngestionJobFailed": [0.0],
    }
    [reasons] = [r for r in records(logs) if r["message"] == "Ingestion job failure reasons"]
    assert (reasons["level"], reasons["job_id"], reasons["failure_reasons"]) == ("WARNING", "JOB0000042", REASONS)


def test_reconcile_failed_job_counts_as_failed_and_logs_an_error(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str], logs: io.StringIO, clock: list[datetime]
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "FAILED", failureReasons=["The knowledge base role cannot read the bucket."])
    stub_synced(stub)

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result["job"]["status"] == "FAILED"
    job_doc = emf_documents(capsys.readouterr().out)[-1]
    assert job_doc["IngestionJobFailed"] == [1.0]
    assert job_doc["DocumentsScanned"] == [0.0]
    [reasons] = [r for r in records(logs) if r["message"] == "Ingestion job failure reasons"]
    assert reasons["level"] == "ERROR"
    assert reasons["failure_reasons"] == ["The knowledge base role cannot read the bucket."]


@pytest.mark.parametrize("status", ["COMPLETE", "STOPPED"])
def test_an_idle_knowledge_base_writes_no_metric(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str], clock: list[datetime], status: str
) -> None:
    # Given nothing queued and a newest job that ended before the previous reconcile run
    stub, _ = agent_stub
    stub_newest(stub, status, statistics=CLEAN_STATISTICS)
    stub_synced(stub)
    clock[0] = UPDATED + ingestion.RECONCILE_EVERY + timedelta(seconds=1)
    # When the hourly reconcile runs
    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))
    # Then it reports in its answer and log only: no custom metric is written (each is billed per hour written)
    assert result["job"]["status"] == status
    assert emf_documents(capsys.readouterr().out) == []


def test_a_failed_newest_job_keeps_its_alarm_metric_every_hour_and_nothing_else(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str], clock: list[datetime]
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "FAILED", statistics=CLEAN_STATISTICS)
    stub_synced(stub)
    clock[0] = UPDATED + 3 * ingestion.RECONCILE_EVERY
    rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))
    [doc] = emf_documents(capsys.readouterr().out)
    assert doc["IngestionJobFailed"] == [1.0]
    assert [m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["IngestionJobFailed"]


def test_a_job_is_reported_by_the_first_reconcile_after_it_ended_only() -> None:
    report = ingestion.read_job(job_detail("COMPLETE"))
    assert ingestion.finished_since(report, UPDATED - timedelta(seconds=1))
    assert not ingestion.finished_since(report, UPDATED)
    unknown = ingestion.read_job({k: v for k, v in job_detail("COMPLETE").items() if k != "updatedAt"})
    assert ingestion.finished_since(unknown, UPDATED)


def test_reconcile_does_not_report_a_running_job(
    agent_stub: tuple[Stubber, World], capsys: pytest.CaptureFixture[str]
) -> None:
    stub, _ = agent_stub
    stub_newest(stub, "IN_PROGRESS", statistics=STATISTICS)
    stub_synced(stub)

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result["job"]["status"] == "IN_PROGRESS"
    assert emf_documents(capsys.readouterr().out) == []  # nothing queued, and the running job is reported later


def test_reconcile_of_a_data_source_without_any_job_starts_the_full_sync(agent_stub: tuple[Stubber, World]) -> None:
    stub, world = agent_stub
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, HISTORY)  # the report: no job yet
    stub_synced(stub, synced=False)
    stub_not_running(stub)
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, NEWEST)
    stub.add_response(
        "start_ingestion_job",
        {"ingestionJob": job_detail("STARTING", description=ingestion.FULL_SYNC + TAGGED)},
        {
            **DATA_SOURCE,
            "clientToken": ingestion.client_token([], FULL_SYNC_SALT),
            "description": ingestion.FULL_SYNC + TAGGED,
        },
    )

    result = rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert result["sync"]["started"] is True
    assert (result["sync"]["fullSync"], result["sync"]["changes"]) == (True, 0)
    assert result["job"] is None  # reported before the sync: the full sync is reported by the next reconcile
    assert len(world.tracker.receive_calls) == 2  # the queue was drained (empty) to coalesce pending changes


def test_reconcile_whose_full_sync_is_refused_reports_no_job_and_raises(
    agent_stub: tuple[Stubber, World], logs: io.StringIO
) -> None:
    stub, _ = agent_stub
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, HISTORY)
    stub_synced(stub, synced=False)
    stub_not_running(stub)
    stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, NEWEST)
    stub.add_client_error("start_ingestion_job", "AccessDeniedException", "no", 403)

    with pytest.raises(ClientError) as raised:
        rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    messages = [r["message"] for r in records(logs)]
    assert "StartIngestionJob failed: the changes stay queued" in messages
    assert "No ingestion job has run yet" in messages


def test_reconcile_reports_the_newest_job_first_and_raises_when_the_sync_fails(
    agent_stub: tuple[Stubber, World], logs: io.StringIO
) -> None:
    stub, world = agent_stub
    world.send_changes(2)
    stub_newest(stub, "COMPLETE", statistics=STATISTICS)
    stub_synced(stub)
    stub_not_running(stub)
    stub.add_client_error("start_ingestion_job", "ValidationException", "bad", 400)

    with pytest.raises(ClientError):
        rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    messages = [r["message"] for r in records(logs)]
    assert "StartIngestionJob failed: the changes stay queued" in messages
    assert "Ingestion job report" in messages
    assert world.tracker.deletions == []


def test_reconcile_raises_the_sync_error_when_the_report_fails_too(
    agent_stub: tuple[Stubber, World], logs: io.StringIO
) -> None:
    stub, world = agent_stub
    world.send_changes(1)
    stub.add_client_error("list_ingestion_jobs", "InternalServerException", "later", 500)
    stub_synced(stub)
    stub_not_running(stub)
    stub.add_client_error("start_ingestion_job", "ValidationException", "bad", 400)

    with pytest.raises(ClientError) as raised:
        rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert raised.value.response["Error"]["Code"] == "ValidationException"
    [report] = [r for r in records(logs) if r["message"] == "Could not report the ingestion jobs"]
    assert report["level"] == "ERROR" and "InternalServerException" in report["exception"]


def test_a_failed_report_does_not_stop_the_reconcile_from_syncing(agent_stub: tuple[Stubber, World]) -> None:
    stub, world = agent_stub
    world.send_changes(1)
    stub.add_client_error("list_ingestion_jobs", "InternalServerException", "later", 500)
    stub_synced(stub)
    stub_not_running(stub)
    stub.add_response("start_ingestion_job", {"ingestionJob": job_detail("STARTING")})

    with pytest.raises(ClientError) as raised:
        rag_ingest.handler.handler(RECONCILE, cast(Any, SimContext()))

    assert raised.value.response["Error"]["Code"] == "InternalServerException"  # Lambda retries the report
    assert [change_id for change_id, _ in world.tracker.deletions] == list(world.tracker.change_sent_ms)


def test_the_longest_job_description_fits_start_ingestion_job() -> None:
    """describe_job's worst cases (changes, a full sync, a retry naming a job; the largest change count a run may
    hold and a revision) within StartIngestionJob's description maximum in botocore's bedrock-agent model; the job
    id is the model's Id shape ([0-9a-zA-Z]{10})."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock-agent")
    maximum = model.operation_model("StartIngestionJob").input_shape.members["description"].metadata["max"]
    job_id = model.shape_for("IngestionJobSummary").members["ingestionJobId"].metadata["pattern"]
    assert job_id == "[0-9a-zA-Z]{10}"
    for full, retry_of in ((False, ""), (True, ""), (True, "A" * 10)):
        text = ingestion.describe_job(settings.MAX_MESSAGES_LIMIT, full=full, revision="f" * 16, retry_of=retry_of)
        assert len(text) <= maximum, text


@pytest.mark.parametrize("another_revision", [False, True])
def test_a_history_too_long_to_reach_a_complete_job_is_taken_as_in_sync_unless_the_configuration_changed(
    world: World, another_revision: bool
) -> None:
    """The history is read MAX_JOB_PAGES pages deep. Pages of jobs that never reach a COMPLETE one (here, failed
    jobs someone else started after the kit's last sync) are taken as in sync, so a run does not start a full
    sync every time; but a job of another revision among them means the configuration changed: a full sync."""
    now = world.clock.now_ms
    jobs = ingestion.MAX_JOB_PAGES * ingestion.JOB_PAGE_SIZE
    for n in range(jobs):
        world.agent.add_job(started_ms=now - 3_600_000 + n, duration_ms=1, by="console", final_status="FAILED")
    if another_revision:
        world.agent.jobs[-jobs // 2].description = f"1 change [revision {NEW_REVISION}]"
    world.advance(1)

    result = world.sync()

    listed = [params for operation, params in world.agent.calls if operation == "ListIngestionJobs"]
    if another_revision:  # not in sync; the newest job failed, so the hourly reconcile starts the full sync
        assert result["fullSync"] is True and result["reason"].endswith("ended FAILED; the hourly reconcile retries it")
    else:
        assert result == {"action": "sync", "started": False, "reason": "no pending changes"}
        assert len(listed) == ingestion.MAX_JOB_PAGES  # the bound: never the earlier job beyond it
        assert world.agent.start_attempts == []


def test_the_time_budget_is_the_contexts_or_a_default_run_from_now() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 1_234

    assert ingestion.remaining_time(Context())() == 1_234
    left = ingestion.remaining_time(None)()  # no Lambda context: DEFAULT_RUN_MS from now
    assert ingestion.DEFAULT_RUN_MS - 1_000 < left <= ingestion.DEFAULT_RUN_MS
