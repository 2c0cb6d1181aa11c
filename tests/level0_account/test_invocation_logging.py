"""The invocation-logging custom resource: saves, sets, restores; always answers CloudFormation, in time."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore import xform_name
from botocore.stub import Stubber
from moto import mock_aws

from common import custom_resource
from invocation_logging import handler as h
from tests.lambda_helpers import cloudformation_answers

FUNCTION_MS = 240_000  # the function's timeout (stacks/level0_account/invocation_logging.py MANAGER_TIMEOUT)

PROPS = {
    "LogGroupName": "/kit/bedrock/invocations",
    "RoleArn": "arn:aws:iam::123456789012:role/delivery",
    "BucketName": "kit-invocations",
}
THEIRS = {
    "s3Config": {"bucketName": "someone-elses-bucket", "keyPrefix": "x"},
    "textDataDeliveryEnabled": True,
    "imageDataDeliveryEnabled": True,
    "embeddingDataDeliveryEnabled": True,
}

# An earlier setting that logs to CloudWatch: its roleArn is required (botocore bedrock CloudWatchConfig), and
# putting it back needs iam:PassRole on that role.
THEIRS_CW = {
    "cloudWatchConfig": {
        "logGroupName": "/org/bedrock/invocations",
        "roleArn": "arn:aws:iam::123456789012:role/org-bedrock-logging",
    },
    "textDataDeliveryEnabled": True,
    "imageDataDeliveryEnabled": False,
    "embeddingDataDeliveryEnabled": False,
}
PASS_ROLE_REFUSED = (
    "User: arn:aws:sts::123456789012:assumed-role/manager/f is not authorized to perform: iam:PassRole on "
    "resource: arn:aws:iam::123456789012:role/org-bedrock-logging because no identity-based policy allows the "
    "iam:PassRole action"
)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, Any, list[dict[str, Any]]]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "invocation-logging")
    h.bedrock.cache_clear()
    h.s3.cache_clear()
    clock = FakeClock()
    monkeypatch.setattr(h, "clock", clock, raising=False)  # raising=False: the old module had no clock
    monkeypatch.setattr(h, "sleep", clock.sleep, raising=False)
    answers: list[dict[str, Any]] = []

    def in_time(timeout: float) -> None:
        # The answer leaves while the function still has the time the answer itself may take.
        assert clock.now + timeout <= FUNCTION_MS / 1000

    fake_urlopen = cloudformation_answers(answers, in_time)

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=PROPS["BucketName"])
        client = boto3.client("bedrock", region_name="us-east-1")
        stubber = Stubber(client)
        with (
            stubber,
            mock.patch.object(h, "bedrock", lambda: client),
            mock.patch.object(custom_resource.urllib.request, "urlopen", fake_urlopen),
        ):
            yield stubber, s3, answers
        stubber.assert_no_pending_responses()


def event(kind: str) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": "https://cfn-response.example/abc",
        "StackId": "arn:stack",
        "RequestId": "r-1",
        "LogicalResourceId": "InvocationLogging",
        "ResourceProperties": dict(PROPS),
        **({"PhysicalResourceId": "bedrock-invocation-logging"} if kind != "Create" else {}),
    }


class FakeClock:
    """Monotonic time that moves only when a test says a call took long."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def context() -> Any:
    return mock.Mock(
        function_name="f",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:f",
        aws_request_id="id",
        get_remaining_time_in_millis=lambda: FUNCTION_MS,
    )


def slow(client: Any, operation: str, seconds: float) -> None:
    """Make every call of ``operation`` on ``client`` take ``seconds`` of (fake) time."""
    clock = h.clock
    assert isinstance(clock, FakeClock)

    def took(**_: Any) -> None:
        clock.now += seconds

    client.meta.events.register(f"after-call.{client.meta.service_model.endpoint_prefix}.{operation}", took)


def printed_commands(reason: str) -> list[list[str]]:
    """The commands an answer tells the operator to run (each between backticks), split as a shell would."""
    return [shlex.split(command) for command in reason.split("`")[1::2]]


