"""Amazon Bedrock Converse: the lazy client, request building and response reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.http import call_with_retry
from prompt_api.settings import Settings, Template
from prompt_api.validation import PromptRequest

GUARDRAIL_INTERVENED = "guardrail_intervened"
CLIENT_CONFIG: dict[str, Any] = {
    # One attempt per call: botocore's "max_attempts" counts *retries* (1 would mean 2 attempts); the kit
    # retries itself, deadline-aware (common.http.call_with_retry).
    "retries": {"total_max_attempts": 1, "mode": "standard"},
    "connect_timeout": 3,
    "read_timeout": 20,
}
_ACTION_RANK = {"NONE": 0, "ANONYMIZED": 1, "BLOCKED": 2}


@lru_cache(maxsize=1)
def get_bedrock_client() -> Any:
    """The bedrock-runtime client, created on first use (boto3 is imported here, not at module import)."""
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-runtime", config=Config(**CLIENT_CONFIG))


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


def prompt_request(settings: Settings, request: PromptRequest) -> dict[str, Any]:
    """Converse parameters for POST /prompt."""
    inference: dict[str, Any] = {
        "temperature": float(request.temperature if request.temperature is not None else settings.default_temperature),
        "maxTokens": request.max_tokens if request.max_tokens is not None else settings.default_max_tokens,
    }
    if request.top_p is not None:
        inference["topP"] = float(request.top_p)
    params: dict[str, Any] = {
        "modelId": settings.model_id,
        "messages": [{"role": "user", "content": [{"text": request.prompt}]}],
        "inferenceConfig": inference,
        "guardrailConfig": guardrail_config(settings),
    }
    if request.system and request.system.strip():
        params["system"] = [{"text": request.system}]
    return params


def template_request(settings: Settings, template: Template, variables: dict[str, str]) -> dict[str, Any]:
    """Converse parameters for a managed prompt (Bedrock rejects inferenceConfig/system with an ARN)."""
    return {
        "modelId": template.arn,
        "promptVariables": {name: {"text": value} for name, value in variables.items()},
        "guardrailConfig": guardrail_config(settings),
    }


def converse(
    params: dict[str, Any], *, model_id: str, remaining_ms: Callable[[], int] | None = None, **retry: Any
) -> ConverseResult:
    """Call Converse with the kit's retry policy and read the answer.

    ``model_id`` is the model that answers (for a managed prompt, the model its variant names), which
    the response and the per-model metrics report.
    """
    client = get_bedrock_client()
    started = time.perf_counter()
    response = call_with_retry(lambda: client.converse(**params), remaining_ms=remaining_ms, **retry)
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
