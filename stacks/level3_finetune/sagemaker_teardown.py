"""The teardown after a SageMaker fine-tuning execution that ended FAILED, TIMED_OUT or ABORTED: stop its training
job, delete the model its import created, report.

    EventBridge "Step Functions Execution Status Change" (FAILED | TIMED_OUT | ABORTED, this pipeline only)
    ─► AnExecutionEnded? ─► NameWhatItCreated (<job prefix><MD5 of the execution ARN>, as the pipeline names it)
    ─► LetCallsInFlightLand ─► DescribeItsTrainingJob ─► JobStillRunning? InProgress ─► StopItsTrainingJob
           (retried about ten minutes; still failing ─► CheckItsTrainingJobAgain: still InProgress or unreadable
           ─► NotifyJobNotStopped, "ACTION NEEDED") ─► ReadItsImportJob
           not running ─► ReadItsImportJob; unreadable (no job) ─► TryToStopItsTrainingJob (any error: nothing
           to stop) ─► ReadItsImportJob
    ReadItsImportJob ─► ImportStillRunning? InProgress ─► WaitForItsImportJob (10 min) ─► CountImportCheck
           ─► ReadItsImportJob, at most IMPORT_CHECKS times, then NotifyImportStillRunning ("ACTION NEEDED")
           ended, no import job or unreadable ─► DeleteItsImportedModel
    DeleteItsImportedModel ─► ResourceNotFound ─► AnythingToReport? ─► NotifyCleanedUp | NothingLeft
           other errors, retried for about an hour ─► NotifyCleanupFailed ("ACTION NEEDED") ─► CleanupFailed
           deleted ─► NotifyCleanedUp
    hourly sweep (sweep.py) ─► the same teardown, named sweep-<hash>, for runs whose event never started it

A Catch inside the pipeline cannot see the execution's own timeout or an abort (and a failure off its catch
paths skips its DeleteImportedModel), so this state machine, started by the status event, deletes the model by
the name the run gave it. A successful run keeps its model by design; while kept it bills storage per Custom Model
Unit each month (kit/prices.json bedrock.imported_model_storage), plus inference while it serves
(https://docs.aws.amazon.com/bedrock/latest/userguide/import-model-calculate-cost.html).
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct
from teardown_sweep.names import ENDED_ABNORMALLY, SWEEP_PREFIX

from stacks.level3_finetune.pipeline import (
    DELETE_RETRY_ATTEMPTS,
    DELETE_RETRY_INTERVAL,
    TRANSIENT_BEDROCK,
    bedrock_task,
    notification,
    retry_throttling,
)
from stacks.level3_finetune.sagemaker_pipeline import (
    IMPORT_CHECK_INTERVAL,
    IMPORT_CHECKS,
    IMPORT_WAIT_MINUTES,
    run_name,
)
from stacks.level3_finetune.sweep import TeardownBackstop
from stacks.level3_finetune.teardown import (
    STARTED_AS,
    TEARDOWN_SETTLE,
    report_unless_already_notified,
)
from stacks.shared.conditions import equals_where_present
from stacks.shared.deployment import Deployment
from stacks.shared.failures import reported_fail
from stacks.shared.notifications import rule_target_role
from stacks.shared.stage import state_machine_log_group

# The longest path: the settle, about ten minutes of stop retries, up to IMPORT_CHECKS waits for the import job with
# each read's throttling retries (up to 930 s each), about an hour of delete retries and three notifications: about
# 4 hours (tests/level3_finetune/test_history.py derives it from the definition). A teardown that timed out would
# leave the model it was about to delete, unreported.
TEARDOWN_TIMEOUT = Duration.hours(5)
STOP_RETRY_INTERVAL = Duration.seconds(2)
STOP_RETRY_ATTEMPTS = 3
# A job DescribeTrainingJob says is InProgress is stopped with retries for about ten minutes (10, 20, ... 320 s):
# a throttled or refused stop must not leave it billing until its StoppingCondition.
RUNNING_STOP_RETRY_INTERVAL = Duration.seconds(10)
RUNNING_STOP_RETRY_ATTEMPTS = 6


class SageMakerPipelineTeardown(Construct):
    """Cleans up after a SageMaker fine-tuning execution that ended FAILED, TIMED_OUT or ABORTED.

    Step Functions emits a "Step Functions Execution Status Change" event when an execution ends
    (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html). The pipeline names its
    training job, import job and imported model ``<job_prefix><MD5 of the execution ARN>``
    (sagemaker_pipeline.run_name); the event carries the execution ARN (``detail.executionArn``), so this state
    machine derives the same names.

    Limits: Bedrock has no API to stop a model import job. The teardown waits TEARDOWN_SETTLE for calls in flight
    to land and, while the run's import job is InProgress, up to IMPORT_CHECKS x IMPORT_CHECK_INTERVAL for it to
    end, then deletes the imported model if it exists; an import job still running after that creates its model
    later, and the report (ACTION NEEDED) names the model so the operator deletes it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        job_prefix: str,
        pipeline: sfn.StateMachine,
        topic: sns.Topic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        arn = f"arn:{stack.partition}"

        done = sfn.Succeed(self, "CleanedUp")
        failed = reported_fail(
            self,
            "CleanupFailed",
            error="ImportedModelNotDeleted",
            summary="ACTION NEEDED: the imported model of the ended execution could not be deleted; delete it by hand",
            details=["$.error"],
        )
        report_message = {
            "outcome": "cleaned up: a SageMaker fine-tuning execution ended without finishing its own path; its "
            "training job was stopped and its imported model deleted, where they existed, once its import job "
            "(which Bedrock cannot stop) had ended or the wait for it ran out",
            "execution": sfn.JsonPath.string_at("$.execution"),
            "status": sfn.JsonPath.string_at("$.status"),
            "trainingJob": sfn.JsonPath.string_at("$.name"),
            "importedModel": sfn.JsonPath.string_at("$.name"),
        }
        report = notification(self, "NotifyCleanedUp", topic, report_message, done)
        # A run that failed on a path that notified it already (and deleted its model itself) says nothing more;
        # timeouts, aborts and anything stopped or deleted here are reported.
        worth_reporting = report_unless_already_notified(self, report)
        name = sfn.Pass(
            self,
            "NameWhatItCreated",
            comment="The pipeline names its training job, import job and model <job prefix><hash of its ARN>",
            parameters={
                "execution": sfn.JsonPath.string_at("$.detail.executionArn"),
                "status": sfn.JsonPath.string_at("$.detail.status"),
                "name.$": run_name(job_prefix, "$.detail.executionArn"),
                "acted": False,
                "importChecks": {"count": 0},
                **STARTED_AS,
            },
        )
        # A CreateModelImportJob or DeleteImportedModel call in flight when the execution ended lands meanwhile.
        settle = sfn.Wait(self, "LetCallsInFlightLand", time=sfn.WaitTime.duration(TEARDOWN_SETTLE))
        # The SageMaker integration page grants sagemaker:StopTrainingJob in its .sync policy, but neither it nor the
        # integration-patterns page promises that Step Functions stops the job when the execution is aborted or
        # times out (https://docs.aws.amazon.com/step-functions/latest/dg/connect-sagemaker.html,
        # https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-sync), so the
        # teardown stops it itself. A job that is not found or already ended answers an error: nothing to stop
        # (the job's StoppingCondition bounds what it can bill in any case).
        training_jobs = [f"{arn}:sagemaker:{stack.region}:{stack.account}:training-job/{job_prefix}*"]

        def stop(state_id: str) -> tasks.CallAwsService:
            return tasks.CallAwsService(
                self,
                state_id,
                service="sagemaker",
                action="stopTrainingJob",
                parameters={"TrainingJobName": sfn.JsonPath.string_at("$.name")},
                iam_action="sagemaker:StopTrainingJob",
                iam_resources=training_jobs,
                result_path=sfn.JsonPath.DISCARD,
            )

        # First what the job is doing (DescribeTrainingJob's TrainingJobStatus, botocore's TrainingJobStatus enum).
        # One still InProgress is stopped with retries, and one that cannot be stopped is reported (ACTION NEEDED).
        # When the job cannot be read (none was created, or the read is refused), a stop is tried briefly, and an
        # error is taken as nothing to stop, as before.
        def describe(state_id: str) -> tasks.CallAwsService:
            task = tasks.CallAwsService(
                self,
                state_id,
                service="sagemaker",
                action="describeTrainingJob",
                parameters={"TrainingJobName": sfn.JsonPath.string_at("$.name")},
                iam_action="sagemaker:DescribeTrainingJob",
                iam_resources=training_jobs,
                result_selector={"status": sfn.JsonPath.string_at("$.TrainingJobStatus")},
                result_path="$.job",
            )
            task.add_retry(
                errors=["States.TaskFailed"],
                interval=STOP_RETRY_INTERVAL,
                max_attempts=STOP_RETRY_ATTEMPTS,
                backoff_rate=2.0,
            )
            return task

        describe_job = describe("DescribeItsTrainingJob")
        stop_running = stop("StopItsTrainingJob")
        stop_running.add_retry(
            errors=["States.ALL"],
            interval=RUNNING_STOP_RETRY_INTERVAL,
            max_attempts=RUNNING_STOP_RETRY_ATTEMPTS,
            backoff_rate=2.0,
        )
        stop_job = stop("TryToStopItsTrainingJob")
        stop_job.add_retry(
            errors=["States.ALL"],
            interval=STOP_RETRY_INTERVAL,
            max_attempts=STOP_RETRY_ATTEMPTS,
            backoff_rate=2.0,
        )

        def by_run_name(
            state_id: str, action: str, member: str, resource: str, result_path: str
        ) -> tasks.CallAwsService:
            """A Bedrock call about the run's import job or model, named as the run named it (a name or an ARN)."""
            named = {member: sfn.JsonPath.string_at("$.name")}
            resources = [f"{arn}:bedrock:{stack.region}:{stack.account}:{resource}/*"]
            return bedrock_task(self, state_id, action, named, resources, result_path)

        delete = by_run_name(
            "DeleteItsImportedModel", "deleteImportedModel", "ModelIdentifier", "imported-model", sfn.JsonPath.DISCARD
        )
        # Not found: the run imported none (or deleted it itself). Anything else is retried for about an hour.
        delete.add_retry(errors=["Bedrock.ResourceNotFoundException"], max_attempts=0)
        delete.add_retry(
            errors=["States.ALL"], interval=DELETE_RETRY_INTERVAL, max_attempts=DELETE_RETRY_ATTEMPTS, backoff_rate=2.0
        )
        delete.add_catch(worth_reporting, errors=["Bedrock.ResourceNotFoundException"], result_path="$.notFound")
        alarm = {
            **report_message,
            "outcome": "ACTION NEEDED: the imported model of an ended SageMaker fine-tuning execution could not be "
            "deleted; delete it by hand (while kept it bills storage every month, and inference whenever it "
            "serves)",
            "error": sfn.JsonPath.object_at("$.error"),
        }
        not_deleted = notification(self, "NotifyCleanupFailed", topic, alarm, failed)
        delete.add_catch(not_deleted, errors=["States.ALL"], result_path="$.error")
        delete.next(sfn.Pass(self, "Deleted", result=sfn.Result.from_boolean(True), result_path="$.acted")).next(report)

        # Before the delete: the run's import job, by the name the run gave it, must have ended (IMPORT_CHECKS).
        # Not found: the run started none. Unreadable after the retries: delete now, as before the wait existed.
        # The answer is kept whole: GetModelImportJobResponse requires no member, its status included.
        read_import = by_run_name(
            "ReadItsImportJob", "getModelImportJob", "JobIdentifier", "model-import-job", "$.importJob"
        )
        read_import.add_retry(errors=["Bedrock.ResourceNotFoundException"], max_attempts=0)
        retry_throttling(read_import, TRANSIENT_BEDROCK)
        read_import.add_catch(delete, errors=["States.ALL"], result_path="$.importNotRead")
        still_importing = {
            **report_message,
            "outcome": "ACTION NEEDED: the import job of an ended SageMaker fine-tuning execution was still in "
            f"progress after {IMPORT_WAIT_MINUTES} minutes, and Bedrock cannot stop "
            "it; the teardown deletes the model now, so delete the model the job creates when it completes (while "
            "kept it bills storage every month)",
        }
        # A teardown the hourly sweep started may wait beside the event's (both see the import running): only the
        # event's says so, as a sweep's teardown reports only what it stopped or deleted itself.
        gave_up = (
            sfn.Choice(self, "StartedBySweep?")
            .when(sfn.Condition.string_matches("$.teardown", f"{SWEEP_PREFIX}*"), delete)
            .otherwise(notification(self, "NotifyImportStillRunning", topic, still_importing, delete))
        )
        counted = sfn.Pass(
            self,
            "CountImportCheck",
            parameters={"count": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.importChecks.count"), 1)},
            result_path="$.importChecks",
        )
        wait_import = sfn.Wait(self, "WaitForItsImportJob", time=sfn.WaitTime.duration(IMPORT_CHECK_INTERVAL))
        importing = equals_where_present("$.importJob.Status", "InProgress")
        read_import.next(
            sfn.Choice(self, "ImportStillRunning?")
            .when(
                sfn.Condition.and_(importing, sfn.Condition.number_less_than("$.importChecks.count", IMPORT_CHECKS)),
                wait_import.next(counted).next(read_import),
            )
            .when(importing, gave_up)
            .otherwise(delete)
        )
        stop_job.add_catch(read_import, errors=["States.ALL"], result_path="$.jobNotStopped")
        stopped = sfn.Pass(self, "JobStopped", result=sfn.Result.from_boolean(True), result_path="$.acted")
        stop_job.next(stopped)
        stop_running.next(stopped)
        stopped.next(read_import)
        still_running = {
            **report_message,
            "outcome": "ACTION NEEDED: the training job of an ended SageMaker fine-tuning execution is still running "
            "and could not be stopped; stop it by hand (it bills until its maximum runtime); the teardown goes on "
            "to delete the imported model",
            "error": sfn.JsonPath.object_at("$.jobNotStopped"),
        }
        # A stop that kept failing may have failed because the job ended meanwhile (a stop of an ended job is
        # refused): only a job still InProgress, or one that cannot be read, is reported.
        not_stopped = notification(self, "NotifyJobNotStopped", topic, still_running, read_import)
        recheck = describe("CheckItsTrainingJobAgain")
        recheck.add_catch(not_stopped, errors=["States.ALL"], result_path="$.jobNotRead")
        recheck.next(
            sfn.Choice(self, "StillRunning?")
            .when(sfn.Condition.string_equals("$.job.status", "InProgress"), not_stopped)
            .otherwise(read_import)
        )
        stop_running.add_catch(recheck, errors=["States.ALL"], result_path="$.jobNotStopped")
        describe_job.add_catch(stop_job, errors=["States.ALL"], result_path="$.jobNotRead")
        describe_job.next(
            sfn.Choice(self, "JobStillRunning?")
            .when(sfn.Condition.string_equals("$.job.status", "InProgress"), stop_running)
            .otherwise(read_import)
        )
        is_event = sfn.Condition.and_(
            *(sfn.Condition.is_present(f"$.detail.{field}") for field in ("executionArn", "name", "status"))
        )
        is_text = sfn.Condition.and_(
            *(sfn.Condition.is_string(f"$.detail.{field}") for field in ("executionArn", "name", "status"))
        )
        definition = (
            sfn.Choice(self, "AnExecutionEnded?")
            .when(
                is_event,
                sfn.Choice(self, "FieldsAreText?")
                .when(is_text, name.next(settle).next(describe_job))
                .otherwise(sfn.Succeed(self, "NotAnExecutionEvent")),
            )
            .otherwise(sfn.Succeed(self, "NotAStatusEvent"))
        )
        self.logs = state_machine_log_group(self, "Logs", deployment, deployment.resource_name("sft-teardown"))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=deployment.resource_name("sft-teardown"),
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=TEARDOWN_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # The event is delivered best effort: an hourly sweep starts this teardown too, once per run, and an
        # event EventBridge could not deliver lands in a dead-letter queue whose alarm notifies the topic.
        self.backstop = TeardownBackstop(
            self,
            "Backstop",
            deployment=deployment,
            pipeline=pipeline,
            teardown=self.state_machine,
            alarm_topic=topic,
            label="Level 3 on SageMaker",
            service_name="sft-teardown-sweep",
        )
        rule_name = deployment.resource_name("sft-pipeline-ended")
        self.rule = events.Rule(
            self,
            "PipelineEnded",
            rule_name=rule_name,
            description="Level 3 on SageMaker: a fine-tuning execution that failed, timed out or was aborted is "
            "cleaned up",
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
