"""The shallow 1/N^gamma net (Yu & Spiliopoulos): accuracy and variance as gamma -> 1.

Claims: test accuracy improves monotonically as gamma -> 1 (1; at equal and at tuned alpha in the maps, 1b, 1c),
the output variance falls as gamma -> 1 (2) and with N as N^(1 - 2 gamma) (3). Stores: one per variant (data set
or init), ``<variant>-theory-init`` beside a paper-init variant for the init's part in the variance law, and
``*-alpha-map`` (``*-alpha-map-fine``) sweeps over alpha (:mod:`ensemble_stats.claims._shallow_map`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import scipy.stats

from .._assess import covers, interval, paired_difference, trend, verdict
from .._fit import fit_rate
from .._select import common_times
from .._stats import bias_variance
from ..store import open_ensemble, sweep_config
from ._claim import Claim, save_figure

__all__ = ["claims"]


def _slope(r) -> str:
    return interval(r.slope, r.slope_lo, r.slope_hi)


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide the shallow study's claims.

    Parameters
    ----------
    stores : ``{name: path}`` (see the module docstring for the names)
    opts : ``plateau_tol``, ``plateau_window`` (the maps' plateau rule), ``figdir``

    Returns
    -------
    :class:`Claim` 1, 2, 3 (and the init comparison when both inits are given), then 1b and 1c with the maps
    """
    from ._shallow_map import map_claims

    maps = {k: v for k, v in stores.items() if k.endswith(("-alpha-map", "-alpha-map-fine"))}
    stores = {k: v for k, v in stores.items() if k not in maps}
    mono, var, slopes, by_init, figs = _variants(stores, opts)
    out = [mono, var, slopes]
    init = _init_claim(by_init)
    if init is not None:
        out.append(init)
    if figs:  # the study's figures follow its last table
        out[-1] = replace(out[-1], figures=tuple(figs))
    return out + (map_claims(stores, maps, opts) if maps else [])


