"""A stack can always be deleted and deployed again: nothing it retains holds network interfaces in a subnet or
security group the same stack deletes (EC2 refuses to delete those while an interface remains: DependencyViolation),
and nothing it retains keeps a fixed name that the next deploy would create again (AlreadyExists)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stacks.shared.registry import resource_schema
from tests.infra.helpers import as_list, created_before, statements

NETWORK_TYPES = {"AWS::EC2::Subnet", "AWS::EC2::SecurityGroup", "AWS::EC2::VPC"}
# The DeletionPolicy values that keep a resource when its stack is deleted
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-attribute-deletionpolicy.html).
KEPT = ("Retain", "RetainExceptOnCreate")


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            yield value["Ref"]
        elif set(value) == {"Fn::GetAtt"}:
            yield value["Fn::GetAtt"][0] if isinstance(value["Fn::GetAtt"], list) else value["Fn::GetAtt"].split(".")[0]
        else:
            for item in value.values():
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def blocking_retentions(template: dict[str, Any]) -> list[str]:
    """Retained resources that name a subnet, security group or VPC this template deletes."""
    resources = template.get("Resources", {})
    found = []
    for lid, resource in resources.items():
        if resource.get("DeletionPolicy") not in KEPT:
            continue
        for target in set(_references(resource.get("Properties", {}))):
            network = resources.get(target, {})
            if network.get("Type") in NETWORK_TYPES and network.get("DeletionPolicy", "Delete") == "Delete":
                found.append(f"{lid} ({resource['Type']}) is retained but uses {target} ({network['Type']})")
    return sorted(found)


def test_no_retained_resource_keeps_the_stacks_network_from_being_deleted(each_stage: Any) -> None:
    for stack_id, template in each_stage.templates.items():
        assert blocking_retentions(template) == [], stack_id


def test_a_retained_file_system_in_the_stacks_own_subnet_is_found() -> None:
    template = {
        "Resources": {
            "Subnet": {"Type": "AWS::EC2::Subnet"},
            "Group": {"Type": "AWS::EC2::SecurityGroup"},
            "Fs": {
                "Type": "AWS::FSx::FileSystem",
                "DeletionPolicy": "Retain",
                "Properties": {
                    "SubnetIds": [{"Ref": "Subnet"}],
                    "SecurityGroupIds": [{"Fn::GetAtt": ["Group", "GroupId"]}],
                },
            },
            "Kept": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "Properties": {}},
        }
    }
    assert blocking_retentions(template) == [
        "Fs (AWS::FSx::FileSystem) is retained but uses Group (AWS::EC2::SecurityGroup)",
        "Fs (AWS::FSx::FileSystem) is retained but uses Subnet (AWS::EC2::Subnet)",
    ]


def retained_fixed_names(template: dict[str, Any]) -> list[str]:
    """Retained resources whose primary identifier (from the type's registry schema) the template sets: a destroy
    keeps them, and deploying the stack again would create that name again and fail."""
    found = []
    for lid, resource in template.get("Resources", {}).items():
        if resource.get("DeletionPolicy") not in KEPT:
            continue
        schema = resource_schema(resource["Type"]) or {}
        identifier = [path.removeprefix("/properties/") for path in schema.get("primaryIdentifier", [])]
        properties = resource.get("Properties", {})
        if len(identifier) != 1 or identifier[0] not in properties:
            continue  # CloudFormation generates the name: a new one on every create
        # A name made from another resource's generated name or id changes with it (e.g. /aws/lambda/<function>),
        # and one made from the stack's id changes with every create of the stack.
        refs = set(_references(properties[identifier[0]]))
        if not any(ref in template["Resources"] or ref == "AWS::StackId" for ref in refs):
            found.append(f"{lid} ({resource['Type']}) is retained with a fixed {identifier[0]}")
    return sorted(found)


def test_no_retained_resource_has_a_name_the_next_deploy_would_take_again(each_stage: Any) -> None:
    # Before: the prod invocation-log group kept its fixed name /<prefix>/bedrock/invocations after a destroy.
    for stack_id, template in each_stage.templates.items():
        assert retained_fixed_names(template) == [], stack_id


def test_a_retained_named_log_group_is_found_and_a_generated_name_is_not() -> None:
    template = {
        "Resources": {
            "Named": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Retain", "Properties": {"LogGroupName": "/a"}},
            "Generated": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Retain", "Properties": {}},
            "PerCreate": {
                "Type": "AWS::Logs::LogGroup",
                "DeletionPolicy": "Retain",
                "Properties": {"LogGroupName": {"Fn::Join": ["", ["/c-", {"Ref": "AWS::StackId"}]]}},
            },
            "FromARegion": {
                "Type": "AWS::Logs::LogGroup",
                "DeletionPolicy": "Retain",
                "Properties": {"LogGroupName": {"Fn::Join": ["", ["/d-", {"Ref": "AWS::Region"}]]}},
            },
            "Deleted": {
                "Type": "AWS::Logs::LogGroup",
                "DeletionPolicy": "Delete",
                "Properties": {"LogGroupName": "/b"},
            },
        }
    }
    assert retained_fixed_names(template) == [
        "FromARegion (AWS::Logs::LogGroup) is retained with a fixed LogGroupName",
        "Named (AWS::Logs::LogGroup) is retained with a fixed LogGroupName",
    ]


def undeletable_buckets(template: dict[str, Any]) -> list[str]:
    """Buckets the stack deletes (DeletionPolicy Delete) that a BucketDeployment fills and nothing empties: S3
    refuses to delete a bucket with objects, and CDK's deployment handler does not remove its files on a stack
    delete while its bucket tag still owns the prefix (aws/aws-cdk#33397)."""
    resources = template.get("Resources", {})

    def targets(kind: str, key: str) -> set[str]:
        return {
            ref
            for resource in resources.values()
            if resource["Type"] == kind
            for ref in _references(resource.get("Properties", {}).get(key))
        }

    filled = targets("Custom::CDKBucketDeployment", "DestinationBucketName")
    emptied = targets("Custom::S3AutoDeleteObjects", "BucketName")
    return sorted(
        f"{lid} is deleted with the objects a deployment wrote"
        for lid in filled - emptied
        # RetainExceptOnCreate deletes the bucket when its first create rolls back, with the deployment's files in it
        if resources.get(lid, {}).get("DeletionPolicy", "Delete") in ("Delete", "RetainExceptOnCreate")
    )


def test_every_bucket_a_deployment_fills_is_emptied_or_kept_on_destroy(each_stage: Any) -> None:
    # Before: Level 4's lifecycle bucket was deleted in prod too, with no auto-delete: DELETE_FAILED (not empty).
    for stack_id, template in each_stage.templates.items():
        assert undeletable_buckets(template) == [], stack_id


def test_a_filled_bucket_nobody_empties_is_found() -> None:
    template = {
        "Resources": {
            "B": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Delete"},
            "Kept": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
            "Emptied": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Delete"},
            "KeptUnlessCreateFails": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "RetainExceptOnCreate"},
            "D1": {"Type": "Custom::CDKBucketDeployment", "Properties": {"DestinationBucketName": {"Ref": "B"}}},
            "D2": {"Type": "Custom::CDKBucketDeployment", "Properties": {"DestinationBucketName": {"Ref": "Kept"}}},
            "D3": {"Type": "Custom::CDKBucketDeployment", "Properties": {"DestinationBucketName": {"Ref": "Emptied"}}},
            "D4": {
                "Type": "Custom::CDKBucketDeployment",
                "Properties": {"DestinationBucketName": {"Ref": "KeptUnlessCreateFails"}},
            },
            "A": {"Type": "Custom::S3AutoDeleteObjects", "Properties": {"BucketName": {"Ref": "Emptied"}}},
        }
    }
    assert undeletable_buckets(template) == [
        "B is deleted with the objects a deployment wrote",
        "KeptUnlessCreateFails is deleted with the objects a deployment wrote",
    ]


def kept_buckets_a_deployment_may_empty(template: dict[str, Any]) -> list[str]:
    """Kept buckets (DeletionPolicy Retain / RetainExceptOnCreate) that a BucketDeployment without retention fills:
    on the deployment's delete CDK's handler runs `aws s3 rm s3://<bucket>/<prefix> --recursive` whenever reading
    the bucket's tags raises (its bucket_owned() counts any error as not owned), which empties the prefix, or the
    whole bucket for a deployment to its root, with the data the stage keeps there."""
    resources = template.get("Resources", {})
    found = []
    for lid, resource in resources.items():
        properties = resource.get("Properties", {})
        retained = properties.get("RetainOnDelete", True) in (True, "true")
        if resource["Type"] != "Custom::CDKBucketDeployment" or retained:
            continue
        for bucket in set(_references(properties.get("DestinationBucketName"))):
            if resources.get(bucket, {}).get("DeletionPolicy") in KEPT:
                prefix = properties.get("DestinationBucketKeyPrefix") or "its root"
                found.append(f"{lid} may empty {prefix} of kept bucket {bucket}")
    return sorted(found)


def test_no_deployment_may_empty_a_kept_bucket(each_stage: Any) -> None:
    # Before: in prod, Level 3 SageMaker's and Level 4's training code (to the bucket root) and samples.
    for stack_id, template in each_stage.templates.items():
        assert kept_buckets_a_deployment_may_empty(template) == [], stack_id


def test_a_deployment_that_may_empty_a_kept_bucket_is_found() -> None:
    def deployment(bucket: str, retain: Any, prefix: str | None = None) -> dict[str, Any]:
        properties: dict[str, Any] = {"DestinationBucketName": {"Ref": bucket}}
        if retain is not None:
            properties["RetainOnDelete"] = retain
        if prefix:
            properties["DestinationBucketKeyPrefix"] = prefix
        return {"Type": "Custom::CDKBucketDeployment", "Properties": properties}

    template = {
        "Resources": {
            "Kept": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
            "Gone": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Delete"},
            "Root": deployment("Kept", False),
            "Prefixed": deployment("Kept", "false", "data/"),
            "Retained": deployment("Kept", True),
            "Default": deployment("Kept", None),
            "Disposable": deployment("Gone", False),
        }
    }
    assert kept_buckets_a_deployment_may_empty(template) == [
        "Prefixed may empty data/ of kept bucket Kept",
        "Root may empty its root of kept bucket Kept",
    ]


def test_a_sandbox_keeps_no_log_group_of_its_own(each_stage: Any) -> None:
    # Before: CDK gave each stack's BucketDeployment function a log group retained in every stage (731 days).
    if each_stage.config.deployment.is_prod:
        return
    for stack_id, template in each_stage.templates.items():
        kept = [
            lid
            for lid, resource in template["Resources"].items()
            if resource["Type"] == "AWS::Logs::LogGroup" and resource.get("DeletionPolicy", "Delete") != "Delete"
        ]
        assert kept == [], stack_id


def unkept_bucket_policies(template: dict[str, Any]) -> list[str]:
    """Bucket policies deleted with the stack while their bucket is kept."""
    resources = template.get("Resources", {})
    found = []
    for lid, resource in resources.items():
        if resource["Type"] != "AWS::S3::BucketPolicy" or resource.get("DeletionPolicy") in KEPT:
            continue
        for target in set(_references(resource["Properties"].get("Bucket"))):
            if resources.get(target, {}).get("DeletionPolicy") in KEPT:
                found.append(f"{lid} is deleted, its bucket {target} kept")
    return sorted(found)


def test_a_kept_bucket_keeps_its_policy(each_stage: Any) -> None:
    """CloudFormation deletes a resource without a DeletionPolicy: a kept bucket would lose its TLS-only deny and a
    kept log bucket the only grant S3 log delivery has (ACLs disabled)."""
    kept_buckets = 0
    for stack_id, template in each_stage.templates.items():
        assert unkept_bucket_policies(template) == [], stack_id
        kept_buckets += sum(
            r["Type"] == "AWS::S3::Bucket" and r.get("DeletionPolicy") in KEPT for r in template["Resources"].values()
        )
    assert kept_buckets > 0 or each_stage.config.stage == "sandbox"


# Kept even when a first create rolls back: S3 deletes only an empty bucket, and the create may already have
# written to it (a BucketDeployment's files, access logs), so deleting it would fail the rollback; an empty bucket
# costs nothing. A bucket policy stays with its bucket.
KEPT_ON_A_FAILED_CREATE = {"AWS::S3::Bucket", "AWS::S3::BucketPolicy"}


def test_a_kept_buckets_unkept_policy_is_found() -> None:
    template = {
        "Resources": {
            "B": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "RetainExceptOnCreate"},
            "P": {"Type": "AWS::S3::BucketPolicy", "Properties": {"Bucket": {"Ref": "B"}}},
            "Kept": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
            "KeptPolicy": {
                "Type": "AWS::S3::BucketPolicy",
                "DeletionPolicy": "Retain",
                "Properties": {"Bucket": {"Ref": "Kept"}},
            },
        }
    }
    assert unkept_bucket_policies(template) == ["P is deleted, its bucket B kept"]


