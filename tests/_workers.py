"""Functions run in spawned processes and subprocesses by the concurrency and crash tests."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

GAMMAS = [0.5, 0.75, 1.0, 0.625]
WIDTHS = [4, 8]
SEEDS = [0]


def concurrent_writer(path: str, run: tuple[float, int, int], start_at: float, grid_seed: int = 0) -> str:
    """Create-or-open the shared store at the same moment as 7 others, then write one run via a collector."""
    import torch

    from collectors import EnsembleStore, EvalGrid, OutputCollector
    from tests._models import TableModel
    from tests.conftest import oracle

    torch.set_num_threads(1)
    rng = np.random.default_rng(grid_seed)
    grid = EvalGrid(rng.normal(size=(50, 3)), rng.normal(size=(50, 2)))
    while time.time() < start_at:
        time.sleep(0.001)
    store = EnsembleStore.create(
        path, grid, gammas=GAMMAS, widths=WIDTHS, seeds=SEEDS, times=list(range(12)), time_units="step", time_chunk=4
    )
    gamma, width, seed = run
    model = TableModel(50, 2)
    with OutputCollector(store, gamma=gamma, width=width, seed=seed) as col:
        for t in range(12):
            model.set(oracle(gamma, width, seed, t, 50, 2))
            col.record(model, t)
    return f"{os.getpid()}"


def _train_main(argv=None):
    """A user's training script with checkpoints: runs (or resumes) one run, sleeping a little per step."""
    import torch

    from collectors import EnsembleStore, EvalGrid, OutputCollector
    from tests._models import Shallow

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sleep", type=float, default=0.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    grid = EvalGrid(rng.normal(size=(20, 2)), rng.normal(size=(20, 1)))
    x = torch.tensor(rng.normal(size=(16, 2)), dtype=torch.float32)
    y = torch.tensor(rng.normal(size=(16, 1)), dtype=torch.float32)
    times = list(range(0, args.steps + 1, 10))
    store = EnsembleStore.create(
        args.store, grid, gammas=[0.75], widths=[32], seeds=[0], times=times, time_units="step", time_chunk=3
    )
    torch.manual_seed(0)
    model = Shallow(2, 32, 0.75)
    opt = torch.optim.SGD(model.parameters(), lr=32 ** (2 * 0.75 - 2) * 4)
    col = OutputCollector(store, gamma=0.75, width=32, seed=0, resume=True)
    ckpt = Path(args.ckpt)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        col.load_state_dict(state["collector"])
        start = state["collector"]["step"]
    with col.attach(model, opt):
        for k in range(start, args.steps):
            opt.zero_grad()
            loss = 0.5 * ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            if (k + 1) % 25 == 0:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "collector": col.state_dict()}, tmp)
                os.replace(tmp, ckpt)
            if args.sleep:
                time.sleep(args.sleep)
    print("done", flush=True)


if __name__ == "__main__":
    _train_main()
