"""Amazon States Language test tools: the definition out of a template, validation, and a small simulator.

``definition_from_template`` resolves the state machine's ``Fn::Join`` with realistic placeholder values.
``validate_asl`` runs the pinned ``asl-validator`` (package.json). ``sdk_request_errors`` checks an
``aws-sdk:`` task's parameters against the service's botocore model (names, required members, types,
lengths, patterns, enums). ``simulate`` runs a definition against scripted task results in virtual time.

The simulator covers the subset the kit's state machines use and raises ``AslUnsupported`` for anything
else, so an unmodelled feature can never pass silently. Its error model, after the AWS documentation:

- a JSONPath that selects nothing (Parameters, ResultSelector, InputPath, OutputPath, a Choice variable, an
  intrinsic's argument) is ``States.Runtime``: the execution fails, and no Retry or Catch applies (a
  ``States.ALL`` catcher does not catch ``States.Runtime``);
- an intrinsic function that rejects its argument values (``States.StringToJson`` on text that is not
  JSON, ``States.MathAdd`` on a non-integer, ...) is ``States.IntrinsicFailure``; in a Task it is handled by
  Retry and Catch like the task's own errors (moto's Step Functions interpreter, derived from LocalStack's,
  catches it the same way), in a Pass state it fails the execution;
- a Choice state with no matching rule and no Default is ``States.NoChoiceMatched``;
- the execution's ``TimeoutSeconds`` is enforced against the virtual clock (``States.Timeout``);
- a state whose output is over the payload quota (262,144 bytes of UTF-8 JSON) raises
  ``States.DataLimitExceeded``, which no Retry or Catch applies to (``UNCATCHABLE``);
- a state with ``"QueryLanguage": "JSONata"`` in a JSONPath state machine is modelled for what the kit uses, a
  Choice whose Conditions compare ``$type`` of ``$states.input`` or ``$states.context`` fields, and a Fail whose
  Cause is built from ``$states.input`` (``&``, ``? :``, ``$exists``, ``$string``, ``$substring``); the expressions
  are evaluated by jsonata-python, and anything else in a JSONata state raises ``AslUnsupported`` before the run
  starts. A Condition that fails or does not evaluate to true or false, and a Cause that fails or is not a string,
  are ``States.QueryEvaluationError``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = ROOT / "node_modules" / ".bin" / "asl-validator"

PARTITION = "aws"
REGION = "us-east-1"
ACCOUNT = "123456789012"
SNS_PUBLISH = "arn:aws:states:::sns:publish"


# --- the definition out of a template --------------------------------------------------------------------


def _name(template: dict[str, Any], logical_id: str, prop: str) -> str:
    value = template["Resources"][logical_id].get("Properties", {}).get(prop)
    return value if isinstance(value, str) else logical_id


def _key_id(logical_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kms-key/{logical_id}"))


def resolve(template: dict[str, Any], value: Any) -> str:
    """A realistic placeholder for a literal, pseudo parameter, ``Ref`` or ``Fn::GetAtt [X, Arn]``.

    The kind of value follows the referenced resource's Type; an unknown kind raises, never guesses.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        ref = value["Ref"]
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
        if ref in pseudo:
            return pseudo[ref]
        kind = template["Resources"][ref]["Type"]
        if kind == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{_name(template, ref, 'TopicName')}"
        if kind == "AWS::S3::Bucket":
            return _name(template, ref, "BucketName").lower()[:63]
        if kind == "AWS::Lambda::Function":
            return _name(template, ref, "FunctionName")
        if kind == "AWS::KMS::Key":
            return _key_id(ref)
        if kind == "AWS::SQS::Queue":  # Ref is the queue URL (aws-resource-sqs-queue.html, Return values)
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{_name(template, ref, 'QueueName')}"
        if kind == "AWS::StepFunctions::StateMachine":  # Ref is the ARN
            name = _name(template, ref, "StateMachineName")
            return f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        raise AslUnsupported(f"no placeholder for Ref of {ref} ({kind})")
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        kind = template["Resources"][logical_id]["Type"]
        if attribute == "Arn" and kind == "AWS::Lambda::Function":
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{_name(template, logical_id, 'FunctionName')}"
        if attribute == "Arn" and kind == "AWS::IAM::Role":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{_name(template, logical_id, 'RoleName')}"
        if attribute == "Arn" and kind == "AWS::KMS::Key":
            return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{_key_id(logical_id)}"
        if attribute == "Arn" and kind == "AWS::S3::Bucket":
            return f"arn:{PARTITION}:s3:::{resolve(template, {'Ref': logical_id})}"
        raise AslUnsupported(f"no placeholder for Fn::GetAtt {logical_id}.{attribute} ({kind})")
    raise AslUnsupported(f"no placeholder for {value!r}")


