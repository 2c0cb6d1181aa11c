"""Configuration: every validation rule stops synth with the key, the value and what is allowed; every mistake
of a context is reported at once. Kit-wide keys here; each level's keys in tests/levelN_x/test_settings.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from stacks.config import CONFIG_KEYS, LEVEL_SETTINGS, ConfigError, load_config
from stacks.shared.settings import allowed_text, parse_model_id
from tests.conftest import ROOT, cdk_json_context

PINNED = 38


def build(**overrides: Any) -> Any:
    return load_config({**cdk_json_context(), **overrides}, pinned_layer_version=PINNED)


def problems(**overrides: Any) -> dict[str, str]:
    """The error lines of a context with ``overrides``, by key (the test fails if it builds)."""
    with pytest.raises(ConfigError) as caught:
        build(**overrides)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.problems)
    return {problem.key: line for problem, line in zip(caught.value.problems, lines, strict=True)}


def test_cdk_json_defaults_build_a_sandbox_config() -> None:
    config = build()
    assert config.stage == "sandbox" and config.region == "us-east-1" and config.account is None
    assert config.text_model.model_id == "us.amazon.nova-micro-v1:0"
    assert config.text_model.foundation_model_id == "amazon.nova-micro-v1:0"
    assert config.log_retention_days == 7
    assert config.powertools_layer_version == PINNED


def test_every_kit_key_in_cdk_json_is_known() -> None:
    kit_keys = {k for k in cdk_json_context() if ":" not in k and "@" not in k}
    assert kit_keys == set(CONFIG_KEYS)


def test_every_key_maps_to_exactly_one_model_field_and_every_field_to_one_key() -> None:
    # Given cdk.json's kit keys and every level's settings model
    kit_keys = [k for k in cdk_json_context() if ":" not in k and "@" not in k]
    fields = [
        (model.__name__, name, field.alias) for model in LEVEL_SETTINGS for name, field in model.model_fields.items()
    ]
    # Then each field reads one key (its alias), no two fields read the same key, and every key has its field
    assert all(alias for _, _, alias in fields), [f"{m}.{n}" for m, n, alias in fields if not alias]
    aliases = [alias for _, _, alias in fields]
    assert sorted(aliases) == sorted(set(aliases)), "two fields read the same key"
    assert sorted(aliases) == sorted(kit_keys)


def test_every_field_says_what_it_allows() -> None:
    for model in LEVEL_SETTINGS:
        for field in model.model_fields.values():
            assert allowed_text(field), field.alias  # raises TypeError for a field that cannot say it


def test_a_missing_key_is_an_error_that_names_it() -> None:
    context = {k: v for k, v in cdk_json_context().items() if k not in ("rag_max_results", "api_throttle_rate")}
    with pytest.raises(ConfigError) as caught:
        load_config(context, pinned_layer_version=PINNED)
    assert [p.key for p in caught.value.problems] == ["api_throttle_rate", "rag_max_results"]
    assert all("missing; cdk.json defines every key" in line for line in str(caught.value).splitlines())


def test_a_null_key_may_be_absent_because_the_cdk_drops_null_values() -> None:
    # cdk.json's null means "the stage decides"; the CDK leaves null context values out, so they arrive absent.
    nulls = {k for k, v in cdk_json_context().items() if v is None}
    assert nulls == {"log_retention_days", "rag_sample_corpus"}
    context = {k: v for k, v in cdk_json_context().items() if v is not None}
    sandbox = load_config(context, pinned_layer_version=PINNED)
    prod = load_config({**context, "stage": "prod"}, pinned_layer_version=PINNED)
    assert (sandbox.log_retention_days, sandbox.rag.sample_corpus) == (7, True)
    assert (prod.log_retention_days, prod.rag.sample_corpus) == (365, False)


def test_mistakes_in_three_levels_are_reported_at_once() -> None:
    # Given one context with a mistake in Level 1, Level 2 and Level 4
    found = problems(text_max_tokens=0, rag_chunking="sentences", hp_nat_gateways=4)
    # Then the error has three lines, one per key, each in the one-line format
    assert list(found) == ["text_max_tokens", "rag_chunking", "hp_nat_gateways"]
    assert found["text_max_tokens"] == (
        "config error: text_max_tokens = 0 is not allowed; expected a whole number from 1 to 4096"
    )
    assert found["rag_chunking"].endswith("expected one of fixed, hierarchical, semantic, none")
    assert found["hp_nat_gateways"].endswith("expected a whole number from 1 to 2")


def test_cross_field_rules_are_reported_with_the_other_mistakes() -> None:
    found = problems(
        guardrail_pii_block=["EMAIL"],  # also anonymized
        rag_hierarchical_child_tokens=2000,  # not below the parent's 1500
        ft_deploy="on-demand",
        ft_base_model_id="amazon.titan-text-lite-v1:0:4k",  # served by Provisioned Throughput only
        tj_spot=True,
        tj_max_wait_hours=1,  # shorter than the runtime
        hp_controller_instance_type="ml.t2.micro",  # not a HyperPod type
        stage="dev",
    )
    assert set(found) == {
        "stage",
        "guardrail_pii_block",
        "rag_hierarchical_child_tokens",
        "ft_deploy",
        "tj_max_wait_hours",
        "hp_controller_instance_type",
    }
    assert "no type that guardrail_pii_anonymize has too (EMAIL)" in found["guardrail_pii_block"]
    assert "on-demand serves Amazon Nova" in found["ft_deploy"]
    assert "HyperPod supports" in found["hp_controller_instance_type"]


def test_an_invalid_stage_or_region_does_not_add_mistakes_elsewhere() -> None:
    # Rules that depend on the stage or region are skipped when it is itself wrong: one line, not three.
    assert list(problems(region="useast1")) == ["region"]
    assert list(problems(stage="dev", rag_sample_corpus=True)) == ["stage"]


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("stage", "dev", "one of sandbox, prod"),
        ("name_prefix", "Kit_1", "lowercase letters"),
        ("name_prefix", "k", "3-17 characters"),
        ("name_prefix", "k" * 18, "3-17 characters"),
        ("region", "useast1", "an AWS region code"),
        # Well formed, but not a region of the aws partition that the registry schemas list (app.py checks what
        # each stack needs of a listed region: tests/infra/test_regions.py).
        ("region", "us-east-7", "a region of the aws partition that the registry schemas list: af-south-1"),
        ("region", "cn-north-1", "a region of the aws partition that the registry schemas list: af-south-1"),
        ("account", "12345", "12-digit AWS account id"),
        ("text_model_id", "nova-micro", "a Bedrock model id"),
        ("text_model_id", "xx.amazon.nova-micro-v1:0", "a Bedrock model id"),
        ("text_model_id", "acme.super-model-v1:0", "a Bedrock model id"),
        ("guardrail_content_filter_strength", "EXTREME", "one of NONE, LOW, MEDIUM, HIGH"),
        ("guardrail_prompt_attack_strength", "NONE", "one of LOW, MEDIUM, HIGH"),
        ("guardrail_pii_anonymize", ["EMAIL", "SHOE_SIZE"], "'SHOE_SIZE' is not one"),
        ("guardrail_pii_block", ["EMAIL"], "no type that guardrail_pii_anonymize has too (EMAIL)"),
        ("guardrail_deny_investment_advice", "maybe", "true or false"),
        ("guardrail_tier", "premium", "one of classic, standard"),
        ("api_throttle_rate", 0, "a number from 1 to 10000"),
        ("api_throttle_burst", 6000, "a whole number from 1 to 5000"),
        ("log_retention_days", 8, "one of 1, 3, 5, 7"),
        ("powertools_layer_version", -1, "a whole number from 0"),
        ("alarm_email", "not-an-address", "empty or an e-mail address"),
        ("alarm_email", False, "empty or an e-mail address"),  # not taken for "none"
        ("tags", {"aws:owner": "me"}, 'not starting with "aws:"'),
        ("tags", '{"owner": 5}', "a JSON object of at most 44 string tags"),
        # Also the stacks' own tags: CloudFormation takes no empty value, and a resource at most 50 (the kit adds 3,
        # and CDK up to 3 more: tests/infra/test_tag_limits.py); a key of the kit's own would replace the kit's tag.
        ("tags", {"team": ""}, "values of 1-256 characters"),
        ("tags", {"kit-stage": "dev"}, "kit, kit-level, kit-stage, kit-execution"),
        ("tags", {"Kit": "mine"}, "kit, kit-level, kit-stage, kit-execution) in any case"),  # IAM: case-insensitive
        ("tags", {"Owner": "a", "owner": "b"}, "unique whatever their case"),
        ("tags", {f"k{i}": "v" for i in range(45)}, "at most 44"),
        # Bedrock's tag pattern is ASCII (botocore's bedrock Tag): a guardrail or a custom model would refuse it.
        ("tags", {"owner": "Zoë"}, "ASCII letters, digits, spaces and _.:/=+@-"),
        ("tags", {"owner": "a\tb"}, "ASCII letters, digits, spaces and _.:/=+@-"),  # SageMaker's pattern: no tab
        ("stag", "prod", "a known key (did you mean stage?)"),
        ("rag_max_results:", 7, "a known key (did you mean rag_max_results?)"),  # -c rag_max_results:=7
        # The CDK ignores a misspelt boundary key without a word: every role would go without the boundary.
        ("@aws-cdk/core:permissionBoundary", "corp", "a known key (did you mean @aws-cdk/core:permissionsBoundary?)"),
        # Added with the typed settings: forms the hand parsers refused, which the models must refuse too.
        ("guardrail_pii_anonymize", "EMAIL, EMAIL", "a list without repeated items"),
        ("guardrail_deny_investment_advice", 1, "true or false"),
        ("api_throttle_burst", 20.0, "a whole number from 1 to 5000"),
        ("log_retention_days", True, "one of 1, 3, 5, 7"),
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
        ("guardrail_deny_investment_advice", "false", False),
        ("guardrail_pii_anonymize", "EMAIL, PHONE", ("EMAIL", "PHONE")),
        ("guardrail_pii_anonymize", '["URL"]', ("URL",)),
        ("tags", '{"owner": "platform"}', {"owner": "platform"}),
        ("account", "123456789012", "123456789012"),
        ("log_retention_days", "30", 30),
        # Added: the other string forms `-c` gives for kit-wide keys.
        ("api_throttle_rate", "12.5", 12.5),
        ("api_throttle_burst", " 40 ", 40),
        ("powertools_layer_version", "40", 40),
        ("log_retention_days", "default", 7),
        ("log_retention_days", "null", 7),  # the description's null, as `-c log_retention_days=null` passes it
        ("rag_sample_corpus", "null", True),  # the stage decides: sandbox
        ("stage", " sandbox ", "sandbox"),
    ],
)
def test_string_overrides_from_the_command_line_are_coerced(key: str, raw: str, expected: Any) -> None:
    config = build(**{key: raw})
    value = {
        "guardrail_deny_investment_advice": lambda c: c.guardrail.deny_investment_advice,
        "guardrail_pii_anonymize": lambda c: c.guardrail.pii_anonymize,
        "tags": lambda c: dict(c.tags),
        "account": lambda c: c.account,
        "log_retention_days": lambda c: c.log_retention_days,
        "api_throttle_rate": lambda c: c.api_throttle_rate,
        "api_throttle_burst": lambda c: c.api_throttle_burst,
        "powertools_layer_version": lambda c: c.powertools_layer_version,
        "stage": lambda c: c.stage,
        "rag_sample_corpus": lambda c: c.rag.sample_corpus,
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
    model = parse_model_id("text_model_id", model_id)
    assert model.foundation_model_id == foundation
    regions = model.destination_regions(region)
    assert region in regions or regions == ("*",)
    if destinations:
        assert regions == destinations


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"stage": "dev"}, ["config error: stage = 'dev' is not allowed; expected one of sandbox, prod"]),
        (
            {"text_temperature": 1.7, "rag_max_results": 50, "tj_instance_count": 0},
            [
                "config error: text_temperature = 1.7 is not allowed; expected a number from 0 to 1, or none",
                "config error: rag_max_results = 50 is not allowed; expected a whole number from 1 to 25",
                "config error: tj_instance_count = 0 is not allowed; expected a whole number from 1 to 64",
            ],
        ),
    ],
    ids=["one-mistake", "three-levels"],
)
def test_app_prints_one_line_per_mistake_and_exits_1(overrides: dict[str, Any], expected: list[str]) -> None:
    # Given the CLI's way of passing context (an environment variable), with bad values
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({**cdk_json_context(), **overrides})}
    # When the app runs as `cdk synth` would run it
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # Then it fails with one readable line per mistake and no stack trace
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert errors == expected
    assert "Traceback" not in result.stderr and "jsii" not in result.stderr.lower()


def test_the_kit_commands_load_neither_pydantic_nor_the_settings() -> None:
    """`kit` starts fast: the configuration (and pydantic) loads when a command needs it, not at import."""
    from tests.kit.test_operator import KIT_COMMAND_MODULES

    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic' or m == 'stacks.config')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *KIT_COMMAND_MODULES], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_readme_configuration_reference_is_generated_from_the_settings() -> None:
    """The README's table is rendered from cdk.json, the settings models and stacks/updates.py: when one of them
    changes, run `python scripts/config_reference.py` (this fails until then)."""
    from scripts import config_reference

    assert config_reference.main(["--check"]) == 0
    table = config_reference.render()
    assert table.count("\n| `") == len(CONFIG_KEYS)
    changed = config_reference.render({**cdk_json_context(), "text_temperature": 0.25})
    assert "| `text_temperature` | `0.25` | a number from 0 to 1, or none |" in changed


def test_a_permissions_boundary_from_the_cli_reaches_every_role(tmp_path: Any) -> None:
    """The CLI passes -c values as strings, which the CDK ignores for its boundary key without a word: the app
    reads the JSON, so every role, the CDK's helper roles included, gets the boundary an organization requires."""
    from app import PERMISSIONS_BOUNDARY, build_app

    context = {**cdk_json_context(), PERMISSIONS_BOUNDARY: "corp-boundary"}
    app, _ = build_app(context, outdir=str(tmp_path), only={"GenAiKit-1-Prompt"})
    assembly = app.synth()
    roles = 0
    for stack in assembly.stacks:
        messages = [str(m.entry.data) for m in stack.messages if "AwsSolutions-" in str(m.entry.data)]
        assert messages == [], messages  # cdk-nag has nothing to say about a boundary
        for logical_id, resource in stack.template["Resources"].items():
            if resource["Type"] == "AWS::IAM::Role":
                roles += 1
                boundary = json.dumps(resource["Properties"].get("PermissionsBoundary"))
                assert ":policy/corp-boundary" in boundary, (stack.stack_name, logical_id)
    assert roles >= 2  # the function's role and the account stack's API Gateway role


