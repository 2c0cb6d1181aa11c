"""The prompt API's environment contract, parsed lazily into a frozen object on first use."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from common.bedrock_ids import GUARDRAIL_ID, GUARDRAIL_VERSION
from common.env import env_float, env_int, env_json_object, env_matching, env_str
from common.errors import ConfigurationError
from prompt_api.prompts import VERSION_ARN
from prompt_api.validation import PROMPT_MODEL, TEMPLATE_MODEL, bounds, property_schema

# The default temperature and max tokens of a free-form call are the stack's (text_temperature, text_max_tokens in
# cdk.json, the one place defaults live): the function requires both variables. DEFAULT_TEMPERATURE's value when
# the deployment sends no default temperature (text_temperature none: a model that refuses any temperature); the
# stack writes this word (stacks/level1_prompt/stack.py temperature_env imports it).
NO_TEMPERATURE = "none"
CATALOG_VAR = "PROMPT_CATALOG"
REQUEST_METADATA_VAR = "REQUEST_METADATA"
# An input variable's name as Bedrock Prompt Management allows it, matched whole (botocore bedrock-agent
# PromptInputVariable.name, the rule the stack applies from AWS::Bedrock::Prompt's schema): up to 100 characters,
# each optionally followed by one '_' or '-'. tests/level1_prompt/test_aws_facts.py holds it to both sources.
VARIABLE_NAME = re.compile(r"([0-9a-zA-Z][_-]?){1,100}")


@dataclass(frozen=True)
class Template:
    name: str
    arn: str
    description: str
    variables: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    model_id: str
    guardrail_id: str
    guardrail_version: str
    catalog: Mapping[str, Template]
    default_temperature: float | None  # None: free-form calls without a temperature send none
    default_max_tokens: int
    metrics_namespace: str
    service_name: str
    # Tags every Converse call (requestMetadata): Level 3 distills from the invocation logs of these calls only.
    request_metadata: Mapping[str, str]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read and validate the environment once; raises ConfigurationError naming the bad variable."""
    low_t, high_t = bounds(PROMPT_MODEL, "temperature")
    low_m, high_m = bounds(PROMPT_MODEL, "maxTokens")
    return Settings(
        model_id=env_str("MODEL_ID"),
        guardrail_id=env_matching("GUARDRAIL_ID", GUARDRAIL_ID, "a guardrail id (lowercase letters and digits)"),
        guardrail_version=env_matching("GUARDRAIL_VERSION", GUARDRAIL_VERSION, "DRAFT or a version number"),
        catalog=parse_catalog(env_json_object(CATALOG_VAR)),
        default_temperature=(
            None
            if os.environ.get("DEFAULT_TEMPERATURE", "").strip() == NO_TEMPERATURE
            else env_float("DEFAULT_TEMPERATURE", None, low_t, high_t)
        ),
        default_max_tokens=env_int("DEFAULT_MAX_TOKENS", None, low_m, high_m),
        metrics_namespace=env_str("POWERTOOLS_METRICS_NAMESPACE"),
        service_name=env_str("POWERTOOLS_SERVICE_NAME"),
        request_metadata=_string_map(REQUEST_METADATA_VAR),
    )


def _string_map(name: str) -> Mapping[str, str]:
    raw = env_json_object(name)
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in raw.items()):
        raise ConfigurationError(f"Environment variable {name} must map strings to strings.")
    return MappingProxyType(raw)


def parse_catalog(raw: Mapping[str, Any]) -> Mapping[str, Template]:
    """``{"name": {"arn", "description", "variables"}}`` -> read-only mapping of Template."""
    return MappingProxyType({name: _parse_template(name, entry) for name, entry in raw.items()})


def _catalog_error(name: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"Environment variable {CATALOG_VAR}: template '{name}' {problem}.")


def _parse_template(name: str, entry: Any) -> Template:
    if not name or not isinstance(entry, dict):
        raise _catalog_error(name, "must be a non-empty name mapped to an object")
    arn, description, variables = entry.get("arn"), entry.get("description", ""), entry.get("variables", [])
    if not isinstance(arn, str) or not VERSION_ARN.fullmatch(arn):
        raise _catalog_error(name, "needs 'arn', a Bedrock prompt version ARN (arn:...:prompt/ID:VERSION)")
    if not isinstance(description, str):
        raise _catalog_error(name, "has a 'description' that is not a string")
    if not isinstance(variables, list) or not all(isinstance(v, str) and VARIABLE_NAME.fullmatch(v) for v in variables):
        raise _catalog_error(name, "needs 'variables', a list of variable names")
    if len(set(variables)) != len(variables):
        raise _catalog_error(name, "lists a variable twice")
    limit = property_schema(TEMPLATE_MODEL, "variables").get("maxProperties")
    if limit is not None and len(variables) > limit:
        raise _catalog_error(name, f"has more than {limit} variables (the request schema's maxProperties)")
    return Template(name=name, arn=arn, description=description, variables=tuple(variables))
