"""The fine-tuning state machine: read the request, validate the data, run the customization job and wait for it
(bounded), optionally deploy the custom model, and report every outcome on the topic.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from finetune_cleanup.stop import STOP_REFUSED
from finetune_validate import formats
from finetune_validate.names import LOGS_SOURCE
from stacks.level3_finetune.data import FineTuneData
from stacks.level3_finetune.names import (
    DATASETS_PREFIX,
    JOB_TAG_KEY,
    JOBS_PREFIX,
    OUTPUT_PREFIX,
    QUOTA_RETRY_ATTEMPTS,
    QUOTA_RETRY_MINUTES,
    REPORTS_PREFIX,
    PipelineNames,
    bedrock_arn,
    execution_id,
    machine_name,
)
from stacks.level3_finetune.settings import FineTuneSettings
from stacks.shared.conditions import equals_where_present
from stacks.shared.deployment import Deployment
from stacks.shared.facts import INVOCATION_LOGS_PREFIX, request_metadata
from stacks.shared.failures import reported_fail
from stacks.shared.python_function import PythonFunction
from stacks.shared.stage import run_tags, state_machine_log_group

# What the pipeline reads of GetModelCustomizationJob's answer (kept whole at $.status), only where present.
JOB_STATUS = "$.status.Status"
OUTPUT_MODEL_ARN = "$.status.OutputModelArn"
# Two customization jobs may run per account; a third start fails with ServiceQuotaExceededException.
QUOTA_RETRY_INTERVAL = Duration.minutes(QUOTA_RETRY_MINUTES)
VALIDATOR_ERRORS = ["InvalidRequest", "DatasetNotFound"]
DEPLOY_POLL_INTERVAL = Duration.minutes(5)
DEPLOY_POLLS = 36  # three hours for a deployment or a throughput to come up
VALIDATOR_TIMEOUT = Duration.minutes(15)
THROTTLE_RETRY_INTERVAL = Duration.seconds(30)
THROTTLE_RETRY_ATTEMPTS = 5  # 30 s to 8 min apart: about 15 minutes in all
THROTTLE_RETRY_BACKOFF = 2.0
THROTTLED_ERRORS = ["Bedrock.ThrottlingException", "Bedrock.InternalServerException"]
# A create that carries a ClientRequestToken also retries InternalFailure (500) and ServiceUnavailable (503), which
# Bedrock documents as errors to retry with backoff, though botocore's model declares neither for its operations
# (https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html; Step Functions adds
# the Exception suffix: https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html):
# "If this token matches a previous request, Amazon Bedrock ignores the request" (botocore bedrock
# ClientRequestToken), so a retry of a create that did land makes nothing twice.
TRANSIENT_BEDROCK = [*THROTTLED_ERRORS, "Bedrock.InternalFailureException", "Bedrock.ServiceUnavailableException"]
NOTIFY_RETRY_INTERVAL = Duration.seconds(10)
NOTIFY_RETRY_ATTEMPTS = 4  # 10, 20, 40 and 80 s
DELETE_RETRY_INTERVAL = Duration.minutes(1)
DELETE_RETRY_ATTEMPTS = 6  # 1 to 32 minutes apart: about an hour in all
# The execution timeout: the configured bounds (execution_bounds) plus this, for retries of transient errors.
EXECUTION_HEADROOM = Duration.hours(6)
# ReadJobRequest reads at most this many bytes of a job file. A larger result would be States.DataLimitExceeded,
# which no Catch catches (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html), so
# the run would end unreported; cut short, a larger file is not JSON and is rejected and notified. JSON escaping
# may make a byte six characters (\u0001): 32 KiB stays within the 256 KiB payload quota.
MAX_REQUEST_BYTES = 32 * 1024
# ReadJobRequest's retries of a transient S3 error: 2, 4 and 8 s. The name of S3's NoSuchKey error as Step
# Functions names an aws-sdk task's errors (ServiceName.ErrorName with the Exception suffix,
# https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html).
READ_RETRY_INTERVAL = Duration.seconds(2)
READ_RETRY_ATTEMPTS = 3
S3_NO_SUCH_KEY = "S3.NoSuchKeyException"
# Where an uploaded request's version is, in S3's Object Created event and in the part of it the starter passes on
# (starter.py). A member name with '-' needs bracket notation
# (https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html).
UPLOAD_VERSION_FIELD = "version-id"
UPLOAD_VERSION_PATH = f"$.detail.object['{UPLOAD_VERSION_FIELD}']"


def bedrock_task(
    scope: Construct,
    state_id: str,
    action: str,
    parameters: dict[str, Any],
    resources: list[str],
    result_path: str,
) -> tasks.CallAwsService:
    """A Bedrock SDK task (``action`` as the integration names it, e.g. deleteImportedModel), granted its IAM action
    on ``resources``."""
    return tasks.CallAwsService(
        scope,
        state_id,
        service="bedrock",
        action=action,
        parameters=parameters,
        iam_action=f"bedrock:{action[:1].upper()}{action[1:]}",
        iam_resources=resources,
        result_path=result_path,
    )


def retry_throttling(task: tasks.CallAwsService | sfn.CustomState, errors: list[str] | None = None) -> None:
    """Bedrock control-plane calls back off and retry when throttled (``errors``: THROTTLED_ERRORS by default)."""
    task.add_retry(
        errors=THROTTLED_ERRORS if errors is None else errors,
        interval=THROTTLE_RETRY_INTERVAL,
        max_attempts=THROTTLE_RETRY_ATTEMPTS,
        backoff_rate=THROTTLE_RETRY_BACKOFF,
    )


# A status poll (GetModelCustomizationJob, the deployment's and the throughput's Get*, GetModelImportJob) is
# read-only, so it also retries any other task error, briefly. Bedrock documents InternalFailure (500) and
# ServiceUnavailable (503) as common errors to retry with backoff
# (https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html), and botocore's
# model lists neither for these operations; one of them in a 72-hour wait would otherwise fail the run, and its
# teardown stop the paid job. Bounded: a permanent error (AccessDenied) still fails the run within minutes.
# States.TaskFailed may follow named retriers; only States.ALL must stand alone and last
# (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
POLL_RETRY_INTERVAL = Duration.seconds(30)
POLL_RETRY_ATTEMPTS = 3  # 30, 60 and 120 s: three and a half minutes


def retry_task_errors(task: tasks.CallAwsService | sfn.CustomState) -> None:
    """A read-only poll retries any task error (after its named retriers) a few times before its Catch."""
    task.add_retry(
        errors=["States.TaskFailed"],
        interval=POLL_RETRY_INTERVAL,
        max_attempts=POLL_RETRY_ATTEMPTS,
        backoff_rate=2.0,
    )


def retry_polling(task: tasks.CallAwsService) -> None:
    """A Bedrock status poll: throttling and server errors as every call, then any task error, briefly."""
    retry_throttling(task)
    retry_task_errors(task)


# Step Functions reports a Lambda invocation refused at the account's or function's concurrency limit as
# Lambda.TooManyRequestsException, which is not one of the service exceptions LambdaInvoke retries by default
# (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html). A throttled
# validation would fail the run in an account with a low concurrency quota; it waits for capacity instead.
LAMBDA_THROTTLE_RETRY_INTERVAL = Duration.seconds(10)
LAMBDA_THROTTLE_RETRY_ATTEMPTS = 5  # 10 s to 160 s apart: about 5 minutes in all


def retry_lambda_throttling(task: tasks.LambdaInvoke) -> None:
    """A Lambda task backs off and retries while Lambda refuses the invocation for concurrency."""
    task.add_retry(
        errors=["Lambda.TooManyRequestsException"],
        interval=LAMBDA_THROTTLE_RETRY_INTERVAL,
        max_attempts=LAMBDA_THROTTLE_RETRY_ATTEMPTS,
        backoff_rate=2.0,
    )


# A dataset stream that drops while a validator Lambda reads it. botocore's StreamingBody.read raises these after
# get_object has returned, outside the S3 client's retry handler, so the client's own retries never see them
# (botocore 1.44 botocore/response.py StreamingBody.read; https://github.com/boto/boto3/issues/4111):
# - ResponseStreamingError (botocore/exceptions.py, an HTTPClientError): urllib3's ProtocolError, a reset or
#   closed connection, or a body cut short (urllib3's IncompleteRead, which urllib3/response.py _error_catcher wraps
#   in ProtocolError);
# - ReadTimeoutError (botocore/exceptions.py): no byte for the client's read_timeout;
# - IncompleteReadError (botocore/exceptions.py): the stream ended before its Content-Length;
# - SSLError: urllib3's own (urllib3/exceptions.py), which _error_catcher raises for a TLS error mid-stream and
#   StreamingBody.read does not wrap.
# The Python runtime reports an unhandled exception with its class name as errorType
# (https://docs.aws.amazon.com/lambda/latest/dg/python-exceptions.html), and Step Functions matches a Retry on that
# name (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html), as it does the
# validators' InvalidRequest. The validators only read and (re)write their own report key, so a second run is safe;
# a timeout (Sandbox.Timedout) or any other error still goes to the Catch at once. Two more attempts take at most
# 2 x VALIDATOR_TIMEOUT plus 30 s, which EXECUTION_HEADROOM covers.
VALIDATOR_STREAM_ERRORS = ["ResponseStreamingError", "ReadTimeoutError", "IncompleteReadError", "SSLError"]
VALIDATOR_STREAM_RETRY_INTERVAL = Duration.seconds(10)
VALIDATOR_STREAM_RETRY_ATTEMPTS = 2  # 10 s, then 20 s later


def retry_dropped_streams(task: tasks.LambdaInvoke) -> None:
    """A validator Lambda runs again, twice at most, when S3 dropped the dataset's stream under it."""
    task.add_retry(
        errors=VALIDATOR_STREAM_ERRORS,
        interval=VALIDATOR_STREAM_RETRY_INTERVAL,
        max_attempts=VALIDATOR_STREAM_RETRY_ATTEMPTS,
        backoff_rate=2.0,
    )


