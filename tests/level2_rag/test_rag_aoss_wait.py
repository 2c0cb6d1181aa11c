"""The OpenSearch Serverless wait (custom resource): probes until ready, always answers CloudFormation in time.

Offline: the collection is a scripted sender (method, URL, headers -> HTTP status) on a simulated clock, and
CloudFormation's pre-signed response URL is a fake ``urlopen``. The requests' SigV4 signatures are real
(botocore, with the suite's fake credentials).
"""

from __future__ import annotations

import contextlib
import io
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from common import custom_resource
from rag_aoss_wait import handler as h
from rag_aoss_wait import probe
from tests.lambda_helpers import cloudformation_answers

ENDPOINT = "https://abc123def456ghi789jk.us-west-2.aoss.amazonaws.com"
INDEX = "kit-kb-index-59221e06"
FUNCTION_TIMEOUT_MS = 600_000


@dataclass
class Collection:
    """Answers each probe with the next scripted status (the last one repeats), on a simulated clock."""

    statuses: list[int | None]
    now_s: float = 0.0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def send(self, method: str, url: str, headers: dict[str, str]) -> int | None:
        self.requests.append((method, url, headers))
        self.now_s += 0.2
        return self.statuses[min(len(self.requests), len(self.statuses)) - 1]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


@dataclass
class Context:
    collection: Collection
    timeout_ms: int = FUNCTION_TIMEOUT_MS
    function_name: str = "rag-aoss-wait"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-west-2:123456789012:function:rag-aoss-wait"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_ms - self.collection.now_s * 1000)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What the function PUTs to CloudFormation's response URL."""
    sent: list[dict[str, Any]] = []

    def bounded(timeout: float) -> None:
        assert timeout <= h.RESPONSE_TIMEOUT_S

    fake_urlopen = cloudformation_answers(sent, bounded)

    monkeypatch.setattr(custom_resource.urllib.request, "urlopen", fake_urlopen)
    probe.credentials.cache_clear()
    yield sent
    probe.credentials.cache_clear()


def run(
    monkeypatch: pytest.MonkeyPatch,
    collection: Collection,
    kind: str = "Create",
    timeout_ms: int = FUNCTION_TIMEOUT_MS,
    **props: Any,
) -> None:
    monkeypatch.setattr(probe, "send", collection.send)
    monkeypatch.setattr(h.time, "sleep", collection.sleep)
    monkeypatch.setattr(h.time, "monotonic", lambda: collection.now_s)
    event = {
        "RequestType": kind,
        "ResponseURL": "https://cfn-response.example/put",
        "StackId": "arn:aws:cloudformation:us-west-2:123456789012:stack/GenAiKit-2-Rag-sandbox/1",
        "RequestId": "r-1",
        "LogicalResourceId": "KnowledgeOpenSearchAccessPolicyInEffect",
        "ResourceType": "Custom::OpenSearchServerlessWait",
        "ResourceProperties": {"Check": "access", "CollectionEndpoint": ENDPOINT, "IndexName": INDEX, **props},
    }
    if kind != "Create":
        event["PhysicalResourceId"] = f"access:{INDEX}"
    h.handler(event, Context(collection, timeout_ms))


def test_access_waits_until_the_policy_admits_the_function(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]
) -> None:
    # Given a policy that takes three probes to apply: 403, 403, then 404 (no index yet, but admitted)
    collection = Collection([403, 403, 404])

    run(monkeypatch, collection)

    # Then three good answers in a row are required, PROBE_INTERVAL_S apart, and CloudFormation hears SUCCESS
    assert [r[0] for r in collection.requests] == ["HEAD"] * 5
    assert {r[1] for r in collection.requests} == {f"{ENDPOINT}/{INDEX}"}
    assert collection.sleeps == [h.PROBE_INTERVAL_S] * 4
    [answer] = answers
    assert (answer["Status"], answer["PhysicalResourceId"]) == ("SUCCESS", f"access:{INDEX}")
    assert (answer["RequestId"], answer["LogicalResourceId"]) == ("r-1", "KnowledgeOpenSearchAccessPolicyInEffect")


