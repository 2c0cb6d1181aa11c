"""Level 1 handler fixtures: the prompt function's environment, its Bedrock client stubbed, a caller."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from botocore.stub import Stubber

from prompt_api import bedrock, handler, settings, validation
from tests.conftest import cdk_json_context
from tests.lambda_helpers import LAMBDA_ENV, FakeContext, Reply, assert_error_contract, headers_of

MODEL_ID = "us.amazon.nova-micro-v1:0"
GUARDRAIL_ID = "abcd1234efgh"
GUARDRAIL_VERSION = "3"
SUMMARIZE_ARN = "arn:aws:bedrock:us-east-1:123456789012:prompt/SUMMARIZE1:2"
TRANSLATE_ARN = "arn:aws:bedrock:us-east-1:123456789012:prompt/TRANSLATE1:1"
CATALOG = {
    "summarize": {
        "arn": SUMMARIZE_ARN,
        "description": "Summarize a text for an audience.",
        "variables": ["text", "audience"],
    },
    "translate": {
        "arn": TRANSLATE_ARN,
        "description": "Translate a text.",
        "variables": ["text", "language"],
    },
}
NAMESPACE = LAMBDA_ENV["POWERTOOLS_METRICS_NAMESPACE"]
SERVICE = LAMBDA_ENV["POWERTOOLS_SERVICE_NAME"]
GUARDRAIL_CONFIG = {
    "guardrailIdentifier": GUARDRAIL_ID,
    "guardrailVersion": GUARDRAIL_VERSION,
    "trace": "enabled",
}

REQUEST_METADATA = {"genai-kit-source": "genai-kit-sandbox-prompt-api"}

PROMPT_ENV = {
    "MODEL_ID": MODEL_ID,
    "GUARDRAIL_ID": GUARDRAIL_ID,
    "GUARDRAIL_VERSION": GUARDRAIL_VERSION,
    "PROMPT_CATALOG": json.dumps(CATALOG),
    "REQUEST_METADATA": json.dumps(REQUEST_METADATA),
    # As the stack sets them from cdk.json (the function has no defaults of its own).
    "DEFAULT_TEMPERATURE": str(cdk_json_context()["text_temperature"]),
    "DEFAULT_MAX_TOKENS": str(cdk_json_context()["text_max_tokens"]),
}


# The lru_cache factories, captured before any test patches them.
LAZY_FACTORIES = (
    settings.get_settings,
    bedrock.get_bedrock_client,
    handler.get_tracer,
    handler.get_metrics,
    handler.get_resolver,
    validation.load_schemas,
    validation.validator,
)


def clear_caches() -> None:
    for factory in LAZY_FACTORIES:
        factory.cache_clear()


@pytest.fixture(autouse=True)
def prompt_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The prompt function's environment; fresh lazy caches for every test."""
    for name, value in PROMPT_ENV.items():
        monkeypatch.setenv(name, value)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the handler's Powertools Logger writes (one JSON document a line)."""
    stream = io.StringIO()
    log_handler = handler.logger.registered_handler
    assert isinstance(log_handler, logging.StreamHandler)
    previous = log_handler.setStream(stream)
    try:
        yield stream
    finally:
        log_handler.setStream(previous)


@pytest.fixture
def invoke(context: FakeContext) -> Callable[..., Reply]:
    """Call the Lambda handler and decode the proxy response (checking the error contract on errors)."""

    def call(event: Any, ctx: FakeContext | None = None) -> Reply:
        response = handler.handler(event, cast(Any, ctx or context))
        assert isinstance(response["body"], str)
        reply = Reply(response["statusCode"], json.loads(response["body"]), headers_of(response), response)
        if reply.status >= 400:
            assert_error_contract(reply)
        else:
            assert reply.headers.get("content-type") == "application/json"
        return reply

    return call


@pytest.fixture
def stubber(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The real bedrock-runtime client from the lazy factory, wrapped in a Stubber and injected."""
    client = bedrock.get_bedrock_client()
    stub = Stubber(client)
    monkeypatch.setattr(bedrock, "get_bedrock_client", lambda: client)
    with stub:
        yield stub


def converse_response(
    text: str = "Hello from Nova.",
    *,
    stop_reason: str = "end_turn",
    input_tokens: int = 12,
    output_tokens: int = 5,
    latency_ms: int = 321,
    trace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop_reason,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": latency_ms},
    }
    if trace is not None:
        response["trace"] = trace
    return response
