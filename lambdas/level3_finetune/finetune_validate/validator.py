"""The streaming core: byte chunks in (a local file or an S3 body), a bounded JSON-serializable report out.

Memory stays flat whatever the file size: lines are split from fixed-size chunks, one record is parsed at a
time, and each error kind keeps a count plus only its first ``FIRST_ERRORS_PER_KIND`` occurrences.

Line handling, decided here once:
  - lines are split on ``\\n`` only (``\\r\\n`` works: the ``\\r`` is JSON whitespace); a last line without a
    newline is a record like any other; line numbers are 1-based physical lines.
  - a blank (empty or whitespace-only) line is an error (``blank_line``) and not a record: JSON Lines has no
    empty lines, and a file that passes here is valid for any JSON Lines reader.
  - a UTF-8 byte-order mark at the start is an error (``utf8_bom``, AWS's own validator rejects it); the rest
    of line 1 is still checked.
  - bytes that are not UTF-8 are an error for that line (``invalid_utf8``); NaN and Infinity are not JSON.
  - a line over ``MAX_LINE_BYTES`` is not kept in memory (``line_too_long``); no family allows records that
    long, so it usually means the file is not JSON Lines at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from finetune_validate import formats
from finetune_validate.formats import (
    BLANK_LINE,
    FILE_TOO_LARGE,
    INVALID_JSON,
    INVALID_UTF8,
    LINE_TOO_LONG,
    OVER_DEFAULT_QUOTA,
    TOO_FEW_RECORDS,
    TOO_MANY_RECORDS,
    UTF8_BOM,
    VALIDATION_NOT_ALLOWED,
    WARNING_KINDS,
    ModelSpec,
    Problem,
    RecordChecker,
)

FIRST_ERRORS_PER_KIND = 20
CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 8 << 20
TRAINING = "training"
VALIDATION = "validation"
_BOM = "\ufeff"
# JSON's whitespace (RFC 8259, section 2); str.isspace() also takes U+00A0, U+2028 and other characters json refuses
# ("Extra data"), as AWS's dataset validator does (json.loads per line). The line ends at \n.
_JSON_SPACE = " \t\r"
_GZIP = b"\x1f\x8b"  # gzip's magic number (RFC 1952, section 2.3.1)
_NOT_PARSED: Any = object()
_BLANK: Any = object()
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN: Any = _DECODER.scan_once  # type: ignore[attr-defined]  # the C scanner behind decode()


# --- the pipeline's request rules ---------------------------------------------------------------------------
# What the pipeline's ValidateData refuses besides the data itself, one function per rule. The Lambda handler
# (handler.parse_request and handler.validate), python -m finetune_validate and kit l3 validate / start all call
# these, so the offline verdict is the pipeline's (a rule copied into a caller could drift from it).

# The types whose job takes the request's validation set: the pipeline's other CreateModelCustomizationJob calls
# (distillation, reinforcement fine-tuning) carry no ValidationDataConfig (stacks/level3_finetune/pipeline.py
# create_job), so a validation file for them would be dropped silently.
VALIDATION_SET_TYPES = (formats.FINE_TUNING, formats.CONTINUED_PRE_TRAINING)


class RequestRefused(ValueError):
    """A request the pipeline refuses before it reads any data; ``field`` names the request member (the handler's
    InvalidRequest field) and ``problem`` says what is wrong with it, without the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def validation_set_problem(customization_type: str) -> str | None:
    """Why the pipeline takes no validation set for ``customization_type`` (None: it passes one to the job)."""
    if customization_type in VALIDATION_SET_TYPES:
        return None
    return (
        f"the pipeline passes a validation set for {' and '.join(VALIDATION_SET_TYPES)} only, not "
        f"{customization_type}; drop it (or fold its records into the training file)"
    )


def on_demand_problem(base_model_id: str) -> str | None:
    """Why a stack deployed with ft_deploy 'on-demand' cannot serve a custom model of ``base_model_id`` (None: it
    can). Raises formats.UnsupportedBaseModel for a model id the kit does not know."""
    spec = formats.resolve_model(base_model_id)
    if spec.on_demand_deploy:
        return None
    served = ", ".join(sorted(model_id for model_id, model in formats.MODELS.items() if model.on_demand_deploy))
    return (
        f"{base_model_id} cannot be served by this stack's on-demand deployment (ft_deploy 'on-demand'; it "
        f"serves {served}, {spec.on_demand_source}): choose one of those, or deploy with ft_deploy 'provisioned'"
    )


