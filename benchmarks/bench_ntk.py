"""Benchmark: what a record of the empirical NTK costs, in time and bytes, beside a record of outputs alone.

A block of S ScaledMLP members (one hidden tanh layer, N = 1024, d = 64, float32) on a grid of P = 100 points,
O = 1 and O = 10 outputs. The same block is recorded by ``train_block`` three ways, interleaved, --repeats each:
outputs only; outputs + NTKCollector (NTK on all P points and the displacement) by its closed form for one
hidden layer, and by the torch.func Jacobian product (``autodiff=True``, the path of any other model); and 100
training steps without records, for scale. Times are medians; bytes are what the store holds on disk per member and record.

Run: make bench   (or python benchmarks/bench_ntk.py [--members 8] [--repeats 3])
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from collectors import DataSet, EnsembleStore, EvalGrid, NTKCollector, TrainConfig, train_block

N, D, P, M = 1024, 64, 100, 256


def _data(outputs: int) -> DataSet:
    rng = np.random.default_rng(0)
    x, xg = rng.normal(size=(M, D)) / D**0.5, rng.normal(size=(P, D)) / D**0.5
    return DataSet("synthetic", x, rng.normal(size=(M, outputs)), EvalGrid(xg, rng.normal(size=(P, outputs))))


def _run(root: Path, data: DataSet, S: int, times, ntk: bool, autodiff: bool = False) -> tuple[float, int]:
    path = root / f"s{time.time_ns()}.zarr"
    store = EnsembleStore.create(
        path, data.grid, gammas=[0.5], widths=[N], seeds=list(range(S)), times=times, time_units="step",
        seed_chunk=S, **({"ntk_points": "all", "layers": ["W1", "C"]} if ntk else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    train_block(
        store, data, width=N, gammas=[0.5], seeds=range(S), config=TrainConfig(),
        collectors=[NTKCollector(autodiff=autodiff)] if ntk else [],
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    ntk_bytes = sum(f.stat().st_size for f in (path / "ntk").rglob("*") if f.is_file()) if ntk else 0
    return seconds, ntk_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    S = args.members
    print(f"NTK record cost: S = {S} members, N = {N}, d = {D}, P = {P} grid points, float32; one record at step 0")
    print(f"{'outputs':>7} {'record s':>9} {'+NTK s':>8} {'NTK s/member':>12} {'autodiff s/member':>17} "
          f"{'100 steps s':>11} {'NTK bytes/member':>16} {'raw P^2 O^2 x 4':>15}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for O in (1, 10):  # noqa: E741
            data = _data(O)
            _run(root, data, S, [0], True)  # warm up
            plain, with_ntk, auto, steps, nbytes = [], [], [], [], 0
            for _ in range(args.repeats):
                plain.append(_run(root, data, S, [0], False)[0])
                t, nbytes = _run(root, data, S, [0], True)
                with_ntk.append(t)
                auto.append(_run(root, data, S, [0], True, autodiff=True)[0])
                steps.append(_run(root, data, S, [100], False)[0])
            p, w, a, s = (statistics.median(v) for v in (plain, with_ntk, auto, steps))
            print(f"{O:>7} {p:>9.3f} {w:>8.3f} {(w - p) / S:>12.4f} {(a - p) / S:>17.3f} {s:>11.3f} "
                  f"{nbytes // S:>16,} {4 * P * P * O * O:>15,}")  # fmt: skip


if __name__ == "__main__":
    main()
