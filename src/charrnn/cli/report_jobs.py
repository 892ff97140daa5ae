"""charrnn-report's reading of a sweep: one :class:`Job` per job dir, from the files the job left.

A job is a subdirectory holding ``.hydra/overrides.yaml``. Its status: ``done`` (``metrics.json``, or
``run.json`` says so where metrics.json is damaged), ``cancelled`` (its ``error.txt`` says so: the SLURM
launcher's record), ``failed`` (any other ``error.txt``, or ``run.json`` / the Hydra job log says so),
``stopped`` (``run.json``: by a signal), else ``running``; unfinished jobs are read from their TensorBoard
scalars so far, with their reason and SLURM log. Damaged files become notes, never exceptions.

Each job also says how it began in the sweep's latest launch (``charrnn-train -m resume=<sweep dir>`` is a
new launch): ``done`` (counted, not rerun), ``resumed`` (from its last.ckpt), ``started`` (fresh), or ``-``
(not yet), from the attempts its ``run.json`` records (``launch``, ``began``, ``counted_in_launches``).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from charrnn.cli.commands import resume_command
from charrnn.cli.sweeps import RESUME_KEYS

STATUS_ORDER = {"done": 0, "pruned": 1, "running": 2, "stopped": 3, "cancelled": 4, "failed": 5}
UNFINISHED = ("stopped", "cancelled", "failed")  # listed with their reason and log


@dataclass
class Job:
    num: int
    path: Path
    overrides: dict[str, str]
    status: str = "running"
    best: float | None = None
    final: float | None = None
    epochs: int | None = None
    steps: int | None = None
    wall: float | None = None
    checkpoint: str = ""
    error: str = ""
    log: str = ""
    notes: list[str] = field(default_factory=list)  # what was damaged in its files, said once after the table
    curve: list[tuple[int, float]] = field(default_factory=list)
    launches: dict[int, str] = field(default_factory=dict)  # launch of the sweep -> how the job began in it
    launch: int = 1  # the sweep's latest launch
    began: str = "-"  # how the job began in it: done (counted, not rerun), resumed, started; - not yet


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def val_curve(job_dir: Path) -> list[tuple[int, float]]:
    """The job's ``val/bpc`` scalars so far, from every TensorBoard event file below it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for logdir in sorted({p.parent for p in job_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
        try:
            acc.Reload()
            if "val/bpc" in acc.Tags()["scalars"]:
                points.update((e.step, e.value) for e in acc.Scalars("val/bpc"))
        except Exception:  # a file being written or truncated: use what could be read
            continue
    return sorted(points.items())


def log_error(job_dir: Path) -> str:
    """The exception a Hydra job log recorded, if any (jobs that died before writing error.txt)."""
    for log in job_dir.glob("*.log"):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if any(
            "Traceback (most recent call last)" in line or "Error executing job" in line for line in lines
        ):
            errors = [line.strip() for line in lines if re.match(r"^\s*\w+(Error|Exception)\b", line)]
            return errors[-1] if errors else "see " + log.name
    return ""


def submitit_log(path: Path) -> str:
    """A submitit job's log, ``<sweep>/.submitit/<id>/<id>_0_log.err`` (the id from ``.hydra/hydra.yaml``), or
    ""."""
    try:
        job_id = str(yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return ""
    log = path.parent / ".submitit" / job_id / f"{job_id}_0_log.err"
    return str(log) if re.fullmatch(r"[\w.-]+", job_id) and log.is_file() else ""


def read_unfinished(job: Job, run: dict[str, Any]) -> None:
    """Status, reason and log of a job without metrics.json, and its figures so far."""
    path, error_file = job.path, job.path / "error.txt"
    if error_file.is_file():
        first = (error_file.read_text(errors="replace").strip().splitlines() or ["(empty error.txt)"])[0]
        job.status = "cancelled" if first.startswith("charrnn-train: cancelled:") else "failed"
        job.error, _, job.log = first.partition("; log: ")
    elif run.get("status") == "failed" or log_error(path):
        job.status, job.error = "failed", str(run.get("error") or log_error(path))
    elif run.get("status") == "pruned":  # an Optuna trial its pruner stopped: a result, with its curve so far
        job.status = "pruned"
    elif run.get("status") == "stopped":
        job.status, job.error = (
            "stopped",
            f"stopped by {run.get('stopped_by', 'a signal')} at step {run.get('global_step', '?')}; "
            f"continue with: {resume_command(path)}",
        )
    job.error = re.sub(r"^charrnn-train: (error|failed|cancelled): ", "", job.error)
    if job.status == "cancelled" and run.get("status") == "stopped":  # it caught SLURM's SIGTERM
        job.error += f"; stopped at step {run.get('global_step', '?')} with last.ckpt"
    if job.status in UNFINISHED and not job.log:
        job.log = submitit_log(path)
    if job.curve:
        job.best, job.final = min(v for _, v in job.curve), job.curve[-1][1]
        job.steps = job.curve[-1][0] + 1
    best = sorted((path / "checkpoints").glob("best-*.ckpt"))
    job.checkpoint = str(best[-1]) if best else ""
    config = path / ".hydra" / "config.yaml"
    if number(run.get("wall_seconds")) is not None:
        job.wall = number(run["wall_seconds"])
    elif config.exists():
        job.wall = (
            error_file.stat().st_mtime if error_file.is_file() else time.time()
        ) - config.stat().st_mtime


def number(value: Any) -> float | None:
    """A figure from a job's JSON file, or None where a damaged file holds another type there."""
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)


