"""Every environment variable a function's code requires is set on that function in the template.

Required variables are found from the code: ``env_str("NAME")`` without a default, ``env_matching("NAME", ...)``,
any helper of ``common.env`` that reads its argument with ``env_str`` alone (``env_json_object``), and
``os.environ["NAME"]``; a NAME may be a module-level string constant of the same file. A variable the code needs
but the stack does not set fails every call at run time with a configuration error, which no template assertion or
handler test (which sets its own environment) sees.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from typing import Any

from tests.conftest import ROOT
from tests.infra.test_permission_closure import _sources, kit_functions


@functools.cache
def required_readers() -> frozenset[str]:
    """The helpers of common.env that fail without their variable: they pass their first parameter to env_str
    alone (no default)."""
    from stacks.shared.python_function import package_dir

    readers = set()
    for node in ast.walk(ast.parse((package_dir("common") / "env.py").read_text())):
        if isinstance(node, ast.FunctionDef) and node.args.args:
            parameter = node.args.args[0].arg
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and getattr(call.func, "id", "") == "env_str"
                    and len(call.args) == 1
                    and not call.keywords
                    and getattr(call.args[0], "id", None) == parameter
                ):
                    readers.add(node.name)
    return frozenset(readers)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments of one file."""
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _is_none(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


@functools.cache  # every variant's functions run the same code: read it once per run
def required_variables(package: str) -> frozenset[str]:
    found = set()
    for path in _sources(package):
        tree = ast.parse(path.read_text())
        constants = _string_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    variable = first.value
                elif isinstance(first, ast.Name) and first.id in constants:
                    variable = constants[first.id]
                else:
                    continue
                alone = len(node.args) == 1 and not node.keywords
                # env_int / env_float take the default second: None makes the variable required
                no_default = name in {"env_int", "env_float"} and _is_none(node.args[1] if len(node.args) > 1 else None)
                if (
                    (name == "env_str" and alone)
                    or name == "env_matching"
                    or (name in required_readers() and alone)
                    or no_default
                ):
                    found.add(variable)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, (ast.Constant, ast.Name)):
                target, key = node.value, node.slice
                name = str(key.value) if isinstance(key, ast.Constant) else constants.get(key.id)
                environ = isinstance(target, ast.Attribute) and target.attr == "environ"
                if environ and isinstance(node.ctx, ast.Load) and name:
                    found.add(name)
    return frozenset(found)


def test_every_required_variable_is_set(each_stage: Any) -> None:
    missing = []
    for stack_id, template in each_stage.templates.items():
        for lid, package, _ in kit_functions(template):
            variables = template["Resources"][lid]["Properties"].get("Environment", {}).get("Variables", {})
            missing += [
                f"{stack_id}/{lid} ({package}) lacks {name}"
                for name in sorted(required_variables(package) - set(variables))
            ]
    assert missing == []


def test_required_variables_are_found_from_the_code() -> None:
    assert {"KNOWLEDGE_BASE_ID", "VECTOR_STORE", "MODEL_ARN"} <= required_variables("rag_api")
    assert "env_json_object" in required_readers()
    # read through env_json_object(CATALOG_VAR), a constant of prompt_api/settings.py (before: not found)
    assert "PROMPT_CATALOG" in required_variables("prompt_api")
    # read with env_int / env_float and no default (before: not found)
    assert {"DEFAULT_MAX_TOKENS", "DEFAULT_TEMPERATURE"} <= required_variables("prompt_api")
    assert {"DEFAULT_NUMBER_OF_RESULTS", "ANSWER_MAX_TOKENS"} <= required_variables("rag_api")
    assert "MAX_MESSAGES_PER_RUN" not in required_variables("rag_ingest")  # it has a default
    # os.environ[QUOTA_CODE_ENV], a constant of the handler (before: not found)
    assert "IMPORTED_MODELS_QUOTA_CODE" in required_variables("sagemaker_validate")


# Each function's service is named once, by its stack (POWERTOOLS_SERVICE_NAME); its logger reads it from there. A
# handler that names its own service writes log records under another name than the one the stack set and its
# metrics carry: one handler serves two functions (Level 3's teardown sweeps for Bedrock and SageMaker).
_LOGGER_SERVICES = """
import importlib, json, os, sys
services = {}
for module, service in json.loads(sys.argv[1]):
    os.environ["POWERTOOLS_SERVICE_NAME"] = service
    loaded = sys.modules.get(module)
    loaded = importlib.reload(loaded) if loaded else importlib.import_module(module)
    services[f"{module} {service}"] = loaded.logger.service
print(json.dumps(services))
"""


def test_each_functions_logger_carries_the_service_its_stack_names(
    sandbox: Any, sandbox_fsx: Any, sandbox_oss: Any
) -> None:
    pairs = sorted(
        {
            (
                resource["Properties"]["Handler"].rsplit(".", 1)[0],
                resource["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"],
            )
            for synth in (sandbox, sandbox_fsx, sandbox_oss)
            for template in synth.templates.values()
            for lid, _, _ in kit_functions(template)
            for resource in [template["Resources"][lid]]
        }
    )
    # every handler of the kit runs in these variants, one of them (the teardown sweep) in two functions
    handlers = {f"{path.parent.name}.handler" for path in (ROOT / "lambdas").glob("*/*/handler.py")}
    assert {module for module, _ in pairs} == handlers
    assert len(pairs) > len(handlers)
    out = subprocess.run(
        [sys.executable, "-c", _LOGGER_SERVICES, json.dumps(pairs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    ).stdout
    assert json.loads(out) == {f"{module} {service}": service for module, service in pairs}


def test_every_kit_custom_resource_gives_the_properties_its_handler_requires(each_stage: Any) -> None:
    # A handler that lists PROPERTIES refuses an event without any of them (stack_cleanup.require_properties): a
    # property the stack names otherwise would fail the stack's create, or worse its delete, in the account.
    import importlib

    checked, missing = 0, []
    for stack_id, template in each_stage.templates.items():
        functions = {lid: package for lid, package, _ in kit_functions(template)}
        for lid, resource in template["Resources"].items():
            token = resource["Properties"].get("ServiceToken", {}) if resource["Type"].startswith("Custom::") else {}
            package = functions.get(token.get("Fn::GetAtt", [None])[0]) if isinstance(token, dict) else None
            required = getattr(importlib.import_module(f"{package}.handler"), "PROPERTIES", ()) if package else ()
            if required:
                checked += 1
                missing += [f"{stack_id}/{lid} lacks {name}" for name in required if name not in resource["Properties"]]
    assert checked >= 1
    assert missing == []
