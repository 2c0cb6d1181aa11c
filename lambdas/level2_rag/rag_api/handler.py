"""Lambda entry point of the Level 2 query API (``rag_api.handler.handler``).

Routes: POST /ask (RetrieveAndGenerate: an answer with citations) and POST /retrieve (Retrieve: the
matching chunks). The guardrail covers every text returned (document metadata is returned as stored):
RetrieveAndGenerate applies it to the answer and ApplyGuardrail to the citation snippets and retrieved chunks
(``rag_api.guardrail``). Every error uses the
kit's error contract (``common.errors``) and is mapped in the exception handlers that ``common.resolver``
installs below, nowhere else.

Time budget: every request ends before the function's timeout with a documented status. The knowledge base
call may use the time left minus ``GUARDRAIL_RESERVE_MS``, the guardrail calls the rest; within that, each
attempt's timeouts fit what remains and a retry is made only when it fits (``common.http.call_with_deadline``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.errors import (
    INPUT_TOO_LONG_MESSAGES,
    MODEL_LIFECYCLE_PAGE,
    RETRY_AFTER_TIMEOUT_S,
    SUBSCRIPTION_ADVICE,
    TIMEOUT_ERRORS,
    UNAVAILABLE_CODES,
    VALIDATION_CODES,
    ApiError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    DependencyFailedError,
    ModelAccessDeniedError,
    ModelError,
    ModelRejectedInputError,
    ModelTimeoutError,
    UpstreamNotFoundError,
    UpstreamUnavailableError,
    aws_error_code,
    aws_error_message,
    deployment_fault,
    from_aws_error,
    is_transient_aws_error,
    reached_end_of_life,
    refuses_model_access,
    trim,
)
from common.http import decode_body, json_response, parse_json_object, time_left
from common.metric_names import KNOWLEDGE_BASE_DIMENSION
from common.observability import annotate, make_tracer, publish
from common.resolver import install_error_handlers, resolve_rest_event, traced_resolve
from common.resolver import is_rest_proxy_event as is_rest_proxy_event  # re-exported
from rag_api import guardrail, knowledge_base
from rag_api.settings import Settings, get_settings
from rag_api.validation import parse_ask_request, parse_retrieve_request

logger = Logger()
app = APIGatewayRestResolver()

ROUTES: tuple[tuple[str, str], ...] = (("POST", "/ask"), ("POST", "/retrieve"))
RETRY_AFTER_UNAVAILABLE_S = 5
CONFIG_HINT = "KNOWLEDGE_BASE_ID, MODEL_ARN and GUARDRAIL_ID"
MODEL_SETTING = "text_model_id in cdk.json (the function's MODEL_ARN)"
EMBEDDING_SETTING = "rag_embedding_model_id in cdk.json (the knowledge base's embedding model)"
# RetrieveAndGenerate's ValidationException texts that are not the caller's input (matched lower-cased).
KB_MODEL_REFUSED = "model is not supported for"
SESSION_REFUSED = "session with id"
# The knowledge base's service role refused its embedding model: Bedrock wraps the runtime's 403 in a
# ValidationException, "Knowledge base role <arn> is not able to call specified embedding model <arn>: You don't
# have access to the model with the specified model ID." (as public projects quote it from StartIngestionJob, e.g.
# aws-samples/generative-ai-cdk-constructs-samples#25; the query's embedding takes the same role). The account's
# model access or the role's grant, not the caller's input.
KB_ROLE_MODEL_REFUSED = ("not able to call specified embedding model", "have access to the model with the specified")
INPUT_FIELD_KEY = "input_field"  # app context: the request field that carries the caller's text
# Time kept back from the knowledge base call for the guardrail calls that follow it: enough for one
# ApplyGuardrail attempt (its connect timeout, a read timeout of 3 s or more, and the policy's margin for
# sending the answer), so the answer is checked, or a 504 sent, before the function's timeout.
GUARDRAIL_RESERVE_MS = 6_000
UPSTREAM_KEY = "upstream"  # app context: which upstream the route is calling, for the error mapping
KNOWLEDGE_BASE, GUARDRAIL = "knowledge_base", "guardrail"


# --- lazy observability ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    return make_tracer(logger)


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    """EMF metrics in the configured namespace."""
    settings = get_settings()
    return Metrics(namespace=settings.metrics_namespace, service=settings.service_name)


def _publish(values: Mapping[str, tuple[MetricUnit, float]], dimensions: Mapping[str, str]) -> None:
    publish(get_metrics(), values, dimensions, logger)


# --- routes ------------------------------------------------------------------------------------------------


@app.post("/ask")
def post_ask() -> Response[Any]:
    settings = get_settings()
    request = parse_ask_request(_json_body(), settings.vector_store)
    logger.info(
        "Ask request",
        extra={
            "question_chars": len(request.question),
            "has_session": request.session_id is not None,
            "number_of_results": request.number_of_results,
            "has_filter": request.filter is not None,
        },
    )
    app.append_context(**{INPUT_FIELD_KEY: "question"})
    response, latency_ms = _call("retrieve_and_generate", knowledge_base.ask_params(settings, request))
    answer = knowledge_base.read_answer(response, latency_ms)
    answer = knowledge_base.guarded_answer(answer, _guard(knowledge_base.answer_texts(answer), settings))
    values = {
        "Latency": (MetricUnit.Milliseconds, answer.latency_ms),
        "Citations": (MetricUnit.Count, len(answer.citations)),
        "GuardrailIntervened": (MetricUnit.Count, int(answer.intervened)),
    }
    _publish(values, {"ModelId": settings.model_id})
    annotate(get_tracer(), ModelId=settings.model_id, GuardrailIntervened=answer.intervened)
    logger.info(
        "RetrieveAndGenerate call finished",
        extra={
            "model_id": settings.model_id,
            "knowledge_base_id": settings.knowledge_base_id,
            "citations": len(answer.citations),
            "sources": sum(len(c["sources"]) for c in answer.citations),
            "guardrail_intervened": answer.guardrail_intervened,
            "guardrail_masked": answer.masked,
            "guardrail_blocked": answer.blocked,
            "latency_ms": answer.latency_ms,
            # A digest, not the id: the id lets whoever holds it go on with the conversation (RetrieveAndGenerate's
            # sessionId keeps "context and knowledge from previous interactions"), so no log reader may learn it.
            "session": hashlib.sha256(answer.session_id.encode()).hexdigest()[:16],
        },
    )
    return json_response(200, answer.to_body())


@app.post("/retrieve")
def post_retrieve() -> Response[Any]:
    settings = get_settings()
    request = parse_retrieve_request(_json_body(), settings.vector_store)
    logger.info(
        "Retrieve request",
        extra={
            "query_chars": len(request.query),
            "number_of_results": request.number_of_results,
            "has_filter": request.filter is not None,
        },
    )
    app.append_context(**{INPUT_FIELD_KEY: "query"})
    response, latency_ms = _call("retrieve", knowledge_base.retrieve_params(settings, request))
    retrieved = knowledge_base.read_results(response)
    outcome = _guard([result["text"] for result in retrieved], settings)
    results, masked, blocked = knowledge_base.guarded_results(retrieved, outcome)
    values = {
        "RetrieveLatency": (MetricUnit.Milliseconds, latency_ms),
        "RetrievedResults": (MetricUnit.Count, len(results)),
    }
    _publish(values, {KNOWLEDGE_BASE_DIMENSION: settings.knowledge_base_id})
    logger.info(
        "Retrieve call finished",
        extra={
            "knowledge_base_id": settings.knowledge_base_id,
            "results": len(results),
            "guardrail_masked": masked,
            "guardrail_blocked": blocked,
            "latency_ms": latency_ms,
        },
    )
    report = knowledge_base.guardrail_report(bool(masked or blocked), masked, blocked)
    return json_response(200, {"results": results, "guardrail": report})


def _json_body() -> dict[str, Any]:
    event = app.current_event
    return parse_json_object(decode_body(event.body, bool(event.is_base64_encoded)))


def _remaining(reserve_ms: int) -> Callable[[], int] | None:
    """The time left (the function's, or the gateway's if it ends first) minus ``reserve_ms`` (None outside
    Lambda: no deadline)."""
    remaining = time_left(app.lambda_context, app.current_event.raw_event)
    if remaining is None:
        return None
    return lambda: remaining() - reserve_ms


def _call(operation: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    app.append_context(**{UPSTREAM_KEY: KNOWLEDGE_BASE})
    remaining = _remaining(GUARDRAIL_RESERVE_MS)
    return knowledge_base.call(operation, params, remaining_ms=remaining, on_retry=_log_retry)


def _guard(texts: list[str], settings: Settings) -> guardrail.Outcome:
    """The guardrail's verdicts on ``texts`` (no call when there is nothing to check)."""
    if not any(texts):
        return guardrail.Outcome()
    app.append_context(**{UPSTREAM_KEY: GUARDRAIL})
    remaining = _remaining(0)
    outcome = guardrail.guard(
        texts,
        settings,
        lambda params: guardrail.apply_guardrail(params, remaining_ms=remaining, on_retry=_log_retry),
    )
    logger.info(
        "Guardrail applied to returned text",
        extra={"texts": len(texts), "guardrail_calls": outcome.calls, "guardrail_usage": dict(outcome.usage)},
    )
    return outcome


