"""Level 4's destroy cleanup: on the stack's own deletion it stops the state machine's executions and the stack's
training jobs, waits until they have stopped and always answers CloudFormation in time (every call goes through a
botocore Stubber on the real clients, so each request is checked against the service model); and in the real
app's templates: in every stage, exact IAM, a bounded ServiceTimeout, deleted before what the jobs use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn

from common import stack_cleanup, training_cleanup
from pretrain_cleanup import handler as h
from stacks.level4_pretrain.cleanup import CLEANUP_SERVICE_TIMEOUT, CLEANUP_TIMEOUT, PretrainJobsCleanup
from stacks.level4_pretrain.jobs import OUTPUT_PREFIX
from stacks.shared.deployment import Deployment
from tests.cleanup_helpers import (
    T0,
    FakeAws,
    called_actions,
    cleanup_event,
    common_actions,
    context,
    fake_aws,
)
from tests.conftest import cdk_json_context
from tests.infra.helpers import as_list, iam_reference, render, resources

JOBS = "GenAiKit-4-Pretrain-Jobs"
ACCOUNT = "123456789012"
PREFIX = "genai-kit-sandbox-pt-"
BUCKET = "genaikit-pretrain-artifacts-abc123"
OTHER_BUCKET = "genaikit-pretrain-artifacts-other9"
STATE_MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:genai-kit-sandbox-pretrain"
STACK_ID = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/GenAiKit-4-Pretrain-Jobs-sandbox/abc"
PROPS = {
    "ServiceToken": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:cleanup",
    "StateMachineArn": STATE_MACHINE,
    "NamePrefix": PREFIX,
    "TrainingOutputUri": f"s3://{BUCKET}/{OUTPUT_PREFIX}",
}
FUNCTION_MS = 900_000  # the function's 15-minute timeout


def job_name(execution: str, prefix: str = PREFIX) -> str:
    """What the state machine names an execution's job: the prefix and the MD5 of the execution ARN (names.py)."""
    arn = f"{STATE_MACHINE.replace(':stateMachine:', ':execution:')}:{execution}"
    return prefix + hashlib.md5(arn.encode()).hexdigest()


def summary(name: str, status: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}",
        "CreationTime": T0,
        "TrainingJobStatus": status,
    }


def described(name: str, status: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{bucket}/{OUTPUT_PREFIX}{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": {"InProgress": "Training", "Stopping": "Stopping", "Stopped": "Stopped"}[status],
        "StoppingCondition": {"MaxRuntimeInSeconds": 672 * 3600},
        "CreationTime": T0,
        "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/training",
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{OUTPUT_PREFIX}"},
        "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 64, "VolumeSizeInGB": 50},
    }


class Aws(FakeAws):
    @property
    def sagemaker(self) -> Any:
        return self.stubbers["sagemaker"]

    def training(self, status: str, jobs: list[dict[str, Any]], token: str | None = None, **extra: Any) -> None:
        page: dict[str, Any] = {"TrainingJobSummaries": jobs, **({"NextToken": token} if token else {})}
        self.sagemaker.add_response(
            "list_training_jobs", page, {"NameContains": PREFIX, "StatusEquals": status, **extra}
        )

    def no_training(self) -> None:
        for status in training_cleanup.BUSY_TRAINING:
            self.training(status, [])

    def describe(self, name: str, status: str, bucket: str = BUCKET) -> None:
        self.sagemaker.add_response("describe_training_job", described(name, status, bucket), {"TrainingJobName": name})

    def stop(self, name: str) -> None:
        self.sagemaker.add_response("stop_training_job", {}, {"TrainingJobName": name})


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "pretrain-cleanup")
    services = ("sagemaker", "stepfunctions", "cloudformation")
    with fake_aws(monkeypatch, Aws, services, stack_id=STACK_ID, state_machine=STATE_MACHINE, cause=h.CAUSE) as world:
        yield world