def calls(client: Any) -> list[str]:
    """The operations called on ``client`` from now on (recorded before the Stubber answers)."""
    seen: list[str] = []
    client.meta.events.register_first(
        f"before-parameter-build.{client.meta.service_model.endpoint_prefix}",
        lambda model, **_: seen.append(model.name),
    )
    return seen


def saved(s3: Any) -> Any:
    return json.loads(s3.get_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY)["Body"].read())


def test_create_saves_the_previous_setting_then_puts_the_kits(aws: Any) -> None:
    stubber, s3, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": THEIRS}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(PROPS)})
    h.handler(event("Create"), context())
    assert saved(s3) == {"previous": THEIRS}
    [answer] = answers
    assert answer["Status"] == "SUCCESS" and answer["PhysicalResourceId"] == "bedrock-invocation-logging"


NEW_GROUP = {**PROPS, "LogGroupName": "/kit/bedrock/invocations-2"}  # a replaced log group: an Update


def update(props: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    return {**event("Update"), "ResourceProperties": dict(props), "OldResourceProperties": dict(old)}


@pytest.mark.parametrize(
    ("current", "props", "old", "restores"),
    [
        # the kit's setting in place: the saved one stays
        (h.desired_config(PROPS), NEW_GROUP, PROPS, THEIRS),
        # someone replaced the kit's setting since: theirs is what the update replaces, so theirs is restored (before:
        # the update overwrote it unseen, and a delete put back the older saved one)
        (THEIRS_CW, NEW_GROUP, PROPS, THEIRS_CW),
        # a rollback's update (the properties swapped back) finds the setting the failed update put: the kit's
        (h.desired_config(NEW_GROUP), PROPS, NEW_GROUP, THEIRS),
    ],
    ids=["kits-in-place", "replaced-by-someone", "rollback"],
)
def test_an_update_saves_what_it_replaces_unless_it_is_the_kits(
    aws: Any, current: dict[str, Any], props: dict[str, Any], old: dict[str, Any], restores: dict[str, Any]
) -> None:
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": current}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(props)})
    h.handler(update(props, old), context())
    assert answers[0]["Status"] == "SUCCESS" and saved(s3) == {"previous": restores}


def test_kits_config_logs_text_to_its_own_log_group_and_bucket() -> None:
    config = h.desired_config(PROPS)
    assert config["cloudWatchConfig"]["logGroupName"] == PROPS["LogGroupName"]
    assert config["s3Config"]["bucketName"] == PROPS["BucketName"]
    assert config["textDataDeliveryEnabled"] is True and config["imageDataDeliveryEnabled"] is False


def test_delete_restores_the_previous_setting(aws: Any) -> None:
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": THEIRS})
    h.handler(event("Delete"), context())
    assert answers[0]["Status"] == "SUCCESS" and "restored" in answers[0]["Reason"]


def test_a_refused_restore_removes_the_kits_setting_and_says_what_to_put_back(aws: Any) -> None:
    # Before: the refused put (iam:PassRole on the earlier setting's role) left the kit's setting in place, naming
    # the role and log group the stack then deleted, and the answer said only that it "may still be the kit's".
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS_CW}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_client_error(
        "put_model_invocation_logging_configuration",
        "AccessDeniedException",
        PASS_ROLE_REFUSED,
        403,
        expected_params={"loggingConfig": THEIRS_CW},
    )
    stubber.add_response("delete_model_invocation_logging_configuration", {}, {})
    seen = calls(h.bedrock())
    h.handler(event("Delete"), context())
    assert seen == [
        "GetModelInvocationLoggingConfiguration",
        "PutModelInvocationLoggingConfiguration",
        "DeleteModelInvocationLoggingConfiguration",
    ]
    [answer] = answers
    reason = answer["Reason"]
    assert answer["Status"] == "SUCCESS", answer
    assert "AccessDeniedException" in reason and "removed the kit's" in reason and "OFF in us-east-1" in reason
    assert "may pass arn:aws:iam::123456789012:role/org-bedrock-logging" in reason
    command = "aws bedrock put-model-invocation-logging-configuration --region us-east-1 --logging-config '"
    assert command in reason
    assert json.loads(reason.split(command, 1)[1].split("'", 1)[0]) == THEIRS_CW


