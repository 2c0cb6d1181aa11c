"""Level 2 test set-up."""

from __future__ import annotations

import functools

import moto.sqs.models

# moto's SQS converts every queue attribute name with camelcase_to_underscores each time a queue's attributes are
# read (about a quarter of the ingestion guards' time goes there). The function is pure: memoize it for the run.
moto.sqs.models.camelcase_to_underscores = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    moto.sqs.models.camelcase_to_underscores
)
