"""Idle cost and per-use unit prices of each stack, read from its synthesized template and kit/prices.json.

Idle cost is what a deployed stack bills per month with no traffic. Every resource type in a template must be
either priced here from its properties (alarms, KMS keys, NAT gateways and their addresses, interface VPC
endpoints, OpenSearch Serverless OCUs, FSx for Lustre storage, HyperPod instances and their EBS volumes) or listed
in ``FREE_WHILE_IDLE``; any other type is reported as unpriced, and `kit cost` fails on it, so a new resource can
never silently count as $0.

Per-use prices follow from what a template holds: resource types, model ids, and actions its IAM policies grant (a
role that may call CreateModelImportJob brings the prices of Custom Model Import). What a kept model bills while idle
is listed per kept model (``StackCost.while_kept``), not counted in the stack's idle cost: the stack does not own it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from kit import KitError, KitUsageError
from stacks.shared.facts import PROFILE_GEOGRAPHIES

PRICES_FILE = Path(__file__).with_name("prices.json")

# Types that bill nothing while idle: pay per request, per GB stored or delivered, or free. Listed one by one on
# purpose: a type missing here and from the priced ones below makes `kit cost` fail.
FREE_WHILE_IDLE = frozenset(
    {
        "AWS::ApiGateway::Account",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::GatewayResponse",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Model",
        "AWS::ApiGateway::RequestValidator",
        "AWS::ApiGateway::Resource",
        "AWS::ApiGateway::RestApi",
        "AWS::Bedrock::DataSource",
        "AWS::Bedrock::Guardrail",
        "AWS::Bedrock::GuardrailVersion",
        "AWS::Bedrock::KnowledgeBase",  # the vector store bills, not the knowledge base
        "AWS::Bedrock::Prompt",
        "AWS::Bedrock::PromptVersion",
        "AWS::CDK::Metadata",
        "AWS::EC2::FlowLog",  # billed per GB of logs delivered
        "AWS::EC2::InternetGateway",
        "AWS::EC2::Route",
        "AWS::EC2::RouteTable",
        "AWS::EC2::SecurityGroup",
        "AWS::EC2::SecurityGroupEgress",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::Subnet",
        "AWS::EC2::SubnetRouteTableAssociation",
        "AWS::EC2::VPC",
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::Events::Rule",
        "AWS::FSx::DataRepositoryAssociation",
        "AWS::IAM::Policy",
        "AWS::IAM::Role",
        "AWS::KMS::Alias",
        "AWS::Lambda::EventInvokeConfig",  # retry and destination settings
        "AWS::Lambda::Function",  # no provisioned concurrency
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",  # billed per GB ingested and stored
        "AWS::OpenSearchServerless::AccessPolicy",
        "AWS::OpenSearchServerless::Index",
        "AWS::OpenSearchServerless::SecurityPolicy",
        "AWS::S3::Bucket",  # billed per GB stored and per request
        # Per invocation, 14 million a month free (https://aws.amazon.com/eventbridge/pricing/): an hourly schedule
        # and the short function it runs cost a few tenths of a cent a month, like the Level 2 sync schedule.
        "AWS::Scheduler::Schedule",
        "AWS::Scheduler::ScheduleGroup",  # a container for schedules, not billed
        "AWS::S3::BucketPolicy",
        "AWS::S3Vectors::Index",  # billed per GB stored and per query, no floor
        "AWS::S3Vectors::VectorBucket",
        "AWS::SNS::Subscription",
        "AWS::SNS::Topic",
        "AWS::SNS::TopicPolicy",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::SSM::Parameter",  # a standard parameter: no charge
        "AWS::StepFunctions::StateMachine",  # standard workflows bill per state transition
        "Custom::BedrockFineTuneCleanup",  # runs only when the stack is deleted
        "Custom::BedrockInvocationLogging",  # an account setting; the logs bill per GB delivered
        "Custom::KitStageLock",  # a Lambda-backed check that runs on deploy only
        "Custom::CDKBucketDeployment",
        "Custom::OpenSearchServerlessWait",  # runs only while the stack is created or updated
        "Custom::PretrainJobsCleanup",  # runs only when the stack is deleted
        "Custom::RagIngestionCleanup",  # runs only when the stack is deleted
        "Custom::SageMakerFineTuneCleanup",  # runs only when the stack is deleted
        "Custom::S3AutoDeleteObjects",
        "Custom::S3BucketNotifications",
        "Custom::VpcRestrictDefaultSG",
    }
)
# Types priced from their properties by _idle_charges (one flat monthly price per resource, or a formula; a
# resource whose formula comes to no charge, e.g. a gateway endpoint, is reported as free).
PRICED_WHILE_IDLE = frozenset(
    {
        "AWS::ApiGateway::Stage",  # free unless its cache cluster is on (billed by the hour; not priced here)
        "AWS::CloudWatch::Alarm",
        "AWS::EC2::EIP",
        "AWS::EC2::NatGateway",
        "AWS::EC2::VPCEndpoint",  # Gateway endpoints are free, Interface endpoints bill per AZ and hour
        "AWS::FSx::FileSystem",
        "AWS::KMS::Key",
        "AWS::OpenSearchServerless::Collection",
        "AWS::SageMaker::Cluster",
        "AWS::SecretsManager::Secret",
    }
)
# The prefixes of Bedrock's cross-region inference profile ids, as the kit's config accepts them. No "us-gov":
# the config refuses GovCloud regions and that prefix, so no template of the kit carries such an id.
_GEO_PREFIXES = frozenset(PROFILE_GEOGRAPHIES)
# The additional EBS volume of a HyperPod instance group "is attached to each instance within the ... instance
# group and mounted to /opt/sagemaker" (ClusterEbsVolumeConfig, SageMaker API reference and registry schema), so
# it bills per instance while the instance exists:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ClusterEbsVolumeConfig.html
HYPERPOD_EBS = "sagemaker.hyperpod_ebs"
# Interface endpoints bill "for each hour that your VPC endpoint remains provisioned in each Availability Zone"
# (one subnet per AZ); gateway endpoints (S3, DynamoDB) are free: https://aws.amazon.com/privatelink/pricing/
INTERFACE_ENDPOINT = "vpc.interface_endpoint"


@dataclass(frozen=True)
class Price:
    """One entry of kit/prices.json."""

    id: str
    usd: float
    unit: str
    label: str
    date: str
    source: str
    approximate: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PriceTable:
    """The prices of one region."""

    region: str
    hours_per_month: float
    entries: Mapping[str, Price]

    def find(self, price_id: str) -> Price | None:
        return self.entries.get(price_id)


def available_regions(path: Path = PRICES_FILE) -> list[str]:
    """The regions kit/prices.json covers."""
    return sorted(_read_prices(path)["regions"])


def load_prices(region: str, path: Path = PRICES_FILE) -> PriceTable:
    """The price table of ``region``; a region the file does not cover is an error naming the ones it does."""
    data = _read_prices(path)
    regions = data["regions"]
    if region not in regions:
        raise KitUsageError(f"{path.name} has no prices for {region}; it covers {', '.join(sorted(regions))}")
    entries = {
        price_id: Price(
            id=price_id,
            usd=float(raw["usd"]),
            unit=raw["unit"],
            label=raw["label"],
            date=raw["date"],
            source=raw["source"],
            approximate=raw.get("approximate"),
            note=raw.get("note"),
        )
        for price_id, raw in regions[region].items()
    }
    return PriceTable(region=region, hours_per_month=float(data["hours_per_month"]), entries=entries)


def _read_prices(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise KitError(f"cannot read the price table {path}: {err}") from err
    return data


@dataclass(frozen=True)
class IdleItem:
    """A line of a stack's idle cost, e.g. 5 CloudWatch alarms at $0.10 a month."""

    label: str
    quantity: float
    unit_usd: float
    unit: str
    monthly_usd: float
    price_id: str
    approximate: bool
    hours_per_month: float | None = None  # set for hourly prices
    # What the item bills per month once its charge has grown (a rotated KMS key after its second rotation).
    later_monthly_usd: float | None = None

    @property
    def detail(self) -> str:
        """How the figure is made, e.g. ``1 x $0.045/hour x 730 h``."""
        hours = f" x {self.hours_per_month:g} h" if self.hours_per_month else ""
        later = f"; {money(self.later_monthly_usd)} from the second rotation" if self.later_monthly_usd else ""
        return f"{self.quantity:g} x {money(self.unit_usd)}/{self.unit}{hours}{later}"


