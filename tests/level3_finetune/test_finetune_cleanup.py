"""The Level 3 cleanup custom resource: on stack deletion it stops the kit's executions and jobs and removes what
serves the kit's custom models and, in the sandbox (DeleteModels), exactly those models; in prod (KeepModels) it
never deletes a model and is not granted to. It always answers CloudFormation in time. Every call goes through a
botocore Stubber on the real clients, so each request is checked against the service model. And the construct in
both stages: the mode, the grants, deleted before the key and the state machine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template

from common import stack_cleanup
from finetune_cleanup import handler as h
from stacks.level3_finetune.cleanup import CustomModelCleanup
from stacks.level3_finetune.names import PipelineNames, machine_name
from stacks.shared.deployment import Deployment
from tests.cleanup_helpers import IAM_PREFIX, T0, FakeAws, called_actions, cleanup_event, context, fake_aws
from tests.conftest import cdk_json_context
from tests.infra.helpers import as_list, iam_reference

ACCOUNT = "123456789012"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
OTHER_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/99999999-8888-7777-6666-555555555555"
PREFIX = "genai-kit-sandbox-ft"
STATE_MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:genai-kit-sandbox-finetune"
STACK_ID = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/GenAiKit-3-FineTune/abc"
PROPS = {
    "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:cleanup",
    "Mode": "DeleteModels",
    "KeyArn": KEY,
    "ModelNamePrefix": f"{PREFIX}-model-",
    "JobNamePrefix": f"{PREFIX}-job-",
    "StateMachineArn": STATE_MACHINE,
}
KEEP_PROPS = PROPS | {"Mode": "KeepModels"}  # the prod stage's
BASE = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k"
FUNCTION_MS = 600_000  # the function's 10-minute timeout
SERVICES = ("bedrock", "stepfunctions", "cloudformation")


def model_arn(suffix: str) -> str:
    return f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-micro-v1:0:128k/{suffix}"


def model_summary(name: str, suffix: str) -> dict[str, Any]:
    return {
        "modelArn": model_arn(suffix),
        "modelName": name,
        "creationTime": T0,
        "baseModelArn": BASE,
        "baseModelName": "Nova Micro",
    }


def deployment(name: str, model: str) -> dict[str, Any]:
    arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model-deployment/{name[-12:]}"
    return {
        "customModelDeploymentArn": arn,
        "customModelDeploymentName": name,
        "modelArn": model,
        "createdAt": T0,
        "status": "Active",
    }


def throughput(name: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "provisionedModelName": name,
        "provisionedModelArn": f"arn:aws:bedrock:us-east-1:{ACCOUNT}:provisioned-model/{name[-12:]}",
        "modelArn": model,
        "desiredModelArn": model,
        "foundationModelArn": BASE,
        "modelUnits": 1,
        "desiredModelUnits": 1,
        "status": "InService",
        "creationTime": T0,
        "lastModifiedTime": T0,
        **extra,
    }


def job_summary(name: str, status: str) -> dict[str, Any]:
    arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-customization-job/amazon.nova-micro-v1:0:128k/{name[-12:]}"
    return {"jobArn": arn, "baseModelArn": BASE, "jobName": name, "status": status, "creationTime": T0}


def job(summary: dict[str, Any], key: str, status: str | None = None) -> dict[str, Any]:
    return {
        "jobArn": summary["jobArn"],
        "jobName": summary["jobName"],
        "outputModelName": summary["jobName"].replace("-job-", "-model-"),
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/customization",
        "creationTime": T0,
        "baseModelArn": BASE,
        "trainingDataConfig": {"s3Uri": "s3://data/datasets/train.jsonl"},
        "validationDataConfig": {"validators": []},
        "outputDataConfig": {"s3Uri": "s3://output/customization-output/"},
        "outputModelKmsKeyArn": key,
        "status": status or summary["status"],
    }


class Aws(FakeAws):
    def jobs(self, summaries: list[dict[str, Any]]) -> None:
        self.bedrock.add_response(
            "list_model_customization_jobs",
            {"modelCustomizationJobSummaries": summaries},
            {"nameContains": PROPS["JobNamePrefix"]},
        )

    def serving(self, model: str, deployments: list[Any], throughputs: list[Any]) -> None:
        self.bedrock.add_response(
            "list_custom_model_deployments", {"modelDeploymentSummaries": deployments}, {"modelArnEquals": model}
        )
        self.bedrock.add_response(
            "list_provisioned_model_throughputs", {"provisionedModelSummaries": throughputs}, {"modelArnEquals": model}
        )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "finetune-cleanup")
    cause = "The fine-tuning stack is being deleted"
    with fake_aws(monkeypatch, Aws, SERVICES, stack_id=STACK_ID, state_machine=STATE_MACHINE, cause=cause) as world:
        yield world


def event(kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return cleanup_event(
        kind,
        PROPS if props is None else props,
        stack_id=STACK_ID,
        logical_id="CustomModelCleanup",
        resource_type="Custom::BedrockFineTuneCleanup",
        physical_id=h.PHYSICAL_ID,
    )


def test_delete_removes_exactly_the_kits_models_serving_resources_first(aws: Aws) -> None:
    ours_1, ours_2 = f"{PREFIX}-model-0123456789ab", f"{PREFIX}-model-ba9876543210"
    other_key = f"{PREFIX}-model-aaaaaaaaaaaa"  # the kit's name, but not this stack's key
    other_name = f"{PREFIX}-model-mine"  # this stack's prefix, but not a name the pipeline gives
    aws.deleting()
    aws.executions(["e1"])
    aws.executions([])  # the last look, after what serves the models is gone
    aws.jobs([job_summary(f"{PREFIX}-job-0123456789ab", "Completed")])
    aws.bedrock.add_response(
        "list_custom_models",
        {
            "modelSummaries": [
                model_summary(ours_1, "0123456789ab"),
                model_summary(other_key, "aaaaaaaaaaaa"),
                model_summary(other_name, "cccccccccccc"),
                # Every custom model of the account is listed (no nameContains: ListCustomModels documents it as
                # a job-name filter); one of another name is passed over without a GetCustomModel.
                model_summary("team-model", "dddddddddddd"),
            ],
            "nextToken": "page-2",
        },
        {},
    )
    aws.bedrock.add_response(
        "list_custom_models",
        {"modelSummaries": [model_summary(ours_2, "ba9876543210")]},
        {"nextToken": "page-2"},
    )
    for name, suffix, key in ((ours_1, "0123456789ab", KEY), (other_key, "aaaaaaaaaaaa", OTHER_KEY)):
        aws.bedrock.add_response(
            "get_custom_model",
            {"modelArn": model_arn(suffix), "modelName": name, "creationTime": T0, "modelKmsKeyArn": key},
            {"modelIdentifier": model_arn(suffix)},
        )
    aws.bedrock.add_response(
        "get_custom_model",
        {"modelArn": model_arn("ba9876543210"), "modelName": ours_2, "creationTime": T0, "modelKmsKeyArn": KEY},
        {"modelIdentifier": model_arn("ba9876543210")},
    )
    # First pass: a deployment serves model 1, a throughput serves model 2; both are deleted.
    served = deployment(f"{PREFIX}-deploy-0123456789ab", model_arn("0123456789ab"))
    provisioned = throughput(f"{PREFIX}-deploy-ba9876543210", model_arn("ba9876543210"))
    aws.serving(model_arn("0123456789ab"), [served], [])
    aws.bedrock.add_response(
        "delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": served["customModelDeploymentArn"]}
    )
    aws.serving(model_arn("ba9876543210"), [], [provisioned])
    aws.bedrock.add_response(
        "delete_provisioned_model_throughput", {}, {"provisionedModelId": provisioned["provisionedModelArn"]}
    )
    # Second pass: the deployment is still deleting; third pass: nothing serves any more.
    aws.serving(model_arn("0123456789ab"), [served], [])
    aws.serving(model_arn("ba9876543210"), [], [])
    aws.serving(model_arn("0123456789ab"), [], [])
    aws.serving(model_arn("ba9876543210"), [], [])
    aws.bedrock.add_response("delete_custom_model", {}, {"modelIdentifier": model_arn("0123456789ab")})
    aws.bedrock.add_response("delete_custom_model", {}, {"modelIdentifier": model_arn("ba9876543210")})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert ours_1 in aws.answer["Reason"] and ours_2 in aws.answer["Reason"]
    assert other_key not in aws.answer["Reason"] and other_name not in aws.answer["Reason"]
    calls = aws.calls
    first_model_delete = calls.index("DeleteCustomModel")
    assert calls.index("DeleteCustomModelDeployment") < first_model_delete
    assert calls.index("DeleteProvisionedModelThroughput") < first_model_delete
    # The models go only after a pass that found nothing serving them.
    assert (
        calls[first_model_delete - 4 : first_model_delete]
        == [
            "ListCustomModelDeployments",
            "ListProvisionedModelThroughputs",
        ]
        * 2
    )
    assert calls.count("DeleteCustomModel") == 2


def test_a_running_kit_job_is_stopped_and_waited_for_others_are_left_alone(aws: Aws) -> None:
    ours = job_summary(f"{PREFIX}-job-0123456789ab", "InProgress")
    theirs = job_summary(f"{PREFIX}-job-aaaaaaaaaaaa", "InProgress")  # the kit's name, another key
    manual = job_summary(f"{PREFIX}-job-by-hand", "InProgress")  # not a name the pipeline gives
    aws.deleting()
    aws.executions([])
    aws.executions([])  # the last look, after what serves the models is gone
    aws.jobs([ours, theirs, manual])
    aws.bedrock.add_response("get_model_customization_job", job(ours, KEY), {"jobIdentifier": ours["jobArn"]})
    aws.bedrock.add_response("stop_model_customization_job", {}, {"jobIdentifier": ours["jobArn"]})
    aws.bedrock.add_response("get_model_customization_job", job(theirs, OTHER_KEY), {"jobIdentifier": theirs["jobArn"]})
    aws.bedrock.add_response(
        "get_model_customization_job", job(ours, KEY, "Stopping"), {"jobIdentifier": ours["jobArn"]}
    )
    aws.bedrock.add_response(
        "get_model_customization_job", job(ours, KEY, "Stopped"), {"jobIdentifier": ours["jobArn"]}
    )
    aws.bedrock.add_response("list_custom_models", {"modelSummaries": []}, {})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS"
    assert "stopped 1 customization job" in aws.answer["Reason"]
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S]


@pytest.mark.parametrize("code", ["ConflictException", "ValidationException"])
def test_a_job_that_ends_before_the_stop_is_refused_it_and_the_delete_goes_on(aws: Aws, code: str) -> None:
    """StopModelCustomizationJob refuses a job that ended between the look and the stop (botocore declares both
    codes for it; the pipeline's StopJob catches the same two). Before: ValidationException answered FAILED and the
    stack went to DELETE_FAILED with its key kept."""
    ours = job_summary(f"{PREFIX}-job-0123456789ab", "InProgress")
    aws.deleting()
    aws.executions([])
    aws.executions([])
    aws.jobs([ours])
    aws.bedrock.add_response("get_model_customization_job", job(ours, KEY), {"jobIdentifier": ours["jobArn"]})
    aws.bedrock.add_client_error(
        "stop_model_customization_job",
        code,
        "The job is not in progress",
        400,
        expected_params={"jobIdentifier": ours["jobArn"]},
    )
    aws.bedrock.add_response(
        "get_model_customization_job", job(ours, KEY, "Completed"), {"jobIdentifier": ours["jobArn"]}
    )
    aws.bedrock.add_response("list_custom_models", {"modelSummaries": []}, {})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.clock.sleeps == []


def test_the_stop_refusals_are_errors_the_operation_declares() -> None:
    """One list (finetune_cleanup.stop), read by the cleanup and by the pipeline's StopJob catch."""
    import botocore.session

    from finetune_cleanup.stop import STOP_REFUSED

    operation = botocore.session.get_session().get_service_model("bedrock").operation_model("StopModelCustomizationJob")
    assert set(STOP_REFUSED) <= {error.name for error in operation.error_shapes}


def test_a_job_answer_without_a_status_is_taken_as_still_busy(aws: Aws) -> None:
    """botocore bedrock 2023-04-20 GetModelCustomizationJobResponse does not require status. Before: a KeyError
    answered FAILED and the stack delete failed; now the listed busy status stands on the first look (the job is
    stopped) and an answer without it is polled again, as the pipeline's JobStatus? does."""
    ours = job_summary(f"{PREFIX}-job-0123456789ab", "InProgress")
    without_status = {k: v for k, v in job(ours, KEY).items() if k != "status"}
    aws.deleting()
    aws.executions([])
    aws.executions([])
    aws.jobs([ours])
    aws.bedrock.add_response("get_model_customization_job", without_status, {"jobIdentifier": ours["jobArn"]})
    aws.bedrock.add_response("stop_model_customization_job", {}, {"jobIdentifier": ours["jobArn"]})
    aws.bedrock.add_response("get_model_customization_job", without_status, {"jobIdentifier": ours["jobArn"]})
    aws.bedrock.add_response(
        "get_model_customization_job", job(ours, KEY, "Stopping"), {"jobIdentifier": ours["jobArn"]}
    )
    aws.bedrock.add_response(
        "get_model_customization_job", job(ours, KEY, "Stopped"), {"jobIdentifier": ours["jobArn"]}
    )
    aws.bedrock.add_response("list_custom_models", {"modelSummaries": []}, {})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert "stopped 1 customization job" in aws.answer["Reason"]
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S] * 2


