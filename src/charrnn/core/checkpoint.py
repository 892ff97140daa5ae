"""The one place that reads a checkpoint and rebuilds its model (torch only: no Lightning, no Hydra).

Checkpoints are loaded with ``torch.load(weights_only=True)``: a checkpoint passed around by
someone else can hold tensors and plain values, never code that runs on load. Everything the
project saves into a checkpoint (hyper-parameters, vocabulary, optimizer and loop state) is plain
data, so nothing needs allow-listing.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn.core.errors import UserError
from charrnn.core.model import CharRNN
from charrnn.core.vocab import Vocabulary

MODEL_PREFIX = "model."


class CheckpointError(UserError):
    """A path that is not a usable charrnn checkpoint."""


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with the vocabulary saved in it."""

    model: CharRNN
    vocab: Vocabulary
    checkpoint_path: Path
    checkpoint: dict[str, Any]

    @property
    def run_dir(self) -> Path | None:
        """The run directory holding the checkpoint (``<run>/checkpoints/x.ckpt``), if it is in one."""
        parent = self.checkpoint_path.parent
        return parent.parent if parent.name == "checkpoints" else None


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it is a file; for a run dir, its best checkpoint, else ``last.ckpt``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist; pass a run directory or a .ckpt file")
    if p.is_file():
        return p
    ckpt_dir = p / "checkpoints"
    best = sorted(ckpt_dir.glob("best-*.ckpt"))
    if best:
        return best[-1]
    if (ckpt_dir / "last.ckpt").is_file():
        return ckpt_dir / "last.ckpt"
    raise CheckpointError(
        f"{str(p)!r} has no checkpoints/best-*.ckpt or checkpoints/last.ckpt; pass a run directory or a "
        ".ckpt file"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded without running any code from the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {str(p)!r} {'is a directory' if p.is_dir() else 'does not exist'}; pass the path of "
            "a .ckpt file"
        )
    if not zipfile.is_zipfile(p):
        raise CheckpointError(
            f"{str(p)!r} is not a checkpoint (not a torch.save file, or truncated); pass a .ckpt written by "
            "charrnn-train"
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the offending global on a line of its long message: show that line.
        lines = [line.strip() for line in str(e).splitlines() if "global" in line.lower()] or [
            "unsafe content"
        ]
        raise CheckpointError(
            f"refusing to load {str(p)!r}: it holds objects other than tensors and plain values, which "
            f"could run code ({lines[-1][:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{str(p)!r} is not a readable checkpoint (truncated or corrupted?): "
            f"{str(e).strip().splitlines()[0][:160]}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{str(p)!r} is not a charrnn checkpoint (no state_dict and hyper_parameters)")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a run directory or a checkpoint file, weights loaded, in eval mode."""
    ckpt_path = find_checkpoint(path)
    ckpt = read_checkpoint(ckpt_path)
    hparams = ckpt["hyper_parameters"]
    try:
        vocab = Vocabulary(list(hparams["vocab"]))
        model = CharRNN(**hparams["model"])
        state = {
            k[len(MODEL_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)
        }
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{str(ckpt_path)!r} does not hold a charrnn model this version can rebuild: "
            f"{str(e).splitlines()[0][:160]}"
        ) from None
    return LoadedModel(model.to(device).eval(), vocab, ckpt_path, ckpt)
