"""``charrnn-train -m resume=<sweep dir>``: continue a whole sweep where it was.

The sweep process (:func:`resume_argv`, called by ``cli()`` before Hydra starts) turns the command
into the sweep's own command line: its saved overrides (``multirun.yaml``: the swept values, the
launcher), into the same ``hydra.sweep.dir``, with this call's extra overrides applied to every job
and kept out of the job dir names. Each job (:func:`sweep_job_config`) then decides from its own dir:
``done`` -> its recorded result counts, nothing runs; a ``last.ckpt`` -> it continues exactly as
``resume=<job dir>`` would; nothing there -> it starts. Each launch has its number (``resume_launch``: 1 for
the sweep's first, +1 a resume), which the jobs record (run.json) and charrnn-report reads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from charrnn.core.errors import UserError

RESUME_KEYS = ("resume", "resume_extra", "resume_launch")  # a resume's own keys, never a job's identity


def launch_number(cfg: DictConfig) -> int:
    """Which launch of its sweep a config (a job's, or the saved ``multirun.yaml``) is: 1, then 2, 3 for
    resumes."""
    value = cfg.get("resume_launch")
    return int(value) if isinstance(value, int) and value > 0 else 1


def is_sweep_dir(path: Path) -> bool:
    return (path / "multirun.yaml").is_file()


def sweep_resume_target(argv: Sequence[str]) -> Path | None:
    """The sweep dir of ``-m resume=<dir>`` in ``argv``, or None when this is not such a command."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return None
    for arg in argv:
        if arg.startswith("resume="):
            return Path(arg.partition("=")[2]).expanduser()
    return None


def override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def resume_argv(argv: Sequence[str], sweep: Path) -> list[str]:
    """The command line that continues sweep ``sweep``: its own overrides, its dir, this call's extras."""
    if not is_sweep_dir(sweep):
        raise UserError(
            f"resume={str(sweep)!r} under -m is not a sweep dir (it has no multirun.yaml); pass the dir a "
            "-m run wrote, or drop -m to resume one run"
        )
    saved = OmegaConf.load(sweep / "multirun.yaml")
    task = [o for o in saved.hydra.overrides.task if override_key(o) not in RESUME_KEYS]
    hydra_overrides = [
        o
        for o in saved.hydra.overrides.hydra
        if override_key(o) not in ("hydra.sweep.dir", "hydra.job.config.override_dirname.exclude_keys")
    ]
    flags = [a for a in argv if a.startswith("-")]
    # An override the sweep was launched with, repeated as it was, changes nothing.
    extras = [a for a in argv if not a.startswith("-") and override_key(a) != "resume" and a not in task]
    identity = {override_key(o) for o in task if "," in o.partition("=")[2] or "(" in o.partition("=")[2]}
    for extra in extras:
        key = override_key(extra)
        if (
            key in identity
            or key.startswith(("data.", "hydra"))
            or key == "data"
            or "/" in key
            or "." not in key
        ):
            raise UserError(
                f"'{extra}' would change which jobs this sweep is (its swept keys, its data, its config "
                "groups or launcher); a resumed sweep takes only single values such as trainer.max_steps=N "
                "-- start a new sweep for this"
            )
    # The extras travel as one list that every job applies itself (sweep_job_config), not as Hydra overrides:
    # the job dir names (and what each job's Hydra records) stay exactly the sweep's own.
    before = list(saved.hydra.job.config.override_dirname.exclude_keys)
    excluded = before + [k for k in RESUME_KEYS if k not in before]
    extra_list = ",".join(repr(e) for e in extras)
    return [
        *flags,
        *hydra_overrides,
        f"hydra.sweep.dir={sweep}",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]",
        *task,
        f"resume={sweep}",
        f"+resume_extra=[{extra_list}]",
        f"+resume_launch={launch_number(saved) + 1}",
    ]


def nothing_left(sweep: Path, argv: Sequence[str]) -> bool:
    """Every job of the sweep is done and the resume adds nothing to train."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: PLC0415 -- public static method

    saved = OmegaConf.load(sweep / "multirun.yaml")
    task = [o for o in saved.hydra.overrides.task if override_key(o) not in RESUME_KEYS]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(task)
    jobs = sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
    done = sum(1 for record in sweep.glob("*/run.json") if OmegaConf.load(record).get("status") == "done")
    extras = [a for a in argv if not a.startswith("-") and override_key(a) != "resume" and a not in task]
    return not extras and done >= jobs


def resume_extras(cfg: DictConfig) -> tuple[str, ...]:
    """The ``key=value`` overrides a whole-sweep resume applies to every job."""
    return tuple(str(o) for o in (cfg.get("resume_extra") or ()))


def sweep_job_config(cfg: DictConfig) -> tuple[DictConfig | None, float | None]:
    """A job of a resumed sweep: ``(config to train with, None)``, or ``(None, recorded result)`` for a done
    job.
    A job that had started continues as ``resume=<job dir>`` with this resume's extra overrides
    (``resume_extra``, which :func:`resume_extras` hands to it); one that had not starts with them applied."""
    from charrnn.cli import rundir

    extras = resume_extras(cfg)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.pop("resume_extra", None)
        cfg.pop("resume_launch", None)
    for extra in extras:
        OmegaConf.update(cfg, override_key(extra), rundir.yaml_value(extra.partition("=")[2]), force_add=True)
    out = Path(str(cfg.output_dir))
    record = out / "run.json"
    status = rundir.read_run_file(record).get("status") if record.is_file() else None
    if (out / "checkpoints" / "last.ckpt").is_file():
        resumed_cfg = OmegaConf.merge(cfg, {"resume": str(out)})
        if status == "done" and recorded_limits_kept(cfg, out):
            return None, recorded_result(out)
        return resumed_cfg, None
    return OmegaConf.merge(
        cfg, {"resume": None}
    ), None  # never started (or died before its first checkpoint): it starts


def recorded_limits_kept(cfg: DictConfig, out: Path) -> bool:
    from charrnn.cli import rundir

    saved = rundir.read_run_file(out / ".hydra" / "config.yaml")
    keys = ["max_steps", "max_epochs", "max_time"]
    return OmegaConf.masked_copy(saved.trainer, keys) == OmegaConf.masked_copy(cfg.trainer, keys)


def recorded_result(out: Path) -> Any:
    from charrnn.cli import rundir

    metrics = out / "metrics.json"
    return float(rundir.read_run_file(metrics)["best_val_bpc"]) if metrics.is_file() else None
