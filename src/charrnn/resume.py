"""``resume=<run dir>``: continue a run in place, from its own config and ``last.ckpt``.

Hydra picks the run dir before the job starts: the resolvers in :mod:`charrnn.rundirs` send a
resumed job into the run's own directory; this module rebuilds the run's config there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from charrnn.errors import UserError


def resume_config(cfg: DictConfig) -> DictConfig:
    """``resume=<run dir>``: that run's saved config, continued in place from its ``last.ckpt``.

    ``key=value`` overrides given with ``resume=`` (e.g. a larger ``trainer.max_steps``) still apply.
    """
    run = Path(str(cfg.resume)).expanduser()
    saved, last = run / ".hydra" / "config.yaml", run / "checkpoints" / "last.ckpt"
    if not saved.is_file() or not last.is_file():
        raise UserError(f"resume={str(run)!r} is not a run directory with .hydra/config.yaml and checkpoints/last.ckpt; pass a charrnn run directory")
    resumed = OmegaConf.load(saved)
    limits = OmegaConf.masked_copy(resumed.trainer, ["max_steps", "max_epochs", "max_time"])
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in ("resume", "output_dir") or "/" in key:
            continue
        if "." not in key and OmegaConf.select(resumed, key) is not None and isinstance(OmegaConf.select(resumed, key), DictConfig):
            raise UserError(f"'{override}' switches a config group, which a resumed run cannot do; override single values such as trainer.max_steps=N")
        OmegaConf.update(resumed, key.lstrip("+"), yaml_value(value), force_add=True)
    record = run / "run.json"
    if record.is_file() and json.loads(record.read_text()).get("status") == "done" and limits == OmegaConf.masked_copy(resumed.trainer, list(limits)):
        raise UserError(f"run {str(run)!r} already finished; to train it further pass a larger trainer.max_steps / max_epochs / max_time with resume=")
    resumed.output_dir = cfg.output_dir
    resumed.ckpt_path = str(last)
    resumed.resume = None
    return resumed


def yaml_value(text: str) -> Any:
    return OmegaConf.create({"v": text}).v if text == "" else OmegaConf.create(f"v: {text}").v


def check_resume_matches(ckpt: dict[str, Any], vocab_chars: list[str], model_config: dict[str, Any], path: str) -> None:
    """A checkpoint only resumes a run whose data and model have its vocabulary and shapes."""
    hparams = ckpt["hyper_parameters"]
    if list(hparams.get("vocab", "")) != vocab_chars:
        raise UserError(
            f"checkpoint {path!r} was trained on a vocabulary of {len(hparams.get('vocab', ''))} characters, but this run's data has "
            f"{len(vocab_chars)} different ones; resume with the data config the checkpoint was trained on"
        )
    saved = hparams.get("model", {})
    differing = sorted(k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k))
    if differing:
        shown = ", ".join(f"model.{k}: checkpoint {saved.get(k)!r} vs config {model_config.get(k)!r}" for k in differing)
        raise UserError(f"checkpoint {path!r} holds a different model ({shown}); resume with the model config the checkpoint was trained with")
