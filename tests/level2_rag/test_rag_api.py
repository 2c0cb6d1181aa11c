"""Behaviour of the Level 2 query API Lambda (offline: bedrock-agent-runtime is a Stubber on the real client)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import common.clients
import common.http
import rag_api.handler
from common import errors
from common.errors import BadRequestError
from rag_api import filters, guardrail, knowledge_base, settings, validation
from scripts.ingest_burst import validate_strict
from stacks.level2_rag.settings import VECTOR_STORES
from stacks.shared.python_function import stage_function_code
from stacks.shared.rest_api import API_FUNCTION_TIMEOUT
from tests.conftest import cdk_json_context
from tests.lambda_helpers import (
    API_REQUEST_ID,
    FakeContext,
    Reply,
    api_event,
    assert_error,
    assert_error_contract,
    emf_documents,
    failing_sends,
    headers_of,
)

from .rag_filters import invalid_filters, valid_filters

KB_ID = "KB12345678"
MODEL_ID = "us.amazon.nova-micro-v1:0"
MODEL_ARN = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{MODEL_ID}"
EMBEDDING_MODEL_ID = "amazon.titan-embed-text-v2:0"
GUARDRAIL_ID = "rag1guard2"
GUARDRAIL_VERSION = "2"
NAMESPACE = "GenAiKitTest"
SERVICE = "rag-api-test"
# The function's asset as Lambda sees it: its package and lambdas/common side by side.
ASSET_DIR = stage_function_code("rag_api")
RAG_ENV = {
    "KNOWLEDGE_BASE_ID": KB_ID,
    "MODEL_ARN": MODEL_ARN,
    "MODEL_ID": MODEL_ID,
    "EMBEDDING_MODEL_ID": EMBEDDING_MODEL_ID,
    "GUARDRAIL_ID": GUARDRAIL_ID,
    "GUARDRAIL_VERSION": GUARDRAIL_VERSION,
    "VECTOR_STORE": "s3vectors",
    "ANSWER_MAX_TOKENS": "700",
    # As the stack sets it: cdk.json's rag_max_results (the function has no default of its own).
    "DEFAULT_NUMBER_OF_RESULTS": str(cdk_json_context()["rag_max_results"]),
    "POWERTOOLS_SERVICE_NAME": SERVICE,
    "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
    "POWERTOOLS_TRACE_DISABLED": "true",
}
Invoke = Callable[..., Reply]
RUNTIME_MODEL = boto3.client("bedrock-agent-runtime", region_name="us-east-1").meta.service_model
GUARDRAIL_MODEL = boto3.client("bedrock-runtime", region_name="us-east-1").meta.service_model
FUNCTION_TIMEOUT_MS = int(API_FUNCTION_TIMEOUT.to_milliseconds())
RUNTIME_CLIENT, GUARDRAIL_CLIENT = knowledge_base.get_runtime_client, guardrail.get_guardrail_client


def clear_caches() -> None:
    for factory in (
        settings.get_settings,
        validation.load_schemas,
        validation.validator,
        common.clients.bounded_client,
        rag_api.handler.get_metrics,
        rag_api.handler.get_tracer,
        rag_api.handler.get_resolver,
    ):
        clear = getattr(factory, "cache_clear", None)
        if clear is not None:
            clear()


@pytest.fixture(autouse=True)
def rag_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in RAG_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def stubber(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The real bedrock-agent-runtime client from the lazy factory, wrapped in a Stubber and injected."""
    client = knowledge_base.get_runtime_client()
    stub = Stubber(client)
    monkeypatch.setattr(knowledge_base, "get_runtime_client", lambda *_, **__: client)
    with stub:
        yield stub


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The real bedrock-runtime client for ApplyGuardrail, wrapped in a Stubber and injected in every test:
    a call nobody expected fails the request instead of reaching AWS."""
    client = guardrail.get_guardrail_client()
    stub = Stubber(client)
    monkeypatch.setattr(guardrail, "get_guardrail_client", lambda *_, **__: client)
    with stub:
        yield stub


def guard_params(*texts: str) -> dict[str, Any]:
    """The exact ApplyGuardrail request that checks ``texts`` as model output with the stack's guardrail."""
    return {
        "guardrailIdentifier": GUARDRAIL_ID,
        "guardrailVersion": GUARDRAIL_VERSION,
        "source": "OUTPUT",
        "content": [{"text": {"text": text}} for text in texts],
    }


USAGE = {
    "topicPolicyUnits": 1,
    "contentPolicyUnits": 1,
    "wordPolicyUnits": 1,
    "sensitiveInformationPolicyUnits": 1,
    "sensitiveInformationPolicyFreeUnits": 0,
    "contextualGroundingPolicyUnits": 0,
}
PII_MASKED = {
    "sensitiveInformationPolicy": {
        "piiEntities": [{"match": "x", "type": "EMAIL", "action": "ANONYMIZED"}],
        "regexes": [],
    }
}
TOPIC_BLOCKED = {"topicPolicy": {"topics": [{"name": "Secrets", "type": "DENY", "action": "BLOCKED"}]}}
CANNED = "Sorry, the model cannot answer this question."


def guard_passes(texts: list[str]) -> dict[str, Any]:
    return {"usage": USAGE, "action": "NONE", "outputs": [], "assessments": [{}]}


def guard_masks(outputs: list[str]) -> dict[str, Any]:
    return {
        "usage": USAGE,
        "action": "GUARDRAIL_INTERVENED",
        "outputs": [{"text": text} for text in outputs],
        "assessments": [PII_MASKED],
    }


def guard_blocks() -> dict[str, Any]:
    return {
        "usage": USAGE,
        "action": "GUARDRAIL_INTERVENED",
        "outputs": [{"text": CANNED}],
        "assessments": [TOPIC_BLOCKED],
    }


def allow(guard: Stubber, *texts: str) -> None:
    """Expect one ApplyGuardrail call on ``texts`` that lets them all through."""
    guard.add_response("apply_guardrail", guard_passes(list(texts)), guard_params(*texts))


NO_GUARDRAIL_ACTION = {"intervened": False, "masked": 0, "blocked": 0}
SNIPPETS = (
    "Customers may return items within 30 days.",
    "Free shipping on orders over $50.",
    "Is shipping free? Yes, above $50.",
)


@pytest.fixture
def invoke(context: FakeContext) -> Invoke:
    """Call the query API handler and decode the proxy response (checking the error contract on errors)."""

    def call(event: Any, ctx: FakeContext | None = None) -> Reply:
        response = rag_api.handler.handler(event, cast(Any, ctx or context))
        assert isinstance(response["body"], str)
        reply = Reply(response["statusCode"], json.loads(response["body"]), headers_of(response), response)
        if reply.status >= 400:
            assert_error_contract(reply)
        else:
            assert reply.headers.get("content-type") == "application/json"
        return reply

    return call


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    log_handler = rag_api.handler.logger.registered_handler
    assert isinstance(log_handler, logging.StreamHandler)
    previous = log_handler.setStream(stream)
    try:
        yield stream
    finally:
        log_handler.setStream(previous)


def ask(body: Any = None, **kwargs: Any) -> dict[str, Any]:
    return api_event("POST", "/ask", body, **kwargs)


def retrieve(body: Any = None, **kwargs: Any) -> dict[str, Any]:
    return api_event("POST", "/retrieve", body, **kwargs)


def ask_params(
    question: str = "What is our refund policy?",
    *,
    number_of_results: int = 5,
    retrieval_filter: dict[str, Any] | None = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """The exact RetrieveAndGenerate request expected for POST /ask."""
    vector: dict[str, Any] = {"numberOfResults": number_of_results}
    if retrieval_filter is not None:
        vector["filter"] = retrieval_filter
    params: dict[str, Any] = {
        "input": {"text": question},
        "retrieveAndGenerateConfiguration": {
            "type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {
                "knowledgeBaseId": KB_ID,
                "modelArn": MODEL_ARN,
                "retrievalConfiguration": {"vectorSearchConfiguration": vector},
                "generationConfiguration": {
                    "guardrailConfiguration": {"guardrailId": GUARDRAIL_ID, "guardrailVersion": GUARDRAIL_VERSION},
                    "inferenceConfig": {"textInferenceConfig": {"maxTokens": 700}},
                },
            },
        },
    }
    if session_id is not None:
        params["sessionId"] = session_id
    return params


def retrieve_params(
    query: str = "refund policy", *, number_of_results: int = 5, retrieval_filter: dict[str, Any] | None = None
) -> dict[str, Any]:
    vector: dict[str, Any] = {"numberOfResults": number_of_results}
    if retrieval_filter is not None:
        vector["filter"] = retrieval_filter
    return {
        "knowledgeBaseId": KB_ID,
        "retrievalQuery": {"text": query},
        "retrievalConfiguration": {"vectorSearchConfiguration": vector},
    }


ANSWER = "Refunds are accepted within 30 days. Shipping is free over $50."
REFUND_META = {"x-amz-bedrock-kb-source-uri": "s3://docs-bucket/docs/refunds.md", "department": "sales"}


def reference(uri: str, text: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"content": {"text": text}, "location": {"type": "S3", "s3Location": {"uri": uri}}}
    if metadata is not None:
        ref["metadata"] = metadata
    return ref


def rag_response(
    answer: str = ANSWER,
    *,
    citations: list[dict[str, Any]] | None = None,
    session_id: str = "session-1",
    guardrail_action: str | None = None,
) -> dict[str, Any]:
    if citations is None:
        citations = [
            {
                "generatedResponsePart": {
                    "textResponsePart": {
                        "text": "Refunds are accepted within 30 days.",
                        "span": {"start": 0, "end": 35},
                    }
                },
                "retrievedReferences": [
                    reference(
                        "s3://docs-bucket/docs/refunds.md", "Customers may return items within 30 days.", REFUND_META
                    )
                ],
            },
            {
                "generatedResponsePart": {
                    "textResponsePart": {"text": "Shipping is free over $50.", "span": {"start": 37, "end": 62}}
                },
                "retrievedReferences": [
                    reference("s3://docs-bucket/docs/shipping.md", "Free shipping on orders over $50."),
                    reference("s3://docs-bucket/docs/faq.md", "Is shipping free? Yes, above $50."),
                ],
            },
        ]
    response: dict[str, Any] = {"output": {"text": answer}, "sessionId": session_id, "citations": citations}
    if guardrail_action is not None:
        response["guardrailAction"] = guardrail_action
    return response


# --- POST /ask ---------------------------------------------------------------------------------------------


