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
  - hyperparameters (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html): epochCount
    integer 1-5, learningRate float 1e-6 to 1e-4, learningRateWarmupSteps integer 0-100. No batchSize.

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
  - Meta Llama 3.1: input + output at most 16,000 tokens; training + validation records 100 to 10,000
    (adjustable in Service Quotas).
  - Meta Llama 3.2: at most 16,000 tokens (10,000 for 90B); training + validation records 100 to 10,000
    (adjustable); images (11B and 90B Vision) gif/jpeg/png/webp from S3. The kit's field notes add at most
    10,000 training and 1,000 validation rows.
  - Anthropic Claude 3 Haiku: at least 32 records, at most 10,000 training, 1,000 validation and 10,000 in
    total (adjustable); at most 32,000 tokens per record; training file at most 10 GB, validation 1 GB. The
    system field is optional, at least two messages, user first, assistant last, alternating, no extraneous
    keys (https://platform.claude.com/cookbook/finetuning-finetuning-on-bedrock).

Hyperparameters are strings in CreateModelCustomizationJob (hyperParameters: map of string to string):
  - Claude 3 (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-anth-claude-3.html): epochCount
    1-10, batchSize 4-256, learningRateMultiplier 0.1-2, earlyStoppingThreshold 0-0.1, earlyStoppingPatience
    1-10.
  - Titan Text Lite and Express (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-titan-text.html):
    epochCount 1-10, batchSize 1-64, learningRate 0-1, learningRateWarmupSteps 0-250.
  - Llama 3.1 and 3.2 (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama31.html,
    .../cm-hp-meta-llama32.html): epochCount 1-10, batchSize 1 (only), learningRate 5e-6 to 0.1.

Where the kit is stricter than the documents (all cheap to fix, all of them would otherwise risk a job that
fails hours in): prompt/completion records may hold no other key; role names are exact lowercase; a content
block holds exactly one of text/image/video; empty or whitespace-only text is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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

RECORD_KINDS = (
    INVALID_UTF8, UTF8_BOM, BLANK_LINE, LINE_TOO_LONG, INVALID_JSON, NOT_AN_OBJECT, MISSING_KEY, UNEXPECTED_KEY,
    WRONG_TYPE, INVALID_VALUE, ROLE_ORDER, EMPTY_TEXT, RESERVED_STRING, UNSUPPORTED_CONTENT, RECORD_TOO_LONG,
)  # fmt: skip
DATASET_KINDS = (TOO_FEW_RECORDS, TOO_MANY_RECORDS, FILE_TOO_LARGE)
HYPERPARAMETER_KINDS = (
    HYPERPARAMETER_UNKNOWN, HYPERPARAMETER_NOT_STRING, HYPERPARAMETER_INVALID, HYPERPARAMETER_OUT_OF_RANGE,
)  # fmt: skip

# --- families and shapes ------------------------------------------------------------------------------------

NOVA = "amazon-nova"
CLAUDE_3_HAIKU = "anthropic-claude-3-haiku"
LLAMA_3_1 = "meta-llama-3.1"
LLAMA_3_2 = "meta-llama-3.2"
TITAN_TEXT = "amazon-titan-text"

CONVERSE = "converse"
CLAUDE = "claude"
PROMPT_COMPLETION = "prompt_completion"
PRE_TRAINING = "pre_training"  # continued pre-training: {"input": text} per line

CHARS_PER_TOKEN = 6  # the documents' estimate: "Character quota per sample: token quota x 6"
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

Problem = tuple[str, str]  # (error kind, message)

# Customization types. Continued pre-training is offered for Amazon Titan Text G1 - Express and Lite only
# (https://docs.aws.amazon.com/bedrock/latest/userguide/custom-model-supported.html); the other models fine-tune.
FINE_TUNING = "FINE_TUNING"
CONTINUED_PRE_TRAINING = "CONTINUED_PRE_TRAINING"
CUSTOMIZATION_TYPES = (FINE_TUNING, CONTINUED_PRE_TRAINING)


class UnsupportedBaseModel(ValueError):
    """The base model id is not one the validator knows how to check."""


class UnsupportedCustomizationType(ValueError):
    """The base model does not offer the requested customization type."""


@dataclass(frozen=True)
class HyperparameterSpec:
    name: str
    integer: bool
    minimum: float
    maximum: float

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
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
class ModelSpec:
    """Everything the validator needs to know about one customizable base model."""

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

    def hyperparameter(self, name: str) -> HyperparameterSpec | None:
        return next((spec for spec in self.hyperparameters if spec.name == name), None)

    def max_record_chars(self, batch_size: int = 1) -> int | None:
        """The estimated character quota of one record (token quota x 6) at this batch size."""
        for largest_batch, tokens in self.token_quota:
            if batch_size <= largest_batch:
                return tokens * CHARS_PER_TOKEN
        return None

    def max_record_tokens(self, batch_size: int = 1) -> int | None:
        return next((tokens for largest, tokens in self.token_quota if batch_size <= largest), None)


def _hp(name: str, integer: bool, minimum: float, maximum: float) -> HyperparameterSpec:
    return HyperparameterSpec(name, integer, minimum, maximum)


_NOVA_HP = (
    _hp("epochCount", True, 1, 5),
    _hp("learningRate", False, 1e-6, 1e-4),
    _hp("learningRateWarmupSteps", True, 0, 100),
)
_CLAUDE_HP = (
    _hp("epochCount", True, 1, 10),
    _hp("batchSize", True, 4, 256),
    _hp("learningRateMultiplier", False, 0.1, 2),
    _hp("earlyStoppingThreshold", False, 0, 0.1),
    _hp("earlyStoppingPatience", True, 1, 10),
)
_TITAN_HP = (
    _hp("epochCount", True, 1, 10),
    _hp("batchSize", True, 1, 64),
    _hp("learningRate", False, 0, 1),
    _hp("learningRateWarmupSteps", True, 0, 250),
)
_LLAMA_HP = (
    _hp("epochCount", True, 1, 10),
    _hp("batchSize", True, 1, 1),
    _hp("learningRate", False, 5e-6, 0.1),
)

_NOVA_LIMITS = Limits(min_training_records=8, max_total_records=20_000)
_CLAUDE_LIMITS = Limits(
    min_training_records=32,
    max_training_records=10_000,
    max_validation_records=1_000,
    max_total_records=10_000,
    max_training_bytes=10 * GB,
    max_validation_bytes=1 * GB,
)
_LLAMA_31_LIMITS = Limits(min_total_records=100, max_total_records=10_000)
_LLAMA_32_LIMITS = Limits(
    max_training_records=10_000, max_validation_records=1_000, min_total_records=100, max_total_records=10_000
)
_TITAN_LIMITS = Limits(max_training_bytes=1 * GB, max_validation_bytes=100 * MB)


def _nova(model_id: str, media: bool) -> ModelSpec:
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
    )


