"""Shared test helpers: a tiny corpus written by the test, and real subprocess runs of the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Bounded threads: under `pytest -n N` each worker, and every CLI subprocess it starts, takes its
# share of the cores instead of all of them (16 workers x 16 torch threads hung a 16-core machine).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = str(
    max(
        1,
        (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        // WORKERS,
    )
)
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, THREADS)

# A small, learnable text: a few short lines repeated with variation (about 6 kB).
TINY_TEXT = "".join(
    f"the {w} sat on the mat {i % 7}.\nand the {w} ran.\n"
    for i, w in enumerate(["cat", "dog", "hen", "fox"] * 40)
)

# Overrides that make a real run finish in seconds on 2 cores.
TINY_RUN = [
    "model.hidden_size=16",
    "data.seq_len=16",
    "data.batch_size=4",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "sample.length=20",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def run_cli(
    args: list[str], cwd: Path, script: str = "charrnn-train", timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run one of the console scripts (from this interpreter's environment) as a user would."""
    exe = Path(sys.executable).parent / script
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def compose_config(overrides: list[str], output_dir: Path):
    """``charrnn-train``'s config as Hydra composes it for these overrides, writing to ``output_dir``."""
    from hydra import compose, initialize_config_module

    import charrnn.cli.rundir  # noqa: F401  (registers the resolvers the configs use)

    with initialize_config_module(config_module="charrnn.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, f"output_dir={output_dir}"])


def train_in_process(overrides: list[str], output_dir: Path) -> float:
    """What ``charrnn-train`` does below Hydra's main, in this process: final config, checks, lock, train.

    The run dir gets the ``.hydra/config.yaml`` Hydra would save, so ``resume=`` takes it as a run.
    Returns the best val bpc; a user mistake raises :class:`charrnn.core.errors.UserError`.
    """
    from omegaconf import OmegaConf

    from charrnn.cli.jobs import Job
    from charrnn.cli.train import run
    from charrnn.lit.stop import StopOnSignal

    cfg = compose_config(overrides, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / ".hydra" / "config.yaml").exists() and not cfg.get("resume"):
        (output_dir / ".hydra").mkdir(exist_ok=True)
        OmegaConf.save(cfg, output_dir / ".hydra" / "config.yaml")
    with StopOnSignal().handling() as stopper:
        return run(cfg, Job(overrides=tuple(overrides)), stopper)


def only_run_dir(root: Path) -> Path:
    """The single run directory a ``charrnn-train`` call made under ``root/outputs/runs``."""
    runs = sorted(p for p in (root / "outputs" / "runs").glob("*/*") if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard log dir, read with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_history(run: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of a run, as sorted ``(step, value)`` lists per tag: a resumed run's equals
    an uninterrupted one's only if every step is there once (what its stopped attempt logged after its
    checkpoint is purged) with the same value."""
    return {tag: sorted(points) for tag, points in read_scalars(run / "tensorboard").items()}
