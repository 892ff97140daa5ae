"""The search benchmark's numbers per configuration, its table and its verdict against the target."""

from __future__ import annotations

import shlex
import sys

from .search_idle import barrier_idle, barrier_trials_within, measured_idle
from .search_runs import Outcome


def idle_cells(o: Outcome) -> dict[str, object]:
    """(c)'s measured and simulated batch-barrier idle slot time; nothing for one slot."""
    finished = [s for s in o.spans if s.status in ("done", "pruned")]
    if o.config.n_jobs < 2 or not o.spans:
        return {}
    window = (min(s.start for s in o.spans), o.deadline if o.killed else max(s.start for s in o.spans))
    idle, slot = measured_idle(o.spans, o.config.n_jobs, window)
    durations = [s.seconds for s in finished]
    sim_idle, sim_slot, sim_wall = barrier_idle(durations, o.config.n_jobs) if durations else (0.0, 0.0, 0.0)
    return {
        "measured_idle_s": idle,
        "measured_slot_s": slot,
        "barrier_idle_s": sim_idle,
        "barrier_slot_s": sim_slot,
        "barrier_wall_s": sim_wall,
        "barrier_trials_in_window": barrier_trials_within(durations, o.config.n_jobs, window[1] - window[0]),
        "window_s": window[1] - window[0],
    }


def summary(o: Outcome) -> dict[str, object]:
    return {
        "config": o.config.label,
        "complete": o.count("done"),
        "pruned": o.count("pruned"),
        "cut": o.count("stopped", "running"),
        "failed": o.count("failed"),
        "steps": o.steps,
        "seconds": o.deadline - o.launched,
        "killed": o.killed,
        "exit_code": o.exit_code,
        "load_mean": sum(o.load) / len(o.load) if o.load else None,
        "best": o.best,
        "trials": [s.__dict__ for s in o.spans],
        "command": shlex.join(o.command),
        **idle_cells(o),
    }


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole > 0 else "-"


def row(key: str, s: dict) -> list[str]:
    best = s["best"] or {}
    params = best.get("params", {})
    lr = params.get("optim.lr")
    trial = (
        f"#{best['trial']} {params.get('model.cell', '?')}-{params.get('model.hidden_size', '?')} "
        f"lr {float(lr):.1e}"
        if best
        else "-"
    )
    loss = best.get("standard_val_loss")
    idle = (
        f"{s['barrier_idle_s']:.0f} s = {pct(s['barrier_idle_s'], s['barrier_slot_s'])}"
        if "barrier_idle_s" in s
        else "- (1 slot)"
    )
    measured = (
        f"{s['measured_idle_s']:.0f} s = {pct(s['measured_idle_s'], s['measured_slot_s'])}"
        if "measured_idle_s" in s
        else "- (1 slot)"
    )
    return [
        f"({key}) {s['config']}",
        f"{s['seconds']:.0f}",
        str(s["complete"]),
        str(s["pruned"]),
        f"{s['cut']}" + (f" (+{s['failed']} failed)" if s["failed"] else ""),
        f"{s['steps']:,}",
        f"{best['val_bpc']:.4f}" if best else "-",
        f"{loss:.4f}" if loss is not None else "-",
        trial,
        idle,
        measured,
        f"{s['load_mean']:.2f}" if s["load_mean"] is not None else "-",
    ]


def print_table(results: dict[str, dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = (
        "configuration",
        "seconds",
        "complete",
        "pruned",
        "cut at deadline",
        "train steps",
        "best val bpc",
        "best std-val loss (nats)",
        "best trial",
        "barrier idle (simulated)",
        "idle (measured)",
        "load 1m",
    )
    for col in columns:
        table.add_column(col, overflow="fold")
    for key, s in results.items():
        table.add_row(*row(key, s))
    Console(width=None if sys.stdout.isatty() else 220).print(table)


def verdict(results: dict[str, dict]) -> list[str]:
    """The target, as measured: (c) >= 2x (a)'s finished trials, best standard val no worse."""
    lines = []
    if "c" in results and "barrier_idle_s" in results["c"]:
        c = results["c"]
        lines.append(
            f"(c) batch barrier on the same {c['complete'] + c['pruned']} trial lengths: "
            f"{c['barrier_wall_s']:.0f} s of wall time vs {c['window_s']:.0f} s measured; "
            f"it would have finished {c['barrier_trials_in_window']} trials in that window "
            "(spans from run.json, +-0.5 s)"
        )
    if "a" in results:
        a = results["a"]
        base = a["complete"] + a["pruned"]
        for key in ("b", "c"):
            if key not in results:
                continue
            s = results[key]
            n = s["complete"] + s["pruned"]
            ratio = f"x{n / base:.2f}" if base else "-"
            la, lk = ((r["best"] or {}).get("standard_val_loss") for r in (a, s))
            diff = f"{lk - la:+.4f} nats" if la is not None and lk is not None else "-"
            lines.append(
                f"({key}) vs (a): finished trials {n} vs {base} = {ratio} (target >= x2 for (c)); "
                f"best standard val loss {diff} (target <= 0)"
            )
    return lines