def _llama32(model_id: str, vision: bool, tokens: int) -> ModelSpec:
    return ModelSpec(
        base_model_id=model_id,
        family=LLAMA_3_2,
        shape=CONVERSE,
        limits=_LLAMA_32_LIMITS,
        hyperparameters=_LLAMA_HP,
        token_quota=((NO_LIMIT_BATCH, tokens),),
        image_formats=LLAMA_IMAGE_FORMATS if vision else frozenset(),
        notes=("Images count roughly 1,601 to 6,404 tokens each; the character estimate counts text only.",),
    )


def _prompt_completion(
    model_id: str,
    family: str,
    limits: Limits,
    hp: tuple[HyperparameterSpec, ...],
    quota: tuple[tuple[int, int], ...],
    customization_types: tuple[str, ...] = (FINE_TUNING,),
    regions: tuple[str, ...] = ("us-west-2",),
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
    )


MODELS: dict[str, ModelSpec] = {
    spec.base_model_id: spec
    for spec in (
        _nova("amazon.nova-micro-v1:0:128k", media=False),
        _nova("amazon.nova-lite-v1:0:300k", media=True),
        _nova("amazon.nova-pro-v1:0:300k", media=True),
        ModelSpec(
            base_model_id="anthropic.claude-3-haiku-20240307-v1:0:200k",
            family=CLAUDE_3_HAIKU,
            shape=CLAUDE,
            limits=_CLAUDE_LIMITS,
            hyperparameters=_CLAUDE_HP,
            token_quota=((NO_LIMIT_BATCH, 32_000),),
        ),
        _prompt_completion(
            "meta.llama3-1-8b-instruct-v1:0:128k", LLAMA_3_1, _LLAMA_31_LIMITS, _LLAMA_HP, ((NO_LIMIT_BATCH, 16_000),)
        ),
        _prompt_completion(
            "meta.llama3-1-70b-instruct-v1:0:128k", LLAMA_3_1, _LLAMA_31_LIMITS, _LLAMA_HP, ((NO_LIMIT_BATCH, 16_000),)
        ),
        _llama32("meta.llama3-2-1b-instruct-v1:0:128k", vision=False, tokens=16_000),
        _llama32("meta.llama3-2-3b-instruct-v1:0:128k", vision=False, tokens=16_000),
        _llama32("meta.llama3-2-11b-instruct-v1:0:128k", vision=True, tokens=16_000),
        _llama32("meta.llama3-2-90b-instruct-v1:0:128k", vision=True, tokens=10_000),
        _prompt_completion(
            "amazon.titan-text-lite-v1:0:4k",
            TITAN_TEXT,
            _TITAN_LIMITS,
            _TITAN_HP,
            ((2, 4_096), (NO_LIMIT_BATCH, 2_048)),
            (FINE_TUNING, CONTINUED_PRE_TRAINING),
            ("us-east-1", "us-west-2"),
        ),
        _prompt_completion(
            "amazon.titan-text-express-v1:0:8k",
            TITAN_TEXT,
            _TITAN_LIMITS,
            _TITAN_HP,
            ((1, 4_096), (NO_LIMIT_BATCH, 2_048)),
            (FINE_TUNING, CONTINUED_PRE_TRAINING),
            ("us-east-1", "us-west-2"),
        ),
    )
}
DEFAULT_BASE_MODEL = "amazon.nova-lite-v1:0:300k"
_FOUNDATION_MODEL_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*::foundation-model/(?P<id>.+)$")


