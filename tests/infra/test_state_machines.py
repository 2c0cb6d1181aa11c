"""Properties every state machine of the kit keeps, whatever its level."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.infra.asl import AslUnsupported, resolve, state_machines
from tests.infra.helpers import evaluate, stack_created


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition.get("States", {}).items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _states(state[key])


def _resolved(template: dict[str, Any], part: Any) -> str:
    """A part of a definition's Fn::Join; a cross-stack value (Fn::GetStackOutput) sits inside a JSON string."""
    try:
        return resolve(template, part)
    except AslUnsupported:
        return "cross-stack-value"


def _definitions(templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for stack_id, template in templates.items():
        for logical_id, properties in state_machines(template).items():
            body = properties["DefinitionString"]
            if isinstance(body, dict):
                separator, parts = body["Fn::Join"]
                body = separator.join(_resolved(template, part) for part in parts)
            yield f"{stack_id}/{logical_id}", json.loads(body)


def notification_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """SNS publish states whose failure would decide the run's outcome. An error a state does not catch fails
    the execution (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html), so a topic
    that stays unavailable after the retries would turn a trained model into a failed run: each notification
    retries, then catches every error into the state it would have gone to anyway."""
    found = []
    for machine, definition in _definitions(templates):
        for name, state in _states(definition):
            if state.get("Type") != "Task" or not str(state.get("Resource", "")).endswith(":::sns:publish"):
                continue
            catches = [c["Next"] for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]]
            if not state.get("Retry"):
                found.append(f"{machine}.{name}: no Retry")
            if catches != [state.get("Next")]:
                found.append(f"{machine}.{name}: a failed publish goes to {catches or 'the end of the run'}")
    return found


def test_a_notification_never_decides_the_outcome_of_a_run(each_stage: Any) -> None:
    assert sum(1 for _ in _definitions(each_stage.templates)) >= 5
    assert notification_findings(each_stage.templates) == []
    # Canary: a publish without a Catch is found.
    state = {"Type": "Task", "Resource": "arn:aws:states:::sns:publish", "Next": "Done", "Retry": [{}]}
    machine = {"Type": "AWS::StepFunctions::StateMachine", "Properties": {"DefinitionString": "{}"}}
    machine["Properties"]["DefinitionString"] = json.dumps({"StartAt": "N", "States": {"N": state}})
    assert notification_findings({"S": {"Resources": {"M": machine}}}) == [
        "S/M.N: a failed publish goes to the end of the run"
    ]


