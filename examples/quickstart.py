"""Quickstart: attach an OutputCollector to your own PyTorch loop, then analyse the ensemble with xarray.

A one-hidden-layer tanh net g(x) = N^-gamma sum_i c_i tanh(w_i . x) learns a 1-D teacher on the unit circle
(docs/theory.md §1.6) by full-batch gradient descent with the theory's learning rate N^(2 gamma - 2), for
several (gamma, width, seed). Outputs on a fixed grid are recorded at scaled times t = k / N.

Run: python examples/quickstart.py --out demo-out
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector


class Net(nn.Module):
    """A user's own 1/N^gamma-scaled shallow net (nothing toolkit-specific)."""

    def __init__(self, d: int, width: int, gamma: float):
        super().__init__()
        self.hidden = nn.Linear(d, width, bias=False)
        self.out = nn.Linear(width, 1, bias=False)
        nn.init.normal_(self.hidden.weight)
        nn.init.uniform_(self.out.weight, -1.0, 1.0)  # mean-zero output weights, as the theory needs
        self.scale = width**-gamma

    def forward(self, x):
        return self.scale * self.out(torch.tanh(self.hidden(x)))


def circle(n: int, offset: float = 0.0):
    theta = 2 * np.pi * (np.arange(n) + offset) / n
    x = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return x, np.sin(3 * theta) + 0.5 * np.cos(theta)


def main(out: Path, gammas=(0.5, 0.75, 1.0), widths=(64, 128, 256, 512), seeds=range(16)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = circle(8)
    grid = EvalGrid(*circle(5, offset=0.5))
    times = np.linspace(0.0, 1.0, 5)
    path = out / "quickstart.zarr"
    store = EnsembleStore.create(
        path,
        grid,
        gammas=list(gammas),
        widths=list(widths),
        seeds=list(seeds),
        times=times,
        time_units="scaled",
        model={
            "architecture": "1-hidden-layer tanh, no bias",
            "init": "W~N(0,I), c~U(-1,1)",
            "lr": "N^(2 gamma-2)",
            "loss": "1/2 mean squared error",
            "optimizer": "full-batch GD",
            "data": "circle M=8",
        },
    )
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)[:, None]
    start = time.perf_counter()
    for gamma in gammas:
        for width in widths:
            for seed in seeds:
                torch.manual_seed(seed)
                model = Net(2, width, gamma)
                opt = torch.optim.SGD(model.parameters(), lr=width ** (2 * gamma - 2))
                collector = OutputCollector(
                    store,
                    gamma=gamma,
                    width=width,
                    seed=seed,
                    resume=True,
                    metrics=lambda m: {"train_loss": float(0.5 * ((m(xt) - yt) ** 2).mean())},
                )
                with collector.attach(model, opt):
                    for _ in range(round(times[-1] * width)):  # t = k / N
                        opt.zero_grad()
                        loss = 0.5 * ((model(xt) - yt) ** 2).mean()
                        loss.backward()
                        opt.step()
    print(f"trained {len(gammas) * len(widths) * len(seeds)} runs in {time.perf_counter() - start:.1f} s -> {path}")

    ds = es.open_ensemble(path)
    print(es.format_info(ds))
    var = ds.prediction.isel(time=-1).var("seed", ddof=1).mean(("point", "output")).compute()
    print("\nseed variance at t = 1 (mean over grid points) and its log-log slope in N:")
    print(f"{'gamma':>6} " + " ".join(f"N={w:<8d}" for w in widths) + "  slope   theory 1-2gamma")
    for g in gammas:
        v = var.sel(gamma=g).values
        slope = np.polyfit(np.log(widths), np.log(v), 1)[0]
        print(f"{g:>6.3f} " + " ".join(f"{x:<10.3g}" for x in v) + f"  {slope:+.2f}   {1 - 2 * g:+.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    main(ap.parse_args().out)