def kept_after_a_failed_first_deploy(template: dict[str, Any]) -> list[str]:
    """Resources other than buckets that a rolled-back first create would leave behind: ``Retain`` keeps a resource
    even then, and a retry leaves another copy (a KMS key bills $1 a month each); ``RetainExceptOnCreate`` deletes
    it then and keeps it on every later delete."""
    return sorted(
        f"{lid} ({resource['Type']})"
        for lid, resource in template.get("Resources", {}).items()
        if resource.get("DeletionPolicy") == "Retain" and resource["Type"] not in KEPT_ON_A_FAILED_CREATE
    )


def test_a_first_deploy_that_rolls_back_leaves_no_key_or_log_group(each_stage: Any) -> None:
    # Before: prod's keys and log groups were Retain, so each failed first deploy (no model access, a quota of 0)
    # left a key billing behind.
    kept = 0
    for stack_id, template in each_stage.templates.items():
        assert kept_after_a_failed_first_deploy(template) == [], stack_id
        kept += sum(r.get("DeletionPolicy") == "RetainExceptOnCreate" for r in template["Resources"].values())
    assert kept > 0 or not each_stage.config.deployment.is_prod


def test_a_resource_kept_even_on_a_failed_create_is_found() -> None:
    template = {
        "Resources": {
            "Key": {"Type": "AWS::KMS::Key", "DeletionPolicy": "Retain"},
            "Bucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
            "Logs": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "RetainExceptOnCreate"},
            "Queue": {"Type": "AWS::SQS::Queue", "DeletionPolicy": "Delete"},
        }
    }
    assert kept_after_a_failed_first_deploy(template) == ["Key (AWS::KMS::Key)"]


