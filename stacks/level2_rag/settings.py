"""Level 2 (RAG) settings: the vector store, the embedding model, chunking, ingestion and retrieval."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from rag_api.settings import ANSWER_MAX_TOKENS_RANGE
from stacks.shared.facts import PROD, SANDBOX
from stacks.shared.settings import Allowed, Flag, FlagOrNull, Invalid, OneOf, Settings, Stripped, Text, Whole

# Embedding models a knowledge base can use, with the vector dimensions each one offers
# (https://docs.aws.amazon.com/bedrock/latest/userguide/knowledge-base-supported.html).
EMBEDDING_MODELS: Mapping[str, tuple[int, ...]] = {
    "amazon.titan-embed-text-v2:0": (256, 512, 1024),
    "cohere.embed-english-v3": (1024,),
    "cohere.embed-multilingual-v3": (1024,),
}
# The most text each embedding model reads of one chunk, in tokens. Titan Text Embeddings V2 "can intake up to 8,192
# tokens" (https://docs.aws.amazon.com/bedrock/latest/userguide/titan-embedding-models.html); Cohere Embed v3 takes
# at most 2,048 characters per text, about 512 tokens at "1 token is about 4 characters", and its default truncation
# "returns an error when the input exceeds the maximum input token length"
# (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed.html).
EMBEDDING_INPUT_TOKENS: Mapping[str, int] = {
    "amazon.titan-embed-text-v2:0": 8192,
    "cohere.embed-english-v3": 512,
    "cohere.embed-multilingual-v3": 512,
}
VectorStore = Literal["s3vectors", "opensearch-serverless"]
VECTOR_STORES: tuple[str, ...] = get_args(VectorStore)
ChunkingStrategy = Literal["fixed", "hierarchical", "semantic", "none"]
CHUNKING_STRATEGIES: tuple[str, ...] = get_args(ChunkingStrategy)
# Letters, digits and - _ . / only: characters no URL encoding changes. S3 URL-encodes the object key in the event
# notifications it sends to SQS, SNS and Lambda (a space becomes "+",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html); its EventBridge page
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html) says nothing either way. Were the key
# encoded, a prefix with ! ' ( ) * would never match the rule's prefix filter and no upload under it would be
# queued; without those characters the kit is safe either way.
_PREFIX_RE = re.compile(r"[A-Za-z0-9_./-]{1,200}/")
_OTHER_CHARACTER_RE = re.compile(r"[^A-Za-z0-9_./-]")
PREFIX_CHARACTERS = "letters, digits and - _ . / only"
# The sample corpus is copied with a BucketDeployment, which tags the bucket "aws-cdk:cr-owned:<prefix>:<8 chars>";
# a tag key is at most 128 characters (https://docs.aws.amazon.com/AmazonS3/latest/userguide/tagging-managing.html),
# so the prefix is at most 128 - 26 characters (CDK refuses a longer one at synth, for every stack of the app).
SAMPLE_CORPUS_MAX_PREFIX = 128 - len("aws-cdk:cr-owned:") - len(":12345678")
# Hierarchical chunking on S3 Vectors: "When using high number of tokens for chunking (over 8000 tokens combined),
# you may run into metadata size limitations" (https://docs.aws.amazon.com/bedrock/latest/userguide/kb-chunking.html).
# A fixed or semantic chunk's text rides in the same non-filterable metadata (AMAZON_BEDROCK_TEXT, stack.py), and a
# vector takes "Up to 40 KB (filterable + non-filterable)"
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/s3-vectors-limitations.html), so the kit holds their
# rag_chunk_max_tokens to the same 8,000 on S3 Vectors (the API itself takes up to 8,192).
S3VECTORS_HIERARCHICAL_MAX_TOKENS = 8000


@dataclass(frozen=True)
class ChunkingSettings:
    """How the data source splits documents; only the fields of ``strategy`` are used."""

    strategy: str
    max_tokens: int  # fixed and semantic
    overlap_percent: int  # fixed
    parent_max_tokens: int  # hierarchical
    child_max_tokens: int  # hierarchical
    overlap_tokens: int  # hierarchical
    buffer_size: int  # semantic: sentences on each side compared
    breakpoint_percentile: int  # semantic


class RagSettings(Settings):
    vector_store: Annotated[VectorStore, Stripped] = Field(
        alias="rag_vector_store",
        description="`s3vectors` has no idle cost; `opensearch-serverless` has one (docs/level-2-rag.md)",
    )
    embedding_model_id: Annotated[Text, OneOf(EMBEDDING_MODELS)] = Field(
        alias="rag_embedding_model_id", description="The knowledge base's embedding model"
    )
    # S3 Vectors index dimension 1-4096; the model decides which of them it offers.
    embedding_dimensions: Whole = Field(
        alias="rag_embedding_dimensions", description="The vector dimensions (each model offers its own)", ge=1, le=4096
    )
    chunking_strategy: Annotated[ChunkingStrategy, Stripped] = Field(
        alias="rag_chunking",
        description="How the data source splits documents (`semantic` also bills foundation-model use at ingestion)",
    )
    # Chunking limits: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_ChunkingConfiguration.html
    # (fixed: overlapPercentage 1-99; hierarchical: maxTokens 1-8192 per level; semantic: bufferSize 0-1,
    # breakpointPercentileThreshold 50-99). The kit asks for at least 20 tokens in a fixed chunk.
    chunk_max_tokens: Whole = Field(
        alias="rag_chunk_max_tokens", description="Fixed-size (and semantic maximum) chunk tokens", ge=20, le=8192
    )
    chunk_overlap_percent: Whole = Field(
        alias="rag_chunk_overlap_percent", description="Fixed-size chunk overlap, percent", ge=1, le=99
    )
    hierarchical_parent_tokens: Whole = Field(
        alias="rag_hierarchical_parent_tokens", description="Hierarchical chunking: parent chunk tokens", ge=1, le=8192
    )
    hierarchical_child_tokens: Whole = Field(
        alias="rag_hierarchical_child_tokens",
        description="Hierarchical chunking: child chunk tokens (fewer than the parent's)",
        ge=1,
        le=8192,
    )
    hierarchical_overlap_tokens: Whole = Field(
        alias="rag_hierarchical_overlap_tokens", description="Hierarchical chunking: overlap tokens", ge=1, le=8192
    )
    semantic_buffer_size: Whole = Field(
        alias="rag_semantic_buffer_size", description="Semantic chunking: sentences compared on each side", ge=0, le=1
    )
    semantic_breakpoint_percentile: Whole = Field(
        alias="rag_semantic_breakpoint_percentile",
        description="Semantic chunking: the breakpoint percentile",
        ge=50,
        le=99,
    )
    # null: on in the sandbox stage, off in prod.
    sample_corpus: FlagOrNull = Field(
        alias="rag_sample_corpus",
        description="Deploy the kit's sample documents (sandbox only); `null`: on in sandbox, off in prod",
        default=None,
        validate_default=True,
    )
    documents_prefix: Annotated[
        Text,
        Allowed(
            "empty or an S3 key prefix ending in '/', e.g. 'docs/' (at most 102 characters with the sample corpus)"
        ),
    ] = Field(
        alias="rag_documents_prefix",
        description="The S3 prefix the data source reads (empty for the whole bucket); a change starts a full sync",
    )
    sync_interval_minutes: Whole = Field(
        alias="rag_sync_interval_minutes",
        description="How often pending changes are coalesced into an ingestion job",
        ge=1,
        le=60,
    )
    # Retrieve numberOfResults is 1-100; the kit keeps answers' context small with at most 25.
    max_results: Whole = Field(
        alias="rag_max_results", description="The default number of retrieved chunks", ge=1, le=25
    )
    # RetrieveAndGenerate textInferenceConfig.maxTokens is 0-65536 (botocore's bedrock-agent-runtime model); the
    # kit caps it at 4096 as Level 1 caps Converse's: the function's range (rag_api.settings), which it enforces.
    answer_max_tokens: Whole = Field(
        alias="rag_answer_max_tokens",
        description="The most tokens an /ask answer may have (RetrieveAndGenerate maxTokens, no more than the "
        "generation model's own output limit): a longer answer is cut off, and a shorter cap answers sooner",
        ge=ANSWER_MAX_TOKENS_RANGE[0],
        le=ANSWER_MAX_TOKENS_RANGE[1],
    )
    opensearch_standby_replicas: Flag = Field(
        alias="rag_opensearch_standby_replicas",
        description="Standby replicas for the OpenSearch collection (doubles its idle floor)",
    )

    @field_validator("embedding_dimensions")
    @classmethod
    def _offered_by_the_model(cls, dimensions: int, info: ValidationInfo) -> int:
        model = info.data.get("embedding_model_id")
        if model and dimensions not in EMBEDDING_MODELS[model]:
            raise Invalid(f"one of {', '.join(map(str, EMBEDDING_MODELS[model]))} for {model}")
        return dimensions

    @field_validator("chunk_max_tokens")
    @classmethod
    def _fits_the_embedding_model(cls, tokens: int, info: ValidationInfo) -> int:
        # Fixed and semantic chunks are embedded whole (hierarchical ones: the child chunks, checked below).
        if info.data.get("chunking_strategy") in ("fixed", "semantic"):
            _within_model_input(tokens, info)
            _chunk_fits_s3_vectors_metadata(tokens, info)
        return tokens

    @field_validator("hierarchical_child_tokens")
    @classmethod
    def _child_inside_parent(cls, child: int, info: ValidationInfo) -> int:
        if child >= info.data.get("hierarchical_parent_tokens", child + 1):
            raise Invalid("fewer tokens than rag_hierarchical_parent_tokens")
        if info.data.get("chunking_strategy") == "hierarchical":
            _within_model_input(child, info)
            _fits_s3_vectors_metadata(child, info)
        return child

    @field_validator("documents_prefix")
    @classmethod
    def _s3_prefix(cls, prefix: str, info: ValidationInfo) -> str:
        if _OTHER_CHARACTER_RE.search(prefix):
            raise Invalid(
                f"an S3 key prefix ending in '/' of {PREFIX_CHARACTERS} (S3 URL-encodes other characters in the keys "
                "of its events, so the event rule's prefix filter would never match)"
            )
        if prefix and (not _PREFIX_RE.fullmatch(prefix) or prefix.startswith("/")):
            raise ValueError("not an S3 key prefix")
        if info.data.get("sample_corpus") and len(prefix) > SAMPLE_CORPUS_MAX_PREFIX:
            raise Invalid(
                f"at most {SAMPLE_CORPUS_MAX_PREFIX} characters while the sample corpus is deployed "
                "(rag_sample_corpus): CDK tags the bucket with the copy's prefix, in a tag key of at most 128"
            )
        return prefix

    @field_validator("sample_corpus")
    @classmethod
    def _sandbox_only(cls, sample: bool | None, info: ValidationInfo) -> bool:
        stage = (info.context or {}).get("stage")
        if sample is None:
            return stage == SANDBOX
        if sample and stage == PROD:
            raise Invalid("false in the prod stage (the sample corpus is for sandboxes)")
        return sample

    @functools.cached_property
    def chunking(self) -> ChunkingSettings:
        return ChunkingSettings(
            strategy=self.chunking_strategy,
            max_tokens=self.chunk_max_tokens,
            overlap_percent=self.chunk_overlap_percent,
            parent_max_tokens=self.hierarchical_parent_tokens,
            child_max_tokens=self.hierarchical_child_tokens,
            overlap_tokens=self.hierarchical_overlap_tokens,
            buffer_size=self.semantic_buffer_size,
            breakpoint_percentile=self.semantic_breakpoint_percentile,
        )


def _fits_s3_vectors_metadata(child: int, info: ValidationInfo) -> None:
    """On S3 Vectors a hierarchical chunk's text rides in the vector's metadata: parent + child over 8,000 tokens
    can fail ingestion, so it is refused at synth."""
    parent = info.data.get("hierarchical_parent_tokens")
    if info.data.get("vector_store") != "s3vectors" or parent is None:
        return
    limit = S3VECTORS_HIERARCHICAL_MAX_TOKENS
    if parent + child > limit:
        room = f"so at most {limit - parent} child tokens" if parent < limit else f"lower it below {limit}"
        raise Invalid(
            f"rag_hierarchical_parent_tokens + rag_hierarchical_child_tokens at most {limit} on rag_vector_store "
            f"s3vectors (rag_hierarchical_parent_tokens = {parent}, {room}): AWS does not recommend hierarchical "
            "chunking on S3 Vectors, and over 8000 tokens combined ingestion can exceed the vector's metadata size "
            "limit; use fixed or semantic chunking, or opensearch-serverless"
        )


def _chunk_fits_s3_vectors_metadata(tokens: int, info: ValidationInfo) -> None:
    """On S3 Vectors a fixed or semantic chunk's text rides in the vector's metadata too: over 8,000 tokens it can
    pass the 40 KB a vector takes, and that document's ingestion fails, so it is refused at synth."""
    limit = S3VECTORS_HIERARCHICAL_MAX_TOKENS
    if info.data.get("vector_store") == "s3vectors" and tokens > limit:
        raise Invalid(
            f"at most {limit} for {info.data.get('chunking_strategy')} chunking on rag_vector_store s3vectors: a "
            "chunk's text is stored in its vector's metadata, at most 40 KB, which over 8000 tokens ingestion can "
            "exceed; use smaller chunks, or opensearch-serverless for up to 8192"
        )


def _within_model_input(tokens: int, info: ValidationInfo) -> None:
    """A chunk the embedding model cannot read whole is refused at synth, not at every ingestion."""
    model = str(info.data.get("embedding_model_id"))
    ceiling = EMBEDDING_INPUT_TOKENS.get(model)
    if ceiling is not None and tokens > ceiling:
        raise Invalid(f"at most {ceiling} for {model} (the most it embeds of one chunk)")
