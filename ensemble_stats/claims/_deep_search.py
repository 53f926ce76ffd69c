"""The deep study's search over the rate constant alpha.

Where each configuration learns, and whether the outer-layer sensitivity holds among the configurations that
learned (each at its best alpha).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from .. import schema
from .._assess import interval, verdict
from ..store import open_ensemble, sweep_config
from ._claim import Claim
from ._deep_diagnosis import diagnosis, learned_summary
from .deep import outer_sensitivity


def alpha_search(base: Mapping[str, object], search: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide where each configuration learns, and the outer-layer sensitivity among those that learned.

    Per configuration: the final test accuracy at each alpha (the paper's alpha = 1 from the base stores), and the
    alpha at which it learns.
    """
    threshold = float(opts.get("learned_accuracy", 0.5))
    layer_rates = opts.get("layer_rates")
    runs = _runs({**base, **search}, threshold)
    alphas = sorted({r["alpha"] for r in runs})
    table, best, tops = [], [], []
    keys = sorted({(r["rule"] != "paper", r["g1"], r["g2"], r["g3"]) for r in runs})
    for slowed, g1, g2, g3 in keys:
        mine = {
            r["alpha"]: r for r in runs if (r["rule"] != "paper", r["g1"], r["g2"], r["g3"]) == (slowed, g1, g2, g3)
        }
        cells = []
        for a in alphas:
            r = mine.get(a)
            if r is None:
                cells.append("")
            elif r["diverged"]:
                cells.append(f"diverged ({r['diverged']} of {len(r['acc'])})")
            elif np.ptp(r["acc"]) == 0:  # every seed the same (a constant prediction): no interval
                cells.append(f"{r['mean']:.3f} (every seed)")
            else:
                cells.append(
                    ("**" if r["learned"] else "")
                    + interval(r["mean"], r["lo"], r["hi"])
                    + ("**" if r["learned"] else "")
                )
        ok = [r for r in mine.values() if r["diverged"] == 0 and np.isfinite(r["mean"])]
        top = max([r for r in ok if r["learned"]] or ok, key=lambda r: r["mean"]) if ok else None
        learns = [a for a in sorted(mine) if mine[a]["learned"]]
        first = next(iter(mine.values()))
        layers = (
            layer_rates((*first["inner"], first["width"]), (g1, g2, g3), first["layer_alpha"])
            if layer_rates
            else [np.nan]
        )
        if learns:
            why = ""
        else:
            diverges = [a for a in sorted(mine) if mine[a]["diverged"]]
            constant = [a for a in sorted(mine) if not mine[a]["diverged"] and np.ptp(mine[a]["acc"]) == 0]
            reasons = [f"best {top['mean']:.3f} (alpha = {top['alpha']:g})"] if top is not None else []
            if constant:
                reasons.append(f"one class at alpha = {', '.join(f'{a:g}' for a in constant)}")
            if diverges:
                reasons.append(f"diverges from alpha = {diverges[0]:g}")
            why = "; ".join(reasons)
        table.append(
            [
                f"{g1:g}",
                f"{g2:g}",
                f"{g3:g}",
                first["rule"],
                f"{max(layers) / min(layers):.0e}",
                *cells,
                f"{learns[0]:g}" if learns else "none",
                why,
            ]
        )
        if top is not None and top["learned"]:
            best.append(top)
        if top is not None:
            tops.append(top)
    rules = sorted({r["rule"] for r in runs}, key=lambda r: (r != "paper", r))
    n_cfg = {rule: len({(r["g1"], r["g2"], r["g3"]) for r in runs if r["rule"] == rule}) for rule in rules}
    n_learned = {rule: sum(r["rule"] == rule for r in best) for rule in rules}
    why = diagnosis(search, threshold)
    observation = Claim(
        "",
        "The alpha search",
        None,
        f"(N_3 = {runs[0]['width']}; the same {len(runs[0]['acc'])} seeds at every alpha). Two "
        "rate rules: the paper's per-layer rates times alpha (`paper`; alpha = 1 is the N_3 = 100 slice of the runs "
        "above), and every layer at the readout's rate times alpha (`equal`: `layer_alpha` = rate(C) / rate(W_l), "
        "one per layer group; under the paper's rule the layers' rates differ by up to the factor in the fifth "
        "column, so no single alpha suits them all). A configuration *learns* at an alpha when no seed diverged "
        f"and its mean final test accuracy's 95% CI lies above {threshold:g} (bold). Learned at some alpha: "
        + "; ".join(f"{n_learned[rule]} of {n_cfg[rule]} configurations under `{rule}` rates" for rule in rules)
        + ". 'one class': every seed predicts the same class (the sigmoid units saturate).",
        columns=(
            "gamma_1",
            "gamma_2",
            "gamma_3",
            "rates",
            "fastest / slowest layer rate",
            *(f"alpha = {a:g}" for a in alphas),
            "learns from alpha",
            "if not, why",
        ),
        rows=tuple(tuple(str(c) for c in row) for row in table),
        postscript=_none_learned(runs, measured=why is not None),
    )
    return [
        observation,
        *([why] if why is not None else []),
        *(_rule_claim(rule, [r for r in best if r["rule"] == rule], opts) for rule in rules),
        *(
            _rule_claim(rule, [r for r in tops if r["rule"] == rule], opts, balanced=True, of=n_cfg[rule])
            for rule in rules
        ),
    ]


