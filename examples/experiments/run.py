"""Re-run the seed papers' numerical studies as ensembles and write EXPERIMENTS.md (``make experiments``).

Each study is a TOML file beside this script: the sweep tables of ``ensemble-stats run`` plus

* ``[study]``: ``title``, ``claims``, ``differences`` (from the paper, and why), optional ``analysis`` values;
* ``[[variant]]``: ``name`` and ``set``, dotted-key overrides of the sweep tables (one store per variant);
  ``needs = "mnist"`` runs a variant only when ``--mnist PATH`` is given;
* ``[study.smoke]`` / ``[study.full]``: ``set`` overrides applied to every variant at that ``--scale``, an
  optional ``variants`` subset and ``analysis`` overrides.

Stores go to ``--out`` (resumed when present); figures to ``<doc dir>/experiments/``; every number in the
document comes from the stores through the analysis below, never by hand.

    python examples/experiments/run.py                       # every study at its default size
    python examples/experiments/run.py --only collapse --scale full   # the paper-size run (on a GPU)
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import xarray as xr

import ensemble_stats as es
from collectors import Architecture, SweepSpec, digits, learning_rates, run_sweep
from ensemble_stats import plot, schema
from ensemble_stats.errors import ConfigError

HERE = Path(__file__).resolve().parent
STUDIES = ("shallow", "deep", "clt", "conditioning", "collapse", "expansion", "lazy", "catapult")
SCALES = ("smoke", "default", "full")
md, ci = es.format_table, es.interval  # Markdown tables; "m [lo, hi]" cells


def sci(m, lo, hi) -> str:
    """``"m [lo, hi]"`` in 3 significant digits, for quantities spanning decades."""
    return f"{float(m):.3g} [{float(lo):.3g}, {float(hi):.3g}]"


def _set_dotted(raw: dict, key: str, value) -> None:
    table, _, name = key.partition(".")
    if not name:
        raise ConfigError(f"override {key!r}: use 'table.key', e.g. 'sweep.widths'.", "experiment")
    raw.setdefault(table, {})[name] = copy.deepcopy(value)


def load_study(path: Path, scale: str = "default", mnist: str | None = None):
    """Parse a study file: its metadata, analysis options and one validated SweepSpec per variant."""
    raw = tomllib.loads(Path(path).read_text())
    study, variants = raw.pop("study", {}), raw.pop("variant", [])
    scaled = study.get(scale, {}) if scale != "default" else {}
    eta_over_critical = scaled.get("eta_over_critical", study.get("eta_over_critical"))
    analysis = {**study.get("analysis", {}), **scaled.get("analysis", {})}
    wanted, specs = scaled.get("variants"), {}
    for v in variants:
        if (wanted is not None and v["name"] not in wanted) or (v.get("needs") == "mnist" and not mnist):
            continue
        cfg = copy.deepcopy(raw)
        for key, value in {**v.get("set", {}), **scaled.get("set", {})}.items():
            _set_dotted(cfg, key, value)
        if v.get("needs") == "mnist":
            _set_dotted(cfg, "data.options", {"path": str(mnist)})
        if eta_over_critical:
            _set_dotted(cfg, "sweep.alphas", critical_alphas(cfg, eta_over_critical, f"{path.name} [{v['name']}]"))
        specs[v["name"]] = SweepSpec.from_dict(cfg, f"{path.name} [{v['name']}]")
    return {k: study.get(k, "") for k in ("title", "claims", "differences", "paper_budget")}, analysis, specs


def critical_alphas(cfg: dict, multiples, where: str) -> list[float]:
    """``sweep.alphas`` as multiples of the critical rate constant ``theory.critical_alpha`` of the variant's task."""
    from collectors import load_dataset

    widths, gammas = cfg.get("sweep", {}).get("widths", []), cfg.get("sweep", {}).get("gammas", [])
    if len(widths) != 1 or len(gammas) != 1:
        raise ConfigError(
            f"{where}: eta_over_critical needs one width and one gamma per variant (the critical alpha depends on "
            f"both); found widths {widths} and gammas {gammas}.",
            "experiment",
        )
    data = load_dataset(cfg["data"]["name"], **cfg["data"].get("options", {}))
    model = cfg.get("model", {})
    a_c = es.theory.critical_alpha(
        data.x_train, widths[0], gamma=gammas[0], n_outputs=data.output_size,
        activation=model.get("activation", "tanh"), layer_alpha=cfg.get("optimizer", {}).get("layer_alpha") or None,
    )  # fmt: skip
    return [float(m) * a_c for m in multiples]


