"""The kit's typed configuration, built once from CDK context and validated before any stack is built.

Every key lives in ``cdk.json`` under ``context`` and can be overridden with ``-c key=value``. Values given
with ``-c`` arrive as strings, so every parser accepts both the JSON type and its string form. A bad value
raises :class:`ConfigError` whose message names the key, the value and what is allowed; ``app.py`` prints
that one line and exits, so a config mistake never shows a jsii stack trace.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune_validate import formats
from stacks.shared.facts import KIT_NAME, PINNED_POWERTOOLS_LAYER, PROFILE_GEOGRAPHIES, STACK_IDS, STAGES

__all__ = ["KIT_NAME", "PINNED_POWERTOOLS_LAYER", "PROFILE_GEOGRAPHIES", "STACK_IDS", "STAGES"]
FILTER_STRENGTHS = ("NONE", "LOW", "MEDIUM", "HIGH")
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
DEFAULT_LOG_RETENTION = {"sandbox": 7, "prod": 365}

# PII entity types a Bedrock guardrail understands (AWS::Bedrock::Guardrail PiiEntityConfig.Type).
PII_TYPES = frozenset(
    {
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
    }
)

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
_REGION_RE = re.compile(r"^[a-z]{2}-[a-z]+-\d$")
# 17 characters at most: "<prefix>-pretrain-<36-character execution id>" must fit SageMaker's 63.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{1,15}[a-z0-9]$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


class ConfigError(ValueError):
    """A configuration value that the kit cannot build from. The message is one readable line."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        shown = json.dumps(value) if not isinstance(value, str) else repr(value)
        super().__init__(f"config error: {key} = {shown} is not allowed; expected {allowed}")


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


@dataclass(frozen=True)
class GuardrailSettings:
    content_filter_strength: str
    prompt_attack_strength: str
    pii_anonymize: tuple[str, ...]
    pii_block: tuple[str, ...]
    deny_investment_advice: bool


# Embedding models a knowledge base can use, with the vector dimensions each one offers.
EMBEDDING_MODELS: Mapping[str, tuple[int, ...]] = {
    "amazon.titan-embed-text-v2:0": (256, 512, 1024),
    "cohere.embed-english-v3": (1024,),
    "cohere.embed-multilingual-v3": (1024,),
}
VECTOR_STORES = ("s3vectors", "opensearch-serverless")
CHUNKING_STRATEGIES = ("fixed", "hierarchical", "semantic", "none")


@dataclass(frozen=True)
class ChunkingSettings:
    """How the data source splits documents; only the fields of ``strategy`` are used."""

    strategy: str
    max_tokens: int  # fixed and semantic
    overlap_percent: int  # fixed
    parent_max_tokens: int  # hierarchical
    child_max_tokens: int  # hierarchical
    overlap_tokens: int  # hierarchical
    buffer_size: int  # semantic: sentences on each side compared
    breakpoint_percentile: int  # semantic


@dataclass(frozen=True)
class RagSettings:
    vector_store: str
    embedding_model_id: str
    embedding_dimensions: int
    chunking: ChunkingSettings
    documents_prefix: str
    sample_corpus: bool
    sync_interval_minutes: int
    max_results: int
    opensearch_standby_replicas: bool


# Level 3's base models, customization types, regions and on-demand serving: one table, the validator's
# (lambdas/level3_finetune/finetune_validate/formats.py), which the function also checks at run time.
CUSTOMIZATION_TYPES = formats.CUSTOMIZATION_TYPES
DEPLOY_MODES = ("none", "on-demand", "provisioned")


@dataclass(frozen=True)
class FineTuneSettings:
    base_model_id: str
    family: str
    customization_type: str
    hyperparameters: Mapping[str, str]
    deploy: str
    provisioned_hours: int
    max_job_hours: int
    poll_minutes: int

    @property
    def foundation_model_id(self) -> str:
        """The base model's foundation-model id (the customization id without its context suffix)."""
        return ":".join(self.base_model_id.split(":")[:2])


FSX_THROUGHPUTS = (125, 250, 500, 1000)  # MB/s per TiB, FSx for Lustre PERSISTENT_2


@dataclass(frozen=True)
class InstanceGroupSpec:
    """One HyperPod instance group: its name, Slurm node type, instance type and count."""

    name: str
    node_type: str  # Controller | Login | Compute
    instance_type: str
    count: int


