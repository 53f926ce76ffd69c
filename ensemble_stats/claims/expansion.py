"""The asymptotic expansion in 1/N^gamma (docs/theory.md §1.3-1.4, §9): bias, bias^2 / variance, Gaussianity.

Claims, against the kernel limit h_t of shallow sweeps: the bias falls as N^(2 gamma - 2) for a symmetric readout
law and as N^(gamma - 1) for a skewed one (1); bias^2 / variance scales as N^(6 gamma - 5) or N^(4 gamma - 3) (2);
N^(gamma - 1/2) (h^N - E h^N) is Gaussian with variance Var K_t (3, 3b); the law's exponents beat a free one by AIC
(4). The first store (antithetic pairs, symmetric law) answers all five; each further store (e.g. a skewed law)
answers 1 and 2 for its own law.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import xarray as xr

from .._assess import covers, interval, verdict
from .._fit import fit_expansion, fit_rate
from .._fluct import fluctuation_gaussianity
from .._limit import compare_to_theory
from .._stats import bias_variance
from ..store import open_ensemble
from ..theory import RATE_FORMULAS, bias_rate, ratio_rate, readout_law
from ._claim import Claim, save_figure, sci, yes_no

__all__ = ["claims"]


def _slope(r) -> str:
    return interval(r.slope, r.slope_lo, r.slope_hi)


_OTHER = {"symmetric": "skewed", "skewed": "symmetric"}


def _covered(r, competing: float | None = None) -> bool | None:
    """Covers the law's slope and, with ``competing``, excludes the other law's (None where it cannot decide)."""
    if not np.isfinite(float(r.slope)):
        return None  # the estimate was <= 0 at too many widths to fit a slope
    if not bool(covers(r)):
        return False
    if competing is not None and float(r.slope_lo) <= competing <= float(r.slope_hi):
        return None  # the interval covers both laws: no power to decide between them
    return True


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide the expansion's claims on one store per readout law.

    Parameters
    ----------
    stores : ``{name: path}``; the first with antithetic pairs (symmetric law), any further one with its own law
        (read from its config, ``theory.readout_law``), all in the kernel limit's regime
    opts : ``t_min`` (verdicts at t >= t_min, default 1), ``bias_gamma_min`` (the bias claim is judged at
        gamma >= it, default 0.8), ``figdir``

    Returns
    -------
    five :class:`Claim` for the first store (bias, ratio, Gaussianity, its scale, AIC), then the bias and ratio
    claims of each further store, labelled with its name
    """
    found = []
    for i, (name, path) in enumerate(stores.items()):
        ds = open_ensemble(path)
        lim = compare_to_theory(ds).compute()  # the kernel limit h_t and Var K_t from the store's training set
        judged = [float(t) for t in ds.time.values if t >= opts.get("t_min", 1.0)]
        later = [float(t) for t in ds.time.values if t > 0]
        bv = bias_variance(ds, reference=lim["h"]).compute()
        tag = "" if i == 0 else f" ({name})"
        found += [replace(c, label=c.label + tag) for c in _rates(ds, lim, bv, judged, later, opts, name)]
        if i == 0:
            found += [*_gaussianity(ds, lim, judged, later, opts), _aic(ds, lim, judged)]
    return found