@dataclass(frozen=True)
class UnitPrice:
    """A per-use price that applies to a stack (``usd`` is None when the table has no figure for it)."""

    label: str
    usd: float | None
    unit: str
    price_id: str
    approximate: bool = False
    note: str | None = None


UNKNOWN_TYPE = "is not in the kit's idle-cost table"


@dataclass(frozen=True)
class Unpriced:
    """A resource the idle-cost rules cannot price."""

    stack_id: str
    logical_id: str
    resource_type: str
    reason: str
    missing_price: str | None = None  # the kit/prices.json entry whose absence is the reason, if that is it

    def __str__(self) -> str:
        return f"{self.stack_id}: {self.resource_type} ({self.logical_id}) {self.reason}"


@dataclass(frozen=True)
class StackCost:
    """Idle cost and per-use prices of one stack."""

    stack_id: str
    description: str
    resource_count: int
    idle_items: tuple[IdleItem, ...]
    free_types: tuple[str, ...]
    per_use: tuple[UnitPrice, ...]
    unpriced: tuple[Unpriced, ...] = field(default=())
    # What bills while idle for each model a run keeps (the model is not a resource of the stack, so these are not
    # in idle_usd): e.g. an imported model's storage per Custom Model Unit and month.
    while_kept: tuple[UnitPrice, ...] = field(default=())

    @property
    def idle_usd(self) -> float:
        return round(float(sum(item.monthly_usd for item in self.idle_items)), 2)

    @property
    def idle_later_usd(self) -> float:
        """The idle cost once every charge that grows with time has grown (equal to idle_usd when none does)."""
        later = (item.later_monthly_usd or item.monthly_usd for item in self.idle_items)
        return round(float(sum(later)), 2)


