"""The `kit` command line: ``kit cost`` and ``kit diagram`` work offline from the synthesized templates; ``kit doctor``
and ``kit l1`` to ``kit l4`` (added below, from their modules) work on a deployed account."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kit import KitError
from kit.costs import PriceTable, StackCost, UnitPrice, available_regions, cost_report, load_prices, money, report_json
from kit.diagram import render_all, stale_files, write_all
from kit.templates import Template, cdk_context, read_assembly, repo_root, select, synthesize
from stacks.shared.facts import SANDBOX, STAGES

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class KitGroup(click.Group):
    """A click group whose commands never show a traceback: unexpected errors become one ``Error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # the reader of a pipe quit early (`kit cost --json | head`): not a failure to report
            # Python's SIGPIPE note (https://docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at
            # devnull so the flush at exit raises nothing more; exit as a process killed by SIGPIPE would (128 + 13).
            _silence_stdout()
            ctx.exit(141)
        except KeyboardInterrupt:  # Ctrl-C: the shell's 130, and what an interrupted command leaves behind
            click.echo(
                "Interrupted: what was already uploaded or started keeps running; see the level's status command "
                "(kit l3 status, kit l4 status, ...) before running this again.",
                err=True,
            )
            ctx.exit(130)
        except Exception as err:  # anything else is a bug: say so in one line, keep the trace for KIT_DEBUG=1
            if os.environ.get("KIT_DEBUG"):
                raise
            message = " ".join(f"{type(err).__name__}: {err}".split())
            raise click.ClickException(f"unexpected {message} (run with KIT_DEBUG=1 for the traceback)") from err


def _silence_stdout() -> None:
    """Send what is left to write on the process's stdout to devnull (a stream without a descriptor, as a test
    runner's, is left alone)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@click.group(cls=KitGroup, context_settings=CONTEXT_SETTINGS)
def cli() -> None:
    """Operate the genai-spectrum-kit.

    \b
    kit cost      idle monthly cost and per-use prices of each stack (offline)
    kit diagram   architecture diagram of each stack as Mermaid (offline)
    kit doctor    is this account and region ready for a level (AWS credentials)
    kit l1 .. l4  call, start and follow each level's deployed stack (AWS credentials)

    Run inside the kit's checkout. Offline commands synthesize the app in-process from cdk.json
    (no AWS account or credentials needed), or read an existing cdk.out with --assembly.
    """


def _templates(assembly: Path | None, overrides: Mapping[str, Any], console: Console) -> dict[str, Template]:
    """Templates from ``assembly``, or from an in-process synth of cdk.json's context plus ``overrides``."""
    if assembly is not None:
        return read_assembly(assembly)
    root = repo_root()
    context = cdk_context(root, overrides)
    described = ", ".join(f"{key}={value}" for key, value in sorted(overrides.items())) or "cdk.json defaults"
    with console.status(f"Synthesizing the app ({described})..."):
        return synthesize(context, root)


def _err_console() -> Console:
    return Console(stderr=True)


