"""Level 3's teardown does not hang on one best-effort event (both paths).

"Step Functions Execution Status Change -- Delivery type: Best effort"
(https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-states.html), and EventBridge drops an event it could
not deliver to a target after its retries unless the target has a dead-letter queue
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html). So: the teardown rule's
target has a dead-letter queue with an alarm that can reach the level's topic, and an hourly sweep starts the
teardown for each run that ended abnormally, at most once per run, quietly where the event's teardown already did
the work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber
from teardown_sweep import handler as sweep
from teardown_sweep.names import SWEEP_PREFIX

from stacks.level3_finetune import sweep as sweep_module
from stacks.level3_finetune.teardown import TEARDOWN_SETTLE
from tests.infra import asl
from tests.infra.helpers import render, resources
from tests.level3_finetune.test_paths import Variant, _synth_variant, status_event

BEDROCK, SAGEMAKER = "GenAiKit-3-FineTune", "GenAiKit-3-FineTune-SageMaker"
REGION, ACCOUNT = "us-east-1", "123456789012"
PIPELINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:genai-kit-finetune"
TEARDOWN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:genai-kit-finetune-teardown"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW, SETTLE = timedelta(hours=3), timedelta(minutes=15)


def _execution(name: str, status: str, stopped: datetime) -> dict[str, Any]:
    return {
        "executionArn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:genai-kit-finetune:{name}",
        "stateMachineArn": PIPELINE,
        "name": name,
        "status": status,
        "startDate": stopped - timedelta(hours=1),
        "stopDate": stopped,
    }


@pytest.fixture
def sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The sweep's Step Functions client, stubbed: every call must be scripted, in order."""
    import boto3

    client = boto3.client("stepfunctions", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b")
    monkeypatch.setattr(sweep, "client", lambda: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _list(stubber: Stubber, status: str, page: list[dict[str, Any]], number: int = 0, more: bool = False) -> None:
    """Page ``number`` of ListExecutions for ``status``; ``more``: it has a nextToken."""
    expected: dict[str, Any] = {"stateMachineArn": PIPELINE, "statusFilter": status, "maxResults": 100}
    if number:
        expected["nextToken"] = f"{status}-{number}"
    response: dict[str, Any] = {"executions": page}
    if more:
        response["nextToken"] = f"{status}-{number + 1}"
    stubber.add_response("list_executions", response, expected)


def _start(
    stubber: Stubber,
    execution: dict[str, Any],
    error: str | None = None,
    name: str | None = None,
    started: datetime = NOW,
) -> None:
    expected = {
        "stateMachineArn": TEARDOWN,
        "name": name or "sweep-" + hashlib.sha256(execution["executionArn"].encode()).hexdigest(),
        "input": json.dumps(
            {
                "source": "genai-spectrum-kit.teardown-sweep",
                "detail": {k: execution[k] for k in ("executionArn", "stateMachineArn", "name", "status")},
            }
        ),
    }
    if error:
        stubber.add_client_error("start_execution", error, http_status_code=400, expected_params=expected)
    else:
        stubber.add_response("start_execution", {"executionArn": "x" * 20, "startDate": started}, expected)


# --- the sweep function -------------------------------------------------------------------------------------------


def test_the_sweep_starts_the_teardown_once_for_each_run_that_ended_abnormally_in_its_window(sfn: Stubber) -> None:
    timed_out = _execution("run-timed-out", "TIMED_OUT", NOW - timedelta(hours=1))
    aborted = _execution("run-aborted", "ABORTED", NOW - timedelta(minutes=20))
    swept_before = _execution("run-failed", "FAILED", NOW - timedelta(hours=2))
    too_old = _execution("run-old", "ABORTED", NOW - timedelta(hours=4))
    too_recent = _execution("run-just-ended", "TIMED_OUT", NOW - timedelta(minutes=5))  # the event's turn
    # The sweep starts each run's teardown as it reads the page that holds it.
    _list(sfn, "FAILED", [swept_before])
    _start(sfn, swept_before, error="ExecutionAlreadyExists")
    _list(sfn, "TIMED_OUT", [too_recent], more=True)
    _list(sfn, "TIMED_OUT", [timed_out], number=1)
    _start(sfn, timed_out)
    _list(sfn, "ABORTED", [aborted, too_old])
    _start(sfn, aborted)
    result = sweep.sweep(NOW, PIPELINE, TEARDOWN, WINDOW, SETTLE)
    assert result == {"started": [timed_out["executionArn"], aborted["executionArn"]], "alreadySwept": 1}


def test_a_teardown_an_earlier_sweep_started_that_still_runs_is_not_counted_as_started(sfn: Stubber) -> None:
    """StartExecution answers success with the open execution of the same name and input (API_StartExecution):
    the teardown the last hour's sweep started, still retrying a busy delete. Before, it was reported as started
    again; now it counts as already swept (its startDate is the earlier sweep's)."""
    running = _execution("run-failed", "FAILED", NOW - timedelta(hours=2))
    fresh = _execution("run-aborted", "ABORTED", NOW - timedelta(minutes=20))
    _list(sfn, "FAILED", [running])
    _start(sfn, running, started=NOW - timedelta(hours=1))
    _list(sfn, "TIMED_OUT", [])
    _list(sfn, "ABORTED", [fresh])
    _start(sfn, fresh, started=NOW + timedelta(seconds=2))
    result = sweep.sweep(NOW, PIPELINE, TEARDOWN, WINDOW, SETTLE)
    assert result == {"started": [fresh["executionArn"]], "alreadySwept": 1}


def test_a_redriven_run_that_ends_abnormally_again_is_swept_again(sfn: Stubber) -> None:
    """A redriven run keeps its ARN; its first end was swept already. Its second end (redriveCount 1) must start a
    teardown of its own, not be taken for the first (ExecutionAlreadyExists on the first end's name)."""
    again = {**_execution("run-redriven", "FAILED", NOW - timedelta(hours=1)), "redriveCount": 1}
    first_name = "sweep-" + hashlib.sha256(again["executionArn"].encode()).hexdigest()
    second_name = "sweep-" + hashlib.sha256(f"{again['executionArn']}#redrive-1".encode()).hexdigest()
    _list(sfn, "FAILED", [again])
    _start(sfn, again, name=second_name)
    _list(sfn, "TIMED_OUT", [])
    _list(sfn, "ABORTED", [])
    result = sweep.sweep(NOW, PIPELINE, TEARDOWN, WINDOW, SETTLE)
    assert result == {"started": [again["executionArn"]], "alreadySwept": 0}
    assert second_name != first_name and sweep.sweep_name(again["executionArn"]) == first_name


def test_the_sweep_reads_a_bounded_number_of_pages(sfn: Stubber) -> None:
    # Every page read has a nextToken: the sweep stops after MAX_PAGES of them (the stub holds no more).
    for number in range(sweep.MAX_PAGES):
        _list(sfn, "FAILED", [], number=number, more=True)
    _list(sfn, "TIMED_OUT", [])
    _list(sfn, "ABORTED", [])
    assert sweep.sweep(NOW, PIPELINE, TEARDOWN, WINDOW, SETTLE) == {"started": [], "alreadySwept": 0}


def test_a_teardown_that_cannot_be_started_fails_the_sweep_after_the_others(sfn: Stubber) -> None:
    first = _execution("run-1", "TIMED_OUT", NOW - timedelta(hours=1))
    second = _execution("run-2", "TIMED_OUT", NOW - timedelta(hours=2))
    _list(sfn, "FAILED", [])
    _list(sfn, "TIMED_OUT", [first, second])
    _start(sfn, first, error="ExecutionLimitExceeded")
    _start(sfn, second)
    _list(sfn, "ABORTED", [])
    with pytest.raises(RuntimeError, match="1 ended executions"):
        sweep.sweep(NOW, PIPELINE, TEARDOWN, WINDOW, SETTLE)


def test_a_start_that_times_out_does_not_stop_the_sweep_of_the_others(
    sfn: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a ReadTimeoutError (a BotoCoreError, not a ClientError) ended the sweep at the first run."""
    from botocore.exceptions import ReadTimeoutError

    first = _execution("run-1", "TIMED_OUT", NOW - timedelta(hours=1))
    second = _execution("run-2", "TIMED_OUT", NOW - timedelta(hours=2))
    _list(sfn, "FAILED", [])
    _list(sfn, "TIMED_OUT", [first, second])
    _start(sfn, second)
    _list(sfn, "ABORTED", [])
    real = sweep.start_teardown

    def times_out_once(client: Any, teardown: str, execution: dict[str, Any], now: datetime) -> bool:
        if execution is first:
            raise ReadTimeoutError(endpoint_url="https://states.us-east-1.amazonaws.com")
        return real(client, teardown, execution, now)

    monkeypatch.setattr(sweep, "start_teardown", times_out_once)
    with pytest.raises(RuntimeError, match="1 ended executions"):
        sweep.sweep(NOW, PIPELINE, TEARDOWN, WINDOW, SETTLE)
    sfn.assert_no_pending_responses()  # the second run's teardown was started


def test_the_sweep_names_fit_step_functions_and_match_what_the_teardown_tests() -> None:
    name = sweep.sweep_name(_execution("run-1", "ABORTED", NOW)["executionArn"])
    assert len(name) <= 80  # StartExecution's name limit (API_StartExecution.html)
    assert name.startswith(SWEEP_PREFIX)  # the one prefix the teardown tests (teardown_sweep/names.py)
    assert sweep_module.SWEEP_SETTLE.to_seconds() > TEARDOWN_SETTLE.to_seconds()
    # Each ended run is looked at by at least two sweeps: one missed hour is made up by the next.
    assert sweep_module.SWEEP_WINDOW.to_seconds() - sweep_module.SWEEP_SETTLE.to_seconds() >= (
        2 * sweep_module.SWEEP_EVERY.to_seconds()
    )


# --- the templates ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provisioned() -> Variant:
    return _synth_variant("provisioned")


@pytest.fixture(scope="module", params=[BEDROCK, SAGEMAKER])
def template(request: pytest.FixtureRequest, sandbox: Any) -> dict[str, Any]:
    found: dict[str, Any] = sandbox.templates[request.param]
    return found


def _status_rule(template: dict[str, Any]) -> dict[str, Any]:
    [rule] = [
        r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"].get("EventPattern", {}).get("detail-type") == ["Step Functions Execution Status Change"]
    ]
    return rule


def test_an_undelivered_status_event_lands_in_a_dead_letter_queue_that_alarms(template: dict[str, Any]) -> None:
    rule = _status_rule(template)
    [target] = rule["Targets"]
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    queue = template["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    # EventBridge sends to the queue only for this rule (eb-rule-dlq.html).
    [policy] = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(template, "AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    [status_rule_id] = [k for k, r in resources(template, "AWS::Events::Rule").items() if r["Properties"] == rule]
    [send] = [
        s
        for s in policy
        if s.get("Principal") == {"Service": "events.amazonaws.com"}
        and s["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": [status_rule_id, "Arn"]}
    ]
    assert send["Action"] == "sqs:SendMessage"
    [alarm] = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions")
        == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    ]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Threshold"] == 1
    [topic_id] = resources(template, "AWS::SNS::Topic")
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": topic_id}]


def test_cloudwatch_may_publish_to_the_topic_and_use_its_key(template: dict[str, Any]) -> None:
    """CloudWatch cannot publish to an encrypted topic unless the key's policy allows it
    (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services)."""
    [(topic_id, topic)] = resources(template, "AWS::SNS::Topic").items()
    statements = [
        s
        for p in resources(template, "AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_id} in p["Properties"]["Topics"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in statements)
    key = topic["Properties"].get("KmsMasterKeyId")
    if key is None:
        return
    key_policy = template["Resources"][key["Fn::GetAtt"][0]]["Properties"]["KeyPolicy"]["Statement"]
    [by_cloudwatch] = [s for s in key_policy if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert sorted(by_cloudwatch["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    # The key also encrypts the level's data: CloudWatch may use it only as SNS does, for a topic of this account
    # (before: on anything the key encrypts)
    [(operator, context)] = by_cloudwatch["Condition"].items()
    assert operator == "StringLike"
    assert {key: render(value) for key, value in context.items()} == {
        "kms:EncryptionContext:aws:sns:topicArn": "arn:aws:sns:us-east-1:${AWS::AccountId}:*"
    }


def test_an_hourly_schedule_runs_the_sweep_with_least_privilege(template: dict[str, Any]) -> None:
    [schedule] = resources(template, "AWS::Scheduler::Schedule").values()
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    target = schedule["Properties"]["Target"]
    function_id = target["Arn"]["Fn::GetAtt"][0]
    function = template["Resources"][function_id]["Properties"]
    assert function["Handler"] == "teardown_sweep.handler.handler"
    # An invocation the scheduler could not make, or one that failed after Lambda's retries, is kept.
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    rule_dlq = _status_rule(template)["Targets"][0]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert queue_id == rule_dlq
    [invoke_config] = [
        c["Properties"]
        for c in resources(template, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    env = function["Environment"]["Variables"]
    pipeline_id = env["PIPELINE_ARN"]["Ref"]
    teardown_id = env["TEARDOWN_ARN"]["Ref"]
    assert teardown_id.startswith("Teardown") and not pipeline_id.startswith("Teardown")
    assert _status_rule(template)["Targets"][0]["Arn"] == {"Ref": teardown_id}
    role_id = function["Role"]["Fn::GetAtt"][0]
    granted = {
        (action, json.dumps(s["Resource"]))
        for p in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        if action.startswith(("states:", "sqs:"))
    }
    assert granted == {
        ("states:ListExecutions", json.dumps({"Ref": pipeline_id})),
        ("states:StartExecution", json.dumps({"Ref": teardown_id})),
        ("sqs:SendMessage", json.dumps({"Fn::GetAtt": [queue_id, "Arn"]})),
    }


def test_the_schedule_role_trusts_this_accounts_scheduler_and_a_failed_invoke_is_retried(
    template: dict[str, Any],
) -> None:
    [schedule] = resources(template, "AWS::Scheduler::Schedule").values()
    target = schedule["Properties"]["Target"]
    role = template["Resources"][target["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    # Confused deputy prevention: aws:SourceArn or aws:SourceAccount in the schedule execution role's trust policy
    # (https://docs.aws.amazon.com/scheduler/latest/UserGuide/cross-service-confused-deputy-prevention.html).
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    # MaximumRetryAttempts: retries before the invocation fails, 0-185
    # (https://docs.aws.amazon.com/scheduler/latest/APIReference/API_RetryPolicy.html). At 0 a single throttled
    # invoke goes straight to the dead-letter queue and its alarm.
    assert 1 <= target["RetryPolicy"]["MaximumRetryAttempts"] <= 185


def test_a_sweep_that_cannot_run_in_time_is_dead_lettered_instead_of_leaving_a_gap(template: dict[str, Any]) -> None:
    """A sweep looks back from the moment it runs. Before: the schedule retried for up to 24 hours and Lambda kept
    the event 6 hours (its default), so hourly sweeps all running late (throttled) each looked at [now - 3 h,
    now - 15 min) and executions that ended between two such windows were never swept, and nothing was
    dead-lettered. Now the latest a sweep can run is bounded so two consecutive windows always meet; a later one
    lands in the alarmed dead-letter queue (Scheduler and Lambda send an expired event to it)."""
    [schedule] = resources(template, "AWS::Scheduler::Schedule").values()
    target = schedule["Properties"]["Target"]
    function_id = target["Arn"]["Fn::GetAtt"][0]
    env = template["Resources"][function_id]["Properties"]["Environment"]["Variables"]
    window, settle = timedelta(minutes=int(env["WINDOW_MINUTES"])), timedelta(minutes=int(env["SETTLE_MINUTES"]))
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    every = timedelta(hours=1)
    [invoke_config] = [
        c["Properties"]
        for c in resources(template, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    scheduler_age = target.get("RetryPolicy", {}).get("MaximumEventAgeInSeconds", 86_400)  # Scheduler's default
    lambda_age = invoke_config.get("MaximumEventAgeInSeconds", 21_600)  # Lambda's default, 6 hours
    assert 60 <= scheduler_age <= 86_400 and 60 <= lambda_age <= 21_600  # the APIs' ranges
    latest = timedelta(seconds=scheduler_age + lambda_age)

    def window_of(scheduled: datetime, late: timedelta) -> tuple[datetime, datetime]:
        ran = scheduled + late
        return ran - window, ran - settle

    # Any two consecutive sweeps, the earlier on time and the later as late as it may run, or the reverse: the later
    # window starts no later than the earlier one ends.
    for first_late, second_late in ((timedelta(0), latest), (latest, timedelta(0)), (latest, latest)):
        _, first_end = window_of(NOW, first_late)
        second_start, _ = window_of(NOW + every, second_late)
        assert second_start <= first_end, (first_late, second_late)


# --- the teardown started by the sweep ----------------------------------------------------------------------------


def _sweep_input(execution_arn: str, status: str) -> dict[str, Any]:
    """The exact input the sweep function gives the teardown."""
    started: list[dict[str, Any]] = []

    class Client:
        def start_execution(self, **kwargs: Any) -> dict[str, Any]:
            started.append(kwargs)
            return {}

    name = execution_arn.rsplit(":", 1)[1]
    ended = {"executionArn": execution_arn, "stateMachineArn": PIPELINE, "name": name, "status": status}
    sweep.start_teardown(Client(), TEARDOWN, ended, NOW)
    [call] = started
    assert call["name"] == sweep.sweep_name(execution_arn)
    loaded: dict[str, Any] = json.loads(call["input"])
    return loaded


def _run(definition: dict[str, Any], event: Any, name: str, **outcomes: list[Any]) -> asl.Trace:
    return asl.simulate(definition, event, outcomes, execution_name=name, publishes_succeed=True)


GONE = asl.AslError("Bedrock.ResourceNotFoundException", "not found")
IMPORT_NOT_FOUND = asl.AslError("Bedrock.ResourceNotFoundException", "no such import job")
JOB_ENDED = {"Status": "Completed"}  # GetModelCustomizationJob: the run's job ended, nothing to stop
JOB_RUNNING = {"Status": "InProgress"}
SM_JOB_ENDED = asl.AslError("SageMaker.ValidationException", "the job is not in progress")


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED", "FAILED"])
def test_a_swept_teardown_after_the_events_teardown_ends_quietly(provisioned: Variant, status: str) -> None:
    """The event's teardown deleted the throughput and reported; the sweep's finds nothing and says nothing."""
    arn = status_event(status)["detail"]["executionArn"]
    event_run = _run(
        provisioned.teardown,
        status_event(status),
        "teardown-1",
        GetItsJob=[JOB_RUNNING],
        StopItsJob=[{}],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[GONE],
    )
    assert event_run.status == "SUCCEEDED" and event_run.notifications
    swept = _run(
        provisioned.teardown,
        _sweep_input(arn, status),
        sweep.sweep_name(arn),
        GetItsJob=[JOB_ENDED],
        DeleteItsThroughput=[GONE],
        DeleteItsDeployment=[GONE],
    )
    assert (swept.status, swept.terminal, swept.notifications) == ("SUCCEEDED", "NothingLeft", []), swept.describe()


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED"])
def test_a_swept_teardown_whose_event_was_lost_deletes_and_reports(provisioned: Variant, status: str) -> None:
    arn = status_event(status)["detail"]["executionArn"]
    swept = _run(
        provisioned.teardown,
        _sweep_input(arn, status),
        sweep.sweep_name(arn),
        GetItsJob=[JOB_ENDED],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[GONE],
    )
    assert (swept.status, swept.terminal) == ("SUCCEEDED", "CleanedUp"), swept.describe()
    [deleted] = swept.calls_to("DeleteItsThroughput")
    event_run = _run(
        provisioned.teardown,
        status_event(status),
        "teardown-1",
        GetItsJob=[JOB_ENDED],
        DeleteItsThroughput=[{}],
        DeleteItsDeployment=[GONE],
    )
    assert deleted.parameters == event_run.calls_to("DeleteItsThroughput")[0].parameters  # the same throughput
    assert len(swept.notifications) == 1


def test_the_events_teardown_still_reports_a_timeout_with_nothing_left(provisioned: Variant) -> None:
    trace = _run(
        provisioned.teardown,
        status_event("TIMED_OUT"),
        "teardown-1",
        GetItsJob=[JOB_ENDED],
        DeleteItsThroughput=[GONE],
        DeleteItsDeployment=[GONE],
    )
    assert trace.terminal == "CleanedUp" and len(trace.notifications) == 1


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED", "FAILED"])
def test_the_sagemaker_teardown_started_by_the_sweep_reports_only_what_it_did(sandbox: Any, status: str) -> None:
    definition = asl.definition_from_template(sandbox.templates[SAGEMAKER], "TeardownStateMachine")
    arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:genai-kit-sft:run-7"
    stops = [SM_JOB_ENDED] * 4
    quiet = _run(
        definition,
        _sweep_input(arn, status),
        sweep.sweep_name(arn),
        DescribeItsTrainingJob=stops,
        TryToStopItsTrainingJob=stops,
        ReadItsImportJob=[IMPORT_NOT_FOUND],
        DeleteItsImportedModel=[GONE],
    )
    assert (quiet.status, quiet.terminal, quiet.notifications) == ("SUCCEEDED", "NothingLeft", []), quiet.describe()
    acted = _run(
        definition,
        _sweep_input(arn, status),
        sweep.sweep_name(arn),
        DescribeItsTrainingJob=stops,
        TryToStopItsTrainingJob=stops,
        ReadItsImportJob=[IMPORT_NOT_FOUND],
        DeleteItsImportedModel=[{}],
    )
    assert (acted.terminal, len(acted.notifications)) == ("CleanedUp", 1), acted.describe()
    # The same name the pipeline gave the run's training job and model (sagemaker_pipeline.run_name).
    [delete] = acted.calls_to("DeleteItsImportedModel")
    named = acted.calls_to("DescribeItsTrainingJob")[0].parameters["TrainingJobName"]
    assert delete.parameters["ModelIdentifier"] == named
    assert delete.parameters["ModelIdentifier"].endswith(hashlib.md5(arn.encode()).hexdigest())


def test_the_handler_reads_its_window_and_settle_time_from_the_environment(
    sfn: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that stopped 5 minutes ago, inside SETTLE_MINUTES, is the status event's to tear down, not the sweep's."""
    from tests.lambda_helpers import FakeContext

    monkeypatch.setenv("PIPELINE_ARN", PIPELINE)
    monkeypatch.setenv("TEARDOWN_ARN", TEARDOWN)
    monkeypatch.setenv("WINDOW_MINUTES", "180")
    monkeypatch.setenv("SETTLE_MINUTES", "15")
    now = datetime.now(UTC)
    just_ended = _execution("run-just-ended", "TIMED_OUT", now - timedelta(minutes=5))
    settled = _execution("run-settled", "TIMED_OUT", now - timedelta(minutes=30))
    _list(sfn, "FAILED", [])
    _list(sfn, "TIMED_OUT", [just_ended, settled])
    _start(sfn, settled, started=now)
    _list(sfn, "ABORTED", [])
    result = sweep.handler({}, FakeContext())
    assert result == {"started": [settled["executionArn"]], "alreadySwept": 0}
