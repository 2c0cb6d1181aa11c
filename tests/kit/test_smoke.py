"""The smoke-test commands (kit l1 … l4) and their AWS seam, offline: moto for S3, SQS, Step Functions and
SageMaker, botocore's Stubber for Bedrock and HyperPod, an in-memory CloudFormation (moto's needs its
``cloudformation`` extra), and a patched urlopen (or a local HTTP server) for the SigV4 API calls."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import click
import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from click.testing import CliRunner, Result
from moto import mock_aws

from kit import aws, sigv4, smoke
from kit.aws import Target
from kit.smoke import l1, l2, l3, l4
from stacks.config import CUSTOMIZATION_TYPES, STAGES

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "finetune"
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


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
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


@pytest.fixture
def cloudformation(monkeypatch: pytest.MonkeyPatch) -> FakeCloudFormation:
    return FakeCloudFormation().install(monkeypatch)


@pytest.fixture
def mocked(cloudformation: FakeCloudFormation) -> Iterator[FakeCloudFormation]:
    with mock_aws():
        yield cloudformation


@pytest.fixture
def executing(cloudformation: FakeCloudFormation) -> Iterator[FakeCloudFormation]:
    """moto with its Step Functions interpreter: executions really run (in a thread)."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield cloudformation


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


def stubbed(service: str) -> Stubber:
    """A Stubber on the very client the commands will use (clients are cached per region and profile)."""
    stubber = Stubber(aws.client(service, REGION, None))
    stubber.activate()
    return stubber


# --- the AWS seam ------------------------------------------------------------------------------------------


def test_importing_the_commands_needs_no_checkout_on_the_path() -> None:
    """kit/cli.py imports these modules before it finds the checkout: stacks/ must load only at run time."""
    code = (
        "import sys; sys.path = [p for p in sys.path if p not in ('', '.', sys.argv[1])]; "
        "sys.path.insert(0, sys.argv[2]); import kit.smoke, kit.doctor; "
        "assert 'stacks' not in sys.modules, 'stacks imported at import time'"
    )
    # the kit package alone on the path (a copy, as an installed console script would have it)
    site = Path(tempfile.mkdtemp())
    shutil.copytree(ROOT / "kit", site / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(site)], cwd=site, capture_output=True, text=True, check=False
    )
    shutil.rmtree(site)
    assert done.returncode == 0, done.stderr
    assert smoke.CUSTOMIZATION_TYPES == CUSTOMIZATION_TYPES and smoke.STAGES == STAGES


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


def test_options_of_a_parent_group_are_passed_down(mocked: FakeCloudFormation) -> None:
    @click.group()
    @click.option("--stage")
    def root(stage: str | None) -> None:
        """A root group like the lead's CLI, holding its own --stage."""

    root.add_command(l2)
    result = run(root, "--stage", "prod", "l2", "sync")
    assert "GenAiKit-2-Rag-prod is not deployed" in result.output


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
    assert "make destroy, then make deploy STACK=GenAiKit-1-Prompt" in result.output


def test_no_credentials_is_one_line(no_credentials: None) -> None:
    result = run(l1, "templates")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no AWS credentials: configure a profile or environment variables"


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


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, mocked: FakeCloudFormation) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(sigv4, "urlopen", fake)
    return fake


# --- Level 1 ------------------------------------------------------------------------------------------------


COMPLETION = {
    "text": "RAG grounds answers in your documents.",
    "stopReason": "end_turn",
    "usage": {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21},
    "modelId": "us.amazon.nova-micro-v1:0",
    "guardrail": {"intervened": False, "action": "NONE"},
    "latencyMs": 640,
}


