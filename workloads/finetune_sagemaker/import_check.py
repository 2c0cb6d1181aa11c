"""Check a Hugging Face model directory against Amazon Bedrock Custom Model Import's documented requirements.

    python import_check.py /opt/ml/model/merged [--region us-east-1] [--no-chat-template] [--json]

prints one line per problem and exits 1 if there is any (0 and a summary otherwise). The training program
runs the same check on the merged model before it ends (sft_train.py), so a model Bedrock would reject fails the
training step instead of an import job. The module needs only the standard library: it reads JSON files and the
JSON headers of the safetensors files, never the tensors, so ``ModelSource`` could run it against S3 as well.

Each rule names the page it comes from. Rules marked "kit rule" are this kit's own checks of the Hugging Face
layout the documentation asks for, not limits AWS states.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

IMPORT_DOC = "https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-import-model.html"
# The folder of the model directory (SM_MODEL_DIR) sft_train.py writes the merged model to, which the Level 3 stack
# imports (CreateModelImportJob on <output>/model/merged/) and its cleanup matches.
MERGED_DIR = "merged"
INVOKE_DOC = "https://docs.aws.amazon.com/bedrock/latest/userguide/invoke-imported-model.html"
CHAT_TEMPLATE_DOC = "https://docs.aws.amazon.com/bedrock/latest/userguide/custom-chat-templates-tokenizers.html"
SAFETENSORS_DOC = "https://huggingface.co/docs/safetensors/en/index"


@dataclass(frozen=True)
class Architecture:
    family: str  # the name the Bedrock documentation uses
    model_types: tuple[str, ...]  # config.json model_type values the Hugging Face class is saved with
    multimodal: bool
    converse: bool  # whether Converse/ConverseStream serve the imported model
    regions: tuple[str, ...] | None = None  # None: every Region Custom Model Import is offered in


# Supported architectures (IMPORT_DOC, "Supported architectures"), keyed by the Hugging Face class name that
# config.json's "architectures" holds. Converse: INVOKE_DOC says "Converse API is not supported for Qwen2.5,
# Qwen2-VL, Qwen2.5-VL, and GPT-OSS models" and IMPORT_DOC says the same for Qwen3. Qwen2 and Qwen2.5 share
# Qwen2ForCausalLM, so a config cannot tell them apart: the check treats both as without Converse.
SUPPORTED_ARCHITECTURES: dict[str, Architecture] = {
    "MistralForCausalLM": Architecture("Mistral", ("mistral",), multimodal=False, converse=True),
    "MixtralForCausalLM": Architecture("Mixtral", ("mixtral",), multimodal=False, converse=True),
    "T5ForConditionalGeneration": Architecture("Flan", ("t5",), multimodal=False, converse=True),
    "LlamaForCausalLM": Architecture("Llama", ("llama",), multimodal=False, converse=True),
    "MllamaForConditionalGeneration": Architecture("Mllama", ("mllama",), multimodal=True, converse=True),
    "GPTBigCodeForCausalLM": Architecture("GPTBigCode", ("gpt_bigcode",), multimodal=False, converse=True),
    "Qwen2ForCausalLM": Architecture("Qwen2/Qwen2.5", ("qwen2",), multimodal=False, converse=False),
    "Qwen2VLForConditionalGeneration": Architecture("Qwen2-VL", ("qwen2_vl",), multimodal=True, converse=False),
    "Qwen2_5_VLForConditionalGeneration": Architecture("Qwen2.5-VL", ("qwen2_5_vl",), multimodal=True, converse=False),
    # "For Qwen3 architecture, only Qwen3ForCausalLM and Qwen3MoeForCausalLM are supported."
    "Qwen3ForCausalLM": Architecture("Qwen3", ("qwen3",), multimodal=False, converse=False),
    "Qwen3MoeForCausalLM": Architecture("Qwen3", ("qwen3_moe",), multimodal=False, converse=False),
    # "GPT-OSS model architecture is only supported in the US East (N. Virginia) region."
    "GptOssForCausalLM": Architecture(
        "GPT-OSS", ("gpt_oss",), multimodal=False, converse=False, regions=("us-east-1",)
    ),
}


def trainable_problem(config: Mapping[str, Any]) -> str | None:
    """Why the training program (sft_train.py: a text causal LM loaded with AutoModelForCausalLM from the
    transformers version Custom Model Import supports) cannot train a base model with this config.json, or None.

    Of SUPPORTED_ARCHITECTURES it trains the text classes AutoModelForCausalLM loads in the installed transformers:
    not Flan (T5) or the vision models (Mllama would be saved as MllamaForCausalLM, which the import refuses), nor
    GPT-OSS, newer than transformers 4.51.3 (it came in 4.55.0).
    Nor a base whose context is longer than the import takes (MAX_CONTEXT_TOKENS): merging keeps the base's config.
    Checked before training, so an architecture the program cannot train fails in seconds, not after the job.
    """
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = config.get("architectures")
    name = architectures[0] if isinstance(architectures, list) and len(architectures) == 1 else None
    architecture = SUPPORTED_ARCHITECTURES.get(str(name))
    if architecture is None:
        return f"architectures {architectures!r} is not an architecture Custom Model Import supports ({IMPORT_DOC})"
    trainable = sorted(
        key
        for key, arch in SUPPORTED_ARCHITECTURES.items()
        if key in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() and not arch.multimodal
    )
    if name not in trainable:
        return (
            f"{name} ({architecture.family}) is supported by Custom Model Import but not trainable by this program "
            f"with transformers {transformers.__version__}; it trains: {', '.join(trainable)}"
        )
    # The merged model keeps the base's config, so a context the import refuses is refused here, before training.
    context = _context_length(config)
    if context is not None and (not isinstance(context[1], int) or context[1] > MAX_CONTEXT_TOKENS):
        return (
            f"{context[0]} = {context[1]!r}: Custom Model Import takes a context of at most {MAX_CONTEXT_TOKENS} "
            f"tokens (128K), and the merged model would keep the base's ({IMPORT_DOC})"
        )
    return None


# "The size of the imported model weights must be less than 100GB for multimodal models and 200GB for text
# models." (IMPORT_DOC) Counted in decimal gigabytes, the smaller reading of "GB" when it is ambiguous.
MAX_WEIGHT_BYTES_TEXT = 200 * 10**9
MAX_WEIGHT_BYTES_MULTIMODAL = 100 * 10**9
# "The maximum positional embeddings or the maximum context length supported by the model should be less
# than 128K." (IMPORT_DOC) Llama 3.1-3.3, which the same page lists, declare exactly 131072 (128 Ki), so the
# limit is read as at most 128 Ki tokens.
MAX_CONTEXT_TOKENS = 128 * 1024
# "Amazon Bedrock supports transformer version 4.51.3. Ensure that you are using transformer version 4.51.3
# when you fine tune your model." (IMPORT_DOC) A config saved by a newer transformers may use keys 4.51.3 does
# not read (5.x renamed torch_dtype to dtype), so newer versions are refused; older ones load in 4.51.3.
SUPPORTED_TRANSFORMERS = (4, 51, 3)
# Supported tokenizers (IMPORT_DOC, "Supported tokenizers"): tokenizer_config.json's tokenizer_class.
SUPPORTED_TOKENIZERS = frozenset(
    {
        "T5Tokenizer",
        "T5TokenizerFast",
        "LlamaTokenizer",
        "LlamaTokenizerFast",
        "CodeLlamaTokenizer",
        "CodeLlamaTokenizerFast",
        "GPT2Tokenizer",
        "GPT2TokenizerFast",
        "GPTNeoXTokenizer",
        "GPTNeoXTokenizerFast",
        "PreTrainedTokenizer",
        "PreTrainedTokenizerFast",
        "Qwen2Tokenizer",
        "Qwen2TokenizerFast",
    }
)
# Weight files in formats other than safetensors ("You must store the tensors for your model in a file with
# the extension .safetensors", IMPORT_DOC). Pickled weights are refused rather than ignored: they are
# executable on load and would be uploaded for nothing.
FOREIGN_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".pkl", ".onnx")
# Kit rule: full-precision Hugging Face weights. Integer or 8-bit float tensors come from a quantized save
# (for example a QLoRA model merged without dequantizing), which is not the weights format the page asks for.
ALLOWED_TENSOR_DTYPES = frozenset({"F32", "F16", "BF16"})
ALLOWED_CONFIG_DTYPES = frozenset({"float32", "float16", "bfloat16"})
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own header size limit (SAFETENSORS_DOC)


@dataclass(frozen=True)
class Problem:
    rule: str
    file: str
    field: str
    value: Any
    message: str
    doc: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.field}" if self.field else self.file
        return f"[{self.rule}] {where} = {self.value!r}: {self.message} ({self.doc})"


class ModelSource(Protocol):
    """Where the model files are: a local directory here, an S3 prefix in the pipeline."""

    def files(self) -> dict[str, int]:
        """Relative path -> size in bytes of every file."""
        ...

    def read(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes of a file, from start, length bytes (None: to the end)."""
        ...


class LocalDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> dict[str, int]:
        if not self.root.is_dir():
            return {}
        return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in self.root.rglob("*") if p.is_file()}

    def read(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        with open(self.root / name, "rb") as handle:
            handle.seek(start)
            return handle.read() if length is None else handle.read(length)


def _json(source: ModelSource, name: str, problems: list[Problem], rule: str, doc: str) -> dict[str, Any] | None:
    try:
        value = json.loads(source.read(name))
    except (OSError, ValueError) as err:
        problems.append(Problem(rule, name, "", None, f"is not readable JSON ({err})", doc))
        return None
    if not isinstance(value, dict):
        problems.append(Problem(rule, name, "", type(value).__name__, "must be a JSON object", doc))
        return None
    return value


def safetensors_dtypes(source: ModelSource, name: str, size: int) -> set[str]:
    """The tensor dtypes a safetensors file declares in its header (8-byte length, then JSON)."""
    if size < 8:
        raise ValueError(f"{size} bytes is shorter than a safetensors header")
    (header_len,) = struct.unpack("<Q", source.read(name, 0, 8))
    if header_len > min(MAX_SAFETENSORS_HEADER, size - 8):
        raise ValueError(f"header length {header_len} does not fit the file")
    header = json.loads(source.read(name, 8, header_len))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return {str(v.get("dtype")) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def _version(text: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version string such as "4.51.3" or "4.52.0.dev0"; None if unparseable."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def _context_length(config: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The config key declaring the longest context (top level first, then a multimodal text_config)."""
    text_config = config.get("text_config")
    sections: list[tuple[str, Mapping[str, Any]]] = [("", config)]
    if isinstance(text_config, Mapping):
        sections.append(("text_config.", text_config))
    for prefix, section in sections:
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            if key in section:
                return prefix + key, section[key]
    return None


def check(
    source: ModelSource | Path,
    *,
    region: str | None = None,
    require_chat_template: bool = True,
) -> list[Problem]:
    """Every way the model files break Custom Model Import's documented requirements (empty list: none)."""
    src: ModelSource = LocalDirectory(source) if isinstance(source, Path) else source
    files = src.files()
    problems: list[Problem] = []
    if not files:
        return [Problem("files", ".", "", None, "no files found: nothing to import", IMPORT_DOC)]
    # Only the top level counts: Bedrock reads the files at the S3 prefix it is given.
    top = {name: size for name, size in files.items() if "/" not in name}

    # --- config.json: required file, architecture, context length, versions (IMPORT_DOC) ----------------
    architecture: Architecture | None = None
    config: dict[str, Any] | None = None
    if "config.json" not in top:
        problems.append(Problem("config", "config.json", "", None, "missing: the import needs config.json", IMPORT_DOC))
    else:
        config = _json(src, "config.json", problems, "config", IMPORT_DOC)
    if config is not None:
        architectures = config.get("architectures")
        if not isinstance(architectures, list) or len(architectures) != 1:
            problems.append(
                Problem(
                    "architecture",
                    "config.json",
                    "architectures",
                    architectures,
                    "must list exactly one model class (the import detects the architecture from it)",
                    IMPORT_DOC,
                )
            )
        else:
            name = architectures[0]
            architecture = SUPPORTED_ARCHITECTURES.get(name)
            if architecture is None:
                problems.append(
                    Problem(
                        "architecture",
                        "config.json",
                        "architectures",
                        name,
                        "is not an architecture Custom Model Import supports; supported: "
                        + ", ".join(sorted(SUPPORTED_ARCHITECTURES)),
                        IMPORT_DOC + "#model-customization-import-model-architecture",
                    )
                )
            elif config.get("model_type") not in architecture.model_types:
                problems.append(
                    Problem(
                        "architecture",
                        "config.json",
                        "model_type",
                        config.get("model_type"),
                        f"does not match {name} (expected {' or '.join(architecture.model_types)})",
                        IMPORT_DOC + "#model-customization-import-model-architecture",
                    )
                )
            elif architecture.regions is not None and region is not None and region not in architecture.regions:
                problems.append(
                    Problem(
                        "region",
                        "config.json",
                        "architectures",
                        name,
                        f"{architecture.family} imports only in {', '.join(architecture.regions)}, not {region}",
                        IMPORT_DOC + "#model-customization-import-model-architecture",
                    )
                )
        context = _context_length(config)
        if context is not None:
            key, value = context
            if not isinstance(value, int) or value > MAX_CONTEXT_TOKENS:
                problems.append(
                    Problem(
                        "context-length",
                        "config.json",
                        key,
                        value,
                        f"must be at most {MAX_CONTEXT_TOKENS} tokens (128K)",
                        IMPORT_DOC + "#model-customization-import-model-architecture",
                    )
                )
        version = config.get("transformers_version")
        parsed = _version(version) if isinstance(version, str) else None
        if parsed is None or parsed > SUPPORTED_TRANSFORMERS:
            wanted = ".".join(map(str, SUPPORTED_TRANSFORMERS))
            problems.append(
                Problem(
                    "transformers-version",
                    "config.json",
                    "transformers_version",
                    version,
                    f"must name a transformers release no newer than {wanted}, the version Bedrock supports: "
                    f"save the model with transformers=={wanted}",
                    IMPORT_DOC + "#model-customization-import-model-architecture",
                )
            )
        dtype = config.get("torch_dtype")
        if dtype is not None and dtype not in ALLOWED_CONFIG_DTYPES:
            problems.append(
                Problem(
                    "dtype",
                    "config.json",
                    "torch_dtype",
                    dtype,
                    f"kit rule: must be one of {', '.join(sorted(ALLOWED_CONFIG_DTYPES))} (full-precision weights)",
                    IMPORT_DOC + "#model-customization-import-model-source",
                )
            )
        if "quantization_config" in config:
            problems.append(
                Problem(
                    "dtype",
                    "config.json",
                    "quantization_config",
                    config["quantization_config"].get("quant_method")
                    if isinstance(config["quantization_config"], dict)
                    else config["quantization_config"],
                    "kit rule: quantized weights; merge the adapter into full-precision base weights",
                    IMPORT_DOC + "#model-customization-import-model-source",
                )
            )

    # --- weights: .safetensors only, complete shards, dtypes, size (IMPORT_DOC) -------------------------
    weights = sorted(name for name in top if name.endswith(".safetensors"))
    for name in sorted(top):
        if name.endswith(FOREIGN_WEIGHT_SUFFIXES):
            problems.append(
                Problem(
                    "safetensors-only",
                    name,
                    "",
                    name.rsplit(".", 1)[-1],
                    "weights must be stored as .safetensors; remove other weight formats",
                    IMPORT_DOC + "#model-customization-import-model-source",
                )
            )
    if {"adapter_config.json", "adapter_model.safetensors"} & top.keys():
        problems.append(
            Problem(
                "merged-weights",
                "adapter_config.json" if "adapter_config.json" in top else "adapter_model.safetensors",
                "",
                None,
                "kit rule: a LoRA adapter, not a model; import the weights merged into the base model",
                IMPORT_DOC + "#model-customization-import-model-source",
            )
        )
        weights = [name for name in weights if name != "adapter_model.safetensors"]
    if not weights:
        problems.append(
            Problem(
                "safetensors-only",
                ".",
                "",
                None,
                "no .safetensors weights: the import needs the model weights in safetensors format",
                IMPORT_DOC + "#model-customization-import-model-source",
            )
        )
    index_name = "model.safetensors.index.json"
    if len(weights) > 1 or index_name in top:
        index = _json(src, index_name, problems, "shards", IMPORT_DOC) if index_name in top else None
        if index_name not in top:
            problems.append(
                Problem("shards", index_name, "", None, "kit rule: sharded weights need their index", IMPORT_DOC)
            )
        elif index is not None:
            weight_map = index.get("weight_map")
            listed = set(weight_map.values()) if isinstance(weight_map, dict) else set()
            for missing in sorted(listed - set(weights)):
                problems.append(
                    Problem(
                        "shards", index_name, "weight_map", missing, "kit rule: listed shard is missing", IMPORT_DOC
                    )
                )
            for extra in sorted(set(weights) - listed):
                problems.append(
                    Problem("shards", extra, "", extra, f"kit rule: shard not listed in {index_name}", IMPORT_DOC)
                )
    total = 0
    for name in weights:
        total += top[name]
        try:
            dtypes = safetensors_dtypes(src, name, top[name])
        except (OSError, ValueError, struct.error) as err:
            problems.append(
                Problem(
                    "safetensors-only", name, "", None, f"is not a readable safetensors file ({err})", SAFETENSORS_DOC
                )
            )
            continue
        bad = sorted(dtypes - ALLOWED_TENSOR_DTYPES)
        if bad:
            problems.append(
                Problem(
                    "dtype",
                    name,
                    "dtype",
                    bad,
                    f"kit rule: tensors must be {', '.join(sorted(ALLOWED_TENSOR_DTYPES))} (full-precision weights)",
                    IMPORT_DOC + "#model-customization-import-model-source",
                )
            )
    limit = (
        MAX_WEIGHT_BYTES_MULTIMODAL if architecture is not None and architecture.multimodal else MAX_WEIGHT_BYTES_TEXT
    )
    if total >= limit:
        kind = "multimodal" if limit == MAX_WEIGHT_BYTES_MULTIMODAL else "text"
        problems.append(
            Problem(
                "size",
                "*.safetensors",
                "bytes",
                total,
                f"weights must be smaller than {limit // 10**9} GB for {kind} models",
                IMPORT_DOC + "#model-customization-import-model-architecture",
            )
        )

    # --- tokenizer files, tokenizer class, chat template (IMPORT_DOC, CHAT_TEMPLATE_DOC, INVOKE_DOC) ----
    tokenizer_config: dict[str, Any] | None = None
    if "tokenizer_config.json" not in top:
        problems.append(
            Problem(
                "tokenizer",
                "tokenizer_config.json",
                "",
                None,
                "missing: the import needs the tokenizer's files",
                IMPORT_DOC + "#model-customization-import-model-source",
            )
        )
    else:
        tokenizer_config = _json(src, "tokenizer_config.json", problems, "tokenizer", IMPORT_DOC)
    # The page lists tokenizer.json and tokenizer.model; a byte-level BPE tokenizer (Llama 3, Qwen) has no
    # SentencePiece tokenizer.model, so one of the two is required.
    if not {"tokenizer.json", "tokenizer.model"} & top.keys():
        problems.append(
            Problem(
                "tokenizer",
                "tokenizer.json",
                "",
                None,
                "missing: the import needs tokenizer.json (or a SentencePiece tokenizer.model)",
                IMPORT_DOC + "#model-customization-import-model-source",
            )
        )
    if tokenizer_config is not None:
        tokenizer_class = tokenizer_config.get("tokenizer_class")
        if tokenizer_class not in SUPPORTED_TOKENIZERS:
            problems.append(
                Problem(
                    "tokenizer",
                    "tokenizer_config.json",
                    "tokenizer_class",
                    tokenizer_class,
                    "is not a tokenizer Custom Model Import supports; supported: "
                    + ", ".join(sorted(SUPPORTED_TOKENIZERS)),
                    IMPORT_DOC + "#tokenizers",
                )
            )
        separate = sorted({"chat_template.jinja", "chat_template.json"} & top.keys())
        embedded = tokenizer_config.get("chat_template")
        if require_chat_template and not embedded:
            problems.append(
                Problem(
                    "chat-template",
                    "tokenizer_config.json",
                    "chat_template",
                    None,
                    "missing: chat-completion requests need the chat template inside tokenizer_config.json",
                    INVOKE_DOC,
                )
            )
        if embedded and separate:
            problems.append(
                Problem(
                    "chat-template",
                    separate[0],
                    "",
                    separate[0],
                    "a separate chat template file overrides the one in tokenizer_config.json; keep one source",
                    CHAT_TEMPLATE_DOC,
                )
            )
    return problems


def summary(source: Path) -> dict[str, Any]:
    """What the pipeline needs to know about a model that passed: family, Converse support, size."""
    config = json.loads((source / "config.json").read_text())
    architecture = SUPPORTED_ARCHITECTURES[config["architectures"][0]]
    weight_bytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    return {
        "architecture": config["architectures"][0],
        "family": architecture.family,
        "converse": architecture.converse,
        "weight_bytes": weight_bytes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--region", default=None, help="the Region the import runs in (GPT-OSS is us-east-1 only)")
    parser.add_argument("--no-chat-template", action="store_true", help="do not require an embedded chat template")
    parser.add_argument("--json", action="store_true", help="print problems as JSON lines")
    args = parser.parse_args(argv)
    problems = check(args.model_dir, region=args.region, require_chat_template=not args.no_chat_template)
    for problem in problems:
        print(json.dumps(asdict(problem), default=str) if args.json else str(problem))
    if problems:
        return 1
    print(json.dumps({"ok": True, **summary(args.model_dir)}) if args.json else f"ok: {summary(args.model_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