def _retry_budget(interval: Duration, attempts: int, backoff: float = 2.0) -> float:
    """Seconds a retrier may wait in total before its last attempt."""
    return sum(interval.to_seconds() * backoff**n for n in range(attempts))


def execution_bounds(ft: FineTuneSettings) -> Duration:
    """The longest the pipeline's bounded steps take: validation, waiting for a job slot, the job's polls, the
    deployment's polls, the kept throughput and its teardown's retries. The execution timeout adds
    EXECUTION_HEADROOM for the retries of transient errors on the way."""
    polls = ft.job_polls
    seconds = VALIDATOR_TIMEOUT.to_seconds() + QUOTA_RETRY_INTERVAL.to_seconds() * QUOTA_RETRY_ATTEMPTS
    seconds += _retry_budget(LAMBDA_THROTTLE_RETRY_INTERVAL, LAMBDA_THROTTLE_RETRY_ATTEMPTS)
    seconds += polls * ft.poll_minutes * 60
    if ft.deploy != "none":
        seconds += DEPLOY_POLLS * DEPLOY_POLL_INTERVAL.to_seconds()
        seconds += _retry_budget(DELETE_RETRY_INTERVAL, DELETE_RETRY_ATTEMPTS)
    if ft.deploy == "provisioned":
        seconds += ft.provisioned_hours * 3600
    return Duration.seconds(int(seconds))


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


