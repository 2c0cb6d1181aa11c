"""Answering CloudFormation from a custom resource's function (the kit's custom resources answer it themselves).

CloudFormation waits for a PUT of the outcome to the pre-signed ``ResponseURL`` in the event:
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

MAX_REASON = 1000  # keep the answer well under CloudFormation's 4 KB response limit


def respond(
    event: dict[str, Any], status: str, reason: str, physical_id: str, *, timeout_s: float, logger: Any
) -> None:
    """PUT ``status`` (SUCCESS or FAILED) with ``reason`` to the event's ResponseURL (https only)."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:MAX_REASON],
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
