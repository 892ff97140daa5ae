"""RunCheckpoint: Lightning's ModelCheckpoint, with a ``last.ckpt`` that is always the newest state and a
run dir that can be copied or moved.

Lightning's ModelCheckpoint gets both wrong for a run that resumes:

* It writes ``last`` only at a step where it also saved a top-k checkpoint, and to a new
  ``last-v1.ckpt`` whenever ``last.ckpt`` exists but is not the path it remembers (its state names
  none after a stop saved ``last.ckpt`` before any save of its own, or after the run dir moved):
  ``last.ckpt`` then keeps an old step, and the next resume loses everything after it.
* Its state holds absolute paths, and it drops the best-k record when the directory changed: a
  copied run dir resumed its original's best checkpoint and made ``best-...-v1.ckpt`` files.

Here ``last.ckpt`` is written at every validation end of fit (the moments the run saves) and at
the end of training, always to the same name; the state names files relative to the checkpoint
directory, and a restored state is placed in this run's own directory. No ``-vN`` files: a name
that exists is a file of the same step (resume is exact), overwritten.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last.ckpt"


class RunCheckpoint(ModelCheckpoint):
    """The best checkpoints by a metric (Lightning's top-k), plus ``last.ckpt`` to resume from."""

    def __init__(self, dirpath: str, save_last: bool = True, **kwargs: Any) -> None:
        kwargs.pop("enable_version_counter", None)
        super().__init__(dirpath=dirpath, save_last=False, enable_version_counter=False, **kwargs)
        self.keep_last = bool(save_last)
        self.last_written_step: int | None = None
        # Whether the last batch ended with an optimizer step, and a validation's save waits for one.
        self.step_seen, self.stepped, self.save_due = 0, True, False
        self._state_key: str | None = None

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key: checkpoints written before this class existed restore its state.
        # Lightning builds it (a repr of the settings) at every hook call, ~2.4 us each, 6 or more a step:
        # fixed once setup() has settled the settings it names.
        fixed = getattr(self, "_state_key", None)
        if fixed is not None:
            return fixed
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._state_key = None
        super().setup(trainer, pl_module, stage)
        self._state_key = self.state_key

    def write_last(self, trainer: L.Trainer) -> str:
        """Save the whole training state as ``<dirpath>/last.ckpt`` (as a stop does); returns its path."""
        path = os.path.join(str(self.dirpath), LAST)
        trainer.save_checkpoint(path, weights_only=False)  # the whole state, not weights only: it resumes
        self.last_written_step = trainer.global_step
        return path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.step_seen, self.stepped, self.save_due = trainer.global_step, True, False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        # Under gradient accumulation a batch may end without an optimizer step: its gradients so far
        # would be in no checkpoint, so a validation then is saved at the end of the step instead.
        self.stepped, self.step_seen = trainer.global_step != self.step_seen, trainer.global_step
        if self.stepped and self.save_due:
            self.save_due = False
            self.on_validation_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        if not self.stepped:
            self.save_due = True
            return
        super().on_validation_end(trainer, pl_module)
        if self.keep_last:
            self.write_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.keep_last and self.last_written_step != trainer.global_step:
            self.write_last(trainer)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("dirpath", None)  # an absolute path: the state names files relative to it instead
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = os.path.basename(state[key]) if state[key] else ""
        state["best_k_models"] = {os.path.basename(path): v for path, v in state["best_k_models"].items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint's record of its files, as files of this run's checkpoint directory (where a copied
        or moved run dir has them; older checkpoints' absolute paths too). A file no longer there is
        forgotten: the run then tests its final weights unless a later validation saves a best one."""

        def here(path: str) -> str:
            local = os.path.join(str(self.dirpath), os.path.basename(path)) if path else ""
            return local if local and os.path.isfile(local) else ""

        state = dict(state_dict, dirpath=self.dirpath)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = here(state.get(key, ""))
        best_k = state.get("best_k_models", {})
        state["best_k_models"] = {here(path): v for path, v in best_k.items() if here(path)}
        super().load_state_dict(state)
