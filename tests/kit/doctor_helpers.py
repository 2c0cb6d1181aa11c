"""What the tests of ``kit doctor`` share, offline: the target read from cdk.json, fresh clients, a fixed
DeployNeeds in place of synthesizing the app, moto (STS, SSM) and botocore's Stubber (Bedrock, Lambda, SSM errors,
Service Quotas; it checks every request and answer against the API model), and answers of the shapes AWS gives.

The kit-wide checks are tested in tests/kit/test_doctor.py, each level's own checks beside the level
(tests/levelN_x/test_kit_doctor.py); those import the fixtures they use from here by name (pytest registers a
fixture imported into a test module, autouse ones included).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber
from click.testing import CliRunner, Result
from moto import mock_aws

from kit import aws
from kit import doctor as doctor_module
from kit.aws import Target
from kit.doctor import DeployNeeds, doctor
from tests.kit.operator_helpers import FakeCloudFormation

CONFIG = Target().config
REGION = CONFIG.region
ACCOUNT = "123456789012"  # moto's
BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
# What the doctor reads from the synthesized app, fixed for the tests that do not synthesize.
NEEDS = DeployNeeds(
    functions=14,
    reserved=0,
    bootstrap={BOOTSTRAP_PARAMETER: 6},
    api_methods_by_stack={"GenAiKit-1-Prompt": 3, "GenAiKit-2-Rag": 2},
)
JOBS_QUOTA = "Concurrent model customization jobs"  # a name of the kind the doctor looks for


@pytest.fixture(autouse=True, name="doctor_clients")
def doctor_clients_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "1000")  # the table's detail column stays on one line
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    aws.reset()
    yield
    aws.reset()


@pytest.fixture(autouse=True, name="fixed_needs")
def fixed_needs_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test synthesizes the app through the doctor (about 15 s each): it needs NEEDS."""
    monkeypatch.setattr(doctor_module, "synthesized_needs", lambda target: NEEDS)


@pytest.fixture(name="mocked")
def mocked_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudFormation]:
    fake = FakeCloudFormation().install(monkeypatch)
    with mock_aws():
        yield fake


def stubbed(service: str) -> Stubber:
    stubber = Stubber(aws.client(service, REGION, None))
    stubber.activate()
    return stubber


def run(*args: str) -> Result:
    return CliRunner().invoke(doctor, list(args), catch_exceptions=False)


def quota(name: str, value: float, code: str, service: str = "sagemaker") -> dict[str, Any]:
    return {"ServiceCode": service, "QuotaName": name, "QuotaCode": code, "Value": value}


def network_quotas(stub: Stubber, vpcs: float = 5, elastic_ips: float = 5) -> None:
    """The Region quotas Level 4's cluster network takes from (applied values), in the order the doctor reads them."""
    from kit.level4_pretrain import ELASTIC_IPS_QUOTA, VPCS_QUOTA

    vpc = quota(VPCS_QUOTA, vpcs, "L-F678F1CE", "vpc")
    stub.add_response("list_service_quotas", {"Quotas": [vpc]}, {"ServiceCode": "vpc"})
    eip = quota(ELASTIC_IPS_QUOTA, elastic_ips, "L-0263D0A3", "ec2")
    stub.add_response("list_service_quotas", {"Quotas": [eip]}, {"ServiceCode": "ec2"})


def bedrock_quotas(stub: Stubber, applied: list[dict[str, Any]], defaults: list[dict[str, Any]] | None = None) -> None:
    """The doctor reads Bedrock's applied quotas, then its defaults (quotas without an applied value)."""
    stub.add_response("list_service_quotas", {"Quotas": applied}, {"ServiceCode": "bedrock"})
    stub.add_response("list_aws_default_service_quotas", {"Quotas": defaults or []}, {"ServiceCode": "bedrock"})


IMPORTED_MODELS_CODE = "L-IMPORT01"  # test data: the doctor reads the code from Service Quotas' answer


def imported_models_quota(value: float) -> dict[str, Any]:
    """Bedrock's quota on imported models (Level 3's SageMaker path), as Service Quotas names it."""
    from kit.level3_finetune import IMPORTED_MODELS_QUOTA

    return quota(IMPORTED_MODELS_QUOTA, value, IMPORTED_MODELS_CODE, "bedrock")


def imported_models(stub: Stubber, *pages: list[str]) -> None:
    """ListImportedModels answers, one per page (each but the last with a nextToken the doctor must follow)."""
    for number, names in enumerate(pages or ([],)):
        summaries = [
            {
                "modelArn": f"arn:aws:bedrock:{REGION}:{ACCOUNT}:imported-model/{name}",
                "modelName": name,
                "creationTime": datetime(2025, 1, 1, tzinfo=UTC),
            }
            for name in names
        ]
        answer: dict[str, Any] = {"modelSummaries": summaries}
        if number < len(pages) - 1:
            answer["nextToken"] = f"page-{number + 2}"
        stub.add_response("list_imported_models", answer, {"nextToken": f"page-{number + 1}"} if number else {})