# How to give the missing teacher of a DISTILLATION, by caller: the pipeline reads the configured teacher
# (ft_teacher_model_id) or a run's own teacherModelId; python -m finetune_validate reads no config.
SET_OR_GIVE_TEACHER = "set ft_teacher_model_id or give one per run"


def run_teacher(
    customization_type: str, own: str | None, default: str | None, missing: str = SET_OR_GIVE_TEACHER
) -> str | None:
    """The teacher a run distills from: its own, else the configured one (ft_teacher_model_id); None for any other
    type. Raises RequestRefused (field teacherModelId) for a teacher given to another type, or a distillation with
    neither (``missing``: how this caller's user gives one). The teacher itself (paired with the student, not past
    its end of life) is DatasetValidator's check."""
    if own is not None:
        if customization_type != formats.DISTILLATION:
            raise RequestRefused("teacherModelId", f"is for DISTILLATION only, not {customization_type}")
        return own
    if customization_type != formats.DISTILLATION:
        return None  # the configured teacher is not a teacher of other runs: ignored, not refused
    if default is None:
        raise RequestRefused("teacherModelId", f"is required for DISTILLATION ({missing})")
    return default


# A Bedrock foundation-model or inference-profile ARN (the account is empty for a foundation model):
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html#amazonbedrock-resources-for-iam-policies
MODEL_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]+):\d{0,12}:(?:foundation-model|inference-profile)/(?P<id>.+)$"
)


def teacher_invocable_problem(teacher_model_id: str, invocable: Collection[str], region: str | None) -> str | None:
    """Why a run's own teacher is not one the customization role may invoke (None: it is). ``invocable``: the
    stack's invocableTeacherModelIds (FineTuneSettings.invocable_teachers, which FineTuneStack grants); ``region``:
    the stack's Region, where the ARN of an invocable model id is that model. The job would fail only after it
    started otherwise. A cross-Region profile needs the profile and the model in each of its Regions granted
    (https://docs.aws.amazon.com/bedrock/latest/userguide/prequisites-model-distillation.html), which the stack
    grants for the configured teacher only."""
    model_id = teacher_model_id.strip()
    arn = MODEL_ARN.fullmatch(model_id)
    if arn and region is not None and arn["region"] == region:  # the ARN of an invocable id, in this Region
        model_id = arn["id"]
    if model_id in invocable:
        return None
    return (
        f"'{teacher_model_id[:120]}' is not a teacher the customization role may invoke; allowed: "
        f"{', '.join(invocable)} (ft_teacher_model_id as configured, or an active teacher's in-Region model id; "
        "to distill from another cross-Region profile, set it as ft_teacher_model_id and deploy)"
    )


def readable_media_prefix(bucket: str, datasets_prefix: str) -> str:
    """Where every image or video a record names must be: in the dataset's own bucket, as Bedrock reads media only
    from there ("Images and videos must be in the same Amazon S3 bucket as the dataset",
    https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html), and under the
    one prefix the customization role may read (stacks/level3_finetune/data.py)."""
    return f"s3://{bucket}/{datasets_prefix}"


# --- bounded error log --------------------------------------------------------------------------------------


@dataclass
class _Kind:
    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)


class ErrorLog:
    """Per error kind: how many, and the first ``keep`` occurrences with their 1-based line numbers."""

    def __init__(self, keep: int = FIRST_ERRORS_PER_KIND, doc: str | None = None) -> None:
        self._keep = keep
        self._kinds: dict[str, _Kind] = {}
        self.doc = doc  # where the rules of this file's format are documented (named in the report per kind)

    def add(self, kind: str, line: int | None, message: str) -> None:
        entry = self._kinds.get(kind)
        if entry is None:
            entry = self._kinds[kind] = _Kind()
        entry.count += 1
        if len(entry.first) < self._keep:
            entry.first.append({"line": line, "message": message})

    @property
    def total(self) -> int:
        return sum(entry.count for entry in self._kinds.values())

    def counts(self) -> dict[str, int]:
        return {kind: entry.count for kind, entry in self._kinds.items()}

    def to_dict(self) -> dict[str, Any]:
        extra = {"doc": self.doc} if self.doc else {}
        return {
            kind: {"count": entry.count, "first": list(entry.first), **extra} for kind, entry in self._kinds.items()
        }


