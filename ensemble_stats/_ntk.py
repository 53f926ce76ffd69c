"""Lazy vs feature learning: how far the tangent kernel and the parameters move, and how that scales with N.

Reads the ``ntk`` and ``displacement`` variables that ``collectors.NTKCollector`` records (docs/theory.md, "Lazy
and feature learning"; docs/store.md for the variables).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import stats

from . import schema
from ._np_fit import loglog_kernel
from ._np_stats import top_eigenvalues_kernel
from ._stats import seed_mean
from ._ufunc import apply_ufunc
from .errors import ValidationError

__all__ = ["kernel_drift", "kernel_eigenvalues", "learning_rate_regimes", "width_rate"]

_KERNEL_DIMS = (schema.NTK_POINT, schema.NTK_POINT_2, schema.OUTPUT, schema.OUTPUT_2)


def width_rate(mean: xr.DataArray, stderr: xr.DataArray, n_seeds: xr.DataArray, *, ci: float = 0.95) -> xr.Dataset:
    """Return the exponent of N of a positive seed mean: weighted least squares of log(mean) on log N.

    Parameters
    ----------
    mean, stderr, n_seeds : (width, ...) seed means, their standard errors and seed counts (e.g. from
        :func:`seed_mean`); the widths' estimates are independent (different nets at each width)
    ci : level of the interval

    Returns
    -------
    Dataset with ``slope``, ``stderr``, ``slope_lo``, ``slope_hi``, ``intercept``, ``chi2_dof``, ``n_widths``
    per remaining coordinate. Weights 1 / Var(log mean) = (mean / stderr)^2 (delta method); the standard error
    is the WLS one times sqrt(chi2/dof) where the widths scatter more than their errors say, and the interval
    Student t with (fewest seeds - 1) dof.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> m = es.seed_mean(ds.prediction.isel(point=0, output=0) ** 2, var="prediction")
    >>> r = es.width_rate(m["mean"], m.stderr, m.n_seeds)
    >>> r.slope.dims
    ('gamma', 'time')
    """
    if schema.WIDTH not in mean.dims:
        raise ValidationError(f"width_rate needs a 'width' dim; got {list(mean.dims)}.")
    logN = np.log(mean[schema.WIDTH].values.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(mean.where(mean > 0))
        w = (mean / stderr.where(stderr > 0)) ** 2
    if y.chunks:
        y, w = y.chunk({schema.WIDTH: -1}), w.chunk({schema.WIDTH: -1})
    names = ["slope", "stderr", "intercept", "chi2_dof", "n_widths", "status"]
    outs = apply_ufunc(
        loglog_kernel,
        y,
        w,
        kwargs={"logN": logN},
        input_core_dims=[[schema.WIDTH]] * 2,
        output_core_dims=[[]] * len(names),
        dask="parallelized",
        output_dtypes=[np.float64] * 4 + [np.int64, np.int8],
    )
    res = xr.Dataset(dict(zip(names, outs, strict=True)))
    res["stderr"] = res["stderr"] * np.sqrt(np.fmax(res["chi2_dof"].fillna(1.0), 1.0))
    dof = np.maximum(n_seeds.min(schema.WIDTH) - 1, 1)
    t = apply_ufunc(lambda d: stats.t.ppf(0.5 + ci / 2, d), dof, dask="parallelized", output_dtypes=[float])
    res["slope_lo"] = res["slope"] - t * res["stderr"]
    res["slope_hi"] = res["slope"] + t * res["stderr"]
    long = {
        "slope": "fitted exponent of N (log-log slope)",
        "stderr": "standard error of the slope",
        "slope_lo": f"lower {ci:.0%} confidence bound of the slope",
        "slope_hi": f"upper {ci:.0%} confidence bound of the slope",
        "intercept": "intercept of the log-log fit",
        "chi2_dof": "chi2 per degree of freedom of the fit",
        "n_widths": "widths used",
        "status": "fit status (0 ok, 1 too few widths, 2 singular)",
    }
    for k, v in long.items():
        res[k].attrs["long_name"] = v
    return res


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
    >>> import collectors
    >>> import ensemble_stats as es
    >>> folder = tempfile.TemporaryDirectory()
    >>> spec = collectors.SweepSpec.parse({
    ...     "sweep": {"gammas": [0.75], "widths": [32, 128], "seeds": 8},
    ...     "time": {"units": "scaled", "horizon": 1.0, "n_times": 3},
    ...     "data": {"name": "teacher", "options": {"grid": "train"}},
    ...     "optimizer": {"batch_size": 0}, "record": {"ntk_points": "all"},
    ... })
    >>> store = collectors.prepare_store(spec, f"{folder.name}/runs.zarr")
    >>> for width in spec.widths:  # a real (tiny) shallow sweep, full-batch GD, the NTK recorded
    ...     _ = collectors.train_block(store, spec.load_data(), width=width, gammas=spec.gammas, seeds=spec.seeds,
    ...                                config=spec.train, collectors=[collectors.NTKCollector()])
    >>> ds = es.open_ensemble(store.path)
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
        res[f"{name}_lo"].attrs["long_name"] = f"lower {ci:.0%} bound of the seed mean of the {what}"
        res[f"{name}_hi"].attrs["long_name"] = f"upper {ci:.0%} bound of the seed mean of the {what}"
        res[f"{name}_n_seeds"].attrs["long_name"] = "seeds used"
        res[f"{name}_slope"].attrs["long_name"] = f"exponent of N of the {what} (log-log slope)"
        res[f"{name}_slope_lo"].attrs["long_name"] = f"lower {ci:.0%} bound of the exponent"
        res[f"{name}_slope_hi"].attrs["long_name"] = f"upper {ci:.0%} bound of the exponent"
    res.attrs.update({"ci": ci, "reference": "Theta_0: each run's NTK at the first recorded time"})
    return res


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
    >>> import collectors
    >>> import ensemble_stats as es
    >>> folder = tempfile.TemporaryDirectory()
    >>> spec = collectors.SweepSpec.parse({
    ...     "sweep": {"gammas": [0.75], "widths": [32, 128], "seeds": 8},
    ...     "time": {"units": "scaled", "horizon": 1.0, "n_times": 3},
    ...     "data": {"name": "teacher", "options": {"grid": "train"}},
    ...     "optimizer": {"batch_size": 0}, "record": {"ntk_points": "all"},
    ... })
    >>> store = collectors.prepare_store(spec, f"{folder.name}/runs.zarr")
    >>> for width in spec.widths:  # a real (tiny) shallow sweep, full-batch GD, the NTK recorded
    ...     _ = collectors.train_block(store, spec.load_data(), width=width, gammas=spec.gammas, seeds=spec.seeds,
    ...                                config=spec.train, collectors=[collectors.NTKCollector()])
    >>> ds = es.open_ensemble(store.path)
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


def learning_rate_regimes(ds: xr.Dataset) -> xr.Dataset:
    """Per run: the step's stability at initialization and at the end, the loss spike, divergence (the catapult).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` of a shallow sweep with MSE and full-batch GD that recorded the NTK on
        the training points (``grid = "train"`` and ``ntk_points = "all"``), the NTK at the first record

    Returns
    -------
    Dataset per run (gamma, width, seed, [alpha, ...]): ``eta`` = alpha N^(2 gamma - 2) (the shallow rule);
    ``lambda_0`` and ``lambda_final`` (the largest NTK eigenvalue at the first record and at the run's last record
    with an NTK); ``r_0`` and ``r_final`` = eta lambda / (M O), the linear step is stable below 2 (docs/theory.md
    §13); ``loss_spike`` = max_t L_t / L_0 (> 1: the loss rose); ``diverged`` (the run has a ``diverged_step``).

    Examples
    --------
    >>> import tempfile
    >>> import collectors
    >>> import ensemble_stats as es
    >>> folder = tempfile.TemporaryDirectory()
    >>> spec = collectors.SweepSpec.parse({
    ...     "sweep": {"gammas": [0.75], "widths": [32, 128], "seeds": 8},
    ...     "time": {"units": "scaled", "horizon": 1.0, "n_times": 3},
    ...     "data": {"name": "teacher", "options": {"grid": "train"}},
    ...     "optimizer": {"batch_size": 0}, "record": {"ntk_points": "all"},
    ... })
    >>> store = collectors.prepare_store(spec, f"{folder.name}/runs.zarr")
    >>> for width in spec.widths:  # a real (tiny) shallow sweep, full-batch GD, the NTK recorded
    ...     _ = collectors.train_block(store, spec.load_data(), width=width, gammas=spec.gammas, seeds=spec.seeds,
    ...                                config=spec.train, collectors=[collectors.NTKCollector()])
    >>> ds = es.open_ensemble(store.path)
    >>> reg = es.learning_rate_regimes(ds)
    >>> bool((reg.r_0 < 2).all())  # alpha = 1: every run starts in the stable (lazy) regime
    True
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
    long = {
        "eta": "learning rate of every parameter, alpha N^(2 gamma - 2)",
        "lambda_0": "largest eigenvalue of the NTK on the training points at the first record",
        "lambda_final": "largest eigenvalue of the NTK at the last record with an NTK",
        "r_0": "eta lambda_0 / (M O): the linear step is stable below 2",
        "r_final": "eta lambda_final / (M O) at the end of training",
        "loss_spike": "largest training loss over the run / initial training loss",
        "diverged": "the run diverged (non-finite values or a blow-up)",
    }
    out = out.transpose(*ds[schema.DIVERGED_STEP].dims, missing_dims="ignore")  # one dim order for every run var
    for k, v in long.items():
        out[k].attrs["long_name"] = v
    return out
