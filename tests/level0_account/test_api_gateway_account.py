"""API Gateway's CloudWatch Logs role: one per account and region, set by one stack, removed with it."""

from __future__ import annotations

from typing import Any

from tests.conftest import masked_json
from tests.infra.helpers import resources

STACK = "GenAiKit-0-ApiGatewayAccount"


def test_only_the_account_stack_sets_the_account_setting(each_stage: Any) -> None:
    owners = [stack_id for stack_id, t in each_stage.templates.items() if resources(t, "AWS::ApiGateway::Account")]
    assert owners == [STACK]
    for stack_id, template in each_stage.templates.items():
        if stack_id == STACK:
            continue
        for role in resources(template, "AWS::IAM::Role").values():
            principals = str(role["Properties"]["AssumeRolePolicyDocument"])
            assert "apigateway.amazonaws.com" not in principals, f"{stack_id} makes its own API Gateway role"


def test_the_role_goes_with_the_stack_and_no_role_is_retained(each_stage: Any) -> None:
    account = each_stage.templates[STACK]["Resources"]
    (role,) = resources(each_stage.templates[STACK], "AWS::IAM::Role").values()
    assert role.get("DeletionPolicy", "Delete") == "Delete"
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in str(role["Properties"]["ManagedPolicyArns"])
    (setting,) = resources(each_stage.templates[STACK], "AWS::ApiGateway::Account").values()
    role_id = next(lid for lid, r in account.items() if r["Type"] == "AWS::IAM::Role")
    assert setting["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    for stack_id, template in each_stage.templates.items():  # a destroyed kit leaves no role behind
        for lid, resource in resources(template, "AWS::IAM::Role").items():
            assert resource.get("DeletionPolicy", "Delete") == "Delete", f"{stack_id}/{lid} is retained"


def test_every_stage_and_prefix_shares_one_account_stack(sandbox: Any, prod: Any, prod_extremes: Any) -> None:
    # The stack name carries no stage and the template depends on no setting, so every deploy updates one stack.
    names = {s.stacks[STACK].stack_name for s in (sandbox, prod, prod_extremes)}
    assert names == {STACK}
    assert masked_json(sandbox.templates[STACK]) == masked_json(prod.templates[STACK])
    assert masked_json(sandbox.templates[STACK]) == masked_json(prod_extremes.templates[STACK])


def test_api_stacks_deploy_after_the_account_setting(sandbox: Any) -> None:
    for stack_id in ("GenAiKit-1-Prompt", "GenAiKit-2-Rag"):
        depends_on = {d.node.id for d in sandbox.stacks[stack_id].dependencies}
        assert STACK in depends_on


def test_no_stage_can_delete_the_role_another_stages_api_logs_through(each_stage: Any) -> None:
    """Every API stack imports the account stack's role export, and CloudFormation refuses to delete a stack whose
    export another stack imports (Fn::ImportValue reference). Before: a sandbox `cdk destroy --all` deleted the role
    while prod's Level 1 or 2 still logged through it, and their logs stopped without an error."""
    from stacks.level0_account.api_gateway_account import ROLE_EXPORT

    outputs = each_stage.templates[STACK]["Outputs"]
    exported = [o for o in outputs.values() if o.get("Export", {}).get("Name") == ROLE_EXPORT]
    role_id = next(iter(resources(each_stage.templates[STACK], "AWS::IAM::Role")))
    assert [o["Value"] for o in exported] == [{"Fn::GetAtt": [role_id, "Arn"]}]
    apis = [s for s, t in each_stage.templates.items() if resources(t, "AWS::ApiGateway::RestApi")]
    assert sorted(apis) == ["GenAiKit-1-Prompt", "GenAiKit-2-Rag"]
    for stack_id in apis:
        imports = [o["Value"] for o in each_stage.templates[stack_id].get("Outputs", {}).values()]
        assert {"Fn::ImportValue": ROLE_EXPORT} in imports, stack_id


def test_the_docs_name_the_export_that_guards_the_role() -> None:
    from stacks.level0_account.api_gateway_account import ROLE_EXPORT
    from tests.conftest import ROOT

    assert f"`{ROLE_EXPORT}`" in (ROOT / "docs" / "level-0-account.md").read_text()
