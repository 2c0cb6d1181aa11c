"""Level 2 test set-up."""

from __future__ import annotations

import functools
import string
from typing import Any

import moto.core.responses
import moto.sqs.models
from moto.moto_api._internal import mock_random

# moto's SQS converts every queue attribute name with camelcase_to_underscores each time a queue's attributes are
# read (about a quarter of the ingestion guards' time goes there). The function is pure: memoize it for the run.
moto.sqs.models.camelcase_to_underscores = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    moto.sqs.models.camelcase_to_underscores
)
# moto's request dispatch also lists the response class's methods (inspect.getmembers) on every request to see
# whether the action is one of them; a response class's methods are fixed once it is defined.
moto.core.responses.method_names_from_class = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    moto.core.responses.method_names_from_class
)
moto.core.responses.camelcase_to_underscores = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    moto.core.responses.camelcase_to_underscores
)


def _receipt_handle() -> str:
    """moto's receipt handle (185 random lowercase letters from moto's own Random), drawn in one call, not 185."""
    return "".join(mock_random.choices(string.ascii_lowercase, k=185))


moto.sqs.models.generate_receipt_handle = _receipt_handle


def _is_message_valid_based_on_retention_period(
    self: moto.sqs.models.SQSBackend, queue_name: str, message: Any
) -> bool:
    """moto's check, reading the one attribute it needs.

    moto reads the retention period through get_queue_attributes, which builds every attribute of the queue three
    times, each time counting the visible, in-flight and delayed messages: a receive of n messages from a queue of
    m costs O(n * m) (most of the 1000-change burst's time). The period is the queue's message_retention_period
    (the attribute moto reports), and the comparison is moto's, on moto's clock (the module's unix_time, which the
    tests set to the simulated clock).
    """
    retention_period = self.get_queue(queue_name).message_retention_period
    return bool(retention_period + message.sent_timestamp / 1000 > moto.sqs.models.unix_time())


moto.sqs.models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
    _is_message_valid_based_on_retention_period
)
