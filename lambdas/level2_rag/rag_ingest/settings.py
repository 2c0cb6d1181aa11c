"""The ingest function's environment contract, parsed lazily into a frozen object on first use."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from common.bedrock_ids import BEDROCK_ID
from common.env import env_int, env_matching, env_str
from common.s3 import BUCKET_NAME

DEFAULT_MAX_MESSAGES_PER_RUN = 10_000
MAX_MESSAGES_LIMIT = 100_000
REVISION_LENGTH = 16  # DATA_SOURCE_REVISION: hex digits of a digest the stack takes (stacks/level2_rag/stack.py)
REVISION = re.compile(rf"^[0-9a-f]{{{REVISION_LENGTH}}}$")
QUEUE_URL = re.compile(r"^https://\S+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")


@dataclass(frozen=True)
class Settings:
    queue_url: str
    knowledge_base_id: str
    data_source_id: str
    documents_bucket: str
    documents_prefix: str
    data_source_revision: str  # the stack's digest of the data source's properties (see ingestion.py)
    max_messages_per_run: int
    metrics_namespace: str
    service_name: str


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read and validate the environment once; raises ConfigurationError naming the bad variable."""
    return Settings(
        queue_url=env_matching(
            "QUEUE_URL", QUEUE_URL, "an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
        ),
        knowledge_base_id=env_matching("KNOWLEDGE_BASE_ID", BEDROCK_ID, "a 10-character knowledge base id"),
        data_source_id=env_matching("DATA_SOURCE_ID", BEDROCK_ID, "a 10-character data source id"),
        documents_bucket=env_matching("DOCUMENTS_BUCKET", BUCKET_NAME, "an S3 bucket name"),
        documents_prefix=os.environ.get("DOCUMENTS_PREFIX", "").strip(),
        data_source_revision=env_matching(
            "DATA_SOURCE_REVISION", REVISION, "16 hex digits (the stack's digest of the data source's properties)"
        ),
        max_messages_per_run=env_int("MAX_MESSAGES_PER_RUN", DEFAULT_MAX_MESSAGES_PER_RUN, 1, MAX_MESSAGES_LIMIT),
        metrics_namespace=env_str("POWERTOOLS_METRICS_NAMESPACE"),
        service_name=env_str("POWERTOOLS_SERVICE_NAME"),
    )
