"""The helper scripts: synth summary and the SigV4 caller (offline), and the pinned CDK CLI `make synth` runs."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.credentials import Credentials

import scripts.bench_validator
import scripts.ingest_burst
from kit.costs import analyze_stack, load_prices
from scripts import bench
from scripts.call_api import build_call, parse_args, region_of, signed_request
from scripts.synth_summary import main, stack_summary, summarize
from stacks.shared.python_function import stage_function_code
from tests.conftest import ROOT

URL = "https://abc123.execute-api.us-east-1.amazonaws.com/v1/"


def test_synth_summary_lists_each_stack_with_level_count_and_idle_cost(sandbox: Any) -> None:
    lines = summarize(sandbox.assembly_dir)
    assert len(lines) == len(sandbox.stacks)
    by_stack = {line.split()[0]: line for line in lines}
    level1 = by_stack["GenAiKit-1-Prompt"]
    count = len(sandbox.templates["GenAiKit-1-Prompt"]["Resources"])
    assert f"{count} resources" in level1 and "Level 1: prompt engineering" in level1
    assert "idle ~$0.60/month" in level1  # six CloudWatch alarms at $0.10
    assert "idle ~$1.00/month" in by_stack["GenAiKit-2-Rag"]  # S3 Vectors: no floor, only the ten alarms
    assert "from its KMS key" not in level1
    # Level 3's KMS key: $1/month, $3/month once its first two yearly rotations bill their $1 each.
    assert "idle ~$1.10/month (~$3.10 from its KMS key's second rotation)" in by_stack["GenAiKit-3-FineTune"]
    assert all("unclassified" not in line for line in lines)
    # The SageMaker path's stack owns no model; each imported model a run keeps bills storage while idle.
    assert (
        "per kept model: Bedrock imported model storage ~$1.95/CMU-month" in by_stack["GenAiKit-3-FineTune-SageMaker"]
    )
    # Each custom model a Bedrock customization run keeps bills its storage too.
    assert "per kept model: Nova Micro custom model storage ~$1.95/model-month" in by_stack["GenAiKit-3-FineTune"]


def test_synth_summary_names_the_provisioned_throughput_a_run_buys(sandbox: Any, prod_extremes: Any) -> None:
    """ft_deploy=provisioned: each run buys a no-commitment Provisioned Throughput that bills per model unit-hour
    while it exists, used or not. Before, the synth output said nothing of the largest cost a user can opt into."""
    [buys] = [line for line in summarize(prod_extremes.assembly_dir) if line.startswith("GenAiKit-3-FineTune ")]
    assert (
        "per run: Bedrock Provisioned Throughput, no commitment, billed per model unit-hour for ft_provisioned_hours,"
        " used or not (the model's rate: see kit cost)" in buys
    )
    assert all("Provisioned Throughput" not in line for line in summarize(sandbox.assembly_dir))


def test_synth_summary_states_the_opensearch_idle_floor(sandbox_oss: Any) -> None:
    [level2] = [line for line in summarize(sandbox_oss.assembly_dir) if line.startswith("GenAiKit-2-Rag")]
    assert "idle ~$176.20/month" in level2  # 1 OCU (standby replicas off) at $0.24/hour + ten alarms


def test_synth_summary_prints_the_figures_kit_cost_computes(sandbox: Any) -> None:
    prices = load_prices("us-east-1")
    by_stack = {line.split()[0]: line for line in summarize(sandbox.assembly_dir)}
    for stack_id, template in sandbox.templates.items():
        assert f"idle ~${analyze_stack(stack_id, template, prices).idle_usd:,.2f}/month" in by_stack[stack_id]


def test_synth_summary_flags_types_it_cannot_price() -> None:
    count, idle, unknown = stack_summary({"Resources": {"C": {"Type": "AWS::Neptune::DBCluster"}}})
    assert (count, idle, unknown) == (1, 0, ["AWS::Neptune::DBCluster"])


def test_synth_summary_fails_on_an_unclassified_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = {"Resources": {"C": {"Type": "AWS::Neptune::DBCluster"}}}
    (tmp_path / "New.template.json").write_text(json.dumps(template))
    artifact = {"type": "aws:cloudformation:stack", "properties": {"templateFile": "New.template.json"}}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"GenAiKit-9-New": artifact}}))
    assert main(["synth_summary.py", str(tmp_path)]) == 1
    assert "idle cost unclassified: AWS::Neptune::DBCluster" in capsys.readouterr().out


@pytest.mark.parametrize(("standby", "usd"), [("DISABLED", 175.2), ("ENABLED", 350.4)])
def test_opensearch_collection_idle_cost_follows_standby_replicas(standby: str, usd: float) -> None:
    collection = {"Type": "AWS::OpenSearchServerless::Collection", "Properties": {"StandbyReplicas": standby}}
    assert stack_summary({"Resources": {"C": collection}}) == (1, usd, [])


def test_region_is_read_from_the_execute_api_host() -> None:
    assert region_of(URL) == "us-east-1"
    with pytest.raises(ValueError, match="not an API Gateway"):
        region_of("https://example.com/v1/")


def test_calls_are_signed_with_sigv4_for_execute_api() -> None:
    method, url, body = build_call(parse_args(["--url", URL, "prompt", "hi", "--temperature", "0.2"]))
    request = signed_request(method, url, body, Credentials("AKIDEXAMPLE", "secret"))
    auth = request.get_header("Authorization")
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/execute-api/aws4_request" in auth
    assert request.get_method() == "POST" and request.full_url.endswith("/v1/prompt")
    assert request.data == b'{"prompt": "hi", "temperature": 0.2}'


def test_template_call_builds_the_variables_body() -> None:
    method, url, body = build_call(parse_args(["--url", URL, "template", "summarize", "audience=ops", "text=a=b"]))
    assert (method, url) == ("POST", URL.rstrip("/") + "/templates/summarize")
    assert body == {"variables": {"audience": "ops", "text": "a=b"}}


def test_call_api_answers_bad_input_and_credential_failures_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a variable without "=", a missing @file, a template name with a space and credentials that fail to
    refresh when the request is signed (SSO) each ended in a traceback."""
    from botocore.exceptions import TokenRetrievalError

    from scripts import call_api

    _, url, _ = build_call(parse_args(["--url", URL, "template", "my summary", "a=1"]))
    assert url.endswith("/templates/my%20summary")
    for argv, message in (
        (["template", "summarize", "audience"], "variable 'audience': write it as key=value"),
        (["template", "summarize", f"text=@{tmp_path / 'missing.txt'}"], "No such file or directory"),
    ):
        assert call_api.main(["--url", URL, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err

    def expired(*_: Any) -> Any:
        raise TokenRetrievalError(provider="sso", error_msg="the SSO session has expired")

    monkeypatch.setattr(call_api, "call", expired)
    assert call_api.main(["--url", URL, "templates"]) == 2
    assert "AWS credentials: " in capsys.readouterr().err


def test_synth_summary_says_which_changes_need_a_new_stack(sandbox: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth_summary.py", str(sandbox.assembly_dir)]) == 0
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    from stacks.updates import NEW_STACK, UPDATES

    keys = [key for key, stated in UPDATES.items() if stated == NEW_STACK]
    assert keys[:4] == ["stage", "name_prefix", "region", "account"] and "hp_fsx" in keys
    assert closing.startswith(f"On a deployed stack, changing {', '.join(keys)} needs a new stack")


def test_the_pinned_cdk_cli_reads_the_assembly_the_pinned_library_writes(sandbox: Any, tmp_path: Path) -> None:
    # `make synth` runs package.json's CLI on requirements.txt's aws-cdk-lib; a CLI older than the library's cloud
    # assembly schema refuses the assembly ("Cloud assembly schema version mismatch"). Given the sandbox the suite
    # synthesized, when that CLI lists its stacks (offline, from a folder with no cdk.json)
    cli = ROOT / "node_modules" / ".bin" / "cdk"
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"}
    command = [str(cli), "ls", "--app", str(sandbox.assembly_dir), "--no-notices"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    # Then it reads every stack
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(line.split()[0] for line in result.stdout.splitlines()) == sorted(sandbox.stacks)


@pytest.mark.parametrize(
    ("region", "priced", "heading"),
    [
        ("us-west-2", "us-west-2", "us-west-2 list prices"),
        ("eu-central-1", "us-east-1", "us-east-1 list prices; kit/prices.json has none for eu-central-1"),
    ],
)
def test_synth_summary_prices_the_assemblys_region_or_says_it_does_not(
    tmp_path: Path, region: str, priced: str, heading: str
) -> None:
    from kit.costs import available_regions
    from scripts.synth_summary import price_region

    assert "us-west-2" in available_regions() and "eu-central-1" not in available_regions()
    stack = {"type": "aws:cloudformation:stack", "environment": f"aws://unknown-account/{region}"}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"A": stack, "B": stack}}))
    assert price_region(tmp_path) == (priced, heading)