class UnpricedResourceError(KitError):
    """Raised when a template holds a resource type the idle-cost table does not know."""

    def __init__(self, unpriced: Iterable[Unpriced]) -> None:
        self.unpriced = tuple(unpriced)
        listing = "; ".join(str(item) for item in self.unpriced)
        super().__init__(f"cannot price the idle cost of {listing}. {unpriced_advice(self.unpriced)}")


def unpriced_advice(unpriced: Iterable[Unpriced]) -> str:
    """What to do about ``unpriced``: a missing price entry is added to the table, an unknown type classified."""
    items = list(unpriced)
    missing = sorted({item.missing_price for item in items if item.missing_price})
    advice = []
    if missing:
        entries = ", ".join(f'"{price_id}"' for price_id in missing)
        advice.append(
            f"Add the price {entries} to kit/prices.json (for every region it covers, with its date and source)"
        )
    if any(item.reason == UNKNOWN_TYPE for item in items):
        advice.append(
            "Price the type in kit/costs.py and kit/prices.json, or add it to FREE_WHILE_IDLE in kit/costs.py "
            "if it bills nothing while idle"
        )
    if any(not item.missing_price and item.reason != UNKNOWN_TYPE for item in items):
        advice.append("Extend the type's idle-cost rule in kit/costs.py to cover this configuration")
    return "; ".join(advice)


def money(usd: float) -> str:
    """$1,234.50 from a dollar up; below that as many decimals as the price has ($0.035, $0.0000133334)."""
    if usd == 0 or abs(usd) >= 1:
        return f"${usd:,.2f}"
    digits = f"{usd:.10f}".rstrip("0")
    return f"${usd:.2f}" if len(digits.split(".")[1]) < 2 else f"${digits}"


class _NotLiteral(Exception):
    pass


