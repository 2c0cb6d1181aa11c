"""Session-wide test set-up: fake AWS credentials, and the real app synthesized once per stage."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings as hypothesis_settings

import common.http
from tests.infra.config_reads import Reads, recorded_reads, unwrapped
from tests.lambda_helpers import LAMBDA_ENV, UNSET_ENV, FakeContext

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# Nothing in the suite may reach a real account: fake credentials, no instance metadata, fixed region.
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    # CDK's built-in template validation loads a WebAssembly engine in each process that synthesizes (about 6 s
    # of CPU, then about 2 s per synth of the kit). In the suite, cfn-lint checks every synthesized variant
    # against the same registry schemas, and test_schema_names runs app.py with the validation on, as
    # `cdk synth` does. Read by the CDK's Node.js process, which starts after this (at the first synth).
    "CDK_VALIDATION": "false",
}
for _key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "CDK_CONTEXT_JSON"):
    os.environ.pop(_key, None)
os.environ.update(_FAKE_ENV)

# The suite is CI's gate, so each property test draws the same examples on every run and machine (derandomize):
# a run passes or fails for the code, not for the draw. Hypothesis also draws the code's own string constants, and
# one such draw once failed a test at random. `HYPOTHESIS_PROFILE=explore make test` draws afresh, to look further.
hypothesis_settings.register_profile("gate", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


def _share_botocore_models() -> None:
    """One cache of botocore's loaded service models for the whole run.

    moto gives every mock its own boto3 default session, and each session's loader parses the service models
    again (about 20 ms per model: most of the time of the handler tests that start many mocks). Within one
    session botocore already hands every client the same parsed model; this shares it across sessions too.
    """
    import botocore.loaders

    shared: dict[Any, Any] = {}
    original = botocore.loaders.Loader.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # Loaders that search other folders or add other extras (moto's own) keep caches of their own.
        self._cache = shared.setdefault((type(self), tuple(self.search_paths)), {})

    botocore.loaders.Loader.__init__ = init  # type: ignore[method-assign]


_share_botocore_models()


def _hold_requests_to_their_whole_model() -> None:
    """Every request a test sends through a botocore client is also held to its model's maximums, patterns and
    enums. botocore's client-side validation checks types, required members and minimums only; the service
    refuses the rest, so a handler or kit command whose request breaks one fails its test here, not in an account.
    """
    from botocore.exceptions import ParamValidationError
    from botocore.validate import ParamValidationDecorator

    from scripts.ingest_burst import constraint_problems

    original = ParamValidationDecorator.serialize_to_request

    def serialize_to_request(self: Any, parameters: Any, operation_model: Any) -> Any:
        request = original(self, parameters, operation_model)  # botocore's own checks first
        if operation_model.input_shape is not None and (
            problems := constraint_problems(parameters, operation_model.input_shape)
        ):
            raise ParamValidationError(report="\n".join(problems))
        return request

    ParamValidationDecorator.serialize_to_request = serialize_to_request  # type: ignore[method-assign]


_hold_requests_to_their_whole_model()


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


# --- Work shared by the whole run, however many pytest-xdist workers run it -------------------------------


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this pytest run alone, the same for all its xdist workers.

    pytest makes a new base temporary folder for every run (``pytest-N``, or a ``--basetemp`` it empties first)
    and gives each xdist worker a folder inside it (``popen-gwN``): its parent is the run's.
    """
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    folder.mkdir(exist_ok=True)
    return folder


def once_per_run(folder: Path, key: str, make: Callable[[], T]) -> T:
    """``make()``, computed by the first worker that asks for ``key`` and read by every other one.

    ``folder`` is :func:`run_folder`. The result is pickled there under a file lock, so a worker that asks
    while another is computing it waits for that result instead of computing it again. The key is the whole
    input (a variant's name and context, a configuration, a template's text), never a guess at it, and
    nothing outlives the run: a result is never served to a later run, on a tree that may have changed since.
    A ``make()`` that raises leaves nothing behind, so the next worker to ask tries again and sees the error.
    """
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    result = folder / f"{name}.pickle"
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            value = make()
            partial = folder / f"{name}.partial"
            partial.write_bytes(pickle.dumps(value))
            partial.replace(result)
            return value
    loaded: T = pickle.loads(result.read_bytes())
    return loaded


# --- The real app, synthesized once per variant and run -----------------------------------------------------


@dataclass(frozen=True)
class StackNode:
    id: str


@dataclass
class SynthStack:
    """What the tests read of a synthesized stack (the values the cdk.Stack had at synth time)."""

    node: StackNode
    stack_name: str
    artifact_id: str
    dependencies: list[SynthStack] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # the stack's own tags (the cloud assembly manifest's)


@dataclass
class Synth:
    """One synthesized app: its config, stacks by id, and each stack's template and nag messages."""

    config: Any
    stacks: dict[str, SynthStack]
    templates: dict[str, dict[str, Any]]
    messages: dict[str, list[dict[str, Any]]]
    assembly_dir: Path
    reads: Reads  # which KitConfig attributes each stack read (tests/infra/config_reads.py)
    _template_objects: dict[str, Any] = field(default_factory=dict)

    def template(self, stack_id: str) -> Any:
        """An assertions.Template over the already-synthesized JSON (no second synthesis)."""
        from aws_cdk.assertions import Template

        if stack_id not in self._template_objects:
            self._template_objects[stack_id] = Template.from_json(self.templates[stack_id])
        return self._template_objects[stack_id]


