"""Text -> Vocabulary -> one integer tensor -> batches of shifted windows -> one-hot on the device.

The corpus is held once, as int64 indices. Batches carry indices through the DataLoader; the
one-hot encoding is made in ``on_after_batch_transfer``, after the batch reached its device, so
the whole corpus never exists as one-hot.

Two batchings:

* ``stateful`` (char-rnn, word_language_model): a split is cut into ``batch_size`` parallel
  streams and read in consecutive windows of ``seq_len``, so row ``b`` of batch ``k + 1``
  continues where row ``b`` of batch ``k`` ended and the model can carry its hidden state.
  Every target of the split appears exactly once; the tail that does not fill a full window is
  padded with ``IGNORE_INDEX`` targets that the loss skips. Validation and test always read this
  way, so their figures cover the whole split.
* ``random`` (nanoGPT): independent windows at random offsets, state from zero each batch.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from charrnn.corpora import load_corpus
from charrnn.errors import UserError
from charrnn.vocab import Vocabulary

__all__ = ["CharDataModule", "IGNORE_INDEX", "RandomWindows", "StreamWindows", "Vocabulary", "split_bounds"]

IGNORE_INDEX = -100
BATCHINGS = ("stateful", "random")


def split_bounds(n: int, fractions: Sequence[float]) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges of ``n`` items for train/val/test fractions."""
    total = sum(fractions)
    edges = [0]
    for f in fractions:
        edges.append(edges[-1] + f)
    cuts = [round(n * e / total) for e in edges]
    return [(cuts[i], cuts[i + 1]) for i in range(len(fractions))]


