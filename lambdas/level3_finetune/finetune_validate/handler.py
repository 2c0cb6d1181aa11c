"""Lambda entry point of the Level 3 dataset check (``finetune_validate.handler.handler``).

A Step Functions task invokes it with::

    {"bucket": str, "trainingKey": str | null, "validationKey"?: str | null, "baseModelId": str,
     "customizationType"?: "FINE_TUNING" | "CONTINUED_PRE_TRAINING" | "DISTILLATION"
                           | "REINFORCEMENT_FINE_TUNING" (default FINE_TUNING),
     "teacherModelId"?: str | null (the request's; DISTILLATION only: checked against formats.TEACHERS),
     "defaultTeacherModelId"?: str | null (the configured teacher, used by DISTILLATION without its own),
     "invocableTeacherModelIds"?: [str] (the teachers the customization role may invoke; a request's own
                                  teacherModelId must be one of them; absent: not checked; kit l3 validate and
                                  start apply the same rule, validator.teacher_invocable_problem),
     "invocationLogs"?: bool (a DISTILLATION request without a trainingKey distills from the account's
                        model invocation logs; only when the stack reads them),
     "datasetsPrefix"?: str (the only prefix the customization role may read, e.g. "datasets/": the dataset keys
                        and every image or video a record names must sit under it in this bucket; absent: not
                        checked, e.g. kit l3 validate),
     "hyperparameters": {str: str}, "reportKey": str}

The trainingKey may be null only for DISTILLATION with invocationLogs true. The pipeline passes a validation set
for FINE_TUNING and CONTINUED_PRE_TRAINING only, so a validationKey for the other two is an InvalidRequest.

The dataset keys must be locations CreateModelCustomizationJob accepts (every key segment of letters, digits
and - ! _ * ' ( ) . only; for Amazon Nova letters, digits and _ - / . only; formats.check_data_key), or the job
would be refused after the check passed.

It streams the dataset objects from S3 in chunks (never reading a whole body), validates them, writes the
report JSON to ``s3://bucket/reportKey`` (the bucket's default encryption applies; no ACL is set) and returns
``{"valid", "reportKey", "family", "customizationType", "trainingRecords", "validationRecords", "errorCount",
"warningCount", "summary", "teacherModelId", "rftHyperParameters", "trainingSource"}``: the teacher the job
uses (DISTILLATION, else null), rftConfig.hyperParameters typed as the API takes them (REINFORCEMENT_FINE_TUNING,
else null) and where the training data comes from ("s3" or "invocation-logs"); the state machine passes these
validated values to CreateModelCustomizationJob.

Errors the state machine can catch by name: ``InvalidRequest`` (a ``ValueError`` whose message names the
field; a customization type the base model does not offer, a base model past its end of life, a teacher not
paired with the student are ones too) and ``DatasetNotFound`` (names the
key). No text from the event reaches a message, a log line or the report unescaped: a lone surrogate (a JSON
``\\ud800``) cannot be encoded as UTF-8. Hyperparameter values that are not strings are not an
``InvalidRequest``: they are reported in the report (``hyperparameter_not_string``) with every other problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.s3 import BUCKET_NAME, S3_KEY_MAX_BYTES
from finetune_validate.formats import (
    DISTILLATION,
    FINE_TUNING,
    FOUNDATION_MODEL_ARN,
    REINFORCEMENT_FINE_TUNING,
    ModelSpec,
    UnsupportedBaseModel,
    UnsupportedCustomizationType,
    check_customization_type,
    check_data_key,
    check_pipeline_type,
    json_type,
    printable,
    resolve_model,
    rft_hyperparameters,
)
from finetune_validate.names import LOGS_SOURCE, S3_SOURCE
from finetune_validate.validator import (
    DatasetValidator,
    RequestRefused,
    error_kinds,
    on_demand_problem,
    readable_media_prefix,
    run_teacher,
    summarize,
    teacher_invocable_problem,
    validation_set_problem,
)

logger = Logger()

CHUNK_BYTES = 1 << 20
REPORT_CONTENT_TYPE = "application/json"
CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 5},
    "connect_timeout": 5,
    "read_timeout": 60,
}
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})


class InvalidRequest(ValueError):
    """The event lacks a field or holds one of the wrong type; ``field`` and the message name it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(printable(f"{field}: {problem}"))
        self.field = field


