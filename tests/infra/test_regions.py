"""Regions: the configured region must be one the kit can read (the aws partition, in the registry schemas), and a
stack that region cannot hold is refused alone, with a config error on that stack, while the others deploy.

A region can lack a stack's CloudFormation resource types (read from the per-region index cfn-lint ships), or what
a stack needs of it by configuration: a profile callable from it, a customizable base model, Custom Model Import,
a published training image (stacks/shared/regions.py, and each level's stack).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app import build_app
from stacks.shared.facts import PROFILE_GEOGRAPHIES, STACK_IDS
from stacks.shared.registry import registry_regions, unavailable_types
from stacks.shared.settings import parse_model_id, profile_region_problems
from tests.conftest import ROOT, cdk_json_context, once_per_run, run_folder

# us-west-1 has no Bedrock Prompt Management or Knowledge Base resource types, no Custom Model Import and none of
# the default base model's customization, and has HyperPod: each kind of refusal, and a stack that is not refused.
# The opt-in invocation-logging stack is on: the app asks the refused Level 3 stack whether it reads its parameter.
REGION = "us-west-1"
BUILT = [STACK_IDS["1"], STACK_IDS["3"], STACK_IDS["3-sagemaker"], STACK_IDS["4-cluster"], STACK_IDS["0-logging"]]


def _synthesize(outdir: Path, region: str = REGION, only: list[str] = BUILT, **settings: Any) -> dict[str, Any]:
    context = {**cdk_json_context(), "region": region, "invocation_logging": True, **settings}
    app, _ = build_app(context, outdir=str(outdir), nag=False, schema_validation=False, only=only)
    assembly = app.synth()
    return {
        "dir": outdir,
        "stacks": {
            artifact.id: {
                "name": artifact.stack_name,
                "template": artifact.template,
                "errors": [str(m.entry.data) for m in artifact.messages if str(m.level).endswith("ERROR")],
            }
            for artifact in assembly.stacks
        },
    }


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = run_folder(tmp_path_factory)
    return once_per_run(folder, f"regions:{REGION}", lambda: _synthesize(folder / f"cdk-{REGION}"))


def _types(template: dict[str, Any]) -> set[str]:
    return {resource["Type"] for resource in template.get("Resources", {}).values()}


def test_the_kit_reads_each_regions_resource_types_as_cfn_lint_does(sandbox: Any, prod_extremes: Any) -> None:
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    types = {t for synth in (sandbox, prod_extremes) for template in synth.templates.values() for t in _types(template)}
    assert len(registry_regions()) > 20
    for region in registry_regions():
        offered = set(PROVIDER_SCHEMA_MANAGER.get_resource_types(region))
        expected = sorted(t for t in types if t.startswith("AWS::") and t not in offered)
        assert unavailable_types(region, types) == expected, region


def test_a_stack_whose_types_the_region_lacks_gets_an_error_naming_them(synth: dict[str, Any]) -> None:
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    offered = set(PROVIDER_SCHEMA_MANAGER.get_resource_types(REGION))
    prompt = synth["stacks"][STACK_IDS["1"]]
    lacking = sorted(t for t in _types(prompt["template"]) if t.startswith("AWS::") and t not in offered)
    assert lacking  # the case this test is about: Bedrock Prompt Management has no resource types in us-west-1
    [error] = prompt["errors"]
    assert error.startswith(
        f"config error: region = '{REGION}' is not allowed; expected a region whose CloudFormation offers every "
        f"resource type of {STACK_IDS['1']}; {REGION} lacks {', '.join(lacking)}; all are offered in "
    )
    offering = error.rsplit("all are offered in ", 1)[1].split(", ")
    assert "us-east-1" in offering and REGION not in offering


def test_a_stack_the_configuration_cannot_have_in_the_region_is_an_empty_stand_in_with_the_errors(
    synth: dict[str, Any],
) -> None:
    finetune = synth["stacks"][STACK_IDS["3"]]
    assert finetune["name"] == f"{STACK_IDS['3']}-sandbox"  # `cdk deploy` finds it under its usual name
    assert finetune["template"].get("Resources", {}) == {}
    assert finetune["errors"] == [
        "config error: ft_base_model_id = 'amazon.nova-micro-v1:0:128k' is not allowed; expected a model "
        f"customizable in region {REGION}; amazon.nova-micro-v1:0:128k is offered in us-east-1"
    ]
    sagemaker = synth["stacks"][STACK_IDS["3-sagemaker"]]
    assert sagemaker["template"].get("Resources", {}) == {}
    assert sagemaker["errors"] == [
        f"config error: region = '{REGION}' is not allowed; expected a region with Bedrock Custom Model Import: "
        "eu-central-1, us-east-1, us-east-2, us-west-2"
    ]


@pytest.mark.parametrize("region", ["eu-central-1", "us-east-2"])
def test_the_sagemaker_path_is_built_in_every_region_custom_model_import_serves(region: str) -> None:
    """Before: only us-east-1 and us-west-2, though the import page lists eu-central-1 and us-east-2 too."""
    from stacks.level3_finetune.sagemaker_settings import region_problems
    from stacks.shared.training_jobs import training_image_problems

    assert region_problems(region) == [] and training_image_problems(region) == []
    assert region_problems("ap-southeast-2") != []


def test_a_stack_the_region_can_hold_is_built_without_errors(synth: dict[str, Any]) -> None:
    # The invocation-logging stack too, beside a refused Level 3 stack (the app once read an attribute the refused
    # stack never set, and no stack of the app synthesized).
    for stack_id in (STACK_IDS["4-cluster"], STACK_IDS["0-apigw"], STACK_IDS["0-logging"]):
        assert synth["stacks"][stack_id]["errors"] == [], stack_id
        assert synth["stacks"][stack_id]["template"]["Resources"], stack_id


def _cli_synth(assembly: Path, stack_id: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", stack_id, "--app", str(assembly)]
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"}
    return subprocess.run(
        [*command, "--quiet", "--no-notices"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cdk_cli_refuses_only_the_stack_with_the_error(synth: dict[str, Any], tmp_path: Path) -> None:
    # cdk.json sets @aws-cdk/core:annotationsInValidationReport to false: with it on, one stack's error fails the
    # whole app's synthesis, and no stack of the region could be deployed.
    assert _cli_synth(synth["dir"], STACK_IDS["4-cluster"], tmp_path).returncode == 0
    refused = _cli_synth(synth["dir"], STACK_IDS["3"], tmp_path)
    assert refused.returncode == 1
    assert synth["stacks"][STACK_IDS["3"]]["errors"][0] in refused.stdout + refused.stderr


def test_a_text_model_profile_the_region_cannot_call_refuses_levels_1_and_2(tmp_path: Path) -> None:
    # Given eu-west-1 with the default us. text model, When Levels 1 and 2 are synthesized there
    found = _synthesize(tmp_path, "eu-west-1", [STACK_IDS["1"], STACK_IDS["2"]])["stacks"]
    # Then each is an empty stand-in with the text model's error; the account stack they need is built
    for stack_id in (STACK_IDS["1"], STACK_IDS["2"]):
        assert found[stack_id]["errors"] == [
            "config error: text_model_id = 'us.amazon.nova-micro-v1:0' is not allowed; expected a profile that can "
            "be called from region eu-west-1: the 'us.' profiles serve " + ", ".join(PROFILE_GEOGRAPHIES["us"])
        ], stack_id
        assert found[stack_id]["template"].get("Resources", {}) == {}, stack_id
    assert found[STACK_IDS["0-apigw"]]["errors"] == [] and found[STACK_IDS["0-apigw"]]["template"]["Resources"]


def test_levels_1_and_2_list_every_problem_of_the_region_at_once(tmp_path: Path) -> None:
    # Given sa-east-1, which neither the default us. text model profile nor any guardrail profile serves, with
    # guardrail_tier=standard: When Levels 1 and 2 are synthesized there
    found = _synthesize(tmp_path, "sa-east-1", [STACK_IDS["1"], STACK_IDS["2"]], guardrail_tier="standard")["stacks"]
    # Then each stand-in carries both errors, so one synth shows the operator everything to change
    for stack_id in (STACK_IDS["1"], STACK_IDS["2"]):
        keys = [error.split(" = ")[0] for error in found[stack_id]["errors"]]
        assert keys == ["config error: text_model_id", "config error: guardrail_tier"], stack_id
        assert found[stack_id]["template"].get("Resources", {}) == {}, stack_id


@pytest.mark.parametrize(
    ("model_id", "region", "refused"),
    [
        ("eu.amazon.nova-micro-v1:0", "us-east-1", True),
        ("us.amazon.nova-micro-v1:0", "us-west-1", False),
        ("global.anthropic.claude-sonnet-4-20250514-v1:0", "ap-south-1", False),
        ("amazon.nova-micro-v1:0", "eu-west-3", False),  # a model id: whether it is offered is Bedrock's answer
    ],
)
def test_a_profile_is_callable_from_its_geographys_regions_only(model_id: str, region: str, refused: bool) -> None:
    problems = profile_region_problems("text_model_id", parse_model_id("text_model_id", model_id), region)
    assert len(problems) == refused
    for problem in problems:
        assert problem.line().startswith(
            f"config error: text_model_id = {model_id!r} is not allowed; expected a profile that can be called "
            f"from region {region}: the 'eu.' profiles serve "
        )


def test_invocation_logging_is_refused_where_bedrock_has_no_endpoint(tmp_path: Path) -> None:
    import botocore.session

    # Given a region botocore lists no Bedrock endpoint in (the stack only calls Bedrock's API)
    region = "ap-east-1"
    assert region not in botocore.session.get_session().get_available_regions("bedrock")
    context = {**cdk_json_context(), "region": region, "invocation_logging": True}
    app, _ = build_app(context, outdir=str(tmp_path), nag=False, schema_validation=False, only=[STACK_IDS["0-logging"]])
    artifact = app.synth().get_stack_by_name(STACK_IDS["0-logging"])
    # Then the stack is refused, naming the key that added it
    assert artifact.template.get("Resources", {}) == {}
    assert [str(m.entry.data) for m in artifact.messages if str(m.level).endswith("ERROR")] == [
        f"config error: invocation_logging = true is not allowed; expected false in {region}, which has no Amazon "
        "Bedrock endpoint"
    ]


# ap-southeast-6: its layer request is still open; me-central-1: publishing stopped there in 2026 (python_function.py)
@pytest.mark.parametrize("region", ["ap-southeast-6", "me-central-1"])
def test_a_stack_with_kit_functions_is_refused_where_the_powertools_layer_is_not_published(
    tmp_path: Path, region: str
) -> None:
    from stacks.shared.python_function import POWERTOOLS_LAYER_REGIONS, POWERTOOLS_LAYERS_PAGE

    # Given a region the kit accepts but where Powertools publishes no layer
    assert region in registry_regions() and region not in POWERTOOLS_LAYER_REGIONS
    # When Level 4's jobs stack (one kit function) and its cluster stack (none) are synthesized for it
    stacks = _synthesize(tmp_path, region, [STACK_IDS["4-jobs"], STACK_IDS["4-cluster"]])["stacks"]
    # Then the jobs stack, which the region can otherwise hold, is refused for the layer alone, naming both
    assert stacks[STACK_IDS["4-jobs"]]["errors"] == [
        f"config error: region = '{region}' is not allowed; expected a region where Powertools for AWS Lambda (Python) "
        f"publishes the layer the functions of {STACK_IDS['4-jobs']} use ({POWERTOOLS_LAYERS_PAGE}); {region} has none"
    ]
    # And a stack without kit functions gets no such error (its own errors are for the types the region lacks)
    assert not any("Powertools" in error for error in stacks[STACK_IDS["4-cluster"]]["errors"])


def test_the_powertools_layer_regions_are_regions_the_kit_accepts() -> None:
    from stacks.shared.python_function import POWERTOOLS_LAYER_REGIONS

    kit_regions = set(registry_regions())
    assert POWERTOOLS_LAYER_REGIONS.issubset(kit_regions)
    assert kit_regions - POWERTOOLS_LAYER_REGIONS  # the regions it lacks are refused
    assert {"us-east-1", "us-west-2", "eu-central-1"} <= POWERTOOLS_LAYER_REGIONS