@pytest.mark.parametrize(
    "value",
    [
        "corp boundary",
        '{"name": 3}',
        '{"policy": "x"}',
        "[1]",
        "{name:x}",
        "arn:aws:s3:::b",
        "arn:aws:iam::123456789012:policy/a*b<>",  # IAM's policyNameType is [\w+=,.@-]+
    ],
)
def test_a_permissions_boundary_that_is_neither_a_name_nor_an_arn_stops_synth(value: str) -> None:
    from app import PERMISSIONS_BOUNDARY, build_app

    with pytest.raises(ConfigError) as raised:
        build_app({**cdk_json_context(), PERMISSIONS_BOUNDARY: value}, only={"GenAiKit-1-Prompt"})
    assert PERMISSIONS_BOUNDARY in str(raised.value) and "a policy name, a policy ARN" in str(raised.value)


def test_a_refused_permissions_boundary_is_reported_with_the_other_mistakes() -> None:
    from app import PERMISSIONS_BOUNDARY, build_app

    with pytest.raises(ConfigError) as raised:
        build_app({**cdk_json_context(), PERMISSIONS_BOUNDARY: '{"name": "a", "arn": "b"}', "stage": "Prod"})
    assert [p.key for p in raised.value.problems] == [PERMISSIONS_BOUNDARY, "stage"]


