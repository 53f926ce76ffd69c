"""numpy kernels for fits across widths: WLS on the basis N^(-p), variance IRLS, free exponents, log-log slopes.

Cells sit on leading axes and widths on the last; the xarray wrappers in ``_fit.py`` apply them with
``xr.apply_ufunc(dask="parallelized")``.
"""

from __future__ import annotations

import numpy as np

from ._np_stats import MIN_SEEDS

__all__ = ["STATUS", "jackknife_fit_kernel", "jackknife_loglog_kernel", "loglog_kernel", "wls_kernel"]

STATUS = {0: "ok", 1: "too_few_widths", 2: "singular", 3: "no_residual_dof", 4: "bad_weights"}
"""Per-cell status codes of the fits (``status`` variable, with ``flag_meanings``)."""
_OK, _FEW, _SINGULAR, _NODOF, _BADW = 0, 1, 2, 3, 4


def wls_kernel(y, w, p, *, widths, scaled: bool = True):
    """Weighted least squares of y on the basis N^(-p_k), batched over leading axes.

    Parameters
    ----------
    y, w : arrays (..., width)
        Values and weights (inverse variances). Non-finite y or w, or w <= 0, drop that width from the cell.
    p : array (..., term)
        Exponents per cell (broadcastable against y's leading axes); NaN marks an unused term (its outputs are
        NaN).
    widths : array (width,)
    scaled : bool
        Scale the covariance by chi^2/dof as ``statsmodels.WLS`` does (default); False treats the weights as
        known inverse variances.

    Returns
    -------
    coef (..., term), stderr (..., term), cov (..., term, term), chi2_dof (...), n_used (...), status (...)
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    N = np.asarray(widths, dtype=np.float64)
    K = p.shape[-1]
    used_cols = np.isfinite(p).reshape(-1, K).any(0)
    if not used_cols.all():  # terms unused by every cell (e.g. padding for a smaller gamma): solve without them
        sub = wls_kernel(y, w, p[..., used_cols], widths=N, scaled=scaled)
        lead = sub[3].shape
        coef = np.full((*lead, K), np.nan)
        cov = np.full((*lead, K, K), np.nan)
        coef[..., used_cols] = sub[0]
        cov[..., np.ix_(used_cols, used_cols)[0], np.ix_(used_cols, used_cols)[1]] = sub[2]
        stderr = np.full((*lead, K), np.nan)
        stderr[..., used_cols] = sub[1]
        return coef, stderr, cov, sub[3], sub[4], sub[5]
    lead = np.broadcast_shapes(y.shape[:-1], w.shape[:-1], p.shape[:-1])
    used = np.broadcast_to(np.isfinite(p), (*lead, K))
    good = np.isfinite(y) & np.isfinite(w) & (w > 0)
    n_used = np.broadcast_to(good.sum(-1), lead)
    k_used = used.sum(-1)
    wg = np.where(good, w, 0.0)
    sw = np.sqrt(wg)
    # basis columns, computed at the exponents' own (small, broadcast) shape: (..., K, W)
    with np.errstate(over="ignore", invalid="ignore"):
        basis = N ** -np.where(np.isfinite(p), p, 0.0)[..., None]
    basis = np.where(np.isfinite(p)[..., None], basis, 0.0)
    cols = sw[..., None, :] * basis  # (..., K, W)
    norm = np.sqrt((cols**2).sum(-1))
    norm = np.where(norm > 0, norm, 1.0)
    cols = cols / norm[..., None]
    rhs = sw * np.where(good, y, 0.0)
    if not used.all():  # cells that leave some terms out get identity rows, so their system stays square
        eye = np.broadcast_to(~used[..., :, None] & np.eye(K, dtype=bool), (*lead, K, K)).astype(np.float64)
        cols = np.concatenate([np.broadcast_to(cols, (*lead, K, N.size)), eye], axis=-1)
        rhs = np.concatenate([np.broadcast_to(rhs, (*lead, N.size)), np.zeros((*lead, K))], axis=-1)
    cols = np.broadcast_to(cols, (*lead, *cols.shape[-2:]))
    rhs = np.broadcast_to(rhs, (*lead, rhs.shape[-1]))
    R, qb = _mgs(np.moveaxis(cols, (-2, -1), (0, 1)), np.moveaxis(rhs, -1, 0))
    diag = np.abs(np.diagonal(R, axis1=-2, axis2=-1))
    singular = (diag < 1e-10).any(-1)
    R_safe = np.where(singular[..., None, None], np.eye(K), R)
    cs = _back_substitute(R_safe, qb[..., None])[..., 0]
    Rinv = _back_substitute(R_safe, np.broadcast_to(np.eye(K), R_safe.shape))
    cov = np.einsum("...ik,...jk->...ij", Rinv, Rinv) / (norm[..., :, None] * norm[..., None, :])
    coef = cs / norm
    fitted = np.einsum("...kw,...k->...w", basis, coef)
    chi2 = (wg * (np.where(good, y, 0.0) - fitted) ** 2 * good).sum(-1)
    dof = n_used - k_used
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_dof = np.where(dof > 0, chi2 / dof, np.nan)
    if scaled:
        cov = cov * chi2_dof[..., None, None]
    status = np.full(lead, _OK, dtype=np.int8)
    status = np.where(scaled & (dof == 0), _NODOF, status)
    status = np.where(singular, _SINGULAR, status)
    status = np.where(n_used < k_used, _FEW, status)
    status = np.where(n_used == 0, _BADW, status)
    bad = status != _OK
    if not scaled:
        bad = bad & (status != _NODOF)
    coef = np.where(bad[..., None] | ~used, np.nan, coef)
    cov = np.where(bad[..., None, None] | ~(used[..., :, None] & used[..., None, :]), np.nan, cov)
    stderr = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    return coef, stderr, cov, chi2_dof, n_used.astype(np.int64), status


def _mgs(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Modified Gram-Schmidt QR of columns A (K, M, ...) batched over trailing cell axes; returns R
    (..., K, K) and Q^T b (..., K) for b (M, ...).

    Applied to the augmented system [A | b] it is backward stable for least squares (Bjorck). Cells sit on
    the trailing (contiguous) axes, so each of the K^2 steps is a few long vector operations instead of one
    LAPACK call per tiny matrix.
    """
    K = A.shape[0]
    Q = np.array(A, dtype=np.float64)
    z = np.array(b, dtype=np.float64)
    R = np.zeros((K, K, *A.shape[2:]))
    qb = np.zeros((K, *A.shape[2:]))
    for j in range(K):
        r = np.sqrt((Q[j] ** 2).sum(0))
        R[j, j] = r
        q = Q[j] / np.where(r > 0, r, 1.0)
        for k in range(j + 1, K):
            rjk = (q * Q[k]).sum(0)
            R[j, k] = rjk
            Q[k] -= rjk * q
        zj = (q * z).sum(0)
        qb[j] = zj
        z -= zj * q
    return np.moveaxis(R, (0, 1), (-2, -1)), np.moveaxis(qb, 0, -1)


