"""The query API's request bodies, validated against ``request_schemas.json`` plus the filter grammar."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.schema import Validator, compile_schema, load_schema_file, validate
from rag_api.filters import validate_filter

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "request_schemas.json")
ASK_MODEL = "AskRequest"
RETRIEVE_MODEL = "RetrieveRequest"


@dataclass(frozen=True)
class AskRequest:
    question: str
    session_id: str | None = None
    number_of_results: int | None = None
    filter: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetrieveRequest:
    query: str
    number_of_results: int | None = None
    filter: dict[str, Any] | None = None


@lru_cache(maxsize=1)
def load_schemas() -> dict[str, dict[str, Any]]:
    """The request models by name (checked to use only the keywords that have an error code)."""
    return load_schema_file(SCHEMA_FILE)


@lru_cache(maxsize=2)
def validator(model: str) -> Validator:
    """The compiled validator of one request model (compiled on first use, not at import)."""
    return compile_schema(load_schemas()[model])


def property_schema(model: str, name: str) -> dict[str, Any]:
    """The schema of one top-level property, e.g. ``property_schema("AskRequest", "numberOfResults")``."""
    schema: dict[str, Any] = load_schemas()[model]["properties"][name]
    return schema


def parse_ask_request(body: Any, store: str) -> AskRequest:
    """Validate a POST /ask body; ``filter`` may use only the operators the vector store ``store`` supports."""
    validate(body, validator(ASK_MODEL))
    if "filter" in body:
        validate_filter(body["filter"], store)
    return AskRequest(
        question=body["question"],
        session_id=body.get("sessionId"),
        number_of_results=body.get("numberOfResults"),
        filter=body.get("filter"),
    )


def parse_retrieve_request(body: Any, store: str) -> RetrieveRequest:
    """Validate a POST /retrieve body; ``filter`` may use only the operators the vector store ``store`` supports."""
    validate(body, validator(RETRIEVE_MODEL))
    if "filter" in body:
        validate_filter(body["filter"], store)
    return RetrieveRequest(
        query=body["query"],
        number_of_results=body.get("numberOfResults"),
        filter=body.get("filter"),
    )
