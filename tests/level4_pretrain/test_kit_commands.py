"""kit l4 (Level 4, pre-training), offline: submitting and following training-job executions (moto's Step
Functions, a Stubber on SageMaker) and the HyperPod cluster view."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import boto3
import pytest

from kit import aws, operator
from kit.aws import Target
from kit.level4_pretrain import l4, training_job_name
from tests.conftest import Synth
from tests.infra.helpers import machine_execution_and_job_prefix, training_job_described
from tests.kit.operator_helpers import (  # each *_fixture registers its fixture for this module
    CONFIG,
    FAILING,
    REGION,
    STAGE,
    WAIT_THEN_PASS,
    FakeCloudFormation,
    InterruptedTime,
    cloudformation_fixture,  # noqa: F401
    executing_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    lose_start_answers,
    mocked_fixture,  # noqa: F401
    on_call,
    run,
    stack,
    state_machine,
    stubbed,
)

MACHINE = f"{CONFIG.name_prefix}-{STAGE}-pretrain"  # the Jobs stack's state machine: resource_name("pretrain")


def bucket(name: str) -> None:
    location = {} if REGION == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=name, **location)


def jobs_stack(fake: FakeCloudFormation, machine: str) -> None:
    bucket("artifacts")
    fake.deploy(stack("4-jobs"), {"StateMachineArn": machine, "ArtifactsBucketName": "artifacts"})


def execution_arn(machine: str, name: str) -> str:
    return machine.replace(":stateMachine:", ":execution:") + f":{name}"


def job_name(arn: str, stage: str = STAGE, name_prefix: str = CONFIG.name_prefix) -> str:
    """The training job the state machine names for an execution: the prefix with the stage and the MD5 of the
    execution ARN (States.Hash, lowercase hex), computed here independently of the kit."""
    return f"{name_prefix}-{stage}-pt-{hashlib.md5(arn.encode()).hexdigest()}"


def test_l4_names_the_job_with_the_deployed_stacks_prefix_not_the_local_configs(mocked: FakeCloudFormation) -> None:
    """Before: a stack deployed with -c name_prefix=other was found without the flag (its stack name carries no
    prefix), and the job name came from the local config: genai-kit-..., a job that does not exist."""
    machine = state_machine(WAIT_THEN_PASS, f"other-{STAGE}-pretrain")
    jobs_stack(mocked, machine)
    result = run(l4, "submit", "--name", "run1")
    assert result.exit_code == 0, result.output
    assert f"training job {job_name(execution_arn(machine, 'run1'), name_prefix='other')}: " in result.output


def test_l4_refuses_an_execution_of_another_state_machine(mocked: FakeCloudFormation) -> None:
    jobs_stack(mocked, state_machine(WAIT_THEN_PASS, MACHINE))
    foreign = f"arn:aws:states:{REGION}:123456789012:execution:someone-elses-machine:run1"
    result = run(l4, "status", foreign, "--wait")
    assert result.exit_code == 1
    assert f"{foreign} is not an execution of a kit state machine of stage {STAGE}" in result.output


def test_l4_job_names_agree_with_the_synthesized_jobs_stack(sandbox: Synth) -> None:
    """The kit reads the prefix from the state machine the StateMachineArn output names; the stack's own rule
    matches the execution's training job by its prefix: the kit's name must carry it, then the 32-digit hash."""
    template = sandbox.templates[aws.stack_id("4-jobs")]
    arn, prefix = machine_execution_and_job_prefix(template, REGION)
    assert training_job_name(Target(), arn) == prefix + hashlib.md5(arn.encode()).hexdigest()


def test_l4_submit_wait_follows_the_training_execution(executing: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(executing, machine)
    result = run(l4, "submit", "--wait", "--poll-seconds", "0.2", "--timeout", "20")
    assert result.exit_code == 0, result.output
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    assert execution["name"].startswith("kit-") and execution["status"] == "SUCCEEDED"
    assert f"training job {job_name(execution['executionArn'])}" in result.output
    assert "SUCCEEDED" in result.output and "s3://artifacts/checkpoints/" in result.output


def test_l4_submit_wait_exits_1_when_the_run_fails(executing: FakeCloudFormation) -> None:
    # A script or CI job that runs `kit l4 submit --wait` reads the run's outcome from the exit code.
    jobs_stack(executing, state_machine(FAILING, MACHINE))
    result = run(l4, "submit", "--wait", "--poll-seconds", "0.1", "--timeout", "20")
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "bad rows" in result.output


def test_l4_submit_shows_the_training_job_while_it_runs(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    job = job_name(execution_arn(machine, "smoke1"))
    described = {
        "TrainingJobName": job,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{job}",
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 50},
        "StoppingCondition": {},
        "CreationTime": datetime.now(UTC),
        "ModelArtifacts": {"S3ModelArtifacts": ""},
    }
    with stubbed("sagemaker") as sagemaker:
        # the name's job is looked up first (free), then followed once the run has started it
        sagemaker.add_client_error(
            "describe_training_job",
            "ValidationException",
            "Requested resource not found",
            expected_params={"TrainingJobName": job},
        )
        sagemaker.add_response("describe_training_job", described, {"TrainingJobName": job})
        result = run(l4, "submit", "--name", "smoke1", "--wait", "--timeout", "0")
    assert result.exit_code == 1  # plain moto keeps it RUNNING: the wait times out
    assert f"training job {job}: InProgress/Training" in result.output
    assert "kit l4 status smoke1 --wait" in result.output
    status = run(l4, "status", "smoke1")
    assert status.exit_code == 0 and "RUNNING" in status.output
    # Following it by name looks up the same job (the hash of the ARN the name resolves to).
    with stubbed("sagemaker") as sagemaker:
        sagemaker.add_response("describe_training_job", described, {"TrainingJobName": job})
        status = run(l4, "status", "smoke1", "--wait", "--timeout", "0")
    assert f"training job {job}: InProgress/Training" in status.output


@pytest.mark.parametrize("name", ["under score", "a/b", "dotted.name", "x" * 81])
def test_l4_submit_refuses_a_name_step_functions_would_reject_or_not_log(mocked: FakeCloudFormation, name: str) -> None:
    result = run(l4, "submit", "--name", name)
    assert result.exit_code == 2 and "1-80 letters, digits, '-' and '_'" in result.output


def test_l4_submit_takes_any_execution_name_the_state_machine_logs(mocked: FakeCloudFormation) -> None:
    # Before: the job was <name_prefix>-pretrain-<name>, so a name past 44 characters (or with '_') was refused,
    # although Step Functions takes 80 and the job is named by the ARN's hash now.
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    name = "Run_" + "x" * 76
    result = run(l4, "submit", "--name", name)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # the console wraps the long line
    assert f"training job {job_name(execution_arn(machine, name))}: " in printed
    assert f"checkpoints in s3://artifacts/checkpoints/{name}/" in printed


def test_l4_names_a_stages_training_job_apart_from_the_other_stages(mocked: FakeCloudFormation) -> None:
    # Before: <name_prefix>-pretrain-run1 in both stages: the second submit's job collided with the first's.
    printed = {}
    for stage in ("sandbox", "prod"):
        machine = state_machine(WAIT_THEN_PASS, f"{CONFIG.name_prefix}-{stage}-pretrain")
        outputs = {"StateMachineArn": machine, "ArtifactsBucketName": f"artifacts-{stage}"}
        bucket(f"artifacts-{stage}")
        mocked.deploy(f"{aws.stack_id('4-jobs')}-{stage}", outputs)
        result = run(l4, "--stage", stage, "submit", "--name", "run1")
        assert result.exit_code == 0, result.output
        printed[stage] = job_name(execution_arn(machine, "run1"), stage)
        assert f"training job {printed[stage]}: " in result.output
        assert f"checkpoints in s3://artifacts-{stage}/checkpoints/run1/" in result.output
    assert printed["sandbox"] != printed["prod"]


def test_l4_submit_checkpoints_under_the_executions_own_prefix(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    result = run(l4, "submit", "--name", "run2")
    assert result.exit_code == 0, result.output
    assert "checkpoints in s3://artifacts/checkpoints/run2/" in result.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = machine.replace(":stateMachine:", ":execution:") + ":run2"
    assert json.loads(sfn.describe_execution(executionArn=arn)["input"]) == {}


def test_l4_submit_resume_from_asks_the_state_machine_to_continue_that_run(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    earlier = execution_arn(machine, "run1")
    result = run(l4, "submit", "--name", "run1-more", "--resume-from", earlier)  # an ARN or a name
    assert result.exit_code == 0, result.output
    assert "resuming from the checkpoints in s3://artifacts/checkpoints/run1/" in result.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    started = sfn.describe_execution(executionArn=machine.replace(":stateMachine:", ":execution:") + ":run1-more")
    assert json.loads(started["input"]) == {"resumeFrom": "run1"}


def test_l4_resume_refuses_a_run_that_has_not_ended_or_that_another_run_resumes(mocked: FakeCloudFormation) -> None:
    """Before: the earlier execution's status was not read, so two jobs shared checkpoints/<earlier>/ and each
    one's pruning deleted the other's checkpoints (SageMaker mirrors a deletion in the container to S3)."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    earlier = sfn.start_execution(stateMachineArn=machine, name="run1", input="{}")
    running = run(l4, "submit", "--name", "run1-more", "--resume-from", "run1")
    assert running.exit_code == 1
    text = " ".join(running.output.split())
    assert "--resume-from run1: that execution is RUNNING; two jobs on s3://artifacts/checkpoints/run1/" in text
    sfn.stop_execution(executionArn=earlier["executionArn"])
    first = run(l4, "submit", "--name", "run1-more", "--resume-from", "run1")
    assert first.exit_code == 0, first.output
    sfn.start_execution(stateMachineArn=machine, name="other", input="{}")  # running, resumes nothing
    second = run(l4, "submit", "--name", "run1-again", "--resume-from", "run1")
    assert second.exit_code == 1
    assert "execution run1-more is RUNNING and resumes from it already" in " ".join(second.output.split())
    started = {e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]}
    assert started == {"run1", "run1-more", "other"}  # the refused submits started nothing


