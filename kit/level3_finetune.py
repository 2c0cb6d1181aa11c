"""Level 3, fine-tuning: ``kit l3 …`` validates training data offline with the pipeline's own validator,
starts the GenAiKit-3-FineTune state machine (uploading the data first if asked) and follows an execution.
``kit l3sm …`` does the same for the SageMaker path (GenAiKit-3-FineTune-SageMaker: a LoRA training job, then
Bedrock Custom Model Import) and asks the imported model. The ``kit doctor`` checks: the base model can be
customized in the region, the distillation teacher (with DISTILLATION), the Bedrock quota on customization jobs at
once, and (with ft_deploy=provisioned) the Provisioned Throughput model units, across custom models and of the base
model; for the SageMaker path (``--level 3sm``), a free slot in the Bedrock quota on imported models."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from finetune_validate import formats
from finetune_validate.formats import CUSTOMIZATION_TYPES, DISTILLATION
from kit import aws
from kit.aws import KitError, KitUsageError, Target
from kit.doctor import (
    FIX,
    LEVELS,
    MODEL_ACCESS_FIX,
    OK,
    SKIP,
    Check,
    Needs,
    QuotaBook,
    check_model_ref_access,
    guarded,
    increase,
    lifecycle,
    quota_rows,
    quota_unreadable,
    training_job_limits,
    training_job_quota,
)
from kit.operator import (
    EXECUTION_NAME,
    FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT,
    check_object_keys,
    check_resumable,
    compact,
    console,
    current_target,
    deployed_name_prefix,
    describe_existing,
    execution_arn,
    execution_name,
    finish,
    follow_execution,
    json_object,
    kv_table,
    print_execution,
    remember_target,
    resumed_root,
    show_status,
    start_run,
    target_options,
    upload_file,
    wait_options,
)
from stacks.level3_finetune.names import (
    CHECKPOINTS_PREFIX,
    DATASETS_PREFIX,
    HUB_ID,
    IMPORTED_MODELS_QUOTA,
    IMPORTED_MODELS_QUOTA_CODE,
    MODELS_PREFIX,
    QUOTA_RETRY_ATTEMPTS,
    QUOTA_RETRY_MINUTES,
    execution_hash,
)
from workloads.finetune_sagemaker.chat_records import TEXT_ERRORS, is_blank, line_problem
from workloads.finetune_sagemaker.chat_records import record_problem as sm_record_problem  # noqa: F401 (the rules)

if TYPE_CHECKING:  # the settings (and pydantic) load when a command needs them, not at import
    from stacks.shared.settings import ModelRef


# The IAM actions the `kit l3` and `kit l3sm` commands call with the operator's credentials (the README's "Operator
# permissions"); tests/kit/test_operator_permissions.py derives them from the code and compares.
OPERATOR_ACTIONS: dict[str, tuple[str, ...]] = {
    "l3": (
        "cloudformation:DescribeStacks",
        "s3:PutObject",
        "states:DescribeExecution",
        "states:DescribeStateMachine",
        "states:GetExecutionHistory",
        "states:ListExecutions",
        "states:StartExecution",
    ),
    "l3sm": (
        "bedrock:GetImportedModel",
        "bedrock:GetModelImportJob",
        "bedrock:InvokeModel",
        "cloudformation:DescribeStacks",
        "s3:PutObject",
        "sagemaker:DescribeTrainingJob",
        "states:DescribeExecution",
        "states:DescribeStateMachine",
        "states:GetExecutionHistory",
        "states:ListExecutions",
        "states:StartExecution",
    ),
}
# What no call in the code shows: the Level 3 data bucket is encrypted with the stack's KMS key
# (stacks/level3_finetune/data.py), so an upload to it needs the key for SSE-KMS, and kms:Decrypt too for the
# multipart upload boto3 makes of a file over 8 MB:
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html#mpuAndPermissions
OPERATOR_IMPLIED: dict[str, dict[str, str]] = {
    "l3": {
        "kms:GenerateDataKey": "kit l3 start --upload: the data bucket's KMS key (SSE-KMS)",
        "kms:Decrypt": "kit l3 start --upload of a file over 8 MB (multipart upload under SSE-KMS)",
    },
}


@click.group()
@target_options
@click.pass_context
def l3(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 3, fine-tuning: validate data locally, start the pipeline, follow it."""
    remember_target(ctx, stage, region, profile, context_pairs)


def _validator() -> Any:
    """The Level 3 validator package (finetune_validate), the same code the pipeline runs: the record checks and
    the request rules its ValidateData applies (finetune_validate.validator)."""
    aws.checkout()  # the checkout this command runs in is the one the validator is imported from
    import finetune_validate.__main__ as command

    return command


def _validate_locally(
    training: str,
    validation: str | None,
    base_model: str,
    hyperparameters: Mapping[str, Any],
    customization_type: str = "FINE_TUNING",
    teacher_model_id: str | None = None,
    media_prefix: str | None = None,
    teacher_source: str = "--teacher-model",
) -> tuple[bool, str]:
    """(valid, the validator's human-readable report). ``teacher_model_id``: the run's teacher (_pipeline_rules);
    ``media_prefix``: where the records' images and videos must be (None: not checked); ``teacher_source``: where
    that teacher came from, named when the validator refuses it (_teacher_source)."""
    command = _validator()
    from finetune_validate.formats import UnsupportedBaseModel, UnsupportedCustomizationType
    from finetune_validate.validator import validate_files

    try:
        report = validate_files(
            training,
            base_model_id=base_model,
            validation_path=validation,
            hyperparameters=hyperparameters,
            customization_type=customization_type,
            teacher_model_id=teacher_model_id,
            media_prefix=media_prefix,
        )
    except UnsupportedBaseModel as exc:
        raise KitUsageError(f"--base-model: {exc}") from None
    except UnsupportedCustomizationType as exc:  # the type, or with an offered type the teacher
        offered = formats.check_customization_type(customization_type, formats.resolve_model(base_model)) is None
        option = teacher_source if offered and teacher_model_id is not None else "--customization-type"
        raise KitUsageError(f"{option}: {exc}") from None
    return bool(report["valid"]), str(command.render(report, training, validation, command.SHOWN_PER_KIND))


def _teacher_source(teacher_model: str | None) -> str:
    """Where a run's teacher comes from: the option, or the configured teacher the state machine gives a run
    without one (defaultTeacherModelId)."""
    return "--teacher-model" if teacher_model is not None else "ft_teacher_model_id"


