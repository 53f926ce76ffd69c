"""Ensemble covariance at initialisation against the NNGP kernel (docs/theory.md §6, 9.13).

2000 random one-hidden-layer ReLU nets (NTK/standard parametrization, gamma = 1/2) on 12 digits images: the
seed covariance of the outputs against the closed-form NNGP, and the relative Frobenius error vs seeds.
Run: python examples/nngp_at_init.py --out demo-out   (seconds)
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from collectors import ScaledMLP, digits
from ensemble_stats import theory


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x = digits(n_test=12).grid.x
    outs = []
    for s in range(2000):
        net = ScaledMLP(x.shape[1], 512, 0.5, activation="relu", init="theory", seed=s, dtype=torch.float64)
        with torch.no_grad():
            outs.append(net(torch.tensor(x)).numpy()[:, 0])
    outs = np.array(outs)
    K = theory.nngp_kernel(x, activation="relu", depth=1)
    counts = [50, 100, 200, 500, 1000, 2000]
    err = [np.linalg.norm(outs[:n].T @ outs[:n] / n - K) / np.linalg.norm(K) for n in counts]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    ax[0].scatter(K.ravel(), (outs.T @ outs / len(outs)).ravel(), s=8, color="#0072B2")
    ax[0].plot([K.min(), K.max()], [K.min(), K.max()], "k--", lw=0.8)
    ax[0].set_xlabel("NNGP kernel K(x, x')")
    ax[0].set_ylabel("seed covariance (2000 nets)")
    ax[1].loglog(counts, err, "o-", color="#D55E00", label="measured")
    ax[1].loglog(counts, err[0] * np.sqrt(counts[0] / np.array(counts)), "k--", lw=0.8, label="S^-1/2")
    ax[1].set_xlabel("seeds S")
    ax[1].set_ylabel("||Sigma_S - K||_F / ||K||_F")
    ax[1].legend()
    fig.savefig(out / "nngp_at_init.png", dpi=120)
    print("relative Frobenius error by seeds:", dict(zip(counts, np.round(err, 4), strict=True)))
    print(f"figure: {out / 'nngp_at_init.png'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    main(ap.parse_args().out)
