"""Level 4 settings: the cluster's instance groups and the training job's limits, from cdk.json or `-c`."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from stacks.config import ConfigError
from stacks.level4_pretrain.settings import InstanceGroupSpec
from tests.infra.test_config import build


def test_groups_are_the_controller_the_login_node_and_the_compute_groups() -> None:
    pretrain = build(
        hp_login_instance_type="ml.m5.xlarge",
        hp_compute_groups='[{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": "2"}]',
    ).pretrain
    assert pretrain.groups == (
        InstanceGroupSpec("controller", "Controller", "ml.t3.medium", 1),
        InstanceGroupSpec("login", "Login", "ml.m5.xlarge", 1),
        InstanceGroupSpec("gpu", "Compute", "ml.g5.8xlarge", 2),
    )
    assert pretrain.controller.instance_type == "ml.t3.medium"


@pytest.mark.parametrize(
    ("key", "raw", "read", "expected"),
    [
        ("hp_fsx", "true", lambda p: p.fsx, True),
        ("hp_fsx_throughput", "500", lambda p: p.fsx_throughput, 500),
        ("tj_spot", "false", lambda p: p.job_spot, False),
        ("tj_instance_count", "4", lambda p: p.job_instance_count, 4),
        ("hp_login_instance_type", "ml.m5.xlarge", lambda p: len(p.groups), 3),  # cdk.json has none: 2 groups
    ],
)
def test_string_overrides_from_the_command_line_are_coerced(key: str, raw: str, read: Any, expected: Any) -> None:
    assert read(build(**{key: raw}).pretrain) == expected


@pytest.mark.parametrize(
    ("groups", "allowed"),
    [
        ("[]", "JSON list"),
        ('[{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 1, "spot": true}]', "JSON list"),
        ('[{"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 101}]', "0 to 100 instances"),
        ('[{"name": "controller", "instance_type": "ml.g5.8xlarge", "count": 1}]', "unique"),
        ('[{"name": null, "instance_type": "ml.g5.8xlarge", "count": 0}]', "JSON list"),
        (
            '[{"name": "a' + "---b" * 20 + '", "instance_type": "ml.g5.8xlarge", "count": 0}]',
            "(1-63)",
        ),  # 81 long  # not a group named "None"
    ],
)
def test_compute_groups_name_their_key(groups: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(hp_compute_groups=groups)
    assert str(caught.value).startswith("config error: hp_compute_groups = ") and allowed in str(caught.value)


def test_spot_wait_and_cluster_mistakes_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        build(tj_spot="true", tj_max_wait_hours=2, hp_login_instance_type="ml.nope.large", hp_ebs_volume_gb=0)
    assert [p.key for p in caught.value.problems] == ["hp_login_instance_type", "hp_ebs_volume_gb", "tj_max_wait_hours"]


def test_every_compute_group_mistake_is_reported_at_once() -> None:
    groups = [
        {"name": "dev", "instance_type": "ml.bogus", "count": 500},
        {"name": "gpu\n", "instance_type": "ml.g5.8xlarge", "count": 0},  # a trailing newline is not a name
    ]
    with pytest.raises(ConfigError) as caught:
        build(hp_compute_groups=json.dumps(groups))
    lines = str(caught.value).splitlines()
    assert [p.key for p in caught.value.problems] == ["hp_compute_groups"] * 4, lines
    assert any("other than dev" in line for line in lines) and any("HyperPod supports" in line for line in lines)
    assert any("0 to 100 instances" in line for line in lines) and any("'gpu\\n'" in line for line in lines)


def test_more_instance_groups_than_the_api_takes_are_refused() -> None:
    # ClusterInstanceGroupSpecifications' max in botocore's model, 100 in the registry schema too.
    most = (
        boto3.client("sagemaker", region_name="us-east-1")
        .meta.service_model.shape_for("ClusterInstanceGroupSpecifications")
        .metadata["max"]
    )
    fits = [{"name": f"g{i}", "instance_type": "ml.g5.8xlarge", "count": 0} for i in range(most - 1)]  # + controller
    assert build(hp_compute_groups=json.dumps(fits)).pretrain.groups[-1].name == f"g{most - 2}"
    with pytest.raises(ConfigError) as caught:
        build(hp_compute_groups=json.dumps([*fits, {"name": "one-more", "instance_type": "ml.g5.8xlarge", "count": 0}]))
    assert f"at most {most} instance groups in the cluster" in str(caught.value)