def _out_console() -> Console:
    """stdout; 140 columns when it is not a terminal (a pipe, a CI log), the terminal's width otherwise."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def context_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--context",
        "pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a cdk.json context value for the synth, as `cdk -c` does (repeatable).",
    )(func)


def _context_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``-c key=value`` pairs as strings, the way the CDK CLI passes them (the app's config parses them)."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="-c/--context")
        overrides[key.strip()] = value
    return overrides


def assembly_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--assembly",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Read the templates of this cloud assembly (e.g. cdk.out) instead of synthesizing.",
    )(func)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--stage",
    type=click.Choice(STAGES),
    help="Synthesize this stage (default: cdk.json's). Not with --assembly.",
)
@click.option(
    "--region",
    type=click.Choice(available_regions()),
    help="Price (and synthesize) for this region (default: cdk.json's region; us-east-1 with --assembly).",
)
@click.option("--stack", "stack_id", metavar="ID", help="Only this stack, e.g. GenAiKit-2-Rag.")
@context_option
@assembly_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.")
def cost(
    stage: str | None,
    region: str | None,
    stack_id: str | None,
    pairs: Sequence[str],
    assembly: Path | None,
    as_json: bool,
) -> None:
    """Idle monthly cost and per-use unit prices of each stack.

    Idle cost is what a deployed stack bills per month with no traffic, computed from the synthesized
    templates and the price table kit/prices.json (each price with its date and source page). A resource
    type the table does not know makes the command fail, naming the type and the stack, so nothing new
    can silently count as $0. Prices marked ~ are approximate (the reason is in kit/prices.json).
    """
    if assembly is not None and (stage is not None or pairs):
        raise click.UsageError("--stage and -c apply to a fresh synth; they cannot change an existing --assembly")
    overrides: dict[str, Any] = _context_overrides(pairs)
    if stage:
        overrides["stage"] = stage
    if region and assembly is None:
        overrides["region"] = region
    if region is None:
        region = (
            str(cdk_context(repo_root(), overrides).get("region", "us-east-1")) if assembly is None else "us-east-1"
        )
    prices = load_prices(region)
    templates = select(_templates(assembly, overrides, _err_console()), stack_id)
    report = cost_report(templates, prices)
    shown_stage = stage or (None if assembly else str(cdk_context(repo_root(), overrides).get("stage", SANDBOX)))
    if as_json:
        click.echo(json.dumps(report_json(report, prices, stage=shown_stage), indent=2))
        return
    _out_console().print(_cost_table(report, prices, shown_stage))
    _print_cost_footer(report, prices)


def _price_text(price: UnitPrice) -> str:
    if price.usd is None:
        return f"{price.label}: {price.note or 'not in kit/prices.json'}"
    mark = "~" if price.approximate else ""
    return f"{price.label}: {mark}{money(price.usd)}/{price.unit}"


def _cost_table(report: Sequence[StackCost], prices: PriceTable, stage: str | None) -> Table:
    where = ", ".join(part for part in (stage, prices.region) if part)
    table = Table(title=f"Idle cost per stack ({where}; USD per month)", show_lines=True, title_justify="left")
    longest_id = max((len(stack.stack_id) for stack in report), default=10)
    table.add_column("Stack", ratio=2, min_width=longest_id, overflow="fold")
    table.add_column("Idle $/month", justify="right", no_wrap=True)
    table.add_column("Main idle items", ratio=3, min_width=20)
    table.add_column("Per-use prices", ratio=3, min_width=20)
    for stack in report:
        items = "\n".join(
            f"{item.label}: {'~' if item.approximate else ''}{money(item.monthly_usd)} ({item.detail})"
            for item in stack.idle_items
        )
        idle = items or (
            "[dim]nothing of the stack bills while idle[/dim]"
            if stack.while_kept
            else "[dim]nothing bills while idle[/dim]"
        )
        if stack.while_kept:  # what each model a run keeps bills while idle (the stack does not own it)
            idle += "\n" + "\n".join(f"per kept model: {_price_text(price)}" for price in stack.while_kept)
        table.add_row(
            f"{stack.stack_id}\n[dim]{stack.description}[/dim]",
            money(stack.idle_usd),
            idle,
            "\n".join(_price_text(price) for price in stack.per_use),
        )
    total = round(sum(stack.idle_usd for stack in report), 2)
    table.add_row("[bold]Total[/bold]", f"[bold]{money(total)}[/bold]", "", "")
    return table


def _print_cost_footer(report: Sequence[StackCost], prices: PriceTable) -> None:
    used = {item.price_id for stack in report for item in stack.idle_items}
    used |= {price.price_id for stack in report for price in stack.per_use}
    dates = sorted({prices.entries[pid].date for pid in used if pid in prices.entries})
    checked = f"checked {dates[0]}" if len(dates) == 1 else f"checked {dates[0]} to {dates[-1]}" if dates else ""
    click.echo(
        f"List prices for {prices.region} from kit/prices.json ({checked}); ~ marks an approximate figure. "
        "Free tiers (e.g. the first 10 CloudWatch alarms) are not deducted."
    )


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the <stack-id>.md pages (default: docs/diagrams in the checkout).",
)
@click.option("--check", is_flag=True, help="Write nothing; fail and name each file that is stale.")
@click.option("--stack", "stack_id", metavar="ID", help="Only this stack (with --check: only its page).")
@context_option
@assembly_option
def diagram(
    out_dir: Path | None, check: bool, stack_id: str | None, pairs: Sequence[str], assembly: Path | None
) -> None:
    """Architecture diagram of each stack, generated from its template as Mermaid.

    Writes one docs/diagrams/<stack-id>.md per stack (GitHub renders the ```mermaid block): resources
    grouped by role, CDK helper resources folded away, and edges from references, IAM grants and event
    sources. The committed pages show the default (cdk.json, sandbox) configuration; --check exits
    non-zero when a page differs from what the current templates produce.
    """
    if assembly is not None and pairs:
        raise click.UsageError("-c applies to a fresh synth; it cannot change an existing --assembly")
    overrides = _context_overrides(pairs)
    out = out_dir or repo_root() / "docs" / "diagrams"
    templates = select(_templates(assembly, overrides, _err_console()), stack_id)
    if overrides:
        pages = render_all(
            templates, configuration="sandbox with " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        )
    else:
        pages = render_all(templates)
    if check:
        problems = stale_files(pages, out)
        if stack_id is not None:
            problems = [problem for problem in problems if f"{stack_id}.md" in problem]
        if problems:
            raise KitError("stale diagrams (run `kit diagram` and commit): " + "; ".join(problems))
        click.echo(f"{len(pages)} diagram(s) in {out} are up to date.")
        return
    written = write_all(pages, out)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"{len(pages)} diagram(s) in {out}; {len(written)} changed.")


def _add_level_commands() -> None:
    """The commands that talk to a deployed kit: one group per level and the account doctor."""
    from kit.doctor import doctor
    from kit.level1_prompt import l1
    from kit.level2_rag import l2
    from kit.level3_finetune import l3, l3sm
    from kit.level4_pretrain import l4

    for command in (doctor, l1, l2, l3, l3sm, l4):
        cli.add_command(command)


_add_level_commands()


def main() -> None:
    """The console entry point (`kit` and `python -m kit`)."""
    cli(prog_name="kit")