@dataclass(frozen=True)
class PretrainSettings:
    nat_gateways: int
    groups: tuple[InstanceGroupSpec, ...]
    ebs_volume_gb: int
    fsx: bool
    fsx_throughput: int
    job_instance_type: str
    job_instance_count: int
    job_max_runtime_hours: int
    job_spot: bool
    job_max_wait_hours: int
    job_in_cluster_vpc: bool

    @property
    def controller(self) -> InstanceGroupSpec:
        return next(g for g in self.groups if g.node_type == "Controller")


@dataclass(frozen=True)
class KitConfig:
    stage: str
    name_prefix: str
    region: str
    account: str | None
    text_model: ModelRef
    text_temperature: float
    text_max_tokens: int
    guardrail: GuardrailSettings
    api_throttle_rate: float
    api_throttle_burst: int
    log_retention_days: int
    powertools_layer_version: int
    alarm_email: str | None
    rag: RagSettings
    finetune: FineTuneSettings
    pretrain: PretrainSettings
    invocation_logging: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"

    def resource_name(self, *parts: str) -> str:
        """A physical name that carries the prefix and the stage, e.g. ``genai-kit-sandbox-prompts``."""
        return "-".join((self.name_prefix, self.stage, *parts))


# ---------------------------------------------------------------------------------------------------------
# Value parsers: each takes the key and the raw value (JSON type or the string form given with -c).


def _as_str(key: str, raw: object, allowed: str = "a string") -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, raw, allowed)
    return raw.strip()


def _as_int(key: str, raw: object, low: int, high: int) -> int:
    allowed = f"a whole number from {low} to {high}"
    value: object = raw
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        value = int(raw)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, raw, allowed)
    return value


def _as_float(key: str, raw: object, low: float, high: float) -> float:
    allowed = f"a number from {low:g} to {high:g}"
    value: object = raw
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(key, raw, allowed) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(key, raw, allowed)
    return float(value)