def test_ask_answers_with_citations_and_emits_metrics(
    invoke: Invoke, stubber: Stubber, guard: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    stubber.add_response("retrieve_and_generate", rag_response(guardrail_action="NONE"), ask_params())
    allow(guard, *SNIPPETS)  # one ApplyGuardrail call checks every snippet

    reply = invoke(ask({"question": "What is our refund policy?"}))

    assert reply.status == 200
    assert reply.body == {
        "answer": ANSWER,
        "sessionId": "session-1",
        "citations": [
            {
                "text": "Refunds are accepted within 30 days.",
                "start": 0,
                "end": 35,
                "sources": [
                    {
                        "uri": "s3://docs-bucket/docs/refunds.md",
                        "snippet": "Customers may return items within 30 days.",
                        "metadata": REFUND_META,
                    }
                ],
            },
            {
                "text": "Shipping is free over $50.",
                "start": 37,
                "end": 62,
                "sources": [
                    {"uri": "s3://docs-bucket/docs/shipping.md", "snippet": "Free shipping on orders over $50."},
                    {"uri": "s3://docs-bucket/docs/faq.md", "snippet": "Is shipping free? Yes, above $50."},
                ],
            },
        ],
        "guardrail": NO_GUARDRAIL_ACTION,
    }
    stubber.assert_no_pending_responses()
    guard.assert_no_pending_responses()
    [emf] = emf_documents(capsys.readouterr().out)
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["ModelId", "service"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Latency": "Milliseconds",
        "Citations": "Count",
        "GuardrailIntervened": "Count",
    }
    assert (emf["ModelId"], emf["service"], emf["Citations"], emf["GuardrailIntervened"]) == (
        MODEL_ID,
        SERVICE,
        [2.0],
        [0.0],
    )
    assert emf["Latency"][0] >= 0


def test_ask_passes_every_option(invoke: Invoke, stubber: Stubber, guard: Stubber) -> None:
    retrieval_filter = {
        "andAll": [
            {"equals": {"key": "department", "value": "sales"}},
            {"orAll": [{"greaterThan": {"key": "year", "value": 2023}}, {"in": {"key": "tag", "value": ["a", "b"]}}]},
        ]
    }
    expected = ask_params("Refunds?", number_of_results=25, retrieval_filter=retrieval_filter, session_id="abc:1.2_3-4")
    stubber.add_response("retrieve_and_generate", rag_response(session_id="abc:1.2_3-4"), expected)
    allow(guard, *SNIPPETS)

    body = {"question": "Refunds?", "numberOfResults": 25, "filter": retrieval_filter, "sessionId": "abc:1.2_3-4"}
    reply = invoke(ask(body))

    assert reply.status == 200
    assert reply.body["sessionId"] == "abc:1.2_3-4"
    stubber.assert_no_pending_responses()


def test_follow_up_question_reuses_the_session(invoke: Invoke, stubber: Stubber, guard: Stubber) -> None:
    stubber.add_response("retrieve_and_generate", rag_response(session_id="sess-42"), ask_params("First?"))
    allow(guard, *SNIPPETS)
    stubber.add_response(
        "retrieve_and_generate",
        rag_response("It is 30 days.", citations=[], session_id="sess-42"),
        ask_params("And for sale items?", session_id="sess-42"),
    )

    first = invoke(ask({"question": "First?"}))
    follow_up = invoke(ask({"question": "And for sale items?", "sessionId": first.body["sessionId"]}))

    assert (first.body["sessionId"], follow_up.body["sessionId"]) == ("sess-42", "sess-42")
    assert follow_up.body["answer"] == "It is 30 days."
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    "citations",
    [
        [],
        [
            {
                "generatedResponsePart": {"textResponsePart": {"text": "x", "span": {"start": 0, "end": 1}}},
                "retrievedReferences": [],
            }
        ],
        [{"retrievedReferences": []}],
    ],
)
def test_empty_retrieval_is_a_normal_answer_without_citations(
    invoke: Invoke, stubber: Stubber, capsys: pytest.CaptureFixture[str], citations: list[dict[str, Any]]
) -> None:
    answer = "Sorry, I am unable to assist you with this request."
    stubber.add_response("retrieve_and_generate", rag_response(answer, citations=citations), ask_params())

    reply = invoke(ask({"question": "What is our refund policy?"}))

    assert reply.status == 200
    assert reply.body == {
        "answer": answer,
        "sessionId": "session-1",
        "citations": [],
        "guardrail": NO_GUARDRAIL_ACTION,
    }
    [emf] = emf_documents(capsys.readouterr().out)
    assert emf["Citations"] == [0.0]


def test_guardrail_intervention_is_reported_and_counted(
    invoke: Invoke, stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = "Sorry, the model cannot answer this question."
    stubber.add_response(
        "retrieve_and_generate", rag_response(blocked, citations=[], guardrail_action="INTERVENED"), ask_params("Bad?")
    )

    reply = invoke(ask({"question": "Bad?"}))

    assert reply.status == 200
    assert reply.body["guardrail"] == {"intervened": True, "masked": 0, "blocked": 0}
    assert reply.body["answer"] == blocked
    [emf] = emf_documents(capsys.readouterr().out)
    assert emf["GuardrailIntervened"] == [1.0]


def test_citation_without_span_is_located_in_the_answer(invoke: Invoke, stubber: Stubber, guard: Stubber) -> None:
    citations = [
        {
            "generatedResponsePart": {"textResponsePart": {"text": "Shipping is free over $50."}},
            "retrievedReferences": [
                {
                    "content": {"text": "Free shipping."},
                    "location": {"type": "WEB", "webLocation": {"url": "https://example.com/s"}},
                }
            ],
        }
    ]
    stubber.add_response("retrieve_and_generate", rag_response(citations=citations), ask_params())
    allow(guard, "Free shipping.")

    reply = invoke(ask({"question": "What is our refund policy?"}))

    assert reply.body["citations"] == [
        {
            "text": "Shipping is free over $50.",
            "start": 37,
            "end": 63,
            "sources": [{"uri": "https://example.com/s", "snippet": "Free shipping."}],
        }
    ]


def test_default_number_of_results_comes_from_the_environment(
    invoke: Invoke, stubber: Stubber, guard: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_NUMBER_OF_RESULTS", "12")
    stubber.add_response("retrieve_and_generate", rag_response(), ask_params(number_of_results=12))
    allow(guard, *SNIPPETS)
    assert invoke(ask({"question": "What is our refund policy?"})).status == 200
    stubber.assert_no_pending_responses()


def test_the_answer_cap_comes_from_the_environment_in_the_range_the_config_key_allows(
    invoke: Invoke, stubber: Stubber, guard: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    bounds = settings.ANSWER_MAX_TOKENS_RANGE  # rag_answer_max_tokens's range too (the settings import it)
    shape = RUNTIME_MODEL.shape_for("TextInferenceConfig").members["maxTokens"]
    assert shape.metadata["min"] <= bounds[0] and bounds[1] <= shape.metadata["max"]
    monkeypatch.setenv("ANSWER_MAX_TOKENS", str(bounds[1]))
    expected = ask_params()
    expected["retrieveAndGenerateConfiguration"]["knowledgeBaseConfiguration"]["generationConfiguration"][
        "inferenceConfig"
    ] = {"textInferenceConfig": {"maxTokens": bounds[1]}}
    stubber.add_response("retrieve_and_generate", rag_response(), expected)
    allow(guard, *SNIPPETS)
    assert invoke(ask({"question": "What is our refund policy?"})).status == 200
    stubber.assert_no_pending_responses()


def test_question_answer_and_session_id_are_never_logged(
    invoke: Invoke, stubber: Stubber, guard: Stubber, logs: io.StringIO
) -> None:
    secret = "TOP-SECRET-QUESTION-42"
    stubber.add_response("retrieve_and_generate", rag_response("SECRET-ANSWER-43"), ask_params(secret))
    allow(guard, *SNIPPETS)

    assert invoke(ask({"question": secret})).status == 200

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    finished = next(r for r in lines if r["message"] == "RetrieveAndGenerate call finished")
    assert (finished["correlation_id"], finished["citations"], finished["sources"]) == (API_REQUEST_ID, 2, 3)
    assert secret not in logs.getvalue()
    assert "SECRET-ANSWER-43" not in logs.getvalue()
    # The session id lets whoever holds it go on with the conversation: the log carries a digest, for correlation.
    assert "session-1" not in logs.getvalue()
    assert finished["session"] == hashlib.sha256(b"session-1").hexdigest()[:16]


# --- POST /retrieve ----------------------------------------------------------------------------------------


def test_retrieve_returns_chunks_with_score_uri_and_metadata(
    invoke: Invoke, stubber: Stubber, guard: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    response = {
        "retrievalResults": [
            {
                "content": {"text": "Customers may return items within 30 days.", "type": "TEXT"},
                "location": {"type": "S3", "s3Location": {"uri": "s3://docs-bucket/docs/refunds.md"}},
                "metadata": REFUND_META,
                "score": 0.82,
            },
            {"content": {"text": "Free shipping."}, "location": {"type": "S3", "s3Location": {"uri": "s3://b/s.md"}}},
        ]
    }
    retrieval_filter = {"equals": {"key": "department", "value": "sales"}}
    expected = retrieve_params("refunds", number_of_results=2, retrieval_filter=retrieval_filter)
    stubber.add_response("retrieve", response, expected)
    allow(guard, "Customers may return items within 30 days.", "Free shipping.")

    reply = invoke(retrieve({"query": "refunds", "numberOfResults": 2, "filter": retrieval_filter}))

    assert reply.status == 200
    assert reply.body == {
        "results": [
            {
                "text": "Customers may return items within 30 days.",
                "score": 0.82,
                "uri": "s3://docs-bucket/docs/refunds.md",
                "metadata": REFUND_META,
            },
            {"text": "Free shipping.", "score": None, "uri": "s3://b/s.md", "metadata": {}},
        ],
        "guardrail": NO_GUARDRAIL_ACTION,
    }
    [emf] = emf_documents(capsys.readouterr().out)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["KnowledgeBaseId", "service"]]
    assert (emf["KnowledgeBaseId"], emf["RetrievedResults"]) == (KB_ID, [2.0])
    assert "RetrieveLatency" in emf


def test_retrieve_with_no_match_is_an_empty_list(invoke: Invoke, stubber: Stubber) -> None:
    stubber.add_response("retrieve", {"retrievalResults": []}, retrieve_params())
    reply = invoke(retrieve({"query": "refund policy"}))
    assert (reply.status, reply.body) == (200, {"results": [], "guardrail": NO_GUARDRAIL_ACTION})


# --- request validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_body", "code"),
    [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ('{"question": NaN}', "invalid_json"),
        ("[" * 100_000, "invalid_json"),
        ('["a list"]', "invalid_body"),
        ('"a string"', "invalid_body"),
        ("null", "invalid_body"),
    ],
)
@pytest.mark.parametrize("route", [ask, retrieve])
def test_malformed_or_non_object_body_is_400_on_body(
    invoke: Invoke, route: Callable[..., dict[str, Any]], raw_body: str, code: str
) -> None:
    assert_error(invoke(route(raw_body=raw_body)), 400, code, "body")


def test_missing_and_oversized_bodies_are_400(invoke: Invoke) -> None:
    assert_error(invoke(ask(None)), 400, "invalid_json", "body")
    assert_error(invoke(ask(raw_body=json.dumps({"question": "x" * (600 * 1024)}))), 413, "body_too_large", "body")


def test_base64_encoded_body_is_decoded(invoke: Invoke, stubber: Stubber) -> None:
    stubber.add_response("retrieve", {"retrievalResults": []}, retrieve_params())
    assert invoke(retrieve({"query": "refund policy"}, base64_body=True)).status == 200


@pytest.mark.parametrize(
    ("body", "code", "field", "message_part"),
    [
        ({}, "missing_field", "question", "required"),
        ({"sessionId": "ab"}, "missing_field", "question", "required"),
        ({"question": 42}, "invalid_type", "question", "a string of 1 to 1000 characters"),
        ({"question": ""}, "invalid_length", "question", "1 to 1000 characters"),
        ({"question": "  \n "}, "invalid_value", "question", "non-whitespace"),
        ({"question": "q" * 1001}, "invalid_length", "question", "got 1001"),
        ({"question": "q", "sessionId": 7}, "invalid_type", "sessionId", "a string of 2 to 100"),
        ({"question": "q", "sessionId": "a"}, "invalid_length", "sessionId", "2 to 100"),
        ({"question": "q", "sessionId": "s" * 101}, "invalid_length", "sessionId", "got 101"),
        ({"question": "q", "sessionId": "has space"}, "invalid_value", "sessionId", "letters, digits"),
        ({"question": "q", "numberOfResults": 0}, "out_of_range", "numberOfResults", "between 1 and 25"),
        ({"question": "q", "numberOfResults": 26}, "out_of_range", "numberOfResults", "between 1 and 25"),
        ({"question": "q", "numberOfResults": 2.5}, "invalid_type", "numberOfResults", "an integer"),
        ({"question": "q", "numberOfResults": True}, "invalid_type", "numberOfResults", "an integer"),
        ({"question": "q", "numberOfResults": "5"}, "invalid_type", "numberOfResults", "an integer"),
        ({"question": "q", "filter": []}, "invalid_type", "filter", "an object"),
        ({"question": "q", "filter": "department=sales"}, "invalid_type", "filter", "an object"),
        ({"question": "q", "topK": 3}, "unknown_field", "topK", "Allowed fields: question, sessionId"),
        ({"question": "q", "k" * 500: 1}, "unknown_field", "k" * 64 + "...", "Unknown field"),
        ({"question": "why\ud800"}, "invalid_value", "question", "unpaired UTF-16 surrogate"),
        (
            {"question": "q", "filter": {"equals": {"key": "dept", "value": "\udc00"}}},
            "invalid_value",
            "filter.equals.value",
            "unpaired UTF-16 surrogate",
        ),
    ],
)
def test_invalid_ask_body_is_400_naming_the_field(
    invoke: Invoke, body: dict[str, Any], code: str, field: str, message_part: str
) -> None:
    error = assert_error(invoke(ask(body)), 400, code, field)
    assert message_part in error["message"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "missing_field", "query"),
        ({"question": "q"}, "unknown_field", "question"),
        ({"query": None}, "invalid_type", "query"),
        ({"query": "q" * 2001}, "invalid_length", "query"),
        ({"query": "\t"}, "invalid_value", "query"),
        ({"query": "q", "numberOfResults": -1}, "out_of_range", "numberOfResults"),
        ({"query": "q", "sessionId": "abc"}, "unknown_field", "sessionId"),
        ({"query": "q", "filter": {"equals": {"key": "a"}}}, "missing_field", "filter.equals.value"),
    ],
)
def test_invalid_retrieve_body_is_400_naming_the_field(
    invoke: Invoke, body: dict[str, Any], code: str, field: str
) -> None:
    assert_error(invoke(retrieve(body)), 400, code, field)


