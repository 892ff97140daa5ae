"""The windows a character model reads: a token tensor cut into (input, target) pairs shifted by one.

Torch only (no Lightning), so training (:mod:`charrnn.lit.datamodule`) and scoring
(:mod:`charrnn.core.scoring`) cut text the same way. Two batchings:

* ``stateful`` (char-rnn, word_language_model): a split is cut into ``batch_size`` parallel
  streams and read in consecutive windows of ``seq_len``, so row ``b`` of batch ``k + 1``
  continues where row ``b`` of batch ``k`` ended and the model can carry its hidden state
  (truncated backpropagation through time)::

      stream 0: | t0  t1  t2  t3 | t4  t5  t6  t7 | ...     window k = columns k*T .. k*T+T-1
      stream 1: | u0  u1  u2  u3 | u4  u5  u6  u7 | ...     (T = seq_len)
                 batch 0          batch 1
                 h carried ------> h carried ------> ...    gradients stop at each "|"

  Every target of the split appears exactly once; the tail that does not fill a full window is
  padded with ``IGNORE_INDEX`` targets that the loss skips. Validation and test always read this
  way, so their figures cover the whole split.
* ``random`` (nanoGPT): independent windows at random offsets, state from zero each batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from charrnn.core.errors import UserError, checked
from charrnn.core.vocab import Vocabulary

IGNORE_INDEX = -100
BATCHINGS = ("stateful", "random")


def check_batching(batching: Any, key: str = "data.batching") -> str:
    if batching not in BATCHINGS:
        raise UserError(f"unknown {key}={batching!r}; choose stateful or random")
    return str(batching)


def check_windows(batch_size: Any, seq_len: Any, prefix: str = "data.") -> tuple[int, int]:
    """``(batch_size, seq_len)`` as whole numbers of at least 1; ``prefix`` is the keys' config group."""
    return checked(f"{prefix}batch_size", batch_size, integer=True, low=1), checked(
        f"{prefix}seq_len", seq_len, integer=True, low=1
    )


def check_split(split: Any, key: str = "data.split") -> list[float]:
    """Three fractions train, val, test: train and val above 0, test 0 for a run without a test (as nanoGPT
    trains)."""
    try:
        fractions = [] if isinstance(split, (str, bytes)) else list(split)
    except TypeError:
        fractions = []
    if len(fractions) != 3:
        raise UserError(
            f"{key} must be three fractions train,val,test, got {split!r}; set e.g. {key}=[0.9,0.05,0.05]"
        )
    values = [checked(key, f) for f in fractions]
    if values[0] <= 0 or values[1] <= 0 or values[2] < 0:
        raise UserError(
            f"{key}={values} leaves an empty train or val split; give train and val a fraction above 0 and "
            "test one of at least 0 (0: no test), e.g. [0.9,0.05,0.05] or [0.9,0.1,0.0]"
        )
    return values


