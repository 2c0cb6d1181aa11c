"""Level 2's destroy cleanup: on the stack's own deletion it stops the knowledge base's ingestion jobs, waits until
none runs, looks again once an ingest run in flight has ended, and always answers CloudFormation (every call goes
through a botocore Stubber on the real client); and in the real app's templates: every stage, exact IAM, deleted
after the ingest function and its schedules and before the data source."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from common import stack_cleanup
from rag_cleanup import handler as h
from stacks.level2_rag.cleanup import CLEANUP_SERVICE_TIMEOUT, CLEANUP_TIMEOUT
from stacks.level2_rag.stack import INGEST_TIMEOUT
from tests.cleanup_helpers import T0, FakeAws, called_actions, cleanup_event, context, fake_aws
from tests.infra.helpers import as_list, resources

STACK = "GenAiKit-2-Rag"
ACCOUNT = "123456789012"
STACK_ID = f"arn:aws:cloudformation:us-east-1:{ACCOUNT}:stack/GenAiKit-2-Rag-sandbox/abc"
KB, DS = "KB12345678", "DS12345678"
INGEST_S = int(INGEST_TIMEOUT.to_seconds())
PROPS = {
    "ServiceToken": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:cleanup",
    "KnowledgeBaseId": KB,
    "DataSourceId": DS,
    "IngestTimeoutSeconds": str(INGEST_S),
}
FUNCTION_MS = int(CLEANUP_TIMEOUT.to_milliseconds())
LIST = {
    "knowledgeBaseId": KB,
    "dataSourceId": DS,
    "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"},
    "maxResults": h.NEWEST,
}


def job(job_id: str, status: str, minutes_ago: int = 0) -> dict[str, Any]:
    at = T0 - timedelta(minutes=minutes_ago)
    return {
        "knowledgeBaseId": KB,
        "dataSourceId": DS,
        "ingestionJobId": job_id,
        "status": status,
        "startedAt": at,
        "updatedAt": at,
    }


class Aws(FakeAws):
    @property
    def agent(self) -> Any:
        return self.stubbers["bedrock-agent"]

    def jobs(self, *jobs: dict[str, Any]) -> None:
        self.agent.add_response("list_ingestion_jobs", {"ingestionJobSummaries": list(jobs)}, LIST)

    def stop(self, job_id: str) -> None:
        stopped = {"ingestionJob": {**job(job_id, "STOPPING"), "startedAt": T0, "updatedAt": T0}}
        self.agent.add_response(
            "stop_ingestion_job", stopped, {"knowledgeBaseId": KB, "dataSourceId": DS, "ingestionJobId": job_id}
        )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "rag-cleanup")
    services = ("bedrock-agent", "cloudformation")
    with fake_aws(monkeypatch, Aws, services, stack_id=STACK_ID, state_machine="-", cause="-") as world:
        yield world


def event(kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return cleanup_event(
        kind,
        PROPS if props is None else props,
        stack_id=STACK_ID,
        logical_id="DestroyCleanupResource",
        resource_type="Custom::RagIngestionCleanup",
        physical_id=h.PHYSICAL_ID,
    )


def _slept(aws: Aws) -> float:
    return sum(aws.clock.sleeps)


# --- the handler ----------------------------------------------------------------------------------------------


def test_a_running_job_is_stopped_a_stopping_one_waited_for_and_the_last_look_comes_after_an_ingest_run(
    aws: Aws,
) -> None:
    aws.deleting()
    aws.jobs(job("JOB0000002", "IN_PROGRESS"), job("JOB0000001", "STOPPING", 5), job("JOB0000000", "COMPLETE", 30))
    aws.stop("JOB0000002")  # the STOPPING one is not stopped again: the stubber fails on any other stop
    aws.jobs(job("JOB0000002", "STOPPING"), job("JOB0000001", "STOPPED", 5))
    aws.jobs(job("JOB0000002", "STOPPED"), job("JOB0000001", "STOPPED", 5))
    aws.jobs(
        job("JOB0000002", "STOPPED"), job("JOB0000001", "STOPPED", 5)
    )  # the last look, after the ingest function's timeout
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]
    assert aws.answer["Reason"] == "stopped 2 ingestion job(s) [JOB0000001, JOB0000002]"
    assert aws.calls.count("StopIngestionJob") == 1
    # A run in flight when its function was deleted may start a job until its timeout: the last look waits for it.
    assert _slept(aws) >= INGEST_S


def test_a_job_a_run_in_flight_started_is_found_by_the_last_look_and_stopped(aws: Aws) -> None:
    aws.deleting()
    aws.jobs(job("JOB0000000", "COMPLETE", 30))  # nothing runs at first
    aws.jobs(job("JOB0000009", "STARTING"), job("JOB0000000", "COMPLETE", 30))
    aws.stop("JOB0000009")
    aws.jobs(job("JOB0000009", "STOPPED"), job("JOB0000000", "COMPLETE", 30))
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS" and aws.answer["Reason"] == "stopped 1 ingestion job(s) [JOB0000009]"


def test_a_stop_refused_while_a_job_starts_is_asked_again_on_the_next_look(aws: Aws) -> None:
    """Which statuses Bedrock stops is not documented: a refusal while STARTING is not the end of it."""
    aws.deleting()
    aws.jobs(job("JOB0000002", "STARTING"))
    stop = {"knowledgeBaseId": KB, "dataSourceId": DS, "ingestionJobId": "JOB0000002"}
    aws.agent.add_client_error("stop_ingestion_job", "ConflictException", "not yet", 409, expected_params=stop)
    aws.jobs(job("JOB0000002", "IN_PROGRESS"))
    aws.stop("JOB0000002")
    aws.jobs(job("JOB0000002", "STOPPED"))
    aws.jobs(job("JOB0000002", "STOPPED"))  # the last look
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS" and aws.calls.count("StopIngestionJob") == 2


def test_a_stop_refused_for_good_fails_at_once_naming_the_error(aws: Aws) -> None:
    """Only a job that ended or is ending meanwhile (Conflict, Validation, NotFound) may refuse its stop: an access
    refusal fails the cleanup at once, naming it, instead of waiting for a job nothing is stopping."""
    aws.deleting()
    aws.jobs(job("JOB0000002", "IN_PROGRESS"))
    stop = {"knowledgeBaseId": KB, "dataSourceId": DS, "ingestionJobId": "JOB0000002"}
    aws.agent.add_client_error("stop_ingestion_job", "AccessDeniedException", "not allowed", 403, expected_params=stop)
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "FAILED"
    assert aws.answer["Reason"].startswith("AccessDeniedException: not allowed")
    assert _slept(aws) == 0


def test_a_refused_listing_fails_at_once_rather_than_finding_no_job(aws: Aws) -> None:
    """Only a data source already gone has no jobs; a listing refused (access, throttling past the retries) leaves it
    unknown whether a job runs, so the cleanup fails naming the error and the destroy can be run again."""
    aws.deleting()
    aws.agent.add_client_error("list_ingestion_jobs", "AccessDeniedException", "not allowed", 403, expected_params=LIST)
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "FAILED"
    reason = aws.answer["Reason"]
    assert reason.startswith("AccessDeniedException: not allowed") and h.RETRY_HINT in reason
    assert _slept(aws) == 0


def test_a_failed_first_create_s_rollback_stops_the_jobs_too(aws: Aws) -> None:
    """The rollback deletes the data source as a destroy does, and the sync schedule may have started the first sync
    meanwhile; an update's rollback or an update that removes the resource stops nothing."""
    aws.deleting("ROLLBACK_IN_PROGRESS")
    aws.jobs(job("JOB0000001", "IN_PROGRESS"))
    aws.stop("JOB0000001")
    aws.jobs(job("JOB0000001", "STOPPED"))
    aws.jobs(job("JOB0000001", "STOPPED"))
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.deleting("UPDATE_ROLLBACK_IN_PROGRESS")
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert [a["Status"] for a in aws.answers] == ["SUCCESS", "SUCCESS"]
    assert aws.answers[0]["Reason"] == "stopped 1 ingestion job(s) [JOB0000001]"
    assert "left in place" in aws.answers[1]["Reason"]


