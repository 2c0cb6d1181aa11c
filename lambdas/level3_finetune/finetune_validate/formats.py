"""Per-family rules for Amazon Bedrock fine-tuning datasets: record shapes, limits and hyperparameters.

Facts relied on (AWS documentation and AWS's own sample validator, read November 2026):

Base model ids for customization carry a context suffix. Nova: amazon.nova-micro-v1:0:128k,
amazon.nova-lite-v1:0:300k, amazon.nova-pro-v1:0:300k
(https://docs.aws.amazon.com/nova/latest/userguide/customization.html).

Amazon Nova (https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html):
  - one JSON object per line: {"schemaVersion", "system": [{"text"}], "messages": [{"role", "content": [...]}]};
    schemaVersion "can be any string value"; the system turn is optional; roles are user and assistant; the
    first turn is user and the last is assistant.
  - "User:", "Bot:", "Assistant:", "System:", "<image>", "<video>" and "[EOS]" are reserved keywords: a prompt
    containing one fails the job. AWS's validator (aws-samples/amazon-nova-samples,
    customization/bedrock-finetuning/understanding/dataset_validation/nova_ft_dataset_validator.py) also
    rejects "Thought:" and "<unk>", matches case-insensitively and checks system, user and assistant text.
  - images and videos (Lite and Pro only, user turns only, S3 URIs): a dataset holds images or videos, not
    both; a sample holds at most one video; AWS's validator allows at most 10 images per turn, image formats
    jpeg/png/gif/webp and video formats mov/mkv/mp4/webm, and no media for Micro.
  - record bounds from AWS's validator: at least 8 training records, at most 20,000 records for training
    plus validation together. No separate validation-count or per-record token limit is documented.
  - dataset "file names can only consist of alphanumeric characters, underscores, hyphens, slashes, and
    dots" (item 3); AWS's validator holds media S3 URI paths to the same set (its is_valid_path).
  - hyperparameters (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html): epochCount
    integer 1-5, learningRate float 1e-6 to 1e-4, learningRateWarmupSteps integer 0-100. No batchSize.

Amazon Nova 2 Lite (the Nova 2 guide's "Validation tools" section,
https://docs.aws.amazon.com/nova/latest/nova2-userguide/nova-data-preparation.html, names AWS's validator above;
its NOVA_2_0_LITE_SAMPLE_BOUNDS): supervised fine-tuning takes 200 to 20,000 records, reinforcement
fine-tuning 100 to 20,000.

Bedrock "Prepare data for fine-tuning your models" and its "Model requirements for training and validation
datasets" tables (https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-prepare.html):
  - prompt/completion records {"prompt", "completion"} for Titan Text and Llama 3.1 (non-conversational);
    the Converse format (schemaVersion "bedrock-conversation-2024") for Llama 3.2; Claude 3 Haiku uses
    {"system"?: str, "messages": [{"role", "content": str}]}. The character quota of a sample is estimated as
    the token quota x 6.
  - Titan Text G1 - Express: 4,096 tokens per sample at batch size 1, 2,048 at 2-4. Lite: 4,096 at batch
    size 1-2, 2,048 at 3-6. Both: training file at most 1 GB, validation file at most 100 MB. The record-count
    quotas ("Sum of training and validation records", Service Quotas) have no default in these pages, so
    none is enforced for Titan.
  - Meta Llama 3.1: input + output at most 16,000 tokens, input and output each at least 0; training +
    validation records 100 to 10,000 ("10,000 (adjustable using service quotas)"): over 10,000 is a warning
    naming the quota (OVER_DEFAULT_QUOTA), not an error.
  - Meta Llama 3.2: at most 16,000 tokens (10,000 for 90B); training + validation records 100 to 10,000
    (adjustable); images (11B and 90B Vision) gif/jpeg/png/webp from S3. The page states no per-file cap: the
    10,000 training and 1,000 validation records the kit enforces come from AWS's sample Llama validator
    (LLAMA_VALIDATOR_LIMITS, MAX_TRAIN_RECORDS and MAX_VALIDATION_RECORDS).
  - Anthropic Claude 3 Haiku: at least 32 records, at most 10,000 training, 1,000 validation and 10,000 in
    total (adjustable); at most 32,000 tokens per record; training file at most 10 GB, validation 1 GB. The
    system field is optional, at least two messages, user first, assistant last, alternating, no extraneous
    keys (https://platform.claude.com/cookbook/finetuning-finetuning-on-bedrock). Its end of life was
    September 10, 2026 in us-west-2, its customization Region
    (https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-3-haiku.html): refused.

Distillation into Nova (https://docs.aws.amazon.com/nova/latest/userguide/custom-distill-prepare.html): 100 to 15K
prompts or prompt-response pairs. Reinforcement fine-tuning
(https://docs.aws.amazon.com/bedrock/latest/userguide/rft-prepare-data.html): at least 100 records and at most
20,000 prompts; each record's reference_answer (and its other fields) reaches the reward function under
"metadata" (https://docs.aws.amazon.com/bedrock/latest/userguide/reward-functions.html).

Hyperparameters are strings in CreateModelCustomizationJob (hyperParameters: map of string to string):
  - Claude 3 (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-anth-claude-3.html): epochCount
    1-10, batchSize 4-256, learningRateMultiplier 0.1-2, earlyStoppingThreshold 0-0.1, earlyStoppingPatience
    1-10.
  - Titan Text Lite and Express (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-titan-text.html):
    epochCount 1-10, batchSize 1-64, learningRate 0-1, learningRateWarmupSteps 0-250.
  - Llama 3.1 and 3.2 (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama31.html,
    .../cm-hp-meta-llama32.html): epochCount 1-10, batchSize 1 (only), learningRate 5e-6 to 0.1. "The epochCount
    quota is adjustable" (3.1's page only): over 10 is a warning for Llama 3.1, an error for 3.2.

Where the kit is stricter than the documents (all cheap to fix, all of them would otherwise risk a job that
fails hours in): prompt/completion records may hold no other key; role names are exact lowercase; a content
block holds exactly one of text/image/video; empty or whitespace-only text is an error. Except for Llama 3.1
prompt/completion records (LENIENT_PROMPT_COMPLETION): there another key and an empty prompt or completion are
warnings, since AWS's table and AWS's own Llama validator accept them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from common.geographies import PROFILE_GEOGRAPHIES

# --- error kinds (stable names, used as keys in the report) -------------------------------------------------

INVALID_UTF8 = "invalid_utf8"
UTF8_BOM = "utf8_bom"
BLANK_LINE = "blank_line"
LINE_TOO_LONG = "line_too_long"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_KEY = "missing_key"
UNEXPECTED_KEY = "unexpected_key"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
ROLE_ORDER = "role_order"
EMPTY_TEXT = "empty_text"
RESERVED_STRING = "reserved_string"
UNSUPPORTED_CONTENT = "unsupported_content"
RECORD_TOO_LONG = "record_too_long"
TOO_FEW_RECORDS = "too_few_records"
TOO_MANY_RECORDS = "too_many_records"
FILE_TOO_LARGE = "file_too_large"
HYPERPARAMETER_UNKNOWN = "hyperparameter_unknown"
HYPERPARAMETER_NOT_STRING = "hyperparameter_not_string"
HYPERPARAMETER_INVALID = "hyperparameter_invalid"
HYPERPARAMETER_OUT_OF_RANGE = "hyperparameter_out_of_range"
VALIDATION_NOT_ALLOWED = "validation_not_allowed"
INVALID_S3_URI = "invalid_s3_uri"
# Warnings: reported, never make a dataset invalid.
TOKENS_NEAR_LIMIT = "tokens_near_limit"
MODEL_LEGACY = "model_legacy"
# Over a default quota AWS marks adjustable in Service Quotas (a record count, a hyperparameter's maximum): Bedrock
# refuses the job if the account's value is lower; the message names the quota to raise.
OVER_DEFAULT_QUOTA = "over_default_quota"
# Llama 3.1 prompt/completion records only (LENIENT_PROMPT_COMPLETION): what other formats refuse as
# unexpected_key and empty_text.
EXTRA_KEY = "extra_key"
EMPTY_PROMPT_OR_COMPLETION = "empty_prompt_or_completion"

WARNING_KINDS = frozenset({TOKENS_NEAR_LIMIT, MODEL_LEGACY, OVER_DEFAULT_QUOTA, EXTRA_KEY, EMPTY_PROMPT_OR_COMPLETION})

# --- families and shapes ------------------------------------------------------------------------------------

NOVA = "amazon-nova"
NOVA_2 = "amazon-nova-2"
CLAUDE_3_HAIKU = "anthropic-claude-3-haiku"
LLAMA_3_1 = "meta-llama-3.1"
LLAMA_3_2 = "meta-llama-3.2"
TITAN_TEXT = "amazon-titan-text"

CONVERSE = "converse"
CLAUDE = "claude"
PROMPT_COMPLETION = "prompt_completion"
PRE_TRAINING = "pre_training"  # continued pre-training: {"input": text} per line
DISTILLATION_PROMPTS = "distillation_prompts"  # Converse prompts, the assistant answer optional
RFT_CHAT = "rft_chat"  # OpenAI chat-completion messages plus reference_answer
SHAPES = (CONVERSE, CLAUDE, PROMPT_COMPLETION, PRE_TRAINING, DISTILLATION_PROMPTS, RFT_CHAT)
CONVERSATION_SCHEMA = "bedrock-conversation-2024"

# Token estimates. The documents size datasets at "token quota x 6" characters per sample
# (https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-prepare.html): a planning figure,
# not a limit. Records cut at that rate failed a real Titan job ("Maximum input token count 4919 exceeds limit
# of 4096", aws-samples/amazon-bedrock-workshop issue 224): English runs about 4 characters per token, JSON,
# code, digits and non-Latin scripts fewer. No family's tokenizer ships offline with this package (the Nova,
# Titan and Claude tokenizers are not public; Llama's needs a gated download), so tokens are estimated:
#   - conservative estimate = characters / 3 (rounded up), about what JSON- and code-heavy text costs
#     (Titan Text: / 2, TITAN_CHARS_PER_TOKEN); a record whose estimate is within TOKEN_WARNING_MARGIN of the
#     quota gets a warning naming the estimate;
#   - a record is an error only when it is over the quota even at the documents' 6 characters per token,
#     i.e. certainly too long.
PLANNING_CHARS_PER_TOKEN = 6
CONSERVATIVE_CHARS_PER_TOKEN = 3
# Titan Text (fine-tuning and continued pre-training): records of 10,000 characters still failed a continued
# pre-training job over its 4,096 tokens ("I tried to reduce the chunksize to 10000 even though getting the same
# error after training about 2 hours", https://github.com/aws-samples/amazon-bedrock-workshop/issues/224), so
# Titan's tokenizer has spent more than 4,096 tokens on at most 10,000 characters: under 2.5 characters per token,
# well under the 3 above. Titan's warning band is derived from 2 characters per token (4,096 tokens: a warning
# over 7,372 characters). The other families keep 3: no job of theirs is reported failing below it, and 2 would
# warn about every Llama 3.1 record over 28,800 characters, about 7,200 tokens of English prose against its 16,000.
# A warning only: the error stays at 6 characters per token.
TITAN_CHARS_PER_TOKEN = 2
TOKEN_WARNING_MARGIN = 0.9


def estimate_chars_per_token(family: str) -> int:
    """Characters per token of a family's conservative estimate, the one its warning band is derived from."""
    return TITAN_CHARS_PER_TOKEN if family == TITAN_TEXT else CONSERVATIVE_CHARS_PER_TOKEN


