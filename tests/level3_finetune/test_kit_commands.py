"""kit l3 (Level 3, fine-tuning), offline: the pipeline's validator run locally, uploads under datasets/, and
starting and following the state machine (moto's Step Functions, its interpreter where executions must run)."""

from __future__ import annotations

import io
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from kit import aws
from kit.aws import Target
from kit.level3_finetune import (
    MODEL_NOT_READY_WAITS,
    SM_EXECUTION_NAME,
    l3,
    l3sm,
    sm_check_file,
    sm_record_problem,
    sm_resource_name,
)
from tests.conftest import ROOT, Synth
from tests.infra import asl
from tests.infra.helpers import machine_execution_and_job_prefix, training_job_described
from tests.kit.operator_helpers import (
    CONFIG,
    FAILING,
    REGION,
    WAIT_THEN_PASS,
    FakeCloudFormation,
    cloudformation_fixture,  # noqa: F401
    executing_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    lose_start_answers,
    mocked_fixture,  # noqa: F401
    run,
    same_named_files,  # each *_fixture registers its fixture for this module
    stack,
    state_machine,
    stubbed,
)

SAMPLES = ROOT / "samples" / "finetune"


def test_l3_validate_runs_the_pipeline_validator_offline() -> None:
    valid = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--validation", str(SAMPLES / "validation.jsonl"))
    assert valid.exit_code == 0, valid.output
    assert "VALID:" in valid.output and CONFIG.finetune.base_model_id in valid.output
    invalid = run(l3, "validate", str(SAMPLES / "invalid" / "role_order.jsonl"))
    assert invalid.exit_code == 1 and "INVALID:" in invalid.output
    unknown = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--base-model", "acme.model-v1")
    assert unknown.exit_code == 2 and "--base-model" in unknown.output
    bad_json = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--hyperparameters", "{epochCount")
    assert bad_json.exit_code == 2 and "--hyperparameters is not valid JSON" in bad_json.output
    # Continued pre-training is refused for a base model that does not offer it (Nova micro, the default).
    cpt = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--customization-type", "CONTINUED_PRE_TRAINING")
    assert cpt.exit_code == 2 and "--customization-type" in cpt.output


def _documented_validations() -> list[str]:
    """Every `kit l3 validate` command the README and the Level 3 page give, as written."""
    lines = []
    for page in (ROOT / "README.md", ROOT / "docs" / "level-3-finetune.md"):
        lines += [
            line.split("#")[0].strip() for line in page.read_text().splitlines() if line.startswith("kit l3 validate ")
        ]
    return sorted(set(lines))


@pytest.mark.parametrize("command", _documented_validations())
def test_every_documented_validate_command_passes_on_its_sample(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default configuration: a run of another customization type does not inherit ft_hyperparameters
    (they belong to the configured type), as `kit l3 start` already did."""
    monkeypatch.chdir(ROOT)
    result = run(l3, *command.split()[2:])
    assert result.exit_code == 0, result.output
    assert "VALID:" in result.output


def finetune_stack(fake: FakeCloudFormation, machine: str) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="ft-data")
    fake.deploy(stack("3"), {"DataBucketName": "ft-data", "StateMachineArn": machine, "BaseModelId": "x"})


def test_l3_start_uploads_validated_data_and_starts_the_pipeline(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    result = run(
        l3,
        "start",
        "--upload",
        str(SAMPLES / "train.jsonl"),
        "--upload-validation",
        str(SAMPLES / "validation.jsonl"),
        "--hyperparameters",
        '{"epochCount": "1"}',
    )
    assert result.exit_code == 0, result.output
    keys = sorted(
        o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ft-data")["Contents"]
    )
    sfn = boto3.client("stepfunctions", region_name=REGION)
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    folder = f"datasets/{execution['name']}/"  # the run's own folder, named as the execution
    assert keys == [f"{folder}train.jsonl", f"{folder}validation.jsonl"]
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "trainingKey": f"{folder}train.jsonl",
        "validationKey": f"{folder}validation.jsonl",
        "hyperparameters": {"epochCount": "1"},
    }
    assert f"uploaded s3://ft-data/{folder}train.jsonl" in result.output
    assert f"kit l3 status {execution['executionArn']} --wait" in result.output


def _objects(bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_l3_start_whose_answer_was_lost_reports_the_run_it_started(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the command failed after the upload, and a second start made a second customization job
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    lose_start_answers(monkeypatch, started=True)
    result = run(l3, "start", "--upload", str(SAMPLES / "train.jsonl"))
    assert result.exit_code == 0, result.output
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    assert f"started {execution['executionArn']}" in " ".join(result.output.split())


def test_l3_starts_with_files_of_one_name_never_share_a_key(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    """Before: both uploaded to datasets/train.jsonl, so the second replaced the data of a first run still waiting
    for a job slot (its S3 URI names no version: the job reads the current object), unvalidated by that run."""
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    records = (SAMPLES / "train.jsonl").read_text().splitlines(keepends=True)
    first, second = same_named_files(tmp_path, "train.jsonl", records, records[: len(records) // 2 + 1])
    for path in (first, second):
        result = run(l3, "start", "--upload", str(path))
        assert result.exit_code == 0, result.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    inputs = [
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])
        for e in sfn.list_executions(stateMachineArn=machine)["executions"]
    ]
    stored = _objects("ft-data")
    assert len(stored) == 2 and sorted(stored.values()) == sorted([first.read_bytes(), second.read_bytes()])
    assert sorted(i["trainingKey"] for i in inputs) == sorted(stored)  # each run reads what it uploaded
    # The keys are locations CreateModelCustomizationJob takes (botocore's TrainingDataConfig.s3Uri pattern).
    shape = boto3.client("bedrock", region_name=REGION).meta.service_model.shape_for("TrainingDataConfig")
    pattern = shape.members["s3Uri"].metadata["pattern"]
    assert all(re.fullmatch(pattern, f"s3://ft-data/{key}") for key in stored), (pattern, list(stored))


def test_l3_start_refuses_invalid_data_and_keys_outside_datasets(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    invalid = run(l3, "start", "--upload", str(SAMPLES / "invalid" / "missing_key.jsonl"))
    assert invalid.exit_code == 1 and "the data is invalid: nothing was uploaded or started" in invalid.output
    outside = run(l3, "start", "--training-key", "jobs/train.jsonl")
    assert outside.exit_code == 2 and "--training-key must be a key under datasets/" in outside.output
    neither = run(l3, "start")
    assert neither.exit_code == 2 and "--upload FILE" in neither.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ft-data")


def test_l3_start_refuses_a_file_name_nova_refuses_before_uploading(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    # Given a valid dataset whose file name holds characters S3 keys allow and Amazon Nova refuses
    copy = tmp_path / "train(1).jsonl"
    copy.write_bytes((SAMPLES / "train.jsonl").read_bytes())
    # When it is uploaded for the default Nova base model
    refused = run(l3, "start", "--upload", str(copy))
    # Then nothing is uploaded or started, and the message names the option and the characters allowed
    assert refused.exit_code == 2, refused.output
    assert "--training-key" in refused.output and "letters, digits and _ - / . only" in refused.output
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ft-data")
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    # And for a model family that takes the name, the key passes (the Nova-format data then fails Llama's check)
    other = run(l3, "start", "--upload", str(copy), "--base-model", "meta.llama3-1-8b-instruct-v1:0:128k")
    assert other.exit_code == 1 and "the data is invalid" in other.output and "--training-key" not in other.output


def test_l3_status_follows_the_newest_execution_until_it_succeeds(executing: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(executing, machine)
    started = run(l3, "start", "--training-key", "datasets/train.jsonl")
    assert started.exit_code == 0, started.output
    result = run(l3, "status", "--wait", "--poll-seconds", "0.2")
    assert result.exit_code == 0, result.output
    assert "RUNNING · Pause" in result.output
    assert "SUCCEEDED" in result.output and "Pause → Done" in result.output
    assert '"trainingKey":"datasets/train.jsonl"' in result.output


def test_l3_status_wait_exits_1_with_the_error_of_a_failed_execution(executing: FakeCloudFormation) -> None:
    machine = state_machine(FAILING, "finetune")
    finetune_stack(executing, machine)
    arn = boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")[
        "executionArn"
    ]
    result = run(l3, "status", "run1", "--wait", "--poll-seconds", "0.1", "--timeout", "20")
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "InvalidData" in result.output and "bad rows" in result.output
    assert arn in result.output


def test_l3_status_wait_timeout_and_no_executions(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    none = run(l3, "status")
    assert none.exit_code == 1 and "no executions of finetune yet: start one with kit l3 start" in none.output
    arn = boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine)["executionArn"]
    shown = run(l3, "status")  # plain moto: the execution stays RUNNING
    assert shown.exit_code == 0 and "RUNNING" in shown.output and arn in shown.output
    waited = run(l3, "status", arn, "--wait", "--timeout", "0")
    assert waited.exit_code == 1
    assert "after 0 s (the execution keeps running)" in waited.output and f"kit l3 status {arn} --wait" in waited.output


def test_l3_start_takes_the_type_and_the_teacher(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    # A cross-Region profile is a teacher a run may name when it is the configured one (the stack grants it).
    started = run(
        l3,
        "-c",
        "ft_teacher_model_id=us.amazon.nova-pro-v1:0",
        "start",
        "--training-key",
        "datasets/prompts.jsonl",
        "--customization-type",
        "DISTILLATION",
        "--teacher-model",
        "us.amazon.nova-pro-v1:0",
    )
    assert started.exit_code == 0, started.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "trainingKey": "datasets/prompts.jsonl",
        "customizationType": "DISTILLATION",
        "teacherModelId": "us.amazon.nova-pro-v1:0",
        "hyperparameters": {},  # the configured fine-tuning defaults are not sent with another type
    }
    refused = run(l3, "start", "--training-key", "datasets/train.jsonl", "--teacher-model", "amazon.nova-pro-v1:0")
    assert refused.exit_code == 2 and "--teacher-model is for DISTILLATION only" in refused.output
    # Without data, a distillation needs the invocation logs (ft_distillation_source is "prompts" here).
    no_data = run(l3, "start", "--customization-type", "DISTILLATION")
    assert no_data.exit_code == 2 and "--upload FILE" in no_data.output


DISTILL_TRAIN = SAMPLES / "distillation" / "train.jsonl"
NOVA_LITE = "amazon.nova-lite-v1:0:300k"
LLAMA = "meta.llama3-1-8b-instruct-v1:0:128k"


def _first_lines(tmp_path: Path, source: Path, count: int = 10) -> str:
    path = tmp_path / "val.jsonl"
    path.write_bytes(b"".join(source.read_bytes().splitlines(keepends=True)[:count]))
    return str(path)


def _with_an_image(tmp_path: Path, uri: str) -> str:
    """The fine-tuning sample with one record asking about an image at ``uri``."""
    lines = (SAMPLES / "train.jsonl").read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["messages"][0]["content"].append({"image": {"format": "png", "source": {"s3Location": {"uri": uri}}}})
    lines[1] = json.dumps(record) + "\n"
    path = tmp_path / "media.jsonl"
    path.write_text("".join(lines))
    return str(path)


def test_l3_validate_refuses_what_the_pipeline_refuses(tmp_path: Path) -> None:
    """Before: VALID for requests the pipeline's ValidateData refuses (a validation set for DISTILLATION, a student
    its configured teacher does not teach, a base model the on-demand deployment cannot serve)."""
    distill = [str(DISTILL_TRAIN), "--base-model", NOVA_LITE, "--customization-type", "DISTILLATION"]
    assert run(l3, "validate", *distill).exit_code == 0  # ft_teacher_model_id (Nova Pro) teaches Nova Lite
    with_validation = run(l3, "validate", *distill, "--validation", _first_lines(tmp_path, DISTILL_TRAIN))
    assert with_validation.exit_code == 1, with_validation.output
    assert "validation_not_allowed" in with_validation.output and "INVALID:" in with_validation.output
    # The configured teacher is checked against the student, as the pipeline does (Nova Pro does not teach itself).
    pro = ["--base-model", "amazon.nova-pro-v1:0:300k", "--customization-type", "DISTILLATION"]
    not_taught = run(l3, "validate", str(DISTILL_TRAIN), *pro)
    assert not_taught.exit_code == 2 and "does not teach amazon.nova-pro-v1:0:300k" in not_taught.output
    # Named where the teacher came from: the config here (before: --teacher-model, which was not given), the
    # option when given.
    assert "ft_teacher_model_id:" in not_taught.output and "--teacher-model" not in not_taught.output
    own = run(l3, "validate", str(DISTILL_TRAIN), *pro, "--teacher-model", "amazon.nova-pro-v1:0")
    assert own.exit_code == 2 and "--teacher-model: Amazon Nova Pro does not teach" in own.output, own.output
    wrong_type = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--teacher-model", "amazon.nova-pro-v1:0")
    assert wrong_type.exit_code == 2 and "--teacher-model is for DISTILLATION only" in wrong_type.output
    # With ft_deploy on-demand, a base model that deployment cannot serve.
    on_demand = run(l3, "-c", "ft_deploy=on-demand", "validate", str(SAMPLES / "train.jsonl"), "--base-model", LLAMA)
    assert on_demand.exit_code == 2 and "--base-model" in on_demand.output
    assert "cannot be served by this stack's on-demand deployment" in on_demand.output
    # An image outside the data bucket's datasets/, with the bucket named.
    outside = [_with_an_image(tmp_path, "s3://ft-data/images/a.png"), "--base-model", NOVA_LITE]
    assert run(l3, "validate", *outside).exit_code == 0  # not known offline, so not checked
    checked = run(l3, "validate", *outside, "--data-bucket", "ft-data")
    assert checked.exit_code == 1 and "invalid_s3_uri" in checked.output, checked.output
    inside = _with_an_image(tmp_path, "s3://ft-data/datasets/images/a.png")
    assert run(l3, "validate", inside, "--base-model", NOVA_LITE, "--data-bucket", "ft-data").exit_code == 0


def test_l3_validate_takes_a_bare_data_bucket_name(tmp_path: Path) -> None:
    """Before: s3://ft-data and ft-data/ made the media prefix s3://s3://ft-data/datasets/ or
    s3://ft-data//datasets/, and data the pipeline accepts was reported INVALID (exit 1)."""
    inside = _with_an_image(tmp_path, "s3://ft-data/datasets/images/a.png")
    for slip in ("s3://ft-data", "ft-data/", "s3://ft-data/datasets/", "FT-Data", "", "ft-data\n"):
        refused = run(l3, "validate", inside, "--base-model", NOVA_LITE, "--data-bucket", slip)
        assert refused.exit_code == 2, (slip, refused.output)
        assert "--data-bucket takes a bucket name, the stack's DataBucketName" in refused.output
    assert run(l3, "validate", inside, "--base-model", NOVA_LITE, "--data-bucket", "ft-data").exit_code == 0


PROFILE_TEACHER = "us.amazon.nova-pro-v1:0"  # a cross-Region profile of the configured teacher (amazon.nova-pro-v1:0)


def test_l3_validate_refuses_a_teacher_the_customization_role_may_not_invoke() -> None:
    """Before: VALID (exit 0); the pipeline's ValidateData refuses a run's own teacher outside
    invocableTeacherModelIds (ft.invocable_teachers): the stack grants a cross-Region profile only as configured."""
    distill = [str(DISTILL_TRAIN), "--base-model", NOVA_LITE, "--customization-type", "DISTILLATION"]
    refused = run(l3, "validate", *distill, "--teacher-model", PROFILE_TEACHER)
    assert refused.exit_code == 2, refused.output
    assert f"--teacher-model: '{PROFILE_TEACHER}' is not a teacher the customization role may invoke" in refused.output
    assert run(l3, "validate", *distill, "--teacher-model", "amazon.nova-pro-v1:0").exit_code == 0
    # The ARN of an invocable model id in the stack's Region is that model; in another Region it is not.
    arn = "arn:aws:bedrock:{}::foundation-model/amazon.nova-pro-v1:0"
    assert run(l3, "validate", *distill, "--teacher-model", arn.format(REGION)).exit_code == 0
    other = "eu-west-3" if REGION != "eu-west-3" else "eu-west-1"
    assert run(l3, "validate", *distill, "--teacher-model", arn.format(other)).exit_code == 2
    # Configured as the teacher, the profile is granted and taken.
    configured = run(l3, "-c", f"ft_teacher_model_id={PROFILE_TEACHER}", "validate", *distill)
    assert configured.exit_code == 0, configured.output
    own = run(
        l3, "-c", f"ft_teacher_model_id={PROFILE_TEACHER}", "validate", *distill, "--teacher-model", PROFILE_TEACHER
    )
    assert own.exit_code == 0, own.output


def test_the_kit_and_the_handler_refuse_a_teacher_with_one_function(monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune_validate import handler, validator

    calls: list[tuple[str, tuple[str, ...], str | None]] = []

    def refuse(teacher: str, invocable: Any, region: str | None) -> str:
        calls.append((teacher, tuple(invocable), region))
        return "refused by the one rule"

    monkeypatch.setattr(validator, "teacher_invocable_problem", refuse)
    monkeypatch.setattr(handler, "teacher_invocable_problem", refuse)
    monkeypatch.setenv("AWS_REGION", REGION)
    distill = [str(DISTILL_TRAIN), "--base-model", NOVA_LITE, "--customization-type", "DISTILLATION"]
    refused = run(l3, "validate", *distill, "--teacher-model", "amazon.nova-pro-v1:0")
    assert refused.exit_code == 2 and "--teacher-model: refused by the one rule" in refused.output
    event = {
        "bucket": "ft-data",
        "trainingKey": "datasets/t.jsonl",
        "baseModelId": NOVA_LITE,
        "customizationType": "DISTILLATION",
        "teacherModelId": "amazon.nova-pro-v1:0",
        "invocableTeacherModelIds": ["amazon.nova-pro-v1:0"],
        "hyperparameters": {},
        "reportKey": "reports/r.json",
    }
    with pytest.raises(handler.InvalidRequest, match="teacherModelId: refused by the one rule"):
        handler.parse_request(event)
    invocable = tuple(CONFIG.finetune.invocable_teachers)
    assert calls == [
        ("amazon.nova-pro-v1:0", invocable, REGION),
        ("amazon.nova-pro-v1:0", ("amazon.nova-pro-v1:0",), REGION),
    ]


def test_l3_start_checks_the_teacher_and_the_given_keys_before_starting(mocked: FakeCloudFormation) -> None:
    """Before: each of these was started, and the pipeline's ValidateData then refused the run (a notified
    BadRequest): a teacher the customization role may not invoke, and a key with characters Amazon Nova refuses
    in a dataset file name, given without --upload."""
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    distill = ["--training-key", "datasets/prompts.jsonl", "--customization-type", "DISTILLATION"]
    teacher = run(l3, "start", *distill, "--base-model", NOVA_LITE, "--teacher-model", PROFILE_TEACHER)
    assert teacher.exit_code == 2 and "is not a teacher the customization role may invoke" in teacher.output
    nova = run(l3, "start", "--training-key", "datasets/t(1).jsonl", "--base-model", NOVA_LITE)
    assert nova.exit_code == 2 and "--training-key: 'datasets/t(1).jsonl' holds '('" in nova.output, nova.output
    validation = run(
        l3,
        "start",
        "--training-key",
        "datasets/t.jsonl",
        "--validation-key",
        "datasets/v 1.jsonl",
        "--base-model",
        NOVA_LITE,
    )
    assert validation.exit_code == 2 and "--validation-key: 'datasets/v 1.jsonl'" in validation.output
    _nothing_uploaded_or_started(machine)
    # Parentheses are Bedrock's data-location characters for a model that is not Amazon Nova.
    llama = run(l3, "start", "--training-key", "datasets/t(1).jsonl", "--base-model", LLAMA)
    assert llama.exit_code == 0, llama.output


def _nothing_uploaded_or_started(machine: str) -> None:
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ft-data")
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []


def test_l3_start_refuses_what_the_pipeline_refuses_before_uploading(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """Before: each of these was uploaded and started, and the pipeline's ValidateData then refused the run."""
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    distill = ["--customization-type", "DISTILLATION", "--base-model", NOVA_LITE]
    val = _first_lines(tmp_path, DISTILL_TRAIN)
    refused = run(l3, "start", "--upload", str(DISTILL_TRAIN), "--upload-validation", val, *distill)
    assert refused.exit_code == 2, refused.output
    assert "--upload-validation: the pipeline passes a validation set for FINE_TUNING" in refused.output
    by_key = run(l3, "start", "--training-key", "datasets/t.jsonl", "--validation-key", "datasets/v.jsonl", *distill)
    assert by_key.exit_code == 2 and "--validation-key: the pipeline passes" in by_key.output
    # An image outside s3://<data bucket>/datasets/: the pipeline's media rule, with the deployed bucket.
    outside = _with_an_image(tmp_path, "s3://ft-data/images/a.png")
    image = run(l3, "start", "--upload", outside, "--base-model", NOVA_LITE)
    assert image.exit_code == 1 and "invalid_s3_uri" in image.output, image.output
    assert "the data is invalid: nothing was uploaded or started" in image.output
    on_demand = run(
        l3, "-c", "ft_deploy=on-demand", "start", "--training-key", "datasets/t.jsonl", "--base-model", LLAMA
    )
    assert on_demand.exit_code == 2 and "on-demand deployment" in on_demand.output
    _nothing_uploaded_or_started(machine)
    # The image under datasets/ is uploaded and started.
    inside = _with_an_image(tmp_path, "s3://ft-data/datasets/images/a.png")
    fine = run(l3, "start", "--upload", inside, "--base-model", NOVA_LITE)
    assert fine.exit_code == 0, fine.output


# --- kit l3sm (the SageMaker path) ---------------------------------------------------------------------------

SM_SAMPLES = ROOT / "samples" / "finetune-sagemaker"
SM_PREFIX = f"{CONFIG.name_prefix}-{CONFIG.stage}-sft-"  # stacks/level3_finetune/sagemaker.py job_prefix
SM_MACHINE = f"{CONFIG.name_prefix}-{CONFIG.stage}-sft"  # its state machine: sagemaker.py resource_name("sft")
ACCOUNT = "123456789012"
MODEL_ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:imported-model/abcdefghijkl"


def execution_arn(machine: str, name: str) -> str:
    return machine.replace(":stateMachine:", ":execution:", 1) + ":" + name


def sm_name(arn: str, prefix: str = SM_PREFIX) -> str:
    """The name the pipeline gives an execution's training job, import job and imported model, as the state
    machine computes it: the prefix and States.Hash(<execution ARN>, 'MD5'), run in the ASL simulator."""
    from stacks.level3_finetune.sagemaker_pipeline import run_name

    machine_name, execution = arn.split(":")[-2:]
    definition = {
        "StartAt": "Name",
        "States": {
            "Name": {"Type": "Pass", "Parameters": {"name.$": run_name(prefix, "$$.Execution.Id")}, "End": True}
        },
    }
    trace = asl.simulate(definition, {}, {}, execution_name=execution, state_machine_name=machine_name)
    assert trace.status == "SUCCEEDED", trace.describe()
    return str(trace.output["name"])


def sagemaker_stack(fake: FakeCloudFormation, machine: str) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="sft-data")
    fake.deploy(
        stack("3-sagemaker"),
        {"DataBucketName": "sft-data", "StateMachineArn": machine, "ArtifactsBucketName": "sft-artifacts"},
    )


def started_input(machine: str) -> dict[str, object]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    return dict(json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]))


