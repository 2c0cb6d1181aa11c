"""Level 2 stack: knowledge base, vector stores, the ingestion pipeline and the query API."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import tempfile
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from stacks.config import ConfigError
from stacks.level2_rag.stack import (
    BEDROCK_NON_FILTERABLE_KEYS,
    CHANGES_DAYS_TO_ACT,
    CHANGES_RETENTION,
    MAX_RECEIVE_COUNT,
    _chunking,
    settings_digest,
)
from tests.conftest import ROOT, cdk_json_context
from tests.infra.helpers import DEFAULT_PROJECT, as_list, created_before, only, render, resources, statements
from tests.infra.test_config import build
from tests.infra.test_shared_parts import REST_INTEGRATION_TIMEOUT_MS

STACK = "GenAiKit-2-Rag"
SQS_MAX_RETENTION_S = (
    14 * 86_400
)  # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html


@pytest.fixture(scope="module")
def template(sandbox: Any) -> dict[str, Any]:
    return sandbox.templates[STACK]


@pytest.fixture(scope="module")
def oss(sandbox_oss: Any) -> dict[str, Any]:
    return sandbox_oss.templates[STACK]


def _function(template: dict[str, Any], handler: str) -> tuple[str, dict[str, Any]]:
    for logical_id, fn in resources(template, "AWS::Lambda::Function").items():
        if fn["Properties"].get("Handler") == handler:
            return logical_id, fn["Properties"]
    raise AssertionError(f"no function with handler {handler}")


def _role_statements(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    policies = {
        k for k, v in resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    }
    return [s for policy_id, s in statements(template) if policy_id in policies]


def _kb(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    logical_id, kb = only(template, "AWS::Bedrock::KnowledgeBase")
    return logical_id, kb


# --- documents and knowledge base ---------------------------------------------------------------------


def test_documents_bucket_is_versioned_and_sends_events_to_eventbridge(template: dict[str, Any]) -> None:
    buckets = {k: v for k, v in resources(template, "AWS::S3::Bucket").items() if k.startswith("DocumentsBucket")}
    [(bucket_id, bucket)] = buckets.items()
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    _, notifications = only(template, "Custom::S3BucketNotifications")
    assert notifications["Properties"]["BucketName"] == {"Ref": bucket_id}
    assert notifications["Properties"]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}
    # The ingestion function takes a lifecycle's permanent delete for an old version (rag_ingest.changes
    # LIFECYCLE_EXPIRATION): no rule of this bucket may expire a current version, which would be a real change.
    rules = bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    assert rules and [r for r in rules if {"ExpirationInDays", "ExpirationDate"} & set(r)] == []
    assert any("NoncurrentVersionExpiration" in r for r in rules)


def test_knowledge_base_uses_the_configured_embedding_model_and_dimensions(
    sandbox: Any, template: dict[str, Any]
) -> None:
    _, kb = _kb(template)
    vector = kb["Properties"]["KnowledgeBaseConfiguration"]["VectorKnowledgeBaseConfiguration"]
    rag = sandbox.config.rag
    assert (
        render(vector["EmbeddingModelArn"]) == f"arn:aws:bedrock:us-east-1::foundation-model/{rag.embedding_model_id}"
    )
    assert vector["EmbeddingModelConfiguration"]["BedrockEmbeddingModelConfiguration"]["Dimensions"] == 1024


def test_s3_vectors_index_matches_the_embedding_and_leaves_bedrock_metadata_unfilterable(
    template: dict[str, Any],
) -> None:
    index_id, index = only(template, "AWS::S3Vectors::Index")
    props = index["Properties"]
    assert (props["Dimension"], props["DataType"], props["DistanceMetric"]) == (1024, "float32", "cosine")
    assert set(BEDROCK_NON_FILTERABLE_KEYS) <= set(props["MetadataConfiguration"]["NonFilterableMetadataKeys"])
    _, kb = _kb(template)
    storage = kb["Properties"]["StorageConfiguration"]
    assert storage == {
        "Type": "S3_VECTORS",
        "S3VectorsConfiguration": {"IndexArn": {"Fn::GetAtt": [index_id, "IndexArn"]}},
    }


def test_knowledge_base_is_created_after_its_role_policies_and_index(template: dict[str, Any]) -> None:
    _, kb = _kb(template)
    role_id = kb["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    policy_ids = [
        k for k, v in resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    ]
    index_id, _ = only(template, "AWS::S3Vectors::Index")
    assert set(policy_ids) | {index_id, role_id} <= set(kb["DependsOn"])


def test_knowledge_base_role_trusts_bedrock_for_this_account_only(template: dict[str, Any]) -> None:
    _, kb = _kb(template)
    role = template["Resources"][kb["Properties"]["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert render(trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":knowledge-base/*")


def test_knowledge_base_role_has_exactly_the_permissions_it_needs(sandbox: Any, template: dict[str, Any]) -> None:
    _, kb = _kb(template)
    role_id = kb["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    granted = {s["Sid"]: s for s in _role_statements(template, role_id)}
    assert set(granted) == {"Embed", "ListDocuments", "ReadDocuments", "UseVectorIndex"}
    embed = [render(r) for r in granted["Embed"]["Resource"]]
    assert embed == [
        f"arn:aws:bedrock:us-east-1::foundation-model/{sandbox.config.rag.embedding_model_id}",
        DEFAULT_PROJECT,
    ]
    assert render(granted["ReadDocuments"]["Resource"]).endswith(f"/{sandbox.config.rag.documents_prefix}*")
    assert set(granted["UseVectorIndex"]["Action"]) == {
        "s3vectors:GetIndex",
        "s3vectors:QueryVectors",
        "s3vectors:PutVectors",
        "s3vectors:GetVectors",
        "s3vectors:ListVectors",
        "s3vectors:DeleteVectors",
    }
    index_id, _ = only(template, "AWS::S3Vectors::Index")
    assert granted["UseVectorIndex"]["Resource"] == {"Fn::GetAtt": [index_id, "IndexArn"]}


def test_data_source_reads_the_prefix_with_configured_chunking_and_retains_vectors(
    sandbox: Any, template: dict[str, Any]
) -> None:
    _, source = only(template, "AWS::Bedrock::DataSource")
    props = source["Properties"]
    assert props["DataDeletionPolicy"] == "RETAIN"
    assert props["DataSourceConfiguration"]["S3Configuration"]["InclusionPrefixes"] == ["docs/"]
    chunking = props["VectorIngestionConfiguration"]["ChunkingConfiguration"]
    assert chunking == {
        "ChunkingStrategy": "FIXED_SIZE",
        "FixedSizeChunkingConfiguration": {"MaxTokens": 300, "OverlapPercentage": 20},
    }


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("fixed", ("FIXED_SIZE", "fixed_size_chunking_configuration")),
        ("hierarchical", ("HIERARCHICAL", "hierarchical_chunking_configuration")),
        ("semantic", ("SEMANTIC", "semantic_chunking_configuration")),
        ("none", ("NONE", None)),
    ],
)
def test_every_chunking_strategy_maps_to_its_bedrock_configuration(
    strategy: str, expected: tuple[str, str | None]
) -> None:
    chunking = _chunking(build(rag_chunking=strategy).rag)
    assert chunking.chunking_strategy == expected[0]
    if expected[1]:
        assert getattr(chunking, expected[1]) is not None


def test_hierarchical_levels_are_parent_then_child() -> None:
    chunking = _chunking(build(rag_chunking="hierarchical", rag_hierarchical_parent_tokens=1000).rag)
    levels = chunking.hierarchical_chunking_configuration.level_configurations
    assert [level.max_tokens for level in levels] == [1000, 300]


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("rag_vector_store", "pinecone", "one of s3vectors, opensearch-serverless"),
        ("rag_embedding_dimensions", 768, "one of 256, 512, 1024"),
        ("rag_embedding_model_id", "amazon.titan-embed-g1-text-02", "one of"),
        ("rag_chunking", "sentences", "one of fixed, hierarchical, semantic, none"),
        ("rag_chunk_overlap_percent", 0, "a whole number from 1 to 99"),
        ("rag_semantic_breakpoint_percentile", 40, "a whole number from 50 to 99"),
        ("rag_hierarchical_child_tokens", 2000, "fewer tokens than rag_hierarchical_parent_tokens"),
        ("rag_documents_prefix", "docs", "ending in '/'"),
        ("rag_sync_interval_minutes", 0, "a whole number from 1 to 60"),
        ("rag_max_results", 50, "a whole number from 1 to 25"),
        ("rag_answer_max_tokens", 5000, "a whole number from 1 to 4096"),
    ],
)
def test_rag_config_mistakes_are_one_line_errors(key: str, value: Any, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"config error: {key} = .*{allowed}".replace("(", r"\(").replace(")", r"\)")):
        build(**{key: value})


def test_the_sample_corpus_never_deletes_the_users_documents(template: dict[str, Any]) -> None:
    # Before: RetainOnDelete false, so turning rag_sample_corpus off (the deployment is deleted) or changing
    # rag_documents_prefix (an update to another prefix) ran `aws s3 rm <old prefix> --recursive` in CDK's
    # BucketDeployment handler: every document under the prefix, the user's included, and then their vectors.
    [deployment] = resources(template, "Custom::CDKBucketDeployment").values()
    properties = deployment["Properties"]
    assert properties.get("RetainOnDelete", True) is True
    assert properties["Prune"] is False


def test_sample_corpus_is_a_sandbox_only_switch(sandbox: Any, prod: Any) -> None:
    assert sandbox.config.rag.sample_corpus and not prod.config.rag.sample_corpus
    assert resources(sandbox.templates[STACK], "Custom::CDKBucketDeployment")
    assert not resources(prod.templates[STACK], "Custom::CDKBucketDeployment")
    with pytest.raises(ConfigError, match=r"rag_sample_corpus = true .*false in the prod stage"):
        build(stage="prod", rag_sample_corpus=True)


# --- ingestion pipeline -------------------------------------------------------------------------------


def test_document_changes_go_to_a_queue_with_a_dead_letter_queue(template: dict[str, Any]) -> None:
    rules = [r for r in resources(template, "AWS::Events::Rule").values() if "EventPattern" in r["Properties"]]
    [rule] = rules
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created", "Object Deleted"]
    assert pattern["detail"]["object"] == {"key": [{"prefix": "docs/"}]}
    [target] = rule["Properties"]["Targets"]
    queue_id = target["Arn"]["Fn::GetAtt"][0]
    queue = template["Resources"][queue_id]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == MAX_RECEIVE_COUNT
    # The ingest function queues a change again from its REQUEUE_AT_RECEIVE_COUNT-th receive: SQS dead-letters a
    # message received more than maxReceiveCount times, so at least two receives must be left for runs that fail
    # and for ApproximateReceiveCount being approximate (rag_ingest.ingestion).
    from rag_ingest.ingestion import REQUEUE_AT_RECEIVE_COUNT

    assert queue["RedrivePolicy"]["maxReceiveCount"] - 2 >= REQUEUE_AT_RECEIVE_COUNT
    dlq_id = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert template["Resources"][dlq_id]["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize("variant", ["sandbox", "prod", "sandbox_oss"])
def test_an_s3_event_eventbridge_cannot_deliver_lands_in_the_alarmed_dead_letter_queue(
    request: pytest.FixtureRequest, variant: str
) -> None:
    # Without a target dead-letter queue, an event still undelivered after EventBridge's retries is dropped
    # (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html): that change would
    # never reach the queue, and only an unrelated later job would index it.
    template = request.getfixturevalue(variant).templates[STACK]
    [(rule_id, rule)] = [
        (k, r) for k, r in resources(template, "AWS::Events::Rule").items() if "EventPattern" in r["Properties"]
    ]
    changes, _ = _queues(template)
    dlq_arn = changes["RedrivePolicy"]["deadLetterTargetArn"]
    dlq_id = dlq_arn["Fn::GetAtt"][0]
    for target in rule["Properties"]["Targets"]:
        assert target.get("DeadLetterConfig") == {"Arn": dlq_arn}, target["Id"]
        assert "RoleArn" not in target  # SQS targets use the queue policy; a role can make delivery fail
    # EventBridge may send to the DLQ for the stack's own rules only, each named (the queue policy is its
    # permission): the change rule, and the sync and reconcile schedules, whose undelivered runs land there too
    sends = [
        statement
        for policy in resources(template, "AWS::SQS::QueuePolicy").values()
        if {"Ref": dlq_id} in policy["Properties"]["Queues"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
    ]
    rules = sorted(resources(template, "AWS::Events::Rule"))
    assert rule_id in rules and len(rules) == 3
    assert sorted(json.dumps(s["Condition"]) for s in sends) == sorted(
        json.dumps({"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [each, "Arn"]}}}) for each in rules
    )
    for statement in sends:
        assert {key: statement[key] for key in ("Action", "Effect", "Principal", "Resource")} == {
            "Action": "sqs:SendMessage",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Resource": dlq_arn,
        }
    # ...and needs no key policy for it: SSE-SQS, not a customer managed key
    dlq = template["Resources"][dlq_id]["Properties"]
    assert dlq.get("SqsManagedSseEnabled") is True and "KmsMasterKeyId" not in dlq
    # the dead-letter alarm watches that queue
    watched = [
        alarm["Properties"]["Dimensions"]
        for alarm in resources(template, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}] in watched


def test_ingest_function_runs_on_two_schedules(sandbox: Any, template: dict[str, Any]) -> None:
    fn_id, fn = _function(template, "rag_ingest.handler.handler")
    assert (
        fn["Timeout"] * 1
        < template["Resources"][
            next(k for k in resources(template, "AWS::SQS::Queue") if k.startswith("IngestionChanges"))
        ]["Properties"]["VisibilityTimeout"]
    )
    env = fn["Environment"]["Variables"]
    names = {"QUEUE_URL", "KNOWLEDGE_BASE_ID", "DATA_SOURCE_ID", "DOCUMENTS_BUCKET", "DOCUMENTS_PREFIX"}
    assert names | {"DATA_SOURCE_REVISION"} <= set(env)
    schedules = {}
    dlq_arn = _queues_arns(template)[1]
    for rule in resources(template, "AWS::Events::Rule").values():
        props = rule["Properties"]
        if "ScheduleExpression" in props:
            [target] = props["Targets"]
            assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
            # a run EventBridge could not start lands in the alarmed dead-letter queue, not dropped
            assert target["DeadLetterConfig"] == {"Arn": dlq_arn}
            if "InputTransformer" in target:  # the reconcile's due time: EventBridge fills in the event's $.time
                transformer = target["InputTransformer"]
                assert transformer["InputPathsMap"] == {"time": "$.time"}
                sent = json.loads(transformer["InputTemplate"].replace("<time>", '"2026-12-02T14:00:27Z"'))
                assert import_module("rag_ingest.handler").parse_action(sent) == sent["action"]
                schedules[json.dumps(sent)] = props["ScheduleExpression"]
            else:
                schedules[json.dumps(json.loads(target["Input"]))] = props["ScheduleExpression"]
    minutes = sandbox.config.rag.sync_interval_minutes
    assert schedules == {
        '{"action": "sync"}': f"rate({minutes} minutes)",
        '{"action": "reconcile", "time": "2026-12-02T14:00:27Z"}': "rate(1 hour)",
    }


@pytest.mark.parametrize("variant", ["sandbox", "prod", "sandbox_oss"])
def test_no_function_reserves_concurrency(request: pytest.FixtureRequest, variant: str) -> None:
    """An account with a low concurrency quota (new accounts often have 10) rejects ANY reservation."""
    synth = request.getfixturevalue(variant)
    reserved = [
        f"{stack_id}/{logical_id}"
        for stack_id, template in synth.templates.items()
        for logical_id, fn in resources(template, "AWS::Lambda::Function").items()
        if "ReservedConcurrentExecutions" in fn["Properties"]
    ]
    assert reserved == []


def _queues_arns(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(change queue, its dead-letter queue) ARNs as the template references them."""
    changes_id = next(k for k in resources(template, "AWS::SQS::Queue") if k.startswith("IngestionChanges"))
    dead = template["Resources"][changes_id]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
    return {"Fn::GetAtt": [changes_id, "Arn"]}, dead


