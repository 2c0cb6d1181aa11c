"""cdk-nag suppressions that must say why, and say exactly what they cover."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jsii
from aws_cdk import AspectPriority, Aspects, CfnResource, DefaultStackSynthesizer, IAspect, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_deployment as s3deploy
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

# Rules whose findings name the offending item (a managed policy, an action or a resource), so a
# suppression must list the items it accepts instead of silencing the rule for the whole construct.
GRANULAR_RULES = frozenset({"AwsSolutions-IAM4", "AwsSolutions-IAM5"})
MIN_REASON_LENGTH = 30
WILDCARD_RULE = "AwsSolutions-IAM5"
WILDCARD_FINDING = "Resource::*"  # cdk-nag's IAM5 finding for a statement whose Resource is "*"
# How a derived wildcard reason (derive_wildcard_suppression) lists the actions nobody named: the claim it makes
# about them, which tests/infra/test_compliance.py checks against the Service Authorization Reference.
NO_RESOURCE_TYPE = "Granted on '*', actions with no resource type in the Service Authorization Reference: "


def _checked(rule_id: str, reason: str, applies_to: Sequence[str] | None) -> NagPackSuppression:
    if not rule_id.startswith("AwsSolutions-"):
        raise ValueError(f"suppress: {rule_id!r} is not an AwsSolutions rule id")
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"suppress: the reason for {rule_id} must explain the decision ({MIN_REASON_LENGTH}+ chars)")
    if rule_id in GRANULAR_RULES and not applies_to:
        raise ValueError(f"suppress: {rule_id} is granular; name the findings it accepts with applies_to")
    return NagPackSuppression(id=rule_id, reason=reason, applies_to=list(applies_to) if applies_to else None)


def suppress(
    construct: IConstruct,
    rule_id: str,
    reason: str,
    *,
    applies_to: Sequence[str] | None = None,
    apply_to_children: bool = False,
) -> None:
    """Suppress one cdk-nag rule on one construct, with a real reason and, for granular rules, the items."""
    NagSuppressions.add_resource_suppressions(
        construct, [_checked(rule_id, reason, applies_to)], apply_to_children=apply_to_children
    )


@jsii.implements(IAspect)
class _BeforeNag:
    """Runs ``action`` once, at synthesis, on the one resource it is added to, before cdk-nag checks that resource:
    both are aspects, and a lower priority runs first on each node (cdk-nag's is the default)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def visit(self, node: IConstruct) -> None:
        if self._action is not None:
            action, self._action = self._action, None
            action()


def before_nag(resource: CfnResource, action: Callable[[], None]) -> None:
    """Call ``action`` at synthesis, after every construct is built and before cdk-nag checks ``resource``."""
    Aspects.of(resource).add(_BeforeNag(action), priority=AspectPriority.MUTATING)


def suppress_unless(
    construct: IConstruct, rule_id: str, reason: str, *, compliant: Callable[[], bool], applies_to: Sequence[str] = ()
) -> None:
    """:func:`suppress`, decided at synthesis: not when ``compliant()`` says cdk-nag finds nothing to suppress (it
    reads constructs added after this one), so the suppression is never dead."""
    resource = construct.node.default_child or construct
    assert isinstance(resource, CfnResource), f"{construct.node.path} has no CloudFormation resource"
    checked = _checked(rule_id, reason, applies_to or None)

    def apply() -> None:
        if not compliant():
            NagSuppressions.add_resource_suppressions(resource, [checked])

    before_nag(resource, apply)


def wildcard_actions(document: dict[str, Any]) -> list[str]:
    """The actions a resolved policy document allows on "*" (sorted, each once)."""
    found: set[str] = set()
    for statement in document.get("Statement", []):
        resources = statement.get("Resource", [])
        if statement.get("Effect") == "Allow" and "*" in (resources if isinstance(resources, list) else [resources]):
            actions = statement.get("Action", [])
            found.update(actions if isinstance(actions, list) else [actions])
    return sorted(found)


def names(text: str, action: str) -> bool:
    """Whether ``text`` names ``action`` in full (``service:Action``)."""
    return re.search(rf"(?<![\w:]){re.escape(action)}(?![\w*])", text) is not None


def wildcard_reason(actions: Iterable[str], explanations: Sequence[str]) -> str:
    """The one reason for a policy's ``Resource::*``: the actions no explanation names, listed with the claim that
    they have no resource type, then the explanations (which justify the actions they name)."""
    unnamed = [a for a in actions if not any(names(e, a) for e in explanations)]
    claim = [f"{NO_RESOURCE_TYPE}{', '.join(unnamed)}."] if unnamed else []
    return " ".join([*claim, *explanations])


def claimed_without_resource_type(reason: str) -> list[str]:
    """The actions a :func:`wildcard_reason` lists as having no resource type (the reason cdk-nag reports may
    start with ``[Resource::*] ``)."""
    start = reason.find(NO_RESOURCE_TYPE)
    if start < 0:
        return []
    listed = reason[start + len(NO_RESOURCE_TYPE) :].split(". ", 1)[0].removesuffix(".")
    return listed.split(", ")


def _reason(rule: dict[str, Any]) -> str:
    """A suppression's reason as written (cdk-nag stores a reason with characters above U+00FF in base64)."""
    reason = str(rule["reason"])
    return base64.b64decode(reason).decode() if rule.get("is_reason_encoded") else reason


def derive_wildcard_suppression(policy: IConstruct, explanation: str) -> None:
    """One ``Resource::*`` suppression for ``policy``, written at synthesis from what it grants on "*".

    cdk-nag reports the first suppression that matches a finding, so a fixed reason added early would stand for
    every later "*" grant too. Here the reason lists every action the policy grants on "*" (see
    :func:`wildcard_reason`): ``explanation`` (why the policy's owner grants its own), then the reasons of the
    ``Resource::*`` suppressions callers added to the policy, which this takes over (their other items stay).
    """
    assert isinstance(policy, iam.Policy), f"{policy.node.path} is not an IAM policy"
    resource = policy.node.default_child
    assert isinstance(resource, CfnResource), f"{policy.node.path} has no CloudFormation resource"

    def derive() -> None:
        actions = wildcard_actions(Stack.of(resource).resolve(policy.document))
        rules, explanations = [], [explanation]
        for rule in (resource.get_metadata("cdk_nag") or {}).get("rules_to_suppress", []):
            items = rule.get("applies_to") or []
            if rule["id"] != WILDCARD_RULE or WILDCARD_FINDING not in items:
                rules.append(rule)
                continue
            if (caller := _reason(rule)) not in explanations:
                explanations.append(caller)
            if rest := [item for item in items if item != WILDCARD_FINDING]:
                rules.append({**rule, "applies_to": rest})
        resource.add_metadata("cdk_nag", {"rules_to_suppress": rules})
        if actions:
            suppress(resource, WILDCARD_RULE, wildcard_reason(actions, explanations), applies_to=[WILDCARD_FINDING])

    before_nag(resource, derive)


def arn_ref(resource: Any) -> str:
    """How cdk-nag names a resource's ARN in a finding: ``<LogicalId.Arn>``."""
    return f"<{Stack.of(resource).get_logical_id(resource.node.default_child)}.Arn>"


def suppress_bucket_deployment(deployment: s3deploy.BucketDeployment, bucket: Any) -> None:
    """CDK's BucketDeployment runs one shared function, and only while a deployment copies files."""
    stack = Stack.of(deployment)
    role = deployment.handler_role
    suppress(
        role,
        "AwsSolutions-IAM4",
        "CDK's bucket-deployment function logs with the AWS basic execution policy; it runs only at deploy time.",
        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
    )
    # The asset bucket carries the bootstrap qualifier, which an account may set (@aws-cdk/core:bootstrapQualifier):
    # https://docs.aws.amazon.com/cdk/v2/guide/bootstrapping-customizing.html
    qualifier = stack.synthesizer.bootstrap_qualifier or DefaultStackSynthesizer.DEFAULT_QUALIFIER
    assets = f"Resource::arn:{stack.partition}:s3:::cdk-{qualifier}-assets-<AWS::AccountId>-{stack.region}/*"
    suppress(
        role.node.find_child("DefaultPolicy"),
        "AwsSolutions-IAM5",
        "CDK's bucket-deployment function copies files from the CDK asset bucket into the kit's bucket; CDK "
        "generates these object-level grants.",
        applies_to=[
            "Action::s3:GetObject*",
            "Action::s3:GetBucket*",
            "Action::s3:List*",
            "Action::s3:DeleteObject*",
            "Action::s3:Abort*",
            assets,
            f"Resource::{arn_ref(bucket)}/*",
        ],
    )
    for child in stack.node.children:
        if child.node.id.startswith("Custom::CDKBucketDeployment"):
            suppress(
                child,
                "AwsSolutions-L1",
                "CDK's bucket-deployment function pins its own Python runtime; it runs only at deploy time.",
            )
