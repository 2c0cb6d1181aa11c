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
    sandbox only: cleanup custom resource ──(stack deletion, before the key)──► stop executions and jobs,
                  delete deployments, throughputs and the custom models encrypted with the key
CloudFormation has no resource for a customization job, a custom model or Provisioned Throughput, so the
stack deploys the pipeline that creates them. Those models are encrypted with the stack's key: a sandbox
destroy deletes them before the key; the prod stage retains the key and the models (docs/level-3-finetune.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import CfnOutput, CustomResource, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.config import KitConfig
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
        return cls(job=f"{prefix}-job-", model=f"{prefix}-model-", deployment=f"{prefix}-deploy-")


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
        interval=Duration.seconds(30),
        max_attempts=5,
        backoff_rate=2.0,
    )


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

        # 1. The request: from the uploaded jobs/*.json file, or the execution input itself.
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
            "NotifyUnreadableRequest", "rejected: the job file is not readable JSON", "$.error", with_request=False
        )
        unreadable.next(fail("UnreadableRequest", "InvalidJobRequest", "The uploaded job request is not valid JSON"))
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
                # The last 12 hex digits of a UUID: unique per execution and short enough for Bedrock's
                # 63-character names whatever the name prefix.
                "id.$": "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 4)",
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
                    "job": sfn.JsonPath.format(f"{names.job}{{}}", sfn.JsonPath.string_at("$.id")),
                    "model": sfn.JsonPath.format(f"{names.model}{{}}", sfn.JsonPath.string_at("$.id")),
                    "deployment": sfn.JsonPath.format(f"{names.deployment}{{}}", sfn.JsonPath.string_at("$.id")),
                    "report": sfn.JsonPath.format(f"{REPORTS_PREFIX}{{}}.json", sfn.JsonPath.string_at("$.id")),
                },
            },
        )

        # 2. Validate the data (and the hyperparameters) before any job is created.
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
                    "hyperparameters": sfn.JsonPath.object_at("$.job.hyperparameters"),
                    "reportKey": sfn.JsonPath.string_at("$.names.report"),
                }
            ),
            payload_response_only=True,
            result_path="$.validation",
            retry_on_service_exceptions=True,
        )
        bad_request = notify("NotifyBadRequest", "rejected: the job request is incomplete", "$.error")
        bad_request.next(fail("BadRequest", "InvalidJobRequest", "The job request or its dataset keys are invalid"))
        validate.add_catch(bad_request, errors=VALIDATOR_ERRORS, result_path="$.error")
        invalid_data = notify("NotifyInvalidData", "rejected: the training data is invalid", "$.validation")
        invalid_data.next(fail("InvalidData", "InvalidTrainingData", "Validation failed; see the report in S3"))

        # 3. Start the job with the kit's own role; wait for a free slot when the account's 2 jobs are busy.
        job_arn = _bedrock_arn(stack, "model-customization-job/*")
        custom_model_arn = _bedrock_arn(stack, "custom-model/*")

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
                "JobTags": [{"Key": "kit-execution", "Value": sfn.JsonPath.string_at("$$.Execution.Name")}],
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
                iam_resources=[
                    job_arn,
                    custom_model_arn,
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

        pipeline_error = notify("NotifyPipelineError", "failed: a pipeline step failed", "$.error")
        pipeline_error.next(fail("PipelineError", "PipelineStepFailed", "See the notification for the step's error"))
        self._pipeline_error = pipeline_error
        validate.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")

        start_failed = notify("NotifyStartFailed", "failed: the job could not be started", "$.error")
        start_failed.next(fail("StartFailed", "CustomizationJobNotStarted", "CreateModelCustomizationJob failed"))
        create_plain = create_job("CreateJob", with_validation=False)
        create_validated = create_job("CreateJobWithValidationSet", with_validation=True)
        for task in (create_plain, create_validated):
            task.add_catch(start_failed, errors=["States.ALL"], result_path="$.error")

        # 4. Wait for the outcome, bounded by ft_max_job_hours.
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
        timed_out = notify("NotifyTimeout", f"stopped: the job ran longer than {ft.max_job_hours} h", "$.created")
        stop_job.next(timed_out)
        timed_out.next(fail("TimedOut", "CustomizationJobTimedOut", f"Exceeded {ft.max_job_hours} hours"))
        job_failed = notify("NotifyJobFailed", "failed: the customization job did not complete", "$.status")
        job_failed.next(fail("JobFailed", "CustomizationJobFailed", "The job failed or was stopped; see the message"))

        succeeded = notify("NotifySucceeded", "succeeded: the custom model is ready", "$.status")
        done = sfn.Succeed(self, "Done")
        after_success = self._deployment(config, succeeded, done) if ft.deploy != "none" else succeeded
        if ft.deploy == "none":
            succeeded.next(done)

        no_training_key = notify(
            "NotifyMissingTrainingKey",
            "rejected: the job request has no trainingKey",
            "$.request",
            with_request=False,
        )
        no_training_key.next(fail("MissingTrainingKey", "InvalidJobRequest", "The job request needs a trainingKey"))
        check_request = (
            sfn.Choice(self, "HasTrainingKey?")
            .when(sfn.Condition.is_present("$.request.trainingKey"), prepare)
            .otherwise(no_training_key)
        )
        definition = (
            sfn.Choice(self, "RequestFromFile?")
            .when(sfn.Condition.is_present("$.detail.object.key"), read_request.next(check_request))
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
            timeout=Duration.hours(ft.max_job_hours + (ft.provisioned_hours if ft.deploy == "provisioned" else 0) + 6),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        self.polls = polls

    def _notify(self, state_id: str, outcome: str, detail_path: str, *, with_request: bool = True) -> tasks.SnsPublish:
        """Publish the outcome, the request and the relevant detail to the topic."""
        message: dict[str, Any] = {
            "outcome": outcome,
            "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
            "detail": sfn.JsonPath.object_at(detail_path),
        }
        if with_request:
            message["request"] = sfn.JsonPath.object_at("$.job")
        return tasks.SnsPublish(
            self,
            state_id,
            topic=self.topic,
            subject="genai-spectrum-kit fine-tuning",
            message=sfn.TaskInput.from_object(message),
            result_path=sfn.JsonPath.DISCARD,
        )

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

    def _delete_throughput(self, state_id: str) -> tasks.CallAwsService:
        """Delete the Provisioned Throughput this execution created, retrying for about an hour."""
        delete = tasks.CallAwsService(
            self,
            state_id,
            service="bedrock",
            action="deleteProvisionedModelThroughput",
            parameters={"ProvisionedModelId": sfn.JsonPath.string_at("$.deployment.arn")},
            iam_action="bedrock:DeleteProvisionedModelThroughput",
            iam_resources=[_bedrock_arn(Stack.of(self), "provisioned-model/*")],
            result_path=sfn.JsonPath.DISCARD,
        )
        delete.add_retry(errors=["States.ALL"], interval=Duration.minutes(1), max_attempts=6, backoff_rate=2.0)
        return delete

    def _deployment(self, config: KitConfig, succeeded: tasks.SnsPublish, done: sfn.Succeed) -> sfn.IChainable:
        """After a completed job: on-demand deployment, or no-commitment Provisioned Throughput torn down later."""
        stack = Stack.of(self)
        ft = config.finetune
        model_arn = sfn.JsonPath.string_at("$.status.OutputModelArn")
        deploy_failed = self._notify("NotifyDeployFailed", "failed: the custom model was not deployed", "$.error")
        deploy_failed.next(sfn.Fail(self, "DeployFailed", error="DeploymentFailed", cause="See the notification"))
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
            notified = self._notify("NotifyDeployed", "deployed: on-demand custom model deployment", "$.deployment")
            notified.next(done)
            not_active = self._notify(
                "NotifyDeploymentFailed", "failed: the on-demand deployment did not become active", "$.deployment"
            )
            not_active.next(sfn.Fail(self, "DeploymentNotActive", error="DeploymentFailed"))
            return create.next(succeeded).next(self._poll("Deployment", get, "Active", "Failed", notified, not_active))

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
        # A throughput that cannot be deleted keeps billing: say so loudly.
        teardown_failed = self._notify(
            "NotifyTeardownFailed",
            "ACTION NEEDED: Provisioned Throughput could not be deleted and is still billing",
            "$.deployment",
        )
        teardown_failed.next(sfn.Fail(self, "TeardownFailed", error="ProvisionedThroughputNotDeleted"))
        delete_pt.add_catch(teardown_failed, errors=["States.ALL"], result_path="$.error")
        deployed = self._notify(
            "NotifyDeployed",
            f"deployed: Provisioned Throughput (1 model unit, deleted after {ft.provisioned_hours} h)",
            "$.deployment",
        )
        torn_down = self._notify("NotifyTornDown", "torn down: Provisioned Throughput deleted", "$.deployment")
        deployed.next(keep).next(delete_pt).next(torn_down).next(done)
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
        failed = self._notify(
            "NotifyProvisioningFailed", "failed: Provisioned Throughput did not come up (deleted)", "$.deployment"
        )
        cleanup.next(failed).next(sfn.Fail(self, "ProvisioningFailed", error="ProvisioningFailed"))
        return create_pt.next(succeeded).next(self._poll("Throughput", get, "InService", "Failed", deployed, cleanup))


class CustomModelCleanup(Construct):
    """Sandbox only: before CloudFormation deletes the key, delete the custom models encrypted with it.

    Custom models, on-demand deployments and Provisioned Throughput are created by the state machine, outside
    CloudFormation. On stack deletion the function (``lambdas/finetune_cleanup``) stops the pipeline's
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
            timeout=Duration.minutes(15),
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
        # EventBridge publishes to the encrypted topic with the key.
        data.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgeToTopic",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )

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
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="EncryptCustomModel",
                actions=["kms:DescribeKey", "kms:GenerateDataKey", "kms:Decrypt", "kms:CreateGrant"],
                resources=[data.key.key_arn],
            )
        )
        data.key.grant_encrypt_decrypt(machine)  # the job request file and the SNS messages
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
                "Action::kms:GenerateDataKey*",
                "Action::kms:ReEncrypt*",
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
        events.Rule(
            self,
            "CustomizationJobStateChange",
            description="Level 3: Bedrock customization job state changes of this kit's jobs",
            event_pattern=events.EventPattern(
                source=["aws.bedrock"],
                detail_type=["Model Customization Job State Change"],
                detail={"jobName": [{"prefix": config.resource_name("ft")}]},
            ),
            targets=[
                targets.SnsTopic(
                    topic,
                    message=events.RuleTargetInput.from_text(
                        f"Bedrock customization job {events.EventField.from_path('$.detail.jobName')} changed "
                        f"state: {events.EventField.from_path('$.detail.status')}"
                    ),
                )
            ],
        )

        self.data, self.service_role, self.validator, self.topic, self.pipeline = (
            data,
            service_role,
            validator,
            topic,
            pipeline,
        )
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
