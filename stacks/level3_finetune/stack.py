"""Level 3 — fine-tuning: validate the data, run a Bedrock customization job, deploy on request, report.

jobs/<name>.json uploaded ──► EventBridge ──► starter (Express: one execution per upload, named after it)
                                                 ▼
                                              Step Functions ◄── StartExecution (direct)
                                                 │ read request · merge defaults · name the job
                                                 ├─► validator function (streams the JSONL from S3, writes a report)
                                                 │     invalid ──► notify ──► fail
                                                 ├─► CreateModelCustomizationJob (own role; quota full: wait and retry)
                                                 ├─► wait / GetModelCustomizationJob … (bounded; timeout: stop job)
                                                 ├─► optional deployment: on-demand | Provisioned Throughput (torn down)
                                                 └─► SNS topic (+ e-mail)
    EventBridge "Model Customization Job State Change" (this kit's jobs) ──► the same SNS topic
    EventBridge "Step Functions Execution Status Change" (FAILED | TIMED_OUT | ABORTED) ──► teardown state machine
                  ──► stop the ended run's job, delete its throughput or deployment (found by name) ──► SNS
    an upload, status or job-state event EventBridge could not deliver ──► dead-letter queue ──► alarm ──► SNS
    cleanup custom resource ──(stack deletion, before the key and the state machine)──► stop executions and
                  jobs, delete deployments and throughputs; sandbox only: the custom models encrypted with the key
CloudFormation has no resource for a customization job, a custom model or Provisioned Throughput, so the
stack deploys the pipeline that creates them. Those models are encrypted with the stack's key: a sandbox
destroy deletes them before the key; the prod stage retains the key and the models (docs/level-3-finetune.md),
but stops what runs and deletes what serves them.

The units sit beside this module, in the diagram's order: names.py (prefixes and the names a run gives what it
creates), data.py (key, buckets, Bedrock's role), pipeline.py, starter.py, teardown.py and cleanup.py;
FineTuneStack below composes them and makes the grants between them.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnParameter, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.config import KitConfig
from stacks.level3_finetune.cleanup import CustomModelCleanup
from stacks.level3_finetune.data import CustomizationRole, FineTuneData
from stacks.level3_finetune.names import (
    DATASETS_PREFIX,
    JOB_TAG_KEY,
    JOBS_PREFIX,
    REPORTS_PREFIX,
    bedrock_arn,
    logical_id,
)
from stacks.level3_finetune.pipeline import VALIDATOR_TIMEOUT, FineTunePipeline
from stacks.level3_finetune.settings import region_problems
from stacks.level3_finetune.starter import UPLOAD_EVENT_MAX_AGE, UPLOAD_EVENT_RETRIES, UploadStarter
from stacks.level3_finetune.teardown import PipelineTeardown
from stacks.shared.facts import INVOCATION_LOGS_BUCKET_PARAMETER, INVOCATION_LOGS_PREFIX
from stacks.shared.model_access import default_project_arn, foundation_model_arn, model_invoke_statements
from stacks.shared.nag import suppress
from stacks.shared.notifications import notification_rule, rule_target_role
from stacks.shared.python_function import PythonFunction
from stacks.shared.regions import refuse
from stacks.shared.secure_bucket import emptied_after
from stacks.shared.settings import parse_model_id
from stacks.shared.stage import stack_tags, tag_stack

LEVEL = "3-finetune"


def _publishes_to_encrypted_topic(machine: sfn.StateMachine, key_arn: str) -> None:
    """A state machine that publishes to the level's topic needs its key too (the topic is encrypted with it)."""
    machine.add_to_role_policy(
        iam.PolicyStatement(
            sid="PublishToEncryptedTopic", actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key_arn]
        )
    )


