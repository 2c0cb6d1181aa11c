"""Level 2 settings: chunking, embedding and retrieval keys, their `-c` string forms and cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.config import ConfigError
from stacks.level2_rag.settings import EMBEDDING_INPUT_TOKENS, EMBEDDING_MODELS, ChunkingSettings
from tests.infra.test_config import build


@pytest.mark.parametrize(
    ("key", "raw", "read", "expected"),
    [
        ("rag_chunk_max_tokens", "512", lambda rag: rag.chunking.max_tokens, 512),
        ("rag_chunking", " semantic ", lambda rag: rag.chunking.strategy, "semantic"),
        ("rag_embedding_dimensions", "256", lambda rag: rag.embedding_dimensions, 256),
        ("rag_opensearch_standby_replicas", "true", lambda rag: rag.opensearch_standby_replicas, True),
        ("rag_sample_corpus", "false", lambda rag: rag.sample_corpus, False),
        ("rag_sample_corpus", "default", lambda rag: rag.sample_corpus, True),
        ("rag_documents_prefix", "", lambda rag: rag.documents_prefix, ""),
        ("rag_vector_store", "opensearch-serverless", lambda rag: rag.vector_store, "opensearch-serverless"),
    ],
)
def test_string_overrides_from_the_command_line_are_coerced(key: str, raw: str, read: Any, expected: Any) -> None:
    assert read(build(**{key: raw}).rag) == expected


def test_chunking_settings_carry_every_strategys_keys() -> None:
    rag = build(rag_chunking="hierarchical", rag_hierarchical_parent_tokens="1000").rag
    assert rag.chunking == ChunkingSettings(
        strategy="hierarchical",
        max_tokens=300,
        overlap_percent=20,
        parent_max_tokens=1000,
        child_max_tokens=300,
        overlap_tokens=60,
        buffer_size=0,
        breakpoint_percentile=95,
    )


@pytest.mark.parametrize(("model", "dimensions"), [(m, d) for m, ds in EMBEDDING_MODELS.items() for d in ds])
def test_each_embedding_model_takes_the_dimensions_it_offers(model: str, dimensions: int) -> None:
    rag = build(rag_embedding_model_id=model, rag_embedding_dimensions=dimensions).rag
    assert (rag.embedding_model_id, rag.embedding_dimensions) == (model, dimensions)


def test_dimensions_another_model_offers_are_refused_for_this_one() -> None:
    with pytest.raises(ConfigError) as caught:
        build(rag_embedding_model_id="cohere.embed-english-v3", rag_embedding_dimensions=512)
    assert str(caught.value) == (
        "config error: rag_embedding_dimensions = 512 is not allowed; expected one of 1024 for cohere.embed-english-v3"
    )


def test_every_embedding_model_has_an_input_ceiling() -> None:
    assert set(EMBEDDING_INPUT_TOKENS) == set(EMBEDDING_MODELS)


@pytest.mark.parametrize(
    ("chunking", "key"),
    [
        ("fixed", "rag_chunk_max_tokens"),
        ("semantic", "rag_chunk_max_tokens"),
        ("hierarchical", "rag_hierarchical_child_tokens"),
    ],
)
def test_a_chunk_longer_than_the_embedding_model_reads_is_refused(chunking: str, key: str) -> None:
    """Cohere Embed v3 takes about 512 tokens (2,048 characters) of one text; Titan Text Embeddings V2 8,192."""
    cohere = {"rag_embedding_model_id": "cohere.embed-english-v3", "rag_chunking": chunking}
    assert build(**cohere, **{key: 512}).rag.embedding_model_id == "cohere.embed-english-v3"
    with pytest.raises(ConfigError) as caught:
        build(**cohere, **{key: 513})
    assert str(caught.value) == (
        f"config error: {key} = 513 is not allowed; expected at most 512 for cohere.embed-english-v3 "
        "(the most it embeds of one chunk)"
    )
    # Titan reads up to 8,192 tokens, the chunking maximum itself
    assert build(rag_chunking=chunking, **{key: 1000}).rag.embedding_model_id == "amazon.titan-embed-text-v2:0"


def test_a_key_the_strategy_does_not_use_is_not_held_to_the_model() -> None:
    cohere = build(
        rag_embedding_model_id="cohere.embed-english-v3", rag_chunking="hierarchical", rag_chunk_max_tokens=2000
    )
    assert cohere.rag.chunking.strategy == "hierarchical"


def test_rag_mistakes_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        build(rag_chunk_overlap_percent=0, rag_hierarchical_child_tokens=2000, rag_documents_prefix="/docs/")
    assert [p.key for p in caught.value.problems] == [
        "rag_chunk_overlap_percent",
        "rag_hierarchical_child_tokens",
        "rag_documents_prefix",
    ]


@pytest.mark.parametrize("prefix", ["docs(v2)/", "it's/", "a*b/", "hello!/", "my docs/", "café/", "a+b/"])
def test_a_documents_prefix_whose_characters_url_encoding_changes_is_refused(prefix: str) -> None:
    """S3 URL-encodes the key in its event notifications
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html); its EventBridge
    page is silent. Before: ! ' ( ) * were allowed, and an encoded key would never match the rule's prefix filter,
    so no upload under such a prefix would ever be queued or ingested."""
    with pytest.raises(ConfigError) as caught:
        build(rag_documents_prefix=prefix)
    [problem] = caught.value.problems
    assert (problem.key, problem.value) == ("rag_documents_prefix", prefix)
    assert str(caught.value) == (
        f"config error: rag_documents_prefix = {prefix!r} is not allowed; expected an S3 key prefix ending in '/' "
        "of letters, digits and - _ . / only (S3 URL-encodes other characters in the keys of its events, so the "
        "event rule's prefix filter would never match)"
    )


@pytest.mark.parametrize("prefix", ["docs/", "a/b-c_d.e/", "V2/2024.01/"])
def test_a_documents_prefix_of_letters_digits_and_dash_underscore_dot_slash_is_taken(prefix: str) -> None:
    assert build(rag_documents_prefix=prefix).rag.documents_prefix == prefix


def test_a_documents_prefix_cdk_cannot_tag_is_a_config_error_while_the_sample_corpus_is_deployed() -> None:
    """Before: a prefix of 103 to 201 characters passed the settings, and CDK's BucketDeployment of the sample
    corpus then refused it at synth with a RuntimeError, for every stack of the app. The bound is CDK's own: the
    longest allowed prefix synthesizes, and one character more (let past the settings here) is what CDK refuses."""
    import dataclasses

    import aws_cdk as cdk

    from stacks.level2_rag.settings import SAMPLE_CORPUS_MAX_PREFIX
    from stacks.level2_rag.stack import RagStack
    from tests.conftest import cdk_json_context

    def stack(config: Any) -> None:
        app = cdk.App(context={k: v for k, v in cdk_json_context().items() if k.startswith("@")})
        RagStack(app, "Rag", env=cdk.Environment(region="us-east-1"), config=config)

    longest = "a" * (SAMPLE_CORPUS_MAX_PREFIX - 1) + "/"
    config = build(rag_documents_prefix=longest)
    assert config.rag.sample_corpus
    stack(config)
    too_long = dataclasses.replace(config, rag=config.rag.model_copy(update={"documents_prefix": "b" + longest}))
    with pytest.raises(RuntimeError, match="destinationKeyPrefix"):
        stack(too_long)
    with pytest.raises(ConfigError) as caught:
        build(rag_documents_prefix="b" + longest)
    assert str(caught.value).startswith(
        f"config error: rag_documents_prefix = 'b{longest}' is not allowed; expected at most 102 characters while"
    )
    # Without the sample corpus (prod, or turned off) only the data source's own limit applies.
    assert build(rag_documents_prefix="b" + longest, rag_sample_corpus=False).rag.documents_prefix == "b" + longest


def test_hierarchical_chunks_over_8000_tokens_combined_are_refused_on_s3_vectors() -> None:
    """kb-chunking.html: hierarchical chunking "is not recommended when using S3 vector bucket as your vector store.
    When using high number of tokens for chunking (over 8000 tokens combined), you may run into metadata size
    limitations." Before: any parent and child up to 8,192 each passed, and ingestion failed later."""
    from stacks.level2_rag.settings import S3VECTORS_HIERARCHICAL_MAX_TOKENS

    assert S3VECTORS_HIERARCHICAL_MAX_TOKENS == 8000
    hierarchical = {"rag_chunking": "hierarchical", "rag_hierarchical_parent_tokens": 6000}
    assert build(**hierarchical, rag_hierarchical_child_tokens=2000).rag.vector_store == "s3vectors"
    with pytest.raises(ConfigError) as caught:
        build(**hierarchical, rag_hierarchical_child_tokens=2001)
    assert str(caught.value).startswith(
        "config error: rag_hierarchical_child_tokens = 2001 is not allowed; expected rag_hierarchical_parent_tokens "
        "+ rag_hierarchical_child_tokens at most 8000 on rag_vector_store s3vectors "
        "(rag_hierarchical_parent_tokens = 6000, so at most 2000 child tokens): AWS does not recommend hierarchical "
        "chunking on S3 Vectors"
    )
    with pytest.raises(ConfigError) as caught:
        build(rag_chunking="hierarchical", rag_hierarchical_parent_tokens=8100, rag_hierarchical_child_tokens=300)
    assert "(rag_hierarchical_parent_tokens = 8100, lower it below 8000)" in str(caught.value)
    # OpenSearch Serverless keeps the hierarchical range; unused hierarchical keys are not held to it either.
    oss = build(**hierarchical, rag_hierarchical_child_tokens=2001, rag_vector_store="opensearch-serverless")
    assert oss.rag.chunking.child_max_tokens == 2001
    assert build(rag_hierarchical_parent_tokens=8192, rag_hierarchical_child_tokens=8000).rag.chunking.strategy == (
        "fixed"
    )


