"""Unit tests of the shared handler building blocks in ``lambdas/common``."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.retries.standard import TransientRetryableChecker
from hypothesis import example, given
from hypothesis import strategies as st

from common import clients, env, errors, http, observability, resolver, training_cleanup
from common import schema as schema_mod
from common.errors import ApiError, BadRequestError, ConfigurationError
from tests.cleanup_helpers import FakeClock
from tests.lambda_helpers import cloudformation_answers

RESOURCE = "us.amazon.nova-micro-v1:0"
LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"


def client_error(code: str, message: str = "AWS message", status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Converse")


# --- error contract ----------------------------------------------------------------------------------------


def test_error_body_has_field_only_when_given() -> None:
    assert BadRequestError("bad", code="out_of_range", field="topP").to_body() == {
        "error": {"code": "out_of_range", "message": "bad", "field": "topP"}
    }
    assert errors.InternalError("boom").to_body() == {"error": {"code": "internal_error", "message": "boom"}}


def test_retry_after_and_extra_headers() -> None:
    err = errors.ThrottledError("slow", retry_after=7, headers={"X-Extra": "1"})
    assert (err.status, err.code) == (429, "throttled")
    assert err.headers() == {"X-Extra": "1", "Retry-After": "7"}
    assert BadRequestError("x").headers() == {}


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (BadRequestError, 400, "invalid_request"),
        (errors.UnsupportedEventError, 400, "unsupported_event"),
        (errors.ModelRejectedInputError, 400, "model_rejected_input"),
        (errors.ModelAccessDeniedError, 403, "model_access_denied"),
        (errors.NotFoundError, 404, "not_found"),
        (errors.MethodNotAllowedError, 405, "method_not_allowed"),
        (errors.ThrottledError, 429, "throttled"),
        (errors.InternalError, 500, "internal_error"),
        (ConfigurationError, 500, "configuration_error"),
        (errors.UpstreamNotFoundError, 502, "upstream_not_found"),
        (errors.ModelError, 502, "model_error"),
        (errors.ModelUnavailableError, 503, "model_unavailable"),
        (errors.ModelTimeoutError, 504, "model_timeout"),
    ],
)
def test_hierarchy_statuses_and_default_codes(cls: type[ApiError], status: int, code: str) -> None:
    err = cls("message")
    assert isinstance(err, ApiError)
    assert (err.status, err.code) == (status, code)


@pytest.mark.parametrize(
    ("aws_code", "status", "code", "retry_after"),
    [
        ("ValidationException", 400, "model_rejected_input", None),
        ("AccessDeniedException", 403, "model_access_denied", None),
        ("ThrottlingException", 429, "throttled", 2),
        ("ServiceQuotaExceededException", 429, "throttled", 2),
        ("TooManyRequestsException", 429, "throttled", 2),
        ("ModelTimeoutException", 504, "model_timeout", 5),
        ("ServiceUnavailableException", 503, "model_unavailable", 5),
        ("ModelNotReadyException", 503, "model_unavailable", 5),
        ("InternalServerException", 503, "model_unavailable", 5),
        ("ResourceNotFoundException", 502, "upstream_not_found", None),
        ("ModelErrorException", 502, "model_error", None),
    ],
)
def test_from_aws_error_maps_every_bedrock_code(aws_code: str, status: int, code: str, retry_after: int | None) -> None:
    mapped = errors.from_aws_error(client_error(aws_code), resource=RESOURCE)
    assert mapped is not None
    assert (mapped.status, mapped.code, mapped.retry_after) == (status, code, retry_after)


def test_from_aws_error_messages() -> None:
    denied = errors.from_aws_error(client_error("AccessDeniedException", "arn:aws:sts::1:x"), resource=RESOURCE)
    missing = errors.from_aws_error(client_error("ResourceNotFoundException"), resource="p", config_hint="MODEL_ID")
    rejected = errors.from_aws_error(client_error("ValidationException", " too\n\nlong  "), resource=RESOURCE)
    assert denied
    assert RESOURCE in denied.message
    assert "Model access" not in denied.message  # that console page is retired: models are enabled by default
    for prerequisite in ("function role", "SCP", "aws-marketplace:Subscribe", "payment method", "use-case form"):
        assert prerequisite in denied.message
    assert "arn:aws:sts" not in denied.message
    assert missing
    assert "'p'" in missing.message
    assert "region and MODEL_ID" in missing.message
    assert rejected
    assert rejected.message == "too long"


@pytest.mark.parametrize(
    "exc",
    [
        ReadTimeoutError(endpoint_url="https://x"),
        errors.DeadlineExceeded("no attempt fits"),
    ],
)
def test_timeouts_map_to_504_with_retry_after(exc: Exception) -> None:
    mapped = errors.from_aws_error(exc, resource=RESOURCE)
    assert mapped is not None
    assert (mapped.status, mapped.code, mapped.headers()) == (504, "model_timeout", {"Retry-After": "5"})
    assert "a shorter request helps" in mapped.message and "maxTokens" not in mapped.message  # no such field given
    named = errors.from_aws_error(exc, resource=RESOURCE, answer_limit_field="maxTokens")
    assert named is not None and "a lower maxTokens (a shorter answer)" in named.message


# What Bedrock sends (a ResourceNotFoundException with these messages), and the troubleshooting page's heading.
USE_CASE_FORM_REFUSAL = (
    "Model use case details have not been submitted for this account. Fill out the Anthropic use case details form "
    "before using the model. If you have already filled out the form, try again in 15 minutes."
)
LEGACY_REFUSAL = (
    "Access denied. This Model is marked by provider as Legacy and you have not been actively using the model in "
    "the last 15 days. Please upgrade to an active model on Amazon Bedrock"
)


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "FTUFormNotFilled"])
def test_use_case_form_not_filled_is_access_denied_with_the_form_advice(code: str) -> None:
    mapped = errors.from_aws_error(client_error(code, USE_CASE_FORM_REFUSAL, 404), resource=RESOURCE)
    assert mapped is not None
    assert (mapped.status, mapped.code) == (403, "model_access_denied")
    assert "use-case form" in mapped.message and RESOURCE in mapped.message and "15 minutes" in mapped.message


def test_a_legacy_model_the_account_stopped_using_is_access_denied_naming_the_setting() -> None:
    mapped = errors.from_aws_error(
        client_error("ResourceNotFoundException", LEGACY_REFUSAL, 404), resource=RESOURCE, model_setting="MODEL_ID"
    )
    assert mapped is not None
    assert (mapped.status, mapped.code) == (403, "model_access_denied")
    assert "Legacy" in mapped.message and "Active model (MODEL_ID)" in mapped.message


def test_a_model_past_its_end_of_life_is_the_deployments_500_naming_the_setting() -> None:
    # Bedrock's words for it, quoted on the Claude 3 Haiku model card (model-card-anthropic-claude-3-haiku.html).
    refusal = "This model version has reached the end of its life."
    mapped = errors.from_aws_error(
        client_error("ResourceNotFoundException", refusal, 404), resource=RESOURCE, model_setting="MODEL_ID"
    )
    assert mapped is not None
    assert (mapped.status, mapped.code) == (500, "configuration_error")
    assert RESOURCE in mapped.message and "end of life" in mapped.message and "Change MODEL_ID" in mapped.message


def test_a_resource_that_is_really_missing_stays_upstream_not_found() -> None:
    mapped = errors.from_aws_error(
        client_error("ResourceNotFoundException", "The specified guardrail does not exist", 404), resource=RESOURCE
    )
    assert mapped is not None and (mapped.status, mapped.code) == (502, "upstream_not_found")


@pytest.mark.parametrize(
    "exc",
    [
        client_error("SomethingNew"),  # a 4xx code the kit does not know
        client_error("SomethingNew", status=404),
        client_error("SomethingNew", status=501),  # not a transient status for botocore either
        ValueError("x"),
    ],
)
def test_unexpected_errors_are_not_mapped(exc: Exception) -> None:
    assert errors.from_aws_error(exc, resource=RESOURCE) is None
    assert not errors.is_retryable_aws_error(exc)


TRANSIENT_CONNECTION_ERRORS = (
    EndpointConnectionError(endpoint_url="https://x"),
    ConnectionClosedError(endpoint_url="https://x"),
    # No connection opened in time: no request reached the service, so a retry repeats no work.
    ConnectTimeoutError(endpoint_url="https://x"),
)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("InternalFailure", status=500),  # unmodeled codes of the Bedrock troubleshooting page
        client_error("ServiceUnavailable", status=503),
        client_error("SomethingNew", status=502),
        client_error("SomethingNew", status=504),
        *TRANSIENT_CONNECTION_ERRORS,
    ],
)
def test_transient_errors_are_retried_then_answered_503_with_retry_after(exc: Exception) -> None:
    assert errors.is_retryable_aws_error(exc)
    mapped = errors.from_aws_error(exc, resource=RESOURCE)
    assert mapped is not None
    assert (mapped.status, mapped.code, mapped.headers()) == (503, "model_unavailable", {"Retry-After": "5"})
    assert "Retry later" in mapped.message


def test_the_kit_retries_what_botocore_standard_mode_treats_as_transient() -> None:
    """Derived from botocore: the statuses and exception classes of its TransientRetryableChecker."""
    checker = TransientRetryableChecker()
    for status in checker._transient_status_codes:
        assert errors.is_retryable_aws_error(client_error("AnyCode", status=status)), status
    for exc in TRANSIENT_CONNECTION_ERRORS:
        assert isinstance(exc, checker._transient_exception_cls)
        assert errors.is_retryable_aws_error(exc)
    # ...except read timeouts, which the kit answers 504 at once: an attempt's read timeout is the time left.
    timeout = ReadTimeoutError(endpoint_url="https://x")
    assert isinstance(timeout, checker._transient_exception_cls)
    assert not errors.is_retryable_aws_error(timeout)


def test_the_daily_token_quota_is_429_without_a_short_retry_after_and_not_retried() -> None:
    """Bedrock's words for it (a ThrottlingException on Converse): the quota refills over the day, not in seconds."""
    daily = client_error("ThrottlingException", "Too many tokens per day, please wait before trying again.", 429)
    assert not errors.is_retryable_aws_error(daily)
    mapped = errors.from_aws_error(daily, resource=RESOURCE)
    assert mapped is not None
    assert (mapped.status, mapped.code, mapped.headers()) == (429, "daily_quota_exceeded", {})
    assert "per day" in mapped.message and RESOURCE in mapped.message
    assert isinstance(mapped, errors.ThrottledError)  # still counted as ModelThrottled for the alarm
    # The per-minute kind stays a short, retried throttle.
    minute = client_error("ThrottlingException", "Too many requests, please wait before trying again.", 429)
    assert errors.is_retryable_aws_error(minute)
    assert errors.from_aws_error(minute, resource=RESOURCE).headers() == {"Retry-After": "2"}  # type: ignore[union-attr]


