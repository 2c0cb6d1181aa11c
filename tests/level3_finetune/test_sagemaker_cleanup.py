"""The SageMaker path's destroy cleanup: on stack deletion it stops the kit's executions and training jobs and, in
the sandbox (StopAndDelete), waits for its import jobs and deletes exactly its imported models; in prod (StopOnly)
it calls no Bedrock API. It always answers CloudFormation in time (every call goes through a botocore Stubber on the
real clients, so each request is checked against the service model). And the construct, in every stage: exact
IAM (prod cannot delete), a bounded ServiceTimeout, deleted before what it needs."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Match, Template
from botocore.stub import Stubber

from common import stack_cleanup, training_cleanup
from sagemaker_cleanup import handler as h
from stacks.level3_finetune import sagemaker_pipeline as pipeline
from stacks.level3_finetune.sagemaker_cleanup import CLEANUP_SERVICE_TIMEOUT, CLEANUP_TIMEOUT, SageMakerFineTuneCleanup
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.secure_bucket import SecureBucket
from stacks.shared.stage import log_group
from tests.cleanup_helpers import (
    IAM_PREFIX,
    T0,
    FakeAws,
    called_actions,
    cleanup_event,
    common_actions,
    context,
    fake_aws,
)
from tests.conftest import cdk_json_context
from tests.infra.helpers import as_list, iam_reference, resources

ACCOUNT = "123456789012"
PREFIX = "genai-kit-sandbox-sft-"
BUCKET = "genaikit-sm-artifacts-abc123"
OTHER_BUCKET = "genaikit-sm-artifacts-prod999"
STATE_MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:genai-kit-sandbox-sft"
STACK_ID = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/GenAiKit-3-FineTune-SageMaker/abc"
PROPS = {
    "ServiceToken": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:cleanup",
    "Mode": "StopAndDelete",
    "StateMachineArn": STATE_MACHINE,
    "NamePrefix": PREFIX,
    "TrainingOutputUri": f"s3://{BUCKET}/output/",
    "ImportSourceUri": f"s3://{BUCKET}/output/{{name}}/output/model/merged/",
}
STOP_ONLY_PROPS = {k: v for k, v in PROPS.items() if k != "ImportSourceUri"} | {"Mode": "StopOnly"}
OTHER_STATE_MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:genai-kit-sandbox-sft-old"


def kit_name(execution: str, machine: str = STATE_MACHINE) -> str:
    """The name the pipeline gives an execution's training job, import job and model: the prefix and the MD5 of the
    execution ARN in lowercase hex (sagemaker_pipeline.run_name)."""
    arn = f"{machine.replace(':stateMachine:', ':execution:')}:{execution}"
    return PREFIX + hashlib.md5(arn.encode()).hexdigest()


FUNCTION_MS = 900_000  # the function's 15-minute timeout


# --- API-shaped responses -------------------------------------------------------------------------------------


def training_summary(name: str, status: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}",
        "CreationTime": T0,
        "TrainingJobStatus": status,
    }


def training_job(name: str, status: str, bucket: str = BUCKET) -> dict[str, Any]:
    secondary = {"InProgress": "Training", "Stopping": "Stopping", "Stopped": "Stopped"}[status]
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{bucket}/output/{name}/output/model/"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "CreationTime": T0,
        "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/training",
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output/", "CompressionType": "NONE"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
    }


def job_arn(suffix: str) -> str:
    return f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-import-job/{suffix}"


def model_arn(suffix: str) -> str:
    return f"arn:aws:bedrock:us-east-1:{ACCOUNT}:imported-model/{suffix}"


def source(name: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {"s3DataSource": {"s3Uri": f"s3://{bucket}/output/{name}/output/model/merged/"}}


def import_summary(name: str, suffix: str, status: str = "InProgress") -> dict[str, Any]:
    return {"jobArn": job_arn(suffix), "jobName": name, "status": status, "creationTime": T0}


def import_job(name: str, suffix: str, status: str, bucket: str = BUCKET) -> dict[str, Any]:
    job = {
        "jobArn": job_arn(suffix),
        "jobName": name,
        "importedModelName": name,
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/import",
        "modelDataSource": source(name, bucket),
        "status": status,
        "creationTime": T0,
    }
    if status == "Completed":
        job["importedModelArn"] = model_arn(suffix)
    return job


def model_summary(name: str, suffix: str) -> dict[str, Any]:
    return {"modelArn": model_arn(suffix), "modelName": name, "creationTime": T0}


def imported_model(name: str, suffix: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "modelArn": model_arn(suffix),
        "modelName": name,
        "jobName": name,
        "jobArn": job_arn(suffix),
        "modelDataSource": source(name, bucket),
        "creationTime": T0,
        "modelArchitecture": "qwen2",
    }


# --- the fake world -------------------------------------------------------------------------------------------


class Aws(FakeAws):
    @property
    def sagemaker(self) -> Stubber:
        return self.stubbers["sagemaker"]

    def training(self, status: str, summaries: list[dict[str, Any]], token: str | None = None, **extra: Any) -> None:
        page: dict[str, Any] = {"TrainingJobSummaries": summaries}
        if token:
            page["NextToken"] = token
        self.sagemaker.add_response(
            "list_training_jobs", page, {"NameContains": PREFIX, "StatusEquals": status, **extra}
        )

    def no_training(self) -> None:
        for status in training_cleanup.BUSY_TRAINING:
            self.training(status, [])

    def describe(self, name: str, status: str, bucket: str = BUCKET) -> None:
        self.sagemaker.add_response(
            "describe_training_job", training_job(name, status, bucket), {"TrainingJobName": name}
        )

    def imports(self, summaries: list[dict[str, Any]], token: str | None = None, **extra: Any) -> None:
        page: dict[str, Any] = {"modelImportJobSummaries": summaries}
        if token:
            page["nextToken"] = token
        self.bedrock.add_response(
            "list_model_import_jobs", page, {"nameContains": PREFIX, "statusEquals": "InProgress", **extra}
        )

    def get_import(self, name: str, suffix: str, status: str, bucket: str = BUCKET) -> None:
        self.bedrock.add_response(
            "get_model_import_job", import_job(name, suffix, status, bucket), {"jobIdentifier": job_arn(suffix)}
        )

    def models(self, summaries: list[dict[str, Any]], token: str | None = None, **extra: Any) -> None:
        page: dict[str, Any] = {"modelSummaries": summaries}
        if token:
            page["nextToken"] = token
        self.bedrock.add_response("list_imported_models", page, {"nameContains": PREFIX, **extra})

    def get_model(self, name: str, suffix: str, bucket: str = BUCKET) -> None:
        self.bedrock.add_response(
            "get_imported_model", imported_model(name, suffix, bucket), {"modelIdentifier": model_arn(suffix)}
        )

    def delete_model(self, suffix: str) -> None:
        self.bedrock.add_response("delete_imported_model", {}, {"modelIdentifier": model_arn(suffix)})


SERVICES = ("bedrock", "sagemaker", "stepfunctions", "cloudformation")
STOP_ONLY_SERVICES = ("sagemaker", "stepfunctions", "cloudformation")  # a Bedrock client would be refused


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "sagemaker-cleanup")
    with fake_aws(monkeypatch, Aws, SERVICES, stack_id=STACK_ID, state_machine=STATE_MACHINE, cause=h.CAUSE) as world:
        yield world


@pytest.fixture
def stop_only_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """The prod stage's world: no Bedrock client at all (asking for one fails the request)."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "sagemaker-cleanup")
    services = STOP_ONLY_SERVICES
    with fake_aws(monkeypatch, Aws, services, stack_id=STACK_ID, state_machine=STATE_MACHINE, cause=h.CAUSE) as world:
        yield world


