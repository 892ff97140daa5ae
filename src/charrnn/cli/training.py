"""Training as a function of its config: :func:`train` is the whole training path.

data -> vocabulary -> model -> LightningModule -> Trainer (loggers, callbacks) -> fit -> test on
the best checkpoint -> metrics.json. It reads nothing but its arguments: the final config (decided
by the entry layer, :mod:`charrnn.cli.train`, and never changed after) and a :class:`RunContext`.
A test can compose a config with Hydra's compose API and call it in-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from charrnn.cli import rundir
from charrnn.cli.jobs import Job
from charrnn.cli.record import RunRecord, corpus_info, write_json
from charrnn.core.errors import UserError
from charrnn.lit.checkpoint_io import SafeCheckpointIO
from charrnn.lit.module import CharRNNModule
from charrnn.lit.profiler import QuietProfiler
from charrnn.lit.stop import StopOnSignal

HPARAM_METRICS = ("val/bpc", "val/bpc_best")


@dataclass
class RunContext:
    """What a run needs beside its config, decided by the entry layer before training."""

    record: RunRecord  # run.json; train() starts it once the data is checked
    stopper: StopOnSignal  # turns SIGTERM/SIGINT/SIGUSR2 into a saved stop (lit/stop.py)
    checkpoint: dict[str, Any] | None = None  # the checkpoint the run continues from (read weights-only)
    job: Job = Job()  # a sweep job's launcher and number; Job() for a single run


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with a constructor's refusal of a value reported as a user error."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise UserError(str(e.__cause__)) from None
        if isinstance(
            e.__cause__, MisconfigurationException
        ):  # Lightning names its own argument, not our key
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


def train(cfg: DictConfig, ctx: RunContext) -> float:
    """Train one model as the final ``cfg`` says, from ``ctx.checkpoint`` if given; returns the best val bpc.

    ``run.json`` is started here, once the corpus is read and checked; how the run ends (done here,
    stopped or failed) is the entry layer's to record.
    """
    out, checkpoint, record = Path(cfg.output_dir), ctx.checkpoint, ctx.record
    datamodule = instantiate(cfg.data, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")  # reads and checks the corpus first: a bad file fails before any other work
    corpus = corpus_info(datamodule.corpus, datamodule.path, datamodule.text)
    if checkpoint is not None:
        rundir.check_same_corpus(out, corpus, bool(cfg.get("allow_corpus_change")))
    record.start(corpus=corpus)
    if checkpoint is not None:
        record.update(resumed_from=str(Path(cfg.ckpt_path).resolve()))
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in the config and run.json
    vocab = datamodule.vocab
    if record.enabled:  # rank 0 writes the run's files (under DDP every rank gets here)
        vocab.save(out / "vocab.json")
    record.update(vocab="".join(vocab.chars))
    model = instantiate(cfg.model, vocab_size=len(vocab))
    if checkpoint is not None:
        rundir.check_resume_matches(checkpoint, vocab.chars, model.config(), str(cfg.ckpt_path))
    module = instantiate(cfg.module, model=model, vocab=vocab, stateful=datamodule.batching == "stateful")
    return fit_and_test(cfg, ctx, datamodule, module)


def tensorboard_purge(logger_cfg: DictConfig, checkpoint: dict[str, Any] | None) -> dict[str, int]:
    """A resumed run's TensorBoard history has every step once: TensorBoard hides what the stopped
    attempt logged after its checkpoint (``purge_step``), which the resumed run logs again. A run that
    starts from step 0 in a dir that already has event files (a sweep job killed before its first
    checkpoint, started again by ``-m resume=<sweep dir>``) hides all of them the same way."""
    if not str(logger_cfg.get("_target_", "")).endswith("TensorBoardLogger"):
        return {}
    logdir = (
        Path(str(logger_cfg.save_dir))
        / str(logger_cfg.get("name") or "")
        / str(logger_cfg.get("version") or "")
    )
    existing = list(logdir.glob("events.out.tfevents.*"))
    if checkpoint is None and not existing:
        return {}
    files_sort_after(existing)
    return {"purge_step": int(checkpoint["global_step"]) if checkpoint is not None else 0}  # step g-1: step g


def files_sort_after(existing: list[Path]) -> None:
    """Wait (under a second, and only when needed) until the event files this run writes sort after
    ``existing``. TensorBoard reads a dir's event files in name order, ``events.out.tfevents.<whole
    seconds>.<host>.<pid>.<n>``, and a purge hides only the steps it read before it: a stopped attempt's
    file made in the same second as the resumed run's, by a process whose pid sorts later, would be
    read after the purge and show its steps twice (found by the random-kill test, 1 run in ~30)."""
    stamps = [int(f.name.split(".")[3]) for f in existing if f.name.split(".")[3].isdigit()]
    if stamps and time.time() < max(stamps) + 1:
        time.sleep(max(stamps) + 1 - time.time())


def make_trainer(cfg: DictConfig, loggers: list[Any], callbacks: list[Any], **overrides: Any) -> L.Trainer:
    """``cfg.trainer`` with the run's loggers and callbacks, the atomic checkpoint writer and the quiet
    profiler (unless the config names a profiler); ``overrides`` go to the Trainer too (the bench's)."""
    # In a SLURM job, requeueing is submitit's (SIGUSR2, see lit/stop.py), never Lightning's own (SIGUSR1).
    slurm = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    quiet = {} if cfg.trainer.get("profiler") else {"profiler": QuietProfiler()}
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[SafeCheckpointIO(), *slurm],
        **quiet,
        **overrides,
    )


