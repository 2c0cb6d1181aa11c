"""Hard quotas a deploy would hit, checked on every synthesized variant with room to spare.

Values CloudFormation resolves at deploy time are counted at their longest: an ARN at 200 characters, a name or id at
128 (CloudFormation's generated physical names stay shorter), the pseudo parameters at their longest real values.
- CloudFormation: 500 resources, 200 outputs, 200 parameters per stack; a template read from S3 at most 1 MB
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html).
- IAM: a role's inline policies together at most 10,240 characters, white space not counted
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html). CDK writes a role's grants as
  inline AWS::IAM::Policy resources, so a role that gathers many grants is the one to watch.
- Lambda: a function's environment variables at most 4 KB in all
  (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.infra.helpers import as_list

ARN_LENGTH, NAME_LENGTH = 200, 128
LONGEST_PSEUDO = {
    "AWS::Partition": "aws-iso-b",
    "AWS::Region": "ap-southeast-7",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com.cn",
    "AWS::StackName": "x" * 128,
    "AWS::StackId": "x" * 200,
}


def resolved_length(value: Any) -> int:
    """The length of ``value`` as compact JSON once CloudFormation has resolved it (intrinsics at their longest)."""
    if isinstance(value, dict) and len(value) == 1:
        [(function, argument)] = value.items()
        if function == "Ref":
            return len(LONGEST_PSEUDO.get(argument, "x" * max(NAME_LENGTH, ARN_LENGTH))) + 2
        if function == "Fn::GetAtt":
            return (ARN_LENGTH if str(argument[1]).endswith("Arn") else NAME_LENGTH) + 2
        if function == "Fn::Join":
            separator, parts = argument
            inner = sum(resolved_length(part) - 2 for part in parts)  # each part without its quotes
            return inner + len(separator) * max(len(parts) - 1, 0) + 2
        if function.startswith("Fn::"):
            return ARN_LENGTH + 2
    if isinstance(value, dict):
        return 2 + sum(len(json.dumps(k)) + 1 + resolved_length(v) + 1 for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(resolved_length(item) + 1 for item in value)
    return len(json.dumps(value, separators=(",", ":")))


def quota_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    for stack_id, template in templates.items():
        resources = template.get("Resources", {})
        for section, limit in (("Resources", 500), ("Outputs", 200), ("Parameters", 200)):
            if len(template.get(section, {})) > limit:
                found.append(f"{stack_id}: {len(template[section])} {section.lower()} (CloudFormation allows {limit})")
        size = len(json.dumps(template, separators=(",", ":")).encode())
        if size > 1_000_000:
            found.append(f"{stack_id}: the template is {size} bytes (CloudFormation reads at most 1 MB from S3)")
        inline: Counter[str] = Counter()
        for logical_id, resource in resources.items():
            properties = resource.get("Properties", {})
            if resource["Type"] == "AWS::IAM::Role":
                for policy in properties.get("Policies", []):
                    inline[logical_id] += resolved_length(policy["PolicyDocument"])
            if resource["Type"] == "AWS::IAM::Policy":
                for role in as_list(properties.get("Roles", [])):
                    if isinstance(role, dict) and "Ref" in role:
                        inline[role["Ref"]] += resolved_length(properties["PolicyDocument"])
            if resource["Type"] == "AWS::Lambda::Function":
                variables = properties.get("Environment", {}).get("Variables", {})
                env = sum(len(key) + resolved_length(value) - 2 for key, value in variables.items())
                if env > 4096:
                    found.append(f"{stack_id}/{logical_id}: environment of about {env} bytes (Lambda allows 4 KB)")
        for role, length in inline.items():
            if length > 10_240:
                found.append(f"{stack_id}/{role}: inline policies of up to {length} characters (IAM allows 10,240)")
    return found


def test_no_stack_nears_a_hard_quota(each_stage: Any) -> None:
    assert quota_findings(each_stage.templates) == []


def test_the_quota_guard_counts_a_role_with_too_many_grants() -> None:
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::GetAtt": ["Bucket", "Arn"]}}
    policy = {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "Role"}], "PolicyDocument": {}}}
    policy["Properties"]["PolicyDocument"] = {"Statement": [statement] * 40}  # 40 ARNs of up to 200 characters
    function = {"Type": "AWS::Lambda::Function", "Properties": {"Environment": {"Variables": {"A": "x" * 4100}}}}
    template = {"Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": {}}, "P": policy, "F": function}}
    found = quota_findings({"S": template})
    assert [line.split(":", 1)[0] for line in found] == ["S/F", "S/Role"]
    assert resolved_length({"Fn::GetAtt": ["Bucket", "Arn"]}) == ARN_LENGTH + 2


def test_synth_refuses_a_template_larger_than_cloudformation_reads(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ten prompt templates at the loader's 100,000 characters each made a Level 1 template of about
    1.04 MB; synth said nothing and CloudFormation refused the deploy. The check reads the file synth wrote (what
    `cdk deploy` uploads, indented), not compact JSON."""
    import app as app_module
    from stacks.shared.facts import STACK_IDS
    from tests.conftest import cdk_json_context

    built, _ = app_module.build_app(
        cdk_json_context(), outdir=str(tmp_path), nag=False, schema_validation=False, only=[STACK_IDS["1"]]
    )
    assembly = built.synth()
    sizes = {s.stack_name: (tmp_path / s.template_file).stat().st_size for s in assembly.stacks}
    written = max(sizes.values())
    [largest] = [name for name, size in sizes.items() if size == written]
    assert largest.startswith(STACK_IDS["1"])  # the prompts' stack, beside the account stack it needs
    assert app_module.oversized_templates(assembly) == []  # the kit's own prompts fit
    assert app_module.oversized_templates(assembly, quota=written) == []
    [line] = app_module.oversized_templates(assembly, quota=written - 1)
    assert line.startswith(f"config error: the {largest} template = '{written:,} bytes' is not allowed")
    assert "prompts/*.json" in line and "`tags`" in line
    # main() prints those lines and exits 1, with no stack trace
    monkeypatch.setattr(app_module, "build_app", lambda: (built, None))
    monkeypatch.setattr(app_module, "oversized_templates", lambda made: [line] if made is not None else [])
    assert app_module.main() == 1
    assert capsys.readouterr().err == line + "\n"
