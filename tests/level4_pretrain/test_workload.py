"""The Level 4 pre-training workload on CPU: DDP over gloo, loss, resume, determinism, arguments."""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # CPU-only test environments have no NumPy; torch only warns
    warnings.simplefilter("ignore")
    torch = pytest.importorskip("torch", reason="torch is not installed (make test installs torch==2.13.0)")

from tests.level4_pretrain import ddp_harness
from tests.torch_helpers import free_ports, run_forked, tiny_model_settings

PRETRAIN_DIR = Path(__file__).resolve().parents[2] / "workloads" / "pretrain"
CORPUS = PRETRAIN_DIR / "data" / "corpus.txt"

import byte_corpus  # noqa: E402 (needs torch, checked above)
import checkpoints  # noqa: E402 (needs torch, checked above)
import train  # noqa: E402 (needs torch, checked above)

# A model small enough for two CPU processes to take 20 steps in a fraction of a second (the loss falls from
# ~5.5 to ~3.6 in them); each run's fixed cost, importing torch and its compiler stack, is far larger.
TINY = [
    "--data",
    str(CORPUS),
    "--batch-size",
    "8",
    "--seq-len",
    "32",
    "--d-model",
    "32",
    "--n-layers",
    "2",
    "--n-heads",
    "2",
    "--lr",
    "3e-3",
    "--warmup-steps",
    "5",
    "--dropout",
    "0.1",  # dropout draws random numbers, so an exact resume must restore each rank's RNG
    "--log-every",
    "1",
    "--checkpoint-every",
    "5",
]
TOTAL, INTERRUPT = 20, 10


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    with tiny_model_settings():
        yield


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def losses(log: list[dict[str, Any]]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log if e["event"] == "train"}