def state_machines(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every AWS::StepFunctions::StateMachine of the template: logical id -> Properties."""
    return {
        k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::StepFunctions::StateMachine"
    }


def state_machine(template: dict[str, Any], prefix: str = "") -> tuple[str, dict[str, Any]]:
    """The template's only AWS::StepFunctions::StateMachine whose logical id starts with ``prefix``."""
    found = {k: v for k, v in state_machines(template).items() if k.startswith(prefix)}
    assert len(found) == 1, f"expected one state machine starting with {prefix!r}, found {sorted(found)}"
    [(logical_id, properties)] = found.items()
    return logical_id, properties


def definition_from_template(template: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The state machine's definition, its intrinsics replaced by placeholders, as parsed JSON."""
    _, properties = state_machine(template, prefix)
    body = properties["DefinitionString"]
    if isinstance(body, dict) and set(body) == {"Fn::Join"}:
        separator, parts = body["Fn::Join"]
        text = separator.join(resolve(template, part) for part in parts)
    elif isinstance(body, str):
        text = body
    else:
        raise AslUnsupported(f"DefinitionString of unsupported form: {sorted(body)}")
    definition: dict[str, Any] = json.loads(text)
    return definition


# --- validation ------------------------------------------------------------------------------------------


def validate_asl(definition: dict[str, Any]) -> list[str]:
    """The pinned asl-validator's findings for the definition; empty when it is valid."""
    return validate_asl_all([definition])[0]


def validate_asl_all(definitions: list[dict[str, Any]]) -> list[list[str]]:
    """``validate_asl`` for several definitions in one run of the validator (Node.js starts once)."""
    if not ASL_VALIDATOR.exists():
        raise RuntimeError(
            f"{ASL_VALIDATOR.relative_to(ROOT)} is missing: install the pinned Node tools with `npm ci` "
            "(`make test` does this)"
        )
    command = [str(ASL_VALIDATOR)]
    for definition in definitions:
        command += ["--json-definition", json.dumps(definition)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    output = f"{done.stdout}\n{done.stderr}"
    findings: list[list[str]] = [[] for _ in definitions]
    verdicts: dict[int, str] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        heading = re.search(r'"JSON definition #(\d+)" is (valid|invalid)', line)
        if heading:
            index = int(heading.group(1)) - 1
            verdicts[index] = heading.group(2)
            current = findings[index] if heading.group(2) == "invalid" else None
        elif current is not None and line.strip():
            current.append(line.strip())
    invalid = {i for i, verdict in verdicts.items() if verdict == "invalid"}
    if len(verdicts) != len(definitions) or (done.returncode != 0) != bool(invalid):
        raise RuntimeError(f"unexpected asl-validator output (exit {done.returncode}): {output}")
    for index in invalid:
        findings[index] = findings[index] or ["invalid, with no detail from asl-validator"]
    return findings


@cache
def _service_model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _member(shape: Any, key: str) -> str | None:
    """The botocore member for a Step Functions aws-sdk key: only the PascalCase of the API member name. "Parameters
    in Step Functions are expressed in PascalCase, even if the native service API is in camelCase", nested members
    too; a camelCase key is refused at run time as a field Step Functions does not support
    (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html)."""
    for name in shape.members:
        if name[:1].upper() + name[1:] == key:
            return str(name)
    return None


def _check(shape: Any, value: Any, where: str, errors: list[str], response: bool = False) -> None:
    """Errors of ``value`` against ``shape``. A ``response`` (a scripted result) is held to member names, types and
    enums only: a test scripts the members a state reads, not every required one, and fake identifiers."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {value!r}")
            return
        for key, item in value.items():
            name = _member(shape, key)
            if name is None:
                errors.append(f"{where}.{key}: not a member of {shape.name}")
            else:
                _check(shape.members[name], item, f"{where}.{key}", errors, response)
        if response:
            return
        given = {_member(shape, key) for key in value}
        errors.extend(
            f"{where}: required member {name} missing" for name in shape.required_members if name not in given
        )
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {value!r}")
            return
        if not response:
            _bounds(shape, len(value), where, errors)
        for index, item in enumerate(value):
            _check(shape.member, item, f"{where}[{index}]", errors, response)
    elif kind == "map":
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map, got {value!r}")
            return
        for key, item in value.items():
            _check(shape.key, key, f"{where} key {key!r}", errors, response)
            _check(shape.value, item, f"{where}[{key!r}]", errors, response)
    elif kind == "string":
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {value!r}")
            return
        pattern = shape.metadata.get("pattern")
        if not response:
            _bounds(shape, len(value), where, errors, unit=" characters", value=value)
            if pattern and not re.fullmatch(pattern, value):
                errors.append(f"{where}: {value!r} does not match the pattern {pattern}")
        if shape.enum and value not in shape.enum:
            errors.append(f"{where}: {value!r} is not one of {shape.enum}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{where}: expected an integer, got {value!r}")
            return
        if not response:
            _bounds(shape, value, where, errors)
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean, got {value!r}")
    elif kind in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{where}: expected a number, got {value!r}")
    elif kind in ("timestamp", "blob"):
        if not isinstance(value, str) and not (response and isinstance(value, int | float | bytes)):
            errors.append(f"{where}: expected a string form of a {kind}, got {value!r}")
    else:
        raise AslUnsupported(f"{where}: no check for botocore shape type {kind}")


def _bounds(shape: Any, size: int, where: str, errors: list[str], unit: str = "", value: Any = None) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    shown = f"{value!r} is {size}{unit}" if value is not None else f"{size}{unit}"
    if low is not None and size < low:
        errors.append(f"{where}: {shown}, below the minimum {low}")
    if high is not None and size > high:
        errors.append(f"{where}: {shown}, above the maximum {high}")


def sdk_request_errors(resource: str, parameters: Any) -> list[str]:
    """What the service would reject in an ``arn:aws:states:::aws-sdk:<service>:<action>`` task's request.

    Other resources (Lambda ARNs, optimized integrations) are not checked and give an empty list.
    """
    found = re.fullmatch(r"arn:aws:states:::aws-sdk:([a-z0-9]+):([a-zA-Z0-9]+)", resource)
    if not found:
        return []
    service, action = found.groups()
    model = _service_model(service)
    operation = action[:1].upper() + action[1:]
    if operation not in model.operation_names:
        return [f"{service} has no operation {operation}"]
    errors: list[str] = []
    _check(model.operation_model(operation).input_shape, parameters, operation, errors)
    return errors


def sdk_response_errors(resource: str, result: Any) -> list[str]:
    """What in a scripted result of an ``aws-sdk`` task the service would never answer: a member its output shape
    lacks, or a value outside an enum (a status the Choice states test, say). Other resources give an empty list."""
    found = re.fullmatch(r"arn:aws:states:::aws-sdk:([a-z0-9]+):([a-zA-Z0-9]+)", resource)
    if not found or not isinstance(result, dict):
        return []
    service, action = found.groups()
    operation = _service_model(service).operation_model(action[:1].upper() + action[1:])
    if operation.output_shape is None:
        return []
    errors: list[str] = []
    _check(operation.output_shape, result, f"{operation.name} result", errors, response=True)
    return errors


def member_errors(service: str, operation: str, member: str, value: Any) -> list[str]:
    """What the service would reject in one member of an operation's request (botocore model)."""
    shape = _service_model(service).operation_model(operation).input_shape.members[member]
    errors: list[str] = []
    _check(shape, value, f"{operation}.{member}", errors)
    return errors


# --- the simulator ---------------------------------------------------------------------------------------


class AslUnsupported(NotImplementedError):
    """The definition uses something this simulator does not model: the test must not pass on it."""


class AslError(Exception):
    """An error a state raises (a task's service error, or a States.* error): ``{"Error", "Cause"}``."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause

    def output(self) -> dict[str, str]:
        return {"Error": self.error, "Cause": self.cause}


UNCATCHABLE = {"States.Runtime", "States.DataLimitExceeded"}
# A state's output is at most 262,144 bytes, counted as UTF-8 (StateExitedEventDetails.output,
# https://docs.aws.amazon.com/step-functions/latest/apireference/API_StateExitedEventDetails.html); a larger output
# raises States.DataLimitExceeded, which States.ALL does not catch
# (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html). StartExecution takes an input
# of the same size (botocore stepfunctions StartExecutionInput.input, max 262144).
PAYLOAD_LIMIT = 262_144


def payload_bytes(value: Any) -> int:
    """The size Step Functions counts for a state's input or output: its JSON text in UTF-8 (compact)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


@dataclass
class TaskCall:
    """One attempt of a Task: the parameters it sent and the virtual time it was made at."""

    state: str
    resource: str
    parameters: Any
    attempt: int
    at: float


@dataclass
class Trace:
    """What one simulated execution did."""

    visited: list[str] = field(default_factory=list)
    calls: list[TaskCall] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)
    waits: list[tuple[str, float]] = field(default_factory=list)
    elapsed: float = 0.0
    status: str = "RUNNING"
    terminal: str | None = None
    error: str | None = None
    cause: str | None = None
    output: Any = None

    def calls_to(self, state: str) -> list[TaskCall]:
        return [call for call in self.calls if call.state == state]

    def parameters(self, state: str) -> Any:
        """The parameters of the state's only call (asserts there was exactly one)."""
        calls = self.calls_to(state)
        assert len(calls) == 1, f"{state} was called {len(calls)} times; visited {self.visited}"
        return calls[-1].parameters

    @property
    def notifications(self) -> list[tuple[str, Any]]:
        """(state, Message) of every SNS publish, in order."""
        return [(call.state, call.parameters["Message"]) for call in self.calls if call.resource == SNS_PUBLISH]

    def describe(self) -> str:
        return (
            f"{self.status} at {self.terminal} ({self.error}: {self.cause}) after "
            f"{self.elapsed / 3600:.2f} h; visited {' > '.join(self.visited)}"
        )


TaskResults = Callable[[TaskCall], Any] | Mapping[str, Iterable[Any]]

_FIELDS = {
    "Pass": {"Type", "Comment", "Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "Result"},
    "Task": {
        "Type",
        "Comment",
        "Next",
        "End",
        "InputPath",
        "OutputPath",
        "ResultPath",
        "Parameters",
        "ResultSelector",
        "Resource",
        "Retry",
        "Catch",
    },
    "Choice": {"Type", "Comment", "Choices", "Default", "InputPath", "OutputPath"},
    "Wait": {"Type", "Comment", "Next", "End", "Seconds", "InputPath", "OutputPath"},
    "Succeed": {"Type", "Comment", "InputPath", "OutputPath"},
    "Fail": {"Type", "Comment", "Error", "Cause"},
}
_TOP_LEVEL = {"StartAt", "States", "TimeoutSeconds", "Comment", "Version", "QueryLanguage"}
# The fields of a state that sets "QueryLanguage": "JSONata" (only the Choice and the Fail are modelled; no Output,
# no Assign): https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html,
# https://docs.aws.amazon.com/step-functions/latest/dg/state-fail.html
_JSONATA_FIELDS = {
    "Choice": {"Type", "QueryLanguage", "Comment", "Choices", "Default"},
    "Fail": {"Type", "QueryLanguage", "Comment", "Error", "Cause"},
}
_JSONATA_RULE = {"Condition", "Next", "Comment"}
_RETRIER = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "Comment"}
_CATCHER = {"ErrorEquals", "ResultPath", "Next", "Comment"}


class _Missing(Exception):
    pass


# A member of a reference path: ``.name``, or ``['name']`` for a name with other characters (``version-id``), which
# Step Functions requires in bracket notation
# (https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html).
_MEMBER = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^'\[\]]+)'\]")


def path_members(path: str) -> list[str]:
    """The members a reference path names after its root: ``$.a['b-c']`` (or ``$$.a['b-c']``) gives a, b-c."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise AslUnsupported(f"not a reference path: {path!r}")
    rest = path[2:] if path.startswith("$$") else path[1:]
    parts, at = [], 0
    while at < len(rest):
        member = _MEMBER.match(rest, at)
        if member is None:
            raise AslUnsupported(f"JSONPath beyond $.a.b and $.a['b']: {path!r}")
        parts.append(member.group(1) or member.group(2))
        at = member.end()
    return parts


def _get_path(path: str, data: Any, context: Any) -> Any:
    """``$``, ``$.a.b``, ``$$.a.b``, ``$.a['b-c']``; a path that selects nothing raises States.Runtime."""
    parts = path_members(path)
    value = context if path.startswith("$$") else data
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            raise _Missing(path)
        value = value[part]
    return value


def _select(path: str, data: Any, context: Any, where: str) -> Any:
    try:
        return _get_path(path, data, context)
    except _Missing:
        raise AslError(
            "States.Runtime", f"{where}: the JSONPath {path!r} could not be found in the input {json.dumps(data)}"
        ) from None


def _set_path(path: str, data: Any, value: Any, where: str) -> Any:
    """ResultPath: ``$`` replaces, ``$.a.b`` sets (creating objects on the way); returns the new document."""
    if path == "$":
        return copy.deepcopy(value)
    if not path.startswith("$.") or re.search(r"[\[\]*?@]|\.\.", path):
        raise AslUnsupported(f"{where}: ResultPath {path!r}")
    result = copy.deepcopy(data)
    if not isinstance(result, dict):
        raise AslError("States.ResultPathMatchFailure", f"{where}: input is not an object")
    node = result
    *parents, last = path[2:].split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AslError("States.ResultPathMatchFailure", f"{where}: {part} is not an object")
        node = child
    node[last] = copy.deepcopy(value)
    return result


# Intrinsic functions -------------------------------------------------------------------------------------

_LBRACE, _RBRACE = "\ue000", "\ue001"  # escaped braces inside intrinsic string literals


@dataclass
class _Call:
    name: str
    args: list[Any]


@dataclass
class _Path:
    path: str


def _parse_intrinsic(text: str) -> _Call:
    position = 0

    def skip() -> None:
        nonlocal position
        while position < len(text) and text[position] == " ":
            position += 1

    def call() -> _Call:
        nonlocal position
        found = re.compile(r"States\.[A-Za-z0-9]+").match(text, position)
        if not found or text[found.end() : found.end() + 1] != "(":
            raise AslUnsupported(f"not an intrinsic call at {position}: {text!r}")
        name, position = found.group(), found.end() + 1
        args: list[Any] = []
        skip()
        if text[position : position + 1] == ")":
            position += 1
            return _Call(name, args)
        while True:
            skip()
            args.append(argument())
            skip()
            if text[position : position + 1] == ",":
                position += 1
            elif text[position : position + 1] == ")":
                position += 1
                return _Call(name, args)
            else:
                raise AslUnsupported(f"bad intrinsic syntax at {position}: {text!r}")

    def argument() -> Any:
        nonlocal position
        if text.startswith("States.", position):
            return call()
        if text[position : position + 1] == "'":
            position += 1
            chars: list[str] = []
            while position < len(text) and text[position] != "'":
                if text[position] == "\\":
                    escaped = text[position + 1 : position + 2]
                    chars.append({"{": _LBRACE, "}": _RBRACE}.get(escaped, escaped))
                    position += 2
                else:
                    chars.append(text[position])
                    position += 1
            if position >= len(text):
                raise AslUnsupported(f"unterminated string in {text!r}")
            position += 1
            return "".join(chars)
        found = re.compile(r"\$\$?(\.[A-Za-z0-9_-]+)*").match(text, position)
        if found and found.group():
            position = found.end()
            return _Path(found.group())
        found = re.compile(r"-?\d+(\.\d+)?|true|false|null").match(text, position)
        if found:
            position = found.end()
            return json.loads(found.group())
        raise AslUnsupported(f"intrinsic argument not supported at {position}: {text!r}")

    result = call()
    skip()
    if position != len(text):
        raise AslUnsupported(f"trailing text after the intrinsic call: {text!r}")
    return result


def intrinsic_paths(text: str) -> list[str]:
    """The reference paths an intrinsic function call reads as arguments, its nested calls' included."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, _Path):
            found.append(node.path)
        elif isinstance(node, _Call):
            for arg in node.args:
                walk(arg)

    walk(_parse_intrinsic(text))
    return found


def _plain(value: Any) -> Any:
    return value.replace(_LBRACE, "{").replace(_RBRACE, "}") if isinstance(value, str) else value


def _fail(name: str, why: str) -> AslError:
    return AslError("States.IntrinsicFailure", f"{name}: {why}")


class _Evaluator:
    def __init__(self, context: dict[str, Any], rng: random.Random) -> None:
        self.context = context
        self.rng = rng

    def intrinsic(self, text: str, data: Any, where: str) -> Any:
        return self._eval(_parse_intrinsic(text), data, where)

    def _eval(self, node: Any, data: Any, where: str) -> Any:
        if isinstance(node, _Path):
            return _select(node.path, data, self.context, where)
        if not isinstance(node, _Call):
            return node
        name = node.name
        args = [self._eval(arg, data, where) for arg in node.args]
        if name == "States.Format":
            if not args or not isinstance(args[0], str):
                raise _fail(name, "the first argument must be a string template")
            pieces = args[0].split("{}")
            if len(pieces) - 1 != len(args) - 1:
                raise _fail(name, f"{len(pieces) - 1} placeholders for {len(args) - 1} arguments")
            out = pieces[0]
            for value, piece in zip(args[1:], pieces[1:], strict=True):
                if isinstance(value, dict | list):
                    raise _fail(name, f"argument {value!r} is not a string, number, boolean or null")
                out += (_plain(value) if isinstance(value, str) else json.dumps(value)) + piece
            return _plain(out)
        if name == "States.UUID":
            if args:
                raise _fail(name, "takes no arguments")
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if name == "States.StringSplit":
            if len(args) != 2 or not all(isinstance(a, str) for a in args):
                raise _fail(name, f"needs a string and a delimiter string, got {args!r}")
            return [part for part in re.split("[" + re.escape(_plain(args[1])) + "]", _plain(args[0])) if part]
        if name == "States.ArrayGetItem":
            if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], int):
                raise _fail(name, f"needs an array and an index, got {args!r}")
            if not 0 <= args[1] < len(args[0]):
                raise _fail(name, f"index {args[1]} outside an array of {len(args[0])}")
            return args[0][args[1]]
        if name == "States.MathAdd":
            ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool) and -(2**31) <= a < 2**31]
            if len(args) != 2 or len(ints) != 2:
                raise _fail(name, f"needs two integers, got {args!r}")
            return ints[0] + ints[1]
        if name == "States.JsonMerge":
            if len(args) != 3 or not isinstance(args[2], bool):
                raise _fail(name, "needs two objects and a boolean")
            if args[2]:
                raise AslUnsupported("States.JsonMerge with deep merge (true) is not modelled")
            if not isinstance(args[0], dict) or not isinstance(args[1], dict):
                raise _fail(name, f"both arguments must be objects, got {args[0]!r} and {args[1]!r}")
            return {**args[0], **args[1]}
        if name == "States.StringToJson":
            if len(args) != 1 or not isinstance(args[0], str):
                raise _fail(name, f"needs one string, got {args!r}")
            try:
                return json.loads(_plain(args[0]))
            except json.JSONDecodeError as error:
                raise _fail(name, f"not JSON: {error}") from None
        if name == "States.Hash":
            # https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html: lowercase hex digest
            algorithms = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}
            if len(args) != 2 or not isinstance(args[0], str) or args[1] not in algorithms:
                raise _fail(name, f"needs a string and one of {sorted(algorithms)}, got {args!r}")
            return hashlib.new(algorithms[args[1]], _plain(args[0]).encode()).hexdigest()
        if name == "States.JsonToString":
            if len(args) != 1:
                raise _fail(name, "needs one argument")
            return json.dumps(args[0], separators=(",", ":"))
        raise AslUnsupported(f"intrinsic function {name} is not modelled")

    def template(self, value: Any, data: Any, where: str) -> Any:
        """A payload template (Parameters, ResultSelector): ``key.$`` fields are paths or intrinsics."""
        if isinstance(value, list):
            return [self.template(item, data, where) for item in value]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.endswith(".$"):
                if not isinstance(item, str):
                    raise AslUnsupported(f"{where}: {key} must be a string, got {item!r}")
                if item.startswith("States."):
                    out[key[:-2]] = self.intrinsic(item, data, f"{where} {key}")
                elif item.startswith("$"):
                    out[key[:-2]] = _select(item, data, self.context, f"{where} {key}")
                else:
                    raise AslUnsupported(f"{where}: {key} is neither a path nor an intrinsic: {item!r}")
            else:
                out[key] = self.template(item, data, where)
        return out


