"""Level 2 stack: knowledge base, vector stores, the ingestion pipeline and the query API."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from stacks.config import ConfigError
from stacks.level2_rag import BEDROCK_NON_FILTERABLE_KEYS, MAX_RECEIVE_COUNT, _chunking
from tests.infra.helpers import as_list, only, render, resources, statements
from tests.infra.test_config import build

STACK = "GenAiKit-2-Rag"


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
    assert render(granted["Embed"]["Resource"]).endswith(f"::foundation-model/{sandbox.config.rag.embedding_model_id}")
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
    ],
)
def test_rag_config_mistakes_are_one_line_errors(key: str, value: Any, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"config error: {key} = .*{allowed}".replace("(", r"\(").replace(")", r"\)")):
        build(**{key: value})


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
    dlq_id = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert template["Resources"][dlq_id]["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["SqsManagedSseEnabled"] is True


def test_ingest_function_runs_alone_on_two_schedules(sandbox: Any, template: dict[str, Any]) -> None:
    fn_id, fn = _function(template, "rag_ingest.handler.handler")
    assert fn["ReservedConcurrentExecutions"] == 1
    assert (
        fn["Timeout"] * 1
        < template["Resources"][
            next(k for k in resources(template, "AWS::SQS::Queue") if k.startswith("IngestionChanges"))
        ]["Properties"]["VisibilityTimeout"]
    )
    env = fn["Environment"]["Variables"]
    assert {"QUEUE_URL", "KNOWLEDGE_BASE_ID", "DATA_SOURCE_ID", "DOCUMENTS_BUCKET", "DOCUMENTS_PREFIX"} <= set(env)
    schedules = {}
    for rule in resources(template, "AWS::Events::Rule").values():
        props = rule["Properties"]
        if "ScheduleExpression" in props:
            [target] = props["Targets"]
            assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
            schedules[target["Input"]] = props["ScheduleExpression"]
    minutes = sandbox.config.rag.sync_interval_minutes
    assert schedules == {'{"action":"sync"}': f"rate({minutes} minutes)", '{"action":"reconcile"}': "rate(1 hour)"}


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
    assert render(by_sid["InvokeInferenceProfile"]["Resource"]) == profile
    assert render(fn["Environment"]["Variables"]["MODEL_ARN"]) == profile
    assert by_sid["ApplyGuardrail"]["Action"] == "bedrock:ApplyGuardrail"


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
    assert {"ApproximateNumberOfMessagesVisible", "IngestionJobFailed", "Errors", "5XXError", "Latency"} <= metrics


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


def test_opensearch_index_waits_for_the_access_policy_that_admits_kb_and_deployer(oss: dict[str, Any]) -> None:
    access_id, access = only(oss, "AWS::OpenSearchServerless::AccessPolicy")
    policy = render(access["Properties"]["Policy"])
    assert "cdk-hnb659fds-cfn-exec-role" in policy
    _, kb = _kb(oss)
    assert "${" + kb["Properties"]["RoleArn"]["Fn::GetAtt"][0] + ".Arn}" in policy
    index_id, index = only(oss, "AWS::OpenSearchServerless::Index")
    assert access_id in index["DependsOn"]
    vector = index["Properties"]["Mappings"]["Properties"]["kit-vector"]
    assert (vector["Type"], vector["Dimension"]) == ("knn_vector", 1024)
    assert index["Properties"]["Settings"]["Index"]["Knn"] is True
    assert index_id in kb["DependsOn"]


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