# The errors Step Functions reports for a Lambda invocation Lambda itself could not run: its transient service
# exceptions and, "when Lambda hits the maximum number of invocations", Lambda.TooManyRequestsException
# (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
LAMBDA_TRANSIENT_ERRORS = {
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def _invokes_lambda(state: dict[str, Any]) -> bool:
    """A Task that invokes a function: the optimized integration, or the function's ARN as the Resource (what
    LambdaInvoke writes with payload_response_only)."""
    resource = str(state.get("Resource", ""))
    return state.get("Type") == "Task" and (resource.endswith(":::lambda:invoke") or ":lambda:" in resource)


def lambda_retry_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Lambda tasks that fail the run on an error Lambda raised before the function ran: each is retried first
    (a retrier for States.ALL or States.TaskFailed would retry the function's own errors too, so it does not count)."""
    found = []
    for machine, definition in _definitions(templates):
        for name, state in _states(definition):
            if not _invokes_lambda(state):
                continue
            retried = {error for retrier in state.get("Retry", []) for error in retrier["ErrorEquals"]}
            for error in sorted(LAMBDA_TRANSIENT_ERRORS - retried):
                found.append(f"{machine}.{name}: {error} is not retried")
    return found


def test_a_lambda_task_waits_out_lambdas_own_errors_and_throttling(each_stage: Any) -> None:
    tasks = [
        state
        for _, definition in _definitions(each_stage.templates)
        for _, state in _states(definition)
        if _invokes_lambda(state)
    ]
    assert len(tasks) >= 2  # Level 3's two validators
    assert lambda_retry_findings(each_stage.templates) == []


def test_the_lambda_retry_guard_sees_a_task_that_is_not_retried() -> None:
    retry = [{"ErrorEquals": ["Lambda.ServiceException"]}]
    states = {
        "V": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Retry": retry, "Next": "W"},
        "W": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": True},
    }
    definition = json.dumps({"StartAt": "V", "States": states})
    template = {"Resources": {"M": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {}}}}
    template["Resources"]["M"]["Properties"]["DefinitionString"] = definition
    findings = lambda_retry_findings({"S": template})
    assert "S/M.V: Lambda.TooManyRequestsException is not retried" in findings
    assert "S/M.W: Lambda.ServiceException is not retried" in findings


# A dataset stream S3 drops under a validator Lambda: botocore raises these from StreamingBody.read, after
# get_object returned and outside the client's retries (botocore/response.py; the classes in botocore/exceptions.py,
# and urllib3's SSLError, which read does not wrap), and Lambda reports the class name as the error.
def _stream_error_names() -> list[str]:
    import urllib3.exceptions
    from botocore import exceptions

    return [
        exceptions.ResponseStreamingError.__name__,
        exceptions.ReadTimeoutError.__name__,
        exceptions.IncompleteReadError.__name__,
        urllib3.exceptions.SSLError.__name__,
    ]


def test_a_validator_runs_again_when_s3_drops_the_datasets_stream(each_stage: Any) -> None:
    """Before: only Lambda's own errors and throttling were retried, so a stream reset while a multi-GB dataset was
    read failed the run (NotifyPipelineError, NotifyFailed). Twice at most, with backoff, before the same Catches."""
    validators = [
        (machine, state)
        for machine, definition in _definitions(each_stage.templates)
        for name, state in _states(definition)
        if name == "ValidateData"
    ]
    assert len(validators) == 2, [machine for machine, _ in validators]  # the Bedrock and the SageMaker paths
    for machine, state in validators:
        [streams] = [r for r in state["Retry"] if set(r["ErrorEquals"]) & set(_stream_error_names())]
        assert sorted(streams["ErrorEquals"]) == sorted(_stream_error_names()), machine
        assert streams["MaxAttempts"] == 2 and streams["BackoffRate"] == 2 and streams["IntervalSeconds"] > 0
        # The other retriers and the Catches stay: Lambda's own errors, throttling, then the notified failures.
        retried = {error for retrier in state["Retry"] for error in retrier["ErrorEquals"]}
        assert retried >= LAMBDA_TRANSIENT_ERRORS and not retried & {"States.ALL", "States.TaskFailed"}, machine
        assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"], machine


# A state without a Retry fails the run at its first error, however transient
# (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html). Every Task retries
# something, except a .sync training job: a retry would start a second paid job, and a failed job is the outcome
# the run reports.
NOT_RETRIED = {"arn:aws:states:::sagemaker:createTrainingJob.sync"}


def unretried_task_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Task states with no Retry at all (outside NOT_RETRIED)."""
    return [
        f"{machine}.{name}: no Retry ({state.get('Resource')})"
        for machine, definition in _definitions(templates)
        for name, state in _states(definition)
        if state.get("Type") == "Task" and not state.get("Retry") and state.get("Resource") not in NOT_RETRIED
    ]


def test_every_task_retries_what_may_pass(each_stage: Any) -> None:
    assert unretried_task_findings(each_stage.templates) == []


def test_the_retry_guard_sees_a_task_without_a_retry() -> None:
    read = {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:getObject", "Next": "T"}
    train = {"Type": "Task", "Resource": next(iter(NOT_RETRIED)), "End": True}
    definition = json.dumps({"StartAt": "R", "States": {"R": read, "T": train}})
    template = {"Resources": {"M": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {}}}}
    template["Resources"]["M"]["Properties"]["DefinitionString"] = definition
    assert unretried_task_findings({"S": template}) == ["S/M.R: no Retry (arn:aws:states:::aws-sdk:s3:getObject)"]


# --- the error names a Retry or Catch can match ---------------------------------------------------------------

# The errors Step Functions itself raises (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
STATES_ERRORS = {
    "States.ALL",
    "States.DataLimitExceeded",
    "States.ExceedToleratedFailureThreshold",
    "States.HeartbeatTimeout",
    "States.Http.Socket",
    "States.IntrinsicFailure",
    "States.ItemReaderFailed",
    "States.NoChoiceMatched",
    "States.ParameterPathFailure",
    "States.Permissions",
    "States.QueryEvaluationError",
    "States.ResultPathMatchFailure",
    "States.ResultWriterFailed",
    "States.Runtime",
    "States.TaskFailed",
    "States.Timeout",
}
# An aws-sdk task's error is "ServiceName.ErrorName ... Both the service name and error name are in Pascal case",
# with the Exception suffix always added (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html).
# The service names the kit's definitions use, spelled as that page's rule makes them.
SDK_ERROR_PREFIXES = {"bedrock": "Bedrock", "s3": "S3"}
# Errors every AWS API may return besides its operation's own (Common Errors of each API reference, e.g.
# https://docs.aws.amazon.com/bedrock/latest/APIReference/CommonErrors.html; Bedrock's troubleshooting page lists
# InternalFailure and ServiceUnavailable too).
COMMON_ERRORS = {
    "AccessDeniedException",
    "IncompleteSignature",
    "InternalFailure",
    "InvalidAction",
    "InvalidClientTokenId",
    "NotAuthorized",
    "OptInRequired",
    "RequestExpired",
    "ServiceUnavailable",
    "ThrottlingException",
    "ValidationError",
}


def sdk_error_names(service: str, action: str) -> set[str]:
    """Every error name an ``arn:aws:states:::aws-sdk:<service>:<action>`` task can raise, from botocore's model."""
    import botocore.session

    operation = action[:1].upper() + action[1:]
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    shapes = {shape.name for shape in model.error_shapes} | COMMON_ERRORS
    return {f"{SDK_ERROR_PREFIXES[service]}.{name.removesuffix('Exception')}Exception" for name in shapes}


def error_name_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Retry and Catch names that can never match: a States.* name Step Functions does not raise, or an aws-sdk
    task's name that its service's operation cannot raise (a misspelled one silently never retries or catches)."""
    found = []
    for machine, definition in _definitions(templates):
        for name, state in _states(definition):
            handlers = [*state.get("Retry", []), *state.get("Catch", [])]
            names = {error for handler in handlers for error in handler["ErrorEquals"]}
            sdk = re.fullmatch(r"arn:aws:states:::aws-sdk:([a-z0-9]+):([A-Za-z0-9]+)", str(state.get("Resource", "")))
            for error in sorted(names):
                if error.startswith("States."):
                    if error not in STATES_ERRORS:
                        found.append(f"{machine}.{name}: {error} is not an error Step Functions raises")
                elif sdk and sdk.group(1) not in SDK_ERROR_PREFIXES:
                    found.append(f"{machine}.{name}: {error}: no checked error prefix for aws-sdk:{sdk.group(1)}")
                elif sdk and error not in sdk_error_names(*sdk.groups()):
                    found.append(
                        f"{machine}.{name}: {error} is not an error aws-sdk:{sdk.group(1)}:{sdk.group(2)} raises"
                    )
    return found


def test_every_retry_and_catch_names_an_error_its_task_can_raise(each_stage: Any) -> None:
    assert error_name_findings(each_stage.templates) == []


def test_the_error_name_guard_sees_a_misspelled_and_a_foreign_name() -> None:
    retry = [{"ErrorEquals": ["Bedrock.ThrottlingException", "Bedrock.Throttling", "States.Timeout"]}]
    catch = [{"ErrorEquals": ["Bedrock.NoSuchKeyException", "States.TaskFail"], "Next": "X"}]
    resource = "arn:aws:states:::aws-sdk:bedrock:getModelCustomizationJob"
    states = {"G": {"Type": "Task", "Resource": resource, "Retry": retry, "Catch": catch, "End": True}}
    template = {"Resources": {"M": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {}}}}
    template["Resources"]["M"]["Properties"]["DefinitionString"] = json.dumps({"StartAt": "G", "States": states})
    assert error_name_findings({"S": template}) == [
        "S/M.G: Bedrock.NoSuchKeyException is not an error aws-sdk:bedrock:getModelCustomizationJob raises",
        "S/M.G: Bedrock.Throttling is not an error aws-sdk:bedrock:getModelCustomizationJob raises",
        "S/M.G: States.TaskFail is not an error Step Functions raises",
    ]


# Step Functions adds each log group a state machine logs to to the account's one CloudWatch Logs resource policy
# in the region (5,120 characters) unless its name starts with /aws/vendedlogs/; a full policy fails the creation of
# any state machine (https://docs.aws.amazon.com/step-functions/latest/dg/bp-cwl.html).
VENDED_LOGS = "/aws/vendedlogs/"


def logging_findings(template: dict[str, Any]) -> list[str]:
    """State machines logging to a log group whose name does not start with VENDED_LOGS."""
    resources = template.get("Resources", {})
    found = []
    for lid, resource in resources.items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        destinations = resource["Properties"].get("LoggingConfiguration", {}).get("Destinations", [])
        for destination in destinations:
            arn = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]
            group = resources.get(arn.get("Fn::GetAtt", [""])[0], {}) if isinstance(arn, dict) else {}
            name = group.get("Properties", {}).get("LogGroupName")
            first = name["Fn::Join"][1][0] if isinstance(name, dict) and "Fn::Join" in name else name
            if not (isinstance(first, str) and first.startswith(VENDED_LOGS)):
                found.append(f"{lid} logs to a group whose name does not start with {VENDED_LOGS}")
    return sorted(found)


def test_every_state_machine_logs_under_vendedlogs(each_stage: Any) -> None:
    machines = 0
    for stack_id, template in each_stage.templates.items():
        assert logging_findings(template) == [], stack_id
        machines += sum(r["Type"] == "AWS::StepFunctions::StateMachine" for r in template["Resources"].values())
    assert machines >= 6  # Level 3's pipeline, starter and teardown, its SageMaker path and teardown, Level 4's jobs


def test_the_logging_guard_sees_a_generated_log_group_name() -> None:
    def machine(group: str) -> dict[str, Any]:
        destination = {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [group, "Arn"]}}}
        return {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"LoggingConfiguration": {"Destinations": [destination]}},
        }

    template = {
        "Resources": {
            "Generated": {"Type": "AWS::Logs::LogGroup", "Properties": {}},
            "Vended": {
                "Type": "AWS::Logs::LogGroup",
                "Properties": {"LogGroupName": {"Fn::Join": ["", ["/aws/vendedlogs/states/m-", "x"]]}},
            },
            "A": machine("Generated"),
            "B": machine("Vended"),
        }
    }
    assert logging_findings(template) == ["A logs to a group whose name does not start with /aws/vendedlogs/"]


def test_a_state_machines_log_group_is_named_after_it_and_new_on_every_create(prod: Any) -> None:
    """Prod keeps a log group on destroy: the next create of the stack must name its own. Two creates on one
    CloudFormation host, ten minutes apart, give two names (the stack id's host part alone would repeat)."""
    created = 138558622825640000
    creates = [stack_created(created), stack_created(created + 600 * 10**7)]
    checked = 0
    for template in prod.templates.values():
        resources = template["Resources"]
        for machine in resources.values():
            if machine["Type"] != "AWS::StepFunctions::StateMachine":
                continue
            [destination] = machine["Properties"]["LoggingConfiguration"]["Destinations"]
            group = resources[destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]]
            assert group["DeletionPolicy"] == "RetainExceptOnCreate"
            names = [evaluate(group["Properties"]["LogGroupName"], pseudo) for pseudo in creates]
            expected = f"{VENDED_LOGS}states/{machine['Properties']['StateMachineName']}-"
            assert all(name.startswith(expected) for name in names) and names[0] != names[1], names
            checked += 1
    assert checked >= 6


def test_a_scripted_result_is_held_to_the_operations_output_shape() -> None:
    """The simulator refuses a scripted aws-sdk result the service would never return: a status outside the output's
    enum (what the Choice states compare) or a member the output lacks (what ResultSelector reads)."""
    from tests.infra import asl

    get_job = "arn:aws:states:::aws-sdk:bedrock:getModelCustomizationJob"
    assert asl.sdk_response_errors(get_job, {"Status": "Completed", "OutputModelArn": "arn"}) == []
    assert asl.sdk_response_errors(get_job, {"Status": "Done"}) == [
        "GetModelCustomizationJob result.Status: 'Done' is not one of "
        + str(asl._service_model("bedrock").shape_for("ModelCustomizationJobStatus").enum)
    ]
    assert asl.sdk_response_errors(get_job, {"status": "Completed"}) == [
        "GetModelCustomizationJob result.status: not a member of GetModelCustomizationJobResponse"
    ]
    assert asl.sdk_response_errors("arn:aws:states:::lambda:invoke", {"anything": 1}) == []


# --- the payload quota and the JSONata type check of the execution input -----------------------------------


def serialized_input(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition with its first states as they were before CheckInputType became a JSONata Choice: a JSONPath
    Choice refused a string, number, boolean or null, then SerializeInput added ``$.inputText``, the input as JSON
    text, and CheckInput refused a text that did not start with ``{`` (a list)."""
    old = copy.deepcopy(definition)
    states = old["States"]
    [rule] = states["CheckInputType"]["Choices"]
    checks, rejected = rule["Next"], states["CheckInputType"]["Default"]
    states["CheckInputType"] = {
        "Type": "Choice",
        "Choices": [
            {
                "Or": [
                    {"Variable": "$.input", kind: True} for kind in ("IsString", "IsNumeric", "IsBoolean", "IsNull")
                ],
                "Next": rejected,
            }
        ],
        "Default": "SerializeInput",
    }
    states["SerializeInput"] = {
        "Type": "Pass",
        "Parameters": {"text.$": "States.JsonToString($.input)"},
        "ResultPath": "$.inputText",
        "Next": checks,
    }
    states[checks]["Choices"].insert(
        0, {"Not": {"Variable": "$.inputText.text", "StringMatches": "{*"}, "Next": rejected}
    )
    return old


def _machine(*states: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"StartAt": states[0][0], "States": dict(states)}


def test_a_state_output_over_the_payload_quota_fails_the_run_where_no_catch_sees_it() -> None:
    from tests.infra import asl

    at_limit = {"a": "x" * (asl.PAYLOAD_LIMIT - len('{"a":""}'))}
    assert asl.payload_bytes(at_limit) == asl.PAYLOAD_LIMIT
    keep = ("Keep", {"Type": "Pass", "Next": "Add"})
    add = ("Add", {"Type": "Pass", "Result": 1, "ResultPath": "$.b", "End": True})
    trace = asl.simulate(_machine(keep, add), at_limit, {})
    # The input itself fits (StartExecution takes it, Keep passes it on); one more field does not.
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "Add", "States.DataLimitExceeded"), (
        trace.describe()
    )
    # Bytes of UTF-8, not characters: 2 x 70,000 "é" is 140,000 characters and 280,000 bytes.
    copied = ("Copy", {"Type": "Pass", "Parameters": {"a.$": "$.a", "b.$": "$.a"}, "End": True})
    trace = asl.simulate(_machine(copied), {"a": "é" * 70_000}, {})
    assert (trace.status, trace.error) == ("FAILED", "States.DataLimitExceeded")
    assert asl.simulate(_machine(copied), {"a": "é" * 60_000}, {}).status == "SUCCEEDED"
    # A task whose result makes the output too large is not caught, not even by States.ALL.
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "ResultPath": "$.result",
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
        "End": True,
    }
    caught = ("Caught", {"Type": "Succeed"})
    trace = asl.simulate(_machine(("Call", task), caught), {"a": "x" * 150_000}, {"Call": ["y" * 150_000]})
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "Call", "States.DataLimitExceeded")
    assert "Caught" not in trace.visited
    # An input StartExecution would refuse cannot start a simulated run either.
    with pytest.raises(ValueError, match="StartExecution"):
        asl.simulate(_machine(keep, add), {"a": "x" * asl.PAYLOAD_LIMIT}, {})


def test_a_copy_of_the_input_in_the_state_fails_an_input_over_half_the_quota() -> None:
    """SerializeInput's pattern, the input kept and a JSON-text copy added: it fails inputs that StartExecution
    accepted, which is why the kit's type check reads the input with JSONata instead."""
    from tests.infra import asl

    read = ("ReadInput", {"Type": "Pass", "Parameters": {"input.$": "$"}, "Next": "SerializeInput"})
    serialize = (
        "SerializeInput",
        {
            "Type": "Pass",
            "Parameters": {"text.$": "States.JsonToString($.input)"},
            "ResultPath": "$.inputText",
            "End": True,
        },
    )
    big = {"note": "x" * 140_000}
    trace = asl.simulate(_machine(read, serialize), big, {})
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "SerializeInput", "States.DataLimitExceeded")
    assert asl.simulate(_machine(read, serialize), {"note": "x" * 120_000}, {}).status == "SUCCEEDED"


def _type_check(condition: str, **extra: Any) -> dict[str, Any]:
    choice = {
        "Type": "Choice",
        "QueryLanguage": "JSONata",
        "Choices": [{"Condition": condition, "Next": "Yes"}],
        "Default": "No",
        **extra,
    }
    return _machine(
        ("ReadInput", {"Type": "Pass", "Parameters": {"input.$": "$"}, "Next": "Check"}),
        ("Check", choice),
        ("Yes", {"Type": "Succeed"}),
        ("No", {"Type": "Fail", "Error": "NotAnObject"}),
    )


@pytest.mark.parametrize(
    ("execution_input", "verdict"),
    [
        ({}, "Yes"),
        ({"a": [1]}, "Yes"),
        ([], "No"),
        ([{"a": 1}], "No"),
        ([[1]], "No"),
        ("{}", "No"),
        (0, "No"),
        (1.5, "No"),
        (True, "No"),
        (False, "No"),
        (None, "No"),
    ],
)
def test_a_jsonata_choice_tells_the_inputs_json_type(execution_input: Any, verdict: str) -> None:
    from tests.infra import asl

    trace = asl.simulate(_type_check("{% $type($states.input.input) = 'object' %}"), execution_input, {})
    assert trace.terminal == verdict, trace.describe()
    # The Choice passes its input on unchanged, as a JSONPath Choice does.
    if verdict == "Yes":
        assert trace.output == {"input": execution_input}


def test_a_jsonata_condition_that_is_not_true_or_false_fails_the_run() -> None:
    from tests.infra import asl

    for condition in (
        "{% $type($states.input.input) %}",
        "{% $states.input.missing %}",
        "{% $states.input.input > 1 %}",
    ):
        trace = asl.simulate(_type_check(condition), {"a": "b"}, {})
        assert (trace.status, trace.error) == ("FAILED", "States.QueryEvaluationError"), (condition, trace.describe())


@pytest.mark.parametrize(
    ("condition", "extra"),
    [
        ("{% $count($states.input.input) = 1 %}", {}),  # a function the kit does not use
        ("{% $partition = 'aws' %}", {}),  # a Step Functions function
        ("{% $states.result = 1 %}", {}),  # not in a Choice's $states
        ("{% $states.input.input[0] = 1 %}", {}),  # a filter
        ("{% $states.input.* = 1 %}", {}),  # a wildcard
        ("{% $x := true %}", {}),  # a binding
        ("{% $seen %}", {}),  # a workflow variable
        ("{% $states.input.n + 1 = 2 %}", {}),  # arithmetic
        ("{% input.a = 1 %}", {}),  # a path from the context value $
        ("{% $type($states.input.input = 'object' %}", {}),  # does not parse
        ("$type($states.input.input) = 'object'", {}),  # not {% ... %}
        ("{% $type($states.input.input) = 'object' %}", {"Output": "{% $states.input %}"}),
        ("{% $type($states.input.input) = 'object' %}", {"Assign": {"seen": True}}),
    ],
)
def test_the_simulator_refuses_jsonata_it_does_not_model_before_the_run(condition: str, extra: dict[str, Any]) -> None:
    from tests.infra import asl

    with pytest.raises(asl.AslUnsupported):
        asl.simulate(_type_check(condition, **extra), {}, {})


def test_the_simulator_refuses_jsonata_states_and_machines_it_does_not_model() -> None:
    from tests.infra import asl

    jsonata_pass = _machine(("P", {"Type": "Pass", "QueryLanguage": "JSONata", "Output": "{% 1 %}", "End": True}))
    with pytest.raises(asl.AslUnsupported, match="Pass state in JSONata"):
        asl.simulate(jsonata_pass, {}, {})
    jsonata_machine = {**_machine(("S", {"Type": "Succeed"})), "QueryLanguage": "JSONata"}
    with pytest.raises(asl.AslUnsupported, match="QueryLanguage"):
        asl.simulate(jsonata_machine, {}, {})
    # A JSONata state takes no JSONPath field.
    with pytest.raises(asl.AslUnsupported, match="InputPath"):
        asl.simulate(_type_check("{% true %}", InputPath="$.input"), {}, {})


def test_every_jsonata_state_of_the_kit_is_one_the_simulator_models(each_stage: Any) -> None:
    from tests.infra import asl

    mixed: dict[str, dict[str, Any]] = {}
    for machine, definition in _definitions(each_stage.templates):
        assert definition.get("QueryLanguage", "JSONPath") == "JSONPath", machine
        for name, state in _states(definition):
            if state.get("QueryLanguage") == "JSONata":
                asl._check_state(name, state)
                mixed[machine] = definition
    # The input type check of Level 4's jobs and Level 3's SageMaker pipeline; the pinned asl-validator checks the
    # JSONata fields too (a Condition must be a {% ... %} expression).
    assert len(mixed) >= 1
    assert dict(zip(mixed, asl.validate_asl_all(list(mixed.values())), strict=True)) == {key: [] for key in mixed}
