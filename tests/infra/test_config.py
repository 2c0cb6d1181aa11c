"""Configuration: every validation rule stops synth with the key, the value and what is allowed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from stacks.config import DEFAULTS, ConfigError, load_config, parse_model_id
from tests.conftest import ROOT, cdk_json_context

PINNED = 38


def build(**overrides: Any) -> Any:
    return load_config({**cdk_json_context(), **overrides}, pinned_layer_version=PINNED)


def test_cdk_json_defaults_build_a_sandbox_config() -> None:
    config = build()
    assert config.stage == "sandbox" and config.region == "us-east-1" and config.account is None
    assert config.text_model.model_id == "us.amazon.nova-micro-v1:0"
    assert config.text_model.foundation_model_id == "amazon.nova-micro-v1:0"
    assert config.log_retention_days == 7
    assert config.powertools_layer_version == PINNED


def test_every_kit_key_in_cdk_json_is_known() -> None:
    kit_keys = {k for k in cdk_json_context() if ":" not in k and "@" not in k}
    assert kit_keys == set(DEFAULTS)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("stage", "dev", "one of sandbox, prod"),
        ("name_prefix", "Kit_1", "lowercase letters"),
        ("name_prefix", "k", "3-17 characters"),
        ("name_prefix", "k" * 18, "3-17 characters"),
        ("region", "useast1", "an AWS region code"),
        ("account", "12345", "12-digit AWS account id"),
        ("text_model_id", "nova-micro", "a Bedrock model id"),
        ("text_model_id", "xx.amazon.nova-micro-v1:0", "a Bedrock model id"),
        ("text_model_id", "acme.super-model-v1:0", "a Bedrock model id"),
        ("text_model_id", "eu.amazon.nova-micro-v1:0", "a profile that can be called from region us-east-1"),
        ("text_temperature", 1.7, "a number from 0 to 1"),
        ("text_temperature", "hot", "a number from 0 to 1"),
        ("text_temperature", True, "a number from 0 to 1"),
        ("text_max_tokens", 0, "a whole number from 1 to 4096"),
        ("text_max_tokens", "12.5", "a whole number from 1 to 4096"),
        ("guardrail_content_filter_strength", "EXTREME", "one of NONE, LOW, MEDIUM, HIGH"),
        ("guardrail_prompt_attack_strength", "NONE", "one of LOW, MEDIUM, HIGH"),
        ("guardrail_pii_anonymize", ["EMAIL", "SHOE_SIZE"], "'SHOE_SIZE' is not one"),
        ("guardrail_pii_block", ["EMAIL"], "no type that guardrail_pii_anonymize has too (EMAIL)"),
        ("guardrail_deny_investment_advice", "maybe", "true or false"),
        ("api_throttle_rate", 0, "a number from 1 to 10000"),
        ("api_throttle_burst", 6000, "a whole number from 1 to 5000"),
        ("log_retention_days", 8, "one of 1, 3, 5, 7"),
        ("powertools_layer_version", -1, "a whole number from 0"),
        ("alarm_email", "not-an-address", "empty or an e-mail address"),
        ("tags", {"aws:owner": "me"}, "keys not starting with"),
        ("tags", '{"owner": 5}', "a JSON object of string tags"),
        ("stag", "prod", "a known key"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(key: str, value: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**{key: value})
    message = str(caught.value)
    assert message.startswith(f"config error: {key} = ")
    assert (json.dumps(value) if not isinstance(value, str) else repr(value)) in message
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("text_temperature", "0.25", 0.25),
        ("text_max_tokens", "1024", 1024),
        ("guardrail_deny_investment_advice", "false", False),
        ("guardrail_pii_anonymize", "EMAIL, PHONE", ("EMAIL", "PHONE")),
        ("guardrail_pii_anonymize", '["URL"]', ("URL",)),
        ("tags", '{"owner": "platform"}', {"owner": "platform"}),
        ("account", "123456789012", "123456789012"),
        ("log_retention_days", "30", 30),
    ],
)
def test_string_overrides_from_the_command_line_are_coerced(key: str, raw: str, expected: Any) -> None:
    config = build(**{key: raw})
    value = {
        "text_temperature": lambda c: c.text_temperature,
        "text_max_tokens": lambda c: c.text_max_tokens,
        "guardrail_deny_investment_advice": lambda c: c.guardrail.deny_investment_advice,
        "guardrail_pii_anonymize": lambda c: c.guardrail.pii_anonymize,
        "tags": lambda c: dict(c.tags),
        "account": lambda c: c.account,
        "log_retention_days": lambda c: c.log_retention_days,
    }[key](config)
    assert value == expected


def test_prod_defaults_to_a_year_of_logs() -> None:
    assert build(stage="prod").log_retention_days == 365


def test_cdk_feature_flags_and_cdk_keys_are_not_mistaken_for_typos() -> None:
    config = build(**{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True})
    assert config.stage == "sandbox"


@pytest.mark.parametrize(
    ("model_id", "region", "foundation", "destinations"),
    [
        ("amazon.nova-micro-v1:0", "eu-west-1", "amazon.nova-micro-v1:0", ("eu-west-1",)),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "us-west-2", "anthropic.claude-3-5-haiku-20241022-v1:0", None),
        ("eu.amazon.nova-lite-v1:0", "eu-central-1", "amazon.nova-lite-v1:0", None),
        (
            "global.anthropic.claude-sonnet-4-20250514-v1:0",
            "ap-south-1",
            "anthropic.claude-sonnet-4-20250514-v1:0",
            ("*",),
        ),
    ],
)
def test_model_ids_parse_into_foundation_model_and_destinations(
    model_id: str, region: str, foundation: str, destinations: tuple[str, ...] | None
) -> None:
    model = parse_model_id("text_model_id", model_id, region)
    assert model.foundation_model_id == foundation
    regions = model.destination_regions(region)
    assert region in regions or regions == ("*",)
    if destinations:
        assert regions == destinations


def test_app_prints_one_line_and_exits_1_on_a_config_mistake() -> None:
    # Given the CLI's way of passing context (an environment variable), with a bad stage
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({**cdk_json_context(), "stage": "dev"})}
    # When the app runs as `cdk synth` would run it
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # Then it fails with one readable line and no stack trace
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert errors == ["config error: stage = 'dev' is not allowed; expected one of sandbox, prod"]
    assert "Traceback" not in result.stderr and "jsii" not in result.stderr.lower()
