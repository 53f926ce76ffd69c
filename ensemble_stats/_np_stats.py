"""numpy kernels for seed statistics: estimates, standard errors and intervals calibrated at few seeds.

Every kernel works on trailing axes (``seed`` then the grid axes averaged over) and is applied by the xarray
wrappers in ``_stats.py`` with ``xr.apply_ufunc(dask="parallelized")``. The methods and their measured coverage
are described in docs/intervals.md.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = [
    "CI_METHODS",
    "CI_STATUS",
    "MIN_SEEDS",
    "bias_variance_kernel",
    "chi2_interval",
    "jackknife_se",
    "ks_normal_kernel",
    "leave_one_out_kernel",
    "pair_bias_variance_kernel",
    "seed_mean_kernel",
    "top_eigenvalues_kernel",
]

CI_METHODS = ("auto", "chi2", "jackknife")
"""``ci_method`` values: ``"auto"`` (calibrated default), ``"chi2"`` (Gaussian effective-dof chi-square only),
``"jackknife"`` (seed jackknife with Student t, S - 1 dof: the method of version 0.1)."""

MIN_SEEDS = 4
"""Fewest seeds for which an interval is reported; below it intervals are NaN with ``ci_status`` 1."""

CI_STATUS = {0: "ok", 1: "too_few_seeds", 2: "degenerate"}
"""``ci_status`` codes: 1 = fewer than :data:`MIN_SEEDS` seeds (no method is calibrated there), 2 = an estimate
that no interval can be put around (zero spread, non-positive variance)."""
_OK, _FEW, _DEGENERATE = 0, 1, 2

STATISTICS = ("mse", "bias2", "variance")


def jackknife_se(theta: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Jackknife standard error from leave-one-out values ``theta`` (..., seed), NaN where a seed is unused.

    ``n`` (...) counts the used seeds: se^2 = (n - 1) / n * sum_i (theta_i - mean theta)^2.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        bar = np.nansum(theta, axis=-1, keepdims=True) / n[..., None]
        return np.sqrt((n - 1) / n * np.nansum((theta - bar) ** 2, axis=-1))


def chi2_interval(est: np.ndarray, nu: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval for a positive quantity whose estimate is distributed as ``truth * chi2_nu / nu``.

    Exact for a Gaussian sample variance (nu = S - 1); with an effective dof it is Satterthwaite's
    approximation for any positive quadratic statistic.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(nu) & (nu > 0) & (est > 0)
        nu = np.where(ok, nu, 1.0)
        lo = est * nu / stats.chi2.ppf(0.5 + ci / 2, nu)
        hi = est * nu / stats.chi2.ppf(0.5 - ci / 2, nu)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def _trace_moments(dev: np.ndarray, S: np.ndarray, n_grid: int):
    """Unbiased (Gaussian) estimates of tr(Sigma) and tr(Sigma^2) of the grid covariance, from centred seeds.

    dev : (..., seed, *grid), zero for unused seeds. Uses the seed Gram matrix, so the cost is S^2 * grid.
    Returns tr(S_hat), the estimate of tr(Sigma^2) (Srivastava 2005, clipped to its lower bound
    tr(Sigma)^2 / P), and P (grid size).
    """
    lead = dev.shape[: dev.ndim - n_grid]
    flat = dev.reshape(*lead, -1)  # (..., seed, P)
    P = flat.shape[-1]
    gram = np.einsum("...sp,...tp->...st", flat, flat)
    n = (S - 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tr1 = np.trace(gram, axis1=-2, axis2=-1) / n
        tr2 = (gram**2).sum((-2, -1)) / n**2
        a2 = np.where(n > 1, n**2 / ((n - 1) * (n + 2)) * (tr2 - tr1**2 / n), tr2)
        a2 = np.maximum(a2, tr1**2 / P)
    return tr1, a2, P


def _effective_dof_variance(tr1, a2, S, P):
    """Gaussian dof of the grid-averaged sample variance: (S - 1) * (tr Sigma)^2 / tr Sigma^2, in [S - 1, (S - 1) P]."""
    n = (S - 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a1sq = np.maximum(tr1**2 - 2 * a2 / n, a2)  # unbiased (tr Sigma)^2, at least tr Sigma^2
        rank = np.clip(a1sq / a2, 1.0, P)
    return n * rank


def _seed_statistics(pred, ref, n_grid: int):
    """Grid-averaged estimates and their leave-one-seed-out values (closed form from the seed sums).

    Returns ``est`` and ``theta`` (dicts over :data:`STATISTICS`; theta is (..., seed), NaN for unused seeds)
    and the pieces the intervals need (seed count ``S``, ``valid`` seeds, centred ``dev``, mean error ``err``
    and per-point variance ``var``).
    """
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    grid_axes = tuple(range(-n_grid, 0))
    seed_axis = pred.ndim - n_grid - 1
    valid = np.isfinite(pred).all(axis=grid_axes) if n_grid else np.isfinite(pred)  # (..., seed)
    vmask = valid.reshape(valid.shape + (1,) * n_grid)
    x = np.where(vmask, pred, 0.0)
    S = valid.sum(axis=-1)
    Sg = S.reshape(S.shape + (1,) * n_grid).astype(np.float64)
    Se = np.expand_dims(Sg, seed_axis)
    grid_mean = (lambda a: a.mean(axis=grid_axes)) if n_grid else (lambda a: a)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=seed_axis) / Sg
        dev = np.where(vmask, x - np.expand_dims(mean, seed_axis), 0.0)
        ss = (dev**2).sum(axis=seed_axis)
        var = ss / (Sg - 1)
        err = mean - ref
        bias2 = err**2 - var / Sg
        full = {"mse": bias2 + var, "bias2": bias2, "variance": var}
        mean_i = (np.expand_dims(mean, seed_axis) * Se - x) / (Se - 1)
        var_i = (np.expand_dims(ss, seed_axis) - dev**2 * Se / (Se - 1)) / (Se - 2)
        bias2_i = (mean_i - np.expand_dims(ref, ref.ndim - n_grid)) ** 2 - var_i / (Se - 1)
        loo = {"mse": bias2_i + var_i, "bias2": bias2_i, "variance": var_i}
        est = {k: np.where(S >= 2, grid_mean(full[k]), np.nan) for k in STATISTICS}
        theta = {k: np.where(valid, grid_mean(loo[k]), np.nan) for k in STATISTICS}
    parts = {"S": S, "valid": valid, "dev": dev, "err": err, "var": var, "grid_mean": grid_mean}
    return est, theta, parts


def leave_one_out_kernel(pred, ref, *, n_grid: int, statistic: str, ci_method: str = "auto"):
    """One grid-averaged statistic, its leave-one-seed-out values (..., seed) and its effective dof.

    The dof is that of :func:`bias_variance_kernel`'s interval (NaN for ``"jackknife"`` and for ``bias2``).
    """
    r = _bias_variance(pred, ref, n_grid, 0.95, ci_method)
    nu = r["nu"] if statistic == "variance" else np.full(r["S"].shape, np.nan)
    return r["est"][statistic], r["theta"][statistic], nu


def bias_variance_kernel(
    pred: np.ndarray, ref: np.ndarray, *, n_grid: int, ci: float = 0.95, ci_method: str = "auto"
) -> tuple[np.ndarray, ...]:
    """Seed statistics averaged over the trailing grid axes, with standard errors and calibrated intervals.

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
        Level of the intervals.
    ci_method : {"auto", "chi2", "jackknife"}
        See docs/intervals.md. ``"auto"``: variance and MSE by a scaled chi-square with an effective dof (the
        smallest of the Gaussian dof from the grid covariance's effective rank and the dofs implied by the
        jackknife variances on the raw and log scale, which guard against heavy tails); the squared bias by the
        square of the exact t interval of the mean error where one value is averaged, else the seed jackknife.
        ``"chi2"``: the Gaussian dof alone. ``"jackknife"``: seed jackknife, Student t with S - 1 dof.

    Returns
    -------
    tuple of arrays, each (...,)
        ``mse, bias2, variance``; their standard errors (seed jackknife); ``lo, hi`` of each;
        ``variance_dof`` (the effective dof of the variance interval, NaN for ``"jackknife"``);
        ``n_seeds``; ``ci_status`` (see :data:`CI_STATUS`).

    Notes
    -----
    Per grid value, with S seeds, mean m and sample variance s^2 (ddof=1): ``bias2 = (m - r)^2 - s^2 / S`` is
    unbiased for the squared bias, and ``mse = bias2 + s^2`` equals the plain seed average ``mean_s (f_s - r)^2``.
    Leave-one-seed-out values come in closed form from the sums.
    """
    r = _bias_variance(pred, ref, n_grid, ci, ci_method)
    return (
        *(r["est"][k] for k in STATISTICS),
        *(r["se"][k] for k in STATISTICS),
        *r["bounds"],
        r["nu"],
        r["S"].astype(np.int64),
        r["status"].astype(np.int8),
    )


def _bias_variance(pred, ref, n_grid: int, ci: float, ci_method: str) -> dict:
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method={ci_method!r}: use one of {CI_METHODS}.")
    est, theta, c = _seed_statistics(pred, ref, n_grid)
    S, dev, err, var, grid_mean = c["S"], c["dev"], c["err"], c["var"], c["grid_mean"]
    seed_axis = dev.ndim - n_grid - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        se = {k: np.where(S >= 3, jackknife_se(theta[k], S), np.nan) for k in STATISTICS}
        t = stats.t.ppf(0.5 + ci / 2, np.maximum(S - 1, 1))
        bounds = {k: (est[k] - t * se[k], est[k] + t * se[k]) for k in STATISTICS}
        nu_var = np.full(S.shape, np.nan)
        if ci_method != "jackknife":
            tr1, a2, P = _trace_moments(dev, S, n_grid)
            nu_var = _effective_dof_variance(tr1, a2, S, P)
            # MSE = mean_s e_s, e_s = |f_s - r|^2 / P: Var e = (2 tr Sigma^2 + 4 d' Sigma d) / P^2 (Gaussian)
            d = err.reshape(*S.shape, -1)
            flat = dev.reshape(*S.shape, dev.shape[seed_axis], -1)
            proj = np.einsum("...sp,...p->...s", flat, d)  # d' dev_s
            dsd = (proj**2).sum(-1) / (S - 1)  # d' Sigma_hat d
            M = est["mse"] * P
            nu_mse = S * 2 * M**2 / (2 * a2 + 4 * dsd)
            if ci_method == "auto":
                nu_var = np.fmin(nu_var, _guard_dof(est["variance"], se["variance"], theta["variance"], S))
                nu_mse = np.fmin(nu_mse, _guard_dof(est["mse"], se["mse"], theta["mse"], S))
            bounds["variance"] = chi2_interval(est["variance"], nu_var, ci)
            # the MSE is a seed mean: its t interval holds where the bias dominates (near-normal errors), the
            # scaled chi-square where the variance does (skewed errors); the hull of the two holds in both
            lo_c, hi_c = chi2_interval(est["mse"], nu_mse, ci)
            bounds["mse"] = (np.fmin(lo_c, bounds["mse"][0]), np.fmax(hi_c, bounds["mse"][1]))
            if P == 1:
                bounds["bias2"] = _squared_t_interval(grid_mean(err), grid_mean(var), S, ci)
    few = S < MIN_SEEDS
    status, out_bounds = _checked_bounds(bounds, few)
    nu_out = np.where(few, np.nan, nu_var)
    return {"est": est, "se": se, "theta": theta, "bounds": out_bounds, "nu": nu_out, "S": S, "status": status}


def _checked_bounds(bounds: dict, few: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return the ``ci_status`` and the (lo, hi) of each statistic, NaN where too few units or not finite."""
    status = np.where(few, _FEW, _OK)
    out = []
    for k in STATISTICS:
        lo, hi = bounds[k]
        bad = ~(np.isfinite(lo) & np.isfinite(hi))
        status = np.where(~few & bad & (status == _OK), _DEGENERATE, status)
        out += [np.where(few | bad, np.nan, lo), np.where(few | bad, np.nan, hi)]
    return status, out


