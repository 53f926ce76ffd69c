"""Benchmark: what an opt-in precision costs in accuracy and gains in speed, against float64, side by side.

The same block (digits, S seeds of two gammas, N hidden units, tanh, cross-entropy, SGD batch 32, the theory's
rates) trained three times from the same initial parameters and batches: float64 (the reference: the float32
draws cast up, trained by the module engine, which equals the fused step in float64), float32
``precision = "ieee"``, and float32 at the device's reduced precision (``"bf16"`` on the CPU, ``"tf32"`` on CUDA).
For each, per gamma and record:

- the outputs' deviation from float64, rms over (seed, point, output), as a fraction of the float64 ensemble's
  seed-to-seed spread (its rms seed sd): how large rounding is beside the variance the toolkit measures;
- the ensemble mean's deviation from float64 in units of its own standard error (sd / sqrt S): whether
  rounding could move an estimate by a visible amount;
- test accuracy of each precision;

and the seconds per step of each (the whole block, records included).

Run: python benchmarks/bench_precision.py [--device cuda] [--seeds 16] [--width 1024] [--steps 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from collectors import EnsembleStore, ScaledMLP, TrainConfig, digits, theory_init, train_block
from ensemble_stats import open_ensemble, schema

GAMMAS = (0.5, 1.0)


def float32_draws(arch, gen, dtype):
    """The theory's initial law drawn in float32 (the float32 runs' draws), then cast to ``dtype``."""
    return {k: v.to(dtype) for k, v in theory_init(arch, gen, torch.float32).items()}


def run(data, root: Path, *, seeds: int, width: int, steps: int, device: str, dtype: str, precision: str):
    store = EnsembleStore.create(
        root / f"{dtype}-{precision}.zarr", data.grid, gammas=list(GAMMAS), widths=[width], seeds=list(range(seeds)),
        times=list(np.linspace(0, steps, 4).round().astype(int)), time_units="step", seed_chunk=seeds,
        check_space=False,
    )  # fmt: skip
    cfg = TrainConfig(loss="cross_entropy", batch_size=32, alpha=1.0, dtype=dtype, device=device, precision=precision)
    factory = None
    if dtype == "float64":
        factory = lambda s, w, g: ScaledMLP(  # noqa: E731
            data.d_in, w, g, data.output_size, init=float32_draws, seed=s, dtype=torch.float64
        ).to(device)
    t0 = time.perf_counter()
    result = train_block(
        store, data, width=width, gammas=list(GAMMAS), seeds=list(range(seeds)), config=cfg, model_factory=factory
    )
    seconds = time.perf_counter() - t0
    if result.diverged:
        raise SystemExit(f"{dtype}/{precision}: members diverged {result.diverged}; lower --steps or the rate")
    return open_ensemble(store).isel(width=0).load(), seconds / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    reduced = "tf32" if args.device.startswith("cuda") else "bf16"
    data = digits()
    kw = dict(seeds=args.seeds, width=args.width, steps=args.steps, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref, s64 = run(data, root, dtype="float64", precision="ieee", **kw)
        runs = {
            "float32 ieee": run(data, root, dtype="float32", precision="ieee", **kw),
            f"float32 {reduced}": run(data, root, dtype="float32", precision=reduced, **kw),
        }
    print(
        f"digits, S = {args.seeds} seeds x gammas {GAMMAS}, N = {args.width}, tanh, cross-entropy, SGD batch 32, "
        f"{args.steps} steps, device {args.device}"
    )
    print(f"float64 reference: {1e3 * s64:.2f} ms per step")
    f64 = ref[schema.PREDICTION].astype(np.float64)
    spread = np.sqrt((f64.std(schema.SEED, ddof=1) ** 2).mean((schema.POINT, schema.OUTPUT)))
    se = f64.std(schema.SEED, ddof=1) / np.sqrt(args.seeds)
    print(
        f"{'precision':<16}{'gamma':>6}{'step':>7}  {'dev / seed sd':>14}{'mean dev / se (max)':>20}"
        f"{'acc':>7}{'acc f64':>8}"
    )
    for name, (ds, sec) in runs.items():
        dev = ds[schema.PREDICTION].astype(np.float64) - f64
        rel = np.sqrt((dev**2).mean((schema.SEED, schema.POINT, schema.OUTPUT))) / spread
        mean_dev = (np.abs(dev.mean(schema.SEED)) / se).max((schema.POINT, schema.OUTPUT))
        for g in GAMMAS:
            for t in ds.time.values[1:]:
                at = dict(gamma=g, time=t)
                print(
                    f"{name:<16}{g:>6g}{int(t):>7}  {float(rel.sel(at)):>14.2e}{float(mean_dev.sel(at)):>20.2e}"
                    f"{float(ds[schema.ACCURACY].sel(at).mean()):>7.3f}{float(ref[schema.ACCURACY].sel(at).mean()):>8.3f}"
                )
        print(f"{name}: {1e3 * sec:.2f} ms per step ({s64 / sec:.2f}x float64)")
    ieee = runs["float32 ieee"][1]
    print(f"float32 {reduced} / float32 ieee speed: {ieee / runs[f'float32 {reduced}'][1]:.2f}x")


if __name__ == "__main__":
    main()
