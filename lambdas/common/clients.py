"""boto3 clients whose timeouts fit one attempt: botocore sets timeouts per client, not per call.

``bounded_client`` caches one client per (service, timeouts), created on first use (boto3 is imported there,
never at module import). Each makes exactly one HTTP attempt per call: the kit retries itself, deadline-aware
(``common.http.call_with_deadline``), so an attempt that may not outlive the function gets a client whose
read timeout is the time it has.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

MAX_CACHED_CLIENTS = 64


def client_config(connect_timeout_s: int, read_timeout_s: int, attempts: int = 1) -> dict[str, Any]:
    """botocore Config arguments: ``attempts`` per call ("total_max_attempts" counts the first one)."""
    return {
        "retries": {"total_max_attempts": attempts, "mode": "standard"},
        "connect_timeout": connect_timeout_s,
        "read_timeout": read_timeout_s,
    }


@lru_cache(maxsize=MAX_CACHED_CLIENTS)
def bounded_client(service: str, connect_timeout_s: int, read_timeout_s: int, attempts: int = 1) -> Any:
    """A ``service`` client that waits at most these timeouts and makes at most ``attempts`` tries per call
    (1, the default, for callers that retry themselves; custom resources let botocore retry a few times)."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(**client_config(connect_timeout_s, read_timeout_s, attempts)))
