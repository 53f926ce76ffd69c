"""Issue 21, store side: every corruption kind an outside audit found, the repair path, the sweeper beside a live
writer, planted symlinks, and leftovers of killed creators. Each test records (fault, tried, held)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector
from ensemble_stats.cli import main
from ensemble_stats.errors import EnsembleStatsError, StoreCorruptionError, StoreWriteError

from . import _workers
from .conftest import TINY_SWEEP, oracle, oracle_mismatches

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.reliability
P, O, T = 6, 2, 6  # noqa: E741
GAMMAS, WIDTHS, SEEDS = [0.5, 1.0], [4, 8], [0, 1]


def scalar_store(path, offset: float = 0.0, **attrs) -> EnsembleStore:
    """A store with every record written, test_loss and accuracy among the scalars, time chunks of 3; ``attrs``
    become group attributes."""
    rng = np.random.default_rng(3)
    grid = EvalGrid(rng.normal(size=(P, 3)), rng.normal(size=(P, O)))
    st = EnsembleStore.create(
        path,
        grid,
        gammas=GAMMAS,
        widths=WIDTHS,
        seeds=SEEDS,
        times=list(range(T)),
        time_units="step",
        time_chunk=3,
        **attrs,
    )
    for gi, g in enumerate(GAMMAS):
        for wi, w in enumerate(WIDTHS):
            for si, s in enumerate(SEEDS):
                pred = np.stack([oracle(g, w, s, t, P, O) for t in range(T)]) + offset
                if (g, w, s) == (1.0, 8, 1):
                    pred[4:] = np.nan  # one run diverges at step 4: its diverged_step chunk exists
                loss = (pred**2).mean(axis=(1, 2))
                st.write_records(
                    (gi, wi, si), np.arange(T), pred, np.arange(T), {"test_loss": loss, "accuracy": loss / 10}
                )
    return st


def _chunk(store: Path, name: str, *coords) -> Path:
    return store / name / "c" / "/".join(str(c) for c in coords)


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def _edit_array(store: Path, name: str, fn) -> None:
    import zarr

    arr = zarr.open_group(str(store), mode="r+")[name]
    arr[...] = fn(arr[...])


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def _endian(doc):
    for c in doc["codecs"]:
        if c["name"] == "bytes":
            c["configuration"] = {"endian": "big"}


CORRUPTIONS = {
    "prediction chunks swapped across gamma": lambda s, o: _swap(
        _chunk(s, "prediction", 0, 0, 0, 0, 0, 0), _chunk(s, "prediction", 1, 0, 0, 0, 0, 0)
    ),
    "prediction chunks swapped across width": lambda s, o: _swap(
        _chunk(s, "prediction", 0, 0, 1, 1, 0, 0), _chunk(s, "prediction", 0, 1, 1, 1, 0, 0)
    ),
    "prediction chunks swapped across seed": lambda s, o: _swap(
        _chunk(s, "prediction", 1, 1, 0, 0, 0, 0), _chunk(s, "prediction", 1, 1, 1, 0, 0, 0)
    ),
    "prediction chunks swapped across time": lambda s, o: _swap(
        _chunk(s, "prediction", 0, 1, 0, 0, 0, 0), _chunk(s, "prediction", 0, 1, 0, 1, 0, 0)
    ),
    "prediction chunk copied from another store": lambda s, o: shutil.copyfile(
        _chunk(o, "prediction", 1, 0, 1, 1, 0, 0), _chunk(s, "prediction", 1, 0, 1, 1, 0, 0)
    ),
    "test_loss chunks swapped across gamma": lambda s, o: _swap(
        _chunk(s, "test_loss", 0, 0, 0, 0), _chunk(s, "test_loss", 1, 0, 0, 0)
    ),
    "test_loss chunk copied from another store": lambda s, o: shutil.copyfile(
        _chunk(o, "test_loss", 0, 1, 0, 1), _chunk(s, "test_loss", 0, 1, 0, 1)
    ),
    "test_loss chunk deleted (marked written)": lambda s, o: _chunk(s, "test_loss", 1, 1, 1, 0).unlink(),
    "accuracy chunk deleted (marked written)": lambda s, o: _chunk(s, "accuracy", 0, 0, 1, 1).unlink(),
    "gamma coordinate permuted": lambda s, o: _edit_array(s, "gamma", lambda v: v[::-1].copy()),
    "width coordinate permuted": lambda s, o: _edit_array(s, "width", lambda v: v[::-1].copy()),
    "time coordinate rescaled": lambda s, o: _edit_array(s, "time", lambda v: v * 2.0),
    "x edited": lambda s, o: _edit_array(s, "x", lambda v: v + 1e-3),
    "target edited": lambda s, o: _edit_array(s, "target", lambda v: v[::-1].copy()),
    "prediction dtype edited in zarr.json": lambda s, o: _edit_json(
        s / "prediction" / "zarr.json", lambda d: d.update(data_type="int32")
    ),
    "prediction endianness edited in zarr.json": lambda s, o: _edit_json(s / "prediction" / "zarr.json", _endian),
    "step dtype edited in zarr.json": lambda s, o: _edit_json(
        s / "step" / "zarr.json", lambda d: d.update(data_type="uint64")
    ),
    "written chunk flipped bit": lambda s, o: _flip(_chunk(s, "written", 0, 0, 0, 0)),
    "diverged_step chunk flipped bit": lambda s, o: _flip(_chunk(s, "diverged_step", 1, 1, 1)),
    "digest chunk swapped across gamma": lambda s, o: _swap(
        _chunk(s, "digest", 0, 0, 0, 1), _chunk(s, "digest", 1, 0, 0, 1)
    ),
    "group zarr.json truncated": lambda s, o: (s / "zarr.json").write_text((s / "zarr.json").read_text()[:50]),
    "prediction zarr.json truncated": lambda s, o: (s / "prediction" / "zarr.json").write_text("{"),
}


def _reads_raise(path: Path) -> bool:
    """Every way of reading numbers fails: open_ensemble(...).load() raises (any error), returns nothing."""
    try:
        es.open_ensemble(path).load()
    except Exception:  # noqa: BLE001 - any error is a refusal; what counts is that no numbers come back
        return True
    return False


def test_every_corruption_kind_is_found_by_verify_refused_by_reads_and_info_never_crashes(tmp_path, reliability):
    other = scalar_store(tmp_path / "other.zarr", offset=0.5).path
    pristine = scalar_store(tmp_path / "pristine.zarr").path
    assert es.verify_store(pristine) == [] and not _reads_raise(pristine)
    rows, held = [], 0
    runner = CliRunner()
    for k, (kind, corrupt) in enumerate(CORRUPTIONS.items()):
        path = tmp_path / f"c{k}.zarr"
        shutil.copytree(pristine, path)
        corrupt(path, other)
        problems = es.verify_store(path)  # must not raise
        raised = _reads_raise(path)
        r = runner.invoke(main, ["info", str(path), "--verify"])
        clean_cli = r.exit_code in (1, 2) and "Traceback" not in r.output and isinstance(r.exception, SystemExit)
        ok = bool(problems) and raised and clean_cli
        held += ok
        rows.append((kind, ok, problems[0].kind if problems else "-", r.exit_code))
    detail = "; ".join(f"{k}: {'held' if ok else 'FAILED'} ({pk}, info exit {rc})" for k, ok, pk, rc in rows)
    reliability(
        "21.4",
        "undetected corruption kinds: chunks swapped across gamma/width/seed/time, copied from another store, "
        "scalar chunks swapped/copied/deleted, coordinates permuted/rescaled, x/target edited, dtype/endianness "
        "edited in zarr.json, corrupt written/diverged_step/digest chunks, broken zarr.json",
        len(CORRUPTIONS),
        held,
        "each: verify_store reports it (never raises), open_ensemble(...).load() raises, `info --verify` exits "
        f"non-zero without a traceback. {detail}",
    )
    assert held == len(CORRUPTIONS), [r for r in rows if not r[1]]


def test_cli_read_errors_name_the_damaged_file(tmp_path, reliability):
    store = scalar_store(tmp_path / "s.zarr").path
    bad = _chunk(store, "prediction", 1, 1, 0, 1, 0, 0)
    _flip(bad)
    runner = CliRunner()
    held, tried = 0, 0
    for args in (
        ["fit", str(store), "--out", str(tmp_path / "f.nc")],
        ["decompose", str(store), "--out", str(tmp_path / "d.zarr")],
        ["report", str(store), "--out", str(tmp_path / "rep")],
    ):
        tried += 1
        r = runner.invoke(main, args)
        held += r.exit_code == 2 and str(bad) in r.output and "Traceback" not in r.output and "--repair" in r.output
    reliability(
        "21.13",
        "checksum error inside fit / decompose / report",
        tried,
        held,
        "exit 2, one error naming the damaged chunk file and the repair command, no traceback",
    )
    assert held == tried


# --------------------------------------------------------------------------------------------- 21.5 repair
SWEEP = TINY_SWEEP.replace("n_train = 8", "n_train = 6")


def _sweep_in_process(cfg, store, repair=False):
    """The sweep's cells run in this process (the code each Dask task runs), without a cluster."""
    from collectors import SweepSpec
    from collectors._sweep import pending_cells, prepare_store, run_cell

    spec = SweepSpec.from_toml(cfg)
    st = prepare_store(spec, store)
    if repair:
        st.repair()
    for cell in pending_cells(st, spec):
        run_cell(str(store), spec.to_json(), "cpu", cell)


