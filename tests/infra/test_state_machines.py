"""Properties every state machine of the kit keeps, whatever its level."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest

from tests.infra import asl
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


# --- what a state reads of an AWS answer ----------------------------------------------------------------------

# A JSONPath that selects nothing fails the run with States.Runtime, which no Retry or Catch takes, not even a
# States.ALL catcher (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html). So a state
# reads of an AWS answer only the members botocore's output shape requires (an HTTP payload member, S3 GetObject's
# Body, is always there), or what a Choice saw present first: the documented form is an And whose earlier rule is
# IsPresent true, evaluated only when that path exists
# (https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-choice-state.html). That page
# documents no such order for Or, so an Or of IsPresent false and a comparison is not a guard.

# The answer of an optimized integration, as the botocore operation whose output it is. An optimized integration
# not listed here is a finding, so a new one is modelled on purpose. Lambda's answer is the kit's own contract.
OPTIMIZED_OUTPUTS = {
    # Run a Job (.sync) answers when the job ends, with SageMaker's description of it
    # (https://docs.aws.amazon.com/step-functions/latest/dg/connect-sagemaker.html,
    # https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-sync).
    "sagemaker:createTrainingJob.sync": ("sagemaker", "DescribeTrainingJob"),
    # Amazon Bedrock's runtime InvokeModel (https://docs.aws.amazon.com/step-functions/latest/dg/connect-bedrock.html).
    "bedrock:invokeModel": ("bedrock-runtime", "InvokeModel"),
    # Request Response answers with the API's own answer
    # (https://docs.aws.amazon.com/step-functions/latest/dg/connect-stepfunctions.html,
    # https://docs.aws.amazon.com/step-functions/latest/dg/connect-sns.html,
    # https://docs.aws.amazon.com/step-functions/latest/dg/connect-sqs.html).
    "states:startExecution": ("stepfunctions", "StartExecution"),
    "sns:publish": ("sns", "Publish"),
    "sqs:sendMessage": ("sqs", "SendMessage"),
}


@cache
def _botocore_services() -> dict[str, str]:
    """botocore's service names by their aws-sdk spelling, which drops the hyphens (bedrock-runtime is
    aws-sdk:bedrockruntime, https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html)."""
    import botocore.session

    return {name.replace("-", ""): name for name in botocore.session.get_session().get_available_services()}


def answer_model(resource: str) -> tuple[str, Any] | None:
    """The botocore operation (name, output shape) whose answer a Task with this Resource gets; None for a Lambda
    function. LookupError for any other Resource botocore gives no model of."""
    if ":lambda:" in resource:
        return None
    sdk = re.fullmatch(r"arn:aws:states:::aws-sdk:([a-z0-9]+):([A-Za-z0-9]+)", resource)
    if sdk:
        if sdk.group(1) not in _botocore_services():
            raise LookupError(f"no botocore service for aws-sdk:{sdk.group(1)}")
        service, operation = _botocore_services()[sdk.group(1)], sdk.group(2)[:1].upper() + sdk.group(2)[1:]
    elif resource.removeprefix("arn:aws:states:::") in OPTIMIZED_OUTPUTS:
        service, operation = OPTIMIZED_OUTPUTS[resource.removeprefix("arn:aws:states:::")]
    else:
        raise LookupError(f"no output model for {resource} (OPTIMIZED_OUTPUTS)")
    model = asl._service_model(service)
    if operation not in model.operation_names:
        raise LookupError(f"{service} has no operation {operation}")
    return operation, model.operation_model(operation).output_shape


RefPath = tuple[str, ...]  # a reference path: its root ($ or $$), then its members


def _path(text: str) -> RefPath:
    return ("$$" if text.startswith("$$") else "$", *asl.path_members(text))


def _under(path: RefPath, prefix: RefPath) -> bool:
    return path[: len(prefix)] == prefix


def _template_paths(template: Any) -> Iterator[str]:
    """The paths a Parameters or ResultSelector template reads: each ``*.$`` value, a path or an intrinsic's."""
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$") and isinstance(value, str):
                yield from asl.intrinsic_paths(value) if value.startswith("States.") else [value]
            else:
                yield from _template_paths(value)
    elif isinstance(template, list):
        for item in template:
            yield from _template_paths(item)