def event(kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return cleanup_event(
        kind,
        PROPS if props is None else props,
        stack_id=STACK_ID,
        logical_id="SageMakerCleanup",
        resource_type="Custom::SageMakerFineTuneCleanup",
        physical_id=h.PHYSICAL_ID,
    )


# --- the handler ----------------------------------------------------------------------------------------------


def test_running_training_jobs_are_stopped_across_pages_and_waited_for(aws: Aws) -> None:
    ours, stopping = kit_name("kit-run-1"), kit_name("kit-run-0")
    other_stage = kit_name("kit-run-9", OTHER_STATE_MACHINE)  # the kit's name, output to another stack's bucket
    aws.deleting()
    aws.executions(["kit-run-1"])
    # Page 1 holds a job of another stack; page 2 ours. A job already stopping is waited for, not stopped again.
    aws.training("InProgress", [training_summary(other_stage, "InProgress")], token="p2")
    aws.training("InProgress", [training_summary(ours, "InProgress")], NextToken="p2")
    aws.describe(other_stage, "InProgress", OTHER_BUCKET)
    aws.describe(ours, "InProgress")
    aws.sagemaker.add_response("stop_training_job", {}, {"TrainingJobName": ours})
    aws.training("Stopping", [training_summary(stopping, "Stopping"), training_summary(ours, "Stopping")])
    aws.describe(stopping, "Stopping")
    # Stopping takes a while: two more looks until both have stopped.
    aws.describe(ours, "Stopping")
    aws.describe(stopping, "Stopping")
    aws.describe(ours, "Stopping")
    aws.describe(stopping, "Stopped")
    aws.describe(ours, "Stopped")
    aws.describe(stopping, "Stopped")
    aws.imports([])
    aws.models([])

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert "stopped 2 training job(s) and 1 pipeline execution(s)" in aws.answer["Reason"]
    assert aws.calls.count("StopTrainingJob") == 1
    # One settle after stopping the execution, then two polls while the jobs stop.
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S] * 3
    assert aws.calls.index("StopExecution") < aws.calls.index("ListTrainingJobs")


def test_a_run_started_after_the_first_look_is_stopped_with_its_training_job(aws: Aws) -> None:
    """A `kit l3sm run` during the destroy is still training when the models are deleted (its import comes only
    after its training job ends): the last look stops the execution, settles, and stops its job."""
    late = kit_name("late-run")
    aws.deleting()
    aws.executions([])  # the first look: nothing running
    aws.no_training()
    aws.imports([])
    aws.models([])
    aws.executions(["late-run"])  # the last look: a run started meanwhile, stopped
    aws.training("InProgress", [training_summary(late, "InProgress")])  # the job it created
    aws.describe(late, "InProgress")
    aws.sagemaker.add_response("stop_training_job", {}, {"TrainingJobName": late})
    aws.training("Stopping", [])
    aws.describe(late, "Stopped")

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert "stopped 1 training job(s) and 1 pipeline execution(s)" in aws.answer["Reason"]
    # The stop comes after the late execution's, and after one settle for a CreateTrainingJob it had in flight.
    assert aws.calls.index("StopExecution") < aws.calls.index("StopTrainingJob")
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S]


