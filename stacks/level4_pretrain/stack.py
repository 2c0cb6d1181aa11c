"""Level 4 — pre-training from scratch: a zero-idle training-job path and a SageMaker HyperPod (Slurm) skeleton.

Two stacks; a sandbox user deploys ``GenAiKit-4-Pretrain-Jobs`` first ($0 while idle):

    GenAiKit-4-Pretrain-Jobs:   StartExecution ──► Step Functions: input checked (a JSON object; resumeFrom a name
                                     with checkpoints) ──► SageMaker CreateTrainingJob (.sync), multi-node, torchrun in
                                     the PyTorch training image, checkpoints under checkpoints/<execution>/ (or the
                                     resumed run's), optional managed spot ──► SNS (+ EventBridge job state changes)

    GenAiKit-4-Pretrain-Cluster: VPC (private subnets, NAT from config, S3 gateway endpoint, flow logs)
                                     security group: all traffic to and from itself (EFA)
                                     lifecycle bucket (named sagemaker-…): the lifecycle/ scripts only
                                     HyperPod cluster, Slurm configured through the API: node type and
                                       partition per instance group; controller (+ login) + compute at 0
                                     FSx for Lustre (opt-in, 1.2 TiB, linked to the data bucket), mounted
                                       by HyperPod from each group's InstanceStorageConfigs
                                     EventBridge cluster and node-health events ──► SNS
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_fsx as fsx
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.config import ConfigError, KitConfig
from stacks.level4_pretrain.settings import InstanceGroupSpec, PretrainSettings
from stacks.shared.nag import arn_ref, suppress, suppress_bucket_deployment
from stacks.shared.secure_bucket import SecureBucket
from stacks.shared.stage import log_group, removal_policy, tag_stack

LEVEL = "4-pretrain"
ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE_DIR = ROOT / "lifecycle"
WORKLOAD_DIR = ROOT / "workloads" / "pretrain"
LIFECYCLE_PREFIX = "lifecycle/"
LIFECYCLE_ON_CREATE = "on_create.sh"
CODE_PREFIX = "code/"
DATA_PREFIX = "data/"
CHECKPOINTS_PREFIX = "checkpoints/"  # one sub-prefix per execution: checkpoints/<execution name>/
OUTPUT_PREFIX = "output/"
# Bounded retries for the notification publishes and the checkpoint lookup: transient errors pass, a lasting
# one still ends in the failure path within about half a minute (2 + 4 + 8 s of back-off).
RETRY_INTERVAL = Duration.seconds(2)
RETRY_ATTEMPTS = 3
RETRY_BACKOFF = 2.0
FSX_STORAGE_GIB = 1200
# API-driven Slurm configuration: node types and partitions in each group's SlurmConfig, FSx in its
# InstanceStorageConfigs, HyperPod owning slurm.conf. A provisioning_parameters.json under the lifecycle prefix
# cannot coexist with it ("cannot include both a SLURM Orchestrator Config and a provisioning_parameters.json"):
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-ref.html#sagemaker-hyperpod-ref-slurm-configuration
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-slurm-api-config-migration.html
SLURM_CONFIG_STRATEGY = "Managed"
LEGACY_SLURM_FILE = "provisioning_parameters.json"
FSX_MOUNT = "/fsx"  # FsxLustreConfig.MountPath (HyperPod's default); lifecycle.py prepares the same path
# ClusterLifeCycleConfig.SourceS3Uri: "Make sure that the S3 bucket path starts with s3://sagemaker-"; the managed
# AmazonSageMakerClusterInstanceRolePolicy reads buckets with that prefix:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ClusterLifeCycleConfig.html
LIFECYCLE_BUCKET_PREFIX = "sagemaker-"
S3_BUCKET_NAME_MAX = 63  # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
ACCOUNT_ID_LENGTH = 12
# The EC2 grants SageMaker needs to place cluster nodes and training jobs in the kit's VPC
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-prerequisites.html), scoped with the
# resource types and condition keys the Service Authorization Reference gives each action
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html): only the Describe
# actions have no resource type, so only they stay on "*".
VPC_DESCRIBE_ACTIONS = (
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
)
# Resource type network-interface, whose condition key ec2:Subnet is the ARN of the interface's subnet.
ENI_MANAGE_ACTIONS = (
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
)


def lifecycle_bucket_name(config: KitConfig, account: str) -> str:
    """``sagemaker-<prefix>-<stage>-<account>-<region>``: HyperPod's prefix, one per stage, account and region."""
    name = f"{LIFECYCLE_BUCKET_PREFIX}{config.name_prefix}-{config.stage}-{account}-{config.region}"
    length = len(name) - len(account) + ACCOUNT_ID_LENGTH if Token.is_unresolved(account) else len(name)
    if length > S3_BUCKET_NAME_MAX:
        raise ConfigError(
            "name_prefix",
            config.name_prefix,
            f"a prefix that keeps the Level 4 lifecycle bucket name within {S3_BUCKET_NAME_MAX} characters "
            f"(it would be {length} with stage {config.stage!r} and region {config.region!r})",
        )
    return name


