"""kit doctor, offline: moto for STS, the in-memory CloudFormation for the bootstrap stack, and botocore's
Stubber for Bedrock and Service Quotas (it checks every request and answer against the API model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from click.testing import CliRunner, Result
from moto import mock_aws

from kit import aws
from kit import doctor as doctor_module
from kit.aws import Target
from kit.doctor import FIX, OK, SKIP, doctor
from tests.kit.test_smoke import FakeCloudFormation

CONFIG = Target().config
REGION = CONFIG.region
ACCOUNT = "123456789012"  # moto's
TEXT_MODEL = CONFIG.text_model.foundation_model_id
EMBEDDING_MODEL = CONFIG.rag.embedding_model_id
FT = CONFIG.finetune


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "400")  # the table's detail column stays on one line
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    aws.reset()
    yield
    aws.reset()


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudFormation]:
    fake = FakeCloudFormation().install(monkeypatch)
    with mock_aws():
        yield fake


def stubbed(service: str) -> Stubber:
    stubber = Stubber(aws.client(service, REGION, None))
    stubber.activate()
    return stubber


def run(*args: str) -> Result:
    return CliRunner().invoke(doctor, list(args), catch_exceptions=False)


def available(model_id: str, **overrides: Any) -> dict[str, Any]:
    answer = {
        "modelId": model_id,
        "agreementAvailability": {"status": "AVAILABLE"},
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE",
        "regionAvailability": "AVAILABLE",
    }
    return {**answer, **overrides}


def model_summary(model_id: str) -> dict[str, Any]:
    return {"modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}", "modelId": model_id}


def quota(name: str, value: float, code: str) -> dict[str, Any]:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "Value": value}


def needed() -> dict[str, int]:
    return doctor_module.quota_needs(Target())


def row(output: str, name: str) -> str:
    """The table line of the check ``name``."""
    return next(line for line in output.splitlines() if name in line)


def test_everything_ok_exits_0(mocked: FakeCloudFormation) -> None:
    mocked.deploy("CDKToolkit", {"BootstrapVersion": "30"})
    quotas = [quota(name, count + 1, f"L-{i:08d}") for i, (name, count) in enumerate(needed().items())]
    with stubbed("bedrock") as bedrock, stubbed("service-quotas") as service_quotas:
        bedrock.add_response("get_foundation_model_availability", available(TEXT_MODEL), {"modelId": TEXT_MODEL})
        bedrock.add_response(
            "get_foundation_model_availability", available(EMBEDDING_MODEL), {"modelId": EMBEDDING_MODEL}
        )
        bedrock.add_response(
            "list_foundation_models",
            {"modelSummaries": [model_summary(FT.base_model_id), model_summary("amazon.titan-text-lite-v1:0:4k")]},
            {"byCustomizationType": FT.customization_type},
        )
        # two pages: the doctor follows NextToken
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": quotas[:1], "NextToken": "page-2"}, {"ServiceCode": "sagemaker"}
        )
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": quotas[1:]}, {"ServiceCode": "sagemaker", "NextToken": "page-2"}
        )
        result = run()
        bedrock.assert_no_pending_responses()
        service_quotas.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    total = 6 + len(needed())
    assert f"All {total} checks passed." in result.output
    assert f"account {ACCOUNT}" in row(result.output, "AWS credentials")
    assert "(version 30)" in row(result.output, "CDK bootstrap")
    assert f"via {CONFIG.text_model.model_id}" in result.output if CONFIG.text_model.is_inference_profile else True
    assert FIX not in result.output.split()


def test_problems_are_fix_rows_with_what_to_do_and_exit_1(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_region = "eu-west-1" if REGION != "eu-west-1" else "us-west-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", other_region)  # the shell points elsewhere; the kit does not follow
    names = list(needed())
    training = next(name for name in names if "training job usage" in name)
    cluster = [name for name in names if "cluster usage" in name]
    with stubbed("bedrock") as bedrock, stubbed("service-quotas") as service_quotas:
        bedrock.add_response(
            "get_foundation_model_availability",
            available(TEXT_MODEL, entitlementAvailability="NOT_AVAILABLE"),
            {"modelId": TEXT_MODEL},
        )
        bedrock.add_client_error(
            "get_foundation_model_availability",
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            expected_params={"modelId": EMBEDDING_MODEL},
        )
        bedrock.add_response(
            "list_foundation_models",
            {"modelSummaries": [model_summary("amazon.titan-text-lite-v1:0:4k")]},
            {"byCustomizationType": FT.customization_type},
        )
        # applied quotas: the training type at 0, the cluster types missing (quotas with no applied value)
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": [quota(training, 0, "L-TRAIN001")]}, {"ServiceCode": "sagemaker"}
        )
        defaults = [quota(cluster[0], 4, "L-CLUSTER1")]  # the first cluster type only among the defaults
        service_quotas.add_response(
            "list_aws_default_service_quotas", {"Quotas": defaults}, {"ServiceCode": "sagemaker"}
        )
        result = run()
    assert result.exit_code == 1, result.output
    out = result.output
    assert FIX in row(out, "Region") and f"export AWS_REGION={REGION}" in row(out, "Region")
    assert f"run npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in row(out, "CDK bootstrap")
    assert "enable model access in the Amazon Bedrock console" in row(out, f"Model access: {TEXT_MODEL}")
    assert f"{EMBEDDING_MODEL} is not authorized" in row(out, f"Model access: {EMBEDDING_MODEL}")
    assert "set ft_base_model_id to a model customizable there" in row(out, f"Customization: {FT.base_model_id}")
    training_row = row(out, f"Quota: {training}")
    assert FIX in training_row and f"the config needs {needed()[training]}" in training_row
    assert f"--quota-code L-TRAIN001 --desired-value {needed()[training]} --region {REGION}" in training_row
    assert OK in row(out, f"Quota: {cluster[0]}").split()
    for missing in cluster[1:]:
        assert "no SageMaker quota named" in row(out, f"Quota: {missing}")
    fixes = 5 + 1 + len(cluster[1:])
    assert f"{fixes} to fix, 0 skipped." in out


def test_no_credentials_fixes_the_first_row_and_skips_the_aws_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = run()
    assert result.exit_code == 1
    first = row(result.output, "AWS credentials")
    assert FIX in first and "no AWS credentials: configure a profile or environment variables" in first
    assert OK in row(result.output, "Region").split()
    skipped = [line for line in result.output.splitlines() if f" {SKIP} " in line]
    assert len(skipped) == 4 + len(needed())
    assert all("needs working credentials" in line for line in skipped)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "staging"], "Invalid value for '--stage'"),
        (["-c", "text_temperature=7"], "config error: text_temperature = '7' is not allowed"),
        (["-c", "stage"], "-c expects key=value, got 'stage'"),
    ],
)
def test_usage_and_configuration_errors_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_credentials_for_another_account_than_the_config_need_fixing(mocked: FakeCloudFormation) -> None:
    check, account = doctor_module.check_credentials(Target(context={"account": "111111111111"}))
    assert (check.status, account) == (FIX, ACCOUNT)
    assert f"credentials are for account {ACCOUNT}, the kit config says 111111111111" in check.detail


def test_older_botocore_falls_back_to_list_and_get_foundation_model(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert doctor_module.has_operation(aws.client("bedrock", REGION), "GetFoundationModelAvailability")
    monkeypatch.setattr(doctor_module, "has_operation", lambda client, operation: False)
    target = Target()
    with stubbed("bedrock") as bedrock:
        listing = {"modelSummaries": [model_summary(TEXT_MODEL)]}
        bedrock.add_response("list_foundation_models", listing, {})
        bedrock.add_response(
            "get_foundation_model", {"modelDetails": model_summary(TEXT_MODEL)}, {"modelIdentifier": TEXT_MODEL}
        )
        bedrock.add_response("list_foundation_models", listing, {})
        bedrock.add_client_error(
            "get_foundation_model",
            "AccessDeniedException",
            "User is not authorized to perform: bedrock:GetFoundationModel",
            expected_params={"modelIdentifier": TEXT_MODEL},
        )
        bedrock.add_response("list_foundation_models", {"modelSummaries": []}, {})
        readable = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL)
        denied = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL)
        absent = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL)
    assert readable.status == OK
    assert denied.status == FIX and "enable model access in the Amazon Bedrock console" in denied.detail
    assert absent.status == FIX and f"is not offered in {REGION}" in absent.detail


def test_quotas_that_cannot_be_read_are_fix_rows(mocked: FakeCloudFormation) -> None:
    with stubbed("service-quotas") as service_quotas:
        service_quotas.add_client_error(
            "list_service_quotas",
            "AccessDeniedException",
            "not authorized",
            expected_params={"ServiceCode": "sagemaker"},
        )
        rows = doctor_module.check_quotas(Target())
    assert [r.name for r in rows] == [f"Quota: {name}" for name in needed()]
    assert all(r.status == FIX and "servicequotas:ListServiceQuotas" in r.detail for r in rows)


def test_quota_needs_follow_the_level_4_configuration() -> None:
    spot = Target(context={"tj_spot": "true", "tj_instance_count": "3", "tj_max_wait_hours": "8"})
    settings = spot.config.pretrain
    needs = doctor_module.quota_needs(spot)
    assert needs[f"{settings.job_instance_type} for spot training job usage"] == 3
    for group in settings.groups:
        assert needs[f"{group.instance_type} for cluster usage"] >= max(group.count, 1)
