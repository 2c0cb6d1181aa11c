"""Notifications shared by the levels: an EventBridge rule that publishes to a level's SNS topic."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress


def notification_rule(
    scope: Construct,
    construct_id: str,
    deployment: Deployment,
    *,
    topic: sns.ITopic,
    name: str,
    description: str,
    event_pattern: events.EventPattern,
    message: events.RuleTargetInput | None = None,
) -> events.Rule:
    """An EventBridge rule on the default bus that publishes to ``topic`` through a role only this rule may assume.

    CDK's ``targets.SnsTopic`` grants ``events.amazonaws.com`` ``sns:Publish`` in the topic policy with no condition,
    so any rule (of any account) could publish; and EventBridge's guide says a topic policy for EventBridge cannot
    carry Condition blocks, so that grant cannot be confined to the rule. Nor can a key policy grant for an
    encrypted topic: "Adding the aws:SourceAccount, aws:SourceArn, and aws:SourceOrgID to a AWS KMS policy is not
    supported for EventBridge-to-encrypted topics" (SNS guide). A target role can: SNS targets may use an execution
    role, and EventBridge gives the rule's ARN as ``aws:SourceArn`` when it assumes a rule target's role; the role,
    not the service, then needs the topic's key (CDK's grant for the target adds it for an encrypted topic).
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sns-permissions
    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html
    https://docs.aws.amazon.com/eventbridge/latest/userguide/cross-service-confused-deputy-prevention.html
    The rule is named, so its ARN is known to the trust policy without a reference back to the rule (a cycle).
    """
    stack = Stack.of(scope)
    rule_name = deployment.resource_name(name)
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
    rule = events.Rule(
        scope,
        construct_id,
        rule_name=rule_name,
        description=description,
        event_pattern=event_pattern,
        targets=[targets.SnsTopic(topic, role=role, message=message)],
    )
    if isinstance(topic, sns.Topic) and topic.master_key is not None:
        suppress(
            role,
            "AwsSolutions-IAM5",
            "A publisher to an encrypted topic needs kms:GenerateDataKey* and kms:Decrypt on the topic's key "
            "(https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html); CDK grants them on that key only.",
            applies_to=["Action::kms:GenerateDataKey*"],
            apply_to_children=True,
        )
    return rule
