#!/usr/bin/env python3
"""Prepare one SageMaker HyperPod Slurm node for the kit, after HyperPod has configured it.

The cluster configures Slurm through the API: each instance group's SlurmConfig gives its node type and
partition, and HyperPod writes slurm.conf, starts the Slurm daemons and mounts FSx for Lustre from the
group's InstanceStorageConfigs. The groups use the OnInitComplete hook (HyperPod's Extended mode), which runs
after HyperPod has configured that default software, while the Slurm daemons may still be starting (AWS's own
OnInitComplete scripts wait for scontrol before they touch Slurm; nothing here does). What is left to a
lifecycle script is the kit's own setup, so on_init_complete.sh runs this on every node:

    python3 lifecycle.py --resource-config /opt/ml/config/resource_config.json [--shared-dir /fsx] [--dry-run]

1. Find this node in HyperPod's resource_config.json by its IPv4 address and log its instance group and
   instance name (HyperPod's Slurm node name) - the line to look for in the node's CloudWatch log stream. That
   line is all the file is for, so a file that is missing, unreadable or does not list this node is a warning,
   never a failed node: HyperPod reports a node whose lifecycle script exits non-zero as failed (and a failed
   controller fails the cluster), and AWS's reference scripts carry on without the file ("Assume vanilla
   cluster setup", awsome-distributed-training LifecycleScripts/base-config/on_create.sh).
2. When the shared file system is mounted at --shared-dir, make it writable for every user (mode 1777, like
   /tmp) so jobs can create their run directories there, and so is its exported directory (data/, the one the
   stack's data repository association links to the data bucket) once it exists. A failure here fails the node.

Python 3.8+ standard library only, and nothing is fetched from a git branch or the internet: what runs is
exactly what the stack uploaded. The logic is pure functions plus one ``provision()`` that acts through a
``Host`` (commands), which the tests replace with a fake. See README.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

LOG = logging.getLogger("lifecycle")

DEFAULT_RESOURCE_CONFIG = "/opt/ml/config/resource_config.json"
# The stack's FsxLustreConfig.MountPath (HyperPod's default) - keep the two equal.
SHARED_DIR = "/fsx"
SHARED_DIR_MODE = "1777"
# The directory under SHARED_DIR that the stack's data repository association (FileSystemPath /data) exports to
# and imports from the data bucket, the only files on the file system that are copied to S3
# (docs.aws.amazon.com/fsx/latest/APIReference/API_DataRepositoryAssociation.html). FSx creates it with
# the association and takes owners and modes from S3 object metadata
# (docs.aws.amazon.com/fsx/latest/LustreGuide/posix-metadata-support.html), so nothing makes it writable
# for a Slurm user: it is opened like SHARED_DIR. workloads/pretrain/slurm/pretrain.sbatch writes its runs there.
EXPORTED_SUBDIR = "data"


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


def describe_node(cluster: ResourceConfig, group: InstanceGroup, instance: Instance) -> str:
    """One line naming this node the way HyperPod, Slurm and the console do."""
    where = f" of cluster {cluster.cluster_name}" if cluster.cluster_name else ""
    kind = f", {group.instance_type}" if group.instance_type else ""
    return (
        f"this node: {instance.name} ({instance.instance_id or 'no instance id'}{kind}, {instance.ip}) "
        f"in instance group {group.name}{where}"
    )


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


class SystemHost:
    """The real machine: subprocess, each command and its output logged."""

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


class DryRunHost(SystemHost):
    """Reads the node's state (addresses, mounts) but only logs what it would change."""

    READ_ONLY = (("hostname", "-I"), ("mountpoint", "-q"), ("test", "-d"))

    def run(self, argv: Sequence[str], check: bool = True) -> CommandResult:
        if tuple(argv[:2]) in self.READ_ONLY:
            return super().run(argv, check)
        LOG.info("dry-run: %s", " ".join(shlex.quote(a) for a in argv))
        return CommandResult(0)