def _queues(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(change queue, its dead-letter queue) properties."""
    changes = next(
        v["Properties"] for k, v in resources(template, "AWS::SQS::Queue").items() if k.startswith("IngestionChanges")
    )
    dlq_id = changes["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    return changes, template["Resources"][dlq_id]["Properties"]


def test_a_change_is_kept_a_week_and_alarms_days_before_it_expires(template: dict[str, Any]) -> None:
    """SQS deletes a message older than its queue's retention and does not dead-letter it (DeleteMessage API
    reference). Before: the change queue kept changes 4 days and nothing watched their age, so an outage that long
    (the function failing before it receives, or a job running for days) lost changes without a signal."""
    changes, dead_letters = _queues(template)
    assert changes["MessageRetentionPeriod"] == CHANGES_RETENTION.to_seconds() >= 7 * 86_400
    # SQS expires a dead letter by its ORIGINAL enqueue time: the DLQ keeps longer than the source queue (AWS's advice),
    # as long as SQS allows, so a dead letter stays readable for the difference however long it waited before.
    assert dead_letters["MessageRetentionPeriod"] == SQS_MAX_RETENTION_S
    assert dead_letters["MessageRetentionPeriod"] - changes["MessageRetentionPeriod"] >= 7 * 86_400
    queue_id = next(k for k in resources(template, "AWS::SQS::Queue") if k.startswith("IngestionChanges"))
    [stale] = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
    ]
    assert stale["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert (stale["Namespace"], stale["Statistic"], stale["ComparisonOperator"]) == (
        "AWS/SQS",
        "Maximum",
        "GreaterThanOrEqualToThreshold",
    )
    # fires after a day, far past a sync interval (at most 60 min) and a job, and leaves five days or more to act
    assert 86_400 <= stale["Threshold"] <= changes["MessageRetentionPeriod"] - 5 * 86_400
    assert stale["Period"] * stale["EvaluationPeriods"] <= 3_600
    assert stale["AlarmActions"] and stale["OKActions"]
    # SQS reports the age only while the queue holds a message: no data is the good state, so the alarm returns to
    # OK once the queue drains instead of staying in ALARM (stacks/level2_rag/stack.py)
    assert stale["TreatMissingData"] == "notBreaching"
    description = json.dumps(stale["AlarmDescription"])
    assert f"after {CHANGES_RETENTION.to_days()} days without dead-lettering" in description
    assert "aws bedrock-agent start-ingestion-job --region" in description
    # the docs state the bounded guarantee, not an unbounded one
    docs = (ROOT / "docs" / "level-2-rag.md").read_text()
    assert "No change is lost." not in docs
    assert f"{CHANGES_RETENTION.to_days()} days" in docs and f"within {CHANGES_DAYS_TO_ACT} days" in docs


def test_ingest_function_may_only_drain_its_queue_and_start_jobs_on_its_knowledge_base(
    template: dict[str, Any],
) -> None:
    _, fn = _function(template, "rag_ingest.handler.handler")
    granted = {s.get("Sid"): s for s in _role_statements(template, fn["Role"]["Fn::GetAtt"][0])}
    kb_id, _ = _kb(template)
    queue_id = next(k for k in resources(template, "AWS::SQS::Queue") if k.startswith("IngestionChanges"))
    assert granted["DrainChanges"]["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert sorted(granted["DrainChanges"]["Action"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
    ]
    assert granted["StartAndWatchIngestion"]["Resource"] == {"Fn::GetAtt": [kb_id, "KnowledgeBaseArn"]}
    assert sorted(granted["StartAndWatchIngestion"]["Action"]) == [
        "bedrock:GetIngestionJob",
        "bedrock:ListIngestionJobs",
        "bedrock:StartIngestionJob",
    ]


# --- query API ----------------------------------------------------------------------------------------


def test_query_routes_are_iam_authorized_posts(template: dict[str, Any]) -> None:
    methods = resources(template, "AWS::ApiGateway::Method").values()
    assert len(methods) == 2
    for method in methods:
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert method["Properties"]["HttpMethod"] == "POST"


def test_query_function_grants_name_exact_resources_except_retrieve_and_generate(
    sandbox: Any, template: dict[str, Any]
) -> None:
    _, fn = _function(template, "rag_api.handler.handler")
    found = _role_statements(template, fn["Role"]["Fn::GetAtt"][0])
    bedrock = [s for s in found if any(a.startswith("bedrock:") for a in as_list(s["Action"]))]
    wildcard = [s for s in bedrock if "*" in [render(r) for r in as_list(s["Resource"])]]
    # RetrieveAndGenerate has no IAM resource type; it is the one bedrock action on "*".
    assert [s["Action"] for s in wildcard] == ["bedrock:RetrieveAndGenerate"]
    by_sid = {s["Sid"]: s for s in bedrock}
    kb_id, _ = _kb(template)
    assert by_sid["RetrieveFromKnowledgeBase"]["Resource"] == {"Fn::GetAtt": [kb_id, "KnowledgeBaseArn"]}
    profile = f"arn:aws:bedrock:us-east-1:${{AWS::AccountId}}:inference-profile/{sandbox.config.text_model.model_id}"
    assert [render(r) for r in by_sid["InvokeInferenceProfile"]["Resource"]] == [profile, DEFAULT_PROJECT]
    assert render(fn["Environment"]["Variables"]["MODEL_ARN"]) == profile
    assert by_sid["ApplyGuardrail"]["Action"] == "bedrock:ApplyGuardrail"


def test_query_function_timeout_is_below_the_api_integration_timeout(template: dict[str, Any]) -> None:
    """A function still running when API Gateway gives up answers no one: the caller gets a 504 without the kit's
    error body."""
    _, fn = _function(template, "rag_api.handler.handler")
    integrations = [
        r["Properties"]["Integration"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::Method" and r["Properties"].get("Integration", {}).get("Type") == "AWS_PROXY"
    ]
    assert len(integrations) == 2  # POST /ask and POST /retrieve
    limit = min(i.get("TimeoutInMillis", REST_INTEGRATION_TIMEOUT_MS) for i in integrations)
    assert fn["Timeout"] * 1000 < limit


def test_query_function_caps_answers_at_the_configured_tokens(sandbox: Any, template: dict[str, Any]) -> None:
    _, fn = _function(template, "rag_api.handler.handler")
    assert fn["Environment"]["Variables"]["ANSWER_MAX_TOKENS"] == str(sandbox.config.rag.answer_max_tokens)


def test_level2_guardrail_name_does_not_clash_with_level1(sandbox: Any, template: dict[str, Any]) -> None:
    _, guardrail = only(template, "AWS::Bedrock::Guardrail")
    _, level1 = only(sandbox.templates["GenAiKit-1-Prompt"], "AWS::Bedrock::Guardrail")
    assert guardrail["Properties"]["Name"] != level1["Properties"]["Name"]


@pytest.mark.parametrize("handler", ["rag_ingest.handler.handler", "rag_api.handler.handler"])
def test_handler_strings_are_the_dotted_paths_tests_import(template: dict[str, Any], handler: str) -> None:
    _function(template, handler)
    module_path, _, attribute = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module_path), attribute))


# --- alarms and outputs -------------------------------------------------------------------------------


def test_alarms_cover_dead_letters_ingestion_failures_and_the_api(template: dict[str, Any]) -> None:
    metrics = {a["Properties"]["MetricName"] for a in resources(template, "AWS::CloudWatch::Alarm").values()}
    assert {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "IngestionJobFailed",
        "Errors",
        "5XXError",
        "Latency",
    } <= metrics


def test_failed_documents_raise_an_alarm_like_a_failed_job(template: dict[str, Any]) -> None:
    # A job can end COMPLETE with failed documents (numberOfDocumentsFailed is separate from its status,
    # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html).
    by_metric = {
        a["Properties"]["MetricName"]: a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
    }
    documents, job = by_metric["DocumentsFailed"], by_metric["IngestionJobFailed"]
    same = ("Namespace", "Dimensions", "Period", "Statistic", "AlarmActions", "OKActions", "TreatMissingData")
    assert {key: documents[key] for key in same} == {key: job[key] for key in same}
    assert (documents["Threshold"], documents["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    description = json.dumps(documents["AlarmDescription"])
    sync = "kit l2 --stage sandbox --region us-east-1 sync"
    for step in (sync, "aws bedrock-agent get-ingestion-job", "failureReasons", "fix or remove"):
        assert step in description


def test_a_change_waiting_through_requeues_raises_the_same_day_alarm(template: dict[str, Any]) -> None:
    # The ingest function writes OldestChangeAge (rag_ingest.handler) with the reconcile metrics' dimensions; a
    # re-queued copy's SQS age starts over, so only this alarm sees a change refused as busy for a day.
    by_metric = {
        a["Properties"]["MetricName"]: a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
    }
    oldest, stale, job = (
        by_metric["OldestChangeAge"],
        by_metric["ApproximateAgeOfOldestMessage"],
        by_metric["IngestionJobFailed"],
    )
    assert {key: oldest[key] for key in ("Namespace", "Dimensions")} == {
        key: job[key] for key in ("Namespace", "Dimensions")
    }
    same = ("Threshold", "ComparisonOperator", "Statistic", "AlarmActions", "OKActions", "TreatMissingData")
    assert {key: oldest[key] for key in same} == {key: stale[key] for key in same}
    assert oldest["Period"] * oldest["EvaluationPeriods"] <= 3_600
    assert "kit l2 --stage sandbox --region us-east-1 sync" in json.dumps(oldest["AlarmDescription"])


def test_outputs_name_bucket_knowledge_base_data_source_and_api(sandbox: Any) -> None:
    outputs = set(sandbox.template(STACK).find_outputs("*"))
    assert {"DocumentsBucketName", "KnowledgeBaseId", "DataSourceId", "ApiUrl"} <= outputs


# --- OpenSearch Serverless variant --------------------------------------------------------------------


def test_opensearch_collection_is_vector_search_without_standby_by_default(oss: dict[str, Any]) -> None:
    _, collection = only(oss, "AWS::OpenSearchServerless::Collection")
    assert collection["Properties"]["Type"] == "VECTORSEARCH"
    assert collection["Properties"]["StandbyReplicas"] == "DISABLED"
    policies = resources(oss, "AWS::OpenSearchServerless::SecurityPolicy")
    assert {p["Properties"]["Type"] for p in policies.values()} == {"encryption", "network"}
    assert set(policies) <= set(collection["DependsOn"])


def _waits(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The OpenSearch Serverless waits by check: {check: (logical id, properties)}."""
    found = resources(template, "Custom::OpenSearchServerlessWait")
    return {v["Properties"]["Check"]: (k, v["Properties"]) for k, v in found.items()}