def _guard_dof(est, se, theta, S):
    """Return the dof a scaled chi-square would need to have the jackknife's variance, on the raw and the log scale.

    Under heavy tails the sample variance varies more than a Gaussian's; the jackknife sees that (the raw
    scale) and the log scale keeps seeds with a small leave-one-out value from being averaged away.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        nu_raw = 2 * est**2 / se**2
        log_se = jackknife_se(np.log(np.where(theta > 0, theta, np.nan)), S)
        nu_log = 2 / log_se**2
    return np.fmin(nu_raw, nu_log)


def _squared_t_interval(err, var, S, ci):
    """Squares of the t interval of the mean error: covers the squared bias with probability >= ci (Gaussian)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + ci / 2, np.maximum(S - 1, 1)) * np.sqrt(var / S)
        lo, hi = err - half, err + half
        lo2 = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo**2, hi**2))
        hi2 = np.maximum(lo**2, hi**2)
    return lo2, hi2


def seed_mean_kernel(pred: np.ndarray, *, ci: float = 0.95) -> tuple[np.ndarray, ...]:
    """Seed mean with its standard error and Student-t interval (S - 1 dof), over the last axis.

    Non-finite values drop out. Returns ``mean, stderr, lo, hi, n_seeds, ci_status`` (intervals NaN below
    :data:`MIN_SEEDS` seeds).
    """
    x = np.asarray(pred, dtype=np.float64)
    ok = np.isfinite(x)
    S = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, x, 0.0).sum(-1) / S
        v = (np.where(ok, x - m[..., None], 0.0) ** 2).sum(-1) / (S - 1)
        se = np.sqrt(v / S)
        t = stats.t.ppf(0.5 + ci / 2, np.maximum(S - 1, 1))
    few = S < MIN_SEEDS
    bad = ~few & ~(se > 0)
    status = np.where(few, _FEW, np.where(bad, _DEGENERATE, _OK)).astype(np.int8)
    keep = ~(few | bad)
    return (
        np.where(S >= 1, m, np.nan),
        np.where(S >= 2, se, np.nan),
        np.where(keep, m - t * se, np.nan),
        np.where(keep, m + t * se, np.nan),
        S.astype(np.int64),
        status,
    )