# Choice rules --------------------------------------------------------------------------------------------

_COMPARISONS = {
    "StringEquals": lambda v, x: isinstance(v, str) and v == x,
    "BooleanEquals": lambda v, x: isinstance(v, bool) and v == x,
    "NumericEquals": lambda v, x: _number(v) and v == x,
    "NumericGreaterThan": lambda v, x: _number(v) and v > x,
    "NumericGreaterThanEquals": lambda v, x: _number(v) and v >= x,
    "NumericLessThan": lambda v, x: _number(v) and v < x,
    "NumericLessThanEquals": lambda v, x: _number(v) and v <= x,
    "IsNull": lambda v, x: (v is None) == x,
    "IsString": lambda v, x: isinstance(v, str) == x,
    "IsBoolean": lambda v, x: isinstance(v, bool) == x,
    "IsNumeric": lambda v, x: _number(v) == x,
    "StringMatches": lambda v, x: _string_matches(v, x),
}


def _string_matches(value: Any, pattern: str) -> bool:
    """ASL StringMatches: '*' matches any run of characters, a backslash escapes the next one."""
    if not isinstance(value, str):
        return False
    regex, i = "", 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            regex, i = regex + re.escape(pattern[i + 1]), i + 2
            continue
        regex, i = regex + (".*" if pattern[i] == "*" else re.escape(pattern[i])), i + 1
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _rule_matches(rule: dict[str, Any], data: Any, context: Any, where: str, top: bool) -> bool:
    allowed = {"Comment"} | ({"Next"} if top else set())
    logic = [k for k in ("And", "Or", "Not") if k in rule]
    if logic:
        [combinator] = logic
        extra = set(rule) - allowed - {combinator}
        if extra:
            raise AslUnsupported(f"{where}: Choice rule fields {sorted(extra)}")
        if combinator == "Not":
            return not _rule_matches(rule["Not"], data, context, where, top=False)
        results = (_rule_matches(r, data, context, where, top=False) for r in rule[combinator])
        return all(results) if combinator == "And" else any(results)
    operators = set(rule) - allowed - {"Variable"}
    if "Variable" not in rule or len(operators) != 1:
        raise AslUnsupported(f"{where}: Choice rule {rule!r}")
    [operator] = operators
    expected = rule[operator]
    if operator == "IsPresent":
        try:
            _get_path(rule["Variable"], data, context)
        except _Missing:
            return expected is False
        return expected is True
    if operator not in _COMPARISONS:
        raise AslUnsupported(f"{where}: Choice comparison {operator}")
    value = _select(rule["Variable"], data, context, f"{where} Variable")
    return bool(_COMPARISONS[operator](value, expected))


