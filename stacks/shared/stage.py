"""What the stage changes: removal of data, log retention and tags."""

from __future__ import annotations

from aws_cdk import Aws, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.facts import KIT_NAME
from stacks.shared.settings import LOG_RETENTION_DAYS


def removal_policy(deployment: Deployment) -> RemovalPolicy:
    """Sandbox destroys cleanly; prod keeps data when the stack goes or a resource is replaced.

    Prod's DeletionPolicy is RetainExceptOnCreate: a first create that rolls back (no model access, a quota of 0)
    deletes what it made instead of leaving a key billing $1 a month for every retry
    (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-attribute-deletionpolicy.html).
    """
    return RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE if deployment.is_prod else RemovalPolicy.DESTROY


def bucket_removal_policy(deployment: Deployment) -> RemovalPolicy:
    """As removal_policy, except that a prod bucket is kept after a failed first create too: S3 deletes only an
    empty bucket, and the create may already have written to it (a BucketDeployment's files, which its handler
    leaves in a bucket its tag owns, aws/aws-cdk#33397; access logs of those writes), so deleting it would fail
    the rollback. Such a bucket holds only what the failed deploy wrote (Level 3's, under a key the rollback
    deletes: unreadable, delete it by hand)."""
    return RemovalPolicy.RETAIN if deployment.is_prod else RemovalPolicy.DESTROY


def is_kept(policy: RemovalPolicy) -> bool:
    """Whether ``policy`` keeps the resource when its stack is deleted."""
    return policy in (RemovalPolicy.RETAIN, RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)


# CDK's RetentionDays members in the same order as CloudWatch's allowed day counts.
_RETENTION = dict(zip(LOG_RETENTION_DAYS, [r for r in logs.RetentionDays if r.name != "INFINITE"], strict=True))


def log_retention(deployment: Deployment) -> logs.RetentionDays:
    return _RETENTION[deployment.log_retention_days]


def log_group(scope: Construct, construct_id: str, deployment: Deployment, *, name: str | None = None) -> logs.LogGroup:
    """A log group with the stage's retention and removal policy."""
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        retention=log_retention(deployment),
        removal_policy=removal_policy(deployment),
    )


# The stack id is arn:...:stack/<name>/<GUID>, a new GUID on every create. Stack ids carry version 1 GUIDs
# (RFC 9562): the first two groups are the creation time, the last the creating host, which many stacks share, so
# the id keeps all three (8 + 4 + 12 hex digits); the host group alone could repeat on the next create.
_STACK_GUID_GROUPS = 5
_STACK_GUID_KEPT = {0: 8, 1: 4, 4: 12}  # group index -> hex digits
STACK_CREATION_ID_LENGTH = sum(_STACK_GUID_KEPT.values()) + len(_STACK_GUID_KEPT) - 1


def stack_creation_id() -> str:
    """``<time_low>-<time_mid>-<host>`` of the stack id's GUID (a token): new on every create of the stack, the same
    for its life. For a name a stack may leave behind (a kept log group) or free only slowly (an S3 bucket's)."""
    guid = Fn.split("-", Fn.select(2, Fn.split("/", Aws.STACK_ID)), _STACK_GUID_GROUPS)
    return Fn.join("-", [guid[index] for index in _STACK_GUID_KEPT])


# Step Functions adds each log group a state machine logs to to the account's one CloudWatch Logs resource policy
# in the region, limited to 5,120 characters, unless the group's name starts with /aws/vendedlogs/: with
# generated names every deploy of the kit's six state machines grows that policy, and a full one fails any state
# machine's creation (https://docs.aws.amazon.com/step-functions/latest/dg/bp-cwl.html).
STATE_MACHINE_LOGS_PREFIX = "/aws/vendedlogs/states/"


def state_machine_log_group(
    scope: Construct, construct_id: str, deployment: Deployment, state_machine_name: str
) -> logs.LogGroup:
    """``/aws/vendedlogs/states/<state machine name>-<stack creation id>`` with the stage's retention and removal
    policy: a prod destroy keeps the group, and the next create of the stack must not take its name again."""
    name = Fn.join("", [f"{STATE_MACHINE_LOGS_PREFIX}{state_machine_name}-", stack_creation_id()])
    return log_group(scope, construct_id, deployment, name=name)


def bucket_deployment_logs(scope: Construct, deployment: Deployment) -> logs.ILogGroup:
    """The log group of the stack's BucketDeployment function, with the stage's retention and removal policy.

    Without it, CDK gives that function a log group it keeps on destroy in every stage (Retain, 731 days). One per
    stack: the deployments of a stack share one function, which takes one log group."""
    stack = Stack.of(scope)
    existing = stack.node.try_find_child("BucketDeploymentLogs")
    if isinstance(existing, logs.LogGroup):
        return existing
    return log_group(stack, "BucketDeploymentLogs", deployment)


def tag_stack(stack: Stack, deployment: Deployment, level: str) -> None:
    """Tag every resource with the kit, the level and the stage, plus the user's tags; the stack too.

    The stack-level tags reach what the template cannot tag: CDK's own custom-resource providers (the bucket
    auto-delete and default-security-group helpers) are raw resources its Tags aspect skips, and CloudFormation
    gives them the stack's tags when it creates them
    (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-resource-tags.html). An
    account whose policies require tags on create then accepts them. With @aws-cdk/core:explicitStackTags (cdk.json)
    a stack has only the tags set on it.
    """
    for key, value in {"kit": KIT_NAME, "kit-level": level, "kit-stage": deployment.stage, **deployment.tags}.items():
        Tags.of(stack).add(key, value)
        stack.tags.set_tag(key, value)
