"""Level 3 on SageMaker: the stack's buckets and roles, and the pipeline's paths run in the ASL simulator with
API-shaped responses (success, bad input, missing data, a base model from S3, a resumed run, training failure,
import failure, import timeout, smoke invocation failure): every path is notified, and every failure after the
import started deletes the model."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from stacks.config import ConfigError
from stacks.level3_finetune import sagemaker_pipeline as pipeline
from stacks.level3_finetune.names import IMPORTED_MODELS_QUOTA_CODE, execution_hash
from stacks.level3_finetune.pipeline import (
    EXECUTION_HEADROOM,
    POLL_RETRY_ATTEMPTS,
    THROTTLE_RETRY_ATTEMPTS,
    THROTTLE_RETRY_INTERVAL,
)
from stacks.shared.facts import KIT_NAME, STAGES
from tests.conftest import ROOT
from tests.infra import asl
from tests.infra.helpers import (
    api_member_max,
    as_list,
    cdk_sync_training_job_grants,
    render,
    resources,
    statements,
    training_job_described,
)
from tests.infra.helpers import longest_name_prefix as longest_name_prefix_of
from tests.infra.test_code_buckets import assert_only_the_deployment_writes
from tests.infra.test_config import build
from tests.infra.test_state_machines import serialized_input
from tests.level3_finetune.tag_grants import allows_tagging, role_of, tags_of
from workloads.finetune_sagemaker import sagemaker_job
from workloads.pretrain.package_sourcedir import sourcedir_bytes as sourcedir_archive

STACK = "GenAiKit-3-FineTune-SageMaker"
JOB_PREFIX = "genai-kit-sandbox-sft-"
IMPORT_JOB_ARN = f"arn:aws:bedrock:{asl.REGION}:{asl.ACCOUNT}:model-import-job/abcdefgh1234"
MODEL_ARN = f"arn:aws:bedrock:{asl.REGION}:{asl.ACCOUNT}:imported-model/abcdefgh1234"


def execution_arn(execution_name: str, machine_name: str = "state-machine") -> str:
    """The ARN the simulator gives an execution (``$$.Execution.Id``); "state-machine" is its default name."""
    return f"arn:aws:states:{asl.REGION}:{asl.ACCOUNT}:execution:{machine_name}:{execution_name}"


def run_name(arn: str) -> str:
    """What an execution's training job, import job and imported model are named: the prefix and the MD5 of the
    execution ARN in lowercase hex (States.Hash), computed here independently of the code under test."""
    return JOB_PREFIX + hashlib.md5(arn.encode()).hexdigest()


@pytest.fixture(scope="module")
def template(sandbox: Any) -> dict[str, Any]:
    return sandbox.templates[STACK]


@pytest.fixture(scope="module")
def machine(template: dict[str, Any]) -> dict[str, Any]:
    return asl.definition_from_template(template, "StateMachine")


@pytest.fixture(scope="module")
def teardown(template: dict[str, Any]) -> dict[str, Any]:
    return asl.definition_from_template(template, "TeardownStateMachine")


def _bucket(template: dict[str, Any], prefix: str) -> str:
    bucket_id = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith(f"{prefix}Bucket"))
    return asl.resolve(template, {"Ref": bucket_id})


def _role(template: dict[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    return next((k, v) for k, v in resources(template, "AWS::IAM::Role").items() if k.startswith(prefix))


def _role_statements(template: dict[str, Any], role_id: str) -> dict[str, dict[str, Any]]:
    policies = {
        k for k, v in resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    }
    return {s.get("Sid", f"#{i}"): s for i, (p, s) in enumerate(statements(template)) if p in policies}


# --- the stack ------------------------------------------------------------------------------------------


def test_the_stack_is_built_with_the_others_and_states_its_idle_cost(sandbox: Any, template: dict[str, Any]) -> None:
    # The stated idle cost is kit cost's (the teardown dead-letter alarm), not a hand-written figure.
    from kit.costs import analyze_stack, load_prices

    stated = f"~${analyze_stack(STACK, template, load_prices(asl.REGION)).idle_usd:.2f}/month idle"
    assert stated in template["Description"]
    # A kept imported model is not free while idle: it bills storage per Custom Model Unit every month.
    idle = template["Outputs"]["IdleCost"]["Value"]
    storage = "bedrock.imported_model_storage"
    assert idle.startswith(f"{stated} for the stack") and storage in idle and "every month" in idle
    regions = json.loads((ROOT / "kit" / "prices.json").read_text())["regions"]
    assert regions[asl.REGION][storage]["unit"] == "CMU-month"  # the price it names exists, per CMU and month
    # Nothing that bills by the hour: no endpoint, no cluster, no provisioned throughput, no KMS key.
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {
        "AWS::SageMaker::Endpoint",
        "AWS::SageMaker::Cluster",
        "AWS::KMS::Key",
        "AWS::EC2::NatGateway",
    }


def test_training_job_uses_the_pinned_image_uncompressed_output_and_config_bounds(machine: dict[str, Any]) -> None:
    assert machine["States"]["TrainModel"]["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    request = asl.simulate(machine, {"trainingKey": "datasets/"}, _results()).parameters("TrainModel")
    assert request["AlgorithmSpecification"]["TrainingImage"] == sagemaker_job.image_uri(asl.REGION, gpu=True)
    assert request["OutputDataConfig"]["CompressionType"] == "NONE"
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600}
    assert request["EnableManagedSpotTraining"] is False
    hyper = request["HyperParameters"]
    assert json.loads(hyper["sagemaker_program"]) == "sft_train.py"
    assert json.loads(hyper["sagemaker_submit_directory"]).endswith("/code/sourcedir.tar.gz")
    assert hyper["sagemaker_torch_distributed_enabled"] == "true"
    assert "hub_token_secret" not in hyper  # sm_hub_token_secret is "" in cdk.json: no secret, no grant
    for member in ("HyperParameters", "InputDataConfig", "CheckpointConfig", "ResourceConfig", "StoppingCondition"):
        assert not asl.member_errors("sagemaker", "CreateTrainingJob", member, request[member]), member


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_only_the_deployment_writes_the_code_training_jobs_run(variant: str, request: Any) -> None:
    # The artifacts bucket's generated name starts with the stack's, so it holds "sagemaker": managed SageMaker
    # policies allow object writes on it. The job runs what its submit directory names; it writes checkpoints and
    # the model.
    template = request.getfixturevalue(variant).templates[STACK]
    machine = asl.definition_from_template(template, "StateMachine")
    hyper = asl.simulate(machine, {"trainingKey": "datasets/"}, _results()).parameters("TrainModel")["HyperParameters"]
    submitted = json.loads(hyper["sagemaker_submit_directory"])
    prefix = submitted.removeprefix(f"s3://{_bucket(template, 'Artifacts')}/").rsplit("/", 1)[0] + "/"
    bucket = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("ArtifactsBucket"))
    deployment = next(k for k in resources(template, "Custom::CDKBucketDeployment") if k.startswith("TrainingCode"))
    assert_only_the_deployment_writes(
        template,
        bucket,
        prefix,
        deployment,
        kit_writes=["checkpoints/run-1/checkpoint-100/adapter_model.safetensors", "output/job/output/model/x"],
    )


def test_with_spot_the_wait_bounds_the_job() -> None:
    spot = build(sm_spot=True, sm_max_runtime_hours=2, sm_max_wait_hours=6)
    assert spot.finetune_sagemaker.job_hours == 6
    plain = build()
    assert plain.finetune_sagemaker.job_hours == plain.finetune_sagemaker.max_runtime_hours


def _retry_seconds(retrier: dict[str, Any]) -> float:
    """The longest a retrier waits in all (Step Functions' defaults: 1 s, 3 attempts, backoff 2)."""
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    return float(sum(interval * rate**n for n in range(retrier.get("MaxAttempts", 3))))


def _tasks(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        for branch in state.get("Branches", []):
            yield from _tasks(branch["States"])


def test_execution_timeout_covers_the_job_the_import_wait_and_one_pass_of_every_retry(
    machine: dict[str, Any],
) -> None:
    """Before: an hour past the job and the import wait, less than the retries of the import's create, one poll,
    the smoke test and the validator together (the run was cut off and torn down while it was still retrying)."""
    bounded = (4 * 60 + 120) * 60  # the default job bound (4 h) and import wait (120 min)
    tasks = dict(_tasks(machine["States"]))
    retries = sum(_retry_seconds(r) for state in tasks.values() for r in state.get("Retry", []))
    # Each task's own time, except the training job's (bounded above) and the Wait states'
    own = sum(state.get("TimeoutSeconds", 60) for name, state in tasks.items() if name != "TrainModel")
    assert retries > 3600  # what the old hour of headroom had to hold
    assert machine["TimeoutSeconds"] >= bounded + retries + own
    assert (
        machine["TimeoutSeconds"] == bounded + pipeline.IMPORT_SLOT_WAIT.to_seconds() + EXECUTION_HEADROOM.to_seconds()
    )


def test_sourcedir_holds_the_runtime_files_and_requirements_at_its_root(tmp_path: Path) -> None:
    archive = sagemaker_job.sourcedir_bytes()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(sagemaker_job.RUNTIME_FILES)
    assert "requirements.txt" in names and sagemaker_job.ENTRY_POINT in names
    # Reproducible, so the asset hash holds: the same files with other timestamps (a fresh clone) give the same bytes.
    sources = {name: sagemaker_job.SHARED_FILES.get(name, sagemaker_job.HERE / name) for name in names}
    for name, path in sources.items():
        shutil.copy(path, tmp_path / name)
        os.utime(tmp_path / name, (1_900_000_000, 1_900_000_000))
    assert sourcedir_archive(tmp_path, sagemaker_job.RUNTIME_FILES) == archive


def test_training_role_trust_and_prefix_scoped_grants(template: dict[str, Any]) -> None:
    role_id, role = _role(template, "TrainingRole")
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    assert render(trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":training-job/*")
    granted = _role_statements(template, role_id)
    assert set(as_list(granted["SyncCheckpoints"]["Action"])) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert render(granted["SyncCheckpoints"]["Resource"]).endswith("/checkpoints/*")
    assert as_list(granted["WriteModel"]["Action"]) == ["s3:PutObject"]
    assert render(granted["WriteModel"]["Resource"]).endswith("/output/*")
    assert render(granted["ReadCode"]["Resource"]).endswith("/code/*")
    writes = [s for s in granted.values() if "s3:PutObject" in as_list(s["Action"])]
    assert all("DataBucket" not in render(r) for s in writes for r in as_list(s["Resource"]))  # data: read only


def test_import_role_is_trusted_by_bedrock_import_jobs_and_reads_only_merged_models(template: dict[str, Any]) -> None:
    role_id, role = _role(template, "ImportRole")
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    assert render(trust["Condition"]["ArnEquals"]["aws:SourceArn"]).endswith(":model-import-job/*")
    granted = _role_statements(template, role_id)
    assert set(granted) == {"ReadMergedModel", "ListMergedModel"}
    merged = pipeline.merged_prefix(JOB_PREFIX)
    assert merged == f"output/{JOB_PREFIX}*/output/model/merged/"
    assert as_list(granted["ReadMergedModel"]["Action"]) == ["s3:GetObject"]
    assert render(granted["ReadMergedModel"]["Resource"]).endswith(f"/{merged}*")
    assert granted["ListMergedModel"]["Condition"]["StringLike"]["s3:prefix"] == [merged, f"{merged}*"]


def test_the_pipeline_passes_each_role_only_to_its_service(template: dict[str, Any]) -> None:
    machine_role = next(iter(resources(template, "AWS::StepFunctions::StateMachine").values()))
    role_id = machine_role["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    granted = _role_statements(template, role_id)
    assert granted["PassTrainingRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert granted["PassImportRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}


def test_the_pipeline_lists_only_the_checkpoints_prefix_of_the_artifacts_bucket(template: dict[str, Any]) -> None:
    role_id = asl.state_machine(template, "StateMachine")[1]["RoleArn"]["Fn::GetAtt"][0]
    granted = _role_statements(template, role_id)
    artifacts = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("ArtifactsBucket"))
    assert granted["FindCheckpoints"] == {
        "Sid": "FindCheckpoints",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": {"Fn::GetAtt": [artifacts, "Arn"]},
        "Condition": {"StringLike": {"s3:prefix": ["checkpoints/*"]}},
    }
    listings = [s for s in granted.values() if "s3:ListBucket" in as_list(s["Action"])]
    assert len(listings) == 2  # the data bucket (training data, base model) and this one


def test_the_sync_training_task_has_every_grant_cdk_gives_one_and_tags_only_the_kits_jobs(
    template: dict[str, Any], machine: dict[str, Any]
) -> None:
    """Before: no sagemaker:AddTags (Step Functions tags the job it starts and is refused without it:
    aws/aws-cdk#32294) and no sagemaker:ListTags (the documented .sync policy grants it on "*")."""
    [train] = [s for s in machine["States"].values() if s.get("Resource", "").endswith("createTrainingJob.sync")]
    role_id = asl.state_machine(template, "StateMachine")[1]["RoleArn"]["Fn::GetAtt"][0]
    granted = _role_statements(template, role_id).values()
    job_arn = f"arn:aws:sagemaker:us-east-1:${{AWS::AccountId}}:training-job/{JOB_PREFIX}0123"
    reference = cdk_sync_training_job_grants()
    assert {"sagemaker:AddTags", "sagemaker:ListTags"} <= {action for action, _ in reference}, train["Resource"]
    for action, resource in reference:
        wanted = "*" if resource == "*" else job_arn  # CDK's job name "job" stands for this stage's prefix
        assert any(
            action in as_list(s["Action"])
            and any(fnmatch.fnmatchcase(wanted, render(r)) for r in as_list(s["Resource"]))
            for s in granted
        ), f"{action} on {wanted} is not granted"
    # Whatever may change a job (create, stop, tag) is scoped to the kit's own jobs.
    writes = {"sagemaker:CreateTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:AddTags"}
    for statement in granted:
        if writes & set(as_list(statement["Action"])):
            assert [render(r) for r in as_list(statement["Resource"])] == [
                f"arn:aws:sagemaker:us-east-1:${{AWS::AccountId}}:training-job/{JOB_PREFIX}*"
            ]


def test_without_a_hub_token_secret_the_training_role_reads_no_secret(template: dict[str, Any]) -> None:
    actions = {a for _, s in statements(template) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith(("secretsmanager:", "kms:"))}


def test_training_job_events_and_stopped_executions_are_notified(template: dict[str, Any]) -> None:
    patterns = [r["Properties"]["EventPattern"] for r in resources(template, "AWS::Events::Rule").values()]
    assert {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {"TrainingJobName": [{"prefix": JOB_PREFIX}]},
    } in patterns
    [ended] = [
        r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"]["EventPattern"]["source"] == ["aws.states"]
    ]
    assert ended["EventPattern"]["detail"]["status"] == ["FAILED", "TIMED_OUT", "ABORTED"]
    assert ended["EventPattern"]["detail"]["stateMachineArn"] == [
        {"Ref": asl.state_machine(template, "StateMachine")[0]}
    ]
    assert [t["Arn"] for t in ended["Targets"]] == [{"Ref": asl.state_machine(template, "TeardownStateMachine")[0]}]


def test_the_teardown_role_may_only_read_and_stop_the_kits_jobs_read_imports_delete_imported_models_and_notify(
    template: dict[str, Any],
) -> None:
    role_id = asl.state_machine(template, "TeardownStateMachine")[1]["RoleArn"]["Fn::GetAtt"][0]
    granted = {
        action: [render(r) for r in as_list(s["Resource"])]
        for s in _role_statements(template, role_id).values()
        for action in as_list(s["Action"])
        if not action.startswith(("xray:", "logs:"))
    }
    topic = next(iter(resources(template, "AWS::SNS::Topic")))
    jobs = [f"arn:aws:sagemaker:{asl.REGION}:${{AWS::AccountId}}:training-job/{JOB_PREFIX}*"]
    assert granted == {
        "sagemaker:DescribeTrainingJob": jobs,
        "sagemaker:StopTrainingJob": jobs,
        "bedrock:DeleteImportedModel": [f"arn:aws:bedrock:{asl.REGION}:${{AWS::AccountId}}:imported-model/*"],
        "bedrock:GetModelImportJob": [f"arn:aws:bedrock:{asl.REGION}:${{AWS::AccountId}}:model-import-job/*"],
        "sns:Publish": [render({"Ref": topic})],
    }


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"sm_base_model": "not a hub id"}, "sm_base_model"),
        ({"sm_instance_type": "g5.xlarge"}, "sm_instance_type"),
        ({"sm_instance_count": 0}, "sm_instance_count"),
        ({"sm_spot": True, "sm_max_runtime_hours": 8, "sm_max_wait_hours": 4}, "sm_max_wait_hours"),
        ({"sm_import_max_minutes": 5}, "sm_import_max_minutes"),
        ({"sm_hub_token_secret": "hf token"}, "sm_hub_token_secret"),
        (
            {"sm_hub_token_secret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-token"},
            "sm_hub_token_secret",
        ),
        ({"sm_hub_token_secret": "arn:aws:s3:::bucket/hf-token-AbCdEf"}, "sm_hub_token_secret"),
    ],
)
def test_config_mistakes_are_one_line_errors(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(**overrides)
    assert [p.key for p in err.value.problems] == [key]


# --- the pipeline, run in the ASL simulator -------------------------------------------------------------


def _results(
    *,
    keys: int = 1,
    model_keys: int = 1,
    checkpoint_keys: int = 1,
    training: asl.AslError | None = None,
    statuses: tuple[str, ...] = ("InProgress", "Completed"),
    smoke: asl.AslError | None = None,
    not_ready: int = 0,
    validation: Any = None,
) -> Any:
    """API-shaped task results; ``statuses`` are GetModelImportJob's answers in order (the last repeats);
    ``validation`` is the validator's answer (a dict, an AslError, or a callable taking the call; default valid)."""
    polls = {"n": 0}
    smoke_calls = {"n": 0}

    def result(call: asl.TaskCall) -> Any:
        if call.resource == asl.SNS_PUBLISH:
            return {"MessageId": "m-1"}
        if call.state == "ValidateData":
            answer = VALID if validation is None else validation
            if isinstance(answer, asl.AslError):
                raise answer
            return answer(call) if callable(answer) else answer
        found = {"FindTrainingData": keys, "FindBaseModel": model_keys, "FindCheckpoints": checkpoint_keys}
        if call.state in found:
            return _listed(call, found[call.state])
        if call.state == "TrainModel":
            if training:
                raise training
            name = call.parameters["TrainingJobName"]
            return {
                "TrainingJobName": name,
                "TrainingJobArn": f"arn:aws:sagemaker:{asl.REGION}:{asl.ACCOUNT}:training-job/{name}",
                "TrainingJobStatus": "Completed",
                "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/output/{name}/output/model/"},
            }
        if call.state == "ImportModel":
            return {"JobArn": IMPORT_JOB_ARN}
        if call.state == "GetImportJob":
            status = statuses[min(polls["n"], len(statuses) - 1)]
            polls["n"] += 1
            answer = {
                "JobArn": IMPORT_JOB_ARN,
                "JobName": "j",
                "ImportedModelName": "m",
                "Status": status,
            }
            if status == "Completed":
                answer["ImportedModelArn"] = MODEL_ARN
            if status == "Failed":
                answer["FailureMessage"] = "Unsupported architecture"
            return answer
        if call.state == "SmokeTest":
            smoke_calls["n"] += 1
            if smoke_calls["n"] <= not_ready:
                raise asl.AslError("Bedrock.ModelNotReadyException", "the model is being restored")
            if smoke:
                raise smoke
            return {"Body": {"choices": [{"message": {"content": "ready"}}]}, "ContentType": "application/json"}
        if call.state == "DeleteImportedModel":
            return {}
        raise AssertionError(f"unexpected task {call.state}")

    return result


