"""The name the sweep gives the teardown it starts, read by the stack too (stacks/level3_finetune/teardown.py: a
teardown named so reports only what it stopped or deleted)."""

from __future__ import annotations

import hashlib

SWEEP_PREFIX = "sweep-"


def sweep_name(execution_arn: str) -> str:
    """The teardown's execution name for an ended run: 6 + 64 characters, within StartExecution's 80."""
    return SWEEP_PREFIX + hashlib.sha256(execution_arn.encode()).hexdigest()