def test_l4_resume_is_refused_when_the_earlier_runs_job_cannot_be_read(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "not found" means the earlier run started no job. Before, any ValidationException from
    DescribeTrainingJob (botocore declares ResourceNotFound only; SageMaker answers a missing job with
    ValidationException "Requested resource not found") let the resume start beside a job that may still train on
    the same checkpoints."""
    from botocore.exceptions import ClientError

    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.start_execution(stateMachineArn=machine, name="run1", input="{}")["executionArn"]
    sfn.stop_execution(executionArn=arn)

    def refused(**_: object) -> None:
        error = {"Code": "ValidationException", "Message": "Rate of requests exceeds the account's limit"}
        raise ClientError({"Error": error}, "DescribeTrainingJob")

    on_call(monkeypatch, "sagemaker", "before-call.sagemaker.DescribeTrainingJob", refused)
    result = run(l4, "submit", "--name", "run1-more", "--resume-from", "run1")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "reading execution run1 failed in us-east-1: ValidationException: Rate of requests" in text, text
    assert {e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]} == {"run1"}


def test_l4_resuming_a_run_that_resumed_another_resumes_the_first_runs_checkpoints(mocked: FakeCloudFormation) -> None:
    """run2 resumed run1, so it checkpointed under checkpoints/run1/: resuming run2 is resuming run1 (before, the
    state machine found no checkpoints under checkpoints/run2/ and refused the run)."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    for name, given in (("run1", {}), ("run2", {"resumeFrom": "run1"})):
        arn = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(given))["executionArn"]
        sfn.stop_execution(executionArn=arn)
    result = run(l4, "submit", "--name", "run3", "--resume-from", "run2")
    assert result.exit_code == 0, result.output
    assert "resuming from the checkpoints in s3://artifacts/checkpoints/run1/" in " ".join(result.output.split())
    started = sfn.describe_execution(executionArn=execution_arn(machine, "run3"))
    assert json.loads(started["input"]) == {"resumeFrom": "run1"}
    # run3 runs on checkpoints/run1/: resuming run2 again, or run1, must wait for it
    for again in ("run2", "run1"):
        refused = run(l4, "submit", "--name", f"after-{again}", "--resume-from", again)
        assert refused.exit_code == 1
        assert "execution run3 is RUNNING and resumes from it already" in " ".join(refused.output.split())


