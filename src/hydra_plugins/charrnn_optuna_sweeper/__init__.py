"""charrnn's Hydra sweeper for Optuna 4: ``hydra/sweeper=charrnn_optuna`` (conf/hparams_search/optuna.yaml).

The keys of the official hydra-optuna-sweeper (which pins Optuna 2), plus ``pruner``; trials run
without a batch barrier and a search resumes from its study. ``config`` registers the configs,
``sweeper`` holds the class; Optuna is imported only when a search starts.
"""
