"""The custom resource that stops (and, in the sandbox, removes) what Level 3 on SageMaker runs when the stack is
destroyed.

stack deletion ──► Custom::SageMakerFineTuneCleanup (deleted first: it depends on the state machine, the
    artifacts bucket, the training role and its own role) ──► stop the pipeline's executions ──► stop the kit's
    training jobs, wait until they have stopped ──► sandbox only: wait for the kit's import jobs (Bedrock cannot
    stop them) ──► delete the kit's imported models

Deleting the state machine alone leaves a createTrainingJob.sync job running until its MaxRuntime: DeleteStateMachine
ends executions "on the next state transition", which a task waiting for its job makes only when the job ends.
https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html
So the resource is in every stage; prod keeps its imported models, so there it is stop-only and may not delete.
"""

from __future__ import annotations

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from sagemaker_cleanup.names import NAME_SLOT, STOP_AND_DELETE, STOP_ONLY
from stacks.level3_finetune import sagemaker_pipeline as pipeline
from stacks.shared.cleanup_grants import (
    check_job_prefix,
    executions_arn,
    job_cleanup_findings,
    stop_pipeline_statements,
    stop_training_jobs_statement,
)
from stacks.shared.deployment import Deployment
from stacks.shared.nag import suppress
from stacks.shared.python_function import PythonFunction

# Waiting for an import job is the long part, so the function gets Lambda's maximum; its own deadline answers
# 90 s before it. CloudFormation stops waiting for an answer after CLEANUP_SERVICE_TIMEOUT instead of an hour:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html
CLEANUP_TIMEOUT = Duration.minutes(15)
CLEANUP_SERVICE_TIMEOUT = Duration.minutes(20)


class SageMakerFineTuneCleanup(Construct):
    """On stack deletion, stop what the SageMaker pipeline runs outside CloudFormation; in the sandbox also delete
    the imported models it created (prod retains them: there the function is stop-only and is not granted any
    Bedrock action).

    Training jobs, import jobs and imported models are named ``<job_prefix><MD5 of the execution ARN>`` by the
    pipeline (sagemaker_pipeline.run_name); the function (``lambdas/level3_finetune/sagemaker_cleanup``) acts on
    those whose name is the prefix and 32 hex digits AND whose data is this stack's artifacts bucket.
    ``job_prefix`` must carry the stage (``deployment.resource_name(...)``): without it a sandbox destroy would
    reach the prod stage's jobs and models.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        machine: sfn.StateMachine,
        artifacts: s3.IBucket,
        training_role: iam.IRole,
        import_role: iam.IRole,
        job_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        check_job_prefix(deployment, job_prefix, "jobs and models")
        self.deletes_models = not deployment.is_prod
        stack = Stack.of(self)
        arn = f"arn:{stack.partition}"
        where = f"{stack.region}:{stack.account}"
        self.function = PythonFunction(
            self,
            "Function",
            deployment=deployment,
            handler="sagemaker_cleanup.handler.handler",
            description="Level 3 on SageMaker custom resource: on stack deletion, stop the kit's jobs and delete "
            "its imported models"
            if self.deletes_models
            else "Level 3 on SageMaker custom resource: on stack deletion, stop the kit's executions and training "
            "jobs (models are kept)",
            service_name="sagemaker-cleanup",
            timeout=CLEANUP_TIMEOUT,
            memory_size=256,
        )
        role = self.function.role
        # Service Authorization Reference (resource types per action):
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html
        # The List actions have no resource type ('*' only). Imported-model and model-import-job ARNs end in an id
        # Bedrock generates (imported-model/${ResourceId}), not the name, so they are granted by type; training-job
        # ARNs end in the name, so by the kit's prefix. Stop-only (prod) gets no Bedrock action at all.
        find = ["sagemaker:ListTrainingJobs"]
        if self.deletes_models:
            find = ["bedrock:ListImportedModels", "bedrock:ListModelImportJobs", *find]
        self.statements = [
            iam.PolicyStatement(sid="FindKitResources", actions=find, resources=["*"]),
            stop_training_jobs_statement(stack, job_prefix),
        ]
        if self.deletes_models:
            self.statements += [
                iam.PolicyStatement(
                    sid="WatchKitImports",
                    actions=["bedrock:GetModelImportJob"],
                    resources=[f"{arn}:bedrock:{where}:model-import-job/*"],
                ),
                iam.PolicyStatement(
                    sid="DeleteKitModels",
                    actions=["bedrock:GetImportedModel", "bedrock:DeleteImportedModel"],
                    resources=[f"{arn}:bedrock:{where}:imported-model/*"],
                ),
            ]
        self.statements += stop_pipeline_statements(stack, machine, executions_arn(stack, machine))
        for statement in self.statements:
            role.add_to_policy(statement)
        wildcards = job_cleanup_findings(stack, machine, job_prefix)
        if self.deletes_models:
            wildcards += [
                f"Resource::{arn}:bedrock:{stack.region}:<AWS::AccountId>:model-import-job/*",
                f"Resource::{arn}:bedrock:{stack.region}:<AWS::AccountId>:imported-model/*",
            ]
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The List actions support no resource type ('*' only); imported models and import jobs get ids Bedrock "
            "generates, so they are granted by type in this account and region and the function also checks the "
            "name and the source bucket; training jobs are the kit's prefix; executions are this state machine's; "
            "X-Ray needs '*'."
            if self.deletes_models
            else "sagemaker:ListTrainingJobs supports no resource type ('*' only) and X-Ray needs '*'; the training "
            "jobs it stops are this stage's prefix and the executions are this state machine's.",
            applies_to=wildcards,
        )
        output = f"s3://{artifacts.bucket_name}/{pipeline.OUTPUT_PREFIX}"
        properties = {
            "Mode": STOP_AND_DELETE if self.deletes_models else STOP_ONLY,
            "StateMachineArn": machine.state_machine_arn,
            "NamePrefix": job_prefix,
            "TrainingOutputUri": output,
        }
        if self.deletes_models:
            properties["ImportSourceUri"] = f"{output}{NAME_SLOT}{pipeline.MERGED_SUFFIX}"
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.function.function.function_arn,
            resource_type="Custom::SageMakerFineTuneCleanup",
            service_timeout=CLEANUP_SERVICE_TIMEOUT,
            properties=properties,
        )
        # Deleted before the state machine (its executions are stopped first; Step Functions stops a .sync job with
        # its role), the artifacts bucket and its auto-delete resource and the training role (a stopping training
        # job still uploads its checkpoints and output there with that role), and the function's own permissions.
        # The import role too where the function waits for the imports still running (the sandbox).
        self.resource.node.add_dependency(machine, artifacts, training_role, role)
        if self.deletes_models:
            self.resource.node.add_dependency(import_role)