def _save(fig, figdir: Path, name: str) -> str:
    fig.savefig(figdir / name, dpi=100)
    plt.close(fig)
    return f"experiments/{name}"


def _slope(r) -> str:
    return ci(r.slope, r.slope_lo, r.slope_hi)


def _alpha_map(parts: list[xr.Dataset]) -> xr.Dataset:
    """One (gamma, alpha) map from stores of one config that differ only in alpha (so they share their seeds):
    their per-run variables concatenated along alpha, sorted; a store without an alpha dim is alpha = 1."""
    first = next(p for p in parts if schema.ALPHA in p.dims)
    widths = first.width.values
    per_run = [v for v in first.data_vars if schema.ALPHA in first[v].dims]
    parts = [
        p.sel(width=widths) if schema.ALPHA in p.dims else p.sel(width=widths).expand_dims(alpha=[1.0]) for p in parts
    ]
    joined = {v: xr.concat([p[v] for p in parts], schema.ALPHA) for v in per_run}
    out = first.drop_vars([*per_run, schema.ALPHA]).assign(joined)
    return out.sortby(schema.ALPHA).transpose(schema.ALPHA, ...)


def _shallow_map(base: dict[str, Path], maps: dict[str, Path], figdir: Path, analysis: dict) -> list[str]:
    """The (gamma, alpha) maps: test accuracy where each run's training accuracy has plateaued, and the variance."""
    tol, window = float(analysis.get("plateau_tol", 0.01)), float(analysis.get("plateau_window", 0.2))
    rows, best_rows, figs, equal, tuned, not_reached, n_runs = [], [], [], [], [], 0, 0
    for name, path in maps.items():
        if name.endswith("-fine"):  # joined with its coarse map below
            continue
        stem = name.removesuffix("-alpha-map")
        parts = [path, maps.get(f"{name}-fine"), base.get(stem)]
        ds = _alpha_map([es.open_ensemble(p).load() for p in parts if p is not None])
        spe = int(ds.step.max()) / float(ds.time[-1])  # optimizer steps per epoch
        data = json.loads(ds.attrs["config"])["data"]["name"]
        alive = (ds.diverged_step < 0).all(schema.SEED)  # no seed diverged
        pl = es.plateau(ds.train_accuracy, tol=tol, window=window).compute()
        ok = pl.reached & alive
        t_pl = pl.plateau_time.fillna(float(ds.time[-1]))
        acc = ds.accuracy.sel(time=t_pl)  # each (alpha, gamma, width) at its own plateau epoch
        acc_mean = acc.mean(schema.SEED).where(ok)
        acc_mean.attrs["long_name"] = "test accuracy at the plateau"
        var = es.bias_variance(ds).variance.isel(time=-1).compute()
        var.attrs["long_name"] = "seed variance, last epoch"
        fig, axes = plt.subplots(
            3, ds.sizes["width"], figsize=(3.8 * ds.sizes["width"], 9.4), squeeze=False, layout="constrained"
        )
        last = ds.accuracy.isel(time=-1).mean(schema.SEED).where(alive)
        last.attrs["long_name"] = "test accuracy, last epoch"
        plot.gamma_alpha_map(last, ax=axes[0])
        plot.gamma_alpha_map(acc_mean, ax=axes[1])
        plot.gamma_alpha_map(var, log=True, fmt=".1e", ax=axes[2])
        fig.suptitle(f"{name} (blank: no plateau / diverged)")
        figs.append(f"![{name} map]({_save(fig, figdir, f'shallow-{name}.png')})")
        n_runs += int(ok.size)
        not_reached += int((~pl.reached).sum())
        for w in ds.width.values:
            for a in ds[schema.ALPHA].values:
                good = ok.sel(width=w, alpha=a)
                cell = acc.sel(width=w, alpha=a)
                decided = bool(good.all())
                tr = es.trend(cell).compute() if decided else None
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
                        (ci(tr.rise, tr.rise_lo, tr.rise_hi) + f", {int(tr.drops)} drops")
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
                tr = es.trend(best.drop_vars(schema.ALPHA)).compute()
                tuned.append((data, bool(tr.increasing)))
                best_rows.append(
                    [
                        name,
                        int(w),
                        " / ".join(f"{float(ds[schema.ALPHA][i]):g}" for i in pick.values),
                        " / ".join(f"{float(x):.3f}" for x in best.mean(schema.SEED).values),
                        ci(tr.rise, tr.rise_lo, tr.rise_hi),
                        int(tr.drops),
                        "yes" if tuned[-1][1] else "no",
                    ]
                )
            else:
                tuned.append((data, None))
    decided = [x for x in equal if x is not None]
    v_eq = es.verdict(decided)
    by_data = {d: es.verdict([x for dd, x in tuned if dd == d]) for d in dict.fromkeys(dd for dd, _ in tuned)}
    v_tuned = es.verdict([x for _, x in tuned])
    return [
        f"**Verdict 1b: at equal alpha, judged where training has plateaued, does test accuracy improve "
        f"monotonically as gamma -> 1?** {v_eq.markdown()} in the {len(decided)} (variant, N, alpha) cases where every "
        f"gamma plateaued ({v_eq.agree} of {len(decided)}); {len(equal) - len(decided)} cases are undecided because "
        f"some gamma had not plateaued or diverged ({not_reached} of {n_runs} (gamma, alpha, N) runs never "
        f"plateaued). Each gamma is judged at its own plateau (`es.plateau` of the training accuracy: the first "
        f"epoch from which its seed mean stays within {tol:g} of the end, by a paired 95% interval, over at least "
        f"the last {window:.0%} of training); monotone = no significant drop between neighbouring gammas and a "
        "significant rise from gamma = 1/2 to 1 (`es.trend`, paired over seeds). The effective time in brackets is "
        "t = alpha k / N, the time of the theory's limit at every gamma.",
        "",
        md(
            [
                "variant",
                "N",
                "alpha",
                "test accuracy at the plateau, gamma ascending",
                "plateau epoch (effective time t)",
                "acc(1) - acc(1/2), 95% CI",
                "monotone",
            ],
            rows,
            "markdown",
        ),
        "",
        f"**Verdict 1c: with alpha tuned per gamma, does the test accuracy at the plateau improve as gamma -> 1?** "
        f"{v_tuned.markdown()} overall ({v_tuned.agree} of {v_tuned.cases} (variant, N) cases); by data set: "
        + "; ".join(f"{d} {v.markdown()} ({v.agree} of {v.cases}, {v.undecided} undecided)" for d, v in by_data.items())
        + ". Each gamma at the alpha of its best final test accuracy among the runs that did not diverge; a case is "
        "undecided when one of those runs has not plateaued (then the tuned rate's accuracy at a plateau is unknown).",
        "",
        md(
            [
                "variant",
                "N",
                "best alpha, gamma ascending",
                "its plateau accuracy",
                "acc(1) - acc(1/2)",
                "drops",
                "monotone",
            ],
            best_rows,
            "markdown",
        ),
        "",
        *figs,
    ]


