"""Only a stack receives the whole configuration: constructs and helpers take narrow typed props.

A Stack class takes ``config: KitConfig`` and hands out the parts: ``config.deployment`` (the kit-wide values,
stacks/shared/deployment.py), its own level's settings (``config.rag``) or narrower values. A construct that took
the whole KitConfig could read any level's settings, so a change to one level's settings could reach into another
level's resources unseen. Read from the source (ast), so nothing is imported or synthesized.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

STACKS = ROOT / "stacks"
_KIT_CONFIG = re.compile(r"\bKitConfig\b")


def _is_stack(node: ast.ClassDef) -> bool:
    return any(ast.unparse(base).split(".")[-1] == "Stack" for base in node.bases)


def _params(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]


def whole_config_params(source: str, where: str) -> list[str]:
    """``where:line Owner.function(param)`` for every parameter annotated KitConfig, except a Stack's __init__."""
    found: list[str] = []

    def visit(node: ast.AST, owner: ast.ClassDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                allowed = owner is not None and child.name == "__init__" and _is_stack(owner)
                for param in _params(child):
                    annotation = ast.unparse(param.annotation) if param.annotation is not None else ""
                    if _KIT_CONFIG.search(annotation) and not allowed:
                        name = f"{owner.name}.{child.name}" if owner is not None else child.name
                        found.append(f"{where}:{child.lineno} {name}({param.arg}: {annotation})")
                visit(child, None)
            else:
                visit(child, owner)

    visit(ast.parse(source), None)
    return found


def stacks_taking_config(source: str) -> set[str]:
    """The Stack classes whose __init__ takes a KitConfig."""
    return {
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and _is_stack(node)
        for item in node.body
        if isinstance(item, ast.FunctionDef) and item.name == "__init__"
        if any(p.annotation is not None and _KIT_CONFIG.search(ast.unparse(p.annotation)) for p in _params(item))
    }


def _modules(root: Path) -> list[Path]:
    # stacks/config.py defines KitConfig; every other module under stacks/ is checked.
    return sorted(path for path in root.rglob("*.py") if path != root / "config.py")


def offenders(root: Path) -> list[str]:
    return [
        found
        for path in _modules(root)
        for found in whole_config_params(path.read_text(), str(path.relative_to(root.parent)))
    ]


def test_no_construct_or_helper_takes_the_whole_configuration() -> None:
    assert offenders(STACKS) == [], "take config.deployment, the level's settings or narrower values instead"


def test_the_stacks_are_what_receive_the_configuration() -> None:
    # The reader finds the stacks that legitimately take it, so the check above is not vacuous.
    found = set().union(*(stacks_taking_config(path.read_text()) for path in _modules(STACKS)))
    assert {
        "PromptEngineeringStack",
        "RagStack",
        "FineTuneStack",
        "PretrainClusterStack",
        "PretrainJobsStack",
        "InvocationLoggingStack",
    } <= found


def test_the_check_flags_a_construct_a_method_and_a_helper_that_take_it() -> None:
    source = """
class Store(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig) -> None: ...
    def grant(self, other: "KitConfig | None") -> None: ...

class LevelStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: KitConfig) -> None: ...
    def helper(self, config: KitConfig) -> None: ...

def log_group(scope: Construct, construct_id: str, config: KitConfig) -> None: ...
def fine(scope: Construct, deployment: Deployment) -> None: ...
"""
    assert [line.split(" ", 1)[1] for line in whole_config_params(source, "x.py")] == [
        "Store.__init__(config: KitConfig)",
        "Store.grant(other: 'KitConfig | None')",
        "LevelStack.helper(config: KitConfig)",
        "log_group(config: KitConfig)",
    ]