def test_a_run_started_after_the_first_look_is_stopped_with_its_job(aws: Aws) -> None:
    """Before: the executions were listed once, so a run the upload starter started meanwhile (it goes on with a
    start it is retrying after its own deletion) created a job nothing stopped, and the answer was SUCCESS."""
    late = job_summary(f"{PREFIX}-job-0123456789ab", "InProgress")
    aws.deleting()
    aws.executions([])  # the first look: nothing running
    aws.executions(["late-run"])  # the last look
    aws.jobs([])
    aws.bedrock.add_response("list_custom_models", {"modelSummaries": []}, {})
    aws.jobs([late])
    aws.bedrock.add_response("get_model_customization_job", job(late, KEY), {"jobIdentifier": late["jobArn"]})
    aws.bedrock.add_response("stop_model_customization_job", {}, {"jobIdentifier": late["jobArn"]})
    aws.bedrock.add_response(
        "get_model_customization_job", job(late, KEY, "Stopped"), {"jobIdentifier": late["jobArn"]}
    )

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert "stopped 1 customization job(s) and 1 pipeline execution(s)" in aws.answer["Reason"]


def test_the_last_look_does_not_stop_or_count_again_a_run_the_first_one_stopped(aws: Aws) -> None:
    """ListExecutions is eventually consistent: a run stopped seconds before may still be listed RUNNING."""
    aws.deleting()
    aws.executions(["e1"])
    aws.executions([], already_stopped=("e1",))  # the last look: e1 still listed, not stopped again
    aws.jobs([])
    aws.bedrock.add_response("list_custom_models", {"modelSummaries": []}, {})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()  # a second StopExecution of e1 would have had no stub
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert "and 1 pipeline execution(s)" in aws.answer["Reason"]


