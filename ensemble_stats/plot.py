"""Figures of an ensemble and its analysis (matplotlib, an optional dependency: ``ensemble-stats[report]``).

Each function takes a store's Dataset or an analysis result, draws into the axes it is given (or a new figure)
and returns the figure. Figures are made with pyplot and its current backend, so they show inline in a
notebook; :func:`ensemble_stats.report` saves and closes them. ``ds.ens.plot.<name>()`` is the same with the
analysis computed from ``ds``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import schema
from ._stats import seed_mean
from .errors import require

__all__ = [
    "PALETTE",
    "condition_numbers",
    "bias_variance",
    "catapult",
    "collapse",
    "completeness",
    "curves",
    "fluctuation_qq",
    "scaled_variance",
    "gamma_alpha_map",
    "gamma_alpha_maps",
    "kernel_drift",
    "main_effects",
    "mean_expansion",
    "time_label",
    "variance_vs_width",
]

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
"""Okabe-Ito: distinguishable with the common colour-vision deficiencies."""

_STYLE = {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


def _subplots(nrows: int, ncols: int, size: tuple[float, float], **kw):
    plt = require("matplotlib.pyplot", "drawing figures")

    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained", **kw)
    return fig, axes


def _axes(ax, n: int, size: tuple[float, float], **kw):
    """``n`` axes in a row: the given ones, or a new figure's."""
    if ax is None:
        return _subplots(1, n, size, **kw)[1][0]
    axes = np.atleast_1d(ax).ravel()
    if len(axes) != n:
        from .errors import ValidationError

        raise ValidationError(f"ax: {len(axes)} axes given, this figure draws {n}; pass {n} axes or none.")
    return axes


def _colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def time_label(ds: xr.Dataset | xr.DataArray) -> str:
    """Return the axis label of the ``time`` coordinate from its units.

    Parameters
    ----------
    ds : anything with a ``time`` coordinate (its ``units`` attribute names the units)

    Returns
    -------
    str

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> plot.time_label(ds)
    'scaled time t = k / N'
    """
    units = ds[schema.TIME].attrs.get("units", "")
    return {"scaled": "scaled time t = k / N", "step": "optimizer step", "epoch": "epoch"}.get(units, "time")


def _at(res: xr.Dataset) -> str:
    """``"t = 1"``, ``"epoch 3"`` or ``"step 500"`` for a result selected at one time."""
    if schema.TIME not in res.coords or res[schema.TIME].size != 1:
        return ""
    value = res[schema.TIME].item()
    units = res[schema.TIME].attrs.get("units", "scaled")
    return {"epoch": f"epoch {value:g}", "step": f"step {value:g}"}.get(units, f"t = {value:g}")


def _width_axis(ax, widths) -> None:
    """Log-scaled width axis with one plain tick per width (no overlapping 10^k labels)."""
    ticker = require("matplotlib.ticker", "drawing figures")

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(np.asarray(widths, dtype=float)))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    fmt = ticker.ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    if len(widths) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("width N")


def _pool(da: xr.DataArray, keep: tuple[str, ...]) -> xr.DataArray:
    other = [d for d in da.dims if d not in keep]
    return da.mean(other) if other else da


