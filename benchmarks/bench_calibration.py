"""Coverage of every interval the toolkit reports, by Monte Carlo against known truth (`make calibration`).

For S in {4, 8, 16, 32} seeds, independent and NNGP-correlated grids, Gaussian, heavy-tailed (Student t, 5 dof)
and skewed seed distributions: the coverage of the nominal 95% intervals with its Monte-Carlo standard error,
for the default methods and for version 0.1's ("legacy"), and the median relative widths at S = 8 side by side.
"""

from __future__ import annotations

import argparse
import time

from ensemble_stats.testing import INTERVALS, interval_coverage

SHORT = ["var pt", "var pool", "b2 pt", "b2 pool", "mse pool", "mean pt", "slope", "coef"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[4, 8, 16, 32])
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"coverage of nominal 95% intervals, % (Monte-Carlo s.e.), {args.replicates} replicates per cell")
    print("intervals: " + ", ".join(f"{s} = {name}" for s, name in zip(SHORT, INTERVALS, strict=True)))
    head = f"{'S':>3} {'grid':>6} {'seeds':>8} {'method':>7} " + " ".join(f"{s:>11}" for s in SHORT)
    print(head)
    widths = {}
    low = []
    for S in args.seeds:
        for corr, grid in ((0.0, "indep"), (1.0, "nngp")):
            for noise in ("gaussian", "student", "skewed"):
                for method in ("legacy", "auto"):
                    c = interval_coverage(
                        n_seeds=S, replicates=args.replicates, grid_correlation=corr, noise=noise, ci_method=method
                    )
                    cells = " ".join(
                        f"{100 * v:5.1f}({100 * e:3.1f})"
                        for v, e in zip(c.coverage.values, c.mc_stderr.values, strict=True)
                    )
                    print(f"{S:>3} {grid:>6} {noise:>8} {method:>7} {cells}", flush=True)
                    if S == 8:
                        widths[(grid, noise, method)] = c.median_width.values
                    if method == "auto" and S >= 8:
                        low += [
                            f"S={S} {grid} {noise} {name}: {100 * v:.1f}%"
                            for name, v in zip(INTERVALS, c.coverage.values, strict=True)
                            if not 0.93 <= v <= 0.97
                        ]
    print("\nmedian interval width relative to the truth at S = 8 (legacy -> auto)")
    print(f"{'grid':>6} {'seeds':>8} " + " ".join(f"{s:>13}" for s in SHORT))
    for grid in ("indep", "nngp"):
        for noise in ("gaussian", "student", "skewed"):
            old, new = widths[(grid, noise, "legacy")], widths[(grid, noise, "auto")]
            print(f"{grid:>6} {noise:>8} " + " ".join(f"{o:6.3f}>{n:6.3f}" for o, n in zip(old, new, strict=True)))
    print(f"\ncells at S >= 8 outside 93-97% with the default methods: {len(low)}")
    for line in low:
        print("  " + line)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