def test_an_import_still_in_progress_is_waited_for_and_the_model_it_creates_is_deleted(aws: Aws) -> None:
    name = kit_name("kit-run-2")
    aws.deleting()
    aws.executions([])
    aws.no_training()
    aws.imports([import_summary(name, "aaaaaaaaaaaa")])
    aws.get_import(name, "aaaaaaaaaaaa", "InProgress")  # is it ours: the merged model in this stack's bucket
    aws.get_import(name, "aaaaaaaaaaaa", "InProgress")
    aws.get_import(name, "aaaaaaaaaaaa", "InProgress")
    aws.get_import(name, "aaaaaaaaaaaa", "Completed")
    aws.models([model_summary(name, "aaaaaaaaaaaa")], token="p2")
    aws.models([], nextToken="p2")
    aws.get_model(name, "aaaaaaaaaaaa")
    aws.delete_model("aaaaaaaaaaaa")

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert f"deleted 1 imported model(s) [{name}]; waited for 1 import job(s)" in aws.answer["Reason"]
    assert aws.calls.index("ListImportedModels") > max(i for i, c in enumerate(aws.calls) if c == "GetModelImportJob")
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S] * 2


def test_an_import_answer_without_a_status_is_taken_as_still_in_progress(aws: Aws) -> None:
    """botocore bedrock 2023-04-20 GetModelImportJobResponse requires no member. Before: a KeyError answered FAILED
    and the stack delete failed; now an answer without status is polled again within the deadline."""
    name = kit_name("kit-run-2")
    aws.deleting()
    aws.executions([])
    aws.no_training()
    aws.imports([import_summary(name, "aaaaaaaaaaaa")])
    aws.get_import(name, "aaaaaaaaaaaa", "InProgress")  # is it ours
    without_status = {k: v for k, v in import_job(name, "aaaaaaaaaaaa", "InProgress").items() if k != "status"}
    aws.bedrock.add_response("get_model_import_job", without_status, {"jobIdentifier": job_arn("aaaaaaaaaaaa")})
    aws.get_import(name, "aaaaaaaaaaaa", "Completed")
    aws.models([model_summary(name, "aaaaaaaaaaaa")])
    aws.get_model(name, "aaaaaaaaaaaa")
    aws.delete_model("aaaaaaaaaaaa")

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert "waited for 1 import job(s)" in aws.answer["Reason"]
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S]


def test_models_that_are_not_the_kits_are_left_alone(aws: Aws) -> None:
    ours = kit_name("kit-run-3")
    # Another deployment whose name prefix extends this one ("genai-kit-sandbox-sft" in prod) gets the same start,
    # but not the hash right after this prefix: left alone without a look.
    other_deployment = f"{PREFIX}prod-sft-{kit_name('kit-run-3').removeprefix(PREFIX)}"
    elsewhere = kit_name("kit-run-3", OTHER_STATE_MACHINE)  # the kit's name, imported from another bucket
    by_hand = f"copy-of-{ours}"  # nameContains matches it; the name does not start with the prefix
    bare = PREFIX  # exactly the prefix: no hash, not a name the pipeline gives
    by_execution_name = f"{PREFIX}kit-run-3"  # the prefix and an execution name: not a name the pipeline gives
    upper = PREFIX + ours.removeprefix(PREFIX).upper()  # States.Hash writes lowercase hex
    aws.deleting()
    aws.executions([])
    aws.no_training()
    aws.imports([import_summary(other_deployment, "dddddddddddd"), import_summary(elsewhere, "ffffffffffff")])
    aws.get_import(elsewhere, "ffffffffffff", "InProgress", OTHER_BUCKET)
    aws.models(
        [
            model_summary(ours, "aaaaaaaaaaaa"),
            model_summary(other_deployment, "bbbbbbbbbbbb"),
            model_summary(by_hand, "cccccccccccc"),
            model_summary(bare, "eeeeeeeeeeee"),
            model_summary(elsewhere, "ffffffffffff"),
            model_summary(by_execution_name, "111111111111"),
            model_summary(upper, "222222222222"),
        ]
    )
    aws.get_model(ours, "aaaaaaaaaaaa")
    aws.get_model(elsewhere, "ffffffffffff", OTHER_BUCKET)
    aws.delete_model("aaaaaaaaaaaa")

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()  # only one delete was queued: any other would have failed the stubber
    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "SUCCESS", reason
    assert f"deleted 1 imported model(s) [{ours}]" in reason
    assert f"did not import: [{elsewhere}]" in reason
    assert "waited for 0 import job(s)" in reason
    assert aws.clock.sleeps == []


def test_when_the_deadline_comes_it_answers_failed_in_time_naming_the_import_left(aws: Aws) -> None:
    name = kit_name("kit-run-4")
    aws.deleting()
    aws.executions([])
    aws.no_training()
    aws.imports([import_summary(name, "aaaaaaaaaaaa")])
    for _ in range(80):  # never completes; more answers than the deadline lets it ask for
        aws.get_import(name, "aaaaaaaaaaaa", "InProgress")

    h.handler(event("Delete"), context(FUNCTION_MS))

    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "FAILED"
    assert reason.startswith("Deadline reached while waiting for import jobs to end") and name in reason
    assert "run the destroy again" in reason
    assert "DeleteImportedModel" not in aws.calls and "ListImportedModels" not in aws.calls
    [answered_at] = aws.answered_at
    assert answered_at <= FUNCTION_MS / 1000 - stack_cleanup.ANSWER_MARGIN_S