def _rates(ds, lim, bv, judged, later, opts, name="") -> tuple[Claim, Claim]:
    h, N, gammas = lim["h"], ds.width.values, ds.gamma.values
    g_min = opts.get("bias_gamma_min", 0.8)
    law, source = readout_law(ds)
    other = _OTHER[law]
    tb, tr = RATE_FORMULAS["bias"][law], RATE_FORMULAS["ratio"][law]
    root = lambda b, k: np.sqrt(max(float(b[k]), 0.0))  # noqa: E731  |bias| from the corrected bias^2
    bias = fit_rate(ds, quantity="bias", reference=h).compute()
    ratio = fit_rate(ds, quantity="ratio", reference=h).compute()
    bias_rows, bias_cases, ratio_rows, ratio_cases = [], [], [], []
    for g in gammas:
        for t in later:
            r, q = bias.sel(gamma=g, time=t), ratio.sel(gamma=g, time=t)
            b = bv.sel(gamma=g, time=t, width=N[-1])
            c_b, c_q = _covered(r, bias_rate(g, other)), _covered(q, ratio_rate(g, other))
            if t in judged and g >= g_min:
                bias_cases.append(c_b)
            if t in judged:
                ratio_cases.append(c_q)
            bias_rows.append(
                (f"{g:g}", f"{t:g}", sci(root(b, "bias2"), root(b, "bias2_lo"), root(b, "bias2_hi")),
                 _slope(r), f"{float(r.theory):+.3f}", yes_no(c_b))
            )  # fmt: skip
            ratio_rows.append(
                (f"{g:g}", f"{t:g}", sci(b.bias2 / b.variance, b.bias2_lo / b.variance_hi,
                 b.bias2_hi / b.variance_lo), _slope(q), f"{float(q.theory):+.3f}", yes_no(c_q))
            )  # fmt: skip
    v_bias, v_ratio = verdict(bias_cases), verdict(ratio_cases)
    figures = ()
    if opts.get("figdir"):
        from .. import plot

        fig = plot.bias_variance(bv)
        fig.axes[0].set_ylabel(f"against the kernel limit h_t, t = {later[-1]:g}")
        suffix = f"-{name}" if name and law != "symmetric" else ""
        figures = (
            (f"bias and variance, {law} readout law", save_figure(fig, opts, f"expansion-bias-variance{suffix}.png")),
        )
    # where the bias is resolved but its slope misses the law's: say by how much, and in which direction
    missed = [
        (g, t, bias.sel(gamma=g, time=t))
        for g in gammas
        for t in judged
        if g >= g_min and _covered(bias.sel(gamma=g, time=t), bias_rate(g, other)) is False
    ]
    steeper = all(float(r.slope_hi) < float(r.theory) for _, _, r in missed)
    miss_text = (
        " Where it fails the fitted slope is "
        + ("steeper than" if steeper else "away from")
        + f" {tb} ("
        + "; ".join(f"gamma = {g:g}, t = {t:g}: {float(r.slope):.2f} vs {float(r.theory):.3f}" for g, t, r in missed)
        + "): at N <= "
        + f"{int(N[-1])} the next orders may still matter beside the leading one (a reading, not tested here; "
        "wider widths would tell)."
        if missed
        else ""
    )
    ts, paired = ", ".join(f"{t:g}" for t in judged), "pair" in ds.coords
    seeds = (
        f"{ds.sizes['seed']} per (gamma, N) as {ds.sizes['seed'] // 2} antithetic pairs"
        if paired
        else f"{ds.sizes['seed']} independent seeds per (gamma, N)"
    )
    rate_vars = ["slope", "slope_lo", "slope_hi", "theory"]
    return (
        Claim(
            "Verdict 1",
            f"with a {law} readout law, does the bias |E h^N - h_t| fall as N^({tb})?",
            v_bias,
            f"the slope's 95% CI covers {tb} and excludes the {other} law's exponent in {v_bias.agree} of "
            f"{v_bias.cases} cases at gamma >= {g_min:g} ({v_bias.undecided} undecided: no slope, the bias^2 "
            "estimate being <= 0 at too many widths, or an interval wide enough to cover both laws). Other gammas "
            f"are shown too. Readout law from {source}.{miss_text}",
            cases=bias[rate_vars].sel(time=judged).stack(case=("gamma", "time")).reset_index("case"),
            columns=("gamma", "t", f"|bias| at N = {int(N[-1])} [95%]", "slope [95%]", f"theory {tb}", "decides"),
            rows=tuple(bias_rows),
            figures=figures,
            preamble=f"{law.capitalize()} readout law ({name}). Seeds: {seeds}; verdicts at t = {ts} (at t = 0.5 the "
            "mean has barely moved from 0, shown for completeness). Bias, bias^2 and variance are the "
            + ("pair-aware " if paired else "")
            + "estimates (`bias_variance`), against the kernel limit h_t (`compare_to_theory`), pooled over the 5 "
            "test points; slopes are WLS fits on log N (`fit_rate`). A case decides for the law only when the "
            "slope's interval covers its exponent and excludes the other law's.",
        ),
        Claim(
            "Verdict 2",
            f"with a {law} readout law, does bias^2 / variance scale as N^({tr})?",
            v_ratio,
            f"the CI of the slope covers {tr} and excludes the {other} law's exponent in {v_ratio.agree} of "
            f"{v_ratio.cases} (gamma, t) cases ({v_ratio.undecided} undecided: no slope, or covering both). Below "
            f"gamma = {'5/6' if law == 'symmetric' else '3/4'} the ratio should fall with N, above it grow.",
            cases=ratio[rate_vars].sel(time=judged).stack(case=("gamma", "time")).reset_index("case"),
            columns=(
                "gamma",
                "t",
                f"bias^2 / variance at N = {int(N[-1])}",
                "slope [95%]",
                f"theory {tr}",
                "decides",
            ),
            rows=tuple(ratio_rows),
        ),
    )