def _asserted(rule: dict[str, Any]) -> set[RefPath]:
    """The paths a Choice rule has seen present when it matches."""
    if "And" in rule:
        return set().union(*(_asserted(r) for r in rule["And"]))
    if "Or" in rule:
        return set.intersection(*(_asserted(r) for r in rule["Or"])) if rule["Or"] else set()
    present = rule.get("IsPresent") is True or rule.get("Not", {}).get("IsPresent") is False
    variable = rule.get("Variable", rule.get("Not", {}).get("Variable"))
    try:
        return {_path(variable)} if present and isinstance(variable, str) else set()
    except asl.AslUnsupported:
        return set()


def _rule_reads(rule: dict[str, Any], seen: frozenset[RefPath]) -> Iterator[tuple[str, frozenset[RefPath]]]:
    """The paths a Choice rule reads, each with the paths an earlier rule of an enclosing And saw present."""
    if "And" in rule:
        for child in rule["And"]:
            yield from _rule_reads(child, seen)
            seen = seen | _asserted(child)
    for child in [*rule.get("Or", []), *([rule["Not"]] if "Not" in rule else [])]:
        yield from _rule_reads(child, seen)
    if "Variable" in rule and "IsPresent" not in rule:
        yield rule["Variable"], seen
    for key, value in rule.items():
        if key.endswith("Path") and isinstance(value, str):  # StringEqualsPath and the like
            yield value, seen


_PATH_FIELDS = (
    "InputPath",
    "OutputPath",
    "ItemsPath",
    "SecondsPath",
    "TimestampPath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "ErrorPath",
    "CausePath",
)


def _state_reads(state: dict[str, Any]) -> Iterator[tuple[str, frozenset[RefPath]]]:
    for rule in state.get("Choices", []):
        yield from _rule_reads(rule, frozenset())
    for key in ("Parameters", "ItemSelector"):
        yield from ((path, frozenset()) for path in _template_paths(state.get(key)))
    yield from ((state[key], frozenset()) for key in _PATH_FIELDS if isinstance(state.get(key), str))


def _unmodelled(state: dict[str, Any]) -> str | None:
    """What in a state the reach of an answer does not follow: branches, or a state output that is re-rooted."""
    if state.get("Type") in ("Parallel", "Map"):
        return f"a {state['Type']} state"
    moved = [key for key in ("InputPath", "OutputPath") if key in state and state[key] != "$"]
    return f"{moved[0]} {state[moved[0]]}" if moved else None


def _overwrites(state: dict[str, Any], kept: RefPath) -> bool:
    """A Task or Pass whose result replaces what is kept at ``kept`` (its ResultPath is that path or a prefix)."""
    kind = state.get("Type")
    if kind not in ("Task", "Pass") or (kind == "Pass" and "Result" not in state and "Parameters" not in state):
        return False
    target = state.get("ResultPath", "$")
    return target is not None and _under(kept, _path(target))


def _onward(state: dict[str, Any], kept: RefPath) -> Iterator[tuple[str, set[RefPath]]]:
    """The states a state goes on to with what is kept at ``kept`` still there, each with what its Choice rule saw
    present."""
    if state.get("Type") == "Choice":
        yield from ((rule["Next"], _asserted(rule)) for rule in state.get("Choices", []))
        if "Default" in state:
            yield state["Default"], set()
        return
    if "Next" in state and not _overwrites(state, kept):
        yield state["Next"], set()
    for catcher in state.get("Catch", []):
        target = catcher.get("ResultPath", "$")  # a catcher's output is the error alone unless a ResultPath says
        if target is None or not _under(kept, _path(target)):
            yield catcher["Next"], set()


