"""Fits across widths: the asymptotic expansion in N (pointwise WLS) and the leading rate (pooled log-log).

The numpy kernels work on trailing axes and are applied with ``xr.apply_ufunc(..., dask="parallelized")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from . import schema, theory
from ._stats import bias_variance, seed_moments
from .errors import FitError, ValidationError

__all__ = ["fit_expansion", "fit_rate", "wls_kernel", "STATUS"]

STATUS = {0: "ok", 1: "too_few_widths", 2: "singular", 3: "no_residual_dof", 4: "bad_weights"}
"""Per-cell status codes of :func:`fit_expansion` (``status`` variable, with ``flag_meanings``)."""
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


def _resolve_terms(ds, quantity: str, terms) -> xr.DataArray | None:
    gammas = ds[schema.GAMMA].values
    if isinstance(terms, str):
        if terms == "free":
            return None
        if terms != "theory":
            raise FitError(f"terms={terms!r}: use 'theory', 'free' or a list of finite exponents such as [0, 0.25].")
        if quantity == "mean":
            sets = [theory.mean_exponents(g, max_terms=1) if g == 1 else theory.mean_exponents(g) for g in gammas]
        else:
            sets = [theory.variance_exponents(g, corrections=1) for g in gammas]
    else:
        try:
            arr = np.asarray(list(terms), dtype=np.float64)
        except (TypeError, ValueError):
            raise FitError(f"terms={terms!r} are not numbers; pass exponents p of the basis N^(-p).") from None
        if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
            raise FitError(f"terms={list(terms)!r} must be a non-empty list of finite exponents.")
        if np.unique(arr).size != arr.size:
            raise FitError(f"terms={arr.tolist()} repeat an exponent; the basis would be singular.")
        sets = [arr for _ in gammas]
    K = max(len(s) for s in sets)
    table = np.full((len(gammas), K), np.nan)
    for i, s in enumerate(sets):
        table[i, : len(s)] = s
    return xr.DataArray(table, dims=(schema.GAMMA, "term"), coords={schema.GAMMA: ds[schema.GAMMA].values})


def _check_widths(ds, width_min, n_terms: int):
    if schema.PREDICTION not in ds:
        raise ValidationError("the dataset has no 'prediction' variable; open a store with open_ensemble().")
    if schema.WIDTH not in ds.dims:
        raise FitError("the dataset has no 'width' dim; fits across widths need several widths N.")
    if width_min is not None:
        ds = ds.sel({schema.WIDTH: ds[schema.WIDTH] >= width_min})
    nw = ds.sizes[schema.WIDTH]
    if nw < 2:
        raise FitError(
            f"{nw} width(s) {ds[schema.WIDTH].values.tolist()} (width_min={width_min}); a fit across N needs at "
            "least 2 widths, and at least as many as terms."
        )
    if nw < n_terms:
        raise FitError(f"{nw} widths cannot determine {n_terms} terms; add widths or use fewer terms.")
    return ds


def fit_expansion(
    ds: xr.Dataset,
    *,
    quantity: str = "mean",
    terms: str | Sequence[float] = "theory",
    width_min: int | None = None,
    errors: str = "coerce",
    cov: str = "scaled",
    ci: float = 0.95,
) -> xr.Dataset:
    """Pointwise weighted least squares across widths, for every cell of the other dims.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`
        ``prediction`` dims (gamma, width, seed, [extra...], time, point, output).
    quantity : {"mean", "variance"}
        Fit the seed mean (weights S / s^2) or the seed variance (IRLS weights (S - 1) / (2 fitted^2)).
    terms : "theory", "free" or list of float
        Exponents p_k of the basis N^(-p_k). ``"theory"``: for the mean ``[0, 1-g, ..., (nu-1)(1-g)]``,
        for the variance ``[2g-1, g]`` (leading N^(1-2g) and its first correction); docs/theory.md §1.3, 9.
        ``"free"``: the leading exponent is fitted too (mean: h + c N^-p; variance: a N^-p).
    width_min : int, optional
        Use only widths N >= width_min.
    errors : {"coerce", "raise"}
        A cell that cannot be fitted becomes NaN with its ``status`` ("coerce") or raises :class:`FitError`
        (checked after computing, so "raise" computes eagerly).
    cov : {"scaled", "fixed"}
        Scale the covariance by chi^2/dof (as statsmodels WLS does), or treat weights as known.
    ci : float
        Level of ``coef_lo`` / ``coef_hi`` (Student t with the residual dof for "scaled", normal for "fixed").

    Returns
    -------
    Dataset
        ``coef``, ``stderr``, ``coef_lo``, ``coef_hi`` (..., term); ``cov`` (..., term, term2);
        ``exponent`` (gamma, term), or (..., term) for ``terms="free"`` with ``exponent_stderr``,
        ``exponent_lo`` and ``exponent_hi`` of the fitted (last) exponent;
        ``chi2_dof``, ``n_widths``, ``status`` (...). ``...`` is every dim of ``prediction`` except width,
        seed (e.g. gamma, time, point, output).
    """
    if quantity not in ("mean", "variance"):
        raise FitError(f"quantity={quantity!r}: use 'mean' or 'variance'.")
    if errors not in ("coerce", "raise"):
        raise FitError(f"errors={errors!r}: use 'coerce' or 'raise'.")
    if cov not in ("scaled", "fixed"):
        raise FitError(f"cov={cov!r}: use 'scaled' or 'fixed'.")
    table = _resolve_terms(ds, quantity, terms)
    n_terms = (
        2
        if table is None and quantity == "mean"
        else 1
        if table is None
        else int(np.isfinite(table.values).sum(-1).max())
    )
    ds = _check_widths(ds, width_min, n_terms + (1 if table is None else 0))
    pred = ds[schema.PREDICTION]
    mom = seed_moments(pred.chunk({schema.WIDTH: -1}) if pred.chunks else pred)
    widths = ds[schema.WIDTH].values
    scaled = cov == "scaled"
    W = schema.WIDTH
    if quantity == "mean":
        y = mom["mean"]
        w = mom["n_seeds"] / mom["variance"]
    if table is not None:
        kernel, a, b = (
            (wls_kernel, y, w) if quantity == "mean" else (_variance_fit_kernel, mom["variance"], mom["n_seeds"])
        )
        outs = xr.apply_ufunc(
            kernel,
            a,
            b,
            table,
            kwargs={"widths": widths, "scaled": scaled},
            input_core_dims=[[W], [W], ["term"]],
            output_core_dims=[["term"], ["term"], ["term", "term2"], [], [], []],
            dask="parallelized",
            output_dtypes=[np.float64] * 4 + [np.int64, np.int8],
            dask_gufunc_kwargs={"output_sizes": {"term2": table.sizes["term"]}},
        )
        coef, se, covar, chi2_dof, n_used, status = outs
        res = xr.Dataset({"coef": coef, "stderr": se, "cov": covar, "exponent": table})
        dof = n_used - np.isfinite(table).sum("term")
    else:
        if quantity == "variance":
            y = mom["variance"]
            w = (mom["n_seeds"] - 1) / (2 * mom["variance"] ** 2)
        k = 2 if quantity == "mean" else 1
        outs = xr.apply_ufunc(
            _free_kernel,
            y,
            w,
            kwargs={"widths": widths, "constant": quantity == "mean", "scaled": scaled},
            input_core_dims=[[W], [W]],
            output_core_dims=[["term"], ["term"], ["term", "term2"], [], [], [], [], []],
            dask="parallelized",
            output_dtypes=[np.float64] * 6 + [np.int64, np.int8],
            dask_gufunc_kwargs={"output_sizes": {"term": k, "term2": k}},
        )
        coef, se, covar, p_hat, p_se, chi2_dof, n_used, status = outs
        zero = xr.zeros_like(p_hat)
        exponent = xr.concat([zero, p_hat], "term") if quantity == "mean" else p_hat.expand_dims("term")
        res = xr.Dataset(
            {
                "coef": coef,
                "stderr": se,
                "cov": covar,
                "exponent": exponent.transpose(*p_hat.dims, "term"),
                "exponent_stderr": p_se,
            }
        )
        dof = n_used - (k + 1)
    if scaled:
        q = xr.apply_ufunc(
            lambda d: stats.t.ppf(0.5 + ci / 2, np.maximum(d, 1)), dof, dask="parallelized", output_dtypes=[np.float64]
        )
    else:
        q = stats.norm.ppf(0.5 + ci / 2)
    res["coef_lo"] = res["coef"] - q * res["stderr"]
    res["coef_hi"] = res["coef"] + q * res["stderr"]
    if "exponent_stderr" in res:
        lead = res["exponent"].isel(term=-1)
        res["exponent_lo"] = lead - q * res["exponent_stderr"]
        res["exponent_hi"] = lead + q * res["exponent_stderr"]
    res["chi2_dof"] = chi2_dof
    res["n_widths"] = n_used
    res["status"] = status
    res["status"].attrs.update({"flag_values": list(STATUS), "flag_meanings": " ".join(STATUS.values())})
    res["coef"].attrs["long_name"] = f"coefficient of N^(-exponent) in the {quantity} expansion"
    res.attrs.update({"quantity": quantity, "terms": str(terms), "cov": cov, "ci": ci, "width_min": width_min or 0})
    if errors == "raise":
        res = res.compute()
        failed = res["status"] != 0
        if bool(failed.any()):
            first = {
                d: res[d].values[i].item()
                for d, i in zip(failed.dims, np.argwhere(failed.values)[0], strict=True)
                if d in res.coords
            }
            code = int(res["status"].values[tuple(np.argwhere(failed.values)[0])])
            raise FitError(f"{int(failed.sum())} cell(s) could not be fitted; first at {first}: {STATUS[code]}.")
    return res


def fit_rate(
    ds: xr.Dataset,
    *,
    quantity: str = "variance",
    dims: Sequence[str] = (schema.POINT, schema.OUTPUT),
    reference: str | xr.DataArray = "target",
    width_min: int | None = None,
    ci: float = 0.95,
) -> xr.Dataset:
    """The leading exponent of N as a log-log slope, pooled over ``dims``, beside the theory value.

    For each width the grid-averaged seed variance (or corrected squared bias against ``reference``) and its
    seed-jackknife standard error are computed; the slope of log(quantity) on log N is then fitted by WLS
    with weights from the delta method (1 / se_log^2). For the bias the slope is that of |bias| = sqrt(bias2).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`
    quantity : {"variance", "bias"}
    dims : grid dims pooled over
    reference : ``"target"`` or DataArray
        For ``quantity="bias"``: the limit the bias is measured from (e.g. the kernel limit h_t); against the
        target the bias does not vanish as N grows.

    Returns
    -------
    Dataset
        ``slope``, ``stderr``, ``slope_lo``, ``slope_hi``, ``theory`` (1 - 2 gamma for the variance,
        gamma - 1 for the bias), ``intercept``, ``chi2_dof``, ``n_widths``, ``status`` per (gamma, time,
        extra sweep dims, any grid dims not pooled).
    """
    if quantity not in ("variance", "bias"):
        raise FitError(f"quantity={quantity!r}: use 'variance' or 'bias'.")
    ds = _check_widths(ds, width_min, 2)
    bv = bias_variance(ds, reference=reference, dims=dims, ci=0.6826894921370859)
    name = "variance" if quantity == "variance" else "bias2"
    val = bv[name]
    se = (bv[f"{name}_hi"] - bv[f"{name}_lo"]) / (2 * _t_one_sigma(bv["n_seeds"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = 1.0 if quantity == "variance" else 0.5
        y = half * np.log(val.where(val > 0))
        se_log = half * se / val
    w = 1.0 / se_log**2
    logN = np.log(ds[schema.WIDTH].values.astype(np.float64))
    if y.chunks:
        y, w = y.chunk({schema.WIDTH: -1}), w.chunk({schema.WIDTH: -1})
    outs = xr.apply_ufunc(
        _loglog_kernel,
        y,
        w,
        kwargs={"logN": logN},
        input_core_dims=[[schema.WIDTH], [schema.WIDTH]],
        output_core_dims=[[], [], [], [], [], []],
        dask="parallelized",
        output_dtypes=[np.float64] * 4 + [np.int64, np.int8],
    )
    slope, stderr, intercept, chi2_dof, n_used, status = outs
    z = stats.norm.ppf(0.5 + ci / 2)
    th = xr.apply_ufunc(
        np.vectorize(theory.variance_rate if quantity == "variance" else theory.bias_rate), ds[schema.GAMMA]
    )
    res = xr.Dataset(
        {
            "slope": slope,
            "stderr": stderr,
            "slope_lo": slope - z * stderr,
            "slope_hi": slope + z * stderr,
            "theory": th,
            "intercept": intercept,
            "chi2_dof": chi2_dof,
            "n_widths": n_used,
            "status": status,
        }
    )
    res["status"].attrs.update({"flag_values": list(STATUS), "flag_meanings": " ".join(STATUS.values())})
    res.attrs.update(
        {
            "quantity": quantity,
            "pooled_over": ",".join(dims),
            "ci": ci,
            "method": "WLS on log N, seed-jackknife weights",
        }
    )
    return res


def _t_one_sigma(n_seeds):
    """Student-t quantile used for the 68.27% jackknife interval, to convert it back to a standard error."""
    return xr.apply_ufunc(
        lambda n: stats.t.ppf(0.5 + 0.6826894921370859 / 2, np.maximum(n - 1, 1)),
        n_seeds,
        dask="parallelized",
        output_dtypes=[np.float64],
    )


def _loglog_kernel(y, w, *, logN):
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
