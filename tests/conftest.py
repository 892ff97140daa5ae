"""Shared test helpers: one tiny corpus, the console scripts run in this process or as real subprocesses,
and a finished run and sweep made once per session.

Most tests call the console scripts in this process (:func:`cli_in_process`): the same entry point a user's
shell runs, minus several seconds of importing torch and Lightning per call. A real subprocess
(:func:`run_cli`, :func:`popen_cli`) is kept where the exec is the point: launchers that start
processes, and one case per kind of exit path. A run that only needs to be a process of its own (to be
signalled, killed or raced) is forked from the worker instead (tests/forked.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slurm import slurm_cluster  # noqa: F401  (the one definition of the session's SLURM fixture)

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "helpers"
# The environment a run needs for the config callbacks in tests/helpers (signal_at, kill_sweep, hold_at, ...).
WITH_HELPERS = {"PYTHONPATH": str(HELPERS)}

# One torch thread in each pytest worker and in every CLI subprocess it starts. The tests' models are
# tiny (hidden size 16-64): a second thread costs more in synchronisation than it gains, many times
# over on a busy machine, and `pytest -n N` workers would otherwise contend for the same cores.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

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

SCRIPTS = {  # the console scripts of pyproject.toml
    "charrnn-train": "charrnn.cli.train:cli",
    "charrnn-sample": "charrnn.cli.sample:main",
    "charrnn-eval": "charrnn.cli.eval:main",
    "charrnn-report": "charrnn.cli.report:main",
}


def write_corpus(directory: Path, name: str = "tiny.txt") -> Path:
    """TINY_TEXT as ``directory/name``."""
    path = directory / name
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path)


# --- the console scripts as real processes ---------------------------------------------------------


def cli_env(env: dict | None = None) -> dict[str, str]:
    """The environment a test's CLI subprocess runs in: warnings off, the user's HYDRA_FULL_ERROR unset."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return full_env


def script_path(script: str = "charrnn-train") -> str:
    """A console script of this interpreter's environment."""
    return str(Path(sys.executable).parent / script)


