"""Request validation driven by ``request_schemas.json`` (the same draft-04 file API Gateway uses).

Only the JSON Schema keywords in ``SUPPORTED_KEYWORDS`` are implemented; loading a schema that uses any
other keyword fails, so the file and this validator cannot silently disagree.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.errors import BadRequestError

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "request_schemas.json")
PROMPT_MODEL = "PromptRequest"
TEMPLATE_MODEL = "TemplateRequest"
SUPPORTED_KEYWORDS = frozenset(
    {
        "$schema", "title", "description", "type", "properties", "required", "additionalProperties",
        "maxProperties", "minLength", "maxLength", "pattern", "minimum", "maximum",
    }
)  # fmt: skip
_PATTERN_WORDS = {r"\S": "contain at least one non-whitespace character"}
_SHOWN_KEY_CHARS = 64


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
    with open(SCHEMA_FILE, encoding="utf-8") as handle:
        schemas: dict[str, dict[str, Any]] = json.load(handle)
    for name, schema in schemas.items():
        _check_keywords(schema, name)
    return schemas


def _check_keywords(schema: Mapping[str, Any], where: str) -> None:
    unknown = set(schema) - SUPPORTED_KEYWORDS
    if unknown:
        raise ValueError(f"{where}: unsupported JSON Schema keywords {sorted(unknown)}")
    for key, sub in schema.get("properties", {}).items():
        _check_keywords(sub, f"{where}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        _check_keywords(schema["additionalProperties"], f"{where}.*")


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


# --- generic validator -------------------------------------------------------------------------------------


def validate(value: Any, schema: Mapping[str, Any], field: str = "") -> None:
    """Raise BadRequestError (naming the field) unless ``value`` satisfies ``schema``."""
    kind = schema.get("type")
    if kind is not None and not _has_type(value, kind):
        raise BadRequestError(
            f"'{field or 'body'}' must be {describe(schema)}.", code="invalid_type", field=field or "body"
        )
    if kind == "object":
        _validate_object(value, schema, field)
    elif kind == "string":
        _validate_string(value, schema, field)
    elif kind in ("number", "integer"):
        _validate_number(value, schema, field)


def describe(schema: Mapping[str, Any]) -> str:
    """Human wording of what a schema accepts, with its allowed range."""
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        return f"a string of {low} to {high} characters" if high is not None else "a string"
    if kind in ("number", "integer"):
        article = "an integer" if kind == "integer" else "a number"
        return f"{article} between {schema.get('minimum')} and {schema.get('maximum')}"
    if kind == "object":
        return "an object"
    return str(kind)


def _has_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    checks: dict[str, tuple[type, ...]] = {
        "object": (dict,),
        "string": (str,),
        "number": (int, float),
        "integer": (int,),
        "array": (list,),
    }
    return isinstance(value, checks.get(kind, ()))


def _join(prefix: str, key: str) -> str:
    shown = key if len(key) <= _SHOWN_KEY_CHARS else key[:_SHOWN_KEY_CHARS] + "..."
    return f"{prefix}.{shown}" if prefix else shown


def _validate_object(obj: dict[str, Any], schema: Mapping[str, Any], field: str) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    limit = schema.get("maxProperties")
    if limit is not None and len(obj) > limit:
        raise BadRequestError(
            f"'{field or 'body'}' has {len(obj)} entries; at most {limit} are allowed.",
            code="too_many_fields",
            field=field or "body",
        )
    if extra is False:
        unknown = [key for key in obj if key not in properties]
        if unknown:
            name = _join(field, unknown[0])
            allowed = ", ".join(properties)
            raise BadRequestError(
                f"Unknown field '{name}'. Allowed fields: {allowed}.", code="unknown_field", field=name
            )
    for key in schema.get("required", []):
        if key not in obj:
            name = _join(field, key)
            sub = properties.get(key, {})
            raise BadRequestError(f"'{name}' is required: {describe(sub)}.", code="missing_field", field=name)
    for key, value in obj.items():
        sub = properties.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            validate(value, sub, _join(field, key))


def _validate_string(text: str, schema: Mapping[str, Any], field: str) -> None:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(text) < low or (high is not None and len(text) > high):
        raise BadRequestError(
            f"'{field}' must be {describe(schema)} (got {len(text)}).", code="invalid_length", field=field
        )
    pattern = schema.get("pattern")
    if pattern is not None and re.search(pattern, text) is None:
        wording = _PATTERN_WORDS.get(pattern, f"match the pattern {pattern}")
        raise BadRequestError(f"'{field}' must {wording}.", code="invalid_value", field=field)


def _validate_number(number: float, schema: Mapping[str, Any], field: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    too_low = low is not None and number < low
    too_high = high is not None and number > high
    if too_low or too_high or not math.isfinite(number):
        raise BadRequestError(f"'{field}' must be between {low} and {high}.", code="out_of_range", field=field)


# --- the two request bodies --------------------------------------------------------------------------------


def parse_prompt_request(body: Any) -> PromptRequest:
    """Validate a POST /prompt body against ``PromptRequest``."""
    validate(body, load_schemas()[PROMPT_MODEL])
    return PromptRequest(
        prompt=body["prompt"],
        system=body.get("system"),
        temperature=body.get("temperature"),
        top_p=body.get("topP"),
        max_tokens=body.get("maxTokens"),
    )


def parse_template_request(body: Any) -> TemplateRequest:
    """Validate a POST /templates/{name} body against ``TemplateRequest``."""
    validate(body, load_schemas()[TEMPLATE_MODEL])
    return TemplateRequest(variables=dict(body["variables"]))


def check_template_variables(template: str, given: Mapping[str, str], expected: Sequence[str]) -> None:
    """400 unless ``given`` holds exactly the template's variables."""
    wanted = ", ".join(expected) or "(none)"
    missing = [name for name in expected if name not in given]
    if missing:
        raise BadRequestError(
            f"Template '{template}' is missing variables: {', '.join(missing)}. Expected: {wanted}.",
            code="missing_variable",
            field=_join("variables", missing[0]),
        )
    unexpected = [name for name in given if name not in expected]
    if unexpected:
        shown = ", ".join(_join("", name) for name in unexpected)
        raise BadRequestError(
            f"Template '{template}' does not use variables: {shown}. Expected: {wanted}.",
            code="unknown_variable",
            field=_join("variables", unexpected[0]),
        )
