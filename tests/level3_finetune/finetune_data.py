"""Records, datasets and hypothesis strategies for the fine-tuning validator tests (one module, named)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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


def converse(*texts: str, system: str | None = "You answer in the kit's house style.") -> dict[str, Any]:
    """A Converse-format record (Nova, Llama 3.2): texts alternate user, assistant."""
    messages = [{"role": ("user", "assistant")[i % 2], "content": [{"text": text}]} for i, text in enumerate(texts)]
    record: dict[str, Any] = {"schemaVersion": "bedrock-conversation-2024", "messages": messages}
    if system is not None:
        record["system"] = [{"text": system}]
    return record


def claude(*texts: str, system: str | None = "You answer in the kit's house style.") -> dict[str, Any]:
    """A Claude 3 Haiku record: string contents, optional string system."""
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
