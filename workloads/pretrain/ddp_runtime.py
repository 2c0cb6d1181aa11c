"""What both training programs (train.py here, workloads/finetune_sagemaker/sft_train.py) need from their launcher
and torch.distributed: the process coordinates torchrun sets, the device and backend, the learning-rate warm-up,
the JSON event log, and the rank-aware RNG and checkpoint-step exchanges that make a resumed run exact.

The fine-tuning program's source directory ships this module as it is (workloads/finetune_sagemaker/
sagemaker_job.py SHARED_FILES).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
import torch.distributed as dist


class ConfigError(ValueError):
    """An argument or environment value the run cannot start with."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def read_dist_env(env: Mapping[str, str]) -> DistEnv:
    """torchrun's process coordinates; a plain ``python <program>.py`` is rank 0 of 1."""

    def number(name: str, default: int) -> int:
        raw = env.get(name, "")
        if raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None

    world_size = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    local_rank = number("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world_size}")
    if world_size > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world_size} but {' and '.join(missing)} unset: launch with torchrun")
    elif env.get("WORLD_SIZE", "") == "" and len(_sagemaker_hosts(env)) > 1:
        # A multi-instance SageMaker job without torchrun: every host would train alone as rank 0 of 1 and write
        # the same checkpoint prefix and model files (SM_HOSTS lists the job's hosts).
        raise ConfigError(
            f"SM_HOSTS lists {len(_sagemaker_hosts(env))} hosts but WORLD_SIZE is unset: launch with torchrun "
            "(the job's torch_distributed setting)"
        )
    elif env.get("WORLD_SIZE", "") == "" and number("SLURM_STEP_NUM_TASKS", 1) > 1:
        # `srun python train.py` on several tasks: srun sets the step's task count (SLURM_STEP_NUM_TASKS, srun's
        # output environment variables: https://slurm.schedmd.com/srun.html), and
        # each task would train alone as rank 0 of 1 into the same checkpoint directory on /fsx.
        raise ConfigError(
            f"SLURM_STEP_NUM_TASKS={env['SLURM_STEP_NUM_TASKS']} but WORLD_SIZE is unset: launch each node's "
            "processes with torchrun (slurm/pretrain.sbatch runs `srun ... torchrun`)"
        )
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def _sagemaker_hosts(env: Mapping[str, str]) -> list[str]:
    """The hosts of a SageMaker training job (SM_HOSTS, a JSON list); none outside SageMaker or when unreadable."""
    import json

    try:
        hosts = json.loads(env.get("SM_HOSTS", "[]"))
    except ValueError:
        return []
    return [str(host) for host in hosts] if isinstance(hosts, list) else []


def visible_gpus() -> int:
    """The GPUs the node's NVIDIA driver lists (``nvidia-smi -L``); 0 on a node without one."""
    import shutil
    import subprocess

    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        listed = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


def check_cuda(gpus: int, cuda_available: bool) -> None:
    """A node whose driver lists GPUs that torch cannot use would train on the CPU, far slower and without a word
    (select_device falls back to CPU and gloo): a driver older than the torch build needs (the PyPI wheel of the
    Slurm path brings its own CUDA runtime), or a job not given the node's GPUs. Refused instead."""
    if gpus and not cuda_available:
        raise ConfigError(
            f"this node lists {gpus} GPU(s) (nvidia-smi -L) but torch {torch.__version__} cannot use CUDA (built "
            f"for CUDA {torch.version.cuda}): the NVIDIA driver may be older than this torch build needs, or the job "
            "was not given the GPUs; not training on the CPU"
        )


def select_device(denv: DistEnv) -> tuple[torch.device, str, bool]:
    """(device, process-group backend, CUDA in use) for this rank, with deterministic algorithms on."""
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.cuda.set_device(denv.local_rank)
        device = torch.device("cuda", denv.local_rank)
    else:
        device = torch.device("cpu")
    # warn_only: an op without a deterministic CUDA implementation (e.g. the memory-efficient attention backward)
    # warns instead of failing the run, so GPU runs are reproducible only up to such kernels; CPU runs are exact.
    torch.use_deterministic_algorithms(True, warn_only=True)
    return device, "nccl" if use_cuda else "gloo", use_cuda


def learning_rate(step: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up to the peak, then constant: independent of --steps, so extending a run is exact."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak


class JsonLog:
    """One JSON object per line on stdout, from rank 0 only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, event: str, **fields: Any) -> None:
        if self.enabled:
            now = datetime.now(timezone.utc)  # noqa: UP017 - datetime.UTC needs Python 3.11; images may be older
            record = {"event": event, "time": now.isoformat(timespec="milliseconds"), **fields}
            print(json.dumps(record, default=str), flush=True)


def rng_state(use_cuda: bool) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if use_cuda else None}


def set_rng_state(state: Mapping[str, Any], use_cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    if use_cuda and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(denv: DistEnv, device: torch.device, use_cuda: bool) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (plain tensor all_gather: no NumPy needed)."""
    mine = rng_state(use_cuda)
    if not denv.distributed:
        return [mine]
    flat = torch.cat([mine["torch"], mine["cuda"]]) if use_cuda else mine["torch"]
    flat = flat.to(device)
    gathered = [torch.empty_like(flat) for _ in range(denv.world_size)]
    dist.all_gather(gathered, flat)
    size = mine["torch"].numel()
    return [{"torch": g[:size].cpu(), "cuda": g[size:].cpu() if use_cuda else None} for g in gathered]


def broadcast_step(step: int | None, denv: DistEnv, device: torch.device) -> int | None:
    """Rank 0's view of the newest checkpoint step, on every rank."""
    if not denv.distributed:
        return step
    value = torch.tensor([-1 if step is None else step], dtype=torch.int64, device=device)
    dist.broadcast(value, src=0)
    received = int(value.item())
    return None if received < 0 else received