@pytest.mark.parametrize("service", ["bedrock-runtime", "bedrock-agent-runtime", "bedrock-agent"])
def test_every_modeled_server_error_of_the_bedrock_apis_is_retried_and_unavailable(service: str) -> None:
    """Derived from botocore's service models: each 5xx error shape the kit's calls can raise."""
    model = botocore.session.get_session().get_service_model(service)
    shapes = {shape.name: shape for op in model.operation_names for shape in model.operation_model(op).error_shapes}
    server = {
        name: s.metadata["error"]["httpStatusCode"]
        for name, s in shapes.items()
        if s.metadata.get("error", {}).get("httpStatusCode", 0) >= 500
    }
    assert server  # the models do declare some
    for name, status in server.items():
        exc = client_error(name, status=status)
        assert errors.is_retryable_aws_error(exc), name
        mapped = errors.from_aws_error(exc, resource=RESOURCE)
        assert mapped is not None and mapped.status == 503, name


# The operations the kit calls; Level 1 maps their errors with from_aws_error alone.
KIT_OPERATIONS = (
    ("bedrock-runtime", "Converse"),
    ("bedrock-agent", "GetPrompt"),
    ("bedrock-runtime", "ApplyGuardrail"),
    ("bedrock-agent-runtime", "Retrieve"),
    ("bedrock-agent-runtime", "RetrieveAndGenerate"),
)


@pytest.mark.parametrize(("service", "operation"), KIT_OPERATIONS)
def test_every_modeled_error_of_the_kits_calls_has_an_answer_and_every_403_is_access_denied(
    service: str, operation: str
) -> None:
    """Derived from botocore's service models: no modeled error of a kit call is an unexpected 500."""
    shapes = botocore.session.get_session().get_service_model(service).operation_model(operation).error_shapes
    for shape in shapes:
        status = shape.metadata.get("error", {}).get("httpStatusCode", 400)
        mapped = errors.from_aws_error(client_error(shape.name, status=status), resource=RESOURCE)
        if service in ("bedrock-runtime", "bedrock-agent"):
            assert mapped is not None, shape.name
        if status == 403:
            assert mapped is not None and (mapped.status, mapped.code) == (403, "model_access_denied"), shape.name


# https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html: every code it lists.
@pytest.mark.parametrize(
    ("aws_code", "http_status", "status", "code", "retry_after"),
    [
        ("AccessDeniedException", 403, 403, "model_access_denied", None),
        ("BadCScoreException", 403, 403, "model_access_denied", None),
        ("FTUFormNotFilled", 404, 403, "model_access_denied", None),
        ("MPAgreementBeingCreated", 403, 503, "model_unavailable", 900),
        ("NotAuthorized", 400, 403, "model_access_denied", None),
        ("InternalFailure", 500, 503, "model_unavailable", 5),
        ("ServiceUnavailable", 503, 503, "model_unavailable", 5),
        ("overloaded_error", 529, 503, "model_unavailable", 5),
        ("ThrottlingException", 429, 429, "throttled", 2),
        ("ValidationError", 400, 400, "model_rejected_input", None),
        ("ResourceNotFound", 404, 502, "upstream_not_found", None),
        # The page's Marketplace agreement failures name no code: any other 403 is the account's refusal.
        ("AgreementFailed", 403, 403, "model_access_denied", None),
    ],
)
def test_every_code_of_the_troubleshooting_page_has_its_answer(
    aws_code: str, http_status: int, status: int, code: str, retry_after: int | None
) -> None:
    mapped = errors.from_aws_error(client_error(aws_code, status=http_status), resource=RESOURCE)
    assert mapped is not None, aws_code
    assert (mapped.status, mapped.code, mapped.retry_after) == (status, code, retry_after)


