"""The deep 1/N^gamma MLP (Yu & Spiliopoulos, deep): which layer's normalization matters most.

Claims for an MLP with three hidden layers normalized by N_i^(-gamma_i): test accuracy is more sensitive to the
outer gamma_3 than to the inner ones, and so is the output variance; all gamma_i = 1 is best. Stores: one per
(gamma_1, gamma_2) configuration sweeping gamma_3 (and N_3), and optionally ``*alpha-search*`` stores over the
rate constant (see :mod:`ensemble_stats.claims._deep_search`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from .._assess import anova_effects, covers, interval, seed_bootstrap, verdict
from .._fit import fit_rate
from .._select import common_times
from .._stats import bias_variance, seed_mean
from ..store import open_ensemble, sweep_config
from ._claim import Claim, save_figure

__all__ = ["claims", "outer_sensitivity"]

FACTORS = ("g1", "g2", "g3")


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide the deep study's claims.

    Parameters
    ----------
    stores : ``{name: path}``; names containing ``alpha-search`` are the rate searches
    opts : ``bootstrap`` (resamples, default 200), ``learned_accuracy`` (default 0.5), ``layer_rates``
        (``(widths, gammas, layer_alpha) -> rates of the layers``, for the search's rate-spread column),
        ``figdir``

    Returns
    -------
    the sensitivity claims at the paper's alpha = 1, then those of the alpha search when its stores are given
    """
    from ._deep_search import alpha_search

    base = {k: v for k, v in stores.items() if "alpha-search" not in k}
    search = {k: v for k, v in stores.items() if "alpha-search" in k}
    return _at_alpha_one(base, opts) + (alpha_search(base, search, opts) if search else [])


def outer_sensitivity(acc: pd.DataFrame, n_boot: int) -> tuple[dict, float, float, np.ndarray]:
    """Measure how much more the accuracy depends on gamma_3 than on the inner gammas.

    Returns the partial eta^2 of each gamma_i (seed as a block factor) and the seed-bootstrap interval of
    eta^2(gamma_3) minus the larger inner one: (effects, lo, hi, the resampled differences).
    """
    factors = [*FACTORS, "seed"]

    def stat(frame: pd.DataFrame) -> float:
        e = anova_effects(frame, "acc", factors)
        return e["g3"] - max(e["g1"], e["g2"])

    boot = seed_bootstrap(stat, acc, n_boot=n_boot)
    return anova_effects(acc, "acc", factors), float(boot.estimate_lo), float(boot.estimate_hi), boot.replicates.values