def log_variance_sd(nu: np.ndarray) -> np.ndarray:
    """Return the standard deviation of log(chi2_nu / nu): sqrt(trigamma(nu / 2))."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(special.polygamma(1, np.asarray(nu, dtype=np.float64) / 2))


COMPONENTS = ("init", "data_order", "interaction")
"""The variance components of a crossed (seed x data seed) design, in the kernel's output order."""


def _anova_components(y: np.ndarray) -> np.ndarray:
    """Method-of-moments components (3,) of y (I, J, P): seed, data seed, interaction; grid means."""
    I, J = y.shape[:2]  # noqa: E741
    m = y.mean((0, 1), keepdims=True)
    ri, cj = y.mean(1, keepdims=True), y.mean(0, keepdims=True)
    msa = J * ((ri - m) ** 2).sum((0, 1)) / (I - 1)
    msb = I * ((cj - m) ** 2).sum((0, 1)) / (J - 1)
    mse = ((y - ri - cj + m) ** 2).sum((0, 1)) / ((I - 1) * (J - 1))
    return np.array([((msa - mse) / J).mean(), ((msb - mse) / I).mean(), mse.mean()])


def variance_components_kernel(y: np.ndarray, *, n_grid: int, ci: float = 0.95) -> tuple[np.ndarray, ...]:
    """Variance components of y (..., seed, data_seed, *grid) with intervals, pooled over the grid.

    y_ij = mu + a_i + b_j + e_ij per grid value: ``init`` = Var a (initialization), ``data_order`` = Var b,
    ``interaction`` = Var e (seed x data-order interaction and everything else; one run per cell cannot split
    them). ANOVA (method of moments) estimates per grid value, averaged over the grid: unbiased. Standard error:
    the delete-one-seed and delete-one-data-seed jackknives added; interval: scaled chi-square with the
    jackknife-implied dof 2 est^2 / se^2 (docs/intervals.md). Seeds with a non-finite value are dropped.

    Returns
    -------
    est, stderr, lo, hi : (..., 3) in the order of ``COMPONENTS``; n_seeds, n_data_seeds (...); status (...)
    """
    lead = y.shape[: y.ndim - 2 - n_grid]
    I, J = y.shape[len(lead)], y.shape[len(lead) + 1]  # noqa: E741
    flat = y.reshape(-1, I, J, int(np.prod(y.shape[len(lead) + 2 :], dtype=np.int64)))
    est = np.full((len(flat), 3), np.nan)
    se = np.full((len(flat), 3), np.nan)
    n_i = np.zeros(len(flat), dtype=np.int64)
    status = np.ones(len(flat), dtype=np.int8)
    with np.errstate(invalid="ignore", divide="ignore"):
        for c, cell in enumerate(flat):
            rows = cell[np.isfinite(cell).all(axis=(1, 2))]
            n_i[c] = len(rows)
            if len(rows) < 2 or J < 2:
                continue
            est[c] = _anova_components(rows)
            if len(rows) < 3 or J < 3:
                continue  # a jackknife needs a design of at least 2 x 2 after deleting one
            by_seed = np.array([_anova_components(np.delete(rows, i, 0)) for i in range(len(rows))])
            by_data = np.array([_anova_components(np.delete(rows, j, 1)) for j in range(J)])
            var = sum((k - 1) / k * ((t - t.mean(0)) ** 2).sum(0) for t, k in ((by_seed, len(rows)), (by_data, J)))
            se[c] = np.sqrt(var)
            status[c] = 0
        nu = 2 * est**2 / se**2
        lo, hi = chi2_interval(est, nu, ci)
    n_j = np.full(len(flat), J, dtype=np.int64)
    shape = (*lead, 3)
    return (
        est.reshape(shape),
        se.reshape(shape),
        lo.reshape(shape),
        hi.reshape(shape),
        n_i.reshape(lead),
        n_j.reshape(lead),
        status.reshape(lead),
    )