def synthesize(context: dict[str, Any], outdir: Path) -> Synth:
    """The app built from ``context`` (with cdk-nag) and synthesized into ``outdir``, as plain picklable data."""
    import aws_cdk as cdk

    from app import build_app

    with recorded_reads() as reads:
        app, recorder = build_app(context, outdir=str(outdir))
        assembly = app.synth()
    config = unwrapped(recorder)
    live = [child for child in app.node.children if isinstance(child, cdk.Stack)]
    stacks = {
        stack.node.id: SynthStack(StackNode(stack.node.id), stack.stack_name, stack.artifact_id) for stack in live
    }
    templates, messages = {}, {}
    for stack in live:
        stack_id = stack.node.id
        stacks[stack_id].dependencies = [stacks[dependency.node.id] for dependency in stack.dependencies]
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        stacks[stack_id].tags = dict(artifact.tags)
        templates[stack_id] = artifact.template
        messages[stack_id] = [
            {"level": str(m.level), "path": m.id, "data": str(m.entry.data)} for m in artifact.messages
        ]
    return Synth(config, stacks, templates, messages, outdir, reads)


# Every synthesized variant: the cdk.json context plus these values. The first four have snapshots, the last
# two cover the other documented options.
VARIANTS: dict[str, dict[str, Any]] = {
    "sandbox": {},
    "prod": {"stage": "prod"},
    # The sandbox with Level 2's other vector store, OpenSearch Serverless.
    "sandbox_oss": {"rag_vector_store": "opensearch-serverless"},
    # The sandbox with every Level 4 option on: FSx for Lustre, a login node, jobs in the VPC, managed spot.
    "sandbox_fsx": {
        "hp_fsx": True,
        "hp_login_instance_type": "ml.t3.medium",
        "tj_in_cluster_vpc": True,
        "tj_spot": True,
        "invocation_logging": True,  # the opt-in account-level stack rides along with this variant
    },
    # Prod with the other documented variants and the valid extremes: the longest name prefix, the largest
    # groups and counts, Provisioned Throughput, OpenSearch with standby replicas, hierarchical chunking.
    "prod_extremes": {
        "stage": "prod",
        "name_prefix": "kit-abcdefghij-yz",  # 17 characters, the longest allowed
        "rag_vector_store": "opensearch-serverless",
        "rag_opensearch_standby_replicas": True,
        "rag_chunking": "hierarchical",
        "rag_documents_prefix": "a/" + "b" * 196 + "/",  # 200 characters, the longest allowed
        "ft_deploy": "provisioned",
        "ft_provisioned_hours": 72,
        "ft_max_job_hours": 72,
        "ft_poll_minutes": 3,  # the shortest poll 72 h allows within the execution history quota
        "hp_nat_gateways": 2,  # one per availability zone, the most there are
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
        "tags": {"cost-center": "ml-research"},  # a user tag: on every resource and every stack
    },
    # The sandbox with Level 3's on-demand deployment and semantic chunking.
    "sandbox_on_demand": {"ft_deploy": "on-demand", "rag_chunking": "semantic"},
}
SYNTHS = list(VARIANTS)
SNAPSHOT_SYNTHS = SYNTHS[:4]


def variant(name: str, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The variant ``name`` synthesized once for the whole run; its cloud assembly sits in the run's folder."""
    folder = run_folder(tmp_path_factory)
    context = {**cdk_json_context(), **VARIANTS[name]}
    key = f"synth:{name}:{json.dumps(context, sort_keys=True)}"
    return once_per_run(folder, key, lambda: synthesize(context, folder / f"cdk-{name}"))


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return variant("sandbox", tmp_path_factory)


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return variant("prod", tmp_path_factory)


@pytest.fixture(scope="session")
def sandbox_oss(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return variant("sandbox_oss", tmp_path_factory)


@pytest.fixture(scope="session")
def sandbox_fsx(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return variant("sandbox_fsx", tmp_path_factory)


@pytest.fixture(scope="session")
def prod_extremes(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return variant("prod_extremes", tmp_path_factory)


@pytest.fixture(scope="session")
def sandbox_on_demand(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return variant("sandbox_on_demand", tmp_path_factory)


@pytest.fixture(scope="session", params=SYNTHS)
def each_stage(request: pytest.FixtureRequest) -> Iterator[Synth]:
    """Every synthesized variant (see SYNTHS)."""
    yield request.getfixturevalue(request.param)


_NEEDED_VARIANTS = pytest.StashKey[list[str]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the variants the selected tests ask for by fixture (each_stage asks for all)."""
    names = set().union(*(getattr(item, "fixturenames", ()) for item in session.items))
    session.config.stash[_NEEDED_VARIANTS] = [n for n in SYNTHS if n in names or "each_stage" in names]


@pytest.fixture(scope="session", autouse=True)
def _variants_split_between_workers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, each worker synthesizes its share of the variants the run needs before its first
    test, so the workers synthesize side by side instead of one waiting for the other's result."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return
    for name in request.config.stash.get(_NEEDED_VARIANTS, [])[int(worker.removeprefix("gw")) :: count]:
        # A variant that fails to synthesize leaves nothing: each test that uses it tries again and fails there.
        with contextlib.suppress(Exception):
            variant(name, tmp_path_factory)


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
