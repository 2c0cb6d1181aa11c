"""Lambda entry point of the Level 3 dataset check (``finetune_validate.handler.handler``).

A Step Functions task invokes it with::

    {"bucket": str, "trainingKey": str, "validationKey"?: str | null, "baseModelId": str,
     "customizationType"?: "FINE_TUNING" | "CONTINUED_PRE_TRAINING" | "DISTILLATION"
                           | "REINFORCEMENT_FINE_TUNING" (default FINE_TUNING),
     "teacherModelId"?: str | null (DISTILLATION: checked against the pairs in formats.TEACHERS),
     "hyperparameters": {str: str}, "reportKey": str}

The dataset keys must be locations CreateModelCustomizationJob accepts (every key segment of letters, digits
and - ! _ * ' ( ) . only; formats.check_data_key), or the job would be refused after the check passed.

It streams the dataset objects from S3 in chunks (never reading a whole body), validates them, writes the
report JSON to ``s3://bucket/reportKey`` (the bucket's default encryption applies; no ACL is set) and returns
``{"valid", "reportKey", "family", "customizationType", "trainingRecords", "validationRecords", "errorCount",
"warningCount", "summary"}``.

Errors the state machine can catch by name: ``InvalidRequest`` (a ``ValueError`` whose message names the
field; a customization type the base model does not offer, a base model past its end of life, a teacher not
paired with the student are ones too) and ``DatasetNotFound`` (names the
key). No text from the event reaches a message, a log line or the report unescaped: a lone surrogate (a JSON
``\\ud800``) cannot be encoded as UTF-8. Hyperparameter values that are not strings are not an
``InvalidRequest``: they are reported in the report (``hyperparameter_not_string``) with every other problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from finetune_validate.formats import (
    DISTILLATION,
    FINE_TUNING,
    UnsupportedBaseModel,
    UnsupportedCustomizationType,
    check_customization_type,
    check_data_key,
    check_pipeline_type,
    json_type,
    printable,
    resolve_model,
)
from finetune_validate.validator import DatasetValidator, error_kinds, summarize

logger = Logger()

CHUNK_BYTES = 1 << 20
MAX_KEY_CHARS = 1024
REPORT_CONTENT_TYPE = "application/json"
CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 5},
    "connect_timeout": 5,
    "read_timeout": 60,
}
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
    training_key: str
    validation_key: str | None
    base_model_id: str
    hyperparameters: dict[str, Any]
    report_key: str
    customization_type: str = FINE_TUNING
    teacher_model_id: str | None = None


@lru_cache(maxsize=1)
def get_s3_client() -> Any:
    """The S3 client, created on first use (boto3 is imported here, not at module import)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(**CLIENT_CONFIG))


# --- request ------------------------------------------------------------------------------------------------


def parse_request(event: Any) -> Request:
    """The typed request; raises InvalidRequest naming the first bad field."""
    if not isinstance(event, dict):
        fields = "bucket, trainingKey, baseModelId, hyperparameters, reportKey"
        raise InvalidRequest("event", f"must be an object with {fields}; got {json_type(event)}")
    bucket = _required_text(event, "bucket")
    if not BUCKET_NAME.match(bucket):
        raise InvalidRequest("bucket", f"'{bucket[:80]}' is not an S3 bucket name")
    training_key = _key(event, "trainingKey")
    validation_key = _key(event, "validationKey") if event.get("validationKey") is not None else None
    base_model_id = _required_text(event, "baseModelId")
    try:
        spec = resolve_model(base_model_id)
    except UnsupportedBaseModel as exc:
        raise InvalidRequest("baseModelId", str(exc)) from None
    # Absent: fine-tuning (the contract before customization types). Present, it must be a type (null is not).
    customization_type = event.get("customizationType", FINE_TUNING)
    problem = check_customization_type(customization_type, spec) or check_pipeline_type(customization_type)
    if problem is not None:
        raise InvalidRequest("customizationType", problem)
    teacher_model_id = event.get("teacherModelId")
    if teacher_model_id is not None:
        if customization_type != DISTILLATION:
            raise InvalidRequest("teacherModelId", f"is for DISTILLATION only, not {customization_type}")
        teacher_model_id = _required_text(event, "teacherModelId")
    for field, key in (("trainingKey", training_key), ("validationKey", validation_key)):
        bad = check_data_key(bucket, key) if key is not None else None
        if bad is not None:
            raise InvalidRequest(field, bad)
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
    )


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
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequest(field, f"is longer than {MAX_KEY_CHARS} characters, the S3 key limit")
    if printable(key) != key:
        raise InvalidRequest(field, f"'{key[:80]}' holds a lone surrogate; an S3 key is UTF-8 text")
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
        )
    except UnsupportedBaseModel as exc:  # past its end of life
        raise InvalidRequest("baseModelId", str(exc)) from None
    except UnsupportedCustomizationType as exc:  # a teacher not paired with the student, or past its end of life
        raise InvalidRequest("teacherModelId", str(exc)) from None
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
    summary = summarize(report)
    validation = report["validation"]
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
    }
    logger.info(
        "Dataset validated",
        extra={
            "valid": result["valid"],
            "training_records": result["trainingRecords"],
            "validation_records": result["validationRecords"],
            "training_bytes": report["training"]["bytes"],
            "error_count": result["errorCount"],
            "error_kinds": error_kinds(report),
            "report_key": request.report_key,
        },
    )
    return result