def _gaussianity(ds, lim, judged, later, opts) -> list[Claim]:
    """Test the Gaussianity of N^(gamma - 1/2) (h - E h) / sqrt(Var K_t) and its scale.

    One member per pair, KS per grid point, Bonferroni over the grid (pvalue_min) and over the verdict's cases.
    """
    N, gammas, n_pairs = ds.width.values, ds.gamma.values, ds.sizes["seed"] // 2
    fg = fluctuation_gaussianity(ds, limit=lim).compute()
    top = fg.sel(width=N[-1])
    alpha = 0.05 / (len(gammas) * len(judged))
    gauss_cases = [bool(top.pvalue_min.sel(gamma=g, time=t) >= alpha) for g in gammas for t in judged]
    v_gauss = verdict(gauss_cases)
    scale_cases = [bool(covers(top.sel(gamma=g, time=t), 1.0, var="sd")) for g in gammas for t in judged]
    v_scale = verdict(scale_cases)
    rows = []
    for g in gammas:
        cell = fg.sel(gamma=g)
        at = {"gamma": g, "time": later[-1]}
        rows.append(
            (f"{g:g}", *(f"{float(cell.pvalue_min.sel(width=w, time=later[-1])):.2g}" for w in N),
             *(f"{float(top.pvalue_min.sel(gamma=g, time=t)):.2g}" for t in judged[:-1]),
             interval(float(top.sd.sel(**at)), float(top.sd_lo.sel(**at)), float(top.sd_hi.sel(**at))),
             _next_order(cell.sel(time=later[-1]), N, g))
        )  # fmt: skip
    figures = (("QQ plots", save_figure(_qq(fg), opts, "expansion-qq.png")),) if opts.get("figdir") else ()
    cases = top[["pvalue_min", "sd", "sd_lo", "sd_hi"]].sel(time=judged).stack(case=("gamma", "time"))
    return [
        Claim(
            "Verdict 3",
            "is N^(gamma - 1/2) (h^N - E h^N) Gaussian with variance Var K_t?",
            v_gauss,
            f"at N = {int(N[-1])} the Kolmogorov-Smirnov test against N(0, 1) (one member per pair, {n_pairs} "
            "draws; p-values Bonferroni-combined over the 5 grid points) is not rejected at level 0.05 / "
            f"{len(gauss_cases)} (Bonferroni over the cases) in {v_gauss.agree} of {v_gauss.cases} (gamma, t) "
            "cases. The test uses the theory's variance, so a wrong scale fails it as surely as a wrong shape; the "
            "last column is the standard deviation of z (1 in the limit). All gammas at one N share their initial "
            "weights (common random numbers), so a low p-value in one column for every gamma is one unusual draw "
            "of initial weights.",
            cases=cases.reset_index("case"),
        ),
        Claim(
            "Verdict 3b",
            f"is the variance Var K_t at N = {int(N[-1])}?",
            v_scale,
            f"the 95% CI of the standard deviation of z contains 1 in {v_scale.agree} of {v_scale.cases} (gamma, t) "
            "cases; the KS test has little power against a scale error of 20-30% at this many draws, so the scale "
            "is judged on its own. The last column measures the next order: with a symmetric readout law the "
            "fluctuation's first correction has relative size N^(2 gamma - 2) (docs/theory.md §1.4), so "
            "a_N = (sd(z) - 1) N^(2 - 2 gamma) should not depend on N; shown is their inverse-variance mean over the "
            "widths with its standard error and the chi^2 per dof of that constant (near 1 if a_N is flat; the "
            "widths share initial weights across gammas, not across N, so the widths are independent).",
            cases=cases.reset_index("case"),
            columns=(
                "gamma",
                *(f"p, N = {int(w)}, t = {later[-1]:g}" for w in N),
                *(f"p, N = {int(N[-1])}, t = {t:g}" for t in judged[:-1]),
                f"sd of z, N = {int(N[-1])}, t = {later[-1]:g}",
                f"a in sd(z) - 1 = a N^(2 gamma - 2), t = {later[-1]:g} [chi^2/dof]",
            ),
            rows=tuple(rows),
            figures=figures,
        ),
    ]


