"""``charrnn-train``: settle the config, check it, build everything with Hydra, fit, test, write metrics.json.

Read top to bottom, :func:`main` then :func:`train` is the whole training path:
settle (``resume=`` / ``ckpt_path=``) -> checks -> data -> vocabulary -> model -> LightningModule ->
Trainer (loggers, callbacks) -> fit -> test on the best checkpoint -> summary.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from charrnn.cli import rundir
from charrnn.cli.checks import check_run
from charrnn.cli.jobs import JobFailed, SweepRefused, launcher_target, share_machine
from charrnn.cli.lease import Lease, lease_device
from charrnn.cli.record import RunRecord, corpus_info, write_json
from charrnn.core.errors import UserError
from charrnn.core.files import storage_error
from charrnn.lit.checkpoint_io import SafeCheckpointIO
from charrnn.lit.module import CharRNNModule
from charrnn.lit.stop import StopOnSignal, Stopped

HPARAM_METRICS = ("val/bpc", "val/bpc_best")
PROG = "charrnn-train"


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with a constructor's refusal of a value reported as a user error."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise UserError(str(e.__cause__)) from None
        if isinstance(e.__cause__, MisconfigurationException):  # Lightning names its own argument, not our key
            target = str(node.get("_target_", "")).rsplit(".", 1)[-1]
            raise UserError(f"{target} refused its config: {' '.join(str(e.__cause__).split())}") from None
        raise


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"model.hidden_size": 256, ...}`` for TensorBoard's HPARAMS tab."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    container = OmegaConf.to_container(cfg, resolve=True)
    for key in ("output_dir", "module"):  # module repeats optim, scheduler and sample
        container.pop(key, None)  # type: ignore[union-attr]
    walk(container, "")
    return flat


def log_hparams(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Register the config with val/bpc as metrics, so HPARAMS compares runs.

    Lightning's ``log_hyperparams(params, metrics)`` would also log those metrics as a scalar at
    step 0; this writes only the HPARAMS summaries, with a public SummaryWriter of the same run dir.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    if not trainer.is_global_zero or not trainer.log_dir:
        return
    writer = SummaryWriter(trainer.log_dir)
    for summary in hparams(flat_config(cfg), {name: 0.0 for name in HPARAM_METRICS}):
        writer.file_writer.add_summary(summary)
    writer.close()


def train(cfg: DictConfig, checkpoint: dict[str, Any] | None, stopper: StopOnSignal, lease: Lease | None = None) -> float:
    """Train one model as the settled ``cfg`` says, from ``checkpoint`` if given; returns the best val bpc."""
    out = Path(cfg.output_dir)
    datamodule = build(cfg.data, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")  # reads and checks the corpus first: a bad file fails before any other work
    corpus = corpus_info(datamodule.corpus, datamodule.path, datamodule.text)
    if checkpoint is not None:
        rundir.check_same_corpus(out, corpus, bool(cfg.get("allow_corpus_change")))
    record = RunRecord(out, cfg.seed, str(cfg.trainer.get("accelerator")), list(HydraConfig.get().overrides.task))
    if lease is not None:  # the device slot this sweep job holds, and when (charrnn.cli.lease)
        lease.report_to(record)
    if checkpoint is not None:
        record.update(resumed_from=str(Path(cfg.ckpt_path).resolve()))
    try:
        L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in the config and run.json
        vocab = datamodule.vocab
        vocab.save(out / "vocab.json")
        record.update(corpus=corpus, vocab="".join(vocab.chars))
        model = build(cfg.model, vocab_size=len(vocab))
        if checkpoint is not None:
            rundir.check_resume_matches(checkpoint, vocab.chars, model.config(), str(cfg.ckpt_path))
        module = build(cfg.module, model=model, vocab=vocab, stateful=datamodule.batching == "stateful")
        return fit_and_test(cfg, out, record, checkpoint, datamodule, module, stopper)
    except Stopped as e:
        record.finish("stopped", stopped_by=e.signal_name, global_step=e.step, checkpoint=e.checkpoint)
        raise
    except BaseException as e:  # KeyboardInterrupt too: run.json says how the run ended
        record.finish("failed", error=(f"{type(e).__name__}: {e}".strip().splitlines() or [""])[0])
        raise


def tensorboard_purge(logger_cfg: DictConfig, checkpoint: dict[str, Any] | None) -> dict[str, int]:
    """A resumed run's TensorBoard history has every step once: TensorBoard hides what the stopped
    attempt logged after its checkpoint (``purge_step``), which the resumed run logs again."""
    if checkpoint is None or not str(logger_cfg.get("_target_", "")).endswith("TensorBoardLogger"):
        return {}
    return {"purge_step": int(checkpoint["global_step"])}  # step g-1 holds what step g logged: later ones go


def fit_and_test(
    cfg: DictConfig, out: Path, record: RunRecord, checkpoint: dict[str, Any] | None, datamodule: Any, module: CharRNNModule, stopper: StopOnSignal
) -> float:
    """Trainer; fit; test the best checkpoint; write metrics.json and print the summary."""
    loggers = [build(c, **tensorboard_purge(c, checkpoint)) for c in cfg.logger.values()] if cfg.get("logger") else []
    callbacks = [build(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    callbacks.append(stopper)
    # In a SLURM job, requeueing is submitit's (SIGUSR2, see lit/stop.py), never Lightning's own (SIGUSR1).
    slurm = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    trainer: L.Trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=[SafeCheckpointIO(), *slurm])
    log_hparams(trainer, cfg)

    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.time() - fit_started
    final_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if not final_val and checkpoint is not None:
        # Resumed after the run's latest validation (none since, or nothing left to train): its
        # figures, which the checkpoint kept (lit/module.py), as an unbroken run reports them.
        final_val = dict(checkpoint.get("last_validation", {}))

    # Test and sample the best checkpoint's weights, loaded explicitly (the final weights if none was kept).
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best_path:
        module.load_state_dict(rundir.read_checkpoint(best_path)["state_dict"])
    test = trainer.test(module, datamodule=datamodule, verbose=False) if datamodule.has_test() else []  # data.split test 0: none
    best_bpc = float(module.best_val_bpc)

    steps_here = trainer.global_step - (int(checkpoint.get("global_step", 0)) if checkpoint else 0)
    chars = steps_here * datamodule.batch_size * datamodule.seq_len  # trained by this call (resumes count their part)
    metrics = {
        "best_val_bpc": best_bpc,
        "best_checkpoint": best_path,
        "final": final_val,
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "global_step": trainer.global_step,
        "epochs": math.ceil(trainer.global_step / datamodule.batches_per_epoch()),  # entered; the last may be partial
        "train_chars": chars,
        "fit_seconds": round(fit_seconds, 3),
        "train_chars_per_second": round(chars / fit_seconds, 1) if fit_seconds > 0 else None,
        "wall_seconds": round(time.time() - record.started, 3),
    }
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
        record.finish("done", best_val_bpc=best_bpc, global_step=trainer.global_step)
        print(f"\n--- sample from the best checkpoint ---\n{module.sample_text(seed=cfg.seed)}\n---------------------------------------")
        print(f"run dir:       {out}")
        test_bpc = f"{metrics['test']['test/bpc']:.4f}" if "test/bpc" in metrics["test"] else "none (no test split)"
        print(f"best val bpc:  {best_bpc:.4f}   test bpc: {test_bpc}")
        print(f"throughput:    {metrics['train_chars_per_second']} chars/s over {steps_here} steps")
        print(f"watch it:      tensorboard --logdir {out}")
    return best_bpc


def record_failure(out: Any, message: str) -> None:
    """``<run dir>/error.txt``: the error's first line first (charrnn-report lists it), details after."""
    if out is None:
        return
    try:
        (Path(str(out)) / "error.txt").write_text(message.rstrip() + "\n")
    except (OSError, ValueError):
        pass


