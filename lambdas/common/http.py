"""Helpers shared by the kit's HTTP handlers: JSON responses, request bodies, deadline-aware AWS retries."""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from aws_lambda_powertools.event_handler import Response

from common.errors import ApiError, BadRequestError, DeadlineExceeded, PayloadTooLargeError, is_retryable_aws_error

T = TypeVar("T")

JSON_CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 512 * 1024  # the body's UTF-8 bytes, as the docs and the 6 MB Lambda payload limit count

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


def decode_body(raw: Any, is_base64: bool, max_bytes: int = MAX_BODY_BYTES) -> str:
    """The request body as text; 400 if it is missing or not decodable, 413 if its UTF-8 encoding (the bytes the
    caller sent) is larger than ``max_bytes``."""
    if raw is None or raw == "":
        raise _invalid_json("The request body is required and must be a JSON object.")
    if not isinstance(raw, str):
        raise _invalid_json("The request body must be a JSON text.")
    if is_base64:
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise _invalid_json("The request body is not valid base64-encoded UTF-8.") from None
    else:
        # a lone surrogate (a JSON escape in the event) counts as the three bytes it would take, not as an error
        data = raw.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"The request body is too large: at most {max_bytes} bytes ({max_bytes // 1024} KiB) are accepted.",
            field="body",
        )
    if not is_base64:
        return str(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_json("The request body is not valid base64-encoded UTF-8.") from None


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse a JSON object strictly (no NaN/Infinity); 400 naming ``body`` otherwise."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError:
        raise _invalid_json("The request body is not valid JSON.") from None
    except RecursionError:  # valid JSON, nested deeper than Python's recursion limit lets the parser go
        raise _invalid_json(
            f"The request body nests arrays or objects deeper than the API reads (about {sys.getrecursionlimit()} "
            "levels)."
        ) from None
    except ValueError as exc:
        # NaN and Infinity (not JSON), or an integer longer than Python converts from text (sys.int_info's
        # default_max_str_digits; https://docs.python.org/3/library/stdtypes.html#int-max-str-digits)
        if "is not valid JSON" in str(exc):
            raise _invalid_json("The request body is not valid JSON.") from None
        raise _invalid_json(
            f"The request body holds an integer of more than {sys.get_int_max_str_digits()} digits, longer than the "
            "API reads."
        ) from None
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


# --- deadline-aware retries --------------------------------------------------------------------------------

# API Gateway waits at most 29 s for a REST API's Lambda integration unless the API raises it ("Integration
# timeout", https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-execution-service-limits-table.html);
# the kit's APIs keep it. Its clock starts when the request arrives (requestContext.requestTimeEpoch), before a cold
# start's Init, which the function's own remaining time does not count; the margin is the gateway's own work after
# the function answers.
GATEWAY_TIMEOUT_MS = 29_000
GATEWAY_MARGIN_MS = 500


def _now_ms() -> float:
    return time.time() * 1000


def time_left(context: Any, event: Any) -> Callable[[], int] | None:
    """Milliseconds left before the first of two ends: the function's timeout (its Lambda context) and, for a
    request API Gateway received, the gateway's integration timeout. None outside Lambda (no deadline)."""
    function_left: Callable[[], int] | None = getattr(context, "get_remaining_time_in_millis", None)
    if function_left is None:
        return None
    received = ((event or {}).get("requestContext") or {}).get("requestTimeEpoch")
    if isinstance(received, bool) or not isinstance(received, (int, float)):
        return lambda: int(function_left())
    gateway_end_ms = received + GATEWAY_TIMEOUT_MS - GATEWAY_MARGIN_MS
    return lambda: min(int(function_left()), int(gateway_end_ms - _now_ms()))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter, bounded by attempts and by the Lambda deadline.

    An attempt may last up to ``connect_timeout_s`` plus its read timeout, and ``safety_margin_ms`` must be
    left after it to map the outcome and send the answer. So an attempt's read timeout is the time left minus
    both (``read_timeout_s``), at most the clients' ``max_read_timeout_s``; an attempt with less than
    ``min_read_timeout_s`` is not started, and a retry is not started unless it has at least as long as the
    attempt before it took. Keep ``connect_timeout_s`` and ``max_read_timeout_s`` equal to the clients' config.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 2.0
    safety_margin_ms: int = 1000  # kept after the last attempt: map the outcome, log, send the response
    connect_timeout_s: int = 3
    max_read_timeout_s: int = 20
    min_read_timeout_s: int = 1

    def backoff_s(self, attempt: int, rand: Callable[[], float]) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))]."""
        cap: float = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rand() * cap

    def read_timeout_s(self, remaining_ms: float) -> int:
        """Whole seconds an attempt starting with ``remaining_ms`` left may wait for its answer (0: none fits)."""
        budget_s = (remaining_ms - self.safety_margin_ms) / 1000 - self.connect_timeout_s
        return max(0, min(self.max_read_timeout_s, math.floor(budget_s)))


DEFAULT_RETRY_POLICY = RetryPolicy()


def sleep(seconds: float) -> None:
    """Back-off sleep (an indirection tests replace)."""
    time.sleep(seconds)


def call_with_deadline(
    fn: Callable[[int], T],
    *,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    remaining_ms: Callable[[], int] | None = None,
    retryable: Callable[[BaseException], bool] = is_retryable_aws_error,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rand: Callable[[], float] = random.random,
) -> T:
    """Call ``fn(read_timeout_s)``, retrying retryable errors while attempts and the deadline allow.

    ``fn`` makes one attempt that waits at most ``read_timeout_s`` seconds for its answer (a client built
    with that read timeout, e.g. ``common.clients.bounded_client``). With ``remaining_ms`` (the Lambda
    context's ``get_remaining_time_in_millis``) every attempt fits in the time left: the first raises
    DeadlineExceeded (a 504) when none fits, and a retry that would not fit is not made, the last error is
    raised instead (a 429 or 503 with Retry-After). So the function always answers before its own timeout.
    """
    attempt = 1
    read_s = policy.max_read_timeout_s if remaining_ms is None else policy.read_timeout_s(remaining_ms())
    if read_s < policy.min_read_timeout_s:
        raise DeadlineExceeded("no attempt fits in the time the function has left")
    while True:
        started_ms = remaining_ms() if remaining_ms is not None else 0
        try:
            return fn(read_s)
        except Exception as exc:
            if attempt >= policy.max_attempts or not retryable(exc):
                raise
            delay = policy.backoff_s(attempt, rand)
            if remaining_ms is not None:
                now_ms = remaining_ms()
                took_s = max(0, started_ms - now_ms) / 1000
                next_s = policy.read_timeout_s(now_ms - delay * 1000)
                if next_s < max(policy.min_read_timeout_s, took_s):
                    raise
                read_s = next_s
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
            attempt += 1