@pytest.mark.parametrize("chunking", ["fixed", "semantic"])
def test_fixed_and_semantic_chunks_over_8000_tokens_are_refused_on_s3_vectors(chunking: str) -> None:
    """A fixed or semantic chunk's text is stored in its vector's non-filterable metadata, and S3 Vectors takes
    "Up to 40 KB (filterable + non-filterable)" per vector (s3-vectors-limitations.html): the kit holds
    rag_chunk_max_tokens to the 8,000 it holds hierarchical chunks to. Before: up to 8,192 passed."""
    assert build(rag_chunking=chunking, rag_chunk_max_tokens=8000).rag.chunking.max_tokens == 8000
    with pytest.raises(ConfigError) as caught:
        build(rag_chunking=chunking, rag_chunk_max_tokens=8192)
    assert str(caught.value) == (
        f"config error: rag_chunk_max_tokens = 8192 is not allowed; expected at most 8000 for {chunking} chunking on "
        "rag_vector_store s3vectors: a chunk's text is stored in its vector's metadata, at most 40 KB, which over "
        "8000 tokens ingestion can exceed; use smaller chunks, or opensearch-serverless for up to 8192"
    )
    # OpenSearch Serverless keeps the API's 8,192; the key is not held to it when hierarchical or none ignores it.
    oss = build(rag_chunking=chunking, rag_chunk_max_tokens=8192, rag_vector_store="opensearch-serverless")
    assert oss.rag.chunking.max_tokens == 8192
    for unused in ("hierarchical", "none"):
        assert build(rag_chunking=unused, rag_chunk_max_tokens=8192).rag.chunking.max_tokens == 8192