def slurm_partitions(group: InstanceGroupSpec) -> list[str] | None:
    """A compute group's one partition, named after the group (HyperPod also puts its nodes in ``dev``)."""
    return [group.name] if group.node_type == "Compute" else None


def vpc_access_statements(
    scope: Construct, *, subnet_ids: list[str], security_group_id: str, detach: bool
) -> list[iam.PolicyStatement]:
    """The network-interface grants SageMaker needs in the kit's VPC, confined to its subnets and security group."""
    stack = Stack.of(scope)
    ec2_arn = f"arn:{stack.partition}:ec2:{stack.region}"
    subnet_arns = [f"{ec2_arn}:{stack.account}:subnet/{subnet}" for subnet in subnet_ids]
    interfaces = f"{ec2_arn}:{stack.account}:network-interface/*"
    statements = [
        iam.PolicyStatement(sid="DescribeNetworking", actions=list(VPC_DESCRIBE_ACTIONS), resources=["*"]),
        # CreateNetworkInterface authorizes the new interface, its subnet and its security groups: naming the
        # kit's subnets and group keeps new interfaces inside them.
        iam.PolicyStatement(
            sid="CreateInterfacesInKitSubnets",
            actions=["ec2:CreateNetworkInterface"],
            resources=[interfaces, *subnet_arns, f"{ec2_arn}:{stack.account}:security-group/{security_group_id}"],
        ),
        iam.PolicyStatement(
            sid="ManageInterfacesInKitSubnets",
            actions=[*ENI_MANAGE_ACTIONS, *(["ec2:DetachNetworkInterface"] if detach else [])],
            resources=[interfaces],
            conditions={"ArnEquals": {"ec2:Subnet": subnet_arns}},
        ),
    ]
    if detach:
        # DetachNetworkInterface authorizes the instance too, and HyperPod's instances are not in this account;
        # the interface side stays confined to the kit's subnets by the statement above.
        statements.append(
            iam.PolicyStatement(
                sid="DetachFromClusterInstances",
                actions=["ec2:DetachNetworkInterface"],
                resources=[f"{ec2_arn}:*:instance/*"],
            )
        )
    return statements


