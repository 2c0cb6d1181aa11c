"""What the kit's sandbox cleanup custom resources share: clients with bounded timeouts, a deadline that leaves
time to answer CloudFormation, paging, polling until nothing is pending, calls that tolerate given errors and
deletes that wait while a resource is busy, and the handler's answer
(which reads the stack's status: a cleanup acts only when its stack is being deleted).

A cleanup resource acts only when its stack is being deleted, answers SUCCESS or FAILED naming what is left
(never a stack trace), and a destroy run again resumes where a failed one stopped. Each function keeps only what
is its own: its scope, what it finds, stops and deletes, its hints and its physical id. The tests replace the
seams of this module (``client``, ``clock``, ``sleep``): the shared steps and the functions' own steps
(through ``client_factory``) get the same fake clients, and drive time without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from common.clients import bounded_client
from common.custom_resource import respond

DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
# One call costs at most MAX_ATTEMPTS x (connect + read) plus standard-mode back-off (about 45 s); the
# answer to CloudFormation at most RESPONSE_TIMEOUT_S. The margin keeps both inside the function's timeout.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
MAX_ATTEMPTS = 3  # attempts per call, the first included
RESPONSE_TIMEOUT_S = 20
ANSWER_MARGIN_S = 90.0
POLL_INTERVAL_S = 15.0

# Seams for the tests (with ``client``): a fake clock advances when the code sleeps.
sleep: Callable[[float], None] = time.sleep
clock: Callable[[], float] = time.monotonic


def client(service: str) -> Any:
    """The ``service`` client of a cleanup: short timeouts, few attempts (one client per service: cached).
    The seam for the tests, which hand out stubbed clients instead."""
    return bounded_client(service, CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS)


def client_factory(service: str) -> Callable[[], Any]:
    """What a function calls its ``service`` client by (``bedrock = client_factory("bedrock")``, then
    ``bedrock().list_custom_models``): each call goes through ``client`` here, so the tests' clients answer.
    While a request is answered, each call first checks its deadline (ANSWER_MARGIN_S pays for one call only)."""

    def get() -> Any:
        before_call(f"calling {service}")
        return client(service)

    return get


_deadline: Deadline | None = None  # the deadline of the request being answered (see answer)


def before_call(doing: str) -> None:
    """Fail at the deadline of the request being answered before a call starts, not after it overran."""
    if _deadline is not None:
        _deadline.check(doing)


class CleanupError(Exception):
    """The cleanup cannot finish now; the message says what is left and what to do."""


def require_properties(props: dict[str, Any], names: tuple[str, ...]) -> None:
    """CleanupError naming the resource properties of ``names`` that are missing or empty."""
    missing = [name for name in names if not props.get(name)]
    if missing:
        raise CleanupError(f"missing resource properties: {', '.join(missing)}")


class Deadline:
    """The time by which the work must stop so that CloudFormation still gets an answer: ANSWER_MARGIN_S before
    the function's timeout; waits poll every POLL_INTERVAL_S."""

    def __init__(self, remaining_ms: int, *, resume_hint: str) -> None:
        self.resume_hint = resume_hint
        self.end = clock() + remaining_ms / 1000 - ANSWER_MARGIN_S

    def left(self) -> float:
        return self.end - clock()

    def check(self, doing: str) -> None:
        if self.left() <= 0:
            raise CleanupError(f"Deadline reached while {doing}. {self.resume_hint}")

    def pause(self, doing: str) -> None:
        self.check(doing)
        sleep(min(POLL_INTERVAL_S, self.left()))
        self.check(doing)


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def pages(
    call: Callable[..., dict[str, Any]], key: str, *, token: str = "nextToken", **params: Any
) -> Iterator[dict[str, Any]]:
    """Every item of a paginated list call (``token`` names the page token: nextToken, or NextToken)."""
    next_token = None
    while True:
        before_call("listing")
        page = call(**params, **({token: next_token} if next_token else {}))
        yield from page.get(key, [])
        next_token = page.get(token)
        if not next_token:
            return


def wait_until_done(pending: Callable[[], list[str]], doing: str, deadline: Deadline) -> None:
    """Poll ``pending`` until it names nothing, or fail at the deadline naming what is still pending."""
    while True:
        left = pending()
        if not left:
            return
        deadline.pause(f"{doing} ({', '.join(left)})")


def tolerate(call: Callable[..., Any], codes: tuple[str, ...], **params: Any) -> None:
    """Make the call; an error whose code is one of ``codes`` (already gone, busy, ended meanwhile) is no failure."""
    try:
        call(**params)
    except ClientError as err:
        if error_code(err) not in codes:
            raise


def delete_when_free(call: Callable[..., Any], doing: str, deadline: Deadline, **params: Any) -> None:
    """A delete that looks again after a pause while the resource is busy for a moment (ConflictException), until
    the deadline; a resource already gone counts as deleted."""
    while True:
        deadline.check(doing)
        try:
            call(**params)
        except ClientError as err:
            if error_code(err) == "ConflictException":
                deadline.pause(doing)
                continue
            if error_code(err) != "ResourceNotFoundException":
                raise
        return


def stack_status(stack_id: str) -> str:
    return str(client("cloudformation").describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"])


def answer(
    event: dict[str, Any],
    context: Any,
    *,
    validate: Callable[[dict[str, Any]], object],
    on_delete: Callable[[dict[str, Any], Deadline], str],
    removes: str,
    physical_id: str,
    retry_hint: str,
    resume_hint: str,
    logger: Any,
    acts_when: tuple[str, ...] = (DELETE_IN_PROGRESS,),
) -> None:
    """Run the request and always answer CloudFormation: Create and Update only check the properties (a wrong
    one fails at deploy time, not on destroy); Delete runs ``on_delete`` before the deadline, and only when the
    stack's status is one of ``acts_when`` (the stack itself being deleted, by default: a Delete sent because an
    update removed the resource leaves what the cleanup ``removes`` in place). FAILED reasons are one line: what is
    left and ``retry_hint``, or, at the deadline, ``resume_hint``."""
    global _deadline
    deadline = Deadline(context.get_remaining_time_in_millis(), resume_hint=resume_hint)
    kind = event.get("RequestType")
    status = "FAILED"
    _deadline = deadline
    try:
        if kind in ("Create", "Update"):
            validate(event.get("ResourceProperties", {}))
            status, reason = "SUCCESS", "nothing to do until the stack is deleted"
        elif kind == "Delete":
            stack = stack_status(event["StackId"])
            if stack in acts_when:
                reason = on_delete(event, deadline)
            else:
                reason = f"the stack is {stack}, not being deleted: {removes} left in place"
            status = "SUCCESS"
        else:
            reason = f"unknown request type {kind!r}"
    except CleanupError as err:
        reason = str(err)
    except ClientError as err:
        reason = f"{error_code(err)}: {err.response.get('Error', {}).get('Message', err)}. {retry_hint}"
    except Exception as err:  # CloudFormation must get an answer whatever happens
        logger.exception("Cleanup failed")
        reason = f"{type(err).__name__}: {err}. {retry_hint}"
    finally:
        _deadline = None
    if status == "FAILED":
        logger.error("Answering FAILED", extra={"reason": reason})
    physical = event.get("PhysicalResourceId") or physical_id
    respond(event, status, reason, physical, timeout_s=RESPONSE_TIMEOUT_S, logger=logger)