def resolve_model(base_model_id: str) -> ModelSpec:
    """The spec for a customization base model id (or its foundation-model ARN); UnsupportedBaseModel otherwise."""
    if not isinstance(base_model_id, str) or not base_model_id.strip():
        raise UnsupportedBaseModel("The base model id must be a non-empty string.")
    model_id = base_model_id.strip()
    arn = _FOUNDATION_MODEL_ARN.match(model_id)
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


def check_customization_type(customization_type: Any, spec: ModelSpec) -> str | None:
    """None when the base model offers this customization type; otherwise the message that says what it offers."""
    if isinstance(customization_type, str) and customization_type in spec.customization_types:
        return None
    shown = _shown(customization_type) if isinstance(customization_type, str) else json_type(customization_type)
    return f"'{shown}' is not offered for {spec.base_model_id}; it offers {', '.join(spec.customization_types)}."


# --- hyperparameters ----------------------------------------------------------------------------------------

_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def check_hyperparameters(values: Mapping[str, Any], spec: ModelSpec) -> tuple[list[dict[str, str]], dict[str, float]]:
    """(errors, parsed values) for the job's hyperParameters: known names, string values, numeric ranges."""
    errors: list[dict[str, str]] = []
    parsed: dict[str, float] = {}
    allowed = ", ".join(hp.name for hp in spec.hyperparameters)
    for name, raw in values.items():
        hp = spec.hyperparameter(name)
        if hp is None:
            message = f"'{_shown(str(name))}' is not a hyperparameter of {spec.family}. Allowed: {allowed}."
            errors.append(_hp_error(HYPERPARAMETER_UNKNOWN, name, message))
            continue
        if not isinstance(raw, str):
            message = (
                f'{name} must be a string (Bedrock takes hyperparameters as strings), e.g. "{_number(hp.minimum)}"; '
                f"got {json_type(raw)} {_shown(_repr(raw))}."
            )
            errors.append(_hp_error(HYPERPARAMETER_NOT_STRING, name, message))
            continue
        pattern = _INTEGER if hp.integer else _NUMBER
        if not pattern.match(raw):
            message = f"{name} = '{_shown(raw)}' is not {'an integer' if hp.integer else 'a number'}."
            errors.append(_hp_error(HYPERPARAMETER_INVALID, name, message))
            continue
        value = float(raw)
        if not hp.minimum <= value <= hp.maximum:
            message = f"{name} = {raw} is out of range: {spec.family} allows {hp.describe()}."
            errors.append(_hp_error(HYPERPARAMETER_OUT_OF_RANGE, name, message))
            continue
        parsed[name] = value
    return errors, parsed


def _hp_error(kind: str, name: Any, message: str) -> dict[str, str]:
    return {"kind": kind, "name": _shown(str(name)), "message": message}


# --- records ------------------------------------------------------------------------------------------------

