"""charrnn: character-level RNN language models trained with Lightning, configured by Hydra."""

__version__ = "0.1.0"
