"""Summaries of a store's progress: completeness per cell and diverged runs."""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import schema


def completeness(ds: xr.Dataset) -> xr.DataArray:
    """Fraction of written records per (gamma, width), over seeds, extra sweep dims and times.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`

    Returns
    -------
    DataArray, dims (gamma, width), values in [0, 1]

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256], n_seeds=4, seed=0)
    >>> es.completeness(ds).values.tolist()
    [[1.0, 1.0]]
    """
    w = ds[schema.WRITTEN]
    other = [d for d in w.dims if d not in (schema.GAMMA, schema.WIDTH)]
    return w.mean(other).compute()


def diverged_runs(ds: xr.Dataset) -> list[dict]:
    """List the runs that produced non-finite outputs, each ``{gamma, width, seed, ..., 'step': first bad step}``.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` with ``diverged="keep"`` or the default (``diverged_step`` is read
        either way)

    Returns
    -------
    list of dict, one per diverged run, in store order

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256], n_seeds=4, diverged_runs=1, seed=0)
    >>> es.diverged_runs(ds)
    [{'gamma': 0.75, 'width': 64, 'seed': 1, 'step': 32}]
    """
    d = ds[schema.DIVERGED_STEP].compute()
    out = []
    for idx in np.argwhere(d.values >= 0):
        run = {dim: d[dim].values[i].item() for dim, i in zip(d.dims, idx, strict=True)}
        run["step"] = int(d.values[tuple(idx)])
        out.append(run)
    return out


def format_info(ds: xr.Dataset) -> str:
    """Return a plain-text report of dims, completeness per (gamma, width) cell and diverged runs."""
    lines = [f"store: {ds.encoding.get('source', '<memory>')}"]
    lines.append("dims: " + ", ".join(f"{d}={n}" for d, n in ds[schema.PREDICTION].sizes.items()))
    lines.append(f"time units: {ds[schema.TIME].attrs.get('units')}")
    if schema.PAIR in ds.coords:
        lines.append("seeds: antithetic pairs (coordinate 'pair'); bias_variance, seed_mean and fit_rate use the pairs")
    fields = []
    if schema.NTK in ds:
        fields.append(f"empirical NTK on {ds.sizes[schema.NTK_POINT]} grid points (ntk)")
    if schema.DISPLACEMENT in ds:
        fields.append(f"displacement of {', '.join(map(str, ds[schema.LAYER].values))} (displacement)")
    if fields:
        lines.append("recorded beside the outputs: " + "; ".join(fields))
    comp = completeness(ds)
    total = float(ds[schema.WRITTEN].mean().compute())
    lines.append(f"records written: {100 * total:.1f}%")
    header = "gamma \\ width " + " ".join(f"{int(w):>7d}" for w in comp[schema.WIDTH].values)
    lines.append(header)
    for g in comp[schema.GAMMA].values:
        row = comp.sel({schema.GAMMA: g}).values
        lines.append(f"{g:>13.4g} " + " ".join(f"{100 * v:>6.1f}%" for v in row))
    div = diverged_runs(ds)
    lines.append(f"diverged runs: {len(div)}")
    for run in div[:20]:
        lines.append("  " + schema.describe_run(run))
    if len(div) > 20:
        lines.append(f"  ... and {len(div) - 20} more")
    return "\n".join(lines)
