"""Fault injection across store, collectors, sweeps and analysis (issue 8), against an exact oracle.

Every test records (fault, tried, held) through the ``reliability`` fixture; ``make reliability`` runs them all
(the slow ones with their full counts) and writes RELIABILITY.md. ``make test`` runs the fast subset.
"""

from __future__ import annotations

import ast
import errno
import json
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
import pytest
from zarr.storage import LocalStore, WrapperStore

import ensemble_stats as es
from collectors import EnsembleStore, OutputCollector
from ensemble_stats import sweep_partial_files
from ensemble_stats.errors import RunLockedError, StoreCorruptionError, StoreWriteError

from . import _workers
from ._models import TableModel
from .conftest import committed_chunks, oracle, oracle_mismatches

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.reliability
P, O, T = _workers.ORACLE_POINTS, _workers.ORACLE_OUTPUTS, _workers.ORACLE_TIMES  # noqa: E741


def _want(g, w, s, t):
    return oracle(g, w, s, t, P, O)


_mismatches = oracle_mismatches


def _oracle_proc(store, ckpt, sleep=0.0):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests._workers", "oracle", "--store", str(store), "--ckpt", str(ckpt)]
    return subprocess.Popen(
        [*cmd, "--sleep", str(sleep)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_records(store, minimum=1, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if committed_chunks(store) >= minimum:
            return
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------- 1. SIGKILL
@pytest.mark.parametrize(
    "kills", [pytest.param(3, id="3-kills"), pytest.param(20, id="20-kills", marks=pytest.mark.slow)]
)
def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path, reliability, kills):
    store, ckpt = tmp_path / "k.zarr", tmp_path / "k.json"
    rng = random.Random(kills)
    held, completed_early = 0, 0
    for _ in range(kills):
        proc = _oracle_proc(store, ckpt, sleep=0.01)
        _wait_for_records(store)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        completed_early += proc.returncode == 0
        bad, _ = _mismatches(store)  # after each kill: what is marked written is exact
        held += bad == 0 and not [p for p in es.verify_store(store) if p.kind != "partial"]
    final = _oracle_proc(store, ckpt)
    _, err = final.communicate(timeout=300)
    removed, _ = sweep_partial_files(store)  # the sweeper
    bad, n = _mismatches(store)
    stray = [p for p in es.verify_store(store)]
    reliability(
        1,
        "SIGKILL of a collector-writing process at a random moment, then resume",
        kills,
        held,
        f"after each kill: written records exact, no missing/corrupt chunk; after the last resume: {n} records, "
        f"{bad} mismatches, {len(stray)} problems ({removed} partial files swept)",
    )
    assert final.returncode == 0, err
    assert held == kills and completed_early == 0
    assert bad == 0 and n == len(_workers.ORACLE_RUNS) * T and stray == []


# ------------------------------------------------------------------------------------------- 2. SIGTERM
@pytest.mark.parametrize("trials", [pytest.param(2, id="2"), pytest.param(6, id="6", marks=pytest.mark.slow)])
def test_sigterm_mid_chunk_checkpoints_exactly_the_records_written(tmp_path, reliability, trials):
    held = 0
    rng = random.Random(trials)
    for k in range(trials):
        store, ckpt = tmp_path / f"t{k}.zarr", tmp_path / f"t{k}.json"
        proc = _oracle_proc(store, ckpt, sleep=0.02)
        _wait_for_records(store)
        time.sleep(rng.uniform(0.05, 0.5))
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        seconds = time.time() - t0
        state = json.loads(ckpt.read_text())
        ds = es.open_ensemble(store)
        ok = proc.returncode == 143 and seconds < 30
        for key, st in state.items():
            g, w, s = key.split("-")
            written = ds.written.sel(gamma=float(g), width=int(w), seed=int(s)).values
            n = int(written.sum())
            # the checkpoint's next record is the first one not written: nothing lost, nothing to be duplicated
            ok &= bool(written[:n].all()) and st["next_index"] == n and st["step"] == max(n - 1, 0)
        resumed = _oracle_proc(store, ckpt)
        resumed.communicate(timeout=300)
        bad, n = _mismatches(store)
        steps = es.open_ensemble(store).step.values
        ok &= resumed.returncode == 0 and bad == 0 and n == len(_workers.ORACLE_RUNS) * T
        ok &= bool((steps == np.arange(T)).all())  # every step once, in order
        held += ok
    reliability(
        2,
        "SIGTERM mid-chunk: flush, checkpoint, exit; then resume",
        trials,
        held,
        "exit 143 within 30 s; checkpoint next record = records written; after resume every step exactly once",
    )
    assert held == trials


# ------------------------------------------------------------------------------------------- 3. writers
@pytest.mark.parametrize("trials", [pytest.param(3, id="3"), pytest.param(20, id="20", marks=pytest.mark.slow)])
def test_eight_concurrent_writer_processes_lose_nothing(tmp_path, reliability, trials):
    from ensemble_stats.store import check_chunk_ownership

    runs = [(g, w, 0) for g in _workers.GAMMAS for w in _workers.WIDTHS]
    held = 0
    with ProcessPoolExecutor(8, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(int, range(8)))
        for trial in range(trials):
            path = str(tmp_path / f"c{trial}.zarr")
            start_at = time.time() + 1.0
            futures = [pool.submit(_workers.concurrent_writer, path, run, start_at) for run in runs]
            for f in futures:
                f.result(timeout=120)
            ds = es.open_ensemble(path, verify=True)
            exact = all(
                np.array_equal(
                    ds.prediction.sel(gamma=g, width=w, seed=s).values,
                    np.stack([oracle(g, w, s, t, 50, 2) for t in range(12)]),
                )
                for g, w, s in runs
            )
            held += exact and bool(ds.written.all())
    refused = bool(check_chunk_ownership((4, 2, 1, 12, 50, 2), (1, 2, 1, 4, 50, 2), 3, 1))
    reliability(
        3,
        "8 writer processes creating and writing one store at once",
        trials,
        held,
        f"every value exact, every record committed; a layout with two runs per chunk refused: {refused}",
    )
    assert held == trials and refused


# ------------------------------------------------------------------------------------------- 4. workers
@pytest.mark.slow
def test_killing_a_dask_worker_twice_still_completes_exactly(tmp_path, reliability):
    import threading

    import psutil
    from dask.distributed import Client, LocalCluster

    from collectors import run_sweep

    from .test_sweep import SMALL, _cfg

    reference = tmp_path / "ref.zarr"
    run_sweep(_cfg(tmp_path), reference, workers=1, progress=False)
    store = tmp_path / "w.zarr"
    killed = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):

        def killer():
            deadline = time.time() + 120
            while time.time() < deadline and len(killed) < 2:
                if (store / "written").exists() and sum(1 for _ in (store / "written").rglob("*")) > 4 * (
                    len(killed) + 1
                ):
                    try:  # a worker being restarted after the previous kill may drop the broadcast
                        pids = [p for p in client.run(os.getpid).values() if p not in killed]
                    except OSError:  # distributed's CommClosedError is an OSError: ask again
                        time.sleep(0.2)
                        continue
                    if pids:
                        psutil.Process(pids[0]).kill()
                        killed.append(pids[0])
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        cfg = _cfg(tmp_path, SMALL.replace("seeds = 8", "seeds = 16"))
        run_sweep(cfg, store, client, progress=False)
        t.join()
    got = es.open_ensemble(store).load()
    ref = es.open_ensemble(reference).load().sel(seed=got.seed.values[:8])
    same = np.array_equal(got.prediction.sel(seed=ref.seed).values, ref.prediction.values, equal_nan=True)
    reliability(
        4,
        "Dask worker killed during a sweep (twice)",
        2,
        len(killed) if (same and bool(got.written.all())) else 0,
        "all cells finish; the seeds shared with an undisturbed run are bitwise equal",
    )
    assert len(killed) == 2 and same and bool(got.written.all())


def test_a_poisoned_cell_yields_one_error_naming_it(tmp_path, reliability):
    from collectors import run_sweep
    from ensemble_stats.errors import SweepError

    from .test_sweep import SMALL, _cfg, hold_width

    cfg = _cfg(tmp_path, SMALL)
    locks = hold_width(tmp_path / "p.zarr", cfg, 16)  # another writer holds every width-16 cell
    try:
        with pytest.raises(SweepError) as info:
            run_sweep(cfg, tmp_path / "p.zarr", workers=1, progress=False)
    finally:
        for lock in locks:
            lock.release()
    failed = list(info.value.failures)
    ds = es.open_ensemble(tmp_path / "p.zarr")
    ok = bool(failed) and all(n.startswith("width=16,") for n in failed)  # the poisoned width's cells, by name
    ok &= "width=16" in str(info.value) and bool(ds.written.sel(width=[32, 64, 128]).all())
    reliability(4, "a poisoned sweep cell", 1, int(ok), f"one SweepError naming {failed}; the other cells complete")
    assert ok, failed


# ------------------------------------------------------------------------------------------- 5. corruption
def test_four_kinds_of_corruption_are_reported_and_never_read_as_numbers(tmp_path, reliability):
    proc = _oracle_proc(tmp_path / "c.zarr", tmp_path / "c.json")
    proc.communicate(timeout=300)
    store = tmp_path / "c.zarr"
    pred = store / "prediction" / "c"
    flipped, truncated, deleted = pred / "0/0/0/0/0/0", pred / "0/0/1/1/0/0", pred / "1/0/0/2/0/0"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0x10  # one bit
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:17])
    deleted.unlink()
    partial = pred / "1/0/1/0/0/0.partial"
    partial.write_bytes(b"half a chunk")
    found = {(p.kind, p.path) for p in es.verify_store(store)}
    want = {
        ("corrupt", str(flipped)),
        ("corrupt", str(truncated)),
        ("missing", str(deleted)),
        ("partial", str(partial)),
    }
    ds = es.open_ensemble(store)
    reads = 0
    for sel, error in (
        (dict(gamma=0.5, width=4, seed=0, time=slice(0, 3)), ValueError),  # zarr's checksum error
        (dict(gamma=0.5, width=4, seed=1, time=slice(4, 7)), ValueError),
        (dict(gamma=1.0, width=4, seed=0, time=slice(8, 11)), StoreCorruptionError),  # fill values under a mark
    ):
        try:
            ds.prediction.sel(sel).values  # noqa: B018
        except error as e:
            reads += isinstance(e, StoreCorruptionError) or "checksum" in str(e)
    clean = np.array_equal(ds.prediction.sel(gamma=1.0, width=4, seed=1, time=5).values, _want(1.0, 4, 1, 5))
    reliability(
        5,
        "flipped bit, truncated chunk, deleted chunk marked written, stray partial file",
        4,
        len(found & want) if found == want else 0,
        f"verify reports exactly these with path and kind; {reads} of 3 corrupt reads raise (checksum or "
        "StoreCorruptionError), none returns numbers; untouched records read exactly",
    )
    assert found == want and reads == 3 and clean


