"""Finite-seed bias-variance decomposition with seed-jackknife confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from . import schema
from .errors import ValidationError

__all__ = ["bias_variance", "bias_variance_kernel", "seed_moments"]

STATISTICS = ("mse", "bias2", "variance")


def bias_variance_kernel(pred: np.ndarray, ref: np.ndarray, *, n_grid: int, ci: float = 0.95) -> tuple[np.ndarray, ...]:
    """numpy kernel: seed statistics averaged over the trailing grid axes, with jackknife CIs.

    Parameters
    ----------
    pred : array, (..., seed, *grid)
        Predictions; ``grid`` is the last ``n_grid`` axes. A seed is used in a cell only if all its grid values
        are finite, so unwritten (NaN) and diverged (NaN/inf) records drop out.
    ref : array, broadcastable to (..., *grid)
        Reference (target, or a theory limit).
    n_grid : int
        Number of trailing grid axes averaged over (0 keeps every point).
    ci : float
        Level of the jackknife intervals (Student t with S - 1 dof).

    Returns
    -------
    tuple of arrays, each (...,)
        ``mse, bias2, variance, n_seeds`` then ``lo, hi`` of mse, bias2 and variance.

    Notes
    -----
    Per grid value, with S seeds, mean m and sample variance s^2 (ddof=1):
    ``bias2 = (m - r)^2 - s^2 / S`` is unbiased for the squared bias, and ``mse = bias2 + s^2`` equals the
    plain seed average ``mean_s (f_s - r)^2``, unbiased for E(f - r)^2. Intervals come from the closed-form
    leave-one-seed-out values of each statistic averaged over the grid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    grid_axes = tuple(range(-n_grid, 0))  # the trailing grid axes, with or without a seed axis before them
    seed_axis = pred.ndim - n_grid - 1
    valid = np.isfinite(pred).all(axis=grid_axes) if n_grid else np.isfinite(pred)  # (..., seed)
    vmask = valid.reshape(valid.shape + (1,) * n_grid)  # (..., seed, *1)
    x = np.where(vmask, pred, 0.0)
    S = valid.sum(axis=-1)  # (...,)
    Sg = S.reshape(S.shape + (1,) * n_grid).astype(np.float64)  # (..., *1)
    Se = np.expand_dims(Sg, seed_axis)  # (..., 1, *1)
    grid_mean = (lambda a: a.mean(axis=grid_axes)) if n_grid else (lambda a: a)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=seed_axis) / Sg
        dev = np.where(vmask, x - np.expand_dims(mean, seed_axis), 0.0)
        ss = (dev**2).sum(axis=seed_axis)
        var = ss / (Sg - 1)
        bias2 = (mean - ref) ** 2 - var / Sg
        full = {"mse": bias2 + var, "bias2": bias2, "variance": var}
        # leave-one-seed-out values per grid point, from the sums above
        mean_i = (np.expand_dims(mean, seed_axis) * Se - x) / (Se - 1)
        var_i = (np.expand_dims(ss, seed_axis) - dev**2 * Se / (Se - 1)) / (Se - 2)
        bias2_i = (mean_i - np.expand_dims(ref, ref.ndim - n_grid)) ** 2 - var_i / (Se - 1)
        loo = {"mse": bias2_i + var_i, "bias2": bias2_i, "variance": var_i}
        t = stats.t.ppf(0.5 + ci / 2, np.maximum(S - 1, 1))
        estimates, bounds = [], []
        for k in STATISTICS:
            est = grid_mean(full[k])
            th = np.where(valid, grid_mean(loo[k]), np.nan)  # (..., seed)
            th_bar = np.nansum(th, axis=-1, keepdims=True) / S[..., None]  # NaN (no warning) when S = 0
            spread = np.nansum((th - th_bar) ** 2, axis=-1)
            se = np.sqrt((S - 1) / S * spread)
            estimates.append(np.where(S >= 2, est, np.nan))
            bounds += [np.where(S >= 3, est - t * se, np.nan), np.where(S >= 3, est + t * se, np.nan)]
    return (*estimates, S.astype(np.int64), *bounds)


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


def bias_variance(
    ds: xr.Dataset,
    *,
    reference: str | xr.DataArray = "target",
    dims: Sequence[str] = (schema.POINT, schema.OUTPUT),
    ci: float = 0.95,
) -> xr.Dataset:
    """Finite-seed bias², variance and MSE per (gamma, width, time, any extra sweep dims).

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
        Level of the seed-jackknife intervals ``<name>_lo`` / ``<name>_hi``.

    Returns
    -------
    Dataset
        ``mse``, ``bias2`` (= (mean - ref)^2 - variance/S, unbiased), ``variance`` (ddof=1), ``n_seeds``
        (seeds written and finite over the grid), ``n_excluded`` (written but non-finite), and CI bounds;
        dims of ``prediction`` without ``seed`` and ``dims``. Lazy if the input is.
    """
    if schema.PREDICTION not in ds:
        raise ValidationError("the dataset has no 'prediction' variable; open a store with open_ensemble().")
    pred = ds[schema.PREDICTION]
    dims = tuple(dims)
    bad = [d for d in dims if d not in pred.dims or d == schema.SEED]
    if bad:
        raise ValidationError(f"dims {bad} are not grid dims of the predictions {list(pred.dims)}.")
    if not 0 < ci < 1:
        raise ValidationError(f"ci={ci} must lie strictly between 0 and 1, e.g. 0.95.")
    ref = _reference(ds, reference, dims)
    if pred.chunks:
        pred = pred.chunk({d: -1 for d in (schema.SEED, *dims)})  # the kernel needs whole seeds and grids
    names = [*STATISTICS, "n_seeds", *(f"{k}_{b}" for k in STATISTICS for b in ("lo", "hi"))]
    outs = xr.apply_ufunc(
        bias_variance_kernel,
        pred,
        ref,
        kwargs={"ci": ci, "n_grid": len(dims)},
        input_core_dims=[[schema.SEED, *dims], list(dims)],
        output_core_dims=[[] for _ in names],
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.float64, np.int64] + [np.float64] * 6,
        join="exact",
    )
    res = xr.Dataset(dict(zip(names, outs, strict=True)))
    if schema.WRITTEN in ds:
        written = ds[schema.WRITTEN].sum(schema.SEED)
        res["n_excluded"] = (written - res["n_seeds"]).astype(np.int64)
    res.attrs.update({"ci": ci, "ci_method": "seed jackknife, Student t with S-1 dof", "averaged_over": ",".join(dims)})
    res["bias2"].attrs["long_name"] = "squared bias, finite-seed corrected: (mean - ref)^2 - variance / S"
    res["variance"].attrs["long_name"] = "seed variance (ddof=1)"
    res["mse"].attrs["long_name"] = "seed mean of (f - ref)^2 = bias2 + variance (unbiased for E(f - ref)^2)"
    return res