@pytest.mark.parametrize(
    ("aws_code", "http_status"),
    [
        ("IncompleteSignature", 400),
        ("InvalidClientTokenId", 403),
        ("RequestExpired", 400),
        ("InvalidAction", 400),
        ("UnrecognizedClientException", 403),
        # AWS's common errors: an expired session token (the function's role credentials) and a bad signature
        # (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html lists both as 400/403 refusals)
        ("ExpiredTokenException", 403),
        ("InvalidSignatureException", 403),
    ],
)
def test_the_functions_own_credential_failures_stay_unexpected_not_access_denied(
    aws_code: str, http_status: int
) -> None:
    assert errors.from_aws_error(client_error(aws_code, status=http_status), resource=RESOURCE) is None


def test_account_refusals_are_actionable() -> None:
    pending = errors.from_aws_error(client_error("MPAgreementBeingCreated", status=403), resource=RESOURCE)
    barred = errors.from_aws_error(client_error("BadCScoreException", status=403), resource=RESOURCE)
    other = errors.from_aws_error(client_error("AgreementFailed", "INVALID_PAYMENT", status=403), resource=RESOURCE)
    assert pending and barred and other
    assert "Marketplace subscription" in pending.message and "15 minutes" in pending.message
    assert pending.headers() == {"Retry-After": "900"}
    assert not errors.is_retryable_aws_error(client_error("MPAgreementBeingCreated", status=403))  # 15 min: no
    assert "AWS Support" in barred.message and RESOURCE in barred.message
    assert "AgreementFailed" in other.message and "log" in other.message
    assert "INVALID_PAYMENT" not in other.message  # Bedrock's words go to the log only


# https://repost.aws/knowledge-center/bedrock-validation-exception-errors: the deployment's faults, by message.
@pytest.mark.parametrize(
    ("message", "status", "code", "named"),
    [
        (
            "Invocation of model ID anthropic.claude-3-5-sonnet-20241022-v2:0 with on-demand throughput isn't "
            "supported. Retry your request with the ID or ARN of an inference profile that contains this model.",
            500,
            "configuration_error",
            "inference profile",
        ),
        ("Invocation of model ID x with on-demand throughput isn\u2019t supported.", 500, "configuration_error", "us."),
        ("The provided model identifier is invalid.", 500, "configuration_error", "region"),
        ("Your account is not authorized to invoke this API operation.", 403, "model_access_denied", "SCP"),
        ("Input is too long for requested model.", 400, "model_rejected_input", "'prompt'"),
        ("The model does not support topP.", 400, "model_rejected_input", "topP"),
    ],
)
def test_a_validation_exception_is_classified_by_its_message(message: str, status: int, code: str, named: str) -> None:
    mapped = errors.from_aws_error(
        client_error("ValidationException", message),
        resource=RESOURCE,
        model_setting="text_model_id",
        input_field="prompt",
    )
    assert mapped is not None
    assert (mapped.status, mapped.code) == (status, code)
    assert named in mapped.message
    if code == "configuration_error":
        assert "text_model_id" in mapped.message and RESOURCE in mapped.message
    assert mapped.field == ("prompt" if "too long" in message else None)


def test_only_throttling_and_transient_codes_are_retryable() -> None:
    retryable = {code for code in errors.RETRYABLE_CODES if errors.is_retryable_aws_error(client_error(code))}
    assert retryable == errors.THROTTLING_CODES | errors.UNAVAILABLE_CODES
    for code in (
        "ValidationException",
        "AccessDeniedException",
        "ModelTimeoutException",
        "ModelErrorException",
    ):
        assert not errors.is_retryable_aws_error(client_error(code))
    assert not errors.is_retryable_aws_error(ReadTimeoutError(endpoint_url="https://x"))


def test_trim_collapses_whitespace_and_bounds_length() -> None:
    assert errors.trim("a \n  b") == "a b"
    assert errors.trim("x" * 50, 10) == "xxxxxxx..."


# --- responses ---------------------------------------------------------------------------------------------


def test_proxy_error_is_a_complete_api_gateway_response() -> None:
    response = http.proxy_error(errors.ThrottledError("slow", retry_after=3))
    assert response == {
        "statusCode": 429,
        "headers": {"Content-Type": "application/json", "Retry-After": "3"},
        "body": '{"error":{"code":"throttled","message":"slow"}}',
        "isBase64Encoded": False,
    }


def test_error_response_carries_status_headers_and_body() -> None:
    response = http.error_response(errors.MethodNotAllowedError("no", headers={"Allow": "GET"}))
    assert (response.status_code, response.content_type) == (405, "application/json")
    assert response.headers["Allow"] == "GET"
    assert response.body == {"error": {"code": "method_not_allowed", "message": "no"}}


# --- request bodies ----------------------------------------------------------------------------------------


def reject(fn: Callable[[], Any]) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        fn()
    assert caught.value.field == "body"
    return caught.value


@pytest.mark.parametrize("raw", [None, "", {"a": 1}, b"{}"])
def test_missing_or_non_text_body_is_invalid_json(raw: Any) -> None:
    assert reject(lambda: http.decode_body(raw, False)).code == "invalid_json"


def test_base64_body_is_decoded_and_bad_base64_rejected() -> None:
    assert http.decode_body(base64.b64encode('{"a": "é"}'.encode()).decode(), True) == '{"a": "é"}'
    assert reject(lambda: http.decode_body("%%%", True)).code == "invalid_json"
    assert reject(lambda: http.decode_body(base64.b64encode(b"\xff\xfe").decode(), True)).code == "invalid_json"


def test_body_size_limit() -> None:
    assert http.decode_body("x" * 10, False, max_bytes=10) == "x" * 10
    assert reject(lambda: http.decode_body("x" * 11, False, max_bytes=10)).code == "body_too_large"


@pytest.mark.parametrize("is_base64", [False, True])
def test_body_size_counts_utf8_bytes_not_characters(is_base64: bool) -> None:
    # 512 KiB is a byte size (the docs' and Lambda's 6 MB payload limit count bytes): 200,000 three-byte characters
    # are 600,000 bytes, over it, in fewer than 524,288 characters.
    text = json.dumps({"prompt": "\u20ac" * 200_000}, ensure_ascii=False)
    assert len(text) < http.MAX_BODY_BYTES < len(text.encode())
    raw = base64.b64encode(text.encode()).decode() if is_base64 else text
    error = reject(lambda: http.decode_body(raw, is_base64))
    assert (error.code, error.field, error.status) == ("body_too_large", "body", 413)
    assert "524288 bytes (512 KiB)" in str(error)
    fits = "\u20ac" * (http.MAX_BODY_BYTES // 3)
    assert http.decode_body(fits, False) == fits
    assert http.decode_body("\ud800", False) == "\ud800"  # a lone surrogate is counted, not refused here


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "invalid_json"),
        ("NaN", "invalid_json"),
        ('{"a": -Infinity}', "invalid_json"),
        ("1" * 5000, "invalid_json"),  # beyond Python's int-to-str digit limit
        ("[1]", "invalid_body"),
        ("true", "invalid_body"),
        ("3", "invalid_body"),
    ],
)
def test_parse_json_object_rejections(text: str, code: str) -> None:
    assert reject(lambda: http.parse_json_object(text)).code == code


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ('{"a": ' + "9" * 5000 + "}", "an integer of more than 4300 digits"),  # valid JSON: not called invalid
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "deeper than the API reads"),  # valid JSON too
    ],
)
def test_a_body_the_parser_cannot_read_is_told_apart_from_one_that_is_not_json(text: str, says: str) -> None:
    error = reject(lambda: http.parse_json_object(text))
    assert (error.code, error.field) == ("invalid_json", "body") and says in error.message


