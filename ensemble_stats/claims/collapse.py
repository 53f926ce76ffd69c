"""The parameter-free collapse of the seed variance onto the kernel limit (docs/theory.md §1.4).

Claim: N^(2 gamma - 1) times the seed variance, divided by the kernel limit's Var K_t, tends to 1 as N grows, at
every gamma in [1/2, 1) and every t > 0, with a relative correction of order N^(2 gamma - 2). One store of a shallow
sweep the kernel limit describes (see :func:`ensemble_stats.kernel_limit_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr
from scipy import stats

from .._assess import covers, interval, verdict
from .._limit import compare_to_theory
from ..store import open_ensemble
from ._claim import Claim, save_figure

__all__ = ["claims", "extrapolate"]


def extrapolate(
    ratio: np.ndarray, lo: np.ndarray, hi: np.ndarray, widths: np.ndarray, power: float, ci: float = 0.95
) -> dict:
    """Extrapolate the ratio to N -> infinity from several widths: r_N = c + a N^power, weighted least squares.

    The correction's first order is linear in N^power; each width's standard error is read off its interval
    (``lo``, ``hi``: normal, at ``ci``) and the widths are independent draws. Returns ``limit`` (c) with ``limit_lo``,
    ``limit_hi`` (at ``ci``), ``a``, ``chi2`` and ``dof``; NaN where fewer than three finite widths remain or ``power``
    is 0 (a correction that does not vanish: no limit to extrapolate to).
    """
    nan = dict.fromkeys(("limit", "limit_lo", "limit_hi", "a", "chi2"), np.nan) | {"dof": 0}
    z = float(stats.norm.ppf(0.5 + ci / 2))
    y, se = np.asarray(ratio, float), (np.asarray(hi, float) - np.asarray(lo, float)) / (2 * z)
    ok = np.isfinite(y) & np.isfinite(se) & (se > 0)
    if ok.sum() < 3 or power == 0:
        return nan
    X = np.stack([np.ones(ok.sum()), widths[ok].astype(float) ** power], axis=1)
    w = 1 / se[ok] ** 2
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    b = cov @ (X.T @ (w * y[ok]))
    half = z * np.sqrt(cov[0, 0])
    resid = y[ok] - X @ b
    return {
        "limit": float(b[0]),
        "limit_lo": float(b[0] - half),
        "limit_hi": float(b[0] + half),
        "a": float(b[1]),
        "chi2": float(np.sum(w * resid**2)),
        "dof": int(ok.sum() - 2),
    }


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide whether the variance collapses onto the kernel limit, on one store.

    The ratio N^(2 gamma - 1) Var / Var K_t carries a relative correction of order N^(2 gamma - 2) (docs/theory.md
    §1.4), which vanishes slowly as gamma -> 1 and not at all at gamma = 1. So each gamma < 1 is judged by the
    ratio's limit, extrapolated from every width at the last t with that correction's order
    (:func:`extrapolate`): the claim holds where the limit's 95% interval lies within 1 +- ``margin``, fails
    where it lies outside that band, and is undecided otherwise; gamma = 1 is not tested (no vanishing
    correction).

    Parameters
    ----------
    stores : ``{name: path}`` of one store
    opts : ``margin`` (default 0.2: the equivalence margin on the variance ratio, 10% on the standard deviation),
        ``figdir`` (a folder: draw the figure there)

    Returns
    -------
    one :class:`Claim`; its cases (dim ``case``, one per gamma) hold the ratio with its interval at the widest N,
    the extrapolated ``limit`` with its interval, and the decision ``holds`` (NaN where undecided or not tested)
    """
    (path,) = stores.values()
    margin = float(opts.get("margin", 0.2))
    cmp = compare_to_theory(open_ensemble(path)).compute()  # the kernel limit from the store's training set
    widths, later = cmp.width.values, cmp.time > 0
    rows, fits = [], []
    for g in cmp.gamma.values:
        first, s = (cmp.sel(gamma=g, width=w).where(later, drop=True) for w in (widths[0], widths[-1]))
        end = cmp.sel(gamma=g).where(later, drop=True).isel(time=-1)
        fit = extrapolate(end.ratio.values, end.ratio_lo.values, end.ratio_hi.values, widths, 2 * float(g) - 2)
        fits.append(fit)
        rows.append(
            (
                f"{g:g}",
                interval(first.ratio[-1], first.ratio_lo[-1], first.ratio_hi[-1]),
                interval(s.ratio[-1], s.ratio_lo[-1], s.ratio_hi[-1]),
                f"{int(covers(s, 1.0, var='ratio').sum())} of {s.sizes['time']}",
                "no limit (gamma = 1)" if float(g) == 1.0 else interval(fit["limit"], fit["limit_lo"], fit["limit_hi"]),
                f"{fit['chi2']:.1f} / {fit['dof']}" if fit["dof"] else "-",
            )
        )
    limits = xr.Dataset(
        {k: ("gamma", [f[k] for f in fits]) for k in ("limit", "limit_lo", "limit_hi")}, coords={"gamma": cmp.gamma}
    )
    decided = covers(limits, 1.0, var="limit", margin=margin, nan="undecided")
    untested = cmp.gamma == 1.0
    decided = decided.where(~untested)
    v = verdict(decided, not_tested=untested)
    t = cmp.time.where(later, drop=True)
    top = cmp.sel(width=widths[-1]).where(later, drop=True)
    cases = xr.Dataset(
        {
            "ratio": top.ratio.isel(time=-1),
            "ratio_lo": top.ratio_lo.isel(time=-1),
            "ratio_hi": top.ratio_hi.isel(time=-1),
            **limits.data_vars,
            "holds": decided,
        }
    ).rename(gamma="case")
    cases["holds"].attrs["long_name"] = f"the extrapolated limit's interval within 1 +- {margin:g}"
    cases["limit"].attrs["long_name"] = "variance ratio extrapolated to N -> infinity"
    half = [0.5 * (f["limit_hi"] - f["limit_lo"]) for f, g in zip(fits, cmp.gamma.values, strict=True) if g < 1]
    figures = (("collapse", save_figure(_figure(cmp), opts, "collapse.png")),) if opts.get("figdir") else ()
    return [
        Claim(
            "Verdict",
            "does the ratio collapse to 1 for every gamma?",
            v,
            f"extrapolated to N -> infinity from {len(widths)} widths (N = {int(widths[0])} to {int(widths[-1])}) at "
            f"t = {float(t[-1]):g} with the correction's order N^(2 gamma - 2), the limit's 95% interval lies within "
            f"1 +- {margin:g} for {v.agree} of {v.cases} gammas below 1 ({v.undecided} undecided: the interval "
            f"straddles a band edge); gamma = 1 is not tested: the correction does not vanish there. Power: the "
            f"limits' half-widths are {', '.join(f'{h:.3f}' for h in half) or '-'} ({int(cmp.n_seeds.min())} seeds "
            "per width). All gammas at one N share their initial weights (common random numbers), so their seed "
            "noise is shared: rows that sit off 1 by the same amount at one N are one draw, not a trend in gamma.",
            cases=cases,
            columns=(
                "gamma",
                f"N = {int(widths[0])}, t = {float(t[-1]):g}",
                f"N = {int(widths[-1])}, t = {float(t[-1]):g}",
                f"t > 0 with 1 inside the CI, N = {int(widths[-1])}",
                "limit N -> infinity, 95% CI",
                "chi^2 / dof of the fit",
            ),
            rows=tuple(rows),
            figures=figures,
        )
    ]


def _figure(cmp: xr.Dataset):
    from .. import plot

    return plot.collapse(cmp)