def test_a_refused_restore_of_a_long_setting_names_the_saved_object_rather_than_cut_it(aws: Any) -> None:
    stubber, s3, answers = aws
    long = {**THEIRS_CW, "s3Config": {"bucketName": "b" * 63, "keyPrefix": "p" * 600}}
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": long}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_client_error("put_model_invocation_logging_configuration", "AccessDeniedException", "no", 403)
    stubber.add_response("delete_model_invocation_logging_configuration", {}, {})
    h.handler(event("Delete"), context())
    reason = answers[0]["Reason"]
    assert len(reason) <= custom_resource.MAX_REASON and "p" * 600 not in reason
    assert f"s3://{PROPS['BucketName']}/{h.STATE_KEY}" in reason and reason.endswith('file://<its "previous" member>')


@pytest.mark.parametrize(("code", "status"), [("InternalServerException", 500), ("ThrottlingException", 429)])
def test_a_restore_not_refused_for_good_is_not_followed_by_a_delete(aws: Any, code: str, status: int) -> None:
    # A 5xx leaves it unknown whether Bedrock applied the restore: deleting then might remove the restored setting.
    # A throttle may pass: a later destroy can still restore, so the kit's setting is not removed for it.
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS_CW}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_client_error("put_model_invocation_logging_configuration", code, "oops", status)
    seen = calls(h.bedrock())
    h.handler(event("Delete"), context())
    assert "DeleteModelInvocationLoggingConfiguration" not in seen
    [answer] = answers
    assert answer["Status"] == "SUCCESS" and "may still be the kit's" in answer["Reason"], answer


def test_delete_removes_the_setting_when_there_was_none(aws: Any) -> None:
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": None}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_response("delete_model_invocation_logging_configuration", {}, {})
    h.handler(event("Delete"), context())
    assert "removed" in answers[0]["Reason"]


def test_delete_leaves_someone_elses_newer_setting_alone(aws: Any) -> None:
    stubber, _, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": THEIRS}, {})
    h.handler(event("Delete"), context())  # no put, no delete: the Stubber would fail on an unexpected call
    assert answers[0]["Status"] == "SUCCESS" and "unchanged" in answers[0]["Reason"]


def test_delete_leaves_a_setting_that_shares_only_the_kits_log_group_alone(aws: Any) -> None:
    # The setting is the kit's only if both its log group and its bucket are: one that logs to the kit's log group
    # but someone else's bucket was put by someone else, and a restore would overwrite it.
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS}))
    mixed = {**h.desired_config(PROPS), "s3Config": {"bucketName": "someone-elses-bucket", "keyPrefix": "x"}}
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": mixed}, {})
    seen = calls(h.bedrock())
    h.handler(event("Delete"), context())  # no put, no delete: the Stubber would fail on an unexpected call
    assert seen == ["GetModelInvocationLoggingConfiguration"]
    assert answers[0]["Status"] == "SUCCESS" and "unchanged" in answers[0]["Reason"]


def test_a_restore_refused_as_invalid_removes_the_kits_setting_too(aws: Any) -> None:
    # A ValidationException (400) is a refusal for good, as AccessDenied is: the kit's setting, which names the log
    # group and role the stack deletes, is removed rather than left behind.
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS_CW}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_client_error("put_model_invocation_logging_configuration", "ValidationException", "no such role", 400)
    stubber.add_response("delete_model_invocation_logging_configuration", {}, {})
    seen = calls(h.bedrock())
    h.handler(event("Delete"), context())
    assert seen[-1] == "DeleteModelInvocationLoggingConfiguration"
    assert answers[0]["Status"] == "SUCCESS" and "removed the kit's" in answers[0]["Reason"]