def test_parse_json_object_accepts_objects() -> None:
    assert http.parse_json_object('{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}


def test_json_type_names() -> None:
    values: tuple[Any, ...] = (None, True, 1, 1.5, "s", [], {})
    names = [http.json_type_name(v) for v in values]
    assert names == ["null", "a boolean", "a number", "a number", "a string", "an array", "an object"]


# --- environment settings ----------------------------------------------------------------------------------


def config_error(fn: Callable[[], Any], name: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        fn()
    assert name in caught.value.message
    assert caught.value.status == 500


def test_env_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_A", "  value ")
    monkeypatch.setenv("KIT_BLANK", "   ")
    monkeypatch.delenv("KIT_MISSING", raising=False)
    assert env.env_str("KIT_A") == "value"
    assert env.env_str("KIT_MISSING", "fallback") == "fallback"
    config_error(lambda: env.env_str("KIT_MISSING"), "KIT_MISSING")
    config_error(lambda: env.env_str("KIT_BLANK"), "KIT_BLANK")


@pytest.mark.parametrize("raw", ["abc", "nan", "inf", "1.01", "-0.1"])
def test_env_float_rejects_invalid_values(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("KIT_F", raw)
    config_error(lambda: env.env_float("KIT_F", 0.5, 0, 1), "KIT_F")


def test_env_float_and_int_defaults_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIT_F", raising=False)
    monkeypatch.setenv("KIT_I", "42")
    assert env.env_float("KIT_F", 0.5, 0, 1) == 0.5
    monkeypatch.setenv("KIT_F", "1")
    assert env.env_float("KIT_F", 0.5, 0, 1) == 1.0
    assert env.env_int("KIT_I", 1, 1, 100) == 42


@pytest.mark.parametrize("raw", ["4.5", "x", "0", "101"])
def test_env_int_rejects_invalid_values(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("KIT_I", raw)
    config_error(lambda: env.env_int("KIT_I", 1, 1, 100), "KIT_I")


def test_env_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_J", '{"a": 1}')
    assert env.env_json_object("KIT_J") == {"a": 1}
    for raw in ("[1]", "{nope"):
        monkeypatch.setenv("KIT_J", raw)
        config_error(lambda: env.env_json_object("KIT_J"), "KIT_J")


@pytest.mark.parametrize(
    ("raw", "ok"), [("DRAFT", True), ("12", True), ("  7 ", True), ("0", False), ("DRAFT1", False)]
)
def test_env_matching_matches_the_whole_value(monkeypatch: pytest.MonkeyPatch, raw: str, ok: bool) -> None:
    monkeypatch.setenv("KIT_V", raw)
    version = re.compile(r"DRAFT|[1-9][0-9]{0,7}")
    if ok:
        assert env.env_matching("KIT_V", version, "DRAFT or a version number") == raw.strip()
    else:
        config_error(lambda: env.env_matching("KIT_V", version, "DRAFT or a version number"), "KIT_V")


# --- deadline-aware retries --------------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in turn, then returns 'ok' (the read timeout it is given is not used)."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, read_timeout_s: int = 0) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_success_needs_no_retry(sleeps: list[float]) -> None:
    fn = Flaky()
    assert http.call_with_deadline(fn) == "ok"
    assert (fn.calls, sleeps) == (1, [])


def test_retries_retryable_errors_with_exponential_cap(sleeps: list[float]) -> None:
    fn = Flaky(client_error("ThrottlingException"), client_error("ServiceUnavailableException"))
    retries: list[tuple[int, str | None, float]] = []

    result = http.call_with_deadline(
        fn, rand=lambda: 1.0, on_retry=lambda n, exc, d: retries.append((n, errors.aws_error_code(exc), d))
    )

    assert (result, fn.calls, sleeps) == ("ok", 3, [0.25, 0.5])
    assert retries == [(1, "ThrottlingException", 0.25), (2, "ServiceUnavailableException", 0.5)]


def test_gives_up_after_max_attempts(sleeps: list[float]) -> None:
    fn = Flaky(*(client_error("ThrottlingException") for _ in range(5)))
    with pytest.raises(ClientError):
        http.call_with_deadline(fn)
    assert (fn.calls, len(sleeps)) == (3, 2)


def test_non_retryable_error_is_raised_at_once(sleeps: list[float]) -> None:
    fn = Flaky(client_error("ValidationException"))
    with pytest.raises(ClientError):
        http.call_with_deadline(fn)
    assert (fn.calls, sleeps) == (1, [])


class Clock:
    """Simulated Lambda time: attempts and back-offs move it, nothing sleeps."""

    def __init__(self, remaining_ms: int) -> None:
        self.left = float(remaining_ms)

    def remaining(self) -> int:
        return int(self.left)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Clock]:
    def make(remaining_ms: int) -> Clock:
        made = Clock(remaining_ms)
        monkeypatch.setattr(http, "sleep", lambda s: setattr(made, "left", made.left - s * 1000))
        return made

    return make


class SlowAttempts:
    """Each attempt takes ``latency_s`` (cut at its read timeout) and then fails; the timeouts are recorded."""

    def __init__(self, clock: Clock, latency_s: float, code: str = "ServiceUnavailableException") -> None:
        self.clock, self.latency_s, self.code = clock, latency_s, code
        self.timeouts: list[int] = []

    def __call__(self, read_timeout_s: int) -> str:
        self.timeouts.append(read_timeout_s)
        if self.latency_s > read_timeout_s:
            self.clock.left -= read_timeout_s * 1000
            raise ReadTimeoutError(endpoint_url="https://x")
        self.clock.left -= self.latency_s * 1000
        raise client_error(self.code)


@pytest.mark.parametrize("budget_ms", [25_000, 29_000, 15_000, 8_000, 5_000])
@pytest.mark.parametrize("latency_s", [0.05, 4, 10, 30])
def test_bounded_attempts_always_leave_the_response_margin(
    clock: Callable[[int], Clock], budget_ms: int, latency_s: float
) -> None:
    policy = http.DEFAULT_RETRY_POLICY
    sim = clock(budget_ms)
    attempt = SlowAttempts(sim, latency_s)

    with pytest.raises((ClientError, ReadTimeoutError, errors.DeadlineExceeded)):
        http.call_with_deadline(attempt, remaining_ms=sim.remaining, rand=lambda: 1.0)

    assert sim.left >= policy.safety_margin_ms
    assert all(policy.min_read_timeout_s <= t <= policy.max_read_timeout_s for t in attempt.timeouts)


def test_each_attempt_gets_the_time_left_minus_connect_and_margin(clock: Callable[[int], Clock]) -> None:
    sim = clock(25_000)
    attempt = SlowAttempts(sim, 6)

    with pytest.raises(ClientError):
        http.call_with_deadline(attempt, remaining_ms=sim.remaining, rand=lambda: 1.0)

    # 25 s: 20 (capped); after 6 s + 0.25 s: floor(18.75 - 1 - 3) = 14; after 6 s + 0.5 s: floor(12.25 - 4) = 8.
    assert attempt.timeouts == [20, 14, 8]


def test_a_retry_that_cannot_take_as_long_as_the_last_attempt_is_not_made(clock: Callable[[int], Clock]) -> None:
    sim = clock(25_000)
    attempt = SlowAttempts(sim, 10)

    with pytest.raises(ClientError) as raised:
        http.call_with_deadline(attempt, remaining_ms=sim.remaining, rand=lambda: 1.0)

    assert errors.aws_error_code(raised.value) == "ServiceUnavailableException"  # answered 503 + Retry-After
    assert attempt.timeouts == [20, 10]


def test_no_first_attempt_when_none_fits(clock: Callable[[int], Clock]) -> None:
    sim = clock(4_999)  # 1 s margin + 3 s connect + 1 s minimal read do not fit
    attempt = SlowAttempts(sim, 0.1)

    with pytest.raises(errors.DeadlineExceeded):
        http.call_with_deadline(attempt, remaining_ms=sim.remaining)
    assert attempt.timeouts == []


def test_without_a_deadline_attempts_get_the_full_read_timeout(sleeps: list[float]) -> None:
    timeouts: list[int] = []

    def attempt(read_timeout_s: int) -> str:
        timeouts.append(read_timeout_s)
        if len(timeouts) < 3:
            raise client_error("ThrottlingException")
        return "ok"

    assert http.call_with_deadline(attempt) == "ok"
    assert timeouts == [20, 20, 20]


def test_read_timeout_for_the_time_left() -> None:
    policy = http.RetryPolicy(safety_margin_ms=1000, connect_timeout_s=3, max_read_timeout_s=20)
    assert [policy.read_timeout_s(ms) for ms in (30_000, 24_000, 23_999, 5_000, 4_999, 0)] == [20, 20, 19, 1, 0, 0]


def test_backoff_is_capped_by_max_delay() -> None:
    policy = http.RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=3.0)
    assert [policy.backoff_s(n, lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


@given(attempt=st.integers(min_value=1, max_value=60), rand=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_full_jitter_stays_within_the_exponential_envelope(attempt: int, rand: float) -> None:
    policy = http.DEFAULT_RETRY_POLICY
    delay = policy.backoff_s(attempt, lambda: rand)
    assert 0 <= delay <= min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))


def test_json_response_is_json_typed() -> None:
    response = http.json_response(201, {"a": 1}, {"X-Test": "1"})
    assert (response.status_code, response.content_type, response.body) == (201, "application/json", {"a": 1})
    assert response.headers["X-Test"] == "1"


# --- account ids never reach a caller ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("arn:aws:bedrock:us-east-1:123456789012:prompt/P:1", "arn:aws:bedrock:us-east-1:<account-id>:prompt/P:1"),
        ("User: arn:aws:sts::210987654321:assumed-role/r", "User: arn:aws:sts::<account-id>:assumed-role/r"),
        ("account 123456789012.", "account <account-id>."),
        ("1234567890123 and 12345678901", "1234567890123 and 12345678901"),  # 13 and 11 digits: not an account
    ],
)
def test_every_error_message_has_account_ids_redacted(text: str, shown: str) -> None:
    assert errors.redact(text) == shown
    assert BadRequestError(text).message == shown
    assert shown in http.proxy_error(errors.InternalError(text))["body"]


def test_aws_messages_are_redacted_after_mapping() -> None:
    exc = client_error("ValidationException", "Model arn:aws:bedrock:us-east-1:123456789012:x is invalid")
    mapped = errors.from_aws_error(exc, resource="arn:aws:bedrock:us-east-1:123456789012:prompt/P:1")
    assert mapped is not None
    assert "123456789012" not in str(mapped.to_body())
    missing = errors.from_aws_error(client_error("ResourceNotFoundException"), resource="arn:x:123456789012:p")
    assert missing is not None and "123456789012" not in missing.message


# --- JSON Schema: fastjsonschema's rejections in the kit's error contract ----------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "ok"),
    [
        ("^[0-9a-zA-Z._:-]+$", "abc:1.2_3-4", True),
        ("^[0-9a-zA-Z._:-]+$", "abc\n", False),
        ("^[0-9a-zA-Z._:-]+$", "abc\n\n", False),
        ("^a$|^b$", "b\n", False),
        ("^a\\$$", "a$", True),
        ("\\S", " x ", True),
        ("\\S", " \n ", False),
    ],
)
def test_schema_patterns_follow_json_schema_end_anchors(pattern: str, text: str, ok: bool) -> None:
    check = schema_mod.compile_schema(
        {"type": "object", "properties": {"sessionId": {"type": "string", "pattern": pattern}}}
    )
    if ok:
        schema_mod.validate({"sessionId": text}, check)
    else:
        with pytest.raises(BadRequestError) as raised:
            schema_mod.validate({"sessionId": text}, check)
        assert (raised.value.code, raised.value.field) == ("invalid_value", "sessionId")