def test_a_refusal_between_good_answers_starts_the_count_again(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]
) -> None:
    # a policy applies node by node: one good answer is not proof
    collection = Collection([404, 403, 200, None, 404, 404, 404])
    run(monkeypatch, collection)
    assert len(collection.requests) == 7
    assert answers[0]["Status"] == "SUCCESS"


def test_a_collection_that_admits_at_once_still_takes_three_good_answers(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]
) -> None:
    collection = Collection([404])
    run(monkeypatch, collection)
    assert len(collection.requests) == h.REQUIRED_PASSES == 3
    assert answers[0]["Reason"] == "access ready after 3 probes"


def test_without_a_lambda_context_it_probes_once_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run outside Lambda (no context, no time budget): one probe, then the deadline guard ends the wait."""
    collection = Collection([403])
    monkeypatch.setattr(probe, "send", collection.send)
    target = probe.parse_target(ENDPOINT, INDEX)
    remaining = h.remaining_time(None)
    outcome = h.wait_until_ready("access", target, remaining_ms=remaining, sleep=collection.sleep, clock=lambda: 0.0)
    assert (outcome.ready, outcome.probes, outcome.last_status) == (False, 1, 403)
    assert collection.sleeps == [] and remaining() == 0


def test_index_waits_until_the_index_answers_searches(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]
) -> None:
    collection = Collection([403, 404, 200])

    run(monkeypatch, collection, Check="index")

    assert [(m, u) for m, u, _ in collection.requests] == [("GET", f"{ENDPOINT}/{INDEX}/_search?size=0")] * 5
    assert (answers[0]["Status"], answers[0]["PhysicalResourceId"]) == ("SUCCESS", f"index:{INDEX}")


def test_every_probe_is_signed_for_opensearch_serverless_in_the_collections_region(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]
) -> None:
    collection = Collection([200])
    run(monkeypatch, collection)
    for _, _, headers in collection.requests:
        assert "/us-west-2/aoss/aws4_request" in headers["Authorization"]
        assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
        assert headers["x-amz-content-sha256"] == probe.EMPTY_SHA256
        assert headers["X-Amz-Security-Token"] == "testing"
        assert "x-amz-content-sha256" in headers["Authorization"].split("SignedHeaders=")[1]


def test_the_deadline_guard_answers_failed_before_the_function_times_out(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]
) -> None:
    # Given a policy that never admits the function
    collection = Collection([403])

    run(monkeypatch, collection, timeout_ms=120_000)

    # Then it stops while DEADLINE_RESERVE_MS are still left, and says what it saw
    assert collection.now_s * 1000 <= 120_000 - h.DEADLINE_RESERVE_MS
    assert len(collection.requests) >= 10
    [answer] = answers
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"OpenSearch Serverless still answered 403 to HEAD /{INDEX} after ")
    assert "data access policy" in answer["Reason"]


def test_no_answer_at_all_is_reported_as_such(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> None:
    run(monkeypatch, Collection([None]), timeout_ms=45_000)
    assert answers[0]["Status"] == "FAILED"
    assert "still answered no response to HEAD" in answers[0]["Reason"]


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"Check": "ready"}, "Check 'ready' is not one of access, index"),
        ({"CollectionEndpoint": "https://example.com"}, "CollectionEndpoint 'https://example.com' is not"),
        ({"CollectionEndpoint": "http://abc123.us-west-2.aoss.amazonaws.com"}, "CollectionEndpoint 'http://"),
        ({"CollectionEndpoint": ENDPOINT + "/../x"}, "CollectionEndpoint"),
        ({"IndexName": "_hidden"}, "IndexName '_hidden' is not a valid"),
        ({"IndexName": "a/../b"}, "IndexName 'a/../b' is not a valid"),
    ],
)
def test_invalid_properties_fail_at_once_without_a_request(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]], props: dict[str, Any], reason: str
) -> None:
    collection = Collection([200])
    run(monkeypatch, collection, **props)
    assert collection.requests == []
    assert answers[0]["Status"] == "FAILED"
    assert answers[0]["Reason"].startswith(reason)


def test_delete_answers_success_at_once(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> None:
    collection = Collection([403])
    run(monkeypatch, collection, kind="Delete")
    assert collection.requests == []
    assert (answers[0]["Status"], answers[0]["PhysicalResourceId"]) == ("SUCCESS", f"access:{INDEX}")


def test_update_probes_again(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> None:
    # a new index name (new dimensions) arrives as an Update: the wait checks the new index
    collection = Collection([200])
    run(monkeypatch, collection, kind="Update", IndexName="kit-kb-index-0badc0de")
    assert collection.requests[0][1] == f"{ENDPOINT}/kit-kb-index-0badc0de"
    assert (answers[0]["Status"], answers[0]["PhysicalResourceId"]) == ("SUCCESS", "access:kit-kb-index-0badc0de")


@pytest.mark.parametrize(("kind", "physical"), [("Create", "failed"), ("Update", f"access:{INDEX}")])
def test_an_unexpected_error_still_answers_cloudformation(
    monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]], kind: str, physical: str
) -> None:
    def broken(method: str, url: str, headers: dict[str, str]) -> int | None:
        raise RuntimeError("no credentials")

    collection = Collection([200])
    collection.send = broken  # type: ignore[method-assign]
    run(monkeypatch, collection, kind=kind)
    assert answers[0]["Status"] == "FAILED"
    assert answers[0]["Reason"] == "RuntimeError: no credentials"
    # An Update keeps the resource's id: a new one would make CloudFormation send a Delete for the old one
    assert answers[0]["PhysicalResourceId"] == physical


def test_send_maps_http_errors_to_their_status_and_network_errors_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    def refused(request: Any, timeout: float) -> Any:
        seen.append(timeout)
        raise urllib.error.HTTPError(request.full_url, 403, "Forbidden", {}, io.BytesIO(b"{}"))  # type: ignore[arg-type]

    def unreachable(request: Any, timeout: float) -> Any:
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(probe.urllib.request, "urlopen", refused)
    assert probe.send("HEAD", f"{ENDPOINT}/{INDEX}", {}) == 403
    assert seen == [probe.REQUEST_TIMEOUT_S]
    monkeypatch.setattr(probe.urllib.request, "urlopen", unreachable)
    assert probe.send("HEAD", f"{ENDPOINT}/{INDEX}", {}) is None

    sent: list[tuple[str, str, dict[str, str]]] = []

    @contextlib.contextmanager
    def admitted(request: Any, timeout: float) -> Iterator[Any]:
        sent.append((request.get_method(), request.full_url, dict(request.header_items())))
        yield SimpleNamespace(status=200)

    monkeypatch.setattr(probe.urllib.request, "urlopen", admitted)
    assert probe.send("HEAD", f"{ENDPOINT}/{INDEX}", {"X-Amz-Date": "20261203T000000Z"}) == 200
    assert sent == [("HEAD", f"{ENDPOINT}/{INDEX}", {"X-amz-date": "20261203T000000Z"})]


def test_signing_without_credentials_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.session

    class NoCredentials:
        def get_credentials(self) -> None:
            return None

    monkeypatch.setattr(botocore.session, "get_session", NoCredentials)
    probe.credentials.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"^no AWS credentials found$"):
            probe.signed_headers("HEAD", f"{ENDPOINT}/{INDEX}", "us-west-2")
    finally:
        probe.credentials.cache_clear()


def test_a_probe_never_leaves_the_collection_endpoint() -> None:
    target = probe.parse_target(ENDPOINT, INDEX)
    assert target.region == "us-west-2"
    with pytest.raises(ValueError, match="leaves the collection endpoint"):
        probe.look(target, "GET", "@evil.example.com/", lambda *_: 200)
