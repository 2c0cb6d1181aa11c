"""Every error code the functions and the gateway can emit is in the README's error contract.

Codes are read from the code (``code="..."`` keywords and ``*_code`` defaults in lambdas/, the gateway
responses in stacks/shared/rest_api.py), so a new code cannot ship undocumented.
"""

from __future__ import annotations

import ast
import re

from stacks.shared.python_function import package_dir
from stacks.shared.rest_api import _GATEWAY_ERRORS
from tests.conftest import ROOT

PACKAGES = ("common", "prompt_api", "rag_api")


def emitted_codes() -> set[str]:
    codes = {code for _, _, code, _ in _GATEWAY_ERRORS}
    for package in PACKAGES:
        for path in package_dir(package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                values = []
                if isinstance(node, ast.keyword) and node.arg in ("code", "default_code"):
                    values.append(node.value)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if any(getattr(t, "id", "").endswith(("code", "CODE")) for t in targets):
                        values.append(node.value)
                values += [v.value for v in values if isinstance(v, ast.IfExp)]
                codes |= {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return {code for code in codes if re.fullmatch(r"[a-z][a-z_]+", code)}


def test_every_emitted_code_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([a-z][a-z_]+)`", readme))
    codes = emitted_codes()
    assert {"template_not_found", "throttled", "model_timeout", "gateway_error"} <= codes  # the scan works
    assert sorted(codes - documented) == []


def test_each_error_class_has_its_status_in_the_readme_row_of_its_code() -> None:
    """Before: the function answered 413 for a body too large while the README row still said 400 (or the other
    way round): the status a code comes with is read from the error class, not restated."""
    from common import errors

    readme = (ROOT / "README.md").read_text()
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in readme.splitlines() if line.startswith("|")
    ]
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ApiError)]
    checked = 0
    for cls in classes:
        statuses = [row[-2] for row in rows if len(row) >= 3 and f"`{cls.default_code}`" in row[-1]]
        if not statuses:
            continue  # a generic code (internal_error, invalid_request) the README names in prose
        checked += 1
        assert any(str(cls.status) in status for status in statuses), (cls.__name__, cls.status, statuses)
    assert checked >= 10  # the scan reads the table
