"""``ensemble-stats report``: figures and a self-contained HTML page for a store (matplotlib, offline)."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from . import schema
from ._paths import atomic_output, local_store_path
from .errors import ValidationError

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110})
    return plt


def _time_label(ds) -> str:
    units = ds[schema.TIME].attrs.get("units", "")
    return {"scaled": "scaled time t = k / N", "step": "optimizer step", "epoch": "epoch"}.get(units, "time")


def _colors(n):
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _fig_curves(ds, out: Path, name: str, var: str, ylabel: str, log: bool = False):
    plt = _plt()
    widths = ds[schema.WIDTH].values
    fig, axes = plt.subplots(1, len(widths), figsize=(3.2 * len(widths), 3.2), sharey=True, squeeze=False)
    m = ds[var].mean(schema.SEED)
    s = ds[var].std(schema.SEED) / np.sqrt(np.maximum(np.isfinite(ds[var]).sum(schema.SEED), 1))
    m, s = m.compute(), s.compute()
    for ax, w in zip(axes[0], widths, strict=True):
        for g, c in zip(ds[schema.GAMMA].values, _colors(ds.sizes[schema.GAMMA]), strict=True):
            mm, ss = m.sel(gamma=g, width=w), s.sel(gamma=g, width=w)
            dims = [d for d in mm.dims if d != schema.TIME]
            mm, ss = mm.mean(dims) if dims else mm, ss.mean(dims) if dims else ss
            ax.plot(ds[schema.TIME], mm, color=c, label=f"gamma = {g:g}")
            ax.fill_between(ds[schema.TIME], mm - 1.96 * ss, mm + 1.96 * ss, color=c, alpha=0.2, lw=0)
        ax.set_title(f"N = {int(w)}")
        ax.set_xlabel(_time_label(ds))
        if log:
            ax.set_yscale("log")
    axes[0][0].set_ylabel(ylabel + " (seed mean, 95% band)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _fig_variance_vs_n(bv, rate, out: Path, name="variance_vs_width.png"):
    plt = _plt()
    last = bv.isel({schema.TIME: -1})
    r = rate.isel({schema.TIME: -1})
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    N = bv[schema.WIDTH].values.astype(float)
    for g, c in zip(bv[schema.GAMMA].values, _colors(bv.sizes[schema.GAMMA]), strict=True):
        v = last.sel(gamma=g)
        ax.errorbar(
            N, v.variance, yerr=[v.variance - v.variance_lo, v.variance_hi - v.variance], fmt="o", color=c, capsize=3
        )
        rr = r.sel(gamma=g)
        ax.plot(
            N,
            np.exp(float(rr.intercept)) * N ** float(rr.slope),
            color=c,
            label=f"gamma={g:g}: slope {float(rr.slope):.2f} [{float(rr.slope_lo):.2f}, {float(rr.slope_hi):.2f}], theory {float(rr.theory):.2f}",
        )
        ax.plot(
            N,
            np.exp(float(rr.intercept)) * N[0] ** float(rr.slope) * (N / N[0]) ** float(rr.theory),
            color=c,
            ls=":",
            lw=1,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width N")
    ax.set_ylabel(f"seed variance at t = {float(last[schema.TIME]):g} (grid mean)")
    ax.set_title("variance vs N: fit (solid), theory slope 1 - 2 gamma (dotted)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _positive(v):
    """The seed-corrected bias^2 is unbiased, so it can be <= 0 where the bias is below the seed noise:
    such points are left out of a log axis (the caption says so) rather than drawn on a misleading symlog."""
    v = np.asarray(v, dtype=float)
    return np.where(v > 0, v, np.nan)


def _fig_bias_variance(bv, out: Path, name="bias_variance.png"):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    last = bv.isel({schema.TIME: -1})
    N = bv[schema.WIDTH].values
    for g, c in zip(bv[schema.GAMMA].values, _colors(bv.sizes[schema.GAMMA]), strict=True):
        v = last.sel(gamma=g)
        axes[0].plot(N, _positive(v.bias2), "o-", color=c, label=f"bias^2, gamma={g:g}")
        axes[0].plot(N, _positive(v.variance), "s--", color=c, label=f"variance, gamma={g:g}")
        wmax = bv.sel(gamma=g).isel({schema.WIDTH: -1})
        axes[1].plot(bv[schema.TIME], _positive(wmax.bias2), color=c, label=f"bias^2, gamma={g:g}")
        axes[1].plot(bv[schema.TIME], _positive(wmax.variance), color=c, ls="--")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("width N")
    axes[0].set_ylabel(f"against the target, t = {float(last[schema.TIME]):g}")
    axes[1].set_yscale("log")
    axes[1].set_xlabel(_time_label(bv))
    axes[1].set_ylabel(f"bias^2 (solid), variance (dashed), N = {int(N[-1])}")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _fig_completeness(ds, out: Path, name="completeness.png"):
    plt = _plt()
    w = ds[schema.WRITTEN].mean([d for d in ds[schema.WRITTEN].dims if d not in (schema.GAMMA, schema.WIDTH)]).compute()
    div = (
        (ds[schema.DIVERGED_STEP] >= 0)
        .sum([d for d in ds[schema.DIVERGED_STEP].dims if d not in (schema.GAMMA, schema.WIDTH)])
        .compute()
    )
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * ds.sizes[schema.WIDTH], 1.0 + 0.5 * ds.sizes[schema.GAMMA]))
    im = ax.imshow(w.values, vmin=0, vmax=1, cmap="cividis", aspect="auto")
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            txt = f"{100 * float(w.values[i, j]):.0f}%" + (
                f"\n{int(div.values[i, j])} div." if int(div.values[i, j]) else ""
            )
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if w.values[i, j] < 0.6 else "black")
    ax.set_xticks(range(w.shape[1]), [str(int(v)) for v in w[schema.WIDTH].values])
    ax.set_yticks(range(w.shape[0]), [f"{v:g}" for v in w[schema.GAMMA].values])
    ax.set_xlabel("width N")
    ax.set_ylabel("gamma")
    ax.set_title("records written (diverged runs counted)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _fig_collapse(cmp, out: Path, name="collapse.png"):
    plt = _plt()
    gammas = cmp[schema.GAMMA].values
    fig, axes = plt.subplots(1, len(gammas), figsize=(3.0 * len(gammas), 3.2), sharey=True, squeeze=False)
    for ax, g in zip(axes[0], gammas, strict=True):
        for w, c in zip(cmp[schema.WIDTH].values, _colors(cmp.sizes[schema.WIDTH]), strict=True):
            s = cmp.sel(gamma=g, width=w)
            ax.plot(cmp[schema.TIME], s.ratio, color=c, label=f"N = {int(w)}")
            ax.fill_between(cmp[schema.TIME], s.ratio_lo, s.ratio_hi, color=c, alpha=0.15, lw=0)
        ax.axhline(1, color="k", ls="--", lw=0.8)
        ax.set_title(f"gamma = {g:g}")
        ax.set_xlabel(_time_label(cmp))
    axes[0][0].set_ylabel("N^(2 gamma - 1) Var / Var K_t")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _table(rate, fit) -> str:
    r = rate.isel({schema.TIME: -1})
    rows = "".join(
        f"<tr><td>{g:g}</td><td>{float(r.sel(gamma=g).slope):.3f}</td><td>[{float(r.sel(gamma=g).slope_lo):.3f}, "
        f"{float(r.sel(gamma=g).slope_hi):.3f}]</td><td>{float(r.sel(gamma=g).theory):.3f}</td>"
        f"<td>{float(fit.coef.sel(gamma=g).isel(term=0).median()):.4g}</td>"
        f"<td>{100 * float((fit.status.sel(gamma=g) == 0).mean()):.0f}%</td></tr>"
        for g in r[schema.GAMMA].values
    )
    return (
        f"<table><caption>Rates at t = {float(r[schema.TIME]):g} and the variance law fit</caption>"
        "<tr><th>gamma</th><th>slope of log Var vs log N</th><th>95% CI</th><th>theory 1 - 2 gamma</th>"
        "<th>median leading coefficient</th><th>cells fitted</th></tr>" + rows + "</table>"
    )


def report(
    ds: xr.Dataset, out: str | os.PathLike, *, train_x=None, train_y=None, progress: Callable[[str], None] | None = None
) -> Path:
    """Write the figures and ``index.html`` for an ensemble Dataset into ``out``.

    Figures: test loss / accuracy vs time per gamma at each width; seed variance vs N (log-log) with CIs, the
    fitted slope and the theory slope; bias^2 and variance vs N and vs time; the variance collapse ratio when
    ``train_x``/``train_y`` are given (shallow theory-init sweeps); the completeness map; a table of rates.

    Returns
    -------
    Path of ``index.html``
    """
    target = _check_report_target(out)
    with atomic_output(target, "report --out") as tmp:
        tmp.mkdir()
        _write_report(ds, tmp, train_x=train_x, train_y=train_y, progress=progress)
        (tmp / REPORT_MARKER).write_text("written by ensemble-stats report; the folder is replaced whole on rewrite\n")
    return target / "index.html"


REPORT_MARKER = ".ensemble-stats-report"


def _check_report_target(out) -> Path:
    """The report folder to (re)write; a file, a store or any folder that is not a report is refused."""
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


def _without_extra(res: xr.Dataset, ds: xr.Dataset) -> xr.Dataset:
    """Results averaged over extra sweep dims (e.g. data_seed), for the figures and the table."""
    extra = [d for d in ds.attrs.get(schema.ATTR_EXTRA_DIMS, ()) if d in res.dims]
    return res.mean(extra, keep_attrs=True) if extra else res


def _write_report(ds, out: Path, *, train_x, train_y, progress) -> None:
    from ._fit import fit_expansion, fit_rate
    from ._stats import bias_variance

    say = progress or (lambda s: None)
    ds = ds.persist() if ds[schema.PREDICTION].nbytes < 2**30 else ds
    figures: list[tuple[str, str]] = []
    say("completeness map")
    figures.append(("Completeness: records written per (gamma, N), diverged runs counted", _fig_completeness(ds, out)))
    for var, label, log in (
        (schema.TEST_LOSS, "test loss", True),
        (schema.ACCURACY, "test accuracy", False),
        (schema.TRAIN_LOSS, "train loss", True),
        (schema.TRAIN_ACCURACY, "train accuracy", False),
    ):
        if var in ds and bool(np.isfinite(ds[var]).any()):
            say(f"{label} curves")
            figures.append(
                (
                    f"{label} vs time, one line per gamma, at each width",
                    _fig_curves(ds, out, f"{var}.png", var, label, log),
                )
            )
    multi = ds.sizes[schema.WIDTH] >= 2 and ds.sizes[schema.SEED] >= 3
    table = "<p>Fewer than 2 widths or 3 seeds: no fits.</p>"
    if multi:
        say("bias-variance decomposition")
        bv = _without_extra(bias_variance(ds).compute(), ds)
        say("rates and fits")
        rate = _without_extra(fit_rate(ds).compute(), ds)
        fit = _without_extra(fit_expansion(ds, quantity="variance").compute(), ds)
        figures.append(("Seed variance vs N with 95% CIs, fitted and theory slopes", _fig_variance_vs_n(bv, rate, out)))
        figures.append(
            (
                "Bias^2 and variance against the target, vs N and vs time (bias^2 estimates <= 0, where the bias is below the seed noise, are not drawn)",
                _fig_bias_variance(bv, out),
            )
        )
        table = _table(rate, fit)
        if train_x is not None and train_y is not None:
            from .theory import compare_to_theory

            say("variance collapse")
            cmp = _without_extra(compare_to_theory(ds, train_x, train_y).compute(), ds)
            figures.append(
                ("Parameter-free collapse N^(2 gamma - 1) Var / Var K_t (docs/theory.md §9.3)", _fig_collapse(cmp, out))
            )
    src = html.escape(str(ds.encoding.get("source", "in-memory dataset")))
    body = "".join(
        f'<figure><img src="{html.escape(f)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for c, f in figures
    )
    dims = ", ".join(f"{d}={n}" for d, n in ds[schema.PREDICTION].sizes.items())
    extra = list(ds.attrs.get(schema.ATTR_EXTRA_DIMS, ()))
    if extra:
        dims += f" (figures and table average the results over {', '.join(extra)})"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ensemble-stats report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}img{{max-width:100%}}
figure{{margin:1.5em 0}}figcaption{{font-size:0.9em;color:#444}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}caption{{text-align:left;font-weight:bold}}</style>
</head><body><h1>Ensemble report</h1><p>Store: <code>{src}</code><br>Dims: {html.escape(dims)}</p>
{table}{body}</body></html>
"""
    (out / "index.html").write_text(page)