def test_when_the_deadline_comes_it_answers_failed_in_time_naming_what_is_left(aws: Aws) -> None:
    ours = f"{PREFIX}-model-0123456789ab"
    stuck = deployment(f"{PREFIX}-deploy-0123456789ab", model_arn("0123456789ab"))
    aws.deleting()
    aws.executions([])
    aws.jobs([])
    aws.bedrock.add_response(
        "list_custom_models",
        {"modelSummaries": [model_summary(ours, "0123456789ab")]},
        {},
    )
    aws.bedrock.add_response(
        "get_custom_model",
        {"modelArn": model_arn("0123456789ab"), "modelName": ours, "creationTime": T0, "modelKmsKeyArn": KEY},
        {"modelIdentifier": model_arn("0123456789ab")},
    )
    aws.serving(model_arn("0123456789ab"), [stuck], [])
    aws.bedrock.add_response(
        "delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": stuck["customModelDeploymentArn"]}
    )
    for _ in range(60):  # the deployment never goes away; more answers than the deadline lets it ask for
        aws.serving(model_arn("0123456789ab"), [stuck], [])

    h.handler(event("Delete"), context(FUNCTION_MS))

    assert aws.answer["Status"] == "FAILED"
    assert "Deadline reached" in aws.answer["Reason"] and stuck["customModelDeploymentName"] in aws.answer["Reason"]
    assert "run the destroy again" in aws.answer["Reason"]
    assert "DeleteCustomModel" not in aws.calls  # the model is kept with the key; nothing is unusable
    [answered_at] = aws.answered_at
    assert answered_at <= FUNCTION_MS / 1000 - stack_cleanup.ANSWER_MARGIN_S


