"""Kit-wide settings (stage, names, region, account, tags, logs, the Powertools layer, alarms) and what several
levels share (the text model, the guardrail, API throttling), plus the parts every level's settings use.

Each level's settings model lives in its folder (``stacks/levelN_x/settings.py``); ``stacks/config.py`` composes
them. Every model field is a flat ``cdk.json`` context key (the field's alias), so ``-c key=value`` keeps
working: values given with ``-c`` arrive as strings, and the coercing types below (:data:`Whole`,
:data:`Number`, :data:`Flag`, :data:`Text`, :func:`json_or_text`) accept both the JSON type and its string
form, exactly as the kit always has. Defaults live in ``cdk.json`` only: a model field has no default unless
``null`` is one of its values (the CDK drops ``null`` context values, so such a key arrives absent).

A bad value becomes a :class:`Problem` (key, value, what is allowed); :class:`ConfigError` carries all of
them and prints one line per problem.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)
from pydantic import ValidationError as _ValidationError
from pydantic.fields import FieldInfo

from stacks.shared.facts import GUARDRAIL_PROFILES, PROD, PROFILE_GEOGRAPHIES, SANDBOX, STAGES

# ---------------------------------------------------------------------------------------------------------
# Errors


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()  # the value of a key the context does not have
MISSING_ALLOWED = "a value (the key is missing; cdk.json defines every key)"


class Problem(NamedTuple):
    """One configuration mistake: the key, the value given and what is allowed."""

    key: str
    value: object
    allowed: str

    def line(self) -> str:
        shown = repr(self.value) if isinstance(self.value, (str, _Missing)) else json.dumps(self.value, default=str)
        return f"config error: {self.key} = {shown} is not allowed; expected {self.allowed}"


class ConfigError(ValueError):
    """Configuration values the kit cannot build from: one readable line per problem.

    ``ConfigError(key, value, allowed)`` is one problem; ``ConfigError.of(problems)`` carries several.
    """

    def __init__(self, key: str, value: object = None, allowed: str = "") -> None:
        self.problems: list[Problem] = [Problem(key, value, allowed)]
        super().__init__(self.problems[0].line())

    @classmethod
    def of(cls, problems: Iterable[Problem]) -> ConfigError:
        found = list(problems)
        error = cls(*found[0])
        error.problems = found
        error.args = ("\n".join(problem.line() for problem in found),)
        return error

    @property
    def key(self) -> str:
        return self.problems[0].key

    @property
    def value(self) -> object:
        return self.problems[0].value

    @property
    def allowed(self) -> str:
        return self.problems[0].allowed


class Invalid(ValueError):
    """Raised by a validator: the field's value is not allowed; the message says what is (cross-field rules)."""


@dataclass(frozen=True)
class Allowed:
    """Field metadata: what the key allows, in the words of the error line (when the type cannot say it)."""

    text: str


@dataclass(frozen=True)
class OneOf(Allowed):
    """Field metadata: the value must be one of ``choices`` (for choice lists defined elsewhere)."""

    choices: tuple[str, ...] = ()

    def __init__(self, choices: Iterable[str]) -> None:
        object.__setattr__(self, "choices", tuple(choices))
        object.__setattr__(self, "text", "one of " + ", ".join(self.choices))

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def check(value: str) -> str:
            if value not in self.choices:
                raise ValueError(self.text)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))


def allowed_text(field: FieldInfo) -> str:
    """What a field allows, from its Allowed/OneOf metadata, its Literal choices or its bounds."""
    for item in field.metadata:
        if isinstance(item, Allowed):
            return item.text
    annotation = field.annotation
    if get_origin(annotation) is not Literal:  # `Literal[...] | None`: the choices
        annotation = next((a for a in get_args(annotation) if get_origin(a) is Literal), annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(annotation))
    if annotation is bool or bool in get_args(annotation):
        return "true or false"
    low = next((item.ge for item in field.metadata if isinstance(item, Ge)), None)
    high = next((item.le for item in field.metadata if isinstance(item, Le)), None)
    if annotation is int and low is not None and high is not None:
        return f"a whole number from {low} to {high}"
    if annotation is float and low is not None and high is not None:
        return f"a number from {low:g} to {high:g}"
    if set(get_args(annotation)) == {float, type(None)} and low is not None and high is not None:
        return f"a number from {low:g} to {high:g}, or {NONE}"
    raise TypeError(f"say what {field.alias} allows: Allowed(...), OneOf(...), a Literal or bounds")


