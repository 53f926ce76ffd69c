"""Why a deep configuration does or does not learn, from the per-layer diagnostics its store recorded.

The stores of the deep study's x2 search record, at every record, each layer's saturated fraction, the input
spread of its pre-activations (sd over inputs / rms, averaged over units), and each weight's relative update
(``[record] layer_diagnostics``; :func:`ensemble_stats.schema.layer_diagnostic_metrics`). Each configuration is
read at its best stable alpha of the search.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import schema
from .._stats import seed_mean
from ..store import open_ensemble, sweep_config
from ._claim import Claim

ONE_INPUT = 0.1
"""A layer whose pre-activations' input spread is below this sees nearly one input (the same for every image)."""
SATURATED = 0.5
"""A layer with more than this fraction of its (input, unit) pairs in the activation's flat tails is saturated."""
FROZEN = 1e-5
"""A weight whose relative update per full-batch step is below this barely moves (10^5 steps to change by 1)."""


def has_diagnostics(ds) -> bool:
    """Whether a store recorded the layer diagnostics."""
    return "saturation_1" in ds.data_vars


def diagnosis(stores: Mapping[str, object], threshold: float) -> Claim | None:
    """Tabulate each configuration's diagnostics at its best stable alpha, with the reason it does not learn.

    Parameters
    ----------
    stores : search stores, each one (gamma_1, gamma_2) over gamma_3 and an ``alpha`` grid at one width; those
        without diagnostics are skipped (None when none has them)
    threshold : the accuracy a configuration must exceed (its 95% CI's lower end) to have learned
    """
    rows, reasons = [], {}
    for path in stores.values():
        ds = open_ensemble(path)
        if not has_diagnostics(ds):
            continue
        ds = ds.isel(width=0).load()
        g1, g2 = (float(v) for v in sweep_config(ds)["model"]["inner_gammas"][:2])
        depth = len(sweep_config(ds)["model"]["inner_widths"]) + 1
        weights = [*(f"w{layer}" for layer in range(1, depth + 1)), "c"]
        for g3 in ds.gamma.values:
            cfg = ds.sel(gamma=g3)
            stable = (cfg.diverged_step < 0).all(schema.SEED)
            acc = cfg.accuracy.isel(time=-1)
            mean = acc.mean(schema.SEED).where(stable)
            i = int(mean.fillna(-1).argmax(schema.ALPHA)) if bool(stable.any()) else 0
            run = cfg.isel({schema.ALPHA: i})
            summary = learned_summary(
                acc.isel({schema.ALPHA: i}).values, int((run.diverged_step >= 0).sum()), threshold
            )
            m, learned = summary["mean"], summary["learned"]

            def at(name, t, run=run):
                return float(run[name].isel(time=t).median(schema.SEED))

            sat = [at(f"saturation_{layer}", -1) for layer in range(1, depth + 1)]
            spread0 = [at(f"spread_{layer}", 0) for layer in range(1, depth + 1)] + [at("spread_out", 0)]
            spread = [at(f"spread_{layer}", -1) for layer in range(1, depth + 1)] + [at("spread_out", -1)]
            ratio = [at(f"update_ratio_{w}", 0) for w in weights]
            why = [] if learned else _why(sat, spread0, spread, ratio, weights)
            for r in why:
                reasons[r.split(" (")[0]] = reasons.get(r.split(" (")[0], 0) + 1
            rows.append(
                (
                    f"{g1:g}", f"{g2:g}", f"{float(g3):g}", f"{float(run[schema.ALPHA]):g}"
                    + ("" if bool(stable.any()) else " (all diverge)"),
                    f"{m:.3f}", " / ".join(f"{s:.2f}" for s in sat),
                    " / ".join(f"{a0:.2g} -> {a1:.2g}" for a0, a1 in zip(spread0, spread, strict=True)),
                    " / ".join(f"{r:.0e}" for r in ratio), "learns" if learned else "; ".join(why) or "-",
                )
            )  # fmt: skip
    if not rows:
        return None
    n_not = sum(r[-1] != "learns" for r in rows)
    counted = "; ".join(f"{n} {what}" for what, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return Claim(
        "",
        "Why the configurations that do not learn do not (measured)",
        None,
        f"each configuration at its best stable alpha of the x2 search, the seeds' median of the per-layer "
        f"diagnostics recorded with the outputs (`[record] layer_diagnostics`, on the training set): {n_not} of "
        f"{len(rows)} did not learn; the reasons found: {counted or 'none'}. A layer *sees one input* when its "
        f"pre-activations' spread over the inputs (sd / rms, averaged over units) is below {ONE_INPUT:g}: every "
        f"image reaches it nearly alike, so nothing above it can tell the classes apart; *saturated*: over "
        f"{SATURATED:.0%} of its (input, unit) pairs have a sigmoid slope below 1% of its peak; *frozen*: a "
        f"relative update per full-batch step below {FROZEN:g} at t = 0.",
        columns=(
            "gamma_1", "gamma_2", "gamma_3", "alpha", "final test accuracy", "saturated fraction, layers 1/2/3 (end)",
            "input spread, layers 1/2/3/output (t = 0 -> end)", "relative update W1/W2/W3/C (t = 0)", "why not",
        ),
        rows=tuple(rows),
    )  # fmt: skip


def learned_summary(acc, diverged: int, threshold: float) -> dict:
    """Return the seeds' mean final accuracy, its 95% interval and whether the run learned.

    A run learned when no seed diverged and the interval's lower end is above ``threshold``. ``acc``: per-seed
    final accuracies (seed,); ``diverged``: how many seeds diverged.
    """
    out = dict(mean=np.nan, lo=np.nan, hi=np.nan)
    if not diverged:
        m = seed_mean(xr.DataArray(np.asarray(acc, dtype=float), dims="seed")).compute()
        out.update(mean=float(m["mean"]), lo=float(m.mean_lo), hi=float(m.mean_hi))
    out["learned"] = diverged == 0 and out["lo"] > threshold
    return out


def _why(sat, spread0, spread, ratio, weights) -> list[str]:
    """Name the measured reasons a run did not learn: layers that see one input, saturate, or barely move."""
    out = []
    blind = [i for i, s in enumerate(spread) if s < ONE_INPUT]
    if blind:
        i = blind[0]
        where = "the output" if i == len(spread) - 1 else f"layer {i + 1}"
        out.append(f"{where} sees one input (spread {spread0[i]:.2g} at t = 0, {spread[i]:.2g} at the end)")
    hot = [i for i, s in enumerate(sat) if s > SATURATED]
    if hot:
        out.append(
            "saturated (" + ", ".join(f"layer {i + 1}: {sat[i]:.2f}" for i in hot) + ")"
        )  # fmt: skip
    cold = [i for i, r in enumerate(ratio) if r < FROZEN]
    if cold:
        out.append("frozen (" + ", ".join(f"{weights[i].upper()}: {ratio[i]:.0e}" for i in cold) + ")")
    return out