def _literal(props: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    """The value at ``path`` in ``props``; an intrinsic function there cannot be priced offline."""
    value: Any = props
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    if isinstance(value, Mapping) and any(key.startswith("Fn::") or key == "Ref" for key in value):
        raise _NotLiteral(".".join(path))
    return value


@dataclass(frozen=True)
class _Charge:
    label: str
    quantity: float
    price: Price
    hourly: bool
    # The quantity it bills later at the same price, when that grows with time (a rotated KMS key).
    later_quantity: float | None = None


class _MissingPrice(LookupError):
    def __init__(self, price_id: str, region: str) -> None:
        super().__init__(f"needs the price {price_id!r}, which kit/prices.json lacks for {region}")
        self.price_id = price_id


def _ebs_gb_per_instance(group: Mapping[str, Any]) -> float:
    """GB of the additional EBS volumes one instance of a HyperPod instance group carries."""
    configs = _literal(group, "InstanceStorageConfigs", default=[]) or []
    return float(sum(_literal(config, "EbsVolumeConfig", "VolumeSizeInGB", default=0) or 0 for config in configs))


def _idle_charges(kind: str, props: Mapping[str, Any], prices: PriceTable) -> list[_Charge]:
    """What one priced resource bills per month while idle; raises LookupError why it cannot be priced."""

    def need(price_id: str) -> Price:
        price = prices.find(price_id)
        if price is None:
            raise _MissingPrice(price_id, prices.region)
        return price

    if kind == "AWS::CloudWatch::Alarm":
        # The table's price is a standard-resolution alarm on one metric. A high-resolution alarm (a period under
        # 60 s) costs three times as much, and a metric-math or anomaly-detection alarm bills per metric it
        # reads (https://aws.amazon.com/cloudwatch/pricing/): those are refused, not priced as one.
        if _literal(props, "Metrics", default=None) is not None:
            raise LookupError("reads Metrics (metric math or anomaly detection, billed per metric); not priced")
        period = _literal(props, "Period", default=None)
        if not isinstance(period, int) or period < 60:
            raise LookupError(f"has Period {period!r}; only standard-resolution alarms (60 s or more) are priced")
        return [_Charge("CloudWatch alarms", 1, need("cloudwatch.alarm"), hourly=False)]
    if kind == "AWS::KMS::Key":
        # Automatic rotation bills each of the key's first two rotations (yearly by default) another key-month a
        # month; later ones add nothing (https://aws.amazon.com/kms/pricing/).
        rotated = _literal(props, "EnableKeyRotation", default=False) is True
        label = "KMS customer managed keys" + (" (rotated yearly)" if rotated else "")
        return [_Charge(label, 1, need("kms.key"), hourly=False, later_quantity=3 if rotated else None)]
    if kind == "AWS::SecretsManager::Secret":
        return [_Charge("Secrets Manager secrets", 1, need("secretsmanager.secret"), hourly=False)]
    if kind == "AWS::EC2::NatGateway":
        return [_Charge("NAT gateways", 1, need("vpc.nat_gateway"), hourly=True)]
    if kind == "AWS::EC2::EIP":
        return [_Charge("Public IPv4 addresses (EIP)", 1, need("vpc.public_ipv4"), hourly=True)]
    if kind == "AWS::ApiGateway::Stage":
        # A stage's cache cluster bills per hour while it exists (CacheClusterEnabled, default false in the
        # registry schema; https://aws.amazon.com/api-gateway/pricing/): the kit prices none, so one is refused.
        if _literal(props, "CacheClusterEnabled", default=False) is not False:
            raise LookupError("has a cache cluster (billed by the hour), which the kit does not price")
        return []
    if kind == "AWS::EC2::VPCEndpoint":
        endpoint_type = _literal(props, "VpcEndpointType", default="Gateway")  # the registry schema's default
        if endpoint_type == "Gateway":
            return []
        if endpoint_type != "Interface":
            raise LookupError(f"is a {endpoint_type} endpoint; only Gateway and Interface endpoints are priced")
        subnets = _literal(props, "SubnetIds", default=None)
        if not isinstance(subnets, list) or not subnets:
            raise LookupError("is an Interface endpoint without a literal SubnetIds list (it bills per subnet's AZ)")
        return [_Charge("Interface VPC endpoints (per AZ)", len(subnets), need(INTERFACE_ENDPOINT), hourly=True)]
    if kind == "AWS::OpenSearchServerless::Collection":
        standby = _literal(props, "StandbyReplicas", default="ENABLED")
        ocus = 1 if standby == "DISABLED" else 2
        label = f"OpenSearch Serverless OCU floor (standby replicas {'off' if ocus == 1 else 'on'})"
        return [_Charge(label, ocus, need("opensearch_serverless.ocu"), hourly=True)]
    if kind == "AWS::FSx::FileSystem":
        if _literal(props, "FileSystemType") != "LUSTRE":
            raise LookupError("is not a Lustre file system; only FSx for Lustre PERSISTENT_2 is priced")
        deployment = _literal(props, "LustreConfiguration", "DeploymentType")
        if deployment != "PERSISTENT_2":
            raise LookupError(f"has deployment type {deployment}; only PERSISTENT_2 is priced")
        # Metadata IOPS provisioned by the user bill besides the storage (https://aws.amazon.com/fsx/lustre/pricing/).
        if _literal(props, "LustreConfiguration", "MetadataConfiguration", "Mode", default="AUTOMATIC") != "AUTOMATIC":
            raise LookupError("has user-provisioned metadata IOPS, which the kit does not price")
        tier = _literal(props, "LustreConfiguration", "PerUnitStorageThroughput")
        capacity = _literal(props, "StorageCapacity", default=0)
        price = need(f"fsx.lustre_persistent2:{tier}")
        return [_Charge(f"FSx for Lustre storage ({tier} MB/s/TiB)", float(capacity), price, hourly=False)]
    if kind == "AWS::SageMaker::Cluster":
        charges = []
        for group in _literal(props, "InstanceGroups", default=[]) or []:
            count = _literal(group, "InstanceCount", default=0)
            if not count:
                continue
            instance_type = _literal(group, "InstanceType")
            name = _literal(group, "InstanceGroupName", default="?")
            price = need(f"sagemaker.hyperpod:{instance_type}")
            charges.append(_Charge(f"HyperPod {instance_type} ({name})", float(count), price, hourly=True))
            gb = _ebs_gb_per_instance(group)
            if gb:
                label = "HyperPod instance EBS volumes (/opt/sagemaker)"
                charges.append(_Charge(label, float(count) * gb, need(HYPERPOD_EBS), hourly=False))
        return charges
    raise AssertionError(f"{kind} is listed as priced but has no rule")  # pragma: no cover - a table/code mismatch


def analyze_stack(stack_id: str, template: Mapping[str, Any], prices: PriceTable) -> StackCost:
    """Idle items, free types, per-use prices and unpriced resources of one template (never raises on types)."""
    resources: Mapping[str, Any] = template.get("Resources", {})
    grouped: dict[str, tuple[str, float, Price, bool, float | None]] = {}
    free: set[str] = set()
    unpriced: list[Unpriced] = []
    for logical_id, resource in sorted(resources.items()):
        kind = resource.get("Type", "?")
        props = resource.get("Properties", {}) or {}
        if kind in FREE_WHILE_IDLE:
            free.add(kind)
            continue
        if kind not in PRICED_WHILE_IDLE:
            unpriced.append(Unpriced(stack_id, logical_id, kind, UNKNOWN_TYPE))
            continue
        try:
            charges = _idle_charges(kind, props, prices)
        except _NotLiteral as err:
            unpriced.append(Unpriced(stack_id, logical_id, kind, f"has a non-literal {err} (cannot price offline)"))
            continue
        except _MissingPrice as err:
            unpriced.append(Unpriced(stack_id, logical_id, kind, str(err.args[0]), missing_price=err.price_id))
            continue
        except LookupError as err:
            unpriced.append(Unpriced(stack_id, logical_id, kind, str(err.args[0])))
            continue
        if not charges:
            free.add(kind)
        for charge in charges:
            key = f"{charge.price.id}|{charge.label}"
            _, quantity, _, _, later = grouped.get(key, (charge.label, 0.0, charge.price, charge.hourly, None))
            if charge.later_quantity is not None:
                later = (later or 0.0) + charge.later_quantity
            grouped[key] = (charge.label, quantity + charge.quantity, charge.price, charge.hourly, later)

    def monthly(quantity: float, price: Price, hourly: bool) -> float:
        return round(quantity * price.usd * (prices.hours_per_month if hourly else 1), 2)

    items = [
        IdleItem(
            label=label,
            quantity=quantity,
            unit_usd=price.usd,
            unit=price.unit,
            monthly_usd=monthly(quantity, price, hourly),
            price_id=price.id,
            approximate=price.approximate is not None,
            hours_per_month=prices.hours_per_month if hourly else None,
            later_monthly_usd=monthly(later, price, hourly) if later is not None else None,
        )
        for label, quantity, price, hourly, later in grouped.values()
    ]
    items.sort(key=lambda item: (-item.monthly_usd, item.label))
    description = str(template.get("Description", "")).removeprefix("genai-spectrum-kit").lstrip(" :")
    return StackCost(
        stack_id=stack_id,
        description=description,
        resource_count=len(resources),
        idle_items=tuple(items),
        free_types=tuple(sorted(free)),
        per_use=tuple(per_use_prices(template, prices)),
        unpriced=tuple(unpriced),
        while_kept=tuple(kept_model_prices(template, prices)),
    )


def cost_report(templates: Mapping[str, Mapping[str, Any]], prices: PriceTable) -> list[StackCost]:
    """Every stack's costs, sorted by stack id; raises UnpricedResourceError naming every unknown resource type."""
    report = [analyze_stack(stack_id, templates[stack_id], prices) for stack_id in sorted(templates)]
    unpriced = [item for stack in report for item in stack.unpriced]
    if unpriced:
        raise UnpricedResourceError(unpriced)
    return report


def _base_model(model_id: str) -> str:
    """amazon.nova-micro-v1 from us.amazon.nova-micro-v1:0, amazon.nova-micro-v1:0:128k or the bare id."""
    first, _, rest = model_id.partition(".")
    if first in _GEO_PREFIXES and rest:
        model_id = rest
    return model_id.split(":", 1)[0]


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


# Custom Model Import: importing is free; an imported model bills inference per Custom Model Unit (CMU) of each running
# copy in 5-minute windows from its first successful call, and storage per CMU and month while it exists. Bedrock
# sets the CMUs per copy at import (GetImportedModel customModelUnitsPerModelCopy):
# https://docs.aws.amazon.com/bedrock/latest/userguide/import-model-calculate-cost.html
IMPORT_ACTION = "bedrock:CreateModelImportJob"
CUSTOMIZE_ACTION = "bedrock:CreateModelCustomizationJob"
# Bills per model unit and hour while it exists, used or not (Level 3 with ft_deploy=provisioned, per run).
PROVISIONED_THROUGHPUT = "bedrock.provisioned_throughput"
IMPORTED_MODEL_INFERENCE = "bedrock.imported_model_inference"
IMPORTED_MODEL_STORAGE = "bedrock.imported_model_storage"
PROVISION_ACTION = "bedrock:CreateProvisionedModelThroughput"


def granted_actions(template: Mapping[str, Any]) -> set[str]:
    """The actions (lower case, wildcards kept) that the template's IAM policies allow."""
    documents: list[Any] = []
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {}) or {}
        if resource.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props.get("PolicyDocument"))
        elif resource.get("Type") == "AWS::IAM::Role":
            documents.extend(policy.get("PolicyDocument") for policy in props.get("Policies", []) or [])
    actions: set[str] = set()
    for document in documents:
        statements = document.get("Statement", []) if isinstance(document, Mapping) else []
        for statement in [statements] if isinstance(statements, Mapping) else statements:
            if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
                continue
            listed = statement.get("Action", [])
            actions.update(a.lower() for a in ([listed] if isinstance(listed, str) else listed) if isinstance(a, str))
    return actions