NESTED = {
    "$schema": "http://json-schema.org/draft-04/schema#",  # draft-04, as the kit's files: 2.0 is not an integer
    "type": "object",
    "additionalProperties": False,
    "required": ["a"],
    "properties": {
        "a": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string", "maxLength": 3}},
        "n": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "missing_field", "a"),
        ({"n": 1}, "missing_field", "a"),
        ({"b": 1}, "unknown_field", "b"),  # an unknown key is reported before the missing one it may misspell
        ({"a": {}, "b": 1}, "unknown_field", "b"),
        ({"a": []}, "invalid_type", "a"),
        ({"a": {"x.y": 1}}, "invalid_type", "a.x.y"),  # a key holding dots is shown as it is
        ({"a": {"x": "long"}}, "invalid_length", "a.x"),
        ({"a": {"x": "1", "y": "2", "z": "3"}}, "too_many_fields", "a"),
        ({"a": {}, "n": 0}, "out_of_range", "n"),
        ({"a": {}, "n": 2.0}, "invalid_type", "n"),
        ({"a": {}, "n": True}, "invalid_type", "n"),
        ({"a": {"k" * 100: 1}}, "invalid_type", "a." + "k" * 64 + "..."),
    ],
)
def test_every_rejection_names_the_field_and_has_its_code(body: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        schema_mod.validate(body, schema_mod.compile_schema(NESTED))
    assert (raised.value.code, raised.value.field, raised.value.status) == (code, field, 400)
    assert field.split(".")[0] in raised.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"a": {"x": "a\ud800"}}, "a.x"),  # a lone high surrogate, as json.loads leaves "\\ud800"
        ({"a": {"x": "\udc00b"}}, "a.x"),  # a lone low one
        ({"a": {"\ud800": "1"}}, "a.\ufffd"),  # in a key: shown replaced, so the message can be written out
        ({"a": {}, "list": ["ok", "\udfff"]}, "list[1]"),
    ],
)
def test_an_unpaired_surrogate_is_a_400_naming_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        schema_mod.validate(body, schema_mod.compile_schema({**NESTED, "additionalProperties": True}))
    assert (raised.value.code, raised.value.field) == ("invalid_value", field)
    assert "unpaired UTF-16 surrogate" in raised.value.message
    raised.value.message.encode("utf-8")  # writable: no surrogate reaches the body or a log line


