"""``charrnn-train``, the entry layer: argv and Hydra -> the final config and a context -> :func:`train`.

:func:`main` reads Hydra's runtime config once (a :class:`Job`), decides the config the run trains
with (``resume=``, a requeued SLURM job, a sweep job's share of the machine, its device lease:
nothing changes it afterwards), checks it, and calls :func:`charrnn.cli.training.train`. Around
that call live what belongs to a process: signals, the run lock, the lease, ``run.json``'s ending,
and the exit codes (2 for a user mistake, 128 + N for signal N, 1 for a failed sweep job).

Torch and Lightning are imported only once a run starts (in :func:`main` and :func:`run`): Hydra
composes the config first, so ``--help`` and a config error answer without them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import charrnn.cli.resolvers  # noqa: F401  (the resolvers the config uses, before Hydra composes it)
from charrnn.cli import sweeps, sweepstop
from charrnn.cli.checks import check_run
from charrnn.cli.commands import PROG, resume_command
from charrnn.cli.hydra_lines import without_job_error_line
from charrnn.cli.jobs import Job, JobFailed, SweepRefused, share_machine
from charrnn.cli.lease import lease_device, pinned_config
from charrnn.cli.sweepstop import SweepStopped
from charrnn.cli.top_errors import run_reported
from charrnn.core.errors import UserError
from charrnn.core.files import storage_error

if TYPE_CHECKING:
    from charrnn.lit.stop import StopOnSignal, Stopped


def record_failure(out: Any, message: str) -> None:
    """``<run dir>/error.txt``: the error's first line first (charrnn-report lists it), details after."""
    if out is None:
        return
    try:
        (Path(str(out)) / "error.txt").write_text(message.rstrip() + "\n")
    except (OSError, ValueError):
        pass


def job_failed(out: Any, message: str, job: Job) -> JobFailed:
    """A sweep job's failure as one sentence naming the job and where its details are, printed by the job
    as it fails. Where the job's stderr is the sweep's own (basic launcher, joblib) that is the only line
    the user sees for it; under submitit it goes to the job's log, and ``cli`` prints it again."""
    failed = JobFailed(
        f"{message} [sweep job {job.num}: {out}; details in error.txt there; charrnn-report "
        f"{Path(str(out)).parent} lists every job]"
    )
    print(failed, file=sys.stderr)
    failed.shown = not job.launched_by("submitit")
    return failed


def hand_to_submitit(stop: Stopped, out: Any, job: Job) -> None:
    """A SLURM job warned of its time limit (SIGUSR2) has saved ``last.ckpt``: submitit's handler, back in
    place, requeues the job and exits (the next attempt continues from that checkpoint, rundir.final_config).
    Past ``hydra.launcher.max_num_timeout`` time-outs it refuses, and the job fails in one sentence.
    In a DDP job whose ranks SLURM started, rank 0 requeues; the other ranks (whose handler in submitit
    does nothing) exit 0 at once, so that a cluster that kills a job step on a task's non-zero exit
    (KillOnBadExit) lets rank 0 requeue."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        print(f"{PROG}: rank {rank_zero_only.rank} {stop}; rank 0 requeues the job", file=sys.stderr)
        sys.exit(0)
    print(
        f"{PROG}: {stop}; checkpoint saved; handing SIGUSR2 to submitit to requeue the job", file=sys.stderr
    )
    try:
        signal.raise_signal(signal.SIGUSR2)
    except Exception as e:  # submitit's UncompletedJobError
        why = " ".join(str(e).split()).rstrip(".")
        message = (
            f"{PROG}: error: {stop}, near its time limit, and not requeued: {why} "
            f"(hydra.launcher.max_num_timeout); continue with: {resume_command(out)}"
        )
        record_failure(out, message)
        raise job_failed(out, message, job) from None


def job_from_hydra() -> Job:
    """What Hydra's runtime config says about this job: the one place below ``main`` that reads it."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return Job(overrides=tuple(hydra_cfg.overrides.task))
    launcher = hydra_cfg.launcher
    return Job(
        overrides=tuple(hydra_cfg.overrides.task),
        launcher=str(launcher.get("_target_", "")),
        n_jobs=int(launcher.n_jobs) if launcher.get("n_jobs") is not None else None,
        cpus_per_task=int(launcher.cpus_per_task) if launcher.get("cpus_per_task") else None,
        num=int(hydra_cfg.job.num) if hydra_cfg.job.get("num") is not None else None,
        tasks_per_node=int(launcher.get("tasks_per_node") or 1),
        nodes=int(launcher.get("nodes") or 1),
    )


