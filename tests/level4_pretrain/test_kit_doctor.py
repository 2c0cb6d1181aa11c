"""kit doctor's Level 4 checks, offline: the SageMaker training-job and HyperPod instance quotas the configuration
needs (Service Quotas through botocore's Stubber)."""

from __future__ import annotations

from kit.aws import Target
from kit.doctor import FIX
from kit.level4_pretrain import check_quotas, quota_needs
from tests.kit.doctor_helpers import (  # each *_fixture registers its fixture for this module
    doctor_clients_fixture,  # noqa: F401
    fixed_needs_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    stubbed,
)
from tests.kit.operator_helpers import FakeCloudFormation


def test_quotas_that_cannot_be_read_are_fix_rows(mocked: FakeCloudFormation) -> None:
    with stubbed("service-quotas") as service_quotas:
        service_quotas.add_client_error(
            "list_service_quotas",
            "AccessDeniedException",
            "not authorized",
            expected_params={"ServiceCode": "sagemaker"},
        )
        rows = check_quotas(Target())
    assert [r.name for r in rows] == [f"Quota: {name}" for name in quota_needs(Target())]
    assert all(r.status == FIX and "servicequotas:ListServiceQuotas" in r.detail for r in rows)


def test_quota_needs_follow_the_level_4_configuration() -> None:
    spot = Target(context={"tj_spot": "true", "tj_instance_count": "3", "tj_max_wait_hours": "8"})
    settings = spot.config.pretrain
    needs = quota_needs(spot)
    assert needs[f"{settings.job_instance_type} for spot training job usage"] == 3
    for group in settings.groups:
        assert needs[f"{group.instance_type} for cluster usage"] >= max(group.count, 1)