# The actions by which an identity policy lets a principal put an object (s3:PutObject covers uploads, copies and
# multipart parts; https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
PUT_ACTIONS = {"s3:putobject", "s3:put*", "s3:*", "*"}


def writers_left_after_emptying(template: dict[str, Any]) -> list[str]:
    """Identity policies of the stack that let a principal put objects into a bucket the stack empties on delete
    (CDK's Custom::S3AutoDeleteObjects) and that CloudFormation may delete only after the emptying. The emptying's
    deny of s3:PutObject sits in the bucket policy, which goes before the bucket: an object put in between fails the
    bucket's delete (S3 deletes only an empty bucket). Left out: the roles of CDK's BucketDeployment handlers, which
    write only on a deployment's create or update."""
    resources = template.get("Resources", {})
    deployers: set[str] = set()
    for resource in resources.values():
        if resource["Type"] == "Custom::CDKBucketDeployment":
            for function in _references(resource["Properties"].get("ServiceToken")):
                deployers |= set(_references(resources[function].get("Properties", {}).get("Role")))
    found = []
    for emptier, resource in resources.items():
        if resource["Type"] != "Custom::S3AutoDeleteObjects":
            continue
        [bucket] = set(_references(resource["Properties"]["BucketName"]))
        for lid, statement in statements(template):
            policy = resources[lid]
            roles = {lid} if policy["Type"] == "AWS::IAM::Role" else set(_references(policy.get("Properties", {})))
            actions = {action.lower() for action in as_list(statement.get("Action", []))}
            if roles & deployers or statement.get("Effect") != "Allow" or not PUT_ACTIONS & actions:
                continue
            if bucket in set(_references(statement.get("Resource"))) and emptier not in created_before(template, lid):
                found.append(f"{lid} may put objects into {bucket} after {emptier} emptied it")
    return sorted(set(found))