def test_the_s3_vectors_hierarchical_limit_is_reported_with_the_other_mistakes() -> None:
    with pytest.raises(ConfigError) as caught:
        build(
            rag_chunking="hierarchical",
            rag_hierarchical_parent_tokens=7000,
            rag_hierarchical_child_tokens=1500,
            rag_chunk_overlap_percent=0,
            rag_max_results=26,
        )
    assert [p.key for p in caught.value.problems] == [
        "rag_chunk_overlap_percent",
        "rag_hierarchical_child_tokens",
        "rag_max_results",
    ]


def test_the_cdk_json_defaults_and_the_documented_variants_pass_the_s3_vectors_limit() -> None:
    from tests.conftest import VARIANTS, cdk_json_context

    defaults = cdk_json_context()
    assert build().rag.vector_store == defaults["rag_vector_store"]
    # The kit's own hierarchical defaults fit S3 Vectors, so switching rag_chunking alone never trips the limit.
    assert build(rag_chunking="hierarchical").rag.chunking.strategy == "hierarchical"
    variant = {k: v for k, v in VARIANTS["prod_extremes"].items() if k.startswith("rag_") or k == "stage"}
    assert variant["rag_chunking"] == "hierarchical"
    assert build(**variant).rag.vector_store == "opensearch-serverless"
