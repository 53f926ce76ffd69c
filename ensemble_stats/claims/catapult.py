"""Large learning rates: the catapult (Lewkowycz et al.; docs/theory.md §13).

Claims, for a wide net at gamma = 1/2 trained with MSE by full-batch gradient descent, each run judged by its
own r_0 = eta lambda_0 / (M O) (:func:`ensemble_stats.learning_rate_regimes`, bounds
``theory.CATAPULT_REGIMES``): below 2 the loss does not rise and the run survives (lazy); between 2 and 4 the
loss rises, the run survives and ends with r_final < 2 (the catapult); above 4 the run diverges. Stores: one or
more shallow sweeps over alpha (one width each) that recorded the NTK on the training points.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import theory
from .._assess import verdict
from .._ntk import learning_rate_regimes
from ..store import open_ensemble
from ._claim import Claim, save_figure

__all__ = ["claims"]

_QUESTIONS = {
    "lazy": ("Verdict 1", "below 2/lambda_0, lazy?"),
    "catapult": ("Verdict 2", "between 2/lambda_0 and 4/lambda_0, the catapult?"),
    "divergent": ("Verdict 3", "above about 4/lambda_0, divergence?"),
}


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide the three regimes' claims on every run of the stores.

    Parameters
    ----------
    stores : ``{name: path}``, each a sweep over alpha at one width
    opts : ``figdir`` (a folder: draw the figure there); ``spike`` (default 1.01: a loss ratio above it counts
        as the loss rising)

    Returns
    -------
    three :class:`Claim` (lazy, catapult, divergent); each one's cases (dim ``case``, one per run of that
    regime) hold the run's width, alpha / alpha_c, r_0, spike, divergence and whether it behaved as predicted
    """
    spike = float(opts.get("spike", 1.01))
    opened = {name: open_ensemble(path) for name, path in stores.items()}
    regs = {name: learning_rate_regimes(ds, spike=spike).compute() for name, ds in opened.items()}
    # alpha scales with N; the widths share their multiples of alpha_c, which index the combined figure
    multiple = {
        name: (r.alpha / theory.critical_alpha(opened[name].x_train.values, int(r.width[0]))).round(6).values
        for name, r in regs.items()
    }
    reg = xr.concat([r.assign_coords(alpha=multiple[n]) for n, r in regs.items()], dim="width", join="exact")
    dims = reg.diverged.dims
    r0_all, div_all = reg.r_0.transpose(*dims).values.ravel(), reg.diverged.values.ravel().astype(bool)
    ok = np.isfinite(r0_all)
    survived_max = float(np.max(r0_all[ok & ~div_all])) if (ok & ~div_all).any() else float("nan")
    diverged_min = float(np.min(r0_all[ok & div_all])) if (ok & div_all).any() else float("nan")
    rows = [row for name, r in regs.items() for row in _rows(r, multiple[name], spike)]
    runs = reg.stack(case=dims).reset_index("case")
    cases = {
        name: runs.isel(case=np.flatnonzero(runs.regime.values == k))[
            ["r_0", "r_final", "loss_spike", "diverged", "as_predicted"]
        ]
        for k, (name, _, _) in enumerate(theory.CATAPULT_REGIMES)
    }
    v = {name: verdict(c.as_predicted.values.tolist()) for name, c in cases.items()}
    figures = (("catapult", save_figure(_figure(reg), opts, "catapult.png")),) if opts.get("figdir") else ()
    seeds = int(reg.sizes["seed"])
    summaries = {
        "lazy": f"{v['lazy'].agree} of {v['lazy'].cases} runs with r_0 < 2.",
        "catapult": f"{v['catapult'].agree} of {v['catapult'].cases} runs with 2 <= r_0 < 4 spiked, survived and "
        "ended with r_final < 2.",
        "divergent": f"{v['divergent'].agree} of {v['divergent'].cases} runs with r_0 >= 4 diverged. Measured, the "
        f"largest r_0 of a run that survived is {survived_max:.2f} and the smallest of one that diverged "
        f"{diverged_min:.2f}: the upper edge of the catapult window lies there for this tanh net (Lewkowycz et al. "
        "give about 4 and, for ReLU nets, up to 12).",
    }
    preamble = (
        f"Seeds: {seeds} per (N, alpha); every run is judged by its own r_0 = eta lambda_0 / (M O) from its recorded "
        f"NTK (`learning_rate_regimes`): below 2 the loss should not rise (spike <= {spike:g}) and the run not "
        "diverge; between 2 and 4 the loss should rise, the run survive and end with r_final < 2 (the catapult); "
        "above 4 the run should diverge."
    )
    out = []
    for name, (label, question) in _QUESTIONS.items():
        last = name == "divergent"
        out.append(
            Claim(
                label,
                question,
                v[name],
                summaries[name],
                cases=cases[name],
                columns=_COLUMNS if last else (),
                rows=tuple(rows) if last else (),
                figures=figures if last else (),
                preamble=preamble if name == "lazy" else "",
            )
        )
    return out


_COLUMNS = (
    "N",
    "alpha / alpha_c",
    "r_0 (runs)",
    "loss rose",
    "median spike",
    "diverged",
    "median r_final (survivors)",
    "survivors with r_final < 2",
)


def _rows(r: xr.Dataset, multiples, spike: float) -> list[tuple[str, ...]]:
    """One table row per alpha of one store (one width)."""
    w, rows = int(r.width.values[0]), []
    for a, c in zip(r.alpha.values, multiples, strict=True):
        one = r.sel(alpha=a).squeeze()
        r0, spikes, div, rf = (one[k].values.ravel() for k in ("r_0", "loss_spike", "diverged", "r_final"))
        div = div.astype(bool)
        spiked = spikes > spike
        settled = ~div & (rf < 2)
        alive = ~div
        rows.append(
            (
                f"{w}",
                f"{c:.2f}",
                f"{np.nanmin(r0):.2f} - {np.nanmax(r0):.2f}",
                f"{int(spiked.sum())} of {len(r0)}",
                f"{np.nanmedian(spikes):.3g}",
                f"{int(div.sum())} of {len(r0)}",
                f"{np.nanmedian(rf[alive]):.2f}" if alive.any() else "-",
                f"{int(settled.sum())} of {int(alive.sum())}",
            )
        )
    return rows


def _figure(reg: xr.Dataset):
    from .. import plot

    return plot.catapult(reg)