@pytest.mark.parametrize("job_status", ["Stopping", "InProgress", "Stopped"])
def test_l4_resume_waits_for_the_earlier_runs_training_job_to_stop(mocked: FakeCloudFormation, job_status: str) -> None:
    """An aborted execution may leave its job Stopping (SIGTERM, 120 s, then its checkpoints upload): a job resumed
    meanwhile would share the prefix with it."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.start_execution(stateMachineArn=machine, name="run1", input="{}")["executionArn"]
    sfn.stop_execution(executionArn=arn)
    sagemaker = stubbed("sagemaker")
    job = job_name(arn)
    sagemaker.add_response(
        "describe_training_job",
        training_job_described(job, job_status, REGION),
        {"TrainingJobName": job},
    )
    if job_status == "Stopped":  # then the new run's job name is looked up: free
        not_there = {"TrainingJobName": job_name(execution_arn(machine, "run1-more"))}
        sagemaker.add_client_error(
            "describe_training_job", "ValidationException", "Requested resource not found", expected_params=not_there
        )
    result = run(l4, "submit", "--name", "run1-more", "--resume-from", "run1")
    sagemaker.assert_no_pending_responses()
    if job_status == "Stopped":
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1
    assert f"--resume-from run1: its training job {job} is {job_status}" in " ".join(result.output.split())
    assert {e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]} == {"run1"}


def test_l4_resume_takes_checkpoints_copied_under_a_name_no_execution_has(mocked: FakeCloudFormation) -> None:
    # The docs' way to resume checkpoints of the old layout: copy them to checkpoints/<name>/, resume from <name>.
    jobs_stack(mocked, state_machine(WAIT_THEN_PASS, MACHINE))
    result = run(l4, "submit", "--resume-from", "copied")
    assert result.exit_code == 0, result.output


def test_l4_new_run_refuses_a_name_whose_prefix_holds_checkpoints(mocked: FakeCloudFormation) -> None:
    """Before: a name reused after Step Functions' 90 days (its job deleted, so the job name was free) found the old
    run's checkpoints, never expired as current versions, and the "new" run continued from them."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    boto3.client("s3", region_name=REGION).put_object(Bucket="artifacts", Key="checkpoints/run1/ckpt-100.pt")
    boto3.client("s3", region_name=REGION).put_object(Bucket="artifacts", Key="checkpoints/run10/ckpt-1.pt")
    reused = run(l4, "submit", "--name", "run1")
    assert reused.exit_code == 2
    text = " ".join(reused.output.split())
    assert "--name run1: s3://artifacts/checkpoints/run1/ already holds checkpoints of an earlier run" in text
    assert "--resume-from run1" in text
    assert (
        boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)["executions"] == []
    )
    assert run(l4, "submit", "--name", "run").exit_code == 0  # checkpoints/run10/ is not run's prefix
    assert run(l4, "submit", "--name", "run1-more", "--resume-from", "run1").exit_code == 0