def curves(ds: xr.Dataset, var: str = schema.TEST_LOSS, *, ci: float = 0.95, log: bool | None = None, ax=None):
    """``var`` against time, one line per gamma with its seed-mean interval, one panel per width.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` (or with dims gamma, width, seed, time, ...); grid and extra dims
        are averaged per seed first
    var : a per-record variable, e.g. ``"test_loss"``, ``"accuracy"``, or ``"prediction"``
    log : log y axis (default: for losses)
    ax : one axes per width, or None for a new figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> fig = plot.curves(ds, "prediction")
    >>> len(fig.axes)  # one panel per width
    3
    """
    if var not in ds.data_vars:
        from .errors import ValidationError

        raise ValidationError(
            f"plot.curves: the dataset has no variable {var!r}; it has {sorted(map(str, ds.data_vars))}. Pass one "
            "of those as var= (a store without scalars, e.g. a synthetic one, has only 'prediction')."
        )
    da = _pool(ds[var], (schema.GAMMA, schema.WIDTH, schema.SEED, schema.TIME))
    m = seed_mean(da, ci=ci).compute()
    widths = ds[schema.WIDTH].values
    axes = _axes(ax, len(widths), (3.0 * len(widths), 3.0), sharey=True)
    log = var.endswith("loss") if log is None else log
    what = ds[var].attrs.get("long_name", var)
    for a, w in zip(axes, widths, strict=True):
        for g, c in zip(ds[schema.GAMMA].values, _colors(ds.sizes[schema.GAMMA]), strict=True):
            s = m.sel({schema.GAMMA: g, schema.WIDTH: w})
            a.plot(ds[schema.TIME], s["mean"], color=c, label=f"gamma = {g:g}")
            a.fill_between(ds[schema.TIME], s["mean_lo"], s["mean_hi"], color=c, alpha=0.2, lw=0)
        a.set_title(f"N = {int(w)}")
        a.set_xlabel(time_label(ds))
        if log:
            a.set_yscale("log")
    axes[0].set_ylabel(f"{what}\n(seed mean, {ci:.0%} CI)")
    axes[-1].legend(fontsize=7)
    return axes[0].figure


def variance_vs_width(bv: xr.Dataset, rate: xr.Dataset | None = None, *, time: int = -1, ax=None):
    """Seed variance (grid mean) against N on log-log axes with its intervals, per gamma.

    With ``rate``, the fitted line (solid) and the theory slope 1 - 2 gamma through the first width (dotted).

    Parameters
    ----------
    bv : :func:`bias_variance` result, dims (gamma, width, [time])
    rate : :func:`fit_rate` result, dims (gamma, [time])
    time : index along ``time`` (default the last)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> bv = es.bias_variance(ds)
    >>> fig = plot.variance_vs_width(bv, es.fit_rate(ds, quantity="variance"))
    >>> fig.axes[0].get_xscale()
    'log'
    """
    last = bv.isel({schema.TIME: time}) if schema.TIME in bv.dims else bv
    r = None if rate is None else rate.isel({schema.TIME: time}) if schema.TIME in rate.dims else rate
    (a,) = _axes(ax, 1, (8.4, 4.2) if rate is not None else (6.4, 4.2))
    N = bv[schema.WIDTH].values.astype(float)
    for g, c in zip(bv[schema.GAMMA].values, _colors(bv.sizes[schema.GAMMA]), strict=True):
        v = _pool(last.sel({schema.GAMMA: g}), (schema.WIDTH,))
        yerr = np.abs([v.variance - v.variance_lo, v.variance_hi - v.variance])
        label = f"gamma = {g:g}"
        if r is not None:
            rr = r.sel({schema.GAMMA: g})
            label += f": slope {float(rr.slope):.2f} [{float(rr.slope_lo):.2f}, {float(rr.slope_hi):.2f}], theory {float(rr.theory):.2f}"
            fitted = np.exp(float(rr.intercept)) * N ** float(rr.slope)
            a.plot(N, fitted, color=c, lw=1.2)
            a.plot(N, fitted[0] * (N / N[0]) ** float(rr.theory), color=c, ls=":", lw=1)
        a.errorbar(N, v.variance, yerr=yerr, fmt="o", color=c, capsize=3, label=label)
    a.set_yscale("log")
    _width_axis(a, N)
    at = f" at {_at(last)}" if _at(last) else ""
    a.set_ylabel(f"seed variance{at}\n(grid mean, {float(bv.attrs.get('ci', 0.95)):.0%} CI)")
    if r is not None:
        a.set_title("fit (solid), theory slope 1 - 2 gamma (dotted)", fontsize=9)
    a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data, never over it
    return a.figure


