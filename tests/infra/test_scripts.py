"""The helper scripts: synth summary and the SigV4 caller (offline)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.credentials import Credentials

from scripts.call_api import build_call, parse_args, region_of, signed_request
from scripts.synth_summary import stack_summary, summarize

URL = "https://abc123.execute-api.us-east-1.amazonaws.com/v1/"


def test_synth_summary_lists_each_stack_with_level_count_and_idle_cost(sandbox: Any) -> None:
    [line] = summarize(sandbox.assembly_dir)
    count = len(sandbox.templates["GenAiKit-1-Prompt"]["Resources"])
    assert line.startswith("GenAiKit-1-Prompt")
    assert f"{count} resources" in line and "Level 1: prompt engineering" in line
    assert "idle ~$0.50/month" in line  # five CloudWatch alarms at $0.10
    assert "unclassified" not in line


def test_synth_summary_flags_types_it_cannot_price() -> None:
    count, idle, unknown = stack_summary({"Resources": {"C": {"Type": "AWS::OpenSearchServerless::Collection"}}})
    assert (count, idle, unknown) == (1, 0, ["AWS::OpenSearchServerless::Collection"])


def test_region_is_read_from_the_execute_api_host() -> None:
    assert region_of(URL) == "us-east-1"
    with pytest.raises(ValueError, match="not an API Gateway"):
        region_of("https://example.com/v1/")


def test_calls_are_signed_with_sigv4_for_execute_api() -> None:
    method, url, body = build_call(parse_args(["--url", URL, "prompt", "hi", "--temperature", "0.2"]))
    request = signed_request(method, url, body, Credentials("AKIDEXAMPLE", "secret"))
    auth = request.get_header("Authorization")
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/execute-api/aws4_request" in auth
    assert request.get_method() == "POST" and request.full_url.endswith("/v1/prompt")
    assert request.data == b'{"prompt": "hi", "temperature": 0.2}'


def test_template_call_builds_the_variables_body() -> None:
    method, url, body = build_call(parse_args(["--url", URL, "template", "summarize", "audience=ops", "text=a=b"]))
    assert (method, url) == ("POST", URL.rstrip("/") + "/templates/summarize")
    assert body == {"variables": {"audience": "ops", "text": "a=b"}}
