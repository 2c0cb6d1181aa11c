"""Level 1, prompt engineering: ``kit l1 …`` calls the GenAiKit-1-Prompt API (SigV4-signed, from its ApiUrl
output): list the managed prompt templates, run one, or send a free-form prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table
from rich.text import Text

from kit.aws import KitUsageError
from kit.operator import (
    call_api,
    cell,
    console,
    echo_json,
    float_range,
    int_range,
    json_option,
    read_value,
    remember_target,
    target_options,
)

# The IAM actions the `kit l1` commands call with the operator's credentials (the README's "Operator
# permissions"); tests/kit/test_operator_permissions.py derives them from the code and compares.
OPERATOR_ACTIONS: dict[str, tuple[str, ...]] = {
    "l1": ("cloudformation:DescribeStacks", "execute-api:Invoke"),
}


@click.group()
@target_options
@click.pass_context
def l1(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 1, prompt engineering: call the GenAiKit-1-Prompt API (SigV4)."""
    remember_target(ctx, stage, region, profile, context_pairs)


@l1.command()
@json_option
def templates(as_json: bool) -> None:
    """List the managed prompt templates and the variables each expects."""
    answer = call_api("1", "GET", "templates")
    if as_json:
        echo_json(answer)
        return
    items = answer.get("templates") or []
    if not items:
        click.echo("No templates: add a JSON file to prompts/ and deploy again.")
        return
    table = Table("Template", "Variables", "Description")
    for item in items:
        table.add_row(
            cell(item.get("name")), cell(", ".join(item.get("variables") or [])), cell(item.get("description"))
        )
    console().print(table)


def _print_completion(answer: Mapping[str, Any]) -> None:
    click.echo(answer.get("text", ""))
    usage = answer.get("usage") or {}
    meta = [
        str(answer.get("modelId", "")),
        f"stop: {answer.get('stopReason', '-')}",
        f"{usage.get('inputTokens', '?')} in / {usage.get('outputTokens', '?')} out tokens",
        f"{answer.get('latencyMs', '?')} ms",
    ]
    if answer.get("template"):
        meta.insert(0, f"template {answer['template']}")
    out = console()
    out.print(Text(" · ".join(meta), style="dim"))
    guardrail = answer.get("guardrail") or {}
    if guardrail.get("intervened"):
        out.print(Text(f"The guardrail intervened ({guardrail.get('action') or 'blocked or masked'}).", style="yellow"))


@l1.command()
@click.argument("text")
@click.option("--system", help="A system prompt (or @file).")
@click.option(
    "--temperature",
    type=float_range("prompt_api", "PromptRequest", "temperature"),
    help="The API's range (default: the stack's text_temperature).",
)
@click.option("--top-p", type=float_range("prompt_api", "PromptRequest", "topP"), help="The API's range.")
@click.option(
    "--max-tokens",
    type=int_range("prompt_api", "PromptRequest", "maxTokens"),
    help="The API's range (default: the stack's text_max_tokens).",
)
@json_option
def prompt(
    text: str,
    system: str | None,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    as_json: bool,
) -> None:
    """Send a free-form prompt (TEXT, or @file) to POST /prompt."""
    body: dict[str, Any] = {"prompt": read_value(text)}
    optional = {"system": system and read_value(system), "temperature": temperature, "topP": top_p}
    optional["maxTokens"] = max_tokens
    body.update({key: value for key, value in optional.items() if value is not None})
    answer = call_api("1", "POST", "prompt", body)
    if as_json:
        echo_json(answer)
    else:
        _print_completion(answer)


@l1.command()
@click.argument("name")
@click.argument("variables", nargs=-1, metavar="KEY=VALUE...")
@json_option
def template(name: str, variables: tuple[str, ...], as_json: bool) -> None:
    """Run the managed template NAME with its variables (a value may be @file)."""
    values: dict[str, str] = {}
    for pair in variables:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KitUsageError(f"template variables are KEY=VALUE, got {pair!r}")
        values[key] = read_value(value)
    answer = call_api("1", "POST", f"templates/{quote(name, safe='')}", {"variables": values})
    if as_json:
        echo_json(answer)
    else:
        _print_completion(answer)
