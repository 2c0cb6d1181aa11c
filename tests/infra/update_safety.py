"""What CloudFormation would do to a deployed stack when its template changes from ``old`` to ``new``.

A resource is replaced when a property in its type's ``createOnlyProperties`` changes (read from the registry
schemas cfn-lint ships, through stacks/shared/registry.py), or when such a property refers to a resource that
is itself replaced. CloudFormation creates the replacement before it deletes the old resource, so a
replacement that keeps an explicit name collides with the old one, as does a resource added under a new logical id
with the name of one removed; and a logical id whose type changes is refused outright. See "Update behaviors of
stack resources": https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-update-behaviors.html
Some services refuse an in-place update that the schema allows (nothing marks the property create-only):
SERVICE_RULES holds those rules, each with the page that states it, and reports them as refused updates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from stacks.shared.registry import create_only_paths

# Resource types that hold data or state a user would lose with the resource (the README names them).
DATA_HOLDING = {
    "AWS::S3::Bucket": "bucket",
    "AWS::S3Vectors::VectorBucket": "vector bucket",
    "AWS::S3Vectors::Index": "vector index",
    "AWS::OpenSearchServerless::Collection": "collection",
    "AWS::OpenSearchServerless::Index": "vector index",
    "AWS::Bedrock::KnowledgeBase": "knowledge base",
    "AWS::Bedrock::DataSource": "data source",
    "AWS::FSx::FileSystem": "file system",
    "AWS::SageMaker::Cluster": "cluster",
    "AWS::KMS::Key": "key",
    "AWS::SQS::Queue": "queue",
}
# Create-only properties that place a resource inside another one: when the parent is replaced, the
# replacement lives in the new parent, so keeping its own name there is no collision.
_SCOPING_SUFFIXES = ("Id", "Arn", "Endpoint", "BucketName")


def _at(properties: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = properties
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _refs(value: Any) -> Iterator[str]:
    """Logical ids a value refers to (Ref, Fn::GetAtt, ${X} in Fn::Sub)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                yield item
            elif key == "Fn::GetAtt":
                yield item[0] if isinstance(item, list) else str(item).split(".")[0]
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) else item
                for part in str(text).split("${")[1:]:
                    yield part.split("}")[0].split(".")[0]
                yield from _refs(item)
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _name_properties(properties: Mapping[str, Any]) -> dict[str, str]:
    """Top-level literal names: properties called *Name that carry a plain string."""
    return {
        key: value
        for key, value in properties.items()
        if key.endswith("Name") and not key.startswith("Display") and isinstance(value, str)
    }


@dataclass
class UpdateEffect:
    type_changes: list[str] = field(default_factory=list)  # "Stack/LogicalId: A -> B"
    replaced: dict[str, str] = field(default_factory=dict)  # "Stack/LogicalId" -> type
    removed: dict[str, str] = field(default_factory=dict)  # "Stack/LogicalId" -> type
    collisions: list[str] = field(default_factory=list)  # "Stack/LogicalId (Type) keeps Name='x'"
    refused: list[str] = field(default_factory=list)  # an update the service itself refuses (SERVICE_RULES)

    @property
    def lost_data(self) -> set[str]:
        """What the README must name: data-holding resources replaced or removed."""
        kinds = {**self.replaced, **self.removed}.values()
        return {DATA_HOLDING[kind] for kind in kinds if kind in DATA_HOLDING}


def _hyperpod_refusals(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What UpdateCluster refuses in AWS::SageMaker::Cluster's InstanceGroups (the registry schema does not mark
    InstanceType create-only, so CloudFormation sends the update and it fails). The Slurm update-cluster page:
    "To update an existing instance group, you must match the instance type you initially specified to the
    group"; "To add a new instance group, specify an integer greater or equal to 1" (for InstanceCount).
    https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-operate-slurm-cli-command.html"""

    def groups(properties: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        items = properties.get("InstanceGroups")
        return {g["InstanceGroupName"]: g for g in items if isinstance(g, Mapping)} if isinstance(items, list) else {}

    before, after = groups(old), groups(new)
    found = []
    for name, group in after.items():
        if name in before and before[name].get("InstanceType") != group.get("InstanceType"):
            found.append(
                f"instance group {name!r} changes InstanceType {before[name].get('InstanceType')} -> "
                f"{group.get('InstanceType')} (an existing group keeps its type)"
            )
        elif name not in before and group.get("InstanceCount") == 0:
            found.append(f"instance group {name!r} is added with InstanceCount 0 (a new group needs 1 or more)")
    return found


def _schedule_refusals(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What UpdateSchedule cannot do to AWS::Scheduler::Schedule: move it to another group (the registry schema does
    not mark GroupName create-only). UpdateSchedule finds the schedule by its group: "You must provide this value in
    order for EventBridge Scheduler to find the schedule you want to update" (UpdateScheduleInput GroupName,
    https://docs.aws.amazon.com/scheduler/latest/APIReference/API_UpdateSchedule.html); absent, the default group."""
    before, after = old.get("GroupName") or "default", new.get("GroupName") or "default"
    if before != after:
        return [f"moves the schedule from group {before!r} to {after!r} (UpdateSchedule finds it by its group)"]
    return []


