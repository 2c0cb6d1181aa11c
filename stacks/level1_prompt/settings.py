"""Level 1 (prompt calls) settings: the defaults of free-form Converse calls."""

from __future__ import annotations

from pydantic import Field

from prompt_api.validation import PROMPT_MODEL, bounds
from stacks.shared.settings import NumberOrNone, Settings, Whole

# Converse inferenceConfig: temperature 0-1, maxTokens at least 1 (the kit caps it at 4096):
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InferenceConfiguration.html. The ranges are the
# API's request schema's (prompt_api/request_schemas.json), which the function enforces on every call: a default
# outside them would be refused there.
TEMPERATURE_RANGE = bounds(PROMPT_MODEL, "temperature")
MAX_TOKENS_RANGE = bounds(PROMPT_MODEL, "maxTokens")


class PromptSettings(Settings):
    # none: no default temperature, for a model that refuses any (some newer Claude models do).
    text_temperature: NumberOrNone = Field(
        alias="text_temperature",
        description="The default temperature of free-form calls (none: send none, for a model that refuses one)",
        ge=float(TEMPERATURE_RANGE[0]),
        le=float(TEMPERATURE_RANGE[1]),
    )
    text_max_tokens: Whole = Field(
        alias="text_max_tokens",
        description="The default maxTokens of free-form calls, and of templates that set none",
        ge=MAX_TOKENS_RANGE[0],
        le=MAX_TOKENS_RANGE[1],
    )