def run_callbacks(cfg: DictConfig, stopper: StopOnSignal) -> list[Any]:
    """The config's callbacks and the signal stopper, as a run trains with them."""
    return [*(instantiate(c) for c in (cfg.get("callbacks") or {}).values()), stopper]


def fit_and_test(cfg: DictConfig, ctx: RunContext, datamodule: Any, module: CharRNNModule) -> float:
    """Trainer; fit; test the best checkpoint; write metrics.json and print the summary."""
    out, record, checkpoint = Path(cfg.output_dir), ctx.record, ctx.checkpoint
    loggers = (
        [instantiate(c, **tensorboard_purge(c, checkpoint)) for c in cfg.logger.values()]
        if cfg.get("logger")
        else []
    )
    trainer = make_trainer(cfg, loggers, run_callbacks(cfg, ctx.stopper))
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
    test = (
        trainer.test(module, datamodule=datamodule, verbose=False) if datamodule.has_test() else []
    )  # data.split test 0: none
    best_bpc = float(module.best_val_bpc)

    steps_here = trainer.global_step - (int(checkpoint.get("global_step", 0)) if checkpoint else 0)
    chars = (
        steps_here * datamodule.batch_size * datamodule.seq_len
    )  # trained by this call (resumes count their part)
    metrics = {
        "best_val_bpc": best_bpc,
        "best_checkpoint": best_path,
        "final": final_val,
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "global_step": trainer.global_step,
        "epochs": datamodule.epochs_entered(trainer),  # the last may be partial
        "train_chars": chars,
        "fit_seconds": round(fit_seconds, 3),
        "train_chars_per_second": round(chars / fit_seconds, 1) if fit_seconds > 0 else None,
        "wall_seconds": round(time.time() - record.started, 3),
    }
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
        record.finish("done", best_val_bpc=best_bpc, global_step=trainer.global_step)
        print(
            "\n--- sample from the best checkpoint "
            f"---\n{module.sample_text(seed=cfg.seed)}\n---------------------------------------"
        )
        print(f"run dir:       {out}")
        test_bpc = (
            f"{metrics['test']['test/bpc']:.4f}" if "test/bpc" in metrics["test"] else "none (no test split)"
        )
        print(f"best val bpc:  {best_bpc:.4f}   test bpc: {test_bpc}")
        print(f"throughput:    {metrics['train_chars_per_second']} chars/s over {steps_here} steps")
        print(f"watch it:      tensorboard --logdir {out}")
    return best_bpc
