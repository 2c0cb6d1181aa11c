"""What the stack-deletion cleanups share (Level 3's two, Level 4's jobs): the grants to stop the state machine's
executions and the stack's training jobs and to read the stack's own status (they act only while it is deleted),
and the check that the job prefix they act on is their own stage's."""

from __future__ import annotations

from typing import cast

from aws_cdk import CfnElement, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn

from stacks.shared.deployment import Deployment


def check_job_prefix(deployment: Deployment, job_prefix: str, what: str) -> None:
    """Refuse a prefix that does not carry this stage: the cleanup would match another stage's ``what``."""
    stage_prefix = f"{deployment.resource_name()}-"
    if not job_prefix.startswith(stage_prefix) or len(job_prefix) <= len(stage_prefix) or job_prefix[-1] != "-":
        raise ValueError(
            f"job_prefix {job_prefix!r} must start with {stage_prefix!r} (the stage) and end with '-', so the "
            f"cleanup cannot match another stage's {what}"
        )


def stop_pipeline_statements(
    stack: Stack, machine: sfn.IStateMachine, executions_arn: str
) -> list[iam.PolicyStatement]:
    """List and stop ``machine``'s executions (``executions_arn``: its execution ARNs), and read ``stack``."""
    return [
        iam.PolicyStatement(
            sid="StopPipeline", actions=["states:ListExecutions"], resources=[machine.state_machine_arn]
        ),
        iam.PolicyStatement(sid="StopPipelineExecutions", actions=["states:StopExecution"], resources=[executions_arn]),
        read_own_stack_statement(stack),
    ]


def read_own_stack_statement(stack: Stack) -> iam.PolicyStatement:
    """DescribeStacks on ``stack`` only: a cleanup acts only while its own stack is being deleted."""
    return iam.PolicyStatement(
        sid="ReadOwnStack", actions=["cloudformation:DescribeStacks"], resources=[stack.stack_id]
    )


def stop_training_jobs_statement(stack: Stack, job_prefix: str) -> iam.PolicyStatement:
    """Describe and stop the training jobs named ``job_prefix``*: training-job ARNs end in the job's name
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html)."""
    return iam.PolicyStatement(
        sid="StopKitTrainingJobs",
        actions=["sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"],
        resources=[f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:training-job/{job_prefix}*"],
    )


def executions_arn(stack: Stack, machine: sfn.StateMachine) -> str:
    """The ARNs of ``machine``'s executions, by the name the template gives it."""
    return f"arn:{stack.partition}:states:{stack.region}:{stack.account}:execution:{machine.state_machine_name}:*"


def job_cleanup_findings(stack: Stack, machine: sfn.StateMachine, job_prefix: str) -> list[str]:
    """The cdk-nag IAM5 findings of the grants a job cleanup shares: '*' (the List actions, X-Ray), the stage's
    training jobs (:func:`stop_training_jobs_statement`) and the executions (:func:`executions_arn`)."""
    arn = f"arn:{stack.partition}"
    machine_name = f"<{stack.get_logical_id(cast(CfnElement, machine.node.default_child))}.Name>"  # cdk-nag's name
    return [
        "Resource::*",
        f"Resource::{arn}:sagemaker:{stack.region}:<AWS::AccountId>:training-job/{job_prefix}*",
        f"Resource::{arn}:states:{stack.region}:<AWS::AccountId>:execution:{machine_name}:*",
    ]