def event(kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return cleanup_event(
        kind,
        PROPS if props is None else props,
        stack_id=STACK_ID,
        logical_id="JobsCleanupResource",
        resource_type="Custom::PretrainJobsCleanup",
        physical_id=h.PHYSICAL_ID,
    )


# --- the handler ----------------------------------------------------------------------------------------------


def test_executions_and_training_jobs_are_stopped_across_pages_and_waited_for(aws: Aws) -> None:
    ours, stopping = job_name("run-1"), job_name("run-0")
    # Another deployment whose name prefix extends this one, a copy started by hand, and the kit's name writing to
    # another bucket: NameContains returns them, none is ours.
    extended = f"{PREFIX}prod-pt-{job_name('run-1').removeprefix(PREFIX)}"
    by_hand = f"copy-of-{ours}"
    elsewhere = job_name("run-9")
    aws.deleting()
    # Two pages of running executions.
    first, second = (
        [
            {
                "executionArn": f"{STATE_MACHINE.replace(':stateMachine:', ':execution:')}:{name}",
                "stateMachineArn": STATE_MACHINE,
                "name": name,
                "status": "RUNNING",
                "startDate": T0,
            }
        ]
        for name in ("run-1", "run-2")
    )
    query = {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING"}
    # Every page is read before the first stop (a stop while paging could move executions between pages).
    aws.sfn.add_response("list_executions", {"executions": first, "nextToken": "e2"}, query)
    aws.sfn.add_response("list_executions", {"executions": second}, {**query, "nextToken": "e2"})
    for execution in first + second:
        stop = {"executionArn": execution["executionArn"], "error": "StackDeleted", "cause": h.CAUSE}
        aws.sfn.add_response("stop_execution", {"stopDate": T0}, stop)
    # Two pages of running jobs: ours on the second.
    aws.training("InProgress", [summary(extended, "InProgress"), summary(by_hand, "InProgress")], token="p2")
    aws.training("InProgress", [summary(elsewhere, "InProgress"), summary(ours, "InProgress")], NextToken="p2")
    aws.describe(elsewhere, "InProgress", OTHER_BUCKET)
    aws.describe(ours, "InProgress")
    aws.stop(ours)
    aws.training("Stopping", [summary(stopping, "Stopping"), summary(ours, "Stopping")])
    aws.describe(stopping, "Stopping")  # already stopping: waited for, not stopped again
    for ours_status, stopping_status in (("Stopping", "Stopping"), ("Stopped", "Stopped")):
        aws.describe(ours, ours_status)
        aws.describe(stopping, stopping_status)

    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))

    aws.no_pending()  # one StopTrainingJob was queued: a stop of any other job would have failed the stubber
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.answer["Reason"] == f"stopped 2 training job(s) [{ours}, {stopping}] and 2 execution(s)"
    assert aws.answer["PhysicalResourceId"] == h.PHYSICAL_ID
    assert aws.calls.count("StopTrainingJob") == 1 and aws.calls.count("StopExecution") == 2
    assert max(i for i, c in enumerate(aws.calls) if c == "StopExecution") < aws.calls.index("ListTrainingJobs")
    # One settle after stopping the executions, then one poll while the jobs stop.
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S] * 2


def test_nothing_running_answers_success_without_waiting(aws: Aws) -> None:
    aws.deleting()
    aws.executions([])
    aws.no_training()
    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS"
    assert aws.answer["Reason"] == "stopped 0 training job(s) [] and 0 execution(s)"
    assert aws.clock.sleeps == []