def mean_expansion(sm: xr.Dataset, fit: xr.Dataset, *, point: int = 0, output: int = 0, time: int = -1, ax=None):
    """Seed mean at one grid value against N with its interval, the fitted expansion and its limit h_t, per gamma.

    Parameters
    ----------
    sm : :func:`seed_mean` result of the predictions, dims (gamma, width, time, point, output)
    fit : :func:`fit_expansion` result with ``quantity="mean"`` on the same store
    point, output, time : indices of the grid value and the time drawn

    Returns
    -------
    matplotlib Figure: the seed means (markers, CI bars), the fitted sum_k c_k N^(-p_k) on a fine grid of N
    (solid) and its constant term h_t, the N -> infinity limit, with its interval (dashed, shaded).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> fig = plot.mean_expansion(es.seed_mean(ds), es.fit_expansion(ds, quantity="mean"))
    >>> fig.axes[0].get_xscale()
    'log'
    """
    if fit.attrs.get("quantity", "mean") != "mean":
        from .errors import ValidationError

        raise ValidationError(
            f"mean_expansion: the fit is of the {fit.attrs['quantity']}; pass fit_expansion(ds, quantity='mean')."
        )
    where = {schema.TIME: time, schema.POINT: point, schema.OUTPUT: output}
    m = sm.isel({d: i for d, i in where.items() if d in sm.dims})
    f = fit.isel({d: i for d, i in where.items() if d in fit.dims})
    (a,) = _axes(ax, 1, (8.4, 4.2))
    N = sm[schema.WIDTH].values.astype(float)
    fine = np.geomspace(N[0], N[-1], 64)
    for g, c in zip(sm[schema.GAMMA].values, _colors(sm.sizes[schema.GAMMA]), strict=True):
        v, r = m.sel({schema.GAMMA: g}), f.sel({schema.GAMMA: g})
        a.errorbar(
            N, v["mean"], yerr=np.abs([v["mean"] - v["mean_lo"], v["mean_hi"] - v["mean"]]), fmt="o", color=c, capsize=3
        )
        if int(r["status"]) != 0:
            a.plot(
                [],
                [],
                "o",
                color=c,
                label=f"gamma = {g:g}: not fitted ({r['status'].attrs.get('flag_meanings', '').split()[int(r['status'])]})",
            )
            continue
        p, coef = r["exponent"].values, r["coef"].values
        on = np.isfinite(p) & np.isfinite(coef)
        a.plot(fine, (coef[on][:, None] * fine[None, :] ** -p[on][:, None]).sum(0), color=c, lw=1.2)
        label = f"gamma = {g:g}"
        const = np.flatnonzero(on & (p == 0))
        if const.size:
            k = int(const[0])
            h, lo, hi = (float(r[n].isel(term=k)) for n in ("coef", "coef_lo", "coef_hi"))
            a.axhline(h, color=c, ls="--", lw=1)
            a.axhspan(lo, hi, color=c, alpha=0.12, lw=0)
            label += f": h_t = {h:.4g} [{lo:.4g}, {hi:.4g}]"
        a.plot([], [], "o-", color=c, label=label)
    _width_axis(a, N)
    at = f" at {_at(m)}" if _at(m) else ""
    a.set_ylabel(f"seed mean{at}\n(point {point}, output {output}; {float(sm.attrs.get('ci', 0.95)):.0%} CI)")
    a.set_title("fitted expansion (solid), its limit h_t with interval (dashed, shaded)", fontsize=9)
    a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return a.figure


