"""Managed prompts (Bedrock Prompt Management) read with GetPrompt and rendered in the function.

The prompt version stays the source of truth for the template text and its inference settings; the function
renders it so that each variable value can be marked as guard content (see ``bedrock.template_request``).
Pure code: no AWS calls here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import BadRequestError, ConfigurationError

TEXT = "text"
VARIABLE = "variable"
# arn:aws:bedrock:REGION:ACCOUNT:prompt/PROMPT_ID:VERSION (the catalog holds version ARNs only)
VERSION_ARN = re.compile(r"arn:aws[a-z-]*:bedrock:[a-z0-9-]+:[0-9]{12}:prompt/(?P<id>[A-Za-z0-9]+):(?P<version>[0-9]+)")
# The inference settings a TEXT prompt variant may hold, all of which Converse's inferenceConfig takes.
INFERENCE_KEYS = ("temperature", "topP", "maxTokens", "stopSequences")


@dataclass(frozen=True)
class ManagedPrompt:
    arn: str
    parts: tuple[tuple[str, str], ...]  # (TEXT, literal text) or (VARIABLE, variable name), in order
    variables: tuple[str, ...]
    inference: Mapping[str, Any] = field(default_factory=dict)


def split_version_arn(arn: str) -> tuple[str, str]:
    """(prompt id, version) of a prompt version ARN."""
    match = VERSION_ARN.fullmatch(arn)
    if match is None:
        raise ConfigurationError(f"'{arn}' is not a Bedrock prompt version ARN (arn:...:prompt/ID:VERSION).")
    return match["id"], match["version"]


def _unusable(arn: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"The managed prompt '{arn}' cannot be rendered: {problem}. Redeploy the stack.")


def parse_prompt(arn: str, response: Mapping[str, Any]) -> ManagedPrompt:
    """The default variant of a GetPrompt response, split into literal text and ``{{variable}}`` parts."""
    variants = [v for v in response.get("variants") or [] if isinstance(v, dict)]
    default = response.get("defaultVariant")
    variant = next((v for v in variants if v.get("name") == default), variants[0] if len(variants) == 1 else None)
    if variant is None:
        raise _unusable(arn, "it has no default variant")
    if variant.get("templateType") != "TEXT":
        raise _unusable(arn, f"its variant is of type {variant.get('templateType')!r}, not TEXT")
    text_config = (variant.get("templateConfiguration") or {}).get("text") or {}
    template = text_config.get("text")
    if not isinstance(template, str) or not template:
        raise _unusable(arn, "its variant has no template text")
    names = tuple(str(v.get("name")) for v in text_config.get("inputVariables") or [] if isinstance(v, dict))
    inference = (variant.get("inferenceConfiguration") or {}).get("text") or {}
    settings = {key: inference[key] for key in INFERENCE_KEYS if inference.get(key) not in (None, [])}
    return ManagedPrompt(arn=arn, parts=split_template(template, names), variables=names, inference=settings)


def split_template(template: str, variables: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The template as literal and variable parts; only declared variables are placeholders.

    A placeholder is ``{{name}}``, blanks inside the braces allowed (the rule stacks/level1_prompt/prompt_templates.py
    checks at synth); any other braces are literal text.
    """
    if not variables:
        return ((TEXT, template),)
    alternatives = "|".join(re.escape(name) for name in sorted(variables, key=len, reverse=True))
    placeholder = re.compile(r"\{\{\s*(" + alternatives + r")\s*\}\}")
    parts: list[tuple[str, str]] = []
    position = 0
    for match in placeholder.finditer(template):
        if match.start() > position:
            parts.append((TEXT, template[position : match.start()]))
        parts.append((VARIABLE, match.group(1)))
        position = match.end()
    if position < len(template):
        parts.append((TEXT, template[position:]))
    return tuple(parts)


def render(prompt: ManagedPrompt, values: Mapping[str, str]) -> list[tuple[str, str]]:
    """(kind, text) blocks of the rendered prompt: adjacent literal text merged, blank values and blocks left out.

    Converse refuses a content block whose text is blank ("The text field in the ContentBlock object at
    messages.0.content.0 is blank", a ValidationException), so a value of only whitespace is left out like an
    empty one. Literal text of only whitespace (the space in ``{{first}} {{last}}``) joins the block before it, so
    the two values still reach the model apart; at the start it is left out. Nothing left at all is the caller's
    request.
    """
    # The handler checked the request against the catalog (PROMPT_CATALOG), which must agree with the prompt.
    if set(prompt.variables) != set(values):
        declared, given = ", ".join(prompt.variables) or "(none)", ", ".join(values) or "(none)"
        raise _unusable(prompt.arn, f"it declares the variables {declared}, the catalog {given}")
    blocks: list[tuple[str, str]] = []
    for kind, text in prompt.parts:
        value = values[text] if kind == VARIABLE else text
        left_out = not value.strip() if kind == VARIABLE else not value  # literal text may be spaces between values
        if left_out:
            continue
        if kind == TEXT and blocks and blocks[-1][0] == TEXT:
            blocks[-1] = (TEXT, blocks[-1][1] + value)
        else:
            blocks.append((kind, value))
    joined: list[tuple[str, str]] = []
    for kind, value in blocks:
        if value.strip():
            joined.append((kind, value))
        elif joined:  # a separator between two values: kept, at the end of the block before it
            joined[-1] = (joined[-1][0], joined[-1][1] + value)
    blocks = joined
    if not blocks:
        raise BadRequestError(
            "every variable is blank and the template has no text of its own: give at least one value",
            code="invalid_value",
            field="variables",
        )
    return blocks
