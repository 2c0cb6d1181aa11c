"""Atomic training checkpoints: ``sft-<step:08d>.pt`` in one directory, newest step wins.

A checkpoint holds the LoRA weights (the only trainable parameters, a few MB), the optimizer state, the
step, every rank's RNG state and the settings that must match to resume. It is written to a hidden temporary
file in the same directory, flushed and fsynced, then renamed over its final name (atomic on POSIX file
systems), so a job stopped mid-write (a Spot interruption) never leaves a truncated checkpoint behind.
SageMaker uploads the directory (``/opt/ml/checkpoints`` by default) to the job's CheckpointConfig S3 URI
and restores it when a job with the same S3 URI starts, which is how a run resumes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^sft-(\d{8})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"sft-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in the directory, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_step(directory: Path) -> int | None:
    found = list_checkpoints(directory)
    return found[-1][0] if found else None


def save_atomic(state: dict[str, Any], directory: Path, step: int, *, keep: int) -> Path:
    """Write the state as step's checkpoint, then delete all but the newest ``keep`` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def load(path: Path) -> dict[str, Any]:
    # weights_only=False: the file holds RNG byte tensors and plain Python values next to the tensors, and
    # it is a file this job (or the previous attempt of it) wrote itself.
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state
