"""ensemble-stats: statistics of trained-network ensembles across width N, normalization gamma and time.

The analysis side never imports torch; the training side lives in the ``collectors`` package.
"""

__version__ = "0.1.0"

from . import errors, schema, testing, theory
from ._accessor import EnsembleAccessor
from ._fit import STATUS, fit_expansion, fit_rate
from ._info import completeness, diverged_runs
from ._open import open_ensemble
from ._report import report
from ._stats import bias_variance, seed_mean
from ._verify import StoreProblem, sweep_partial_files, verify_store

__all__ = [
    "__version__",
    "bias_variance",
    "completeness",
    "diverged_runs",
    "EnsembleAccessor",
    "errors",
    "fit_expansion",
    "fit_rate",
    "open_ensemble",
    "report",
    "schema",
    "seed_mean",
    "STATUS",
    "StoreProblem",
    "sweep_partial_files",
    "testing",
    "theory",
    "verify_store",
]
