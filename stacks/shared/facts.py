"""Facts every part of the kit shares, written once: stack ids, stages, the Powertools pin and Bedrock's
inference-profile geographies. Plain data only, so the ``kit`` CLI imports it without loading the CDK."""

from __future__ import annotations

from collections.abc import Mapping

from common import geographies
from invocation_logging.prefixes import INVOCATIONS_PREFIX

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

# A sandbox destroys cleanly; prod retains data (stacks/shared/stage.py).
SANDBOX, PROD = STAGES = ("sandbox", "prod")

# Step Functions fails a Standard execution whose history reaches 25,000 events
# (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html): Level 3 sizes its job polls by it and
# `kit l3 status` reads a run's whole history within it.
HISTORY_EVENT_QUOTA = 25_000

# The Powertools for AWS Lambda (Python) v3 managed layer version this kit release is tested with.
PINNED_POWERTOOLS_LAYER = 38

# Bedrock's inference-profile geographies: one copy, in the code the functions ship (lambdas/common).
PROFILE_GEOGRAPHIES = geographies.PROFILE_GEOGRAPHIES

# Bedrock's guardrail profiles (cross-Region guardrail inference, which a guardrail on the Standard safeguard tier
# uses): profile id -> source Region it can be used from -> the Regions a guardrail request from there may be routed
# to. https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-cross-region-support.html (the aws partition's
# profiles; us-gov.guardrail.v1:0 is GovCloud's). ap-southeast-2 is a source of two (au and apac).
_EU_GUARDRAIL = ("eu-central-1", "eu-west-1", "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2")
_APAC_GUARDRAIL = (
    "ap-south-1", "ap-northeast-3", "ap-northeast-2", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1",
)  # fmt: skip
GUARDRAIL_PROFILES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "us.guardrail.v1:0": {
        "us-east-1": ("us-east-1", "us-east-2", "us-west-2"),
        "us-east-2": ("us-east-1", "us-east-2", "us-west-2"),
        "us-west-1": ("us-east-1", "us-east-2", "us-west-1", "us-west-2"),
        "us-west-2": ("us-east-1", "us-east-2", "us-west-2"),
    },
    "eu.guardrail.v1:0": {
        "eu-central-1": _EU_GUARDRAIL,
        "eu-west-1": _EU_GUARDRAIL,
        "eu-west-3": _EU_GUARDRAIL,
        "eu-north-1": _EU_GUARDRAIL,
        "eu-south-1": _EU_GUARDRAIL,
        "eu-south-2": _EU_GUARDRAIL,
        "il-central-1": (*_EU_GUARDRAIL, "il-central-1"),
    },
    "uk.guardrail.v1:0": {"eu-west-2": ("eu-west-2",)},
    "au.guardrail.v1:0": {"ap-southeast-2": ("ap-southeast-2",)},
    "ca.guardrail.v1:0": {"ca-central-1": ("ca-central-1", "ca-west-1")},
    "apac.guardrail.v1:0": {
        "ap-south-1": _APAC_GUARDRAIL,
        "ap-northeast-2": _APAC_GUARDRAIL,
        "ap-southeast-1": _APAC_GUARDRAIL,
        "ap-southeast-2": _APAC_GUARDRAIL,
        "ap-southeast-3": (
            "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
            "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        ),
        "ap-southeast-4": (
            "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-4", "ap-northeast-1",
            "ap-northeast-2", "ap-northeast-3",
        ),
        "ap-northeast-1": _APAC_GUARDRAIL,
        "ap-east-2": (
            "ap-east-2", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
            "ap-southeast-4", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        ),
        "ap-southeast-5": (
            "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
            "ap-southeast-5", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        ),
        "ap-southeast-7": (
            "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
            "ap-southeast-7", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        ),
        "me-central-1": (
            "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
            "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "me-central-1",
        ),
    },
}  # fmt: skip


# Bedrock model invocation logging (the opt-in Level 0 stack) writes its records under this prefix of its bucket
# (the function sets it as s3Config.keyPrefix); Level 3 distills from them.
INVOCATION_LOGS_PREFIX = INVOCATIONS_PREFIX


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


# The SSM parameter holding the invocation-logging stack's bucket name. That stack writes it and Level 3 resolves
# it at deploy time: unlike a CloudFormation export, a parameter does not pin the bucket in the logging stack (an
# export in use cannot change or be deleted, so that stack could not be updated). The stack is one per account and
# Region whatever the name prefix, so the parameter's name carries none: a deployment with another prefix reads
# the same parameter instead of renaming it (its Name is create-only) under the other's Level 3. It keeps the name
# earlier versions gave it with the default prefix (they named it /<name_prefix>/...), so an upgrade of a default
# deployment renames nothing: a renamed parameter would not exist for a Level 3 deployed before its logging stack.
INVOCATION_LOGS_BUCKET_PARAMETER = "/genai-kit/bedrock/invocation-logs-bucket"
