"""The Level 3 SageMaker fine-tuning program on CPU: LoRA SFT of a tiny Llama, DDP over gloo, resume, merge, and
the Custom Model Import check of the merged directory."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # CPU-only test environments have no NumPy; torch only warns
    warnings.simplefilter("ignore")
    torch = pytest.importorskip("torch", reason="torch is not installed (make test installs torch==2.13.0)")

from tests.level3_finetune import sagemaker_ddp_harness
from tests.torch_helpers import free_ports, run_forked, tiny_model_settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "finetune-sagemaker" / "train.jsonl"

import chat_data  # noqa: E402
import checkpoints  # noqa: E402 (needs torch, checked above)
import import_check  # noqa: E402
import sft_train  # noqa: E402

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOTAL, INTERRUPT = 10, 5


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    with tiny_model_settings():
        yield


def train_tokenizer(chat_template: str | None = CHATML) -> Any:
    """A byte-level BPE tokenizer trained on the sample records, no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for line in SAMPLES.read_text().splitlines() for m in json.loads(line)["messages"]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*texts, "system", "user", "assistant"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=chat_template
    )


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and the tiny tokenizer, saved like a Hub model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = train_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # logits large enough for a rank-8 adapter to move in 10 steps
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model: Any = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_args(base: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(SAMPLES),
        "--model",
        str(base),
        "--batch-size",
        "2",
        "--max-seq-len",
        "128",
        "--lr",
        "2e-2",
        "--warmup-steps",
        "3",
        "--lora-r",
        "8",
        "--lora-alpha",
        "16",
        "--lora-dropout",
        "0.1",  # dropout draws random numbers, so an exact resume must restore each rank's RNG
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--keep-checkpoints",
        "3",
        *extra,
    ]


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def losses(log: list[dict[str, Any]]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log if e["event"] == "train"}