EQ = {"equals": {"key": "a", "value": 1}}


@pytest.mark.parametrize(
    ("bad_filter", "code", "field"),
    [
        ({}, "invalid_filter", "filter"),
        ({"equals": {"key": "a", "value": 1}, "notEquals": {"key": "b", "value": 2}}, "invalid_filter", "filter"),
        ({"eq": {"key": "a", "value": 1}}, "unknown_field", "filter.eq"),
        ({"equals": "a=1"}, "invalid_type", "filter.equals"),
        ({"equals": {"value": 1}}, "missing_field", "filter.equals.key"),
        ({"equals": {"key": "a"}}, "missing_field", "filter.equals.value"),
        ({"equals": {"key": "a", "value": 1, "op": "x"}}, "unknown_field", "filter.equals.op"),
        ({"equals": {"key": 5, "value": 1}}, "invalid_type", "filter.equals.key"),
        ({"equals": {"key": "", "value": 1}}, "invalid_length", "filter.equals.key"),
        ({"equals": {"key": "k" * 101, "value": 1}}, "invalid_length", "filter.equals.key"),
        ({"equals": {"key": "a", "value": None}}, "invalid_type", "filter.equals.value"),
        ({"in": {"key": "a", "value": "x"}}, "invalid_type", "filter.in.value"),
        ({"notIn": {"key": "a", "value": []}}, "invalid_type", "filter.notIn.value"),
        ({"andAll": EQ}, "invalid_type", "filter.andAll"),
        ({"andAll": [EQ]}, "invalid_length", "filter.andAll"),
        ({"orAll": [EQ]}, "invalid_length", "filter.orAll"),
        ({"andAll": [EQ, {"equals": {"key": 1, "value": 1}}]}, "invalid_type", "filter.andAll[1].equals.key"),
        (
            {"andAll": [EQ, {"orAll": [EQ, {"lessThan": {"key": "a"}}]}]},
            "missing_field",
            "filter.andAll[1].orAll[1].lessThan.value",
        ),
        ({"andAll": [EQ, {"orAll": [EQ, {"andAll": [EQ, EQ]}]}]}, "invalid_filter", "filter.andAll[1].orAll[1].andAll"),
        ({"andAll": [EQ, 7]}, "invalid_type", "filter.andAll[1]"),
        # the keys the S3 Vectors index declares non-filterable (before: passed on to the store)
        ({"equals": {"key": "AMAZON_BEDROCK_TEXT", "value": "x"}}, "invalid_filter", "filter.equals.key"),
        ({"orAll": [EQ, {"notEquals": {"key": "AMAZON_BEDROCK_METADATA", "value": "x"}}]}, "invalid_filter",
         "filter.orAll[1].notEquals.key"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_bad_filter_is_400_naming_the_path(
    invoke: Invoke, stubber: Stubber, route: str, bad_filter: Any, code: str, field: str
) -> None:
    event = (
        ask({"question": "q", "filter": bad_filter})
        if route == "ask"
        else retrieve({"query": "q", "filter": bad_filter})
    )
    assert_error(invoke(event), 400, code, field)  # a Bedrock call would hit the empty Stubber and fail differently


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("1e999", "filter.greaterThan.value"),
        ("[1, -1E400]", "filter.in.value"),
        ('{"a": [1e999]}', "filter.equals.value"),
    ],
)
@pytest.mark.parametrize("route", [ask, retrieve])
def test_a_filter_number_beyond_a_double_is_400_naming_it_and_never_sent(
    invoke: Invoke, stubber: Stubber, route: Any, value: str, path: str
) -> None:
    """json reads 1e999 as inf, which botocore would send on as the literal Infinity: not JSON (RFC 8259, 6)."""
    operator = path.split(".")[1]
    raw = '{"%s": "q", "filter": {"%s": {"key": "year", "value": %s}}}'
    event = route(raw_body=raw % ("question" if route is ask else "query", operator, value))
    assert_error(invoke(event), 400, "out_of_range", path)  # a Bedrock call would hit the empty Stubber


def test_deepest_allowed_filter_passes(invoke: Invoke, stubber: Stubber) -> None:
    deepest = {"andAll": [EQ, {"orAll": [EQ, EQ, EQ, EQ, {"notIn": {"key": "tags", "value": ["x"]}}]}]}
    stubber.add_response("retrieve", {"retrievalResults": []}, retrieve_params("q", retrieval_filter=deepest))
    assert invoke(retrieve({"query": "q", "filter": deepest})).status == 200


# --- routing and events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("POST", "/ask/more"), ("GET", "/")])
def test_unknown_route_is_404(invoke: Invoke, method: str, path: str) -> None:
    error = assert_error(invoke(api_event(method, path)), 404, "route_not_found")
    assert "POST /ask, POST /retrieve" in error["message"]


@pytest.mark.parametrize("path", ["/ask", "/retrieve"])
def test_wrong_method_is_405_with_allow_header(invoke: Invoke, path: str) -> None:
    reply = invoke(api_event("GET", path))
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "POST /ask",
        {},
        {"action": "sync"},
        {"question": "What is our refund policy?"},
        {"Records": [{"eventSource": "aws:sqs", "body": "{}"}]},
        {"version": "2.0", "routeKey": "POST /ask", "rawPath": "/ask", "requestContext": {"http": {}}},
        {"httpMethod": "POST", "path": "/ask", "requestContext": {"elb": {"targetGroupArn": "arn"}}},
        {"httpMethod": "POST", "path": "/ask"},
    ],
)
def test_direct_non_api_invocation_is_400_unsupported_event(invoke: Invoke, event: Any) -> None:
    assert_error(invoke(event), 400, "unsupported_event")


# --- Bedrock errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aws_code", "http_status", "status", "code"),
    [
        ("ValidationException", 400, 400, "model_rejected_input"),
        ("AccessDeniedException", 403, 403, "model_access_denied"),
        ("ResourceNotFoundException", 404, 502, "upstream_not_found"),
        ("DependencyFailedException", 424, 502, "dependency_failed"),
        ("ConflictException", 409, 409, "conflict"),
    ],
)
@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_knowledge_base_error_maps_to_the_contract_without_retry(
    invoke: Invoke,
    stubber: Stubber,
    sleeps: list[float],
    route: str,
    aws_code: str,
    http_status: int,
    status: int,
    code: str,
) -> None:
    operation, event, params = _route(route)
    stubber.add_client_error(operation, aws_code, "AWS said no.", http_status, expected_params=params)

    assert_error(invoke(event), status, code)
    assert sleeps == []
    stubber.assert_no_pending_responses()


