"""A subscript read of a boto3 answer (``answer["Member"]``) raises KeyError when the service leaves the member out:
in a cleanup Lambda that fails the stack delete, in the kit the command. So lambdas/ and kit/ read by subscript only
members botocore's output shape requires, ones the same function checks present, or ones ALLOWED names with a reason
and a source (test_state_machines.answer_read_findings is the Step Functions counterpart).

Blind spots (reviewed by hand): an answer passed as an argument, returned by a kit helper or yielded by a generator
(``_queued(raw)``, ``_read(target, lambda: ...)``, ``_invoke_warming_up(...)``), an operation named in a variable
(``get_paginator(operation)``), and a guard's position (any check in the function counts, before or after)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The kit's clients: client("svc"), bounded_client("svc", ...), client_factory("svc"), target.client("svc"),
# target.model_client("svc"); get_s3_client() is S3's.
CLIENT = re.compile(r"""\w*client(?:_factory)?\(\s*["']([a-z0-9-]+)["']""")

_STACKS = (
    "asked for one stack by name: 'If the stack doesn't exist, a ValidationError is returned' "
    "(https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html), and an empty list "
    "is handled too"
)
# (file, Operation.member path) -> why the member is there although botocore does not require it, and the source.
CALLER_ACCOUNT = (
    "botocore sts model: GetCallerIdentity 'Returns details about the IAM user or role whose credentials are used "
    "to call the operation', Account being 'The Amazon Web Services account ID number of the account that owns "
    "or contains the calling entity': every caller has one"
)
ALLOWED = {
    ("kit/aws.py", "DescribeStacks.Stacks"): _STACKS,
    ("kit/doctor.py", "DescribeStacks.Stacks"): _STACKS,
    ("lambdas/common/stack_cleanup.py", "DescribeStacks.Stacks"): (
        "asked with the event's unique stack ID, which names a deleted stack too ('Deleted stacks: You must specify "
        "the unique stack ID'); a stack that does not exist is a ValidationError "
        "(https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html)"
    ),
    ("kit/aws.py", "DescribeStacks.Stacks[].Outputs[].OutputKey"): (
        "every output is declared under its logical ID, the output's identifier, which must be unique in the "
        "template (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/outputs-section-structure.html)"
    ),
    ("kit/doctor.py", "GetCallerIdentity.Account"): CALLER_ACCOUNT,
    ("kit/level4_pretrain.py", "GetCallerIdentity.Account"): CALLER_ACCOUNT,
    ("kit/doctor.py", "GetParameter.Parameter"): (
        "botocore ssm model: a parameter that does not exist is GetParameter's ParameterNotFound error ('The "
        "parameter couldn't be found'), which the check reports"
    ),
    ("kit/doctor.py", "GetParameter.Parameter.Value"): (
        "botocore ssm model: PutParameterRequest requires Name and Value, so no stored parameter lacks a value"
    ),
    ("kit/doctor.py", "GetAccountSettings.AccountLimit"): (
        "botocore lambda model: GetAccountSettings 'Retrieves details about your account's limits and usage in an "
        "Amazon Web Services Region': the limits are what it answers; each one in it is read with .get"
    ),
    ("kit/doctor.py", "GetTopicAttributes.Attributes"): (
        "botocore sns model: GetTopicAttributes 'Returns all of the properties of a topic' (TopicArn and Owner among "
        "them); a topic that is gone is NotFound, which the read answers None for"
    ),
    ("kit/level2_rag.py", "ListStackResources.StackResourceSummaries"): (
        "the kit's deployed L2 stack, and 'The Resources section is required in every CloudFormation template' "
        "(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/template-anatomy.html); botocore "
        "cloudformation model: ListStackResources 'Returns descriptions of all resources of the specified stack'"
    ),
    ("kit/level2_rag.py", "GetQueueAttributes.Attributes"): (
        "botocore sqs model, AttributeNames: 'if you don't specify values for this parameter, the request returns "
        "empty results'; the call names the Approximate* counts every queue has, and reads each with .get(name, 0)"
    ),
    ("lambdas/level3_finetune/sagemaker_validate/handler.py", "ListObjectsV2.Contents[].Key"): (
        "'The object key (or key name) uniquely identifies the object in an Amazon S3 bucket' "
        "(https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html): every listed object has one"
    ),
}


@dataclass(frozen=True)
class Answer:
    """An expression's part of a boto3 answer: ``shape`` at ``label``; ``pages``: an iterable of that shape."""

    label: str
    shape: Any
    pages: bool = False


@dataclass(frozen=True)
class Read:
    path: str
    line: int
    label: str  # Operation.member path; a trailing "!" marks a member the shape does not have
    safe: bool  # required (or the HTTP payload), or checked present in the same function


@cache
def _session() -> Any:
    import botocore.session

    return botocore.session.get_session()


@cache
def _operations(services: frozenset[str]) -> dict[str, Any]:
    """boto3's method name -> botocore OperationModel over these services (each model loaded once: cached); a name
    two of them share is left out."""
    import botocore

    found: dict[str, list[Any]] = defaultdict(list)
    for service in sorted(services & set(_session().get_available_services())):
        model = _session().get_service_model(service)
        for name in model.operation_names:
            found[botocore.xform_name(name)].append(model.operation_model(name))
    return {method: models[0] for method, models in found.items() if len(models) == 1}


def _member(answer: Answer | None, key: Any) -> Answer | None:
    if answer is None or answer.pages or answer.shape.type_name != "structure" or key not in answer.shape.members:
        return None
    return Answer(f"{answer.label}.{key}", answer.shape.members[key])


def _items(answer: Answer | None) -> Answer | None:
    """What iterating ``answer`` yields: a page, or a list's member."""
    if answer is None or not (answer.pages or answer.shape.type_name == "list"):
        return None
    return Answer(answer.label, answer.shape) if answer.pages else Answer(f"{answer.label}[]", answer.shape.member)


def _constant(node: ast.AST) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


class _Scope:
    """A top-level function with all nested in it (a closure reads its outer function's answers)."""

    def __init__(self, function: ast.AST, operations: dict[str, Any]) -> None:
        self.operations = operations
        self.names: dict[str, Answer] = {}
        nodes = list(ast.walk(function))
        for _ in range(3):  # a name bound from a name bound later in the walk
            for node in nodes:
                self._bind(node)
        # Members checked present: base.get("K") or "K" in base, in an if, while, conditional or comprehension test.
        tests = [n.test for n in nodes if isinstance(n, ast.If | ast.IfExp | ast.While)]
        tests += [test for n in nodes if isinstance(n, ast.comprehension) for test in n.ifs]
        self.guards: set[tuple[str, Any]] = set()
        for node in (sub for test in tests for sub in ast.walk(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                self.guards.add((ast.unparse(node.func.value), _constant(node.args[0]) if node.args else None))
            elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
                self.guards.add((ast.unparse(node.comparators[0]), _constant(node.left)))

    def _bind(self, node: ast.AST) -> None:
        """name = answer, name = dict(answer), name = answer["K"], for name in answer["List"] / pages / a paginator."""
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            targets, value = node.targets if isinstance(node, ast.Assign) else [node.target], self.resolve(node.value)
        elif isinstance(node, ast.For | ast.comprehension):
            iterated, targets = node.iter, [node.target]
            numbered = isinstance(iterated, ast.Call) and ast.unparse(iterated.func) == "enumerate"
            if numbered and isinstance(node.target, ast.Tuple):  # for n, page in enumerate(...)
                iterated, targets = iterated.args[0], node.target.elts[1:2]
            value = _items(self.resolve(iterated))
        else:
            return
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                self.names.setdefault(target.id, value)

    def resolve(self, node: ast.AST) -> Answer | None:
        """The answer ``node`` holds, if it holds one."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):  # answer.get("K") or [], given or client.op()
            return next(filter(None, map(self.resolve, node.values)), None)
        if isinstance(node, ast.Subscript):
            base, key = self.resolve(node.value), _constant(node.slice)
            return _member(base, key) if isinstance(key, str) else _items(base) if isinstance(key, int) else None
        if not isinstance(node, ast.Call):
            return None
        func, args = node.func, node.args
        if isinstance(func, ast.Name) and func.id in ("dict", "list", "sorted", "reversed") and len(args) == 1:
            return self.resolve(args[0])
        # common.stack_cleanup.pages(client.op, "key", ...): the items of the key's list, page after page.
        if isinstance(func, ast.Name) and func.id == "pages" and len(args) >= 2:
            return _member(self.resolve(ast.Call(args[0], [], [])), _constant(args[1]))
        if not isinstance(func, ast.Attribute):
            return None
        if func.attr == "get" and args:
            return _member(self.resolve(func.value), _constant(args[0]))
        if func.attr == "get_paginator" and args and _constant(args[0]) in self.operations:
            answer = self.resolve(ast.Call(ast.Attribute(func.value, _constant(args[0])), [], []))
            return Answer(answer.label, answer.shape, pages=True) if answer else None
        if func.attr == "paginate":
            return self.resolve(func.value)
        if func.attr in self.operations and self.operations[func.attr].output_shape is not None:
            return Answer(self.operations[func.attr].name, self.operations[func.attr].output_shape)
        return None


def answer_reads(sources: dict[str, str]) -> list[Read]:
    """Every subscript read of a boto3 answer in ``sources`` (repository path -> text) this walk can resolve. A
    Lambda function's directory is one package (rag_ingest/aws.py makes ingestion.py's clients); a kit module names
    its own clients."""
    group = {path: str(Path(path).parent) if path.startswith("lambdas/") else path for path in sources}
    services: dict[str, set[str]] = defaultdict(set)
    for path, text in sources.items():
        services[group[path]] |= set(CLIENT.findall(text)) | ({"s3"} if "get_s3_client" in text else set())
    reads = []
    functions = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    for path, text in sources.items():
        operations = _operations(frozenset(services[group[path]]))
        tree, todo = ast.parse(text), []
        stack: list[ast.AST] = [tree]
        while stack:  # the outermost functions (module or class level)
            node = stack.pop()
            for child in ast.iter_child_nodes(node):
                (todo if isinstance(child, functions) else stack).append(child)
        for function in todo:
            scope = _Scope(function, operations)
            for node in ast.walk(function):
                key = _constant(node.slice) if isinstance(node, ast.Subscript) else None
                if not (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(key, str)):
                    continue
                base = scope.resolve(node.value)
                if base is None or base.pages or base.shape.type_name != "structure":
                    continue  # not an answer, or a map's key (Attributes["Policy"])
                shape, label = base.shape, f"{base.label}.{key}"
                if key not in shape.members:
                    reads.append(Read(path, node.lineno, label + "!", False))
                    continue
                # botocore's rest parsers always set the HTTP payload member (S3 GetObject's Body):
                # botocore/parsers.py BaseRestParser._parse_payload, final_parsed[payload_member_name] = body.
                safe = key in shape.required_members or shape.serialization.get("payload") == key
                reads.append(Read(path, node.lineno, label, safe or (ast.unparse(node.value), key) in scope.guards))
    return sorted(reads, key=lambda read: (read.path, read.line, read.label))


def problems(reads: list[Read], allowed: dict[tuple[str, str], str]) -> list[str]:
    """Unsafe reads ``allowed`` does not name, and entries of it that name no unsafe read (stale)."""
    unsafe = [read for read in reads if not read.safe]
    found = [f"{r.path}:{r.line}: {r.label} is not required" for r in unsafe if (r.path, r.label) not in allowed]
    used = {(read.path, read.label) for read in unsafe}
    return found + [f"stale ALLOWED entry {path} {label}" for path, label in allowed if (path, label) not in used]


def kit_sources() -> dict[str, str]:
    paths = sorted({*ROOT.glob("kit/*.py"), *ROOT.glob("lambdas/**/*.py")})
    return {str(path.relative_to(ROOT)): path.read_text() for path in paths}


def test_every_read_of_a_boto3_answer_is_required_checked_or_allowed() -> None:
    reads = answer_reads(kit_sources())
    assert len(reads) > 70  # the walk still resolves the kit's reads (81 when written)
    assert problems(reads, ALLOWED) == []
    assert all("https://" in why or "botocore" in why for why in ALLOWED.values())  # each reason has a source


_FIXTURE = """
def look(client, name):
    bedrock = client("bedrock")
    job = bedrock.get_model_import_job(jobIdentifier=name)
    state = job["status"]
    kept = job.get("status", "InProgress")
    if job.get("failureMessage"):
        print(job["failureMessage"])
    for summary in bedrock.list_model_import_jobs().get("modelImportJobSummaries") or []:
        print(summary["jobArn"], summary["statsu"])
"""


def test_the_walk_flags_an_optional_member_and_passes_get_a_check_and_a_required_one() -> None:
    reads = {(read.label, read.safe) for read in answer_reads({"lambdas/f/handler.py": _FIXTURE})}
    assert reads == {
        ("GetModelImportJob.status", False),  # botocore requires no member of GetModelImportJobResponse
        ("GetModelImportJob.failureMessage", True),  # checked with .get first
        ("ListModelImportJobs.modelImportJobSummaries[].jobArn", True),  # required of each summary
        ("ListModelImportJobs.modelImportJobSummaries[].statsu!", False),  # no such member at all
    }


def test_an_allow_list_entry_that_names_no_read_is_stale() -> None:
    reads = answer_reads({"lambdas/f/handler.py": _FIXTURE})
    allowed = {
        ("lambdas/f/handler.py", "GetModelImportJob.status"): "why",
        ("lambdas/f/handler.py", "ListModelImportJobs.modelImportJobSummaries[].statsu!"): "why",
        ("lambdas/f/handler.py", "GetModelImportJob.modelArn"): "why",
    }
    assert problems(reads, allowed) == ["stale ALLOWED entry lambdas/f/handler.py GetModelImportJob.modelArn"]


# The reads commit 4bdc41a fixed, as they stood before it (abridged from 4bdc41a^).
_BEFORE_4BDC41A = {
    "lambdas/level3_finetune/finetune_cleanup/handler.py": """
bedrock = client_factory("bedrock")
def stop_jobs(scope, deadline):
    for summary in list(pages(bedrock().list_model_customization_jobs, "modelCustomizationJobSummaries")):
        job = bedrock().get_model_customization_job(jobIdentifier=summary["jobArn"])
        if job["status"] == "InProgress":
            pass
    def still_running():
        return [n for a, n in ours.items() if bedrock().get_model_customization_job(jobIdentifier=a)["status"] in B]
""",
    "lambdas/level3_finetune/sagemaker_cleanup/handler.py": """
bedrock = client_factory("bedrock")
def wait_for_imports(scope, deadline):
    def in_progress():
        return [n for a, n in ours.items() if bedrock().get_model_import_job(jobIdentifier=a)["status"] == "InProgress"]
""",
    "kit/level3_finetune.py": """
def _sm_jobs(target, name):
    bedrock = target.client("bedrock")
    imported = bedrock.get_model_import_job(jobIdentifier=name)
    rows.append(("Import job", str(imported["status"])))
    model = bedrock.get_imported_model(modelIdentifier=name)
    rows.append(("Imported model", str(model["modelArn"])))
def check_customization(target, kind):
    answer = target.client("bedrock").list_foundation_models(byCustomizationType=kind)
    listed = [m for m in answer["modelSummaries"] if str(m["modelId"]) in ids]
""",
}


def test_the_guard_reports_the_reads_4bdc41a_fixed() -> None:
    reads = answer_reads(_BEFORE_4BDC41A)
    assert [f"{Path(r.path).parent.name}:{r.line} {r.label}" for r in reads if not r.safe] == [
        "kit:5 GetModelImportJob.status",
        "kit:7 GetImportedModel.modelArn",
        "kit:10 ListFoundationModels.modelSummaries",
        "finetune_cleanup:6 GetModelCustomizationJob.status",
        "finetune_cleanup:9 GetModelCustomizationJob.status",
        "sagemaker_cleanup:5 GetModelImportJob.status",
    ]
