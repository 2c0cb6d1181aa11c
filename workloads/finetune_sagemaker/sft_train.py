"""LoRA supervised fine-tuning of an open-weights chat model, data-parallel, for Bedrock Custom Model Import.

One program for every launcher:

* single process:        ``PYTHONPATH=../pretrain python sft_train.py --data train.jsonl --model MODEL``
* one node, N processes: ``PYTHONPATH=../pretrain torchrun --nproc_per_node N sft_train.py ...``
  (checkpoints.py and ddp_runtime.py are workloads/pretrain's; sourcedir.tar.gz holds them beside this file)
* SageMaker training job: entry point ``sft_train.py`` with ``torch_distributed`` enabled (torchrun on
  every instance), channels ``train`` (JSONL records) and optionally ``model`` (base weights copied to S3,
  for jobs without internet access; then pass no --model); see README.md.

A gated Hub model (Llama) needs a Hub token: ``--hub-token-secret NAME_OR_ARN`` names a Secrets Manager secret
the program reads at start into HF_TOKEN (the job's hyperparameters and environment, which DescribeTrainingJob
shows, carry only the secret's name). A base model read from a directory needs no token and fetches none.

torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT select the process group (``nccl``
on GPUs, else ``gloo``). Only the LoRA matrices train; the base weights stay frozen (optionally 4-bit with
--load-in-4bit when bitsandbytes is installed: QLoRA). Loss is computed on assistant tokens only (see
chat_data.py).

Every run resumes from the newest checkpoint in the checkpoint directory (``/opt/ml/checkpoints`` on
SageMaker, which the job's CheckpointConfig syncs to S3). ``--steps`` is the total number of optimizer
steps to reach; the learning rate warms up linearly and then stays constant, so a resumed run matches an
uninterrupted one step for step. A checkpoint resumes only into the run that wrote it: the same base weights,
data (as tokenized) and training hyperparameters (``--steps`` may grow); anything else exits 2 naming what
differs. At the end rank 0 saves the adapter and tokenizer to
``<model dir>/adapter`` and, with --merge (the default), the merged model to ``<model dir>/merged`` and
checks it against Custom Model Import's requirements (import_check.py): problems exit 3.

Rank 0 prints one JSON object per line (events ``start``, ``resumed``, ``train``, ``checkpoint``,
``adapter_saved``, ``merged``, ``import_check``, ``done``); errors in arguments or data print
``error: ...`` to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import chat_data  # noqa: E402
import checkpoints  # noqa: E402 (workloads/pretrain/checkpoints.py, shipped in the source directory)
import sagemaker_container  # noqa: E402 (workloads/pretrain/sagemaker_container.py, shipped too)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from ddp_runtime import (  # noqa: E402 (workloads/pretrain/ddp_runtime.py, shipped in the source directory)
    ConfigError,
    DistEnv,
    JsonLog,
    learning_rate,
    read_dist_env,
    select_device,
    set_rng_state,
)
from ddp_runtime import broadcast_step as _broadcast_step  # noqa: E402
from ddp_runtime import gather_rng_states as _gather_rng_states  # noqa: E402

SAGEMAKER_CHECKPOINT_DIR = sagemaker_container.CHECKPOINT_DIR
TRAIN_VARIABLE = sagemaker_container.channel_variable(sagemaker_container.TRAIN_CHANNEL)  # SM_CHANNEL_TRAIN
MODEL_VARIABLE = sagemaker_container.channel_variable(sagemaker_container.MODEL_CHANNEL)  # SM_CHANNEL_MODEL
# Apache-2.0, not gated, Qwen2ForCausalLM (an architecture Custom Model Import supports), 32K context,
# about 1 GB in bfloat16: the cheapest model to train, import and keep. See README.md for the choice.
DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
EXIT_USAGE = 2
EXIT_IMPORT_CHECK = 3
# sft-<step>.pt: the LoRA weights (the only trainable parameters, a few MB), the optimizer state, the step,
# every rank's RNG state and the settings that must match to resume, written atomically by checkpoints.py.
CHECKPOINT_PREFIX = checkpoints.SFT_PREFIX
DTYPES = ("auto", "float32", "bfloat16", "float16")
CHAT_TEMPLATES = ("auto", "model", "fallback")
# While rank 0 alone saves, merges (on CPU, for as long as the model is big) and checks the model, the other ranks
# wait in a gloo group of their own with this timeout: on the training group they would hit its collective timeout
# (torch's default is 10 minutes for NCCL, "after which collectives will be aborted asynchronously and the process
# will crash": https://docs.pytorch.org/docs/stable/distributed.html#torch.distributed.init_process_group,
# torch/distributed/constants.py default_pg_nccl_timeout) and torchrun would stop rank 0 mid-merge. 28 days is the
# largest MaxRuntimeInSeconds of a training job (the kit's sm_max_runtime_hours cap;
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html), so the job's stopping
# condition, not this wait, ends a run whose rank 0 hangs; a rank 0 that dies closes its connections and ends the
# wait at once. Training collectives keep their short timeout, so a hung all-reduce still fails in minutes.
FINAL_WAIT_TIMEOUT = timedelta(days=sagemaker_container.MAX_RUNTIME_DAYS)


@dataclass(frozen=True)
class Paths:
    data: Path
    base_model: str
    checkpoint_dir: Path
    model_dir: Path | None


def _bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def add(flag: str, **kwargs: Any) -> None:
        # SageMaker passes hyperparameters as --name value; accept snake_case names too.
        names = [flag] + (["--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [])
        parser.add_argument(*names, **kwargs)

    add("--data", type=Path, default=None, help="JSONL file or directory (default: $SM_CHANNEL_TRAIN)")
    add(
        "--model",
        default=None,
        help=f"base model: Hub id or directory (default: $SM_CHANNEL_MODEL if set, else {DEFAULT_BASE_MODEL})",
    )
    add(
        "--hub-token-secret",
        default=None,
        help="Secrets Manager secret (name or ARN) holding a Hugging Face Hub token, read into HF_TOKEN at start",
    )
    add(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help=f"checkpoint directory (default: {SAGEMAKER_CHECKPOINT_DIR} on SageMaker, else ./checkpoints)",
    )
    add("--model-dir", type=Path, default=None, help="where adapter and merged model go (default: $SM_MODEL_DIR)")
    add("--steps", type=int, default=200, help="total optimizer steps to reach (resumed runs count earlier steps)")
    add("--batch-size", type=int, default=4, help="conversations per process per step")
    add("--max-seq-len", type=int, default=1024, help="tokens per conversation; longer ones are truncated")
    add("--lr", type=float, default=2e-4, help="peak learning rate (AdamW)")
    add("--warmup-steps", type=int, default=10, help="linear warm-up steps, then a constant learning rate")
    add("--weight-decay", type=float, default=0.0)
    add("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 disables clipping")
    add("--seed", type=int, default=1234)
    add("--lora-r", type=int, default=16, help="LoRA rank")
    add("--lora-alpha", type=float, default=32.0, help="LoRA scaling numerator (scale = alpha / r)")
    add("--lora-dropout", type=float, default=0.05)
    add(
        "--target-modules",
        default="all-linear",
        help="comma-separated module names to adapt, or all-linear (every linear layer but the output head)",
    )
    add(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="base weights dtype (auto: bfloat16 on GPUs with native bfloat16, else float32)",
    )
    add("--load-in-4bit", type=_bool, default=False, help="QLoRA: 4-bit NF4 base weights (needs bitsandbytes, CUDA)")
    add("--gradient-checkpointing", type=_bool, default=False, help="recompute activations to save GPU memory")
    add("--chat-template", choices=CHAT_TEMPLATES, default="auto", help="auto: the model's, else the fallback")
    add("--checkpoint-every", type=int, default=50, help="steps between checkpoints (the last step always saves)")
    add("--keep-checkpoints", type=int, default=2, help="how many recent checkpoints to keep")
    add("--log-every", type=int, default=10, help="steps between loss/throughput log lines")
    add(
        "--collective-timeout",
        type=float,
        default=None,
        help="seconds a training collective (all-reduce, broadcast) waits for the other ranks before the run fails "
        "(default: torch's own, 10 minutes on NCCL and 30 on gloo); the final wait for rank 0's save and merge "
        "has its own 28-day bound",
    )
    add("--merge", type=_bool, default=True, help="merge the adapter into the base and check it for import")
    add("--merge-dtype", choices=DTYPES, default="auto", help="merged weights dtype (auto: the base model's)")
    return parser


def on_sagemaker(env: Mapping[str, str]) -> bool:
    """True inside a SageMaker training container (the training toolkit exports SM_* variables)."""
    return "SM_TRAINING_ENV" in env or "SM_MODEL_DIR" in env


def resolve_paths(args: argparse.Namespace, env: Mapping[str, str]) -> Paths:
    """Arguments first, then SageMaker's environment, then local defaults."""
    data = args.data or (Path(env[TRAIN_VARIABLE]) if env.get(TRAIN_VARIABLE) else None)
    if data is None:
        raise ConfigError(f"no training data: pass --data PATH or set {TRAIN_VARIABLE}")
    channel = env.get(MODEL_VARIABLE)
    if args.model and channel:
        raise ConfigError(
            f"both --model {args.model} and the model channel ({channel}) name the base model: pass one of them"
        )
    if channel and not (Path(channel) / "config.json").is_file():
        raise ConfigError(
            f"the model channel ({channel}) holds no config.json: copy the base model's Hugging Face files "
            "(config.json, *.safetensors, tokenizer files) to the channel's S3 prefix"
        )
    base_model = args.model or channel or DEFAULT_BASE_MODEL
    if args.checkpoint_dir is not None:
        checkpoint_dir = args.checkpoint_dir
    elif on_sagemaker(env):
        checkpoint_dir = Path(SAGEMAKER_CHECKPOINT_DIR)
    else:
        checkpoint_dir = Path("checkpoints")
    model_dir = args.model_dir or (Path(env["SM_MODEL_DIR"]) if env.get("SM_MODEL_DIR") else None)
    return Paths(data=data, base_model=base_model, checkpoint_dir=checkpoint_dir, model_dir=model_dir)