def test_l1_prompt_sends_a_signed_body_and_prints_the_answer(api: FakeApi, mocked: FakeCloudFormation) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    api.answer(200, COMPLETION)
    result = run(l1, "prompt", "What is RAG?", "--temperature", "0.2", "--top-p", "0.9", "--max-tokens", "50")
    assert result.exit_code == 0, result.output
    assert api.sent() == (
        "POST",
        API_URL + "prompt",
        {"prompt": "What is RAG?", "temperature": 0.2, "topP": 0.9, "maxTokens": 50},
    )
    assert api.authorization().startswith("AWS4-HMAC-SHA256 Credential=")
    assert f"/{REGION}/execute-api/aws4_request" in api.authorization()
    assert "RAG grounds answers in your documents." in result.output
    assert "12 in / 9 out tokens" in result.output and "640 ms" in result.output


def test_l1_template_reads_variables_and_files(api: FakeApi, mocked: FakeCloudFormation, tmp_path: Path) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    notes = tmp_path / "notes.txt"
    notes.write_text("long notes")
    api.answer(200, {**COMPLETION, "template": "summarize", "guardrail": {"intervened": True, "action": "ANONYMIZED"}})
    result = run(l1, "template", "summarize", "audience=ops", f"text=@{notes}")
    assert result.exit_code == 0, result.output
    assert api.sent() == (
        "POST",
        API_URL + "templates/summarize",
        {"variables": {"audience": "ops", "text": "long notes"}},
    )
    assert "template summarize" in result.output and "The guardrail intervened (ANONYMIZED)." in result.output


def test_l1_templates_lists_names_and_variables(api: FakeApi, mocked: FakeCloudFormation) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    api.answer(
        200, {"templates": [{"name": "summarize", "description": "Summarize text", "variables": ["audience", "text"]}]}
    )
    result = run(l1, "templates")
    assert result.exit_code == 0, result.output
    assert api.sent() == ("GET", API_URL + "templates", None)
    assert "summarize" in result.output and "audience, text" in result.output


def test_l1_api_errors_show_the_error_contract(api: FakeApi, mocked: FakeCloudFormation) -> None:
    mocked.deploy(stack("1"), {"ApiUrl": API_URL})
    error = {"error": {"code": "out_of_range", "message": "temperature must be from 0 to 1", "field": "temperature"}}
    api.answer(400, error).answer(429, {"error": {"code": "throttled", "message": "slow down"}}, {"Retry-After": "2"})
    first = run(l1, "prompt", "hi", "--temperature", "3")
    assert first.exit_code == 1
    assert (
        "Error: the API answered HTTP 400 out_of_range (field temperature): temperature must be from 0 to 1"
        in first.output
    )
    second = run(l1, "prompt", "hi")
    assert "HTTP 429 throttled: slow down; retry after 2 s" in second.output


def test_l1_template_variables_must_be_pairs(api: FakeApi) -> None:
    result = run(l1, "template", "summarize", "audience")
    assert result.exit_code == 2
    assert "template variables are KEY=VALUE, got 'audience'" in result.output
    assert api.requests == []


# --- Level 2 ------------------------------------------------------------------------------------------------


def rag_stack(fake: FakeCloudFormation, bucket: str = "docs-bucket") -> tuple[str, str]:
    """The Level 2 stack's outputs and its two ingestion queues (real moto queues); returns their URLs."""
    sqs = boto3.client("sqs", region_name=REGION)
    changes = sqs.create_queue(QueueName="changes")["QueueUrl"]
    dead = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
    fake.deploy(
        stack("2"),
        {
            "DocumentsBucketName": bucket,
            "DocumentsPrefix": "docs/",
            "KnowledgeBaseId": "KB12345678",
            "DataSourceId": "DS12345678",
            "ApiUrl": API_URL,
        },
        resources={
            "IngestionChangesD5FB1EC5": ("AWS::SQS::Queue", changes),
            "IngestionDeadLetters84B2DF1E": ("AWS::SQS::Queue", dead),
            "IngestionIngestFunction39DE1FF1": ("AWS::Lambda::Function", "ingest"),
        },
    )
    return changes, dead


