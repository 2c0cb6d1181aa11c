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
        ("rag_ingest.names:INGESTION_RUNNING", "bedrock-agent", "IngestionJobStatus"),
        ("rag_ingest.ingestion:FINISHED_STATUSES", "bedrock-agent", "IngestionJobStatus"),
        ("finetune_cleanup.handler:BUSY_JOB_STATUSES", "bedrock", "ModelCustomizationJobStatus"),
        ("common.training_cleanup:BUSY_TRAINING", "sagemaker", "TrainingJobStatus"),
        ("teardown_sweep.names:ENDED_ABNORMALLY", "stepfunctions", "ExecutionStatus"),
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


# The statuses a function or kit command treats as "still runs", and the rest of the API's enum, which it treats as
# ended: a status AWS adds fails here (the subset test above passes it), so that someone decides which side it is on
# before a cleanup lets a stack delete go ahead under a running job, or the ingest function starts a second one.
@pytest.mark.parametrize(
    ("running", "ended", "service", "shape"),
    [
        (
            "rag_ingest.names:INGESTION_RUNNING",
            "rag_ingest.ingestion:FINISHED_STATUSES",
            "bedrock-agent",
            "IngestionJobStatus",
        ),
        (
            "finetune_cleanup.handler:BUSY_JOB_STATUSES",
            {"Completed", "Failed", "Stopped"},
            "bedrock",
            "ModelCustomizationJobStatus",
        ),
        (
            "common.training_cleanup:BUSY_TRAINING",
            {"Completed", "Failed", "Stopped", "Deleting"},
            "sagemaker",
            "TrainingJobStatus",
        ),
    ],
)
def test_running_and_ended_statuses_split_the_apis_enum(
    running: str, ended: str | set[str], service: str, shape: str
) -> None:
    import importlib

    def named(reference: str) -> set[str]:
        module, name = reference.split(":")
        return set(getattr(importlib.import_module(module), name))

    running_values = named(running)
    ended_values = named(ended) if isinstance(ended, str) else ended
    assert not running_values & ended_values
    assert running_values | ended_values == _enum(service, shape)
