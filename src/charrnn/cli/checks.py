"""Rules that span config keys, or belong to keys no constructor of ours owns, checked before any work.

Every single value is checked by the constructor that takes it (``CharRNN``, ``CharDataModule``,
``CharRNNModule``, ``WarmupCosine``), naming its key; what is left here is what no one
constructor can see: whether training has an end, whether the devices asked for exist, whether
DDP can run inside this sweep and with this batching, and the keys handed to Lightning.
"""

from __future__ import annotations

from omegaconf import DictConfig

from charrnn.cli.devices import device_request, visible_cuda_devices
from charrnn.cli.jobs import Job, SweepRefused
from charrnn.core.errors import UserError, checked


def check_run(cfg: DictConfig, job: Job) -> None:
    """Raise :class:`UserError` for the first rule ``cfg`` breaks (devices first: the root cause of any other
    device complaint)."""
    check_devices(cfg.trainer)
    check_sweep_job(cfg, job)
    check_trainer(cfg.trainer)
    check_monitors(cfg.get("callbacks") or {})


def check_devices(trainer_cfg: DictConfig) -> None:
    """Refuse, before any work, a GPU request this machine cannot serve."""
    available = visible_cuda_devices()
    request = device_request(trainer_cfg, available)
    if request.accelerator in ("gpu", "cuda"):
        wanted = max(request.count, 1)
        if available < wanted:
            raise UserError(
                f"trainer.accelerator={request.accelerator} asks for {wanted} CUDA GPU(s) but this machine "
                f"has {available}; use trainer=cpu or trainer=auto, or install a CUDA build of torch on a "
                "machine with GPUs"
            )


def check_sweep_job(cfg: DictConfig, job: Job) -> None:
    """Refuse a multi-process (DDP) trainer inside a sweep that Lightning would break, before any work.

    Lightning's script launcher starts ranks 1.. by re-running this command line, which for
    ``-m`` is the whole sweep again, in new directories (hydra#2070); SLURM (hydra/launcher=slurm)
    starts the ranks itself, so that is the one launcher where sweep jobs may use several devices,
    one SLURM task per rank.
    """
    devices, num_nodes = device_request(cfg.trainer).count, int(cfg.trainer.get("num_nodes", 1) or 1)
    processes = devices * num_nodes
    if job.launcher.endswith("SlurmLauncher"):
        check_slurm_ranks(devices, num_nodes, job)
    elif job.in_sweep and processes > 1:
        raise SweepRefused(
            f"a sweep (-m) job cannot start {processes} DDP processes with this launcher, because Lightning "
            "would re-run the whole sweep in every extra rank; run each DDP job on its own without -m, or "
            "sweep with hydra/launcher=slurm (one SLURM task per device)"
        )
    if (
        processes > 1
        and cfg.data.get("batching") == "stateful"
        and cfg.trainer.get("use_distributed_sampler", True)
    ):
        raise UserError(
            "DDP with data.batching=stateful needs trainer.use_distributed_sampler=false (trainer=ddp and "
            "trainer=ddp_cpu set it): Lightning's sampler would deal each stream's windows to different "
            "ranks and break the carried hidden state"
        )


def check_slurm_ranks(devices: int, num_nodes: int, job: Job) -> None:
    """Under hydra/launcher=slurm every SLURM task of a job is one DDP rank (Lightning's SLURMEnvironment
    starts no processes): the trainer's processes per node and nodes must be the job's tasks and nodes."""
    if devices == job.tasks_per_node and num_nodes == job.nodes:
        return
    raise SweepRefused(
        f"hydra.launcher.tasks_per_node={job.tasks_per_node} x nodes={job.nodes} starts that many ranks per "
        f"job (one per SLURM task), but the trainer runs {devices} process(es) per node x "
        f"trainer.num_nodes={num_nodes}; make them equal: trainer=ddp_cpu hydra.launcher.tasks_per_node=2 on "
        "CPUs, trainer=ddp hydra.launcher.tasks_per_node=<GPUs per node> on GPUs, or tasks_per_node=1 for "
        "one-process trainers"
    )


def _limit(trainer: DictConfig, key: str) -> int | None:
    value = trainer.get(key)
    if value is None or value == -1:
        return None
    return checked(f"trainer.{key}", value, integer=True, low=1)


def check_trainer(trainer: DictConfig) -> None:
    """Lightning's own arguments: an end to training, and numbers Lightning would take without a word or fail
    on later."""
    max_steps, max_epochs = _limit(trainer, "max_steps"), _limit(trainer, "max_epochs")
    if max_steps is None and max_epochs is None and not trainer.get("max_time"):
        raise UserError("training has no end: set trainer.max_steps, trainer.max_epochs or trainer.max_time")
    interval = trainer.get("val_check_interval")
    if interval is not None:
        if isinstance(interval, float) and interval <= 1.0:
            checked("trainer.val_check_interval", interval, low=0.0, low_open=True)
        else:
            checked("trainer.val_check_interval", interval, integer=True, low=1)
    if trainer.get("gradient_clip_val") is not None:
        checked("trainer.gradient_clip_val", trainer.gradient_clip_val, low=0.0)
    checked("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), integer=True, low=1)


# What the LightningModule puts in Lightning's callback_metrics (lit/module.py), which callbacks can watch.
MONITORABLE = ("val/bpc", "val/loss", "val/acc", "val/bpc_best", "train/loss")


def check_monitors(callbacks: DictConfig) -> None:
    """A callback watching a metric that is never logged (early stopping, a checkpoint) fails only at the
    first validation, after training work; refuse it before any."""
    for name, node in callbacks.items():
        monitor = node.get("monitor") if hasattr(node, "get") else None
        if monitor is not None and str(monitor) not in MONITORABLE:
            raise UserError(
                f"callbacks.{name}.monitor={monitor!r} is not a metric charrnn logs; set it to one of: "
                f"{', '.join(MONITORABLE)}"
            )
