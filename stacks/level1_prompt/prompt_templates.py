"""Prompt templates kept as data files in ``prompts/``: add a JSON file, get a managed Bedrock prompt.

Each file holds ``name``, ``description``, ``template`` (``{{variable}}`` placeholders), ``variables`` and
optional ``inference`` settings. The loader checks every rule Bedrock Prompt Management would reject at
deploy time, and that the declared variables are exactly the placeholders, so a mistake stops synth with
the file, the field and what is allowed. A few of its rules are the kit's own, narrower than Bedrock's: at least
one variable (with none, no text of the call would be the caller's, which the guardrail judges as guard content),
templates of at most 100,000 characters (Bedrock takes 200,000), and no ``stopSequences`` in ``inference``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacks.config import ConfigError
from stacks.shared.registry import StringRule, resource_schema

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def _variable_rule() -> StringRule:
    """The rule for an input variable's name, as AWS::Bedrock::Prompt's registry schema states it."""
    schema = resource_schema("AWS::Bedrock::Prompt") or {}
    name = schema["definitions"]["PromptInputVariable"]["properties"]["Name"]
    return StringRule("InputVariables[].Name", name.get("pattern"), name.get("minLength"), name.get("maxLength"))


def max_variables() -> int:
    """How many input variables a text prompt may declare, as AWS::Bedrock::Prompt's registry schema states it."""
    schema = resource_schema("AWS::Bedrock::Prompt") or {}
    return int(schema["definitions"]["TextPromptTemplateConfiguration"]["properties"]["InputVariables"]["maxItems"])


_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_KEYS = {"name", "description", "template", "variables", "inference"}
_INFERENCE_BOUNDS = {"temperature": (0.0, 1.0, float), "topP": (0.0, 1.0, float), "maxTokens": (1, 4096, int)}
MAX_TEMPLATES = 10


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    description: str
    template: str
    variables: tuple[str, ...]
    inference: dict[str, float | int]

    @property
    def digest(self) -> str:
        """Changes whenever anything Bedrock stores changes, so a new prompt version is published."""
        blob = json.dumps([self.template, self.variables, self.inference, self.description], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fail(path: Path, field: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"prompts/{path.name}: {field}", value, allowed)


def load_template(path: Path) -> PromptTemplate:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _fail(path, "file", f"line {err.lineno}: {err.msg}", "valid JSON") from None
    if not isinstance(data, dict):
        raise _fail(path, "file", type(data).__name__, "a JSON object")
    extra = sorted(set(data) - _KEYS)
    missing = sorted({"name", "description", "template", "variables"} - set(data))
    if extra:
        raise _fail(path, extra[0], data[extra[0]], "only the keys " + ", ".join(sorted(_KEYS)))
    if missing:
        raise _fail(path, missing[0], None, "a value (the key is required)")

    name, description, template = data["name"], data["description"], data["template"]
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 40:
        raise _fail(path, "name", name, "1-40 lowercase letters and digits, words joined by single '-'")
    if path.stem != name:
        raise _fail(path, "name", name, f"the file name without .json ({path.stem!r})")
    if not isinstance(description, str) or not 1 <= len(description) <= 200:
        raise _fail(path, "description", description, "a string of 1-200 characters")
    if not isinstance(template, str) or not 1 <= len(template) <= 100_000:
        raise _fail(path, "template", "...", "a string of 1-100000 characters")

    variables = data["variables"]
    most = max_variables()
    if (
        not isinstance(variables, list)
        or not 1 <= len(variables) <= most
        or not all(isinstance(v, str) for v in variables)
        or len(set(variables)) != len(variables)
    ):
        raise _fail(path, "variables", variables, f"a list of 1-{most} distinct names")
    rule = _variable_rule()
    for variable in variables:
        problem = rule.problem(variable)
        if problem:  # Bedrock Prompt Management refuses the name at deploy time
            raise _fail(path, "variables", variable, f"{problem} (AWS::Bedrock::Prompt input variable name)")
    placeholders = set(_PLACEHOLDER_RE.findall(template))
    undeclared = sorted(placeholders - set(variables))
    unused = sorted(set(variables) - placeholders)
    if undeclared:
        raise _fail(path, "template", "{{" + undeclared[0] + "}}", "placeholders that 'variables' declares")
    if unused:
        raise _fail(path, "variables", unused[0], "only names the template uses as {{name}}")

    inference = data.get("inference", {})
    if not isinstance(inference, dict):
        raise _fail(path, "inference", inference, "an object with temperature, topP, maxTokens")
    checked: dict[str, float | int] = {}
    for key, value in inference.items():
        if key not in _INFERENCE_BOUNDS:
            raise _fail(path, f"inference.{key}", value, "one of " + ", ".join(_INFERENCE_BOUNDS))
        low, high, kind = _INFERENCE_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _fail(path, f"inference.{key}", value, f"a number from {low} to {high}")
        if kind is int and not float(value).is_integer():
            raise _fail(path, f"inference.{key}", value, "a whole number")
        checked[key] = kind(value)
    return PromptTemplate(name, description, template, tuple(variables), checked)


def output_id(name: str) -> str:
    """The stack output id of a template's prompt version ARN (``review-code`` -> ``PromptReviewCodeArn``)."""
    return f"Prompt{name.title().replace('-', '')}Arn"


def load_templates(directory: Path = PROMPTS_DIR) -> list[PromptTemplate]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ConfigError(f"prompts directory {directory}", [], "at least one template file (*.json)")
    if len(files) > MAX_TEMPLATES:
        raise ConfigError(f"prompts directory {directory}", len(files), f"at most {MAX_TEMPLATES} templates")
    templates = [load_template(path) for path in files]
    # Two names that differ only where output_id drops a '-' ("v2-api" and "v2api") would give two outputs one
    # construct id, which CDK refuses with a stack trace (construct ids are unique within a scope).
    seen: dict[str, str] = {}
    for template in templates:
        key = output_id(template.name)
        if key in seen:
            raise ConfigError(
                f"prompts/{template.name}.json: name",
                template.name,
                f"a name whose output id ({key}) differs from that of prompts/{seen[key]}.json",
            )
        seen[key] = template.name
    return templates
