"""Concurrent creators and writers, and a writer killed with SIGKILL then resumed."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import ensemble_stats as es

from . import _workers
from .conftest import oracle

ROOT = Path(__file__).resolve().parents[1]


def test_eight_spawned_processes_create_and_write_one_store_concurrently(tmp_path):
    runs = [(g, w, 0) for g in _workers.GAMMAS for w in _workers.WIDTHS]
    assert len(runs) == 8
    failures = []
    with ProcessPoolExecutor(8, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(int, range(8)))  # warm the workers up so imports do not skew the start
        for trial in range(10):
            path = str(tmp_path / f"trial{trial}.zarr")
            start_at = time.time() + 1.0
            futures = [pool.submit(_workers.concurrent_writer, path, run, start_at) for run in runs]
            pids = {f.result(timeout=120) for f in futures}
            assert len(pids) >= 2, "writers were not spread over processes"
            ds = es.open_ensemble(path, verify=True)
            for g, w, s in runs:
                got = ds.prediction.sel(gamma=g, width=w, seed=s).values
                want = np.stack([oracle(g, w, s, t, 50, 2) for t in range(12)])
                if not np.array_equal(got, want) or not bool(ds.written.sel(gamma=g, width=w, seed=s).all()):
                    failures.append((trial, g, w))
            assert not list(Path(tmp_path).glob(".trial*.creating-*")), "a losing creator left its temp store"
    assert failures == []


def _run_script(store, ckpt, sleep=0.0):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests._workers", "--store", str(store), "--ckpt", str(ckpt), "--sleep", str(sleep)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    ref = _run_script(tmp_path / "ref.zarr", tmp_path / "ref.pt")
    _out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    reference = es.open_ensemble(tmp_path / "ref.zarr").load()

    rng = random.Random(1234)
    for trial in range(3):
        store, ckpt = tmp_path / f"k{trial}.zarr", tmp_path / f"k{trial}.pt"
        proc = _run_script(store, ckpt, sleep=0.004)
        # wait until the run is under way, then kill it at a random moment
        deadline = time.time() + 60
        while not (store / "zarr.json").exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.3, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
        written_at_kill = int(es.open_ensemble(store).written.sum())
        resumed = _run_script(store, ckpt)
        _out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        es.verify_store(store, clean=True)  # a killed writer may leave temp files; they never hold committed data
        got = es.open_ensemble(store, verify=True).load()
        assert written_at_kill < got.written.size
        np.testing.assert_array_equal(got.prediction.values, reference.prediction.values)
        np.testing.assert_array_equal(got.step.values, reference.step.values)
        assert bool(got.written.all())


def test_create_again_opens_the_same_spec_and_refuses_a_different_one(tmp_path, small_grid):
    import pytest

    from collectors import EnsembleStore
    from ensemble_stats.errors import SpecMismatchError

    EnsembleStore.create(tmp_path / "x.zarr", small_grid, gammas=[0.5], widths=[4], seeds=[0], times=[0, 1])
    same = EnsembleStore.create(tmp_path / "x.zarr", small_grid, gammas=[0.5], widths=[4], seeds=[0], times=[0, 1])
    assert same.spec.gammas == (0.5,)
    with pytest.raises(SpecMismatchError, match="seeds"):
        EnsembleStore.create(tmp_path / "x.zarr", small_grid, gammas=[0.5], widths=[4], seeds=[0, 1], times=[0, 1])
