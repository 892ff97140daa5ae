"""The one reading of ``trainer.accelerator`` and ``trainer.devices``: what devices a trainer config asks for.

The device check, a sweep job's share of the machine, the device lease and the SLURM launcher all
ask this question; each asks it here, so they never disagree about what ``devices: -1`` or
``devices: "0,1"`` means.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf


@dataclass(frozen=True)
class DeviceRequest:
    accelerator: str  # as written, lower-case: cpu, gpu, cuda, auto, ...
    cuda: bool  # trains on CUDA GPUs
    count: int  # devices per node, which is also Lightning's processes per node
    spec: str  # ``devices`` as written ("1", "-1", "auto", "0,1", "[0, 1]")


def visible_cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_request(
    trainer: Any, cuda_devices: int | None = None, auto_uses_cuda: bool | None = None
) -> DeviceRequest:
    """What ``trainer`` asks for on a node with ``cuda_devices`` GPUs (default: this machine's).

    ``auto_uses_cuda`` says whether ``accelerator: auto`` lands on CUDA there (default: whether the
    node has GPUs). ``devices: -1`` or ``auto`` means every GPU on CUDA, every core for ``cpu`` with
    ``-1``, one device otherwise, as Lightning reads them.
    """
    cuda_devices = visible_cuda_devices() if cuda_devices is None else cuda_devices
    accelerator = str(trainer.get("accelerator", "cpu")).lower()
    auto_uses_cuda = cuda_devices > 0 if auto_uses_cuda is None else auto_uses_cuda
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and auto_uses_cuda)
    devices = trainer.get("devices", 1)
    listed = OmegaConf.is_list(devices) or isinstance(devices, (list, tuple))
    spec = str(list(devices) if listed else devices).strip()
    if listed:
        count = len(devices)
    elif "," in spec:
        count = len([d for d in spec.split(",") if d.strip()])
    elif spec in ("-1", "auto"):
        if cuda:
            count = max(cuda_devices, 1)
        elif spec == "-1" and accelerator == "cpu":
            count = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            )
        else:
            count = 1
    else:
        count = int(spec) if spec.lstrip("-").isdigit() else 1
    return DeviceRequest(accelerator, cuda, count, spec)