NO_LIMIT_BATCH = 1 << 30
GB = 1000**3
MB = 1000**2
NOVA_RESERVED = ("System:", "User:", "Bot:", "Assistant:", "Thought:", "[EOS]", "<image>", "<video>", "<unk>")
NOVA_IMAGE_FORMATS = frozenset({"jpeg", "png", "gif", "webp"})
NOVA_VIDEO_FORMATS = frozenset({"mov", "mkv", "mp4", "webm"})
LLAMA_IMAGE_FORMATS = frozenset({"gif", "jpeg", "png", "webp"})
MAX_IMAGES_PER_TURN = 10
ROLES = ("user", "assistant")
SHOWN_CHARS = 80
MAX_PROBLEMS_PER_RECORD = 10
MAX_CLEAN_SYSTEMS = 256  # distinct clean system texts remembered
MAX_CLEAN_CHARS = 4 << 20  # ... and at most this many characters of them (memory stays bounded)

Problem = tuple[str, str]  # (error kind, message)

# Customization types: CreateModelCustomizationJob's customizationType enum (the botocore service model of
# bedrock 2023-04-20 also lists IMPORTED, which is Custom Model Import's and not a job the kit starts).
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_CreateModelCustomizationJob.html
FINE_TUNING = "FINE_TUNING"
CONTINUED_PRE_TRAINING = "CONTINUED_PRE_TRAINING"
DISTILLATION = "DISTILLATION"
REINFORCEMENT_FINE_TUNING = "REINFORCEMENT_FINE_TUNING"
CUSTOMIZATION_TYPES = (FINE_TUNING, CONTINUED_PRE_TRAINING, DISTILLATION, REINFORCEMENT_FINE_TUNING)

# Where each rule is documented (named in every message about it).
DOC_PREPARE = "https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-prepare.html"
DOC_NOVA_FT = "https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html"
DOC_NOVA_2_FT = "https://docs.aws.amazon.com/bedrock/latest/userguide/nova-2-sft-data-prep.html"
DOC_DISTILLATION = "https://docs.aws.amazon.com/bedrock/latest/userguide/distillation-data-prep-option-1.html"
DOC_DISTILLATION_MODELS = "https://docs.aws.amazon.com/nova/latest/userguide/customization.html"
DOC_RFT = "https://docs.aws.amazon.com/bedrock/latest/userguide/rft-prepare-data.html"
DOC_RFT_HP = "https://docs.aws.amazon.com/bedrock/latest/APIReference/API_RFTHyperParameters.html"
DOC_SUPPORTED = "https://docs.aws.amazon.com/bedrock/latest/userguide/custom-model-fine-tuning.html"
# The lifecycle policy of models launched before 2026-09-07, every base model here; model-lifecycle.html now covers
# only later launches.
DOC_LIFECYCLE = "https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle-legacy.html"
DOC_ON_DEMAND = "https://docs.aws.amazon.com/bedrock/latest/userguide/deploy-custom-model-on-demand.html"
DOC_CLAUDE = "https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-anth-claude-3.html"
DOC_S3_URI = "https://docs.aws.amazon.com/bedrock/latest/APIReference/API_TrainingDataConfig.html"

ACTIVE = "ACTIVE"
LEGACY = "LEGACY"


@dataclass(frozen=True)
class Lifecycle:
    """A model's Bedrock lifecycle state (DOC_LIFECYCLE):
    a LEGACY model is warned about, one past its end-of-life date is refused."""

    status: str = ACTIVE
    end_of_life: date | None = None
    source: str = DOC_LIFECYCLE
    note: str = ""

    def problem(self, name: str, today: date | None = None) -> tuple[str, str] | None:
        """(kind, message) about using this model today: 'refused' past its EOL date, MODEL_LEGACY before it."""
        today = today or datetime.now(UTC).date()
        if self.end_of_life is not None and today >= self.end_of_life:
            return (
                "refused",
                f"{name} reached its end of life on {self.end_of_life.isoformat()} ({self.source}); "
                "choose an active model.",
            )
        if self.status == LEGACY:
            when = (
                f"its end of life is {self.end_of_life.isoformat()}"
                if self.end_of_life
                else "no end-of-life date is published yet"
            )
            extra = f" {self.note}" if self.note else ""
            return (MODEL_LEGACY, f"{name} is a legacy model: {when} ({self.source}).{extra} Plan to move off it.")
        return None


class UnsupportedBaseModel(ValueError):
    """The base model id is not one the validator knows how to check."""


class UnsupportedCustomizationType(ValueError):
    """The base model does not offer the requested customization type (or the distillation teacher is not
    paired with it)."""