def test_a_create_over_the_kits_own_setting_saves_that_there_was_none(aws: Any) -> None:
    # The kit's own setting (left by an earlier stack whose state is gone) is not the account's earlier setting:
    # saving it would make a later delete put the kit's setting back instead of removing it.
    stubber, s3, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(PROPS)})
    h.handler(event("Create"), context())
    assert saved(s3) == {"previous": None}
    assert answers[0]["Status"] == "SUCCESS"


def test_a_failed_create_answers_failed_and_a_failed_delete_never_blocks(aws: Any) -> None:
    stubber, _, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {}, {})
    stubber.add_client_error("put_model_invocation_logging_configuration", "AccessDeniedException", "nope")
    h.handler(event("Create"), context())
    stubber.add_client_error("get_model_invocation_logging_configuration", "ThrottlingException", "slow down")
    h.handler(event("Delete"), context())
    assert [a["Status"] for a in answers] == ["FAILED", "SUCCESS"]
    assert "AccessDeniedException" in answers[0]["Reason"]


def test_a_replacement_does_not_overwrite_the_original_previous_setting(aws: Any) -> None:
    stubber, s3, _ = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(PROPS)})
    h.handler(event("Create"), context())
    assert saved(s3) == {"previous": THEIRS}


def test_clients_give_up_quickly() -> None:
    # Before: default clients (60 s connect, 60 s read, retries) inside a 2-minute function, so one hanging
    # call let the function time out without answering, and CloudFormation waited an hour, on delete too.
    h.bedrock.cache_clear()
    h.s3.cache_clear()
    for client in (h.bedrock(), h.s3()):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (h.CONNECT_TIMEOUT_S, h.READ_TIMEOUT_S)
        assert config.retries == {"total_max_attempts": h.MAX_ATTEMPTS, "mode": "standard"}
    assert h.CALL_BUDGET_S <= 60
    # Every call the function may make, plus the answer, fits its timeout.
    assert h.CALLS_PER_REQUEST * h.CALL_BUDGET_S + h.ANSWER_RESERVE_S <= FUNCTION_MS / 1000
    h.bedrock.cache_clear()
    h.s3.cache_clear()


def test_a_create_that_runs_out_of_time_answers_failed_before_changing_anything(aws: Any) -> None:
    stubber, s3, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": THEIRS}, {})
    slow(h.bedrock(), "GetModelInvocationLoggingConfiguration", 200)  # retried reads ate most of the time
    seen = calls(h.bedrock())
    h.handler(event("Create"), context())
    [answer] = answers
    assert answer["Status"] == "FAILED" and "ran out of time" in answer["Reason"]
    assert seen == ["GetModelInvocationLoggingConfiguration"]  # no put
    assert "Contents" not in s3.list_objects_v2(Bucket=PROPS["BucketName"])  # nothing saved either


def test_a_delete_that_runs_out_of_time_never_blocks_and_says_how_to_finish(aws: Any) -> None:
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    slow(h.bedrock(), "GetModelInvocationLoggingConfiguration", 200)
    seen = calls(h.bedrock())
    h.handler(event("Delete"), context())
    [answer] = answers
    assert answer["Status"] == "SUCCESS" and "ran out of time" in answer["Reason"]
    assert "put-model-invocation-logging-configuration" in answer["Reason"]
    assert seen == ["GetModelInvocationLoggingConfiguration"]


@pytest.mark.parametrize("kind", ["Bogus", None])
def test_an_unknown_request_type_answers_failed_and_changes_nothing(aws: Any, kind: Any) -> None:
    # Before: anything that was not a Delete was treated as an Update and put the kit's setting.
    _, _, answers = aws
    seen = calls(h.bedrock())
    h.handler({**event("Update"), "RequestType": kind}, context())
    [answer] = answers
    assert answer["Status"] == "FAILED" and "unknown request type" in answer["Reason"]
    assert seen == []


