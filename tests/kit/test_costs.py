"""kit.costs over the real synthesized templates, the unknown-type failure, and the price table itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kit import KitUsageError
from kit.costs import (
    FREE_WHILE_IDLE,
    HYPERPOD_EBS,
    INTERFACE_ENDPOINT,
    PRICED_WHILE_IDLE,
    PRICES_FILE,
    StackCost,
    UnpricedResourceError,
    analyze_stack,
    cost_report,
    load_prices,
    report_json,
)
from stacks.level4_pretrain.settings import hyperpod_instance_types
from stacks.shared.registry import resource_schema
from tests.infra.helpers import only, resources

REGIONS = ("us-east-1", "us-west-2")


@pytest.fixture(scope="module")
def prices() -> Any:
    return load_prices("us-east-1")


def cost_of(synth: Any, stack_id: str, prices: Any) -> StackCost:
    return analyze_stack(stack_id, synth.templates[stack_id], prices)


def dead_letter_alarms(template: dict[str, Any]) -> int:
    """The stack's alarms on a dead-letter queue (every dead-letter queue has one: tests/infra/test_async_edges.py)."""
    return sum(
        1
        for alarm in resources(template, "AWS::CloudWatch::Alarm").values()
        if (alarm["Properties"].get("Namespace"), alarm["Properties"].get("MetricName"))
        == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    )


def items(cost: StackCost) -> dict[str, tuple[float, float]]:
    """price id -> (quantity, USD per month), summed over the stack's idle items."""
    found: dict[str, tuple[float, float]] = {}
    for item in cost.idle_items:
        quantity, usd = found.get(item.price_id, (0.0, 0.0))
        found[item.price_id] = (quantity + item.quantity, round(usd + item.monthly_usd, 2))
    return found


def test_level1_idles_at_six_alarms(sandbox: Any, prices: Any) -> None:
    cost = cost_of(sandbox, "GenAiKit-1-Prompt", prices)
    assert items(cost) == {"cloudwatch.alarm": (6, 0.60)}
    assert cost.idle_usd == 0.60
    assert not cost.unpriced


def test_level2_with_s3_vectors_has_no_floor(sandbox: Any, prices: Any) -> None:
    # Ten alarms: dead letters, stale changes (a change's age in the queue, and its wait through re-queued copies),
    # a failed job, failed documents, ingest function errors, API 5xx, API latency, model access refused and model
    # throttling.
    cost = cost_of(sandbox, "GenAiKit-2-Rag", prices)
    assert items(cost) == {"cloudwatch.alarm": (10, 1.00)}
    assert "AWS::S3Vectors::Index" in cost.free_types


def test_level2_with_opensearch_bills_the_ocu_floor(sandbox_oss: Any, prices: Any) -> None:
    cost = cost_of(sandbox_oss, "GenAiKit-2-Rag", prices)
    # Standby replicas off: 1 OCU (0.5 indexing + 0.5 search) around the clock, at $0.24 an OCU-hour.
    assert items(cost)["opensearch_serverless.ocu"] == (1, 175.20)
    assert cost.idle_usd == 176.20


@pytest.mark.parametrize(
    ("props", "ocus"),
    [({"StandbyReplicas": "ENABLED"}, 2), ({}, 2), ({"StandbyReplicas": "DISABLED"}, 1)],
    ids=["standby-on", "standby-default", "standby-off"],
)
def test_standby_replicas_double_the_ocu_floor(prices: Any, props: dict[str, Any], ocus: int) -> None:
    """StandbyReplicas is ENABLED unless set: with redundancy a collection scales down to 1 OCU for indexing and 1
    for search (0.5 OCU x 2 each), without it to 0.5 and 0.5: twice the floor
    (https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-scaling.html)."""
    default = resource_schema("AWS::OpenSearchServerless::Collection")["properties"]["StandbyReplicas"].get("default")
    assert default in (None, "ENABLED")  # the pricing reads an absent property as ENABLED
    template = {"Resources": {"C": {"Type": "AWS::OpenSearchServerless::Collection", "Properties": props}}}
    cost = analyze_stack("S", template, prices)
    assert items(cost)["opensearch_serverless.ocu"] == (ocus, round(ocus * 175.20, 2))