# JSONata -------------------------------------------------------------------------------------------------

# Step Functions evaluates JSONata 2.0.6 (https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html);
# jsonata-python (requirements-dev.txt) is a port of the same reference implementation. Only the part of the
# language the kit uses is admitted, so that a new construct is modelled on purpose, never evaluated by chance:
# comparisons, boolean operators and string concatenation, the conditional (? :) and parentheses, string, number
# and literal values, the functions below, and paths that start at the reserved variable $states (it holds input
# and context).
_JSONATA_FUNCTIONS = {"type", "exists", "string", "substring"}
_JSONATA_OPERATORS = {"=", "!=", "<", "<=", ">", ">=", "and", "or", "&"}
_JSONATA_STATES = {"input", "context"}


def _symbols(value: Any) -> Iterator[Any]:
    from jsonata.parser import Parser

    if isinstance(value, Parser.Symbol):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _symbols(item)


def _jsonata_parts(node: Any) -> dict[str, list[Any]]:
    """The sub-expressions of a parsed node, by attribute (the parser's back references left out)."""
    parts: dict[str, list[Any]] = {}
    for key, value in vars(node).items():
        if key.startswith("_") and key != "_else":
            continue
        found = list(_symbols(value))
        if found:
            parts[key] = found
    return parts


def _check_jsonata(node: Any, where: str) -> None:
    """Raise AslUnsupported for any part of the expression outside what the simulator models."""
    kind, parts = node.type, _jsonata_parts(node)

    def refuse(what: str) -> AslUnsupported:
        return AslUnsupported(f"{where}: JSONata {what} is not modelled")

    if kind in ("string", "number", "value"):
        if parts:
            raise refuse(f"{kind} with {sorted(parts)}")
        return
    if kind == "binary":
        if node.value not in _JSONATA_OPERATORS or set(parts) != {"lhs", "rhs"}:
            raise refuse(f"operator {node.value!r}")
        _check_jsonata(node.lhs, where)
        _check_jsonata(node.rhs, where)
        return
    if kind == "block":
        if set(parts) != {"expressions"} or len(parts["expressions"]) != 1:
            raise refuse("block of several expressions")
        _check_jsonata(parts["expressions"][0], where)
        return
    if kind == "condition":
        if set(parts) - {"condition", "then", "_else"} or not {"condition", "then"} <= set(parts):
            raise refuse(f"conditional with {sorted(parts)}")
        for part in parts.values():
            _check_jsonata(part[0], where)
        return
    if kind == "function":
        procedure = node.procedure
        if set(parts) - {"procedure", "arguments"} or procedure.type != "variable" or _jsonata_parts(procedure):
            raise refuse("call of an expression")
        if procedure.value not in _JSONATA_FUNCTIONS:
            raise refuse(f"function ${procedure.value}")
        for argument in parts.get("arguments", []):
            _check_jsonata(argument, where)
        return
    if kind == "path":
        steps = node.steps
        head, field_name = (steps[0], steps[1]) if len(steps) >= 2 else (steps[0], None)
        if set(parts) != {"steps"} or head.type != "variable" or head.value != "states":
            raise refuse("path that does not start at $states")
        if field_name is None or field_name.type != "name" or field_name.value not in _JSONATA_STATES:
            raise refuse(f"path $states.{getattr(field_name, 'value', '')} (a Condition has {sorted(_JSONATA_STATES)})")
        for step in steps[1:]:
            if step.type != "name" or _jsonata_parts(step):
                raise refuse(f"path step {step.type} {step.value!r} (filters, wildcards, ...)")
        return
    if kind == "variable":
        raise refuse(f"variable ${node.value} outside a path or call (workflow variables are not modelled)")
    raise refuse(f"{kind} {node.value!r}")