def whole(value: Any) -> int | None:
    found = number(value)
    return int(found) if found is not None and found.is_integer() else None


def read_overrides(job: Job) -> None:
    """The job's ``key=value`` overrides from ``.hydra/overrides.yaml``; a damaged file gets a note
    instead."""
    try:
        raw = yaml.safe_load((job.path / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raw = f"unreadable ({type(e).__name__})"
    if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
        job.notes.append(
            ".hydra/overrides.yaml is damaged (not a list of key=value lines), so its swept values are not "
            "shown"
        )
        return
    # Not params: the Optuna trial's channel to its study; a whole-sweep resume's keys (on jobs it started).
    job.overrides = {
        k: v
        for k, v in (o.partition("=")[::2] for o in raw)
        if k != "++callbacks.optuna_pruning" and k.lstrip("+~") not in RESUME_KEYS
    }


def read_metrics(job: Job, metrics: dict[str, Any]) -> None:
    """A finished job's figures from its metrics.json; values of the wrong type show as ``-``, with a note."""
    final = metrics.get("final")
    job.best, job.final = (
        number(metrics.get("best_val_bpc")),
        number(final.get("val/bpc")) if isinstance(final, dict) else None,
    )
    job.epochs, job.steps, job.wall = (
        whole(metrics.get("epochs")),
        whole(metrics.get("global_step")),
        number(metrics.get("wall_seconds")),
    )
    checkpoint = metrics.get("best_checkpoint")
    job.checkpoint = checkpoint if isinstance(checkpoint, str) else ""
    expected = {
        "best_val_bpc": job.best,
        "epochs": job.epochs,
        "global_step": job.steps,
        "wall_seconds": job.wall,
    }
    wrong = [k for k, v in expected.items() if v is None and metrics.get(k) is not None]
    wrong += (
        ["final"]
        if final is not None
        and (not isinstance(final, dict) or job.final is None and final.get("val/bpc") is not None)
        else []
    )
    wrong += ["best_checkpoint"] if checkpoint is not None and not isinstance(checkpoint, str) else []
    if wrong:
        job.notes.append(f"metrics.json holds values of the wrong type ({', '.join(wrong)}), shown as -")


def read_done_without_metrics(job: Job, run: dict[str, Any]) -> None:
    """A job whose run.json says done but whose metrics.json is damaged: run.json's and TensorBoard's
    figures."""
    job.status = "done"
    job.best, job.steps, job.wall = (
        number(run.get("best_val_bpc")),
        whole(run.get("global_step")),
        number(run.get("wall_seconds")),
    )
    job.final = job.curve[-1][1] if job.curve else None
    best = sorted((job.path / "checkpoints").glob("best-*.ckpt"))
    job.checkpoint = str(best[-1]) if best else ""
    job.notes.append("metrics.json is damaged; its figures come from run.json and TensorBoard")


def read_job(path: Path) -> Job:
    match = re.match(r"(\d+)", path.name)
    job = Job(int(match.group(1)) if match else -1, path, {})
    read_overrides(job)
    job.curve = val_curve(path)
    metrics, run = read_json(path / "metrics.json"), read_json(path / "run.json") or {}
    if metrics is not None:
        job.status = "done"
        read_metrics(job, metrics)
    elif run.get("status") == "done":
        read_done_without_metrics(job, run)
    else:
        read_unfinished(job, run)
    job.best = None if job.best is None or math.isnan(job.best) else job.best
    job.launches = launches(run)
    return job


def launches(run: dict[str, Any]) -> dict[int, str]:
    """How a job began in each launch of its sweep, from its attempts in ``run.json`` (the first of a launch
    counts; a requeue within it does not): ``started``, ``resumed``, or ``done`` (counted, not rerun).
    Attempts recorded before launches were numbered are launch 1: the first started, later ones resumed."""
    earlier = run.get("earlier_attempts")
    attempts = [a for a in (earlier if isinstance(earlier, list) else []) if isinstance(a, dict)]
    found: dict[int, str] = {}
    for i, attempt in enumerate([*attempts, run] if run else []):
        began = attempt.get("began")
        if began not in ("started", "resumed"):
            began = "started" if i == 0 else "resumed"
        found.setdefault(whole(attempt.get("launch")) or 1, began)
        counted = attempt.get("counted_in_launches")
        for launch in counted if isinstance(counted, list) else []:
            if whole(launch):
                found.setdefault(int(launch), "done")
    return found


def sweep_launch(sweep: Path, jobs: list[Job]) -> int:
    """The sweep's latest launch: its ``multirun.yaml`` (rewritten by each launch) or any job's record."""
    try:
        saved = yaml.safe_load((sweep / "multirun.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        saved = None
    number = whole(saved.get("resume_launch")) if isinstance(saved, dict) else None
    return max([number or 1, *(n for j in jobs for n in j.launches)])


def find_jobs(sweep: Path) -> list[Job]:
    dirs = [p for p in sorted(sweep.iterdir()) if (p / ".hydra" / "overrides.yaml").is_file()]
    jobs = [read_job(p) for p in dirs]
    latest = sweep_launch(sweep, jobs)
    for job in jobs:
        job.launch, job.began = latest, job.launches.get(latest, "-")
    jobs.sort(
        key=lambda j: (
            j.status in ("failed", "cancelled"),
            j.best is None,
            j.best if j.best is not None else 0.0,
            j.num,
        )
    )
    return jobs
