"""Bedrock knowledge base queries: the lazy client, request building, retries and response reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.errors import aws_error_code, is_retryable_aws_error
from common.http import call_with_retry
from rag_api.settings import Settings
from rag_api.validation import AskRequest, RetrieveRequest

CLIENT_CONFIG: dict[str, Any] = {
    # One attempt per call: the kit retries itself, deadline-aware (common.http.call_with_retry).
    "retries": {"total_max_attempts": 1, "mode": "standard"},
    "connect_timeout": 3,
    "read_timeout": 20,
}
# bedrock-agent-runtime's transient "a dependency had a server issue": retried like the common retryable codes.
EXTRA_RETRYABLE_CODES = frozenset({"BadGatewayException"})
GUARDRAIL_INTERVENED = "INTERVENED"
_LOCATION_URL_FIELDS = ("uri", "url")


@lru_cache(maxsize=1)
def get_runtime_client() -> Any:
    """The bedrock-agent-runtime client, created on first use (boto3 is imported here, not at module import)."""
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-agent-runtime", config=Config(**CLIENT_CONFIG))


def is_retryable(exc: BaseException) -> bool:
    """Throttling and transient errors (including BadGatewayException) are retried; nothing else is."""
    return is_retryable_aws_error(exc) or aws_error_code(exc) in EXTRA_RETRYABLE_CODES


# --- requests ----------------------------------------------------------------------------------------------


def retrieval_configuration(
    settings: Settings, number_of_results: int | None, retrieval_filter: dict[str, Any] | None
) -> dict[str, Any]:
    vector: dict[str, Any] = {
        "numberOfResults": number_of_results if number_of_results is not None else settings.default_number_of_results
    }
    if retrieval_filter is not None:
        vector["filter"] = retrieval_filter
    return {"vectorSearchConfiguration": vector}


def ask_params(settings: Settings, request: AskRequest) -> dict[str, Any]:
    """RetrieveAndGenerate parameters for POST /ask (the guardrail applies to every generated answer)."""
    params: dict[str, Any] = {
        "input": {"text": request.question},
        "retrieveAndGenerateConfiguration": {
            "type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {
                "knowledgeBaseId": settings.knowledge_base_id,
                "modelArn": settings.model_arn,
                "retrievalConfiguration": retrieval_configuration(settings, request.number_of_results, request.filter),
                "generationConfiguration": {
                    "guardrailConfiguration": {
                        "guardrailId": settings.guardrail_id,
                        "guardrailVersion": settings.guardrail_version,
                    }
                },
            },
        },
    }
    if request.session_id is not None:
        params["sessionId"] = request.session_id
    return params


def retrieve_params(settings: Settings, request: RetrieveRequest) -> dict[str, Any]:
    """Retrieve parameters for POST /retrieve."""
    return {
        "knowledgeBaseId": settings.knowledge_base_id,
        "retrievalQuery": {"text": request.query},
        "retrievalConfiguration": retrieval_configuration(settings, request.number_of_results, request.filter),
    }


# --- calls -------------------------------------------------------------------------------------------------


def call(
    operation: str, params: dict[str, Any], *, remaining_ms: Callable[[], int] | None = None, **retry: Any
) -> tuple[dict[str, Any], int]:
    """Call ``operation`` (a client method name) with the kit's retry policy; (response, elapsed ms)."""
    method = getattr(get_runtime_client(), operation)
    started = time.perf_counter()
    response: dict[str, Any] = call_with_retry(
        lambda: method(**params), remaining_ms=remaining_ms, retryable=is_retryable, **retry
    )
    return response, int((time.perf_counter() - started) * 1000)


# --- responses ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    session_id: str
    citations: list[dict[str, Any]]
    guardrail_intervened: bool
    latency_ms: int

    def to_body(self) -> dict[str, Any]:
        """The 200 response body of POST /ask."""
        return {
            "answer": self.text,
            "sessionId": self.session_id,
            "citations": self.citations,
            "guardrail": {"intervened": self.guardrail_intervened},
        }


def read_answer(response: dict[str, Any], latency_ms: int) -> Answer:
    """Turn a RetrieveAndGenerate response into an Answer; citations without sources are dropped."""
    text = str((response.get("output") or {}).get("text") or "")
    citations = []
    for citation in response.get("citations") or []:
        sources = [_source(reference) for reference in citation.get("retrievedReferences") or []]
        if not sources:
            continue
        part = (citation.get("generatedResponsePart") or {}).get("textResponsePart") or {}
        part_text = str(part.get("text") or "")
        start, end = _span(part, part_text, text)
        citations.append({"text": part_text, "start": start, "end": end, "sources": sources})
    return Answer(
        text=text,
        session_id=str(response.get("sessionId") or ""),
        citations=citations,
        guardrail_intervened=response.get("guardrailAction") == GUARDRAIL_INTERVENED,
        latency_ms=latency_ms,
    )


def read_results(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``results`` of POST /retrieve: text, score, uri and metadata of every retrieved chunk."""
    results = []
    for item in response.get("retrievalResults") or []:
        score = item.get("score")
        results.append(
            {
                "text": _content_text(item.get("content")),
                "score": float(score) if isinstance(score, (int, float)) else None,
                "uri": location_uri(item.get("location")),
                "metadata": dict(item.get("metadata") or {}),
            }
        )
    return results


def location_uri(location: Any) -> str:
    """The S3 URI of a retrieved chunk (or the URL of another source type); empty when there is none."""
    if not isinstance(location, dict):
        return ""
    s3 = location.get("s3Location")
    if isinstance(s3, dict) and isinstance(s3.get("uri"), str):
        return str(s3["uri"])
    for value in location.values():
        if isinstance(value, dict):
            for name in _LOCATION_URL_FIELDS:
                if isinstance(value.get(name), str):
                    return str(value[name])
    return ""


def _source(reference: dict[str, Any]) -> dict[str, Any]:
    source: dict[str, Any] = {
        "uri": location_uri(reference.get("location")),
        "snippet": _content_text(reference.get("content")),
    }
    score = reference.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        source["score"] = float(score)
    metadata = reference.get("metadata")
    if metadata:
        source["metadata"] = dict(metadata)
    return source


def _content_text(content: Any) -> str:
    return str(content.get("text") or "") if isinstance(content, dict) else ""


def _span(part: dict[str, Any], part_text: str, answer: str) -> tuple[int, int]:
    span = part.get("span") or {}
    start, end = span.get("start"), span.get("end")
    if isinstance(start, int) and isinstance(end, int):
        return start, end
    found = answer.find(part_text) if part_text else -1
    return (found, found + len(part_text)) if found >= 0 else (0, 0)
