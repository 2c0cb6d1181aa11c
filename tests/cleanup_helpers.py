"""What the tests of the stack-deletion cleanups (Level 3's two, Level 4's jobs) share: stubbed clients behind
common.stack_cleanup's seams, a clock that moves only when the code sleeps, CloudFormation's answers, the request
and context a cleanup gets, and the scan of the AWS calls a cleanup's code makes (which its role must grant)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import pytest
from botocore.stub import Stubber

from common import custom_resource, stack_cleanup
from stacks.shared.python_function import package_dir
from tests.lambda_helpers import cloudformation_answers

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class FakeClock:
    """Monotonic time that moves only when the code sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= stack_cleanup.POLL_INTERVAL_S
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FakeAws:
    """The cleanup's world: a Stubber per service (on the real clients, so each request is checked against the
    service model), every API call in order, and CloudFormation's answers with the time each was sent."""

    stubbers: dict[str, Stubber]
    stack_id: str
    state_machine: str
    cause: str  # why the cleanup stops the pipeline's executions
    clock: FakeClock = field(default_factory=FakeClock)
    answers: list[dict[str, Any]] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    call_seconds: float = 0.0  # how long each API call takes on the clock (0: instant)

    @property
    def bedrock(self) -> Stubber:
        return self.stubbers["bedrock"]

    @property
    def sfn(self) -> Stubber:
        return self.stubbers["stepfunctions"]

    @property
    def cfn(self) -> Stubber:
        return self.stubbers["cloudformation"]

    @property
    def answer(self) -> dict[str, Any]:
        [answer] = self.answers
        return answer

    def deleting(self, status: str = "DELETE_IN_PROGRESS") -> None:
        stack = {"StackName": self.stack_id.split("/")[1], "CreationTime": T0, "StackStatus": status}
        self.cfn.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": self.stack_id})

    def executions(self, names: list[str], already_stopped: tuple[str, ...] = ()) -> None:
        """The pipeline's running executions, each of which the cleanup stops; ``already_stopped``: listed too
        (ListExecutions is eventually consistent), but stopped by an earlier look, so not stopped again."""
        arns = [f"{self.state_machine.replace(':stateMachine:', ':execution:')}:{name}" for name in names]
        running = [
            {
                "executionArn": arn,
                "stateMachineArn": self.state_machine,
                "name": name,
                "status": "RUNNING",
                "startDate": T0,
            }
            for arn, name in zip(arns, names, strict=True)
        ]
        running += [
            {
                "executionArn": f"{self.state_machine.replace(':stateMachine:', ':execution:')}:{name}",
                "stateMachineArn": self.state_machine,
                "name": name,
                "status": "RUNNING",
                "startDate": T0,
            }
            for name in already_stopped
        ]
        self.sfn.add_response(
            "list_executions",
            {"executions": running},
            {"stateMachineArn": self.state_machine, "statusFilter": "RUNNING"},
        )
        for arn in arns:
            self.sfn.add_response(
                "stop_execution", {"stopDate": T0}, {"executionArn": arn, "error": "StackDeleted", "cause": self.cause}
            )

    def no_pending(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


World = TypeVar("World", bound=FakeAws)


@contextmanager
def fake_aws(
    monkeypatch: pytest.MonkeyPatch,
    world: type[World],
    services: Sequence[str],
    *,
    stack_id: str,
    state_machine: str,
    cause: str,
) -> Iterator[World]:
    """Put ``world`` behind common.stack_cleanup's seams: its stubbed clients (a service not in ``services`` is
    refused), its clock, and CloudFormation's answers."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clients = {service: stack_cleanup.client(service) for service in services}
    aws = world({s: Stubber(c) for s, c in clients.items()}, stack_id, state_machine, cause)

    def record(model: Any, **_: Any) -> None:
        aws.calls.append(model.name)
        aws.clock.now += aws.call_seconds

    monkeypatch.setattr(stack_cleanup, "client", clients.__getitem__)
    monkeypatch.setattr(stack_cleanup, "clock", aws.clock)
    monkeypatch.setattr(stack_cleanup, "sleep", aws.clock.sleep)
    fake_urlopen = cloudformation_answers(aws.answers, lambda _timeout: aws.answered_at.append(aws.clock.now))
    monkeypatch.setattr(custom_resource.urllib.request, "urlopen", fake_urlopen)
    for client in clients.values():  # the clients are cached across tests: the recorder is removed after each
        client.meta.events.register("provide-client-params.*", record)
    try:
        with ExitStack() as stubbed:
            for stubber in aws.stubbers.values():
                stubbed.enter_context(stubber)
            yield aws
    finally:
        for client in clients.values():
            client.meta.events.unregister("provide-client-params.*", record)


def cleanup_event(
    kind: str, props: dict[str, Any], *, stack_id: str, logical_id: str, resource_type: str, physical_id: str
) -> dict[str, Any]:
    """A CloudFormation custom-resource request (Create has no physical id yet)."""
    return {
        "RequestType": kind,
        "ResponseURL": "https://cfn-response.example/abc",
        "StackId": stack_id,
        "RequestId": "r-1",
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type,
        "ResourceProperties": dict(props),
        **({"PhysicalResourceId": physical_id} if kind != "Create" else {}),
    }


def context(remaining_ms: int) -> Any:
    return mock.Mock(
        function_name="cleanup",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:cleanup",
        aws_request_id="id",
        get_remaining_time_in_millis=mock.Mock(return_value=remaining_ms),
    )


# --- the calls a cleanup makes ---------------------------------------------------------------------------------

IAM_PREFIX = {
    "bedrock": "bedrock",
    "bedrock-agent": "bedrock",
    "sagemaker": "sagemaker",
    "stepfunctions": "states",
    "cloudformation": "cloudformation",
}


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def _literal(call: ast.Call) -> str | None:
    if len(call.args) != 1 or call.keywords:
        return None
    [arg] = call.args
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def client_calls(source: str) -> set[tuple[str, str]]:
    """Every (service, method) the code calls on a cleanup client: ``client("<service>").<method>`` and, through a
    factory ``<name> = client_factory("<service>")``, ``<name>().<method>``. A client got any other way (kept in a
    variable, handed on, a service not written out) fails: the scan could not tell what is called on it."""
    tree = ast.parse(source)
    factories = {
        node.targets[0].id: service
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and _callee(node.value) == "client_factory"
        and isinstance(node.targets[0], ast.Name)
        and (service := _literal(node.value))
    }
    # The factory itself hands its service on to client(): that is how a factory's calls get their client.
    forwarding = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "client_factory"
        for inner in ast.walk(node)
    }
    found: set[tuple[str, str]] = set()
    read: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call):
            call, callee = node.value, _callee(node.value)
            service = _literal(call) if callee == "client" else factories.get(callee or "") if not call.args else None
            if service:
                found.add((service, node.attr))
                read.add(id(call))
    unread = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _callee(node) in {"client", *factories} and id(node) not in read | forwarding
    ]
    assert not unread, f"clients used in a way the scan cannot follow: {unread}"
    return found


def _actions_in(paths: list[Path]) -> set[str]:
    import boto3

    actions = set()
    for path in paths:
        for service, method in client_calls(path.read_text()):
            operation = boto3.client(service, region_name="us-east-1").meta.method_to_api_mapping[method]
            actions.add(f"{IAM_PREFIX[service]}:{operation}")
    return actions


def common_actions(module: str) -> set[str]:
    """The IAM actions a shared step in lambdas/common (``module``.py) calls."""
    return _actions_in([package_dir("common") / f"{module}.py"])


def called_actions(package: str) -> set[str]:
    """The IAM actions a cleanup function's code calls: its package and the shared steps it imports
    (stack_cleanup.py, and executions.py where it stops a state machine's executions)."""
    files = sorted(package_dir(package).glob("*.py"))
    shared = {"stack_cleanup", *(m for m in ("executions",) if any(f"common.{m} " in f.read_text() for f in files))}
    return _actions_in(files) | set().union(*(common_actions(module) for module in shared))
