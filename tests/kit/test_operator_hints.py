"""What the operator commands print for the operator to run next, offline: the "follow it with" and resume hints of
kit l3, kit l3sm and kit l4 carry the options the command was given (a hint without them follows another stage's
execution, or fails), `kit l4 status` names an execution's training job whatever the execution's status, and
`kit l3sm ask` reports a network error of InvokeModel as an AWS error."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError, ResponseStreamingError

from kit import aws
from kit.aws import Target
from kit.cli import cli
from kit.level3_finetune import l3, l3sm
from kit.level4_pretrain import l4
from tests.kit.operator_helpers import (  # each *_fixture registers its fixture for this module
    CONFIG,
    REGION,
    STAGE,
    WAIT_THEN_PASS,
    FakeCloudFormation,
    cloudformation_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    run,
    state_machine,
    stubbed,
)

PROD = "prod" if STAGE != "prod" else "sandbox"  # a stage other than cdk.json's
MODEL_ARN = f"arn:aws:bedrock:{REGION}:123456789012:imported-model/abcdefghijkl"


def _flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def _execution_arn(machine: str, name: str) -> str:
    return machine.replace(":stateMachine:", ":execution:", 1) + ":" + name


def _job_name(arn: str, stage: str = STAGE) -> str:
    """The training job the Jobs state machine names for an execution (stacks/level4_pretrain/names.py), computed
    here apart from the kit: the prefix and stage, then the MD5 of the execution ARN."""
    return f"{CONFIG.name_prefix}-{stage}-pt-{hashlib.md5(arn.encode()).hexdigest()}"


def _deploy(fake: FakeCloudFormation, level: str, stage: str, outputs: dict[str, str]) -> None:
    for key, value in outputs.items():
        if key.endswith("BucketName"):
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=value)
    fake.deploy(f"{aws.stack_id(level)}-{stage}", outputs)


@pytest.fixture(name="other_profile")
def other_profile_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """An AWS profile named ``other`` beside the default credentials."""
    (tmp_path / "config").write_text(f"[profile other]\nregion = {REGION}\n")
    (tmp_path / "credentials").write_text("[other]\naws_access_key_id = other\naws_secret_access_key = other\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return "other"


# --- the hints carry the target's options -------------------------------------------------------------------------


def test_kit_command_puts_every_option_given_on_the_group() -> None:
    assert Target().kit_command("l4", "status run1 --wait") == "kit l4 status run1 --wait"
    given = Target(stage="prod", region_override="us-west-2", profile="ops", context={"name_prefix": "my kit"})
    assert (
        given.kit_command("l4", "status run1 --wait")
        == "kit l4 --stage prod --region us-west-2 --profile ops -c 'name_prefix=my kit' status run1 --wait"
    )
    # -c stage=… and -c region=… are the same overrides (--stage and --region win over them, as in the config).
    assert Target(context={"stage": "prod"}).kit_command("l3", "status x") == "kit l3 --stage prod status x"


def test_l4_submit_hints_follow_the_execution_of_the_stage_it_started(mocked: FakeCloudFormation) -> None:
    """Before: `kit l4 status run1 --wait`, which follows run1 of cdk.json's stage: another execution, or none."""
    machines = {}
    for stage in (STAGE, PROD):
        machines[stage] = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{stage}-pretrain")
        outputs = {"StateMachineArn": machines[stage], "ArtifactsBucketName": f"artifacts-{stage}"}
        _deploy(mocked, "4-jobs", stage, outputs)
    started = run(l4, "--stage", PROD, "submit", "--name", "run1")
    assert started.exit_code == 0, started.output
    hint = f"kit l4 --stage {PROD} status run1 --wait"
    assert f"Follow it with: {hint}" in _flat(started.output)
    # The printed command (without --wait: moto's execution keeps running) reads the execution it started.
    shown = run(l4, *hint.split()[2:-1])
    assert shown.exit_code == 0, shown.output
    assert _execution_arn(machines[PROD], "run1") in shown.output
    # The same hint when a wait stops (here its timeout) and when status --wait stops.
    waited = run(l4, "--stage", PROD, "submit", "--name", "run2", "--wait", "--timeout", "0")
    assert waited.exit_code == 1
    assert f"kit l4 --stage {PROD} status run2 --wait" in _flat(waited.output)
    followed = run(l4, "--stage", PROD, "status", "run2", "--wait", "--timeout", "0")
    assert followed.exit_code == 1
    assert f"kit l4 --stage {PROD} status {_execution_arn(machines[PROD], 'run2')} --wait" in _flat(followed.output)


