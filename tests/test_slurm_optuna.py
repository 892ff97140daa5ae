"""An Optuna search whose trials are SLURM jobs, reporting to a journal file (``journal:///path``) as jobs on
other nodes would on a shared filesystem, on the real one-node cluster of tests/slurm.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import TINY_TEXT, run_cli

optuna = pytest.importorskip("optuna")
from optuna.storages.journal import JournalFileBackend, JournalStorage  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

MAX_STEPS = 12
# The sampler's seed 6 draws lr 0.03, 0.03, 1e-6, 0.03 (TPE's random start-up trials): trials 0 and 1 run
# at once to the end; trial 2, launched when one of them has finished, learns nothing at 1e-6 and the
# median pruner stops it at its first validation; trial 3 equals trials 0 and 1 and completes.
SEARCH = [
    "hparams_search=optuna",
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
    "hydra.sweeper.study_name=tiny",
    "hydra.sweeper.sampler.seed=6",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=1",
    "optim.lr=choice(0.03,0.000001)",
    "model.hidden_size=16",
    "model.cell=rnn",
    "data=text",
    "data.seq_len=16",
    "data.batch_size=4",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=3",
    "trainer.enable_progress_bar=false",
    "sample.length=20",
]


@pytest.mark.slurm
def test_slurm_trials_report_to_a_journal_file_and_are_pruned(slurm_cluster, tmp_path, capsys):
    corpus, journal = tmp_path / "tiny.txt", tmp_path / "shared" / "study.log"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    args = [*SEARCH, f"data.path={corpus}", f"hydra.sweeper.storage=journal://{journal}"]
    started = time.monotonic()
    proc = run_cli([*args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, timeout=480)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(str(journal))))
    states = {t.number: t.state for t in study.trials}
    assert states == {
        0: TrialState.COMPLETE,
        1: TrialState.COMPLETE,
        2: TrialState.PRUNED,
        3: TrialState.COMPLETE,
    }
    for trial in study.trials:  # each reported from inside its SLURM job, at its global steps
        record = json.loads((tmp_path / "sweep" / str(trial.number) / "run.json").read_text())
        assert record["slurm"]["job"] and record["overrides"][-1].startswith("++callbacks.optuna_pruning=")
        if trial.state == TrialState.PRUNED:
            assert sorted(trial.intermediate_values) == [3] and trial.user_attrs["pruned_at_step"] == 3
            assert record["status"] == "pruned" and record["global_step"] == 3
        else:
            assert sorted(trial.intermediate_values) == [3, 6, 9, 12]
            assert record["status"] == "done" and trial.value == pytest.approx(record["best_val_bpc"])
    assert Path(tmp_path / "sweep" / "optimization_results.yaml").is_file()
    with capsys.disabled():
        print(f"\n[slurm] Optuna search, 4 SLURM trials 2 at a time, journal storage: {took:.0f} s wall")