def test_l3sm_start_checks_uploads_and_starts_with_the_documented_input(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    result = run(l3sm, "start", "--training", str(SM_SAMPLES / "train.jsonl"), "--base-model", "Qwen/Qwen2.5-0.5B")
    assert result.exit_code == 0, result.output
    [uploaded] = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="sft-data")["Contents"]
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    key = f"datasets/{execution['name']}/train.jsonl"  # the run's own folder, named as the execution
    assert uploaded["Key"] == key
    assert started_input(machine) == {"trainingKey": key, "baseModel": "Qwen/Qwen2.5-0.5B"}
    assert "kit l3sm status arn:" in result.output
    # The names the run's job and model get: the hash of its ARN, not its name (which may be 80 characters).
    assert f"training job and imported model: {sm_name(execution['executionArn'])}" in result.output


def test_l3sm_starts_with_files_of_one_name_never_share_a_key(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    """Before: both uploaded to datasets/train.jsonl; a first run still waiting for (spot) capacity then trained on
    the second's records, which its own validation never read."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    records = (SM_SAMPLES / "train.jsonl").read_text().splitlines(keepends=True)
    first, second = same_named_files(tmp_path, "train.jsonl", records, records[:1])
    for path in (first, second):
        result = run(l3sm, "start", "--training", str(path))
        assert result.exit_code == 0, result.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    keys = [
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["trainingKey"]
        for e in sfn.list_executions(stateMachineArn=machine)["executions"]
    ]
    stored = _objects("sft-data")
    assert sorted(keys) == sorted(stored) and len(stored) == 2
    assert sorted(stored.values()) == sorted([first.read_bytes(), second.read_bytes()])
    # The training channel copies every object under the key (S3Prefix): neither key is a prefix of the other.
    assert not any(a != b and b.startswith(a) for a in keys for b in keys)


def test_l3sm_names_the_run_with_the_deployed_stacks_prefix_not_the_local_configs(mocked: FakeCloudFormation) -> None:
    """Before: a stack deployed with -c name_prefix=other was found without the flag (its stack name carries no
    prefix), and the job and model names came from the local config: genai-kit-..., which do not exist."""
    machine = state_machine(WAIT_THEN_PASS, f"other-{CONFIG.stage}-sft")
    sagemaker_stack(mocked, machine)
    result = run(l3sm, "start", "--training-key", "datasets/chat/")
    assert result.exit_code == 0, result.output
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    named = sm_name(execution["executionArn"], f"other-{CONFIG.stage}-sft-")
    assert f"training job and imported model: {named}" in result.output


def test_l3sm_names_agree_with_the_synthesized_stack(sandbox: Synth) -> None:
    """The kit reads the prefix from the state machine the StateMachineArn output names; the stack's own rule
    matches the run's training jobs by their prefix: both must give the same names."""
    template = sandbox.templates[aws.stack_id("3-sagemaker")]
    arn, prefix = machine_execution_and_job_prefix(template, REGION)
    assert sm_resource_name(Target(), arn) == sm_name(arn, prefix)


def test_l3sm_start_with_a_key_sends_no_base_model_and_uploads_nothing(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    result = run(l3sm, "start", "--training-key", "datasets/chat/")
    assert result.exit_code == 0, result.output
    assert started_input(machine) == {"trainingKey": "datasets/chat/"}  # the stack's sm_base_model applies
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="sft-data")


@pytest.mark.parametrize("model", ["Qwen2.5-0.5B-Instruct", "Qwen/Qwen 2.5", "", "hf.co/Qwen/Qwen2.5-0.5B"])
def test_l3sm_start_refuses_a_base_model_that_is_no_hub_id_before_anything_starts(
    mocked: FakeCloudFormation, model: str
) -> None:
    """Before: any non-empty --base-model was sent, and a typo failed inside the training job once its instance
    had started. The id must be what the stack's sm_base_model takes (names.HUB_ID)."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    result = run(l3sm, "start", "--training-key", "datasets/chat/", "--base-model", model)
    assert result.exit_code == 2, result.output
    assert f"--base-model {model!r} is not a Hugging Face Hub id" in " ".join(result.output.split())
    assert not boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)["executions"]


def test_l3sm_start_refuses_invalid_records_before_uploading(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n{not json\n", encoding="utf-8"
    )
    result = run(l3sm, "start", "--training", str(bad))
    assert result.exit_code == 1 and "the data is invalid: nothing was uploaded or started" in result.output
    assert "bad.jsonl:1: the conversation must start with a user message" in result.output
    assert "bad.jsonl:2: not valid JSON" in result.output
    neither = run(l3sm, "start")
    assert neither.exit_code == 2 and "--training FILE" in neither.output
    assert (
        boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)["executions"] == []
    )
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="sft-data")


def _model_folder(root: Path, name: str = "qwen2.5-0.5b") -> Path:
    folder = root / name
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("")
    (folder / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def _keys(bucket: str = "sft-data") -> list[str]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_l3sm_start_uploads_a_local_base_model_under_models_and_names_its_key(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    folder = _model_folder(tmp_path)
    result = run(l3sm, "start", "--training-key", "datasets/chat/", "--base-model-dir", str(folder))
    assert result.exit_code == 0, result.output
    # Hidden folders (the Hub's download cache) stay home; the prefix is the one the pipeline accepts.
    assert _keys() == [
        "models/qwen2.5-0.5b/config.json",
        "models/qwen2.5-0.5b/model.safetensors",
        "models/qwen2.5-0.5b/tokenizer.json",
    ]
    assert started_input(machine) == {"trainingKey": "datasets/chat/", "baseModelKey": "models/qwen2.5-0.5b/"}
    assert "uploaded 3 files to s3://sft-data/models/qwen2.5-0.5b/" in result.output


def test_l3sm_start_refuses_names_s3_cannot_store_before_uploading_or_starting(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """object-keys.html: a key is UTF-8, at most 1,024 bytes. Before: a training file named in Latin-1 ended the
    command in "unexpected UnicodeEncodeError", and a model file deep enough for a longer key was refused by S3
    after the files before it were uploaded."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    training = tmp_path / os.fsdecode(b"donn\xe9es.jsonl")  # a Latin-1 name, as Linux hands it to Python
    training.write_bytes((SM_SAMPLES / "train.jsonl").read_bytes())
    folder = _model_folder(tmp_path)
    deep = folder.joinpath(*["x" * 250] * 4)  # models/qwen2.5-0.5b/ (20 bytes), 1,004 of folders, extra.json
    deep.mkdir(parents=True)
    (deep / "extra.json").write_text("{}")
    result = run(l3sm, "start", "--training", str(training), "--base-model-dir", str(folder))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "files S3 cannot store (nothing was uploaded)" in text
    assert f"{tmp_path}/donn\\xe9es.jsonl: its name is not UTF-8 text" in text
    assert "extra.json: its key is 1,034 bytes of UTF-8; S3 takes at most 1,024" in text
    assert _keys() == []
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []


def test_l3sm_start_names_an_uploaded_model_by_key_and_refuses_two_base_models(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    keyed = run(l3sm, "start", "--training-key", "datasets/chat/", "--base-model-key", "models/qwen")
    assert keyed.exit_code == 0, keyed.output
    assert started_input(machine) == {"trainingKey": "datasets/chat/", "baseModelKey": "models/qwen/"}
    outside = run(l3sm, "start", "--training-key", "datasets/chat/", "--base-model-key", "datasets/qwen/")
    assert outside.exit_code == 2 and "--base-model-key must be a prefix under models/" in outside.output
    both = run(
        l3sm, "start", "--training-key", "k", "--base-model", "Qwen/Qwen2.5-0.5B", "--base-model-key", "models/q/"
    )
    assert both.exit_code == 2 and "give one of --base-model, --base-model-dir and --base-model-key" in both.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_config = run(l3sm, "start", "--training-key", "k", "--base-model-dir", str(empty))
    assert no_config.exit_code == 2 and "holds no config.json" in no_config.output
    assert _keys() == []  # nothing uploaded by a refused start


def test_l3sm_start_resume_from_repeats_the_earlier_request_with_resume_from(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    earlier = {"trainingKey": "datasets/chat/", "baseModelKey": "models/qwen/"}
    arn = sfn.start_execution(stateMachineArn=machine, name="kit-20260101-120000-ab12", input=json.dumps(earlier))
    sfn.stop_execution(executionArn=arn["executionArn"])  # a run resumes once it has ended
    result = run(l3sm, "start", "--resume-from", arn["executionArn"])  # an ARN or a name
    assert result.exit_code == 0, result.output
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    [started] = [e for e in executions if e["name"] != "kit-20260101-120000-ab12"]
    request = json.loads(sfn.describe_execution(executionArn=started["executionArn"])["input"])
    assert request == {**earlier, "resumeFrom": "kit-20260101-120000-ab12"}
    sfn.stop_execution(executionArn=started["executionArn"])  # ended: another resume may write the prefix now
    # What is given on the command line wins (the training program refuses a resume that differs).
    given = run(l3sm, "start", "--resume-from", "kit-20260101-120000-ab12", "--training-key", "datasets/other/")
    assert given.exit_code == 0, given.output
    assert '"trainingKey": "datasets/other/"' in given.output and '"baseModelKey": "models/qwen/"' in given.output
    unknown = run(l3sm, "start", "--resume-from", "kit-typo")
    assert unknown.exit_code == 1 and f"--resume-from: no execution kit-typo of {SM_MACHINE}" in unknown.output
    bad = run(l3sm, "start", "--resume-from", "../run")
    assert bad.exit_code == 2 and "--resume-from must name an earlier execution" in bad.output


def test_l3sm_resuming_a_run_that_resumed_another_resumes_the_first_runs_checkpoints(
    mocked: FakeCloudFormation,
) -> None:
    """run2 resumed run1 and wrote to checkpoints/run1/ (UseEarlierCheckpoints): resuming run2 resumes run1, with
    run2's data (before, the pipeline found no checkpoints under checkpoints/run2/ and rejected the run)."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    first = {"trainingKey": "datasets/chat/", "baseModelKey": "models/qwen/"}
    for name, given in (("run1", first), ("run2", {**first, "resumeFrom": "run1"})):
        arn = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(given))["executionArn"]
        sfn.stop_execution(executionArn=arn)
    result = run(l3sm, "start", "--resume-from", "run2")
    assert result.exit_code == 0, result.output
    [started] = [
        e for e in sfn.list_executions(stateMachineArn=machine)["executions"] if e["name"] not in {"run1", "run2"}
    ]
    request = json.loads(sfn.describe_execution(executionArn=started["executionArn"])["input"])
    assert request == {**first, "resumeFrom": "run1"}


def test_l3sm_resume_waits_for_the_earlier_runs_training_job_to_stop(mocked: FakeCloudFormation) -> None:
    """An aborted execution may leave its job Stopping (SIGTERM, 120 s, then uploads): not resumed meanwhile."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    given = {"trainingKey": "datasets/chat/"}
    arn = sfn.start_execution(stateMachineArn=machine, name="run1", input=json.dumps(given))["executionArn"]
    sfn.stop_execution(executionArn=arn)
    job = sm_name(arn)
    sagemaker = stubbed("sagemaker")
    sagemaker.add_response(
        "describe_training_job",
        training_job_described(job, "Stopping", REGION),
        {"TrainingJobName": job},
    )
    result = run(l3sm, "start", "--resume-from", "run1")
    sagemaker.assert_no_pending_responses()
    assert result.exit_code == 1
    assert f"--resume-from run1: its training job {job} is Stopping" in " ".join(result.output.split())
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]] == ["run1"]


@pytest.mark.parametrize(
    "record",
    [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        },
        {"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]},
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": [{"role": "tool", "content": "q"}]},
        {"messages": [{"role": "user", "content": " "}]},
        {"messages": []},
        {"text": "x"},
        ["x"],
    ],
)
def test_l3sm_record_check_agrees_with_the_training_program(record: object) -> None:
    from workloads.finetune_sagemaker import chat_records

    assert sm_record_problem is chat_records.record_problem  # one copy of the rules, no second one to keep equal
    chat_data = pytest.importorskip("workloads.finetune_sagemaker.chat_data")
    try:
        chat_data.validate_record(record)
        expected = None
    except chat_data.DataError as err:
        expected = str(err)
    assert sm_record_problem(record) == expected


def test_l3sm_file_check_counts_lines_as_the_training_program_reads_them(tmp_path: Path) -> None:
    """JSON allows U+2028 and U+0085 unescaped in a string; Python's text files do not end a line there (only at
    \n, \r\n and \r), so neither does the check: the record is valid and the next line keeps its number."""
    record = {"messages": [{"role": "user", "content": "a\u2028b\x85c"}, {"role": "assistant", "content": "d"}]}
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(record, ensure_ascii=False) + "\r" + "{}\n", encoding="utf-8", newline="")
    assert sm_check_file(data) == ["chat.jsonl:2: 'messages' must be a non-empty list"]


