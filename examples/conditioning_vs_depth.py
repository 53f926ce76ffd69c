"""Condition number of the NNGP Gram matrix vs depth (Agarwal, Awasthi, Kale; docs/theory.md §5).

Centred, normalized activations drive it towards 1 with depth; plain ReLU (not centred) does not.
Run: python examples/conditioning_vs_depth.py --out demo-out   (seconds)
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt

from collectors import digits
from ensemble_stats import theory


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x = digits(n_test=40).grid.x
    depths = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for act, color in (("normalized_relu", "#0072B2"), ("relu", "#D55E00"), ("erf", "#009E73"), ("tanh", "#CC79A7")):
        cn = theory.kernel_condition_number(x, activation=act, depth=depths)  # one recursion for all depths
        ax.semilogy(depths, cn, "o-", label=act, color=color)
        print(f"{act:>16}: " + "  ".join(f"L={L}: {c:.3g}" for L, c in zip(depths, cn, strict=True)))
    ax.set_xlabel("depth L")
    ax.set_ylabel("cond(K^(L)) on 40 digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "conditioning_vs_depth.png", dpi=120)
    print(f"figure: {out / 'conditioning_vs_depth.png'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    main(ap.parse_args().out)
