"""How the kit's code is packaged: importable by name through the editable install (no sys.path patching),
and each Lambda function's asset holding its own package plus the shared code, nothing else."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

import aws_cdk as cdk
import pytest

from kit import KitError
from kit.templates import importable_checkout
from stacks.shared import python_function
from stacks.shared.python_function import SHARED_PACKAGES, PythonFunction, function_package
from tests.conftest import ROOT, Synth
from tests.infra.helpers import resources
from tests.infra.test_config import build

LAMBDAS = ROOT / "lambdas"
# The kit's own code, as the issue names it: none of it may patch the import path. Standalone scripts are no
# exception: scripts/ runs with the venv's interpreter, which imports the kit through the editable install, and
# workloads/pretrain runs in the training container from its own folder, which Python puts on the path itself.
KIT_CODE = ("app.py", "stacks", "kit", "lambdas", "scripts", "workloads")
# Top-level names of the kit's own code outside lambdas/: a function importing one of these cannot work in Lambda.
ROOT_PACKAGES = ("app", "kit", "stacks", "scripts", "workloads", "tests")
_PATH_MUTATORS = {"append", "insert", "extend", "remove", "pop", "clear", "__setitem__", "__iadd__"}


def lambda_folders() -> dict[str, Path]:
    """Every Lambda package by import name: lambdas/common, and each function under its level's folder."""
    found = [p.parent for p in (*LAMBDAS.glob("*/__init__.py"), *LAMBDAS.glob("*/*/__init__.py"))]
    assert len({p.name for p in found}) == len(found), f"two Lambda packages share a name: {sorted(found)}"
    return {p.name: p for p in sorted(found)}


def lambda_packages() -> list[str]:
    return sorted(lambda_folders())


def test_function_packages_sit_in_their_levels_folder() -> None:
    """lambdas/ holds the shared packages and one folder per level; no function package at the top."""
    for name, folder in lambda_folders().items():
        if name in SHARED_PACKAGES:
            assert folder.parent == LAMBDAS, name
        else:
            assert folder.parent.name in LEVELS and folder.parent.parent == LAMBDAS, folder


# --- no sys.path patching -----------------------------------------------------------------------------------


