"""Lazy vs feature learning: how far the tangent kernel and the parameters move, and how that scales with N.

Reads the ``ntk`` and ``displacement`` variables that ``collectors.NTKCollector`` records (docs/theory.md, "Lazy
and feature learning"; docs/store.md for the variables).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import schema
from ._fit import width_rate
from ._np_stats import top_eigenvalues_kernel
from ._provenance import with_provenance
from ._stats import seed_mean
from ._ufunc import apply_ufunc
from .errors import ValidationError
from .theory import CATAPULT_REGIMES

__all__ = ["kernel_drift", "kernel_eigenvalues", "learning_rate_regimes"]

_KERNEL_DIMS = (schema.NTK_POINT, schema.NTK_POINT_2, schema.OUTPUT, schema.OUTPUT_2)


def _require_ntk(ds: xr.Dataset) -> None:
    if schema.NTK not in ds:
        raise ValidationError(
            "this store has no 'ntk' variable; record it with collectors.NTKCollector (EnsembleStore.create(..., "
            "ntk_points=...), or [record] ntk_points in a sweep config)."
        )


def kernel_drift(ds: xr.Dataset, *, ci: float = 0.95) -> xr.Dataset:
    """Relative kernel drift and parameter displacement, their seed means with intervals, and their rates in N.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` of a store that recorded ``ntk`` (and optionally ``displacement``);
        the NTK must be recorded at the first time (the reference Theta_0)
    ci : level of every interval

    Returns
    -------
    Dataset
        ``drift`` (gamma, width, seed, time, ...): ||Theta_t - Theta_0||_F / ||Theta_0||_F per run over the NTK
        sub-grid and outputs (NaN at records without an NTK); ``drift_mean``, ``drift_stderr``, ``drift_lo``,
        ``drift_hi``, ``drift_n_seeds`` (gamma, width, time, ...); ``drift_slope``, ``drift_slope_lo``,
        ``drift_slope_hi`` (gamma, time, ...): the exponent of N, beside ``drift_theory`` = max(gamma - 3/2,
        2 gamma - 2). With ``displacement`` the same for ``displacement_*`` with a ``layer`` dim, beside
        ``displacement_theory`` = gamma - 1. Both theory exponents are derived in docs/theory.md ("Lazy and
        feature learning") and are reconstructions to be tested.

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> kd = es.kernel_drift(ds)
    >>> kd.drift_mean.dims
    ('gamma', 'width', 'time')
    >>> float(kd.drift_mean.isel(time=0).max())  # the reference Theta_0 itself
    0.0
    >>> folder.cleanup()
    """
    _require_ntk(ds)
    ntk = ds[schema.NTK]
    theta0 = ntk.isel({schema.TIME: 0}, drop=True)
    if not bool(np.isfinite(theta0).any()):
        raise ValidationError(
            "the NTK is not recorded at the first time, the reference Theta_0 of the drift; record it at t = 0."
        )
    norm0 = np.sqrt((theta0**2).sum(_KERNEL_DIMS, skipna=False))
    drift = np.sqrt(((ntk - theta0) ** 2).sum(_KERNEL_DIMS, skipna=False)) / norm0
    drift = drift.rename("drift").assign_attrs(
        long_name="relative kernel drift ||Theta_t - Theta_0||_F / ||Theta_0||_F"
    )
    out = {"drift": drift}
    parts = [("drift", drift)]
    if schema.DISPLACEMENT in ds:
        parts.append(("displacement", ds[schema.DISPLACEMENT]))
    for name, da in parts:
        sm = seed_mean(da, ci=ci)
        out[f"{name}_mean"] = sm["mean"]
        out[f"{name}_stderr"] = sm["stderr"]
        out[f"{name}_lo"] = sm["mean_lo"]
        out[f"{name}_hi"] = sm["mean_hi"]
        out[f"{name}_n_seeds"] = sm["n_seeds"]
        rate = width_rate(sm["mean"], sm["stderr"], sm["n_seeds"], ci=ci)
        for k in ("slope", "slope_lo", "slope_hi"):
            out[f"{name}_{k}"] = rate[k]
    res = xr.Dataset(out)
    g = ds[schema.GAMMA]
    res["drift_theory"] = np.maximum(g - 1.5, 2 * g - 2).assign_attrs(
        long_name="theory exponent of the kernel drift, max(gamma - 3/2, 2 gamma - 2) (docs/theory.md)"
    )
    if schema.DISPLACEMENT in ds:
        res["displacement_theory"] = (g - 1.0).assign_attrs(
            long_name="theory exponent of the displacement, gamma - 1 (docs/theory.md)"
        )
    for name in [p for p, _ in parts]:
        what = "relative kernel drift" if name == "drift" else "relative parameter displacement"
        res[f"{name}_mean"].attrs["long_name"] = f"seed mean of the {what}"
        res[f"{name}_stderr"].attrs["long_name"] = f"standard error of the seed mean of the {what}"
        schema.label_bounds(res, f"{name}", ci, f"the seed mean of the {what}")
        res[f"{name}_n_seeds"].attrs["long_name"] = "seeds used"
        res[f"{name}_slope"].attrs["long_name"] = f"exponent of N of the {what} (log-log slope)"
        schema.label_bounds(res, f"{name}_slope", ci, "the exponent")
    res.attrs.update({"ci": ci, "reference": "Theta_0: each run's NTK at the first recorded time"})
    return with_provenance(res, ds, "kernel_drift")


def kernel_eigenvalues(ds: xr.Dataset, *, k: int = 1) -> xr.DataArray:
    """Return the largest eigenvalues of each run's recorded empirical NTK, per record (lambda_max: the catapult).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` of a store that recorded ``ntk``
    k : how many eigenvalues, largest first

    Returns
    -------
    DataArray (gamma, width, seed, [extra...], time, eigen) of the k largest eigenvalues of Theta_t over the NTK
    sub-grid and outputs (a (P O) x (P O) matrix); NaN at records without an NTK.

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> lam = es.kernel_eigenvalues(ds, k=2)
    >>> lam.dims
    ('gamma', 'width', 'seed', 'time', 'eigen')
    >>> bool((lam.isel(eigen=0) >= lam.isel(eigen=1)).all())
    True
    >>> folder.cleanup()
    """
    _require_ntk(ds)
    if not (isinstance(k, int) and 1 <= k <= ds.sizes[schema.NTK_POINT] * ds.sizes[schema.OUTPUT]):
        raise ValidationError(f"k={k!r}: use an integer between 1 and the kernel's size (points x outputs).")
    ntk = ds[schema.NTK]
    if ntk.chunks:
        ntk = ntk.chunk({d: -1 for d in _KERNEL_DIMS})
    out = apply_ufunc(
        top_eigenvalues_kernel,
        ntk,
        kwargs={"k": k},
        input_core_dims=[list(_KERNEL_DIMS)],
        output_core_dims=[["eigen"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"eigen": k}},
    )
    return out.rename("ntk_eigenvalue").assign_attrs(
        long_name="largest eigenvalues of the empirical NTK over the recorded points and outputs"
    )


def _last_finite(a: np.ndarray) -> np.ndarray:
    """Return the last finite value along the last axis (NaN if none)."""
    ok = np.isfinite(a)
    idx = a.shape[-1] - 1 - np.argmax(ok[..., ::-1], axis=-1)
    out = np.take_along_axis(a, idx[..., None], -1)[..., 0]
    return np.where(ok.any(-1), out, np.nan)


def _regimes(reg: xr.Dataset, spike: float) -> tuple[xr.DataArray, xr.DataArray]:
    """Classify each run by ``theory.CATAPULT_REGIMES`` and tell whether it behaved as its regime predicts."""
    r0 = reg["r_0"]
    code = xr.full_like(r0, -1, dtype=np.int8)
    for k, (_, lower, upper) in enumerate(CATAPULT_REGIMES):
        code = xr.where((lower <= r0) & (r0 < upper), np.int8(k), code)
    spiked, div = reg["loss_spike"] > spike, reg["diverged"]
    behaved = (
        ((code == 0) & ~spiked & ~div) | ((code == 1) & spiked & ~div & (reg["r_final"] < 2)) | ((code == 2) & div)
    )
    code.attrs = {
        "flag_values": list(range(len(CATAPULT_REGIMES))),
        "flag_meanings": " ".join(name for name, _, _ in CATAPULT_REGIMES),
        "missing_value": -1,
    }
    return code, behaved


def learning_rate_regimes(ds: xr.Dataset, *, spike: float = 1.01) -> xr.Dataset:
    """Per run: the step's stability at initialization and at the end, the loss spike, divergence (the catapult).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` of a shallow sweep with MSE and full-batch GD that recorded the NTK on
        the training points (``grid = "train"`` and ``ntk_points = "all"``), the NTK at the first record
    spike : a loss ratio ``loss_spike`` above this counts as the loss rising (1.01: a 1% rise)

    Returns
    -------
    Dataset per run (gamma, width, seed, [alpha, ...]): ``eta`` = alpha N^(2 gamma - 2) (the shallow rule);
    ``lambda_0`` and ``lambda_final`` (the largest NTK eigenvalue at the first record and at the run's last record
    with an NTK); ``r_0`` and ``r_final`` = eta lambda / (M O), the linear step is stable below 2 (docs/theory.md
    §13); ``loss_spike`` = max_t L_t / L_0 (> 1: the loss rose); ``diverged`` (the run has a ``diverged_step``);
    ``regime``: the regime r_0 predicts by ``theory.CATAPULT_REGIMES`` (0 lazy, 1 catapult, 2 divergent, -1
    without an r_0; CF ``flag_values`` / ``flag_meanings``); ``as_predicted``: the run behaved as its regime
    predicts (lazy: no spike and no divergence; catapult: a spike, no divergence and r_final < 2 at the end;
    divergent: diverged).

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> reg = es.learning_rate_regimes(ds)
    >>> bool((reg.r_0 < 2).all())  # alpha = 1: every run starts in the stable (lazy) regime
    True
    >>> reg.regime.attrs["flag_meanings"], bool(reg.as_predicted.all())
    ('lazy catapult divergent', True)
    >>> folder.cleanup()
    """
    model = ds.attrs.get(schema.ATTR_MODEL) if isinstance(ds.attrs.get(schema.ATTR_MODEL), dict) else {}
    problems = []
    if not str(model.get("architecture", "")).startswith("1-hidden-layer"):
        problems.append("the rates eta = alpha N^(2 gamma - 2) are those of one hidden layer")
    if model.get("layer_alpha"):
        problems.append("per-layer rate multipliers (layer_alpha) make the step differ between layers")
    if model.get("loss") != "mse" or model.get("optimizer") != "full-batch gradient descent":
        problems.append("the stability threshold 2 holds for MSE with full-batch gradient descent")
    if schema.X_TRAIN not in ds or schema.TRAIN_LOSS not in ds:
        problems.append("the store has no training set or training loss")
    elif schema.NTK in ds and ds.sizes[schema.NTK_POINT] != ds[schema.X_TRAIN].shape[0]:
        problems.append("the NTK is not recorded on every training point (grid = 'train', ntk_points = 'all')")
    if problems:
        raise ValidationError("learning_rate_regimes: " + "; ".join(problems) + ".")
    lam = kernel_eigenvalues(ds).isel(eigen=0, drop=True)
    M, O = ds[schema.X_TRAIN].shape[0], ds.sizes[schema.OUTPUT]  # noqa: E741
    alpha = ds[schema.ALPHA] if schema.ALPHA in ds.coords else float(model.get("alpha", 1.0))
    eta = alpha * ds[schema.WIDTH].astype(np.float64) ** (2 * ds[schema.GAMMA] - 2)
    last = apply_ufunc(
        _last_finite,
        lam.chunk({schema.TIME: -1}) if lam.chunks else lam,
        input_core_dims=[[schema.TIME]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    lam0 = lam.isel({schema.TIME: 0}, drop=True)
    loss = ds[schema.TRAIN_LOSS]
    l0 = loss.isel({schema.TIME: 0}, drop=True)
    out = xr.Dataset(
        {
            "eta": eta,
            "lambda_0": lam0,
            "lambda_final": last,
            "r_0": eta * lam0 / (M * O),
            "r_final": eta * last / (M * O),
            "loss_spike": loss.max(schema.TIME) / l0,
            "diverged": ds[schema.DIVERGED_STEP] >= 0,
        }
    )
    out["regime"], out["as_predicted"] = _regimes(out, spike)
    long = {
        "eta": "learning rate of every parameter, alpha N^(2 gamma - 2)",
        "lambda_0": "largest eigenvalue of the NTK on the training points at the first record",
        "lambda_final": "largest eigenvalue of the NTK at the last record with an NTK",
        "r_0": "eta lambda_0 / (M O): the linear step is stable below 2",
        "r_final": "eta lambda_final / (M O) at the end of training",
        "loss_spike": "largest training loss over the run / initial training loss",
        "diverged": "the run diverged (non-finite values or a blow-up)",
        "regime": "regime predicted by r_0 (docs/theory.md §13)",
        "as_predicted": "the run behaved as its predicted regime",
    }
    out = out.transpose(*ds[schema.DIVERGED_STEP].dims, missing_dims="ignore")  # one dim order for every run var
    for k, v in long.items():
        out[k].attrs["long_name"] = v
    return with_provenance(out, ds, "learning_rate_regimes")
