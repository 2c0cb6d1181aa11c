"""The resolver wiring shared by the kit's REST API handlers: error mapping, 404/405 and the entry point.

``install_error_handlers`` registers, on an ``APIGatewayRestResolver``, the one place where exceptions
become responses of the kit's error contract (``common.errors``); ``resolve_rest_event`` is the body of a
handler's Lambda entry point.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotMatched
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from common.errors import (
    CONNECTION_ERRORS,
    TIMEOUT_ERRORS,
    ApiError,
    InternalError,
    MethodNotAllowedError,
    ModelAccessDeniedError,
    NotFoundError,
    ThrottledError,
    UnsupportedEventError,
    aws_error_code,
    aws_error_message,
    from_aws_error,
    trim,
)
from common.http import error_response, proxy_error
from common.metric_names import MODEL_ACCESS_DENIED, MODEL_THROTTLED

RESOURCE_KEY = "bedrock_resource"  # app context key: the Bedrock resource a route is calling
DEFAULT_RESOURCE = "Amazon Bedrock"
SHOWN_CHARS = 100

Publish = Callable[[Mapping[str, tuple[MetricUnit, float]], Mapping[str, str]], None]
AwsErrorMapper = Callable[[BaseException], ApiError | None]
Resolve = Callable[[Any, Any], dict[str, Any]]


def install_error_handlers(
    app: APIGatewayRestResolver,
    *,
    routes: Sequence[tuple[str, str]],
    logger: Logger,
    config_hint: str,
    publish: Publish,
    map_aws_error: AwsErrorMapper | None = None,
    aws_failure: str = "Bedrock call failed",
) -> None:
    """Register the kit's exception, not-found and method-not-allowed handlers on ``app``.

    ``routes`` are the (method, path) pairs the app serves (``<name>`` marks a path parameter); ``publish``
    writes metrics (``ModelThrottled`` when an AWS call is still throttled after the kit's retries,
    ``ModelAccessDenied`` when the account or the function may not use the model: a 403 that no 5xx alarm sees).
    ``map_aws_error`` maps a botocore error to the kit's error (None: unexpected, 500); by default it is
    ``from_aws_error`` for the resource in the app context under ``RESOURCE_KEY``, naming ``config_hint``.
    ``aws_failure`` is the log message of a mapped AWS error.
    """
    patterns = tuple((method, route_pattern(path)) for method, path in routes)
    listed = ", ".join(f"{verb} {shown_route(path)}" for verb, path in routes)

    def default_mapping(exc: BaseException) -> ApiError | None:
        resource = str(app.context.get(RESOURCE_KEY) or DEFAULT_RESOURCE)
        return from_aws_error(exc, resource=resource, config_hint=config_hint)

    map_error = map_aws_error or default_mapping

    def internal_response(exc: Exception) -> Response[Any]:
        """500 with the request id; the stack trace goes to the log only."""
        logger.exception("Unhandled error", exc_info=exc)
        return error_response(internal_error(request_id(app.current_event.raw_event, app.lambda_context)))

    def count_refusal(error: ApiError) -> None:
        if isinstance(error, ModelAccessDeniedError):  # the deployment's fault, every caller gets it: alarmed
            publish({MODEL_ACCESS_DENIED: (MetricUnit.Count, 1)}, {})

    @app.exception_handler(ApiError)
    def _on_api_error(exc: ApiError) -> Response[Any]:
        count_refusal(exc)
        log = logger.error if exc.status >= 500 else logger.info
        log(
            "Request failed",
            extra={"status": exc.status, "error_code": exc.code, "field": exc.field, "error_message": exc.message},
        )
        return error_response(exc)

    # Connection failures too: botocore raises them outside ClientError, and a mapper answers them 503.
    @app.exception_handler([ClientError, *TIMEOUT_ERRORS, *CONNECTION_ERRORS])
    def _on_aws_error(exc: Exception) -> Response[Any]:
        mapped = map_error(exc)
        if mapped is None:
            return internal_response(exc)
        if isinstance(mapped, ThrottledError):
            publish({MODEL_THROTTLED: (MetricUnit.Count, 1)}, {})  # still throttled after the kit's retries
        count_refusal(mapped)
        logger.warning(
            aws_failure,
            extra={
                "status": mapped.status,
                "error_code": mapped.code,
                "aws_error_code": aws_error_code(exc) or type(exc).__name__,
                "aws_message": trim(aws_error_message(exc) or str(exc)),
            },
        )
        return error_response(mapped)

    @app.exception_handler(Exception)
    def _on_unexpected(exc: Exception) -> Response[Any]:
        return internal_response(exc)

    @app.not_found
    def _on_not_found(_: RouteNotMatched) -> Response[Any]:
        method, path = app.current_event.http_method.upper(), app.current_event.path
        shown = trim(path, SHOWN_CHARS)
        allowed = [verb for verb, pattern in patterns if pattern.match(path)]
        if allowed and method not in allowed:
            message = f"Method {method} is not allowed on {shown}. Allowed: {', '.join(allowed)}."
            return error_response(MethodNotAllowedError(message, headers={"Allow": ", ".join(allowed)}))
        return error_response(
            NotFoundError(f"No route for {method} {shown}. Routes: {listed}.", code="route_not_found")
        )


# A ``<name>`` path parameter matches one whole path segment, whatever its characters (tabs, emoji, quotes...),
# as API Gateway's ``{name}`` does; Powertools' own pattern accepts only some characters, so a name outside them
# fell through to the not-found handler and was answered 405 instead of reaching the route.
SEGMENT = "[^/]+"
_PARAMETER = re.compile(r"<(\w+)>")


def route_pattern(path: str) -> re.Pattern[str]:
    """The regex of a route path (without trailing slashes), each ``<name>`` matching one path segment.

    Matched whole (``\\Z``, not ``$``, which would also accept a trailing newline).
    """
    parts = _PARAMETER.split(path)  # literal, name, literal, name, ..., literal
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{SEGMENT})" for i, part in enumerate(parts))
    return re.compile(f"^{regex}/*\\Z")


class KitRestResolver(APIGatewayRestResolver):
    """Powertools' REST resolver whose ``<name>`` parameters match any one path segment (``route_pattern``).

    The route a request reaches and the 404/405 decision of ``install_error_handlers`` use the same pattern,
    so a path the API routes to the function never gets a 405 for the method the route has.
    """

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "^{}/*$") -> re.Pattern[str]:
        if rule.startswith("/"):  # a route path; Powertools' internal catch-all rules (".*") keep its own regex
            return route_pattern(rule)
        compiled: re.Pattern[str] = APIGatewayRestResolver._compile_regex(rule, base_regex)
        return compiled


def shown_route(path: str) -> str:
    """A route path as the API documents it: ``/templates/<name>`` is shown as ``/templates/{name}``."""
    return re.sub(r"<(\w+)>", r"{\1}", path)


def internal_error(request_id: str) -> InternalError:
    return InternalError(f"Internal error (request id {request_id}). Quote it when reporting the problem.")


def request_id(event: Any, context: Any) -> str:
    """API Gateway's request id, else the Lambda request id, else ``unknown``."""
    request_context = event.get("requestContext") if isinstance(event, dict) else None
    found = request_context.get("requestId") if isinstance(request_context, dict) else None
    return str(found or getattr(context, "aws_request_id", None) or "unknown")


