"""Facts every part of the kit shares, written once: stack ids, stages, the Powertools pin and Bedrock's
inference-profile geographies. Plain data only, so the ``kit`` CLI imports it without loading the CDK."""

from __future__ import annotations

from collections.abc import Mapping

KIT_NAME = "genai-spectrum-kit"

# The kit's stacks by key: app.py builds them and the `kit` commands find them under these ids.
STACK_IDS: Mapping[str, str] = {
    "1": "GenAiKit-1-Prompt",
    "2": "GenAiKit-2-Rag",
    "3": "GenAiKit-3-FineTune",
    "4-jobs": "GenAiKit-4-Pretrain-Jobs",
    "4-cluster": "GenAiKit-4-Pretrain-Cluster",
    "0-logging": "GenAiKit-0-InvocationLogging",
    "0-apigw": "GenAiKit-0-ApiGatewayAccount",
}

STAGES = ("sandbox", "prod")

# The Powertools for AWS Lambda (Python) v3 managed layer version this kit release is tested with.
PINNED_POWERTOOLS_LAYER = 38

# Geographies of Bedrock's system-defined cross-region inference profiles and the regions each one can
# route to (https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html). The kit
# grants the foundation model in every region of the geography, so a destination that Bedrock adds later
# does not break calls at run time; a condition limits those grants to calls made through the profile.
# "global" profiles route to every commercial region.
PROFILE_GEOGRAPHIES: Mapping[str, tuple[str, ...]] = {
    "us": ("us-east-1", "us-east-2", "us-west-1", "us-west-2"),
    "eu": (
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
    ),
    "apac": (
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-7",
    ),
    "jp": ("ap-northeast-1", "ap-northeast-3"),
    "au": ("ap-southeast-2", "ap-southeast-4"),
    "ca": ("ca-central-1", "ca-west-1"),
    "global": ("*",),
}