def _jsonata(text: Any, where: str) -> Any:
    """The compiled expression of a ``{% ... %}`` field; AslUnsupported for anything not modelled."""
    if not isinstance(text, str) or not (text.startswith("{%") and text.endswith("%}")):
        raise AslUnsupported(f"{where}: not a JSONata expression string ({{% ... %}}): {text!r}")
    return _compiled(text[2:-2].strip(), where)


@cache
def _compiled(expression: str, where: str) -> Any:
    from jsonata import Jsonata
    from jsonata.jexception import JException

    try:
        compiled = Jsonata(expression)
    except JException as error:
        raise AslUnsupported(f"{where}: JSONata that does not parse: {expression!r} ({error})") from None
    if compiled.get_errors():
        raise AslUnsupported(f"{where}: JSONata that does not parse: {expression!r}")
    _check_jsonata(compiled.ast, where)
    return compiled


def _condition_holds(rule: dict[str, Any], data: Any, context: Any, where: str) -> bool:
    """A JSONata Choice rule's Condition, on the state's input: true or false. An expression that raises (a type
    error, say) or gives anything else, undefined included, is States.QueryEvaluationError (the Amazon States
    Language's predefined error codes, https://states-language.net/ Appendix A)."""
    from jsonata.jexception import JException

    compiled = _jsonata(rule["Condition"], where)
    try:
        value = compiled.evaluate(None, {"states": {"input": data, "context": context}})
    except JException as error:
        raise AslError("States.QueryEvaluationError", f"{where}: {rule['Condition']}: {error}") from None
    if not isinstance(value, bool):
        raise AslError(
            "States.QueryEvaluationError", f"{where}: {rule['Condition']} returned {value!r}, not true or false"
        )
    return value