def test_calls_that_take_their_worst_case_still_leave_time_to_answer(aws: Aws) -> None:
    """Every call may take its worst case (MAX_ATTEMPTS x (connect + read), and back-off): the deadline is checked
    before each one, so however many calls a step makes, the answer to CloudFormation goes out in time."""
    c = stack_cleanup
    aws.call_seconds = c.MAX_ATTEMPTS * (c.CONNECT_TIMEOUT_S + c.READ_TIMEOUT_S) + 6  # 45 s, back-off included
    assert aws.call_seconds + c.RESPONSE_TIMEOUT_S <= c.ANSWER_MARGIN_S  # the margin pays for one call
    # Four running jobs of the kit that never finish stopping: each poll asks for each of them
    ours = [job_summary(f"{PREFIX}-job-{n:012x}", "InProgress") for n in range(4)]
    aws.deleting()
    aws.executions([])
    aws.jobs(ours)
    for summary in ours:
        aws.bedrock.add_response("get_model_customization_job", job(summary, KEY), {"jobIdentifier": summary["jobArn"]})
        aws.bedrock.add_response("stop_model_customization_job", {}, {"jobIdentifier": summary["jobArn"]})
    for _ in range(5):
        for summary in ours:
            aws.bedrock.add_response(
                "get_model_customization_job", job(summary, KEY, "Stopping"), {"jobIdentifier": summary["jobArn"]}
            )

    h.handler(event("Delete"), context(FUNCTION_MS))

    assert aws.answer["Status"] == "FAILED" and "Deadline reached" in aws.answer["Reason"]
    [answered_at] = aws.answered_at
    assert answered_at + c.RESPONSE_TIMEOUT_S <= FUNCTION_MS / 1000


