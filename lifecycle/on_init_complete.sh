#!/usr/bin/env bash
# SageMaker HyperPod OnInitComplete script (LifeCycleConfig.OnInitComplete = "on_init_complete.sh").
#
# OnInitComplete puts the instance group in HyperPod's Extended lifecycle mode: the script "runs after HyperPod
# configures the default software on the instance" (CloudFormation registry schema, AWS::SageMaker::Cluster
# ClusterLifeCycleConfig). With the API-driven Slurm configuration (each group's SlurmConfig, FSx for Lustre in
# its InstanceStorageConfigs) that default software is Slurm itself, which HyperPod configures; the Slurm daemons
# may still be starting while this runs (AWS's own OnInitComplete scripts wait for scontrol before they touch
# Slurm), so a step added here that calls Slurm must wait for it too; these touch no Slurm. (OnCreate, Customer
# Managed mode, would run too: with the API-driven configuration HyperPod still sets Slurm up and mounts FSx;
# OnInitComplete runs after that, with /fsx mounted, which lifecycle.py opens.) This script only does the kit's own
# setup: HyperPod
# copies this folder from LifeCycleConfig.SourceS3Uri onto every new node and runs it as root; it checks its
# inputs and hands over to lifecycle.py, which logs the node's identity (best effort) and opens /fsx and its
# exported directory /fsx/data to every user.
# Everything it prints goes, with UTC timestamps, to /var/log/provision/provisioning.log (HyperPod ships
# that file to CloudWatch: log group /aws/sagemaker/Clusters/<cluster-name>/<cluster-id>, stream
# LifecycleConfig/<instance-group>/<instance-id>) and to stdout. A failure logs the line and command
# that failed and exits non-zero, which makes HyperPod report the node as failed.
set -euo pipefail
set -o errtrace # the ERR trap also fires inside functions

LOG_DIR="${PROVISION_LOG_DIR:-/var/log/provision}"
LOG_FILE="$LOG_DIR/provisioning.log"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESOURCE_CONFIG="${SAGEMAKER_RESOURCE_CONFIG_PATH:-/opt/ml/config/resource_config.json}"
# On a failure, the time given to HyperPod's log shipping before the exit, so the FAILED line reaches CloudWatch
# (AWS's own OnInitComplete entrypoint waits 60 s "to make sure logs are uploaded": awsome-distributed-training,
# run_extensions.sh). The tests set 0.
LOG_FLUSH_SECONDS="${PROVISION_LOG_FLUSH_SECONDS:-60}"

mkdir -p "$LOG_DIR"

log() {
  printf '%s on_init_complete.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG_FILE"
}

on_error() {
  local status=$1 line=$2 command=$3
  log "FAILED (exit $status) at line $line: $command"
  log "see the lines above; lifecycle scripts: $SCRIPT_DIR"
  sync || true
  sleep "$LOG_FLUSH_SECONDS" || true
  exit "$status"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

require_file() {
  if [[ ! -f "$1" ]]; then
    log "missing $2: $1"
    return 1
  fi
}

log "start (OnInitComplete, after HyperPod configured the node) on $(hostname) ($(hostname -I 2>/dev/null || echo 'no address')), scripts in $SCRIPT_DIR"
if [[ "$(id -u)" -ne 0 ]]; then
  log "must run as root (HyperPod runs lifecycle scripts as root)"
  exit 1
fi
command -v python3 >/dev/null || {
  log "python3 not found on this AMI"
  exit 1
}
# The resource config only names this node in the log: without it lifecycle.py warns and carries on.
if [[ ! -f "$RESOURCE_CONFIG" ]]; then
  log "WARN: no HyperPod resource config at $RESOURCE_CONFIG (set SAGEMAKER_RESOURCE_CONFIG_PATH to override); the node is not named in this log"
fi
require_file "$SCRIPT_DIR/lifecycle.py" "lifecycle.py"

# lifecycle.py timestamps its own lines (UTC); tee keeps them in the log file and on stdout.
python3 -u "$SCRIPT_DIR/lifecycle.py" --resource-config "$RESOURCE_CONFIG" "$@" 2>&1 | tee -a "$LOG_FILE"

log "done"