def _training_job(name: str) -> None:
    """A job of this name in the (moto) account, as an earlier run's CreateTrainingJob left it."""
    boto3.client("sagemaker", region_name=REGION).create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/training",
        OutputDataConfig={"S3OutputPath": "s3://artifacts/output/"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )


def test_l4_new_run_refuses_a_name_whose_training_job_an_earlier_deployment_left(mocked: FakeCloudFormation) -> None:
    """The job is named from the execution ARN, which a name repeats after the Jobs stack is deployed again (or
    after Step Functions' 90 days); SageMaker keeps job names and the kit deletes no job. Before: the run started
    and failed at CreateTrainingJob. A name this state machine already ran is left to the start (the same start
    again is that run)."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    _training_job(job_name(execution_arn(machine, "exp1")))
    refused = run(l4, "submit", "--name", "exp1")
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert f"--name exp1: training job {job_name(execution_arn(machine, 'exp1'))}, of an earlier run" in text
    assert "give another --name" in text
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []

    assert run(l4, "submit", "--name", "exp2").exit_code == 0
    _training_job(job_name(execution_arn(machine, "exp2")))  # the run's own job
    again = run(l4, "submit", "--name", "exp2")
    assert again.exit_code == 0, again.output
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]] == ["exp2"]


def test_l4_new_run_is_refused_when_its_training_job_name_cannot_be_read(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "not found" means the job name is free: a refused DescribeTrainingJob (here AccessDenied) stops the
    submit with the call that failed, instead of starting a run whose CreateTrainingJob may be refused."""
    from botocore.exceptions import ClientError

    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)

    def denied(**_: object) -> None:
        error = {"Code": "AccessDeniedException", "Message": "not authorized to perform sagemaker:DescribeTrainingJob"}
        raise ClientError({"Error": error}, "DescribeTrainingJob")

    on_call(monkeypatch, "sagemaker", "before-call.sagemaker.DescribeTrainingJob", denied)
    result = run(l4, "submit", "--name", "exp1")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    job = job_name(execution_arn(machine, "exp1"))
    assert f"access denied while reading training job {job} in us-east-1: not authorized to perform" in text, text
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []


@pytest.mark.parametrize(
    ("given", "says"),
    [("under score", "not the name or ARN of an execution"), ("x" * 81, "not the name"), ("same", "itself")],
)
def test_l4_submit_refuses_a_resume_from_that_cannot_name_an_earlier_run(
    mocked: FakeCloudFormation, given: str, says: str
) -> None:
    result = run(l4, "submit", "--name", "same", "--resume-from", given)
    assert result.exit_code == 2 and says in result.output


