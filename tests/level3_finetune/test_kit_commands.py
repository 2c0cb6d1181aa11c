"""kit l3 (Level 3, fine-tuning), offline: the pipeline's validator run locally, uploads under datasets/, and
starting and following the state machine (moto's Step Functions, its interpreter where executions must run)."""

from __future__ import annotations

import json

import boto3

from kit.level3_finetune import l3
from tests.conftest import ROOT
from tests.kit.operator_helpers import (  # each *_fixture registers its fixture for this module
    CONFIG,
    FAILING,
    REGION,
    WAIT_THEN_PASS,
    FakeCloudFormation,
    cloudformation_fixture,  # noqa: F401
    executing_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    run,
    stack,
    state_machine,
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
    assert keys == ["datasets/train.jsonl", "datasets/validation.jsonl"]
    sfn = boto3.client("stepfunctions", region_name=REGION)
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "trainingKey": "datasets/train.jsonl",
        "validationKey": "datasets/validation.jsonl",
        "hyperparameters": {"epochCount": "1"},
    }
    assert f"kit l3 status {execution['executionArn']} --wait" in result.output


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
    started = run(
        l3,
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
