"""``ensemble-stats demo``: a small but real sweep, then the analysis, end to end on a local Dask cluster."""

from __future__ import annotations

import time
from pathlib import Path

DEMO_CONFIG = """\
# The embedded demo: docs/theory.md §1.6's circle task, one hidden tanh layer, full-batch GD to scaled time t = 1.
[sweep]
gammas = [0.5, 0.625, 0.75, 0.875, 1.0]
widths = [64, 128, 256, 512, 1024]
seeds = 64
seed_block = 32

[time]
units = "scaled"       # t = k / N, k optimizer steps
horizon = 1.0
n_times = 21           # 0, 0.05, ..., 1

[model]
activation = "tanh"
init = "theory"        # W ~ N(0, 1/d), C ~ N(0, 1): mean-zero output weights

[data]
name = "teacher"
options = { kind = "circle", n_train = 8, n_test = 5 }

[optimizer]
alpha = 1.0            # lr = alpha * N^(2 gamma - 2)
loss = "mse"
batch_size = 0         # full batch

[run]
dtype = "float32"
"""


def run_demo(out: str | Path = "demo-out", *, workers: int = 2, progress: bool = True, echo=print) -> dict:
    """Run the demo sweep into ``out/demo.zarr`` (resuming if present), fit and decompose, print a table."""
    import importlib.util

    import ensemble_stats as es
    from ensemble_stats.store import atomic_output

    from ._config import SweepSpec
    from ._sweep import run_sweep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    can_plot = importlib.util.find_spec("matplotlib") is not None
    if not can_plot:  # said before training, not after it
        echo(
            "matplotlib is not installed: the demo trains and analyses, but skips the report figures "
            "(pip install 'ensemble-stats[report]' adds them)."
        )
    (out / "demo.toml").write_text(DEMO_CONFIG)
    spec = SweepSpec.from_toml(DEMO_CONFIG)
    t0 = time.perf_counter()
    rep = run_sweep(spec, out / "demo.zarr", workers=workers, progress=progress)
    t_sweep = time.perf_counter() - t0
    echo(
        f"sweep: {rep.cells} cells ({rep.skipped} already complete, {rep.trained} trained, {rep.records} records) in {t_sweep:.1f} s"
    )

    t1 = time.perf_counter()
    ds = es.open_ensemble(out / "demo.zarr").persist()  # small: read the store once for every analysis
    results = {
        "bias_variance": es.bias_variance(ds).compute(),
        "fit_rate": es.fit_rate(ds, quantity="variance").compute(),
        "fit_expansion": es.fit_expansion(ds, quantity="variance").compute(),
    }
    for name, key in (
        ("decompose.nc", "bias_variance"),
        ("fit_variance.nc", "fit_expansion"),
        ("rate_variance.nc", "fit_rate"),
    ):
        with atomic_output(out / name) as tmp:
            results[key].to_netcdf(tmp)
    echo(f"analysis: {time.perf_counter() - t1:.1f} s")
    echo(f"store: {out / 'demo.zarr'}   results: {out}/decompose.nc, fit_variance.nc, rate_variance.nc")
    if can_plot:
        echo(f"report: {es.report(ds, out / 'report', results=results)}")
    rate = results["fit_rate"]
    echo("")
    echo(es.rate_table(rate))
    early = rate.sel(time=rate.time[rate.time <= 0.5])
    v = es.verdict(es.covers(early))
    echo(
        f"theory inside the 95% CI at t <= 0.5: {100 * v.agree / v.cases:.0f}% of (gamma, t) cells; mean |slope - theory| "
        f"{float(abs(early.slope - early.theory).mean()):.3f}"
    )
    last = rate.isel(time=-1)
    rows = {
        float(g): tuple(float(last[k].sel(gamma=g)) for k in ("slope", "slope_lo", "slope_hi", "theory"))
        for g in last.gamma.values
    }
    return {"report": rep, "rates": rows}
