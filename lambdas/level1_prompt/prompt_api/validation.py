"""Request validation driven by ``request_schemas.json`` (draft-04), compiled by ``common.schema``.

Only the JSON Schema keywords that have an error code (``common.schema.SUPPORTED_KEYWORDS``) may appear in
the file; loading a schema that uses any other keyword fails.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.errors import BadRequestError
from common.schema import Validator, compile_schema, join, load_schema_file, validate

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "request_schemas.json")
PROMPT_MODEL = "PromptRequest"
TEMPLATE_MODEL = "TemplateRequest"


@dataclass(frozen=True)
class PromptRequest:
    prompt: str
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class TemplateRequest:
    variables: dict[str, str]


# --- schema loading ----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_schemas() -> dict[str, dict[str, Any]]:
    """The request models by name, checked to use only supported keywords."""
    return load_schema_file(SCHEMA_FILE)


@lru_cache(maxsize=2)
def validator(model: str) -> Validator:
    """The compiled validator of one request model (compiled on first use, not at import)."""
    return compile_schema(load_schemas()[model])


def property_schema(model: str, *path: str) -> dict[str, Any]:
    """The schema of a (nested) property, e.g. ``property_schema("PromptRequest", "temperature")``."""
    schema = load_schemas()[model]
    for key in path:
        schema = schema["properties"][key] if key != "*" else schema["additionalProperties"]
    return schema


def bounds(model: str, *path: str) -> tuple[Any, Any]:
    """(minimum, maximum) of a numeric property."""
    schema = property_schema(model, *path)
    return schema.get("minimum"), schema.get("maximum")


# --- the two request bodies --------------------------------------------------------------------------------


def parse_prompt_request(body: Any) -> PromptRequest:
    """Validate a POST /prompt body against ``PromptRequest``."""
    validate(body, validator(PROMPT_MODEL))
    return PromptRequest(
        prompt=body["prompt"],
        system=body.get("system"),
        temperature=body.get("temperature"),
        top_p=body.get("topP"),
        max_tokens=body.get("maxTokens"),
    )


def parse_template_request(body: Any) -> TemplateRequest:
    """Validate a POST /templates/{name} body against ``TemplateRequest``."""
    validate(body, validator(TEMPLATE_MODEL))
    return TemplateRequest(variables=dict(body["variables"]))


def check_template_variables(template: str, given: Mapping[str, str], expected: Sequence[str]) -> None:
    """400 unless ``given`` holds exactly the template's variables."""
    wanted = ", ".join(expected) or "(none)"
    missing = [name for name in expected if name not in given]
    if missing:
        raise BadRequestError(
            f"Template '{template}' is missing variables: {', '.join(missing)}. Expected: {wanted}.",
            code="missing_variable",
            field=join("variables", missing[0]),
        )
    unexpected = [name for name in given if name not in expected]
    if unexpected:
        shown = ", ".join(join("", name) for name in unexpected)
        raise BadRequestError(
            f"Template '{template}' does not use variables: {shown}. Expected: {wanted}.",
            code="unknown_variable",
            field=join("variables", unexpected[0]),
        )
