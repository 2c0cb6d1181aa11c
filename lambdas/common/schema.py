"""A small JSON Schema (draft-04 subset) validator whose errors follow the kit's error contract.

Request models live in a function's ``request_schemas.json`` (the same draft-04 documents API Gateway can
use). Only the keywords in ``SUPPORTED_KEYWORDS`` are implemented; loading a schema that uses any other
keyword fails, so a schema file and this validator cannot silently disagree. Every rejection is a
BadRequestError naming the offending ``field`` (dotted path) and the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from common.errors import BadRequestError

SUPPORTED_KEYWORDS = frozenset(
    {
        "$schema", "title", "description", "type", "properties", "required", "additionalProperties",
        "maxProperties", "minLength", "maxLength", "pattern", "minimum", "maximum",
    }
)  # fmt: skip
SHOWN_KEY_CHARS = 64
_PATTERN_WORDS = {
    r"\S": "contain at least one non-whitespace character",
    "^[0-9a-zA-Z._:-]+$": "contain only letters, digits and the characters . _ : -",
}


def load_schema_file(path: str) -> dict[str, dict[str, Any]]:
    """The request models of a schema file, by name, checked to use only supported keywords."""
    with open(path, encoding="utf-8") as handle:
        schemas: dict[str, dict[str, Any]] = json.load(handle)
    for name, schema in schemas.items():
        check_keywords(schema, name)
    return schemas


def check_keywords(schema: Mapping[str, Any], where: str) -> None:
    """ValueError naming the place of any keyword this validator does not implement."""
    unknown = set(schema) - SUPPORTED_KEYWORDS
    if unknown:
        raise ValueError(f"{where}: unsupported JSON Schema keywords {sorted(unknown)}")
    for key, sub in schema.get("properties", {}).items():
        check_keywords(sub, f"{where}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        check_keywords(schema["additionalProperties"], f"{where}.*")


def join(prefix: str, key: str) -> str:
    """``prefix.key``, with an over-long key shortened for display."""
    shown = key if len(key) <= SHOWN_KEY_CHARS else key[:SHOWN_KEY_CHARS] + "..."
    return f"{prefix}.{shown}" if prefix else shown


def validate(value: Any, schema: Mapping[str, Any], field: str = "") -> None:
    """Raise BadRequestError (naming the field) unless ``value`` satisfies ``schema``."""
    kind = schema.get("type")
    if kind is not None and not has_type(value, kind):
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
    if kind == "array":
        return "an array"
    return str(kind)


def has_type(value: Any, kind: str) -> bool:
    """JSON type check (a boolean is never a number)."""
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
            name = join(field, unknown[0])
            allowed = ", ".join(properties)
            raise BadRequestError(
                f"Unknown field '{name}'. Allowed fields: {allowed}.", code="unknown_field", field=name
            )
    for key in schema.get("required", []):
        if key not in obj:
            name = join(field, key)
            sub = properties.get(key, {})
            raise BadRequestError(f"'{name}' is required: {describe(sub)}.", code="missing_field", field=name)
    for key, value in obj.items():
        sub = properties.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            validate(value, sub, join(field, key))


def _validate_string(text: str, schema: Mapping[str, Any], field: str) -> None:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(text) < low or (high is not None and len(text) > high):
        raise BadRequestError(
            f"'{field}' must be {describe(schema)} (got {len(text)}).", code="invalid_length", field=field
        )
    pattern = schema.get("pattern")
    if pattern is not None and compile_pattern(pattern).search(text) is None:
        wording = _PATTERN_WORDS.get(pattern, f"match the pattern {pattern}")
        raise BadRequestError(f"'{field}' must {wording}.", code="invalid_value", field=field)


@lru_cache(maxsize=64)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema ``pattern`` as JSON Schema (ECMA 262) means it: ``$`` is the end of the text.

    In Python ``$`` also matches before a trailing newline, so ``^[a-z]+$`` would accept ``"abc\\n"``; every
    unescaped ``$`` outside a character class becomes ``\\Z`` (the very end). Like JSON Schema, a pattern is
    searched, not implicitly anchored.
    """
    out: list[str] = []
    escaped, in_class, class_chars = False, False, 0  # class_chars: members seen so far in a [...] class
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            # "]" closes the class unless it is its first member ("[]a]", "[^]a]")
            in_class = char != "]" or class_chars == 0
            class_chars += 0 if (char == "^" and class_chars == 0 and out[-1] == "[") else 1
        elif char == "[":
            in_class, class_chars = True, 0
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _validate_number(number: float, schema: Mapping[str, Any], field: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    too_low = low is not None and number < low
    too_high = high is not None and number > high
    if too_low or too_high or not math.isfinite(number):
        raise BadRequestError(f"'{field}' must be between {low} and {high}.", code="out_of_range", field=field)
