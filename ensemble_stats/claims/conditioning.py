"""Depth and conditioning: the normalized ReLU (Agarwal et al.; docs/theory.md §5).

Claims: the NNGP Gram matrix of the normalized ReLU stays better conditioned with depth than plain ReLU's, and
deep nets with it train better (higher training accuracy after the same budget), as well as ReLU with
BatchNorm. Stores: one per (activation, depth), named ``"<activation>-L<depth>"`` (e.g. ``relu-L8``,
``normalized_relu-L8``, ``relu_batchnorm-L8``), each one gamma and one width.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import schema, theory
from .._assess import interval, verdict
from .._stats import seed_mean
from ..store import open_ensemble
from ._claim import Claim, save_figure

__all__ = ["claims"]


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide the conditioning and training claims.

    Parameters
    ----------
    stores : ``{"<activation>-L<depth>": path}``, each one gamma and one width, with or without an ``alpha`` grid
        (with one, each net is judged at the alpha of its best final training accuracy)
    opts : ``kernel_x`` (inputs (n, d) of the Gram matrices; default the first store's grid inputs),
        ``kernel_depths`` (default [1, 2, 4, 8, 16]), ``kernel_activations`` (default relu, normalized_relu,
        tanh, erf), ``learned_accuracy`` (default 0.5: a depth is tested only where at least one of the nets
        compared reaches this final training accuracy), ``figdir``

    Returns
    -------
    two or three :class:`Claim` (kernel; training; against BatchNorm when such stores are given)
    """
    x = opts.get("kernel_x")
    x = open_ensemble(next(iter(stores.values()))).x.values if x is None else np.asarray(x)
    depths = [int(d) for d in opts.get("kernel_depths", [1, 2, 4, 8, 16])]
    acts = list(opts.get("kernel_activations", ["relu", "normalized_relu", "tanh", "erf"]))
    cond = {a: list(theory.kernel_condition_number(x, activation=a, depth=depths)) for a in acts}
    floor = float(opts.get("learned_accuracy", 0.5))
    loss_end, start, acc_end, div, zero_loss, alpha, grid = {}, {}, {}, {}, None, {}, set()
    for name, path in stores.items():
        ds = open_ensemble(path).load().isel(gamma=0, width=0)
        act, _, L = name.rpartition("-L")
        key = (act, int(L))
        if schema.ALPHA in ds.dims:  # tuned: the alpha of the best final training accuracy (seed mean)
            # a diverged seed (masked: NaN) is a net that failed, counted at accuracy 0, so that a rate at which
            # most seeds diverge is not chosen for its few survivors
            final = ds.train_accuracy.isel(time=-1).fillna(0.0)
            best = int(final.mean(schema.SEED).argmax(schema.ALPHA))
            alpha[key] = float(ds[schema.ALPHA][best])
            grid |= {float(a) for a in ds[schema.ALPHA].values}
            ds = ds.isel({schema.ALPHA: best})
        if zero_loss is None:  # the loss of the predictor that outputs 0: what a collapsed net reaches
            zero_loss = 0.5 * float(np.mean(np.square(ds.y_train))) if "y_train" in ds else np.nan
        loss_end[key] = seed_mean(ds.train_loss.isel(time=-1))
        acc_end[key] = seed_mean(ds.train_accuracy.isel(time=-1))
        start[key] = float(ds.train_loss.isel(time=0).median())
        div[key] = int((ds.diverged_step >= 0).sum())
    rows = []
    for a in sorted({k[0] for k in loss_end}):
        for L in sorted(L for act, L in loss_end if act == a):
            q, r = loss_end[(a, L)], acc_end[(a, L)]
            rows.append(
                (a, str(L), *([f"{alpha[(a, L)]:g}"] if alpha else []), f"{start[(a, L)]:.4f}",
                 interval(q["mean"], q.mean_lo, q.mean_hi, 4), interval(r["mean"], r.mean_lo, r.mean_hi),
                 str(div[(a, L)]))
            )  # fmt: skip
    kernel_ok = cond["normalized_relu"][-1] < cond["relu"][-1] if {"relu", "normalized_relu"} <= set(cond) else None
    # "trains better" is read off training accuracy: a collapsed net reaches the zero predictor's low MSE
    # with chance accuracy, so a lower loss alone would reward collapse
    # a comparison is about training: where neither net's final training accuracy reaches the floor, nothing
    # trained and the depth is not tested; where one net trains at its tuned rate and the other does not, that
    # is the comparison's outcome
    # its premise is not reached and the depth is not tested
    untrained = lambda *nets: all(float(q["mean"]) < floor for q in nets)  # noqa: E731
    better, depth_rows, layers = [], [], sorted(_depths(acc_end, "relu") & _depths(acc_end, "normalized_relu"))
    short = []
    for L in layers:
        n, r = acc_end[("normalized_relu", L)], acc_end[("relu", L)]
        better.append(bool(n.mean_lo > r.mean_hi))
        short.append(untrained(n, r))
        depth_rows.append(
            f"L = {L}: {float(n['mean']):.3f} vs {float(r['mean']):.3f} "
            f"({'not tested' if short[-1] else 'yes' if better[-1] else 'no'})"
        )
    bn_rows, bn_cases, bn_short = [], [], []  # the paper's comparison: normalized ReLU against ReLU with BatchNorm
    bn_layers = sorted(_depths(acc_end, "relu_batchnorm") & _depths(acc_end, "normalized_relu"))
    for L in bn_layers:
        n, b = acc_end[("normalized_relu", L)], acc_end[("relu_batchnorm", L)]
        bn_cases.append(bool(n.mean_hi >= b.mean_lo))  # normalized ReLU at least as good: intervals not below
        bn_short.append(untrained(n, b))
        bn_rows.append(
            f"L = {L}: {float(n['mean']):.3f} vs {float(b['mean']):.3f}{' (not tested)' if bn_short[-1] else ''}"
        )
    k, t = verdict(kernel_ok), verdict(better, not_tested=short)
    nan = [np.nan]
    cond_da = xr.DataArray(
        [cond[a] for a in acts], dims=("activation", "depth"), coords={"activation": acts, "depth": depths}
    )
    cond_da.attrs["long_name"] = "condition number of the NNGP Gram matrix"
    trained = _trained(loss_end, acc_end)
    figures = (
        (("conditioning", save_figure(_figure(cond_da, trained, len(x)), opts, "conditioning.png")),)
        if opts.get("figdir")
        else ()
    )
    notes = (
        f"For scale: a net that outputs 0 everywhere has training loss {zero_loss:.4f}; a loss near it with chance "
        f"accuracy is a collapsed net, not a trained one. A depth is tested only where at least one of the nets compared reaches a "
        f"final training accuracy of {floor:g}"
        + (
            "; each net at the alpha of its best final training accuracy (seed mean, a diverged seed counted as 0) on the grid "
            f"{', '.join(f'{a:g}' for a in sorted(grid))}."
            if alpha
            else "."
        )
    )
    table = {
        "columns": (
            "activation",
            "hidden layers",
            *(["alpha (tuned)"] if alpha else []),
            "training loss at t = 0 (median)",
            "training loss after the budget, 95% CI",
            "training accuracy after the budget, 95% CI",
            "diverged seeds",
        ),
        "rows": tuple(rows),
        "figures": figures,
        "notes": notes,
    }
    out = [
        Claim(
            "Verdict (kernel)",
            "is the normalized ReLU's Gram matrix better conditioned at depth?",
            k,
            f"at depth {depths[-1]} the condition number is {cond.get('normalized_relu', nan)[-1]:.3g} (normalized "
            f"ReLU) vs {cond.get('relu', nan)[-1]:.3g} (ReLU); growth from depth {depths[0]} to {depths[-1]}: "
            + ", ".join(f"{a} x{cond[a][-1] / cond[a][0]:.3g}" for a in acts)
            + ".",
            cases=cond_da.to_dataset(name="condition_number"),
            columns=("activation", *(f"depth {d}" for d in depths)),
            rows=tuple((a, *(f"{v:.3g}" for v in cond[a])) for a in acts),
        ),
        Claim(
            "Verdict (training)",
            "does normalized ReLU train better at depth?",
            t,
            f"its training accuracy's 95% CI lies above plain ReLU's at {t.agree} of {t.cases} tested depths ("
            + "; ".join(depth_rows)
            + "). A diverged seed is left out and counted.",
            cases=trained.sel(layers=layers) if layers else xr.Dataset(),
            **({} if bn_cases else table),
        ),
    ]
    if bn_cases:
        b = verdict(bn_cases, not_tested=bn_short)
        out.append(
            Claim(
                "",
                "Does normalized ReLU train as well as ReLU with BatchNorm?",
                b,
                f"its training accuracy's 95% CI reaches BatchNorm's at {b.agree} of {b.cases} tested depths ("
                + "; ".join(bn_rows)
                + ", normalized ReLU vs BatchNorm).",
                cases=trained.sel(layers=bn_layers),
                **table,
            )
        )
    return out


def _depths(found: Mapping, activation: str) -> set[int]:
    return {L for a, L in found if a == activation}


def _trained(loss_end: Mapping, acc_end: Mapping) -> xr.Dataset:
    """Training loss and accuracy after the budget (seed means and 95% bounds), dims (activation, layers)."""
    acts = sorted({a for a, _ in loss_end})
    layers = sorted({L for _, L in loss_end})
    out = {}
    for name, found in (("loss", loss_end), ("accuracy", acc_end)):
        for k, var in (("", "mean"), ("_lo", "mean_lo"), ("_hi", "mean_hi")):
            vals = [[float(found[(a, L)][var]) if (a, L) in found else np.nan for L in layers] for a in acts]
            out[f"train_{name}{k}"] = (("activation", "layers"), np.array(vals))
    return xr.Dataset(out, coords={"activation": acts, "layers": layers})


def _figure(cond: xr.DataArray, trained: xr.Dataset, n_inputs: int):
    from .. import plot

    return plot.condition_numbers(cond, trained, title=f"digits, {n_inputs} inputs")
