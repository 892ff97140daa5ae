"""What a run was made from: corpus, code, library versions, device, seed, times -> ``run.json``.

Written when training starts (status ``running``: :meth:`RunRecord.start`) and again when the run
ends (``done``, ``stopped``, ``failed``), so even a killed or failed run says what it was. Nothing is
written before :meth:`RunRecord.start` or :meth:`RunRecord.finish`: a run refused before it starts
(a bad corpus, a refused resume) leaves any existing ``run.json`` as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from charrnn.core.files import atomic_write

PACKAGES = ("torch", "lightning", "hydra-core", "omegaconf", "numpy", "tensorboard")


def git_state(path: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``path``, or None outside one."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def device_info(accelerator: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "accelerator": accelerator,
        "host": socket.gethostname(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def corpus_info(name: str, path: str | None, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "path": str(Path(path).expanduser().resolve()) if path else None,
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (temporary file + rename), so a kill never leaves half a file."""
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, default=str) + "\n").encode("utf-8")))


class RunRecord:
    """The ``run.json`` of one run, rewritten as the run goes."""

    def __init__(
        self,
        out: Path,
        seed: int,
        accelerator: str,
        overrides: list[str],
        began: str = "started",
        launch: int | None = None,
    ) -> None:
        """``began``: how this attempt began, ``started`` (fresh) or ``resumed`` (from a checkpoint);
        ``launch``: in a sweep, the launch this attempt belongs to (1; a whole-sweep resume: 2, 3...)."""
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        self.enabled = rank_zero_only.rank == 0  # under DDP one process (rank 0) keeps the record
        self.path = out / "run.json"
        self.started = time.time()
        # A resumed run keeps what its earlier attempts recorded.
        earlier = [json.loads(self.path.read_text())] if self.path.is_file() else []
        self.data: dict[str, Any] = {
            "status": "running",
            "began": began,
            "started": now(),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "overrides": overrides,
            "seed": seed,
            "git": git_state(Path(__file__).resolve().parent),
            "versions": versions(),
            "device": device_info(accelerator),
        }
        if "SLURM_JOB_ID" in os.environ:  # which SLURM job and attempt (a requeued job restarts with a count)
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{task}" if task else os.environ["SLURM_JOB_ID"]
            self.data["slurm"] = {
                "job": job,
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            }
        if launch is not None:
            self.data["launch"] = launch
        if earlier:
            self.data["earlier_attempts"] = earlier[0].pop("earlier_attempts", []) + earlier
        self.written = False

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        if self.enabled and self.written:
            write_json(self.path, self.data)

    def start(self, **fields: Any) -> None:
        """Write ``run.json`` (status ``running``) with ``fields``: training is under way."""
        self.written = True
        self.update(**fields)

    def finish(self, status: str, **fields: Any) -> None:
        self.written = True
        self.update(status=status, ended=now(), wall_seconds=round(time.time() - self.started, 3), **fields)


def count_as_done(out: Path, launch: int) -> None:
    """A done job that launch ``launch`` of its sweep counted without training: ``counted_in_launches`` in
    its ``run.json`` (nothing to write where it has none)."""
    path = out / "run.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        data["counted_in_launches"] = [*data.get("counted_in_launches", []), launch]
        write_json(path, data)