def analyze_shallow(stores: dict[str, Path], figdir: Path, analysis: dict) -> list[str]:
    maps = {k: v for k, v in stores.items() if k.endswith(("-alpha-map", "-alpha-map-fine"))}
    stores = {k: v for k, v in stores.items() if k not in maps}
    extra = ["", *_shallow_map(stores, maps, figdir, analysis)] if maps else []
    figs, mono_rows, var_rows, slope_rows, by_init = [], [], [], [], {}
    acc_ok, var_ok, slope_in, slope0_in, rising, steps_done, paper_bias = [], [], [], [], [], {}, False
    for name, path in stores.items():
        ds = es.open_ensemble(path).load()
        model = json.loads(ds.attrs["config"])["model"]
        paper_bias |= bool(model.get("bias")) and model.get("init") == "paper"
        gammas, widths = ds.gamma.values, ds.width.values
        fig, axes = plt.subplots(2, len(widths), figsize=(3 * len(widths), 5.6), layout="constrained", squeeze=False)
        plot.curves(ds, "accuracy", ax=axes[0])
        plot.curves(ds, "train_accuracy", ax=axes[1])
        figs.append(f"![{name} accuracy]({_save(fig, figdir, f'shallow-{name}-accuracy.png')})")
        k0 = round(0.8 * (ds.sizes["time"] - 1))  # is gamma = 1 still learning over the last fifth of training?
        final = ds.accuracy.isel(time=-1)
        tr = es.trend(final).compute()
        late = ds.accuracy.sel(gamma=gammas[-1])
        gain = es.paired_difference(late.isel(time=-1), late.isel(time=k0)).compute()
        for w in widths:
            t, g = tr.sel(width=w), gain.sel(width=w)
            acc_ok.append(bool(t.increasing))
            rising.append(bool(g.mean_lo > 0))
            means = " / ".join(f"{x:.3f}" for x in final.sel(width=w).mean("seed").values)
            late_gain = (
                f"{ci(g['mean'], g.mean_lo, g.mean_hi)} (epoch {float(ds.time[k0]):g} -> {float(ds.time[-1]):g})"
            )
            mono_rows.append(
                [
                    name,
                    int(w),
                    means,
                    f"{float(t.spearman):+.2f}",
                    ci(t.rise, t.rise_lo, t.rise_hi),
                    int(t.drops),
                    "yes" if t.increasing else "no",
                    late_gain,
                ]
            )
        steps_done[name] = int(ds.step.max())
        bv = es.bias_variance(ds).isel(time=-1).compute()
        for w in widths:
            v = bv.variance.sel(width=w).values
            var_ok.append(bool(np.all(np.diff(v) < 0)))
            rho = scipy.stats.spearmanr(gammas, v).statistic
            var_rows.append(
                [name, int(w), " / ".join(f"{x:.3g}" for x in v), f"{rho:+.2f}", "yes" if var_ok[-1] else "no"]
            )
        if len(widths) >= 2:
            rate0 = es.fit_rate(ds, at=0.0).isel(time=0).compute()
            last = es.fit_rate(ds.isel(time=[-1]), at="record").isel(time=0).compute()
            t_common = float(es.common_times(ds)[-1])
            common = es.fit_rate(ds, at="common").isel(time=0).compute() if t_common > 0 else None
            by_init[name] = (rate0, common if common is not None else last)
            for g in gammas:
                r = (common if common is not None else last).sel(gamma=g)
                slope_in.append(bool(es.covers(r)))
                slope0_in.append(bool(es.covers(rate0.sel(gamma=g))))
                at_t = f"{_slope(r)} (t = {t_common:g})" if common is not None else "no common t > 0"
                slope_rows.append(
                    [
                        name,
                        f"{g:g}",
                        _slope(rate0.sel(gamma=g)),
                        at_t,
                        _slope(last.sel(gamma=g)),
                        f"{float(r.theory):.2f}",
                        "yes" if slope_in[-1] else "no",
                    ]
                )
        fig = plot.variance_vs_width(bv)
        fig.axes[0].set_title(f"{name}: variance at the last epoch")
        figs.append(f"![{name} variance]({_save(fig, figdir, f'shallow-{name}-variance.png')})")
    acc, var, sl, sl0 = es.verdict(acc_ok), es.verdict(var_ok), es.verdict(slope_in), es.verdict(slope0_in)
    init_rows, c0_miss, shift = [], [], {}  # the same data and loss with the paper init and the theory init
    for name in by_init:
        theory_name = f"{name}-theory-init"
        if theory_name not in by_init:
            continue
        (p0, pc), (q0, qc) = by_init[name], by_init[theory_name]
        shift[name] = float((p0.slope - q0.slope).mean())
        for g in p0.gamma.values:
            c0_miss.append((not bool(es.covers(p0.sel(gamma=g)))) and bool(es.covers(q0.sel(gamma=g))))
            init_rows.append(
                [
                    name,
                    f"{g:g}",
                    _slope(p0.sel(gamma=g)),
                    _slope(q0.sel(gamma=g)),
                    _slope(pc.sel(gamma=g)),
                    _slope(qc.sel(gamma=g)),
                    f"{1 - 2 * g:.2f}",
                ]
            )
    init_lines = (
        [
            "",
            "**The init's part in the variance law.** The same runs with the theory init (W1 ~ N(0, 1/d), C ~ N(0, 1), "
            "no biases at init: a mean-zero output) beside the paper init (C ~ U(0, 1) and PyTorch's default biases, "
            "whose output bias c0 adds 1/(3N) to the variance whatever gamma is). At t = 0 the paper init's slope "
            f"misses 1 - 2 gamma where the theory init's covers it in {sum(c0_miss)} of {len(c0_miss)} gammas, and "
            "differs on average (paper minus theory, over gamma; negative: the paper init's is steeper) by "
            + ", ".join(f"{v:+.2f} ({k})" for k, v in shift.items())
            + ". The slopes at a common scaled time (or the last epoch) follow.",
            "",
            md(
                [
                    "variant",
                    "gamma",
                    "t = 0, paper init",
                    "t = 0, theory init",
                    "later, paper init",
                    "later, theory init",
                    "1 - 2 gamma",
                ],
                init_rows,
                "markdown",
            ),
        ]
        if init_rows
        else []
    )
    c0 = (
        (
            "; the paper init's output bias c0 ~ U(-1/sqrt(N), 1/sqrt(N)) (PyTorch's default for a layer of fan-in N) "
            "adds 1/(3N) whatever gamma is, which steepens the t = 0 slope by as much as the init table below "
            "measures: not a small correction where that term is comparable with the hidden units'"
        )
        if paper_bias
        else ""
    )
    return [
        f"**Verdict 1: does accuracy improve monotonically as gamma -> 1?** {acc.markdown()} overall: in {acc.agree} "
        f"of {acc.cases} (variant, N) cases the final test accuracy has no significant drop between neighbouring "
        "gammas (paired over seeds, 95% CI entirely below 0) and acc(gamma = 1) - acc(gamma = 0.5) is significantly "
        f"positive. Where it fails, look at the last column: gamma = 1's accuracy is still rising significantly at the "
        f"end of training in {sum(rising)} of {len(rising)} cases, i.e. these runs stop before the long-time regime "
        "the paper's claim is about. Optimizer steps per run here: "
        + ", ".join(f"{k} {v:,}" for k, v in steps_done.items())
        + " (the paper: 500 MNIST epochs of 3,000 steps, 1.5 million).",
        "",
        md(
            [
                "variant",
                "N",
                "test accuracy at the last epoch, gamma ascending",
                "Spearman rho",
                "acc(1) - acc(0.5), 95% CI",
                "significant drops",
                "monotone",
                "gamma = 1: accuracy gain over the last fifth, 95% CI",
            ],
            mono_rows,
            "markdown",
        ),
        "",
        f"**Verdict 2: does the variance fall as gamma -> 1?** {var.markdown()}: strictly falling in gamma in "
        f"{var.agree} of {var.cases} (variant, N) cases (seed variance of the logits at the last epoch, pooled over the "
        "test grid).",
        "",
        md(["variant", "N", "variance, gamma ascending", "Spearman rho", "falls"], var_rows, "markdown"),
        "",
        f"**Verdict 3: does it fall with N with slope 1 - 2 gamma?** {sl.markdown()}: theory inside the 95% CI of the "
        f"fitted log-log slope in {sl.agree} of {sl.cases} (variant, gamma) cases, at the largest scaled time t = k/N "
        "that every width of the variant reaches (`fit_rate(at='common')`: the theory's N-scaling is at fixed t; the "
        "same epoch is a smaller t at a larger N), or at the last epoch where the widths share no t > 0. At t = 0 the "
        f"hidden units contribute exactly N^(1 - 2 gamma) Var(c s(w.x + b)) to the variance{c0}. The t = 0 column "
        f"contains 1 - 2 gamma in {sl0.agree} of {sl0.cases} cases; a variant's gammas share their initial weights "
        "(common random numbers), so its t = 0 slopes are one draw shifted by -2 (gamma - 0.5) and agree or miss together.",
        "",
        md(
            [
                "variant",
                "gamma",
                "slope at t = 0",
                "slope at a common scaled time",
                "slope at the last epoch",
                "theory 1 - 2 gamma",
                "inside (common t)",
            ],
            slope_rows,
            "markdown",
        ),
        *init_lines,
        "",
        *figs,
        *extra,
    ]


