"""``charrnn-report SWEEP_DIR``: one row per job of a Hydra sweep, best validation bpc first.

A job is a subdirectory holding ``.hydra/overrides.yaml``. Its status: ``done`` (``metrics.json``, or
``run.json`` says so where metrics.json is damaged),
``cancelled`` (its ``error.txt`` says so: the SLURM launcher's record), ``failed`` (any other ``error.txt``,
or ``run.json`` / the Hydra job log says so), ``stopped`` (``run.json``: by a signal), else ``running``;
unfinished jobs are read from their TensorBoard scalars so far, and listed with their reason and SLURM log.
Prints a table and writes ``report.md``, ``report.csv`` and ``report.png`` (val/bpc against each swept
parameter, and the validation curves) into the sweep directory. Damaged files in a job dir (overrides,
metrics of the wrong type) are one warning line each; a sweep dir that cannot be written gets the table
and one sentence, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from charrnn.cli.commands import resume_command
from charrnn.core.files import storage_error

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
    """A submitit job's log, ``<sweep>/.submitit/<id>/<id>_0_log.err`` (the id from ``.hydra/hydra.yaml``), or ""."""
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
            f"stopped by {run.get('stopped_by', 'a signal')} at step {run.get('global_step', '?')}; continue with: {resume_command(path)}",
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
    """The job's ``key=value`` overrides from ``.hydra/overrides.yaml``; a damaged file gets a note instead."""
    try:
        raw = yaml.safe_load((job.path / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raw = f"unreadable ({type(e).__name__})"
    if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
        job.notes.append(
            ".hydra/overrides.yaml is damaged (not a list of key=value lines), so its swept values are not shown"
        )
        return
    job.overrides = dict(o.partition("=")[::2] for o in raw)
    job.overrides.pop(
        "++callbacks.optuna_pruning", None
    )  # the Optuna trial's channel to its study, not a param


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
    """A job whose run.json says done but whose metrics.json is damaged: run.json's and TensorBoard's figures."""
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
    return job


def find_jobs(sweep: Path) -> list[Job]:
    dirs = [p for p in sorted(sweep.iterdir()) if (p / ".hydra" / "overrides.yaml").is_file()]
    jobs = [read_job(p) for p in dirs]
    jobs.sort(
        key=lambda j: (
            j.status in ("failed", "cancelled"),
            j.best is None,
            j.best if j.best is not None else 0.0,
            j.num,
        )
    )
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose values differ between jobs (all keys for a one-job sweep), in first-seen order."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    return varying or ([k for k in keys if k != "data.path"] if len(jobs) == 1 else [])


def fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def short_path(path: str, job_dir: Path) -> str:
    """A checkpoint path relative to its job directory (the job column already names the job)."""
    try:
        return str(Path(path).resolve().relative_to(job_dir.resolve())) if path else "-"
    except ValueError:
        return path


def rows(jobs: list[Job], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = [
        "job",
        *keys,
        "status",
        "best val/bpc",
        "final val/bpc",
        "epochs",
        "steps",
        "wall s",
        "checkpoint",
    ]
    table = [
        [
            str(j.num),
            *(j.overrides.get(k, "") for k in keys),
            j.status,
            fmt(j.best),
            fmt(j.final),
            fmt(j.epochs),
            fmt(j.steps),
            fmt(j.wall, 1),
            short_path(j.checkpoint, j.path),
        ]
        for j in jobs
    ]
    return header, table


def write_markdown(
    path: Path, sweep: Path, header: list[str], table: list[list[str]], jobs: list[Job]
) -> None:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    counts = {s: sum(j.status == s for j in jobs) for s in STATUS_ORDER}
    shown = [s for s in STATUS_ORDER if counts[s] or s in ("done", "running", "failed")]
    lines = [
        f"# Sweep report: {sweep}",
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in shown),
        "",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job, row in zip(jobs, table):
        row = row[:-1] + [short_path(job.checkpoint, sweep) if job.checkpoint else "-"]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    failed = [j for j in jobs if j.status in UNFINISHED]
    if failed:
        lines += ["", "## Failed jobs", ""] + [
            f"- job {j.num} (`{j.path.name}`) {j.status}: {j.error}" + (f"; log: `{j.log}`" if j.log else "")
            for j in failed
        ]
    lines += ["", "![val/bpc by parameter and validation curves](report.png)", ""]
    path.write_text("\n".join(lines))


def write_csv(path: Path, keys: list[str], jobs: list[Job]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "job",
                "dir",
                *keys,
                "status",
                "best_val_bpc",
                "final_val_bpc",
                "epochs",
                "steps",
                "wall_seconds",
                "checkpoint",
                "error",
                "log",
                "overrides",
            ]
        )
        for j in jobs:
            writer.writerow(
                [
                    j.num,
                    j.path.name,
                    *(j.overrides.get(k, "") for k in keys),
                    j.status,
                    "" if j.best is None else j.best,
                    "" if j.final is None else j.final,
                    "" if j.epochs is None else j.epochs,
                    "" if j.steps is None else j.steps,
                    "" if j.wall is None else round(j.wall, 3),
                    j.checkpoint,
                    j.error,
                    j.log,
                    " ".join(f"{k}={v}" for k, v in j.overrides.items()),
                ]
            )


def as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def write_plot(path: Path, keys: list[str], jobs: list[Job], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [j for j in jobs if j.best is not None]
    panels = len(keys) + 1
    cols = min(panels, 3)
    nrows = math.ceil(panels / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, key in zip(flat, keys):
        values = [j.overrides.get(key, "") for j in scored]
        numbers = [as_number(v) for v in values]
        colors = [
            "tab:red"
            if j.status in ("failed", "cancelled")
            else "tab:blue"
            if j.status == "done"
            else "tab:orange"
            for j in scored
        ]
        if len(set(values)) > 6 and all(
            n is not None for n in numbers
        ):  # a continuous search (optuna): a numeric axis
            xs: list[float] = [float(n) for n in numbers if n is not None]
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:  # a grid or a choice: one column per value, numbers in numeric order
            categories = sorted(set(values), key=lambda v: (as_number(v) is None, as_number(v) or 0.0, v))
            xs = [float(categories.index(v)) for v in values]
            ax.set_xticks(
                range(len(categories)),
                categories,
                rotation=30 if max(map(len, categories), default=0) > 6 else 0,
            )
            ax.set_xlim(-0.5, max(len(categories), 1) - 0.5)
        ax.scatter(xs, [j.best for j in scored], c=colors)
        for x, j in zip(xs, scored):
            ax.annotate(str(j.num), (x, j.best), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.set(xlabel=key, ylabel="best val/bpc")
        ax.grid(alpha=0.3)
    curves = flat[len(keys)]
    for j in jobs:
        if j.curve:
            label = f"{j.num}: " + ", ".join(f"{k}={j.overrides.get(k, '')}" for k in keys)
            curves.plot(
                [s for s, _ in j.curve], [v for _, v in j.curve], marker="o", markersize=3, label=label[:60]
            )
    curves.set(xlabel="step", ylabel="val/bpc", title="validation curves")
    curves.grid(alpha=0.3)
    if any(j.curve for j in jobs):
        curves.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(header: list[str], table: list[list[str]], jobs: list[Job], sweep: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"sweep {sweep}", title_justify="left")
    for name in header:
        out.add_column(
            name,
            overflow="fold",
            justify="right"
            if name in ("job", "best val/bpc", "final val/bpc", "epochs", "steps", "wall s")
            else "left",
        )
    style = {
        "done": "",
        "pruned": "blue",
        "running": "yellow",
        "stopped": "cyan",
        "cancelled": "magenta",
        "failed": "red",
    }
    for job, row in zip(jobs, table):
        out.add_row(*row, style=style[job.status])
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # piped or captured: no wrapping of a narrow default
    console.print(out)
    for j in jobs:
        if j.status in UNFINISHED:
            log = f"; log: {j.log}" if j.log else ""
            console.print(
                f"[{style[j.status]}]job {j.num} {j.status}:[/] {j.error}{log}",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )


def write_reports(
    sweep: Path, header: list[str], table: list[list[str]], keys: list[str], jobs: list[Job]
) -> None:
    """report.md, report.csv and report.png in the sweep dir; a dir that cannot be written is one sentence, exit 2."""
    target = sweep / "report.md"
    try:
        write_markdown(target, sweep, header, table, jobs)
        write_csv(target := sweep / "report.csv", keys, jobs)
        write_plot(target := sweep / "report.png", keys, jobs, str(sweep))
    except OSError as e:
        fix = "the table above is all this call gives; run charrnn-report on a writable copy of the sweep dir"
        why = storage_error(e, target, fix=fix) or f"cannot write {str(target)!r}: {e.strerror or e}; {fix}"
        print(f"charrnn-report: error: {why}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {sweep / 'report.md'}, report.csv and report.png")


def report(sweep: Path) -> list[Job]:
    jobs = find_jobs(sweep)
    keys = swept_keys(jobs)
    header, table = rows(jobs, keys)
    print_table(header, table, jobs, sweep)
    for job in jobs:
        for note in job.notes:
            print(f"charrnn-report: warning: job {job.num} ({job.path.name}): {note}", file=sys.stderr)
    write_reports(sweep, header, table, keys, jobs)
    return jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="charrnn-report",
        description="Summarise a charrnn-train sweep (-m) directory: table, report.md, report.csv, report.png.",
    )
    parser.add_argument(
        "sweep_dir", help="a multirun directory, e.g. outputs/multirun/2026-11-25/13-45-20_35bb23"
    )
    args = parser.parse_args(argv)
    sweep = Path(args.sweep_dir).expanduser()
    if not sweep.is_dir():
        print(
            f"charrnn-report: error: {str(sweep)!r} is not a directory; pass a sweep directory such as outputs/multirun/<date>/<time>_<id>",
            file=sys.stderr,
        )
        sys.exit(2)
    if not any((p / ".hydra" / "overrides.yaml").is_file() for p in sweep.iterdir()):
        print(
            f"charrnn-report: error: {str(sweep)!r} holds no sweep jobs (subdirectories with .hydra/overrides.yaml); pass the directory that charrnn-train -m made",
            file=sys.stderr,
        )
        sys.exit(2)
    report(sweep)


if __name__ == "__main__":
    main()