def kernel_drift(kd: xr.Dataset, *, time: int = -1, ax=None):
    """Lazy vs feature learning.

    The relative kernel drift (left) and the parameter displacement (right, one marker per parameter tensor)
    against N at one time, per gamma: seed means with intervals, fitted exponents in the legend and the theory's
    exponent as a dotted line through the first width.

    Parameters
    ----------
    kd : :func:`ensemble_stats.kernel_drift` result
    time : index along ``time`` (default the last)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from ensemble_stats import plot
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> fig = plot.kernel_drift(es.kernel_drift(ds))
    >>> len(fig.axes) >= 1
    True
    >>> folder.cleanup()
    """
    has_disp = "displacement_mean" in kd
    axes = _axes(ax, 2 if has_disp else 1, (11.5, 4.0) if has_disp else (6.4, 4.0))
    last = kd.isel({schema.TIME: time})
    N = kd[schema.WIDTH].values.astype(float)
    panels = [("drift", "relative kernel drift ||Theta_t - Theta_0|| / ||Theta_0||", None)]
    if has_disp:
        panels.append(("displacement", "relative displacement ||theta_t - theta_0|| / ||theta_0||", schema.LAYER))
    for a, (name, ylabel, layer_dim) in zip(axes, panels, strict=True):
        theory = last[f"{name}_theory"]
        layers = last[layer_dim].values if layer_dim else [None]
        for g, c in zip(kd[schema.GAMMA].values, _colors(kd.sizes[schema.GAMMA]), strict=True):
            for layer, marker in zip(layers, "osD^v", strict=False):
                sel = {schema.GAMMA: g, **({layer_dim: layer} if layer_dim else {})}
                m, lo, hi = (last[f"{name}_{k}"].sel(sel) for k in ("mean", "lo", "hi"))
                slope, s_lo, s_hi = (float(last[f"{name}_{k}"].sel(sel)) for k in ("slope", "slope_lo", "slope_hi"))
                label = f"gamma = {g:g}" + (f", {layer}" if layer is not None else "")
                label += (
                    f": slope {slope:.2f} [{s_lo:.2f}, {s_hi:.2f}], theory {float(theory.sel({schema.GAMMA: g})):.2f}"
                )
                yerr = np.abs([m - lo, hi - m])
                a.errorbar(N, _positive(m), yerr=yerr, fmt=marker, color=c, capsize=3, label=label)
                ok = np.isfinite(_positive(m))
                if ok.any():
                    first = float(m.values[ok][0])
                    a.plot(N, first * (N / N[ok][0]) ** float(theory.sel({schema.GAMMA: g})), color=c, ls=":", lw=1)
        a.set_yscale("log")
        _width_axis(a, N)
        a.set_ylabel(f"{ylabel}\nat {_at(last)}" if _at(last) else ylabel)
        a.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[0].set_title("seed means with intervals; theory exponent (dotted)", fontsize=9)
    return axes[0].figure


def _positive(v) -> np.ndarray:
    """Estimates <= 0 (the corrected bias^2 below the seed noise) are left out of a log axis."""
    v = np.asarray(v, dtype=float)
    return np.where(v > 0, v, np.nan)


def bias_variance(bv: xr.Dataset, *, time: int = -1, ax=None):
    """Bias^2 and variance against N (at one time) and against time (at the largest width), per gamma.

    Bias^2 estimates <= 0, where the bias is below the seed noise, are not drawn.

    Parameters
    ----------
    bv : a :func:`~ensemble_stats.bias_variance` result
    time : the index of the time of the panel against N
    ax : two axes, or None for a new figure

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> fig = plot.bias_variance(es.bias_variance(ds))
    >>> len(fig.axes) >= 2
    True
    """
    axes = _axes(ax, 2, (10, 3.8))
    last = bv.isel({schema.TIME: time})
    N = bv[schema.WIDTH].values
    for g, c in zip(bv[schema.GAMMA].values, _colors(bv.sizes[schema.GAMMA]), strict=True):
        v = _pool(last.sel({schema.GAMMA: g}), (schema.WIDTH,))
        axes[0].plot(N, _positive(v.bias2), "o-", color=c, label=f"bias^2, gamma = {g:g}")
        axes[0].plot(N, _positive(v.variance), "s--", color=c, label=f"variance, gamma = {g:g}")
        wmax = _pool(bv.sel({schema.GAMMA: g}).isel({schema.WIDTH: -1}), (schema.TIME,))
        axes[1].plot(bv[schema.TIME], _positive(wmax.bias2), color=c, label=f"gamma = {g:g}")
        axes[1].plot(bv[schema.TIME], _positive(wmax.variance), color=c, ls="--")
    axes[0].set_yscale("log")
    _width_axis(axes[0], N)
    axes[0].set_ylabel(f"bias^2 (solid), variance (dashed)\nagainst the target, {_at(last)}")
    axes[1].set_yscale("log")
    axes[1].set_xlabel(time_label(bv))
    axes[1].set_ylabel(f"bias^2 (solid), variance (dashed)\nN = {int(N[-1])}")
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=6)
    return axes[0].figure


