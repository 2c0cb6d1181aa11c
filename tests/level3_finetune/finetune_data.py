"""Records, datasets and hypothesis strategies for the fine-tuning validator tests (one module, named)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from finetune_validate import formats

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "finetune"
TRAIN_SAMPLE = SAMPLES / "train.jsonl"
VALIDATION_SAMPLE = SAMPLES / "validation.jsonl"
INVALID_SAMPLES = SAMPLES / "invalid"
NOVA_LITE = "amazon.nova-lite-v1:0:300k"
NOVA_MICRO = "amazon.nova-micro-v1:0:128k"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0:200k"
LLAMA_31 = "meta.llama3-1-8b-instruct-v1:0:128k"
LLAMA_32 = "meta.llama3-2-1b-instruct-v1:0:128k"
LLAMA_32_VISION = "meta.llama3-2-11b-instruct-v1:0:128k"
TITAN_EXPRESS = "amazon.titan-text-express-v1:0:8k"
TITAN_LITE = "amazon.titan-text-lite-v1:0:4k"


def usable_on(model_id: str) -> date | None:
    """A day the base model could still be customized: the day before its end of life (from then on the validator
    refuses it, but its data rules stay under test), or None (today) for a model without one."""
    spec = formats.MODELS.get(model_id)
    end = spec.lifecycle.end_of_life if spec is not None else None
    return end - timedelta(days=1) if end is not None else None


def converse(*texts: str, system: str | None = "You answer in the kit's house style.") -> dict[str, Any]:
    """A Converse-format record (Nova, Llama 3.2): texts alternate user, assistant."""
    messages = [{"role": ("user", "assistant")[i % 2], "content": [{"text": text}]} for i, text in enumerate(texts)]
    record: dict[str, Any] = {"schemaVersion": "bedrock-conversation-2024", "messages": messages}
    if system is not None:
        record["system"] = [{"text": system}]
    return record


def claude(*texts: str, system: str | None = "You answer in the kit's house style.") -> dict[str, Any]:
    """A Claude 3 Haiku record: string contents, optional string system (the model is past its end of life; its
    rules are tested as on its last day, see ``usable_on``)."""
    messages = [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]
    record: dict[str, Any] = {"messages": messages}
    if system is not None:
        record["system"] = system
    return record


def prompt(prompt_text: str = "Which level fits?", completion: str = "Level 1, prompt engineering.") -> dict[str, Any]:
    return {"prompt": prompt_text, "completion": completion}


def image(fmt: str = "png", uri: str = "s3://kit-data/images/diagram.png") -> dict[str, Any]:
    return {"image": {"format": fmt, "source": {"s3Location": {"uri": uri}}}}


def video(fmt: str = "mp4", uri: str = "s3://kit-data/videos/demo.mp4") -> dict[str, Any]:
    return {"video": {"format": fmt, "source": {"s3Location": {"uri": uri}}}}


def line(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def jsonl(records: Iterable[Any]) -> bytes:
    """Records as JSON Lines bytes (one per line, newline-terminated)."""
    return b"".join(line(record) + b"\n" for record in records)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@dataclass(frozen=True)
class Family:
    """One family under test: a model id, a record builder and the record count a valid dataset needs."""

    name: str
    model_id: str
    make: Callable[[list[str]], dict[str, Any]]
    min_records: int
    shape: str

    @property
    def today(self) -> date | None:
        return usable_on(self.model_id)

    def records(self, count: int, texts: list[str] | None = None) -> list[dict[str, Any]]:
        texts = texts or ["Which level fits a tone change?", "Level 1, prompt engineering."]
        return [self.make(texts) for _ in range(count)]


FAMILIES = {
    "nova": Family("nova", NOVA_LITE, lambda texts: converse(*texts), 8, formats.CONVERSE),
    "claude": Family("claude", CLAUDE, lambda texts: claude(*texts), 32, formats.CLAUDE),
    "llama31": Family("llama31", LLAMA_31, lambda texts: prompt(texts[0], texts[-1]), 100, formats.PROMPT_COMPLETION),
    "llama32": Family("llama32", LLAMA_32, lambda texts: converse(*texts), 100, formats.CONVERSE),
    "titan": Family("titan", TITAN_EXPRESS, lambda texts: prompt(texts[0], texts[-1]), 8, formats.PROMPT_COMPLETION),
}


def errors_by_line(section: dict[str, Any]) -> dict[int | None, set[str]]:
    """{line: {error kinds}} from a report section (using the stored first occurrences)."""
    found: dict[int | None, set[str]] = {}
    for kind, entry in section["errors"].items():
        for item in entry["first"]:
            found.setdefault(item["line"], set()).add(kind)
    return found


def kinds(section: dict[str, Any]) -> dict[str, list[int | None]]:
    """{kind: [lines of its first occurrences]}."""
    return {kind: [item["line"] for item in entry["first"]] for kind, entry in section["errors"].items()}


def stream(record_lines: list[bytes], total: int, block_lines: int = 2_000) -> Iterator[bytes]:
    """``total`` lines cycled from ``record_lines``, as newline-terminated byte blocks produced lazily.

    Whole cycles are joined once and the same block object is yielded again and again, so generating the
    stream allocates (almost) nothing: only the validator's own allocations show in memory measurements.
    """
    terminated = [record + b"\n" for record in record_lines]
    cycles = max(1, block_lines // len(terminated))
    block = b"".join(terminated * cycles)
    per_block = len(terminated) * cycles
    for _ in range(total // per_block):
        yield block
    rest = total % per_block
    if rest:
        yield b"".join(terminated[i % len(terminated)] for i in range(rest))


# --- hypothesis ---------------------------------------------------------------------------------------------

# No ':', '<' or '[' (every reserved token holds one), so generated text can never hold a reserved string.
# Newlines, tabs, quotes, backslashes and multi-byte characters all appear inside JSON strings.
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;!?'\"\\/\n\t-_()éüßñ中文€😀"
texts = st.text(alphabet=_ALPHABET, min_size=1, max_size=40).filter(lambda text: text.strip() != "")


@st.composite
def conversations(draw: st.DrawFn) -> list[str]:
    """An even number (2 to 6) of turn texts."""
    pairs = draw(st.integers(min_value=1, max_value=3))
    return draw(st.lists(texts, min_size=2 * pairs, max_size=2 * pairs))


def reserved_tokens() -> st.SearchStrategy[str]:
    """A Nova reserved token in random letter case."""

    def mangle(token: str, flips: list[bool]) -> str:
        return "".join(c.swapcase() if flip else c for c, flip in zip(token, flips, strict=False))

    return st.sampled_from(formats.NOVA_RESERVED).flatmap(
        lambda token: st.lists(st.booleans(), min_size=len(token), max_size=len(token)).map(
            lambda flips: mangle(token, flips)
        )
    )


# --- realistic corpora (benchmarks and speed tests) -----------------------------------------------------------

SAMPLE_DIRS = {
    formats.FINE_TUNING: (SAMPLES / "train.jsonl", NOVA_LITE),
    "FINE_TUNING_REASONING": (SAMPLES / "fine_tuning_reasoning" / "train.jsonl", "amazon.nova-2-lite-v1:0:256k"),
    formats.CONTINUED_PRE_TRAINING: (SAMPLES / "continued_pre_training" / "train.jsonl", TITAN_EXPRESS),
    formats.DISTILLATION: (SAMPLES / "distillation" / "train.jsonl", NOVA_LITE),
    formats.REINFORCEMENT_FINE_TUNING: (
        SAMPLES / "reinforcement_fine_tuning" / "train.jsonl",
        "amazon.nova-2-lite-v1:0:256k",
    ),
}

_WORDS = (
    "bucket",
    "index",
    "embedding",
    "retrieval",
    "latency",
    "region",
    "policy",
    "quota",
    "throughput",
    "customization",
    "deployment",
    "invoice",
    "cluster",
    "subnet",
    "endpoint",
    "grader",
    "reward",
    "teacher",
    "student",
    "checkpoint",
    "gradient",
    "tokenizer",
    "schema",
    "payload",
)


_CODE_AND_TABLE = (
    "\n```python\ndef cost(hours: int) -> float:\n    return hours * 0.24  # OCU-hour\n```\n"
    "| level | idle |\n|---|---|\n| 1 | $0 |"
)


def _tool_spec(rng: Any, index: int) -> dict[str, Any]:
    """A JSON-schema tool specification of realistic size (nested properties, enums, descriptions)."""
    properties = {
        f"{rng.choice(_WORDS)}_{n}": {
            "type": rng.choice(["string", "integer", "number", "boolean"]),
            "description": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 18))),
            **({"enum": [rng.choice(_WORDS) for _ in range(4)]} if n % 3 == 0 else {}),
        }
        for n in range(rng.randint(6, 14))
    }
    return {
        "name": f"kit_tool_{index}",
        "description": " ".join(rng.choice(_WORDS) for _ in range(30)),
        "inputSchema": {"json": {"type": "object", "properties": properties, "required": list(properties)[:3]}},
    }


def realistic_records(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``n`` valid Nova (Converse) fine-tuning records shaped like real datasets, deterministically.

    Half are tool-use conversations: a system prompt holding 3 to 8 JSON tool specifications (several KB of
    ``"key": value`` text, full of colons and brackets), user requests and assistant turns that answer with JSON
    tool calls and results as text. The other half are long multi-turn conversations (4 to 16 turns of prose,
    code and tables). Nothing in them is a reserved string, so a correct validator finds them all valid.
    """
    import random

    rng = random.Random(seed)
    specs = [json.dumps([_tool_spec(rng, i * 10 + k) for k in range(rng.randint(3, 8))], indent=1) for i in range(16)]
    for index in range(n):
        if index % 2 == 0:
            system = "You can call these tools; answer with a JSON tool call when one applies.\n" + specs[index % 16]
            turns: list[str] = []
            for _ in range(rng.randint(1, 3)):
                turns.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 40))) + "?")
                call = {
                    "tool": f"kit_tool_{rng.randint(0, 150)}",
                    "arguments": {w: rng.randint(0, 999) for w in rng.sample(_WORDS, 5)},
                }
                result = {
                    "status": "ok",
                    "items": [
                        {"id": k, "name": rng.choice(_WORDS), "size": rng.random()} for k in range(rng.randint(2, 12))
                    ],
                }
                turns.append(
                    json.dumps(call)
                    + "\nResult: "
                    + json.dumps(result)
                    + "\n"
                    + " ".join(rng.choice(_WORDS) for _ in range(30))
                )
        else:
            system = "You are the kit's support assistant; answer in the house style."
            turns = []
            for turn in range(rng.randint(2, 8) * 2):
                body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 220)))
                if turn % 4 == 3:
                    body += _CODE_AND_TABLE
                turns.append(body)
        yield converse(*turns, system=system)
