"""Custom resource: Bedrock model invocation logging, one setting per account and region.

CloudFormation has no resource for it, so this function manages it with the Bedrock API:

- Create: save whatever configuration was there before (or that there was none) in the logging bucket,
  then put the kit's configuration.
- Update: put the new configuration; the saved one stays.
- Delete: if the configuration is still the kit's, restore the saved one (or delete it when there was
  none); if someone has changed it since, leave theirs alone. When Bedrock refuses the restore, delete the
  kit's (it names the role and log group the stack is removing) and say in the answer what to put back.
- Any other request type: FAILED, and nothing is touched.

It always answers CloudFormation, in time: every AWS call has short timeouts and at most MAX_ATTEMPTS attempts,
and no call starts unless its worst case still fits before the deadline (the function's remaining time less
what the answer itself may take). A Create or Update that runs out of time answers FAILED with the reason; a
Delete always answers SUCCESS (an account setting must not block the stack's removal), and its reason says
what was left as it was and how to finish by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger

from common.clients import bounded_client
from common.custom_resource import MAX_REASON, encoded_length
from common.custom_resource import respond as answer_cloudformation
from common.env import env_str
from invocation_logging.prefixes import INVOCATIONS_PREFIX, LARGE_DATA_PREFIX, STATE_PREFIX

logger = Logger()

STATE_KEY = f"{STATE_PREFIX}previous-invocation-logging.json"
_PHYSICAL_ID = "bedrock-invocation-logging"
PROPERTIES = ("LogGroupName", "RoleArn", "BucketName")
# One call costs at most MAX_ATTEMPTS x (connect + read) plus the standard retry mode's back-off between
# attempts (at most 2 s, then 4 s): CALL_BUDGET_S. The answer to CloudFormation takes at most RESPONSE_TIMEOUT_S.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
MAX_ATTEMPTS = 3  # attempts per call, the first included
RETRY_BACKOFF_S = 2 + 4
CALL_BUDGET_S = MAX_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + RETRY_BACKOFF_S
RESPONSE_TIMEOUT_S = 20
ANSWER_RESERVE_S = RESPONSE_TIMEOUT_S + 5
CALLS_PER_REQUEST = 4  # Create: read the setting, look for and save the previous one, put the kit's

clock: Callable[[], float] = time.monotonic  # a seam for the tests
sleep: Callable[[float], None] = time.sleep  # a seam for the tests
# Bedrock checks the delivery role when the setting is put; a role created moments before in the same deploy may
# not be usable yet (IAM is eventually consistent:
# https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency)
# and the answer is a ValidationException about the role's permissions. Such a put is tried again after a wait.
ROLE_WAITS_S = (10, 20, 30)


class OutOfTime(Exception):
    """The next call might not finish before CloudFormation must be answered."""


class Deadline:
    """The time by which the work must stop so that the answer still reaches CloudFormation."""

    def __init__(self, remaining_ms: int) -> None:
        self.end = clock() + remaining_ms / 1000 - ANSWER_RESERVE_S

    def left(self) -> float:
        return self.end - clock()

    def before_call(self, doing: str) -> None:
        """Refuse to start a call whose worst case (CALL_BUDGET_S) would overrun the deadline."""
        if self.left() < CALL_BUDGET_S:
            raise OutOfTime(
                f"ran out of time before {doing} ({max(self.left(), 0):.0f} s left, a call may take {CALL_BUDGET_S} s)"
            )


def _client(service: str) -> Any:
    return bounded_client(service, CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS)  # the first try included


@lru_cache(maxsize=1)
def bedrock() -> Any:
    return _client("bedrock")


@lru_cache(maxsize=1)
def s3() -> Any:
    return _client("s3")


def region() -> str:
    """The Region whose setting this function manages: its Bedrock client's (AWS_REGION, which Lambda sets, when no
    client can be made: this is also read while answering a failure)."""
    try:
        return str(bedrock().meta.region_name)
    except Exception:
        return env_str("AWS_REGION", "<region>")


# How much of the error a Delete left unfinished its answer keeps, at most and, to make room for the earlier
# setting's command, at least.
ERROR_CHARS = (500, 120)


def unfinished_delete(error: str, bucket: str | None, saved: tuple[bool, dict[str, Any] | None] | None) -> str:
    """The answer to a Delete left unfinished: the error, and how to finish by hand, within MAX_REASON bytes.

    ``saved`` is what load_previous read (None: not read). The earlier setting goes into the restore command
    itself when it fits: the Delete answers SUCCESS, so CloudFormation goes on to delete the logging bucket (the
    sandbox stage's, emptied first) that holds the saved copy. PutModelInvocationLoggingConfiguration requires
    --logging-config (botocore bedrock 2023-04-20), so a command without it cannot be run as printed. Each command
    names the function's Region: the setting is one per account and Region
    (https://docs.aws.amazon.com/bedrock/latest/userguide/model-invocation-logging.html) and
    DeleteModelInvocationLoggingConfiguration takes no parameter, so without it the CLI would read or remove the
    setting of its own default Region."""
    where = region()
    check = f"To finish by hand: `aws bedrock get-model-invocation-logging-configuration --region {where}`; while "
    check += "it is still the kit's, "
    put = f"`aws bedrock put-model-invocation-logging-configuration --region {where} --logging-config "
    remove = f"`aws bedrock delete-model-invocation-logging-configuration --region {where}`"
    where_saved = f"s3://{bucket}/{STATE_KEY}" if bucket else f"{STATE_KEY} of the kit's invocation-logging bucket"
    saved_at = f'{where_saved} ("previous" member; a sandbox destroy deletes that bucket, copy it first)'
    from_file = f"put back your earlier setting, saved in {saved_at}, with {put}file://previous.json`"
    found, previous = saved or (False, None)
    if saved is not None and not (found and previous):  # as on_delete: nothing saved to restore
        options = [f"{check}remove it with {remove} (there was no earlier setting)."]
    elif previous:
        setting = json.dumps(previous, separators=(",", ":"))
        options = [f"{check}{from_file}."]
        if "'" not in setting:  # inside the shell's single quotes, a quote of the setting's own would end them
            options.insert(0, f"{check}put back your earlier setting with {put}'{setting}'`.")
    else:
        options = [f"{check}{from_file}; if that member is null (there was none), remove it with {remove}."]
    # The first option that fits with the error cut to ERROR_CHARS[1] at worst; the last one fits in any case.
    for how in options:
        for chars in ERROR_CHARS:
            reason = f"the setting may still be the kit's ({error[:chars]}). {how}"
            if encoded_length(reason) <= MAX_REASON:
                return reason
    return reason


def desired_config(props: dict[str, Any]) -> dict[str, Any]:
    """The loggingConfig the kit puts, from the custom resource's properties."""
    return {
        "cloudWatchConfig": {
            "logGroupName": props["LogGroupName"],
            "roleArn": props["RoleArn"],
            "largeDataDeliveryS3Config": {
                "bucketName": props["BucketName"],
                "keyPrefix": LARGE_DATA_PREFIX.removesuffix("/"),
            },
        },
        "s3Config": {"bucketName": props["BucketName"], "keyPrefix": INVOCATIONS_PREFIX.removesuffix("/")},
        # Text only: what the kit's levels send and get back (and what distillation from invocation logs reads). The
        # stack sets no property for the other kinds, so their reads here were dead.
        "textDataDeliveryEnabled": True,
        "imageDataDeliveryEnabled": False,
        "embeddingDataDeliveryEnabled": False,
    }


def _properties(event: dict[str, Any]) -> dict[str, Any]:
    props = event.get("ResourceProperties") or {}
    missing = [name for name in PROPERTIES if not props.get(name)]
    if missing:
        raise ValueError(f"missing resource properties: {', '.join(missing)}")
    return dict(props)


def current_config(deadline: Deadline) -> dict[str, Any] | None:
    deadline.before_call("reading the account's invocation logging setting")
    return bedrock().get_model_invocation_logging_configuration().get("loggingConfig")


def is_ours(config: dict[str, Any] | None, props: dict[str, Any]) -> bool:
    """Whether the account's configuration is still the one this stack put."""
    if not config:
        return False
    log_group = (config.get("cloudWatchConfig") or {}).get("logGroupName")
    bucket = (config.get("s3Config") or {}).get("bucketName")
    return log_group == props["LogGroupName"] and bucket == props["BucketName"]


def _not_found(err: Exception) -> bool:
    code = getattr(err, "response", {}).get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NotFound")


def _state_saved(bucket: str) -> bool:
    """Whether the state object exists, asked with ListObjectsV2 under its own prefix. HeadObject or GetObject of a
    missing key answers 404 only to a caller allowed s3:ListBucket on the bucket, and 403 otherwise (HeadObject,
    Permissions: https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html); the role may list only with
    an s3:prefix under the state prefix, which a list request carries and a head request does not."""
    page = s3().list_objects_v2(Bucket=bucket, Prefix=STATE_KEY, MaxKeys=1)
    return any(item.get("Key") == STATE_KEY for item in page.get("Contents") or [])


def save_previous(bucket: str, previous: dict[str, Any] | None, deadline: Deadline, *, replace: bool = False) -> None:
    """Remember the setting before the kit's, once: a replaced resource must not save the kit's own. ``replace``:
    save it even over a saved one (someone else's setting replaced the kit's since, and is the one to restore)."""
    if not replace:
        deadline.before_call("looking for a saved earlier setting")
        if _state_saved(bucket):
            return
    deadline.before_call("saving the earlier setting")
    body = json.dumps({"previous": previous}).encode()
    s3().put_object(Bucket=bucket, Key=STATE_KEY, Body=body, ContentType="application/json")


def load_previous(bucket: str, deadline: Deadline) -> tuple[bool, dict[str, Any] | None]:
    """(found, previous configuration or None when there was none). Only a missing object counts as not found:
    any other error (throttling, access) propagates, so a transient error never turns a restore into a removal."""
    from botocore.exceptions import ClientError

    deadline.before_call("looking for a saved earlier setting")
    if not _state_saved(bucket):
        return False, None
    deadline.before_call("reading the saved earlier setting")
    try:
        body = s3().get_object(Bucket=bucket, Key=STATE_KEY)["Body"].read()
    except ClientError as err:
        if _not_found(err):  # deleted between the two calls
            return False, None
        raise
    return True, json.loads(body).get("previous")


def on_create_or_update(event: dict[str, Any], deadline: Deadline) -> str:
    props = _properties(event)
    if event["RequestType"] == "Create":
        previous = current_config(deadline)
        save_previous(props["BucketName"], None if is_ours(previous, props) else previous, deadline)
    else:
        keep_previous(event, props, deadline)
    put_when_the_role_is_usable(desired_config(props), deadline)
    logger.info("Invocation logging configured", extra={"log_group": props["LogGroupName"]})
    return "configured"


def keep_previous(event: dict[str, Any], props: dict[str, Any], deadline: Deadline) -> None:
    """Before an Update puts the kit's setting: the setting a delete restores stays the one the kit replaced.

    A setting that is the kit's under neither the old nor the new properties was put by someone else after the
    kit's: it is what the kit now replaces, so it is saved as the one to restore (a delete used to put back the
    older one, and the Update overwrote theirs unseen). A rollback's Update finds the setting the failed update
    put, which is the kit's under its old properties: nothing is saved then.
    """
    old = dict(event.get("OldResourceProperties") or {})
    current = current_config(deadline)
    if is_ours(current, props) or (all(old.get(name) for name in PROPERTIES) and is_ours(current, old)):
        return
    logger.warning("The account's invocation logging was changed outside the kit; saving it to restore on delete")
    save_previous(props["BucketName"], current, deadline, replace=True)


def put_when_the_role_is_usable(config: dict[str, Any], deadline: Deadline) -> None:
    """Put ``config``; a refusal of the role's permissions is tried again after each of ROLE_WAITS_S while time
    allows (any other error, and the last refusal, propagate)."""
    for wait in (*ROLE_WAITS_S, None):
        deadline.before_call("putting the kit's invocation logging setting")
        try:
            bedrock().put_model_invocation_logging_configuration(loggingConfig=config)
            return
        except Exception as err:
            if wait is None or not _role_not_ready(err) or deadline.left() - wait < CALL_BUDGET_S:
                raise
            logger.info("The delivery role is not usable yet; trying again", extra={"wait_s": wait})
            sleep(wait)


def _role_not_ready(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    error = response.get("Error") or {}
    return error.get("Code") == "ValidationException" and "permission" in str(error.get("Message", "")).lower()


def on_delete(event: dict[str, Any], deadline: Deadline, saved: dict[str, tuple[bool, dict[str, Any] | None]]) -> str:
    """Restore, remove or leave the setting; what load_previous read goes into ``saved["previous"]`` for the answer
    of a Delete this leaves unfinished."""
    props = _properties(event)
    if not is_ours(current_config(deadline), props):
        logger.warning("The account's invocation logging is no longer the kit's; leaving it unchanged")
        return "left someone else's configuration unchanged"
    found, previous = saved["previous"] = load_previous(props["BucketName"], deadline)
    if found and previous:
        deadline.before_call("restoring the earlier setting")
        try:
            bedrock().put_model_invocation_logging_configuration(loggingConfig=previous)
        except Exception as err:
            if not _refused(err):
                raise
            return remove_after_refused_restore(err, previous, props, deadline)
        return "restored the previous configuration"
    deadline.before_call("removing the kit's setting")
    bedrock().delete_model_invocation_logging_configuration()
    return "removed the kit's configuration (there was none before)"


def _refused(err: Exception) -> bool:
    """Whether Bedrock refused the change for good: AccessDeniedException 403 or ValidationException 400 (botocore
    bedrock PutModelInvocationLoggingConfiguration). A throttle (429), a timeout or a 5xx is not: the first may pass
    on a later destroy, the others leave it unknown whether the put landed."""
    response = getattr(err, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status in (400, 403)


def remove_after_refused_restore(
    err: Exception, previous: dict[str, Any], props: dict[str, Any], deadline: Deadline
) -> str:
    """The restoring put was refused (typically iam:PassRole on the earlier setting's CloudWatch role): delete the
    kit's setting rather than leave it naming the role and log group this delete removes, and say what to put
    back. DeleteModelInvocationLoggingConfiguration is in botocore's bedrock model and the function's policy."""
    error = (getattr(err, "response", None) or {}).get("Error") or {}
    refusal = f"{error.get('Code', type(err).__name__)}: {error.get('Message', err)}"[:120]
    logger.warning("Bedrock refused to restore the earlier setting", extra={"refusal": refusal, "previous": previous})
    deadline.before_call("removing the kit's setting after the restore was refused")
    bedrock().delete_model_invocation_logging_configuration()
    role = (previous.get("cloudWatchConfig") or {}).get("roleArn")
    where = region()
    saved_at = f"s3://{props['BucketName']}/{STATE_KEY}"
    told = (
        f"restoring the earlier setting was refused ({refusal}), so removed the kit's, which names resources this "
        f"delete removes: model invocation logging is OFF in {where}. Put the earlier setting back (saved in "
        f"{saved_at} while the bucket exists)"
        + (f" as a principal that may pass {role} to Bedrock" if role else "")
        + f": aws bedrock put-model-invocation-logging-configuration --region {where} --logging-config "
    )
    setting = f"'{json.dumps(previous, separators=(',', ':'))}'"
    # The answer keeps MAX_REASON bytes: a setting cut short would be no use, so then name the saved object.
    return told + (setting if encoded_length(told + setting) <= MAX_REASON else 'file://<its "previous" member>')


def _saved_setting(
    saved: dict[str, tuple[bool, dict[str, Any] | None]], bucket: str | None, deadline: Deadline
) -> tuple[bool, dict[str, Any] | None] | None:
    """What the Delete read of the saved setting, or, when it failed before reading it, one more try while time
    allows (a failed Bedrock call leaves S3 readable): None when it cannot be read."""
    if "previous" in saved:
        return saved["previous"]
    if not bucket:
        return None
    try:
        return load_previous(bucket, deadline)
    except Exception:
        logger.warning("Could not read the saved earlier setting for the answer", exc_info=True)
        return None


def respond(event: dict[str, Any], status: str, reason: str) -> None:
    physical = event.get("PhysicalResourceId") or _PHYSICAL_ID
    answer_cloudformation(event, status, reason, physical, timeout_s=RESPONSE_TIMEOUT_S, logger=logger)


@logger.inject_lambda_context(log_event=False)
def handler(event: dict[str, Any], context: Any) -> None:
    deadline = Deadline(context.get_remaining_time_in_millis())
    kind = event.get("RequestType")
    saved: dict[str, tuple[bool, dict[str, Any] | None]] = {}
    try:
        if kind == "Delete":
            reason, status = on_delete(event, deadline, saved), "SUCCESS"
        elif kind in ("Create", "Update"):
            reason, status = on_create_or_update(event, deadline), "SUCCESS"
        else:
            reason, status = f"unknown request type {kind!r}: nothing changed", "FAILED"
    except Exception as err:  # an account setting must never leave CloudFormation waiting
        logger.exception("Invocation logging change failed")
        reason = f"{type(err).__name__}: {err}"[: ERROR_CHARS[0]]
        if kind == "Delete":  # never block the stack's removal; say what is left
            bucket = ((event.get("ResourceProperties") or {}).get("BucketName")) or None
            status, reason = "SUCCESS", unfinished_delete(reason, bucket, _saved_setting(saved, bucket, deadline))
        else:
            status = "FAILED"
    if status == "FAILED":
        logger.error("Answering FAILED", extra={"reason": reason})
    respond(event, status, reason)