def test_opensearch_creation_waits_for_the_access_policy_then_for_the_index(oss: dict[str, Any]) -> None:
    # policy -> wait until it is in effect -> index -> wait until it answers searches -> knowledge base
    access_id, _ = only(oss, "AWS::OpenSearchServerless::AccessPolicy")
    collection_id, _ = only(oss, "AWS::OpenSearchServerless::Collection")
    index_id, index = only(oss, "AWS::OpenSearchServerless::Index")
    kb_id, kb = _kb(oss)
    waits = _waits(oss)
    assert set(waits) == {"access", "index"}
    (access_wait_id, access_wait), (index_wait_id, index_wait) = waits["access"], waits["index"]

    assert {access_id, collection_id} <= created_before(oss, access_wait_id)
    assert index_id not in created_before(oss, access_wait_id)
    assert access_wait_id in set(as_list(index["DependsOn"]))
    assert index_id in created_before(oss, index_wait_id)
    assert index_wait_id in set(as_list(kb["DependsOn"]))
    assert {access_wait_id, index_wait_id, index_id, access_id} <= created_before(oss, kb_id)
    # both waits look at the index the knowledge base uses, on the collection's endpoint
    endpoint = {"Fn::GetAtt": [collection_id, "CollectionEndpoint"]}
    for wait in (access_wait, index_wait):
        assert wait["CollectionEndpoint"] == endpoint
        assert wait["IndexName"] == index["Properties"]["IndexName"]
    assert index["Properties"]["CollectionEndpoint"] == endpoint
    storage = kb["Properties"]["StorageConfiguration"]["OpensearchServerlessConfiguration"]
    assert storage["VectorIndexName"] == index["Properties"]["IndexName"]