class ClusterNetwork(Construct):
    """A VPC whose cluster subnets are private, an S3 gateway endpoint, flow logs, and the EFA security group."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig) -> None:
        super().__init__(scope, construct_id)
        nat = config.pretrain.nat_gateways
        private_type = ec2.SubnetType.PRIVATE_WITH_EGRESS if nat else ec2.SubnetType.PRIVATE_ISOLATED
        subnets = [ec2.SubnetConfiguration(name="cluster", subnet_type=private_type, cidr_mask=20)]
        if nat:  # a public subnet exists only to hold the NAT gateway
            # Listed after the cluster subnets, so turning NAT on or off leaves their CIDR blocks (and with them
            # the subnets, FSx and the cluster, whose VpcConfig cannot change in place) as they are.
            subnets.append(ec2.SubnetConfiguration(name="nat", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=26))
        flow_logs = log_group(self, "FlowLogs", config)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            nat_gateways=nat,
            subnet_configuration=subnets,
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={"All": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        self.cluster_subnets = self.vpc.select_subnets(subnet_type=private_type)
        self.security_group = ec2.SecurityGroup(
            self,
            "ClusterSecurityGroup",
            vpc=self.vpc,
            description="HyperPod nodes, FSx and training jobs: all traffic among themselves (EFA needs it)",
            allow_all_outbound=True,
        )
        self.security_group.add_ingress_rule(self.security_group, ec2.Port.all_traffic(), "all traffic from itself")
        # allow_all_outbound=True drops a self-referencing egress rule, and EFA health checks need one: emit it.
        ec2.CfnSecurityGroupEgress(
            self,
            "SelfEgress",
            group_id=self.security_group.security_group_id,
            ip_protocol="-1",
            destination_security_group_id=self.security_group.security_group_id,
            description="all traffic to itself (EFA)",
        )
        suppress(
            self.security_group,
            "AwsSolutions-EC23",
            "The only ingress rule admits the group itself; nothing outside the cluster can connect.",
        )


class ClusterStorage(Construct):
    """The data/checkpoint bucket, the lifecycle bucket (the kit's scripts, nothing else) and optional FSx."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, network: ClusterNetwork) -> None:
        super().__init__(scope, construct_id)
        legacy = sorted(str(p.relative_to(ROOT)) for p in LIFECYCLE_DIR.rglob(LEGACY_SLURM_FILE))
        if legacy:
            raise ValueError(
                f"{', '.join(legacy)}: the cluster configures Slurm through the API, and HyperPod refuses a "
                f"{LEGACY_SLURM_FILE} next to the lifecycle scripts of such a cluster; delete it"
            )
        self.data = SecureBucket(self, "Data", config=config, versioned=True).bucket
        # Copies of lifecycle/ from this checkout and nothing else: no versions to keep, and removed with the stack
        # in every stage (the deployment below empties it first), so its fixed name is free for the next deploy.
        self.lifecycle = SecureBucket(self, "Lifecycle", config=config, versioned=False).bucket
        self.lifecycle_bucket_name = lifecycle_bucket_name(config, Stack.of(self).account)
        lifecycle_bucket = self.lifecycle.node.default_child
        assert isinstance(lifecycle_bucket, s3.CfnBucket)
        lifecycle_bucket.bucket_name = self.lifecycle_bucket_name
        self.lifecycle.apply_removal_policy(RemovalPolicy.DESTROY)
        self.file_system: fsx.CfnFileSystem | None = None
        self.fsx_mount: sagemaker.CfnCluster.ClusterFsxLustreConfigProperty | None = None
        if config.pretrain.fsx:
            subnet_id = network.cluster_subnets.subnet_ids[0]
            self.file_system = fsx.CfnFileSystem(
                self,
                "Lustre",
                file_system_type="LUSTRE",
                storage_capacity=FSX_STORAGE_GIB,
                subnet_ids=[subnet_id],
                security_group_ids=[network.security_group.security_group_id],
                lustre_configuration=fsx.CfnFileSystem.LustreConfigurationProperty(
                    deployment_type="PERSISTENT_2",
                    per_unit_storage_throughput=config.pretrain.fsx_throughput,
                    data_compression_type="LZ4",
                ),
            )
            self.file_system.apply_removal_policy(removal_policy(config))
            fsx.CfnDataRepositoryAssociation(
                self,
                "DataLink",
                file_system_id=self.file_system.ref,
                file_system_path="/data",
                data_repository_path=f"s3://{self.data.bucket_name}/{DATA_PREFIX}",
                batch_import_meta_data_on_create=True,
                s3=fsx.CfnDataRepositoryAssociation.S3Property(
                    auto_import_policy=fsx.CfnDataRepositoryAssociation.AutoImportPolicyProperty(
                        events=["NEW", "CHANGED", "DELETED"]
                    ),
                    auto_export_policy=fsx.CfnDataRepositoryAssociation.AutoExportPolicyProperty(
                        events=["NEW", "CHANGED", "DELETED"]
                    ),
                ),
            )
            # HyperPod mounts it on every node of a group whose InstanceStorageConfigs carry this.
            self.fsx_mount = sagemaker.CfnCluster.ClusterFsxLustreConfigProperty(
                dns_name=self.file_system.attr_dns_name,
                mount_name=self.file_system.attr_lustre_mount_name,
                mount_path=FSX_MOUNT,
            )
        self.lifecycle_upload = s3deploy.BucketDeployment(
            self,
            "LifecycleScripts",
            sources=[s3deploy.Source.asset(str(LIFECYCLE_DIR), exclude=["**/__pycache__", "README.md"])],
            destination_bucket=self.lifecycle,
            destination_key_prefix=LIFECYCLE_PREFIX,
            prune=True,
            retain_on_delete=False,
            memory_limit=256,
        )
        suppress_bucket_deployment(self.lifecycle_upload, self.lifecycle)
        self.lifecycle_uri = f"s3://{self.lifecycle.bucket_name}/{LIFECYCLE_PREFIX}"


def instance_group(
    group: InstanceGroupSpec,
    *,
    settings: PretrainSettings,
    role_arn: str,
    lifecycle_uri: str,
    fsx_mount: sagemaker.CfnCluster.ClusterFsxLustreConfigProperty | None,
) -> sagemaker.CfnCluster.ClusterInstanceGroupProperty:
    """One instance group as API-driven Slurm declares it: node type, partition, storage (EBS + FSx when on)."""
    storage = [
        sagemaker.CfnCluster.ClusterInstanceStorageConfigProperty(
            ebs_volume_config=sagemaker.CfnCluster.ClusterEbsVolumeConfigProperty(
                volume_size_in_gb=settings.ebs_volume_gb
            )
        )
    ]
    if fsx_mount is not None:  # every group, so /fsx is shared by the controller, the login node and the workers
        storage.append(sagemaker.CfnCluster.ClusterInstanceStorageConfigProperty(fsx_lustre_config=fsx_mount))
    return sagemaker.CfnCluster.ClusterInstanceGroupProperty(
        instance_group_name=group.name,
        instance_type=group.instance_type,
        instance_count=group.count,
        execution_role=role_arn,
        threads_per_core=1,
        life_cycle_config=sagemaker.CfnCluster.ClusterLifeCycleConfigProperty(
            source_s3_uri=lifecycle_uri, on_create=LIFECYCLE_ON_CREATE
        ),
        instance_storage_configs=storage,
        slurm_config=sagemaker.CfnCluster.ClusterSlurmConfigProperty(
            node_type=group.node_type, partition_names=slurm_partitions(group)
        ),
    )


class HyperPodCluster(Construct):
    """The Slurm cluster: one controller, an optional login node, compute groups that default to 0."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        network: ClusterNetwork,
        storage: ClusterStorage,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        settings = config.pretrain
        subnet_ids = [network.cluster_subnets.subnet_ids[0]]
        # No aws:SourceArn / aws:SourceAccount: HyperPod documents this role's trust without them, and SageMaker's
        # confused-deputy page lists no form for cluster instances; a condition the service does not supply
        # would stop the nodes from assuming the role.
        # https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-prerequisites.html
        # https://docs.aws.amazon.com/sagemaker/latest/dg/security-confused-deputy-prevention.html
        self.role = iam.Role(
            self,
            "InstanceRole",
            description="Level 4: HyperPod cluster instances",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSageMakerClusterInstanceRolePolicy")
            ],
        )
        # The bucket's sagemaker- prefix is what HyperPod requires; reading the lifecycle prefix explicitly keeps
        # node creation independent of the managed policy's bucket pattern.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadLifecycleScripts",
                actions=["s3:GetObject", "s3:ListBucket"],
                resources=[storage.lifecycle.bucket_arn, storage.lifecycle.arn_for_objects(f"{LIFECYCLE_PREFIX}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="UseDataAndCheckpoints",
                actions=["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                resources=[storage.data.bucket_arn, storage.data.arn_for_objects("*")],
            )
        )
        # Cluster instances in a customer VPC attach network interfaces in its subnets; auto-resume detaches them.
        for statement in vpc_access_statements(
            self, subnet_ids=subnet_ids, security_group_id=network.security_group.security_group_id, detach=True
        ):
            self.role.add_to_policy(statement)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TagClusterNetworkInterfaces",
                actions=["ec2:CreateTags"],
                resources=[f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:network-interface/*"],
            )
        )
        suppress(
            self.role,
            "AwsSolutions-IAM4",
            "AmazonSageMakerClusterInstanceRolePolicy is the policy HyperPod documents for cluster instances "
            "(node agent, logs, health reporting).",
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSageMakerClusterInstanceRolePolicy"],
        )
        suppress(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "EC2 Describe* actions have no resource type; network interfaces are created only in the cluster's "
            "subnet and security group and managed only there (ec2:Subnet), and the instances they detach from "
            "belong to HyperPod's account; nodes read and write any key of the kit's data bucket (datasets, "
            "checkpoints) and read the lifecycle prefix.",
            applies_to=[
                "Resource::*",
                f"Resource::{arn_ref(storage.data)}/*",
                f"Resource::{arn_ref(storage.lifecycle)}/{LIFECYCLE_PREFIX}*",
                f"Resource::arn:{stack.partition}:ec2:{stack.region}:<AWS::AccountId>:network-interface/*",
                f"Resource::arn:{stack.partition}:ec2:{stack.region}:*:instance/*",
            ],
        )

        groups = [
            instance_group(
                group,
                settings=settings,
                role_arn=self.role.role_arn,
                lifecycle_uri=storage.lifecycle_uri,
                fsx_mount=storage.fsx_mount,
            )
            for group in settings.groups
        ]
        self.cluster = sagemaker.CfnCluster(
            self,
            "Cluster",
            cluster_name=config.resource_name("hyperpod"),
            orchestrator=sagemaker.CfnCluster.OrchestratorProperty(
                slurm=sagemaker.CfnCluster.ClusterOrchestratorSlurmConfigProperty(
                    slurm_config_strategy=SLURM_CONFIG_STRATEGY
                )
            ),
            node_recovery="Automatic",
            instance_groups=groups,
            vpc_config=sagemaker.CfnCluster.VpcConfigProperty(
                security_group_ids=[network.security_group.security_group_id], subnets=subnet_ids
            ),
        )
        # The scripts are in S3 and the role can use the VPC before any node starts.
        self.cluster.node.add_dependency(storage.lifecycle_upload)
        self.cluster.node.add_dependency(self.role)


def _notifications(scope: Construct, config: KitConfig, name: str) -> sns.Topic:
    """The level's topic. Its policy grants no service principal anything: EventBridge publishes through the
    per-rule roles of ``notification_rule``, Step Functions through its own role."""
    topic = sns.Topic(scope, "Notifications", display_name=config.resource_name(name), enforce_ssl=True)
    if config.alarm_email:
        topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
    suppress(
        topic,
        "AwsSolutions-SNS2",
        "Notifications carry job and cluster names and states only; EventBridge cannot publish to a topic "
        "encrypted with the AWS managed key, and a customer managed key would cost $1/month idle.",
    )
    return topic


def notification_rule(
    scope: Construct,
    construct_id: str,
    config: KitConfig,
    *,
    topic: sns.ITopic,
    name: str,
    description: str,
    event_pattern: events.EventPattern,
) -> events.Rule:
    """An EventBridge rule on the default bus that publishes to ``topic`` through a role only this rule may assume.

    CDK's ``targets.SnsTopic`` grants ``events.amazonaws.com`` ``sns:Publish`` in the topic policy with no condition,
    so any rule (of any account) could publish; and EventBridge's guide says a topic policy for EventBridge cannot
    carry Condition blocks, so that grant cannot be confined to the rule. A target role can: SNS targets may use an
    execution role, and EventBridge gives the rule's ARN as ``aws:SourceArn`` when it assumes a rule target's role.
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sns-permissions
    https://docs.aws.amazon.com/eventbridge/latest/userguide/cross-service-confused-deputy-prevention.html
    The rule is named, so its ARN is known to the trust policy without a reference back to the rule (a cycle).
    """
    stack = Stack.of(scope)
    rule_name = config.resource_name(name)
    rule_arn = stack.format_arn(service="events", resource="rule", resource_name=rule_name)
    role = iam.Role(
        scope,
        f"{construct_id}Delivery",
        description=f"Assumed by the EventBridge rule {rule_name} only, to publish to the level's topic",
        assumed_by=iam.ServicePrincipal(
            "events.amazonaws.com",
            conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnEquals": {"aws:SourceArn": rule_arn},
            },
        ),
    )
    # role= makes the target publish as the role; CDK grants the role sns:Publish on the topic, not the topic policy.
    return events.Rule(
        scope,
        construct_id,
        rule_name=rule_name,
        description=description,
        event_pattern=event_pattern,
        targets=[targets.SnsTopic(topic, role=role)],
    )


class InputChecks:
    """The states before the training job: the execution input is checked, and the checkpoint prefix chosen.

    Any JSON value can start an execution. Given a list or a string, a ResultPath (the task's ``$.training``, the
    Catch's ``$.error``) has no object to write into, and a JSONPath that finds nothing is a ``States.Runtime``
    error, which no Catch catches, not even ``States.ALL``: the execution failed and no one was told. Every path
    the input can take therefore goes through Choice rules (IsPresent, Is<type>, a string match on the serialized
    input) before anything reads a field or writes a result, and bad input ends in the failure notification:

        ReadInput (wraps the input: $.input) ─► CheckInputType: a string, number, boolean or null ─► rejected
        ─► SerializeInput ─► CheckInput: not "{…}" (a list) ─► rejected
                                       no resumeFrom ─► NewCheckpoints: checkpoints/<this execution>/
                                       resumeFrom not a string ─► rejected
                                       else ─► FindCheckpoints (ListObjectsV2, 1 key) ─► none ─► rejected
                                                                                     └─► ResumeCheckpoints:
                                                                                         checkpoints/<resumeFrom>/
    """

    def __init__(
        self,
        scope: Construct,
        *,
        bucket_name: str,
        train: sfn.IChainable,
        invalid: sfn.IChainable,
        failed: sfn.IChainable,
    ) -> None:
        stack = Stack.of(scope)
        prefix_uri = f"s3://{bucket_name}/{CHECKPOINTS_PREFIX}{{}}/"

        def rejected(state_id: str, cause: str, *values: str) -> sfn.Pass:
            """A Pass that states why in ``$.error`` (as a Catch would) and goes on to the failure notification."""
            error = {"Error": "InvalidInput", "Cause": sfn.JsonPath.format(cause, *values) if values else cause}
            state = sfn.Pass(scope, state_id, parameters=error, result_path="$.error")
            state.next(invalid)
            return state

        usage = 'the execution input must be a JSON object: {} or {"resumeFrom": "<earlier execution name>"}'
        not_an_object = rejected("InputNotAnObject", usage)
        self.start = sfn.Pass(
            scope,
            "ReadInput",
            comment="Any JSON value can start an execution: wrap it, so that every later path finds an object",
            parameters={"input": sfn.JsonPath.entire_payload},
        )
        serialize = sfn.Pass(
            scope,
            "SerializeInput",
            comment="An object serializes as {…}, a list as […]: Choice rules cannot tell them apart otherwise",
            parameters={"text": sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.input"))},
            result_path="$.inputText",
        )
        self.start.next(
            sfn.Choice(scope, "CheckInputType")
            .when(
                sfn.Condition.or_(
                    sfn.Condition.is_string("$.input"),
                    sfn.Condition.is_numeric("$.input"),
                    sfn.Condition.is_boolean("$.input"),
                    sfn.Condition.is_null("$.input"),
                ),
                not_an_object,
            )
            .otherwise(serialize)
        )
        new = sfn.Pass(
            scope,
            "NewCheckpoints",
            comment="A new run: this execution's own prefix, empty (a training job name is never reused)",
            parameters={"s3Uri": sfn.JsonPath.format(prefix_uri, sfn.JsonPath.string_at("$$.Execution.Name"))},
            result_path="$.checkpoints",
        )
        resume = sfn.Pass(
            scope,
            "ResumeCheckpoints",
            comment="Resume: the earlier run's prefix; SageMaker copies its checkpoints down before training",
            parameters={"s3Uri": sfn.JsonPath.format(prefix_uri, sfn.JsonPath.string_at("$.input.resumeFrom"))},
            result_path="$.checkpoints",
        )
        find = sfn.CustomState(
            scope,
            "FindCheckpoints",
            state_json={
                "Type": "Task",
                "Comment": "Resuming a run that left no checkpoints would silently train from step 0",
                "Resource": f"arn:{stack.partition}:states:::aws-sdk:s3:listObjectsV2",
                "Parameters": {
                    "Bucket": bucket_name,
                    "Prefix.$": f"States.Format('{CHECKPOINTS_PREFIX}{{}}/', $.input.resumeFrom)",
                    "MaxKeys": 1,
                },
                "ResultSelector": {"keys.$": "$.KeyCount"},
                "ResultPath": "$.found",
            },
        )
        find.add_retry(
            errors=["States.ALL"], interval=RETRY_INTERVAL, max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF
        )
        find.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        none_found = rejected(
            "NothingToResume",
            f"no checkpoints under {prefix_uri}: resumeFrom names the execution whose run to continue",
            sfn.JsonPath.string_at("$.input.resumeFrom"),
        )
        find.next(
            sfn.Choice(scope, "CheckpointsFound")
            .when(sfn.Condition.number_greater_than("$.found.keys", 0), resume)
            .otherwise(none_found)
        )
        serialize.next(
            sfn.Choice(scope, "CheckInput")
            .when(sfn.Condition.not_(sfn.Condition.string_matches("$.inputText.text", "{*")), not_an_object)
            .when(sfn.Condition.not_(sfn.Condition.is_present("$.input.resumeFrom")), new)
            .when(
                sfn.Condition.not_(sfn.Condition.is_string("$.input.resumeFrom")),
                rejected("ResumeFromNotAString", "resumeFrom must be a string: the name of an earlier execution"),
            )
            .otherwise(find)
        )
        new.next(train)
        resume.next(train)


class PretrainClusterStack(Stack):
    """``GenAiKit-4-Pretrain-Cluster``: network, storage, lifecycle scripts and the HyperPod cluster."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit Level 4: SageMaker HyperPod (Slurm) cluster skeleton",
            **kwargs,
        )
        tag_stack(self, config, LEVEL)
        self.network = ClusterNetwork(self, "Network", config=config)
        self.storage = ClusterStorage(self, "Storage", config=config, network=self.network)
        self.hyperpod = HyperPodCluster(self, "HyperPod", config=config, network=self.network, storage=self.storage)
        topic = _notifications(self, config, "hyperpod")
        cluster_arn = self.hyperpod.cluster.attr_cluster_arn
        notification_rule(
            self,
            "ClusterEvents",
            config,
            topic=topic,
            name="hyperpod-events",
            description="Level 4: HyperPod cluster state changes and node health events",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker HyperPod Cluster State Change", "SageMaker HyperPod Cluster Node Health Event"],
                resources=[cluster_arn],
            ),
        )
        CfnOutput(self, "ClusterName", value=self.hyperpod.cluster.ref)
        CfnOutput(self, "ClusterArn", value=cluster_arn)
        CfnOutput(self, "DataBucketName", value=self.storage.data.bucket_name)
        CfnOutput(self, "LifecycleScriptsUri", value=self.storage.lifecycle_uri)
        CfnOutput(self, "NotificationTopicArn", value=topic.topic_arn)
        if self.storage.file_system is not None:
            CfnOutput(self, "FsxDnsName", value=self.storage.file_system.attr_dns_name)


