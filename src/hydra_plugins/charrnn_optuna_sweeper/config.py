"""The sweeper's config, registered with Hydra's ConfigStore: ``hydra/sweeper=charrnn_optuna``, its
samplers (``hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|qmc|grid``, the official sweeper's names)
and pruners (``hydra/sweeper/pruner=none|median|successive_halving|hyperband``, Optuna's arguments)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    # null: Optuna's own default (setting some of these is deprecated in Optuna 4)
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = False  # true: running trials count as bad guesses, so parallel trials spread out


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConfig:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False


@dataclass
class NSGAIISamplerConfig:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class QMCSamplerConfig:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class GridSamplerConfig:
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the search space (every choice of every param) is filled in by the sweeper
    seed: int | None = None


@dataclass
class NopPrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # no pruning until this many trials have finished
    n_warmup_steps: int = 0  # nor before this global step in a trial
    interval_steps: int = 1
    n_min_trials: int = 1  # reports of at least this many trials at a step before it prunes there


@dataclass
class SuccessiveHalvingPrunerConfig:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # global steps of the first rung; auto: from the first finished trial
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # auto: the steps of the first finished trial
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class CharrnnOptunaSweeperConf:
    _target_: str = "hydra_plugins.charrnn_optuna_sweeper.sweeper.CharrnnOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "minimize"  # or maximize; a list of them for a multi-objective study (no pruning)
    # sqlite:///rel/or/abs.db (a relative path is taken from the directory the command runs in),
    # journal:///path/to/file (Optuna's journal file, for a shared filesystem), any RDB URL; null: in memory.
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 20  # the study's finished (complete + pruned) trials this search runs up to
    n_jobs: int = 2  # trials running at once (one at a time under the basic launcher)
    max_failure_rate: float = 0.0
    params: dict[str, str] | None = None
    # A callable (config, optuna.trial.Trial) -> None that suggests more params, as the official sweeper's.
    custom_search_space: str | None = None


def register() -> None:
    store = ConfigStore.instance()
    provider = "charrnn_optuna_sweeper"
    store.store(
        group="hydra/sweeper", name="charrnn_optuna", node=CharrnnOptunaSweeperConf, provider=provider
    )
    samplers = {
        "tpe": TPESamplerConfig,
        "random": RandomSamplerConfig,
        "cmaes": CmaEsSamplerConfig,
        "nsgaii": NSGAIISamplerConfig,
        "qmc": QMCSamplerConfig,
        "grid": GridSamplerConfig,
    }
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider=provider)
    pruners = {
        "none": NopPrunerConfig,
        "median": MedianPrunerConfig,
        "successive_halving": SuccessiveHalvingPrunerConfig,
        "hyperband": HyperbandPrunerConfig,
    }
    for name, node in pruners.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider=provider)


register()
