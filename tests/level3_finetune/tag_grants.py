"""What the run-time create calls tag and whether the state machine's role may tag it so (Level 3's two paths and
Level 4's training jobs: run_tags in stacks/level3_finetune/pipeline.py)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from tests.infra.helpers import as_list, render, resources, statements

# What tag_stack gives every stack besides the user's tags (stacks/shared/stage.py).
KIT_TAG_KEYS = {"kit", "kit-level", "kit-stage"}


def tags_of(tag_list: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """A request's tag list ([{"Key", "Value"}], keys once each) as a dict."""
    tag_list = list(tag_list)
    found = {tag["Key"]: tag["Value"] for tag in tag_list}
    assert len(found) == len(tag_list), tag_list
    return found


def role_of(properties: Mapping[str, Any]) -> str:
    """The logical id of the role of a state machine (its resource's Properties)."""
    return str(properties["RoleArn"]["Fn::GetAtt"][0])


def allows_tagging(template: dict[str, Any], role_id: str, action: str, arn: str, keys: Iterable[str]) -> bool:
    """Whether an Allow statement of the role's policies grants ``action`` on ``arn`` for a request whose
    aws:TagKeys are ``keys``. Only the condition the kit writes on tagging (ForAllValues:StringEquals on aws:TagKeys)
    is read: any other condition operator or key fails the test, as it would need evaluating."""
    account = arn.split(":")[4]
    policies = {
        k for k, v in resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    }
    for policy, statement in statements(template):
        if policy not in policies or statement["Effect"] != "Allow" or action not in as_list(statement["Action"]):
            continue
        patterns = [
            render(r).replace("${AWS::AccountId}", account).replace("${AWS::Partition}", "aws")
            for r in as_list(statement["Resource"])
        ]
        if not any(fnmatch.fnmatchcase(arn, pattern) for pattern in patterns):
            continue
        condition = statement.get("Condition", {})
        assert set(condition) <= {"ForAllValues:StringEquals"}, condition
        if not condition:
            return True
        [(key, allowed)] = condition["ForAllValues:StringEquals"].items()
        assert key == "aws:TagKeys", condition
        if set(keys) <= set(as_list(allowed)):
            return True
    return False
