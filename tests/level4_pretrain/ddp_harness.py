"""Run several 2-process DDP trainings in one pair of worker processes (forked: torch is imported once).

Each worker process plays the role torchrun gives a worker: it sets RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT, then calls train.main() exactly as ``python train.py`` would. Runs are
executed in order, each with its own port, and rank r's stdout goes to ``<name>.rank<r>.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path


def worker(
    rank: int,
    world_size: int,
    pretrain_dir: str,
    out_dir: str,
    runs: list[tuple[str, list[str]]],
    ports: list[int],
) -> None:
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch
    import train

    torch.set_num_threads(1)
    for (name, argv), port in zip(runs, ports, strict=True):
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        log_path = Path(out_dir) / f"{name}.rank{rank}.jsonl"
        with open(log_path, "w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle):
            code = train.main(argv)
        if code != 0:
            raise RuntimeError(f"run {name} exited with {code} on rank {rank}")
