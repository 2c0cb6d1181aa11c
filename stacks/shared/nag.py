"""cdk-nag suppressions that must say why, and say exactly what they cover."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_s3_deployment as s3deploy
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

# Rules whose findings name the offending item (a managed policy, an action or a resource), so a
# suppression must list the items it accepts instead of silencing the rule for the whole construct.
GRANULAR_RULES = frozenset({"AwsSolutions-IAM4", "AwsSolutions-IAM5"})
MIN_REASON_LENGTH = 30


def suppress(
    construct: IConstruct,
    rule_id: str,
    reason: str,
    *,
    applies_to: Sequence[str] | None = None,
    apply_to_children: bool = False,
) -> None:
    """Suppress one cdk-nag rule on one construct, with a real reason and, for granular rules, the items."""
    if not rule_id.startswith("AwsSolutions-"):
        raise ValueError(f"suppress: {rule_id!r} is not an AwsSolutions rule id")
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"suppress: the reason for {rule_id} must explain the decision ({MIN_REASON_LENGTH}+ chars)")
    if rule_id in GRANULAR_RULES and not applies_to:
        raise ValueError(f"suppress: {rule_id} is granular; name the findings it accepts with applies_to")
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule_id, reason=reason, applies_to=list(applies_to) if applies_to else None)],
        apply_to_children=apply_to_children,
    )


def arn_ref(resource: Any) -> str:
    """How cdk-nag names a resource's ARN in a finding: ``<LogicalId.Arn>``."""
    return f"<{Stack.of(resource).get_logical_id(resource.node.default_child)}.Arn>"


def suppress_bucket_deployment(deployment: s3deploy.BucketDeployment, bucket: Any) -> None:
    """CDK's BucketDeployment runs one shared function, and only while a deployment copies files."""
    stack = Stack.of(deployment)
    role = deployment.handler_role
    suppress(
        role,
        "AwsSolutions-IAM4",
        "CDK's bucket-deployment function logs with the AWS basic execution policy; it runs only at deploy time.",
        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
    )
    assets = f"Resource::arn:{stack.partition}:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-{stack.region}/*"
    suppress(
        role.node.find_child("DefaultPolicy"),
        "AwsSolutions-IAM5",
        "CDK's bucket-deployment function copies files from the CDK asset bucket into the kit's bucket; CDK "
        "generates these object-level grants.",
        applies_to=[
            "Action::s3:GetObject*",
            "Action::s3:GetBucket*",
            "Action::s3:List*",
            "Action::s3:DeleteObject*",
            "Action::s3:Abort*",
            assets,
            f"Resource::{arn_ref(bucket)}/*",
        ],
    )
    for child in stack.node.children:
        if child.node.id.startswith("Custom::CDKBucketDeployment"):
            suppress(
                child,
                "AwsSolutions-L1",
                "CDK's bucket-deployment function pins its own Python runtime; it runs only at deploy time.",
            )