def validate_args(args: argparse.Namespace) -> None:
    positive = (
        "steps",
        "batch_size",
        "max_seq_len",
        "checkpoint_every",
        "log_every",
        "keep_checkpoints",
        "lora_r",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ConfigError(f"--lr must be a positive number, got {args.lr}")
    if args.warmup_steps < 0 or args.weight_decay < 0 or args.grad_clip < 0:
        raise ConfigError("--warmup-steps, --weight-decay and --grad-clip must not be negative")
    if not 0 <= args.lora_dropout < 1:
        raise ConfigError(f"--lora-dropout must be in [0, 1), got {args.lora_dropout}")
    if args.lora_alpha <= 0:
        raise ConfigError(f"--lora-alpha must be positive, got {args.lora_alpha}")
    timeout = args.collective_timeout
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--collective-timeout must be a positive number of seconds, got {args.collective_timeout}")
    if args.load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("--load-in-4bit needs the bitsandbytes package (QLoRA); it is not installed") from None
        if not torch.cuda.is_available():
            raise ConfigError("--load-in-4bit needs a CUDA GPU")


def secret_region(secret: str, env: Mapping[str, str]) -> str | None:
    """The Region to ask: an ARN's own, else the job's (SageMaker sets AWS_REGION), else boto3's default."""
    if secret.startswith("arn:"):
        parts = secret.split(":")
        return parts[3] if len(parts) > 6 and parts[3] else None
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def fetch_hub_token(secret: str, env: Mapping[str, str], client: Any | None = None) -> str:
    """The Hub token stored in a Secrets Manager secret: the secret string itself, or its HF_TOKEN field when
    it is a JSON object. Never logged."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if client is None:
            import boto3

            client = boto3.client("secretsmanager", region_name=secret_region(secret, env))
        value = client.get_secret_value(SecretId=secret).get("SecretString")
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        raise ConfigError(
            f"cannot read the Hub token from secret {secret}: {code} (the training role may read only the secret "
            "named by sm_hub_token_secret; a secret under a customer managed KMS key also needs the key's policy "
            "to allow the training role kms:Decrypt)"
        ) from None
    except BotoCoreError as err:
        raise ConfigError(f"cannot read the Hub token from secret {secret}: {err}") from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"secret {secret} holds no SecretString: store the Hub token as the secret's text")
    text = value.strip()
    if text.startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError:
            fields = None
        token = fields.get("HF_TOKEN") if isinstance(fields, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise ConfigError(f'secret {secret} is JSON without an "HF_TOKEN" string: store the token alone or so')
        return token.strip()
    return text


def load_tokenizer(base_model: str, choice: str) -> tuple[Any, str]:
    """The base model's fast tokenizer with the chat template training uses, and which template that is."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model, token=os.environ.get("HF_TOKEN"))
    if not tokenizer.is_fast:
        raise ConfigError(f"{base_model} has no fast tokenizer (tokenizer.json): token offsets are needed")
    if choice == "fallback" or (choice == "auto" and not tokenizer.chat_template):
        tokenizer.chat_template = chat_data.FALLBACK_CHAT_TEMPLATE
        used = "fallback"
    elif not tokenizer.chat_template:
        raise ConfigError(f"{base_model} has no chat template: pass --chat-template fallback")
    else:
        used = "model"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, used


def _torch_dtype(name: str, use_cuda: bool) -> torch.dtype:
    if name == "auto":
        # bfloat16 only where the GPU has it (compute capability 8 and later: A10G, L4, A100, H100...). By default
        # torch also reports it on older GPUs that only emulate it (the T4 of ml.g4dn), where training is slower.
        native = use_cuda and torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float32
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def build_model(args: argparse.Namespace, base_model: str, device: torch.device, use_cuda: bool) -> Any:
    """The base model with LoRA adapters; identical initial adapter weights on every rank (seeded)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    dtype = _torch_dtype(args.dtype, use_cuda)
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "token": os.environ.get("HF_TOKEN")}
    if args.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    model.config.use_cache = False
    if args.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets: str | list[str] = args.target_modules
    if args.target_modules != "all-linear":
        targets = [name.strip() for name in args.target_modules.split(",") if name.strip()]
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(args.seed)  # LoRA A matrices are drawn here: the same on every rank
    peft_model = get_peft_model(model, lora)
    if not args.load_in_4bit:
        peft_model.to(device)
    return peft_model


# The arguments that decide what a step computes: a checkpoint resumes only into a run with the same values.
# --steps may grow (that is what a resume is for); logging, checkpoint cadence, gradient checkpointing (same
# gradients, less memory) and the merge settings do not change the adapter.
TRAINING_ARGS = (
    "batch_size",
    "max_seq_len",
    "lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "seed",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "dtype",
    "load_in_4bit",
    "chat_template",
)


def base_weights_digest(model: Any) -> str:
    """A digest of the frozen base weights (names, shapes, dtypes and leading values of every tensor): the
    same model from the Hub or from a copy in S3 matches; another checkpoint of the same architecture does not.
    Reads a few values per tensor, so it costs nothing next to loading the model."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        head = param.detach().reshape(-1)[:16].to("cpu", torch.float64).tolist()
        digest.update(json.dumps([name, list(param.shape), str(param.dtype), head]).encode())
    return digest.hexdigest()


def data_digest(examples: Sequence[chat_data.Example]) -> str:
    """A digest of the tokenized training examples: records, chat template and truncation all show in it."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels], separators=(",", ":")).encode())
    return digest.hexdigest()


def fingerprint(args: argparse.Namespace, model: Any, examples: Sequence[chat_data.Example]) -> dict[str, Any]:
    """What must match for a checkpoint to resume into this run."""
    config = model.get_base_model().config
    return {
        "model_type": config.model_type,
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "base_weights": base_weights_digest(model),
        "data": data_digest(examples),
        **{name: getattr(args, name) for name in TRAINING_ARGS},
        "trainable": sorted(name for name, p in model.named_parameters() if p.requires_grad),
    }


class ResumeMismatch(ConfigError):
    """The checkpoint directory holds a checkpoint another run wrote."""


def fingerprint_differences(saved: Any, current: Mapping[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, in words."""
    if not isinstance(saved, Mapping):
        return ["the checkpoint carries no fingerprint"]
    described = {"base_weights": "base model weights", "data": "training data (as tokenized)"}
    differences = []
    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if before == now:
            continue
        if key in described or key == "trainable":
            differences.append(described.get(key, "adapted modules"))
        else:
            differences.append(f"{key.replace('_', '-')} {before} -> {now}")
    return differences


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def _replicas_in_sync(model: Any, denv: DistEnv, device: torch.device) -> bool:
    """True when every rank holds the same adapter weights (what DDP promises)."""
    if not denv.distributed:
        return True
    total = torch.zeros(1, dtype=torch.float64, device=device)
    for param in model.parameters():
        if param.requires_grad:
            total += param.detach().double().abs().sum() + param.detach().double().sum() * 1e-3
    gathered = [torch.empty_like(total) for _ in range(denv.world_size)]
    dist.all_gather(gathered, total)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def check_trainable(base_model: str) -> None:
    """ConfigError unless this program can train the base model's architecture (import_check.trainable_problem):
    read from its config.json alone, before any weights are downloaded or a process group formed."""
    import import_check
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_model, token=os.environ.get("HF_TOKEN")).to_dict()
    problem = import_check.trainable_problem(config)
    if problem is not None:
        raise ConfigError(f"base model {base_model}: {problem}")


