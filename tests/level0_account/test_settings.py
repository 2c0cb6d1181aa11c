"""Level 0 settings: the opt-in account-level stack."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError
from tests.infra.test_config import build


@pytest.mark.parametrize(("raw", "expected"), [(True, True), ("true", True), (" FALSE ", False), (False, False)])
def test_invocation_logging_takes_a_flag_or_its_command_line_string(raw: object, expected: bool) -> None:
    assert build(invocation_logging=raw).invocation_logging is expected


@pytest.mark.parametrize("raw", ["yes", 1, None])
def test_invocation_logging_refuses_anything_but_true_or_false(raw: object) -> None:
    with pytest.raises(ConfigError) as caught:
        build(invocation_logging=raw)
    assert str(caught.value).startswith("config error: invocation_logging = ")
    assert str(caught.value).endswith("expected true or false")