def _listed(call: asl.TaskCall, keys: int, *, count: bool = True) -> dict[str, Any]:
    """ListObjectsV2's answer with ``keys`` keys (MaxKeys 1: at most one listed); without KeyCount if not ``count``.
    S3 leaves Contents out when no key matches (a flattened XML list: botocore s3 ListObjectsV2Output)."""
    answer: dict[str, Any] = {"IsTruncated": False, "Name": call.parameters["Bucket"], "MaxKeys": 1}
    if count:
        answer["KeyCount"] = min(keys, 1)
    if keys:
        prefix = call.parameters["Prefix"]
        answer["Contents"] = [{"Key": prefix + "part-0" if prefix.endswith("/") else prefix, "Size": 1}]
    return answer


# What sagemaker_validate answers for good data (its tests check the shape: test_sagemaker_validate.py).
VALID = {
    "valid": True,
    "records": 25,
    "files": 1,
    "problems": [],
    "complete": True,
    "summary": "25 records in 1 files under s3://data/datasets/",
    "importSlot": {"free": True, "summary": "0 models imported against a quota of 3: room for this run's import"},
}


def _failure(trace: asl.Trace) -> dict[str, Any]:
    [(state, message)] = trace.notifications
    assert state in ("NotifyFailed", "NotifyInvalidInput"), trace.describe()
    assert message["outcome"] == "failed"
    return dict(message["error"])


