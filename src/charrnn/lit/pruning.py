"""Optuna pruning inside a trial: report val/bpc to the study's storage, stop when the pruner says so.

The sweeper (``hydra_plugins.charrnn_optuna_sweeper``) gives each trial this callback through one
override of the job's own config (``+callbacks.optuna_pruning={...}``: storage URL, study name, trial
number, pruner), so a trial's ``.hydra/config.yaml`` says which trial it was and a job on another
node (SLURM) needs nothing but the config and a reachable storage. Optuna's storage is the channel:
the job reports there, the pruner decides there from the other trials' reports, and the sweeper
reads the outcome there (user attr ``pruned_at_step``) to tell the trial PRUNED.

A pruned trial stops as :class:`~charrnn.lit.stop.StopOnSignal` stops: the step (and its validation)
finishes, ``last.ckpt`` is saved, then :class:`Pruned` is raised, which ``charrnn-train`` records as
``run.json`` status ``pruned`` and turns into the trial's best val/bpc (exit code 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from charrnn.core.studies import open_storage

MONITOR = "val/bpc"


class Pruned(Exception):
    """The study's pruner stopped this trial at ``step``, after saving ``checkpoint``; ``best_val_bpc``
    is the trial's best val/bpc so far, which the trial's job returns."""

    def __init__(self, trial: int, step: int, checkpoint: str, best_val_bpc: float) -> None:
        self.trial, self.step, self.checkpoint, self.best_val_bpc = trial, step, checkpoint, best_val_bpc
        super().__init__(f"trial {trial} pruned at step {step}")


class ReportToOptuna(Callback):
    """Report the full-split ``val/bpc`` of every validation to Optuna trial ``trial`` of ``study_name``,
    with the global step as the step, and stop the run when ``pruner`` prunes it."""

    def __init__(self, storage: str, study_name: str, trial: int, pruner: Any = None) -> None:
        import optuna

        self.storage_url, self.study_name, self.number = storage, study_name, int(trial)
        storage_obj = open_storage(storage)
        # The sampler is never asked for anything here; a RandomSampler costs nothing to build.
        study = optuna.load_study(
            study_name=study_name, storage=storage_obj, pruner=pruner, sampler=optuna.samplers.RandomSampler()
        )
        trial_id = storage_obj.get_trial_id_from_study_id_trial_number(
            storage_obj.get_study_id_from_name(study_name), self.number
        )
        self.pruned_at: int | None = None
        self.trial: Any = None
        state = storage_obj.get_trial(trial_id).state
        if state.is_finished():  # a trial continued by hand (resume=<trial dir>): its study result stands
            rank_zero_info(
                f"Optuna trial {self.number} of study {study_name} is {state.name} already: "
                "this run reports nothing to it and is not pruned"
            )
        else:
            self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None or trainer.sanity_checking or MONITOR not in trainer.callback_metrics:
            return
        prune = False
        value, step = float(trainer.callback_metrics[MONITOR]), trainer.global_step
        if trainer.is_global_zero and math.isfinite(value):  # a diverged trial reports nothing comparable
            self.trial.report(value, step)
            prune = self.trial.should_prune()
            if prune:
                self.trial.set_user_attr("pruned_at_step", step)
        if trainer.strategy.broadcast(prune, src=0):  # every rank stops at the same step
            self.pruned_at = step
            # As EarlyStopping does: this step's checkpoints (ModelCheckpoint runs after this
            # callback, in the same hook) are written, then Lightning leaves fit at the step's end.
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruned_at is None:
            return
        dirpath = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        path = str(Path(dirpath or trainer.default_root_dir) / "last.ckpt")
        if not Path(path).is_file():  # no ModelCheckpoint with save_last: save it here, as a stop does
            trainer.save_checkpoint(path)
        best = float(getattr(pl_module, "best_val_bpc", trainer.callback_metrics.get(MONITOR, math.nan)))
        raise Pruned(self.number, self.pruned_at, path, best)
