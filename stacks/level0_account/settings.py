"""Level 0 (account) settings: the account-level stacks the kit adds on request."""

from __future__ import annotations

from pydantic import Field, TypeAdapter

from stacks.shared.settings import Flag, Problem, Settings


class AccountSettings(Settings):
    # Bedrock model invocation logging is one setting per account and region (no CloudFormation resource), so
    # the stack that manages it is opt-in: https://docs.aws.amazon.com/bedrock/latest/userguide/model-invocation-logging.html
    invocation_logging: Flag = Field(
        alias="invocation_logging",
        description=(
            "Adds the opt-in account-level stack `GenAiKit-0-InvocationLogging` (Bedrock model invocation"
            " logging; one per account and region)"
        ),
    )


# Level 3 reads it (ft_distillation_source=invocation-logs needs the stack's bucket parameter).
INVOCATION_LOGGING_ADAPTER: TypeAdapter[bool] = TypeAdapter(Flag)


def region_problems(region: str) -> list[Problem]:
    """The invocation-logging stack manages a Bedrock setting through the Bedrock API: in a region where Amazon
    Bedrock has no endpoint (botocore's endpoint data for the aws partition) only that stack is refused."""
    from stacks.shared.registry import service_regions

    regions = service_regions("bedrock")
    if region in regions:
        return []
    return [Problem("invocation_logging", True, f"false in {region}, which has no Amazon Bedrock endpoint")]
