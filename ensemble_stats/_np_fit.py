"""numpy kernels for fits across widths: WLS on the basis N^(-p), variance IRLS, free exponents, log-log slopes.

Cells sit on leading axes and widths on the last; the xarray wrappers in ``_fit.py`` apply them with
``xr.apply_ufunc(dask="parallelized")``.
"""

from __future__ import annotations

import numpy as np

from ._np_stats import MIN_SEEDS

__all__ = [
    "STATUS",
    "information_kernel",
    "jackknife_fit_kernel",
    "jackknife_loglog_kernel",
    "loglog_kernel",
    "wls_kernel",
]

STATUS = {0: "ok", 1: "too_few_widths", 2: "singular", 3: "no_residual_dof", 4: "bad_weights"}
"""Per-cell status codes of the fits (``status`` variable, with ``flag_meanings``)."""
_OK, _FEW, _SINGULAR, _NODOF, _BADW = 0, 1, 2, 3, 4


WEAK_PIVOT = 1e-4
"""Cells whose Jacobi-scaled normal matrix has a Cholesky pivot below this (columns close to dependent: a
condition number above about 10^4) are solved by Gram-Schmidt QR instead, which does not square it."""


def wls_kernel(y, w, p, *, widths, scaled: bool = True, coef_only: bool = False):
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
    coef_only : bool
        Return the coefficients alone (..., term) (NaN where the status is not ok), skipping the covariance
        and chi^2: what a jackknife replicate needs.

    Returns
    -------
    coef (..., term), stderr (..., term), cov (..., term, term), chi2_dof (...), n_used (...), status (...)

    The K x K normal equations, scaled to unit diagonal, are solved by Cholesky for every cell at once (a few
    passes over the data); cells whose columns are nearly dependent there (a pivot below ``WEAK_PIVOT``) are
    solved by modified Gram-Schmidt QR, which keeps its accuracy where the normal equations would lose it.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    N = np.asarray(widths, dtype=np.float64)
    K = p.shape[-1]
    used_cols = np.isfinite(p).reshape(-1, K).any(0)
    if not used_cols.all():  # terms unused by every cell (e.g. padding for a smaller gamma): solve without them
        sub = wls_kernel(y, w, p[..., used_cols], widths=N, scaled=scaled, coef_only=coef_only)
        lead = (sub if coef_only else sub[0]).shape[:-1]
        coef = np.full((*lead, K), np.nan)
        coef[..., used_cols] = sub if coef_only else sub[0]
        if coef_only:
            return coef
        cov = np.full((*lead, K, K), np.nan)
        cov[..., np.ix_(used_cols, used_cols)[0], np.ix_(used_cols, used_cols)[1]] = sub[2]
        stderr = np.full((*lead, K), np.nan)
        stderr[..., used_cols] = sub[1]
        return coef, stderr, cov, sub[3], sub[4], sub[5]
    lead = np.broadcast_shapes(y.shape[:-1], w.shape[:-1], p.shape[:-1])
    used = np.broadcast_to(np.isfinite(p), (*lead, K))
    good = np.isfinite(y) & np.isfinite(w) & (w > 0)
    n_used = np.broadcast_to(_row_sum(good), lead).astype(np.int64)
    k_used = used.sum(-1)
    wg = np.where(good, w, 0.0)
    yg = np.where(good, y, 0.0)
    basis = _basis(p, N)
    coef, Ainv = _solve_normal(wg, yg, basis, used, lead, want_inverse=not coef_only)
    singular = np.zeros(lead, dtype=bool)  # decided by the QR path: cells with a weak pivot go there
    weak = np.isnan(coef).any(-1)
    if weak.any():  # the few cells the normal equations cannot be trusted with
        idx = np.nonzero(weak)
        cells = [np.broadcast_to(a, (*lead, *a.shape[-n:]))[idx] for a, n in ((wg, 1), (yg, 1), (basis, 2))]
        coef[idx], Ainv[idx], singular[idx] = _solve_mgs(*cells, used[idx])
    dof = n_used - k_used
    status = np.full(lead, _OK, dtype=np.int8)
    status = np.where(scaled & (dof == 0), _NODOF, status)
    status = np.where(singular, _SINGULAR, status)
    status = np.where(n_used < k_used, _FEW, status)
    status = np.where(n_used == 0, _BADW, status)
    bad = (status != _OK) & ((status != _NODOF) | scaled)
    solved, coef = coef, np.where(bad[..., None] | ~used, np.nan, coef)
    if coef_only:
        return coef
    fitted = _evaluate(solved, basis)
    chi2 = _row_sum(wg * (yg - fitted) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_dof = np.where(dof > 0, chi2 / dof, np.nan)
    cov = Ainv * chi2_dof[..., None, None] if scaled else Ainv
    cov = np.where(bad[..., None, None] | ~(used[..., :, None] & used[..., None, :]), np.nan, cov)
    stderr = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    return coef, stderr, cov, chi2_dof, n_used.astype(np.int64), status


def _row_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last (short, widths) axis as a matrix-vector product.

    Several times faster than numpy's reduction along a short contiguous axis; exact for counts.
    """
    return np.asarray(a, dtype=np.float64) @ np.ones(a.shape[-1])


def _evaluate(coef: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """sum_k coef_k N^(-p_k): coef (..., K) on basis (..., K, W) -> (..., W).

    One matrix product when every cell shares the basis.
    """
    K, W = basis.shape[-2:]
    if basis.size == K * W:
        return (coef.reshape(-1, K) @ basis.reshape(K, W)).reshape(*coef.shape[:-1], W)
    return np.einsum("...kw,...k->...w", basis, coef)


def _basis(p: np.ndarray, widths) -> np.ndarray:
    """Return the columns N^(-p_k) (..., K, W) at the exponents' own (small, broadcast) shape; 0 for unused terms."""
    N = np.asarray(widths, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        basis = N ** -np.where(np.isfinite(p), p, 0.0)[..., None]
    return np.where(np.isfinite(p)[..., None], basis, 0.0)


def _solve_normal(wg, yg, basis, used, lead, *, want_inverse: bool):
    """Coefficients (..., K) from the Jacobi-scaled normal equations by Cholesky, batched over cells.

    NaN rows where a pivot falls below ``WEAK_PIVOT`` (left to :func:`_solve_mgs`); and (B^T W B)^(-1) (..., K, K)
    when asked (else zeros).

    Every entry of the K x K systems is its own contiguous array over the cells, so each step of the
    factorisation is one pass over memory rather than a strided walk through (..., K, K) blocks.
    """
    K, W = basis.shape[-2:]
    wy = wg * yg
    products = basis[..., :, None, :] * basis[..., None, :, :]  # (..., K, K, W), at the exponents' shape
    if basis.size == K * W:  # one basis for every cell (the usual case): two matrix products
        cells = wg.shape[:-1]
        flat_a = products.reshape(K * K, W) @ wg.reshape(-1, W).T  # (K*K, cells), rows contiguous
        flat_b = basis.reshape(K, W) @ wy.reshape(-1, W).T
        A = [[flat_a[k * K + m].reshape(cells) for m in range(K)] for k in range(K)]
        rhs = [flat_b[k].reshape(cells) for k in range(K)]
    else:
        A = [[(wg * products[..., k, m, :]).sum(-1) for m in range(K)] for k in range(K)]
        rhs = [(wy * basis[..., k, :]).sum(-1) for k in range(K)]
    if not used.all():
        on = [np.broadcast_to(used[..., k], lead) for k in range(K)]
        for k in range(K):  # unused terms: identity rows, zero right-hand side
            rhs[k] = np.where(on[k], rhs[k], 0.0)
            for m in range(K):
                A[k][m] = np.where(on[k] & on[m], A[k][m], float(k == m))
    d = [np.sqrt(A[k][k]) for k in range(K)]
    d = [np.where(dk > 0, dk, 1.0) for dk in d]
    L = [[None] * K for _ in range(K)]
    weak = np.zeros(lead, dtype=bool)
    for j in range(K):
        piv = A[j][j] / (d[j] * d[j]) - sum((L[j][q] ** 2 for q in range(j)), 0.0)
        weak |= ~(piv >= WEAK_PIVOT)
        L[j][j] = np.sqrt(np.where(piv > 0, piv, 1.0))
        for i in range(j + 1, K):
            off = A[i][j] / (d[i] * d[j]) - sum((L[i][q] * L[j][q] for q in range(j)), 0.0)
            L[i][j] = off / L[j][j]
    z = []
    for i in range(K):
        z.append((rhs[i] / d[i] - sum((L[i][q] * z[q] for q in range(i)), 0.0)) / L[i][i])
    c = [None] * K
    for i in range(K - 1, -1, -1):
        c[i] = (z[i] - sum((L[q][i] * c[q] for q in range(i + 1, K)), 0.0)) / L[i][i]
    coef = np.empty((*lead, K))
    for k in range(K):
        coef[..., k] = c[k] / d[k]
    coef[weak] = np.nan
    Ainv = np.zeros((*lead, K, K))
    if want_inverse:  # (L L^T)^(-1) = Linv^T Linv, then undo the scaling
        Linv = [[None] * K for _ in range(K)]
        for i in range(K):
            Linv[i][i] = 1.0 / L[i][i]
            for j in range(i):
                Linv[i][j] = -sum(L[i][q] * Linv[q][j] for q in range(j, i)) / L[i][i]
        for i in range(K):
            for j in range(i, K):
                v = sum(Linv[k][i] * Linv[k][j] for k in range(j, K)) / (d[i] * d[j])
                Ainv[..., i, j] = Ainv[..., j, i] = v
    return coef, Ainv


def _solve_mgs(wg, yg, basis, used):
    """Solve the same system by modified Gram-Schmidt QR of the weighted, column-normalised design.

    Cells on the leading axis. Returns the coefficients, (B^T W B)^(-1) and a ``singular`` mask.
    """
    K = basis.shape[-2]
    lead = wg.shape[:-1]
    sw = np.sqrt(wg)
    cols = sw[..., None, :] * basis  # (..., K, W)
    norm = np.sqrt((cols**2).sum(-1))
    norm = np.where(norm > 0, norm, 1.0)
    cols = cols / norm[..., None]
    rhs = sw * yg
    if not used.all():  # cells that leave some terms out get identity rows, so their system stays square
        eye = np.broadcast_to(~used[..., :, None] & np.eye(K, dtype=bool), (*lead, K, K)).astype(np.float64)
        cols = np.concatenate([cols, eye], axis=-1)
        rhs = np.concatenate([rhs, np.zeros((*lead, K))], axis=-1)
    R, qb = _mgs(np.moveaxis(cols, (-2, -1), (0, 1)), np.moveaxis(rhs, -1, 0))
    diag = np.abs(np.diagonal(R, axis1=-2, axis2=-1))
    singular = (diag < 1e-10).any(-1)
    R_safe = np.where(singular[..., None, None], np.eye(K), R)
    cs = _back_substitute(R_safe, qb[..., None])[..., 0]
    Rinv = _back_substitute(R_safe, np.broadcast_to(np.eye(K), R_safe.shape))
    Ainv = np.einsum("...ik,...jk->...ij", Rinv, Rinv) / (norm[..., :, None] * norm[..., None, :])
    return cs / norm, Ainv, singular


def _mgs(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the modified Gram-Schmidt QR of columns A (K, M, ...) batched over trailing cell axes.

    Returns R (..., K, K) and Q^T b (..., K) for b (M, ...).

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


IRLS_ITERATIONS = 4
"""Passes of the variance fit's iteratively reweighted least squares."""


def _variance_fit_kernel(
    v, n, p, *, widths, iterations: int = IRLS_ITERATIONS, scaled: bool = True, coef_only: bool = False
):
    """Fit sample variances v (..., width) from n seeds by IRLS with weights (n - 1) / (2 * fitted^2).

    The outputs of :func:`wls_kernel` at the last iteration (only its coefficients with ``coef_only``).
    """
    v = np.asarray(v, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    basis = _basis(np.asarray(p, dtype=np.float64), widths)
    fitted = v
    for it in range(iterations):
        with np.errstate(invalid="ignore", divide="ignore"):
            w = (n - 1) / (2 * fitted**2)
        out = wls_kernel(v, w, p, widths=widths, scaled=scaled, coef_only=coef_only or it < iterations - 1)
        if it == iterations - 1:
            return out
        with np.errstate(invalid="ignore", over="ignore"):
            new = _evaluate(np.where(np.isnan(out), 0.0, out), basis)  # NaN terms (unused, failed) count 0
        ok = np.isfinite(new) & (new > 0)
        fitted = np.where(ok, new, v)


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


def _seed_moments(xt: np.ndarray):
    """Seed moments of ``xt`` (seed, ..., width), non-finite values dropped.

    The full mean, variance (ddof=1) and count (..., width), and the same with each seed index left out in turn
    (seed, ..., width).

    The deleted-seed moments come from the full sums by downdating (m_i = m - d_i / (n - 1),
    SS_i = SS - d_i^2 n / (n - 1), with d_i the seed's deviation): O(S) work instead of recomputing S times.
    Where seed i is missing at a width its moments there are the full ones.
    """
    ok = np.isfinite(xt)
    n = ok.sum(0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, xt, 0.0).sum(0) / n
        d = np.where(ok, xt - m, 0.0)
        ss = (d * d).sum(0)
        v = ss / (n - 1)
        n_i = n - ok
        m_i = m - d / n_i  # 0 / 0 where the seed was the width's only one: NaN, as a mean of nothing
        ss_i = ss - d * d * (n / n_i)
        np.maximum(ss_i, 0.0, out=ss_i)  # rounding may leave -1e-17 where the remaining values are equal
        v_i = np.where(n_i >= 2, ss_i / (n_i - 1), np.nan)
    return (m, v, n), (m_i, v_i, n_i), ok


def _fit_moments(m, v, n, p, *, widths, quantity: str, scaled: bool, coef_only: bool = False):
    if quantity == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return wls_kernel(m, n / v, p, widths=widths, scaled=scaled, coef_only=coef_only)
    return _variance_fit_kernel(v, n, p, widths=widths, scaled=scaled, coef_only=coef_only)


BLOCK_VALUES = 1 << 18
"""Values (cells x widths x seeds) the jackknife fit takes at a time: about 2 MB per temporary, so the dozens of
temporaries a block needs stay in the cache and in memory the allocator reuses (a fresh multi-megabyte array
costs more in page faults than the arithmetic done on it)."""


def jackknife_fit_kernel(pred, p, *, widths, quantity: str, scaled: bool = True):
    """Fit as :func:`wls_kernel` / :func:`_variance_fit_kernel`, plus whole-seed jackknife errors.

    Parameters
    ----------
    pred : (..., width, seed)
        Predictions (one grid value per cell); non-finite values drop out.
    p : (..., term)
        Exponents, as for :func:`wls_kernel`.

    Returns
    -------
    The six outputs of the fit, then ``jack_se`` (..., term): the jackknife standard error over seed indices
    (seed i deleted at every width, moments and weights recomputed, the fit redone), ``n_seeds`` (...), and the
    fit's ``chi2``, ``aic``, ``aicc`` (...) of :func:`information_kernel`. Each cell's moments and its S
    deleted-seed fits are computed in one compiled pass (``_nb_fit``); the cells are taken in blocks of about
    ``BLOCK_VALUES`` values.
    """
    x = np.asarray(pred, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    W, S = x.shape[-2:]
    K = p.shape[-1]
    lead = np.broadcast_shapes(x.shape[:-2], p.shape[:-1])
    cells = int(np.prod(lead))
    x = np.broadcast_to(x, (*lead, W, S)).reshape(cells, W, S)
    shared = p.size == K  # one set of exponents for every cell: kept unbroadcast, so the basis is shared too
    p = p.reshape(K) if shared else np.broadcast_to(p, (*lead, K)).reshape(cells, K)
    outs = [
        np.empty((cells, K)),
        np.empty((cells, K)),
        np.empty((cells, K, K)),
        np.empty(cells),
        np.empty(cells, dtype=np.int64),
        np.empty(cells, dtype=np.int8),
        np.empty((cells, K)),
        np.empty(cells, dtype=np.int64),
        np.empty(cells),
        np.empty(cells),
        np.empty(cells),
    ]
    step = max(1, BLOCK_VALUES // (W * S))
    for a in range(0, cells, step):
        b = min(cells, a + step)
        got = _jackknife_block(x[a:b], p if shared else p[a:b], widths=widths, quantity=quantity, scaled=scaled)
        for out, value in zip(outs, got, strict=True):
            out[a:b] = value
    return tuple(o.reshape(*lead, *o.shape[1:]) for o in outs)


def _jackknife_block(x, p, *, widths, quantity: str, scaled: bool):
    """:func:`jackknife_fit_kernel` on cells (C, width, seed) with exponents (K,) or (C, K).

    The seed moments and the S deleted-seed fits come from the compiled kernel (``_nb_fit``), replicates it flags
    as nearly singular from the numpy path (:func:`_jackknife_block_numpy` is the reference it is tested against).
    """
    from ._nb_fit import jackknife_cells

    per_cell = p.ndim == 2
    pp = p if per_cell else p[None, :]
    m, v, n, c, weak = jackknife_cells(
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(_basis(pp, widths)),
        np.ascontiguousarray(np.isfinite(pp)),
        quantity != "mean",
        IRLS_ITERATIONS,
        bool(scaled),
        WEAK_PIVOT,
    )
    moments = (m, v, n)
    full = _fit_moments(*moments, p, widths=widths, quantity=quantity, scaled=scaled)
    if weak.any():
        s_idx, c_idx = np.nonzero(weak)
        cells, local = np.unique(c_idx, return_inverse=True)
        _, loo, _ = _seed_moments(np.moveaxis(x[cells], -1, 0).copy())
        rows = tuple(a[s_idx, local] for a in loo)
        c[s_idx, c_idx] = _fit_moments(
            *rows, p[c_idx] if per_cell else p, widths=widths, quantity=quantity, scaled=scaled, coef_only=True
        )
    info = information_kernel(*moments, full[0], p, full[5], widths=widths, quantity=quantity, free=False)
    return (*full, *_jackknife_se(c, full[0], p), *info)


def _jackknife_se(c, full_coef, p):
    """Whole-seed jackknife standard error (..., term) and replicate count (...) of deleted-seed fits c (seed, ..., term).

    A replicate counts when every term the cell uses (finite exponent in ``p``) has a finite coefficient.
    """
    k = (np.isfinite(c) | ~np.isfinite(p)).all(-1).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bar = np.nansum(c, 0) / k[..., None]
        se = np.sqrt((k - 1)[..., None] / k[..., None] * np.nansum((c - bar) ** 2, 0))
    se = np.where(np.isfinite(full_coef) & (k >= MIN_SEEDS)[..., None], se, np.nan)
    return se, k.astype(np.int64)


def _jackknife_block_numpy(x, p, *, widths, quantity: str, scaled: bool):
    """Compute :func:`_jackknife_block` all in numpy (its reference): moments by downdating, the S fits as one batch."""
    xt = np.moveaxis(x, -1, 0).copy()  # (seed, C, width), contiguous
    moments, loo, ok = _seed_moments(xt)
    full = _fit_moments(*moments, p, widths=widths, quantity=quantity, scaled=scaled)
    used = ok.any(-1)  # (seed, C): seed index present at some width
    c = _fit_moments(*loo, p, widths=widths, quantity=quantity, scaled=scaled, coef_only=True)
    c = np.where(used[..., None], c, np.nan)  # (seed, C, term)
    info = information_kernel(*moments, full[0], p, full[5], widths=widths, quantity=quantity, free=False)
    return (*full, *_jackknife_se(c, full[0], p), *info)


def information_kernel(mean, var, n, coef, p, status, *, widths, quantity: str, free: bool):
    """Compute chi^2, AIC and AICc (...) of fitted coefficients (..., term) at exponents p.

    Against the seed moments mean, var, n (..., width), with the weights the fit used (n / var for the mean; (n - 1) /
    (2 fitted^2) for the variance); NaN where ``status`` is not ok.
    """
    coef = np.asarray(coef, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    N = np.asarray(widths, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        terms = coef[..., None, :] * N[:, None] ** -p[..., None, :]  # (..., width, term)
        fitted = np.where(np.isnan(terms).all(-1), np.nan, np.nansum(terms, -1))
        if quantity == "mean":
            y, w = mean, n / np.where(var > 0, var, np.nan)
        else:
            y, w = var, (n - 1) / (2 * np.where(fitted != 0, fitted, np.nan) ** 2)
        good = np.isfinite(y) & np.isfinite(w) & (w > 0) & np.isfinite(fitted)
        chi2 = np.where(good.any(-1), np.where(good, w * (y - fitted) ** 2, 0.0).sum(-1), np.nan)
        k = np.isfinite(coef).sum(-1) + int(free)
        spare = good.sum(-1) - k - 1
        aic = chi2 + 2 * k
        aicc = aic + np.where(spare > 0, 2 * k * (k + 1) / np.where(spare > 0, spare, 1), np.nan)
    ok = np.asarray(status) == _OK
    return tuple(np.where(ok, a, np.nan) for a in (chi2, aic, aicc))
