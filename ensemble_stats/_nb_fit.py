"""Compiled kernel of the whole-seed jackknife fits: seed moments and every deleted-seed fit of a cell in one pass.

The numpy kernels of ``_np_fit.py`` are the reference; this module computes the same numbers (the same moments,
the same weights, IRLS iterations, pivot test and status rules, to rounding) with a loop per cell, so nothing of
size seeds x cells x widths is allocated and Dask's threads run it without the GIL. Replicates whose normal
equations are nearly singular (a pivot below ``WEAK_PIVOT``) are flagged and left to the numpy kernels' QR path.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}


@njit(inline="always", **_JIT)
def _normal_equations(y, w, b, A, rhs):
    """Fill A = B^T W B (K, K) and rhs = B^T W y over the usable widths; return how many there are."""
    K, W = b.shape
    n_used = 0
    for k in range(K):
        rhs[k] = 0.0
        for m in range(K):
            A[k, m] = 0.0
    for j in range(W):
        wj, yj = w[j], y[j]
        if not (math.isfinite(yj) and math.isfinite(wj) and wj > 0):
            continue
        n_used += 1
        wy = wj * yj
        for k in range(K):
            bk = b[k, j]
            rhs[k] += bk * wy
            for m in range(k + 1):
                A[k, m] += bk * b[m, j] * wj
    for k in range(K):
        for m in range(k + 1, K):
            A[k, m] = A[m, k]
    return n_used


@njit(inline="always", **_JIT)
def _cholesky_solve(A, rhs, u, weak_pivot, coef, L, d, z):
    """Solve A coef = rhs by the Jacobi-scaled Cholesky of ``_np_fit._solve_normal`` (unused terms: identity rows).

    Returns True when a pivot is weak (``coef`` then undefined).
    """
    K = A.shape[0]
    for k in range(K):
        if not u[k]:
            rhs[k] = 0.0
            for m in range(K):
                A[k, m] = A[m, k] = 1.0 if k == m else 0.0
    for k in range(K):
        dk = math.sqrt(A[k, k])
        d[k] = dk if dk > 0 else 1.0
    for j in range(K):
        piv = A[j, j] / (d[j] * d[j])
        for q in range(j):
            piv -= L[j, q] * L[j, q]
        if not piv >= weak_pivot:
            return True
        L[j, j] = math.sqrt(piv)
        for i in range(j + 1, K):
            off = A[i, j] / (d[i] * d[j])
            for q in range(j):
                off -= L[i, q] * L[j, q]
            L[i, j] = off / L[j, j]
    for i in range(K):
        acc = rhs[i] / d[i]
        for q in range(i):
            acc -= L[i, q] * z[q]
        z[i] = acc / L[i, i]
    for i in range(K - 1, -1, -1):
        acc = z[i]
        for q in range(i + 1, K):
            acc -= L[q, i] * coef[q]
        coef[i] = acc / L[i, i]
    for k in range(K):
        coef[k] = coef[k] / d[k]
    return False


@njit(inline="always", **_JIT)
def _solve(y, w, b, u, k_used, scaled, weak_pivot, coef, scratch):
    """WLS of y on the rows ``b`` (K, W) with weights w, terms ``u`` used; writes ``coef`` (NaN when not ok).

    Returns True when a pivot is weak (``coef`` then undefined). ``scratch``: (K, 2K + 3) work space.
    """
    K = b.shape[0]
    A, L = scratch[:, :K], scratch[:, K : 2 * K]
    rhs, d, z = scratch[:, 2 * K], scratch[:, 2 * K + 1], scratch[:, 2 * K + 2]
    n_used = _normal_equations(y, w, b, A, rhs)
    bad = n_used < k_used or n_used == 0 or (scaled and n_used == k_used)  # the statuses without coefficients
    if n_used < k_used or n_used == 0:  # too few widths, no usable weight: no coefficients, whatever the solve
        coef[:] = np.nan
        return False
    if K == 2 and k_used == 2:  # the usual case in closed form, with the same pivot test (det / (a c): the 2nd)
        a, o, c = A[0, 0], A[1, 0], A[1, 1]
        det = a * c - o * o
        if not (a > 0 and c > 0 and det >= weak_pivot * (a * c)):
            return True
        coef[0] = (c * rhs[0] - o * rhs[1]) / det
        coef[1] = (a * rhs[1] - o * rhs[0]) / det
    elif _cholesky_solve(A, rhs, u, weak_pivot, coef, L, d, z):
        return True
    for k in range(K):
        if bad or not u[k]:
            coef[k] = np.nan
    return False


@njit(inline="always", **_JIT)
def _cell_moments(xc, m, v, n, ss):
    """Seed mean, variance (ddof 1), count and sum of squared deviations per width of one cell ``xc`` (W, S)."""
    W, S = xc.shape
    for j in range(W):
        cnt, tot = 0.0, 0.0
        for s in range(S):
            if math.isfinite(xc[j, s]):
                cnt += 1.0
                tot += xc[j, s]
        mj = tot / cnt
        acc = 0.0
        for s in range(S):
            if math.isfinite(xc[j, s]):
                dv = xc[j, s] - mj
                acc += dv * dv
        m[j], n[j], ss[j] = mj, cnt, acc
        v[j] = acc / (cnt - 1.0)


@njit(inline="always", **_JIT)
def _deleted_moments(xc, s, m, n, ss, mi, vi, ni):
    """Downdate the moments to seed ``s`` deleted (mi, vi, ni); return whether ``s`` is present at any width."""
    present = False
    for j in range(xc.shape[0]):
        xs = xc[j, s]
        if math.isfinite(xs):
            present = True
            nj = n[j] - 1.0
            dv = xs - m[j]
            mi[j] = m[j] - dv / nj
            ssi = ss[j] - dv * dv * (n[j] / nj)
            ssi = ssi if ssi > 0.0 else 0.0
        else:
            nj, mi[j], ssi = n[j], m[j] - 0.0 / n[j], ss[j]
        vi[j] = ssi / (nj - 1.0) if nj >= 2.0 else np.nan
        ni[j] = nj
    return present


@njit(inline="always", **_JIT)
def _variance_irls(v, n, b, u, k_used, iterations, scaled, weak_pivot, coef, scratch, w, fitted):
    """IRLS of the variances v from n seeds, weights (n - 1) / (2 fitted^2), as ``_np_fit._variance_fit_kernel``."""
    W = v.shape[0]
    for j in range(W):
        fitted[j] = v[j]
    for it in range(iterations):
        for j in range(W):
            w[j] = (n[j] - 1.0) / (2.0 * (fitted[j] * fitted[j]))
        if _solve(v, w, b, u, k_used, scaled, weak_pivot, coef, scratch):
            return True
        if it == iterations - 1:
            return False
        for j in range(W):
            new = 0.0
            for k in range(coef.shape[0]):
                if not math.isnan(coef[k]):
                    new += coef[k] * b[k, j]
            fitted[j] = new if (math.isfinite(new) and new > 0.0) else v[j]
    return False


@njit(**_JIT)
def jackknife_cells(x, basis, used, variance, iterations, scaled, weak_pivot):
    """Seed moments and deleted-seed coefficients of cells ``x`` (C, width, seed).

    Parameters
    ----------
    basis : (1 or C, K, width) columns N^(-p_k), zero for unused terms
    used : (1 or C, K) the terms each cell uses
    variance : fit the variances by IRLS (``iterations`` passes) instead of the means by WLS

    Returns
    -------
    m, v, n : (C, width) the full seed moments (mean, ddof-1 variance, count)
    coef : (seed, C, K) the fit with each seed deleted (NaN where it fails, or the seed is absent at every width)
    weak : (seed, C) replicates left to the QR path (their ``coef`` is undefined)
    """
    C, W, S = x.shape
    K = basis.shape[1]
    m, v, n = np.empty((C, W)), np.empty((C, W)), np.empty((C, W))
    coef = np.full((S, C, K), np.nan)
    weak = np.zeros((S, C), dtype=np.bool_)
    ss, mi, vi, ni, w, fitted = np.empty(W), np.empty(W), np.empty(W), np.empty(W), np.empty(W), np.empty(W)
    c_k = np.empty(K)
    scratch = np.empty((K, 2 * K + 3))
    for c in range(C):
        b = basis[c if basis.shape[0] > 1 else 0]
        u = used[c if used.shape[0] > 1 else 0]
        k_used = 0
        for k in range(K):
            k_used += 1 if u[k] else 0
        _cell_moments(x[c], m[c], v[c], n[c], ss)
        for s in range(S):
            if not _deleted_moments(x[c], s, m[c], n[c], ss, mi, vi, ni):
                continue  # the seed is absent at every width: no replicate
            if variance:
                failed = _variance_irls(vi, ni, b, u, k_used, iterations, scaled, weak_pivot, c_k, scratch, w, fitted)
            else:
                for j in range(W):
                    w[j] = ni[j] / vi[j]
                failed = _solve(mi, w, b, u, k_used, scaled, weak_pivot, c_k, scratch)
            weak[s, c] = failed
            if not failed:
                coef[s, c, :] = c_k
    return m, v, n, coef, weak