def test_a_missing_property_fails_a_create_without_a_call(aws: Any) -> None:
    _, _, answers = aws
    seen = calls(h.bedrock())
    broken = event("Create")
    del broken["ResourceProperties"]["RoleArn"]
    h.handler(broken, context())
    assert answers[0]["Status"] == "FAILED" and "RoleArn" in answers[0]["Reason"] and seen == []


def test_a_transient_error_reading_the_saved_setting_does_not_remove_it(aws: Any) -> None:
    # Before: any error reading the saved setting counted as "nothing saved", so a throttled read removed the
    # account's setting instead of restoring the one from before.
    stubber, _, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    s3_client = boto3.client("s3", region_name="us-east-1")
    with Stubber(s3_client) as s3_stub, mock.patch.object(h, "s3", lambda: s3_client):
        listed = {"Contents": [{"Key": h.STATE_KEY}], "IsTruncated": False}
        s3_stub.add_response(
            "list_objects_v2", listed, {"Bucket": PROPS["BucketName"], "Prefix": h.STATE_KEY, "MaxKeys": 1}
        )
        s3_stub.add_client_error("get_object", "SlowDown", "Please reduce your request rate.", 503)
        seen = calls(h.bedrock())
        h.handler(event("Delete"), context())
    [answer] = answers
    assert answer["Status"] == "SUCCESS" and "SlowDown" in answer["Reason"]
    assert seen == ["GetModelInvocationLoggingConfiguration"]  # neither a delete nor a put of the setting


ROLE_NOT_READY = (
    "Failed to validate permissions for log group: /x, with role: arn:aws:iam::123456789012:role/d. "
    "Verify the IAM role permissions are correct."
)


def test_a_delivery_role_not_usable_yet_is_waited_for(aws: Any) -> None:
    # Given a put refused twice because the role created in the same deploy is not usable yet
    stubber, _, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {}, {})
    for _ in range(2):
        stubber.add_client_error(
            "put_model_invocation_logging_configuration", "ValidationException", ROLE_NOT_READY, 400
        )
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(PROPS)})
    # When the stack is created
    h.handler(event("Create"), context())
    # Then the third put lands after the first two waits, and CloudFormation hears SUCCESS
    assert answers[-1]["Status"] == "SUCCESS", answers[-1]
    assert h.clock() == sum(h.ROLE_WAITS_S[:2])


def test_another_validation_error_is_not_waited_for(aws: Any) -> None:
    stubber, _, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {}, {})
    stubber.add_client_error("put_model_invocation_logging_configuration", "ValidationException", "bad prefix", 400)
    h.handler(event("Create"), context())
    assert answers[-1]["Status"] == "FAILED" and "bad prefix" in answers[-1]["Reason"], answers[-1]
    assert h.clock() == 0


def test_a_role_never_usable_fails_the_create_in_time(aws: Any) -> None:
    stubber, _, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {}, {})
    for _ in range(len(h.ROLE_WAITS_S) + 1):
        stubber.add_client_error(
            "put_model_invocation_logging_configuration", "ValidationException", ROLE_NOT_READY, 400
        )
    h.handler(event("Create"), context())
    assert answers[-1]["Status"] == "FAILED" and "validate permissions" in answers[-1]["Reason"], answers[-1]


