"""CharDataModule: text -> Vocabulary -> one integer tensor -> batches of shifted windows -> one-hot on the device.

The corpus is held once, as int64 indices. Batches carry indices through the DataLoader; the
one-hot encoding is made in ``on_after_batch_transfer``, after the batch reached its device, so
the whole corpus never exists as one-hot. How a split is cut into windows, and the two
batchings (stateful and random), is :mod:`charrnn.core.windows`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from charrnn.core.corpora import load_corpus
from charrnn.core.errors import UserError, checked
from charrnn.core.vocab import Vocabulary
from charrnn.core.windows import EpochSampler, RandomWindows, StreamWindows, check_batching, check_split, check_windows, cut_splits


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
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size, self.seq_len = check_windows(batch_size, seq_len)
        self.batching = check_batching(batching)
        self.split = [1.0, 1.0, 1.0] if corpus == "hello" else check_split(split)  # "hello" is not cut: cut_splits
        self.num_workers = checked("data.num_workers", num_workers, integer=True, low=0)
        if max_chars is not None:
            max_chars = checked("data.max_chars", max_chars, integer=True, low=1)
        self.corpus, self.path, self.encoding, self.errors = corpus, path, encoding, errors
        self.max_chars, self.one_hot = max_chars, one_hot
        # The run's seed: random batching draws from it, never from torch's global generator.
        self.seed = checked("seed", seed, integer=True, low=0)
        self.train_sampler: EpochSampler | None = None
        self.epoch_start_step = 0
        self.restored: dict[str, int] | None = None  # where a checkpoint's epoch stood
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
        self.splits = cut_splits(self.tokens, self.split, self.seq_len, whole=self.corpus == "hello")
        for name, part in self.splits.items():  # fewer streams than asked would be taken silently
            if len(part) - 1 < self.batch_size and len(part) > 0 and (name != "train" or self.batching == "stateful"):
                raise UserError(
                    f"the {name} split has {len(part) - 1} targets, fewer than data.batch_size={self.batch_size} streams; "
                    f"lower data.batch_size, or give {name} a larger data.split fraction"
                )

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        # A private generator: every pass over a DataLoader draws a seed, which must not move
        # torch's global generator (dropout's), so a resumed run draws what an uninterrupted one does.
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0, generator=generator, **kwargs)

    def _ranks(self) -> tuple[int, int]:
        """``(global_rank, world_size)`` of the attached trainer; ``(0, 1)`` without one."""
        trainer = getattr(self, "trainer", None)
        return (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)

    def _streams(self, split: str) -> DataLoader:
        rank, world = self._ranks()
        dataset = StreamWindows(self.splits[split], self.batch_size, self.seq_len, rank=rank, world_size=world)
        return self._loader(dataset, batch_size=None, shuffle=False)

    def _train_windows(self) -> tuple[Dataset, int | None, int]:
        """This rank's training windows, how many the sampler draws an epoch (None: all, in order), and
        how many windows make one batch (1 for stateful: a StreamWindows item is a whole batch)."""
        tokens, (rank, world) = self.splits["train"], self._ranks()
        if self.batching == "random":
            dataset = RandomWindows(tokens, self.seq_len)
            # One epoch reads about as many characters as one stateful pass over the split (all ranks together).
            batches = max(1, (len(tokens) - 1) // (self.batch_size * dataset.seq_len * world))
            return dataset, batches * self.batch_size, self.batch_size
        return StreamWindows(tokens, self.batch_size, self.seq_len, rank=rank, world_size=world), None, 1

    def has_test(self) -> bool:
        """Whether the run has a test split: ``data.split``'s test fraction 0 means none (the final test is skipped)."""
        return self.split[2] > 0

    def batches_per_epoch(self) -> int:
        dataset, draws, per_batch = self._train_windows()
        return (draws if draws is not None else len(dataset)) // per_batch  # type: ignore[arg-type]

    def train_dataloader(self) -> DataLoader:
        dataset, draws, per_batch = self._train_windows()
        kwargs = {"batch_size": self.batch_size if self.batching == "random" else None}
        trainer = getattr(self, "trainer", None)
        steps = lambda: int(trainer.global_step) if trainer is not None else 0  # noqa: E731
        per_epoch = lambda: int(trainer.num_training_batches) if trainer is not None and math.isfinite(trainer.num_training_batches) else None  # noqa: E731
        sampler = EpochSampler(len(dataset), draws, seed=self.seed, rank=self._ranks()[0], batch_size=per_batch,  # type: ignore[arg-type]
                               steps=steps, epoch_batches=per_epoch)
        if self.restored:
            sampler.resume_at(self.restored["epoch"], self.restored["batches"])
        self.train_sampler = sampler
        return self._loader(dataset, sampler=sampler, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Where the training epoch stands; Lightning puts it in every checkpoint."""
        return self.train_sampler.position() if self.train_sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restored = {"epoch": int(state["epoch"]), "batches": int(state["batches"])} if state else None

    def val_dataloader(self) -> DataLoader:
        return self._streams("val")

    def test_dataloader(self) -> DataLoader:
        return self._streams("test")

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        inputs, targets = batch
        if self.one_hot and self.vocab is not None:
            inputs = torch.nn.functional.one_hot(inputs, len(self.vocab)).float()
        return inputs, targets