@dataclass(frozen=True)
class HyperparameterSpec:
    name: str
    integer: bool
    minimum: float
    maximum: float
    default: str | None = None  # the service's default where the documents give one
    choices: tuple[str, ...] = ()  # an enumerated value (minimum/maximum unused)
    # The maximum is a default quota AWS marks adjustable in Service Quotas: a value over it is a warning
    # (OVER_DEFAULT_QUOTA, quota_warnings), not an error.
    adjustable: bool = False

    def describe(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        kind = "an integer" if self.integer else "a number"
        if self.maximum == math.inf:
            return f"{kind} of at least {_number(self.minimum)}"
        if self.adjustable:
            return (
                f"{kind} from {_number(self.minimum)}, at most {_number(self.maximum)} by default "
                "(a quota adjustable in Service Quotas: over it is a warning)"
            )
        return f"{kind} from {_number(self.minimum)} to {_number(self.maximum)}"


@dataclass(frozen=True)
class Limits:
    """Record-count and file-size limits; None means no documented limit (not enforced)."""

    min_training_records: int = 1
    max_training_records: int | None = None
    max_validation_records: int | None = None
    min_total_records: int | None = None
    max_total_records: int | None = None
    max_training_bytes: int | None = None
    max_validation_bytes: int | None = None
    # max_total_records is a default quota AWS marks adjustable ("Sum of training and validation records" in Service
    # Quotas): over it is a warning naming the quota (OVER_DEFAULT_QUOTA), not an error.
    max_total_adjustable: bool = False
    # Where max_training_records and max_validation_records come from when the type's own page does not state them.
    record_caps_source: str = ""

    def to_dict(self) -> dict[str, int]:
        names = {
            "minTrainingRecords": self.min_training_records,
            "maxTrainingRecords": self.max_training_records,
            "maxValidationRecords": self.max_validation_records,
            "minTotalRecords": self.min_total_records,
            "maxTotalRecords": self.max_total_records,
            "maxTrainingBytes": self.max_training_bytes,
            "maxValidationBytes": self.max_validation_bytes,
        }
        return {name: value for name, value in names.items() if value is not None}


@dataclass(frozen=True)
class TypeSpec:
    """How one customization type works for one base model: data shape, limits, hyperparameters, validation set."""

    shape: str
    limits: Limits
    hyperparameters: tuple[HyperparameterSpec, ...]
    doc: str
    # ((largest batch size, token quota), ...) in increasing batch-size order; empty = no per-record limit.
    token_quota: tuple[tuple[int, int], ...] = ()
    validation_allowed: bool = True
    reserved: tuple[str, ...] = ()
    hyperparameter_doc: str = ""

    def max_record_tokens(self, batch_size: int = 1) -> int | None:
        return next((tokens for largest, tokens in self.token_quota if batch_size <= largest), None)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the validator needs to know about one customizable base model.

    The top-level shape/limits/hyperparameters/token_quota/reserved describe FINE_TUNING (or the model's only
    type); ``other_types`` holds the TypeSpec of every other type in ``customization_types``.
    """

    base_model_id: str
    family: str
    shape: str
    limits: Limits
    hyperparameters: tuple[HyperparameterSpec, ...]
    # ((largest batch size, token quota), ...) in increasing batch-size order; empty = no per-record limit.
    token_quota: tuple[tuple[int, int], ...] = ()
    reserved: tuple[str, ...] = ()
    image_formats: frozenset[str] = frozenset()
    video_formats: frozenset[str] = frozenset()
    notes: tuple[str, ...] = field(default=())
    # CreateModelCustomizationJob customizationType values Bedrock offers for this base model.
    customization_types: tuple[str, ...] = (FINE_TUNING,)
    # Regions where Bedrock offers customization of this base model, and whether a custom model of it can be
    # served by an on-demand custom model deployment (Amazon Nova; the others need Provisioned Throughput).
    # https://docs.aws.amazon.com/bedrock/latest/userguide/custom-model-supported.html
    regions: tuple[str, ...] = ("us-west-2",)
    on_demand_deploy: bool = False
    on_demand_source: str = DOC_ON_DEMAND  # where on-demand serving of this model is stated (the reference links it)
    name: str = ""
    lifecycle: Lifecycle = Lifecycle()
    doc: str = DOC_PREPARE  # where the fine-tuning format is documented
    hyperparameter_doc: str = ""
    validation_allowed: bool = True  # for fine-tuning
    reasoning: bool = False  # assistant turns may hold reasoningContent blocks (Nova 2)
    other_types: tuple[tuple[str, TypeSpec], ...] = ()

    def for_type(self, customization_type: str = FINE_TUNING) -> TypeSpec:
        """The TypeSpec of one of this model's customization types (KeyError for a type it does not offer)."""
        if customization_type not in self.customization_types:
            raise KeyError(customization_type)
        for kind, spec in self.other_types:
            if kind == customization_type:
                return spec
        return TypeSpec(
            shape=self.shape,
            limits=self.limits,
            hyperparameters=self.hyperparameters,
            doc=self.doc,
            token_quota=self.token_quota,
            validation_allowed=self.validation_allowed,
            reserved=self.reserved,
            hyperparameter_doc=self.hyperparameter_doc,
        )

    def hyperparameter(self, name: str) -> HyperparameterSpec | None:
        return next((spec for spec in self.hyperparameters if spec.name == name), None)

    def max_record_chars(self, batch_size: int = 1) -> int | None:
        """Characters of one record that are certainly over the token quota (quota x 6, the planning rate)."""
        tokens = self.max_record_tokens(batch_size)
        return tokens * PLANNING_CHARS_PER_TOKEN if tokens is not None else None

    def max_record_tokens(self, batch_size: int = 1) -> int | None:
        return next((tokens for largest, tokens in self.token_quota if batch_size <= largest), None)


def _hp(name: str, integer: bool, minimum: float, maximum: float, default: str | None = None) -> HyperparameterSpec:
    return HyperparameterSpec(name, integer, minimum, maximum, default)


# Amazon Nova (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html).
_NOVA_HP = (
    _hp("epochCount", True, 1, 5, "2"),
    _hp("learningRate", False, 1e-6, 1e-4, "0.00001"),
    _hp("learningRateWarmupSteps", True, 0, 100, "10"),
)
# Amazon Nova 2 Lite: AWS publishes no Bedrock hyperparameter table for it (cm-hp-nova-mm.html names the first Nova
# models only), so the first Nova's names and ranges, plus batchSize: AWS's own end-to-end sample fine-tunes Nova 2
# Lite on Bedrock with epochCount, batchSize and learningRate and its job completed (aws-samples/amazon-nova-samples,
# customization/Nova_2.0/bedrock/02-e2e-multimodal-sft/03_finetune_on_bedrock.ipynb, batchSize "1"). No maximum is
# documented; Bedrock checks the value when the job is created, before any training.
DOC_NOVA_2_HP = (
    "https://github.com/aws-samples/amazon-nova-samples/blob/9504748b686c1fffe2be7c0de521856f1ea44b34/"
    "customization/Nova_2.0/bedrock/02-e2e-multimodal-sft/03_finetune_on_bedrock.ipynb"
)
_NOVA_2_HP = (*_NOVA_HP, _hp("batchSize", True, 1, math.inf))
# https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-anth-claude-3.html
_CLAUDE_HP = (
    _hp("epochCount", True, 1, 10, "2"),
    _hp("batchSize", True, 4, 256, "32"),
    _hp("learningRateMultiplier", False, 0.1, 2, "1"),
    _hp("earlyStoppingThreshold", False, 0, 0.1, "0.001"),
    _hp("earlyStoppingPatience", True, 1, 10, "2"),
)
# https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-titan-text.html (fine-tuning and continued
# pre-training take the same names and ranges)
_TITAN_HP = (
    _hp("epochCount", True, 1, 10, "5"),
    _hp("batchSize", True, 1, 64, "1"),
    _hp("learningRate", False, 0, 1, "0.00001"),
    _hp("learningRateWarmupSteps", True, 0, 250, "5"),
)
# https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama32.html (Llama 3.2)
_LLAMA_HP = (
    _hp("epochCount", True, 1, 10, "5"),
    _hp("batchSize", True, 1, 1, "1"),
    _hp("learningRate", False, 5e-6, 0.1, "0.0001"),
)
# Llama 3.1 takes the same, but "The epochCount quota is adjustable" (DOC_LLAMA_31_HP, a note the 3.2 page lacks):
# over 10 epochs is a warning naming the quota, not an error.
DOC_LLAMA_31_HP = "https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama31.html"
_LLAMA_31_HP = (
    HyperparameterSpec("epochCount", True, 1, 10, "5", adjustable=True),
    *_LLAMA_HP[1:],
)
# Reinforcement fine-tuning: rftConfig.hyperParameters, typed in the API (integers, a float, an enum); the kit
# takes them as strings like every other type and the pipeline converts them. Ranges from the API reference
# (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_RFTHyperParameters.html, the same in botocore's
# bedrock 2023-04-20 service model); maxPromptLength and inferenceMaxTokens have no documented range beyond their
# type, a 32-bit integer (botocore: "integer"), so a larger value is refused here, not at the create.
INT32_MAX = 2**31 - 1
_RFT_HP = (
    _hp("epochCount", True, 1, 50),
    _hp("batchSize", True, 16, 512),
    _hp("learningRate", False, 1e-7, 1e-3),
    _hp("maxPromptLength", True, 1, INT32_MAX),
    _hp("trainingSamplePerPrompt", True, 2, 16),
    _hp("inferenceMaxTokens", True, 1, INT32_MAX),
    HyperparameterSpec("reasoningEffort", False, 0, 0, None, ("low", "medium", "high")),
    _hp("evalInterval", True, 1, 100),
)

_NOVA_LIMITS = Limits(min_training_records=8, max_total_records=20_000)
# Nova 2 Lite fine-tuning: 200 to 20,000 records (NOVA_2_0_LITE_SAMPLE_BOUNDS["SFT"] in AWS's validator,
# aws-samples/amazon-nova-samples .../dataset_validation/nova_ft_dataset_validator.py, the script the Nova 2 guide
# recommends: https://docs.aws.amazon.com/nova/latest/nova2-userguide/nova-data-preparation.html). Its RFT bound,
# 100 to 20,000, is _RFT_LIMITS below.
_NOVA_2_SFT_LIMITS = Limits(min_training_records=200, max_total_records=20_000)
_CLAUDE_LIMITS = Limits(
    min_training_records=32,
    max_training_records=10_000,
    max_validation_records=1_000,
    max_total_records=10_000,
    max_training_bytes=10 * GB,
    max_validation_bytes=1 * GB,
)
# Llama 3.1 (DOC_PREPARE, "Meta Llama 3.1"): "Sum of training and validation records | 100 | 10,000 (adjustable
# using service quotas)": the 10,000 is a warning naming the quota, the 100 an error.
_LLAMA_31_LIMITS = Limits(min_total_records=100, max_total_records=10_000, max_total_adjustable=True)
# Llama 3.2: DOC_PREPARE states only the 100 to 10,000 total; the per-file caps of 10,000 training and 1,000
# validation records are AWS's sample Llama validator's (MAX_TRAIN_RECORDS, MAX_VALIDATION_RECORDS).
LLAMA_VALIDATOR_LIMITS = (
    "https://github.com/aws-samples/amazon-bedrock-workshop/blob/25f2be71ffbbb604b5dd1359780ddadef8d956ba/"
    "03_Model_customization/bedrock-fine-tuning/meta-llama/dataset_validation/utils/constants.py"
)
_LLAMA_32_LIMITS = Limits(
    max_training_records=10_000,
    max_validation_records=1_000,
    min_total_records=100,
    max_total_records=10_000,
    record_caps_source=LLAMA_VALIDATOR_LIMITS,
)
_TITAN_LIMITS = Limits(max_training_bytes=1 * GB, max_validation_bytes=100 * MB)
# Tokens per record by batch size, the same for fine-tuning and continued pre-training (the requirements page
# named in _titan_cpt).
_TITAN_LITE_QUOTA = ((2, 4_096), (NO_LIMIT_BATCH, 2_048))
_TITAN_EXPRESS_QUOTA = ((1, 4_096), (NO_LIMIT_BATCH, 2_048))
# Reinforcement fine-tuning (rft-prepare-data.html): "A minimum of 100 records in training dataset" and "a
# maximum of 20,000 prompts" (every prompt given to the job, so training and validation together).
_RFT_LIMITS = Limits(min_training_records=100, max_total_records=20_000)

# Reinforcement fine-tuning of Amazon Nova 2 Lite (https://docs.aws.amazon.com/bedrock/latest/userguide/rft-prepare-data.html):
# prompts in the OpenAI chat-completion format with a reference_answer; a Lambda reward function (or a model as
# judge, which the console turns into a Lambda) scores the responses.
# Its messages are held to Nova's reserved strings too: AWS's Nova dataset validator checks every RFT message
# (aws-samples/amazon-nova-samples nova_ft_dataset_validator.py, RFTMessage), and "if a user prompt or system prompt
# ... have these keywords anywhere in their prompt, the training job will fail due to data issues"
# (https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html).
_RFT = TypeSpec(
    shape=RFT_CHAT,
    limits=_RFT_LIMITS,
    hyperparameters=_RFT_HP,
    doc=DOC_RFT,
    hyperparameter_doc=DOC_RFT_HP,
    reserved=NOVA_RESERVED,
)
# Distillation into an Amazon Nova student (https://docs.aws.amazon.com/bedrock/latest/userguide/distillation-data-prep-option-1.html):
# prompts in the Converse format with schemaVersion "bedrock-conversation-2024", the assistant answer optional;
# text only ("support only the text-to-text modality", distillation-prepare-datasets.html); Nova students take
# multi-turn conversations. The job takes no hyperparameters in the kit's reading of the documents. Dataset
# limits: prompts, or prompt-response pairs, 100 to 15K
# (https://docs.aws.amazon.com/nova/latest/userguide/custom-distill-prepare.html).
_DISTILLATION_LIMITS = Limits(min_training_records=100, max_total_records=15_000)
# The student is a Nova model trained on these prompts: Nova's reserved keywords fail its training job as they fail
# fine-tuning ("the training job will fail due to data issues",
# https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html).
_DISTILLATION = TypeSpec(
    shape=DISTILLATION_PROMPTS,
    limits=_DISTILLATION_LIMITS,
    hyperparameters=(),
    doc=DOC_DISTILLATION,
    reserved=NOVA_RESERVED,
)


def _titan_cpt(quota: tuple[tuple[int, int], ...]) -> TypeSpec:
    """Continued pre-training of a Titan Text model: one {"input": text} per line (model-customization-prepare.html).

    https://docs.aws.amazon.com/bedrock/latest/userguide/model-training-validation-requirements.html gives continued
    pre-training the model's fine-tuning token quota per record (a longer record fails the job hours in, "Maximum
    input token count ... exceeds limit of 4096") and a 10 GB training file, against fine-tuning's 1 GB; the
    validation file stays at 100 MB.
    """
    return TypeSpec(
        shape=PRE_TRAINING,
        limits=Limits(max_training_bytes=10 * GB, max_validation_bytes=100 * MB),
        hyperparameters=_TITAN_HP,
        doc=DOC_PREPARE,
        token_quota=quota,
        hyperparameter_doc="https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-titan-text.html",
    )


# Titan Text G1 - Express and Lite: the current fine-tuning table (custom-model-fine-tuning.html) no longer
# lists them; earlier versions of the page (custom-model-supported.html) did, with continued pre-training. A custom
# Titan model is served by Provisioned Throughput alone, and "You can't create a new Provisioned Throughput for a
# model in the Legacy state" (DOC_LIFECYCLE).
_TITAN_LIFECYCLE = Lifecycle(
    LEGACY,
    None,
    DOC_SUPPORTED,
    "Bedrock's current fine-tuning table no longer lists it; a job may be refused, and so may the Provisioned "
    "Throughput that serves its custom model (none can be made for a model in the Legacy state).",
)


def _nova(model_id: str, name: str, media: bool, student: bool) -> ModelSpec:
    return ModelSpec(
        base_model_id=model_id,
        family=NOVA,
        shape=CONVERSE,
        limits=_NOVA_LIMITS,
        hyperparameters=_NOVA_HP,
        reserved=NOVA_RESERVED,
        image_formats=NOVA_IMAGE_FORMATS if media else frozenset(),
        video_formats=NOVA_VIDEO_FORMATS if media else frozenset(),
        regions=("us-east-1",),
        on_demand_deploy=True,
        name=name,
        doc=DOC_NOVA_FT,
        hyperparameter_doc="https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html",
        customization_types=(FINE_TUNING, DISTILLATION) if student else (FINE_TUNING,),
        other_types=((DISTILLATION, _DISTILLATION),) if student else (),
    )


# Llama 3.2 (every size) is Legacy with its end of life on July 7, 2026: "Model EOL date: July 7, 2026 ... Model
# lifecycle: Legacy" (https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-meta-llama-3-2-90b-instruct.html;
# the model lifecycle page gives the same date for the 1B, 3B and 11B models). Refused from that day.
_LLAMA_32_EOL = date(2026, 7, 7)


def _llama32(model_id: str, name: str, vision: bool, tokens: int, card: str = DOC_LIFECYCLE) -> ModelSpec:
    return ModelSpec(
        base_model_id=model_id,
        family=LLAMA_3_2,
        shape=CONVERSE,
        limits=_LLAMA_32_LIMITS,
        hyperparameters=_LLAMA_HP,
        token_quota=((NO_LIMIT_BATCH, tokens),),
        image_formats=LLAMA_IMAGE_FORMATS if vision else frozenset(),
        notes=("Images count roughly 1,601 to 6,404 tokens each; the token estimate counts text only.",),
        name=name,
        hyperparameter_doc="https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama32.html",
        lifecycle=Lifecycle(LEGACY, _LLAMA_32_EOL, card),
    )


def _prompt_completion(
    model_id: str,
    name: str,
    family: str,
    limits: Limits,
    hp: tuple[HyperparameterSpec, ...],
    quota: tuple[tuple[int, int], ...],
    customization_types: tuple[str, ...] = (FINE_TUNING,),
    regions: tuple[str, ...] = ("us-west-2",),
    lifecycle: Lifecycle = Lifecycle(),
    other_types: tuple[tuple[str, TypeSpec], ...] = (),
    hyperparameter_doc: str = "",
) -> ModelSpec:
    return ModelSpec(
        base_model_id=model_id,
        family=family,
        shape=PROMPT_COMPLETION,
        limits=limits,
        hyperparameters=hp,
        token_quota=quota,
        customization_types=customization_types,
        regions=regions,
        name=name,
        lifecycle=lifecycle,
        other_types=other_types,
        hyperparameter_doc=hyperparameter_doc,
    )


# The one table of customizable base models. Ids, regions and the models listed come from the fine-tuning
# table (https://docs.aws.amazon.com/bedrock/latest/userguide/custom-model-fine-tuning.html, read November
# 2026); image-generation and embedding models on it (Nova Canvas, Titan Image Generator, Titan Multimodal
# Embeddings) take image datasets the kit does not build and are left out.
MODELS: dict[str, ModelSpec] = {
    spec.base_model_id: spec
    for spec in (
        _nova("amazon.nova-micro-v1:0:128k", "Amazon Nova Micro", media=False, student=True),
        _nova("amazon.nova-lite-v1:0:300k", "Amazon Nova Lite", media=True, student=True),
        _nova("amazon.nova-pro-v1:0:300k", "Amazon Nova Pro", media=True, student=True),
        # Amazon Nova 2 Lite (nova-2-sft-data-prep.html): the Nova Converse format plus reasoningContent in
        # assistant turns; images png/jpeg/gif, videos mov/mkv/mp4; no tool use; "Providing a validation set
        # might be supported through the UI but will not be supported during SFT training". Reinforcement
        # fine-tuning (rft-nova-models.html). us-east-1 only.
        ModelSpec(
            base_model_id="amazon.nova-2-lite-v1:0:256k",
            family=NOVA_2,
            shape=CONVERSE,
            limits=_NOVA_2_SFT_LIMITS,
            hyperparameters=_NOVA_2_HP,
            reserved=NOVA_RESERVED,
            image_formats=frozenset({"png", "jpeg", "gif"}),
            video_formats=frozenset({"mov", "mkv", "mp4"}),
            regions=("us-east-1",),
            # The on-demand deployment pages (deploy-custom-model-on-demand.html) still list only the first Nova
            # models, but custom Nova 2 Lite models are served on demand in practice (re:Post question
            # QUlMCRME6TRkK6XQoBSjP4pw: a deployment created and queried); a refusal ends the run in DeployFailed.
            on_demand_deploy=True,
            on_demand_source="https://repost.aws/questions/QUlMCRME6TRkK6XQoBSjP4pw",
            name="Amazon Nova 2 Lite",
            doc=DOC_NOVA_2_FT,
            hyperparameter_doc=DOC_NOVA_2_HP,
            validation_allowed=False,
            reasoning=True,
            customization_types=(FINE_TUNING, REINFORCEMENT_FINE_TUNING),
            other_types=((REINFORCEMENT_FINE_TUNING, _RFT),),
        ),
        ModelSpec(
            base_model_id="anthropic.claude-3-haiku-20240307-v1:0:200k",
            family=CLAUDE_3_HAIKU,
            shape=CLAUDE,
            limits=_CLAUDE_LIMITS,
            hyperparameters=_CLAUDE_HP,
            token_quota=((NO_LIMIT_BATCH, 32_000),),
            name="Anthropic Claude 3 Haiku",
            hyperparameter_doc=DOC_CLAUDE,
            # "Model EOL date: September 10, 2026" in most Regions, us-west-2 (its only customization Region) among
            # them; so refused from that day.
            lifecycle=Lifecycle(
                LEGACY,
                date(2026, 9, 10),
                "https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-3-haiku.html",
            ),
        ),
        _prompt_completion(
            "meta.llama3-1-8b-instruct-v1:0:128k",
            "Meta Llama 3.1 8B Instruct",
            LLAMA_3_1,
            _LLAMA_31_LIMITS,
            _LLAMA_31_HP,
            ((NO_LIMIT_BATCH, 16_000),),
            hyperparameter_doc=DOC_LLAMA_31_HP,
        ),
        _prompt_completion(
            "meta.llama3-1-70b-instruct-v1:0:128k",
            "Meta Llama 3.1 70B Instruct",
            LLAMA_3_1,
            _LLAMA_31_LIMITS,
            _LLAMA_31_HP,
            ((NO_LIMIT_BATCH, 16_000),),
            hyperparameter_doc=DOC_LLAMA_31_HP,
        ),
        _llama32("meta.llama3-2-1b-instruct-v1:0:128k", "Meta Llama 3.2 1B Instruct", vision=False, tokens=16_000),
        _llama32("meta.llama3-2-3b-instruct-v1:0:128k", "Meta Llama 3.2 3B Instruct", vision=False, tokens=16_000),
        _llama32("meta.llama3-2-11b-instruct-v1:0:128k", "Meta Llama 3.2 11B Instruct", vision=True, tokens=16_000),
        _llama32(
            "meta.llama3-2-90b-instruct-v1:0:128k",
            "Meta Llama 3.2 90B Instruct",
            vision=True,
            tokens=10_000,
            card="https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-meta-llama-3-2-90b-instruct.html",
        ),
        _prompt_completion(
            "amazon.titan-text-lite-v1:0:4k",
            "Amazon Titan Text G1 - Lite",
            TITAN_TEXT,
            _TITAN_LIMITS,
            _TITAN_HP,
            _TITAN_LITE_QUOTA,
            (FINE_TUNING, CONTINUED_PRE_TRAINING),
            ("us-east-1", "us-west-2"),
            _TITAN_LIFECYCLE,
            ((CONTINUED_PRE_TRAINING, _titan_cpt(_TITAN_LITE_QUOTA)),),
        ),
        _prompt_completion(
            "amazon.titan-text-express-v1:0:8k",
            "Amazon Titan Text G1 - Express",
            TITAN_TEXT,
            _TITAN_LIMITS,
            _TITAN_HP,
            _TITAN_EXPRESS_QUOTA,
            (FINE_TUNING, CONTINUED_PRE_TRAINING),
            ("us-east-1", "us-west-2"),
            _TITAN_LIFECYCLE,
            ((CONTINUED_PRE_TRAINING, _titan_cpt(_TITAN_EXPRESS_QUOTA)),),
        ),
    )
}


@dataclass(frozen=True)
class Teacher:
    """A distillation teacher and the students Bedrock pairs with it."""

    model_id: str
    name: str
    students: tuple[str, ...]
    lifecycle: Lifecycle = Lifecycle()


# Distillation pairs (https://docs.aws.amazon.com/nova/latest/userguide/customization.html: Nova Premier is a
# teacher, Nova Pro teacher and student, Nova Lite and Micro students). Nova Premier is Legacy with its EOL on
# September 14, 2026 (https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-premier.html),
# so it is refused from then on. Anthropic and Meta pairs are not listed: the kit could not confirm the current
# pairs and their teachers' lifecycle against the documents (see the distillation models page,
# https://docs.aws.amazon.com/bedrock/latest/userguide/prequisites-model-distillation.html).
_NOVA_STUDENTS = ("amazon.nova-lite-v1:0:300k", "amazon.nova-micro-v1:0:128k")
TEACHERS: dict[str, Teacher] = {
    teacher.model_id: teacher
    for teacher in (
        Teacher(
            "amazon.nova-premier-v1:0",
            "Amazon Nova Premier",
            ("amazon.nova-pro-v1:0:300k", *_NOVA_STUDENTS),
            Lifecycle(
                LEGACY,
                date(2026, 9, 14),
                "https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-premier.html",
            ),
        ),
        Teacher("amazon.nova-pro-v1:0", "Amazon Nova Pro", _NOVA_STUDENTS),
    )
}
_GEO_PREFIX = re.compile(rf"^(?:{'|'.join(PROFILE_GEOGRAPHIES)})\.")

DEFAULT_BASE_MODEL = "amazon.nova-lite-v1:0:300k"
FOUNDATION_MODEL_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]*)::foundation-model/(?P<id>.+)$")


