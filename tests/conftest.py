"""Session-wide test set-up: fake AWS credentials, and the real app synthesized once per stage."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Nothing in the suite may reach a real account: fake credentials, no instance metadata, fixed region.
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}
for _key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "CDK_CONTEXT_JSON"):
    os.environ.pop(_key, None)
os.environ.update(_FAKE_ENV)


def cdk_json_context() -> dict[str, Any]:
    """The context a real `cdk synth` uses: cdk.json's, so feature flags match a real synth."""
    return dict(json.loads((ROOT / "cdk.json").read_text())["context"])


@dataclass
class Synth:
    """One synthesized app: its config, stacks by id, and each stack's template and nag messages."""

    config: Any
    stacks: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    messages: dict[str, list[dict[str, Any]]]
    assembly_dir: Path
    _template_objects: dict[str, Any] = field(default_factory=dict)

    def template(self, stack_id: str) -> Any:
        """An assertions.Template over the already-synthesized JSON (no second synthesis)."""
        from aws_cdk.assertions import Template

        if stack_id not in self._template_objects:
            self._template_objects[stack_id] = Template.from_json(self.templates[stack_id])
        return self._template_objects[stack_id]


def synthesize(context: dict[str, Any], outdir: Path) -> Synth:
    import aws_cdk as cdk

    from app import build_app

    app, config = build_app(context, outdir=str(outdir))
    assembly = app.synth()
    stacks = {child.node.id: child for child in app.node.children if isinstance(child, cdk.Stack)}
    templates, messages = {}, {}
    for stack_id, stack in stacks.items():
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        templates[stack_id] = artifact.template
        messages[stack_id] = [
            {"level": str(m.level), "path": m.id, "data": str(m.entry.data)} for m in artifact.messages
        ]
    return Synth(config, stacks, templates, messages, outdir)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(cdk_json_context(), tmp_path_factory.mktemp("cdk-sandbox"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize({**cdk_json_context(), "stage": "prod"}, tmp_path_factory.mktemp("cdk-prod"))


@pytest.fixture(scope="session")
def sandbox_oss(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The sandbox with Level 2's other vector store, OpenSearch Serverless."""
    context = {**cdk_json_context(), "rag_vector_store": "opensearch-serverless"}
    return synthesize(context, tmp_path_factory.mktemp("cdk-sandbox-oss"))


@pytest.fixture(scope="session")
def sandbox_fsx(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The sandbox with every Level 4 option on: FSx for Lustre, a login node, jobs in the VPC, managed spot."""
    context = {
        **cdk_json_context(),
        "hp_fsx": True,
        "hp_login_instance_type": "ml.t3.medium",
        "tj_in_cluster_vpc": True,
        "tj_spot": True,
        "invocation_logging": True,  # the opt-in account-level stack rides along with this variant
    }
    return synthesize(context, tmp_path_factory.mktemp("cdk-sandbox-fsx"))


SYNTHS = ["sandbox", "prod", "sandbox_oss", "sandbox_fsx"]


@pytest.fixture(scope="session", params=SYNTHS)
def each_stage(request: pytest.FixtureRequest) -> Iterator[Synth]:
    """Every synthesized variant: both stages, and the sandbox with the alternative vector store."""
    yield request.getfixturevalue(request.param)