def test_opensearch_wait_function_answers_before_its_timeout_and_may_only_look(oss: dict[str, Any]) -> None:
    import rag_aoss_wait.handler as wait_handler

    [(_, wait)] = [_waits(oss)["access"]]
    fn_id = wait["ServiceToken"]["Fn::GetAtt"][0]
    fn = oss["Resources"][fn_id]["Properties"]
    assert fn["Handler"] == "rag_aoss_wait.handler.handler"
    # the deadline guard keeps time to answer CloudFormation; CloudFormation waits up to an hour for an answer
    assert wait_handler.DEADLINE_RESERVE_MS < fn["Timeout"] * 1000 <= 15 * 60 * 1000
    collection_id, _ = only(oss, "AWS::OpenSearchServerless::Collection")
    granted = [s for s in _role_statements(oss, fn["Role"]["Fn::GetAtt"][0]) if s.get("Sid") == "ProbeCollection"]
    assert granted == [
        {
            "Action": "aoss:APIAccessAll",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [collection_id, "Arn"]},
            "Sid": "ProbeCollection",
        }
    ]
    _, access = only(oss, "AWS::OpenSearchServerless::AccessPolicy")
    policy = json.loads(
        render(access["Properties"]["Policy"]).replace("${" + fn["Role"]["Fn::GetAtt"][0] + ".Arn}", "WAITER")
    )
    [waiter_rules] = [p["Rules"] for p in policy if p["Principal"] == ["WAITER"]]
    assert [sorted(rule["Permission"]) for rule in waiter_rules] == [["aoss:DescribeIndex", "aoss:ReadDocument"]]


