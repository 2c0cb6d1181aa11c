"""What every stack that runs SageMaker training jobs from a state machine needs (Level 3's SageMaker path and Level
4's training-job path): the training image's registry, the job's longest life, and the grants on both sides.

The training role (assumed by SageMaker) pulls the AWS Deep Learning Containers image, logs and publishes metrics
where SageMaker writes them; the state machine's role starts, watches and stops the jobs it names
(``createTrainingJob.sync``) and passes the training role. Each level adds the grants on its own bucket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stacks.shared.settings import ConfigError, Problem
from workloads.pretrain.sagemaker_container import MAX_RUNTIME_DAYS

if TYPE_CHECKING:  # the settings read MAX_JOB_HOURS, and the kit reads the settings without loading the CDK
    from aws_cdk import Stack
    from aws_cdk import aws_iam as iam

# A training job's longest run, MaxRuntimeInSeconds and MaxWaitTimeInSeconds alike (sagemaker_container.py).
MAX_JOB_HOURS = MAX_RUNTIME_DAYS * 24

_NO_DLC = "a region where the AWS Deep Learning Containers are published"


def training_image_problems(region: str) -> list[Problem]:
    """A region the DLC table does not serve has no training image to pull: the stacks that run training jobs
    there (Level 3's SageMaker path and Level 4's jobs) are refused, and only those (stacks/shared/regions.py)."""
    from workloads.pretrain import sagemaker_job

    if region in sagemaker_job.DLC_REGISTRY_ACCOUNTS:
        return []
    return [Problem("region", region, f"{_NO_DLC}: {', '.join(sorted(sagemaker_job.DLC_REGISTRY_ACCOUNTS))}")]


def training_image_account(region: str) -> str:
    """The AWS Deep Learning Containers registry account of ``region`` (Levels 3 and 4 pull their training image
    there and are granted on it); these stacks build only where :func:`training_image_problems` finds none."""
    from workloads.pretrain import sagemaker_job

    try:
        return sagemaker_job.image_account(region)
    except ValueError:
        raise ConfigError("region", region, _NO_DLC) from None


def training_role_statements(stack: Stack) -> list[iam.PolicyStatement]:
    """What a training job does under its role whatever the level: pull the training image, log to SageMaker's
    log groups and publish metrics under /aws/sagemaker/*. Resource types per action: the Service Authorization
    Reference (ecr:GetAuthorizationToken has none; cloudwatch:PutMetricData only an optional dataset its request
    cannot name, so it is bounded by its cloudwatch:namespace condition)."""
    from aws_cdk import aws_iam as iam

    from workloads.pretrain import sagemaker_job

    return [
        iam.PolicyStatement(
            sid="PullTrainingImage",
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            resources=[
                f"arn:{stack.partition}:ecr:{stack.region}:{training_image_account(stack.region)}:repository/"
                f"{sagemaker_job.IMAGE_REPOSITORY}"
            ],
        ),
        iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
        iam.PolicyStatement(
            sid="TrainingLogs",
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[
                f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/sagemaker/TrainingJobs*"
            ],
        ),
        iam.PolicyStatement(
            sid="TrainingMetrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}},
        ),
    ]


def run_jobs_statements(stack: Stack, job_prefix: str, training_role: iam.IRole) -> list[iam.PolicyStatement]:
    """What a state machine's role needs for ``createTrainingJob.sync`` on the jobs named ``job_prefix``*.

    AddTags: Step Functions tags the job it starts (MANAGED_BY_AWS=STARTED_BY_STEP_FUNCTIONS) and is refused
    without it (aws/aws-cdk#32294; CDK's own SageMakerCreateTrainingJob grants it since #32536). It also authorizes
    the Tags a create request carries (a policy that creates SageMaker resources must also allow tagging them:
    "Provide permissions for tagging SageMaker resources",
    https://docs.aws.amazon.com/sagemaker/latest/dg/canvas-set-up-cv-nlp.html; the reference gives AddTags the key
    sagemaker:TaggingAction, the create action). The .sync policy Step Functions documents grants ListTags on "*",
    without saying which ARN it lists, and watches the job through its managed EventBridge rule
    (https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html, "Run a Job (.sync)").
    """
    from aws_cdk import aws_iam as iam

    arn = f"arn:{stack.partition}"
    return [
        iam.PolicyStatement(
            sid="RunTrainingJobs",
            actions=[
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
                "sagemaker:AddTags",
            ],
            resources=[f"{arn}:sagemaker:{stack.region}:{stack.account}:training-job/{job_prefix}*"],
        ),
        iam.PolicyStatement(sid="ReadTrainingJobTags", actions=["sagemaker:ListTags"], resources=["*"]),
        iam.PolicyStatement(
            sid="WatchTrainingJobs",
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[
                f"{arn}:events:{stack.region}:{stack.account}:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"
            ],
        ),
        iam.PolicyStatement(
            sid="PassTrainingRole",
            actions=["iam:PassRole"],
            resources=[training_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ),
    ]
