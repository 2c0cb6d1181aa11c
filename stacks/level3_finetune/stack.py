"""Level 3 — fine-tuning: validate the data, run a Bedrock customization job, deploy on request, report.

jobs/<name>.json uploaded ──► EventBridge ──► Step Functions ◄── StartExecution (direct)
                                                 │ read request · merge defaults · name the job
                                                 ├─► validator function (streams the JSONL from S3, writes a report)
                                                 │     invalid ──► notify ──► fail
                                                 ├─► CreateModelCustomizationJob (own role; quota full: wait and retry)
                                                 ├─► wait / GetModelCustomizationJob … (bounded; timeout: stop job)
                                                 ├─► optional deployment: on-demand | Provisioned Throughput (torn down)
                                                 └─► SNS topic (+ e-mail)
    EventBridge "Model Customization Job State Change" (this kit's jobs) ──► the same SNS topic
    EventBridge "Step Functions Execution Status Change" (FAILED | TIMED_OUT | ABORTED) ──► teardown state machine
                  ──► stop the ended run's job, delete its throughput or deployment (found by name) ──► SNS
    sandbox only: cleanup custom resource ──(stack deletion, before the key)──► stop executions and jobs,
                  delete deployments, throughputs and the custom models encrypted with the key
CloudFormation has no resource for a customization job, a custom model or Provisioned Throughput, so the
stack deploys the pipeline that creates them. Those models are encrypted with the stack's key: a sandbox
destroy deletes them before the key; the prod stage retains the key and the models (docs/level-3-finetune.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsii
from aws_cdk import CfnOutput, CustomResource, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

from stacks.config import KitConfig
from stacks.level3_finetune.settings import FineTuneSettings
from stacks.shared.nag import suppress
from stacks.shared.python_function import PythonFunction
from stacks.shared.secure_bucket import SecureBucket
from stacks.shared.stage import log_group, removal_policy, tag_stack

LEVEL = "3-finetune"
DATASETS_PREFIX = "datasets/"
JOBS_PREFIX = "jobs/"
REPORTS_PREFIX = "reports/"
OUTPUT_PREFIX = "customization-output/"
# Two customization jobs may run per account; a third start fails with ServiceQuotaExceededException.
QUOTA_RETRY_INTERVAL = Duration.minutes(10)
QUOTA_RETRY_ATTEMPTS = 18  # three hours of waiting for a free slot
VALIDATOR_ERRORS = ["InvalidRequest", "DatasetNotFound"]
DEPLOY_POLL_INTERVAL = Duration.minutes(5)
DEPLOY_POLLS = 36  # three hours for a deployment or a throughput to come up
VALIDATOR_TIMEOUT = Duration.minutes(15)
THROTTLE_RETRY_INTERVAL = Duration.seconds(30)
THROTTLE_RETRY_ATTEMPTS = 5  # 30 s to 8 min apart: about 15 minutes in all
NOTIFY_RETRY_INTERVAL = Duration.seconds(10)
NOTIFY_RETRY_ATTEMPTS = 4  # 10, 20, 40 and 80 s
DELETE_RETRY_INTERVAL = Duration.minutes(1)
DELETE_RETRY_ATTEMPTS = 6  # 1 to 32 minutes apart: about an hour in all
# The execution timeout: the configured bounds (execution_bounds) plus this, for retries of transient errors.
EXECUTION_HEADROOM = Duration.hours(6)
# What an execution creates is named by a hash of its ARN (32 hex digits), so the teardown can find it.
NAME_HASH = "MD5"
JOB_TAG_KEY = "kit-execution"
# Step Functions execution statuses after which PipelineTeardown cleans up (SUCCEEDED runs cleaned up themselves).
ENDED_ABNORMALLY = ("FAILED", "TIMED_OUT", "ABORTED")
TEARDOWN_SETTLE = Duration.minutes(2)
TEARDOWN_TIMEOUT = Duration.hours(3)
KMS_MONTHLY_USD = 1.0
# The cleanup answers CloudFormation before this timeout (its own deadline leaves a margin); CloudFormation
# stops waiting for an answer after CLEANUP_SERVICE_TIMEOUT instead of the default hour.
CLEANUP_TIMEOUT = Duration.minutes(10)
CLEANUP_SERVICE_TIMEOUT = Duration.minutes(15)


def _bedrock_arn(stack: Stack, resource: str) -> str:
    return f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:{resource}"


@dataclass(frozen=True)
class PipelineNames:
    """The name prefixes the state machine gives what it creates; each name ends with 12 hex digits.

    The cleanup recognises the kit's jobs and models by these prefixes (and by the key), so they are defined once.
    """

    job: str
    model: str
    deployment: str

    @classmethod
    def of(cls, config: KitConfig) -> PipelineNames:
        prefix = config.resource_name("ft")
        # Jobs and deployments end with the execution's hash (32 hex digits; the teardown finds them by it), models
        # with 12 random hex digits. The short infixes keep 63 characters enough for the longest name prefix.
        return cls(job=f"{prefix}-j-", model=f"{prefix}-model-", deployment=f"{prefix}-d-")


def machine_name(config: KitConfig) -> str:
    return config.resource_name("finetune")


class FineTuneData(Construct):
    """The customer managed key, the training-data bucket (versioned) and the job-output bucket."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig) -> None:
        super().__init__(scope, construct_id)
        # Sandbox: deleted on destroy, after CustomModelCleanup has deleted the custom models it encrypts, with
        # KMS's shortest waiting period (7-30 days). Prod: retained with the models, removed by hand.
        self.key = kms.Key(
            self,
            "Key",
            description="Level 3: training data, job output and custom models",
            enable_key_rotation=True,
            removal_policy=removal_policy(config),
            pending_window=Duration.days(7),
        )
        self.data = SecureBucket(
            self, "Data", config=config, versioned=True, encryption_key=self.key, event_bridge_enabled=True
        ).bucket
        self.output = SecureBucket(self, "Output", config=config, versioned=False, encryption_key=self.key).bucket


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
                    "ArnLike": {"aws:SourceArn": _bedrock_arn(stack, "model-customization-job/*")},
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
        suppress(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Bedrock reads any dataset under the datasets prefix and writes job output under its own prefix; "
            "object keys are chosen per job.",
            applies_to=[
                f"Resource::<{_logical(data.data)}.Arn>/{DATASETS_PREFIX}*",
                f"Resource::<{_logical(data.output)}.Arn>/{OUTPUT_PREFIX}*",
            ],
        )


