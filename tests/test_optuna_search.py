"""charrnn's Optuna sweeper (hydra_plugins.charrnn_optuna_sweeper): pruning, resume, no batch barrier.

A real study on disk (SQLite or Optuna's journal file), tiny models. Searches under Hydra's basic launcher
call ``charrnn-train`` in this process; a killed search (forked from the worker) and the parallel (joblib)
one are real processes.
"""

from __future__ import annotations

import csv
import json
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import cli_in_process, run_cli, write_corpus
from forked import fork_cli

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

pytestmark = pytest.mark.slow
MAX_STEPS = 12
# Plain values on the command line fix a param of hparams_search/optuna.yaml; a sweep replaces its range.
SEARCH = [
    "-m",
    "hparams_search=optuna",
    "data=text",
    "model.hidden_size=16",
    "model.cell=rnn",
    "data.seq_len=16",
    "data.batch_size=4",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=3",
    "trainer.enable_progress_bar=false",
    "sample.length=20",
    "hydra.sweeper.study_name=tiny",
    "hydra.sweeper.sampler.seed=0",
]
LR = "optim.lr=tag(log, interval(1e-4, 0.1))"


def search_args(root: Path, *more: str) -> list[str]:
    corpus = write_corpus(root)
    return [
        *SEARCH,
        f"data.path={corpus}",
        f"hydra.sweeper.storage=sqlite:///{root / 'study.db'}",
        f"hydra.sweep.dir={root / 'sweep'}",
        *more,
    ]


def load_study(root: Path) -> optuna.study.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{root / 'study.db'}")


def run_json(root: Path, trial: int) -> dict:
    return json.loads((root / "sweep" / str(trial) / "run.json").read_text())


