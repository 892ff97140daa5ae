"""Device leases (charrnn.cli.lease): local sweep jobs share out a machine's devices, at most
``jobs_per_gpu`` jobs on a device at any moment, proved with real processes on CPU."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from charrnn.cli.jobs import Job
from charrnn.cli.lease import hold_slot, lease_device, lease_settings, one_gpu_trainer, pinned_config
from charrnn.core.errors import UserError
from conftest import TINY_RUN, run_cli, write_corpus

# A process that leases the one slot of a 1-device pool, prints the lease as JSON, holds it until a
# line arrives on stdin, then prints the lease again with its release time.
HOLDER = """
import json, sys
from pathlib import Path
from charrnn.cli.lease import hold_slot
with hold_slot([0], 1, Path(sys.argv[1]), sys.argv[2]) as lease:
    print(json.dumps(lease.fields()), flush=True)
    sys.stdin.readline()
print(json.dumps(lease.fields()), flush=True)
"""


def start_holder(lock_dir: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_waiting_note(proc: subprocess.Popen) -> str:
    """Read a holder's stderr up to its note that every slot is taken: it tried, and found the slot locked."""
    for line in proc.stderr:
        if "waiting for one" in line:
            return line
    raise AssertionError(f"the holder ended without waiting: rc={proc.wait()}")


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def assert_slots_never_shared(leases: list[dict]) -> None:
    """Intervals [leased_at, released_at] of one device slot never overlap: at most one job per slot at
    every moment."""
    by_slot = defaultdict(list)
    for lease in leases:
        assert at(lease["leased_at"]) <= at(lease["released_at"]), lease
        by_slot[(lease["index"], lease["slot"])].append(lease)
    for held in by_slot.values():
        held.sort(key=lambda lease: at(lease["leased_at"]))
        for before, after in zip(held, held[1:]):
            assert at(before["released_at"]) <= at(after["leased_at"]), (before, after)


# --- real processes contending for one slot ---------------------------------------------------


@pytest.mark.slow
def test_a_second_process_waits_until_the_first_releases(tmp_path):
    first = start_holder(tmp_path, "first")
    leased = json.loads(first.stdout.readline())
    assert (leased["index"], leased["slot"], leased["released_at"]) == (0, 0, None)
    second = start_holder(tmp_path, "second")
    note = wait_for_waiting_note(second)
    assert note.startswith("charrnn-train: note: all 1 device slots") and str(tmp_path) in note
    assert second.poll() is None  # it waits: the first holds the only slot until told to let go
    out, _ = first.communicate("\n", timeout=60)
    released = json.loads(out.splitlines()[-1])
    then = json.loads(second.stdout.readline())
    assert then["index"] == 0 and Path(then["lock_file"]).read_text().startswith("second")
    out, _ = second.communicate("\n", timeout=60)
    assert first.returncode == 0 and second.returncode == 0
    assert_slots_never_shared([released, json.loads(out.splitlines()[-1])])


@pytest.mark.slow
def test_a_killed_holder_frees_its_slot(tmp_path):
    first = start_holder(tmp_path, "first")
    json.loads(first.stdout.readline())
    second = start_holder(tmp_path, "second")
    wait_for_waiting_note(second)
    first.kill()  # SIGKILL: no Python code runs; the kernel drops the lock with the process
    first.wait(timeout=60)
    then = json.loads(second.stdout.readline())
    assert (then["index"], then["slot"]) == (0, 0)
    second.communicate("\n", timeout=60)
    assert second.returncode == 0


# --- in one process (each open file is its own lock) ------------------------------------------


def test_jobs_spread_over_the_devices_before_they_pack(tmp_path):
    with (
        hold_slot([3, 5], 2, tmp_path, "a") as a,
        hold_slot([3, 5], 2, tmp_path, "b") as b,
        hold_slot([3, 5], 2, tmp_path, "c") as c,
        hold_slot([3, 5], 2, tmp_path, "d") as d,
    ):
        assert [(x.index, x.slot) for x in (a, b, c, d)] == [(3, 0), (5, 0), (3, 1), (5, 1)]
        path = Path(b.lock_file)
    assert path.name == "device-5.slot-0.lock"
    with open(path) as handle:  # released: anyone can lock it now
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with hold_slot([3, 5], 2, tmp_path, "e") as e:
        assert (e.index, e.slot) == (3, 0)


def test_a_lease_is_released_when_the_job_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with hold_slot([0], 1, tmp_path, "failing") as lease:
            raise RuntimeError("boom")
    assert lease.released_at is not None
    with hold_slot([0], 1, tmp_path, "next") as again:
        assert again.index == 0