def test_l3sm_status_shows_the_execution_training_job_import_and_model(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")
    name = sm_name(execution_arn(machine, "run1"))
    now = datetime.now(UTC)
    sagemaker = stubbed("sagemaker")
    sagemaker.add_response(
        "describe_training_job",
        {
            "TrainingJobName": name,
            "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
            "ModelArtifacts": {"S3ModelArtifacts": "s3://sft-artifacts/output/"},
            "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed",
            "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ResourceConfig": {"VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": now,
            "BillableTimeInSeconds": 754,
        },
        {"TrainingJobName": name},
    )
    bedrock = stubbed("bedrock")
    bedrock.add_response(
        "get_model_import_job",
        {"jobArn": f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-import-job/abcdefghijkl", "status": "InProgress"},
        {"jobIdentifier": name},
    )
    bedrock.add_client_error(
        "get_imported_model", "ResourceNotFoundException", "not found", 404, expected_params={"modelIdentifier": name}
    )
    result = run(l3sm, "status")
    assert result.exit_code == 0, result.output
    assert "RUNNING" in result.output
    assert f"{name}: Completed (Completed), 754 billable s" in result.output
    assert "InProgress" in result.output and "none (not imported yet" in result.output
    sagemaker.assert_no_pending_responses()
    bedrock.assert_no_pending_responses()


def test_l3sm_status_shows_an_import_job_without_a_status_and_a_model_without_an_arn(
    mocked: FakeCloudFormation,
) -> None:
    """botocore bedrock 2023-04-20 GetModelImportJobResponse and GetImportedModelResponse require no member.
    Before: `Error: unexpected KeyError: 'status'` instead of the table."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")
    name = sm_name(execution_arn(machine, "run1"))
    sagemaker, bedrock = stubbed("sagemaker"), stubbed("bedrock")
    sagemaker.add_client_error(
        "describe_training_job",
        "ValidationException",
        "Requested resource not found",
        400,
        expected_params={"TrainingJobName": name},
    )
    job = {"jobArn": f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-import-job/abcdefghijkl", "jobName": name}
    bedrock.add_response("get_model_import_job", job, {"jobIdentifier": name})
    bedrock.add_response("get_imported_model", {"modelName": name}, {"modelIdentifier": name})
    result = run(l3sm, "status")
    assert result.exit_code == 0, result.output
    assert "unknown (the answer named no status)" in result.output
    assert f"{name} (the answer named no ARN)" in result.output
    sagemaker.assert_no_pending_responses()
    bedrock.assert_no_pending_responses()


@pytest.mark.parametrize(
    "execution", ["3f2c9e5a-1b7d-4c3e-9a8f-0d6b2e4f1a7c", "r" * 80]
)  # a console start; the longest
def test_l3sm_status_of_a_name_or_an_arn_reads_the_job_and_model_named_by_the_arns_hash(
    mocked: FakeCloudFormation, execution: str
) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.start_execution(stateMachineArn=machine, name=execution)["executionArn"]
    name = sm_name(arn)
    assert len(name) == len(SM_PREFIX) + 32  # whatever the execution name's length
    for given in (execution, arn):
        sagemaker, bedrock = stubbed("sagemaker"), stubbed("bedrock")
        sagemaker.add_client_error(
            "describe_training_job",
            "ValidationException",
            "Requested resource not found",
            400,
            expected_params={"TrainingJobName": name},
        )
        bedrock.add_client_error(
            "get_model_import_job",
            "ResourceNotFoundException",
            "not found",
            404,
            expected_params={"jobIdentifier": name},
        )
        bedrock.add_client_error(
            "get_imported_model",
            "ResourceNotFoundException",
            "not found",
            404,
            expected_params={"modelIdentifier": name},
        )
        result = run(l3sm, "status", given)
        assert result.exit_code == 0, result.output
        assert f"{name}: not created (yet)" in result.output
        sagemaker.assert_no_pending_responses()
        bedrock.assert_no_pending_responses()
        sagemaker.deactivate()
        bedrock.deactivate()


def test_l3sm_resume_from_takes_any_execution_name_the_pipeline_takes(mocked: FakeCloudFormation) -> None:
    """Job names no longer carry the execution name, so any execution may be resumed: the kit refuses exactly
    what the pipeline's CheckInput refuses (StartExecution's forbidden characters, control characters)."""
    from stacks.level3_finetune.sagemaker_pipeline import NAME_FORBIDDEN

    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    earlier = sfn.start_execution(
        stateMachineArn=machine, name="my_run.1", input=json.dumps({"trainingKey": "datasets/a/"})
    )
    sfn.stop_execution(executionArn=earlier["executionArn"])
    result = run(l3sm, "start", "--resume-from", "my_run.1")
    assert result.exit_code == 0, result.output
    assert '"resumeFrom": "my_run.1"' in result.output
    for character in [*NAME_FORBIDDEN, "\x00", "\x1f", "\x7f", "\x9f"]:
        assert not SM_EXECUTION_NAME.fullmatch(f"run{character}1"), repr(character)
    assert SM_EXECUTION_NAME.fullmatch("r" * 80) and not SM_EXECUTION_NAME.fullmatch("r" * 81)


def test_l3sm_resume_refuses_a_run_that_has_not_ended_or_that_another_run_resumes(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """Before: the earlier execution's status was not read, so two jobs shared checkpoints/<earlier>/ and each
    one's pruning deleted the other's checkpoints (SageMaker mirrors a deletion in the container to S3)."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    earlier = sfn.start_execution(stateMachineArn=machine, name="run1", input=json.dumps({"trainingKey": "d/"}))
    copy = tmp_path / "train.jsonl"
    copy.write_bytes((SM_SAMPLES / "train.jsonl").read_bytes())
    running = run(l3sm, "start", "--resume-from", "run1", "--training", str(copy))
    assert running.exit_code == 1
    assert "--resume-from run1: that execution is RUNNING; two jobs on checkpoints/run1/ would delete" in " ".join(
        running.output.split()
    )
    assert _objects("sft-data") == {}  # refused before anything is uploaded
    sfn.stop_execution(executionArn=earlier["executionArn"])
    resumer = sfn.start_execution(
        stateMachineArn=machine, name="run2", input=json.dumps({"trainingKey": "d/", "resumeFrom": "run1"})
    )
    sfn.start_execution(stateMachineArn=machine, name="run3", input=json.dumps({"trainingKey": "d/"}))  # not it
    again = run(l3sm, "start", "--resume-from", "run1")
    assert again.exit_code == 1
    assert "execution run2 is RUNNING and resumes from it already" in " ".join(again.output.split())
    sfn.stop_execution(executionArn=resumer["executionArn"])
    resumed = run(l3sm, "start", "--resume-from", "run1")
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize(("machine_definition", "exit_code"), [(FAILING, 1), (WAIT_THEN_PASS, 0)])
def test_l3sm_status_wait_exits_with_the_runs_outcome(
    executing: FakeCloudFormation, machine_definition: dict[str, Any], exit_code: int
) -> None:
    # A script that follows a run with `kit l3sm status --wait` reads its outcome from the exit code.
    machine = state_machine(machine_definition, SM_MACHINE)
    sagemaker_stack(executing, machine)
    boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")
    name = sm_name(execution_arn(machine, "run1"))
    bedrock = stubbed("bedrock")  # moto has no model import: the run made neither an import job nor a model
    bedrock.add_client_error("get_model_import_job", "ResourceNotFoundException", "not found", 404)
    bedrock.add_client_error("get_imported_model", "ResourceNotFoundException", "not found", 404)
    result = run(l3sm, "status", "run1", "--wait", "--poll-seconds", "0.1", "--timeout", "20")
    assert result.exit_code == exit_code, result.output
    assert ("FAILED" if exit_code else "SUCCEEDED") in result.output
    assert f"{name}: not created (yet)" in result.output
    bedrock.assert_no_pending_responses()


def test_l3sm_status_without_executions(mocked: FakeCloudFormation) -> None:
    sagemaker_stack(mocked, state_machine(WAIT_THEN_PASS, SM_MACHINE))
    none = run(l3sm, "status")
    assert none.exit_code == 1 and f"no executions of {SM_MACHINE} yet: start one with kit l3sm start" in none.output


def _ask_stubs(machine: str, name: str, *, arn: bool = True) -> tuple[Stubber, Stubber]:
    sfn = stubbed("stepfunctions")
    sfn.add_response(
        "list_executions",
        {
            "executions": [
                {
                    "executionArn": execution_arn(machine, name),
                    "stateMachineArn": machine,
                    "name": name,
                    "status": "SUCCEEDED",
                    "startDate": datetime.now(UTC),
                }
            ]
        },
        {"stateMachineArn": machine, "maxResults": 1, "statusFilter": "SUCCEEDED"},
    )
    bedrock = stubbed("bedrock")
    model = sm_name(execution_arn(machine, name))
    answer = {"modelArn": MODEL_ARN, "modelName": model} if arn else {"modelName": model}
    bedrock.add_response("get_imported_model", answer, {"modelIdentifier": model})
    return sfn, bedrock


def model_stub() -> Any:
    """A Stubber on the client `kit l3sm ask` invokes the model with (kit.aws.model_client)."""
    from botocore.stub import Stubber

    stubber = Stubber(aws.model_client("bedrock-runtime", REGION, None))
    stubber.activate()
    return stubber


def test_model_calls_wait_for_a_long_answer_and_do_not_ask_six_times() -> None:
    """A read timeout is a transient error to botocore's standard mode: the shared client (4 tries, 20 s each) would
    ask four times for an answer that takes longer than 20 s. The model client waits 5 minutes, twice at most."""
    config = aws.model_client("bedrock-runtime", REGION, None).meta.config
    assert config.read_timeout == 300 and config.retries == {"mode": "standard", "total_max_attempts": 2}
    shared = aws.client("bedrock-runtime", REGION, None).meta.config
    assert shared.read_timeout == 20 and shared.retries["total_max_attempts"] == 4
    assert aws.model_client("bedrock-runtime", REGION, None) is aws.model_client("bedrock-runtime", REGION, None)


def _expected_invoke(text: str, max_tokens: int) -> dict[str, object]:
    return {
        "modelId": MODEL_ARN,
        "contentType": "application/json",
        "accept": "application/json",
        "body": json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}),
    }


