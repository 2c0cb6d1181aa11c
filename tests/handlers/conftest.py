"""Offline fixtures for the handler tests: fake AWS env, API Gateway events, a stubbed Bedrock client."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from botocore.stub import Stubber

import common.http
from prompt_api import bedrock, handler, settings, validation

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
NAMESPACE = "GenAISpectrumKitTest"
SERVICE = "prompt-api-test"
API_REQUEST_ID = "api-req-0001"
GUARDRAIL_CONFIG = {
    "guardrailIdentifier": GUARDRAIL_ID,
    "guardrailVersion": GUARDRAIL_VERSION,
    "trace": "enabled",
}

BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": SERVICE,
    "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "MODEL_ID": MODEL_ID,
    "GUARDRAIL_ID": GUARDRAIL_ID,
    "GUARDRAIL_VERSION": GUARDRAIL_VERSION,
    "PROMPT_CATALOG": json.dumps(CATALOG),
}
UNSET_ENV = ("DEFAULT_TEMPERATURE", "DEFAULT_MAX_TOKENS", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_PROFILE")


# The lru_cache factories, captured before any test patches them.
LAZY_FACTORIES = (
    settings.get_settings,
    bedrock.get_bedrock_client,
    handler.get_tracer,
    handler.get_metrics,
    handler.get_resolver,
    validation.load_schemas,
)


def clear_caches() -> None:
    for factory in LAZY_FACTORIES:
        factory.cache_clear()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and the function's environment; fresh lazy caches for every test."""
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Back-off sleeps are recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(common.http, "sleep", recorded.append)
    return recorded


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


@dataclass
class FakeContext:
    remaining_ms: int = 30_000
    function_name: str = "prompt-api"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:prompt-api"
    aws_request_id: str = "lambda-req-0001"
    log_group_name: str = "/aws/lambda/prompt-api"
    log_stream_name: str = "stream"
    calls: list[int] = field(default_factory=list)

    def get_remaining_time_in_millis(self) -> int:
        self.calls.append(self.remaining_ms)
        return self.remaining_ms


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()


def api_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    resource: str | None = None,
    raw_body: str | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """An API Gateway REST proxy event; ``body`` is JSON-encoded unless ``raw_body`` is given."""
    text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
    if base64_body and text is not None:
        text = base64.b64encode(text.encode()).decode()
    parts = path.strip("/").split("/")
    path_parameters = {"name": parts[1]} if len(parts) == 2 and parts[0] == "templates" else None
    return {
        "resource": resource or ("/templates/{name}" if path_parameters else path),
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource or path,
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": API_REQUEST_ID,
            "accountId": "123456789012",
            "identity": {"sourceIp": "203.0.113.10", "userArn": "arn:aws:iam::123456789012:user/tester"},
        },
        "body": text,
        "isBase64Encoded": base64_body,
    }


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: dict[str, Any]


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    """Single- and multi-value headers merged, names lower-cased."""
    merged = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        merged[name.lower()] = ", ".join(values)
    return merged


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The reply is an error with this status, code and field (and nothing else is asserted)."""
    assert reply.status == status, reply.body
    error: dict[str, Any] = reply.body["error"]
    assert error["code"] == code
    assert error.get("field") == field
    return error


def assert_error_contract(reply: Reply) -> None:
    """Every error: JSON content type, exactly ``{"error": {code, message, field?}}``, no stack trace."""
    assert reply.headers.get("content-type") == "application/json"
    assert set(reply.body) == {"error"}
    error = reply.body["error"]
    assert set(error) <= {"code", "message", "field"}
    assert {"code", "message"} <= set(error)
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    for leak in ("Traceback", 'File "', "Exception(", "Error(", "botocore"):
        assert leak not in reply.raw["body"]


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


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents printed to stdout."""
    documents = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


# --- custom resources: CloudFormation's pre-signed response URL -------------------------------------------


class _PutAccepted:
    """What urlopen returns for the PUT of a custom resource's answer."""

    status = 200

    def __enter__(self) -> _PutAccepted:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def cloudformation_answers(
    answers: list[dict[str, Any]], on_put: Callable[[float], None] | None = None
) -> Callable[[Any, float], _PutAccepted]:
    """A fake ``urlopen`` for ``common.custom_resource``: checks it is the PUT to the response URL, records the
    body in ``answers`` and hands the timeout to ``on_put`` (tests check when the answer leaves)."""

    def urlopen(request: Any, timeout: float) -> _PutAccepted:
        assert request.get_method() == "PUT" and request.full_url.startswith("https://cfn-response")
        if on_put is not None:
            on_put(timeout)
        answers.append(json.loads(request.data))
        return _PutAccepted()

    return urlopen
