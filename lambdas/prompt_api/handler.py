"""Lambda entry point of the Level 1 prompt API (``prompt_api.handler.handler``).

Routes: POST /prompt, GET /templates, POST /templates/{name}. Every error uses the kit's error contract
(``common.errors``) and is mapped in the exception handlers below, nowhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotMatched
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from common.errors import (
    TIMEOUT_ERRORS,
    ApiError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    ThrottledError,
    UnsupportedEventError,
    aws_error_code,
    aws_error_message,
    from_aws_error,
    trim,
)
from common.http import decode_body, error_response, json_response, parse_json_object, proxy_error
from prompt_api import bedrock
from prompt_api.settings import Settings, Template, get_settings
from prompt_api.validation import check_template_variables, parse_prompt_request, parse_template_request

logger = Logger()
app = APIGatewayRestResolver()

ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/prompt"),
    ("GET", "/templates"),
    ("POST", "/templates/<name>"),
)
_ROUTE_PATTERNS = tuple((method, re.compile("^" + re.sub(r"<\w+>", "[^/]+", path) + "$")) for method, path in ROUTES)
_RESOURCE_KEY = "bedrock_resource"
_SHOWN_CHARS = 100
_TRUTHY = {"1", "true", "yes", "on", "y", "t"}


# --- lazy observability ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    """A Powertools Tracer in Lambda with tracing on; None otherwise (or when aws-xray-sdk is absent)."""
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUTHY
    if disabled or not os.environ.get("LAMBDA_TASK_ROOT") or os.environ.get("AWS_SAM_LOCAL"):
        return None
    try:
        return Tracer()
    except ImportError:
        logger.warning("aws-xray-sdk is not installed: tracing is off")
        return None


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    """EMF metrics in the configured namespace."""
    settings = get_settings()
    return Metrics(namespace=settings.metrics_namespace, service=settings.service_name)


def _annotate(**annotations: str | bool) -> None:
    tracer = get_tracer()
    if tracer is not None:
        for key, value in annotations.items():
            tracer.put_annotation(key=key, value=value)


def _publish(values: Mapping[str, tuple[MetricUnit, float]], dimensions: Mapping[str, str]) -> None:
    """One EMF document (plus Powertools' ``service`` dimension); never fails the request."""
    metrics = get_metrics()
    try:
        for name, value in dimensions.items():
            metrics.add_dimension(name=name, value=value)
        for name, (unit, number) in values.items():
            metrics.add_metric(name=name, unit=unit, value=number)
        metrics.flush_metrics()
    except Exception:
        logger.warning("Could not publish metrics", exc_info=True)
        metrics.clear_metrics()


def _record_call(result: bedrock.ConverseResult) -> None:
    """Per Bedrock call: tokens, latency and guardrail intervention, by ModelId."""
    values = {
        "InputTokens": (MetricUnit.Count, result.input_tokens),
        "OutputTokens": (MetricUnit.Count, result.output_tokens),
        "Latency": (MetricUnit.Milliseconds, result.latency_ms),
        "GuardrailIntervened": (MetricUnit.Count, int(result.guardrail_intervened)),
    }
    _publish(values, {"ModelId": result.model_id})


# --- routes ------------------------------------------------------------------------------------------------


@app.post("/prompt")
def post_prompt() -> Response[Any]:
    settings = get_settings()
    request = parse_prompt_request(_json_body())
    logger.info("Prompt request", extra={"prompt_chars": len(request.prompt), "has_system": bool(request.system)})
    result = _converse(
        bedrock.prompt_request(settings, request), resource=settings.model_id, model_id=settings.model_id
    )
    return json_response(200, result.to_body())


@app.get("/templates")
def list_templates() -> Response[Any]:
    catalog = get_settings().catalog.values()
    body = [{"name": t.name, "description": t.description, "variables": list(t.variables)} for t in catalog]
    return json_response(200, {"templates": body})


@app.post("/templates/<name>")
def post_template(name: str) -> Response[Any]:
    settings = get_settings()
    template = _find_template(settings, name)
    request = parse_template_request(_json_body())
    check_template_variables(template.name, request.variables, template.variables)
    logger.info("Template request", extra={"template": template.name})
    # The kit's prompt variants name the configured model, so metrics stay per model, not per template.
    params = bedrock.template_request(settings, template, request.variables)
    result = _converse(params, resource=template.arn, model_id=settings.model_id)
    return json_response(200, {**result.to_body(), "template": template.name})


def _json_body() -> dict[str, Any]:
    event = app.current_event
    return parse_json_object(decode_body(event.body, bool(event.is_base64_encoded)))


def _find_template(settings: Settings, name: str) -> Template:
    template = settings.catalog.get(name)
    if template is None:
        known = ", ".join(sorted(settings.catalog)) or "(none)"
        raise NotFoundError(
            f"Unknown template '{trim(name, _SHOWN_CHARS)}'. Known templates: {known}.",
            code="template_not_found",
            field="name",
        )
    return template


def _converse(params: dict[str, Any], *, resource: str, model_id: str) -> bedrock.ConverseResult:
    app.append_context(**{_RESOURCE_KEY: resource})
    context = app.lambda_context
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    result = bedrock.converse(params, model_id=model_id, remaining_ms=remaining, on_retry=_log_retry)
    _record_call(result)
    _annotate(ModelId=result.model_id, GuardrailIntervened=result.guardrail_intervened)
    logger.info(
        "Converse call finished",
        extra={
            "model_id": result.model_id,
            "stop_reason": result.stop_reason,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "latency_ms": result.latency_ms,
            "guardrail_intervened": result.guardrail_intervened,
            "guardrail_action": result.guardrail_action,
        },
    )
    return result


def _log_retry(attempt: int, exc: BaseException, delay_s: float) -> None:
    logger.warning(
        "Retrying Bedrock call",
        extra={"attempt": attempt, "aws_error_code": aws_error_code(exc), "delay_s": delay_s},
    )


# --- error mapping (the one place) -------------------------------------------------------------------------


@app.exception_handler(ApiError)
def _on_api_error(exc: ApiError) -> Response[Any]:
    log = logger.error if exc.status >= 500 else logger.info
    log(
        "Request failed",
        extra={
            "status": exc.status,
            "error_code": exc.code,
            "field": exc.field,
            "error_message": exc.message,
        },
    )
    return error_response(exc)


@app.exception_handler([ClientError, *TIMEOUT_ERRORS])
def _on_aws_error(exc: Exception) -> Response[Any]:
    resource = str(app.context.get(_RESOURCE_KEY) or "Amazon Bedrock")
    mapped = from_aws_error(exc, resource=resource, config_hint="MODEL_ID, PROMPT_CATALOG and GUARDRAIL_ID")
    if mapped is None:
        return _internal_response(exc)
    if isinstance(mapped, ThrottledError):
        _publish({"ModelThrottled": (MetricUnit.Count, 1)}, {})  # still throttled after the kit's retries
    logger.warning(
        "Bedrock call failed",
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
    return _internal_response(exc)


def _internal_response(exc: Exception) -> Response[Any]:
    """500 with the request id; the stack trace goes to the log only."""
    logger.exception("Unhandled error", exc_info=exc)
    return error_response(_internal_error(_request_id(app.current_event.raw_event, app.lambda_context)))


@app.not_found
def _on_not_found(_: RouteNotMatched) -> Response[Any]:
    method, path = app.current_event.http_method.upper(), app.current_event.path
    shown = trim(path, _SHOWN_CHARS)
    allowed = [verb for verb, pattern in _ROUTE_PATTERNS if pattern.match(path)]
    if allowed:
        message = f"Method {method} is not allowed on {shown}. Allowed: {', '.join(allowed)}."
        return error_response(MethodNotAllowedError(message, headers={"Allow": ", ".join(allowed)}))
    routes = ", ".join(f"{verb} {route.replace('<name>', '{name}')}" for verb, route in ROUTES)
    return error_response(NotFoundError(f"No route for {method} {shown}. Routes: {routes}.", code="route_not_found"))


def _internal_error(request_id: str) -> InternalError:
    return InternalError(f"Internal error (request id {request_id}). Quote it when reporting the problem.")


def _request_id(event: Any, context: Any) -> str:
    request_context = event.get("requestContext") if isinstance(event, dict) else None
    request_id = request_context.get("requestId") if isinstance(request_context, dict) else None
    return str(request_id or getattr(context, "aws_request_id", None) or "unknown")


# --- entry point -------------------------------------------------------------------------------------------


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


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Resolve an API Gateway REST proxy event; answer anything else with 400 ``unsupported_event``."""
    if not is_rest_proxy_event(event):
        logger.warning("Unsupported event", extra={"event_type": type(event).__name__})
        return proxy_error(
            UnsupportedEventError("This function expects an API Gateway REST API proxy event (httpMethod, path, ...).")
        )
    try:
        response: dict[str, Any] = get_resolver()(event, context)
    except Exception:
        logger.exception("Unhandled error outside the resolver")
        return proxy_error(_internal_error(_request_id(event, context)))
    return response


@lru_cache(maxsize=1)
def get_resolver() -> Any:
    """``app.resolve``, wrapped by the Tracer (without capturing the response) when tracing is on."""
    tracer = get_tracer()
    if tracer is None:
        return app.resolve
    return tracer.capture_lambda_handler(app.resolve, capture_response=False)
