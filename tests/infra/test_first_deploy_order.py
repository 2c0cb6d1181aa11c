"""First deploy order: a resource whose creation makes an AWS service act with an IAM role is created after every
IAM policy attached to that role.

CloudFormation creates resources side by side unless one needs another (DependsOn, Ref, Fn::GetAtt, Fn::Sub:
https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-attribute-dependson.html). A policy kept
as a resource of its own (AWS::IAM::Policy, CDK's DefaultPolicy among them, AWS::IAM::ManagedPolicy,
AWS::IAM::RolePolicy) is not part of its role: a resource that names only the role may be created before the
policy, and the service then acts without those permissions the first time the stack is created (an update finds
the policy already there). A role's own Policies and ManagedPolicyArns come with the role and need nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.conftest import SYNTHS
from tests.infra.helpers import created_before, references

Template = dict[str, Any]

# CDK's Provider framework: its onEvent function (the ServiceToken) calls the user functions and starts a waiter
# state machine named in these variables (aws-cdk-lib custom-resources/lib/provider-framework/runtime/consts.js).
PROVIDER_VARIABLES = ("USER_ON_EVENT_FUNCTION_ARN", "USER_IS_COMPLETE_FUNCTION_ARN", "WAITER_STATE_MACHINE_ARN")
POLICY_ROLE_PROPERTY = {
    "AWS::IAM::Policy": "Roles",
    "AWS::IAM::ManagedPolicy": "Roles",
    "AWS::IAM::RolePolicy": "RoleName",
}


def roles_in(template: Template, value: Any) -> set[str]:
    """The template's roles a value names (Ref / Fn::GetAtt [Role, Arn]); a role from outside has no policy here."""
    resources = template["Resources"]
    return {r for r in references(value) if resources.get(r, {}).get("Type") == "AWS::IAM::Role"}


def runs_as(template: Template, target: str | None, seen: set[str] | None = None) -> set[str]:
    """The roles a Lambda function or state machine acts with when invoked, through CDK's Provider framework too."""
    seen = set() if seen is None else seen
    resource = template["Resources"].get(target or "")
    if target is None or target in seen or resource is None:
        return set()
    seen.add(target)
    props = resource.get("Properties", {})
    if resource["Type"] == "AWS::Lambda::Function":
        roles = roles_in(template, props.get("Role"))
        variables = props.get("Environment", {}).get("Variables", {})
        then = [r for name in PROVIDER_VARIABLES for r in references(variables.get(name))]
    elif resource["Type"] == "AWS::StepFunctions::StateMachine":
        roles = roles_in(template, props.get("RoleArn"))
        then = list(references(props.get("DefinitionString")))  # the waiter's isComplete / onTimeout functions
    else:
        return set()
    for following in then:
        roles |= runs_as(template, following, seen)
    return roles


def _function(template: Template, value: Any) -> set[str]:
    return runs_as(template, next(references(value), None))


# Resource type -> the roles a service acts with while CloudFormation creates it, each row with its source.
CREATE_ROLES: dict[str, Callable[[Template, dict[str, Any]], set[str]]] = {
    # CloudFormation invokes the ServiceToken function on create, and the custom resource waits for its answer
    # (https://docs.aws.amazon.com/lambda/latest/dg/services-cloudformation.html).
    "AWS::CloudFormation::CustomResource": lambda t, p: _function(t, p.get("ServiceToken")),
    # Lambda reads the source with the function's execution role
    # (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html, "Execution role permissions") and
    # checks it at create ("The provided execution role does not have permissions to call DeleteMessage on SQS",
    # github.com/functionalone/serverless-iam-roles-per-function/issues/21).
    "AWS::Lambda::EventSourceMapping": lambda t, p: _function(t, p.get("FunctionName")),
    # A destination or dead-letter queue is sent to with the execution role
    # (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html), which Lambda checks when
    # it is set ("The provided execution role does not have permissions to call SendMessage on SQS" at create:
    # github.com/elastic/beats/issues/13963, github.com/aws-amplify/amplify-js/issues/9869); a function in a VPC
    # creates its network interfaces with its role (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html).
    "AWS::Lambda::EventInvokeConfig": lambda t, p: (
        _function(t, p["FunctionName"]) if p.get("DestinationConfig") else set()
    ),
    "AWS::Lambda::Function": lambda t, p: (
        roles_in(t, p["Role"]) if {"DeadLetterConfig", "VpcConfig"} & set(p) else set()
    ),
    # Bedrock connects to the vector store with the knowledge base role as it creates it
    # (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_CreateKnowledgeBase.html, roleArn; CDK's
    # KnowledgeBaseOpenSearchServerlessStorage makes the knowledge base depend on that policy for this reason).
    "AWS::Bedrock::KnowledgeBase": lambda t, p: roles_in(t, p["RoleArn"]),
    # Each instance group runs its lifecycle scripts, read from S3 with its ExecutionRole, during cluster creation
    # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ClusterLifeCycleConfig.html, OnCreate).
    "AWS::SageMaker::Cluster": lambda t, p: roles_in(
        t, [g.get("ExecutionRole") for g in p.get("InstanceGroups", []) + p.get("RestrictedInstanceGroups", [])]
    ),
    # CreateStateMachine with logging checks the role may deliver logs (https://docs.aws.amazon.com/step-functions/
    # latest/dg/cw-logs.html; at create: "The state machine IAM Role is not authorized to access the Log
    # Destination", github.com/aws/aws-cdk/issues/26432).
    "AWS::StepFunctions::StateMachine": lambda t, p: (
        roles_in(t, p["RoleArn"]) if p.get("LoggingConfiguration", {}).get("Destinations") else set()
    ),
    # The role flow logs publish with (https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html).
    "AWS::EC2::FlowLog": lambda t, p: roles_in(t, p.get("DeliverLogsPermissionArn")),
    # API Gateway checks the CloudWatch role when it is set (https://docs.aws.amazon.com/apigateway/latest/
    # developerguide/set-up-logging.html; at create: "The role ARN does not have required permissions set to API
    # Gateway", github.com/aws/aws-cdk/issues/2194).
    "AWS::ApiGateway::Account": lambda t, p: roles_in(t, p.get("CloudWatchRoleArn")),
    # Not here: EventBridge rule and Scheduler targets (the role is used at each delivery, not by PutTargets or
    # CreateSchedule) and Bedrock data sources (the knowledge base role reads the bucket in ingestion jobs).
}