def test_l3sm_ask_invokes_the_newest_succeeded_model_with_the_smoke_test_body(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn, bedrock = _ask_stubs(machine, "run7")
    runtime = model_stub()
    raw = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Ready."}}]}).encode()
    runtime.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"},
        _expected_invoke("Are you ready?", 32),
    )
    result = run(l3sm, "ask", "Are you ready?", "--max-tokens", "32")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Ready."
    for stub in (sfn, bedrock, runtime):
        stub.assert_no_pending_responses()


def _ask_refused(mocked: FakeCloudFormation, code: str, status: int, times: int = 1) -> tuple[Any, str]:
    """`kit l3sm ask hi` against run7's model, whose InvokeModel answers ``code`` ``times`` times (then "Ready."):
    the result and the machine."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    _ask_stubs(machine, "run7")
    runtime = model_stub()
    for _ in range(times):
        runtime.add_client_error("invoke_model", code, "refused", status, expected_params=_expected_invoke("hi", 256))
    raw = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Ready."}}]}).encode()
    body = {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"}
    runtime.add_response("invoke_model", body, _expected_invoke("hi", 256))
    result = run(l3sm, "ask", "hi")
    return result, machine


@pytest.mark.parametrize("times", [2, 1 + len(MODEL_NOT_READY_WAITS)])
def test_l3sm_ask_waits_for_a_cold_model_then_says_it_is_still_warming_up(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    """The SDK retries ModelNotReadyException up to 5 times; the model client tries twice, so ask waits itself."""
    from kit import level3_finetune

    slept: list[float] = []
    monkeypatch.setattr(level3_finetune, "sleep", slept.append)
    result, machine = _ask_refused(mocked, "ModelNotReadyException", 429, times=times)
    if times == 2:
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith("Ready.") and slept == [10, 20]
        return
    assert result.exit_code == 1
    assert f"{sm_name(execution_arn(machine, 'run7'))} is warming up" in result.output
    assert "retry in a minute" in result.output and slept == list(level3_finetune.MODEL_NOT_READY_WAITS)


def test_l3sm_ask_denied_names_the_model_and_the_default_project(mocked: FakeCloudFormation) -> None:
    result, _ = _ask_refused(mocked, "AccessDeniedException", 403)
    assert result.exit_code == 1
    project = MODEL_ARN.rsplit(":", 1)[0] + ":project/default"
    assert f"may not invoke {MODEL_ARN}: grant bedrock:InvokeModel on it and on the account's default" in result.output
    assert f"({project})" in result.output


def test_l3sm_ask_names_what_to_do_when_the_model_is_gone(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    bedrock = stubbed("bedrock")
    model = sm_name(execution_arn(machine, "run3"))  # a name given: its ARN is built from the state machine's
    boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run3")
    bedrock.add_client_error(
        "get_imported_model", "ResourceNotFoundException", "gone", 404, expected_params={"modelIdentifier": model}
    )
    result = run(l3sm, "ask", "hi", "--execution", "run3")
    assert result.exit_code == 1
    assert f"no imported model {model}" in result.output and "kit l3sm status run3" in result.output


def test_l3sm_ask_names_the_model_when_bedrock_names_no_arn_for_it(mocked: FakeCloudFormation) -> None:
    """botocore bedrock 2023-04-20 GetImportedModelResponse requires no member, and InvokeModel takes an imported
    model by its ARN (bedrock-runtime InvokeModel modelId). Before: `Error: unexpected KeyError: 'modelArn'`."""
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(mocked, machine)
    sfn, bedrock = _ask_stubs(machine, "run7", arn=False)
    runtime = model_stub()  # no InvokeModel answer queued: the command must not call it
    result = run(l3sm, "ask", "hi")
    assert result.exit_code == 1
    model = sm_name(execution_arn(machine, "run7"))
    assert f"Bedrock's answer for the imported model {model} named no ARN" in " ".join(result.output.split())
    assert "KeyError" not in result.output
    for stub in (sfn, bedrock, runtime):
        stub.assert_no_pending_responses()


def test_the_customization_check_takes_a_listing_without_model_summaries_as_not_offered() -> None:
    """botocore bedrock 2023-04-20 ListFoundationModelsResponse does not require modelSummaries. Before: a KeyError
    that kit doctor's guarded does not catch stopped the whole run."""
    from kit.doctor import FIX
    from kit.level3_finetune import check_customization, filterable_customization_types

    target = Target()
    kind = target.config.finetune.customization_type
    bedrock = stubbed("bedrock")
    filterable = kind in filterable_customization_types(aws.client("bedrock", REGION, None))
    bedrock.add_response("list_foundation_models", {}, {"byCustomizationType": kind} if filterable else {})
    check = check_customization(target)
    bedrock.assert_no_pending_responses()
    assert check.status == FIX and "not offered in" in check.detail, check


