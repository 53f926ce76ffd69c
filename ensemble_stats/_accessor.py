"""``ds.ens``: one-line sugar over the public functions (the functions are the API)."""

from __future__ import annotations

import xarray as xr

from ._fit import fit_expansion, fit_rate
from ._info import completeness, diverged_runs
from ._stats import bias_variance


@xr.register_dataset_accessor("ens")
class EnsembleAccessor:
    """Ensemble statistics on a Dataset from :func:`ensemble_stats.open_ensemble`."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def bias_variance(self, **kwargs) -> xr.Dataset:
        """See :func:`ensemble_stats.bias_variance`."""
        return bias_variance(self._ds, **kwargs)

    def fit_expansion(self, **kwargs) -> xr.Dataset:
        """See :func:`ensemble_stats.fit_expansion`."""
        return fit_expansion(self._ds, **kwargs)

    def fit_rate(self, **kwargs) -> xr.Dataset:
        """See :func:`ensemble_stats.fit_rate`."""
        return fit_rate(self._ds, **kwargs)

    def completeness(self) -> xr.DataArray:
        """See :func:`ensemble_stats.completeness`."""
        return completeness(self._ds)

    def diverged_runs(self) -> list[dict]:
        """See :func:`ensemble_stats.diverged_runs`."""
        return diverged_runs(self._ds)
