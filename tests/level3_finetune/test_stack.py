"""Level 3 stack: buckets, key, the Bedrock customization role, the validator, rules and notifications.

The state machine's paths are proven in test_level3_paths.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stacks.config import ConfigError
from stacks.level3_finetune.names import DATASETS_PREFIX, JOB_TAG_KEY, OUTPUT_PREFIX, PipelineNames
from stacks.shared.registry import resource_schema
from tests.cleanup_helpers import called_actions
from tests.infra.helpers import DEFAULT_PROJECT, as_list, only, render, resources, statements
from tests.infra.test_config import build

STACK = "GenAiKit-3-FineTune"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(sandbox: Any) -> dict[str, Any]:
    return sandbox.templates[STACK]


def _role_statements(template: dict[str, Any], role_id: str) -> dict[str, dict[str, Any]]:
    policies = {
        k for k, v in resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    }
    return {s.get("Sid", f"#{i}"): s for i, (p, s) in enumerate(statements(template)) if p in policies}


def _customization_role(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for logical_id, role in resources(template, "AWS::IAM::Role").items():
        principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        if principal == {"Service": "bedrock.amazonaws.com"}:
            return logical_id, role["Properties"]
    raise AssertionError("no role trusted by bedrock.amazonaws.com")


def _pipeline(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The fine-tuning state machine (the other one is the teardown after timeouts and aborts)."""
    [found] = [
        (k, v) for k, v in resources(template, "AWS::StepFunctions::StateMachine").items() if k.startswith("Pipeline")
    ]
    return found


def _bucket_id(template: dict[str, Any], prefix: str) -> str:
    return next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith(prefix))


def test_customization_role_trusts_bedrock_only_for_this_accounts_customization_jobs(template: dict[str, Any]) -> None:
    _, role = _customization_role(template)
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert render(trust["Condition"]["ArnLike"]["aws:SourceArn"]) == (
        "arn:aws:bedrock:us-east-1:${AWS::AccountId}:model-customization-job/*"
    )


