"""The SageMaker fine-tuning pipeline's states: request checks, the training job, Custom Model Import, the bounded
wait for the import, the smoke invocation and the clean-up before a failure is notified.

    ReadInput ─► CheckInputType: not an object ─► rejected (NotifyInvalidInput)
    ─► CheckInput: no trainingKey, a field of the wrong type, baseModel and baseModelKey both, a baseModelKey
        outside models/, a resumeFrom that is not an execution name ─► rejected (NotifyInvalidInput)
    ─► UseModelKey (baseModelKey: the "model" channel) ─► FindBaseModel (its config.json) ─► none ─► rejected
       | UseGivenModel | UseDefaultModel (baseModel from the request, else sm_base_model, from the Hub)
    ─► ChooseCheckpoints: resumeFrom ─► UseEarlierCheckpoints ─► FindCheckpoints ─► none ─► rejected
                          otherwise ─► UseOwnCheckpoints (checkpoints/<execution name>/)
    ─► FindTrainingData (ListObjectsV2, 1 key, in the data bucket) ─► none ─► rejected
    ─► ValidateData (the sagemaker_validate function streams every *.jsonl object the train channel would copy
       and applies chat_records' rules) ─► invalid ─► rejected naming file, line and reason (InvalidData)
                                        └─ error ─► NotifyFailed
    ─► TrainModel (CreateTrainingJob.sync, job <job prefix><MD5 of the execution ARN>; the chosen checkpoint
       prefix; uncompressed output)
    ─► ImportModel (CreateModelImportJob on output/<job>/output/model/merged/; job, model and request token named
       as the job, so a retried call gets the job it created) ─► error ─► ImportNotConfirmed ─► DeleteImportedModel
    ─► WaitForImport ─► GetImportJob (errors retried) ─► error ─► ImportNotWatched ─► DeleteImportedModel
                        ─► CountPoll ─► ImportDone?
           InProgress (or no Status) and polls left ─► WaitForImport
           Failed ─► ImportFailed ─┐
           Completed naming no ImportedModelArn ─► ImportNamesNoModel ─┤
           polls exhausted ─► ImportTimedOut ─► DeleteImportedModel ─► NotifyFailed ─► PipelineFailed
           Completed ─► SmokeTest (InvokeModel, retried while the model is not ready) ─► NotifySucceeded
                                      └─ error ─► DeleteImportedModel ─► NotifyFailed

Every Task that can fail is caught; every path after CreateModelImportJob goes through DeleteImportedModel
before the failure is notified, so a failed run leaves no imported model behind (a training job that failed
bills nothing more; a failed import job creates no model). Bedrock has no API to stop an import job: a run that
stops watching one (timed out, or its create or poll call failing after the retries) deletes the model by name,
and the notification names the job and the model in case the job completes later; the run then fails, and the
teardown (sagemaker_teardown.py), which every failed, timed-out or aborted execution starts, waits for the import
job to end (IMPORT_WAIT_MINUTES at most) before it deletes the model again.

A run that resumes (``"resumeFrom": "<earlier execution name>"``) trains with the earlier execution's checkpoint
prefix: SageMaker copies it into the job's checkpoint directory at start, the program continues from the newest
checkpoint there (and refuses one written for another base model, data or hyperparameters), and the new job's
checkpoints land under the same prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.level3_finetune.names import CHECKPOINTS_PREFIX, IMPORTED_MODELS_QUOTA_CODE, MODELS_PREFIX, execution_id
from stacks.level3_finetune.pipeline import (
    QUOTA_RETRY_ATTEMPTS,
    QUOTA_RETRY_INTERVAL,
    TRANSIENT_BEDROCK,
    retry_dropped_streams,
    retry_lambda_throttling,
    retry_task_errors,
    retry_throttling,
)
from stacks.shared.conditions import equals_where_present, listed_a_key
from stacks.shared.stage import run_tags
from stacks.shared.state_input import wrapped_input
from workloads.finetune_sagemaker.import_check import MERGED_DIR
from workloads.pretrain.checkpoints import SFT_PREFIX as SFT_CHECKPOINT_PREFIX

CODE_PREFIX = "code/"
DATA_PREFIX = "datasets/"  # the sample records land here; a run may name any key or prefix of the data bucket
# The printable characters and white space an execution name may not contain (StartExecution's `name`):
# https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html
# A resumeFrom holding one is rejected, so it cannot reach outside checkpoints/<name>/; other control characters
# are left out of the definition and find no checkpoints (FindCheckpoints rejects the run).
NAME_FORBIDDEN = '<>{}[]?*"#%\\^|~`$&,;:/ \t\n\r'
OUTPUT_PREFIX = "output/"
# SageMaker writes an uncompressed model output to <S3OutputPath>/<job name>/output/model/:
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-train-storage-uncompressed.html
MODEL_SUFFIX = "/output/model/"
MERGED_SUFFIX = f"{MODEL_SUFFIX}{MERGED_DIR}/"  # where the training program writes the model the pipeline imports
POLL_SECONDS = 60
# Bedrock cannot stop a model import job (botocore bedrock 2023-04-20 has Create, Get and List of import jobs, no
# Stop), and one still InProgress creates its model after any delete. The teardown (sagemaker_teardown.py) reads the
# run's import job (GetModelImportJob status: InProgress | Completed | Failed) and waits while it runs, at most
# IMPORT_CHECKS checks IMPORT_CHECK_INTERVAL apart, before it deletes the model; one still running then is reported.
IMPORT_CHECK_INTERVAL = Duration.minutes(10)
IMPORT_CHECKS = 6
IMPORT_WAIT_MINUTES = int(IMPORT_CHECKS * IMPORT_CHECK_INTERVAL.to_minutes())
# GetModelImportJob's answer, kept at $.importJob: the members ImportDone reads (only where present).
IMPORT_STATUS = "$.importJob.Status"
IMPORTED_MODEL_ARN = "$.importJob.ImportedModelArn"
RETRY_INTERVAL = Duration.seconds(2)
RETRY_ATTEMPTS = 3
RETRY_BACKOFF = 2.0
# An imported model that has not served for a while is restored on the next request and answers
# ModelNotReadyException until it is; the guide says to retry:
# https://docs.aws.amazon.com/bedrock/latest/userguide/invoke-imported-model.html
SMOKE_RETRY_INTERVAL = Duration.seconds(30)
SMOKE_RETRY_ATTEMPTS = 5
# The smoke request: the OpenAI chat-completion body imported models take with InvokeModel (the README of
# workloads/finetune_sagemaker; Converse does not serve every architecture, Qwen2.5 among them).
SMOKE_BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Reply with one word: ready?"}],
    "max_tokens": 16,
}
# The longest a run waits for the Region's one import slot (ImportModel's quota retries).
IMPORT_SLOT_WAIT = Duration.minutes(QUOTA_RETRY_INTERVAL.to_minutes() * QUOTA_RETRY_ATTEMPTS)


def run_name(job_prefix: str, execution_arn_path: str) -> str:
    """The intrinsic that names an execution's training job, import job and imported model: the job prefix and the
    hash of the execution ARN (names.execution_id, 32 hex digits, as the Bedrock pipeline names its jobs).

    Not the execution name: StartExecution allows 80 characters there (a console start uses a 36-character UUID),
    and the prefix with the longest name_prefix and stage takes 30 of the 63 characters the job and model names may
    have. The pipeline applies it to ``$$.Execution.Id``, the teardown to the status event's ``executionArn``, and
    ``kit l3sm`` computes the same name from the ARN (names.execution_hash).
    """
    return f"States.Format('{job_prefix}{{}}', {execution_id(execution_arn_path)})"


def merged_prefix(job_prefix: str) -> str:
    """The key pattern of every merged model the pipeline imports (the import role reads only these)."""
    return f"{OUTPUT_PREFIX}{job_prefix}*{MERGED_SUFFIX}"


@dataclass(frozen=True)
class PipelineTargets:
    """What the states need from the stack: names, buckets, roles and the notification states."""

    job_prefix: str  # training job, import job and imported model names: <job_prefix><hash of the execution ARN>
    data_bucket: str
    artifacts_bucket: str
    # CreateTrainingJob parameters without the per-execution ones; its HyperParameters are the static ones
    training_request: dict[str, Any]
    import_role_arn: str
    default_base_model: str
    max_polls: int
    kit_options: str  # --stage and --region of the kit commands the causes name (Deployment.kit_command)
    validator: lambda_.IFunction  # sagemaker_validate: the records of the training data, before the job
    succeeded: sfn.IChainable
    failed: sfn.IChainable
    invalid: sfn.IChainable


def _task(scope: Construct, state_id: str, resource: str, **fields: Any) -> sfn.CustomState:
    return sfn.CustomState(scope, state_id, state_json={"Type": "Task", "Resource": resource, **fields})


def _channel(name: str, bucket: str, key_path: str) -> dict[str, Any]:
    """An S3Prefix input channel copied whole to every instance, its key read from the execution's state."""
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": sfn.JsonPath.format(f"s3://{bucket}/{{}}", sfn.JsonPath.string_at(key_path)),
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def _present_but_not_a_string(path: str) -> sfn.Condition:
    return sfn.Condition.and_(sfn.Condition.is_present(path), sfn.Condition.not_(sfn.Condition.is_string(path)))


