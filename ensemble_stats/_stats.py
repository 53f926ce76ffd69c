"""xarray wrappers of the seed statistics: bias-variance decomposition, seed means, one-pass seed moments.

The numpy kernels (estimates, standard errors, interval methods) live in ``_np_stats.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from . import schema
from ._np_stats import (
    CI_METHODS,
    CI_STATUS,
    STATISTICS,
    bias_variance_kernel,
    pair_bias_variance_kernel,
    seed_mean_kernel,
)
from ._provenance import with_provenance
from ._ufunc import apply_ufunc
from .errors import ValidationError

__all__ = ["bias_variance", "pair_members", "seed_mean", "seed_moments", "variance_components"]

_LONG_NAMES = {
    "mse": "mean squared error against the reference, seed average of (f - ref)^2 (unbiased for E(f - ref)^2)",
    "bias2": "squared bias, finite-seed corrected: (mean - ref)^2 - variance / S",
    "variance": "seed variance (ddof=1)",
}


_SUMMARY = np.dtype([("n", "f8"), ("mean", "f8"), ("m2", "f8")])


def _chunk_summary(block, axis, keepdims=True, *, grid_axes: tuple[int, ...], **_):
    """Structured (n, mean, M2) over the seed axis of one block; seeds count only if finite over the grid."""
    (ax,) = axis if isinstance(axis, tuple) else (axis,)
    x = np.asarray(block, dtype=np.float64)
    valid = np.isfinite(x).all(axis=grid_axes, keepdims=True) if grid_axes else np.isfinite(x)
    valid = np.broadcast_to(valid, x.shape)
    n = valid.sum(axis=ax, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0.0).sum(axis=ax, keepdims=True) / n
        m2 = (np.where(valid, x - mean, 0.0) ** 2).sum(axis=ax, keepdims=True)
    out = np.empty(n.shape, dtype=_SUMMARY)
    out["n"], out["mean"], out["m2"] = n, np.nan_to_num(mean), m2
    return out if keepdims else out.squeeze(ax)


def _merge_summaries(s, axis, keepdims=True, **_):
    """Chan et al.'s exact merge of (n, mean, M2) summaries along the seed axis."""
    (ax,) = axis if isinstance(axis, tuple) else (axis,)
    n, mean, m2 = s["n"], s["mean"], s["m2"]
    tot_n = n.sum(axis=ax, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        tot_mean = np.nan_to_num((n * mean).sum(axis=ax, keepdims=True) / tot_n)
        tot_m2 = m2.sum(axis=ax, keepdims=True) + (n * (mean - tot_mean) ** 2).sum(axis=ax, keepdims=True)
    out = np.empty(tot_n.shape, dtype=_SUMMARY)
    out["n"], out["mean"], out["m2"] = tot_n, tot_mean, tot_m2
    return out if keepdims else out.squeeze(ax)


def seed_moments(pred: xr.DataArray, dim: str = schema.SEED) -> xr.Dataset:
    """Seed mean, variance (ddof=1) and count per grid value, using only seeds finite over the whole grid.

    One pass over the data as a tree reduction: each seed chunk becomes an (n, mean, M2) summary, merged
    exactly (Chan's parallel formula), so memory is bounded by a few chunks, not by the store.

    Parameters
    ----------
    pred : DataArray with a ``seed`` dim (and ``point``/``output`` when present)

    Returns
    -------
    Dataset with ``mean``, ``variance`` and ``n_seeds``, dims of ``pred`` without ``seed``
    """
    import functools

    grid = [d for d in schema.GRID_DIMS if d in pred.dims]
    axis = pred.get_axis_num(dim)
    grid_axes = tuple(pred.get_axis_num(d) for d in grid)
    chunk = functools.partial(_chunk_summary, grid_axes=grid_axes)
    if pred.chunks is not None:
        import dask.array as dsa

        data = pred.data.rechunk({a: -1 for a in grid_axes})
        summary = dsa.reduction(
            data,
            chunk,
            _merge_summaries,
            combine=_merge_summaries,
            axis=axis,
            keepdims=False,
            dtype=_SUMMARY,
            split_every=4,
            concatenate=True,
            meta=np.empty((0,) * (data.ndim - 1), dtype=_SUMMARY),
        )
    else:
        summary = chunk(pred.data, (axis,), keepdims=False)
    dims = [d for d in pred.dims if d != dim]
    coords = {k: v for k, v in pred.coords.items() if dim not in v.dims}
    n = xr.DataArray(summary["n"], dims=dims, coords=coords)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = summary["m2"] / (summary["n"] - 1)
    return xr.Dataset(
        {
            "mean": xr.DataArray(summary["mean"], dims=dims, coords=coords).where(n > 0),
            "variance": xr.DataArray(var, dims=dims, coords=coords).where(n > 1),
            "n_seeds": n.astype(np.int64),
        }
    )


def _reference(ds: xr.Dataset, reference, dims: Sequence[str]) -> xr.DataArray:
    pred = ds[schema.PREDICTION]
    if isinstance(reference, str):
        if reference != "target":
            raise ValidationError(f"reference={reference!r}: pass 'target' or a DataArray such as a theory limit h_t.")
        ref = ds[schema.TARGET]
    elif isinstance(reference, xr.DataArray):
        ref = reference
    else:
        raise ValidationError(f"reference must be 'target' or an xarray.DataArray, got {type(reference).__name__}.")
    extra = [d for d in ref.dims if d not in pred.dims or d == schema.SEED]
    if extra:
        raise ValidationError(
            f"reference has dims {list(ref.dims)}; {extra} are not dims of the predictions (or are 'seed'), so it "
            f"does not broadcast against {list(pred.dims)}."
        )
    for d in ref.dims:
        if ref.sizes[d] != pred.sizes[d]:
            raise ValidationError(f"reference has {ref.sizes[d]} values along '{d}', predictions have {pred.sizes[d]}.")
    for d in dims:
        if d not in ref.dims:
            ref = ref.expand_dims({d: pred[d].values})
    return ref


def _use_pairs(da: xr.DataArray | xr.Dataset, pairs: bool | None) -> bool:
    has = schema.PAIR in da.coords and schema.SEED in da[schema.PAIR].dims
    if pairs and not has:
        raise ValidationError(
            "pairs=True but the data has no 'pair' coordinate on 'seed': it was not trained as antithetic pairs "
            "(antithetic = true in the sweep config, or EnsembleStore.create(..., antithetic=True))."
        )
    return has if pairs is None else bool(pairs)


def pair_members(da: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Return the two members of each antithetic pair, as two DataArrays with a ``pair`` dim instead of ``seed``.

    Raises
    ------
    ValidationError
        The seeds do not form whole pairs (e.g. a selection kept one member of a pair).
    """
    pair = np.asarray(da[schema.PAIR].values)
    order = np.lexsort((np.asarray(da[schema.SEED].values), pair))
    p = pair[order]
    ok = len(p) % 2 == 0 and bool(np.all(p[0::2] == p[1::2])) and len(np.unique(p)) == len(p) // 2
    if not ok:
        counts = dict(zip(*np.unique(pair, return_counts=True), strict=True))
        odd = [int(k) for k, c in counts.items() if c != 2][:8]
        raise ValidationError(
            f"the seeds do not form whole antithetic pairs: pairs {odd} have {sorted({counts[k] for k in odd})} "
            "members, expected 2. Select whole pairs (e.g. by the 'pair' coordinate), or pass pairs=False to "
            "treat the seeds as independent (which they are not: the intervals would be wrong)."
        )
    da = da.isel({schema.SEED: order}).drop_vars([c for c in da.coords if schema.SEED in da[c].dims])
    first, second = (
        da.isel({schema.SEED: slice(k, None, 2)})
        .rename({schema.SEED: schema.PAIR})
        .assign_coords({schema.PAIR: p[0::2]})
        for k in (0, 1)
    )
    return first, second


def _check_ci(ci: float, ci_method: str) -> None:
    problems = []
    if not 0 < ci < 1:
        problems.append(f"ci={ci} must lie strictly between 0 and 1, e.g. 0.95")
    if ci_method not in CI_METHODS:
        problems.append(f"ci_method={ci_method!r} is not one of {list(CI_METHODS)}")
    if problems:
        raise ValidationError("; ".join(problems) + ".")


def _ci_status(da: xr.DataArray) -> xr.DataArray:
    da.attrs.update(
        {
            "long_name": "interval status",
            "flag_values": list(CI_STATUS),
            "flag_meanings": " ".join(CI_STATUS.values()),
        }
    )
    return da


def bias_variance(
    ds: xr.Dataset,
    *,
    reference: str | xr.DataArray = "target",
    dims: Sequence[str] = (schema.POINT, schema.OUTPUT),
    ci: float = 0.95,
    ci_method: str = "auto",
    pairs: bool | None = None,
) -> xr.Dataset:
    """Finite-seed bias², variance and MSE per (gamma, width, time, any extra sweep dims), with intervals.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` (or ``testing.synthetic_ensemble``)
        ``prediction`` dims (gamma, width, seed, [extra...], time, point, output).
    reference : ``"target"`` or DataArray
        What the bias is measured against; a DataArray must broadcast against the predictions without
        ``seed`` (e.g. a theory limit h_t with dims (time, point, output)).
    dims : sequence of str
        Grid dims averaged over; ``()`` keeps every point.
    ci : float
        Level of the intervals ``<name>_lo`` / ``<name>_hi``.
    ci_method : {"auto", "chi2", "jackknife"}
        How intervals are made (docs/intervals.md): ``"auto"`` is calibrated at 4-32 seeds on correlated,
        heavy-tailed test beds; ``"jackknife"`` is the seed jackknife with Student t (S - 1 dof).
    pairs : bool, optional
        Antithetic stores (a ``pair`` coordinate on ``seed``) use the pair-aware estimators by default: the pair
        is the unit (pair means for the mean and bias, an unbiased variance from pair means and half
        differences, intervals over pairs; see ``pair_bias_variance_kernel``). ``ci_method`` does not apply.

    Returns
    -------
    Dataset
        ``mse``, ``bias2`` (= (mean - ref)^2 - variance/S, unbiased), ``variance`` (ddof=1), each with
        ``<name>_stderr`` (seed jackknife), ``<name>_lo`` and ``<name>_hi``; ``variance_dof`` (effective dof of
        the variance interval); ``n_seeds`` (seeds written and finite over the grid), ``n_excluded`` (written
        but non-finite), ``ci_status`` (intervals are NaN with fewer than 4 seeds). Dims of ``prediction``
        without ``seed`` and ``dims``. Lazy if the input is.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> bv = es.bias_variance(ds)
    >>> bv.variance.dims
    ('gamma', 'width', 'time')
    >>> bool((bv.variance_lo <= bv.variance).all() and (bv.variance <= bv.variance_hi).all())
    True
    """
    if schema.PREDICTION not in ds:
        raise ValidationError("the dataset has no 'prediction' variable; open a store with open_ensemble().")
    pred = ds[schema.PREDICTION]
    if schema.SEED not in pred.dims:
        raise ValidationError(
            f"the predictions have dims {list(pred.dims)}, without '{schema.SEED}': bias and variance are taken over "
            "seeds; pass the whole ensemble (not one seed selected with isel/sel)."
        )
    dims = tuple(dims)
    bad = [d for d in dims if d not in pred.dims or d == schema.SEED]
    if bad:
        raise ValidationError(f"dims {bad} are not grid dims of the predictions {list(pred.dims)}.")
    _check_ci(ci, ci_method)
    ref = _reference(ds, reference, dims)
    paired = _use_pairs(pred, pairs)
    if pred.chunks:
        pred = pred.chunk({d: -1 for d in (schema.SEED, *dims)})  # the kernel needs whole seeds and grids
    names = [
        *STATISTICS,
        *(f"{k}_stderr" for k in STATISTICS),
        *(f"{k}_{b}" for k in STATISTICS for b in ("lo", "hi")),
        "variance_dof",
        "n_seeds",
        "ci_status",
    ]
    if paired:  # the pair is the unit: the two members side by side
        kernel, kwargs, units = pair_bias_variance_kernel, {}, list(pair_members(pred))
    else:
        kernel, kwargs, units = bias_variance_kernel, {"ci_method": ci_method}, [pred]
    unit = schema.PAIR if paired else schema.SEED
    outs = apply_ufunc(
        kernel,
        *units,
        ref,
        kwargs={"ci": ci, "n_grid": len(dims), **kwargs},
        input_core_dims=[*([[unit, *dims]] * len(units)), list(dims)],
        output_core_dims=[[] for _ in names],
        dask="parallelized",
        output_dtypes=[np.float64] * 13 + [np.int64, np.int8],
        join="exact",
    )
    res = xr.Dataset(dict(zip(names, outs, strict=True)))
    if schema.WRITTEN in ds:
        written = ds[schema.WRITTEN].sum(schema.SEED)
        res["n_excluded"] = (written - res["n_seeds"]).astype(np.int64)
        res["n_excluded"].attrs["long_name"] = "seeds written but excluded (non-finite somewhere on the grid" + (
            ", or the other member of such a seed's antithetic pair)" if paired else ")"
        )
    over = ", ".join(dims) if dims else "nothing (per grid value)"
    for k, long_name in _LONG_NAMES.items():
        res[k].attrs["long_name"] = long_name
        res[f"{k}_stderr"].attrs["long_name"] = f"{'pair' if paired else 'seed'}-jackknife standard error of {k}"
        schema.label_bounds(res, f"{k}", ci, f"{k}")
        for v in (k, f"{k}_stderr", f"{k}_lo", f"{k}_hi"):
            res[v].attrs["averaged_over"] = over
    res["variance_dof"].attrs["long_name"] = "effective degrees of freedom of the variance interval (scaled chi2)"
    res["n_seeds"].attrs["long_name"] = "seeds used (written and finite over the grid)"
    _ci_status(res["ci_status"])
    res.attrs.update(
        {
            "ci": ci,
            "ci_method": "pairs" if paired else ci_method,
            "ci_method_description": _PAIRS if paired else _describe(ci_method, len(dims) == 0),
            "averaged_over": ",".join(dims),
        }
    )
    return with_provenance(res, ds, "bias_variance")


_PAIRS = (
    "antithetic pairs as units: pair jackknife; bias2 and mse Student t with P-1 dof (squared t interval of the "
    "mean error at one value), variance scaled chi2 with the jackknife's dof; intervals need >= 4 pairs"
)


def _describe(ci_method: str, pointwise: bool) -> str:
    if ci_method == "jackknife":
        return "seed jackknife, Student t with S-1 dof (mse, bias2, variance)"
    nu = "Gaussian effective dof (S-1) tr(Sigma)^2/tr(Sigma^2)"
    if ci_method == "auto":
        nu += ", capped by the jackknife's dof on the raw and log scale"
    b2 = "squared t interval of the mean error" if pointwise else "seed jackknife, Student t with S-1 dof"
    return f"variance and mse: scaled chi2 with {nu}; bias2: {b2}; intervals need >= 4 seeds"


def seed_mean(
    ds: xr.Dataset | xr.DataArray, *, var: str = schema.PREDICTION, ci: float = 0.95, pairs: bool | None = None
) -> xr.Dataset:
    """Seed mean of a variable with its standard error and Student-t interval (S - 1 dof).

    On antithetic stores (a ``pair`` coordinate on ``seed``; ``pairs=None`` detects it) the unit is the pair: the
    mean of the pair means, its standard error over pairs, Student t with P - 1 dof; a pair counts only if both
    members are finite, and ``n_seeds`` counts their members.

    Parameters
    ----------
    ds : Dataset (``var`` is taken from it) or DataArray, with a ``seed`` dim
    var : name of the variable, e.g. ``"prediction"`` or a scalar such as ``"accuracy"``

    Returns
    -------
    Dataset
        ``mean``, ``stderr``, ``mean_lo``, ``mean_hi``, ``n_seeds``, ``ci_status``; the input's dims without
        ``seed``. Non-finite values drop out; intervals are NaN with fewer than 4 seeds.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> m = es.seed_mean(ds)
    >>> m["mean"].dims
    ('gamma', 'width', 'time', 'point', 'output')
    >>> int(m.n_seeds.max())
    8
    """
    _check_ci(ci, "auto")
    da = ds if isinstance(ds, xr.DataArray) else ds[var]
    if schema.SEED not in da.dims:
        raise ValidationError(f"'{da.name}' has dims {list(da.dims)}; seed_mean needs a 'seed' dim.")
    paired = _use_pairs(da, pairs)
    unit = schema.SEED
    if paired:
        first, second = pair_members(da)
        da, unit = ((first + second) / 2).assign_attrs(da.attrs), schema.PAIR
    if da.chunks:
        da = da.chunk({unit: -1})
    names = ["mean", "stderr", "mean_lo", "mean_hi", "n_seeds", "ci_status"]
    outs = apply_ufunc(
        seed_mean_kernel,
        da,
        kwargs={"ci": ci},
        input_core_dims=[[unit]],
        output_core_dims=[[] for _ in names],
        dask="parallelized",
        output_dtypes=[np.float64] * 4 + [np.int64, np.int8],
    )
    res = xr.Dataset(dict(zip(names, outs, strict=True)))
    if paired:
        res["n_seeds"] = 2 * res["n_seeds"]
    what = da.attrs.get("long_name", da.name)
    res["mean"].attrs["long_name"] = f"seed mean of {what}"
    res["stderr"].attrs["long_name"] = f"standard error of the seed mean of {what}"
    schema.label_bounds(res, "mean", ci, "the seed mean (Student t)")
    res["n_seeds"].attrs["long_name"] = "seeds used (finite values)"
    for v in ("mean", "stderr", "mean_lo", "mean_hi"):
        if "units" in da.attrs:
            res[v].attrs["units"] = da.attrs["units"]
    _ci_status(res["ci_status"])
    res.attrs.update(
        {"ci": ci, "ci_method": "pair means, Student t with P-1 dof" if paired else "Student t with S-1 dof"}
    )
    return with_provenance(res, ds, f"seed_mean of {var}") if isinstance(ds, xr.Dataset) else res


def variance_components(
    ds: xr.Dataset | xr.DataArray,
    *,
    var: str = schema.PREDICTION,
    data_dim: str = schema.DATA_SEED,
    dims: Sequence[str] = (schema.POINT, schema.OUTPUT),
    ci: float = 0.95,
) -> xr.Dataset:
    """Split the seed variance of crossed (seed x data seed) runs into initialization, data order and interaction.

    Per grid value, y_ij = mu + a_i + b_j + e_ij over seeds i and data seeds j (the minibatch order), with
    ``init`` = Var a, ``data_order`` = Var b and ``interaction`` = Var e (one run per (i, j): interaction and
    residual are one term); ANOVA estimates (unbiased), averaged over ``dims``.

    Parameters
    ----------
    ds : Dataset (``var`` is taken from it) or DataArray with dims ``seed`` and ``data_dim``
    data_dim : the data-order dim (a sweep with ``data_seeds``)
    dims : grid dims averaged over (present ones only)

    Returns
    -------
    Dataset over the other dims with ``variance`` (component), its ``stderr``, ``variance_lo`` /
    ``variance_hi`` (scaled chi-square with the jackknife-implied dof), the ``share`` of each component in their
    sum, ``n_seeds`` (finite seeds), ``n_data_seeds`` and ``ci_status``; dim ``component`` = init, data_order,
    interaction. Intervals need 3 seeds and 3 data seeds; estimates 2 of each.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64], n_seeds=6, replicates=4, seed=0)
    >>> ds = ds.rename(replicate="data_seed")
    >>> vc = es.variance_components(ds)
    >>> vc.component.values.tolist()
    ['init', 'data_order', 'interaction']
    >>> bool(abs(vc.share.sum("component") - 1).max() < 1e-9)
    True
    """
    from ._np_stats import COMPONENTS, variance_components_kernel

    _check_ci(ci, "auto")
    da = ds if isinstance(ds, xr.DataArray) else ds[var]
    missing = [d for d in (schema.SEED, data_dim) if d not in da.dims]
    if missing:
        raise ValidationError(
            f"'{da.name}' has dims {list(da.dims)}; variance_components needs {missing} (crossed seeds and data "
            f"seeds: a sweep with data_seeds = [...])."
        )
    grid = [d for d in dims if d in da.dims]
    core = [schema.SEED, data_dim, *grid]
    if da.chunks:
        da = da.chunk({d: -1 for d in core})
    names = ["variance", "stderr", "variance_lo", "variance_hi", "n_seeds", "n_data_seeds", "ci_status"]
    outs = apply_ufunc(
        variance_components_kernel,
        da,
        kwargs={"n_grid": len(grid), "ci": ci},
        input_core_dims=[core],
        output_core_dims=[["component"]] * 4 + [[]] * 3,
        dask="parallelized",
        output_dtypes=[np.float64] * 4 + [np.int64, np.int64, np.int8],
        dask_gufunc_kwargs={"output_sizes": {"component": len(COMPONENTS)}},
    )
    res = xr.Dataset(dict(zip(names, outs, strict=True))).assign_coords(component=list(COMPONENTS))
    res["share"] = res["variance"] / res["variance"].sum("component")
    what = da.attrs.get("long_name", da.name)
    res["variance"].attrs["long_name"] = f"variance component of {what} (grid mean)"
    res["stderr"].attrs["long_name"] = "standard error of the component (seed and data-seed jackknives)"
    schema.label_bounds(res, "variance", ci, "the component")
    res["share"].attrs["long_name"] = "share of the component in the sum of the components"
    res["n_seeds"].attrs["long_name"] = "seeds used (finite at every data seed and grid value)"
    res["n_data_seeds"].attrs["long_name"] = "data seeds used"
    res["component"].attrs["long_name"] = "init: initialization; data_order: minibatch order; interaction: the rest"
    _ci_status(res["ci_status"])
    res.attrs.update({"ci": ci, "method": "two-way random-effects ANOVA (method of moments), jackknife chi-square"})
    return with_provenance(res, ds, "variance_components")