def train(args: argparse.Namespace, paths: Paths, denv: DistEnv) -> int:
    check_trainable(paths.base_model)
    device, backend, use_cuda = select_device(denv)
    final_wait: Any = None
    if denv.distributed:
        timeout = {} if args.collective_timeout is None else {"timeout": timedelta(seconds=args.collective_timeout)}
        dist.init_process_group(backend=backend, rank=denv.rank, world_size=denv.world_size, **timeout)
        # Every rank must call new_group, in the same order (its docstring); see FINAL_WAIT_TIMEOUT.
        final_wait = dist.new_group(backend="gloo", timeout=FINAL_WAIT_TIMEOUT)
    log = JsonLog(enabled=denv.rank == 0)
    try:
        return _train_loop(args, paths, denv, device, backend, use_cuda, log, final_wait)
    finally:
        if denv.distributed:
            dist.destroy_process_group()


def _train_loop(
    args: argparse.Namespace,
    paths: Paths,
    denv: DistEnv,
    device: torch.device,
    backend: str,
    use_cuda: bool,
    log: JsonLog,
    final_wait: Any,
) -> int:
    from torch.nn.parallel import DistributedDataParallel

    tokenizer, template = load_tokenizer(paths.base_model, args.chat_template)
    conversations = chat_data.load_conversations(paths.data)
    data = chat_data.encode_all(tokenizer, conversations, args.max_seq_len)
    model = build_model(args, paths.base_model, device, use_cuda)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    net: torch.nn.Module = model
    if denv.distributed:
        net = DistributedDataParallel(model, device_ids=[denv.local_rank] if use_cuda else None)
    # Per-rank stream for LoRA dropout; data order does not depend on it (see chat_data).
    torch.manual_seed(args.seed + 7919 * (denv.rank + 1))
    batches = chat_data.ShardedChatBatches(
        data.examples,
        batch_size=args.batch_size,
        rank=denv.rank,
        world_size=denv.world_size,
        seed=args.seed,
        pad_id=int(tokenizer.pad_token_id),
    )
    prints = fingerprint(args, model, data.examples)
    start_step = _resume(paths.checkpoint_dir, model, optimizer, prints, paths.base_model, denv, device, use_cuda, log)
    log(
        "start",
        start_step=start_step,
        target_steps=args.steps,
        world_size=denv.world_size,
        backend=backend,
        device=str(device),
        base_model=paths.base_model,
        chat_template=template,
        trainable_parameters=sum(p.numel() for p in trainable),
        total_parameters=sum(p.numel() for p in model.parameters()),
        conversations=len(conversations),
        examples=len(data.examples),
        dropped_by_max_seq_len=data.dropped,
        tokens=data.tokens,
        target_tokens=data.target_tokens,
        steps_per_epoch=batches.steps_per_epoch,
        data=str(paths.data),
        checkpoint_dir=str(paths.checkpoint_dir),
        model_dir=str(paths.model_dir) if paths.model_dir else None,
    )

    net.train()
    window_start = time.perf_counter()
    window_tokens = torch.zeros(1, dtype=torch.float64, device=device)
    for step in range(start_step, args.steps):
        lr = learning_rate(step, args.lr, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batches.batch(step).items()}
        loss = net(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, args.grad_clip)
        optimizer.step()
        done = step + 1
        window_tokens += batch["attention_mask"].sum()

        if done % args.log_every == 0 or done == args.steps:
            stats = torch.cat([loss.detach().double().reshape(1), window_tokens])
            if denv.distributed:
                dist.all_reduce(stats)
            if use_cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - window_start
            log(
                "train",
                step=done,
                loss=float(stats[0].item()) / denv.world_size,
                lr=lr,
                epoch=batches.epoch_of(step),
                tokens=int(stats[1].item()),
                tokens_per_s=round(float(stats[1].item()) / elapsed, 1) if elapsed > 0 else None,
            )
            window_start = time.perf_counter()
            window_tokens.zero_()

        if done % args.checkpoint_every == 0 or done == args.steps:
            _checkpoint(
                paths.checkpoint_dir,
                done,
                model,
                optimizer,
                prints,
                paths.base_model,
                args,
                denv,
                device,
                use_cuda,
                log,
            )

    final_step = max(start_step, args.steps)
    in_sync = _replicas_in_sync(model, denv, device)
    code = 0
    if paths.model_dir is not None and denv.rank == 0:
        code = _save_outputs(args, paths, model, tokenizer, log, final_step)
    if denv.distributed:
        dist.barrier(group=final_wait)  # not the training group: rank 0's merge may outlast its timeout
    log("done", step=final_step, replicas_in_sync=in_sync, exit_code=code)
    return code