def test_run_repair_rewrites_what_verify_flags_bitwise(tmp_path, reliability):
    cfg = tmp_path / "s.toml"
    cfg.write_text(SWEEP)
    ref = tmp_path / "ref.zarr"
    _sweep_in_process(cfg, ref)
    faults = {
        "flipped bit": lambda s: _flip(_chunk(s, "prediction", 0, 1, 1, 0, 0, 0)),
        "deleted chunk": lambda s: _chunk(s, "prediction", 1, 0, 0, 0, 0, 0).unlink(),
        "swapped across gamma": lambda s: _swap(
            _chunk(s, "prediction", 0, 0, 1, 0, 0, 0), _chunk(s, "prediction", 1, 0, 1, 0, 0, 0)
        ),
        "corrupt written chunk": lambda s: _flip(_chunk(s, "written", 1, 1, 0, 0)),
        "deleted train_loss chunk": lambda s: _chunk(s, "train_loss", 0, 0, 0, 0).unlink(),
    }
    want = es.open_ensemble(ref).load()
    held = 0
    for k, fault in enumerate(faults.values()):
        store = tmp_path / f"r{k}.zarr"
        shutil.copytree(ref, store)
        fault(store)
        before = es.verify_store(store)
        try:  # a plain resume: cells look complete and are skipped, or an unreadable commit mark is named
            _sweep_in_process(cfg, store)
        except StoreCorruptionError as e:
            assert "--repair" in str(e)
        still = es.verify_store(store)
        _sweep_in_process(cfg, store, repair=True)
        after = es.verify_store(store)
        got = es.open_ensemble(store).load()
        same = all(
            np.array_equal(got[v].values, want[v].values, equal_nan=True)
            for v in ("prediction", "step", "train_loss", "written")
        )
        held += bool(before) and bool(still) and after == [] and same
    reliability(
        "21.5",
        "no repair path: `run` skipped complete cells whose chunks verify flags",
        len(faults),
        held,
        f"faults {list(faults)}: found by verify; a plain resume leaves them (cells look complete, or a "
        "StoreCorruptionError names the damaged commit mark and --repair); "
        "`run --repair` (run_sweep(repair=True)) un-commits them, the cells retrain, verify is clean and every "
        "value equals an undamaged sweep bitwise",
    )
    assert held == len(faults)