def test_customization_role_reads_datasets_writes_output_and_uses_the_key_only(template: dict[str, Any]) -> None:
    role_id, _ = _customization_role(template)
    granted = _role_statements(template, role_id)
    data, output = _bucket_id(template, "FineTuneDataBucket"), _bucket_id(template, "FineTuneDataOutputBucket")
    key_id, _ = only(template, "AWS::KMS::Key")
    assert set(granted) == {
        "ReadDatasets",
        "ListBuckets",
        "WriteOutput",
        "UseKey",
        "GrantKeyForCustomModel",
        "InvokeTeachers",
        "InvokeRewardFunction",
    }
    assert granted["ReadDatasets"]["Action"] == "s3:GetObject"
    assert render(granted["ReadDatasets"]["Resource"]) == f"${{{data}.Arn}}/{DATASETS_PREFIX}*"
    assert sorted(granted["WriteOutput"]["Action"]) == ["s3:GetObject", "s3:PutObject"]
    assert render(granted["WriteOutput"]["Resource"]) == f"${{{output}.Arn}}/{OUTPUT_PREFIX}*"
    assert granted["UseKey"]["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert sorted(granted["UseKey"]["Action"]) == ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]
    # Bedrock may create the custom model's grant as this role or as the caller (encryption-custom-job.html does not
    # say which): both may, only through Bedrock
    grant = granted["GrantKeyForCustomModel"]
    assert (grant["Action"], grant["Resource"]) == ("kms:CreateGrant", {"Fn::GetAtt": [key_id, "Arn"]})
    assert grant["Condition"] == {"StringEquals": {"kms:ViaService": "bedrock.us-east-1.amazonaws.com"}}


def test_the_teachers_a_run_may_name_are_the_ones_the_customization_role_may_invoke(
    sandbox: Any, template: dict[str, Any]
) -> None:
    """The validator refuses a run's teacher outside ft.invocable_teachers; each of them is granted here."""
    ft = sandbox.config.finetune
    granted = _role_statements(template, _customization_role(template)[0])["InvokeTeachers"]
    arns = {render(arn) for arn in as_list(granted["Resource"])}
    teachers = {f"arn:aws:bedrock:us-east-1::foundation-model/{model}" for model in ft.invocable_teachers}
    assert arns == teachers | {DEFAULT_PROJECT}
    # A cross-Region profile is invocable only as configured (the stack grants that one profile).
    profile = build(ft_teacher_model_id="us.amazon.nova-pro-v1:0").finetune.invocable_teachers
    assert [t for t in profile if t.startswith("us.")] == ["us.amazon.nova-pro-v1:0"]
    assert all(t.startswith("amazon.") for t in ft.invocable_teachers)  # in-Region model ids


def test_buckets_use_the_customer_managed_key_and_training_data_is_versioned(template: dict[str, Any]) -> None:
    key_id, key = only(template, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    for prefix in ("FineTuneDataBucket", "FineTuneDataOutputBucket"):
        props = template["Resources"][_bucket_id(template, prefix)]["Properties"]
        [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {
            "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
            "SSEAlgorithm": "aws:kms",
        }
    data = template["Resources"][_bucket_id(template, "FineTuneDataBucket")]["Properties"]
    assert data["VersioningConfiguration"] == {"Status": "Enabled"}


def test_state_machine_passes_only_the_customization_role_to_bedrock(template: dict[str, Any]) -> None:
    _, machine = _pipeline(template)
    granted = _role_statements(template, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    role_id, _ = _customization_role(template)
    pass_role = granted["PassCustomizationRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}
    actions = {a for s in granted.values() for a in as_list(s["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in actions)
    assert {
        "bedrock:CreateModelCustomizationJob",
        "bedrock:GetModelCustomizationJob",
        "bedrock:StopModelCustomizationJob",
    } <= actions
    bedrock_resources = {
        render(r)
        for s in granted.values()
        if any(a.startswith("bedrock:") for a in as_list(s["Action"]))
        for r in as_list(s["Resource"])
    }
    assert all(r.startswith("arn:aws:bedrock:us-east-1:") for r in bedrock_resources)


def test_state_machine_logs_without_execution_data_and_is_traced(template: dict[str, Any]) -> None:
    _, machine = _pipeline(template)
    props = machine["Properties"]
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert props["TracingConfiguration"] == {"Enabled": True}


def _starter(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Express state machine the upload rule starts (stacks/level3_finetune/starter.py)."""
    [found] = [
        (k, v)
        for k, v in resources(template, "AWS::StepFunctions::StateMachine").items()
        if k.startswith("UploadStarter")
    ]
    return found


def test_uploading_a_job_request_starts_the_starter_not_the_pipeline(template: dict[str, Any]) -> None:
    """S3 delivers events at least once: the rule starts the starter, which names the pipeline's execution after
    the upload, so a redelivery cannot start a second paid job (tests/level3_finetune/test_paths.py runs it)."""
    starter_id, starter = _starter(template)
    rule = next(
        r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"]["EventPattern"]["source"] == ["aws.s3"]
    )
    pattern = rule["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"] == {"key": [{"wildcard": "jobs/*.json"}]}
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": _bucket_id(template, "FineTuneDataBucket")}]
    [target] = rule["Targets"]
    assert target["Arn"] == {"Ref": starter_id}
    assert "Input" not in target and "InputTransformer" not in target  # the starter reads the whole event
    # The rule's role may start the starter and nothing else.
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    granted = [(as_list(s["Action"]), as_list(s["Resource"])) for s in _role_statements(template, role_id).values()]
    assert granted == [(["states:StartExecution"], [{"Ref": starter_id}])]
    # Express: $1.00 per million starts and no idle cost; it takes Request Response integrations only
    # (https://docs.aws.amazon.com/step-functions/latest/dg/integrate-optimized.html).
    assert starter["Properties"]["StateMachineType"] == "EXPRESS"
    assert starter["Properties"]["TracingConfiguration"] == {"Enabled": True}
    logging = starter["Properties"]["LoggingConfiguration"]
    assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is False


def _alarmed_dead_letters(template: dict[str, Any], target: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The target's dead-letter queue and the alarm on it (its actions, its description)."""
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert template["Resources"][queue_id]["Type"] == "AWS::SQS::Queue"
    [alarm] = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions")
        == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    ]
    return queue_id, alarm


def test_every_rule_that_starts_a_state_machine_keeps_what_it_cannot_deliver(template: dict[str, Any]) -> None:
    """EventBridge drops an event it could not deliver after its retries, or that it could not deliver at all (no
    permission, no target), unless the target has a dead-letter queue
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html). Every rule of the stack that
    starts a state machine (the upload's starter, the teardown) has one, alarmed to the level's topic."""
    machines = set(resources(template, "AWS::StepFunctions::StateMachine"))
    topic_id, _ = only(template, "AWS::SNS::Topic")
    starting = [
        (rule_id, target)
        for rule_id, rule in resources(template, "AWS::Events::Rule").items()
        for target in rule["Properties"]["Targets"]
        if target["Arn"].get("Ref") in machines
    ]
    assert len(starting) == 2, starting
    for rule_id, target in starting:
        queue_id, alarm = _alarmed_dead_letters(template, target)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}], rule_id
        # EventBridge may send to the queue for this rule (the queue policy is its permission).
        sends = [
            statement
            for policy in resources(template, "AWS::SQS::QueuePolicy").values()
            if {"Ref": queue_id} in policy["Properties"]["Queues"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement.get("Principal") == {"Service": "events.amazonaws.com"}
        ]
        this_rule = {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}
        [send] = [statement for statement in sends if statement.get("Condition") == this_rule]
        assert (send["Effect"], send["Action"]) == ("Allow", "sqs:SendMessage"), rule_id


def test_an_upload_eventbridge_cannot_deliver_raises_the_alarm_that_says_to_upload_again(
    template: dict[str, Any],
) -> None:
    starter_id, _ = _starter(template)
    [target] = [
        t
        for r in resources(template, "AWS::Events::Rule").values()
        for t in r["Properties"]["Targets"]
        if t["Arn"] == {"Ref": starter_id}
    ]
    # EventBridge's longest retry policy, read from the registry schema of AWS::Events::Rule: a late start is
    # harmless (the run is named after the upload), a dropped one is not.
    schema = resource_schema("AWS::Events::Rule")
    assert schema is not None
    limits = schema["definitions"]["RetryPolicy"]["properties"]
    assert target["RetryPolicy"] == {name: limit["maximum"] for name, limit in limits.items()}
    _, alarm = _alarmed_dead_letters(template, target)
    assert "upload the job request again" in alarm["AlarmDescription"]
    assert "check for deployments or models left billing" in alarm["AlarmDescription"]  # the teardown's too


def test_the_starter_may_start_only_the_pipeline_and_report_only_to_the_topic(template: dict[str, Any]) -> None:
    _, starter = _starter(template)
    pipeline_id, _ = _pipeline(template)
    topic_id, _ = only(template, "AWS::SNS::Topic")
    key_id, _ = only(template, "AWS::KMS::Key")
    granted = _role_statements(template, starter["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    by_action = {a: as_list(s["Resource"]) for s in granted.values() for a in as_list(s["Action"])}
    assert by_action.pop("states:StartExecution") == [{"Ref": pipeline_id}]
    assert by_action.pop("sns:Publish") == [{"Ref": topic_id}]
    assert by_action.pop("kms:GenerateDataKey") == by_action.pop("kms:Decrypt") == [{"Fn::GetAtt": [key_id, "Arn"]}]
    # A start that kept failing is kept in the teardown backstop's alarmed dead-letter queue (SSE-SQS: no key).
    [queue] = [k for k in resources(template, "AWS::SQS::Queue") if k.startswith("TeardownBackstopDeadLetters")]
    assert by_action.pop("sqs:SendMessage") == [{"Fn::GetAtt": [queue, "Arn"]}]
    # What is left is X-Ray and CloudWatch Logs delivery, which take no resource.
    assert {a.split(":")[0] for a in by_action} == {"logs", "xray"}, sorted(by_action)


def test_customization_state_changes_of_the_kits_jobs_notify_the_topic(sandbox: Any, template: dict[str, Any]) -> None:
    topic_id, topic = only(template, "AWS::SNS::Topic")
    rule = next(
        r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"]["EventPattern"]["source"] == ["aws.bedrock"]
    )
    assert rule["EventPattern"]["detail-type"] == ["Model Customization Job State Change"]
    assert rule["EventPattern"]["detail"] == {"jobName": [{"prefix": sandbox.config.resource_name("ft")}]}
    assert rule["Targets"][0]["Arn"] == {"Ref": topic_id}
    assert "KmsMasterKeyId" in topic["Properties"]


def test_validator_reads_datasets_and_writes_reports_only(template: dict[str, Any]) -> None:
    fn = next(
        v["Properties"]
        for v in resources(template, "AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "finetune_validate.handler.handler"
    )
    granted = _role_statements(template, fn["Role"]["Fn::GetAtt"][0])
    assert granted["ReadDatasets"]["Action"] == "s3:GetObject"
    assert granted["WriteReports"]["Action"] == "s3:PutObject"
    assert render(granted["WriteReports"]["Resource"]).endswith("/reports/*")


def test_no_template_uses_an_invented_resource_type(sandbox: Any, sandbox_oss: Any) -> None:
    # CloudFormation has no customization-job, custom-model or provisioned-throughput resource (the registry
    # schemas cfn-lint ships, read without importing cfn-lint at collection).
    for synth in (sandbox, sandbox_oss):
        for stack_id, stack_template in synth.templates.items():
            for logical_id, resource in stack_template["Resources"].items():
                kind = resource["Type"]
                assert kind.startswith("Custom::") or kind == "AWS::CDK::Metadata" or resource_schema(kind), (
                    stack_id,
                    logical_id,
                    kind,
                )
    assert resource_schema("AWS::Bedrock::ProvisionedModelThroughput") is None


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        ({"ft_base_model_id": "amazon.nova-micro-v1:0"}, "ft_base_model_id", "one of"),
        (
            {"ft_deploy": "on-demand", "ft_base_model_id": "amazon.titan-text-lite-v1:0:4k"},
            "ft_deploy",
            "on-demand serves Amazon Nova",
        ),
        ({"ft_hyperparameters": {"epochCount": 2}}, "ft_hyperparameters", "string values"),
        ({"ft_customization_type": "REINFORCEMENT_FINE_TUNING"}, "ft_customization_type", "FINE_TUNING"),
        ({"ft_hyperparameters": {"epochCount": "9"}}, "ft_hyperparameters", "out of range"),
        ({"ft_hyperparameters": {"batchSize": "8"}}, "ft_hyperparameters", "not a hyperparameter of amazon-nova"),
        ({"ft_max_job_hours": 0}, "ft_max_job_hours", "from 1 to 72"),
    ],
)
def test_fine_tuning_config_guards(overrides: dict[str, Any], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**overrides)
    assert str(caught.value).startswith(f"config error: {key} = ")
    assert allowed in str(caught.value)


def test_outputs_name_buckets_state_machine_and_topic(sandbox: Any) -> None:
    outputs = set(sandbox.template(STACK).find_outputs("*"))
    assert {"DataBucketName", "OutputBucketName", "StateMachineArn", "TopicArn", "KeyArn"} <= outputs


# Destroy: the custom models the pipeline creates outside CloudFormation are encrypted with the stack's key.


def _cleanup(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return only(template, "Custom::BedrockFineTuneCleanup")


def _cleanup_function(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [found] = [
        (k, v["Properties"])
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "finetune_cleanup.handler.handler"
    ]
    return found


def test_sandbox_deletes_the_kits_custom_models_before_it_schedules_the_key_for_deletion(
    sandbox: Any, template: dict[str, Any]
) -> None:
    key_id, key = only(template, "AWS::KMS::Key")
    machine_id, machine = _pipeline(template)
    _, cleanup = _cleanup(template)
    function_id, function = _cleanup_function(template)
    # CloudFormation deletes a resource before what it depends on: the cleanup runs, and must succeed,
    # before the key is scheduled for deletion and before the state machine goes.
    assert {key_id, machine_id} <= set(cleanup["DependsOn"])
    assert key["DeletionPolicy"] == "Delete" and key["Properties"]["PendingWindowInDays"] == 7
    props = cleanup["Properties"]
    assert props["Mode"] == "DeleteModels"
    assert props["ServiceToken"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert props["KeyArn"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert props["StateMachineArn"] == {"Ref": machine_id}
    # The cleanup recognises exactly the names the state machine gives its jobs and models.
    names = PipelineNames.of(sandbox.config)
    assert (props["ModelNamePrefix"], props["JobNamePrefix"]) == (names.model, names.job)
    definition = json.dumps(machine["Properties"]["DefinitionString"])
    assert f"{names.model}{{}}" in definition and f"{names.job}{{}}" in definition
    # The key that encrypts the custom models is the one the jobs are given.
    assert json.dumps({"Fn::GetAtt": [key_id, "Arn"]}) in definition
    # CloudFormation gets an answer before it stops waiting, and stops waiting long before an hour.
    assert function["Timeout"] < int(props["ServiceTimeout"]) <= 900


@pytest.mark.parametrize("stage", ["sandbox", "prod"])
def test_the_upload_trigger_is_deleted_before_the_cleanup_runs(request: pytest.FixtureRequest, stage: str) -> None:
    """Before: the rule and the starter were deleted alongside the cleanup, so an upload (or an EventBridge
    redelivery) could start a run after the cleanup listed the running ones, and its job billed unseen."""
    template = request.getfixturevalue(stage).templates[STACK]
    cleanup_id, _ = _cleanup(template)
    rules = [
        (k, v)
        for k, v in resources(template, "AWS::Events::Rule").items()
        if "jobs/" in json.dumps(v["Properties"].get("EventPattern"))
    ]
    starters = [
        (k, v)
        for k, v in resources(template, "AWS::StepFunctions::StateMachine").items()
        if v["Properties"].get("StateMachineType") == "EXPRESS"
    ]
    assert len(rules) == 1 and len(starters) == 1
    for logical_id, resource in rules + starters:
        assert cleanup_id in resource.get("DependsOn", []), logical_id


def test_prod_retains_the_key_and_the_models_but_stops_the_run_and_unserves_them_before_the_machine_goes(
    prod: Any,
) -> None:
    template = prod.templates[STACK]
    key_id, key = only(template, "AWS::KMS::Key")
    assert key["DeletionPolicy"] == "RetainExceptOnCreate" and key["UpdateReplacePolicy"] == "Retain"
    for bucket in resources(template, "AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"  # kept even after a failed first create (stage.py)
    # Before: no cleanup in prod, so a destroy during KeepProvisionedThroughput deleted the state machine and the
    # teardown, and the run's throughput billed hourly with no end (DeleteStateMachine ends a run only "on the
    # next state transition"). Now the cleanup exists in prod, is deleted before the state machine, and keeps
    # the models (KeepModels: its role may not delete one).
    machine_id, _ = _pipeline(template)
    _, cleanup = _cleanup(template)
    function_id, function = _cleanup_function(template)
    assert {key_id, machine_id} <= set(cleanup["DependsOn"])
    props = cleanup["Properties"]
    assert props["Mode"] == "KeepModels" and props["StateMachineArn"] == {"Ref": machine_id}
    assert props["ServiceToken"] == {"Fn::GetAtt": [function_id, "Arn"]}
    names = PipelineNames.of(prod.config)
    assert (props["ModelNamePrefix"], props["JobNamePrefix"]) == (names.model, names.job)
    granted = _role_statements(template, function["Role"]["Fn::GetAtt"][0])
    allowed = {a for s in granted.values() for a in as_list(s["Action"])}
    assert "bedrock:DeleteCustomModel" not in allowed
    assert {
        "states:StopExecution",
        "bedrock:StopModelCustomizationJob",
        "bedrock:DeleteProvisionedModelThroughput",
        "bedrock:DeleteCustomModelDeployment",
    } <= allowed
    assert function["Timeout"] < int(props["ServiceTimeout"]) <= 900


def test_the_cleanup_may_call_what_its_handler_calls_and_delete_only_bedrock_resources_by_type(
    template: dict[str, Any],
) -> None:
    _, function = _cleanup_function(template)
    granted = _role_statements(template, function["Role"]["Fn::GetAtt"][0])
    allowed = {a: s for s in granted.values() for a in as_list(s["Action"])}
    # What the handler calls, and the shared steps it runs (stop the executions, read the stack's status).
    called = called_actions("finetune_cleanup")
    assert {action.split(":")[0] for action in called} == {"bedrock", "states", "cloudformation"}
    for action in called:
        assert action in allowed, action
    for action, statement in allowed.items():
        resources_ = [render(r) for r in as_list(statement["Resource"])]
        if "*" in resources_:
            # Only actions that IAM authorizes on '*' alone (List, X-Ray) are granted there.
            assert action.startswith(("bedrock:List", "xray:")), action
        elif action.startswith("bedrock:"):
            assert all(
                re.fullmatch(
                    r"arn:aws:bedrock:us-east-1:\$\{AWS::AccountId\}:"
                    r"(custom-model|custom-model-deployment|provisioned-model|model-customization-job)/\*",
                    r,
                )
                for r in resources_
            ), (action, resources_)
    assert allowed["states:StopExecution"]["Resource"] != "*"
    assert allowed["cloudformation:DescribeStacks"]["Resource"] == {"Ref": "AWS::StackId"}


# --- run-ready: permissions, notifications, customization types ------------------------------------------------

# The sample "Model Customization Job State Change" event of the Bedrock user guide (the fields this kit reads)
# https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-eventbridge-how-it-works.html
SAMPLE_JOB_EVENT = {
    "version": "0",
    "id": "UUID",
    "detail-type": "Model Customization Job State Change",
    "source": "aws.bedrock",
    "account": "123456789012",
    "time": "2023-08-11T12:34:56Z",
    "region": "us-east-1",
    "resources": ["arn:aws:bedrock:us-east-1:123456789012:model-customization-job/abcdefghwxyz"],
    "detail": {
        "version": "0.0",
        "jobName": "abcd-wxyz",
        "jobArn": "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/abcdefghwxyz",
        "outputModelName": "dummy-output-model-name",
        "outputModelArn": "arn:aws:bedrock:us-east-1:123456789012:dummy-output-model-name",
        "roleArn": "arn:aws:iam::123456789012:role/JobExecutionRole",
        "jobStatus": "Failed",
        "failureMessage": "Failure Message here.",
    },
}


def _transform(transformer: dict[str, Any], event: dict[str, Any]) -> str:
    """EventBridge's input transformer on one event: each InputPathsMap path must select a value."""
    values = {}
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            assert isinstance(value, dict) and part in value, f"{path} selects nothing in the event"
            value = value[part]
        values[name] = value
    text = transformer["InputTemplate"]
    for name, value in values.items():
        text = text.replace(f"<{name}>", str(value))
    return str(json.loads(text))


def test_state_change_notification_names_the_status_of_the_documented_sample_event(
    sandbox: Any, template: dict[str, Any]
) -> None:
    [rule] = [
        r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"]["EventPattern"]["source"] == ["aws.bedrock"]
    ]
    event = {
        **SAMPLE_JOB_EVENT,
        "detail": {**SAMPLE_JOB_EVENT["detail"], "jobName": PipelineNames.of(sandbox.config).job + "0" * 32},
    }
    message = _transform(rule["Targets"][0]["InputTransformer"], event)
    assert message.endswith("changed state: Failed"), message
    assert event["detail"]["jobName"] in message


@pytest.mark.parametrize("variant", ["sandbox", "prod_extremes"])
def test_tags_on_create_are_authorized_with_tag_resource_for_the_keys_sent_only(
    request: pytest.FixtureRequest, variant: str
) -> None:
    """Bedrock authorizes the tags CreateModelCustomizationJob, CreateCustomModelDeployment and
    CreateProvisionedModelThroughput carry with bedrock:TagResource as well: granted on what the pipeline creates
    (its deployment only in the mode that makes one), for exactly the keys the definition sends (the execution's
    tag, the kit's and the user's; prod_extremes sets a user tag), not any key."""
    synth = request.getfixturevalue(variant)
    template = synth.templates[STACK]
    _, machine = _pipeline(template)
    granted = _role_statements(template, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    definition = json.loads(render(machine["Properties"]["DefinitionString"]))
    tag_keys = {
        tag["Key"]
        for state in definition["States"].values()
        for member in ("JobTags", "CustomModelTags", "Tags")
        for tag in state.get("Parameters", {}).get(member, [])
    }
    assert {JOB_TAG_KEY, "kit", "kit-level", "kit-stage", *synth.config.deployment.tags} == tag_keys
    [tagging] = [s for s in granted.values() if "bedrock:TagResource" in as_list(s["Action"])]
    deployed = {"none": [], "on-demand": ["custom-model-deployment/*"], "provisioned": ["provisioned-model/*"]}
    assert sorted(render(r) for r in as_list(tagging["Resource"])) == [
        f"arn:aws:bedrock:us-east-1:${{AWS::AccountId}}:{resource}"
        for resource in sorted(["model-customization-job/*", "custom-model/*", *deployed[synth.config.finetune.deploy]])
    ]
    assert tagging["Condition"] == {"ForAllValues:StringEquals": {"aws:TagKeys": sorted(tag_keys)}}


def test_the_creates_that_name_a_custom_model_are_granted_on_it_and_on_foundation_models(prod_extremes: Any) -> None:
    """CreateModelCustomizationJob and CreateProvisionedModelThroughput each have two required resource types in the
    Service Authorization Reference, custom-model and foundation-model: a request about a custom model is
    authorized on its base model too. Before, the Provisioned Throughput grant (prod_extremes: ft_deploy
    provisioned) named custom-model and provisioned-model, no resource type of that action, and no foundation
    model: after a paid job, the deployment could be refused."""
    from tests.infra.helpers import iam_reference

    template = prod_extremes.templates[STACK]
    _, machine = _pipeline(template)
    granted = _role_statements(template, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    for action in ("CreateModelCustomizationJob", "CreateProvisionedModelThroughput"):
        required = {
            t["name"]
            for t in iam_reference().actions.get_action_details("bedrock", action)["resourceTypes"]
            if t["required"]
        }
        assert required == {"custom-model", "foundation-model"}, action
        [statement] = [s for s in granted.values() if f"bedrock:{action}" in as_list(s["Action"])]
        assert sorted(render(r) for r in as_list(statement["Resource"])) == [
            "arn:aws:bedrock:us-east-1:${AWS::AccountId}:custom-model/*",
            "arn:aws:bedrock:us-east-1::foundation-model/*",
        ], action


def test_a_tag_a_create_call_refuses_is_named_per_call() -> None:
    """The configuration refuses what any tagged service would (tests/infra/test_config.py); each create call's
    tags are checked again against that call's own shapes in botocore's models, so a narrower pattern or a smaller
    list in a later model stops synth instead of a run: Bedrock takes ASCII letters only, SageMaker no tab."""
    from stacks.shared.stage import _problems

    [(shown, allowed)] = _problems({"owner": "Zo\u00eb"}, "bedrock", "CreateModelCustomizationJob", "customModelTags")
    assert shown == {"owner": "Zo\u00eb"} and "botocore's bedrock Tag" in allowed
    assert _problems({"owner": "a\tb"}, "sagemaker", "CreateTrainingJob", "Tags") != []
    too_many = {f"k{i}": "v" for i in range(51)}
    assert any(
        "at most 50 tags" in allowed for _, allowed in _problems(too_many, "sagemaker", "CreateTrainingJob", "Tags")
    )
    assert _problems({"owner": "me"}, "bedrock", "CreateModelCustomizationJob", "jobTags") == []


def test_state_machine_uses_the_key_only_as_it_needs(template: dict[str, Any]) -> None:
    """Decrypt (job request file, SNS), GenerateDataKey (SNS, the custom model), DescribeKey and CreateGrant (the
    custom model); no Encrypt, ReEncrypt or GenerateDataKey* grant it never uses."""
    for prefix, expected in (
        ("Pipeline", {"kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:CreateGrant"}),
        ("Teardown", {"kms:Decrypt", "kms:GenerateDataKey"}),
    ):
        [machine] = [
            v for k, v in resources(template, "AWS::StepFunctions::StateMachine").items() if k.startswith(prefix)
        ]
        granted = _role_statements(template, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
        kms = {a for s in granted.values() for a in as_list(s["Action"]) if a.startswith("kms:")}
        assert kms == expected, prefix


def test_eventbridge_publishes_through_a_role_only_its_rule_may_assume(template: dict[str, Any]) -> None:
    """Before: the topic and key policies granted events.amazonaws.com with an aws:SourceArn condition, which
    EventBridge-to-encrypted-topic delivery does not support (sns-key-management.html): no e-mail ever arrived.
    The rule's target role carries the scoping, and the role uses the topic's key."""
    [(_, rule)] = [
        (k, r)
        for k, r in resources(template, "AWS::Events::Rule").items()
        if r["Properties"]["EventPattern"]["source"] == ["aws.bedrock"]
    ]
    topic_id, topic = only(template, "AWS::SNS::Topic")
    key_id, key = only(template, "AWS::KMS::Key")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": topic_id}
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    [trust] = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    rule_arn = f"arn:aws:events:us-east-1:${{AWS::AccountId}}:rule/{rule['Properties']['Name']}"
    assert render(trust["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arn
    # "The publisher must have the kms:GenerateDataKey* and kms:Decrypt permissions for the AWS KMS key."
    granted = list(_role_statements(template, role_id).values())
    assert granted == [
        {"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": topic_id}},
        {
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [key_id, "Arn"]},
        },
    ]
    assert "events.amazonaws.com" not in json.dumps(key["Properties"]["KeyPolicy"])


def test_a_continued_pre_training_config_builds_the_stack() -> None:
    """The settings refuse the type for models without it (tests/level3_finetune/test_settings.py); a model that
    offers it builds the stack."""
    import aws_cdk as cdk

    from stacks.level3_finetune.stack import FineTuneStack
    from tests.conftest import cdk_json_context

    config = build(
        ft_base_model_id="amazon.titan-text-express-v1:0:8k",
        ft_customization_type="CONTINUED_PRE_TRAINING",
        ft_hyperparameters={},
    )
    app = cdk.App(context={k: v for k, v in cdk_json_context().items() if k.startswith("@")})
    stack = FineTuneStack(app, "Ft", env=cdk.Environment(region="us-east-1"), config=config)
    assert stack.node.try_find_child("Pipeline") is not None