def test_success_trains_imports_the_merged_prefix_smoke_tests_and_notifies(
    machine: dict[str, Any], template: dict[str, Any]
) -> None:
    artifacts, data = _bucket(template, "Artifacts"), _bucket(template, "Data")
    trace = asl.simulate(machine, {"trainingKey": "datasets/train.jsonl"}, _results(), execution_name="run-1")
    assert trace.status == "SUCCEEDED", trace.describe()
    job = run_name(execution_arn("run-1"))
    request = trace.parameters("TrainModel")
    assert request["TrainingJobName"] == job
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{artifacts}/checkpoints/run-1/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    [channel] = request["InputDataConfig"]  # the base model comes from the Hub: no model channel
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{data}/datasets/train.jsonl"
    assert json.loads(request["HyperParameters"]["model"]) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert not trace.calls_to("FindBaseModel") and not trace.calls_to("FindCheckpoints")
    imported = trace.parameters("ImportModel")
    assert imported["JobName"] == imported["ImportedModelName"] == imported["ClientRequestToken"] == job
    assert imported["ModelDataSource"] == {
        "S3DataSource": {"S3Uri": f"s3://{artifacts}/output/{job}/output/model/merged/"}
    }
    resource = machine["States"]["ImportModel"]["Resource"]
    assert not asl.sdk_request_errors(resource, imported)
    assert not asl.sdk_request_errors(
        machine["States"]["GetImportJob"]["Resource"], trace.calls_to("GetImportJob")[0].parameters
    )
    smoke = trace.parameters("SmokeTest")
    assert smoke["ModelId"] == MODEL_ARN and smoke["Body"] == pipeline.SMOKE_BODY
    assert not trace.calls_to("DeleteImportedModel")  # the product of a good run is kept
    [(state, message)] = trace.notifications
    assert state == "NotifySucceeded"
    assert message["importedModelArn"] == MODEL_ARN and message["baseModel"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert message["importedModelName"] == job  # the name the run gave the model, not read from the answer
    assert message["checkpoints"] == f"s3://{artifacts}/checkpoints/run-1/"


def test_the_training_job_the_import_job_and_the_imported_model_carry_the_users_and_the_kits_tags(
    prod_extremes: Any,
) -> None:
    """Before: none of them carried a tag of the kit's or the user's (prod_extremes sets one), so an account whose
    policies require a tag on create refused the run, and the training instances and the imported model had no
    cost-allocation tag. The role may send exactly those keys: AddTags on the kit's jobs (which Step Functions needs
    for its own tag too), TagResource on import jobs and imported models for those keys only."""
    template = prod_extremes.templates[STACK]
    deployment = prod_extremes.config.deployment
    assert deployment.tags
    stack_tags = {
        "kit": KIT_NAME,
        "kit-level": "3-finetune-sagemaker",
        "kit-stage": deployment.stage,
        **deployment.tags,
    }
    machine = asl.definition_from_template(template, "StateMachine")
    trace = asl.simulate(machine, {"trainingKey": "datasets/train.jsonl"}, _results(), execution_name="run-1")
    assert trace.status == "SUCCEEDED", trace.describe()
    training, imported = trace.parameters("TrainModel"), trace.parameters("ImportModel")
    assert tags_of(training["Tags"]) == tags_of(imported["JobTags"]) == tags_of(imported["ImportedModelTags"])
    assert tags_of(training["Tags"]) == stack_tags
    assert not asl.sdk_request_errors(machine["States"]["ImportModel"]["Resource"], imported)
    role = role_of(asl.state_machine(template, "StateMachine")[1])
    job_arn = f"arn:aws:sagemaker:{asl.REGION}:{asl.ACCOUNT}:training-job/{training['TrainingJobName']}"
    assert allows_tagging(template, role, "sagemaker:AddTags", job_arn, stack_tags)
    for arn in (IMPORT_JOB_ARN, MODEL_ARN):
        assert allows_tagging(template, role, "bedrock:TagResource", arn, stack_tags), arn
        assert not allows_tagging(template, role, "bedrock:TagResource", arn, [*stack_tags, "other"]), arn


def test_a_request_may_name_another_base_model(machine: dict[str, Any]) -> None:
    execution_input = {"trainingKey": "datasets/", "baseModel": "meta-llama/Llama-3.2-1B-Instruct"}
    trace = asl.simulate(machine, execution_input, _results())
    assert trace.status == "SUCCEEDED", trace.describe()
    assert json.loads(trace.parameters("TrainModel")["HyperParameters"]["model"]) == "meta-llama/Llama-3.2-1B-Instruct"


@pytest.mark.parametrize(
    "execution_input",
    [
        [],
        [{"trainingKey": "datasets/train.jsonl"}],
        "datasets/train.jsonl",
        42,
        True,
        None,
        {},
        {"trainingKey": 7},
        {"trainingKey": "k", "baseModel": 3},
        # A base model named twice, or a key outside models/ (the whole prefix, not one file of it).
        {"trainingKey": "k", "baseModel": "Qwen/Qwen2.5-0.5B-Instruct", "baseModelKey": "models/qwen/"},
        {"trainingKey": "k", "baseModelKey": "datasets/qwen/"},
        {"trainingKey": "k", "baseModelKey": "models/qwen"},
        {"trainingKey": "k", "baseModelKey": "models/"},
        {"trainingKey": "k", "baseModelKey": ["models/qwen/"]},
        # resumeFrom: an execution name, which cannot leave checkpoints/<name>/.
        {"trainingKey": "k", "resumeFrom": 7},
        {"trainingKey": "k", "resumeFrom": ""},
        {"trainingKey": "k", "resumeFrom": "../other-run"},
        {"trainingKey": "k", "resumeFrom": "run-1/sft-00000050.pt"},
        {"trainingKey": "k", "resumeFrom": "run 1"},
        {"trainingKey": "k", "resumeFrom": "run-*"},
        {"trainingKey": "k", "resumeFrom": "run\\1"},
        {"trainingKey": "k", "resumeFrom": "arn:aws:states:us-east-1:123456789012:execution:genai-kit-sft:run-1"},
    ],
)
def test_bad_input_is_a_notified_rejection_before_any_job(machine: dict[str, Any], execution_input: Any) -> None:
    trace = asl.simulate(machine, execution_input, _results())
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput"), trace.describe()
    assert not trace.calls_to("TrainModel") and not trace.calls_to("FindTrainingData")
    assert not trace.calls_to("FindBaseModel") and not trace.calls_to("FindCheckpoints")  # rejected before any call
    assert _failure(trace)["Error"] == "InvalidInput"


def test_a_large_input_is_read_without_a_copy_and_bad_input_still_ends_in_the_notification(
    machine: dict[str, Any],
) -> None:
    # Before: SerializeInput added the input as JSON text next to the input, so an object over half the payload
    # quota (StartExecution takes 256 KiB) failed there with States.DataLimitExceeded, which no Catch catches:
    # the teardown saw a failed run that had done nothing and sent no notification either.
    note = "x" * 200_000  # an unknown field: the input is about 200 KB
    assert asl.PAYLOAD_LIMIT // 2 < asl.payload_bytes({"note": note}) < asl.PAYLOAD_LIMIT
    old = asl.simulate(serialized_input(machine), {"note": note}, _results())
    assert (old.status, old.terminal, old.error) == ("FAILED", "SerializeInput", "States.DataLimitExceeded")
    assert old.notifications == []
    # Now: the type check reads the input in place; bad input of that size is rejected and notified...
    usage = 'the execution input must be a JSON object: {"trainingKey": "<key or prefix in the data bucket>"}'
    for execution_input, cause in (
        ({"note": note}, usage),
        ([{"trainingKey": "datasets/train.jsonl", "note": note}], usage),
        ({"trainingKey": 7, "note": note}, "trainingKey must be a string: a key or prefix in the data bucket"),
    ):
        trace = asl.simulate(machine, execution_input, _results())
        assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput"), (
            trace.describe()
        )
        assert _failure(trace) == {"Error": "InvalidInput", "Cause": cause}
    # ...and good input of that size trains, imports and is notified.
    trace = asl.simulate(machine, {"trainingKey": "datasets/train.jsonl", "note": note}, _results())
    assert trace.status == "SUCCEEDED", trace.describe()
    assert [state for state, _ in trace.notifications] == ["NotifySucceeded"]


def test_a_base_model_from_the_data_bucket_is_the_model_channel_not_a_hub_id(
    machine: dict[str, Any], template: dict[str, Any]
) -> None:
    data = _bucket(template, "Data")
    execution_input = {"trainingKey": "datasets/train.jsonl", "baseModelKey": "models/qwen2.5-0.5b/"}
    trace = asl.simulate(machine, execution_input, _results())
    assert trace.status == "SUCCEEDED", trace.describe()
    # Its config.json is looked for before any instance starts.
    found = trace.parameters("FindBaseModel")
    assert found == {"Bucket": data, "Prefix": "models/qwen2.5-0.5b/config.json", "MaxKeys": 1}
    assert not asl.sdk_request_errors(machine["States"]["FindBaseModel"]["Resource"], found)
    request = trace.parameters("TrainModel")
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels == {
        "train": {
            "S3DataType": "S3Prefix",
            "S3Uri": f"s3://{data}/datasets/train.jsonl",
            "S3DataDistributionType": "FullyReplicated",
        },
        "model": {
            "S3DataType": "S3Prefix",
            "S3Uri": f"s3://{data}/models/qwen2.5-0.5b/",
            "S3DataDistributionType": "FullyReplicated",
        },
    }
    # No model hyperparameter: the program takes the channel, and refuses a run that names both.
    assert "model" not in request["HyperParameters"]
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == "sft_train.py"
    assert not asl.member_errors("sagemaker", "CreateTrainingJob", "InputDataConfig", request["InputDataConfig"])
    [(_, message)] = trace.notifications
    assert message["baseModel"] == f"s3://{data}/models/qwen2.5-0.5b/"


def test_a_base_model_key_without_config_json_is_rejected_before_the_job(machine: dict[str, Any]) -> None:
    execution_input = {"trainingKey": "datasets/", "baseModelKey": "models/empty/"}
    trace = asl.simulate(machine, execution_input, _results(model_keys=0))
    assert (trace.status, trace.terminal) == ("FAILED", "InputRejected"), trace.describe()
    assert not trace.calls_to("TrainModel") and not trace.calls_to("FindTrainingData")
    cause = _failure(trace)["Cause"]
    assert "models/empty/" in cause and "config.json" in cause and "--base-model-dir" in cause