def test_no_writer_outlives_the_emptying_of_a_bucket(each_stage: Any) -> None:
    """Before: Level 3's validator and customization roles, the SageMaker training roles (Level 3 SageMaker, Level
    4 Jobs), the HyperPod nodes' role and the invocation-logging roles kept their grants until after the sandbox
    buckets were emptied."""
    for stack_id, template in each_stage.templates.items():
        assert writers_left_after_emptying(template) == [], stack_id


def test_a_writer_deleted_after_the_emptying_is_found() -> None:
    def policy(bucket: str, action: Any, **extra: Any) -> dict[str, Any]:
        statement = {
            "Effect": "Allow",
            "Action": action,
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/*"]]},
        }
        return {
            "Type": "AWS::IAM::Policy",
            "Properties": {"PolicyDocument": {"Statement": [statement]}, "Roles": [{"Ref": "R"}]},
            **extra,
        }

    template = {
        "Resources": {
            "B": {"Type": "AWS::S3::Bucket"},
            "E": {"Type": "Custom::S3AutoDeleteObjects", "Properties": {"BucketName": {"Ref": "B"}}},
            "R": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Late": policy("B", "s3:PutObject"),
            "Wildcard": policy("B", ["s3:GetObject", "s3:*"]),
            "Ordered": policy("B", "s3:PutObject", DependsOn=["E"]),
            "ReadOnly": policy("B", "s3:GetObject"),
            "Inline": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Policies": [{"PolicyDocument": policy("B", "s3:PutObject")["Properties"]["PolicyDocument"]}]
                },
            },
            "H": {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": ["D", "Arn"]}}},
            "D": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Deploy": {
                "Type": "Custom::CDKBucketDeployment",
                "Properties": {"ServiceToken": {"Fn::GetAtt": ["H", "Arn"]}},
            },
            "DeployerPolicy": {
                **policy("B", "s3:PutObject"),
                "Properties": {**policy("B", "s3:PutObject")["Properties"], "Roles": [{"Ref": "D"}]},
            },
        }
    }
    assert writers_left_after_emptying(template) == [
        "Inline may put objects into B after E emptied it",
        "Late may put objects into B after E emptied it",
        "Wildcard may put objects into B after E emptied it",
    ]
