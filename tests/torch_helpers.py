"""For the training-program tests of Levels 3 and 4: torch's process-wide settings, and two-rank runs in forked
worker processes.

The workers are forked, so they reuse the test process's imported torch (a fresh interpreter spends longer
importing it than the tiny trainings take). Each worker sets its own thread count to 1 before any work, as
DataLoader workers do; the wait is bounded so that a worker that hangs fails its test instead of stalling the
suite (CI stops a run at 90 minutes).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def tiny_model_settings() -> Iterator[None]:
    """One thread (tiny models run fastest on one; with two on a two-core machine they thrash), and torch's
    process-wide settings restored afterwards: the training programs, run in this process, turn deterministic
    algorithms on, which must not leak into the worker's later tests."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def free_ports(count: int) -> list[int]:
    """``count`` distinct local ports that were free a moment ago (one per run, for its process group)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_forked(worker: Callable[..., None], args: tuple[Any, ...], *, nprocs: int = 2, timeout_s: float = 300) -> None:
    """``worker(rank, *args)`` in ``nprocs`` forked processes; a worker's exception is raised here, and workers
    still running after ``timeout_s`` are killed and fail the test."""
    import torch.multiprocessing

    context = torch.multiprocessing.start_processes(worker, args=args, nprocs=nprocs, start_method="fork", join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=0.5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail(f"the {nprocs} forked training processes did not finish within {timeout_s:.0f} s")