def _save_outputs(args: argparse.Namespace, paths: Paths, model: Any, tokenizer: Any, log: JsonLog, step: int) -> int:
    import import_check
    import merge_adapter

    assert paths.model_dir is not None
    adapter_dir = paths.model_dir / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    log("adapter_saved", path=str(adapter_dir), step=step)
    if not args.merge:
        return 0
    merged_dir = paths.model_dir / import_check.MERGED_DIR
    merge_adapter.merge(
        paths.base_model, adapter_dir, merged_dir, dtype=args.merge_dtype, token=os.environ.get("HF_TOKEN")
    )
    log("merged", path=str(merged_dir), files=sorted(p.name for p in merged_dir.iterdir()))
    problems = import_check.check(merged_dir, region=os.environ.get("AWS_REGION"))
    log("import_check", ok=not problems, problems=[str(p) for p in problems])
    return EXIT_IMPORT_CHECK if problems else 0


def _resume(
    directory: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    prints: dict[str, Any],
    base_model: str,
    denv: DistEnv,
    device: torch.device,
    use_cuda: bool,
    log: JsonLog,
) -> int:
    """Load the newest checkpoint that rank 0 sees (if any) on every rank; return its step."""
    newest = checkpoints.latest_step(directory, prefix=CHECKPOINT_PREFIX) if denv.rank == 0 else None
    step = _broadcast_step(newest, denv, device)
    if step is None:
        return 0
    path = checkpoints.checkpoint_path(directory, step, prefix=CHECKPOINT_PREFIX)
    if not path.is_file():
        raise RuntimeError(
            f"rank {denv.rank} cannot read {path}, the checkpoint rank 0 resumes from: every node needs the same "
            "checkpoint directory (SageMaker's checkpoint sync restores it on every instance)"
        )
    state = checkpoints.load(path)
    if state.get("fingerprint") != prints:
        differences = fingerprint_differences(state.get("fingerprint"), prints)
        raise ResumeMismatch(
            f"checkpoint {path} (step {step}, base model {state.get('base_model', 'unknown')}) was written by "
            f"another run; this run ({base_model}) differs in: {'; '.join(differences)}. A resume continues the "
            "same run: use the same base model, data and hyperparameters (only --steps may grow), or start "
            "without resumeFrom (another --checkpoint-dir)"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state["adapter"].items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(state["optimizer"])
    rng_states = state.get("rng") or []
    if len(rng_states) == denv.world_size:
        set_rng_state(rng_states[denv.rank], use_cuda)
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
    model: Any,
    optimizer: torch.optim.Optimizer,
    prints: dict[str, Any],
    base_model: str,
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
            "adapter": _trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "fingerprint": prints,
            "base_model": base_model,
            "rng": rng,
            "seed": args.seed,
            "world_size": denv.world_size,
        }
        path = checkpoints.save_atomic(state, directory, step, keep=args.keep_checkpoints, prefix=CHECKPOINT_PREFIX)
        log("checkpoint", step=step, path=str(path))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    try:
        validate_args(args)
        paths = resolve_paths(args, env)
        denv = read_dist_env(env)
        # Fail on bad records before any model download or process group.
        chat_data.load_conversations(paths.data)
        if args.hub_token_secret and not Path(paths.base_model).is_dir():
            os.environ["HF_TOKEN"] = fetch_hub_token(args.hub_token_secret, env)
    except (ConfigError, chat_data.DataError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        return train(args, paths, denv)
    except (ConfigError, chat_data.DataError) as err:  # tokenizer or template problems found after loading
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