def _one_kit_model_to_delete(aws: Aws, name: str) -> None:
    """A stack deletion that finds nothing running and one kit model, read before its delete."""
    aws.deleting()
    aws.executions([])
    aws.no_training()
    aws.imports([])
    aws.models([model_summary(name, "aaaaaaaaaaaa")])
    aws.get_model(name, "aaaaaaaaaaaa")


def test_a_model_busy_for_a_moment_is_deleted_on_the_next_look(aws: Aws) -> None:
    name = kit_name("kit-run-5")
    _one_kit_model_to_delete(aws, name)
    aws.bedrock.add_client_error("delete_imported_model", "ConflictException", "in use", 409)
    aws.delete_model("aaaaaaaaaaaa")

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS" and name in aws.answer["Reason"]
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S]


@pytest.mark.parametrize("code", ["AccessDeniedException", "ValidationException"])
def test_a_model_delete_refused_answers_failed_not_deleted(aws: Aws, code: str) -> None:
    # Only a model already gone counts as deleted: a refusal keeps it stored (and counted against the imported-
    # models quota), so the stack's deletion fails saying why instead of answering SUCCESS.
    _one_kit_model_to_delete(aws, kit_name("kit-run-5"))
    params = {"modelIdentifier": model_arn("aaaaaaaaaaaa")}
    aws.bedrock.add_client_error("delete_imported_model", code, "refused", 400, expected_params=params)

    h.handler(event("Delete"), context(FUNCTION_MS))

    assert aws.answer["Status"] == "FAILED"
    assert aws.answer["Reason"].startswith(f"{code}: refused")


def test_a_delete_that_is_not_the_stacks_deletion_keeps_everything(aws: Aws) -> None:
    aws.deleting("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")  # for example an update that switched to prod
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS" and "left in place" in aws.answer["Reason"]
    assert aws.calls == ["DescribeStacks"]


