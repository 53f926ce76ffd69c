"""The parameter-free collapse of the seed variance onto the kernel limit (docs/theory.md §1.4).

Claim: N^(2 gamma - 1) times the seed variance, divided by the kernel limit's Var K_t, tends to 1 as N grows, at
every gamma in (1/2, 1) and every t > 0. One store of a shallow sweep the kernel limit describes (see
:func:`ensemble_stats.kernel_limit_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .._assess import covers, interval, verdict
from .._limit import compare_to_theory
from ..store import open_ensemble
from ._claim import Claim, save_figure

__all__ = ["claims"]


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide whether the variance collapses onto the kernel limit, on one store.

    Parameters
    ----------
    stores : ``{name: path}`` of one store
    opts : ``figdir`` (a folder: draw the figure there), nothing else is read

    Returns
    -------
    one :class:`Claim`; its cases (dim ``case``, one per gamma) hold the ratio with its interval at the widest N
    and whether 1 lies inside the interval at every t > 0
    """
    (path,) = stores.values()
    cmp = compare_to_theory(open_ensemble(path)).compute()  # the kernel limit from the store's training set
    widths, later = cmp.width.values, cmp.time > 0
    rows, holds = [], []
    for g in cmp.gamma.values:
        first, s = (cmp.sel(gamma=g, width=w).where(later, drop=True) for w in (widths[0], widths[-1]))
        inside = covers(s, 1.0, var="ratio")
        holds.append(bool(inside.all()))
        mid = len(s.time) // 2
        gap = lambda q: float(np.abs(q.ratio - 1).max())  # noqa: E731
        rows.append(
            (
                f"{g:g}",
                interval(first.ratio[-1], first.ratio_lo[-1], first.ratio_hi[-1]),
                interval(s.ratio[mid], s.ratio_lo[mid], s.ratio_hi[mid]),
                interval(s.ratio[-1], s.ratio_lo[-1], s.ratio_hi[-1]),
                f"{int(inside.sum())} of {inside.size}",
                f"{gap(first):.3f} -> {gap(s):.3f}",
            )
        )
    v, t = verdict(holds), cmp.time.where(later, drop=True)
    top = cmp.sel(width=widths[-1]).where(later, drop=True)
    cases = xr.Dataset(
        {
            "ratio": top.ratio.isel(time=-1),
            "ratio_lo": top.ratio_lo.isel(time=-1),
            "ratio_hi": top.ratio_hi.isel(time=-1),
            "holds": ("gamma", holds),
        }
    ).rename(gamma="case")
    cases["holds"].attrs["long_name"] = f"1 inside the ratio's interval at every t > 0, N = {int(widths[-1])}"
    figures = (("collapse", save_figure(_figure(cmp), opts, "collapse.png")),) if opts.get("figdir") else ()
    return [
        Claim(
            "Verdict",
            "does the ratio collapse to 1 for every gamma?",
            v,
            f"at N = {int(widths[-1])} the 95% CI contains 1 at every t > 0 for {v.agree} of {v.cases} gammas "
            f"({int(cmp.n_seeds.min())} seeds). Where it does not, the last column shows whether the gap closes "
            "with N (lower-order terms). All gammas at one N share their initial weights (common random numbers), "
            "so their seed noise is shared: rows that sit off 1 by the same amount at one N are one draw, not a "
            "trend in gamma.",
            cases=cases,
            columns=(
                "gamma",
                f"N = {int(widths[0])}, t = {float(t[-1]):g}",
                f"N = {int(widths[-1])}, t = {float(t[len(t) // 2]):g}",
                f"N = {int(widths[-1])}, t = {float(t[-1]):g}",
                f"t > 0 with 1 inside the CI, N = {int(widths[-1])}",
                f"max_t |ratio - 1|, N = {int(widths[0])} -> {int(widths[-1])}",
            ),
            rows=tuple(rows),
            figures=figures,
        )
    ]


def _figure(cmp: xr.Dataset):
    from .. import plot

    return plot.collapse(cmp)
