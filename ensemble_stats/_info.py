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


def store_summary(ds: xr.Dataset) -> dict:
    """Return what ``ensemble-stats info`` shows as plain Python values (JSON-serialisable).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`

    Returns
    -------
    dict
        ``store`` (its path or URL), ``dims`` (sizes of the predictions), ``time_units``, ``antithetic``,
        ``fields`` (recorded beside the outputs), ``written`` (fraction of all records), ``completeness``
        (``{gamma: {width: fraction}}``) and ``diverged`` (:func:`diverged_runs`).

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256], n_seeds=4, seed=0)
    >>> es.store_summary(ds)["completeness"]
    {'0.75': {'64': 1.0, '256': 1.0}}
    """
    comp = completeness(ds)
    fields = []
    if schema.NTK in ds:
        fields.append(f"empirical NTK on {ds.sizes[schema.NTK_POINT]} grid points (ntk)")
    if schema.DISPLACEMENT in ds:
        fields.append(f"displacement of {', '.join(map(str, ds[schema.LAYER].values))} (displacement)")
    return {
        "store": str(ds.encoding.get("source", "<memory>")),
        "dims": {str(d): int(n) for d, n in ds[schema.PREDICTION].sizes.items()},
        "time_units": ds[schema.TIME].attrs.get("units"),
        "antithetic": schema.PAIR in ds.coords,
        "fields": fields,
        "written": float(ds[schema.WRITTEN].mean().compute()),
        "completeness": {
            f"{g:g}": {
                f"{int(w)}": float(comp.sel({schema.GAMMA: g, schema.WIDTH: w})) for w in comp[schema.WIDTH].values
            }
            for g in comp[schema.GAMMA].values
        },
        "diverged": [{k: (v.item() if hasattr(v, "item") else v) for k, v in run.items()} for run in diverged_runs(ds)],
    }


def format_info(ds: xr.Dataset) -> str:
    """Return the plain-text report ``ensemble-stats info`` prints: dims, completeness per (gamma, width), diverged runs.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`

    Returns
    -------
    str

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256], n_seeds=4, seed=0)
    >>> print(es.format_info(ds).splitlines()[3])
    records written: 100.0%
    """
    info = store_summary(ds)
    lines = [f"store: {info['store']}"]
    lines.append("dims: " + ", ".join(f"{d}={n}" for d, n in info["dims"].items()))
    lines.append(f"time units: {info['time_units']}")
    if info["antithetic"]:
        lines.append("seeds: antithetic pairs (coordinate 'pair'); bias_variance, seed_mean and fit_rate use the pairs")
    if info["fields"]:
        lines.append("recorded beside the outputs: " + "; ".join(info["fields"]))
    lines.append(f"records written: {100 * info['written']:.1f}%")
    widths = next(iter(info["completeness"].values()), {})
    lines.append("gamma \\ width " + " ".join(f"{int(w):>7d}" for w in widths))
    for g, row in info["completeness"].items():
        lines.append(f"{float(g):>13.4g} " + " ".join(f"{100 * v:>6.1f}%" for v in row.values()))
    div = info["diverged"]
    lines.append(f"diverged runs: {len(div)}")
    for run in div[:20]:
        lines.append("  " + schema.describe_run(run))
    if len(div) > 20:
        lines.append(f"  ... and {len(div) - 20} more")
    return "\n".join(lines)
