"""What keeps Level 3's teardown from depending on one best-effort event (both paths).

    teardown rule target ──(delivery failed after EventBridge's retries)──► dead-letter queue ─► alarm ─► topic
    hourly EventBridge Scheduler schedule ──► sweep function (lambdas/level3_finetune/teardown_sweep): executions
        of the pipeline that ended FAILED | TIMED_OUT | ABORTED in the last SWEEP_WINDOW
        ──► StartExecution(teardown, name "sweep-<SHA-256 of the ended execution's ARN>")
        not invoked, or failed after Lambda's retries, or not run within SWEEP_LATENESS ──► the same dead-letter queue

Step Functions sends "Step Functions Execution Status Change" best effort
(https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-states.html), and EventBridge drops an event it
could not deliver after its retries unless the target has a dead-letter queue
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html). The sweep does not need the
event; the dead-letter queue makes a target failure visible.
"""

from __future__ import annotations

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.level3_finetune.names import logical_id
from stacks.shared.alarms import QUEUE_METRIC_MISSING_DATA, alarm_to, allow_cloudwatch_alarms, dead_letter_queue
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.python_function import PythonFunction

SWEEP_EVERY = Duration.hours(1)
# Executions that ended in the last three hours: each is looked at by two or three sweeps, so a sweep that failed
# or was not run is made up by the next. The names keep it to one sweep teardown per run.
SWEEP_WINDOW = Duration.hours(3)
# ... and at least this long ago, so the event's teardown normally finished its deletion before a sweep looks. On the
# SageMaker path the event's teardown may still be waiting for an import job (up to an hour); the sweep's teardown
# then waits beside it, deletes what is left, and reports only what it deleted itself.
SWEEP_SETTLE = Duration.minutes(15)
# A sweep looks back from the moment it runs, so sweeps that all run late could leave executions between two windows.
# Two consecutive sweeps leave no gap while the later one runs at most SWEEP_WINDOW - SWEEP_EVERY - SWEEP_SETTLE
# (1 h 45 min) after its schedule. Scheduler retries an invocation it could not make for at most SCHEDULE_MAX_AGE
# (60 s to 24 h, https://docs.aws.amazon.com/scheduler/latest/APIReference/API_RetryPolicy.html), then Lambda keeps
# the asynchronous event at most SWEEP_MAX_AGE (60 s to 6 h, its default,
# https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionEventInvokeConfig.html) before it sends it to the
# on-failure destination: a sweep that cannot run in time is dead-lettered (alarm) instead of skipping executions.
SWEEP_LATENESS = SWEEP_WINDOW.minus(SWEEP_EVERY).minus(SWEEP_SETTLE)
SCHEDULE_MAX_AGE = Duration.minutes(15)
SWEEP_MAX_AGE = SWEEP_LATENESS.minus(SCHEDULE_MAX_AGE)
SWEEP_TIMEOUT = Duration.minutes(2)
ALARM_PERIOD = Duration.minutes(5)


@jsii.implements(lambda_.IDestination)
class _SendOnlyQueue:
    """An on-failure destination that grants the function's role sqs:SendMessage alone: CDK's SqsDestination
    grants GetQueueAttributes and GetQueueUrl too, which Lambda does not need to deliver the record
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html)."""

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(
        self, _scope: Construct, fn: lambda_.IFunction, *, type: lambda_.DestinationType | None = None
    ) -> lambda_.DestinationConfig:
        iam.Grant.add_to_principal(grantee=fn, actions=["sqs:SendMessage"], resource_arns=[self._queue.queue_arn])
        return lambda_.DestinationConfig(destination=self._queue.queue_arn)


