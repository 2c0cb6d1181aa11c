"""The custom resource that stops the knowledge base's ingestion jobs when ``GenAiKit-2-Rag`` is destroyed.

stack deletion ──► the ingest schedules and function (they depend on this resource: deleted first, so no run starts
    a job) ──► Custom::RagIngestionCleanup ──► stop the data source's active jobs, wait until none is active, look
    again once an ingest run in flight has had its timeout ──► CloudFormation deletes the data source and the rest

A job still running when CloudFormation deletes the data source can fail the destroy: the data source's delete
handler only calls DeleteDataSource (AWS::Bedrock::DataSource registry schema: bedrock:GetDataSource,
bedrock:DeleteDataSource), which declares ConflictException (botocore bedrock-agent 2023-06-05). The ingest function
starts a full sync after every deploy, so a destroy soon after one meets a running job. Every stage: nothing is
deleted.
"""

from __future__ import annotations

from aws_cdk import CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.shared.cleanup_grants import read_own_stack_statement
from stacks.shared.deployment import Deployment
from stacks.shared.python_function import PythonFunction

# Stopping a job and the last look after an ingest run's timeout take minutes; the function's own deadline answers
# 90 s before its timeout, and CloudFormation stops waiting after CLEANUP_SERVICE_TIMEOUT instead of an hour
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html).
CLEANUP_TIMEOUT = Duration.minutes(10)
CLEANUP_SERVICE_TIMEOUT = Duration.minutes(15)


class IngestionCleanup(Construct):
    """On stack deletion, stop the data source's ingestion jobs (``lambdas/level2_rag/rag_cleanup``)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        knowledge_base_arn: str,
        knowledge_base_id: str,
        data_source_id: str,
        ingest_function: PythonFunction,
        ingest_timeout: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.function = PythonFunction(
            self,
            "Function",
            deployment=deployment,
            handler="rag_cleanup.handler.handler",
            description="Level 2 custom resource: on stack deletion, stop the knowledge base's ingestion jobs",
            service_name="rag-cleanup",
            timeout=CLEANUP_TIMEOUT,
            memory_size=256,
            modules=["rag_ingest.names"],  # the ingestion-job statuses that still run
        )
        role = self.function.role
        # Service Authorization Reference: ListIngestionJobs and StopIngestionJob take the knowledge-base resource.
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StopIngestion",
                actions=["bedrock:ListIngestionJobs", "bedrock:StopIngestionJob"],
                resources=[knowledge_base_arn],
            )
        )
        role.add_to_policy(read_own_stack_statement(stack))
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.function.function.function_arn,
            resource_type="Custom::RagIngestionCleanup",
            service_timeout=CLEANUP_SERVICE_TIMEOUT,
            properties={
                "KnowledgeBaseId": knowledge_base_id,
                "DataSourceId": data_source_id,
                "IngestTimeoutSeconds": str(int(ingest_timeout.to_seconds())),
            },
        )
        # Deleted before its own permissions; the ingest function (and with it its schedules, which target it) is
        # deleted before this resource, so no run starts a job while it stops them.
        self.resource.node.add_dependency(role)
        ingest_function.node.add_dependency(self.resource)