def _pair_estimates(E1, E2, Q, P):
    """mse, bias2, variance per grid value from the sums over P pairs of e = (u + v)/2 - r, e^2, q = ((u - v)/2)^2."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_e = E1 / P
        # sample variance of the pair means: undefined (NaN) for one pair, where the rounding residue of
        # E2 - P mean^2 (exactly 0) would otherwise give a +-inf that a later mean over the grid turns into inf - inf
        s2 = np.where(P > 1, (E2 - P * mean_e**2) / (P - 1), np.nan)
        return {"mse": (E2 + Q) / P, "bias2": mean_e**2 - s2 / P, "variance": Q / P + s2}


def pair_bias_variance_kernel(
    first: np.ndarray, second: np.ndarray, ref: np.ndarray, *, n_grid: int, ci: float = 0.95
) -> tuple[np.ndarray, ...]:
    """:func:`bias_variance_kernel` for antithetic pairs: the pair is the unit of every estimate and interval.

    Parameters
    ----------
    first, second : arrays (..., pair, *grid)
        The two members of each pair; a pair is used only if both are finite over the grid.
    ref : broadcastable to (..., *grid)
    n_grid, ci : as in :func:`bias_variance_kernel`

    Returns
    -------
    The same tuple as :func:`bias_variance_kernel`; ``variance_dof`` is the jackknife's effective dof and
    ``n_seeds`` counts the members of the pairs used (2 per pair); intervals need :data:`MIN_SEEDS` pairs.

    Notes
    -----
    With pair means m_p = (u + v)/2, half differences d_p = (u - v)/2 and P pairs: the mean is mean_p m_p; the
    squared bias (mean m - r)^2 - s_m^2 / P is unbiased (s_m^2 the sample variance of the pair means); the
    variance of one member, Var d + Var m, is estimated without bias by mean_p d_p^2 + s_m^2, because u and v
    have the same law (so d and m are uncorrelated and E d = 0); the MSE is the plain average over members.
    Standard errors are the pair jackknife; bias2 and mse use Student t with P - 1 dof (the squared t interval
    of the mean error when one value is averaged), the variance a scaled chi-square whose dof the jackknife
    gives on the raw and log scale.
    """
    u = np.asarray(first, dtype=np.float64)
    v = np.asarray(second, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    grid_axes = tuple(range(-n_grid, 0))
    ok = np.isfinite(u) & np.isfinite(v)
    valid = ok.all(axis=grid_axes, keepdims=True) if n_grid else ok
    e = np.where(valid, (u + v) / 2 - np.expand_dims(r, r.ndim - n_grid), 0.0)  # pair-mean errors
    q = np.where(valid, ((u - v) / 2) ** 2, 0.0)
    P = valid.sum(axis=-n_grid - 1, keepdims=True).astype(np.float64)
    E1, E2, Q = (a.sum(axis=-n_grid - 1, keepdims=True) for a in (e, e**2, q))

    def pooled(x):
        return x.mean(axis=grid_axes) if n_grid else x

    est = {k: pooled(val)[..., 0] for k, val in _pair_estimates(E1, E2, Q, P).items()}
    loo = _pair_estimates(E1 - e, E2 - e**2, Q - q, P - 1)
    used = valid.all(axis=grid_axes) if n_grid else valid  # (..., pair)
    theta = {k: np.where(used, pooled(val), np.nan) for k, val in loo.items()}
    n = P.reshape(P.shape[: P.ndim - n_grid - 1])
    se = {k: np.where(n >= 3, jackknife_se(theta[k], n), np.nan) for k in STATISTICS}
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stats.t.ppf(0.5 + ci / 2, np.maximum(n - 1, 1))
        bounds = {k: (est[k] - t * se[k], est[k] + t * se[k]) for k in STATISTICS}
        # Satterthwaite: variance = A + B, A = mean d^2 (Gaussian dof P x the grid's effective rank of d), B = s_m^2
        # ((P - 1) x that of the pair means); capped by the jackknife's dofs, which see heavy tails
        d = np.where(valid, (u - v) / 2, 0.0)
        m_dev = np.where(valid, e - E1 / P, 0.0)
        tr_a, a2_a, G = _trace_moments(d, n + 1, n_grid)
        tr_b, a2_b, _ = _trace_moments(m_dev, n, n_grid)
        A, B = tr_a / G, tr_b / G
        nu_a, nu_b = _effective_dof_variance(tr_a, a2_a, n + 1, G), _effective_dof_variance(tr_b, a2_b, n, G)
        nu = (A + B) ** 2 / (A**2 / nu_a + B**2 / nu_b)
        nu = np.fmin(nu, _guard_dof(est["variance"], se["variance"], theta["variance"], n))
        bounds["variance"] = chi2_interval(est["variance"], nu, ci)
        # the MSE: the hull of its t interval and a scaled chi-square with the jackknife's dof (as for seeds)
        nu_mse = _guard_dof(est["mse"], se["mse"], theta["mse"], n)
        lo_c, hi_c = chi2_interval(est["mse"], nu_mse, ci)
        bounds["mse"] = (np.fmin(lo_c, bounds["mse"][0]), np.fmax(hi_c, bounds["mse"][1]))
        if np.prod(u.shape[u.ndim - n_grid :]) == 1:  # one value: the exact squared t interval
            mean_e = pooled(E1 / P)[..., 0]
            s2 = pooled((E2 - E1**2 / P) / (P - 1))[..., 0]
            bounds["bias2"] = _squared_t_interval(mean_e, s2, n, ci)
    few = n < MIN_SEEDS
    status, out_bounds = _checked_bounds(bounds, few)
    return (
        *(np.where(n >= 1, est[k], np.nan) for k in STATISTICS),
        *(se[k] for k in STATISTICS),
        *out_bounds,
        np.where(few, np.nan, nu),
        (2 * n).astype(np.int64),
        status.astype(np.int8),
    )


def ks_normal_kernel(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kolmogorov-Smirnov test of the last axis against N(0, 1), NaNs omitted per cell.

    Returns
    -------
    statistic (...), p-value (...) (exact distribution of the one-sample statistic), n (...) samples used;
    NaN statistic and p-value with fewer than 2 samples.
    """
    z = np.asarray(z, dtype=np.float64)
    n = np.isfinite(z).sum(-1)
    lead = z.shape[:-1]
    d, p = np.full(lead, np.nan), np.full(lead, np.nan)
    ok = n >= 2
    if ok.any():
        r = stats.ks_1samp(z[ok], stats.norm.cdf, axis=-1, nan_policy="omit")
        d[ok], p[ok] = r.statistic, r.pvalue
    return d, p, n


