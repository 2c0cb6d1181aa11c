"""Byte-level corpus loading and deterministic, rank-sharded batches.

The corpus is the concatenation of every file under the data path (sorted by path, so the byte
stream is the same on every node). Each epoch cuts the stream into blocks of ``seq_len + 1`` bytes
starting at an epoch-specific offset, shuffles the blocks with a generator seeded by
``seed + epoch``, pads the list to a multiple of the world size and gives rank ``r`` every
``world_size``-th block starting at ``r`` (the same contract as ``torch.utils.data.DistributedSampler``).

A batch is a pure function of (seed, step, rank, world size): resuming at step N needs no sampler
state, and the same seed and world size always see the same bytes in the same order.
"""

from __future__ import annotations

from pathlib import Path

import torch


class CorpusError(ValueError):
    """The data path is missing, empty or too small for the requested sequence length."""


def corpus_files(path: Path) -> list[Path]:
    """The files that make up the corpus: the path itself, or every non-hidden file beneath it."""
    if not path.exists():
        raise CorpusError(f"data path {path} does not exist (pass --data or set SM_CHANNEL_TRAIN)")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise CorpusError(f"data directory {path} holds no files")
    return files


def load_corpus(path: Path) -> bytes:
    """Every corpus file's bytes, joined in path order. Raises CorpusError when there are none."""
    data = b"".join(f.read_bytes() for f in corpus_files(path))
    if not data:
        raise CorpusError(f"the corpus under {path} is empty (0 bytes)")
    return data


class ShardedByteBatches:
    """Deterministic next-byte-prediction batches for one rank of a data-parallel job."""

    def __init__(self, data: bytes, *, seq_len: int, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of size {world_size}")
        if batch_size < 1 or seq_len < 1:
            raise ValueError("batch_size and seq_len must be at least 1")
        self.block = seq_len + 1  # inputs are block[:-1], targets block[1:]
        # Blocks per epoch, the same for every offset in [0, block - 1].
        self.num_blocks = (len(data) - (self.block - 1)) // self.block
        if self.num_blocks < 1:
            raise CorpusError(
                f"the corpus has {len(data)} bytes, too few for one sequence of {seq_len} tokens "
                f"(needs at least {2 * self.block - 1} bytes); use a larger corpus or a smaller --seq-len"
            )
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.per_rank = -(-self.num_blocks // world_size)  # ceil: DistributedSampler pads the tail
        self._cache: dict[int, torch.Tensor] = {}

    def _epoch_starts(self, epoch: int) -> torch.Tensor:
        """Byte offsets of this rank's blocks in the given epoch."""
        if epoch not in self._cache:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            offset = int(torch.randint(0, self.block, (1,), generator=generator))
            order = torch.randperm(self.num_blocks, generator=generator)
            total = self.per_rank * self.world_size
            # The tail is padded by repeating the order as often as it takes, as DistributedSampler does: a world
            # larger than twice the blocks needs more padding than one copy of the order holds.
            padded = order.repeat(-(-total // self.num_blocks))[:total]
            mine = padded[self.rank : total : self.world_size]
            self._cache = {epoch: offset + mine * self.block}  # keep one epoch: steps only move forward
        return self._cache[epoch]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch_size, seq_len) int64, for the given 0-based step."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        first = step * self.batch_size
        starts = []
        for position in range(first, first + self.batch_size):
            epoch, index = divmod(position, self.per_rank)
            starts.append(int(self._epoch_starts(epoch)[index]))
        rows = torch.stack([self.data[s : s + self.block] for s in starts]).long()
        return rows[:, :-1], rows[:, 1:]

    def epoch_of(self, step: int) -> int:
        return (step * self.batch_size) // self.per_rank
