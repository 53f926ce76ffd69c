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


ORACLE_RUNS = [(0.5, 4, 0), (0.5, 4, 1), (1.0, 4, 0), (1.0, 4, 1)]
ORACLE_TIMES = 48
ORACLE_POINTS, ORACLE_OUTPUTS = 30, 2


def oracle_store(path):
    """The store the oracle writer fills: 4 runs x 48 step-indexed records, time chunks of 4."""
    from collectors import EnsembleStore, EvalGrid

    rng = np.random.default_rng(7)
    grid = EvalGrid(rng.normal(size=(ORACLE_POINTS, 3)), rng.normal(size=(ORACLE_POINTS, ORACLE_OUTPUTS)))
    return EnsembleStore.create(
        path,
        grid,
        gammas=[0.5, 1.0],
        widths=[4],
        seeds=[0, 1],
        times=list(range(ORACLE_TIMES)),
        time_units="step",
        time_chunk=4,
    )


def _oracle_main(argv=None):
    """Write the oracle's records run after run through OutputCollector, checkpointing its state_dict as JSON
    every 6 records (atomically); resume from the checkpoint when one exists. SIGTERM: flush, checkpoint, exit 143.
    """
    import json
    import signal
    import sys

    import torch

    from collectors import OutputCollector
    from tests._models import TableModel
    from tests.conftest import oracle

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--sleep", type=float, default=0.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    store = oracle_store(args.store)
    ckpt = Path(args.ckpt)
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {}
    model = TableModel(ORACLE_POINTS, ORACLE_OUTPUTS)

    def save(run_key, col):
        state[run_key] = col.state_dict()  # flushes first: the checkpoint never outruns the store
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ckpt)

    for g, w, s in ORACLE_RUNS:
        key = f"{g}-{w}-{s}"
        col = OutputCollector(store, gamma=g, width=w, seed=s, resume=True)
        start = 0
        if key in state:
            col.load_state_dict(state[key])
            start = state[key]["next_index"]  # time index t records step t
        for t in range(start, ORACLE_TIMES):
            model.set(oracle(g, w, s, t, ORACLE_POINTS, ORACLE_OUTPUTS))
            col.record(model, t)
            if (t + 1) % 6 == 0:
                save(key, col)
            if stop:
                save(key, col)
                col.close()
                print("stopped", flush=True)
                sys.exit(143)
            if args.sleep:
                time.sleep(args.sleep)
        save(key, col)
        col.close()
    print("done", flush=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["oracle"]:
        _oracle_main(sys.argv[2:])
    else:
        _train_main()


class BlockLogs:
    """A picklable factory of user collectors for run_sweep(collectors=...): each logs its block to a file."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self):
        from collectors import BlockCollector

        folder = self.folder

        class BlockLog(BlockCollector):
            def on_block_start(self, block):
                self.block, self.records = block, []

            def on_record(self, step, outputs, scalars, fields):
                self.records.append([int(step), list(outputs.shape)])

            def on_block_end(self, result):
                import json

                b = self.block
                name = f"w{b.width}-s{b.seeds[0]}.json"
                Path(folder, name).write_text(json.dumps({"members": b.members, "records": self.records}))

        return [BlockLog()]