def _deep_layer_rates(widths, gammas, layer_alpha) -> list[float]:
    """The deep study's per-layer rates (W1, W2, W3, C) under the theory's rule, for its rate-spread column."""
    rates = learning_rates(Architecture(64, widths, gammas, 10, "sigmoid", True), layer_alpha=layer_alpha)
    return [rates[k] for k in ("W1", "W2", "W3", "C")]


def _claims(study: str, extra=None):
    """A study moved into the library: its claims, written as the document writes every claim."""

    def analyze(stores: dict[str, Path], figdir: Path, analysis: dict) -> list[str]:
        more = extra(analysis) if extra else {}
        found = es.claims.STUDIES[study].claims(stores, {**analysis, **more, "figdir": figdir})
        return es.claims.to_markdown(found, figure_dir="experiments/")

    return analyze


ANALYSES = {
    "shallow": analyze_shallow,
    "deep": _claims("deep", lambda analysis: {"layer_rates": _deep_layer_rates}),
    "clt": _claims("clt"),
    "conditioning": _claims(
        "conditioning", lambda analysis: {"kernel_x": digits(n_test=int(analysis.get("kernel_points", 200))).grid.x}
    ),
    "collapse": _claims("collapse"),
    "expansion": _claims("expansion"),
    "lazy": _claims("lazy"),
    "catapult": _claims("catapult"),
}


