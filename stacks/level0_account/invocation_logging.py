"""Opt-in, account-level: Bedrock model invocation logging to an encrypted bucket and a log group.

Model invocation logging is ONE setting per account and region and CloudFormation has no resource for it,
so a custom resource manages it. On delete it restores the setting it found (or removes its own), and it
leaves the setting alone if someone else has changed it since; when Bedrock refuses the restore, it removes its
own and says what to put back. Deploy it once per account and region.

    Bedrock (every model call in the account/region) ──► log group (retention by stage)
                                                     └──► S3 bucket (encrypted, TLS-only) — and large payloads
    custom resource (function) ──► Put/Get/DeleteModelInvocationLoggingConfiguration
    stage lock (function) ◄── every other resource depends on it: a deploy from another stage fails first

One stack name serves every stage, but the stage of a deploy sets the log retention and whether a destroy keeps
the logs: the stage lock refuses a deploy from another stage than the one that created the stack, before anything
else changes (lambdas/level0_account/stage_lock/handler.py).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnResource, CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from invocation_logging.prefixes import LARGE_DATA_PREFIX, STATE_PREFIX
from stacks.config import KitConfig
from stacks.level0_account.settings import AccountSettings, region_problems
from stacks.shared.deployment import Deployment
from stacks.shared.facts import INVOCATION_LOGS_BUCKET_PARAMETER, INVOCATION_LOGS_PREFIX
from stacks.shared.nag import arn_ref, suppress
from stacks.shared.python_function import PythonFunction
from stacks.shared.regions import refuse
from stacks.shared.secure_bucket import SecureBucket, emptied_after
from stacks.shared.stage import log_group, tag_stack

LEVEL = "0-observability"
# The function answers CloudFormation before its timeout: each of its (at most four) calls is bounded by short
# client timeouts and attempts, and no call starts that could overrun
# (lambdas/level0_account/invocation_logging/handler.py).
MANAGER_TIMEOUT = Duration.minutes(4)
# CloudFormation stops waiting for an answer after this instead of the default hour, so even a function that
# never runs (throttled, deleted, broken package) holds a create, update or delete for minutes only:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html
SERVICE_TIMEOUT = Duration.minutes(6)
LOCK_TIMEOUT = Duration.minutes(1)  # the lock makes no AWS call: it only answers CloudFormation


class InvocationLoggingStack(Stack):
    """``GenAiKit-0-InvocationLogging``: the log destinations, Bedrock's delivery role, the custom resource."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit: Bedrock model invocation logging (one per account and region)",
            **kwargs,
        )
        if refuse(self, region_problems(self.region)):
            return  # no Bedrock in this region: an empty stack with the error (stacks/shared/regions.py)
        deployment = config.deployment
        tag_stack(self, deployment, LEVEL)
        lock, held_by = self._stage_lock(deployment)
        bucket = SecureBucket(self, "Invocations", deployment=deployment, versioned=False).bucket
        # S3 keeps an object until it is deleted or a lifecycle rule expires it
        # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lifecycle-mgmt.html): the records of every
        # call in the region, prompts and answers, expire with the stage's log retention, as the log group's copy
        # does. kit-state/ (the setting to restore on delete) never expires.
        for prefix in (INVOCATION_LOGS_PREFIX, LARGE_DATA_PREFIX):
            bucket.add_lifecycle_rule(prefix=prefix, expiration=Duration.days(deployment.log_retention_days))
        # Level 3 distills from these logs (ft_distillation_source=invocation-logs) and finds the bucket here.
        ssm.StringParameter(
            self,
            "InvocationBucketParameter",
            parameter_name=INVOCATION_LOGS_BUCKET_PARAMETER,
            string_value=bucket.bucket_name,
            description="The bucket Bedrock model invocation logging writes to (read by the Level 3 stack)",
        )
        # Named by CloudFormation: prod retains it on destroy, and a fixed name would make the next deploy fail.
        logs = log_group(self, "InvocationLogs", deployment)
        source = {
            "StringEquals": {"aws:SourceAccount": self.account},
            "ArnLike": {"aws:SourceArn": f"arn:{self.partition}:bedrock:{self.region}:{self.account}:*"},
        }
        # Bedrock writes invocation records and large payloads into the bucket.
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="BedrockDelivers",
                principals=[iam.ServicePrincipal("bedrock.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(f"{INVOCATION_LOGS_PREFIX}*"),
                    bucket.arn_for_objects(f"{LARGE_DATA_PREFIX}*"),
                ],
                conditions=source,
            )
        )
        delivery = iam.Role(
            self,
            "DeliveryRole",
            description="Assumed by Amazon Bedrock to write invocation logs to CloudWatch Logs",
            assumed_by=iam.ServicePrincipal("bedrock.amazonaws.com", conditions=source),
        )
        delivery.add_to_policy(
            iam.PolicyStatement(
                sid="WriteInvocationLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[logs.log_group_arn],
            )
        )
        delivery.add_to_policy(
            iam.PolicyStatement(
                sid="WriteLargePayloads",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{LARGE_DATA_PREFIX}*")],
            )
        )

        manager = PythonFunction(
            self,
            "Manager",
            deployment=deployment,
            handler="invocation_logging.handler.handler",
            description="Custom resource: Bedrock model invocation logging for this account and region",
            service_name="invocation-logging",
            timeout=MANAGER_TIMEOUT,
            memory_size=256,
        )
        manager.role.add_to_policy(
            iam.PolicyStatement(
                sid="ManageInvocationLogging",
                actions=[
                    "bedrock:GetModelInvocationLoggingConfiguration",
                    "bedrock:PutModelInvocationLoggingConfiguration",
                    "bedrock:DeleteModelInvocationLoggingConfiguration",
                ],
                resources=["*"],
            )
        )
        # PutModelInvocationLoggingConfiguration needs iam:PassRole on the cloudWatchConfig.roleArn it sets
        # (botocore bedrock/2023-04-20 CloudWatchConfig requires roleArn). The kit's put passes its delivery role;
        # the put that restores, on delete, the setting found on create passes that setting's role, which is known
        # only at run time. So: any role of this account (the SAR's role ARN is
        # arn:${Partition}:iam::${Account}:role/${RoleNameWithPath}), and only to Bedrock (iam:PassedToService, a
        # condition key of iam:PassRole in the SAR:
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html).
        passable_roles = f"arn:{self.partition}:iam::{self.account}:role/*"
        manager.role.add_to_policy(
            iam.PolicyStatement(
                sid="PassLoggingRolesToBedrock",
                actions=["iam:PassRole"],
                resources=[passable_roles],
                conditions={"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}},
            )
        )
        manager.role.add_to_policy(
            iam.PolicyStatement(
                sid="RememberPreviousSetting",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{STATE_PREFIX}*")],
            )
        )
        # The function asks whether the state object exists with ListObjectsV2 under its prefix (handler.py
        # _state_saved): a list request carries s3:prefix, and the grant allows no other listing.
        manager.role.add_to_policy(
            iam.PolicyStatement(
                sid="FindPreviousSetting",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{STATE_PREFIX}*"]}},
            )
        )
        suppress(
            manager.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The model invocation logging actions are account-level and have no resource type ('*' only); the "
            "state object lives under one prefix; X-Ray actions support no resource-level permissions.",
            applies_to=[
                "Resource::*",
                f"Resource::{arn_ref(bucket)}/{STATE_PREFIX}*",
            ],
        )
        suppress(
            manager.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "On delete the function restores the invocation logging setting it found on create, and putting a "
            "setting that logs to CloudWatch passes that setting's role, which is known only at run time: any role "
            "of this account, passed to Bedrock only (iam:PassedToService), and the function may call no Bedrock "
            "action but the three invocation logging ones.",
            applies_to=[f"Resource::arn:{self.partition}:iam::<AWS::AccountId>:role/*"],  # as cdk-nag names it
        )
        suppress(
            delivery.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Bedrock names each large-payload object itself, under the large-data prefix.",
            applies_to=[f"Resource::{arn_ref(bucket)}/{LARGE_DATA_PREFIX}*"],
        )
        # Bedrock (large payloads) and the manager (its saved setting) write to the bucket: emptied after both.
        emptied_after(bucket, delivery, manager.role)
        setting = CustomResource(
            self,
            "InvocationLogging",
            service_token=manager.function.function_arn,
            resource_type="Custom::BedrockInvocationLogging",
            service_timeout=SERVICE_TIMEOUT,
            properties={
                "LogGroupName": logs.log_group_name,
                "RoleArn": delivery.role_arn,
                "BucketName": bucket.bucket_name,
            },
        )
        # Deleted before the bucket, so the saved previous setting is still readable on delete. And created after
        # everything else: a resource failing while the manager runs (its role waits take up to a minute) would make
        # CloudFormation cancel this create and send its Delete at once, which would find no kit setting yet while
        # the cancelled create still put one, naming a log group, role and bucket the rollback then deletes.
        setting_resource = setting.node.default_child
        for part in self.node.find_all():
            if isinstance(part, CfnResource) and part is not setting_resource:
                setting.node.add_dependency(part)

        CfnOutput(self, "InvocationLogGroup", value=logs.log_group_name)
        CfnOutput(self, "InvocationBucketName", value=bucket.bucket_name)
        # Last, so that it reaches every resource (the bucket's auto-delete provider included): each waits for the
        # lock, which CloudFormation therefore updates first.
        for part in self.node.find_all():
            if isinstance(part, CfnResource) and not part.node.path.startswith(lock.node.path + "/"):
                part.add_resource_dependency(held_by)

    def _stage_lock(self, deployment: Deployment) -> tuple[Construct, CfnResource]:
        """The lock and its function (which depend on nothing else of the stack), and the lock's resource."""
        scope = Construct(self, "StageLock")
        function = PythonFunction(
            scope,
            "Function",
            deployment=deployment,
            handler="stage_lock.handler.handler",
            description="Custom resource: holds the invocation-logging stack to the stage that created it",
            service_name="invocation-logging-stage-lock",
            timeout=LOCK_TIMEOUT,
            memory_size=128,
        )
        lock = CustomResource(
            scope,
            "Lock",
            service_token=function.function.function_arn,
            resource_type="Custom::KitStageLock",
            service_timeout=SERVICE_TIMEOUT,
            # The options that put this opt-in stack in the app: the refusal's commands need them to find it.
            properties={
                "Stage": deployment.stage,
                "StackName": self.stack_name,
                "Options": f"-c {AccountSettings.model_fields['invocation_logging'].alias}=true",
            },
        )
        resource = lock.node.default_child
        assert isinstance(resource, CfnResource)
        return scope, resource
