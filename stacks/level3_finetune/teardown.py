"""The teardown after a pipeline execution that ended FAILED, TIMED_OUT or ABORTED: stop its job, delete its
deployment, report.

    EventBridge "Step Functions Execution Status Change" (FAILED | TIMED_OUT | ABORTED, this pipeline only)
    ─► AnExecutionEnded? ─► NameWhatItCreated ─► Names (<job prefix> and <deployment prefix> + MD5 of the ARN)
    ─► LetCallsInFlightLand ─► GetItsJob ─► JobStillRunning? InProgress ─► StopItsJob (retried about ten
           minutes; still failing ─► CheckItsJobAgain: still InProgress, or unreadable for another reason than
           ResourceNotFound / Validation ─► NotifyJobNotStopped, "ACTION NEEDED") ─► DeleteItsThroughput
           not running ─► DeleteItsThroughput; no such job (ResourceNotFound / Validation) ─► TryToStopItsJob
           (any error: nothing to stop) ─► DeleteItsThroughput; any other read error ─► StopItsJob
    ─► DeleteItsThroughput ─► DeleteItsDeployment ─► AnythingToReport? ─► NotifyCleanedUp | NothingLeft
           a delete failing for about an hour ─► NotifyCleanupFailed ("ACTION NEEDED") ─► CleanupFailed
    hourly sweep (sweep.py) ─► the same teardown, named sweep-<hash>, for runs whose event never started it
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct
from teardown_sweep.names import ENDED_ABNORMALLY, SWEEP_PREFIX

from stacks.level3_finetune.names import PipelineNames, bedrock_arn, execution_id
from stacks.level3_finetune.pipeline import DELETE_RETRY_ATTEMPTS, DELETE_RETRY_INTERVAL, notification, retry_throttling
from stacks.level3_finetune.sweep import TeardownBackstop
from stacks.shared.conditions import absent_or_equals
from stacks.shared.deployment import Deployment
from stacks.shared.failures import reported_fail
from stacks.shared.notifications import rule_target_role
from stacks.shared.stage import state_machine_log_group

TEARDOWN_SETTLE = Duration.minutes(2)
TEARDOWN_TIMEOUT = Duration.hours(3)
# GetModelCustomizationJob (a read) retries any task error briefly: 2, 4 and 8 s.
READ_RETRY_INTERVAL = Duration.seconds(2)
READ_RETRY_ATTEMPTS = 3
# A job GetModelCustomizationJob says is InProgress is stopped with retries for about ten minutes (10, 20, ...
# 320 s), as the SageMaker teardown stops its training job: a throttled, unavailable or refused stop must not
# leave the job training, and billing, to completion.
RUNNING_STOP_RETRY_INTERVAL = Duration.seconds(10)
RUNNING_STOP_RETRY_ATTEMPTS = 6
# What GetModelCustomizationJob answers when there is no job to read: none of this name (ResourceNotFound) or an
# identifier it refuses (Validation) (botocore bedrock 2023-04-20, GetModelCustomizationJob errors). The old path
# then: a stop is tried, and any error means nothing to stop.
NO_SUCH_JOB = ["Bedrock.ResourceNotFoundException", "Bedrock.ValidationException"]


def _not_known_ended(status: str) -> sfn.Condition:
    """The job may still run: its status is InProgress, or absent (unknown, so treated as running; botocore bedrock
    2023-04-20 GetModelCustomizationJobResponse does not require status). Or[Not(IsPresent), And[IsPresent,
    StringEquals]]: the Choice page documents that an And evaluates its StringEquals only after its IsPresent held,
    and no order for an Or, so the comparison is guarded whichever rule of the Or is evaluated first
    (https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-choice-state.html)."""
    return absent_or_equals(status, "InProgress")


# The teardown's own execution name, kept in its state: a sweep's teardown is named SWEEP_PREFIX + hash.
STARTED_AS = {"teardown": sfn.JsonPath.string_at("$$.Execution.Name")}


def report_unless_already_notified(scope: Construct, report: sfn.IChainable) -> sfn.Choice:
    """Go to ``report`` when the teardown acted (``$.acted``), or the run did not end FAILED and the status event
    started this teardown; otherwise succeed quietly. A run that failed on a path of its own has already been
    notified. That holds only while no state of the pipeline can raise an error no Catch catches (States.Runtime,
    States.DataLimitExceeded): its JSONPaths select what a Choice saw present, and ReadJobRequest reads at most
    pipeline.MAX_REQUEST_BYTES. The SageMaker path reads its input without copying it (stacks/shared/state_input.py),
    but an input within a few KiB of StartExecution's 256 KiB can still fill the state at a later step with no
    notification; docs/level-3-finetune.md asks callers to leave that room. A teardown the hourly sweep started
    (named ``sweep-...``, ``$.teardown``) reports only what it stopped or deleted: the event's teardown may have
    reported the run already."""
    return (
        sfn.Choice(scope, "AnythingToReport?")
        .when(
            sfn.Condition.or_(
                sfn.Condition.boolean_equals("$.acted", True),
                sfn.Condition.and_(
                    sfn.Condition.not_(sfn.Condition.string_equals("$.status", "FAILED")),
                    sfn.Condition.not_(sfn.Condition.string_matches("$.teardown", f"{SWEEP_PREFIX}*")),
                ),
            ),
            report,
        )
        .otherwise(sfn.Succeed(scope, "NothingLeft"))
    )


class PipelineTeardown(Construct):
    """Cleans up after a pipeline execution that ended FAILED, TIMED_OUT or ABORTED.

    Step Functions emits a "Step Functions Execution Status Change" event when an execution ends
    (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html). A rule for the pipeline's
    executions starts this small state machine, which names what the ended execution created from its ARN (the
    same intrinsic the pipeline uses), stops its customization job if it still runs (reading its status first, and
    reporting ACTION NEEDED when one still InProgress cannot be stopped), deletes its Provisioned
    Throughput and its on-demand deployment if they exist, and reports on the topic, though the pipeline's own teardown
    never ran. Step Functions sends that event best effort
    (https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-states.html), so an hourly sweep (sweep.py)
    starts this teardown too, once per run, for runs that ended in the last hours: a lost event delays the
    deletion by at most about an hour. An event EventBridge could not deliver to it lands in a dead-letter queue
    whose alarm notifies the topic (the queue also takes the job-request upload rule's undelivered events).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        pipeline: sfn.StateMachine,
        topic: sns.Topic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        names = PipelineNames.of(deployment)

        done = sfn.Succeed(self, "CleanedUp")
        failed = reported_fail(
            self,
            "CleanupFailed",
            error="DeploymentNotDeleted",
            summary="ACTION NEEDED: the deployment of the ended execution could not be deleted; delete it by hand",
            details=["$.names", "$.error"],
        )
        report_message = {
            "outcome": "cleaned up: a pipeline execution ended without finishing its own path; its job was stopped "
            "and its deployment deleted, where it had them (a job that could not be stopped is reported apart, "
            "ACTION NEEDED)",
            "execution": sfn.JsonPath.string_at("$.execution"),
            "status": sfn.JsonPath.string_at("$.status"),
            "detail": sfn.JsonPath.object_at("$.names"),
        }
        report = notification(self, "NotifyCleanedUp", topic, report_message, done)
        # A run that failed on a path that notified it already (invalid data, a failed job) and had nothing left
        # running says nothing more; timeouts, aborts and anything stopped or deleted here are reported.
        worth_reporting = report_unless_already_notified(self, report)
        name = sfn.Pass(
            self,
            "NameWhatItCreated",
            parameters={
                "execution": sfn.JsonPath.string_at("$.detail.executionArn"),
                "status": sfn.JsonPath.string_at("$.detail.status"),
                "id.$": execution_id("$.detail.executionArn"),
                "acted": False,
                **STARTED_AS,
            },
        )
        names_pass = sfn.Pass(
            self,
            "Names",
            parameters={
                "execution": sfn.JsonPath.string_at("$.execution"),
                "status": sfn.JsonPath.string_at("$.status"),
                "acted": sfn.JsonPath.object_at("$.acted"),
                "teardown": sfn.JsonPath.string_at("$.teardown"),
                "names": {
                    "job": sfn.JsonPath.format(f"{names.job}{{}}", sfn.JsonPath.string_at("$.id")),
                    "deployment": sfn.JsonPath.format(f"{names.deployment}{{}}", sfn.JsonPath.string_at("$.id")),
                },
            },
        )
        # A create call still in flight when the execution ended lands meanwhile.
        settle = sfn.Wait(self, "LetCallsInFlightLand", time=sfn.WaitTime.duration(TEARDOWN_SETTLE))
        # GetModelCustomizationJob and StopModelCustomizationJob take the job's name or ARN (botocore bedrock
        # 2023-04-20, ModelCustomizationJobIdentifier); both are granted on the job's one resource type,
        # model-customization-job (Service Authorization Reference, Amazon Bedrock actions).
        jobs = [bedrock_arn(stack, "model-customization-job/*")]

        def stop(state_id: str) -> tasks.CallAwsService:
            return tasks.CallAwsService(
                self,
                state_id,
                service="bedrock",
                action="stopModelCustomizationJob",
                parameters={"JobIdentifier": sfn.JsonPath.string_at("$.names.job")},
                iam_action="bedrock:StopModelCustomizationJob",
                iam_resources=jobs,
                result_path=sfn.JsonPath.DISCARD,
            )

        # First what the job is doing: GetModelCustomizationJob's status, one of InProgress | Completed | Failed |
        # Stopping | Stopped (botocore bedrock 2023-04-20, ModelCustomizationJobStatus; Step Functions names the
        # member Status). One still InProgress is stopped with retries, and one that still cannot be stopped is
        # reported (ACTION NEEDED): a customization job not stopped trains to completion, billing for all of it,
        # and leaves a model that bills storage every month. Before, any stop error was taken as "nothing to stop".
        def get(state_id: str) -> tasks.CallAwsService:
            task = tasks.CallAwsService(
                self,
                state_id,
                service="bedrock",
                action="getModelCustomizationJob",
                parameters={"JobIdentifier": sfn.JsonPath.string_at("$.names.job")},
                iam_action="bedrock:GetModelCustomizationJob",
                iam_resources=jobs,
                # The whole answer, not a selection: botocore's model does not require its status, and a
                # ResultSelector path that is absent is a States.Runtime error no Catch takes, which would end the
                # teardown before its deletes. The Choices below read Status only where present.
                result_path="$.job",
            )
            task.add_retry(errors=NO_SUCH_JOB, max_attempts=0)  # no job of this name: asking again changes nothing
            task.add_retry(
                errors=["States.TaskFailed"],
                interval=READ_RETRY_INTERVAL,
                max_attempts=READ_RETRY_ATTEMPTS,
                backoff_rate=2.0,
            )
            return task

        get_job = get("GetItsJob")
        stop_running = stop("StopItsJob")
        stop_running.add_retry(
            errors=["States.ALL"],
            interval=RUNNING_STOP_RETRY_INTERVAL,
            max_attempts=RUNNING_STOP_RETRY_ATTEMPTS,
            backoff_rate=2.0,
        )
        # No job of this name: a stop is tried as before, and any error means nothing to stop.
        stop_job = stop("TryToStopItsJob")
        retry_throttling(stop_job)
        marked = sfn.Pass(self, "JobStopped", result=sfn.Result.from_boolean(True), result_path="$.acted")
        # Whatever ft_deploy is now, both kinds of deployment are deleted by the run's name: a run started under
        # another value keeps its definition, while an update replaces its role's policy at once ("Running
        # executions will continue to use the previous definition and roleArn",
        # https://docs.aws.amazon.com/step-functions/latest/apireference/API_UpdateStateMachine.html), so a run
        # holding a Provisioned Throughput when ft_deploy changes may fail to delete it; this teardown then does.
        alarm = {
            **report_message,
            "outcome": "ACTION NEEDED: the deployment of an ended pipeline execution could not be deleted and "
            "may still be billing; delete it by hand",
            "error": sfn.JsonPath.object_at("$.error"),
        }
        not_deleted = notification(self, "NotifyCleanupFailed", topic, alarm, failed)

        def delete(state_id: str, action: str, identifier: str, resource: str) -> tasks.CallAwsService:
            task = tasks.CallAwsService(
                self,
                state_id,
                service="bedrock",
                action=action,
                parameters={identifier: sfn.JsonPath.string_at("$.names.deployment")},  # a name or an ARN
                iam_action=f"bedrock:{action[:1].upper()}{action[1:]}",
                iam_resources=[bedrock_arn(stack, f"{resource}/*")],
                result_path=sfn.JsonPath.DISCARD,
            )
            # Not found: the execution created none (or deleted it itself). Anything else is retried for an hour.
            task.add_retry(errors=["Bedrock.ResourceNotFoundException"], max_attempts=0)
            task.add_retry(
                errors=["States.ALL"],
                interval=DELETE_RETRY_INTERVAL,
                max_attempts=DELETE_RETRY_ATTEMPTS,
                backoff_rate=2.0,
            )
            return task

        throughput = delete(
            "DeleteItsThroughput", "deleteProvisionedModelThroughput", "ProvisionedModelId", "provisioned-model"
        )
        on_demand = delete(
            "DeleteItsDeployment",
            "deleteCustomModelDeployment",
            "CustomModelDeploymentIdentifier",
            "custom-model-deployment",
        )
        throughput.add_catch(on_demand, errors=["Bedrock.ResourceNotFoundException"], result_path="$.notFound")
        throughput.add_catch(not_deleted, errors=["States.ALL"], result_path="$.error")
        throughput.next(
            sfn.Pass(self, "ThroughputDeleted", result=sfn.Result.from_boolean(True), result_path="$.acted")
        ).next(on_demand)
        on_demand.add_catch(worth_reporting, errors=["Bedrock.ResourceNotFoundException"], result_path="$.notFound")
        on_demand.add_catch(not_deleted, errors=["States.ALL"], result_path="$.error")
        on_demand.next(sfn.Pass(self, "Deleted", result=sfn.Result.from_boolean(True), result_path="$.acted")).next(
            report
        )
        # No job: nothing to stop (the error is kept in the output).
        after_stop = throughput
        stop_job.add_catch(after_stop, errors=["States.ALL"], result_path="$.jobNotStopped")
        stop_job.next(marked)
        stop_running.next(marked)
        marked.next(after_stop)
        still_running = {
            **report_message,
            "outcome": "ACTION NEEDED: the customization job of an ended pipeline execution is still running and "
            "could not be stopped; stop it by hand (it trains to completion, billing for all of it, and its model "
            "then bills storage every month); the teardown goes on to delete the deployment",
            "job": sfn.JsonPath.string_at("$.names.job"),
            "error": sfn.JsonPath.object_at("$.jobNotStopped"),
        }
        # A stop that kept failing may have failed because the job ended meanwhile (a stop of an ended job is
        # refused): only a job still InProgress, or one that cannot be read for another reason than there being
        # none, is reported.
        not_stopped = notification(self, "NotifyJobNotStopped", topic, still_running, after_stop)
        recheck = get("CheckItsJobAgain")
        recheck.add_catch(after_stop, errors=NO_SUCH_JOB, result_path="$.jobNotRead")
        recheck.add_catch(not_stopped, errors=["States.ALL"], result_path="$.jobNotRead")
        recheck.next(
            sfn.Choice(self, "StillRunning?").when(_not_known_ended("$.job.Status"), not_stopped).otherwise(after_stop)
        )
        stop_running.add_catch(recheck, errors=["States.ALL"], result_path="$.jobNotStopped")
        # A job that cannot be read because there is none keeps the old path; any other read error (refused,
        # unavailable after the retries) may hide a running job, so it is stopped, and reported if it cannot be.
        get_job.add_catch(stop_job, errors=NO_SUCH_JOB, result_path="$.jobNotRead")
        get_job.add_catch(stop_running, errors=["States.ALL"], result_path="$.jobNotRead")
        get_job.next(
            sfn.Choice(self, "JobStillRunning?")
            .when(_not_known_ended("$.job.Status"), stop_running)
            .otherwise(after_stop)
        )
        definition = (
            sfn.Choice(self, "AnExecutionEnded?")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.detail.executionArn"), sfn.Condition.is_present("$.detail.status")
                ),
                sfn.Choice(self, "ArnIsText?")
                .when(
                    sfn.Condition.and_(
                        sfn.Condition.is_string("$.detail.executionArn"), sfn.Condition.is_string("$.detail.status")
                    ),
                    name.next(names_pass).next(settle).next(get_job),
                )
                .otherwise(sfn.Succeed(self, "NotAnExecutionEvent")),
            )
            .otherwise(sfn.Succeed(self, "NotAStatusEvent"))
        )
        self.logs = state_machine_log_group(self, "Logs", deployment, deployment.resource_name("finetune-teardown"))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=deployment.resource_name("finetune-teardown"),
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=TEARDOWN_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # The dead-letter alarm notifies the level's topic (encrypted with the stack's key: the backstop lets
        # CloudWatch publish to it and use the key).
        self.backstop = TeardownBackstop(
            self,
            "Backstop",
            deployment=deployment,
            pipeline=pipeline,
            teardown=self.state_machine,
            alarm_topic=topic,
            label="Level 3",
            service_name="finetune-teardown-sweep",
            uploads=True,  # FineTuneStack's job-request upload rule dead-letters here too
        )
        rule_name = deployment.resource_name("ft-pipeline-ended")
        self.rule = events.Rule(
            self,
            "PipelineEnded",
            rule_name=rule_name,
            description="Level 3: a fine-tuning execution that failed, timed out or was aborted is cleaned up",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": list(ENDED_ABNORMALLY), "stateMachineArn": [pipeline.state_machine_arn]},
            ),
            targets=[
                self.backstop.target(
                    self.state_machine,
                    rule_target_role(self, "PipelineEndedDelivery", rule_name, "to start the teardown"),
                )
            ],
        )