@pytest.mark.parametrize("fsx", [True, False])
def test_l4_cluster_tabulates_groups_and_nodes(fsx: bool) -> None:
    name = "genai-kit-sandbox-hyperpod"
    lustre = {
        "FsxLustreConfig": {
            "DnsName": "fs-0123456789abcdef0.fsx.us-east-1.amazonaws.com",
            "MountName": "abcdefgh",
            "MountPath": "/fsx",
        }
    }
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:cluster/abcd1234efgh"
    now = datetime.now(UTC)
    controller = CONFIG.pretrain.controller.name
    with stubbed("cloudformation") as cloudformation, stubbed("sagemaker") as sagemaker:
        cloudformation.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": stack("4-cluster"),
                        "StackStatus": "CREATE_COMPLETE",
                        "CreationTime": now,
                        "Outputs": [{"OutputKey": "ClusterName", "OutputValue": name}],
                    }
                ]
            },
            {"StackName": stack("4-cluster")},
        )
        sagemaker.add_response(
            "describe_cluster",
            {
                "ClusterArn": arn,
                "ClusterName": name,
                "ClusterStatus": "InService",
                "CreationTime": now,
                "Orchestrator": {"Slurm": {"SlurmConfigStrategy": "Managed"}},
                "InstanceGroups": [
                    {
                        "InstanceGroupName": controller,
                        "InstanceType": "ml.t3.medium",
                        "CurrentCount": 1,
                        "TargetCount": 1,
                        "Status": "InService",
                        "SlurmConfig": {"NodeType": "Controller"},
                    },
                    {
                        "InstanceGroupName": "gpu",
                        "InstanceType": "ml.g5.8xlarge",
                        "CurrentCount": 0,
                        "TargetCount": 0,
                        "Status": "InService",
                        "SlurmConfig": {"NodeType": "Compute", "PartitionNames": ["gpu"]},
                        "InstanceStorageConfigs": [{"EbsVolumeConfig": {"VolumeSizeInGB": 100}}]
                        + ([lustre] if fsx else []),
                    },
                ],
            },
            {"ClusterName": name},
        )
        node = {
            "InstanceGroupName": controller,
            "InstanceId": "i-0123456789abcdef0",
            "InstanceType": "ml.t3.medium",
            "LaunchTime": now,
            "InstanceStatus": {"Status": "Running"},
        }
        # ListClusterNodes answers in pages: the nodes of every page are shown.
        sagemaker.add_response(
            "list_cluster_nodes", {"ClusterNodeSummaries": [node], "NextToken": "page2"}, {"ClusterName": name}
        )
        second = {
            **node,
            "InstanceGroupName": "gpu",
            "InstanceId": "i-0fedcba9876543210",
            "InstanceType": "ml.g5.8xlarge",
        }
        sagemaker.add_response(
            "list_cluster_nodes", {"ClusterNodeSummaries": [second]}, {"ClusterName": name, "NextToken": "page2"}
        )
        result = run(l4, "cluster")
        sagemaker.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    assert "InService" in result.output and "ml.g5.8xlarge" in result.output and "i-0123456789abcdef0" in result.output
    assert "i-0fedcba9876543210" in result.output
    # The printed AWS CLI command names the region the kit used (the CLI's own default may differ).
    connect = " ".join(result.output.split("Connect:", 1)[1].split())
    assert connect.startswith(f"aws ssm start-session --target sagemaker-cluster:abcd1234efgh_{controller}-i-")
    assert connect.endswith(f"i-0123456789abcdef0 --region {REGION}")
    # API-driven Slurm: each group's node type, its partition plus HyperPod's default dev, and the FSx mount.
    assert "configured through the API (Managed strategy)" in result.output
    assert "Controller" in result.output and "Compute" in result.output
    assert ("FSx /fsx" in result.output) == fsx
    assert "Slurm partitions: gpu, and dev (the default, every node)" in " ".join(result.output.split())
    # the sample's sbatch needs a directory every node sees: /fsx only with hp_fsx (before: named without it)
    assert ("sbatch --partition gpu" in " ".join(result.output.split())) == fsx
    assert ("deploy it with hp_fsx=true" in " ".join(result.output.split())) != fsx
    # Slurm names nodes by host name (ip-<ipv4>), not <group>-N as the hint used to say.
    assert "Slurm names each node by its host name (ip-10-1-2-3" in " ".join(result.output.split())