def _jsonata_cause(state: dict[str, Any], data: Any, context: Any, where: str) -> str | None:
    """A JSONata Fail state's Cause on its input: a string, else States.QueryEvaluationError."""
    if "Cause" not in state:
        return None
    from jsonata.jexception import JException

    try:
        value = _jsonata(state["Cause"], where).evaluate(None, {"states": {"input": data, "context": context}})
    except JException as error:
        raise AslError("States.QueryEvaluationError", f"{where}: Cause: {error}") from None
    if not isinstance(value, str):
        raise AslError("States.QueryEvaluationError", f"{where}: Cause gave {value!r}, not a string")
    return value


# The interpreter -----------------------------------------------------------------------------------------


def _results_callable(task_results: TaskResults, publishes_succeed: bool = False) -> Callable[[TaskCall], Any]:
    if callable(task_results):
        return task_results
    queues: dict[str, Iterator[Any]] = {state: iter(items) for state, items in task_results.items()}

    def next_result(call: TaskCall) -> Any:
        if call.state not in queues and publishes_succeed and call.resource == SNS_PUBLISH:
            return {"MessageId": f"message-{call.state}"}
        if call.state not in queues:
            raise AssertionError(f"no scripted result for Task {call.state}")
        try:
            outcome = next(queues[call.state])
        except StopIteration:
            raise AssertionError(f"the scripted results for Task {call.state} ran out (call at {call.at}s)") from None
        if callable(outcome):
            outcome = outcome(call)
        if isinstance(outcome, AslError):
            raise outcome
        return outcome

    return next_result


