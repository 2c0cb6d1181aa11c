"""The opt-in account-level invocation-logging stack."""

from __future__ import annotations

import fnmatch
import json
from types import SimpleNamespace
from typing import Any

from tests.infra.helpers import created_before, only, render, resources, statements

STACK = "GenAiKit-0-InvocationLogging"


def test_it_is_opt_in(sandbox: Any, sandbox_fsx: Any) -> None:
    assert STACK not in sandbox.templates
    assert STACK in sandbox_fsx.templates


def test_custom_resource_points_bedrock_at_the_stacks_log_group_bucket_and_role(sandbox_fsx: Any) -> None:
    template = sandbox_fsx.templates[STACK]
    _, setting = only(template, "Custom::BedrockInvocationLogging")
    props = setting["Properties"]
    log_group_id, log_group = next(
        (k, v) for k, v in resources(template, "AWS::Logs::LogGroup").items() if k.startswith("InvocationLogs")
    )
    assert props["LogGroupName"] == {"Ref": log_group_id}
    assert log_group["Properties"]["RetentionInDays"] == sandbox_fsx.config.log_retention_days
    bucket_id = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("InvocationsBucket"))
    assert props["BucketName"] == {"Ref": bucket_id}
    assert bucket_id in setting["DependsOn"]
    manager = next(
        k
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "invocation_logging.handler.handler"
    )
    assert props["ServiceToken"] == {"Fn::GetAtt": [manager, "Arn"]}


