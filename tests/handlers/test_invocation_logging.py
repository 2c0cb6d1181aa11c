"""The invocation-logging custom resource: saves, sets, restores; always answers CloudFormation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from invocation_logging import handler as h

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


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, Any, list[dict[str, Any]]]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "invocation-logging")
    h.bedrock.cache_clear()
    h.s3.cache_clear()
    answers: list[dict[str, Any]] = []

    class Answer:
        status = 200

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *args: object) -> None:
            return None

    def fake_urlopen(request: Any, timeout: float) -> Answer:
        assert request.get_method() == "PUT" and request.full_url.startswith("https://cfn-response")
        answers.append(json.loads(request.data))
        return Answer()

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=PROPS["BucketName"])
        client = boto3.client("bedrock", region_name="us-east-1")
        stubber = Stubber(client)
        with (
            stubber,
            mock.patch.object(h, "bedrock", lambda: client),
            mock.patch.object(h.urllib.request, "urlopen", fake_urlopen),
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


def context() -> Any:
    return mock.Mock(function_name="f", memory_limit_in_mb=256, invoked_function_arn="arn:f", aws_request_id="id")


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