def run_cli(
    args: list[str], cwd: Path, script: str = "charrnn-train", timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """A console script of this interpreter's environment, run as a user would: in a new process."""
    return subprocess.run(
        [script_path(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
    )


def popen_cli(
    args: list[str],
    cwd: Path,
    script: str = "charrnn-train",
    env: dict | None = None,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    **kwargs,
) -> subprocess.Popen:
    """A console script started as :func:`run_cli` runs it, without waiting for it (to signal or kill it)."""
    return subprocess.Popen(
        [script_path(script), *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=stdout,
        stderr=stderr,
        text=True,
        **kwargs,
    )


# --- the console scripts in this process -----------------------------------------------------------

_SIGNALS = [s for s in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP") if hasattr(signal, s)]


@contextlib.contextmanager
def process_state(logs: bool = True) -> Iterator[None]:
    """Whatever a run changes in its process, put back afterwards: cwd, argv, sys.path, environment
    (Lightning's PL_GLOBAL_SEED, charrnn-train's HYDRA_FULL_ERROR), signal handlers, torch threads and,
    with ``logs``, the logging handlers and levels (Hydra configures logging at each start) and Hydra's
    global state."""
    cwd, argv, path, environ = os.getcwd(), sys.argv[:], sys.path[:], dict(os.environ)
    handlers = {s: signal.getsignal(getattr(signal, s)) for s in _SIGNALS}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    manager = logging.Logger.manager
    loggers = {
        name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for name, lg in [("", logging.root), *manager.loggerDict.items()]
        if logs and isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.argv[:], sys.path[:] = argv, path
        os.environ.clear()
        os.environ.update(environ)
        for s, handler in handlers.items():
            if handler is not None:
                signal.signal(getattr(signal, s), handler)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads or 1)
        if logs:
            restore_logging(loggers)


def restore_logging(loggers: dict) -> None:
    """Every logger's handlers, level and flags as in ``loggers``; handlers added since are closed."""
    from hydra.core.global_hydra import GlobalHydra

    manager = logging.Logger.manager
    kept = {id(h) for hs, *_ in loggers.values() for h in hs}
    for name, lg in [("", logging.root), *manager.loggerDict.items()]:
        if not isinstance(lg, logging.Logger):
            continue
        for h in lg.handlers:
            if id(h) not in kept:  # added by the run (Hydra's train.log): close it
                h.close()
        if name in loggers:
            lg.handlers[:], lg.level, lg.propagate, lg.disabled = loggers[name]
        else:
            lg.handlers[:] = []
    GlobalHydra.instance().clear()


@contextlib.contextmanager
def captured_output() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """stdout and stderr into buffers, loggers that write to the terminal (Lightning's) included."""
    out, err = io.StringIO(), io.StringIO()
    streams = {id(sys.stdout): out, id(sys.stderr): err, id(sys.__stdout__): out, id(sys.__stderr__): err}
    swapped = []
    for lg in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        for h in getattr(lg, "handlers", []):
            if type(h) is logging.StreamHandler and id(h.stream) in streams:
                swapped.append((h, h.setStream(streams[id(h.stream)])))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        for h, stream in swapped:
            h.setStream(stream)


class CallTimedOut(Exception):
    """A :func:`cli_in_process` call ran past its ``timeout``."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CallTimedOut` in this (main) thread once ``seconds`` have passed: a hang's guard."""
    if not seconds:
        yield
        return

    def expire(signum, frame):
        raise CallTimedOut(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cli_in_process(
    args: list[str],
    cwd: Path,
    script: str = "charrnn-train",
    env: dict | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """A console script's entry point called in this process as ``script args...`` in ``cwd``; its exit
    code, stdout and stderr as :func:`run_cli` returns them. An uncaught exception is a traceback on
    stderr and exit code 1, as in a process; the process state is restored afterwards (:func:`process_state`).
    ``timeout`` (seconds) guards against a hang: the call ends with :class:`CallTimedOut` on stderr, exit 1.
    """
    module, _, name = SCRIPTS[script].partition(":")
    entry = getattr(importlib.import_module(module), name)
    with process_state(), captured_output() as (out, err), warnings.catch_warnings(), time_limit(timeout):
        warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore in run_cli
        os.environ.update(cli_env(env))
        os.environ.pop("HYDRA_FULL_ERROR", None)
        if env and "PYTHONPATH" in env:  # e.g. tests/helpers, for a config callback
            sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
        os.chdir(cwd)
        sys.argv[:] = [script_path(script), *args]
        try:
            code = entry()
        except SystemExit as e:
            code = e.code
        except Exception:
            traceback.print_exc()
            code = 1
        if isinstance(code, str):  # sys.exit("message"): printed, exit code 1
            print(code, file=sys.stderr)
            code = 1
    return subprocess.CompletedProcess([script, *args], int(code or 0), out.getvalue(), err.getvalue())


# --- composing and training in this process ---------------------------------------------------------


def compose_config(overrides: list[str], output_dir: Path | str = ".", hydra: bool = False):
    """``charrnn-train``'s config as Hydra composes it for these overrides, writing to ``output_dir``;
    with ``hydra``, Hydra's own config (launcher, sweeper, run dirs) under its ``hydra`` key too."""
    from hydra import compose, initialize_config_module

    import charrnn.cli.rundir  # noqa: F401  (registers the resolvers the configs use)

    with initialize_config_module(config_module="charrnn.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[*overrides, f"output_dir={output_dir}"],
            return_hydra_config=hydra,
        )


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
    with process_state(), StopOnSignal().handling() as stopper:
        return run(cfg, Job(overrides=tuple(overrides)), stopper)


# SLURM test files whose tests mostly wait on SLURM itself: a few CPU-seconds in 30 s.
WAITING_ON_SLURM = {"test_slurm_cluster.py"}


@pytest.hookimpl(tryfirst=True)  # before -m selects by marks
def pytest_collection_modifyitems(config, items):
    """A SLURM test is a slow test too (real jobs through a real slurmctld): `-m "not slow"` stays fast.

    The longest tests run first (SLURM, then the other slow ones, each in file order), so that under
    ``pytest -n N`` the short ones fill the workers' gaps at the end instead of one worker finishing a
    long test alone. Of the SLURM tests, those that mostly wait on SLURM itself (WAITING_ON_SLURM: a
    sleeping array, submitit's 15 s grace) come last: beside another worker's sweeps, which can use the
    idle core, rather than beside its start-up and quick tests, which cannot."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.slow)
    items.sort(
        key=lambda i: (
            i.get_closest_marker("slurm") is None,
            i.path.name in WAITING_ON_SLURM,
            i.get_closest_marker("slow") is None,
        )
    )


@pytest.fixture(autouse=True)
def _restore_process_state():
    """No test leaks cwd, environment, signal handlers, torch threads or logging handlers into the next."""
    with process_state(logs=False):  # pytest's own log capture changes handlers between a test's phases
        yield


# --- runs and sweeps made once per session ----------------------------------------------------------


def only_run_dir(root: Path) -> Path:
    """The single run directory a ``charrnn-train`` call made under ``root/outputs/runs``."""
    runs = sorted(p for p in (root / "outputs" / "runs").glob("*/*") if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """The directory ``name``, filled by ``make(directory)`` once per test run: under ``pytest -n N`` by
    the first worker that asks, while the others wait for it and then use what it made. For what several
    workers' tests only read (a finished run, a reference sweep): trained once, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's own temp dir, above each worker's
    path, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes, if make fails too
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            make(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One tiny run, ``charrnn-train data=text data.path=tiny.txt *TINY_RUN`` in its own directory (the
    corpus beside it, named relative to it, as users write it). Shared: copy it (copy_run) to change it."""

    def make(root: Path) -> None:
        write_corpus(root)
        proc = cli_in_process(["data=text", "data.path=tiny.txt", *TINY_RUN], cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return only_run_dir(made_once(tmp_path_factory, "finished_run", make))


@pytest.fixture(scope="session")
def finished_corpus(finished_run) -> Path:
    """The corpus ``finished_run`` trained on (its config names it relative to the dir it ran in)."""
    return finished_run.parents[3] / "tiny.txt"


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a run dir that a test may change (the shared one stays as it was)."""
    shutil.copytree(run, to)
    return to


# --- reading what a run wrote ------------------------------------------------------------------------


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


def trained_only(history: dict) -> dict:
    """A TensorBoard history without the test's points and the epoch beside them: what a resume that only
    had the test left must still match exactly (docs/failures.md: Lightning logs that test one step and
    one epoch earlier than the whole run did)."""
    return {tag: points for tag, points in history.items() if tag != "epoch" and not tag.startswith("test/")}
