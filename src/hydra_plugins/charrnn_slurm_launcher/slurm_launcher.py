"""The class conf/hydra/launcher/slurm.yaml names; its logic is
:class:`charrnn.cli.slurm.SubmititSlurmLauncher`.

The class is defined only where hydra-submitit-launcher is installed (the ``sweeps`` extra): Hydra imports
every module of every plugin package at each start, and an ImportError here would be a warning on every
run of any Hydra app in the environment.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
    from charrnn.cli import slurm

    class SubmititSlurmLauncher(slurm.SubmititSlurmLauncher):
        """``hydra_plugins.charrnn_slurm_launcher.slurm_launcher.SubmititSlurmLauncher``: the name Hydra knows
        it by, which the job processes import (so submitit can unpickle the launcher there)."""
