"""Atomic checkpoint files: ``<prefix>-<step:08d>.pt`` in one directory, newest step wins.

The prefix is ``ckpt`` for the pre-training program (train.py) and ``sft`` for the fine-tuning program
(workloads/finetune_sagemaker/sft_train.py, whose source directory ships this module too).

A checkpoint is written to a hidden temporary file in the same directory, flushed and fsynced, then
renamed over its final name (``os.replace`` is atomic on POSIX file systems, FSx for Lustre
included), so a job killed mid-write never leaves a truncated ``ckpt-*.pt`` behind. SageMaker syncs
the directory to S3 when the training job has a CheckpointConfig.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# The file name prefixes: the stacks' resume checks read them (only the files the programs write count as
# checkpoints, not a temporary a killed save left), so this module imports torch only where it saves or loads.
PREFIX = "ckpt"
SFT_PREFIX = "sft"


def checkpoint_path(directory: Path, step: int, *, prefix: str = PREFIX) -> Path:
    return directory / f"{prefix}-{step:08d}.pt"


def temporary_path(final: Path) -> Path:
    """Where a save writes ``final`` before renaming it: hidden, so it never starts with the checkpoint prefix."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def list_checkpoints(directory: Path, *, prefix: str = PREFIX) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in the directory, oldest first."""
    if not directory.is_dir():
        return []
    name = re.compile(rf"^{re.escape(prefix)}-(\d{{8}})\.pt$")
    found = []
    for entry in directory.iterdir():
        match = name.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_step(directory: Path, *, prefix: str = PREFIX) -> int | None:
    checkpoints = list_checkpoints(directory, prefix=prefix)
    return checkpoints[-1][0] if checkpoints else None


def save_atomic(state: dict[str, Any], directory: Path, step: int, *, keep: int, prefix: str = PREFIX) -> Path:
    """Write the state as step's checkpoint, then delete all but the newest ``keep`` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step, prefix=prefix)
    tmp = temporary_path(final)
    # A save killed before its cleanup ran (SIGKILL, or SIGTERM with no handler) left its full-size temporary file;
    # one writer saves at a time, so every other temporary of this prefix is stale (and on SageMaker would be
    # synced to S3 and back into every resumed job).
    for stale in directory.glob(f".{prefix}-*.pt.*.tmp"):
        stale.unlink(missing_ok=True)
    import torch

    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_directory(directory)
    for _, old in list_checkpoints(directory, prefix=prefix)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors and plain Python values (RNG byte tensors, dicts, lists, numbers, strings).

    weights_only=True: a checkpoint may come from an earlier run's S3 prefix (resumeFrom), which other principals
    with S3 write access can reach, and an unrestricted load unpickles anything, i.e. runs its code
    (https://docs.pytorch.org/docs/stable/generated/torch.load.html). Nothing the programs save needs more.
    """
    import torch

    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
