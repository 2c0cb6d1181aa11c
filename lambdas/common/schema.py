"""Request bodies checked against a function's ``request_schemas.json`` (draft-04) by fastjsonschema.

fastjsonschema is the engine of Powertools' Validation utility (its ``validation`` extra, see "Extra
dependencies" in https://docs.aws.amazon.com/powertools/python/3.24.0/getting-started/install). The managed
Powertools v3 layer is built with ``include_extras`` (``aws-lambda-powertools[all]``), so it ships
fastjsonschema, pydantic and aws-xray-sdk; the function's own asset carries no third-party code. Each model
is compiled once, on first use: Powertools' ``validate()`` compiles the schema again on every call (about 4 ms
a request here, against microseconds for a compiled validator). pydantic would do as well but costs about
90 ms of cold import, which the handlers' import budget (1.5x ``import boto3``) does not have room for.

Every rejection is a BadRequestError naming the offending ``field`` (dotted path) and the reason, with one
error code per JSON Schema keyword. A schema file may use only the keywords in ``SUPPORTED_KEYWORDS`` (those
with an error code, plus annotations): loading one that uses any other fails, so a keyword cannot reach the
caller as an unmapped error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from common.errors import BadRequestError

_SURROGATE = re.compile("[\ud800-\udfff]")  # any left after json.loads is unpaired (it joins a valid pair)

Validator = Callable[[Any], Any]

ANNOTATIONS = frozenset({"$schema", "title", "description"})
SUPPORTED_KEYWORDS = ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "maxProperties",
    "minLength", "maxLength", "pattern", "minimum", "maximum",
}  # fmt: skip
SHOWN_KEY_CHARS = 64  # a key the caller chose is shown up to this length
SHOWN_FIELD_CHARS = 200  # and a whole field path up to this one
ROOT = "data"  # fastjsonschema's name for the validated value
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
    """ValueError naming the place of any keyword that has no error code here."""
    unknown = set(schema) - SUPPORTED_KEYWORDS
    if unknown:
        raise ValueError(f"{where}: unsupported JSON Schema keywords {sorted(unknown)}")
    for key, sub in schema.get("properties", {}).items():
        check_keywords(sub, f"{where}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        check_keywords(schema["additionalProperties"], f"{where}.*")


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema``, its draft taken from ``$schema`` (the kit's files say draft-04).

    fastjsonschema reads ``$`` in a pattern as the end of the text, as JSON Schema does; it cannot compile a
    ``$`` inside a character class (write ``\\$``). A test compiles every request schema file.
    """
    validator: Validator = fastjsonschema.compile(dict(schema))
    return validator


def validate(value: Any, validator: Validator) -> None:
    """Raise BadRequestError (naming the field and the reason) unless ``value`` satisfies the schema and holds no
    unpaired surrogate."""
    # First: a field named in a message (or a log line) must be text that can be written out.
    if (where := unpaired_surrogate(value)) is not None:
        shown = _bounded(_SURROGATE.sub("\ufffd", where)) or "body"
        raise BadRequestError(
            f"'{shown}' holds an unpaired UTF-16 surrogate (an escape from \\ud800 to \\udfff without its pair), "
            "which is no Unicode character.",
            code="invalid_value",
            field=shown,
        )
    try:
        validator(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise bad_request(exc) from None


def unpaired_surrogate(value: Any) -> str | None:
    """The field path of the first string or key holding an unpaired surrogate, None if there is none.

    JSON lets a string escape one ("\\ud800"); json.loads joins a valid pair into one character, so any code point
    left from U+D800 to U+DFFF is unpaired: no Unicode text, which the models' APIs may refuse or mangle. Walked
    without recursion: json.loads reads nesting nearly as deep as the interpreter's recursion limit.
    """
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                where = join(path, key)
                if _SURROGATE.search(key):
                    return where
                pending.append((where, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


def join(prefix: str, key: str) -> str:
    """``prefix.key``, with an over-long key shortened for display."""
    shown = key if len(key) <= SHOWN_KEY_CHARS else key[:SHOWN_KEY_CHARS] + "..."
    return f"{prefix}.{shown}" if prefix else shown


def field_name(name: str | None) -> str:
    """The caller's dotted path for fastjsonschema's ``data.a.b`` ("" for the body itself), shortened."""
    parts = (name or ROOT).split(".")[1:]  # a key holding dots reads the same once joined again
    return _bounded(".".join(join("", part) for part in parts))


def _bounded(field: str) -> str:
    """A field path shortened for display."""
    return field if len(field) <= SHOWN_FIELD_CHARS else field[:SHOWN_FIELD_CHARS] + "..."


def bad_request(exc: fastjsonschema.JsonSchemaValueException) -> BadRequestError:
    """The kit's 400 for a fastjsonschema rejection: one code per keyword, the field and what is allowed."""
    field = field_name(exc.name)
    shown = field or "body"
    schema: Mapping[str, Any] = exc.definition if isinstance(exc.definition, Mapping) else {}
    value, rule = exc.value, exc.rule
    if rule in ("required", "additionalProperties"):
        return _object_error(value, schema, field)
    if rule == "maxProperties":
        return BadRequestError(
            f"'{shown}' has {len(value)} entries; at most {exc.rule_definition} are allowed.",
            code="too_many_fields",
            field=shown,
        )
    if rule == "type":
        return BadRequestError(f"'{shown}' must be {describe(schema)}.", code="invalid_type", field=shown)
    if rule in ("minLength", "maxLength"):
        return BadRequestError(
            f"'{shown}' must be {describe(schema)} (got {len(value)}).", code="invalid_length", field=shown
        )
    if rule == "pattern":
        pattern = str(exc.rule_definition)
        wording = _PATTERN_WORDS.get(pattern, f"match the pattern {pattern}")
        return BadRequestError(f"'{shown}' must {wording}.", code="invalid_value", field=shown)
    if rule in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        return BadRequestError(f"'{shown}' must be between {low} and {high}.", code="out_of_range", field=shown)
    # load_schema_file admits no other keyword; a schema built elsewhere still gets a 400 naming the field
    return BadRequestError(f"'{shown}' is not valid: {exc.message}.", code="invalid_value", field=shown)


def _object_error(obj: Mapping[str, Any], schema: Mapping[str, Any], field: str) -> BadRequestError:
    """An unknown key first (a misspelt name is also a missing one), else the first missing required key."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        unknown = [key for key in obj if key not in properties]
        if unknown:
            name = join(field, unknown[0])
            allowed = ", ".join(properties)
            return BadRequestError(
                f"Unknown field '{name}'. Allowed fields: {allowed}.", code="unknown_field", field=name
            )
    missing = next((key for key in schema.get("required", []) if key not in obj), "")
    name = join(field, missing)
    return BadRequestError(
        f"'{name}' is required: {describe(properties.get(missing, {}))}.", code="missing_field", field=name
    )


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
