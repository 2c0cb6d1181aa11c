"""Level 2 settings: chunking, embedding and retrieval keys, their `-c` string forms and cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.config import ConfigError
from stacks.level2_rag.settings import EMBEDDING_MODELS, ChunkingSettings
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


def test_rag_mistakes_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        build(rag_chunk_overlap_percent=0, rag_hierarchical_child_tokens=2000, rag_documents_prefix="/docs/")
    assert [p.key for p in caught.value.problems] == [
        "rag_chunk_overlap_percent",
        "rag_hierarchical_child_tokens",
        "rag_documents_prefix",
    ]
