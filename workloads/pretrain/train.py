"""Pre-train a tiny GPT-style byte-level language model from scratch, data-parallel with DDP.

One program for every launcher:

* single process:        ``python train.py --data data/corpus.txt --steps 200``
* one node, 2 processes: ``torchrun --nproc_per_node 2 train.py --data data/corpus.txt``
* Slurm (HyperPod):      ``srun torchrun --nnodes $SLURM_NNODES ... train.py`` (see slurm/pretrain.sbatch)
* SageMaker training job: entry point ``train.py`` with ``sagemaker_torch_distributed_enabled`` (see SAGEMAKER.md)

torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT select the process group
(backend ``nccl`` when CUDA is available, else ``gloo``). On SageMaker the data directory defaults to
``SM_CHANNEL_TRAIN``, checkpoints go to ``/opt/ml/checkpoints`` (synced to S3 when the job has a
CheckpointConfig) and the final model to ``SM_MODEL_DIR``.

Every run resumes from the newest checkpoint in the checkpoint directory. ``--steps`` is the total
number of optimizer steps to reach, so re-running with a larger ``--steps`` extends a finished run.
Rank 0 prints one JSON object per line (events ``start``, ``resumed``, ``train``, ``checkpoint``,
``model_saved``, ``done``); errors in arguments or data print ``error: ...`` to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The training images ship NumPy, local CPU test environments may not; torch only warns about it.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import byte_corpus  # noqa: E402
import checkpoints  # noqa: E402
import sagemaker_container  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from ddp_runtime import (  # noqa: E402 (workloads/pretrain/ddp_runtime.py)
    ConfigError,
    DistEnv,
    JsonLog,
    check_cuda,
    learning_rate,
    read_dist_env,
    select_device,
    visible_gpus,
)
from ddp_runtime import broadcast_step as _broadcast_step  # noqa: E402
from ddp_runtime import gather_rng_states as _gather_rng_states  # noqa: E402
from ddp_runtime import set_rng_state as _set_rng_state  # noqa: E402
from tiny_gpt import GPTConfig, TinyGPT  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

SAGEMAKER_CHECKPOINT_DIR = sagemaker_container.CHECKPOINT_DIR
TRAIN_VARIABLE = sagemaker_container.channel_variable(sagemaker_container.TRAIN_CHANNEL)  # SM_CHANNEL_TRAIN
EXIT_USAGE = 2


@dataclass(frozen=True)
class Paths:
    data: Path
    checkpoint_dir: Path
    model_dir: Path | None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def add(flag: str, **kwargs: Any) -> None:
        # SageMaker passes hyperparameters as --name value; accept snake_case names too.
        names = [flag] + (["--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [])
        parser.add_argument(*names, **kwargs)

    add("--data", type=Path, default=None, help="corpus file or directory (default: $SM_CHANNEL_TRAIN)")
    add(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help=f"checkpoint directory (default: {SAGEMAKER_CHECKPOINT_DIR} on SageMaker, else ./checkpoints)",
    )
    add("--model-dir", type=Path, default=None, help="where the final model goes (default: $SM_MODEL_DIR)")
    add("--steps", type=int, default=1000, help="total optimizer steps to reach (resumed runs count earlier steps)")
    add("--batch-size", type=int, default=16, help="sequences per process per step")
    add("--seq-len", type=int, default=128, help="tokens (bytes) per sequence")
    add("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    add("--warmup-steps", type=int, default=20, help="linear warm-up steps, then a constant learning rate")
    add("--weight-decay", type=float, default=0.1)
    add("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 disables clipping")
    add("--seed", type=int, default=1234)
    add("--checkpoint-every", type=int, default=100, help="steps between checkpoints (the last step always saves)")
    add("--keep-checkpoints", type=int, default=3, help="how many recent checkpoints to keep")
    add("--log-every", type=int, default=10, help="steps between loss/throughput log lines")
    add("--d-model", type=int, default=128)
    add("--n-layers", type=int, default=4)
    add("--n-heads", type=int, default=4)
    add("--dropout", type=float, default=0.0)
    return parser


def on_sagemaker(env: Mapping[str, str]) -> bool:
    """True inside a SageMaker training container (the training toolkit exports SM_* variables)."""
    return "SM_TRAINING_ENV" in env or "SM_MODEL_DIR" in env


def resolve_paths(args: argparse.Namespace, env: Mapping[str, str]) -> Paths:
    """Arguments first, then SageMaker's environment, then local defaults."""
    data = args.data or (Path(env[TRAIN_VARIABLE]) if env.get(TRAIN_VARIABLE) else None)
    if data is None:
        raise ConfigError(f"no training data: pass --data PATH or set {TRAIN_VARIABLE}")
    if args.checkpoint_dir is not None:
        checkpoint_dir = args.checkpoint_dir
    elif on_sagemaker(env):
        checkpoint_dir = Path(SAGEMAKER_CHECKPOINT_DIR)
    else:
        checkpoint_dir = Path("checkpoints")
    model_dir = args.model_dir or (Path(env["SM_MODEL_DIR"]) if env.get("SM_MODEL_DIR") else None)
    return Paths(data=data, checkpoint_dir=checkpoint_dir, model_dir=model_dir)