def test_synth_summary_heading_names_the_prices_it_used(sandbox: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth_summary.py", str(sandbox.assembly_dir)]) == 0
    assert "at us-east-1 list prices):" in capsys.readouterr().out


def test_the_lock_pins_only_versions_a_public_index_can_hold() -> None:
    """A local version label (torch==2.13.0+cpu, as pip freeze writes for a local CPU wheel) is never on PyPI ("local
    version identifiers MUST NOT be used when publishing upstream projects to a public index server", PEP 440), so
    `make setup` on a machine without that wheel could not resolve the lock."""
    pins = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line]
    assert pins and [pin for pin in pins if "+" in pin] == []


def test_make_lock_strips_local_version_labels() -> None:
    # The sed that `make lock` runs on pip freeze's output, read from the Makefile (make doubles its $).
    recipe = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "pip freeze --exclude" in line)
    expression = re.search(r"sed -E '([^']+)'", recipe)
    assert expression is not None, recipe
    frozen = "torch==2.13.0+cpu\nboto3==1.40.0\nnumpy==2.3.1\n"
    done = subprocess.run(
        ["sed", "-E", expression.group(1).replace("$$", "$")], input=frozen, capture_output=True, text=True, check=True
    )
    assert done.stdout == "torch==2.13.0\nboto3==1.40.0\nnumpy==2.3.1\n"


