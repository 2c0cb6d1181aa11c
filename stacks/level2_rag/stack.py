"""Level 2 — RAG: a Bedrock Knowledge Base over your documents, ingestion that keeps each change 7 days, cited answers.

documents bucket (S3, EventBridge on) ──► rule: Object Created/Deleted ──► SQS queue ──(5 tries)──► DLQ ─► alarm
                                                  (oldest change waiting a day ─► alarm) ▲
schedule (every N min: sync; hourly: reconcile) ──► ingest function ─────────┘ drains only when no job runs
                                                         │ StartIngestionJob (one job covers every pending change)
                                                         ▼
Knowledge Base (embedding model) ◄── data source (S3 prefix, chunking) ── vectors: S3 Vectors | OpenSearch Serverless
      ▲
caller (SigV4) ──► API Gateway REST ──► query function ──► RetrieveAndGenerate (+ guardrail) / Retrieve
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import CfnOutput, CustomResource, Duration, Fn, IStableStringProducer, Lazy, Names, Stack
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_opensearchserverless as aoss
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_s3vectors as s3vectors
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

from common.metric_names import KNOWLEDGE_BASE_DIMENSION
from rag_api.filters import OSS_METADATA_FIELD, OSS_TEXT_FIELD, OSS_VECTOR_FIELD, S3_VECTORS_NON_FILTERABLE_KEYS
from rag_ingest.ingestion import RECONCILE_EVERY
from rag_ingest.names import DOCUMENTS_FAILED, INGESTION_JOB_FAILED, OLDEST_CHANGE_AGE
from rag_ingest.settings import REVISION_LENGTH
from stacks.config import KitConfig
from stacks.level2_rag.cleanup import IngestionCleanup
from stacks.level2_rag.names import DOCUMENTS_PREFIX_OUTPUT, WHOLE_BUCKET
from stacks.level2_rag.settings import RagSettings
from stacks.shared.alarms import (
    FIVE_MINUTES,
    QUEUE_METRIC_MISSING_DATA,
    AlarmTopic,
    dead_letter_queue,
)
from stacks.shared.deployment import Deployment
from stacks.shared.guardrail import KitGuardrail
from stacks.shared.model_access import (
    default_project_arn,
    foundation_model_arn,
    grant_invoke_model,
    inference_profile_arn,
)
from stacks.shared.nag import arn_ref, suppress, suppress_bucket_deployment
from stacks.shared.python_function import PythonFunction
from stacks.shared.regions import refuse
from stacks.shared.rest_api import API_FUNCTION_TIMEOUT, JSON_OBJECT_BODY, ApiThrottle, RestApi
from stacks.shared.secure_bucket import SecureBucket
from stacks.shared.settings import ModelRef, guardrail_region_problems, profile_region_problems
from stacks.shared.stage import bucket_deployment_logs, tag_stack

LEVEL = "2-rag"
# Each function's Powertools service (POWERTOOLS_SERVICE_NAME, which its logger and metrics read): the service
# field of its log records and the dimension of the metrics its alarms watch.
QUERY_SERVICE_NAME = "rag-api"
INGEST_SERVICE_NAME = "rag-ingest"
SAMPLE_CORPUS_DIR = Path(__file__).resolve().parents[2] / "samples" / "rag-corpus"
INDEX_NAME = "kit-kb-index"  # the stem of the vector index name; a digest of its settings follows
MAX_RECEIVE_COUNT = 5  # a message that cannot be processed five times goes to the dead-letter queue
# SQS deletes a message left in a queue longer than its retention period, without dead-lettering it
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_DeleteMessage.html), so a change
# that waits out the retention (the function cannot run, or finds a job running for days) is lost; the stale-change
# alarm fires after STALE_CHANGE_AGE, leaving CHANGES_DAYS_TO_ACT days before SQS deletes the change.
# SQS also expires a dead letter by its ORIGINAL enqueue time, so AWS advises a dead-letter queue that keeps messages
# longer than its source queue
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/setting-up-dead-letter-queue-retention.html).
# The change queue keeps 7 days, half the dead-letter queue's 14 (SQS's longest retention, 1,209,600 s:
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html), so a dead letter
# stays readable at least 7 days however long it waited before (poison reaches it after MAX_RECEIVE_COUNT receiving
# runs, minutes to hours; an event EventBridge could not deliver is sent to it new, 14 days).
CHANGES_RETENTION = Duration.days(7)
# A change normally waits one sync interval (at most 60 min) plus the ingestion job running before it.
STALE_CHANGE_AGE = Duration.days(1)
CHANGES_DAYS_TO_ACT = CHANGES_RETENTION.to_days() - STALE_CHANGE_AGE.to_days()
INGEST_TIMEOUT = Duration.minutes(2)
# The OpenSearch Serverless wait function answers CloudFormation before this (its own deadline guard).
WAIT_TIMEOUT = Duration.minutes(10)
# CloudFormation waits this long for the wait function's answer instead of its default hour
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-cloudformation-customresource.html
# ServiceTimeout), so a function that never answers (throttled, broken) holds a create for minutes, not an hour
# while the new collection bills.
WAIT_SERVICE_TIMEOUT = WAIT_TIMEOUT.plus(Duration.minutes(2))

# The metadata Bedrock writes with each vector; it must not be filterable in S3 Vectors (2 KB filter limit). One copy,
# in the query function's code, which refuses a filter on these keys.
BEDROCK_NON_FILTERABLE_KEYS = list(S3_VECTORS_NON_FILTERABLE_KEYS)


def settings_digest(settings: Any, length: int = 8) -> str:
    """A short, stable hex digest of (resolved) settings: equal settings give equal digests."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