def is_rest_proxy_event(event: Any) -> bool:
    """True for an API Gateway REST (payload 1.0) proxy event."""
    if not isinstance(event, dict):
        return False
    request_context = event.get("requestContext")
    return (
        isinstance(event.get("httpMethod"), str)
        and isinstance(event.get("path"), str)
        and isinstance(request_context, dict)
        and "elb" not in request_context
        and event.get("version") != "2.0"
    )


def traced_resolve(app: APIGatewayRestResolver, tracer: Tracer | None) -> Resolve:
    """``app.resolve``, wrapped by the Tracer (without capturing the response) when tracing is on."""
    if tracer is None:
        return app.resolve
    wrapped: Resolve = tracer.capture_lambda_handler(app.resolve, capture_response=False)
    return wrapped


def resolve_rest_event(event: Any, context: Any, get_resolver: Callable[[], Resolve], logger: Logger) -> dict[str, Any]:
    """Resolve an API Gateway REST proxy event; answer anything else with 400 ``unsupported_event``.

    ``get_resolver`` is called per event, so a failure building the resolver is still the error contract.
    """
    if not is_rest_proxy_event(event):
        logger.warning("Unsupported event", extra={"event_type": type(event).__name__})
        return proxy_error(
            UnsupportedEventError("This function expects an API Gateway REST API proxy event (httpMethod, path, ...).")
        )
    try:
        response: dict[str, Any] = get_resolver()(event, context)
    except Exception:
        logger.exception("Unhandled error outside the resolver")
        return proxy_error(internal_error(request_id(event, context)))
    return response