def test_a_name_no_execution_has_is_said_so_not_told_as_a_wait_to_resume(mocked: FakeCloudFormation) -> None:
    """Before: `kit l4 status <typo> --wait` answered the AWS error and then "the execution keeps running: then
    follow it with kit l4 status <the same ARN> --wait", the command that had just failed."""
    machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{STAGE}-pretrain")
    _deploy(mocked, "4-jobs", STAGE, {"StateMachineArn": machine, "ArtifactsBucketName": f"artifacts-{STAGE}"})
    for extra in (("--wait",), ()):
        result = run(l4, "status", "no-such-run", *extra)
        assert result.exit_code == 1, result.output
        text = _flat(result.output)
        assert text.startswith(f"Error: no execution {_execution_arn(machine, 'no-such-run')}: check the name or ARN")
        assert "keeps running" not in text and "follow it" not in text


def test_l3_hints_carry_the_profile_and_the_stage(mocked: FakeCloudFormation, other_profile: str) -> None:
    """Before: `kit l3 status <arn> --wait`, which reads cdk.json's stage's stack with the default credentials."""
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    _deploy(mocked, "3", PROD, {"DataBucketName": "ft-data", "StateMachineArn": machine, "BaseModelId": "x"})
    options = ("--profile", other_profile, "--stage", PROD)
    none = run(l3, *options, "status")
    assert none.exit_code == 1
    assert f"start one with kit l3 --stage {PROD} --profile {other_profile} start --upload FILE" in _flat(none.output)
    started = run(l3, *options, "start", "--training-key", "datasets/x.jsonl")
    assert started.exit_code == 0, started.output
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    arn = execution["executionArn"]
    hint = f"kit l3 --stage {PROD} --profile {other_profile} status {arn} --wait"
    assert f"Follow it with: {hint}" in _flat(started.output)
    shown = run(l3, *hint.split()[2:-1])
    assert shown.exit_code == 0, shown.output
    assert arn in shown.output
    waited = run(l3, *options, "start", "--training-key", "datasets/y.jsonl", "--wait", "--timeout", "0")
    assert waited.exit_code == 1 and f"kit l3 --stage {PROD} --profile {other_profile} status arn:" in waited.output
    followed = run(l3, *options, "status", arn, "--wait", "--timeout", "0")
    assert followed.exit_code == 1 and hint in _flat(followed.output)


def test_l3sm_hints_carry_the_stage(mocked: FakeCloudFormation) -> None:
    """Before: `kit l3sm status <arn> --wait`, refused for an ARN of another stage's state machine."""
    machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{PROD}-sft")
    outputs = {"DataBucketName": "sft-data", "StateMachineArn": machine, "ArtifactsBucketName": "sft-artifacts"}
    _deploy(mocked, "3-sagemaker", PROD, outputs)
    none = run(l3sm, "--stage", PROD, "status")
    assert none.exit_code == 1
    assert f"start one with kit l3sm --stage {PROD} start --training FILE" in _flat(none.output), none.output
    started = run(l3sm, "--stage", PROD, "start", "--training-key", "datasets/x.jsonl")
    assert started.exit_code == 0, started.output
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    hint = f"kit l3sm --stage {PROD} status {execution['executionArn']} --wait"
    assert f"Follow it with: {hint}" in _flat(started.output)
    followed = run(l3sm, *hint.split()[2:], "--timeout", "0")
    assert followed.exit_code == 1 and hint in _flat(followed.output)
    waited = run(l3sm, "--stage", PROD, "start", "--training-key", "datasets/y.jsonl", "--wait", "--timeout", "0")
    assert waited.exit_code == 1 and f"kit l3sm --stage {PROD} status arn:" in waited.output


# --- kit l4 status names the training job --------------------------------------------------------------------------


def _described_job(name: str, status: str) -> dict[str, Any]:
    """A DescribeTrainingJob answer (the Stubber checks it against botocore's model)."""
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "TrainingJobStatus": status,
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 50},
        "StoppingCondition": {},
        "CreationTime": datetime.now(UTC),
        "ModelArtifacts": {"S3ModelArtifacts": ""},
    }