def test_a_resumed_run_trains_with_the_earlier_executions_checkpoints(
    machine: dict[str, Any], template: dict[str, Any]
) -> None:
    artifacts = _bucket(template, "Artifacts")
    execution_input = {"trainingKey": "datasets/", "resumeFrom": "kit-20260101-120000-ab12"}
    trace = asl.simulate(machine, execution_input, _results(), execution_name="run-2")
    assert trace.status == "SUCCEEDED", trace.describe()
    found = trace.parameters("FindCheckpoints")
    # Only a checkpoint file the program wrote (sft-<step>.pt) counts, not a killed save's temporary
    assert found == {"Bucket": artifacts, "Prefix": "checkpoints/kit-20260101-120000-ab12/sft-", "MaxKeys": 1}
    from pathlib import Path

    from workloads.pretrain import checkpoints

    final = checkpoints.checkpoint_path(Path("/opt/ml/checkpoints"), 7, prefix=checkpoints.SFT_PREFIX)
    assert final.name.startswith("sft-") and not checkpoints.temporary_path(final).name.startswith("sft-")
    assert not asl.sdk_request_errors(machine["States"]["FindCheckpoints"]["Resource"], found)
    request = trace.parameters("TrainModel")
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{artifacts}/checkpoints/kit-20260101-120000-ab12/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    # A new job, imported under its own name; its checkpoints stay under the resumed execution's name.
    assert request["TrainingJobName"] == run_name(execution_arn("run-2"))
    assert trace.parameters("ImportModel")["ImportedModelName"] == run_name(execution_arn("run-2"))


def test_a_resume_that_finds_no_checkpoint_is_rejected_rather_than_training_from_scratch(
    machine: dict[str, Any],
) -> None:
    execution_input = {"trainingKey": "datasets/", "resumeFrom": "kit-typo"}
    trace = asl.simulate(machine, execution_input, _results(checkpoint_keys=0))
    assert (trace.status, trace.terminal) == ("FAILED", "InputRejected"), trace.describe()
    assert not trace.calls_to("TrainModel")
    assert "checkpoints/kit-typo/" in _failure(trace)["Cause"]


def test_a_resumed_run_may_also_take_its_base_model_from_the_data_bucket(machine: dict[str, Any]) -> None:
    execution_input = {"trainingKey": "datasets/", "baseModelKey": "models/m/", "resumeFrom": "run-1"}
    trace = asl.simulate(machine, execution_input, _results())
    assert trace.status == "SUCCEEDED", trace.describe()
    assert [c.state for c in trace.calls if c.state.startswith("Find")] == [
        "FindBaseModel",
        "FindCheckpoints",
        "FindTrainingData",
    ]
    assert trace.parameters("TrainModel")["CheckpointConfig"]["S3Uri"].endswith("/checkpoints/run-1/")


def test_missing_training_data_is_rejected_before_the_job(machine: dict[str, Any]) -> None:
    trace = asl.simulate(machine, {"trainingKey": "datasets/none.jsonl"}, _results(keys=0))
    assert (trace.status, trace.terminal) == ("FAILED", "InputRejected"), trace.describe()
    assert not trace.calls_to("TrainModel")
    assert "datasets/none.jsonl" in _failure(trace)["Cause"]


def test_training_failure_is_notified_and_nothing_is_imported(machine: dict[str, Any]) -> None:
    error = asl.AslError("States.TaskFailed", '{"FailureReason": "AlgorithmError: exit code 3 (import check)"}')
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(training=error))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert not trace.calls_to("ImportModel") and not trace.calls_to("DeleteImportedModel")
    assert "exit code 3" in _failure(trace)["Cause"]


@pytest.mark.parametrize("outcome", ["trained", "training-failed"])
def test_an_input_near_the_payload_quota_is_not_carried_into_the_training_jobs_states(
    machine: dict[str, Any], outcome: str
) -> None:
    # Before: the input went on with the run, and a failed job's Cause (up to 32,768 characters) on top of an
    # input near StartExecution's 256 KiB was States.DataLimitExceeded at TrainModel, which no Catch catches: the
    # paid job's failure was not notified.
    execution_input = {"trainingKey": "datasets/train.jsonl", "note": "x" * (asl.PAYLOAD_LIMIT - 6_000)}
    assert asl.payload_bytes(execution_input) < asl.PAYLOAD_LIMIT
    cause = "y" * 32_768
    error = asl.AslError("States.TaskFailed", cause) if outcome == "training-failed" else None
    trace = asl.simulate(machine, execution_input, _results(training=error), execution_name="run-9")
    if error is None:
        assert trace.status == "SUCCEEDED", trace.describe()
        assert [state for state, _ in trace.notifications] == ["NotifySucceeded"]
    else:
        assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
        assert _failure(trace)["Cause"] == cause


def test_import_failure_is_notified_after_the_model_is_deleted(machine: dict[str, Any]) -> None:
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(statuses=("InProgress", "Failed")))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert not trace.calls_to("SmokeTest")
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    error = _failure(trace)
    assert error["Error"] == "ModelImportFailed" and "Unsupported architecture" in error["Cause"]


@pytest.mark.parametrize(
    "error",
    ["Bedrock.InternalServerException", "Bedrock.InternalFailureException", "Bedrock.ServiceUnavailableException"],
)
def test_a_retried_import_whose_first_call_created_the_job_goes_on_with_that_job(
    machine: dict[str, Any], error: str
) -> None:
    """CreateModelImportJob answers a server error after it created the job (InternalServerException, which
    botocore declares; InternalFailure and ServiceUnavailable, which Bedrock documents as errors to retry:
    https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html); the retry sends the
    same clientRequestToken, which Bedrock answers without an error (botocore bedrock CreateModelImportJobRequest),
    so the run waits for that job instead of failing on its taken name and leaving its model unannounced. Before,
    InternalFailure failed the run after the training it paid for."""
    results = _results()
    created: dict[str, str] = {}  # token -> job name, as Bedrock keeps them

    def result(call: asl.TaskCall) -> Any:
        if call.state != "ImportModel":
            return results(call)
        token, name = call.parameters.get("ClientRequestToken"), call.parameters["JobName"]
        if token is not None and created.get(token) == name:
            return {"JobArn": IMPORT_JOB_ARN}  # the request is ignored: the job it already created
        if name in created.values():
            raise asl.AslError("Bedrock.ConflictException", f"a model import job named {name} already exists")
        created[token or f"no-token-{len(created)}"] = name
        raise asl.AslError(error, "the job was created, but the answer was lost")

    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert trace.status == "SUCCEEDED", trace.describe()
    first, retry = trace.calls_to("ImportModel")
    assert first.parameters == retry.parameters
    assert first.parameters["ClientRequestToken"] == run_name(execution_arn("test-execution"))
    assert not trace.calls_to("DeleteImportedModel")


def _import_poll_failing(*errors: asl.AslError) -> Any:
    """_results(), with GetModelImportJob failing with ``errors`` on its first calls after the first poll."""
    base, calls = _results(), {"n": 0}

    def result(call: asl.TaskCall) -> Any:
        if call.state == "GetImportJob":
            calls["n"] += 1
            if 2 <= calls["n"] < 2 + len(errors):
                raise errors[calls["n"] - 2]
        return base(call)

    return result


@pytest.mark.parametrize("error", ["Bedrock.InternalFailureException", "Bedrock.ServiceUnavailableException"])
def test_an_import_poll_that_fails_once_is_retried_and_the_run_goes_on(machine: dict[str, Any], error: str) -> None:
    """Bedrock's common server errors (InternalFailure 500, ServiceUnavailable 503: retry with backoff,
    https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html) must not fail the
    run: the import job cannot be stopped and would create its model after the run deleted it by name."""
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_poll_failing(asl.AslError(error, "server")))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert trace.retries == {"GetImportJob": 1}
    assert not trace.calls_to("DeleteImportedModel")


def test_an_import_poll_that_keeps_failing_is_cleaned_up_and_notified_within_minutes(
    machine: dict[str, Any],
) -> None:
    denied = asl.AslError("Bedrock.AccessDeniedException", "not authorized to perform bedrock:GetModelImportJob")
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_poll_failing(*[denied] * 10))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    failing = trace.calls_to("GetImportJob")[1:]
    assert len(failing) == 1 + POLL_RETRY_ATTEMPTS
    assert failing[-1].at - failing[0].at <= 600
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    assert _failure(trace)["Error"] == "Bedrock.AccessDeniedException"


def test_an_import_poll_failing_for_minutes_with_server_errors_is_retried_and_the_run_goes_on(
    machine: dict[str, Any],
) -> None:
    """Four InternalServerExceptions in a row (a few minutes of Bedrock trouble in a wait of up to two hours) must
    not end the run: the first retrier naming the error decides, and its attempts spent, the Catch does
    (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html)."""
    server = asl.AslError("Bedrock.InternalServerException", "server")
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_poll_failing(*[server] * 4))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert trace.retries == {"GetImportJob": 4}
    assert not trace.calls_to("DeleteImportedModel")


def _names_what_may_be_left(error: dict[str, Any], original: str) -> None:
    """A notified failure after the import was requested names the import job and the model it may still create,
    says why, and keeps the original error."""
    name = run_name(execution_arn("test-execution"))
    assert error["Error"] == original
    cause = error["Cause"]
    assert cause.count(name) == 3 and "Bedrock cannot stop it" in cause and "delete it" in cause, cause
    # The command to delete it, in the stack's region (the CLI's default may be another).
    assert f"aws bedrock delete-imported-model --region us-east-1 --model-identifier {name})" in cause
    assert json.loads(cause.split("Error: ", 1)[1])["Error"] == original


def test_an_import_poll_that_keeps_failing_names_the_import_job_and_the_model_in_the_notification(
    machine: dict[str, Any],
) -> None:
    server = asl.AslError("Bedrock.InternalServerException", "the service is unavailable")
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_poll_failing(*[server] * 100))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    error = _failure(trace)
    _names_what_may_be_left(error, "Bedrock.InternalServerException")
    assert "the service is unavailable" in error["Cause"]


def _import_create_failing(error: asl.AslError) -> Any:
    """_results(), with every CreateModelImportJob call failing with ``error``."""
    base = _results()

    def result(call: asl.TaskCall) -> Any:
        if call.state == "ImportModel":
            raise error
        return base(call)

    return result


def test_an_import_whose_create_keeps_failing_names_the_import_job_and_the_model_in_the_notification(
    machine: dict[str, Any],
) -> None:
    """Every answer of CreateModelImportJob lost: the job may exist all the same, and create its model later."""
    result = _import_create_failing(asl.AslError("Bedrock.InternalServerException", "the answer was lost"))
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert len(trace.calls_to("ImportModel")) == 1 + THROTTLE_RETRY_ATTEMPTS
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    _names_what_may_be_left(_failure(trace), "Bedrock.InternalServerException")