def _route(route: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if route == "ask":
        return "retrieve_and_generate", ask({"question": "What is our refund policy?"}), ask_params()
    return "retrieve", retrieve({"query": "refund policy"}), retrieve_params()


def test_access_denied_message_is_actionable_and_hides_aws_details(invoke: Invoke, stubber: Stubber) -> None:
    stubber.add_client_error(
        "retrieve_and_generate",
        "AccessDeniedException",
        "arn:aws:sts::123456789012:assumed-role/x is not authorized",
        403,
    )

    error = assert_error(invoke(ask({"question": "q"})), 403, "model_access_denied")

    for part in (MODEL_ID, "embedding model", "generation model", "project/default", "function role", KB_ID, "SCP"):
        assert part in error["message"]
    for prerequisite in ("aws-marketplace:Subscribe", "payment method", "use-case form"):
        assert prerequisite in error["message"]
    assert "Model access" not in error["message"]  # the retired console page: serverless models are on by default
    assert "123456789012" not in error["message"]


@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_a_conflict_mentions_the_session_only_where_there_is_one(invoke: Invoke, stubber: Stubber, route: str) -> None:
    operation, event, params = _route(route)
    stubber.add_client_error(operation, "ConflictException", "conflict", 409, expected_params=params)
    error = assert_error(invoke(event), 409, "conflict")
    assert ("sessionId" in error["message"]) is (route == "ask")  # POST /retrieve has no session


def test_not_found_names_the_knowledge_base(invoke: Invoke, stubber: Stubber) -> None:
    stubber.add_client_error("retrieve", "ResourceNotFoundException", "no such KB", 404)
    error = assert_error(invoke(retrieve({"query": "q"})), 502, "upstream_not_found")
    assert f"knowledge base '{KB_ID}'" in error["message"]
    assert "KNOWLEDGE_BASE_ID" in error["message"]


@pytest.mark.parametrize(
    ("refusal", "advice"),
    [
        ("Model use case details have not been submitted for this account. Fill out the Anthropic use case details "
         "form before using the model. If you have already filled out the form, try again in 15 minutes.",
         "use-case form"),
        ("Access denied. This Model is marked by provider as Legacy and you have not been actively using the model "
         "in the last 15 days. Please upgrade to an active model on Amazon Bedrock", "Legacy"),
    ],
    ids=["use-case-form", "legacy-not-in-use"],
)  # fmt: skip
@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_a_model_access_refusal_worded_as_not_found_is_403_not_a_missing_knowledge_base(
    invoke: Invoke, stubber: Stubber, route: str, refusal: str, advice: str
) -> None:
    """Bedrock words these two refusals of the account's model access as a ResourceNotFoundException (the
    troubleshooting page's FTUFormNotFilled is HTTP 404): the answer is the 403 the docs promise, with the advice."""
    operation, event, params = _route(route)
    stubber.add_client_error(operation, "ResourceNotFoundException", refusal, 404, expected_params=params)
    error = assert_error(invoke(event), 403, "model_access_denied")
    assert advice in error["message"] and "KNOWLEDGE_BASE_ID" not in error["message"]


# As Bedrock answers a call to a model past its end of life (quoted on the Claude 3 Haiku model card).
END_OF_LIFE = "This model version has reached the end of its life."


@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_a_model_past_its_end_of_life_is_the_deployments_500_naming_the_setting(
    invoke: Invoke, stubber: Stubber, route: str
) -> None:
    """Not 502 upstream_not_found pointing at the knowledge base: the configured model is gone for good."""
    operation, event, params = _route(route)
    stubber.add_client_error(operation, "ResourceNotFoundException", END_OF_LIFE, 404, expected_params=params)
    error = assert_error(invoke(event), 500, "configuration_error")
    assert "end of life" in error["message"] and "model-lifecycle-legacy.html" in error["message"]
    assert "rag_embedding_model_id" in error["message"]  # /retrieve embeds with it; /ask may use either model
    assert ("text_model_id" in error["message"]) is (route == "ask")


def test_validation_exception_returns_the_trimmed_aws_message(invoke: Invoke, stubber: Stubber) -> None:
    stubber.add_client_error(
        "retrieve_and_generate", "ValidationException", "The request is not valid.\n  " + "x" * 900, 400
    )
    error = assert_error(invoke(ask({"question": "q", "sessionId": "abc"})), 400, "model_rejected_input")
    assert error["message"].startswith("The request is not valid. xxx")
    assert len(error["message"]) <= 500


@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_a_guardrail_bedrock_does_not_find_is_the_deployments_500(invoke: Invoke, stubber: Stubber, route: str) -> None:
    operation, event, _ = _route(route)
    message = "The guardrail identifier or version provided in the request does not exist."
    stubber.add_client_error(operation, "ValidationException", message, 400)
    error = assert_error(invoke(event), 500, "configuration_error")
    assert "GUARDRAIL_ID" in error["message"]


def test_an_input_too_long_on_retrieve_is_the_callers_400_naming_the_query(invoke: Invoke, stubber: Stubber) -> None:
    operation, event, _ = _route("retrieve")
    stubber.add_client_error(operation, "ValidationException", "Input is too long for requested model.", 400)
    error = assert_error(invoke(event), 400, "model_rejected_input", "query")
    assert "'query'" in error["message"]
    # Retrieve invokes no generation model: the knowledge base's embedding model read the query.
    assert EMBEDDING_MODEL_ID in error["message"] and MODEL_ID not in error["message"]


@pytest.mark.parametrize(
    ("code", "message", "status", "names"),
    [
        ("ThrottlingException", "Too many tokens per day, please wait before trying again.", 429, "quota for"),
        ("ValidationException", "The provided model identifier is invalid.", 500, "rag_embedding_model_id"),
    ],
)
def test_a_model_error_on_retrieve_names_the_embedding_model_not_the_generation_model(
    invoke: Invoke, stubber: Stubber, code: str, message: str, status: int, names: str
) -> None:
    """Before: /retrieve's errors named the generation model (text_model_id), which Retrieve never calls (botocore
    bedrock-agent-runtime RetrieveRequest has no model member), and sent the operator to the wrong setting."""
    operation, event, _ = _route("retrieve")
    stubber.add_client_error(operation, code, message, 400 if code == "ValidationException" else 429)
    reply = invoke(event)
    assert reply.status == status, reply.body
    text = reply.body["error"]["message"]
    assert EMBEDDING_MODEL_ID in text and names in text and MODEL_ID not in text and "text_model_id" not in text


def test_an_input_too_long_on_ask_names_the_results_and_the_session_not_the_question(
    invoke: Invoke, stubber: Stubber
) -> None:
    """Before: "Shorten 'question'", a question of at most 1,000 characters; what the model reads is the question,
    the retrieved chunks (up to 25 of up to 8,000 tokens) and the session's history."""
    operation, event, _ = _route("ask")
    message = "The model returned the following errors: Input is too long for requested model."
    stubber.add_client_error(operation, "ValidationException", message, 400)
    error = assert_error(invoke(event), 400, "model_rejected_input", "numberOfResults")
    assert "fewer results (numberOfResults)" in error["message"] and "without sessionId" in error["message"]


def test_a_generation_model_the_knowledge_base_does_not_take_is_the_deployments_500(
    invoke: Invoke, stubber: Stubber
) -> None:
    """Before: 400 model_rejected_input naming no field, as if the caller had sent something wrong, and no alarm."""
    message = (
        "The provided model is not supported for KNOWLEDGE_BASE RetrieveAndGenerateType. Update the model arn then "
        "retry your request."
    )
    stubber.add_client_error("retrieve_and_generate", "ValidationException", message, 400)
    error = assert_error(invoke(ask({"question": "q"})), 500, "configuration_error")
    assert "text_model_id" in error["message"] and "knowledge-base-supported.html" in error["message"]


@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_the_knowledge_base_roles_refused_embedding_model_is_403_not_the_callers_400(
    invoke: Invoke, stubber: Stubber, route: str
) -> None:
    """Before: 400 model_rejected_input, as if the caller had sent something wrong (no 5xx or access alarm): Bedrock
    wraps the embedding model's 403 for the knowledge base's role in a ValidationException."""
    operation, event, _ = _route(route)
    message = (
        "Knowledge base role arn:aws:iam::123456789012:role/kb-role is not able to call specified embedding model "
        f"arn:aws:bedrock:us-east-1::foundation-model/{EMBEDDING_MODEL_ID}: You don't have access to the model with "
        "the specified model ID. (Service: BedrockRuntime, Status Code: 403)"
    )
    stubber.add_client_error(operation, "ValidationException", message, 400)
    error = assert_error(invoke(event), 403, "model_access_denied")
    assert EMBEDDING_MODEL_ID in error["message"] and "service role" in error["message"]
    assert "123456789012" not in error["message"]


def test_a_session_bedrock_did_not_issue_or_that_expired_is_400_naming_session_id(
    invoke: Invoke, stubber: Stubber
) -> None:
    """Before: 400 model_rejected_input naming no field. Bedrock issues the sessionId and refuses any other, or an
    expired one, with "Session with Id <id> is not valid" (API_agent-runtime_RetrieveAndGenerate.html)."""
    message = "Session with Id 0b2c7d43-aaaa-bbbb-cccc-123456789012 is not valid. Please check and try again."
    stubber.add_client_error("retrieve_and_generate", "ValidationException", message, 400)
    error = assert_error(
        invoke(ask({"question": "q", "sessionId": "0b2c7d43-aaaa-bbbb-cccc-123456789012"})),
        400,
        "invalid_session",
        "sessionId",
    )
    assert "without sessionId" in error["message"]


def test_a_group_of_more_filters_than_the_kit_once_allowed_is_sent(invoke: Invoke, stubber: Stubber) -> None:
    """Before: 400 invalid_length for an andAll of 6: RetrievalFilterList has a minimum of 2 and no maximum."""
    assert "max" not in _shape("RetrievalFilterList").metadata
    conditions = [{"equals": {"key": f"k{i}", "value": i}} for i in range(12)]
    operation, _, _ = _route("retrieve")
    stubber.add_response(operation, {"retrievalResults": []})
    reply = invoke(retrieve({"query": "refund policy", "filter": {"andAll": conditions}}))
    assert reply.status == 200, reply.body
    stubber.assert_no_pending_responses()


def test_a_generation_model_bedrock_will_not_invoke_on_demand_is_the_deployments_500(
    invoke: Invoke, stubber: Stubber
) -> None:
    message = (
        f"Invocation of model ID {MODEL_ID} with on-demand throughput isn't supported. Retry your request with "
        "the ID or ARN of an inference profile that contains this model."
    )
    stubber.add_client_error("retrieve_and_generate", "ValidationException", message, 400)
    error = assert_error(invoke(ask({"question": "q"})), 500, "configuration_error")
    assert "text_model_id" in error["message"] and "MODEL_ARN" in error["message"]
    assert "inference profile" in error["message"]


@pytest.mark.parametrize(
    ("aws_code", "status", "code", "retry_after"),
    [
        ("MPAgreementBeingCreated", 503, "model_unavailable", "900"),
        ("BadCScoreException", 403, "model_access_denied", None),
    ],
)
def test_the_accounts_model_refusals_are_answered_not_500(
    invoke: Invoke, stubber: Stubber, aws_code: str, status: int, code: str, retry_after: str | None
) -> None:
    stubber.add_client_error("retrieve_and_generate", aws_code, "Your account is not authorized.", 403)
    reply = invoke(ask({"question": "q"}))
    assert_error(reply, status, code)
    assert reply.headers.get("retry-after") == retry_after


def test_a_read_timeout_is_504(invoke: Invoke) -> None:
    client = knowledge_base.get_runtime_client()  # the real client: the hook raises before anything is sent
    with failing_sends(client, "RetrieveAndGenerate", ReadTimeoutError) as sends:
        reply = invoke(ask({"question": "q"}))

    error = assert_error(reply, 504, "model_timeout")
    assert KB_ID in error["message"]
    assert "fewer results (numberOfResults)" in error["message"]  # a field of the request the caller can change
    assert sends == ["send"]  # one attempt: botocore does not retry and neither does the kit


@pytest.mark.parametrize("error_class", [EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError])
def test_connection_failures_are_retried_then_503(
    invoke: Invoke, sleeps: list[float], monkeypatch: pytest.MonkeyPatch, error_class: Any
) -> None:
    client = knowledge_base.get_runtime_client()  # the real client: the hook raises before anything is sent
    monkeypatch.setattr(knowledge_base, "get_runtime_client", lambda *_: client)  # every attempt, any read timeout
    with failing_sends(client, "RetrieveAndGenerate", error_class) as sends:
        reply = invoke(ask({"question": "q"}))

    assert sends == ["send"] * 3  # botocore makes one attempt each time; the kit retried twice
    assert len(sleeps) == 2
    error = assert_error(reply, 503, "upstream_unavailable")
    assert reply.headers["retry-after"] == "5"
    assert KB_ID in error["message"]


@pytest.mark.parametrize(
    ("aws_code", "http_status", "status", "code", "retry_after"),
    [
        ("ThrottlingException", 429, 429, "throttled", "2"),
        ("ServiceQuotaExceededException", 400, 429, "throttled", "2"),
        ("BadGatewayException", 502, 503, "upstream_unavailable", "5"),
        ("InternalServerException", 500, 503, "upstream_unavailable", "5"),
        # Unmodeled server errors: retried like botocore's standard mode would, one code per meaning in Level 2.
        ("InternalFailure", 500, 503, "upstream_unavailable", "5"),
        ("ServiceUnavailable", 503, 503, "upstream_unavailable", "5"),
    ],
)
def test_retryable_errors_are_retried_three_times_then_mapped(
    invoke: Invoke,
    stubber: Stubber,
    sleeps: list[float],
    aws_code: str,
    http_status: int,
    status: int,
    code: str,
    retry_after: str,
) -> None:
    for _ in range(3):
        stubber.add_client_error(
            "retrieve_and_generate", aws_code, "slow down", http_status, expected_params=ask_params("q")
        )

    reply = invoke(ask({"question": "q"}))

    assert_error(reply, status, code)
    assert reply.headers["retry-after"] == retry_after
    assert len(sleeps) == 2
    stubber.assert_no_pending_responses()


def test_throttled_twice_then_success_is_200(invoke: Invoke, stubber: Stubber, sleeps: list[float]) -> None:
    for _ in range(2):
        stubber.add_client_error(
            "retrieve", "ThrottlingException", "slow down", 429, expected_params=retrieve_params("q")
        )
    stubber.add_response("retrieve", {"retrievalResults": []}, retrieve_params("q"))

    reply = invoke(retrieve({"query": "q"}))

    assert reply.status == 200
    stubber.assert_no_pending_responses()
    assert len(sleeps) == 2


def test_throttling_after_retries_is_counted(
    invoke: Invoke, stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        stubber.add_client_error("retrieve_and_generate", "ThrottlingException", "slow down", 429)

    assert invoke(ask({"question": "q"})).status == 429

    [emf] = emf_documents(capsys.readouterr().out)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "ModelThrottled", "Unit": "Count"}]


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("AccessDeniedException", "not authorized", 403),
        ("ResourceNotFoundException", "Model use case details have not been submitted for this account.", 404),
    ],
)
def test_a_refused_model_access_is_counted_for_the_alarm(
    invoke: Invoke, stubber: Stubber, capsys: pytest.CaptureFixture[str], code: str, message: str, status: int
) -> None:
    stubber.add_client_error("retrieve_and_generate", code, message, status)

    assert invoke(ask({"question": "q"})).status == 403

    [emf] = emf_documents(capsys.readouterr().out)
    assert emf["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "ModelAccessDenied", "Unit": "Count"}]


def test_no_retry_when_the_deadline_is_too_close(invoke: Invoke, stubber: Stubber, sleeps: list[float]) -> None:
    # 11 s left: 6 s are kept for the guardrail, 1 s for the answer, 3 s connect: one attempt with a 1 s read
    # timeout fits, a second one after any back-off does not.
    stubber.add_client_error("retrieve_and_generate", "ThrottlingException", "slow down", 429)
    assert_error(invoke(ask({"question": "q"}), FakeContext(remaining_ms=11_000)), 429, "throttled")
    assert sleeps == []
    stubber.assert_no_pending_responses()


def test_no_attempt_when_none_fits_in_the_time_left(invoke: Invoke, stubber: Stubber) -> None:
    reply = invoke(ask({"question": "q"}), FakeContext(remaining_ms=2_000))  # the empty Stubber: no call made
    assert_error(reply, 504, "model_timeout")
    assert reply.headers["retry-after"] == "5"


def test_no_attempt_when_the_gateway_has_no_time_left_for_one(
    invoke: Invoke, stubber: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The function has 25 s, but the request reached API Gateway 27 s ago (a cold start): the gateway answers its
    # own 504 within 2 s, so no Bedrock call starts and the kit's 504 comes first (the empty Stubber: no call made)
    received = 1_800_000_000_000
    monkeypatch.setattr(common.http, "_now_ms", lambda: received + 27_000)
    event = ask({"question": "q"})
    event["requestContext"]["requestTimeEpoch"] = received
    reply = invoke(event, FakeContext(remaining_ms=25_000))
    assert_error(reply, 504, "model_timeout")


def test_unknown_aws_error_is_500_with_request_id(invoke: Invoke, stubber: Stubber) -> None:
    stubber.add_client_error("retrieve", "BrandNewException", "weird", 400)
    error = assert_error(invoke(retrieve({"query": "q"})), 500, "internal_error")
    assert API_REQUEST_ID in error["message"]


def test_unexpected_exception_is_500_logged_but_not_leaked(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError("secret internals /var/task/x.py")

    monkeypatch.setattr(knowledge_base, "call", explode)

    reply = invoke(ask({"question": "q"}))

    error = assert_error(reply, 500, "internal_error")
    assert API_REQUEST_ID in error["message"]
    assert "secret internals" not in reply.raw["body"]
    [record] = [json.loads(line) for line in logs.getvalue().splitlines() if '"ERROR"' in line]
    assert "Traceback" in record["exception"]


def test_failure_outside_the_resolver_is_still_the_contract(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("resolver broke")

    monkeypatch.setattr(rag_api.handler, "get_resolver", lambda: broken)
    assert_error(invoke(ask({"question": "q"})), 500, "internal_error")


# --- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KNOWLEDGE_BASE_ID", None),
        ("KNOWLEDGE_BASE_ID", "kb"),
        ("MODEL_ARN", None),
        ("MODEL_ARN", MODEL_ID),
        ("MODEL_ARN", "arn:aws:s3:::bucket"),
        ("MODEL_ID", None),
        ("GUARDRAIL_ID", None),
        ("GUARDRAIL_ID", "Has-Upper"),
        ("GUARDRAIL_VERSION", "latest"),
        ("DEFAULT_NUMBER_OF_RESULTS", None),  # cdk.json's rag_max_results alone: the function keeps no copy
        ("DEFAULT_NUMBER_OF_RESULTS", "0"),
        ("DEFAULT_NUMBER_OF_RESULTS", "26"),
        ("DEFAULT_NUMBER_OF_RESULTS", "five"),
        ("ANSWER_MAX_TOKENS", None),
        ("ANSWER_MAX_TOKENS", "0"),
        ("ANSWER_MAX_TOKENS", "4097"),
        ("POWERTOOLS_METRICS_NAMESPACE", None),
    ],
)
def test_configuration_error_is_500_naming_the_variable(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch, name: str, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value)

    error = assert_error(invoke(ask({"question": "q"})), 500, "configuration_error")
    assert name in error["message"]


@pytest.mark.parametrize(
    "arn",
    [
        MODEL_ARN,
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
        "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
    ],
)
def test_model_arns_accepted(arn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_ARN", arn)
    assert settings.get_settings().model_arn == arn


def test_module_imports_without_env_and_without_boto3() -> None:
    code = "import sys, rag_api.handler; assert 'boto3' not in sys.modules; print('ok')"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ASSET_DIR)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_clients_are_lazy_cached_per_timeout_and_not_retried_by_botocore() -> None:
    client = RUNTIME_CLIENT()  # the real factories (the fixtures inject Stubber-wrapped clients)
    assert RUNTIME_CLIENT() is client
    assert client.meta.service_model.service_name == "bedrock-agent-runtime"
    assert client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3, 20)
    shorter = RUNTIME_CLIENT(7)
    assert shorter is not client and shorter.meta.config.read_timeout == 7
    guard_client = GUARDRAIL_CLIENT()
    assert guard_client.meta.service_model.service_name == "bedrock-runtime"
    assert guard_client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (guard_client.meta.config.connect_timeout, guard_client.meta.config.read_timeout) == (2, 5)
    # the retry policies plan attempts with the clients' own timeouts
    assert (knowledge_base.RETRY_POLICY.connect_timeout_s, knowledge_base.RETRY_POLICY.max_read_timeout_s) == (3, 20)
    assert (guardrail.RETRY_POLICY.connect_timeout_s, guardrail.RETRY_POLICY.max_read_timeout_s) == (2, 5)


# --- the contract agrees with botocore's service model -----------------------------------------------------


def _shape(name: str) -> Any:
    return RUNTIME_MODEL.shape_for(name)


def test_request_limits_match_the_bedrock_api() -> None:
    ask_props = validation.load_schemas()["AskRequest"]["properties"]
    retrieve_props = validation.load_schemas()["RetrieveRequest"]["properties"]
    assert ask_props["question"]["maxLength"] == _shape("RetrieveAndGenerateInput").members["text"].metadata["max"]
    assert retrieve_props["query"]["maxLength"] <= _shape("KnowledgeBaseQuery").members["text"].metadata["max"]
    session = _shape("SessionId").metadata
    assert (ask_props["sessionId"]["minLength"], ask_props["sessionId"]["maxLength"]) == (
        session["min"],
        session["max"],
    )
    assert ask_props["sessionId"]["pattern"] == session["pattern"]
    vector_max = _shape("KnowledgeBaseVectorSearchConfiguration").members["numberOfResults"].metadata["max"]
    assert ask_props["numberOfResults"]["maximum"] <= vector_max
    assert settings.MODEL_ARN.pattern == _shape("BedrockModelArn").metadata["pattern"]


def test_filter_grammar_matches_the_bedrock_api() -> None:
    retrieval_filter = _shape("RetrievalFilter")
    assert set(filters.OPERATORS) == set(retrieval_filter.members)
    assert set(filters.GROUP_OPERATORS) == {n for n, s in retrieval_filter.members.items() if s.type_name == "list"}
    assert _shape("RetrievalFilterList").metadata["min"] == filters.MIN_GROUP
    assert "max" not in _shape("RetrievalFilterList").metadata and not hasattr(filters, "MAX_GROUP")
    assert _shape("FilterKey").metadata["max"] == filters.MAX_KEY_CHARS


def test_built_requests_pass_the_models_full_constraints() -> None:
    current = settings.get_settings()
    request = validation.parse_ask_request(
        {"question": "q" * 1000, "sessionId": "a.b:c-d_e", "numberOfResults": 25, "filter": {"orAll": [EQ, EQ]}},
        "s3vectors",
    )
    validate_strict(
        knowledge_base.ask_params(current, request), RUNTIME_MODEL.operation_model("RetrieveAndGenerate").input_shape
    )
    query = validation.parse_retrieve_request(
        {"query": "q" * 2000, "filter": {"in": {"key": "k", "value": [1, 2]}}}, "s3vectors"
    )
    validate_strict(
        knowledge_base.retrieve_params(current, query), RUNTIME_MODEL.operation_model("Retrieve").input_shape
    )


# --- properties --------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("store", VECTOR_STORES)
def test_any_valid_filter_passes_unchanged_and_satisfies_the_api_model(store: str, data: st.DataObject) -> None:
    retrieval_filter = data.draw(valid_filters(store))
    body = json.loads(json.dumps({"query": "q", "filter": retrieval_filter}))
    request = validation.parse_retrieve_request(body, store)
    assert request.filter == body["filter"]
    params = knowledge_base.retrieve_params(settings.get_settings(), request)
    assert params["retrievalConfiguration"]["vectorSearchConfiguration"]["filter"] == body["filter"]
    validate_strict(params, RUNTIME_MODEL.operation_model("Retrieve").input_shape)


@pytest.mark.parametrize("key", ["kit-vector", "AMAZON_BEDROCK_METADATA"])
def test_a_filter_on_a_field_the_opensearch_index_does_not_search_is_400_naming_it(key: str) -> None:
    """The vector field and the metadata field (mapped with index: false) cannot be filtered on. Before: passed on,
    and the caller got Bedrock's ValidationException text instead of the field; the text field stays filterable."""
    from rag_api.filters import OPENSEARCH_SERVERLESS

    bad = {"andAll": [{"equals": {"key": "year", "value": 2024}}, {"equals": {"key": key, "value": "x"}}]}
    with pytest.raises(BadRequestError) as raised:
        validation.parse_ask_request({"question": "q", "filter": bad}, OPENSEARCH_SERVERLESS)
    assert (raised.value.code, raised.value.field) == ("invalid_filter", "filter.andAll[1].equals.key")
    text = {"equals": {"key": "AMAZON_BEDROCK_TEXT_CHUNK", "value": "x"}}
    assert validation.parse_ask_request({"question": "q", "filter": text}, OPENSEARCH_SERVERLESS).filter == text


@PROPERTY_SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("store", VECTOR_STORES)
def test_any_invalid_filter_is_rejected_naming_its_path(store: str, data: st.DataObject) -> None:
    bad_filter, field = data.draw(invalid_filters(store))
    with pytest.raises(BadRequestError) as raised:
        validation.parse_ask_request({"question": "q", "filter": bad_filter}, store)
    assert raised.value.field == field
    assert raised.value.code in {"invalid_type", "invalid_filter", "unknown_field", "missing_field", "invalid_length"}


@pytest.mark.parametrize(
    ("operator", "value", "refused"),
    [
        ("greaterThan", "2024-01-01", True),  # S3 Vectors: $gt takes a number
        ("lessThanOrEquals", True, True),
        ("greaterThan", 3, False),
        ("equals", ["a", "b"], True),  # $eq: a string, number or Boolean
        ("notEquals", {"a": 1}, True),
        ("equals", False, False),
        ("in", [["a"]], True),  # $in: a non-empty array of primitives
        ("notIn", ["a", 2, True], False),
    ],
)
def test_s3_vectors_takes_only_the_value_types_it_compares_with(operator: str, value: Any, refused: bool) -> None:
    """s3-vectors-metadata-filtering.html, "Valid input types"; OpenSearch Serverless takes them all."""
    body = {"question": "q", "filter": {"andAll": [{operator: {"key": "k", "value": value}}, PLAIN]}}
    if refused:
        with pytest.raises(BadRequestError) as raised:
            validation.parse_ask_request(body, "s3vectors")
        assert (raised.value.code, raised.value.field) == ("invalid_filter", f"filter.andAll[0].{operator}.value")
        assert "S3 Vectors" in raised.value.message
    else:
        validation.parse_ask_request(body, "s3vectors")
    validation.parse_ask_request(body, "opensearch-serverless")


PLAIN = {"equals": {"key": "team", "value": "support"}}


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=invalid_filters("s3vectors"))
def test_invalid_filters_never_reach_bedrock(invoke: Invoke, stubber: Stubber, case: tuple[Any, str]) -> None:
    bad_filter, field = case
    reply = invoke(retrieve({"query": "q", "filter": bad_filter}))  # a call would hit the empty Stubber: 500
    assert_error(reply, 400, reply.body["error"]["code"], field)


