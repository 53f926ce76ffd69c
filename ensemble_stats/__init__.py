"""ensemble-stats: statistics of trained-network ensembles across width N, normalization gamma and time.

The analysis side never imports torch; the training side lives in the ``collectors`` package. Figures are in
:mod:`ensemble_stats.plot` (matplotlib, imported on use).
"""

__version__ = "0.1.0"

from . import claims, errors, schema, testing, theory
from ._accessor import EnsembleAccessor
from ._assess import (
    OUTCOMES,
    Verdict,
    anova_effects,
    covers,
    expansion_table,
    format_table,
    interval,
    paired_difference,
    plateau,
    rate_table,
    ratio_interval,
    seed_bootstrap,
    trend,
    verdict,
)
from ._fit import STATUS, fit_expansion, fit_rate, width_rate
from ._fluct import fluctuation_gaussianity
from ._info import completeness, diverged_runs, format_info, store_summary
from ._limit import compare_to_theory, kernel_limit_problems
from ._ntk import kernel_drift, kernel_eigenvalues, learning_rate_regimes
from ._report import report
from ._select import at_common_time, common_times, scaled_time, time_units
from ._stats import bias_variance, seed_mean, variance_components
from .store import StoreProblem, open_ensemble, sweep_config, sweep_partial_files, verify_store

__all__ = [
    "__version__",
    "anova_effects",
    "at_common_time",
    "bias_variance",
    "claims",
    "common_times",
    "compare_to_theory",
    "completeness",
    "covers",
    "diverged_runs",
    "EnsembleAccessor",
    "errors",
    "expansion_table",
    "fit_expansion",
    "fit_rate",
    "fluctuation_gaussianity",
    "format_info",
    "format_table",
    "interval",
    "kernel_drift",
    "kernel_eigenvalues",
    "kernel_limit_problems",
    "learning_rate_regimes",
    "open_ensemble",
    "OUTCOMES",
    "paired_difference",
    "plateau",
    "rate_table",
    "ratio_interval",
    "report",
    "scaled_time",
    "schema",
    "seed_bootstrap",
    "seed_mean",
    "STATUS",
    "store_summary",
    "StoreProblem",
    "sweep_config",
    "sweep_partial_files",
    "testing",
    "theory",
    "time_units",
    "trend",
    "Verdict",
    "variance_components",
    "verdict",
    "verify_store",
    "width_rate",
]