# --- text blocks from chunks -------------------------------------------------------------------------------


class BlockReader:
    """Turns byte chunks into decoded text blocks that end on a line boundary, with bounded memory.

    Yields ``(text, dirty)``: ``text`` holds whole lines (the last block may lack a final newline); ``dirty``
    says the block held bytes that are not UTF-8 (decoded with ``surrogateescape`` so each such byte shows
    as a lone surrogate U+DC80..U+DCFF, which valid UTF-8 never produces). A line longer than
    ``max_line_bytes`` is dropped while it streams past and yielded as ``(None, False)``. A newline byte never
    occurs inside a multi-byte UTF-8 sequence, so cutting at newlines never splits a character.
    """

    def __init__(self, chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._chunks = chunks
        self.max_line_bytes = max_line_bytes
        self.bytes = 0

    def __iter__(self) -> Iterator[tuple[str | None, bool]]:
        pending = b""
        skipping = False
        limit = self.max_line_bytes
        for chunk in self._chunks:
            if not chunk:
                continue
            self.bytes += len(chunk)
            if skipping:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                skipping = False
                yield None, False
                chunk = chunk[cut + 1 :]
            if pending:
                chunk = pending + chunk
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending = chunk
            else:
                pending = chunk[cut + 1 :]
                yield _decode_block(chunk[: cut + 1])
            if len(pending) > limit:
                pending, skipping = b"", True
        if skipping:
            yield None, False
        elif pending:
            yield _decode_block(pending)


def _decode_block(block: bytes) -> tuple[str, bool]:
    try:
        return block.decode(), False
    except UnicodeDecodeError:
        return block.decode("utf-8", "surrogateescape"), True


def iter_lines(chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str | None]:
    """The lines of a byte-chunk stream, without their newline (None for an over-long line). For tools/tests."""
    for text, _dirty in BlockReader(chunks, max_line_bytes):
        if text is None:
            yield None
            continue
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        yield from lines


def iter_file_chunks(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A local file as byte chunks (opened lazily, on first iteration)."""
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk


# --- one file -----------------------------------------------------------------------------------------------


class Section:
    """What one file (training or validation) held, and what was wrong with it."""

    def __init__(self, name: str, keep: int, doc: str | None = None) -> None:
        self.name = name
        self.lines = 0
        self.records = 0
        self.invalid_records = 0
        self.bytes = 0
        self.errors = ErrorLog(keep, doc)
        # Reported, never make the file invalid (formats.WARNING_KINDS: token estimates near a limit, record counts
        # over an adjustable default quota, Llama 3.1's extra keys and empty sides).
        self.warnings = ErrorLog(keep, doc)
        self.own_limit_line: int | None = None  # the line of the first record over this file's own maximum
        self.total_limit_line: int | None = None  # the line where training + validation went over the total

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "invalidRecords": self.invalid_records,
            "lines": self.lines,
            "bytes": self.bytes,
            "errorCount": self.errors.total,
            "errors": self.errors.to_dict(),
            "warningCount": self.warnings.total,
            "warnings": self.warnings.to_dict(),
        }


class DatasetValidator:
    """Validates a training file, then optionally a validation file, for one base model; then reports.

    Raises ``formats.UnsupportedBaseModel`` at construction for a base model id it does not know or one past its
    end of life, and ``formats.UnsupportedCustomizationType`` for a type the model does not offer (or a
    distillation teacher that is not paired with it, or past its end of life).
    """

    def __init__(
        self,
        base_model_id: str,
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        customization_type: str = formats.FINE_TUNING,
        teacher_model_id: str | None = None,
        today: date | None = None,
        keep: int = FIRST_ERRORS_PER_KIND,
        max_line_bytes: int = MAX_LINE_BYTES,
        media_prefix: str | None = None,
    ) -> None:
        self.spec: ModelSpec = formats.resolve_model(base_model_id)
        problem = formats.check_customization_type(customization_type, self.spec)
        if problem is not None:
            raise formats.UnsupportedCustomizationType(problem)
        self.warnings: list[dict[str, str]] = []
        lifecycle = self.spec.lifecycle.problem(self.spec.name or self.spec.base_model_id, today)
        if lifecycle is not None:
            if lifecycle[0] == "refused":
                raise formats.UnsupportedBaseModel(lifecycle[1])
            self.warnings.append({"kind": lifecycle[0], "message": lifecycle[1]})
        self.teacher_model_id = teacher_model_id
        if teacher_model_id is not None or customization_type == formats.DISTILLATION:
            if customization_type != formats.DISTILLATION:
                raise formats.UnsupportedCustomizationType(
                    f"A teacher model is used by DISTILLATION only, not {customization_type}."
                )
            if teacher_model_id is not None:
                pair = formats.check_distillation_pair(teacher_model_id, self.spec, today)
                if pair is not None:
                    raise formats.UnsupportedCustomizationType(pair)
                teacher = formats.resolve_teacher(teacher_model_id)
                legacy = teacher.lifecycle.problem(teacher.name, today) if teacher else None
                if legacy is not None:
                    self.warnings.append({"kind": legacy[0], "message": legacy[1]})
        self.customization_type = customization_type
        self.kind = self.spec.for_type(customization_type)
        self.keep = keep
        self.max_line_bytes = max_line_bytes
        self.hyperparameter_errors, parsed = formats.check_hyperparameters(
            hyperparameters or {}, self.spec, customization_type
        )
        # A value over a maximum AWS marks adjustable (Llama 3.1's epochCount): a warning naming the quota.
        self.warnings.extend(formats.quota_warnings(parsed, self.spec, customization_type))
        self.batch_size = int(parsed.get("batchSize", 1))
        self.max_record_tokens = self.kind.max_record_tokens(self.batch_size)
        self._checker = RecordChecker(self.spec, self.max_record_tokens, customization_type, media_prefix)
        self.max_record_chars = self._checker.error_chars
        self.training: Section | None = None
        self.validation: Section | None = None
        self._finished = False

    def check_training(self, chunks: Iterable[bytes]) -> Section:
        limits = self.kind.limits
        self.training = self._scan(TRAINING, chunks, limits.max_training_records, offset=0)
        return self.training

    def check_validation(self, chunks: Iterable[bytes]) -> Section:
        if self.training is None:
            raise RuntimeError("check the training file before the validation file")
        limits = self.kind.limits
        offset = self.training.records
        self.validation = self._scan(VALIDATION, chunks, limits.max_validation_records, offset=offset)
        return self.validation

    def _scan(self, name: str, chunks: Iterable[bytes], own_max: int | None, offset: int) -> Section:
        """The hot loop: one pass over the stream, one record in memory at a time.

        Valid lines are parsed in place by the C JSON scanner at their offset in the decoded block (no
        per-line string); a line that does not parse cleanly there goes through ``_parse_line``, which
        names the problem exactly as a line-by-line reader would.
        """
        section = Section(name, self.keep, self.kind.doc)
        warn = section.warnings.add
        total_max = self.kind.limits.max_total_records
        over_own = own_max + 1 if own_max is not None else -1
        over_total = total_max + 1 - offset if total_max is not None else -1
        reader = BlockReader(chunks, self.max_line_bytes)
        add = section.errors.add
        check = self._checker.check
        scan = _SCAN
        limit = self.max_line_bytes
        too_long = (LINE_TOO_LONG, f"The line is longer than {limit:,} bytes and was not parsed.")
        lineno = records = invalid = 0
        for text, dirty in reader:
            if text is None:
                lineno += 1
                records += 1
                if records == over_own:
                    section.own_limit_line = lineno
                if records == over_total:
                    section.total_limit_line = lineno
                invalid += 1
                add(too_long[0], lineno, too_long[1])
                continue
            pos, size, fast = 0, len(text), not dirty
            while pos < size:
                nl = text.find("\n", pos)
                if nl < 0:
                    nl = size
                lineno += 1
                record: Any = _NOT_PARSED
                problem: Problem | None = None
                if nl - pos > limit:
                    problem = too_long
                else:
                    if fast:
                        try:
                            record, end = scan(text, pos)
                            if end != nl:
                                if end > nl:  # JSON spanning lines: parse this block line by line from here on
                                    fast = False
                                    record = _NOT_PARSED
                                elif text[end:nl].strip(_JSON_SPACE):  # only JSON's whitespace may follow
                                    record = _NOT_PARSED
                        except (StopIteration, ValueError, RecursionError):
                            record = _NOT_PARSED
                    if record is _NOT_PARSED:
                        record, problem = self._parse_line(text[pos:nl], lineno, dirty, add)
                pos = nl + 1
                if record is _BLANK:
                    continue
                records += 1
                if records == over_own:
                    section.own_limit_line = lineno
                if records == over_total:
                    section.total_limit_line = lineno
                if problem is not None:
                    invalid += 1
                    add(problem[0], lineno, problem[1])
                    continue
                problems = check(record)
                if problems:
                    bad = False
                    for kind, message in problems:
                        if kind in WARNING_KINDS:
                            warn(kind, lineno, message)
                        else:
                            bad = True
                            add(kind, lineno, message)
                    invalid += bad
        section.lines, section.records, section.invalid_records = lineno, records, invalid
        section.bytes = reader.bytes
        return section

    @staticmethod
    def _parse_line(line: str, lineno: int, dirty: bool, add: Any) -> tuple[Any, Problem | None]:
        """The slow path for one line: (record, None), (_NOT_PARSED, problem) or (_BLANK, None)."""
        if dirty and _UNDECODABLE.search(line):
            raw = line.encode("utf-8", "surrogateescape")
            try:
                raw.decode()
            except UnicodeDecodeError as exc:
                packed = (
                    " The file looks gzip-compressed: upload the uncompressed JSON Lines." if raw[:2] == _GZIP else ""
                )
                message = f"Byte {exc.start + 1} of the line is not UTF-8 ({exc.reason}).{packed}"
                return _NOT_PARSED, (INVALID_UTF8, message)
        if lineno == 1 and line[:1] == _BOM:
            add(UTF8_BOM, 1, "The file starts with a UTF-8 byte-order mark; save it without one.")
            line = line[1:]
        try:
            return _DECODER.decode(line), None
        except (ValueError, RecursionError) as exc:
            if not line.strip(_JSON_SPACE):
                add(BLANK_LINE, lineno, "The line is blank; JSON Lines has one JSON object per line.")
                return _BLANK, None
            return _NOT_PARSED, (INVALID_JSON, _json_message(exc, line))

    # -- dataset-level rules --

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        training, validation = self.training, self.validation
        if training is None:
            raise RuntimeError("no training file was checked")
        limits, family = self.kind.limits, self.spec.family
        if training.records < limits.min_training_records:
            training.errors.add(
                TOO_FEW_RECORDS,
                None,
                f"The training file holds {training.records:,} records; {family} needs at least "
                f"{limits.min_training_records:,}.",
            )
        self._check_own_limits(training, limits.max_training_records, limits.max_training_bytes)
        if validation is not None:
            if not self.kind.validation_allowed:
                validation.errors.add(
                    VALIDATION_NOT_ALLOWED,
                    None,
                    f"{self.spec.base_model_id} takes no validation set for {self.customization_type} "
                    f"({self.kind.doc}); drop the validation file (or fold its records into the training file).",
                )
            elif (pipeline := validation_set_problem(self.customization_type)) is not None:
                validation.errors.add(VALIDATION_NOT_ALLOWED, None, f"{pipeline[:1].upper()}{pipeline[1:]}.")
            if validation.records == 0:
                validation.errors.add(TOO_FEW_RECORDS, None, "The validation file holds no records.")
            self._check_own_limits(validation, limits.max_validation_records, limits.max_validation_bytes)
        total = training.records + (validation.records if validation else 0)
        together = "Training and validation hold" if validation else "The training file holds"
        last = validation or training
        if limits.min_total_records is not None and total < limits.min_total_records:
            last.errors.add(
                TOO_FEW_RECORDS,
                None,
                f"{together} {total:,} records; {family} needs at least {limits.min_total_records:,} in total.",
            )
        if limits.max_total_records is not None and total > limits.max_total_records:
            where = training if training.total_limit_line is not None else last
            if where.total_limit_line is not None and where.total_limit_line == where.own_limit_line:
                return  # that file's own maximum was crossed on the same line: one error says it
            if limits.max_total_adjustable:  # a default quota AWS marks adjustable: a warning naming it
                where.warnings.add(
                    OVER_DEFAULT_QUOTA,
                    where.total_limit_line,
                    f"{together} {total:,} records, over the default quota of {limits.max_total_records:,} in total "
                    f"for {self.spec.name or self.spec.base_model_id}, which AWS marks adjustable ({self.kind.doc}). "
                    "Bedrock refuses the job unless the account's value of "
                    f'the Amazon Bedrock quota "{formats.record_quota_name(self.spec, self.customization_type)}" '
                    f"(Service Quotas; its model name may be worded slightly differently there) is at least {total:,}: "
                    "raise it first, or drop records (this line holds the "
                    "first record over the default).",
                )
                return
            where.errors.add(
                TOO_MANY_RECORDS,
                where.total_limit_line,
                f"{together} {total:,} records; {family} allows at most {limits.max_total_records:,} in total "
                "(this line holds the first record over the limit).",
            )

    def _check_own_limits(self, section: Section, max_records: int | None, max_bytes: int | None) -> None:
        family = self.spec.family
        if max_records is not None and section.records > max_records:
            source = self.kind.limits.record_caps_source
            cited = f", a cap from {source} that AWS's page does not state" if source else ""
            section.errors.add(
                TOO_MANY_RECORDS,
                section.own_limit_line,
                f"The {section.name} file holds {section.records:,} records; {family} allows at most "
                f"{max_records:,}{cited} (this line holds the first record over the limit).",
            )
        if max_bytes is not None and section.bytes > max_bytes:
            section.errors.add(
                FILE_TOO_LARGE,
                None,
                f"The {section.name} file is {section.bytes:,} bytes; {family} allows at most {max_bytes:,}.",
            )

    def report(self, checked_at: datetime | None = None) -> dict[str, Any]:
        """The JSON-serializable report: validity, per-file counts and bounded errors, hyperparameters, limits."""
        self._finish()
        assert self.training is not None
        limits: dict[str, Any] = dict(self.kind.limits.to_dict())
        if self.kind.limits.max_total_adjustable:
            limits["maxTotalRecordsQuota"] = formats.record_quota_name(self.spec, self.customization_type)
        if self.max_record_tokens is not None:
            limits["maxRecordTokens"] = self.max_record_tokens
            limits["tokenEstimate"] = (
                f"characters / {self._checker.chars_per_token} (no tokenizer offline); a warning within "
                f"{round((1 - formats.TOKEN_WARNING_MARGIN) * 100)}% of the limit, an error only over "
                f"{formats.PLANNING_CHARS_PER_TOKEN} characters per token"
            )
        limits["validationAllowed"] = self.kind.validation_allowed
        sections = [s for s in (self.training, self.validation) if s is not None]
        error_count = sum(s.errors.total for s in sections) + len(self.hyperparameter_errors)
        warning_count = sum(s.warnings.total for s in sections) + len(self.warnings)
        when = checked_at or datetime.now(UTC)
        return {
            "valid": error_count == 0,
            "family": self.spec.family,
            "baseModelId": self.spec.base_model_id,
            "customizationType": self.customization_type,
            "teacherModelId": self.teacher_model_id,
            "doc": self.kind.doc,
            "errorCount": error_count,
            "warningCount": warning_count,
            "warnings": list(self.warnings),
            "training": self.training.to_dict(),
            "validation": self.validation.to_dict() if self.validation is not None else None,
            "hyperparameters": {"errors": list(self.hyperparameter_errors)},
            "limits": limits,
            "notes": list(self.spec.notes),
            "checkedAt": when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


_TRAILING_COMMA = re.compile(r",\s*[}\]]")


def _json_message(exc: BaseException, line: str = "") -> str:
    if isinstance(exc, json.JSONDecodeError):
        comma = _TRAILING_COMMA.search(line, max(0, exc.pos - 64), exc.pos + 1) if line else None
        if comma is not None and comma.end() - 1 == exc.pos:
            return (
                f"Not valid JSON: a trailing comma before '{line[exc.pos]}' at column {comma.start() + 1} "
                "(JSON allows none); remove it."
            )
        hint = ""
        if exc.msg == "Extra data" and line[: exc.pos].rstrip(" \t").endswith("\r"):
            hint = " (a carriage return alone ends no line here: save the file with \\n or \\r\\n line endings)"
        elif exc.pos < len(line) and line[exc.pos] == "\x00":
            hint = " (a NUL byte, which a text file does not hold: save the file as UTF-8 JSON Lines)"
        return f"Not valid JSON: {exc.msg} at column {exc.colno}{hint}."
    if isinstance(exc, RecursionError):
        return "Not valid JSON here: the value is nested too deeply."
    return f"Not valid JSON: {exc}."


# --- entry points -------------------------------------------------------------------------------------------


def validate_dataset(
    training: Iterable[bytes],
    *,
    base_model_id: str,
    validation: Iterable[bytes] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    keep: int = FIRST_ERRORS_PER_KIND,
    customization_type: str = formats.FINE_TUNING,
    teacher_model_id: str | None = None,
    today: date | None = None,
    media_prefix: str | None = None,
) -> dict[str, Any]:
    """Validate byte-chunk streams (a file, an S3 body's ``iter_chunks()``) and return the report. ``media_prefix``:
    where every image or video a record names must be (readable_media_prefix; None: not checked)."""
    validator = DatasetValidator(
        base_model_id,
        hyperparameters,
        keep=keep,
        customization_type=customization_type,
        teacher_model_id=teacher_model_id,
        today=today,
        media_prefix=media_prefix,
    )
    validator.check_training(training)
    if validation is not None:
        validator.check_validation(validation)
    return validator.report()


def validate_files(
    training_path: str,
    *,
    base_model_id: str,
    validation_path: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    customization_type: str = formats.FINE_TUNING,
    teacher_model_id: str | None = None,
    today: date | None = None,
    media_prefix: str | None = None,
) -> dict[str, Any]:
    """Validate local JSON Lines files."""
    return validate_dataset(
        iter_file_chunks(training_path),
        base_model_id=base_model_id,
        validation=iter_file_chunks(validation_path) if validation_path else None,
        hyperparameters=hyperparameters,
        customization_type=customization_type,
        teacher_model_id=teacher_model_id,
        today=today,
        media_prefix=media_prefix,
    )


def error_kinds(report: Mapping[str, Any]) -> dict[str, int]:
    """Error counts by kind over the whole report (training, validation, hyperparameters)."""
    counts: dict[str, int] = {}
    for name in (TRAINING, VALIDATION):
        section = report.get(name) or {}
        for kind, entry in (section.get("errors") or {}).items():
            counts[kind] = counts.get(kind, 0) + int(entry["count"])
    for error in report["hyperparameters"]["errors"]:
        counts[error["kind"]] = counts.get(error["kind"], 0) + 1
    return counts


def first_error(report: Mapping[str, Any]) -> tuple[str, int | None, str] | None:
    """(section, line, kind) of the earliest reported error in the first file that has one."""
    for name in (TRAINING, VALIDATION):
        section = report.get(name) or {}
        errors = section.get("errors") or {}
        found = [(item["line"], kind) for kind, entry in errors.items() for item in entry["first"]]
        if found:
            numbered = [(line, kind) for line, kind in found if line is not None]
            line, kind = min(numbered) if numbered else found[0]
            return name, line, kind
    return None


def summarize(report: Mapping[str, Any]) -> str:
    """One line: VALID or INVALID, record counts, error kinds and where the first error is."""
    model = f"{report['baseModelId']} ({report['family']})"
    training = report["training"]["records"]
    validation = report["validation"]["records"] if report.get("validation") else None
    counted = f"{training:,} training" + (f" and {validation:,} validation" if validation is not None else "")
    if report["valid"]:
        warned = report.get("warningCount") or 0
        suffix = f" ({warned:,} warning{'s' if warned != 1 else ''})" if warned else ""
        return f"VALID: {counted} records for {model}{suffix}."
    kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(error_kinds(report).items()))
    where = first_error(report)
    first = ""
    if where is not None:
        section, line, kind = where
        first = f"; first: {section} line {line} ({kind})" if line is not None else f"; first: {section} ({kind})"
    return f"INVALID: {report['errorCount']:,} error(s) in {counted} records for {model}: {kinds}{first}."
