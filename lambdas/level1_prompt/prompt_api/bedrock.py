"""Amazon Bedrock: the lazy clients, the managed prompts, Converse request building and response reading.

Every call is deadline-aware (``common.http.call_with_deadline``): an attempt waits for its answer no longer
than the function has left, so the caller always gets one of the kit's statuses before the function's timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.clients import bounded_client, client_config
from common.errors import ModelAccessDeniedError, aws_error_code
from common.http import RetryPolicy, call_with_deadline
from prompt_api import prompts
from prompt_api.prompts import ManagedPrompt
from prompt_api.settings import Settings
from prompt_api.validation import PromptRequest

GUARDRAIL_INTERVENED = "guardrail_intervened"
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 20
# One attempt per call (botocore's "max_attempts" would count *retries*); the kit retries itself.
CLIENT_CONFIG: dict[str, Any] = client_config(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
RETRY_POLICY = RetryPolicy(connect_timeout_s=CONNECT_TIMEOUT_S, max_read_timeout_s=READ_TIMEOUT_S)
_ACTION_RANK = {"NONE": 0, "ANONYMIZED": 1, "BLOCKED": 2}
_PROMPT_CACHE: dict[str, ManagedPrompt] = {}  # prompt version ARN -> prompt; a version never changes


@lru_cache(maxsize=1)
def get_bedrock_client() -> Any:
    """The bedrock-runtime client with the full timeouts, created on first use (boto3 is imported there)."""
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-runtime", config=Config(**CLIENT_CONFIG))


@lru_cache(maxsize=1)
def get_agent_client() -> Any:
    """The bedrock-agent client (Prompt Management) with the full timeouts, created on first use."""
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-agent", config=Config(**CLIENT_CONFIG))


def runtime_client(read_timeout_s: int) -> Any:
    """A bedrock-runtime client that waits at most ``read_timeout_s`` for an answer."""
    if read_timeout_s >= READ_TIMEOUT_S:
        return get_bedrock_client()
    return bounded_client("bedrock-runtime", CONNECT_TIMEOUT_S, read_timeout_s)


def agent_client(read_timeout_s: int) -> Any:
    """A bedrock-agent client that waits at most ``read_timeout_s`` for an answer."""
    if read_timeout_s >= READ_TIMEOUT_S:
        return get_agent_client()
    return bounded_client("bedrock-agent", CONNECT_TIMEOUT_S, read_timeout_s)


@dataclass(frozen=True)
class ConverseResult:
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    model_id: str
    guardrail_intervened: bool
    guardrail_action: str | None
    latency_ms: int

    def to_body(self) -> dict[str, Any]:
        """The 200 response body."""
        return {
            "text": self.text,
            "stopReason": self.stop_reason,
            "usage": {
                "inputTokens": self.input_tokens,
                "outputTokens": self.output_tokens,
                "totalTokens": self.total_tokens,
            },
            "modelId": self.model_id,
            "guardrail": {"intervened": self.guardrail_intervened, "action": self.guardrail_action},
            "latencyMs": self.latency_ms,
        }


def guardrail_config(settings: Settings) -> dict[str, str]:
    return {
        "guardrailIdentifier": settings.guardrail_id,
        "guardrailVersion": settings.guardrail_version,
        "trace": "enabled",
    }


def guarded(text: str) -> dict[str, Any]:
    """A content block the guardrail evaluates (input tagging); the model reads it like any text."""
    return {"guardContent": {"text": {"text": text}}}


def prompt_request(settings: Settings, request: PromptRequest) -> dict[str, Any]:
    """Converse parameters for POST /prompt.

    The caller wrote the prompt and the system text, so both are guard content: the guardrail evaluates all of
    what the caller supplied, the system text included.
    """
    inference: dict[str, Any] = {
        "maxTokens": request.max_tokens if request.max_tokens is not None else settings.default_max_tokens,
    }
    # The default temperature only when the caller chose no sampling setting: some models (Claude Haiku 4.5)
    # refuse temperature and topP together, so a caller who sent only topP must not get the default added; and
    # none when the deployment has no default (text_temperature none, for a model that refuses any temperature).
    if request.temperature is not None:
        inference["temperature"] = float(request.temperature)
    elif request.top_p is None and settings.default_temperature is not None:
        inference["temperature"] = float(settings.default_temperature)
    if request.top_p is not None:
        inference["topP"] = float(request.top_p)
    params: dict[str, Any] = {
        "modelId": settings.model_id,
        "messages": [{"role": "user", "content": [guarded(request.prompt)]}],
        "inferenceConfig": inference,
        "guardrailConfig": guardrail_config(settings),
        "requestMetadata": dict(settings.request_metadata),
    }
    if request.system and request.system.strip():
        params["system"] = [guarded(request.system)]
    return params


def template_request(settings: Settings, prompt: ManagedPrompt, variables: dict[str, str]) -> dict[str, Any]:
    """Converse parameters for a managed prompt, rendered here so the guardrail judges only the caller's text.

    The template's own words are plain text blocks; each variable value is a guardContent block, so the
    guardrail (prompt-attack filter included) evaluates what the caller supplied and not the kit's
    instructions. Converse with a prompt version ARN as ``modelId`` cannot do this: ``promptVariables`` values
    are plain text, and without guardContent blocks the guardrail evaluates the whole rendered prompt.
    """
    content = [
        guarded(value) if kind == prompts.VARIABLE else {"text": value}
        for kind, value in prompts.render(prompt, variables)
    ]
    params: dict[str, Any] = {
        "modelId": settings.model_id,
        "messages": [{"role": "user", "content": content}],
        "guardrailConfig": guardrail_config(settings),
        "requestMetadata": dict(settings.request_metadata),
    }
    # The template's own settings, and always a maxTokens: without one Converse allows the model's maximum
    # (InferenceConfiguration, botocore's bedrock-runtime model), which a caller of a template cannot lower.
    params["inferenceConfig"] = {"maxTokens": settings.default_max_tokens, **prompt.inference}
    return params


def get_managed_prompt(arn: str, *, remaining_ms: Callable[[], int] | None = None, **retry: Any) -> ManagedPrompt:
    """The prompt version ``arn`` from Prompt Management (GetPrompt), read once per execution environment."""
    cached = _PROMPT_CACHE.get(arn)
    if cached is not None:
        return cached
    prompt_id, version = prompts.split_version_arn(arn)
    try:
        response = call_with_deadline(
            lambda read_s: agent_client(read_s).get_prompt(promptIdentifier=prompt_id, promptVersion=version),
            policy=RETRY_POLICY,
            remaining_ms=remaining_ms,
            **retry,
        )
    except Exception as exc:
        if aws_error_code(exc) == "AccessDeniedException":
            raise ModelAccessDeniedError(
                f"The function may not read the managed prompt '{arn}': its role needs bedrock:GetPrompt on the "
                "prompt and its version. Redeploy the stack to restore the role's policy."
            ) from exc
        raise
    prompt = prompts.parse_prompt(arn, response)
    _PROMPT_CACHE[arn] = prompt
    return prompt


def clear_prompt_cache() -> None:
    _PROMPT_CACHE.clear()


def converse(
    params: dict[str, Any], *, model_id: str, remaining_ms: Callable[[], int] | None = None, **retry: Any
) -> ConverseResult:
    """Call Converse with the kit's deadline-aware retry policy and read the answer.

    ``model_id`` is the model that answers, which the response and the per-model metrics report.
    """
    started = time.perf_counter()
    response = call_with_deadline(
        lambda read_s: runtime_client(read_s).converse(**params),
        policy=RETRY_POLICY,
        remaining_ms=remaining_ms,
        **retry,
    )
    measured_ms = int((time.perf_counter() - started) * 1000)
    return read_response(response, model_id, measured_ms)


def read_response(response: dict[str, Any], model_id: str, measured_ms: int) -> ConverseResult:
    """Turn a Converse response into a ConverseResult."""
    content = ((response.get("output") or {}).get("message") or {}).get("content") or []
    usage = response.get("usage") or {}
    stop_reason = str(response.get("stopReason", ""))
    latency = (response.get("metrics") or {}).get("latencyMs")
    return ConverseResult(
        text="".join(block["text"] for block in content if isinstance(block.get("text"), str)),
        stop_reason=stop_reason,
        input_tokens=int(usage.get("inputTokens", 0)),
        output_tokens=int(usage.get("outputTokens", 0)),
        total_tokens=int(usage.get("totalTokens", 0)),
        model_id=model_id,
        guardrail_intervened=stop_reason == GUARDRAIL_INTERVENED,
        guardrail_action=guardrail_action((response.get("trace") or {}).get("guardrail")),
        latency_ms=int(latency) if isinstance(latency, int) else measured_ms,
    )


def guardrail_action(trace: Any, max_nodes: int = 10_000) -> str | None:
    """The strongest ``action`` (BLOCKED > ANONYMIZED > NONE) anywhere in a guardrail trace, else None."""
    best: str | None = None
    stack, seen = [trace], 0
    while stack and seen < max_nodes:
        node, seen = stack.pop(), seen + 1
        if isinstance(node, dict):
            action = node.get("action")
            if isinstance(action, str) and _ACTION_RANK.get(action, -1) > _ACTION_RANK.get(best or "", -1):
                best = action
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return best
