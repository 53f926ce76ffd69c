"""Benchmark: the sweep on 2 Dask workers vs 1, and the Dask layer's overhead vs calling the trainer directly.

The same 8 cells each way (5 gammas x widths {256, 512} x 32 seeds in blocks of 8, circle task, full-batch GD
to t = 1), each on a fresh store, one torch thread per worker. Cluster start-up is timed separately.
Run: make bench   (or python benchmarks/bench_sweep.py)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from collectors import SweepSpec, prepare_store, run_sweep, train_block

CONFIG = """
[sweep]
gammas = [0.5, 0.625, 0.75, 0.875, 1.0]
widths = [256, 512]
seeds = 32
seed_block = 8
[time]
horizon = 1.0
n_times = 11
[data]
name = "teacher"
options = { kind = "circle", n_train = 8, n_test = 64 }
"""


def direct(spec: SweepSpec, path: Path) -> float:
    torch.set_num_threads(1)
    store = prepare_store(spec, path)
    data = spec.load_data()
    t0 = time.perf_counter()
    for w, block in spec.blocks():
        train_block(store, data, width=w, gammas=spec.gammas, seeds=block, config=spec.train)
    return time.perf_counter() - t0


def on_cluster(spec: SweepSpec, path: Path, workers: int) -> tuple[float, float]:
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("collectors"))  # workers import torch before the clock starts
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        run_sweep(spec, path, client, progress=False)
        return time.perf_counter() - t1, start


def main() -> None:
    spec = SweepSpec.from_toml(CONFIG)
    with tempfile.TemporaryDirectory(dir=".") as d:
        root = Path(d)
        t_direct = direct(spec, root / "direct.zarr")
        t1, s1 = on_cluster(spec, root / "one.zarr", 1)
        t2, s2 = on_cluster(spec, root / "two.zarr", 2)
    print(
        f"sweep: {len(spec.blocks())} cells (5 gammas x widths 256, 512 x 32 seeds in blocks of 8), 1 torch thread per worker"
    )
    print(f"  trainer called directly, one process: {t_direct:.1f} s")
    print(
        f"  Dask, 1 worker: {t1:.1f} s (+{s1:.1f} s cluster start-up)   overhead vs direct {100 * (t1 / t_direct - 1):+.1f}% (target <= 10%)"
    )
    print(
        f"  Dask, 2 workers: {t2:.1f} s (+{s2:.1f} s cluster start-up)   speed-up vs 1 worker {t1 / t2:.2f}x (target >= 1.6x)"
    )


if __name__ == "__main__":
    main()
