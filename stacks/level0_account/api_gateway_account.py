"""Account level: the one API Gateway CloudWatch Logs role of this account and region.

API Gateway writes access and execution logs through ONE role per account and region (its account
settings). The CloudFormation reference says to keep only one ``AWS::ApiGateway::Account`` per account and
region, and that deleting it leaves the setting in place:
https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-apigateway-account.html

So the setting lives here, in a stack of its own that does not depend on the stage or the name prefix: a
sandbox and a prod deploy in one account and region (one copy of the kit per stage there: the level stacks'
names carry the stage, not the prefix) update the same stack with the same template instead of fighting over
the setting. The API stacks (Levels 1 and 2) depend on it, so
``cdk deploy`` of a level deploys it first, and ``cdk destroy --all`` removes it last. Destroying it deletes
the role too, so no role is left behind; the account setting then still names the deleted role until
something sets it again (the stack does not clear it). Each API stack imports the role's ARN (ROLE_EXPORT), so
CloudFormation refuses to delete this stack while any stage's API stack still logs through it: "You can't delete
a stack if another stack references one of its outputs"
(https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/intrinsic-function-reference-importvalue.html).
A sandbox ``cdk destroy --all`` therefore stops here while a prod Level 1 or 2 exists, instead of cutting off
prod's logs.

    role (trusted by apigateway.amazonaws.com, AmazonAPIGatewayPushToCloudWatchLogs)
      └──► AWS::ApiGateway::Account.CloudWatchRoleArn
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.shared.facts import KIT_NAME
from stacks.shared.nag import suppress

LEVEL = "0-account"
PUSH_TO_LOGS_POLICY = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"
# The export the API stacks import: one per account and region like the stack, so no stage or prefix in it.
ROLE_EXPORT = f"{KIT_NAME}-apigateway-cloudwatch-role-arn"


class ApiGatewayAccountStack(Stack):
    """``GenAiKit-0-ApiGatewayAccount``: one per account and region, whatever the stage or prefix."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit: API Gateway's CloudWatch Logs role (one per account and region)",
            **kwargs,
        )
        # Only tags that are the same for every stage and prefix: the template must not depend on them. The user's
        # tags (``tags``) are the stack's own, outside the template: CloudFormation gives them to the role when it
        # creates it, for an account that requires tags on create (stacks/shared/stage.py tag_stack).
        for key, value in {"kit": KIT_NAME, "kit-level": LEVEL}.items():
            Tags.of(self).add(key, value)
            self.tags.set_tag(key, value)
        self.role = iam.Role(
            self,
            "CloudWatchRole",
            description="Assumed by API Gateway to write the account's API access and execution logs",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(PUSH_TO_LOGS_POLICY)],
        )
        # Deleted with the stack: a destroyed kit leaves no role behind.
        self.role.apply_removal_policy(RemovalPolicy.DESTROY)
        suppress(
            self.role,
            "AwsSolutions-IAM4",
            "API Gateway's account-level logging role uses the AWS managed policy made for exactly that job.",
            applies_to=[f"Policy::arn:<AWS::Partition>:iam::aws:policy/{PUSH_TO_LOGS_POLICY}"],
        )
        self.account_setting = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        self.account_setting.apply_removal_policy(RemovalPolicy.DESTROY)
        # The role's ARN never changes (the role is not replaced), as an imported export must not.
        CfnOutput(self, "CloudWatchRoleArn", value=self.role.role_arn, export_name=ROLE_EXPORT)


def import_account_role(api_stack: Stack) -> None:
    """Make ``api_stack`` import the account stack's role export: while it exists, the account stack (and the role
    its API stage logs through) cannot be deleted."""
    CfnOutput(
        api_stack,
        "ApiGatewayCloudWatchRoleArn",
        value=Fn.import_value(ROLE_EXPORT),
        description="API Gateway's CloudWatch Logs role, imported so the account stack stays while this API logs",
    )