def _escape(character: str) -> str:
    """A literal character in a StringMatches pattern (a backslash escapes * and itself)."""
    return "\\" + character if character in "*\\" else character


def build(scope: Construct, targets: PipelineTargets) -> sfn.IChainable:
    """The states, wired; returns the first one."""
    from workloads.finetune_sagemaker import sagemaker_job

    stack = Stack.of(scope)
    sdk = f"arn:{stack.partition}:states:::aws-sdk:"
    name = run_name(targets.job_prefix, "$$.Execution.Id")

    def rejected(state_id: str, cause: str) -> sfn.Pass:
        state = sfn.Pass(scope, state_id, parameters={"Error": "InvalidInput", "Cause": cause}, result_path="$.error")
        state.next(targets.invalid)
        return state

    usage = 'the execution input must be a JSON object: {"trainingKey": "<key or prefix in the data bucket>"}'
    not_an_object = rejected("InputNotAnObject", usage)
    check = sfn.Choice(scope, "CheckInput")
    start = wrapped_input(scope, not_an_object, check)

    # The training job's channels and hyperparameters depend on where the base model comes from: a Hub id is
    # passed as the `model` hyperparameter; a prefix in the data bucket becomes the `model` channel, and the
    # program reads SM_CHANNEL_MODEL (no `model` hyperparameter, so the two can never disagree).
    static_hyper = dict(targets.training_request["HyperParameters"])
    train_channel = _channel(sagemaker_job.TRAIN_CHANNEL, targets.data_bucket, "$.input.trainingKey")
    model_channel = _channel(sagemaker_job.MODEL_CHANNEL, targets.data_bucket, "$.input.baseModelKey")
    by_key = sfn.Pass(
        scope,
        "UseModelKey",
        parameters={
            "id": sfn.JsonPath.format(
                f"s3://{targets.data_bucket}/{{}}", sfn.JsonPath.string_at("$.input.baseModelKey")
            ),
            "hyperparameters": static_hyper,
            "channels": [train_channel, model_channel],
        },
        result_path="$.baseModel",
    )
    given = sfn.Pass(
        scope,
        "UseGivenModel",
        parameters={
            "id": sfn.JsonPath.string_at("$.input.baseModel"),
            # JSON-encoded like the toolkit's other values: "Qwen/..." arrives as --model Qwen/...
            "hyperparameters": {
                **static_hyper,
                "model": sfn.JsonPath.json_to_string(sfn.JsonPath.string_at("$.input.baseModel")),
            },
            "channels": [train_channel],
        },
        result_path="$.baseModel",
    )
    default = sfn.Pass(
        scope,
        "UseDefaultModel",
        parameters={
            "id": targets.default_base_model,
            "hyperparameters": {**static_hyper, "model": json.dumps(targets.default_base_model)},
            "channels": [train_channel],
        },
        result_path="$.baseModel",
    )
    resume = "$.input.resumeFrom"
    (
        check.when(sfn.Condition.not_(sfn.Condition.is_present("$.input.trainingKey")), not_an_object)
        .when(
            sfn.Condition.not_(sfn.Condition.is_string("$.input.trainingKey")),
            rejected("TrainingKeyNotAString", "trainingKey must be a string: a key or prefix in the data bucket"),
        )
        .when(
            _present_but_not_a_string("$.input.baseModel"),
            rejected("BaseModelNotAString", "baseModel must be a string: a Hugging Face Hub id"),
        )
        .when(
            _present_but_not_a_string("$.input.baseModelKey"),
            rejected(
                "BaseModelKeyNotAString",
                f"baseModelKey must be a string: a prefix under {MODELS_PREFIX} in the data bucket",
            ),
        )
        .when(
            sfn.Condition.and_(
                sfn.Condition.is_present("$.input.baseModel"), sfn.Condition.is_present("$.input.baseModelKey")
            ),
            rejected(
                "TwoBaseModels",
                "name the base model once: baseModel (a Hugging Face Hub id) or baseModelKey (a prefix under "
                f"{MODELS_PREFIX} in the data bucket), not both",
            ),
        )
        .when(
            sfn.Condition.and_(
                sfn.Condition.is_present("$.input.baseModelKey"),
                sfn.Condition.not_(sfn.Condition.string_matches("$.input.baseModelKey", f"{MODELS_PREFIX}*/")),
            ),
            rejected(
                "BaseModelKeyOutsideModels",
                f"baseModelKey must be a prefix under {MODELS_PREFIX} ending in /, for example "
                f"{MODELS_PREFIX}qwen2.5-0.5b-instruct/ (the training role reads the base model from there)",
            ),
        )
        .when(
            _present_but_not_a_string(resume),
            rejected("ResumeFromNotAString", "resumeFrom must be a string: the name of an earlier execution"),
        )
        .when(
            sfn.Condition.and_(
                sfn.Condition.is_present(resume),
                sfn.Condition.or_(
                    sfn.Condition.string_equals(resume, ""),
                    *(sfn.Condition.string_matches(resume, f"*{_escape(c)}*") for c in NAME_FORBIDDEN),
                ),
            ),
            rejected(
                "ResumeFromNotAnExecutionName",
                "resumeFrom must be the name of an earlier execution of this pipeline (the name, not the ARN)",
            ),
        )
        .when(sfn.Condition.is_present("$.input.baseModelKey"), by_key)
        .when(sfn.Condition.is_present("$.input.baseModel"), given)
        .otherwise(default)
    )

    def listing(state_id: str, comment: str, bucket: str, prefix: str) -> sfn.CustomState:
        """ListObjectsV2 for one key under a prefix: the answer lands whole at $.found (MaxKeys 1 keeps it small).

        No ResultSelector: botocore s3 2006-03-01 ListObjectsV2Output requires no member, and a ResultSelector path
        that selects nothing (an answer without KeyCount) is a States.Runtime error no Catch takes; the Choice after
        it reads KeyCount only where present (conditions.listed_a_key)."""
        task = _task(
            scope,
            state_id,
            f"{sdk}s3:listObjectsV2",
            Comment=comment,
            Parameters={"Bucket": bucket, "Prefix.$": prefix, "MaxKeys": 1},
            ResultPath="$.found",
        )
        task.add_retry(
            errors=["States.ALL"], interval=RETRY_INTERVAL, max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF
        )
        task.add_catch(targets.failed, errors=["States.ALL"], result_path="$.error")
        return task

    def not_found(state_id: str, cause: str, *paths: str) -> sfn.Pass:
        state = sfn.Pass(
            scope,
            state_id,
            parameters={
                "Error": "InvalidInput",
                "Cause": sfn.JsonPath.format(cause, *(sfn.JsonPath.string_at(p) for p in paths)),
            },
            result_path="$.error",
        )
        state.next(targets.invalid)
        return state

    def found(state_id: str, then: sfn.IChainable, otherwise: sfn.IChainable) -> sfn.Choice:
        return sfn.Choice(scope, state_id).when(listed_a_key("$.found"), then).otherwise(otherwise)

    find_base = listing(
        "FindBaseModel",
        "A job started on an empty model channel would fail only after the instances start",
        targets.data_bucket,
        "States.Format('{}config.json', $.input.baseModelKey)",
    )
    by_key.next(find_base)

    checkpoints = f"s3://{targets.artifacts_bucket}/{CHECKPOINTS_PREFIX}{{}}/"
    own = sfn.Pass(
        scope,
        "UseOwnCheckpoints",
        parameters={"uri": sfn.JsonPath.format(checkpoints, sfn.JsonPath.string_at("$$.Execution.Name"))},
        result_path="$.checkpoints",
    )
    earlier = sfn.Pass(
        scope,
        "UseEarlierCheckpoints",
        parameters={"uri": sfn.JsonPath.format(checkpoints, sfn.JsonPath.string_at(resume))},
        result_path="$.checkpoints",
    )
    find_checkpoints = listing(
        "FindCheckpoints",
        "A resume that finds no checkpoint would silently train from the first step",
        targets.artifacts_bucket,
        # a checkpoint file the program wrote (sft-<step>.pt), not a temporary a killed save left
        f"States.Format('{CHECKPOINTS_PREFIX}{{}}/{SFT_CHECKPOINT_PREFIX}-', {resume})",
    )
    earlier.next(find_checkpoints)
    choose_checkpoints = (
        sfn.Choice(scope, "ChooseCheckpoints").when(sfn.Condition.is_present(resume), earlier).otherwise(own)
    )
    find_base.next(
        found(
            "BaseModelFound",
            choose_checkpoints,
            not_found(
                "NoBaseModel",
                f"no config.json under s3://{targets.data_bucket}/{{}}: upload the base model's Hugging Face files "
                f"(config.json, *.safetensors, tokenizer files) there first, for example with kit l3sm "
                f"{targets.kit_options} start --base-model-dir DIR",
                "$.input.baseModelKey",
            ),
        )
    )
    given.next(choose_checkpoints)
    default.next(choose_checkpoints)

    find = listing(
        "FindTrainingData",
        "A job started on a missing key would fail only after the instances start",
        targets.data_bucket,
        "$.input.trainingKey",
    )
    own.next(find)
    find_checkpoints.next(
        found(
            "CheckpointsFound",
            find,
            not_found(
                "NoCheckpoints",
                f"no checkpoint under s3://{targets.artifacts_bucket}/{CHECKPOINTS_PREFIX}{{}}/: resumeFrom must "
                "name an earlier execution of this pipeline that saved at least one checkpoint",
                resume,
            ),
        )
    )

    request = dict(targets.training_request)
    request["TrainingJobName.$"] = name
    del request["HyperParameters"]
    request["HyperParameters.$"] = "$.baseModel.hyperparameters"
    request["InputDataConfig.$"] = "$.baseModel.channels"
    request["CheckpointConfig"] = {
        "S3Uri.$": "$.checkpoints.uri",
        "LocalPath": request.pop("CheckpointLocalPath"),
    }
    train = _task(
        scope,
        "TrainModel",
        f"arn:{stack.partition}:states:::sagemaker:createTrainingJob.sync",
        Parameters=request,
        ResultSelector={"TrainingJobName.$": "$.TrainingJobName", "TrainingJobArn.$": "$.TrainingJobArn"},
        ResultPath="$.training",
    )
    train.add_catch(targets.failed, errors=["States.ALL"], result_path="$.error")
    # The states from TrainModel on read only the base model and the checkpoint prefix (and what they write
    # themselves): the execution input, up to StartExecution's 256 KiB, is not carried past the checks. With it, a
    # failed job's Cause (up to 32,768 characters: API_ExecutionFailedEventDetails) or a later state's result could
    # push a state over the payload quota, States.DataLimitExceeded, which no Catch catches
    # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html): a paid job's failure
    # would go unnotified.
    keep = sfn.Pass(
        scope,
        "KeepWhatTrainingReads",
        comment="Only what the training job and the import read goes on: not the execution input",
        parameters={
            "baseModel": sfn.JsonPath.object_at("$.baseModel"),
            "checkpoints": sfn.JsonPath.object_at("$.checkpoints"),
        },
    )
    keep.next(train)

    # Every record the job would read, checked before any instance starts (the train channel's S3Prefix on the
    # same key: the function lists and reads exactly the objects the job would copy). Lambda's transient errors
    # are retried (LambdaInvoke's retry_on_service_exceptions, and concurrency throttling), and so is a dataset
    # stream S3 dropped (retry_dropped_streams); any other error is a notified failure.
    validate = tasks.LambdaInvoke(
        scope,
        "ValidateData",
        lambda_function=targets.validator,
        comment="A bad record would otherwise stop the job only after the instances start",
        payload=sfn.TaskInput.from_object(
            {"bucket": targets.data_bucket, "trainingKey": sfn.JsonPath.string_at("$.input.trainingKey")}
        ),
        payload_response_only=True,
        retry_on_service_exceptions=True,
        result_selector={
            "valid": sfn.JsonPath.string_at("$.valid"),
            "records": sfn.JsonPath.number_at("$.records"),
            "files": sfn.JsonPath.number_at("$.files"),
            "problems": sfn.JsonPath.list_at("$.problems"),
            "summary": sfn.JsonPath.string_at("$.summary"),
            "importSlotFree": sfn.JsonPath.string_at("$.importSlot.free"),
            "importSlotSummary": sfn.JsonPath.string_at("$.importSlot.summary"),
        },
        result_path="$.validation",
    )
    retry_lambda_throttling(validate)
    retry_dropped_streams(validate)
    validate.add_catch(targets.failed, errors=["States.ALL"], result_path="$.error")
    invalid_data = sfn.Pass(
        scope,
        "InvalidData",
        parameters={"Error": "InvalidInput", "Cause": sfn.JsonPath.string_at("$.validation.summary")},
        result_path="$.error",
    )
    invalid_data.next(targets.invalid)
    # No room in the imported-models quota (the validator read it): the import would be refused after the paid
    # training job, so the run fails before it, naming the quota and the models that hold it.
    quota_full = sfn.Pass(
        scope,
        "ImportedModelsQuotaFull",
        parameters={
            "Error": "ImportedModelsQuotaFull",
            "Cause": sfn.JsonPath.string_at("$.validation.importSlotSummary"),
        },
        result_path="$.error",
    )
    quota_full.next(targets.failed)
    validate.next(
        sfn.Choice(scope, "DataValid")
        .when(
            sfn.Condition.boolean_equals("$.validation.valid", True),
            sfn.Choice(scope, "ImportSlotFree")
            .when(sfn.Condition.boolean_equals("$.validation.importSlotFree", True), keep)
            .otherwise(quota_full),
        )
        .otherwise(invalid_data)
    )
    find.next(
        found(
            "TrainingDataFound",
            validate,
            not_found(
                "NoTrainingData",
                f"nothing under s3://{targets.data_bucket}/{{}}: upload the JSONL records first",
                "$.input.trainingKey",
            ),
        )
    )

    # Clean-up before any failure after the import started: the model may exist (a failed smoke test) or
    # appear (an import that outlived the wait). DeleteImportedModel takes the name; a model that does not
    # exist answers ResourceNotFoundException, which is the nothing-to-do case.
    delete = _task(
        scope,
        "DeleteImportedModel",
        f"{sdk}bedrock:deleteImportedModel",
        Comment="Leave no imported model behind a failed run",
        Parameters={"ModelIdentifier.$": name},
        ResultPath=sfn.JsonPath.DISCARD,
    )
    delete.add_retry(
        errors=TRANSIENT_BEDROCK, interval=RETRY_INTERVAL, max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF
    )
    delete.add_catch(targets.failed, errors=["States.ALL"], result_path="$.cleanupError")
    delete.next(targets.failed)

    start_import = _task(
        scope,
        "ImportModel",
        f"{sdk}bedrock:createModelImportJob",
        Parameters={
            "JobName.$": name,
            "ImportedModelName.$": name,
            # A retry below may resend a call that already created the job: Bedrock ignores a request whose token
            # it has seen instead of refusing the job name (botocore bedrock CreateModelImportJobRequest
            # clientRequestToken), so the run goes on with that job rather than fail and leave its model behind.
            "ClientRequestToken.$": name,
            "RoleArn": targets.import_role_arn,
            # The stack's tags on the import job and the imported model (stage.run_tags; botocore bedrock
            # CreateModelImportJobRequest jobTags, importedModelTags).
            "JobTags": run_tags(scope, "bedrock", "CreateModelImportJob", "jobTags"),
            "ImportedModelTags": run_tags(scope, "bedrock", "CreateModelImportJob", "importedModelTags"),
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri.$": (
                        f"States.Format('s3://{targets.artifacts_bucket}/{OUTPUT_PREFIX}{{}}{MERGED_SUFFIX}', "
                        "$.training.TrainingJobName)"
                    )
                }
            },
        },
        ResultSelector={"jobArn.$": "$.JobArn"},
        ResultPath="$.import",
    )
    # Bedrock runs one import job at a time per Region, and the quota is not adjustable ("Concurrent model import
    # jobs", each supported Region: 1, https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock):
    # a run whose training ends while another import runs is refused with ServiceQuotaExceededException. It waits
    # for the slot as the Bedrock path waits for a customization-job slot, instead of failing after its paid job.
    # The same error is the IMPORTED_MODELS_QUOTA quota (3 by default, adjustable), which waiting does not
    # free: ImportNotConfirmed then names it.
    start_import.add_retry(
        errors=["Bedrock.ServiceQuotaExceededException"],
        interval=QUOTA_RETRY_INTERVAL,
        max_attempts=QUOTA_RETRY_ATTEMPTS,
        backoff_rate=1.0,
    )
    # Retried as long as the Bedrock path's calls (about 15 minutes): a retry resends the token, so it is safe.
    retry_throttling(start_import, TRANSIENT_BEDROCK)

    def not_watched(state_id: str, what: str) -> sfn.Pass:
        """The caught error, its Cause prefixed with what the run leaves behind: the import job may go on (or,
        for a create whose answer was lost, exist) and create the model after the run deleted it by name."""
        state = sfn.Pass(
            scope,
            state_id,
            parameters={
                "Error.$": "$.error.Error",
                # Cause is not always present in an error output: the whole output, as JSON text.
                "Cause.$": (
                    f"States.Format('{what}; the import job {{}} may exist and still be running, and Bedrock "
                    "cannot stop it: the run deleted the model {} by name; if the job creates it later, delete it "
                    f"(kit l3sm {targets.kit_options} status {{}} shows it; aws bedrock delete-imported-model "
                    f"--region {Stack.of(scope).region} --model-identifier {{}}). Error: {{}}', "
                    f"{name}, {name}, $$.Execution.Name, {name}, States.JsonToString($.error))"
                ),
            },
            result_path="$.error",
        )
        state.next(delete)
        return state

    start_import.add_catch(
        not_watched(
            "ImportNotConfirmed",
            "CreateModelImportJob failed after its retries (a ServiceQuotaExceededException that lasted "
            f"{IMPORT_SLOT_WAIT.to_hours():g} hours is the imported-models quota of the Region, Service Quotas "
            f"{IMPORTED_MODELS_QUOTA_CODE}: delete an imported model or raise it)",
        ),
        errors=["States.ALL"],
        result_path="$.error",
    )
    train.next(start_import)

    count = sfn.Pass(scope, "StartPolling", parameters={"count": 0}, result_path="$.polls")
    wait = sfn.Wait(scope, "WaitForImport", time=sfn.WaitTime.duration(Duration.seconds(POLL_SECONDS)))
    get = _task(
        scope,
        "GetImportJob",
        f"{sdk}bedrock:getModelImportJob",
        Parameters={"JobIdentifier.$": "$.import.jobArn"},
        ResultPath="$.importJob",
    )
    # Throttling and server errors get the Bedrock path's poll budget (about 15 minutes), then any other error a
    # few minutes (retry_task_errors). Only the first retrier that names an error retries it; once its attempts
    # are spent the Catch decides, the later States.TaskFailed retrier is not consulted
    # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
    retry_throttling(get, TRANSIENT_BEDROCK)
    retry_task_errors(get)
    get.add_catch(
        not_watched("ImportNotWatched", "GetModelImportJob failed after its retries"),
        errors=["States.ALL"],
        result_path="$.error",
    )
    counted = sfn.Pass(
        scope,
        "CountPoll",
        parameters={"count": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.polls.count"), 1)},
        result_path="$.polls",
    )
    import_failed = sfn.Pass(
        scope,
        "ImportFailed",
        parameters={
            "Error": "ModelImportFailed",
            "Cause": sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.importJob")),
        },
        result_path="$.error",
    )
    timed_out = sfn.Pass(
        scope,
        "ImportTimedOut",
        parameters={
            "Error": "ModelImportTimedOut",
            "Cause": sfn.JsonPath.format(
                "the import job {} was still in progress after {} polls; Bedrock cannot stop it: the run deleted the "
                f"model by name, and the teardown waits up to {IMPORT_WAIT_MINUTES} minutes for the job to end and "
                "deletes its model; if it reports the job still running, delete the model it creates",
                sfn.JsonPath.string_at("$.import.jobArn"),
                sfn.JsonPath.string_at("$.polls.count"),
            ),
        },
        result_path="$.error",
    )
    # A completed job whose answer names no ImportedModelArn (botocore bedrock 2023-04-20 GetModelImportJobResponse
    # requires no member) cannot be smoke-tested: InvokeModel takes an imported model by its ARN only (botocore
    # bedrock-runtime InvokeModelRequest modelId: "If you use an imported model, specify the ARN of the imported
    # model"). It is a notified failure, and DeleteImportedModel removes the model by the name the run gave it
    # (botocore bedrock DeleteImportedModelRequest modelIdentifier: "Name of the imported model to delete").
    no_model_arn = sfn.Pass(
        scope,
        "ImportNamesNoModel",
        parameters={
            "Error": "ImportedModelArnMissing",
            "Cause.$": (
                "States.Format('the import job {} completed but its answer names no ImportedModelArn, so the model "
                "was not smoke-tested; the run deleted the model {} by name. The answer: {}', "
                f"$.import.jobArn, {name}, States.JsonToString($.importJob))"
            ),
        },
        result_path="$.error",
    )
    smoke = _task(
        scope,
        "SmokeTest",
        f"arn:{stack.partition}:states:::bedrock:invokeModel",
        Comment="One tiny request: the imported model loads and answers",
        Parameters={
            "ModelId.$": IMPORTED_MODEL_ARN,  # present: ImportDone checked it
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": SMOKE_BODY,
        },
        ResultSelector={"reply.$": "$.Body"},
        ResultPath="$.smoke",
    )
    smoke.add_retry(
        errors=["Bedrock.ModelNotReadyException", *TRANSIENT_BEDROCK],
        interval=SMOKE_RETRY_INTERVAL,
        max_attempts=SMOKE_RETRY_ATTEMPTS,
        backoff_rate=RETRY_BACKOFF,
    )
    # The Step Functions Bedrock page names no errors for invokeModel, so the name above follows the pattern of
    # the other optimized integrations. Any other task error is retried the same way before the catch deletes
    # the model: a model that is still loading must not be deleted because its error has another name.
    smoke.add_retry(
        errors=["States.TaskFailed"],
        interval=SMOKE_RETRY_INTERVAL,
        max_attempts=SMOKE_RETRY_ATTEMPTS,
        backoff_rate=RETRY_BACKOFF,
    )
    smoke.add_catch(delete, errors=["States.ALL"], result_path="$.error")
    smoke.next(targets.succeeded)
    import_failed.next(delete)
    no_model_arn.next(delete)
    timed_out.next(delete)
    start_import.next(count)
    count.next(wait)
    wait.next(get)
    get.next(counted)
    # botocore bedrock 2023-04-20 GetModelImportJobResponse requires no member, status included: a comparison on an
    # absent path is a States.Runtime error no Catch takes, so Status is compared only where present (as the
    # Bedrock path's JobStatus?), and an answer without it is polled again, within the same bound.
    completed = [sfn.Condition.is_present(IMPORT_STATUS), sfn.Condition.string_equals(IMPORT_STATUS, "Completed")]
    counted.next(
        sfn.Choice(scope, "ImportDone")
        .when(sfn.Condition.and_(*completed, sfn.Condition.is_present(IMPORTED_MODEL_ARN)), smoke)
        .when(sfn.Condition.and_(*completed), no_model_arn)
        .when(equals_where_present(IMPORT_STATUS, "Failed"), import_failed)
        .when(sfn.Condition.number_greater_than_equals("$.polls.count", targets.max_polls), timed_out)
        .otherwise(wait)
    )
    return start
