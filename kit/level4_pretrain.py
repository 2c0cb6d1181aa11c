"""Level 4, pre-training: ``kit l4 …`` submits a multi-node training job through the GenAiKit-4-Pretrain-Jobs
state machine and follows it, or shows the HyperPod cluster of GenAiKit-4-Pretrain-Cluster. Its ``kit doctor``
checks: the SageMaker quotas the configuration needs (training-job instances, Level 3's SageMaker path
included, and the HyperPod cluster's instances, nodes and EBS volume)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from kit import aws, level3_finetune
from kit.aws import KitError, KitUsageError, StackNotDeployed, Target
from kit.doctor import FIX, LEVELS, WARN, Check, Needs, QuotaBook, quota_rows, training_job_limits, training_job_quota
from kit.operator import (
    EXECUTION_NAME,
    EXECUTION_RUNNING,
    FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT,
    cell,
    check_resumable,
    console,
    current_target,
    deployed_name_prefix,
    execution_arn,
    execution_name,
    finish,
    follow_execution,
    kv_table,
    print_execution,
    remember_target,
    resumed_root,
    show_status,
    start_run,
    target_options,
    wait_options,
    when,
)
from stacks.level4_pretrain import names

CHECKPOINTS_PREFIX = names.CHECKPOINTS_PREFIX  # the Jobs stack's (stacks/level4_pretrain/names.py: no CDK there)
# The training job of an execution is <name_prefix>-<stage>-pt-<MD5 of the execution ARN>, as the state machine
# names it (stacks/level4_pretrain/names.py), so any execution name fits SageMaker's 63 characters. What an
# execution name may be (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html):
# 1-80 characters without white space, brackets, wildcards, " # % \ ^ | ~ ` $ & , ; : / or control characters,
# and only letters, digits, '-' and '_' for its CloudWatch Logs logging (the state machine logs), which is what
# `--name` accepts; `--resume-from` takes any name an earlier execution may have had.
NEW_EXECUTION_NAME = re.compile(r"[0-9A-Za-z_-]{1,80}")


# The IAM actions the `kit l4` commands call with the operator's credentials (the README's "Operator
# permissions"); tests/kit/test_operator_permissions.py derives them from the code and compares.
OPERATOR_ACTIONS: dict[str, tuple[str, ...]] = {
    "l4": (
        "cloudformation:DescribeStacks",
        "s3:ListBucket",
        "sagemaker:DescribeCluster",
        "sagemaker:DescribeTrainingJob",
        "sagemaker:ListClusterNodes",
        "states:DescribeExecution",
        "states:DescribeStateMachine",
        "states:GetExecutionHistory",
        "states:ListExecutions",
        "states:StartExecution",
    ),
}


@click.group()
@target_options
@click.pass_context
def l4(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Level 4, pre-training: run a training job (GenAiKit-4-Pretrain-Jobs), inspect the HyperPod cluster."""
    remember_target(ctx, stage, region, profile, context_pairs)


# The Jobs stack names its state machine <name_prefix>-<stage>-pretrain (stacks/level4_pretrain/stack.py).
MACHINE_PART = "pretrain"


def training_job_name(target: Target, execution_arn: str) -> str:
    """The training job the state machine starts for an execution: the stage's prefix and the hash of the ARN. The
    prefix is the deployed stack's (read from its state machine's name), not the local config's."""
    stage = target.config.stage
    return names.job_name(deployed_name_prefix(execution_arn, stage, MACHINE_PART), stage, execution_arn)


def _training_job_detail(execution_arn: str) -> Callable[[Mapping[str, Any]], str | None]:
    """The SageMaker training job's own status, shown while the execution runs."""
    target = current_target()
    job_name = training_job_name(target, execution_arn)

    def detail(_: Mapping[str, Any]) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            job = target.client("sagemaker").describe_training_job(TrainingJobName=job_name)
        except (BotoCoreError, ClientError):
            return None  # not created yet, or not readable: the execution's status still shows
        return f"training job {job_name}: {job.get('TrainingJobStatus')}/{job.get('SecondaryStatus')}"

    return detail


