"""The outside anchor: a net trained by the toolkit against mnist1d's reference MLP.

Claim: on mnist1d's standard split (4000 train / 1000 test), a network trained by the toolkit reaches the test
accuracy of the mnist1d package's MLP baseline (0.66-0.68, Adam, 8000 steps). Stores: one per variant (e.g. one
per width), each one gamma and one width over a grid of ``alpha`` (an extra sweep dim), classification.

Two choices of the configuration are judged, neither by the test accuracy of the runs judged: one named before
the runs (``opts["preregistered"]``, chosen on pilot seeds the store does not hold), and the one the training data
choose (the lowest final training loss of each variant, among configurations with no diverged run).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import schema
from .._assess import interval, verdict
from .._stats import seed_mean
from ..store import open_ensemble
from ._claim import Claim

__all__ = ["claims"]


def _decide(lo: float, hi: float, reference: float) -> bool | None:
    """Whether the interval [lo, hi] of the expected accuracy lies above the reference (None: it straddles it)."""
    if lo >= reference:
        return True
    return False if hi < reference else None


def _configurations(stores: Mapping[str, object], reference: float) -> list[dict]:
    """One row per (variant, alpha): the final record's seed means with intervals, and the run counts."""
    rows = []
    for name, path in stores.items():
        ds = open_ensemble(path).isel(gamma=0, width=0)
        alphas = ds[schema.ALPHA].values if schema.ALPHA in ds.dims else [np.nan]
        for i, a in enumerate(alphas):
            one = ds.isel({schema.ALPHA: i}) if schema.ALPHA in ds.dims else ds
            end = one.isel(time=-1).load()
            test = seed_mean(end[schema.ACCURACY])
            train = seed_mean(end[schema.TRAIN_ACCURACY])
            peak = one[schema.ACCURACY].mean(schema.SEED).max("time")  # the best record: chosen on the test set
            rows.append(
                {
                    "variant": name,
                    "width": int(ds[schema.WIDTH]),
                    "gamma": float(ds[schema.GAMMA]),
                    "alpha": float(a),
                    "steps": int(end[schema.STEP].max()) if schema.STEP in end else -1,
                    "accuracy": float(test["mean"]),
                    "accuracy_lo": float(test.mean_lo),
                    "accuracy_hi": float(test.mean_hi),
                    "train_accuracy": float(train["mean"]),
                    "train_loss": float(end[schema.TRAIN_LOSS].mean(schema.SEED)),
                    "peak_accuracy": float(peak),
                    "n_seeds": int(test.n_seeds),
                    "diverged": int((one[schema.DIVERGED_STEP] >= 0).sum()),
                    "nets": int(np.isfinite(end[schema.ACCURACY]).sum()),
                    "above": int((end[schema.ACCURACY] >= reference).sum()),
                }
            )
    return rows


def claims(stores: Mapping[str, object], opts: Mapping) -> list[Claim]:
    """Decide whether a toolkit-trained net reaches the reference accuracy.

    Parameters
    ----------
    stores : ``{variant: path}``, each one gamma and one width over ``alpha``
    opts : ``reference`` (default 0.66: the low end of the mnist1d MLP's range), ``train_floor`` (default 0.99:
        the final training accuracy below which a configuration has not trained and is not tested),
        ``preregistered`` (``{"variant": name, "alpha": value}``, the configuration named before the runs)

    Returns
    -------
    two :class:`Claim` (the preregistered configuration; the configuration each variant's training loss
    chooses); their cases (dim ``case``) hold the seed-mean test accuracy with its interval
    """
    reference = float(opts.get("reference", 0.66))
    floor = float(opts.get("train_floor", 0.99))
    pre = dict(opts.get("preregistered", {}))
    rows = _configurations(stores, reference)
    for r in rows:
        r["decision"] = _decide(r["accuracy_lo"], r["accuracy_hi"], reference)
        r["trained"] = bool(r["train_accuracy"] >= floor)

    def judged(chosen: list[dict], label: str, question: str, how: str) -> Claim:
        v = verdict([r["decision"] for r in chosen], not_tested=[not r["trained"] for r in chosen])
        half = [0.5 * (r["accuracy_hi"] - r["accuracy_lo"]) for r in chosen]
        said = "; ".join(
            f"{r['variant']}, alpha = {r['alpha']:g}: {interval(r['accuracy'], r['accuracy_lo'], r['accuracy_hi'])} "
            f"over {r['n_seeds']} seeds (train accuracy {r['train_accuracy']:.3f}; {r['above']} of {r['nets']} nets "
            f"at or above {reference:g})"
            for r in chosen
        )
        cases = xr.Dataset(
            {
                k: ("case", [r[k] for r in chosen])
                for k in ("accuracy", "accuracy_lo", "accuracy_hi", "train_accuracy", "alpha")
            },
            coords={"case": [r["variant"] for r in chosen]},
        )
        cases["holds"] = ("case", [np.nan if r["decision"] is None else float(r["decision"]) for r in chosen])
        cases["holds"].attrs["long_name"] = f"95% interval of the expected test accuracy above {reference:g}"
        return Claim(
            label,
            question,
            v,
            f"{how}: {said or 'none'}. Power: the interval's half-width is "
            f"{', '.join(f'{h:.3f}' for h in half) or '-'}, so an expected accuracy within that much of "
            f"{reference:g} cannot be told apart from it. A configuration whose final training accuracy is below "
            f"{floor:g} has not trained and is not tested.",
            cases=cases,
        )

    out = []
    pick = [r for r in rows if r["variant"] == pre.get("variant") and np.isclose(r["alpha"], pre.get("alpha", np.nan))]
    if pre:
        out.append(
            judged(
                pick,
                "Verdict 1",
                f"does the configuration named before the runs reach {reference:g}?",
                "chosen on pilot seeds that are not in the store",
            )
        )
    by_train = []
    for name in stores:
        mine = [r for r in rows if r["variant"] == name and r["diverged"] == 0 and np.isfinite(r["train_loss"])]
        if mine:
            by_train.append(min(mine, key=lambda r: r["train_loss"]))
    out.append(
        judged(
            by_train,
            "Verdict 2",
            f"does the configuration the training loss chooses reach {reference:g}?",
            "in each variant, the alpha with the lowest final training loss and no diverged run",
        )
    )
    columns = (
        "variant", "N", "gamma", "alpha", "steps", "train accuracy", "test accuracy [95% CI]",
        f"nets >= {reference:g}", "best record's test accuracy (chosen on the test set)", "diverged runs",
    )  # fmt: skip
    table = tuple(
        (
            r["variant"], str(r["width"]), f"{r['gamma']:g}", f"{r['alpha']:g}", f"{r['steps']:,}",
            f"{r['train_accuracy']:.3f}", interval(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
            f"{r['above']} of {r['nets']}", f"{r['peak_accuracy']:.3f}", str(r["diverged"]),
        )
        for r in rows
    )  # fmt: skip
    last = out[-1]
    out[-1] = Claim(
        last.label, last.question, last.verdict, last.summary, cases=last.cases, columns=columns, rows=table,
        notes="Every configuration at its final record (test accuracy: seed mean with its Student-t interval). "
        "The column of the best record picks the record by its test accuracy and is optimistic: shown for "
        "comparison with baselines that report their best evaluation, never judged.",
    )  # fmt: skip
    return out