def test_a_state_machine_deleted_outside_the_stack_does_not_fail_the_destroy(aws: Aws) -> None:
    # ListExecutions of a state machine that is gone raises StateMachineDoesNotExist: none of its executions runs,
    # and a FAILED answer would fail every destroy of the stack (DELETE_FAILED), each retry the same way.
    aws.deleting()
    query = {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING"}
    aws.sfn.add_client_error(
        "list_executions", "StateMachineDoesNotExist", "State Machine Does Not Exist", 400, expected_params=query
    )
    aws.no_training()
    aws.sfn.add_client_error(  # the last look: still gone
        "list_executions", "StateMachineDoesNotExist", "State Machine Does Not Exist", 400, expected_params=query
    )
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.answer["Reason"] == "stopped 0 training job(s) [] and 0 execution(s)"


@pytest.mark.parametrize(
    "status",
    # An update that replaced the resource (a new physical id would do the same) or removed it, and the rollback of
    # a failed update: CloudFormation sends Delete in the cleanup phase, and the jobs must keep running.
    ["UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_IN_PROGRESS"],
)
def test_a_delete_that_is_not_the_stacks_deletion_stops_nothing(aws: Aws, status: str) -> None:
    aws.deleting(status)
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.calls == ["DescribeStacks"]  # a stop would have been an unstubbed call
    assert aws.answer["Status"] == "SUCCESS"
    assert aws.answer["Reason"] == f"the stack is {status}, not being deleted: running training jobs left in place"


@pytest.mark.parametrize("kind", ["Create", "Update"])
def test_create_and_update_do_nothing_and_keep_one_physical_id(aws: Aws, kind: str) -> None:
    h.handler(event(kind), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.calls == []
    assert aws.answer["Status"] == "SUCCESS"
    # The same id on every answer: a changed id would make CloudFormation send Delete for the old one.
    assert aws.answer["PhysicalResourceId"] == h.PHYSICAL_ID


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({k: v for k, v in PROPS.items() if k != "NamePrefix"}, "missing resource properties: NamePrefix"),
        ({**PROPS, "StateMachineArn": ""}, "missing resource properties: StateMachineArn"),
        ({**PROPS, "TrainingOutputUri": f"{BUCKET}/{OUTPUT_PREFIX}"}, "TrainingOutputUri must be an s3:// URI"),
    ],
)
def test_create_with_a_wrong_property_fails_at_deploy_time(aws: Aws, props: dict[str, Any], named: str) -> None:
    h.handler(event("Create", props), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED" and named in aws.answer["Reason"]


def test_a_failing_call_still_answers_failed_saying_what_to_do(aws: Aws) -> None:
    name = job_name("run-3")
    aws.deleting()
    aws.executions([])
    aws.training("InProgress", [summary(name, "InProgress")])
    aws.describe(name, "InProgress")
    aws.sagemaker.add_client_error("stop_training_job", "AccessDeniedException", "not allowed", 400)
    h.handler(event("Delete"), context(FUNCTION_MS))
    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "FAILED"
    assert reason.startswith("AccessDeniedException: not allowed.") and "run the destroy again" in reason
    assert "\n" not in reason and "Traceback" not in reason


def test_a_run_started_after_the_first_look_is_stopped_with_its_job(aws: Aws) -> None:
    """Before: executions were looked at once, so a `kit l4 submit` during the destroy reached its training job after
    that look, and the job trained on to its MaxRuntime with the stack's role and bucket deleted underneath it."""
    late = job_name("late-run")
    aws.deleting()
    aws.executions([])  # the first look: nothing running
    aws.no_training()
    aws.executions(["late-run"])  # the last look: a run started meanwhile, stopped
    aws.training("InProgress", [summary(late, "InProgress")])  # the job it created
    aws.describe(late, "InProgress")
    aws.stop(late)
    aws.training("Stopping", [])
    aws.describe(late, "Stopped")
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.answer["Reason"] == f"stopped 1 training job(s) [{late}] and 1 execution(s)"
    # One settle after stopping the late run, so that a CreateTrainingJob it had in flight is listed; its job was
    # read stopped at the first poll, so there was no poll to wait for.
    assert aws.clock.sleeps == [stack_cleanup.POLL_INTERVAL_S]


def test_a_job_that_ended_meanwhile_is_not_a_failure(aws: Aws) -> None:
    name = job_name("run-4")
    aws.deleting()
    aws.executions([])
    aws.training("InProgress", [summary(name, "InProgress")])
    aws.describe(name, "InProgress")
    aws.sagemaker.add_client_error("stop_training_job", "ValidationException", "job is Completed", 400)
    aws.training("Stopping", [])
    aws.describe(name, "Stopped")
    aws.executions([])  # the last look: nothing started meanwhile
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]


def test_at_the_deadline_it_answers_failed_in_time_naming_the_job_still_stopping(aws: Aws) -> None:
    name = job_name("run-5")
    aws.deleting()
    aws.executions([])
    aws.training("InProgress", [])
    aws.training("Stopping", [summary(name, "Stopping")])
    for _ in range(80):  # never stops; more answers than the deadline lets it ask for
        aws.describe(name, "Stopping")
    h.handler(event("Delete"), context(FUNCTION_MS))
    reason = aws.answer["Reason"]
    assert aws.answer["Status"] == "FAILED"
    assert reason.startswith("Deadline reached while waiting for training jobs to stop") and name in reason
    assert "run the destroy again to resume" in reason
    [answered_at] = aws.answered_at
    assert answered_at <= FUNCTION_MS / 1000 - stack_cleanup.ANSWER_MARGIN_S


