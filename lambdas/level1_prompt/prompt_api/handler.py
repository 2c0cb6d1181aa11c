"""Lambda entry point of the Level 1 prompt API (``prompt_api.handler.handler``).

Routes: POST /prompt, GET /templates, POST /templates/{name}. Every error uses the kit's error contract
(``common.errors``) and is mapped in the exception handlers that ``common.resolver`` installs below, nowhere
else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.errors import (
    RETRY_AFTER_TIMEOUT_S,
    TIMEOUT_ERRORS,
    VALIDATION_CODES,
    ApiError,
    ConfigurationError,
    ModelAccessDeniedError,
    ModelRejectedInputError,
    ModelTimeoutError,
    NotFoundError,
    UpstreamNotFoundError,
    aws_error_code,
    aws_error_message,
    deployment_fault,
    from_aws_error,
    input_too_long,
    redact,
    trim,
)
from common.http import decode_body, json_response, parse_json_object, time_left
from common.observability import annotate, make_tracer, publish
from common.resolver import (
    DEFAULT_RESOURCE,
    RESOURCE_KEY,
    SHOWN_CHARS,
    KitRestResolver,
    install_error_handlers,
    resolve_rest_event,
    traced_resolve,
)
from common.resolver import is_rest_proxy_event as is_rest_proxy_event  # re-exported
from prompt_api import bedrock
from prompt_api.settings import Settings, Template, get_settings
from prompt_api.validation import check_template_variables, parse_prompt_request, parse_template_request

logger = Logger()
app = KitRestResolver()  # a {name} parameter matches any one path segment, as in API Gateway

ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/prompt"),
    ("GET", "/templates"),
    ("POST", "/templates/<name>"),
)
CONFIG_HINT = "MODEL_ID, PROMPT_CATALOG and GUARDRAIL_ID"
MODEL_SETTING = "text_model_id in cdk.json (the function's MODEL_ID)"
INPUT_FIELD_KEY = "input_field"  # app context: the request field that carries the caller's text
ANSWER_LIMIT_KEY = "answer_limit_field"  # app context: the request field that bounds the answer's length
GUARDRAIL_KEY = "guardrail"  # app context: the guardrail a Converse call applies ("<id> (version <v>)")
SENT_KEY = "sent_fields"  # app context: the inference fields the caller set on POST /prompt
DEFAULTS_KEY = "default_fields"  # app context: the inference fields the deployment's defaults set, by setting
DEFAULT_SETTINGS = {"maxTokens": "text_max_tokens", "temperature": "text_temperature"}  # the defaults' cdk.json keys
# How Bedrock's and the providers' messages may name each inference field the caller can set: a refusal that names
# one the caller sent is that field's (e.g. a model that takes temperature or top_p, not both).
FIELD_WORDS = {
    "temperature": ("temperature",),
    "topP": ("top_p", "topp", "top p"),
    "maxTokens": ("max_tokens", "maxtokens", "max tokens", "maximum tokens", "max_new_tokens", "max_gen_len"),
}


# --- lazy observability ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    """A Powertools Tracer in Lambda with tracing on; None otherwise (or when aws-xray-sdk is absent)."""
    return make_tracer(logger, Tracer)


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    """EMF metrics in the configured namespace."""
    settings = get_settings()
    return Metrics(namespace=settings.metrics_namespace, service=settings.service_name)


def _publish(values: Mapping[str, tuple[MetricUnit, float]], dimensions: Mapping[str, str]) -> None:
    """One EMF document (plus Powertools' ``service`` dimension); never fails the request."""
    publish(get_metrics(), values, dimensions, logger)


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
    sent = [
        name
        for name, value in (
            ("temperature", request.temperature),
            ("topP", request.top_p),
            ("maxTokens", request.max_tokens),
        )
        if value is not None
    ]
    params = bedrock.prompt_request(settings, request)
    # The inference fields the call carries that the caller did not set: the deployment's defaults, by their setting
    defaults = {name: DEFAULT_SETTINGS[name] for name in params["inferenceConfig"] if name not in sent}
    context = {INPUT_FIELD_KEY: "prompt", ANSWER_LIMIT_KEY: "maxTokens", SENT_KEY: sent, DEFAULTS_KEY: defaults}
    app.append_context(**context)
    result = _converse(params, resource=settings.model_id, model_id=settings.model_id)
    return json_response(200, result.to_body())


@app.get("/templates")
def list_templates() -> Response[Any]:
    catalog = get_settings().catalog.values()
    body = [{"name": t.name, "description": t.description, "variables": list(t.variables)} for t in catalog]
    return json_response(200, {"templates": body})


@app.post("/templates/<name>")
def post_template(name: str) -> Response[Any]:
    settings = get_settings()
    template = _find_template(settings, _path_name(name))
    request = parse_template_request(_json_body())
    check_template_variables(template.name, request.variables, template.variables)
    logger.info("Template request", extra={"template": template.name})
    app.append_context(**{RESOURCE_KEY: template.arn})
    try:
        prompt = bedrock.get_managed_prompt(template.arn, remaining_ms=_remaining_ms(), on_retry=_log_retry)
    except Exception as exc:
        if isinstance(exc, TIMEOUT_ERRORS):  # not the model's answer, and not the request's size: say which call
            raise ModelTimeoutError(
                f"Prompt Management did not return template '{template.name}' in time. Retry.",
                retry_after=RETRY_AFTER_TIMEOUT_S,
            ) from exc
        if aws_error_code(exc) in VALIDATION_CODES:  # GetPrompt gets only the catalog's ARN: never the caller's
            raise ConfigurationError(
                f"Template '{template.name}': Amazon Bedrock refused its prompt version ARN "
                f"({trim(aws_error_message(exc), 200)}). Check PROMPT_CATALOG and redeploy."
            ) from exc
        if aws_error_code(exc) == "ResourceNotFoundException":  # GetPrompt involves no model and no guardrail
            raise UpstreamNotFoundError(
                f"Template '{template.name}': Amazon Bedrock could not find its prompt version "
                f"'{redact(template.arn)}' in this region. Redeploy the stack (PROMPT_CATALOG names it)."
            ) from exc
        raise
    # The kit's prompt variants name the configured model, which the function calls and reports per model.
    params = bedrock.template_request(settings, prompt, request.variables)
    try:
        result = _converse(params, resource=settings.model_id, model_id=settings.model_id)
    except Exception as exc:
        if aws_error_code(exc) in VALIDATION_CODES:
            raise _template_rejected(template, settings.model_id, exc) from exc
        raise
    return json_response(200, {**result.to_body(), "template": template.name})


def _template_rejected(template: Template, model_id: str, exc: BaseException) -> ApiError:
    """A model's refusal (ValidationException) of a template request, classified by ``common.errors``.

    A model the deployment names wrongly is its configuration error; an input too long is the caller's (400 on
    ``variables``). Anything else is a configuration error too: the caller supplies only variable values,
    bounded by the request schema; the text around them, the inference settings (e.g. temperature with topP,
    which Claude 4.5 models refuse together) and the model are the deployment's, so only the operator can fix
    it. Bedrock's message goes to the log, not to the caller.
    """
    logger.error(
        "The model refused a template request",
        extra={"template": template.name, "model_id": model_id, "aws_message": trim(aws_error_message(exc))},
    )
    classified = deployment_fault(exc, resource=model_id, model_setting=MODEL_SETTING) or input_too_long(
        exc, resource=model_id, field="variables"
    )
    if classified is not None:
        return classified
    return ConfigurationError(
        f"Template '{template.name}' cannot run: the model {model_id} refuses the request built from its stored "
        "prompt version (text or inference settings). The operator must fix the template and redeploy; the "
        "function's log has Bedrock's message."
    )


def _path_name(matched: str) -> str:
    """The template name: API Gateway's decoded path parameter, else the URL-decoded path segment."""
    given = (app.current_event.path_parameters or {}).get("name")
    return given if isinstance(given, str) and given else unquote(matched)


def _remaining_ms() -> Callable[[], int] | None:
    return time_left(app.lambda_context, app.current_event.raw_event)


def _json_body() -> dict[str, Any]:
    event = app.current_event
    return parse_json_object(decode_body(event.body, bool(event.is_base64_encoded)))


def _find_template(settings: Settings, name: str) -> Template:
    template = settings.catalog.get(name)
    if template is None:
        known = ", ".join(sorted(settings.catalog)) or "(none)"
        raise NotFoundError(
            f"Unknown template '{trim(name, SHOWN_CHARS)}'. Known templates: {known}.",
            code="template_not_found",
            field="name",
        )
    return template


def _converse(params: dict[str, Any], *, resource: str, model_id: str) -> bedrock.ConverseResult:
    guardrail = params.get("guardrailConfig") or {}
    app.append_context(
        **{
            RESOURCE_KEY: resource,
            GUARDRAIL_KEY: f"'{guardrail.get('guardrailIdentifier')}' (version {guardrail.get('guardrailVersion')})",
        }
    )
    result = bedrock.converse(params, model_id=model_id, remaining_ms=_remaining_ms(), on_retry=_log_retry)
    _record_call(result)
    annotate(get_tracer(), ModelId=result.model_id, GuardrailIntervened=result.guardrail_intervened)
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


# --- error mapping (the one place: common.resolver) and entry point ---------------------------------------


INPUT_WORDS = ("input", "prompt", "context")  # a refusal naming these is about what the caller sent


def sent_field_named(message: str, sent: list[str]) -> str | None:
    """The inference field the caller sent that Bedrock's refusal names first, if any (FIELD_WORDS)."""
    text = message.lower()
    found = [(text.find(word), name) for name in sent for word in FIELD_WORDS[name] if word in text]
    return min(found)[1] if found else None


def map_aws_error(exc: BaseException) -> ApiError | None:
    """``from_aws_error`` for the resource the route is calling, naming the model setting and the input field.

    A Converse call that was denied names the guardrail it applies too: Converse with a guardrail needs
    bedrock:ApplyGuardrail on it, and on the Standard tier on its guardrail profile in every Region the profile
    routes to (https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-permissions.html,
    https://docs.aws.amazon.com/bedrock/latest/userguide/guardrail-profiles-permissions.html)."""
    error = from_aws_error(
        exc,
        resource=str(app.context.get(RESOURCE_KEY) or DEFAULT_RESOURCE),
        config_hint=CONFIG_HINT,
        model_setting=MODEL_SETTING,
        input_field=app.context.get(INPUT_FIELD_KEY),
        answer_limit_field=app.context.get(ANSWER_LIMIT_KEY),
    )
    if isinstance(error, ModelRejectedInputError) and error.field is None:
        named = sent_field_named(error.message, app.context.get(SENT_KEY) or [])
        if named is not None:
            return ModelRejectedInputError(error.message, field=named)
        defaults: dict[str, str] = app.context.get(DEFAULTS_KEY) or {}
        default = sent_field_named(error.message, list(defaults))
        # A value the deployment chose, not the caller's to fix; unless the message names the caller's input too
        # (a context overflow worded "decrease input length or max_tokens": shortening the prompt is the caller's).
        if default is not None and not any(word in error.message.lower() for word in INPUT_WORDS):
            hint = " (none sends no temperature)" if default == "temperature" else ""
            return ConfigurationError(
                f"Amazon Bedrock refused the default {default} the function sends ({defaults[default]}): "
                f"{error.message} Change {defaults[default]}{hint} and redeploy."
            )
    guardrail = app.context.get(GUARDRAIL_KEY)
    if isinstance(error, ModelAccessDeniedError) and guardrail:
        return ModelAccessDeniedError(
            f"{error.message} The call applies guardrail {guardrail}: check too that the role may call "
            "bedrock:ApplyGuardrail on it (on the Standard tier also on its guardrail profile in every Region the "
            "profile routes to) and that no SCP denies it."
        )
    return error


install_error_handlers(
    app, routes=ROUTES, logger=logger, config_hint=CONFIG_HINT, publish=_publish, map_aws_error=map_aws_error
)


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Resolve an API Gateway REST proxy event; answer anything else with 400 ``unsupported_event``."""
    return resolve_rest_event(event, context, get_resolver, logger)


@lru_cache(maxsize=1)
def get_resolver() -> Any:
    """``app.resolve``, wrapped by the Tracer (without capturing the response) when tracing is on."""
    return traced_resolve(app, get_tracer())
