"""The shallow study's (gamma, alpha) maps: accuracy at equal and at tuned rates, judged at the plateau."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import schema
from .._assess import interval, plateau, trend, verdict
from .._stats import bias_variance
from ..errors import ValidationError
from ..store import open_ensemble, sweep_config
from ._claim import Claim, save_figure


def _alpha_map(parts: list[xr.Dataset]) -> xr.Dataset:
    """Join stores of one config that differ only in alpha (so they share their seeds) into one (gamma, alpha) map.

    Their per-run variables are concatenated along alpha, sorted, on the widths of the first store with an alpha
    dim; a store without an alpha dim is at the alpha its config trained with.
    """
    first = next(p for p in parts if schema.ALPHA in p.dims)
    widths = first.width.values
    per_run = [v for v in first.data_vars if schema.ALPHA in first[v].dims]
    parts = [
        p.sel(width=widths) if schema.ALPHA in p.dims else p.sel(width=widths).expand_dims(alpha=[_alpha(p)])
        for p in parts
    ]
    joined = {v: xr.concat([p[v] for p in parts], schema.ALPHA) for v in per_run}
    out = first.drop_vars([*per_run, schema.ALPHA]).assign(joined)
    return out.sortby(schema.ALPHA).transpose(schema.ALPHA, ...)


def at_plateau(ds: xr.Dataset, tol: float, window: float):
    """Each (alpha, gamma, width) run group of a map where its training accuracy has plateaued.

    Returns
    -------
    (plateau, ok, acc, last) : :func:`ensemble_stats.plateau` of the training accuracy; whether the group plateaued
    and no seed diverged; the test accuracy (seed, ...) at the group's own plateau epoch (the last epoch where none; its ``time``
    coordinate);
    the seed-mean test accuracy at the last epoch, NaN where a seed diverged
    """
    alive = (ds.diverged_step < 0).all(schema.SEED)  # no seed diverged
    pl = plateau(ds.train_accuracy, tol=tol, window=window).compute()
    t_pl = pl.plateau_time.fillna(float(ds.time[-1]))
    acc = ds.accuracy.sel(time=t_pl)  # each (alpha, gamma, width) at its own plateau epoch
    last = ds.accuracy.isel(time=-1).mean(schema.SEED).where(alive)
    last.attrs["long_name"] = "test accuracy, last epoch"
    return pl, pl.reached & alive, acc, last


def map_claims(
    base: Mapping[str, object], maps: Mapping[str, object], opts: Mapping, *, prefix: str = "shallow"
) -> list[Claim]:
    """Decide the map claims: test accuracy where each run's training accuracy has plateaued, and the variance.

    Figures are saved as ``{prefix}-{map}.png``.
    """
    tol, window = float(opts.get("plateau_tol", 0.01)), float(opts.get("plateau_window", 0.2))
    rows, best_rows, figs, equal, tuned, not_reached, n_runs = [], [], [], [], [], 0, 0
    for name, path in maps.items():
        if name.endswith("-fine"):  # joined with its coarse map below
            continue
        stem = name.removesuffix("-alpha-map")
        parts = [path, maps.get(f"{name}-fine"), base.get(stem)]
        ds = _alpha_map([open_ensemble(p).load() for p in parts if p is not None])
        spe = int(ds.step.max()) / float(ds.time[-1])  # optimizer steps per epoch
        data = sweep_config(ds)["data"]["name"]
        pl, ok, acc, last = at_plateau(ds, tol, window)
        t_pl = acc.time  # each group's plateau epoch (the last epoch where none)
        acc_mean = acc.mean(schema.SEED).where(ok)
        acc_mean.attrs["long_name"] = "test accuracy at the plateau"
        var = bias_variance(ds).variance.isel(time=-1).compute()
        var.attrs["long_name"] = "seed variance, last epoch"
        if opts.get("figdir"):
            fig = _maps_figure([last, acc_mean, var], f"{name} (blank: no plateau / diverged)")
            figs.append((f"{name} map", save_figure(fig, opts, f"{prefix}-{name}.png")))
        n_runs += int(ok.size)
        not_reached += int((~pl.reached).sum())
        for w in ds.width.values:
            for a in ds[schema.ALPHA].values:
                good = ok.sel(width=w, alpha=a)
                cell = acc.sel(width=w, alpha=a)
                decided = bool(good.all())
                tr = trend(cell).compute() if decided else None
                equal.append(bool(tr.increasing) if decided else None)
                t_eff = (t_pl * spe * ds[schema.ALPHA] / ds.width).sel(width=w, alpha=a)
                rows.append(
                    [
                        name,
                        int(w),
                        f"{a:g}",
                        " / ".join(
                            f"{float(m):.3f}" if bool(g) else "-"
                            for m, g in zip(acc_mean.sel(width=w, alpha=a).values, good.values, strict=True)
                        ),
                        " / ".join(
                            f"{float(e):.0f} ({float(t):.0f})" if bool(g) else "-"
                            for e, t, g in zip(
                                pl.plateau_time.sel(width=w, alpha=a).values, t_eff.values, good.values, strict=True
                            )
                        ),
                        (interval(tr.rise, tr.rise_lo, tr.rise_hi) + f", {int(tr.drops)} drops")
                        if decided
                        else "not all plateaued",
                        ("yes" if bool(tr.increasing) else "no") if decided else "undecided",
                    ]
                )
            # alpha tuned per gamma: each gamma at the alpha of its best final test accuracy (runs that did not
            # diverge); decided when every gamma's best run has plateaued (a slower alpha that plateaued at a lower
            # accuracy would not be the tuned rate)
            pick = last.sel(width=w).fillna(-1).argmax(schema.ALPHA)
            if bool(ok.sel(width=w).isel({schema.ALPHA: pick}).all()):
                best = acc.sel(width=w).isel({schema.ALPHA: pick})
                tr = trend(best.drop_vars(schema.ALPHA)).compute()
                tuned.append((data, bool(tr.increasing)))
                best_rows.append(
                    [
                        name,
                        int(w),
                        " / ".join(f"{float(ds[schema.ALPHA][i]):g}" for i in pick.values),
                        " / ".join(f"{float(x):.3f}" for x in best.mean(schema.SEED).values),
                        interval(tr.rise, tr.rise_lo, tr.rise_hi),
                        int(tr.drops),
                        "yes" if tuned[-1][1] else "no",
                    ]
                )
            else:
                tuned.append((data, None))
    decided = [x for x in equal if x is not None]
    v_eq = verdict(decided)
    by_data = {d: verdict([x for dd, x in tuned if dd == d]) for d in dict.fromkeys(dd for dd, _ in tuned)}
    v_tuned = verdict([x for _, x in tuned])
    eq_text = (
        f"in the {len(decided)} (variant, N, alpha) cases where every gamma plateaued ({v_eq.agree} of {len(decided)}); "
        f"{len(equal) - len(decided)} cases are undecided because some gamma had not plateaued or diverged "
        f"({not_reached} of {n_runs} (gamma, alpha, N) runs never plateaued). Each gamma is judged at its own plateau "
        f"(`es.plateau` of the training accuracy: the first epoch from which its seed mean stays within {tol:g} of the "
        f"end, by a paired 95% interval, over at least the last {window:.0%} of training); monotone = no significant "
        "drop between neighbouring gammas and a significant rise from gamma = 1/2 to 1 (`es.trend`, paired over "
        "seeds). The effective time in brackets is t = alpha k / N, the time of the theory's limit at every gamma."
    )
    return [
        Claim(
            "Verdict 1b",
            "at equal alpha, judged where training has plateaued, does test accuracy improve monotonically as "
            "gamma -> 1?",
            v_eq,
            eq_text,
            joiner=" ",
            cases=xr.Dataset({"increasing": ("case", decided)}),
            columns=(
                "variant",
                "N",
                "alpha",
                "test accuracy at the plateau, gamma ascending",
                "plateau epoch (effective time t)",
                "acc(1) - acc(1/2), 95% CI",
                "monotone",
            ),
            rows=tuple(tuple(str(c) for c in r) for r in rows),
        ),
        Claim(
            "Verdict 1c",
            "with alpha tuned per gamma, does the test accuracy at the plateau improve as gamma -> 1?",
            v_tuned,
            f"({v_tuned.agree} of {v_tuned.cases} (variant, N) cases); by data set: "
            + "; ".join(
                f"{d} {v.markdown()} ({v.agree} of {v.cases}, {v.undecided} undecided)" for d, v in by_data.items()
            )
            + ". Each gamma at the alpha of its best final test accuracy among the runs that did not diverge; a case "
            "is undecided when one of those runs has not plateaued (then the tuned rate's accuracy at a plateau is "
            "unknown).",
            cases=xr.Dataset(
                {"increasing": ("case", [np.nan if x is None else float(x) for _, x in tuned])},
                coords={"data": ("case", [d for d, _ in tuned])},
            ),
            columns=(
                "variant",
                "N",
                "best alpha, gamma ascending",
                "its plateau accuracy",
                "acc(1) - acc(1/2)",
                "drops",
                "monotone",
            ),
            rows=tuple(tuple(str(c) for c in r) for r in best_rows),
            figures=tuple(figs),
            joiner=" overall ",
        ),
    ]


def _alpha(ds: xr.Dataset) -> float:
    """Return the rate constant a store without an alpha dim trained with (its config's; 1 without a config)."""
    try:
        return float(sweep_config(ds).get("optimizer", {}).get("alpha") or 1.0)
    except ValidationError:
        return 1.0


def _maps_figure(rows: list, title: str):
    from .. import plot

    return plot.gamma_alpha_maps(rows, logs=[False, False, True], fmts=[".2f", ".2f", ".1e"], title=title)