def _a_model_served_by_a_committed_throughput(aws: Aws, duration: str, days_left: int) -> None:
    """The kit's one model, served by a throughput someone reserved by hand with a commitment."""
    ours = f"{PREFIX}-model-0123456789ab"
    committed = throughput(
        "reserved-by-hand",
        model_arn("0123456789ab"),
        commitmentDuration=duration,
        commitmentExpirationTime=datetime.now(UTC) + timedelta(days=days_left),
    )
    aws.deleting()
    aws.executions([])
    aws.executions([])  # the last look, after what serves the models is gone
    aws.jobs([])
    aws.bedrock.add_response(
        "list_custom_models",
        {"modelSummaries": [model_summary(ours, "0123456789ab")]},
        {},
    )
    aws.bedrock.add_response(
        "get_custom_model",
        {"modelArn": model_arn("0123456789ab"), "modelName": ours, "creationTime": T0, "modelKmsKeyArn": KEY},
        {"modelIdentifier": model_arn("0123456789ab")},
    )
    aws.serving(model_arn("0123456789ab"), [], [committed])


def test_a_committed_throughput_fails_the_delete_with_the_reason(aws: Aws) -> None:
    _a_model_served_by_a_committed_throughput(aws, "OneMonth", days_left=20)

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "FAILED"
    assert "reserved-by-hand" in aws.answer["Reason"] and "OneMonth commitment" in aws.answer["Reason"]


def _kit_models(aws: Aws, *suffixes: str) -> None:
    """The kit's models (the pipeline's names, this stack's key), one per suffix, found in that order."""
    names = {suffix: f"{PREFIX}-model-{suffix}" for suffix in suffixes}
    aws.bedrock.add_response(
        "list_custom_models",
        {"modelSummaries": [model_summary(name, suffix) for suffix, name in names.items()]},
        {},
    )
    for suffix, name in names.items():
        aws.bedrock.add_response(
            "get_custom_model",
            {"modelArn": model_arn(suffix), "modelName": name, "creationTime": T0, "modelKmsKeyArn": KEY},
            {"modelIdentifier": model_arn(suffix)},
        )


@pytest.mark.parametrize("props", [PROPS, KEEP_PROPS], ids=["DeleteModels", "KeepModels"])
def test_a_committed_throughput_does_not_stop_the_deletion_of_everything_else(aws: Aws, props: dict[str, Any]) -> None:
    # Model A: a throughput reserved by hand with a commitment (listed first), and the kit's own; model B: a
    # deployment and a throughput. Everything but the committed one is deleted, and so is model B (in the
    # sandbox); model A, which the committed throughput still serves, is kept.
    a, b = model_arn("0123456789ab"), model_arn("ba9876543210")
    expires = datetime.now(UTC) + timedelta(days=20)
    committed = throughput("reserved-by-hand", a, commitmentDuration="OneMonth", commitmentExpirationTime=expires)
    kit_a, kit_b = throughput(f"{PREFIX}-deploy-0123456789ab", a), throughput(f"{PREFIX}-deploy-ba9876543210", b)
    served_b = deployment(f"{PREFIX}-deploy-bbbbbbbbbbbb", b)
    aws.deleting()
    aws.executions([])
    aws.executions([])  # the last look, after what serves the models is gone
    aws.jobs([])
    _kit_models(aws, "0123456789ab", "ba9876543210")
    aws.serving(a, [], [committed, kit_a])
    aws.bedrock.add_response(
        "delete_provisioned_model_throughput", {}, {"provisionedModelId": kit_a["provisionedModelArn"]}
    )
    aws.serving(b, [served_b], [kit_b])
    aws.bedrock.add_response(
        "delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": served_b["customModelDeploymentArn"]}
    )
    aws.bedrock.add_response(
        "delete_provisioned_model_throughput", {}, {"provisionedModelId": kit_b["provisionedModelArn"]}
    )
    aws.serving(a, [], [committed])  # only the committed one is left
    aws.serving(b, [], [])
    if props is PROPS:
        aws.bedrock.add_response("delete_custom_model", {}, {"modelIdentifier": b})  # model B only

    h.handler(event("Delete", props), context(FUNCTION_MS))

    aws.no_pending()
    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "FAILED", reason
    assert "reserved-by-hand" in reason and "OneMonth commitment" in reason and expires.isoformat() in reason
    assert "Deadline reached" not in reason
    # The reason also says what this run removed.
    assert "1 deployment(s), 2 Provisioned Throughput(s)" in reason
    assert (f"1 custom model(s) [{PREFIX}-model-ba9876543210]" in reason) is (props is PROPS)
    assert aws.calls.count("DeleteProvisionedModelThroughput") == 2  # never the committed one
    assert aws.calls.count("DeleteCustomModel") == (1 if props is PROPS else 0)


