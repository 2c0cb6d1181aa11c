"""What CloudFormation's resource type schemas say, read from the copy cfn-lint ships (no hand-kept lists).

Two uses:
- ``name_findings``: every literal string the kit writes into a template must satisfy the pattern and the
  length limits of its property in the registry schema. Names the kit computes from configuration
  (``<name_prefix>-<stage>-kb``, instance group names, tag values) would otherwise pass synth, cdk-nag and
  the kit's own tests and fail at deploy time. A finding names the configuration key whose value is in the
  string, so ``app.py`` can report it like any other config mistake.
- ``create_only_paths``: the properties whose change makes CloudFormation replace the resource (the
  update-safety tests read them).
- ``unavailable_types``: the resource types a region's registry does not offer. cfn-lint ships one index of
  types per region; a stack with a type its region lacks would fail at deploy ("Unrecognized resource
  types"), so ``app.py`` marks that stack with an error naming ``region`` (``cdk deploy`` of the others works).

Schemas: https://docs.aws.amazon.com/cloudformation-cli/latest/userguide/resource-type-schema.html
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex  # the schemas use ECMA-262 classes such as \p{L}, which the standard re module lacks

SCHEMA_REGION = "us-east-1"


@functools.cache
def _schema_folder() -> Path:
    """cfn-lint's bundled schema folder, found without importing cfn-lint (its import costs about 0.8 s of every
    synth; test_schema_names holds the two readings equal)."""
    spec = importlib.util.find_spec("cfnlint")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cfn-lint is not installed: it ships the CloudFormation registry schemas the kit reads")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "schemas"


def _index_file(region: str) -> Path:
    return _schema_folder() / "providers" / f"{region}.json"


@functools.cache
def _provider_index(region: str) -> Mapping[str, str] | None:
    """The registry's resource types in ``region`` (type -> schema file), or None for a region cfn-lint has no
    index of."""
    path = _index_file(region)
    if not path.is_file():
        return None
    index: Mapping[str, str] = json.loads(path.read_text())
    return index


def _bundled_schemas() -> tuple[Path, Mapping[str, str]]:
    """The schema files and the type -> file index of SCHEMA_REGION."""
    index = _provider_index(SCHEMA_REGION)
    assert index is not None, SCHEMA_REGION
    return _schema_folder() / "resources", index


@functools.cache
def _aws_partition() -> Mapping[str, Any]:
    """The ``aws`` partition of botocore's endpoint data: its regions, and each service's regional endpoints."""
    from botocore.loaders import create_loader

    partitions = create_loader().load_data("endpoints")["partitions"]
    found: Mapping[str, Any] = next(p for p in partitions if p["partition"] == "aws")
    return found


@functools.cache
def registry_regions() -> tuple[str, ...]:
    """The regions the kit deploys to: those of the ``aws`` partition (botocore's endpoint data) that cfn-lint
    has a resource-type index of. The kit's ARNs and its Powertools layer are the ``aws`` partition's."""
    return tuple(sorted(region for region in _aws_partition()["regions"] if _index_file(region).is_file()))


def service_regions(service: str) -> tuple[str, ...]:
    """The ``aws`` partition's regions where ``service`` (botocore's endpoint prefix) has an endpoint."""
    return tuple(sorted(_aws_partition()["services"].get(service, {}).get("endpoints", {})))


def unavailable_types(region: str, types: Iterable[str]) -> list[str]:
    """The ``AWS::`` resource types of ``types`` that CloudFormation does not offer in ``region``."""
    index = _provider_index(region) or {}
    # AWS::CDK::Metadata is the CDK's own, added at synth where a region supports it.
    return sorted({t for t in types if t.startswith("AWS::") and not t.startswith("AWS::CDK::") and t not in index})


def regions_offering(types: Iterable[str]) -> list[str]:
    """The kit's regions (:func:`registry_regions`) that offer every one of ``types``."""
    wanted = list(types)
    return [region for region in registry_regions() if not unavailable_types(region, wanted)]


@functools.cache
def resource_schema(resource_type: str) -> Mapping[str, Any] | None:
    """The registry schema of ``resource_type``, or None for custom resources and unknown types."""
    if not resource_type.startswith("AWS::"):
        return None
    resources, index = _bundled_schemas()
    schema_id = index.get(resource_type)
    if schema_id is None:
        return None
    loaded: Mapping[str, Any] = json.loads((resources / f"{schema_id}.json").read_text(encoding="utf-8"))
    return loaded


def create_only_paths(resource_type: str) -> tuple[tuple[str, ...], ...]:
    """``createOnlyProperties`` as key paths below Properties, e.g. ``("VectorIngestionConfiguration", ...)``."""
    schema = resource_schema(resource_type) or {}
    return tuple(
        tuple(path.split("/")[2:]) for path in schema.get("createOnlyProperties", []) if path.startswith("/properties/")
    )


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while "$ref" in node and seen < 20:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return {}
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target.get(part, {})
        node, seen = target, seen + 1
    return node