def grants(actions: Iterable[str], action: str) -> bool:
    """Whether one of ``actions`` (as granted_actions returns them) allows ``action``."""
    return any(fnmatchcase(action.lower(), granted) for granted in actions)


def _unit_price(price_id: str, prices: PriceTable) -> UnitPrice:
    price = prices.find(price_id)
    if price is None:
        return UnitPrice(price_id, None, "", price_id, note="not in kit/prices.json")
    return UnitPrice(price.label, price.usd, price.unit, price_id, price.approximate is not None, price.note)


def customized_base_models(template: Mapping[str, Any]) -> list[str]:
    """The base models a template's roles may customize (their ids as the stack names them, versions dropped)."""
    if not grants(granted_actions(template), CUSTOMIZE_ACTION):
        return []
    text = "\n".join(_strings(template.get("Resources", {})))
    return sorted({_base_model(m) for m in re.findall(r"[a-z0-9-]+\.[a-z0-9-]+:\d+:\d+k", text)})


def kept_model_prices(template: Mapping[str, Any], prices: PriceTable) -> list[UnitPrice]:
    """What each model a run keeps bills while idle: the storage of a model the template's roles may import, and
    of a custom model they may create by customizing a base model (https://aws.amazon.com/bedrock/pricing/: "custom
    model storage" per model-month)."""
    kept = [_unit_price(f"bedrock.custom_model_storage:{model}", prices) for model in customized_base_models(template)]
    if grants(granted_actions(template), IMPORT_ACTION):
        kept.append(_unit_price(IMPORTED_MODEL_STORAGE, prices))
    return kept