def load_model(model_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(model_dir / "model.pt", map_location="cpu")["model"]
    return state


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 2-rank trainings in one pair of workers: a full run, the same run interrupted and resumed, another seed."""
    out = tmp_path_factory.mktemp("ddp")

    def run(name: str, steps: int, seed: int, ckpt: str, model: bool) -> tuple[str, list[str]]:
        argv = [*TINY, "--steps", str(steps), "--seed", str(seed), "--checkpoint-dir", str(out / ckpt)]
        return name, argv + (["--model-dir", str(out / f"{name}-model")] if model else [])

    runs = [
        run("full_a", TOTAL, 7, "ckpt-a", model=True),
        run("part_1", INTERRUPT, 7, "ckpt-c", model=False),
        run("part_2", TOTAL, 7, "ckpt-c", model=True),
        run("other_seed", TOTAL, 8, "ckpt-d", model=False),
    ]
    # The workers are forked from this process (tests/torch_helpers.py). The optimizer's first use imports torch's
    # compiler stack (torch._dynamo, about 2 s of CPU): import it here once, not once per worker. This process
    # never joins a process group.
    importlib.import_module("torch._dynamo")

    run_forked(ddp_harness.worker, (2, str(PRETRAIN_DIR), str(out), runs, free_ports(len(runs))))
    return out


def test_ddp_runs_use_two_gloo_ranks_and_only_rank_0_logs(ddp_runs: Path) -> None:
    start = events(ddp_runs / "full_a.rank0.jsonl")[0]
    assert start["event"] == "start"
    assert (start["world_size"], start["backend"], start["device"]) == (2, "gloo", "cpu")
    assert start["tokens_per_step"] == 8 * 32 * 2
    assert (ddp_runs / "full_a.rank1.jsonl").read_text() == ""


def test_another_seed_gives_another_loss_curve(ddp_runs: Path) -> None:
    first, other = losses(events(ddp_runs / "full_a.rank0.jsonl")), losses(events(ddp_runs / "other_seed.rank0.jsonl"))
    assert list(first) == list(range(1, TOTAL + 1))
    assert other[1] != first[1] and other[TOTAL] != first[TOTAL]


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(ddp_runs: Path) -> None:
    first_part = events(ddp_runs / "part_1.rank0.jsonl")
    assert [e["step"] for e in first_part if e["event"] == "checkpoint"] == [5, 10]
    second_part = events(ddp_runs / "part_2.rank0.jsonl")
    resumed = [e for e in second_part if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == INTERRUPT
    assert resumed[0]["checkpoint"].endswith(f"ckpt-{INTERRUPT:08d}.pt")
    assert next(e for e in second_part if e["event"] == "start")["start_step"] == INTERRUPT
    assert min(losses(second_part)) and min(losses(second_part)) > 0
    assert sorted(losses(second_part)) == list(range(INTERRUPT + 1, TOTAL + 1))

    uninterrupted = losses(events(ddp_runs / "full_a.rank0.jsonl"))
    for step, loss in losses(second_part).items():
        assert loss == pytest.approx(uninterrupted[step], rel=1e-5, abs=1e-6), step
    resumed_model, full_model = load_model(ddp_runs / "part_2-model"), load_model(ddp_runs / "full_a-model")
    assert resumed_model.keys() == full_model.keys()
    for name, tensor in full_model.items():
        torch.testing.assert_close(resumed_model[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoints_hold_model_optimizer_step_and_every_ranks_rng(ddp_runs: Path) -> None:
    directory = ddp_runs / "ckpt-a"
    assert [step for step, _ in checkpoints.list_checkpoints(directory)] == [10, 15, 20]  # keep 3
    state = checkpoints.load(checkpoints.checkpoint_path(directory, TOTAL))
    assert state["step"] == TOTAL and state["world_size"] == 2 and state["seed"] == 7
    assert {"model", "optimizer", "config", "rng"} <= state.keys()
    assert state["optimizer"]["state"]  # Adam moments were saved
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_torchrun_lowers_the_loss_and_repeats_the_same_seeds_curve_exactly(ddp_runs: Path, tmp_path: Path) -> None:
    """The real launcher, unchanged program: python -m torch.distributed.run --nproc_per_node 2 train.py.

    Same seed and world size as the full_a run (launched by the test harness): the losses must be
    identical, step for step, which is the determinism contract.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(PRETRAIN_DIR / "train.py"),
        *TINY,
        "--steps",
        str(TOTAL),
        "--seed",
        "7",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--model-dir",
        str(tmp_path / "model"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    log = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    curve = losses(log)
    assert list(curve) == list(range(1, TOTAL + 1))
    values = list(curve.values())
    assert sum(values[:5]) / 5 - sum(values[-5:]) / 5 > 1.0, values  # from ~5.5 (uniform bytes) to below 4.5
    assert log[-1]["event"] == "done" and all(e["tokens_per_s"] > 0 for e in log if e["event"] == "train")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["d_model"] == 32

    assert curve == losses(events(ddp_runs / "full_a.rank0.jsonl"))  # same seed, same world size: same losses
    for name, tensor in load_model(ddp_runs / "full_a-model").items():
        assert torch.equal(load_model(tmp_path / "model")[name], tensor), name


# ----------------------------------------------------------------------------------------------
# Arguments, environment and errors (single process, in-process)
# ----------------------------------------------------------------------------------------------


def test_sagemaker_environment_maps_to_its_paths() -> None:
    args = train.build_parser().parse_args([])
    sagemaker_env = {
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_TRAINING_ENV": "{}",
    }
    assert train.resolve_paths(args, sagemaker_env) == train.Paths(
        data=Path("/opt/ml/input/data/train"),
        checkpoint_dir=Path("/opt/ml/checkpoints"),
        model_dir=Path("/opt/ml/model"),
    )
    explicit = train.build_parser().parse_args(["--data", "d", "--checkpoint-dir", "c", "--model-dir", "m"])
    assert train.resolve_paths(explicit, sagemaker_env) == train.Paths(Path("d"), Path("c"), Path("m"))
    local = train.resolve_paths(train.build_parser().parse_args(["--data", "d"]), {})
    assert local == train.Paths(Path("d"), Path("checkpoints"), None)


def test_hyperparameter_style_names_are_accepted() -> None:
    args = train.build_parser().parse_args(["--batch_size", "4", "--seq-len", "16", "--checkpoint_every", "5"])
    assert (args.batch_size, args.seq_len, args.checkpoint_every) == (4, 16, 5)


def test_torchrun_environment_is_read_and_checked() -> None:
    assert train.read_dist_env({}) == train.DistEnv(rank=0, world_size=1, local_rank=0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert train.read_dist_env(env) == train.DistEnv(rank=3, world_size=4, local_rank=1)
    with pytest.raises(train.ConfigError, match="MASTER_ADDR and MASTER_PORT unset: launch with torchrun"):
        train.read_dist_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(train.ConfigError, match="RANK=2 does not fit WORLD_SIZE=2"):
        train.read_dist_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    # A multi-instance SageMaker job started without torchrun: each host would train alone on one prefix
    with pytest.raises(train.ConfigError, match="SM_HOSTS lists 2 hosts but WORLD_SIZE is unset"):
        train.read_dist_env({"SM_HOSTS": '["algo-1", "algo-2"]'})
    assert train.read_dist_env({"SM_HOSTS": '["algo-1"]'}).world_size == 1  # one instance runs alone
    # `srun python train.py` on two tasks, not `srun ... torchrun`: each would be rank 0 of 1 on the same /fsx files
    with pytest.raises(train.ConfigError, match="SLURM_STEP_NUM_TASKS=2 but WORLD_SIZE is unset"):
        train.read_dist_env({"SLURM_STEP_NUM_TASKS": "2"})
    assert train.read_dist_env({"SLURM_STEP_NUM_TASKS": "1"}).world_size == 1  # one task runs alone
    assert train.read_dist_env({**env, "SLURM_STEP_NUM_TASKS": "2"}).world_size == 4  # srun ... torchrun
    launched = {**env, "SM_HOSTS": '["algo-1", "algo-2"]'}
    assert train.read_dist_env(launched).world_size == 4  # torchrun across the hosts


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _empty_file(tmp: Path) -> Path:
    (tmp / "empty.txt").write_bytes(b"")
    return tmp / "empty.txt"


def _tiny_file(tmp: Path) -> Path:
    (tmp / "tiny.txt").write_text("too short")
    return tmp / "tiny.txt"


@pytest.mark.parametrize(
    ("make_data", "extra", "env", "message"),
    [
        (None, [], {}, "no training data: pass --data PATH or set SM_CHANNEL_TRAIN"),
        (lambda tmp: tmp / "missing", [], {}, "does not exist (pass --data or set SM_CHANNEL_TRAIN)"),
        (None, [], {"SM_CHANNEL_TRAIN": "/nonexistent/train"}, "data path /nonexistent/train does not exist"),
        (_empty_dir, [], {}, "holds no files"),
        (_empty_file, [], {}, "is empty (0 bytes)"),
        (_tiny_file, ["--seq-len", "32"], {}, "too few for one sequence of 32 tokens"),
        (_tiny_file, ["--steps", "0"], {}, "--steps must be at least 1"),
        (_tiny_file, ["--d-model", "30", "--n-heads", "4"], {}, "d_model (30) must be divisible by n_heads (4)"),
        (_tiny_file, ["--n-heads", "0"], {}, "n_heads must be at least 1, got 0"),  # was a ZeroDivisionError
        (_tiny_file, ["--lr", "-1"], {}, "--lr must be a positive number"),
    ],
)
def test_bad_arguments_and_data_exit_2_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_data: Any,
    extra: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    argv = (["--data", str(make_data(tmp_path))] if make_data else []) + extra
    assert train.main(argv, env=env) == train.EXIT_USAGE
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.startswith("error: ") and captured.out == ""


def test_packaged_entry_point_runs_alone_and_exits_2_on_missing_data(tmp_path: Path) -> None:
    """train.py from sourcedir.tar.gz, as SageMaker unpacks it: its imports resolve, bad input exits 2."""
    import package_sourcedir

    code = tmp_path / "code"
    with tarfile.open(fileobj=io.BytesIO(package_sourcedir.sourcedir_bytes()), mode="r:gz") as tar:
        tar.extractall(code, filter="data")
    result = subprocess.run(
        [sys.executable, "train.py", "--data", str(tmp_path / "nope")],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SM_")},
    )
    assert result.returncode == 2, result.stderr
    assert f"error: data path {tmp_path / 'nope'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_single_process_run_without_torchrun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TINY, "--steps", "3", "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert train.main(argv, env={}) == 0
    log = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert log[0]["event"] == "start" and log[0]["world_size"] == 1
    assert [e["step"] for e in log if e["event"] == "train"] == [1, 2, 3]
    assert checkpoints.latest_step(tmp_path / "ckpt") == 3
    # Running again with the same --steps resumes at 3 and has nothing left to do.
    assert train.main(argv, env={}) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in again] == ["resumed", "start", "done"]


def test_resuming_with_another_model_shape_is_refused(tmp_path: Path) -> None:
    base = [*TINY, "--steps", "2", "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert train.main(base, env={}) == 0
    wider = [*base, "--d-model", "64", "--steps", "4"]
    with pytest.raises(RuntimeError, match="use the same model arguments or another --checkpoint-dir"):
        train.main(wider, env={})


# ----------------------------------------------------------------------------------------------
# Data sharding and checkpoint files
# ----------------------------------------------------------------------------------------------


def test_ranks_read_disjoint_blocks_that_cover_the_epoch() -> None:
    data = CORPUS.read_bytes()
    shards = [
        byte_corpus.ShardedByteBatches(data, seq_len=32, batch_size=4, rank=r, world_size=2, seed=3) for r in (0, 1)
    ]
    per_rank = [s._epoch_starts(0).tolist() for s in shards]
    assert len(per_rank[0]) == len(per_rank[1]) == shards[0].per_rank  # every rank takes the same number of steps
    padding = 2 * shards[0].per_rank - shards[0].num_blocks  # DistributedSampler repeats blocks to even out
    starts = [set(blocks) for blocks in per_rank]
    assert len(starts[0] & starts[1]) <= padding <= 1
    assert len(starts[0] | starts[1]) == shards[0].num_blocks
    x0, y0 = shards[0].batch(5)
    x1, _ = shards[1].batch(5)
    assert x0.shape == (4, 32) and x0.dtype == torch.int64
    assert torch.equal(x0[:, 1:], y0[:, :-1])  # targets are the inputs shifted by one byte
    assert not torch.equal(x0, x1)
    again = byte_corpus.ShardedByteBatches(data, seq_len=32, batch_size=4, rank=0, world_size=2, seed=3)
    assert torch.equal(again.batch(5)[0], x0)  # a pure function of (seed, step, rank, world size)
    assert bytes(x0[0].tolist()) in data


def test_a_node_whose_gpus_torch_cannot_use_is_refused_not_trained_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: select_device fell back to CPU and gloo whenever CUDA was unavailable, so a GPU node with a driver
    older than the torch build (the Slurm path's PyPI wheel) trained at CPU speed, said only in a log field."""
    import ddp_runtime

    monkeypatch.setattr(train, "visible_gpus", lambda: 8)
    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: False)
    assert train.main(["--data", str(_tiny_file(tmp_path))]) == train.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: this node lists 8 GPU(s) (nvidia-smi -L) but torch") and "not training" in err
    ddp_runtime.check_cuda(0, False)  # a CPU node: the CPU it is
    ddp_runtime.check_cuda(8, True)


def test_visible_gpus_counts_the_drivers_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ddp_runtime

    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A10G (UUID: GPU-1)'\necho 'GPU 1: NVIDIA A10G (UUID: GPU-2)'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert ddp_runtime.visible_gpus() == 2
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert ddp_runtime.visible_gpus() == 0


@pytest.mark.parametrize("world_size", [2, 5, 31, 40])
def test_each_rank_gets_the_blocks_distributed_sampler_would_give_it(world_size: int) -> None:
    """The tail is padded as torch's DistributedSampler pads it, repeating the epoch's order as often as it takes.
    Before, a world larger than twice the blocks (64 instances x 8 GPUs at --seq-len 512 on the shipped corpus)
    left its last ranks an empty shard: IndexError at their first batch, and the others waiting in an all-reduce."""
    from torch.utils.data import DistributedSampler

    data = bytes(range(256)) * 2  # 512 bytes: 14 blocks of 33 at --seq-len 32
    seed = 3
    for rank in range(world_size):
        shard = byte_corpus.ShardedByteBatches(
            data, seq_len=32, batch_size=2, rank=rank, world_size=world_size, seed=seed
        )
        assert shard.num_blocks == 14
        generator = torch.Generator().manual_seed(seed)  # the epoch's offset, then its order, as the class draws them
        offset = int(torch.randint(0, shard.block, (1,), generator=generator))
        order = torch.randperm(shard.num_blocks, generator=generator).tolist()
        sampler = DistributedSampler(range(shard.num_blocks), num_replicas=world_size, rank=rank, shuffle=False)
        expected = [order[index] for index in sampler]
        assert ((shard._epoch_starts(0) - offset) // shard.block).tolist() == expected, rank
        inputs, targets = shard.batch(0)
        assert inputs.shape == targets.shape == (2, 32)


def test_later_epochs_reshuffle() -> None:
    data = CORPUS.read_bytes()
    batches = byte_corpus.ShardedByteBatches(data, seq_len=32, batch_size=4, rank=0, world_size=1, seed=3)
    per_epoch = -(-batches.per_rank // 4)  # the first step whose batch starts in epoch 1
    assert batches.epoch_of(per_epoch) == 1
    assert not torch.equal(batches.batch(0)[0], batches.batch(per_epoch)[0])


def test_checkpoint_writes_are_atomic_and_pruned(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        checkpoints.save_atomic({"step": step}, tmp_path, step, keep=2)
    (tmp_path / ".ckpt-00000020.pt.123.tmp").write_bytes(b"half-written")  # a crash mid-write
    (tmp_path / "ckpt-final.pt").write_bytes(b"not ours")
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [10, 15]
    assert checkpoints.latest_step(tmp_path) == 15
    assert checkpoints.load(checkpoints.checkpoint_path(tmp_path, 15)) == {"step": 15}
    assert checkpoints.latest_step(tmp_path / "absent") is None
    # The next save removes what a killed save left behind (its cleanup never ran), and nothing else.
    checkpoints.save_atomic({"step": 20}, tmp_path, 20, keep=2)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["ckpt-00000015.pt", "ckpt-00000020.pt", "ckpt-final.pt"]


class _Planted:
    """What someone with write access to a checkpoint prefix could plant: unpickling it runs ``touch``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_loading_a_checkpoint_runs_no_code_it_carries(tmp_path: Path) -> None:
    # A resumed run reads an earlier run's checkpoint from S3: its load may build tensors and plain values only.
    marker = tmp_path / "ran"
    path = checkpoints.checkpoint_path(tmp_path, 1)
    torch.save({"step": 1, "payload": _Planted(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        checkpoints.load(path)
    assert not marker.exists()


def _hangs(rank: int) -> None:
    time.sleep(120)


def _fails(rank: int) -> None:
    raise ValueError(f"rank {rank} broke")


def test_forked_ranks_that_hang_fail_the_test_instead_of_stalling_the_suite() -> None:
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="did not finish within 1 s"):
        run_forked(_hangs, (), timeout_s=1)
    assert time.monotonic() - started < 60


def test_an_error_in_a_forked_rank_is_raised_in_the_test() -> None:
    with pytest.raises(Exception, match=r"rank [01] broke"):
        run_forked(_fails, ())


def test_the_tiny_model_settings_leave_torch_as_they_found_it() -> None:
    # Given deterministic algorithms off (as a worker's other tests expect them)
    torch.use_deterministic_algorithms(False)
    threads = torch.get_num_threads()
    # When a training program runs inside the settings and turns them on
    with tiny_model_settings():
        assert torch.get_num_threads() == 1
        torch.use_deterministic_algorithms(True, warn_only=True)
    # Then both are back
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == threads
