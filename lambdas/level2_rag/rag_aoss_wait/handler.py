"""Custom resource ``Custom::OpenSearchServerlessWait`` (``rag_aoss_wait.handler.handler``).

OpenSearch Serverless applies a new data access policy some time after CloudFormation created it, and makes a
new index searchable some time after it acknowledged it. Creating the index, or the knowledge base that
validates the index, in that window is refused (403, or 404 "no such index"). The stack therefore puts one of
these waits after the policy (``Check: access``) and one after the index (``Check: index``):

- ``access``: ``HEAD /<index>`` answers 200 or 404 (the policy admits this function's role; 403 = not yet);
- ``index``: ``GET /<index>/_search?size=0`` answers 200 (the index exists and answers searches).

A check passes after REQUIRED_PASSES good answers in a row, PROBE_INTERVAL_S apart (a policy or an index
becomes visible node by node). The loop stops DEADLINE_RESERVE_MS before the function's timeout and answers
FAILED with the last status seen, so CloudFormation never waits for an answer that cannot come. Delete has
nothing to undo and answers SUCCESS at once; an invalid property answers FAILED at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from common.custom_resource import respond as answer_cloudformation
from rag_aoss_wait import probe

logger = Logger()

REQUIRED_PASSES = 3
PROBE_INTERVAL_S = 5
DEADLINE_RESERVE_MS = 30_000  # kept for the answer to CloudFormation
RESPONSE_TIMEOUT_S = 10
# check -> (method, path template, statuses that pass)
CHECKS: dict[str, tuple[str, str, frozenset[int]]] = {
    "access": ("HEAD", "/{index}", frozenset({200, 404})),
    "index": ("GET", "/{index}/_search?size=0", frozenset({200})),
}


@dataclass(frozen=True)
class Outcome:
    ready: bool
    probes: int
    last_status: int | None
    waited_s: float


def wait_until_ready(
    check: str,
    target: probe.Target,
    *,
    remaining_ms: Callable[[], int],
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    sender: probe.Sender | None = None,
) -> Outcome:
    """Probe until the check passes REQUIRED_PASSES times in a row, or until the deadline guard stops it."""
    sleep, clock, sender = sleep or time.sleep, clock or time.monotonic, sender or probe.send
    method, path, good = CHECKS[check]
    started = clock()
    passes = probes = 0
    status: int | None = None
    while True:
        status = probe.look(target, method, path.format(index=target.index), sender)
        probes += 1
        passes = passes + 1 if status in good else 0
        if passes >= REQUIRED_PASSES:
            return Outcome(True, probes, status, clock() - started)
        if remaining_ms() - PROBE_INTERVAL_S * 1000 < DEADLINE_RESERVE_MS:
            return Outcome(False, probes, status, clock() - started)
        if passes == 0:
            logger.info("Not ready yet", extra={"check": check, "status": status, "probe": probes})
        sleep(PROBE_INTERVAL_S)


def physical_id(check: str, target: probe.Target) -> str:
    return f"{check}:{target.index}"


def on_create_or_update(event: dict[str, Any], remaining_ms: Callable[[], int]) -> tuple[str, str, str]:
    """(status, reason, physical id) for a Create or Update."""
    props = event.get("ResourceProperties") or {}
    check = props.get("Check")
    if check not in CHECKS:
        return "FAILED", f"Check {str(check)[:40]!r} is not one of {', '.join(CHECKS)}", "invalid"
    try:
        target = probe.parse_target(props.get("CollectionEndpoint"), props.get("IndexName"))
    except ValueError as invalid:
        return "FAILED", str(invalid), "invalid"
    outcome = wait_until_ready(check, target, remaining_ms=remaining_ms)
    fields = {"check": check, "probes": outcome.probes, "status": outcome.last_status, "waited_s": outcome.waited_s}
    if outcome.ready:
        logger.info("Ready", extra=fields)
        return "SUCCESS", f"{check} ready after {outcome.probes} probes", physical_id(check, target)
    logger.error("Not ready before the deadline", extra=fields)
    method, path, _ = CHECKS[check]
    reason = (
        f"OpenSearch Serverless still answered {outcome.last_status or 'no response'} to {method} "
        f"{path.format(index=target.index)} after {outcome.probes} probes over {outcome.waited_s:.0f} s. "
        "Check the collection's data access policy and network policy, then deploy again."
    )
    return "FAILED", reason, physical_id(check, target)


def respond(event: dict[str, Any], status: str, reason: str, physical: str) -> None:
    """Answer CloudFormation on the pre-signed ResponseURL it sent."""
    answer_cloudformation(event, status, reason, physical, timeout_s=RESPONSE_TIMEOUT_S, logger=logger)


def remaining_time(context: Any) -> Callable[[], int]:
    method = getattr(context, "get_remaining_time_in_millis", None)
    if callable(method):
        return lambda: int(method())
    return lambda: 0  # no Lambda context: one probe, then the deadline guard stops


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    kind = event.get("RequestType")
    if kind == "Delete":
        status, reason, physical = "SUCCESS", "nothing to delete", str(event.get("PhysicalResourceId") or "deleted")
    else:
        try:
            status, reason, physical = on_create_or_update(event, remaining_time(context))
        except Exception as err:  # CloudFormation must always get an answer
            logger.exception("Wait failed")
            status, reason = "FAILED", f"{type(err).__name__}: {err}"[:500]
            physical = str(event.get("PhysicalResourceId") or "failed")
    respond(event, status, reason, physical)
