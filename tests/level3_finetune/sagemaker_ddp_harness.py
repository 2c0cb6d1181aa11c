"""Run several 2-process trainings of the SageMaker fine-tuning program in one pair of worker processes.

Each worker plays the role torchrun gives a process: it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT, then calls sft_train.main() exactly as ``python sft_train.py`` would. Runs execute in order,
each with its own port, and rank r's stdout goes to ``<name>.rank<r>.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path


def worker(rank: int, world_size: int, out_dir: str, runs: list[tuple[str, list[str]]], ports: list[int]) -> None:
    warnings.filterwarnings("ignore")
    import sft_train
    import torch

    torch.set_num_threads(1)
    for (name, argv), port in zip(runs, ports, strict=True):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        os.environ.update(env)
        log_path = Path(out_dir) / f"{name}.rank{rank}.jsonl"
        with open(log_path, "w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle):
            code = sft_train.main(argv, env=env)
        if code != 0:
            raise RuntimeError(f"run {name} exited with {code} on rank {rank}")