def _is_sys_path(node: ast.AST) -> TypeGuard[ast.Attribute]:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def path_patches(source: str) -> list[int]:
    """Lines of ``source`` that change the import path: sys.path assigned, sliced, extended, inserted into..."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            lines.append(node.lineno)  # `from sys import path` would hide later patches from the checks below
        elif isinstance(node, ast.Attribute) and node.attr == "addsitedir":
            lines.append(node.lineno)  # site.addsitedir(...) is a path patch too
        elif _is_sys_path(node):
            parent = parents.get(node)
            stored = isinstance(node.ctx, ast.Store | ast.Del)
            sliced = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del)
            mutated = (
                isinstance(parent, ast.Attribute)
                and parent.attr in _PATH_MUTATORS
                and isinstance(parents.get(parent), ast.Call)
            )
            if stored or sliced or mutated:
                lines.append(node.lineno)
    return sorted(lines)


def kit_sources() -> Iterator[Path]:
    for entry in KIT_CODE:
        path = ROOT / entry
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize(
    ("source", "patched"),
    [
        ("import sys\nsys.path.insert(0, 'x')", True),
        ("import sys\nsys.path.append('x')", True),
        ("import sys\nsys.path[:0] = ['x']", True),
        ("import sys\nsys.path = ['x']", True),
        ("import sys\nsys.path += ['x']", True),
        ("from sys import path", True),
        ("import site\nsite.addsitedir('x')", True),
        ("import sys\nprint(sys.path)", False),
        ("code = 'import sys; sys.path.insert(0, 1)'", False),
        ("import os\nos.path.join('a', 'b')", False),
    ],
)
def test_the_patch_finder_finds_every_form_of_patch(source: str, patched: bool) -> None:
    assert bool(path_patches(source)) is patched


def test_no_kit_code_patches_the_import_path() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in kit_sources()
        if (lines := path_patches(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"sys.path patched (make the package importable in pyproject.toml instead): {found}"


def test_every_lambda_package_is_installed_from_its_folder() -> None:
    """pyproject.toml maps each package under lambdas/ to its folder: a new function package must be added there."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {
        name: str(folder.relative_to(ROOT)) for name, folder in lambda_folders().items()
    }
    declared = set(setuptools["packages"])
    assert set(lambda_packages()) <= declared
    for top in ("kit", "stacks", "scripts", "workloads"):  # and every subpackage, for a non-editable build too
        folders = {p.parent for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
        assert {".".join(f.relative_to(ROOT).parts) for f in folders} <= declared
    assert setuptools["py-modules"] == ["app"]


def test_the_install_imports_every_kit_package_from_its_folder(tmp_path: Path) -> None:
    """From any folder and without PYTHONPATH, as the `kit` console script and the scripts run."""
    expected = {
        **lambda_folders(),
        "app": ROOT / "app.py",
        "kit": ROOT / "kit",
        "stacks": ROOT / "stacks",
        "stacks.shared": ROOT / "stacks" / "shared",
        "scripts": ROOT / "scripts",
        "workloads": ROOT / "workloads",
        "workloads.pretrain": ROOT / "workloads" / "pretrain",
        "finetune_validate.formats": lambda_folders()["finetune_validate"] / "formats.py",
    }
    code = (
        "import importlib.util, json, sys\n"
        "def where(name):\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    if spec is None: return None\n"
        "    folders = spec.submodule_search_locations\n"
        "    return spec.origin if folders is None else list(folders)[0]\n"
        "print(json.dumps({name: where(name) for name in sys.argv[1:]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code, *expected], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    missing = {name: where for name, where in found.items() if where is None or Path(where) != expected[name]}
    assert missing == {}, f"not imported from the checkout (re-run make setup after editing pyproject.toml): {missing}"


def test_the_cli_refuses_a_checkout_it_does_not_import(tmp_path: Path) -> None:
    """The console script imports the installed checkout: run in another one, it says so instead of mixing them."""
    assert importable_checkout(ROOT) == ROOT
    other = tmp_path / "other-checkout"
    other.mkdir()
    with pytest.raises(KitError, match=f"kit runs in {other} but imports the app from the checkout {ROOT}"):
        importable_checkout(other)


# --- each function ships its own code -----------------------------------------------------------------------


def _functions(synth: Synth) -> Iterator[tuple[str, str, Path]]:
    """(logical id, handler, asset folder) of every kit function (not the CDK's own) in every stack."""
    packages = set(lambda_packages())
    for template in synth.templates.values():
        for logical_id, function in resources(template, "AWS::Lambda::Function").items():
            props = function["Properties"]
            if props.get("Handler", "").split(".")[0] in packages:
                key = props["Code"]["S3Key"]
                yield logical_id, props["Handler"], synth.assembly_dir / f"asset.{key.removesuffix('.zip')}"


@pytest.fixture(scope="module")
def functions(sandbox_fsx: Synth, sandbox_oss: Synth) -> list[tuple[str, str, Path]]:
    """Every kit function: the fsx variant has all but the OpenSearch waiter, which the oss variant has."""
    return [*_functions(sandbox_fsx), *_functions(sandbox_oss)]


def test_every_function_package_is_deployed_somewhere(functions: list[tuple[str, str, Path]]) -> None:
    deployed = {handler.split(".")[0] for _, handler, _ in functions}
    assert deployed == set(lambda_packages()) - set(SHARED_PACKAGES)


def test_a_function_asset_holds_its_package_and_the_shared_code_only(functions: list[tuple[str, str, Path]]) -> None:
    for logical_id, handler, asset in functions:
        package = handler.split(".")[0]
        own = {package, *SHARED_PACKAGES}
        top = {p.name for p in asset.iterdir()}
        # Besides its package and the shared code, an asset may carry named modules of the kit or of another
        # function's package (stage_function_code's ``modules``): each a .py file byte-identical to the kit's own, at
        # the same import path.
        assert own <= top and top - own <= set(ROOT_PACKAGES) | set(lambda_folders()), (logical_id, sorted(top))
        extras = [
            p.relative_to(asset) for p in asset.rglob("*") if p.is_file() and p.relative_to(asset).parts[0] not in own
        ]
        for extra in extras:
            home = lambda_folders()[extra.parts[0]].parent if extra.parts[0] in lambda_folders() else ROOT
            assert extra.suffix == ".py" and (asset / extra).read_bytes() == (home / extra).read_bytes(), (
                logical_id,
                extra,
            )
        shipped = sorted(
            str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file() and p.relative_to(asset).parts[0] in own
        )
        source = sorted(
            str(p.relative_to(lambda_folders()[name].parent))
            for name in (package, *SHARED_PACKAGES)
            for p in lambda_folders()[name].rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        assert shipped == source, logical_id
        module, _, attribute = handler.rpartition(".")
        tree = ast.parse((asset / Path(*module.split("."))).with_suffix(".py").read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        assert attribute in names, f"{logical_id}: {handler} is not defined in its asset"


def test_functions_of_different_packages_get_different_assets(functions: list[tuple[str, str, Path]]) -> None:
    assets: dict[str, set[str]] = {}
    for _, handler, asset in functions:
        assets.setdefault(handler.split(".")[0], set()).add(asset.name)
    assert all(len(names) == 1 for names in assets.values()), assets  # one package, one asset
    assert len({next(iter(names)) for names in assets.values()}) == len(assets), assets


def unshipped_imports(asset: Path) -> dict[str, set[str]]:
    """Kit packages the asset's modules import (at any depth, lazily or not) that the asset does not hold."""
    kit_names = {*lambda_packages(), *ROOT_PACKAGES}
    shipped = {p.name for p in asset.iterdir()}
    missing: dict[str, set[str]] = {}
    for path in asset.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names} & kit_names - shipped:
                missing.setdefault(str(path.relative_to(asset)), set()).add(top)
    return missing


def test_the_import_check_finds_a_package_left_out(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "errors.py").write_text("import json\n")
    (tmp_path / "rag_api").mkdir()
    (tmp_path / "rag_api" / "handler.py").write_text(
        "from common.errors import x\nfrom . import y\n\ndef f():\n    from prompt_api import bedrock\n"
        "    import stacks.config\n"
    )
    assert unshipped_imports(tmp_path) == {"rag_api/handler.py": {"prompt_api", "stacks"}}


def test_every_kit_import_of_a_function_is_inside_its_asset(functions: list[tuple[str, str, Path]]) -> None:
    for logical_id, _, asset in functions:
        assert unshipped_imports(asset) == {}, logical_id


def _asset_keys(lambdas_dir: Path, monkeypatch: pytest.MonkeyPatch, outdir: Path) -> dict[str, str]:
    """The S3 key of each function's asset, with lambdas/ read from ``lambdas_dir``."""
    monkeypatch.setattr(python_function, "LAMBDAS_DIR", lambdas_dir)
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "Functions", env=cdk.Environment(region="us-east-1"))
    deployment = build().deployment
    for package in ("prompt_api", "finetune_validate"):
        PythonFunction(
            stack,
            package,
            deployment=deployment,
            handler=f"{package}.handler.handler",
            description=package,
            service_name="t",
        )
    template = app.synth().get_stack_artifact(stack.artifact_id).template
    found: dict[str, Any] = {}
    for function in resources(template, "AWS::Lambda::Function").values():
        found[function["Properties"]["Handler"].split(".")[0]] = function["Properties"]["Code"]["S3Key"]
    return found


def test_editing_one_package_changes_only_its_function_asset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copies = {}
    for state in ("before", "validator", "common"):
        copies[state] = tmp_path / state / "lambdas"
        shutil.copytree(LAMBDAS, copies[state], ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    validator = lambda_folders()["finetune_validate"].relative_to(LAMBDAS)
    with (copies["validator"] / validator / "formats.py").open("a") as handle:
        handle.write("# an edit\n")
    with (copies["common"] / "common" / "errors.py").open("a") as handle:
        handle.write("# an edit\n")
    keys = {state: _asset_keys(path, monkeypatch, tmp_path / f"out-{state}") for state, path in copies.items()}

    assert keys["before"]["prompt_api"] != keys["before"]["finetune_validate"]
    # the Level 3 validator changed: its function is redeployed, the Level 1 function is not
    assert keys["validator"]["prompt_api"] == keys["before"]["prompt_api"]
    assert keys["validator"]["finetune_validate"] != keys["before"]["finetune_validate"]
    # the shared code changed: every function carries it
    assert keys["common"]["prompt_api"] != keys["before"]["prompt_api"]
    assert keys["common"]["finetune_validate"] != keys["before"]["finetune_validate"]


@pytest.mark.parametrize("handler", ["common.errors.handler", "nosuch.handler.handler", "handler"])
def test_a_handler_must_name_a_function_package(handler: str) -> None:
    with pytest.raises(ValueError, match="names no function package"):
        function_package(handler)


# --- one folder per level ----------------------------------------------------------------------------------

LEVELS = ("level0_account", "level1_prompt", "level2_rag", "level3_finetune", "level4_pretrain")


def test_each_level_has_one_folder_of_one_name_in_each_top_level_directory() -> None:
    """stacks/, lambdas/ (levels with functions), tests/ and docs/ name each level the same way; kit/ too,
    for the levels with operator commands; no other level-named entry exists anywhere at those places."""
    for level in LEVELS:
        number, name = level.split("_", 1)
        assert (ROOT / "stacks" / level / "__init__.py").is_file(), level
        assert (ROOT / "tests" / level / "__init__.py").is_file(), level
        assert (ROOT / "docs" / f"level-{number.removeprefix('level')}-{name}.md").is_file(), level
    found = {
        entry.relative_to(ROOT).parts[0] + "/" + entry.name
        for top in ("stacks", "lambdas", "tests", "kit")
        for entry in (ROOT / top).iterdir()
        if entry.name.startswith("level")
    }
    allowed = {f"{top}/{level}" for top in ("stacks", "lambdas", "tests") for level in LEVELS}
    allowed |= {f"kit/{level}.py" for level in LEVELS}
    assert found <= allowed, sorted(found - allowed)
    assert not list((ROOT / "stacks").glob("level*.py")), "a level's stack code belongs in stacks/<level>/"


def test_the_readme_level_map_names_folders_that_exist() -> None:
    """Every path the README's level table names exists: the map a newcomer reads is the layout on disk."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| Level | `stacks/` |") :].split("\n\n", 1)[0].splitlines()[2:]
    assert len(table) == len(LEVELS)
    tops = ("stacks", "lambdas", "tests", "kit", "docs")
    for row, level in zip(table, LEVELS, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        for top, cell in zip(tops, cells, strict=True):
            named = re.findall(r"`([^`]+)`", cell)
            paths = [name for name in named if not name.startswith("kit ")]
            if top == "lambdas" and "(" in cell and paths and paths[0].endswith("/"):
                paths = [paths[0]] + [paths[0] + p for p in paths[1:]]  # `level2_rag/` (`rag_api/`, ...)
            for path in paths:
                assert (ROOT / top / path).exists(), f"README names {top}/{path} for {level}"
            if top in ("stacks", "tests"):
                assert paths == [f"{level}/"], row


def test_the_readme_names_every_stack_module_and_script() -> None:
    """The prose under the level map names each module of a level's stacks/ folder and each script, so a file added
    later is either described there or this fails."""
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`([\w./]+\.py)`", readme))
    files = [*ROOT.glob("stacks/level*/*.py"), *ROOT.glob("scripts/*.py")]
    missing = sorted(str(f.relative_to(ROOT)) for f in files if f.name != "__init__.py" and f.name not in named)
    assert len(files) > 30 and missing == []
