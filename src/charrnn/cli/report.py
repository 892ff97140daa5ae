"""``charrnn-report SWEEP_DIR``: one row per job of a Hydra sweep, best validation bpc first.

A job is a subdirectory holding ``.hydra/overrides.yaml``. Its status: ``done`` (``metrics.json``, or
``run.json`` says so where metrics.json is damaged), ``cancelled`` (its ``error.txt`` says so: the SLURM
launcher's record), ``failed`` (any other ``error.txt``, or ``run.json`` / the Hydra job log says so),
``stopped`` (``run.json``: by a signal), else ``running``; unfinished jobs are read from their TensorBoard
scalars so far, and listed with their reason and SLURM log. Prints a table and writes ``report.md``,
``report.csv`` and ``report.png`` (val/bpc against each swept parameter, and the validation curves) into the
sweep directory. Damaged files in a job dir (overrides, metrics of the wrong type) are one warning line each;
a sweep dir that cannot be written gets the table and one sentence, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from charrnn.cli.report_jobs import STATUS_ORDER, UNFINISHED, Job, find_jobs, read_job
from charrnn.cli.report_plot import write_plot
from charrnn.cli.report_tables import print_table, rows, swept_keys, write_csv, write_markdown
from charrnn.core.files import storage_error

# Reading the jobs: report_jobs; the table, report.md and report.csv: report_tables; report.png: report_plot.
__all__ = ["STATUS_ORDER", "UNFINISHED", "Job", "find_jobs", "main", "read_job", "report"]


def write_reports(
    sweep: Path, header: list[str], table: list[list[str]], keys: list[str], jobs: list[Job]
) -> None:
    """report.md, report.csv and report.png in the sweep dir; a dir that cannot be written is one sentence,
    exit 2."""
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
        description="Summarise a charrnn-train sweep (-m) directory: table, report.md, report.csv, "
        "report.png.",
    )
    parser.add_argument(
        "sweep_dir", help="a multirun directory, e.g. outputs/multirun/2026-11-25/13-45-20_35bb23"
    )
    args = parser.parse_args(argv)
    sweep = Path(args.sweep_dir).expanduser()
    if not sweep.is_dir():
        print(
            f"charrnn-report: error: {str(sweep)!r} is not a directory; pass a sweep directory such as "
            "outputs/multirun/<date>/<time>_<id>",
            file=sys.stderr,
        )
        sys.exit(2)
    if not any((p / ".hydra" / "overrides.yaml").is_file() for p in sweep.iterdir()):
        print(
            f"charrnn-report: error: {str(sweep)!r} holds no sweep jobs (subdirectories with "
            ".hydra/overrides.yaml); pass the directory that charrnn-train -m made",
            file=sys.stderr,
        )
        sys.exit(2)
    report(sweep)


if __name__ == "__main__":
    main()