def test_a_failed_make_lock_keeps_the_old_lock(tmp_path: Path) -> None:
    """`make lock` writes the new lock only once pip freeze has succeeded: a failure leaves the old one whole
    (a lock of one comment would let the next install take any version of every transitive dependency)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    old = "# old\nboto3==1.0\n"
    (tmp_path / "requirements.lock").write_text(old)
    fake = tmp_path / "python"
    fake.write_text('#!/bin/bash\n[ "$FREEZE" = ok ] || exit 1\nprintf "torch==2.13.0+cpu\\nboto3==1.44.5\\n"\n')
    fake.chmod(0o755)

    def lock(freeze: str) -> subprocess.CompletedProcess[str]:
        command = ["make", "-s", "-o", ".venv/.installed", "lock", f"PY={fake}"]
        env = {**os.environ, "FREEZE": freeze}
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)

    assert lock("fail").returncode != 0
    assert (tmp_path / "requirements.lock").read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "python", "requirements.lock"]
    assert lock("ok").returncode == 0
    assert (tmp_path / "requirements.lock").read_text().splitlines()[1:] == ["torch==2.13.0", "boto3==1.44.5"]


# A Python that reports another version: the real interpreter runs the Makefile's snippet with sys.version_info
# replaced. `-m venv DIR` makes a venv whose python is this same script; anything else (pip) is logged to LOG.
FAKE_PYTHON = """#!/bin/bash
if [ "$1" = -c ]; then
  code=$2; shift 2
  exec {real} -c 'import sys; sys.version_info = {version}; exec(sys.argv.pop(1))' "$code" "$@"