def _retry_throttling(task: tasks.CallAwsService) -> None:
    """Bedrock control-plane calls back off and retry when throttled."""
    task.add_retry(
        errors=["Bedrock.ThrottlingException", "Bedrock.InternalServerException"],
        interval=THROTTLE_RETRY_INTERVAL,
        max_attempts=THROTTLE_RETRY_ATTEMPTS,
        backoff_rate=2.0,
    )


def _retry_budget(interval: Duration, attempts: int, backoff: float = 2.0) -> float:
    """Seconds a retrier may wait in total before its last attempt."""
    return sum(interval.to_seconds() * backoff**n for n in range(attempts))


def execution_bounds(ft: FineTuneSettings) -> Duration:
    """The longest the pipeline's bounded steps take: validation, waiting for a job slot, the job's polls, the
    deployment's polls, the kept throughput and its teardown's retries. The execution timeout adds
    EXECUTION_HEADROOM for the retries of transient errors on the way."""
    polls = max(1, ft.max_job_hours * 60 // ft.poll_minutes)
    seconds = VALIDATOR_TIMEOUT.to_seconds() + QUOTA_RETRY_INTERVAL.to_seconds() * QUOTA_RETRY_ATTEMPTS
    seconds += polls * ft.poll_minutes * 60
    if ft.deploy != "none":
        seconds += DEPLOY_POLLS * DEPLOY_POLL_INTERVAL.to_seconds()
        seconds += _retry_budget(DELETE_RETRY_INTERVAL, DELETE_RETRY_ATTEMPTS)
    if ft.deploy == "provisioned":
        seconds += ft.provisioned_hours * 3600
    return Duration.seconds(int(seconds))


def execution_id(execution_arn_path: str) -> str:
    """The intrinsic that names what one execution creates: a hash of its execution ARN (32 hex digits).

    The pipeline applies it to ``$$.Execution.Id``; the teardown to the ended execution's ARN from the Step
    Functions status event, so it finds what that execution created by name.
    """
    return f"States.Hash({execution_arn_path}, '{NAME_HASH}')"


def notification(
    scope: Construct,
    state_id: str,
    topic: sns.ITopic,
    message: dict[str, Any],
    then: sfn.IChainable,
) -> tasks.SnsPublish:
    """Publish ``message`` to the topic, retrying transient errors; then go on to ``then`` whatever happens.

    A notification never changes the outcome: when the topic stays unreachable the run still goes on to its
    next step (a teardown, the Fail state), so no failed notification can skip a deletion.
    """
    publish = tasks.SnsPublish(
        scope,
        state_id,
        topic=topic,
        subject="genai-spectrum-kit fine-tuning",
        message=sfn.TaskInput.from_object(message),
        result_path=sfn.JsonPath.DISCARD,
    )
    publish.add_retry(
        errors=["States.ALL"],
        interval=NOTIFY_RETRY_INTERVAL,
        max_attempts=NOTIFY_RETRY_ATTEMPTS,
        backoff_rate=2.0,
    )
    publish.add_catch(then, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
    publish.next(then)
    return publish


def _logical(construct: Any) -> str:
    return Stack.of(construct).get_logical_id(construct.node.default_child)


class FineTunePipeline(Construct):
    """The state machine that validates, runs, waits for, optionally deploys and reports a customization job."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        data: FineTuneData,
        service_role: iam.Role,
        validator: PythonFunction,
        topic: sns.Topic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        ft = config.finetune
        names = PipelineNames.of(config)
        polls = max(1, ft.max_job_hours * 60 // ft.poll_minutes)

        self.topic = topic
        notify = self._notify

        def fail(state_id: str, error: str, cause: str) -> sfn.Fail:
            return sfn.Fail(self, state_id, error=error, cause=cause)

        # 1. The request: from the uploaded jobs/*.json file, or the execution input itself. Every JSONPath
        # below selects only what a Choice has seen present first: a path that selects nothing is a
        # States.Runtime error, which no Catch catches and which would end the run unreported.
        read_request = tasks.CallAwsService(
            self,
            "ReadJobRequest",
            service="s3",
            action="getObject",
            parameters={
                "Bucket": sfn.JsonPath.string_at("$.detail.bucket.name"),
                "Key": sfn.JsonPath.string_at("$.detail.object.key"),
            },
            iam_resources=[data.data.arn_for_objects(f"{JOBS_PREFIX}*")],
            iam_action="s3:GetObject",
            result_selector={"request": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.Body"))},
        )
        unreadable = notify(
            "NotifyUnreadableRequest",
            "rejected: the job file is not readable JSON",
            "$.error",
            then=fail("UnreadableRequest", "InvalidJobRequest", "The uploaded job request is not valid JSON"),
            with_request=False,
        )
        read_request.add_catch(unreadable, errors=["States.ALL"], result_path="$.error")
        wrap_request = sfn.Pass(self, "UseInputAsRequest", parameters={"request": sfn.JsonPath.entire_payload})
        defaults = {
            "baseModelId": ft.base_model_id,
            "customizationType": ft.customization_type,
            "hyperparameters": dict(ft.hyperparameters),
            # CDK drops None from Parameters; an intrinsic keeps the key present, as null.
            "validationKey.$": "States.StringToJson('null')",
        }
        # Static defaults sit in Parameters; intrinsic string literals would need every brace escaped.
        prepare = sfn.Pass(
            self,
            "ApplyDefaults",
            parameters={"defaults": defaults, "request": sfn.JsonPath.object_at("$.request")},
        )
        merge = sfn.Pass(
            self,
            "MergeRequest",
            parameters={
                "job": sfn.JsonPath.json_merge(
                    sfn.JsonPath.object_at("$.defaults"), sfn.JsonPath.object_at("$.request")
                ),
                # The last 12 hex digits of a UUID (the model and the report).
                "id.$": "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 4)",
                # Derived from the execution ARN, so the teardown can find what it created after a timeout or
                # an abort (the job and the deployment).
                "run.$": execution_id("$$.Execution.Id"),
                "poll": {"count": 0},
            },
        )
        name_job = sfn.Pass(
            self,
            "NameJob",
            parameters={
                "job": sfn.JsonPath.object_at("$.job"),
                "poll": sfn.JsonPath.object_at("$.poll"),
                "names": {
                    "job": sfn.JsonPath.format(f"{names.job}{{}}", sfn.JsonPath.string_at("$.run")),
                    "model": sfn.JsonPath.format(f"{names.model}{{}}", sfn.JsonPath.string_at("$.id")),
                    "deployment": sfn.JsonPath.format(f"{names.deployment}{{}}", sfn.JsonPath.string_at("$.run")),
                    "report": sfn.JsonPath.format(f"{REPORTS_PREFIX}{{}}.json", sfn.JsonPath.string_at("$.id")),
                },
            },
        )

        # 2. Validate the data, the hyperparameters and the customization type before any job is created.
        validate = tasks.LambdaInvoke(
            self,
            "ValidateData",
            lambda_function=validator.function,
            payload=sfn.TaskInput.from_object(
                {
                    "bucket": data.data.bucket_name,
                    "trainingKey": sfn.JsonPath.string_at("$.job.trainingKey"),
                    "validationKey": sfn.JsonPath.string_at("$.job.validationKey"),
                    "baseModelId": sfn.JsonPath.string_at("$.job.baseModelId"),
                    "customizationType": sfn.JsonPath.string_at("$.job.customizationType"),
                    "hyperparameters": sfn.JsonPath.object_at("$.job.hyperparameters"),
                    "reportKey": sfn.JsonPath.string_at("$.names.report"),
                }
            ),
            payload_response_only=True,
            result_path="$.validation",
            retry_on_service_exceptions=True,
        )
        bad_request = notify(
            "NotifyBadRequest",
            "rejected: the job request is incomplete",
            "$.error",
            then=fail("BadRequest", "InvalidJobRequest", "The job request or its dataset keys are invalid"),
        )
        validate.add_catch(bad_request, errors=VALIDATOR_ERRORS, result_path="$.error")
        invalid_data = notify(
            "NotifyInvalidData",
            "rejected: the training data is invalid",
            "$.validation",
            then=fail("InvalidData", "InvalidTrainingData", "Validation failed; see the report in S3"),
        )

        # 3. Start the job with the kit's own role; wait for a free slot when the account's 2 jobs are busy.
        job_arn = _bedrock_arn(stack, "model-customization-job/*")

        def create_job(state_id: str, with_validation: bool) -> tasks.CallAwsService:
            parameters: dict[str, Any] = {
                "JobName": sfn.JsonPath.string_at("$.names.job"),
                "CustomModelName": sfn.JsonPath.string_at("$.names.model"),
                "RoleArn": service_role.role_arn,
                "BaseModelIdentifier": sfn.JsonPath.string_at("$.job.baseModelId"),
                "CustomizationType": sfn.JsonPath.string_at("$.job.customizationType"),
                "HyperParameters": sfn.JsonPath.object_at("$.job.hyperparameters"),
                "TrainingDataConfig": {
                    "S3Uri": sfn.JsonPath.format(
                        f"s3://{data.data.bucket_name}/{{}}", sfn.JsonPath.string_at("$.job.trainingKey")
                    )
                },
                "OutputDataConfig": {
                    "S3Uri": sfn.JsonPath.format(
                        f"s3://{data.output.bucket_name}/{OUTPUT_PREFIX}{{}}/", sfn.JsonPath.string_at("$.names.job")
                    )
                },
                "CustomModelKmsKeyId": data.key.key_arn,
                "ClientRequestToken": sfn.JsonPath.string_at("$.names.job"),
                # Bedrock authorizes tags passed on create with bedrock:TagResource as well (FineTuneStack).
                "JobTags": [{"Key": JOB_TAG_KEY, "Value": sfn.JsonPath.string_at("$$.Execution.Name")}],
            }
            if with_validation:
                parameters["ValidationDataConfig"] = {
                    "Validators": [
                        {
                            "S3Uri": sfn.JsonPath.format(
                                f"s3://{data.data.bucket_name}/{{}}", sfn.JsonPath.string_at("$.job.validationKey")
                            )
                        }
                    ]
                }
            task = tasks.CallAwsService(
                self,
                state_id,
                service="bedrock",
                action="createModelCustomizationJob",
                parameters=parameters,
                iam_action="bedrock:CreateModelCustomizationJob",
                # Resource types of CreateModelCustomizationJob: custom-model and foundation-model
                # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html
                iam_resources=[
                    _bedrock_arn(stack, "custom-model/*"),
                    f"arn:{stack.partition}:bedrock:{stack.region}::foundation-model/*",
                ],
                result_selector={"jobArn": sfn.JsonPath.string_at("$.JobArn")},
                result_path="$.created",
            )
            task.add_retry(
                errors=["Bedrock.ServiceQuotaExceededException"],
                interval=QUOTA_RETRY_INTERVAL,
                max_attempts=QUOTA_RETRY_ATTEMPTS,
                backoff_rate=1.0,
            )
            _retry_throttling(task)
            return task

        pipeline_error = notify(
            "NotifyPipelineError",
            "failed: a pipeline step failed",
            "$.error",
            then=fail("PipelineError", "PipelineStepFailed", "See the notification for the step's error"),
        )
        validate.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")

        start_failed = notify(
            "NotifyStartFailed",
            "failed: the job could not be started",
            "$.error",
            then=fail("StartFailed", "CustomizationJobNotStarted", "CreateModelCustomizationJob failed"),
        )
        create_plain = create_job("CreateJob", with_validation=False)
        create_validated = create_job("CreateJobWithValidationSet", with_validation=True)
        for task in (create_plain, create_validated):
            task.add_catch(start_failed, errors=["States.ALL"], result_path="$.error")

        # 4. Wait for the outcome, bounded by ft_max_job_hours. Step Functions offers CreateModelCustomizationJob.sync
        # (https://docs.aws.amazon.com/step-functions/latest/dg/connect-bedrock.html), but its page documents neither
        # the IAM the .sync pattern needs nor that a timed-out or stopped task stops the job; this loop uses only
        # documented calls, stops the job itself when the bound is reached, and notifies on every status it sees.
        wait = sfn.Wait(self, "WaitForJob", time=sfn.WaitTime.duration(Duration.minutes(ft.poll_minutes)))
        get_job = tasks.CallAwsService(
            self,
            "GetJob",
            service="bedrock",
            action="getModelCustomizationJob",
            parameters={"JobIdentifier": sfn.JsonPath.string_at("$.created.jobArn")},
            iam_action="bedrock:GetModelCustomizationJob",
            iam_resources=[job_arn],
            result_path="$.status",
        )
        _retry_throttling(get_job)
        get_job.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")
        count = sfn.Pass(
            self,
            "CountPoll",
            parameters={"count": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.poll.count"), 1)},
            result_path="$.poll",
        )
        stop_job = tasks.CallAwsService(
            self,
            "StopJob",
            service="bedrock",
            action="stopModelCustomizationJob",
            parameters={"JobIdentifier": sfn.JsonPath.string_at("$.created.jobArn")},
            iam_action="bedrock:StopModelCustomizationJob",
            iam_resources=[job_arn],
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry_throttling(stop_job)
        stop_job.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")
        stop_job.next(
            notify(
                "NotifyTimeout",
                f"stopped: the job ran longer than {ft.max_job_hours} h",
                "$.created",
                then=fail("TimedOut", "CustomizationJobTimedOut", f"Exceeded {ft.max_job_hours} hours"),
            )
        )
        job_failed = notify(
            "NotifyJobFailed",
            "failed: the customization job did not complete",
            "$.status",
            then=fail("JobFailed", "CustomizationJobFailed", "The job failed or was stopped; see the message"),
        )

        done = sfn.Succeed(self, "Done")
        if ft.deploy == "none":
            after_success: sfn.IChainable = notify(
                "NotifySucceeded", "succeeded: the custom model is ready", "$.status", then=done
            )
        else:
            after_success = self._deployment(config, done)

        no_training_key = notify(
            "NotifyMissingTrainingKey",
            "rejected: the job request has no trainingKey",
            "$.request",
            then=fail("MissingTrainingKey", "InvalidJobRequest", "The job request needs a trainingKey"),
            with_request=False,
        )
        check_request = (
            sfn.Choice(self, "HasTrainingKey?")
            .when(sfn.Condition.is_present("$.request.trainingKey"), prepare)
            .otherwise(no_training_key)
        )
        # A hand-started input that only looks like an S3 event (no bucket name) is treated as a request, and
        # rejected there for its missing trainingKey: notified, not a States.Runtime error in ReadJobRequest.
        from_file = sfn.Condition.and_(
            sfn.Condition.is_present("$.detail.bucket.name"), sfn.Condition.is_present("$.detail.object.key")
        )
        definition = (
            sfn.Choice(self, "RequestFromFile?")
            .when(from_file, read_request.next(check_request))
            .otherwise(wrap_request.next(check_request))
        )
        prepare.next(merge).next(name_job).next(validate).next(
            sfn.Choice(self, "DataValid?")
            .when(
                sfn.Condition.boolean_equals("$.validation.valid", True),
                sfn.Choice(self, "HasValidationSet?")
                .when(sfn.Condition.is_null("$.job.validationKey"), create_plain)
                .otherwise(create_validated),
            )
            .otherwise(invalid_data)
        )
        create_plain.next(wait)
        create_validated.next(wait)
        wait.next(get_job).next(
            sfn.Choice(self, "JobStatus?")
            .when(sfn.Condition.string_equals("$.status.Status", "Completed"), after_success)
            .when(
                sfn.Condition.or_(
                    sfn.Condition.string_equals("$.status.Status", "Failed"),
                    sfn.Condition.string_equals("$.status.Status", "Stopped"),
                ),
                job_failed,
            )
            .otherwise(count)
        )
        count.next(
            sfn.Choice(self, "WithinTimeLimit?")
            .when(sfn.Condition.number_greater_than_equals("$.poll.count", polls), stop_job)
            .otherwise(wait)
        )

        self.logs = log_group(self, "Logs", config)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=machine_name(config),
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            # The bounds plus room for retries; an execution that still times out (or is aborted) is cleaned up
            # by PipelineTeardown.
            timeout=execution_bounds(ft).plus(EXECUTION_HEADROOM),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        self.polls = polls

    def _notify(
        self,
        state_id: str,
        outcome: str,
        detail_path: str,
        *,
        then: sfn.IChainable,
        with_request: bool = True,
    ) -> tasks.SnsPublish:
        """Publish the outcome, the request and the relevant detail to the topic, then go on to ``then``."""
        message: dict[str, Any] = {
            "outcome": outcome,
            "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
            "detail": sfn.JsonPath.object_at(detail_path),
        }
        if with_request:
            message["request"] = sfn.JsonPath.object_at("$.job")
        return notification(self, state_id, self.topic, message, then)

    def _poll(
        self,
        name: str,
        get: tasks.CallAwsService,
        ready: str,
        failed: str,
        on_ready: sfn.IChainable,
        on_failed: sfn.IChainable,
    ) -> sfn.IChainable:
        """Wait, get the status, and loop until it reads ``ready`` or ``failed``, at most DEPLOY_POLLS times."""
        _retry_throttling(get)
        get.add_catch(on_failed, errors=["States.ALL"], result_path="$.error")
        start = sfn.Pass(
            self, f"Start{name}Polling", result=sfn.Result.from_object({"count": 0}), result_path="$.deployPoll"
        )
        wait = sfn.Wait(self, f"WaitFor{name}", time=sfn.WaitTime.duration(DEPLOY_POLL_INTERVAL))
        count = sfn.Pass(
            self,
            f"Count{name}Poll",
            parameters={"count": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.deployPoll.count"), 1)},
            result_path="$.deployPoll",
        )
        count.next(
            sfn.Choice(self, f"{name}WithinTimeLimit?")
            .when(sfn.Condition.number_greater_than_equals("$.deployPoll.count", DEPLOY_POLLS), on_failed)
            .otherwise(wait)
        )
        return (
            start.next(wait)
            .next(get)
            .next(
                sfn.Choice(self, f"{name}Status?")
                .when(sfn.Condition.string_equals("$.deploymentStatus.Status", ready), on_ready)
                .when(sfn.Condition.string_equals("$.deploymentStatus.Status", failed), on_failed)
                .otherwise(count)
            )
        )

    def _delete(self, state_id: str, action: str, identifier: str, resource: str) -> tasks.CallAwsService:
        """Delete what this execution deployed (``$.deployment.arn``), retrying for about an hour."""
        delete = tasks.CallAwsService(
            self,
            state_id,
            service="bedrock",
            action=action,
            parameters={identifier: sfn.JsonPath.string_at("$.deployment.arn")},
            iam_action=f"bedrock:{action[:1].upper()}{action[1:]}",
            iam_resources=[_bedrock_arn(Stack.of(self), f"{resource}/*")],
            result_path=sfn.JsonPath.DISCARD,
        )
        delete.add_retry(
            errors=["States.ALL"], interval=DELETE_RETRY_INTERVAL, max_attempts=DELETE_RETRY_ATTEMPTS, backoff_rate=2.0
        )
        return delete

    def _delete_throughput(self, state_id: str) -> tasks.CallAwsService:
        return self._delete(state_id, "deleteProvisionedModelThroughput", "ProvisionedModelId", "provisioned-model")

    def _delete_deployment(self, state_id: str) -> tasks.CallAwsService:
        return self._delete(
            state_id, "deleteCustomModelDeployment", "CustomModelDeploymentIdentifier", "custom-model-deployment"
        )

    def _deployment(self, config: KitConfig, done: sfn.Succeed) -> sfn.IChainable:
        """After a completed job: on-demand deployment, or no-commitment Provisioned Throughput torn down later.

        From the create call on, every path deletes what was created unless the run ends in Done with an
        on-demand deployment, which bills only for what it serves
        (https://docs.aws.amazon.com/bedrock/latest/userguide/deploy-custom-model-on-demand.html). A deletion
        that keeps failing is announced as ACTION NEEDED. Timeouts and aborts: PipelineTeardown.
        """
        stack = Stack.of(self)
        ft = config.finetune
        model_arn = sfn.JsonPath.string_at("$.status.OutputModelArn")
        deploy_failed = self._notify(
            "NotifyDeployFailed",
            "failed: the custom model was not deployed",
            "$.error",
            then=sfn.Fail(self, "DeployFailed", error="DeploymentFailed", cause="See the notification"),
        )
        what = "Provisioned Throughput" if ft.deploy == "provisioned" else "the on-demand deployment"
        # A deployment that cannot be deleted may keep billing: say so loudly.
        teardown_failed = self._notify(
            "NotifyTeardownFailed",
            f"ACTION NEEDED: {what} could not be deleted; delete it by hand",
            "$.deployment",
            then=sfn.Fail(self, "TeardownFailed", error="DeploymentNotDeleted"),
        )
        if ft.deploy == "on-demand":
            create = tasks.CallAwsService(
                self,
                "CreateOnDemandDeployment",
                service="bedrock",
                action="createCustomModelDeployment",
                parameters={
                    "ModelDeploymentName": sfn.JsonPath.string_at("$.names.deployment"),
                    "ModelArn": model_arn,
                    "ClientRequestToken": sfn.JsonPath.string_at("$.names.deployment"),
                },
                iam_action="bedrock:CreateCustomModelDeployment",
                iam_resources=[_bedrock_arn(stack, "custom-model/*"), _bedrock_arn(stack, "custom-model-deployment/*")],
                result_selector={"arn": sfn.JsonPath.string_at("$.CustomModelDeploymentArn")},
                result_path="$.deployment",
            )
            _retry_throttling(create)
            create.add_catch(deploy_failed, errors=["States.ALL"], result_path="$.error")
            get = tasks.CallAwsService(
                self,
                "GetOnDemandDeployment",
                service="bedrock",
                action="getCustomModelDeployment",
                parameters={"CustomModelDeploymentIdentifier": sfn.JsonPath.string_at("$.deployment.arn")},
                iam_action="bedrock:GetCustomModelDeployment",
                iam_resources=[_bedrock_arn(stack, "custom-model-deployment/*")],
                result_path="$.deploymentStatus",
            )
            deployed = self._notify(
                "NotifyDeployed", "deployed: on-demand custom model deployment", "$.deployment", then=done
            )
            # A deployment that did not become active is deleted, so nothing is left behind half-made.
            cleanup = self._delete_deployment("DeleteFailedDeployment")
            cleanup.add_catch(teardown_failed, errors=["States.ALL"], result_path="$.error")
            cleanup.next(
                self._notify(
                    "NotifyDeploymentFailed",
                    "failed: the on-demand deployment did not become active (deleted)",
                    "$.deployment",
                    then=sfn.Fail(self, "DeploymentNotActive", error="DeploymentFailed"),
                )
            )
            polling = self._poll("Deployment", get, "Active", "Failed", deployed, cleanup)
            succeeded = self._notify(
                "NotifySucceeded", "succeeded: the custom model is ready", "$.status", then=polling
            )
            create.next(succeeded)
            return create

        create_pt = tasks.CallAwsService(
            self,
            "CreateProvisionedThroughput",
            service="bedrock",
            action="createProvisionedModelThroughput",
            parameters={
                "ProvisionedModelName": sfn.JsonPath.string_at("$.names.deployment"),
                "ModelId": model_arn,
                "ModelUnits": 1,  # no CommitmentDuration: hourly, no commitment
                "ClientRequestToken": sfn.JsonPath.string_at("$.names.deployment"),
            },
            iam_action="bedrock:CreateProvisionedModelThroughput",
            iam_resources=[_bedrock_arn(stack, "custom-model/*"), _bedrock_arn(stack, "provisioned-model/*")],
            result_selector={"arn": sfn.JsonPath.string_at("$.ProvisionedModelArn")},
            result_path="$.deployment",
        )
        _retry_throttling(create_pt)
        create_pt.add_catch(deploy_failed, errors=["States.ALL"], result_path="$.error")
        keep = sfn.Wait(
            self, "KeepProvisionedThroughput", time=sfn.WaitTime.duration(Duration.hours(ft.provisioned_hours))
        )
        delete_pt = self._delete_throughput("DeleteProvisionedThroughput")
        delete_pt.add_catch(teardown_failed, errors=["States.ALL"], result_path="$.error")
        torn_down = self._notify(
            "NotifyTornDown", "torn down: Provisioned Throughput deleted", "$.deployment", then=done
        )
        delete_pt.next(torn_down)
        keep.next(delete_pt)
        deployed = self._notify(
            "NotifyDeployed",
            f"deployed: Provisioned Throughput (1 model unit, deleted after {ft.provisioned_hours} h)",
            "$.deployment",
            then=keep,
        )
        get = tasks.CallAwsService(
            self,
            "GetProvisionedThroughput",
            service="bedrock",
            action="getProvisionedModelThroughput",
            parameters={"ProvisionedModelId": sfn.JsonPath.string_at("$.deployment.arn")},
            iam_action="bedrock:GetProvisionedModelThroughput",
            iam_resources=[_bedrock_arn(stack, "provisioned-model/*")],
            result_path="$.deploymentStatus",
        )
        # A throughput that failed to come up is still deleted, so nothing keeps billing.
        cleanup = self._delete_throughput("DeleteFailedProvisionedThroughput")
        cleanup.add_catch(teardown_failed, errors=["States.ALL"], result_path="$.error")
        cleanup.next(
            self._notify(
                "NotifyProvisioningFailed",
                "failed: Provisioned Throughput did not come up (deleted)",
                "$.deployment",
                then=sfn.Fail(self, "ProvisioningFailed", error="ProvisioningFailed"),
            )
        )
        polling = self._poll("Throughput", get, "InService", "Failed", deployed, cleanup)
        create_pt.next(
            self._notify("NotifySucceeded", "succeeded: the custom model is ready", "$.status", then=polling)
        )
        return create_pt


class PipelineTeardown(Construct):
    """Cleans up after a pipeline execution that ended FAILED, TIMED_OUT or ABORTED.

    Step Functions emits a "Step Functions Execution Status Change" event when an execution ends
    (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html). A rule for the pipeline's
    executions starts this small state machine, which names what the ended execution created from its ARN (the
    same intrinsic the pipeline uses), stops its customization job if it still runs, deletes its Provisioned
    Throughput or on-demand deployment if one exists, and reports on the topic. A timeout or an abort thus never
    leaves a deployment billing, even though the pipeline's own teardown never ran.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        pipeline: sfn.StateMachine,
        topic: sns.Topic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        ft = config.finetune
        names = PipelineNames.of(config)

        done = sfn.Succeed(self, "CleanedUp")
        failed = sfn.Fail(self, "CleanupFailed", error="DeploymentNotDeleted", cause="See the notification")
        report_message = {
            "outcome": "cleaned up: a pipeline execution ended without finishing its own path; its job was stopped "
            "and its deployment deleted, where it had them",
            "execution": sfn.JsonPath.string_at("$.execution"),
            "status": sfn.JsonPath.string_at("$.status"),
            "detail": sfn.JsonPath.object_at("$.names"),
        }
        report = notification(self, "NotifyCleanedUp", topic, report_message, done)
        # A run that failed on a path that notified it already (invalid data, a failed job) and had nothing left
        # running says nothing more; timeouts, aborts and anything stopped or deleted here are reported.
        worth_reporting = (
            sfn.Choice(self, "AnythingToReport?")
            .when(
                sfn.Condition.or_(
                    sfn.Condition.boolean_equals("$.acted", True),
                    sfn.Condition.not_(sfn.Condition.string_equals("$.status", "FAILED")),
                ),
                report,
            )
            .otherwise(sfn.Succeed(self, "NothingLeft"))
        )
        name = sfn.Pass(
            self,
            "NameWhatItCreated",
            parameters={
                "execution": sfn.JsonPath.string_at("$.detail.executionArn"),
                "status": sfn.JsonPath.string_at("$.detail.status"),
                "id.$": execution_id("$.detail.executionArn"),
                "acted": False,
            },
        )
        names_pass = sfn.Pass(
            self,
            "Names",
            parameters={
                "execution": sfn.JsonPath.string_at("$.execution"),
                "status": sfn.JsonPath.string_at("$.status"),
                "acted": sfn.JsonPath.object_at("$.acted"),
                "names": {
                    "job": sfn.JsonPath.format(f"{names.job}{{}}", sfn.JsonPath.string_at("$.id")),
                    "deployment": sfn.JsonPath.format(f"{names.deployment}{{}}", sfn.JsonPath.string_at("$.id")),
                },
            },
        )
        # A create call still in flight when the execution ended lands meanwhile.
        settle = sfn.Wait(self, "LetCallsInFlightLand", time=sfn.WaitTime.duration(TEARDOWN_SETTLE))
        stop_job = tasks.CallAwsService(
            self,
            "StopItsJob",
            service="bedrock",
            action="stopModelCustomizationJob",
            parameters={"JobIdentifier": sfn.JsonPath.string_at("$.names.job")},
            iam_action="bedrock:StopModelCustomizationJob",
            iam_resources=[_bedrock_arn(stack, "model-customization-job/*")],
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry_throttling(stop_job)
        marked = sfn.Pass(self, "JobStopped", result=sfn.Result.from_boolean(True), result_path="$.acted")
        # No job, or one that already ended: nothing to stop (the error is kept in the output).
        if ft.deploy == "none":
            after_stop: sfn.IChainable = worth_reporting
        else:
            if ft.deploy == "provisioned":
                action, identifier, resource = (
                    "deleteProvisionedModelThroughput",
                    "ProvisionedModelId",
                    "provisioned-model",
                )
            else:
                action, identifier, resource = (
                    "deleteCustomModelDeployment",
                    "CustomModelDeploymentIdentifier",
                    "custom-model-deployment",
                )
            delete = tasks.CallAwsService(
                self,
                "DeleteItsDeployment",
                service="bedrock",
                action=action,
                parameters={identifier: sfn.JsonPath.string_at("$.names.deployment")},  # a name or an ARN
                iam_action=f"bedrock:{action[:1].upper()}{action[1:]}",
                iam_resources=[_bedrock_arn(stack, f"{resource}/*")],
                result_path=sfn.JsonPath.DISCARD,
            )
            # Not found: the execution created none (or deleted it itself). Anything else is retried for an hour.
            delete.add_retry(errors=["Bedrock.ResourceNotFoundException"], max_attempts=0)
            delete.add_retry(
                errors=["States.ALL"],
                interval=DELETE_RETRY_INTERVAL,
                max_attempts=DELETE_RETRY_ATTEMPTS,
                backoff_rate=2.0,
            )
            delete.add_catch(worth_reporting, errors=["Bedrock.ResourceNotFoundException"], result_path="$.notFound")
            alarm = {
                **report_message,
                "outcome": "ACTION NEEDED: the deployment of an ended pipeline execution could not be deleted and "
                "may still be billing; delete it by hand",
                "error": sfn.JsonPath.object_at("$.error"),
            }
            not_deleted = notification(self, "NotifyCleanupFailed", topic, alarm, failed)
            delete.add_catch(not_deleted, errors=["States.ALL"], result_path="$.error")
            delete.next(sfn.Pass(self, "Deleted", result=sfn.Result.from_boolean(True), result_path="$.acted")).next(
                report
            )
            after_stop = delete
        stop_job.add_catch(after_stop, errors=["States.ALL"], result_path="$.jobNotStopped")
        stop_job.next(marked).next(after_stop)
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
                    name.next(names_pass).next(settle).next(stop_job),
                )
                .otherwise(sfn.Succeed(self, "NotAnExecutionEvent")),
            )
            .otherwise(sfn.Succeed(self, "NotAStatusEvent"))
        )
        self.logs = log_group(self, "Logs", config)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=config.resource_name("finetune-teardown"),
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=TEARDOWN_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        self.rule = events.Rule(
            self,
            "PipelineEnded",
            description="Level 3: a fine-tuning execution that failed, timed out or was aborted is cleaned up",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": list(ENDED_ABNORMALLY), "stateMachineArn": [pipeline.state_machine_arn]},
            ),
            targets=[targets.SfnStateMachine(self.state_machine)],
        )


