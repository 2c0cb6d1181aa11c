"""kit doctor's Level 4 checks, offline: the SageMaker training-job and HyperPod instance quotas the configuration
needs (Service Quotas through botocore's Stubber)."""

from __future__ import annotations

import boto3
import pytest

from kit.aws import Target
from kit.doctor import FIX, OK, WARN
from kit.level4_pretrain import ELASTIC_IPS_QUOTA, VPCS_QUOTA, check_quotas, quota_needs
from tests.kit.doctor_helpers import (  # each *_fixture registers its fixture for this module
    REGION,
    doctor_clients_fixture,  # noqa: F401
    fixed_needs_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    network_quotas,
    quota,
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


def test_the_instance_type_of_a_group_with_no_instances_is_warn_until_it_is_scaled_up() -> None:
    # The default configuration: a controller (ml.t3.medium, 1) and a GPU group of 0 (ml.g5.8xlarge), whose quota
    # starts at 0 in most accounts. The cluster is created without GPUs, so the doctor must not fail on it; a
    # group of 1 of that type needs the quota before the deploy.
    def rows(target: Target) -> dict[str, tuple[str, str]]:
        needs = quota_needs(target)
        applied = [quota(name, 0 if "ml.g5" in name else 10_000, f"L-{i:08d}") for i, name in enumerate(needs)]
        with stubbed("service-quotas") as service_quotas:
            service_quotas.add_response("list_service_quotas", {"Quotas": applied}, {"ServiceCode": "sagemaker"})
            checks = check_quotas(target)
        assert [check.name for check in checks] == [f"Quota: {name}" for name in needs]  # the doctor's row order
        return {check.name.removeprefix("Quota: "): (check.status, check.detail) for check in checks}

    idle = rows(Target())
    status, detail = idle["ml.g5.8xlarge for cluster usage"]
    assert status == WARN and detail.startswith("0, the config needs 1: ")
    assert detail.endswith("(only before a group of this type is scaled above 0 instances)")
    assert idle["ml.t3.medium for cluster usage"][0] == OK
    assert idle["ml.g5.xlarge for training job usage"][0] == FIX  # Level 4's training jobs: 0 is below the 2 needed
    one = rows(Target(context={"hp_compute_groups": '[{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 1}]'}))
    assert one["ml.g5.8xlarge for cluster usage"][0] == FIX


def network_rows(target: Target, vpcs: float, elastic_ips: float) -> dict[str, tuple[str, str]]:
    from kit.doctor import QuotaBook
    from kit.level4_pretrain import check_network_room

    with stubbed("service-quotas") as service_quotas:
        network_quotas(service_quotas, vpcs=vpcs, elastic_ips=elastic_ips)
        checks = check_network_room(target, QuotaBook(target))
        service_quotas.assert_no_pending_responses()
    return {check.name.removeprefix("Quota: "): (check.status, check.detail) for check in checks}


def test_the_cluster_network_needs_room_under_the_regions_vpc_and_elastic_ip_quotas(
    mocked: FakeCloudFormation,
) -> None:
    # moto's Region holds its default VPC; two Elastic IPs of other work are allocated there
    ec2 = boto3.client("ec2", region_name=REGION)
    for _ in range(2):
        ec2.allocate_address(Domain="vpc")
    two_nats = Target(context={"hp_nat_gateways": "2"})
    rows = network_rows(two_nats, vpcs=2, elastic_ips=3)
    assert rows[VPCS_QUOTA] == ("OK", f"2 (L-F678F1CE), 1 in use in {REGION}, the cluster stack creates 1: 1 free")
    status, detail = rows[ELASTIC_IPS_QUOTA]
    assert status == FIX and detail.startswith(f"3 (L-0263D0A3), 2 in use in {REGION}, the cluster stack creates 2: ")
    assert (
        "a first deploy would roll back" in detail
        and "--service-code ec2 --quota-code L-0263D0A3 --desired-value 4" in detail
    )
    assert network_rows(Target(), vpcs=2, elastic_ips=3)[ELASTIC_IPS_QUOTA][0] == OK  # one NAT gateway: one address
    # once the cluster stack is deployed, its own VPC and addresses are among those in use: nothing more is needed
    mocked.deploy(two_nats.stack_name("4-cluster"), {"ClusterName": "genai-kit-sandbox-hp"})
    status, detail = network_rows(two_nats, vpcs=1, elastic_ips=2)[ELASTIC_IPS_QUOTA]
    assert status == OK and detail.endswith(
        f"{two_nats.stack_name('4-cluster')} is deployed, and its own are among those in use"
    )


def test_an_unreadable_vpc_count_is_a_fix_row_naming_the_read(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from kit import level4_pretrain

    def denied(target: Target, quota: str) -> int:
        error = {
            "Error": {"Code": "UnauthorizedOperation", "Message": "You are not authorized to perform this operation."}
        }
        raise ClientError(error, "DescribeVpcs")

    monkeypatch.setattr(level4_pretrain, "_in_use", denied)
    status, detail = network_rows(Target(), vpcs=5, elastic_ips=5)[VPCS_QUOTA]
    assert status == FIX and "ec2:DescribeVpcs" in detail


def test_vpcs_another_account_shares_do_not_count_against_this_accounts_quota() -> None:
    """A participant account of a shared VPC lists it too, but it counts against the owner's "VPCs per Region"
    (vpc-sharing). Before, every listed VPC was counted, and such an account got a FIX saying a first deploy of the
    cluster would roll back."""
    from kit.level4_pretrain import _in_use

    account = "123456789012"
    with stubbed("sts") as sts, stubbed("ec2") as ec2:
        identity = {"Account": account, "Arn": f"arn:aws:iam::{account}:user/u", "UserId": "AIDA0000000000000000"}
        sts.add_response("get_caller_identity", identity, {})
        owned = [{"Name": "owner-id", "Values": [account]}]
        ec2.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-0a", "OwnerId": account}]}, {"Filters": owned})
        assert _in_use(Target(), VPCS_QUOTA) == 1
        ec2.assert_no_pending_responses()
