"""An Optuna search as a Hydra sweeper: no batch barrier, pruning through the study's storage, resume.

- **No batch barrier.** ``n_jobs`` trials run at once: each is one ``launcher.launch([overrides])``
  call in its own thread, and when one ends the next trial is asked for and launched at once. The
  launchers (joblib, submitit local and SLURM) run the job in another process, so these threads only
  wait. The basic launcher runs jobs in this process, so it runs them one at a time, in this thread.
- **Pruning.** Each trial's job gets ``++callbacks.optuna_pruning={...}`` (charrnn.lit.pruning): it
  reports val/bpc to its trial in the storage and stops when the pruner says so; it marks the trial
  with the user attr ``pruned_at_step``, and this sweeper tells the trial PRUNED.
- **Resume.** The same command continues the study: trials a killed sweep left RUNNING are closed
  as FAIL (user attr ``failed_because``) and their params enqueued to run first; trials go on until
  the study has ``n_trials`` finished (COMPLETE + PRUNED) ones. Job number = trial number, so a fixed
  ``hydra.sweep.dir`` keeps every trial's dir. One sweep process per study at a time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
LEFT_RUNNING = "left RUNNING by a sweep process that ended without closing it (killed); its params run again"


class CharrnnOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate={max_failure_rate} must be between 0 and 1")
        self.sampler, self.pruner, self.storage_url, self.study_name = sampler, pruner, storage, study_name
        self.directions = (
            [str(d) for d in direction]
            if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction)
            else [str(direction)]
        )
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, max(1, n_jobs), max_failure_rate
        self.params = OmegaConf.to_container(params) if params else {}
        self.extend_space: Callable[[DictConfig, Any], None] | None = (
            get_method(custom_search_space) if custom_search_space else None
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        # The pruner's config (not the object built from it) travels to every job.
        self.pruner_conf = OmegaConf.to_container(config.hydra.sweeper.pruner, resolve=True)
        in_process = type(self.launcher).__name__ == "BasicLauncher"
        self.slots = 1 if in_process else self.n_jobs
        self.in_process = in_process

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from charrnn.core.errors import UserError
        from charrnn.core.studies import open_storage

        from ._search import absolute_storage, grid_choices, search_space

        try:
            space, fixed = search_space(self.params, arguments)
            if isinstance(self.sampler, functools.partial):  # sampler=grid: its grid is the search space
                self.sampler = self.sampler(search_space=grid_choices(space))
        except ValueError as e:
            raise UserError(str(e)) from None
        self.storage_url = absolute_storage(self.storage_url)
        storage = open_storage(self.storage_url) if self.storage_url else None
        if storage is None and not isinstance(self.pruner, optuna.pruners.NopPruner):
            raise UserError(
                "hydra.sweeper.pruner needs a storage the trials can reach: "
                "set hydra.sweeper.storage "
                "(sqlite:///search.db, journal:///shared/search.log or an RDB URL)"
            )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=self.directions,
            load_if_exists=True,
        )
        self.study, self.storage, self.space, self.fixed = study, storage, space, fixed
        retried = self.close_left_running()
        log.info(
            f"Study {study.study_name} in {self.storage_url}: "
            f"{self.finished()} of {self.n_trials} trials "
            f"finished, {retried} to run again; {self.slots} at a time"
        )
        self.run_trials()
        self.save_results()

    def finished(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def close_left_running(self) -> int:
        """Trials RUNNING at the start were left by a killed sweep: FAIL them, enqueue their params again."""
        from optuna.trial import TrialState

        left = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in left:
            self.set_user_attr(trial.number, "failed_because", LEFT_RUNNING)
            self.study.tell(trial.number, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        return len(left)

    def trial_id(self, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def set_user_attr(self, number: int, key: str, value: Any) -> None:
        if self.storage is not None:  # an in-memory study keeps no reasons
            self.storage.set_trial_user_attr(self.trial_id(number), key, value)

    def trial_overrides(self, trial: Any) -> list[str]:
        if self.extend_space is not None:
            self.extend_space(self.config, trial)
        overrides = [f"{name}={value}" for name, value in trial.params.items()]
        overrides += [f"{name}={value}" for name, value in self.fixed.items() if name not in trial.params]
        if self.storage is not None:  # the trial's channel to its study (charrnn.lit.pruning.ReportToOptuna)
            report = {
                "_target_": "charrnn.lit.pruning.ReportToOptuna",
                "storage": self.storage_url,
                "study_name": self.study.study_name,
                "trial": trial.number,
                "pruner": self.pruner_conf,
            }
            overrides.append(f"++callbacks.optuna_pruning={override_value(report)}")
        return overrides

    def launch(self, pool: ThreadPoolExecutor, trial: Any) -> Future:
        job = (self.launcher.launch, [self.trial_overrides(trial)])
        if not self.in_process:
            return pool.submit(*job, initial_job_idx=trial.number)
        done: Future = Future()  # the basic launcher trains in this process: here, not in a thread
        try:
            done.set_result(job[0](job[1], initial_job_idx=trial.number))
        except Exception as e:
            done.set_exception(e)
        return done

    def run_trials(self) -> None:
        """Keep ``slots`` trials running until the study has ``n_trials`` finished ones."""
        running: dict[Future, Any] = {}
        ended = failed = 0
        first_failure: Future | None = None
        with ThreadPoolExecutor(self.slots, thread_name_prefix="trial") as pool:
            while True:
                too_many = ended and failed / ended > self.max_failure_rate or failed >= self.n_trials
                wanted = self.n_trials - self.finished() - len(running)
                while not too_many and len(running) < self.slots and wanted > 0:
                    trial = self.study.ask(fixed_distributions=self.space)
                    running[self.launch(pool, trial)] = trial
                    wanted -= 1
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    ended += 1
                    if not self.tell(running.pop(future), future):
                        failed += 1
                        first_failure = first_failure or future
        if first_failure is not None and too_many:
            log.error(f"{failed} of {ended} trials failed (max_failure_rate={self.max_failure_rate})")
            _ = first_failure.result()[
                0
            ].return_value  # raises the job's own error, raised as the official sweeper does

    def tell(self, trial: Any, future: Future) -> bool:
        """Record how a trial's job ended in the study; False if it failed."""
        from optuna.trial import TrialState

        try:
            ret = future.result()[0]
        except Exception as e:  # the launcher's own error (sbatch refused, a worker lost): stop the search
            self.fail(trial, e)
            raise
        try:
            value = ret.return_value  # raises the job's own error if it failed
            values = [float(v) for v in value] if len(self.directions) > 1 else [float(value)]
        except Exception as e:
            self.fail(trial, e)
            return False
        pruned_at = (
            self.storage.get_trial(self.trial_id(trial.number)).user_attrs.get("pruned_at_step")
            if self.storage is not None
            else None
        )
        if pruned_at is not None:
            self.study.tell(trial.number, state=TrialState.PRUNED)
            log.info(f"Trial {trial.number} pruned at step {pruned_at} (best val {values[0]:.4f})")
        else:
            self.study.tell(trial.number, values=values)
            log.info(f"Trial {trial.number} finished: {values} with {trial.params}")
        return True

    def fail(self, trial: Any, error: BaseException) -> None:
        from optuna.trial import TrialState

        reason = (f"{type(error).__name__}: {error}".strip().splitlines() or [""])[0][:500]
        self.set_user_attr(trial.number, "failed_because", reason)
        self.study.tell(trial.number, state=TrialState.FAIL)
        log.warning(f"Trial {trial.number} failed: {reason}")

    def save_results(self) -> None:
        from optuna.trial import TrialState

        counts = {
            state.name.lower(): len(self.study.get_trials(deepcopy=False, states=(state,)))
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study.study_name, "trials": counts}
        if len(self.directions) > 1:
            results["solutions"] = [{"params": t.params, "values": t.values} for t in self.study.best_trials]
        elif counts["complete"]:
            best = self.study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info(f"Best value: {best.value} (trial {best.number}) with {best.params}")
        out = Path(str(self.config.hydra.sweep.dir))
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), out / "optimization_results.yaml")


def override_value(value: Any) -> str:
    """A value in Hydra's override grammar: dicts and lists as ``{k:v}`` / ``[a,b]``, strings quoted."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