class CustomModelCleanup(Construct):
    """Sandbox only: before CloudFormation deletes the key, delete the custom models encrypted with it.

    Custom models, on-demand deployments and Provisioned Throughput are created by the state machine, outside
    CloudFormation. On stack deletion the function (``lambdas/level3_finetune/finetune_cleanup``) stops the pipeline's
    executions and the kit's running jobs, deletes the deployments and throughputs serving the kit's models,
    then the models (the pipeline's names AND this key, nothing else). The resource depends on the key, the
    state machine and its own role, so CloudFormation deletes it, and waits for its answer, before any of them.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        key: kms.Key,
        machine: sfn.StateMachine,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        names = PipelineNames.of(config)
        self.function = PythonFunction(
            self,
            "Function",
            config=config,
            handler="finetune_cleanup.handler.handler",
            description="Level 3 custom resource: on stack deletion, delete the kit's custom models before the key",
            service_name="finetune-cleanup",
            timeout=CLEANUP_TIMEOUT,
            memory_size=256,
        )
        role = self.function.role
        # Service Authorization Reference, Amazon Bedrock (resource types per action):
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_bedrock.html
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FindKitResources",  # List actions have no resource type: '*' only
                actions=[
                    "bedrock:ListModelCustomizationJobs",
                    "bedrock:ListCustomModels",
                    "bedrock:ListCustomModelDeployments",
                    "bedrock:ListProvisionedModelThroughputs",
                ],
                resources=["*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StopKitJobs",
                actions=["bedrock:GetModelCustomizationJob", "bedrock:StopModelCustomizationJob"],
                resources=[_bedrock_arn(stack, "model-customization-job/*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeleteKitModels",
                actions=["bedrock:GetCustomModel", "bedrock:DeleteCustomModel"],
                resources=[_bedrock_arn(stack, "custom-model/*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeleteServing",
                actions=["bedrock:DeleteCustomModelDeployment", "bedrock:DeleteProvisionedModelThroughput"],
                resources=[
                    _bedrock_arn(stack, "custom-model-deployment/*"),
                    _bedrock_arn(stack, "provisioned-model/*"),
                ],
            )
        )
        executions = f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{machine_name(config)}:*"
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StopPipeline", actions=["states:ListExecutions"], resources=[machine.state_machine_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(sid="StopPipelineExecutions", actions=["states:StopExecution"], resources=[executions])
        )
        # Acts only when the stack itself is being deleted: it reads its own stack's status.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadOwnStack", actions=["cloudformation:DescribeStacks"], resources=[stack.stack_id]
            )
        )
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Bedrock's List actions support no resource type ('*' only); the kit names its jobs, models, deployments "
            "and throughputs per execution, so they are granted by type in this account and region and the function "
            "also checks the name and the key; executions are this state machine's; X-Ray needs '*'.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:model-customization-job/*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:custom-model/*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:custom-model-deployment/*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:provisioned-model/*",
                f"Resource::arn:aws:states:{stack.region}:<AWS::AccountId>:execution:{machine_name(config)}:*",
            ],
        )
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.function.function.function_arn,
            resource_type="Custom::BedrockFineTuneCleanup",
            # CloudFormation gives up on a silent function after this, not after an hour:
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html
            service_timeout=CLEANUP_SERVICE_TIMEOUT,
            properties={
                "KeyArn": key.key_arn,
                "ModelNamePrefix": names.model,
                "JobNamePrefix": names.job,
                "StateMachineArn": machine.state_machine_arn,
            },
        )
        # Deleted before the key (so the key is scheduled for deletion only after the models are gone), before
        # the state machine (its executions are stopped first) and before the function's own permissions.
        for dependency in (key, machine, role):
            self.resource.node.add_dependency(dependency)


@jsii.implements(events.IRuleTarget)
class _TopicTarget:
    """An SNS topic as a rule target, without the unconditioned topic-policy grant of ``targets.SnsTopic``: the
    stack grants events.amazonaws.com publish on the topic and use of its key for the rule's ARN only."""

    def __init__(self, topic: sns.ITopic, message: events.RuleTargetInput) -> None:
        self.topic, self.message = topic, message

    def bind(self, rule: IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self.topic.topic_arn, input=self.message)


