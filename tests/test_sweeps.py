"""Sweeps: Hydra's basic launcher, joblib, submitit (local), Optuna with SQLite, DDP on CPU, DDP in a sweep.

The 2x2 multirun and the sweep with a failing job are run once per session (per pytest worker) and shared
with test_report.py and test_tensorboard_server.py (``shared_sweep`` / ``shared_failing_sweep``). Sweeps
under Hydra's basic launcher call ``charrnn-train`` in this process (its jobs run in the sweep's process);
the launchers that start processes (joblib, submitit) and DDP run as real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from charrnn.core.windows import IGNORE_INDEX, StreamWindows
from charrnn.lit.datamodule import CharDataModule
from conftest import (
    TINY_RUN,
    WITH_HELPERS,
    cli_in_process,
    compose_config,
    only_run_dir,
    read_scalars,
    run_cli,
    write_corpus,
)
from forked import run_forked

# TINY_RUN without the hidden size, which the sweeps choose.
SWEEP_RUN = [o for o in TINY_RUN if not o.startswith("model.hidden_size=")]
_SHARED: dict[str, Any] = {}


def sweep_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs" / "multirun").glob("*/*") if p.is_dir())


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a sweep, in job-number order."""
    jobs = [p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    return sorted(jobs, key=lambda p: int(p.name.split("_")[0]))


def shared_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real ``charrnn-train -m model.hidden_size=16,32 optim.lr=1e-3,3e-3`` per test session."""
    if "sweep" not in _SHARED:
        root = tmp_path_factory.mktemp("sweep2x2")
        corpus = write_corpus(root)
        proc = cli_in_process(
            [
                "-m",
                "data=text",
                f"data.path={corpus}",
                *SWEEP_RUN,
                "model.hidden_size=16,32",
                "optim.lr=1e-3,3e-3",
            ],
            cwd=root,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (sweep,) = sweep_dirs(root)
        _SHARED["sweep"] = (sweep, proc)
    return _SHARED["sweep"]


def shared_failing_sweep(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """A two-job sweep whose second job has an invalid cell."""
    if "failing" not in _SHARED:
        root = tmp_path_factory.mktemp("failing")
        corpus = write_corpus(root)
        proc = cli_in_process(
            [
                "-m",
                "data=text",
                f"data.path={corpus}",
                *TINY_RUN,
                "trainer.max_steps=10",
                "model.cell=gru,bogus",
            ],
            cwd=root,
        )
        (sweep,) = sweep_dirs(root)
        _SHARED["failing"] = (sweep, proc)
    return _SHARED["failing"]


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    return shared_sweep(tmp_path_factory)[0]


@pytest.fixture(scope="session")
def failing(tmp_path_factory):
    return shared_failing_sweep(tmp_path_factory)


# --- fast -------------------------------------------------------------------------------------


def test_stream_windows_ranks_split_the_streams_of_one_global_batch():
    tokens = torch.arange(203)
    whole = StreamWindows(tokens, streams=8, seq_len=8)
    ranks = [StreamWindows(tokens, streams=4, seq_len=8, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)  # every rank steps the same number of batches
    for k in range(len(whole)):
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), whole[k][0])
        assert torch.equal(torch.cat([ranks[0][k][1], ranks[1][k][1]]), whole[k][1])
    targets = torch.cat([torch.cat([ds[k][1] for k in range(len(ds))], dim=1) for ds in ranks])
    real = targets[targets != IGNORE_INDEX]
    assert torch.equal(torch.sort(real).values, tokens[1:])  # together: every target exactly once


def test_one_reading_of_trainer_devices():
    from charrnn.cli.devices import device_request

    def count(trainer: dict, gpus: int = 0, **kw) -> int:
        return device_request(OmegaConf.create(trainer), gpus, **kw).count

    assert count({"accelerator": "cpu", "devices": 2}) == 2
    assert count({"accelerator": "cpu", "devices": 1}) == 1
    assert count({"accelerator": "gpu", "devices": [0, 3]}) == 2
    assert count({"accelerator": "gpu", "devices": "0,1,2"}) == 3
    assert count({"accelerator": "cpu", "devices": "auto"}) == 1
    assert count({"accelerator": "gpu", "devices": -1}, gpus=4) == 4  # every GPU of the node
    assert count({"accelerator": "auto", "devices": "auto"}, gpus=8) == 8
    assert not device_request(OmegaConf.create({"accelerator": "auto", "devices": 1}), 0).cuda
    assert device_request(
        OmegaConf.create({"accelerator": "auto", "devices": 1}), 2, auto_uses_cuda=True
    ).cuda


def test_launcher_search_and_trainer_configs_compose(tmp_path):
    import hydra

    def composed(*overrides: str):
        return compose_config(list(overrides), tmp_path, hydra=True)

    slurm = composed("hydra/launcher=slurm").hydra.launcher
    # GPUs follow the trainer (null), no memory request: the preset schedules on any node (issue 11)
    assert slurm._target_.endswith("SlurmLauncher") and (
        slurm.gpus_per_node,
        slurm.tasks_per_node,
        slurm.nodes,
    ) == (None, 1, 1)
    assert slurm.mem_gb is None
    assert {"partition", "timeout_min", "cpus_per_task", "mem_gb", "array_parallelism"} <= set(slurm)
    parallel = composed("hydra/launcher=parallel", "hydra.launcher.n_jobs=3").hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 3
    assert composed("hydra/launcher=processes").hydra.launcher._target_.endswith(
        "submitit_launcher.LocalLauncher"
    )

    search = composed("hparams_search=optuna", "seed=7")
    sweeper = search.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.charrnn_optuna_sweeper.sweeper.CharrnnOptunaSweeper"
    assert (
        sweeper.sampler._target_ == "optuna.samplers.TPESampler"
        and sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    )
    assert (
        sweeper.sampler.seed == 7
        and str(sweeper.direction).endswith("minimize")
        and sweeper.storage.startswith("sqlite:///")
    )
    assert (
        set(sweeper.params) == {"optim.lr", "model.hidden_size", "model.cell"}
        and search.hydra.mode.name == "MULTIRUN"
    )

    trainer = hydra.utils.instantiate(
        composed("trainer=ddp_cpu").trainer, logger=False, enable_checkpointing=False
    )
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2
    assert trainer.strategy._process_group_backend == "gloo"
    for option, precision in (("gpu_bf16", "bf16-mixed"), ("ddp", "32-true")):
        cfg = composed(f"trainer={option}").trainer
        assert (cfg.accelerator, cfg.precision) == ("gpu", precision)
    assert composed("trainer=ddp").trainer.use_distributed_sampler is False


# --- real sweeps ------------------------------------------------------------------------------


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_dir_and_tensorboard_run(sweep):
    jobs = job_dirs(sweep)
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1", "2", "3"]
    assert (sweep / "multirun.yaml").is_file()
    seen = set()
    for job in jobs:
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        # <num>_<overrides>: the directory says which values the job ran with (data.path excluded).
        assert (
            f"model.hidden_size={cfg.model.hidden_size}" in job.name
            and f"optim.lr={cfg.optim.lr}" in job.name
        )
        assert "data.path" not in job.name
        seen.add((cfg.model.hidden_size, cfg.optim.lr))
        metrics = json.loads((job / "metrics.json").read_text())
        scalars = read_scalars(job / "tensorboard")
        assert metrics["best_val_bpc"] == pytest.approx(min(v for _, v in scalars["val/bpc"]), rel=1e-6)
        assert [s for s, _ in scalars["val/bpc_best"]] == [9, 19]
    assert seen == {(16, 1e-3), (16, 3e-3), (32, 1e-3), (32, 3e-3)}


@pytest.mark.slow
def test_a_failing_job_does_not_stop_or_lose_the_others(failing):
    sweep, proc = failing
    assert proc.returncode == 1
    # One line for the failed job, naming it: no traceback, no Hydra line before it, not printed twice.
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("charrnn-train:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert (
        lines[0].startswith("charrnn-train: error: unknown model.cell='bogus'") and "sweep job 1" in lines[0]
    )
    good, bad = job_dirs(sweep)
    assert json.loads((good / "metrics.json").read_text())["global_step"] == 10
    assert not (bad / "metrics.json").exists()
    assert (bad / "error.txt").read_text().startswith("charrnn-train: error: unknown model.cell='bogus'")


@pytest.mark.slow
def test_an_unexpected_error_is_recorded_too(tmp_path, corpus):
    proc = cli_in_process(
        ["-m", "data=text", f"data.path={corpus}", *TINY_RUN, "+trainer.bogus_option=1"], cwd=tmp_path
    )
    assert proc.returncode == 1
    (sweep,) = sweep_dirs(tmp_path)
    (job,) = job_dirs(sweep)
    first, *rest = (job / "error.txt").read_text().splitlines()
    assert first.startswith("charrnn-train: failed: InstantiationException:") and "bogus_option" in first
    assert any("Traceback" in line for line in rest)
    report = cli_in_process([str(sweep)], cwd=tmp_path, script="charrnn-report")
    assert report.returncode == 0 and "job 0 failed: InstantiationException:" in report.stdout, (
        report.stdout + report.stderr
    )


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path, corpus):
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=2",
            "data=text",
            f"data.path={corpus}",
            *TINY_RUN,
            "data.num_workers=1",
            "optim.lr=1e-3,3e-3",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout
    assert proc.stderr.count("data.num_workers=1 set to 0 under the joblib launcher") == 2
    (sweep,) = sweep_dirs(tmp_path)
    first, second = job_dirs(sweep)
    for job in (first, second):
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 20
        run = json.loads((job / "run.json").read_text())  # each of the 2 jobs got its share of the cores
        assert run["device"]["cpu_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path, corpus):
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=processes",
            "data=text",
            f"data.path={corpus}",
            *TINY_RUN,
            "optim.lr=1e-3,3e-3",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and all(
        json.loads((j / "metrics.json").read_text())["global_step"] == 20 for j in jobs
    )
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # one submitit job (process) each


@pytest.mark.slow
def test_a_failed_job_in_its_own_process_is_one_readable_line(tmp_path, corpus):
    """Under a launcher whose jobs run in other processes, the sweep's failure is still one sentence."""
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=processes",
            "data=text",
            f"data.path={corpus}",
            *TINY_RUN,
            "trainer.max_steps=10",
            "model.cell=gru,bogus",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("charrnn-train:")]
    assert len(lines) == 1 and len(lines[0]) < 800, proc.stderr[-3000:]  # two long paths, no traceback
    (sweep,) = sweep_dirs(tmp_path)
    good, bad = job_dirs(sweep)
    assert (
        lines[0].startswith("charrnn-train: error: unknown model.cell='bogus'")
        and f"sweep job 1: {bad.resolve()}" in lines[0]
    )
    assert "error.txt" in lines[0] and f"charrnn-report {sweep.resolve()}" in lines[0]
    assert "Traceback" not in proc.stderr and "check the spelling" not in proc.stderr
    assert "Error executing job" not in proc.stderr, proc.stderr[-3000:]
    assert (good / "metrics.json").is_file() and (bad / "error.txt").read_text().startswith(
        "charrnn-train: error: unknown model.cell"
    )