def resolve_model(base_model_id: str) -> ModelSpec:
    """The spec for a customization base model id (or its foundation-model ARN); UnsupportedBaseModel otherwise."""
    if not isinstance(base_model_id, str) or not base_model_id.strip():
        raise UnsupportedBaseModel("The base model id must be a non-empty string.")
    model_id = base_model_id.strip()
    arn = FOUNDATION_MODEL_ARN.fullmatch(model_id)
    if arn:
        model_id = arn.group("id")
    spec = MODELS.get(model_id)
    if spec is not None:
        return spec
    close = [known for known in MODELS if known.startswith(model_id + ":")]
    hint = (
        f" Did you mean '{close[0]}'? Customization base model ids carry a context-length suffix."
        if len(close) == 1
        else ""
    )
    raise UnsupportedBaseModel(f"Unsupported base model '{_shown(model_id)}'.{hint} Supported: {', '.join(MODELS)}.")


# The types the Level 3 pipeline runs end to end: every CreateModelCustomizationJob type the kit starts. The
# pipeline passes each type's own configuration: DISTILLATION its teacher (customizationConfig.
# distillationConfig) and prompts from S3 or the account's invocation logs, REINFORCEMENT_FINE_TUNING its
# reward function and typed hyperparameters (customizationConfig.rftConfig; rft_hyperparameters below).
PIPELINE_TYPES = CUSTOMIZATION_TYPES


def check_pipeline_type(customization_type: str) -> str | None:
    """None when the Level 3 pipeline can run this type; otherwise the message that says which it runs."""
    if customization_type in PIPELINE_TYPES:
        return None
    return (
        f"{customization_type} data can be checked (kit l3 validate), but the pipeline runs only "
        f"{', '.join(PIPELINE_TYPES)} so far"
    )


def check_customization_type(customization_type: Any, spec: ModelSpec) -> str | None:
    """None when the base model offers this customization type; otherwise the message that says what it offers."""
    if isinstance(customization_type, str) and customization_type in spec.customization_types:
        return None
    shown = _shown(customization_type) if isinstance(customization_type, str) else json_type(customization_type)
    if customization_type not in CUSTOMIZATION_TYPES:
        close = [kind for kind in CUSTOMIZATION_TYPES if isinstance(customization_type, str)
                 and kind == customization_type.strip().upper().replace("-", "_").replace(" ", "_")]  # fmt: skip
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (
            f"'{shown}' is not a customization type.{hint} Bedrock's types are {', '.join(CUSTOMIZATION_TYPES)} "
            f"(exact, upper case); {spec.base_model_id} offers {', '.join(spec.customization_types)}."
        )
    return f"'{shown}' is not offered for {spec.base_model_id}; it offers {', '.join(spec.customization_types)}."


