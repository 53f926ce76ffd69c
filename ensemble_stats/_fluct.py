"""Are the rescaled fluctuations Gaussian? The central-limit part of the expansion, tested against the kernel limit.

docs/theory.md §1.4 and §9 (item 10): for gamma in (1/2, 1), N^(gamma - 1/2) (h^N_t - E h^N_t) -> K_t, a centred
Gaussian process with variance Var K_t given by the kernel limit (``theory.kernel_limit``). The numpy kernel is
``_np_stats.ks_normal_kernel``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from . import schema
from ._np_stats import chi2_interval, ks_normal_kernel
from ._provenance import with_provenance
from ._stats import _use_pairs, pair_members
from ._ufunc import apply_ufunc
from .errors import ValidationError

__all__ = ["fluctuation_gaussianity"]

SAMPLE = "sample"


def fluctuation_gaussianity(
    ds: xr.Dataset,
    *,
    limit: xr.Dataset | None = None,
    dims: Sequence[str] = (schema.POINT, schema.OUTPUT),
    ci: float = 0.95,
    pairs: bool | None = None,
) -> xr.Dataset:
    """Kolmogorov-Smirnov tests of z = N^(gamma - 1/2) (h^N - E h^N) / sqrt(Var K_t) against N(0, 1).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` of a shallow sweep that the kernel limit describes (see
        :func:`kernel_limit_problems`); ``prediction`` dims (gamma, width, seed, [extra...], time, point, output)
    limit : a :func:`compare_to_theory` (or ``theory.kernel_limit``) result with ``var_k`` (time, point); computed
        from the store if not given
    dims : grid dims over which the per-cell p-values are combined (Bonferroni)
    ci : level of the interval of the standard deviation of z
    pairs : antithetic stores (a ``pair`` coordinate; detected by default) test the first member of each pair,
        so the sample is independent, and centre on the mean of all seeds (precise: the pair cancels the leading
        fluctuation). Otherwise every seed is tested and the seed mean is subtracted, which makes the test
        slightly conservative (a Lilliefors effect of order 1/S).

    Returns
    -------
    Dataset
        ``z`` (..., sample, time, point, output): the standardized fluctuations (NaN where Var K_t = 0, e.g. on
        interpolated training points); ``ks`` and ``pvalue`` (gamma, width, [extra...], time, point, output):
        the KS statistic and p-value per cell; ``pvalue_min`` (without ``dims``): the Bonferroni-combined
        p-value min(1, m min p) over the m cells; ``sd``, ``sd_lo``, ``sd_hi``: the standard deviation of z
        pooled over ``dims`` with a chi-square interval (1 if the variance law holds too); ``n_samples``.

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> fg = es.fluctuation_gaussianity(ds.isel(time=[1, 2]))  # z = N^(gamma - 1/2) (h - E h) / sqrt(Var K_t)
    >>> fg.pvalue_min.dims, int(fg.n_samples.max())
    (('gamma', 'width', 'time'), 8)
    >>> folder.cleanup()
    """
    from ._limit import compare_to_theory

    pred = ds[schema.PREDICTION]
    dims = tuple(dims)
    bad = [d for d in dims if d not in pred.dims or d in (schema.SEED, schema.WIDTH, schema.GAMMA)]
    if bad:
        raise ValidationError(f"dims {bad} are not grid dims of the predictions {list(pred.dims)}.")
    if limit is None:
        limit = compare_to_theory(ds)
    if "var_k" not in limit:
        raise ValidationError(
            "limit has no 'var_k': pass a compare_to_theory(...) or theory.kernel_limit(...) result, or None."
        )
    grid = [d for d in schema.GRID_DIMS if d in pred.dims]
    finite = np.isfinite(pred).all(grid)
    mean = pred.where(finite).mean(schema.SEED)
    if _use_pairs(pred, pairs):
        sample, _ = pair_members(pred)
        sample = sample.rename({schema.PAIR: SAMPLE})
    else:
        sample = pred.rename({schema.SEED: SAMPLE}).drop_vars(
            [c for c in pred.coords if schema.SEED in pred[c].dims], errors="ignore"
        )
    var_k = limit["var_k"]
    scale = ds[schema.WIDTH].astype(np.float64) ** (ds[schema.GAMMA] - 0.5)
    tiny = 1e-12 * float(var_k.max())
    z = (scale * (sample - mean) / np.sqrt(var_k.where(var_k > tiny))).transpose(*sample.dims)
    z = z.where(np.isfinite(sample).all(grid))
    zc = z.chunk({SAMPLE: -1}) if z.chunks else z
    ks, pvalue, n = apply_ufunc(
        ks_normal_kernel,
        zc,
        input_core_dims=[[SAMPLE]],
        output_core_dims=[[], [], []],
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.int64],
    )
    m = pvalue.notnull().sum(dims)
    pmin = np.fmin(1.0, pvalue.min(dims) * m).where(m > 0)
    # pooled sd of z (mean-zero law): sum z^2 over samples and cells; chi-square with n * cells dof is exact
    # for independent cells, and the cells are correlated, so the dof is the samples' (conservative)
    ss = (z**2).sum([SAMPLE, *dims], min_count=1)
    cells = z.notnull().sum([SAMPLE, *dims])
    var = ss / cells.where(cells > 0)
    n_s = n.max(dims)
    var_lo, var_hi = apply_ufunc(
        chi2_interval, var, n_s, kwargs={"ci": ci}, output_core_dims=[[], []], dask="parallelized",
        output_dtypes=[np.float64, np.float64],
    )  # fmt: skip
    out = xr.Dataset(
        {
            "z": z,
            "ks": ks,
            "pvalue": pvalue,
            "pvalue_min": pmin,
            "sd": np.sqrt(var),
            "sd_lo": np.sqrt(var_lo),
            "sd_hi": np.sqrt(var_hi),
            "n_samples": n_s,
        }
    )
    long = {
        "z": "rescaled fluctuation N^(gamma - 1/2) (h - E h) / sqrt(Var K_t)",
        "ks": "Kolmogorov-Smirnov statistic of z against N(0, 1)",
        "pvalue": "p-value of the Kolmogorov-Smirnov test against N(0, 1)",
        "pvalue_min": f"Bonferroni-combined p-value over {', '.join(dims)}",
        "sd": "standard deviation of z (1 if the variance law holds)",
        **schema.bound_names("sd", ci, "the standard deviation of z"),
        "n_samples": "independent samples per cell (one per antithetic pair, or every seed)",
    }
    for k, v in long.items():
        out[k].attrs["long_name"] = v
    out.attrs.update({"ci": ci, "pooled_over": ",".join(dims), "source": "docs/theory.md §1.4 [R]"})
    return with_provenance(out, ds, "fluctuation_gaussianity")
