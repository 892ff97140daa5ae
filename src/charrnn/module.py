"""Public names kept from before the package had floors: the LightningModule lives in :mod:`charrnn.lit.module`."""

from charrnn.lit.module import CharRNNModule, detach_hidden

__all__ = ["CharRNNModule", "detach_hidden"]