def per_use_prices(template: Mapping[str, Any], prices: PriceTable) -> list[UnitPrice]:
    """The per-use prices that apply to a stack, from the resource types and models its template names."""
    resources = [r for _, r in sorted(template.get("Resources", {}).items())]
    kinds = {r.get("Type") for r in resources}
    text = "\n".join(_strings(template.get("Resources", {})))
    ids: list[str] = []
    extra: list[UnitPrice] = []

    def add(price_id: str) -> None:
        if price_id not in ids:
            ids.append(price_id)

    models = sorted(
        {_base_model(m) for m in re.findall(r"(?:foundation-model|inference-profile)/([A-Za-z0-9.:-]+)", text)}
    )
    for model in models:
        found = False
        for direction in ("input_tokens", "output_tokens"):
            if prices.find(f"bedrock.{direction}:{model}"):
                add(f"bedrock.{direction}:{model}")
                found = True
        if not found:
            extra.append(UnitPrice(f"Bedrock {model} tokens", None, "1M tokens", f"bedrock.input_tokens:{model}"))
    for resource in resources:
        if resource.get("Type") != "AWS::Bedrock::Guardrail":
            continue
        props = resource.get("Properties", {})
        if "ContentPolicyConfig" in props:
            add("bedrock.guardrail_content_filter")
        if "TopicPolicyConfig" in props:
            add("bedrock.guardrail_denied_topics")
        if "SensitiveInformationPolicyConfig" in props:
            add("bedrock.guardrail_sensitive_info")
    for model in customized_base_models(template):
        add(f"bedrock.customization_tokens:{model}")
        add(f"bedrock.custom_model_storage:{model}")
    if grants(granted_actions(template), IMPORT_ACTION):
        add(IMPORTED_MODEL_INFERENCE)
        add(IMPORTED_MODEL_STORAGE)
    # A stack that may buy Provisioned Throughput (Level 3 with ft_deploy=provisioned) bills for it per model unit
    # and hour while it exists, used or not; the hourly rate depends on the model and the table has none:
    # https://aws.amazon.com/bedrock/pricing/ (Provisioned Throughput, no commitment).
    if grants(granted_actions(template), PROVISION_ACTION):
        extra.append(
            UnitPrice(
                "Bedrock Provisioned Throughput, no commitment",
                None,
                "model unit-hour",
                PROVISIONED_THROUGHPUT,
                note="the model's hourly rate per model unit (https://aws.amazon.com/bedrock/pricing/), for "
                "ft_provisioned_hours per run, used or not",
            )
        )
    if "AWS::ApiGateway::RestApi" in kinds:
        add("apigateway.rest_requests")
    providers = _custom_resource_providers(template)
    architectures = sorted(
        {
            arch
            for logical_id, r in sorted(template.get("Resources", {}).items())
            if r.get("Type") == "AWS::Lambda::Function" and logical_id not in providers
            for arch in _architectures(r)
        }
    )
    if architectures:
        add("lambda.requests")
        for arch in architectures:
            add(f"lambda.gb_second:{arch}")
    # Active tracing records traces (a function's first request each second, so every scheduled run), billed
    # beyond the monthly free traces; a state machine with tracing on records its executions too.
    traced = any(
        (
            r.get("Type") == "AWS::Lambda::Function"
            and (r.get("Properties", {}).get("TracingConfig") or {}).get("Mode") == "Active"
        )
        or (
            r.get("Type") == "AWS::StepFunctions::StateMachine"
            and (r.get("Properties", {}).get("TracingConfiguration") or {}).get("Enabled") is True
        )
        for r in resources
    )
    if traced:
        add("xray.traces_recorded")
    for resource in resources:
        if resource.get("Type") == "AWS::StepFunctions::StateMachine":
            definition = "\n".join(_strings(resource.get("Properties", {})))
            if "createTrainingJob" in definition:
                for instance_type in sorted(set(re.findall(r"\bml\.[a-z0-9]+\.[a-z0-9]+\b", definition))):
                    add(f"sagemaker.training:{instance_type}")
        if resource.get("Type") == "AWS::SageMaker::Cluster":
            for group in resource.get("Properties", {}).get("InstanceGroups", []):
                if group.get("InstanceCount") == 0 and isinstance(group.get("InstanceType"), str):
                    add(f"sagemaker.hyperpod:{group['InstanceType']}")
                    extra.extend(_node_volume_price(group, prices))
    # Standard workflows bill per state transition, Express ones per request and duration.
    machine_types = {
        r.get("Properties", {}).get("StateMachineType", "STANDARD")
        for r in resources
        if r.get("Type") == "AWS::StepFunctions::StateMachine"
    }
    if "STANDARD" in machine_types:
        add("stepfunctions.transitions")
    if "EXPRESS" in machine_types:
        add("stepfunctions.express_requests")
    for kind, price_ids in (
        ("AWS::SQS::Queue", ["sqs.requests"]),
        ("AWS::SNS::Topic", ["sns.publishes"]),
        ("AWS::OpenSearchServerless::Collection", ["opensearch_serverless.ocu", "opensearch_serverless.storage"]),
        ("AWS::S3Vectors::Index", ["s3vectors.storage", "s3vectors.put", "s3vectors.queries"]),
        ("AWS::S3::Bucket", ["s3.standard_storage"]),
        ("AWS::KMS::Key", ["kms.requests"]),
        ("AWS::EC2::NatGateway", ["vpc.nat_data_processed"]),
    ):
        if kind in kinds:
            for price_id in price_ids:
                add(price_id)
    return [_unit_price(price_id, prices) for price_id in ids] + extra