# ----------------------------------------------------------------------------------------------- driver
def run_study(
    name: str, out: Path, figdir: Path, *, scale: str, mnist: str | None, workers: int, progress: bool, train_only=False
):
    meta, analysis, specs = load_study(HERE / f"{name}.toml", scale, mnist)
    meta["budget"] = [budget_line(vname, spec) for vname, spec in specs.items()]
    stores, t_train = {}, 0.0
    for vname, spec in specs.items():
        path = out / name / f"{vname}.zarr"
        print(
            f"[{name}] {vname}: {len(spec.gammas)} gammas x {len(spec.widths)} widths x {len(spec.seeds)} seeds",
            flush=True,
        )
        report = run_sweep(spec, path, workers=workers, progress=progress)
        # training time is kept beside the store, so a resumed run still reports what the training cost
        timing = path.with_suffix(".seconds.json")
        spent = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
        if report.trained:
            spent += report.seconds
            timing.write_text(json.dumps({"seconds": spent, "devices": sorted({spec.train.device})}))
        t_train += spent
        stores[vname] = path
    if train_only:
        return meta, [], t_train, 0.0
    t0 = time.perf_counter()
    lines = ANALYSES[name](stores, figdir, analysis)
    return meta, lines, t_train, time.perf_counter() - t0