class FineTuneStack(Stack):
    """``GenAiKit-3-FineTune``: data and output buckets, key, Bedrock role, validator, state machine, notifications."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope, construct_id, description="genai-spectrum-kit Level 3: fine-tuning on Amazon Bedrock", **kwargs
        )
        # True when the stack reads the invocation-logging stack's SSM parameter at deploy time (the app then
        # deploys that stack first when it builds both); a refused stack reads nothing.
        self.reads_invocation_logs_parameter = False
        if refuse(self, region_problems(config.finetune, self.region)):
            return  # the region cannot customize the base model or call the teacher: an empty stack with the errors
        deployment, ft = config.deployment, config.finetune
        tag_stack(self, deployment, LEVEL)

        data = FineTuneData(self, "FineTuneData", deployment=deployment, deploys_model=ft.deploy != "none")
        service_role = CustomizationRole(self, "Customization", data=data).role

        validator = PythonFunction(
            self,
            "Validator",
            deployment=deployment,
            handler="finetune_validate.handler.handler",
            description="Level 3: validate a training dataset before a customization job starts",
            service_name="finetune-validate",
            timeout=VALIDATOR_TIMEOUT,
            memory_size=512,
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadDatasets",
                actions=["s3:GetObject"],
                resources=[data.data.arn_for_objects(f"{DATASETS_PREFIX}*")],
            )
        )
        # Without ListBucket, S3 answers a missing key with 403 instead of 404 and DatasetNotFound never fires.
        validator.role.add_to_policy(data.see_missing_keys("ListDatasets", DATASETS_PREFIX))
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteReports",
                actions=["s3:PutObject"],
                resources=[data.data.arn_for_objects(f"{REPORTS_PREFIX}*")],
            )
        )
        validator.role.add_to_policy(
            iam.PolicyStatement(
                sid="UseKey", actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[data.key.key_arn]
            )
        )
        # A destroy stops the executions, not a validator invocation or a job already under way: their grants go
        # before the sandbox buckets are emptied.
        emptied_after(data.data, validator.role)
        emptied_after(data.output, service_role)
        suppress(
            validator.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The validator reads any dataset under the datasets prefix and writes reports under the reports "
            "prefix; X-Ray actions support no resource-level permissions.",
            applies_to=[
                "Resource::*",
                f"Resource::<{logical_id(data.data)}.Arn>/{DATASETS_PREFIX}*",
                f"Resource::<{logical_id(data.data)}.Arn>/{REPORTS_PREFIX}*",
            ],
        )

        topic = sns.Topic(
            self,
            "Notifications",
            display_name=deployment.resource_name("finetune"),
            master_key=data.key,
            enforce_ssl=True,
        )
        if deployment.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(deployment.alarm_email))

        # Reinforcement fine-tuning: the sample grader Bedrock calls with the generated responses. It reads
        # nothing and calls nothing; the customization role may invoke it (rft-access-security.html).
        grader = PythonFunction(
            self,
            "RewardFunction",
            deployment=deployment,
            handler="finetune_reward.handler.handler",
            description="Level 3: sample reward function for reinforcement fine-tuning (checkable answers)",
            service_name="finetune-reward",
            # Bedrock's docs advise raising the 3 s default for graders (reward-functions.html).
            timeout=Duration.minutes(1),
            memory_size=256,
        )
        suppress(
            grader.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "X-Ray actions support no resource-level permissions.",
            applies_to=["Resource::*"],
        )
        # https://docs.aws.amazon.com/bedrock/latest/userguide/rft-access-security.html
        service_role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeRewardFunction",
                actions=["lambda:InvokeFunction"],
                resources=[grader.function.function_arn],
            )
        )
        # Distillation: the job invokes the teacher with the service role; a cross-Region profile needs the profile
        # and the model in each of its Regions (https://docs.aws.amazon.com/bedrock/latest/userguide/prequisites-model-distillation.html).
        # The model table's active teachers are granted in this Region, so a run may name another one (a legacy
        # teacher only when configured; the status, not today's date, decides, so the template does not change
        # with the calendar); a profile only as configured.
        # The validator refuses any other teacher a run names (ft.invocable_teachers, its invocableTeacherModelIds).
        teacher = parse_model_id("ft_teacher_model_id", ft.teacher_model_id)
        invocable = (parse_model_id("ft_teacher_model_id", t) for t in ft.invocable_teachers)
        teachers = sorted({t.foundation_model_id for t in invocable})
        service_role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeTeachers",
                actions=["bedrock:InvokeModel"],
                resources=[
                    *(foundation_model_arn(self.partition, self.region, model) for model in teachers),
                    default_project_arn(self),
                ],
            )
        )
        if teacher.is_inference_profile:
            for statement in model_invoke_statements(self, teacher):
                service_role.add_to_policy(statement)
        logs_bucket: str | None = None
        self.reads_invocation_logs_parameter = ft.distillation_source == "invocation-logs"
        if self.reads_invocation_logs_parameter:
            # The invocation-logging stack's bucket, by its SSM parameter (resolved at deploy time).
            logs_bucket = ssm.StringParameter.value_for_string_parameter(self, INVOCATION_LOGS_BUCKET_PARAMETER)
            bucket_arn = f"arn:{self.partition}:s3:::{logs_bucket}"
            service_role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadInvocationLogs",
                    actions=["s3:GetObject"],
                    resources=[f"{bucket_arn}/{INVOCATION_LOGS_PREFIX}*"],
                )
            )
            [parameter] = [
                child
                for child in self.node.children
                if isinstance(child, CfnParameter) and child.default == INVOCATION_LOGS_BUCKET_PARAMETER
            ]
            suppress(
                service_role.node.find_child("DefaultPolicy"),
                "AwsSolutions-IAM5",
                "Bedrock reads the invocation records it wrote under the logging bucket's invocations prefix; "
                "their keys are chosen by Bedrock per day and request.",
                applies_to=[f"Resource::arn:aws:s3:::<{self.get_logical_id(parameter)}>/{INVOCATION_LOGS_PREFIX}*"],
            )
            service_role.add_to_policy(
                iam.PolicyStatement(
                    sid="ListInvocationLogs",
                    actions=["s3:ListBucket"],
                    resources=[bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{INVOCATION_LOGS_PREFIX}*"]}},
                )
            )
        pipeline = FineTunePipeline(
            self,
            "Pipeline",
            deployment=deployment,
            ft=ft,
            data=data,
            service_role=service_role,
            validator=validator,
            topic=topic,
            grader=grader,
            invocation_logs_bucket=logs_bucket,
        )
        machine = pipeline.state_machine
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="PassCustomizationRole",
                actions=["iam:PassRole"],
                resources=[service_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}},
            )
        )
        # Tags passed on create (the job's, the custom model's, the deployment's or the throughput's) are authorized
        # with bedrock:TagResource as well as the create action; only on what the pipeline creates, and only the keys
        # it sends: the execution's tag and the stack's tags (stage.run_tags), not any key (Service Authorization
        # Reference: TagResource takes aws:TagKeys and aws:RequestTag/${TagKey}).
        tagged = ["model-customization-job/*", "custom-model/*"]
        if ft.deploy != "none":
            tagged.append("custom-model-deployment/*" if ft.deploy == "on-demand" else "provisioned-model/*")
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="TagOnCreate",
                actions=["bedrock:TagResource"],
                resources=[bedrock_arn(self, resource) for resource in tagged],
                conditions={"ForAllValues:StringEquals": {"aws:TagKeys": sorted({JOB_TAG_KEY, *stack_tags(self)})}},
            )
        )
        # The key, and nothing more of it: Decrypt reads the job request file, GenerateDataKey + Decrypt publish to
        # the encrypted topic, and the job's custom model is encrypted with it (DescribeKey, CreateGrant)
        # https://docs.aws.amazon.com/bedrock/latest/userguide/encryption-custom-job.html
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="UseKey", actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[data.key.key_arn]
            )
        )
        # Bedrock makes these two calls for the role when it creates the custom model (CloudTrail shows CreateGrant
        # "invokedBy": "bedrock.amazonaws.com", import-model-monitor-encryption-keys.html), so they are allowed
        # only through Bedrock, as the Nova guide's key policy gives them
        # (https://docs.aws.amazon.com/nova/latest/userguide/customize-fine-tune-encrypt.html): the role cannot
        # grant the data key to anyone itself.
        machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="KeyForCustomModels",
                actions=["kms:DescribeKey", "kms:CreateGrant"],
                resources=[data.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"bedrock.{self.region}.amazonaws.com"}},
            )
        )
        suppress(
            machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The job, the custom model and (per ft_deploy) the deployment or throughput a run creates get ids Bedrock "
            "generates, so their ARNs end in a wildcard within this account and region; a run's base model is any "
            "foundation model the validator accepts; the job files are per run under the data bucket's jobs/ prefix; "
            "CDK's Lambda grant adds the validator's '<arn>:*' (versions and aliases, of which it has none); X-Ray "
            "and CloudWatch Logs delivery need '*'.",
            applies_to=[
                "Resource::*",
                # what the pipeline creates and tags, the deployment mode's own type among them (``tagged``)
                *(f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:{resource}" for resource in tagged),
                f"Resource::arn:aws:bedrock:{self.region}::foundation-model/*",
                f"Resource::<{logical_id(data.data)}.Arn>/{JOBS_PREFIX}*",
                f"Resource::<{logical_id(validator.function)}.Arn>:*",
            ],
        )

        # Timeout, abort, or a failure off the pipeline's own paths: the teardown deletes what the run created.
        teardown = PipelineTeardown(self, "Teardown", deployment=deployment, pipeline=machine, topic=topic)
        _publishes_to_encrypted_topic(teardown.state_machine, data.key.key_arn)
        suppress(
            teardown.state_machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The ended execution's job, deployment and throughput have ids Bedrock generates, so their ARNs end in a "
            "wildcard within this account and region; X-Ray and CloudWatch Logs delivery need '*'.",
            applies_to=[
                "Resource::*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:model-customization-job/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:custom-model-deployment/*",
                f"Resource::arn:aws:bedrock:{self.region}:<AWS::AccountId>:provisioned-model/*",
            ],
        )

        # Destroy, every stage: the pipeline's executions and jobs are stopped and what serves the kit's models is
        # deleted first (deleting the state machine would leave a throughput held in its Wait state billing);
        # the sandbox then deletes the models before the key, prod retains the key (stage.removal_policy) and
        # the models, removed by hand as docs/level-3-finetune.md says.
        self.cleanup = CustomModelCleanup(
            self, "CustomModelCleanup", deployment=deployment, key=data.key, machine=machine
        )

        # Start: a job request uploaded under jobs/ (direct StartExecution works too). S3 delivers its events at least
        # once, so the rule starts the pipeline through the starter, which names the execution after the upload: a
        # redelivered event finds its run instead of paying for a second job (starter.py).
        starter = UploadStarter(
            self,
            "UploadStarter",
            deployment=deployment,
            pipeline=machine,
            topic=topic,
            dead_letters=teardown.backstop.dead_letters,
        )
        _publishes_to_encrypted_topic(starter.state_machine, data.key.key_arn)
        suppress(
            starter.state_machine.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "X-Ray and CloudWatch Logs delivery support no resource-level permissions; the starter may start only "
            "the pipeline, publish only to the topic and send only to the dead-letter queue.",
            applies_to=["Resource::*"],
        )
        uploaded = deployment.resource_name("ft-job-uploaded")
        upload_rule = events.Rule(
            self,
            "JobRequestUploaded",
            rule_name=uploaded,
            description="Level 3: a job request JSON under jobs/ starts the fine-tuning pipeline",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [data.data.bucket_name]},
                    "object": {"key": [{"wildcard": f"{JOBS_PREFIX}*.json"}]},
                },
            ),
            # An event EventBridge could not deliver is dropped unless the target has a dead-letter queue
            # (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html): it lands in the
            # teardown's alarmed queue, whose alarm names this case. CDK adds the queue policy that lets this rule
            # send (events.amazonaws.com, aws:SourceArn); SSE-SQS needs no key policy for it.
            targets=[
                targets.SfnStateMachine(
                    starter.state_machine,
                    role=rule_target_role(self, "JobRequestUploadedDelivery", uploaded, "to start the pipeline"),
                    dead_letter_queue=teardown.backstop.dead_letters,
                    max_event_age=UPLOAD_EVENT_MAX_AGE,
                    retry_attempts=UPLOAD_EVENT_RETRIES,
                )
            ],
        )
        # On destroy, the rule and the starter go before the cleanup runs (a dependent is deleted first:
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-dependson.html): otherwise an
        # upload, or an EventBridge redelivery, could start a run after the cleanup listed the running ones, and
        # its customization job would bill unseen.
        for trigger in (upload_rule, starter.state_machine):
            trigger.node.add_dependency(self.cleanup.resource)
        # The documented sample event carries the status as detail.jobStatus (not detail.status):
        # https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-eventbridge-how-it-works.html
        # A state change EventBridge could not publish lands in the teardown's alarmed queue too (its RULE_ARN
        # attribute names this rule): no second queue and alarm, no extra idle cost.
        notification_rule(
            self,
            "CustomizationJobStateChange",
            deployment,
            topic=topic,
            dead_letter_queue=teardown.backstop.dead_letters,
            name="ft-job-state",
            description="Level 3: Bedrock customization job state changes of this kit's jobs",
            event_pattern=events.EventPattern(
                source=["aws.bedrock"],
                detail_type=["Model Customization Job State Change"],
                detail={"jobName": [{"prefix": deployment.resource_name("ft")}]},
            ),
            message=events.RuleTargetInput.from_text(
                f"Bedrock customization job {events.EventField.from_path('$.detail.jobName')} changed "
                f"state: {events.EventField.from_path('$.detail.jobStatus')}"
            ),
        )

        self.data, self.service_role, self.validator, self.topic, self.pipeline = (
            data,
            service_role,
            validator,
            topic,
            pipeline,
        )
        self.teardown, self.starter = teardown, starter
        CfnOutput(self, "DataBucketName", value=data.data.bucket_name, description="datasets/, jobs/ and reports/")
        CfnOutput(self, "OutputBucketName", value=data.output.bucket_name)
        CfnOutput(self, "StateMachineArn", value=machine.state_machine_arn)
        CfnOutput(self, "TopicArn", value=topic.topic_arn)
        CfnOutput(self, "BaseModelId", value=ft.base_model_id)
        CfnOutput(self, "CustomizationRoleArn", value=service_role.role_arn)
        CfnOutput(self, "RewardFunctionArn", value=grader.function.function_arn, description="The sample RFT grader")
        CfnOutput(
            self,
            "KeyArn",
            value=data.key.key_arn,
            description="Encrypts the data and the custom models; retained by a prod destroy (schedule it by hand)",
        )