def _training_job_rows(execution_arn: str, execution_status: str) -> list[tuple[str, Any]]:
    """``kit l4 status``'s row for the execution's training job, whatever the execution's status: its name (made
    from the ARN as the state machine makes it, so no AWS call is needed to name it) and its status. Stopping an
    execution is not documented to stop the job it started (docs/level-4-pretrain.md "Stopping a run"), so a job
    still InProgress after its execution ended gets the command that stops it."""
    from botocore.exceptions import BotoCoreError, ClientError

    target = current_target()
    job = training_job_name(target, execution_arn)
    stop = None
    try:
        described = target.client("sagemaker").describe_training_job(TrainingJobName=job)
    except ClientError as exc:
        if aws.not_found(exc):
            text = f"{job}: not created"
        else:
            why = aws.explain(exc, "reading the training job", target.region, target.profile)
            text = f"{job} (its status was not read: {why})"
    except BotoCoreError as exc:
        why = aws.explain(exc, "reading the training job", target.region, target.profile)
        text = f"{job} (its status was not read: {why or exc})"
    else:
        # DescribeTrainingJob's TrainingJobStatus, SecondaryStatus and BillableTimeInSeconds (botocore's model).
        job_status = described.get("TrainingJobStatus")
        text = f"{job}: {job_status}/{described.get('SecondaryStatus')}"
        if described.get("BillableTimeInSeconds"):
            text += f", {described['BillableTimeInSeconds']} billable s"
        if job_status == "InProgress" and execution_status != EXECUTION_RUNNING:
            # https://docs.aws.amazon.com/cli/latest/reference/sagemaker/stop-training-job.html
            stop = f"aws sagemaker stop-training-job --training-job-name {job} {target.cli_options()}"
    return [("Training job", text)] + ([("Stop it with", stop)] if stop else [])


def _refuse_used_prefix(target: Target, bucket: str, execution: str, checkpoints: str) -> None:
    """A new run's prefix must be empty: the job resumes from whatever it finds there. A name reused after Step
    Functions' 90 days finds its old run's checkpoints (current versions never expire), and its job name is free
    again once that job was deleted ("you can reuse its name",
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DeleteTrainingJob.html)."""
    with aws.aws_errors(f"listing {checkpoints}", target.region, target.profile):
        found = target.client("s3").list_objects_v2(
            Bucket=bucket, Prefix=f"{CHECKPOINTS_PREFIX}{execution}/", MaxKeys=1
        )
    if found.get("KeyCount"):
        raise KitUsageError(
            f"--name {execution}: {checkpoints} already holds checkpoints of an earlier run, which a new run would "
            f"continue from: give another --name, or --resume-from {execution} to continue that run"
        )


def _refuse_taken_job_name(target: Target, sfn: Any, machine: str, execution: str) -> None:
    """A chosen --name gives the training job a name of its own (the MD5 of the execution ARN), which SageMaker
    keeps until the job is deleted ("After deleting the job, you can reuse its name",
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DeleteTrainingJob.html); the kit deletes no job.
    After the Jobs stack is deployed again, or once Step Functions' 90 days have passed, the same name makes the
    same ARN and so a job name CreateTrainingJob refuses: the run would start and fail. An execution of this state
    machine by that name is left to start_run (a re-run of the same start, or a name Step Functions refuses)."""
    from botocore.exceptions import ClientError

    arn = execution_arn(machine, execution)
    job = training_job_name(target, arn)
    with aws.aws_errors(f"reading training job {job}", target.region, target.profile):
        try:
            target.client("sagemaker").describe_training_job(TrainingJobName=job)
        except ClientError as exc:
            if aws.not_found(exc):
                return
            raise
        try:
            sfn.describe_execution(executionArn=arn)
        except ClientError as exc:
            if aws.error_code(exc) != "ExecutionDoesNotExist":
                raise
        else:
            return
    raise KitUsageError(
        f"--name {execution}: training job {job}, of an earlier run by that name, still exists (SageMaker keeps a "
        "job's name until the job is deleted), so this run's job would be refused: give another --name"
    )