def _variants(stores: Mapping, opts: Mapping):
    mono_rows, var_rows, slope_rows, by_init, figs = [], [], [], {}, []
    acc_ok, var_ok, slope_in, slope0_in, rising, steps_done, paper_bias = [], [], [], [], [], {}, False
    var_at_init: list[bool] = []
    for name, path in stores.items():
        ds = open_ensemble(path).load()
        model = sweep_config(ds)["model"]
        paper_bias |= bool(model.get("bias")) and model.get("init") == "paper"
        gammas, widths = ds.gamma.values, ds.width.values
        if opts.get("figdir"):
            figs.append((f"{name} accuracy", save_figure(_curves(ds), opts, f"shallow-{name}-accuracy.png")))
        k0 = round(0.8 * (ds.sizes["time"] - 1))  # is gamma = 1 still learning over the last fifth of training?
        final = ds.accuracy.isel(time=-1)
        tr = trend(final).compute()
        late = ds.accuracy.sel(gamma=gammas[-1])
        gain = paired_difference(late.isel(time=-1), late.isel(time=k0)).compute()
        for w in widths:
            t, g = tr.sel(width=w), gain.sel(width=w)
            acc_ok.append(bool(t.increasing))
            rising.append(bool(g.mean_lo > 0))
            means = " / ".join(f"{x:.3f}" for x in final.sel(width=w).mean("seed").values)
            late_gain = (
                f"{interval(g['mean'], g.mean_lo, g.mean_hi)} (epoch {float(ds.time[k0]):g} -> {float(ds.time[-1]):g})"
            )
            mono_rows.append(
                (name, str(int(w)), means, f"{float(t.spearman):+.2f}", interval(t.rise, t.rise_lo, t.rise_hi),
                 str(int(t.drops)), "yes" if t.increasing else "no", late_gain)
            )  # fmt: skip
        steps_done[name] = int(ds.step.max())
        both = bias_variance(ds).isel(time=[0, -1]).compute()
        bv = both.isel(time=-1)
        for w in widths:
            v = bv.variance.sel(width=w).values
            var_ok.append(bool(np.all(np.diff(v) < 0)))
            # falling in gamma already at t = 0 (the init law's N^(1 - 2 gamma)): true by construction
            var_at_init.append(bool(np.all(np.diff(both.variance.sel(width=w).isel(time=0).values) < 0)))
            rho = scipy.stats.spearmanr(gammas, v).statistic
            var_rows.append(
                (name, str(int(w)), " / ".join(f"{x:.3g}" for x in v), f"{rho:+.2f}", "yes" if var_ok[-1] else "no")
            )
        if len(widths) >= 2:
            by_init[name] = _rates(ds, name, slope_rows, slope_in, slope0_in)
        if opts.get("figdir"):
            figs.append((f"{name} variance", save_figure(_variance(bv, name), opts, f"shallow-{name}-variance.png")))
    acc, sl, sl0 = verdict(acc_ok), verdict(slope_in), verdict(slope0_in)
    var = verdict(var_ok, by_construction=var_at_init)
    c0 = (
        (
            "; the paper init's output bias c0 ~ U(-1/sqrt(N), 1/sqrt(N)) (PyTorch's default for a layer of fan-in N) "
            "adds 1/(3N) whatever gamma is, which steepens the t = 0 slope by as much as the init table below "
            "measures: not a small correction where that term is comparable with the hidden units'"
        )
        if paper_bias
        else ""
    )
    mono = Claim(
        "Verdict 1",
        "does accuracy improve monotonically as gamma -> 1?",
        acc,
        f"in {acc.agree} of {acc.cases} (variant, N) cases the final test accuracy has no significant drop "
        "between neighbouring gammas (paired over seeds, 95% CI entirely below 0) and acc(gamma = 1) - "
        "acc(gamma = 0.5) is significantly positive. Where it fails, look at the last column: gamma = 1's accuracy "
        f"is still rising significantly at the end of training in {sum(rising)} of {len(rising)} cases, i.e. these "
        "runs stop before the long-time regime the paper's claim is about. Optimizer steps per run here: "
        + ", ".join(f"{k} {v:,}" for k, v in steps_done.items())
        + " (the paper: 500 MNIST epochs of 3,000 steps, 1.5 million).",
        columns=(
            "variant",
            "N",
            "test accuracy at the last epoch, gamma ascending",
            "Spearman rho",
            "acc(1) - acc(0.5), 95% CI",
            "significant drops",
            "monotone",
            "gamma = 1: accuracy gain over the last fifth, 95% CI",
        ),
        rows=tuple(mono_rows),
        joiner=" overall: ",
    )
    variance = Claim(
        "Verdict 2",
        "does the variance fall as gamma -> 1?",
        var,
        f"strictly falling in gamma at the last epoch in {var.agree + var.by_construction} of "
        f"{var.cases + var.by_construction} (variant, N) cases (seed variance of the logits, pooled over the test "
        f"grid); in {var.by_construction} of them it already falls at t = 0, where the init law gives N^(1 - 2 gamma): "
        "true by construction, no evidence about training.",
        columns=("variant", "N", "variance, gamma ascending", "Spearman rho", "falls"),
        rows=tuple(var_rows),
    )
    slopes = Claim(
        "Verdict 3",
        "does it fall with N with slope 1 - 2 gamma?",
        sl,
        f"theory inside the 95% CI of the fitted log-log slope in {sl.agree} of {sl.cases} (variant, gamma) cases, at "
        "the largest scaled time t = k/N that every width of the variant reaches (`fit_rate(at='common')`: the "
        "theory's N-scaling is at fixed t; the same epoch is a smaller t at a larger N), or at the last epoch where "
        "the widths share no t > 0. At t = 0 the hidden units contribute exactly N^(1 - 2 gamma) Var(c s(w.x + b)) "
        f"to the variance{c0}. The t = 0 column contains 1 - 2 gamma in {sl0.agree} of {sl0.cases} cases; a "
        "variant's gammas share their initial weights (common random numbers), so its t = 0 slopes are one draw "
        "shifted by -2 (gamma - 0.5) and agree or miss together.",
        columns=(
            "variant",
            "gamma",
            "slope at t = 0",
            "slope at a common scaled time",
            "slope at the last epoch",
            "theory 1 - 2 gamma",
            "inside (common t)",
        ),
        rows=tuple(slope_rows),
    )
    return mono, variance, slopes, by_init, figs