def _matches(error: str, names: list[str]) -> bool:
    """Whether a Retrier's or Catcher's ErrorEquals takes ``error`` (only Task states retry or catch here).

    States.TaskFailed is a wildcard for any known error except States.Timeout:
    https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html
    """
    return any(
        n == error
        or (n == "States.ALL" and error not in UNCATCHABLE)
        or (n == "States.TaskFailed" and error != "States.Timeout" and error not in UNCATCHABLE)
        for n in names
    )


def simulate(
    definition: dict[str, Any],
    execution_input: Any,
    task_results: TaskResults,
    *,
    execution_name: str = "test-execution",
    state_machine_name: str = "state-machine",
    max_steps: int = 5000,
    seed: int = 0,
    publishes_succeed: bool = False,
) -> Trace:
    """Run the definition on the input; every Task's result comes from ``task_results``.

    ``task_results`` is a callable taking the TaskCall, or a mapping from state name to an iterable of
    outcomes consumed one per call. An outcome (or the callable's return) is the task's result; an
    ``AslError`` outcome is raised (or the callable raises one); a callable outcome is called with the call.
    With a mapping, ``publishes_succeed`` answers an SNS publish it does not script with a message id.
    """
    unknown = set(definition) - _TOP_LEVEL
    if unknown:
        raise AslUnsupported(f"top-level fields {sorted(unknown)}")
    if definition.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise AslUnsupported(f"a state machine whose QueryLanguage is {definition['QueryLanguage']!r}")
    states: dict[str, dict[str, Any]] = definition["States"]
    for state_name, state in states.items():
        _check_state(state_name, state)
    if payload_bytes(execution_input) > PAYLOAD_LIMIT:
        raise ValueError(f"StartExecution refuses an input over {PAYLOAD_LIMIT} bytes: the test cannot happen")
    results = _results_callable(task_results, publishes_succeed)
    execution_arn = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{state_machine_name}:{execution_name}"
    context: dict[str, Any] = {
        "Execution": {"Id": execution_arn, "Name": execution_name, "Input": execution_input},
        "StateMachine": {
            "Id": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{state_machine_name}",
            "Name": state_machine_name,
        },
        "State": {},
    }
    evaluator = _Evaluator(context, random.Random(seed))
    timeout = definition.get("TimeoutSeconds")
    trace = Trace()
    data = copy.deepcopy(execution_input)
    name: str = definition["StartAt"]

    def finish(status: str, error: str | None = None, cause: str | None = None, output: Any = None) -> Trace:
        trace.status, trace.terminal, trace.error, trace.cause, trace.output = status, name, error, cause, output
        return trace

    for _ in range(max_steps):
        if name not in states:
            raise AslUnsupported(f"transition to a state that does not exist: {name}")
        state = states[name]
        trace.visited.append(name)
        context["State"] = {"Name": name, "RetryCount": 0}
        kind = state["Type"]
        try:
            if kind == "Fail":
                if state.get("QueryLanguage") == "JSONata":
                    return finish("FAILED", state.get("Error"), _jsonata_cause(state, data, context, name))
                return finish("FAILED", state.get("Error"), state.get("Cause"))
            effective = _select(state.get("InputPath", "$"), data, context, f"{name} InputPath")
            if kind == "Succeed":
                return finish("SUCCEEDED", output=_sized(_output(state, effective, context, name), name))
            if kind == "Choice":
                target = _choose(state, effective, context, name)
                data, name = _sized(_output(state, effective, context, name), name), target
                continue
            if kind == "Wait":
                if "Seconds" not in state:
                    raise AslUnsupported(f"{name}: Wait without Seconds")
                trace.waits.append((name, float(state["Seconds"])))
                trace.elapsed += float(state["Seconds"])
                data = _sized(_output(state, effective, context, name), name)
            elif kind == "Pass":
                if "Parameters" in state:
                    result = evaluator.template(state["Parameters"], effective, f"{name} Parameters")
                else:
                    result = copy.deepcopy(state.get("Result", effective))
                data = _sized(_output(state, _result_path(state, data, result, name), context, name), name)
            else:  # Task
                outcome = _run_task(state, name, data, effective, evaluator, results, trace, context)
                if isinstance(outcome, _Caught):
                    data, name = _sized(outcome.data, name), outcome.next
                    if timeout is not None and trace.elapsed > timeout:
                        return finish("FAILED", "States.Timeout", f"the execution ran longer than {timeout} s")
                    continue
                data = _sized(outcome, name)
        except AslError as error:
            return finish("FAILED", error.error, error.cause)
        if timeout is not None and trace.elapsed > timeout:
            return finish("FAILED", "States.Timeout", f"the execution ran longer than {timeout} s")
        if state.get("End") is True:
            return finish("SUCCEEDED", output=data)
        if "Next" not in state:
            raise AslUnsupported(f"{name}: neither Next nor End")
        name = state["Next"]
    raise AssertionError(f"no terminal state within {max_steps} steps; last states {trace.visited[-12:]}")


