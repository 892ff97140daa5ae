"""charrnn's SLURM launcher as a Hydra plugin (``hydra/launcher=slurm``), found by Hydra's plugin scan of the
``hydra_plugins`` namespace package, as Hydra's own plugins are."""