class PretrainJobsStack(Stack):
    """``GenAiKit-4-Pretrain-Jobs``: multi-node SageMaker training jobs started by Step Functions; $0 idle."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        network: ClusterNetwork | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit Level 4: zero-idle multi-node SageMaker training jobs",
            **kwargs,
        )
        tag_stack(self, config, LEVEL)
        from workloads.pretrain import sagemaker_job  # the workload's own facts: image, hyperparameters, paths

        settings = config.pretrain
        job_name = f"{config.name_prefix}-pretrain-"  # + the execution name
        self.bucket = SecureBucket(self, "Artifacts", config=config, versioned=True).bucket
        # The training code as the toolkit expects it (code/sourcedir.tar.gz) and the sample corpus (data/).
        code_upload = s3deploy.BucketDeployment(
            self,
            "TrainingCode",
            sources=[s3deploy.Source.asset(_sourcedir_asset())],
            destination_bucket=self.bucket,
            prune=False,
            retain_on_delete=False,
            memory_limit=256,
        )
        corpus_upload = s3deploy.BucketDeployment(
            self,
            "SampleCorpus",
            sources=[s3deploy.Source.asset(str(WORKLOAD_DIR / "data"))],
            destination_bucket=self.bucket,
            destination_key_prefix=DATA_PREFIX,
            prune=False,
            retain_on_delete=False,
            memory_limit=256,
        )
        for upload in (code_upload, corpus_upload):
            suppress_bucket_deployment(upload, self.bucket)
        topic = _notifications(self, config, "training")

        # SageMaker supplies both keys when a training job assumes its role:
        # https://docs.aws.amazon.com/sagemaker/latest/dg/security-confused-deputy-prevention.html
        role = iam.Role(
            self,
            "TrainingRole",
            description="Level 4: assumed by SageMaker to run the kit's training jobs",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:training-job/*"
                    },
                },
            ),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadCodeAndData",
                actions=["s3:GetObject"],
                resources=[
                    self.bucket.arn_for_objects(f"{CODE_PREFIX}*"),
                    self.bucket.arn_for_objects(f"{DATA_PREFIX}*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(sid="ListArtifacts", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="SyncCheckpoints",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[self.bucket.arn_for_objects(f"{CHECKPOINTS_PREFIX}*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteModel", actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects(f"{OUTPUT_PREFIX}*")]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PullTrainingImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[
                    f"arn:{self.partition}:ecr:{self.region}:{sagemaker_job.IMAGE_ACCOUNT}:repository/"
                    f"{sagemaker_job.IMAGE_REPOSITORY}"
                ],
            )
        )
        role.add_to_policy(iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:/aws/sagemaker/TrainingJobs*"
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainingMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}},
            )
        )
        vpc_config = network is not None and settings.job_in_cluster_vpc
        if vpc_config and network is not None:
            for statement in vpc_access_statements(
                self,
                subnet_ids=network.cluster_subnets.subnet_ids,
                security_group_id=network.security_group.security_group_id,
                detach=False,
            ):
                role.add_to_policy(statement)

        # CreateTrainingJob.sync as a plain ASL task: CDK's SageMakerCreateTrainingJob does not expose
        # CheckpointConfig or managed spot, and the checkpoint sync is what makes resume-after-interruption work.
        image = sagemaker_job.image_uri(self.region, gpu=not settings.job_instance_type.startswith(("ml.m", "ml.c")))
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": settings.job_max_runtime_hours * 3600}
        if settings.job_spot:
            stopping["MaxWaitTimeInSeconds"] = settings.job_max_wait_hours * 3600
        request: dict[str, Any] = {
            # The execution name (36 characters when Step Functions picks it) after a prefix of at most 17:
            # within SageMaker's 63 characters, and `kit l4` finds the job from the execution.
            "TrainingJobName.$": f"States.Format('{job_name}{{}}', $$.Execution.Name)",
            "RoleArn": role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "HyperParameters": sagemaker_job.hyperparameters(
                submit_directory=f"s3://{self.bucket.bucket_name}/{CODE_PREFIX}sourcedir.tar.gz",
                region=self.region,
                instance_type=settings.job_instance_type,
            ),
            "InputDataConfig": [
                {
                    "ChannelName": sagemaker_job.TRAIN_CHANNEL,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": f"s3://{self.bucket.bucket_name}/{DATA_PREFIX}",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.bucket.bucket_name}/{OUTPUT_PREFIX}"},
            # The prefix the input check chose: this execution's own, or the resumed run's. SageMaker copies what
            # is there to LocalPath before training and keeps uploading LocalPath to it.
            "CheckpointConfig": {"S3Uri.$": "$.checkpoints.s3Uri", "LocalPath": sagemaker_job.CHECKPOINT_LOCAL_PATH},
            "ResourceConfig": {
                "InstanceType": settings.job_instance_type,
                "InstanceCount": settings.job_instance_count,
                "VolumeSizeInGB": 50,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": settings.job_spot,
        }
        if vpc_config and network is not None:
            request["VpcConfig"] = {
                "SecurityGroupIds": [network.security_group.security_group_id],
                "Subnets": network.cluster_subnets.subnet_ids,
            }
        train = sfn.CustomState(
            self,
            "TrainModel",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{self.partition}:states:::sagemaker:createTrainingJob.sync",
                "Parameters": request,
                "ResultPath": "$.training",
            },
        )
        succeeded = tasks.SnsPublish(
            self,
            "NotifySucceeded",
            topic=topic,
            subject="genai-spectrum-kit pre-training",
            message=sfn.TaskInput.from_object(
                {
                    "outcome": "succeeded",
                    "job": sfn.JsonPath.string_at("$.training.TrainingJobName"),
                    "model": sfn.JsonPath.string_at("$.training.ModelArtifacts.S3ModelArtifacts"),
                    "checkpoints": sfn.JsonPath.string_at("$.checkpoints.s3Uri"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        failure_message = sfn.TaskInput.from_object(
            {
                "outcome": "failed",
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "error": sfn.JsonPath.object_at("$.error"),
            }
        )
        failed, invalid = (
            tasks.SnsPublish(
                self,
                state_id,
                topic=topic,
                subject="genai-spectrum-kit pre-training",
                message=failure_message,
                result_path=sfn.JsonPath.DISCARD,
            )
            for state_id in ("NotifyFailed", "NotifyInvalidInput")
        )
        for notify in (succeeded, failed, invalid):
            notify.add_retry(
                errors=["States.ALL"], interval=RETRY_INTERVAL, max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF
            )
        train.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        train.next(succeeded).next(sfn.Succeed(self, "Done"))
        failed.next(sfn.Fail(self, "TrainingFailed", error="TrainingJobFailed", cause="See the notification"))
        invalid.next(sfn.Fail(self, "InputRejected", error="InvalidInput", cause="See the notification"))
        checks = InputChecks(self, bucket_name=self.bucket.bucket_name, train=train, invalid=invalid, failed=failed)
        logs = log_group(self, "StateMachineLogs", config)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=config.resource_name("pretrain"),
            definition_body=sfn.DefinitionBody.from_chainable(checks.start),
            timeout=Duration.hours(settings.job_max_wait_hours + 2),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        notification_rule(
            self,
            "TrainingJobStateChange",
            config,
            topic=topic,
            name="pretrain-job-events",
            description="Level 4: state changes of this kit's training jobs",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Training Job State Change"],
                detail={"TrainingJobName": [{"prefix": job_name}]},
            ),
        )
        machine_role = self.state_machine.role
        machine_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="RunTrainingJobs",
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                ],
                resources=[f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:training-job/{job_name}*"],
            )
        )
        machine_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PassTrainingRole",
                actions=["iam:PassRole"],
                resources=[role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        # FindCheckpoints: is there anything under checkpoints/<resumeFrom>/ (ListObjectsV2 is authorized by
        # s3:ListBucket; s3:prefix keeps the listing to the checkpoint prefix).
        machine_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="FindCheckpoints",
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{CHECKPOINTS_PREFIX}*"]}},
            )
        )
        # .sync integrations watch the job through a Step Functions managed EventBridge rule.
        machine_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WatchTrainingJobs",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    f"arn:{self.partition}:events:{self.region}:{self.account}:rule/"
                    "StepFunctionsGetEventsForSageMakerTrainingJobsRule"
                ],
            )
        )
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Training jobs read code and data and write checkpoints and the model under fixed prefixes of the "
            "kit's bucket, log to SageMaker's own log groups, and publish metrics under /aws/sagemaker/*; ECR's "
            "login token, metric publishing and EC2 Describe* have no resource-level scoping; in the cluster VPC "
            "they manage network interfaces only in its subnets (ec2:Subnet).",
            applies_to=[
                "Resource::*",
                *(
                    f"Resource::{arn_ref(self.bucket)}/{p}*"
                    for p in (CODE_PREFIX, DATA_PREFIX, CHECKPOINTS_PREFIX, OUTPUT_PREFIX)
                ),
                f"Resource::arn:{self.partition}:logs:{self.region}:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs*",
                *(
                    [f"Resource::arn:{self.partition}:ec2:{self.region}:<AWS::AccountId>:network-interface/*"]
                    if vpc_config
                    else []
                ),
            ],
        )
        suppress(
            machine_role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Training job names are made per execution under the kit's prefix; X-Ray and CloudWatch Logs "
            "delivery support no resource-level permissions.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:{self.partition}:sagemaker:{self.region}:<AWS::AccountId>:training-job/{job_name}*",
            ],
        )
        self.role, self.topic = role, topic
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "ArtifactsBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "NotificationTopicArn", value=topic.topic_arn)


def _sourcedir_asset() -> str:
    """A folder holding code/sourcedir.tar.gz, built deterministically from workloads/pretrain."""
    from workloads.pretrain.package_sourcedir import sourcedir_bytes

    out = ROOT / "build" / "sourcedir-asset"  # git-ignored; rewritten on every synth
    (out / CODE_PREFIX).mkdir(parents=True, exist_ok=True)
    (out / CODE_PREFIX / "sourcedir.tar.gz").write_bytes(sourcedir_bytes())
    return str(out)