@pytest.mark.parametrize("kind", ["Create", "Update"])
def test_create_and_update_do_nothing(aws: Aws, kind: str) -> None:
    h.handler(event(kind), context(FUNCTION_MS))  # no response is queued: any AWS call would fail the request
    aws.no_pending()
    assert aws.calls == []
    assert aws.answer["Status"] == "SUCCESS"
    assert aws.answer["PhysicalResourceId"] == h.PHYSICAL_ID


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({k: v for k, v in PROPS.items() if k != "NamePrefix"}, "NamePrefix"),
        ({**PROPS, "ImportSourceUri": f"s3://{BUCKET}/output/"}, "ImportSourceUri"),
        ({k: v for k, v in PROPS.items() if k != "ImportSourceUri"}, "ImportSourceUri None must hold {name}"),
        ({k: v for k, v in PROPS.items() if k != "Mode"}, "missing resource properties: Mode"),
        ({**PROPS, "Mode": "Delete"}, "Mode 'Delete' is not one of StopAndDelete, StopOnly"),
        # A stop-only resource that names where models come from is a mistake, not a mode.
        ({**STOP_ONLY_PROPS, "ImportSourceUri": PROPS["ImportSourceUri"]}, "is not taken in Mode StopOnly"),
    ],
)
def test_create_with_a_wrong_property_fails_at_deploy_time(aws: Aws, props: dict[str, Any], named: str) -> None:
    h.handler(event("Create", props), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED" and named in aws.answer["Reason"]


def test_an_api_error_answers_failed_and_says_what_to_do(aws: Aws) -> None:
    aws.deleting()
    aws.executions([])
    aws.sagemaker.add_client_error("list_training_jobs", "AccessDeniedException", "not allowed", 400)
    h.handler(event("Delete"), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED"
    assert aws.answer["Reason"].startswith("AccessDeniedException: not allowed")
    assert "run the destroy again" in aws.answer["Reason"]


def test_an_unexpected_error_answers_failed_in_one_line_without_a_stack_trace(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(scope: Any, deadline: Any) -> int:
        raise KeyError("TrainingJobStatus")

    monkeypatch.setattr(h, "stop_training_jobs", broken)
    aws.deleting()
    aws.executions([])
    h.handler(event("Delete"), context(FUNCTION_MS))
    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "FAILED"
    assert reason.startswith("KeyError: 'TrainingJobStatus'") and "run the destroy again" in reason
    assert "Traceback" not in reason and "\n" not in reason and 'File "' not in reason


def test_an_unknown_request_type_answers_failed(aws: Aws) -> None:
    h.handler(event("Replace"), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED" and "unknown request type 'Replace'" in aws.answer["Reason"]


def test_the_cleanup_clients_give_up_quickly_and_the_margin_covers_the_slowest_call_and_the_answer() -> None:
    # One factory (common.stack_cleanup) makes the clients of both Level 3 cleanups.
    for service in SERVICES:
        config = stack_cleanup.client(service).meta.config
        assert config.connect_timeout == stack_cleanup.CONNECT_TIMEOUT_S <= 5
        assert config.read_timeout == stack_cleanup.READ_TIMEOUT_S <= 15
        assert config.retries == {"total_max_attempts": stack_cleanup.MAX_ATTEMPTS, "mode": "standard"}
    # The margin covers the slowest single call (every attempt timing out, plus back-off) and the answer itself.
    slowest_call = stack_cleanup.MAX_ATTEMPTS * (stack_cleanup.CONNECT_TIMEOUT_S + stack_cleanup.READ_TIMEOUT_S) + 20
    assert slowest_call + stack_cleanup.RESPONSE_TIMEOUT_S <= stack_cleanup.ANSWER_MARGIN_S


# --- stop-only (prod): stop and wait, never delete ------------------------------------------------------------

# Every Bedrock operation the sandbox mode calls (imports and models): stop-only calls none of them.
BEDROCK_CALLS = {"ListModelImportJobs", "GetModelImportJob", "ListImportedModels", "GetImportedModel"}
BEDROCK_CALLS |= {"DeleteImportedModel"}


def _iam_actions(calls: list[str], services: tuple[str, ...]) -> set[str]:
    """The IAM actions of the operations a run made, each by the service whose model has it."""
    return {
        f"{IAM_PREFIX[service]}:{call}"
        for call in calls
        for service in services
        if call in stack_cleanup.client(service).meta.service_model.operation_names
    }


def test_stop_only_stops_the_executions_and_training_jobs_waits_and_never_touches_models(
    stop_only_aws: Aws,
) -> None:
    aws = stop_only_aws
    ours, stopping = kit_name("kit-run-1"), kit_name("kit-run-0")
    elsewhere = kit_name("kit-run-9", OTHER_STATE_MACHINE)  # the kit's name, output to another stack's bucket
    aws.deleting()
    aws.executions(["kit-run-1", "kit-run-2"])
    aws.training("InProgress", [training_summary(elsewhere, "InProgress"), training_summary(ours, "InProgress")])
    aws.describe(elsewhere, "InProgress", OTHER_BUCKET)
    aws.describe(ours, "InProgress")
    aws.sagemaker.add_response("stop_training_job", {}, {"TrainingJobName": ours})
    aws.training("Stopping", [training_summary(stopping, "Stopping"), training_summary(ours, "Stopping")])
    aws.describe(stopping, "Stopping")  # already stopping: waited for, not stopped again
    aws.describe(ours, "Stopping")
    aws.describe(stopping, "Stopping")
    aws.describe(ours, "Stopped")
    aws.describe(stopping, "Stopped")

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete", STOP_ONLY_PROPS), context(FUNCTION_MS))

    aws.no_pending()  # one StopTrainingJob was queued: a stop of any other job would have failed the stubber
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.answer["Reason"] == (
        "stopped 2 training job(s) and 2 pipeline execution(s); imported models and import jobs left in place "
        "(StopOnly)"
    )
    assert aws.calls.count("StopExecution") == 2 and aws.calls.count("StopTrainingJob") == 1
    assert max(i for i, c in enumerate(aws.calls) if c == "StopExecution") < aws.calls.index("ListTrainingJobs")
    # Waited until both had stopped: one settle after the executions, one poll while the jobs stop; then the last
    # look for a run started meanwhile.
    assert aws.calls[-3:] == ["DescribeTrainingJob", "DescribeTrainingJob", "ListExecutions"]
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S] * 2
    assert not BEDROCK_CALLS & set(aws.calls)
    # Everything it called is granted to the prod stage's function, which is granted nothing Bedrock.
    assert _iam_actions(aws.calls, STOP_ONLY_SERVICES) <= _granted(build("prod"))


def test_stop_only_at_the_deadline_answers_failed_in_time_naming_the_job_still_stopping(stop_only_aws: Aws) -> None:
    aws, name = stop_only_aws, kit_name("kit-run-5")
    aws.deleting()
    aws.executions([])
    aws.training("InProgress", [])
    aws.training("Stopping", [training_summary(name, "Stopping")])
    for _ in range(80):  # never stops; more answers than the deadline lets it ask for
        aws.describe(name, "Stopping")
    h.handler(event("Delete", STOP_ONLY_PROPS), context(FUNCTION_MS))
    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "FAILED"
    assert reason.startswith("Deadline reached while waiting for training jobs to stop") and name in reason
    assert "run the destroy again to resume" in reason
    assert not BEDROCK_CALLS & set(aws.calls)
    [answered_at] = aws.answered_at
    assert answered_at <= FUNCTION_MS / 1000 - stack_cleanup.ANSWER_MARGIN_S


# --- the construct --------------------------------------------------------------------------------------------


def deployment(stage: str = "sandbox") -> Deployment:
    return Deployment(
        stage=stage, name_prefix="genai-kit", region="us-east-1", log_retention_days=7, powertools_layer_version=38
    )


@dataclass
class Built:
    app: cdk.App
    stack: cdk.Stack
    machine: sfn.StateMachine
    bucket: Any
    cleanup: SageMakerFineTuneCleanup
    training_role: iam.Role
    import_role: iam.Role


def build(stage: str = "sandbox", job_prefix: str | None = None, nag: bool = False) -> Built:
    from cdk_nag import AwsSolutionsChecks

    app = cdk.App(context={k: v for k, v in cdk_json_context().items() if k.startswith("@")})
    stack = cdk.Stack(app, "CleanupTest", env=cdk.Environment(region="us-east-1"))
    where = deployment(stage)
    bucket = SecureBucket(stack, "Artifacts", deployment=where, versioned=False).bucket
    machine = sfn.StateMachine(
        stack,
        "StateMachine",
        state_machine_name=where.resource_name("sft"),
        definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Nothing")),
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=log_group(stack, "Logs", where), level=sfn.LogLevel.ALL),
    )
    suppress(
        machine.role.node.find_child("DefaultPolicy"),
        "AwsSolutions-IAM5",
        "The test stack's stand-in pipeline traces with X-Ray, which supports no resource-level permissions.",
        applies_to=["Resource::*"],
    )
    training_role = iam.Role(stack, "TrainingRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    import_role = iam.Role(stack, "ImportRole", assumed_by=iam.ServicePrincipal("bedrock.amazonaws.com"))
    prefix = job_prefix or f"{where.resource_name('sft')}-"
    cleanup = SageMakerFineTuneCleanup(
        stack,
        "SageMakerCleanup",
        deployment=where,
        machine=machine,
        artifacts=bucket,
        training_role=training_role,
        import_role=import_role,
        job_prefix=prefix,
    )
    if nag:
        cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return Built(app, stack, machine, bucket, cleanup, training_role, import_role)


@pytest.fixture(scope="module")
def small_sandbox() -> tuple[Built, Template]:
    built = build()
    return built, Template.from_stack(built.stack)


def _logical(built: Built, construct: Any) -> str:
    return built.stack.get_logical_id(construct.node.default_child)


def _statements(built: Built) -> list[dict[str, Any]]:
    """The statements of the cleanup function's role."""
    template = Template.from_stack(built.stack)
    role = _logical(built, built.cleanup.function.role)
    [policy] = template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role}]}}).values()
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def _granted(built: Built) -> set[str]:
    return {a for s in _statements(built) for a in as_list(s["Action"])}