def completeness(ds: xr.Dataset, *, ax=None):
    """Draw the share of records written per (gamma, width), with the number of diverged runs.

    Parameters
    ----------
    ds : Dataset from :func:`~ensemble_stats.open_ensemble`
    ax : one axes, or None for a new figure

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 256, 1024], n_seeds=8, seed=0)
    >>> fig = plot.completeness(ds)
    >>> len(fig.axes) >= 1
    True
    """
    w = _pool(ds[schema.WRITTEN].astype(float), (schema.GAMMA, schema.WIDTH)).compute()
    div = (
        (ds[schema.DIVERGED_STEP] >= 0)
        .sum([d for d in ds[schema.DIVERGED_STEP].dims if d not in (schema.GAMMA, schema.WIDTH)])
        .compute()
    )
    size = (1.6 + 0.9 * ds.sizes[schema.WIDTH], 1.2 + 0.5 * ds.sizes[schema.GAMMA])
    (a,) = _axes(ax, 1, size)
    vals = w.transpose(schema.GAMMA, schema.WIDTH).values
    dv = div.transpose(schema.GAMMA, schema.WIDTH).values
    im = a.imshow(vals, vmin=0, vmax=1, cmap="cividis", aspect="auto")
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            txt = f"{100 * vals[i, j]:.0f}%" + (f"\n{int(dv[i, j])} div." if dv[i, j] else "")
            a.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if vals[i, j] < 0.6 else "black")
    a.set_xticks(range(vals.shape[1]), [str(int(v)) for v in ds[schema.WIDTH].values])
    a.set_yticks(range(vals.shape[0]), [f"{v:g}" for v in ds[schema.GAMMA].values])
    a.grid(False)
    a.set_xlabel("width N")
    a.set_ylabel("gamma")
    a.set_title("records written (diverged runs counted)", fontsize=9)
    a.figure.colorbar(im, ax=a, fraction=0.05)
    return a.figure


def collapse(cmp: xr.Dataset, *, ax=None):
    """Draw the collapse ratio N^(2 gamma - 1) Var / Var K_t against time, one panel per gamma, one line per width.

    Parameters
    ----------
    cmp : :func:`compare_to_theory` result, dims (gamma, width, time)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from ensemble_stats import plot
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> fig = plot.collapse(es.compare_to_theory(ds))
    >>> len(fig.axes) >= 1
    True
    >>> folder.cleanup()
    """
    gammas = cmp[schema.GAMMA].values
    axes = _axes(ax, len(gammas), (2.9 * len(gammas), 3.2), sharey=True)
    for a, g in zip(axes, gammas, strict=True):
        for w, c in zip(cmp[schema.WIDTH].values, _colors(cmp.sizes[schema.WIDTH]), strict=True):
            s = _pool(cmp[["ratio", "ratio_lo", "ratio_hi"]].sel({schema.GAMMA: g, schema.WIDTH: w}), (schema.TIME,))
            a.plot(cmp[schema.TIME], s.ratio, color=c, label=f"N = {int(w)}")
            a.fill_between(cmp[schema.TIME], s.ratio_lo, s.ratio_hi, color=c, alpha=0.15, lw=0)
        a.axhline(1.0, color="k", lw=0.8, ls=":")
        a.set(title=f"gamma = {g:g}", xlabel=time_label(cmp))
    axes[0].set_ylabel("N^(2 gamma - 1) Var / Var K_t")
    axes[-1].legend(fontsize=6)
    return axes[0].figure