def test_repair_refuses_damage_that_retraining_cannot_fix(tmp_path):
    store = scalar_store(tmp_path / "s.zarr").path
    _edit_array(store, "gamma", lambda v: v[::-1].copy())
    with pytest.raises(StoreCorruptionError, match="coordinate 'gamma'") as info:
        EnsembleStore.open(store)
    assert not info.value.repairable and "restore" in str(info.value)


# ---------------------------------------------------------------------------------- 21.6 live-writer sweeper
@pytest.mark.parametrize("sweeps", [pytest.param(40, id="40"), pytest.param(400, id="400", marks=pytest.mark.slow)])
def test_the_sweeper_spares_a_live_writers_partial_files(tmp_path, reliability, sweeps):
    store, ckpt = tmp_path / "live.zarr", tmp_path / "live.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests._workers", "oracle", "--store", str(store), "--ckpt", str(ckpt)]
    proc = subprocess.Popen(
        [*cmd, "--sleep", "0.002"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while not (store / "zarr.json").exists() and proc.poll() is None:
        time.sleep(0.01)
    # a dead writer's leftover in another run's chunk: its run lock is free, so it must go
    stale = _chunk(store, "prediction", 1, 0, 1, 11, 0, 0).with_name("0.deadbeef.partial")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    removed = spared = done = 0
    while done < sweeps and proc.poll() is None:
        r, s = es.sweep_partial_files(store)
        removed, spared, done = removed + r, spared + s, done + 1
    _, err = proc.communicate(timeout=300)
    bad, n = oracle_mismatches(store)
    ok = proc.returncode == 0 and bad == 0 and n == len(_workers.ORACLE_RUNS) * _workers.ORACLE_TIMES
    reliability(
        "21.6",
        "the partial-file sweeper run while another writer is active",
        done,
        done if ok else 0,
        f"{done} sweeps during a collector's writes: writer exit {proc.returncode}, {n} records, {bad} mismatches; "
        f"{removed} partial file(s) of dead writers removed, {spared} of the live writer spared",
    )
    assert ok, err.decode()[-2000:]
    assert not stale.exists()


# ------------------------------------------------------------------------------------------- 21.7 symlinks
def test_planted_symlinks_in_the_lock_directory_are_refused_never_followed(tmp_path, reliability):
    from ensemble_stats.store import lock_dir

    held = 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    st = scalar_store(tmp_path / "s.zarr")
    # 1: a link named like a run's lock file
    col_lock = st.lock(st.run_index(0.5, 4, 0))
    col_lock.path.parent.mkdir(exist_ok=True)  # as a first writer would have left it
    col_lock.path.unlink(missing_ok=True)
    os.symlink(victim, col_lock.path)
    try:
        OutputCollector(st, gamma=0.5, width=4, seed=0, resume=True)
    except StoreWriteError as e:
        held += "symbolic link" in str(e) and victim.read_text() == "precious"
    # 2: the lock directory itself a link to a directory of the victim's
    ld = lock_dir(st.path)
    shutil.rmtree(ld)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, ld)
    try:
        OutputCollector(st, gamma=1.0, width=8, seed=1, resume=True)
    except StoreWriteError as e:
        held += "symbolic link" in str(e) and not any(elsewhere.iterdir())
    # 3: a dangling link (target does not exist yet) must not be created through
    os.unlink(ld)
    ld.mkdir()
    target = tmp_path / "created-through-link"
    os.symlink(target, st.lock(st.run_index(1.0, 4, 1)).path)
    try:
        OutputCollector(st, gamma=1.0, width=4, seed=1, resume=True)
    except StoreWriteError as e:
        held += "symbolic link" in str(e) and not target.exists()
    reliability(
        "21.7",
        "symbolic links planted in the store's lock directory (lock file -> a user's file; lock dir -> elsewhere; "
        "dangling link)",
        3,
        held,
        "each refused with StoreWriteError naming the link; the victim file unchanged, nothing written elsewhere",
    )
    assert held == 3


# ------------------------------------------------------------------------------ 21.15 creation leftovers
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("kills", [pytest.param(4, id="4"), pytest.param(16, id="16", marks=pytest.mark.slow)])
def test_sigkill_during_store_creation_leaves_nothing_behind(tmp_path, reliability, kills):
    from ensemble_stats.store._paths import _HOST

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; import collectors; from tests import _workers; print('ready', flush=True); sys.stdin.readline(); "
        "_workers.oracle_store(sys.argv[1])"
    )
    rng = random.Random(kills)
    leftovers_seen = 0
    held = 0
    for k in range(kills):
        path = tmp_path / f"k{k}.zarr"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        proc.stdout.readline()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        leftovers_seen += any(".creating-" in p.name for p in tmp_path.iterdir())
        store = _workers.oracle_store(path)  # the next creator
        left = [p.name for p in tmp_path.iterdir() if ".creating-" in p.name]
        held += not left and es.verify_store(store.path) == []
    # a leftover named after a dead process of this host is removed; a live process's is not
    dead = tmp_path / f".z.zarr.creating-{_HOST}-{_dead_pid()}-0123456789ab"
    live = tmp_path / f".z.zarr.creating-{_HOST}-{os.getpid()}-0123456789ab"
    dead.mkdir()
    live.mkdir()
    _workers.oracle_store(tmp_path / "z.zarr")
    named = not dead.exists() and live.exists()
    reliability(
        "21.15",
        "SIGKILL during store creation",
        kills,
        held,
        f"{leftovers_seen} of {kills} kills left a '.NAME.creating-*' folder; the next creator removed each and "
        f"built a sound store; a live process's temporary folder is kept: {named}",
    )
    assert held == kills and named


def test_store_creation_on_a_read_only_or_full_file_system_is_one_clear_error(tmp_path, reliability, tmpfs):
    grid = EvalGrid(np.zeros((3, 2)), np.zeros((3, 1)))
    held = 0
    ro = tmpfs(size="1m", read_only=True)
    full = tmpfs(size="64k")
    (full / "filler").write_bytes(b"\0" * (64 << 10))
    kw = dict(gammas=[0.5], widths=[4], seeds=[0, 1], times=[0, 1, 2], time_units="step")
    for where in (ro / "a.zarr", full / "b.zarr"):
        try:
            EnsembleStore.create(where, grid, check_space=False, **kw)
        except StoreWriteError as e:
            held += ("read-only" in str(e) or "disk is full" in str(e)) and not any(
                p.name.startswith((".a.zarr", ".b.zarr", "a.zarr", "b.zarr")) for p in where.parent.iterdir()
            )
        except EnsembleStatsError:
            pass
    reliability(
        "21.13",
        "store creation on a read-only and on a full file system (real tmpfs mounts)",
        2,
        held,
        "StoreWriteError saying read-only / disk full; nothing left behind",
    )
    assert held == 2
