"""The cluster's storage: the data and checkpoint bucket, the lifecycle bucket (named sagemaker-…, unique per stack
creation) holding the lifecycle/ scripts, and the optional FSx for Lustre file system linked to the data bucket.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Fn, RemovalPolicy
from aws_cdk import aws_fsx as fsx
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.config import ConfigError
from stacks.level4_pretrain.network import ClusterNetwork
from stacks.level4_pretrain.settings import PretrainSettings
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress_bucket_deployment
from stacks.shared.secure_bucket import SecureBucket, only_the_deployment_writes
from stacks.shared.stage import STACK_CREATION_ID_LENGTH, bucket_deployment_logs, stack_creation_id

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE_DIR = ROOT / "lifecycle"
LIFECYCLE_PREFIX = "lifecycle/"
DATA_PREFIX = "data/"
# The smallest PERSISTENT_2 SSD file system: "1200 GiB, 2400 GiB, and increments of 2400 GiB" (botocore fsx
# CreateFileSystem StorageCapacity).
FSX_STORAGE_GIB = 1200
FSX_LUSTRE_VERSION = "2.15"  # the Lustre LTS version of the opt-in file system (see the CfnFileSystem below)
# HyperPod refuses this file next to the lifecycle scripts of a cluster whose Slurm is configured through the API
# (cluster.py, SLURM_CONFIG_STRATEGY).
LEGACY_SLURM_FILE = "provisioning_parameters.json"
FSX_MOUNT = "/fsx"  # FsxLustreConfig.MountPath (HyperPod's default); lifecycle.py prepares the same path
# ClusterLifeCycleConfig.SourceS3Uri: "Make sure that the S3 bucket path starts with s3://sagemaker-"; the managed
# AmazonSageMakerClusterInstanceRolePolicy reads buckets with that prefix:
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ClusterLifeCycleConfig.html
LIFECYCLE_BUCKET_PREFIX = "sagemaker-"
# S3's limit, also the AWS::S3::Bucket registry schema's BucketName maxLength (the tests read it there):
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
S3_BUCKET_NAME_MAX = 63


def lifecycle_bucket_name(deployment: Deployment) -> str:
    """``sagemaker-<prefix>-<stage>-<stack creation id>``: HyperPod's prefix, and a name new on every create of the
    stack and stable for its life.

    The bucket is deleted with the stack, and S3 frees a deleted name for any account, possibly only hours later
    ("A conflicting conditional operation"), so a fixed name could fail the next create or be taken by another
    account; S3 recommends a GUID in the name instead.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/gpbucketnamespaces.html
    https://repost.aws/knowledge-center/s3-conflicting-conditional-operation
    """
    literal = f"{LIFECYCLE_BUCKET_PREFIX}{deployment.name_prefix}-{deployment.stage}"
    length = len(literal) + 1 + STACK_CREATION_ID_LENGTH
    if length > S3_BUCKET_NAME_MAX:
        raise ConfigError(
            "name_prefix",
            deployment.name_prefix,
            f"a prefix that keeps the Level 4 lifecycle bucket name within {S3_BUCKET_NAME_MAX} characters "
            f"(it would be {length} with stage {deployment.stage!r})",
        )
    return Fn.join("-", [literal, stack_creation_id()])


class ClusterStorage(Construct):
    """The data/checkpoint bucket, the lifecycle bucket (the kit's scripts, nothing else) and optional FSx."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        pretrain: PretrainSettings,
        network: ClusterNetwork,
    ) -> None:
        super().__init__(scope, construct_id)
        legacy = sorted(str(p.relative_to(ROOT)) for p in LIFECYCLE_DIR.rglob(LEGACY_SLURM_FILE))
        if legacy:
            raise ValueError(
                f"{', '.join(legacy)}: the cluster configures Slurm through the API, and HyperPod refuses a "
                f"{LEGACY_SLURM_FILE} next to the lifecycle scripts of such a cluster; delete it"
            )
        self.data = SecureBucket(self, "Data", deployment=deployment, versioned=True).bucket
        # Copies of lifecycle/ from this checkout and nothing else: no versions to keep, and removed with the stack,
        # emptied first, in every stage; the next create names its own (lifecycle_bucket_name). (The deployment
        # below does not empty it on a stack delete: its handler skips a prefix its bucket tag still owns,
        # aws/aws-cdk#33397.)
        self.lifecycle = SecureBucket(self, "Lifecycle", deployment=deployment, versioned=False, disposable=True).bucket
        self.lifecycle_bucket_name = lifecycle_bucket_name(deployment)
        lifecycle_bucket = self.lifecycle.node.default_child
        assert isinstance(lifecycle_bucket, s3.CfnBucket)
        lifecycle_bucket.bucket_name = self.lifecycle_bucket_name
        self.file_system: fsx.CfnFileSystem | None = None
        self.fsx_mount: sagemaker.CfnCluster.ClusterFsxLustreConfigProperty | None = None
        self.data_link: fsx.CfnDataRepositoryAssociation | None = None
        if pretrain.fsx:
            subnet_id = network.cluster_subnets.subnet_ids[0]
            self.file_system = fsx.CfnFileSystem(
                self,
                "Lustre",
                file_system_type="LUSTRE",
                # Lustre 2.15: "recommended for all new file systems"; without it PERSISTENT_2 gets 2.12 (FSx API
                # CreateFileSystem, FileSystemTypeVersion). Not create-only: a deployed 2.12 file system is upgraded
                # in place (https://docs.aws.amazon.com/fsx/latest/LustreGuide/managing-lustre-version.html).
                file_system_type_version=FSX_LUSTRE_VERSION,
                storage_capacity=FSX_STORAGE_GIB,
                subnet_ids=[subnet_id],
                security_group_ids=[network.security_group.security_group_id],
                lustre_configuration=fsx.CfnFileSystem.LustreConfigurationProperty(
                    deployment_type="PERSISTENT_2",
                    per_unit_storage_throughput=pretrain.fsx_throughput,
                    data_compression_type="LZ4",
                ),
            )
            # Deleted in every stage: it sits in this stack's subnet and security group, so a retained file system
            # would hold network interfaces there and the stack's delete would fail on them (DependencyViolation,
            # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteSecurityGroup.html). Keep data
            # under /fsx/data: the data repository association below exports that directory alone to the data
            # bucket (retained in prod); the rest of the file system is deleted with it.
            self.file_system.apply_removal_policy(RemovalPolicy.DESTROY)
            self.file_system.node.add_dependency(*network.security_group_rules)
            self.data_link = fsx.CfnDataRepositoryAssociation(
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
            # Deleted before the data bucket and, in the sandbox, before its auto-delete empties it: exports (a
            # checkpoint pruned while a run still goes puts a delete marker in the versioned bucket) end with the
            # link, so none lands in the bucket after it was emptied and fails the bucket's delete.
            self.data_link.node.add_dependency(self.data)
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
            log_group=bucket_deployment_logs(self, deployment),
            destination_bucket=self.lifecycle,
            destination_key_prefix=LIFECYCLE_PREFIX,
            prune=True,
            retain_on_delete=False,
            memory_limit=256,
        )
        suppress_bucket_deployment(self.lifecycle_upload, self.lifecycle)
        # HyperPod runs these as root on every new node; the sagemaker- name HyperPod requires is also one that
        # managed SageMaker policies grant s3:PutObject on, so only the deployment may change them.
        only_the_deployment_writes(self.lifecycle, LIFECYCLE_PREFIX, self.lifecycle_upload)
        self.lifecycle_uri = f"s3://{self.lifecycle.bucket_name}/{LIFECYCLE_PREFIX}"