@l4.command()
@click.option(
    "--name",
    help="The execution name, 1-80 letters, digits, '-' and '_' (checkpoints go under checkpoints/<name>/; the "
    "training job is <name_prefix>-<stage>-pt-<MD5 of the execution ARN>).",
)
@click.option(
    "--resume-from",
    "resume_from",
    metavar="EXECUTION",
    help="Continue the run of an earlier execution (name or ARN) from its checkpoints instead of starting anew "
    "(once it has ended, and unless a running execution resumes from it already).",
)
@click.option("--wait", is_flag=True, help="Follow the execution until the training job ends.")
@wait_options(timeout_s=None, poll_s=30, timeout_default=FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT)
def submit(name: str | None, resume_from: str | None, wait: bool, timeout: int | None, poll_seconds: float) -> None:
    """Start one multi-node training job through the Jobs stack's state machine.

    Each execution checkpoints under its own prefix, checkpoints/<execution>/, which must be empty (a name whose
    prefix holds checkpoints is refused), so a new run starts at step 0. With --resume-from the job starts from the
    newest checkpoint of that earlier execution's run and keeps checkpointing there (the state machine refuses a
    name with no checkpoints); the earlier execution must have ended, and no running execution resume from it.
    """
    target = current_target()
    execution = name or execution_name()
    if not NEW_EXECUTION_NAME.fullmatch(execution):
        raise KitUsageError(
            f"--name {execution!r}: an execution name here is 1-80 letters, digits, '-' and '_' (Step Functions "
            "logs only such names)"
        )
    earlier = resume_from.rsplit(":", 1)[-1] if resume_from else None
    if earlier is not None and not EXECUTION_NAME.fullmatch(earlier):
        raise KitUsageError(f"--resume-from {resume_from!r} is not the name or ARN of an execution")
    if earlier == execution:
        raise KitUsageError("--resume-from names this execution itself: give the earlier execution's name")
    outputs = target.outputs("4-jobs")
    machine = aws.require_output(outputs, "StateMachineArn", target.stack_name("4-jobs"))
    bucket = aws.require_output(outputs, "ArtifactsBucketName", target.stack_name("4-jobs"))
    sfn = target.client("stepfunctions")
    chain: tuple[str, ...] = ()
    if earlier:
        # A run that resumed another checkpointed under that one's prefix: resuming it resumes the first run.
        earlier, chain = resumed_root(sfn, machine, earlier)
    checkpoints = f"s3://{bucket}/{CHECKPOINTS_PREFIX}{earlier or execution}/"
    if earlier:
        # Not an execution is fine: checkpoints copied to checkpoints/<name>/ by hand resume too (the docs').
        job_of = functools.partial(training_job_name, target)
        check_resumable(
            sfn, machine, earlier, checkpoints, chain=chain, training_job=(target.client("sagemaker"), job_of)
        )
    else:
        _refuse_used_prefix(target, bucket, execution, checkpoints)
    if name is not None:  # a generated name is new (its time and a random part)
        _refuse_taken_job_name(target, sfn, machine, execution)
    out = console()
    execution_input = json.dumps({"resumeFrom": earlier} if earlier else {})
    action = "starting the training-job state machine"
    arn = start_run(target, sfn, machine, execution, execution_input, action, "l4")
    settings = target.config.pretrain
    out.print(Text(f"started {arn}"))
    out.print(
        Text(
            f"training job {training_job_name(target, arn)}: {settings.job_instance_count} x "
            f"{settings.job_instance_type}, "
            + (f"resuming from the checkpoints in {checkpoints}" if earlier else f"checkpoints in {checkpoints}"),
            style="dim",
        )
    )
    follow = target.kit_command("l4", f"status {execution} --wait")
    if not wait:
        out.print(Text(f"Follow it with: {follow}", style="dim"))
        return
    final = follow_execution(
        out,
        sfn,
        arn,
        timeout=timeout,
        poll_seconds=poll_seconds,
        resume_hint=follow,
        detail=_training_job_detail(arn),
    )
    finish(print_execution(out, sfn, arn, final))


@l4.command(name="status")
@click.argument("execution", required=False, metavar="[EXECUTION]")
@click.option("--wait", is_flag=True, help="Follow the execution until it ends (exit 1 unless it succeeds).")
@wait_options(timeout_s=None, poll_s=30, timeout_default=FOLLOW_UNTIL_THE_MACHINE_TIMES_OUT)
def l4_status(execution: str | None, wait: bool, timeout: int | None, poll_seconds: float) -> None:
    """Summarize a training-job execution (ARN or name; default: the newest)."""
    show_status(
        "4-jobs",
        execution,
        group="l4",
        wait=wait,
        timeout=timeout,
        poll_seconds=poll_seconds,
        start_hint="submit",
        detail=_training_job_detail,
        rows=_training_job_rows,
    )


# API-driven Slurm: HyperPod puts every node in this partition (the default) besides its group's own one.
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-ref.html#sagemaker-hyperpod-ref-slurm-config
HYPERPOD_UNIVERSAL_PARTITION = "dev"


def _slurm_summary(orchestrator: Mapping[str, Any]) -> str:
    """How HyperPod runs Slurm: configured through the API (with its strategy) or by lifecycle scripts."""
    slurm = orchestrator.get("Slurm")
    if slurm is None:
        return ", ".join(orchestrator) or "Slurm (configured by lifecycle scripts)"
    return f"Slurm, configured through the API ({slurm.get('SlurmConfigStrategy') or 'Managed'} strategy)"