def test_a_surrogate_pair_is_one_character_and_deep_nesting_is_walked_without_recursion() -> None:
    assert schema_mod.unpaired_surrogate(json.loads('{"a": "\\ud83d\\ude00"}')) is None  # the pair: one emoji
    deep: Any = "\ud800"
    for _ in range(sys.getrecursionlimit() * 2):
        deep = [deep]
    assert schema_mod.unpaired_surrogate({"d": deep}) == "d" + "[0]" * (sys.getrecursionlimit() * 2)


def test_a_field_path_is_bounded_whatever_the_keys() -> None:
    with pytest.raises(BadRequestError) as raised:
        schema_mod.validate({"a": {"k." * 5000: 1}}, schema_mod.compile_schema(NESTED))
    assert raised.value.field is not None
    assert len(raised.value.field) <= schema_mod.SHOWN_FIELD_CHARS + 3


def test_schema_files_may_use_only_keywords_with_an_error_code(tmp_path: Any) -> None:
    path = tmp_path / "schemas.json"
    path.write_text('{"M": {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}}')
    with pytest.raises(ValueError, match=r"M\.a: unsupported JSON Schema keywords \['format'\]"):
        schema_mod.load_schema_file(str(path))


@pytest.mark.parametrize("path", sorted(LAMBDAS.glob("*/*/request_schemas.json")), ids=lambda p: p.parent.name)
def test_every_request_schema_file_loads_and_compiles(path: Path) -> None:
    # compiled on a function's first request: a schema fastjsonschema cannot compile would fail every call
    for name, model in schema_mod.load_schema_file(str(path)).items():
        assert model["$schema"] == "http://json-schema.org/draft-04/schema#", name
        schema_mod.compile_schema(model)


# --- tracing: Powertools' Tracer decides whether it is on ---------------------------------------------------


class Probe:
    """A Tracer stand-in: ``disabled`` is what Powertools decided."""

    def __init__(self, disabled: bool) -> None:
        self.disabled = disabled


def test_make_tracer_follows_the_tracers_own_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    logger: Any = None
    on: Any = Probe(disabled=False)
    off: Any = Probe(disabled=True)

    assert observability.make_tracer(logger, lambda: on) is on
    assert observability.make_tracer(logger, lambda: off) is None


def test_tracing_is_off_wherever_powertools_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # In Lambda with POWERTOOLS_TRACE_DISABLED false, but under Chalice's local mode: Powertools turns tracing off.
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setenv("AWS_CHALICE_CLI_MODE", "true")
    logger: Any = None

    assert observability.make_tracer(logger) is None


def test_powertools_trace_disabled_turns_tracing_off_in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    logger: Any = None

    assert observability.make_tracer(logger) is None


# --- routes: a path parameter is any one segment -----------------------------------------------------------


@pytest.mark.parametrize("segment", ["plain", "a\tb", "🙂", '"q"', "x#y", "a%2Fb", "it's"])
def test_a_path_parameter_matches_any_one_segment(segment: str) -> None:
    app = resolver.KitRestResolver()
    seen: list[str] = []

    @app.post("/templates/<name>")
    def route(name: str) -> dict[str, str]:
        seen.append(name)
        return {}

    event = {"httpMethod": "POST", "path": f"/templates/{segment}", "requestContext": {}, "headers": {}}
    assert app.resolve(event, None)["statusCode"] == 200
    assert seen == [segment]
    assert resolver.route_pattern("/templates/<name>").match(f"/templates/{segment}")


@pytest.mark.parametrize("path", ["/templates/a/b", "/templates/", "/templates/a\n/b", "/prompt\n/x"])
def test_a_path_parameter_never_spans_segments(path: str) -> None:
    assert not resolver.route_pattern("/templates/<name>").match(path)


def test_static_routes_match_whole_paths_only() -> None:
    pattern = resolver.route_pattern("/prompt")
    assert pattern.match("/prompt") and pattern.match("/prompt/")
    assert not pattern.match("/prompt\n") and not pattern.match("/promptx")


# --- bounded clients ---------------------------------------------------------------------------------------


def test_bounded_clients_are_cached_per_timeout_and_never_retry() -> None:
    client = clients.bounded_client("bedrock-agent-runtime", 3, 9)

    assert clients.bounded_client("bedrock-agent-runtime", 3, 9) is client
    assert clients.bounded_client("bedrock-agent-runtime", 3, 8) is not client
    assert client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 9)


# --- what the functions may import: the runtime, the Powertools layer and the kit's own code -----------------

# The Lambda runtime's SDK, and what the managed Powertools v3 layer ships (built with every extra).
RUNTIME_AND_LAYER = {"boto3", "botocore", "aws_lambda_powertools", "fastjsonschema", "pydantic", "aws_xray_sdk"}


