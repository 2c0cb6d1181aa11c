"""Where Level 3 keeps things and what it names them: the bucket prefixes, the names the pipeline gives what it
creates (the teardown and the cleanup find them by these), and the ARNs and logical ids the grants name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Stack

from stacks.shared.deployment import Deployment

DATASETS_PREFIX = "datasets/"
JOBS_PREFIX = "jobs/"
REPORTS_PREFIX = "reports/"
OUTPUT_PREFIX = "customization-output/"
# What an execution creates is named by a hash of its ARN (32 hex digits), so the teardown can find it.
NAME_HASH = "MD5"
JOB_TAG_KEY = "kit-execution"


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


def logical_id(construct: Any) -> str:
    return Stack.of(construct).get_logical_id(construct.node.default_child)
