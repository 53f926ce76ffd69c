"""collectors: the training side of ensemble-stats (PyTorch).

Create a store with a fixed evaluation grid, attach an :class:`OutputCollector` to a training run, and the
run's outputs on the grid are written at the scheduled times.
"""

from ._collector import CollectorHandle, OutputCollector
from ._grid import EvalGrid
from ._store import EnsembleStore, StoreSpec

__all__ = ["CollectorHandle", "EnsembleStore", "EvalGrid", "OutputCollector", "StoreSpec"]
