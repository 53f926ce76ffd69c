"""ensemble-stats: statistics of trained-network ensembles across width N, normalization gamma and time.

The analysis side never imports torch; the training side lives in the ``collectors`` package.
"""

__version__ = "0.1.0"

from . import errors, schema
from ._info import completeness, diverged_runs
from ._open import open_ensemble
from ._verify import StoreProblem, verify_store

__all__ = [
    "__version__",
    "completeness",
    "diverged_runs",
    "errors",
    "open_ensemble",
    "schema",
    "StoreProblem",
    "verify_store",
]
