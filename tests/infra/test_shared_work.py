"""The work the suite's pytest-xdist workers share (tests/conftest.py): done once per key and run, never stale."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from tests.conftest import once_per_run, run_folder


def _count_and_return(folder: Path, key: str, counter: Path) -> str:
    def make() -> str:
        with counter.open("a") as out:
            out.write("x")
        time.sleep(0.3)  # long enough for the other worker to ask meanwhile
        return f"made for {key}"

    return once_per_run(folder, key, make)


def _worker(folder: Path, key: str, counter: Path, results: Path) -> None:
    value = _count_and_return(folder, key, counter)
    with results.open("a") as out:
        out.write(value + "\n")


def test_two_workers_asking_at_once_compute_once_and_read_the_same_result(tmp_path: Path) -> None:
    counter, results = tmp_path / "made", tmp_path / "results"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(tmp_path, "k", counter, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert counter.read_text() == "x"
    assert results.read_text().splitlines() == ["made for k", "made for k"]


def test_another_key_is_computed_again(tmp_path: Path) -> None:
    counter = tmp_path / "made"
    assert _count_and_return(tmp_path, "a", counter) == "made for a"
    assert _count_and_return(tmp_path, "a", counter) == "made for a"
    assert _count_and_return(tmp_path, "a ", counter) == "made for a "
    assert counter.read_text() == "xx"


def test_a_failed_computation_leaves_nothing_and_the_next_ask_computes(tmp_path: Path) -> None:
    def broken() -> str:
        raise RuntimeError("synthesis failed")

    with pytest.raises(RuntimeError, match="synthesis failed"):
        once_per_run(tmp_path, "k", broken)
    assert once_per_run(tmp_path, "k", lambda: "fixed") == "fixed"


def test_the_shared_folder_is_inside_this_runs_base_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    # pytest makes a new base folder for every run (xdist workers get one folder each inside it), so nothing
    # that a previous run computed, maybe on an older tree, can be found in the shared folder.
    base = tmp_path_factory.getbasetemp()
    run = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    assert run_folder(tmp_path_factory) == run / "shared"