def local_ipv4_addresses(host: Host) -> list[str]:
    output = host.run(["hostname", "-I"]).stdout
    addresses = []
    for token in output.split():
        try:
            addresses.append(str(ipaddress.IPv4Address(token)))
        except ValueError:
            continue
    return addresses


def exported_dir(shared_dir: str = SHARED_DIR) -> str:
    """The directory of the shared file system that the data repository association exports to S3."""
    return f"{shared_dir.rstrip('/')}/{EXPORTED_SUBDIR}"


def prepare_shared_dir(host: Host, path: str = SHARED_DIR) -> bool:
    """Open the shared file system, and its exported directory once it exists, to every user when it is mounted;
    True when it was."""
    if host.run(["mountpoint", "-q", path], check=False).returncode != 0:
        LOG.info(
            "%s is not mounted on this node: nothing to prepare (HyperPod mounts FSx for Lustre on groups whose "
            "InstanceStorageConfigs name it)",
            path,
        )
        return False
    host.run(["chmod", SHARED_DIR_MODE, path])
    LOG.info("%s is mounted; mode %s lets every user create a run directory there", path, SHARED_DIR_MODE)
    exported = exported_dir(path)
    # Never created here: the association creates it, and the stack creates the cluster after the association, so
    # it exists at each node's first boot. Missing, it was removed by hand or its association is being replaced:
    # any node provisioned later opens it, and so does the one command the warning names.
    if host.run(["test", "-d", exported], check=False).returncode != 0:
        LOG.warning(
            "%s does not exist yet (the data repository association creates it and exports it to the data bucket): "
            "a node provisioned later opens it, or run `sudo chmod %s %s` once it exists",
            exported,
            SHARED_DIR_MODE,
            exported,
        )
        return True
    host.run(["chmod", SHARED_DIR_MODE, exported])
    LOG.info("%s (exported to the data bucket) is open to every user too", exported)
    return True


def provision(
    host: Host, cluster: ResourceConfig | None, local_ips: Sequence[str], shared_dir: str = SHARED_DIR
) -> str | None:
    """Do everything this node needs; return its instance group's name (None when the node could not be named,
    which only costs the log line)."""
    named: tuple[InstanceGroup, Instance] | None = None
    if cluster is not None:
        try:
            named = find_node(cluster, local_ips)
            LOG.info("%s", describe_node(cluster, *named))
        except ProvisioningError as err:
            LOG.warning("cannot name this node (carrying on): %s", err)
    prepare_shared_dir(host, shared_dir)
    LOG.info("provisioning finished on %s", named[1].name if named else "this node")
    return named[0].name if named else None


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ProvisioningError(f"{path} not found") from None
    except ValueError as err:  # not JSON, or not UTF-8 text
        raise ProvisioningError(f"{path} is not valid JSON: {err}") from None
    except OSError as err:  # a directory, no permission
        raise ProvisioningError(f"{path} cannot be read: {err}") from None


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--resource-config",
        default=os.environ.get("SAGEMAKER_RESOURCE_CONFIG_PATH", DEFAULT_RESOURCE_CONFIG),
    )
    parser.add_argument("--shared-dir", default=SHARED_DIR, help=f"the shared file system (default {SHARED_DIR})")
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
    cluster: ResourceConfig | None = None
    try:
        cluster = parse_resource_config(_load_json(args.resource_config), os.path.basename(args.resource_config))
    except ProvisioningError as err:
        LOG.warning("cannot read HyperPod's resource config (carrying on; it only names this node): %s", err)
    try:
        local_ips = args.node_ip or (local_ipv4_addresses(host) if cluster is not None else [])
    except ProvisioningError as err:
        LOG.warning("cannot read this node's addresses (carrying on): %s", err)
        local_ips = []
    try:
        provision(host, cluster, local_ips, args.shared_dir)
    except ProvisioningError as err:
        LOG.error("provisioning failed: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
