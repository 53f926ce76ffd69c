"""How many seeds antithetic pairs save when measuring the bias (docs/theory.md §11).

Trains the circle task (one hidden tanh layer, full-batch GD, theory init, float64) twice with the same number of
seeds at each (gamma, N): independent seeds, and antithetic pairs (the second member of each pair has its readout
negated). For each the standard error of the seed mean on the grid is the standard error of any bias measured
from it; the seeds needed for a target standard error scale as S * (se / target)^2, so their ratio is the gain.
Run: python examples/antithetic_gain.py --out demo-out [--seeds 128]   (about a minute on 2 cores)
"""

import argparse
from pathlib import Path

import numpy as np

import ensemble_stats as es
from collectors import EnsembleStore, TrainConfig, teacher, train_block


def train(path: Path, data, gammas, widths, seeds, times, antithetic: bool):
    store = EnsembleStore.create(
        path, data.grid, gammas=gammas, widths=widths, seeds=seeds, times=times, seed_chunk=len(seeds),
        dtype="float64", antithetic=antithetic, train=(data.x_train, data.y_train),
    )  # fmt: skip
    cfg = TrainConfig(dtype="float64", antithetic=antithetic)
    for w in widths:
        train_block(store, data, width=w, gammas=gammas, seeds=seeds, config=cfg)
    return es.open_ensemble(path)


def main(out: Path, n_seeds: int, target: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = teacher()
    gammas, widths, times = [0.75, 0.875], [128, 512], [0.0, 1.0, 4.0]
    seeds = list(range(n_seeds))
    runs = {a: train(out / f"gain_{a}.zarr", data, gammas, widths, seeds, times, a) for a in (False, True)}
    # stderr of the seed mean per grid point (pairs as units where antithetic), pooled as an RMS over the grid
    se = {a: np.sqrt((es.seed_mean(ds)["stderr"] ** 2).mean(["point", "output"])) for a, ds in runs.items()}
    bias = es.bias_variance(runs[True], reference=es.compare_to_theory(runs[True])["h"])
    rows = []
    for g in gammas:
        for w in widths:
            for t in times[1:]:
                sel = {"gamma": g, "width": w, "time": t}
                plain, anti = float(se[False].sel(sel)), float(se[True].sel(sel))
                need_plain = int(np.ceil(n_seeds * (plain / target) ** 2))
                need_anti = int(np.ceil(n_seeds * (anti / target) ** 2))
                b = bias.sel(sel)
                rows.append(
                    [
                        f"{g:g}", w, f"{t:g}", f"{plain:.2e}", f"{anti:.2e}", f"{(plain / anti) ** 2:.1f}",
                        need_plain, need_anti,
                        es.interval(*(np.sqrt(max(float(v), 0.0)) for v in (b.bias2, b.bias2_lo, b.bias2_hi)), 4),
                    ]
                )  # fmt: skip
    header = [
        "gamma",
        "N",
        "t",
        "se plain",
        "se pairs",
        "gain",
        f"seeds for se={target:g}",
        "with pairs",
        "|bias| [95%]",
    ]
    print(f"{n_seeds} seeds per cell ({n_seeds // 2} antithetic pairs); bias against the kernel limit h_t")
    print(es.format_table(header, rows))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    ap.add_argument("--seeds", type=int, default=128)
    ap.add_argument("--target", type=float, default=1e-3, help="the bias standard error to reach")
    a = ap.parse_args()
    main(a.out, a.seeds, a.target)