def test_the_cdks_own_context_keys_are_not_taken_for_mistakes() -> None:
    cdk_keys = {
        "aws:cdk:enable-path-metadata": True,
        "availability-zones:account=123456789012:region=us-east-1": ["us-east-1a"],
        "@aws-cdk/core:newStyleStackSynthesis": True,
        "cli-telemetry": False,  # `cdk cli-telemetry --disable` writes it to cdk.context.json
    }
    assert build(**cdk_keys).stage == "sandbox"


@pytest.mark.parametrize(
    ("value", "account", "left"),
    [
        ("arn:${AWS::Partition}:iam::123456789012:policy/corp", "123456789012", "${AWS::Partition}"),
        ('{"name": "corp-${AWS::Partition}-boundary"}', "123456789012", "${AWS::Partition}"),
        ("arn:aws:iam::${AWS::AccountId}:policy/corp", "", "${AWS::AccountId}"),
        # the example boundary `cdk bootstrap --example-permissions-boundary` creates, by name
        ('{"name": "cdk-${Qualifier}-permissions-boundary-${AWS::AccountId}-${AWS::Region}"}', "", "${AWS::AccountId}"),
    ],
)
def test_a_boundary_placeholder_the_cdk_cannot_fill_is_a_config_error(value: str, account: str, left: str) -> None:
    """The CDK refuses these at synth with a stack trace ("includes a pseudo parameter, which is not supported for
    environment agnostic stacks"). Before: the kit accepted them and let the CDK fail."""
    import aws_cdk as cdk

    from app import PERMISSIONS_BOUNDARY, _permissions_boundary

    app = cdk.App(context={PERMISSIONS_BOUNDARY: value, "account": account})
    with pytest.raises(ConfigError) as raised:
        _permissions_boundary(app)
    assert str(raised.value).startswith(f"config error: {PERMISSIONS_BOUNDARY} = ") and left in str(raised.value)
    # with the account set, the account placeholder is the CDK's to fill
    if left == "${AWS::AccountId}":
        filled = cdk.App(context={PERMISSIONS_BOUNDARY: value, "account": "123456789012"})
        _permissions_boundary(filled)


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("corp-boundary", {"name": "corp-boundary"}),
        ('{"name": "corp-boundary"}', {"name": "corp-boundary"}),
        ("arn:aws:iam::123456789012:policy/corp", {"arn": "arn:aws:iam::123456789012:policy/corp"}),
        ({"arn": "arn:aws:iam::aws:policy/x"}, {"arn": "arn:aws:iam::aws:policy/x"}),
        ("arn:aws:iam::123456789012:policy/team/a/corp", {"arn": "arn:aws:iam::123456789012:policy/team/a/corp"}),
        # The CDK's placeholders, as its guide writes them (customize-permissions-boundaries.html)
        ('{"name": "cdk-${Qualifier}-PermissionsBoundary"}', {"name": "cdk-${Qualifier}-PermissionsBoundary"}),
        (
            "arn:aws:iam::123456789012:policy/cdk-${Qualifier}-pb",
            {"arn": "arn:aws:iam::123456789012:policy/cdk-${Qualifier}-pb"},
        ),
    ],
)
def test_a_permissions_boundary_is_read_in_every_form_the_cli_or_cdk_json_gives(value: Any, wanted: Any) -> None:
    import aws_cdk as cdk

    from app import PERMISSIONS_BOUNDARY, _permissions_boundary

    app = cdk.App(context={PERMISSIONS_BOUNDARY: value})
    _permissions_boundary(app)
    assert app.node.try_get_context(PERMISSIONS_BOUNDARY) == wanted
