"""What the stage changes: removal of data, log retention and tags."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Annotations, Aws, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.facts import KIT_NAME
from stacks.shared.settings import LOG_RETENTION_DAYS, Problem, fits_shape, service_model


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


# --- the tags a run gives what it creates --------------------------------------------------------------------
# Jobs, custom and imported models, deployments and Provisioned Throughput have no CloudFormation resource: each
# create call passes the stack's own tags (tag_stack: kit, kit-level, kit-stage and the user's ``tags``). They then
# carry the same cost-allocation tags as the stack's resources, and an account whose policies require tags on create
# (aws:RequestTag / aws:TagKeys, condition keys of each create action in the Service Authorization Reference) accepts
# the call. The values are known at synth, so they are literals in the definitions; Step Functions takes an SDK
# integration's members in PascalCase (JobTags, Key, Value:
# https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html). Each tag is checked at synth
# against the create call's tag shape in botocore's model: a value the service refuses would fail the create after
# the paid step before it (a Provisioned Throughput, or an import after training). Level 3's SageMaker path and
# Level 4's training jobs use these too.


def stack_tags(scope: Construct) -> dict[str, str]:
    """The tags of ``scope``'s stack (tag_stack sets them before the stack builds anything)."""
    tags = dict(Stack.of(scope).tags.tag_values())
    if not tags:
        raise ValueError(f"{Stack.of(scope).node.id}: tag the stack (tag_stack) before building what a run tags")
    return tags


def _problems(tags: Mapping[str, str], service: str, operation: str, member: str) -> list[tuple[object, str]]:
    """(the value shown, what is allowed) for each thing ``operation`` would refuse in ``member`` holding ``tags``:
    the list's and each Tag member's bounds and pattern in botocore's model of ``service``."""
    tag_list = service_model(service).operation_model(operation).input_shape.members[member]
    where = f"(botocore's {service} model, {operation} {member})"
    tag = f"botocore's {service} {tag_list.member.name}"  # one shape for every member of the service
    found: list[tuple[object, str]] = []
    most = tag_list.metadata.get("max")
    if most is not None and len(tags) > most:
        found.append((dict(tags), f"at most {most} tags with the kit's own {where}"))
    for key, value in tags.items():
        for text, part in ((key, "key"), (value, "value")):
            [shape] = [s for name, s in tag_list.member.members.items() if name.lower() == part]
            if not fits_shape(text, shape):
                low, high, pattern = (shape.metadata.get(k) for k in ("min", "max", "pattern"))
                found.append(({key: value}, f"a tag {part} of {low}-{high} characters matching {pattern} ({tag})"))
    return found


def run_tags(scope: Construct, service: str, operation: str, member: str) -> list[dict[str, str]]:
    """The stack's tags as ``member`` of ``service``'s ``operation`` takes them, sorted by key. A tag the operation
    would refuse stops synth with a config error naming ``tags`` (once per message)."""
    tags = stack_tags(scope)
    stack = Stack.of(scope)
    for shown, allowed in _problems(tags, service, operation, member):
        line = Problem("tags", shown, allowed).line()
        if not any(entry.type == "aws:cdk:error" and entry.data == line for entry in stack.node.metadata):
            Annotations.of(stack).add_error(line)
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
