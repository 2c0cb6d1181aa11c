"""The names the state machines give what they create at run time fit the request members that take them.

No template holds these names (a state machine builds them from the name prefix, the stage and a hash), so neither
cfn-lint nor CloudFormation sees them before a run: a name the service refuses fails the run, for the SageMaker
path after the paid training job. The rule is botocore's (each member's pattern and length), checked for every
name prefix the configuration accepts; the candidates are wider than what it accepts, so a prefix it should refuse
and does not is found here.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import botocore.session
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stacks.config import ConfigError, load_config
from stacks.level3_finetune.names import PipelineNames
from stacks.level4_pretrain.names import job_prefix as pretrain_job_prefix
from stacks.shared.deployment import Deployment
from stacks.shared.execution_names import HASH_DIGITS
from stacks.shared.settings import STAGES
from tests.conftest import cdk_json_context

RUN = "f" * HASH_DIGITS  # the hash of the execution ARN that ends a job's or a deployment's name
MODEL_ID = "f" * 12  # the UUID part that ends a Bedrock custom model's name (pipeline.py MergeRequest)


@functools.cache
def _member(service: str, operation: str, member: str) -> Any:
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(operation).input_shape.members[member]


def _problem(name: str, service: str, operation: str, member: str) -> str | None:
    shape = _member(service, operation, member)
    pattern, low, high = shape.metadata.get("pattern"), shape.metadata.get("min", 0), shape.metadata.get("max")
    if not low <= len(name) <= (high if high is not None else len(name)):
        return f"{service} {operation}.{member}: {name!r} is {len(name)} characters ({low} to {high})"
    if pattern is not None and re.fullmatch(pattern, name) is None:
        return f"{service} {operation}.{member}: {name!r} does not match {pattern}"
    return None


def accepted(name_prefix: str, stage: str) -> Deployment | None:
    """The deployment the configuration builds with this prefix and stage; None when it refuses them."""
    try:
        context = {**cdk_json_context(), "name_prefix": name_prefix, "stage": stage}
        return load_config(context, pinned_layer_version=38).deployment
    except ConfigError:
        return None


def runtime_names(deployment: Deployment) -> list[tuple[str, str, str, str]]:
    """(name, service, operation, member) for every name a run gives what it creates."""
    ft = PipelineNames.of(deployment)
    job, model, served = f"{ft.job}{RUN}", f"{ft.model}{MODEL_ID}", f"{ft.deployment}{RUN}"
    sft = f"{deployment.resource_name('sft')}-{RUN}"  # sagemaker_pipeline.run_name
    return [
        # Level 3, Bedrock (pipeline.py: CreateJob, Deploy, BuyThroughput; the job's name is its token too)
        (job, "bedrock", "CreateModelCustomizationJob", "jobName"),
        (job, "bedrock", "CreateModelCustomizationJob", "clientRequestToken"),
        (model, "bedrock", "CreateModelCustomizationJob", "customModelName"),
        (served, "bedrock", "CreateCustomModelDeployment", "modelDeploymentName"),
        (served, "bedrock", "CreateCustomModelDeployment", "clientRequestToken"),
        (served, "bedrock", "CreateProvisionedModelThroughput", "provisionedModelName"),
        (served, "bedrock", "CreateProvisionedModelThroughput", "clientRequestToken"),
        # Level 3, SageMaker path (sagemaker_pipeline.py: one name for the training job, the import and its model)
        (sft, "sagemaker", "CreateTrainingJob", "TrainingJobName"),
        (sft, "bedrock", "CreateModelImportJob", "jobName"),
        (sft, "bedrock", "CreateModelImportJob", "importedModelName"),
        (sft, "bedrock", "CreateModelImportJob", "clientRequestToken"),
        # Level 4, training jobs (names.job_name)
        (
            f"{pretrain_job_prefix(deployment.name_prefix, deployment.stage)}{RUN}",
            "sagemaker",
            "CreateTrainingJob",
            "TrainingJobName",
        ),
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name_prefix=st.from_regex(r"\A[a-z][a-z0-9_-]{0,18}\Z"), stage=st.sampled_from(STAGES))
@example(name_prefix="my--kit", stage="sandbox")  # before: accepted by the configuration
@example(name_prefix="a" * 17, stage="sandbox")  # the longest prefix
@example(name_prefix="a-b", stage="prod")
def test_every_accepted_name_prefix_gives_names_the_services_take(name_prefix: str, stage: str) -> None:
    deployment = accepted(name_prefix, stage)
    if deployment is None:
        return
    problems = [problem for named in runtime_names(deployment) if (problem := _problem(*named))]
    assert problems == []


@pytest.mark.parametrize("name_prefix", ["my--kit", "ab", "a" * 18, "ab-", "1ab", "a_b"])
def test_a_name_prefix_the_names_could_not_carry_is_a_config_error(name_prefix: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**cdk_json_context(), "name_prefix": name_prefix}, pinned_layer_version=38)
    line = str(refused.value)
    assert f"name_prefix = {name_prefix!r} is not allowed" in line
    assert "single '-'" in line


def test_the_guard_sees_a_name_a_service_refuses() -> None:
    assert _problem("my--kit-sandbox-sft-" + RUN, "bedrock", "CreateModelImportJob", "importedModelName")
    assert _problem("a" * 64, "sagemaker", "CreateTrainingJob", "TrainingJobName")
    assert _problem("genai-kit-sandbox-sft-" + RUN, "bedrock", "CreateModelImportJob", "importedModelName") is None