def test_l4_cluster_not_deployed_says_so(mocked: FakeCloudFormation) -> None:
    result = run(l4, "cluster")
    assert result.exit_code == 1
    assert (
        f"{stack('4-cluster')} is not deployed in {REGION}: run make deploy STACK=GenAiKit-4-Pretrain-Cluster"
        in result.output
    )
    assert "the zero-idle path is kit l4 submit" in result.output


def test_l4_status_wait_on_expired_credentials_says_the_execution_runs_on_and_how_to_resume(
    mocked: FakeCloudFormation,
) -> None:
    """Before: a wait of hours that outlived the SSO session ended with the credentials error alone; only the
    timeout said that the execution keeps running and how to follow it again."""
    jobs_stack(mocked, state_machine(WAIT_THEN_PASS, MACHINE))
    with stubbed("stepfunctions") as sfn:
        sfn.add_client_error("describe_execution", "ExpiredTokenException", "The security token included has expired")
        result = run(l4, "status", "run1", "--wait")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "Error: the AWS credentials have expired" in text
    assert "the execution keeps running: then follow it with kit l4 status" in text and "run1 --wait" in text


def test_l4_submit_wait_interrupted_says_the_execution_runs_on_and_exits_130(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: Ctrl-C during the wait printed click's "Aborted!" and exited 1, with no word of the execution."""

    monkeypatch.setattr(operator, "time", InterruptedTime)
    jobs_stack(mocked, state_machine(WAIT_THEN_PASS, MACHINE))
    result = run(l4, "submit", "--name", "run1", "--wait")
    assert result.exit_code == 130, result.output
    assert "Stopped following; the execution keeps running: follow it again with kit l4 status run1 --wait" in (
        " ".join(result.output.split())
    )


def test_l4_submit_whose_answer_was_lost_reports_the_run_it_started(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the command failed, and a second submit started a second paid training job; now the run is read
    back by name and reported as started."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    lose_start_answers(monkeypatch, started=True)
    result = run(l4, "submit", "--name", "run1")
    assert result.exit_code == 0, result.output
    assert f"started {execution_arn(machine, 'run1')}" in result.output


@pytest.mark.parametrize(
    ("earlier_input", "whose"),
    [
        ("{}", "with this input: an earlier run, or this start if its answer was lost and it ended already"),
        ('{"steps": 7}', "with other input:"),
    ],
)
def test_l4_submit_under_the_name_of_an_ended_run_says_it_exists_and_starts_nothing(
    mocked: FakeCloudFormation, earlier_input: str, whose: str
) -> None:
    """Step Functions refuses a closed execution's name for 90 days, whatever the input. Before: the refusal was
    read back as this start's lost answer (same name, same input {}), so the ended run was reported as started and
    --wait followed it. The message says whether the ended run had this start's input ({}) or other input."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.start_execution(stateMachineArn=machine, name="run1", input=earlier_input)["executionArn"]
    sfn.stop_execution(executionArn=arn)
    result = run(l4, "submit", "--name", "run1")
    printed = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "started arn:" not in printed
    assert "an execution named run1 already exists and is ABORTED, started 20" in printed and whose in printed
    assert "start the run under another name; `kit l4 status run1` shows it" in printed
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]] == ["run1"]


def test_l4_submit_under_the_name_of_a_running_run_with_other_input_starts_nothing_and_adopts_nothing(
    mocked: FakeCloudFormation,
) -> None:
    """A running execution with this start's name and other input is another run's, not this start's lost answer:
    the submit fails and names it, so that its training job is not followed or reported as this run's."""
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    sfn.start_execution(stateMachineArn=machine, name="run1", input='{"steps": 7}')
    result = run(l4, "submit", "--name", "run1")
    printed = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "started arn:" not in printed
    assert "an execution named run1 is already RUNNING with other input" in printed
    assert "`kit l4 status run1` shows it" in printed
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]] == ["run1"]


def test_l4_submit_that_did_not_start_names_the_run_to_check_before_another(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = state_machine(WAIT_THEN_PASS, MACHINE)
    jobs_stack(mocked, machine)
    lose_start_answers(monkeypatch, started=False)
    result = run(l4, "submit", "--name", "run1")
    assert result.exit_code == 1
    printed = " ".join(result.output.split())
    assert "while starting the training-job state machine" in printed
    assert "(run run1: if it may have started, check with `kit l4 status run1" in printed