def _rates(ds, name: str, slope_rows: list, slope_in: list, slope0_in: list):
    """Fit the variance's slope in N at t = 0 and at the largest common scaled time (or the last epoch)."""
    rate0 = fit_rate(ds, at=0.0).isel(time=0).compute()
    last = fit_rate(ds.isel(time=[-1]), at="record").isel(time=0).compute()
    t_common = float(common_times(ds)[-1])
    common = fit_rate(ds, at="common").isel(time=0).compute() if t_common > 0 else None
    for g in ds.gamma.values:
        r = (common if common is not None else last).sel(gamma=g)
        slope_in.append(bool(covers(r)))
        slope0_in.append(bool(covers(rate0.sel(gamma=g))))
        at_t = f"{_slope(r)} (t = {t_common:g})" if common is not None else "no common t > 0"
        slope_rows.append(
            (name, f"{g:g}", _slope(rate0.sel(gamma=g)), at_t, _slope(last.sel(gamma=g)), f"{float(r.theory):.2f}",
             "yes" if slope_in[-1] else "no")
        )  # fmt: skip
    return rate0, common if common is not None else last


def _init_claim(by_init: Mapping) -> Claim | None:
    """Compare the paper init with the theory init on the same data and loss: the init's part in the variance law."""
    rows, c0_miss, shift = [], [], {}
    for name in by_init:
        theory_name = f"{name}-theory-init"
        if theory_name not in by_init:
            continue
        (p0, pc), (q0, qc) = by_init[name], by_init[theory_name]
        shift[name] = float((p0.slope - q0.slope).mean())
        for g in p0.gamma.values:
            c0_miss.append((not bool(covers(p0.sel(gamma=g)))) and bool(covers(q0.sel(gamma=g))))
            rows.append(
                (name, f"{g:g}", _slope(p0.sel(gamma=g)), _slope(q0.sel(gamma=g)), _slope(pc.sel(gamma=g)),
                 _slope(qc.sel(gamma=g)), f"{1 - 2 * g:.2f}")
            )  # fmt: skip
    if not rows:
        return None
    return Claim(
        "",
        "The init's part in the variance law.",
        None,
        "The same runs with the theory init (W1 ~ N(0, 1/d), C ~ N(0, 1), no biases at init: a mean-zero output) "
        "beside the paper init (C ~ U(0, 1) and PyTorch's default biases, whose output bias c0 adds 1/(3N) to the "
        "variance whatever gamma is). At t = 0 the paper init's slope misses 1 - 2 gamma where the theory init's "
        f"covers it in {sum(c0_miss)} of {len(c0_miss)} gammas, and differs on average (paper minus theory, over "
        "gamma; negative: the paper init's is steeper) by "
        + ", ".join(f"{v:+.2f} ({k})" for k, v in shift.items())
        + ". The slopes at a common scaled time (or the last epoch) follow.",
        columns=(
            "variant",
            "gamma",
            "t = 0, paper init",
            "t = 0, theory init",
            "later, paper init",
            "later, theory init",
            "1 - 2 gamma",
        ),
        rows=tuple(rows),
    )


def _curves(ds):
    from .. import plot

    fig, axes = plot._subplots(2, ds.sizes["width"], (3 * ds.sizes["width"], 5.6))
    plot.curves(ds, "accuracy", ax=axes[0])
    plot.curves(ds, "train_accuracy", ax=axes[1])
    return fig


def _variance(bv, name: str):
    from .. import plot

    fig = plot.variance_vs_width(bv)
    fig.axes[0].set_title(f"{name}: variance at the last epoch")
    return fig