def _pipeline_rules(
    ft: Any, model: str, kind: str, teacher_model: str | None, validation: str | None, region: str
) -> str | None:
    """Refuse (KitUsageError) what the pipeline's ValidateData refuses before it reads the data, with the functions
    it calls (finetune_validate.validator): a teacher for another type than DISTILLATION, or a DISTILLATION without
    one; a run's own teacher the customization role may not invoke (the stack's invocableTeacherModelIds,
    ft.invocable_teachers, in ``region``); with ft_deploy on-demand, a base model that deployment cannot serve; a
    validation file (``validation``: the option that names it) for a type the pipeline passes none to. Returns the
    run's teacher: its own, else ft_teacher_model_id (DISTILLATION), as the state machine gives it
    (defaultTeacherModelId)."""
    _validator()
    from finetune_validate.formats import UnsupportedBaseModel
    from finetune_validate.validator import (
        RequestRefused,
        on_demand_problem,
        run_teacher,
        teacher_invocable_problem,
        validation_set_problem,
    )

    try:
        teacher = run_teacher(
            kind, teacher_model, ft.teacher_model_id, missing="give --teacher-model ID or set ft_teacher_model_id"
        )
    except RequestRefused as exc:
        raise KitUsageError(f"--teacher-model {exc.problem}") from None
    # As the state machine passes invocableTeacherModelIds (stacks/level3_finetune/pipeline.py ValidateData).
    invocable = ft.invocable_teachers
    if teacher_model is not None and (problem := teacher_invocable_problem(teacher_model, invocable, region)):
        raise KitUsageError(f"--teacher-model: {problem}")
    if ft.deploy == "on-demand":  # the state machine's onDemandDeploy
        try:
            problem = on_demand_problem(model)
        except UnsupportedBaseModel as exc:
            raise KitUsageError(f"--base-model: {exc}") from None
        if problem is not None:
            raise KitUsageError(f"--base-model: {problem}")
    if validation is not None and (problem := validation_set_problem(kind)) is not None:
        raise KitUsageError(f"{validation}: {problem}")
    return teacher


def configured_hyperparameters(ft: Any, kind: str) -> dict[str, Any]:
    """The configured hyperparameters (ft_hyperparameters) for a run of ``kind``: they belong to the configured
    customization type, so a run of another type starts from none."""
    return dict(ft.hyperparameters) if kind == ft.customization_type else {}


@l3.command()
@click.argument("training", type=click.Path(exists=True, dir_okay=False), metavar="FILE")
@click.option("--base-model", metavar="ID", help="The customization base model (default: ft_base_model_id).")
@click.option("--validation", type=click.Path(exists=True, dir_okay=False), metavar="FILE", help="A validation file.")
@click.option("--hyperparameters", metavar="JSON", help="A JSON object of strings (default: ft_hyperparameters).")
@click.option("--customization-type", type=click.Choice(CUSTOMIZATION_TYPES), help="Default: ft_customization_type.")
@click.option(
    "--teacher-model",
    metavar="ID",
    help="DISTILLATION: the teacher (default: ft_teacher_model_id; checked against the base model).",
)
@click.option(
    "--data-bucket",
    metavar="NAME",
    help="The stack's DataBucketName: also check that every image or video is under s3://NAME/datasets/ "
    "(kit l3 start --upload always does).",
)
def validate(
    training: str,
    base_model: str | None,
    validation: str | None,
    hyperparameters: str | None,
    customization_type: str | None,
    teacher_model: str | None,
    data_bucket: str | None,
) -> None:
    """Check a JSON Lines training file offline, with the pipeline's own validator and request rules (exit 1 if
    invalid). Images and videos are checked against the data bucket only with --data-bucket."""
    target = current_target()
    ft = target.config.finetune
    model = base_model or ft.base_model_id
    params = json_object(hyperparameters, "--hyperparameters", '{"epochCount": "2"}')
    kind = customization_type or ft.customization_type
    # A validation file for a type the pipeline passes none to is reported as invalid data (validation_not_allowed).
    teacher = _pipeline_rules(ft, model, kind, teacher_model, None, target.region)
    media = _media_prefix(_bucket_name(data_bucket, "--data-bucket")) if data_bucket is not None else None
    hyper = params if params is not None else configured_hyperparameters(ft, kind)
    source = _teacher_source(teacher_model)
    valid, text = _validate_locally(training, validation, model, hyper, kind, teacher, media, source)
    click.echo(text)
    if not valid:
        click.get_current_context().exit(1)


def upload_key(run: str, path: str) -> str:
    """Where a start uploads a file: datasets/<its execution name>/<file name>, a key no other start writes. A job
    reads its data long after the start validated it (a Bedrock job may wait hours for a slot, a spot training job
    for capacity), its S3 URI names no object version, and S3 GETs the current one
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/RetrievingObjectsfromVersioningSuspendedBuckets.html):
    a later upload to a shared key would change what an earlier run trains on."""
    return f"{DATASETS_PREFIX}{run}/{Path(path).name}"


def _media_prefix(bucket: str) -> str:
    """Where the pipeline requires a record's images and videos: s3://<data bucket>/datasets/ (its datasetsPrefix)."""
    _validator()
    from finetune_validate.validator import readable_media_prefix

    return str(readable_media_prefix(bucket, DATASETS_PREFIX))


def _bucket_name(bucket: str, option: str) -> str:
    """``bucket`` if it is a bucket name, as the pipeline's ValidateData takes one (common.s3.BUCKET_NAME,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html); else a usage error, not a
    normalised guess: an S3 URI or a trailing / would put every image or video outside it."""
    _validator()
    from common.s3 import BUCKET_NAME

    if BUCKET_NAME.fullmatch(bucket) is None:
        shown = bucket[:80].encode("unicode_escape").decode("ascii")
        raise KitUsageError(
            f"{option} takes a bucket name, the stack's DataBucketName (e.g. my-bucket, not s3://my-bucket or "
            f"my-bucket/), got '{shown}'"
        )
    return bucket


def _dataset_key(key: str, option: str) -> str:
    if not key.startswith(DATASETS_PREFIX) or key == DATASETS_PREFIX:
        raise KitUsageError(f"{option} must be a key under {DATASETS_PREFIX} (the only prefix the job may read)")
    return key