@PROPERTY_SETTINGS
@given(
    value=st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=26),
        st.floats(allow_nan=False),
        st.booleans(),
        st.text(max_size=3),
    )
)
def test_any_bad_number_of_results_is_400(value: Any) -> None:
    with pytest.raises(BadRequestError) as raised:
        validation.parse_retrieve_request({"query": "q", "numberOfResults": value}, "s3vectors")
    assert raised.value.field == "numberOfResults"


# --- shared parts added for Level 2 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (errors.ConflictError, 409, "conflict"),
        (errors.DependencyFailedError, 502, "dependency_failed"),
        (errors.UpstreamUnavailableError, 503, "upstream_unavailable"),
    ],
)
def test_new_error_classes(cls: type[errors.ApiError], status: int, code: str) -> None:
    err = cls("message", retry_after=3)
    assert (err.status, err.code, err.headers()) == (status, code, {"Retry-After": "3"})


def test_schema_file_is_draft04_objects_without_extra_fields() -> None:
    raw = json.loads((ASSET_DIR / "rag_api" / "request_schemas.json").read_text())
    assert set(raw) == {"AskRequest", "RetrieveRequest"}
    for name, schema in raw.items():
        assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
        assert (schema["title"], schema["type"], schema["additionalProperties"]) == (name, "object", False)
        assert set(schema["required"]) <= set(schema["properties"])
    assert raw["AskRequest"]["required"] == ["question"]
    assert raw["RetrieveRequest"]["required"] == ["query"]