@pytest.mark.slow
def test_optuna_search_is_resumed_from_its_sqlite_study(tmp_path, corpus):
    import optuna

    db = tmp_path / "study.db"
    common = [
        "hparams_search=optuna",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=tiny",
        "data=text",
        f"data.path={corpus}",
        *SWEEP_RUN,
        "trainer.max_steps=10",
        "trainer.val_check_interval=5",
        "model.hidden_size=choice(16,32)",
        "model.cell=choice(rnn,gru)",
    ]
    first = cli_in_process([*common, "hydra.sweeper.n_trials=3"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # Resume: same storage and study name, up to 4 finished trials; a new sampler seed so the random
    # start-up trials are new ones.
    again = cli_in_process(
        [*common, "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=2"], cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert {t.params["model.cell"] for t in study.trials} <= {"rnn", "gru"}
    assert all(3e-4 <= t.params["optim.lr"] <= 1e-2 for t in study.trials)
    sweeps = sweep_dirs(tmp_path)
    bests = [
        json.loads((j / "metrics.json").read_text())["best_val_bpc"] for s in sweeps for j in job_dirs(s)
    ]
    assert len(sweeps) == 2 and len(bests) == 4
    assert sorted(t.value for t in study.trials) == pytest.approx(
        sorted(bests)
    )  # each trial's value is its run's best val/bpc
    results = OmegaConf.load(sweeps[-1] / "optimization_results.yaml")
    assert results.best_value == pytest.approx(min(bests))


@pytest.mark.slow
def test_ddp_cpu_run_writes_one_run_dir_and_covers_the_val_split_once(tmp_path, corpus):
    # Rank 0 forked from this worker (tests/forked.py); Lightning starts rank 1 as the console script.
    proc = run_forked(["trainer=ddp_cpu", "data=text", f"data.path={corpus}", *TINY_RUN], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path)  # rank 1 reused rank 0's directory
    assert not (tmp_path / "outputs" / "multirun").exists()
    assert proc.stdout.count("run dir:") == 1  # rank 0 alone prints the summary
    assert (run / "metrics.json").is_file() and (run / "train_ddp_process_1.log").exists()
    event_dirs = {p.parent for p in run.rglob("events.out.tfevents.*")}
    assert event_dirs == {run / "tensorboard"}
    assert "distributed_backend=gloo" in proc.stderr and "MEMBER: 2/2" in proc.stderr

    # Two ranks x data.batch_size=4 streams: the logged val loss is the single-process loss over the
    # same 8 streams of the whole val split, so every target counted exactly once.
    from charrnn.cli.rundir import load_run

    loaded = load_run(run)
    dm = CharDataModule(corpus="text", path=str(corpus), seq_len=16, batch_size=8)
    dm.setup("fit")
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for batch in dm.val_dataloader():
            x, y = dm.on_after_batch_transfer(batch, 0)
            logits, state = loaded.model(x, state)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            count += int((y != IGNORE_INDEX).sum())
    scalars = read_scalars(run / "tensorboard")
    best_step = min(scalars["val/bpc"], key=lambda sv: sv[1])[0]
    assert total / count == pytest.approx(dict(scalars["val/loss"])[best_step], rel=1e-5)
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 20


@pytest.mark.slow
def test_a_signal_to_one_ddp_rank_stops_every_rank_with_that_signal(tmp_path, corpus):
    """SLURM signals each rank itself, and one may reach a step's end before its copy arrives. A rank that
    had none then stopped "by SIGTERM": under the time-limit warning (SIGUSR2) of a 2-task SLURM job, rank 1
    left the requeue to rank 0, which ended the job failed (seen once in CI). Here rank 1 alone gets it."""
    usr2 = ["+callbacks.sig._target_=signal_at.SignalAt", "+callbacks.sig.hook=train_batch"]
    usr2 += ["+callbacks.sig.step=12", f"+callbacks.sig.signum={int(signal.SIGUSR2)}"]
    usr2 += ["+callbacks.sig.rank=1"]
    args = ["trainer=ddp_cpu", "data=text", f"data.path={corpus}", *TINY_RUN, "trainer.max_steps=40", *usr2]
    proc = run_forked(args, cwd=tmp_path, env=WITH_HELPERS)
    assert proc.returncode == 128 + signal.SIGUSR2, proc.stderr[-3000:]  # rank 0's exit: it got no signal
    record = json.loads((only_run_dir(tmp_path) / "run.json").read_text())
    assert (record["status"], record["stopped_by"]) == ("stopped", "SIGUSR2"), record
    assert record["checkpoint"] and 12 <= record["global_step"] < 40, record


@pytest.mark.slow
def test_ddp_inside_a_sweep_is_refused_clearly(tmp_path, corpus):
    proc = run_forked(
        ["-m", "trainer=ddp_cpu", "data=text", f"data.path={corpus}", *TINY_RUN, "optim.lr=1e-3,3e-3"],
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "charrnn-train: error" in line]
    assert len(lines) == 1 and "without -m" in lines[0] and "hydra/launcher=slurm" in lines[0], proc.stderr[
        -2000:
    ]
    assert "Traceback" not in proc.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert [p.name.split("_")[0] for p in job_dirs(sweep)] == [
        "0"
    ]  # stopped at the first job, before training
    assert not (tmp_path / "outputs" / "runs").exists()  # no rank re-ran the command line
    assert not any(p.name == "metrics.json" for p in sweep.rglob("*"))
    # No process of this sweep is left behind.
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(tmp_path) in cmdline.read_bytes().decode(errors="replace"):
                leftovers.append(cmdline.parent.name)
        except OSError:
            continue
    assert leftovers == []