def test_l2_upload_puts_files_and_folders_under_the_documents_prefix(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    (tmp_path / "guide.md").write_text("# Guide")
    folder = tmp_path / "policies"
    (folder / "hr").mkdir(parents=True)
    (folder / "hr" / "leave.txt").write_text("leave")
    (folder / ".hidden").write_text("skip me")
    result = run(l2, "upload", str(tmp_path / "guide.md"), str(folder), "--prefix", "team-a")
    assert result.exit_code == 0, result.output
    objects = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="docs-bucket")["Contents"]
    assert sorted(o["Key"] for o in objects) == ["docs/team-a/guide.md", "docs/team-a/hr/leave.txt"]
    head = boto3.client("s3", region_name=REGION).head_object(Bucket="docs-bucket", Key="docs/team-a/guide.md")
    assert head["ContentType"] == "text/markdown"
    assert "uploaded s3://docs-bucket/docs/team-a/guide.md" in result.output
    assert "kit l2 sync --wait" in result.output


def test_l2_upload_refuses_files_over_the_knowledge_base_limit(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    big = tmp_path / "big.pdf"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024 + 1)  # sparse: no 50 MB written
    result = run(l2, "upload", str(big))
    assert result.exit_code == 2
    assert "a knowledge base ingests files up to 50 MB; too large: " in result.output and "big.pdf" in result.output


JOB_STATS = {
    "numberOfDocumentsScanned": 7,
    "numberOfNewDocumentsIndexed": 2,
    "numberOfModifiedDocumentsIndexed": 1,
    "numberOfDocumentsDeleted": 0,
    "numberOfDocumentsFailed": 0,
}


def ingestion_job(status: str, job_id: str = "JOB0000001", **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "knowledgeBaseId": "KB12345678",
        "dataSourceId": "DS12345678",
        "ingestionJobId": job_id,
        "status": status,
        "statistics": JOB_STATS,
        "startedAt": now,
        "updatedAt": now,
        **extra,
    }


def expect_newest(agent: Stubber, job: dict[str, Any] | None) -> None:
    listing = {"knowledgeBaseId": "KB12345678", "dataSourceId": "DS12345678"}
    params = {**listing, "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"}, "maxResults": 1}
    summaries = [] if job is None else [{k: v for k, v in job.items() if k != "failureReasons"}]
    agent.add_response("list_ingestion_jobs", {"ingestionJobSummaries": summaries}, params)
    if job is not None:
        agent.add_response(
            "get_ingestion_job", {"ingestionJob": job}, {**listing, "ingestionJobId": job["ingestionJobId"]}
        )


def test_l2_sync_shows_pending_changes_and_the_newest_job(mocked: FakeCloudFormation) -> None:
    changes, dead = rag_stack(mocked)
    sqs = boto3.client("sqs", region_name=REGION)
    for key in ("docs/a.md", "docs/b.md"):
        sqs.send_message(QueueUrl=changes, MessageBody=json.dumps({"key": key}))
    sqs.send_message(QueueUrl=dead, MessageBody="{}")
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    minutes = CONFIG.rag.sync_interval_minutes
    assert f"2 change(s) waiting: the pipeline starts a job every {minutes} min" in result.output
    assert "JOB0000001 COMPLETE · scanned 7 · new 2 · modified 1 · deleted 0 · failed 0" in result.output
    assert "1 change(s) failed 5 times" in result.output
    assert "s3://docs-bucket/docs/" in result.output


def test_l2_sync_wait_follows_the_job_until_it_completes(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("STARTING"))
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "JOB0000001" in line]
    assert [s for s in ("STARTING", "IN_PROGRESS", "COMPLETE") if any(s in line for line in lines)] == [
        "STARTING",
        "IN_PROGRESS",
        "COMPLETE",
    ]


def test_l2_sync_wait_keeps_waiting_while_changes_are_pending(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes, _ = rag_stack(mocked)
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.send_message(QueueUrl=changes, MessageBody="{}")

    class PipelineClock:
        """Between two checks the pipeline drains the queue, as the ingest function does once a job started."""

        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(_: float) -> None:
            for message in sqs.receive_message(QueueUrl=changes, MaxNumberOfMessages=10).get("Messages", []):
                sqs.delete_message(QueueUrl=changes, ReceiptHandle=message["ReceiptHandle"])

    monkeypatch.setattr(smoke, "time", PipelineClock)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("COMPLETE", "JOB0000001"))  # an older job: done, but a change waits
        expect_newest(agent, ingestion_job("IN_PROGRESS", "JOB0000002"))
        expect_newest(agent, ingestion_job("COMPLETE", "JOB0000002"))
        result = run(l2, "sync", "--wait")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    assert "waiting for the pipeline to start a job for 1 pending change(s)" in result.output
    assert "JOB0000002 COMPLETE" in result.output


