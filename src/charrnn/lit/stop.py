"""Stopping on SIGTERM, SIGINT or SIGUSR2 at a step boundary, with a checkpoint: every stop is saved and
honest.

Clusters preempt with SIGTERM, users press Ctrl-C, and SLURM warns a job with SIGUSR2 before its
time limit (submitit asks for ``--signal=USR2@<signal_delay_s>``). :class:`StopOnSignal` turns any
of them into: finish the current step (and its logging and validation), write ``last.ckpt`` (atomically, as
every checkpoint), and raise :class:`Stopped`, which ``charrnn-train`` reports in one line and exits 128 + the
signal number (143 for SIGTERM, 130 for SIGINT, 140 for SIGUSR2); in a SLURM job it hands SIGUSR2 on to
submitit, which requeues the job (charrnn.cli.slurm). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from charrnn.lit.module import last_step

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class Stopped(BaseException):
    """A run stopped by a signal, after saving ``checkpoint`` (None: before training, nothing to save);
    ``exit_code`` is 128 + the signal number.

    A BaseException, as KeyboardInterrupt is: raised by the handler at any moment before training, it
    must pass through the libraries' ``except Exception`` (OmegaConf re-creates a caught exception from
    its message, Hydra's instantiate wraps it) to charrnn-train's own handler."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None) -> None:
        self.signal_name, self.step, self.checkpoint = signal.Signals(signum).name, step, checkpoint
        self.exit_code = 128 + int(signum)
        where = "before training started" if step is None else f"at step {step}"
        super().__init__(f"stopped by {self.signal_name} {where}")


class StopOnSignal(Callback):
    """Handle SIGTERM, SIGINT and SIGUSR2 for a whole run: ``with stopper.handling(): ...`` around it.

    Before training is under way (reading the corpus, waiting for a device slot, building the
    model) there is nothing to save: a signal raises :class:`Stopped` at once, even out of a read
    that blocks. Once training has started, the checkpoint is saved at the end of a batch, a state
    Lightning resumes from exactly; where the step still logs or validates after that, the stop
    waits for the next step (at most two), so the resumed run misses nothing. A signal during the
    final test stops it after the batch in progress, with the ``last.ckpt`` that fit ended on: a
    resume runs the test. Lightning installs its own SIGTERM handler when fit or test starts (it
    would end the run with exit code 0), so this one is installed again as each starts.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = 0  # steps the stop has waited for a step's logging or validation
        self.training = False  # on_train_start: from then on a signal waits for a step boundary
        # the step count at the last batch end: under gradient accumulation not every batch steps
        self.step_seen = 0

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
            # The stop under way covers it: a signal to a sweep's process group reaches a job twice
            # (directly, and forwarded by the sweep); raised again, it would cut the stop's own ending.
            return
        self.received = signum
        if not self.training:
            raise Stopped(signum)

    def stop_behind(self, error: BaseException) -> Stopped | None:
        """The stop that ``error`` replaced, if a signal came before training: its :class:`Stopped`,
        raised wherever the code was, can be lost in a library's cleanup that fails on the half-built
        state it leaves (OmegaConf's ``flag_override`` around a list being merged raises its own error
        in its place). Any error after such a signal is taken for the stop, so the run (a sweep too)
        stops instead of recording a failure and going on as if no signal had come."""
        if self.received is None or self.training or not isinstance(error, Exception):
            return None  # no signal, or a stop, KeyboardInterrupt (a second Ctrl-C) or SystemExit as it is
        return Stopped(self.received)

    def _install(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._handle) for sig in SIGNALS}

    @contextlib.contextmanager
    def handling(self) -> Iterator[StopOnSignal]:
        previous = self._install()
        try:
            yield self
        except Exception as e:
            if (stop := self.stop_behind(e)) is None:
                raise
            raise stop from e
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training = True
        self._install()
        self.step_seen = trainer.global_step
        if self.received is not None and trainer.world_size == 1:
            raise Stopped(self.received)  # came while Lightning restored the run, before any step

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.received is not None:  # fit saved last.ckpt at its end (its last validation): resume tests
            raise Stopped(self.received, trainer.global_step, last_checkpoint(trainer))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stepped, self.step_seen = trainer.global_step != self.step_seen, trainer.global_step
        if not stepped:
            # mid gradient accumulation: the gradients so far are in no checkpoint; stop at the step end
            return
        received = self.received if trainer.world_size == 1 else agreed_signal(trainer, self.received)
        if received is None:
            return
        if last_step(trainer):
            # The last step: fit's own ending follows (the validation the module asks for, last.ckpt), as
            # in an unbroken run; the stop is taken in the test (on_test_batch_end) or as the run ends.
            return
        if self.deferred < 2 and more_due_at_this_step(trainer, batch_idx):
            self.deferred += 1  # stop after the next step instead: this one still logs or validates
            return
        path = last_checkpoint(trainer)
        # the whole training state (Lightning logs a line when unsaid)
        trainer.save_checkpoint(path, weights_only=False)
        raise Stopped(received, trainer.global_step, path)


def agreed_signal(trainer: L.Trainer, received: int | None) -> int | None:
    """The signal every DDP rank stops with, whichever rank got one, at the same step: the highest number
    any rank has received so far (SIGTERM over SIGUSR2 over SIGINT), None if none has.

    SLURM signals each task itself, and one rank may reach a step's end before its copy arrives. A rank
    that had none then took SIGTERM: under SLURM's time-limit warning (SIGUSR2) rank 1 left the requeue
    to rank 0, which had stopped "by SIGTERM" and ended the job failed instead of requeueing it."""
    mine = torch.tensor(int(received or 0), device=trainer.strategy.root_device)
    agreed = int(trainer.strategy.reduce(mine, reduce_op="max"))
    return agreed or None


def last_checkpoint(trainer: L.Trainer) -> str:
    """Where the run's ``last.ckpt`` lives (the checkpoint callback's dir, else the run dir)."""
    dirpath = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
    return str(Path(dirpath or trainer.default_root_dir) / "last.ckpt")


def more_due_at_this_step(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether Lightning still logs (every ``log_every_n_steps`` > 1) or validates after this batch's end
    hooks, from the trainer's public settings. A stop here would leave that out of a run that resumes
    from the checkpoint saved here (a resumed run starts with the next step), so the stop waits a step."""
    step = trainer.global_step
    if trainer.log_every_n_steps > 1 and step % trainer.log_every_n_steps == 0:
        return True
    every, n_epochs = trainer.val_check_batch, trainer.check_val_every_n_epoch
    if not isinstance(every, (int, float)) or not math.isfinite(every) or every < 1:
        return False  # time-based or no validation
    if n_epochs is not None and (trainer.current_epoch + 1) % n_epochs != 0:
        return False
    return ((trainer.fit_loop.total_batch_idx if n_epochs is None else batch_idx) + 1) % int(
        every
    ) == 0  # Lightning's count