def _group_storage(group: Mapping[str, Any]) -> str:
    mounts = [
        f"FSx {config['FsxLustreConfig'].get('MountPath') or '/fsx'}"
        for config in group.get("InstanceStorageConfigs") or []
        if "FsxLustreConfig" in config
    ]
    return ", ".join(mounts) or "-"


@l4.command()
def cluster() -> None:
    """Show the HyperPod cluster: status, instance groups with their Slurm role and partition, and nodes."""
    target = current_target()
    try:
        outputs = target.outputs("4-cluster")
    except StackNotDeployed as exc:
        note = " (the cluster bills while it exists; the zero-idle path is kit l4 submit)"
        raise StackNotDeployed(exc.message + note) from None
    name = aws.require_output(outputs, "ClusterName", target.stack_name("4-cluster"))
    sagemaker = target.client("sagemaker")
    from botocore.exceptions import ClientError

    with aws.aws_errors(f"reading cluster {name}", target.region, target.profile):
        try:
            described = sagemaker.describe_cluster(ClusterName=name)
        except ClientError as exc:
            if aws.not_found(exc):
                stack = target.stack_name("4-cluster")
                again = target.hinted(aws.redeploy_hint(stack), "4-cluster")
                raise KitError(
                    f"cluster {name} is not there although {stack} is deployed: see the stack's events; {again}"
                ) from None
            raise
        nodes: list[dict[str, Any]] = []
        for page in sagemaker.get_paginator("list_cluster_nodes").paginate(ClusterName=name):
            nodes.extend(page["ClusterNodeSummaries"])
    out = console()
    state = str(described.get("ClusterStatus", "?"))
    rows: list[tuple[str, Any]] = [
        ("Cluster", name),
        ("Status", Text(state, style="green" if state == "InService" else "yellow")),
        ("Created", when(described.get("CreationTime"))),
        ("Orchestrator", _slurm_summary(described.get("Orchestrator") or {})),
    ]
    if described.get("FailureMessage"):
        rows.append(("Failure", Text(str(described["FailureMessage"]), style="red")))
    out.print(kv_table(rows))
    groups = Table(
        "Group",
        "Slurm node",
        "Partition",
        "Instance type",
        "Current",
        "Target",
        "Shared storage",
        "Status",
        title="Instance groups",
    )
    partitions: list[str] = []
    shared = {_group_storage(group) for group in described.get("InstanceGroups") or []} - {"-"}
    for group in described.get("InstanceGroups") or []:
        slurm = group.get("SlurmConfig") or {}
        own = list(slurm.get("PartitionNames") or [])
        partitions += [p for p in own if p not in partitions]
        groups.add_row(
            cell(group.get("InstanceGroupName")),
            cell(slurm.get("NodeType") or "-"),
            cell(", ".join([*own, HYPERPOD_UNIVERSAL_PARTITION]) if own else "-"),
            cell(group.get("InstanceType")),
            cell(group.get("CurrentCount", 0)),
            cell(group.get("TargetCount", 0)),
            cell(_group_storage(group)),
            cell(group.get("Status")),
        )
    out.print(groups)
    if partitions:
        # Slurm node names are host names (AWS's HyperPod Slurm pages name a node ip-<ipv4> in their scontrol
        # commands: sagemaker-hyperpod-resiliency-slurm-replace-faulty-instance.html), not the group's name.
        # The sample needs a directory every node sees: /fsx, mounted only with hp_fsx (docs/level-4-pretrain.md).
        where = (
            "in a copy of workloads/pretrain on /fsx (a directory every node sees): sbatch "
            f"--partition {partitions[0]} slurm/pretrain.sbatch"
            if shared
            else "the sample needs a directory every node sees, which this cluster has not: deploy it with "
            "hp_fsx=true (FSx for Lustre on /fsx)"
        )
        out.print(
            Text(
                f"Slurm partitions: {', '.join(partitions)}, and {HYPERPOD_UNIVERSAL_PARTITION} (the default, every "
                f"node); Slurm names each node by its host name (ip-10-1-2-3: the Private DNS below up to the "
                f"first dot; sinfo -N lists them). From the controller or login node, {where}",
                style="dim",
            )
        )
    if not nodes:
        out.print(Text("No nodes yet.", style="yellow"))
        return
    table = Table("Group", "Instance", "Type", "Status", "Launched", "Private DNS", title="Nodes")
    for node in nodes:
        table.add_row(
            cell(node.get("InstanceGroupName")),
            cell(node.get("InstanceId")),
            cell(node.get("InstanceType")),
            cell((node.get("InstanceStatus") or {}).get("Status")),
            cell(when(node.get("LaunchTime"))),
            cell(node.get("PrivateDnsHostname") or "-"),
        )
    out.print(table)
    controller = target.config.pretrain.controller.name
    first = next((n for n in nodes if n.get("InstanceGroupName") == controller), nodes[0])
    cluster_id = str(described.get("ClusterArn", outputs.get("ClusterArn", ""))).rsplit("/", 1)[-1]
    out.print(
        Text(
            "Connect: aws ssm start-session --target "
            f"sagemaker-cluster:{cluster_id}_{first.get('InstanceGroupName')}-{first.get('InstanceId')} "
            f"{target.cli_options()}",
            style="dim",
        )
    )