class DatasetNotFound(Exception):
    """A dataset object (training or validation) does not exist; the message names the key."""


@dataclass(frozen=True)
class Request:
    bucket: str
    training_key: str | None
    validation_key: str | None
    base_model_id: str
    hyperparameters: dict[str, Any]
    report_key: str
    customization_type: str = FINE_TUNING
    teacher_model_id: str | None = None
    datasets_prefix: str | None = None


@lru_cache(maxsize=1)
def get_s3_client() -> Any:
    """The S3 client, created on first use (boto3 is imported here, not at module import)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(**CLIENT_CONFIG))


# --- request ------------------------------------------------------------------------------------------------


def _exact_id(event: dict[str, Any], field: str) -> str:
    """A model id as the create sends it: the pipeline passes the request's value on as it is, and Bedrock's
    identifier patterns are anchored (botocore bedrock BaseModelIdentifier, TeacherModelIdentifier)."""
    value = _required_text(event, field)
    if value != value.strip():
        raise InvalidRequest(field, f"'{value[:80]}' has blanks around it; give the model id alone")
    return value


def _customized_here(base_model_id: str, spec: ModelSpec) -> None:
    """CreateModelCustomizationJob runs in the stack's Region (the Lambda runtime's AWS_REGION) on a model
    customized there (the model table's regions, from
    https://docs.aws.amazon.com/bedrock/latest/userguide/custom-model-supported.html), and the pipeline may act only
    on that Region's foundation models: another Region's model or ARN is refused at the create."""
    region = os.environ.get("AWS_REGION")
    arn = FOUNDATION_MODEL_ARN.fullmatch(base_model_id)
    if region and arn and arn.group("region") != region:
        raise InvalidRequest("baseModelId", f"names a model in {arn.group('region')}; this stack runs in {region}")
    if region and region not in spec.regions:
        raise InvalidRequest(
            "baseModelId", f"is customized in {', '.join(spec.regions)}, not in {region}, where this stack runs"
        )


def parse_request(event: Any) -> Request:
    """The typed request; raises InvalidRequest naming the first bad field."""
    if not isinstance(event, dict):
        fields = "bucket, trainingKey, baseModelId, hyperparameters, reportKey"
        raise InvalidRequest("event", f"must be an object with {fields}; got {json_type(event)}")
    bucket = _required_text(event, "bucket")
    if not BUCKET_NAME.fullmatch(bucket):
        raise InvalidRequest("bucket", f"'{bucket[:80]}' is not an S3 bucket name")
    validation_key = _key(event, "validationKey") if event.get("validationKey") is not None else None
    base_model_id = _exact_id(event, "baseModelId")
    try:
        spec = resolve_model(base_model_id)
    except UnsupportedBaseModel as exc:
        raise InvalidRequest("baseModelId", str(exc)) from None
    # The rules below that the offline checks apply too are finetune_validate.validator's (one function each).
    if event.get("onDemandDeploy") is True and (problem := on_demand_problem(base_model_id)) is not None:
        raise InvalidRequest("baseModelId", problem)
    # Absent: fine-tuning (the contract before customization types). Present, it must be a type (null is not).
    customization_type = event.get("customizationType", FINE_TUNING)
    problem = check_customization_type(customization_type, spec) or check_pipeline_type(customization_type)
    if problem is not None:
        raise InvalidRequest("customizationType", problem)
    _customized_here(base_model_id, spec)
    try:
        teacher_model_id = run_teacher(
            customization_type, event.get("teacherModelId"), event.get("defaultTeacherModelId")
        )
    except RequestRefused as exc:
        raise InvalidRequest(exc.field, exc.problem) from None
    if teacher_model_id is not None and event.get("teacherModelId") is not None:  # the run's own
        teacher_model_id = _exact_id(event, "teacherModelId")
        _check_invocable(teacher_model_id, event.get("invocableTeacherModelIds"))
    elif teacher_model_id is not None:  # the configured one
        teacher_model_id = _required_text(event, "defaultTeacherModelId")
    if event.get("trainingKey") is None and customization_type == DISTILLATION and event.get("invocationLogs") is True:
        training_key: str | None = None  # the account's model invocation logs
    elif event.get("trainingKey") is None and customization_type == DISTILLATION:
        raise InvalidRequest(
            "trainingKey",
            "is required: distilling from the account's invocation logs needs ft_distillation_source "
            "'invocation-logs' (and the invocation-logging stack)",
        )
    else:
        training_key = _key(event, "trainingKey")
    if validation_key is not None and (problem := validation_set_problem(customization_type)) is not None:
        raise InvalidRequest("validationKey", problem)
    datasets_prefix = _required_text(event, "datasetsPrefix") if event.get("datasetsPrefix") is not None else None
    if datasets_prefix is not None and not datasets_prefix.endswith("/"):
        raise InvalidRequest("datasetsPrefix", f"'{datasets_prefix[:80]}' must end with '/'")
    for field, key in (("trainingKey", training_key), ("validationKey", validation_key)):
        bad = check_data_key(bucket, key, spec.family) if key is not None else None
        if bad is not None:
            raise InvalidRequest(field, bad)
        if key is not None and datasets_prefix is not None and not key.startswith(datasets_prefix):
            raise InvalidRequest(
                field, f"must be a key under {datasets_prefix}, the only prefix the customization job may read"
            )
    if "hyperparameters" not in event:
        raise InvalidRequest("hyperparameters", "is required (an object of name to string value; {} for defaults)")
    hyperparameters = event["hyperparameters"]
    if not isinstance(hyperparameters, dict):
        raise InvalidRequest(
            "hyperparameters", f"must be an object of name to string value, got {json_type(hyperparameters)}"
        )
    report_key = _key(event, "reportKey")
    if report_key in (training_key, validation_key):
        raise InvalidRequest("reportKey", "must differ from the dataset keys (the report would overwrite a dataset)")
    return Request(
        bucket,
        training_key,
        validation_key,
        base_model_id,
        dict(hyperparameters),
        report_key,
        customization_type,
        teacher_model_id,
        datasets_prefix,
    )


def _check_invocable(teacher_model_id: str, invocable: Any) -> None:
    """A run's own teacher must be one the customization role may invoke (validator.teacher_invocable_problem, the
    rule kit l3 validate / start apply too); ``invocable`` absent: not checked."""
    if invocable is None:
        return
    if not isinstance(invocable, list) or not all(isinstance(model, str) for model in invocable):
        raise InvalidRequest("invocableTeacherModelIds", f"must be a list of model ids, got {json_type(invocable)}")
    # The function runs in the stack's Region (AWS_REGION, a Lambda runtime variable).
    if (problem := teacher_invocable_problem(teacher_model_id, invocable, os.environ.get("AWS_REGION"))) is not None:
        raise InvalidRequest("teacherModelId", problem)


def _required_text(event: dict[str, Any], field: str) -> str:
    if field not in event or event[field] is None:
        raise InvalidRequest(field, "is required")
    value = event[field]
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {json_type(value)}")
    if not value.strip():
        raise InvalidRequest(field, "must not be empty")
    return value


def _key(event: dict[str, Any], field: str) -> str:
    key = _required_text(event, field)
    if printable(key) != key:
        raise InvalidRequest(field, f"'{key[:80]}' holds a lone surrogate; an S3 key is UTF-8 text")
    if len(key.encode()) > S3_KEY_MAX_BYTES:
        raise InvalidRequest(field, f"is longer than {S3_KEY_MAX_BYTES} bytes of UTF-8, the S3 key limit")
    return key


# --- S3 -----------------------------------------------------------------------------------------------------


def _aws_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    code = (response.get("Error") or {}).get("Code") if isinstance(response, dict) else None
    return code if isinstance(code, str) else None


def _not_found(bucket: str, key: str, field: str) -> DatasetNotFound:
    return DatasetNotFound(f"{field} s3://{bucket}/{key} does not exist (no such key or bucket).")


def ensure_exists(bucket: str, key: str, field: str) -> None:
    """HEAD the object so a missing validation file fails before the training file is streamed."""
    try:
        get_s3_client().head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _aws_code(exc) in NOT_FOUND_CODES:
            raise _not_found(bucket, key, field) from None
        raise


def object_chunks(bucket: str, key: str, field: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The object's bytes in chunks from a streaming GET (issued on first iteration), never the whole body."""
    try:
        body = get_s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as exc:
        if _aws_code(exc) in NOT_FOUND_CODES:
            raise _not_found(bucket, key, field) from None
        raise
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def write_report(bucket: str, key: str, report: dict[str, Any]) -> None:
    """PUT the report JSON; no ServerSideEncryption or ACL parameter, so the bucket's defaults apply."""
    body = json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")
    get_s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType=REPORT_CONTENT_TYPE)


