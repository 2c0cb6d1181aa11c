"""AWS facts the kit writes down, held to AWS's machine-readable sources: the CloudFormation registry schemas that
cfn-lint ships (stacks/shared/registry.py) and botocore's service models. A fact AWS changes fails here, not in an
account."""

from __future__ import annotations

from typing import Any, get_args

import botocore.session
import pytest

from stacks.shared.registry import resource_schema


def _enum(service: str, shape: str) -> set[str]:
    return set(botocore.session.get_session().get_service_model(service).shape_for(shape).enum)


def _definition_enum(resource_type: str, definition: str) -> list[Any]:
    schema = resource_schema(resource_type)
    assert schema is not None, resource_type
    return list(schema["definitions"][definition]["enum"])


def test_log_retention_values_are_the_log_groups() -> None:
    from stacks.shared.settings import LOG_RETENTION_DAYS

    schema = resource_schema("AWS::Logs::LogGroup")
    assert schema is not None
    assert list(LOG_RETENTION_DAYS) == schema["properties"]["RetentionInDays"]["enum"]


def test_every_log_retention_value_maps_to_the_cdk_value_of_the_same_days() -> None:
    """stacks/shared/stage.py pairs the days with CDK's RetentionDays by position: what CDK writes for each must be
    the number of days it stands for (one small stack, one synth)."""
    import aws_cdk as cdk
    from aws_cdk import aws_logs as logs

    from stacks.shared.settings import LOG_RETENTION_DAYS
    from stacks.shared.stage import _RETENTION

    assert sorted(_RETENTION) == sorted(LOG_RETENTION_DAYS)
    app = cdk.App()
    stack = cdk.Stack(app, "Retention")
    for days, retention in _RETENTION.items():
        group = logs.LogGroup(stack, f"Days{days}", retention=retention)
        group.node.default_child.override_logical_id(f"Days{days}")  # type: ignore[union-attr]
    template = app.synth().get_stack_by_name("Retention").template
    written = {
        int(logical_id.removeprefix("Days")): resource["Properties"]["RetentionInDays"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    assert written == {days: days for days in LOG_RETENTION_DAYS}


def test_guardrail_settings_use_the_guardrails_own_values() -> None:
    from stacks.shared.guardrail import _CONTENT_FILTERS
    from stacks.shared.settings import FILTER_STRENGTHS, AttackStrength, PiiType

    guardrail = "AWS::Bedrock::Guardrail"
    assert list(FILTER_STRENGTHS) == _definition_enum(guardrail, "FilterStrength")
    assert set(get_args(AttackStrength)) <= set(_definition_enum(guardrail, "FilterStrength"))
    assert set(get_args(PiiType)) == set(_definition_enum(guardrail, "PiiEntityType"))
    assert set(_CONTENT_FILTERS) | {"PROMPT_ATTACK"} == set(_definition_enum(guardrail, "ContentFilterType"))
    # The same values in the API the functions call (ApplyGuardrail reports them)
    assert set(get_args(PiiType)) == _enum("bedrock", "GuardrailPiiEntityType")


@pytest.mark.parametrize(
    ("values", "service", "shape"),
    [
        ("rag_ingest.ingestion:RUNNING_STATUSES", "bedrock-agent", "IngestionJobStatus"),
        ("rag_ingest.ingestion:FINISHED_STATUSES", "bedrock-agent", "IngestionJobStatus"),
        ("kit.level2_rag:INGESTION_RUNNING", "bedrock-agent", "IngestionJobStatus"),
        ("finetune_cleanup.handler:BUSY_JOB_STATUSES", "bedrock", "ModelCustomizationJobStatus"),
        ("common.training_cleanup:BUSY_TRAINING", "sagemaker", "TrainingJobStatus"),
        ("stacks.level3_finetune.teardown:ENDED_ABNORMALLY", "stepfunctions", "ExecutionStatus"),
        ("teardown_sweep.handler:ENDED_ABNORMALLY", "stepfunctions", "ExecutionStatus"),
        ("kit.operator:EXECUTION_RUNNING", "stepfunctions", "ExecutionStatus"),
        ("common.stack_cleanup:DELETE_IN_PROGRESS", "cloudformation", "StackStatus"),
        # what the functions read in Bedrock's answers: Converse's stopReason and guardrail trace actions,
        # ApplyGuardrail's action and its assessments' actions, RetrieveAndGenerate's guardrailAction
        ("prompt_api.bedrock:GUARDRAIL_INTERVENED", "bedrock-runtime", "StopReason"),
        ("prompt_api.bedrock:_ACTION_RANK", "bedrock-runtime", "GuardrailSensitiveInformationPolicyAction"),
        ("rag_api.guardrail:INTERVENED", "bedrock-runtime", "GuardrailAction"),
        ("rag_api.guardrail:BLOCKED", "bedrock-runtime", "GuardrailContentPolicyAction"),
        ("rag_api.knowledge_base:GUARDRAIL_INTERVENED", "bedrock-agent-runtime", "GuadrailAction"),
    ],
)
def test_status_values_the_kit_compares_are_the_apis(values: str, service: str, shape: str) -> None:
    import importlib

    module, name = values.split(":")
    value = getattr(importlib.import_module(module), name)
    written = {value} if isinstance(value, str) else set(value)
    assert written and written <= _enum(service, shape), sorted(written - _enum(service, shape))


def test_prompt_inference_keys_are_the_members_bedrock_stores() -> None:
    from prompt_api.prompts import INFERENCE_KEYS

    model = botocore.session.get_session().get_service_model("bedrock-agent")
    assert list(INFERENCE_KEYS) == list(model.shape_for("PromptModelInferenceConfiguration").members)


def test_prompt_variable_names_and_count_follow_bedrock_prompt_management() -> None:
    """The stack refuses a template whose variables AWS::Bedrock::Prompt refuses; the function, which reads the
    catalog the stack writes, must accept every name and count the stack lets through (else every route fails)."""
    import json
    from pathlib import Path

    from prompt_api.settings import VARIABLE_NAME, parse_catalog
    from stacks.level1_prompt.prompt_templates import _variable_rule, max_variables

    agent = botocore.session.get_session().get_service_model("bedrock-agent")
    api_rule = agent.shape_for("PromptInputVariable").members["name"].metadata["pattern"]
    assert VARIABLE_NAME.pattern == api_rule == (_variable_rule().pattern or "").removeprefix("^").removesuffix("$")
    most = agent.shape_for("PromptInputVariablesList").metadata["max"]
    assert max_variables() == most
    schemas = json.loads(Path("lambdas/level1_prompt/prompt_api/request_schemas.json").read_text())
    assert schemas["TemplateRequest"]["properties"]["variables"]["maxProperties"] == most

    longest = "a_" * 100  # 200 characters: the longest name both sources allow
    assert _variable_rule().problem(longest) is None
    arn = "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDEFGHIJ:1"
    names = [f"{longest[:-4]}{i:02d}" for i in range(most)]  # 198 characters, 100 groups
    assert all(_variable_rule().problem(name) is None for name in names)
    catalog = parse_catalog({"t": {"arn": arn, "variables": names}})
    assert catalog["t"].variables == tuple(names)


def test_the_hyperpod_volume_bound_is_the_apis() -> None:
    """hp_ebs_volume_gb allows what ClusterEbsVolumeConfig.VolumeSizeInGB allows (botocore sagemaker)."""
    from annotated_types import Ge, Le

    from stacks.level4_pretrain.settings import PretrainSettings

    rules = PretrainSettings.model_fields["ebs_volume_gb"].metadata
    bounds = {type(rule): rule for rule in rules if isinstance(rule, Ge | Le)}
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("ClusterEbsVolumeConfig")
    limits = shape.members["VolumeSizeInGB"].metadata
    assert (bounds[Ge].ge, bounds[Le].le) == (limits["min"], limits["max"])


def test_the_fsx_size_is_the_smallest_persistent_2_ssd_size() -> None:
    """ "1200 GiB, 2400 GiB, and increments of 2400 GiB" for PERSISTENT_2 SSD (botocore fsx StorageCapacity)."""
    from stacks.level4_pretrain.storage import FSX_STORAGE_GIB

    shape = botocore.session.get_session().get_service_model("fsx").shape_for("CreateFileSystemRequest")
    text = shape.members["StorageCapacity"].documentation
    assert (
        f"<code>PERSISTENT_2</code>, and <code>PERSISTENT_1</code> deployment types using SSD storage type, the "
        f"valid values are {FSX_STORAGE_GIB} GiB" in text
    )
