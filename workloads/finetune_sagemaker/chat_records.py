"""The rules of one chat-format training record: the one copy the training program (chat_data.py), the pipeline's
check before the training job (the sagemaker_validate Lambda function) and ``kit l3sm start --training`` apply.

A record is one JSON object per line::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

Roles are ``system`` (optional, first only), ``user`` and ``assistant``; every content is a non-empty string; the
conversation starts with the system or a user message and holds at least one assistant message.

Standard library only (no torch): the training container imports it as ``chat_records`` from the source
directory, the Lambda function and the kit as ``workloads.finetune_sagemaker.chat_records``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ROLES = ("system", "user", "assistant")


def record_problem(record: Any) -> str | None:
    """What is wrong with one parsed record, or None when it can be trained on."""
    if not isinstance(record, Mapping):
        return "a record must be a JSON object with a 'messages' list"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    roles: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            return f"messages[{index}] must be an object with 'role' and 'content'"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}"
        if not isinstance(content, str) or not content.strip():
            return f"messages[{index}].content must be a non-empty string"
        if role == "system" and index != 0:
            return f"messages[{index}]: a system message may only come first"
        roles.append(role)
    first_turn = roles[1] if roles[0] == "system" and len(roles) > 1 else roles[0]
    if first_turn != "user":
        return "the conversation must start with a user message (after an optional system message)"
    if "assistant" not in roles:
        return "the conversation holds no assistant message to learn from"
    return None


def messages_of(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The role and content of each message of a record :func:`record_problem` accepted (other keys dropped)."""
    return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]


def is_blank(line: str) -> bool:
    """A line holding only white space: skipped, not a record (it still counts in line numbers)."""
    return not line.strip()


class RecordError(ValueError):
    """A line that is not a trainable record; the message says why (without the file and line)."""


# Files are opened as UTF-8 with this error handler: a line that is not UTF-8 keeps its place in the count (its
# bad bytes become lone surrogates) and is reported as a bad line, as the pipeline's check reports it.
TEXT_ERRORS = "surrogateescape"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def _not_utf8(line: str) -> str | None:
    # One scan in C: a character-by-character loop in Python cost more than parsing the line's JSON.
    found = _ESCAPED_BYTE.search(line)
    if found is None:
        return None
    byte = len(line[: found.start()].encode("utf-8", TEXT_ERRORS)) + 1
    return f"not UTF-8 text (byte {byte} of the line)"


def line_messages(line: str) -> list[dict[str, str]]:
    """The messages of one non-blank line of a JSONL file, or a RecordError: not UTF-8, not JSON, or a bad record."""
    if (problem := _not_utf8(line)) is not None:
        raise RecordError(problem)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordError(f"not valid JSON ({err.msg})") from None
    except ValueError as err:  # an integer of over 4,300 digits: json.loads raises ValueError, not JSONDecodeError
        raise RecordError(f"not valid JSON ({err})") from None
    except RecursionError:  # json's decoder recurses once per nesting level
        raise RecordError("not valid JSON (nested too deeply)") from None
    problem = record_problem(record)
    if problem is not None:
        raise RecordError(problem)
    return messages_of(record)


def line_problem(line: str) -> str | None:
    """What is wrong with one non-blank line of a JSONL file, or None."""
    try:
        line_messages(line)
    except RecordError as err:
        return str(err)
    return None