# ------------------------------------------------------------------------------------------- 6. locks
def _hold_lock_then_die(path: str, ready) -> None:
    store = EnsembleStore.open(path)
    col = OutputCollector(store, gamma=0.5, width=4, seed=0, resume=True)  # held (a dropped one would release)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)
    del col


def _try_lock(path: str, start_at: float):
    """(acquired, the previous holder's record if a stale lock was taken over)."""
    while time.time() < start_at:
        time.sleep(0.0005)
    store = EnsembleStore.open(path)
    try:
        lock = store.lock((0, 0, 0)).acquire()
    except RunLockedError:
        return False, None
    time.sleep(1.0)  # hold it while the others try
    previous = lock.took_over
    lock.release()
    return True, previous


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, reliability):
    store = _workers.oracle_store(tmp_path / "l.zarr")
    ctx = mp.get_context("spawn")
    col = OutputCollector(store, gamma=0.5, width=4, seed=0)
    checks = []
    with pytest.raises(RunLockedError, match=r"gamma=0.5, width=4, seed=0\) is being written by pid"):
        OutputCollector(store, gamma=0.5, width=4, seed=0, resume=True)
    checks.append(True)
    with ctx.Pool(1) as pool:  # another process
        acquired, _ = pool.apply(_try_lock, (str(store.path), 0.0))
    checks.append(not acquired)
    col.close()
    # a writer that dies holding the lock (SIGKILL): the next one takes over and learns who held it
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock_then_die, args=(str(store.path), ready))
    proc.start()
    proc.join(60)
    checks.append(proc.exitcode == -signal.SIGKILL and ready.is_set())
    # 8 processes race for the stale lock: exactly one takes it over and learns the dead holder
    with ProcessPoolExecutor(8, mp_context=ctx) as pool:
        list(pool.map(int, range(8)))  # started, so the race is not decided by process start-up
        start_at = time.time() + 0.5
        results = list(pool.map(_try_lock, [str(store.path)] * 8, [start_at] * 8))
    takeovers = [prev for acquired, prev in results if acquired and prev is not None]
    checks.append(len(takeovers) == 1 and takeovers[0].get("pid") == proc.pid)
    col2 = OutputCollector(store, gamma=0.5, width=4, seed=0, resume=True)  # free again
    checks.append(col2.run_lock.took_over is None)
    col2.close()
    reliability(
        6,
        "a second writer for a locked run; a stale lock of a SIGKILLed writer",
        len(checks),
        sum(checks),
        "refused in-process and cross-process; of 8 racing takers exactly one takes the dead writer's lock",
    )
    assert all(checks), checks