class TeardownBackstop(Construct):
    """The teardown rule's dead-letter queue with its alarm, and the hourly sweep that starts the teardown itself.

    ``alarm_topic`` is made to accept CloudWatch's publishes (stacks/shared/alarms.allow_cloudwatch_alarms).
    ``uploads``: the stack's job-request upload rule sends what EventBridge could not deliver to the same queue
    (FineTuneStack), so the alarm names that case too. On both paths the job-state notification rule dead-letters
    here as well (stacks/shared/notifications.py): one queue and one alarm keep the idle cost at one alarm.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        pipeline: sfn.StateMachine,
        teardown: sfn.StateMachine,
        alarm_topic: sns.Topic,
        label: str,
        service_name: str,
        uploads: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        allow_cloudwatch_alarms(alarm_topic)
        holds = "the teardown rule's target, of the sweep and of the job-state notification rule's target"
        if uploads:
            holds = (
                "the teardown rule's target, of the sweep, of the job-request upload rule's target (and of the "
                "upload starter's failed starts) and of the job-state notification rule's target"
            )
        self.dead_letters = dead_letter_queue(self, "DeadLetters", holds=holds)
        description = (
            f"{label}: an event EventBridge could not deliver (its RULE_ARN attribute names the rule), or a sweep "
            "that kept failing or could not run in time, is in the dead-letter queue. A run's status event or a "
            "sweep: a teardown did not start; check for deployments or models left billing. The job-state rule: a "
            "state change was not notified; read it there"
        )
        if uploads:
            # EventBridge gives each dead letter a RULE_ARN attribute
            # (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html).
            description = (
                f"{label}: an event EventBridge could not deliver (its RULE_ARN attribute names the rule), or a "
                "sweep that kept failing or could not run in time, is in the dead-letter queue. A run's status event "
                "or a sweep: a teardown did not start; check for deployments or models left billing. The job-request "
                "upload rule, or a message whose outcome says 'not started' (the upload starter's): the upload "
                "started no run; upload the job request again. The job-state rule: a state change was not notified; "
                "read it there"
            )
        self.alarm = alarm_to(
            alarm_topic,
            self,
            "DeadLettersAlarm",
            metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                period=ALARM_PERIOD, statistic="Maximum"
            ),
            threshold=1,
            description=description,
            missing_data=QUEUE_METRIC_MISSING_DATA,
        )

        self.sweep = PythonFunction(
            self,
            "Sweep",
            deployment=deployment,
            handler="teardown_sweep.handler.handler",
            description=f"{label}: hourly, start the teardown of executions that ended abnormally (once each)",
            service_name=service_name,
            timeout=SWEEP_TIMEOUT,
            memory_size=256,
            environment={
                "PIPELINE_ARN": pipeline.state_machine_arn,
                "TEARDOWN_ARN": teardown.state_machine_arn,
                "WINDOW_MINUTES": str(int(SWEEP_WINDOW.to_minutes())),
                "SETTLE_MINUTES": str(int(SWEEP_SETTLE.to_minutes())),
            },
        )
        # ListExecutions is authorized on the state machine, StartExecution on the one it starts.
        self.sweep.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListPipelineExecutions",
                actions=["states:ListExecutions"],
                resources=[pipeline.state_machine_arn],
            )
        )
        self.sweep.role.add_to_policy(
            iam.PolicyStatement(
                sid="StartTeardown", actions=["states:StartExecution"], resources=[teardown.state_machine_arn]
            )
        )
        # An asynchronous invocation that failed after Lambda's two retries lands in the dead-letter queue
        # (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html).
        self.sweep.function.configure_async_invoke(
            on_failure=_SendOnlyQueue(self.dead_letters), retry_attempts=2, max_event_age=SWEEP_MAX_AGE
        )
        # EventBridge Scheduler invokes the function asynchronously; an invocation it could not make after its
        # retries lands in the same dead-letter queue
        # (https://docs.aws.amazon.com/scheduler/latest/UserGuide/configuring-schedule-dlq.html).
        stack = Stack.of(self)
        # The schedule in a group of its own, so the role trusts that group's schedules only: Scheduler's
        # confused-deputy guidance sets aws:SourceArn to the schedule group ARN beside aws:SourceAccount
        # (https://docs.aws.amazon.com/scheduler/latest/UserGuide/cross-service-confused-deputy-prevention.html);
        # in the default group any schedule of the account could use the role.
        # It holds no data, and a group left behind would keep its name from the next deploy: destroyed in every stage.
        group = scheduler.ScheduleGroup(
            self,
            "ScheduleGroup",
            schedule_group_name=deployment.resource_name(service_name),
            removal_policy=RemovalPolicy.DESTROY,
        )
        schedule_role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": group.schedule_group_arn},
                },
            ),
            description=f"{label}: EventBridge Scheduler invokes the teardown sweep",
        )
        # A new construct id, so an update creates the grouped schedule and deletes the one of the default group:
        # UpdateSchedule cannot move a schedule to another group (tests/infra/update_safety._schedule_refusals).
        self.schedule = scheduler.Schedule(
            self,
            "GroupedSchedule",
            description=f"{label}: sweep for ended executions whose teardown did not start",
            schedule_group=group,
            schedule=scheduler.ScheduleExpression.rate(SWEEP_EVERY),
            target=scheduler_targets.LambdaInvoke(
                self.sweep.function,
                role=schedule_role,
                dead_letter_queue=self.dead_letters,
                retry_attempts=2,
                max_event_age=SCHEDULE_MAX_AGE,
            ),
        )
        # The schedule names its group by the name given above, not by a reference: created after it, deleted first.
        self.schedule.node.add_dependency(group)
        suppress(
            schedule_role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "CDK's grantInvoke lets the schedule invoke the sweep function and its versions (<function ARN>:*); "
            "the function has no other versions or aliases.",
            applies_to=[f"Resource::<{logical_id(self.sweep.function)}.Arn>:*"],
        )

    def target(self, teardown: sfn.StateMachine, role: iam.IRole) -> targets.SfnStateMachine:
        """The teardown as the status rule's target, started through ``role`` (rule_target_role): an event
        EventBridge could not deliver after its retries lands in the dead-letter queue instead of being dropped.
        CDK adds the queue policy that lets this rule send (events.amazonaws.com, aws:SourceArn); SSE-SQS needs
        no key policy for it."""
        return targets.SfnStateMachine(teardown, dead_letter_queue=self.dead_letters, role=role)