@pytest.mark.parametrize(
    ("state", "operation"), [("ImportModel", "CreateModelImportJob"), ("GetImportJob", "GetModelImportJob")]
)
def test_the_import_calls_retry_every_server_and_throttling_error_botocore_lists_as_long_as_the_bedrock_path(
    machine: dict[str, Any], state: str, operation: str
) -> None:
    """Each 5xx or 429 error botocore's model lists for the call is retried first by a retrier with the Bedrock
    path's budget (pipeline.retry_throttling): only that first matching retrier counts before the Catch."""
    errors = [
        shape.name
        for shape in botocore.session.get_session().get_service_model("bedrock").operation_model(operation).error_shapes
        if shape.metadata["error"]["httpStatusCode"] >= 500 or shape.metadata["error"]["httpStatusCode"] == 429
    ]
    assert errors
    retriers = machine["States"][state]["Retry"]
    for error in errors:
        first = next(r for r in retriers if f"Bedrock.{error}" in r["ErrorEquals"] or "States.ALL" in r["ErrorEquals"])
        assert first["MaxAttempts"] >= THROTTLE_RETRY_ATTEMPTS, (error, first)
        assert first["IntervalSeconds"] >= THROTTLE_RETRY_INTERVAL.to_seconds(), (error, first)
    if state == "GetImportJob":  # then any other error, briefly, before the Catch
        assert retriers[-1]["ErrorEquals"] == ["States.TaskFailed"]


def test_an_import_that_outlives_the_wait_is_bounded_cleaned_up_and_notified(machine: dict[str, Any]) -> None:
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(statuses=("InProgress",)))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert len(trace.calls_to("GetImportJob")) == 120  # sm_import_max_minutes at one poll a minute
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    error = _failure(trace)
    assert error["Error"] == "ModelImportTimedOut" and IMPORT_JOB_ARN in error["Cause"]


def test_a_failed_smoke_invocation_deletes_the_model_and_notifies(machine: dict[str, Any]) -> None:
    error = asl.AslError("Bedrock.ValidationException", "Malformed input request")
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(smoke=error))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    assert _failure(trace)["Error"] == "Bedrock.ValidationException"


def test_a_model_still_loading_is_retried_before_the_smoke_test_fails(machine: dict[str, Any]) -> None:
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(not_ready=2))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert len(trace.calls_to("SmokeTest")) == 3


def test_a_loading_model_whose_error_has_another_name_is_retried_not_deleted(machine: dict[str, Any]) -> None:
    # The Step Functions Bedrock page names no invokeModel errors: whatever a loading model answers is retried.
    base, calls = _results(), {"n": 0}

    def result(call: asl.TaskCall) -> Any:
        if call.state == "SmokeTest":
            calls["n"] += 1
            if calls["n"] <= 3:
                raise asl.AslError("BedrockRuntime.ModelNotReadyException", "Model is not ready for inference")
        return base(call)

    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert trace.status == "SUCCEEDED", trace.describe()
    assert len(trace.calls_to("SmokeTest")) == 4 and not trace.calls_to("DeleteImportedModel")


def test_a_smoke_error_that_persists_is_retried_then_the_model_is_deleted(machine: dict[str, Any]) -> None:
    error = asl.AslError("Bedrock.ValidationException", "Malformed input request")
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(smoke=error))
    assert len(trace.calls_to("SmokeTest")) == 1 + pipeline.SMOKE_RETRY_ATTEMPTS
    assert len(trace.calls_to("DeleteImportedModel")) == 1


def test_a_cleanup_that_finds_no_model_still_notifies_the_original_error(machine: dict[str, Any]) -> None:
    base = _results(statuses=("Failed",))

    def result(call: asl.TaskCall) -> Any:
        if call.state == "DeleteImportedModel":
            raise asl.AslError("Bedrock.ResourceNotFoundException", "no such model")
        return base(call)

    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert _failure(trace)["Error"] == "ModelImportFailed"


def test_every_task_failure_after_the_import_started_goes_through_the_cleanup(machine: dict[str, Any]) -> None:
    # A failed create or poll first names the import job and the model (it may go on and create the model).
    for state, via in (("ImportModel", "ImportNotConfirmed"), ("GetImportJob", "ImportNotWatched"), ("SmokeTest", "")):
        [catch] = machine["States"][state]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], state
        assert catch["Next"] == (via or "DeleteImportedModel"), state
        if via:
            assert machine["States"][via]["Next"] == "DeleteImportedModel"
    for state in ("ImportFailed", "ImportNamesNoModel", "ImportTimedOut"):
        assert machine["States"][state]["Next"] == "DeleteImportedModel"


def test_a_notification_that_keeps_failing_still_ends_the_run_where_it_would(machine: dict[str, Any]) -> None:
    base = _results(smoke=asl.AslError("Bedrock.ValidationException", "Malformed input request"))

    def result(call: asl.TaskCall) -> Any:
        if call.resource == asl.SNS_PUBLISH:
            raise asl.AslError("SNS.InternalErrorException", "unavailable")
        return base(call)

    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "PipelineFailed", "FineTuningFailed")
    assert trace.calls_to("DeleteImportedModel")  # the clean-up ran before the notification was tried
    # No notification went out, and the run's own cause still names the smoke test's error.
    summary, _, detail = str(trace.cause).partition(": ")
    assert summary == "The SageMaker fine-tuning run failed"
    assert json.loads(detail)["Error"] == "Bedrock.ValidationException"
    assert len(trace.calls_to("NotifyFailed")) == 1 + pipeline.RETRY_ATTEMPTS


# --- answers without the members botocore does not require ---------------------------------------------------


def test_the_models_do_not_require_the_members_the_pipeline_reads() -> None:
    """The premise of the tests below: botocore bedrock 2023-04-20 GetModelImportJobResponse requires no member, and
    s3 2006-03-01 ListObjectsV2Output none either; its Contents is a flattened XML list, absent when nothing is
    listed."""
    session = botocore.session.get_session()
    imported = session.get_service_model("bedrock").operation_model("GetModelImportJob").output_shape
    assert not {"status", "importedModelArn", "importedModelName"} & set(imported.required_members)
    assert {"status", "importedModelArn", "importedModelName"} <= set(imported.members)
    listed = session.get_service_model("s3").operation_model("ListObjectsV2").output_shape
    assert "KeyCount" in listed.members and "KeyCount" not in listed.required_members
    assert listed.members["Contents"].serialization.get("flattened") is True


def _import_answers(*answers: dict[str, Any], base: Any = None) -> Any:
    """_results(), with GetModelImportJob answering ``answers`` in order (the last repeats)."""
    base, polls = base or _results(), {"n": 0}

    def result(call: asl.TaskCall) -> Any:
        if call.state == "GetImportJob":
            polls["n"] += 1
            return answers[min(polls["n"], len(answers)) - 1]
        return base(call)

    return result


IMPORTING = {"JobArn": IMPORT_JOB_ARN, "JobName": "j", "Status": "InProgress"}
NO_STATUS = {"JobArn": IMPORT_JOB_ARN, "JobName": "j"}
IMPORTED = {
    "JobArn": IMPORT_JOB_ARN,
    "JobName": "j",
    "ImportedModelName": "m",
    "ImportedModelArn": MODEL_ARN,
    "Status": "Completed",
}


def test_an_import_answer_without_a_status_is_polled_again(machine: dict[str, Any]) -> None:
    """Before: ImportDone compared an absent $.importJob.Status, a States.Runtime error no Catch takes: the run ended
    FAILED with no notification, and the import job it cannot stop went on to create a model."""
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_answers(IMPORTING, NO_STATUS, IMPORTED))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert len(trace.calls_to("GetImportJob")) == 3 and trace.visited.count("CountPoll") == 3
    assert [state for state, _ in trace.notifications] == ["NotifySucceeded"]


def test_import_answers_that_never_name_a_status_are_polled_within_the_same_bound(machine: dict[str, Any]) -> None:
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_answers(NO_STATUS))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert len(trace.calls_to("GetImportJob")) == 120  # sm_import_max_minutes at one poll a minute, as InProgress
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": run_name(execution_arn("test-execution"))}
    assert _failure(trace)["Error"] == "ModelImportTimedOut"


def test_a_completed_import_whose_answer_names_no_model_name_is_announced_by_the_name_the_run_gave_it(
    machine: dict[str, Any],
) -> None:
    """Before: NotifySucceeded read an absent $.importJob.ImportedModelName, a States.Runtime error after the smoke
    test passed: the run ended FAILED with no notification, and the teardown deleted the good model."""
    answer = {k: v for k, v in IMPORTED.items() if k != "ImportedModelName"}
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_answers(IMPORTING, answer))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert not trace.calls_to("DeleteImportedModel")
    [(state, message)] = trace.notifications
    assert state == "NotifySucceeded"
    name = run_name(execution_arn("test-execution"))
    assert message["importedModelName"] == name == trace.parameters("ImportModel")["ImportedModelName"]
    assert message["importedModelArn"] == MODEL_ARN


def test_a_completed_import_whose_answer_names_no_model_arn_is_a_notified_failure_after_the_model_is_deleted(
    machine: dict[str, Any],
) -> None:
    """Before: SmokeTest's ModelId selected an absent $.importJob.ImportedModelArn, a States.Runtime error its Catch
    does not take: the run ended FAILED with no notification. InvokeModel takes an imported model by its ARN only
    (botocore bedrock-runtime InvokeModelRequest modelId), so without it there is no smoke test: the model is
    deleted by its name and the failure notified."""
    answer = {k: v for k, v in IMPORTED.items() if k != "ImportedModelArn"}
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _import_answers(IMPORTING, answer))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert not trace.calls_to("SmokeTest") and len(trace.calls_to("GetImportJob")) == 2
    name = run_name(execution_arn("test-execution"))
    assert trace.parameters("DeleteImportedModel") == {"ModelIdentifier": name}
    error = _failure(trace)
    assert error["Error"] == "ImportedModelArnMissing"
    assert IMPORT_JOB_ARN in error["Cause"] and name in error["Cause"] and '"Status":"Completed"' in error["Cause"]


# Each listing, the input that reaches it, and the state that rejects the run when it finds nothing.
LISTINGS = {
    "FindTrainingData": ({}, "NoTrainingData"),
    "FindBaseModel": ({"baseModelKey": "models/m/"}, "NoBaseModel"),
    "FindCheckpoints": ({"resumeFrom": "run-1"}, "NoCheckpoints"),
}


def _uncounted(state: str, keys: int) -> Any:
    """_results(), with the listing of ``state`` answering without KeyCount (``keys`` keys listed)."""
    base = _results()

    def result(call: asl.TaskCall) -> Any:
        return _listed(call, keys, count=False) if call.state == state else base(call)

    return result


@pytest.mark.parametrize("state", LISTINGS)
def test_a_listing_without_a_key_count_that_lists_a_key_has_found_one(machine: dict[str, Any], state: str) -> None:
    """Before: the listing's ResultSelector selected an absent $.KeyCount, a States.Runtime error no Catch takes: the
    run ended FAILED with no notification. An answer that lists Contents has found a key."""
    execution_input = {"trainingKey": "datasets/", **LISTINGS[state][0]}
    trace = asl.simulate(machine, execution_input, _uncounted(state, 1))
    assert trace.status == "SUCCEEDED", trace.describe()
    assert trace.calls_to(state) and trace.calls_to("TrainModel")


