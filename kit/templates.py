"""Get the kit's CloudFormation templates: synthesize the app in-process, or read an existing cloud assembly."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kit import KitError, KitUsageError

Template = dict[str, Any]


def repo_root(start: Path | None = None) -> Path:
    """The kit's checkout: the nearest folder holding cdk.json and app.py (from ``start`` or the cwd, upwards)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "cdk.json").is_file() and (folder / "app.py").is_file():
            return folder
    fallback = Path(__file__).resolve().parents[1]  # an editable install sits in the checkout
    if (fallback / "cdk.json").is_file() and (fallback / "app.py").is_file():
        return fallback
    raise KitError(f"no kit checkout found from {here}: run kit inside the genai-spectrum-kit folder")


def importable_checkout(root: Path) -> Path:
    """``root``, once it is the checkout Python imports app.py, stacks/ and lambdas/ from (the one make setup
    installed, or the current folder under ``python -m kit``); a KitError names both when they differ."""
    spec = importlib.util.find_spec("app")
    imported = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if imported != root.resolve():
        where = f"the checkout {imported}" if imported else "no checkout"
        raise KitError(
            f"kit runs in {root} but imports the app from {where}: run make setup in {root} "
            f"and use {root / '.venv' / 'bin' / 'kit'}"
        )
    return root


def cdk_context(root: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """cdk.json's context (what `cdk synth` uses) with ``overrides`` on top."""
    try:
        context = dict(json.loads((root / "cdk.json").read_text())["context"])
    except (OSError, ValueError, KeyError) as err:
        raise KitError(f"cannot read the context from {root / 'cdk.json'}: {err}") from err
    context.update(overrides or {})
    return context


def synthesize(context: Mapping[str, Any], root: Path) -> dict[str, Template]:
    """Synthesize the whole app in this process (no AWS calls) and return each stack's template by stack id."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    importable_checkout(root)
    from app import build_app
    from stacks.config import ConfigError

    with tempfile.TemporaryDirectory(prefix="kit-synth-") as outdir:
        try:
            app, _ = build_app(context, outdir=outdir)
        except ConfigError as err:  # a configuration mistake: a usage error, as in every other command
            raise KitUsageError(str(err)) from err
        app.synth()
        return read_assembly(Path(outdir))


def read_assembly(assembly_dir: Path) -> dict[str, Template]:
    """Every stack template of a cloud assembly (a `cdk synth` output folder such as cdk.out), by stack id."""
    manifest_file = assembly_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text())
    except FileNotFoundError:
        raise KitError(f"{assembly_dir} is not a cloud assembly (no manifest.json): run `make synth` first") from None
    except (OSError, ValueError) as err:
        raise KitError(f"cannot read {manifest_file}: {err}") from err
    not_assembly = "is not what `cdk synth` writes: run `make synth` again, or pass --assembly a cdk.out folder"
    artifacts = manifest.get("artifacts", {}) if isinstance(manifest, dict) else None
    if not isinstance(artifacts, dict):
        raise KitError(f"{manifest_file} {not_assembly}")
    templates: dict[str, Template] = {}
    for artifact_id, artifact in sorted(artifacts.items()):
        if not isinstance(artifact, dict) or artifact.get("type") != "aws:cloudformation:stack":
            continue
        name = (artifact.get("properties") or {}).get("templateFile")
        if not isinstance(name, str):
            raise KitError(f"{manifest_file} (stack {artifact_id} names no templateFile) {not_assembly}")
        template_file = assembly_dir / name
        try:
            template = json.loads(template_file.read_text())
        except (OSError, ValueError) as err:
            raise KitError(f"cannot read {template_file}: {err}") from err
        if not isinstance(template, dict):
            raise KitError(f"{template_file} {not_assembly}")
        templates[artifact_id] = template
    if not templates:
        raise KitError(f"no stacks found in {assembly_dir}")
    return templates


def select(templates: Mapping[str, Template], stack_id: str | None) -> dict[str, Template]:
    """All templates, or the one named ``stack_id`` (an unknown id is an error that lists the known ones)."""
    if stack_id is None:
        return dict(templates)
    if stack_id not in templates:
        raise KitUsageError(f"no stack {stack_id!r}; the stacks are: {', '.join(sorted(templates))}")
    return {stack_id: templates[stack_id]}
