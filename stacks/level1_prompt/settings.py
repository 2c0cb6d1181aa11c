"""Level 1 (prompt calls) settings: the defaults of free-form Converse calls."""

from __future__ import annotations

from pydantic import Field

from stacks.shared.settings import NumberOrNone, Settings, Whole


class PromptSettings(Settings):
    # Converse inferenceConfig: temperature 0-1, maxTokens at least 1 (the kit caps it at 4096):
    # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InferenceConfiguration.html
    # none: no default temperature, for a model that refuses any (some newer Claude models do).
    text_temperature: NumberOrNone = Field(
        alias="text_temperature",
        description="The default temperature of free-form calls (none: send none, for a model that refuses one)",
        ge=0.0,
        le=1.0,
    )
    text_max_tokens: Whole = Field(
        alias="text_max_tokens",
        description="The default maxTokens of free-form calls, and of templates that set none",
        ge=1,
        le=4096,
    )