@pytest.mark.parametrize("state", LISTINGS)
def test_a_listing_without_a_key_count_or_contents_is_a_notified_rejection(machine: dict[str, Any], state: str) -> None:
    execution_input, rejection = LISTINGS[state]
    trace = asl.simulate(machine, {"trainingKey": "datasets/", **execution_input}, _uncounted(state, 0))
    assert (trace.status, trace.terminal) == ("FAILED", "InputRejected"), trace.describe()
    assert rejection in trace.visited and not trace.calls_to("TrainModel")
    assert _failure(trace)["Error"] == "InvalidInput"


# --- the names an execution gives what it creates -----------------------------------------------------------

# Every request that carries one of those names, with the botocore member that takes it: the pipeline's, the
# teardown's, the sandbox cleanup's and kit l3sm's calls.
NAME_MEMBERS = [
    ("sagemaker", "CreateTrainingJob", "TrainingJobName"),
    ("sagemaker", "DescribeTrainingJob", "TrainingJobName"),
    ("sagemaker", "StopTrainingJob", "TrainingJobName"),
    ("bedrock", "CreateModelImportJob", "jobName"),
    ("bedrock", "CreateModelImportJob", "importedModelName"),
    ("bedrock", "CreateModelImportJob", "clientRequestToken"),
    ("bedrock", "GetModelImportJob", "jobIdentifier"),
    ("bedrock", "GetImportedModel", "modelIdentifier"),
    ("bedrock", "DeleteImportedModel", "modelIdentifier"),
]


def test_what_an_execution_creates_is_named_within_every_limit_for_the_longest_names(
    machine: dict[str, Any], teardown: dict[str, Any]
) -> None:
    """The longest name_prefix the configuration accepts, the longest stage, and the longest execution and state
    machine names StartExecution and CreateStateMachine allow (limits read from botocore's service models): the
    training job, the import job and the imported model names still fit every API that takes them."""
    job_name_max = api_member_max("sagemaker", "CreateTrainingJob", "TrainingJobName")
    longest_name_prefix = len(longest_name_prefix_of(job_name_max))
    longest = build(name_prefix="k" * longest_name_prefix, stage=max(STAGES, key=len)).resource_name("sft") + "-"
    execution = "e" * api_member_max("stepfunctions", "StartExecution", "name")
    machine_name = "m" * api_member_max("stepfunctions", "CreateStateMachine", "name")
    ran = asl.simulate(
        machine, {"trainingKey": "datasets/"}, _results(), execution_name=execution, state_machine_name=machine_name
    )
    assert ran.status == "SUCCEEDED", ran.describe()
    arn = execution_arn(execution, machine_name)
    ended = {**_ended("TIMED_OUT"), "detail": {**_ended("TIMED_OUT")["detail"], "executionArn": arn}}
    torn = asl.simulate(
        teardown, ended, lambda call: described("InProgress") if call.state == "DescribeItsTrainingJob" else {}
    )
    names = {
        ran.parameters("TrainModel")["TrainingJobName"],
        ran.parameters("ImportModel")["JobName"],
        ran.parameters("ImportModel")["ImportedModelName"],
        ran.parameters("ImportModel")["ClientRequestToken"],
        torn.parameters("StopItsTrainingJob")["TrainingJobName"],
        torn.parameters("DeleteItsImportedModel")["ModelIdentifier"],
    }
    assert names == {run_name(arn)}  # one name, the same in the pipeline and the teardown
    [name] = names
    assert name.startswith(JOB_PREFIX) and re.fullmatch(r"[0-9a-f]{32}", name.removeprefix(JOB_PREFIX))
    name = longest + name.removeprefix(JOB_PREFIX)
    errors = [error for where in NAME_MEMBERS for error in asl.member_errors(*where, name)]
    assert errors == [], "\n".join(errors)


def test_the_kit_and_the_cleanup_recognise_the_name_the_pipeline_gives(machine: dict[str, Any]) -> None:
    """names.execution_hash (kit l3sm) computes what States.Hash gives in the state machine, and the sandbox
    cleanup takes that name for the kit's."""
    from sagemaker_cleanup.handler import Scope

    scope = Scope("arn:machine", JOB_PREFIX, "s3://b/output/", "s3://b/output/{name}/output/model/merged/")
    for execution in ("kit-20260101-120000-ab12", "3f2c9e5a-1b7d-4c3e-9a8f-0d6b2e4f1a7c"):
        ran = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(), execution_name=execution)
        job = ran.parameters("TrainModel")["TrainingJobName"]
        assert job == JOB_PREFIX + execution_hash(execution_arn(execution))
        assert scope.has_kit_name(job)


# --- the teardown after an execution that failed, timed out or was aborted ---------------------------------

EXECUTION = execution_arn("run-7", "genai-kit-sft")


def _ended(status: str) -> dict[str, Any]:
    """The event Step Functions sends when an execution ends
    (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html)."""
    return {
        "version": "0",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": asl.ACCOUNT,
        "region": asl.REGION,
        "resources": [EXECUTION],
        "detail": {
            "executionArn": EXECUTION,
            "stateMachineArn": f"arn:aws:states:{asl.REGION}:{asl.ACCOUNT}:stateMachine:genai-kit-sft",
            "name": "run-7",
            "status": status,
            "startDate": 1700000000000,
            "stopDate": 1700003600000,
            "input": "{}",
            "output": None,
        },
    }


def described(status: str) -> dict[str, Any]:
    """DescribeTrainingJob's answer for the run's job."""
    return training_job_described(run_name(EXECUTION), status, asl.REGION)


NO_JOB = asl.AslError("SageMaker.ResourceNotFound", "no such job")


def import_job(status: str) -> dict[str, Any]:
    """GetModelImportJob's answer for the run's import job, as the SDK integration hands it on (member names
    capitalized; botocore bedrock 2023-04-20 GetModelImportJobResponse)."""
    name = run_name(EXECUTION)
    return {
        "JobArn": f"arn:aws:bedrock:{asl.REGION}:{asl.ACCOUNT}:model-import-job/abcdefghijkl",
        "JobName": name,
        "ImportedModelName": name,
        "Status": status,
    }


def _cleanup(teardown: dict[str, Any], status: str, name: str = "teardown-1", **outcomes: Any) -> asl.Trace:
    """Run the teardown (execution ``name``) on a status event; each Task's outcomes are consumed in order (the
    import job: ended, unless the test scripts it)."""
    outcomes.setdefault("ReadItsImportJob", [import_job("Completed")])
    return asl.simulate(teardown, _ended(status), outcomes, execution_name=name, publishes_succeed=True)


def _import_outlives_the_wait(teardown: dict[str, Any], status: str, name: str = "teardown-1") -> asl.Trace:
    """A teardown whose run's training job has stopped and whose import job stays InProgress throughout; the
    model is not there yet when it deletes."""
    return _cleanup(
        teardown,
        status,
        name,
        DescribeItsTrainingJob=[described("Stopped")],
        ReadItsImportJob=itertools.repeat(import_job("InProgress")),
        DeleteItsImportedModel=[asl.AslError("Bedrock.ResourceNotFoundException", "not yet")],
    )


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED", "FAILED"])
def test_teardown_deletes_the_model_an_ended_run_imported_by_the_name_the_run_gave_it(
    machine: dict[str, Any], teardown: dict[str, Any], status: str
) -> None:
    ran = asl.simulate(
        machine, {"trainingKey": "datasets/"}, _results(), execution_name="run-7", state_machine_name="genai-kit-sft"
    )
    made = ran.parameters("ImportModel")["ImportedModelName"]
    job = ran.parameters("TrainModel")["TrainingJobName"]
    assert made == job == run_name(EXECUTION)  # the event's executionArn names what that execution created
    trace = _cleanup(
        teardown,
        status,
        DescribeItsTrainingJob=[described("Failed")],
        DeleteItsImportedModel=[asl.AslError("Bedrock.ConflictException", "busy"), {}],
    )
    assert (trace.status, trace.terminal) == ("SUCCEEDED", "CleanedUp"), trace.describe()
    # A job that already ended is left: nothing to stop.
    assert trace.parameters("DescribeItsTrainingJob") == {"TrainingJobName": job}
    assert not trace.calls_to("StopItsTrainingJob") and not trace.calls_to("TryToStopItsTrainingJob")
    assert [c.parameters for c in trace.calls_to("DeleteItsImportedModel")] == [{"ModelIdentifier": made}] * 2
    for state in ("StopItsTrainingJob", "DescribeItsTrainingJob"):
        assert not asl.sdk_request_errors(teardown["States"][state]["Resource"], {"TrainingJobName": job})
    assert not asl.sdk_request_errors(
        teardown["States"]["DeleteItsImportedModel"]["Resource"], {"ModelIdentifier": made}
    )
    [(state, message)] = trace.notifications
    assert state == "NotifyCleanedUp" and message["status"] == status and message["execution"] == EXECUTION
    assert message["importedModel"] == made


def test_teardown_stops_a_training_job_still_running(teardown: dict[str, Any]) -> None:
    not_found = asl.AslError("Bedrock.ResourceNotFoundException", "no such model")
    trace = _cleanup(
        teardown,
        "TIMED_OUT",
        DescribeItsTrainingJob=[described("InProgress")],
        StopItsTrainingJob=[{}],
        DeleteItsImportedModel=[not_found],
    )
    assert (trace.status, trace.terminal) == ("SUCCEEDED", "CleanedUp"), trace.describe()
    assert trace.parameters("StopItsTrainingJob") == {"TrainingJobName": run_name(EXECUTION)}
    assert [s for s, _ in trace.notifications] == ["NotifyCleanedUp"]


@pytest.mark.parametrize(
    ("refusal", "then", "reported"),
    [
        (asl.AslError("SageMaker.ThrottlingException", "Rate exceeded"), "InProgress", True),
        (asl.AslError("SageMaker.ValidationException", "the training job is in status Stopped"), "Stopped", False),
    ],
    ids=["still-running", "ended-meanwhile"],
)
def test_a_running_job_that_cannot_be_stopped_is_retried_then_reported_only_if_still_running(
    teardown: dict[str, Any], refusal: asl.AslError, then: str, reported: bool
) -> None:
    """Before, any stop error was taken as "nothing to stop" after 14 s: a throttled or refused stop left the job
    running, and billing, until its StoppingCondition, and the report said it was stopped. A stop of a job that
    ended meanwhile is refused too: the job is read again, and only one still InProgress is reported."""
    trace = _cleanup(
        teardown,
        "ABORTED",
        DescribeItsTrainingJob=[described("InProgress")],
        StopItsTrainingJob=itertools.repeat(refusal),
        CheckItsTrainingJobAgain=[described(then)],
        DeleteItsImportedModel=[{}],
    )
    assert len(trace.calls_to("StopItsTrainingJob")) == 1 + 6 and trace.retries["StopItsTrainingJob"] == 6
    assert trace.elapsed >= 10 * (2**6 - 1)  # about ten minutes of retries
    assert trace.terminal == "CleanedUp" and trace.calls_to("DeleteItsImportedModel"), trace.describe()
    not_stopped = [message for state, message in trace.notifications if state == "NotifyJobNotStopped"]
    assert bool(not_stopped) is reported
    if reported:
        assert not_stopped[0]["outcome"].startswith("ACTION NEEDED")
        assert not_stopped[0]["trainingJob"] == run_name(EXECUTION)