def test_level3_idles_at_its_kms_key(sandbox: Any, prices: Any) -> None:
    # The key, and the alarm on the teardown's dead-letter queue (teardown.py).
    cost = cost_of(sandbox, "GenAiKit-3-FineTune", prices)
    assert items(cost) == {"kms.key": (1, 1.00), "cloudwatch.alarm": (1, 0.10)}
    # The key rotates yearly, and each of its first two rotations bills another $1/month
    # (https://aws.amazon.com/kms/pricing/): the later figure says so.
    [key] = [item for item in cost.idle_items if item.price_id == "kms.key"]
    assert key.later_monthly_usd == 3.00 and "$3.00 from the second rotation" in key.detail
    assert (cost.idle_usd, cost.idle_later_usd) == (1.10, 3.10)


def test_a_key_that_does_not_rotate_does_not_grow(prices: Any) -> None:
    template = {"Resources": {"K": {"Type": "AWS::KMS::Key", "Properties": {"EnableKeyRotation": False}}}}
    cost = analyze_stack("S", template, prices)
    [key] = cost.idle_items
    assert key.later_monthly_usd is None and "rotation" not in key.detail
    assert cost.idle_later_usd == cost.idle_usd == 1.00


def _groups(synth: Any) -> list[dict[str, Any]]:
    _, cluster = only(synth.templates["GenAiKit-4-Pretrain-Cluster"], "AWS::SageMaker::Cluster")
    groups: list[dict[str, Any]] = cluster["Properties"]["InstanceGroups"]
    return groups


def _ebs_gb(group: dict[str, Any]) -> int:
    configs = group["InstanceStorageConfigs"]
    return sum(c["EbsVolumeConfig"]["VolumeSizeInGB"] for c in configs if "EbsVolumeConfig" in c)


def test_a_hyperpod_ebs_volume_is_one_per_instance_of_its_group() -> None:
    # What multiplies a group's VolumeSizeInGB by its InstanceCount, in AWS's own words (the registry schema).
    schema = resource_schema("AWS::SageMaker::Cluster")
    assert schema is not None
    described = schema["definitions"]["ClusterEbsVolumeConfig"]["properties"]["VolumeSizeInGB"]["description"]
    assert "attached to each instance within the SageMaker HyperPod cluster instance group" in described


def test_cluster_bills_controller_its_ebs_volume_nat_gateway_and_its_address(sandbox: Any, prices: Any) -> None:
    cost = cost_of(sandbox, "GenAiKit-4-Pretrain-Cluster", prices)
    [controller] = [g for g in _groups(sandbox) if g["InstanceCount"]]
    gb = _ebs_gb(controller)  # cdk.json's hp_ebs_volume_gb
    assert gb == 100
    assert items(cost) == {
        "sagemaker.hyperpod:ml.t3.medium": (1, 36.50),
        HYPERPOD_EBS: (100, 14.00),  # the controller's volume, $0.14/GB-month
        "vpc.nat_gateway": (1, 32.85),
        "vpc.public_ipv4": (1, 3.65),
        "cloudwatch.alarm": (1, 0.10),  # on the dead-letter queue of the cluster-health notification rule
    }
    assert cost.idle_usd == 87.10
    # The GPU group holds 0 instances: priced per use (instance-hours and each node's volume), not while idle.
    per_use = {price.price_id: price for price in cost.per_use}
    assert "sagemaker.hyperpod:ml.g5.8xlarge" in per_use
    volume = per_use[HYPERPOD_EBS]
    assert (volume.usd, volume.unit, volume.approximate) == (14.00, "node-month", True)
    [gpu] = [g for g in _groups(sandbox) if not g["InstanceCount"]]
    assert f"per {gpu['InstanceGroupName']} node ({_ebs_gb(gpu)} GB)" in volume.label
    # The only endpoint of the cluster's VPC is the S3 gateway endpoint: free.
    assert "AWS::EC2::VPCEndpoint" in cost.free_types