def test_lock_files_are_named_by_the_device_cuda_sees(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-8f1c")
    with hold_slot([1], 1, tmp_path, "x") as lease:
        assert Path(lease.lock_file).name == "device-GPU-8f1c.slot-0.lock"


# --- settings ---------------------------------------------------------------------------------


def settings(**lease) -> DictConfig:
    return OmegaConf.create(
        {
            "device_lease": {"pool": None, "jobs_per_gpu": 1, "lock_dir": None, **lease},
            "trainer": {"accelerator": "cpu", "devices": 1},
            "output_dir": "/nowhere",
        }
    )


def test_settings_are_checked_in_one_sentence(tmp_path):
    pool, jobs, lock_dir = lease_settings(settings(pool=[0, 1], jobs_per_gpu=3, lock_dir=str(tmp_path)))
    assert (pool, jobs, lock_dir) == ([0, 1], 3, tmp_path)
    assert lease_settings(settings())[2].name.startswith("charrnn-device-leases-")
    for bad, match in (
        ({"pool": 0}, "device_lease.pool must be a list"),
        ({"pool": []}, "device_lease.pool must be a list"),
        ({"pool": [0, -1]}, r"device_lease.pool\[1\] must be at least 0"),
        ({"pool": [1, 1]}, "lists a device twice"),
        ({"pool": ["a"]}, "must be a whole number"),
        ({"jobs_per_gpu": 0}, "device_lease.jobs_per_gpu must be at least 1"),
    ):
        with pytest.raises(UserError, match=match) as refused:
            lease_settings(settings(**bad))
        assert "\n" not in str(refused.value)


def test_which_trainers_lease_and_a_single_run_never_does(tmp_path):
    trainer = OmegaConf.create
    assert one_gpu_trainer(trainer({"accelerator": "gpu", "devices": 1}))
    assert not one_gpu_trainer(trainer({"accelerator": "gpu", "devices": [2]}))  # pinned by the user
    assert not one_gpu_trainer(trainer({"accelerator": "gpu", "devices": 2}))
    assert not one_gpu_trainer(trainer({"accelerator": "cpu", "devices": 1}))
    with lease_device(settings(pool=[0], lock_dir=str(tmp_path)), Job()) as lease:  # not a sweep (-m)
        assert lease is None
    with pytest.raises(UserError, match="jobs_per_gpu"):  # but its values are still checked
        with lease_device(settings(jobs_per_gpu=-1), Job()):
            pass


def test_a_gpu_trainer_is_pinned_to_its_leased_device(tmp_path, monkeypatch):
    """As in a joblib sweep on a 2-GPU machine (the launcher and CUDA's answers stood in for)."""
    joblib = Job(
        launcher="hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", n_jobs=2, num=0
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    first, second, on_cpu, wrong = (settings(lock_dir=str(tmp_path)) for _ in range(4))
    first.trainer.accelerator = second.trainer.accelerator = wrong.trainer.accelerator = "gpu"
    with lease_device(first, joblib) as a, lease_device(second, joblib) as b:  # pool null: every visible GPU
        assert (a.index, b.index) == (0, 1)
        assert [list(pinned_config(c, lease).trainer.devices) for c, lease in ((first, a), (second, b))] == [
            [0],
            [1],
        ]
        assert first.trainer.devices == 1  # the composed config itself is never changed
    on_cpu.device_lease.pool = [0, 1]
    with lease_device(on_cpu, joblib) as c:  # an explicit pool leases, a CPU trainer is left as it is
        assert c.index == 0 and pinned_config(on_cpu, c).trainer.devices == 1
    with lease_device(settings(), joblib) as none:  # CPU trainer, no pool: no lease
        assert none is None
    wrong.device_lease.pool = [0, 5]
    with pytest.raises(
        UserError, match=r"device_lease.pool=\[0, 5\] names a GPU this machine does not have \(it has 2"
    ):
        with lease_device(wrong, joblib):
            pass
    with lease_device(
        wrong, Job(launcher="hydra_plugins.charrnn_submitit.SlurmLauncher", num=0)
    ) as none:  # SLURM gives each job its GPUs
        assert none is None


# --- a real local sweep -----------------------------------------------------------------------


def sweep_leases(root: Path, args: list[str]) -> list[dict]:
    """Run a 4-job joblib sweep, 3 jobs at a time, in ``root`` (a real process, whose jobs run in joblib's
    worker processes); every job's run.json ``device``, after checking the job ended well."""
    corpus = write_corpus(root)
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=3",
            f"device_lease.lock_dir={root / 'locks'}",
            "data=text",
            f"data.path={corpus}",
            *TINY_RUN,
            "trainer.max_steps=10",
            "trainer.val_check_interval=5",
            "optim.lr=1e-3,2e-3,3e-3,4e-3",
            *args,
        ],
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [
        json.loads(p.read_text()) for p in sorted((root / "outputs" / "multirun").glob("*/*/*/run.json"))
    ]
    assert len(records) == 4 and all(r["status"] == "done" for r in records)
    for record in records:  # the lease was held until the run had ended
        assert at(record["ended"]) <= at(record["device"]["released_at"])
    return [r["device"] for r in records]


@pytest.mark.slow
def test_a_local_sweep_shares_two_devices_one_job_each_at_a_time(tmp_path):
    leases = sweep_leases(tmp_path, ["device_lease.pool=[0,1]", "device_lease.jobs_per_gpu=1"])
    assert all(
        lease["accelerator"] == "cpu" and lease["slot"] == 0 for lease in leases
    )  # recorded, the trainer left on CPU
    assert {lease["index"] for lease in leases} == {
        0,
        1,
    }  # both used: two jobs held leases at the same moment
    assert_slots_never_shared(leases)  # one slot per device: at most one job on a device at every moment


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA GPUs")
def test_a_local_sweep_shares_the_gpus(tmp_path):
    leases = sweep_leases(tmp_path, ["trainer=gpu", "device_lease.jobs_per_gpu=1"])
    used = {lease["index"] for lease in leases}
    assert used <= set(range(torch.cuda.device_count())) and len(used) >= min(torch.cuda.device_count(), 2)
    assert_slots_never_shared(leases)
