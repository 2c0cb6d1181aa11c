"""Validation of a Bedrock knowledge-base ``RetrievalFilter`` given by the caller.

Grammar (Bedrock agent runtime API, RetrievalFilter): a filter is an object with exactly one operator.

- a comparison ``{"<op>": {"key": str (1..100 chars), "value": <JSON>}}`` where ``<op>`` is one of
  ``COMPARISON_OPERATORS``; ``in`` and ``notIn`` take a non-empty array as ``value``;
- a group ``{"andAll" | "orAll": [<filter>, ...]}`` of at least 2 filters (the API sets no maximum).

Nesting is bounded by the kit, not the API: at most ``MAX_DEPTH`` levels of filter objects, so the walk of a
caller's filter stays shallow. Every rejection names the offending path in ``field``, e.g.
``filter.andAll[1].equals.key``. The walk never goes deeper than ``MAX_DEPTH``.

Not every vector store implements every operator, and Bedrock answers an unsupported one with a 400 that names
no field. ``STORE_OPERATORS`` lists, per vector store the kit can deploy, the operators it supports; any other
operator is refused up front (400 ``invalid_filter`` naming its path). ``STORE_VALUES`` does the same for the
values a store compares with (S3 Vectors: no arrays or objects for equals, numbers only for the ranges).
"""

from __future__ import annotations

import math
from typing import Any

from common.errors import BadRequestError
from common.schema import join

COMPARISON_OPERATORS = (
    "equals",
    "notEquals",
    "greaterThan",
    "greaterThanOrEquals",
    "lessThan",
    "lessThanOrEquals",
    "in",
    "notIn",
    "startsWith",
    "listContains",
    "stringContains",
)
GROUP_OPERATORS = ("andAll", "orAll")
OPERATORS = COMPARISON_OPERATORS + GROUP_OPERATORS
LIST_VALUED = frozenset({"in", "notIn"})
MAX_DEPTH = 3
MIN_GROUP = 2  # RetrievalFilterList's min; it has no max (botocore's bedrock-agent-runtime model)
MAX_KEY_CHARS = 100
_ATTRIBUTE_FIELDS = ("key", "value")

S3_VECTORS = "s3vectors"
OPENSEARCH_SERVERLESS = "opensearch-serverless"
# S3 Vectors filters with $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $and, $or: no prefix, substring or
# list-membership operator (https://docs.aws.amazon.com/AmazonS3/latest/userguide/s3-vectors-metadata-filtering.html).
# startsWith "is currently only supported for Amazon OpenSearch Serverless vector stores", which implements the
# whole grammar (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent-runtime_RetrievalFilter.html).
STORE_OPERATORS: dict[str, frozenset[str]] = {
    S3_VECTORS: frozenset(OPERATORS) - {"startsWith", "stringContains", "listContains"},
    OPENSEARCH_SERVERLESS: frozenset(OPERATORS),
}
STORE_NAMES = {S3_VECTORS: "S3 Vectors", OPENSEARCH_SERVERLESS: "OpenSearch Serverless"}
# The values S3 Vectors compares with ("Valid input types", s3-vectors-metadata-filtering.html above): $eq and $ne a
# string, number or Boolean; $gt, $gte, $lt and $lte a number; $in and $nin a non-empty array of those primitives.
# Bedrock passes the filter on, and the store's refusal names no field.
PRIMITIVE, NUMBER, PRIMITIVES = "a string, a number or true/false", "a number", "a non-empty array of primitives"
STORE_VALUES: dict[str, dict[str, str]] = {
    S3_VECTORS: {
        "equals": PRIMITIVE,
        "notEquals": PRIMITIVE,
        "greaterThan": NUMBER,
        "greaterThanOrEquals": NUMBER,
        "lessThan": NUMBER,
        "lessThanOrEquals": NUMBER,
        "in": PRIMITIVES,
        "notIn": PRIMITIVES,
    },
    OPENSEARCH_SERVERLESS: {},
}

# The metadata Bedrock writes with each vector, declared non-filterable on the S3 Vectors index (its 2 KB filterable
# metadata limit); "You can't use these keys in metadata filters" (botocore s3vectors MetadataConfiguration). The
# stack declares the index with these (stacks/level2_rag/stack.py), so a filter on one is refused here, by path.
S3_VECTORS_NON_FILTERABLE_KEYS = ("AMAZON_BEDROCK_TEXT", "AMAZON_BEDROCK_METADATA")
# The OpenSearch fields the knowledge base writes (the stack maps the index with these names). The vector field and
# the metadata field, which the index maps with index: false ("not indexed, making it non-searchable",
# https://docs.opensearch.org/latest/mappings/mapping-parameters/index-parameter), cannot be filtered on; the text
# field can.
OSS_VECTOR_FIELD, OSS_TEXT_FIELD, OSS_METADATA_FIELD = (
    "kit-vector",
    "AMAZON_BEDROCK_TEXT_CHUNK",
    "AMAZON_BEDROCK_METADATA",
)
STORE_UNFILTERABLE_KEYS: dict[str, tuple[str, ...]] = {
    S3_VECTORS: S3_VECTORS_NON_FILTERABLE_KEYS,
    OPENSEARCH_SERVERLESS: (OSS_VECTOR_FIELD, OSS_METADATA_FIELD),
}