# ------------------------------------------------------------------------------------------- 7. disk full
class FaultyStore(WrapperStore):
    """Raises ``OSError(code)`` on the k-th and every later write of a prediction chunk while ``armed`` (a disk
    that stays full until the fault is cleared)."""

    def __init__(self, store, k: int, code: int):
        super().__init__(store)
        self.k, self.code, self.count, self.armed, self.failed_key = k, code, 0, True, None

    async def set(self, key, value):
        if self.armed and key.startswith("prediction/c/"):
            self.count += 1
            if self.count >= self.k:
                self.failed_key = self.failed_key or key
                raise OSError(self.code, os.strerror(self.code), key)
        await super().set(key, value)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_disk_full_or_io_error_on_the_kth_chunk_write(tmp_path, reliability, code):
    tried = held = 0
    for k in (1, 2, 5):
        tried += 1
        path = tmp_path / f"f{k}.zarr"
        _workers.oracle_store(path)
        faulty = FaultyStore(LocalStore(str(path)), k, code)
        store = EnsembleStore.open(path, storage=faulty)
        model = TableModel(P, O)
        col = OutputCollector(store, gamma=1.0, width=4, seed=1)
        checkpoint = col.state_dict()
        error = None
        for t in range(T):
            model.set(_want(1.0, 4, 1, t))
            try:
                col.record(model, t)
                if (t + 1) % 8 == 0:
                    checkpoint = col.state_dict()
            except StoreWriteError as e:
                error = e
                break
        try:  # the checkpoint cannot advance past the failed write
            col.state_dict()
            advanced = True
        except StoreWriteError:
            advanced = False
        col.run_lock.release()  # the writer gives up (as if it had exited)
        ok = error is not None and not advanced and error.errno == code
        ok &= "gamma=1.0, width=4, seed=1" in str(error) and "time chunk(s)" in str(error)
        bad, n = _mismatches(path)
        ok &= bad == 0 and n >= checkpoint["next_index"] and not es.verify_store(path)  # nothing torn
        # the fault clears: resume from the last checkpoint and finish
        faulty.armed = False
        col = OutputCollector(store, gamma=1.0, width=4, seed=1, resume=True)
        col.load_state_dict(checkpoint)
        for t in range(checkpoint["next_index"], T):
            model.set(_want(1.0, 4, 1, t))
            col.record(model, t)
        col.close()
        bad, n = _mismatches(path)
        held += ok and bad == 0 and n == T and not es.verify_store(path)
    reliability(
        7,
        f"{errno.errorcode[code]} on the k-th chunk write (k = 1, 2, 5), via a wrapper store",
        tried,
        held,
        "StoreWriteError names run and chunk; committed records exact, verify clean; checkpoint not advanced; "
        "after the fault clears, resume completes with 0 mismatches",
    )
    assert held == tried