_MISSING: Any = object()
_CONVERSE_KEYS = frozenset({"schemaVersion", "system", "messages"})
_CLAUDE_KEYS = frozenset({"system", "messages"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_PROMPT_KEYS = frozenset({"prompt", "completion"})
_BLOCK_KEYS = ("text", "image", "video")
_MEDIA_KEYS = frozenset({"format", "source"})
_IMAGES, _VIDEOS = 1, 2


class RecordChecker:
    """Checks one parsed JSON record at a time against a model's shape; holds dataset-wide media state.

    ``check(record)`` returns the record's problems (an empty list when it is valid). The common, valid case
    runs a short fast path; messages naming the exact place (``messages[1].content[0].text``) are built
    only when something is wrong.
    """

    def __init__(self, spec: ModelSpec, max_record_chars: int | None, customization_type: str = FINE_TUNING) -> None:
        self.spec = spec
        self.max_record_chars = max_record_chars
        self._max_chars = max_record_chars if max_record_chars is not None else 1 << 62
        self._find_reserved = _reserved_finder(spec.reserved)
        self._clean_system: str | None = None  # the last system text found clean (datasets repeat one prompt)
        self._media_seen = 0
        shapes: dict[str, Callable[[Any], list[Problem]]] = {
            CONVERSE: self._check_converse,
            CLAUDE: self._check_claude,
            PROMPT_COMPLETION: self._check_prompt_completion,
            PRE_TRAINING: self._check_pre_training,
        }
        shape = PRE_TRAINING if customization_type == CONTINUED_PRE_TRAINING else spec.shape
        self.check: Callable[[Any], list[Problem]] = shapes[shape]

    # -- shapes --

    def _check_converse(self, record: Any) -> list[Problem]:
        if type(record) is not dict:
            return [_not_an_object(record)]
        problems: list[Problem] = []
        if not record.keys() <= _CONVERSE_KEYS:
            problems.append(_unexpected(record.keys() - _CONVERSE_KEYS, "a record", _CONVERSE_KEYS))
        if "schemaVersion" in record and type(record["schemaVersion"]) is not str:
            problems.append((WRONG_TYPE, f"schemaVersion must be a string, got {json_type(record['schemaVersion'])}."))
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
                problems.append(_unexpected(record.keys() - _PROMPT_KEYS, "a record", _PROMPT_KEYS))
            for name in sorted(_PROMPT_KEYS - record.keys()):
                problems.append((MISSING_KEY, f"The record has no '{name}' key."))
        chars = 0
        for name in ("prompt", "completion"):
            value = record.get(name, _MISSING)
            if type(value) is str:
                chars += len(value)
                if not value or value.isspace():
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
            if text != self._clean_system:
                before = len(problems)
                self._check_reserved(text, "system", index, None, problems)
                if len(problems) == before:
                    self._clean_system = text
        return chars

    def _converse_messages(self, messages: list[Any], problems: list[Problem]) -> int:
        count = len(messages)
        if count < 2 or count & 1:
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
        for position, block in enumerate(content):
            if type(block) is dict and len(block) == 1:
                text = block.get("text", _MISSING)
                if type(text) is str and text and not text.isspace():
                    chars += len(text)
                    self._check_reserved(text, "messages", index, position, problems)
                    continue
            kind = self._content_block(block, message, index, position, problems)
            if kind == "text":
                chars += len(block["text"]) if type(block["text"]) is str else 0
            elif kind:
                media.append(kind)
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
        if type(uri) is not str:
            problems.append((WRONG_TYPE, f'{spot}.{kind}.source must be {{"s3Location": {{"uri": "s3://..."}}}}.'))
        elif not uri.startswith("s3://") or len(uri) <= len("s3://"):
            problems.append((INVALID_VALUE, f"{spot}.{kind}.source.s3Location.uri must be an s3:// URI."))

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

    def _check_reserved(self, text: str, part: str, index: int, position: int | None, problems: list[Problem]) -> None:
        """Reports the first reserved string in ``text``, in any letter case (see ``_reserved_finder``)."""
        if self._find_reserved is None:
            return
        found = self._find_reserved(text)
        if found is None:
            return
        at, token = found
        where = f"system[{index}].text" if position is None else f"{part}[{index}].content[{position}].text"
        problems.append(
            (
                RESERVED_STRING,
                f"{where} contains the reserved string '{token}' (at character {at + 1}); "
                f"{self.spec.family} rejects {', '.join(self.spec.reserved)} in any letter case.",
            )
        )

    def _finish(self, chars: int, problems: list[Problem]) -> None:
        limit = self.max_record_chars
        if limit is not None and chars > limit:
            problems.append(
                (
                    RECORD_TOO_LONG,
                    f"The record holds {chars:,} characters of text; {self.spec.base_model_id} allows about "
                    f"{limit:,} (its token quota x {CHARS_PER_TOKEN}, the documented estimate).",
                )
            )
        if len(problems) > MAX_PROBLEMS_PER_RECORD:
            del problems[MAX_PROBLEMS_PER_RECORD:]


def _reserved_finder(tokens: tuple[str, ...]) -> Callable[[str], tuple[int, str] | None] | None:
    """A function returning (position, token) of the first reserved token in a text, any letter case, or None.

    Every token holds a marker character (':' ends "User:", '<' starts "<image>", '[' starts "[EOS]"). The
    finder looks for markers with ``str.find`` and lowers only the few characters around each one, so long
    texts are never lowered whole: the cost follows the number of markers, not the text length.
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

    def find(text: str) -> tuple[int, str] | None:
        for marker in markers:  # most texts hold no marker at all: a few fast scans and done
            if marker in text:
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
