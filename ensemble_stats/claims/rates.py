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
from .._assess import interval
from .._stats import seed_mean
from ..store import open_ensemble
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
    :class:`Claim` 1b (equal alpha), 1c (alpha tuned per gamma) and an observation: per (variant, N, gamma) the
    stable edge and the best stable alpha's plateau accuracy; its cases (dim ``case``) hold those numbers
    """
    tol, window = float(opts.get("plateau_tol", 0.01)), float(opts.get("plateau_window", 0.2))
    rows, cases = [], []
    for name, path in stores.items():
        ds = open_ensemble(path).load()
        _, ok, acc, last = at_plateau(ds, tol, window)
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
    return [*map_claims({}, stores, opts), observation]
