"""charrnn-report's table: the rows, the console table, ``report.md`` and ``report.csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from charrnn.cli.report_jobs import STATUS_ORDER, UNFINISHED, Job


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose values differ between jobs (all keys for a one-job sweep), in first-seen
    order."""
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


BEGAN = {"done": "done before", "resumed": "resumed", "started": "started", "-": "not begun"}


def launch_summary(jobs: list[Job]) -> str:
    """``launch 2: 4 jobs: 1 done before, 1 resumed, 2 started``: how the jobs began in the latest launch."""
    counts = {b: sum(j.began == b for j in jobs) for b in BEGAN}
    launch = jobs[0].launch if jobs else 1
    return f"launch {launch}: {len(jobs)} jobs: " + ", ".join(
        f"{counts[b]} {w}" for b, w in BEGAN.items() if counts[b]
    )


def rows(jobs: list[Job], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = [
        "job",
        *keys,
        "status",
        f"launch {jobs[0].launch if jobs else 1}",
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
            j.began,
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
        launch_summary(jobs),
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
                "launch",
                "began",
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
                    j.launch,
                    j.began,
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
    console.print(launch_summary(jobs), highlight=False)
    for j in jobs:
        if j.status in UNFINISHED:
            log = f"; log: {j.log}" if j.log else ""
            console.print(
                f"[{style[j.status]}]job {j.num} {j.status}:[/] {j.error}{log}",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
