"""Bedrock knowledge base queries: the lazy client, request building, retries and response reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from common.clients import bounded_client
from common.errors import aws_error_code, is_retryable_aws_error
from common.http import RetryPolicy, call_with_deadline
from rag_api.guardrail import Outcome
from rag_api.settings import Settings
from rag_api.validation import AskRequest, RetrieveRequest

# Each attempt waits at most CONNECT_TIMEOUT_S + its read timeout: READ_TIMEOUT_S, or less when the time left
# is shorter (common.http.call_with_deadline picks it; the client is the one built with that read timeout).
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 20
RETRY_POLICY = RetryPolicy(connect_timeout_s=CONNECT_TIMEOUT_S, max_read_timeout_s=READ_TIMEOUT_S)
# bedrock-agent-runtime's transient "a dependency had a server issue": retried like the common retryable codes.
EXTRA_RETRYABLE_CODES = frozenset({"BadGatewayException"})
GUARDRAIL_INTERVENED = "INTERVENED"
_LOCATION_URL_FIELDS = ("uri", "url")


def get_runtime_client(read_timeout_s: int = READ_TIMEOUT_S) -> Any:
    """The bedrock-agent-runtime client with this read timeout (created on first use, then cached)."""
    return bounded_client("bedrock-agent-runtime", CONNECT_TIMEOUT_S, read_timeout_s)


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
                    },
                    # A model's time grows with what it writes: the cap keeps an answer within the function's
                    # 25 s (a longer one is cut off at the cap, not refused).
                    "inferenceConfig": {"textInferenceConfig": {"maxTokens": settings.answer_max_tokens}},
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
    operation: str,
    params: dict[str, Any],
    *,
    remaining_ms: Callable[[], int] | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> tuple[dict[str, Any], int]:
    """Call ``operation`` (a client method name), every attempt within ``remaining_ms``; (response, elapsed ms)."""
    started = time.perf_counter()
    response: dict[str, Any] = call_with_deadline(
        lambda read_s: getattr(get_runtime_client(read_s), operation)(**params),
        policy=RETRY_POLICY,
        remaining_ms=remaining_ms,
        retryable=is_retryable,
        on_retry=on_retry,
    )
    return response, int((time.perf_counter() - started) * 1000)


# --- responses ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    session_id: str
    citations: list[dict[str, Any]]
    guardrail_intervened: bool  # on the generated answer (RetrieveAndGenerate's guardrailAction)
    latency_ms: int
    masked: int = 0  # returned texts (snippets, citation parts) the guardrail masked
    blocked: int = 0  # and those it blocked (withheld)

    @property
    def intervened(self) -> bool:
        """The guardrail changed or blocked the answer or any text returned with it."""
        return self.guardrail_intervened or bool(self.masked or self.blocked)

    def to_body(self) -> dict[str, Any]:
        """The 200 response body of POST /ask."""
        return {
            "answer": self.text,
            "sessionId": self.session_id,
            "citations": self.citations,
            "guardrail": guardrail_report(self.intervened, self.masked, self.blocked),
        }


def guardrail_report(intervened: bool, masked: int, blocked: int) -> dict[str, Any]:
    """The ``guardrail`` member of a 200 body: did it intervene, and on how many returned texts."""
    return {"intervened": intervened, "masked": masked, "blocked": blocked}


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


def answer_texts(answer: Answer) -> list[str]:
    """The texts of an answer the guardrail must check: every source snippet, and the citation parts when the
    guardrail intervened on the answer (a part may then quote text the answer no longer shows)."""
    texts = [source["snippet"] for citation in answer.citations for source in citation["sources"]]
    if answer.guardrail_intervened:
        texts += [citation["text"] for citation in answer.citations]
    return texts


def guarded_answer(answer: Answer, outcome: Outcome) -> Answer:
    """``answer`` with the guardrail's verdicts applied: masked text replaces the original, a blocked snippet
    drops its source, and a citation left without sources (or whose own text is blocked) is dropped."""
    citations = []
    for citation in answer.citations:
        sources = []
        for source in citation["sources"]:
            snippet = outcome.text(source["snippet"])
            if snippet is not None:
                sources.append({**source, "snippet": snippet})
        text = outcome.text(citation["text"]) if answer.guardrail_intervened else citation["text"]
        if sources and text is not None:
            citations.append({**citation, "text": text, "sources": sources})
    masked, blocked = outcome.counts(answer_texts(answer))
    return replace(answer, citations=citations, masked=masked, blocked=blocked)


def guarded_results(results: list[dict[str, Any]], outcome: Outcome) -> tuple[list[dict[str, Any]], int, int]:
    """(results with masked text, blocked ones dropped; masked count; blocked count)."""
    kept = []
    for result in results:
        text = outcome.text(result["text"])
        if text is not None:
            kept.append({**result, "text": text})
    masked, blocked = outcome.counts(result["text"] for result in results)
    return kept, masked, blocked


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