def top_eigenvalues_kernel(theta: np.ndarray, *, k: int = 1) -> np.ndarray:
    """Return the k largest eigenvalues of symmetric kernels (..., P, P2, O, O2), largest first.

    The kernels are flattened to (P O) x (P O) matrices; NaN where a kernel is not (fully) recorded. Returns (..., k).
    """
    theta = np.asarray(theta, dtype=np.float64)
    lead, (P, _, O, _) = theta.shape[:-4], theta.shape[-4:]  # noqa: E741
    m = np.moveaxis(theta, -3, -2).reshape(*lead, P * O, P * O)  # (..., P, O, P2, O2) -> (PO, PO)
    out = np.full((*lead, k), np.nan)
    ok = np.isfinite(m).all((-2, -1))
    if ok.any():
        sym = (m[ok] + np.swapaxes(m[ok], -1, -2)) / 2
        out[ok] = np.linalg.eigvalsh(sym)[..., ::-1][..., :k]
    return out


def t_quantile(ci: float, dof) -> np.ndarray:
    """Compute the two-sided Student t quantile ``t.ppf(0.5 + ci / 2, dof)`` elementwise.

    Evaluated once per distinct dof (a fit's dof takes a handful of values over millions of cells; scipy's ppf costs
    microseconds a call).
    """
    dof = np.asarray(dof, dtype=np.float64)
    values, inverse = np.unique(dof, return_inverse=True)
    return stats.t.ppf(0.5 + ci / 2, values)[inverse].reshape(dof.shape)