def _runs(stores: Mapping[str, object], threshold: float) -> list[dict]:
    """One entry per (configuration, alpha, rate rule): per-seed final accuracies, their mean and interval."""
    runs = []
    for name, path in stores.items():
        ds = open_ensemble(path)
        cfg = sweep_config(ds)
        g1, g2 = (float(v) for v in cfg["model"]["inner_gammas"][:2])
        layer_alpha = cfg["optimizer"].get("layer_alpha") or {}
        rule = "equal" if name.endswith("equal-rates") else ", ".join(f"{k} x {v:g}" for k, v in layer_alpha.items())
        rule = rule or "paper"
        w0 = int(min(ds.width.values))
        if schema.ALPHA not in ds.dims:
            ds = ds.expand_dims({schema.ALPHA: [float(cfg["optimizer"].get("alpha", 1.0))]})
        final = ds.isel(time=-1).sel(width=w0).load()
        for g3 in final.gamma.values:
            for a in final[schema.ALPHA].values:
                f = final.sel(gamma=g3, alpha=a)
                runs.append(
                    dict(
                        g1=g1, g2=g2, g3=float(g3), alpha=float(a), rule=rule, width=w0,
                        inner=tuple(cfg["model"]["inner_widths"]), layer_alpha=cfg["optimizer"].get("layer_alpha"),
                        acc=f.accuracy.values.astype(float), diverged=int((f.diverged_step >= 0).sum()),
                    )
                )  # fmt: skip
    for r in runs:
        r.update(learned_summary(r["acc"], r["diverged"], threshold))
    return runs


def _none_learned(runs: list[dict], measured: bool = False) -> str:
    """Why no configuration with some gamma_i = 1 learned (empty when one did)."""
    ones = [r for r in runs if 1.0 in (r["g1"], r["g2"], r["g3"])]
    outer_only = [r for r in ones if r["g1"] < 1 and r["g2"] < 1]  # gamma_3 = 1 alone
    top_outer = max((r for r in outer_only if np.isfinite(r["mean"])), key=lambda r: r["mean"], default=None)
    if not ones or any(r["learned"] for r in ones):
        return ""
    n_const = len({(r["g1"], r["g2"], r["g3"], r["rule"]) for r in ones if not r["diverged"] and np.ptp(r["acc"]) == 0})
    return (
        f"No configuration with some gamma_i = 1 learned, under either rule ({n_const} of "
        f"{len({(r['g1'], r['g2'], r['g3'], r['rule']) for r in ones})} predict one class for every image at some "
        "alpha). The expected reason where gamma_1 or gamma_2 = 1: such a layer outputs "
        "N^-1 sum_j w_j s(.), an average of N non-centred sigmoid units, whose input-dependent part is of relative "
        "order N^(-1/2), so the layer after it sees nearly the same input for every image, whatever the rates"
        + (" (measured: the table below)" if measured else " (not measured: no store recorded the layer diagnostics)")
        + ". "
        "With gamma_3 = 1 alone the best any run reached is "
        + (
            f"{top_outer['mean']:.3f} (alpha = {top_outer['alpha']:g}); they diverge from alpha = "
            f"{min((r['alpha'] for r in outer_only if r['diverged']), default=np.inf):g} on, so a stable rate "
            "that trains them, if any, lies between the grid's points."
            if top_outer is not None
            else "nothing (every run diverged)."
        )
    )


