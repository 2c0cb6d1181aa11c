"""Level 3, fine-tuning: ``kit l3 …`` validates training data offline with the pipeline's own validator,
starts the GenAiKit-3-FineTune state machine (uploading the data first if asked) and follows an execution."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from finetune_validate.formats import CUSTOMIZATION_TYPES
from kit import aws
from kit.aws import KitError, KitUsageError
from kit.operator import (
    console,
    current_target,
    execution_name,
    finish,
    follow_execution,
    json_object,
    print_execution,
    remember_target,
    show_status,
    target_options,
    upload_file,
    wait_options,
)

DATASETS_PREFIX = "datasets/"  # the only prefix the Level 3 customization role may read


@click.group()
@target_options
@click.pass_context
def l3(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 3, fine-tuning: validate data locally, start the pipeline, follow it."""
    remember_target(ctx, stage, region, profile, context_pairs)


def _validator() -> Any:
    """The Level 3 validator package (finetune_validate), the same code the pipeline runs."""
    aws.checkout()  # the checkout this command runs in is the one the validator is imported from
    import finetune_validate.__main__ as command

    return command


def _validate_locally(
    training: str,
    validation: str | None,
    base_model: str,
    hyperparameters: Mapping[str, Any],
    customization_type: str = "FINE_TUNING",
) -> tuple[bool, str]:
    """(valid, the validator's human-readable report)."""
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
        )
    except UnsupportedBaseModel as exc:
        raise KitUsageError(f"--base-model: {exc}") from None
    except UnsupportedCustomizationType as exc:
        raise KitUsageError(f"--customization-type: {exc}") from None
    return bool(report["valid"]), str(command.render(report, training, validation, command.SHOWN_PER_KIND))


@l3.command()
@click.argument("training", type=click.Path(exists=True, dir_okay=False), metavar="FILE")
@click.option("--base-model", metavar="ID", help="The customization base model (default: ft_base_model_id).")
@click.option("--validation", type=click.Path(exists=True, dir_okay=False), metavar="FILE", help="A validation file.")
@click.option("--hyperparameters", metavar="JSON", help="A JSON object of strings (default: ft_hyperparameters).")
@click.option("--customization-type", type=click.Choice(CUSTOMIZATION_TYPES), help="Default: ft_customization_type.")
def validate(
    training: str,
    base_model: str | None,
    validation: str | None,
    hyperparameters: str | None,
    customization_type: str | None,
) -> None:
    """Check a JSON Lines training file offline, with the pipeline's own validator (exit 1 if invalid)."""
    target = current_target()
    model = base_model or target.config.finetune.base_model_id
    params = json_object(hyperparameters, "--hyperparameters")
    valid, text = _validate_locally(
        training,
        validation,
        model,
        params if params is not None else target.config.finetune.hyperparameters,
        customization_type or target.config.finetune.customization_type,
    )
    click.echo(text)
    if not valid:
        click.get_current_context().exit(1)


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
    help="Validate and upload FILE to datasets/ first.",
)
@click.option(
    "--upload-validation",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Upload a validation FILE to datasets/ first.",
)
@click.option("--base-model", metavar="ID", help="The base model (default: the stack's ft_base_model_id).")
@click.option("--customization-type", type=click.Choice(CUSTOMIZATION_TYPES), help="Default: ft_customization_type.")
@click.option("--hyperparameters", metavar="JSON", help="A JSON object of strings; replaces the defaults.")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends.")
@wait_options(timeout_s=30 * 3600, poll_s=30)
def start(
    training_key: str | None,
    validation_key: str | None,
    upload: str | None,
    upload_validation: str | None,
    base_model: str | None,
    customization_type: str | None,
    hyperparameters: str | None,
    wait: bool,
    timeout: int,
    poll_seconds: float,
) -> None:
    """Start the fine-tuning pipeline (StartExecution) with a job request.

    With --upload the data is validated locally before it is uploaded; the pipeline validates it again.
    """
    target = current_target()
    training_key = training_key or (f"{DATASETS_PREFIX}{Path(upload).name}" if upload else None)
    if not training_key:
        raise KitUsageError("give --training-key KEY (under datasets/) or --upload FILE")
    _dataset_key(training_key, "--training-key")
    if upload_validation and not validation_key:
        validation_key = f"{DATASETS_PREFIX}{Path(upload_validation).name}"
    if validation_key:
        _dataset_key(validation_key, "--validation-key")
    params = json_object(hyperparameters, "--hyperparameters")
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
    if upload or upload_validation:
        bucket = aws.require_output(outputs, "DataBucketName", name)
        model = base_model or target.config.finetune.base_model_id
        hyper = params if params is not None else target.config.finetune.hyperparameters
        if upload:
            valid, text = _validate_locally(upload, upload_validation, model, hyper)
            if not valid:
                click.echo(text)
                raise KitError("the data is invalid: nothing was uploaded or started")
        for path, key in ((upload, training_key), (upload_validation, validation_key)):
            if path and key:
                out.print(Text(f"uploaded {upload_file(target, Path(path), bucket, key)}"))
    request: dict[str, Any] = {"trainingKey": training_key}
    optional = {
        "validationKey": validation_key,
        "baseModelId": base_model,
        "customizationType": customization_type,
        "hyperparameters": params,
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    sfn = target.client("stepfunctions")
    with aws.aws_errors("starting the fine-tuning pipeline", target.region):
        arn = str(
            sfn.start_execution(stateMachineArn=machine, name=execution_name(), input=json.dumps(request))[
                "executionArn"
            ]
        )
    out.print(Text(f"started {arn}"))
    out.print(Text(f"request {json.dumps(request)}", style="dim"))
    if not wait:
        out.print(Text(f"Follow it with: kit l3 status {arn} --wait", style="dim"))
        return
    final = follow_execution(
        out, sfn, arn, timeout=timeout, poll_seconds=poll_seconds, resume_hint=f"kit l3 status {arn} --wait"
    )
    finish(print_execution(out, sfn, arn, final))


@l3.command()
@click.argument("execution", required=False, metavar="[EXECUTION_ARN]")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends (exit 1 unless it succeeds).")
@wait_options(timeout_s=30 * 3600, poll_s=30)
def status(execution: str | None, wait: bool, timeout: int, poll_seconds: float) -> None:
    """Summarize a pipeline execution (default: the newest): status, states visited, error or output."""
    show_status(
        "3",
        execution,
        group="l3",
        wait=wait,
        timeout=timeout,
        poll_seconds=poll_seconds,
        start_hint="kit l3 start --upload FILE",
    )
