"""Where Level 3 keeps things and what it names them: the bucket prefixes, the names the pipeline gives what it
creates (the teardown and the cleanup find them by these), and the ARNs and logical ids the grants name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stacks.shared.deployment import Deployment
from stacks.shared.execution_names import execution_hash as execution_hash  # re-exported: pipelines and kit l3sm
from stacks.shared.execution_names import execution_id as execution_id

# A Hugging Face Hub repository id (owner/name): https://huggingface.co/docs/hub/repositories. Here, free of the
# settings (and pydantic), so that the kit's commands check --base-model without loading them.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")

if TYPE_CHECKING:  # `kit l3sm` imports execution_hash: the kit never loads the CDK
    from aws_cdk import Stack

DATASETS_PREFIX = "datasets/"
JOBS_PREFIX = "jobs/"
REPORTS_PREFIX = "reports/"
OUTPUT_PREFIX = "customization-output/"
JOB_TAG_KEY = "kit-execution"
# The SageMaker path: a run's baseModelKey names a prefix under this one in its data bucket (the base model's
# Hugging Face files, read through the training job's "model" channel); the pipeline and `kit l3sm` import it.
MODELS_PREFIX = "models/"
# The SageMaker path's checkpoints: one sub-prefix per execution (a resumed run reuses the earlier one's); the
# pipeline, its grants and `kit l3sm` import it.
CHECKPOINTS_PREFIX = "checkpoints/"


# A Bedrock create refused while its quota is full (ServiceQuotaExceededException: two customization jobs at once,
# or the imported-models quota) is retried by the Level 3 pipelines every QUOTA_RETRY_MINUTES, QUOTA_RETRY_ATTEMPTS
# times (three hours of waiting for a free slot); kit doctor states the same wait.
QUOTA_RETRY_MINUTES = 10
QUOTA_RETRY_ATTEMPTS = 18

# Bedrock's quota on the models imported with Custom Model Import (each supported Region: 3 by default, adjustable,
# https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock): the SageMaker path's failure message and
# kit doctor's row name it.
IMPORTED_MODELS_QUOTA = "Imported models per account"
IMPORTED_MODELS_QUOTA_CODE = "L-45B04988"


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


def logical_id(construct: Any) -> str:
    from aws_cdk import Stack

    return Stack.of(construct).get_logical_id(construct.node.default_child)
