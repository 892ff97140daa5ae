"""The SLURM launcher's checks of a request against the partition (``sinfo``), before anything is submitted.

A request no node of the partition can hold (CPUs, memory, GPUs) is one :class:`UserError` sentence naming
the resource and what the partition has (SLURM itself would leave it PENDING for ever); a nonsense number
in ``hydra.launcher`` is refused before any SLURM command runs. No torch, no submitit: Hydra's plugin scan
imports this at every start (through :mod:`charrnn.cli.slurm`).
"""

from __future__ import annotations

import re
import subprocess
from typing import Any, NamedTuple

from omegaconf import OmegaConf

from charrnn.core.errors import UserError


class Node(NamedTuple):
    name: str
    cpus: int
    mem_mb: int
    gpus: int


def gres_gpus(gres: str | None) -> int:
    """GPUs in a GRES string: ``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:2`` -> 4; ``(null)`` -> 0."""
    return sum(int(n) for n in re.findall(r"\bgpu(?::[^:,()]+)?:(\d+)", str(gres or "")))


def partition_nodes(partition: str | None) -> tuple[str, list[Node]]:
    """The partition (the cluster's default for None) and its nodes, each with its CPUs, memory and GPUs."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        raise UserError(
            "hydra/launcher=slurm needs SLURM's commands and sinfo is not on PATH; run the sweep "
            "on a SLURM login node, or use hydra/launcher=processes on this machine"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            "SLURM does not answer: sinfo took over 30 s; check the cluster (scontrol ping)"
        ) from None
    if done.returncode != 0:
        raise UserError(
            f"SLURM does not answer: sinfo failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    rows = [line.split("|") for line in done.stdout.splitlines() if line.count("|") == 4]
    names = list(dict.fromkeys(r[1].rstrip("*") for r in rows))
    if partition is None:
        if not (default := [r[1].rstrip("*") for r in rows if r[1].endswith("*")]):
            raise UserError(
                f"SLURM has no default partition; set hydra.launcher.partition to one of: {', '.join(names)}"
            )
        partition = default[0]
    nodes = {
        r[0]: Node(r[0], int(r[2].rstrip("+")), int(r[3].rstrip("+")), gres_gpus(r[4]))
        for r in rows
        if r[1].rstrip("*") == partition
    }
    if not nodes:
        raise UserError(
            f"SLURM has no partition {partition!r} (hydra.launcher.partition); it has: "
            f"{', '.join(names) or 'none'}"
        )
    return partition, list(nodes.values())


def trainer_gpus(trainer: Any, tasks_per_node: int, partition_has_gpus: bool) -> int:
    """GPUs per node a job's trainer uses: cpu -> 0; gpu -> its devices; ddp (devices -1) -> tasks_per_node;
    auto -> 1 where the partition has GPUs, else 0."""
    accelerator, devices = str(trainer.get("accelerator", "cpu")).lower(), trainer.get("devices", 1)
    if accelerator not in ("gpu", "cuda", "auto") or (accelerator == "auto" and not partition_has_gpus):
        return 0
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return tasks_per_node if text in ("-1", "auto") else max(1, int(text)) if text.isdigit() else 1


# The launcher's numeric keys: the least each may be, and what it counts (null leaves a key to SLURM or
# submitit).
LEAST = {
    "timeout_min": (1, "minutes of wall time per job"),
    "nodes": (1, "nodes per job"),
    "tasks_per_node": (1, "tasks per node"),
    "cpus_per_task": (1, "CPUs per task"),
    "gpus_per_node": (0, "GPUs per node"),
    "gpus_per_task": (1, "GPUs per task"),
    "cpus_per_gpu": (1, "CPUs per GPU"),
    "mem_gb": (0, "GB of memory per node (0: all of a node's, as sbatch --mem=0)"),
    "array_parallelism": (1, "jobs running at once"),
    "signal_delay_s": (0, "seconds before the time limit"),
    "max_num_timeout": (0, "time-outs a job may be requeued after"),
}


def check_numbers(params: dict[str, Any]) -> None:
    """One :class:`UserError` sentence naming the first numeric ``hydra.launcher`` key whose value is nonsense
    (sbatch would refuse it only after submitting, exit 1, in its own words)."""
    for key, (least, what) in LEAST.items():
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            null = (
                " or null"
                if key not in ("timeout_min", "nodes", "tasks_per_node", "array_parallelism")
                else ""
            )
            raise UserError(
                f"hydra.launcher.{key}={value} is not a number of {what}; give a whole number >= "
                f"{least}{null}"
            )


def check_request(params: dict[str, Any], partition: str, nodes: list[Node], gpu_source: str = "") -> None:
    """One :class:`UserError` sentence naming the resource when no node of the partition can hold a job."""
    tasks, cpt, mem_gb = (
        int(params.get("tasks_per_node") or 1),
        int(params.get("cpus_per_task") or 1),
        params.get("mem_gb"),
    )
    cpus, mem_mb = tasks * cpt, None if mem_gb is None else float(mem_gb) * 1024  # sbatch --mem=<n>GB: GiB
    gpus = max(
        int(params.get("gpus_per_node") or 0),
        int(params.get("gpus_per_task") or 0) * tasks,
        gres_gpus(params.get("gres")),
        gres_gpus((params.get("additional_parameters") or {}).get("gres")),
    )
    part, fix = f"SLURM partition {partition!r}", "choose another hydra.launcher.partition"
    if cpus > (most := max(n.cpus for n in nodes)):
        raise UserError(
            f"hydra.launcher.cpus_per_task={cpt} x tasks_per_node={tasks} asks for {cpus} CPUs on one node, "
            f"but the largest node of {part} has {most}; lower hydra.launcher.cpus_per_task or {fix}"
        )
    if mem_mb is not None and mem_mb > (most := max(n.mem_mb for n in nodes)):
        raise UserError(
            f"hydra.launcher.mem_gb={mem_gb} asks for {mem_gb} GB of memory on one node, but the largest "
            f"node of {part} has {most / 1024:.1f} GB; lower hydra.launcher.mem_gb (null: the cluster's "
            f"default) or {fix}"
        )
    if gpus > (most := max(n.gpus for n in nodes)):
        has, fix = (
            (f"at most {most} per node", fix)
            if most
            else (
                "none",
                "choose a GPU partition with hydra.launcher.partition or train on CPUs (trainer=cpu)",
            )
        )
        raise UserError(
            f"{gpu_source or f'hydra.launcher.gpus_per_node={gpus}'} asks for {gpus} GPU(s) on one node, "
            f"but {part} has {has}; {fix}"
        )
    fits = [n for n in nodes if n.cpus >= cpus and n.gpus >= gpus and (mem_mb is None or n.mem_mb >= mem_mb)]
    if len(fits) < (want := int(params.get("nodes") or 1)):
        mem = "the default memory" if mem_gb is None else f"{mem_gb} GB"
        raise UserError(
            f"hydra.launcher asks for {want} node(s) with {cpus} CPUs, {gpus} GPUs and {mem} each, "
            f"but {part} has {len(fits)} such node(s) of {len(nodes)}; ask for fewer or {fix}"
        )
