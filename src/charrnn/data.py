"""Public names kept from before the package had floors: the DataModule lives in
:mod:`charrnn.lit.datamodule`, the windows in :mod:`charrnn.core.windows`, the vocabulary in
:mod:`charrnn.core.vocab`."""

from charrnn.core.vocab import Vocabulary
from charrnn.core.windows import IGNORE_INDEX, RandomWindows, StreamWindows, split_bounds
from charrnn.lit.datamodule import CharDataModule

__all__ = ["CharDataModule", "IGNORE_INDEX", "RandomWindows", "StreamWindows", "Vocabulary", "split_bounds"]