# ------------------------------------------------------------------------------------------- 8. readers
def _slow_writer(path: str, run, start_at: float) -> int:
    import torch

    torch.set_num_threads(1)
    store = EnsembleStore.open(path)
    model = TableModel(P, O)
    g, w, s = run
    while time.time() < start_at:
        time.sleep(0.001)
    with OutputCollector(store, gamma=g, width=w, seed=s) as col:
        for t in range(T):
            model.set(_want(g, w, s, t))
            col.record(model, t)
            time.sleep(0.03)
    return os.getpid()


def test_readers_during_writes_see_only_complete_committed_records(tmp_path, reliability):
    path = tmp_path / "r.zarr"
    _workers.oracle_store(path)
    reads = held = 0
    last = 0
    with ProcessPoolExecutor(4, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(int, range(4)))
        start_at = time.time() + 1.0
        futures = [pool.submit(_slow_writer, str(path), run, start_at) for run in _workers.ORACLE_RUNS]
        while not all(f.done() for f in futures) or reads == 0:
            ds = es.open_ensemble(path).compute()
            reads += 1
            ok = True
            for g, w, s in _workers.ORACLE_RUNS:
                run = ds.sel(gamma=g, width=w, seed=s)
                written = run.written.values
                for t in range(T):
                    values = run.prediction.isel(time=t).values
                    ok &= np.array_equal(values, _want(g, w, s, t)) if written[t] else bool(np.isnan(values).all())
            n = int(ds.written.sum())
            ok &= n >= last
            last = n
            held += ok
            time.sleep(0.2)
        for f in futures:
            f.result()
    reliability(
        8,
        "open_ensemble(...).compute() every 0.2 s while 4 writers run",
        reads,
        held,
        "every record marked written equals the oracle, every other is NaN; the written count never decreases",
    )
    assert held == reads and reads >= 5