@pytest.mark.parametrize("kind", ["deployment", "throughput"])
def test_a_delete_answered_conflict_is_asked_again_on_the_next_pass(aws: Aws, kind: str) -> None:
    # Bedrock answers the first delete ConflictException (busy): only an accepted delete, or one already gone,
    # counts as asked, so the next pass asks again.
    a = model_arn("0123456789ab")
    serving = deployment(f"{PREFIX}-deploy-0123456789ab", a) if kind == "deployment" else None
    provisioned = throughput(f"{PREFIX}-deploy-0123456789ab", a) if kind == "throughput" else None
    if serving is not None:
        operation, params = (
            "delete_custom_model_deployment",
            {"customModelDeploymentIdentifier": serving["customModelDeploymentArn"]},
        )
        listed: tuple[list[Any], list[Any]] = ([serving], [])
    else:
        assert provisioned is not None
        operation, params = (
            "delete_provisioned_model_throughput",
            {"provisionedModelId": provisioned["provisionedModelArn"]},
        )
        listed = ([], [provisioned])
    aws.deleting()
    aws.executions([])
    aws.executions([])  # the last look, after what serves the models is gone
    aws.jobs([])
    _kit_models(aws, "0123456789ab")
    aws.serving(a, *listed)
    aws.bedrock.add_client_error(operation, "ConflictException", "busy", expected_params=params)
    aws.serving(a, *listed)  # still there: asked again
    aws.bedrock.add_response(operation, {}, params)
    aws.serving(a, [], [])  # gone
    aws.bedrock.add_response("delete_custom_model", {}, {"modelIdentifier": a})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    api = {"deployment": "DeleteCustomModelDeployment", "throughput": "DeleteProvisionedModelThroughput"}[kind]
    assert aws.calls.count(api) == 2
    counted = {"deployment": "1 deployment(s), 0 Provisioned", "throughput": "0 deployment(s), 1 Provisioned"}[kind]
    assert counted in aws.answer["Reason"]


@pytest.mark.parametrize("code", ["AccessDeniedException", "ValidationException"])
def test_a_model_delete_refused_answers_failed_not_deleted(aws: Aws, code: str) -> None:
    # Only a model already gone counts as deleted (delete_when_free): a refusal keeps it stored and billed, so the
    # stack's deletion fails saying why instead of answering SUCCESS.
    a = model_arn("0123456789ab")
    aws.deleting()
    aws.executions([])
    aws.jobs([])
    _kit_models(aws, "0123456789ab")
    aws.serving(a, [], [])
    aws.bedrock.add_client_error("delete_custom_model", code, "refused", expected_params={"modelIdentifier": a})

    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "FAILED"
    assert aws.answer["Reason"].startswith(f"{code}: refused")