def resolve_teacher(teacher_model_id: str) -> Teacher | None:
    """The distillation teacher for a model id, a cross-Region profile id (us.…) or an ARN of either; or None."""
    model_id = teacher_model_id.strip().rsplit("/", 1)[-1]
    return TEACHERS.get(model_id) or TEACHERS.get(_GEO_PREFIX.sub("", model_id))


def check_distillation_pair(teacher_model_id: Any, student: ModelSpec, today: date | None = None) -> str | None:
    """None when Bedrock pairs this teacher with the student and the teacher is not past its end of life."""
    if not isinstance(teacher_model_id, str) or not teacher_model_id.strip():
        return "A distillation job needs a teacher model id."
    teacher = resolve_teacher(teacher_model_id)
    if teacher is None:
        known = ", ".join(
            f"{t.model_id} (students: {', '.join(t.students)}"
            + (f"; end of life {t.lifecycle.end_of_life.isoformat()}" if t.lifecycle.end_of_life else "")
            + ")"
            for t in TEACHERS.values()
        )
        return (
            f"'{_shown(teacher_model_id)}' is not a distillation teacher the kit knows ({DOC_DISTILLATION_MODELS}); "
            f"known: {known}."
        )
    if student.base_model_id not in teacher.students:
        return (
            f"{teacher.name} does not teach {student.base_model_id}; its students are {', '.join(teacher.students)} "
            f"({DOC_DISTILLATION_MODELS})."
        )
    problem = teacher.lifecycle.problem(teacher.name, today)
    if problem is not None and problem[0] == "refused":
        return problem[1]
    return None


# --- hyperparameters ----------------------------------------------------------------------------------------

_INTEGER = re.compile(r"^[+-]?\d+$", re.ASCII)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", re.ASCII)


def check_hyperparameters(
    values: Mapping[str, Any], spec: ModelSpec, customization_type: str = FINE_TUNING
) -> tuple[list[dict[str, str]], dict[str, float]]:
    """(errors, parsed values) for the job's hyperParameters: known names, string values, numeric ranges."""
    errors: list[dict[str, str]] = []
    parsed: dict[str, float] = {}
    kind = spec.for_type(customization_type) if customization_type in spec.customization_types else spec.for_type()
    specs = {hp.name: hp for hp in kind.hyperparameters}
    allowed = ", ".join(specs) or "none (this customization type takes no hyperparameters)"
    where = f" ({kind.hyperparameter_doc})" if kind.hyperparameter_doc else ""
    for name, raw in values.items():
        hp = specs.get(name) if isinstance(name, str) else None
        if hp is None:
            message = (
                f"'{_shown(str(name))}' is not a hyperparameter of {spec.family} for {customization_type}. "
                f"Allowed: {allowed}{where}."
            )
            errors.append(_hp_error(HYPERPARAMETER_UNKNOWN, name, message))
            continue
        if hp.choices:
            if raw not in hp.choices:
                message = f"{name} = {_shown(_repr(raw))} is not allowed: {spec.family} takes {hp.describe()}{where}."
                errors.append(_hp_error(HYPERPARAMETER_INVALID, name, message))
            continue
        if not isinstance(raw, str):
            message = (
                f'{name} must be a string (Bedrock takes hyperparameters as strings), e.g. "{_number(hp.minimum)}"; '
                f"got {json_type(raw)} {_shown(_repr(raw))}."
            )
            errors.append(_hp_error(HYPERPARAMETER_NOT_STRING, name, message))
            continue
        pattern = _INTEGER if hp.integer else _NUMBER
        if not pattern.fullmatch(raw):
            # repr: spaces around the digits show (_shown alone folds them away, and " 2 " read as '2').
            message = f"{name} = {_shown(_repr(raw))} is not {'an integer' if hp.integer else 'a number'}."
            errors.append(_hp_error(HYPERPARAMETER_INVALID, name, message))
            continue
        value = float(raw)
        if value < hp.minimum or (value > hp.maximum and not hp.adjustable):  # over an adjustable one: quota_warnings
            message = f"{name} = {raw} is out of range: {spec.family} allows {hp.describe()}{where}."
            errors.append(_hp_error(HYPERPARAMETER_OUT_OF_RANGE, name, message))
            continue
        parsed[name] = value
    return errors, parsed


def quota_warnings(
    parsed: Mapping[str, float], spec: ModelSpec, customization_type: str = FINE_TUNING
) -> list[dict[str, str]]:
    """OVER_DEFAULT_QUOTA warnings for accepted hyperparameters (check_hyperparameters' parsed values) over a maximum
    AWS marks adjustable, each naming the quota to raise."""
    kind = spec.for_type(customization_type) if customization_type in spec.customization_types else spec.for_type()
    warnings: list[dict[str, str]] = []
    for hp in kind.hyperparameters:
        value = parsed.get(hp.name)
        if not hp.adjustable or value is None or value <= hp.maximum:
            continue
        where = f" ({kind.hyperparameter_doc})" if kind.hyperparameter_doc else ""
        message = (
            f"{hp.name} = {_number(value)} is over {spec.name or spec.base_model_id}'s default quota of "
            f"{_number(hp.maximum)}, which AWS marks adjustable{where}. Bedrock refuses the job unless the "
            f"account's value of that {hp.name} quota for {spec.name} "
            f"{_type_words(customization_type)} is at least {_number(value)}: raise it in Service Quotas "
            "(Amazon Bedrock) first."
        )
        warnings.append(_hp_error(OVER_DEFAULT_QUOTA, hp.name, message))
    return warnings


def record_quota_name(spec: ModelSpec, customization_type: str = FINE_TUNING) -> str:
    """The Service Quotas quota (Amazon Bedrock) that raises a model's adjustable training + validation record
    count, as the quotas are named (e.g. "(Model customization) Sum of training and validation records for a Titan
    Text G1 - Lite v1 Fine-tuning job", L-3B82104D); the model's words in it may differ slightly from the kit's."""
    return (
        f"(Model customization) Sum of training and validation records for a {spec.name or spec.base_model_id} "
        f"{_type_words(customization_type).capitalize()} job"
    )


_TYPE_WORDS = {
    FINE_TUNING: "fine-tuning",
    CONTINUED_PRE_TRAINING: "continued pre-training",
    DISTILLATION: "distillation",
    REINFORCEMENT_FINE_TUNING: "reinforcement fine-tuning",
}


def _type_words(customization_type: str) -> str:
    return _TYPE_WORDS.get(customization_type, customization_type)


def rft_hyperparameters(values: Mapping[str, str]) -> dict[str, int | float | str]:
    """rftConfig.hyperParameters as the pipeline's CreateModelCustomizationJob task sends them: the API's types
    (integers, a float, the reasoningEffort enum) from the strings the kit takes for every type, under the
    PascalCase member names Step Functions' SDK integration requires for a structure's members ("Parameters in
    Step Functions are expressed in PascalCase, even if the native service API is in camelCase": epochCount is
    refused, EpochCount is sent as epochCount). Call it on values check_hyperparameters accepted.
    https://docs.aws.amazon.com/bedrock/latest/APIReference/API_RFTHyperParameters.html
    https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html"""
    specs = {hp.name: hp for hp in _RFT_HP}
    typed: dict[str, int | float | str] = {}
    for name, raw in values.items():
        hp = specs[name]
        typed[name[:1].upper() + name[1:]] = raw if hp.choices else int(raw) if hp.integer else float(raw)
    return typed


def _hp_error(kind: str, name: Any, message: str) -> dict[str, str]:
    return {"kind": kind, "name": _shown(str(name)), "message": message}


# --- records ------------------------------------------------------------------------------------------------

