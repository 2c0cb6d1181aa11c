"""Helpers shared by the kit's HTTP handlers: JSON responses, request bodies, env settings, AWS retries."""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from aws_lambda_powertools.event_handler import Response

from common.errors import ApiError, BadRequestError, ConfigurationError, is_retryable_aws_error

T = TypeVar("T")

JSON_CONTENT_TYPE = "application/json"
MAX_BODY_CHARS = 512 * 1024

# --- responses ---------------------------------------------------------------------------------------------


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    """A Powertools Response with a JSON body."""
    return Response(status_code=status, content_type=JSON_CONTENT_TYPE, body=body, headers=headers or {})


def error_response(err: ApiError) -> Response[Any]:
    """The one error shape, as a Powertools Response."""
    return json_response(err.status, err.to_body(), err.headers())


def proxy_error(err: ApiError) -> dict[str, Any]:
    """The one error shape as a raw API Gateway proxy response (for use outside the resolver)."""
    headers = {"Content-Type": JSON_CONTENT_TYPE, **err.headers()}
    return {
        "statusCode": err.status,
        "headers": headers,
        "body": json.dumps(err.to_body(), separators=(",", ":")),
        "isBase64Encoded": False,
    }


# --- request bodies ----------------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _invalid_json(message: str) -> BadRequestError:
    return BadRequestError(message, code="invalid_json", field="body")


def decode_body(raw: Any, is_base64: bool, max_chars: int = MAX_BODY_CHARS) -> str:
    """The request body as text; 400 if it is missing, not decodable or larger than ``max_chars``."""
    if raw is None or raw == "":
        raise _invalid_json("The request body is required and must be a JSON object.")
    if not isinstance(raw, str):
        raise _invalid_json("The request body must be a JSON text.")
    text: str = raw
    if is_base64:
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _invalid_json("The request body is not valid base64-encoded UTF-8.") from None
    if len(text) > max_chars:
        raise BadRequestError(
            f"The request body is too large: at most {max_chars} characters are accepted.",
            code="body_too_large",
            field="body",
        )
    return text


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse a JSON object strictly (no NaN/Infinity); 400 naming ``body`` otherwise."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _invalid_json("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequestError(
            f"The request body must be a JSON object, not {json_type_name(value)}.",
            code="invalid_body",
            field="body",
        )
    return value


def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type ('boolean', 'number', ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- environment settings ----------------------------------------------------------------------------------


def env_str(name: str, default: str | None = None) -> str:
    """A required (non-blank) environment variable, or ``default`` when given."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise ConfigurationError(f"Environment variable {name} is not set.")


def env_float(name: str, default: float, minimum: float, maximum: float) -> float:
    """A finite float environment variable within [minimum, maximum]."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise ConfigurationError(f"Environment variable {name} must be a number between {minimum} and {maximum}.")
    return value


def env_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer environment variable within [minimum, maximum]."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"Environment variable {name} must be an integer between {minimum} and {maximum}."
        ) from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"Environment variable {name} must be an integer between {minimum} and {maximum}.")
    return value


def env_json_object(name: str) -> dict[str, Any]:
    """A required environment variable holding a JSON object."""
    raw = env_str(name)
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigurationError(f"Environment variable {name} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"Environment variable {name} must be a JSON object.")
    return value


# --- deadline-aware retries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter, bounded by attempts and by the Lambda deadline."""

    max_attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 2.0
    safety_margin_ms: int = 3000  # time that must still remain after a back-off to try again

    def backoff_s(self, attempt: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))]."""
        cap: float = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rand() * cap


DEFAULT_RETRY_POLICY = RetryPolicy()


def sleep(seconds: float) -> None:
    """Back-off sleep (an indirection tests replace)."""
    time.sleep(seconds)


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    remaining_ms: Callable[[], int] | None = None,
    retryable: Callable[[BaseException], bool] = is_retryable_aws_error,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rand: Callable[[], float] = random.random,
) -> T:
    """Call ``fn``, retrying retryable errors while attempts and deadline allow; re-raise the last one."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.max_attempts or not retryable(exc):
                raise
            delay = policy.backoff_s(attempt, rand)
            if remaining_ms is not None and remaining_ms() - delay * 1000 < policy.safety_margin_ms:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
            attempt += 1