def _log_retry(attempt: int, exc: BaseException, delay_s: float) -> None:
    logger.warning(
        "Retrying Bedrock call",
        extra={
            "upstream": app.context.get(UPSTREAM_KEY),
            "attempt": attempt,
            "aws_error_code": aws_error_code(exc),
            "delay_s": delay_s,
        },
    )


# --- error mapping (the one place) -------------------------------------------------------------------------


def map_aws_error(
    exc: BaseException, settings: Settings, upstream: str | None, input_field: str | None = None
) -> ApiError | None:
    """The kit's error for a failed call to ``upstream``; None if it is unexpected (500)."""
    if upstream == GUARDRAIL:
        return map_guardrail_error(exc, settings)
    return map_knowledge_base_error(exc, settings, input_field)


def map_knowledge_base_error(exc: BaseException, settings: Settings, input_field: str | None = None) -> ApiError | None:
    """The kit's error for a failed knowledge base call; None if it is unexpected (500).

    ``input_field`` is the request field with the caller's text, named when Bedrock finds it too long.
    """
    kb = settings.knowledge_base_id
    if isinstance(exc, TIMEOUT_ERRORS):
        return ModelTimeoutError(
            f"The knowledge base '{kb}' did not answer in time. Retry; fewer results (numberOfResults) give the "
            "model less to read and a shorter question less to search.",
            retry_after=RETRY_AFTER_TIMEOUT_S,
        )
    code = aws_error_code(exc)
    if code == "AccessDeniedException":
        return ModelAccessDeniedError(
            f"Access was denied while querying knowledge base '{kb}'. Check that the function role may call "
            "bedrock:Retrieve and bedrock:RetrieveAndGenerate on the knowledge base, bedrock:InvokeModel on the "
            f"generation model {settings.model_id} and on the account's default Bedrock project (project/default), "
            "bedrock:ApplyGuardrail on the guardrail, that the knowledge "
            "base's service role may invoke its embedding model, and that no SCP denies them in this region. "
            + SUBSCRIPTION_ADVICE
        )
    # The use-case form and a Legacy model not in use come as ResourceNotFoundException too, worded so: they are
    # the account's model access (403, from_aws_error below), not a missing knowledge base; so does a model past
    # its end of life (the deployment's: 500 configuration_error, from_aws_error below).
    if code == "ResourceNotFoundException" and not (refuses_model_access(exc) or reached_end_of_life(exc)):
        return UpstreamNotFoundError(
            f"Amazon Bedrock could not find the knowledge base '{kb}' (or the model or guardrail it uses). "
            f"Check the region and {CONFIG_HINT}."
        )
    if code == "DependencyFailedException":
        return DependencyFailedError(
            f"A resource that knowledge base '{kb}' depends on failed (its vector store, or its service role's "
            "access to it or to the embedding model). Check the knowledge base in the Amazon Bedrock console."
        )
    if code == "BadGatewayException" or code in UNAVAILABLE_CODES or is_transient_aws_error(exc):
        return UpstreamUnavailableError(
            f"Amazon Bedrock or a dependency of knowledge base '{kb}' is temporarily unavailable. Retry later.",
            retry_after=RETRY_AFTER_UNAVAILABLE_S,
        )
    if code == "ConflictException":
        if input_field == "query":  # POST /retrieve: no session (botocore lists ConflictException for Retrieve too)
            return ConflictError("The request conflicts with the state of the knowledge base. Retry.")
        return ConflictError(
            "The request conflicts with the state of the conversation session. Retry, or start a new "
            "conversation without sessionId."
        )
    if code in VALIDATION_CODES:
        message = aws_error_message(exc).lower()
        # RetrieveAndGenerate generates only with the models a knowledge base query takes
        # (https://docs.aws.amazon.com/bedrock/latest/userguide/knowledge-base-supported.html) and refuses another
        # with "The provided model is not supported for ... RetrieveAndGenerateType": the deployment's model.
        if KB_MODEL_REFUSED in message:
            return ConfigurationError(
                f"Amazon Bedrock does not generate knowledge base answers with the configured model "
                f"'{settings.model_id}': use one the knowledge base query takes (knowledge-base-supported.html). "
                f"Change {MODEL_SETTING} and redeploy; the caller cannot fix this."
            )
        if any(phrase in message for phrase in KB_ROLE_MODEL_REFUSED):
            return ModelAccessDeniedError(
                f"Amazon Bedrock refused a model that knowledge base '{kb}' calls: its service role may not invoke "
                f"its embedding model {settings.embedding_model_id} (or the account may not use it, or the "
                f"generation model {settings.model_id}, in this region). Check the models' access in the Amazon "
                "Bedrock console, the role's bedrock:InvokeModel grant and any SCP; the caller cannot fix this."
            )
        # A sessionId Bedrock did not issue, or one past its life ("Session with Id <id> is not valid", as Bedrock
        # words it: github.com/aws/aws-sdk/issues/763; Bedrock generates the id, the caller cannot set one,
        # API_agent-runtime_RetrieveAndGenerate.html): the caller's, naming the field.
        if input_field == "question" and SESSION_REFUSED in message:
            return BadRequestError(
                "The conversation session is not valid: it expired or was not issued by this API. Ask again "
                "without sessionId to start a new conversation.",
                code="invalid_session",
                field="sessionId",
            )
        # The model reads the question (at most 1,000 characters, far below any model's input), the retrieved
        # chunks and the session's history: RetrieveAndGenerate "Joins Retrieve with the InvokeModel operation"
        # (https://docs.aws.amazon.com/bedrock/latest/userguide/kb-how-retrieval.html). So on /ask the fix is fewer
        # results or a new conversation, not a shorter question.
        if input_field == "question" and any(phrase in message for phrase in INPUT_TOO_LONG_MESSAGES):
            return ModelRejectedInputError(
                f"The question with its retrieved passages and the conversation so far is too long for the model "
                f"'{settings.model_id}'. Ask for fewer results (numberOfResults), or start a new conversation "
                "without sessionId.",
                field="numberOfResults",
            )
    # ValidationException (classified by its message: the deployment's model, an input too long, else the caller's,
    # with Bedrock's message, account ids redacted), throttling, the account's other refusals and the rest. Retrieve
    # (POST /retrieve, input field "query") takes no model: the knowledge base embeds the query with its embedding
    # model (botocore bedrock-agent-runtime RetrieveRequest has no model member), so a model named there is that one.
    if input_field == "query":
        model, setting = settings.embedding_model_id, EMBEDDING_SETTING
    else:
        model, setting = settings.model_id, MODEL_SETTING
    if reached_end_of_life(exc) and input_field != "query":  # /ask embeds the question and generates: either model
        return ConfigurationError(
            f"Amazon Bedrock no longer serves a model this knowledge base query uses (the generation model "
            f"'{settings.model_id}' or the embedding model '{settings.embedding_model_id}'): it reached its end of "
            f"life ({MODEL_LIFECYCLE_PAGE}). Change {MODEL_SETTING} or {EMBEDDING_SETTING} to an Active model and "
            "redeploy; the caller cannot fix this."
        )
    return from_aws_error(exc, resource=model, config_hint=CONFIG_HINT, model_setting=setting, input_field=input_field)


