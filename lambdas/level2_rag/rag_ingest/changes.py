"""Reading one queued message: an S3 document change (EventBridge event) or a poison message.

The EventBridge rule sends the whole event as the SQS message body::

    {"source": "aws.s3", "detail-type": "Object Created" | "Object Deleted",
     "detail": {"bucket": {"name": ...}, "object": {"key": ...}, ...}, "id": ..., "time": ..., ...}

Anything else (unparseable JSON, another shape, another bucket) is poison: the function never deletes it, so
the queue's redrive policy moves it to the dead-letter queue. A change of a key outside the documents prefix is
not poison: the event rule forwards only keys under the prefix, so it was sent under a previous prefix
(``rag_documents_prefix`` changed while it was queued) and the caller decides what it is worth (``covered``).
Whatever goes wrong while reading one body makes that message, and only that message, poison: json.loads
raises RecursionError for a deeply nested body, ValueError (JSONDecodeError, UnicodeError) for bad text and
could raise MemoryError for a pathological one; each becomes a PoisonMessage naming the exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.errors import trim

SOURCE = "aws.s3"
DETAIL_TYPES = {"Object Created": "created", "Object Deleted": "deleted"}
_SHOWN_CHARS = 120


class PoisonMessage(ValueError):
    """A message that is not a document change of this knowledge base; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# S3 sends "Object Deleted" with reason Lifecycle Expiration and deletion-type Permanently Deleted when a lifecycle
# rule removes an object version for good (https://docs.aws.amazon.com/AmazonS3/latest/userguide/EventBridge.html).
# The documents bucket's only expiration is of noncurrent versions (NoncurrentVersionExpiration; a test holds the
# stack to that), so such an event never changes a document the knowledge base indexes.
LIFECYCLE_EXPIRATION = "Lifecycle Expiration"
PERMANENTLY_DELETED = "Permanently Deleted"


@dataclass(frozen=True)
class Change:
    kind: str  # "created" | "deleted"
    bucket: str
    key: str
    event_id: str
    noncurrent: bool = False  # an old version removed by the bucket's lifecycle: the current document is unchanged


def covered(key: str, prefix: str) -> bool:
    """Whether the data source's inclusion prefix covers ``key`` (an empty prefix covers the whole bucket)."""
    return key.startswith(prefix)


def parse_change(body: Any, *, bucket: str) -> Change:
    """The document change a message body describes; PoisonMessage (with the reason) otherwise."""
    if not isinstance(body, str):
        raise PoisonMessage("the body is not text")
    try:
        event = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeError are ValueErrors
        event = None
    except (RecursionError, MemoryError, TypeError) as exc:
        raise PoisonMessage(f"the body could not be parsed ({type(exc).__name__})") from None
    if event is None:
        raise PoisonMessage("the body is not valid JSON")
    if not isinstance(event, dict):
        raise PoisonMessage("the body is not a JSON object")
    source, detail_type = event.get("source"), event.get("detail-type")
    if source != SOURCE:
        raise PoisonMessage(f"source is {_shown(source)}, not {SOURCE}")
    if not isinstance(detail_type, str) or detail_type not in DETAIL_TYPES:
        raise PoisonMessage(f"detail-type is {_shown(detail_type)}, not Object Created or Object Deleted")
    detail = event.get("detail")
    event_bucket = _path(detail, "bucket", "name")
    key = _path(detail, "object", "key")
    if not isinstance(event_bucket, str) or not event_bucket:
        raise PoisonMessage("detail.bucket.name is missing")
    if event_bucket != bucket:
        raise PoisonMessage(f"bucket {_shown(event_bucket)} is not the documents bucket")
    if not isinstance(key, str) or not key:
        raise PoisonMessage("detail.object.key is missing")
    event_id = event.get("id")
    return Change(
        kind=DETAIL_TYPES[detail_type],
        bucket=event_bucket,
        key=key,
        event_id=event_id if isinstance(event_id, str) else "",
        noncurrent=DETAIL_TYPES[detail_type] == "deleted"
        and _path(detail, "reason") == LIFECYCLE_EXPIRATION
        and _path(detail, "deletion-type") == PERMANENTLY_DELETED,
    )


def _path(node: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def _shown(value: Any) -> str:
    """A short, log-safe rendering of a field's value (never the whole of a nested one)."""
    if isinstance(value, str):
        return repr(trim(value, _SHOWN_CHARS))  # repr escapes control characters and lone surrogates
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return json.dumps(value)[:_SHOWN_CHARS]  # null, true/false or a number
