"""Level 3's data: the customer managed key, the training-data and job-output buckets, and the role Bedrock assumes
to run a customization job (read the datasets, write the output, use the key; nothing else).
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.level3_finetune.names import DATASETS_PREFIX, OUTPUT_PREFIX, bedrock_arn, logical_id
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.secure_bucket import SecureBucket
from stacks.shared.stage import removal_policy


class FineTuneData(Construct):
    """The customer managed key, the training-data bucket (versioned) and the job-output bucket."""

    def __init__(
        self, scope: Construct, construct_id: str, *, deployment: Deployment, deploys_model: bool = False
    ) -> None:
        super().__init__(scope, construct_id)
        # Sandbox: deleted on destroy, after CustomModelCleanup has deleted the custom models it encrypts, with
        # KMS's shortest waiting period (7-30 days). Prod: retained with the models, removed by hand.
        self.key = kms.Key(
            self,
            "Key",
            description="Level 3: training data, job output and custom models",
            enable_key_rotation=True,
            removal_policy=removal_policy(deployment),
            pending_window=Duration.days(7),
        )
        if deploys_model:
            # Provisioned Throughput for a custom Nova model: Bedrock itself uses the model's key while it
            # optimizes the model for deployment; statement as given in "Permissions and key policies for custom
            # Amazon Nova models" (https://docs.aws.amazon.com/nova/latest/userguide/customize-fine-tune-encrypt.html),
            # which says it "should be added by default". With either deployment the pipeline makes (ft_deploy
            # "provisioned" or "on-demand"): no AWS page says whether an on-demand deployment of the model needs
            # it, and a deployment refused for it would come after the paid customization job. Not with "none".
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="PermissionsNovaProvisionedThroughput",
                    principals=[iam.ServicePrincipal("bedrock.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],
                    conditions={"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "aws:bedrock:custom-model"}},
                )
            )
        self.data = SecureBucket(
            self, "Data", deployment=deployment, versioned=True, encryption_key=self.key, event_bridge_enabled=True
        ).bucket
        self.output = SecureBucket(
            self, "Output", deployment=deployment, versioned=False, encryption_key=self.key
        ).bucket

    def see_missing_keys(self, sid: str, prefix: str) -> iam.PolicyStatement:
        """s3:ListBucket on the data bucket for keys under ``prefix``: S3 answers a GetObject of a missing key with
        404 NoSuchKey only to a caller that may list the bucket, else with 403 Access Denied
        (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html). S3 makes that check with the object's
        key as s3:prefix (Ceph's RGW matches AWS in this: ceph/ceph#68577), so the grant can keep to the prefix."""
        return iam.PolicyStatement(
            sid=sid,
            actions=["s3:ListBucket"],
            resources=[self.data.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        )


class CustomizationRole(Construct):
    """The role Bedrock assumes to run the job: read the datasets, write the output, use the key. Nothing else."""

    def __init__(self, scope: Construct, construct_id: str, *, data: FineTuneData) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            description="Level 3: assumed by Amazon Bedrock to run model customization jobs",
            assumed_by=iam.ServicePrincipal(
                "bedrock.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": bedrock_arn(stack, "model-customization-job/*")},
                },
            ),
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadDatasets",
                actions=["s3:GetObject"],
                resources=[data.data.arn_for_objects(f"{DATASETS_PREFIX}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListBuckets", actions=["s3:ListBucket"], resources=[data.data.bucket_arn, data.output.bucket_arn]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOutput",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[data.output.arn_for_objects(f"{OUTPUT_PREFIX}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="UseKey",
                actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[data.key.key_arn],
            )
        )
        # Bedrock's page on encrypting custom models lists kms:CreateGrant (through Bedrock only) for "the role"
        # without saying whether that is the caller or this service role
        # (https://docs.aws.amazon.com/bedrock/latest/userguide/encryption-custom-job.html); CDK's own
        # BedrockCreateModelCustomizationJob task grants it to the service role, the kit's pipeline grants it to the
        # caller (FineTuneStack, KeyForCustomModels). Both hold it, so a job is not refused after it was paid for
        # under either reading; through Bedrock only, this role cannot grant the key to anyone itself.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="GrantKeyForCustomModel",
                actions=["kms:CreateGrant"],
                resources=[data.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"bedrock.{Stack.of(self).region}.amazonaws.com"}},
            )
        )
        suppress(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Bedrock reads any dataset under the datasets prefix and writes job output under its own prefix; "
            "object keys are chosen per job.",
            applies_to=[
                f"Resource::<{logical_id(data.data)}.Arn>/{DATASETS_PREFIX}*",
                f"Resource::<{logical_id(data.output)}.Arn>/{OUTPUT_PREFIX}*",
            ],
        )