def test_schema_keywords_without_an_error_code_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    schema = {"AskRequest": {"type": "object", "properties": {"question": {"type": "string", "enum": ["a"]}}}}
    (tmp_path / "schemas.json").write_text(json.dumps(schema))
    monkeypatch.setattr(validation, "SCHEMA_FILE", str(tmp_path / "schemas.json"))

    with pytest.raises(ValueError, match="enum"):
        validation.load_schemas()


def test_metrics_failure_does_not_fail_the_request(
    invoke: Invoke, stubber: Stubber, guard: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenMetrics:
        cleared = False

        def add_dimension(self, **_: Any) -> None:
            raise ValueError("bad dimension")

        def clear_metrics(self) -> None:
            BrokenMetrics.cleared = True

    monkeypatch.setattr(rag_api.handler, "get_metrics", BrokenMetrics)
    stubber.add_response("retrieve_and_generate", rag_response(), ask_params("q"))
    allow(guard, *SNIPPETS)

    assert invoke(ask({"question": "q"})).status == 200
    assert BrokenMetrics.cleared


def test_tracer_in_lambda_captures_handler_without_response(
    invoke: Invoke, stubber: Stubber, guard: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {"annotations": {}}

    class FakeTracer:
        disabled = False  # Powertools' own switch: tracing is on

        def capture_lambda_handler(self, fn: Callable[..., Any], capture_response: bool = True) -> Any:
            calls["capture_response"] = capture_response
            return fn

        def put_annotation(self, key: str, value: Any) -> None:
            calls["annotations"][key] = value

    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setattr("common.observability.Tracer", FakeTracer)
    stubber.add_response("retrieve_and_generate", rag_response(guardrail_action="INTERVENED"), ask_params("q"))
    # the guardrail intervened on the answer: the citation parts are checked with the snippets
    allow(guard, *SNIPPETS, "Refunds are accepted within 30 days.", "Shipping is free over $50.")

    assert invoke(ask({"question": "q"})).status == 200
    assert calls == {"capture_response": False, "annotations": {"ModelId": MODEL_ID, "GuardrailIntervened": True}}


def test_tracer_is_off_when_xray_sdk_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sdk() -> None:
        raise ImportError("No module named 'aws_xray_sdk'")

    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setattr("common.observability.Tracer", no_sdk)

    assert rag_api.handler.get_tracer() is None


# --- the guardrail covers everything returned (ApplyGuardrail on chunks and snippets) ---------------------

EMAIL = "jane.doe@example.com"
MASKED_EMAIL = "{EMAIL}"


def test_retrieved_chunks_are_masked_and_blocked_ones_withheld(
    invoke: Invoke, stubber: Stubber, guard: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given three chunks: one with an e-mail address the guardrail masks, one clean, one on a denied topic
    personal, clean, denied = f"Write to {EMAIL} for refunds.", "Refunds take 30 days.", "The vault code is 1234."
    chunks = [
        {"content": {"text": text}, "location": {"type": "S3", "s3Location": {"uri": f"s3://b/{i}.md"}}}
        for i, text in enumerate((personal, clean, denied))
    ]
    stubber.add_response("retrieve", {"retrievalResults": chunks}, retrieve_params("q"))
    # The batch is blocked (one canned message for the whole call), so it is split until the blocked chunk is found
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(personal, clean, denied))
    guard.add_response(
        "apply_guardrail", guard_masks([f"Write to {MASKED_EMAIL} for refunds."]), guard_params(personal)
    )
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(clean, denied))
    allow(guard, clean)
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(denied))

    reply = invoke(retrieve({"query": "q"}))

    # Then the masked text replaces the original, the blocked chunk is withheld, and the response says so
    assert reply.status == 200
    assert [r["text"] for r in reply.body["results"]] == [f"Write to {MASKED_EMAIL} for refunds.", clean]
    assert [r["uri"] for r in reply.body["results"]] == ["s3://b/0.md", "s3://b/1.md"]
    assert reply.body["guardrail"] == {"intervened": True, "masked": 1, "blocked": 1}
    assert EMAIL not in reply.raw["body"] and "vault" not in reply.raw["body"] and CANNED not in reply.raw["body"]
    guard.assert_no_pending_responses()
    [emf] = emf_documents(capsys.readouterr().out)
    assert emf["RetrievedResults"] == [2.0]


def test_text_the_guardrail_masks_in_the_answer_does_not_reappear_in_its_citations(
    invoke: Invoke, stubber: Stubber, guard: Stubber
) -> None:
    # Given an answer the guardrail masked, citing a snippet that holds the unmasked e-mail address
    citations = [
        {
            "generatedResponsePart": {
                "textResponsePart": {"text": f"Write to {EMAIL}.", "span": {"start": 0, "end": 9}}
            },
            "retrievedReferences": [
                reference("s3://b/contact.md", f"Contact: {EMAIL}"),
                reference("s3://b/x.md", "Hours: 9-5"),
            ],
        }
    ]
    response = rag_response(f"Write to {MASKED_EMAIL}.", citations=citations, guardrail_action="INTERVENED")
    stubber.add_response("retrieve_and_generate", response, ask_params())
    # one call checks the snippets and (the answer was changed) the citation part
    guard.add_response(
        "apply_guardrail",
        guard_masks([f"Contact: {MASKED_EMAIL}", "Hours: 9-5", f"Write to {MASKED_EMAIL}."]),
        guard_params(f"Contact: {EMAIL}", "Hours: 9-5", f"Write to {EMAIL}."),
    )

    reply = invoke(ask({"question": "What is our refund policy?"}))

    assert reply.status == 200
    assert EMAIL not in reply.raw["body"]
    [citation] = reply.body["citations"]
    assert citation["text"] == f"Write to {MASKED_EMAIL}."
    assert [s["snippet"] for s in citation["sources"]] == [f"Contact: {MASKED_EMAIL}", "Hours: 9-5"]
    assert reply.body["guardrail"] == {"intervened": True, "masked": 2, "blocked": 0}
    guard.assert_no_pending_responses()