def test_cluster_options_add_fsx_storage_and_the_login_node(sandbox_fsx: Any, prices: Any) -> None:
    cost = cost_of(sandbox_fsx, "GenAiKit-4-Pretrain-Cluster", prices)
    found = items(cost)
    assert found["fsx.lustre_persistent2:125"] == (1200, 174.00)  # 1.2 TiB at 125 MB/s/TiB
    assert found["sagemaker.hyperpod:ml.t3.medium"] == (2, 73.00)  # controller + login
    assert found[HYPERPOD_EBS] == (200, 28.00)  # one 100 GB volume each
    assert cost.idle_usd == 311.60


def test_ebs_volumes_scale_with_the_instances_of_each_group(prices: Any) -> None:
    def group(name: str, count: int, gb: int) -> dict[str, Any]:
        storage = [{"EbsVolumeConfig": {"VolumeSizeInGB": gb}}, {"FsxLustreConfig": {"DnsName": "x"}}]
        return {"InstanceGroupName": name, "InstanceType": "ml.t3.medium", "InstanceCount": count,
                "InstanceStorageConfigs": storage}  # fmt: skip

    groups = [group("controller", 1, 100), group("workers", 3, 500), group("spare", 0, 900)]
    cluster = {"Type": "AWS::SageMaker::Cluster", "Properties": {"InstanceGroups": groups}}
    [cost] = cost_report({"S": {"Resources": {"Cluster": cluster}}}, prices)
    assert items(cost)[HYPERPOD_EBS] == (1600, 224.00)  # 100 + 3 x 500 GB; the empty group has no volume
    assert [p.usd for p in cost.per_use if p.price_id == HYPERPOD_EBS] == [126.00]  # 900 GB per spare node


def _endpoint(**props: Any) -> dict[str, Any]:
    return {"S": {"Resources": {"Endpoint": {"Type": "AWS::EC2::VPCEndpoint", "Properties": props}}}}


def test_gateway_endpoints_are_free_and_the_default_type() -> None:
    schema = resource_schema("AWS::EC2::VPCEndpoint")
    assert schema is not None
    assert "Default: Gateway" in schema["properties"]["VpcEndpointType"]["description"]
    for props in ({"VpcEndpointType": "Gateway", "ServiceName": "com.amazonaws.us-east-1.s3"}, {}):
        [cost] = cost_report(_endpoint(**props), load_prices("us-east-1"))
        assert (cost.idle_items, cost.idle_usd, cost.free_types) == ((), 0, ("AWS::EC2::VPCEndpoint",))


def test_interface_endpoints_bill_per_subnet_and_hour(prices: Any) -> None:
    [cost] = cost_report(_endpoint(VpcEndpointType="Interface", SubnetIds=[{"Ref": "A"}, {"Ref": "B"}]), prices)
    assert items(cost) == {INTERFACE_ENDPOINT: (2, 14.60)}  # 2 AZs x $0.01/hour x 730 h


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"VpcEndpointType": "Interface"}, "SubnetIds"),
        ({"VpcEndpointType": "Interface", "SubnetIds": {"Fn::Split": [",", "a,b"]}}, "non-literal SubnetIds"),
        ({"VpcEndpointType": "GatewayLoadBalancer", "SubnetIds": ["s"]}, "GatewayLoadBalancer endpoint"),
    ],
)
def test_an_endpoint_it_cannot_price_fails(props: dict[str, Any], reason: str, prices: Any) -> None:
    with pytest.raises(UnpricedResourceError, match=reason):
        cost_report(_endpoint(**props), prices)


def _stage(**props: Any) -> dict[str, Any]:
    return {"S": {"Resources": {"Stage": {"Type": "AWS::ApiGateway::Stage", "Properties": props}}}}


def test_a_stage_is_free_unless_its_cache_cluster_is_on(prices: Any) -> None:
    """A stage cache bills by the hour; before, every stage counted as free whatever it held."""
    schema = resource_schema("AWS::ApiGateway::Stage")
    assert schema is not None and "CacheClusterEnabled" in schema["properties"]
    for props in ({}, {"CacheClusterEnabled": False, "StageName": "v1"}):
        [cost] = cost_report(_stage(**props), prices)
        assert (cost.idle_usd, cost.free_types) == (0, ("AWS::ApiGateway::Stage",))
    with pytest.raises(UnpricedResourceError, match="cache cluster"):
        cost_report(_stage(CacheClusterEnabled=True, CacheClusterSize="0.5"), prices)