def _at_alpha_one(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    rows, var_rows, slope_rows, train_loss = [], [], [], []
    for path in stores.values():
        ds = open_ensemble(path).load()
        g1, g2 = (float(v) for v in sweep_config(ds)["model"]["inner_gammas"][:2])
        w0 = int(ds.width.values[0])
        final = ds.isel(time=-1)
        train_loss.append(float(final.train_loss.sel(width=w0).median()))
        bv = bias_variance(ds).isel(time=-1)
        for g3 in ds.gamma.values:
            accs = final.accuracy.sel(gamma=g3, width=w0).values
            rows += [
                dict(g1=g1, g2=g2, g3=float(g3), seed=int(s), acc=float(a))
                for s, a in zip(ds.seed.values, accs, strict=True)
            ]
            var_rows.append(dict(g1=g1, g2=g2, g3=float(g3), logvar=float(np.log(bv.variance.sel(gamma=g3, width=w0)))))
        if ds.sizes["width"] >= 2:
            slope_rows += _slopes(ds, g1, g2)
    labels = ds.target.argmax("output").values  # every variant evaluates on the same test grid
    n_classes = ds.sizes["output"]
    chance = float(np.bincount(labels, minlength=n_classes).max() / labels.size)  # always the commonest class
    acc, var = pd.DataFrame(rows).dropna(), pd.DataFrame(var_rows)
    e_acc, lo, hi, diffs = outer_sensitivity(acc, int(opts.get("bootstrap", 200)))
    e_var = anova_effects(var, "logvar", list(FACTORS))
    # a sensitivity comparison means something only if some configuration learned: its accuracy CI above chance
    cfg = {k: seed_mean(xr.DataArray(g.acc.values, dims="seed")) for k, g in acc.groupby(list(FACTORS))}
    learned = sorted(k for k, m in cfg.items() if float(m.mean_lo) > chance)
    outer_acc = verdict(bool(lo > 0) if learned else None)
    outer_var = verdict(e_var["g3"] > max(e_var["g1"], e_var["g2"]) and e_var["p_g3"] < 0.05)
    best = acc.groupby(list(FACTORS)).acc.mean().sort_values(ascending=False)
    means = acc.groupby(list(FACTORS)).acc.agg(["mean", "std", "count"]).reset_index()
    effects = tuple(
        (f"gamma_{k + 1}", f"{e_acc[f]:.3f}", f"{e_acc['p_' + f]:.2g}", f"{e_var[f]:.3f}", f"{e_var['p_' + f]:.2g}")
        for k, f in enumerate(FACTORS)
    )
    figures = ()
    if opts.get("figdir"):
        figures = (("deep main effects", save_figure(_figure(acc, var, w0), opts, "deep-main-effects.png")),)
    n_in = sum(r[-1] == "yes" for r in slope_rows)
    sensitivity = xr.Dataset(
        {
            "difference": ((), e_acc["g3"] - max(e_acc["g1"], e_acc["g2"])),
            "difference_lo": ((), lo),
            "difference_hi": ((), hi),
        }
    )
    learned_text = (
        f"{len(learned)} of {len(cfg)} configurations learned (mean test accuracy's 95% CI above the commonest-class "
        f"rate {chance:.3f})."
        if learned
        else f"But no configuration learned: every mean test accuracy's 95% CI reaches down to the commonest-class "
        f"rate {chance:.3f}, and the median final training loss is {min(train_loss):.3f} to {max(train_loss):.3f} "
        f"across configurations, log {n_classes} = {np.log(n_classes):.3f} being a prediction that ignores the "
        "input. The effects above are differences between near-constant predictors, so the verdict is "
        "inconclusive: this budget is far from the paper's 1500 MNIST epochs (4.5 million steps), and under "
        "the paper's rates the inner layers move the output only at relative order 1/N (docs/theory.md §2)."
    )
    return [
        Claim(
            "Verdict",
            "is test accuracy more sensitive to the outer gamma_3 than to the inner ones?",
            outer_acc,
            f"partial eta^2 of gamma_3 minus the larger inner one = {e_acc['g3'] - max(e_acc['g1'], e_acc['g2']):+.3f}, "
            f"95% seed-bootstrap CI [{lo:+.3f}, {hi:+.3f}] ({len(diffs)} resamples). " + learned_text,
            cases=sensitivity,
        ),
        Claim(
            "Verdict",
            "is the output variance more sensitive to gamma_3?",
            outer_var,
            f"partial eta^2 {e_var['g3']:.3f} for gamma_3 vs {e_var['g1']:.3f} (gamma_1) and {e_var['g2']:.3f} "
            "(gamma_2)."
            + (
                ""
                if learned
                else " With no configuration trained, the outputs are near their initial values, so this "
                "mostly measures the initialization's N_3^(1 - 2 gamma_3) scaling rather than anything learned."
            ),
            cases=xr.Dataset({f"eta2_{f}": ((), e_var[f]) for f in FACTORS}),
        ),
        Claim(
            "",
            "Is all gamma_i = 1 best?",
            None,
            f"The best mean final test accuracy is at (gamma_1, gamma_2, gamma_3) = "
            f"({', '.join(f'{float(v):g}' for v in best.index[0])}) ({best.iloc[0]:.3f}); all ones: "
            f"{best.get((1.0, 1.0, 1.0), float('nan')):.3f}.",
            notes=f"Type-II ANOVA (`es.anova_effects`: statsmodels `ols` + `anova_lm`), additive model, N_3 = {w0}, "
            "last epoch. Accuracy: one row per (gamma_1, gamma_2, gamma_3, seed), seed as a block factor; variance: "
            "one row per configuration, response log of the grid-mean seed variance of the logits.",
            columns=("factor", "accuracy: partial eta^2", "p", "log variance: partial eta^2", "p"),
            rows=effects,
            figures=figures,
        ),
        Claim(
            "",
            "",
            None,
            "Slope of log Var vs log N_3 at the largest scaled time t = k/N_3 every N_3 reaches (docs/theory.md §9, "
            "item 12: about 1 - 2 gamma_3 and insensitive to gamma_1, gamma_2, an unverified reconstruction): "
            f"1 - 2 gamma_3 inside the 95% CI in {n_in} of {len(slope_rows)} configurations.",
            columns=("gamma_1", "gamma_2", "gamma_3", "at", "slope, 95% CI", "1 - 2 gamma_3", "inside"),
            rows=tuple(slope_rows),
        ),
        Claim(
            "",
            "",
            None,
            "Mean final test accuracy per configuration (8 seeds unless a seed diverged):",
            columns=("gamma_1", "gamma_2", "gamma_3", "mean", "sd", "seeds"),
            rows=tuple(
                (f"{r.g1:g}", f"{r.g2:g}", f"{r.g3:g}", f"{r['mean']:.3f}", f"{r['std']:.3f}", str(int(r["count"])))
                for _, r in means.iterrows()
            ),
        ),
    ]


def _slopes(ds: xr.Dataset, g1: float, g2: float) -> list[tuple[str, ...]]:
    """Fit the variance's slope in N_3 per gamma_3, at the largest scaled time every width reaches."""
    t_common = float(common_times(ds)[-1])  # fixed t = k/N_3, as the theory's N-scaling
    rate = fit_rate(ds, at="common") if t_common > 0 else fit_rate(ds.isel(time=[-1]), at="record")
    rate = rate.isel(time=-1).compute()
    out = []
    for g3 in ds.gamma.values:
        r = rate.sel(gamma=g3)
        at = f"t = {t_common:g}" if t_common > 0 else "last epoch"
        inside = "yes" if covers(r) else "no"
        slope = interval(r.slope, r.slope_lo, r.slope_hi)
        out.append((f"{g1:g}", f"{g2:g}", f"{g3:g}", at, slope, f"{float(r.theory):.2f}", inside))
    return out


def _figure(acc: pd.DataFrame, var: pd.DataFrame, w0: int):
    from .. import plot

    return plot.main_effects(
        [(acc, "acc", "final test accuracy"), (var, "logvar", "log seed variance")],
        list(FACTORS),
        labels=[f"gamma_{k + 1} (others averaged)" for k in range(3)],
        xlabel="gamma_i",
        title=f"Main effects at N_3 = {w0}",
    )