def adapter_weights(directory: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def ddp_runs(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 2-rank trainings in one pair of workers: a full run, and the same run interrupted and resumed."""
    out = tmp_path_factory.mktemp("sft-ddp")
    runs = [
        (
            "full",
            tiny_args(
                tiny_base,
                "--steps",
                str(TOTAL),
                "--seed",
                "7",
                "--checkpoint-dir",
                str(out / "ckpt-a"),
                "--model-dir",
                str(out / "full-model"),
            ),
        ),
        (
            "part_1",
            tiny_args(tiny_base, "--steps", str(INTERRUPT), "--seed", "7", "--checkpoint-dir", str(out / "ckpt-b")),
        ),
        (
            "part_2",
            tiny_args(
                tiny_base,
                "--steps",
                str(TOTAL),
                "--seed",
                "7",
                "--checkpoint-dir",
                str(out / "ckpt-b"),
                "--model-dir",
                str(out / "resumed-model"),
                "--merge",
                "false",
            ),
        ),
    ]
    # The workers are forked from this process, which has torch and transformers imported (tests/torch_helpers.py).
    run_forked(sagemaker_ddp_harness.worker, (2, str(out), runs, free_ports(len(runs))))
    return out


COLLECTIVE_TIMEOUT_S, MERGE_DELAY_S = 2.0, 4.0


def slow_merge_worker(rank: int, *harness_args: Any) -> None:
    """The harness's worker, with rank 0's merge held back MERGE_DELAY_S (longer than the training group's
    collective timeout) and its measured length written to merge_seconds.txt."""
    import time

    import merge_adapter

    if rank == 0:
        real_merge = merge_adapter.merge

        def slow_merge(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            time.sleep(MERGE_DELAY_S)
            result = real_merge(*args, **kwargs)
            (Path(harness_args[1]) / "merge_seconds.txt").write_text(str(time.monotonic() - started))
            return result

        merge_adapter.merge = slow_merge  # this forked process only
    sagemaker_ddp_harness.worker(rank, *harness_args)


def test_a_merge_longer_than_the_collective_timeout_still_ends_with_exit_0(tiny_base: Path, tmp_path: Path) -> None:
    """The other ranks wait for rank 0's save and merge in a gloo group of their own (sft_train.FINAL_WAIT_TIMEOUT):
    on the training group (NCCL's default timeout is 10 minutes) a long merge would fail the job after training."""
    argv = tiny_args(
        tiny_base,
        "--steps",
        "2",
        "--collective-timeout",
        str(COLLECTIVE_TIMEOUT_S),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--model-dir",
        str(tmp_path / "model"),
    )
    # The harness raises here unless both ranks return exit code 0.
    run_forked(slow_merge_worker, (2, str(tmp_path), [("slow", argv)], free_ports(1)), timeout_s=120)
    assert float((tmp_path / "merge_seconds.txt").read_text()) > COLLECTIVE_TIMEOUT_S
    log = events(tmp_path / "slow.rank0.jsonl")
    assert [e["event"] for e in log][-4:] == ["adapter_saved", "merged", "import_check", "done"]
    assert log[-1]["exit_code"] == 0 and log[-1]["replicas_in_sync"] is True
    assert sft_train.FINAL_WAIT_TIMEOUT.total_seconds() == 28 * 24 * 3600  # SageMaker's longest MaxRuntimeInSeconds


def test_collective_timeout_defaults_to_torchs_own() -> None:
    assert sft_train.build_parser().parse_args([]).collective_timeout is None
    assert sft_train.build_parser().parse_args(["--collective_timeout", "90"]).collective_timeout == 90.0


# ----------------------------------------------------------------------------------------------
# Training: two gloo ranks, loss, resume, checkpoints
# ----------------------------------------------------------------------------------------------


def test_two_gloo_ranks_train_the_same_adapter_and_only_rank_0_logs(ddp_runs: Path) -> None:
    log = events(ddp_runs / "full.rank0.jsonl")
    start = log[0]
    assert start["event"] == "start"
    assert (start["world_size"], start["backend"], start["device"]) == (2, "gloo", "cpu")
    assert start["chat_template"] == "model" and start["conversations"] == 25
    assert 0 < start["trainable_parameters"] < start["total_parameters"] / 5  # only the LoRA matrices train
    done = log[-1]
    assert done["event"] == "done" and done["replicas_in_sync"] is True and done["exit_code"] == 0
    assert (ddp_runs / "full.rank1.jsonl").read_text() == ""


def test_loss_falls_and_throughput_is_logged_every_step(ddp_runs: Path) -> None:
    log = events(ddp_runs / "full.rank0.jsonl")
    curve = losses(log)
    assert list(curve) == list(range(1, TOTAL + 1))
    values = list(curve.values())
    assert sum(values[:3]) / 3 - sum(values[-3:]) / 3 > 0.5, values  # from ~ln(400) = 6.0 downwards
    assert all(e["tokens_per_s"] > 0 and e["tokens"] > 0 for e in log if e["event"] == "train")


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(ddp_runs: Path) -> None:
    first_part = events(ddp_runs / "part_1.rank0.jsonl")
    assert [e["step"] for e in first_part if e["event"] == "checkpoint"] == [2, 4, 5]
    second_part = events(ddp_runs / "part_2.rank0.jsonl")
    resumed = [e for e in second_part if e["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == INTERRUPT and resumed[0]["note"] is None
    assert resumed[0]["checkpoint"].endswith(f"sft-{INTERRUPT:08d}.pt")
    assert next(e for e in second_part if e["event"] == "start")["start_step"] == INTERRUPT
    assert sorted(losses(second_part)) == list(range(INTERRUPT + 1, TOTAL + 1))

    uninterrupted = losses(events(ddp_runs / "full.rank0.jsonl"))
    for step, loss in losses(second_part).items():
        assert loss == pytest.approx(uninterrupted[step], rel=1e-5, abs=1e-6), step
    resumed_weights, full_weights = (
        adapter_weights(ddp_runs / "resumed-model"),
        adapter_weights(ddp_runs / "full-model"),
    )
    assert resumed_weights.keys() == full_weights.keys() and full_weights
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoints_hold_adapter_optimizer_and_every_ranks_rng(ddp_runs: Path) -> None:
    directory = ddp_runs / "ckpt-a"
    found = checkpoints.list_checkpoints(directory, prefix=sft_train.CHECKPOINT_PREFIX)
    assert [step for step, _ in found] == [6, 8, 10]  # keep 3
    state = checkpoints.load(checkpoints.checkpoint_path(directory, TOTAL, prefix=sft_train.CHECKPOINT_PREFIX))
    assert state["step"] == TOTAL and state["world_size"] == 2 and state["seed"] == 7
    assert state["adapter"] and all("lora_" in name for name in state["adapter"])  # the frozen base is not saved
    assert state["optimizer"]["state"]  # Adam moments were saved
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temporary files left


# ----------------------------------------------------------------------------------------------
# Merge and the Custom Model Import check
# ----------------------------------------------------------------------------------------------


def test_merged_directory_has_the_layout_custom_model_import_reads(ddp_runs: Path) -> None:
    merged = ddp_runs / "full-model" / "merged"
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "generation_config.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt")) or n.startswith("adapter_")]
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["transformers_version"] == "4.51.3"
    assert json.loads((merged / "tokenizer_config.json").read_text())["chat_template"] == CHATML
    log = events(ddp_runs / "full.rank0.jsonl")
    checked = next(e for e in log if e["event"] == "import_check")
    assert checked["ok"] is True and checked["problems"] == []
    assert import_check.check(merged) == []
    assert import_check.main([str(merged)]) == 0


def test_merged_logits_equal_base_plus_adapter(ddp_runs: Path, tiny_base: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    with_adapter = PeftModel.from_pretrained(base, str(ddp_runs / "full-model" / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(ddp_runs / "full-model" / "merged").eval()
    tokens = torch.randint(0, base.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = with_adapter(input_ids=tokens).logits
        actual = merged(input_ids=tokens).logits
        untrained = AutoModelForCausalLM.from_pretrained(tiny_base).eval()(input_ids=tokens).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert (actual - untrained).abs().max() > 1e-2  # the adapter really changed the model


def test_a_base_whose_config_names_its_dtype_dtype_is_merged_in_that_dtype(
    ddp_runs: Path, tiny_base: Path, tmp_path: Path
) -> None:
    """transformers 4.56 and later write "dtype" in config.json, not "torch_dtype". Before, the pinned 4.51 found
    no torch_dtype and the merge saved float32 (twice the memory and the files), with both keys in config.json."""
    import merge_adapter

    base = tmp_path / "newer-base"
    shutil.copytree(tiny_base, base)
    config = json.loads((base / "config.json").read_text())
    config.pop("torch_dtype", None)
    config["dtype"] = "bfloat16"
    (base / "config.json").write_text(json.dumps(config))
    merged = merge_adapter.merge(str(base), ddp_runs / "full-model" / "adapter", tmp_path / "merged")
    written = json.loads((merged / "config.json").read_text())
    assert written["torch_dtype"] == "bfloat16" and "dtype" not in written
    header = (merged / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", header[:8])
    tensors = json.loads(header[8 : 8 + length])
    assert {t["dtype"] for name, t in tensors.items() if name != "__metadata__"} == {"BF16"}


def _write_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _safetensors_with_dtype(path: Path, dtype: str) -> None:
    header = json.dumps({"w": {"dtype": dtype, "shape": [2], "data_offsets": [0, 2]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00\x00")


BREAKAGES: dict[str, tuple[Callable[[Path], object], str, str, str]] = {
    # name: (break the directory, rule, file, field)
    "pickled weights": (
        lambda d: (d / "pytorch_model.bin").write_bytes(b"x"),
        "safetensors-only",
        "pytorch_model.bin",
        "",
    ),
    "no safetensors": (lambda d: (d / "model.safetensors").unlink(), "safetensors-only", ".", ""),
    "unsupported architecture": (
        lambda d: _write_json(d / "config.json", lambda c: c.update(architectures=["GPT2LMHeadModel"])),
        "architecture",
        "config.json",
        "architectures",
    ),
    "model_type mismatch": (
        lambda d: _write_json(d / "config.json", lambda c: c.update(model_type="mistral")),
        "architecture",
        "config.json",
        "model_type",
    ),
    "no config": (lambda d: (d / "config.json").unlink(), "config", "config.json", ""),
    "no tokenizer config": (lambda d: (d / "tokenizer_config.json").unlink(), "tokenizer", "tokenizer_config.json", ""),
    "no tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer", "tokenizer.json", ""),
    "unsupported tokenizer class": (
        lambda d: _write_json(d / "tokenizer_config.json", lambda c: c.update(tokenizer_class="TokenizersBackend")),
        "tokenizer",
        "tokenizer_config.json",
        "tokenizer_class",
    ),
    "no chat template": (
        lambda d: _write_json(d / "tokenizer_config.json", lambda c: c.pop("chat_template")),
        "chat-template",
        "tokenizer_config.json",
        "chat_template",
    ),
    "two chat templates": (
        lambda d: (d / "chat_template.jinja").write_text(CHATML),
        "chat-template",
        "chat_template.jinja",
        "",
    ),
    "context over 128K": (
        lambda d: _write_json(d / "config.json", lambda c: c.update(max_position_embeddings=262144)),
        "context-length",
        "config.json",
        "max_position_embeddings",
    ),
    "saved by transformers 5": (
        lambda d: _write_json(d / "config.json", lambda c: c.update(transformers_version="5.0.0")),
        "transformers-version",
        "config.json",
        "transformers_version",
    ),
    "quantized weights": (
        lambda d: _safetensors_with_dtype(d / "model.safetensors", "I8"),
        "dtype",
        "model.safetensors",
        "dtype",
    ),
    "quantization config": (
        lambda d: _write_json(
            d / "config.json", lambda c: c.update(quantization_config={"quant_method": "bitsandbytes"})
        ),
        "dtype",
        "config.json",
        "quantization_config",
    ),
    "truncated safetensors": (
        lambda d: (d / "model.safetensors").write_bytes(b"\x01\x02"),
        "safetensors-only",
        "model.safetensors",
        "",
    ),
    "unmerged adapter": (
        lambda d: (d / "adapter_config.json").write_text("{}"),
        "merged-weights",
        "adapter_config.json",
        "",
    ),
    "shard without index": (
        lambda d: shutil.copy(d / "model.safetensors", d / "model-00002-of-00002.safetensors"),
        "shards",
        "model.safetensors.index.json",
        "",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_import_check_rejects_a_broken_layout_with_the_right_rule(
    ddp_runs: Path, tmp_path: Path, breakage: str
) -> None:
    directory = tmp_path / "model"
    shutil.copytree(ddp_runs / "full-model" / "merged", directory)
    damage, rule, file, field = BREAKAGES[breakage]
    damage(directory)
    problems = import_check.check(directory)
    assert [(p.rule, p.file, p.field) for p in problems if p.rule == rule] == [(rule, file, field)], problems
    assert all(p.doc.startswith("https://") for p in problems)
    assert import_check.main([str(directory)]) == 1


class FakeSource:
    """A model the size of a real one, without the bytes: what the pipeline's S3 source looks like."""

    def __init__(self, architecture: str, weight_bytes: int) -> None:
        header = json.dumps({"w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}).encode()
        self.blobs = {
            "config.json": json.dumps(
                {
                    "architectures": [architecture],
                    "model_type": import_check.SUPPORTED_ARCHITECTURES[architecture].model_types[0],
                    "transformers_version": "4.51.3",
                    "max_position_embeddings": 131072,
                }
            ).encode(),
            "tokenizer_config.json": json.dumps(
                {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": "x"}
            ).encode(),
            "tokenizer.json": b"{}",
            "model.safetensors": struct.pack("<Q", len(header)) + header,
        }
        self.weight_bytes = weight_bytes

    def files(self) -> dict[str, int]:
        return {
            name: self.weight_bytes if name == "model.safetensors" else len(blob) for name, blob in self.blobs.items()
        }

    def read(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        blob = self.blobs[name]
        return blob[start:] if length is None else blob[start : start + length]


@pytest.mark.parametrize(
    ("architecture", "weight_bytes", "region", "rules"),
    [
        ("LlamaForCausalLM", 199 * 10**9, "us-west-2", []),  # 128 Ki context and 199 GB: inside the limits
        ("LlamaForCausalLM", 200 * 10**9, None, ["size"]),  # "less than ... 200GB for text models"
        ("Qwen2VLForConditionalGeneration", 100 * 10**9, None, ["size"]),  # "less than 100GB for multimodal"
        ("GptOssForCausalLM", 10**9, "us-west-2", ["region"]),  # GPT-OSS: US East (N. Virginia) only
        ("GptOssForCausalLM", 10**9, "us-east-1", []),
    ],
)
def test_import_check_size_and_region_limits(
    architecture: str, weight_bytes: int, region: str | None, rules: list[str]
) -> None:
    problems = import_check.check(FakeSource(architecture, weight_bytes), region=region)
    assert [p.rule for p in problems] == rules, problems


def test_converse_support_follows_the_documented_exceptions() -> None:
    table = import_check.SUPPORTED_ARCHITECTURES
    assert table["LlamaForCausalLM"].converse and table["MistralForCausalLM"].converse
    assert not table["Qwen2ForCausalLM"].converse  # Qwen2.5 shares this class
    assert not table["Qwen3ForCausalLM"].converse and not table["GptOssForCausalLM"].converse


# ----------------------------------------------------------------------------------------------
# Chat records, label masking, batches
# ----------------------------------------------------------------------------------------------


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Which level for tone?"},
    {"role": "assistant", "content": "Level 1, prompt engineering."},
    {"role": "user", "content": "And for weekly facts?"},
    {"role": "assistant", "content": "Level 2, retrieval."},
]


def test_only_assistant_turns_and_their_end_markers_carry_labels() -> None:
    tokenizer = train_tokenizer()
    example = chat_data.encode(tokenizer, CONVERSATION, max_seq_len=512)
    assert example is not None and len(example.labels) == len(example.input_ids)
    learned = tokenizer.decode([t for t in example.labels if t != chat_data.IGNORE_INDEX])
    assert learned == "Level 1, prompt engineering.<|im_end|>\nLevel 2, retrieval.<|im_end|>\n"
    context = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels, strict=True) if label < 0])
    assert "Which level for tone?" in context and "Level 1" not in context


def test_a_tokenizer_without_template_gets_the_documented_fallback() -> None:
    tokenizer = train_tokenizer(chat_template=None)
    tokenizer.chat_template = chat_data.FALLBACK_CHAT_TEMPLATE
    example = chat_data.encode(tokenizer, CONVERSATION[:3], max_seq_len=512)
    assert example is not None
    learned = tokenizer.decode([t for t in example.labels if t != chat_data.IGNORE_INDEX])
    assert learned == "Level 1, prompt engineering.<|im_end|>\n"


def test_a_template_that_rewrites_earlier_turns_is_refused() -> None:
    tokenizer = train_tokenizer(
        chat_template="{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(chat_data.DataError, match="pass --chat-template fallback"):
        chat_data.encode(tokenizer, CONVERSATION, max_seq_len=512)


def test_truncation_drops_conversations_without_a_target_left() -> None:
    tokenizer = train_tokenizer()
    kept = chat_data.encode_all(tokenizer, [CONVERSATION], max_seq_len=512)
    assert kept.dropped == 0 and len(kept.examples) == 1
    with pytest.raises(chat_data.DataError, match="no record keeps an assistant token within --max-seq-len 4"):
        chat_data.encode_all(tokenizer, [CONVERSATION], max_seq_len=4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "train.jsonl:2: not valid JSON"),
        ('{"messages": []}', "train.jsonl:2: 'messages' must be a non-empty list"),
        ('{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0].role must be one of system, user, assistant"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "holds no assistant message"),
        ('{"messages": [{"role": "assistant", "content": "hi"}]}', "must start with a user message"),
        ('{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}', "content must be"),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, '
            '{"role": "assistant", "content": "a"}]}',
            "messages[1]: a system message may only come first",
        ),
    ],
)
def test_bad_records_exit_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(SAMPLES.read_text().splitlines()[0] + "\n" + line + "\n")
    assert sft_train.main(["--data", str(data)], env={}) == sft_train.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and captured.out == ""


def test_a_line_nested_too_deeply_is_a_bad_record_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(SAMPLES.read_text().splitlines()[0] + "\n" + "[" * 100_000 + "\n")
    assert sft_train.main(["--data", str(data)], env={}) == sft_train.EXIT_USAGE
    assert "train.jsonl:2: not valid JSON (nested too deeply)" in capsys.readouterr().err


def test_the_source_directory_holds_every_module_the_program_imports_from_it() -> None:
    """The job runs from sourcedir.tar.gz alone: a sibling module left out of RUNTIME_FILES (chat_records.py, the
    record rules chat_data.py applies) would fail at import, after the instances started."""
    import ast

    from workloads.finetune_sagemaker import sagemaker_job

    here = sagemaker_job.HERE
    sources = {name: sagemaker_job.SHARED_FILES.get(name, here / name) for name in sagemaker_job.RUNTIME_FILES}
    siblings = {p.stem for p in here.glob("*.py")} | {p.stem for p in sagemaker_job.SHARED_FILES.values()}
    shipped = set(sagemaker_job.RUNTIME_FILES)
    for name in [f for f in sagemaker_job.RUNTIME_FILES if f.endswith(".py")]:
        tree = ast.parse(sources[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for module in {n.split(".")[0] for n in names} & siblings:
                assert f"{module}.py" in shipped, f"{name} imports {module}, which the source directory lacks"
    assert "chat_records.py" in shipped


def test_ranks_read_disjoint_examples_that_cover_the_epoch() -> None:
    examples = [chat_data.Example(input_ids=[i + 1] * (i % 5 + 1), labels=[i + 1] * (i % 5 + 1)) for i in range(25)]
    shards = [
        chat_data.ShardedChatBatches(examples, batch_size=4, rank=r, world_size=2, seed=3, pad_id=0) for r in (0, 1)
    ]
    per_rank = [set(s.rank_indices(0)) for s in shards]
    assert len(shards[0].rank_indices(0)) == len(shards[1].rank_indices(0)) == 13  # padded to an even split
    assert len(per_rank[0] & per_rank[1]) <= 1 and per_rank[0] | per_rank[1] == set(range(25))
    batch = shards[0].batch(0)
    assert batch["input_ids"].shape[0] == 4
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == chat_data.IGNORE_INDEX).all() and (batch["input_ids"][pad] == 0).all()
    again = chat_data.ShardedChatBatches(examples, batch_size=4, rank=0, world_size=2, seed=3, pad_id=0)
    assert torch.equal(again.batch(5)["input_ids"], shards[0].batch(5)["input_ids"])  # a pure function of step
    assert shards[0].rank_indices(1) != shards[0].rank_indices(0)  # later epochs reshuffle


# ----------------------------------------------------------------------------------------------
# Arguments and environment
# ----------------------------------------------------------------------------------------------


def test_sagemaker_environment_maps_to_its_paths(tmp_path: Path) -> None:
    args = sft_train.build_parser().parse_args([])
    channel = tmp_path / "model"
    channel.mkdir()
    (channel / "config.json").write_text("{}")
    sagemaker_env = {
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_CHANNEL_MODEL": str(channel),
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_TRAINING_ENV": "{}",
    }
    assert sft_train.resolve_paths(args, sagemaker_env) == sft_train.Paths(
        data=Path("/opt/ml/input/data/train"),
        base_model=str(channel),
        checkpoint_dir=Path("/opt/ml/checkpoints"),
        model_dir=Path("/opt/ml/model"),
    )
    without_model_channel = {k: v for k, v in sagemaker_env.items() if k != "SM_CHANNEL_MODEL"}
    assert sft_train.resolve_paths(args, without_model_channel).base_model == sft_train.DEFAULT_BASE_MODEL
    local = sft_train.resolve_paths(sft_train.build_parser().parse_args(["--data", "d", "--model", "m"]), {})
    assert local == sft_train.Paths(Path("d"), "m", Path("checkpoints"), None)


def test_a_model_channel_and_a_model_argument_together_or_an_empty_channel_are_refused(tmp_path: Path) -> None:
    channel = tmp_path / "model"
    channel.mkdir()
    env = {"SM_CHANNEL_TRAIN": str(SAMPLES), "SM_CHANNEL_MODEL": str(channel)}
    with pytest.raises(sft_train.ConfigError, match=r"holds no config\.json"):
        sft_train.resolve_paths(sft_train.build_parser().parse_args([]), env)
    (channel / "config.json").write_text("{}")
    both = sft_train.build_parser().parse_args(["--model", "Qwen/Qwen2.5-0.5B-Instruct"])
    with pytest.raises(sft_train.ConfigError, match=r"both --model Qwen/Qwen2\.5-0\.5B-Instruct and the model channel"):
        sft_train.resolve_paths(both, env)


def test_default_base_model_is_an_architecture_custom_model_import_supports() -> None:
    assert sft_train.DEFAULT_BASE_MODEL == "Qwen/Qwen2.5-0.5B-Instruct"  # Qwen2ForCausalLM, Apache-2.0
    assert "Qwen2ForCausalLM" in import_check.SUPPORTED_ARCHITECTURES


def test_the_program_trains_the_text_causal_lms_transformers_4_51_3_knows() -> None:
    """Of Custom Model Import's architectures, AutoModelForCausalLM in the pinned transformers trains the text causal
    LMs: not Flan (T5), the vision models (Mllama would be saved as MllamaForCausalLM, which the import refuses) or
    GPT-OSS (transformers 4.55.0 added it)."""
    import transformers

    assert transformers.__version__ == ".".join(map(str, import_check.SUPPORTED_TRANSFORMERS))
    refused = {
        name
        for name, arch in import_check.SUPPORTED_ARCHITECTURES.items()
        if import_check.trainable_problem({"architectures": [name], "model_type": arch.model_types[0]})
    }
    assert refused == {
        "T5ForConditionalGeneration",
        "MllamaForConditionalGeneration",
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
        "GptOssForCausalLM",
    }
    assert "not an architecture Custom Model Import supports" in str(
        import_check.trainable_problem({"architectures": ["GPT2LMHeadModel"]})
    )


def test_a_base_model_the_program_cannot_train_exits_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked from config.json alone: a Flan base fails in seconds, not after an instance started (exit 2)."""
    from transformers import T5Config

    base = tmp_path / "flan"
    config = T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)
    config.architectures = ["T5ForConditionalGeneration"]  # as a Hub checkpoint's config.json names it
    config.save_pretrained(base)
    assert sft_train.main(["--data", str(SAMPLES), "--model", str(base)], env={}) == sft_train.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: base model ") and "T5ForConditionalGeneration (Flan)" in err
    assert "not trainable by this program" in err


def test_a_base_whose_context_the_import_refuses_exits_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a trainable architecture with a context over 128K (Qwen3-4B-Instruct-2507 declares 262,144) trained
    for its whole paid runtime, then the merged model failed the import check (the same rule, applied after)."""
    from transformers import Qwen2Config

    base = tmp_path / "long"
    Qwen2Config(
        vocab_size=64,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=262_144,
        architectures=["Qwen2ForCausalLM"],
    ).save_pretrained(base)
    assert sft_train.main(["--data", str(SAMPLES), "--model", str(base)], env={}) == sft_train.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: base model ") and "max_position_embeddings = 262144" in err
    # The same bound as the import check that runs after training: 128 Ki passes both.
    at_limit = {"architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": import_check.MAX_CONTEXT_TOKENS}
    assert import_check.trainable_problem(at_limit) is None
    assert import_check.trainable_problem({**at_limit, "max_position_embeddings": 131_073}) is not None


def test_hyperparameter_style_names_and_booleans_are_accepted() -> None:
    args = sft_train.build_parser().parse_args(
        ["--batch_size", "4", "--lora_r", "4", "--merge", "false", "--load_in_4bit", "False"]
    )
    assert (args.batch_size, args.lora_r, args.merge, args.load_in_4bit) == (4, 4, False, False)
    with pytest.raises(SystemExit):
        sft_train.build_parser().parse_args(["--merge", "maybe"])


def test_torchrun_environment_is_read_and_checked() -> None:
    assert sft_train.read_dist_env({}) == sft_train.DistEnv(rank=0, world_size=1, local_rank=0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert sft_train.read_dist_env(env) == sft_train.DistEnv(rank=3, world_size=4, local_rank=1)
    with pytest.raises(sft_train.ConfigError, match="MASTER_ADDR and MASTER_PORT unset: launch with torchrun"):
        sft_train.read_dist_env({"RANK": "0", "WORLD_SIZE": "2"})


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--data", "/nonexistent/train.jsonl"], {}, "data path /nonexistent/train.jsonl does not exist"),
        ([], {}, "no training data: pass --data PATH or set SM_CHANNEL_TRAIN"),
        (["--data", str(SAMPLES), "--steps", "0"], {}, "--steps must be at least 1"),
        (["--data", str(SAMPLES), "--lora-dropout", "1"], {}, "--lora-dropout must be in [0, 1)"),
        (["--data", str(SAMPLES), "--lr", "-1"], {}, "--lr must be a positive number"),
        (["--data", str(SAMPLES), "--collective-timeout", "0"], {}, "--collective-timeout must be a positive number"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], extra: list[str], env: dict[str, str], message: str
) -> None:
    assert sft_train.main(extra, env=env) == sft_train.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err


def test_qlora_without_bitsandbytes_is_refused_before_loading_anything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes raises ImportError
    assert sft_train.main(["--data", str(SAMPLES), "--load-in-4bit", "true"], env={}) == sft_train.EXIT_USAGE
    assert "--load-in-4bit needs the bitsandbytes package" in capsys.readouterr().err


@pytest.fixture(scope="module")
def other_base(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with one weight changed: the same architecture and shapes, another base model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tmp_path_factory.mktemp("tiny-llama-other")
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 0.5
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(directory)
    return directory


def test_a_base_model_from_the_model_channel_trains_merges_and_resumes_only_the_same_run(
    tiny_base: Path, other_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model channel (SM_CHANNEL_MODEL, no --model) is loaded and merged from its local copy; its checkpoints
    resume into the same model named another way, and a run with other weights, data or hyperparameters is
    refused with what differs instead of silently training something else."""
    channel = tmp_path / "input" / "data" / "model"
    shutil.copytree(tiny_base, channel)
    checkpoint_dir = str(tmp_path / "ckpt")
    env = {"SM_CHANNEL_MODEL": str(channel)}
    # Given: a SageMaker-style run on the channel (tiny_args without --model), with a secret that must not be read.
    argv = [a for a in tiny_args(tiny_base) if a not in ("--model", str(tiny_base))]
    first = [*argv, "--steps", "2", "--checkpoint-dir", checkpoint_dir, "--model-dir", str(tmp_path / "out")]
    assert sft_train.main([*first, "--hub-token-secret", "never-read"], env=env) == 0
    log = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert next(e for e in log if e["event"] == "start")["base_model"] == str(channel)
    assert next(e for e in log if e["event"] == "import_check")["ok"] is True  # merged from the local copy
    state = checkpoints.load(checkpoints.checkpoint_path(tmp_path / "ckpt", 2, prefix=sft_train.CHECKPOINT_PREFIX))
    assert state["base_model"] == str(channel) and state["fingerprint"]["lr"] == 2e-2

    # The same weights named by path, two more steps: resumed.
    again = [*argv, "--model", str(tiny_base), "--steps", "4", "--checkpoint-dir", checkpoint_dir]
    assert sft_train.main(again, env={}) == 0
    resumed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["step"] for e in resumed if e["event"] == "resumed"] == [2]

    # Another base model of the same shape, other hyperparameters, other data: each refused, naming the cause.
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("\n".join(SAMPLES.read_text().splitlines()[:10]) + "\n")
    for changed, expected in (
        (["--model", str(other_base)], "base model weights"),
        (["--model", str(tiny_base), "--lr", "1e-2"], "lr 0.02 -> 0.01"),
        (["--model", str(tiny_base), "--lora-r", "4"], "lora-r 8 -> 4"),
        (["--model", str(tiny_base), "--data", str(fewer)], "training data (as tokenized)"),
    ):
        assert sft_train.main([*argv, *changed, "--steps", "6", "--checkpoint-dir", checkpoint_dir], env={}) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: checkpoint ") and expected in err, (changed, err)
        assert "only --steps may grow" in err and "without resumeFrom" in err
    latest = checkpoints.latest_step(tmp_path / "ckpt", prefix=sft_train.CHECKPOINT_PREFIX)
    assert latest == 4  # nothing was trained on top


# ----------------------------------------------------------------------------------------------
# The Hub token from Secrets Manager
# ----------------------------------------------------------------------------------------------

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:genai-kit/hf-token-AbCdEf"


def _secrets_client(region: str = "us-east-1") -> tuple[Any, Any]:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "secretsmanager", region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return client, Stubber(client)


@pytest.mark.parametrize(
    ("secret_string", "token"),
    [("hf_abc123", "hf_abc123"), ("  hf_abc123\n", "hf_abc123"), ('{"HF_TOKEN": "hf_json"}', "hf_json")],
)
def test_the_hub_token_is_read_from_the_named_secret(secret_string: str, token: str) -> None:
    client, stubber = _secrets_client()
    stubber.add_response(
        "get_secret_value",
        {"ARN": SECRET_ARN, "Name": "genai-kit/hf-token", "SecretString": secret_string},
        {"SecretId": "genai-kit/hf-token"},
    )
    with stubber:
        assert sft_train.fetch_hub_token("genai-kit/hf-token", {}, client) == token
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("error", "secret_string", "message"),
    [
        ("AccessDeniedException", None, "AccessDeniedException (the training role may read only the secret"),
        ("ResourceNotFoundException", None, "ResourceNotFoundException"),
        (None, '{"token": "x"}', 'JSON without an "HF_TOKEN" string'),
        (None, "   ", "holds no SecretString"),
    ],
)
def test_an_unreadable_or_malformed_secret_is_a_clear_error_without_the_value(
    error: str | None, secret_string: str | None, message: str
) -> None:
    client, stubber = _secrets_client()
    if error:
        stubber.add_client_error("get_secret_value", error, "denied", 400, {"SecretId": "s"})
    else:
        stubber.add_response("get_secret_value", {"Name": "s", "SecretString": secret_string}, {"SecretId": "s"})
    with stubber, pytest.raises(sft_train.ConfigError) as err:
        sft_train.fetch_hub_token("s", {}, client)
    assert message in str(err.value) and "secret s" in str(err.value)
    assert 'token": "x' not in str(err.value)


def test_the_secret_is_asked_for_in_its_own_region_and_the_token_reaches_hf_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    assert sft_train.secret_region(SECRET_ARN, {"AWS_REGION": "us-east-1"}) == "eu-west-1"
    assert sft_train.secret_region("genai-kit/hf-token", {"AWS_REGION": "us-west-2"}) == "us-west-2"
    made: list[str | None] = []
    client, stubber = _secrets_client("eu-west-1")

    def fake_client(service: str, region_name: str | None = None, **_: Any) -> Any:
        assert service == "secretsmanager"
        made.append(region_name)
        return client

    monkeypatch.setattr(boto3, "client", fake_client)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(sft_train, "train", lambda args, paths, denv: 0)  # stop before any model is loaded
    stubber.add_response("get_secret_value", {"SecretString": "hf_secret"}, {"SecretId": SECRET_ARN})
    with stubber:
        code = sft_train.main(["--data", str(SAMPLES), "--hub-token-secret", SECRET_ARN], env={})
    assert code == 0 and made == ["eu-west-1"]
    assert os.environ["HF_TOKEN"] == "hf_secret"
    captured = capsys.readouterr()
    assert "hf_secret" not in captured.out + captured.err


def test_gradient_checkpointing_trains_and_saves_the_adapter_without_merging(tiny_base: Path, tmp_path: Path) -> None:
    argv = tiny_args(
        tiny_base,
        "--steps",
        "2",
        "--gradient-checkpointing",
        "true",
        "--merge",
        "false",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--model-dir",
        str(tmp_path / "out"),
    )
    assert sft_train.main(argv, env={}) == 0
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "out" / "merged").exists()


@pytest.mark.parametrize(("major", "expected"), [(7, "float32"), (8, "bfloat16"), (9, "bfloat16")])
def test_auto_dtype_is_bfloat16_only_on_gpus_that_have_it(
    monkeypatch: pytest.MonkeyPatch, major: int, expected: str
) -> None:
    """A T4 (ml.g4dn, compute capability 7.5) emulates bfloat16, and torch reports it as supported unless asked
    for native support: auto must train such a GPU in float32, and use bfloat16 from compute capability 8."""

    class Properties:
        def __init__(self, major: int) -> None:
            self.major = major

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties(major))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    assert torch.cuda.is_bf16_supported()  # what torch reports by default, emulation included
    assert sft_train._torch_dtype("auto", use_cuda=True) == getattr(torch, expected)
    assert sft_train._torch_dtype("auto", use_cuda=False) == torch.float32
    assert sft_train._torch_dtype("float16", use_cuda=True) == torch.float16


def _documented_local_runs() -> list[str]:
    """The README's local `python` commands, as written (run from workloads/finetune_sagemaker)."""
    text = (ROOT / "workloads" / "finetune_sagemaker" / "README.md").read_text()
    block = text.split("cd workloads/finetune_sagemaker\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#") and " python " in f" {line}"]


@pytest.mark.parametrize("command", _documented_local_runs())
def test_every_documented_local_run_starts(command: str) -> None:
    """Before: `python sft_train.py ...` ended in ModuleNotFoundError: checkpoints (a workloads/pretrain module that
    only sourcedir.tar.gz puts beside it). Each command runs as written, its arguments replaced by --help."""
    words = command.split()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # only what the command sets
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[0] == "python", command
    result = subprocess.run(
        [sys.executable, words[1], "--help"],
        cwd=ROOT / "workloads" / "finetune_sagemaker",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