def test_a_valid_instance_type_without_a_price_asks_for_the_price_entry(prices: Any) -> None:
    # ml.m5.2xlarge is a HyperPod type (the SageMaker API model) that kit/prices.json does not price.
    assert "ml.m5.2xlarge" in hyperpod_instance_types()
    group = {"InstanceGroupName": "controller", "InstanceType": "ml.m5.2xlarge", "InstanceCount": 1}
    cluster = {"Type": "AWS::SageMaker::Cluster", "Properties": {"InstanceGroups": [group]}}
    with pytest.raises(UnpricedResourceError) as raised:
        cost_report({"S": {"Resources": {"Cluster": cluster}}}, prices)
    message = str(raised.value)
    assert 'Add the price "sagemaker.hyperpod:ml.m5.2xlarge" to kit/prices.json' in message
    assert "FREE_WHILE_IDLE" not in message
    [unpriced] = raised.value.unpriced
    assert unpriced.missing_price == "sagemaker.hyperpod:ml.m5.2xlarge"


def test_make_synth_asks_for_the_missing_price_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.synth_summary import main

    group = {"InstanceGroupName": "controller", "InstanceType": "ml.m5.2xlarge", "InstanceCount": 1}
    template = {
        "Resources": {"Cluster": {"Type": "AWS::SageMaker::Cluster", "Properties": {"InstanceGroups": [group]}}}
    }
    (tmp_path / "C.template.json").write_text(json.dumps(template))
    artifact = {"type": "aws:cloudformation:stack", "properties": {"templateFile": "C.template.json"}}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"GenAiKit-4-Pretrain-Cluster": artifact}}))
    assert main(["synth_summary.py", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "idle cost unpriced: AWS::SageMaker::Cluster needs the price 'sagemaker.hyperpod:ml.m5.2xlarge'" in out
    assert 'Add the price "sagemaker.hyperpod:ml.m5.2xlarge" to kit/prices.json' in err
    assert "unclassified: AWS::SageMaker::Cluster" not in out and "FREE_WHILE_IDLE" not in err


def test_training_job_stack_costs_nothing_idle(sandbox: Any, prices: Any) -> None:
    # The zero-idle path: its job-state rule dead-letters into a queue no alarm watches (test_async_edges.py)
    cost = cost_of(sandbox, "GenAiKit-4-Pretrain-Jobs", prices)
    assert (cost.idle_items, cost.idle_usd) == ((), 0)
    assert "sagemaker.training:ml.g5.xlarge" in {price.price_id for price in cost.per_use}


def test_prod_idles_like_sandbox_without_the_sandbox_only_helpers(sandbox: Any, prod: Any, prices: Any) -> None:
    for stack_id in sandbox.templates:
        sandbox_cost, prod_cost = cost_of(sandbox, stack_id, prices), cost_of(prod, stack_id, prices)
        assert prod_cost.idle_usd == sandbox_cost.idle_usd, stack_id
    # Sandbox buckets empty themselves on destroy; prod ones are retained, so the helper is gone there.
    assert "Custom::S3AutoDeleteObjects" in cost_of(sandbox, "GenAiKit-2-Rag", prices).free_types
    assert "Custom::S3AutoDeleteObjects" not in cost_of(prod, "GenAiKit-2-Rag", prices).free_types


def test_every_resource_type_the_kit_synthesizes_is_classified(each_stage: Any, prices: Any) -> None:
    report = cost_report(each_stage.templates, prices)  # raises on any unknown type
    assert [stack.stack_id for stack in report] == sorted(each_stage.templates)


def test_level1_lists_its_per_use_prices(sandbox: Any, prices: Any) -> None:
    per_use = {price.price_id: price.usd for price in cost_of(sandbox, "GenAiKit-1-Prompt", prices).per_use}
    assert per_use["bedrock.input_tokens:amazon.nova-micro-v1"] == 0.035
    assert per_use["bedrock.output_tokens:amazon.nova-micro-v1"] == 0.14
    assert per_use["bedrock.guardrail_content_filter"] == 0.15
    assert per_use["bedrock.guardrail_denied_topics"] == 0.15
    assert per_use["bedrock.guardrail_sensitive_info"] == 0.10
    assert per_use["apigateway.rest_requests"] == 3.50
    assert {"lambda.requests", "lambda.gb_second:arm64"} <= set(per_use)
    assert "lambda.gb_second:x86_64" not in per_use  # only the kit's arm64 function, no deploy-time helper


def test_traced_functions_and_the_opensearch_store_list_what_they_bill_per_use(
    sandbox: Any, sandbox_oss: Any, prices: Any
) -> None:
    """Before: neither was listed. Every kit function traces actively, so each scheduled run (L2's ingest sync
    every 5 minutes and its hourly reconcile: about 9,490 runs a month, about $0.05 in traces beyond the free
    tier) records a trace; an OpenSearch Serverless collection bills its stored data besides the OCU floor."""
    for synth in (sandbox, sandbox_oss):
        for stack_id in synth.templates:
            per_use = {price.price_id for price in cost_of(synth, stack_id, prices).per_use}
            template = synth.templates[stack_id]
            traced = any(
                r["Type"] == "AWS::Lambda::Function"
                and (r.get("Properties", {}).get("TracingConfig") or {}).get("Mode") == "Active"
                for r in template["Resources"].values()
            )
            assert ("xray.traces_recorded" in per_use) is traced, stack_id
    oss = {price.price_id: price.usd for price in cost_of(sandbox_oss, "GenAiKit-2-Rag", prices).per_use}
    s3v = {price.price_id for price in cost_of(sandbox, "GenAiKit-2-Rag", prices).per_use}
    assert oss["opensearch_serverless.storage"] == 0.024 and "opensearch_serverless.storage" not in s3v
    assert oss["xray.traces_recorded"] == 5.0


def test_an_unknown_resource_type_fails_naming_type_and_stack(prices: Any) -> None:
    templates = {
        "GenAiKit-1-Prompt": {
            "Resources": {"Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"Period": 300}}}
        },
        "GenAiKit-9-New": {"Resources": {"Graph": {"Type": "AWS::Neptune::DBCluster"}}},
    }
    with pytest.raises(UnpricedResourceError) as raised:
        cost_report(templates, prices)
    message = str(raised.value)
    assert "GenAiKit-9-New: AWS::Neptune::DBCluster (Graph)" in message
    assert "GenAiKit-1-Prompt" not in message and "\n" not in message
    assert "add it to FREE_WHILE_IDLE in kit/costs.py if it bills nothing while idle" in message


@pytest.mark.parametrize(
    ("group", "reason"),
    [
        ({"InstanceGroupName": "gpu", "InstanceType": "ml.p5.48xlarge", "InstanceCount": 2}, "sagemaker.hyperpod"),
        ({"InstanceGroupName": "gpu", "InstanceType": "ml.t3.medium", "InstanceCount": {"Ref": "Count"}}, "literal"),
    ],
)
def test_a_cluster_it_cannot_price_fails_instead_of_counting_zero(group: dict[str, Any], reason: str) -> None:
    cluster = {"Type": "AWS::SageMaker::Cluster", "Properties": {"InstanceGroups": [group]}}
    with pytest.raises(UnpricedResourceError, match=reason):
        cost_report({"S": {"Resources": {"Cluster": cluster}}}, load_prices("us-east-1"))


def test_a_zero_instance_group_of_an_unpriced_type_costs_nothing_idle(prices: Any) -> None:
    group = {"InstanceGroupName": "gpu", "InstanceType": "ml.p5.48xlarge", "InstanceCount": 0}
    cluster = {"Type": "AWS::SageMaker::Cluster", "Properties": {"InstanceGroups": [group]}}
    [cost] = cost_report({"S": {"Resources": {"Cluster": cluster}}}, prices)
    assert cost.idle_usd == 0


def test_an_fsx_tier_missing_from_the_table_fails(sandbox_fsx: Any, prices: Any) -> None:
    logical_id, fsx = only(sandbox_fsx.templates["GenAiKit-4-Pretrain-Cluster"], "AWS::FSx::FileSystem")
    changed = json.loads(json.dumps(fsx))
    changed["Properties"]["LustreConfiguration"]["PerUnitStorageThroughput"] = 40
    with pytest.raises(UnpricedResourceError, match=r"fsx\.lustre_persistent2:40"):
        cost_report({"S": {"Resources": {logical_id: changed}}}, prices)


def test_user_provisioned_fsx_metadata_iops_fail(sandbox_fsx: Any, prices: Any) -> None:
    logical_id, fsx = only(sandbox_fsx.templates["GenAiKit-4-Pretrain-Cluster"], "AWS::FSx::FileSystem")
    changed = json.loads(json.dumps(fsx))
    changed["Properties"]["LustreConfiguration"]["MetadataConfiguration"] = {"Mode": "USER_PROVISIONED", "Iops": 1500}
    with pytest.raises(UnpricedResourceError, match="metadata IOPS"):
        cost_report({"S": {"Resources": {logical_id: changed}}}, prices)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Period": 10}, "Period 10"),  # high resolution: three times the standard price
        ({"Period": {"Ref": "P"}}, "literal"),
        ({"Metrics": [{"Id": "m1", "Expression": "SUM(METRICS())"}]}, "metric math"),
    ],
)
def test_an_alarm_billed_otherwise_than_one_standard_metric_fails(
    sandbox: Any, prices: Any, change: dict[str, Any], reason: str
) -> None:
    """Every alarm the kit synthesizes is one standard-resolution metric (the one price the table has)."""
    alarms = resources(sandbox.templates["GenAiKit-1-Prompt"], "AWS::CloudWatch::Alarm")
    assert all(a["Properties"]["Period"] >= 60 and "Metrics" not in a["Properties"] for a in alarms.values())
    logical_id, alarm = next(iter(alarms.items()))
    changed = json.loads(json.dumps(alarm))
    changed["Properties"].update(change)
    with pytest.raises(UnpricedResourceError, match=reason):
        cost_report({"S": {"Resources": {logical_id: changed}}}, prices)


def test_free_and_priced_types_do_not_overlap() -> None:
    assert not FREE_WHILE_IDLE & PRICED_WHILE_IDLE


@pytest.mark.parametrize("region", REGIONS)
def test_every_price_names_its_date_and_source(region: str) -> None:
    entries = json.loads(PRICES_FILE.read_text())["regions"][region]
    assert entries
    for price_id, entry in entries.items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"]), price_id
        assert entry["source"].startswith("https://aws.amazon.com/"), price_id
        assert entry["usd"] > 0 and entry["unit"] and entry["label"], price_id
        assert "approximate" not in entry or entry["approximate"].strip(), price_id


def test_both_regions_price_the_same_items() -> None:
    regions = json.loads(PRICES_FILE.read_text())["regions"]
    assert set(regions["us-east-1"]) == set(regions["us-west-2"])


@pytest.mark.parametrize("region", REGIONS)
def test_every_price_the_kit_needs_is_in_the_table(sandbox: Any, sandbox_oss: Any, region: str) -> None:
    table = load_prices(region)
    for synth in (sandbox, sandbox_oss):
        for stack in cost_report(synth.templates, table):
            missing = [price.price_id for price in stack.per_use if price.usd is None]
            assert not missing, (stack.stack_id, missing)


def test_a_region_without_prices_is_refused() -> None:
    with pytest.raises(KitUsageError, match="us-east-1, us-west-2") as raised:  # a usage error: exit 2
        load_prices("eu-west-1")
    assert raised.value.exit_code == 2


# Custom Model Import (Level 3 on SageMaker): the prices follow from the CreateModelImportJob grant in the template.
IMPORT_PRICES = ("bedrock.imported_model_inference", "bedrock.imported_model_storage")
SAGEMAKER_STACK = "GenAiKit-3-FineTune-SageMaker"
FINETUNE_STACK = "GenAiKit-3-FineTune"


def _policy_template(*statements: dict[str, Any]) -> dict[str, Any]:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return {"Resources": {"Policy": {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": document}}}}


def _without_import_grant(template: dict[str, Any]) -> dict[str, Any]:
    changed = json.loads(json.dumps(template))
    for resource in changed["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            kept = [s for s in statements if "bedrock:CreateModelImportJob" not in json.dumps(s["Action"])]
            resource["Properties"]["PolicyDocument"]["Statement"] = kept
    return changed


def test_sagemaker_path_lists_custom_model_import_per_use_and_per_kept_model(sandbox: Any, prices: Any) -> None:
    cost = cost_of(sandbox, SAGEMAKER_STACK, prices)
    per_use = {price.price_id: (price.usd, price.unit) for price in cost.per_use}
    assert per_use["bedrock.imported_model_inference"] == (0.05718, "CMU-minute")
    assert per_use["bedrock.imported_model_storage"] == (1.95, "CMU-month")
    assert "sagemaker.training:ml.g5.xlarge" in per_use
    # The stack owns no model: its idle cost is its dead-letter alarms; a model a run keeps bills its storage while
    # idle, shown per kept model.
    alarms = dead_letter_alarms(sandbox.templates[SAGEMAKER_STACK])
    assert alarms >= 1
    monthly = round(0.10 * alarms, 2)
    assert (items(cost), round(cost.idle_usd, 2)) == ({"cloudwatch.alarm": (alarms, monthly)}, monthly)
    assert [(price.price_id, price.usd) for price in cost.while_kept] == [("bedrock.imported_model_storage", 1.95)]


def test_stacks_that_import_no_model_list_no_import_prices(each_stage: Any, prices: Any) -> None:
    for stack in cost_report(each_stage.templates, prices):
        if stack.stack_id == SAGEMAKER_STACK:
            continue
        assert not {price.price_id for price in stack.per_use} & set(IMPORT_PRICES), stack.stack_id
        assert not {price.price_id for price in stack.while_kept} & set(IMPORT_PRICES), stack.stack_id


def test_the_bedrock_path_lists_the_storage_of_each_custom_model_a_run_keeps(each_stage: Any, prices: Any) -> None:
    """Before: only an imported model was listed per kept model; each successful customization run keeps a custom
    model that bills its storage monthly (https://aws.amazon.com/bedrock/pricing/) while the stack idles at $1."""
    base = each_stage.config.finetune.base_model_id.split(":")[0]
    for stack in cost_report(each_stage.templates, prices):
        kept = [price.price_id for price in stack.while_kept if price.price_id.startswith("bedrock.custom_model")]
        assert kept == ([f"bedrock.custom_model_storage:{base}"] if stack.stack_id == FINETUNE_STACK else []), stack
    finetune = cost_of(each_stage, FINETUNE_STACK, prices)
    assert {p.price_id for p in finetune.while_kept} <= {p.price_id for p in finetune.per_use}
    # The grant decides, as for an import: without CreateModelCustomizationJob nothing is kept.
    template = json.loads(json.dumps(each_stage.templates[FINETUNE_STACK]).replace("CreateModelCustomizationJob", "X"))
    assert analyze_stack(FINETUNE_STACK, template, prices).while_kept == ()


def test_import_prices_follow_the_grant_not_the_stack_id(sandbox: Any, prices: Any) -> None:
    stripped = analyze_stack(SAGEMAKER_STACK, _without_import_grant(sandbox.templates[SAGEMAKER_STACK]), prices)
    assert not {price.price_id for price in stripped.per_use} & set(IMPORT_PRICES)
    assert stripped.while_kept == ()
    wildcard = analyze_stack(
        "S", _policy_template({"Effect": "Allow", "Action": "bedrock:Create*", "Resource": "*"}), prices
    )
    assert {price.price_id for price in wildcard.per_use} >= set(IMPORT_PRICES)
    denied = analyze_stack(
        "S", _policy_template({"Effect": "Deny", "Action": ["bedrock:CreateModelImportJob"], "Resource": "*"}), prices
    )
    assert not {price.price_id for price in denied.per_use} & set(IMPORT_PRICES)


@pytest.mark.parametrize("region", REGIONS)
def test_custom_model_import_prices_name_their_source(region: str) -> None:
    entries = json.loads(PRICES_FILE.read_text())["regions"][region]
    inference, storage = (entries[price_id] for price_id in IMPORT_PRICES)
    for entry in (inference, storage):
        assert entry["source"] == "https://aws.amazon.com/bedrock/pricing/"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["date"])
    assert (inference["unit"], storage["unit"]) == ("CMU-minute", "CMU-month")
    # How the CMU figure is used: per copy, in 5-minute windows (the documented formula).
    assert "5-minute windows" in inference["note"]
    assert "https://docs.aws.amazon.com/bedrock/latest/userguide/import-model-calculate-cost.html" in inference["note"]


def test_report_json_lists_what_a_kept_model_bills(sandbox: Any, prices: Any) -> None:
    report = report_json(cost_report(sandbox.templates, prices), prices, stage="sandbox")
    by_stack = {stack["stack"]: stack for stack in report["stacks"]}
    [storage] = by_stack[SAGEMAKER_STACK]["while_kept"]
    assert (storage["price_id"], storage["usd"], storage["per"]) == (
        "bedrock.imported_model_storage",
        1.95,
        "kept model",
    )
    # its dead-letter alarms
    assert by_stack[SAGEMAKER_STACK]["idle_usd_month"] == round(
        0.1 * dead_letter_alarms(sandbox.templates[SAGEMAKER_STACK]), 2
    )
    assert by_stack["GenAiKit-1-Prompt"]["while_kept"] == []


@pytest.mark.parametrize("region", REGIONS)
def test_a_hyperpod_price_taken_from_ec2_says_so(region: str) -> None:
    # A HyperPod (SageMaker) instance lists above its EC2 counterpart: an EC2 figure is labelled as one.
    entries = json.loads(PRICES_FILE.read_text())["regions"][region]
    for price_id, entry in entries.items():
        if price_id.startswith("sagemaker.") and entry["source"].startswith("https://aws.amazon.com/ec2/"):
            assert "EC2" in entry["label"] and "lower bound" in entry["label"], price_id
            assert "not a SageMaker price" in entry["approximate"], price_id
    # ml.g5.8xlarge's $2.448 is EC2's on-demand g5.8xlarge rate.
    assert entries["sagemaker.hyperpod:ml.g5.8xlarge"]["source"] == "https://aws.amazon.com/ec2/pricing/on-demand/"


def test_state_machines_are_priced_by_their_type(sandbox: Any, prices: Any) -> None:
    """Standard workflows bill per state transition, Express ones per request (https://aws.amazon.com/step-functions/
    pricing/): Level 3's upload starter is Express, its pipeline Standard; Level 4's jobs machine Standard only."""
    types = {
        stack_id: {
            r.get("Properties", {}).get("StateMachineType", "STANDARD")
            for r in template["Resources"].values()
            if r["Type"] == "AWS::StepFunctions::StateMachine"
        }
        for stack_id, template in sandbox.templates.items()
    }
    assert types[FINETUNE_STACK] == {"STANDARD", "EXPRESS"}
    for stack_id, kinds in types.items():
        per_use = {price.price_id for price in cost_of(sandbox, stack_id, prices).per_use}
        assert ("stepfunctions.transitions" in per_use) == ("STANDARD" in kinds), stack_id
        assert ("stepfunctions.express_requests" in per_use) == ("EXPRESS" in kinds), stack_id


def test_a_stack_that_may_buy_provisioned_throughput_lists_its_hourly_price(each_stage: Any, prices: Any) -> None:
    """ft_deploy=provisioned buys a no-commitment Provisioned Throughput per run that bills per model unit and hour
    while it exists (https://aws.amazon.com/bedrock/pricing/): `kit cost` names it, without a figure it has not got."""
    from kit.cli import _price_text

    buys = each_stage.config.finetune.deploy == "provisioned"
    for stack in cost_report(each_stage.templates, prices):
        listed = [p for p in stack.per_use if p.price_id == "bedrock.provisioned_throughput"]
        assert bool(listed) == (buys and stack.stack_id == FINETUNE_STACK), stack.stack_id
        assert all(p.usd is None and p.unit == "model unit-hour" for p in listed)
        assert all("ft_provisioned_hours per run, used or not" in _price_text(p) for p in listed)