def test_functions_import_only_the_runtime_the_layer_and_the_kit() -> None:
    own = {"common"} | {path.parent.name for path in LAMBDAS.glob("*/*/__init__.py")}
    allowed = set(sys.stdlib_module_names) | RUNTIME_AND_LAYER | own

    def imports(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
        return found

    found = {(module, path.name) for path in LAMBDAS.rglob("*.py") for module in imports(path)}
    assert {("fastjsonschema", "schema.py"), ("aws_lambda_powertools", "handler.py")} <= {
        (module.split(".")[0], where) for module, where in found
    }  # the scan works
    # A kit module outside lambdas/ that a function ships (stage_function_code's ``modules``) imports only the
    # standard library itself (test_packaging checks that the asset holds it).
    kit_root = LAMBDAS.parent
    borrowed = {module for module, _ in found if (kit_root / Path(*module.split("."))).with_suffix(".py").is_file()}
    for module in borrowed:
        source = (kit_root / Path(*module.split("."))).with_suffix(".py")
        assert {name.split(".")[0] for name in imports(source)} <= set(sys.stdlib_module_names), module
    assert sorted((m, where) for m, where in found if m.split(".")[0] not in allowed and m not in borrowed) == []


# --- training-job names ----------------------------------------------------------------------------------------


def test_a_training_job_name_that_only_starts_like_a_run_is_not_the_kits() -> None:
    # A run's job is the name prefix and the MD5 of its execution ARN in lowercase hex (States.Hash). A job someone
    # named after one of the kit's, with something after the hash, is not the kit's by name.
    prefix = "genai-kit-sandbox-sft-"
    arn = "arn:aws:states:us-east-1:123456789012:execution:genai-kit-sandbox-sft-pipeline:kit-run-1"
    run = prefix + hashlib.md5(arn.encode()).hexdigest()
    assert training_cleanup.is_run_name(run, prefix)
    # TrainingJobName pattern and length (CreateTrainingJob, the sagemaker botocore model): each is a job name
    # SageMaker accepts.
    name = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrainingJobName").metadata
    for foreign in (f"{run}-extra", f"{run}-retry2", f"{run}0"):
        assert re.fullmatch(name["pattern"], foreign) and len(foreign) <= name["max"], foreign
        assert not training_cleanup.is_run_name(foreign, prefix), foreign


# --- custom resources: the answer stays under CloudFormation's 4,096 bytes ---------------------------------


@given(st.text(max_size=3_000))
def test_a_custom_resource_answer_fits_cloudformations_limit_whatever_the_reason(reason: str) -> None:
    """The Reason was cut to 1,000 characters, but JSON escapes a non-ASCII character as 6 bytes (12 beyond the
    Basic Multilingual Plane): 1,000 of them made a 6,014-byte answer, over the 4,096 bytes CloudFormation takes
    (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html)."""
    from common import custom_resource

    answers: list[dict[str, Any]] = []
    event = {
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/" + "s" * 128 + "/" + "0" * 36,
        "RequestId": "0" * 36,
        "LogicalResourceId": "L" * 255,
        "ResponseURL": "https://cfn-response.example/put",
    }
    original = custom_resource.urllib.request.urlopen
    try:
        custom_resource.urllib.request.urlopen = cloudformation_answers(answers)  # type: ignore[assignment]
        custom_resource.respond(event, "FAILED", reason, "p" * 1024, timeout_s=1, logger=_NullLog())
    finally:
        custom_resource.urllib.request.urlopen = original  # type: ignore[assignment]
    [answer] = answers
    assert len(json.dumps(answer).encode()) <= 4_096
    kept = answer["Reason"]
    assert kept == reason or (kept.endswith(custom_resource.ELLIPSIS) and reason.startswith(kept[:-1]))
    assert custom_resource.encoded_length(kept) <= custom_resource.MAX_REASON


@pytest.mark.parametrize("url", ["http://cfn-response.example/put", "file:///etc/passwd", "ftp://x/y"])
def test_a_custom_resource_answer_goes_only_to_an_https_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudFormation's ResponseURL is a pre-signed S3 https URL; anything else (urllib also opens file: and ftp:
    URLs) is refused before any request is made."""
    from common import custom_resource

    opened: list[Any] = []
    monkeypatch.setattr(custom_resource.urllib.request, "urlopen", lambda *a, **k: opened.append(a))
    event = {"StackId": "s", "RequestId": "r", "LogicalResourceId": "L", "ResponseURL": url}
    with pytest.raises(ValueError, match="not an https URL"):
        custom_resource.respond(event, "SUCCESS", "ok", "p", timeout_s=1, logger=_NullLog())
    assert opened == []


def test_an_execution_an_earlier_look_stopped_is_not_stopped_or_counted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """ListExecutions is eventually consistent: an execution just stopped may still be listed RUNNING on the next
    look, which must neither stop it again nor count it twice (the cleanup's answer counts what it stopped)."""
    from common import executions, stack_cleanup

    states = _StepFunctions(_executions(1))  # still listed RUNNING on the second look
    monkeypatch.setattr(stack_cleanup, "client", lambda service: states)
    deadline = stack_cleanup.Deadline(900_000, resume_hint="-")
    seen: set[str] = set()
    assert executions.stop_executions("m", deadline, "deleted", seen) == 1
    assert executions.stop_executions("m", deadline, "deleted", seen) == 0
    assert states.stops == _executions(1)


def test_a_listing_asks_for_no_page_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing's next page is a call like any other: when the page before it took the time that was left, it
    fails at the deadline naming the resume step, rather than start a call the answer has no time left for."""
    from common import stack_cleanup

    clock = FakeClock()
    monkeypatch.setattr(stack_cleanup, "clock", clock)
    asked: list[str | None] = []

    def list_jobs(**params: Any) -> dict[str, Any]:
        asked.append(params.get("nextToken"))
        clock.now += 100  # each page took its worst case and more
        return {"jobs": [len(asked)], **({"nextToken": f"page-{len(asked) + 1}"} if len(asked) < 5 else {})}

    deadline = stack_cleanup.Deadline((stack_cleanup.ANSWER_MARGIN_S + 150) * 1000, resume_hint="run it again")
    monkeypatch.setattr(stack_cleanup, "_deadline", deadline)  # as while answer() runs a request
    items: list[Any] = []
    with pytest.raises(stack_cleanup.CleanupError, match=r"^Deadline reached while listing\. run it again$"):
        items.extend(stack_cleanup.pages(list_jobs, "jobs"))
    assert asked == [None, "page-2"] and items == [1, 2]  # 150 s: two pages started in time, not a third


def test_a_pause_at_the_deadline_fails_without_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll that itself took the time left ends the wait there: no sleep of what is left (none, or less than
    none, which time.sleep refuses), and the error names what was awaited and the resume step."""
    from common import stack_cleanup

    clock = FakeClock()
    monkeypatch.setattr(stack_cleanup, "clock", clock)
    monkeypatch.setattr(stack_cleanup, "sleep", clock.sleep)
    deadline = stack_cleanup.Deadline((stack_cleanup.ANSWER_MARGIN_S + 20) * 1000, resume_hint="run it again")
    polls: list[float] = []

    def pending() -> list[str]:
        polls.append(clock.now)
        clock.now += 25  # the poll's calls took longer than the time left
        return ["job-1"]

    with pytest.raises(stack_cleanup.CleanupError, match=r"^Deadline reached while stopping \(job-1\)\. run"):
        stack_cleanup.wait_until_done(pending, "stopping", deadline)
    assert polls == [0.0] and clock.sleeps == []


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "DeleteThing")


def test_a_delete_when_free_counts_a_resource_already_gone_as_deleted_and_waits_out_a_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common import stack_cleanup

    clock = FakeClock()
    monkeypatch.setattr(stack_cleanup, "clock", clock)
    monkeypatch.setattr(stack_cleanup, "sleep", clock.sleep)
    answers = [_client_error("ConflictException"), _client_error("ResourceNotFoundException")]
    asked: list[dict[str, Any]] = []

    def delete(**params: Any) -> None:
        asked.append(params)
        raise answers.pop(0)

    deadline = stack_cleanup.Deadline(900_000, resume_hint="-")
    stack_cleanup.delete_when_free(delete, "deleting the thing", deadline, thingId="t-1")  # no error
    assert asked == [{"thingId": "t-1"}] * 2 and clock.sleeps == [stack_cleanup.POLL_INTERVAL_S]
    answers.append(_client_error("ValidationException"))  # any other refusal is the caller's to report
    with pytest.raises(ClientError, match="ValidationException"):
        stack_cleanup.delete_when_free(delete, "deleting the thing", deadline, thingId="t-1")


def test_a_delete_when_free_starts_no_call_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from common import stack_cleanup

    clock = FakeClock()
    monkeypatch.setattr(stack_cleanup, "clock", clock)
    deadline = stack_cleanup.Deadline(900_000, resume_hint="run it again")
    clock.now = deadline.end  # the steps before it took the time that was left
    asked: list[dict[str, Any]] = []
    with pytest.raises(stack_cleanup.CleanupError, match=r"^Deadline reached while deleting the thing\. run it"):
        stack_cleanup.delete_when_free(lambda **params: asked.append(params), "deleting the thing", deadline)
    assert asked == []


class _StepFunctions:
    """ListExecutions and StopExecution of one state machine, each answer or error scripted; a stop takes
    ``stop_s`` on the clock."""

    def __init__(self, running: list[str], clock: FakeClock | None = None, stop_s: float = 0.0) -> None:
        self.running, self.clock, self.stop_s = running, clock, stop_s
        self.list_error: ClientError | None = None
        self.stop_errors: dict[str, ClientError] = {}
        self.stops: list[str] = []

    def list_executions(self, **_: Any) -> dict[str, Any]:
        if self.list_error:
            raise self.list_error
        return {"executions": [{"executionArn": arn} for arn in self.running]}

    def stop_execution(self, executionArn: str, **_: Any) -> dict[str, Any]:
        self.stops.append(executionArn)
        if self.clock:
            self.clock.now += self.stop_s
        if executionArn in self.stop_errors:
            raise self.stop_errors[executionArn]
        return {}