def test_the_function_role_is_granted_exactly_what_the_cleanup_calls(small_sandbox: tuple[Built, Template]) -> None:
    built, _ = small_sandbox
    statements = _statements(built)
    machine = _logical(built, built.machine)
    account = {"Ref": "AWS::AccountId"}

    def arn(service: str, rest: str) -> dict[str, Any]:
        return {"Fn::Join": ["", [f"arn:aws:{service}:us-east-1:", account, rest]]}

    ours = {s["Sid"]: s for s in statements if "Sid" in s}
    assert ours == {
        "FindKitResources": {
            "Sid": "FindKitResources",
            "Effect": "Allow",
            "Action": ["bedrock:ListImportedModels", "bedrock:ListModelImportJobs", "sagemaker:ListTrainingJobs"],
            "Resource": "*",
        },
        "StopKitTrainingJobs": {
            "Sid": "StopKitTrainingJobs",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"],
            "Resource": arn("sagemaker", f":training-job/{PREFIX}*"),
        },
        "WatchKitImports": {
            "Sid": "WatchKitImports",
            "Effect": "Allow",
            "Action": "bedrock:GetModelImportJob",
            "Resource": arn("bedrock", ":model-import-job/*"),
        },
        "DeleteKitModels": {
            "Sid": "DeleteKitModels",
            "Effect": "Allow",
            "Action": ["bedrock:DeleteImportedModel", "bedrock:GetImportedModel"],
            "Resource": arn("bedrock", ":imported-model/*"),
        },
        "StopPipeline": {
            "Sid": "StopPipeline",
            "Effect": "Allow",
            "Action": "states:ListExecutions",
            "Resource": {"Ref": machine},
        },
        "StopPipelineExecutions": {
            "Sid": "StopPipelineExecutions",
            "Effect": "Allow",
            "Action": "states:StopExecution",
            "Resource": {
                "Fn::Join": [
                    "",
                    ["arn:aws:states:us-east-1:", account, ":execution:", {"Fn::GetAtt": [machine, "Name"]}, ":*"],
                ]
            },
        },
        "ReadOwnStack": {
            "Sid": "ReadOwnStack",
            "Effect": "Allow",
            "Action": "cloudformation:DescribeStacks",
            "Resource": {"Ref": "AWS::StackId"},
        },
    }
    # Exactly what the code calls: the handler's own steps and the shared ones (stop the executions, read the stack).
    assert {a for s in ours.values() for a in as_list(s["Action"])} == called_actions(
        "sagemaker_cleanup"
    ) | common_actions("training_cleanup")
    # Besides these, only what every kit function has: its own log group and X-Ray.
    others = [s for s in statements if "Sid" not in s]
    assert sorted(str(s["Action"]) for s in others) == sorted(
        [
            str(["logs:CreateLogStream", "logs:PutLogEvents"]),
            str(["xray:PutTelemetryRecords", "xray:PutTraceSegments"]),
        ]
    )


