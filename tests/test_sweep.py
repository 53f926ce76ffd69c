"""Sweeps: config validation, resume after SIGKILL, worker loss, SIGTERM, refusing a different config."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ensemble_stats as es
from collectors import SweepSpec, run_sweep
from ensemble_stats import errors

from . import _configs
from .conftest import committed_chunks

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("ensemble-stats"))

SMALL = _configs.toml(
    _configs.sweep(sweep={"widths": [16, 32, 64, 128], "seeds": 8, "seed_block": 4}, optimizer={"alpha": 1.0})
)


def _cfg(tmp_path, text=SMALL, name="sweep.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    run_sweep(_cfg(d), d / "ref.zarr", workers=1, progress=False)
    return es.open_ensemble(d / "ref.zarr").load()


def _assert_same(path, reference):
    es.verify_store(path, clean=True)
    got = es.open_ensemble(path, verify=True).load()
    assert bool(got.written.all())
    np.testing.assert_array_equal(got.prediction.values, reference.prediction.values)
    np.testing.assert_array_equal(got.step.values, reference.step.values)
    np.testing.assert_array_equal(got.train_loss.values, reference.train_loss.values)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (("[optimizer]", "[optimizer]\nmomentum = 0.9"), r"\[optimizer\].momentum: unknown key"),
        (("[sweep]", "[sweeps]\nx = 1\n[sweep]"), r"\[sweeps\]: unknown table"),
        (("alpha = 1.0", 'alpha = "fast"'), r"\[optimizer\].alpha = 'fast': expected an integer or a number"),
        (("gammas = [0.5, 1.0]", "gammas = [0.4, 1.0]"), r"\[sweep\].gammas: \[0.4\] outside \[0.5, 1\]"),
        (("widths = [16, 32, 64, 128]", "widths = [0, 32]"), r"\[sweep\].widths: \[0\] not positive integers"),
        (("seeds = 8", "seeds = []"), r"\[sweep\].seeds is empty"),
        (("seeds = 8", "seeds = 0"), r"\[sweep\].seeds = 0"),
        (("n_times = 5", "times = [0.0, 0.5, 2.0]"), r"beyond the training horizon 1.0"),
        (("seed_block = 4", "seed_block = 3"), r"seed_block = 3: must be >= 1 and divide"),
        (('name = "teacher"', 'name = "imagenet"'), r"\[data\].name = 'imagenet'"),
        (("[optimizer]", '[run]\ndevice = "tpu"\n[optimizer]'), r"\[run\].device = 'tpu'"),
        (("horizon = 1.0", ""), r"\[time\].horizon is required"),
    ],
)
def test_config_errors_name_the_key_and_what_is_allowed(tmp_path, edit, words):
    text = SMALL.replace(*edit, 1)
    with pytest.raises(errors.ConfigError, match=words) as info:
        SweepSpec.from_toml(_cfg(tmp_path, text))
    assert isinstance(info.value, ValueError)


def test_all_config_problems_at_once_and_canonical_round_trip(tmp_path):
    bad = (
        SMALL.replace("gammas = [0.5, 1.0]", "gammas = [2.0]")
        .replace("alpha = 1.0", "alpha = -1.0")
        .replace("seeds = 8", "seeds = []")
    )
    with pytest.raises(errors.ConfigError) as info:
        SweepSpec.from_toml(_cfg(tmp_path, bad))
    assert len(info.value.problems) >= 3
    spec = SweepSpec.from_toml(_cfg(tmp_path))
    assert SweepSpec.from_json(spec.to_json()) == spec
    assert spec.times == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_different_config_on_an_existing_store_is_refused(tmp_path, reference):
    store = tmp_path / "s.zarr"
    run_sweep(_cfg(tmp_path), store, workers=1, progress=False)
    other = _cfg(tmp_path, SMALL.replace("alpha = 1.0", "alpha = 0.5"), "other.toml")
    with pytest.raises(errors.SpecMismatchError, match=r"optimizer.alpha: store has 1.0, config has 0.5"):
        run_sweep(other, store, workers=1, progress=False)
    rep = run_sweep(_cfg(tmp_path), store, workers=1, progress=False)  # same config: resumes, nothing to do
    assert rep.skipped == rep.cells and rep.trained == 0
    _assert_same(store, reference)
    assert "config" in es.open_ensemble(store).attrs


@pytest.mark.parametrize("kills", [2, pytest.param(5, marks=pytest.mark.slow)])  # the full count in make reliability
def test_sigkill_at_random_moments_then_rerun_equals_uninterrupted(tmp_path, reference, kills):
    # The moments are drawn in progress, not in seconds: a sweep this small takes a few seconds, and a
    # kill timed by the clock lands after it has finished once the trainer gets faster.  Each kill comes
    # a random delay after the first block the process commits, while the other worker is mid-block.
    store = tmp_path / "k.zarr"
    cfg = _cfg(tmp_path)
    total = 2 * 4 * (8 // 4)
    rng = random.Random(7)
    killed_incomplete = 0
    for _ in range(kills):
        target = min(committed_chunks(store) + 1, total - 1)
        proc = subprocess.Popen(
            [EXE, "run", str(cfg), "--store", str(store), "--workers", "2", "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while committed_chunks(store) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        with contextlib.suppress(ProcessLookupError):  # it may have finished on its own
            os.killpg(proc.pid, signal.SIGKILL)  # the run process and its cluster, as a crash would
        proc.wait(timeout=30)
        if (store / "zarr.json").exists() and not bool(es.open_ensemble(store).written.all()):
            killed_incomplete += 1
    assert killed_incomplete >= (kills + 1) // 2, f"only {killed_incomplete}/{kills} kills landed mid-sweep"
    done = subprocess.run(
        [EXE, "run", str(cfg), "--store", str(store), "--workers", "2", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    _assert_same(store, reference)


def test_killing_a_worker_mid_sweep_still_completes_exactly(tmp_path, reference):
    import psutil
    from dask.distributed import Client, LocalCluster

    store = tmp_path / "w.zarr"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        killed = []

        def killer():
            deadline = time.time() + 60
            while time.time() < deadline:
                if (store / "written").exists() and any((store / "written").rglob("*")):
                    psutil.Process(pids[0]).kill()
                    killed.append(pids[0])
                    return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        run_sweep(_cfg(tmp_path), store, client, progress=False)
        t.join()
    assert killed, "no worker was killed"
    _assert_same(store, reference)


def test_sigterm_stops_within_30_s_consistent_and_rerun_completes(tmp_path, reference):
    store = tmp_path / "t.zarr"
    cfg = _cfg(tmp_path)
    proc = subprocess.Popen(
        [EXE, "run", str(cfg), "--store", str(store), "--workers", "2", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (store / "written").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 30
    assert proc.returncode in (143, 0), err
    problems = [p for p in es.verify_store(store) if p.kind != "partial"]
    assert problems == []
    done = subprocess.run(
        [EXE, "run", str(cfg), "--store", str(store), "--no-progress"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    _assert_same(store, reference)


def hold_width(store_path, config_path, width):
    """Take the write locks of every cell of ``width`` (another writer, in this process): those cells fail."""
    from collectors._sweep import prepare_store

    spec = SweepSpec.from_toml(config_path)
    st = prepare_store(spec, store_path)
    wi = spec.widths.index(width)
    b = spec.seed_block
    return [
        st.lock((gi, wi, slice(s, s + b))).acquire()
        for gi in range(len(spec.gammas))
        for s in range(0, len(spec.seeds), b)
    ]


def test_a_poisoned_cell_is_named_and_the_others_complete(tmp_path):
    cfg = _cfg(tmp_path, SMALL)
    locks = hold_width(tmp_path / "p.zarr", cfg, 16)  # the width-16 cells cannot take their runs' locks
    try:
        with pytest.raises(errors.SweepError, match=r"2 of \d+") as info:
            run_sweep(cfg, tmp_path / "p.zarr", workers=1, progress=False)
    finally:
        for lock in locks:
            lock.release()
    failed = list(info.value.failures)
    assert failed and all(name.startswith("width=16") for name in failed), failed
    assert "being written by" in str(info.value)
    ds = es.open_ensemble(tmp_path / "p.zarr")
    assert bool(ds.written.sel(width=[32, 64, 128]).all())
    assert not bool(ds.written.sel(width=16).any())


def test_user_collectors_run_in_every_cell_on_the_cluster(tmp_path):
    import json

    from collectors import SweepSpec

    from ._workers import BlockLogs
    from .conftest import TINY_SWEEP

    logs = tmp_path / "logs"
    logs.mkdir()
    spec = SweepSpec.from_toml(TINY_SWEEP)
    run_sweep(spec, tmp_path / "s.zarr", workers=2, progress=False, collectors=BlockLogs(str(logs)))
    found = {p.name: json.loads(p.read_text()) for p in logs.iterdir()}
    assert sorted(found) == ["w16-s0.json", "w16-s2.json", "w8-s0.json", "w8-s2.json"]
    for name, log in found.items():
        w, s0 = int(name[1:].split("-")[0]), int(name.split("-s")[1].split(".")[0])
        assert log["members"] == [[g, s] for g in (0.5, 1.0) for s in (s0, s0 + 1)]
        assert [r[0] for r in log["records"]] == [round(t * w) for t in (0, 0.25, 0.5, 0.75, 1)]
        assert all(r[1] == [4, 4, 1] for r in log["records"])  # (member, point, output)


def test_progress_moves_inside_a_long_cell_and_names_the_dashboard(tmp_path, capsys):
    """Issue 31, item 6: one cell of ~4 s reports the fraction of its steps done while it runs (Dask events), so the
    count of cells done passes through values between 0 and 1 before the cell ends."""
    text = _configs.toml(
        _configs.sweep(
            sweep={"gammas": [0.75], "widths": [256], "seeds": 8, "seed_block": 8},
            time={"horizon": 24.0, "n_times": 3},
            optimizer={"alpha": 1.0},
        )
    )
    seen: list[float] = []
    run_sweep(_cfg(tmp_path, text), tmp_path / "s.zarr", workers=1, progress=lambda done, total: seen.append(done))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert any(0 < v < 1 for v in seen), seen
    run_sweep(_cfg(tmp_path, text, "b.toml"), tmp_path / "b.zarr", workers=1, progress=True)
    err = capsys.readouterr().err
    assert "Dask dashboard: http://127.0.0.1:" in err and "1.0/1" in err