def _reach(
    states: dict[str, dict[str, Any]], writer: str, kept: RefPath, guarded: Callable[[set[RefPath]], bool]
) -> set[str]:
    """Every state that runs with ``writer``'s answer at ``kept``, on a path taking no Choice edge ``guarded``."""
    todo, seen = [states[writer]["Next"]] if "Next" in states[writer] else [], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if _unmodelled(states[name]) is None:
            todo.extend(nxt for nxt, asserted in _onward(states[name], kept) if not guarded(asserted))
    return seen


def _members_problem(operation: str, shape: Any, members: list[str]) -> tuple[str | None, list[int]]:
    """A member the answer cannot have (as a finding) or, else, the indexes of the members botocore does not require
    (walking nested structures; an HTTP payload member is always there)."""
    optional = []
    for index, key in enumerate(members):
        if shape is None or shape.type_name != "structure":
            return f"{key}: {operation}'s model describes no members there ({getattr(shape, 'type_name', 'none')})", []
        name = asl._member(shape, key)
        if name is None:
            return f"{key} is not a member of {shape.name}", []
        if name not in shape.required_members and shape.serialization.get("payload") != name:
            optional.append(index)
        shape = shape.members[name]
    return None, optional


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def _jsonata_result_reads(state: dict[str, Any]) -> bool:
    """A JSONata expression of the state (not of its branches) that mentions $states.result, a task's answer."""
    own = {key: value for key, value in state.items() if key not in ("Branches", "ItemProcessor", "Iterator")}
    return any(text.startswith("{%") and "$states.result" in text for text in _strings(own))


