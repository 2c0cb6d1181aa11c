"""kit doctor's Level 3 checks, offline: the Bedrock quota on customization jobs at once (found by what its name
says) and, with ft_deploy=provisioned, the Provisioned Throughput model units (Service Quotas through botocore's
Stubber); the customization check against what ListFoundationModels can filter on; the SageMaker path's training
job quota and its free slot in the Bedrock quota on imported models (ListImportedModels through the Stubber)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from finetune_validate import formats
from finetune_validate.formats import CUSTOMIZATION_TYPES
from kit import doctor as doctor_module
from kit import level3_finetune as level3
from kit.aws import Target
from kit.doctor import FIX, OK, SKIP, WARN, QuotaBook
from tests.kit.doctor_helpers import (  # each *_fixture registers its fixture for this module
    IMPORTED_MODELS_CODE,
    JOBS_QUOTA,
    REGION,
    bedrock_quotas,
    doctor_clients_fixture,  # noqa: F401
    fixed_needs_fixture,  # noqa: F401
    imported_models,
    imported_models_quota,
    quota,
    stubbed,
)


def test_the_customization_jobs_quota_is_found_by_what_its_name_says() -> None:
    wanted = level3._is_customization_jobs_quota
    assert wanted("concurrent model customization jobs")
    assert wanted("sum of in-progress and submitted model customization jobs")
    assert not wanted("sum of training and validation records for a titan fine-tuning customization job")
    assert not wanted("concurrent model distillation customization jobs")
    assert not wanted("concurrent model import jobs")


def test_a_customization_jobs_quota_that_is_not_listed_is_skipped_not_guessed() -> None:
    with stubbed("service-quotas") as service_quotas:
        bedrock_quotas(service_quotas, [quota("Imported models per account", 3, "L-IMPORT01", "bedrock")])
        check = level3.check_customization_jobs(Target(), QuotaBook(Target()))
    assert check.status == SKIP and "Service Quotas > Amazon Bedrock" in check.detail


def test_bedrock_quotas_that_cannot_be_read_are_fix_rows() -> None:
    target = Target(context={"ft_deploy": "provisioned"})
    with stubbed("service-quotas") as service_quotas:
        service_quotas.add_client_error(
            "list_service_quotas", "AccessDeniedException", "not authorized", expected_params={"ServiceCode": "bedrock"}
        )
        rows = level3.check_bedrock_quotas(target)
    assert [r.name for r in rows] == [
        level3.CUSTOMIZATION_JOBS_ROW,
        f"Quota: {level3.PT_MODEL_UNITS_QUOTA}",
        level3.base_model_units_row(target),
    ]
    assert all(r.status == FIX and "servicequotas:ListServiceQuotas" in r.detail for r in rows)


def test_provisioned_deploy_needs_custom_model_units() -> None:
    assert level3.bedrock_quota_needs(Target()) == {}  # ft_deploy=none buys nothing
    target = Target(context={"ft_deploy": "provisioned"})
    units = level3.PT_MODEL_UNITS_QUOTA
    with stubbed("service-quotas") as service_quotas:
        bedrock_quotas(
            service_quotas,
            [quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock")],
            [quota(units, 0, "L-UNITS001", "bedrock")],  # no applied value yet: only its default of 0
        )
        jobs, model_units, _ = level3.check_bedrock_quotas(target)
    assert jobs.status == OK
    assert model_units.status == FIX and "0, the config needs 1" in model_units.detail
    assert f"--service-code bedrock --quota-code L-UNITS001 --desired-value 1 --region {REGION}" in model_units.detail
    with stubbed("service-quotas") as service_quotas:
        bedrock_quotas(service_quotas, [quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock")])
        _, missing, _ = level3.check_bedrock_quotas(target)
    assert missing.status == FIX and f"no Bedrock quota named {units!r} in {REGION}" in missing.detail


# Quota names as Service Quotas gives them (older models one way, newer ones another): the base model's own
# no-commitment model units, which CreateProvisionedModelThroughput also needs for a custom model of it.
NOVA_MICRO_UNITS = "Model units per provisioned model for the 128k context length variant for Amazon Nova Micro"
NOVA_MICRO_OTHER = "Model units per provisioned model for the 24k context length variant for Amazon Nova Micro"
NOVA_LITE_UNITS = "Model units per provisioned model for the 300k context length variant for Amazon Nova Lite"
NOVA_2_LITE_UNITS = (
    "No-commitment model units for Provisioned Throughput created for base model Amazon Nova 2 Lite V1.0 256K"
)
LLAMA_UNITS = "Model units per provisioned model for Meta Llama 3.1 8B Instruct"
TITAN_EXPRESS_UNITS = "Model units per provisioned model for Titan Text G1 - Express 8K"


def test_the_base_models_units_quota_is_found_by_its_name_and_context_length() -> None:
    def found(base: str, *names: str) -> list[str]:
        spec = formats.MODELS[base]
        listed = [(name, 1.0, f"L-{i:08d}") for i, name in enumerate(names)]
        context = base.split(":")[2]
        return [name for name, _, _ in level3.base_model_units_quotas(listed, spec.name, context)]

    every = (NOVA_MICRO_UNITS, NOVA_MICRO_OTHER, NOVA_LITE_UNITS, NOVA_2_LITE_UNITS, LLAMA_UNITS, TITAN_EXPRESS_UNITS)
    assert found("amazon.nova-micro-v1:0:128k", *every) == [NOVA_MICRO_UNITS]  # not the 24k variant's
    assert found("amazon.nova-lite-v1:0:300k", *every) == [NOVA_LITE_UNITS]  # not Nova 2 Lite's
    assert found("amazon.nova-2-lite-v1:0:256k", *every) == [NOVA_2_LITE_UNITS]
    assert found("meta.llama3-1-8b-instruct-v1:0:128k", *every) == [LLAMA_UNITS]  # names no context length
    assert found("meta.llama3-1-70b-instruct-v1:0:128k", *every) == []
    assert found("amazon.titan-text-express-v1:0:8k", *every) == [TITAN_EXPRESS_UNITS]  # an older name, no provider
    assert found("amazon.nova-micro-v1:0:128k", NOVA_MICRO_OTHER) == []
    per_model = NOVA_2_LITE_UNITS.replace(
        "No-commitment model units for Provisioned Throughput created for base model",
        "Model units per provisioned model for",
    )
    assert found("amazon.nova-2-lite-v1:0:256k", per_model, NOVA_2_LITE_UNITS) == [NOVA_2_LITE_UNITS]
    assert level3._units_quota_model(level3.PT_MODEL_UNITS_QUOTA.lower()) is None  # the account-wide one


def test_provisioned_deploy_needs_model_units_of_the_base_model_too() -> None:
    target = Target(context={"ft_deploy": "provisioned"})  # the configured base model: Amazon Nova Micro, 128k
    assert level3.doctor_rows(target, levels={"3"})[-1] == level3.base_model_units_row(target)
    across = quota(level3.PT_MODEL_UNITS_QUOTA, 2, "L-UNITS001", "bedrock")
    for value, status in ((0, FIX), (1, OK)):
        with stubbed("service-quotas") as service_quotas:
            own = quota(NOVA_MICRO_UNITS, value, "L-MICRO128", "bedrock")
            bedrock_quotas(service_quotas, [quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock"), across], [own])
            *_, base = level3.check_bedrock_quotas(target)
        assert base.status == status and f"'{NOVA_MICRO_UNITS}' (L-MICRO128)" in base.detail, base
    assert f"--quota-code L-MICRO128 --desired-value 1 --region {REGION}" not in base.detail  # OK: no request
    with stubbed("service-quotas") as service_quotas:
        bedrock_quotas(service_quotas, [across], [quota(NOVA_MICRO_OTHER, 4, "L-MICRO024", "bedrock")])
        *_, unknown = level3.check_bedrock_quotas(target)
    assert unknown.status == SKIP and "Service Quotas > Amazon Bedrock" in unknown.detail
    assert Target().config.finetune.deploy != "provisioned"
    assert level3.base_model_units_row(Target()) not in level3.doctor_rows(Target())


# --- the distillation teacher -----------------------------------------------------------------------------------


def test_a_distillation_teacher_profile_is_checked_in_the_region() -> None:
    teacher = "us.amazon.nova-pro-v1:0"
    target = Target(
        context={"ft_customization_type": "DISTILLATION", "ft_teacher_model_id": teacher, **NO_HYPERPARAMETERS}
    )
    label = "distillation teacher amazon.nova-pro-v1:0 (via us.amazon.nova-pro-v1:0)"
    assert f"Model access: {label}" in level3.doctor_rows(target)
    with stubbed("bedrock") as bedrock:
        request = {"inferenceProfileIdentifier": teacher}
        bedrock.add_client_error("get_inference_profile", "ResourceNotFoundException", expected_params=request)
        check = level3.check_teacher(target, level3._teacher(target))  # type: ignore[arg-type]
        bedrock.assert_no_pending_responses()
    assert check.status == FIX and "set ft_teacher_model_id to a profile" in check.detail
    assert not any("teacher" in name for name in level3.doctor_rows(Target()))  # FINE_TUNING has none


# --- the customization check: what ListFoundationModels can filter on ------------------------------------------

NO_HYPERPARAMETERS: dict[str, Any] = {"ft_hyperparameters": {}}  # the configured ones are FINE_TUNING's
RFT = {
    "ft_customization_type": "REINFORCEMENT_FINE_TUNING",
    "ft_base_model_id": "amazon.nova-2-lite-v1:0:256k",
    **NO_HYPERPARAMETERS,
}


# A base model the config accepts for each type the configured one does not take.
BASE_MODELS = {
    "CONTINUED_PRE_TRAINING": "amazon.titan-text-express-v1:0:8k",
    "REINFORCEMENT_FINE_TUNING": RFT["ft_base_model_id"],
}


def summary(model_id: str, *supported: str) -> dict[str, Any]:
    arn = f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}"
    return {"modelArn": arn, "modelId": model_id, "customizationsSupported": list(supported)}


def test_each_type_is_filtered_only_when_botocores_model_says_the_filter_takes_it() -> None:
    # The rule comes from botocore: ListFoundationModels' byCustomizationType enum (ModelCustomization), which
    # the service enforces; the kit's types are CreateModelCustomizationJob's.
    bedrock = Target().client("bedrock")
    members = bedrock.meta.service_model.operation_model("ListFoundationModels").input_shape.members
    assert level3.filterable_customization_types(bedrock) == tuple(members["byCustomizationType"].enum)
    for kind in CUSTOMIZATION_TYPES:
        base = BASE_MODELS.get(kind, Target().config.finetune.base_model_id)
        target = Target(context={"ft_customization_type": kind, "ft_base_model_id": base, **NO_HYPERPARAMETERS})
        ft = target.config.finetune
        request = {"byCustomizationType": kind} if kind in members["byCustomizationType"].enum else {}
        with stubbed("bedrock") as stub:
            answer = {"modelSummaries": [summary(ft.foundation_model_id, kind)]}
            stub.add_response("list_foundation_models", answer, request)
            check = level3.check_customization(target)
            stub.assert_no_pending_responses()
        assert check.status == OK, (kind, check)


def test_reinforcement_fine_tuning_is_checked_without_the_filter_it_would_be_refused() -> None:
    target = Target(context=RFT)
    model = target.config.finetune.foundation_model_id
    assert "REINFORCEMENT_FINE_TUNING" not in level3.filterable_customization_types(target.client("bedrock"))
    with stubbed("bedrock") as stub:
        stub.add_response("list_foundation_models", {"modelSummaries": [summary(model, "FINE_TUNING")]}, {})
        unknown = level3.check_customization(target)
        stub.add_response("list_foundation_models", {"modelSummaries": [summary("amazon.nova-pro-v1:0")]}, {})
        absent = level3.check_customization(target)
    assert unknown.status == SKIP and "reinforcement-fine-tuning.html" in unknown.detail
    assert f"{model} is offered in {REGION}" in unknown.detail and "names FINE_TUNING" in unknown.detail
    assert absent.status == FIX and f"{model} is not offered in {REGION}" in absent.detail


@pytest.mark.parametrize(
    ("lifecycle", "status", "words"),
    [
        ({"status": "ACTIVE"}, OK, "is offered for it"),
        ({"status": "LEGACY", "endOfLifeTime": datetime(2099, 1, 1, tzinfo=UTC)}, WARN, "as Legacy (end of life 2099"),
        ({"status": "LEGACY", "endOfLifeTime": datetime(2020, 1, 1, tzinfo=UTC)}, FIX, "end of life on 2020-01-01"),
    ],
    ids=["active", "legacy", "past-end-of-life"],
)
def test_the_base_models_lifecycle_in_the_listing_decides_the_customization_row(
    lifecycle: dict[str, Any], status: str, words: str
) -> None:
    # ListFoundationModels' summaries carry modelLifecycle (botocore bedrock 2023-04-20 FoundationModelSummary), so
    # a base model that turned Legacy after the kit's table was written is not reported OK.
    shape = Target().client("bedrock").meta.service_model.shape_for("FoundationModelSummary")
    assert {"status", "endOfLifeTime"} <= set(shape.members["modelLifecycle"].members)
    target = Target()
    ft = target.config.finetune
    kind = ft.customization_type
    assert kind in level3.filterable_customization_types(target.client("bedrock"))
    with stubbed("bedrock") as stub:
        answer = {"modelSummaries": [{**summary(ft.foundation_model_id, kind), "modelLifecycle": lifecycle}]}
        stub.add_response("list_foundation_models", answer, {"byCustomizationType": kind})
        check = level3.check_customization(target)
    assert check.status == status, check
    assert words in check.detail
    if status != OK:
        assert "set ft_base_model_id to an Active model" in check.detail


def test_a_type_with_quotas_of_its_own_is_checked_against_them_too() -> None:
    assert level3._jobs_quotas_for("DISTILLATION")("concurrent model distillation jobs")
    assert level3._jobs_quotas_for("REINFORCEMENT_FINE_TUNING")("concurrent reinforcement fine-tuning jobs")
    assert level3._jobs_quotas_for("DISTILLATION")(JOBS_QUOTA.lower())  # the general quota binds every type
    assert not level3._jobs_quotas_for("FINE_TUNING")("concurrent model distillation jobs")
    assert not level3._jobs_quotas_for("DISTILLATION")("concurrent reinforcement fine-tuning jobs")
    assert not level3._jobs_quotas_for("DISTILLATION")("records per distillation job")
    target = Target(context={"ft_customization_type": "DISTILLATION", **NO_HYPERPARAMETERS})
    with stubbed("service-quotas") as service_quotas:
        own = quota("Concurrent model distillation jobs", 0, "L-DISTIL01", "bedrock")
        bedrock_quotas(service_quotas, [quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock"), own])
        check = level3.check_customization_jobs(target, QuotaBook(target))
    assert check.status == FIX and "'Concurrent model distillation jobs' (L-DISTIL01) is 0" in check.detail


# --- the SageMaker path's training job (reported with Level 4's SageMaker quotas) ------------------------------


def test_the_sagemaker_paths_training_job_quota_is_checked_with_level_4s() -> None:
    from kit.level4_pretrain import quota_needs

    other = Target(context={"sm_instance_type": "ml.g5.2xlarge", "sm_instance_count": "2", "sm_spot": "true"})
    assert quota_needs(other)["ml.g5.2xlarge for spot training job usage"] == 2
    pretrain = other.config.pretrain
    assert quota_needs(other)[f"{pretrain.job_instance_type} for training job usage"] == pretrain.job_instance_count
    # both levels on the same quota: the larger count, one row
    for sm_count, tj_count in ((3, 2), (1, 4)):
        same = Target(
            context={
                "sm_instance_type": "ml.g5.xlarge",
                "sm_instance_count": str(sm_count),
                "tj_instance_type": "ml.g5.xlarge",
                "tj_instance_count": str(tj_count),
            }
        )
        assert quota_needs(same)["ml.g5.xlarge for training job usage"] == max(sm_count, tj_count)


# --- the SageMaker path's import: a free slot in Bedrock's quota on imported models --------------------------------


def imported_models_check(applied: list[dict[str, Any]], defaults: list[dict[str, Any]], *pages: list[str]) -> Any:
    """The row for Service Quotas' answers and ListImportedModels' pages (none: no listing expected)."""
    target = Target()
    with stubbed("service-quotas") as service_quotas, stubbed("bedrock") as bedrock:
        bedrock_quotas(service_quotas, applied, defaults)
        if pages:
            imported_models(bedrock, *pages)
        check = level3.check_imported_models(target, QuotaBook(target))
        bedrock.assert_no_pending_responses()  # every page was read
    return check


def test_a_free_imported_model_slot_is_ok_counting_the_models_on_every_page() -> None:
    check = imported_models_check([imported_models_quota(3)], [], ["genai-kit-sandbox-sft-a"], [])
    assert check.status == OK, check
    assert f"'Imported models per account' ({IMPORTED_MODELS_CODE}) = 3, 1 imported in {REGION}: 2 free" in check.detail


def test_a_full_imported_models_quota_needs_fixing_naming_the_models_and_both_ways_out() -> None:
    # Given the default quota of 3, held by the models three successful runs kept (listed on two pages)
    kept = ["genai-kit-sandbox-sft-a", "genai-kit-sandbox-sft-b", "other-team-model"]
    check = imported_models_check([], [imported_models_quota(3)], kept[:2], kept[2:])
    # Then the next run's import would be refused: delete one, or raise the quota to one more than they hold
    assert check.status == FIX, check
    assert f"is 3 and 3 models are imported in {REGION} ({', '.join(kept)})" in check.detail
    assert f"aws bedrock delete-imported-model --model-identifier NAME --region {REGION}" in check.detail
    request = f"--service-code bedrock --quota-code {IMPORTED_MODELS_CODE} --desired-value 4 --region {REGION}"
    assert request in check.detail


def test_an_imported_models_quota_of_0_needs_fixing() -> None:
    check = imported_models_check([imported_models_quota(0)], [], [])
    assert check.status == FIX and "is 0: each kit l3sm run imports 1 model" in check.detail, check
    assert f"--quota-code {IMPORTED_MODELS_CODE} --desired-value 1 --region {REGION}" in check.detail
    assert "delete-imported-model" not in check.detail  # nothing to delete


def test_imported_models_that_cannot_be_counted_are_skipped_unless_the_quota_is_0() -> None:
    target = Target()
    for value, status in ((3, SKIP), (0, FIX)):
        with stubbed("service-quotas") as service_quotas, stubbed("bedrock") as bedrock:
            bedrock_quotas(service_quotas, [imported_models_quota(value)])
            bedrock.add_client_error("list_imported_models", "AccessDeniedException", "not authorized")
            check = level3.check_imported_models(target, QuotaBook(target))
        assert check.status == status, check
    assert f"--quota-code {IMPORTED_MODELS_CODE} --desired-value 1" in check.detail
    with stubbed("service-quotas") as service_quotas, stubbed("bedrock") as bedrock:
        bedrock_quotas(service_quotas, [imported_models_quota(3)])
        bedrock.add_client_error("list_imported_models", "AccessDeniedException", "not authorized")
        skipped = level3.check_imported_models(target, QuotaBook(target))
    assert "bedrock:ListImportedModels is denied" in skipped.detail
    assert f"aws bedrock list-imported-models --region {REGION}` lists fewer than 3" in skipped.detail


def test_an_imported_models_quota_that_cannot_be_read_or_is_not_listed() -> None:
    target = Target()
    with stubbed("service-quotas") as service_quotas:
        service_quotas.add_client_error(
            "list_service_quotas", "AccessDeniedException", "not authorized", expected_params={"ServiceCode": "bedrock"}
        )
        unreadable = level3.check_imported_models(target, QuotaBook(target))
    assert unreadable.status == FIX and "servicequotas:ListServiceQuotas" in unreadable.detail
    unlisted = imported_models_check([quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock")], [])
    assert unlisted.status == SKIP and "'Imported models per account' in" in unlisted.detail
    assert "Service Quotas > Amazon Bedrock (L-45B04988)" in unlisted.detail


def test_the_imported_models_row_is_level_3sms_and_the_bedrock_paths_rows_level_3s() -> None:
    target = Target()
    assert level3.doctor_rows(target, levels={"3sm"}) == [level3.IMPORTED_MODELS_ROW]
    assert level3.IMPORTED_MODELS_ROW not in level3.doctor_rows(target, levels={"3"})
    assert level3.doctor_rows(target)[-1] == level3.IMPORTED_MODELS_ROW  # every level: after the Bedrock path's
    # `kit doctor --level 3sm` runs Level 3's part for the SageMaker path's row only
    [own] = [own for part, own in doctor_module.selected_parts(("3sm",)) if part.rows is level3.doctor_rows]
    assert own == {"3sm"}
    with stubbed("service-quotas") as service_quotas, stubbed("bedrock") as bedrock:
        bedrock_quotas(service_quotas, [imported_models_quota(3)])
        imported_models(bedrock, [])
        [check] = level3.doctor_checks(target, QuotaBook(target), doctor_module.NotSynthesized(""), levels=own)
        bedrock.assert_no_pending_responses()  # no customization call for the Bedrock path
    assert check.name == level3.IMPORTED_MODELS_ROW and check.status == OK
