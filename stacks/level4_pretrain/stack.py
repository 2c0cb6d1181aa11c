"""Level 4 — pre-training from scratch: a zero-idle training-job path and a SageMaker HyperPod (Slurm) skeleton.

Two stacks; a sandbox user deploys ``GenAiKit-4-Pretrain-Jobs`` first ($0 while idle):

    GenAiKit-4-Pretrain-Jobs:   StartExecution ──► Step Functions: input checked (a JSON object; resumeFrom a name
                                     with checkpoints) ──► SageMaker CreateTrainingJob (.sync) named
                                     <prefix>-<stage>-pt-<MD5 of the execution ARN>, multi-node, torchrun in
                                     the PyTorch training image, checkpoints under checkpoints/<execution>/ (or the
                                     resumed run's), optional managed spot ──► SNS (+ EventBridge job state changes)
                                 destroy: a cleanup custom resource, deleted first, stops the running executions
                                     and training jobs and waits until they have stopped (cleanup.py)

    GenAiKit-4-Pretrain-Cluster: VPC (private subnets, NAT from config, S3 gateway endpoint, flow logs)
                                     security group: all traffic to and from itself (EFA)
                                     lifecycle bucket (named sagemaker-…): the lifecycle/ scripts only, which
                                       only the stack's deployment may write
                                     HyperPod cluster, Slurm configured through the API: node type and
                                       partition per instance group; controller (+ login) + compute at 0
                                     FSx for Lustre (opt-in, 1.2 TiB, linked to the data bucket), mounted
                                       by HyperPod from each group's InstanceStorageConfigs
                                     EventBridge cluster and node-health events ──► SNS

The units sit beside this module: network.py, storage.py and cluster.py (the cluster stack's), jobs.py (the
training-job path's input checks and code package), names.py (its job names, shared with ``kit l4``) and
cleanup.py (what destroy stops first); the two stacks below compose them.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.config import KitConfig
from stacks.level4_pretrain import names
from stacks.level4_pretrain.cleanup import PretrainJobsCleanup
from stacks.level4_pretrain.cluster import HyperPodCluster
from stacks.level4_pretrain.jobs import (
    CHECKPOINTS_PREFIX,
    CODE_PREFIX,
    OUTPUT_PREFIX,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF,
    RETRY_INTERVAL,
    WORKLOAD_DIR,
    InputChecks,
    execution_timeout,
    sourcedir_asset,
    stopping_condition,
)
from stacks.level4_pretrain.network import ClusterNetwork, vpc_access_statements
from stacks.level4_pretrain.storage import DATA_PREFIX, ClusterStorage
from stacks.shared.alarms import dead_letter_queue
from stacks.shared.deployment import Deployment
from stacks.shared.failures import end_after, input_rejected, reported_fail
from stacks.shared.nag import arn_ref, suppress, suppress_bucket_deployment
from stacks.shared.notifications import notification_rule
from stacks.shared.regions import refuse
from stacks.shared.secure_bucket import SecureBucket, emptied_after, only_the_deployment_writes
from stacks.shared.settings import training_instance_has_gpu
from stacks.shared.stage import bucket_deployment_logs, run_tags, state_machine_log_group, tag_stack
from stacks.shared.training_jobs import run_jobs_statements, training_image_problems, training_role_statements

LEVEL = "4-pretrain"


def _notifications(scope: Construct, deployment: Deployment, name: str) -> sns.Topic:
    """The level's topic. Its policy grants no service principal anything but CloudWatch alarms of this account (the
    dead-letter alarm ``notification_rule`` adds): EventBridge publishes through the per-rule roles of
    ``notification_rule``, Step Functions through its own role."""
    topic = sns.Topic(scope, "Notifications", display_name=deployment.resource_name(name), enforce_ssl=True)
    if deployment.alarm_email:
        topic.add_subscription(subscriptions.EmailSubscription(deployment.alarm_email))
    return topic


class PretrainClusterStack(Stack):
    """``GenAiKit-4-Pretrain-Cluster``: network, storage, lifecycle scripts and the HyperPod cluster."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit Level 4: SageMaker HyperPod (Slurm) cluster skeleton",
            **kwargs,
        )
        deployment, pretrain = config.deployment, config.pretrain
        tag_stack(self, deployment, LEVEL)
        self.network = ClusterNetwork(self, "Network", deployment=deployment, nat_gateways=pretrain.nat_gateways)
        self.storage = ClusterStorage(self, "Storage", deployment=deployment, pretrain=pretrain, network=self.network)
        self.hyperpod = HyperPodCluster(
            self, "HyperPod", deployment=deployment, pretrain=pretrain, network=self.network, storage=self.storage
        )
        topic = _notifications(self, deployment, "hyperpod")
        cluster_arn = self.hyperpod.cluster.attr_cluster_arn
        notification_rule(
            self,
            "ClusterEvents",
            deployment,
            topic=topic,
            name="hyperpod-events",
            description="Level 4: HyperPod cluster state changes and node health events",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker HyperPod Cluster State Change", "SageMaker HyperPod Cluster Node Health Event"],
                resources=[cluster_arn],
            ),
        )
        CfnOutput(self, "ClusterName", value=self.hyperpod.cluster_name)
        CfnOutput(self, "ClusterArn", value=cluster_arn)
        CfnOutput(self, "DataBucketName", value=self.storage.data.bucket_name)
        CfnOutput(self, "LifecycleScriptsUri", value=self.storage.lifecycle_uri)
        CfnOutput(self, "NotificationTopicArn", value=topic.topic_arn)
        if self.storage.file_system is not None:
            CfnOutput(self, "FsxDnsName", value=self.storage.file_system.attr_dns_name)


