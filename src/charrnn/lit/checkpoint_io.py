"""Lightning's checkpoint I/O made safe both ways (reading is :mod:`charrnn.core.checkpoint`, which needs no
Lightning)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from charrnn.core.checkpoint import read_checkpoint
from charrnn.core.files import atomic_write, storage_error


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe both ways.

    Saving writes a temporary file in the same directory and renames it over the target, so a
    kill during the write never leaves a truncated file as the only copy. Loading (``ckpt_path=``
    resume, ``trainer.test(ckpt_path=...)``) goes through :func:`read_checkpoint`: weights only.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except (OSError, RuntimeError) as e:
            raise (storage_error(e, path) or e) from None

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path)
