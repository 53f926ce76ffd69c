"""Fits across widths: the asymptotic expansion in N (pointwise WLS) and the leading rate (pooled log-log).

The numpy kernels work on trailing axes and are applied with ``apply_ufunc(..., dask="parallelized")``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from . import schema, theory
from ._np_fit import (
    STATUS,
    _free_kernel,
    _variance_fit_kernel,
    information_kernel,
    jackknife_fit_kernel,
    jackknife_loglog_kernel,
    loglog_kernel,
    wls_kernel,
)
from ._np_stats import jackknife_se, leave_one_out_kernel, log_variance_sd, t_quantile
from ._provenance import with_provenance
from ._select import at_common_time, time_units
from ._stats import _check_ci, _reference, _use_pairs, pair_members, seed_moments
from ._ufunc import apply_ufunc, whole_core
from .errors import EnsembleStatsWarning, FitError, ScaledTimeWarning, ValidationError

__all__ = ["fit_expansion", "fit_rate", "STATUS", "width_rate"]


def _resolve_terms(ds, quantity: str, terms, readout: str) -> xr.DataArray | None:
    gammas = ds[schema.GAMMA].values
    if isinstance(terms, str):
        if terms == "free":
            return None
        if terms not in ("theory", "leading"):
            raise FitError(
                f"terms={terms!r}: use 'theory', 'leading', 'free' or a list of finite exponents such as [0, 0.25]."
            )
        if terms == "leading" and quantity == "mean":
            sets = [np.array([0.0, -theory.bias_rate(g, readout)]) if g < 1 else np.array([0.0]) for g in gammas]
        elif terms == "leading":
            sets = [theory.variance_exponents(g, corrections=0) for g in gammas]
        elif quantity == "mean":
            sets = [theory.mean_exponents(g, max_terms=1 if g == 1 else None, readout=readout) for g in gammas]
        else:
            sets = [theory.variance_exponents(g, corrections=1, readout=readout) for g in gammas]
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


def _check_options(*, quantity: str, errors: str, cov: str, ci_method: str, ci: float) -> None:
    for name, value, allowed in (
        ("quantity", quantity, ("mean", "variance")),
        ("errors", errors, ("coerce", "raise")),
        ("cov", cov, ("scaled", "fixed")),
        ("ci_method", ci_method, ("auto", "model")),
    ):
        if value not in allowed:
            raise FitError(f"{name}={value!r}: use {' or '.join(repr(a) for a in allowed)}.")
    if not 0 < ci < 1:
        raise FitError(f"ci={ci} must lie strictly between 0 and 1, e.g. 0.95.")


def fit_expansion(
    ds: xr.Dataset,
    *,
    quantity: str = "mean",
    terms: str | Sequence[float] = "theory",
    width_min: int | None = None,
    errors: str = "coerce",
    cov: str = "scaled",
    ci: float = 0.95,
    ci_method: str = "auto",
    pairs: bool | None = None,
    readout: str | None = None,
) -> xr.Dataset:
    """Pointwise weighted least squares across widths, for every cell of the other dims.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`
        ``prediction`` dims (gamma, width, seed, [extra...], time, point, output).
    quantity : {"mean", "variance"}
        Fit the seed mean (weights S / s^2) or the seed variance (IRLS weights (S - 1) / (2 fitted^2)).
    terms : "theory", "leading", "free" or list of float
        Exponents p_k of the basis N^(-p_k), by the readout law (``readout``; docs/theory.md §1.3, 1.4, 9).
        ``"theory"``: for the mean ``theory.mean_exponents`` (symmetric law ``[0, 2(1-g), 4(1-g), ...]``, skewed
        ``[0, 1-g, 2(1-g), ...]``, orders below nu), for the variance the leading N^(1-2g) and its first
        correction (``[2g-1, 1]`` symmetric, ``[2g-1, g]`` skewed). ``"leading"``: the limit and its bias term,
        ``[0, 2-2g]`` (symmetric) or ``[0, 1-g]`` (skewed) for the mean, ``[2g-1]`` for the variance.
        ``"free"``: the leading exponent is fitted too (mean: h + c N^-p; variance: a N^-p).
    width_min : int, optional
        Use only widths N >= width_min.
    errors : {"coerce", "raise"}
        A cell that cannot be fitted becomes NaN with its ``status`` ("coerce") or raises :class:`FitError`
        (checked after computing, so "raise" computes eagerly).
    cov : {"scaled", "fixed"}
        Scale the covariance by chi^2/dof (as statsmodels WLS does), or treat weights as known.
    ci : float
        Level of ``coef_lo`` / ``coef_hi``.
    ci_method : {"auto", "model"}
        ``"auto"`` (with ``terms`` given): standard errors from the whole-seed jackknife (seed i deleted at every
        width, moments, weights and fit redone) with Student t on S - 1 dof, which stays calibrated when the
        weights come from few seeds (docs/intervals.md); ``"model"``, and always for ``terms="free"``: the WLS
        covariance, Student t with the residual dof for "scaled", normal for "fixed".
    pairs : bool, optional
        Antithetic stores (a ``pair`` coordinate; detected by default): the mean is fitted on the pair means (the
        same estimate, with weights P / s_pair^2 and the jackknife over pairs), so its intervals use the pairs'
        cancellation. The variance fit warns and treats the seeds as independent.
    readout : {"symmetric", "skewed"}, optional
        The readout law that sets ``terms``' exponents; by default from the store (``theory.readout_law``).

    Returns
    -------
    Dataset
        ``coef``, ``stderr``, ``coef_lo``, ``coef_hi`` (..., term); ``model_stderr`` (the WLS standard error)
        and ``n_seeds`` with ``ci_method="auto"``; ``cov`` (..., term, term2, the WLS covariance);
        ``exponent`` (gamma, term), or (..., term) for ``terms="free"`` with ``exponent_stderr``,
        ``exponent_lo`` and ``exponent_hi`` of the fitted (last) exponent;
        ``chi2_dof``, ``n_widths``, ``status`` (...); ``chi2``, ``aic`` and ``aicc`` (...) for comparing fits of
        the same data with different ``terms`` (lower is better). ``...`` is every dim of ``prediction`` except width,
        seed (e.g. gamma, time, point, output). Attributes ``readout_law`` and ``readout_law_source``.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> fit = es.fit_expansion(ds, quantity="variance")
    >>> fit.coef.dims
    ('gamma', 'time', 'point', 'output', 'term')
    >>> sorted(set(fit.status.values.ravel().tolist()))  # 0: fitted
    [0]
    """
    _check_options(quantity=quantity, errors=errors, cov=cov, ci_method=ci_method, ci=ci)
    law, law_source = theory.readout_law(ds, readout)
    table = _resolve_terms(ds, quantity, terms, law)
    n_terms = (
        2
        if table is None and quantity == "mean"
        else 1
        if table is None
        else int(np.isfinite(table.values).sum(-1).max())
    )
    ds = _check_widths(ds, width_min, n_terms + (1 if table is None else 0))
    paired = _use_pairs(ds[schema.PREDICTION], pairs)
    if paired and quantity == "mean":
        # the mean of the pair means is the seed mean; the pairs are the independent units, so the fit's
        # weights and its jackknife use them (pair k deleted at every width)
        u, v = pair_members(ds[schema.PREDICTION])
        pm = ((u + v) / 2).rename({schema.PAIR: schema.SEED})
        ds = xr.Dataset({schema.PREDICTION: pm}, attrs=ds.attrs)
    elif paired:
        warnings.warn(
            "fit_expansion(quantity='variance') treats the seeds as independent, but this store's seeds are "
            "antithetic pairs: the seed variance is then a little high and its weights wrong. bias_variance and "
            "fit_rate use the pairs; select one member per pair and drop the coordinate "
            "(ds.isel(seed=slice(0, None, 2)).drop_vars('pair')) for a fit on independent seeds.",
            EnsembleStatsWarning,
            stacklevel=2,
        )
    pred = ds[schema.PREDICTION]
    widths = ds[schema.WIDTH].values
    scaled = cov == "scaled"
    W = schema.WIDTH
    jackknife = ci_method == "auto" and table is not None
    # seed moments per width (lazy): the weights of the WLS paths and their chi^2 (the jackknife kernel has its own)
    mom = None if jackknife else seed_moments(pred.chunk({W: -1}) if pred.chunks else pred)
    if jackknife:
        grid = [d for d in schema.GRID_DIMS if d in pred.dims]
        if not _whole_records(ds, pred, grid):
            pred = pred.where(np.isfinite(pred).all(grid))  # a seed counts only if finite over the grid
        pred = whole_core(pred, (W, schema.SEED))
        outs = apply_ufunc(
            jackknife_fit_kernel,
            pred,
            table,
            kwargs={"widths": widths, "scaled": scaled, "quantity": quantity},
            input_core_dims=[[W, schema.SEED], ["term"]],
            output_core_dims=[["term"], ["term"], ["term", "term2"], [], [], [], ["term"], [], [], [], []],
            dask="parallelized",
            output_dtypes=[np.float64] * 4 + [np.int64, np.int8, np.float64, np.int64] + [np.float64] * 3,
            dask_gufunc_kwargs={"output_sizes": {"term2": table.sizes["term"]}},
        )
        coef, se, covar, chi2_dof, n_used, status, jack_se, n_seeds, chi2, aic, aicc = outs
        res = xr.Dataset(
            {"coef": coef, "stderr": jack_se, "model_stderr": se, "cov": covar, "exponent": table, "n_seeds": n_seeds}
        )
        information = {"chi2": chi2, "aic": aic, "aicc": aicc}
        dof = n_seeds - 1
    else:
        if quantity == "mean":
            y = mom["mean"]
            w = mom["n_seeds"] / mom["variance"]
        if table is not None:
            kernel, a, b = (
                (wls_kernel, y, w) if quantity == "mean" else (_variance_fit_kernel, mom["variance"], mom["n_seeds"])
            )
            outs = apply_ufunc(
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
            outs = apply_ufunc(
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
    if scaled or jackknife:
        q = apply_ufunc(
            lambda d: t_quantile(ci, np.maximum(d, 1)), dof, dask="parallelized", output_dtypes=[np.float64]
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
    res = res.assign(
        _information_names(information if jackknife else _information(mom, res, quantity, free=table is None))
    )
    _fit_long_names(res, quantity, ci)
    method = (
        "whole-seed jackknife standard errors, Student t with S-1 dof"
        if jackknife
        else f"WLS covariance ({cov}), " + ("Student t with the residual dof" if scaled else "normal quantile")
    )
    res.attrs.update(
        {
            "quantity": quantity,
            "terms": str(terms),
            "cov": cov,
            "ci": ci,
            "ci_method": ci_method,
            "ci_method_description": method,
            "width_min": width_min or 0,
            "readout_law": law,
            "readout_law_source": law_source,
        }
    )
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
    return with_provenance(res, ds, f"fit_expansion(quantity={quantity!r}, terms={terms!r})")


def _whole_records(ds: xr.Dataset, pred: xr.DataArray, grid: Sequence[str]) -> bool:
    """Whether every record of ``pred`` is finite at all its grid values or at none (no grid pass needed).

    Then "a seed counts only if finite over the grid" holds without computing it. True for a store's data
    chunked along the grid: a store marks a record with any non-finite value diverged and ``open_ensemble``
    masks it whole. Computing the rule there would be a reduction over the grid whose inputs Dask keeps in
    memory until the fit reads them again.
    """
    chunked = pred.chunks is not None and any(len(pred.chunks[pred.get_axis_num(d)]) > 1 for d in grid)
    return chunked and schema.WRITTEN in ds and schema.DIVERGED_STEP in ds


def _information(mom: xr.Dataset, res: xr.Dataset, quantity: str, *, free: bool) -> dict[str, xr.DataArray]:
    """chi^2 of the fit with the weights it used, AIC = chi^2 + 2k and the small-sample AICc.

    For Gaussian errors with known variances -2 log L = chi^2 + const, so the AIC of two fits to the same data
    (the same widths and weights) can be compared; k counts the coefficients and a fitted exponent.
    """
    W = schema.WIDTH
    chi2, aic, aicc = apply_ufunc(
        information_kernel,
        mom["mean"],
        mom["variance"],
        mom["n_seeds"],
        res["coef"],
        res["exponent"],
        res["status"],
        kwargs={"widths": mom[W].values, "quantity": quantity, "free": free},
        input_core_dims=[[W], [W], [W], ["term"], ["term"], []],
        output_core_dims=[[], [], []],
        dask="parallelized",
        output_dtypes=[np.float64] * 3,
    )
    return {"chi2": chi2, "aic": aic, "aicc": aicc}


def _information_names(info: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """Return the information criteria with their long names."""
    return {
        "chi2": info["chi2"].assign_attrs(long_name="chi^2 of the fit (the weights it used)"),
        "aic": info["aic"].assign_attrs(long_name="Akaike information criterion chi^2 + 2k (k fitted parameters)"),
        "aicc": info["aicc"].assign_attrs(
            long_name="small-sample AIC: AIC + 2k(k+1)/(n-k-1), n widths (NaN when n <= k + 1)"
        ),
    }


def fit_rate(
    ds: xr.Dataset,
    *,
    quantity: str = "variance",
    dims: Sequence[str] = (schema.POINT, schema.OUTPUT),
    reference: str | xr.DataArray = "target",
    width_min: int | None = None,
    ci: float = 0.95,
    ci_method: str = "auto",
    at: str | float | None = None,
    pairs: bool | None = None,
    readout: str | None = None,
) -> xr.Dataset:
    """Return the leading exponent of N as a log-log slope, pooled over ``dims``, beside the theory value.

    For each width the grid-averaged seed variance (or corrected squared bias against ``reference``) is
    computed; the slope of log(quantity) on log N is fitted by WLS. For the bias the slope is that of
    |bias| = sqrt(bias2).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`
    quantity : {"variance", "bias", "ratio"}
        ``"ratio"``: bias2 / variance, whose exponent 6 gamma - 5 (symmetric readout law; 4 gamma - 3 skewed)
        changes sign at gamma = 5/6 (3/4) (docs/theory.md §1.4, §9 item 8); its per-width standard error is the
        delta method's (their covariance neglected) and the slope is fitted as for antithetic pairs below.
    dims : grid dims pooled over
    reference : ``"target"`` or DataArray
        For ``quantity="bias"``: the limit the bias is measured from (e.g. the kernel limit h_t); against the
        target the bias does not vanish as N grows.
    ci : float
        Level of ``slope_lo`` / ``slope_hi``.
    ci_method : {"auto", "model"}
        ``"auto"``: weights 1 / Var(log quantity) from the variance's effective dof (trigamma(nu / 2); the
        delta method with the seed jackknife for the bias), and the slope's standard error from the whole-seed
        jackknife (seed i deleted at every width and the slope refitted) or the WLS one, whichever is larger,
        Student t with S - 1 dof: calibrated
        at 4-32 seeds on correlated grids (docs/intervals.md). ``"model"``: the WLS standard error with the
        weights taken as known and a normal quantile (version 0.1; over-confident at few seeds).
    at : {None, "common", "record"} or float
        Which records of the widths are compared. The theory's slope is at fixed scaled time t = k / N; in a
        store indexed by epoch or step, one record index is a different t at each width. ``"common"``: the
        largest t every width reaches; a float: that t (both via :func:`at_common_time`); ``"record"``: each
        record index as it is. ``None`` (default): as stored, with a :class:`~ensemble_stats.errors.ScaledTimeWarning`
        when the time units are not ``scaled``.
    pairs : bool, optional
        Antithetic stores (a ``pair`` coordinate; detected by default): each width's quantity and its standard
        error come from the pair-aware :func:`bias_variance`, and the slope is the WLS of :func:`width_rate`
        (delta-method weights, the WLS error widened by sqrt(chi2/dof), Student t with P - 1 dof); ``ci_method``
        does not apply.
    readout : {"symmetric", "skewed"}, optional
        The readout law that sets the theory's bias and ratio exponents; by default from the store
        (``theory.readout_law``).

    Returns
    -------
    Dataset
        ``slope``, ``stderr``, ``slope_lo``, ``slope_hi``, ``theory`` (``theory.RATE_FORMULAS``: 1 - 2 gamma for
        the variance; 2 gamma - 2 (symmetric) or gamma - 1 (skewed) for the bias), ``intercept``, ``chi2_dof``,
        ``n_widths``, ``n_seeds``, ``status`` per (gamma, time, extra sweep dims, any grid dims not pooled). Attributes ``readout_law`` and ``readout_law_source``.

    Examples
    --------
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> rate = es.fit_rate(ds, quantity="variance")  # theory: N^(1 - 2 gamma)
    >>> float(rate.theory.item())
    -0.5
    >>> bool(es.covers(rate).all())
    True
    """
    if quantity not in ("variance", "bias", "ratio"):
        raise FitError(f"quantity={quantity!r}: use 'variance', 'bias' or 'ratio'.")
    if ci_method not in ("auto", "model"):
        raise FitError(f"ci_method={ci_method!r}: use 'auto' or 'model'.")
    law = theory.readout_law(ds, readout)
    ds = _check_widths(ds, width_min, 2)
    _check_ci(ci, "auto")
    ds = _at_scaled_time(ds, at)
    dims = tuple(dims)
    name = "variance" if quantity == "variance" else "bias2"
    half = 1.0 if quantity == "variance" else 0.5
    paired = _use_pairs(ds[schema.PREDICTION], pairs)
    if paired or quantity == "ratio":
        return _estimate_rate(ds, quantity, dims, reference, ci, paired, law)
    pred = ds[schema.PREDICTION]
    bad = [d for d in dims if d not in pred.dims or d == schema.SEED]
    if bad:
        raise ValidationError(f"dims {bad} are not grid dims of the predictions {list(pred.dims)}.")
    ref = _reference(ds, reference, dims)
    if pred.chunks:
        pred = pred.chunk({d: -1 for d in (schema.SEED, *dims)})
    est, theta, nu = apply_ufunc(
        leave_one_out_kernel,
        pred,
        ref,
        kwargs={"n_grid": len(dims), "statistic": name, "ci_method": "auto"},
        input_core_dims=[[schema.SEED, *dims], list(dims)],
        output_core_dims=[[], [schema.SEED], []],
        dask="parallelized",
        output_dtypes=[np.float64] * 3,
        join="exact",
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        y = half * np.log(est.where(est > 0))
        y_loo = half * np.log(theta.where(theta > 0))
        se = apply_ufunc(
            jackknife_se,
            theta,
            theta.notnull().sum(schema.SEED),
            input_core_dims=[[schema.SEED], []],
            dask="parallelized",
            output_dtypes=[np.float64],
        )
        se_log = half * se / est
    if quantity == "variance" and ci_method == "auto":
        se_log = apply_ufunc(log_variance_sd, nu, dask="parallelized", output_dtypes=[np.float64])
    w = 1.0 / se_log**2
    logN = np.log(ds[schema.WIDTH].values.astype(np.float64))
    if y.chunks:
        y, w, y_loo = y.chunk({schema.WIDTH: -1}), w.chunk({schema.WIDTH: -1}), y_loo.chunk({schema.WIDTH: -1})
    outs = apply_ufunc(
        jackknife_loglog_kernel,
        y,
        w,
        y_loo,
        kwargs={"logN": logN},
        input_core_dims=[[schema.WIDTH], [schema.WIDTH], [schema.WIDTH, schema.SEED]],
        output_core_dims=[[]] * 7,
        dask="parallelized",
        output_dtypes=[np.float64] * 4 + [np.int64, np.int8, np.int64],
    )
    slope, jack_se, intercept, chi2_dof, n_used, status, n_seeds = outs
    model_se = apply_ufunc(
        lambda yy, ww: loglog_kernel(yy, ww, logN=logN)[1],
        y,
        w,
        input_core_dims=[[schema.WIDTH], [schema.WIDTH]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    if ci_method == "auto":
        # the jackknife (Student t) sees heavy tails and correlation, the WLS error (normal quantile) the
        # dof-based weights; at 4-16 seeds the jackknife alone is noisy, so the wider interval is used
        t = apply_ufunc(
            lambda k: t_quantile(ci, np.maximum(k - 1, 1)),
            n_seeds,
            dask="parallelized",
            output_dtypes=[np.float64],
        )
        z = stats.norm.ppf(0.5 + ci / 2)
        stderr = np.fmax(jack_se, model_se * z / t).where(jack_se.notnull())
        q = t
    else:
        stderr = model_se
        q = stats.norm.ppf(0.5 + ci / 2)
    res = xr.Dataset(
        {
            "slope": slope,
            "stderr": stderr,
            "slope_lo": slope - q * stderr,
            "slope_hi": slope + q * stderr,
            "theory": _theory_rate(ds, quantity, law[0]),
            "intercept": intercept,
            "chi2_dof": chi2_dof,
            "n_widths": n_used,
            "n_seeds": n_seeds,
            "status": status,
        }
    )
    what = _WHAT[quantity]
    res["slope"].attrs["long_name"] = _slope_name(quantity)
    res["stderr"].attrs["long_name"] = "standard error of the slope" + (
        " (larger of the whole-seed jackknife and the WLS)" if ci_method == "auto" else " (WLS, weights taken as known)"
    )
    schema.label_bounds(res, "slope", ci, "the slope")
    res["intercept"].attrs["long_name"] = f"intercept of log {what} at log N = 0"
    res["chi2_dof"].attrs["long_name"] = "chi^2 per residual degree of freedom of the log-log fit"
    res["n_widths"].attrs["long_name"] = "widths used in the fit"
    res["n_seeds"].attrs["long_name"] = "seeds used by the jackknife (seed indices present at some width)"
    res["status"].attrs.update(
        {"long_name": "fit status", "flag_values": list(STATUS), "flag_meanings": " ".join(STATUS.values())}
    )
    res.attrs.update(
        {
            "quantity": quantity,
            "pooled_over": ",".join(dims),
            "readout_law": law[0],
            "readout_law_source": law[1],
            "ci": ci,
            "ci_method": ci_method,
            "method": "WLS on log N; "
            + (
                "weights from the effective dof, standard error the larger of the whole-seed jackknife's and the"
                " WLS one, Student t with S-1 dof"
                if ci_method == "auto"
                else "seed-jackknife weights taken as known, normal quantile"
            ),
        }
    )
    return with_provenance(res, ds, f"fit_rate(quantity={quantity!r})")


_THEORY_RATES = {
    "variance": lambda g, law: theory.variance_rate(g),
    "bias": theory.bias_rate,
    "ratio": theory.ratio_rate,
}
_WHAT = {"variance": "seed variance", "bias": "|bias| = sqrt(bias2)", "ratio": "bias2 / variance"}


def _theory_rate(ds: xr.Dataset, quantity: str, law: str) -> xr.DataArray:
    """Return the theory's exponent of N per gamma for the readout law (docs/theory.md §1.4)."""
    fn = _THEORY_RATES[quantity]
    th = apply_ufunc(np.vectorize(lambda g: fn(g, law), otypes=[float]), ds[schema.GAMMA])
    return th.assign_attrs(long_name=f"theory exponent: {theory.RATE_FORMULAS[quantity][law]}", readout_law=law)


