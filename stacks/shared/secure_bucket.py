"""An S3 bucket with the kit's defaults: private, TLS-only, encrypted, logged, removed by stage."""

from __future__ import annotations

import re

from aws_cdk import CustomResourceProviderBase, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct, IConstruct

from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.stage import bucket_removal_policy, is_kept


class SecureBucket(Construct):
    """A data bucket plus the bucket that receives its server access logs.

    ``bucket`` and ``access_logs`` are exposed so siblings can be granted access. Versioning is on when
    the data matters (``versioned=True``); noncurrent versions expire after ``noncurrent_days`` so a
    sandbox does not pay for history forever.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        versioned: bool,
        encryption_key: kms.IKey | None = None,
        event_bridge_enabled: bool = False,
        noncurrent_days: int = 30,
        disposable: bool = False,
    ) -> None:
        """``disposable``: the bucket holds only copies the stack writes (e.g. from this checkout), so it goes with
        the stack, emptied first, in every stage; its access logs follow the stage."""
        super().__init__(scope, construct_id)
        policy = bucket_removal_policy(deployment)
        auto_delete = not deployment.is_prod

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 log delivery cannot write with a KMS key
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90 if deployment.is_prod else 30))],
            removal_policy=policy,
            auto_delete_objects=auto_delete,
        )
        # No AwsSolutions-S1 suppression: cdk-nag finds a bucket compliant when another bucket of the stack logs to it.

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.KMS if encryption_key else s3.BucketEncryption.S3_MANAGED,
            encryption_key=encryption_key,
            bucket_key_enabled=encryption_key is not None,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            lifecycle_rules=(
                [
                    # A delete marker whose noncurrent versions have all expired is kept until a rule removes it:
                    # every delete (pruned checkpoints, FSx exports of deletions, removed documents) would leave
                    # one for good. ExpiredObjectDeleteMarker may sit beside NoncurrentVersionExpiration, not beside
                    # ExpirationInDays (AWS::S3::Bucket Rule;
                    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-configuration-examples.html).
                    s3.LifecycleRule(
                        noncurrent_version_expiration=Duration.days(noncurrent_days),
                        expired_object_delete_marker=True,
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ]
                if versioned
                else [s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7))]
            ),
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="s3-access/",
            event_bridge_enabled=event_bridge_enabled,
            removal_policy=RemovalPolicy.DESTROY if disposable else policy,
            auto_delete_objects=auto_delete or disposable,
        )
        # A kept bucket keeps its policy: without one (CloudFormation deletes a resource that has no
        # DeletionPolicy, https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-deletionpolicy.html),
        # the data bucket loses its TLS-only deny and the log bucket the only grant S3 log delivery has (ACLs are
        # disabled), so access logging would stop silently after a prod destroy.
        for bucket, kept in (
            (self.access_logs, policy),
            (self.bucket, RemovalPolicy.DESTROY if disposable else policy),
        ):
            if is_kept(kept) and bucket.policy is not None:
                bucket.policy.apply_removal_policy(kept)
        if event_bridge_enabled:
            _suppress_notifications_handler(self)


# The object actions that change what a reader of a key gets: its bytes (a put, a copy, a multipart upload and a
# replicated object are all s3:PutObject or s3:ReplicateObject), whether it is there (deletes, replicated delete
# markers; deleting a version brings an older one back) or whether it can be decrypted. The Write-level object
# actions of the Service Authorization Reference not listed here cannot, and tests/infra/test_code_buckets.py says
# why for each: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
# (ACLs need no deny: BucketOwnerEnforced disables them.)
DEPLOYED_ONLY_WRITES = ("s3:PutObject", "s3:ReplicateObject", "s3:ReplicateDelete", "s3:UpdateObjectEncryption")
DEPLOYED_ONLY_DELETES = ("s3:DeleteObject", "s3:DeleteObjectVersion")
# CDK's auto-delete: the custom resource under the bucket, its provider (one per stack) at the stack's root.
_AUTO_DELETE_RESOURCE = "AutoDeleteObjectsCustomResource"
_AUTO_DELETE_PROVIDER = "Custom::S3AutoDeleteObjectsCustomResourceProvider"


def only_the_deployment_writes(bucket: s3.Bucket, prefix: str, upload: s3deploy.BucketDeployment) -> None:
    """Code a service runs from ``bucket``'s ``prefix`` is what ``upload`` deployed: the bucket policy denies every
    other principal any write or delete there.

    An explicit Deny in the bucket policy overrides any Allow of an identity policy
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-denyallow.html),
    such as the managed SageMaker policies' s3:PutObject on every "*sagemaker*" bucket
    (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSageMakerFullAccess.html). For a role's
    session aws:PrincipalArn is the role's ARN
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn);
    a request without it (a service principal) is denied. Excepted: the deployment's handler role (it copies and
    prunes the files), and for deletes CDK's auto-delete provider role where the bucket has one (it empties the
    bucket when the stack is deleted, while this policy still stands: its custom resource depends on the policy).
    Whoever may change the bucket policy, or change or invoke the handler (its event names what it copies), can still
    change the code.
    """
    deployer = upload.handler_role.role_arn
    deleters = [deployer]
    if bucket.node.try_find_child(_AUTO_DELETE_RESOURCE) is not None:
        provider = Stack.of(bucket).node.find_child(_AUTO_DELETE_PROVIDER)
        assert isinstance(provider, CustomResourceProviderBase)
        deleters.append(provider.role_arn)
    name = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", prefix) if part)
    for verb, actions, allowed in (
        ("Write", DEPLOYED_ONLY_WRITES, [deployer]),
        ("Delete", DEPLOYED_ONLY_DELETES, deleters),
    ):
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid=f"Only{verb}{name}ByDeployment",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(actions),
                resources=[bucket.arn_for_objects(f"{prefix}*")],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": allowed}},
            )
        )
    # The copy waits for the policy: a replaced handler role (another memory limit) is excepted before it writes.
    assert bucket.policy is not None
    upload.node.add_dependency(bucket.policy)


def emptied_after(bucket: s3.IBucket, *writers: IConstruct) -> None:
    """On a stack delete, ``bucket``'s auto-delete (a sandbox's) empties it only after each of ``writers`` (the
    roles whose grants let a job, a node or a function put objects in it) is deleted.

    CDK's auto-delete handler denies s3:PutObject in the bucket policy while it empties the bucket, but
    CloudFormation deletes that policy before the bucket, and S3 deletes only an empty bucket
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/delete-bucket.html): a writer still allowed in between
    (a function invocation or a training node the delete has not stopped yet) leaves an object that fails the
    bucket's delete (BucketNotEmpty). A bucket without auto-delete (a kept one) needs no order."""
    emptier = bucket.node.try_find_child(_AUTO_DELETE_RESOURCE)
    if emptier is None:
        return
    for writer in writers:
        writer.node.add_dependency(emptier)


# CDK turns EventBridge notifications on through one custom-resource function per stack.
_NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


def _suppress_notifications_handler(scope: Construct) -> None:
    handler = Stack.of(scope).node.try_find_child(_NOTIFICATIONS_HANDLER)
    if handler is None:
        return
    role = handler.node.find_child("Role")
    suppress(
        role,
        "AwsSolutions-IAM4",
        "CDK's bucket-notification custom resource writes its logs with the AWS basic execution policy; it "
        "runs only during deployments.",
        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
    )
