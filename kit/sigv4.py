"""Call the kit's IAM-authorized REST APIs: SigV4 for execute-api (botocore's signer), JSON in and out.

Every kit API answers errors as ``{"error": {"code", "message", "field"?}}``; :class:`ApiError` carries
that contract so a command can show it as one line. In your own code the same steps sign a request:
build a ``botocore.awsrequest.AWSRequest``, call ``SigV4Auth(credentials, "execute-api", region).add_auth``,
and send the signed headers with any HTTP client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse
from urllib.request import urlopen

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

SERVICE = "execute-api"
# API Gateway's integration timeout is 29 s by default
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html): the client waits a little longer.
TIMEOUT_S = 35
SHOWN_BODY_CHARS = 300


def region_of(url: str) -> str:
    """execute-api hosts look like ID.execute-api.REGION.amazonaws.com."""
    parts = (urlparse(url).hostname or "").split(".")
    if len(parts) < 4 or parts[1] != SERVICE:
        raise ValueError(f"{url!r} is not an API Gateway execute-api URL")
    return parts[2]


def join(base: str, path: str) -> str:
    """``base`` (a stage URL such as the ApiUrl output, with or without the final /) plus a route path."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def signed_request(
    method: str, url: str, body: Any | None, credentials: Any, region: str | None = None
) -> urllib.request.Request:
    """A urllib request for ``url`` with a JSON body (None: no body) and SigV4 headers for execute-api."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials, SERVICE, region or region_of(url)).add_auth(request)
    return urllib.request.Request(url, data=data, headers=dict(request.headers.items()), method=method)


@dataclass(eq=False)
class ApiError(Exception):
    """An error answer of a kit API (or of whatever stood in front of it)."""

    status: int
    code: str
    message: str
    field: str | None = None
    retry_after: str | None = None

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        retry = f"; retry after {self.retry_after} s" if self.retry_after else ""
        return f"HTTP {self.status} {self.code}{where}: {self.message}{retry}"


class ApiUnreachable(Exception):
    """The API could not be reached or did not answer in time."""


def parse_error(status: int, raw: bytes, retry_after: str | None = None) -> ApiError:
    """The ``{"error": {...}}`` contract of an error body; any other body is shown as it came."""
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return ApiError(
            status,
            str(error.get("code") or "error"),
            str(error.get("message") or ""),
            str(error["field"]) if error.get("field") is not None else None,
            retry_after,
        )
    if isinstance(body, dict) and isinstance(body.get("message"), str):  # API Gateway's own default shape
        return ApiError(status, "gateway_error", body["message"], None, retry_after)
    shown = " ".join(text.split())[:SHOWN_BODY_CHARS] or "(empty body)"
    return ApiError(status, "http_error", shown, None, retry_after)


def call(
    method: str,
    url: str,
    body: Any | None,
    credentials: Any,
    *,
    region: str | None = None,
    timeout: float = TIMEOUT_S,
) -> Any:
    """Send one signed request and return the decoded JSON answer; ApiError / ApiUnreachable otherwise."""
    request = signed_request(method, url, body, credentials, region)
    try:
        with urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise parse_error(
            err.code, err.read() or b"", err.headers.get("Retry-After") if err.headers else None
        ) from None
    except TimeoutError:
        raise ApiUnreachable(f"{url} did not answer within {timeout:g} s") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise ApiUnreachable(f"{url} did not answer within {timeout:g} s") from None
        raise ApiUnreachable(f"cannot reach {url}: {err.reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiUnreachable(f"{url} answered with a body that is not JSON: {raw[:SHOWN_BODY_CHARS]!r}") from None