def _alternatives(schema: Mapping[str, Any], node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The node and the branches of its oneOf / anyOf / allOf, each resolved."""
    node = _resolve(schema, node)
    found = [node]
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            found.extend(_alternatives(schema, branch))
    return found


@dataclass(frozen=True)
class StringRule:
    path: str
    pattern: str | None
    min_length: int | None
    max_length: int | None

    def problem(self, value: str) -> str | None:
        if self.min_length is not None and len(value) < self.min_length:
            return f"at least {self.min_length} characters"
        if self.max_length is not None and len(value) > self.max_length:
            return f"at most {self.max_length} characters"
        if self.pattern is not None:
            try:
                compiled = _compiled(self.pattern)
            except regex.error:
                return None  # a pattern this engine cannot read is not ours to judge
            if compiled.search(value) is None:
                return f"a value matching {self.pattern}"
        return None


@functools.cache
def _compiled(pattern: str) -> Any:
    return regex.compile(pattern)


def _string_values(
    schema: Mapping[str, Any], node: Mapping[str, Any], value: Any, path: str
) -> Iterator[tuple[str, str, StringRule]]:
    """(path, value, rule) for every literal string in ``value`` whose schema node has a string rule."""
    branches = _alternatives(schema, node)
    if isinstance(value, str):
        for branch in branches:
            if any(k in branch for k in ("pattern", "minLength", "maxLength")) and branch.get("type", "string") in (
                "string",
                ["string"],
            ):
                yield (
                    path,
                    value,
                    StringRule(path, branch.get("pattern"), branch.get("minLength"), branch.get("maxLength")),
                )
                return
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            for branch in branches:
                if "items" in branch:
                    yield from _string_values(schema, branch["items"], item, f"{path}[{index}]")
                    break
        return
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)).startswith(("Fn::", "Ref")):
            return  # an intrinsic: its value is known only at deploy time
        for key, item in value.items():
            for branch in branches:
                child = branch.get("properties", {}).get(key)
                if child is not None:
                    yield from _string_values(schema, child, item, f"{path}.{key}" if path else key)
                    break


@dataclass(frozen=True)
class NameFinding:
    stack_id: str
    logical_id: str
    resource_type: str
    path: str
    value: str
    allowed: str
    key: str | None  # the configuration key whose value the string carries, when one does

    def message(self, context: Mapping[str, Any]) -> str:
        where = f"{self.resource_type} {self.path} in {self.stack_id} ({self.logical_id})"
        if self.key is None:
            return f"config error: {where} = {self.value!r} is not allowed; expected {self.allowed}"
        return (
            f"config error: {self.key} = {_shown(context[self.key])} is not allowed; it makes {where} "
            f"{self.value!r}, and CloudFormation expects {self.allowed}"
        )


def _shown(value: Any) -> str:
    import json

    return repr(value) if isinstance(value, str) else json.dumps(value)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


def _key_for(value: str, rule: StringRule, context: Mapping[str, Any]) -> str | None:
    """The configuration key whose value makes ``value`` break ``rule``.

    A key is a culprit when putting a plain "a" where its value stands in the string satisfies the rule; among
    culprits (or, when none alone is one, among every key whose value appears) the longest value wins.
    """
    present: list[tuple[int, bool, str]] = []
    for key, raw in context.items():
        if "@" in key or ":" in key:
            continue  # CDK feature flags
        for leaf in _leaves(raw):
            if len(leaf) >= 2 and leaf in value:
                present.append((len(leaf), rule.problem(value.replace(leaf, "a")) is None, key))
    if not present:
        return None
    culprits = [p for p in present if p[1]] or present
    return max(culprits)[2]


def config_errors(findings: list[NameFinding], context: Mapping[str, Any]) -> list[str]:
    """One line per configuration key (with how many places it breaks), then one per unattributed finding."""
    lines: dict[str, str] = {}
    counts: dict[str, int] = {}
    for finding in findings:
        group = finding.key or f"{finding.stack_id}/{finding.logical_id}/{finding.path}"
        counts[group] = counts.get(group, 0) + 1
        lines.setdefault(group, finding.message(context))
    return [line if counts[g] == 1 else f"{line} (and {counts[g] - 1} more places)" for g, line in lines.items()]


def name_findings(templates: Mapping[str, Mapping[str, Any]], context: Mapping[str, Any]) -> list[NameFinding]:
    """Every literal string in the templates that its property's registry schema would refuse."""
    findings = []
    for stack_id, template in templates.items():
        for logical_id, resource in template.get("Resources", {}).items():
            schema = resource_schema(resource.get("Type", ""))
            if schema is None:
                continue
            root = {"properties": schema.get("properties", {})}
            for path, value, rule in _string_values(schema, root, resource.get("Properties", {}), ""):
                problem = rule.problem(value)
                if problem:
                    findings.append(
                        NameFinding(
                            stack_id, logical_id, resource["Type"], path, value, problem, _key_for(value, rule, context)
                        )
                    )
    return findings
