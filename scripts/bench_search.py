#!/usr/bin/env python
"""Hyper-parameter search in a fixed wall-clock budget: Optuna without pruning, with pruning, and with
pruning and two trials at a time (no batch barrier), side by side on the same search space and seed.

Each configuration is a real `charrnn-train -m hparams_search=optuna ...` sweep in its own work dir
(<work>/a, b, c) with its own SQLite study, stopped with SIGTERM at --budget seconds (every trial in
flight saves and records run.json status `stopped`; it counts as cut, not finished):
  (a) hydra/sweeper/pruner=none
  (b) the pruner (--pruner, default median)
  (c) the pruner + hydra/launcher=parallel hydra.launcher.n_jobs=2 hydra.sweeper.n_jobs=2
Every trial trains --max-steps steps unless pruned, validating every --val-every steps (the pruner's
reports). The best complete trial (lowest val bpc, Optuna's best_trial) is scored by `charrnn-eval
<trial> split=standard_val` (the corpus's last 10 %). For (c): the slot time left idle, measured
from the trials' run.json spans, and what a batch barrier would have left idle on the same trial
lengths (batches of n_jobs in launch order; idle = sum over batches of (longest - each)).

  python scripts/bench_search.py --corpus ../shared/data/tinyshakespeare.txt --budget 240
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchrows/

from benchrows.common import REPO, note  # noqa: E402
from benchrows.search_report import print_table, summary, verdict  # noqa: E402
from benchrows.search_runs import Config, run_sweep, score_best  # noqa: E402

PRUNERS = ("median", "successive_halving")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--corpus", required=True, type=Path, help="the text to search on (data=shakespeare data.path=...)"
    )
    p.add_argument(
        "--budget", type=float, default=600, help="wall-clock seconds per configuration (default 600)"
    )
    p.add_argument("--max-steps", type=int, default=600, help="steps of a full trial (default 600)")
    p.add_argument(
        "--val-every", type=int, default=100, help="validation (pruning report) interval (default 100)"
    )
    p.add_argument("--seed", type=int, default=1234, help="training and sampler seed (default 1234)")
    p.add_argument("--lr", default="3e-4,1e-2", help="optim.lr log-interval LOW,HIGH (default 3e-4,1e-2)")
    p.add_argument("--hidden", default="64,128,256", help="model.hidden_size choices (default 64,128,256)")
    p.add_argument("--cells", default="gru,lstm", help="model.cell choices (default gru,lstm)")
    p.add_argument(
        "--pruner", choices=PRUNERS, default="median", help="pruner of (b) and (c) (default median)"
    )
    p.add_argument(
        "--pruner-startup", type=int, default=2, help="median: trials complete before any is pruned"
    )
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each sweep (default 2)")
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_search", help="work dir (emptied)")
    p.add_argument(
        "--at-least",
        type=int,
        default=0,
        help="go past --budget until this many trials have finished in each configuration "
        "(smoke runs on a loaded machine; the table's seconds column says so; default 0)",
    )
    p.add_argument("--only", default="a,b,c", help="configurations to run, e.g. a,c (default a,b,c)")
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="added to every sweep"
    )
    args = p.parse_args(argv)
    if not args.corpus.is_file():
        p.error(f"--corpus {args.corpus} is not a file")
    if args.budget <= 0 or args.max_steps < 1 or not 1 <= args.val_every <= args.max_steps:
        p.error("--budget must be > 0, --max-steps >= 1 and 1 <= --val-every <= --max-steps")
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    if not args.only or set(args.only) - {"a", "b", "c"}:
        p.error("--only takes a, b and/or c")
    args.corpus, args.work = args.corpus.resolve(), args.work.resolve()
    return args


def base_overrides(args: argparse.Namespace) -> list[str]:
    """Everything the three configurations share: data, seed, trial length, search space, study;
    an --override of one of these keys replaces it."""
    low, high = args.lr.split(",")
    shared = [
        "hparams_search=optuna",
        "data=shakespeare",
        f"data.path={args.corpus}",
        f"seed={args.seed}",
        f"trainer.max_steps={args.max_steps}",
        f"trainer.val_check_interval={args.val_every}",
        f"trainer.log_every_n_steps={min(25, args.val_every)}",
        "trainer.enable_progress_bar=false",
        "sample.length=100",
        "hydra.sweeper.n_trials=100000",  # the deadline ends the search, not a trial count
        "hydra.sweeper.study_name=bench_search",
        f"optim.lr=tag(log, interval({low}, {high}))",
        f"model.hidden_size=choice({args.hidden})",
        f"model.cell=choice({args.cells})",
    ]
    given = {o.split("=", 1)[0] for o in args.override}
    return [o for o in shared if o.split("=", 1)[0] not in given] + args.override


def configs(args: argparse.Namespace) -> list[Config]:
    if args.pruner == "median":
        pruner = [
            "hydra/sweeper/pruner=median",
            f"hydra.sweeper.pruner.n_startup_trials={args.pruner_startup}",
        ]
    else:  # rungs at val_every, 3 x val_every, ...: a third of the trials at a rung go on
        pruner = [
            "hydra/sweeper/pruner=successive_halving",
            f"hydra.sweeper.pruner.min_resource={args.val_every}",
            "hydra.sweeper.pruner.reduction_factor=3",
        ]
    parallel = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    every = [
        Config("a", "no pruner, 1 job", ("hydra/sweeper/pruner=none",), 1),
        Config("b", f"{args.pruner}, 1 job", tuple(pruner), 1),
        Config("c", f"{args.pruner}, 2 jobs (no barrier)", tuple(pruner + parallel), 2),
    ]
    return [c for c in every if c.key in args.only]


def machine() -> str:
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or "?",
        )
        if Path("/proc/cpuinfo").is_file()
        else platform.processor() or "?"
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{socket.gethostname()} ({model}, {cores} cores)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = base_overrides(args)
    host, load_before = machine(), os.getloadavg()
    results: dict[str, dict] = {}
    for config in configs(args):
        work = args.work / config.key
        outcome = run_sweep(config, base, work, args.budget, args.threads, args.at_least)
        score_best(outcome, work / "sweep", args.threads)
        results[config.key] = done = summary(outcome)
        note(f"({config.key}) {done['complete']} complete, {done['pruned']} pruned, {done['cut']} cut")
    info = {
        "machine": host,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "argv": sys.argv if argv is None else ["scripts/bench_search.py", *argv],
        "budget_s": args.budget,
        "base_overrides": base,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(
        json.dumps({**info, "results": results}, indent=2, default=str) + "\n"
    )
    title = (
        f"charrnn search benchmark: {args.corpus.name}, {args.budget:g} s per configuration, trials of "
        f"{args.max_steps} steps (val every {args.val_every}), seed {args.seed}; {host}"
    )
    print_table(results, title)
    lf = " ".join(f"{x:.2f}" for x in load_before)
    print(f"load average before: {lf}; during each sweep: column load 1m (the sweep's own threads included)")
    for line in verdict(results):
        print(line)
    print(f"command: {shlex.join(info['argv'])}")
    print(f"sweeps: <work>/<a|b|c>/command.txt, trials and numbers: {args.work / 'results.json'}")
    return 0 if all(r["complete"] + r["pruned"] > 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
