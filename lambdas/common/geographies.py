"""Geographies of Bedrock's system-defined cross-region inference profiles and the regions each one can route to
(https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html). Plain data: the stacks
(through stacks/shared/facts.py), the kit CLI and the functions read this one copy. "global" profiles route to
every commercial region."""

from __future__ import annotations

from collections.abc import Mapping

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
        # Middle East (UAE), a destination of APAC profiles for some models (the CDK reference of
        # CrossRegionInferenceProfileRegion.APAC; `kit doctor` compares each profile's real destinations with this list)
        "me-central-1",
    ),
    "jp": ("ap-northeast-1", "ap-northeast-3"),
    "au": ("ap-southeast-2", "ap-southeast-4"),
    "ca": ("ca-central-1", "ca-west-1"),
    "global": ("*",),
}
