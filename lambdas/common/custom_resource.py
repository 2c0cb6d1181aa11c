"""Answering CloudFormation from a custom resource's function (the kit's custom resources answer it themselves).

CloudFormation waits for a PUT of the outcome to the pre-signed ``ResponseURL`` in the event:
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

# Bytes of the Reason in the answer's JSON: the whole answer must stay under 4,096 bytes (crpg-ref-responses.html),
# and the rest of it (ids, the pre-signed URL's stack and request ids) takes well under 1,500.
MAX_REASON = 1000
ELLIPSIS = "…"


def encoded_length(reason: str) -> int:
    """The bytes ``reason`` takes in the answer (JSON escapes each non-ASCII character as 6 bytes, or 12)."""
    return len(json.dumps(reason)) - 2


def fit_reason(reason: str) -> str:
    """``reason``, cut (and marked with an ellipsis) to at most MAX_REASON bytes in the answer."""
    if encoded_length(reason) <= MAX_REASON:
        return reason
    keep, over = 0, len(reason)  # the longest prefix that fits with the ellipsis: keep fits, over does not
    while over - keep > 1:
        middle = (keep + over) // 2
        if encoded_length(reason[:middle] + ELLIPSIS) <= MAX_REASON:
            keep = middle
        else:
            over = middle
    return reason[:keep] + ELLIPSIS


def respond(
    event: dict[str, Any], status: str, reason: str, physical_id: str, *, timeout_s: float, logger: Any
) -> None:
    """PUT ``status`` (SUCCESS or FAILED) with ``reason`` to the event's ResponseURL (https only)."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": fit_reason(reason),
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": {},
        }
    ).encode()
    url = str(event["ResponseURL"])
    if not url.startswith("https://"):
        raise ValueError("ResponseURL is not an https URL")
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # checked: https only
        logger.info("Answered CloudFormation", extra={"status": status, "http": answer.status})
