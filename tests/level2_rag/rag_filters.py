"""Hypothesis strategies for Bedrock RetrievalFilters: valid ones, and invalid ones with the path at fault.

Every strategy takes the vector store (a key of ``STORE_OPERATORS``): a filter is valid only with the
operators that store supports, and an operator it lacks is a defect of its own (``unsupported_operator``).

Strategies are plain values: the ones a draw uses again and again are built once (module constants, or cached by
their arguments) instead of on every draw, where Hypothesis would build and validate the same strategy anew each
time. What they generate is the same.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st

from rag_api.filters import (
    COMPARISON_OPERATORS,
    GROUP_OPERATORS,
    LIST_VALUED,
    MAX_DEPTH,
    NUMBER,
    OPENSEARCH_SERVERLESS,
    OPERATORS,
    PRIMITIVE,
    STORE_OPERATORS,
    STORE_UNFILTERABLE_KEYS,
    STORE_VALUES,
)

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
)
json_values = st.recursive(
    st.one_of(st.none(), scalars),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
non_null_json_values = json_values.filter(lambda v: v is not None)
scalar_lists = st.lists(scalars, min_size=1, max_size=5)
# Keys any store filters on. Hypothesis also draws the string constants of the code under test, such as a store's
# own field names (kit-vector), which no store filters on: a filter naming one is invalid at that key, not where a
# strategy puts its defect (it drew {'andAll': [{'equals': {'key': 'kit-vector', ...}}, False]}).
_UNFILTERABLE = frozenset(key for names in STORE_UNFILTERABLE_KEYS.values() for key in names)
keys = st.text(min_size=1, max_size=100).filter(lambda key: key not in _UNFILTERABLE)


def supported(store: str, operators: tuple[str, ...]) -> list[str]:
    return [name for name in operators if name in STORE_OPERATORS[store]]


def unsupported(store: str) -> list[str]:
    return [name for name in OPERATORS if name not in STORE_OPERATORS[store]]


@functools.cache
def sampled_operators(store: str, operators: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(supported(store, operators))


numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12), st.floats(allow_nan=False, allow_infinity=False, width=32)
)
# Values a store refuses for an operator (STORE_VALUES): not one of its kind.
not_numbers = st.one_of(st.booleans(), st.text(max_size=6), st.lists(numbers, min_size=1, max_size=2))
not_primitives = st.one_of(st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
not_primitive_lists = st.lists(not_primitives, min_size=1, max_size=2)


def _value_for(kind: str | None) -> st.SearchStrategy[Any]:
    return {None: non_null_json_values, NUMBER: numbers, PRIMITIVE: scalars}.get(kind, scalar_lists)


@st.composite
def _comparisons(draw: st.DrawFn, store: str) -> dict[str, Any]:
    operator = draw(sampled_operators(store, COMPARISON_OPERATORS))
    kind = STORE_VALUES[store].get(operator)
    if operator in LIST_VALUED:
        value: Any = draw(scalar_lists)
    else:
        value = draw(_value_for(kind))
    return {operator: {"key": draw(keys), "value": value}}


@functools.cache
def comparisons(store: str = OPENSEARCH_SERVERLESS) -> st.SearchStrategy[dict[str, Any]]:
    """A valid comparison for ``store``."""
    return _comparisons(store)


@functools.cache
def valid_filters(store: str, depth: int = 1) -> st.SearchStrategy[dict[str, Any]]:
    """Any filter the API accepts for ``store``, at most MAX_DEPTH levels deep."""
    if depth >= MAX_DEPTH:
        return comparisons(store)
    groups = st.builds(
        lambda operator, items: {operator: items},
        sampled_operators(store, GROUP_OPERATORS),
        st.lists(st.deferred(lambda: valid_filters(store, depth + 1)), min_size=2, max_size=8),
    )
    return st.one_of(comparisons(store), groups)


not_objects = st.one_of(scalars, st.none(), st.lists(scalars, max_size=2))
unknown_names = st.text(min_size=1, max_size=20).filter(lambda name: name not in OPERATORS)
extra_names = st.text(min_size=1, max_size=20).filter(lambda name: name not in ("key", "value"))
group_operators = st.sampled_from(GROUP_OPERATORS)
group_sizes = st.integers(min_value=2, max_value=5)
non_string_keys = st.one_of(st.integers(), st.none(), st.booleans())
too_long_key_sizes = st.integers(101, 300)
list_valued_operators = st.sampled_from(sorted(LIST_VALUED))
not_list_values = st.one_of(scalars, st.just([]))
not_lists = not_objects.filter(lambda v: not isinstance(v, list))
DEFECTS = (
    "not_object",
    "empty",
    "two_operators",
    "unknown_operator",
    "operand_not_object",
    "missing_key",
    "missing_value",
    "extra_field",
    "key_not_string",
    "key_empty",
    "key_too_long",
    "value_null",
    "list_value_not_list",
    "group_too_small",
    "group_not_list",
    "too_deep",
)


@functools.cache
def defects(store: str) -> st.SearchStrategy[str]:
    """Every kind of defect a filter for ``store`` can have (an operator the store lacks, if it lacks any)."""
    store_defects = [
        *(["unsupported_operator"] if unsupported(store) else []),
        *(["value_type_for_store"] if STORE_VALUES[store] else []),
    ]
    return st.sampled_from([*DEFECTS, *store_defects])


@functools.cache
def unsupported_operators(store: str) -> st.SearchStrategy[str]:
    return st.sampled_from(unsupported(store))


@functools.cache
def other_comparisons(store: str, operator: str) -> st.SearchStrategy[dict[str, Any]]:
    """A valid comparison for ``store`` with another operator than ``operator``."""
    return comparisons(store).filter(lambda c: next(iter(c)) != operator)


@st.composite
def invalid_filters(draw: st.DrawFn, store: str, depth: int = 1, path: str = "filter") -> tuple[Any, str]:
    """(filter, the field the API must name): exactly one defect, somewhere in a filter otherwise valid for
    ``store``."""
    if depth < MAX_DEPTH and draw(st.booleans()):
        operator = draw(group_operators)
        size = draw(group_sizes)
        bad_index = draw(st.integers(min_value=0, max_value=size - 1))
        # Siblings before the defect must be valid; the ones after it are never looked at, but keep them valid.
        items: list[Any] = [draw(valid_filters(store, depth + 1)) for _ in range(size)]
        items[bad_index], field = draw(invalid_filters(store, depth + 1, f"{path}.{operator}[{bad_index}]"))
        return {operator: items}, field
    leaf = draw(comparisons(store))
    [(operator, operand)] = leaf.items()
    here = f"{path}.{operator}"
    defect = draw(defects(store))
    if defect == "unsupported_operator":
        missing = draw(unsupported_operators(store))
        return {missing: {"key": operand["key"], "value": draw(scalars)}}, f"{path}.{missing}"
    if defect == "not_object":
        return draw(not_objects), path
    if defect == "empty":
        return {}, path
    if defect == "two_operators":
        other = draw(other_comparisons(store, operator))
        return {**leaf, **other}, path
    if defect == "unknown_operator":
        name = draw(unknown_names)
        return {name: operand}, f"{path}.{name}"
    if defect == "operand_not_object":
        return {operator: draw(not_objects)}, here
    if defect == "missing_key":
        return {operator: {"value": operand["value"]}}, f"{here}.key"
    if defect == "missing_value":
        return {operator: {"key": operand["key"]}}, f"{here}.value"
    if defect == "extra_field":
        name = draw(extra_names)
        return {operator: {**operand, name: 1}}, f"{here}.{name}"
    if defect == "key_not_string":
        return {operator: {"key": draw(non_string_keys), "value": 1}}, f"{here}.key"
    if defect == "key_empty":
        return {operator: {"key": "", "value": operand["value"]}}, f"{here}.key"
    if defect == "key_too_long":
        return {operator: {"key": "k" * draw(too_long_key_sizes), "value": operand["value"]}}, f"{here}.key"
    if defect == "value_null":
        return {operator: {"key": operand["key"], "value": None}}, f"{here}.value"
    if defect == "list_value_not_list":
        list_operator = draw(list_valued_operators)
        value: Any = draw(not_list_values)
        return {list_operator: {"key": "k", "value": value}}, f"{path}.{list_operator}.value"
    if defect == "value_type_for_store":
        typed = draw(st.sampled_from(sorted(STORE_VALUES[store])))
        kind = STORE_VALUES[store][typed]
        wrong = {NUMBER: not_numbers, PRIMITIVE: not_primitives}.get(kind, not_primitive_lists)
        return {typed: {"key": "k", "value": draw(wrong)}}, f"{path}.{typed}.value"
    if defect == "too_deep":
        return draw(too_deep(store, depth, path))
    group = draw(group_operators)
    if defect == "group_too_small":
        return {group: [draw(comparisons(store))]}, f"{path}.{group}"
    return {group: draw(not_lists)}, f"{path}.{group}"


@st.composite
def too_deep(draw: st.DrawFn, store: str, depth: int, path: str) -> tuple[Any, str]:
    """Groups nested until one sits at the deepest level, where no group is allowed."""
    group = draw(group_operators)
    if depth >= MAX_DEPTH:
        return {group: [draw(comparisons(store)), draw(comparisons(store))]}, f"{path}.{group}"
    inner, field = draw(too_deep(store, depth + 1, f"{path}.{group}[0]"))
    return {group: [inner, draw(comparisons(store))]}, field