def run(cfg: DictConfig, job: Job, stopper: StopOnSignal) -> float:
    """Decide the final config, check it, and train under the run lock and the job's device lease."""
    from charrnn.cli import rundir
    from charrnn.cli.record import RunRecord, count_as_done
    from charrnn.cli.training import RunContext, train
    from charrnn.lit.pruning import Pruned
    from charrnn.lit.stop import Stopped

    out, launch = cfg.output_dir, sweeps.launch_number(cfg) if job.in_sweep else None
    if job.in_sweep and cfg.get("resume") and sweeps.is_sweep_dir(Path(str(cfg.resume))):  # -m resume=SWEEP
        extras = sweeps.resume_extras(cfg)
        cfg, recorded = sweeps.sweep_job_config(cfg)
        if cfg is None:
            count_as_done(Path(str(out)), launch or 1)
            print(
                f"{PROG}: sweep job {job.num} is done; its recorded best val bpc counts: {recorded}",
                file=sys.stderr,
            )
            return recorded
        if cfg.get("resume"):  # resume_config applies them to the job's saved config
            job = dataclasses.replace(job, overrides=extras)
    cfg, checkpoint = rundir.final_config(cfg, job)  # first: every check below sees the final config
    check_run(cfg, job)
    cfg = share_machine(cfg, job)
    with rundir.lock_run(out):
        began = "started" if checkpoint is None else "resumed"
        accelerator = str(cfg.trainer.get("accelerator"))
        record = RunRecord(Path(str(out)), cfg.seed, accelerator, list(job.overrides), began, launch)
        try:
            if (signum := sweepstop.stopping()) is not None:  # its sweep was stopped before this job started
                raise Stopped(signum)
            with lease_device(cfg, job) as lease:
                if lease is not None:  # the device slot this sweep job holds, and when (charrnn.cli.lease)
                    lease.report_to(record)
                ctx = RunContext(record=record, stopper=stopper, checkpoint=checkpoint, job=job)
                return train(pinned_config(cfg, lease), ctx)
        except Stopped as e:
            record.finish("stopped", stopped_by=e.signal_name, global_step=e.step, checkpoint=e.checkpoint)
            raise
        except Pruned as e:  # an Optuna trial its pruner stopped (lit/pruning.py): a result, not a failure
            record.finish(
                "pruned",
                best_val_bpc=e.best_val_bpc,
                global_step=e.step,
                checkpoint=e.checkpoint,
                trial=e.trial,
            )
            print(f"{PROG}: {e}; best val bpc {e.best_val_bpc:.4f}; checkpoint saved", file=sys.stderr)
            return e.best_val_bpc
        except BaseException as e:  # KeyboardInterrupt too: run.json says how a run that had started ended
            if (stop := stopper.stop_behind(e)) is not None:  # a library's error replaced the stop
                record.finish("stopped", stopped_by=stop.signal_name, global_step=None, checkpoint=None)
            elif record.written:
                record.finish("failed", error=(f"{type(e).__name__}: {e}".strip().splitlines() or [""])[0])
            raise


def exit_after_ending(signum: int, out: Any) -> None:
    """SIGTERM or SIGINT that came as the run ended (the step a trial was pruned at, a run with no test
    split): the run stays recorded as it ended, and the process (a whole sweep too) stops, 128 + N."""
    record = Path(str(out)) / "run.json"
    status = json.loads(record.read_text()).get("status") if record.is_file() else "unrecorded"
    name = signal.Signals(signum).name
    print(f"{PROG}: {name} came as the run ended; it ended {status} ({record}); stopping", file=sys.stderr)
    sys.exit(128 + int(signum))


def stop_line(stop: Stopped, out: Any) -> str:
    """What a stopped run says: what was saved and how to continue."""
    if stop.checkpoint is not None:
        return f"{stop}; checkpoint saved; continue with: {resume_command(out)}"
    if (Path(str(out)) / "checkpoints" / "last.ckpt").is_file():  # a resume stopped before it trained
        return f"{stop}; its last checkpoint is as it was; continue with: {resume_command(out)}"
    return f"{stop}; nothing was trained or saved; start the run again"