def test_opensearch_policies_admit_kb_and_deployer_and_cover_the_collection(oss: dict[str, Any]) -> None:
    _, access = only(oss, "AWS::OpenSearchServerless::AccessPolicy")
    policy = render(access["Properties"]["Policy"])
    assert "cdk-hnb659fds-cfn-exec-role" in policy
    _, kb = _kb(oss)
    assert "${" + kb["Properties"]["RoleArn"]["Fn::GetAtt"][0] + ".Arn}" in policy
    _, index = only(oss, "AWS::OpenSearchServerless::Index")
    vector = index["Properties"]["Mappings"]["Properties"]["kit-vector"]
    assert (vector["Type"], vector["Dimension"]) == ("knn_vector", 1024)
    assert index["Properties"]["Settings"]["Index"]["Knn"] is True
    _assert_policies_cover_the_collection(oss)


# A policy rule names collections as collection/<name or pattern>, a pattern being a prefix and "*" (e.g.
# "MyCollection*"), and indexes as index/<collection>/<index>; collection/* or index/*/* reaches every collection in
# the account and Region, and a network policy assigns its settings to every collection its rules match:
# https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-encryption.html
# https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-data-access.html
# https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-network.html
def _foreign_collections(name: str) -> list[str]:
    """Collections in the account that are not the kit's: another team's, and ones that share only a shorter start
    of the kit's collection name, up to one of its hyphens (another resource, stage or deployment)."""
    starts = [name[: at + 1] for at, char in enumerate(name) if char == "-"]
    return ["other-team-collection", *(start + "other" for start in starts)]