def validate_args(args: argparse.Namespace) -> GPTConfig:
    positive = ("steps", "batch_size", "seq_len", "checkpoint_every", "log_every", "keep_checkpoints")
    for name in positive:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ConfigError(f"--lr must be a positive number, got {args.lr}")
    if args.warmup_steps < 0 or args.weight_decay < 0 or args.grad_clip < 0:
        raise ConfigError("--warmup-steps, --weight-decay and --grad-clip must not be negative")
    try:
        return GPTConfig(
            seq_len=args.seq_len,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            dropout=args.dropout,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices, not biases, LayerNorm weights or (tied) embeddings' duplicates."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save_model(model: TinyGPT, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / "model.pt"
    tmp = model_dir / ".model.pt.tmp"
    torch.save({"model": model.state_dict(), "config": asdict(model.config)}, tmp)
    os.replace(tmp, target)
    (model_dir / "config.json").write_text(json.dumps(asdict(model.config), indent=2) + "\n")
    return target


def train(args: argparse.Namespace, config: GPTConfig, paths: Paths, data: bytes, denv: DistEnv) -> None:
    device, backend, use_cuda = select_device(denv)
    if denv.distributed:
        dist.init_process_group(backend=backend, rank=denv.rank, world_size=denv.world_size)
    log = JsonLog(enabled=denv.rank == 0)
    try:
        _train_loop(args, config, paths, data, denv, device, backend, use_cuda, log)
    finally:
        if denv.distributed:
            dist.destroy_process_group()


def _train_loop(
    args: argparse.Namespace,
    config: GPTConfig,
    paths: Paths,
    data: bytes,
    denv: DistEnv,
    device: torch.device,
    backend: str,
    use_cuda: bool,
    log: JsonLog,
) -> None:
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    model = TinyGPT(config).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95))
    net: torch.nn.Module = model
    if denv.distributed:
        net = DistributedDataParallel(model, device_ids=[denv.local_rank] if use_cuda else None)
    # Per-rank stream for dropout; data order does not depend on it (see byte_corpus).
    torch.manual_seed(args.seed + 7919 * (denv.rank + 1))
    batches = byte_corpus.ShardedByteBatches(
        data,
        seq_len=config.seq_len,
        batch_size=args.batch_size,
        rank=denv.rank,
        world_size=denv.world_size,
        seed=args.seed,
    )
    start_step = _resume(paths.checkpoint_dir, model, optimizer, config, denv, device, use_cuda, log)
    tokens_per_step = args.batch_size * config.seq_len * denv.world_size
    log(
        "start",
        start_step=start_step,
        target_steps=args.steps,
        world_size=denv.world_size,
        backend=backend,
        device=str(device),
        parameters=model.num_parameters(),
        corpus_bytes=len(data),
        tokens_per_step=tokens_per_step,
        data=str(paths.data),
        checkpoint_dir=str(paths.checkpoint_dir),
        model_dir=str(paths.model_dir) if paths.model_dir else None,
        config=asdict(config),
    )

    net.train()
    window_start, window_tokens = time.perf_counter(), 0
    for step in range(start_step, args.steps):
        lr = learning_rate(step, args.lr, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = (t.to(device, non_blocking=True) for t in batches.batch(step))
        _, loss = net(inputs, targets)
        assert loss is not None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        done = step + 1
        window_tokens += tokens_per_step

        if done % args.log_every == 0 or done == args.steps:
            mean_loss = loss.detach().clone()
            if denv.distributed:
                dist.all_reduce(mean_loss)
                mean_loss /= denv.world_size
            if use_cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - window_start
            log(
                "train",
                step=done,
                loss=float(mean_loss.item()),
                lr=lr,
                epoch=batches.epoch_of(step),
                tokens_per_s=round(window_tokens / elapsed, 1) if elapsed > 0 else None,
            )
            window_start, window_tokens = time.perf_counter(), 0

        if done % args.checkpoint_every == 0 or done == args.steps:
            _checkpoint(paths.checkpoint_dir, done, model, optimizer, config, args, denv, device, use_cuda, log)

    if paths.model_dir is not None and denv.rank == 0:
        log("model_saved", path=str(_save_model(model, paths.model_dir)), step=max(start_step, args.steps))
    if denv.distributed:
        # The training group's timeout fits this wait: before it rank 0 writes only the last checkpoint and the
        # weights (a third of a checkpoint, beside AdamW's two moments), the same kind of wait every checkpoint
        # already puts on the other ranks' next all-reduce. (sft_train.py's merge needs its own group.)
        dist.barrier()
    log("done", step=max(start_step, args.steps))


def _resume(
    directory: Path,
    model: TinyGPT,
    optimizer: torch.optim.Optimizer,
    config: GPTConfig,
    denv: DistEnv,
    device: torch.device,
    use_cuda: bool,
    log: JsonLog,
) -> int:
    """Load the newest checkpoint that rank 0 sees (if any) on every rank; return its step."""
    step = _broadcast_step(checkpoints.latest_step(directory) if denv.rank == 0 else None, denv, device)
    if step is None:
        return 0
    path = checkpoints.checkpoint_path(directory, step)
    if not path.is_file():
        raise RuntimeError(
            f"rank {denv.rank} cannot read {path}, the checkpoint rank 0 resumes from: "
            "every node needs the same checkpoint directory (shared storage such as /fsx, or SageMaker's "
            "checkpoint sync)"
        )
    state = checkpoints.load(path)
    if state.get("config") != asdict(config):
        raise RuntimeError(
            f"checkpoint {path} was written for model {state.get('config')}, not {asdict(config)}: "
            "use the same model arguments or another --checkpoint-dir"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng_states = state.get("rng") or []
    if len(rng_states) == denv.world_size:
        _set_rng_state(rng_states[denv.rank], use_cuda)
    else:
        torch.manual_seed(state.get("seed", 0) + step + denv.rank)
    log(
        "resumed",
        step=step,
        checkpoint=str(path),
        saved_world_size=state.get("world_size"),
        world_size=denv.world_size,
        note=None if state.get("world_size") == denv.world_size else "world size changed: data order differs",
    )
    return int(step)


def _checkpoint(
    directory: Path,
    step: int,
    model: TinyGPT,
    optimizer: torch.optim.Optimizer,
    config: GPTConfig,
    args: argparse.Namespace,
    denv: DistEnv,
    device: torch.device,
    use_cuda: bool,
    log: JsonLog,
) -> None:
    rng = _gather_rng_states(denv, device, use_cuda)  # collective: every rank takes part
    if denv.rank == 0:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": asdict(config),
            "rng": rng,
            "seed": args.seed,
            "world_size": denv.world_size,
        }
        path = checkpoints.save_atomic(state, directory, step, keep=args.keep_checkpoints)
        log("checkpoint", step=step, path=str(path))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    try:
        config = validate_args(args)
        paths = resolve_paths(args, env)
        denv = read_dist_env(env)
        check_cuda(visible_gpus(), torch.cuda.is_available())
        data = byte_corpus.load_corpus(paths.data)
        # Fail before any process group exists when the corpus cannot fill one sequence.
        byte_corpus.ShardedByteBatches(
            data, seq_len=config.seq_len, batch_size=1, rank=0, world_size=denv.world_size, seed=0
        )
    except (ConfigError, byte_corpus.CorpusError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    train(args, config, paths, data, denv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
