"""Lambda entry point of the SageMaker fine-tuning pipeline's data check (``sagemaker_validate.handler.handler``).

The ValidateData state invokes it before CreateTrainingJob with::

    {"bucket": str, "trainingKey": str}

and it reads what the training job would read: the job's ``train`` channel is an S3Prefix channel on
``s3://bucket/trainingKey`` (stacks/level3_finetune/sagemaker_pipeline.py ``_channel``), and "SageMaker uses all
objects that match the specified key name prefix"
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_S3DataSource.html); of those, the training program
reads the files named ``*.jsonl`` (chat_data.data_files). So every object whose key starts with trainingKey and
whose name ends in ``.jsonl`` is checked, in key order, line by line as the program counts lines (Python's
universal newlines: ``\\n``, ``\\r\\n`` and ``\\r`` each end a line; blank lines are skipped but counted), with the
record rules of workloads/finetune_sagemaker/chat_records.py, the one copy the training program applies too.

Each object is streamed in chunks (never read whole): memory is bounded by the chunk size and the longest line;
a line longer than MAX_LINE_BYTES is reported, not read. The check stops at MAX_PROBLEMS problems.

It returns ``{"valid", "records", "files", "problems", "complete", "summary", "importSlot"}``: ``problems`` holds
up to MAX_PROBLEMS texts ``<key>:<line>: <reason>`` (or ``<key>: <reason>`` for the whole prefix), ``complete`` is
false when the check stopped early, and ``summary`` is one line for the rejection's Cause. ``importSlot`` is
``{"free", "summary"}``: whether Bedrock's imported-models quota has room for the run's import (see
:func:`import_slot`; checked only for valid data). Invalid data is a
result, not an error. Errors: ``InvalidRequest`` (a ValueError naming the field of a malformed event) and S3's own
(a missing bucket, access denied) after botocore's retries; the state machine notifies either as a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.clients import bounded_client
from common.s3 import BUCKET_NAME, S3_KEY_MAX_BYTES
from workloads.finetune_sagemaker.chat_records import RecordError, is_blank, line_messages

logger = Logger()

SUFFIX = ".jsonl"  # the files the training program reads (chat_data.data_files: rglob("*.jsonl"))
MAX_PROBLEMS = 10
MAX_REASON_CHARS = 300  # a reason may quote a value from the data (a role); the whole result stays small
MAX_LINE_BYTES = 16 << 20
CHUNK_BYTES = 256 << 10
# One call waits at most CONNECT + READ per attempt; botocore's standard mode retries throttling and 5xx.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 5  # the first try included
NEWLINE = re.compile(rb"\r\n|\r|\n")


class InvalidRequest(ValueError):
    """The event lacks a field or holds one of the wrong type; ``field`` and the message name it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class LineTooLong:
    """Stands for a line longer than MAX_LINE_BYTES in what :func:`split_lines` yields."""


TOO_LONG = LineTooLong()


def get_s3_client() -> Any:
    """The S3 client, created on first use (boto3 is imported there, not at module import)."""
    return bounded_client("s3", CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS)


# The quota reads answer small pages at once: each call waits at most QUOTA_ATTEMPTS x (2 s + 5 s), so the check
# (about four calls) fits QUOTA_CHECK_BUDGET_MS, and a run with less time left skips it rather than time out.
QUOTA_CONNECT_TIMEOUT_S = 2
QUOTA_READ_TIMEOUT_S = 5
QUOTA_ATTEMPTS = 3
QUOTA_CHECK_BUDGET_MS = 90_000


def get_bedrock_client() -> Any:
    return bounded_client("bedrock", QUOTA_CONNECT_TIMEOUT_S, QUOTA_READ_TIMEOUT_S, QUOTA_ATTEMPTS)


def get_quotas_client() -> Any:
    return bounded_client("service-quotas", QUOTA_CONNECT_TIMEOUT_S, QUOTA_READ_TIMEOUT_S, QUOTA_ATTEMPTS)


# --- request ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    bucket: str
    training_key: str