# ------------------------------------------------------------------------------------------- 9. divergence
def test_a_run_diverging_at_step_s_is_stored_reported_excluded_and_counted(tmp_path, reliability):
    from ensemble_stats.testing import synthetic_ensemble

    from .conftest import store_from_synthetic

    ds0 = synthetic_ensemble(gammas=[0.75], widths=[32, 64, 128], n_seeds=6, n_points=4, seed=41)
    store = store_from_synthetic(tmp_path / "d.zarr", ds0)
    clean = es.open_ensemble(store.path).load()
    s_idx = 1  # run (0.75, 64, seed 2) diverges from time index 1 on
    pred = ds0.prediction.values[0, 1, 2].copy()
    pred[s_idx:] = np.inf
    pred[s_idx + 1 :] = np.nan
    steps = clean.step.values[0, 1, 2]
    store.write_records((0, 1, 2), np.arange(ds0.sizes["time"]), pred, steps)
    ds = es.open_ensemble(store.path, diverged="keep").load()
    checks = {}
    run = ds.sel(gamma=0.75, width=64, seed=2)
    checks["stored as is"] = bool(np.isinf(run.prediction.isel(time=s_idx)).all()) and bool(run.written.all())
    checks["reported at s"] = es.diverged_runs(ds) == [
        {"gamma": 0.75, "width": 64, "seed": 2, "step": int(steps[s_idx])}
    ]
    bv = es.bias_variance(ds).compute()
    excluded = ds.copy()
    excluded["prediction"] = ds.prediction.where(~((ds.seed == 2) & (ds.width == 64) & (ds.time >= ds.time[s_idx])))
    ref = es.bias_variance(excluded).compute()
    checks["bias_variance excludes and counts"] = bool(
        np.allclose(bv.variance, ref.variance, equal_nan=True)
        and int(bv.n_excluded.sel(width=64).isel(time=s_idx).squeeze()) == 1
        and int(bv.n_seeds.sel(width=64).isel(time=s_idx).squeeze()) == 5
    )
    default = es.bias_variance(es.open_ensemble(store.path)).compute()  # excluded at open, by default
    checks["open_ensemble excludes by default"] = bool(np.allclose(default.variance, ref.variance, equal_nan=True))
    rate, rate_ref = es.fit_rate(ds).compute(), es.fit_rate(excluded).compute()
    checks["fit_rate excludes"] = bool(np.allclose(rate.slope, rate_ref.slope, equal_nan=True))
    others = ds.prediction.where(~((ds.seed == 2) & (ds.width == 64)))
    checks["other runs untouched"] = bool(
        np.array_equal(
            others.values, clean.prediction.where(~((clean.seed == 2) & (clean.width == 64))).values, equal_nan=True
        )
    )
    reliability(
        9,
        "a run whose outputs become inf/NaN from step s",
        len(checks),
        sum(checks.values()),
        "; ".join(checks),
    )
    assert all(checks.values()), checks