def _node_volume_price(group: Mapping[str, Any], prices: PriceTable) -> list[UnitPrice]:
    """What each node a scaled-to-0 HyperPod group adds bills for its EBS volume, per node and month."""
    try:
        gb = _ebs_gb_per_instance(group)
    except _NotLiteral:
        return []
    if not gb:
        return []
    label = f"HyperPod EBS volume per {group.get('InstanceGroupName', '?')} node ({gb:g} GB)"
    price = prices.find(HYPERPOD_EBS)
    if price is None:
        return [UnitPrice(label, None, "node-month", HYPERPOD_EBS, note="not in kit/prices.json")]
    note = f"{gb:g} GB x {money(price.usd)}/{price.unit}, billed while the node exists"
    return [UnitPrice(label, round(gb * price.usd, 2), "node-month", HYPERPOD_EBS, price.approximate is not None, note)]


def _custom_resource_providers(template: Mapping[str, Any]) -> set[str]:
    """Logical ids of the functions behind custom resources (they run at deploy time only)."""
    providers = set()
    for resource in template.get("Resources", {}).values():
        if str(resource.get("Type", "")).startswith("Custom::"):
            token = resource.get("Properties", {}).get("ServiceToken")
            if isinstance(token, Mapping) and "Fn::GetAtt" in token:
                providers.add(str(token["Fn::GetAtt"][0]))
    return providers