def budget_line(vname: str, spec) -> str:
    """One variant's training budget: steps and scaled time per run at the smallest and largest width, FLOP."""
    b = spec.budget(spec.load_data())
    lo, hi = min(b["steps"]), max(b["steps"])
    span = lambda d: f"{d[lo]:,.4g}" if lo == hi else f"{d[lo]:,.4g} (N = {lo}) to {d[hi]:,.4g} (N = {hi})"  # noqa: E731
    return (
        f"{vname}: {span(b['steps'])} optimizer steps per run, scaled time t = k/N {span(b['scaled_time'])}, "
        f"{b['runs_per_width']:,} runs per width, {b['flop']:.2g} FLOP in all (training matrix products)"
    )


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        model = cpu
    return f"{os.cpu_count()} CPU cores ({model}), Python {platform.python_version()}, torch {torch.__version__}, no GPU used"


# claims of the seed papers (and of the theory) that no study here has yet tested in their regime, and what it takes
UNTESTED = (
    (
        "The shallow claims (Yu & Spiliopoulos) at the paper's scale: MNIST, N up to 3000, 500 epochs",
        "the shallow study at `--scale full` with `--mnist PATH` on a GPU: 1.5 million steps per run at N = 3000, about "
        "8e16 FLOP per width; here digits and mnist1d at N <= 400 (the (gamma, alpha) maps) and the paper's widths "
        "for 40 digits epochs",
    ),
    (
        "The deep MLP3's outer-layer sensitivity (Yu & Spiliopoulos, deep) with the rate tuned in more than one "
        "direction, and at the paper's 1500 MNIST epochs",
        "a two-dimensional search per configuration (one alpha for the inner layers, one for the readout; here one "
        "alpha under the paper's rule and one with every layer at the readout's rate): about 10 min per "
        "configuration on 2 cores at 100 epochs; the paper's budget needs a GPU",
    ),
    (
        "The dynamical CLT in the paper's own setting (Chen et al.: a ReLU teacher-student task whose details could "
        "not be retrieved) and past t = 64",
        "the clt study with the paper's task once its details are known; `--scale full` runs t = 256 at N up to "
        "8192 on a GPU",
    ),
)


