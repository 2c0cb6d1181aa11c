"""The kit's error contract: one exception hierarchy, one JSON shape, one AWS-error mapping.

Every error a caller sees is ``{"error": {"code": str, "message": str, "field"?: str}}``. Every message has
AWS account ids redacted (``redact``), whether it was built from an AWS error, an ARN or the caller's input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError, ReadTimeoutError


class DeadlineExceeded(Exception):
    """No attempt of an AWS call fits in the time the function has left (answered as a timeout, 504)."""


# An attempt that ran out of time: answered 504 at once (its read timeout was the time the function had left). A
# ConnectTimeoutError is not one of them: no connection was opened, so no request reached the service, and it is a
# connection error (botocore's ConnectTimeoutError subclasses its ConnectionError), retried like the others.
TIMEOUT_ERRORS: tuple[type[Exception], ...] = (ReadTimeoutError, DeadlineExceeded)

MAX_MESSAGE_CHARS = 500
RETRY_AFTER_THROTTLED_S = 2
RETRY_AFTER_UNAVAILABLE_S = 5
RETRY_AFTER_TIMEOUT_S = 5
# An AWS account id: 12 digits standing alone (in an ARN, "account 123456789012", an STS caller...).
ACCOUNT_ID = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")
ACCOUNT_ID_SHOWN = "<account-id>"

THROTTLING_CODES = frozenset({"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"})
# The daily token quota ("Model invocation max tokens per day", per model and Region, and an account-wide one; new
# accounts may get reduced quotas: https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-runtime.html) is refused
# as a ThrottlingException whose message says so: "Too many tokens per day, please wait before trying again." A retry
# seconds later cannot succeed, so it is neither retried nor answered with a short Retry-After. Matched lower-cased.
DAILY_QUOTA_MESSAGE = "tokens per day"
# overloaded_error (HTTP 529): a transient capacity error, retried with backoff (troubleshooting page below).
UNAVAILABLE_CODES = frozenset(
    {"ServiceUnavailableException", "ModelNotReadyException", "InternalServerException", "overloaded_error"}
)
RETRYABLE_CODES = THROTTLING_CODES | UNAVAILABLE_CODES
# What botocore's standard retry mode treats as transient (botocore/retries/standard.py, TransientRetryableChecker):
# any error response with one of these statuses (e.g. Bedrock's unmodeled InternalFailure 500 and ServiceUnavailable
# 503, https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html) and any
# connection failure (endpoint unreachable, connection closed, a connection not opened in time). A connection closed
# before the answer may have carried the request ("Connection was closed before we received a valid response",
# botocore ConnectionClosedError), so retrying a call without an idempotency token (Converse, RetrieveAndGenerate)
# may bill it twice, as botocore's own retries would; the docs say so. Read timeouts stay TIMEOUT_ERRORS: never
# retried, 504.
TRANSIENT_STATUS_CODES = frozenset({500, 502, 503, 504})
CONNECTION_ERRORS: tuple[type[Exception], ...] = (BotocoreConnectionError, HTTPClientError)
# Anthropic models need the account's use-case form first (HTTP 404, same troubleshooting page, under the heading
# FTUFormNotFilled). On the wire the code is ResourceNotFoundException and the message says it: "Model use case
# details have not been submitted for this account. Fill out the Anthropic use case details form before using the
# model. If you have already filled out the form, try again in 15 minutes." A Legacy model the account has not used
# lately is refused the same way: "Access denied. This Model is marked by provider as Legacy and you have not been
# actively using the model in the last 15 days" (lifecycle: new customers cannot start using a Legacy model,
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle-legacy.html). Both are the account's access,
# not a missing resource, so they are read from the message of a not-found error.
USE_CASE_FORM_CODE = "FTUFormNotFilled"
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "ResourceNotFound"})
USE_CASE_FORM_MESSAGE = "use case details have not been submitted"
LEGACY_NOT_IN_USE_MESSAGE = "marked by provider as legacy"
# A model past its end-of-life date: "ResourceNotFoundException: This model version has reached the end of its
# life." (quoted on https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-3-haiku.html).
# The configured model, not a missing resource or the caller: from_aws_error answers it 500 configuration_error.
END_OF_LIFE_MESSAGE = "reached the end of its life"
# The lifecycle page of the models launched before 2026-09-07, which every model the kit offers was
# (model-lifecycle.html covers those launched since); kit doctor links it too.
MODEL_LIFECYCLE_PAGE = "https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle-legacy.html"
# The account's other refusals on that page: a Marketplace subscription still being processed (403, "Try again
# after 15 minutes": temporary, so 503 with Retry-After), an account Bedrock does not authorize for the model
# (403, "Contact AWS Support"), and NotAuthorized (400, "You do not have permission": IAM or an SCP).
SUBSCRIPTION_PENDING_CODE = "MPAgreementBeingCreated"
RETRY_AFTER_SUBSCRIPTION_S = 15 * 60
ACCOUNT_NOT_AUTHORIZED_CODE = "BadCScoreException"
# The function's own credentials, signature or SDK refused (the page's IncompleteSignature, InvalidClientTokenId,
# RequestExpired, InvalidAction; and AWS's common UnrecognizedClientException, InvalidSignatureException,
# ExpiredTokenException): not model access, so even as a 403 it stays an unexpected 500 with the request id.
SIGNING_CODES = frozenset(
    {
        "IncompleteSignature",
        "InvalidClientTokenId",
        "RequestExpired",
        "InvalidAction",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)
# The page names Bedrock's 400 "ValidationError"; the API models call it ValidationException.
VALIDATION_CODES = frozenset({"ValidationException", "ValidationError"})
# A ValidationException is Bedrock's answer both to the caller's input and to the deployment's own faults; only
# its message tells them apart (https://repost.aws/knowledge-center/bedrock-validation-exception-errors; the
# texts as Bedrock sends them, e.g. aws-samples/amazon-bedrock-audio-summarizer#3). Matched lower-cased.
INPUT_TOO_LONG_MESSAGES = ("input is too long for requested model",)
MODEL_ID_FAULTS = (
    (
        "with on-demand throughput isn't supported",
        "it is invoked only through an inference profile, so use the ID of an inference profile that contains it "
        "(e.g. us.<model id>)",
    ),
    (
        "provided model identifier is invalid",
        "Amazon Bedrock offers no model with that identifier in this region, so use a model or inference profile "
        "ID listed for the region",
    ),
)
# The guardrail the call names, not the caller's input: Bedrock answers a guardrail id or version it cannot find
# with a ValidationException worded so (no AWS page quotes it; seen in public projects, e.g. for a guardrail of
# another Region: "The guardrail identifier or version provided in the request does not exist.", "The provided
# guardrail identifier is invalid."). The stack sets both, so it is the deployment's fault: 500, alarmed.
GUARDRAIL_FAULTS = (
    "guardrail identifier or version provided in the request does not exist",
    "provided guardrail identifier is invalid",
)
ACCOUNT_NOT_AUTHORIZED_MESSAGES = ("not authorized to invoke this api operation",)
# Serverless models are enabled by default (the Model access page is retired), given these prerequisites:
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html
SUBSCRIPTION_ADVICE = (
    "A third-party model is subscribed by the account's first call to it, which needs aws-marketplace:Subscribe, "
    "Unsubscribe and ViewSubscriptions and a valid payment method: no kit role has those, so an identity that has "
    "them invokes the model once first; an Anthropic model also needs the use-case form."
)


class ApiError(Exception):
    """Base of every error the kit turns into an HTTP response."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.retry_after = retry_after
        self.extra_headers = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, Allow...)."""
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class BadRequestError(ApiError):
    """400: the caller sent something invalid (always names the ``field`` when there is one)."""

    status = 400
    default_code = "invalid_request"


class UnsupportedEventError(BadRequestError):
    """400: the function was invoked with an event that is not an API Gateway REST proxy event."""

    default_code = "unsupported_event"


class PayloadTooLargeError(BadRequestError):
    """413: the request body is larger than the function accepts (RFC 9110 Content Too Large), the status API
    Gateway gives a body over its own 10 MB limit."""

    status = 413
    default_code = "body_too_large"


class ModelRejectedInputError(BadRequestError):
    """400: Bedrock refused the request (ValidationException)."""

    default_code = "model_rejected_input"


class ModelAccessDeniedError(ApiError):
    status = 403
    default_code = "model_access_denied"


class NotFoundError(ApiError):
    status = 404
    default_code = "not_found"


class MethodNotAllowedError(ApiError):
    status = 405
    default_code = "method_not_allowed"


class ThrottledError(ApiError):
    status = 429
    default_code = "throttled"


class DailyQuotaError(ThrottledError):
    """429 without Retry-After: the model's daily token quota is used up; seconds later is no better."""

    default_code = "daily_quota_exceeded"


