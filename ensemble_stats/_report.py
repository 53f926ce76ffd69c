"""``ensemble-stats report``: figures and a self-contained HTML page for a store (matplotlib, offline)."""

from __future__ import annotations

import base64
import html
import io
import itertools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from . import schema
from .errors import ValidationError, require
from .store import atomic_output, local_store_path

RESULTS = (
    "bias_variance",
    "fit_rate",
    "fit_expansion",
    "fit_expansion_mean",
    "seed_mean",
    "compare_to_theory",
    "kernel_drift",
)
"""The analysis results a report shows; ``report(..., results=)`` reuses any of them it is given."""


def report(
    ds: xr.Dataset,
    out: str | os.PathLike,
    *,
    results: Mapping[str, xr.Dataset] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a self-contained ``index.html`` (figures embedded) and the figures as PNG files into folder ``out``.

    Figures (:mod:`ensemble_stats.plot`): completeness; loss and accuracy vs time per gamma at each width; seed
    variance vs N with the fitted and theory slopes; bias^2 and variance vs N and vs time; the seed mean at one
    grid value vs N with the fitted mean expansion and its limit h_t; the collapse ratio
    N^(2 gamma - 1) Var / Var K_t where it applies (a shallow theory-init MSE sweep by full-batch GD on scaled
    time with its training set in the store). A table of rates.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`
    out : the report folder (created, or replaced whole if it holds a previous report)
    results : analysis results of ``ds`` already computed, by name (``"bias_variance"``, ``"fit_rate"``,
        ``"fit_expansion"`` (of the variance), ``"fit_expansion_mean"``, ``"seed_mean"`` (of the predictions),
        ``"compare_to_theory"``, ``"kernel_drift"`` for stores with an NTK); the others are computed here

    Returns
    -------
    Path of ``index.html``

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> page = es.report(ds, f"{folder.name}/report")
    >>> page.name
    'index.html'
    >>> folder.cleanup()
    """
    unknown = sorted(set(results or {}) - set(RESULTS))
    if unknown:
        raise ValidationError(f"results: unknown names {unknown}; expected some of {list(RESULTS)}.")
    target = _check_report_target(out)
    require("matplotlib", "the report's figures")  # before any work: the figures are what it writes
    with atomic_output(target, "report --out") as tmp:
        tmp.mkdir()
        _write_report(ds, tmp, dict(results or {}), progress or (lambda s: None))
        (tmp / REPORT_MARKER).write_text("written by ensemble-stats report; the folder is replaced whole on rewrite\n")
    return target / "index.html"


REPORT_MARKER = ".ensemble-stats-report"


def _check_report_target(out) -> Path:
    """Return the report folder to (re)write; a file, a store or any folder that is not a report is refused."""
    target = local_store_path(out, "report --out")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ValidationError(
            f"report --out {target} exists and is not a folder; the report is a folder (index.html and its "
            "figures): choose a new path."
        )
    if target.is_dir() and any(target.iterdir()) and not _is_report(target):
        raise ValidationError(
            f"report --out {target} is a folder that holds something other than an ensemble-stats report; it would "
            "be replaced whole: choose a new or empty folder."
        )
    return target


def _is_report(folder: Path) -> bool:
    if (folder / REPORT_MARKER).is_file():
        return True
    try:  # a report written before the marker existed
        return "<title>ensemble-stats report</title>" in (folder / "index.html").read_text()[:2000]
    except (OSError, UnicodeDecodeError):
        return False


def _analyses(ds: xr.Dataset, results: dict, say) -> tuple[dict, str]:
    """Return the results the figures need, computed where not given; and a note on the time they are at."""
    from ._fit import fit_expansion, fit_rate
    from ._limit import compare_to_theory, kernel_limit_problems
    from ._select import at_common_time, time_units
    from ._stats import bias_variance, seed_mean

    note = ""
    at = ds
    if time_units(ds) != "scaled":
        try:
            at = at_common_time(ds)
            note = f"Rates at the largest scaled time every width reaches, t = k / N = {at[schema.TIME].item():g}."
        except ValidationError:
            note = "The widths share no scaled time: rates compare them record by record (different t = k / N)."
    if "bias_variance" not in results:
        say("bias-variance decomposition")
        results["bias_variance"] = bias_variance(ds).compute()
    if "fit_rate" not in results:
        say("rates")
        results["fit_rate"] = fit_rate(at, at="record").compute()
    if "fit_expansion" not in results:
        say("expansion fit")
        results["fit_expansion"] = fit_expansion(at, quantity="variance").compute()
    if "fit_expansion_mean" not in results:
        say("mean expansion fit")
        results["fit_expansion_mean"] = fit_expansion(at, quantity="mean").compute()
    if "seed_mean" not in results:
        results["seed_mean"] = seed_mean(at).compute()
    if "compare_to_theory" not in results and not kernel_limit_problems(ds):
        say("variance collapse")
        results["compare_to_theory"] = compare_to_theory(ds, decomposition=results["bias_variance"]).compute()
    if schema.NTK in ds and "kernel_drift" not in results and ds.sizes[schema.TIME] >= 2:
        from ._ntk import kernel_drift

        say("kernel drift")
        results["kernel_drift"] = kernel_drift(ds).compute()
    if at is not ds:
        results["_at"] = bias_variance(at).compute()
    return results, note


def _replicate_dims(ds: xr.Dataset) -> list[str]:
    """Extra sweep dims that replicate a setting (e.g. data_seed): figures and tables average over them."""
    return [d for d in ds.attrs.get(schema.ATTR_EXTRA_DIMS, ()) if d not in schema.SETTING_DIMS]


def _without_extra(res: xr.Dataset, ds: xr.Dataset) -> xr.Dataset:
    """Results averaged over the replicate dims, for the figures and the table."""
    extra = [d for d in _replicate_dims(ds) if d in res.dims]
    return res.mean(extra, keep_attrs=True) if extra else res


def _facets(ds: xr.Dataset) -> list[dict]:
    """One selection per value of the setting dims (e.g. each alpha): each gets its own figures and table."""
    dims = [d for d in schema.SETTING_DIMS if d in ds.dims]
    return [dict(zip(dims, v, strict=True)) for v in itertools.product(*(ds[d].values.tolist() for d in dims))]


def _facet_label(sel: dict) -> tuple[str, str]:
    """(caption suffix, file-name suffix) of a facet."""
    if not sel:
        return "", ""
    text = ", ".join(f"{k} = {v:g}" for k, v in sel.items())
    return f" ({text})", "_" + "_".join(f"{k}{v:g}" for k, v in sel.items()).replace(".", "p")


def _png(fig, path: Path) -> str:
    """Save ``fig`` to ``path``, close it, and return it as a data URI for the page."""
    plt = require("matplotlib.pyplot", "the report's figures")

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _write_report(ds: xr.Dataset, out: Path, results: dict, say) -> None:
    from . import plot
    from ._assess import expansion_table, rate_table
    from ._provenance import history_line, source_attrs

    ds = ds.persist() if ds[schema.PREDICTION].nbytes < 2**30 else ds
    figures: list[tuple[str, str, str]] = []  # caption, file, data URI

    def add(caption: str, name: str, fig) -> None:
        figures.append((caption, name, _png(fig, out / name)))

    say("completeness map")
    add(
        "Completeness: records written per (gamma, N), diverged runs counted", "completeness.png", plot.completeness(ds)
    )
    fits = ds.sizes[schema.WIDTH] >= 2 and ds.sizes[schema.SEED] >= 4
    note = ""
    if fits:
        results, note = _analyses(ds, results, say)
        results = {k: _without_extra(v, ds) for k, v in results.items()}
    tables = []
    for sel in _facets(ds):
        cap, suffix = _facet_label(sel)
        sub = ds.sel(sel)
        for var, label in (
            (schema.TEST_LOSS, "test loss"),
            (schema.ACCURACY, "test accuracy"),
            (schema.TRAIN_LOSS, "train loss"),
            (schema.TRAIN_ACCURACY, "train accuracy"),
        ):
            if var in sub and bool(np.isfinite(sub[var]).any()):
                say(f"{label} curves{cap}")
                add(
                    f"{label} vs time, one line per gamma, at each width{cap}",
                    f"{var}{suffix}.png",
                    plot.curves(sub, var),
                )
        if not fits:
            continue
        r = {k: v.sel(sel) for k, v in results.items()}
        add(
            f"Seed variance vs N with confidence intervals, fitted and theory slopes{cap}",
            f"variance_vs_width{suffix}.png",
            plot.variance_vs_width(r.get("_at", r["bias_variance"]), r["fit_rate"]),
        )
        add(
            "Bias^2 and variance against the target, vs N and vs time (bias^2 estimates <= 0, where the bias is "
            f"below the seed noise, are not drawn){cap}",
            f"bias_variance{suffix}.png",
            plot.bias_variance(r["bias_variance"]),
        )
        add(
            "Seed mean at the first grid value vs N with its intervals, the fitted mean expansion sum_k c_k N^(-p_k) "
            f"and its limit h_t (docs/theory.md §1.3){cap}",
            f"mean_expansion{suffix}.png",
            plot.mean_expansion(r["seed_mean"], r["fit_expansion_mean"]),
        )
        tables.append(rate_table(r["fit_rate"], fit=r["fit_expansion"], fmt="html"))
        tables.append(expansion_table(r["fit_expansion_mean"], fmt="html"))
        if "compare_to_theory" in r:
            add(
                f"Parameter-free collapse N^(2 gamma - 1) Var / Var K_t (docs/theory.md §9.3){cap}",
                f"collapse{suffix}.png",
                plot.collapse(r["compare_to_theory"]),
            )
        if "kernel_drift" in r:
            add(
                f"Lazy vs feature learning: kernel drift and parameter displacement vs N (docs/theory.md §12){cap}",
                f"kernel_drift{suffix}.png",
                plot.kernel_drift(r["kernel_drift"]),
            )
    table = "".join(tables) if fits else "<p>Fewer than 2 widths or 4 seeds: no fits.</p>"
    src = html.escape(str(ds.encoding.get("source", "in-memory dataset")))
    body = "".join(
        f'<figure><img src="{uri}" alt="{html.escape(c)}"><figcaption>{html.escape(c)} '
        f"({html.escape(name)})</figcaption></figure>"
        for c, name, uri in figures
    )
    dims = ", ".join(f"{d}={n}" for d, n in ds[schema.PREDICTION].sizes.items())
    extra = _replicate_dims(ds)
    if extra:
        dims += f" (figures and table average the results over {', '.join(extra)})"
    setting = [d for d in schema.SETTING_DIMS if d in ds.dims]
    if setting:
        dims += f" (figures and tables for each value of {', '.join(setting)})"
    prov = source_attrs(ds)
    trace = html.escape(
        f"store_id {prov.get('source_store_ids', 'none')}, config hash {prov.get('source_config_hashes', 'none')}; "
        f"written {history_line('report')}"
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ensemble-stats report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}img{{max-width:100%}}
figure{{margin:1.5em 0}}figcaption{{font-size:0.9em;color:#444}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}caption{{text-align:left;font-weight:bold}}</style>
</head><body><h1>Ensemble report</h1><p>Store: <code>{src}</code><br>Dims: {html.escape(dims)}<br>{trace}</p>
<p>This page is self-contained (its figures are embedded); the same figures are saved as PNG files beside it.
{html.escape(note)}</p>
{table}{body}</body></html>
"""
    (out / "index.html").write_text(page)
