"""Level 3 state machine: every customization type runs end to end, with API-shaped responses.

The definitions come out of synthesized templates (tests/infra/asl.py); every CreateModelCustomizationJob request
is checked against botocore's Bedrock model, and each type's call carries exactly the members its type takes.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest

from finetune_validate import formats
from finetune_validate.names import LOGS_SOURCE, S3_SOURCE
from stacks.level3_finetune.stack import FineTuneStack
from stacks.shared.facts import INVOCATION_LOGS_BUCKET_PARAMETER
from tests.conftest import cdk_json_context
from tests.infra.asl import AslError, Trace, resolve, sdk_request_errors
from tests.infra.helpers import resources
from tests.infra.test_config import build
from tests.level3_finetune.test_paths import (
    COMPLETED,
    CREATED,
    IN_PROGRESS,
    STACK,
    TRAINING_KEY,
    VALIDATION_KEY,
    Variant,
    assert_ends,
    assert_notified,
    run,
)

LOGS_BUCKET = "genai-kit-invocation-logs-bucket"
STUDENT = "amazon.nova-micro-v1:0:128k"
RFT_BASE = "amazon.nova-2-lite-v1:0:256k"
COMMON = {
    "JobName",
    "CustomModelName",
    "RoleArn",
    "BaseModelIdentifier",
    "CustomizationType",
    "TrainingDataConfig",
    "OutputDataConfig",
    "CustomModelKmsKeyId",
    "ClientRequestToken",
    "JobTags",
    "CustomModelTags",
}


def _literal_parameters(value: Any, literals: dict[str, str]) -> Any:
    """The template with each SSM-parameter Ref replaced by the value CloudFormation would resolve."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in literals:
            return literals[value["Ref"]]
        return {k: _literal_parameters(v, literals) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal_parameters(v, literals) for v in value]
    return value


def _synth(**overrides: Any) -> tuple[Variant, dict[str, Any]]:
    flags = {k: v for k, v in cdk_json_context().items() if k.startswith("@")}
    app = cdk.App(context=flags)
    config = build(**overrides)
    stack = FineTuneStack(app, STACK, env=cdk.Environment(region="us-east-1"), config=config)
    template = app.synth().get_stack_by_name(stack.stack_name).template
    wanted = INVOCATION_LOGS_BUCKET_PARAMETER
    ssm = {name for name, p in template.get("Parameters", {}).items() if p.get("Default") == wanted}
    return Variant.of(config, _literal_parameters(template, dict.fromkeys(ssm, LOGS_BUCKET))), template


@pytest.fixture(scope="module")
def prompts() -> Variant:
    return _synth()[0]


@pytest.fixture(scope="module")
def logs() -> tuple[Variant, dict[str, Any]]:
    return _synth(ft_distillation_source="invocation-logs", invocation_logging=True)


def validated(kind: str, **extra: Any) -> dict[str, Any]:
    """The validator's result for a valid dataset of this type (handler.handler's documented shape)."""
    return {
        "valid": True,
        "reportKey": "reports/x.json",
        "family": formats.NOVA,
        "customizationType": kind,
        "trainingRecords": 100,
        "validationRecords": None,
        "errorCount": 0,
        "warningCount": 0,
        "summary": "VALID",
        "teacherModelId": None,
        "rftHyperParameters": None,
        "trainingSource": S3_SOURCE,
        **extra,
    }


def _create(trace: Trace) -> tuple[str, dict[str, Any]]:
    [call] = [c for c in trace.calls if c.state.startswith("Create")]
    assert sdk_request_errors(call.resource, call.parameters) == [], call.parameters
    return call.state, call.parameters


def test_distillation_from_prompts_carries_the_validated_teacher(prompts: Variant) -> None:
    request = {
        "trainingKey": TRAINING_KEY,
        "customizationType": formats.DISTILLATION,
        "baseModelId": STUDENT,
        "hyperparameters": {},
    }
    result = validated(formats.DISTILLATION, teacherModelId="amazon.nova-pro-v1:0")
    trace = run(
        prompts,
        request,
        ValidateData=[result],
        CreateDistillationJob=[CREATED],
        GetJob=[IN_PROGRESS, COMPLETED],
    )
    assert_ends(trace, "SUCCEEDED", "Done")
    payload = trace.parameters("ValidateData")
    assert (payload["teacherModelId"], payload["defaultTeacherModelId"]) == (None, "amazon.nova-pro-v1:0")
    assert payload["invocationLogs"] is False and payload["customizationType"] == formats.DISTILLATION
    state, created = _create(trace)
    assert state == "CreateDistillationJob"
    assert set(created) == COMMON | {"CustomizationConfig"}  # no HyperParameters, no validation set
    assert created["CustomizationConfig"] == {
        "DistillationConfig": {
            "TeacherModelConfig": {
                "TeacherModelIdentifier": "amazon.nova-pro-v1:0",
                "MaxResponseLengthForInference": prompts.config.finetune.teacher_max_response_tokens,
            }
        }
    }
    assert created["TrainingDataConfig"] == {"S3Uri": f"s3://{prompts.bucket('FineTuneDataBucket')}/{TRAINING_KEY}"}