@jsii.implements(events.IRuleTarget)
class _SendOnlyQueueTarget:
    """A rule target that lets the rule send to the queue and nothing else. CDK's ``targets.SqsQueue`` grants
    events.amazonaws.com GetQueueAttributes and GetQueueUrl as well; EventBridge needs only sqs:SendMessage on a
    queue target, from the rule named in aws:SourceArn
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions), and
    the same on the rule's dead-letter queue
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html). The dead-letter statement keeps
    the id CDK gives it, so only the target queue's statement changes."""

    def __init__(self, queue: sqs.IQueue, *, dead_letter_queue: sqs.IQueue) -> None:
        self._queue = queue
        self._dead_letters = dead_letter_queue

    def bind(self, rule: IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        rule_arn = rule.rule_ref.rule_arn
        self._queue.add_to_resource_policy(_send_from(rule_arn, self._queue))
        self._dead_letters.add_to_resource_policy(
            _send_from(rule_arn, self._dead_letters, sid=f"AllowEventRule{Names.node_unique_id(rule.node)}")
        )
        return events.RuleTargetConfig(
            arn=self._queue.queue_arn,
            dead_letter_config=events.CfnRule.DeadLetterConfigProperty(arn=self._dead_letters.queue_arn),
        )


def _send_from(rule_arn: str, queue: sqs.IQueue, *, sid: str | None = None) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        sid=sid,
        actions=["sqs:SendMessage"],
        principals=[iam.ServicePrincipal("events.amazonaws.com")],
        resources=[queue.queue_arn],
        conditions={"ArnEquals": {"aws:SourceArn": rule_arn}},
    )


@jsii.implements(IStableStringProducer)
class _DigestName:
    def __init__(self, scope: Construct, stem: str, settings: Callable[[], Any], length: int) -> None:
        self._scope, self._stem, self._settings, self._length = scope, stem, settings, length

    def produce(self) -> str:
        return self._stem + settings_digest(Stack.of(self._scope).resolve(self._settings()), self._length)


def name_following(
    scope: Construct, stem: str, settings: Callable[[], Any], *, max_length: int, length: int = 8
) -> str:
    """A physical name ``<stem><digest>`` whose digest follows the resource's create-only settings.

    CloudFormation replaces a resource when a create-only property changes, and it creates the replacement
    BEFORE it deletes the old one, so a replacement that kept a fixed name would collide with its
    predecessor. A name that embeds a digest of those settings changes exactly when they do. ``settings``
    is called at synthesis (after tags are applied), so it may read the resource's own properties.
    """
    if len(stem) + length > max_length:
        raise ValueError(f"{stem!r} plus a {length}-character digest is longer than {max_length} characters")
    return Lazy.string(_DigestName(scope, stem, settings, length))


class DocumentStore(Construct):
    """The documents bucket (versioned, EventBridge on) and, in a sandbox, the kit's sample corpus."""

    def __init__(self, scope: Construct, construct_id: str, *, deployment: Deployment, rag: RagSettings) -> None:
        super().__init__(scope, construct_id)
        self.prefix = rag.documents_prefix
        store = SecureBucket(self, "Documents", deployment=deployment, versioned=True, event_bridge_enabled=True)
        self.bucket = store.bucket
        self.sample_corpus: s3deploy.BucketDeployment | None = None
        if rag.sample_corpus:
            corpus = self.sample_corpus = s3deploy.BucketDeployment(
                self,
                "SampleCorpus",
                sources=[s3deploy.Source.asset(str(SAMPLE_CORPUS_DIR))],
                destination_bucket=self.bucket,
                destination_key_prefix=self.prefix or None,
                # Neither may touch the user's documents beside the samples: no pruning on update, and no
                # `aws s3 rm <prefix> --recursive`, which CDK's handler runs without retention when the deployment
                # is removed (rag_sample_corpus off) or its prefix changes (rag_documents_prefix). Both changes
                # leave the samples in place instead (docs/level-2-rag.md says how to remove them).
                prune=False,
                retain_on_delete=True,
                memory_limit=256,
                log_group=bucket_deployment_logs(self, deployment),
            )
            suppress_bucket_deployment(corpus, self.bucket)

    @property
    def objects_arn(self) -> str:
        return self.bucket.arn_for_objects(f"{self.prefix}*")


