"""Print one line per synthesized stack: id, level, resource count, idle cost per month, what it is for.

Idle cost counts only resource types that bill while nothing uses them; the figures come from kit.costs and
kit/prices.json, the same ones `kit cost` prints: the list prices of the assembly's region where the file has them,
else us-east-1's, and the heading says which (AWS prices differ by region). A resource type the table has not
classified is reported as "unclassified", and a classified one whose price kit/prices.json lacks (e.g. a HyperPod
instance type) as "unpriced", naming the entry to add; either makes the script exit non-zero, rather than counting
as free.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from kit import KitError
from kit.costs import (
    PROVISIONED_THROUGHPUT,
    UNKNOWN_TYPE,
    PriceTable,
    Unpriced,
    analyze_stack,
    available_regions,
    load_prices,
    unpriced_advice,
)
from kit.templates import read_assembly
from stacks.updates import new_stack_keys

PRICE_REGION = "us-east-1"


def stack_summary(template: dict[str, Any], prices: PriceTable | None = None) -> tuple[int, float, list[str]]:
    """(resource count, idle USD/month, unclassified types) of one template."""
    cost = analyze_stack("stack", template, prices or load_prices(PRICE_REGION))
    return cost.resource_count, cost.idle_usd, sorted({item.resource_type for item in cost.unpriced})


def assembly_region(assembly_dir: Path) -> str | None:
    """The region the assembly's stacks are for (their ``aws://account/region`` environment), if they share one."""
    try:
        manifest = json.loads((assembly_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    regions = {
        artifact.get("environment", "").rpartition("/")[2]
        for artifact in manifest.get("artifacts", {}).values()
        if artifact.get("type") == "aws:cloudformation:stack"
    }
    return regions.pop() if len(regions) == 1 else None


def price_region(assembly_dir: Path) -> tuple[str, str]:
    """The region whose prices the summary uses, and how the heading says so."""
    region = assembly_region(assembly_dir)
    if region in available_regions():
        return region, f"{region} list prices"
    return PRICE_REGION, f"{PRICE_REGION} list prices; kit/prices.json has none for {region or 'this assembly'}"


def summarize(assembly_dir: Path) -> list[str]:
    """One line per stack of the cloud assembly in ``assembly_dir``."""
    return [line for line, _ in _summary(assembly_dir)]


def _summary(assembly_dir: Path) -> list[tuple[str, tuple[Unpriced, ...]]]:
    """Each stack's line and what of it could not be priced."""
    prices = load_prices(price_region(assembly_dir)[0])
    lines = []
    templates = read_assembly(assembly_dir)
    width = max((len(artifact_id) for artifact_id in templates), default=0)
    for artifact_id, template in templates.items():
        cost = analyze_stack(artifact_id, template, prices)
        purpose = template.get("Description", "").removeprefix("genai-spectrum-kit ")
        count, idle = cost.resource_count, cost.idle_usd
        later = cost.idle_later_usd
        grows = f" (~${later:,.2f} from its KMS key's second rotation)" if later > idle else ""
        line = f"{artifact_id:<{width}} {count:>4} resources  idle ~${idle:,.2f}/month{grows}  {purpose}"
        # What each model a run keeps bills while idle (outside the stack: not in its idle figure).
        kept = cost.while_kept
        if kept:
            line += "; per kept model: " + ", ".join(
                f"{p.label} " + (f"~${p.usd:,.2f}/{p.unit}" if p.usd is not None else "(see kit cost)") for p in kept
            )
        # What a run buys that bills by the hour whether or not it is used (not idle cost: the run deletes it).
        hourly = [p for p in cost.per_use if p.price_id == PROVISIONED_THROUGHPUT]
        if hourly:
            line += "; per run: " + ", ".join(
                f"{p.label}, billed per {p.unit} for ft_provisioned_hours, used or not ("
                + (f"~${p.usd:,.2f}/{p.unit}" if p.usd is not None else "the model's rate: see kit cost")
                + ")"
                for p in hourly
            )
        unknown = sorted({item.resource_type for item in cost.unpriced if item.reason == UNKNOWN_TYPE})
        if unknown:
            line += f"  (idle cost unclassified: {', '.join(unknown)})"
        other = sorted({f"{item.resource_type} {item.reason}" for item in cost.unpriced if item.reason != UNKNOWN_TYPE})
        if other:
            line += f"  (idle cost unpriced: {'; '.join(other)})"
        lines.append((line, cost.unpriced))
    return lines


def main(argv: list[str]) -> int:
    assembly = Path(argv[1] if len(argv) > 1 else "cdk.out")
    try:
        summary = _summary(assembly)
    except KitError as err:
        print(err, file=sys.stderr)
        return 1
    print(
        "\nSynthesized stacks (idle cost: what the stack bills per month with no traffic, at "
        + price_region(assembly)[1]
        + "):"
    )
    for line, _ in summary:
        print("  " + line)
    print(
        "On a deployed stack, changing "
        + ", ".join(new_stack_keys())
        + " needs a new stack (destroy, then deploy); README's configuration table says what every other key replaces."
    )
    unpriced = [item for _, items in summary for item in items]
    if unpriced:
        print(f"idle cost unclassified or unpriced: {unpriced_advice(unpriced)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
