"""`cdk synth` validates every template with CDK's CloudFormation validation engine, registered by app.py without
the CDK's default Rego rules (their engine costs about a second of every synth; BENCHMARKS.md). Both properties
that makes safe are checked here: what the rules left out cover, read from the installed aws-cdk-lib, is nothing
the kit synthesizes, and the engine registered still refuses a template its resource schemas refuse."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

RULES_FOLDER = "package/core/lib/validation/rules/"


def _default_rules() -> dict[str, str]:
    """The Rego rules the installed aws-cdk-lib registers by default (CloudFormationValidatePlugin's
    includeDefaultRules), read from the package jsii loads."""
    folder = Path(cdk.__file__).parent / "_jsii"
    [bundle] = folder.glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(bundle) as tar:
        members = [m for m in tar if m.name.startswith(RULES_FOLDER) and m.name.endswith(".rego")]
        return {m.name.removeprefix(RULES_FOLDER): tar.extractfile(m).read().decode() for m in members}  # type: ignore[union-attr]


def test_the_default_rules_left_out_concern_no_type_the_kit_synthesizes(sandbox: Any, prod_extremes: Any) -> None:
    rules = _default_rules()
    assert rules, "aws-cdk-lib ships no default Rego rules any more: app.py's include_default_rules=False can go"
    kit_types = {
        resource["Type"]
        for synth in (sandbox, prod_extremes)
        for template in synth.templates.values()
        for resource in template.get("Resources", {}).values()
    }
    for name, text in rules.items():
        # A rule that names no resource type may apply to any template: decide again whether to leave it out.
        types = set(re.findall(r'"(AWS::[A-Za-z0-9]+::[A-Za-z0-9]+)"', text))
        assert types, f"{name} names no resource type"
        assert not types & kit_types, f"{name} checks {sorted(types & kit_types)}, which the kit synthesizes"


def test_the_registered_engine_still_refuses_a_value_its_schema_refuses(tmp_path: Path) -> None:
    from app import _template_validation

    # Given a knowledge base name its registry schema refuses (a space; the pattern is ^([0-9a-zA-Z][_-]?){1,100}$)
    app = cdk.App(outdir=str(tmp_path), context={"@aws-cdk/core:validateAgainstDefaultRules": True})
    stack = cdk.Stack(app, "S")
    cdk.CfnResource(stack, "Kb", type="AWS::Bedrock::KnowledgeBase", properties={"Name": "not a name"})
    cdk.Validations.of(app).add_plugins(_template_validation())
    # When it is synthesized with the engine app.py registers (the suite turns the CDK's own default off)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    # Then the report names the property
    report = (tmp_path / "validation-report.json").read_text()
    assert "Name" in report and "CloudFormation Validate" in report
