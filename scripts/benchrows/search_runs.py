"""One configuration of the search benchmark: a real ``charrnn-train -m hparams_search=optuna`` sweep in
its own work dir and study, stopped by SIGTERM at its wall-clock deadline; then its trials, read back
from their run.json files, and its best complete trial scored by ``charrnn-eval split=standard_val``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import last_line, note
from .search_idle import Span, precise_span

BIN = Path(sys.executable).parent  # charrnn-train and charrnn-eval of this interpreter's environment


@dataclass(frozen=True)
class Config:
    key: str  # a, b, c: also the work dir's name
    label: str
    overrides: tuple[str, ...]
    n_jobs: int


@dataclass
class Outcome:
    """What one configuration's sweep did in its budget."""

    config: Config
    command: list[str]
    spans: list[Span]  # every trial that wrote a run.json, in launch order
    launched: float  # when the sweep process started (epoch seconds)
    deadline: float  # when it was sent SIGTERM, or ended on its own
    killed: bool
    exit_code: int | None
    load: list[float] = field(default_factory=list)  # 1-minute load averages sampled while it ran
    best: dict[str, Any] | None = None  # the best complete trial: number, val bpc, params, standard val

    def count(self, *statuses: str) -> int:
        return sum(s.status in statuses for s in self.spans)

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.spans)


def child_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the sweep's whole process group (the sweep and its joblib workers): each trial in flight
    finishes its step, saves last.ckpt and records run.json status ``stopped``. SIGKILL after ``grace``."""
    pgid = proc.pid  # start_new_session: the group is the sweep's own
    os.killpg(pgid, signal.SIGTERM)
    until = time.time() + grace
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    while group_alive(pgid) and time.time() < until:
        time.sleep(0.2)
    if group_alive(pgid):
        note(f"sweep group {pgid} still running {grace:.0f} s after SIGTERM: SIGKILL")
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def finished_trials(sweep: Path) -> int:
    """Trials whose run.json says they ended done or pruned, so far."""
    count = 0
    for path in sweep.glob("*/run.json") if sweep.is_dir() else []:
        try:
            count += json.loads(path.read_text()).get("status") in ("done", "pruned")
        except (OSError, ValueError):
            pass
    return count


def run_sweep(
    config: Config, base: list[str], work: Path, budget: float, threads: int, at_least: int = 0
) -> Outcome:
    """Run ``charrnn-train -m`` with ``base`` + the config's overrides in ``work`` for ``budget`` seconds,
    or longer until ``at_least`` trials have finished (smoke runs on a loaded machine)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    command = [
        str(BIN / "charrnn-train"),
        "-m",
        *base,
        f"hydra.sweeper.storage=sqlite:///{work / 'study.db'}",
        f"hydra.sweep.dir={work / 'sweep'}",
        *config.overrides,
    ]
    (work / "command.txt").write_text(" ".join(f"'{c}'" if " " in c else c for c in command) + "\n")
    note(f"({config.key}) {config.label}: {budget:.0f} s from now, log in {work / 'sweep.log'}")
    load: list[float] = []
    with open(work / "sweep.log", "w") as log:
        launched = time.time()
        proc = subprocess.Popen(
            command,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(threads),
            start_new_session=True,
        )
        while proc.poll() is None and (
            time.time() < launched + budget or finished_trials(work / "sweep") < at_least
        ):
            load.append(os.getloadavg()[0])
            time.sleep(max(1.0 if at_least else 0.0, min(5.0, launched + budget - time.time())))
        killed = proc.poll() is None
        deadline = time.time()
        if killed:
            stop_group(proc, grace=120)
            note(f"({config.key}) SIGTERM at the deadline: the sweep ended in {time.time() - deadline:.1f} s")
    spans = read_trials(work / "sweep", deadline)
    outcome = Outcome(config, command, spans, launched, deadline, killed, proc.returncode, load)
    if not spans:
        last = last_line((work / "sweep.log").read_text())
        note(f"({config.key}) no trial ran; the sweep's last line: {last}")
    return outcome


def read_trials(sweep: Path, deadline: float) -> list[Span]:
    """The trials' run.json files in launch order (job number = trial number). A trial whose process
    died without ending its record counts as running up to the deadline."""
    spans = []
    dirs = sweep.iterdir() if sweep.is_dir() else []
    for trial in sorted((d for d in dirs if d.name.isdigit()), key=lambda d: int(d.name)):
        path = trial / "run.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        if record.get("ended") and record.get("wall_seconds") is not None:
            start, end = precise_span(record["started"], record["ended"], float(record["wall_seconds"]))
        else:
            start = precise_span(record["started"], record["started"], 0.0)[0]
            end = max(start, deadline)
        status = record.get("status", "?")
        spans.append(Span(int(trial.name), status, start, end, int(record.get("global_step") or 0)))
    return spans


def trial_params(trial: Path) -> dict[str, str]:
    """The trial's sampled values, from Hydra's record of its overrides (less the pruning channel)."""
    import yaml

    lines = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = (line.split("=", 1) for line in lines if "=" in line and "optuna_pruning" not in line)
    return {key.lstrip("+"): value for key, value in pairs}


def score_best(outcome: Outcome, sweep: Path, threads: int) -> None:
    """The search's answer, as Optuna's best_trial: the complete trial with the lowest best val/bpc;
    its best checkpoint scored on the standard split (the corpus's last 10 %) by charrnn-eval."""
    done = [s for s in outcome.spans if s.status == "done"]
    records = {s.number: json.loads((sweep / str(s.number) / "run.json").read_text()) for s in done}
    if not records:
        return
    number = min(records, key=lambda n: records[n]["best_val_bpc"])
    trial = sweep / str(number)
    proc = subprocess.run(
        [str(BIN / "charrnn-eval"), str(trial), "split=standard_val", "--json"],
        capture_output=True,
        text=True,
        env=child_env(threads),
        timeout=600,
    )
    standard = json.loads(proc.stdout.strip().splitlines()[-1])["loss"] if proc.returncode == 0 else None
    if standard is None:
        note(f"({outcome.config.key}) charrnn-eval failed: {last_line(proc.stderr)}")
    outcome.best = {
        "trial": number,
        "val_bpc": records[number]["best_val_bpc"],
        "params": trial_params(trial),
        "standard_val_loss": standard,
    }