class FineTunePipeline(Construct):
    """The state machine that validates, runs, waits for, optionally deploys and reports a customization job."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        ft: FineTuneSettings,
        data: FineTuneData,
        service_role: iam.Role,
        validator: PythonFunction,
        topic: sns.Topic,
        grader: PythonFunction,
        invocation_logs_bucket: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        names = PipelineNames.of(deployment)
        polls = ft.job_polls  # bounded by the execution history quota (settings.MAX_JOB_POLLS)

        self.topic = topic
        notify = self._notify

        def fail(state_id: str, error: str, cause: str, *details: str) -> sfn.Fail:
            """A Fail state whose cause goes on with the details its notification carried (failures.reported_fail)."""
            return reported_fail(self, state_id, error=error, summary=cause, details=list(details))

        # 1. The request: from the uploaded jobs/*.json file, or the execution input itself. Every JSONPath
        # below selects only what a Choice has seen present first: a path that selects nothing is a
        # States.Runtime error, which no Catch catches and which would end the run unreported.
        def read(state_id: str, version: dict[str, str], iam_action: str) -> tasks.CallAwsService:
            task = tasks.CallAwsService(
                self,
                state_id,
                service="s3",
                action="getObject",
                parameters={
                    "Bucket": sfn.JsonPath.string_at("$.detail.bucket.name"),
                    "Key": sfn.JsonPath.string_at("$.detail.object.key"),
                    **version,
                    "Range": f"bytes=0-{MAX_REQUEST_BYTES - 1}",
                },
                iam_resources=[data.data.arn_for_objects(f"{JOBS_PREFIX}*")],
                iam_action=iam_action,
                result_selector={"request": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.Body"))},
            )
            # A state without a Retry fails the run at its first error
            # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html), and S3 answers
            # InternalError (500) and SlowDown (503) with "try again" / "reduce your request rate"
            # (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): one of them would reject an
            # upload whose file is fine. A missing file, or one that is not JSON (States.IntrinsicFailure, from
            # StringToJson in the ResultSelector), is final; any other task error is tried again briefly.
            task.add_retry(errors=[S3_NO_SUCH_KEY, "States.IntrinsicFailure"], max_attempts=0)
            task.add_retry(
                errors=["States.TaskFailed"],
                interval=READ_RETRY_INTERVAL,
                max_attempts=READ_RETRY_ATTEMPTS,
                backoff_rate=2.0,
            )
            return task

        # The version the upload created, when the starter passed it (starter.py): a later upload of the same key
        # does not change what this run reads. A GET with a versionId needs s3:GetObjectVersion, not s3:GetObject
        # (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html).
        version_path = UPLOAD_VERSION_PATH
        read_version = read(
            "ReadJobRequestVersion",
            {"VersionId": sfn.JsonPath.string_at(version_path)},
            "s3:GetObjectVersion",
        )
        read_request = read("ReadJobRequest", {}, "s3:GetObject")
        unreadable = notify(
            "NotifyUnreadableRequest",
            f"rejected: the job file is not readable JSON of at most {MAX_REQUEST_BYTES // 1024} KiB",
            "$.error",
            then=fail(
                "UnreadableRequest",
                "InvalidJobRequest",
                f"The uploaded job request is not valid JSON of at most {MAX_REQUEST_BYTES // 1024} KiB",
                "$.error",
            ),
            with_request=False,
        )
        read_request.add_catch(unreadable, errors=["States.ALL"], result_path="$.error")
        read_version.add_catch(unreadable, errors=["States.ALL"], result_path="$.error")
        wrap_request = sfn.Pass(self, "UseInputAsRequest", parameters={"request": sfn.JsonPath.entire_payload})
        defaults = {
            "baseModelId": ft.base_model_id,
            "customizationType": ft.customization_type,
            "hyperparameters": dict(ft.hyperparameters),
            # CDK drops None from Parameters; an intrinsic keeps the key present, as null.
            "validationKey.$": "States.StringToJson('null')",
            # The request's own teacher, if any; the validator falls back to the configured one for DISTILLATION.
            "teacherModelId.$": "States.StringToJson('null')",
        }
        from_logs = invocation_logs_bucket is not None
        if from_logs:
            # A DISTILLATION request without a trainingKey distills from the account's invocation logs.
            defaults["trainingKey.$"] = "States.StringToJson('null')"
        # Static defaults sit in Parameters; intrinsic string literals would need every brace escaped.
        prepare = sfn.Pass(
            self,
            "ApplyDefaults",
            parameters={"defaults": defaults, "request": sfn.JsonPath.object_at("$.request")},
        )
        # ft_hyperparameters belong to ft_customization_type: a run of another type without its own
        # hyperparameters gets none, so the service's defaults for that type (as kit l3 start and validate do).
        # JsonMerge is shallow, so one set of defaults for every type would hand DISTILLATION names it refuses
        # and RFT fine-tuning values in place of its own defaults.
        prepare_other_type = sfn.Pass(
            self,
            "ApplyOtherTypeDefaults",
            parameters={
                "defaults": {**defaults, "hyperparameters": {}},
                "request": sfn.JsonPath.object_at("$.request"),
            },
        )
        # The request names no type (the configured one applies) or names the configured one as a string.
        configured_type = sfn.Condition.or_(
            sfn.Condition.not_(sfn.Condition.is_present("$.request.customizationType")),
            sfn.Condition.and_(
                sfn.Condition.is_string("$.request.customizationType"),
                sfn.Condition.string_equals("$.request.customizationType", ft.customization_type),
            ),
        )
        apply_defaults = (
            sfn.Choice(self, "ConfiguredType?").when(configured_type, prepare).otherwise(prepare_other_type)
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
                    "teacherModelId": sfn.JsonPath.string_at("$.job.teacherModelId"),
                    "defaultTeacherModelId": ft.teacher_model_id,
                    # The teachers the customization role may invoke (FineTuneStack): a run's own must be one.
                    "invocableTeacherModelIds": list(ft.invocable_teachers),
                    "invocationLogs": from_logs,
                    # With ft_deploy on-demand, a run's own base model must be one the on-demand deployment serves:
                    # refused here, not by CreateCustomModelDeployment after the paid job.
                    "onDemandDeploy": ft.deploy == "on-demand",
                    # The customization role reads only this prefix: the dataset keys and their media must be in it.
                    "datasetsPrefix": DATASETS_PREFIX,
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
            then=fail("BadRequest", "InvalidJobRequest", "The job request or its dataset keys are invalid", "$.error"),
        )
        retry_lambda_throttling(validate)
        retry_dropped_streams(validate)
        validate.add_catch(bad_request, errors=VALIDATOR_ERRORS, result_path="$.error")
        invalid_data = notify(
            "NotifyInvalidData",
            "rejected: the training data is invalid",
            "$.validation",
            then=fail(
                "InvalidData", "InvalidTrainingData", "Validation failed; the full report is in S3", "$.validation"
            ),
        )

        # 3. Start the job with the kit's own role; wait for a free slot when the account's 2 jobs are busy.
        job_arn = bedrock_arn(stack, "model-customization-job/*")

        def s3_uri(bucket: str, key_path: str) -> str:
            return sfn.JsonPath.format(f"s3://{bucket}/{{}}", sfn.JsonPath.string_at(key_path))

        def create_job(state_id: str, kind: str) -> tasks.CallAwsService:
            """One CreateModelCustomizationJob call per shape of request: ``kind`` is "plain" or "validated"
            (fine-tuning, continued pre-training), "distillation", "distillation-logs" or "rft"; each carries
            exactly the members its type takes (API_CreateModelCustomizationJob.html)."""
            parameters: dict[str, Any] = {
                "JobName": sfn.JsonPath.string_at("$.names.job"),
                "CustomModelName": sfn.JsonPath.string_at("$.names.model"),
                "RoleArn": service_role.role_arn,
                "BaseModelIdentifier": sfn.JsonPath.string_at("$.job.baseModelId"),
                "CustomizationType": sfn.JsonPath.string_at("$.job.customizationType"),
                "TrainingDataConfig": {"S3Uri": s3_uri(data.data.bucket_name, "$.job.trainingKey")},
                "OutputDataConfig": {
                    "S3Uri": sfn.JsonPath.format(
                        f"s3://{data.output.bucket_name}/{OUTPUT_PREFIX}{{}}/", sfn.JsonPath.string_at("$.names.job")
                    )
                },
                "CustomModelKmsKeyId": data.key.key_arn,
                "ClientRequestToken": sfn.JsonPath.string_at("$.names.job"),
                # Bedrock authorizes tags passed on create with bedrock:TagResource as well (FineTuneStack). The job
                # carries the execution's name and the stack's tags; the custom model the stack's tags (run_tags;
                # botocore bedrock CreateModelCustomizationJobRequest jobTags, customModelTags).
                "JobTags": [
                    {"Key": JOB_TAG_KEY, "Value": sfn.JsonPath.string_at("$$.Execution.Name")},
                    *run_tags(self, "bedrock", "CreateModelCustomizationJob", "jobTags"),
                ],
                "CustomModelTags": run_tags(self, "bedrock", "CreateModelCustomizationJob", "customModelTags"),
            }
            if kind in ("plain", "validated"):
                parameters["HyperParameters"] = sfn.JsonPath.object_at("$.job.hyperparameters")
            if kind == "validated":
                parameters["ValidationDataConfig"] = {
                    "Validators": [{"S3Uri": s3_uri(data.data.bucket_name, "$.job.validationKey")}]
                }
            if kind.startswith("distillation"):
                # The teacher the validator checked against the student (its result), and the response length.
                # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_TeacherModelConfig.html
                parameters["CustomizationConfig"] = {
                    "DistillationConfig": {
                        "TeacherModelConfig": {
                            "TeacherModelIdentifier": sfn.JsonPath.string_at("$.validation.teacherModelId"),
                            "MaxResponseLengthForInference": ft.teacher_max_response_tokens,
                        }
                    }
                }
            if kind == "distillation-logs":
                # Prompts only: the logs may hold any model's answers, so the teacher answers them again
                # (UsePromptResponse false; https://docs.aws.amazon.com/bedrock/latest/userguide/distillation-data-prep-option-2.html).
                # Only this deployment's Level 1 calls, by the request metadata they carry (stacks/shared/facts.py):
                # the logs hold every bedrock-runtime call in the Region, from any application and either stage.
                parameters["TrainingDataConfig"] = {
                    "InvocationLogsConfig": {
                        "InvocationLogSource": {"S3Uri": f"s3://{invocation_logs_bucket}/{INVOCATION_LOGS_PREFIX}"},
                        "UsePromptResponse": False,
                        "RequestMetadataFilters": {
                            "Equals": request_metadata(deployment.name_prefix, deployment.stage)
                        },
                    }
                }
            if kind == "rft":
                # The stack's grader scores the responses; hyperparameters typed by the validator
                # (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_RFTConfig.html).
                parameters["CustomizationConfig"] = {
                    "RftConfig": {
                        "GraderConfig": {"LambdaGrader": {"LambdaArn": grader.function.function_arn}},
                        "HyperParameters": sfn.JsonPath.object_at("$.validation.rftHyperParameters"),
                    }
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
                    bedrock_arn(stack, "custom-model/*"),
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
            retry_throttling(task, TRANSIENT_BEDROCK)
            return task

        pipeline_error = notify(
            "NotifyPipelineError",
            "failed: a pipeline step failed",
            "$.error",
            then=fail("PipelineError", "PipelineStepFailed", "A pipeline step failed", "$.error"),
        )
        validate.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")

        start_failed = notify(
            "NotifyStartFailed",
            "failed: the job could not be started",
            "$.error",
            then=fail("StartFailed", "CustomizationJobNotStarted", "CreateModelCustomizationJob failed", "$.error"),
        )
        create_plain = create_job("CreateJob", "plain")
        create_validated = create_job("CreateJobWithValidationSet", "validated")
        create_distillation = create_job("CreateDistillationJob", "distillation")
        create_rft = create_job("CreateRftJob", "rft")
        creates = [create_plain, create_validated, create_distillation, create_rft]
        distill: sfn.IChainable = create_distillation
        if from_logs:
            create_from_logs = create_job("CreateDistillationJobFromLogs", "distillation-logs")
            creates.append(create_from_logs)
            distill = (
                sfn.Choice(self, "DistillFromLogs?")
                .when(sfn.Condition.string_equals("$.validation.trainingSource", LOGS_SOURCE), create_from_logs)
                .otherwise(create_distillation)
            )
        for task in creates:
            task.add_catch(start_failed, errors=["States.ALL"], result_path="$.error")

        # 4. Wait for the outcome, bounded by ft_max_job_hours. Step Functions offers CreateModelCustomizationJob.sync
        # (https://docs.aws.amazon.com/step-functions/latest/dg/connect-bedrock.html), but its page documents neither
        # the IAM the .sync pattern needs nor that a timed-out or stopped task stops the job; this loop uses only
        # documented calls, stops the job itself when the bound is reached, and notifies on every status it sees.
        wait = sfn.Wait(self, "WaitForJob", time=sfn.WaitTime.duration(Duration.minutes(ft.poll_minutes)))

        def read_job(state_id: str) -> tasks.CallAwsService:
            """GetModelCustomizationJob into $.status, retried as a poll; a lasting error fails the run, notified."""
            task = tasks.CallAwsService(
                self,
                state_id,
                service="bedrock",
                action="getModelCustomizationJob",
                parameters={"JobIdentifier": sfn.JsonPath.string_at("$.created.jobArn")},
                iam_action="bedrock:GetModelCustomizationJob",
                iam_resources=[job_arn],
                result_path="$.status",
            )
            retry_polling(task)
            task.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")
            return task

        get_job = read_job("GetJob")
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
        retry_throttling(stop_job)
        # A job that ended between the last poll and the stop is refused it (STOP_REFUSED, as the stack-delete
        # cleanup reads it): it is read again and routed by its status, so a job that completed at the bound is
        # deployed and reported, not a failed step.
        get_job_after_stop = read_job("GetJobAfterStopRefused")
        stop_job.add_catch(
            get_job_after_stop,
            errors=[f"Bedrock.{code}" for code in STOP_REFUSED],
            result_path="$.stopRefused",
        )
        stop_job.add_catch(pipeline_error, errors=["States.ALL"], result_path="$.error")
        timed_out = notify(
            "NotifyTimeout",
            f"stopped: the job ran longer than {ft.max_job_hours} h",
            "$.created",
            then=fail(
                "TimedOut",
                "CustomizationJobTimedOut",
                f"Exceeded {ft.max_job_hours} hours; the job was stopped",
                "$.created",
            ),
        )
        stop_job.next(timed_out)
        job_failed = notify(
            "NotifyJobFailed",
            "failed: the customization job did not complete",
            "$.status",
            then=fail("JobFailed", "CustomizationJobFailed", "The job failed or was stopped; its status", "$.status"),
        )

        done = sfn.Succeed(self, "Done")
        if ft.deploy == "none":
            after_success: sfn.IChainable = notify(
                "NotifySucceeded", "succeeded: the custom model is ready", "$.status", then=done
            )
        else:
            after_success = self._deployment(ft, done)

        no_training_key = notify(
            "NotifyMissingTrainingKey",
            "rejected: the job request has no trainingKey",
            "$.request",
            then=fail("MissingTrainingKey", "InvalidJobRequest", "The job request needs a trainingKey", "$.request"),
            with_request=False,
        )
        check_request = sfn.Choice(self, "HasTrainingKey?").when(
            sfn.Condition.is_present("$.request.trainingKey"), apply_defaults
        )
        if from_logs:
            # No trainingKey: a distillation from the invocation logs (the request's type, or the configured one).
            distillation_request = sfn.Condition.and_(
                sfn.Condition.is_present("$.request.customizationType"),
                sfn.Condition.is_string("$.request.customizationType"),
                sfn.Condition.string_equals("$.request.customizationType", formats.DISTILLATION),
            )
            if ft.customization_type == formats.DISTILLATION:
                distillation_request = sfn.Condition.or_(
                    distillation_request, sfn.Condition.not_(sfn.Condition.is_present("$.request.customizationType"))
                )
            check_request.when(distillation_request, apply_defaults)
        check_request.otherwise(no_training_key)
        first_check: sfn.IChainable = check_request
        if from_logs and ft.customization_type == formats.DISTILLATION:
            # Here a request without a customizationType is a distillation, and a request that is not an object
            # (7, [], null, a string) has none: it would reach MergeRequest, whose States.JsonMerge fails in a Pass
            # state, which has no Catch, and the run would end unreported. Only an object goes on (JSONata $type,
            # stacks/shared/state_input.py).
            first_check = (
                sfn.Choice.jsonata(self, "RequestIsAnObject?", comment="Only an object can be a job request")
                .when(sfn.Condition.jsonata("{% $type($states.input.request) = 'object' %}"), check_request)
                .otherwise(no_training_key)
            )
        # A hand-started input that only looks like an S3 event (no bucket name) is treated as a request, and
        # rejected there for its missing trainingKey: notified, not a States.Runtime error in ReadJobRequest.
        from_file = sfn.Condition.and_(
            sfn.Condition.is_present("$.detail.bucket.name"), sfn.Condition.is_present("$.detail.object.key")
        )
        read_version.next(first_check)
        read_request.next(first_check)
        definition = (
            sfn.Choice(self, "RequestFromFile?")
            .when(
                from_file,
                sfn.Choice(self, "OfAVersion?")
                .when(
                    sfn.Condition.and_(sfn.Condition.is_present(version_path), sfn.Condition.is_string(version_path)),
                    read_version,
                )
                .otherwise(read_request),
            )
            .otherwise(wrap_request.next(first_check))
        )
        prepare_other_type.next(merge)
        prepare.next(merge).next(name_job).next(validate).next(
            sfn.Choice(self, "DataValid?")
            .when(
                sfn.Condition.boolean_equals("$.validation.valid", True),
                sfn.Choice(self, "CustomizationType?")
                .when(sfn.Condition.string_equals("$.job.customizationType", formats.DISTILLATION), distill)
                .when(
                    sfn.Condition.string_equals("$.job.customizationType", formats.REINFORCEMENT_FINE_TUNING),
                    create_rft,
                )
                .otherwise(
                    sfn.Choice(self, "HasValidationSet?")
                    .when(sfn.Condition.is_null("$.job.validationKey"), create_plain)
                    .otherwise(create_validated)
                ),
            )
            .otherwise(invalid_data)
        )
        for task in creates:
            task.next(wait)

        # botocore bedrock 2023-04-20 GetModelCustomizationJobResponse does not require status (nor
        # outputModelArn): a comparison on an absent path is a States.Runtime error no Catch takes, so Status is
        # compared only where present (an And's rules are evaluated in order, its IsPresent first:
        # https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-choice-state.html), and an
        # answer without it is polled again, within the same bound.
        def job_status(*statuses: str) -> sfn.Condition:
            return equals_where_present(JOB_STATUS, *statuses)

        wait.next(get_job).next(
            sfn.Choice(self, "JobStatus?")
            .when(job_status("Completed"), after_success)
            .when(job_status("Failed", "Stopped"), job_failed)
            .otherwise(count)
        )
        get_job_after_stop.next(
            sfn.Choice(self, "EndedAtTheTimeLimit?")
            .when(job_status("Completed"), after_success)
            .when(job_status("Failed", "Stopped"), job_failed)
            .otherwise(timed_out)
        )
        count.next(
            sfn.Choice(self, "WithinTimeLimit?")
            .when(sfn.Condition.number_greater_than_equals("$.poll.count", polls), stop_job)
            .otherwise(wait)
        )

        self.logs = state_machine_log_group(self, "Logs", deployment, machine_name(deployment))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=machine_name(deployment),
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            # The bounds plus room for retries; an execution that still times out (or is aborted) is cleaned up
            # by PipelineTeardown.
            timeout=execution_bounds(ft).plus(EXECUTION_HEADROOM),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # Without it ReadJobRequest would retry a removed job file as a transient error and report it as access
        # denied, not as the NoSuchKey it treats as final.
        self.state_machine.add_to_role_policy(data.see_missing_keys("SeeMissingJobFiles", JOBS_PREFIX))
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
        retry_polling(get)
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

    def _delete(
        self,
        state_id: str,
        action: str,
        identifier: str,
        resource: str,
        *,
        then: sfn.IChainable,
        not_deleted: sfn.IChainable,
    ) -> tasks.CallAwsService:
        """Delete what this execution deployed (``$.deployment.arn``), retrying for about an hour, then go on to
        ``then``; a deletion that keeps failing goes to ``not_deleted`` (ACTION NEEDED)."""
        delete = bedrock_task(
            self,
            state_id,
            action,
            {identifier: sfn.JsonPath.string_at("$.deployment.arn")},
            [bedrock_arn(Stack.of(self), f"{resource}/*")],
            sfn.JsonPath.DISCARD,
        )
        # Not found: nothing is left to bill (say it was deleted by hand), so go on as deleted rather than retry
        # for an hour and announce ACTION NEEDED. botocore's bedrock model lists ResourceNotFoundException for
        # DeleteProvisionedModelThroughput and DeleteCustomModelDeployment; the teardown treats it alike.
        delete.add_retry(errors=["Bedrock.ResourceNotFoundException"], max_attempts=0)
        delete.add_retry(
            errors=["States.ALL"], interval=DELETE_RETRY_INTERVAL, max_attempts=DELETE_RETRY_ATTEMPTS, backoff_rate=2.0
        )
        delete.add_catch(then, errors=["Bedrock.ResourceNotFoundException"], result_path="$.notFound")
        delete.add_catch(not_deleted, errors=["States.ALL"], result_path="$.error")
        delete.next(then)
        return delete

    def _delete_throughput(
        self, state_id: str, *, then: sfn.IChainable, not_deleted: sfn.IChainable
    ) -> tasks.CallAwsService:
        return self._delete(
            state_id,
            "deleteProvisionedModelThroughput",
            "ProvisionedModelId",
            "provisioned-model",
            then=then,
            not_deleted=not_deleted,
        )

    def _delete_deployment(
        self, state_id: str, *, then: sfn.IChainable, not_deleted: sfn.IChainable
    ) -> tasks.CallAwsService:
        return self._delete(
            state_id,
            "deleteCustomModelDeployment",
            "CustomModelDeploymentIdentifier",
            "custom-model-deployment",
            then=then,
            not_deleted=not_deleted,
        )

    def _deployment(self, ft: FineTuneSettings, done: sfn.Succeed) -> sfn.IChainable:
        """After a completed job: on-demand deployment, or no-commitment Provisioned Throughput torn down later.

        From the create call on, every path deletes what was created unless the run ends in Done with an
        on-demand deployment, which bills only for what it serves
        (https://docs.aws.amazon.com/bedrock/latest/userguide/deploy-custom-model-on-demand.html). A deletion
        that keeps failing is announced as ACTION NEEDED. Timeouts and aborts: PipelineTeardown.
        """
        stack = Stack.of(self)
        model_arn = sfn.JsonPath.string_at(OUTPUT_MODEL_ARN)
        deploy_failed = self._notify(
            "NotifyDeployFailed",
            "failed: the custom model was not deployed",
            "$.error",
            then=reported_fail(
                self,
                "DeployFailed",
                error="DeploymentFailed",
                summary="The custom model was not deployed",
                details=["$.error"],
            ),
        )
        what = "Provisioned Throughput" if ft.deploy == "provisioned" else "the on-demand deployment"
        # A deployment that cannot be deleted may keep billing: say so loudly.
        teardown_failed = self._notify(
            "NotifyTeardownFailed",
            f"ACTION NEEDED: {what} could not be deleted; delete it by hand",
            "$.deployment",
            then=reported_fail(
                self,
                "TeardownFailed",
                error="DeploymentNotDeleted",
                summary=f"ACTION NEEDED: {what} could not be deleted; delete it by hand",
                details=["$.deployment", "$.error"],
            ),
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
                    # botocore bedrock CreateCustomModelDeploymentRequest tags (run_tags)
                    "Tags": run_tags(self, "bedrock", "CreateCustomModelDeployment", "tags"),
                },
                iam_action="bedrock:CreateCustomModelDeployment",
                iam_resources=[bedrock_arn(stack, "custom-model/*"), bedrock_arn(stack, "custom-model-deployment/*")],
                result_selector={"arn": sfn.JsonPath.string_at("$.CustomModelDeploymentArn")},
                result_path="$.deployment",
            )
            retry_throttling(create, TRANSIENT_BEDROCK)
            create.add_catch(deploy_failed, errors=["States.ALL"], result_path="$.error")
            get = tasks.CallAwsService(
                self,
                "GetOnDemandDeployment",
                service="bedrock",
                action="getCustomModelDeployment",
                parameters={"CustomModelDeploymentIdentifier": sfn.JsonPath.string_at("$.deployment.arn")},
                iam_action="bedrock:GetCustomModelDeployment",
                iam_resources=[bedrock_arn(stack, "custom-model-deployment/*")],
                result_path="$.deploymentStatus",
            )
            deployed = self._notify(
                "NotifyDeployed", "deployed: on-demand custom model deployment", "$.deployment", then=done
            )
            # A deployment that did not become active is deleted, so nothing is left behind half-made.
            cleanup = self._delete_deployment(
                "DeleteFailedDeployment",
                then=self._notify(
                    "NotifyDeploymentFailed",
                    "failed: the on-demand deployment did not become active (deleted)",
                    "$.deployment",
                    then=reported_fail(
                        self,
                        "DeploymentNotActive",
                        error="DeploymentFailed",
                        summary=f"The on-demand deployment reported Failed, could not be read, or was not Active "
                        f"after {DEPLOY_POLLS} polls; it was deleted. Its last status",
                        details=["$.deployment", "$.deploymentStatus"],
                    ),
                ),
                not_deleted=teardown_failed,
            )
            polling = self._poll("Deployment", get, "Active", "Failed", deployed, cleanup)
            succeeded = self._notify(
                "NotifySucceeded", "succeeded: the custom model is ready", "$.status", then=polling
            )
            create.next(succeeded)
            return self._with_output_model(create)

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
                # botocore bedrock CreateProvisionedModelThroughputRequest tags (run_tags)
                "Tags": run_tags(self, "bedrock", "CreateProvisionedModelThroughput", "tags"),
            },
            iam_action="bedrock:CreateProvisionedModelThroughput",
            # Resource types of CreateProvisionedModelThroughput: custom-model and foundation-model, both required
            # (the custom model's base model is authorized too); tagging the new provisioned model is TagResource's
            # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html
            iam_resources=[
                bedrock_arn(stack, "custom-model/*"),
                f"arn:{stack.partition}:bedrock:{stack.region}::foundation-model/*",
            ],
            result_selector={"arn": sfn.JsonPath.string_at("$.ProvisionedModelArn")},
            result_path="$.deployment",
        )
        retry_throttling(create_pt, TRANSIENT_BEDROCK)
        create_pt.add_catch(deploy_failed, errors=["States.ALL"], result_path="$.error")
        keep = sfn.Wait(
            self, "KeepProvisionedThroughput", time=sfn.WaitTime.duration(Duration.hours(ft.provisioned_hours))
        )
        torn_down = self._notify(
            "NotifyTornDown", "torn down: Provisioned Throughput deleted", "$.deployment", then=done
        )
        delete_pt = self._delete_throughput("DeleteProvisionedThroughput", then=torn_down, not_deleted=teardown_failed)
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
            iam_resources=[bedrock_arn(stack, "provisioned-model/*")],
            result_path="$.deploymentStatus",
        )
        # A throughput that failed to come up is still deleted, so nothing keeps billing.
        cleanup = self._delete_throughput(
            "DeleteFailedProvisionedThroughput",
            then=self._notify(
                "NotifyProvisioningFailed",
                "failed: Provisioned Throughput did not come up (deleted)",
                "$.deployment",
                then=reported_fail(
                    self,
                    "ProvisioningFailed",
                    error="ProvisioningFailed",
                    summary=f"The Provisioned Throughput reported Failed, could not be read, or was not InService "
                    f"after {DEPLOY_POLLS} polls; it was deleted. Its last status",
                    details=["$.deployment", "$.deploymentStatus"],
                ),
            ),
            not_deleted=teardown_failed,
        )
        polling = self._poll("Throughput", get, "InService", "Failed", deployed, cleanup)
        create_pt.next(
            self._notify("NotifySucceeded", "succeeded: the custom model is ready", "$.status", then=polling)
        )
        return self._with_output_model(create_pt)

    def _with_output_model(self, deploy: sfn.IChainable) -> sfn.Choice:
        """Go on to ``deploy`` when the completed job's answer names its custom model (OutputModelArn, which
        botocore bedrock 2023-04-20 GetModelCustomizationJobResponse does not require); else a notified failure
        with nothing deployed: the deploy's ModelArn would select nothing, a States.Runtime error no Catch takes."""
        no_model = self._notify(
            "NotifyNoOutputModel",
            "failed: the job completed but its status names no output model (OutputModelArn), so nothing was "
            "deployed; the custom model is named by OutputModelName in the detail",
            "$.status",
            then=reported_fail(
                self,
                "NoOutputModel",
                error="DeploymentFailed",
                summary="GetModelCustomizationJob named no OutputModelArn; the job's status",
                details=["$.status"],
            ),
        )
        return (
            sfn.Choice(self, "OutputModel?")
            .when(sfn.Condition.is_present(OUTPUT_MODEL_ARN), deploy)
            .otherwise(no_model)
        )
