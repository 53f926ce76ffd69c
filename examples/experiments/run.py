"""Re-run the seed papers' numerical studies as ensembles and write EXPERIMENTS.md (``make experiments``).

Each study is a TOML file beside this script (its format: :func:`collectors.load_study`). Stores go to ``--out``
(resumed when present); figures to ``<doc dir>/experiments/``; every number in the document comes from the stores
through the library's claims (``ensemble_stats.claims``: each study's ``claims(stores, opts)``), never by hand.
``untested.toml`` lists the claims no study has tested yet.

    python examples/experiments/run.py                       # every study at its default size
    python examples/experiments/run.py --only collapse --scale full   # the paper-size run (on a GPU)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

import ensemble_stats as es
from collectors import Architecture, digits, learning_rates, load_study, run_sweep

HERE = Path(__file__).resolve().parent
STUDIES = ("shallow", "deep", "clt", "conditioning", "collapse", "expansion", "lazy", "catapult", "anchor", "rates")
SCALES = ("smoke", "default", "full")


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
    "shallow": _claims("shallow"),
    "deep": _claims("deep", lambda analysis: {"layer_rates": _deep_layer_rates}),
    "clt": _claims("clt"),
    "conditioning": _claims(
        "conditioning", lambda analysis: {"kernel_x": digits(n_test=int(analysis.get("kernel_points", 200))).grid.x}
    ),
    "collapse": _claims("collapse"),
    "expansion": _claims("expansion"),
    "lazy": _claims("lazy"),
    "catapult": _claims("catapult"),
    "anchor": _claims("anchor"),
    "rates": _claims("rates"),
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
        "**does not hold** only when every case agrees; otherwise **inconclusive**, with the count. Cases that hold "
        "by construction (at t = 0 by the init law, or by common random numbers) and cases whose premise is not "
        "reached (e.g. nets that did not train as far as the claim is about) are counted apart and are no "
        "evidence; a claim with no other case is **true by construction** or **not tested**.",
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
    untested = tomllib.loads((HERE / "untested.toml").read_text())["untested"]
    parts += [f"- {u['claim']}. What it takes: {u['need']}." for u in untested]
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
