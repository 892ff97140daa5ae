"""A sweep job's lease on one device slot, so that local sweep jobs share a machine's GPUs out.

``charrnn-train -m hydra/launcher=parallel hydra.launcher.n_jobs=N trainer=gpu ...`` runs N jobs at
once. Each job that trains on one GPU leases a *slot*: ``device_lease.jobs_per_gpu`` slots per
device of ``device_lease.pool``, each slot one lock file in ``device_lease.lock_dir``. A job takes
the first free slot (slot 0 of every device before slot 1 of any, so jobs spread out before they
pack), holds an OS lock on its file (``fcntl.flock``) while it trains, and unlocks it when training
ends, however it ends. The kernel drops the lock of a crashed or SIGKILLed process, so a dead job
never keeps its slot. When every slot is taken the job says so in one line on stderr and polls.

Joblib's workers are reused processes in which CUDA may already be initialised, so a job is not
pinned with ``CUDA_VISIBLE_DEVICES`` but with Lightning's ``trainer.devices=[index]``.

Who leases: a sweep job (``-m``) on a launcher that runs jobs on this machine (not SLURM, which
hands each job its own GPUs) when its trainer is a one-device GPU trainer or the pool is given
explicitly. Only a GPU trainer is pinned, so an explicit pool on CPU (the tests) leases and records
slots the same way. A single run never leases: it is the only job, on the device it is given.
Lock files are named by the device as CUDA_VISIBLE_DEVICES names it, so sweeps that see different
GPUs as index 0 do not wait for each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charrnn.cli.devices import device_request, visible_cuda_devices
from charrnn.cli.jobs import Job
from charrnn.core.errors import UserError, checked
from charrnn.core.files import storage_error

POLL_SECONDS = 0.5


@dataclass
class Lease:
    """The slot a job holds; ``record`` (the run's :class:`RunRecord`) gets it in ``run.json``'s
    ``device``."""

    index: int
    slot: int
    lock_file: str
    leased_at: str
    released_at: str | None = None
    pinned: bool = False  # a GPU trainer trains on device ``index`` (lease.pinned_config)
    record: Any = field(default=None, repr=False)

    def fields(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "slot": self.slot,
            "lock_file": self.lock_file,
            "leased_at": self.leased_at,
            "released_at": self.released_at,
        }

    def report_to(self, record: Any) -> None:
        """Write this lease into ``record`` now, and its release time when it ends."""
        self.record = record
        record.update(device={**record.data["device"], **self.fields()})


def stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def one_gpu_trainer(trainer: DictConfig) -> bool:
    """A trainer that runs on exactly one CUDA device Lightning picks (``devices: 1``)."""
    request = device_request(trainer)
    return request.cuda and request.spec == "1"


def lease_settings(cfg: DictConfig) -> tuple[list[int] | None, int, Path]:
    """``device_lease``'s pool, jobs per GPU and lock dir, checked; every rule about their values is here."""
    settings = cfg.get("device_lease") or {}
    pool = settings.get("pool")
    if pool is not None:
        if not OmegaConf.is_list(pool) or len(pool) == 0:
            raise UserError(
                f"device_lease.pool must be a list of device indices such as [0,1], got {pool!r}; write "
                "'device_lease.pool=[0,1]' or null for every GPU"
            )
        pool = [
            checked(f"device_lease.pool[{k}]", value, integer=True, low=0) for k, value in enumerate(pool)
        ]
        if len(set(pool)) != len(pool):
            raise UserError(
                f"device_lease.pool lists a device twice ({pool}); list each device once and set "
                "device_lease.jobs_per_gpu for more jobs per device"
            )
    jobs_per_gpu = checked("device_lease.jobs_per_gpu", settings.get("jobs_per_gpu", 1), integer=True, low=1)
    lock_dir = settings.get("lock_dir") or f"/tmp/charrnn-device-leases-{os.getuid()}"
    return pool, jobs_per_gpu, Path(str(lock_dir)).expanduser()


def lock_name(index: int, slot: int) -> str:
    """The slot's lock file: the device as CUDA_VISIBLE_DEVICES names it (index, UUID), else its index."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    device = visible[index] if index < len(visible) else str(index)
    return f"device-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.slot-{slot}.lock"


def try_slots(pool: list[int], jobs_per_gpu: int, lock_dir: Path, holder: str) -> tuple[Any, Lease] | None:
    """Lock the first free slot (slot-major: spread before packing); its open file and lease, or None if all
    are taken."""
    for slot in range(jobs_per_gpu):
        for index in pool:
            path = lock_dir / lock_name(index, slot)
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.truncate(0)
            handle.write(f"{holder}\n")  # who holds it, for a person reading the lock dir
            handle.flush()
            return handle, Lease(index, slot, str(path), stamp())
    return None


@contextlib.contextmanager
def hold_slot(pool: list[int], jobs_per_gpu: int, lock_dir: Path, holder: str) -> Iterator[Lease]:
    """Wait for a free slot of ``pool``, hold it for the ``with`` block, then record the release and
    unlock."""
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        taken = try_slots(pool, jobs_per_gpu, lock_dir, holder)
    except OSError as e:
        error = storage_error(
            e, lock_dir, fix="set device_lease.lock_dir=DIR to a writable local directory", creating=True
        )
        if error is None:
            raise
        raise error from None
    if taken is None:
        print(
            f"charrnn-train: note: all {len(pool) * jobs_per_gpu} device slots (device_lease.pool={pool}, "
            f"jobs_per_gpu={jobs_per_gpu}) are leased by other jobs; waiting for one (lock files in "
            f"{lock_dir})",
            file=sys.stderr,
            flush=True,
        )
    while taken is None:
        time.sleep(POLL_SECONDS)
        taken = try_slots(pool, jobs_per_gpu, lock_dir, holder)
    handle, lease = taken
    try:
        yield lease
    finally:
        try:
            lease.released_at = stamp()
            if lease.record is not None:
                lease.record.update(device={**lease.record.data["device"], **lease.fields()})
        finally:
            handle.close()  # closing the file drops the lock


@contextlib.contextmanager
def lease_device(cfg: DictConfig, job: Job) -> Iterator[Lease | None]:
    """This job's device slot for the ``with`` block (None when it needs none); a GPU trainer is pinned to it
    (:func:`pinned_config`)."""
    pool, jobs_per_gpu, lock_dir = lease_settings(cfg)
    gpu = one_gpu_trainer(cfg.trainer)
    if not job.in_sweep or job.launcher.endswith("SlurmLauncher") or (pool is None and not gpu):
        yield None
        return
    visible = visible_cuda_devices()
    pool = list(range(visible)) if pool is None else pool
    if gpu and any(index >= visible for index in pool):
        raise UserError(
            f"device_lease.pool={pool} names a GPU this machine does not have (it has {visible}: 0 to "
            f"{visible - 1}); list only those"
        )
    with hold_slot(
        pool, jobs_per_gpu, lock_dir, f"pid {os.getpid()} on {os.uname().nodename}: {cfg.output_dir}"
    ) as lease:
        lease.pinned = gpu
        yield lease


def pinned_config(cfg: DictConfig, lease: Lease | None) -> DictConfig:
    """The config a leased GPU job trains with: Lightning's ``trainer.devices=[index]`` of its slot."""
    if lease is None or not lease.pinned:
        return cfg
    return OmegaConf.merge(cfg, {"trainer": {"devices": [lease.index]}})