def answer_read_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Reads of an AWS integration's answer that botocore does not promise and no Choice saw present: in a Task's
    ResultSelector (the raw answer, where nothing can guard a read), or, for an answer kept at a ResultPath R, in any
    later state (Choice variables, Parameters and intrinsic arguments, the *Path fields) reached from the writer of R
    on a path that takes no Choice edge that saw the member present."""
    found = set()
    for machine, definition in _definitions(templates):
        states = dict(_states(definition))
        writers = []  # (state, where its answer is kept, its operation, the operation's output shape)
        for name, state in states.items():
            where = f"{machine}.{name}"
            if _jsonata_result_reads(state):
                found.add(f"{where}: a JSONata expression reads $states.result, which this guard does not model")
            if state.get("Type") != "Task":
                continue
            try:
                model = answer_model(str(state.get("Resource", "")))
            except LookupError as error:
                found.add(f"{where}: {error}")
                continue
            if model is None:
                continue
            operation, shape = model
            if "Assign" in state:
                found.add(f"{where}: Assign of {operation}'s answer is not modelled by this guard")
            if "ResultSelector" in state:
                for text in _template_paths(state["ResultSelector"]):
                    if text.startswith("$$"):
                        continue
                    path = _path(text)
                    problem, optional = _members_problem(operation, shape, list(path[1:]))
                    if problem or optional:
                        why = problem or f"{path[1 + optional[0]]} is not required by {operation}"
                        found.add(f"{where}: ResultSelector {text}: {why}")
            elif state.get("ResultPath", "$") == "$":
                if shape is not None and shape.members:
                    found.add(f"{where}: the whole state becomes {operation}'s answer, which this guard does not model")
            elif state["ResultPath"] is not None:
                writers.append((name, _path(state["ResultPath"]), operation, shape))
        for writer, kept, _, _ in writers:
            for name in {writer} | _reach(states, writer, kept, lambda _: False):
                if (why := _unmodelled(states[name])) is not None:
                    found.add(f"{machine}.{name}: {why} in the reach of {writer}'s answer, not modelled by this guard")
        for name, state in states.items():
            for text, seen in _state_reads(state):
                for writer, kept, operation, shape in writers:
                    finding = _kept_read_finding(states, text, seen, name, writer, kept, operation, shape)
                    if finding:
                        found.add(f"{machine}.{name}: {text} ({writer}'s answer): {finding}")
    return sorted(found)


def _kept_read_finding(
    states: dict[str, dict[str, Any]],
    text: str,
    seen: frozenset[RefPath],
    reader: str,
    writer: str,
    kept: RefPath,
    operation: str,
    shape: Any,
) -> str | None:
    """What is wrong with state ``reader`` reading ``text`` of the answer ``writer`` keeps at ``kept``, if anything."""
    try:
        path = _path(text)
    except asl.AslUnsupported:
        prefix = "$" + "".join(f".{member}" for member in kept[1:])
        return "a path this guard cannot follow" if text.startswith((prefix + ".", prefix + "[")) else None
    if len(path) <= len(kept) or not _under(path, kept):
        return None
    members = list(path[len(kept) :])
    problem, optional = _members_problem(operation, shape, members)
    if problem:
        return problem if reader in _reach(states, writer, kept, lambda _: False) else None
    if not optional:
        return None

    def depth(asserted: set[RefPath] | frozenset[RefPath]) -> int:
        """How many members of the read the paths seen present vouch for."""
        n = [min(len(p), len(path)) - len(kept) for p in asserted if p[: len(path)] == path[: len(p)]]
        return max(n, default=0)

    needed = optional[-1] + 1
    if depth(seen) >= needed or reader not in _reach(states, writer, kept, lambda asserted: depth(asserted) >= needed):
        return None
    first = next(index for index in optional if index >= depth(seen))
    return f"{members[first]} is not required by {operation}"


def test_every_read_of_an_aws_answer_is_of_a_member_botocore_requires_or_a_choice_saw(each_stage: Any) -> None:
    tasks = [str(state.get("Resource", "")) for _, d in _definitions(each_stage.templates) for _, state in _states(d)]
    assert sum(answer_model(resource) is not None for resource in tasks if resource) >= 20  # the guard has work
    assert answer_read_findings(each_stage.templates) == []


_GET_IMPORT_JOB = "arn:aws:states:::aws-sdk:bedrock:getModelImportJob"
_DONE = ("Done", {"Type": "Succeed"})


def _answer_reads(*states: tuple[str, dict[str, Any]]) -> list[str]:
    """The guard's findings on one machine S/M of these states (the first one starts it)."""
    definition = {"StartAt": states[0][0], "States": dict(states)}
    template = {"Resources": {"M": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {}}}}
    template["Resources"]["M"]["Properties"]["DefinitionString"] = json.dumps(definition)
    return answer_read_findings({"S": template})


def _get_import_job(next_state: str) -> tuple[str, dict[str, Any]]:
    """GetModelImportJob, whose answer botocore requires no member of, kept at $.j."""
    parameters = {"JobIdentifier.$": "$.arn"}
    return "Get", {
        "Type": "Task",
        "Resource": _GET_IMPORT_JOB,
        "Parameters": parameters,
        "ResultPath": "$.j",
        "Next": next_state,
    }


def _is_present(path: str) -> dict[str, Any]:
    return {"Variable": path, "IsPresent": True}


