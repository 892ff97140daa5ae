"""Where Hydra puts a run dir: importing this module registers the OmegaConf resolvers
``conf/hydra/default.yaml`` uses (``charrnn-train`` does; so must anything that composes the config
with Hydra's compose API).

* ``run_id``: a short random suffix, so two runs started in the same second never share a dir.
* ``job_dirname``: ``<num>_<overrides>`` for a sweep job, hashed short enough for a file name.
* ``run_dir`` / ``config_subdir``: ``resume=<run dir>`` continues in that dir; the resuming call's
  config goes to ``.hydra/resume-<id>/`` so the run's original ``.hydra/config.yaml`` survives. A
  path that is no run dir gets a fresh dir (nothing is written into it) and the job reports it.

Light on purpose (OmegaConf only): Hydra composes the config, ``--help`` included, before any torch.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def job_dirname(num: Any, overrides: Any, limit: int = 200) -> str:
    """``<num>_<overrides>`` for a sweep job's dir, shortened with a hash to stay a legal file name."""
    name, overrides = f"{num}_{overrides}", str(overrides)
    if len(name.encode()) <= limit:
        return name
    head = overrides.encode()[: limit - 20].decode(errors="ignore")
    return f"{num}_{head}~{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"


def resumable(resume: Any) -> bool:
    """Whether ``resume`` names a run directory (one with its saved Hydra config)."""
    return bool(resume) and (Path(str(resume)) / ".hydra" / "config.yaml").is_file()


# Cached: every use within one config resolves to the same value.
OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)
OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver(
    "run_dir", lambda resume, new: str(resume) if resumable(resume) else new, replace=True
)
# Keyed on the job's own dir, so a job of a resumed sweep that had started keeps its original config too.
OmegaConf.register_new_resolver(
    "config_subdir", lambda out, rid: f".hydra/resume-{rid}" if resumable(out) else ".hydra", replace=True
)