def test_a_data_source_already_gone_and_a_job_that_ended_meanwhile_do_not_fail_the_destroy(aws: Aws) -> None:
    aws.deleting()
    aws.jobs(job("JOB0000002", "IN_PROGRESS"))
    stop = {"knowledgeBaseId": KB, "dataSourceId": DS, "ingestionJobId": "JOB0000002"}
    aws.agent.add_client_error("stop_ingestion_job", "ConflictException", "already ended", 409, expected_params=stop)
    aws.agent.add_client_error("list_ingestion_jobs", "ResourceNotFoundException", "gone", 404, expected_params=LIST)
    aws.agent.add_client_error("list_ingestion_jobs", "ResourceNotFoundException", "gone", 404, expected_params=LIST)
    h.handler(event("Delete"), context(FUNCTION_MS))
    aws.no_pending()
    assert aws.answer["Status"] == "SUCCESS", aws.answer["Reason"]


def test_a_job_that_never_stops_fails_in_time_naming_it(aws: Aws) -> None:
    aws.deleting()
    aws.jobs(job("JOB0000002", "IN_PROGRESS"))
    aws.stop("JOB0000002")
    polls = int((FUNCTION_MS / 1000 - stack_cleanup.ANSWER_MARGIN_S) // stack_cleanup.POLL_INTERVAL_S) + 2
    for _ in range(polls):
        aws.jobs(job("JOB0000002", "STOPPING"))
    h.handler(event("Delete"), context(FUNCTION_MS))
    assert aws.answer["Status"] == "FAILED"
    assert "JOB0000002" in aws.answer["Reason"] and h.RESUME_HINT in aws.answer["Reason"]
    assert aws.answered_at[0] <= FUNCTION_MS / 1000  # answered before the function's timeout


def test_an_update_that_removes_the_resource_stops_nothing_and_a_bad_property_fails_at_deploy(aws: Aws) -> None:
    aws.deleting("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    h.handler(event("Delete"), context(FUNCTION_MS))
    h.handler(event("Create", {**PROPS, "IngestTimeoutSeconds": "two minutes"}), context(FUNCTION_MS))
    aws.no_pending()
    assert [a["Status"] for a in aws.answers] == ["SUCCESS", "FAILED"]
    assert "running ingestion jobs left in place" in aws.answers[0]["Reason"]
    assert aws.answers[1]["Reason"] == "IngestTimeoutSeconds must be a number of seconds, not 'two minutes'"
    assert aws.calls == ["DescribeStacks"]


@pytest.mark.parametrize("name", ["KnowledgeBaseId", "DataSourceId", "IngestTimeoutSeconds"])
def test_a_missing_or_empty_property_fails_at_deploy_naming_it(aws: Aws, name: str) -> None:
    for props in ({k: v for k, v in PROPS.items() if k != name}, {**PROPS, name: ""}):
        h.handler(event("Create", props), context(FUNCTION_MS))
        assert (aws.answer["Status"], aws.answer["Reason"]) == ("FAILED", f"missing resource properties: {name}")
        aws.answers.clear()
    assert aws.calls == []


# --- the templates ----------------------------------------------------------------------------------------------


def _depends(resource: dict[str, Any]) -> set[str]:
    return set(as_list(resource.get("DependsOn", [])))


@pytest.mark.parametrize("variant", ["sandbox", "prod"])
def test_every_stage_stops_ingestion_after_the_ingest_function_and_before_the_data_source(
    variant: str, request: pytest.FixtureRequest
) -> None:
    template = request.getfixturevalue(variant).templates[STACK]
    [(lid, cleanup)] = resources(template, "Custom::RagIngestionCleanup").items()
    props = cleanup["Properties"]
    [(kb, _)] = resources(template, "AWS::Bedrock::KnowledgeBase").items()
    [(ds, _)] = resources(template, "AWS::Bedrock::DataSource").items()
    assert props["KnowledgeBaseId"] == {"Fn::GetAtt": [kb, "KnowledgeBaseId"]}
    assert props["DataSourceId"] == {"Fn::GetAtt": [ds, "DataSourceId"]}
    assert int(props["IngestTimeoutSeconds"]) == INGEST_S
    assert int(props["ServiceTimeout"]) == CLEANUP_SERVICE_TIMEOUT.to_seconds() > CLEANUP_TIMEOUT.to_seconds()
    # The ingest function is deleted before it (a dependent goes first), and its schedules before the function.
    functions = resources(template, "AWS::Lambda::Function")
    [ingest] = [k for k, v in functions.items() if v["Properties"].get("Handler") == "rag_ingest.handler.handler"]
    assert lid in _depends(functions[ingest])
    schedules = [
        r for r in resources(template, "AWS::Events::Rule").values() if "ScheduleExpression" in r["Properties"]
    ]
    assert schedules and all(
        t["Arn"] == {"Fn::GetAtt": [ingest, "Arn"]} for r in schedules for t in r["Properties"]["Targets"]
    )


def test_the_function_is_granted_exactly_what_it_calls_on_the_knowledge_base(sandbox: Any) -> None:
    template = sandbox.templates[STACK]
    functions = resources(template, "AWS::Lambda::Function")
    [function] = [v for v in functions.values() if v["Properties"].get("Handler") == "rag_cleanup.handler.handler"]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "Sid" in s
    ]
    granted = {a for s in statements for a in as_list(s["Action"])}
    assert (
        granted
        == called_actions("rag_cleanup")
        == {
            "bedrock:ListIngestionJobs",
            "bedrock:StopIngestionJob",
            "cloudformation:DescribeStacks",
        }
    )
    [kb] = resources(template, "AWS::Bedrock::KnowledgeBase")
    [stop] = [s for s in statements if s["Sid"] == "StopIngestion"]
    assert stop["Resource"] == {"Fn::GetAtt": [kb, "KnowledgeBaseArn"]}
