"""A stack can always be deleted: nothing it retains holds network interfaces in a subnet or security group that
the same stack deletes (EC2 refuses to delete those while an interface remains: DependencyViolation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NETWORK_TYPES = {"AWS::EC2::Subnet", "AWS::EC2::SecurityGroup", "AWS::EC2::VPC"}


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
        if resource.get("DeletionPolicy") not in ("Retain", "RetainExceptOnCreate"):
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