def _slope_name(quantity: str) -> str:
    return f"log-log slope of the {_WHAT[quantity]} in the width N"


def _estimate_rate(
    ds: xr.Dataset, quantity: str, dims, reference, ci: float, paired: bool, law: tuple[str, str]
) -> xr.Dataset:
    """Compute :func:`fit_rate` from :func:`bias_variance`'s estimates and standard errors per width.

    Antithetic pairs, and the ratio bias2 / variance, included; then :func:`width_rate`.
    """
    from ._stats import bias_variance

    bv = bias_variance(ds, reference=reference, dims=dims, ci=ci, pairs=paired)
    if quantity == "variance":
        est, se = bv["variance"], bv["variance_stderr"]
    elif quantity == "bias":  # |bias| = sqrt(bias2), its standard error by the delta method
        est = np.sqrt(bv["bias2"].where(bv["bias2"] > 0))
        se = bv["bias2_stderr"] / (2 * est)
    else:  # delta method on log(bias2) - log(variance), their covariance neglected
        b2, v = bv["bias2"].where(bv["bias2"] > 0), bv["variance"].where(bv["variance"] > 0)
        est = b2 / v
        se = est * np.sqrt((bv["bias2_stderr"] / b2) ** 2 + (bv["variance_stderr"] / v) ** 2)
    units = bv["n_seeds"] // 2 if paired else bv["n_seeds"]
    rate = width_rate(est, se, units, ci=ci)
    res = rate.assign(theory=_theory_rate(ds, quantity, law[0]), n_seeds=bv["n_seeds"].min(schema.WIDTH))
    res["slope"].attrs["long_name"] = _slope_name(quantity)
    res["n_seeds"].attrs["long_name"] = "seeds used at the width with fewest" + (
        " (members of whole antithetic pairs)" if paired else ""
    )
    unit = "P-1" if paired else "S-1"
    res.attrs.update(
        {
            "quantity": quantity,
            "pooled_over": ",".join(dims),
            "readout_law": law[0],
            "readout_law_source": law[1],
            "ci": ci,
            "ci_method": "pairs" if paired else "delta",
            "method": f"WLS on log N of the {'pair-aware ' if paired else ''}estimates; delta-method weights, standard "
            f"error the WLS one times sqrt(max(chi2/dof, 1)), Student t with {unit} dof",
        }
    )
    return with_provenance(res, ds, f"fit_rate(quantity={quantity!r})")


