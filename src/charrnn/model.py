"""Public name kept from before the package had floors: the model lives in :mod:`charrnn.core.model`."""

from charrnn.core.model import CELLS, INPUTS, CharRNN, Hidden

__all__ = ["CELLS", "INPUTS", "CharRNN", "Hidden"]