def test_the_resource_is_bounded_and_deleted_before_what_it_needs(small_sandbox: tuple[Built, Template]) -> None:
    built, template = small_sandbox
    [resource] = template.find_resources("Custom::SageMakerFineTuneCleanup").values()
    assert int(resource["Properties"]["ServiceTimeout"]) == CLEANUP_SERVICE_TIMEOUT.to_seconds() == 1200
    function = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": Match.any_value()}})
    [cleanup_function] = [
        f for f in function.values() if f["Properties"]["Handler"] == "sagemaker_cleanup.handler.handler"
    ]
    timeout = cleanup_function["Properties"]["Timeout"]
    assert timeout == CLEANUP_TIMEOUT.to_seconds() == 900  # Lambda's maximum
    assert timeout < int(resource["Properties"]["ServiceTimeout"])  # the function always answers first
    assert timeout > stack_cleanup.ANSWER_MARGIN_S
    # CloudFormation deletes the cleanup before the state machine, the artifacts bucket (and its auto-delete
    # resource, which empties it), the training and (sandbox: it waits for imports) import roles and the
    # function's permissions.
    auto_delete = built.bucket.node.find_child("AutoDeleteObjectsCustomResource").node.default_child
    needed = {
        _logical(built, built.machine),
        _logical(built, built.bucket),
        built.stack.get_logical_id(auto_delete),
        _logical(built, built.training_role),
        _logical(built, built.import_role),
        _logical(built, built.cleanup.function.role),
        built.stack.get_logical_id(built.cleanup.function.role.node.find_child("DefaultPolicy").node.default_child),
    }
    assert needed <= set(resource["DependsOn"])


def test_the_properties_name_what_the_pipeline_creates(small_sandbox: tuple[Built, Template]) -> None:
    built, template = small_sandbox
    [resource] = template.find_resources("Custom::SageMakerFineTuneCleanup").values()
    props = resource["Properties"]
    bucket = {"Ref": _logical(built, built.bucket)}
    assert props["NamePrefix"] == PREFIX
    assert props["StateMachineArn"] == {"Ref": _logical(built, built.machine)}
    assert props["TrainingOutputUri"] == {"Fn::Join": ["", ["s3://", bucket, f"/{pipeline.OUTPUT_PREFIX}"]]}
    [_, parts] = props["ImportSourceUri"]["Fn::Join"]
    assert parts[:2] == ["s3://", bucket]
    key = parts[2].removeprefix("/").replace(h.NAME_SLOT, kit_name("kit-20261101-120000-abcd"))
    # The same key pattern the import role may read, and the handler fills the name in the same slot.
    assert fnmatch.fnmatchcase(key, pipeline.merged_prefix(PREFIX))
    assert h.Scope.from_properties({**PROPS, "ImportSourceUri": f"s3://b/{parts[2].removeprefix('/')}"})


def test_the_prod_cleanup_only_stops_and_cannot_delete_models() -> None:
    prod = build("prod")
    [resource] = Template.from_stack(prod.stack).find_resources("Custom::SageMakerFineTuneCleanup").values()
    props = resource["Properties"]
    # Stop-only, and it names no models' source: the handler refuses ImportSourceUri in this mode.
    assert props["Mode"] == h.STOP_ONLY and "ImportSourceUri" not in props
    assert props["NamePrefix"] == "genai-kit-prod-sft-"
    assert props["StateMachineArn"] == {"Ref": _logical(prod, prod.machine)}
    # The handler takes these properties (tokens stand in as strings) as stop-only.
    assert not h.Scope.from_properties({k: v if isinstance(v, str) else "x" for k, v in props.items()}).deletes_models
    ours = {s["Sid"]: s for s in _statements(prod) if "Sid" in s}
    granted = {a for s in ours.values() for a in as_list(s["Action"])}
    # Exactly what the stop-only steps call (stopping executions, training jobs, reading the stack: the shared
    # steps), none of the handler's own Bedrock calls.
    assert granted == called_actions("sagemaker_cleanup") - bedrock_actions() | common_actions("training_cleanup")
    assert granted == {
        "sagemaker:ListTrainingJobs",
        "sagemaker:DescribeTrainingJob",
        "sagemaker:StopTrainingJob",
        "states:ListExecutions",
        "states:StopExecution",
        "cloudformation:DescribeStacks",
    }
    # From the Service Authorization Reference: no Bedrock action at all, nothing on an imported model or import
    # job, and the only Write actions are stops.
    for action in granted:
        service, name = action.split(":")
        details = iam_reference().actions.get_action_details(service, name)
        types = {t["name"] for t in details["resourceTypes"]}
        assert service != "bedrock" and not types & {"imported-model", "model-import-job"}, action
        assert details["accessLevel"] != "Write" or name.startswith("Stop"), (action, details["accessLevel"])
    assert ours["StopKitTrainingJobs"]["Resource"] == {
        "Fn::Join": [
            "",
            ["arn:aws:sagemaker:us-east-1:", {"Ref": "AWS::AccountId"}, ":training-job/genai-kit-prod-sft-*"],
        ]
    }
    # The sandbox's function is the one that deletes.
    assert "bedrock:DeleteImportedModel" in _granted(build())


def bedrock_actions() -> set[str]:
    """The Bedrock actions the handler's own steps call (imports and models): the sandbox mode's."""
    return {a for a in called_actions("sagemaker_cleanup") if a.startswith("bedrock:")}


STACK = "GenAiKit-3-FineTune-SageMaker"