def problems_of(error: _ValidationError, model: type[BaseModel], context: Mapping[str, Any]) -> list[Problem]:
    """The problems in a model's validation error, each naming the context key and the value given for it."""
    fields = {field.alias: field for field in model.model_fields.values()}
    found: list[Problem] = []
    for item in error.errors(include_url=False):
        key = str(item["loc"][0])
        raised = (item.get("ctx") or {}).get("error")
        if isinstance(raised, ConfigError):
            found += raised.problems
        elif item["type"] == "missing" and len(item["loc"]) == 1:
            found.append(Problem(key, MISSING, MISSING_ALLOWED))
        elif isinstance(raised, Invalid):
            found.append(Problem(key, context.get(key, MISSING), str(raised)))
        else:
            allowed = allowed_text(fields[key])
            if item["type"] == "literal_error" and len(item["loc"]) > 1:  # one item of a list
                allowed += f" ({item['input']!r} is not one)"
            found.append(Problem(key, context.get(key, MISSING), allowed))
    return found


# ---------------------------------------------------------------------------------------------------------
# Coercing types: the JSON type, or its string form as `-c key=value` gives it.


def _whole(raw: object) -> int:
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        return int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError("not a whole number")
    return raw


def _number(raw: object) -> float:
    if isinstance(raw, str):
        return float(raw)  # ValueError for text that is not a number
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError("not a number")
    return float(raw)


# The word a NumberOrNone key takes for "no value": e.g. no default temperature at all. (A JSON null in cdk.json
# does not reach the settings: the CDK leaves null context values out, so the key reads as missing.)
NONE = "none"


def _number_or_none(raw: object) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() == NONE):
        return None
    return _number(raw)


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ValueError("not true or false")


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("not a string")
    return raw.strip()


def json_or_text(raw: object) -> object:
    """A JSON list or object given as a string (``-c 'key=[...]'``) parsed; anything else as it is."""
    if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _list_of_text(raw: object) -> object:
    value = json_or_text(raw)
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("not a list of strings")
    return value


def _no_repeats(items: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(items)) != len(items):
        raise Invalid("a list without repeated items")
    return items


def _opt(parse: Any, raw: object) -> object:
    """``null`` (JSON's, or the word as `-c key=null` passes it), empty or ``default``: the stage decides (None);
    anything else parsed."""
    return None if raw is None or (isinstance(raw, str) and raw.strip() in ("", "default", "null")) else parse(raw)