class InternalError(ApiError):
    status = 500
    default_code = "internal_error"


class ConfigurationError(ApiError):
    """500: the function is misconfigured (operator-facing message naming the variable)."""

    status = 500
    default_code = "configuration_error"


class UpstreamNotFoundError(ApiError):
    status = 502
    default_code = "upstream_not_found"


class ModelError(ApiError):
    status = 502
    default_code = "model_error"


class ModelUnavailableError(ApiError):
    status = 503
    default_code = "model_unavailable"


class ModelTimeoutError(ApiError):
    status = 504
    default_code = "model_timeout"


class ConflictError(ApiError):
    """409: the request conflicts with the state of an upstream resource (e.g. a session in use)."""

    status = 409
    default_code = "conflict"


class DependencyFailedError(ApiError):
    """502: a resource the upstream service depends on failed (e.g. a knowledge base's vector store)."""

    status = 502
    default_code = "dependency_failed"


class UpstreamUnavailableError(ApiError):
    """503: an upstream service or one of its dependencies is temporarily unavailable."""

    status = 503
    default_code = "upstream_unavailable"


def redact(text: str) -> str:
    """``text`` with every AWS account id replaced: a caller never sees the account behind an ARN."""
    return ACCOUNT_ID.sub(ACCOUNT_ID_SHOWN, text)