class PretrainJobsStack(Stack):
    """``GenAiKit-4-Pretrain-Jobs``: multi-node SageMaker training jobs started by Step Functions; $0 idle."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        network: ClusterNetwork | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit Level 4: zero-idle multi-node SageMaker training jobs",
            **kwargs,
        )
        if refuse(self, training_image_problems(self.region)):
            return  # no training image is published in this region: an empty stack with the error
        deployment, settings = config.deployment, config.pretrain
        tag_stack(self, deployment, LEVEL)
        from workloads.pretrain import sagemaker_job  # the workload's own facts: image, hyperparameters, paths

        # + the hash of the execution ARN (names.py): the stage keeps the sandbox's and prod's jobs, rule and grants
        # apart in one account and region.
        self.job_prefix = job_prefix = names.job_prefix(deployment.name_prefix, deployment.stage)
        self.bucket = SecureBucket(self, "Artifacts", deployment=deployment, versioned=True).bucket
        # The training code as the toolkit expects it (code/sourcedir.tar.gz) and the sample corpus (data/).
        code_upload = s3deploy.BucketDeployment(
            self,
            "TrainingCode",
            sources=[s3deploy.Source.asset(sourcedir_asset())],
            log_group=bucket_deployment_logs(self, deployment),
            destination_bucket=self.bucket,
            prune=False,
            # Kept in every stage: CDK's handler runs `aws s3 rm s3://<bucket>/<prefix> --recursive` on a delete
            # without retention whenever it cannot read the bucket's tags (any error there counts as not owned), and
            # the prod bucket is retained with the user's data beside these files; the sandbox bucket's own
            # auto-delete empties it on destroy.
            retain_on_delete=True,
            memory_limit=256,
        )
        corpus_upload = s3deploy.BucketDeployment(
            self,
            "SampleCorpus",
            sources=[s3deploy.Source.asset(str(WORKLOAD_DIR / "data"))],
            log_group=bucket_deployment_logs(self, deployment),
            destination_bucket=self.bucket,
            destination_key_prefix=DATA_PREFIX,
            prune=False,
            # Kept in every stage: CDK's handler runs `aws s3 rm s3://<bucket>/<prefix> --recursive` on a delete
            # without retention whenever it cannot read the bucket's tags (any error there counts as not owned), and
            # the prod bucket is retained with the user's data beside these files; the sandbox bucket's own
            # auto-delete empties it on destroy.
            retain_on_delete=True,
            memory_limit=256,
        )
        for upload in (code_upload, corpus_upload):
            suppress_bucket_deployment(upload, self.bucket)
        # Training jobs run code/ under the training role; they write only checkpoints/ and output/.
        only_the_deployment_writes(self.bucket, CODE_PREFIX, code_upload)
        topic = _notifications(self, deployment, "training")

        # SageMaker supplies both keys when a training job assumes its role:
        # https://docs.aws.amazon.com/sagemaker/latest/dg/security-confused-deputy-prevention.html
        role = iam.Role(
            self,
            "TrainingRole",
            description="Level 4: assumed by SageMaker to run the kit's training jobs",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:training-job/*"
                    },
                },
            ),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadCodeAndData",
                actions=["s3:GetObject"],
                resources=[
                    self.bucket.arn_for_objects(f"{CODE_PREFIX}*"),
                    self.bucket.arn_for_objects(f"{DATA_PREFIX}*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(sid="ListArtifacts", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
        emptied_after(self.bucket, role)  # a job the destroy is still stopping writes checkpoints
        role.add_to_policy(
            iam.PolicyStatement(
                sid="SyncCheckpoints",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[self.bucket.arn_for_objects(f"{CHECKPOINTS_PREFIX}*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteModel", actions=["s3:PutObject"], resources=[self.bucket.arn_for_objects(f"{OUTPUT_PREFIX}*")]
            )
        )
        for statement in training_role_statements(self):
            role.add_to_policy(statement)
        vpc_config = network is not None and settings.job_in_cluster_vpc
        if vpc_config and network is not None:
            for statement in vpc_access_statements(
                self,
                subnet_ids=network.cluster_subnets.subnet_ids,
                security_group_id=network.security_group.security_group_id,
                detach=False,
            ):
                role.add_to_policy(statement)

        # CreateTrainingJob.sync as a plain ASL task: CDK's SageMakerCreateTrainingJob does not expose
        # CheckpointConfig or managed spot, and the checkpoint sync is what makes resume-after-interruption work.
        image = sagemaker_job.image_uri(self.region, gpu=training_instance_has_gpu(settings.job_instance_type))
        request: dict[str, Any] = {
            # The prefix and the MD5 of the execution ARN (32 hex digits), not the execution name (up to 80
            # characters): at most 61 of SageMaker's 63 characters, and `kit l4` computes it from the ARN.
            "TrainingJobName.$": names.job_name_intrinsic(job_prefix, "$$.Execution.Id"),
            "RoleArn": role.role_arn,
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "HyperParameters": sagemaker_job.hyperparameters(
                submit_directory=f"s3://{self.bucket.bucket_name}/{CODE_PREFIX}sourcedir.tar.gz",
                region=self.region,
                instance_type=settings.job_instance_type,
            ),
            "InputDataConfig": [
                {
                    "ChannelName": sagemaker_job.TRAIN_CHANNEL,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": f"s3://{self.bucket.bucket_name}/{DATA_PREFIX}",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.bucket.bucket_name}/{OUTPUT_PREFIX}"},
            # The prefix the input check chose: this execution's own, or the resumed run's. SageMaker copies what
            # is there to LocalPath before training and keeps uploading LocalPath to it.
            "CheckpointConfig": {"S3Uri.$": "$.checkpoints.s3Uri", "LocalPath": sagemaker_job.CHECKPOINT_LOCAL_PATH},
            "ResourceConfig": {
                "InstanceType": settings.job_instance_type,
                "InstanceCount": settings.job_instance_count,
                "VolumeSizeInGB": 50,
            },
            "StoppingCondition": stopping_condition(settings),
            "EnableManagedSpotTraining": settings.job_spot,
            # The stack's tags on the job, as Level 3's SageMaker path gives them (run_tags, in Level 3's pipeline.py;
            # botocore sagemaker CreateTrainingJobRequest Tags); Step Functions adds its own MANAGED_BY_AWS tag.
            "Tags": run_tags(self, "sagemaker", "CreateTrainingJob", "Tags"),
        }
        if vpc_config and network is not None:
            request["VpcConfig"] = {
                "SecurityGroupIds": [network.security_group.security_group_id],
                "Subnets": network.cluster_subnets.subnet_ids,
            }
        train = sfn.CustomState(
            self,
            "TrainModel",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{self.partition}:states:::sagemaker:createTrainingJob.sync",
                "Parameters": request,
                "ResultPath": "$.training",
            },
        )
        succeeded = tasks.SnsPublish(
            self,
            "NotifySucceeded",
            topic=topic,
            subject="genai-spectrum-kit pre-training",
            message=sfn.TaskInput.from_object(
                {
                    "outcome": "succeeded",
                    "job": sfn.JsonPath.string_at("$.training.TrainingJobName"),
                    "model": sfn.JsonPath.string_at("$.training.ModelArtifacts.S3ModelArtifacts"),
                    "checkpoints": sfn.JsonPath.string_at("$.checkpoints.s3Uri"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        failure_message = sfn.TaskInput.from_object(
            {
                "outcome": "failed",
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "error": sfn.JsonPath.object_at("$.error"),
            }
        )
        failed, invalid = (
            tasks.SnsPublish(
                self,
                state_id,
                topic=topic,
                subject="genai-spectrum-kit pre-training",
                message=failure_message,
                result_path=sfn.JsonPath.DISCARD,
            )
            for state_id in ("NotifyFailed", "NotifyInvalidInput")
        )
        for notify in (succeeded, failed, invalid):
            notify.add_retry(
                errors=["States.ALL"], interval=RETRY_INTERVAL, max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF
            )
        train.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        train.next(succeeded)
        # A notification that still fails after its retries never decides the outcome: the run ends where it would
        # have ended (a state's uncaught error fails the execution: a trained model would be reported as failed).
        # https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html
        end_after(succeeded, sfn.Succeed(self, "Done"))
        end_after(
            failed,
            reported_fail(
                self,
                "TrainingFailed",
                error="TrainingJobFailed",
                summary="The training run failed",
                details=["$.error"],
            ),
        )
        end_after(invalid, input_rejected(self))
        checks = InputChecks(self, bucket_name=self.bucket.bucket_name, train=train, invalid=invalid, failed=failed)
        logs = state_machine_log_group(self, "StateMachineLogs", deployment, deployment.resource_name("pretrain"))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=deployment.resource_name("pretrain"),
            definition_body=sfn.DefinitionBody.from_chainable(checks.start),
            timeout=execution_timeout(settings),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # The zero-idle path keeps no alarm (CloudWatch bills each one monthly): an event EventBridge could not
        # publish waits here 14 days; each run's outcome is also published by the state machine itself (Notify*
        # states above), so only the progress messages in between, and the rare run ended off its paths (below),
        # depend on these rules.
        undelivered = dead_letter_queue(
            self,
            "TrainingJobStateChangeDeadLetters",
            holds="the job-state and execution-status notification rules",
            watched="no alarm keeps the jobs stack free while idle; each run's outcome is also published by the "
            "state machine itself",
        )
        notification_rule(
            self,
            "TrainingJobStateChange",
            deployment,
            topic=topic,
            name="pretrain-job-events",
            description="Level 4: state changes of this kit's training jobs",
            dead_letter_queue=undelivered,
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Training Job State Change"],
                detail={"TrainingJobName": [{"prefix": job_prefix}]},
            ),
        )
        # An execution that timed out (States.Timeout ends it where no Catch sees it: execution_timeout) or was
        # stopped by hand ends without its Notify* states: its status change says so instead. Step Functions sends
        # these events for standard workflows (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html).
        # A FAILED execution went through a Notify* state first, so it is not announced twice; the exception is an
        # input within a few hundred bytes of StartExecution's 256 KiB, which fails with States.DataLimitExceeded
        # where a state adds to it (ReadInput wraps it, FindCheckpoints adds its listing, a rejecting Pass its
        # reason) before any job is started. A managed-spot job's limit is MaxWaitTimeInSeconds, "the amount of time
        # spent waiting for Spot capacity plus the amount of time the job can run"
        # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html).
        limit = "MaxWaitTimeInSeconds, spot capacity waits included" if settings.job_spot else "MaxRuntimeInSeconds"
        notification_rule(
            self,
            "ExecutionEndedOffItsPaths",
            deployment,
            topic=topic,
            name="pretrain-run-ended",
            description="Level 4: a training-job execution that timed out or was aborted",
            dead_letter_queue=undelivered,
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": ["TIMED_OUT", "ABORTED"], "stateMachineArn": [self.state_machine.state_machine_arn]},
            ),
            message=events.RuleTargetInput.from_text(
                f"Level 4 training run {events.EventField.from_path('$.detail.name')} ended "
                f"{events.EventField.from_path('$.detail.status')} before its own notification: its training job "
                f"may still run (it stops at its own {limit}). See "
                f"`{deployment.kit_command('l4', 'status')} {events.EventField.from_path('$.detail.name')}` and the "
                "SageMaker console's training jobs."
            ),
        )
        machine_role = self.state_machine.role
        for statement in run_jobs_statements(self, job_prefix, role):
            machine_role.add_to_principal_policy(statement)
        # FindCheckpoints: is there anything under checkpoints/<resumeFrom>/ (ListObjectsV2 is authorized by
        # s3:ListBucket; s3:prefix keeps the listing to the checkpoint prefix).
        machine_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="FindCheckpoints",
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{CHECKPOINTS_PREFIX}*"]}},
            )
        )
        # Resource types per action: the Service Authorization Reference (cloudwatch:PutMetricData: optional dataset;
        # ecr:GetAuthorizationToken: none), https://docs.aws.amazon.com/service-authorization/latest/reference/
        # list_amazoncloudwatch.html and list_amazonelasticcontainerregistry.html; PutMetricData names no dataset
        # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html).
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Training jobs read code and data and write checkpoints and the model under fixed prefixes of the "
            "kit's bucket, log to SageMaker's own log groups, and publish metrics under /aws/sagemaker/*; on '*': "
            "ecr:GetAuthorizationToken, which has no resource type, and cloudwatch:PutMetricData, whose one "
            "resource type (an optional CloudWatch dataset) its request cannot name, bounded by its "
            "cloudwatch:namespace condition"
            + (
                "; in the cluster VPC also the five ec2:Describe* actions, which have no resource type, and "
                "ec2:DeleteNetworkInterfacePermission, whose network-interface resource type is optional and whose "
                "request names only a permission id, while network interfaces are managed only in the cluster's "
                "subnets (ec2:Subnet)."
                if vpc_config
                else "."
            ),
            applies_to=[
                "Resource::*",
                *(
                    f"Resource::{arn_ref(self.bucket)}/{p}*"
                    for p in (CODE_PREFIX, DATA_PREFIX, CHECKPOINTS_PREFIX, OUTPUT_PREFIX)
                ),
                f"Resource::arn:{self.partition}:logs:{self.region}:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs*",
                *(
                    [f"Resource::arn:{self.partition}:ec2:{self.region}:<AWS::AccountId>:network-interface/*"]
                    if vpc_config
                    else []
                ),
            ],
        )
        suppress(
            machine_role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Training job names are made per execution (a hash of its ARN) under this deployment's prefix, which "
            "carries the stage; X-Ray and CloudWatch Logs delivery support no resource-level permissions; "
            "sagemaker:ListTags (read-only) is on '*' as the Step Functions .sync policy for SageMaker documents.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:{self.partition}:sagemaker:{self.region}:<AWS::AccountId>:training-job/{job_prefix}*",
            ],
        )
        # Destroy stops the running work first: deleting the state machine leaves its training job running.
        self.cleanup = PretrainJobsCleanup(
            self,
            "JobsCleanup",
            deployment=deployment,
            machine=self.state_machine,
            training_role=role,
            bucket=self.bucket,
            job_prefix=job_prefix,
        )
        self.role, self.topic = role, topic
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "ArtifactsBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "NotificationTopicArn", value=topic.topic_arn)