Whole = Annotated[int, BeforeValidator(_whole)]
Number = Annotated[float, BeforeValidator(_number)]
NumberOrNone = Annotated[float | None, BeforeValidator(_number_or_none)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Text = Annotated[str, BeforeValidator(_text)]
Stripped = BeforeValidator(_text)  # for Literal choices of text: Annotated[Literal[...], Stripped]
AsWhole = BeforeValidator(_whole)  # for Literal choices of numbers: Annotated[Literal[...], AsWhole]


@functools.cache
def service_model(service: str) -> Any:
    """botocore's API model of ``service`` (a ``botocore.model.ServiceModel``), read by its data loader alone: a
    botocore session would read the AWS profile first, and a missing one (AWS_PROFILE=nope) raises ProfileNotFound
    in a synth that needs no credentials."""
    from botocore.loaders import create_loader
    from botocore.model import ServiceModel

    return ServiceModel(create_loader().load_service_model(service, "service-2"), service_name=service)


@functools.lru_cache(maxsize=1)
def training_instance_types() -> frozenset[str]:
    """The instance types CreateTrainingJob takes, as the SageMaker API model in botocore lists them."""
    return frozenset(service_model("sagemaker").shape_for("TrainingInstanceType").enum)


# Families the kit's training image (PyTorch 2.13 with CUDA 13, or its CPU build) cannot serve: CUDA 13 dropped the
# Kepler-to-Volta GPUs of p2/p3 ("Deprecated Architectures",
# https://docs.nvidia.com/cuda/archive/13.0.0/cuda-toolkit-release-notes/index.html), Trainium runs the Neuron
# images, not CUDA ones (https://github.com/aws/deep-learning-containers/blob/master/available_images.md), and the
# image is built for x86 (aws/deep-learning-containers .github/config/image/pytorch/2.13-sagemaker-cuda.yml,
# arch_type "x86") while P6e-GB200 has NVIDIA Grace (arm64) CPUs (the DLAMI arm64 release notes list it among their
# aarch64 instances).
_NO_IMAGE_FAMILIES = {
    "p2": "K80",
    "p3": "V100",
    "p3dn": "V100",
    "trn1": "Trainium",
    "trn1n": "Trainium",
    "trn2": "Trainium2",
    "p6e-gb200": "Grace (arm64) CPUs",
}
# Every other family of botocore's TrainingInstanceType, by what the image runs on it: NVIDIA GPUs on x86 (the CUDA
# build) or x86 CPUs (the CPU build). A family the API adds is neither until it is looked at: tests hold the three
# sets to the API's list, so a new family fails the suite instead of being accepted unread.
GPU_FAMILIES = frozenset(
    {"g4dn", "g5", "g6", "g6e", "g7", "g7e", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300"}
)
CPU_FAMILIES = frozenset(
    {
        "c4", "c5", "c5n", "c6i", "c7i", "c7i-flex", "c8i", "c8i-flex", "m4", "m5", "m6i", "m7i", "m7i-flex", "m8i",
        "m8i-flex", "r5", "r5d", "r6i", "r7i", "r8i", "r8i-flex", "t3",
    }
)  # fmt: skip


def _training_instance_type(instance_type: str) -> str:
    if instance_type not in training_instance_types():
        raise ValueError("not a SageMaker training instance type")
    family = instance_type.split(".")[1]
    if family not in GPU_FAMILIES | CPU_FAMILIES and family not in _NO_IMAGE_FAMILIES:
        raise Invalid(f"an instance type the kit has checked its training image against ({family} is new to it)")
    if family in _NO_IMAGE_FAMILIES:
        raise Invalid(
            f"an instance type the kit's PyTorch 2.13 / CUDA 13 training image runs on ({family} has "
            f"{_NO_IMAGE_FAMILIES[family]}), such as ml.g5.xlarge"
        )
    return instance_type


def training_instance_has_gpu(instance_type: str) -> bool:
    """Whether a training instance type has NVIDIA GPUs (GPU_FAMILIES): the CUDA image, else the CPU one."""
    return instance_type.split(".")[1] in GPU_FAMILIES


# A SageMaker training job's instance type (Levels 3 and 4 run training jobs).
TrainingInstanceType = Annotated[
    Text,
    AfterValidator(_training_instance_type),
    Allowed("a SageMaker training instance type such as ml.g5.xlarge (not p2, p3, p6e-gb200 or trn)"),
]
# null, empty or "default": the stage decides (None).
FlagOrNull = Annotated[bool | None, BeforeValidator(lambda raw: _opt(_flag, raw))]


class Settings(BaseModel):
    """A settings model: immutable, read from the whole flat context (other levels' keys are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_alias=True, validate_by_name=False)


def context_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The context keys a settings model reads (its fields' aliases)."""
    return tuple(str(field.alias) for field in model.model_fields.values())


# ---------------------------------------------------------------------------------------------------------
# The text model: a Bedrock model id or a system-defined cross-region inference profile id.

MODEL_PROVIDERS = frozenset(
    {
        "ai21",
        "amazon",
        "anthropic",
        "cohere",
        "deepseek",
        "google",
        "meta",
        "minimax",
        "mistral",
        "moonshot",
        "moonshotai",
        "nvidia",
        "openai",
        "qwen",
        "stability",
        "twelvelabs",
        "writer",
    }
)
_MODEL_NAME = r"[a-z0-9][a-z0-9.\-]*(?::\d+)?"
_PROFILE_RE = re.compile(
    rf"^(?P<geo>{'|'.join(PROFILE_GEOGRAPHIES)})\.(?P<provider>[a-z0-9]+)\.(?P<name>{_MODEL_NAME})$"
)
_FOUNDATION_RE = re.compile(rf"^(?P<provider>[a-z0-9]+)\.(?P<name>{_MODEL_NAME})$")


MODEL_ID_ALLOWED = (
    "a Bedrock model id such as 'amazon.nova-micro-v1:0' or a cross-region inference profile id "
    "such as 'us.amazon.nova-micro-v1:0' (prefix one of " + ", ".join(PROFILE_GEOGRAPHIES) + ")"
)


@dataclass(frozen=True)
class ModelRef:
    """A Bedrock text model, invoked either directly or through a cross-region inference profile."""

    model_id: str
    foundation_model_id: str
    geography: str | None  # None when the id is a plain foundation model id

    @property
    def is_inference_profile(self) -> bool:
        return self.geography is not None

    def destination_regions(self, region: str) -> tuple[str, ...]:
        """Regions whose foundation-model ARN must be granted for calls made from ``region``."""
        if self.geography is None:
            return (region,)
        return PROFILE_GEOGRAPHIES[self.geography]


def parse_model_id(key: str, raw: object) -> ModelRef:
    """Parse a Bedrock model id or a system-defined cross-region inference profile id. Whether a profile can be
    called from the configured region is a question for the stacks that call it (:func:`profile_region_problems`)."""
    allowed = MODEL_ID_ALLOWED
    if not isinstance(raw, str):
        raise ConfigError(key, raw, allowed)
    model_id = raw.strip()
    profile = _PROFILE_RE.match(model_id)
    match = profile or _FOUNDATION_RE.match(model_id)
    if match is None or match["provider"] not in MODEL_PROVIDERS:
        raise ConfigError(key, raw, allowed)
    foundation = f"{match['provider']}.{match['name']}"
    geography = profile["geo"] if profile else None
    return ModelRef(model_id=model_id, foundation_model_id=foundation, geography=geography)


def profile_region_problems(key: str, model: ModelRef, region: str) -> list[Problem]:
    """A geography's profile serves calls made from its source regions only (a ``global.`` profile from any):
    https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html"""
    geography = model.geography
    if geography is None or geography == "global" or region in PROFILE_GEOGRAPHIES[geography]:
        return []
    allowed = f"a profile that can be called from region {region}: the '{geography}.' profiles serve "
    return [Problem(key, model.model_id, allowed + ", ".join(PROFILE_GEOGRAPHIES[geography]))]


def _text_model(raw: object) -> ModelRef:
    return parse_model_id("text_model_id", raw)


# ---------------------------------------------------------------------------------------------------------
# Kit-wide settings

# CloudWatch Logs accepts only these retention periods (days):
# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html
LogRetention = Literal[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653
]
LOG_RETENTION_DAYS: tuple[int, ...] = get_args(LogRetention)
DEFAULT_LOG_RETENTION = {SANDBOX: 7, PROD: 365}  # what log_retention_days null means in each stage

Stage = Annotated[Text, OneOf(STAGES)]


def _kit_region(region: str) -> str:
    """A region of the ``aws`` partition whose resource types the registry schemas list (stacks/shared/registry.py);
    whether it offers every type a stack uses is checked per stack at synth (app.py)."""
    from stacks.shared.registry import registry_regions

    if region not in registry_regions():
        raise Invalid("a region of the aws partition that the registry schemas list: " + ", ".join(registry_regions()))
    return region


# An AWS region code such as us-east-1.
Region = Annotated[
    Text,
    Field(pattern=r"^[a-z]{2}-[a-z]+-\d$"),
    AfterValidator(_kit_region),
    Allowed("an AWS region code of the aws partition such as us-east-1"),
]
STAGE_ADAPTER: TypeAdapter[str] = TypeAdapter(Stage)
REGION_ADAPTER: TypeAdapter[str] = TypeAdapter(Region)


def _account_text(raw: object) -> object:
    return str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw


def _tags(raw: object) -> object:
    value = json_or_text(raw)
    return {} if value in ("", None) else value


# The kit's own tag keys (stacks/shared/stage.py tag_stack; Level 3's execution tag, stacks/level3_finetune/names.py):
# a user tag of the same key would replace the kit's.
KIT_TAG_KEYS = ("kit", "kit-level", "kit-stage", "kit-execution")
# The user's tags are also the stacks' own tags, and a stack takes at most 50, each value 1-256 characters (botocore's
# cloudformation model: Tags max 50, Tag Value min 1); the kit adds three (kit, kit-level, kit-stage). CDK adds its
# own on top, and only tags starting with "aws:" are not counted: at most three on one resource (a VPC subnet gets
# Name, aws-cdk:subnet-name and aws-cdk:subnet-type; a sandbox bucket aws-cdk:auto-delete-objects plus an
# aws-cdk:cr-owned:* per BucketDeployment into it), and a subnet or a bucket takes at most 50 (botocore's ec2 model,
# CreateTags: "Each resource can have a maximum of 50 tags"; s3control, TagResource: "up to 50 ... resource tags for
# each S3 resource"). A run's job gets one more, within the same three: a Bedrock customization job Level 3's
# kit-execution, a SageMaker training job (at most 50 tags too) Step Functions' MANAGED_BY_AWS.
# 44 are left; tests/infra/test_tag_limits.py derives this from every synthesized template.
MAX_USER_TAGS = 50 - 3 - 3
TAGS_ALLOWED = (
    f'a JSON object of at most {MAX_USER_TAGS} string tags, e.g. {{"owner": "me"}}: keys of 1-128 characters, '
    f'unique whatever their case, not starting with "aws:" nor one of the kit\'s own ({", ".join(KIT_TAG_KEYS)}) '
    "in any case; values of 1-256 characters; "
    "both of ASCII letters, digits, spaces and _.:/=+@- (what Bedrock, SageMaker and CloudFormation all take)"
)


# The services whose tags carry the user's tags: the stacks (CloudFormation passes stack tags on), Bedrock (guardrails,
# prompts, knowledge bases, the models runs create) and SageMaker (training jobs, the cluster).
TAGGED_BY = ("cloudformation", "bedrock", "sagemaker")


def fits_shape(text: str, shape: Any) -> bool:
    """Whether ``text`` keeps a botocore string shape's min, max and pattern."""
    import regex  # botocore's SageMaker patterns use \p{L}, which the standard re module lacks

    low, high, pattern = (shape.metadata.get(k) for k in ("min", "max", "pattern"))
    return (low or 0) <= len(text) <= (high or len(text)) and not (pattern and not regex.fullmatch(pattern, text))


def _tag_refused(key: str, value: str) -> bool:
    """Whether a tag breaks the bounds or pattern of any of TAGGED_BY's Tag shapes in botocore's models (Bedrock's
    pattern is ASCII letters; SageMaker's takes no tab or newline; a stack tag's value is not empty)."""
    return any(
        not fits_shape(key if name.lower() == "key" else value, shape)
        for service in TAGGED_BY
        for name, shape in service_model(service).shape_for("Tag").members.items()
    )


def _tags_allowed(tags: dict[str, str]) -> dict[str, str]:
    # Tag keys 1-128 characters, values 1-256 (a stack tag's value is not empty), and the "aws:" prefix is AWS's own:
    # https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html
    if len(tags) > MAX_USER_TAGS:
        raise ValueError("too many tags")
    # IAM compares tag keys without case: a role given "Owner" and "owner" (or "Kit" beside the kit's "kit") fails
    # to create with "InvalidInput: Duplicate tag keys found. Please note that Tag keys are case insensitive."
    # (aws/aws-cdk#26253, #15343), and every stack has roles that carry the user's tags.
    folded = [key.casefold() for key in [*tags, *KIT_TAG_KEYS]]
    if len(set(folded)) < len(folded):
        raise ValueError("tag keys that differ only in case")
    for key, value in tags.items():
        if key.lower().startswith("aws:") or _tag_refused(key, value):
            raise ValueError("tag not allowed")
    return tags


class SharedSettings(Settings):
    """Where and under which names the kit deploys, and what every stack gets (tags, logs, layer, alarms)."""

    stage: Stage = Field(
        alias="stage",
        description=(
            "`sandbox`: destroy deletes every resource the stacks create; "
            "`prod`: buckets, log groups and Level 3's key are kept"
        ),
    )
    # 17 characters at most: "sagemaker-<prefix>-<stage>-<stack creation id>" (Level 4's lifecycle bucket, 26
    # characters of id) must fit S3's 63; the SageMaker names "<prefix>-<stage>-sft-|pt-<32 hex>" need at most 62.
    # Not a namespace: the level stacks are named <stack id>-<stage> (app.py), and a stack name is unique in its
    # account and Region (CreateStack's StackName, botocore's cloudformation model), so another prefix updates the
    # same stacks; a resource whose name is create-only (StateMachineName, HyperPod ClusterName, S3 Vectors
    # VectorBucketName: the registry schemas' createOnlyProperties) is then replaced:
    # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-update-behaviors.html
    # (kit doctor's "Deployed name_prefix" row compares the deployed stacks' prefix with this one).
    # No "--": Bedrock takes a custom or imported model's name only as ([0-9a-zA-Z][_-]?)+ (botocore's bedrock
    # model: customModelName, importedModelName), and the state machines name them after the prefix at run time
    # (tests/infra/test_runtime_names.py checks every such name against botocore).
    name_prefix: Annotated[
        Text,
        Field(pattern=r"^[a-z](-?[a-z0-9])+$", min_length=3, max_length=17),
        Allowed("3-17 characters: lowercase letters and digits with single '-' between them, starting with a letter"),
    ] = Field(
        alias="name_prefix",
        description=(
            "The start of every resource name, followed by the stage. Not a namespace: stack names carry the stage, "
            "not the prefix, so one kit per account, Region and stage; another prefix there deploys over that kit's "
            "stacks (renaming their resources, replacing those with create-only names). For a second kit use "
            "another stage, Region or account"
        ),
    )
    region: Region = Field(
        alias="region", description="The region every stack is bound to (so synth needs no credentials)"
    )
    account: Annotated[
        Text,
        BeforeValidator(_account_text),
        Field(pattern=r"^(\d{12})?$"),
        Allowed("empty (environment-agnostic) or a 12-digit AWS account id"),
    ] = Field(alias="account", description="The account every stack is bound to")
    text_model: Annotated[ModelRef, PlainValidator(_text_model), Allowed(MODEL_ID_ALLOWED)] = Field(
        alias="text_model_id",
        description="The text model of Levels 1 and 2 (a profile must be callable from `region`)",
    )
    # REST API stage throttling: https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-request-throttling.html
    api_throttle_rate: Number = Field(
        alias="api_throttle_rate",
        description="Requests per second each API method allows (the stage throttles each method on its own)",
        ge=1,
        le=10_000,
    )
    api_throttle_burst: Whole = Field(alias="api_throttle_burst", description="Each API method's burst", ge=1, le=5_000)
    log_retention_days: Annotated[LogRetention | None, BeforeValidator(lambda raw: _opt(_whole, raw))] = Field(
        alias="log_retention_days",
        description="How long CloudWatch Logs keeps the kit's logs (and the invocation-logging bucket its records); "
        "`null`: 7 days in sandbox, 365 in prod",
        default=None,  # null: DEFAULT_LOG_RETENTION of the stage
    )
    powertools_layer_version: Whole = Field(
        alias="powertools_layer_version",
        description=(
            "The Powertools for AWS Lambda (Python) v3 managed layer version (python3.14, arm64); 0: the"
            " version the kit pins"
        ),
        ge=0,
        le=10_000,
    )  # 0: the pinned one
    alarm_email: Annotated[
        Text,
        BeforeValidator(lambda raw: "" if raw is None else raw),  # null: none; false or 0 is no address
        Field(pattern=r"^$|^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"),
        Allowed("empty or an e-mail address"),
    ] = Field(
        alias="alarm_email", description="An address subscribed to the alarm topic (confirm the e-mail AWS sends)"
    )
    tags: Annotated[
        dict[str, str],
        BeforeValidator(_tags),
        Allowed(TAGS_ALLOWED),
    ] = Field(alias="tags", description='Extra tags for every resource, e.g. `-c \'tags={"owner":"me"}\'`')

    @field_validator("tags")
    @classmethod
    def _tag_limits(cls, tags: dict[str, str]) -> dict[str, str]:
        return _tags_allowed(tags)

    @property
    def retention_days(self) -> int:
        return self.log_retention_days or DEFAULT_LOG_RETENTION[self.stage]


# ---------------------------------------------------------------------------------------------------------
# The guardrail levels 1 and 2 apply to every call
# (AWS::Bedrock::Guardrail: https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-bedrock-guardrail.html)

FilterStrength = Literal["NONE", "LOW", "MEDIUM", "HIGH"]  # ContentFilterConfig InputStrength/OutputStrength
FILTER_STRENGTHS: tuple[str, ...] = get_args(FilterStrength)
AttackStrength = Literal["LOW", "MEDIUM", "HIGH"]  # the prompt-attack filter: NONE would switch it off

# PII entity types a Bedrock guardrail understands (AWS::Bedrock::Guardrail PiiEntityConfig.Type).
PiiType = Literal[
    "ADDRESS",
    "AGE",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "CA_HEALTH_NUMBER",
    "CA_SOCIAL_INSURANCE_NUMBER",
    "CREDIT_DEBIT_CARD_CVV",
    "CREDIT_DEBIT_CARD_EXPIRY",
    "CREDIT_DEBIT_CARD_NUMBER",
    "DRIVER_ID",
    "EMAIL",
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
    "IP_ADDRESS",
    "LICENSE_PLATE",
    "MAC_ADDRESS",
    "NAME",
    "PASSWORD",
    "PHONE",
    "PIN",
    "SWIFT_CODE",
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
    "UK_NATIONAL_INSURANCE_NUMBER",
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER",
    "URL",
    "USERNAME",
    "US_BANK_ACCOUNT_NUMBER",
    "US_BANK_ROUTING_NUMBER",
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
    "US_PASSPORT_NUMBER",
    "US_SOCIAL_SECURITY_NUMBER",
    "VEHICLE_IDENTIFICATION_NUMBER",
]
PII_TYPES: frozenset[str] = frozenset(get_args(PiiType))
PiiList = Annotated[
    tuple[PiiType, ...],
    BeforeValidator(_list_of_text),
    Allowed("a list (JSON or comma-separated) of: " + ", ".join(sorted(PII_TYPES))),
]

# The safeguard tier of the content filters (prompt attacks included) and the denied topic: CLASSIC judges English,
# French and Spanish only; STANDARD judges many more languages and needs a guardrail profile (cross-Region guardrail
# inference) (https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-tiers.html,
# https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-supported-languages.html). AWS::Bedrock::Guardrail
# ContentFiltersTierConfig.TierName and TopicsTierConfig.TierName take CLASSIC or STANDARD.
GuardrailTier = Literal["classic", "standard"]


class GuardrailSettings(Settings):
    content_filter_strength: Annotated[FilterStrength, Stripped] = Field(
        alias="guardrail_content_filter_strength", description="The strength of the guardrail's five content filters"
    )
    prompt_attack_strength: Annotated[AttackStrength, Stripped] = Field(
        alias="guardrail_prompt_attack_strength", description="The guardrail's prompt-attack filter on input"
    )
    pii_anonymize: PiiList = Field(alias="guardrail_pii_anonymize", description="PII types the guardrail masks")
    pii_block: PiiList = Field(alias="guardrail_pii_block", description="PII types that block the call")
    deny_investment_advice: Flag = Field(
        alias="guardrail_deny_investment_advice", description="The guardrail's denied-topic example on or off"
    )
    tier: Annotated[GuardrailTier, Stripped] = Field(
        alias="guardrail_tier",
        description="The safeguard tier of the guardrail's content filters and denied topic: `classic` judges English, "
        "French and Spanish, in the region; `standard` many more languages, routed within the region's geography "
        "(regions with a Bedrock guardrail profile only)",
    )

    @field_validator("pii_anonymize", "pii_block")
    @classmethod
    def _once_each(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        return _no_repeats(items)

    @field_validator("pii_block")
    @classmethod
    def _block_or_anonymize(cls, block: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        overlap = sorted(set(block) & set(info.data.get("pii_anonymize", ())))
        if overlap:
            raise Invalid(f"no type that guardrail_pii_anonymize has too ({overlap[0]})")
        return block


def guardrail_profile(region: str) -> tuple[str, tuple[str, ...]] | None:
    """The guardrail profile a guardrail in ``region`` uses on the Standard tier and the Regions it may route to
    (facts.GUARDRAIL_PROFILES), or None where no profile serves ``region``. Where two do (ap-southeast-2: au and
    apac), the one with the fewest Regions, which keeps the text closest to where it was sent."""
    serving = [(profile, sources[region]) for profile, sources in GUARDRAIL_PROFILES.items() if region in sources]
    return min(serving, key=lambda item: len(item[1]), default=None)


def guardrail_region_problems(settings: GuardrailSettings, region: str) -> list[Problem]:
    """The Standard tier needs a guardrail profile that serves ``region``; where none does, a stack that builds a
    guardrail carries this problem as an error (KitGuardrail), and the other stacks build
    (https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-cross-region-support.html)."""
    if settings.tier != "standard" or guardrail_profile(region) is not None:
        return []
    served = sorted({source for sources in GUARDRAIL_PROFILES.values() for source in sources})
    allowed = (
        f"classic in region {region}, which no Bedrock guardrail profile serves; the standard tier needs one, "
        "offered in " + ", ".join(served)
    )
    return [Problem("guardrail_tier", settings.tier, allowed)]
