"""kit doctor's Level 3 checks, offline: the Bedrock quota on customization jobs at once (found by what its name
says) and, with ft_deploy=provisioned, the Provisioned Throughput model units (Service Quotas through botocore's
Stubber)."""

from __future__ import annotations

from kit import level3_finetune as level3
from kit.aws import Target
from kit.doctor import FIX, OK, SKIP, QuotaBook
from tests.kit.doctor_helpers import (  # each *_fixture registers its fixture for this module
    JOBS_QUOTA,
    REGION,
    bedrock_quotas,
    doctor_clients_fixture,  # noqa: F401
    fixed_needs_fixture,  # noqa: F401
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
        jobs, model_units = level3.check_bedrock_quotas(target)
    assert jobs.status == OK
    assert model_units.status == FIX and "0, the config needs 1" in model_units.detail
    assert f"--service-code bedrock --quota-code L-UNITS001 --desired-value 1 --region {REGION}" in model_units.detail
    with stubbed("service-quotas") as service_quotas:
        bedrock_quotas(service_quotas, [quota(JOBS_QUOTA, 2, "L-JOBS0001", "bedrock")])
        _, missing = level3.check_bedrock_quotas(target)
    assert missing.status == FIX and f"no Bedrock quota named {units!r} in {REGION}" in missing.detail