def test_median_pruner_stops_bad_trials_after_their_step_with_a_checkpoint(tmp_path):
    import torch

    args = search_args(
        tmp_path,
        LR,
        f"trainer.max_steps={MAX_STEPS}",
        "hydra.sweeper.n_trials=8",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
    )
    proc = cli_in_process(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_study(tmp_path).trials
    assert len(trials) == 8 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "no trial was pruned"
    for trial in pruned:
        record = run_json(tmp_path, trial.number)  # job number = trial number
        step = max(trial.intermediate_values)  # the last step it reported, where the pruner stopped it
        assert record["status"] == "pruned" and record["global_step"] == step < MAX_STEPS
        assert record["best_val_bpc"] == pytest.approx(min(trial.intermediate_values.values()), rel=1e-5)
        last = torch.load(record["checkpoint"], map_location="cpu", weights_only=False)
        assert last["global_step"] == step  # the stop finished its step and saved it
        assert not (tmp_path / "sweep" / str(trial.number) / "metrics.json").exists()  # never tested as done
    report = cli_in_process([str(tmp_path / "sweep")], cwd=tmp_path, script="charrnn-report")
    assert report.returncode == 0, report.stderr[-3000:]
    with open(tmp_path / "sweep" / "report.csv", newline="") as f:
        rows = {int(row["job"]): row for row in csv.DictReader(f)}
    assert {n for n, row in rows.items() if row["status"] == "pruned"} == {t.number for t in pruned}
    assert "callbacks.optuna_pruning" not in "".join(rows[0])  # the trial's channel is no column
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            record = run_json(tmp_path, trial.number)
            assert record["status"] == "done" and record["global_step"] == MAX_STEPS
            assert sorted(trial.intermediate_values) == [3, 6, 9, 12]  # every validation, at its global step
            assert trial.value == pytest.approx(record["best_val_bpc"])
    # A pruned trial continued by hand trains to the end; the study keeps it PRUNED.
    first = tmp_path / "sweep" / str(pruned[0].number)
    resumed = cli_in_process([f"resume={first}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((first / "run.json").read_text())
    assert record["status"] == "done" and record["global_step"] == MAX_STEPS
    assert load_study(tmp_path).trials[pruned[0].number].state == TrialState.PRUNED


def test_without_a_pruner_every_trial_completes(tmp_path):
    proc = cli_in_process(
        search_args(
            tmp_path,
            LR,
            f"trainer.max_steps={MAX_STEPS}",
            "hydra.sweeper.n_trials=4",
            "hydra/sweeper/pruner=none",
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(run_json(tmp_path, t.number)["global_step"] == MAX_STEPS for t in trials)


def test_a_killed_search_resumes_to_n_trials_and_reruns_the_killed_trial_first(tmp_path):
    args = search_args(
        tmp_path,
        LR,
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/pruner=none",
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
    )
    with open(tmp_path / "first.log", "w") as log:
        first = fork_cli(args, cwd=tmp_path, stdout=log, stderr=log)
        deadline = time.time() + 240
        while not (tmp_path / "sweep" / "1" / "run.json").is_file():  # trial 1 is under way
            assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()[
                -3000:
            ]
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed = load_study(tmp_path).trials[1]
    assert killed.state == TrialState.RUNNING

    again = cli_in_process(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load_study(tmp_path).trials
    assert trials[1].state == TrialState.FAIL and "killed" in trials[1].user_attrs["failed_because"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == killed.params  # its params, first
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3 and len(trials) == 4


def test_parallel_search_has_no_batch_barrier(tmp_path):
    """One long trial and four short ones, two at a time: the short ones follow each other in the
    other slot while the long one runs, each starting as soon as the one before it ended."""
    long_steps, short_steps = 400, 3
    storage = f"journal://{tmp_path / 'study.log'}"  # Optuna's journal file, as on a shared filesystem
    from charrnn.core.studies import open_storage

    study = optuna.create_study(study_name="tiny", storage=open_storage(storage))
    for steps in (long_steps, short_steps, short_steps, short_steps, short_steps):
        study.enqueue_trial({"trainer.max_steps": steps})
    started = datetime.now().astimezone()
    proc = run_cli(
        search_args(
            tmp_path,
            "hydra.sweeper.n_trials=5",
            "hydra/sweeper/pruner=none",
            f"hydra.sweeper.storage={storage}",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            "optim.lr=0.003",
            f"trainer.max_steps=choice({short_steps},{long_steps})",
        ),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=open_storage(storage)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    # The jobs reported each validation to the journal file, at its global step.
    # every third step, and the last (Lightning validates when max_steps ends the run)
    assert sorted(trials[0].intermediate_values) == sorted({*range(3, long_steps + 1, 3), long_steps})
    assert all(sorted(t.intermediate_values) == [3] for t in trials[1:])
    span = {
        n: (
            datetime.fromisoformat(run_json(tmp_path, n)["started"]),
            datetime.fromisoformat(run_json(tmp_path, n)["ended"]),
        )
        for n in range(5)
    }
    assert run_json(tmp_path, 0)["global_step"] == long_steps
    startup = max(span[0][0], span[1][0]) - started  # cold: a worker process, imports, Hydra, data
    long_start, long_end = span[0]
    shorts = sorted((span[n] for n in range(1, 5)), key=lambda s: s[0])
    inside = [s for s in shorts if long_start <= s[0] and s[1] <= long_end]
    assert len(inside) >= 2, (span, "short trials waited for the long one: a batch barrier")
    for before, after in zip(shorts, shorts[1:]):
        if before[1] <= long_end:  # the long trial holds the other slot: this one's slot was free
            assert after[0] - before[1] <= startup, (span, startup)


def test_a_pruner_without_a_storage_the_trials_can_reach_is_refused_in_one_sentence(tmp_path):
    args = search_args(tmp_path, "hydra.sweeper.storage=null", "hydra.sweeper.n_trials=1")
    proc = cli_in_process(args, cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "sweep" / "0").exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("charrnn-train: error: hydra.sweeper.pruner needs a storage")