def _rule_claim(rule: str, learners: list[dict], opts: Mapping, balanced: bool = False, of: int = 0) -> Claim:
    """Decide, among the configurations that learned under one rate rule, whether accuracy depends most on gamma_3.

    Each configuration is taken at its best alpha. ``balanced``: every configuration of the rule (learned or
    not) at its best stable alpha, the same budget: a full factorial design when all ``of`` configurations have
    a stable alpha.
    """
    label = f"Verdict (`{rule}` rates{', balanced' if balanced else ''})"
    question = (
        "every configuration at its own best stable alpha and the same budget, is test accuracy more "
        if balanced
        else "among the configurations that learned, is test accuracy more "
    )
    question += "sensitive to gamma_3?"
    if len(learners) < 4 or len({r["g3"] for r in learners}) < 2:
        return Claim(
            label,
            question,
            verdict(None),
            f"{len(learners)} configurations{'' if balanced else ' learned'}, too few (or one gamma_3 only) for the "
            "comparison.",
        )
    acc = pd.DataFrame(
        [dict(g1=r["g1"], g2=r["g2"], g3=r["g3"], seed=i, acc=a) for r in learners for i, a in enumerate(r["acc"])]
    )
    e_acc, lo, hi, diffs = outer_sensitivity(acc, int(opts.get("bootstrap", 200)))
    v = verdict(True if lo > 0 else False if hi < 0 else None)
    top = max(learners, key=lambda r: r["mean"])
    ones = next((r for r in learners if (r["g1"], r["g2"], r["g3"]) == (1.0, 1.0, 1.0)), None)
    return Claim(
        label,
        question,
        v,
        (
            (
                f"all {len(learners)} configurations (a balanced design), each at its best stable alpha"
                if len(learners) >= of
                else f"{len(learners)} of {of} configurations, each at its best stable alpha ({of - len(learners)} "
                "diverged at every alpha: the design is not balanced)"
            )
            if balanced
            else f"the {len(learners)} that learned, each at its best alpha"
        )
        + "; partial eta^2 of gamma_3 minus the larger inner "
        f"one = {e_acc['g3'] - max(e_acc['g1'], e_acc['g2']):+.3f}, 95% seed-bootstrap CI [{lo:+.3f}, {hi:+.3f}] "
        f"({len(diffs)} resamples); partial eta^2: gamma_1 {e_acc['g1']:.3f}, gamma_2 {e_acc['g2']:.3f}, gamma_3 "
        f"{e_acc['g3']:.3f}"
        + ("" if balanced else " (an unbalanced design when some configurations did not learn)")
        + ". With alpha tuned per "
        "configuration this asks how much each gamma_i limits the accuracy a tuned rate reaches. The best: "
        f"({top['g1']:g}, {top['g2']:g}, {top['g3']:g}) at alpha = {top['alpha']:g}, {top['mean']:.3f}; all "
        "gamma_i = 1 "
        + (f"reached {ones['mean']:.3f} (alpha = {ones['alpha']:g})." if ones else "did not learn at any alpha."),
        cases=xr.Dataset({"difference_lo": ((), lo), "difference_hi": ((), hi)}),
    )