def test_bedrock_may_deliver_only_from_this_account(sandbox_fsx: Any) -> None:
    template = sandbox_fsx.templates[STACK]
    [policy] = [
        v for k, v in resources(template, "AWS::S3::BucketPolicy").items() if k.startswith("InvocationsBucketPolicy")
    ]
    [grant] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "BedrockDelivers"]
    assert grant["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert grant["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    roles = [
        v["Properties"]
        for v in resources(template, "AWS::IAM::Role").values()
        if v["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "bedrock.amazonaws.com"}
    ]
    [delivery] = roles
    trust = delivery["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert render(trust["ArnLike"]["aws:SourceArn"]).startswith("arn:aws:bedrock:us-east-1:")


def test_the_manager_may_only_manage_the_setting_and_pass_roles_to_bedrock(sandbox_fsx: Any) -> None:
    template = sandbox_fsx.templates[STACK]
    by_sid = {s.get("Sid"): s for _, s in statements(template)}
    assert sorted(by_sid["ManageInvocationLogging"]["Action"]) == [
        "bedrock:DeleteModelInvocationLoggingConfiguration",
        "bedrock:GetModelInvocationLoggingConfiguration",
        "bedrock:PutModelInvocationLoggingConfiguration",
    ]
    passing = [s for _, s in statements(template) if "iam:PassRole" in _listed(s["Action"])]
    assert passing and all(
        s["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}} for s in passing
    )
    assert render(by_sid["RememberPreviousSetting"]["Resource"]).endswith("/kit-state/*")
    # Listing only under the state prefix: the bucket also holds every logged prompt and answer (invocations/).
    assert by_sid["FindPreviousSetting"]["Action"] == "s3:ListBucket"
    assert by_sid["FindPreviousSetting"]["Condition"] == {"StringLike": {"s3:prefix": ["kit-state/*"]}}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _manager_passes_to_bedrock(template: dict[str, Any], role_arn: str) -> bool:
    """Whether the manager's policy lets it pass ``role_arn`` to Bedrock (resources matched as IAM does: ``*``
    matches any characters, ``/`` included)."""
    manager = next(
        k
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "invocation_logging.handler.handler"
    )
    manager_role = template["Resources"][manager]["Properties"]["Role"]["Fn::GetAtt"][0]
    account = {"${AWS::AccountId}": "123456789012", "${AWS::Partition}": "aws"}
    for logical_id, statement in statements(template):
        policy = template["Resources"][logical_id]["Properties"]
        if {"Ref": manager_role} not in policy.get("Roles", []) or statement["Effect"] != "Allow":
            continue
        if "iam:PassRole" not in _listed(statement["Action"]):
            continue
        if statement.get("Condition") != {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}:
            continue
        for resource in _listed(statement["Resource"]):
            pattern = render(resource)
            for token, value in account.items():
                pattern = pattern.replace(token, value)
            if fnmatch.fnmatchcase(role_arn, pattern):
                return True
    return False


def test_the_manager_may_pass_the_role_of_the_setting_it_restores(sandbox_fsx: Any) -> None:
    # Before: it could pass only the kit's delivery role, so on delete the put restoring an earlier setting that
    # logged to CloudWatch (whose roleArn is required: botocore bedrock CloudWatchConfig) was refused on
    # iam:PassRole, and the account's setting kept naming the kit's deleted role and log group.
    template = sandbox_fsx.templates[STACK]
    assert _manager_passes_to_bedrock(template, "arn:aws:iam::123456789012:role/org-bedrock-logging")
    assert _manager_passes_to_bedrock(template, "arn:aws:iam::123456789012:role/service-role/org-logging")
    assert not _manager_passes_to_bedrock(template, "arn:aws:iam::999999999999:role/org-bedrock-logging")


def test_cloudformation_gets_an_answer_within_minutes_even_from_a_silent_function(sandbox_fsx: Any) -> None:
    # Before: no ServiceTimeout, so a function that never answered held the stack for CloudFormation's default
    # hour, on delete too; the function's timeout now leaves room for every bounded call plus the answer.
    from invocation_logging import handler as h

    template = sandbox_fsx.templates[STACK]
    _, setting = only(template, "Custom::BedrockInvocationLogging")
    function = template["Resources"][setting["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]["Properties"]
    assert function["Timeout"] >= h.CALLS_PER_REQUEST * h.CALL_BUDGET_S + h.ANSWER_RESERVE_S
    assert function["Timeout"] < int(setting["Properties"]["ServiceTimeout"]) <= 600


def test_the_bucket_is_published_where_level_3_reads_it(sandbox_fsx: Any) -> None:
    """Level 3 distills from the invocation logs (ft_distillation_source=invocation-logs) and resolves the bucket
    from this SSM parameter at deploy time; the bucket policy lets Bedrock write under the prefix Level 3 reads."""
    from stacks.shared.facts import INVOCATION_LOGS_BUCKET_PARAMETER, INVOCATION_LOGS_PREFIX

    template = sandbox_fsx.templates[STACK]
    _, parameter = only(template, "AWS::SSM::Parameter")
    bucket_id = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("InvocationsBucket"))
    assert parameter["Properties"]["Name"] == INVOCATION_LOGS_BUCKET_PARAMETER
    # The name earlier versions gave it with the default prefix (/<name_prefix>/...): the parameter's Name is
    # create-only, and a Level 3 deployed before the logging stack reads it by name, so a default deployment's upgrade
    # must not rename it.
    from tests.conftest import cdk_json_context

    earlier = f"/{cdk_json_context()['name_prefix']}/bedrock/invocation-logs-bucket"
    assert parameter["Properties"]["Name"] == earlier
    assert parameter["Properties"]["Value"] == {"Ref": bucket_id}
    policy = next(
        v
        for v in resources(template, "AWS::S3::BucketPolicy").values()
        if v["Properties"]["Bucket"] == {"Ref": bucket_id}
    )
    written = [
        render(resource)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement.get("Principal") == {"Service": "bedrock.amazonaws.com"}
        for resource in ([statement["Resource"]] if isinstance(statement["Resource"], dict) else statement["Resource"])
    ]
    assert any(resource.endswith(f"/{INVOCATION_LOGS_PREFIX}*") for resource in written), written


# One setting per account and region (model-invocation-logging.html, "all calls performed in your account in a
# Region"; API Gateway's account settings likewise): a stack holding one must be the same stack in every stage,
# or a second stage's copy fights the first over the setting (and collides on its fixed names).
ACCOUNT_SETTINGS = ("Custom::BedrockInvocationLogging", "AWS::ApiGateway::Account")


def test_a_stack_holding_an_account_setting_is_one_stack_whatever_the_stage(
    sandbox: Any, prod: Any, sandbox_fsx: Any, prod_extremes: Any
) -> None:
    names: dict[str, set[str]] = {}
    for synth in (sandbox, prod, sandbox_fsx, prod_extremes):
        for stack_id, template in synth.templates.items():
            if any(resources(template, kind) for kind in ACCOUNT_SETTINGS):
                names.setdefault(stack_id, set()).add(synth.stacks[stack_id].stack_name)
    assert names == {STACK: {STACK}, "GenAiKit-0-ApiGatewayAccount": {"GenAiKit-0-ApiGatewayAccount"}}
    assert {sandbox_fsx.config.stage, prod_extremes.config.stage} == {"sandbox", "prod"}


def ssm_order_findings(synth_stacks: dict[str, Any], templates: dict[str, dict[str, Any]]) -> list[str]:
    """Stacks that read, through an SSM parameter type, a parameter another stack of the app creates, without
    depending on that stack. CloudFormation resolves such a parameter from "existing parameters in Parameter
    Store" (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-supplied-parameter-types.html),
    so the creating stack has to be deployed first: `cdk deploy` orders stacks by their dependencies only."""
    created = {
        props["Name"]: stack_id
        for stack_id, template in templates.items()
        for props in (r.get("Properties", {}) for r in resources(template, "AWS::SSM::Parameter").values())
        if isinstance(props.get("Name"), str)
    }
    found = []
    for stack_id, template in templates.items():
        depends = {dependency.node.id for dependency in synth_stacks[stack_id].dependencies}
        for name, parameter in template.get("Parameters", {}).items():
            owner = created.get(parameter.get("Default", ""))
            ssm_typed = str(parameter.get("Type", "")).startswith("AWS::SSM::Parameter::Value")
            if ssm_typed and owner and owner != stack_id and owner not in depends:
                found.append(f"{stack_id}.{name} reads {parameter['Default']} from {owner} without depending on it")
    return found


def test_a_stack_reading_the_logging_stacks_parameter_is_deployed_after_it(tmp_path: Any) -> None:
    import aws_cdk as cdk

    from app import build_app
    from stacks.shared.facts import STACK_IDS
    from tests.conftest import cdk_json_context

    context = {**cdk_json_context(), "invocation_logging": True, "ft_distillation_source": "invocation-logs"}
    wanted = [STACK_IDS["3"], STACK_IDS["0-logging"]]
    app, _ = build_app(context, outdir=str(tmp_path), nag=False, schema_validation=False, only=wanted)
    assembly = app.synth()
    stacks = {child.node.id: child for child in app.node.children if isinstance(child, cdk.Stack)}
    templates = {stack_id: assembly.get_stack_artifact(s.artifact_id).template for stack_id, s in stacks.items()}
    reads = [p for p in templates[STACK_IDS["3"]].get("Parameters", {}).values() if "SSM" in str(p.get("Type"))]
    assert any(p["Default"] in json.dumps(templates[STACK]) for p in reads)  # the case the guard is for
    assert ssm_order_findings(stacks, templates) == []
    # Canary: without the dependency the read is found (no variant of the shared synths reads the parameter, so
    # this app is where the guard runs)
    unordered = {stack_id: SimpleNamespace(dependencies=[]) for stack_id in stacks}
    assert [finding.split(" reads ")[0].split(".")[0] for finding in ssm_order_findings(unordered, templates)] == [
        STACK_IDS["3"]
    ]


def test_the_logged_calls_expire_with_the_log_retention_and_the_saved_setting_stays(sandbox_fsx: Any) -> None:
    from stacks.level0_account.invocation_logging import LARGE_DATA_PREFIX, STATE_PREFIX
    from stacks.shared.facts import INVOCATION_LOGS_PREFIX

    template = sandbox_fsx.templates[STACK]
    [bucket] = [v for k, v in resources(template, "AWS::S3::Bucket").items() if k.startswith("InvocationsBucket")]
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = {rule["Prefix"]: rule["ExpirationInDays"] for rule in rules if "ExpirationInDays" in rule}
    days = sandbox_fsx.config.log_retention_days
    # Both prefixes Bedrock writes to expire after the stage's retention, and no rule without a prefix expires
    # objects (that would delete the setting saved under kit-state/)
    assert expiring == {INVOCATION_LOGS_PREFIX: days, LARGE_DATA_PREFIX: days}
    assert not STATE_PREFIX.startswith(tuple(expiring))
    assert all("Prefix" in rule for rule in rules if "ExpirationInDays" in rule)


def _needs(resource: dict[str, Any], ids: set[str]) -> set[str]:
    """The resources CloudFormation creates and updates before ``resource``: its DependsOn and its Ref/GetAtt
    targets (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-dependson.html)."""
    found = set(resource.get("DependsOn", []))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("Ref"), str):
                found.add(value["Ref"])
            if "Fn::GetAtt" in value:
                target = value["Fn::GetAtt"]
                found.add(target[0] if isinstance(target, list) else str(target).split(".")[0])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(resource.get("Properties", {}))
    return found & ids


def _before(template: dict[str, Any], start: str) -> set[str]:
    ids = set(template["Resources"])
    seen: set[str] = set()
    todo = [start]
    while todo:
        for needed in _needs(template["Resources"][todo.pop()], ids) - seen:
            seen.add(needed)
            todo.append(needed)
    return seen


def test_the_stage_lock_is_updated_before_every_other_resource(sandbox_fsx: Any, prod_extremes: Any) -> None:
    """A deploy from another stage fails at the lock (lambdas/level0_account/stage_lock) while nothing else of the
    stack has changed yet: every resource waits for the lock, and the lock waits only for its own function."""
    for synth in (sandbox_fsx, prod_extremes):
        template = synth.templates[STACK]
        lock_id, lock = only(template, "Custom::KitStageLock")
        assert lock["Properties"]["Stage"] == synth.config.stage
        assert lock["Properties"]["StackName"] == STACK
        own = _before(template, lock_id)
        # the lock's function, role, policy and log group: logical ids of the StageLock construct's children
        assert own and all(r.startswith("StageLockFunction") for r in own), own
        rest = set(template["Resources"]) - own - {lock_id}
        waiting = {r for r in rest if lock_id in _before(template, r)}
        assert rest - waiting <= {"CDKMetadata"}  # analytics metadata, where the app adds it
        assert {"InvocationLogging", *resources(template, "AWS::S3::Bucket")} <= waiting


def test_the_lock_runs_the_stage_lock_handler(sandbox_fsx: Any) -> None:
    template = sandbox_fsx.templates[STACK]
    _, lock = only(template, "Custom::KitStageLock")
    function = template["Resources"][lock["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]
    assert function["Properties"]["Handler"] == "stage_lock.handler.handler"


def test_the_setting_is_created_after_every_other_resource_of_the_stack(sandbox_fsx: Any) -> None:
    """A sibling that fails while the manager's create runs (the fixed-name SSM parameter, an access-log bucket's
    policy) would make CloudFormation cancel that create and send its Delete at once; the Delete found no kit setting
    and the cancelled create then put one naming what the rollback deletes. Created last, nothing can fail beside it."""
    template = sandbox_fsx.templates[STACK]
    [setting_id] = [k for k, v in template["Resources"].items() if v["Type"] == "Custom::BedrockInvocationLogging"]
    assert created_before(template, setting_id) == set(template["Resources"]) - {setting_id}


def test_the_locks_recovery_options_are_what_puts_the_stack_in_the_app(sandbox: Any, sandbox_fsx: Any) -> None:
    """The stage lock's refusal names commands with these options (lambdas/level0_account/stage_lock): cdk.json
    leaves the stack out, so a command without them finds no stack to deploy or destroy."""
    import json

    from tests.conftest import ROOT

    _, lock = only(sandbox_fsx.templates[STACK], "Custom::KitStageLock")
    flag, assignment = lock["Properties"]["Options"].split(" ", 1)
    key, value = assignment.split("=", 1)
    assert flag == "-c" and value == "true"
    assert json.loads((ROOT / "cdk.json").read_text())["context"][key] is False
    assert STACK not in sandbox.templates  # the default app has no such stack
    # And it is this option that adds the stack (another false key of cdk.json, e.g. tj_spot, would not)
    from app import build_app
    from tests.conftest import cdk_json_context

    app, _ = build_app({**cdk_json_context(), key: value}, nag=False, schema_validation=False)
    assert STACK in {child.node.id for child in app.node.children}
