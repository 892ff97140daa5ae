"""CharRNNModule: the Lightning side of training a CharRNN.

Lightning orchestrates (loops, devices, checkpoints, logging); the maths stays in ``CharRNN``.
What lives here: the loss, the metrics over whole splits, the hidden state carried between
stateful batches (truncated BPTT: Lightning 2 has no built-in support, so the module keeps the
state and detaches it), and a text sample written to TensorBoard at each validation.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F

from charrnn.core.errors import UserError, checked
from charrnn.core.generate import default_prompt, generate
from charrnn.core.model import CharRNN, Hidden
from charrnn.core.scoring import batch_sums, metrics_from_sums
from charrnn.core.vocab import Vocabulary
from charrnn.core.windows import IGNORE_INDEX


def detach_hidden(h: Hidden | None) -> Hidden | None:
    """Cut the graph behind a carried state, so backward stops at the batch boundary."""
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(t.detach() for t in h)  # type: ignore[return-value]
    return h.detach()


_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_train_state", "_eval_state", "_bad_step"})
# Steps whose losses wait for the NaN check at most (logging steps, validation and checkpoints read them
# sooner): bounds what is kept when logging is rare, at one wait for the device per this many steps.
NONFINITE_CHECK_EVERY = 256


def last_step(trainer: L.Trainer) -> bool:
    """Whether the step just taken is the run's last (``trainer.max_steps``): :class:`CharRNNModule` then
    ends fit itself, which makes Lightning validate and checkpoint once more before fit returns."""
    return 0 < trainer.max_steps <= trainer.global_step


class CharRNNModule(L.LightningModule):
    """Trains ``model`` on next-character prediction with cross-entropy.

    Hydra builds it from the ``module`` node of ``conf/train.yaml``; ``model``, ``vocab`` and
    ``stateful`` come from the data at run time. ``optimizer`` is a factory (a Hydra ``_partial_``)
    called with the parameters; ``scheduler`` one called with the optimizer and the total number
    of steps. ``sample_*`` shape the text written to TensorBoard at each validation.
    """

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocabulary,
        optimizer: Callable[[Iterable[Tensor]], torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        stateful: bool = True,
        sample_length: int = 300,
        sample_prompt: str | None = None,
        sample_temperature: float = 0.8,
    ) -> None:
        super().__init__()
        check_optimizer(optimizer)
        self.model = model
        self.vocab = vocab
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.stateful = stateful
        self.sample_length = checked("sample.length", sample_length, integer=True, low=0)
        self.sample_temperature = checked("sample.temperature", sample_temperature, low=0.0, low_open=True)
        self.sample_prompt = sample_prompt or default_prompt(vocab)
        vocab.encode(
            self.sample_prompt
        )  # a prompt outside the vocabulary fails now, not at the first validation
        # Plain values only: they go into every checkpoint, which must load with weights_only=True.
        self.save_hyperparameters(
            {"model": model.config(), "vocab": "".join(vocab.chars), "stateful": stateful}
        )
        # Best full-split validation bpc so far; a buffer, so it is saved and restored on resume.
        self.register_buffer("best_val_bpc", torch.tensor(math.inf))
        self._train_state: Hidden | None = None
        self._eval_state: Hidden | None = None
        self._eval_sums: Tensor | None = None
        self._restored_state: dict[str, Any] | None = None
        # The NaN check: each step's loss (detached, still on the device) and step, until a check reads them.
        self._losses: list[Tensor] = []
        self._loss_steps: list[int] = []
        self._bad_step: int | None = None  # the first step whose loss was NaN or infinite, once read

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name around every hook, dozens of times per step, and the
        # carried state changes every step: plain attributes that need none of nn.Module's
        # parameter/submodule bookkeeping, which costs a tiny model several percent of its speed.
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- training ---------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._train_state = None  # (Lightning does not call this when it resumes mid-epoch)

    def _take_restored_state(self) -> None:
        """A run resumed mid-epoch continues the streams with the state they carried at the checkpoint; one
        resumed at an epoch's end starts the next epoch's streams from zero. Where the data stands is the
        datamodule's sampler's to say: after a restart at an epoch's end Lightning's epoch and batch
        numbers still say the old epoch."""
        restored, self._restored_state = self._restored_state, None
        sampler = getattr(self.trainer.datamodule, "train_sampler", None)
        if restored is not None and sampler is not None and sampler.skipped() > 0:
            parts = [t[self.global_rank].to(self.device) for t in restored["state"]]
            self._train_state = tuple(parts) if len(parts) == 2 else parts[0]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        if self._restored_state is not None:
            self._take_restored_state()
        state = detach_hidden(self._train_state) if self.stateful else None
        logits, state = self.model(inputs, state)
        if self.stateful:
            self._train_state = state
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        self._note_nonfinite(loss)
        # self.log costs more than a whole step of a tiny model, so call it only on the steps the
        # logger writes (every trainer.log_every_n_steps); the progress bar shows that value.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0 and (
            batch_idx + 1
        ) % self.trainer.accumulate_grad_batches == 0:
            self._raise_if_nonfinite()
            self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=targets.size(0))
            self._write_train_loss(loss)
        return loss

    def _write_train_loss(self, loss: Tensor) -> None:
        """``train/loss`` to the loggers at this step, as Lightning's step logging writes it (with the epoch).

        Not through self.log's logger flag: Lightning keeps a logged value and writes it again when
        training stops (``should_stop``), at the last step, though that step did not log it. Whether
        it had one to repeat depended on where a resumed run's process started, so a run stopped and
        resumed late in an epoch lacked a point the uninterrupted run had (issue 16)."""
        metrics = {"train/loss": float(loss.detach()), "epoch": self.current_epoch}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def _note_nonfinite(self, loss: Tensor) -> None:
        """Keep the step's loss for the next check: no device work and no wait for the GPU here. (A flag
        kept on the device cost four tiny kernels a step, ~50 us on CPU: 5 % of a notebook-sized step.)"""
        self._losses.append(loss.detach())
        self._loss_steps.append(self.global_step)
        if len(self._losses) >= NONFINITE_CHECK_EVERY:
            self._raise_if_nonfinite()

    def _raise_if_nonfinite(self) -> None:
        """Check the losses kept since the last check (one wait for the device): on logging steps, before
        validation, before any checkpoint, and every NONFINITE_CHECK_EVERY steps. Once found, stays found."""
        if self._losses:
            finite = torch.isfinite(torch.stack(self._losses))
            if self._bad_step is None and not bool(finite.all()):
                self._bad_step = self._loss_steps[int(finite.to(torch.uint8).argmin())]  # the first one
            self._losses.clear()
            self._loss_steps.clear()
        if self._bad_step is not None:
            raise UserError(
                f"the training loss became NaN or infinite at step {self._bad_step}; lower optim.lr or set "
                f"trainer.gradient_clip_val, then resume from the last good checkpoint "
                f"(checkpoints/last.ckpt) or start again"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Ending through should_stop (not by running out of steps) makes Lightning validate once
        # more, so the final weights always get a full-split val/bpc and a checkpoint.
        if last_step(self.trainer):
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._raise_if_nonfinite()  # never a checkpoint of weights a NaN loss has reached
        # Dropout draws from torch's generators: a resumed run continues the same random stream as
        # an uninterrupted one. uint8 tensors and plain lists: safe for weights_only loads.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        # The latest validation's figures: a run resumed after it reports them as its final ones.
        checkpoint["last_validation"] = {
            k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")
        }
        if self.device.type == "cuda":
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        if self.stateful and self._train_state is not None:
            # The state the streams carry into the next batch, for every rank: (ranks, layers, batch, hidden).
            parts = self._train_state if isinstance(self._train_state, tuple) else (self._train_state,)
            gathered = [
                self.all_gather(t.detach()) if self.trainer.world_size > 1 else t.detach().unsqueeze(0)
                for t in parts
            ]
            checkpoint["carried_state"] = {"epoch": self.current_epoch, "state": [t.cpu() for t in gathered]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
        self._restored_state = checkpoint.get("carried_state")

    # --- evaluation over whole splits ---------------------------------------------------------

    def _eval_start(self) -> None:
        self._eval_state = None
        self._eval_sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count

    def _eval_step(self, batch: tuple[Tensor, Tensor]) -> None:
        inputs, targets = batch
        logits, self._eval_state = self.model(inputs, self._eval_state)
        assert self._eval_sums is not None
        self._eval_sums += batch_sums(logits, targets)

    def _eval_end(self, split: str) -> dict[str, float]:
        assert self._eval_sums is not None
        sums = (
            self.trainer.strategy.reduce(self._eval_sums, reduce_op="sum")
            if self.trainer.world_size > 1
            else self._eval_sums
        )
        found = metrics_from_sums(sums)
        metrics = {f"{split}/{name}": found[name] for name in ("loss", "bpc", "acc")}
        # The sums were already reduced across ranks, so every rank holds the same whole-split values
        # (and every rank's checkpoint callback sees them); averaging identical values changes nothing.
        self.log_dict(metrics, prog_bar=split == "val", sync_dist=True)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._raise_if_nonfinite()
        self._eval_start()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self._eval_end("val")
        if self.trainer.sanity_checking:
            return
        self.best_val_bpc.fill_(min(self.best_val_bpc.item(), metrics["val/bpc"]))
        self.log("val/bpc_best", self.best_val_bpc.item(), sync_dist=True)
        self._log_sample()

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def sample_text(self, seed: int = 0) -> str:
        """``sample_length`` characters after the prompt, prompt included, from a fixed seed."""
        return self.sample_prompt + "".join(
            generate(
                self.model,
                self.vocab,
                self.sample_prompt,
                max(1, self.sample_length),
                self.sample_temperature,
                seed=seed,
            )
        )

    def _log_sample(self) -> None:
        """A few hundred generated characters in TensorBoard's TEXT tab."""
        if self.sample_length <= 0 or self.logger is None or not hasattr(self.logger.experiment, "add_text"):
            return
        # Markdown needs a code block to keep newlines and spaces of the generated text.
        self.logger.experiment.add_text("samples", "```\n" + self.sample_text() + "\n```", self.global_step)

    # --- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = max(
            1.0, float(self.trainer.estimated_stepping_batches)
        )  # inf when only max_time bounds the run
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# Lightning reads training_step's signature at every step (inspect.getfullargspec, to decide whether to pass
# batch_idx); a __signature__ (inspect's documented override) turns that parse into a lookup: ~10 us a step.
_TRAINING_STEP: Any = CharRNNModule.training_step
_TRAINING_STEP.__signature__ = inspect.signature(_TRAINING_STEP)


def check_optimizer(optimizer: Any) -> None:
    """The optimizer's numbers (``optim.*``), checked before any work: torch would check them only inside
    fit."""
    keywords = getattr(optimizer, "keywords", {}) or {}
    if "lr" in keywords:
        checked("optim.lr", keywords["lr"], low=0.0, low_open=True)
    for key in ("weight_decay", "momentum", "eps"):
        if keywords.get(key) is not None:
            checked(f"optim.{key}", keywords[key], low=0.0)
