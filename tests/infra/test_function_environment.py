"""Every environment variable a function's code requires is set on that function in the template.

Required variables are found from the code: ``env_str("NAME")`` without a default, ``env_matching("NAME", ...)``
and ``os.environ["NAME"]``. A variable the code needs but the stack does not set fails every call at run time
with a configuration error, which no template assertion or handler test (which sets its own environment) sees.
"""

from __future__ import annotations

import ast
import functools
from typing import Any

from tests.infra.test_permission_closure import _sources, kit_functions


@functools.cache  # every variant's functions run the same code: read it once per run
def required_variables(package: str) -> frozenset[str]:
    found = set()
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                first = node.args[0] if node.args else None
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                if (name == "env_str" and len(node.args) == 1 and not node.keywords) or name == "env_matching":
                    found.add(first.value)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target = node.value
                if isinstance(target, ast.Attribute) and target.attr == "environ" and isinstance(node.ctx, ast.Load):
                    found.add(str(node.slice.value))
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