def _executions(n: int) -> list[str]:
    return [f"arn:aws:states:us-east-1:123456789012:execution:m:run-{i}" for i in range(1, n + 1)]


def test_stopping_executions_starts_no_stop_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from common import executions, stack_cleanup

    clock = FakeClock()
    monkeypatch.setattr(stack_cleanup, "clock", clock)
    states = _StepFunctions(_executions(4), clock, stop_s=100)  # each stop took its worst case and more
    monkeypatch.setattr(stack_cleanup, "client", lambda service: states)
    deadline = stack_cleanup.Deadline((stack_cleanup.ANSWER_MARGIN_S + 150) * 1000, resume_hint="run it again")
    with pytest.raises(stack_cleanup.CleanupError, match=r"^Deadline reached while stopping the pipeline's exec"):
        executions.stop_executions("m", deadline, "deleted")
    assert states.stops == _executions(2)


def test_an_execution_that_ended_meanwhile_is_skipped_and_other_refusals_are_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common import executions, stack_cleanup

    arns = _executions(3)
    states = _StepFunctions(arns)
    states.stop_errors[arns[0]] = _client_error("ExecutionDoesNotExist")
    monkeypatch.setattr(stack_cleanup, "client", lambda service: states)
    deadline = stack_cleanup.Deadline(900_000, resume_hint="-")
    assert executions.stop_executions("m", deadline, "deleted") == 2  # the other two; the ended one not counted
    assert states.stops == arns
    states.stop_errors[arns[1]] = _client_error("AccessDeniedException")
    with pytest.raises(ClientError, match="AccessDeniedException"):
        executions.stop_executions("m", deadline, "deleted")


@pytest.mark.parametrize(("code", "raised"), [("StateMachineDoesNotExist", False), ("AccessDeniedException", True)])
def test_only_a_state_machine_already_gone_means_nothing_to_stop(
    monkeypatch: pytest.MonkeyPatch, code: str, raised: bool
) -> None:
    """Deleted outside the stack, nothing of it runs; a refused listing is a failure to report, not nothing."""
    from common import executions, stack_cleanup

    states = _StepFunctions(_executions(1))
    states.list_error = _client_error(code)
    monkeypatch.setattr(stack_cleanup, "client", lambda service: states)
    deadline = stack_cleanup.Deadline(900_000, resume_hint="-")
    if raised:
        with pytest.raises(ClientError, match=code):
            executions.stop_executions("m", deadline, "deleted")
    else:
        assert executions.stop_executions("m", deadline, "deleted") == 0
    assert states.stops == []


def test_a_reason_is_cut_only_when_it_does_not_fit() -> None:
    from common.custom_resource import ELLIPSIS, MAX_REASON, fit_reason

    assert fit_reason("a" * MAX_REASON) == "a" * MAX_REASON
    assert fit_reason("é" * 1_000) == "é" * 165 + ELLIPSIS  # 166 escaped characters of 6 bytes fit in 1,000
    assert fit_reason("a" * 2_000) == "a" * (MAX_REASON - 6) + ELLIPSIS


class _NullLog:
    def info(self, *args: object, **kwargs: object) -> None:
        return None


def test_time_left_is_the_sooner_of_the_functions_and_the_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 20_000

    received = 1_800_000_000_000
    event = {"requestContext": {"requestTimeEpoch": received}}
    gateway_end = received + http.GATEWAY_TIMEOUT_MS - http.GATEWAY_MARGIN_MS
    assert http.time_left(object(), event) is None  # outside Lambda: no deadline
    monkeypatch.setattr(http, "_now_ms", lambda: received + 1_000)  # a warm start: the function's clock ends first
    left = http.time_left(Context(), event)
    assert left is not None and left() == 20_000
    monkeypatch.setattr(http, "_now_ms", lambda: received + 12_000)  # 12 s of cold start: the gateway's does
    assert left() == gateway_end - (received + 12_000)
    for unread in ({}, {"requestContext": None}, {"requestContext": {"requestTimeEpoch": True}}, None):
        only_function = http.time_left(Context(), unread)  # invoked directly: the function's clock alone
        assert only_function is not None and only_function() == 20_000


# --- Bedrock identifiers ---------------------------------------------------------------------------------------------

# Each identifier format of common.bedrock_ids and the botocore shape that gives it (the model's pattern, searched as
# botocore validates it, plus its length bounds): the kit's is the set of values that shape takes, the empty one and
# ARNs aside (the functions are given ids).
_ID_SHAPES = [
    ("BEDROCK_ID", "bedrock-agent", "Id"),
    ("GUARDRAIL_ID", "bedrock", "GuardrailId"),
    ("GUARDRAIL_VERSION", "bedrock", "GuardrailVersion"),
]


def _shape_takes(service: str, shape: str, value: str) -> bool:
    metadata = botocore.session.get_session().get_service_model(service).shape_for(shape).metadata
    whole = re.fullmatch(metadata["pattern"].removeprefix("^").removesuffix("$"), value) is not None
    return whole and max(1, metadata.get("min", 1)) <= len(value) <= metadata.get("max", len(value))


@pytest.mark.parametrize(("name", "service", "shape"), _ID_SHAPES)
@example(value="a" * 64)  # the length bounds, each side
@example(value="a" * 65)
@example(value="1" * 8)
@example(value="1" * 9)
@example(value="0")
@example(value="Ab3" * 3 + "z")
@example(value="")
@given(
    value=st.one_of(
        st.text(alphabet="abcdefXYZ0189DRAFT_-:/ ", max_size=70),
        st.from_regex(r"[a-z0-9]{60,70}|[0-9]{1,9}|DRAFT|[0-9a-zA-Z]{9,11}", fullmatch=True),
    )
)
def test_each_bedrock_id_format_is_the_one_its_api_shape_gives(name: str, service: str, shape: str, value: str) -> None:
    from common import bedrock_ids

    pattern: re.Pattern[str] = getattr(bedrock_ids, name)
    assert (pattern.fullmatch(value) is not None) == _shape_takes(service, shape, value), value


def test_a_validation_refusal_without_a_message_still_says_what_happened() -> None:
    mapped = errors.from_aws_error(client_error("ValidationException", message=""), resource=RESOURCE)
    assert mapped is not None and mapped.status == 400
    assert mapped.message == "Amazon Bedrock rejected the request."


def test_a_resolver_that_cannot_be_built_answers_500_and_logs_the_traceback() -> None:
    import io
    import logging

    from aws_lambda_powertools import Logger

    stream = io.StringIO()
    logger = Logger(service="probe", logger_handler=logging.StreamHandler(stream))
    event = {"httpMethod": "GET", "path": "/templates", "requestContext": {"requestId": "req-1"}, "headers": {}}

    def broken() -> Any:
        raise RuntimeError("no settings")

    answer = resolver.resolve_rest_event(event, None, broken, logger)

    assert answer["statusCode"] == 500
    body = json.loads(answer["body"])
    assert body["error"]["code"] == "internal_error" and "req-1" in body["error"]["message"]
    assert "no settings" not in answer["body"]
    [record] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["level"] == "ERROR" and record["message"] == "Unhandled error outside the resolver"
    assert "RuntimeError: no settings" in record["exception"]
