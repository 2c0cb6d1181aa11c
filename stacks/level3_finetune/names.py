"""Where Level 3 keeps things and what it names them: the bucket prefixes, the names the pipeline gives what it
creates (the teardown and the cleanup find them by these), and the ARNs and logical ids the grants name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stacks.shared.deployment import Deployment

if TYPE_CHECKING:  # `kit l3sm` imports execution_hash: the kit never loads the CDK
    from aws_cdk import Stack

DATASETS_PREFIX = "datasets/"
JOBS_PREFIX = "jobs/"
REPORTS_PREFIX = "reports/"
OUTPUT_PREFIX = "customization-output/"
# What an execution creates is named by a hash of its ARN (32 hex digits), so the teardown can find it.
NAME_HASH = "MD5"
JOB_TAG_KEY = "kit-execution"
# The SageMaker path: a run's baseModelKey names a prefix under this one in its data bucket (the base model's
# Hugging Face files, read through the training job's "model" channel); the pipeline and `kit l3sm` import it.
MODELS_PREFIX = "models/"


def bedrock_arn(stack: Stack, resource: str) -> str:
    return f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:{resource}"


@dataclass(frozen=True)
class PipelineNames:
    """The name prefixes the state machine gives what it creates; each name ends with 12 hex digits.

    The cleanup recognises the kit's jobs and models by these prefixes (and by the key), so they are defined once.
    """

    job: str
    model: str
    deployment: str

    @classmethod
    def of(cls, deployment: Deployment) -> PipelineNames:
        prefix = deployment.resource_name("ft")
        # Jobs and deployments end with the execution's hash (32 hex digits; the teardown finds them by it), models
        # with 12 random hex digits. The short infixes keep 63 characters enough for the longest name prefix.
        return cls(job=f"{prefix}-j-", model=f"{prefix}-model-", deployment=f"{prefix}-d-")


def machine_name(deployment: Deployment) -> str:
    return deployment.resource_name("finetune")


def execution_id(execution_arn_path: str) -> str:
    """The intrinsic that names what one execution creates: a hash of its execution ARN (32 hex digits).

    The pipeline applies it to ``$$.Execution.Id``; the teardown to the ended execution's ARN from the Step
    Functions status event, so it finds what that execution created by name.
    """
    return f"States.Hash({execution_arn_path}, '{NAME_HASH}')"


def execution_hash(execution_arn: str) -> str:
    """What ``execution_id`` computes in Step Functions for this execution ARN: States.Hash gives the digest in
    lowercase hex (https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html), here the MD5
    of the ARN, 32 digits. A name, not a secret: the kit finds what a run created by it."""
    return hashlib.new(NAME_HASH.lower(), execution_arn.encode("utf-8"), usedforsecurity=False).hexdigest()


def logical_id(construct: Any) -> str:
    from aws_cdk import Stack

    return Stack.of(construct).get_logical_id(construct.node.default_child)