def test_l3sm_start_wait_follows_the_execution_to_its_end(executing: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, SM_MACHINE)
    sagemaker_stack(executing, machine)
    result = run(l3sm, "start", "--training-key", "datasets/train.jsonl", "--wait", "--poll-seconds", "0.2")
    assert result.exit_code == 0, result.output
    assert "RUNNING · Pause" in result.output and "SUCCEEDED" in result.output and "Pause → Done" in result.output
    failing = state_machine(FAILING, f"other-{CONFIG.stage}-sft")
    sagemaker_stack(executing, failing)
    failed = run(l3sm, "start", "--training-key", "datasets/train.jsonl", "--wait", "--poll-seconds", "0.1")
    assert failed.exit_code == 1 and "InvalidData" in failed.output


def test_the_readme_says_which_options_kit_l3_validate_and_start_take() -> None:
    """Before: the README's command table said only start took --teacher-model, and named no --data-bucket."""
    [row] = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `kit l1 …`")]
    said = re.search(
        r"validate \(offline\) and start, each with (.*?)(?: \((validate|start) also (.*?)\))?, status", row
    )
    assert said is not None, row

    def options(text: str | None) -> set[str]:
        return set(re.findall(r"`(--[a-z-]+)`", text or ""))

    def takes(command: str) -> set[str]:
        return {opt for param in l3.commands[command].params for opt in param.opts if opt.startswith("--")}

    validate, start = takes("validate"), takes("start")
    shared, own, owner = options(said[1]), options(said[3]), said[2]
    assert shared and shared <= validate & start, shared
    assert own <= (validate - start if owner == "validate" else start - validate), (owner, own)
    # Every option of validate beyond those of any data check (model, validation file, hyperparameters) is named.
    assert validate - {"--base-model", "--validation", "--hyperparameters"} <= shared | (
        own if owner == "validate" else set()
    )


