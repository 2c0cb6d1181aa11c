"""The IAM actions each ``kit`` command group calls with the operator's credentials, derived from the code: the
group's commands, the definitions they use in their module, and the kit helpers those use (kit/operator.py,
kit/aws.py, kit/sigv4.py), read with ``ast`` the way tests/infra/test_permission_closure.py reads the Lambda code
and kit doctor's. Each level module's ``OPERATOR_ACTIONS`` (the README's "Operator permissions") must match."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

import click
import pytest

from kit import level1_prompt, level2_rag, level3_finetune, level4_pretrain, sigv4
from tests.conftest import ROOT
from tests.infra.test_permission_closure import calls_in_code, used_definitions

KIT = Path(level1_prompt.__file__).resolve().parent
# boto3's managed S3 transfers are methods boto3 adds to the client, not botocore operations; IAM authorizes the
# PutObject or multipart upload they make with s3:PutObject:
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html#mpuAndPermissions
S3_TRANSFERS = {"upload_file": "s3:PutObject", "upload_fileobj": "s3:PutObject"}
# kit/sigv4.py signs requests to the kit's IAM-authorized REST APIs: execute-api:Invoke on each route.
SIGNED_API = f"{sigv4.SERVICE}:Invoke"
GROUPS: Mapping[str, ModuleType] = {
    "l1": level1_prompt,
    "l2": level2_rag,
    "l3": level3_finetune,
    "l3sm": level3_finetune,
    "l4": level4_pretrain,
}


def _kit_imports(nodes: Iterable[ast.AST]) -> tuple[dict[str, tuple[Path, str]], dict[str, Path]]:
    """(name -> (kit module, name) for ``from kit.x import name``, alias -> kit module for ``from kit import x``),
    of the import statements among ``nodes``."""
    names: dict[str, tuple[Path, str]] = {}
    modules: dict[str, Path] = {}
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "kit":
                modules.update((a.asname or a.name, KIT / f"{a.name}.py") for a in node.names)
            elif node.module.startswith("kit."):
                path = KIT / f"{node.module.split('.', 1)[1]}.py"
                names.update((a.asname or a.name, (path, a.name)) for a in node.names)
    return names, modules


def _top_level(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return found


def group_code(module: ModuleType, group: str) -> dict[Path, list[ast.stmt]]:
    """The code the commands of click group ``group`` run, per kit file: the definitions they use, followed into
    the kit modules they import from."""
    path = Path(str(module.__file__)).resolve()
    tree = ast.parse(path.read_text())
    entries = {group}
    for node in tree.body:  # @<group>.command(...)
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
                    continue
                if func.attr == "command" and func.value.id == group:
                    entries.add(node.name)
    reached: dict[Path, list[ast.stmt]] = {}
    asked: set[tuple[Path, str]] = set()  # each definition followed once (modules may import each other)
    todo = [(path, entries)]
    while todo:
        file, wanted = todo.pop()
        asked |= {(file, name) for name in wanted}
        tree = ast.parse(file.read_text())
        definitions = used_definitions(tree, wanted)
        known = reached.setdefault(file, [])
        known += [d for d in definitions if all(d is not k for k in known)]
        # The module's imports, and those a definition makes in its body (the kit imports lazily, to start fast)
        inner = (node for definition in definitions for node in ast.walk(definition))
        names, modules = _kit_imports([*tree.body, *inner])
        more: dict[Path, set[str]] = {}
        for definition in definitions:
            for part in ast.walk(definition):
                if isinstance(part, ast.Name) and part.id in names:
                    more.setdefault(names[part.id][0], set()).add(names[part.id][1])
                elif isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id in modules:
                    more.setdefault(modules[part.value.id], set()).add(part.attr)
        for other, used in more.items():
            if other.is_file():
                new = {name for name in used & _top_level(ast.parse(other.read_text())) if (other, name) not in asked}
                if new:
                    todo.append((other, new))
    return reached


def derived_actions(module: ModuleType, group: str) -> set[str]:
    code = group_code(module, group)
    trees: list[ast.AST] = [definition for definitions in code.values() for definition in definitions]
    actions = calls_in_code(trees)
    attributes = {node.attr for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    s3 = any(
        isinstance(node, ast.Constant) and node.value == "s3" for tree in trees for node in ast.walk(tree)
    )  # an s3 client
    actions |= {action for method, action in S3_TRANSFERS.items() if s3 and method in attributes}
    if KIT / "sigv4.py" in code:
        actions.add(SIGNED_API)
    return actions


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_command_group_lists_the_actions_its_code_calls(group: str) -> None:
    module = GROUPS[group]
    listed = set(module.OPERATOR_ACTIONS[group])
    assert sorted(derived_actions(module, group) ^ listed) == []
    implied = getattr(module, "OPERATOR_IMPLIED", {}).get(group, {})
    assert not set(implied) & listed and all(implied.values())


def test_every_group_of_the_cli_has_a_table() -> None:
    from kit.cli import cli

    groups = {name for name, command in cli.commands.items() if isinstance(command, click.Group)}
    assert groups == set(GROUPS)


def test_a_call_a_command_reaches_through_a_kit_helper_is_found() -> None:
    # What would make the first test fail: a command reaching a new call through kit/operator.py (here the
    # upload), or a table that lists a call no command makes.
    assert "s3:PutObject" in derived_actions(level3_finetune, "l3")
    assert "s3:PutObject" not in derived_actions(level4_pretrain, "l4")
    assert SIGNED_API in derived_actions(level1_prompt, "l1")
    assert "bedrock:ListFoundationModels" not in derived_actions(level3_finetune, "l3")  # the doctor's, not l3's
    assert "sagemaker:DescribeTrainingJob" in derived_actions(level3_finetune, "l3sm")


def operator_permissions_markdown() -> str:
    """The README's "Operator permissions" table, rendered from the level modules' tables."""
    lines = ["| Commands | IAM actions |", "| --- | --- |"]
    for group, module in GROUPS.items():
        actions = [f"`{action}`" for action in module.OPERATOR_ACTIONS[group]]
        implied = getattr(module, "OPERATOR_IMPLIED", {}).get(group, {})
        actions += [f"`{action}` ({why})" for action, why in implied.items()]
        lines.append(f"| `kit {group}` | {', '.join(actions)} |")
    return "\n".join(lines)


def test_the_readme_lists_each_groups_permissions() -> None:
    assert operator_permissions_markdown() in (ROOT / "README.md").read_text()


def _actions_named(text: str) -> set[str]:
    """The ``service:Action`` names in ``text``."""
    return set(re.findall(r"\b([a-z0-9-]+:[A-Z][A-Za-z0-9]+)\b", text))


def test_kit_doctor_names_the_actions_its_code_calls() -> None:
    """The doctor's list (its help and the README's step 0) was written by hand; it reaches the level modules'
    checks through an import in a function body, which the derivation now follows."""
    from kit import doctor

    derived = derived_actions(doctor, "doctor")
    assert {"ec2:DescribeVpcs", "bedrock:ListImportedModels"} <= derived  # in level4_pretrain / level3_finetune
    readme = (ROOT / "README.md").read_text()
    step0 = readme[readme.index("0. Run `.venv/bin/kit doctor`") :].split("\n1. ", 1)[0]
    help_text = str(doctor.doctor.help)
    listed = help_text[help_text.index("Read-only IAM actions it calls:") :].split("\n\n", 1)[0]
    assert sorted(_actions_named(step0) ^ derived) == []
    assert sorted(_actions_named(listed) ^ derived) == []
