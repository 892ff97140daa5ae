"""charrnn-train -m resume=<sweep dir>: a killed sweep continues to the same result as an uninterrupted
one.

Under the basic launcher the killed sweep is a real process forked from the test's worker (tests/forked.py)
and the reference and the resumes run in this process; sweeps whose launcher starts processes (joblib,
submitit) are the console script itself, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    TINY_RUN,
    WITH_HELPERS,
    cli_in_process,
    made_once,
    popen_cli,
    tensorboard_history,
    trained_only,
    write_corpus,
)
from forked import run_forked

TRAIN = str(Path(sys.executable).parent / "charrnn-train")
SWEEP = [*TINY_RUN, "data=text", "seed=1,2,3,4"]

pytestmark = pytest.mark.slow  # real sweeps, killed and resumed: tens of seconds each


def train_here(args: list[str], cwd: Path, corpus: Path) -> subprocess.CompletedProcess:
    """A basic-launcher sweep (or its resume), in this process."""
    return cli_in_process([*args, f"data.path={corpus}"], cwd=cwd, env=WITH_HELPERS, timeout=600)


def train(args: list[str], cwd: Path, corpus: Path) -> subprocess.CompletedProcess:
    """The console script in a new process (a sweep whose launcher starts processes of its own)."""
    env = {**os.environ, **WITH_HELPERS}
    return subprocess.run(
        [TRAIN, *args, f"data.path={corpus}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )


def jobs(sweep: Path) -> list[Path]:
    return sorted(
        (d for d in sweep.iterdir() if (d / ".hydra").is_dir()), key=lambda d: int(d.name.split("_")[0])
    )


def result(job: Path) -> tuple:
    metrics = json.loads((job / "metrics.json").read_text())
    return metrics["best_val_bpc"], metrics.get("test"), tensorboard_history(job)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One path for every worker: the reference's recorded config names it."""
    data = made_once(tmp_path_factory, "sweep_resume_data", write_corpus)
    return data / "tiny.txt"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """One uninterrupted sweep, shared by the tests (of every worker: made_once)."""

    def make(cwd: Path) -> None:
        done = train_here(
            [
                "-m",
                *SWEEP,
                "hydra.sweep.dir=sweep",
                "hydra.job.config.override_dirname.exclude_keys=[data.path,resume]",
            ],
            cwd,
            corpus,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    return made_once(tmp_path_factory, "sweep_resume_reference", make) / "sweep"


@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_killed_sweep_resumes_to_the_uninterrupted_result(
    tmp_path: Path, corpus: Path, reference: Path, launcher: str
) -> None:
    extra = [] if launcher == "basic" else ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]
    kill = [
        "+callbacks.kill._target_=kill_sweep.KillSweepAt",
        "+callbacks.kill.job=2",
        "+callbacks.kill.step=12",
        f"+callbacks.kill.marker={tmp_path / 'killed'}",
        "hydra.job.config.override_dirname.exclude_keys=[data.path,resume,callbacks.kill._target_,callbacks.kill.job,"
        "callbacks.kill.step,callbacks.kill.marker]",
    ]
    args = ["-m", *SWEEP, *extra, *kill, "hydra.sweep.dir=sweep"]
    if launcher == "basic":  # the callback SIGKILLs the sweep's process group: its own session
        args += [f"data.path={corpus}"]
        killed = run_forked(args, tmp_path, env=WITH_HELPERS, timeout=600, start_new_session=True)
    else:
        killed = train(args, tmp_path, corpus)
    assert killed.returncode == -9, killed.stderr[-3000:]
    sweep = tmp_path / "sweep"
    statuses = [
        json.loads((j / "run.json").read_text())["status"] if (j / "run.json").is_file() else None
        for j in jobs(sweep)
    ]
    # Done jobs, one mid-run; job 3 never started (basic: no dir; parallel: the other slot's job may be
    # anywhere).
    assert statuses[:2] == ["done", "done"] or launcher == "parallel", statuses
    assert statuses[2] == "running" and len(statuses) <= 4, statuses
    resume = train_here if launcher == "basic" else train
    resumed = resume(["-m", f"resume={sweep}"], tmp_path, corpus)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(jobs(sweep)) == 4 and not list(sweep.glob("*/checkpoints/*-v1.ckpt"))
    for got, want in zip(jobs(sweep), jobs(reference)):
        (best, test, history), (best_want, test_want, history_want) = result(got), result(want)
        assert (best, test) == (best_want, test_want), got.name
        if json.loads((got / "metrics.json").read_text())["train_chars"] == 0:
            # Killed after its last checkpoint, before its test (the other slot's job, under parallel): the
            # resume only tested, and TensorBoard puts the test one step earlier (docs/failures.md).
            assert trained_only(history) == trained_only(history_want), got.name
        else:
            assert history == history_want, got.name
    again = resume(["-m", f"resume={sweep}"], tmp_path, corpus)
    assert again.returncode == 0 and "nothing left to train" in again.stderr, again.stderr[-2000:]