def _needed(template: dict[str, Any], cleanup: dict[str, Any]) -> dict[str, set[str]]:
    """What a stopping training job, a running import and the cleanup itself use, read from the template."""

    def policies_of(role: str) -> set[str]:
        found = resources(template, "AWS::IAM::Policy").items()
        return {lid for lid, p in found if {"Ref": role} in p["Properties"]["Roles"]}

    def trusting(principal: str) -> str:
        [role] = [
            lid
            for lid, r in resources(template, "AWS::IAM::Role").items()
            if principal in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
        ]
        return role

    machine = cleanup["Properties"]["StateMachineArn"]["Ref"]
    machine_role = template["Resources"][machine]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    bucket = cleanup["Properties"]["TrainingOutputUri"]["Fn::Join"][1][1]["Ref"]
    bucket_parts = {
        lid
        for lid, r in template["Resources"].items()
        if r["Type"] in ("AWS::S3::BucketPolicy", "Custom::S3AutoDeleteObjects")
        and r["Properties"].get("Bucket", r["Properties"].get("BucketName")) == {"Ref": bucket}
    }
    [function] = [
        f["Properties"]
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "sagemaker_cleanup.handler.handler"
    ]
    function_role = function["Role"]["Fn::GetAtt"][0]
    training_role, import_role = trusting("sagemaker.amazonaws.com"), trusting("bedrock.amazonaws.com")
    return {
        "state machine": {machine, machine_role, *policies_of(machine_role)},
        "training role": {training_role, *policies_of(training_role)},
        "bucket": {bucket, *bucket_parts},
        "own role": {function_role, *policies_of(function_role)},
        "import role": {import_role, *policies_of(import_role)},
    }


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_the_cleanup_is_in_every_stage_and_deleted_before_what_a_stopping_job_uses(
    variant: str, request: pytest.FixtureRequest
) -> None:
    template = request.getfixturevalue(variant).templates[STACK]
    [(lid, resource)] = resources(template, "Custom::SageMakerFineTuneCleanup").items()
    assert resource["Properties"]["Mode"] == {"sandbox": h.STOP_AND_DELETE, "prod": h.STOP_ONLY}[variant]
    depends = set(as_list(resource.get("DependsOn", [])))
    needed = _needed(template, resource)
    # CloudFormation deletes a resource only after every resource that depends on it: the cleanup runs before the
    # state machine, the training role and its policy, the bucket (with, in the sandbox, its auto-delete resource)
    # and its own permissions; in the sandbox also the import role, which a running import uses while it waits.
    import_role = needed.pop("import role")
    for what, ids in needed.items():
        assert ids <= depends, (what, sorted(ids - depends))
    assert (import_role <= depends) == (variant == "sandbox")
    if variant == "sandbox":
        assert resources(template, "Custom::S3AutoDeleteObjects")
    # ... and only the teardown and its triggers wait for it, so it is among the first deleted once they are gone.
    # The executions it stops end ABORTED: a teardown started for them would delete their imported models, which
    # prod keeps (before, the rule and the hourly sweep could still start one while the cleanup ran; the state
    # machine goes first too, as events may still match a rule for a short time after DeleteRule).
    others = {k: v for k, v in template["Resources"].items() if k != lid}
    waiting = {k for k, v in others.items() if lid in as_list(v.get("DependsOn", []))}
    [teardown] = [
        k
        for k, v in resources(template, "AWS::StepFunctions::StateMachine").items()
        if str(v["Properties"].get("StateMachineName", "")).endswith("sft-teardown")
    ]
    starts_teardown = {
        k
        for k, v in others.items()
        if v["Type"] in ("AWS::Events::Rule", "AWS::Scheduler::Schedule")
        and (teardown in json.dumps(v["Properties"]) or _targets_a_function_that_starts(template, v, teardown))
    }
    assert len(starts_teardown) == 2 and waiting == {*starts_teardown, teardown}, (waiting, starts_teardown)
    without_order = {k: {**v, "DependsOn": None} for k, v in others.items()}
    assert f'"{lid}"' not in json.dumps(without_order) and f'"{lid}"' not in json.dumps(template.get("Outputs", {}))


def _targets_a_function_that_starts(template: dict[str, Any], trigger: dict[str, Any], machine: str) -> bool:
    """Whether a schedule's target is a function whose environment names ``machine`` (the teardown sweep)."""
    target = json.dumps(trigger["Properties"].get("Target", {}))
    return any(
        f'"{k}"' in target and machine in json.dumps(v["Properties"].get("Environment", {}))
        for k, v in resources(template, "AWS::Lambda::Function").items()
    )


@pytest.mark.parametrize(
    "prefix", ["genai-kit-sft-", "genai-kit-sandbox-", "genai-kit-sandbox-sft", "genai-kit-prod-sft-"]
)
def test_a_job_prefix_without_the_stage_is_refused(prefix: str) -> None:
    # Without the stage, a sandbox destroy would match the prod stage's jobs and models in the same account.
    with pytest.raises(ValueError, match="must start with 'genai-kit-sandbox-'"):
        build(job_prefix=prefix)


@pytest.mark.parametrize("stage", ["sandbox", "prod"])
def test_cdk_nag_reports_nothing_unsuppressed(stage: str) -> None:
    built = build(stage, nag=True)
    artifact = built.app.synth().get_stack_by_name(built.stack.stack_name)
    findings = [
        m.entry.data for m in artifact.messages if "AwsSolutions-" in str(m.entry.data) and "SageMakerCleanup" in m.id
    ]
    assert findings == []


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_cdk_nag_reports_nothing_unsuppressed_on_the_cleanup_in_the_app(
    variant: str, request: pytest.FixtureRequest
) -> None:
    messages = request.getfixturevalue(variant).messages[STACK]
    assert [m for m in messages if "AwsSolutions-" in m["data"] and "/SageMakerCleanup/" in m["path"]] == []