_MISSING: Any = object()
_CONVERSE_KEYS = frozenset({"schemaVersion", "system", "messages"})
_CLAUDE_KEYS = frozenset({"system", "messages"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_PROMPT_KEYS = frozenset({"prompt", "completion"})
# Llama 3.1 prompt/completion records: DOC_PREPARE's "Meta Llama 3.1" table gives input and output tokens a minimum
# of 0, and AWS's own Llama dataset validator (aws-samples/amazon-bedrock-workshop, 03_Model_customization/
# bedrock-fine-tuning/meta-llama/dataset_validation/utils/schema.py, PROMPT_COMPLETION) requires the two string keys
# with no minLength and "additionalProperties": True. So another key (EXTRA_KEY) and an empty or blank prompt or
# completion (EMPTY_PROMPT_OR_COMPLETION) are warnings there; Titan keeps them errors (the kit's strictness, above).
LENIENT_PROMPT_COMPLETION = frozenset({LLAMA_3_1})
LENIENT_EXTRA_NOTE = (
    "A warning, not an error, for Llama 3.1: AWS's own Llama dataset validator accepts other keys, but the documents "
    "name only prompt and completion, so text under any other key may not be trained on."
)
LENIENT_EMPTY_NOTE = (
    f"A warning, not an error, for Llama 3.1: its documented minimum is 0 tokens ({DOC_PREPARE}); check that the "
    "record is what you meant to train on."
)
_BLOCK_KEYS = ("text", "image", "video")
_REASONING_KEY = "reasoningContent"
# Converse content blocks no customization format here takes (Nova 2: "Adding tool sections might cause your
# job to fail", nova-2-sft-data-prep.html).
_FOREIGN_BLOCKS = frozenset({"toolUse", "toolResult", "document", "cachePoint", "guardContent", "audio"})
_MEDIA_KEYS = frozenset({"format", "source"})
_MEDIA_OPTIONAL = frozenset({"bucketOwner"})
_RFT_ROLES = ("system", "user", "assistant")
_RFT_MESSAGE_KEYS = frozenset({"role", "content"})
# S3 URIs: a media block's S3Location (bedrock-runtime model: s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?,
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_S3Location.html) and the job's data
# locations (TrainingDataConfig s3Uri: every key segment [-!_*'().a-zA-Z0-9]+, DOC_S3_URI).
# A file: a key after the bucket, not a "folder" ending in / (Bedrock reads the one object the record names).
MEDIA_S3_URI = re.compile(r"^s3://[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9]/.*[^/\n]$")
DATA_S3_URI = re.compile(
    r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?$"
)
_KEY_SEGMENT_BAD = re.compile(r"[^-!_*'().a-zA-Z0-9]")
# Amazon Nova: dataset "file names can only consist of alphanumeric characters, underscores, hyphens, slashes, and
# dots" (DOC_NOVA_FT, item 3), and AWS's validator holds media S3 URI paths to the same set (is_valid_path,
# ^[\w\-/\.]+$, in aws-samples/amazon-nova-samples .../dataset_validation/nova_ft_dataset_validator.py). So
# ! * ' ( ) (which S3Uri allows) and spaces or '+' (which S3Location allows) are refused. ASCII letters only:
# the documents say alphanumeric, and a rename is cheaper than a job that fails on it.
NOVA_FAMILIES = frozenset({NOVA, NOVA_2})
NOVA_PATH_CHARS = "letters, digits and _ - / . only"
_NOVA_PATH_BAD = re.compile(r"[^A-Za-z0-9_\-/.]")


def check_data_key(bucket: str, key: str, family: str | None = None) -> str | None:
    """None when s3://bucket/key is a location CreateModelCustomizationJob accepts (and, for an Amazon Nova family,
    a file name Nova accepts); else what to rename."""
    uri = f"s3://{bucket}/{key}"
    if DATA_S3_URI.fullmatch(uri) and len(uri) <= 1024:
        bad = _NOVA_PATH_BAD.search(key) if family in NOVA_FAMILIES else None
        if bad is None:
            return None
        return (
            f"'{_shown(key)}' holds '{printable(bad.group())}', which Amazon Nova refuses in a dataset file name: "
            f"use {NOVA_PATH_CHARS} ({DOC_NOVA_FT})."
        )
    for segment in key.split("/"):
        if not segment:
            return (
                f"'{_shown(key)}' has an empty path segment ('//' or a leading '/'); Bedrock refuses it ({DOC_S3_URI})."
            )
        bad = _KEY_SEGMENT_BAD.search(segment)
        if bad:
            return (
                f"'{_shown(key)}' holds '{printable(bad.group())}', which Bedrock refuses in a data location: "
                f"use letters, digits and - ! _ * ' ( ) . only, e.g. rename spaces to '-' ({DOC_S3_URI})."
            )
    return f"s3://{_shown(bucket)}/{_shown(key)} is not a location Bedrock accepts ({DOC_S3_URI})."


_IMAGES, _VIDEOS = 1, 2


class RecordChecker:
    """Checks one parsed JSON record at a time against a model's shape; holds dataset-wide media state.

    ``check(record)`` returns the record's problems (an empty list when it is valid). The common, valid case
    runs a short fast path; messages naming the exact place (``messages[1].content[0].text``) are built
    only when something is wrong.
    """

    def __init__(
        self,
        spec: ModelSpec,
        max_record_tokens: int | None,
        customization_type: str = FINE_TUNING,
        media_prefix: str | None = None,
    ) -> None:
        self.spec = spec
        # s3://bucket/prefix/ that every image or video must sit under (None: not checked, e.g. a local file):
        # "the images or videos must be in the same Amazon S3 bucket as the dataset", and the service role must
        # be able to read them (DOC_NOVA_FT), which it may only under the datasets prefix.
        self.media_prefix = media_prefix
        self.kind = spec.for_type(customization_type)
        self.max_record_tokens = max_record_tokens
        # Text characters over which a record is certainly too long (the documents' 6 characters per token),
        # and over which its conservative estimate (3 per token, Titan's 2) comes within the warning margin.
        self.chars_per_token = estimate_chars_per_token(spec.family)
        self.error_chars = max_record_tokens * PLANNING_CHARS_PER_TOKEN if max_record_tokens else None
        self.warn_chars = (
            int(max_record_tokens * TOKEN_WARNING_MARGIN * self.chars_per_token) if max_record_tokens else None
        )
        # Llama 3.1 prompt/completion: other keys and an empty side are warnings (LENIENT_PROMPT_COMPLETION).
        self._lenient_prompts = spec.family in LENIENT_PROMPT_COMPLETION and self.kind.shape == PROMPT_COMPLETION
        self.max_record_chars = self.error_chars
        self._max_chars = self.warn_chars if self.warn_chars is not None else 1 << 62
        self._find_reserved = _reserved_finder(self.kind.reserved)
        # System texts already found clean: datasets repeat a few system prompts (tool-use sets repeat a handful of
        # multi-KB tool specifications), and a set lookup costs a hash, not a scan. Bounded: cleared when full.
        self._clean_systems: set[str] = set()
        self._clean_chars = 0
        self._media_seen = 0
        self._fixed_schema = self.kind.shape == DISTILLATION_PROMPTS
        self._prompt_only = self.kind.shape == DISTILLATION_PROMPTS  # may end on a user turn
        self._text_only = self.kind.shape == DISTILLATION_PROMPTS
        shapes: dict[str, Callable[[Any], list[Problem]]] = {
            CONVERSE: self._check_converse,
            DISTILLATION_PROMPTS: self._check_converse,
            CLAUDE: self._check_claude,
            PROMPT_COMPLETION: self._check_prompt_completion,
            PRE_TRAINING: self._check_pre_training,
            RFT_CHAT: self._check_rft,
        }
        self.check: Callable[[Any], list[Problem]] = shapes[self.kind.shape]

    # -- shapes --

    def _check_converse(self, record: Any) -> list[Problem]:
        if type(record) is not dict:
            return [_not_an_object(record)]
        problems: list[Problem] = []
        if not record.keys() <= _CONVERSE_KEYS:
            problems.append(_unexpected(record.keys() - _CONVERSE_KEYS, "a record", _CONVERSE_KEYS))
        version = record.get("schemaVersion", _MISSING)
        if version is not _MISSING and type(version) is not str:
            problems.append((WRONG_TYPE, f"schemaVersion must be a string, got {json_type(version)}."))
        elif self._fixed_schema and version != CONVERSATION_SCHEMA:
            got = "missing" if version is _MISSING else f"'{_shown(version)}'"
            problems.append(
                (
                    INVALID_VALUE,
                    f'schemaVersion is {got}; this format requires "{CONVERSATION_SCHEMA}" ({self.kind.doc}).',
                )
            )
        chars = 0
        system = record.get("system", _MISSING)
        if system is not _MISSING:
            chars += self._converse_system(system, problems)
        messages = record.get("messages", _MISSING)
        if type(messages) is list:
            chars += self._converse_messages(messages, problems)
        elif messages is _MISSING:
            problems.append((MISSING_KEY, "The record has no 'messages' key."))
        else:
            problems.append((WRONG_TYPE, f"messages must be a list, got {json_type(messages)}."))
        if chars > self._max_chars or problems:
            self._finish(chars, problems)
        return problems

    def _check_claude(self, record: Any) -> list[Problem]:
        if type(record) is not dict:
            return [_not_an_object(record)]
        problems: list[Problem] = []
        if not record.keys() <= _CLAUDE_KEYS:
            problems.append(_unexpected(record.keys() - _CLAUDE_KEYS, "a record", _CLAUDE_KEYS))
        chars = 0
        system = record.get("system", _MISSING)
        if type(system) is str:
            chars += len(system)
        elif system is not _MISSING:
            problems.append((WRONG_TYPE, f"system must be a string, got {json_type(system)}."))
        messages = record.get("messages", _MISSING)
        if type(messages) is list:
            count = len(messages)
            if count < 2 or count & 1:
                _check_turn_count(count, problems)
            for index, message in enumerate(messages):
                if type(message) is dict and len(message) == 2 and message.get("role") == ROLES[index & 1]:
                    content = message.get("content", _MISSING)
                else:
                    content = _MISSING
                if content is _MISSING:
                    content = _diagnose_message(message, index, problems)
                    if content is _MISSING:
                        continue
                if type(content) is str and content and not content.isspace():
                    chars += len(content)
                elif type(content) is str:
                    problems.append((EMPTY_TEXT, f"messages[{index}].content is empty."))
                else:
                    got = json_type(content)
                    problems.append((WRONG_TYPE, f"messages[{index}].content must be a string, got {got}."))
        elif messages is _MISSING:
            problems.append((MISSING_KEY, "The record has no 'messages' key."))
        else:
            problems.append((WRONG_TYPE, f"messages must be a list, got {json_type(messages)}."))
        if chars > self._max_chars or problems:
            self._finish(chars, problems)
        return problems

    def _check_prompt_completion(self, record: Any) -> list[Problem]:
        if type(record) is not dict:
            return [_not_an_object(record)]
        problems: list[Problem] = []
        if record.keys() != _PROMPT_KEYS:
            if not record.keys() <= _PROMPT_KEYS:
                extra = _unexpected(record.keys() - _PROMPT_KEYS, "a record", _PROMPT_KEYS)
                if self._lenient_prompts:
                    extra = (EXTRA_KEY, f"{extra[1]} {LENIENT_EXTRA_NOTE}")
                problems.append(extra)
            for name in sorted(_PROMPT_KEYS - record.keys()):
                problems.append((MISSING_KEY, f"The record has no '{name}' key."))
        chars = 0
        for name in ("prompt", "completion"):
            value = record.get(name, _MISSING)
            if type(value) is str:
                chars += len(value)
                if not value or value.isspace():
                    if self._lenient_prompts:
                        problems.append((EMPTY_PROMPT_OR_COMPLETION, f"{name} is empty. {LENIENT_EMPTY_NOTE}"))
                    else:
                        problems.append((EMPTY_TEXT, f"{name} is empty."))
            elif value is not _MISSING:
                problems.append((WRONG_TYPE, f"{name} must be a string, got {json_type(value)}."))
        if chars > self._max_chars or problems:
            self._finish(chars, problems)
        return problems

    def _check_pre_training(self, record: Any) -> list[Problem]:
        """Continued pre-training: one {"input": text} object per line
        (https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-prepare.html)."""
        if type(record) is not dict:
            return [_not_an_object(record)]
        problems: list[Problem] = []
        if not record.keys() <= {"input"}:
            problems.append(_unexpected(record.keys() - {"input"}, "a record", ("input",)))
        value = record.get("input", _MISSING)
        chars = 0
        if value is _MISSING:
            problems.append((MISSING_KEY, "The record has no 'input' key."))
        elif type(value) is not str:
            problems.append((WRONG_TYPE, f"input must be a string, got {json_type(value)}."))
        elif not value or value.isspace():
            problems.append((EMPTY_TEXT, "input is empty."))
        else:
            chars = len(value)
        if chars > self._max_chars or problems:
            self._finish(chars, problems)
        return problems

    def _check_rft(self, record: Any) -> list[Problem]:
        """Reinforcement fine-tuning: {"messages": [{"role", "content": str}], "reference_answer": any, ...}; other
        keys are allowed (the reward function may read them) (rft-prepare-data.html)."""
        if type(record) is not dict:
            return [_not_an_object(record)]
        problems: list[Problem] = []
        reference = record.get("reference_answer")
        # Empty is no answer either: AWS's Nova dataset validator refuses an empty string or object. It also refuses
        # any type but a string or an object; Bedrock's page says the field "can contain any format", so the kit
        # leaves other types to the reward function.
        if reference is None or reference == {} or (type(reference) is str and not reference.strip()):
            problems.append(
                (
                    MISSING_KEY,
                    "The record has no 'reference_answer', or an empty one (the expected output or grading criteria "
                    f"the reward function reads) ({DOC_RFT}).",
                )
            )
        messages = record.get("messages", _MISSING)
        chars = 0
        if messages is _MISSING:
            problems.append((MISSING_KEY, f"The record has no 'messages' key ({DOC_RFT})."))
        elif type(messages) is not list or not messages:
            got = "an empty list" if type(messages) is list else json_type(messages)
            problems.append((WRONG_TYPE, f"messages must be a non-empty list of {{role, content}}, got {got}."))
        else:
            users = 0
            for index, message in enumerate(messages):
                where = f"messages[{index}]"
                if type(message) is not dict:
                    problems.append(
                        (WRONG_TYPE, f"{where} must be an object with role and content, got {json_type(message)}.")
                    )
                    continue
                for name in sorted(_RFT_MESSAGE_KEYS - message.keys()):
                    problems.append((MISSING_KEY, f"{where} has no '{name}' key."))
                role = message.get("role")
                if role not in _RFT_ROLES:
                    shown = _shown(role) if type(role) is str else json_type(role)
                    problems.append(
                        (INVALID_VALUE, f"{where}.role is '{shown}'; it must be system, user or assistant.")
                    )
                elif role == "system" and index != 0:
                    problems.append(
                        (ROLE_ORDER, f"{where}.role is 'system'; only the first message may be the system prompt.")
                    )
                users += role == "user"
                content = message.get("content", _MISSING)
                if type(content) is str:
                    if not content or content.isspace():
                        problems.append((EMPTY_TEXT, f"{where}.content is empty."))
                    else:
                        self._check_reserved(content, "messages", index, None, problems, where=f"{where}.content")
                    chars += len(content)
                elif content is not _MISSING:
                    problems.append((WRONG_TYPE, f"{where}.content must be a string, got {json_type(content)}."))
            if not users:
                problems.append((ROLE_ORDER, f"messages holds no user turn: the prompt the model answers ({DOC_RFT})."))
        if chars > self._max_chars or problems:
            self._finish(chars, problems)
        return problems

    # -- Converse parts --

    def _converse_system(self, system: Any, problems: list[Problem]) -> int:
        if type(system) is not list:
            problems.append((WRONG_TYPE, f'system must be a list of {{"text": ...}} blocks, got {json_type(system)}.'))
            return 0
        chars = 0
        for index, block in enumerate(system):
            text = block.get("text", _MISSING) if type(block) is dict else _MISSING
            if type(text) is not str or len(block) != 1:
                self._system_block_problems(block, index, problems)
                if type(text) is not str:
                    continue
            chars += len(text)
            if text not in self._clean_systems:
                before = len(problems)
                self._check_reserved(text, "system", index, None, problems)
                if len(problems) == before:
                    if len(self._clean_systems) >= MAX_CLEAN_SYSTEMS or self._clean_chars > MAX_CLEAN_CHARS:
                        self._clean_systems.clear()
                        self._clean_chars = 0
                    self._clean_systems.add(text)
                    self._clean_chars += len(text)
        return chars

    def _converse_messages(self, messages: list[Any], problems: list[Problem]) -> int:
        count = len(messages)
        if count < 2 or count & 1:
            if self._prompt_only:
                if not count:
                    problems.append((ROLE_ORDER, f"messages is empty; it needs a user prompt ({self.kind.doc})."))
            else:
                _check_turn_count(count, problems)
        chars = videos = media = 0
        find_reserved = self._find_reserved
        roles = ROLES
        for index, message in enumerate(messages):
            # Fast path, the common case: {"role": <the expected role>, "content": [{"text": <non-blank>}]}.
            if type(message) is dict and len(message) == 2 and message.get("role") == roles[index & 1]:
                content = message.get("content")
                if type(content) is list and len(content) == 1:
                    block = content[0]
                    if type(block) is dict and len(block) == 1:
                        text = block.get("text")
                        if type(text) is str and text and not text.isspace():
                            chars += len(text)
                            if find_reserved is not None and find_reserved(text) is not None:
                                self._check_reserved(text, "messages", index, 0, problems)
                            continue
            added, kinds = self._message(message, index, problems)
            chars += added
            if kinds:
                videos += kinds.count("video")
                media |= (_IMAGES if "image" in kinds else 0) | (_VIDEOS if "video" in kinds else 0)
        if media:
            self._check_media_mix(media, videos, problems)
        return chars

    def _message(self, message: Any, index: int, problems: list[Problem]) -> tuple[int, list[str]]:
        """The complete check of one turn (the slow path): (text characters, kinds of its media blocks)."""
        media: list[str] = []
        if type(message) is dict and len(message) == 2 and message.get("role") == ROLES[index & 1]:
            content = message.get("content", _MISSING)
        else:
            content = _MISSING
        if content is _MISSING:
            content = _diagnose_message(message, index, problems)
            if content is _MISSING:
                return 0, media
        if type(content) is not list or not content:
            if type(content) is list:
                problems.append((EMPTY_TEXT, f"messages[{index}].content is an empty list."))
            else:
                got = json_type(content)
                problems.append((WRONG_TYPE, f"messages[{index}].content must be a list of blocks, got {got}."))
            return 0, media
        chars = 0
        answered = False  # a text block (or media): what AWS's Nova validator requires of every turn
        for position, block in enumerate(content):
            if type(block) is dict and len(block) == 1:
                text = block.get("text", _MISSING)
                if type(text) is str and text and not text.isspace():
                    chars += len(text)
                    answered = True
                    self._check_reserved(text, "messages", index, position, problems)
                    continue
            kind = self._content_block(block, message, index, position, problems)
            if kind == "text":
                chars += len(block["text"]) if type(block["text"]) is str else 0
                answered = True
            elif kind:
                media.append(kind)
                answered = answered or kind != "reasoning"
        if "reasoning" in media and not answered:
            # "content list must have at least one 'text', 'image', 'video', ..." (AWS's Nova dataset validator,
            # Message): reasoning alone is no answer (every example of nova-2-sft-data-prep.html pairs it with text).
            problems.append((EMPTY_TEXT, f"messages[{index}] holds only reasoning: the turn needs a text answer too."))
        images = media.count("image")
        if images > MAX_IMAGES_PER_TURN and self.spec.image_formats:
            problems.append(
                (UNSUPPORTED_CONTENT, f"messages[{index}] holds {images} images; at most {MAX_IMAGES_PER_TURN}.")
            )
        return chars, media

    def _system_block_problems(self, block: Any, index: int, problems: list[Problem]) -> None:
        where = f"system[{index}]"
        if type(block) is not dict:
            problems.append((WRONG_TYPE, f'{where} must be an object {{"text": ...}}, got {json_type(block)}.'))
            return
        if "text" not in block:
            problems.append((MISSING_KEY, f"{where} has no 'text' key."))
        if not block.keys() <= {"text"}:
            problems.append(_unexpected(block.keys() - {"text"}, where, ("text",)))
        text = block.get("text", _MISSING)
        if text is not _MISSING and type(text) is not str:
            problems.append((WRONG_TYPE, f"{where}.text must be a string, got {json_type(text)}."))

    def _content_block(self, block: Any, message: Any, index: int, position: int, problems: list[Problem]) -> str:
        """The slow path for one content block: names what is wrong; returns its kind (text/image/video/'')."""
        spot = f"messages[{index}].content[{position}]"
        if type(block) is not dict:
            problems.append((WRONG_TYPE, f"{spot} must be an object, got {json_type(block)}."))
            return ""
        if len(block) != 1:
            problems.append(_block_keys(block, spot))
            return ""
        kind = next(iter(block))
        role = message.get("role")
        if kind == _REASONING_KEY:
            return self._reasoning_block(block[kind], role, spot, problems)
        if kind in _FOREIGN_BLOCKS:
            problems.append(
                (
                    UNSUPPORTED_CONTENT,
                    f"{spot} is a '{kind}' block; {self.spec.base_model_id} training data takes text"
                    f"{', image and video' if self.spec.image_formats else ''} blocks only ({self.kind.doc}).",
                )
            )
            return ""
        if kind in ("image", "video") and self._text_only:
            problems.append(
                (UNSUPPORTED_CONTENT, f"{spot} is an {kind} block; distillation takes text only ({self.kind.doc}).")
            )
            return ""
        if kind == "text":
            text = block["text"]
            if type(text) is not str:
                problems.append((WRONG_TYPE, f"{spot}.text must be a string, got {json_type(text)}."))
            else:
                problems.append((EMPTY_TEXT, f"{spot}.text is empty."))
        elif kind == "image":
            self._check_media(block["image"], "image", self.spec.image_formats, role, spot, problems)
        elif kind == "video":
            self._check_media(block["video"], "video", self.spec.video_formats, role, spot, problems)
        else:
            problems.append(_block_keys(block, spot))
            return ""
        return kind

    def _reasoning_block(self, value: Any, role: Any, spot: str, problems: list[Problem]) -> str:
        """{"reasoningContent": {"reasoningText": {"text": str}}}: Nova 2, assistant turns only."""
        where = f"{spot}.{_REASONING_KEY}"
        if not self.spec.reasoning or self.kind.shape != CONVERSE:
            problems.append(
                (
                    UNSUPPORTED_CONTENT,
                    f"{where}: {self.spec.base_model_id} takes no reasoning content here ({self.kind.doc}).",
                )
            )
            return ""
        if role != "assistant":
            problems.append((UNSUPPORTED_CONTENT, f"{where} may appear only in assistant turns ({self.kind.doc})."))
        inner = value.get("reasoningText") if type(value) is dict else None
        text = inner.get("text") if type(inner) is dict else None
        if type(value) is not dict or set(value) != {"reasoningText"} or type(inner) is not dict:
            problems.append((WRONG_TYPE, f'{where} must be {{"reasoningText": {{"text": "..."}}}} ({self.kind.doc}).'))
        elif not inner.keys() <= {"text", "signature"}:
            problems.append(_unexpected(inner.keys() - {"text", "signature"}, f"{where}.reasoningText", ("text",)))
        elif type(text) is not str:
            problems.append((WRONG_TYPE, f"{where}.reasoningText.text must be a string, got {json_type(text)}."))
        elif not text or text.isspace():
            problems.append((EMPTY_TEXT, f"{where}.reasoningText.text is empty."))
        else:  # AWS's Nova dataset validator holds reasoning text to the reserved strings too (ReasoningText)
            self._check_reserved(text, "messages", 0, None, problems, where=f"{where}.reasoningText.text")
        return "reasoning"

    def _check_media(
        self, media: Any, kind: str, formats: frozenset[str], role: Any, spot: str, problems: list[Problem]
    ) -> None:
        if not formats:
            problems.append((UNSUPPORTED_CONTENT, f"{spot}: {self.spec.base_model_id} does not take {kind}s."))
            return
        if role != "user":
            problems.append((UNSUPPORTED_CONTENT, f"{spot}: {kind}s may appear only in user turns."))
        if type(media) is not dict:
            problems.append((WRONG_TYPE, f"{spot}.{kind} must be an object, got {json_type(media)}."))
            return
        if media.keys() != _MEDIA_KEYS:
            for name in sorted(_MEDIA_KEYS - media.keys()):
                problems.append((MISSING_KEY, f"{spot}.{kind} has no '{name}' key."))
            if not media.keys() <= _MEDIA_KEYS:
                problems.append(_unexpected(media.keys() - _MEDIA_KEYS, f"{spot}.{kind}", ("format", "source")))
        fmt = media.get("format", _MISSING)
        if fmt is not _MISSING and (type(fmt) is not str or fmt.lower() not in formats):
            problems.append(
                (INVALID_VALUE, f"{spot}.{kind}.format is {_shown(_repr(fmt))}; allowed: {', '.join(sorted(formats))}.")
            )
        source = media.get("source", _MISSING)
        if source is _MISSING:
            return
        location = source.get("s3Location") if type(source) is dict else None
        uri = location.get("uri") if type(location) is dict else None
        if type(location) is not dict or type(uri) is not str:
            problems.append((WRONG_TYPE, f'{spot}.{kind}.source must be {{"s3Location": {{"uri": "s3://..."}}}}.'))
            return
        if not MEDIA_S3_URI.fullmatch(uri) or len(uri) > 1024:
            problems.append(
                (
                    INVALID_S3_URI,
                    f"{spot}.{kind}.source.s3Location.uri is '{_shown(uri)}'; it must be s3://bucket/key naming a "
                    "file, a lower-case bucket name of 3 to 63 letters, digits, '.' or '-' "
                    "(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_S3Location.html).",
                )
            )
        elif self.spec.family in NOVA_FAMILIES and (bad := _NOVA_PATH_BAD.search(uri, len("s3://"))):
            problems.append(
                (
                    INVALID_S3_URI,
                    f"{spot}.{kind}.source.s3Location.uri is '{_shown(uri)}': it holds '{printable(bad.group())}', "
                    f"which Amazon Nova refuses in an S3 path; use {NOVA_PATH_CHARS} ({DOC_NOVA_FT}).",
                )
            )
        if not location.keys() <= {"uri"} | _MEDIA_OPTIONAL:
            problems.append(
                _unexpected(
                    location.keys() - {"uri", "bucketOwner"}, f"{spot}.{kind}.source.s3Location", ("uri", "bucketOwner")
                )
            )
        elif self.media_prefix is not None and not uri.startswith(self.media_prefix):
            problems.append(
                (
                    INVALID_S3_URI,
                    f"{spot}.{kind}.source.s3Location.uri is '{_shown(uri)}'; Bedrock reads a dataset's {kind}s only "
                    f"from the dataset's own bucket, and the customization role only under {self.media_prefix} "
                    f"({DOC_NOVA_FT}). Upload the file there.",
                )
            )
        owner = location.get("bucketOwner", _MISSING)
        if owner is not _MISSING and (type(owner) is not str or not re.fullmatch(r"[0-9]{12}", owner)):
            problems.append(
                (INVALID_VALUE, f"{spot}.{kind}.source.s3Location.bucketOwner must be a 12-digit account id.")
            )

    def _check_media_mix(self, media: int, videos: int, problems: list[Problem]) -> None:
        """One video at most per record; images or videos, never both, in a record and across the dataset."""
        if videos > 1:
            problems.append((UNSUPPORTED_CONTENT, f"The record holds {videos} videos; at most one per record."))
        if media == _IMAGES | _VIDEOS:
            problems.append((UNSUPPORTED_CONTENT, "A record may hold images or a video, not both."))
        elif not self._media_seen:
            self._media_seen = media
        elif media != self._media_seen:
            had, has = ("images", "videos") if self._media_seen == _IMAGES else ("videos", "images")
            problems.append(
                (UNSUPPORTED_CONTENT, f"The dataset mixes media: earlier records hold {had}, this one {has}.")
            )

    def _check_reserved(
        self, text: str, part: str, index: int, position: int | None, problems: list[Problem], where: str = ""
    ) -> None:
        """Reports the first reserved string in ``text``, in any letter case (see ``_reserved_finder``); ``where``
        names the text when it is not a system or content block's."""
        if self._find_reserved is None:
            return
        found = self._find_reserved(text)
        if found is None:
            return
        at, token = found
        if not where:
            where = f"system[{index}].text" if position is None else f"{part}[{index}].content[{position}].text"
        problems.append(
            (
                RESERVED_STRING,
                f"{where} contains the reserved string '{token}' (at character {at + 1}); "
                f"{self.spec.family} rejects {', '.join(self.spec.reserved)} in any letter case.",
            )
        )

    def _finish(self, chars: int, problems: list[Problem]) -> None:
        tokens = self.max_record_tokens
        if tokens is not None and self.error_chars is not None and self.warn_chars is not None:
            rate = self.chars_per_token
            estimate = -(-chars // rate)
            if chars > self.error_chars:
                problems.append(
                    (
                        RECORD_TOO_LONG,
                        f"The record holds {chars:,} characters of text: over {tokens:,} tokens even at the "
                        f"documents' {PLANNING_CHARS_PER_TOKEN} characters per token (about {estimate:,} tokens at "
                        f"{rate}); {self.spec.base_model_id} allows {tokens:,} tokens per "
                        f"record at this batch size ({DOC_PREPARE}). Shorten or split it.",
                    )
                )
            elif chars > self.warn_chars:
                near = "over" if estimate > tokens else f"within {round((1 - TOKEN_WARNING_MARGIN) * 100)}% of"
                problems.append(
                    (
                        TOKENS_NEAR_LIMIT,
                        f"The record holds {chars:,} characters of text, an estimated {estimate:,} tokens at "
                        f"{rate} characters per token (no tokenizer offline): {near} the {tokens:,}-token limit "
                        f"({DOC_PREPARE}). The documents' 6 characters per token is for planning, and records cut "
                        "at that rate have failed jobs; keep a margin.",
                    )
                )
        if len(problems) > MAX_PROBLEMS_PER_RECORD:
            del problems[MAX_PROBLEMS_PER_RECORD:]


# Texts longer than this are ruled out by one lowered substring search per token before markers are looked at
# (measured with `make bench`: it pays on tool specifications, and costs on short answers with a colon).
PREFILTER_CHARS = 2048


def _reserved_finder(tokens: tuple[str, ...]) -> Callable[[str], tuple[int, str] | None] | None:
    """A function returning (position, token) of the first reserved token in a text, any letter case, or None.

    Every token holds a marker character (':' ends "User:", '<' starts "<image>", '[' starts "[EOS]"). The
    finder first rules texts out in C (no marker at all; or none of the lowered tokens in the lowered text), then
    finds the first token by looking at markers with ``str.find`` and lowering only the few characters around
    each one.
    """
    if not tokens:
        return None
    grouped: dict[tuple[str, bool], list[str]] = {}  # (marker, token ends with it) -> tokens
    for token in tokens:
        at = next(index for index, char in enumerate(token) if not char.isalnum())
        if at not in (0, len(token) - 1):
            raise ValueError(f"reserved token {token!r} must start or end with its marker character")
        grouped.setdefault((token[at], at > 0), []).append(token)
    # (marker, characters kept before it, characters kept from it on, lowered tokens, shown tokens)
    groups = tuple(
        (marker, max(map(len, found)) - 1 if suffix else 0, 1 if suffix else max(map(len, found)),
         tuple(t.lower() for t in found), tuple(found))
        for (marker, suffix), found in grouped.items()
    )  # fmt: skip
    markers = tuple(dict.fromkeys(group[0] for group in groups))
    all_lowered = tuple(token.lower() for token in tokens)

    def find(text: str) -> tuple[int, str] | None:
        for marker in markers:  # most texts hold no marker at all: a few fast scans and done
            if marker in text:
                break
        else:
            return None
        # Long texts full of markers (JSON tool specifications: a ':' after every key) are common: one lower() and
        # a substring search per token, all in C, rule nearly all of them out before any per-marker Python work.
        # Short texts with a marker or two ("Idle cost: ...") are cheaper to check at their markers directly.
        if len(text) > PREFILTER_CHARS:
            lowered_text = text.lower()
            for token in all_lowered:
                if token in lowered_text:
                    break
            else:
                return None
        for marker, before, after, lowered_tokens, shown in groups:
            at = text.find(marker)
            while at >= 0:
                start = at - before if at > before else 0
                window = text[start : at + after].lower()
                if window.endswith(lowered_tokens) if before else window.startswith(lowered_tokens):
                    for index, token in enumerate(lowered_tokens):
                        if window.endswith(token) if before else window.startswith(token):
                            return (at + 1 - len(token) if before else at), shown[index]
                at = text.find(marker, at + 1)
        return None

    return find


def _check_turn_count(count: int, problems: list[Problem]) -> None:
    if count < 2:
        problems.append((ROLE_ORDER, f"messages holds {count} turn(s); it needs a user turn then an assistant turn."))
    elif count & 1:
        problems.append((ROLE_ORDER, "messages ends with a user turn; the last turn must be 'assistant'."))


def _diagnose_message(message: Any, index: int, problems: list[Problem]) -> Any:
    """The slow path for one turn: keys and role; returns its content, or _MISSING when there is none to check."""
    where = f"messages[{index}]"
    if type(message) is not dict:
        problems.append((WRONG_TYPE, f"{where} must be an object with role and content, got {json_type(message)}."))
        return _MISSING
    for name in sorted(_MESSAGE_KEYS - message.keys()):
        problems.append((MISSING_KEY, f"{where} has no '{name}' key."))
    if not message.keys() <= _MESSAGE_KEYS:
        problems.append(_unexpected(message.keys() - _MESSAGE_KEYS, where, ("role", "content")))
    role = message.get("role", _MISSING)
    expected = ROLES[index & 1]
    if role is _MISSING:
        pass
    elif type(role) is not str:
        problems.append((WRONG_TYPE, f"{where}.role must be a string, got {json_type(role)}."))
    elif role not in ROLES:
        problems.append((INVALID_VALUE, f"{where}.role is '{_shown(role)}'; it must be 'user' or 'assistant'."))
    elif role != expected:
        problems.append(
            (
                ROLE_ORDER,
                f"{where}.role is '{role}' but turn {index + 1} must be '{expected}': turns alternate "
                "user, assistant, ... starting with user.",
            )
        )
    return message.get("content", _MISSING)


# --- small helpers ------------------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _not_an_object(value: Any) -> Problem:
    return (NOT_AN_OBJECT, f"A record must be a JSON object, got {json_type(value)}.")


def _unexpected(extra: Any, where: str, allowed: Any) -> Problem:
    names = ", ".join(f"'{_shown(str(name))}'" for name in sorted(extra, key=str)[:5])
    return (UNEXPECTED_KEY, f"Unexpected key(s) in {where}: {names}. Allowed: {', '.join(sorted(allowed))}.")


def _block_keys(block: dict[str, Any], spot: str) -> Problem:
    known = [key for key in block if key in _BLOCK_KEYS]
    if not known:
        return (MISSING_KEY, f"{spot} needs exactly one of 'text', 'image', 'video'; it has {_key_list(block)}.")
    extra = [key for key in block if key not in _BLOCK_KEYS] or known[1:]
    names = ", ".join(f"'{_shown(str(key))}'" for key in extra[:5])
    return (UNEXPECTED_KEY, f"{spot} must hold exactly one of 'text', 'image', 'video'; unexpected: {names}.")


def _key_list(block: dict[str, Any]) -> str:
    return ", ".join(f"'{_shown(str(key))}'" for key in list(block)[:5]) or "no key"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """The text with each lone surrogate (a JSON escape such as \\ud800 decodes to one) written as its escape.

    A lone surrogate cannot be encoded as UTF-8: printed, written to a report or sent to S3 it raises
    UnicodeEncodeError. Every message that quotes what a user wrote goes through here.
    """
    return _LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _shown(text: str, limit: int = SHOWN_CHARS) -> str:
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _repr(value: Any) -> str:
    """repr() of a parsed value, or its JSON type when it is nested too deeply to show."""
    try:
        return repr(value)
    except RecursionError:
        return f"({json_type(value)} nested too deeply to show)"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