def test_a_delete_that_is_not_the_stacks_deletion_keeps_the_models(aws: Aws) -> None:
    # An update that removes the resource (for example a switch to the prod stage) must not delete models.
    aws.deleting("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS" and "left in place" in aws.answer["Reason"]


def test_an_api_error_answers_failed_and_says_what_to_do(aws: Aws) -> None:
    aws.deleting()
    aws.executions([])
    aws.bedrock.add_client_error("list_model_customization_jobs", "AccessDeniedException", "not allowed")
    h.handler(event("Delete"), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED"
    assert aws.answer["Reason"].startswith("AccessDeniedException: not allowed")
    assert "key is kept" in aws.answer["Reason"]


@pytest.mark.parametrize("kind", ["Create", "Update"])
def test_create_and_update_do_nothing(aws: Aws, kind: str) -> None:
    h.handler(event(kind), context(FUNCTION_MS))  # no response is queued: any AWS call would fail the request
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS"
    assert aws.answer["PhysicalResourceId"] == h.PHYSICAL_ID


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({k: v for k, v in PROPS.items() if k != "KeyArn"}, "missing resource properties: KeyArn"),
        ({k: v for k, v in PROPS.items() if k != "Mode"}, "missing resource properties: Mode"),
        ({**PROPS, "Mode": "StopOnly"}, "Mode 'StopOnly' is not one of DeleteModels, KeepModels"),
    ],
)
def test_create_with_a_wrong_property_fails_at_deploy_time(aws: Aws, props: dict[str, Any], named: str) -> None:
    h.handler(event("Create", props), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED" and named in aws.answer["Reason"]


def test_an_unknown_request_type_answers_failed(aws: Aws) -> None:
    h.handler(event("Replace"), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED" and "unknown request type 'Replace'" in aws.answer["Reason"]


# --- KeepModels (prod): stop, unserve, never delete a model ------------------------------------------------------


def _iam_actions(calls: list[str]) -> set[str]:
    """The IAM actions of the operations a run made, each by the service whose model (botocore's) has it."""
    return {
        f"{IAM_PREFIX[service]}:{call}"
        for call in calls
        for service in SERVICES
        if call in stack_cleanup.client(service).meta.service_model.operation_names
    }


def test_keep_models_stops_the_run_and_its_job_and_deletes_what_serves_but_never_a_model(aws: Aws) -> None:
    # A prod run holding its throughput in KeepProvisionedThroughput, another one's job still training.
    model, running = f"{PREFIX}-model-0123456789ab", job_summary(f"{PREFIX}-job-ba9876543210", "InProgress")
    provisioned = throughput(f"{PREFIX}-deploy-0123456789ab", model_arn("0123456789ab"))
    served = deployment(f"{PREFIX}-deploy-aaaaaaaaaaaa", model_arn("0123456789ab"))
    aws.deleting()
    aws.executions(["kit-run-1", "kit-run-2"])
    aws.executions([])  # the last look, after what serves the models is gone
    aws.jobs([running])
    aws.bedrock.add_response("get_model_customization_job", job(running, KEY), {"jobIdentifier": running["jobArn"]})
    aws.bedrock.add_response("stop_model_customization_job", {}, {"jobIdentifier": running["jobArn"]})
    aws.bedrock.add_response(
        "get_model_customization_job", job(running, KEY, "Stopped"), {"jobIdentifier": running["jobArn"]}
    )
    aws.bedrock.add_response(
        "list_custom_models",
        {"modelSummaries": [model_summary(model, "0123456789ab")]},
        {},
    )
    aws.bedrock.add_response(
        "get_custom_model",
        {"modelArn": model_arn("0123456789ab"), "modelName": model, "creationTime": T0, "modelKmsKeyArn": KEY},
        {"modelIdentifier": model_arn("0123456789ab")},
    )
    aws.serving(model_arn("0123456789ab"), [served], [provisioned])
    aws.bedrock.add_response(
        "delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": served["customModelDeploymentArn"]}
    )
    aws.bedrock.add_response(
        "delete_provisioned_model_throughput", {}, {"provisionedModelId": provisioned["provisionedModelArn"]}
    )
    aws.serving(model_arn("0123456789ab"), [], [])  # gone

    h.handler(event("Delete", KEEP_PROPS), context(FUNCTION_MS))

    aws.no_pending()  # no DeleteCustomModel was queued: calling it would have failed the stubber
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.answer["Reason"] == (
        "deleted 1 deployment(s), 1 Provisioned Throughput(s); stopped 1 customization job(s) and 2 pipeline "
        "execution(s); custom models kept (KeepModels)"
    )
    assert "DeleteCustomModel" not in aws.calls
    # The executions are stopped first (while the state machine exists), then a pause lets a call in flight land.
    assert max(i for i, c in enumerate(aws.calls) if c == "StopExecution") < aws.calls.index(
        "ListModelCustomizationJobs"
    )
    # One settle after the executions, one poll until what served the model was gone.
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S] * 2
    # Everything it called is granted to the prod stage's function.
    assert _iam_actions(aws.calls) <= _granted(build("prod"))


