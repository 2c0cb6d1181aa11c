"""Every literal the kit writes into a template satisfies its property's registry schema, and a config value
that would not stops synth with one line naming the key (stacks/shared/registry.py, app.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from stacks.shared.facts import STACK_IDS
from stacks.shared.regions import EMPTY_TEMPLATE_RULE
from stacks.shared.registry import SCHEMA_REGION, config_errors, create_only_paths, name_findings, resource_schema
from tests.conftest import ROOT, cdk_json_context


def test_no_variant_writes_a_value_its_schema_refuses(each_stage: Any) -> None:
    findings = name_findings(each_stage.templates, cdk_json_context())
    assert [f.message(cdk_json_context()) for f in findings] == []


def test_a_refused_value_is_traced_to_the_key_that_made_it() -> None:
    # Given a knowledge base named from the prefix and a guardrail tagged from the user's tags
    context = {"name_prefix": "ab--cd", "stage": "sandbox", "tags": {"owner": "a!b"}}
    templates = {
        "S": {
            "Resources": {
                "Kb": {"Type": "AWS::Bedrock::KnowledgeBase", "Properties": {"Name": "ab--cd-sandbox-kb"}},
                "G": {"Type": "AWS::Bedrock::Guardrail", "Properties": {"Tags": [{"Key": "owner", "Value": "a!b"}]}},
                "R": {"Type": "AWS::IAM::Role", "Properties": {"Tags": [{"Key": "owner", "Value": "a!b"}]}},
                "Long": {"Type": "AWS::Lambda::Function", "Properties": {"FunctionName": "f" * 65}},
            }
        }
    }
    # When the registry schemas judge them
    lines = config_errors(name_findings(templates, context), context)
    # Then each refused value names its key (the prefix, not the stage that is also in the name), once per key
    assert lines[0].startswith(
        "config error: name_prefix = 'ab--cd' is not allowed; it makes AWS::Bedrock::KnowledgeBase"
    )
    assert (
        lines[1].startswith('config error: tags = {"owner": "a!b"} is not allowed')
        and "(and 1 more places)" in lines[1]
    )
    where = "AWS::Lambda::Function FunctionName in S (Long)"
    assert lines[2].startswith(f"config error: {where} = {'f' * 65!r} is not allowed; expected a value matching ^(")
    assert len(lines) == 3


def test_create_only_properties_come_from_the_registry() -> None:
    assert ("VectorIngestionConfiguration", "ChunkingConfiguration") in create_only_paths("AWS::Bedrock::DataSource")
    assert ("Dimension",) in create_only_paths("AWS::S3Vectors::Index")
    assert create_only_paths("Custom::Anything") == ()


def test_app_refuses_a_prefix_bedrock_names_cannot_carry_before_synth(tmp_path: Path) -> None:
    """A prefix with "--" makes Bedrock names CloudFormation and the runtime APIs refuse: the configuration refuses
    it (one line naming the key, no stack trace, nothing synthesized). It used to pass the configuration, and
    CDK's template validation refused it at synth, which the app traced to the key (schema_violations)."""
    context = {**cdk_json_context(), "name_prefix": "ab--cd"}
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith("config error: name_prefix = 'ab--cd' is not allowed"), errors
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.template.json"))


