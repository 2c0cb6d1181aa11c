"""Level 4 (pre-training) settings: the HyperPod cluster's network, instance groups and storage, and the
training-job path's instances and limits."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from stacks.shared.settings import (
    Allowed,
    AsWhole,
    ConfigError,
    Flag,
    Invalid,
    Problem,
    Settings,
    Text,
    TrainingInstanceType,
    Whole,
    fits_shape,
    json_or_text,
    service_model,
)
from stacks.shared.training_jobs import MAX_JOB_HOURS

# FSx for Lustre PERSISTENT_2 throughput per unit of storage (MB/s per TiB):
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-fsx-filesystem-lustreconfiguration.html
FsxThroughput = Literal[125, 250, 500, 1000]
FSX_THROUGHPUTS: tuple[int, ...] = get_args(FsxThroughput)
MAX_GROUP_INSTANCES = 100  # the kit's ceiling per group; the account's quota is usually lower for GPUs
# HyperPod's universal Slurm partition, which holds every node (docs/level-4-pretrain.md): a compute group's
# partition is named after the group, so no group may take this name.
DEFAULT_PARTITION = "dev"
# Training jobs: MaxRuntimeInSeconds and MaxWaitTimeInSeconds at most 28 days (stacks/shared/training_jobs.py).


@dataclass(frozen=True)
class InstanceGroupSpec:
    """One HyperPod instance group: its name, Slurm node type, instance type and count."""

    name: str
    node_type: str  # Controller | Login | Compute
    instance_type: str
    count: int


@functools.lru_cache(maxsize=1)
def hyperpod_instance_types() -> frozenset[str]:
    """HyperPod's instance types, as the SageMaker API model in botocore lists them."""
    return frozenset(service_model("sagemaker").shape_for("ClusterInstanceType").enum)


@functools.lru_cache(maxsize=1)
def max_instance_groups() -> int:
    """The most instance groups a cluster takes: ClusterInstanceGroupSpecifications' max in botocore's SageMaker
    model (the registry schema's ClusterInstanceGroupsList says 100 too)."""
    return int(service_model("sagemaker").shape_for("ClusterInstanceGroupSpecifications").metadata["max"])