def test_a_job_that_cannot_be_read_is_stopped_on_a_best_effort_basis(teardown: dict[str, Any]) -> None:
    not_found = asl.AslError("Bedrock.ResourceNotFoundException", "no such model")
    trace = _cleanup(
        teardown,
        "ABORTED",
        DescribeItsTrainingJob=[asl.AslError("SageMaker.AccessDeniedException", "no")] * 4,
        TryToStopItsTrainingJob=[{}],
        DeleteItsImportedModel=[not_found],
    )
    assert trace.terminal == "CleanedUp" and trace.parameters("TryToStopItsTrainingJob")["TrainingJobName"]


def test_teardown_after_a_notified_failure_with_nothing_left_stays_quiet(teardown: dict[str, Any]) -> None:
    not_found = asl.AslError("Bedrock.ResourceNotFoundException", "no such model")
    trace = _cleanup(
        teardown,
        "FAILED",
        DescribeItsTrainingJob=[NO_JOB] * 4,
        TryToStopItsTrainingJob=[NO_JOB] * 4,
        DeleteItsImportedModel=[not_found],
    )
    assert (trace.status, trace.terminal) == ("SUCCEEDED", "NothingLeft"), trace.describe()
    assert trace.notifications == [] and len(trace.calls_to("DeleteItsImportedModel")) == 1


def test_teardown_that_cannot_delete_the_model_says_action_needed_and_names_it(teardown: dict[str, Any]) -> None:
    denied = itertools.repeat(asl.AslError("Bedrock.AccessDeniedException", "not authorized"))
    trace = _cleanup(
        teardown,
        "ABORTED",
        DescribeItsTrainingJob=[described("InProgress")],
        StopItsTrainingJob=[{}],
        DeleteItsImportedModel=denied,
    )
    assert (trace.status, trace.terminal) == ("FAILED", "CleanupFailed"), trace.describe()
    assert len(trace.calls_to("DeleteItsImportedModel")) > 3  # retried before it gives up
    state, message = trace.notifications[-1]
    assert state == "NotifyCleanupFailed" and message["outcome"].startswith("ACTION NEEDED")
    assert "bills storage every month" in message["outcome"]  # not only while it serves
    assert message["importedModel"] == run_name(EXECUTION)


def test_teardown_waits_for_an_import_job_still_running_before_it_deletes_the_model(teardown: dict[str, Any]) -> None:
    """Bedrock cannot stop an import job, and one still InProgress creates its model after a delete. Before, the
    teardown deleted once after two minutes and a later model billed every month until someone deleted it."""
    from stacks.level3_finetune.sagemaker_teardown import IMPORT_CHECK_INTERVAL

    trace = _cleanup(
        teardown,
        "TIMED_OUT",
        DescribeItsTrainingJob=[described("Completed")],
        ReadItsImportJob=[import_job("InProgress"), import_job("InProgress"), import_job("Completed")],
        DeleteItsImportedModel=[{}],
    )
    assert (trace.status, trace.terminal) == ("SUCCEEDED", "CleanedUp"), trace.describe()
    reads = trace.calls_to("ReadItsImportJob")
    assert [c.parameters for c in reads] == [{"JobIdentifier": run_name(EXECUTION)}] * 3
    assert not asl.sdk_request_errors(
        teardown["States"]["ReadItsImportJob"]["Resource"], {"JobIdentifier": run_name(EXECUTION)}
    )
    assert trace.elapsed >= 2 * IMPORT_CHECK_INTERVAL.to_seconds()
    assert len(trace.calls_to("DeleteItsImportedModel")) == 1
    assert trace.visited.index("DeleteItsImportedModel") > max(
        i for i, state in enumerate(trace.visited) if state == "ReadItsImportJob"
    )
    assert [s for s, _ in trace.notifications] == ["NotifyCleanedUp"]


def test_an_import_job_that_outlives_the_wait_is_reported_and_the_model_deleted_anyway(
    teardown: dict[str, Any],
) -> None:
    from stacks.level3_finetune.sagemaker_teardown import IMPORT_CHECKS

    trace = _import_outlives_the_wait(teardown, "ABORTED")
    assert trace.status == "SUCCEEDED", trace.describe()
    assert len(trace.calls_to("ReadItsImportJob")) == IMPORT_CHECKS + 1
    assert trace.calls_to("DeleteItsImportedModel")
    [message] = [m for s, m in trace.notifications if s == "NotifyImportStillRunning"]
    assert message["outcome"].startswith("ACTION NEEDED") and "still in progress after 60 minutes" in message["outcome"]
    assert message["importedModel"] == run_name(EXECUTION)


def test_a_sweep_teardown_that_outwaits_an_import_leaves_the_alarm_to_the_events_teardown(
    teardown: dict[str, Any],
) -> None:
    """The hourly sweep may start its teardown while the event's still waits for the same import job: only the
    event's teardown reports it still running, and the sweep's says nothing it did not do itself."""
    from teardown_sweep.names import SWEEP_PREFIX

    trace = _import_outlives_the_wait(teardown, "TIMED_OUT", f"{SWEEP_PREFIX}0123456789abcdef")
    assert trace.status == "SUCCEEDED" and trace.calls_to("DeleteItsImportedModel"), trace.describe()
    assert trace.notifications == []


def test_the_cleaned_up_report_does_not_say_the_import_ended(teardown: dict[str, Any]) -> None:
    """After an import outlived the wait, the deletion found no model yet: the report that follows must not claim
    the import job had ended (it says the job ended or the wait ran out)."""
    trace = _import_outlives_the_wait(teardown, "TIMED_OUT")
    states = [state for state, _ in trace.notifications]
    assert states == ["NotifyImportStillRunning", "NotifyCleanedUp"], trace.describe()
    assert "had ended or the wait for it ran out" in trace.notifications[-1][1]["outcome"]


@pytest.mark.parametrize(
    "answer",
    [
        asl.AslError("Bedrock.ResourceNotFoundException", "no such import job"),  # the run started none
        asl.AslError("Bedrock.AccessDeniedException", "not authorized"),  # unreadable: delete as before
        {"JobName": "x"},  # an answer without a status (GetModelImportJobResponse requires no member)
    ],
    ids=["none", "unreadable", "no-status"],
)
def test_an_import_job_that_is_not_running_or_cannot_be_read_does_not_hold_the_delete(
    teardown: dict[str, Any], answer: Any
) -> None:
    trace = _cleanup(
        teardown,
        "FAILED",
        DescribeItsTrainingJob=[described("Failed")],
        ReadItsImportJob=[answer],
        DeleteItsImportedModel=[{}],
    )
    assert trace.terminal == "CleanedUp", trace.describe()
    assert len(trace.calls_to("ReadItsImportJob")) == 1 and "WaitForItsImportJob" not in trace.visited


def test_teardown_settles_before_it_deletes(teardown: dict[str, Any]) -> None:
    """Bedrock cannot stop an import job: the teardown lets calls in flight land before it looks for the model."""
    wait = teardown["States"]["LetCallsInFlightLand"]
    assert wait["Type"] == "Wait" and wait["Seconds"] >= 60
    assert wait["Next"] == "DescribeItsTrainingJob"


@pytest.mark.parametrize("event", [{}, "text", {"detail": {"executionArn": EXECUTION, "status": "FAILED"}}])
def test_teardown_ignores_input_that_is_not_a_status_event(teardown: dict[str, Any], event: Any) -> None:
    trace = asl.simulate(teardown, event, lambda call: {})
    assert trace.status == "SUCCEEDED" and trace.calls == [], trace.describe()


# --- a Hub token for gated models (sm_hub_token_secret) ------------------------------------------------------

SECRET_NAME = "genai-kit/hf-token"


@pytest.fixture(scope="module")
def with_secret(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], list[str]]:
    """This stack alone, synthesized with cdk-nag and a Hub token secret named (not an ARN)."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    from stacks.level3_finetune.sagemaker import SageMakerFineTuneStack
    from tests.conftest import cdk_json_context

    context = {**cdk_json_context(), "sm_hub_token_secret": SECRET_NAME}
    config = build(**context)
    app = cdk.App(context=context, outdir=str(tmp_path_factory.mktemp("sm-secret")))
    stack = SageMakerFineTuneStack(
        app, STACK, env=cdk.Environment(region=config.region, account=config.account), config=config
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    artifact = app.synth().get_stack_artifact(stack.artifact_id)
    findings = [str(m.entry.data) for m in artifact.messages if "AwsSolutions-" in str(m.entry.data)]
    return stack, artifact.template, findings


def test_the_training_role_may_read_exactly_the_hub_token_secret(
    with_secret: tuple[Any, dict[str, Any], list[str]],
) -> None:
    stack, template, findings = with_secret
    assert findings == []  # "-??????" matches six characters, not any: nothing to suppress
    role_id, _ = _role(template, "TrainingRole")
    granted = _role_statements(template, role_id)
    assert granted["ReadHubToken"]["Action"] == "secretsmanager:GetSecretValue"
    assert render(granted["ReadHubToken"]["Resource"]) == (
        f"arn:aws:secretsmanager:{asl.REGION}:${{AWS::AccountId}}:secret:{SECRET_NAME}-??????"
    )
    everywhere = [(p, s) for p, s in statements(template) for a in as_list(s["Action"]) if "secretsmanager:" in a]
    assert len(everywhere) == 1  # only the training role, only this action
    actions = {a for _, s in statements(template) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith("kms:")}  # the AWS managed key needs no grant
    arn = f"arn:aws:secretsmanager:{asl.REGION}:{asl.ACCOUNT}:secret:hf-token-AbCdEf"
    assert stack.hub_token_secret_arn(arn) == arn  # a complete ARN is granted as given


def test_the_job_names_the_secret_and_never_carries_the_token(
    with_secret: tuple[Any, dict[str, Any], list[str]],
) -> None:
    _, template, _ = with_secret
    machine = asl.definition_from_template(template, "StateMachine")
    for execution_input in ({"trainingKey": "datasets/"}, {"trainingKey": "d/", "baseModel": "meta-llama/L-1B"}):
        request = asl.simulate(machine, execution_input, _results()).parameters("TrainModel")
        assert json.loads(request["HyperParameters"]["hub_token_secret"]) == SECRET_NAME
        assert "Environment" not in request
        assert not [k for k in request["HyperParameters"] if "token" in k.lower() and k != "hub_token_secret"]


# --- the data check before the training job ------------------------------------------------------------------


@pytest.fixture
def imported_models() -> list[str]:
    """The models imported in the Region when the validator counts them (none unless a test adds some)."""
    return []


@pytest.fixture
def data_bucket(template: dict[str, Any], imported_models: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stack's data bucket in moto, read by the real sagemaker_validate handler, with the function's quota code
    from the template and an imported-models quota of 3 (its reads are tested in test_sagemaker_validate.py)."""
    import boto3
    from moto import mock_aws

    from common.clients import bounded_client
    from sagemaker_validate import handler as validate_handler

    _, function = _validator_function(template)
    code = function["Properties"]["Environment"]["Variables"][validate_handler.QUOTA_CODE_ENV]
    monkeypatch.setenv(validate_handler.QUOTA_CODE_ENV, code)
    monkeypatch.setattr(validate_handler, "quota_value", lambda c: ("Imported models per account", 3.0))
    monkeypatch.setattr(validate_handler, "imported_model_names", lambda: list(imported_models))
    with mock_aws():
        bounded_client.cache_clear()
        client = boto3.client("s3", region_name=asl.REGION)
        client.create_bucket(Bucket=_bucket(template, "Data"))
        yield client
    bounded_client.cache_clear()


