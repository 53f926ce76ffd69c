"""``ds.ens``: one-line sugar over the public functions (the functions are the API), with their signatures."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import xarray as xr

from . import schema
from ._fit import fit_expansion, fit_rate
from ._fluct import fluctuation_gaussianity
from ._info import completeness, diverged_runs
from ._limit import compare_to_theory
from ._ntk import kernel_drift, learning_rate_regimes
from ._report import report
from ._select import at_common_time, scaled_time
from ._stats import bias_variance, seed_mean, variance_components
from .store import sweep_config

_GRID = (schema.POINT, schema.OUTPUT)


@xr.register_dataset_accessor("ens")
class EnsembleAccessor:
    """Ensemble statistics on a Dataset from :func:`ensemble_stats.open_ensemble`; ``ds.ens.plot`` draws."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    @property
    def plot(self) -> _PlotAccessor:
        """The figures of :mod:`ensemble_stats.plot`, with the analysis they show computed from the Dataset."""
        return _PlotAccessor(self._ds)

    def bias_variance(
        self,
        *,
        reference: str | xr.DataArray = "target",
        dims: Sequence[str] = _GRID,
        ci: float = 0.95,
        ci_method: str = "auto",
        pairs: bool | None = None,
    ) -> xr.Dataset:
        """See :func:`ensemble_stats.bias_variance`."""
        return bias_variance(self._ds, reference=reference, dims=dims, ci=ci, ci_method=ci_method, pairs=pairs)

    def seed_mean(self, *, var: str = schema.PREDICTION, ci: float = 0.95, pairs: bool | None = None) -> xr.Dataset:
        """See :func:`ensemble_stats.seed_mean`."""
        return seed_mean(self._ds, var=var, ci=ci, pairs=pairs)

    def variance_components(
        self,
        *,
        var: str = schema.PREDICTION,
        data_dim: str = schema.DATA_SEED,
        dims: Sequence[str] = _GRID,
        ci: float = 0.95,
    ) -> xr.Dataset:
        """See :func:`ensemble_stats.variance_components`."""
        return variance_components(self._ds, var=var, data_dim=data_dim, dims=dims, ci=ci)

    def kernel_drift(self, *, ci: float = 0.95) -> xr.Dataset:
        """See :func:`ensemble_stats.kernel_drift`."""
        return kernel_drift(self._ds, ci=ci)

    def fit_expansion(
        self,
        *,
        quantity: str = "mean",
        terms: str | Sequence[float] = "theory",
        width_min: int | None = None,
        errors: str = "coerce",
        cov: str = "scaled",
        ci: float = 0.95,
        ci_method: str = "auto",
        pairs: bool | None = None,
        readout: str | None = None,
    ) -> xr.Dataset:
        """See :func:`ensemble_stats.fit_expansion`."""
        return fit_expansion(
            self._ds,
            quantity=quantity,
            terms=terms,
            width_min=width_min,
            errors=errors,
            cov=cov,
            ci=ci,
            ci_method=ci_method,
            pairs=pairs,
            readout=readout,
        )

    def fluctuation_gaussianity(
        self,
        *,
        limit: xr.Dataset | None = None,
        dims: Sequence[str] = _GRID,
        ci: float = 0.95,
        pairs: bool | None = None,
    ) -> xr.Dataset:
        """See :func:`ensemble_stats.fluctuation_gaussianity`."""
        return fluctuation_gaussianity(self._ds, limit=limit, dims=dims, ci=ci, pairs=pairs)

    def fit_rate(
        self,
        *,
        quantity: str = "variance",
        dims: Sequence[str] = _GRID,
        reference: str | xr.DataArray = "target",
        width_min: int | None = None,
        ci: float = 0.95,
        ci_method: str = "auto",
        at: str | float | None = None,
        pairs: bool | None = None,
        readout: str | None = None,
    ) -> xr.Dataset:
        """See :func:`ensemble_stats.fit_rate`."""
        return fit_rate(
            self._ds,
            quantity=quantity,
            dims=dims,
            reference=reference,
            width_min=width_min,
            ci=ci,
            ci_method=ci_method,
            at=at,
            pairs=pairs,
            readout=readout,
        )

    def at_common_time(self, t: float | None = None) -> xr.Dataset:
        """See :func:`ensemble_stats.at_common_time`."""
        return at_common_time(self._ds, t)

    def compare_to_theory(
        self,
        train_x=None,
        train_y=None,
        *,
        activation: str | Callable | None = None,
        sigma_w: float = 1.0,
        alpha: float | None = None,
        ci: float = 0.95,
        decomposition: xr.Dataset | None = None,
    ) -> xr.Dataset:
        """See :func:`ensemble_stats.compare_to_theory`."""
        return compare_to_theory(
            self._ds,
            train_x,
            train_y,
            activation=activation,
            sigma_w=sigma_w,
            alpha=alpha,
            ci=ci,
            decomposition=decomposition,
        )

    def scaled_time(self) -> xr.DataArray:
        """See :func:`ensemble_stats.scaled_time`."""
        return scaled_time(self._ds)

    def sweep_config(self) -> dict:
        """See :func:`ensemble_stats.sweep_config`."""
        return sweep_config(self._ds)

    def learning_rate_regimes(self, *, spike: float = 1.01) -> xr.Dataset:
        """See :func:`ensemble_stats.learning_rate_regimes`."""
        return learning_rate_regimes(self._ds, spike=spike)

    def completeness(self) -> xr.DataArray:
        """See :func:`ensemble_stats.completeness`."""
        return completeness(self._ds)

    def diverged_runs(self) -> list[dict]:
        """See :func:`ensemble_stats.diverged_runs`."""
        return diverged_runs(self._ds)

    def report(
        self,
        out: str | os.PathLike,
        *,
        results: Mapping[str, xr.Dataset] | None = None,
        progress: Callable[[str], None] | None = None,
    ):
        """See :func:`ensemble_stats.report`."""
        return report(self._ds, out, results=results, progress=progress)