# ------------------------------------------------------------------------------------------- 11. untrusted
def test_untrusted_configs_attrs_checkpoints_and_paths(tmp_path, reliability, monkeypatch):
    from click.testing import CliRunner

    from collectors import SweepSpec
    from ensemble_stats.cli import main
    from ensemble_stats.errors import ConfigError, ValidationError

    checks = {}
    canary = tmp_path / "canary"
    payload = f"__import__('os').system('touch {canary}')"
    try:
        SweepSpec.from_toml(
            f'[sweep]\ngammas = [0.5]\nwidths = [8]\nseeds = 2\n[time]\nhorizon = 1\nn_times = 2\n[data]\nname = "{payload}"\n'
        )
        checks["TOML values are data"] = False
    except ConfigError as e:
        checks["TOML values are data"] = "allowed are" in str(e) and not canary.exists()
    try:
        SweepSpec.from_json(json.dumps({"sweep": {"gammas": payload}, "time": {}, "run": {}}))
        checks["stored config attrs are data"] = False
    except ConfigError:
        checks["stored config attrs are data"] = not canary.exists()
    try:
        EnsembleStore.create(
            tmp_path / "b.zarr",
            _workers.oracle_store(tmp_path / "a.zarr").grid(),
            gammas=[0.5],
            widths=[4],
            seeds=[0],
            times=[0, 1],
            time_units="step",
            model=object(),
        )
        checks["non-JSON attrs refused"] = False
    except ValidationError:
        checks["non-JSON attrs refused"] = True

    # every torch.load in the code base is weights_only=True; no eval/exec/pickle anywhere
    offenders = []
    for folder in ("ensemble_stats", "collectors", "examples", "benchmarks", "tests"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = ast.unparse(node.func)
                if name in ("eval", "exec", "pickle.load", "pickle.loads", "marshal.loads"):
                    offenders.append(f"{f.name}: {name}")
                if name == "torch.load" and not any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                ):
                    offenders.append(f"{f.name}: torch.load without weights_only=True")
    checks["no eval/pickle, torch.load weights_only"] = offenders == []

    # a store path with shell syntax is used literally, never expanded
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    from .test_sweep import SMALL

    cfg.write_text(
        SMALL.replace("widths = [16, 32, 64, 128]", "widths = [16]")
        .replace("seeds = 8", "seeds = 2")
        .replace("seed_block = 4", "seed_block = 2")
    )
    weird = "$HOME/~/x;touch canary2/s.zarr"
    r = CliRunner().invoke(main, ["run", str(cfg), "--store", weird, "--workers", "1", "--no-progress"])
    checks["store paths used as given"] = (
        r.exit_code == 0
        and (tmp_path / "$HOME" / "~" / "x;touch canary2" / "s.zarr" / "zarr.json").is_file()
        and not (tmp_path / "canary2").exists()
    )
    reliability(
        11, "untrusted TOML, store attrs, checkpoints and paths", len(checks), sum(checks.values()), "; ".join(checks)
    )
    assert all(checks.values()), (checks, offenders, r.output)
