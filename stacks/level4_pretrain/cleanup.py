"""The custom resource that stops Level 4's running training jobs when ``GenAiKit-4-Pretrain-Jobs`` is destroyed.

stack deletion ──► Custom::PretrainJobsCleanup (deleted first: it depends on the state machine, the training role,
    the bucket and its own role) ──► stop the state machine's executions ──► stop the stack's training jobs, wait
    until they have stopped ──► CloudFormation deletes the rest

Deleting the state machine alone leaves a createTrainingJob.sync job running until its MaxRuntime (up to 28 days
on up to 64 instances): DeleteStateMachine ends executions "on the next state transition", which a task waiting
for its job makes only when the job ends.
https://docs.aws.amazon.com/step-functions/latest/apireference/API_DeleteStateMachine.html
Every stage: it deletes nothing (the prod bucket is retained with the checkpoints the stopping jobs upload).
"""

from __future__ import annotations

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.level4_pretrain.jobs import OUTPUT_PREFIX
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

# A stopping job has 120 s after SIGTERM, then uploads its checkpoints and model, so the function gets Lambda's
# maximum; its own deadline answers 90 s before it. CloudFormation stops waiting for an answer after
# CLEANUP_SERVICE_TIMEOUT instead of an hour:
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html
CLEANUP_TIMEOUT = Duration.minutes(15)
CLEANUP_SERVICE_TIMEOUT = Duration.minutes(20)


class PretrainJobsCleanup(Construct):
    """On stack deletion, stop the state machine's executions and the training jobs they started.

    The function (``lambdas/level4_pretrain/pretrain_cleanup``) acts on the jobs whose name is ``job_prefix`` and
    the 32 hex digits of the execution ARN's MD5 AND whose output goes to ``bucket``. ``job_prefix`` carries the
    stage (names.job_prefix), so a sandbox destroy does not reach the prod stage's jobs in the same account.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        machine: sfn.StateMachine,
        training_role: iam.IRole,
        bucket: s3.IBucket,
        job_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        check_job_prefix(deployment, job_prefix, "training jobs")
        stack = Stack.of(self)
        self.function = PythonFunction(
            self,
            "Function",
            deployment=deployment,
            handler="pretrain_cleanup.handler.handler",
            description="Level 4 custom resource: on stack deletion, stop the running executions and training jobs",
            service_name="pretrain-cleanup",
            timeout=CLEANUP_TIMEOUT,
            memory_size=256,
        )
        role = self.function.role
        # Service Authorization Reference: ListTrainingJobs has no resource type ('*' only); training-job ARNs end
        # in the job's name, so the others are scoped to the stack's prefix.
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html
        self.statements = [
            iam.PolicyStatement(sid="FindTrainingJobs", actions=["sagemaker:ListTrainingJobs"], resources=["*"]),
            stop_training_jobs_statement(stack, job_prefix),
            *stop_pipeline_statements(stack, machine, executions_arn(stack, machine)),
        ]
        for statement in self.statements:
            role.add_to_policy(statement)
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "sagemaker:ListTrainingJobs supports no resource type ('*' only) and X-Ray needs '*'; the training jobs "
            "it stops are this stage's prefix and the executions are this state machine's.",
            applies_to=job_cleanup_findings(stack, machine, job_prefix),
        )
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.function.function.function_arn,
            resource_type="Custom::PretrainJobsCleanup",
            service_timeout=CLEANUP_SERVICE_TIMEOUT,
            properties={
                "StateMachineArn": machine.state_machine_arn,
                "NamePrefix": job_prefix,
                "TrainingOutputUri": f"s3://{bucket.bucket_name}/{OUTPUT_PREFIX}",
            },
        )
        # Deleted before all of these: the state machine and its role (StopExecution; Step Functions stops a .sync
        # job with its role too), the training role and its policy (a stopping job still uploads checkpoints with
        # it; in the cluster's VPC it holds the network-interface grants), the bucket and, in the sandbox, its
        # auto-delete resource (the checkpoints land there), and this function's own permissions.
        for dependency in (machine, training_role, bucket, role):
            self.resource.node.add_dependency(dependency)