class StreamWindows(Dataset):
    """Item ``k`` is the ``k``-th window of every stream: ``(inputs, targets)``, each ``(streams, seq_len)``.

    Distributed (``world_size > 1``): the split is cut into ``streams * world_size`` streams and
    rank ``r`` keeps rows ``r * streams .. (r + 1) * streams - 1``, so each rank reads its own
    contiguous stretches in order (the carried hidden state stays valid), every rank has the same
    number of windows, and the ranks together cover every target exactly once.
    """

    def __init__(self, tokens: Tensor, streams: int, seq_len: int, rank: int = 0, world_size: int = 1) -> None:
        n_targets = len(tokens) - 1
        streams = max(1, min(streams * world_size, n_targets) // world_size) * world_size
        per_stream = math.ceil(n_targets / streams)
        self.windows = math.ceil(per_stream / seq_len)
        width = self.windows * seq_len
        inputs = torch.zeros(streams * width, dtype=torch.long)
        targets = torch.full((streams * width,), IGNORE_INDEX, dtype=torch.long)
        # Stream b holds targets b*per_stream+1 .. (b+1)*per_stream; only the end is padded.
        for b in range(streams):
            lo, hi = b * per_stream, min((b + 1) * per_stream, n_targets)
            inputs[b * width : b * width + hi - lo] = tokens[lo:hi]
            targets[b * width : b * width + hi - lo] = tokens[lo + 1 : hi + 1]
        rows = slice(rank * streams // world_size, (rank + 1) * streams // world_size)
        self.inputs = inputs.view(streams, width)[rows]
        self.targets = targets.view(streams, width)[rows]
        self.seq_len = seq_len

    def __len__(self) -> int:
        return self.windows

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return self.inputs[:, cols], self.targets[:, cols]


class RandomWindows(Dataset):
    """Item ``i`` is the window starting at offset ``i``; a random sampler picks the offsets."""

    def __init__(self, tokens: Tensor, seq_len: int) -> None:
        self.tokens = tokens
        self.seq_len = min(seq_len, len(tokens) - 1)

    def __len__(self) -> int:
        return len(self.tokens) - self.seq_len

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.tokens[i : i + self.seq_len], self.tokens[i + 1 : i + 1 + self.seq_len]


class CharDataModule(L.LightningDataModule):
    """Any text as one-hot shifted sequences: input ``text[i:i+T]``, target ``text[i+1:i+T+1]``."""

    def __init__(
        self,
        corpus: str = "stdlib",
        path: str | None = None,
        seq_len: int = 64,
        batch_size: int = 32,
        batching: str = "stateful",
        split: Sequence[float] = (0.9, 0.05, 0.05),
        num_workers: int = 0,
        encoding: str = "utf-8",
        errors: str = "strict",
        max_chars: int | None = None,
        one_hot: bool = True,
    ) -> None:
        super().__init__()
        if batching not in BATCHINGS:
            raise UserError(f"unknown data.batching={batching!r}; choose stateful or random")
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if int(value) < 1:
                raise UserError(f"data.{name} must be at least 1, got {value}")
        if int(num_workers) < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers}")
        if len(split) != 3 or any(float(f) < 0 for f in split) or sum(split) <= 0:
            raise UserError(f"data.split must be three non-negative fractions train,val,test, got {list(split)}")
        self.corpus, self.path = corpus, path
        self.seq_len, self.batch_size = int(seq_len), int(batch_size)
        self.batching, self.split = batching, [float(f) for f in split]
        self.num_workers, self.encoding, self.errors = int(num_workers), encoding, errors
        self.max_chars, self.one_hot = max_chars, one_hot
        self.text: str | None = None
        self.vocab: Vocabulary | None = None
        self.tokens: Tensor | None = None
        self.splits: dict[str, Tensor] = {}

    def prepare_data(self) -> None:
        # Downloads (Tiny Shakespeare) happen here, once per node, before any split is made.
        if self.corpus == "shakespeare":
            load_corpus(self.corpus, self.path)

    def setup(self, stage: str | None = None) -> None:
        if self.tokens is not None:
            return
        self.text = load_corpus(self.corpus, self.path, self.encoding, self.errors, self.max_chars)
        self.vocab = Vocabulary.from_text(self.text)
        self.tokens = self.vocab.encode(self.text)
        if self.corpus == "hello":
            # Too short to split: the notebook trains, validates and tests on the one sequence.
            self.splits = {"train": self.tokens, "val": self.tokens, "test": self.tokens}
            return
        bounds = split_bounds(len(self.tokens), self.split)
        self.splits = {name: self.tokens[lo:hi] for name, (lo, hi) in zip(("train", "val", "test"), bounds)}
        need = {"train": self.seq_len + 1, "val": 2, "test": 2}
        for name, tokens in self.splits.items():
            if len(tokens) < need[name]:
                raise UserError(
                    f"the {name} split has {len(tokens)} characters of the corpus's {len(self.tokens)}, fewer than the {need[name]} it needs; "
                    f"use a longer text, a smaller data.seq_len, or other data.split fractions"
                )

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def _ranks(self) -> tuple[int, int]:
        """``(global_rank, world_size)`` of the attached trainer; ``(0, 1)`` without one."""
        trainer = getattr(self, "trainer", None)
        return (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)

    def _streams(self, split: str) -> DataLoader:
        rank, world = self._ranks()
        dataset = StreamWindows(self.splits[split], self.batch_size, self.seq_len, rank=rank, world_size=world)
        return self._loader(dataset, batch_size=None, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        tokens = self.splits["train"]
        if self.batching == "random":
            rank, world = self._ranks()
            dataset = RandomWindows(tokens, self.seq_len)
            # One epoch reads about as many characters as one stateful pass over the split (all ranks together).
            batches = max(1, (len(tokens) - 1) // (self.batch_size * dataset.seq_len * world))
            # Under DDP every rank has the same global seed: give each its own stream of offsets.
            generator = torch.Generator().manual_seed(torch.initial_seed() + rank) if world > 1 else None
            sampler = RandomSampler(dataset, replacement=True, num_samples=batches * self.batch_size, generator=generator)
            return self._loader(dataset, batch_size=self.batch_size, sampler=sampler)
        return self._streams("train")

    def val_dataloader(self) -> DataLoader:
        return self._streams("val")

    def test_dataloader(self) -> DataLoader:
        return self._streams("test")

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        inputs, targets = batch
        if self.one_hot and self.vocab is not None:
            inputs = torch.nn.functional.one_hot(inputs, len(self.vocab)).float()
        return inputs, targets