def trim(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace and cut ``text`` to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (duck-typed), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = (response.get("Error") or {}).get("Code")
    return code if isinstance(code, str) else None


def aws_error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Message") or "")


def aws_http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError's response (duck-typed), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def is_transient_aws_error(exc: BaseException) -> bool:
    """A server-side failure (HTTP 500/502/503/504, whatever its code) or a failed connection; not a timeout."""
    if isinstance(exc, TIMEOUT_ERRORS):
        return False
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    return aws_error_code(exc) is not None and aws_http_status(exc) in TRANSIENT_STATUS_CODES


def is_daily_quota_error(exc: BaseException) -> bool:
    """A throttling error that is Bedrock's daily token quota used up (DAILY_QUOTA_MESSAGE)."""
    return aws_error_code(exc) in THROTTLING_CODES and DAILY_QUOTA_MESSAGE in aws_error_message(exc).lower()


def is_retryable_aws_error(exc: BaseException) -> bool:
    """True for throttling and transient service or connection errors, which the kit retries itself."""
    if is_daily_quota_error(exc):
        return False
    return aws_error_code(exc) in RETRYABLE_CODES or is_transient_aws_error(exc)


def from_aws_error(
    exc: BaseException,
    *,
    resource: str,
    config_hint: str = "the function configuration",
    model_setting: str | None = None,
    input_field: str | None = None,
    answer_limit_field: str | None = None,
) -> ApiError | None:
    """Map a botocore exception raised by a Bedrock call to the kit's ApiError; None if it is unexpected.

    A ValidationException is classified by ``deployment_fault`` first (``model_setting``: the setting that
    names the model, else ``config_hint``), then as an input too long for the model (``input_field``), else
    it is the caller's (400 ``model_rejected_input`` with Bedrock's message). A timeout names
    ``answer_limit_field``, the request field that bounds the answer's length: a model's time grows with what it
    writes, so the same request may time out again.
    """
    if isinstance(exc, TIMEOUT_ERRORS) or aws_error_code(exc) == "ModelTimeoutException":
        return model_timeout(resource, answer_limit_field)
    code = aws_error_code(exc) or ""
    if is_daily_quota_error(exc):
        return DailyQuotaError(
            f"Amazon Bedrock's daily token quota for '{resource}' is used up in this account and region (Service "
            "Quotas: 'Model invocation max tokens per day'). Retry later. To raise it, request an increase of "
            "'Cross-Region InvokeModel tokens per minute' for the model in Service Quotas; AWS Support then offers "
            "the daily quota too (https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-increase.html)."
        )
    if code in THROTTLING_CODES:
        return ThrottledError(
            "Amazon Bedrock is throttling requests. Retry later.", retry_after=RETRY_AFTER_THROTTLED_S
        )
    if code in VALIDATION_CODES:
        return (
            deployment_fault(exc, resource=resource, model_setting=model_setting or config_hint)
            or input_too_long(exc, resource=resource, field=input_field)
            or ModelRejectedInputError(trim(aws_error_message(exc)) or "Amazon Bedrock rejected the request.")
        )
    if reached_end_of_life(exc):
        return ConfigurationError(
            f"Amazon Bedrock no longer serves the configured model '{resource}': it reached its end of life "
            f"({MODEL_LIFECYCLE_PAGE}). Change {model_setting or config_hint} to an Active model and redeploy; the "
            "caller cannot fix this."
        )
    if refuses_model_access(exc):
        if USE_CASE_FORM_MESSAGE in aws_error_message(exc).lower():
            return _use_case_form(exc, resource, config_hint)
        return _legacy_not_in_use(resource, model_setting or config_hint)
    build = _AWS_ERRORS.get(code)
    if build is not None:
        return build(exc, resource, config_hint)
    if code in UNAVAILABLE_CODES or is_transient_aws_error(exc):
        return ModelUnavailableError(
            f"Amazon Bedrock is temporarily unavailable for '{resource}'. Retry later.",
            retry_after=RETRY_AFTER_UNAVAILABLE_S,
        )
    if aws_http_status(exc) == 403 and code not in SIGNING_CODES:
        # Another refusal of the account or role, e.g. the page's Marketplace agreement failures (no code given).
        return ModelAccessDeniedError(
            f"Access to '{resource}' was refused ({code or 'HTTP 403'}); the function's log has Bedrock's message. "
            f"{model_access_advice(resource)}"
        )
    return None


def refuses_model_access(exc: BaseException) -> bool:
    """A ResourceNotFoundException that is the account's model access (the use-case form, a Legacy model not in
    use), not a missing resource: from_aws_error answers it 403 model_access_denied."""
    message = aws_error_message(exc).lower()
    return aws_error_code(exc) in NOT_FOUND_CODES and (
        USE_CASE_FORM_MESSAGE in message or LEGACY_NOT_IN_USE_MESSAGE in message
    )


def reached_end_of_life(exc: BaseException) -> bool:
    """A ResourceNotFoundException saying the model reached its end of life (END_OF_LIFE_MESSAGE)."""
    return aws_error_code(exc) in NOT_FOUND_CODES and END_OF_LIFE_MESSAGE in aws_error_message(exc).lower()


def _message(exc: BaseException) -> str:
    return aws_error_message(exc).lower().replace("\u2019", "'")  # AWS writes "isn't" with either apostrophe


def deployment_fault(exc: BaseException, *, resource: str, model_setting: str) -> ApiError | None:
    """The kit's error for a ValidationException the deployment caused, not the caller; None otherwise.

    A model identifier Bedrock will not invoke is 500 ``configuration_error`` naming ``model_setting``, a guardrail
    it does not find is 500 ``configuration_error`` naming the guardrail settings; an account not authorized to
    invoke the API is 403 ``model_access_denied``, as its AccessDeniedException twin.
    """
    if aws_error_code(exc) not in VALIDATION_CODES:
        return None
    message = _message(exc)
    for phrase, advice in MODEL_ID_FAULTS:
        if phrase in message:
            return ConfigurationError(
                f"Amazon Bedrock will not invoke the configured model '{resource}': {advice}. Change "
                f"{model_setting} and redeploy; the caller cannot fix this."
            )
    if any(phrase in message for phrase in GUARDRAIL_FAULTS):
        return ConfigurationError(
            "Amazon Bedrock does not find the guardrail the function applies (its GUARDRAIL_ID and GUARDRAIL_VERSION, "
            "which the stack sets) in this Region: check that the guardrail and its version exist here, and "
            "redeploy; the caller cannot fix this."
        )
    if any(phrase in message for phrase in ACCOUNT_NOT_AUTHORIZED_MESSAGES):
        return _denied(exc, resource, "")
    return None


def input_too_long(exc: BaseException, *, resource: str, field: str | None) -> ApiError | None:
    """400 ``model_rejected_input`` naming ``field`` when Bedrock says the input is too long; None otherwise."""
    if aws_error_code(exc) not in VALIDATION_CODES:
        return None
    if not any(phrase in _message(exc) for phrase in INPUT_TOO_LONG_MESSAGES):
        return None
    named = f"'{field}'" if field else "the input"
    return ModelRejectedInputError(
        f"The input is too long for the model '{resource}'. Shorten {named} and retry.", field=field
    )


def model_access_advice(model: str) -> str:
    """What gives the function access to ``model`` (see ``SUBSCRIPTION_ADVICE``)."""
    # InvokeModel is authorized on the model and on the account's default Bedrock project (botocore's Converse
    # documentation: "on both the inference target and the project").
    return (
        f"Check that the function role may invoke {model} and the account's default Bedrock project "
        f"(bedrock:InvokeModel on project/default), and that no SCP denies either in this region. {SUBSCRIPTION_ADVICE}"
    )


def _denied(exc: BaseException, resource: str, hint: str) -> ApiError:
    return ModelAccessDeniedError(f"Access to '{resource}' was denied. {model_access_advice(resource)}")


def _subscription_pending(exc: BaseException, resource: str, hint: str) -> ApiError:
    return ModelUnavailableError(
        f"The account's AWS Marketplace subscription to '{resource}' is still being processed (a third-party "
        "model's first call subscribes the account). Retry in 15 minutes.",
        retry_after=RETRY_AFTER_SUBSCRIPTION_S,
    )


def _account_not_authorized(exc: BaseException, resource: str, hint: str) -> ApiError:
    return ModelAccessDeniedError(
        f"Amazon Bedrock does not authorize this AWS account to use '{resource}' ({ACCOUNT_NOT_AUTHORIZED_CODE}). "
        "No role or configuration change fixes this: the operator must open an AWS Support case naming the "
        "model and region, or configure another model."
    )


def _use_case_form(exc: BaseException, resource: str, hint: str) -> ApiError:
    return ModelAccessDeniedError(
        f"Access to '{resource}' was denied: the account has not submitted the Anthropic use-case form. Submit "
        "it once in the Amazon Bedrock console (model catalog, the Anthropic model), then retry; a form submitted "
        "in the last 15 minutes may not be in effect yet."
    )


def _legacy_not_in_use(resource: str, setting: str) -> ApiError:
    return ModelAccessDeniedError(
        f"Amazon Bedrock refuses '{resource}': the provider marked it Legacy and this account has not used it "
        f"recently, so it cannot start again. Configure an Active model ({setting})."
    )


def model_timeout(resource: str, answer_limit_field: str | None = None) -> ApiError:
    """504: the model did not answer in time (the function's own deadline, or Bedrock's ModelTimeoutException)."""
    shorter = "a shorter request"
    if answer_limit_field:
        shorter = f"a lower {answer_limit_field} (a shorter answer) or {shorter}"
    return ModelTimeoutError(
        f"The model '{resource}' did not answer in time. Retry; a long answer takes longer, so {shorter} helps.",
        retry_after=RETRY_AFTER_TIMEOUT_S,
    )


def _not_found(exc: BaseException, resource: str, hint: str) -> ApiError:
    return UpstreamNotFoundError(
        f"Amazon Bedrock could not find '{resource}' (or the guardrail it uses). Check the region and {hint}."
    )


def _model_error(exc: BaseException, resource: str, hint: str) -> ApiError:
    return ModelError(f"The model '{resource}' failed to process the request.")


_AWS_ERRORS: dict[str, Callable[[BaseException, str, str], ApiError]] = {
    "AccessDeniedException": _denied,
    "NotAuthorized": _denied,
    USE_CASE_FORM_CODE: _use_case_form,
    SUBSCRIPTION_PENDING_CODE: _subscription_pending,
    ACCOUNT_NOT_AUTHORIZED_CODE: _account_not_authorized,
    "ResourceNotFoundException": _not_found,
    "ResourceNotFound": _not_found,  # the troubleshooting page's name for it
    "ModelErrorException": _model_error,
}