# --- kit doctor ---------------------------------------------------------------------------------------------
# SageMaker instance quotas: "<type> for training job usage", "<type> for spot training job usage",
# "<type> for cluster usage" (https://docs.aws.amazon.com/general/latest/gr/sagemaker.html#limits_sagemaker), and
# the HyperPod cluster quotas of the "List of common service quotas" in
# https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-prerequisites.html#sagemaker-hyperpod-prerequisites-quotas
HYPERPOD_NODES_PER_CLUSTER = "Maximum number instances allowed per SageMaker HyperPod cluster"
HYPERPOD_NODES_IN_ALL_CLUSTERS = "Total number of instances allowed across SageMaker HyperPod clusters"
HYPERPOD_EBS_GB = "Maximum size of EBS volume in GB for a SageMaker HyperPod cluster instance"


def quota_needs(target: Target, levels: Collection[str] = LEVELS) -> dict[str, int]:
    """SageMaker quota name -> what the configuration needs: the training jobs of Level 3's SageMaker path and of
    Level 4 (the larger count where both use the same quota; and the account's per-job run time and instances),
    and the HyperPod cluster's instances per type (at least 1 to use the type at all), nodes and EBS volume per
    node. Only the needs of ``levels`` count ("3sm": the SageMaker path's, "4": Level 4's), so `kit doctor --level
    3sm` does not ask for Level 4's GPUs."""
    settings = target.config.pretrain
    needs = level3_finetune.sm_quota_needs(target) if "3sm" in levels else {}
    if "4" not in levels:
        return needs
    job = training_job_quota(settings.job_instance_type, settings.job_spot)
    needs[job] = max(needs.get(job, 0), settings.job_instance_count, 1)
    limits = training_job_limits(settings.job_instance_count, settings.job_max_runtime_hours, settings.job_spot)
    for quota, needed in limits.items():
        needs[quota] = max(needs.get(quota, 0), needed)
    for instance_type, count in _cluster_counts(target).items():
        needs[f"{instance_type} for cluster usage"] = max(count, 1)
    nodes = sum(group.count for group in settings.groups)  # controller, login node and compute groups
    needs[HYPERPOD_NODES_PER_CLUSTER] = nodes
    needs[HYPERPOD_NODES_IN_ALL_CLUSTERS] = nodes  # other clusters in the account count against it too
    needs[HYPERPOD_EBS_GB] = settings.ebs_volume_gb
    return needs


def _cluster_counts(target: Target) -> dict[str, int]:
    """The HyperPod cluster's instances per instance type, over all its groups."""
    counts: dict[str, int] = {}
    for group in target.config.pretrain.groups:
        counts[group.instance_type] = counts.get(group.instance_type, 0) + group.count
    return counts


def unscaled_cluster_quotas(target: Target, levels: Collection[str] = LEVELS) -> set[str]:
    """The "<type> for cluster usage" quotas of instance types whose groups all have 0 instances (the default GPU
    group): the cluster is created without them, and they are needed only before a group of the type is scaled
    above 0 (docs/level-4-pretrain.md, "Quotas")."""
    if "4" not in levels:
        return set()
    return {
        f"{instance_type} for cluster usage" for instance_type, count in _cluster_counts(target).items() if not count
    }


