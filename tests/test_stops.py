"""Signals outside the training steps: during the final test, before training starts (a corpus read
that blocks), and while a sweep job waits for a device slot. Each ends in one line with 128 + N, and
run.json says ``stopped``; a stop in the test is finished by ``resume=``. The runs that get the signal are
real processes: forked from the test's worker (tests/forked.py), and one (Ctrl-C in the final test) the
console script run as a user runs it; the runs around them call ``charrnn-train`` in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY_RUN, WITH_HELPERS, cli_in_process, only_run_dir, run_cli
from forked import fork_cli, run_forked

pytestmark = pytest.mark.slow


def signal_in_test(signum: int) -> list[str]:
    """Overrides that make the run send ``signum`` to itself as its final test starts its first batch."""
    return [
        "+callbacks.kill._target_=signal_at.SignalAt",
        "+callbacks.kill.hook=test_batch",
        f"+callbacks.kill.signum={signum}",
    ]


def test_sigterm_in_the_final_test_stops_and_a_resume_finishes_the_test(tmp_path, corpus):
    base = ["data=text", f"data.path={corpus}", *TINY_RUN]
    whole = cli_in_process([*base, "hydra.run.dir=whole"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    proc = run_forked(
        [*base, "hydra.run.dir=cut", *signal_in_test(signal.SIGTERM)], cwd=tmp_path, env=WITH_HELPERS
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert (
        "stopped by SIGTERM at step 20" in lines[-1]
        and "resume=" in lines[-1]
        and "Traceback" not in proc.stderr
    )
    cut = tmp_path / "cut"
    record = json.loads((cut / "run.json").read_text())
    assert (
        record["status"] == "stopped" and record["global_step"] == 20 and not (cut / "metrics.json").exists()
    )

    resumed = cli_in_process([f"resume={cut}", "+callbacks.kill.hook=none"], cwd=tmp_path, env=WITH_HELPERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    finished = json.loads((cut / "metrics.json").read_text())
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert finished["test"] == expected["test"] and finished["final"] == expected["final"]
    assert finished["best_val_bpc"] == expected["best_val_bpc"] and finished["global_step"] == 20
    assert json.loads((cut / "run.json").read_text())["status"] == "done"


def test_ctrl_c_in_the_final_test_is_not_ignored(tmp_path, corpus):
    """The console script itself, exec'd as a user's shell does: the signal exit path end to end."""
    proc = run_cli(
        ["data=text", f"data.path={corpus}", *TINY_RUN, *signal_in_test(signal.SIGINT)],
        cwd=tmp_path,
        env=WITH_HELPERS,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 130 and "stopped by SIGINT at step 20" in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert json.loads((only_run_dir(tmp_path) / "run.json").read_text())["status"] == "stopped"


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def blocked_opening_a_fifo(pid: int) -> bool:
    """Whether the process sleeps in the kernel's FIFO open, waiting for a writer."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip() in ("wait_for_partner", "fifo_open")
    except OSError:
        return False


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_a_run_blocked_reading_its_corpus(tmp_path, signum, code):
    """A FIFO with no writer blocks the corpus read forever: the signal must still end the run, at once."""
    if not Path("/proc/self/wchan").exists():
        pytest.skip("needs /proc/<pid>/wchan to see where the process blocks")
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    proc = fork_cli(["data=text", f"data.path={fifo}", *TINY_RUN], cwd=tmp_path, stdout=subprocess.PIPE)
    try:
        wait_until(lambda: blocked_opening_a_fifo(proc.pid) or proc.poll() is not None)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, stderr[-2000:]
    assert (
        f"stopped by {signal.Signals(signum).name} before training started" in lines[0]
        and "Traceback" not in stderr
    )
    assert json.loads((only_run_dir(tmp_path) / "run.json").read_text())["status"] == "stopped"


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_a_sweep_job_waiting_for_a_device_slot(tmp_path, corpus, signum, code):
    from charrnn.cli.lease import hold_slot

    locks = tmp_path / "locks"
    args = [
        "-m",
        f"device_lease.lock_dir={locks}",
        "device_lease.pool=[0]",
        "data=text",
        f"data.path={corpus}",
        *TINY_RUN,
        "seed=1",
    ]
    with hold_slot([0], 1, locks, "the test"):  # the only slot is taken: the job waits
        proc = fork_cli(args, cwd=tmp_path, stdout=subprocess.PIPE)
        try:
            waiting = ""
            while "waiting for one" not in waiting:
                line = proc.stderr.readline()
                assert line, f"the job ended without waiting (exit {proc.wait()})"
                waiting += line
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    lines = stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, stderr[-2000:]
    assert (
        f"stopped by {signal.Signals(signum).name} before training started" in lines[0]
        and "Traceback" not in stderr
    )
    (job,) = [p.parent for p in (tmp_path / "outputs" / "multirun").glob("*/*/*/run.json")]
    assert json.loads((job / "run.json").read_text())["status"] == "stopped"
    report = cli_in_process([str(job.parent)], cwd=tmp_path, script="charrnn-report")
    assert report.returncode == 0 and "stopped" in report.stdout and "running" not in report.stdout, (
        report.stdout + report.stderr
    )