def test_app_passes_cdk_validation_with_the_longest_prefix_and_a_refused_stack(tmp_path: Path) -> None:
    # Given the longest prefix the configuration takes, and a base model the region cannot customize, which refuses
    # the Level 3 stack alone (an empty stand-in with its errors)
    refused = STACK_IDS["3"]
    context = {
        **cdk_json_context(),
        "name_prefix": "a1b2c3d4e5f6g7h8i",
        "ft_base_model_id": "meta.llama3-1-8b-instruct-v1:0:128k",
    }
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    env.pop("CDK_VALIDATION")  # the suite turns CDK's template validation off (conftest); `cdk synth` has it on
    # When the app runs as `cdk synth` runs it: cdk.json's command, through the shell, with this interpreter
    app_command = json.loads((ROOT / "cdk.json").read_text())["app"].replace(".venv/bin/python", sys.executable)
    result = subprocess.run(
        ["/bin/sh", "-c", app_command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    # Then every value of the whole app passes the validation `cdk synth` runs (this is the suite's one run of it;
    # the variants are linted by cfn-lint instead)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert [v for plugin in report["pluginReports"] for v in plugin["violations"]] == []
    # And the refused stack's empty stand-in does not fail the app: only its empty template is acknowledged
    suppressed = [v for plugin in report["pluginReports"] for v in plugin.get("suppressedViolations", [])]
    assert [(v["acknowledgedId"], [c["constructPath"] for c in v["violatingConstructs"]]) for v in suppressed] == [
        (EMPTY_TEMPLATE_RULE, [refused])
    ]
    # And the refused stack's config error carries no jsii stack trace (the CLI would print its top frame, a
    # line like ../tmpXXXX/lib/program.js:1:5591, above the error): cdk.json's command disables the traces
    metadata = json.loads((tmp_path / f"{refused}.metadata.json").read_text())
    errors = [entry for entries in metadata.values() for entry in entries if entry["type"] == "aws:cdk:error"]
    assert errors and all("trace" not in entry for entry in errors), errors


def test_app_traces_a_value_a_schema_refuses_to_its_key(tmp_path: Path) -> None:
    """The app's backstop for a value the configuration lets through and a registry schema refuses
    (app.schema_violations, run when CDK's validation fails at synth): one line naming the key."""
    import aws_cdk as cdk

    from app import schema_violations

    bad = {"Resources": {"Kb": {"Type": "AWS::Bedrock::KnowledgeBase", "Properties": {"Name": "ab--cd-sandbox-kb"}}}}
    (tmp_path / "GenAiKit-2-Rag.template.json").write_text(json.dumps(bad))
    app = cdk.App(outdir=str(tmp_path), context={"name_prefix": "ab--cd", "stage": "sandbox"})
    [line] = schema_violations(app)
    assert line.startswith("config error: name_prefix = 'ab--cd' is not allowed; it makes AWS::Bedrock::KnowledgeBase")


def test_the_kit_reads_the_registry_schemas_as_cfn_lint_does(sandbox: Any, prod_extremes: Any) -> None:
    """stacks/shared/registry.py reads cfn-lint's bundled schemas without importing cfn-lint: the same schema,
    for every type the kit synthesizes."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    types = {
        resource["Type"]
        for synth in (sandbox, prod_extremes)
        for template in synth.templates.values()
        for resource in template.get("Resources", {}).values()
        if resource["Type"].startswith("AWS::")
    }
    assert len(types) > 30
    for resource_type in sorted(types):
        expected = PROVIDER_SCHEMA_MANAGER.get_resource_schema(SCHEMA_REGION, resource_type).schema
        assert resource_schema(resource_type) == expected, resource_type
    assert resource_schema("AWS::No::Such") is None and resource_schema("Custom::Thing") is None


def test_app_names_the_key_when_the_cli_runs_a_validation_that_fails(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    """Run by the CDK CLI (app mode "process"), a failed template validation does not raise in the app: the CLI
    prints CDK's report, which names construct paths, not keys. The app reads the report and names the key."""
    import aws_cdk as cdk

    import app as kit_app

    context = {
        "@aws-cdk/core:appMode": "process",  # what the CLI's environment sets (CDK_APP_MODE)
        "@aws-cdk/core:validateAgainstDefaultRules": True,  # cdk.json sets it too
        "name_prefix": "ab--cd",
        "stage": "sandbox",
    }
    app = cdk.App(outdir=str(tmp_path), context=context)
    # The kit's registered engine: the suite turns CDK's built-in one off (CDK_VALIDATION, conftest).
    cdk.Validations.of(app).add_plugins(kit_app._template_validation())
    stack = cdk.Stack(app, "GenAiKit-2-Rag")
    cdk.CfnResource(stack, "Kb", type="AWS::Bedrock::KnowledgeBase", properties={"Name": "ab--cd-sandbox-kb"})
    monkeypatch.setattr(kit_app, "build_app", lambda: (app, None))
    assert kit_app.main() == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("config error:")]
    assert line.startswith("config error: name_prefix = 'ab--cd' is not allowed; it makes AWS::Bedrock::KnowledgeBase")
    assert kit_app.validation_failed(tmp_path)
    # A report an earlier run left in the folder is not this synth's
    report = tmp_path / "validation-report.json"
    os.utime(report, (report.stat().st_atime, report.stat().st_mtime - 60))
    assert not kit_app.validation_failed(tmp_path, since=report.stat().st_mtime + 30)
