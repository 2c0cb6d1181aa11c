#!/usr/bin/env python3
"""Provision one SageMaker HyperPod Slurm node: validate, decide the role, mount FSx, start Slurm.

on_create.sh runs this on every node with the lifecycle folder copied locally:

    python3 lifecycle.py --resource-config /opt/ml/config/resource_config.json \
        --provisioning-parameters provisioning_parameters.json [--dry-run]

Python 3.8+ standard library only, and nothing is fetched from a git branch or the internet: what
runs is exactly what the stack uploaded. The logic is a set of pure functions (parse, validate,
find this node, decide its role, build slurm.conf lines, the fstab line and mount command) and one
side-effecting ``provision()`` that performs every action through a ``Host`` (commands, files,
sleeps), which the tests replace with a fake. See README.md for the input contract and the logs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

LOG = logging.getLogger("lifecycle")

DEFAULT_RESOURCE_CONFIG = "/opt/ml/config/resource_config.json"
SLURM_CONF = "/opt/slurm/etc/slurm.conf"
KIT_NODES_CONF = "/opt/slurm/etc/genai-kit-nodes.conf"
KIT_NODES_COPY = "/var/log/provision/genai-kit-nodes.conf"
SLURMD_DROPIN = "/etc/systemd/system/slurmd.service.d/genai-kit.conf"
FSTAB = "/etc/fstab"
FSX_MOUNT_POINT = "/fsx"

CONTROLLER, LOGIN, WORKER = "controller", "login", "worker"
SUPPORTED_MAJOR_VERSION = 1
# HyperPod's pattern for InstanceGroupName and Slurm PartitionNames, at most 63 characters.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_PATTERN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
MOUNTNAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}$")
PARAMETER_KEYS = (
    "version",
    "workload_manager",
    "controller_group",
    "login_group",
    "worker_groups",
    "fsx_dns_name",
    "fsx_mountname",
)
WORKER_KEYS = ("instance_group_name", "partition_name")


class ProvisioningError(Exception):
    """A problem that stops this node from joining the cluster; the message says what to fix."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    name: str
    ip: str
    instance_id: str | None = None


@dataclass(frozen=True)
class InstanceGroup:
    name: str
    instances: tuple[Instance, ...]
    instance_type: str | None = None


@dataclass(frozen=True)
class ResourceConfig:
    groups: tuple[InstanceGroup, ...]
    cluster_name: str | None = None

    def group(self, name: str) -> InstanceGroup | None:
        for group in self.groups:
            if group.name == name:
                return group
        return None


@dataclass(frozen=True)
class WorkerGroup:
    instance_group_name: str
    partition_name: str


@dataclass(frozen=True)
class Fsx:
    dns_name: str
    mountname: str


@dataclass(frozen=True)
class ProvisioningParameters:
    version: str
    controller_group: str
    worker_groups: tuple[WorkerGroup, ...]
    login_group: str | None = None
    fsx: Fsx | None = None

    def role_of(self, group_name: str) -> str | None:
        if group_name == self.controller_group:
            return CONTROLLER
        if self.login_group is not None and group_name == self.login_group:
            return LOGIN
        if any(w.instance_group_name == group_name for w in self.worker_groups):
            return WORKER
        return None

    def group_names(self) -> list[str]:
        names = [self.controller_group]
        if self.login_group:
            names.append(self.login_group)
        return names + [w.instance_group_name for w in self.worker_groups]


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProvisioningError(f"{where} must be a non-empty string, got {value!r}")
    if not NAME_PATTERN.match(value):
        raise ProvisioningError(
            f"{where} = {value!r} is not a valid name: use letters, digits and single hyphens, "
            "start and end with a letter or digit, at most 63 characters"
        )
    return value