def check_quotas(target: Target, book: QuotaBook | None = None, levels: Collection[str] = LEVELS) -> list[Check]:
    """One row per SageMaker quota ``levels`` need (see quota_needs); a value below the need is FIX with how to ask,
    WARN for the instance type of a group with 0 instances (needed before it is scaled up, not to deploy)."""
    absent = "the type may not be offered here"
    book = book or QuotaBook(target)
    later = unscaled_cluster_quotas(target, levels)
    rows = []
    for quota, needed in quota_needs(target, levels).items():
        short = WARN if quota in later else FIX
        [row] = quota_rows(target, book, "sagemaker", {quota: needed}, absent, short=short)
        if quota in later and row.status == WARN:
            row = Check(row.name, WARN, f"{row.detail} (only before a group of this type is scaled above 0 instances)")
        rows.append(row)
    return rows


# The cluster stack's network (stacks/level4_pretrain/network.py) takes one VPC and an Elastic IP per NAT gateway
# from Region quotas the whole account shares, 5 each by default: "VPCs per Region" (L-F678F1CE,
# https://docs.aws.amazon.com/general/latest/gr/vpc-service.html) and "EC2-VPC Elastic IPs" (L-0263D0A3,
# https://docs.aws.amazon.com/general/latest/gr/ec2-service.html). A first deploy past either rolls back.
VPCS_QUOTA = "VPCs per Region"
ELASTIC_IPS_QUOTA = "EC2-VPC Elastic IPs"


def network_needs(target: Target) -> dict[tuple[str, str], int]:
    """(service code, quota name) -> how many of it the cluster stack creates."""
    return {("vpc", VPCS_QUOTA): 1, ("ec2", ELASTIC_IPS_QUOTA): target.config.pretrain.nat_gateways}


def _in_use(target: Target, quota: str) -> int:
    """How many VPCs or Elastic IP addresses of the account the Region holds now (each counts against the quota).
    A VPC another account shares with this one is listed too, and counts against its owner's quota
    (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-sharing.html): only the account's own are counted."""
    ec2 = target.client("ec2")
    if quota == VPCS_QUOTA:
        account = target.client("sts").get_caller_identity()["Account"]
        owned = {"Name": "owner-id", "Values": [account]}  # DescribeVpcs' owner-id filter (botocore ec2)
        pages = ec2.get_paginator("describe_vpcs").paginate(Filters=[owned])
        return sum(len(page.get("Vpcs") or []) for page in pages)
    return len(ec2.describe_addresses().get("Addresses") or [])  # DescribeAddresses is not paginated


def check_network_room(target: Target, book: QuotaBook) -> list[Check]:
    """Room under the VPC and Elastic IP quotas for what a first deploy of the cluster stack creates (none needed
    once the stack is deployed: its own count already)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kit.doctor import FIX, SKIP, guarded, quota_unreadable

    rows: list[Check] = []
    for (service, quota), needed in network_needs(target).items():
        name = f"Quota: {quota}"
        try:
            found = book.find(service, quota)
        except (BotoCoreError, ClientError) as exc:
            rows.append(Check(name, FIX, quota_unreadable(exc, service, target)))
            continue
        if found is None:
            detail = f"Service Quotas lists no {service} quota named {quota!r} in {target.region}"
            rows.append(Check(name, SKIP, detail))
            continue
        action = "ec2:DescribeVpcs" if quota == VPCS_QUOTA else "ec2:DescribeAddresses"
        room = functools.partial(_network_room, target, service, found, needed)
        rows.append(guarded(name, action, target, room))
    return rows


def _network_room(target: Target, service: str, found: tuple[str, float, str], needed: int) -> Check:
    from kit.doctor import FIX, OK, Unread, increase, outputs_in_any_state

    quota, value, code = found
    name, stack = f"Quota: {quota}", target.stack_name("4-cluster")
    used = _in_use(target, quota)
    free = value - used
    detail = f"{value:g} ({code}), {used} in use in {target.region}, the cluster stack creates {needed}"
    if free >= needed:
        return Check(name, OK, f"{detail}: {free:g} free")
    try:
        deployed = outputs_in_any_state(target, stack) is not None
    except Unread:
        deployed = False
    if deployed:
        return Check(name, OK, f"{detail}: {stack} is deployed, and its own are among those in use")
    more = increase(service, quota, code, used + needed, target)
    return Check(name, FIX, f"{detail}: a first deploy would roll back; free some, or {more}")


def doctor_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    network = [f"Quota: {quota}" for _, quota in network_needs(target)] if "4" in levels else []
    return [f"Quota: {quota}" for quota in quota_needs(target, levels)] + network


def doctor_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    sagemaker = check_quotas(target, book, levels)
    return sagemaker + (check_network_room(target, book) if "4" in levels else [])
