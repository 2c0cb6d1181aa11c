"""Chat-format JSONL records -> token ids with loss labels on assistant tokens only, and per-rank batches.

A record is one JSON object per line::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

Roles are ``system`` (optional, first only), ``user`` and ``assistant``; the conversation starts with the
system or a user message and holds at least one assistant message (the rules live in chat_records.py, which the
pipeline's check before the training job and ``kit l3sm`` apply too). Every assistant message is a training
target (multi-turn records teach every answer), everything else is context.

Rendering uses the tokenizer's chat template, so training sees exactly the text the imported model sees at
inference. A base model without a template gets :data:`FALLBACK_CHAT_TEMPLATE` (plain role markers, turns
ended by the tokenizer's end-of-sequence token); the template used is saved with the adapter and the merged
model, so inference applies the same one. Assistant spans are found by rendering each prefix of the
conversation: the text up to an assistant turn (with the generation prompt) must be a prefix of the whole
rendering, which holds for the usual Llama, Qwen and Mistral templates. Tokens whose first character lies in
an assistant span (the answer and its end-of-turn marker) get their ids as labels, all others -100.

Batches are a pure function of (seed, step, rank, world size): each epoch is a seeded permutation of the
examples, split across ranks the way DistributedSampler does (padded by repeating the first examples so
every rank takes the same number of steps), so a resumed run sees exactly the batches an uninterrupted one
would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import chat_records
import torch

IGNORE_INDEX = -100  # the label value Hugging Face causal-LM losses skip
ROLES = chat_records.ROLES

# Used only when the base tokenizer has no chat template of its own (documented in README.md).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

Message = dict[str, str]


class DataError(ValueError):
    """Training data the run cannot start with."""


class ChatTokenizer(Protocol):
    """The part of a Hugging Face fast tokenizer this module uses."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def data_files(path: Path) -> list[Path]:
    """The JSONL files of a file or a directory (searched recursively, sorted), or a DataError."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist (pass --data or set SM_CHANNEL_TRAIN)")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    if not files:
        raise DataError(f"data directory {path} holds no .jsonl files")
    return files


def validate_record(record: Any) -> list[Message]:
    """The record's messages, or a DataError saying what is wrong with it (the rules: chat_records.py)."""
    problem = chat_records.record_problem(record)
    if problem is not None:
        raise DataError(problem)
    return chat_records.messages_of(record)


def load_conversations(path: Path) -> list[list[Message]]:
    """Every record of every JSONL file under the path, validated; errors name file and line."""
    conversations: list[list[Message]] = []
    for file in data_files(path):
        with open(file, encoding="utf-8", errors=chat_records.TEXT_ERRORS) as handle:
            for number, line in enumerate(handle, start=1):
                if chat_records.is_blank(line):
                    continue
                try:
                    conversations.append(chat_records.line_messages(line))
                except chat_records.RecordError as err:
                    raise DataError(f"{file}:{number}: {err}") from None
    if not conversations:
        raise DataError(f"data path {path} holds no records")
    return conversations


def _render(tokenizer: ChatTokenizer, messages: Sequence[Message], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    if not isinstance(text, str):
        raise DataError("the chat template did not render to text")
    return text


def assistant_spans(tokenizer: ChatTokenizer, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = _render(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
            raise DataError(
                "the chat template does not render conversations prefix by prefix, so assistant turns cannot "
                "be located: pass --chat-template fallback"
            )
        spans.append((len(before), len(through)))
    return full, spans


def encode(tokenizer: ChatTokenizer, messages: Sequence[Message], max_seq_len: int) -> Example | None:
    """Token ids and labels (assistant tokens only), truncated to max_seq_len; None if no target is left."""
    text, spans = assistant_spans(tokenizer, messages)
    # The template writes any BOS itself, so the tokenizer must not add special tokens again.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_seq_len]
    offsets = list(encoded["offset_mapping"])[:max_seq_len]
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(ids, offsets, strict=True)
    ]
    example = Example(input_ids=ids, labels=labels)
    return example if example.target_tokens else None


@dataclass(frozen=True)
class EncodedData:
    examples: list[Example]
    dropped: int  # conversations whose assistant turns were cut off entirely by max_seq_len

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def target_tokens(self) -> int:
        return sum(e.target_tokens for e in self.examples)


def encode_all(tokenizer: ChatTokenizer, conversations: Sequence[Sequence[Message]], max_seq_len: int) -> EncodedData:
    examples: list[Example] = []
    dropped = 0
    for conversation in conversations:
        example = encode(tokenizer, conversation, max_seq_len)
        if example is None:
            dropped += 1
        else:
            examples.append(example)
    if not examples:
        raise DataError(f"no record keeps an assistant token within --max-seq-len {max_seq_len}")
    return EncodedData(examples=examples, dropped=dropped)


class ShardedChatBatches:
    """Deterministic per-rank batches: ``batch(step)`` depends only on (seed, step, rank, world size)."""

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        pad_id: int,
    ) -> None:
        if not examples:
            raise DataError("no examples to batch")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.pad_id = pad_id
        self.per_rank = math.ceil(len(self.examples) / world_size)
        self.steps_per_epoch = math.ceil(self.per_rank / batch_size)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def rank_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]  # DistributedSampler pads by repeating the first indices
        return order[self.rank : total : self.world_size]

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        epoch, within = divmod(step, self.steps_per_epoch)
        chosen = self.rank_indices(epoch)[within * self.batch_size : (within + 1) * self.batch_size]
        return collate([self.examples[i] for i in chosen], self.pad_id)


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked from attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :length] = torch.tensor(example.labels, dtype=torch.long)
        attention[row, :length] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