def job_failed(out: Any, message: str) -> JobFailed:
    """A sweep job's failure as one sentence naming the job and where its details are."""
    job = HydraConfig.get().job
    return JobFailed(f"{message} [sweep job {job.num}: {out}; details in error.txt there; charrnn-report {Path(str(out)).parent} lists every job]")


def hand_to_submitit(stop: Stopped, out: Any) -> None:
    """A SLURM job warned of its time limit (SIGUSR2) has saved ``last.ckpt``: submitit's handler, back in
    place, requeues the job and exits (the next attempt continues from that checkpoint, rundir.settle).
    Past ``hydra.launcher.max_num_timeout`` time-outs it refuses, and the job fails in one sentence."""
    print(f"{PROG}: {stop}; checkpoint saved; handing SIGUSR2 to submitit to requeue the job", file=sys.stderr)
    try:
        signal.raise_signal(signal.SIGUSR2)
    except Exception as e:  # submitit's UncompletedJobError
        why = " ".join(str(e).split()).rstrip(".")
        message = f"{PROG}: error: {stop}, near its time limit, and not requeued: {why} (hydra.launcher.max_num_timeout); continue with: charrnn-train resume={out}"
        print(message, file=sys.stderr)
        record_failure(out, message)
        raise job_failed(out, message) from None


