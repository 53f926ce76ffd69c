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

    import numpy as np

    import ensemble_stats as es
    from ensemble_stats._paths import atomic_output

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
    ds = es.open_ensemble(out / "demo.zarr").persist()  # small: read the store once for the three analyses
    bv = es.bias_variance(ds)
    rate = es.fit_rate(ds, quantity="variance").compute()
    fit = es.fit_expansion(ds, quantity="variance").compute()
    for name, res in (("decompose.nc", bv.compute()), ("fit_variance.nc", fit), ("rate_variance.nc", rate)):
        with atomic_output(out / name) as tmp:
            res.to_netcdf(tmp)
    echo(f"analysis: {time.perf_counter() - t1:.1f} s")
    echo(f"store: {out / 'demo.zarr'}   results: {out}/decompose.nc, fit_variance.nc, rate_variance.nc")
    if can_plot:
        data = spec.load_data()
        index = es.report(ds, out / "report", train_x=data.x_train, train_y=data.y_train)
        echo(f"report: {index}")
    t_last = float(ds.time[-1])
    echo(f"\nslope of log(seed variance) vs log N, pooled over the grid, at t = {t_last:g} (95% CI):")
    echo(f"{'gamma':>7} {'slope':>8} {'95% CI':>19} {'theory 1-2g':>12} {'inside':>7}")
    rows = {}
    last = rate.isel(time=-1)
    for g in last.gamma.values:
        r = last.sel(gamma=g)
        inside = bool(r.slope_lo <= r.theory <= r.slope_hi)
        rows[float(g)] = (float(r.slope), float(r.slope_lo), float(r.slope_hi), float(r.theory))
        echo(
            f"{g:>7.3f} {float(r.slope):>8.3f}   [{float(r.slope_lo):6.3f}, {float(r.slope_hi):6.3f}] {float(r.theory):>12.3f} {'yes' if inside else 'no':>7}"
        )
    early = rate.sel(time=rate.time[rate.time <= 0.5])
    cover = float(((early.slope_lo <= early.theory) & (early.theory <= early.slope_hi)).mean())
    echo(
        f"theory inside the 95% CI at t <= 0.5: {100 * cover:.0f}% of (gamma, t) cells; mean |slope - theory| "
        f"{float(np.abs(early.slope - early.theory).mean()):.3f}"
    )
    return {"report": rep, "rates": rows}