def check_instance_groups(groups: tuple[InstanceGroupSpec, ...], key: str = "hp_compute_groups") -> None:
    """The rules that otherwise fail cluster creation: one controller, unique names, known types, counts, and at
    most the API's number of groups. Every problem is reported, not only the first."""
    found: list[Problem] = []
    controllers = [g for g in groups if g.node_type == "Controller"]
    if len(controllers) != 1:
        found.append(Problem(key, [g.name for g in controllers], "exactly one Controller instance group"))
    if len(groups) > max_instance_groups():
        most = max_instance_groups()
        allowed = f"at most {most} instance groups in the cluster, the controller's and login's included"
        found.append(Problem(key, f"{len(groups)} groups", allowed))
    names = [g.name for g in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        found.append(Problem(key, duplicates[0], "instance group names that are unique in the cluster"))
    if not any(g.node_type == "Compute" for g in groups):
        found.append(Problem(key, [], "at least one compute group"))
    known = hyperpod_instance_types()
    for group in groups:
        # InstanceGroupName: botocore's ClusterInstanceGroupName (1-63 characters and its pattern),
        # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ClusterInstanceGroupSpecification.html
        if not fits_shape(group.name, service_model("sagemaker").shape_for("ClusterInstanceGroupName")):
            allowed = "a group name of letters, digits and '-' (1-63), starting alphanumeric"
            found.append(Problem(key, group.name, allowed))
        if group.node_type == "Compute" and group.name == DEFAULT_PARTITION:
            allowed = f"a name other than {DEFAULT_PARTITION}, HyperPod's default Slurm partition of every node"
            found.append(Problem(key, group.name, allowed))
        if group.instance_type not in known:
            type_key = {"Controller": "hp_controller_instance_type", "Login": "hp_login_instance_type"}.get(
                group.node_type, key
            )
            found.append(
                Problem(type_key, group.instance_type, "an instance type HyperPod supports (e.g. ml.g5.8xlarge)")
            )
        low = 1 if group.node_type in ("Controller", "Login") else 0
        high = 1 if group.node_type in ("Controller", "Login") else MAX_GROUP_INSTANCES
        if not low <= group.count <= high:
            found.append(Problem(key, group.count, f"{low} to {high} instances for a {group.node_type} group"))
    if found:
        raise ConfigError.of(found)


def _string(raw: Any) -> str:
    """A JSON string as it is (a null or a number is no group name nor instance type: str() made null "None")."""
    if not isinstance(raw, str):
        raise ValueError("not a string")
    return raw


class ComputeGroup(BaseModel):
    """One item of hp_compute_groups (exactly these three keys); check_instance_groups checks the values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, BeforeValidator(_string)]
    instance_type: Annotated[str, BeforeValidator(_string)]
    count: Whole


def _login_type(raw: Any) -> Any:
    return raw or ""


class PretrainSettings(Settings):
    nat_gateways: Whole = Field(
        alias="hp_nat_gateways",
        description="NAT gateways of the cluster VPC (1, or 2 for one per AZ): the nodes, all in the first cluster "
        "subnet, reach SageMaker, SSM and CloudWatch Logs through the first; a second serves only the other AZ's "
        "subnet, which only tj_in_cluster_vpc training jobs may use",
        ge=1,
        le=2,
    )  # At most one per availability zone of the VPC (network.py: max_azs=2; CDK builds no more NAT gateways than
    # AZs). At least one: the VPC has no interface endpoints, so without NAT the nodes could reach no SageMaker, SSM
    # or CloudWatch Logs endpoint (Session Manager needs ec2messages, ssm and ssmmessages over 443:
    # session-manager-getting-started-privatelink.html), and every AWS HyperPod Slurm VPC sample uses a NAT gateway.
    controller_instance_type: Annotated[Text, Allowed("an instance type HyperPod supports (e.g. ml.t3.medium)")] = (
        Field(
            alias="hp_controller_instance_type",
            description="The Slurm controller's instance type (the controller always runs)",
        )
    )
    login_instance_type: Annotated[
        Text, BeforeValidator(_login_type), Allowed("empty or an instance type HyperPod supports")
    ] = Field(alias="hp_login_instance_type", description="An optional login node's instance type (empty: none)")
    compute_groups: Annotated[
        tuple[ComputeGroup, ...],
        BeforeValidator(json_or_text),
        Field(min_length=1),
        Allowed('a JSON list like [{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 0}]'),
    ] = Field(
        alias="hp_compute_groups",
        description="Compute instance groups: unique names (not dev), HyperPod instance types, instance counts",
    )
    # EBS volume per node: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ClusterEbsVolumeConfig.html
    ebs_volume_gb: Whole = Field(alias="hp_ebs_volume_gb", description="GB of EBS per cluster node", ge=1, le=16384)
    fsx: Flag = Field(alias="hp_fsx", description="FSx for Lustre on or off")
    fsx_throughput: Annotated[FsxThroughput, AsWhole] = Field(
        alias="hp_fsx_throughput", description="FSx for Lustre throughput, MB/s per TiB"
    )
    job_instance_type: TrainingInstanceType = Field(
        alias="tj_instance_type", description="The training job's instance type"
    )
    job_instance_count: Whole = Field(
        alias="tj_instance_count", description="The training job's instance count", ge=1, le=64
    )
    job_max_runtime_hours: Whole = Field(
        alias="tj_max_runtime_hours", description="The training job's maximum runtime", ge=1, le=MAX_JOB_HOURS
    )
    job_spot: Flag = Field(alias="tj_spot", description="Managed spot training")
    job_max_wait_hours: Whole = Field(
        alias="tj_max_wait_hours",
        description="The longest wait with managed spot (at least the runtime)",
        ge=1,
        le=MAX_JOB_HOURS,
    )
    job_in_cluster_vpc: Flag = Field(
        alias="tj_in_cluster_vpc",
        description="Run training jobs in the cluster stack's private subnets (deploy the cluster first)",
    )

    @field_validator("compute_groups")
    @classmethod
    def _cluster_rules(cls, compute: tuple[ComputeGroup, ...], info: ValidationInfo) -> tuple[ComputeGroup, ...]:
        if "controller_instance_type" in info.data and "login_instance_type" in info.data:
            check_instance_groups(
                _groups(info.data["controller_instance_type"], info.data["login_instance_type"], compute)
            )
        return compute

    @field_validator("job_max_wait_hours")
    @classmethod
    def _spot_waits_for_the_runtime(cls, wait: int, info: ValidationInfo) -> int:
        runtime = info.data.get("job_max_runtime_hours", 0)
        if info.data.get("job_spot") and wait < runtime:
            raise Invalid(f"at least tj_max_runtime_hours ({runtime}) with managed spot")
        return wait

    @functools.cached_property
    def groups(self) -> tuple[InstanceGroupSpec, ...]:
        return _groups(self.controller_instance_type, self.login_instance_type, self.compute_groups)

    @property
    def controller(self) -> InstanceGroupSpec:
        return next(g for g in self.groups if g.node_type == "Controller")


def _groups(controller: str, login: str, compute: tuple[ComputeGroup, ...]) -> tuple[InstanceGroupSpec, ...]:
    """The cluster's instance groups: the controller, the optional login node, then the compute groups."""
    groups = [InstanceGroupSpec("controller", "Controller", controller, 1)]
    if login:
        groups.append(InstanceGroupSpec("login", "Login", login, 1))
    groups += [InstanceGroupSpec(g.name, "Compute", g.instance_type, g.count) for g in compute]
    return tuple(groups)