def _as_bool(key: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ConfigError(key, raw, "true or false")


def _as_choice(key: str, raw: object, choices: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw.strip() not in choices:
        raise ConfigError(key, raw, "one of " + ", ".join(choices))
    return raw.strip()


def _json_or_raw(raw: object) -> object:
    if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _as_list(key: str, raw: object, allowed_items: frozenset[str]) -> tuple[str, ...]:
    allowed = "a list (JSON or comma-separated) of: " + ", ".join(sorted(allowed_items))
    value = _json_or_raw(raw)
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(key, raw, allowed)
    for item in value:
        if item not in allowed_items:
            raise ConfigError(key, raw, f"{allowed} ({item!r} is not one)")
    if len(set(value)) != len(value):
        raise ConfigError(key, raw, "a list without repeated items")
    return tuple(value)


def _as_tags(key: str, raw: object) -> dict[str, str]:
    allowed = 'a JSON object of string tags, e.g. {"owner": "me"}, keys not starting with "aws:"'
    value = _json_or_raw(raw)
    if value in ("", None):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, raw, allowed)
    for tag_key, tag_value in value.items():
        if (
            not isinstance(tag_value, str)
            or not 1 <= len(tag_key) <= 128
            or len(tag_value) > 256
            or tag_key.lower().startswith("aws:")
        ):
            raise ConfigError(key, raw, allowed)
    return dict(value)


def parse_model_id(key: str, raw: object, region: str) -> ModelRef:
    """Parse a Bedrock model id or a system-defined cross-region inference profile id."""
    allowed = (
        "a Bedrock model id such as 'amazon.nova-micro-v1:0' or a cross-region inference profile id "
        "such as 'us.amazon.nova-micro-v1:0' (prefix one of " + ", ".join(PROFILE_GEOGRAPHIES) + ")"
    )
    model_id = _as_str(key, raw, allowed)
    profile = _PROFILE_RE.match(model_id)
    match = profile or _FOUNDATION_RE.match(model_id)
    if match is None or match["provider"] not in MODEL_PROVIDERS:
        raise ConfigError(key, raw, allowed)
    foundation = f"{match['provider']}.{match['name']}"
    geography = profile["geo"] if profile else None
    if geography and geography != "global" and region not in PROFILE_GEOGRAPHIES[geography]:
        raise ConfigError(
            key,
            raw,
            f"a profile that can be called from region {region}: the '{geography}.' profiles serve "
            + ", ".join(PROFILE_GEOGRAPHIES[geography]),
        )
    return ModelRef(model_id=model_id, foundation_model_id=foundation, geography=geography)


# ---------------------------------------------------------------------------------------------------------

# Every kit key with its default. Keys in cdk.json context that contain "@" or ":" belong to the CDK.
DEFAULTS: Mapping[str, Any] = {
    "stage": "sandbox",
    "name_prefix": "genai-kit",
    "region": "us-east-1",
    "account": "",
    "text_model_id": "us.amazon.nova-micro-v1:0",
    "text_temperature": 0.5,
    "text_max_tokens": 512,
    "guardrail_content_filter_strength": "HIGH",
    "guardrail_prompt_attack_strength": "HIGH",
    "guardrail_pii_anonymize": ["EMAIL", "PHONE", "NAME"],
    "guardrail_pii_block": ["US_SOCIAL_SECURITY_NUMBER", "CREDIT_DEBIT_CARD_NUMBER"],
    "guardrail_deny_investment_advice": True,
    "api_throttle_rate": 10,
    "api_throttle_burst": 20,
    "log_retention_days": None,  # None: 7 days in sandbox, 365 in prod
    "powertools_layer_version": 0,  # 0: the version this kit release pins (see PINNED_POWERTOOLS_LAYER)
    "alarm_email": "",
    "tags": {},
    # Level 2: RAG
    "rag_vector_store": "s3vectors",
    "rag_embedding_model_id": "amazon.titan-embed-text-v2:0",
    "rag_embedding_dimensions": 1024,
    "rag_chunking": "fixed",
    "rag_chunk_max_tokens": 300,
    "rag_chunk_overlap_percent": 20,
    "rag_hierarchical_parent_tokens": 1500,
    "rag_hierarchical_child_tokens": 300,
    "rag_hierarchical_overlap_tokens": 60,
    "rag_semantic_buffer_size": 0,
    "rag_semantic_breakpoint_percentile": 95,
    "rag_documents_prefix": "docs/",
    "rag_sample_corpus": None,  # None: on in sandbox, off in prod
    "rag_sync_interval_minutes": 5,
    "rag_max_results": 5,
    "rag_opensearch_standby_replicas": False,
    # Level 3: fine-tuning
    "ft_base_model_id": "amazon.nova-micro-v1:0:128k",
    "ft_customization_type": "FINE_TUNING",
    "ft_hyperparameters": {"epochCount": "2", "learningRate": "0.00001"},
    "ft_deploy": "none",
    "ft_provisioned_hours": 2,
    "ft_max_job_hours": 24,
    "ft_poll_minutes": 10,
    # Level 4: pre-training
    "hp_nat_gateways": 1,
    "hp_controller_instance_type": "ml.t3.medium",
    "hp_login_instance_type": "",
    "hp_compute_groups": [{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 0}],
    "hp_ebs_volume_gb": 100,
    "hp_fsx": False,
    "hp_fsx_throughput": 125,
    "tj_instance_type": "ml.g5.xlarge",
    "tj_instance_count": 2,
    "tj_max_runtime_hours": 4,
    "tj_spot": False,
    "tj_max_wait_hours": 8,
    "tj_in_cluster_vpc": False,
    # Account level: Bedrock model invocation logging (opt-in; one per account and region)
    "invocation_logging": False,
}
# CDK's own context keys that carry no "@" or ":" in their names.
_CDK_PLAIN_KEYS = frozenset({"acknowledged-issue-numbers"})


def load_config(context: Mapping[str, Any], *, pinned_layer_version: int) -> KitConfig:
    """Build and validate the kit configuration from a CDK context mapping."""
    unknown = sorted(
        k for k in context if k not in DEFAULTS and ":" not in k and "@" not in k and k not in _CDK_PLAIN_KEYS
    )
    if unknown:
        raise ConfigError(unknown[0], context[unknown[0]], "a known key: " + ", ".join(sorted(DEFAULTS)))

    def get(key: str) -> Any:
        return context.get(key, DEFAULTS[key])

    stage = _as_choice("stage", get("stage"), STAGES)
    prefix = _as_str("name_prefix", get("name_prefix"))
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(
            "name_prefix", prefix, "3-17 characters: lowercase letters, digits and '-', starting with a letter"
        )
    region = _as_str("region", get("region"))
    if not _REGION_RE.match(region):
        raise ConfigError("region", region, "an AWS region code such as us-east-1")
    account = _as_str("account", str(get("account")) if isinstance(get("account"), int) else get("account"))
    if account and not re.fullmatch(r"\d{12}", account):
        raise ConfigError("account", account, "empty (environment-agnostic) or a 12-digit AWS account id")

    anonymize = _as_list("guardrail_pii_anonymize", get("guardrail_pii_anonymize"), PII_TYPES)
    block = _as_list("guardrail_pii_block", get("guardrail_pii_block"), PII_TYPES)
    overlap = sorted(set(anonymize) & set(block))
    if overlap:
        raise ConfigError(
            "guardrail_pii_block", list(block), f"no type that guardrail_pii_anonymize has too ({overlap[0]})"
        )
    guardrail = GuardrailSettings(
        content_filter_strength=_as_choice(
            "guardrail_content_filter_strength", get("guardrail_content_filter_strength"), FILTER_STRENGTHS
        ),
        prompt_attack_strength=_as_choice(
            "guardrail_prompt_attack_strength", get("guardrail_prompt_attack_strength"), FILTER_STRENGTHS[1:]
        ),
        pii_anonymize=anonymize,
        pii_block=block,
        deny_investment_advice=_as_bool("guardrail_deny_investment_advice", get("guardrail_deny_investment_advice")),
    )

    retention_raw = get("log_retention_days")
    if retention_raw in (None, "", "default"):
        retention = DEFAULT_LOG_RETENTION[stage]
    else:
        retention = _as_int("log_retention_days", retention_raw, 1, 3653)
        if retention not in LOG_RETENTION_DAYS:
            raise ConfigError("log_retention_days", retention_raw, "one of " + ", ".join(map(str, LOG_RETENTION_DAYS)))

    layer = _as_int("powertools_layer_version", get("powertools_layer_version"), 0, 10_000)
    email = _as_str("alarm_email", get("alarm_email") or "")
    if email and not _EMAIL_RE.match(email):
        raise ConfigError("alarm_email", email, "empty or an e-mail address")

    rag = _rag_settings(get, stage)
    finetune = _finetune_settings(get, region)
    pretrain = _pretrain_settings(get)

    return KitConfig(
        stage=stage,
        name_prefix=prefix,
        region=region,
        account=account or None,
        text_model=parse_model_id("text_model_id", get("text_model_id"), region),
        text_temperature=_as_float("text_temperature", get("text_temperature"), 0.0, 1.0),
        text_max_tokens=_as_int("text_max_tokens", get("text_max_tokens"), 1, 4096),
        guardrail=guardrail,
        api_throttle_rate=_as_float("api_throttle_rate", get("api_throttle_rate"), 1, 10_000),
        api_throttle_burst=_as_int("api_throttle_burst", get("api_throttle_burst"), 1, 5_000),
        log_retention_days=retention,
        powertools_layer_version=layer or pinned_layer_version,
        alarm_email=email or None,
        rag=rag,
        finetune=finetune,
        pretrain=pretrain,
        invocation_logging=_as_bool("invocation_logging", get("invocation_logging")),
        tags=_as_tags("tags", get("tags")),
    )


_GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_GROUP_INSTANCES = 100  # the kit's ceiling per group; the account's quota is usually lower for GPUs


@functools.lru_cache(maxsize=1)
def hyperpod_instance_types() -> frozenset[str]:
    """HyperPod's instance types, as the SageMaker API model in botocore lists them."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("ClusterInstanceType").enum)


def check_instance_groups(groups: tuple[InstanceGroupSpec, ...], key: str = "hp_compute_groups") -> None:
    """The rules that otherwise fail cluster creation: one controller, unique names, known types, counts."""
    controllers = [g for g in groups if g.node_type == "Controller"]
    if len(controllers) != 1:
        raise ConfigError(key, [g.name for g in controllers], "exactly one Controller instance group")
    names = [g.name for g in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(key, duplicates[0], "instance group names that are unique in the cluster")
    if not any(g.node_type == "Compute" for g in groups):
        raise ConfigError(key, [], "at least one compute group")
    known = hyperpod_instance_types()
    for group in groups:
        if not _GROUP_NAME_RE.match(group.name):
            raise ConfigError(key, group.name, "a group name of letters, digits and '-' (1-63), starting alphanumeric")
        if group.instance_type not in known:
            type_key = {"Controller": "hp_controller_instance_type", "Login": "hp_login_instance_type"}.get(
                group.node_type, key
            )
            raise ConfigError(type_key, group.instance_type, "an instance type HyperPod supports (e.g. ml.g5.8xlarge)")
        low = 1 if group.node_type in ("Controller", "Login") else 0
        high = 1 if group.node_type in ("Controller", "Login") else MAX_GROUP_INSTANCES
        if not low <= group.count <= high:
            raise ConfigError(key, group.count, f"{low} to {high} instances for a {group.node_type} group")


def _pretrain_settings(get: Any) -> PretrainSettings:
    groups = [
        InstanceGroupSpec(
            "controller", "Controller", _as_str("hp_controller_instance_type", get("hp_controller_instance_type")), 1
        )
    ]
    login = _as_str("hp_login_instance_type", get("hp_login_instance_type") or "")
    if login:
        groups.append(InstanceGroupSpec("login", "Login", login, 1))
    raw = _json_or_raw(get("hp_compute_groups"))
    allowed = 'a JSON list like [{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 0}]'
    if not isinstance(raw, list) or not raw:
        raise ConfigError("hp_compute_groups", raw, allowed)
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"name", "instance_type", "count"}:
            raise ConfigError("hp_compute_groups", item, allowed)
        count = _as_int("hp_compute_groups", item["count"], 0, MAX_GROUP_INSTANCES)
        groups.append(InstanceGroupSpec(str(item["name"]), "Compute", str(item["instance_type"]), count))
    spec = tuple(groups)
    check_instance_groups(spec)
    throughput = _as_int("hp_fsx_throughput", get("hp_fsx_throughput"), 125, 1000)
    if throughput not in FSX_THROUGHPUTS:
        raise ConfigError("hp_fsx_throughput", throughput, "one of " + ", ".join(map(str, FSX_THROUGHPUTS)))
    job_type = _as_str("tj_instance_type", get("tj_instance_type"))
    if not re.fullmatch(r"ml\.[a-z0-9-]+\.[a-z0-9]+", job_type):
        raise ConfigError("tj_instance_type", job_type, "a SageMaker training instance type such as ml.g5.xlarge")
    runtime = _as_int("tj_max_runtime_hours", get("tj_max_runtime_hours"), 1, 28 * 24)
    spot = _as_bool("tj_spot", get("tj_spot"))
    wait = _as_int("tj_max_wait_hours", get("tj_max_wait_hours"), 1, 28 * 24)
    if spot and wait < runtime:
        raise ConfigError("tj_max_wait_hours", wait, f"at least tj_max_runtime_hours ({runtime}) with managed spot")
    return PretrainSettings(
        nat_gateways=_as_int("hp_nat_gateways", get("hp_nat_gateways"), 0, 3),
        groups=spec,
        ebs_volume_gb=_as_int("hp_ebs_volume_gb", get("hp_ebs_volume_gb"), 1, 16384),
        fsx=_as_bool("hp_fsx", get("hp_fsx")),
        fsx_throughput=throughput,
        job_instance_type=job_type,
        job_instance_count=_as_int("tj_instance_count", get("tj_instance_count"), 1, 64),
        job_max_runtime_hours=runtime,
        job_spot=spot,
        job_max_wait_hours=wait,
        job_in_cluster_vpc=_as_bool("tj_in_cluster_vpc", get("tj_in_cluster_vpc")),
    )


def _finetune_settings(get: Any, region: str) -> FineTuneSettings:
    base = _as_choice("ft_base_model_id", get("ft_base_model_id"), tuple(formats.MODELS))
    spec = formats.MODELS[base]
    family, regions = spec.family, spec.regions
    if region not in regions:
        raise ConfigError(
            "ft_base_model_id",
            base,
            f"a model customizable in region {region}; {base} is offered in {', '.join(regions)}",
        )
    raw = _json_or_raw(get("ft_hyperparameters"))
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError("ft_hyperparameters", raw, 'a JSON object of string values, e.g. {"epochCount": "2"}')
    problems = formats.check_hyperparameters(raw, spec)[0]
    if problems:
        raise ConfigError("ft_hyperparameters", raw, f"values {base} accepts: {problems[0]['message']}")
    deploy = _as_choice("ft_deploy", get("ft_deploy"), DEPLOY_MODES)
    if deploy == "on-demand" and not spec.on_demand_deploy:
        raise ConfigError("ft_deploy", deploy, f"'none' or 'provisioned' for {base} (on-demand serves Amazon Nova)")
    return FineTuneSettings(
        base_model_id=base,
        family=family,
        customization_type=_as_choice("ft_customization_type", get("ft_customization_type"), CUSTOMIZATION_TYPES),
        hyperparameters=dict(raw),
        deploy=deploy,
        provisioned_hours=_as_int("ft_provisioned_hours", get("ft_provisioned_hours"), 1, 72),
        max_job_hours=_as_int("ft_max_job_hours", get("ft_max_job_hours"), 1, 72),
        poll_minutes=_as_int("ft_poll_minutes", get("ft_poll_minutes"), 1, 60),
    )


def _rag_settings(get: Any, stage: str) -> RagSettings:
    embedding = _as_choice("rag_embedding_model_id", get("rag_embedding_model_id"), tuple(EMBEDDING_MODELS))
    dimensions = _as_int("rag_embedding_dimensions", get("rag_embedding_dimensions"), 1, 4096)
    if dimensions not in EMBEDDING_MODELS[embedding]:
        raise ConfigError(
            "rag_embedding_dimensions",
            dimensions,
            f"one of {', '.join(map(str, EMBEDDING_MODELS[embedding]))} for {embedding}",
        )
    chunking = ChunkingSettings(
        strategy=_as_choice("rag_chunking", get("rag_chunking"), CHUNKING_STRATEGIES),
        max_tokens=_as_int("rag_chunk_max_tokens", get("rag_chunk_max_tokens"), 20, 8192),
        overlap_percent=_as_int("rag_chunk_overlap_percent", get("rag_chunk_overlap_percent"), 1, 99),
        parent_max_tokens=_as_int("rag_hierarchical_parent_tokens", get("rag_hierarchical_parent_tokens"), 1, 8192),
        child_max_tokens=_as_int("rag_hierarchical_child_tokens", get("rag_hierarchical_child_tokens"), 1, 8192),
        overlap_tokens=_as_int("rag_hierarchical_overlap_tokens", get("rag_hierarchical_overlap_tokens"), 1, 8192),
        buffer_size=_as_int("rag_semantic_buffer_size", get("rag_semantic_buffer_size"), 0, 1),
        breakpoint_percentile=_as_int(
            "rag_semantic_breakpoint_percentile", get("rag_semantic_breakpoint_percentile"), 50, 99
        ),
    )
    if chunking.child_max_tokens >= chunking.parent_max_tokens:
        raise ConfigError(
            "rag_hierarchical_child_tokens",
            chunking.child_max_tokens,
            "fewer tokens than rag_hierarchical_parent_tokens",
        )
    prefix = _as_str("rag_documents_prefix", get("rag_documents_prefix"))
    if prefix and (not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]{1,200}/", prefix) or prefix.startswith("/")):
        raise ConfigError("rag_documents_prefix", prefix, "empty or an S3 key prefix ending in '/', e.g. 'docs/'")
    sample_raw = get("rag_sample_corpus")
    sample = stage == "sandbox" if sample_raw in (None, "", "default") else _as_bool("rag_sample_corpus", sample_raw)
    if sample and stage == "prod":
        raise ConfigError(
            "rag_sample_corpus", sample_raw, "false in the prod stage (the sample corpus is for sandboxes)"
        )
    return RagSettings(
        vector_store=_as_choice("rag_vector_store", get("rag_vector_store"), VECTOR_STORES),
        embedding_model_id=embedding,
        embedding_dimensions=dimensions,
        chunking=chunking,
        documents_prefix=prefix,
        sample_corpus=sample,
        sync_interval_minutes=_as_int("rag_sync_interval_minutes", get("rag_sync_interval_minutes"), 1, 60),
        max_results=_as_int("rag_max_results", get("rag_max_results"), 1, 25),
        opensearch_standby_replicas=_as_bool("rag_opensearch_standby_replicas", get("rag_opensearch_standby_replicas")),
    )