def assemble(figdir: Path) -> str:
    """EXPERIMENTS.md: the common preamble, then every study's section that has been written, in STUDIES order."""
    parts = [
        "# Experiments: the seed papers' studies, re-run as ensembles",
        "",
        "Generated by `make experiments` (`python examples/experiments/run.py`; `--only NAME` re-runs one study and "
        "rewrites its section); do not edit by hand. Every number below is computed from the stores the configs "
        "produce; each section says its scale and the day it ran.",
        "",
        f"Hardware: {hardware()}.",
        "",
        "Training times are the wall-clock time of the sweeps that filled each store (kept beside it, so a "
        "resumed run reports them too); sweeps that shared the machine with other jobs ran slower.",
        "",
        "Confidence intervals are 95%: t intervals over seeds for seed means, paired over seeds where two gammas "
        "share initial weights (the trainer's common random numbers), seed-jackknife intervals for variances and "
        "fitted slopes, intervals over pairs for antithetic seeds (ensemble_stats). A verdict says **holds** or "
        "**does not hold** only when every case agrees; otherwise **inconclusive**, with the count.",
        "",
    ]
    written = [n for n in STUDIES if (figdir / f"{n}.md").exists()]
    for i, name in enumerate(written, 1):
        text = (figdir / f"{name}.md").read_text()
        parts.append(text.replace("## ", f"## {i}. ", 1))
    missing = [n for n in STUDIES if n not in written]
    if missing:
        parts.append(f"Not yet run: {', '.join(missing)} (`make experiments ARGS='--only {','.join(missing)}'`).\n")
    parts += ["## Claims not yet tested in their regime", ""]
    parts += [f"- {claim}. What it takes: {need}." for claim, need in UNTESTED]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(STUDIES), help=f"comma-separated subset of {STUDIES}")
    ap.add_argument("--scale", choices=SCALES, default="default")
    ap.add_argument("--out", default="experiments-out", help="directory for the stores (resumed when present)")
    ap.add_argument(
        "--doc", default="EXPERIMENTS.md", help="the document to write; figures go to <its dir>/experiments/"
    )
    ap.add_argument("--mnist", default=None, help="a local MNIST directory (IDX files): adds the MNIST variants")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--train-only", action="store_true", help="run (or resume) the sweeps, write no document")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(STUDIES))
    if unknown:
        ap.error(f"unknown studies {unknown}; choose from {STUDIES}")
    doc = Path(args.doc)
    figdir = doc.parent / "experiments"
    figdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) / args.scale
    started = dt.datetime.now(dt.UTC)
    for name in only:
        meta, lines, t_train, t_analysis = run_study(
            name,
            out,
            figdir,
            scale=args.scale,
            mnist=args.mnist,
            workers=args.workers,
            progress=not args.no_progress,
            train_only=args.train_only,
        )
        if args.train_only:
            continue
        diff = "\n".join(f"- {d}" for d in meta["differences"])
        section = [
            f"## {meta['title']}",
            "",
            f"Config: `examples/experiments/{name}.toml` (scale `{args.scale}`, run on {started:%Y-%m-%d}). Training "
            f"took {t_train / 60:.1f} min (sum over its stores, {args.workers} Dask workers), the analysis "
            f"{t_analysis / 60:.1f} min.",
            "",
            f"Claim tested: {meta['claims']}",
            "",
            "Differences from the paper, and why:",
            "",
            diff,
            "",
            "Budget" + (f" (the paper: {meta['paper_budget']})" if meta.get("paper_budget") else "") + ":",
            "",
            *(f"- {b}" for b in meta["budget"]),
            "",
            *lines,
            "",
        ]
        # each study's section is kept beside its figures, so a run of some studies rewrites only theirs
        (figdir / f"{name}.md").write_text("\n".join(section))
        print(f"[{name}] done: training {t_train:.0f} s, analysis {t_analysis:.0f} s", flush=True)
    if args.train_only:
        return 0
    doc.write_text(assemble(figdir))
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
