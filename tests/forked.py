"""A console script run in a forked child of this pytest worker: a real process to signal, kill or race,
without the ~4 s (torch, Lightning, Hydra) that every fresh interpreter pays for its imports.

Used where the process is what a test needs (a SIGTERM, a SIGKILL, two runs at once) but not the exec
of the console script itself; that exec, and each kind of exit path it has, stays tested by the real
subprocesses of conftest.run_cli / popen_cli. The child starts from what a fresh interpreter has:
default signal handlers, no pytest log handlers (a library's terminal handler writes to the child's own
stderr), no Hydra state, the environment, argv and ``__main__`` a subprocess would get; it runs the entry
point as cli_in_process does and ends with os._exit (pytest's own exit code never runs in it).

One constraint from GNU OpenMP (torch's CPU threads): a child must not use more threads than the worker
ever used, or its first parallel region hangs. The workers run everything on one thread (conftest sets
OMP_NUM_THREADS=1), so every child starts with one; :func:`fork_cli` refuses a worker that has more.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
import warnings
from pathlib import Path
from typing import NoReturn

from conftest import _SIGNALS, SCRIPTS, cli_env, script_path

PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT


class ForkedCLI:
    """The parent's handle on a forked run: the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, pid: int, stdout, stderr, args: list[str]) -> None:
        self.pid, self.stdout, self.stderr, self.args = pid, stdout, stderr, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N for signal N, as Popen
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Read the piped streams to their end and wait for the child, as Popen.communicate does."""
        texts: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda n=name, f=stream: texts.__setitem__(n, f.read()), daemon=True)
            for name, stream in (("out", self.stdout), ("err", self.stderr))
            if stream is not None
        ]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        return texts.get("out"), texts.get("err")


def _target_fd(where, inherited: int, opened: list[int]) -> tuple[int, int | None]:
    """(fd the child writes to, read end the parent keeps or None) for a Popen-style stdout/stderr value;
    the fds opened here for the child go to ``opened`` (the parent closes them once it has forked)."""
    if where == PIPE:
        read, write = os.pipe()
        opened.append(write)
        return write, read
    if where == DEVNULL or where is None:
        opened.append(os.open(os.devnull, os.O_WRONLY))
        return opened[-1], None
    if where == STDOUT:
        return inherited, None
    return where.fileno(), None  # an open file of the caller's


def fork_cli(
    args: list[str],
    cwd: Path,
    script: str = "charrnn-train",
    env: dict | None = None,
    stdout=DEVNULL,
    stderr=PIPE,
    start_new_session: bool = False,
) -> ForkedCLI:
    """``script args...`` in ``cwd``, in a forked child of this process, without waiting for it.
    ``stdout``/``stderr``: PIPE, DEVNULL, STDOUT (stderr only) or an open file, as for Popen."""
    import lightning  # noqa: F401  (imported here once, so that no child pays for it)
    import torch

    assert torch.get_num_threads() == 1, "a forked child of a multi-threaded OpenMP worker can hang"
    module, _, _ = SCRIPTS[script].partition(":")
    importlib.import_module(module)
    opened: list[int] = []
    out_fd, out_read = _target_fd(stdout, 1, opened)
    err_fd, err_read = _target_fd(stderr, out_fd, opened)
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_child(args, cwd, script, env, out_fd, err_fd, start_new_session)
    for fd in opened:
        os.close(fd)
    wrap = lambda fd: None if fd is None else open(fd, encoding="utf-8", errors="replace")  # noqa: E731
    return ForkedCLI(pid, wrap(out_read), wrap(err_read), [script, *args])


def run_forked(
    args: list[str],
    cwd: Path,
    script: str = "charrnn-train",
    timeout: float = 300,
    env: dict | None = None,
    start_new_session: bool = False,
) -> subprocess.CompletedProcess:
    """:func:`conftest.run_cli`, in a forked child: its exit code, stdout and stderr. ``start_new_session``
    for a run that kills its own process group (tests/helpers/kill_sweep.py)."""
    child = fork_cli(args, cwd, script, env, stdout=PIPE, stderr=PIPE, start_new_session=start_new_session)
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        child.kill()
        child.wait()
    return subprocess.CompletedProcess([script, *args], child.returncode, out, err)


def _run_child(
    args: list[str], cwd: Path, script: str, env: dict | None, out_fd: int, err_fd: int, new_session: bool
) -> NoReturn:
    code: object = 1
    try:
        if new_session:
            os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((null, 0), (out_fd, 1), (err_fd, 2)):
            os.dup2(fd, target)
        was_stdout = {id(sys.stdout), id(sys.__stdout__)}
        sys.stdin = sys.__stdin__ = open(0, closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", closefd=False, buffering=1)
        sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, buffering=1)
        _fresh_logging(was_stdout)
        _fresh_process_state(env, cwd, [script_path(script), *args])
        module, _, name = SCRIPTS[script].partition(":")
        try:
            code = getattr(importlib.import_module(module), name)()
        except SystemExit as e:
            code = e.code
        if isinstance(code, str):  # sys.exit("message"): printed, exit code 1
            print(code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # uncaught, as Python ends: killed by SIGINT
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _fresh_logging(was_stdout: set[int]) -> None:
    """The loggers as the imports left them: pytest's handlers gone, and a terminal handler a library added
    at import (Lightning's) writing to this process's stdout or stderr, not to pytest's capture."""
    for lg in [logging.root, *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(lg, logging.Logger):
            continue
        lg.handlers[:] = [h for h in lg.handlers if not type(h).__module__.startswith("_pytest")]
        for h in lg.handlers:
            if type(h) is logging.StreamHandler:
                h.setStream(sys.stdout if id(h.stream) in was_stdout else sys.stderr)


def _fresh_process_state(env: dict | None, cwd: Path, argv: list[str]) -> None:
    """What a fresh interpreter would have: signal handlers, logging, Hydra, environment, cwd, argv and
    ``__main__``."""
    from hydra.core.global_hydra import GlobalHydra

    signal.setitimer(signal.ITIMER_REAL, 0)
    for name in _SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    GlobalHydra.instance().clear()
    os.environ.clear()
    os.environ.update(cli_env(env))
    if env and "PYTHONPATH" in env:  # e.g. tests/helpers, for a config callback
        sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
    os.chdir(cwd)
    sys.argv[:] = argv
    main = types.ModuleType("__main__")  # the console script, as in its own process: Lightning's DDP
    main.__file__, main.__spec__ = argv[0], None  # launcher starts rank 1 as `python <argv[0]> <args>`
    sys.modules["__main__"] = main
    warnings.resetwarnings()
    warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore in run_cli
