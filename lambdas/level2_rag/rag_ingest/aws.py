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
# The longest one call may take: every attempt's connect and read timeouts, and the waits between attempts. botocore's
# standard mode waits rand(0, 1) x 2**i s before retry i+1 of a throttled call (less otherwise), raised by an
# x-amz-retry-after header to at most 5 s more (botocore/retries/standard.py, ExponentialBackoff.delay_amount).
_ATTEMPTS = CLIENT_CONFIG["retries"]["total_max_attempts"]
CALL_BUDGET_S = _ATTEMPTS * (CLIENT_CONFIG["connect_timeout"] + CLIENT_CONFIG["read_timeout"]) + sum(
    2**i + 5 for i in range(_ATTEMPTS - 1)
)


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