class FineTuneStack(Stack):
    """``GenAiKit-3-FineTune``: data and output buckets, key, Bedrock role, validator, state machine, notifications."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope, construct_id, description="genai-spectrum-kit Level 3: fine-tuning on Amazon Bedrock", **kwargs
        )
        tag_stack(self, config, LEVEL)
        ft = config.finetune

        data = FineTuneData(self, "FineTuneData", config=config)
        service_role = CustomizationRole(self, "Customization", data=data).role

        validator = PythonFunction(
            self,
            "Validator",
            config=config,
            handler="finetune_validate.handler.handler",
            description="Level 3: validate a training dataset before a customization job starts",
            service_name="finetune-validate",
            timeout=VALIDATOR_TIMEOUT,
            memory_size=512,
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadDatasets",
                actions=["s3:GetObject"],
                resources=[data.data.arn_for_objects(f"{DATASETS_PREFIX}*")],
            )
        )
        # Without ListBucket, S3 answers a missing key with 403 instead of 404 and DatasetNotFound never fires.
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListDatasets",
                actions=["s3:ListBucket"],
                resources=[data.data.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{DATASETS_PREFIX}*"]}},
            )
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteReports",
                actions=["s3:PutObject"],
                resources=[data.data.arn_for_objects(f"{REPORTS_PREFIX}*")],
            )
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="UseKey", actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[data.key.key_arn]
            )
        )
        suppress(
            validator.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The validator reads any dataset under the datasets prefix and writes reports under the reports "
            "prefix; X-Ray actions support no resource-level permissions.",
            applies_to=[
                "Resource::*",
                f"Resource::<{_logical(data.data)}.Arn>/{DATASETS_PREFIX}*",
                f"Resource::<{_logical(data.data)}.Arn>/{REPORTS_PREFIX}*",
            ],
        )

        topic = sns.Topic(
            self, "Notifications", display_name=config.resource_name("finetune"), master_key=data.key, enforce_ssl=True
        )
        if config.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        pipeline = FineTunePipeline(
            self, "Pipeline", config=config, data=data, service_role=service_role, validator=validator, topic=topic
        )
        machine = pipeline.state_machine
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="PassCustomizationRole",
                actions=["iam:PassRole"],
                resources=[service_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}},
            )
        )
        # JobTags are authorized with bedrock:TagResource as well as the create action; only the kit's own tag key
        # (Service Authorization Reference: TagResource takes aws:TagKeys and aws:RequestTag/${TagKey}).
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="TagJobsOnCreate",
                actions=["bedrock:TagResource"],
                resources=[_bedrock_arn(self, "model-customization-job/*")],
                conditions={"ForAllValues:StringEquals": {"aws:TagKeys": [JOB_TAG_KEY]}},
            )
        )
        # The key, and nothing more of it: Decrypt reads the job request file, GenerateDataKey + Decrypt publish to
        # the encrypted topic, and the job's custom model is encrypted with it (DescribeKey, CreateGrant)
        # https://docs.aws.amazon.com/bedrock/latest/userguide/encryption-custom-job.html
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="UseKey",
                actions=["kms:DescribeKey", "kms:GenerateDataKey", "kms:Decrypt", "kms:CreateGrant"],
                resources=[data.key.key_arn],
            )
        )
        suppress(
            machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Job, custom-model, deployment and throughput names are chosen per execution, so their ARNs are "
            "granted by type within this account and region; X-Ray and CloudWatch Logs delivery need '*'.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:model-customization-job/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:custom-model/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:custom-model-deployment/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:provisioned-model/*",
                f"Resource::arn:aws:bedrock:{self.region}::foundation-model/*",
                f"Resource::<{_logical(data.data)}.Arn>/{JOBS_PREFIX}*",
                f"Resource::<{_logical(validator.function)}.Arn>:*",  # the validator's versions and aliases
            ],
        )

        # Timeout, abort, or a failure off the pipeline's own paths: the teardown deletes what the run created.
        teardown = PipelineTeardown(self, "Teardown", config=config, pipeline=machine, topic=topic)
        teardown.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="PublishToEncryptedTopic",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[data.key.key_arn],
            )
        )
        suppress(
            teardown.state_machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The ended execution's job and deployment are named per execution, so their ARNs are granted by type "
            "within this account and region; X-Ray and CloudWatch Logs delivery need '*'.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:model-customization-job/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:custom-model-deployment/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:provisioned-model/*",
            ],
        )

        # Destroy: the sandbox deletes the kit's custom models before the key that encrypts them; prod retains
        # the key (RemovalPolicy.RETAIN) and the models, removed by hand as docs/level-3-finetune.md says.
        self.cleanup = (
            None
            if config.is_prod
            else CustomModelCleanup(self, "CustomModelCleanup", config=config, key=data.key, machine=machine)
        )

        # Start: a job request uploaded under jobs/ (direct StartExecution works too).
        events.Rule(
            self,
            "JobRequestUploaded",
            description="Level 3: a job request JSON under jobs/ starts the fine-tuning pipeline",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [data.data.bucket_name]},
                    "object": {"key": [{"wildcard": f"{JOBS_PREFIX}*.json"}]},
                },
            ),
            targets=[targets.SfnStateMachine(machine)],
        )
        # The documented sample event carries the status as detail.jobStatus (not detail.status):
        # https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-eventbridge-how-it-works.html
        # Named, so the key policy can name its ARN without a reference (key -> rule -> topic -> key is a cycle).
        state_change_name = config.resource_name("ft-job-state")
        state_change = events.Rule(
            self,
            "CustomizationJobStateChange",
            rule_name=state_change_name,
            description="Level 3: Bedrock customization job state changes of this kit's jobs",
            event_pattern=events.EventPattern(
                source=["aws.bedrock"],
                detail_type=["Model Customization Job State Change"],
                detail={"jobName": [{"prefix": config.resource_name("ft")}]},
            ),
        )
        state_change.add_target(
            _TopicTarget(
                topic,
                events.RuleTargetInput.from_text(
                    f"Bedrock customization job {events.EventField.from_path('$.detail.jobName')} changed "
                    f"state: {events.EventField.from_path('$.detail.jobStatus')}"
                ),
            )
        )
        # EventBridge publishes with a resource policy on the topic and the key, for this rule only
        # (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sns-permissions).
        rule_arn = f"arn:{self.partition}:events:{self.region}:{self.account}:rule/{state_change_name}"
        from_rule = {"ArnEquals": {"aws:SourceArn": rule_arn}}
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeRulePublishes",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions=from_rule,
            )
        )
        data.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeToTopic",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions=from_rule,
            )
        )

        self.data, self.service_role, self.validator, self.topic, self.pipeline = (
            data,
            service_role,
            validator,
            topic,
            pipeline,
        )
        self.teardown = teardown
        CfnOutput(self, "DataBucketName", value=data.data.bucket_name, description="datasets/, jobs/ and reports/")
        CfnOutput(self, "OutputBucketName", value=data.output.bucket_name)
        CfnOutput(self, "StateMachineArn", value=machine.state_machine_arn)
        CfnOutput(self, "TopicArn", value=topic.topic_arn)
        CfnOutput(self, "BaseModelId", value=ft.base_model_id)
        CfnOutput(self, "CustomizationRoleArn", value=service_role.role_arn)
        CfnOutput(
            self,
            "KeyArn",
            value=data.key.key_arn,
            description="Encrypts the data and the custom models; retained by a prod destroy (schedule it by hand)",
        )
