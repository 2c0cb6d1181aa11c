"""kit l1 (Level 1, prompt engineering), offline: the signed calls to the prompt API and how answers print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kit.level1_prompt import l1
from tests.kit.operator_helpers import (  # each *_fixture registers its fixture for this module
    API_URL,
    REGION,
    FakeApi,
    FakeCloudFormation,
    api_fixture,  # noqa: F401
    cloudformation_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    run,
    stack,
)

COMPLETION = {
    "text": "RAG grounds answers in your documents.",
    "stopReason": "end_turn",
    "usage": {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21},
    "modelId": "us.amazon.nova-micro-v1:0",
    "guardrail": {"intervened": False, "action": "NONE"},
    "latencyMs": 640,
}


def test_l1_prompt_sends_a_signed_body_and_prints_the_answer(api: FakeApi, mocked: FakeCloudFormation) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    api.answer(200, COMPLETION)
    result = run(l1, "prompt", "What is RAG?", "--temperature", "0.2", "--top-p", "0.9", "--max-tokens", "50")
    assert result.exit_code == 0, result.output
    assert api.sent() == (
        "POST",
        API_URL + "prompt",
        {"prompt": "What is RAG?", "temperature": 0.2, "topP": 0.9, "maxTokens": 50},
    )
    assert api.authorization().startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{REGION}/execute-api/aws4_request" in api.authorization()
    assert "RAG grounds answers in your documents." in result.output
    assert "12 in / 9 out tokens" in result.output and "640 ms" in result.output


def test_l1_template_reads_variables_and_files(api: FakeApi, mocked: FakeCloudFormation, tmp_path: Path) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    notes = tmp_path / "notes.txt"
    notes.write_text("long notes")
    api.answer(200, {**COMPLETION, "template": "summarize", "guardrail": {"intervened": True, "action": "ANONYMIZED"}})
    result = run(l1, "template", "summarize", "audience=ops", f"text=@{notes}")
    assert result.exit_code == 0, result.output
    assert api.sent() == (
        "POST",
        API_URL + "templates/summarize",
        {"variables": {"audience": "ops", "text": "long notes"}},
    )
    assert "template summarize" in result.output and "The guardrail intervened (ANONYMIZED)." in result.output


def test_an_answer_that_is_not_the_apis_object_is_one_line(api: FakeApi, mocked: FakeCloudFormation) -> None:
    """Before: "unexpected AttributeError" when something in front of the API answered 200 with a JSON array."""
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    api.answer(200, [1, 2])
    result = run(l1, "templates")
    assert result.exit_code == 1 and "unexpected" not in result.output
    assert (
        result.output.strip()
        == f"Error: {API_URL}templates answered [1, 2], not the kit API's JSON object: a proxy in the way?"
    )


def test_l1_templates_lists_names_and_variables(api: FakeApi, mocked: FakeCloudFormation) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    api.answer(
        200, {"templates": [{"name": "summarize", "description": "Summarize text", "variables": ["audience", "text"]}]}
    )
    result = run(l1, "templates")
    assert result.exit_code == 0, result.output
    assert api.sent() == ("GET", API_URL + "templates", None)
    assert "summarize" in result.output and "audience, text" in result.output


def test_l1_api_errors_show_the_error_contract(api: FakeApi, mocked: FakeCloudFormation) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    error = {"error": {"code": "out_of_range", "message": "temperature must be from 0 to 1", "field": "temperature"}}
    api.answer(400, error).answer(429, {"error": {"code": "throttled", "message": "slow down"}}, {"Retry-After": "2"})
    first = run(l1, "prompt", "hi", "--temperature", "0.5")  # the fake API answers 400 all the same
    assert first.exit_code == 1
    assert (
        "Error: the API answered HTTP 400 out_of_range (field temperature): temperature must be from 0 to 1"
        in first.output
    )
    second = run(l1, "prompt", "hi")
    assert "HTTP 429 throttled: slow down; retry after 2 s" in second.output


def test_l1_template_variables_must_be_pairs(api: FakeApi) -> None:
    result = run(l1, "template", "summarize", "audience")
    assert result.exit_code == 2
    assert "template variables are KEY=VALUE, got 'audience'" in result.output
    assert api.requests == []


def test_l1_a_dropped_connection_or_credentials_failing_at_signing_are_one_line_errors(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a RemoteDisconnected (urllib does not wrap it) or an SSO token refresh failing when the request was
    signed were not explained: the CLI only said "unexpected" error."""
    from http.client import RemoteDisconnected

    from botocore.exceptions import TokenRetrievalError

    from kit import sigv4

    mocked.deploy(stack("1"), {"ApiUrl": API_URL})

    def dropped(request: Any, timeout: float) -> Any:
        raise RemoteDisconnected("Remote end closed connection without response")

    monkeypatch.setattr(sigv4, "urlopen", dropped)
    result = run(l1, "templates")
    assert result.exit_code == 1
    assert f"calling {API_URL}templates failed: RemoteDisconnected(" in result.output

    def expired(*_: Any, **__: Any) -> Any:
        raise TokenRetrievalError(provider="sso", error_msg="the SSO session has expired")

    monkeypatch.setattr(sigv4, "call", expired)
    result = run(l1, "templates")
    assert result.exit_code == 1
    assert "Error: " in result.output and "Traceback" not in result.output and "unexpected" not in result.output
