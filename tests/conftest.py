from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest


def tree_digest(path: Path) -> str:
    """Hash of every file name and content under ``path`` (missing path hashes to a constant)."""
    h = hashlib.sha256()
    path = Path(path)
    if not path.exists():
        return "absent"
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def oracle(gamma, width, seed, time_index, n_points, output_size) -> np.ndarray:
    """Deterministic float32 values (point, output) for one record: every value checkable exactly."""
    p = np.arange(n_points)[:, None]
    o = np.arange(output_size)[None, :]
    v = gamma * 1000 + width + seed * 0.01 + time_index * 1e-4 + p * 1e-6 + o * 1e-7
    return v.astype(np.float32) + np.sin(p + o + time_index + seed).astype(np.float32)


@pytest.fixture
def small_grid():
    from collectors import EvalGrid

    rng = np.random.default_rng(0)
    return EvalGrid(rng.normal(size=(7, 3)), rng.normal(size=(7, 2)))


@pytest.fixture
def make_store(tmp_path, small_grid):
    from collectors import EnsembleStore

    def make(name="s.zarr", **kw):
        args = dict(gammas=[0.5, 0.75, 1.0], widths=[4, 8], seeds=[0, 1, 2], times=[0, 1, 2, 3, 4], time_units="step")
        args.update(kw)
        return EnsembleStore.create(tmp_path / name, kw.pop("grid", small_grid), **args)

    return make


def store_from_synthetic(path, ds, **create_kw):
    """Write a synthetic ensemble into a real store through EnsembleStore.write_records (one write per run)."""
    from collectors import EnsembleStore, EvalGrid

    grid = EvalGrid(ds.x.values, ds.target.values)
    store = EnsembleStore.create(
        path,
        grid,
        gammas=ds.gamma.values,
        widths=ds.width.values,
        seeds=ds.seed.values,
        times=ds.time.values,
        time_units=ds.time.attrs["units"],
        **create_kw,
    )
    pred = ds.prediction.values
    T = ds.sizes["time"]
    for gi in range(ds.sizes["gamma"]):
        for wi in range(ds.sizes["width"]):
            steps = np.rint(ds.time.values * ds.width.values[wi]).astype(np.int64)
            steps = np.maximum.accumulate(steps + np.arange(T) * (np.diff(steps, prepend=-1) <= 0))
            for si in range(ds.sizes["seed"]):
                store.write_records((gi, wi, si), np.arange(T), pred[gi, wi, si], steps)
    return store