def create_roles(template: Template, resource: dict[str, Any]) -> set[str]:
    kind = resource["Type"]
    rule = CREATE_ROLES.get("AWS::CloudFormation::CustomResource" if kind.startswith("Custom::") else kind)
    return rule(template, resource.get("Properties", {})) if rule else set()


def attached_policies(template: Template, role: str) -> set[str]:
    """The separate policy resources attached to ``role``."""
    return {
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] in POLICY_ROLE_PROPERTY
        and role in references(resource["Properties"].get(POLICY_ROLE_PROPERTY[resource["Type"]]))
    }


def order_findings(templates: Mapping[str, Template]) -> tuple[set[str], Counter[str]]:
    """Resources that may be created before a policy of a role they act with, and the types checked (a count)."""
    found: set[str] = set()
    checked: Counter[str] = Counter()
    for stack, template in templates.items():
        for logical_id, resource in template["Resources"].items():
            if not (roles := create_roles(template, resource)):
                continue
            checked[resource["Type"]] += 1
            before = created_before(template, logical_id)
            found |= {
                f"{stack}/{logical_id} ({resource['Type']}) may be created before {policy} attached to {role}"
                for role in roles
                for policy in attached_policies(template, role) - before
            }
    return found, checked


def test_every_resource_that_acts_with_a_role_at_create_waits_for_its_policies(request: pytest.FixtureRequest) -> None:
    found: set[str] = set()
    checked: Counter[str] = Counter()
    for name in SYNTHS:  # every stack of both stages and every option variant the suite synthesizes
        variant_found, variant_checked = order_findings(request.getfixturevalue(name).templates)
        found |= variant_found
        checked += variant_checked
    # The fix: `node.add_dependency(role)` on the resource (a Role construct's DefaultPolicy is its child).
    assert sorted(found) == []
    # not vacuous: the kit's own kinds of such resources are all looked at
    assert {"Custom::KitStageLock", "AWS::Bedrock::KnowledgeBase", "AWS::SageMaker::Cluster"} <= set(checked)
    assert {"AWS::StepFunctions::StateMachine", "AWS::EC2::FlowLog", "AWS::ApiGateway::Account"} <= set(checked)


def _stack(**resources: dict[str, Any]) -> Template:
    role = {"Type": "AWS::IAM::Role", "Properties": {}}
    return {"Resources": {"Role": role, "UserRole": role, **resources}}


def _policy(role: str) -> dict[str, Any]:
    return {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": role}], "PolicyDocument": {}}}


def _function_with(role: str, **variables: Any) -> dict[str, Any]:
    env = {"Environment": {"Variables": variables}} if variables else {}
    return {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": [role, "Arn"]}, **env}}


def test_a_custom_resource_that_can_run_before_its_function_policy_is_found() -> None:
    template = _stack(
        Policy=_policy("Role"),
        Fn=_function_with("Role"),
        Thing={"Type": "Custom::Thing", "Properties": {"ServiceToken": {"Fn::GetAtt": ["Fn", "Arn"]}}},
    )
    assert order_findings({"S": template})[0] == {
        "S/Thing (Custom::Thing) may be created before Policy attached to Role"
    }
    # a DependsOn on the policy (here through another resource: the closure is transitive) satisfies it
    template["Resources"]["Gate"] = {"Type": "AWS::SNS::Topic", "DependsOn": "Policy"}
    template["Resources"]["Thing"]["DependsOn"] = ["Gate"]
    assert order_findings({"S": template}) == (set(), Counter({"Custom::Thing": 1}))


def test_a_provider_frameworks_user_function_policy_is_needed_too() -> None:
    template = _stack(
        Policy=_policy("Role"),
        UserPolicy=_policy("UserRole"),
        OnEvent=_function_with("UserRole"),
        Framework=_function_with("Role", USER_ON_EVENT_FUNCTION_ARN={"Fn::GetAtt": ["OnEvent", "Arn"]}),
        Thing={
            "Type": "AWS::CloudFormation::CustomResource",
            "DependsOn": ["Policy"],
            "Properties": {"ServiceToken": {"Fn::GetAtt": ["Framework", "Arn"]}},
        },
    )
    assert order_findings({"S": template})[0] == {
        "S/Thing (AWS::CloudFormation::CustomResource) may be created before UserPolicy attached to UserRole"
    }
