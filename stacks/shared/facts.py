"""Facts every part of the kit shares, written once: stack ids, stages, the Powertools pin and Bedrock's
inference-profile geographies. Plain data only, so the ``kit`` CLI imports it without loading the CDK."""

from __future__ import annotations

from collections.abc import Mapping

from common import geographies

KIT_NAME = "genai-spectrum-kit"

# The kit's stacks by key: app.py builds them and the `kit` commands find them under these ids.
STACK_IDS: Mapping[str, str] = {
    "1": "GenAiKit-1-Prompt",
    "2": "GenAiKit-2-Rag",
    "3": "GenAiKit-3-FineTune",
    "3-sagemaker": "GenAiKit-3-FineTune-SageMaker",
    "4-jobs": "GenAiKit-4-Pretrain-Jobs",
    "4-cluster": "GenAiKit-4-Pretrain-Cluster",
    "0-logging": "GenAiKit-0-InvocationLogging",
    "0-apigw": "GenAiKit-0-ApiGatewayAccount",
}

STAGES = ("sandbox", "prod")

# The Powertools for AWS Lambda (Python) v3 managed layer version this kit release is tested with.
PINNED_POWERTOOLS_LAYER = 38

# Bedrock's inference-profile geographies: one copy, in the code the functions ship (lambdas/common).
PROFILE_GEOGRAPHIES = geographies.PROFILE_GEOGRAPHIES


# Bedrock model invocation logging (the opt-in Level 0 stack) writes its records under this prefix of its bucket
# (lambdas/level0_account/invocation_logging/handler.py: s3Config.keyPrefix); Level 3 distills from them.
INVOCATION_LOGS_PREFIX = "invocations/"


# Level 1 tags every model call with this request metadata (Converse's requestMetadata, recorded in the invocation
# logs), and a Level 3 distillation from invocation logs keeps only calls so tagged (InvocationLogsConfig's
# requestMetadataFilters): to pick "the prompt-response pairs to use for distillation, you must add a request metadata
# string ... when you invoke a model or use the Converse API operation"
# (https://docs.aws.amazon.com/bedrock/latest/userguide/distillation-data-prep-option-2.html). Unfiltered, a job
# would read every call logged in the Region, from any application and either stage.
REQUEST_METADATA_KEY = "genai-kit-source"


def request_metadata(name_prefix: str, stage: str) -> dict[str, str]:
    """The request metadata of this deployment's Level 1 calls (key and value within RequestMetadataFilters'
    pattern ``[a-zA-Z0-9\\s._:/=+$@-]``)."""
    return {REQUEST_METADATA_KEY: f"{name_prefix}-{stage}-prompt-api"}


def invocation_logs_bucket_parameter(name_prefix: str) -> str:
    """The SSM parameter holding the invocation-logging stack's bucket name. That stack writes it and Level 3
    resolves it at deploy time: unlike a CloudFormation export, a parameter does not pin the bucket in the
    logging stack (an export in use cannot change or be deleted, so that stack could not be updated)."""
    return f"/{name_prefix}/bedrock/invocation-logs-bucket"