@hydra.main(version_base="1.3", config_path="pkg://charrnn.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """One run (or one sweep job): user mistakes end in one sentence on stderr and exit code 2.

    In a sweep (-m) a failed job is recorded in its ``error.txt`` and raised as :class:`JobFailed`,
    so the launcher goes on with the other jobs and :func:`cli` exits 1 at the end.
    """
    # A refused resume leaves the run it names as it was: no error.txt there.
    out, record_to = cfg.output_dir, None if cfg.get("resume") else cfg.output_dir
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        cfg, checkpoint = rundir.settle(cfg)  # first: every check below sees the config the run trains with
        check_run(cfg)
        share_machine(cfg)
        with rundir.lock_run(out), lease_device(cfg) as lease, StopOnSignal().handling() as stopper:
            return train(cfg, checkpoint, stopper, lease)
    except Stopped as e:
        if e.signal_name == "SIGUSR2" and callable(signal.getsignal(signal.SIGUSR2)):
            hand_to_submitit(e, out)
        print(f"{PROG}: {e}; checkpoint saved; continue with: charrnn-train resume={out}", file=sys.stderr)
        sys.exit(e.exit_code)  # in a sweep too: the stop ends the whole sweep, non-zero
    except UserError as e:
        if os.environ.get("CHARRNN_FULL_ERROR") == "1":
            raise
        message = f"{PROG}: error: {e}"
        print(message, file=sys.stderr)
        record_failure(record_to, message)
        if multirun and not (isinstance(e, SweepRefused) and launcher_target().endswith("BasicLauncher")):
            raise job_failed(out, message) from None  # the launcher goes on with the other jobs
        sys.exit(2)  # a single run; or a refused sweep, stopped at its first job (basic launcher: this process)
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
            raise job_failed(out, message) from e
        raise


def hydra_error_line(error: BaseException) -> str:
    """Hydra's multi-line config error (and its OmegaConf cause) as one line, without search-path hints."""
    text = str(error) + (f"\n{error.__cause__}" if error.__cause__ is not None else "")
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("Config search path", "provider=", "full_key:", "object_type=")):
            continue
        if raw.startswith("\t") and kept and kept[-1].startswith("Available options"):
            kept[-1] += (" " if kept[-1].endswith(":") else ", ") + line
        else:
            kept.append(line)
    return " ".join(kept)


def cli() -> None:
    """``charrnn-train``: :func:`main`, with every error that reaches the top as one line.

    Hydra prints its own errors over several lines and exits 1, unless ``HYDRA_FULL_ERROR=1``, when
    it raises them with their types. So this sets that variable for Hydra and catches them here:
    config errors (a misspelt key, an unknown option) exit 2 with a spelling hint, failed sweep jobs
    exit 1 with one line each. A user's own ``HYDRA_FULL_ERROR=1`` still shows every traceback.
    """
    os.environ.setdefault("CHARRNN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))  # the user's choice, for every job
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if os.environ["CHARRNN_FULL_ERROR"] == "1":
        main()
        return
    try:
        main()
    except JobFailed as e:
        print(str(e) if str(e).startswith(f"{PROG}:") else f"{PROG}: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except HydraException as e:
        hint = "check the spelling against `charrnn-train --help`, which lists every group and key"
        print(f"{PROG}: error: {hydra_error_line(e)}; {hint}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:
        # Hydra makes the run dir before the job starts: a place that cannot be written is the user's to fix.
        storage = storage_error(e, fix="set hydra.run.dir=DIR (or hydra.sweep.dir=DIR under -m) to a writable place", creating=True)
        if storage is None:
            raise
        print(f"{PROG}: error: {storage}", file=sys.stderr)
        raise SystemExit(2) from None
    except UserError as e:  # a launcher's refusal before it submits (hydra/launcher=slurm: a request no node can hold)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as e:  # submitit, in this process: a job that ended without a result (scancel, timeout), sbatch refusing
        if not type(e).__module__.startswith("submitit."):
            raise
        from charrnn.cli.slurm import launch_failure_line

        line = launch_failure_line(e)
        if line is None:
            raise
        print(f"{PROG}: {line}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli()