# Resource type -> (old properties, new properties) -> what the service refuses when it updates the resource.
SERVICE_RULES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]] = {
    "AWS::SageMaker::Cluster": _hyperpod_refusals,
    "AWS::Scheduler::Schedule": _schedule_refusals,
}


def stack_effect(stack_id: str, old: Mapping[str, Any], new: Mapping[str, Any], effect: UpdateEffect) -> None:
    old_resources: Mapping[str, Any] = old.get("Resources", {})
    new_resources: Mapping[str, Any] = new.get("Resources", {})
    for lid, resource in old_resources.items():
        if lid not in new_resources:
            effect.removed[f"{stack_id}/{lid}"] = resource["Type"]
        elif new_resources[lid]["Type"] != resource["Type"]:
            effect.type_changes.append(f"{stack_id}/{lid}: {resource['Type']} -> {new_resources[lid]['Type']}")
    common = [
        lid
        for lid in old_resources
        if lid in new_resources and new_resources[lid]["Type"] == old_resources[lid]["Type"]
    ]
    replaced: dict[str, bool] = {}  # lid -> replaced only because a scoping parent was replaced
    changed = True
    while changed:  # propagate: a create-only reference to a replaced resource changes too
        changed = False
        for lid in common:
            if lid in replaced:
                continue
            kind = old_resources[lid]["Type"]
            old_props = old_resources[lid].get("Properties", {})
            new_props = new_resources[lid].get("Properties", {})
            own_change, rescoped = False, False
            for path in create_only_paths(kind):
                before, after = _at(old_props, path), _at(new_props, path)
                if json.dumps(before, sort_keys=True) != json.dumps(after, sort_keys=True):
                    own_change = True
                elif any(ref in replaced or ref in effect.removed for ref in _refs(after)):
                    if path[-1].endswith(_SCOPING_SUFFIXES):
                        rescoped = True
                    else:
                        own_change = True
            if own_change or rescoped:
                replaced[lid] = rescoped and not own_change
                changed = True
    for lid in common:  # updated in place: the service's own rules apply
        rule = SERVICE_RULES.get(old_resources[lid]["Type"])
        if lid in replaced or rule is None:
            continue
        for refusal in rule(old_resources[lid].get("Properties", {}), new_resources[lid].get("Properties", {})):
            effect.refused.append(f"{stack_id}/{lid} ({old_resources[lid]['Type']}): {refusal}")
    # A resource that leaves under one logical id while another of its type arrives under a new one with the same
    # literal name: CloudFormation creates the new one first (and deletes the old one in the cleanup phase), so the
    # create collides just as a replacement that keeps its name does.
    removed_names = {
        (old_resources[lid]["Type"], key, value): lid
        for lid in old_resources
        if lid not in new_resources
        for key, value in _name_properties(old_resources[lid].get("Properties", {})).items()
    }
    for lid, resource in new_resources.items():
        if lid in old_resources:
            continue
        for key, value in _name_properties(resource.get("Properties", {})).items():
            gone = removed_names.get((resource["Type"], key, value))
            if gone is not None:
                effect.collisions.append(
                    f"{stack_id}/{lid} ({resource['Type']}) is added with the {key}={value!r} of removed {gone}"
                )
    for lid, rescoped_only in replaced.items():
        kind = old_resources[lid]["Type"]
        effect.replaced[f"{stack_id}/{lid}"] = kind
        if rescoped_only:
            continue
        old_names = _name_properties(old_resources[lid].get("Properties", {}))
        new_names = _name_properties(new_resources[lid].get("Properties", {}))
        for key, value in old_names.items():
            if new_names.get(key) == value:
                effect.collisions.append(f"{stack_id}/{lid} ({kind}) is replaced but keeps {key}={value!r}")


def update_effect(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> UpdateEffect:
    """The effect over every stack that exists in both (stacks only one side has are new or gone)."""
    effect = UpdateEffect()
    for stack_id in old:
        if stack_id in new:
            stack_effect(stack_id, old[stack_id], new[stack_id], effect)
    return effect
