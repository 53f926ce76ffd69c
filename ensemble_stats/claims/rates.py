"""The learning-rate finding: the shallow net's accuracy against gamma at each gamma's best stable rate.

Claim (Yu & Spiliopoulos, shallow): test accuracy improves as gamma -> 1. Judged both ways on (gamma, alpha) maps:
at equal alpha (Verdict 1b) and with alpha tuned per gamma (Verdict 1c), each run group where its training
accuracy has plateaued (:mod:`ensemble_stats.claims._shallow_map`); and, per gamma, its stable edge (the largest
alpha at which no seed diverged) with the accuracy at its best stable alpha. Stores: ``<data>-alpha-map``, each
one data set over gamma, N and an ``alpha`` grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import schema
from .._assess import interval, trend, verdict
from .._stats import seed_mean
from ..store import open_ensemble, sweep_config
from ._claim import Claim
from ._shallow_map import at_plateau, map_claims

__all__ = ["claims"]


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide the claim at equal and at tuned alpha, and tabulate each gamma's best stable rate.

    Parameters
    ----------
    stores : ``{"<data>-alpha-map": path}``
    opts : ``plateau_tol``, ``plateau_window`` (the plateau rule), ``figdir``

    Returns
    -------
    :class:`Claim` 1b (equal alpha), 1c (alpha tuned per gamma, at the plateau), 1d (tuned, after the fixed
    budget) and an observation: per (variant, N, gamma) the
    stable edge and the best stable alpha's plateau accuracy; its cases (dim ``case``) hold those numbers
    """
    tol, window = float(opts.get("plateau_tol", 0.01)), float(opts.get("plateau_window", 0.2))
    rows, cases, budget_rows, budget = [], [], [], []
    for name, path in stores.items():
        ds = open_ensemble(path).load()
        _, ok, acc, last = at_plateau(ds, tol, window)
        for w in ds.width.values:  # the paper's protocol: every gamma after the same number of epochs
            row, rises = _at_budget(ds, last, name, int(w))
            budget_rows.append(row)
            budget.append((sweep_config(ds)["data"]["name"], rises))
        alphas = ds[schema.ALPHA].values
        stable = (ds.diverged_step < 0).all(schema.SEED)
        for w in ds.width.values:
            for g in ds.gamma.values:
                here = stable.sel(width=w, gamma=g).values
                edge = float(alphas[here].max()) if here.any() else np.nan
                diverging = alphas[~here]
                above = diverging[diverging > edge] if np.isfinite(edge) else diverging
                best_i = int(last.sel(width=w, gamma=g).fillna(-1).argmax(schema.ALPHA)) if here.any() else None
                case = {"variant": name, "width": int(w), "gamma": float(g), "edge": edge}
                if best_i is None:
                    rows.append((name, str(int(w)), f"{g:g}", "none stable", "-", "-", "-", "-"))
                    cases.append({**case, "best_alpha": np.nan, "accuracy": np.nan, "lo": np.nan, "hi": np.nan})
                    continue
                m = seed_mean(acc.sel(width=w, gamma=g).isel({schema.ALPHA: best_i}))
                reached = bool(ok.sel(width=w, gamma=g).isel({schema.ALPHA: best_i}))
                rows.append(
                    (
                        name,
                        str(int(w)),
                        f"{g:g}",
                        f"{edge:g}" + (f" (diverges from {float(above.min()):g})" if above.size else " (grid's top)"),
                        f"{float(alphas[best_i]):g}",
                        interval(m["mean"], m.mean_lo, m.mean_hi),
                        "yes" if reached else "no",
                        f"{float(last.sel(width=w, gamma=g).isel({schema.ALPHA: best_i})):.3f}",
                    )
                )
                cases.append(
                    {
                        **case,
                        "best_alpha": float(alphas[best_i]),
                        "accuracy": float(m["mean"]),
                        "lo": float(m.mean_lo),
                        "hi": float(m.mean_hi),
                    }
                )
    table = xr.Dataset(
        {k: ("case", [c[k] for c in cases]) for k in ("width", "gamma", "edge", "best_alpha", "accuracy", "lo", "hi")},
        coords={"variant": ("case", [c["variant"] for c in cases])},
    )
    table["edge"].attrs["long_name"] = "largest alpha with no diverged seed"
    table["accuracy"].attrs["long_name"] = "test accuracy at the plateau, best stable alpha"
    observation = Claim(
        "",
        "Each gamma at its best stable rate.",
        None,
        "Per (variant, N, gamma): the stable edge (the largest alpha of the grid at which no seed diverged; the "
        "grid's top when none did), the best stable alpha (the best final test accuracy among the stable ones: "
        "chosen on the test set, as a tuned baseline is) and its test accuracy at the plateau of its training "
        "accuracy (seed mean, 95% Student-t interval; 'plateaued' says whether the plateau was reached, else the "
        "last epoch's).",
        cases=table,
        columns=(
            "variant", "N", "gamma", "stable edge (alpha)", "best stable alpha", "test accuracy at the plateau",
            "plateaued", "final test accuracy",
        ),
        rows=tuple(rows),
    )  # fmt: skip
    v = verdict([x for _, x in budget])
    by_data = {d: verdict([x for dd, x in budget if dd == d]) for d in dict.fromkeys(d for d, _ in budget)}
    at_budget = Claim(
        "Verdict 1d",
        "with alpha tuned per gamma, judged after the same number of epochs (the paper's fixed budget), does test "
        "accuracy improve as gamma -> 1?",
        v,
        f"({v.agree} of {v.cases} (variant, N) cases); by data set: "
        + "; ".join(f"{d} {x.markdown()} ({x.agree} of {x.cases})" for d, x in by_data.items())
        + ". Each gamma at its best stable alpha (as in the table below), its test accuracy at the last epoch "
        "whether or not training has plateaued: a statement about this budget, not about the nets' limit; "
        "monotone as in Verdict 1b (`es.trend`, paired over seeds).",
        joiner=" ",
        cases=xr.Dataset(
            {"increasing": ("case", [np.nan if x is None else float(x) for _, x in budget])},
            coords={"data": ("case", [d for d, _ in budget])},
        ),
        columns=(
            "variant", "N", "best stable alpha, gamma ascending", "final test accuracy", "acc(1) - acc(1/2), 95% CI",
            "drops", "monotone",
        ),
        rows=tuple(budget_rows),
    )  # fmt: skip
    return [*map_claims({}, stores, opts, prefix="rates"), at_budget, observation]


def _at_budget(ds: xr.Dataset, last: xr.DataArray, name: str, width: int) -> tuple[tuple[str, ...], bool | None]:
    """One (variant, N) case of Verdict 1d: each gamma at its best stable alpha, at the last epoch."""
    here = last.sel(width=width)  # (alpha, gamma), NaN where a seed diverged
    if bool(here.isnull().all(schema.ALPHA).any()):  # a gamma with no stable alpha: no tuned rate to judge
        return (name, str(width), "-", "-", "a gamma has no stable alpha", "-", "undecided"), None
    pick = here.fillna(-1).argmax(schema.ALPHA)
    final = ds.accuracy.isel(time=-1).sel(width=width).isel({schema.ALPHA: pick}).drop_vars(schema.ALPHA)
    tr = trend(final).compute()
    rises = bool(tr.increasing)
    return (
        name,
        str(width),
        " / ".join(f"{float(ds[schema.ALPHA][i]):g}" for i in pick.values),
        " / ".join(f"{float(x):.3f}" for x in final.mean(schema.SEED).values),
        interval(tr.rise, tr.rise_lo, tr.rise_hi),
        str(int(tr.drops)),
        "yes" if rises else "no",
    ), rises