@hydra.main(version_base="1.3", config_path="pkg://charrnn.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """One run (or one sweep job): user mistakes end in one sentence on stderr and exit code 2.

    In a sweep (-m) a failed job is recorded in its ``error.txt`` and raised as :class:`JobFailed`,
    so the launcher goes on with the other jobs and :func:`cli` exits 1 at the end.
    """
    from charrnn.lit.stop import StopOnSignal, Stopped

    # A refused resume leaves the run it names as it was: no error.txt there.
    out, record_to = cfg.output_dir, None if cfg.get("resume") else cfg.output_dir
    job = job_from_hydra()
    multirun = job.in_sweep
    if job.launched_by("joblib"):  # before the run's own handlers, which put it back as the job ends
        sweepstop.ignore_stops_between_jobs()
    try:
        # outermost: a signal at any moment ends the run honestly; a sweep of other processes can send one
        with StopOnSignal().handling() as stopper, sweepstop.registered(out):
            result = run(cfg, job, stopper)
        if stopper.received in (signal.SIGTERM, signal.SIGINT):  # SIGUSR2 (SLURM's warning): done is done
            exit_after_ending(stopper.received, out)
        return result
    except Stopped as e:
        if e.signal_name == "SIGUSR2" and callable(signal.getsignal(signal.SIGUSR2)):
            hand_to_submitit(e, out, job)
        if sweepstop.stopping() is None:  # else the sweep says it once for all its jobs
            print(f"{PROG}: {stop_line(e, out)}", file=sys.stderr)
        sys.exit(e.exit_code)  # in a sweep too: the stop ends the whole sweep, non-zero
    except UserError as e:
        if os.environ.get("CHARRNN_FULL_ERROR") == "1":
            raise
        message = f"{PROG}: error: {e}"
        record_failure(record_to, message)
        if multirun and not (isinstance(e, SweepRefused) and job.launcher.endswith("BasicLauncher")):
            raise job_failed(out, message, job) from None  # the launcher goes on with the other jobs
        print(message, file=sys.stderr)
        sys.exit(2)  # a single run; or a refused sweep, stopped at its first job (basic launcher: here)
    except Exception as e:
        import traceback

        if (storage := storage_error(e)) is not None:  # a full disk or an unwritable dir is the user's to fix
            print(f"{PROG}: error: {storage}", file=sys.stderr)
            record_failure(record_to, f"{PROG}: error: {storage}")
            sys.exit(2)
        first = " ".join(str(e).split())[:400]  # the whole message on the first line (Hydra's span several)
        message = f"{PROG}: failed: {type(e).__name__}: {first}"
        record_failure(record_to, f"{message}\n\n{traceback.format_exc()}")
        if multirun:
            raise job_failed(out, message, job) from e
        raise


def cli() -> None:
    """``charrnn-train``: :func:`main`, with every error that reaches the top as one line.

    Hydra prints its own errors over several lines and exits 1, unless ``HYDRA_FULL_ERROR=1``, when
    it raises them with their types. So this sets that variable for Hydra and catches them here:
    config errors (a misspelt key, an unknown option) exit 2 with a spelling hint, failed sweep jobs
    exit 1 with one line each. A user's own ``HYDRA_FULL_ERROR=1`` still shows every traceback.
    """
    # the user's choice, for every job
    os.environ.setdefault("CHARRNN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if (sweep := sweeps.sweep_resume_target(sys.argv[1:])) is not None:
        try:
            given, sys.argv[1:] = sys.argv[1:], sweeps.resume_argv(sys.argv[1:], sweep)
            if sweeps.nothing_left(sweep, given):
                print(
                    f"{PROG}: every job of sweep {str(sweep)!r} is done; nothing left to train",
                    file=sys.stderr,
                )
                raise SystemExit(0)
        except UserError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    with without_job_error_line():
        try:
            run_reported(main)
        except SweepStopped as e:  # SIGTERM/SIGINT to a sweep of local job processes (charrnn.cli.sweepstop)
            print(f"{PROG}: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        finally:
            sweepstop.release()


if __name__ == "__main__":
    cli()