def test_a_delete_left_unfinished_names_the_functions_region_in_every_command_to_finish_by_hand(aws: Any) -> None:
    # Before: the by-hand commands named no Region. The setting is one per account and Region
    # (https://docs.aws.amazon.com/bedrock/latest/userguide/model-invocation-logging.html) and
    # DeleteModelInvocationLoggingConfiguration takes no parameter (botocore bedrock 2023-04-20), so run as printed
    # they read or removed the setting of the CLI's default Region (here us-east-1), not the stack's.
    _, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS}))
    elsewhere = boto3.client("bedrock", region_name="eu-west-3")
    with Stubber(elsewhere) as stubber, mock.patch.object(h, "bedrock", lambda: elsewhere):
        stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)})
        # a restore not refused for good (a throttle, with a message longer than the reason keeps of it)
        stubber.add_client_error("put_model_invocation_logging_configuration", "ThrottlingException", "x" * 900, 429)
        h.handler(event("Delete"), context())
        stubber.assert_no_pending_responses()
    [answer] = answers
    reason = answer["Reason"]
    assert answer["Status"] == "SUCCESS" and "may still be the kit's" in reason, answer
    operations = [
        name
        for name in elsewhere.meta.service_model.operation_names
        if name.endswith("ModelInvocationLoggingConfiguration")
    ]
    assert len(operations) == 3  # get, put, delete
    commands = printed_commands(reason)
    for name in operations:
        if name.startswith("Delete"):  # an earlier setting was saved: it is put back, not removed
            continue
        [argv] = [c for c in commands if c[2] == xform_name(name, "-")]
        assert argv[3:5] == ["--region", "eu-west-3"], argv
    assert "us-east-1" not in reason
    # The restore runs as printed: every member botocore requires is given, and the setting is the saved one.
    [put] = [c for c in commands if c[2] == "put-model-invocation-logging-configuration"]
    required = elsewhere.meta.service_model.operation_model("PutModelInvocationLoggingConfiguration")
    for member in required.input_shape.required_members:
        assert f"--{xform_name(member, '-')}" in put, member
    assert json.loads(put[put.index("--logging-config") + 1]) == THEIRS
    # the whole of it fits the answer, after a long error
    assert reason.endswith(f"--logging-config '{json.dumps(THEIRS, separators=(',', ':'))}'`.")


def test_the_region_falls_back_to_the_one_lambda_sets_when_no_client_can_be_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_client() -> Any:
        raise RuntimeError("no client")

    monkeypatch.setattr(h, "bedrock", no_client)
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert h.region() == "ap-southeast-2"
    told = h.unfinished_delete("ThrottlingException: slow down", "b", (True, None))
    assert printed_commands(told)[-1] == [
        "aws",
        "bedrock",
        "delete-model-invocation-logging-configuration",
        "--region",
        "ap-southeast-2",
    ]


def test_a_delete_that_fails_before_reading_the_saved_setting_still_prints_it(aws: Any) -> None:
    # Before: the answer said to "restore your earlier setting" with a put that lacked its required
    # --logging-config, and named no copy of it; a Delete answers SUCCESS, so the sandbox's bucket holding the
    # saved setting was deleted next. Here the first Bedrock read fails; the answer reads the saved copy itself.
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS_CW}))
    stubber.add_client_error("get_model_invocation_logging_configuration", "ThrottlingException", "slow down", 429)
    h.handler(event("Delete"), context())
    [answer] = answers
    assert answer["Status"] == "SUCCESS" and "ThrottlingException" in answer["Reason"], answer
    [check, put] = printed_commands(answer["Reason"])
    assert check[2] == "get-model-invocation-logging-configuration"
    assert put[2:5] == ["put-model-invocation-logging-configuration", "--region", "us-east-1"]
    assert json.loads(put[put.index("--logging-config") + 1]) == THEIRS_CW


def test_an_unfinished_delete_names_the_saved_copy_when_the_setting_does_not_fit_or_cannot_be_read(aws: Any) -> None:
    _, _, _ = aws
    saved_at = f"s3://{PROPS['BucketName']}/{h.STATE_KEY}"
    long = {**THEIRS, "s3Config": {"bucketName": "b", "keyPrefix": "p" * 900}}
    for saved in ((True, long), None):
        reason = h.unfinished_delete("E: " + "e" * 600, PROPS["BucketName"], saved)
        assert custom_resource.encoded_length(reason) <= custom_resource.MAX_REASON, saved
        assert saved_at in reason and "e" * 100 in reason
        put = next(c for c in printed_commands(reason) if c[2] == "put-model-invocation-logging-configuration")
        assert put[-2:] == ["--logging-config", "file://previous.json"]
    # A setting with a quote of its own cannot sit inside the shell's single quotes: the file is named instead.
    quoted = {**THEIRS, "s3Config": {"bucketName": "b", "keyPrefix": "it's"}}
    put = next(
        c
        for c in printed_commands(h.unfinished_delete("E", PROPS["BucketName"], (True, quoted)))
        if c[2] == "put-model-invocation-logging-configuration"
    )
    assert put[-2:] == ["--logging-config", "file://previous.json"]
    # Not readable: whether there was an earlier setting is unknown, so removing is offered too.
    assert "delete-model-invocation-logging-configuration" in reason
    # Nothing was saved to restore: remove the kit's, as on_delete does.
    for saved in ((False, None), (True, None)):
        [_, remove] = printed_commands(h.unfinished_delete("E", PROPS["BucketName"], saved))
        assert remove[2] == "delete-model-invocation-logging-configuration"


