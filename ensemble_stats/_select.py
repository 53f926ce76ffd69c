"""Selecting records: every width at one scaled time t = k / N.

The theory's N-scaling holds at fixed scaled time. A store indexed by epoch or step records width N at
k = e * steps_per_epoch optimizer steps, a smaller t at a larger N, so comparing widths at one epoch compares
different times. These functions find the scaled times all widths share and select them.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import schema
from .errors import ValidationError
from .store import sweep_config

__all__ = ["at_common_time", "common_times", "scaled_time", "time_units"]

_DIGITS = 9  # scaled times k / N are compared after rounding to this many decimals


def time_units(ds: xr.Dataset) -> str:
    """Return the store's time units: ``"scaled"``, ``"step"`` or ``"epoch"`` (``"scaled"`` when unset).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` (the units are the ``time`` coordinate's ``units`` attribute)

    Returns
    -------
    str

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> es.time_units(ds)
    'scaled'
    """
    return str(ds[schema.TIME].attrs.get("units", "scaled"))


def _schedule(ds: xr.Dataset) -> dict[int, dict[float, int]]:
    """Per width: scaled time -> index along ``time``, from the optimizer steps of the written records."""
    if schema.STEP not in ds:
        raise ValidationError("the dataset has no 'step' variable; open a store with open_ensemble().")
    step = ds[schema.STEP]
    others = [d for d in step.dims if d not in (schema.WIDTH, schema.TIME)]
    steps = np.asarray(step.max(others).transpose(schema.WIDTH, schema.TIME).values)  # -1: never written
    out = {}
    for w, row in zip(ds[schema.WIDTH].values, steps, strict=True):
        out[int(w)] = {round(float(k) / float(w), _DIGITS): i for i, k in enumerate(row) if k >= 0}
    return out


def common_times(ds: xr.Dataset) -> np.ndarray:
    """Return the scaled times t = k / N (k optimizer steps) at which every width has records, ascending.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`, dims (gamma, width, seed, [extra], time, ...)

    Returns
    -------
    1-d float array (empty when the widths share no time)

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> es.common_times(ds)
    array([0. , 0.5, 1. ])
    """
    return _shared(_schedule(ds))


def _shared(sched: dict[int, dict[float, int]]) -> np.ndarray:
    per_width = list(sched.values())
    if not per_width:
        return np.array([], dtype=float)
    return np.array(sorted(set(per_width[0]).intersection(*per_width[1:])), dtype=float)


def at_common_time(ds: xr.Dataset, t: float | None = None) -> xr.Dataset:
    """Return the records of every width at one scaled time t = k / N.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`
    t : float, optional
        The scaled time; default the largest one every width reaches (see :func:`common_times`).

    Returns
    -------
    Dataset with ``time`` of length 1 (value t, units ``scaled``) and a ``record_time`` coordinate (width): the
    time coordinate each width's record had in ``ds`` (an epoch or a step for such stores).

    Raises
    ------
    ValidationError
        No time is shared by every width, or ``t`` is not one of them (the message lists the shared ones).

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> es.at_common_time(ds, 1.0).sizes["time"]
    1
    """
    sched = _schedule(ds)  # the steps are read once
    shared = _shared(sched)
    if shared.size == 0:
        raise ValidationError(
            "the widths share no scaled time t = k / N with records at every width; record on a schedule that "
            "reaches common times (time units 'scaled'), or compare the widths one record at a time."
        )
    if t is None:
        t = float(shared[-1])
    else:
        t = float(t)
        near = shared[np.isclose(shared, t, rtol=1e-9, atol=1e-12)]
        if near.size == 0:
            listed = ", ".join(f"{v:g}" for v in shared[:12]) + (" ..." if shared.size > 12 else "")
            raise ValidationError(
                f"t = {t:g} is not a scaled time every width reaches; the widths share t = {listed}: choose one."
            )
        t = float(near[0])
    key = round(t, _DIGITS)
    index = xr.DataArray([sched[int(w)][key] for w in ds[schema.WIDTH].values], dims=schema.WIDTH)
    picked = ds.isel({schema.TIME: index})  # pointwise: each width's own record
    picked = picked.rename({schema.TIME: "record_time"}) if schema.TIME in picked.coords else picked
    out = picked.expand_dims({schema.TIME: [t]})
    for name, var in ds.variables.items():
        if name not in out.variables or name == schema.TIME:
            continue
        if schema.TIME in var.dims:  # the source's dim order, time back in its place
            out[name] = out[name].transpose(*var.dims)
        else:  # untouched by the selection: no time dim added
            out[name] = var
    out[schema.TIME].attrs = {**ds[schema.TIME].attrs, "units": "scaled", "long_name": "scaled time t = k / N"}
    out["record_time"].attrs = {
        "long_name": "time coordinate of each width's record in the source",
        "units": time_units(ds),
    }
    out.attrs = dict(ds.attrs)
    return out


def scaled_time(ds: xr.Dataset) -> xr.DataArray:
    """Return the theory's time t = alpha k / N of every record, from its optimizer step k, width N and alpha.

    The kernel limit and the expansion hold at fixed t: a record at epoch e of a width-N run with rate constant
    alpha sits at t = alpha e (steps per epoch) / N. ``alpha`` is the store's ``alpha`` coordinate when the
    sweep varies it, else the configured ``[optimizer].alpha`` (1 for a store without a sweep config).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` (with ``step``)

    Returns
    -------
    DataArray with the dims of ``step`` (NaN where a record is not written)

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256], n_seeds=2, times=[0.0, 0.5, 1.0], seed=0)
    >>> t = es.scaled_time(ds)  # a store in scaled time: t is its time coordinate again
    >>> t.isel(gamma=0, seed=0).values.tolist()
    [[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]]
    """
    if schema.STEP not in ds:
        raise ValidationError("scaled_time: the dataset has no 'step' variable; open a store with open_ensemble().")
    if schema.ALPHA in ds.coords:
        alpha = ds[schema.ALPHA]
    else:
        try:
            alpha = float(sweep_config(ds).get("optimizer", {}).get("alpha") or 1.0)
        except ValidationError:
            alpha = 1.0
    step = ds[schema.STEP]
    t = (step.where(step >= 0) * alpha / ds[schema.WIDTH]).transpose(*step.dims)
    t.attrs = {"long_name": "scaled time t = alpha k / N", "units": "1"}
    return t.rename("scaled_time")
