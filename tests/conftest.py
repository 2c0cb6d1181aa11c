"""Session-wide test set-up: fake AWS credentials, and the real app synthesized once per stage."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import common.http
from tests.lambda_helpers import LAMBDA_ENV, UNSET_ENV, FakeContext

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


def masked_json(template: dict[str, Any]) -> str:
    """The template as sorted JSON without CDK's analytics metadata (which carries construct paths)."""
    data = {k: v for k, v in template.items()}
    data["Resources"] = {
        k: v for k, v in template.get("Resources", {}).items() if v.get("Type") != "AWS::CDK::Metadata"
    }
    data.pop("Conditions", None) if set(data.get("Conditions", {})) <= {"CDKMetadataAvailable"} else None
    return json.dumps(data, sort_keys=True)


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


@pytest.fixture(scope="session")
def prod_extremes(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Prod with the other documented variants and the valid extremes: the longest name prefix, the largest
    groups and counts, Provisioned Throughput, OpenSearch with standby replicas, hierarchical chunking."""
    context = {
        **cdk_json_context(),
        "stage": "prod",
        "name_prefix": "kit-abcdefghij-yz",  # 17 characters, the longest allowed
        "rag_vector_store": "opensearch-serverless",
        "rag_opensearch_standby_replicas": True,
        "rag_chunking": "hierarchical",
        "rag_documents_prefix": "a/" + "b" * 196 + "/",  # 200 characters, the longest allowed
        "ft_deploy": "provisioned",
        "ft_provisioned_hours": 72,
        "ft_max_job_hours": 72,
        "hp_nat_gateways": 3,
        "hp_login_instance_type": "ml.m5.xlarge",
        "hp_compute_groups": [
            {"name": "g" * 63, "instance_type": "ml.g5.8xlarge", "count": 100},
            {"name": "cpu", "instance_type": "ml.m5.xlarge", "count": 100},
        ],
        "hp_ebs_volume_gb": 16384,
        "hp_fsx": True,
        "hp_fsx_throughput": 1000,
        "tj_instance_count": 64,
        "tj_max_runtime_hours": 28 * 24,
        "tj_spot": True,
        "tj_max_wait_hours": 28 * 24,
        "tj_in_cluster_vpc": True,
        "invocation_logging": True,
        "log_retention_days": 3653,
    }
    return synthesize(context, tmp_path_factory.mktemp("cdk-prod-extremes"))


@pytest.fixture(scope="session")
def sandbox_on_demand(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The sandbox with Level 3's on-demand deployment and semantic chunking."""
    context = {**cdk_json_context(), "ft_deploy": "on-demand", "rag_chunking": "semantic"}
    return synthesize(context, tmp_path_factory.mktemp("cdk-sandbox-on-demand"))


# Every synthesized variant; the first four have snapshots, the last two cover the other documented options.
SYNTHS = ["sandbox", "prod", "sandbox_oss", "sandbox_fsx", "prod_extremes", "sandbox_on_demand"]
SNAPSHOT_SYNTHS = SYNTHS[:4]


@pytest.fixture(scope="session", params=SYNTHS)
def each_stage(request: pytest.FixtureRequest) -> Iterator[Synth]:
    """Every synthesized variant (see SYNTHS)."""
    yield request.getfixturevalue(request.param)


# --- Lambda handler tests of every level -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Lambda runtime sets for every function (each level's conftest adds its function's keys)."""
    for name, value in LAMBDA_ENV.items():
        monkeypatch.setenv(name, value)
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Back-off sleeps are recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(common.http, "sleep", recorded.append)
    return recorded


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()
