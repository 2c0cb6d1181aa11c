"""An alarm topic and alarms that notify it."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from common.metric_names import MODEL_ACCESS_DENIED, MODEL_THROTTLED
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress_unless

# A dead letter stays 14 days, SQS's longest retention, well past the source queue's own
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html).
DEAD_LETTERS_RETENTION = Duration.days(14)
# SQS reports a queue's metrics only while the queue is active: for up to six hours after the last API call on it
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html:
# "All metrics emit non-negative values only when the queue is active"). Nothing reads a dead-letter queue until an
# operator handles it, so its metric stops while the dead letters are still there: an alarm on it keeps its state
# when data is missing ("ignore"), where "notBreaching" would turn it OK, and notify OK, six hours after the first
# dead letter (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html#alarms-and-missing-data).
# An unused queue may leave its alarm in INSUFFICIENT_DATA rather than OK.
QUEUE_METRIC_MISSING_DATA = cloudwatch.TreatMissingData.IGNORE


def dead_letter_queue(
    scope: Construct, construct_id: str, *, holds: str, watched: str = "an alarm fires when it holds anything"
) -> sqs.Queue:
    """A dead-letter queue (SQS-managed encryption, TLS only, 14 days); ``holds`` says what lands in it and
    ``watched`` how anyone learns of it, for the cdk-nag reason (a dead-letter queue has none of its own). The caller
    alarms on it, unless ``watched`` says why not."""
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=DEAD_LETTERS_RETENTION,
    )
    reason = f"This queue is the dead-letter queue of {holds}; {watched}."
    # cdk-nag finds a queue compliant when another queue of the stack redrives to it; it does not see EventBridge
    # targets or function sources that send their dead letters here, which need the reason.
    suppress_unless(queue, "AwsSolutions-SQS3", reason, compliant=lambda: _is_a_queues_dead_letter_queue(queue))
    return queue


def _is_a_queues_dead_letter_queue(queue: sqs.Queue) -> bool:
    stack = Stack.of(queue)
    arn = stack.resolve(queue.queue_arn)
    return any(
        isinstance(other, sqs.CfnQueue)
        and (stack.resolve(other.redrive_policy) or {}).get("deadLetterTargetArn") == arn
        for other in stack.node.find_all()
    )


def allow_cloudwatch_alarms(topic: sns.Topic) -> None:
    """Let CloudWatch alarms of this account publish to ``topic``, whose policy the kit sets (enforce_ssl). An
    encrypted topic needs its key to let CloudWatch use it as well, with
    the key-policy statement AWS gives for it (kms:Decrypt, kms:GenerateDataKey*), documented without conditions
    (https://repost.aws/knowledge-center/cloudwatch-configure-alarm-sns,
    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services), here kept
    to SNS's use of the key."""
    cloudwatch_service = iam.ServicePrincipal("cloudwatch.amazonaws.com")
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchAlarms",
            principals=[cloudwatch_service],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions={"StringEquals": {"aws:SourceAccount": Stack.of(topic).account}},
        )
    )
    if topic.master_key is None:
        return
    # The key may protect more than the topic (Level 3's data key encrypts its buckets and models): the statement
    # is kept to SNS's use of it. SNS calls KMS with the topic's ARN as encryption context, the key
    # kms:EncryptionContext:aws:sns:topicArn an AWS key policy for an encrypted topic conditions on
    # (https://docs.amazonaws.cn/en_us/gamelift/latest/flexmatchguide/queue-notification-sns-sse.html); any topic of
    # this account, since the topic's own ARN would make the key policy and the topic refer to each other.
    stack = Stack.of(topic)
    any_topic_here = f"arn:{stack.partition}:sns:{stack.region}:{stack.account}:*"
    added = topic.master_key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsToPublishToTheTopic",
            principals=[cloudwatch_service],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
            conditions={"StringLike": {"kms:EncryptionContext:aws:sns:topicArn": any_topic_here}},
        )
    )
    if not added.statement_added:
        raise ValueError(f"{topic.node.path}: its key's policy cannot be changed here; CloudWatch could not publish")


def alarm_to(
    topic: sns.ITopic,
    scope: Construct,
    construct_id: str,
    *,
    metric: cloudwatch.IMetric,
    threshold: float,
    description: str,
    evaluation_periods: int = 1,
    comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
) -> cloudwatch.Alarm:
    """An alarm that notifies ``topic`` (which lets CloudWatch publish: :func:`allow_cloudwatch_alarms`) on ALARM and
    on OK; missing data (no traffic) is not breaching, except where ``missing_data`` says otherwise (an SQS metric:
    :data:`QUEUE_METRIC_MISSING_DATA`)."""
    alarm = cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=comparison,
        treat_missing_data=missing_data,
        alarm_description=description,
    )
    action = cw_actions.SnsAction(topic)
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm


class AlarmTopic(Construct):
    """An SNS topic for alarms (TLS-only), with an e-mail subscription when ``alarm_email`` is set."""

    def __init__(self, scope: Construct, construct_id: str, *, deployment: Deployment) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", display_name=deployment.resource_name("alarms"), enforce_ssl=True)
        allow_cloudwatch_alarms(self.topic)
        if deployment.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(deployment.alarm_email))
        self.alarms: list[cloudwatch.Alarm] = []

    def alarm(
        self,
        scope: Construct,
        construct_id: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """An alarm that notifies the topic on ALARM and on OK (:func:`alarm_to`)."""
        alarm = alarm_to(
            self.topic,
            scope,
            construct_id,
            metric=metric,
            threshold=threshold,
            description=description,
            evaluation_periods=evaluation_periods,
            comparison=comparison,
            missing_data=missing_data,
        )
        self.alarms.append(alarm)
        return alarm

    def api_alarms(self, scope: Construct, api: apigw.RestApi, *, label: str, service: str, namespace: str) -> None:
        """The alarms every kit API has: any 5xx, p95 latency near API Gateway's 29 s timeout, any refusal of the
        model (the function's ModelAccessDenied metric: it answers 403, which the 5xx alarm does not count), and
        Bedrock throttling that outlasted the function's retries (ModelThrottled: 429s, not counted as 5xx either)."""
        self.alarm(
            scope,
            "Api5xxAlarm",
            metric=api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
            threshold=1,
            description=f"{label} API returned 5xx responses",
        )
        self.alarm(
            scope,
            "ApiLatencyAlarm",
            metric=api.metric_latency(period=FIVE_MINUTES, statistic="p95"),
            threshold=15_000,
            evaluation_periods=3,
            description=f"{label} API p95 latency above 15 s for 15 minutes (the integration timeout is 29 s)",
        )

        def kit_metric(name: str) -> cloudwatch.Metric:
            """A count the API function writes (common.resolver), summed over 5 minutes."""
            return cloudwatch.Metric(
                namespace=namespace,
                metric_name=name,
                dimensions_map={"service": service},
                period=FIVE_MINUTES,
                statistic="Sum",
            )

        self.alarm(
            scope,
            "ModelAccessDeniedAlarm",
            metric=kit_metric(MODEL_ACCESS_DENIED),
            threshold=1,
            description=f"{label} API answered 403 model_access_denied: the function or the account may not use "
            "the model (IAM, an SCP, Marketplace, the use-case form, a Legacy model); see the function log",
        )
        self.alarm(
            scope,
            "ModelThrottledAlarm",
            metric=kit_metric(MODEL_THROTTLED),
            threshold=5,
            description=f"Bedrock throttled {label} calls after retries (429s to callers)",
        )


FIVE_MINUTES = Duration.minutes(5)