def _check(*rules: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "Check", {"Type": "Choice", "Choices": list(rules), "Default": "Done"}


def test_the_answer_read_guard_sees_a_choice_on_a_member_botocore_does_not_require() -> None:
    completed = {"Variable": "$.j.Status", "StringEquals": "Completed"}
    unguarded = "S/M.Check: $.j.Status (Get's answer): Status is not required by GetModelImportJob"
    assert _answer_reads(_get_import_job("Check"), _check({**completed, "Next": "Done"}), _DONE) == [unguarded]
    # The documented guard: an And whose earlier rule saw the member present. Later is too late.
    guarded = {"And": [_is_present("$.j.Status"), completed], "Next": "Done"}
    assert _answer_reads(_get_import_job("Check"), _check(guarded), _DONE) == []
    late = {"And": [completed, _is_present("$.j.Status")], "Next": "Done"}
    assert _answer_reads(_get_import_job("Check"), _check(late), _DONE) == [unguarded]
    # An Or of IsPresent false first relies on an order of evaluation AWS does not document for Or.
    either = {"Or": [{"Variable": "$.j.Status", "IsPresent": False}, completed], "Next": "Done"}
    assert _answer_reads(_get_import_job("Check"), _check(either), _DONE) == [unguarded]
    # A misspelled member is no member at all, guarded or not.
    misspelled = {"And": [_is_present("$.j.Statuss"), {"Variable": "$.j.Statuss", "StringEquals": "Completed"}]}
    assert _answer_reads(_get_import_job("Check"), _check({**misspelled, "Next": "Done"}), _DONE) == [
        "S/M.Check: $.j.Statuss (Get's answer): Statuss is not a member of GetModelImportJobResponse"
    ]


def test_the_answer_read_guard_follows_the_answer_to_later_states() -> None:
    use = ("Use", {"Type": "Pass", "Parameters": {"model.$": "$.j.ImportedModelArn"}, "ResultPath": "$.u", "End": True})
    unguarded = "S/M.Use: $.j.ImportedModelArn (Get's answer): ImportedModelArn is not required by GetModelImportJob"
    # Straight from the task: one finding.
    assert _answer_reads(_get_import_job("Use"), use) == [unguarded]
    # Behind a Choice edge whose rule saw the member present: none.
    status = {"And": [_is_present("$.j.Status"), {"Variable": "$.j.Status", "StringEquals": "Completed"}]}
    seen = {"And": [*status["And"], _is_present("$.j.ImportedModelArn")], "Next": "Use"}
    assert _answer_reads(_get_import_job("Check"), _check(seen), use, _DONE) == []
    # An edge that saw Status says nothing of ImportedModelArn; nor does every other path (the Default) pass one.
    assert _answer_reads(_get_import_job("Check"), _check({**status, "Next": "Use"}), use, _DONE) == [unguarded]
    fallback = ("Check", {"Type": "Choice", "Choices": [seen], "Default": "Use"})
    assert _answer_reads(_get_import_job("Check"), fallback, use) == [unguarded]
    # A Pass that writes over $.j ends the answer's reach: Use reads what the Pass put there.
    overwrite = ("Reset", {"Type": "Pass", "Result": {"ImportedModelArn": "arn"}, "ResultPath": "$.j", "Next": "Use"})
    assert _answer_reads(_get_import_job("Reset"), overwrite, use) == []


def test_the_answer_read_guard_reads_a_result_selector_against_the_raw_answer() -> None:
    def task(resource: str, selector: dict[str, str]) -> tuple[str, dict[str, Any]]:
        arn = f"arn:aws:states:::aws-sdk:{resource}"
        return "T", {"Type": "Task", "Resource": arn, "ResultSelector": selector, "ResultPath": "$.t", "End": True}

    # CreateModelImportJob requires jobArn; S3 GetObject's Body is not required but is the HTTP payload.
    assert _answer_reads(task("bedrock:createModelImportJob", {"arn.$": "$.JobArn"})) == []
    assert _answer_reads(task("s3:getObject", {"request.$": "States.StringToJson($.Body)"})) == []
    assert _answer_reads(task("s3:listObjectsV2", {"keys.$": "$.KeyCount"})) == [
        "S/M.T: ResultSelector $.KeyCount: KeyCount is not required by ListObjectsV2"
    ]
    assert _answer_reads(task("bedrock:getModelImportJob", {"s.$": "States.Format('{}', $.Status)"})) == [
        "S/M.T: ResultSelector $.Status: Status is not required by GetModelImportJob"
    ]


def test_the_answer_read_guard_refuses_an_answer_it_has_no_model_of() -> None:
    def task(resource: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        return "T", {"Type": "Task", "Resource": resource, "ResultPath": "$.t", "End": True, **extra}

    # A new optimized integration, or an aws-sdk service botocore does not name: a decision to make first.
    assert _answer_reads(task("arn:aws:states:::sqs:sendMessageBatch")) == [
        "S/M.T: no output model for arn:aws:states:::sqs:sendMessageBatch (OPTIMIZED_OUTPUTS)"
    ]
    assert _answer_reads(task("arn:aws:states:::aws-sdk:sfn:describeExecution")) == [
        "S/M.T: no botocore service for aws-sdk:sfn"
    ]
    runtime = answer_model("arn:aws:states:::aws-sdk:bedrockruntime:invokeModel")
    assert runtime is not None and runtime[0] == "InvokeModel"
    # A Lambda function's answer is the kit's own contract; a JSONata read of a task's answer is not modelled.
    lambda_arn = "arn:aws:states:::lambda:invoke"
    assert _answer_reads(task(lambda_arn)) == []
    jsonata = task(lambda_arn, QueryLanguage="JSONata", Output="{% $states.result.Payload %}")
    del jsonata[1]["ResultPath"]
    assert _answer_reads(jsonata) == [
        "S/M.T: a JSONata expression reads $states.result, which this guard does not model"
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


def _reported(summary: str = "A step failed", *details: str) -> dict[str, Any]:
    from stacks.shared.failures import cause_expression

    cause = cause_expression(summary, *(details or ("$.error",)))
    return _machine(("F", {"Type": "Fail", "QueryLanguage": "JSONata", "Error": "StepFailed", "Cause": cause}))


def test_a_reported_fail_ends_the_run_with_its_details_within_the_cause_limit() -> None:
    from stacks.shared.failures import CAUSE_MAX_CHARS, cause_expression

    caught = {"Error": "Lambda.Unknown", "Cause": 'it said "no" \\ twice'}
    trace = asl.simulate(_reported(), {"error": caught, "job": {"large": "x" * 1000}}, {})
    assert (trace.status, trace.terminal, trace.error) == ("FAILED", "F", "StepFailed"), trace.describe()
    summary, _, detail = str(trace.cause).partition(": ")
    assert summary == "A step failed" and json.loads(detail) == caught
    # Several details, one of them absent: each is named, none fails the state.
    trace = asl.simulate(_reported("Not deleted", "$.deployment", "$.error"), {"deployment": {"arn": "a"}}, {})
    assert trace.cause == 'Not deleted: {"arn":"a"}; no detail was recorded at $.error'
    # A caught cause at the execution's own limit, serialized once more, is cut at the limit.
    trace = asl.simulate(_reported(), {"error": {"Cause": "x" * CAUSE_MAX_CHARS}}, {})
    assert len(str(trace.cause)) == CAUSE_MAX_CHARS and str(trace.cause).startswith('A step failed: {"Cause":"xxx')
    # A summary with quotes, an apostrophe and a backslash is a literal, not part of the expression.
    odd = 'The run\'s "input" \\ was refused'
    assert asl.simulate(_reported(odd), {"error": 1}, {}).cause == f"{odd}: 1"
    for path in ("$.error[0]", "$", "error", "$..error"):
        with pytest.raises(ValueError, match="field names"):
            cause_expression("A step failed", path)
    with pytest.raises(ValueError, match="at least one"):
        cause_expression("A step failed")


def test_the_simulator_models_a_jsonata_fail_only_as_far_as_the_kit_uses_it() -> None:
    fail = {"Type": "Fail", "QueryLanguage": "JSONata", "Error": "E"}
    with pytest.raises(asl.AslUnsupported, match="uppercase"):
        asl.simulate(_machine(("F", {**fail, "Cause": "{% $uppercase($states.input.a) %}"})), {}, {})
    with pytest.raises(asl.AslUnsupported, match="plain string"):
        asl.simulate(_machine(("F", {**fail, "Error": "{% 'E' %}", "Cause": "{% 'c' %}"})), {}, {})
    with pytest.raises(asl.AslUnsupported, match="CausePath"):
        asl.simulate(_machine(("F", {**fail, "CausePath": "$.a"})), {}, {})
    # A Cause that is not a string fails the run as Step Functions does.
    trace = asl.simulate(_machine(("F", {**fail, "Cause": "{% $states.input.n %}"})), {"n": 1}, {})
    assert (trace.status, trace.error) == ("FAILED", "States.QueryEvaluationError"), trace.describe()


def _message_details(state: dict[str, Any]) -> list[str]:
    """The paths a notification publishes as its detail or error (``"detail.$": "$.error"``)."""
    message = state.get("Parameters", {}).get("Message", {})
    return (
        [path for key, path in message.items() if key in ("detail.$", "error.$")] if isinstance(message, dict) else []
    )


def unreported_detail_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Fail states after a notification whose cause does not carry what that notification published. The cause is
    what DescribeExecution, the console and `kit ... status` show; the topic has no subscriber until alarm_email is
    set, so a cause that only points at the notification points at nothing."""
    found = []
    for machine, definition in _definitions(templates):
        states = dict(_states(definition))
        for name, state in states.items():
            if state.get("Type") != "Task" or not str(state.get("Resource", "")).endswith(":::sns:publish"):
                continue
            end = states.get(str(state.get("Next")))
            if end is None or end.get("Type") != "Fail":
                continue
            cause = str(end.get("Cause", "")) if end.get("QueryLanguage") == "JSONata" else ""
            found += [
                f"{machine}.{state['Next']}: its cause does not carry {path}, which {name} publishes"
                for path in _message_details(state)
                if f"$exists($states.input{path[1:]})" not in cause
            ]
    return found


def test_a_failed_run_says_why_in_its_own_cause(each_stage: Any) -> None:
    assert unreported_detail_findings(each_stage.templates) == []
    # Canary: the fixed cause the kit's Fail states had is found.
    publish = {"Type": "Task", "Resource": asl.SNS_PUBLISH, "Next": "F", "Parameters": {"Message": {"detail.$": "$.e"}}}
    fail = {"Type": "Fail", "Error": "E", "Cause": "See the notification"}
    machine = {"Type": "AWS::StepFunctions::StateMachine", "Properties": {"DefinitionString": ""}}
    machine["Properties"]["DefinitionString"] = json.dumps({"StartAt": "N", "States": {"N": publish, "F": fail}})
    assert unreported_detail_findings({"S": {"Resources": {"M": machine}}}) == [
        "S/M.F: its cause does not carry $.e, which N publishes"
    ]


def test_every_jsonata_state_of_the_kit_is_one_the_simulator_models(each_stage: Any) -> None:
    from tests.infra import asl

    mixed: dict[str, dict[str, Any]] = {}
    for machine, definition in _definitions(each_stage.templates):
        assert definition.get("QueryLanguage", "JSONPath") == "JSONPath", machine
        for name, state in _states(definition):
            if state.get("QueryLanguage") == "JSONata":
                asl._check_state(name, state)
                mixed[machine] = definition
    # The input type check of Level 4's jobs and Level 3's SageMaker pipeline, and the Fail states whose cause
    # carries the run's error (failures.reported_fail); the pinned asl-validator checks the JSONata fields too (a
    # Condition must be a {% ... %} expression).
    assert len(mixed) >= 1
    assert dict(zip(mixed, asl.validate_asl_all(list(mixed.values())), strict=True)) == {key: [] for key in mixed}


# Events a Task attempt writes after its state is entered: scheduled, started, submitted (an integration that waits)
# and the outcome (https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html).
EVENTS_PER_ATTEMPT = 4


def most_attempts(templates: dict[str, dict[str, Any]]) -> tuple[int, str]:
    """The most attempts any one state of the kit's state machines can make (every retrier spent; a retrier
    without MaxAttempts makes 3), and which state that is."""
    attempts = [
        (1 + sum(int(r.get("MaxAttempts", 3)) for r in state.get("Retry", [])), f"{machine}.{name}")
        for machine, definition in _definitions(templates)
        for name, state in _states(definition)
    ]
    return max(attempts)


def test_kit_status_reads_back_to_the_state_a_run_is_in_however_many_retries_it_spends(each_stage: Any) -> None:
    """`kit l3 status --wait` names the state entered last from the newest CURRENT_STATE_EVENTS events; before,
    it read 25, which a Task spending its retries (the job start's quota wait alone makes 19 attempts) outgrows."""
    from kit.operator import CURRENT_STATE_EVENTS

    attempts, where = most_attempts(each_stage.templates)
    assert attempts >= 19, where  # the job start's quota wait: the guard has work
    assert attempts * EVENTS_PER_ATTEMPT <= CURRENT_STATE_EVENTS, where


# --- creates that carry an idempotency token -------------------------------------------------------------------


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


# Bedrock's server errors to retry with backoff, as Step Functions names them for an aws-sdk task (ServiceName.
# ErrorName, always with the Exception suffix: https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html).
BEDROCK_SERVER_ERRORS = ("Bedrock.InternalFailureException", "Bedrock.ServiceUnavailableException")


def token_create_findings(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Bedrock tasks that send their operation's idempotency token (botocore marks the member idempotencyToken)
    but do not retry InternalFailure and ServiceUnavailable: Bedrock documents the 500 and the 503 as ones to retry
    with backoff (https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html), and
    the token makes a retry of a create that did land make nothing twice; without the retry either fails a
    validated run (on the SageMaker path, after the training it paid for)."""
    import botocore.session

    found = []
    for machine, definition in _definitions(templates):
        for name, state in _states(definition):
            sdk = re.fullmatch(r"arn:aws:states:::aws-sdk:bedrock:([A-Za-z0-9]+)", str(state.get("Resource", "")))
            if not sdk:
                continue
            operation = sdk.group(1)[:1].upper() + sdk.group(1)[1:]
            shape = botocore.session.get_session().get_service_model("bedrock").operation_model(operation).input_shape
            # Step Functions spells the members in Pascal case (ClientRequestToken), botocore as the API does
            tokens = {_pascal(key) for key, member in shape.members.items() if member.metadata.get("idempotencyToken")}
            sent = {_pascal(key.removesuffix(".$")) for key in state.get("Parameters", {})}
            retried = {error for retry in state.get("Retry", []) for error in retry["ErrorEquals"]}
            missing = sorted(set(BEDROCK_SERVER_ERRORS) - retried)
            if tokens & sent and missing:
                found.append(f"{machine}.{name}: sends {sorted(tokens & sent)} but does not retry {missing}")
    return found


def test_every_bedrock_create_with_a_token_retries_bedrocks_server_errors(each_stage: Any) -> None:
    creates = [
        state
        for _, definition in _definitions(each_stage.templates)
        for _, state in _states(definition)
        if "ClientRequestToken" in {key.removesuffix(".$") for key in state.get("Parameters", {})}
    ]
    assert len(creates) >= 1  # the guard has work (the job start; a deployment; the import)
    assert token_create_findings(each_stage.templates) == []


def test_the_token_guard_sees_a_create_that_does_not_retry_a_server_error() -> None:
    retry = [{"ErrorEquals": ["Bedrock.ThrottlingException", "Bedrock.ServiceUnavailableException"]}]
    parameters = {"ClientRequestToken.$": "$.names.job", "JobName.$": "$.names.job"}
    resource = "arn:aws:states:::aws-sdk:bedrock:createModelCustomizationJob"
    states = {"C": {"Type": "Task", "Resource": resource, "Parameters": parameters, "Retry": retry, "End": True}}
    template = {"Resources": {"M": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {}}}}
    template["Resources"]["M"]["Properties"]["DefinitionString"] = json.dumps({"StartAt": "C", "States": states})
    assert token_create_findings({"S": template}) == [
        "S/M.C: sends ['ClientRequestToken'] but does not retry ['Bedrock.InternalFailureException']"
    ]
