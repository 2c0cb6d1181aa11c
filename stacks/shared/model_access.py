"""Exact Bedrock invoke grants for a model or a cross-region inference profile. Never ``Resource: "*"``."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from stacks.shared.settings import ModelRef


def foundation_model_arn(partition: str, region: str, foundation_model_id: str) -> str:
    return f"arn:{partition}:bedrock:{region}::foundation-model/{foundation_model_id}"


def inference_profile_arn(stack: Stack, profile_id: str) -> str:
    return f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:inference-profile/{profile_id}"


def default_project_arn(stack: Stack) -> str:
    """The account's default Bedrock project in the stack's region: every InvokeModel grant names it too.

    Converse and InvokeModel need bedrock:InvokeModel "on both the inference target and the project", and a
    request without projectIdentifier uses the account's default project, whose id is ``default`` (the
    bedrock-runtime Converse/InvokeModel and bedrock ProjectSummary.id documentation in botocore's models; the
    Service Authorization Reference lists ``project`` among InvokeModel's resource types:
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html).
    """
    return f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:project/default"


def model_invoke_statements(stack: Stack, model: ModelRef, *, streaming: bool = False) -> list[iam.PolicyStatement]:
    """Statements that allow Converse/InvokeModel on ``model`` and nothing else.

    For an inference profile: the profile ARN in the stack's region, plus the foundation model in every
    region the profile can route to, allowed only when the call comes through that profile. Both forms also
    name the account's default project (``default_project_arn``).
    """
    actions = ["bedrock:InvokeModel"] + (["bedrock:InvokeModelWithResponseStream"] if streaming else [])
    if not model.is_inference_profile:
        return [
            iam.PolicyStatement(
                sid="InvokeFoundationModel",
                actions=actions,
                resources=[
                    foundation_model_arn(stack.partition, stack.region, model.foundation_model_id),
                    default_project_arn(stack),
                ],
            )
        ]
    profile_arn = inference_profile_arn(stack, model.model_id)
    return [
        iam.PolicyStatement(
            sid="InvokeInferenceProfile", actions=actions, resources=[profile_arn, default_project_arn(stack)]
        ),
        iam.PolicyStatement(
            sid="InvokeProfileDestinations",
            actions=actions,
            resources=[
                foundation_model_arn(stack.partition, region, model.foundation_model_id)
                for region in model.destination_regions(stack.region)
            ],
            conditions={"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}},
        ),
    ]


def grant_invoke_model(role: iam.Role, model: ModelRef, *, streaming: bool = False) -> None:
    for statement in model_invoke_statements(Stack.of(role), model, streaming=streaming):
        role.add_to_policy(statement)