class _PlotAccessor:
    """``ds.ens.plot.<figure>(...)``: :mod:`ensemble_stats.plot` with its inputs computed from ``ds``."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def curves(self, var: str = schema.TEST_LOSS, *, ci: float = 0.95, log: bool | None = None, ax=None):
        """See :func:`ensemble_stats.plot.curves`."""
        from . import plot

        return plot.curves(self._ds, var, ci=ci, log=log, ax=ax)

    def variance_vs_width(self, *, time: int = -1, ax=None):
        """See :func:`ensemble_stats.plot.variance_vs_width` (with ``bias_variance`` and ``fit_rate`` of ``ds``)."""
        from . import plot

        return plot.variance_vs_width(bias_variance(self._ds), fit_rate(self._ds), time=time, ax=ax)

    def bias_variance(self, *, time: int = -1, ax=None):
        """See :func:`ensemble_stats.plot.bias_variance`."""
        from . import plot

        return plot.bias_variance(bias_variance(self._ds), time=time, ax=ax)

    def mean_expansion(self, *, point: int = 0, output: int = 0, time: int = -1, ax=None):
        """See :func:`ensemble_stats.plot.mean_expansion` (with ``seed_mean`` and the mean's ``fit_expansion``)."""
        from . import plot

        fit = fit_expansion(self._ds, quantity="mean")
        return plot.mean_expansion(seed_mean(self._ds), fit, point=point, output=output, time=time, ax=ax)

    def completeness(self, *, ax=None):
        """See :func:`ensemble_stats.plot.completeness`."""
        from . import plot

        return plot.completeness(self._ds, ax=ax)

    def collapse(self, *, ax=None):
        """See :func:`ensemble_stats.plot.collapse` (with ``compare_to_theory`` of ``ds``)."""
        from . import plot

        return plot.collapse(compare_to_theory(self._ds), ax=ax)

    def kernel_drift(self, *, time: int = -1, ax=None):
        """See :func:`ensemble_stats.plot.kernel_drift` (with ``kernel_drift`` of ``ds``)."""
        from . import plot

        return plot.kernel_drift(kernel_drift(self._ds), time=time, ax=ax)

    def fluctuation_qq(self, *, time: int = -1, point: int = 0, output: int = 0, ax=None):
        """See :func:`ensemble_stats.plot.fluctuation_qq` (with ``fluctuation_gaussianity`` of ``ds``)."""
        from . import plot

        return plot.fluctuation_qq(fluctuation_gaussianity(self._ds), time=time, point=point, output=output, ax=ax)