def _is_primitive(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _fits(kind: str, value: Any) -> bool:
    if kind == NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == PRIMITIVE:
        return _is_primitive(value)
    return isinstance(value, list) and bool(value) and all(_is_primitive(item) for item in value)


def validate_filter(value: Any, store: str, field: str = "filter", depth: int = 1) -> None:
    """Raise BadRequestError naming the first offending path unless ``value`` is a RetrievalFilter ``store`` runs.

    ``store`` is a key of ``STORE_OPERATORS`` (the knowledge base's vector store).
    """
    if not isinstance(value, dict):
        raise BadRequestError(
            f"'{field}' must be a filter object with exactly one operator ({', '.join(OPERATORS)}).",
            code="invalid_type",
            field=field,
        )
    unknown = [key for key in value if key not in OPERATORS]
    if unknown:
        name = join(field, unknown[0])
        raise BadRequestError(
            f"Unknown filter operator '{name}'. Operators: {', '.join(OPERATORS)}.", code="unknown_field", field=name
        )
    if len(value) != 1:
        found = ", ".join(value) or "none"
        raise BadRequestError(
            f"'{field}' must have exactly one operator (found: {found}); combine conditions with andAll or orAll.",
            code="invalid_filter",
            field=field,
        )
    [(operator, operand)] = value.items()
    path = f"{field}.{operator}"
    supported = STORE_OPERATORS[store]
    if operator not in supported:
        allowed = ", ".join(name for name in OPERATORS if name in supported)
        raise BadRequestError(
            f"Filter operator '{operator}' at '{path}' is not supported by this knowledge base's vector store "
            f"({STORE_NAMES[store]}). Operators it supports: {allowed}.",
            code="invalid_filter",
            field=path,
        )
    if operator in GROUP_OPERATORS:
        _validate_group(operand, path, depth, store)
    else:
        _validate_comparison(operator, operand, path)
        if operand["key"] in STORE_UNFILTERABLE_KEYS[store]:
            raise BadRequestError(
                f"'{path}.key' names {operand['key']}, which this knowledge base's vector store "
                f"({STORE_NAMES[store]}) keeps but cannot filter on; filter on your documents' metadata keys.",
                code="invalid_filter",
                field=f"{path}.key",
            )
        kind = STORE_VALUES[store].get(operator)
        if kind is not None and not _fits(kind, operand["value"]):
            raise BadRequestError(
                f"'{path}.value' must be {kind} for '{operator}' on this knowledge base's vector store "
                f"({STORE_NAMES[store]}).",
                code="invalid_filter",
                field=f"{path}.value",
            )


def _validate_group(operand: Any, path: str, depth: int, store: str) -> None:
    if depth >= MAX_DEPTH:
        raise BadRequestError(
            f"'{path}' nests filters too deeply: at most {MAX_DEPTH} levels of filters are allowed.",
            code="invalid_filter",
            field=path,
        )
    if not isinstance(operand, list):
        raise BadRequestError(
            f"'{path}' must be an array of at least {MIN_GROUP} filters.", code="invalid_type", field=path
        )
    if len(operand) < MIN_GROUP:
        raise BadRequestError(
            f"'{path}' must hold at least {MIN_GROUP} filters (got {len(operand)}).",
            code="invalid_length",
            field=path,
        )
    for index, item in enumerate(operand):
        validate_filter(item, store, f"{path}[{index}]", depth + 1)


def _holds_non_finite(value: Any) -> bool:
    """True for a float that is not finite, or a list or object holding one.

    Python's json reads a number beyond a double's range (``1e999``) as infinity, and botocore would send it to
    Bedrock as the literal ``Infinity``, which is not JSON (RFC 8259, section 6: "Numeric values that cannot be
    represented in the grammar below (such as Infinity and NaN) are not permitted").
    """
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_holds_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_non_finite(item) for item in value.values())
    return False


def _validate_comparison(operator: str, operand: Any, path: str) -> None:
    if not isinstance(operand, dict):
        raise BadRequestError(f"'{path}' must be an object with 'key' and 'value'.", code="invalid_type", field=path)
    extra = [name for name in operand if name not in _ATTRIBUTE_FIELDS]
    if extra:
        name = join(path, extra[0])
        raise BadRequestError(f"Unknown field '{name}'. Allowed fields: key, value.", code="unknown_field", field=name)
    for name in _ATTRIBUTE_FIELDS:
        if name not in operand:
            raise BadRequestError(f"'{path}.{name}' is required.", code="missing_field", field=f"{path}.{name}")
    key, attribute_value = operand["key"], operand["value"]
    if not isinstance(key, str):
        raise BadRequestError(
            f"'{path}.key' must be a metadata attribute name (a string of 1 to {MAX_KEY_CHARS} characters).",
            code="invalid_type",
            field=f"{path}.key",
        )
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise BadRequestError(
            f"'{path}.key' must be a string of 1 to {MAX_KEY_CHARS} characters (got {len(key)}).",
            code="invalid_length",
            field=f"{path}.key",
        )
    if attribute_value is None:
        raise BadRequestError(
            f"'{path}.value' must be a JSON value to compare with, not null.",
            code="invalid_type",
            field=f"{path}.value",
        )
    if _holds_non_finite(attribute_value):
        raise BadRequestError(
            f"'{path}.value' holds a number beyond the range of a double (JSON has no Infinity).",
            code="out_of_range",
            field=f"{path}.value",
        )
    if operator in LIST_VALUED and not (isinstance(attribute_value, list) and attribute_value):
        raise BadRequestError(
            f"'{path}.value' must be a non-empty array of values for '{operator}'.",
            code="invalid_type",
            field=f"{path}.value",
        )