def _validator(call: asl.TaskCall) -> Any:
    """The function itself answers the task (payload_response_only: its return is the task's result)."""
    from sagemaker_validate.handler import handler
    from tests.lambda_helpers import FakeContext

    context = FakeContext(function_name="sagemaker-validate", remaining_ms=900_000)  # a fresh 15-minute run
    return json.loads(json.dumps(handler(call.parameters, context)))


def test_bad_records_are_a_notified_rejection_naming_file_line_and_reason_before_any_instance(
    machine: dict[str, Any], template: dict[str, Any], data_bucket: Any
) -> None:
    data = _bucket(template, "Data")
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    bad = json.dumps({"messages": [{"role": "user", "content": "q"}]})
    data_bucket.put_object(Bucket=data, Key="datasets/chat/a.jsonl", Body=f"{good}\n{bad}\n".encode())
    trace = asl.simulate(machine, {"trainingKey": "datasets/chat/"}, _results(validation=_validator))
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "InputRejected", "InvalidInput"), trace.describe()
    assert trace.parameters("ValidateData") == {"bucket": data, "trainingKey": "datasets/chat/"}
    assert not trace.calls_to("TrainModel")  # no CreateTrainingJob: no instance starts
    error = _failure(trace)
    assert error["Error"] == "InvalidInput"
    assert "datasets/chat/a.jsonl:2: the conversation holds no assistant message to learn from" in error["Cause"]
    assert f"s3://{data}/datasets/chat/" in error["Cause"]


def test_good_records_go_on_to_the_training_job_on_the_same_key(
    machine: dict[str, Any], template: dict[str, Any], data_bucket: Any
) -> None:
    data = _bucket(template, "Data")
    sample = ROOT / "samples" / "finetune-sagemaker" / "train.jsonl"
    data_bucket.put_object(Bucket=data, Key="datasets/train.jsonl", Body=sample.read_bytes())
    trace = asl.simulate(machine, {"trainingKey": "datasets/train.jsonl"}, _results(validation=_validator))
    assert trace.status == "SUCCEEDED", trace.describe()
    order = [c.state for c in trace.calls]
    assert order.index("FindTrainingData") < order.index("ValidateData") < order.index("TrainModel")
    # The function checked what the train channel copies: the same bucket and key.
    [channel] = trace.parameters("TrainModel")["InputDataConfig"]
    checked = trace.parameters("ValidateData")
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{checked['bucket']}/{checked['trainingKey']}"
    assert channel["DataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"


def test_a_full_imported_models_quota_fails_the_run_before_any_instance(
    machine: dict[str, Any], template: dict[str, Any], data_bucket: Any, imported_models: list[str]
) -> None:
    """Before: the training job ran and billed, then its import was refused for three hours (ImportNotConfirmed)."""
    data_bucket.put_object(
        Bucket=_bucket(template, "Data"),
        Key="datasets/train.jsonl",
        Body=(ROOT / "samples" / "finetune-sagemaker" / "train.jsonl").read_bytes(),
    )
    imported_models.extend(["sft-a", "sft-b", "sft-c"])
    trace = asl.simulate(machine, {"trainingKey": "datasets/train.jsonl"}, _results(validation=_validator))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert not trace.calls_to("TrainModel") and not trace.calls_to("ImportModel")
    error = _failure(trace)
    assert error["Error"] == "ImportedModelsQuotaFull"
    assert "3 models imported against a quota of 3 ('Imported models per account', L-45B04988)" in error["Cause"]
    assert "No training job was started" in error["Cause"]


def test_a_validator_failure_is_notified_and_lambdas_transient_errors_are_retried(machine: dict[str, Any]) -> None:
    retried = machine["States"]["ValidateData"]["Retry"]
    transient = {e for r in retried for e in r["ErrorEquals"]}
    assert {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException"} <= transient
    assert "States.ALL" not in transient  # a function error (a missing bucket, a timeout) is not retried
    answers = iter([asl.AslError("Lambda.ServiceException", "busy"), VALID])

    def flaky(call: asl.TaskCall) -> Any:
        answer = next(answers)
        if isinstance(answer, asl.AslError):
            raise answer
        return answer

    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(validation=flaky))
    assert trace.status == "SUCCEEDED" and len(trace.calls_to("ValidateData")) == 2, trace.describe()
    failing = asl.AslError("S3.NoSuchBucket", "The specified bucket does not exist")
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, _results(validation=failing))
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    assert not trace.calls_to("TrainModel") and len(trace.calls_to("ValidateData")) == 1
    assert _failure(trace)["Error"] == "S3.NoSuchBucket"


def _validator_function(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(function_id, function)] = [
        (k, v)
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == "sagemaker_validate.handler.handler"
    ]
    return function_id, function


def test_the_validator_reads_exactly_the_data_bucket(template: dict[str, Any]) -> None:
    _, function = _validator_function(template)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    data = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("DataBucket"))
    granted = {
        action: sorted(render(r) for r in as_list(s["Resource"]))
        for s in _role_statements(template, role_id).values()
        for action in as_list(s["Action"])
        if not action.startswith(("xray:", "logs:"))
    }
    arn = render({"Fn::GetAtt": [data, "Arn"]})
    quota = f"arn:aws:servicequotas:{asl.REGION}:${{AWS::AccountId}}:bedrock/{IMPORTED_MODELS_QUOTA_CODE}"
    assert granted == {
        "s3:GetObject": [f"{arn}/*"],
        "s3:ListBucket": [arn],
        # the imported-models quota's room, read before any instance starts
        "servicequotas:GetServiceQuota": [quota],
        "servicequotas:GetAWSDefaultServiceQuota": ["*"],
        "bedrock:ListImportedModels": ["*"],
    }
    assert function["Properties"]["Timeout"] == 900


def test_the_pipeline_may_invoke_exactly_the_validator(template: dict[str, Any]) -> None:
    function_id, _ = _validator_function(template)
    role_id = asl.state_machine(template, "StateMachine")[1]["RoleArn"]["Fn::GetAtt"][0]
    invokes = [
        sorted(render(r) for r in as_list(s["Resource"]))
        for s in _role_statements(template, role_id).values()
        if any(a.startswith("lambda:") for a in as_list(s["Action"]))
    ]
    arn = render({"Fn::GetAtt": [function_id, "Arn"]})
    assert invokes == [sorted([arn, f"{arn}:*"])]  # the function, by any of its versions or aliases
    actions = {a for s in _role_statements(template, role_id).values() for a in as_list(s["Action"])}
    assert {a for a in actions if a.startswith("lambda:")} == {"lambda:InvokeFunction"}


def test_an_import_refused_while_another_import_runs_waits_for_the_regions_one_slot(machine: dict[str, Any]) -> None:
    """Bedrock runs one model import job at a time per Region (not adjustable): a run whose training ends while
    another run imports gets ServiceQuotaExceededException, and must wait for the slot, not fail after its paid job."""
    base, refused = _results(), {"n": 0}

    def result(call: asl.TaskCall) -> Any:
        if call.state == "ImportModel" and refused["n"] < 6:  # an hour of another run's import
            refused["n"] += 1
            raise asl.AslError("Bedrock.ServiceQuotaExceededException", "too many concurrent model import jobs")
        return base(call)

    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert trace.status == "SUCCEEDED", trace.describe()
    attempts = trace.calls_to("ImportModel")
    assert len(attempts) == 7 and attempts[-1].at - attempts[0].at >= 3600
    assert {call.parameters["ClientRequestToken"] for call in attempts} == {run_name(execution_arn("test-execution"))}
    assert not trace.calls_to("DeleteImportedModel")


def test_an_import_refused_for_three_hours_names_the_imported_models_quota(machine: dict[str, Any]) -> None:
    """The same ServiceQuotaExceededException is also the Region's imported-models quota (adjustable, 3 by default),
    which waiting does not free: after the slot wait the notification names that quota."""
    result = _import_create_failing(asl.AslError("Bedrock.ServiceQuotaExceededException", "quota exceeded"))
    trace = asl.simulate(machine, {"trainingKey": "datasets/"}, result)
    assert (trace.status, trace.terminal) == ("FAILED", "PipelineFailed"), trace.describe()
    attempts = trace.calls_to("ImportModel")
    assert attempts[-1].at - attempts[0].at >= pipeline.IMPORT_SLOT_WAIT.to_seconds()
    assert "imported-models quota of the Region, Service Quotas L-45B04988" in _failure(trace)["Cause"]


def test_the_sandbox_lets_each_runs_training_output_go_and_prod_keeps_it(each_stage: Any) -> None:
    """Each run's adapter and merged model under output/<job>/ were kept forever in both stages (nothing else
    deletes them; the import has copied the model). The sandbox expires them; prod keeps them."""
    from stacks.level3_finetune.sagemaker import SANDBOX_OUTPUT_DAYS
    from stacks.level3_finetune.sagemaker_pipeline import OUTPUT_PREFIX

    template = each_stage.templates["GenAiKit-3-FineTune-SageMaker"]
    [bucket] = [b for k, b in resources(template, "AWS::S3::Bucket").items() if k.startswith("ArtifactsBucket")]
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if r.get("Prefix") == OUTPUT_PREFIX and "ExpirationInDays" in r]
    if each_stage.config.deployment.is_prod:
        assert expiring == []
    else:
        assert [r["ExpirationInDays"] for r in expiring] == [SANDBOX_OUTPUT_DAYS]
