"""Level 3 on SageMaker — fine-tune an open-weights model with LoRA on a training job, serve it from Bedrock with
Custom Model Import. $0 while idle apart from S3 storage (and the monthly storage of each imported model a user keeps).

    StartExecution {"trainingKey", "baseModel"? | "baseModelKey"?, "resumeFrom"?} ──► Step Functions
        (sagemaker_pipeline.py): request checked, data (and base model, and earlier checkpoints) found, every
        record checked by the Validator function (chat_records' rules, the training program's own) or rejected
        ──► SageMaker CreateTrainingJob (.sync): sft_train.py in the PyTorch training image, the base model from the
        Hub or from models/<name>/ in the data bucket (the "model" channel), checkpoints under
        checkpoints/<execution name>/ (or the resumed execution's), uncompressed output with the merged model at
        output/<job>/output/model/merged/; the job, the import job and the imported model are named
        <name_prefix>-<stage>-sft-<MD5 of the execution ARN> (sagemaker_pipeline.run_name)
        ──► Bedrock CreateModelImportJob (role trusted by Bedrock, reads only merged/ prefixes) ──► bounded wait
        ──► smoke InvokeModel ──► SNS; every failure notified, the imported model deleted first
    EventBridge: the kit's training job state changes ──► SNS; executions that fail, time out or are aborted
        ──► teardown state machine (sagemaker_teardown.py): stop the training job, delete the imported model, SNS

Bedrock documents EventBridge events for customization and batch inference jobs only, not for import jobs
(https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-eventbridge-how-it-works.html): the state
machine reports the import's outcome itself.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.config import KitConfig
from stacks.level3_finetune import sagemaker_pipeline as pipeline
from stacks.level3_finetune.names import CHECKPOINTS_PREFIX, IMPORTED_MODELS_QUOTA_CODE
from stacks.level3_finetune.pipeline import EXECUTION_HEADROOM
from stacks.level3_finetune.sagemaker_cleanup import SageMakerFineTuneCleanup
from stacks.level3_finetune.sagemaker_settings import SageMakerFineTuneSettings, region_problems
from stacks.level3_finetune.sagemaker_teardown import SageMakerPipelineTeardown
from stacks.shared import build_dir
from stacks.shared.deployment import Deployment
from stacks.shared.failures import end_after, input_rejected, reported_fail
from stacks.shared.model_access import default_project_arn
from stacks.shared.nag import arn_ref, suppress, suppress_bucket_deployment
from stacks.shared.notifications import notification_rule
from stacks.shared.python_function import REPO_ROOT as ROOT
from stacks.shared.python_function import PythonFunction
from stacks.shared.regions import refuse
from stacks.shared.secure_bucket import SecureBucket, emptied_after, only_the_deployment_writes
from stacks.shared.settings import training_instance_has_gpu
from stacks.shared.stage import bucket_deployment_logs, run_tags, stack_tags, state_machine_log_group, tag_stack
from stacks.shared.training_jobs import run_jobs_statements, training_image_problems, training_role_statements

# How long the sandbox keeps a run's training output (the adapter and the merged model it imported).
SANDBOX_OUTPUT_DAYS = 30

LEVEL = "3-finetune-sagemaker"
SAMPLES_DIR = ROOT / "samples" / "finetune-sagemaker"
SUBJECT = "genai-spectrum-kit fine-tuning on SageMaker"
# The record rules the training program applies, shipped in the validator's asset (one copy of the rules).
RECORD_RULES = "workloads.finetune_sagemaker.chat_records"
# Streaming a large dataset takes time: Lambda's longest timeout, 900 s
# (https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html).
VALIDATOR_TIMEOUT = Duration.minutes(15)


def sourcedir_asset() -> str:
    """A folder holding code/sourcedir.tar.gz, built deterministically from workloads/finetune_sagemaker."""
    from workloads.finetune_sagemaker.sagemaker_job import sourcedir_bytes

    return build_dir.sourcedir_asset("sft-sourcedir-asset", pipeline.CODE_PREFIX, sourcedir_bytes())


class SageMakerFineTuneStack(Stack):
    """``GenAiKit-3-FineTune-SageMaker``: buckets, roles, the pipeline and its notifications."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description=(
                "genai-spectrum-kit Level 3 on SageMaker: LoRA fine-tuning job + Bedrock Custom Model Import "
                "(~$0.10/month idle, one alarm, apart from S3 storage)"
            ),
            **kwargs,
        )
        if refuse(self, region_problems(self.region) + training_image_problems(self.region)):
            return  # no Custom Model Import or training image in this region: an empty stack with the errors
        deployment, settings = config.deployment, config.finetune_sagemaker
        tag_stack(self, deployment, LEVEL)
        # + the hash of the execution ARN (sagemaker_pipeline.run_name); the stage keeps the sandbox's and prod's
        # names (and their clean-ups) apart.
        self.job_prefix = f"{deployment.resource_name('sft')}-"
        self.data = SecureBucket(self, "Data", deployment=deployment, versioned=True).bucket
        self.artifacts = SecureBucket(self, "Artifacts", deployment=deployment, versioned=False).bucket
        if not deployment.is_prod:
            # Each run leaves its adapter and merged model under output/<job>/ (about 1 GB for the default 0.5B
            # base, 16 GB for an 8B one), which nothing else deletes; the import has copied the model long before.
            # The sandbox lets them go; prod keeps them (docs/level-3-finetune.md).
            self.artifacts.add_lifecycle_rule(
                id="ExpireRunOutputs",
                prefix=pipeline.OUTPUT_PREFIX,
                expiration=Duration.days(SANDBOX_OUTPUT_DAYS),
            )
        uploads = [
            s3deploy.BucketDeployment(
                self,
                "TrainingCode",
                sources=[s3deploy.Source.asset(sourcedir_asset())],
                log_group=bucket_deployment_logs(self, deployment),
                destination_bucket=self.artifacts,
                prune=False,
                # Kept in every stage: CDK's handler runs `aws s3 rm s3://<bucket>/<prefix> --recursive` on a delete
                # without retention whenever it cannot read the bucket's tags (any error there counts as not owned), and
                # the prod bucket is retained with the user's data beside these files; the sandbox bucket's own
                # auto-delete empties it on destroy.
                retain_on_delete=True,
                memory_limit=256,
            ),
            s3deploy.BucketDeployment(
                self,
                "SampleRecords",
                sources=[s3deploy.Source.asset(str(SAMPLES_DIR))],
                log_group=bucket_deployment_logs(self, deployment),
                destination_bucket=self.data,
                destination_key_prefix=pipeline.DATA_PREFIX,
                prune=False,
                # Kept in every stage: CDK's handler runs `aws s3 rm s3://<bucket>/<prefix> --recursive` on a delete
                # without retention whenever it cannot read the bucket's tags (any error there counts as not owned), and
                # the prod bucket is retained with the user's data beside these files; the sandbox bucket's own
                # auto-delete empties it on destroy.
                retain_on_delete=True,
                memory_limit=256,
            ),
        ]
        suppress_bucket_deployment(uploads[0], self.artifacts)
        suppress_bucket_deployment(uploads[1], self.data)
        # Training jobs run code/ under the training role; they write only checkpoints/ and output/. The bucket's
        # generated name starts with the stack's, so it holds "sagemaker", which managed SageMaker policies grant
        # s3:PutObject on.
        only_the_deployment_writes(self.artifacts, pipeline.CODE_PREFIX, uploads[0])
        self.topic = self._topic(deployment)
        self.training_role = self._training_role(settings)
        emptied_after(self.artifacts, self.training_role)  # a job the destroy is still stopping writes checkpoints
        self.import_role = self._import_role()
        self.validator = self._validator(deployment)
        self.state_machine = self._state_machine(deployment, settings)
        self._grant_pipeline()
        # A Catch cannot see the execution's own timeout or an abort: the teardown, started by the execution's
        # status event, stops the training job, deletes the imported model and reports.
        self.teardown = SageMakerPipelineTeardown(
            self,
            "Teardown",
            deployment=deployment,
            job_prefix=self.job_prefix,
            pipeline=self.state_machine,
            topic=self.topic,
        )
        # A state change EventBridge could not publish lands in the teardown's alarmed dead-letter queue (its
        # RULE_ARN attribute names this rule): one queue and one alarm for the stack.
        notification_rule(
            self,
            "TrainingJobStateChange",
            deployment,
            topic=self.topic,
            name="sft-job-events",
            description="Level 3 on SageMaker: state changes of this kit's fine-tuning jobs",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Training Job State Change"],
                detail={"TrainingJobName": [{"prefix": self.job_prefix}]},
            ),
            dead_letter_queue=self.teardown.backstop.dead_letters,
        )
        # Destroy, every stage: the pipeline's executions and training jobs are stopped first (deleting the state
        # machine would leave a running job billing); in the sandbox the kit's imported models are deleted too.
        self.cleanup = SageMakerFineTuneCleanup(
            self,
            "SageMakerCleanup",
            deployment=deployment,
            machine=self.state_machine,
            artifacts=self.artifacts,
            training_role=self.training_role,
            import_role=self.import_role,
            job_prefix=self.job_prefix,
        )
        # On destroy, the teardown and its triggers go before the cleanup runs (a dependent is deleted first:
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-dependson.html). The executions
        # the cleanup stops end ABORTED, and a teardown started for them deletes their imported models, which prod
        # keeps; the sandbox's cleanup deletes them itself. The state machine too: after DeleteRule "incoming events
        # might continue to match to the deleted rule" for a short time
        # (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_DeleteRule.html).
        teardown_machine = self.teardown.state_machine.node.default_child  # not its role: that may go after
        assert teardown_machine is not None
        for trigger in (self.teardown.rule, self.teardown.backstop.schedule, teardown_machine):
            trigger.node.add_dependency(self.cleanup.resource)
        arn = f"arn:{self.partition}"
        suppress(
            self.teardown.state_machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The ended execution's training job is named per execution under the kit's prefix, and its import job and "
            "imported model get ids Bedrock generates, so their ARNs end in a wildcard; X-Ray and CloudWatch Logs "
            "delivery support no resource-level permissions.",
            applies_to=[
                "Resource::*",
                f"Resource::{arn}:sagemaker:{self.region}:<AWS::AccountId>:training-job/{self.job_prefix}*",
                f"Resource::{arn}:bedrock:{self.region}:<AWS::AccountId>:imported-model/*",
                f"Resource::{arn}:bedrock:{self.region}:<AWS::AccountId>:model-import-job/*",
            ],
        )
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "DataBucketName", value=self.data.bucket_name)
        CfnOutput(self, "ArtifactsBucketName", value=self.artifacts.bucket_name)
        CfnOutput(self, "NotificationTopicArn", value=self.topic.topic_arn)
        CfnOutput(
            self,
            "IdleCost",
            value=(
                "~$0.10/month idle for the stack (the teardown dead-letter alarm; the hourly teardown sweep adds about "
                "$0.007 with its X-Ray traces) apart from S3 storage; a run bills the training instances; each "
                "imported model kept bills storage per Custom Model Unit every month "
                "(bedrock.imported_model_storage in kit/prices.json), plus inference by Custom Model Units in "
                "5-minute windows while it serves"
            ),
        )

    def _topic(self, deployment: Deployment) -> sns.Topic:
        topic = sns.Topic(self, "Notifications", display_name=deployment.resource_name("sft"), enforce_ssl=True)
        if deployment.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(deployment.alarm_email))
        return topic

    def hub_token_secret_arn(self, secret: str) -> str:
        """The secret the training role may read: a complete ARN as given, a name in this account and Region
        with the six characters Secrets Manager appends to the name in its ARN
        (https://docs.aws.amazon.com/secretsmanager/latest/userguide/auth-and-access_iam-policies.html)."""
        if secret.startswith("arn:"):
            return secret
        return f"arn:{self.partition}:secretsmanager:{self.region}:{self.account}:secret:{secret}-??????"

    def _training_role(self, settings: SageMakerFineTuneSettings) -> iam.Role:
        # SageMaker supplies both keys when a training job assumes its role:
        # https://docs.aws.amazon.com/sagemaker/latest/dg/security-confused-deputy-prevention.html

        role = iam.Role(
            self,
            "TrainingRole",
            description="Level 3 on SageMaker: assumed by SageMaker to run the kit's fine-tuning jobs",
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
        statements = [
            iam.PolicyStatement(sid="ReadData", actions=["s3:GetObject"], resources=[self.data.arn_for_objects("*")]),
            iam.PolicyStatement(
                sid="ListBuckets",
                actions=["s3:ListBucket"],
                resources=[self.data.bucket_arn, self.artifacts.bucket_arn],
            ),
            iam.PolicyStatement(
                sid="ReadCode",
                actions=["s3:GetObject"],
                resources=[self.artifacts.arn_for_objects(f"{pipeline.CODE_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="SyncCheckpoints",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[self.artifacts.arn_for_objects(f"{CHECKPOINTS_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="WriteModel",
                actions=["s3:PutObject"],
                resources=[self.artifacts.arn_for_objects(f"{pipeline.OUTPUT_PREFIX}*")],
            ),
            *training_role_statements(self),
        ]
        if settings.hub_token_secret:
            # GetSecretValue on this one secret; no kms:Decrypt: a secret under the AWS managed key
            # (aws/secretsmanager) needs none, and a customer managed key's own policy must admit the role
            # (https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html).
            # A name's "-??????" matches one character each: cdk-nag's IAM5 flags only "*".
            statements.append(
                iam.PolicyStatement(
                    sid="ReadHubToken",
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[self.hub_token_secret_arn(settings.hub_token_secret)],
                )
            )
        for statement in statements:
            role.add_to_policy(statement)
        # Resource types per action: the Service Authorization Reference (cloudwatch:PutMetricData: optional dataset;
        # ecr:GetAuthorizationToken: none), https://docs.aws.amazon.com/service-authorization/latest/reference/
        # list_amazoncloudwatch.html and list_amazonelasticcontainerregistry.html; PutMetricData names no dataset
        # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html).
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Fine-tuning jobs read any record in the dedicated data bucket (a run names its key; base models sit "
            "under models/), read the code and "
            "write checkpoints and the model under fixed prefixes of the artifacts bucket, log to SageMaker's own "
            "log groups and publish metrics under /aws/sagemaker/*; on '*': ecr:GetAuthorizationToken, which has "
            "no resource type, and cloudwatch:PutMetricData, whose one resource type (an optional CloudWatch "
            "dataset) its request cannot name, bounded by its cloudwatch:namespace condition.",
            applies_to=[
                "Resource::*",
                f"Resource::{arn_ref(self.data)}/*",
                *(
                    f"Resource::{arn_ref(self.artifacts)}/{p}*"
                    for p in (pipeline.CODE_PREFIX, CHECKPOINTS_PREFIX, pipeline.OUTPUT_PREFIX)
                ),
                f"Resource::arn:{self.partition}:logs:{self.region}:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs*",
            ],
        )
        return role

    def _import_role(self) -> iam.Role:
        # Trust and permissions after "Create a service role for model import":
        # https://docs.aws.amazon.com/bedrock/latest/userguide/model-import-iam-role.html
        role = iam.Role(
            self,
            "ImportRole",
            description="Level 3 on SageMaker: assumed by Bedrock model import jobs to read the merged model",
            assumed_by=iam.ServicePrincipal(
                "bedrock.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "ArnEquals": {
                        "aws:SourceArn": f"arn:{self.partition}:bedrock:{self.region}:{self.account}:model-import-job/*"
                    },
                },
            ),
        )
        merged = pipeline.merged_prefix(self.job_prefix)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadMergedModel",
                actions=["s3:GetObject"],
                resources=[self.artifacts.arn_for_objects(f"{merged}*")],
                conditions={"StringEquals": {"aws:ResourceAccount": self.account}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListMergedModel",
                actions=["s3:ListBucket"],
                resources=[self.artifacts.bucket_arn],
                conditions={
                    "StringEquals": {"aws:ResourceAccount": self.account},
                    "StringLike": {"s3:prefix": [merged, f"{merged}*"]},
                },
            )
        )
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Import jobs read the merged model of any of the kit's fine-tuning jobs (output/<job>/output/model/"
            "merged/); the job name is made per execution, so its part of the key is a wildcard.",
            applies_to=[f"Resource::{arn_ref(self.artifacts)}/{merged}*"],
        )
        return role

    def _validator(self, deployment: Deployment) -> PythonFunction:
        """The ValidateData function: reads the data bucket (lists it and gets objects), nothing else."""
        validator = PythonFunction(
            self,
            "Validator",
            deployment=deployment,
            handler="sagemaker_validate.handler.handler",
            description="Level 3 on SageMaker: check the training records before a training job starts",
            service_name="sagemaker-validate",
            timeout=VALIDATOR_TIMEOUT,
            memory_size=512,
            modules=[RECORD_RULES],
            environment={"IMPORTED_MODELS_QUOTA_CODE": IMPORTED_MODELS_QUOTA_CODE},
        )
        # A run may name any key or prefix of the data bucket (the training role reads it all, too).
        validator.role.add_to_policy(
            iam.PolicyStatement(sid="ReadData", actions=["s3:GetObject"], resources=[self.data.arn_for_objects("*")])
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(sid="ListData", actions=["s3:ListBucket"], resources=[self.data.bucket_arn])
        )
        # Before training, the room in Bedrock's imported-models quota: its applied value (on the quota's ARN, the
        # Service Authorization Reference's "quota" resource type), the AWS default and the imported models (no
        # resource types: "*").
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadImportedModelsQuota",
                actions=["servicequotas:GetServiceQuota"],
                resources=[
                    f"arn:{self.partition}:servicequotas:{self.region}:{self.account}:bedrock/"
                    f"{IMPORTED_MODELS_QUOTA_CODE}"
                ],
            )
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="CountImportedModels",
                actions=["servicequotas:GetAWSDefaultServiceQuota", "bedrock:ListImportedModels"],
                resources=["*"],
            )
        )
        suppress(
            validator.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The validator reads the records a run names: any key or prefix of the dedicated data bucket, as the "
            "training job does; X-Ray actions, GetAWSDefaultServiceQuota and ListImportedModels support no "
            "resource-level permissions.",
            applies_to=["Resource::*", f"Resource::{arn_ref(self.data)}/*"],
        )
        return validator

    def _state_machine(self, deployment: Deployment, settings: SageMakerFineTuneSettings) -> sfn.StateMachine:
        from workloads.finetune_sagemaker import sagemaker_job

        gpu = training_instance_has_gpu(settings.instance_type)
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": settings.max_runtime_hours * 3600}
        if settings.spot:
            stopping["MaxWaitTimeInSeconds"] = settings.max_wait_hours * 3600
        training_request: dict[str, Any] = {
            "RoleArn": self.training_role.role_arn,
            "AlgorithmSpecification": {
                "TrainingImage": sagemaker_job.image_uri(self.region, gpu=gpu),
                "TrainingInputMode": "File",
            },
            "HyperParameters": sagemaker_job.hyperparameters(
                submit_directory=f"s3://{self.artifacts.bucket_name}/{pipeline.CODE_PREFIX}sourcedir.tar.gz",
                region=self.region,
                instance_type=settings.instance_type,
                hub_token_secret=settings.hub_token_secret,
            ),
            # CompressionType NONE: the files land as they are, so the import can read <output>/model/merged/:
            # https://docs.aws.amazon.com/sagemaker/latest/dg/model-train-storage-uncompressed.html
            "OutputDataConfig": {
                "S3OutputPath": f"s3://{self.artifacts.bucket_name}/{pipeline.OUTPUT_PREFIX}",
                "CompressionType": "NONE",
            },
            "CheckpointLocalPath": sagemaker_job.CHECKPOINT_LOCAL_PATH,  # moved into CheckpointConfig
            "ResourceConfig": {
                "InstanceType": settings.instance_type,
                "InstanceCount": settings.instance_count,
                "VolumeSizeInGB": 50,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": settings.spot,
            # The stack's tags on the job (stage.run_tags; botocore sagemaker CreateTrainingJobRequest Tags); Step
            # Functions adds its own MANAGED_BY_AWS tag.
            "Tags": run_tags(self, "sagemaker", "CreateTrainingJob", "Tags"),
        }
        message = {
            "outcome": "failed",
            "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
            "error": sfn.JsonPath.object_at("$.error"),
        }
        succeeded = tasks.SnsPublish(
            self,
            "NotifySucceeded",
            topic=self.topic,
            subject=SUBJECT,
            message=sfn.TaskInput.from_object(
                {
                    "outcome": "succeeded",
                    "job": sfn.JsonPath.string_at("$.training.TrainingJobName"),
                    "baseModel": sfn.JsonPath.string_at("$.baseModel.id"),
                    "checkpoints": sfn.JsonPath.string_at("$.checkpoints.uri"),
                    # Present: ImportDone goes to the smoke test only then (pipeline.IMPORTED_MODEL_ARN).
                    "importedModelArn": sfn.JsonPath.string_at(pipeline.IMPORTED_MODEL_ARN),
                    # The name the run gave the model in CreateModelImportJob (its importedModelName), not read
                    # from GetModelImportJob's answer: botocore bedrock 2023-04-20 GetModelImportJobResponse
                    # requires no member, and an absent path here was a States.Runtime error no Catch takes.
                    "importedModelName.$": pipeline.run_name(self.job_prefix, "$$.Execution.Id"),
                    "smokeReply": sfn.JsonPath.object_at("$.smoke.reply"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        failed, invalid = (
            tasks.SnsPublish(
                self,
                state_id,
                topic=self.topic,
                subject=SUBJECT,
                message=sfn.TaskInput.from_object(message),
                result_path=sfn.JsonPath.DISCARD,
            )
            for state_id in ("NotifyFailed", "NotifyInvalidInput")
        )
        for notify in (succeeded, failed, invalid):
            notify.add_retry(
                errors=["States.ALL"],
                interval=pipeline.RETRY_INTERVAL,
                max_attempts=pipeline.RETRY_ATTEMPTS,
                backoff_rate=pipeline.RETRY_BACKOFF,
            )
        # A notification that still fails after its retries never decides the outcome: the run ends where it
        # would have ended (the Catch goes to the same state as Next, keeping the original $.error).
        end_after(succeeded, sfn.Succeed(self, "Done"))
        end_after(
            failed,
            reported_fail(
                self,
                "PipelineFailed",
                error="FineTuningFailed",
                summary="The SageMaker fine-tuning run failed",
                details=["$.error"],
            ),
        )
        end_after(invalid, input_rejected(self))
        max_polls = settings.import_max_minutes * 60 // pipeline.POLL_SECONDS
        start = pipeline.build(
            self,
            pipeline.PipelineTargets(
                job_prefix=self.job_prefix,
                data_bucket=self.data.bucket_name,
                artifacts_bucket=self.artifacts.bucket_name,
                training_request=training_request,
                import_role_arn=self.import_role.role_arn,
                default_base_model=settings.base_model,
                max_polls=max_polls,
                kit_options=deployment.kit_options,
                validator=self.validator.function,
                succeeded=succeeded,
                failed=failed,
                invalid=invalid,
            ),
        )
        logs = state_machine_log_group(self, "StateMachineLogs", deployment, deployment.resource_name("sft"))
        return sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=deployment.resource_name("sft"),
            definition_body=sfn.DefinitionBody.from_chainable(start),
            # The job's bound, the wait for the Region's one import slot and the import wait, plus the Bedrock path's
            # headroom for the retries on the way (the import's create and polls, the smoke test and the
            # notifications each retry for minutes).
            timeout=Duration.minutes(settings.job_hours * 60 + settings.import_max_minutes)
            .plus(pipeline.IMPORT_SLOT_WAIT)
            .plus(EXECUTION_HEADROOM),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )

    def _grant_pipeline(self) -> None:
        role = self.state_machine.role
        arn = f"arn:{self.partition}"
        statements = [
            *run_jobs_statements(self, self.job_prefix, self.training_role),
            iam.PolicyStatement(
                sid="PassImportRole",
                actions=["iam:PassRole"],
                resources=[self.import_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}},
            ),
            # FindTrainingData and FindBaseModel (ListObjectsV2 is authorized by s3:ListBucket).
            iam.PolicyStatement(sid="FindTrainingData", actions=["s3:ListBucket"], resources=[self.data.bucket_arn]),
            # FindCheckpoints: a resumed run's earlier checkpoints, listed under checkpoints/ only
            # (s3:prefix: https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html).
            iam.PolicyStatement(
                sid="FindCheckpoints",
                actions=["s3:ListBucket"],
                resources=[self.artifacts.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{CHECKPOINTS_PREFIX}*"]}},
            ),
            # CreateModelImportJob has no resource types in the Service Authorization Reference.
            iam.PolicyStatement(sid="ImportModels", actions=["bedrock:CreateModelImportJob"], resources=["*"]),
            # The import job's and the imported model's tags (JobTags, ImportedModelTags: the stack's, run_tags) are
            # authorized with bedrock:TagResource as on the Bedrock path (FineTuneStack): only the keys sent, not any
            # key (Service Authorization Reference: TagResource takes aws:TagKeys and aws:RequestTag/${TagKey}).
            iam.PolicyStatement(
                sid="TagImportsOnCreate",
                actions=["bedrock:TagResource"],
                resources=[
                    f"{arn}:bedrock:{self.region}:{self.account}:model-import-job/*",
                    f"{arn}:bedrock:{self.region}:{self.account}:imported-model/*",
                ],
                conditions={"ForAllValues:StringEquals": {"aws:TagKeys": sorted(stack_tags(self))}},
            ),
            iam.PolicyStatement(
                sid="WatchImports",
                actions=["bedrock:GetModelImportJob"],
                resources=[f"{arn}:bedrock:{self.region}:{self.account}:model-import-job/*"],
            ),
            iam.PolicyStatement(
                sid="SmokeTestAndCleanUp",
                actions=["bedrock:InvokeModel", "bedrock:DeleteImportedModel"],
                resources=[f"{arn}:bedrock:{self.region}:{self.account}:imported-model/*"],
            ),
            iam.PolicyStatement(
                sid="SmokeTestProject", actions=["bedrock:InvokeModel"], resources=[default_project_arn(self)]
            ),
        ]
        for statement in statements:
            role.add_to_principal_policy(statement)
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "Training job names are made per execution under the kit's prefix; import jobs and imported models get "
            "ids Bedrock generates, so their ARNs end in a wildcard; CreateModelImportJob, X-Ray and CloudWatch "
            "Logs delivery support no resource-level permissions; sagemaker:ListTags (read-only) is on '*' as the "
            "Step Functions .sync policy for SageMaker documents; the Step Functions Lambda integration grants the "
            "validator's '<arn>:*' (versions and aliases, of which it has none) beside its ARN.",
            applies_to=[
                "Resource::*",
                f"Resource::{arn_ref(self.validator.function)}:*",
                f"Resource::{arn}:sagemaker:{self.region}:<AWS::AccountId>:training-job/{self.job_prefix}*",
                f"Resource::{arn}:bedrock:{self.region}:<AWS::AccountId>:model-import-job/*",
                f"Resource::{arn}:bedrock:{self.region}:<AWS::AccountId>:imported-model/*",
            ],
        )