def test_resume_of_a_dir_that_is_no_sweep_is_one_sentence(tmp_path: Path, corpus: Path) -> None:
    done = train_here(["-m", f"resume={tmp_path}"], tmp_path, corpus)
    assert done.returncode == 2 and "not a sweep dir" in done.stderr and "Traceback" not in done.stderr


def test_identity_override_refused_and_extension_trains_further(
    tmp_path: Path, corpus: Path, reference: Path
) -> None:
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(reference, sweep)
    refused = train_here(["-m", f"resume={sweep}", "seed=9"], tmp_path, corpus)
    assert refused.returncode == 2 and "would change which jobs" in refused.stderr, refused.stderr[-2000:]
    extended = train_here(["-m", f"resume={sweep}", "trainer.max_steps=30"], tmp_path, corpus)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert [d.name for d in jobs(sweep)] == [d.name for d in jobs(reference)]
    for job in jobs(sweep):
        assert json.loads((job / "run.json").read_text())["global_step"] == 30
        assert (job / ".hydra" / "config.yaml").read_text() == (
            reference / job.name / ".hydra" / "config.yaml"
        ).read_text()


def processes_of(marker: str) -> list[int]:
    """Live processes that carry ``CHARRNN_TEST_SWEEP=<marker>`` in their environment: a sweep and all
    it started (workers, submitit's controllers, loky's resource tracker)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"CHARRNN_TEST_SWEEP={marker}".encode() in environ.read_bytes().split(b"\0"):
                stat = (environ.parent / "stat").read_text().rpartition(")")[2].split()
                found += [] if stat[0] == "Z" else [int(environ.parent.name)]
        except OSError:
            continue
    return found


def start_held_sweep(args: list[str], held: list[int], cwd: Path, corpus: Path) -> subprocess.Popen:
    """``charrnn-train -m *args`` in a session of its own, jobs ``held`` held at step 8 until they get a
    signal (tests/helpers/hold_until_stopped.py); every process it starts carries ``CHARRNN_TEST_SWEEP``."""
    hold = [
        "+callbacks.hold._target_=hold_until_stopped.HoldUntilStopped",
        f"+callbacks.hold.jobs=[{','.join(map(str, held))}]",
        "+callbacks.hold.step=8",
        f"+callbacks.hold.dir={cwd}",
        "hydra.job.config.override_dirname.exclude_keys=[data.path,resume,callbacks.hold._target_,"
        "callbacks.hold.jobs,callbacks.hold.step,callbacks.hold.dir]",
    ]
    return popen_cli(
        ["-m", *args, *hold, "hydra.sweep.dir=sweep", f"data.path={corpus}"],
        cwd,
        env={**WITH_HELPERS, "CHARRNN_TEST_SWEEP": str(cwd)},
        start_new_session=True,
    )


@pytest.mark.parametrize("launcher", ["parallel", "processes"])
def test_sigterm_to_the_sweep_process_stops_every_job_and_resume_finishes_it(
    tmp_path: Path, corpus: Path, reference: Path, launcher: str
) -> None:
    """``kill <sweep pid>`` (the process, not its group) under a launcher whose jobs are other processes:
    each running job saves and stops, the sweep says so in one line and exits 143, no process of it is
    left, and ``-m resume=`` continues it to the uninterrupted sweep's results."""
    # joblib: 2 slots of 4 jobs, 0 and 1 held; submitit's local executor starts every job at once: 2 jobs.
    held, args = [0, 1], (SWEEP if launcher == "parallel" else [*TINY_RUN, "data=text", "seed=1,2"])
    extra = [f"hydra/launcher={launcher}", "hydra.launcher.n_jobs=2" if launcher == "parallel" else ""]
    sweep = start_held_sweep([*args, *filter(None, extra)], held, tmp_path, corpus)
    try:
        deadline = time.monotonic() + 180
        while not all((tmp_path / f"held_{n}").exists() for n in held):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stderr.read()[-3000:]
            time.sleep(0.1)
        sweep.send_signal(signal.SIGTERM)
        stderr = sweep.communicate(timeout=120)[1]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    ours = [line for line in stderr.splitlines() if line.startswith("charrnn-train:")]
    assert sweep.returncode == 143, stderr[-3000:]
    assert ours == [
        f"charrnn-train: stopped by SIGTERM: {len(held)} running job(s) saved and stopped; "
        f"continue with: charrnn-train -m resume={tmp_path / 'sweep'}"
    ], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    deadline = time.monotonic() + 10  # a process on its way out may take a moment
    while (left := processes_of(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
    sweep_dir = tmp_path / "sweep"
    for num in held:
        (job,) = sweep_dir.glob(f"{num}_*")
        record = json.loads((job / "run.json").read_text())
        assert record["status"] == "stopped" and record["checkpoint"], (job.name, record)
    resumed = train(["-m", f"resume={sweep_dir}"], tmp_path, corpus)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(jobs(sweep_dir)) == (4 if launcher == "parallel" else 2)
    assert not list(sweep_dir.glob("*/checkpoints/*-v1.ckpt"))
    for got, want in zip(jobs(sweep_dir), jobs(reference)):  # seeds 1, 2 (, 3, 4): the reference's jobs
        assert result(got) == result(want), got.name


def test_a_signal_to_a_parallel_sweeps_process_group_spares_its_idle_worker_and_loses_no_job(
    tmp_path: Path, corpus: Path
) -> None:
    """Ctrl-C or ``kill -- -PGID`` reaches every process of a ``hydra/launcher=parallel`` sweep, joblib's
    idle workers too. One that died of it made loky take its pool for broken and SIGKILL the other
    workers, a job saving its stop included: its run.json stayed ``running``, with no checkpoint, and
    the sweep ended in a traceback. Here job 1 is done (its worker idle) while job 0 is held mid-run:
    the idle worker gets SIGTERM alone first (the part of a group signal that broke the pool, without
    its race) and must ignore it; then the whole group gets SIGTERM, and job 0 saves and stops."""
    sweep = start_held_sweep(
        [*TINY_RUN, "data=text", "seed=1,2", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
        [0],
        tmp_path,
        corpus,
    )
    try:
        deadline = time.monotonic() + 180
        held = tmp_path / "held_0"
        while not (list(tmp_path.glob("sweep/1_*/metrics.json")) and held.exists() and held.read_text()):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stderr.read()[-3000:]
            time.sleep(0.1)
        busy = int(held.read_text())
        (idle,) = [
            pid
            for pid in processes_of(str(tmp_path))
            if b"popen_loky" in Path(f"/proc/{pid}/cmdline").read_bytes() and pid != busy
        ]
        while handles_sigterm(idle):  # job 1 still ending: its own stop handler is in place
            assert time.monotonic() < deadline, "job 1's worker never went idle"
            time.sleep(0.05)
        os.kill(idle, signal.SIGTERM)
        time.sleep(1.0)
        assert sweep.poll() is None, sweep.communicate()[1][-3000:]  # no broken pool: the sweep goes on
        os.killpg(sweep.pid, signal.SIGTERM)
        stderr = sweep.communicate(timeout=120)[1]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("charrnn-train:")]
    assert ours == [
        "charrnn-train: stopped by SIGTERM: 1 running job(s) saved and stopped; "
        f"continue with: charrnn-train -m resume={tmp_path / 'sweep'}"
    ], stderr[-3000:]
    statuses = {}
    for job in jobs(tmp_path / "sweep"):
        record = json.loads((job / "run.json").read_text())
        statuses[int(job.name.split("_")[0])] = (record["status"], bool(record.get("checkpoint")))
    assert statuses == {0: ("stopped", True), 1: ("done", False)}, statuses


def handles_sigterm(pid: int) -> bool:
    """Whether a process has a handler of its own for SIGTERM (/proc/<pid>/status, SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False
