"""CharDataModule: text -> Vocabulary -> one integer tensor -> batches of shifted windows of indices.

The corpus is held once, as int64 indices, and batches carry indices to the device: the model
one-hot encodes them there (:class:`charrnn.core.model.CharRNN`), so the whole corpus never exists
as one-hot. How a split is cut into windows, and the two batchings (stateful and random), is
:mod:`charrnn.core.windows`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from charrnn.core.corpora import load_corpus
from charrnn.core.errors import UserError, checked
from charrnn.core.vocab import Vocabulary
from charrnn.core.windows import (
    EpochSampler,
    RandomWindows,
    StreamWindows,
    check_batching,
    check_windows,
    corpus_splits,
    split_fractions,
)


class CharDataModule(L.LightningDataModule):
    """Any text as shifted sequences of indices: input ``text[i:i+T]``, target ``text[i+1:i+T+1]``."""

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
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size, self.seq_len = check_windows(batch_size, seq_len)
        self.batching = check_batching(batching)
        self.split = split_fractions(corpus, split)  # None: "hello", not cut
        self.num_workers = checked("data.num_workers", num_workers, integer=True, low=0)
        if max_chars is not None:
            max_chars = checked("data.max_chars", max_chars, integer=True, low=1)
        self.corpus, self.path, self.encoding, self.errors = corpus, path, encoding, errors
        self.max_chars = max_chars
        # The run's seed: random batching draws from it, never from torch's global generator. Checked
        # here once for every use (Lightning's seed_everything too, hence its uint32 bound).
        self.seed = checked("seed", seed, integer=True, low=0, high=2**32 - 1)
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
        self.vocab, self.tokens, self.splits = corpus_splits(
            self.text, self.split, self.seq_len, self.batch_size, stateful=self.batching == "stateful"
        )

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        # A private generator: every pass over a DataLoader draws a seed, which must not move
        # torch's global generator (dropout's), so a resumed run draws what an uninterrupted one does.
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator,
            **kwargs,
        )

    def _ranks(self) -> tuple[int, int]:
        """``(global_rank, world_size)`` of the attached trainer; ``(0, 1)`` without one."""
        trainer = getattr(self, "trainer", None)
        return (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)

    def _streams(self, split: str) -> DataLoader:
        rank, world = self._ranks()
        dataset = StreamWindows(
            self.splits[split], self.batch_size, self.seq_len, rank=rank, world_size=world
        )
        return self._loader(dataset, batch_size=None, shuffle=False)

    def _train_windows(self) -> tuple[Dataset, int | None, int]:
        """This rank's training windows, how many the sampler draws an epoch (None: all, in order), and
        how many windows make one batch (1 for stateful: a StreamWindows item is a whole batch)."""
        tokens, (rank, world) = self.splits["train"], self._ranks()
        if self.batching == "random":
            dataset = RandomWindows(tokens, self.seq_len)
            # One epoch reads about as many characters as one stateful pass over the split (all ranks
            # together).
            batches = max(1, (len(tokens) - 1) // (self.batch_size * dataset.seq_len * world))
            return dataset, batches * self.batch_size, self.batch_size
        return StreamWindows(tokens, self.batch_size, self.seq_len, rank=rank, world_size=world), None, 1

    def has_test(self) -> bool:
        """Whether the run has a test split: ``data.split``'s test fraction 0 means none (the final test is
        skipped)."""
        return self.split is None or self.split[2] > 0

    def batches_per_epoch(self) -> int:
        dataset, draws, per_batch = self._train_windows()
        return (draws if draws is not None else len(dataset)) // per_batch  # type: ignore[arg-type]

    def epoch_batches(self, trainer: Any) -> int:
        """Batches an epoch trains: all of them, or fewer where ``trainer.limit_train_batches`` says so."""
        limited = trainer.num_training_batches
        return (
            int(limited)
            if isinstance(limited, (int, float)) and 0 < limited < math.inf
            else self.batches_per_epoch()
        )

    def epochs_entered(self, trainer: Any) -> int:
        """Training epochs entered by ``trainer.global_step`` (the last may be partial), a resumed run's too:
        from the step count, with ``limit_train_batches`` and ``accumulate_grad_batches`` taken into
        account."""
        epoch_steps = math.ceil(self.epoch_batches(trainer) / trainer.accumulate_grad_batches)
        return math.ceil(trainer.global_step / epoch_steps)

    def train_dataloader(self) -> DataLoader:
        dataset, draws, per_batch = self._train_windows()
        kwargs = {"batch_size": self.batch_size if self.batching == "random" else None}
        trainer = getattr(self, "trainer", None)
        steps = lambda: int(trainer.global_step) if trainer is not None else 0  # noqa: E731
        per_epoch = lambda: self.epoch_batches(trainer) if trainer is not None else None  # noqa: E731
        accumulate = lambda: int(trainer.accumulate_grad_batches) if trainer is not None else 1  # noqa: E731
        sampler = EpochSampler(
            len(dataset),
            draws,
            seed=self.seed,
            rank=self._ranks()[0],
            batch_size=per_batch,  # type: ignore[arg-type]
            steps=steps,
            epoch_batches=per_epoch,
            accumulate=accumulate,
        )
        if self.restored:
            sampler.resume_at(
                self.restored["epoch"], self.restored["batches"], self.restored.get("epoch_batches")
            )
            self.restored = None  # once: a reloaded train loader keeps the placement (origin) made here
        elif self.train_sampler is not None:
            sampler.origin = self.train_sampler.origin
        self.train_sampler = sampler
        return self._loader(dataset, sampler=sampler, **kwargs)

    def _shape(self) -> dict[str, Any]:
        """The settings a mid-epoch position (and the hidden state carried with it) holds for."""
        return {
            "data.batch_size": self.batch_size,
            "data.seq_len": self.seq_len,
            "data.batching": self.batching,
            "trainer.devices": self._ranks()[1],
        }  # processes

    def state_dict(self) -> dict[str, Any]:
        """Where the training epoch stands, and for which settings; Lightning puts it in every checkpoint."""
        if self.train_sampler is None:
            return {}
        return {
            **self.train_sampler.position(),
            "epoch_batches": self.train_sampler.epoch_batches(),
            "shape": self._shape(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint's place in its epoch. Mid-epoch it holds only for the batch size, window length,
        batching and number of processes it was saved with: another one is refused (at an epoch's end
        any may change)."""
        if not state:
            self.restored = None
            return
        epoch, batches, length = int(state["epoch"]), int(state["batches"]), state.get("epoch_batches")
        self.restored = {"epoch": epoch, "batches": batches, "epoch_batches": length}
        # Lightning warns that a resume from mid-epoch is inexact unless the DataLoader keeps its own state;
        # here this state places the sampler (EpochSampler.resume_at), so the resume is exact: quiet that one.
        warnings.filterwarnings(
            "ignore",
            message="You're resuming from a checkpoint that ended before the epoch ended",
            category=PossibleUserWarning,
        )
        if 0 < batches < (length or math.inf):
            now = self._shape()
            for key, then in state.get("shape", {}).items():
                if now.get(key, then) != then:
                    raise UserError(
                        f"the checkpoint was saved mid-epoch ({batches} of {length} batches into epoch "
                        f"{epoch}) with {key}={then}, and this resume has {key}={now[key]}: its place in the "
                        f"epoch and its carried state hold only for {then}; resume with {key}={then}, or "
                        "start a new run"
                    )

    def val_dataloader(self) -> DataLoader:
        return self._streams("val")

    def test_dataloader(self) -> DataLoader:
        return self._streams("test")