def _next_order(cell: xr.Dataset, N, g: float) -> str:
    """Inverse-variance mean of a_N = (sd(z) - 1) N^(2 - 2 g) over the widths, its standard error, chi^2/dof."""
    scale = np.asarray(N, dtype=float) ** (2 - 2 * g)
    a = (cell.sd.values - 1) * scale
    se = (cell.sd_hi.values - cell.sd_lo.values) / (2 * 1.959964) * scale
    ok = np.isfinite(a) & np.isfinite(se) & (se > 0)
    if ok.sum() < 2:
        return "-"
    w = 1 / se[ok] ** 2
    mean = float((w * a[ok]).sum() / w.sum())
    chi2 = float((w * (a[ok] - mean) ** 2).sum()) / (ok.sum() - 1)
    return f"{mean:.2f} ± {float(1 / np.sqrt(w.sum())):.2f} [{chi2:.1f}]"


def _aic(ds, lim, judged) -> Claim:
    """Model selection on the pair means: h + c N^(bias rate) (the law's exponent) against h + c N^(-p)."""
    h, gammas = lim["h"], ds.gamma.values
    sub = ds.sel(time=judged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # free fits scan exponents where the basis overflows
        lead = fit_expansion(sub, terms="leading").compute()
        free = fit_expansion(sub, terms="free").compute()
    delta = free.aic - lead.aic  # > 0: the theory's exponent is preferred
    rows, cases, decided, medians = [], [], [], []
    for g in gammas:
        for t in judged:
            d = delta.sel(gamma=g, time=t)
            p = free.exponent.isel(term=-1).sel(gamma=g, time=t)
            c0, c1 = (lead.sel(gamma=g, time=t).isel(term=k) for k in (0, 1))
            h_in = covers(c0, h.sel(time=t), var="coef")
            # only points whose mean moves with N (the bias term's coefficient CI excludes 0) can select a law
            moving = (c1.coef_lo > 0) | (c1.coef_hi < 0)
            dm = d.where(moving)
            med = float(dm.median()) if bool(moving.any()) else float("nan")
            cases.append(None if not np.isfinite(med) else med > 0)
            medians.append(med)
            decided += [med] if np.isfinite(med) else []
            rows.append(
                (f"{g:g}", f"{t:g}", f"{int(moving.sum())} of {int(moving.size)}",
                 f"{int((dm > 0).sum())} of {int(dm.notnull().sum())}", f"{med:+.2f}",
                 f"{float(p.where(moving).median()):.3f}", f"{-bias_rate(g, lead.attrs['readout_law']):.3f}",
                 f"{int(h_in.sum())} of {int(h_in.size)}")
            )  # fmt: skip
    v = verdict(cases)
    small = (
        f" In every decided case Delta AIC lies below 2 (largest {max(decided):.2f}): the theory wins by the free "
        "model's extra parameter, not by a better fit; these widths do not pin the exponent down."
        if decided and max(decided) < 2
        else ""
    )
    index = [(g, t) for g in gammas for t in judged]
    return Claim(
        "Verdict 4",
        "do the theory's exponents beat a free exponent by AIC?",
        v,
        '`fit_expansion` on the pair means with `terms="leading"` (h + c N^(2 gamma - 2), the symmetric law) against '
        '`terms="free"` '
        "(h + c N^(-p), p fitted), AIC = chi^2 + 2k; the theory is preferred (median Delta AIC = AIC(free) - "
        f"AIC(theory) > 0 over the grid points) in {v.agree} of {v.cases} cases ({v.undecided} with no such point: "
        "nothing to select). Only grid points whose mean moves with N (the 95% CI of the N^(2 gamma - 2) "
        "coefficient excludes 0) take part. The free model h + c N^(-p) can also take p -> 0 with c large, a drift "
        "like log N; a median p near 0 says the data prefer that shape. The last column counts the grid points "
        "where the fitted intercept's 95% CI contains the kernel limit h_t." + small,
        cases=xr.Dataset(
            {"median_delta_aic": ("case", medians)},
            coords={"gamma": ("case", [g for g, _ in index]), "time": ("case", [t for _, t in index])},
        ),
        columns=(
            "gamma",
            "t",
            "points whose mean moves with N",
            "of those, preferring the theory",
            "median Delta AIC",
            "median free exponent p",
            "theory 2 - 2 gamma",
            "h_t inside the intercept's CI",
        ),
        rows=tuple(rows),
    )


def _qq(fg: xr.Dataset):
    from .. import plot

    return plot.fluctuation_qq(fg)