def _check_state(name: str, state: dict[str, Any]) -> None:
    """AslUnsupported for a state type, field or JSONata expression the simulator does not model."""
    kind = state.get("Type")
    language = state.get("QueryLanguage", "JSONPath")
    if language == "JSONata":
        if kind not in _JSONATA_FIELDS:
            raise AslUnsupported(f"{name}: a {kind} state in JSONata")
        allowed = _JSONATA_FIELDS[kind]
    elif language == "JSONPath":
        if kind not in _FIELDS:
            raise AslUnsupported(f"{name}: state type {kind}")
        allowed = _FIELDS[kind] | {"QueryLanguage"}
    else:
        raise AslUnsupported(f"{name}: QueryLanguage {language!r}")
    extra = set(state) - allowed
    if extra:
        raise AslUnsupported(f"{name}: fields {sorted(extra)} of a {language} {kind} state")
    if language == "JSONata" and kind == "Fail":
        if not isinstance(state.get("Error", ""), str) or "{%" in state.get("Error", ""):
            raise AslUnsupported(f"{name}: a JSONata Fail's Error must be a plain string")
        if "Cause" in state:
            _jsonata(state["Cause"], name)
    elif language == "JSONata":
        for rule in state["Choices"]:
            if set(rule) - _JSONATA_RULE or not {"Condition", "Next"} <= set(rule):
                raise AslUnsupported(f"{name}: JSONata Choice rule fields {sorted(rule)}")
            _jsonata(rule["Condition"], name)


def _sized(output: Any, name: str) -> Any:
    """The state's output, or States.DataLimitExceeded when it is over the payload quota."""
    size = payload_bytes(output)
    if size > PAYLOAD_LIMIT:
        raise AslError(
            "States.DataLimitExceeded", f"{name}: the state output is {size} bytes, over the {PAYLOAD_LIMIT}-byte quota"
        )
    return output


def _output(state: dict[str, Any], data: Any, context: Any, name: str) -> Any:
    path = state.get("OutputPath", "$")
    if path is None:
        return {}
    return _select(path, data, context, f"{name} OutputPath")


def _result_path(state: dict[str, Any], data: Any, result: Any, name: str) -> Any:
    if "ResultPath" in state and state["ResultPath"] is None:
        return copy.deepcopy(data)
    return _set_path(state.get("ResultPath", "$"), data, result, name)


def _choose(state: dict[str, Any], data: Any, context: Any, name: str) -> str:
    jsonata = state.get("QueryLanguage") == "JSONata"
    for rule in state["Choices"]:
        if (
            _condition_holds(rule, data, context, name)
            if jsonata
            else _rule_matches(rule, data, context, name, top=True)
        ):
            return str(rule["Next"])
    if "Default" in state:
        return str(state["Default"])
    raise AslError("States.NoChoiceMatched", f"{name}: no rule matched and there is no Default")


@dataclass
class _Caught:
    data: Any
    next: str


def _run_task(
    state: dict[str, Any],
    name: str,
    data: Any,
    effective: Any,
    evaluator: _Evaluator,
    results: Callable[[TaskCall], Any],
    trace: Trace,
    context: dict[str, Any],
) -> Any:
    """The Task's new data, or _Caught when a catcher redirects the run; raises uncaught errors."""
    retriers = state.get("Retry", [])
    catchers = state.get("Catch", [])
    for retrier in retriers:
        if set(retrier) - _RETRIER:
            raise AslUnsupported(f"{name}: Retry fields {sorted(set(retrier) - _RETRIER)}")
    for catcher in catchers:
        if set(catcher) - _CATCHER:
            raise AslUnsupported(f"{name}: Catch fields {sorted(set(catcher) - _CATCHER)}")
    used = [0] * len(retriers)
    attempt = 0
    while True:
        attempt += 1
        context["State"]["RetryCount"] = attempt - 1
        try:
            parameters = (
                evaluator.template(state["Parameters"], effective, f"{name} Parameters")
                if "Parameters" in state
                else copy.deepcopy(effective)
            )
            call = TaskCall(name, state["Resource"], parameters, attempt, trace.elapsed)
            trace.calls.append(call)
            result = results(call)
            if isinstance(result, AslError):
                raise result
            problems = sdk_response_errors(state["Resource"], result)
            if problems:
                raise AslUnsupported(f"{name}: a scripted result the service would not return: {'; '.join(problems)}")
            if "ResultSelector" in state:
                result = evaluator.template(state["ResultSelector"], result, f"{name} ResultSelector")
            return _output(state, _result_path(state, data, result, name), context, name)
        except AslError as error:
            if error.error in UNCATCHABLE:
                raise
            # The first retrier whose ErrorEquals matches decides; once it is exhausted, the catchers do.
            index = next((i for i, r in enumerate(retriers) if _matches(error.error, r["ErrorEquals"])), None)
            if index is not None and used[index] < retriers[index].get("MaxAttempts", 3):
                retrier = retriers[index]
                interval = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** used[index]
                if "MaxDelaySeconds" in retrier:
                    interval = min(interval, retrier["MaxDelaySeconds"])
                used[index] += 1
                trace.retries[name] = trace.retries.get(name, 0) + 1
                trace.elapsed += interval
                continue
            for catcher in catchers:
                if _matches(error.error, catcher["ErrorEquals"]):
                    return _Caught(_result_path(catcher, data, error.output(), f"{name} Catch"), catcher["Next"])
            raise