def _assert_policies_cover_the_collection(template: dict[str, Any]) -> None:
    """Every encryption, network and data access rule matches the collection (and its indexes) by name, and no
    foreign collection (or its indexes)."""
    _, collection = only(template, "AWS::OpenSearchServerless::Collection")
    name = collection["Properties"]["Name"]
    _, index = only(template, "AWS::OpenSearchServerless::Index")
    index_name = index["Properties"]["IndexName"]
    patterns = {"collection": f"collection/{name}", "index": f"index/{name}/{index_name}"}
    foreign = {
        "collection": [f"collection/{other}" for other in _foreign_collections(name)],
        "index": [f"index/{other}/{index_name}" for other in _foreign_collections(name)],
    }
    policies = [*resources(template, "AWS::OpenSearchServerless::SecurityPolicy").values()]
    policies += resources(template, "AWS::OpenSearchServerless::AccessPolicy").values()
    assert len(policies) == 3
    for policy in policies:
        document = json.loads(re.sub(r"\$\{[^}]+\}", "X", render(policy["Properties"]["Policy"])))
        for rule in [r for part in as_list(document) for r in part["Rules"]]:
            assert all(fnmatch.fnmatchcase(patterns[rule["ResourceType"]], p) for p in rule["Resource"]), rule
            reached = [f for f in foreign[rule["ResourceType"]] for p in rule["Resource"] if fnmatch.fnmatchcase(f, p)]
            assert reached == [], (policy["Properties"]["Name"], rule)