def test_l4_status_names_the_training_job_of_a_stopped_execution(mocked: FakeCloudFormation) -> None:
    """docs/level-4-pretrain.md "Stopping a run": stopping the execution may leave its job running, and `kit l4
    status` names the job. Before: the job was named only while the execution ran and only with --wait."""
    machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{STAGE}-pretrain")
    _deploy(mocked, "4-jobs", STAGE, {"StateMachineArn": machine, "ArtifactsBucketName": "artifacts"})
    assert run(l4, "submit", "--name", "run1").exit_code == 0
    arn = _execution_arn(machine, "run1")
    boto3.client("stepfunctions", region_name=REGION).stop_execution(executionArn=arn)
    job = _job_name(arn)
    with stubbed("sagemaker") as sagemaker:
        sagemaker.add_response("describe_training_job", _described_job(job, "InProgress"), {"TrainingJobName": job})
        result = run(l4, "status", "run1")
        sagemaker.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    printed = _flat(result.output)
    assert "ABORTED" in printed and f"Training job {job}: InProgress/Training" in printed
    assert f"Stop it with aws sagemaker stop-training-job --training-job-name {job} --region {REGION}" in printed
    # A job that stopped needs no stop command; a job never created (moto has none) is said so, by name.
    with stubbed("sagemaker") as sagemaker:
        sagemaker.add_response("describe_training_job", _described_job(job, "Stopped"), {"TrainingJobName": job})
        stopped = _flat(run(l4, "status", "run1").output)
    assert f"Training job {job}: Stopped/Training" in stopped and "stop-training-job" not in stopped
    aws.reset()
    missing = run(l4, "status", "run1")
    assert missing.exit_code == 0 and f"Training job {job}: not created" in _flat(missing.output)
    # A job the caller may not read is still named, and the execution's status still shows.
    with stubbed("sagemaker") as sagemaker:
        sagemaker.add_client_error("describe_training_job", "AccessDeniedException", "no", 400)
        denied = run(l4, "status", "run1")
    assert denied.exit_code == 0 and "ABORTED" in denied.output
    assert f"Training job {job} (its status was not read: access denied while reading the training job" in _flat(
        denied.output
    )


# --- kit l3sm ask: network errors are AWS errors ------------------------------------------------------------------


class _BrokenBody:
    def read(self) -> bytes:
        raise ResponseStreamingError(error="Connection broken: IncompleteRead(0 bytes read)")


ENDPOINT = f"https://bedrock-runtime.{REGION}.amazonaws.com"


@pytest.mark.parametrize(
    "outcome",
    [
        ReadTimeoutError(endpoint_url=ENDPOINT),
        EndpointConnectionError(endpoint_url=ENDPOINT),
        {"body": _BrokenBody(), "contentType": "application/json"},  # the answer breaks off while it is read
    ],
    ids=["read-timeout", "no-connection", "answer-broken-off"],
)
def test_l3sm_ask_reports_a_network_error_as_an_aws_error(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch, outcome: Any
) -> None:
    """Before: "unexpected ReadTimeoutError: … (run with KIT_DEBUG=1 for the traceback)", a kit bug's message."""
    machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{STAGE}-sft")
    outputs = {"DataBucketName": "sft-data", "StateMachineArn": machine, "ArtifactsBucketName": "sft-artifacts"}
    _deploy(mocked, "3-sagemaker", STAGE, outputs)
    boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")
    stubbed("bedrock").add_response("get_imported_model", {"modelArn": MODEL_ARN, "modelName": "m"})

    def invoke_model(**_: Any) -> Any:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(aws.model_client("bedrock-runtime", REGION, None), "invoke_model", invoke_model)
    monkeypatch.delenv("KIT_DEBUG", raising=False)
    result = run(cli, "l3sm", "ask", "hi", "--execution", "run1")  # the `kit` command, as the operator runs it
    assert result.exit_code == 1
    assert "unexpected" not in result.output and "KIT_DEBUG" not in result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "invoking the imported model" in result.output or f"cannot reach {ENDPOINT}" in result.output


def test_l3sm_ask_still_reads_a_whole_answer(mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{STAGE}-sft")
    outputs = {"DataBucketName": "sft-data", "StateMachineArn": machine, "ArtifactsBucketName": "sft-artifacts"}
    _deploy(mocked, "3-sagemaker", STAGE, outputs)
    boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")
    stubbed("bedrock").add_response("get_imported_model", {"modelArn": MODEL_ARN, "modelName": "m"})
    answer = {"body": io.BytesIO(b'{"choices": [{"message": {"content": "Ready."}}]}')}
    monkeypatch.setattr(aws.model_client("bedrock-runtime", REGION, None), "invoke_model", lambda **_: answer)
    result = run(l3sm, "ask", "hi", "--execution", "run1")
    assert result.exit_code == 0 and result.output.strip() == "Ready."


def test_l3sm_ask_of_a_name_no_execution_has_says_so(mocked: FakeCloudFormation) -> None:
    """Before: the model name was made from the mistyped name and the answer was "no imported model ...: the run did
    not import one or it was deleted"."""
    machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{STAGE}-sft")
    outputs = {"DataBucketName": "sft-data", "StateMachineArn": machine, "ArtifactsBucketName": "sft-artifacts"}
    _deploy(mocked, "3-sagemaker", STAGE, outputs)
    result = run(l3sm, "ask", "hi", "--execution", "rnu1")
    assert result.exit_code == 1
    assert _flat(result.output).startswith(f"Error: no execution {_execution_arn(machine, 'rnu1')}: check the name")
