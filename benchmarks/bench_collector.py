"""Benchmark: collector overhead on a reference training loop, and store write throughput vs np.save.

Reference loop (issue 2): one-hidden-layer tanh net, N = 1024, d = 64, batch 32, 2000 SGD steps, 50 recordings
on a 1000-point grid. Runs with and without the collector alternate; medians of 5 each.

Run: make bench   (or python benchmarks/bench_collector.py [--repeats 5])
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from collectors import EnsembleStore, EvalGrid, OutputCollector

N, D, BATCH, STEPS, RECORDS, POINTS = 1024, 64, 32, 2000, 50, 1000


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, N), nn.Tanh(), nn.Linear(N, 1))


def train(model, x, y, collector: OutputCollector | None) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    t0 = time.perf_counter()
    handle = collector.attach(model, opt) if collector else None  # records step 0: timed too
    for k in range(STEPS):
        i = (k * BATCH) % (x.shape[0] - BATCH)
        opt.zero_grad()
        loss = 0.5 * ((model(x[i : i + BATCH]) - y[i : i + BATCH]) ** 2).mean()
        loss.backward()
        opt.step()
    if handle:
        handle.detach()
    return time.perf_counter() - t0


def bench_overhead(repeats: int, root: Path) -> dict:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(8192, D)), dtype=torch.float32)
    y = torch.tensor(rng.normal(size=(8192, 1)), dtype=torch.float32)
    grid = EvalGrid(rng.normal(size=(POINTS, D)), rng.normal(size=(POINTS, 1)))
    times = np.linspace(0, STEPS, RECORDS).round()
    store = EnsembleStore.create(
        root / "overhead.zarr",
        grid,
        gammas=[0.5],
        widths=[N],
        seeds=list(range(repeats + 1)),
        times=times,
        time_units="step",
    )
    train(make_model(0), x, y, None)  # warm-up of both paths (thread pools, zarr's event loop)
    train(make_model(0), x, y, OutputCollector(store, gamma=0.5, width=N, seed=repeats))
    gx = torch.tensor(grid.x, dtype=torch.float32)

    def evaluations_alone(model) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(RECORDS):
                model(gx)
        return time.perf_counter() - t0

    times = {"plain": [], "sync": [], "background": [], "eval": []}
    for r in range(repeats):
        times["plain"].append(train(make_model(r), x, y, None))
        times["eval"].append(evaluations_alone(make_model(r)))
        for mode in ("sync", "background"):
            store.array("written")[:] = False  # reuse the run slot: the collector refuses runs with records
            col = OutputCollector(store, gamma=0.5, width=N, seed=r, background=mode == "background")
            times[mode].append(train(make_model(r), x, y, col))
    return {k: (statistics.median(v), v) for k, v in times.items()}


def bench_throughput(root: Path, name: str, runs: int, records: int, points: int, outputs: int) -> dict:
    """Write `runs` whole runs through the store (one write_records per run) and the same arrays with np.save."""
    rng = np.random.default_rng(1)
    grid = EvalGrid(rng.normal(size=(points, 4)), rng.normal(size=(points, outputs)))
    data = rng.normal(size=(runs, records, points, outputs)).astype(np.float32)
    store = EnsembleStore.create(
        root / f"{name}.zarr",
        grid,
        gammas=[0.5],
        widths=[8],
        seeds=list(range(runs)),
        times=list(range(records)),
        time_units="step",
        time_chunk=records,
    )
    steps = np.arange(records)
    t0 = time.perf_counter()
    for s in range(runs):
        store.write_records((0, 0, s), steps, data[s], steps)
    t_store = time.perf_counter() - t0
    npdir = root / f"{name}-npy"
    npdir.mkdir()
    t0 = time.perf_counter()
    for s in range(runs):
        np.save(npdir / f"run{s}.npy", data[s])
    t_np = time.perf_counter() - t0
    mb = data.nbytes / 1e6
    return {
        "name": name,
        "MB": mb,
        "per_run_MB": mb / runs,
        "store": mb / t_store,
        "npsave": mb / t_np,
        "ratio": t_np / t_store,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as d:
        root = Path(d)
        o = bench_overhead(args.repeats, root)
        tps = [
            bench_throughput(root, "reference-grid", runs=64, records=50, points=POINTS, outputs=1),
            bench_throughput(root, "digits-grid", runs=32, records=50, points=1797, outputs=10),
            bench_throughput(root, "mnist-test-grid", runs=8, records=50, points=10000, outputs=10),
        ]
    print(
        f"collector overhead: N={N} d={D} batch={BATCH} steps={STEPS} records={RECORDS} grid={POINTS}, median of {args.repeats}"
    )
    plain = o["plain"][0]
    print(
        f"  the {RECORDS} grid evaluations alone: {o['eval'][0]:.3f} s = {100 * o['eval'][0] / plain:.1f}% of the plain loop"
    )
    for mode, label in (
        ("plain", "without collector"),
        ("sync", "collector, sync"),
        ("background", "collector, background"),
    ):
        med, runs = o[mode]
        extra = "" if mode == "plain" else f"  overhead {100 * (med / plain - 1):+.1f}% (target <= +5%)"
        print(f"  {label:<22} {med:.3f} s   runs: {', '.join(f'{v:.3f}' for v in runs)}{extra}")
    print("store write throughput vs np.save of the same arrays to the same disk (crc32c, one write per run):")
    for t in tps:
        print(
            f"  {t['name']:<16} {t['MB']:6.0f} MB ({t['per_run_MB']:5.2f} MB/run)  store {t['store']:6.0f} MB/s  "
            f"np.save {t['npsave']:6.0f} MB/s  ratio {t['ratio']:.2f} (target >= 0.5)"
        )


if __name__ == "__main__":
    main()
