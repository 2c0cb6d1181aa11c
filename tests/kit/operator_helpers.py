"""What the operator commands' tests share (kit l1 … l4 and kit doctor), offline: the target the commands
read from cdk.json, an in-memory CloudFormation (moto's needs its ``cloudformation`` extra), moto fixtures for
S3, SQS, Step Functions and SageMaker, botocore's Stubber on the commands' own clients, and a patched urlopen
for the SigV4 API calls.

The tests of each level live beside the level (tests/levelN_x/test_kit_commands.py) and import the fixtures
they use from here by name (pytest registers a fixture imported into a test module, autouse ones included).
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import boto3
import click
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from click.testing import CliRunner, Result
from moto import mock_aws

from kit import aws, sigv4
from kit.aws import Target

CONFIG = Target().config  # cdk.json as the commands read it
REGION = CONFIG.region
STAGE = CONFIG.stage
API_URL = f"https://abc123.execute-api.{REGION}.amazonaws.com/v1/"
ROLE = "arn:aws:iam::123456789012:role/states"
WAIT_THEN_PASS = {
    "StartAt": "Pause",
    "States": {"Pause": {"Type": "Wait", "Seconds": 1, "Next": "Done"}, "Done": {"Type": "Pass", "End": True}},
}
FAILING = {"StartAt": "Broken", "States": {"Broken": {"Type": "Fail", "Error": "InvalidData", "Cause": "bad rows"}}}


def stack(level: str) -> str:
    return f"{aws.stack_id(level)}-{STAGE}"


def run(command: click.Command, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def state_machine(definition: dict[str, Any], name: str = "machine") -> str:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return str(sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"])


@pytest.fixture(autouse=True, name="fresh_clients")
def fresh_clients_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no wrapping inside the asserted text
    aws.reset()
    yield
    aws.reset()


class FakeCloudFormation:
    """DescribeStacks and ListStackResources answered from the stacks a test deploys, on every CloudFormation
    client the commands create; like Stubber, each answer is checked against botocore's model."""

    def __init__(self) -> None:
        self.stacks: dict[tuple[str, str], dict[str, Any]] = {}

    def deploy(
        self,
        name: str,
        outputs: dict[str, str],
        *,
        resources: dict[str, tuple[str, str]] | None = None,
        region: str = REGION,
        status: str = "CREATE_COMPLETE",
    ) -> None:
        """A stack with these outputs and resources (logical id -> (type, physical id))."""
        self.stacks[(region, name)] = {"outputs": outputs, "resources": resources or {}, "status": status}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCloudFormation:
        """Answer on every CloudFormation client the kit creates from now on."""
        original = aws.client

        def client(name: str, region: str | None = None, profile: str | None = None) -> Any:
            created = (name, region, profile) not in aws._clients
            found = original(name, region, profile)
            if name == "cloudformation" and created:
                self.hook(found)
            return found

        monkeypatch.setattr(aws, "client", client)
        return self

    def hook(self, client: Any) -> None:
        region = client.meta.region_name
        asked: dict[str, Any] = {}

        def remember(params: dict[str, Any], **_: Any) -> None:  # the API parameters, before serialization
            asked.clear()
            asked.update(params)

        def answer(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
            name = str(asked.get("StackName", ""))
            found = self.stacks.get((region, name))
            if found is None:
                error = {"Code": "ValidationError", "Message": f"Stack with id {name} does not exist"}
                return AWSResponse(None, 400, {}, None), {"Error": error}
            parsed = self._parsed(model.name, name, found)
            validate_parameters(parsed, model.output_shape)
            return AWSResponse(None, 200, {}, None), parsed

        client.meta.events.register_first("before-parameter-build.cloudformation", remember)
        client.meta.events.register_first("before-call.cloudformation", answer)

    @staticmethod
    def _parsed(operation: str, name: str, found: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        if operation == "DescribeStacks":
            outputs = [{"OutputKey": k, "OutputValue": v} for k, v in found["outputs"].items()]
            return {
                "Stacks": [{"StackName": name, "StackStatus": found["status"], "CreationTime": now, "Outputs": outputs}]
            }
        if operation == "ListStackResources":
            summaries = [
                {
                    "LogicalResourceId": logical,
                    "PhysicalResourceId": physical,
                    "ResourceType": kind,
                    "ResourceStatus": "CREATE_COMPLETE",
                    "LastUpdatedTimestamp": now,
                }
                for logical, (kind, physical) in found["resources"].items()
            ]
            return {"StackResourceSummaries": summaries}
        raise AssertionError(f"FakeCloudFormation does not answer {operation}")


@pytest.fixture(name="cloudformation")
def cloudformation_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeCloudFormation:
    return FakeCloudFormation().install(monkeypatch)


@pytest.fixture(name="mocked")
def mocked_fixture(cloudformation: FakeCloudFormation) -> Iterator[FakeCloudFormation]:
    with mock_aws():
        yield cloudformation


@pytest.fixture(name="executing")
def executing_fixture(cloudformation: FakeCloudFormation) -> Iterator[FakeCloudFormation]:
    """moto with its Step Functions interpreter: executions really run (in a thread)."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield cloudformation


@pytest.fixture(name="no_credentials")
def no_credentials_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


def stubbed(service: str) -> Stubber:
    """A Stubber on the very client the commands will use (clients are cached per region and profile)."""
    stubber = Stubber(aws.client(service, REGION, None))
    stubber.activate()
    return stubber


class FakeApi:
    """Stands in for urlopen: records each signed request and answers from a queue."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.answers: list[tuple[int, Any, dict[str, str]]] = []

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> FakeApi:
        self.answers.append((status, body, headers or {}))
        return self

    def __call__(self, request: Any, timeout: float) -> Any:
        self.requests.append(request)
        status, body, headers = self.answers.pop(0)
        raw = json.dumps(body).encode()
        if status >= 400:
            message = Message()
            for key, value in headers.items():
                message[key] = value
            raise urllib.error.HTTPError(request.full_url, status, "error", message, io.BytesIO(raw))
        return io.BytesIO(raw)

    def sent(self, index: int = 0) -> tuple[str, str, Any]:
        request = self.requests[index]
        return request.get_method(), request.full_url, json.loads(request.data) if request.data else None

    def authorization(self, index: int = 0) -> str:
        return str(self.requests[index].get_header("Authorization"))


@pytest.fixture(name="api")
def api_fixture(monkeypatch: pytest.MonkeyPatch, mocked: FakeCloudFormation) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(sigv4, "urlopen", fake)
    return fake


def same_named_files(folder: Path, name: str, first: list[str], second: list[str]) -> tuple[Path, Path]:
    """Two files of one name with other contents, in two folders under ``folder`` (a/ and b/)."""
    paths = (folder / "a" / name, folder / "b" / name)
    for path, lines in zip(paths, (first, second), strict=True):
        path.parent.mkdir()
        path.write_text("".join(lines))
    return paths


class InterruptedTime:
    """Stands in for a command module's ``time``: the first sleep of a --wait is a Ctrl-C."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def sleep(_: float) -> None:
        raise KeyboardInterrupt


def lose_start_answers(monkeypatch: pytest.MonkeyPatch, *, started: bool) -> None:
    """Every StartExecution fails as if its answer were lost (a read timeout after the client's retries): after the
    execution started (``started``), or before the request reached Step Functions."""
    from botocore.exceptions import ReadTimeoutError

    def lost(**_: object) -> None:
        raise ReadTimeoutError(endpoint_url=f"https://states.{REGION}.amazonaws.com")

    on_call(monkeypatch, "stepfunctions", f"{'after' if started else 'before'}-call.sfn.StartExecution", lost)


def on_call(monkeypatch: pytest.MonkeyPatch, service: str, event: str, handler: Any) -> None:
    """Register ``handler`` for botocore ``event`` on each ``service`` client the kit makes from now on (a raise in
    it is the call's answer)."""
    original = aws.client

    def client(name: str, region: str | None = None, profile: str | None = None) -> object:
        created = (name, region, profile) not in aws._clients
        found = original(name, region, profile)
        if name == service and created:
            found.meta.events.register(event, handler)
        return found

    monkeypatch.setattr(aws, "client", client)
