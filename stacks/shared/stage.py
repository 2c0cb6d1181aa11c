"""What the stage changes: removal of data, log retention and tags."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import KitConfig
from stacks.shared.facts import KIT_NAME
from stacks.shared.settings import LOG_RETENTION_DAYS


def removal_policy(config: KitConfig) -> RemovalPolicy:
    """Sandbox destroys cleanly; prod keeps data when the stack goes."""
    return RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY


# CDK's RetentionDays members in the same order as CloudWatch's allowed day counts.
_RETENTION = dict(zip(LOG_RETENTION_DAYS, [r for r in logs.RetentionDays if r.name != "INFINITE"], strict=True))


def log_retention(config: KitConfig) -> logs.RetentionDays:
    return _RETENTION[config.log_retention_days]


def log_group(scope: Construct, construct_id: str, config: KitConfig, *, name: str | None = None) -> logs.LogGroup:
    """A log group with the stage's retention and removal policy."""
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=name,
        retention=log_retention(config),
        removal_policy=removal_policy(config),
    )


def tag_stack(stack: Stack, config: KitConfig, level: str) -> None:
    """Tag every resource with the kit, the level and the stage, plus the user's tags."""
    for key, value in {"kit": KIT_NAME, "kit-level": level, "kit-stage": config.stage, **config.tags}.items():
        Tags.of(stack).add(key, value)
