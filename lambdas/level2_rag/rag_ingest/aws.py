"""The ingest function's AWS clients, created on first use (boto3 is imported here, not at module import)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# Short network timeouts (every call here is a small control-plane request) and botocore's standard retries
# for throttling and transient errors. StartIngestionJob carries a client token, so its retries are idempotent.
CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"total_max_attempts": 3, "mode": "standard"},
    "connect_timeout": 3,
    "read_timeout": 10,
}


@lru_cache(maxsize=1)
def get_sqs_client() -> Any:
    """The SQS client of the change queue."""
    return _client("sqs")


@lru_cache(maxsize=1)
def get_agent_client() -> Any:
    """The bedrock-agent client (ingestion jobs)."""
    return _client("bedrock-agent")


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(**CLIENT_CONFIG))