def parse_provisioning_parameters(data: Any, source: str = "provisioning_parameters.json") -> ProvisioningParameters:
    """Validate the stack-generated parameters. Every error names the key and what is allowed."""
    if not isinstance(data, dict):
        raise ProvisioningError(f"{source} must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(PARAMETER_KEYS))
    if unknown:
        raise ProvisioningError(
            f"{source} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(PARAMETER_KEYS)}"
        )
    version = data.get("version")
    if not isinstance(version, str) or not re.match(r"^\d+\.\d+\.\d+$", version):
        raise ProvisioningError(f'{source}: version must be a string like "1.0.0", got {version!r}')
    if int(version.split(".")[0]) != SUPPORTED_MAJOR_VERSION:
        raise ProvisioningError(
            f"{source}: version {version} is not supported by this lifecycle.py (major version "
            f"{SUPPORTED_MAJOR_VERSION}); upload lifecycle scripts and parameters from the same kit version"
        )
    if data.get("workload_manager") != "slurm":
        raise ProvisioningError(f'{source}: workload_manager must be "slurm", got {data.get("workload_manager")!r}')
    controller = _name(data.get("controller_group"), f"{source}: controller_group")
    login = data.get("login_group")
    if login is not None:
        login = _name(login, f"{source}: login_group")

    raw_workers = data.get("worker_groups")
    if not isinstance(raw_workers, list) or not raw_workers:
        raise ProvisioningError(f"{source}: worker_groups must be a non-empty list of objects")
    workers = []
    for index, raw in enumerate(raw_workers):
        where = f"{source}: worker_groups[{index}]"
        if not isinstance(raw, dict):
            raise ProvisioningError(f"{where} must be an object with {' and '.join(WORKER_KEYS)}")
        extra = sorted(set(raw) - set(WORKER_KEYS))
        if extra:
            raise ProvisioningError(f"{where} has unknown key(s) {', '.join(extra)}; allowed: {', '.join(WORKER_KEYS)}")
        workers.append(
            WorkerGroup(
                instance_group_name=_name(raw.get("instance_group_name"), f"{where}.instance_group_name"),
                partition_name=_name(raw.get("partition_name"), f"{where}.partition_name"),
            )
        )

    names = [controller] + ([login] if login else []) + [w.instance_group_name for w in workers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProvisioningError(
            f"{source}: instance group(s) {', '.join(duplicates)} appear in more than one role; "
            "each group is exactly one of controller_group, login_group or a worker group"
        )

    dns, mountname = data.get("fsx_dns_name"), data.get("fsx_mountname")
    fsx = None
    if dns is not None or mountname is not None:
        if not dns or not mountname:
            raise ProvisioningError(f"{source}: set both fsx_dns_name and fsx_mountname, or neither")
        if not isinstance(dns, str) or not DNS_PATTERN.match(dns):
            raise ProvisioningError(f"{source}: fsx_dns_name {dns!r} is not a DNS name")
        if not isinstance(mountname, str) or not MOUNTNAME_PATTERN.match(mountname):
            raise ProvisioningError(f"{source}: fsx_mountname {mountname!r} is not an FSx for Lustre mount name")
        fsx = Fsx(dns_name=dns, mountname=mountname)
    return ProvisioningParameters(
        version=version, controller_group=controller, login_group=login, worker_groups=tuple(workers), fsx=fsx
    )


def parse_resource_config(data: Any, source: str = "resource_config.json") -> ResourceConfig:
    """Read HyperPod's description of the cluster: instance groups, their instances, names and IPs."""
    if not isinstance(data, dict) or not isinstance(data.get("InstanceGroups"), list):
        raise ProvisioningError(f"{source} must be a JSON object with an InstanceGroups list")
    groups = []
    seen_ips: dict[str, str] = {}
    for gi, raw_group in enumerate(data["InstanceGroups"]):
        where = f"{source}: InstanceGroups[{gi}]"
        if not isinstance(raw_group, dict) or not isinstance(raw_group.get("Name"), str) or not raw_group["Name"]:
            raise ProvisioningError(f"{where} must be an object with a Name")
        raw_instances = raw_group.get("Instances", [])
        if not isinstance(raw_instances, list):
            raise ProvisioningError(f"{where} ({raw_group['Name']}): Instances must be a list")
        instances = []
        for ii, raw in enumerate(raw_instances):
            iwhere = f"{where}.Instances[{ii}]"
            if not isinstance(raw, dict):
                raise ProvisioningError(f"{iwhere} must be an object")
            ip = raw.get("CustomerIpAddress")
            try:
                ip = str(ipaddress.IPv4Address(ip))
            except (ipaddress.AddressValueError, ValueError):
                raise ProvisioningError(f"{iwhere}: CustomerIpAddress {ip!r} is not an IPv4 address") from None
            if ip in seen_ips:
                raise ProvisioningError(f"{iwhere}: CustomerIpAddress {ip} is also used by {seen_ips[ip]}")
            name = raw.get("InstanceName")
            if not isinstance(name, str) or not name:
                raise ProvisioningError(f"{iwhere}: InstanceName must be a non-empty string")
            seen_ips[ip] = name
            instance_id = raw.get("InstanceId")
            instances.append(
                Instance(name=name, ip=ip, instance_id=instance_id if isinstance(instance_id, str) else None)
            )
        groups.append(
            InstanceGroup(
                name=raw_group["Name"],
                instances=tuple(instances),
                instance_type=raw_group.get("InstanceType") if isinstance(raw_group.get("InstanceType"), str) else None,
            )
        )
    names = [g.name for g in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProvisioningError(f"{source}: instance group name(s) {', '.join(duplicates)} appear more than once")
    cluster = data.get("ClusterConfig")
    cluster_name = cluster.get("ClusterName") if isinstance(cluster, dict) else None
    return ResourceConfig(groups=tuple(groups), cluster_name=cluster_name if isinstance(cluster_name, str) else None)


def check_cluster(params: ProvisioningParameters, cluster: ResourceConfig) -> list[str]:
    """Cross-check both files. Raises for what breaks every node; returns warnings for the rest."""
    controller = cluster.group(params.controller_group)
    if controller is None or not controller.instances:
        known = ", ".join(g.name for g in cluster.groups) or "none"
        raise ProvisioningError(
            f"controller_group {params.controller_group!r} has no instances in resource_config.json "
            f"(groups there: {known}); provisioning_parameters.json must be generated from the same "
            "configuration as the cluster's InstanceGroupName values"
        )
    warnings = []
    if params.login_group and cluster.group(params.login_group) is None:
        warnings.append(f"login_group {params.login_group!r} is not in resource_config.json")
    for worker in params.worker_groups:
        group = cluster.group(worker.instance_group_name)
        if group is None or not group.instances:
            warnings.append(
                f"worker group {worker.instance_group_name!r} has no instances yet; "
                f"partition {worker.partition_name!r} gets its nodes when the group scales up"
            )
    named = set(params.group_names())
    for group in cluster.groups:
        if group.name not in named:
            warnings.append(f"instance group {group.name!r} is in the cluster but not in provisioning_parameters.json")
    return warnings


def find_node(cluster: ResourceConfig, local_ips: Sequence[str]) -> tuple[InstanceGroup, Instance]:
    """This node's group and instance, matched on one of its IPv4 addresses."""
    wanted = set(local_ips)
    for group in cluster.groups:
        for instance in group.instances:
            if instance.ip in wanted:
                return group, instance
    known = ", ".join(f"{i.ip} ({g.name})" for g in cluster.groups for i in g.instances) or "none"
    raise ProvisioningError(
        f"none of this node's addresses ({', '.join(local_ips) or 'none found'}) is a CustomerIpAddress in "
        f"resource_config.json (known: {known})"
    )


def decide_role(params: ProvisioningParameters, group_name: str) -> str:
    role = params.role_of(group_name)
    if role is None:
        workers = ", ".join(repr(w.instance_group_name) for w in params.worker_groups)
        login = repr(params.login_group) if params.login_group else "none"
        raise ProvisioningError(
            f"this node's instance group {group_name!r} is not in provisioning_parameters.json "
            f"(controller_group {params.controller_group!r}, login_group {login}, worker groups {workers}); "
            "regenerate the parameters from the cluster configuration"
        )
    return role


# --------------------------------------------------------------------------------------------
# Slurm configuration pieces
# --------------------------------------------------------------------------------------------


def slurm_node_name(ip: str) -> str:
    """HyperPod's Slurm node name for an address: 10.1.2.3 -> ip-10-1-2-3 (the node's hostname)."""
    return "ip-" + ip.replace(".", "-")


def slurm_fragment(params: ProvisioningParameters, cluster: ResourceConfig) -> str:
    """NodeName and PartitionName lines for every worker instance, partitions in parameter order."""
    controller = cluster.group(params.controller_group)
    lines = [
        "# Generated by genai-spectrum-kit lifecycle.py from resource_config.json and",
        "# provisioning_parameters.json. Do not edit: the next provisioning run rewrites it.",
    ]
    if cluster.cluster_name:
        lines.append(f"# Cluster: {cluster.cluster_name}")
    if controller is not None:
        hosts = ", ".join(f"{slurm_node_name(i.ip)} ({i.ip})" for i in controller.instances)
        lines.append(f"# Controller group {controller.name}: {hosts}")
    partitions: dict[str, list[str]] = {}
    for worker in params.worker_groups:
        members = partitions.setdefault(worker.partition_name, [])
        group = cluster.group(worker.instance_group_name)
        for instance in group.instances if group else ():
            node = slurm_node_name(instance.ip)
            lines.append(f"# {worker.instance_group_name} {instance.name} {instance.instance_id or ''}".rstrip())
            lines.append(
                f"NodeName={node} NodeAddr={instance.ip} NodeHostname={node} "
                f"Features={worker.instance_group_name} State=UNKNOWN"
            )
            members.append(node)
    for index, (partition, nodes) in enumerate(partitions.items()):
        if not nodes:
            lines.append(f"# PartitionName={partition}: no instances yet")
            continue
        default = "YES" if index == 0 else "NO"
        lines.append(f"PartitionName={partition} Nodes={','.join(nodes)} Default={default} MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def slurm_conf_mentions(text: str | None, controller_ips: Sequence[str]) -> bool:
    """True when HyperPod has written slurm.conf and it names a controller (by IP or node name)."""
    if not text:
        return False
    return any(ip in text or slurm_node_name(ip) in text for ip in controller_ips)


def defined_nodes(slurm_conf_text: str) -> list[str]:
    """Node names defined by NodeName= lines (ranges such as ip-[1-2] are kept as written)."""
    nodes = []
    for line in slurm_conf_text.splitlines():
        stripped = line.split("#", 1)[0].strip()
        match = re.match(r"^NodeName=(\S+)", stripped, flags=re.IGNORECASE)
        if match and match.group(1).upper() != "DEFAULT":
            nodes.append(match.group(1))
    return nodes


def with_include(slurm_conf_text: str, include_path: str) -> str | None:
    """slurm.conf with an Include line for our fragment, or None when it is already there."""
    line = f"Include {include_path}"
    if any(existing.strip() == line for existing in slurm_conf_text.splitlines()):
        return None
    prefix = slurm_conf_text if slurm_conf_text.endswith("\n") or not slurm_conf_text else slurm_conf_text + "\n"
    return prefix + line + "\n"


def slurmd_dropin(controller_ips: Sequence[str]) -> str:
    """systemd drop-in that points slurmd at the controller (configless: it fetches slurm.conf)."""
    return (
        "# Written by genai-spectrum-kit lifecycle.py: fetch the configuration from the controller.\n"
        "[Service]\n"
        f'Environment="SLURMD_OPTIONS=--conf-server {",".join(controller_ips)}"\n'
    )


# --------------------------------------------------------------------------------------------
# FSx for Lustre
# --------------------------------------------------------------------------------------------


def fsx_source(fsx: Fsx) -> str:
    return f"{fsx.dns_name}@tcp:/{fsx.mountname}"


def mount_command(fsx: Fsx, mount_point: str = FSX_MOUNT_POINT) -> list[str]:
    return ["mount", "-t", "lustre", "-o", "relatime,flock", fsx_source(fsx), mount_point]


def fstab_line(fsx: Fsx, mount_point: str = FSX_MOUNT_POINT) -> str:
    options = "defaults,relatime,flock,_netdev,x-systemd.automount,x-systemd.requires=network.service"
    return f"{fsx_source(fsx)} {mount_point} lustre {options} 0 0"


def _mounts_at(fstab_line_text: str, mount_point: str) -> bool:
    fields = fstab_line_text.split()
    return len(fields) > 1 and not fields[0].startswith("#") and fields[1] == mount_point


def with_fstab_entry(fstab_text: str, line: str, mount_point: str = FSX_MOUNT_POINT) -> str | None:
    """fstab with exactly one entry for the mount point (ours, last), or None when it is already so."""
    lines = fstab_text.splitlines()
    if [existing for existing in lines if _mounts_at(existing, mount_point)] == [line]:
        return None
    return "\n".join([existing for existing in lines if not _mounts_at(existing, mount_point)] + [line]) + "\n"


# --------------------------------------------------------------------------------------------
# Side effects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Host(Protocol):
    """Everything provision() does to the machine goes through here."""

    def run(self, argv: Sequence[str], check: bool = True) -> CommandResult: ...

    def read_text(self, path: str) -> str | None: ...

    def write_text(self, path: str, text: str) -> None: ...

    def sleep(self, seconds: float) -> None: ...


class SystemHost:
    """The real machine: subprocess, files and time.sleep, each action logged."""

    def run(self, argv: Sequence[str], check: bool = True) -> CommandResult:
        LOG.info("run: %s", " ".join(shlex.quote(a) for a in argv))
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        except FileNotFoundError as err:
            result = CommandResult(127, "", str(err))
        else:
            result = CommandResult(done.returncode, done.stdout, done.stderr)
        for stream in (result.stdout, result.stderr):
            for line in stream.splitlines():
                LOG.info("  | %s", line)
        if check and result.returncode != 0:
            raise ProvisioningError(
                f"command failed with exit code {result.returncode}: {' '.join(argv)}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        return result

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_text(self, path: str, text: str) -> None:
        LOG.info("write: %s (%d bytes)", path, len(text.encode("utf-8")))
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.genai-kit.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class DryRunHost(SystemHost):
    """Reads real files but only logs commands and writes: see what a node would do."""

    def run(self, argv: Sequence[str], check: bool = True) -> CommandResult:
        LOG.info("dry-run: %s", " ".join(shlex.quote(a) for a in argv))
        if list(argv[:2]) == ["hostname", "-I"]:
            return super().run(argv, check)
        return CommandResult(0)

    def write_text(self, path: str, text: str) -> None:
        LOG.info("dry-run: would write %s:", path)
        for line in text.splitlines():
            LOG.info("  | %s", line)

    def sleep(self, seconds: float) -> None:
        LOG.info("dry-run: would wait %.0f s", seconds)


@dataclass(frozen=True)
class Timing:
    mount_attempts: int = 5
    mount_delay_s: float = 15.0
    slurm_conf_attempts: int = 24
    slurm_conf_delay_s: float = 5.0


def local_ipv4_addresses(host: Host) -> list[str]:
    output = host.run(["hostname", "-I"]).stdout
    addresses = []
    for token in output.split():
        try:
            addresses.append(str(ipaddress.IPv4Address(token)))
        except ValueError:
            continue
    return addresses


def mount_fsx(host: Host, fsx: Fsx, timing: Timing, mount_point: str = FSX_MOUNT_POINT) -> None:
    """Record /fsx in fstab, then mount it, retrying a bounded number of times."""
    host.run(["mkdir", "-p", mount_point])
    new_fstab = with_fstab_entry(host.read_text(FSTAB) or "", fstab_line(fsx, mount_point), mount_point)
    if new_fstab is not None:
        host.write_text(FSTAB, new_fstab)
    if host.run(["mountpoint", "-q", mount_point], check=False).returncode == 0:
        LOG.info("%s is already mounted", mount_point)
        return
    last = CommandResult(1)
    for attempt in range(1, timing.mount_attempts + 1):
        last = host.run(mount_command(fsx, mount_point), check=False)
        if last.returncode == 0:
            LOG.info("mounted %s at %s (attempt %d)", fsx_source(fsx), mount_point, attempt)
            break
        LOG.warning("mount attempt %d/%d failed: %s", attempt, timing.mount_attempts, last.stderr.strip())
        if attempt < timing.mount_attempts:
            host.sleep(timing.mount_delay_s * attempt)
    else:
        raise ProvisioningError(
            f"could not mount {fsx_source(fsx)} at {mount_point} after {timing.mount_attempts} attempts "
            f"(last error: {last.stderr.strip() or last.returncode}). Check that the file system is AVAILABLE, "
            "that its security group admits TCP 988 from the cluster's security group, and that the Lustre "
            "client is installed (HyperPod's AMI has it)"
        )
    host.run(["chmod", "1777", mount_point])  # shared scratch for every user, like /tmp


def controller_ips(params: ProvisioningParameters, cluster: ResourceConfig) -> list[str]:
    group = cluster.group(params.controller_group)
    if group is None or not group.instances:
        raise ProvisioningError(
            f"controller_group {params.controller_group!r} has no instances in resource_config.json"
        )
    return [instance.ip for instance in group.instances]


def setup_controller(host: Host, params: ProvisioningParameters, cluster: ResourceConfig, timing: Timing) -> None:
    controller_ips_ = controller_ips(params, cluster)
    text = host.read_text(SLURM_CONF)
    for attempt in range(1, timing.slurm_conf_attempts + 1):
        if slurm_conf_mentions(text, controller_ips_):
            break
        LOG.info("waiting for HyperPod to write %s (%d/%d)", SLURM_CONF, attempt, timing.slurm_conf_attempts)
        host.sleep(timing.slurm_conf_delay_s)
        text = host.read_text(SLURM_CONF)
    if not slurm_conf_mentions(text, controller_ips_):
        waited = timing.slurm_conf_attempts * timing.slurm_conf_delay_s
        raise ProvisioningError(
            f"{SLURM_CONF} {'is missing' if text is None else 'does not name the controller'} after {waited:.0f} s: "
            "HyperPod did not configure Slurm on this node; check that the cluster's Orchestrator is Slurm and "
            f"that controller_group {params.controller_group!r} is the group with SlurmConfig NodeType Controller"
        )
    assert text is not None
    fragment = slurm_fragment(params, cluster)
    existing = defined_nodes(text)
    if existing:
        # HyperPod manages the node lines: keep ours for comparison and report differences only.
        host.write_text(KIT_NODES_COPY, fragment)
        expected = [
            line.split()[0][len("NodeName=") :] for line in fragment.splitlines() if line.startswith("NodeName=")
        ]
        missing = [node for node in expected if node not in existing]
        LOG.info("slurm.conf already defines %d node(s); the kit's lines are in %s", len(existing), KIT_NODES_COPY)
        if missing:
            LOG.warning("slurm.conf does not define %s (from resource_config.json)", ", ".join(missing))
    else:
        host.write_text(KIT_NODES_CONF, fragment)
        updated = with_include(text, KIT_NODES_CONF)
        if updated is not None:
            host.write_text(SLURM_CONF, updated)
    host.run(["systemctl", "disable", "--now", "slurmd"], check=False)  # the controller is not a compute node
    host.run(["systemctl", "enable", "slurmctld"])
    host.run(["systemctl", "restart", "slurmctld"])


def setup_slurmd(host: Host, params: ProvisioningParameters, cluster: ResourceConfig) -> None:
    host.write_text(SLURMD_DROPIN, slurmd_dropin(controller_ips(params, cluster)))
    host.run(["systemctl", "disable", "--now", "slurmctld"], check=False)  # only the controller runs it
    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "enable", "slurmd"])
    host.run(["systemctl", "restart", "slurmd"])


def provision(
    host: Host,
    params: ProvisioningParameters,
    cluster: ResourceConfig,
    local_ips: Sequence[str],
    timing: Timing | None = None,
) -> str:
    """Do everything this node needs; return its role."""
    timing = timing or Timing()
    for warning in check_cluster(params, cluster):
        LOG.warning("%s", warning)
    group, instance = find_node(cluster, local_ips)
    role = decide_role(params, group.name)
    LOG.info(
        "this node: %s (%s, %s) in instance group %s -> role %s",
        slurm_node_name(instance.ip),
        instance.ip,
        instance.instance_id or instance.name,
        group.name,
        role,
    )
    if params.fsx is not None:
        mount_fsx(host, params.fsx, timing)
    else:
        LOG.info("no FSx for Lustre in provisioning_parameters.json: /fsx is not mounted")
    if role == CONTROLLER:
        setup_controller(host, params, cluster, timing)
    else:
        # Login nodes start slurmd too, only to fetch slurm.conf for sbatch/squeue (they are not nodes).
        setup_slurmd(host, params, cluster)
    LOG.info("provisioning finished: role %s", role)
    return role


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ProvisioningError(f"{path} not found") from None
    except json.JSONDecodeError as err:
        raise ProvisioningError(f"{path} is not valid JSON: {err}") from None


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--resource-config",
        default=os.environ.get("SAGEMAKER_RESOURCE_CONFIG_PATH", DEFAULT_RESOURCE_CONFIG),
    )
    parser.add_argument(
        "--provisioning-parameters",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "provisioning_parameters.json"),
    )
    parser.add_argument("--node-ip", action="append", help="this node's IPv4 address (default: hostname -I)")
    parser.add_argument("--dry-run", action="store_true", help="log the actions without changing the node")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stdout,
            level=logging.INFO,
            format="%(asctime)s lifecycle.py %(levelname)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%SZ",
        )
        logging.Formatter.converter = time.gmtime
    host = host or (DryRunHost() if args.dry_run else SystemHost())
    try:
        params = parse_provisioning_parameters(
            _load_json(args.provisioning_parameters), os.path.basename(args.provisioning_parameters)
        )
        cluster = parse_resource_config(_load_json(args.resource_config), os.path.basename(args.resource_config))
        local_ips = args.node_ip or local_ipv4_addresses(host)
        provision(host, params, cluster, local_ips)
    except ProvisioningError as err:
        LOG.error("provisioning failed: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