@pytest.mark.parametrize("synth", ["sandbox_oss", "prod_extremes"])
def test_opensearch_policies_reach_no_collection_but_the_kits(request: pytest.FixtureRequest, synth: str) -> None:
    # Every variant with OpenSearch Serverless, the longest name prefix and prod among them: a wider pattern would
    # make other teams' collections public (network policy), encrypt them with this key choice, or give the kit's
    # roles their indexes.
    _assert_policies_cover_the_collection(request.getfixturevalue(synth).templates[STACK])


def test_opensearch_knowledge_base_storage_and_role(oss: dict[str, Any]) -> None:
    collection_id, _ = only(oss, "AWS::OpenSearchServerless::Collection")
    _, kb = _kb(oss)
    storage = kb["Properties"]["StorageConfiguration"]
    assert storage["Type"] == "OPENSEARCH_SERVERLESS"
    assert storage["OpensearchServerlessConfiguration"]["CollectionArn"] == {"Fn::GetAtt": [collection_id, "Arn"]}
    granted = {s["Sid"]: s for s in _role_statements(oss, kb["Properties"]["RoleArn"]["Fn::GetAtt"][0])}
    assert granted["UseCollection"] == {
        "Action": "aoss:APIAccessAll",
        "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [collection_id, "Arn"]},
        "Sid": "UseCollection",
    }
    assert "UseVectorIndex" not in granted


# --- updates: names follow create-only settings, logical ids keep their type --------------------------------
# CloudFormation replaces a resource when a create-only property changes and creates the replacement BEFORE
# deleting the old one, so a replacement must not keep its predecessor's name; and it refuses a logical id
# whose resource type changes. Only the Level 2 stack is synthesized per variant (about 1 s each).

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "chunking": {"rag_chunking": "hierarchical"},
    "dimensions": {"rag_embedding_dimensions": 512},
    "model": {"rag_embedding_model_id": "cohere.embed-english-v3"},
    "oss": {"rag_vector_store": "opensearch-serverless"},
    "oss-standby": {"rag_vector_store": "opensearch-serverless", "rag_opensearch_standby_replicas": True},
    "oss-tags": {"rag_vector_store": "opensearch-serverless", "tags": {"team": "search"}},
    "oss-dimensions": {"rag_vector_store": "opensearch-serverless", "rag_embedding_dimensions": 512},
    "oss-longest-prefix": {"rag_vector_store": "opensearch-serverless", "name_prefix": "k" * 17},
    "documents-prefix": {"rag_documents_prefix": "library/"},
    "sync-interval": {"rag_sync_interval_minutes": 10},
}


@pytest.fixture(scope="module")
def variant() -> Callable[[str], dict[str, Any]]:
    """The Level 2 template of a named configuration variant, synthesized once per module on first use."""
    import aws_cdk as cdk

    from stacks.config import load_config
    from stacks.level2_rag.stack import RagStack
    from stacks.shared.facts import PINNED_POWERTOOLS_LAYER

    cache: dict[str, dict[str, Any]] = {}
    outdir = Path(tempfile.mkdtemp(prefix="cdk-rag-variants-"))

    def synth(name: str) -> dict[str, Any]:
        if name not in cache:
            context = {**cdk_json_context(), **VARIANTS[name]}
            app = cdk.App(context=context, outdir=str(outdir / name))
            config = load_config(
                {k: v for k, v in context.items() if v is not None}, pinned_layer_version=PINNED_POWERTOOLS_LAYER
            )
            env = cdk.Environment(region=config.region, account=config.account)
            stack = RagStack(app, STACK, stack_name=f"{STACK}-{config.stage}", env=env, config=config)
            cache[name] = app.synth().get_stack_by_name(stack.stack_name).template
        return cache[name]

    return synth


NAMED = {
    "AWS::Bedrock::KnowledgeBase": "Name",
    "AWS::Bedrock::DataSource": "Name",
    "AWS::S3Vectors::Index": "IndexName",
    "AWS::OpenSearchServerless::Collection": "Name",
    "AWS::OpenSearchServerless::Index": "IndexName",
}


def _names(template: dict[str, Any]) -> dict[str, str]:
    """The physical name of each resource whose create-only settings follow configuration, by type."""
    return {
        type_name: only(template, type_name)[1]["Properties"][prop]
        for type_name, prop in NAMED.items()
        if resources(template, type_name)
    }


def _renamed(variant: Callable[[str], dict[str, Any]], base: str, changed: str) -> set[str]:
    """Types present in both variants whose name differs."""
    before, after = _names(variant(base)), _names(variant(changed))
    return {type_name for type_name in set(before) & set(after) if before[type_name] != after[type_name]}


S3_CHAIN = {"AWS::S3Vectors::Index", "AWS::Bedrock::KnowledgeBase", "AWS::Bedrock::DataSource"}


@pytest.mark.parametrize("changed", ["chunking", "model"])
def test_new_chunking_or_model_gives_a_fresh_index_knowledge_base_and_data_source(
    variant: Callable[[str], dict[str, Any]], changed: str
) -> None:
    # Chunking is create-only on the data source, the model on the knowledge base. The replaced data source
    # leaves its vectors behind (RETAIN) and two models' vectors must not mix: the index is new as well.
    assert _renamed(variant, "default", changed) == S3_CHAIN