def map_guardrail_error(exc: BaseException, settings: Settings) -> ApiError | None:
    """The kit's error for a failed ApplyGuardrail call on the returned text; None if it is unexpected (500)."""
    name = f"guardrail '{settings.guardrail_id}' (version {settings.guardrail_version})"
    if isinstance(exc, TIMEOUT_ERRORS):
        return ModelTimeoutError(
            f"The {name} did not answer in time while checking the retrieved text. Retry.",
            retry_after=RETRY_AFTER_TIMEOUT_S,
        )
    code = aws_error_code(exc)
    if code == "AccessDeniedException":
        return ModelAccessDeniedError(
            f"Access was denied while applying the {name} to the retrieved text. Check that the function role "
            "may call bedrock:ApplyGuardrail on the guardrail."
        )
    if code == "ResourceNotFoundException":
        return UpstreamNotFoundError(
            f"Amazon Bedrock could not find the {name}. Check the region, GUARDRAIL_ID and GUARDRAIL_VERSION."
        )
    if code == "ValidationException":
        # "not authorized to invoke this API operation" is the account's access, 403 as on every other call.
        fault = deployment_fault(exc, resource=name, model_setting="GUARDRAIL_ID and GUARDRAIL_VERSION")
        if fault is not None:
            return fault
        detail = trim(aws_error_message(exc), 300)
        return ModelError(
            f"The {name} could not check the retrieved text, so it is not returned ({detail or 'no detail'}).",
            code="guardrail_failed",
        )
    if code in UNAVAILABLE_CODES or is_transient_aws_error(exc):
        return UpstreamUnavailableError(
            "Amazon Bedrock Guardrails is temporarily unavailable. Retry later.", retry_after=RETRY_AFTER_UNAVAILABLE_S
        )
    return from_aws_error(exc, resource=name, config_hint="GUARDRAIL_ID and GUARDRAIL_VERSION")  # throttling


install_error_handlers(
    app,
    routes=ROUTES,
    logger=logger,
    config_hint=CONFIG_HINT,
    publish=_publish,
    map_aws_error=lambda exc: map_aws_error(
        exc, get_settings(), app.context.get(UPSTREAM_KEY), app.context.get(INPUT_FIELD_KEY)
    ),
    aws_failure="Bedrock call failed",
)


# --- entry point -------------------------------------------------------------------------------------------


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Resolve an API Gateway REST proxy event; answer anything else with 400 ``unsupported_event``."""
    return resolve_rest_event(event, context, get_resolver, logger)


@lru_cache(maxsize=1)
def get_resolver() -> Any:
    """``app.resolve``, wrapped by the Tracer (without capturing the response) when tracing is on."""
    return traced_resolve(app, get_tracer())