def test_a_blocked_snippet_drops_its_source_and_a_citation_left_without_sources(
    invoke: Invoke, stubber: Stubber, guard: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    stubber.add_response("retrieve_and_generate", rag_response(), ask_params())
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(*SNIPPETS))
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(SNIPPETS[0]))
    allow(guard, *SNIPPETS[1:])

    reply = invoke(ask({"question": "What is our refund policy?"}))

    assert reply.status == 200
    assert [c["text"] for c in reply.body["citations"]] == ["Shipping is free over $50."]  # the refund one is gone
    assert SNIPPETS[0] not in reply.raw["body"]
    assert reply.body["guardrail"] == {"intervened": True, "masked": 0, "blocked": 1}
    [emf] = emf_documents(capsys.readouterr().out)
    assert (emf["Citations"], emf["GuardrailIntervened"]) == ([1.0], [1.0])


def test_every_guardrail_request_satisfies_the_api_model_and_is_batched() -> None:
    # Given 40 chunks of 1,000 characters (four of them repeated) and a guardrail that lets everything through
    texts = [f"{i:04d}" + "x" * 996 for i in range(36)] + [f"{i:04d}" + "x" * 996 for i in range(4)]
    requests: list[dict[str, Any]] = []

    def apply(params: dict[str, Any]) -> dict[str, Any]:
        validate_strict(params, GUARDRAIL_MODEL.operation_model("ApplyGuardrail").input_shape)
        requests.append(params)
        return guard_passes([])

    outcome = guardrail.guard(texts, settings.get_settings(), apply)

    # Then each distinct text is checked once, in as few calls as the per-call size allows
    sizes = [sum(len(block["text"]["text"]) for block in r["content"]) for r in requests]
    assert sizes == [25_000, 11_000]
    assert all(r["source"] == "OUTPUT" for r in requests)
    assert [outcome.text(t) for t in texts] == texts
    assert outcome.usage["contentPolicyUnits"] == 2


def test_a_text_longer_than_one_call_is_sent_alone() -> None:
    assert guardrail.batches(["a" * 10, "b" * 30_000, "c" * 10]) == [["a" * 10], ["b" * 30_000], ["c" * 10]]


def test_the_call_budget_withholds_what_it_could_not_resolve() -> None:
    calls: list[int] = []

    def apply(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(len(params["content"]))
        return guard_blocks()

    texts = [f"chunk {i}" for i in range(25)]
    outcome = guardrail.guard(texts, settings.get_settings(), apply)

    assert len(calls) == guardrail.MAX_CALLS
    assert outcome.counts(texts) == (0, 25)  # nothing unchecked is returned


@pytest.mark.parametrize(
    "response",
    [
        {"usage": USAGE, "action": "GUARDRAIL_INTERVENED", "outputs": [], "assessments": [{}]},
        {  # more outputs than content blocks: which one belongs to which text is unknown
            "usage": USAGE,
            "action": "GUARDRAIL_INTERVENED",
            "outputs": [{"text": "a"}, {"text": "b"}, {"text": "c"}],
            "assessments": [PII_MASKED],
        },
    ],
)
def test_an_intervention_in_an_unexpected_shape_withholds_the_text(response: dict[str, Any]) -> None:
    outcome = guardrail.guard(["one", "two"], settings.get_settings(), lambda _: response)
    assert (outcome.text("one"), outcome.text("two"), outcome.calls) == (None, None, 3)


@pytest.mark.parametrize(
    ("aws_code", "http_status", "attempts", "status", "code"),
    [
        ("AccessDeniedException", 403, 1, 403, "model_access_denied"),
        ("ResourceNotFoundException", 404, 1, 502, "upstream_not_found"),
        ("ValidationException", 400, 1, 502, "guardrail_failed"),
        ("ThrottlingException", 429, 3, 429, "throttled"),
        ("ServiceUnavailableException", 503, 3, 503, "upstream_unavailable"),
        ("InternalFailure", 500, 3, 503, "upstream_unavailable"),
        ("ServiceUnavailable", 503, 3, 503, "upstream_unavailable"),
    ],
)
def test_a_failed_guardrail_call_returns_no_text_and_maps_to_the_contract(
    invoke: Invoke,
    stubber: Stubber,
    guard: Stubber,
    aws_code: str,
    http_status: int,
    attempts: int,
    status: int,
    code: str,
) -> None:
    chunk = {"content": {"text": f"Mail {EMAIL}"}, "location": {"type": "S3", "s3Location": {"uri": "s3://b/a.md"}}}
    stubber.add_response("retrieve", {"retrievalResults": [chunk]}, retrieve_params("q"))
    for _ in range(attempts):
        guard.add_client_error(
            "apply_guardrail", aws_code, "no", http_status, expected_params=guard_params(f"Mail {EMAIL}")
        )

    reply = invoke(retrieve({"query": "q"}))

    error = assert_error(reply, status, code)
    assert EMAIL not in reply.raw["body"]
    if status != 429:
        assert GUARDRAIL_ID in error["message"] or "Guardrails" in error["message"]
    guard.assert_no_pending_responses()


def test_a_guardrail_call_that_times_out_is_504_naming_the_guardrail_not_a_model(
    invoke: Invoke, stubber: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubber.add_response("retrieve", {"retrievalResults": [{"content": {"text": "chunk"}}]}, retrieve_params("q"))
    # A real, unstubbed client configured as the function's (one attempt): the hook raises before anything is sent
    config = common.clients.client_config(guardrail.CONNECT_TIMEOUT_S, guardrail.READ_TIMEOUT_S)
    client = boto3.client("bedrock-runtime", config=Config(**config))
    monkeypatch.setattr(guardrail, "get_guardrail_client", lambda *_, **__: client)
    with failing_sends(client, "ApplyGuardrail", ReadTimeoutError) as sends:
        reply = invoke(retrieve({"query": "q"}))

    error = assert_error(reply, 504, "model_timeout")
    assert sends == ["send"]  # a timeout is not retried
    assert error["message"] == (
        f"The guardrail '{GUARDRAIL_ID}' (version {GUARDRAIL_VERSION}) did not answer in time while checking the "
        "retrieved text. Retry."
    )
    assert reply.headers["retry-after"] == "5"
    assert "chunk" not in reply.raw["body"]


def test_a_guardrail_bedrock_cannot_find_names_the_guardrail_settings(
    invoke: Invoke, stubber: Stubber, guard: Stubber
) -> None:
    stubber.add_response("retrieve", {"retrievalResults": [{"content": {"text": "chunk"}}]}, retrieve_params("q"))
    guard.add_client_error("apply_guardrail", "ResourceNotFoundException", "gone", 404, guard_params("chunk"))

    error = assert_error(invoke(retrieve({"query": "q"})), 502, "upstream_not_found")

    assert error["message"] == (
        f"Amazon Bedrock could not find the guardrail '{GUARDRAIL_ID}' (version {GUARDRAIL_VERSION}). Check the "
        "region, GUARDRAIL_ID and GUARDRAIL_VERSION."
    )


def test_a_guardrail_call_the_account_is_not_authorized_for_is_403_like_every_other_call(
    invoke: Invoke, stubber: Stubber, guard: Stubber
) -> None:
    """Before: every ValidationException of ApplyGuardrail was 502 guardrail_failed, though this message is the
    account's access (403 model_access_denied on the knowledge base call, and in docs/level-2-rag.md)."""
    stubber.add_response("retrieve", {"retrievalResults": [{"content": {"text": "chunk"}}]}, retrieve_params("q"))
    message = "You are not authorized to invoke this API operation"
    guard.add_client_error(
        "apply_guardrail", "ValidationException", message, 400, expected_params=guard_params("chunk")
    )

    error = assert_error(invoke(retrieve({"query": "q"})), 403, "model_access_denied")
    assert GUARDRAIL_ID in error["message"]
    guard.assert_no_pending_responses()


def test_a_guardrail_call_denied_by_iam_names_the_apply_guardrail_permission(
    invoke: Invoke, stubber: Stubber, guard: Stubber
) -> None:
    """The generic mapping would send the operator to bedrock:InvokeModel on a model; the call that failed is
    ApplyGuardrail on the stack's guardrail."""
    stubber.add_response("retrieve", {"retrievalResults": [{"content": {"text": "chunk"}}]}, retrieve_params("q"))
    guard.add_client_error(
        "apply_guardrail", "AccessDeniedException", "not authorized", 403, expected_params=guard_params("chunk")
    )

    error = assert_error(invoke(retrieve({"query": "q"})), 403, "model_access_denied")

    assert "bedrock:ApplyGuardrail" in error["message"] and GUARDRAIL_ID in error["message"]
    assert "bedrock:InvokeModel" not in error["message"]
    guard.assert_no_pending_responses()


def test_a_retrieve_where_the_guardrail_only_withheld_chunks_reports_it_intervened(
    invoke: Invoke, stubber: Stubber, guard: Stubber
) -> None:
    # Given two chunks, one on a denied topic: nothing is masked, one chunk is withheld
    clean, denied = "Refunds take 30 days.", "The vault code is 1234."
    chunks = [{"content": {"text": text}} for text in (clean, denied)]
    stubber.add_response("retrieve", {"retrievalResults": chunks}, retrieve_params("q"))
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(clean, denied))
    allow(guard, clean)
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(denied))

    reply = invoke(retrieve({"query": "q"}))

    # Then the body says the guardrail intervened, though it masked nothing (docs/level-2-rag.md: "changed or blocked")
    assert reply.status == 200
    assert [r["text"] for r in reply.body["results"]] == [clean]
    assert reply.body["guardrail"] == {"intervened": True, "masked": 0, "blocked": 1}
    guard.assert_no_pending_responses()


def test_a_citation_whose_own_text_is_blocked_is_dropped_not_returned_without_text(
    invoke: Invoke, stubber: Stubber, guard: Stubber
) -> None:
    # Given an answer the guardrail changed, with a citation whose snippet is clean but whose own text is blocked
    part, snippet = "The vault code is 1234.", "Hours: 9-5"
    citations = [
        {
            "generatedResponsePart": {"textResponsePart": {"text": part, "span": {"start": 0, "end": 23}}},
            "retrievedReferences": [reference("s3://b/x.md", snippet)],
        }
    ]
    response = rag_response(CANNED, citations=citations, guardrail_action="INTERVENED")
    stubber.add_response("retrieve_and_generate", response, ask_params())
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(snippet, part))
    allow(guard, snippet)
    guard.add_response("apply_guardrail", guard_blocks(), guard_params(part))

    reply = invoke(ask({"question": "What is our refund policy?"}))

    # Then the citation is dropped (it keeps a source, but no citation is returned with "text": null)
    assert reply.status == 200
    assert reply.body["citations"] == []
    assert "vault" not in reply.raw["body"]
    assert reply.body["guardrail"] == {"intervened": True, "masked": 0, "blocked": 1}
    guard.assert_no_pending_responses()


