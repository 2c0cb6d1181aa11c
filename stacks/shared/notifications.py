"""Notifications shared by the levels: an EventBridge rule that publishes to a level's SNS topic."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.shared.alarms import (
    FIVE_MINUTES,
    QUEUE_METRIC_MISSING_DATA,
    alarm_to,
    allow_cloudwatch_alarms,
)
from stacks.shared.alarms import dead_letter_queue as new_dead_letter_queue
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
    dead_letter_queue: sqs.IQueue | None = None,
) -> events.Rule:
    """An EventBridge rule on the default bus that publishes to ``topic`` through a role only this rule may assume.

    An event EventBridge could not publish after its retries, or at once for an error such as a missing permission,
    is dropped unless the target has a dead-letter queue
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html): it lands in
    ``dead_letter_queue``, an alarmed queue of the caller's stack, or without one in a queue of the rule's own whose
    alarm notifies ``topic`` (one more alarm). CDK adds the queue policy that lets this rule send
    (events.amazonaws.com, aws:SourceArn = the rule); the kit's dead-letter queues use SSE-SQS, which needs no key
    policy (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html).

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

    AWS's text on a role for an SNS target conflicts. The English resource-based policy page says not to set a
    RoleArn on SNS targets: delivery "may fail", particularly to a KMS-encrypted topic
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html). EventBridge extended
    execution roles to SNS targets in March 2025
    (https://aws.amazon.com/about-aws/whats-new/2025/03/amazon-eventbridge-iam-execution-role-all-targets/, cited
    by aws/aws-cdk#34259), and its SNS target page lists the role's sns:Publish and, for a customer managed key,
    kms:GenerateDataKey and kms:Decrypt
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-custom-bus-target-sns.html). The role stays: the
    resource-policy route cannot be confined to the rule (above). The dead-letter queue and its alarm make a failed
    delivery visible instead of silent, whichever text holds in an account.
    """
    rule_name = deployment.resource_name(name)
    role = rule_target_role(scope, f"{construct_id}Delivery", rule_name, "to publish to the level's topic")
    if dead_letter_queue is None:
        dead_letter_queue = _alarmed_dead_letters(scope, construct_id, topic=topic, rule_name=rule_name)
    # role= makes the target publish as the role; CDK grants the role sns:Publish on the topic, not the topic policy.
    rule = events.Rule(
        scope,
        construct_id,
        rule_name=rule_name,
        description=description,
        event_pattern=event_pattern,
        targets=[targets.SnsTopic(topic, role=role, message=message, dead_letter_queue=dead_letter_queue)],
    )
    if isinstance(topic, sns.Topic) and topic.master_key is not None:
        # On the policy CDK's grant for the target created (the finding is there, not on the role itself).
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "A publisher to an encrypted topic needs kms:GenerateDataKey* and kms:Decrypt on the topic's key "
            "(https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html); CDK grants them on that key only.",
            applies_to=["Action::kms:GenerateDataKey*"],
        )
    return rule


def rule_target_role(scope: Construct, construct_id: str, rule_name: str, purpose: str) -> iam.Role:
    """A role that only the EventBridge rule named ``rule_name`` in this account may assume, for that rule's target.

    EventBridge gives the rule's ARN as ``aws:SourceArn`` and its account as ``aws:SourceAccount`` when it assumes a
    target's role (https://docs.aws.amazon.com/eventbridge/latest/userguide/cross-service-confused-deputy-prevention.html).
    The rule must be created with that name: its ARN is then known here without a reference back to the rule, which
    would make a cycle (the rule's target names this role).
    """
    stack = Stack.of(scope)
    rule_arn = stack.format_arn(service="events", resource="rule", resource_name=rule_name)
    return iam.Role(
        scope,
        construct_id,
        description=f"Assumed by the EventBridge rule {rule_name} only, {purpose}",
        assumed_by=iam.ServicePrincipal(
            "events.amazonaws.com",
            conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnEquals": {"aws:SourceArn": rule_arn},
            },
        ),
    )


def _alarmed_dead_letters(scope: Construct, construct_id: str, *, topic: sns.ITopic, rule_name: str) -> sqs.Queue:
    """A dead-letter queue for one notification rule, with an alarm that notifies the rule's own topic (CloudWatch
    publishes with the topic policy, not through the rule's role)."""
    if not isinstance(topic, sns.Topic):
        raise ValueError(f"{construct_id}: pass dead_letter_queue= for a topic whose policy this stack cannot set")
    allow_cloudwatch_alarms(topic)
    queue = new_dead_letter_queue(scope, f"{construct_id}DeadLetters", holds=f"the EventBridge rule {rule_name}")
    alarm_to(
        topic,
        scope,
        f"{construct_id}DeadLettersAlarm",
        metric=queue.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES, statistic="Maximum"),
        threshold=1,
        description=f"EventBridge could not publish a notification of the rule {rule_name} to this topic: the event "
        "is in the dead-letter queue (attributes ERROR_CODE, ERROR_MESSAGE). Read it there, fix the cause (the rule's "
        "role, the topic or its key), then delete it; the alarm returns to OK",
        missing_data=QUEUE_METRIC_MISSING_DATA,
    )
    return queue