class S3VectorStore(Construct):
    """An S3 vector bucket and index: no idle cost, pay per GB stored and per query."""

    def __init__(
        self, scope: Construct, construct_id: str, *, deployment: Deployment, dimensions: int, vectors_from: Any
    ) -> None:
        super().__init__(scope, construct_id)
        self.vector_bucket = s3vectors.CfnVectorBucket(
            self, "VectorBucket", vector_bucket_name=deployment.resource_name("vectors")
        )
        # Every setting of the index is create-only (VectorBucketName, DataType, Dimension, DistanceMetric,
        # MetadataConfiguration): its name follows them, so a new dimension creates a new index next to the old.
        # It also follows what the vectors are made from (``vectors_from``), see KnowledgeBase.
        self.index_name = name_following(
            self,
            f"{INDEX_NAME}-",
            lambda: [
                self.vector_bucket.vector_bucket_name,
                self.index.data_type,
                self.index.dimension,
                self.index.distance_metric,
                self.index.metadata_configuration,
                vectors_from,
            ],
            max_length=63,  # S3 Vectors index names: 3-63 characters
        )
        self.index = s3vectors.CfnIndex(
            self,
            "Index",
            vector_bucket_arn=self.vector_bucket.attr_vector_bucket_arn,
            index_name=self.index_name,
            data_type="float32",
            dimension=dimensions,
            distance_metric="cosine",
            metadata_configuration=s3vectors.CfnIndex.MetadataConfigurationProperty(
                non_filterable_metadata_keys=BEDROCK_NON_FILTERABLE_KEYS
            ),
        )
        self.index.node.add_dependency(self.vector_bucket)
        self.ready: Construct = self.index  # what the knowledge base waits for
        # Names that identify where the vectors are (a knowledge base's storage is create-only).
        self.identity = {"bucket": self.vector_bucket.vector_bucket_name, "index": self.index_name}

    def storage_configuration(self) -> bedrock.CfnKnowledgeBase.StorageConfigurationProperty:
        return bedrock.CfnKnowledgeBase.StorageConfigurationProperty(
            type="S3_VECTORS",
            s3_vectors_configuration=bedrock.CfnKnowledgeBase.S3VectorsConfigurationProperty(
                index_arn=self.index.attr_index_arn
            ),
        )

    def grant_knowledge_base(self, role: iam.Role) -> None:
        # DeleteVectors is needed too: without it a re-sync that removes documents fails.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="UseVectorIndex",
                actions=[
                    "s3vectors:GetIndex",
                    "s3vectors:QueryVectors",
                    "s3vectors:PutVectors",
                    "s3vectors:GetVectors",
                    "s3vectors:ListVectors",
                    "s3vectors:DeleteVectors",
                ],
                resources=[self.index.attr_index_arn],
            )
        )