def test_l2_sync_wait_on_a_new_stack_waits_for_the_first_full_sync(mocked: FakeCloudFormation) -> None:
    # Given a data source with no job yet and nothing queued (a stack just deployed)
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, None)
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
        agent.assert_no_pending_responses()
    # Then --wait does not return at once: it follows the pipeline's first job to the end
    assert result.exit_code == 0, result.output
    assert "waiting for the pipeline to start the first (full) sync of this data source" in result.output
    assert "JOB0000001 COMPLETE" in result.output


def test_l2_sync_wait_exits_1_and_shows_why_a_job_failed(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    failed = ingestion_job("FAILED", failureReasons=["Vector index not found"])
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, failed)
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
    assert result.exit_code == 1
    assert "failure: Vector index not found" in result.output


def test_l2_sync_wait_is_bounded_by_its_timeout(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        result = run(l2, "sync", "--wait", "--timeout", "0")
    assert result.exit_code == 1
    assert "Error: still JOB0000001 IN_PROGRESS" in result.output and "after 0 s" in result.output


def test_l2_ask_prints_the_answer_with_its_sources(api: FakeApi, mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    source = {"uri": "s3://docs-bucket/docs/rag.md", "snippet": "RAG retrieves chunks"}
    api.answer(
        200,
        {
            "answer": "Choose RAG when answers must come from your documents.",
            "sessionId": "session-1",
            "citations": [{"text": "Choose RAG", "start": 0, "end": 10, "sources": [source, source]}],
            "guardrail": {"intervened": False},
        },
    )
    result = run(
        l2,
        "ask",
        "When RAG?",
        "--session-id",
        "session-0",
        "--results",
        "3",
        "--filter",
        '{"equals": {"key": "team", "value": "a"}}',
    )
    assert result.exit_code == 0, result.output
    assert api.sent() == (
        "POST",
        API_URL + "ask",
        {
            "question": "When RAG?",
            "sessionId": "session-0",
            "numberOfResults": 3,
            "filter": {"equals": {"key": "team", "value": "a"}},
        },
    )
    assert "Choose RAG when answers must come from your documents." in result.output
    assert result.output.count("s3://docs-bucket/docs/rag.md") == 1  # sources are listed once
    assert "--session-id session-1" in result.output


def test_l2_retrieve_tabulates_the_chunks(api: FakeApi, mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    api.answer(
        200, {"results": [{"text": "chunk text", "score": 0.8123, "uri": "s3://docs-bucket/docs/a.md", "metadata": {}}]}
    )
    result = run(l2, "retrieve", "chunks", "--json")
    assert json.loads(result.output)["results"][0]["score"] == 0.8123
    api.answer(
        200, {"results": [{"text": "chunk text", "score": 0.8123, "uri": "s3://docs-bucket/docs/a.md", "metadata": {}}]}
    )
    result = run(l2, "retrieve", "chunks", "--results", "2")
    assert api.sent(1) == ("POST", API_URL + "retrieve", {"query": "chunks", "numberOfResults": 2})
    assert "0.812" in result.output and "s3://docs-bucket/docs/a.md" in result.output


def test_l2_a_bad_filter_is_a_usage_error(api: FakeApi) -> None:
    result = run(l2, "ask", "q", "--filter", "[1]")
    assert result.exit_code == 2 and "--filter must be a JSON object" in result.output


# --- Level 3 ------------------------------------------------------------------------------------------------


def test_l3_validate_runs_the_pipeline_validator_offline() -> None:
    valid = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--validation", str(SAMPLES / "validation.jsonl"))
    assert valid.exit_code == 0, valid.output
    assert "VALID:" in valid.output and CONFIG.finetune.base_model_id in valid.output
    invalid = run(l3, "validate", str(SAMPLES / "invalid" / "role_order.jsonl"))
    assert invalid.exit_code == 1 and "INVALID:" in invalid.output
    unknown = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--base-model", "acme.model-v1")
    assert unknown.exit_code == 2 and "--base-model" in unknown.output
    bad_json = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--hyperparameters", "{epochCount")
    assert bad_json.exit_code == 2 and "--hyperparameters is not valid JSON" in bad_json.output
    # Continued pre-training is refused for a base model that does not offer it (Nova micro, the default).
    cpt = run(l3, "validate", str(SAMPLES / "train.jsonl"), "--customization-type", "CONTINUED_PRE_TRAINING")
    assert cpt.exit_code == 2 and "--customization-type" in cpt.output


def finetune_stack(fake: FakeCloudFormation, machine: str) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="ft-data")
    fake.deploy(stack("3"), {"DataBucketName": "ft-data", "StateMachineArn": machine, "BaseModelId": "x"})


def test_l3_start_uploads_validated_data_and_starts_the_pipeline(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    result = run(
        l3,
        "start",
        "--upload",
        str(SAMPLES / "train.jsonl"),
        "--upload-validation",
        str(SAMPLES / "validation.jsonl"),
        "--hyperparameters",
        '{"epochCount": "1"}',
    )
    assert result.exit_code == 0, result.output
    keys = sorted(
        o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ft-data")["Contents"]
    )
    assert keys == ["datasets/train.jsonl", "datasets/validation.jsonl"]
    sfn = boto3.client("stepfunctions", region_name=REGION)
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {
        "trainingKey": "datasets/train.jsonl",
        "validationKey": "datasets/validation.jsonl",
        "hyperparameters": {"epochCount": "1"},
    }
    assert f"kit l3 status {execution['executionArn']} --wait" in result.output


def test_l3_start_refuses_invalid_data_and_keys_outside_datasets(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    invalid = run(l3, "start", "--upload", str(SAMPLES / "invalid" / "missing_key.jsonl"))
    assert invalid.exit_code == 1 and "the data is invalid: nothing was uploaded or started" in invalid.output
    outside = run(l3, "start", "--training-key", "jobs/train.jsonl")
    assert outside.exit_code == 2 and "--training-key must be a key under datasets/" in outside.output
    neither = run(l3, "start")
    assert neither.exit_code == 2 and "--upload FILE" in neither.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ft-data")


def test_l3_status_follows_the_newest_execution_until_it_succeeds(executing: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(executing, machine)
    started = run(l3, "start", "--training-key", "datasets/train.jsonl")
    assert started.exit_code == 0, started.output
    result = run(l3, "status", "--wait", "--poll-seconds", "0.2")
    assert result.exit_code == 0, result.output
    assert "RUNNING · Pause" in result.output
    assert "SUCCEEDED" in result.output and "Pause → Done" in result.output
    assert '"trainingKey":"datasets/train.jsonl"' in result.output


def test_l3_status_wait_exits_1_with_the_error_of_a_failed_execution(executing: FakeCloudFormation) -> None:
    machine = state_machine(FAILING, "finetune")
    finetune_stack(executing, machine)
    arn = boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine, name="run1")[
        "executionArn"
    ]
    result = run(l3, "status", "run1", "--wait", "--poll-seconds", "0.1", "--timeout", "20")
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "InvalidData" in result.output and "bad rows" in result.output
    assert arn in result.output


def test_l3_status_wait_timeout_and_no_executions(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "finetune")
    finetune_stack(mocked, machine)
    none = run(l3, "status")
    assert none.exit_code == 1 and "no executions of finetune yet: start one with kit l3 start" in none.output
    arn = boto3.client("stepfunctions", region_name=REGION).start_execution(stateMachineArn=machine)["executionArn"]
    shown = run(l3, "status")  # plain moto: the execution stays RUNNING
    assert shown.exit_code == 0 and "RUNNING" in shown.output and arn in shown.output
    waited = run(l3, "status", arn, "--wait", "--timeout", "0")
    assert waited.exit_code == 1
    assert "after 0 s (the execution keeps running)" in waited.output and f"kit l3 status {arn} --wait" in waited.output


# --- Level 4 ------------------------------------------------------------------------------------------------


def jobs_stack(fake: FakeCloudFormation, machine: str) -> None:
    fake.deploy(stack("4-jobs"), {"StateMachineArn": machine, "ArtifactsBucketName": "artifacts"})


def test_l4_submit_wait_follows_the_training_execution(executing: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "pretrain")
    jobs_stack(executing, machine)
    result = run(l4, "submit", "--wait", "--poll-seconds", "0.2", "--timeout", "20")
    assert result.exit_code == 0, result.output
    [execution] = boto3.client("stepfunctions", region_name=REGION).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    assert execution["name"].startswith("kit-") and execution["status"] == "SUCCEEDED"
    assert f"training job {CONFIG.name_prefix}-pretrain-{execution['name']}" in result.output
    assert "SUCCEEDED" in result.output and "s3://artifacts/checkpoints/" in result.output


def test_l4_submit_shows_the_training_job_while_it_runs(mocked: FakeCloudFormation) -> None:
    jobs_stack(mocked, state_machine(WAIT_THEN_PASS, "pretrain"))
    job_name = f"{CONFIG.name_prefix}-pretrain-smoke1"
    with stubbed("sagemaker") as sagemaker:
        sagemaker.add_response(
            "describe_training_job",
            {
                "TrainingJobName": job_name,
                "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{job_name}",
                "TrainingJobStatus": "InProgress",
                "SecondaryStatus": "Training",
                "AlgorithmSpecification": {"TrainingInputMode": "File"},
                "ResourceConfig": {"VolumeSizeInGB": 50},
                "StoppingCondition": {},
                "CreationTime": datetime.now(UTC),
                "ModelArtifacts": {"S3ModelArtifacts": ""},
            },
            {"TrainingJobName": job_name},
        )
        result = run(l4, "submit", "--name", "smoke1", "--wait", "--timeout", "0")
    assert result.exit_code == 1  # plain moto keeps it RUNNING: the wait times out
    assert f"training job {job_name}: InProgress/Training" in result.output
    assert "kit l4 status smoke1 --wait" in result.output
    status = run(l4, "status", "smoke1")
    assert status.exit_code == 0 and "RUNNING" in status.output


def test_l4_submit_refuses_a_name_sagemaker_would_reject(mocked: FakeCloudFormation) -> None:
    result = run(l4, "submit", "--name", "under_score")
    assert result.exit_code == 2 and "SageMaker needs 1-63 letters, digits and '-'" in result.output


def test_l4_submit_checkpoints_under_the_executions_own_prefix(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "pretrain")
    jobs_stack(mocked, machine)
    result = run(l4, "submit", "--name", "run2")
    assert result.exit_code == 0, result.output
    assert "checkpoints in s3://artifacts/checkpoints/run2/" in result.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = machine.replace(":stateMachine:", ":execution:") + ":run2"
    assert json.loads(sfn.describe_execution(executionArn=arn)["input"]) == {}


def test_l4_submit_resume_from_asks_the_state_machine_to_continue_that_run(mocked: FakeCloudFormation) -> None:
    machine = state_machine(WAIT_THEN_PASS, "pretrain")
    jobs_stack(mocked, machine)
    earlier = machine.replace(":stateMachine:", ":execution:") + ":run1"
    result = run(l4, "submit", "--name", "run1-more", "--resume-from", earlier)  # an ARN or a name
    assert result.exit_code == 0, result.output
    assert "resuming from the checkpoints in s3://artifacts/checkpoints/run1/" in result.output
    sfn = boto3.client("stepfunctions", region_name=REGION)
    started = sfn.describe_execution(executionArn=machine.replace(":stateMachine:", ":execution:") + ":run1-more")
    assert json.loads(started["input"]) == {"resumeFrom": "run1"}


@pytest.mark.parametrize(("given", "says"), [("under_score", "not the name of an execution"), ("same", "itself")])
def test_l4_submit_refuses_a_resume_from_that_cannot_name_an_earlier_run(
    mocked: FakeCloudFormation, given: str, says: str
) -> None:
    result = run(l4, "submit", "--name", "same", "--resume-from", given)
    assert result.exit_code == 2 and says in result.output


def test_l4_cluster_tabulates_groups_and_nodes() -> None:
    name = "genai-kit-sandbox-hyperpod"
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:cluster/abcd1234efgh"
    now = datetime.now(UTC)
    controller = CONFIG.pretrain.controller.name
    with stubbed("cloudformation") as cloudformation, stubbed("sagemaker") as sagemaker:
        cloudformation.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": stack("4-cluster"),
                        "StackStatus": "CREATE_COMPLETE",
                        "CreationTime": now,
                        "Outputs": [{"OutputKey": "ClusterName", "OutputValue": name}],
                    }
                ]
            },
            {"StackName": stack("4-cluster")},
        )
        sagemaker.add_response(
            "describe_cluster",
            {
                "ClusterArn": arn,
                "ClusterName": name,
                "ClusterStatus": "InService",
                "CreationTime": now,
                "Orchestrator": {"Slurm": {"SlurmConfigStrategy": "Managed"}},
                "InstanceGroups": [
                    {
                        "InstanceGroupName": controller,
                        "InstanceType": "ml.t3.medium",
                        "CurrentCount": 1,
                        "TargetCount": 1,
                        "Status": "InService",
                        "SlurmConfig": {"NodeType": "Controller"},
                    },
                    {
                        "InstanceGroupName": "gpu",
                        "InstanceType": "ml.g5.8xlarge",
                        "CurrentCount": 0,
                        "TargetCount": 0,
                        "Status": "InService",
                        "SlurmConfig": {"NodeType": "Compute", "PartitionNames": ["gpu"]},
                        "InstanceStorageConfigs": [
                            {"EbsVolumeConfig": {"VolumeSizeInGB": 100}},
                            {
                                "FsxLustreConfig": {
                                    "DnsName": "fs-0123456789abcdef0.fsx.us-east-1.amazonaws.com",
                                    "MountName": "abcdefgh",
                                    "MountPath": "/fsx",
                                }
                            },
                        ],
                    },
                ],
            },
            {"ClusterName": name},
        )
        node = {
            "InstanceGroupName": controller,
            "InstanceId": "i-0123456789abcdef0",
            "InstanceType": "ml.t3.medium",
            "LaunchTime": now,
            "InstanceStatus": {"Status": "Running"},
        }
        sagemaker.add_response("list_cluster_nodes", {"ClusterNodeSummaries": [node]}, {"ClusterName": name})
        result = run(l4, "cluster")
    assert result.exit_code == 0, result.output
    assert "InService" in result.output and "ml.g5.8xlarge" in result.output and "i-0123456789abcdef0" in result.output
    assert f"sagemaker-cluster:abcd1234efgh_{controller}-i-0123456789abcdef0" in result.output
    # API-driven Slurm: each group's node type, its partition plus HyperPod's default dev, and the FSx mount.
    assert "configured through the API (Managed strategy)" in result.output
    assert "Controller" in result.output and "Compute" in result.output and "FSx /fsx" in result.output
    assert "Slurm partitions: gpu, and dev (the default, every node)" in " ".join(result.output.split())
    assert "sbatch --partition gpu" in " ".join(result.output.split())


def test_l4_cluster_not_deployed_says_so(mocked: FakeCloudFormation) -> None:
    result = run(l4, "cluster")
    assert result.exit_code == 1
    assert (
        f"{stack('4-cluster')} is not deployed in {REGION}: run make deploy STACK=GenAiKit-4-Pretrain-Cluster"
        in result.output
    )
    assert "the zero-idle path is kit l4 submit" in result.output
