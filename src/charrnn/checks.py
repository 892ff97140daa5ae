"""Up-front checks of a composed training config: each mistake becomes one sentence naming the key.

They run before any data is read or model built, so a typo never costs a half-finished run.
The constructors check their own arguments too; this module exists so that the message can
name the Hydra key (``model.hidden_size``) and the fix, which a constructor cannot know.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from charrnn.errors import UserError
from charrnn.model import CELLS, INPUTS

DATA_BATCHINGS = ("stateful", "random")


def _number(cfg: DictConfig, key: str, integer: bool) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, (int, float)) or (integer and not isinstance(node, int)):
        kind = "a whole number" if integer else "a number"
        raise UserError(f"{key} must be {kind}, got {node!r}; set {key}=<{kind}>")
    return node


def _at_least(cfg: DictConfig, key: str, low: int) -> None:
    value = _number(cfg, key, integer=True)
    if value is not None and value < low:
        raise UserError(f"{key} must be at least {low}, got {value}; set {key}=<{low} or more>")


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`UserError` for the first invalid value of ``cfg``."""
    model, data, trainer = cfg.model, cfg.data, cfg.trainer
    if model.get("cell") not in CELLS:
        raise UserError(f"unknown model.cell={model.get('cell')!r}; choose one of {', '.join(CELLS)} (or model=rnn|lstm|gru)")
    if model.get("input", "onehot") not in INPUTS:
        raise UserError(f"unknown model.input={model.get('input')!r}; choose onehot or embedding")
    for key in ("model.hidden_size", "model.num_layers", "data.seq_len", "data.batch_size"):
        _at_least(cfg, key, 1)
    _at_least(cfg, "data.num_workers", 0)
    dropout = _number(cfg, "model.dropout", integer=False)
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}; set e.g. model.dropout=0.2")
    if data.get("batching", "stateful") not in DATA_BATCHINGS:
        raise UserError(f"unknown data.batching={data.get('batching')!r}; choose stateful or random")

    split = data.get("split")
    if data.get("corpus") != "hello":
        fractions = list(split) if split is not None else []
        if len(fractions) != 3 or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in fractions):
            raise UserError(f"data.split must be three fractions train,val,test, got {fractions}; set e.g. data.split=[0.9,0.05,0.05]")
        if any(f <= 0 for f in fractions):
            raise UserError(f"data.split={fractions} leaves an empty train, val or test split; give each a fraction above 0, e.g. [0.9,0.05,0.05]")

    lr = _number(cfg, "optim.lr", integer=False)
    if lr is None or lr <= 0:
        raise UserError(f"optim.lr must be greater than 0, got {lr}; set e.g. optim.lr=1e-3")
    decay = _number(cfg, "optim.weight_decay", integer=False)
    if decay is not None and decay < 0:
        raise UserError(f"optim.weight_decay must be 0 or more, got {decay}")

    max_steps = _number(cfg, "trainer.max_steps", integer=True)
    max_epochs = _number(cfg, "trainer.max_epochs", integer=True)
    for key, value in (("trainer.max_steps", max_steps), ("trainer.max_epochs", max_epochs)):
        if value is not None and value != -1 and value < 1:
            raise UserError(f"{key} must be a positive number (or -1 for no limit), got {value}")
    if (max_steps in (None, -1)) and (max_epochs in (None, -1)) and not trainer.get("max_time"):
        raise UserError("training has no end: set trainer.max_steps, trainer.max_epochs or trainer.max_time")
    interval = trainer.get("val_check_interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0):
        raise UserError(f"trainer.val_check_interval must be a number of steps (int >= 1) or a fraction of an epoch, got {interval!r}")
    clip = _number(cfg, "trainer.gradient_clip_val", integer=False)
    if clip is not None and clip < 0:
        raise UserError(f"trainer.gradient_clip_val must be 0 or more (or null for none), got {clip}")

    sample = cfg.get("sample") or {}
    _at_least(cfg, "sample.length", 0)
    temperature = _number(cfg, "sample.temperature", integer=False)
    if sample and (temperature is None or temperature <= 0):
        raise UserError(f"sample.temperature must be greater than 0, got {temperature}")
