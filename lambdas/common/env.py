"""A function's environment contract, read by hand: every error is a ConfigurationError naming the variable.

pydantic-settings (in the Powertools layer) would read these, but it adds about 160 ms to a handler's cold
import (pydantic alone about 90 ms), past the handlers' budget of 1.5x ``import boto3``; these few readers
are the standard library only.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from common.errors import ConfigurationError


def env_str(name: str, default: str | None = None) -> str:
    """A required (non-blank) environment variable, or ``default`` when given."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise ConfigurationError(f"Environment variable {name} is not set.")


def env_float(name: str, default: float | None, minimum: float, maximum: float) -> float:
    """A finite float environment variable within [minimum, maximum]; required when ``default`` is None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigurationError(f"Environment variable {name} is not set.")
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise ConfigurationError(f"Environment variable {name} must be a number between {minimum} and {maximum}.")
    return value


def env_int(name: str, default: int | None, minimum: int, maximum: int) -> int:
    """An integer environment variable within [minimum, maximum]; required when ``default`` is None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigurationError(f"Environment variable {name} is not set.")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"Environment variable {name} must be an integer between {minimum} and {maximum}."
        ) from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"Environment variable {name} must be an integer between {minimum} and {maximum}.")
    return value


def env_json_object(name: str) -> dict[str, Any]:
    """A required environment variable holding a JSON object."""
    raw = env_str(name)
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigurationError(f"Environment variable {name} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"Environment variable {name} must be a JSON object.")
    return value


def env_matching(name: str, pattern: re.Pattern[str], wording: str) -> str:
    """A required environment variable that ``pattern`` matches whole, e.g. ``wording`` "a guardrail id"."""
    value = env_str(name)
    if not pattern.fullmatch(value):
        raise ConfigurationError(f"Environment variable {name} must be {wording}.")
    return value
