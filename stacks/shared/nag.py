"""cdk-nag suppressions that must say why, and say exactly what they cover."""

from __future__ import annotations

from collections.abc import Sequence

from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

# Rules whose findings name the offending item (a managed policy, an action or a resource), so a
# suppression must list the items it accepts instead of silencing the rule for the whole construct.
GRANULAR_RULES = frozenset({"AwsSolutions-IAM4", "AwsSolutions-IAM5"})
MIN_REASON_LENGTH = 30


def suppress(
    construct: IConstruct,
    rule_id: str,
    reason: str,
    *,
    applies_to: Sequence[str] | None = None,
    apply_to_children: bool = False,
) -> None:
    """Suppress one cdk-nag rule on one construct, with a real reason and, for granular rules, the items."""
    if not rule_id.startswith("AwsSolutions-"):
        raise ValueError(f"suppress: {rule_id!r} is not an AwsSolutions rule id")
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"suppress: the reason for {rule_id} must explain the decision ({MIN_REASON_LENGTH}+ chars)")
    if rule_id in GRANULAR_RULES and not applies_to:
        raise ValueError(f"suppress: {rule_id} is granular; name the findings it accepts with applies_to")
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule_id, reason=reason, applies_to=list(applies_to) if applies_to else None)],
        apply_to_children=apply_to_children,
    )