# --- entry point --------------------------------------------------------------------------------------------


def validate(request: Request) -> dict[str, Any]:
    """Stream, validate and return the full report (with the S3 locations it describes)."""
    try:
        validator = DatasetValidator(
            request.base_model_id,
            request.hyperparameters,
            customization_type=request.customization_type,
            teacher_model_id=request.teacher_model_id,
            media_prefix=None
            if request.datasets_prefix is None
            else readable_media_prefix(request.bucket, request.datasets_prefix),
        )
    except UnsupportedBaseModel as exc:  # past its end of life
        raise InvalidRequest("baseModelId", str(exc)) from None
    except UnsupportedCustomizationType as exc:  # a teacher not paired with the student, or past its end of life
        raise InvalidRequest("teacherModelId", str(exc)) from None
    if request.training_key is None:
        return _logs_report(validator)
    if request.validation_key is not None:
        ensure_exists(request.bucket, request.validation_key, "validationKey")
    validator.check_training(object_chunks(request.bucket, request.training_key, "trainingKey"))
    if request.validation_key is not None:
        validator.check_validation(object_chunks(request.bucket, request.validation_key, "validationKey"))
    report = validator.report()
    report["dataset"] = {
        "bucket": request.bucket,
        "trainingKey": request.training_key,
        "validationKey": request.validation_key,
    }
    return report