def test_the_guardrail_call_budget_is_eight_calls_and_what_it_leaves_unchecked_is_withheld(
    invoke: Invoke, stubber: Stubber, guard: Stubber, logs: io.StringIO
) -> None:
    # docs/level-2-rag.md: "with at most 8 calls a request; whatever is still undecided then is withheld".
    assert guardrail.MAX_CALLS == 8
    texts = [f"chunk {i:02d}" for i in range(16)]
    chunks = [{"content": {"text": text}} for text in texts]
    stubber.add_response("retrieve", {"retrievalResults": chunks}, retrieve_params("q"))
    # Blocked batches are split in halves, the first half checked first; only chunk 01 passes on its own.
    calls = [
        (texts, False),
        (texts[:8], False),
        (texts[:4], False),
        (texts[:2], False),
        (texts[:1], False),
        (texts[1:2], True),
        (texts[2:4], False),
        (texts[2:3], False),
    ]
    assert len(calls) == guardrail.MAX_CALLS
    for batch, passes in calls:
        guard.add_response("apply_guardrail", guard_passes(batch) if passes else guard_blocks(), guard_params(*batch))

    reply = invoke(retrieve({"query": "q"}))

    # Then no further call is made (the Stubber holds no more answers) and chunks 03 to 15, never checked, are withheld
    assert reply.status == 200, reply.body
    assert [r["text"] for r in reply.body["results"]] == ["chunk 01"]
    assert reply.body["guardrail"] == {"intervened": True, "masked": 0, "blocked": 15}
    guard.assert_no_pending_responses()
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    applied = next(r for r in lines if r["message"] == "Guardrail applied to returned text")
    assert applied["guardrail_calls"] == guardrail.MAX_CALLS


ACCOUNT_ARN = "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc"


@pytest.mark.parametrize("upstream", ["knowledge_base", "guardrail"])
def test_error_messages_never_echo_an_account_id(
    invoke: Invoke, stubber: Stubber, guard: Stubber, upstream: str
) -> None:
    message = f"1 validation error: {ACCOUNT_ARN} is not valid for account 123456789012"
    if upstream == "knowledge_base":
        stubber.add_client_error("retrieve", "ValidationException", message, 400)
    else:
        stubber.add_response("retrieve", {"retrievalResults": [{"content": {"text": "chunk"}}]}, retrieve_params("q"))
        guard.add_client_error("apply_guardrail", "ValidationException", message, 400)

    reply = invoke(retrieve({"query": "q"}))

    assert reply.status in (400, 502)
    assert "123456789012" not in reply.raw["body"]
    assert re.search(r"(?<![0-9])[0-9]{12}(?![0-9])", reply.body["error"]["message"]) is None
    assert "is not valid" in reply.body["error"]["message"]  # the rest of the message is kept


# --- filters per vector store ------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["startsWith", "stringContains", "listContains"])
@pytest.mark.parametrize("route", ["ask", "retrieve"])
def test_s3_vectors_refuses_operators_it_lacks_naming_the_path(
    invoke: Invoke, stubber: Stubber, route: str, operator: str
) -> None:
    bad = {"andAll": [EQ, {"orAll": [EQ, {operator: {"key": "tags", "value": "x"}}]}]}
    event = ask({"question": "q", "filter": bad}) if route == "ask" else retrieve({"query": "q", "filter": bad})

    error = assert_error(invoke(event), 400, "invalid_filter", f"filter.andAll[1].orAll[1].{operator}")

    assert "S3 Vectors" in error["message"] and "equals" in error["message"]  # names the store and what it takes
    stubber.assert_no_pending_responses()  # nothing reached Bedrock (the empty Stubber would answer 500)


@pytest.mark.parametrize("operator", ["startsWith", "stringContains", "listContains"])
def test_opensearch_serverless_accepts_every_operator(
    invoke: Invoke, stubber: Stubber, monkeypatch: pytest.MonkeyPatch, operator: str
) -> None:
    monkeypatch.setenv("VECTOR_STORE", "opensearch-serverless")
    retrieval_filter = {operator: {"key": "tags", "value": "x"}}
    stubber.add_response("retrieve", {"retrievalResults": []}, retrieve_params("q", retrieval_filter=retrieval_filter))

    assert invoke(retrieve({"query": "q", "filter": retrieval_filter})).status == 200
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("value", [None, "", "pinecone", "S3Vectors"])
def test_the_vector_store_must_be_configured_explicitly(
    invoke: Invoke, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("VECTOR_STORE")
    else:
        monkeypatch.setenv("VECTOR_STORE", value)
    error = assert_error(invoke(retrieve({"query": "q"})), 500, "configuration_error")
    assert "VECTOR_STORE" in error["message"]


def test_store_operator_table_matches_the_stores_the_kit_deploys_and_the_api() -> None:
    assert set(filters.STORE_OPERATORS) == set(VECTOR_STORES)
    members = set(RUNTIME_MODEL.shape_for("RetrievalFilter").members)
    for operators in filters.STORE_OPERATORS.values():
        assert operators <= members
        assert set(filters.GROUP_OPERATORS) <= operators


def test_session_id_with_a_trailing_newline_is_refused(invoke: Invoke) -> None:
    error = assert_error(invoke(ask({"question": "q", "sessionId": "abc\n"})), 400, "invalid_value", "sessionId")
    assert "letters, digits" in error["message"]


# --- deadlines: a slow upstream still gets a documented answer before the function's timeout ---------------


class Clock:
    """Simulated time: the fake upstream and the back-off advance it; nothing sleeps."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class ClockContext(FakeContext):
    clock: Clock = field(default_factory=Clock)

    def get_remaining_time_in_millis(self) -> int:
        return int(FUNCTION_TIMEOUT_MS - self.clock.now_s * 1000)


class _Body:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.payload


@dataclass
class SlowUpstream:
    """An upstream that takes ``seconds`` per attempt, then fails with ``status`` (or answers ``body``).

    An attempt whose client gives up sooner (connect + read timeout) ends with ReadTimeoutError at that time.
    Every attempt is recorded with the time left when it started and the longest it may last.
    """

    clock: Clock
    context: ClockContext
    seconds: float
    status: int | None = None
    error_code: str = "ServiceUnavailableException"
    body: dict[str, Any] = field(default_factory=dict)
    attempts: list[tuple[int, float]] = field(default_factory=list)

    def hook(self, client: Any) -> Callable[..., Any]:
        def send(request: Any, **_: Any) -> Any:
            config = client.meta.config
            limit_s = config.connect_timeout + config.read_timeout
            self.attempts.append((self.context.get_remaining_time_in_millis(), limit_s))
            if self.seconds > config.read_timeout:
                self.clock.advance(config.read_timeout)
                raise ReadTimeoutError(endpoint_url=request.url)
            self.clock.advance(self.seconds)
            if self.status is None:
                return AWSResponse(request.url, 200, {}, _Body(json.dumps(self.body).encode()))
            headers = {"x-amzn-ErrorType": f"{self.error_code}:"}
            return AWSResponse(request.url, self.status, headers, _Body(b'{"message": "busy"}'))

        return send


def _slow(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, real: Any, event: str, upstream: SlowUpstream
) -> None:
    hooked: set[int] = set()

    def factory(*args: Any) -> Any:
        client = real(*args)
        if id(client) not in hooked:
            hooked.add(id(client))
            client.meta.events.register_first(event, upstream.hook(client))
        return client

    monkeypatch.setattr(module, name, factory)


@pytest.mark.parametrize(
    ("slow", "status", "expected"),
    [
        ("knowledge_base", 503, (503, "upstream_unavailable")),  # fails after 10 s, every attempt
        ("knowledge_base", None, (504, "model_timeout")),  # answers after 30 s: every attempt times out
        ("guardrail", 503, (504, "model_timeout")),
        ("guardrail", None, (504, "model_timeout")),
    ],
)
def test_a_slow_upstream_gets_an_answer_before_the_function_timeout(
    invoke: Invoke,
    guard: Stubber,
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
    slow: str,
    status: int | None,
    expected: tuple[int, str],
) -> None:
    guard.deactivate()  # the real clients, with a simulated upstream behind them
    clock = Clock()
    context = ClockContext(clock=clock, function_name="rag-api")

    def back_off(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr(common.http, "sleep", back_off)
    seconds = 10.0 if status is not None else 30.0
    chunks = {"retrievalResults": [{"content": {"text": "chunk"}}]}
    if slow == "knowledge_base":
        upstream = SlowUpstream(clock, context, seconds, status)
        _slow(
            monkeypatch,
            knowledge_base,
            "get_runtime_client",
            RUNTIME_CLIENT,
            "before-send.bedrock-agent-runtime.Retrieve",
            upstream,
        )
    else:  # the knowledge base answers after 8 s, then the guardrail is slow
        quick = SlowUpstream(clock, context, 8.0, body=chunks)
        _slow(
            monkeypatch,
            knowledge_base,
            "get_runtime_client",
            RUNTIME_CLIENT,
            "before-send.bedrock-agent-runtime.Retrieve",
            quick,
        )
        upstream = SlowUpstream(clock, context, seconds, status)
        _slow(
            monkeypatch,
            guardrail,
            "get_guardrail_client",
            GUARDRAIL_CLIENT,
            "before-send.bedrock-runtime.ApplyGuardrail",
            upstream,
        )

    reply = invoke(retrieve({"query": "q"}), context)

    # Then the caller gets the documented JSON error, with time to spare before Lambda would kill the function
    assert_error(reply, *expected)
    assert clock.now_s * 1000 <= FUNCTION_TIMEOUT_MS - 1000
    assert upstream.attempts
    for remaining_ms, limit_s in upstream.attempts:  # no attempt could outlive the function
        assert limit_s * 1000 <= remaining_ms - 1000


def test_the_guardrail_may_use_the_time_kept_back_from_the_knowledge_base_call(
    invoke: Invoke, stubber: Stubber, guard: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GUARDRAIL_RESERVE_MS is kept back from the knowledge base call for the guardrail: the guardrail call itself
    keeps nothing back, so with 7 s left after Retrieve it is still made (a 4 s read timeout fits), not a 504."""
    clock = Clock()
    context = ClockContext(clock=clock, function_name="rag-api")
    runtime = knowledge_base.get_runtime_client()  # the Stubber-wrapped client: Retrieve takes 18 s of the 25 s
    runtime.meta.events.register_first(
        "before-parameter-build.bedrock-agent-runtime.Retrieve",
        lambda **_: clock.advance(18.0),
        unique_id="slow-retrieve",
    )
    read_timeouts: list[int] = []
    stubbed = guardrail.get_guardrail_client

    def recording(read_timeout_s: int = guardrail.READ_TIMEOUT_S) -> Any:
        read_timeouts.append(read_timeout_s)
        return stubbed()

    monkeypatch.setattr(guardrail, "get_guardrail_client", recording)
    stubber.add_response("retrieve", {"retrievalResults": [{"content": {"text": "chunk"}}]}, retrieve_params("q"))
    allow(guard, "chunk")

    reply = invoke(retrieve({"query": "q"}), context)

    assert context.get_remaining_time_in_millis() == 7_000
    assert reply.status == 200, reply.body
    assert [r["text"] for r in reply.body["results"]] == ["chunk"]
    assert read_timeouts == [4]  # 7 s - 1 s margin - 2 s connect
    guard.assert_no_pending_responses()