def test_keep_models_keeps_the_refusal_of_a_committed_throughput(aws: Aws) -> None:
    _a_model_served_by_a_committed_throughput(aws, "SixMonths", days_left=90)

    h.handler(event("Delete", KEEP_PROPS), context(FUNCTION_MS))

    aws.no_pending()
    assert aws.answer["Status"] == "FAILED"
    assert "reserved-by-hand" in aws.answer["Reason"] and "SixMonths commitment" in aws.answer["Reason"]
    assert "DeleteProvisionedModelThroughput" not in aws.calls and "DeleteCustomModel" not in aws.calls


# --- the construct, in both stages ---------------------------------------------------------------------------------


@dataclass
class Built:
    stack: cdk.Stack
    key: kms.Key
    machine: sfn.StateMachine
    cleanup: CustomModelCleanup
    template: dict[str, Any]


def _deployment(stage: str) -> Deployment:
    return Deployment(
        stage=stage, name_prefix="genai-kit", region="us-east-1", log_retention_days=7, powertools_layer_version=38
    )


def build(stage: str) -> Built:
    app = cdk.App(context={k: v for k, v in cdk_json_context().items() if k.startswith("@")})
    stack = cdk.Stack(app, "CleanupTest", env=cdk.Environment(region="us-east-1"))
    where = _deployment(stage)
    key = kms.Key(stack, "Key")
    machine = sfn.StateMachine(
        stack,
        "Pipeline",
        state_machine_name=machine_name(where),
        definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Nothing")),
    )
    cleanup = CustomModelCleanup(stack, "CustomModelCleanup", deployment=where, key=key, machine=machine)
    return Built(stack, key, machine, cleanup, dict(Template.from_stack(stack).to_json()))


def _statements(built: Built) -> dict[str, dict[str, Any]]:
    role = _logical(built, built.cleanup.function.role)
    [policy] = [
        r
        for r in built.template["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
    ]
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "Sid" in s}


def _logical(built: Built, construct: Any) -> str:
    """The logical id of ``construct`` (an L2: its default child; an L1: itself)."""
    return built.stack.get_logical_id(construct.node.default_child or construct)


def _granted(built: Built) -> set[str]:
    return {a for s in _statements(built).values() for a in as_list(s["Action"])}


def _resource(built: Built) -> dict[str, Any]:
    [resource] = [r for r in built.template["Resources"].values() if r["Type"] == "Custom::BedrockFineTuneCleanup"]
    return resource


@pytest.mark.parametrize("stage", ["sandbox", "prod"])
def test_every_stage_stops_the_pipeline_before_the_state_machine_and_the_key_go(stage: str) -> None:
    built = build(stage)
    resource = _resource(built)
    # CloudFormation deletes a resource before what it depends on: the executions are stopped (and the throughput
    # a run holds in its Wait state deleted) while the state machine and the function's permissions still exist.
    role = built.cleanup.function.role
    needed = {_logical(built, c) for c in (built.machine, built.key, role, role.node.find_child("DefaultPolicy"))}
    assert needed <= set(resource["DependsOn"])
    names = PipelineNames.of(_deployment(stage))
    props = resource["Properties"]
    assert (props["ModelNamePrefix"], props["JobNamePrefix"]) == (names.model, names.job)
    assert props["Mode"] == (h.KEEP_MODELS if stage == "prod" else h.DELETE_MODELS)
    # The handler takes these properties (tokens stand in as strings) in that mode.
    scope = h.Scope.from_properties({k: v if isinstance(v, str) else "x" for k, v in props.items()})
    assert scope.deletes_models is (stage == "sandbox")


def test_the_sandbox_is_granted_exactly_what_its_code_calls() -> None:
    assert _granted(build("sandbox")) == called_actions("finetune_cleanup")


def test_prod_is_granted_what_keep_models_calls_and_cannot_change_a_model() -> None:
    granted = _granted(build("prod"))
    # Every call of the code but the model deletion, which KeepModels never makes.
    assert granted == called_actions("finetune_cleanup") - {"bedrock:DeleteCustomModel"}
    # From the Service Authorization Reference: no Write action on a custom model; the Write actions granted
    # stop jobs and executions or delete what serves a model.
    for action in granted:
        service, name = action.split(":")
        details = iam_reference().actions.get_action_details(service, name)
        types = {t["name"] for t in details["resourceTypes"]}
        assert not (details["accessLevel"] == "Write" and "custom-model" in types), action
        assert details["accessLevel"] != "Write" or name.startswith(("Stop", "Delete")), action
        if name.startswith("Delete"):
            assert types <= {"custom-model-deployment", "provisioned-model"}, (action, types)
