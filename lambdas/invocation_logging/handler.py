"""Custom resource: Bedrock model invocation logging, one setting per account and region.

CloudFormation has no resource for it, so this function manages it with the Bedrock API:

- Create: save whatever configuration was there before (or that there was none) in the logging bucket,
  then put the kit's configuration.
- Update: put the new configuration; the saved one stays.
- Delete: if the configuration is still the kit's, restore the saved one (or delete it when there was
  none); if someone has changed it since, leave theirs alone.

It always answers CloudFormation (a custom resource that never answers holds the stack for an hour) and
never fails a Delete: an account setting must not block the stack's removal.
"""

from __future__ import annotations

import json
import urllib.request
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(service="invocation-logging")

STATE_KEY = "kit-state/previous-invocation-logging.json"
_PHYSICAL_ID = "bedrock-invocation-logging"


@lru_cache(maxsize=1)
def bedrock() -> Any:
    import boto3

    return boto3.client("bedrock")


@lru_cache(maxsize=1)
def s3() -> Any:
    import boto3

    return boto3.client("s3")


def desired_config(props: dict[str, Any]) -> dict[str, Any]:
    """The loggingConfig the kit puts, from the custom resource's properties."""
    return {
        "cloudWatchConfig": {
            "logGroupName": props["LogGroupName"],
            "roleArn": props["RoleArn"],
            "largeDataDeliveryS3Config": {"bucketName": props["BucketName"], "keyPrefix": "large-data"},
        },
        "s3Config": {"bucketName": props["BucketName"], "keyPrefix": "invocations"},
        "textDataDeliveryEnabled": True,
        "imageDataDeliveryEnabled": props.get("ImageData", "false") == "true",
        "embeddingDataDeliveryEnabled": props.get("EmbeddingData", "false") == "true",
    }


def current_config() -> dict[str, Any] | None:
    return bedrock().get_model_invocation_logging_configuration().get("loggingConfig")


def is_ours(config: dict[str, Any] | None, props: dict[str, Any]) -> bool:
    """Whether the account's configuration is still the one this stack put."""
    if not config:
        return False
    log_group = (config.get("cloudWatchConfig") or {}).get("logGroupName")
    bucket = (config.get("s3Config") or {}).get("bucketName")
    return log_group == props["LogGroupName"] and bucket == props["BucketName"]


def save_previous(bucket: str, previous: dict[str, Any] | None) -> None:
    """Remember the setting before the kit's, once: a replaced resource must not save the kit's own."""
    try:
        s3().head_object(Bucket=bucket, Key=STATE_KEY)
        return
    except s3().exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    body = json.dumps({"previous": previous}).encode()
    s3().put_object(Bucket=bucket, Key=STATE_KEY, Body=body, ContentType="application/json")


def load_previous(bucket: str) -> tuple[bool, dict[str, Any] | None]:
    """(found, previous configuration or None when there was none)."""
    try:
        body = s3().get_object(Bucket=bucket, Key=STATE_KEY)["Body"].read()
    except s3().exceptions.ClientError:
        return False, None
    return True, json.loads(body).get("previous")


def on_create_or_update(event: dict[str, Any]) -> str:
    props = event["ResourceProperties"]
    if event["RequestType"] == "Create":
        previous = current_config()
        save_previous(props["BucketName"], None if is_ours(previous, props) else previous)
    bedrock().put_model_invocation_logging_configuration(loggingConfig=desired_config(props))
    logger.info("Invocation logging configured", extra={"log_group": props["LogGroupName"]})
    return "configured"


def on_delete(event: dict[str, Any]) -> str:
    props = event["ResourceProperties"]
    if not is_ours(current_config(), props):
        logger.warning("The account's invocation logging is no longer the kit's; leaving it unchanged")
        return "left someone else's configuration unchanged"
    found, previous = load_previous(props["BucketName"])
    if found and previous:
        bedrock().put_model_invocation_logging_configuration(loggingConfig=previous)
        return "restored the previous configuration"
    bedrock().delete_model_invocation_logging_configuration()
    return "removed the kit's configuration (there was none before)"


def respond(event: dict[str, Any], status: str, reason: str) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:1000],
            "PhysicalResourceId": event.get("PhysicalResourceId") or _PHYSICAL_ID,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": {},
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=20) as answer:  # the pre-signed URL CloudFormation gave
        logger.info("Answered CloudFormation", extra={"status": status, "http": answer.status})


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    kind = event.get("RequestType")
    try:
        reason = on_delete(event) if kind == "Delete" else on_create_or_update(event)
        status = "SUCCESS"
    except Exception as err:  # an account setting must never leave CloudFormation waiting
        logger.exception("Invocation logging change failed")
        status = "SUCCESS" if kind == "Delete" else "FAILED"
        reason = f"{type(err).__name__}: {err}"[:500]
    respond(event, status, reason)
