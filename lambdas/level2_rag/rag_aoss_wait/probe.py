"""One signed look at an OpenSearch Serverless collection's data plane, answered by its HTTP status.

Requests are signed with SigV4 for the service ``aoss`` with the function's own credentials, carry the
``x-amz-content-sha256`` header OpenSearch Serverless requires, and use short timeouts. A network error or a
timeout is answered as status ``None`` (not ready yet), never raised.
https://docs.aws.amazon.com/opensearch-service/latest/developerguide/serverless-clients.html
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SERVICE = "aoss"
REQUEST_TIMEOUT_S = 5  # connect and each read: a probe that hangs is simply "not yet"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# https://<collection id>.<region>.aoss.amazonaws.com: the function signs requests for this host only.
ENDPOINT = re.compile(r"^https://[a-z0-9]{3,40}\.(?P<region>[a-z]{2}(-[a-z]+)+-\d)\.aoss\.amazonaws\.com$")
# AWS::OpenSearchServerless::Index IndexName pattern (the registry schema).
INDEX_NAME = re.compile(r"^(?![_-])[a-z][a-z0-9_-]*$")

Sender = Callable[[str, str, dict[str, str]], "int | None"]


@dataclass(frozen=True)
class Target:
    endpoint: str
    region: str
    index: str


def parse_target(endpoint: Any, index: Any) -> Target:
    """The collection endpoint and index to probe; ValueError naming the property when one is invalid."""
    match = ENDPOINT.match(endpoint) if isinstance(endpoint, str) else None
    if match is None:
        raise ValueError(f"CollectionEndpoint {str(endpoint)[:120]!r} is not an OpenSearch Serverless endpoint")
    if not isinstance(index, str) or not INDEX_NAME.match(index):
        raise ValueError(f"IndexName {str(index)[:120]!r} is not a valid OpenSearch Serverless index name")
    return Target(endpoint=endpoint, region=match.group("region"), index=index)


@lru_cache(maxsize=1)
def credentials() -> Any:
    """The function's credentials (botocore's chain; botocore is imported on first use only)."""
    import botocore.session

    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise RuntimeError("no AWS credentials found")
    return found


def signed_headers(method: str, url: str, region: str) -> dict[str, str]:
    """SigV4 headers for a body-less request to OpenSearch Serverless."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, headers={"x-amz-content-sha256": EMPTY_SHA256})
    SigV4Auth(credentials().get_frozen_credentials(), SERVICE, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def send(method: str, url: str, headers: dict[str, str]) -> int | None:
    """The HTTP status of one request; None when the collection could not be reached in time."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(
            request, timeout=REQUEST_TIMEOUT_S
        ) as answer:  # parse_target admits https aoss hosts only
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except (urllib.error.URLError, TimeoutError, OSError):
        return None


def look(target: Target, method: str, path: str, sender: Sender = send) -> int | None:
    """Sign and send one request to ``path`` (with its query string) on the collection endpoint."""
    url = target.endpoint + path
    if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(target.endpoint).netloc:
        raise ValueError(f"{path!r} leaves the collection endpoint")
    return sender(method, url, signed_headers(method, url, target.region))