def test_the_saved_setting_is_looked_for_with_a_list_the_roles_prefix_condition_admits(aws: Any) -> None:
    """Before: HeadObject, whose 404 for a missing key needs s3:ListBucket (403 otherwise: HeadObject, Permissions);
    the role's ListBucket is conditioned on s3:prefix, which only a list request carries, so a first Create could
    meet 403 and fail. The lookup is now ListObjectsV2 with the state key as its prefix, under the granted one."""
    from stacks.level0_account.invocation_logging import STATE_PREFIX

    stubber, s3, answers = aws
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": THEIRS}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(PROPS)})
    prefixes: list[str] = []
    function_s3 = h.s3()
    function_s3.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: prefixes.append(params.get("Prefix"))
    )
    seen = calls(function_s3)
    h.handler(event("Create"), context())
    assert answers[0]["Status"] == "SUCCESS" and saved(s3) == {"previous": THEIRS}
    assert seen == ["ListObjectsV2", "PutObject"] and "HeadObject" not in seen
    assert prefixes == [h.STATE_KEY] and h.STATE_KEY.startswith(STATE_PREFIX)
    # A second Create (a replacement) finds it by the same list and keeps it
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_response("put_model_invocation_logging_configuration", {}, {"loggingConfig": h.desired_config(PROPS)})
    h.handler(event("Create"), context())
    assert saved(s3) == {"previous": THEIRS} and seen[2:] == ["ListObjectsV2"]


# Each request's calls in order, as (client, operation): whichever one eats the time, no later one starts, and
# the answer says the function ran out of time (a Create or Update fails, a Delete never blocks).
CREATE_CALLS = [
    ("bedrock", "GetModelInvocationLoggingConfiguration"),
    ("s3", "ListObjectsV2"),
    ("s3", "PutObject"),
    ("bedrock", "PutModelInvocationLoggingConfiguration"),
]
UPDATE_CALLS = [  # someone else's setting replaced the kit's: it is saved over the saved one, then the kit's put
    ("bedrock", "GetModelInvocationLoggingConfiguration"),
    ("s3", "PutObject"),
    ("bedrock", "PutModelInvocationLoggingConfiguration"),
]
RESTORE_CALLS = [  # the kit's setting in place, an earlier one saved: it is put back
    ("bedrock", "GetModelInvocationLoggingConfiguration"),
    ("s3", "ListObjectsV2"),
    ("s3", "GetObject"),
    ("bedrock", "PutModelInvocationLoggingConfiguration"),
]
REMOVE_CALLS = [  # the kit's setting in place, none saved: it is removed
    ("bedrock", "GetModelInvocationLoggingConfiguration"),
    ("s3", "ListObjectsV2"),
    ("bedrock", "DeleteModelInvocationLoggingConfiguration"),
]
STUBBED = {  # what the stubbed Bedrock answers to each of its calls, per request
    "Create": {"GetModelInvocationLoggingConfiguration": {"loggingConfig": THEIRS}},
    "Update": {"GetModelInvocationLoggingConfiguration": {"loggingConfig": THEIRS_CW}},
    "Delete": {"GetModelInvocationLoggingConfiguration": {"loggingConfig": h.desired_config(PROPS)}},
}