def test_new_dimensions_give_a_fresh_index_knowledge_base_and_data_source(
    variant: Callable[[str], dict[str, Any]],
) -> None:
    # Dimension (index) and the embedding configuration (knowledge base) are create-only; a new knowledge base
    # means a new data source (KnowledgeBaseId is create-only).
    assert _renamed(variant, "default", "dimensions") == S3_CHAIN
    expected = {"AWS::OpenSearchServerless::Index", "AWS::Bedrock::KnowledgeBase", "AWS::Bedrock::DataSource"}
    assert _renamed(variant, "oss", "oss-dimensions") == expected


@pytest.mark.parametrize("changed", ["oss-standby", "oss-tags"])
def test_a_replaced_collection_gets_a_new_name_that_the_policies_still_cover(
    variant: Callable[[str], dict[str, Any]], changed: str
) -> None:
    # StandbyReplicas and Tags are create-only on the collection; the index (CollectionEndpoint) and the
    # knowledge base (CollectionArn) that point to it are replaced with it.
    assert _renamed(variant, "oss", changed) == set(NAMED) - {"AWS::S3Vectors::Index"}
    _assert_policies_cover_the_collection(variant(changed))
    policy_names = {
        k: v["Properties"]["Name"]
        for k, v in variant("oss")["Resources"].items()
        if "Policy" in v["Type"] and "OpenSearch" in v["Type"]
    }
    assert policy_names == {
        k: v["Properties"]["Name"]
        for k, v in variant(changed)["Resources"].items()
        if "Policy" in v["Type"] and "OpenSearch" in v["Type"]
    }


def test_switching_the_vector_store_changes_no_logical_ids_type(variant: Callable[[str], dict[str, Any]]) -> None:
    s3, oss = variant("default")["Resources"], variant("oss")["Resources"]
    changed = {k: (s3[k]["Type"], oss[k]["Type"]) for k in set(s3) & set(oss) if s3[k]["Type"] != oss[k]["Type"]}
    assert changed == {}
    # and the knowledge base, which stays, takes a new name (its StorageConfiguration is create-only)
    assert _renamed(variant, "default", "oss") == {"AWS::Bedrock::KnowledgeBase", "AWS::Bedrock::DataSource"}


def _schema(type_name: str) -> dict[str, Any]:
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    schema: dict[str, Any] = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", type_name).schema
    return schema


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_computed_name_fits_its_property_pattern(variant: Callable[[str], dict[str, Any]], name: str) -> None:
    # Patterns from the CloudFormation registry schemas cfn-lint ships, plus the knowledge base's own limit on
    # collection names (its CollectionArn pattern ends in collection/[a-z0-9-]{3,32}).
    template = variant(name)
    for type_name, value in _names(template).items():
        prop = _schema(type_name)["properties"][NAMED[type_name]]
        prop = _schema(type_name)["definitions"][prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop
        assert re.fullmatch(prop.get("pattern", ".*").strip("^$"), value), (type_name, value)
        assert prop.get("minLength", 1) <= len(value) <= prop.get("maxLength", 255), (type_name, value)
    if "AWS::OpenSearchServerless::Collection" in _names(template):
        kb = _schema("AWS::Bedrock::KnowledgeBase")["definitions"]["OpenSearchServerlessConfiguration"]
        arn_pattern = kb["properties"]["CollectionArn"]["pattern"]
        collection = _names(template)["AWS::OpenSearchServerless::Collection"]
        arn = f"arn:aws:aoss:us-east-1:123456789012:collection/{collection}"
        assert re.fullmatch(arn_pattern.strip("^$"), arn)


def _revision(template: dict[str, Any]) -> str:
    revision: str = _function(template, "rag_ingest.handler.handler")[1]["Environment"]["Variables"][
        "DATA_SOURCE_REVISION"
    ]
    return revision


def test_a_data_source_updated_in_place_gets_a_new_revision(variant: Callable[[str], dict[str, Any]]) -> None:
    from rag_ingest.settings import REVISION
    from stacks.shared.registry import create_only_paths

    # The registry schema updates the S3 inclusion prefixes in place: the data source (and its id) stays, so the
    # ingest function learns of the change only from DATA_SOURCE_REVISION, and starts a full sync.
    prefixes = ("DataSourceConfiguration", "S3Configuration", "InclusionPrefixes")
    assert not any(prefixes[: len(path)] == path for path in create_only_paths("AWS::Bedrock::DataSource"))
    default, moved, slower = variant("default"), variant("documents-prefix"), variant("sync-interval")
    assert only(moved, "AWS::Bedrock::DataSource")[1]["Properties"]["DataSourceConfiguration"]["S3Configuration"][
        "InclusionPrefixes"
    ] == ["library/"]
    assert _renamed(variant, "default", "documents-prefix") == set()  # updated in place, not replaced
    assert all(REVISION.fullmatch(_revision(t)) for t in (default, moved, slower))
    assert _revision(moved) != _revision(default)
    assert _revision(slower) == _revision(default)  # the data source did not change: no full sync


def test_settings_digest_is_stable_and_order_free() -> None:
    assert settings_digest({"a": 1, "b": [1, 2]}) == settings_digest({"b": [1, 2], "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{8}", settings_digest(None))


def test_schedules_start_after_the_sample_corpus_landed(template: dict[str, Any]) -> None:
    # The first full sync must see the sample documents: S3 events for the copy may never arrive.
    copies = set(resources(template, "Custom::CDKBucketDeployment"))
    assert copies
    schedules = [
        r for r in resources(template, "AWS::Events::Rule").values() if "ScheduleExpression" in r["Properties"]
    ]
    assert len(schedules) == 2
    for rule in schedules:
        assert copies <= set(as_list(rule.get("DependsOn")))
