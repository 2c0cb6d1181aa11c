"""The custom resource that, on stack deletion, stops the pipeline's work and deletes what serves the kit's custom
models in every stage, and in the sandbox the models too, before the key.

Deleting the state machine alone would leave a run's Provisioned Throughput billing hourly with no end: Step
Functions ends an execution only "on the next state transition"
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html), which a run in its
KeepProvisionedThroughput Wait state makes hours later, and the teardown machine goes with the stack. So the
resource is in every stage; prod keeps its key, buckets and models, so there it may not delete a model.
"""

from __future__ import annotations

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from finetune_cleanup.names import DELETE_MODELS, KEEP_MODELS
from stacks.level3_finetune.names import PipelineNames, bedrock_arn, machine_name
from stacks.shared.cleanup_grants import stop_pipeline_statements
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.python_function import PythonFunction

# The cleanup answers CloudFormation before this timeout (its own deadline leaves a margin); CloudFormation
# stops waiting for an answer after CLEANUP_SERVICE_TIMEOUT instead of the default hour.
CLEANUP_TIMEOUT = Duration.minutes(10)
CLEANUP_SERVICE_TIMEOUT = Duration.minutes(15)


class CustomModelCleanup(Construct):
    """On stack deletion, stop the pipeline and unserve the kit's custom models; in the sandbox delete them too.

    Custom models, on-demand deployments and Provisioned Throughput are created by the state machine, outside
    CloudFormation. On stack deletion the function (``lambdas/level3_finetune/finetune_cleanup``) stops the pipeline's
    executions and the kit's running jobs, deletes the deployments and throughputs serving the kit's models (the
    pipeline's names AND this key, nothing else), and in the sandbox then the models. Prod (``KeepModels``) retains
    the models: its role is not granted DeleteCustomModel. The resource depends on the key, the state machine and
    its own role, so CloudFormation deletes it, and waits for its answer, before any of them.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        key: kms.Key,
        machine: sfn.StateMachine,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        names = PipelineNames.of(deployment)
        self.deletes_models = not deployment.is_prod
        self.function = PythonFunction(
            self,
            "Function",
            deployment=deployment,
            handler="finetune_cleanup.handler.handler",
            description="Level 3 custom resource: on stack deletion, delete the kit's custom models before the key"
            if self.deletes_models
            else "Level 3 custom resource: on stack deletion, stop the kit's executions and jobs and delete what "
            "serves its custom models (models are kept)",
            service_name="finetune-cleanup",
            timeout=CLEANUP_TIMEOUT,
            memory_size=256,
        )
        role = self.function.role
        # Service Authorization Reference, Amazon Bedrock (resource types per action):
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_bedrock.html
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FindKitResources",  # List actions have no resource type: '*' only
                actions=[
                    "bedrock:ListModelCustomizationJobs",
                    "bedrock:ListCustomModels",
                    "bedrock:ListCustomModelDeployments",
                    "bedrock:ListProvisionedModelThroughputs",
                ],
                resources=["*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StopKitJobs",
                actions=["bedrock:GetModelCustomizationJob", "bedrock:StopModelCustomizationJob"],
                resources=[bedrock_arn(stack, "model-customization-job/*")],
            )
        )
        # GetCustomModel reads a model's key (is it the kit's?); only the sandbox deletes models.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeleteKitModels" if self.deletes_models else "ReadKitModels",
                actions=["bedrock:GetCustomModel", "bedrock:DeleteCustomModel"]
                if self.deletes_models
                else ["bedrock:GetCustomModel"],
                resources=[bedrock_arn(stack, "custom-model/*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DeleteServing",
                actions=["bedrock:DeleteCustomModelDeployment", "bedrock:DeleteProvisionedModelThroughput"],
                resources=[
                    bedrock_arn(stack, "custom-model-deployment/*"),
                    bedrock_arn(stack, "provisioned-model/*"),
                ],
            )
        )
        executions = (
            f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{machine_name(deployment)}:*"
        )
        for statement in stop_pipeline_statements(stack, machine, executions):
            role.add_to_policy(statement)
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Bedrock's List actions support no resource type ('*' only); the kit's jobs, models, deployments and "
            "throughputs have ids Bedrock generates, so their ARNs end in a wildcard in this account and region, and "
            "the function also checks the name and the key; executions are this state machine's; X-Ray needs '*'.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:model-customization-job/*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:custom-model/*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:custom-model-deployment/*",
                f"Resource::arn:aws:bedrock:{stack.region}:<AWS::AccountId>:provisioned-model/*",
                f"Resource::arn:aws:states:{stack.region}:<AWS::AccountId>:execution:{machine_name(deployment)}:*",
            ],
        )
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.function.function.function_arn,
            resource_type="Custom::BedrockFineTuneCleanup",
            # CloudFormation gives up on a silent function after this, not after an hour:
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html
            service_timeout=CLEANUP_SERVICE_TIMEOUT,
            properties={
                "Mode": DELETE_MODELS if self.deletes_models else KEEP_MODELS,
                "KeyArn": key.key_arn,
                "ModelNamePrefix": names.model,
                "JobNamePrefix": names.job,
                "StateMachineArn": machine.state_machine_arn,
            },
        )
        # Deleted before the key (so the key is scheduled for deletion only after the models are gone), before
        # the state machine (its executions are stopped first, while it exists: a run in its Wait state would
        # otherwise end only hours later, after the stack and the teardown are gone) and before the function's
        # own permissions.
        for dependency in (key, machine, role):
            self.resource.node.add_dependency(dependency)