@pytest.mark.parametrize("masked", [False, True], ids=["wrapped", "masked"])
def test_a_signal_while_hydra_builds_a_callback_stops_the_sweep_not_fails_the_job(tmp_path, corpus, masked):
    """Hydra wraps what a constructor raises (InstantiationException): a stop raised there by the signal
    handler is still a stop. ``masked``: a library's failing cleanup raises its own error in the stop's
    place (OmegaConf did, while merging the Trainer's callbacks: a SIGTERM at that moment was recorded as a
    failed trial and the search went on ignoring it). The sweep ends with 143 at its first job, which is
    recorded ``stopped``; a stop taken for a failed job would let the sweep go on and ignore the SIGTERM."""
    args = ["-m", "data=text", f"data.path={corpus}", *TINY_RUN, "seed=1,2", "hydra.sweep.dir=sweep"]
    kill = ["+callbacks.kill._target_=signal_at.SignalAt", "+callbacks.kill.hook=init"]
    kill += [f"+callbacks.kill.signum={int(signal.SIGTERM)}", f"+callbacks.kill.masked={masked}"]
    proc = cli_in_process([*args, *kill], cwd=tmp_path, env=WITH_HELPERS, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "stopped by SIGTERM before training started" in lines[-1] and "Traceback" not in proc.stderr
    (job,) = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]  # job 1 never started
    assert (
        json.loads((job / "run.json").read_text())["status"] == "stopped" and not (job / "error.txt").exists()
    )


def test_a_signal_as_a_sweep_job_ends_done_still_ends_the_sweep(tmp_path, corpus):
    """SIGTERM in the last step of a run with no test split: the run ends done (recorded), and the sweep
    exits 143 at that job instead of going on to the next one as if no signal had come."""
    args = ["-m", "data=text", f"data.path={corpus}", *TINY_RUN, "data.split=[0.8,0.2,0]", "seed=1,2"]
    kill = ["+callbacks.kill._target_=signal_at.SignalAt", "+callbacks.kill.hook=train_batch"]
    kill += ["+callbacks.kill.step=19", f"+callbacks.kill.signum={int(signal.SIGTERM)}"]
    proc = run_forked([*args, *kill, "hydra.sweep.dir=sweep"], cwd=tmp_path, env=WITH_HELPERS)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "SIGTERM came as the run ended" in proc.stderr.strip().splitlines()[-1]
    (job,) = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]  # job 1 never started
    assert json.loads((job / "run.json").read_text())["status"] == "done"


def test_a_signal_in_the_step_a_trial_is_pruned_at_still_ends_the_search(tmp_path, corpus):
    """The stop waits for the step's validation; the pruner stops the trial there (pruned, recorded).
    The search must still end at that trial (143), not go on ignoring the SIGTERM."""
    pytest.importorskip("optuna")
    args = ["-m", "hparams_search=optuna", "data=text", f"data.path={corpus}", *TINY_RUN]
    args += ["trainer.val_check_interval=3", "trainer.log_every_n_steps=3", "hydra.sweeper.n_trials=2"]
    args += [f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}", "hydra.sweep.dir=sweep"]
    # Successive halving that prunes every trial at its first rung (step 3): fewer than 100 reached it.
    args += ["hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=3"]
    args += ["hydra.sweeper.pruner.bootstrap_count=100"]
    kill = ["+callbacks.kill._target_=signal_at.SignalAt", "+callbacks.kill.hook=train_batch"]
    kill += ["+callbacks.kill.step=2", f"+callbacks.kill.signum={int(signal.SIGTERM)}"]
    proc = run_forked([*args, *kill], cwd=tmp_path, env=WITH_HELPERS)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "SIGTERM came as the run ended" in proc.stderr.strip().splitlines()[-1]
    assert [p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()] == ["0"]
    record = json.loads((tmp_path / "sweep" / "0" / "run.json").read_text())
    assert record["status"] == "pruned" and record["global_step"] == 3


def test_a_fifo_corpus_is_read_like_a_pipe(tmp_path):
    """With a writer at the other end, a FIFO is a corpus like any file (read once, to its end)."""
    import hashlib
    import threading

    from conftest import TINY_TEXT, train_in_process

    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(TINY_TEXT, encoding="utf-8"), daemon=True)
    writer.start()
    train_in_process(["data=text", f"data.path={fifo}", *TINY_RUN], tmp_path / "run")
    writer.join(timeout=5)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (
        record["status"] == "done"
        and record["corpus"]["sha256"] == hashlib.sha256(TINY_TEXT.encode()).hexdigest()
    )


def test_a_stop_raised_inside_omegaconf_or_hydra_instantiate_stays_the_stop():
    """A signal before training raises Stopped wherever the process is; inside OmegaConf's node access
    (which re-creates a caught Exception from its message) or Hydra's instantiate (which wraps one), it
    must still reach charrnn-train's handler as the stop (a parallel sweep's trial once failed so)."""
    from omegaconf import OmegaConf

    from charrnn.cli.training import instantiate
    from charrnn.lit.stop import Stopped

    def stop() -> None:
        raise Stopped(signal.SIGTERM)

    OmegaConf.register_new_resolver("test_stop_now", stop, replace=True)
    node = OmegaConf.create({"_target_": "builtins.dict", "value": "${test_stop_now:}"})
    with pytest.raises(Stopped) as got:
        _ = node.value
    assert got.value.exit_code == 143
    with pytest.raises(Stopped) as got:
        instantiate(node)
    assert str(got.value) == "stopped by SIGTERM before training started"


def test_a_second_sigterm_while_a_stop_is_recorded_does_not_cut_it():
    """SIGTERM to a sweep's process group reaches a job twice: directly, and forwarded by the sweep. The
    second copy, landing while the job records its stop before training, must not raise the stop again
    in the middle of that (a trial of a parallel search was left ``running`` in its run.json so). A
    second Ctrl-C still stops at once."""
    from charrnn.lit.stop import StopOnSignal, Stopped

    recorded = False
    with pytest.raises(Stopped), StopOnSignal().handling():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises the stop in here
        except Stopped:
            os.kill(os.getpid(), signal.SIGTERM)  # the forwarded copy, as the job writes run.json
            time.sleep(0.2)
            recorded = True
            raise
    assert recorded
    with pytest.raises(KeyboardInterrupt), StopOnSignal().handling():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        except Stopped:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
