"""Public name kept from before the package had floors: the numpy RNN lives in :mod:`charrnn.core.reference`."""

from charrnn.core.reference import *  # noqa: F401,F403