CASES = {
    "create": ("Create", CREATE_CALLS, None),
    "update-over-someone-elses": ("Update", UPDATE_CALLS, THEIRS),
    "delete-restore": ("Delete", RESTORE_CALLS, THEIRS),
    "delete-remove": ("Delete", REMOVE_CALLS, None),
}


@pytest.mark.parametrize(
    ("case", "slow_at"),
    # the last call eating the time leaves nothing after it to refuse
    [(case, at) for case, (_, sequence, _) in CASES.items() for at in range(len(sequence) - 1)],
)
def test_no_call_starts_after_the_one_that_ate_the_time(aws: Any, case: str, slow_at: int) -> None:
    stubber, s3, answers = aws
    kind, sequence, saved_before = CASES[case]
    if saved_before is not None:
        s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": saved_before}))
    clients = {"bedrock": h.bedrock(), "s3": h.s3()}
    for service, operation in sequence[: slow_at + 1]:
        if service == "bedrock":
            stubber.add_response(xform_name(operation), STUBBED[kind].get(operation, {}))
    made: list[tuple[str, str]] = []  # both clients' calls, in the order made
    for name, client in clients.items():
        client.meta.events.register_first(
            f"before-parameter-build.{client.meta.service_model.endpoint_prefix}",
            lambda model, name=name, **_: made.append((name, model.name)),
        )
    service, operation = sequence[slow_at]
    slow(clients[service], operation, 200)
    h.handler(update(PROPS, PROPS) if kind == "Update" else event(kind), context())
    assert made == sequence[: slow_at + 1], f"{operation} ate the time"
    [answer] = answers
    assert "ran out of time" in answer["Reason"]
    assert answer["Status"] == ("SUCCESS" if kind == "Delete" else "FAILED")


def test_a_refused_restore_that_ate_the_time_does_not_start_the_removal(aws: Any) -> None:
    stubber, s3, answers = aws
    s3.put_object(Bucket=PROPS["BucketName"], Key=h.STATE_KEY, Body=json.dumps({"previous": THEIRS_CW}))
    stubber.add_response("get_model_invocation_logging_configuration", {"loggingConfig": h.desired_config(PROPS)}, {})
    stubber.add_client_error("put_model_invocation_logging_configuration", "AccessDeniedException", "no", 403)
    slow(h.bedrock(), "PutModelInvocationLoggingConfiguration", 200)  # retried before the refusal came
    seen = calls(h.bedrock())
    h.handler(event("Delete"), context())
    assert seen == ["GetModelInvocationLoggingConfiguration", "PutModelInvocationLoggingConfiguration"]
    [answer] = answers
    assert answer["Status"] == "SUCCESS" and "ran out of time" in answer["Reason"]
    # How to finish by hand: put the earlier setting back (as someone allowed to pass its role).
    [*_, put] = printed_commands(answer["Reason"])
    assert put[:3] == ["aws", "bedrock", "put-model-invocation-logging-configuration"]
    assert json.loads(put[put.index("--logging-config") + 1]) == THEIRS_CW


@pytest.mark.parametrize("kind", ["Create", "Update", "Delete"])
def test_an_invocation_with_too_little_time_left_makes_no_call(aws: Any, kind: str) -> None:
    # Lambda's remaining time is what the answer and one call must fit in; a retried invocation may start late.
    *_, answers = aws
    short = context()
    short.get_remaining_time_in_millis = lambda: (h.ANSWER_RESERVE_S + h.CALL_BUDGET_S - 1) * 1000
    seen = {name: calls(client) for name, client in {"bedrock": h.bedrock(), "s3": h.s3()}.items()}
    h.handler(update(PROPS, PROPS) if kind == "Update" else event(kind), short)
    assert seen == {"bedrock": [], "s3": []}
    [answer] = answers
    assert "ran out of time" in answer["Reason"]
    assert answer["Status"] == ("SUCCESS" if kind == "Delete" else "FAILED")