class OpenSearchVectorStore(Construct):
    """An OpenSearch Serverless VECTORSEARCH collection with its policies and a native vector index.

    Ordered for a clean first deploy: encryption and network policies before the collection; the data access
    policy, then a wait until it is in effect, before the index; the index, then a wait until it answers
    searches, before the knowledge base. OpenSearch Serverless applies a data access policy some time after
    it is created, and makes a new index searchable some time after it is acknowledged; without the waits the
    index creation or the knowledge base's validation of the index can be refused (403 or 404).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        dimensions: int,
        standby_replicas: bool,
        kb_role: iam.Role,
        vectors_from: Any,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # The policies name the collection by a prefix, so they cover a replacement collection too.
        stem = deployment.resource_name("kb")
        collections = f"collection/{stem}*"
        encryption = aoss.CfnSecurityPolicy(
            self,
            "Encryption",
            name=f"{stem}-enc"[:32],
            type="encryption",
            policy=stack.to_json_string(
                {"Rules": [{"ResourceType": "collection", "Resource": [collections]}], "AWSOwnedKey": True}
            ),
        )
        network = aoss.CfnSecurityPolicy(
            self,
            "Network",
            name=f"{stem}-net"[:32],
            type="network",
            # Every data-plane request still needs SigV4 and the data access policy below.
            policy=stack.to_json_string(
                [{"Rules": [{"ResourceType": "collection", "Resource": [collections]}], "AllowFromPublic": True}]
            ),
        )
        # Type, StandbyReplicas and Tags are create-only: the name follows them. Names may have 3-64 characters
        # (AWS::OpenSearchServerless::Collection); the kit keeps them to 32 with a 4-character digest, stricter than
        # needed (the knowledge base's CollectionArn carries the collection's id, not its name), and unchanged so
        # that no deployed collection is renamed.
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-bedrock-knowledgebase-opensearchserverlessconfiguration.html
        self.collection_name = name_following(
            self,
            stem,
            lambda: [self.collection.type, self.collection.standby_replicas, self.collection.tags.render_tags()],
            max_length=32,
            length=4,
        )
        self.collection = aoss.CfnCollection(
            self,
            "Collection",
            name=self.collection_name,
            type="VECTORSEARCH",
            standby_replicas="ENABLED" if standby_replicas else "DISABLED",
            description="Vector store of the Level 2 knowledge base",
        )
        self.collection.node.add_dependency(encryption)
        self.collection.node.add_dependency(network)

        # CollectionEndpoint is create-only; the mapping is not, but OpenSearch cannot change the dimension of an
        # existing vector field. The index name follows the collection, the whole mapping and what the vectors
        # are made from (see KnowledgeBase), so any of these changes creates a new index.
        self.index_name = name_following(
            self,
            f"{INDEX_NAME}-",
            lambda: [self.collection_name, self.index.mappings, self.index.settings, vectors_from],
            max_length=80,  # OpenSearch index names: at most 255 bytes; kept short
        )
        self.waiter = PythonFunction(
            self,
            "WaitFunction",
            deployment=deployment,
            handler="rag_aoss_wait.handler.handler",
            description="Custom resource: wait until OpenSearch Serverless applies the data access policy / index",
            service_name="rag-aoss-wait",
            timeout=WAIT_TIMEOUT,
            memory_size=256,
        )
        # Data-plane calls need aoss:APIAccessAll in IAM as well as a data access policy rule.
        # https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-data-access.html
        self.waiter.role.add_to_policy(
            iam.PolicyStatement(
                sid="ProbeCollection", actions=["aoss:APIAccessAll"], resources=[self.collection.attr_arn]
            )
        )

        # CloudFormation creates the index as the bootstrap's execution role, so the policy must admit it.
        deployer = Fn.sub(stack.synthesizer.cloud_formation_execution_role_arn)  # type: ignore[attr-defined]
        indexes = f"index/{stem}*/*"
        access = aoss.CfnAccessPolicy(
            self,
            "DataAccess",
            name=f"{stem}-data"[:32],
            type="data",
            policy=stack.to_json_string(
                [
                    {
                        "Rules": [
                            {
                                "ResourceType": "collection",
                                "Resource": [collections],
                                "Permission": ["aoss:DescribeCollectionItems"],
                            },
                            {
                                "ResourceType": "index",
                                "Resource": [indexes],
                                "Permission": [
                                    "aoss:CreateIndex",
                                    "aoss:DescribeIndex",
                                    "aoss:ReadDocument",
                                    "aoss:WriteDocument",
                                    "aoss:UpdateIndex",
                                    "aoss:DeleteIndex",
                                ],
                            },
                        ],
                        "Principal": [kb_role.role_arn, deployer],
                    },
                    {
                        # The wait function only looks: HEAD <index> and a search of the index.
                        # https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-genref.html
                        "Rules": [
                            {
                                "ResourceType": "index",
                                "Resource": [indexes],
                                "Permission": ["aoss:DescribeIndex", "aoss:ReadDocument"],
                            },
                        ],
                        "Principal": [self.waiter.role.role_arn],
                    },
                ]
            ),
        )
        # Step 1: the data access policy is in effect (the wait function is admitted).
        self.access_ready = self._wait(
            "AccessPolicyInEffect", "access", after=[access, self.collection, self.waiter.role]
        )
        self.index = aoss.CfnIndex(
            self,
            "Index",
            collection_endpoint=self.collection.attr_collection_endpoint,
            index_name=self.index_name,
            settings=aoss.CfnIndex.IndexSettingsProperty(index=aoss.CfnIndex.IndexProperty(knn=True)),
            mappings=aoss.CfnIndex.MappingsProperty(
                properties={
                    OSS_VECTOR_FIELD: aoss.CfnIndex.PropertyMappingProperty(
                        type="knn_vector",
                        dimension=dimensions,
                        method=aoss.CfnIndex.MethodProperty(name="hnsw", engine="faiss", space_type="l2"),
                    ),
                    OSS_TEXT_FIELD: aoss.CfnIndex.PropertyMappingProperty(type="text", index=True),
                    OSS_METADATA_FIELD: aoss.CfnIndex.PropertyMappingProperty(type="text", index=False),
                }
            ),
        )
        # Step 2: the index, created once the policy is in effect.
        self.index.node.add_dependency(self.access_ready)
        # Step 3: the index answers searches; the knowledge base waits for this.
        self.ready: Construct = self._wait("IndexSearchable", "index", after=[self.index])
        self.identity = {"collection": self.collection_name, "index": self.index_name}

    def _wait(self, construct_id: str, check: str, *, after: list[Construct]) -> CustomResource:
        wait = CustomResource(
            self,
            construct_id,
            service_token=self.waiter.function.function_arn,
            resource_type="Custom::OpenSearchServerlessWait",
            service_timeout=WAIT_SERVICE_TIMEOUT,
            properties={
                "Check": check,
                "CollectionEndpoint": self.collection.attr_collection_endpoint,
                "IndexName": self.index_name,
            },
        )
        for dependency in after:
            wait.node.add_dependency(dependency)
        return wait

    def storage_configuration(self) -> bedrock.CfnKnowledgeBase.StorageConfigurationProperty:
        return bedrock.CfnKnowledgeBase.StorageConfigurationProperty(
            type="OPENSEARCH_SERVERLESS",
            opensearch_serverless_configuration=bedrock.CfnKnowledgeBase.OpenSearchServerlessConfigurationProperty(
                collection_arn=self.collection.attr_arn,
                vector_index_name=self.index_name,
                field_mapping=bedrock.CfnKnowledgeBase.OpenSearchServerlessFieldMappingProperty(
                    vector_field=OSS_VECTOR_FIELD, text_field=OSS_TEXT_FIELD, metadata_field=OSS_METADATA_FIELD
                ),
            ),
        )

    def grant_knowledge_base(self, role: iam.Role) -> None:
        role.add_to_policy(
            iam.PolicyStatement(
                sid="UseCollection", actions=["aoss:APIAccessAll"], resources=[self.collection.attr_arn]
            )
        )


def _chunking(rag: RagSettings) -> bedrock.CfnDataSource.ChunkingConfigurationProperty:
    c = rag.chunking
    if c.strategy == "fixed":
        return bedrock.CfnDataSource.ChunkingConfigurationProperty(
            chunking_strategy="FIXED_SIZE",
            fixed_size_chunking_configuration=bedrock.CfnDataSource.FixedSizeChunkingConfigurationProperty(
                max_tokens=c.max_tokens, overlap_percentage=c.overlap_percent
            ),
        )
    if c.strategy == "hierarchical":
        return bedrock.CfnDataSource.ChunkingConfigurationProperty(
            chunking_strategy="HIERARCHICAL",
            hierarchical_chunking_configuration=bedrock.CfnDataSource.HierarchicalChunkingConfigurationProperty(
                level_configurations=[
                    bedrock.CfnDataSource.HierarchicalChunkingLevelConfigurationProperty(
                        max_tokens=c.parent_max_tokens
                    ),
                    bedrock.CfnDataSource.HierarchicalChunkingLevelConfigurationProperty(max_tokens=c.child_max_tokens),
                ],
                overlap_tokens=c.overlap_tokens,
            ),
        )
    if c.strategy == "semantic":
        return bedrock.CfnDataSource.ChunkingConfigurationProperty(
            chunking_strategy="SEMANTIC",
            semantic_chunking_configuration=bedrock.CfnDataSource.SemanticChunkingConfigurationProperty(
                max_tokens=c.max_tokens,
                buffer_size=c.buffer_size,
                breakpoint_percentile_threshold=c.breakpoint_percentile,
            ),
        )
    return bedrock.CfnDataSource.ChunkingConfigurationProperty(chunking_strategy="NONE")


class KnowledgeBase(Construct):
    """The knowledge base, its service role (policies first) and the S3 data source."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        rag: RagSettings,
        documents: DocumentStore,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        any_kb = f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:knowledge-base/*"
        self.role = iam.Role(
            self,
            "Role",
            description="Level 2 knowledge base service role",
            assumed_by=iam.ServicePrincipal(
                "bedrock.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": any_kb},
                },
            ),
        )
        self.embedding_model_arn = foundation_model_arn(stack.partition, stack.region, rag.embedding_model_id)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="Embed",
                actions=["bedrock:InvokeModel"],
                resources=[self.embedding_model_arn, default_project_arn(stack)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="ListDocuments", actions=["s3:ListBucket"], resources=[documents.bucket.bucket_arn])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="ReadDocuments", actions=["s3:GetObject"], resources=[documents.objects_arn])
        )
        suppress(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "The knowledge base reads every document under the documents prefix; object keys are not known in advance.",
            applies_to=[f"Resource::{arn_ref(documents.bucket)}/{documents.prefix}*"],
        )

        # What the vectors are made from. Vectors of two embedding models or two chunkings must not share an index,
        # and a replaced data source leaves its vectors behind (DataDeletionPolicy RETAIN): a change of either
        # gives the knowledge base a new, empty index, which the next ingestion job fills.
        vectors_from = {"embedding_model": rag.embedding_model_id, "chunking": _chunking(rag)}
        # One construct id per store: a logical id never changes its resource type between the two variants
        # (CloudFormation refuses that), so switching stores deletes one set of resources and creates the other.
        self.vector_store: S3VectorStore | OpenSearchVectorStore
        if rag.vector_store == "s3vectors":
            self.vector_store = S3VectorStore(
                self,
                "Vectors",
                deployment=deployment,
                dimensions=rag.embedding_dimensions,
                vectors_from=vectors_from,
            )
        else:
            self.vector_store = OpenSearchVectorStore(
                self,
                "OpenSearch",
                deployment=deployment,
                dimensions=rag.embedding_dimensions,
                standby_replicas=rag.opensearch_standby_replicas,
                kb_role=self.role,
                vectors_from=vectors_from,
            )
        self.vector_store.grant_knowledge_base(self.role)

        # StorageConfiguration and VectorKnowledgeBaseConfiguration are create-only: the name follows them and
        # the vector store it points to, so a replacement knowledge base never takes its predecessor's name.
        self.kb_name = name_following(
            self,
            deployment.resource_name("kb-"),
            lambda: [
                self.knowledge_base.knowledge_base_configuration,
                self.knowledge_base.storage_configuration,
                self.vector_store.identity,
            ],
            max_length=100,  # AWS::Bedrock::KnowledgeBase Name: ^([0-9a-zA-Z][_-]?){1,100}$
        )
        self.knowledge_base = bedrock.CfnKnowledgeBase(
            self,
            "KnowledgeBase",
            name=self.kb_name,
            description="genai-spectrum-kit Level 2 knowledge base",
            role_arn=self.role.role_arn,
            knowledge_base_configuration=bedrock.CfnKnowledgeBase.KnowledgeBaseConfigurationProperty(
                type="VECTOR",
                vector_knowledge_base_configuration=bedrock.CfnKnowledgeBase.VectorKnowledgeBaseConfigurationProperty(
                    embedding_model_arn=self.embedding_model_arn,
                    embedding_model_configuration=bedrock.CfnKnowledgeBase.EmbeddingModelConfigurationProperty(
                        bedrock_embedding_model_configuration=bedrock.CfnKnowledgeBase.BedrockEmbeddingModelConfigurationProperty(
                            dimensions=rag.embedding_dimensions, embedding_data_type="FLOAT32"
                        )
                    ),
                ),
            ),
            storage_configuration=self.vector_store.storage_configuration(),
        )
        # The role's policies and the vector index exist before Bedrock validates the knowledge base.
        self.knowledge_base.node.add_dependency(self.role)
        self.knowledge_base.node.add_dependency(self.vector_store.ready)

        # Chunking (VectorIngestionConfiguration) and KnowledgeBaseId are create-only, and a data source name is
        # unique within its knowledge base: the name follows both, so new chunking creates a differently named
        # data source before CloudFormation deletes the old one.
        self.data_source_name = name_following(
            self,
            deployment.resource_name("documents-"),
            lambda: [
                self.kb_name,
                self.data_source.vector_ingestion_configuration,
                self.data_source.data_source_configuration.type,  # type: ignore[union-attr]
            ],
            max_length=100,  # AWS::Bedrock::DataSource Name: ^([0-9a-zA-Z][_-]?){1,100}$
        )
        self.data_source = bedrock.CfnDataSource(
            self,
            "DataSource",
            name=self.data_source_name,
            knowledge_base_id=self.knowledge_base.attr_knowledge_base_id,
            # RETAIN: deleting vectors on stack deletion fails once the vector store is gone.
            data_deletion_policy="RETAIN",
            data_source_configuration=bedrock.CfnDataSource.DataSourceConfigurationProperty(
                type="S3",
                s3_configuration=bedrock.CfnDataSource.S3DataSourceConfigurationProperty(
                    bucket_arn=documents.bucket.bucket_arn,
                    inclusion_prefixes=[documents.prefix] if documents.prefix else None,
                ),
            ),
            vector_ingestion_configuration=bedrock.CfnDataSource.VectorIngestionConfigurationProperty(
                chunking_configuration=_chunking(rag)
            ),
        )
        # A digest of everything the data source is defined with. The S3 inclusion prefixes (and more) are updated
        # in place (not createOnlyProperties in the AWS::Bedrock::DataSource registry schema), so the data source id
        # stays; the ingest function tags its jobs with this revision and starts a full sync when it changes.
        self.data_source_revision = name_following(
            self, "", lambda: self.data_source._cfn_properties, max_length=REVISION_LENGTH, length=REVISION_LENGTH
        )

    @property
    def arn(self) -> str:
        return self.knowledge_base.attr_knowledge_base_arn

    def grant_ingestion(self, role: iam.Role) -> None:
        """Start an ingestion job of the data source and watch it (one job at a time: List and Get)."""
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StartAndWatchIngestion",
                actions=["bedrock:StartIngestionJob", "bedrock:ListIngestionJobs", "bedrock:GetIngestionJob"],
                resources=[self.arn],
            )
        )


class IngestionPipeline(Construct):
    """S3 change events kept in SQS, drained by a scheduled function into one ingestion job at a time."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        sync_interval_minutes: int,
        documents: DocumentStore,
        kb: KnowledgeBase,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = dead_letter_queue(
            self, "DeadLetters", holds="the change queue, of the rule that feeds it and of the ingest schedules"
        )
        self.queue = sqs.Queue(
            self,
            "Changes",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=CHANGES_RETENTION,
            # Longer than the function's timeout, so a change being drained is not handed out twice.
            visibility_timeout=Duration.seconds(INGEST_TIMEOUT.to_seconds() + 60),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=MAX_RECEIVE_COUNT),
        )
        object_filter: dict[str, Any] = {"key": [{"prefix": documents.prefix}]} if documents.prefix else {}
        self.rule = events.Rule(
            self,
            "DocumentChanges",
            description="Level 2: every document created or deleted under the prefix",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created", "Object Deleted"],
                detail={
                    "bucket": {"name": [documents.bucket.bucket_name]},
                    **({"object": object_filter} if object_filter else {}),
                },
            ),
            # An event EventBridge could not deliver after its retries is dropped unless the target has a
            # dead-letter queue (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html).
            # It lands, as the S3 event itself, in the same dead-letter queue and raises the same alarm. Both
            # queue policies let this rule send and nothing else (_SendOnlyQueueTarget); SSE-SQS needs no key
            # policy for it.
            targets=[_SendOnlyQueueTarget(self.queue, dead_letter_queue=self.dead_letters)],
        )

        self.handler = PythonFunction(
            self,
            "IngestFunction",
            deployment=deployment,
            handler="rag_ingest.handler.handler",
            description="Level 2 ingestion: coalesce pending document changes into one ingestion job",
            service_name=INGEST_SERVICE_NAME,
            timeout=INGEST_TIMEOUT,
            memory_size=256,
            environment={
                "QUEUE_URL": self.queue.queue_url,
                "KNOWLEDGE_BASE_ID": kb.knowledge_base.attr_knowledge_base_id,
                "DATA_SOURCE_ID": kb.data_source.attr_data_source_id,
                "DOCUMENTS_BUCKET": documents.bucket.bucket_name,
                "DOCUMENTS_PREFIX": documents.prefix,
                "DATA_SOURCE_REVISION": kb.data_source_revision,
            },
        )
        # No reserved concurrency: an account with a low concurrency quota (new accounts often have 10) must
        # keep a minimum unreserved and rejects ANY reservation, which would roll the whole stack back. One sync
        # at a time holds without it: a run drains only when no ingestion job runs, Bedrock starts one job per
        # data source (a second start raises ConflictException, and that run puts its changes back), and a
        # message is deleted only by the run whose own job started after the message was sent.
        # https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
        role = self.handler.role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="DrainChanges",
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    # A change refused by a busy Bedrock several times is re-queued as a fresh copy, so
                    # good changes never reach the dead-letter queue.
                    "sqs:SendMessage",
                ],
                resources=[self.queue.queue_arn],
            )
        )
        # Starting and watching the knowledge base's ingestion jobs is granted where the two meet (RagStack).
        sync_every = Duration.minutes(sync_interval_minutes)
        reconcile_every = Duration.seconds(RECONCILE_EVERY.total_seconds())  # the function reports jobs per period
        for name, action, every in (("Sync", "sync", sync_every), ("Reconcile", "reconcile", reconcile_every)):
            schedule = events.Rule(
                self,
                f"{name}Schedule",
                description=f"Level 2 ingestion: {action}",
                schedule=events.Schedule.rate(every),
                # A run EventBridge could not start (the function's permission or the function gone) lands in the
                # same alarmed dead-letter queue instead of being dropped; CDK adds the queue policy for this rule.
                targets=[
                    targets.LambdaFunction(
                        self.handler.function,
                        # The reconcile reports the hour up to the time its event was due, not to when it runs: a
                        # retried or late run would otherwise leave the jobs that ended in between unreported.
                        event=events.RuleTargetInput.from_object(
                            {"action": action, **({"time": events.EventField.time} if action == "reconcile" else {})}
                        ),
                        retry_attempts=2,
                        dead_letter_queue=self.dead_letters,
                    )
                ],
            )
            # The function starts a full sync while the data source has no COMPLETE job. The schedules exist
            # only once the sample corpus is copied, so that first job cannot run before the copy landed (S3
            # events for objects copied by the same deploy may never arrive).
            if documents.sample_corpus is not None:
                schedule.node.add_dependency(documents.sample_corpus)


class QueryApi(Construct):
    """The ask/retrieve API over the knowledge base, with the guardrail on generated answers."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        rag: RagSettings,
        model: ModelRef,
        throttle: ApiThrottle,
        kb: KnowledgeBase,
        guardrail: KitGuardrail,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        model_arn = (
            inference_profile_arn(stack, model.model_id)
            if model.is_inference_profile
            else foundation_model_arn(stack.partition, stack.region, model.foundation_model_id)
        )
        self.handler = PythonFunction(
            self,
            "QueryFunction",
            deployment=deployment,
            handler="rag_api.handler.handler",
            description="Level 2 query API: answers with citations from the knowledge base",
            service_name=QUERY_SERVICE_NAME,
            timeout=API_FUNCTION_TIMEOUT,
            memory_size=256,
            environment={
                "KNOWLEDGE_BASE_ID": kb.knowledge_base.attr_knowledge_base_id,
                "MODEL_ARN": model_arn,
                "MODEL_ID": model.model_id,
                "EMBEDDING_MODEL_ID": rag.embedding_model_id,
                "GUARDRAIL_ID": guardrail.guardrail.attr_guardrail_id,
                "GUARDRAIL_VERSION": guardrail.version.attr_version,
                "DEFAULT_NUMBER_OF_RESULTS": str(rag.max_results),
                "ANSWER_MAX_TOKENS": str(rag.answer_max_tokens),
                # Filters are checked against what this store supports before they reach Bedrock.
                "VECTOR_STORE": rag.vector_store,
            },
        )
        role = self.handler.role
        role.add_to_policy(
            iam.PolicyStatement(sid="RetrieveFromKnowledgeBase", actions=["bedrock:Retrieve"], resources=[kb.arn])
        )
        # RetrieveAndGenerate is a permission-only action with no resource type: IAM accepts only "*". What it
        # can reach is bounded by the Retrieve, InvokeModel and ApplyGuardrail grants, which name exact ARNs.
        generate = iam.PolicyStatement(
            sid="RetrieveAndGenerate", actions=["bedrock:RetrieveAndGenerate"], resources=["*"]
        )
        role.add_to_policy(generate)
        grant_invoke_model(role, model)
        if model.is_inference_profile:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadInferenceProfile", actions=["bedrock:GetInferenceProfile"], resources=[model_arn]
                )
            )
        # Applying the guardrail is granted where the two meet (RagStack).
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "bedrock:RetrieveAndGenerate has no resource type (IAM requires '*'); the knowledge base, model and "
            "guardrail it uses are granted by exact ARN. X-Ray actions also support no resource-level permissions.",
            applies_to=["Resource::*"],
        )

        self.rest = RestApi(
            self,
            "QueryApi",
            deployment=deployment,
            throttle=throttle,
            description="Level 2: ask and retrieve over the knowledge base",
        )
        body = self.rest.body_model("JsonObjectBody", JSON_OBJECT_BODY)
        for route in ("ask", "retrieve"):
            resource = self.rest.api.root.add_resource(route)
            self.rest.add_lambda_method(resource, "POST", self.handler.function, body=body)


class RagStack(Stack):
    """``GenAiKit-2-Rag``: documents, knowledge base, vector store, ingestion pipeline, query API, alarms."""

    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig, **kwargs: Any) -> None:
        super().__init__(
            scope, construct_id, description="genai-spectrum-kit Level 2: RAG on a Bedrock Knowledge Base", **kwargs
        )
        # Every problem at once: the text model the region cannot call, a guardrail tier no profile serves there.
        problems = [
            *profile_region_problems("text_model_id", config.text_model, self.region),
            *guardrail_region_problems(config.guardrail, self.region),
        ]
        if refuse(self, problems):
            return  # an empty stand-in with the errors
        deployment, rag = config.deployment, config.rag
        tag_stack(self, deployment, LEVEL)
        kit_sync = deployment.kit_command("l2", "sync")  # what the alarms tell the reader to run

        documents = DocumentStore(self, "Documents", deployment=deployment, rag=rag)
        kb = KnowledgeBase(self, "Knowledge", deployment=deployment, rag=rag, documents=documents)
        ingestion = IngestionPipeline(
            self,
            "Ingestion",
            deployment=deployment,
            sync_interval_minutes=rag.sync_interval_minutes,
            documents=documents,
            kb=kb,
        )
        kb.grant_ingestion(ingestion.handler.role)
        # Destroy, every stage: the knowledge base's ingestion jobs are stopped before the data source is deleted.
        IngestionCleanup(
            self,
            "DestroyCleanup",
            deployment=deployment,
            knowledge_base_arn=kb.arn,
            knowledge_base_id=kb.knowledge_base.attr_knowledge_base_id,
            data_source_id=kb.data_source.attr_data_source_id,
            ingest_function=ingestion.handler,
            ingest_timeout=INGEST_TIMEOUT,
        )
        guardrail = KitGuardrail(
            self,
            "Guardrail",
            deployment=deployment,
            settings=config.guardrail,
            name="rag-guardrail",
            applied_to="Level 2 answer",
        )
        query = QueryApi(
            self,
            "Query",
            deployment=deployment,
            rag=rag,
            model=config.text_model,
            throttle=ApiThrottle(rate=config.api_throttle_rate, burst=config.api_throttle_burst),
            kb=kb,
            guardrail=guardrail,
        )
        guardrail.grant_apply(query.handler.role)

        alarms = AlarmTopic(self, "Alarms", deployment=deployment)
        alarms.alarm(
            self,
            "DeadLettersAlarm",
            metric=ingestion.dead_letters.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
            threshold=1,
            description="Level 2: the dead-letter queue holds document changes that could not be delivered or "
            "processed, or scheduled ingest runs EventBridge could not start (the RULE_ARN attribute names the rule)",
            missing_data=QUEUE_METRIC_MISSING_DATA,
        )
        # SQS deletes a change older than the queue's retention without dead-lettering it: this alarm fires while
        # there is time to act. SQS reports the age only while the queue holds a message
        # (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html):
        # no data means no change waits, so missing data is not breaching and the alarm returns to OK once the queue
        # drains. A schedule that cannot invoke the function dead-letters (DeadLettersAlarm), and a function that
        # cannot call SQS fails (IngestFunctionErrorsAlarm).
        alarms.alarm(
            self,
            "StaleChangesAlarm",
            metric=ingestion.queue.metric_approximate_age_of_oldest_message(
                period=Duration.hours(1), statistic="Maximum"
            ),
            threshold=STALE_CHANGE_AGE.to_seconds(),
            description=f"Level 2: a document change has waited over {STALE_CHANGE_AGE.to_hours()} hours in the change "
            f"queue: no ingest run drained it (see the ingest function's log and `{kit_sync}`; a job running all this "
            f"time keeps the pipeline busy). SQS deletes a change after {CHANGES_RETENTION.to_days()} days without "
            f"dead-lettering it: fix the cause within {CHANGES_DAYS_TO_ACT} days, or afterwards re-index every "
            f"document with `aws bedrock-agent start-ingestion-job --region {self.region} --knowledge-base-id "
            f"{kb.knowledge_base.attr_knowledge_base_id} --data-source-id {kb.data_source.attr_data_source_id}`",
            missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        def ingest_metric(name: str) -> cloudwatch.Metric:
            """A metric the ingest function writes (EMF, its service name as a dimension), per hour at its most."""
            return cloudwatch.Metric(
                namespace=deployment.metrics_namespace,
                metric_name=name,
                dimensions_map={
                    KNOWLEDGE_BASE_DIMENSION: kb.knowledge_base.attr_knowledge_base_id,
                    "service": INGEST_SERVICE_NAME,
                },
                period=Duration.hours(1),
                statistic="Maximum",
            )

        # The wait SQS's age does not see: while StartIngestionJob keeps answering busy (the account's concurrent
        # ingestion jobs held by other knowledge bases, or throttling) each run receives the changes, and a change
        # received a third time is queued again as a new message, whose age starts over. The copy carries when its
        # change was first queued, and each run that holds changes writes how long the oldest has waited.
        alarms.alarm(
            self,
            "OldestChangeAgeAlarm",
            metric=ingest_metric(OLDEST_CHANGE_AGE),
            threshold=STALE_CHANGE_AGE.to_seconds(),
            description=f"Level 2: an ingest run holds a document change first queued over "
            f"{STALE_CHANGE_AGE.to_hours()} hours ago: StartIngestionJob keeps answering busy (ServiceQuotaExceeded: "
            "other knowledge bases hold the account's concurrent ingestion jobs; or Throttling), so the change is "
            f"queued again and again (see the ingest function's log and `{kit_sync}`). Nothing is lost while it "
            "waits; free an ingestion slot or raise the quota",
            missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        alarms.alarm(
            self,
            "IngestionFailedAlarm",
            metric=ingest_metric(INGESTION_JOB_FAILED),
            threshold=1,
            description="The last Level 2 ingestion job failed (see the ingest function's log)",
        )
        # A job can end COMPLETE with failed documents (numberOfDocumentsFailed,
        # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html); the hourly
        # reconcile writes DocumentsFailed for each job that ended, and keeps it while the newest job has failures
        # (a retry's count includes the failed documents it did not take again: rag_ingest.ingestion.RETRY_TAG).
        alarms.alarm(
            self,
            "DocumentsFailedAlarm",
            metric=ingest_metric(DOCUMENTS_FAILED),
            threshold=1,
            description="Documents failed to be ingested into the Level 2 knowledge base (the reconcile retried them "
            f"once). Read why (failureReasons) with `{kit_sync}`, or `aws bedrock-agent get-ingestion-job "
            f"--region {self.region} --knowledge-base-id {kb.knowledge_base.attr_knowledge_base_id} "
            f"--data-source-id {kb.data_source.attr_data_source_id} --ingestion-job-id JOB` (the job ids: "
            "list-ingestion-jobs), fix or remove each document in the bucket, then follow the job its change starts "
            f"with `{kit_sync} --wait`",
        )
        alarms.alarm(
            self,
            "IngestFunctionErrorsAlarm",
            metric=ingestion.handler.function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
            threshold=1,
            description=f"The Level 2 ingest function failed; changes stay queued and are retried for up to "
            f"{CHANGES_RETENTION.to_days()} days (the StaleChangesAlarm or OldestChangeAgeAlarm fires once one waited "
            f"{STALE_CHANGE_AGE.to_hours()} hours)",
        )
        alarms.api_alarms(
            self, query.rest.api, label="Level 2", service=QUERY_SERVICE_NAME, namespace=deployment.metrics_namespace
        )

        self.documents, self.kb, self.ingestion, self.query, self.alarm_topic = (
            documents,
            kb,
            ingestion,
            query,
            alarms.topic,
        )
        CfnOutput(self, "DocumentsBucketName", value=documents.bucket.bucket_name)
        CfnOutput(self, DOCUMENTS_PREFIX_OUTPUT, value=documents.prefix or WHOLE_BUCKET)
        CfnOutput(self, "KnowledgeBaseId", value=kb.knowledge_base.attr_knowledge_base_id)
        CfnOutput(self, "DataSourceId", value=kb.data_source.attr_data_source_id)
        CfnOutput(self, "ApiUrl", value=query.rest.api.url, description="Base URL of the Level 2 API (SigV4)")
        CfnOutput(self, "VectorStore", value=rag.vector_store)
        CfnOutput(self, "AlarmTopicArn", value=alarms.topic.topic_arn)
