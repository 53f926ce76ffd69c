"""Synthetic ensembles with known truth, for tests, docs and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from . import schema, theory

__all__ = ["synthetic_ensemble"]


def _mean_exponents(gamma: float, mean_terms) -> np.ndarray:
    if mean_terms == "theory":
        return theory.mean_exponents(gamma, max_terms=1) if gamma == 1 else theory.mean_exponents(gamma)
    return np.asarray(mean_terms, dtype=np.float64)


def synthetic_ensemble(
    *,
    gammas: Sequence[float] = (0.5, 0.625, 0.75, 0.875, 1.0),
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
    n_seeds: int = 32,
    times: Sequence[float] = (0.0, 0.5, 1.0),
    n_points: int = 8,
    n_outputs: int = 1,
    mean_terms: str | Sequence[float] = "theory",
    variance_correction: float = 0.0,
    noise: str = "gaussian",
    missing_fraction: float = 0.0,
    diverged_runs: int = 0,
    seed: int = 0,
    chunks: dict | None = None,
    return_truth: bool = False,
):
    """A schema-valid ensemble whose seed-level outputs follow a known expansion.

    For each (gamma, width N, time t, point x, output):

    * mean: ``h(t, x) + sum_k Q_k(t, x) N^(-p_k)`` with ``p = theory.mean_exponents(gamma)``
      (or ``mean_terms``, a list of exponents); ``Q_k`` are standard normal draws;
    * variance: ``v(t, x) N^(1 - 2 gamma) (1 + variance_correction * N^(gamma - 1))``, ``v`` log-normal;
    * seeds: independent draws, Gaussian or ``"student"`` (t with 5 dof, rescaled to the same variance).

    Parameters
    ----------
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
    """
    rng = np.random.default_rng(seed)
    gammas = np.asarray(gammas, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    G, W, T, P, O = len(gammas), len(widths), len(times), n_points, n_outputs  # noqa: E741
    exps = [_mean_exponents(g, mean_terms) for g in gammas]
    K = max(len(e) for e in exps)
    mean_exp = np.full((G, K), np.nan)
    coef = np.full((G, T, P, O, K), np.nan)
    h = rng.normal(size=(T, P, O))
    for i, e in enumerate(exps):
        mean_exp[i, : len(e)] = e
        coef[i, ..., 0] = h
        coef[i, ..., 1 : len(e)] = rng.normal(size=(T, P, O, len(e) - 1))
    v = np.exp(rng.normal(scale=0.5, size=(T, P, O)))
    var_exp = np.stack([2 * gammas - 1, gammas], axis=-1)  # (G, 2): leading N^(1-2g), correction N^(-g)
    var_coef = np.stack([v, variance_correction * v], axis=-1)[None].repeat(G, 0)  # (G, T, P, O, 2)
    Nb = widths[None, :, None, None, None, None].astype(np.float64)
    mean = np.nansum(coef[:, None] * Nb ** -mean_exp[:, None, None, None, None, :], axis=-1)  # (G, W, T, P, O)
    variance = (var_coef[:, None] * Nb ** -var_exp[:, None, None, None, None, :]).sum(-1)
    if noise == "gaussian":
        eps = rng.normal(size=(G, W, n_seeds, T, P, O))
    elif noise == "student":
        eps = rng.standard_t(5, size=(G, W, n_seeds, T, P, O)) / np.sqrt(5 / 3)
    else:
        raise ValueError(f"noise={noise!r}: use 'gaussian' or 'student'.")
    pred = (mean[:, :, None] + np.sqrt(variance)[:, :, None] * eps).astype(np.float32)

    written = rng.random((G, W, n_seeds, T)) >= missing_fraction
    diverged = np.full((G, W, n_seeds), schema.MISSING_STEP, dtype=np.int64)
    all_steps = np.broadcast_to(
        np.rint(times[None, :] * widths[:, None]).astype(np.int64)[None, :, None, :], written.shape
    )
    flat = rng.choice(G * W * n_seeds, size=diverged_runs, replace=False) if diverged_runs else []
    for f in flat:
        g, w, s = np.unravel_index(f, (G, W, n_seeds))
        t0 = min(1, T - 1)
        pred[g, w, s, t0:] = np.nan
        written[g, w, s, :] = True
        diverged[g, w, s] = int(all_steps[g, w, s, t0])
    steps = np.where(written, all_steps, schema.MISSING_STEP)
    pred = np.where(written[..., None, None], pred, np.nan).astype(np.float32)

    x = rng.normal(size=(P, 2))
    target = rng.normal(size=(P, O))
    rd = schema.record_dims()
    ds = xr.Dataset(
        {
            schema.PREDICTION: (schema.prediction_dims(), pred),
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
            schema.TIME: (schema.TIME, times, {"units": "scaled"}),
            schema.POINT: np.arange(P),
            schema.OUTPUT: np.arange(O),
            schema.FEATURE: np.arange(2),
        },
        attrs={
            schema.ATTR_SCHEMA_VERSION: schema.SCHEMA_VERSION,
            schema.ATTR_GRID_HASH: schema.grid_hash(x, target),
            schema.ATTR_EXTRA_DIMS: [],
            "synthetic": f"ensemble_stats.testing.synthetic_ensemble(seed={seed})",
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
        },
        coords={k: ds[k] for k in (schema.GAMMA, schema.WIDTH, schema.TIME, schema.POINT, schema.OUTPUT)},
    )
    return ds, truth