def test_ask_waits_out_the_five_minutes_a_restore_may_take() -> None:
    """ "Your request is served within 5 minutes or you might get ModelNotReadyException" (invoke-imported-model):
    `ask` keeps asking at least that long before it says to retry (before: about three minutes)."""
    assert sum(MODEL_NOT_READY_WAITS) >= 5 * 60


def test_l3_start_wait_exits_1_when_the_run_fails(executing: FakeCloudFormation) -> None:
    # A script or CI job that runs `kit l3 start --wait` reads the run's outcome from the exit code.
    finetune_stack(executing, state_machine(FAILING, "finetune"))
    result = run(l3, "start", "--training-key", "datasets/train.jsonl", "--wait", "--poll-seconds", "0.1")
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "bad rows" in result.output


@pytest.mark.parametrize(
    ("status", "code"), [("SUCCEEDED", 0), ("COMPLETE", 0), ("FAILED", 1), ("ABORTED", 1), ("TIMED_OUT", 1)]
)
def test_a_followed_run_exits_0_only_when_it_succeeded(status: str, code: int) -> None:
    import click

    from kit.operator import finish

    with click.Context(click.Command("probe")):
        if code:
            with pytest.raises(click.exceptions.Exit) as exited:
                finish(status)
            assert exited.value.exit_code == code
        else:
            finish(status)  # returns: the command exits 0