# --- the construct in the real app ---------------------------------------------------------------------------


def _cleanup(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(lid, resource)] = resources(template, "Custom::PretrainJobsCleanup").items()
    return lid, resource


def _function(template: dict[str, Any]) -> dict[str, Any]:
    [function] = [
        f["Properties"]
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "pretrain_cleanup.handler.handler"
    ]
    return function


def _policies_of(template: dict[str, Any], role: str) -> set[str]:
    return {
        lid for lid, p in resources(template, "AWS::IAM::Policy").items() if {"Ref": role} in p["Properties"]["Roles"]
    }


def _needed(template: dict[str, Any]) -> dict[str, set[str]]:
    """What a running training job and the cleanup itself use, read from the template (not from construct ids)."""
    [(machine, resource)] = resources(template, "AWS::StepFunctions::StateMachine").items()
    machine_role = resource["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    [training_role] = [
        lid
        for lid, r in resources(template, "AWS::IAM::Role").items()
        if "sagemaker.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    bucket = _cleanup(template)[1]["Properties"]["TrainingOutputUri"]["Fn::Join"][1][1]["Ref"]
    bucket_parts = {
        lid
        for lid, r in template["Resources"].items()
        if r["Type"] in ("AWS::S3::BucketPolicy", "Custom::S3AutoDeleteObjects")
        and r["Properties"].get("Bucket", r["Properties"].get("BucketName")) == {"Ref": bucket}
    }
    function_role = _function(template)["Role"]["Fn::GetAtt"][0]
    return {
        "state machine": {machine, machine_role, *_policies_of(template, machine_role)},
        "training role": {training_role, *_policies_of(template, training_role)},
        "bucket": {bucket, *bucket_parts},
        "own role": {function_role, *_policies_of(template, function_role)},
    }


@pytest.mark.parametrize("variant", ["sandbox", "prod", "sandbox_fsx"])
def test_the_cleanup_is_in_every_stage_and_deleted_before_what_a_running_job_uses(
    variant: str, request: pytest.FixtureRequest
) -> None:
    template = request.getfixturevalue(variant).templates[JOBS]
    lid, resource = _cleanup(template)
    depends = set(as_list(resource.get("DependsOn", [])))
    # CloudFormation deletes a resource only after every resource that depends on it: the cleanup runs before the
    # state machine, the training role and its policy (with tj_in_cluster_vpc, the network-interface grants), the
    # bucket with its policy and (sandbox) its auto-delete resource, and its own permissions.
    for what, ids in _needed(template).items():
        assert ids <= depends, (what, sorted(ids - depends))
    if variant == "sandbox":
        assert resources(template, "Custom::S3AutoDeleteObjects")
    if variant == "sandbox_fsx":  # the training role manages interfaces in the cluster's subnets
        training_policies = _needed(template)["training role"]
        assert "ec2:CreateNetworkInterface" in json.dumps([template["Resources"][p] for p in training_policies])
    # ... and nothing waits for it, so it is among the first deleted.
    others = {k: v for k, v in template["Resources"].items() if k != lid}
    assert not [k for k, v in others.items() if lid in as_list(v.get("DependsOn", []))]
    assert f'"{lid}"' not in json.dumps(others) and f'"{lid}"' not in json.dumps(template.get("Outputs", {}))


def test_the_resource_and_its_function_are_bounded(sandbox: Any) -> None:
    template = sandbox.templates[JOBS]
    _, resource = _cleanup(template)
    service_timeout = int(resource["Properties"]["ServiceTimeout"])
    assert service_timeout == CLEANUP_SERVICE_TIMEOUT.to_seconds() == 1200 <= 3600
    timeout = _function(template)["Timeout"]
    assert timeout == CLEANUP_TIMEOUT.to_seconds() == 900  # Lambda's maximum
    assert stack_cleanup.ANSWER_MARGIN_S < timeout < service_timeout  # the function always answers first


def test_the_properties_name_this_stacks_jobs(sandbox: Any, prod: Any) -> None:
    for synth, stage in ((sandbox, "sandbox"), (prod, "prod")):
        template = synth.templates[JOBS]
        props = _cleanup(template)[1]["Properties"]
        [(machine, resource)] = resources(template, "AWS::StepFunctions::StateMachine").items()
        assert props["StateMachineArn"] == {"Ref": machine}
        assert props["NamePrefix"] == f"genai-kit-{stage}-pt-"
        # The job's own output path and name, as the state machine's CreateTrainingJob request gives them.
        request = json.loads(render(resource["Properties"]["DefinitionString"]))["States"]["TrainModel"]["Parameters"]
        assert render(props["TrainingOutputUri"]) == request["OutputDataConfig"]["S3OutputPath"]
        assert request["TrainingJobName.$"].startswith(f"States.Format('{props['NamePrefix']}{{}}'")


def test_the_function_is_granted_exactly_what_it_calls_scoped_as_iam_allows(sandbox: Any) -> None:
    template = sandbox.templates[JOBS]
    role = _function(template)["Role"]["Fn::GetAtt"][0]
    granted = [
        s
        for p in _policies_of(template, role)
        for s in template["Resources"][p]["Properties"]["PolicyDocument"]["Statement"]
    ]
    ours = {s["Sid"]: s for s in granted if "Sid" in s}
    called = called_actions("pretrain_cleanup") | common_actions("training_cleanup")
    assert (
        {a for s in ours.values() for a in as_list(s["Action"])}
        == called
        == {
            "sagemaker:ListTrainingJobs",
            "sagemaker:DescribeTrainingJob",
            "sagemaker:StopTrainingJob",
            "states:ListExecutions",
            "states:StopExecution",
            "cloudformation:DescribeStacks",
        }
    )
    [(machine, _)] = resources(template, "AWS::StepFunctions::StateMachine").items()
    for statement in ours.values():
        for action in as_list(statement["Action"]):
            service, name = action.split(":")
            required = [t["name"] for t in iam_reference().actions.get_action_details(service, name)["resourceTypes"]]
            # '*' only where the Service Authorization Reference lists no resource type for the action.
            assert (statement["Resource"] == "*") == (not required), (action, statement["Resource"], required)
    assert render(ours["StopKitTrainingJobs"]["Resource"]).endswith(f":training-job/{PREFIX}*")
    assert ours["StopPipeline"]["Resource"] == {"Ref": machine}
    assert render(ours["StopPipelineExecutions"]["Resource"]).endswith(f":execution:${{{machine}.Name}}:*")
    assert ours["ReadOwnStack"]["Resource"] == {"Ref": "AWS::StackId"}
    # Besides these, only what every kit function has: its own log group and X-Ray.
    assert sorted(str(s["Action"]) for s in granted if "Sid" not in s) == sorted(
        [str(["logs:CreateLogStream", "logs:PutLogEvents"]), str(["xray:PutTelemetryRecords", "xray:PutTraceSegments"])]
    )


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_cdk_nag_reports_nothing_unsuppressed_on_the_cleanup(variant: str, request: pytest.FixtureRequest) -> None:
    messages = request.getfixturevalue(variant).messages[JOBS]
    assert [m for m in messages if "AwsSolutions-" in m["data"] and "/JobsCleanup/" in m["path"]] == []


@pytest.mark.parametrize(
    "prefix", ["genai-kit-pt-", "genai-kit-sandbox-", "genai-kit-sandbox-pt", "genai-kit-prod-pt-"]
)
def test_a_job_prefix_without_the_stage_is_refused(prefix: str) -> None:
    # Without the stage, a sandbox destroy would stop the prod stage's jobs in the same account.
    app = cdk.App(context={k: v for k, v in cdk_json_context().items() if k.startswith("@")})
    stack = cdk.Stack(app, "CleanupTest", env=cdk.Environment(region="us-east-1"))
    where = Deployment(
        stage="sandbox", name_prefix="genai-kit", region="us-east-1", log_retention_days=7, powertools_layer_version=38
    )
    machine = sfn.StateMachine(
        stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Nothing"))
    )
    role = iam.Role(stack, "Training", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    with pytest.raises(ValueError, match="must start with 'genai-kit-sandbox-'"):
        PretrainJobsCleanup(
            stack,
            "Cleanup",
            deployment=where,
            machine=machine,
            training_role=role,
            bucket=s3.Bucket(stack, "Bucket"),
            job_prefix=prefix,
        )
