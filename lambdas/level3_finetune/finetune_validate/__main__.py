"""Local command: check a fine-tuning dataset before uploading it (`kit l3 validate` runs the same rules; the
package is importable by its name in the kit's .venv, which `make setup` installs editable).

    .venv/bin/python -m finetune_validate TRAIN.jsonl --base-model amazon.nova-lite-v1:0:300k \\
        [--validation VAL.jsonl] [--hyperparameters '{"epochCount":"2"}'] [--report report.json] \\
        [--customization-type FINE_TUNING|CONTINUED_PRE_TRAINING|DISTILLATION|REINFORCEMENT_FINE_TUNING] \\
        [--teacher-model amazon.nova-pro-v1:0] [--datasets-uri s3://BUCKET/datasets/] [--on-demand-deploy]

It applies the pipeline's rules (finetune_validate.validator, the functions its ValidateData Lambda calls): a
validation file only for the types the pipeline passes one to, a teacher for DISTILLATION, and with the options
the media location (--datasets-uri: the stack's DataBucketName and datasets/) and the on-demand deployment.

Exit status: 0 the dataset is valid, 1 it is not, 2 usage error (bad arguments, unreadable file, unsupported
base model or customization type, a DISTILLATION without a teacher, a base model the on-demand deployment cannot
serve, hyperparameters that are not a JSON object).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from common.s3 import BUCKET_NAME_PATTERN
from finetune_validate.formats import (
    CUSTOMIZATION_TYPES,
    DEFAULT_BASE_MODEL,
    FINE_TUNING,
    MODELS,
    UnsupportedBaseModel,
    UnsupportedCustomizationType,
    printable,
)
from finetune_validate.validator import (
    DatasetValidator,
    RequestRefused,
    iter_file_chunks,
    on_demand_problem,
    run_teacher,
    summarize,
)

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
SHOWN_PER_KIND = 5
# --datasets-uri: an S3 bucket name (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html,
# the handler's BUCKET_NAME) and a prefix ending in / (the handler's datasetsPrefix rule).
DATASETS_URI = re.compile(rf"^s3://{BUCKET_NAME_PATTERN}/(?:.*/)?$")
# This command reads no config (no ft_teacher_model_id): a DISTILLATION's teacher is --teacher-model or none.
GIVE_TEACHER = "give --teacher-model ID: the teacher's model id or cross-Region profile id"


class UsageError(Exception):
    """Bad arguments or unreadable files: exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m finetune_validate",
        description="Validate an Amazon Bedrock fine-tuning dataset (JSON Lines) before starting a job.",
        epilog="Exit status: 0 valid, 1 invalid, 2 usage error. Supported base models: " + ", ".join(MODELS),
    )
    parser.add_argument("training", metavar="TRAIN.jsonl", help="the training file")
    parser.add_argument(
        "--base-model",
        default=DEFAULT_BASE_MODEL,
        metavar="ID",
        help=f"the customization base model id, with its context suffix (default: {DEFAULT_BASE_MODEL})",
    )
    parser.add_argument(
        "--customization-type",
        default=FINE_TUNING,
        metavar="TYPE",
        help=f"one of {', '.join(CUSTOMIZATION_TYPES)} (default: {FINE_TUNING})",
    )
    parser.add_argument(
        "--teacher-model",
        metavar="ID",
        help="DISTILLATION (required there): the teacher model id (or cross-Region profile id); checked against "
        "the student, as the pipeline does with ft_teacher_model_id or a run's own teacherModelId",
    )
    parser.add_argument(
        "--datasets-uri",
        metavar="S3URI",
        help="where the pipeline reads data, s3://<DataBucketName>/datasets/: every image or video a record names "
        "must be under it, as the pipeline checks (default: not checked)",
    )
    parser.add_argument(
        "--on-demand-deploy",
        action="store_true",
        help="the stack deploys with ft_deploy on-demand: refuse a base model that deployment cannot serve",
    )
    parser.add_argument("--validation", metavar="VAL.jsonl", help="the validation file")
    parser.add_argument(
        "--hyperparameters",
        default="{}",
        metavar="JSON",
        help='the job\'s hyperparameters as a JSON object of strings, e.g. \'{"epochCount": "2"}\'',
    )
    parser.add_argument("--report", metavar="report.json", help="also write the full report as JSON here")
    parser.add_argument(
        "--show", type=int, default=SHOWN_PER_KIND, metavar="N", help="errors shown per kind (default: 5)"
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on a usage error, 0 for --help
        return int(exc.code or 0)
    try:
        report = run(args)
    except UsageError as exc:
        print(printable(f"error: {exc}"), file=err)
        return EXIT_USAGE
    # Every message quoting the data is escaped already; the paths may hold undecodable bytes (surrogateescape).
    print(printable(render(report, args.training, args.validation, max(args.show, 0))), file=out)
    return EXIT_VALID if report["valid"] else EXIT_INVALID


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the files named by the arguments; UsageError for anything that is not about the data."""
    try:
        hyperparameters = json.loads(args.hyperparameters)
    except ValueError as exc:
        raise UsageError(f"--hyperparameters is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("--hyperparameters is nested too deeply; it must be a flat JSON object of strings") from None
    if not isinstance(hyperparameters, dict):
        raise UsageError('--hyperparameters must be a JSON object, e.g. \'{"epochCount": "2"}\'')
    if args.datasets_uri is not None and not DATASETS_URI.fullmatch(args.datasets_uri):
        raise UsageError(f"--datasets-uri must be s3://BUCKET/PREFIX/ (ending in /), got '{args.datasets_uri}'")
    try:
        teacher_model_id = run_teacher(args.customization_type, args.teacher_model, None, missing=GIVE_TEACHER)
    except RequestRefused as exc:
        raise UsageError(f"--teacher-model {exc.problem}") from None
    try:
        if args.on_demand_deploy and (problem := on_demand_problem(args.base_model)) is not None:
            raise UsageError(f"--base-model: {problem}")
        validator = DatasetValidator(
            args.base_model,
            hyperparameters,
            customization_type=args.customization_type,
            teacher_model_id=teacher_model_id,
            media_prefix=args.datasets_uri,
        )
    except UnsupportedBaseModel as exc:
        raise UsageError(f"--base-model: {exc}") from None
    except UnsupportedCustomizationType as exc:
        raise UsageError(f"--customization-type: {exc}") from None
    paths = [args.training] + ([args.validation] if args.validation else [])
    for path in paths:  # fail on an unreadable file before spending time on the other one
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    validator.check_training(iter_file_chunks(args.training))
    if args.validation:
        validator.check_validation(iter_file_chunks(args.validation))
    report = validator.report()
    if args.report:
        try:
            with open(args.report, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=2, ensure_ascii=False)
                handle.write("\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.report}: {exc.strerror}") from None
    return report


def render(report: dict[str, Any], training_path: str, validation_path: str | None, shown: int) -> str:
    """The human-readable summary."""
    lines = [
        f"Base model: {report['baseModelId']} ({report['family']}), {report.get('customizationType', FINE_TUNING)}"
    ]
    lines.extend(f"  warning {w['kind']}: {w['message']}" for w in report.get("warnings", ()))
    for label, path, section in (
        ("Training", training_path, report["training"]),
        ("Validation", validation_path, report["validation"]),
    ):
        if section is None:
            continue
        count = section["errorCount"]
        invalid = f" ({section['invalidRecords']:,} invalid)" if section["invalidRecords"] else ""
        verdict = "OK" if count == 0 else f"{count:,} error{'s' if count != 1 else ''}"
        lines.append(f"{label} {path}: {section['records']:,} records{invalid}, {section['bytes']:,} bytes: {verdict}")
        for kind, entry in section["errors"].items():
            lines.append(f"  {kind} ({entry['count']:,})")
            for item in entry["first"][:shown]:
                where = f"line {item['line']}" if item["line"] is not None else "file"
                lines.append(f"    {where}: {item['message']}")
            hidden = entry["count"] - min(shown, len(entry["first"]))
            if hidden > 0:
                lines.append(f"    ... and {hidden:,} more")
            if entry.get("doc"):
                lines.append(f"    rules: {entry['doc']}")
        for kind, entry in section.get("warnings", {}).items():
            lines.append(f"  warning {kind} ({entry['count']:,})")
            for item in entry["first"][:shown]:
                lines.append(f"    line {item['line']}: {item['message']}")
    errors = report["hyperparameters"]["errors"]
    lines.append(
        "Hyperparameters: " + ("OK" if not errors else f"{len(errors)} error{'s' if len(errors) != 1 else ''}")
    )
    lines.extend(f"  {error['kind']}: {error['message']}" for error in errors)
    lines.append(summarize(report))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