def parse_request(event: Any) -> Request:
    """The typed request; raises InvalidRequest naming the first bad field."""
    if not isinstance(event, dict):
        raise InvalidRequest("event", f"must be an object with bucket and trainingKey, got {type(event).__name__}")
    bucket = event.get("bucket")
    if not isinstance(bucket, str) or not BUCKET_NAME.fullmatch(bucket):
        raise InvalidRequest("bucket", f"must be an S3 bucket name, got {ascii(bucket)[:80]}")
    key = event.get("trainingKey")
    if not isinstance(key, str):
        raise InvalidRequest("trainingKey", f"must be a string (a key or prefix), got {type(key).__name__}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, from a JSON escape such as \ud800
        raise InvalidRequest("trainingKey", f"{ascii(key)[:80]} is not UTF-8 text, as an S3 key is") from None
    if size > S3_KEY_MAX_BYTES:
        raise InvalidRequest("trainingKey", f"is longer than {S3_KEY_MAX_BYTES} bytes, the S3 key limit")
    return Request(bucket, key)


# --- reading ------------------------------------------------------------------------------------------------


def training_files(bucket: str, prefix: str) -> tuple[list[str], int]:
    """The keys under ``prefix`` the training program reads (names ending in .jsonl, in key order) and the number
    of other objects the job would download but the program leaves alone."""
    files: list[str] = []
    others = 0
    for page in get_s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith("/") and key.rsplit("/", 1)[-1].endswith(SUFFIX):
                files.append(key)
            else:
                others += 1
    return sorted(files), others


def object_chunks(bucket: str, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The object's bytes in chunks from one streaming GET (issued on first iteration), never the whole body."""
    body = get_s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def split_lines(chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | LineTooLong]:
    """The lines of a byte stream without their ends, split as Python's universal newlines split text (a line
    ends at \\r\\n, \\r or \\n; UTF-8 never holds these bytes inside a character, so bytes split like the text).
    A line longer than ``max_line_bytes`` is yielded as TOO_LONG, once, and its bytes are dropped as they come."""
    buffer = bytearray()
    scanned = 0  # buffer[:scanned] holds no line end
    skipping = False  # inside a line already reported as too long
    for chunk in _with_end(chunks):
        final = chunk is None
        if chunk:
            buffer += chunk
        start = 0
        for found in NEWLINE.finditer(buffer, max(scanned - 1, 0)):
            if found.group() == b"\r" and found.end() == len(buffer) and not final:
                break  # may be the first half of \r\n: decide when the next chunk comes
            if skipping:
                skipping = False
            elif found.start() - start > max_line_bytes:
                yield TOO_LONG
            else:
                yield bytes(buffer[start : found.start()])
            start = found.end()
        del buffer[:start]
        scanned = len(buffer)
        if len(buffer) > max_line_bytes:
            if not skipping:
                yield TOO_LONG
                skipping = True
            keep = 1 if buffer.endswith(b"\r") else 0
            del buffer[: len(buffer) - keep]
            scanned = len(buffer)
        if final:
            if buffer and not skipping:
                yield bytes(buffer)  # at most max_line_bytes: longer was caught above
            return


def _with_end(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    yield from chunks
    yield None


# --- checking -----------------------------------------------------------------------------------------------


def short_reason(reason: str) -> str:
    """The reason, cut to MAX_REASON_CHARS."""
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


@dataclass
class Check:
    """What the check found so far."""

    records: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.problems) >= MAX_PROBLEMS

    def add(self, where: str, reason: str) -> None:
        self.problems.append(f"{where}: {short_reason(reason)}")

    def check_file(self, key: str, lines: Iterable[bytes | LineTooLong]) -> None:
        """Every line of one file, numbered as the training program numbers them, until MAX_PROBLEMS."""
        self.files += 1
        for number, raw in enumerate(lines, start=1):
            if isinstance(raw, LineTooLong):
                self.records += 1
                self.add(f"{key}:{number}", f"longer than {MAX_LINE_BYTES >> 20} MiB, too long to check")
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    self.records += 1
                    self.add(f"{key}:{number}", f"not UTF-8 text (byte {err.start + 1} of the line)")
                    continue
                if is_blank(text):
                    continue
                self.records += 1
                try:
                    line_messages(text)
                except RecordError as err:
                    self.add(f"{key}:{number}", str(err))
            if self.full:
                return


def validate(request: Request) -> dict[str, Any]:
    """Check every file the job would read; the result the state machine branches on."""
    location = f"s3://{request.bucket}/{request.training_key}"
    files, others = training_files(request.bucket, request.training_key)
    check = Check()
    for key in files:
        check.check_file(key, split_lines(object_chunks(request.bucket, key)))
        if check.full:
            break
    complete = not check.full
    if not files:
        check.add(
            request.training_key or "(the whole bucket)",
            f"no object under {location} is named *{SUFFIX} ({others} other objects): the training program reads "
            f"only {SUFFIX} files",
        )
    elif complete and not check.records:
        check.add(request.training_key, f"the {SUFFIX} files under {location} hold no records")
    valid = not check.problems
    if valid:
        summary = f"{check.records} records in {check.files} files under {location}"
    else:
        shown = "; ".join(check.problems)
        more = "" if complete else f" (the check stopped after {MAX_PROBLEMS} problems)"
        summary = f"the training data under {location} cannot be trained on: {shown}{more}"
    return {
        "valid": valid,
        "records": check.records,
        "files": check.files,
        "problems": check.problems,
        "complete": complete,
        "summary": summary,
    }


# --- the import slot ----------------------------------------------------------------------------------------

# The run imports its merged model into Bedrock (Custom Model Import), and imported models count against the
# Region's "Imported models per account" quota (3 by default, adjustable;
# https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock). A full quota refuses the import only
# after the paid training job (the pipeline then waits hours for a slot and fails), so it is checked here, before
# any instance starts: the quota's value (GetServiceQuota; the AWS default where no value is applied) against the
# models imported in the Region (ListImportedModels, every page). A model an import job still running will create
# is not counted, and another run may take the last slot after this check: the import's own retries still cover
# those. A read that fails leaves the run to go on, as before the check.
QUOTA_CODE_ENV = "IMPORTED_MODELS_QUOTA_CODE"  # the stack sets it (stacks/level3_finetune/names.py)
QUOTA_SERVICE = "bedrock"
SHOWN_MODELS = 3


def imported_model_names() -> list[str]:
    """The models imported into Bedrock in this Region (every page)."""
    pages = get_bedrock_client().get_paginator("list_imported_models").paginate()
    return [str(model["modelName"]) for page in pages for model in page.get("modelSummaries") or []]


def quota_value(code: str) -> tuple[str, float] | None:
    """(name, value) of the Bedrock quota ``code``: its applied value, else its AWS default; None without a value.
    GetServiceQuota answers NoSuchResourceException for a quota with no applied value
    (https://docs.aws.amazon.com/servicequotas/2019-06-24/apireference/API_GetServiceQuota.html)."""
    from botocore.exceptions import ClientError

    from common.errors import aws_error_code  # botocore's exceptions: imported on the first check, not cold

    client = get_quotas_client()
    try:
        answer = client.get_service_quota(ServiceCode=QUOTA_SERVICE, QuotaCode=code)
    except ClientError as exc:
        if aws_error_code(exc) != "NoSuchResourceException":
            raise
        answer = client.get_aws_default_service_quota(ServiceCode=QUOTA_SERVICE, QuotaCode=code)
    quota = answer.get("Quota") or {}
    value = quota.get("Value")
    return None if value is None else (str(quota.get("QuotaName") or code), float(value))


def import_slot(code: str) -> dict[str, Any]:
    """``{"free", "summary"}``: whether one more model can be imported in this Region now."""
    from botocore.exceptions import BotoCoreError, ClientError

    from common.errors import aws_error_code

    try:
        quota = quota_value(code)
        models = imported_model_names() if quota is not None else []
    except (BotoCoreError, ClientError) as exc:
        reason = aws_error_code(exc) or type(exc).__name__
        logger.warning("The imported-models quota was not checked", extra={"reason": reason})
        return {"free": True, "summary": f"the imported-models quota {code} was not checked ({reason})"}
    if quota is None:
        return {"free": True, "summary": f"the imported-models quota {code} has no value to check"}
    name, value = quota
    held = f"{len(models)} models imported against a quota of {value:g} ({name!r}, {code})"
    if len(models) < value:
        return {"free": True, "summary": f"{held}: room for this run's import"}
    region = os.environ.get("AWS_REGION", "<region>")
    shown = ", ".join(models[:SHOWN_MODELS]) + (
        f" and {len(models) - SHOWN_MODELS} more" if len(models) > SHOWN_MODELS else ""
    )
    return {
        "free": False,
        "summary": (
            f"{held} in {region} ({shown}): Bedrock would refuse this run's import after its paid training job. "
            f"Delete an imported model you no longer need (aws bedrock delete-imported-model --region {region} "
            f"--model-identifier <name>) or request a higher quota in Service Quotas (Amazon Bedrock, {code}), then "
            "start the run again. No training job was started."
        ),
    }


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Check the training data an execution names; return whether the training job may start."""
    try:
        request = parse_request(event)
    except InvalidRequest as exc:
        logger.warning("Invalid request", extra={"field": exc.field, "error_message": str(exc)})
        raise
    logger.append_keys(bucket=request.bucket, training_key=request.training_key)
    result = validate(request)
    if result["valid"] and context.get_remaining_time_in_millis() < QUOTA_CHECK_BUDGET_MS:
        logger.warning("Too little time left to check the imported-models quota: the run goes on")
        result["importSlot"] = {"free": True, "summary": "not checked: the data check used the function's time"}
    elif result["valid"]:
        result["importSlot"] = import_slot(os.environ[QUOTA_CODE_ENV])
    else:
        result["importSlot"] = {"free": True, "summary": "not checked: the data is refused first"}
    logger.info(
        "Training data checked",
        extra={
            "valid": result["valid"],
            "records": result["records"],
            "files": result["files"],
            "problems": len(result["problems"]),
            "complete": result["complete"],
            "import_slot_free": result["importSlot"]["free"],
        },
    )
    return result
