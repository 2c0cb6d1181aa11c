"""What the kit's sandbox cleanup custom resources share: a deadline that leaves time to answer CloudFormation,
paging, polling until nothing is pending, stopping a state machine's executions, and the handler's answer.

A cleanup resource acts only when its stack is being deleted, answers SUCCESS or FAILED naming what is left
(never a stack trace), and a destroy run again resumes where a failed one stopped. Each function keeps its own
timeouts and seams (``clock``, ``sleep``) and hands them in, so its tests drive time without waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from common.custom_resource import respond

DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"


class CleanupError(Exception):
    """The cleanup cannot finish now; the message says what is left and what to do."""


class Deadline:
    """The time by which the work must stop so that CloudFormation still gets an answer."""

    def __init__(
        self,
        remaining_ms: int,
        *,
        margin_s: float,
        poll_s: float,
        resume_hint: str,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self.poll_s, self.resume_hint = poll_s, resume_hint
        self.end = clock() + remaining_ms / 1000 - margin_s

    def left(self) -> float:
        return self.end - self._clock()

    def check(self, doing: str) -> None:
        if self.left() <= 0:
            raise CleanupError(f"Deadline reached while {doing}. {self.resume_hint}")

    def pause(self, doing: str) -> None:
        self.check(doing)
        self._sleep(min(self.poll_s, self.left()))
        self.check(doing)


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def pages(
    call: Callable[..., dict[str, Any]], key: str, *, token: str = "nextToken", **params: Any
) -> Iterator[dict[str, Any]]:
    """Every item of a paginated list call (``token`` names the page token: nextToken, or NextToken)."""
    next_token = None
    while True:
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


def stack_status(cloudformation: Any, stack_id: str) -> str:
    return str(cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"])


def stop_executions(stepfunctions: Any, state_machine_arn: str, deadline: Deadline, cause: str) -> int:
    """Stop the state machine's running executions, so none creates anything meanwhile; how many were stopped."""
    stopped = 0
    running = pages(
        stepfunctions.list_executions, "executions", stateMachineArn=state_machine_arn, statusFilter="RUNNING"
    )
    for execution in list(running):
        deadline.check("stopping the pipeline's executions")
        try:
            stepfunctions.stop_execution(executionArn=execution["executionArn"], error="StackDeleted", cause=cause)
            stopped += 1
        except ClientError as err:
            if error_code(err) != "ExecutionDoesNotExist":
                raise
    return stopped


def answer(
    event: dict[str, Any],
    *,
    validate: Callable[[dict[str, Any]], object],
    on_delete: Callable[[dict[str, Any]], str],
    physical_id: str,
    retry_hint: str,
    response_timeout_s: float,
    logger: Any,
) -> None:
    """Run the request and always answer CloudFormation: Create and Update only check the properties (a wrong
    one fails at deploy time, not on destroy); Delete runs ``on_delete``. FAILED reasons are one line."""
    kind = event.get("RequestType")
    status = "FAILED"
    try:
        if kind in ("Create", "Update"):
            validate(event.get("ResourceProperties", {}))
            status, reason = "SUCCESS", "nothing to do until the stack is deleted"
        elif kind == "Delete":
            reason = on_delete(event)
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
    if status == "FAILED":
        logger.error("Answering FAILED", extra={"reason": reason})
    physical = event.get("PhysicalResourceId") or physical_id
    respond(event, status, reason, physical, timeout_s=response_timeout_s, logger=logger)
