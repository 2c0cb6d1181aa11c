"""Helpers for the Lambda handler tests of every level: a fake context, API Gateway proxy events, the
error contract every API error meets, EMF documents and CloudFormation's custom-resource answers."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

API_REQUEST_ID = "api-req-0001"
# What the Lambda runtime and the kit's stacks set for every function (the levels' tests add their own keys).
LAMBDA_ENV = {
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "prompt-api-test",
    "POWERTOOLS_METRICS_NAMESPACE": "GenAISpectrumKitTest",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}
UNSET_ENV = ("DEFAULT_TEMPERATURE", "DEFAULT_MAX_TOKENS", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL", "AWS_PROFILE")


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


@contextlib.contextmanager
def failing_sends(client: Any, operation: str, error_class: type[Exception]) -> Iterator[list[str]]:
    """While open, every request ``client`` sends for ``operation`` fails with ``error_class`` before it leaves
    (botocore's before-send hook, on the real client); yields the list of attempts, one "send" each."""
    sends: list[str] = []
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def fail(**_: Any) -> None:
        sends.append("send")
        raise error_class(endpoint_url=client.meta.endpoint_url)  # type: ignore[call-arg]

    client.meta.events.register_first(event, fail)
    try:
        yield sends
    finally:
        client.meta.events.unregister(event, fail)