def _architectures(resource: Mapping[str, Any]) -> list[str]:
    architectures = resource.get("Properties", {}).get("Architectures") or ["x86_64"]
    return [arch for arch in architectures if isinstance(arch, str)]


def report_json(report: Iterable[StackCost], prices: PriceTable, *, stage: str | None) -> dict[str, Any]:
    """The machine-readable form of a cost report (`kit cost --json`)."""
    stacks = list(report)
    return {
        "region": prices.region,
        "stage": stage,
        "currency": "USD",
        "hours_per_month": prices.hours_per_month,
        "total_idle_usd_month": round(sum(stack.idle_usd for stack in stacks), 2),
        "stacks": [
            {
                "stack": stack.stack_id,
                "description": stack.description,
                "resources": stack.resource_count,
                "idle_usd_month": stack.idle_usd,
                "idle_usd_month_later": stack.idle_later_usd,
                "idle_items": [
                    {
                        "item": item.label,
                        "quantity": item.quantity,
                        "unit_usd": item.unit_usd,
                        "unit": item.unit,
                        "monthly_usd": item.monthly_usd,
                        "later_monthly_usd": item.later_monthly_usd,
                        "price_id": item.price_id,
                        "approximate": item.approximate,
                    }
                    for item in stack.idle_items
                ],
                "free_while_idle": list(stack.free_types),
                "per_use": [
                    {
                        "item": price.label,
                        "usd": price.usd,
                        "unit": price.unit,
                        "price_id": price.price_id,
                        "approximate": price.approximate,
                    }
                    for price in stack.per_use
                ],
                "while_kept": [
                    {
                        "item": price.label,
                        "usd": price.usd,
                        "unit": price.unit,
                        "price_id": price.price_id,
                        "approximate": price.approximate,
                        "per": "kept model",
                    }
                    for price in stack.while_kept
                ],
            }
            for stack in stacks
        ],
    }