def _logs_report(validator: DatasetValidator) -> dict[str, Any]:
    """The report of a distillation from invocation logs: no dataset to read (Bedrock selects the logged prompts),
    so the type, the teacher and the hyperparameters are what is checked."""
    errors = list(validator.hyperparameter_errors)
    return {
        "valid": not errors,
        "family": validator.spec.family,
        "baseModelId": validator.spec.base_model_id,
        "customizationType": validator.customization_type,
        "teacherModelId": validator.teacher_model_id,
        "doc": "https://docs.aws.amazon.com/bedrock/latest/userguide/distillation-data-prep-option-2.html",
        "errorCount": len(errors),
        "warningCount": len(validator.warnings),
        "warnings": list(validator.warnings),
        "training": {"source": LOGS_SOURCE, "records": None},
        "validation": None,
        "hyperparameters": {"errors": errors},
        "dataset": {"source": LOGS_SOURCE},
    }


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Validate the datasets named in a Step Functions event; write the report; return its summary."""
    try:
        request = parse_request(event)
    except InvalidRequest as exc:
        logger.warning("Invalid request", extra={"field": exc.field, "error_message": str(exc)})
        raise
    logger.append_keys(bucket=request.bucket, training_key=request.training_key, base_model_id=request.base_model_id)
    try:
        report = validate(request)
    except DatasetNotFound as exc:
        logger.warning("Dataset not found", extra={"error_message": str(exc)})
        raise
    write_report(request.bucket, request.report_key, report)
    if request.training_key is None:
        errors = report["hyperparameters"]["errors"]
        summary = "training data: the account's model invocation logs (Bedrock selects the prompts); " + (
            "; ".join(error["message"] for error in errors) if errors else "type, teacher and hyperparameters OK"
        )
    else:
        summary = summarize(report)
    validation = report["validation"]
    rft = (
        rft_hyperparameters(request.hyperparameters)
        if request.customization_type == REINFORCEMENT_FINE_TUNING and report["valid"]
        else None
    )
    result = {
        "valid": report["valid"],
        "reportKey": request.report_key,
        "family": report["family"],
        "customizationType": report["customizationType"],
        "trainingRecords": report["training"]["records"],
        "validationRecords": validation["records"] if validation is not None else None,
        "errorCount": report["errorCount"],
        "warningCount": report["warningCount"],
        "summary": summary,
        "teacherModelId": report["teacherModelId"],
        "rftHyperParameters": rft,
        "trainingSource": S3_SOURCE if request.training_key is not None else LOGS_SOURCE,
    }
    logger.info(
        "Dataset validated",
        extra={
            "valid": result["valid"],
            "training_records": result["trainingRecords"],
            "validation_records": result["validationRecords"],
            "training_bytes": report["training"].get("bytes"),
            "error_count": result["errorCount"],
            "error_kinds": error_kinds(report),
            "report_key": request.report_key,
        },
    )
    return result