@l3.command()
@click.option("--training-key", metavar="KEY", help="The training file's key in the data bucket (datasets/...).")
@click.option("--validation-key", metavar="KEY", help="The validation file's key (datasets/...).")
@click.option(
    "--upload",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Validate and upload FILE to datasets/<execution name>/ first.",
)
@click.option(
    "--upload-validation",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Upload a validation FILE to datasets/<execution name>/ first.",
)
@click.option("--base-model", metavar="ID", help="The base model (default: the stack's ft_base_model_id).")
@click.option("--customization-type", type=click.Choice(CUSTOMIZATION_TYPES), help="Default: ft_customization_type.")
@click.option(
    "--teacher-model",
    metavar="ID",
    help="DISTILLATION: the teacher (default: ft_teacher_model_id; checked against the base model).",
)
@click.option(
    "--hyperparameters",
    metavar="JSON",
    help="A JSON object of strings; replaces the defaults (none are sent for another type than ft_customization_type).",
)
@click.option("--wait", is_flag=True, help="Follow the execution until it ends.")
@wait_options(timeout_s=None, poll_s=30, timeout_default=FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT)
def start(
    training_key: str | None,
    validation_key: str | None,
    upload: str | None,
    upload_validation: str | None,
    base_model: str | None,
    customization_type: str | None,
    teacher_model: str | None,
    hyperparameters: str | None,
    wait: bool,
    timeout: int | None,
    poll_seconds: float,
) -> None:
    """Start the fine-tuning pipeline (StartExecution) with a job request.

    The request is checked first against the pipeline's request rules (the teacher, the validation set's type, the
    on-demand deployment's base models). With --upload the data is validated locally, with the pipeline's
    validator and media location, before anything is uploaded; the pipeline validates it again. A DISTILLATION run
    without data distills from the account's invocation logs (ft_distillation_source invocation-logs).
    """
    target = current_target()
    ft = target.config.finetune
    kind = customization_type or ft.customization_type
    validation_option = "--upload-validation" if upload_validation else "--validation-key" if validation_key else None
    teacher = _pipeline_rules(ft, base_model or ft.base_model_id, kind, teacher_model, validation_option, target.region)
    run = execution_name()  # also the folder of the files it uploads
    training_key = training_key or (upload_key(run, upload) if upload else None)
    from_logs = training_key is None and kind == "DISTILLATION" and ft.distillation_source == "invocation-logs"
    if not training_key and not from_logs:
        raise KitUsageError("give --training-key KEY (under datasets/) or --upload FILE")
    if training_key:
        _dataset_key(training_key, "--training-key")
    if upload_validation and not validation_key:
        validation_key = upload_key(run, upload_validation)
    if validation_key:
        _dataset_key(validation_key, "--validation-key")
    params = json_object(hyperparameters, "--hyperparameters", '{"epochCount": "2"}')
    if base_model:
        try:
            _validator()
            from finetune_validate.formats import UnsupportedBaseModel, resolve_model

            resolve_model(base_model)
        except UnsupportedBaseModel as exc:
            raise KitUsageError(f"--base-model: {exc}") from None
    outputs = target.outputs("3")
    name = target.stack_name("3")
    machine = aws.require_output(outputs, "StateMachineArn", name)
    out = console()
    model = base_model or ft.base_model_id
    bucket = aws.require_output(outputs, "DataBucketName", name) if training_key or validation_key else ""
    if training_key or validation_key:
        _validator()
        from finetune_validate.formats import check_data_key, resolve_model

        # A key the job would refuse (for Amazon Nova, a file name with characters it does not take) stops here,
        # before anything is uploaded or started, with the validator's own message: ValidateData applies it to
        # every key, given or uploaded (handler.parse_request).
        family = resolve_model(model).family
        for option, key in (("--training-key", training_key), ("--validation-key", validation_key)):
            if key and (problem := check_data_key(bucket, key, family)):
                raise KitUsageError(f"{option}: {problem}")
    if upload or upload_validation:
        hyper = params if params is not None else configured_hyperparameters(ft, kind)
        if upload:
            media = _media_prefix(bucket)  # as the state machine passes datasetsPrefix
            source = _teacher_source(teacher_model)
            valid, text = _validate_locally(upload, upload_validation, model, hyper, kind, teacher, media, source)
            if not valid:
                click.echo(text)
                raise KitError("the data is invalid: nothing was uploaded or started")
        for path, key in ((upload, training_key), (upload_validation, validation_key)):
            if path and key:
                out.print(Text(f"uploaded {upload_file(target, Path(path), bucket, key)}"))
    if params is None and kind != ft.customization_type:
        params = configured_hyperparameters(ft, kind)  # {} for another type, as the state machine gives it too
    request: dict[str, Any] = {}
    optional = {
        "trainingKey": training_key,
        "validationKey": validation_key,
        "baseModelId": base_model,
        "customizationType": customization_type,
        "teacherModelId": teacher_model,
        "hyperparameters": params,
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    sfn = target.client("stepfunctions")
    arn = start_run(target, sfn, machine, run, json.dumps(request), "starting the fine-tuning pipeline", "l3")
    out.print(Text(f"started {arn}"))
    out.print(Text(f"request {json.dumps(request)}", style="dim"))
    follow = target.kit_command("l3", f"status {arn} --wait")
    if not wait:
        out.print(Text(f"Follow it with: {follow}", style="dim"))
        return
    final = follow_execution(out, sfn, arn, timeout=timeout, poll_seconds=poll_seconds, resume_hint=follow)
    finish(print_execution(out, sfn, arn, final))


@l3.command()
@click.argument("execution", required=False, metavar="[EXECUTION_ARN]")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends (exit 1 unless it succeeds).")
@wait_options(timeout_s=None, poll_s=30, timeout_default=FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT)
def status(execution: str | None, wait: bool, timeout: int | None, poll_seconds: float) -> None:
    """Summarize a pipeline execution (default: the newest): status, states visited, error or output."""
    show_status(
        "3",
        execution,
        group="l3",
        wait=wait,
        timeout=timeout,
        poll_seconds=poll_seconds,
        start_hint="start --upload FILE",
    )


# --- kit doctor ---------------------------------------------------------------------------------------------

# The no-commitment Provisioned Throughput (stacks/level3_finetune/pipeline.py) buys 1 model unit. Units must be
# granted before a purchase (https://docs.aws.amazon.com/bedrock/latest/userguide/prov-thru-purchase.html); for a
# custom model they count against this Bedrock quota (listed at https://docs.aws.amazon.com/general/latest/gr/bedrock.html).
PT_MODEL_UNITS_QUOTA = "Model units no-commitment Provisioned Throughputs across custom models"
PT_MODEL_UNITS = 1  # per run: runs whose throughputs overlap (each kept ft_provisioned_hours) need one each
# The purchase also needs units of the base model's own quota, adjustable and 0 by default for many models; without
# them CreateProvisionedModelThroughput fails (ServiceQuotaExceededException) after the paid customization job.
# AWS names it per model (the quota table, https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock;
# "check ... Model units per provisioned model for [your model]", https://aws.amazon.com/blogs/machine-learning/
# llm-as-a-judge-on-amazon-bedrock-model-evaluation/), older models one way, newer ones the other.
BASE_MODEL_UNITS_PREFIXES = (
    ("no-commitment", "no-commitment model units for provisioned throughput created for base model "),
    ("per model", "model units per provisioned model for "),
)
# The kit starts one Bedrock customization job per state-machine execution.
CUSTOMIZATION_JOBS_NEEDED = 1
CUSTOMIZATION_JOBS_ROW = "Quota: Bedrock customization jobs at once"
# The SageMaker path (GenAiKit-3-FineTune-SageMaker) imports one model per run with Bedrock Custom Model Import, and a
# successful run keeps it. Imported models count against Bedrock's "Imported models per account" quota, whoever
# imported them (names.IMPORTED_MODELS_QUOTA; its code is named only when Service Quotas lists no quota of that
# name). A full quota refuses
# CreateModelImportJob (ServiceQuotaExceededException) after the paid training job: the pipeline retries for hours,
# then fails naming the quota (stacks/level3_finetune/sagemaker_pipeline.py ImportNotConfirmed). "Enough" is therefore
# 1 free slot: the quota's value minus the models already imported in the Region, counted with ListImportedModels
# (every page). An import job still running is not counted until it creates its model.
IMPORTED_MODELS_NEEDED = 1
IMPORTED_MODELS_ROW = "Quota: Bedrock imported models"
IMPORTED_MODELS_SHOWN = 3  # the imported models a FIX row names (the ones to delete)


# Where the models each type can customize are listed, for a type the API cannot check (below).
CUSTOMIZATION_DOCS = {
    "REINFORCEMENT_FINE_TUNING": "https://docs.aws.amazon.com/bedrock/latest/userguide/reinforcement-fine-tuning.html",
}
CUSTOMIZATION_DOC = "https://docs.aws.amazon.com/bedrock/latest/userguide/custom-models.html"


def filterable_customization_types(bedrock: Any) -> tuple[str, ...]:
    """The types ListFoundationModels can filter on: its byCustomizationType enum (ModelCustomization) in the
    installed botocore model. It lacks REINFORCEMENT_FINE_TUNING, which CreateModelCustomizationJob accepts; a value
    outside it is not one the API defines (botocore does not check enums, the service may refuse it), so another
    type is checked by listing every model instead."""
    members = bedrock.meta.service_model.operation_model("ListFoundationModels").input_shape.members
    shape = members.get("byCustomizationType")
    return tuple(getattr(shape, "enum", None) or ())


def check_customization(target: Target) -> Check:
    """The configured base model is offered for the configured customization type in the region."""
    from botocore.exceptions import ClientError

    ft = target.config.finetune
    kind = ft.customization_type
    name = f"Customization: {ft.base_model_id}"
    ids = {ft.base_model_id, ft.foundation_model_id}

    def run() -> Check:
        bedrock = target.client("bedrock")
        filterable = filterable_customization_types(bedrock)
        try:
            if kind in filterable:
                answer = bedrock.list_foundation_models(byCustomizationType=kind)
            else:
                answer = bedrock.list_foundation_models()
        except ClientError as exc:
            if aws.is_access_denied(exc):
                return Check(
                    name, FIX, f"may not list Bedrock models (bedrock:ListFoundationModels): {MODEL_ACCESS_FIX}"
                )
            raise
        # botocore bedrock 2023-04-20 ListFoundationModelsResponse does not require modelSummaries: none listed.
        listed = [m for m in answer.get("modelSummaries") or [] if str(m["modelId"]) in ids]
        if not listed:
            offered = f"{kind} of {ft.foundation_model_id} is" if kind in filterable else f"{ft.foundation_model_id} is"
            return Check(
                name,
                FIX,
                f"{offered} not offered in {target.region}: "
                "set ft_base_model_id to a model customizable there (or change region)",
            )
        supported = sorted({str(c) for m in listed for c in m.get("customizationsSupported") or []})
        if kind in filterable or kind in supported:
            row = Check(name, OK, f"{kind} is offered for it in {target.region}")
        else:
            doc = CUSTOMIZATION_DOCS.get(kind, CUSTOMIZATION_DOC)
            row = Check(
                name,
                SKIP,
                f"{ft.foundation_model_id} is offered in {target.region}, but Bedrock's model listing cannot say "
                f"whether {kind} is (it names {', '.join(supported) or 'no customization'}): check the model and "
                f"region in {doc}",
            )
        # The listing's FoundationModelSummary carries the base model's modelLifecycle (botocore bedrock
        # 2023-04-20): a base model that turned Legacy or reached its end of life since the kit's model table
        # (finetune_validate.formats) was written is a WARN or FIX row, not OK.
        return lifecycle(row, ft.foundation_model_id, "ft_base_model_id", listed[0])

    return guarded(name, "listing customizable models", target, run)


def bedrock_quota_needs(target: Target) -> dict[str, int]:
    """Bedrock quotas known by name -> what the configuration needs (model units with ft_deploy=provisioned)."""
    return {PT_MODEL_UNITS_QUOTA: PT_MODEL_UNITS} if target.config.finetune.deploy == "provisioned" else {}


# Words of a quota name that say it counts jobs at once (running, waiting or submitted).
AT_ONCE_WORDS = ("concurrent", "in progress", "in-progress", "scheduled", "submitted")
# The word a Bedrock quota name would use for the jobs of a type the kit runs that may have quotas of its own.
TYPE_WORDS = {"DISTILLATION": "distillation", "REINFORCEMENT_FINE_TUNING": "reinforcement"}


def _is_customization_jobs_quota(name: str) -> bool:
    """A Bedrock quota on how many model customization jobs may run (or wait) at once, whatever their type.

    Bedrock limits concurrent customization jobs per account, but its quota table
    (https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock) is the reference for the exact
    names, which vary by job kind: the quota is found by what its name says, not by a hard-coded name or code.
    A quota naming distillation or reinforcement fine-tuning binds only that type's jobs: ``_jobs_quotas_for``
    adds it when the kit runs that type (ft_customization_type).
    """
    if "customization job" not in name or any(word in name for word in ("record", *TYPE_WORDS.values())):
        return False
    return any(word in name for word in AT_ONCE_WORDS)


def _jobs_quotas_for(kind: str) -> Callable[[str], bool]:
    """The quotas on jobs at once a job of ``kind`` counts against: the general ones, and those naming its type."""
    word = TYPE_WORDS.get(kind)

    def wanted(name: str) -> bool:
        if _is_customization_jobs_quota(name):
            return True
        own = word is not None and word in name and "job" in name and "record" not in name
        return own and any(at_once in name for at_once in AT_ONCE_WORDS)

    return wanted


def check_customization_jobs(target: Target, book: QuotaBook) -> Check:
    """The Bedrock quota on customization jobs at once must admit the kit's job."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = CUSTOMIZATION_JOBS_ROW
    region = target.region
    try:
        quotas = book.matching("bedrock", _jobs_quotas_for(target.config.finetune.customization_type))
    except (BotoCoreError, ClientError) as exc:
        return Check(name, FIX, quota_unreadable(exc, "bedrock", target))
    if not quotas:
        return Check(
            name,
            SKIP,
            f"Service Quotas lists no Bedrock quota on concurrent model customization jobs in {region}: "
            "look it up in Service Quotas > Amazon Bedrock (jobs already running count against it)",
        )
    return _bedrock_quota_check(
        name,
        target,
        quotas,
        CUSTOMIZATION_JOBS_NEEDED,
        f"the kit runs {CUSTOMIZATION_JOBS_NEEDED} job at a time",
        f"the kit runs {CUSTOMIZATION_JOBS_NEEDED} job per execution; jobs already running count against it",
    )


def _bedrock_quota_check(
    name: str, target: Target, quotas: list[tuple[str, float, str]], needed: int, fix_why: str, ok_why: str
) -> Check:
    """FIX naming the first quota below ``needed`` (with the increase request), else OK listing them all."""
    low = [(quota, value, code) for quota, value, code in quotas if value < needed]
    if low:
        quota, value, code = low[0]
        detail = f"{quota!r} ({code}) is {value:g}, {fix_why}: "
        return Check(name, FIX, detail + increase("bedrock", quota, code, needed, target))
    shown = "; ".join(f"{quota!r} ({code}) = {value:g}" for quota, value, code in quotas)
    return Check(name, OK, f"{shown} ({ok_why})")


def base_model_units_row(target: Target) -> str:
    return f"Quota: Provisioned Throughput model units for {formats.MODELS[target.config.finetune.base_model_id].name}"


def _units_quota_model(name: str) -> tuple[str, str, str | None] | None:
    """(kind, model, context length) a lower-case quota name on a base model's Provisioned Throughput units names,
    e.g. "model units per provisioned model for the 128k context length variant for amazon nova micro" ->
    ("per model", "amazon nova micro", "128k"); "... created for base model amazon nova 2 lite v1.0 256k" ->
    ("no-commitment", "amazon nova 2 lite", "256k"). None for another quota."""
    kind, model = next(((k, name[len(p) :]) for k, p in BASE_MODEL_UNITS_PREFIXES if name.startswith(p)), ("", ""))
    if not kind:
        return None
    context = None
    variant = re.fullmatch(r"the (\d+k) context length variant for (.+)", model)
    if variant:
        context, model = variant.group(1), variant.group(2)
    words = model.split()
    if words and re.fullmatch(r"\d+k", words[-1]):
        context = words.pop()
    if words and re.fullmatch(r"v\d+(\.\d+)*", words[-1]):
        words.pop()
    return kind, " ".join(words), context


def base_model_units_quotas(
    quotas: list[tuple[str, float, str]], model_name: str, context: str | None
) -> list[tuple[str, float, str]]:
    """The quotas among ``quotas`` on the Provisioned Throughput units of the base model called ``model_name``
    (the model table's name; older quota names leave out the provider) with ``context`` (the base model id's
    suffix, e.g. 128k). A quota naming another context length is another variant's; one naming our own is preferred
    to one naming none, and a no-commitment quota (what the kit buys) to a per-model one."""
    names = {model_name.lower(), model_name.lower().split(" ", 1)[-1]}
    found = []
    for quota in quotas:
        parsed = _units_quota_model(quota[0].lower())
        if parsed and parsed[1] in names and parsed[2] in (context, None):
            found.append((parsed, quota))
    for own in ([q for q in found if q[0][2] == context and context], [q for q in found if q[0][2] is None]):
        if own:
            kinds = [q for q in own if q[0][0] == "no-commitment"] or own
            return [quota for _, quota in kinds]
    return []


def check_base_model_units(target: Target, book: QuotaBook) -> Check:
    """With ft_deploy=provisioned: the base model's own quota on no-commitment model units must admit the one unit
    the pipeline buys (besides the account-wide quota across custom models)."""
    from botocore.exceptions import BotoCoreError, ClientError

    ft = target.config.finetune
    spec = formats.MODELS[ft.base_model_id]
    name, region = base_model_units_row(target), target.region
    parts = ft.base_model_id.split(":")
    context = parts[2].lower() if len(parts) > 2 else None
    try:
        listed = book.matching("bedrock", lambda quota: _units_quota_model(quota) is not None)
    except (BotoCoreError, ClientError) as exc:
        return Check(name, FIX, quota_unreadable(exc, "bedrock", target))
    quotas = base_model_units_quotas(listed, spec.name, context)
    if not quotas:
        return Check(
            name,
            SKIP,
            f"Service Quotas lists no model-unit quota for {spec.name} ({ft.base_model_id}) in {region}: find "
            f"'Model units per provisioned model for …' or 'No-commitment model units for Provisioned Throughput "
            f"created for base model …' for it in Service Quotas > Amazon Bedrock and request {PT_MODEL_UNITS} if "
            "it is 0 (CreateProvisionedModelThroughput fails without it, after the customization job)",
        )
    buys = (
        f"each run buys {PT_MODEL_UNITS} model unit for {ft.provisioned_hours} h, so runs that overlap need one "
        "each (and throughputs bought outside the kit count too)"
    )
    return _bedrock_quota_check(name, target, quotas, PT_MODEL_UNITS, buys, buys)


def check_bedrock_quotas(target: Target, book: QuotaBook | None = None) -> list[Check]:
    """The customization-job quota, and with ft_deploy=provisioned the model units for a custom model: across
    custom models, and of its base model."""
    book = book or QuotaBook(target)
    rows = [check_customization_jobs(target, book), *quota_rows(target, book, "bedrock", bedrock_quota_needs(target))]
    if target.config.finetune.deploy == "provisioned":
        rows.append(check_base_model_units(target, book))
    return rows


def imported_model_names(target: Target) -> list[str]:
    """The names of the models imported into Bedrock in the target's region (ListImportedModels, every page)."""
    paginator = target.client("bedrock").get_paginator("list_imported_models")
    return [str(model["modelName"]) for page in paginator.paginate() for model in page.get("modelSummaries") or []]


def check_imported_models(target: Target, book: QuotaBook) -> Check:
    """The SageMaker path: the Bedrock quota on imported models must have a free slot for the run's import."""
    from botocore.exceptions import BotoCoreError, ClientError

    name, region, needed = IMPORTED_MODELS_ROW, target.region, IMPORTED_MODELS_NEEDED
    per_run = f"each kit l3sm run imports {needed} model and a successful run keeps it"
    try:
        found = book.find("bedrock", IMPORTED_MODELS_QUOTA)
    except (BotoCoreError, ClientError) as exc:
        return Check(name, FIX, quota_unreadable(exc, "bedrock", target))
    if found is None:
        return Check(
            name,
            SKIP,
            f"Service Quotas lists no Bedrock quota named {IMPORTED_MODELS_QUOTA!r} in {region}: look it up in "
            f"Service Quotas > Amazon Bedrock ({IMPORTED_MODELS_QUOTA_CODE}); {per_run}, and the models already "
            "imported in the region count against it",
        )
    quota, value, code = found
    listing = f"aws bedrock list-imported-models {target.cli_options()}"

    def run() -> Check:
        try:
            models = imported_model_names(target)
        except ClientError as exc:
            if not aws.is_access_denied(exc):
                raise
            if value < needed:
                detail = f"{quota!r} ({code}) is {value:g}, {per_run}: "
                return Check(name, FIX, detail + increase("bedrock", quota, code, needed, target))
            return Check(
                name,
                SKIP,
                f"{quota!r} ({code}) = {value:g}, but the models already imported in {region}, which count against "
                f"it, cannot be counted (bedrock:ListImportedModels is denied): allow it for kit doctor, or check "
                f"that `{listing}` lists fewer than {value:g} ({per_run})",
            )
        free = value - len(models)
        if free >= needed:
            return Check(
                name,
                OK,
                f"{quota!r} ({code}) = {value:g}, {len(models)} imported in {region}: {free:g} free ({per_run}, so "
                f"a run needs {needed} free; imported models count until deleted)",
            )
        detail = f"{quota!r} ({code}) is {value:g}"
        if models:
            shown = ", ".join(models[:IMPORTED_MODELS_SHOWN])
            more = len(models) - IMPORTED_MODELS_SHOWN
            shown += f" and {more} more" if more > 0 else ""
            detail += f" and {len(models)} models are imported in {region} ({shown})"
        detail += (
            f": {per_run}, and without a free slot its import is refused after the paid training job (the pipeline "
            f"waits {QUOTA_RETRY_MINUTES * QUOTA_RETRY_ATTEMPTS / 60:g} hours, then fails). "
        )
        if models:
            detail += (
                f"Delete an imported model you no longer need (aws bedrock delete-imported-model "
                f"--model-identifier NAME {target.cli_options()}) or "
            )
        return Check(name, FIX, detail + increase("bedrock", quota, code, len(models) + needed, target))

    return guarded(name, "listing the imported models", target, run)


def sm_quota_needs(target: Target) -> dict[str, int]:
    """The SageMaker path's training job: its instance quota -> instances, and the account's per-job quotas on
    instances and run time (training_job_limits). Reported with Level 4's SageMaker quotas (kit/level4_pretrain.py
    quota_needs), which takes the larger need where both levels use the same quota."""
    sm = target.config.finetune_sagemaker
    return {
        training_job_quota(sm.instance_type, sm.spot): max(sm.instance_count, 1),
        **training_job_limits(sm.instance_count, sm.max_runtime_hours, sm.spot),
    }


def _teacher(target: Target) -> ModelRef | None:
    """The distillation teacher, when the kit distills."""
    from stacks.shared.settings import parse_model_id

    ft = target.config.finetune
    return parse_model_id("ft_teacher_model_id", ft.teacher_model_id) if ft.customization_type == DISTILLATION else None


def _teacher_label(teacher: ModelRef) -> str:
    profile = f" (via {teacher.model_id})" if teacher.is_inference_profile else ""
    return f"distillation teacher {teacher.foundation_model_id}{profile}"


def check_teacher(target: Target, teacher: ModelRef) -> Check:
    """The distillation job invokes the teacher: its access, and a cross-Region profile's existence in the region."""
    return check_model_ref_access(target, teacher, _teacher_label(teacher), "ft_teacher_model_id")


def doctor_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    """Level 3's rows (the Bedrock path, level 3), then its SageMaker path's (level 3sm; its training-job quota is a
    row of Level 4's SageMaker part)."""
    rows: list[str] = []
    if "3" in levels:
        teacher = _teacher(target)
        rows += [
            f"Customization: {target.config.finetune.base_model_id}",
            *([f"Model access: {_teacher_label(teacher)}"] if teacher else []),
            CUSTOMIZATION_JOBS_ROW,
            *(f"Quota: {quota}" for quota in bedrock_quota_needs(target)),
            *([base_model_units_row(target)] if target.config.finetune.deploy == "provisioned" else []),
        ]
    if "3sm" in levels:
        rows.append(IMPORTED_MODELS_ROW)
    return rows


def doctor_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    checks: list[Check] = []
    if "3" in levels:
        teacher = _teacher(target)
        checks += [
            check_customization(target),
            *([check_teacher(target, teacher)] if teacher else []),
            *check_bedrock_quotas(target, book),
        ]
    if "3sm" in levels:
        checks.append(check_imported_models(target, book))
    return checks


# --- kit l3sm: the SageMaker path (GenAiKit-3-FineTune-SageMaker) --------------------------------------------

SM_STACK = "3-sagemaker"
# Training job, import job and imported model are all named <name_prefix>-<stage>-sft-<MD5 of the execution ARN>
# by the state machine (stacks/level3_finetune/sagemaker.py job_prefix, sagemaker_pipeline.py run_name).
SM_NAME_PART = "-sft-"
SM_MACHINE_PART = "sft"  # the state machine is <name_prefix>-<stage>-sft (sagemaker.py resource_name("sft"))
SM_MAX_TOKENS = 256
# An imported model that has not served for a while is restored on the next request and answers
# ModelNotReadyException meanwhile, which "the AWS SDK will automatically retry ... up to 5 times" (botocore's
# bedrock-runtime model). The model client tries twice (kit.aws.MODEL_CLIENT_CONFIG: a long answer must not be asked
# for six times), so `ask` retries this one error itself, over five minutes and a little more: "your request is
# served within 5 minutes or you might get ModelNotReadyException"
# (https://docs.aws.amazon.com/bedrock/latest/userguide/invoke-imported-model.html).
MODEL_NOT_READY_WAITS = (10, 20, 40, 60, 60, 60, 60)
sleep: Callable[[float], None] = time.sleep  # a seam for the tests


def _invoke_warming_up(runtime: Any, model_name: str, model_arn: str, body: Mapping[str, Any]) -> Any:
    """InvokeModel, asked again after each wait of MODEL_NOT_READY_WAITS while the model is not ready."""
    from botocore.exceptions import ClientError

    for wait in (*MODEL_NOT_READY_WAITS, None):
        try:
            return runtime.invoke_model(
                modelId=model_arn, contentType="application/json", accept="application/json", body=json.dumps(body)
            )
        except ClientError as exc:
            if aws.error_code(exc) != "ModelNotReadyException" or wait is None:
                raise
            click.echo(f"{model_name} is warming up: asking again in {wait} s", err=True)
            sleep(wait)
    raise AssertionError("unreachable")


SM_MODELS_PREFIX = MODELS_PREFIX  # where a run's baseModelKey must point (the pipeline rejects anything else)
# An execution name the pipeline takes as resumeFrom (stacks/level3_finetune/sagemaker_pipeline.py NAME_FORBIDDEN):
# any name StartExecution accepts.
SM_EXECUTION_NAME = EXECUTION_NAME
SM_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def sm_resource_name(target: Target, execution_arn: str) -> str:
    """The name the pipeline gives the training job, the import job and the imported model of an execution: the
    stage's prefix and the hash of the execution ARN, as States.Hash computes it in the state machine. The prefix
    is the deployed stack's (its state machine is <name_prefix>-<stage>-sft), not the local config's."""
    stage = target.config.stage
    prefix = deployed_name_prefix(execution_arn, stage, SM_MACHINE_PART)
    return f"{prefix}-{stage}{SM_NAME_PART}{execution_hash(execution_arn)}"


def sm_check_file(path: Path) -> list[str]:
    """Every problem of a chat-format JSON Lines file (empty: it can be trained on), by the rules the pipeline and
    the training program apply (workloads/finetune_sagemaker/chat_records.py), lines counted as they count them."""
    problems: list[str] = []
    records = 0
    try:
        with open(path, encoding="utf-8", errors=TEXT_ERRORS) as handle:
            for number, line in enumerate(handle, start=1):
                if is_blank(line):
                    continue
                records += 1
                problem = line_problem(line)
                if problem:
                    problems.append(f"{path.name}:{number}: {problem}")
    except OSError as exc:
        return [*problems, f"{path}: cannot read it ({exc})"]
    if not records:
        problems.append(f"{path.name}: holds no records")
    return problems


@click.group()
@target_options
@click.pass_context
def l3sm(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 3 on SageMaker: LoRA training job, Bedrock Custom Model Import, ask the imported model."""
    remember_target(ctx, stage, region, profile, context_pairs)


def sm_model_files(directory: Path) -> list[Path]:
    """The files of a local Hugging Face model folder to upload (hidden files and folders such as the Hub's
    .cache/ left out); KitUsageError when it holds no config.json."""
    if not (directory / "config.json").is_file():
        raise KitUsageError(
            f"--base-model-dir: {directory} holds no config.json: give a Hugging Face model folder (config.json, "
            "*.safetensors, tokenizer files), e.g. from huggingface-cli download ID --local-dir DIR"
        )
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def sm_model_key(key: str) -> str:
    """A baseModelKey: a prefix under models/ ending in / (the slash is added when missing)."""
    key = key if key.endswith("/") else key + "/"
    if not key.startswith(SM_MODELS_PREFIX) or key == SM_MODELS_PREFIX or "//" in key:
        raise KitUsageError(
            f"--base-model-key must be a prefix under {SM_MODELS_PREFIX}, e.g. {SM_MODELS_PREFIX}my-model/"
        )
    return key


def _sm_earlier_input(target: Target, name: str) -> tuple[str, dict[str, Any]]:
    """The run to resume (``name``, or the first run it resumed itself: a resumed run writes to the earlier one's
    prefix, sagemaker_pipeline.py UseEarlierCheckpoints) and the request ``name`` was started with (what a resumed
    run repeats by default), once every run that wrote there has ended and no running execution resumes from one of
    them (check_resumable)."""
    machine = target.output(SM_STACK, "StateMachineArn")
    sfn = target.client("stepfunctions")
    root, chain = resumed_root(sfn, machine, name)
    missing = f"--resume-from: no execution {name} of {machine.rsplit(':', 1)[-1]}"
    jobs = (target.client("sagemaker"), functools.partial(sm_resource_name, target))
    check_resumable(sfn, machine, root, f"{CHECKPOINTS_PREFIX}{root}/", missing=missing, chain=chain, training_job=jobs)
    arn = execution_arn(machine, name)
    with aws.aws_errors(f"reading execution {name}", target.region, target.profile):
        described = sfn.describe_execution(executionArn=arn)
    try:
        earlier = json.loads(described.get("input") or "{}")
    except ValueError:
        earlier = {}
    return root, earlier if isinstance(earlier, dict) else {}


@l3sm.command("start")
@click.option(
    "--training",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Check a chat-format JSONL file locally and upload it to datasets/<execution name>/ first.",
)
@click.option(
    "--training-key",
    metavar="KEY",
    help="A key or prefix in the data bucket (default with --training: datasets/<execution name>/<file name>).",
)
@click.option("--base-model", metavar="HF_ID", help="A Hugging Face Hub id (default: the stack's sm_base_model).")
@click.option(
    "--base-model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="Upload a local Hugging Face model folder to models/<folder name>/ and train from it, not from the Hub "
    "(for training jobs without internet access).",
)
@click.option(
    "--base-model-key",
    metavar="KEY",
    help="Train from a model already uploaded under models/ in the data bucket (e.g. models/qwen2.5-0.5b/).",
)
@click.option(
    "--resume-from",
    metavar="EXECUTION",
    help="Continue an earlier execution from its checkpoints (its name or ARN); its data and base model are "
    "reused unless given.",
)
@click.option("--wait", is_flag=True, help="Follow the execution until it ends.")
@wait_options(timeout_s=None, poll_s=60, timeout_default=FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT)
def sm_start(
    training: str | None,
    training_key: str | None,
    base_model: str | None,
    base_model_dir: Path | None,
    base_model_key: str | None,
    resume_from: str | None,
    wait: bool,
    timeout: int | None,
    poll_seconds: float,
) -> None:
    """Start the SageMaker fine-tuning pipeline (StartExecution with {"trainingKey", "baseModel" or
    "baseModelKey", "resumeFrom"}).

    With --training the records are checked locally (chat format: messages of system/user/assistant, at least
    one assistant answer) before anything is uploaded or started. A resumed run must train the same base model on
    the same data with the same hyperparameters; the training program refuses anything else.
    """
    target = current_target()
    if sum(option is not None for option in (base_model, base_model_dir, base_model_key)) > 1:
        raise KitUsageError("give one of --base-model, --base-model-dir and --base-model-key")
    name = execution_name()  # also the folder of the file it uploads
    if training and not training_key:
        training_key = upload_key(name, training)
    # The id the stack's sm_base_model takes (HUB_ID): a mistyped one otherwise fails inside the training job, after
    # its instance has started.
    if base_model is not None and not HUB_ID.fullmatch(base_model):
        raise KitUsageError(
            f"--base-model {base_model!r} is not a Hugging Face Hub id: <owner>/<name> of letters, digits, '.', '_' "
            "and '-', e.g. Qwen/Qwen2.5-0.5B-Instruct"
        )
    if resume_from is not None:
        resume_from = resume_from.rsplit(":", 1)[-1]
        if not SM_EXECUTION_NAME.fullmatch(resume_from):
            raise KitUsageError(
                "--resume-from must name an earlier execution (its name or ARN: at most 80 characters, no spaces, "
                "slashes or other characters Step Functions refuses in a name)"
            )
    if not training_key and not resume_from:
        raise KitUsageError("give --training FILE (uploaded to datasets/) or --training-key KEY")
    if base_model_key is not None:
        base_model_key = sm_model_key(base_model_key)
    model_files: list[Path] = []
    if base_model_dir is not None:
        model_files = sm_model_files(base_model_dir)
        if not SM_FOLDER_NAME.fullmatch(base_model_dir.resolve().name):
            raise KitUsageError(
                "--base-model-dir: the folder's name becomes models/<name>/: use letters, digits, '.', '_' and '-'"
            )
        base_model_key = f"{SM_MODELS_PREFIX}{base_model_dir.resolve().name}/"
    model_uploads = [
        (path, f"{base_model_key}{path.relative_to(base_model_dir).as_posix()}")
        for path in model_files
        if base_model_dir is not None
    ]
    check_object_keys(([(Path(training), training_key)] if training and training_key else []) + model_uploads)
    if training:
        problems = sm_check_file(Path(training))
        if problems:
            shown = problems[:10] + ([f"… and {len(problems) - 10} more"] if len(problems) > 10 else [])
            click.echo("\n".join(shown))
            raise KitError("the data is invalid: nothing was uploaded or started")
    outputs = target.outputs(SM_STACK)
    stack_name = target.stack_name(SM_STACK)
    machine = aws.require_output(outputs, "StateMachineArn", stack_name)
    request: dict[str, Any] = {}
    if resume_from:
        # The earlier run's data and base model, unless given: the program refuses a resume that differs.
        resume_from, earlier = _sm_earlier_input(target, resume_from)
        keep = [] if training_key else ["trainingKey"]
        keep += [] if (base_model or base_model_key) else ["baseModel", "baseModelKey"]
        request.update({key: earlier[key] for key in keep if key in earlier})
    out = console()
    if training or model_files:
        bucket = aws.require_output(outputs, "DataBucketName", stack_name)
        if training and training_key:
            out.print(Text(f"uploaded {upload_file(target, Path(training), bucket, training_key)}"))
        if base_model_dir is not None and base_model_key:
            for path, key in model_uploads:
                upload_file(target, path, bucket, key)
            out.print(Text(f"uploaded {len(model_files)} files to s3://{bucket}/{base_model_key}"))
    if training_key:
        request["trainingKey"] = training_key
    if base_model:
        request["baseModel"] = base_model
    if base_model_key:
        request["baseModelKey"] = base_model_key
    if resume_from:
        request["resumeFrom"] = resume_from
    if "trainingKey" not in request:
        raise KitUsageError(f"execution {resume_from} named no trainingKey: give --training-key KEY")
    sfn = target.client("stepfunctions")
    action = "starting the SageMaker fine-tuning pipeline"
    arn = start_run(target, sfn, machine, name, json.dumps(request), action, "l3sm")
    out.print(Text(f"started {arn}"))
    out.print(Text(f"request {json.dumps(request)}", style="dim"))
    out.print(Text(f"training job and imported model: {sm_resource_name(target, arn)}", style="dim"))
    follow = target.kit_command("l3sm", f"status {arn} --wait")
    if not wait:
        out.print(Text(f"Follow it with: {follow}", style="dim"))
        return
    final = follow_execution(out, sfn, arn, timeout=timeout, poll_seconds=poll_seconds, resume_hint=follow)
    finish(print_execution(out, sfn, arn, final))


def _sm_execution(target: Target, given: str | None, *, succeeded: bool = False) -> tuple[str, str]:
    """(execution ARN, execution name): the one given (ARN or name), else the newest (succeeded) one."""
    machine = target.output(SM_STACK, "StateMachineArn")
    sfn = target.client("stepfunctions")
    if given:
        arn = given if given.startswith("arn:") else execution_arn(machine, given)
        describe_existing(sfn, arn)  # a mistyped name is said so, not taken for a run that imported no model
        return arn, arn.rsplit(":", 1)[-1]
    filters: dict[str, Any] = {"statusFilter": "SUCCEEDED"} if succeeded else {}
    with aws.aws_errors("listing executions", target.region, target.profile):
        executions = sfn.list_executions(stateMachineArn=machine, maxResults=1, **filters)["executions"]
    if not executions:
        kind = "succeeded executions" if succeeded else "executions"
        start = target.kit_command("l3sm", "start --training FILE")
        raise KitError(f"no {kind} of {machine.rsplit(':', 1)[-1]} yet: start one with {start}")
    return str(executions[0]["executionArn"]), str(executions[0]["name"])


def _sm_jobs(target: Target, name: str) -> list[tuple[str, Any]]:
    """Rows for the execution's training job, import job and imported model (what exists of them)."""
    from botocore.exceptions import ClientError

    rows: list[tuple[str, Any]] = []
    with aws.aws_errors("reading the training job", target.region, target.profile):
        try:
            job = target.client("sagemaker").describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            if not aws.not_found(exc):
                raise
            rows.append(("Training job", f"{name}: not created (yet)"))
        else:
            text = f"{job['TrainingJobStatus']} ({job.get('SecondaryStatus', '-')})"
            if job.get("BillableTimeInSeconds"):
                text += f", {job['BillableTimeInSeconds']} billable s"
            rows.append(("Training job", f"{name}: {text}"))
            if job.get("FailureReason"):
                rows.append(("Training error", compact(str(job["FailureReason"]))))
    bedrock = target.client("bedrock")
    with aws.aws_errors("reading the model import job", target.region, target.profile):
        try:
            imported = bedrock.get_model_import_job(jobIdentifier=name)
        except ClientError as exc:
            if not aws.not_found(exc):
                raise
            rows.append(("Import job", "not created (yet)"))
        else:
            # botocore bedrock 2023-04-20 GetModelImportJobResponse requires no member (nor does GetImportedModel's).
            rows.append(("Import job", str(imported.get("status") or "unknown (the answer named no status)")))
            if imported.get("failureMessage"):
                rows.append(("Import error", compact(str(imported["failureMessage"]))))
        try:
            model = bedrock.get_imported_model(modelIdentifier=name)
        except ClientError as exc:
            if not aws.not_found(exc):
                raise
            rows.append(("Imported model", "none (not imported yet, or deleted after a failed run)"))
        else:
            rows.append(("Imported model", str(model.get("modelArn") or f"{name} (the answer named no ARN)")))
    return rows


@l3sm.command("status")
@click.argument("execution", required=False, metavar="[EXECUTION]")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends (exit 1 unless it succeeds).")
@wait_options(timeout_s=None, poll_s=60, timeout_default=FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT)
def sm_status(execution: str | None, wait: bool, timeout: int | None, poll_seconds: float) -> None:
    """An execution (default: the newest; an ARN or a name): its states, training job, import and model."""
    target = current_target()
    arn, _ = _sm_execution(target, execution)
    sfn = target.client("stepfunctions")
    out = console()
    description = None
    if wait:
        follow = target.kit_command("l3sm", f"status {arn} --wait")
        description = follow_execution(out, sfn, arn, timeout=timeout, poll_seconds=poll_seconds, resume_hint=follow)
    final = print_execution(out, sfn, arn, description)
    out.print(kv_table(_sm_jobs(target, sm_resource_name(target, arn))))
    if wait:
        finish(final)


def sm_answer(raw: bytes) -> str:
    """The text of an imported model's answer: chat completion, completion or Bedrock completion format."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    if isinstance(body, dict):
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return str(message["content"])
            if isinstance(choices[0].get("text"), str):
                return str(choices[0]["text"])
        if isinstance(body.get("generation"), str):
            return str(body["generation"])
    return json.dumps(body, ensure_ascii=False)


@l3sm.command("ask")
@click.argument("text")
@click.option("--execution", metavar="NAME", help="The execution whose model to ask (default: the newest succeeded).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=SM_MAX_TOKENS, show_default=True)
def sm_ask(text: str, execution: str | None, max_tokens: int) -> None:
    """Ask the imported model (InvokeModel, the chat-completion body the pipeline's smoke test sends)."""
    from botocore.exceptions import ClientError

    target = current_target()
    arn, name = _sm_execution(target, execution, succeeded=True)
    model_name = sm_resource_name(target, arn)
    with aws.aws_errors("reading the imported model", target.region, target.profile):
        try:
            imported = target.client("bedrock").get_imported_model(modelIdentifier=model_name)
        except ClientError as exc:
            if aws.not_found(exc):
                raise KitError(
                    f"no imported model {model_name}: the run did not import one or it was deleted; "
                    "check it with " + target.kit_command("l3sm", f"status {name}")
                ) from None
            raise
    # botocore bedrock 2023-04-20 GetImportedModelResponse requires no member, and InvokeModel takes an imported
    # model by its ARN (botocore bedrock-runtime 2023-09-30 InvokeModel modelId: "If you use an imported model,
    # specify the ARN of the imported model"), so the name is no substitute.
    if not imported.get("modelArn"):
        raise KitError(
            f"Bedrock's answer for the imported model {model_name} named no ARN, which InvokeModel needs; "
            "check it with " + target.kit_command("l3sm", f"status {name}")
        )
    model_arn = str(imported["modelArn"])
    # The shape of stacks/level3_finetune/sagemaker_pipeline.py SMOKE_BODY (OpenAI chat completion):
    # https://docs.aws.amazon.com/bedrock/latest/userguide/invoke-imported-model.html
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    runtime = target.model_client("bedrock-runtime")
    # Every AWS error of the call and of reading its streamed answer is one line naming the action, the errors
    # that are not ClientErrors too: botocore's standard retries end on a read timeout or a dropped connection
    # with ReadTimeoutError, ConnectionClosedError or ResponseStreamingError, all BotoCoreErrors
    # (botocore/exceptions.py; botocore/retries/standard.py TransientRetryableChecker).
    with aws.aws_errors("invoking the imported model", target.region, target.profile):
        try:
            raw = _invoke_warming_up(runtime, model_name, model_arn, body)["body"].read()
        except ClientError as exc:
            code = aws.error_code(exc)
            if code == "ModelNotReadyException":
                raise KitError(
                    f"{model_name} is warming up (an imported model that has not served for a while is restored on "
                    "the next request): retry in a minute"
                ) from None
            if code == "ResourceNotFoundException":
                see = target.kit_command("l3sm", f"status {name}")
                raise KitError(f"{model_name} was not found: it may have been deleted; see {see}") from None
            if aws.is_access_denied(exc):
                raise KitError(
                    f"may not invoke {model_arn}: grant bedrock:InvokeModel on it and on the account's default "
                    f"Bedrock project ({model_arn.rsplit(':', 1)[0]}:project/default) to the caller "
                    f"({aws.error_message(exc)})"
                ) from None
            raise
    click.echo(sm_answer(raw))
