"""Synthetic ensembles with known truth, for tests, docs and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from . import schema, theory

__all__ = ["INTERVALS", "interval_coverage", "shallow_sweep", "synthetic_ensemble"]


def _mean_exponents(gamma: float, mean_terms, readout: str) -> np.ndarray:
    if mean_terms == "theory":
        return theory.mean_exponents(gamma, max_terms=1 if gamma == 1 else None, readout=readout)
    return np.asarray(mean_terms, dtype=np.float64)


def _grid_correlation(x: np.ndarray, weight: float) -> np.ndarray:
    """``weight * R + (1 - weight) * I`` with R the correlation matrix of the ReLU NNGP kernel of ``x``."""
    P = x.shape[0]
    if not weight:
        return np.eye(P)
    k = theory.nngp_kernel(x, activation="relu")
    d = np.sqrt(np.diag(k))
    return weight * (k / np.outer(d, d)) + (1.0 - weight) * np.eye(P)


def synthetic_ensemble(
    *,
    gammas: Sequence[float] = (0.5, 0.625, 0.75, 0.875, 1.0),
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
    n_seeds: int = 32,
    times: Sequence[float] = (0.0, 0.5, 1.0),
    n_points: int = 8,
    n_outputs: int = 1,
    mean_terms: str | Sequence[float] = "theory",
    readout: str = "symmetric",
    variance_correction: float = 0.0,
    noise: str = "gaussian",
    grid_correlation: float = 0.0,
    replicates: int | None = None,
    missing_fraction: float = 0.0,
    diverged_runs: int = 0,
    seed: int = 0,
    chunks: dict | None = None,
    return_truth: bool = False,
):
    """Return a schema-valid ensemble whose seed-level outputs follow a known expansion.

    For each (gamma, width N, time t, point x, output):

    * mean: ``h(t, x) + sum_k Q_k(t, x) N^(-p_k)`` with ``p = theory.mean_exponents(gamma, readout=readout)``
      (or ``mean_terms``, a list of exponents); ``Q_k`` are standard normal draws;
    * variance: ``v(t, x) N^(1 - 2 gamma) (1 + variance_correction * N^(-q))``, ``v`` log-normal, with the
      relative correction's exponent ``q = 2 - 2 gamma`` for a symmetric readout law, ``1 - gamma`` for a skewed
      one (docs/theory.md §1.4);
    * seeds: independent draws of a noise vector over the grid points with unit variance at each point and
      correlation matrix ``C = grid_correlation * R + (1 - grid_correlation) * I``, where ``R`` is the
      correlation of the ReLU NNGP kernel of the grid inputs (real network outputs are strongly correlated
      across the grid; 0 gives independent points). Marginals: ``"gaussian"``, ``"student"`` (t with 5 dof,
      excess kurtosis 6) or ``"skewed"`` (a centred gamma with shape 4: skewness 1, excess kurtosis 1.5), each
      rescaled to unit variance before the correlation is applied, so the variance above stays exact.

    Parameters
    ----------
    readout
        The readout law whose exponents the truth follows (``"symmetric"`` or ``"skewed"``); stored as the
        ``readout_law`` attribute, which the fits read.
    grid_correlation
        In [0, 1]: weight of the NNGP correlation across grid points (see above). The truth's
        ``grid_correlation`` holds the matrix C.
    replicates
        If given, an extra sweep dim ``replicate`` of that size holds independent repetitions of every seed with
        the same truth: a Monte Carlo in one Dataset (every statistic broadcasts over it).
    missing_fraction
        Fraction of (run, time) records marked unwritten (their predictions NaN).
    diverged_runs
        Number of runs whose records are replaced by NaN from their second time on (stored as written).
    chunks
        If given, the Dataset is dask-backed with these chunks.
    return_truth
        Also return the truth Dataset: ``mean``, ``variance`` (gamma, width, time, point, output),
        ``mean_coef`` (gamma, time, point, output, term), ``mean_exponent`` (gamma, term),
        ``variance_coef`` (gamma, time, point, output, variance_term) and ``variance_exponent``
        (gamma, variance_term).

    Returns
    -------
    Dataset, or (Dataset, Dataset) with ``return_truth``
        Dims (gamma, width, seed, time, point, output) like :func:`open_ensemble`.

    Examples
    --------
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds, truth = synthetic_ensemble(gammas=[0.75], widths=[64, 256], n_seeds=4, return_truth=True)
    >>> ds.prediction.dims
    ('gamma', 'width', 'seed', 'time', 'point', 'output')
    >>> truth["variance_exponent"].values.tolist()  # Var = a N^(-1/2) at gamma = 3/4 (variance_correction=0)
    [[0.5, 1.0]]
    """
    theory.readout_law(readout=readout)  # validates
    rng = np.random.default_rng(seed)
    gammas = np.asarray(gammas, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    G, W, T, P, O = len(gammas), len(widths), len(times), n_points, n_outputs  # noqa: E741
    exps = [_mean_exponents(g, mean_terms, readout) for g in gammas]
    K = max(len(e) for e in exps)
    mean_exp = np.full((G, K), np.nan)
    coef = np.full((G, T, P, O, K), np.nan)
    h = rng.normal(size=(T, P, O))
    for i, e in enumerate(exps):
        mean_exp[i, : len(e)] = e
        coef[i, ..., 0] = h
        coef[i, ..., 1 : len(e)] = rng.normal(size=(T, P, O, len(e) - 1))
    v = np.exp(rng.normal(scale=0.5, size=(T, P, O)))
    # (G, 2): the leading N^(1-2g), then the correction whose relative size is the bias law's N^(bias_rate)
    var_exp = np.stack([2 * gammas - 1, 2 * gammas - 1 - np.array([theory.bias_rate(g, readout) for g in gammas])], -1)
    var_coef = np.stack([v, variance_correction * v], axis=-1)[None].repeat(G, 0)  # (G, T, P, O, 2)
    Nb = widths[None, :, None, None, None, None].astype(np.float64)
    mean = np.nansum(coef[:, None] * Nb ** -mean_exp[:, None, None, None, None, :], axis=-1)  # (G, W, T, P, O)
    variance = (var_coef[:, None] * Nb ** -var_exp[:, None, None, None, None, :]).sum(-1)
    if not 0.0 <= grid_correlation <= 1.0:
        raise ValueError(f"grid_correlation={grid_correlation!r}: use a weight in [0, 1].")
    if replicates is not None and (int(replicates) != replicates or replicates < 1):
        raise ValueError(f"replicates={replicates!r}: use a positive integer or None.")
    reps = () if replicates is None else (int(replicates),)
    extra = () if replicates is None else ("replicate",)
    size = (G, W, n_seeds, *reps, T, P, O)
    if noise == "gaussian":
        eps = rng.normal(size=size)
    elif noise == "student":
        eps = rng.standard_t(5, size=size) / np.sqrt(5 / 3)
    elif noise == "skewed":
        eps = (rng.gamma(4.0, size=size) - 4.0) / 2.0
    else:
        raise ValueError(f"noise={noise!r}: use 'gaussian', 'student' or 'skewed'.")

    written = rng.random((G, W, n_seeds, *reps, T)) >= missing_fraction
    diverged = np.full((G, W, n_seeds, *reps), schema.MISSING_STEP, dtype=np.int64)
    all_steps = np.broadcast_to(
        np.rint(times[None, :] * widths[:, None]).astype(np.int64)[None, :, None, *([None] * len(reps)), :],
        written.shape,
    )
    flat = rng.choice(G * W * n_seeds, size=diverged_runs, replace=False) if diverged_runs else []
    x = rng.normal(size=(P, 2))
    target = rng.normal(size=(P, O))
    corr = _grid_correlation(x, grid_correlation)
    if grid_correlation:
        w_, V_ = np.linalg.eigh(corr)
        eps = np.einsum("pq,...qo->...po", (V_ * np.sqrt(np.clip(w_, 0.0, None))) @ V_.T, eps)
    shape = (G, W, 1, *(1 for _ in reps), T, P, O)
    pred = (mean.reshape(shape) + np.sqrt(variance).reshape(shape) * eps).astype(np.float32)
    for f in flat:
        g, w, s = np.unravel_index(f, (G, W, n_seeds))
        t0 = min(1, T - 1)
        pred[g, w, s, ..., t0:, :, :] = np.nan
        written[g, w, s] = True
        diverged[g, w, s] = int(all_steps[(g, w, s, *(0 for _ in reps), t0)])
    steps = np.where(written, all_steps, schema.MISSING_STEP)
    pred = np.where(written[..., None, None], pred, np.nan).astype(np.float32)

    rd = schema.record_dims(extra)
    ds = xr.Dataset(
        {
            schema.PREDICTION: (schema.prediction_dims(extra), pred),
            schema.WRITTEN: (rd, written),
            schema.STEP: (rd, steps),
            schema.DIVERGED_STEP: (rd[:-1], diverged),
            schema.X: ((schema.POINT, schema.FEATURE), x),
            schema.TARGET: ((schema.POINT, schema.OUTPUT), target),
        },
        coords={
            schema.GAMMA: gammas,
            schema.WIDTH: widths,
            schema.SEED: np.arange(n_seeds),
            **({"replicate": np.arange(reps[0])} if reps else {}),
            schema.TIME: (schema.TIME, times, {"units": "scaled"}),
            schema.POINT: np.arange(P),
            schema.OUTPUT: np.arange(O),
            schema.FEATURE: np.arange(2),
        },
        attrs={
            schema.ATTR_SCHEMA_VERSION: schema.SCHEMA_VERSION,
            schema.ATTR_GRID_HASH: schema.grid_hash(x, target),
            schema.ATTR_EXTRA_DIMS: list(extra),
            "synthetic": f"ensemble_stats.testing.synthetic_ensemble(seed={seed})",
            "readout_law": readout,
        },
    )
    if chunks:
        ds = ds.chunk(chunks)
    if not return_truth:
        return ds
    cell = (schema.GAMMA, schema.TIME, schema.POINT, schema.OUTPUT)
    truth = xr.Dataset(
        {
            "mean": ((schema.GAMMA, schema.WIDTH, schema.TIME, schema.POINT, schema.OUTPUT), mean),
            "variance": ((schema.GAMMA, schema.WIDTH, schema.TIME, schema.POINT, schema.OUTPUT), variance),
            "mean_coef": ((*cell, "term"), coef),
            "mean_exponent": ((schema.GAMMA, "term"), mean_exp),
            "variance_coef": ((*cell, "variance_term"), var_coef),
            "variance_exponent": ((schema.GAMMA, "variance_term"), var_exp),
            "grid_correlation": ((schema.POINT, "point_2"), corr),
        },
        coords={k: ds[k] for k in (schema.GAMMA, schema.WIDTH, schema.TIME, schema.POINT, schema.OUTPUT)},
    )
    return ds, truth


INTERVALS = (
    "variance (pointwise)",
    "variance (pooled)",
    "bias2 (pointwise)",
    "bias2 (pooled)",
    "mse (pooled)",
    "seed mean (pointwise)",
    "fit_rate slope",
    "fit_expansion coef",
)
"""The intervals :func:`interval_coverage` checks."""


def interval_coverage(
    *,
    n_seeds: int = 8,
    replicates: int = 1000,
    grid_correlation: float = 1.0,
    noise: str = "gaussian",
    gamma: float = 0.75,
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
    n_points: int = 8,
    ci: float = 0.95,
    ci_method: str = "auto",
    seed: int = 0,
) -> xr.Dataset:
    """Estimate the Monte-Carlo coverage of every interval the toolkit reports, against a known truth.

    The truth is that of :func:`synthetic_ensemble`.
    Each replicate is an independent ensemble with the same truth (one Dataset with a ``replicate`` dim), so
    the whole Monte Carlo is a handful of vectorised calls.

    Parameters
    ----------
    ci_method : ``"auto"`` (the toolkit's default) or ``"legacy"`` (version 0.1: seed jackknife with Student t
        for bias_variance, known-weight WLS with a normal quantile for fit_rate, the WLS covariance for
        fit_expansion), to compare the two.

    Returns
    -------
    Dataset with dim ``interval`` (see :data:`INTERVALS`): ``coverage`` (fraction of replicate intervals that
    contain the truth), ``mc_stderr`` (its binomial Monte-Carlo standard error, from the number of replicates),
    ``median_width`` (median interval width relative to the truth) and ``n`` (intervals checked). For pooled
    grids one interval per (width, replicate); pointwise ones per (width, replicate, point).

    Examples
    --------
    >>> from ensemble_stats.testing import interval_coverage
    >>> cov = interval_coverage(n_seeds=8, replicates=200, seed=0)
    >>> bool((cov.coverage > 0.85).all())  # every interval covers the known truth about 95% of the time
    True
    """
    from ._fit import fit_expansion, fit_rate
    from ._stats import bias_variance, seed_mean

    legacy = ci_method == "legacy"
    if ci_method not in ("auto", "legacy"):
        raise ValueError(f"ci_method={ci_method!r}: use 'auto' or 'legacy'.")
    ds, truth = synthetic_ensemble(
        gammas=[gamma],
        widths=widths,
        n_seeds=n_seeds,
        times=[0.5],
        n_points=n_points,
        noise=noise,
        grid_correlation=grid_correlation,
        replicates=replicates,
        seed=seed,
        return_truth=True,
    )
    bv_method = "jackknife" if legacy else "auto"
    fit_method = "model" if legacy else "auto"
    point = bias_variance(ds, dims=(), ci=ci, ci_method=bv_method)
    pooled = bias_variance(ds, ci=ci, ci_method=bv_method)
    true_var = truth["variance"]
    true_b2 = (truth["mean"] - ds[schema.TARGET]) ** 2
    true_mse = true_b2 + true_var
    mean = seed_mean(ds, ci=ci)
    rate = fit_rate(ds, ci=ci, ci_method=fit_method)
    fit = fit_expansion(ds, quantity="mean", ci=ci, ci_method=fit_method)
    v = truth["variance_coef"].isel(variance_term=0)  # pure leading law: the slope's truth is 1 - 2 gamma
    true_slope = 1 - 2 * truth[schema.GAMMA]
    if float(np.abs(truth["variance_coef"].isel(variance_term=1)).max()) > 0 or v.isnull().any():
        raise ValueError("the coverage check needs the pure leading variance law")
    checks = {
        "variance (pointwise)": (point["variance_lo"], point["variance_hi"], true_var),
        "variance (pooled)": (
            pooled["variance_lo"],
            pooled["variance_hi"],
            true_var.mean((schema.POINT, schema.OUTPUT)),
        ),
        "bias2 (pointwise)": (point["bias2_lo"], point["bias2_hi"], true_b2),
        "bias2 (pooled)": (pooled["bias2_lo"], pooled["bias2_hi"], true_b2.mean((schema.POINT, schema.OUTPUT))),
        "mse (pooled)": (pooled["mse_lo"], pooled["mse_hi"], true_mse.mean((schema.POINT, schema.OUTPUT))),
        "seed mean (pointwise)": (mean["mean_lo"], mean["mean_hi"], truth["mean"]),
        "fit_rate slope": (rate["slope_lo"], rate["slope_hi"], true_slope),
        "fit_expansion coef": (fit["coef_lo"], fit["coef_hi"], truth["mean_coef"].rename(term="term")),
    }
    cov, width, count = [], [], []
    for lo, hi, true in checks.values():
        lo, hi, true = xr.align(*xr.broadcast(lo, hi, true), join="inner")
        ok = np.isfinite(lo.values) & np.isfinite(hi.values) & np.isfinite(true.values)
        inside = (lo.values <= true.values) & (true.values <= hi.values)
        n = int(np.isfinite(true.values).sum())
        cov.append(float(inside[np.isfinite(true.values)].mean()))  # a NaN interval counts as a miss
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = (hi.values - lo.values)[ok] / np.abs(true.values[ok])
        width.append(float(np.median(rel)) if rel.size else np.nan)
        count.append(n)
    cov = np.asarray(cov)
    return xr.Dataset(
        {
            "coverage": ("interval", cov, {"long_name": f"fraction of {ci:.0%} intervals containing the truth"}),
            "mc_stderr": (
                "interval",
                np.sqrt(cov * (1 - cov) / replicates),
                {"long_name": "Monte-Carlo standard error of the coverage (binomial, per replicate)"},
            ),
            "median_width": (
                "interval",
                np.asarray(width),
                {"long_name": "median interval width relative to the true value"},
            ),
            "n": ("interval", np.asarray(count), {"long_name": "intervals checked"}),
        },
        coords={"interval": list(checks)},
        attrs={
            "n_seeds": n_seeds,
            "replicates": replicates,
            "grid_correlation": grid_correlation,
            "noise": noise,
            "ci": ci,
            "ci_method": ci_method,
        },
    )


def shallow_sweep(
    path,
    *,
    gammas: Sequence[float] = (0.75,),
    widths: Sequence[int] = (32, 128),
    seeds: int = 8,
    horizon: float = 1.0,
    n_times: int = 3,
) -> object:
    """Train a real, tiny shallow sweep into a new store at ``path`` and return the store's location.

    Teacher regression on 8 points (the grid is the training set), the theory's init law, full-batch gradient
    descent at alpha = 1, the empirical NTK recorded at every record: the regime the kernel limit describes, so
    every analysis of the toolkit applies. It trains in about a second on a CPU; for examples and tests of the
    analyses that need trained networks. Needs ``collectors`` (PyTorch), imported only when called.

    Parameters
    ----------
    path : a new local store (or a URL)
    gammas, widths : the sweep's normalization exponents and widths
    seeds : the number of seeds
    horizon, n_times : the scaled training time t = k / N, and the number of evenly spaced records in [0, horizon]

    Returns
    -------
    The store's canonical location (for :func:`~ensemble_stats.open_ensemble`).

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))
    >>> dict(ds.sizes)["seed"], ds.ntk.dims[-4:]
    (8, ('ntk_point', 'ntk_point_2', 'output', 'output_2'))
    >>> folder.cleanup()
    """
    from .errors import require

    require("torch", "testing.shallow_sweep (it trains networks)")
    import collectors

    spec = collectors.SweepSpec.parse(
        {
            "sweep": {"gammas": list(gammas), "widths": list(widths), "seeds": int(seeds)},
            "time": {"units": "scaled", "horizon": float(horizon), "n_times": int(n_times)},
            "data": {"name": "teacher", "options": {"grid": "train"}},
            "optimizer": {"batch_size": 0},
            "record": {"ntk_points": "all"},
        }
    )
    store = collectors.prepare_store(spec, path)
    data = spec.load_data()
    for width in spec.widths:
        collectors.train_block(
            store,
            data,
            width=width,
            gammas=spec.gammas,
            seeds=spec.seeds,
            config=spec.train,
            collectors=[collectors.NTKCollector()],
        )
    return store.path
