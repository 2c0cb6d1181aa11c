"""Custom resource: holds the account-wide invocation-logging stack to the stage that created it.

That stack has one name in every stage (the setting it manages is one per account and Region), but its log
retention and what a destroy keeps come from the stage of the deploy. Without this, a sandbox deploy of it (or of
a sandbox Level 3 that depends on it) would shorten a prod deployment's log retention and make its logs
destroyable.

Every other resource of the stack depends on this one, so CloudFormation updates it first ("Resource B is updated
before resource A": https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-dependson.html).

- Create: SUCCESS; the physical id records the stage (``stage-<stage>``).
- Update to the recorded stage (a redeploy, or CloudFormation rolling back a refused update): SUCCESS, same id.
- Update to another stage: FAILED with what to do. The stack update stops before anything else changed and rolls
  back. The same physical id is always returned: a new one would make CloudFormation replace the resource
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html).
- Delete: SUCCESS (the lock goes with its stack).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from common.custom_resource import respond

logger = Logger()

PREFIX = "stage-"
RESPONSE_TIMEOUT_S = 20


def locked_stage(physical_id: str) -> str:
    return physical_id.removeprefix(PREFIX)


def decide(event: dict[str, Any]) -> tuple[str, str, str]:
    """(status, reason, physical id) for one request."""
    kind = event.get("RequestType")
    stage = str((event.get("ResourceProperties") or {}).get("Stage") or "")
    stack = str((event.get("ResourceProperties") or {}).get("StackName") or "this stack")
    # The options that put the opt-in stack in the app (e.g. -c invocation_logging=true): without them a command
    # naming the stack finds none.
    options = str((event.get("ResourceProperties") or {}).get("Options") or "").strip()
    with_options = f" {options}" if options else ""
    physical = str(event.get("PhysicalResourceId") or f"{PREFIX}{stage}")
    if kind == "Delete":
        return "SUCCESS", "released", physical
    if not stage:
        return "FAILED", "the Stage property is missing: nothing changed", physical
    if kind == "Create":
        return "SUCCESS", f"held to stage {stage}", f"{PREFIX}{stage}"
    if kind != "Update":
        return "FAILED", f"unknown request type {kind!r}: nothing changed", physical
    locked = locked_stage(physical)
    if stage == locked:
        return "SUCCESS", f"held to stage {stage}", physical
    return (
        "FAILED",
        f"{stack} was deployed by stage {locked}; this deploy (stage {stage}) would change its log retention "
        f"and whether a destroy keeps its logs, so nothing was changed. Deploy it with -c stage={locked}"
        f"{with_options}; deploy a {stage} stack that reads these logs with --exclusively (-e) so this stack stays "
        f"as it is; or destroy {stack} with -c stage={locked}{with_options} first (with the stage's Level 3 that "
        f"reads these logs) to hand it to stage {stage}.",
        physical,
    )


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    try:
        status, reason, physical = decide(event)
    except Exception as err:  # never leave CloudFormation waiting
        logger.exception("Stage lock failed")
        status, reason = ("SUCCESS" if event.get("RequestType") == "Delete" else "FAILED"), type(err).__name__
        physical = str(event.get("PhysicalResourceId") or "stage-unknown")
    if status == "FAILED":
        logger.error("Answering FAILED", extra={"reason": reason})
    respond(event, status, reason, physical, timeout_s=RESPONSE_TIMEOUT_S, logger=logger)
