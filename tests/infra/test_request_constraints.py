"""The suite holds every request a botocore client sends to its model's maximums, patterns and enums
(tests/conftest.py), which botocore's own client-side validation does not check and the service does."""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber
from botocore.validate import ParamValidator

VALID = {"knowledgeBaseId": "ABCDEFGHIJ", "dataSourceId": "KLMNOPQRST"}


@pytest.mark.parametrize(
    ("operation", "params", "reason"),
    [
        ("start_ingestion_job", {**VALID, "knowledgeBaseId": "ABCDEFGHIJK"}, "does not match"),
        ("start_ingestion_job", {**VALID, "description": "d" * 201}, "above the maximum 200"),
        (
            "list_ingestion_jobs",
            {**VALID, "filters": [{"attribute": "STATUS", "operator": "IN", "values": ["FAILED"]}]},
            "is not one of ['EQ']",
        ),
    ],
)
def test_a_request_botocore_lets_through_but_the_service_refuses_fails_in_the_suite(
    operation: str, params: dict[str, Any], reason: str
) -> None:
    client = boto3.client("bedrock-agent", region_name="us-east-1")
    shape = client.meta.service_model.operation_model(client.meta.method_to_api_mapping[operation]).input_shape
    # Given a request botocore's own validation accepts
    assert not ParamValidator().validate(params, shape).has_errors()
    # When a test sends it with a response waiting, Then it fails before the response is read, naming the reason
    with Stubber(client) as stub, pytest.raises(ParamValidationError, match=re.escape(reason)):
        stub.add_client_error(operation, expected_params=params)  # what would come back without the check
        getattr(client, operation)(**params)


def test_a_request_within_the_model_goes_through() -> None:
    client = boto3.client("bedrock-agent", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response("list_ingestion_jobs", {"ingestionJobSummaries": []}, VALID)
        assert client.list_ingestion_jobs(**VALID)["ingestionJobSummaries"] == []