def split_bounds(n: int, fractions: Sequence[float]) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges of ``n`` items for train/val/test fractions."""
    total = sum(fractions)
    edges = [0.0]
    for f in fractions:
        edges.append(edges[-1] + f)
    cuts = [round(n * e / total) for e in edges]
    return [(cuts[i], cuts[i + 1]) for i in range(len(fractions))]


def split_fractions(corpus: str, split: Any) -> list[float] | None:
    """``data.split`` checked, or None for the notebook's ``hello``, which is too short to cut: every split
    is the whole word and its ``data.split`` is not read."""
    return None if corpus == "hello" else check_split(split)


def cut_splits(
    tokens: Tensor,
    fractions: Sequence[float] | None,
    seq_len: int,
    streams: int = 1,
    stateful: bool = True,
) -> dict[str, Tensor]:
    """``{"train", "val", "test"}`` token ranges of a corpus, each long enough to be read (test empty where
    its fraction is 0).

    ``fractions`` None: every split is the whole text (:func:`split_fractions`). Each split must hold a
    target for each of ``streams`` parallel streams where it is read that way (val and test always,
    train when ``stateful``): fewer streams than asked would be taken silently.
    """
    if fractions is None:
        splits = {"train": tokens, "val": tokens, "test": tokens}
    else:
        bounds = split_bounds(len(tokens), fractions)
        splits = {name: tokens[lo:hi] for name, (lo, hi) in zip(("train", "val", "test"), bounds)}
        need = {"train": seq_len + 1, "val": 2, "test": 2 if fractions[2] > 0 else 0}  # test 0: no test
        for name, part in splits.items():
            if len(part) < need[name]:
                raise UserError(
                    f"the {name} split has {len(part)} characters of the corpus's {len(tokens)}, fewer than "
                    f"the {need[name]} it needs; use a longer text, a smaller data.seq_len, or other "
                    "data.split fractions"
                )
    for name, part in splits.items():
        if 0 < len(part) and len(part) - 1 < streams and (name != "train" or stateful):
            raise UserError(
                f"the {name} split has {len(part) - 1} targets, fewer than data.batch_size={streams} "
                f"streams; lower data.batch_size, or give {name} a larger data.split fraction"
            )
    return splits


def corpus_splits(
    text: str, fractions: Sequence[float] | None, seq_len: int, streams: int, stateful: bool
) -> tuple[Vocabulary, Tensor, dict[str, Tensor]]:
    """A run's data made from its text, as training and ``charrnn-eval`` both make it: the vocabulary,
    the text as indices, and its splits (:func:`cut_splits`)."""
    vocab = Vocabulary.from_text(text)
    tokens = vocab.encode(text)
    return vocab, tokens, cut_splits(tokens, fractions, seq_len, streams, stateful)


class StreamWindows(Dataset):
    """Item ``k`` is the ``k``-th window of every stream: ``(inputs, targets)``, each ``(streams, seq_len)``.

    Distributed (``world_size > 1``): the split is cut into ``streams * world_size`` streams and
    rank ``r`` keeps rows ``r * streams .. (r + 1) * streams - 1``, so each rank reads its own
    contiguous stretches in order (the carried hidden state stays valid), every rank has the same
    number of windows, and the ranks together cover every target exactly once.
    """

    def __init__(
        self, tokens: Tensor, streams: int, seq_len: int, rank: int = 0, world_size: int = 1
    ) -> None:
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


class EpochSampler(Sampler[int]):
    """The indices of one epoch, fixed by ``(seed, epoch, rank)`` alone, and able to start mid-epoch.

    ``draws=None``: ``0 .. n-1`` in order (the stateful streams' windows). ``draws=N``: ``N``
    offsets drawn with replacement from ``0 .. n-1`` (random windows), from a generator seeded by
    ``(seed, epoch, rank)``, never from torch's global one. So the order of an epoch can be rebuilt
    after a restart.

    Where training stands comes from the optimizer step count alone: every epoch has
    ``epoch_batches()`` batches and one step reads ``accumulate()`` of them (the last step of an epoch
    reads what is left), so an epoch has ``ceil(epoch_batches() / accumulate())`` steps and step ``s``
    has read ``(s % steps_per_epoch) * accumulate()`` batches into epoch ``s // steps_per_epoch``.
    Checkpoints are taken at step ends only (never mid-accumulation: charrnn.lit.checkpoints and
    charrnn.lit.stop wait for the step). Lightning's own epoch number is not used: a run restarted
    at an epoch's end counts that epoch twice. :meth:`set_epoch` (Lightning calls it before every epoch) reads
    the step count; on resume Lightning builds the first iterator before that call, so :meth:`resume_at`
    places the sampler first, from the checkpoint's :meth:`position`.
    """

    def __init__(
        self,
        n: int,
        draws: int | None = None,
        seed: int = 0,
        rank: int = 0,
        batch_size: int = 1,
        steps: Callable[[], int] = lambda: 0,
        epoch_batches: Callable[[], int | None] = lambda: None,
        accumulate: Callable[[], int] = lambda: 1,
    ) -> None:
        self.n, self.draws, self.seed, self.rank, self.batch_size = n, draws, seed, rank, batch_size
        self.steps = steps  # the trainer's optimizer step count
        self.epoch_batches = lambda: (
            epoch_batches() or len(self) // batch_size
        )  # fewer where Lightning limits an epoch
        self.accumulate = accumulate  # batches per optimizer step (trainer.accumulate_grad_batches)
        self.epoch, self.start_step = 0, 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained) of a restored run
        self.origin = (
            0,
            0,
        )  # (epoch, step): that epoch began at that step, and each later one epoch_steps() after

    def epoch_steps(self) -> int:
        """Optimizer steps in one epoch: the last one takes the batches left over."""
        return math.ceil(self.epoch_batches() / self.accumulate())

    def set_epoch(self, epoch: int) -> None:
        step = self.steps()
        passed, done = divmod(step - self.origin[1], self.epoch_steps())
        self.epoch = self.origin[0] + passed
        self._resume, self.start_step = (self.epoch, done * self.accumulate()), step - done

    def position(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: how far training has read into this epoch, for a checkpoint."""
        return {
            "epoch": self.epoch,
            "batches": min(self.epoch_batches(), (self.steps() - self.start_step) * self.accumulate()),
        }

    def resume_at(self, epoch: int, batches: int, epoch_batches: int | None = None) -> None:
        """Continue from a checkpoint's :meth:`position` (the step count is the checkpoint's): ``batches``
        into ``epoch``, or at the start of the next epoch when that one was read to its end
        (``epoch_batches``: its length then). Later epochs count from there, so an epoch's length may change
        at its end (another batch size, limit or accumulation): the next epoch still reads the split from its
        start."""
        if batches >= (epoch_batches or self.epoch_batches()):
            epoch, batches = epoch + 1, 0
        done = math.ceil(batches / self.accumulate())
        self.origin = (epoch, self.steps() - done)
        self.epoch, self._resume, self.start_step = epoch, (epoch, batches), self.origin[1]

    def skipped(self) -> int:
        """Batches a pass over this epoch leaves out (a restored run's progress in it), 0 otherwise."""
        return self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0

    def __len__(self) -> int:
        return self.draws if self.draws is not None else self.n

    def __iter__(self) -> Iterator[int]:
        skip = self.skipped() * self.batch_size
        if self.draws is None:
            return iter(range(skip, self.n))
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank)
        return iter(torch.randint(self.n, (self.draws,), generator=generator)[skip:].tolist())
