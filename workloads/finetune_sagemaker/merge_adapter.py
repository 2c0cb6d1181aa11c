"""Merge a LoRA adapter into its base model's weights and write the directory Custom Model Import reads.

    python merge_adapter.py --base Qwen/Qwen2.5-0.5B-Instruct --adapter /opt/ml/model/adapter \\
        --output /opt/ml/model/merged [--dtype auto] [--max-shard-size 5GB]

Bedrock imports full Hugging Face weights, not adapters, so the adapter is folded into the base weights
(W + B·A·alpha/r per adapted layer) and the result is saved as ``config.json``, ``*.safetensors`` (sharded
above --max-shard-size, with ``model.safetensors.index.json``), ``generation_config.json`` when the base
has one, and the tokenizer files saved with the adapter (``tokenizer.json``, ``tokenizer_config.json`` with
the chat template used in training embedded, as chat-completion requests need). The base is always loaded
unquantized, so an adapter trained with QLoRA merges into full-precision weights. Layout and file list:
https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-import-model.html#model-customization-import-model-source
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

DTYPES = ("auto", "float32", "bfloat16", "float16")
# Files the merge writes from the tokenizer; a chat template is kept inside tokenizer_config.json only.
STRAY_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def resolve_dtype(name: str, base_config: Any) -> Any:
    """The torch dtype to merge and save in: --dtype, or the base model's own (float32 if unknown).

    A config.json written by transformers 4.56 or later names it "dtype", not "torch_dtype"; the pinned 4.51 keeps
    that key as a plain attribute. Read both, or a newer base model would be merged and saved in float32: twice
    the memory the merge needs and twice the files Custom Model Import reads."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    declared = getattr(base_config, "torch_dtype", None) or base_config.__dict__.get("dtype")
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if declared in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def merge(
    base: str,
    adapter_dir: Path,
    output_dir: Path,
    *,
    dtype: str = "auto",
    max_shard_size: str = "5GB",
    token: str | None = None,
) -> Path:
    """Write the merged model and tokenizer to output_dir and return it."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(base, token=token)
    torch_dtype = resolve_dtype(dtype, config)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch_dtype, token=token)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.config.torch_dtype = torch_dtype
    merged.config.__dict__.pop("dtype", None)  # a newer config's name for it: one dtype in the merged config.json
    merged.config.use_cache = True  # training switches the cache off; inference wants it
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(output_dir, safe_serialization=True, max_shard_size=max_shard_size)
    # The tokenizer saved with the adapter carries the chat template training used (maybe the fallback).
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(output_dir)
    for name in STRAY_TEMPLATE_FILES:
        (output_dir / name).unlink(missing_ok=True)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base model: Hugging Face Hub id or local directory")
    parser.add_argument("--adapter", type=Path, required=True, help="directory the training saved the adapter in")
    parser.add_argument("--output", type=Path, required=True, help="directory for the merged model")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weights dtype (auto: the base model's)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors file before sharding")
    args = parser.parse_args(argv)
    if not (args.adapter / "adapter_config.json").is_file():
        print(f"error: {args.adapter} holds no adapter_config.json", file=sys.stderr)
        return 2
    output = merge(args.base, args.adapter, args.output, dtype=args.dtype, max_shard_size=args.max_shard_size)
    files = sorted(p.name for p in output.iterdir())
    print(json.dumps({"event": "merged", "path": str(output), "files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
