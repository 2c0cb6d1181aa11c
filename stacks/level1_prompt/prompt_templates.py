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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_api.validation import PROMPT_MODEL, property_schema
from stacks.config import ConfigError, Problem
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


def _call_bounds(key: str) -> tuple[float, float, type]:
    """(minimum, maximum, type) of an inference setting as a free-form call takes it: the API's request schema's
    (prompt_api/request_schemas.json), which a template's settings follow."""
    schema = property_schema(PROMPT_MODEL, key)
    kind = int if schema["type"] == "integer" else float
    return kind(schema["minimum"]), kind(schema["maximum"]), kind


_INFERENCE_BOUNDS = {key: _call_bounds(key) for key in ("temperature", "topP", "maxTokens")}
MAX_TEMPLATES = 10
# Lambda allows 4 KB of environment variables in all; keep the template catalog well inside it.
CATALOG_ENV_BUDGET = 3000
_ARN_ESTIMATE = "x" * 100  # a prompt version ARN is about 75 characters; estimate high


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


def _problem(path: Path, field: str, value: object, allowed: str) -> Problem:
    return Problem(f"prompts/{path.name}: {field}", value, allowed)


def template_problems(path: Path) -> tuple[PromptTemplate | None, list[Problem]]:
    """The template in ``path`` and every problem with it (one per field; a rule that reads a field that is
    itself wrong is not applied): a file with problems gives no template."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return None, [_problem(path, "file", f"line {err.lineno}: {err.msg}", "valid JSON")]
    if not isinstance(data, dict):
        return None, [_problem(path, "file", type(data).__name__, "a JSON object")]
    problems = [
        _problem(path, key, data[key], "only the keys " + ", ".join(sorted(_KEYS))) for key in sorted(set(data) - _KEYS)
    ]
    problems += [
        _problem(path, key, None, "a value (the key is required)")
        for key in sorted({"name", "description", "template", "variables"} - set(data))
    ]

    name: Any = data.get("name")
    description: Any = data.get("description")
    template: Any = data.get("template")
    if "name" in data:
        if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 40:
            problems.append(
                _problem(path, "name", name, "1-40 lowercase letters and digits, words joined by single '-'")
            )
        elif path.stem != name:
            problems.append(_problem(path, "name", name, f"the file name without .json ({path.stem!r})"))
    if "description" in data and (not isinstance(description, str) or not 1 <= len(description) <= 200):
        problems.append(_problem(path, "description", description, "a string of 1-200 characters"))
    template_ok = isinstance(template, str) and 1 <= len(template) <= 100_000
    if "template" in data and not template_ok:
        problems.append(_problem(path, "template", "...", "a string of 1-100000 characters"))

    variables: Any = data.get("variables")
    most = max_variables()
    variables_ok = (
        isinstance(variables, list)
        and 1 <= len(variables) <= most
        and all(isinstance(v, str) for v in variables)
        and len(set(variables)) == len(variables)
    )
    if "variables" in data and not variables_ok:
        problems.append(_problem(path, "variables", variables, f"a list of 1-{most} distinct names"))
    if variables_ok:
        rule = _variable_rule()
        for variable in variables:
            problem = rule.problem(variable)
            if problem:  # Bedrock Prompt Management refuses the name at deploy time
                problems.append(
                    _problem(path, "variables", variable, f"{problem} (AWS::Bedrock::Prompt input variable name)")
                )
    if template_ok and variables_ok:
        placeholders = set(_PLACEHOLDER_RE.findall(template))
        problems += [
            _problem(path, "template", "{{" + undeclared + "}}", "placeholders that 'variables' declares")
            for undeclared in sorted(placeholders - set(variables))
        ]
        problems += [
            _problem(path, "variables", unused, "only names the template uses as {{name}}")
            for unused in sorted(set(variables) - placeholders)
        ]

    inference: Any = data.get("inference", {})
    checked: dict[str, float | int] = {}
    if not isinstance(inference, dict):
        problems.append(_problem(path, "inference", inference, "an object with temperature, topP, maxTokens"))
        inference = {}
    for key, value in inference.items():
        if key not in _INFERENCE_BOUNDS:
            problems.append(_problem(path, f"inference.{key}", value, "one of " + ", ".join(_INFERENCE_BOUNDS)))
            continue
        low, high, kind = _INFERENCE_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            problems.append(_problem(path, f"inference.{key}", value, f"a number from {low} to {high}"))
        elif kind is int and not float(value).is_integer():
            problems.append(_problem(path, f"inference.{key}", value, "a whole number"))
        else:
            checked[key] = kind(value)
    if problems:
        return None, problems
    return PromptTemplate(name, description, template, tuple(variables), checked), []


def load_template(path: Path) -> PromptTemplate:
    """The template in ``path``; ConfigError with every problem it has."""
    template, problems = template_problems(path)
    if template is None:
        raise ConfigError.of(problems)
    return template


def catalog_json(templates: list[PromptTemplate], arn_of: Callable[[str], str]) -> str:
    """The catalog the function reads from its environment: each template's version ARN, description and
    variables, by name."""
    return json.dumps(
        {
            t.name: {"arn": arn_of(t.name), "description": t.description, "variables": list(t.variables)}
            for t in templates
        },
        separators=(",", ":"),
    )


def output_id(name: str) -> str:
    """The stack output id of a template's prompt version ARN (``review-code`` -> ``PromptReviewCodeArn``)."""
    return f"Prompt{name.title().replace('-', '')}Arn"


def load_templates(directory: Path = PROMPTS_DIR) -> list[PromptTemplate]:
    """Every template in ``directory``; ConfigError with every problem of every file."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise ConfigError(f"prompts directory {directory}", [], "at least one template file (*.json)")
    problems: list[Problem] = []
    if len(files) > MAX_TEMPLATES:
        problems.append(Problem(f"prompts directory {directory}", len(files), f"at most {MAX_TEMPLATES} templates"))
    templates = []
    for path in files:
        template, found = template_problems(path)
        problems += found
        if template is not None:
            templates.append(template)
    # Two names that differ only where output_id drops a '-' ("v2-api" and "v2api") would give two outputs one
    # construct id, which CDK refuses with a stack trace (construct ids are unique within a scope).
    seen: dict[str, str] = {}
    for template in templates:
        key = output_id(template.name)
        if key in seen:
            problems.append(
                Problem(
                    f"prompts/{template.name}.json: name",
                    template.name,
                    f"a name whose output id ({key}) differs from that of prompts/{seen[key]}.json",
                )
            )
        seen[key] = template.name
    size = len(catalog_json(templates, lambda name: _ARN_ESTIMATE))
    if size > CATALOG_ENV_BUDGET:
        problems.append(
            Problem(
                "prompts/*.json (the prompt catalog in the function's environment)",
                f"about {size} bytes",
                f"at most {CATALOG_ENV_BUDGET} bytes of Lambda's 4 KB of environment: shorter descriptions or fewer "
                "templates",
            )
        )
    if problems:
        raise ConfigError.of(problems)
    return templates
