"""The configuration the stacks receive: each level's settings, validated together from the CDK context.

Every key lives in ``cdk.json`` under ``context`` (the one place defaults live) and can be overridden with
``-c key=value``. Each level owns its settings model (``stacks/levelN_x/settings.py``; kit-wide and shared
ones in ``stacks/shared/settings.py``); this module only composes them. Validation collects every mistake in
every level, and :class:`ConfigError` prints one line per mistake, naming the key, the value and what is
allowed; ``app.py`` prints them and exits, so a config mistake never shows a stack trace.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from stacks.level0_account.settings import INVOCATION_LOGGING_ADAPTER, AccountSettings
from stacks.level1_prompt.settings import PromptSettings
from stacks.level2_rag.settings import RagSettings
from stacks.level3_finetune.sagemaker_settings import SageMakerFineTuneSettings
from stacks.level3_finetune.settings import FineTuneSettings
from stacks.level4_pretrain.settings import PretrainSettings
from stacks.shared.deployment import Deployment
from stacks.shared.settings import (
    REGION_ADAPTER,
    STAGE_ADAPTER,
    ConfigError,
    GuardrailSettings,
    ModelRef,
    Problem,
    SharedSettings,
    context_keys,
    problems_of,
)

__all__ = ["CONFIG_KEYS", "EVERY_MODEL_READS", "LEVEL_SETTINGS", "ConfigError", "KitConfig", "load_config"]

# Every settings model, kit-wide first; each reads its own keys from the one flat context.
LEVEL_SETTINGS: tuple[type[BaseModel], ...] = (
    SharedSettings,
    GuardrailSettings,
    AccountSettings,
    PromptSettings,
    RagSettings,
    FineTuneSettings,
    SageMakerFineTuneSettings,
    PretrainSettings,
)
# Every kit key, in the models' order. Keys that contain "@" or ":" belong to the CDK, and so do these:
CONFIG_KEYS: tuple[str, ...] = tuple(key for model in LEVEL_SETTINGS for key in context_keys(model))
# The CDK CLI's own plain keys: acknowledged notices, and `cdk cli-telemetry --disable`'s setting in cdk.context.json
# (https://docs.aws.amazon.com/cdk/v2/guide/cli-telemetry.html).
_CDK_PLAIN_KEYS = frozenset({"acknowledged-issue-numbers", "cli-telemetry"})
# Keys every settings model may read besides its own (e.g. a null that the stage decides, a rule across levels).
EVERY_MODEL_READS = {
    "stage": STAGE_ADAPTER,
    "region": REGION_ADAPTER,
    "invocation_logging": INVOCATION_LOGGING_ADAPTER,
}


@dataclass(frozen=True)
class KitConfig:
    """What the stacks read: the kit-wide values, then each level's settings."""

    stage: str
    name_prefix: str
    region: str
    account: str | None
    text_model: ModelRef
    guardrail: GuardrailSettings
    api_throttle_rate: float
    api_throttle_burst: int
    log_retention_days: int
    powertools_layer_version: int
    alarm_email: str | None
    prompt: PromptSettings
    rag: RagSettings
    finetune: FineTuneSettings
    finetune_sagemaker: SageMakerFineTuneSettings
    pretrain: PretrainSettings
    invocation_logging: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def text_temperature(self) -> float | None:
        return self.prompt.text_temperature

    @property
    def text_max_tokens(self) -> int:
        return self.prompt.text_max_tokens

    def resource_name(self, *parts: str) -> str:
        """A physical name that carries the prefix and the stage, e.g. ``genai-kit-sandbox-prompts``."""
        return "-".join((self.name_prefix, self.stage, *parts))

    @cached_property
    def deployment(self) -> Deployment:
        """The kit-wide values the constructs read, built once: the stacks hand this out, never the whole config."""
        return Deployment(
            stage=self.stage,
            name_prefix=self.name_prefix,
            region=self.region,
            log_retention_days=self.log_retention_days,
            powertools_layer_version=self.powertools_layer_version,
            alarm_email=self.alarm_email,
            tags=self.tags,
        )


def _valid_or_none(adapter: Any, raw: object) -> Any:
    try:
        return adapter.validate_python(raw)
    except ValidationError:
        return None


# The CDK's permissions-boundary key, which the CDK ignores without a word when it is misspelt (app.py reads it).
PERMISSIONS_BOUNDARY = "@aws-cdk/core:permissionsBoundary"


def _unknown(key: str, known: frozenset[str]) -> bool:
    """A key that is no kit setting. Keys with ":" or "@" are the CDK's (feature flags, aws:cdk:*, lookups cached
    as "availability-zones:account=...:region=..."), except a kit key with a ":" after it (`-c rag_max_results:=7`)
    and a near miss of the permissions-boundary key, which would otherwise leave every role without its boundary."""
    if key in known or key in _CDK_PLAIN_KEYS or key == PERMISSIONS_BOUNDARY:
        return False
    if ":" in key or "@" in key:
        near_boundary = key.startswith("@aws-cdk/") and _close(key, [PERMISSIONS_BOUNDARY], 0.9)
        return key.split(":", 1)[0] in known or bool(near_boundary)
    return True


def _close(key: str, candidates: Collection[str], cutoff: float) -> list[str]:
    import difflib

    return difflib.get_close_matches(key, list(candidates), n=1, cutoff=cutoff)


def _known_key(key: str, known: frozenset[str]) -> str:
    near = _close(key.split(":", 1)[0] if ":" in key and "@" not in key else key, [*known, PERMISSIONS_BOUNDARY], 0.8)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"a known key{hint}: " + ", ".join(sorted(known))


def load_config(context: Mapping[str, Any], *, pinned_layer_version: int) -> KitConfig:
    """Build and validate the kit configuration from a CDK context mapping; every mistake in one ConfigError."""
    known = frozenset(CONFIG_KEYS)
    problems = [Problem(key, context[key], _known_key(key, known)) for key in sorted(context) if _unknown(key, known)]
    # What other levels' rules depend on (None when itself invalid: that mistake is reported once, by its model).
    where = {key: _valid_or_none(adapter, context.get(key)) for key, adapter in EVERY_MODEL_READS.items()}
    built: dict[type[BaseModel], Any] = {}
    for model in LEVEL_SETTINGS:
        try:
            built[model] = model.model_validate(context, context=where)
        except ValidationError as err:
            problems += problems_of(err, model, context)
    if problems:
        raise ConfigError.of(problems)
    shared: SharedSettings = built[SharedSettings]
    return KitConfig(
        stage=shared.stage,
        name_prefix=shared.name_prefix,
        region=shared.region,
        account=shared.account or None,
        text_model=shared.text_model,
        guardrail=built[GuardrailSettings],
        api_throttle_rate=shared.api_throttle_rate,
        api_throttle_burst=shared.api_throttle_burst,
        log_retention_days=shared.retention_days,
        powertools_layer_version=shared.powertools_layer_version or pinned_layer_version,
        alarm_email=shared.alarm_email or None,
        prompt=built[PromptSettings],
        rag=built[RagSettings],
        finetune=built[FineTuneSettings],
        finetune_sagemaker=built[SageMakerFineTuneSettings],
        pretrain=built[PretrainSettings],
        invocation_logging=built[AccountSettings].invocation_logging,
        tags=shared.tags,
    )
