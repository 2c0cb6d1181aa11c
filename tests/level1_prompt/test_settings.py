"""Level 1 settings: the defaults of free-form calls, with the key, the value and what is allowed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stacks.config import ConfigError
from tests.infra.test_config import build


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("text_temperature", 1.7, "a number from 0 to 1, or none"),
        ("text_temperature", "hot", "a number from 0 to 1, or none"),
        ("text_temperature", True, "a number from 0 to 1, or none"),
        ("text_max_tokens", 0, "a whole number from 1 to 4096"),
        ("text_max_tokens", "12.5", "a whole number from 1 to 4096"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(key: str, value: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**{key: value})
    message = str(caught.value)
    assert message.startswith(f"config error: {key} = ")
    assert (json.dumps(value) if not isinstance(value, str) else repr(value)) in message
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("text_temperature", "0.25", 0.25),
        ("text_temperature", "none", None),  # no default temperature, for a model that refuses any
        ("text_temperature", None, None),
        ("text_max_tokens", "1024", 1024),
    ],
)
def test_string_overrides_from_the_command_line_are_coerced(key: str, raw: str, expected: Any) -> None:
    config = build(**{key: raw})
    assert getattr(config, key) == expected
    assert getattr(config.prompt, key) == expected
