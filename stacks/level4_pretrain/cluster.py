"""The HyperPod cluster: Slurm configured through the API, a controller (+ login) and compute groups that default
to 0, and the role its instances assume.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.level4_pretrain.network import ClusterNetwork, interfaces_arn, subnet_arns, vpc_access_statements
from stacks.level4_pretrain.settings import InstanceGroupSpec, PretrainSettings
from stacks.level4_pretrain.storage import LIFECYCLE_PREFIX, ClusterStorage
from stacks.shared.deployment import Deployment
from stacks.shared.nag import arn_ref, suppress
from stacks.shared.secure_bucket import emptied_after

# OnInitComplete ("Extended mode") runs the script "after HyperPod configures the default software on the
# instance", so /fsx is mounted when the script opens it. OnCreate ("Customer Managed mode") would run too: with the
# API-driven configuration HyperPod still sets Slurm up and mounts FSx
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-slurm-api-config-migration.html).
# Registry schema AWS::SageMaker::Cluster, ClusterLifeCycleConfig:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-sagemaker-cluster-clusterlifecycleconfig.html
LIFECYCLE_ON_INIT_COMPLETE = "on_init_complete.sh"
# API-driven Slurm configuration: node types and partitions in each group's SlurmConfig, FSx in its
# InstanceStorageConfigs, HyperPod owning slurm.conf. A provisioning_parameters.json under the lifecycle prefix
# cannot coexist with it ("cannot include both a SLURM Orchestrator Config and a provisioning_parameters.json"):
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-ref.html#sagemaker-hyperpod-ref-slurm-configuration
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-slurm-api-config-migration.html
SLURM_CONFIG_STRATEGY = "Managed"


def slurm_partitions(group: InstanceGroupSpec) -> list[str] | None:
    """A compute group's one partition, named after the group (HyperPod also puts its nodes in ``dev``)."""
    return [group.name] if group.node_type == "Compute" else None


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
            source_s3_uri=lifecycle_uri, on_init_complete=LIFECYCLE_ON_INIT_COMPLETE
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
        deployment: Deployment,
        pretrain: PretrainSettings,
        network: ClusterNetwork,
        storage: ClusterStorage,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
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
        # HyperPod's VPC permissions include ec2:CreateTags on network interfaces. The Service Authorization Reference
        # gives CreateTags on network-interface the condition key ec2:Subnet, and the action the key ec2:CreateAction
        # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html): tagging an
        # existing interface is confined to the cluster subnet like the other interface actions, and tags given in
        # the CreateNetworkInterface request itself, which EC2 authorizes as CreateTags with ec2:CreateAction
        # (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html), go only on
        # interfaces that request creates, which CreateInterfacesInKitSubnets confines to the subnet and group.
        interfaces = interfaces_arn(self)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TagInterfacesInClusterSubnet",
                actions=["ec2:CreateTags"],
                resources=[interfaces],
                conditions={"ArnEquals": {"ec2:Subnet": subnet_arns(self, subnet_ids)}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TagInterfacesOnCreate",
                actions=["ec2:CreateTags"],
                resources=[interfaces],
                conditions={"StringEquals": {"ec2:CreateAction": "CreateNetworkInterface"}},
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
            "On '*': the five ec2:Describe* actions, which have no resource type, and "
            "ec2:DeleteNetworkInterfacePermission, whose network-interface resource type is optional and whose "
            "request names only a permission id (no interface to scope by). On network-interface/*: "
            "ec2:CreateNetworkInterface only with the cluster's subnet and security group; "
            "ec2:CreateNetworkInterfacePermission, ec2:DeleteNetworkInterface, ec2:DetachNetworkInterface and "
            "ec2:CreateTags only on interfaces whose ec2:Subnet is the cluster subnet, and ec2:CreateTags otherwise "
            "only inside CreateNetworkInterface (ec2:CreateAction). The instances interfaces detach from belong to "
            "HyperPod's account; nodes read and write any key of the kit's data bucket (datasets, checkpoints) and "
            "read the lifecycle prefix.",
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
                settings=pretrain,
                role_arn=self.role.role_arn,
                lifecycle_uri=storage.lifecycle_uri,
                fsx_mount=storage.fsx_mount,
            )
            for group in pretrain.groups
        ]
        self.cluster_name = deployment.resource_name("hyperpod")  # Ref of the cluster is its ARN, not this
        self.cluster = sagemaker.CfnCluster(
            self,
            "Cluster",
            cluster_name=self.cluster_name,
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
        # The scripts are in S3, the role can use the VPC and the group admits EFA traffic before any node starts.
        self.cluster.node.add_dependency(storage.lifecycle_upload)
        if storage.data_link is not None:
            # /fsx/data exists only once the data repository association does (its FileSystemPath); the lifecycle
            # opens it to the Slurm users on each node's first boot, so no node boots before it.
            self.cluster.node.add_dependency(storage.data_link)
        self.cluster.node.add_dependency(self.role)
        # The nodes write checkpoints and runs to the data bucket until the cluster is deleted: its role goes first.
        emptied_after(storage.data, self.role)
        self.cluster.node.add_dependency(*network.security_group_rules)
        # Nodes reach SageMaker, SSM and CloudWatch through the NAT gateway (no interface endpoints): the cluster
        # is created after the subnets' default route to it exists, as CDK's internetConnectivityEstablished says.
        self.cluster.node.add_dependency(network.cluster_subnets.internet_connectivity_established)
