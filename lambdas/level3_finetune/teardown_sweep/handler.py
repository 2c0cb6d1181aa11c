"""Hourly backstop for Level 3's teardown: the status event that starts it is delivered best effort.

Step Functions sends "Step Functions Execution Status Change" with delivery type "Best effort"
(https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-states.html): "in some rare cases an event might not
be delivered" (https://docs.aws.amazon.com/eventbridge/latest/ref/event-delivery-level.html). A lost event would
leave what a timed-out or aborted run holds (a Provisioned Throughput, an imported model) billing. Every hour this
function lists the pipeline's executions that ended FAILED, TIMED_OUT or ABORTED between WINDOW_MINUTES and
SETTLE_MINUTES ago (ListExecutions with statusFilter, newest first, at most MAX_PAGES pages per status) and starts
the teardown for each under the name ``sweep-<SHA-256 of the execution ARN>``, with the input the teardown gets
from the event (``detail.executionArn``, ``detail.status``, ``detail.name``). Execution names are unique per state
machine (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html), so overlapping
windows start it at most once per run: ExecutionAlreadyExists means already swept. A teardown named ``sweep-``
reports only what it stopped or deleted itself, so a run the event path already tore down (or that failed on the
pipeline's own notified paths) is not reported twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from common.clients import bounded_client
from teardown_sweep.names import ENDED_ABNORMALLY, sweep_name

logger = Logger()

PAGE_SIZE = 100
MAX_PAGES = 10  # per status: the first 1,000 executions of each status (ended ones are sorted by their stopDate)
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ATTEMPTS = 3, 10, 3


def client() -> Any:
    """The Step Functions client (the tests' seam)."""
    return bounded_client("stepfunctions", CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ATTEMPTS)


def ended(sfn: Any, pipeline: str, status: str, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
    """The pipeline's executions of ``status`` that stopped in [since, until)."""
    token = None
    for _ in range(MAX_PAGES):
        paging: dict[str, str] = {"nextToken": token} if token else {}
        page = sfn.list_executions(stateMachineArn=pipeline, statusFilter=status, maxResults=PAGE_SIZE, **paging)
        for execution in page.get("executions", []):
            stopped = execution.get("stopDate")
            if stopped is not None and since <= stopped < until:
                yield execution
        token = page.get("nextToken")
        if not token:
            return
    logger.warning("more executions than the sweep reads", extra={"status": status, "pages": MAX_PAGES})


# StartExecution answers success, with the running execution, when one of the same name and input is still open
# ("When the original execution is open and the execution input from the new call is identical, the Success message
# is returned", https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html): a teardown an
# earlier sweep started that is still running (its deletes may retry for an hour) comes back so. An answer whose
# startDate is older than the sweep by more than this is that earlier start, not a new one.
EARLIER_START = timedelta(minutes=5)


def start_teardown(sfn: Any, teardown: str, execution: dict[str, Any], now: datetime) -> bool:
    """Start the teardown for one ended execution; False when a sweep already started it (it ended, or it still
    runs and StartExecution answered with it)."""
    detail = {
        "executionArn": execution["executionArn"],
        "stateMachineArn": execution["stateMachineArn"],
        "name": execution["name"],
        "status": execution["status"],
    }
    try:
        answer = sfn.start_execution(
            stateMachineArn=teardown,
            name=sweep_name(execution["executionArn"], int(execution.get("redriveCount") or 0)),
            input=json.dumps({"source": "genai-spectrum-kit.teardown-sweep", "detail": detail}),
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return False
        raise
    started = answer.get("startDate")  # required in botocore's StartExecutionOutput
    return not (isinstance(started, datetime) and started < now - EARLIER_START)


def sweep(now: datetime, pipeline: str, teardown: str, window: timedelta, settle: timedelta) -> dict[str, Any]:
    """Start the teardown for each execution that ended abnormally in [now - window, now - settle). One that
    cannot be started does not stop the others; the function then fails (and the next hour tries again)."""
    sfn = client()
    started: list[str] = []
    failed: list[str] = []
    swept = 0
    for status in ENDED_ABNORMALLY:
        for execution in ended(sfn, pipeline, status, now - window, now - settle):
            try:
                if start_teardown(sfn, teardown, execution, now):
                    started.append(execution["executionArn"])
                else:
                    swept += 1
            except (ClientError, BotoCoreError):  # a refusal, or a timeout or dropped connection: go on to the next
                logger.exception("teardown not started", extra={"execution": execution["executionArn"]})
                failed.append(execution["executionArn"])
    if started:
        logger.info("teardown started for ended executions", extra={"executions": started})
    if failed:
        raise RuntimeError(f"the teardown could not be started for {len(failed)} ended executions: {failed}")
    return {"started": started, "alreadySwept": swept}


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return sweep(
        datetime.now(UTC),
        os.environ["PIPELINE_ARN"],
        os.environ["TEARDOWN_ARN"],
        timedelta(minutes=int(os.environ["WINDOW_MINUTES"])),
        timedelta(minutes=int(os.environ["SETTLE_MINUTES"])),
    )