def _back_substitute(R: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve R X = B for upper-triangular R (..., K, K), B (..., K, m), batched."""
    K = R.shape[-1]
    X = np.zeros(np.broadcast_shapes(R.shape[:-2], B.shape[:-2]) + B.shape[-2:])
    for i in range(K - 1, -1, -1):
        acc = B[..., i, :] - np.einsum("...k,...km->...m", R[..., i, i + 1 :], X[..., i + 1 :, :])
        X[..., i, :] = acc / R[..., i, i][..., None]
    return X


def _variance_fit_kernel(v, n, p, *, widths, iterations: int = 4, scaled: bool = True):
    """Fit sample variances v (..., width) from n seeds by IRLS with weights (n - 1) / (2 * fitted^2)."""
    v = np.asarray(v, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    fitted = v
    for _ in range(iterations):
        with np.errstate(invalid="ignore", divide="ignore"):
            w = (n - 1) / (2 * fitted**2)
        out = wls_kernel(v, w, p, widths=widths, scaled=scaled)
        coef = out[0]
        Nb = np.asarray(widths, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            new = np.nansum(coef[..., None, :] * Nb[:, None] ** -np.nan_to_num(p[..., None, :], nan=0.0), axis=-1)
        ok = np.isfinite(new) & (new > 0)
        fitted = np.where(ok, new, v)
    return out


_P_GRID = np.linspace(0.0, 3.0, 61)


def _free_kernel(y, w, widths, *, constant: bool, grid=_P_GRID, scaled: bool = True):
    """Fit y = [h +] c N^(-p) with p free, by variable projection: scan p, refine by golden section."""
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    lead = y.shape[:-1]

    def chi2_at(pv):
        pv = np.asarray(pv, dtype=np.float64)
        pp = np.stack([np.zeros_like(pv), pv], -1) if constant else pv[..., None]
        out = wls_kernel(y, w, pp, widths=widths, scaled=False)
        return out[3] * np.maximum(out[4] - pp.shape[-1], 1), out

    scores = np.stack([chi2_at(np.full(lead, g))[0] for g in grid], -1)
    scores = np.where(np.isfinite(scores), scores, np.inf)
    best = grid[np.argmin(scores, -1)]
    step = grid[1] - grid[0]
    lo, hi = np.maximum(best - step, grid[0]), np.minimum(best + step, grid[-1])
    phi = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        fa, fb = chi2_at(a)[0], chi2_at(b)[0]
        left = np.nan_to_num(fa, nan=np.inf) <= np.nan_to_num(fb, nan=np.inf)
        hi = np.where(left, b, hi)
        lo = np.where(left, lo, a)
    p_hat = (lo + hi) / 2
    pp = np.stack([np.zeros_like(p_hat), p_hat], -1) if constant else p_hat[..., None]
    coef, _, _, chi2_dof, n_used, status = wls_kernel(y, w, pp, widths=widths, scaled=False)
    # covariance of (coefficients..., p) from the Jacobian at the optimum
    N = np.asarray(widths, dtype=np.float64)
    good = np.isfinite(y) & np.isfinite(w) & (w > 0)
    Np = N ** -p_hat[..., None]  # (..., W)
    cols = [np.ones_like(Np)] if constant else []
    cols += [Np, -coef[..., -1:] * np.log(N) * Np]
    J = np.stack(cols, -1) * np.sqrt(np.where(good, w, 0.0))[..., None]
    J = np.where(np.isfinite(J), J, 0.0)  # cells that could not be fitted (their status says why)
    JtJ = np.einsum("...wk,...wl->...kl", J, J)
    k = len(cols)
    dof = n_used - k
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = chi2_dof * (n_used - (k - 1))
        scale = np.where(dof > 0, chi2 / dof, np.nan) if scaled else np.ones(lead)
        try:
            cov = np.linalg.inv(JtJ) * scale[..., None, None]
        except np.linalg.LinAlgError:
            cov = np.linalg.pinv(JtJ) * scale[..., None, None]
        chi2_dof = np.where(dof > 0, chi2 / dof, np.nan)
    status = np.where((status == _OK) & (dof <= 0) & scaled, _NODOF, status)
    status = np.where(n_used < k, _FEW, status)
    bad = status != _OK
    coef = np.where(bad[..., None], np.nan, coef)
    cov = np.where(bad[..., None, None], np.nan, cov)
    se = np.sqrt(np.abs(np.diagonal(cov, axis1=-2, axis2=-1)))
    p_out = np.where(bad, np.nan, p_hat)
    return coef, se[..., :-1], cov[..., :-1, :-1], p_out, se[..., -1], chi2_dof, n_used, status


def loglog_kernel(y, w, *, logN):
    """WLS of y on [1, log N] with known weights: slope, stderr, intercept, chi2/dof, n, status."""
    X = np.stack([np.ones_like(logN), logN], -1)
    good = np.isfinite(y) & np.isfinite(w) & (w > 0)
    ww = np.where(good, w, 0.0)
    yy = np.where(good, y, 0.0)
    A = np.einsum("...w,wk,wl->...kl", ww, X, X)
    b = np.einsum("...w,wk,...w->...k", ww, X, yy)
    n = good.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        det = A[..., 0, 0] * A[..., 1, 1] - A[..., 0, 1] ** 2
        ok = (n >= 2) & (np.abs(det) > 1e-12 * np.abs(A[..., 0, 0] * A[..., 1, 1]))
        det_s = np.where(ok, det, 1.0)
        inter = (A[..., 1, 1] * b[..., 0] - A[..., 0, 1] * b[..., 1]) / det_s
        slope = (A[..., 0, 0] * b[..., 1] - A[..., 0, 1] * b[..., 0]) / det_s
        var_slope = A[..., 0, 0] / det_s
        resid = yy - inter[..., None] - slope[..., None] * logN
        chi2 = (ww * resid**2).sum(-1)
        chi2_dof = np.where(n > 2, chi2 / (n - 2), np.nan)
    status = np.where(n < 2, _FEW, np.where(~ok, _SINGULAR, _OK)).astype(np.int8)
    bad = status != _OK
    return (
        np.where(bad, np.nan, slope),
        np.where(bad, np.nan, np.sqrt(var_slope)),
        np.where(bad, np.nan, inter),
        chi2_dof,
        n.astype(np.int64),
        status,
    )


def jackknife_loglog_kernel(y, w, y_loo, *, logN):
    """Log-log slope with a standard error from deleting whole seeds across all widths.

    Parameters
    ----------
    y, w : (..., width)
        log quantity and its weights (inverse variances).
    y_loo : (..., width, seed)
        The log quantity with seed index i left out at every width (NaN where seed i is unused; a width whose
        leave-one-out value is not finite drops out of that replicate's fit).

    Returns
    -------
    slope, stderr (jackknife), intercept, chi2_dof, n_widths, status, n_seeds (seed indices used)
    """
    slope, _, inter, chi2_dof, n, status = loglog_kernel(y, w, logN=logN)
    yl = np.moveaxis(np.asarray(y_loo, dtype=np.float64), -1, 0)  # (seed, ..., width)
    used = np.isfinite(yl).any(-1)  # seed index used somewhere
    ylf = np.where(np.isfinite(yl), yl, np.where(used[..., None], np.nan, y))
    sl = loglog_kernel(ylf, np.broadcast_to(w, ylf.shape), logN=logN)[0]  # (seed, ...)
    sl = np.where(used, sl, np.nan)
    k = np.isfinite(sl).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bar = np.nansum(sl, 0) / k
        se = np.sqrt((k - 1) / k * np.nansum((sl - bar) ** 2, 0))
    se = np.where((status == _OK) & (k >= MIN_SEEDS), se, np.nan)
    return slope, se, inter, chi2_dof, n, status, k.astype(np.int64)


def _moments(x: np.ndarray):
    """Seed mean, variance (ddof=1) and count over the last axis, non-finite values dropped."""
    ok = np.isfinite(x)
    n = ok.sum(-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, x, 0.0).sum(-1) / n
        v = (np.where(ok, x - m[..., None], 0.0) ** 2).sum(-1) / (n - 1)
    return m, v, n


def jackknife_fit_kernel(pred, p, *, widths, quantity: str, scaled: bool = True):
    """The expansion fit of :func:`wls_kernel` / :func:`_variance_fit_kernel`, plus whole-seed jackknife errors.

    Parameters
    ----------
    pred : (..., width, seed)
        Predictions (one grid value per cell); non-finite values drop out.
    p : (..., term)
        Exponents, as for :func:`wls_kernel`.

    Returns
    -------
    The six outputs of the fit, then ``jack_se`` (..., term): the jackknife standard error over seed indices
    (seed i deleted at every width, moments and weights recomputed, the fit redone), and ``n_seeds`` (...).
    """
    x = np.asarray(pred, dtype=np.float64)

    def fit(xx):
        m, v, n = _moments(xx)
        if quantity == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return wls_kernel(m, n / v, p, widths=widths, scaled=scaled)
        return _variance_fit_kernel(v, n, p, widths=widths, scaled=scaled)

    full = fit(x)
    S = x.shape[-1]
    used = np.isfinite(x).any(-2)  # (..., seed): seed index present at some width
    coefs = []
    for i in range(S):
        xi = x.copy()
        xi[..., i] = np.nan
        coefs.append(np.where(used[..., i, None], fit(xi)[0], np.nan))
    c = np.stack(coefs, 0)  # (seed, ..., term)
    k = np.isfinite(c).all(-1).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bar = np.nansum(c, 0) / k[..., None]
        se = np.sqrt((k - 1)[..., None] / k[..., None] * np.nansum((c - bar) ** 2, 0))
    se = np.where(np.isfinite(full[0]) & (k >= MIN_SEEDS)[..., None], se, np.nan)
    return (*full, se, k.astype(np.int64))