fi
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
echo "$(basename "$0") $*" >> {log}
"""


def fake_python(folder: Path, version: tuple[int, int]) -> Path:
    path = folder / f"python{version[0]}.{version[1]}"
    log = folder / "pip.log"
    text = FAKE_PYTHON.format(real=sys.executable, version=(*version, 0), log=log)
    path.write_text(text)
    path.chmod(0o755)
    return path


def make_in_copy(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`make` on a copy of the Makefile and pyproject.toml (empty requirements files) in tmp_path."""
    for name in ("Makefile", "pyproject.toml", "package.json", "package-lock.json"):
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text((ROOT / name).read_text())
    for name in ("requirements.txt", "requirements-dev.txt", "requirements.lock"):
        (tmp_path / name).touch()
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    make = shutil.which("make")
    assert make is not None
    return subprocess.run([make, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("version", "requires", "accepted"),
    [
        ((3, 9), None, False),  # aws-cdk-lib 2.275.0 needs 3.10+; pip said only "ResolutionImpossible"
        ((3, 10), None, False),
        ((3, 15), None, False),  # cfn-lint 1.58.0: Requires-Python <3.15
        ((3, 12), None, True),
        ((3, 13), ">=3.11,<3.13", False),  # the range is read from pyproject.toml, not restated
    ],
)
def test_make_setup_names_an_interpreter_outside_requires_python(
    tmp_path: Path, version: tuple[int, int], requires: str | None, accepted: bool
) -> None:
    if requires:
        text = (ROOT / "pyproject.toml").read_text()
        text = re.sub(r'(?m)^requires-python = ".*"$', f'requires-python = "{requires}"', text)
        (tmp_path / "pyproject.toml").write_text(text)
    spec = requires or tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    python = fake_python(tmp_path, version)
    done = make_in_copy(tmp_path, ".venv/.installed", f"PYTHON={python}")
    if accepted:
        assert done.returncode == 0, done.stderr
        assert (tmp_path / ".venv" / ".installed").exists()
        return
    assert done.returncode != 0
    assert f"error: {python} is Python {version[0]}.{version[1]}; the kit needs {spec}" in done.stderr
    assert "make setup PYTHON=python3.12" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_make_setup_makes_a_venv_of_the_wrong_python_again(tmp_path: Path) -> None:
    # Given a .venv made by a Python 3.9 (before, `test -x .venv/bin/python` kept it, and every later run failed)
    old = fake_python(tmp_path, (3, 9))
    subprocess.run([old, "-m", "venv", str(tmp_path / ".venv")], check=True)
    (tmp_path / ".venv" / "from-3.9").touch()
    # When setup runs with a supported Python
    done = make_in_copy(tmp_path, ".venv/.installed", f"PYTHON={fake_python(tmp_path, (3, 12))}")
    # Then .venv is made again from it, and the requirements go into the new one
    assert done.returncode == 0, done.stderr
    assert ".venv: its Python is outside requires-python, or it lacks pip: making it again" in done.stdout
    assert not (tmp_path / ".venv" / "from-3.9").exists()
    assert "(3, 12," in (tmp_path / ".venv" / "bin" / "python").read_text()
    assert "python -m pip install" in (tmp_path / "pip.log").read_text()


def test_make_setup_keeps_a_venv_within_range_whatever_python3_is(tmp_path: Path) -> None:
    subprocess.run([fake_python(tmp_path, (3, 12)), "-m", "venv", str(tmp_path / ".venv")], check=True)
    (tmp_path / ".venv" / "kept").touch()
    done = make_in_copy(tmp_path, ".venv/.installed", f"PYTHON={fake_python(tmp_path, (3, 9))}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".venv" / "kept").exists()


def node_path(tmp_path: Path, node_version: str | None) -> str:
    """A PATH with sed, touch and mkdir, a fake npm that logs (and makes node_modules), and a fake node of
    node_version (None: no node)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "touch", "mkdir"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    scripts = {"npm": f'echo "npm $*" >> {tmp_path / "npm.log"} && mkdir -p node_modules'}
    if node_version:
        scripts["node"] = f"echo {node_version}"
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("node", "code", "says"),
    [
        (None, 2, "error: node not found: the kit's CDK CLI needs Node.js 22 or 24"),
        ("v20.20.2", 0, "warning: Node.js v20.20.2 is older than 22"),  # CI's Node.js: a warning, not a failure
        ("v22.12.0", 0, None),
        ("v24.1.0", 0, None),
    ],
)
def test_make_setup_checks_node_before_it_installs_anything(
    tmp_path: Path, node: str | None, code: int, says: str | None
) -> None:
    done = make_in_copy(tmp_path, "node_modules/.installed", path=node_path(tmp_path, node))
    assert done.returncode == code, done.stderr
    if says:
        assert says in done.stderr
    else:
        assert "Node.js" not in done.stderr
    assert (tmp_path / "npm.log").exists() == (code == 0)


def test_make_setup_installs_the_cdk_cli_before_the_python_requirements(tmp_path: Path) -> None:
    # A machine without Node.js learns it before the Python download (up to about 3 GB on Linux), not after.
    done = make_in_copy(tmp_path, "-n", "setup")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    npm = next(i for i, line in enumerate(lines) if line.startswith("npm ci"))
    pip = next(i for i, line in enumerate(lines) if "-m pip install" in line)
    assert npm < pip


# --- make bench (scripts/bench.py): each row measures what its label says ------------------------------------------


def test_bench_stages_each_function_as_its_synthesized_asset(sandbox_fsx: Any, sandbox_oss: Any) -> None:
    """The handler timings import from stage_function_code(package, modules) with the modules= the stacks pass:
    the same files as the asset each function is deployed with (sagemaker_validate carries chat_records)."""
    from tests.infra.test_packaging import _functions

    functions = [*_functions(sandbox_fsx), *_functions(sandbox_oss)]
    assert {handler.split(".")[0] for _, handler, _ in functions} == set(bench.function_modules())
    for logical_id, handler, asset in functions:
        package = handler.split(".")[0]
        staged = stage_function_code(package, bench.function_modules()[package])
        files = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
        assert files == {str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file()}, logical_id
    validator = stage_function_code("sagemaker_validate", bench.function_modules()["sagemaker_validate"])
    assert (validator / "workloads" / "finetune_sagemaker" / "chat_records.py").is_file()


def test_bench_first_call_clients_are_the_ones_the_permission_closure_finds() -> None:
    """The clients a handler's first call creates come from the same reading of its code as the permission test."""
    from tests.infra.test_permission_closure import IAM_PREFIX, code_calls

    for module in bench.handler_modules():
        package = module.split(".")[0]
        services = bench.first_call_services(package)
        assert {IAM_PREFIX.get(s, s) for s in services} == {a.split(":")[0] for a in code_calls(package)}, package
    assert bench.first_call_services("prompt_api") == ("bedrock-agent", "bedrock-runtime")


def test_bench_times_a_handler_from_its_asset_without_bytecode_or_the_editable_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append({"code": cmd[-1], **kwargs})
        return subprocess.CompletedProcess(cmd, 0, stdout="0.03 0.2\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "leaked")
    assert bench.handler_seconds("sagemaker_validate") == (0.03, 0.2)
    assert len(calls) == bench.IMPORT_RUNS
    env, code = calls[0]["env"], calls[0]["code"]
    asset = Path(env["PYTHONPATH"])
    # Its asset as Lambda receives it: the stack's modules= included, no bytecode written, nothing of the checkout.
    assert calls[0]["cwd"] == asset and (asset / "workloads" / "finetune_sagemaker" / "chat_records.py").is_file()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and "POWERTOOLS_SERVICE_NAME" not in env
    start = code.index("start = time.perf_counter()")
    assert code.index("sys.meta_path[:]") < start and code.index("sys.path_hooks[:]") < start
    # The first call: boto3 and the handler's client after the module import, in the same interpreter.
    assert start < code.index("import sagemaker_validate.handler") < code.index("import boto3")
    assert code.index("import boto3") < code.index("boto3.client('s3'") < code.index("done = time.perf_counter()")
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"]  # the clients need the Region Lambda sets


def test_bench_handler_timing_runs_and_a_module_missing_from_the_asset_fails_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "IMPORT_RUNS", 1)
    for package in ("prompt_api", "sagemaker_validate"):
        imported, first_call = bench.handler_seconds(package)
        assert first_call is not None and 0 < imported < first_call, package
    assert bench.handler_seconds("finetune_reward")[1] is None  # its code creates no boto3 client
    assert bench.boto3_seconds(("s3",)) > 0
    # Without the modules= its stack passes, the checkout (editable install) must not supply the module.
    modules = {**bench.function_modules(), "sagemaker_validate": ()}
    monkeypatch.setattr(bench, "function_modules", lambda: modules)
    with pytest.raises(RuntimeError, match="No module named 'workloads'"):
        bench.handler_seconds("sagemaker_validate")


def test_bench_times_what_make_test_runs_after_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lint recipe as the Makefile has it (test: lint), then pytest with the Makefile's xdist options."""
    timed: list[list[str]] = []

    def fake_wall(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
        timed.append(cmd)
        return 1.0

    monkeypatch.setattr(bench, "_wall", fake_wall)
    monkeypatch.setenv("PYTEST_XDIST", "-n 2 --dist worksteal")
    monkeypatch.delenv("PYTEST_ARGS", raising=False)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint$", makefile, re.M)
    lint = re.search(r"^lint: setup\n((?:\t.*\n)+)", makefile, re.M)
    assert lint
    expected = [line.strip().replace("$(PY)", sys.executable).split() for line in lint[1].splitlines()]
    expected.append([sys.executable, "-m", "pytest", "-n", "2", "--dist", "worksteal"])
    runs = bench.bench_tests()
    assert timed == expected * bench.RUNS
    assert runs == [{"lint": float(len(expected) - 1), "test": 1.0}] * bench.RUNS


def _fake_bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prompt_first_call: float) -> None:
    """scripts.bench with every measurement replaced: 100 ms `import boto3`, 200 ms with clients."""
    monkeypatch.setattr(bench, "OUTPUT", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench, "bench_synth", lambda: (10.0, 5.0))
    monkeypatch.setattr(bench, "boto3_seconds", lambda services=(): 0.2 if services else 0.1)

    def handler_seconds(package: str) -> tuple[float, float | None]:
        first_call = prompt_first_call if package == "prompt_api" else 0.25
        return 0.05, first_call if bench.first_call_services(package) else None

    monkeypatch.setattr(bench, "handler_seconds", handler_seconds)
    monkeypatch.setattr(bench, "bench_tests", lambda: [{"lint": 10.0, "test": 40.0}] * bench.RUNS)
    burst = SimpleNamespace(
        start_calls=3, lost=0, deleted_before_cover=0, events_in=1000, jobs_started=2, poison_in=20, dead_lettered=20
    )
    monkeypatch.setattr(
        scripts.ingest_burst, "run_burst", lambda events: SimpleNamespace(**vars(burst), wall_seconds=1)
    )
    figures = {"cpuMbPerSecond": 200.0, "mbPerSecond": 200.0, "peakRssMb": 30.0}
    monkeypatch.setattr(
        scripts.bench_validator,
        "run",
        lambda size, corpus: {"ok": True, "validator": figures, "bareLoop": figures, "fileBytes": 1.1e9, "cpuRatio": 1},
    )


def test_bench_records_the_first_call_and_fails_on_a_slow_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_bench(monkeypatch, tmp_path, prompt_first_call=0.25)
    assert bench.main() == 0
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "All targets met." in text
    # Where the numbers come from, against what Lambda runs (stacks/shared/python_function.py).
    assert f"{platform.machine()} machine" in text and f"Python {platform.python_version()}" in text
    assert "Lambda runs the functions on python3.14 on arm64" in text
    assert "module import `prompt_api.handler` (boto3 deferred to its first call) vs `import boto3`" in text
    assert "module import `finetune_reward.handler` (its code creates no boto3 client)" in text
    assert (
        "| first call `prompt_api.handler`: module import, `import boto3` and its clients (bedrock-agent, "
        "bedrock-runtime) vs `import boto3` and the same clients | 250 ms vs 200 ms | 1.25x | <= 1.5x |"
    ) in text
    assert "first call `finetune_reward.handler`" not in text
    assert "| `make test` after set-up: the `lint` then `test` recipes" in text
    assert "| 50.0 s (50.0 to 50.0 s; `lint` 10.0 s; `test` 40.0 s) vs 10.00 s | 5.0x | <= 6x |" in text
    assert "90 min" not in text  # nothing compares a figure with CI's time limit
    # A first call past 1.5x its baseline fails the bench, the module import alone being well within its target.
    _fake_bench(monkeypatch, tmp_path, prompt_first_call=0.31)
    assert bench.main() == 1
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| 310 ms vs 200 ms | 1.55x | <= 1.5x |" in text and "**A target was missed.**" in text
    assert "A TARGET WAS MISSED" in capsys.readouterr().err


def test_bench_stops_on_a_failing_command_with_the_end_of_its_output(tmp_path: Path) -> None:
    """Before: a failing suite run raised CalledProcessError with its output discarded (nothing said which test)."""
    assert bench._wall([sys.executable, "-c", "pass"], tmp_path) >= 0
    with pytest.raises(RuntimeError) as failed:
        bench._wall([sys.executable, "-c", "print('FAILED tests/x.py::test_y'); raise SystemExit(3)"], tmp_path)
    assert "exited 3" in str(failed.value) and "FAILED tests/x.py::test_y" in str(failed.value)