def gamma_alpha_map(da: xr.DataArray, *, log: bool = False, fmt: str = ".2f", ax=None):
    """Draw a (gamma, alpha) map of one quantity: a heatmap per width, each cell annotated (NaN cells left blank).

    Parameters
    ----------
    da : dims (gamma, alpha) and optionally width (one panel each), e.g. the seed-mean test accuracy at the
        training plateau from :func:`ensemble_stats.plateau`
    log : colour by log10 of the values (variances spanning decades)
    fmt : format of the annotations

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from ensemble_stats import plot
    >>> import numpy as np, xarray as xr
    >>> acc = xr.DataArray(np.array([[0.9, 0.8], [0.85, np.nan]]), dims=("gamma", "alpha"),
    ...                    coords={"gamma": [0.5, 1.0], "alpha": [1.0, 10.0]}, name="accuracy")
    >>> fig = plot.gamma_alpha_map(acc)
    >>> len(fig.axes) >= 1
    True
    """
    from .errors import ValidationError

    extra = sorted(set(da.dims) - {schema.GAMMA, schema.ALPHA, schema.WIDTH})
    if {schema.GAMMA, schema.ALPHA} - set(da.dims) or extra:
        raise ValidationError(
            f"gamma_alpha_map: '{da.name}' has dims {list(da.dims)}; it needs (gamma, alpha) and at most 'width' "
            f"besides{f' (select or reduce {extra} first)' if extra else ''}."
        )
    panels = da[schema.WIDTH].values if schema.WIDTH in da.dims else [None]
    axes = _axes(ax, len(panels), (3.4 * len(panels), 3.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log10(da.where(da > 0)) if log else da
    lo, hi = float(shown.min()), float(shown.max())
    for a, w in zip(axes, panels, strict=True):
        v = da if w is None else da.sel({schema.WIDTH: w})
        c = shown if w is None else shown.sel({schema.WIDTH: w})
        v, c = v.transpose(schema.GAMMA, schema.ALPHA), c.transpose(schema.GAMMA, schema.ALPHA)
        im = a.imshow(c.values, origin="lower", aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
        a.grid(False)
        for (i, j), x in np.ndenumerate(v.values):
            if np.isfinite(x):
                a.text(j, i, format(x, fmt), ha="center", va="center", fontsize=7, color="w")
        a.set_xticks(range(v.sizes[schema.ALPHA]), [f"{x:g}" for x in v[schema.ALPHA].values])
        a.set_yticks(range(v.sizes[schema.GAMMA]), [f"{x:g}" for x in v[schema.GAMMA].values])
        a.set(xlabel="alpha", ylabel="gamma", title=f"N = {int(w)}" if w is not None else "")
    what = da.attrs.get("long_name") or da.name or ""
    axes[-1].figure.colorbar(im, ax=list(axes), label=f"log10 {what}" if log else what, shrink=0.9)
    return axes[0].figure


def fluctuation_qq(fg: xr.Dataset, *, time: int = -1, point: int = 0, output: int = 0, ax=None):
    """Draw normal QQ plots of the rescaled fluctuations z at one time and grid point.

    One panel per gamma, one colour per width; the diagonal is the theory's N(0, 1), the legend gives each KS p-value.

    Parameters
    ----------
    fg : :func:`ensemble_stats.fluctuation_gaussianity` result
    time, point, output : indices of the record and the grid cell drawn

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from ensemble_stats import plot
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> fig = plot.fluctuation_qq(es.fluctuation_gaussianity(ds.isel(time=[1, 2])))
    >>> len(fig.axes)  # one panel per gamma
    1
    >>> folder.cleanup()
    """
    from scipy import stats

    sel = {schema.TIME: time}
    sel.update({d: i for d, i in ((schema.POINT, point), (schema.OUTPUT, output)) if d in fg["z"].dims})
    cell = fg.isel(sel)
    gammas = fg[schema.GAMMA].values
    axes = _axes(ax, len(gammas), (2.9 * len(gammas), 3.0), sharey=True)
    for a, g in zip(axes, gammas, strict=True):
        for w, c in zip(fg[schema.WIDTH].values, _colors(fg.sizes[schema.WIDTH]), strict=True):
            one = cell.sel({schema.GAMMA: g, schema.WIDTH: w})
            z = np.sort(one["z"].values[np.isfinite(one["z"].values)])
            if len(z) < 2:
                continue
            q = stats.norm.ppf((np.arange(1, len(z) + 1) - 0.5) / len(z))
            a.plot(q, z, ".", ms=2.5, color=c, label=f"N = {int(w)}, KS p = {float(one['pvalue']):.2g}")
        lim = 3.5
        a.plot([-lim, lim], [-lim, lim], color="k", lw=0.8, ls=":")
        a.set(title=f"gamma = {g:g}", xlabel="N(0, 1) quantile", xlim=(-lim, lim))
        a.legend(fontsize=5.5, loc="upper left")
    axes[0].set_ylabel(f"z quantile at {_at(cell)}" if _at(cell) else "z quantile")
    return axes[0].figure


def catapult(reg: xr.Dataset, *, ax=None):
    """Large learning rates, one marker per run.

    The loss spike max_t L_t / L_0 (left) and the end-of-training stability r_final = eta lambda_final / (M O) of
    the runs that did not diverge (right) against r_0 = eta lambda_0 / (M O), one colour per width; diverged runs
    are crosses (left). The linear step is stable below r = 2; the catapult is expected for r_0 in (2, 4).

    Parameters
    ----------
    reg : :func:`ensemble_stats.learning_rate_regimes` result

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from ensemble_stats import plot
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> fig = plot.catapult(es.learning_rate_regimes(ds))
    >>> len(fig.axes) >= 1
    True
    >>> folder.cleanup()
    """
    axes = _axes(ax, 2, (10.5, 3.8))
    for w, c in zip(reg[schema.WIDTH].values, _colors(reg.sizes[schema.WIDTH]), strict=True):
        one = reg.sel({schema.WIDTH: w})
        r0, div = one["r_0"].values.ravel(), one["diverged"].values.ravel().astype(bool)
        for a, var in zip(axes, ("loss_spike", "r_final"), strict=True):
            y = one[var].values.ravel()
            a.plot(r0[~div], y[~div], "o", ms=3, color=c, alpha=0.7, label=f"N = {int(w)}")
            if div.any() and var == "loss_spike":  # a diverged run's last kernel says nothing about stability
                a.plot(r0[div], y[div], "x", ms=4, color=c)
    for a in axes:
        for r in (2.0, 4.0):
            a.axvline(r, color="k", lw=0.8, ls=":")
        a.set_xlabel("r_0 = eta lambda_0 / (M O)")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss spike max_t L_t / L_0")
    axes[1].axhline(2.0, color="k", lw=0.8)
    axes[1].set_ylabel("r_final = eta lambda_final / (M O)\n(runs that did not diverge)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("crosses: diverged runs", fontsize=9)
    return axes[0].figure


def condition_numbers(cond: xr.DataArray, trained: xr.Dataset | None = None, *, title: str = "", ax=None):
    """Draw the NNGP Gram matrix's condition number against depth, and the trained nets' loss against depth.

    Parameters
    ----------
    cond : condition numbers, dims (activation, depth) (e.g. ``theory.kernel_condition_number`` per activation)
    trained : ``train_loss``, ``train_loss_lo``, ``train_loss_hi`` with dims (activation, layers), or None for
        the first panel only
    title : the first panel's title (the inputs the Gram matrices are of)
    ax : one or two axes, or None for a new figure

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, xarray as xr
    >>> from ensemble_stats import plot, theory
    >>> x = np.random.default_rng(0).normal(size=(6, 3))
    >>> acts, depths = ["relu", "tanh"], [1, 2, 4]
    >>> cond = xr.DataArray([theory.kernel_condition_number(x, activation=a, depth=depths) for a in acts],
    ...                     dims=("activation", "depth"), coords={"activation": acts, "depth": depths})
    >>> len(plot.condition_numbers(cond).axes)
    1
    """
    axes = _axes(ax, 1 if trained is None else 2, (4.5 if trained is None else 9.0, 3.4))
    for a, c in zip(cond.activation.values, _colors(cond.sizes["activation"]), strict=True):
        axes[0].plot(cond.depth.values, cond.sel(activation=a).values, "o-", color=c, label=str(a))
    axes[0].set(yscale="log", xlabel="depth (hidden layers)", ylabel=cond.attrs.get("long_name", ""), title=title)
    axes[0].legend(fontsize=7)
    if trained is not None:
        colors = _colors(trained.sizes["activation"] + 1)[1:]
        for a, c in zip(trained.activation.values, colors, strict=True):
            one = trained.sel(activation=a).dropna("layers", subset=["train_loss"])
            m = one.train_loss.values
            yerr = [m - one.train_loss_lo.values, one.train_loss_hi.values - m]
            axes[1].errorbar(one.layers.values, m, yerr=yerr, marker="o", capsize=2, color=c, label=str(a))
        axes[1].set(xscale="log", yscale="log", xlabel="hidden layers L", ylabel="training loss after the budget")
        axes[1].legend(fontsize=7)
    return axes[0].figure


def scaled_variance(variants, *, ylabel: str = "N x seed variance (grid mean, 95% CI)", ax=None):
    """Draw a scaled seed variance (e.g. N Var) against time with its interval, one panel per variant.

    Parameters
    ----------
    variants : ``{name: Dataset}`` with ``variance``, ``variance_lo``, ``variance_hi`` of dims (width, time), already
        scaled (e.g. by N^(2 gamma - 1))
    ylabel : the quantity's label
    ax : one axes per variant, or None for a new figure

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import ensemble_stats as es
    >>> from ensemble_stats import plot
    >>> from ensemble_stats.testing import synthetic_ensemble
    >>> bv = es.bias_variance(synthetic_ensemble(gammas=[1.0], widths=[64, 256], n_seeds=8)).sel(gamma=1.0)
    >>> scaled = bv[["variance", "variance_lo", "variance_hi"]] * bv.width
    >>> len(plot.scaled_variance({"synthetic": scaled}).axes)
    1
    """
    names = list(variants)
    axes = _axes(ax, len(names), (3.3 * len(names), 3.3), sharey=True)
    for a, name in zip(axes, names, strict=True):
        d = variants[name]
        for w, c in zip(d.width.values, _colors(d.sizes["width"]), strict=True):
            s = d.sel(width=w)
            a.plot(d.time, s.variance, color=c, label=f"N = {int(w)}")
            a.fill_between(d.time, s.variance_lo, s.variance_hi, color=c, alpha=0.2, lw=0)
        a.set(yscale="log", xlabel=time_label(d), title=name)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7)
    return axes[0].figure


def main_effects(panels, factors, *, labels=None, xlabel: str = "", title: str = "", ax=None):
    """Draw the main effect of each factor: the response's mean at each level, the other factors averaged.

    Parameters
    ----------
    panels : ``[(frame, response, ylabel), ...]``: a pandas DataFrame, the column plotted, its label; one panel each
    factors : the factor columns (one line each)
    labels : the lines' legend labels (default the factor names)
    xlabel, title : the level axis' label and the figure's title
    ax : one axes per panel, or None for a new figure

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> from ensemble_stats import plot
    >>> frame = pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "y": [1.0, 2.0, 3.0, 4.0]})
    >>> len(plot.main_effects([(frame, "y", "response")], ["a", "b"]).axes)
    1
    """
    axes = _axes(ax, len(panels), (4.5 * len(panels), 3.4))
    labels = list(factors) if labels is None else list(labels)
    for a, (frame, response, ylabel) in zip(axes, panels, strict=True):
        for f, label, c in zip(factors, labels, _colors(len(factors)), strict=True):
            m = frame.groupby(f)[response].mean()
            a.plot(m.index, m.values, "o-", color=c, label=label)
        a.set(xlabel=xlabel, ylabel=ylabel)
        a.legend(fontsize=7)
    if title:
        axes[0].figure.suptitle(title)
    return axes[0].figure


def gamma_alpha_maps(rows, *, logs=None, fmts=None, title: str = ""):
    """Draw several (gamma, alpha) maps of one sweep, one row of panels (one per width) per quantity.

    Parameters
    ----------
    rows : DataArrays as :func:`gamma_alpha_map` takes them, with the same widths
    logs, fmts : per row, ``log`` and ``fmt`` of :func:`gamma_alpha_map` (default False and ".2f")
    title : the figure's title

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, xarray as xr
    >>> from ensemble_stats import plot
    >>> acc = xr.DataArray(np.array([[0.9, 0.8], [0.85, np.nan]]), dims=("gamma", "alpha"),
    ...                    coords={"gamma": [0.5, 1.0], "alpha": [1.0, 10.0]}, name="accuracy")
    >>> len(plot.gamma_alpha_maps([acc, 1 - acc], logs=[False, True]).axes)  # two maps and their colour bars
    4
    """
    rows = list(rows)
    logs = [False] * len(rows) if logs is None else list(logs)
    fmts = [".2f"] * len(rows) if fmts is None else list(fmts)
    n = rows[0].sizes.get(schema.WIDTH, 1)
    fig, axes = _subplots(len(rows), n, (3.8 * n, 3.1 * len(rows)))
    for da, log, fmt, row in zip(rows, logs, fmts, axes, strict=True):
        gamma_alpha_map(da, log=log, fmt=fmt, ax=row)
    if title:
        fig.suptitle(title)
    return fig