def _at_scaled_time(ds: xr.Dataset, at) -> xr.Dataset:
    """``fit_rate``'s records: as stored, or every width at one scaled time (see its ``at``)."""
    if at == "record":
        return ds
    if at is None:
        units = time_units(ds)
        if units != "scaled" and schema.TIME in ds.dims:
            warnings.warn(
                f"time units are '{units}': each record index is a different scaled time t = k / N at each width, "
                "so the slopes compare widths at different t. Pass at='common' (the largest t every width "
                "reaches), at=t, or at='record' to keep the records as they are.",
                ScaledTimeWarning,
                stacklevel=3,
            )
        return ds
    if at == "common":
        return at_common_time(ds)
    if isinstance(at, str) or not np.isfinite(np.asarray(at, dtype=float)):
        raise FitError(f"at={at!r}: use None, 'common', 'record' or a scaled time t (a number).")
    return at_common_time(ds, float(at))


def _fit_long_names(res: xr.Dataset, quantity: str, ci: float) -> None:
    names = {
        "coef": f"coefficient of N^(-exponent) in the {quantity} expansion",
        "stderr": "standard error of the coefficient",
        "model_stderr": "WLS standard error of the coefficient (weights taken as known up to chi^2/dof)",
        **schema.bound_names("coef", ci, "the coefficient"),
        "cov": "WLS covariance of the coefficients",
        "exponent": "exponent p of the basis function N^(-p)",
        "exponent_stderr": "standard error of the fitted exponent",
        **schema.bound_names("exponent", ci, "the fitted exponent"),
        "chi2_dof": "chi^2 per residual degree of freedom",
        "n_widths": "widths used in the fit",
        "n_seeds": "seeds used by the jackknife (seed indices present at some width)",
        "status": "fit status",
    }
    for k, v in names.items():
        if k in res:
            res[k].attrs["long_name"] = v


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
        **schema.bound_names("slope", ci, "the slope"),
        "intercept": "intercept of the log-log fit",
        "chi2_dof": "chi2 per degree of freedom of the fit",
        "n_widths": "widths used",
        "status": "fit status (0 ok, 1 too few widths, 2 singular)",
    }
    for k, v in long.items():
        res[k].attrs["long_name"] = v
    return res