def test_distillation_from_the_invocation_logs_reads_the_logging_stacks_bucket(
    logs: tuple[Variant, dict[str, Any]], sandbox: Any
) -> None:
    variant, template = logs
    wanted = INVOCATION_LOGS_BUCKET_PARAMETER
    [parameter] = [p for p in template["Parameters"].values() if p.get("Default") == wanted]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"  # resolved at deploy time, no export
    # No trainingKey: the logs. No hyperparameters either: the configured ones are FINE_TUNING's, so none are sent.
    request = {"customizationType": formats.DISTILLATION}
    result = validated(formats.DISTILLATION, teacherModelId="amazon.nova-pro-v1:0", trainingSource=LOGS_SOURCE)
    trace = run(
        variant,
        request,
        ValidateData=[result],
        CreateDistillationJobFromLogs=[CREATED],
        GetJob=[COMPLETED],
    )
    assert_ends(trace, "SUCCEEDED", "Done")
    payload = trace.parameters("ValidateData")
    assert payload["trainingKey"] is None and payload["invocationLogs"] is True
    assert variant.config.finetune.customization_type == formats.FINE_TUNING and payload["hyperparameters"] == {}
    _, created = _create(trace)
    # Only this deployment's Level 1 calls: the request metadata its function puts on every Converse call
    assert variant.config.deployment == sandbox.config.deployment
    [level1] = [
        json.loads(r["Properties"]["Environment"]["Variables"]["REQUEST_METADATA"])
        for r in sandbox.templates["GenAiKit-1-Prompt"]["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and "REQUEST_METADATA" in str(r["Properties"].get("Environment"))
    ]
    assert created["TrainingDataConfig"] == {
        "InvocationLogsConfig": {
            "InvocationLogSource": {"S3Uri": f"s3://{LOGS_BUCKET}/invocations/"},
            "UsePromptResponse": False,
            "RequestMetadataFilters": {"Equals": level1},
        }
    }
    assert set(created) == COMMON | {"CustomizationConfig"}


@pytest.fixture(scope="module")
def logs_distillation() -> Variant:
    """Distillation configured and from the invocation logs: a request without a type is a distillation."""
    return _synth(
        ft_distillation_source="invocation-logs",
        invocation_logging=True,
        ft_customization_type=formats.DISTILLATION,
        ft_hyperparameters={},
    )[0]


@pytest.mark.parametrize("execution_input", [7, [], None, "datasets/train.jsonl", True])
def test_an_input_that_is_not_an_object_is_rejected_and_notified_in_logs_distillation_mode(
    logs_distillation: Variant, execution_input: Any
) -> None:
    """It has no customizationType, which here means a distillation, but it is no request: before, it reached
    MergeRequest and failed there, in a Pass state no Catch sees, unreported."""
    trace = run(logs_distillation, execution_input)
    assert trace.error != "States.Runtime", trace.describe()
    assert trace.status == "FAILED", trace.describe()
    assert trace.visited[-2:] == ["NotifyMissingTrainingKey", "MissingTrainingKey"], trace.describe()
    assert "MergeRequest" not in trace.visited


def test_a_fine_tuning_request_without_training_key_is_still_rejected_in_logs_mode(
    logs: tuple[Variant, dict[str, Any]],
) -> None:
    trace = run(logs[0], {"customizationType": formats.FINE_TUNING})
    assert_ends(trace, "FAILED", "MissingTrainingKey")


def test_reinforcement_fine_tuning_carries_the_grader_and_typed_hyperparameters(prompts: Variant) -> None:
    request = {
        "trainingKey": TRAINING_KEY,
        "customizationType": formats.REINFORCEMENT_FINE_TUNING,
        "baseModelId": RFT_BASE,
        "hyperparameters": {"epochCount": "2", "learningRate": "0.00001", "reasoningEffort": "low"},
    }
    # What the validator returns for them (formats.rft_hyperparameters): the API's types under PascalCase names.
    typed = formats.rft_hyperparameters(request["hyperparameters"])
    assert typed == {"EpochCount": 2, "LearningRate": 0.00001, "ReasoningEffort": "low"}
    trace = run(
        prompts,
        request,
        ValidateData=[validated(formats.REINFORCEMENT_FINE_TUNING, rftHyperParameters=typed)],
        CreateRftJob=[CREATED],
        GetJob=[COMPLETED],
    )
    assert_ends(trace, "SUCCEEDED", "Done")
    state, created = _create(trace)
    assert state == "CreateRftJob" and set(created) == COMMON | {"CustomizationConfig"}
    rft = created["CustomizationConfig"]["RftConfig"]
    assert rft["HyperParameters"] == typed
    functions = resources(prompts.template, "AWS::Lambda::Function")
    [grader] = [k for k in functions if k.startswith("RewardFunction")]
    assert rft["GraderConfig"]["LambdaGrader"]["LambdaArn"] == resolve(
        prompts.template, {"Fn::GetAtt": [grader, "Arn"]}
    )


@pytest.mark.parametrize(
    ("kind", "state", "with_validation"),
    [
        (formats.FINE_TUNING, "CreateJobWithValidationSet", True),
        (formats.CONTINUED_PRE_TRAINING, "CreateJob", False),
    ],
)
def test_fine_tuning_and_continued_pre_training_keep_their_calls(
    prompts: Variant, kind: str, state: str, with_validation: bool
) -> None:
    request = {"trainingKey": TRAINING_KEY, "customizationType": kind, "hyperparameters": {"epochCount": "2"}}
    if with_validation:
        request["validationKey"] = VALIDATION_KEY
    trace = run(prompts, request, ValidateData=[validated(kind)], **{state: [CREATED]}, GetJob=[COMPLETED])
    assert_ends(trace, "SUCCEEDED", "Done")
    got, created = _create(trace)
    extra = {"HyperParameters"} | ({"ValidationDataConfig"} if with_validation else set())
    assert got == state and set(created) == COMMON | extra and "CustomizationConfig" not in created


@pytest.mark.parametrize(
    "problem",
    [
        ("teacherModelId", "Amazon Nova Pro does not teach amazon.nova-pro-v1:0:300k"),
        ("trainingKey", "is required: distilling from the account's invocation logs needs ..."),
    ],
)
def test_a_bad_teacher_pair_or_request_ends_in_a_notified_bad_request(prompts: Variant, problem: Any) -> None:
    error = AslError("InvalidRequest", json.dumps({"errorMessage": f"{problem[0]}: {problem[1]}"}))
    request = {"trainingKey": TRAINING_KEY, "customizationType": formats.DISTILLATION, "teacherModelId": "x"}
    trace = run(prompts, request, ValidateData=[error])
    assert_ends(trace, "FAILED", "BadRequest")
    assert_notified(trace, [("NotifyBadRequest", "rejected:")])
    assert not [state for state in trace.visited if state.startswith("Create")]


def test_missing_reference_answers_end_in_a_notified_invalid_data(prompts: Variant) -> None:
    invalid = validated(formats.REINFORCEMENT_FINE_TUNING, valid=False, errorCount=3)
    request = {"trainingKey": TRAINING_KEY, "customizationType": formats.REINFORCEMENT_FINE_TUNING}
    trace = run(prompts, request, ValidateData=[invalid])
    assert_ends(trace, "FAILED", "InvalidData")
    assert_notified(trace, [("NotifyInvalidData", "rejected:")])
    assert not [state for state in trace.visited if state.startswith("Create")]


@pytest.mark.parametrize("state", ["CreateDistillationJob", "CreateRftJob"])
def test_a_rejected_create_of_the_new_types_is_notified(prompts: Variant, state: str) -> None:
    kind = formats.DISTILLATION if "Distillation" in state else formats.REINFORCEMENT_FINE_TUNING
    result = validated(kind, teacherModelId="amazon.nova-pro-v1:0", rftHyperParameters={})
    rejected = AslError("Bedrock.ValidationException", "The teacher model is not supported")
    request = {"trainingKey": TRAINING_KEY, "customizationType": kind, "hyperparameters": {}}
    trace = run(prompts, request, ValidateData=[result], **{state: [rejected]})
    assert_ends(trace, "FAILED", "StartFailed")
    assert_notified(trace, [("NotifyStartFailed", "failed:")])


def test_the_invocation_logs_variant_is_cdk_nag_clean_and_reads_only_the_logs_prefix() -> None:
    from cdk_nag import AwsSolutionsChecks

    flags = {k: v for k, v in cdk_json_context().items() if k.startswith("@")}
    app = cdk.App(context=flags)
    stack = FineTuneStack(
        app,
        STACK,
        env=cdk.Environment(region="us-east-1"),
        config=build(ft_distillation_source="invocation-logs", invocation_logging=True),
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    artifact = app.synth().get_stack_by_name(stack.stack_name)  # errors fail synthesis
    findings = [m.entry.data for m in artifact.messages if "AwsSolutions-" in str(m.entry.data)]
    assert findings == []
    policies = [r for r in artifact.template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    reads = [
        s
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Sid") in ("ReadInvocationLogs", "ListInvocationLogs")
    ]
    assert {s["Sid"] for s in reads} == {"ReadInvocationLogs", "ListInvocationLogs"}
    listing = next(s for s in reads if s["Sid"] == "ListInvocationLogs")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["invocations/*"]}}
