"""Stores on object storage, against a real S3-protocol server (moto's) started here on 127.0.0.1.

Writing, reading, concurrent creation, verification and repair, a sweep killed with SIGKILL and resumed on S3
(bitwise equal to an uninterrupted run), results uploaded as one object, and URLs that cannot be written
refused rather than turned into local folders.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
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
from ensemble_stats.errors import EphemeralStoreWarning, MissingDependencyError, ValidationError

from ._models import TableModel
from .conftest import TINY_SWEEP, oracle

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("ensemble-stats"))
pytest.importorskip("s3fs")
pytest.importorskip("moto")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 for this module; yields a function making a fresh bucket URL."""
    port = _free_port()
    exe = str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    count = [0]

    def bucket() -> str:
        count[0] += 1
        name = f"bucket-{count[0]}"
        fs.mkdir(name)
        return f"s3://{name}"

    try:
        yield bucket
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _grid():
    rng = np.random.default_rng(1)
    return EvalGrid(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))


def _fill(store, runs, T=6, resume=False):
    model = TableModel(5, 2)
    for g, w, s in runs:
        with OutputCollector(store, gamma=g, width=w, seed=s, resume=resume) as col:
            for t in range(T):
                model.set(oracle(g, w, s, t, 5, 2))
                col.record(model, t)


RUNS = [(0.5, 4, 0), (0.5, 4, 1), (1.0, 8, 0), (1.0, 8, 1)]


def _create(url):
    return EnsembleStore.create(
        url,
        _grid(),
        gammas=[0.5, 1.0],
        widths=[4, 8],
        seeds=[0, 1],
        times=list(range(6)),
        time_units="step",
        time_chunk=3,
    )


def test_a_store_on_s3_is_written_read_and_verified_there_not_locally(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = s3() + "/runs.zarr"
    store = _create(url)
    assert store.path == url
    _fill(store, RUNS)
    ds = es.open_ensemble(url).load()
    for g, w, s in RUNS:
        got = ds.prediction.sel(gamma=g, width=w, seed=s).values
        assert np.array_equal(got, np.stack([oracle(g, w, s, t, 5, 2) for t in range(6)]))
    assert int(ds.written.sum()) == len(RUNS) * 6
    assert es.verify_store(url) == []
    assert list(tmp_path.iterdir()) == []  # nothing named after the URL appeared locally
    again = _create(url)  # creating the same store again opens it
    assert again.spec == store.spec


def test_memory_urls_work_and_unwritable_urls_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(EphemeralStoreWarning, match="vanishes when it exits"):
        store = _create("memory://ens/runs.zarr")
    _fill(store, RUNS[:1])
    assert int(es.open_ensemble("memory://ens/runs.zarr").written.sum()) == 6
    with pytest.raises(MissingDependencyError, match="pip install gcsfs"):
        _create("gs://bucket/runs.zarr")
    for bad in ("nosuchfs://x/runs.zarr", "s3:/bucket/runs.zarr"):
        with pytest.raises(ValidationError):
            _create(bad)
    assert list(tmp_path.iterdir()) == []


def _creator(url: str, run, start_at: float) -> str:
    import os as _os

    from collectors import OutputCollector as _C
    from tests._models import TableModel as _T
    from tests.conftest import oracle as _o

    while time.time() < start_at:
        time.sleep(0.001)
    st = _create(url)
    g, w, s = run
    m = _T(5, 2)
    with _C(st, gamma=g, width=w, seed=s) as col:
        for t in range(6):
            m.set(_o(g, w, s, t, 5, 2))
            col.record(m, t)
    return str(_os.getpid())


def test_four_processes_creating_and_writing_one_s3_store_at_once_lose_nothing(s3):
    import concurrent.futures as cf
    import multiprocessing as mp

    url = s3() + "/race.zarr"
    start_at = time.time() + 4.0
    with cf.ProcessPoolExecutor(4, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_creator, [url] * 4, RUNS, [start_at] * 4))
    ds = es.open_ensemble(url).load()
    assert bool(ds.written.sel(gamma=[0.5], width=[4]).all()) and bool(ds.written.sel(gamma=[1.0], width=[8]).all())
    for g, w, s in RUNS:
        want = np.stack([oracle(g, w, s, t, 5, 2) for t in range(6)])
        assert np.array_equal(ds.prediction.sel(gamma=g, width=w, seed=s).values, want)
    assert es.verify_store(url) == []


def test_corruption_on_s3_is_found_and_repaired(s3):
    import fsspec

    url = s3() + "/c.zarr"
    store = _create(url)
    _fill(store, RUNS)
    fs = fsspec.filesystem("s3")
    key = url[len("s3://") :]
    a, b = f"{key}/prediction/c/0/0/0/0/0/0", f"{key}/prediction/c/1/1/0/0/0/0"
    da, db = fs.cat_file(a), fs.cat_file(b)
    fs.pipe_file(a, db)
    fs.pipe_file(b, da)  # two valid chunks swapped across gamma and width
    problems = es.verify_store(url)
    assert {p.kind for p in problems} == {"mismatch"} and len(problems) == 2
    with pytest.raises(es.errors.StoreCorruptionError):
        es.open_ensemble(url).load()
    runs = EnsembleStore.open(url).repair()
    assert sorted((r["gamma"], r["width"], r["seed"]) for r in runs) == [(0.5, 4, 0), (1.0, 8, 0)]
    assert es.verify_store(url) == []
    _fill(EnsembleStore.open(url), [(0.5, 4, 0), (1.0, 8, 0)], resume=True)  # the runs are rewritten
    assert es.verify_store(url) == [] and bool(es.open_ensemble(url).written.sel(gamma=0.5, width=4).all())


SWEEP = (
    TINY_SWEEP.replace("widths = [8, 16]", "widths = [16, 32, 64]")
    .replace("seeds = 4", "seeds = 8")
    .replace("n_test = 4", "n_test = 5")
)


def _written_objects(url) -> int:
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return len(fs.find(url[len("s3://") :] + "/written/c"))


@pytest.mark.slow
@pytest.mark.reliability
def test_a_sweep_killed_on_s3_and_resumed_equals_an_uninterrupted_run(s3, tmp_path, reliability):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP)
    ref = tmp_path / "ref.zarr"
    r = subprocess.run(
        [EXE, "run", str(cfg), "--store", str(ref), "--no-progress", "--workers", "1"], capture_output=True
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    url = s3() + "/sweep.zarr"
    args = [EXE, "run", str(cfg), "--store", url, "--no-progress", "--workers", "2"]
    kills = 0
    for _ in range(2):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        before = _written_objects(url) if es.store.is_store(url) else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if es.store.is_store(url) and _written_objects(url) > before:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its cluster's worker processes
            kills += 1
        proc.communicate(timeout=60)
    incomplete = not bool(es.open_ensemble(url).written.all())
    r = subprocess.run(args, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    got, want = es.open_ensemble(url).load(), es.open_ensemble(ref).load()
    same = all(
        np.array_equal(got[v].values, want[v].values, equal_nan=True)
        for v in ("prediction", "step", "written", "train_loss")
    )
    clean = es.verify_store(url) == []
    reliability(
        "16.1",
        "a sweep on S3 (moto server on 127.0.0.1) killed with SIGKILL (the CLI and its workers) after a block "
        "was committed, then resumed",
        kills,
        kills if (same and clean and incomplete) else 0,
        f"{kills} kills left the store incomplete: {incomplete}; the resumed store equals an uninterrupted local "
        f"run bitwise: {same}; verify on S3 clean: {clean}",
    )
    assert kills >= 1 and incomplete and same and clean


def test_results_go_to_s3_as_one_object_and_folders_are_refused(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from ensemble_stats.testing import synthetic_ensemble

    from .conftest import store_from_synthetic

    ds = synthetic_ensemble(gammas=[0.5, 1.0], widths=[64, 128, 256], n_seeds=6, n_points=4, seed=3)
    local = store_from_synthetic(tmp_path / "s.zarr", ds).path
    bucket = s3()
    runner = CliRunner()
    r = runner.invoke(main, ["decompose", str(local), "--out", f"{bucket}/bv.nc"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["decompose", str(local), "--out", f"{bucket}/bv.nc"])  # its own result: replaced
    assert r.exit_code == 0, r.output
    import fsspec
    import xarray as xr

    with fsspec.open(f"{bucket}/bv.nc", "rb") as f, xr.open_dataset(f) as got:
        np.testing.assert_allclose(got.variance.values, es.bias_variance(ds).variance.values, rtol=1e-6)
    for args in (
        ["fit", str(local), "--out", f"{bucket}/fit.zarr"],
        ["report", str(local), "--out", f"{bucket}/report"],
    ):
        r = runner.invoke(main, args)
        assert r.exit_code == 2 and "object storage" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    shutil.rmtree(local)


def _one_cell(url: str, text: str, start_at: float, train: bool = True) -> None:
    from collectors import SweepSpec
    from collectors._sweep import Cell, prepare_store, run_cell

    spec = SweepSpec.from_toml(text)
    st = prepare_store(spec, url)
    if not train:
        return
    w, b = spec.blocks()[0]
    while time.time() < start_at:
        time.sleep(0.001)
    run_cell(str(st.path), spec.to_json(), "cpu", Cell(w, b))


def test_a_cell_trained_twice_at_once_on_s3_writes_the_same_bytes(s3, tmp_path):
    """What makes locks unnecessary on object storage: two executions of one cell (Dask retrying a task, or a
    task duplicated after a worker loss) racing on the same chunks leave exactly one execution's store."""
    import concurrent.futures as cf
    import multiprocessing as mp

    text = SWEEP.replace("widths = [16, 32, 64]", "widths = [64]")
    ref = tmp_path / "ref.zarr"
    _one_cell(str(ref), text, 0.0)
    url = s3() + "/twice.zarr"
    _one_cell(url, text, 0.0, train=False)  # the store exists; two executions of its first cell race
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        start_at = time.time() + 6.0
        list(pool.map(_one_cell, [url, url], [text, text], [start_at, start_at]))
    got, want = es.open_ensemble(url).load(), es.open_ensemble(ref).load()
    for v in ("prediction", "step", "written", "train_loss"):
        assert np.array_equal(got[v].values, want[v].values, equal_nan=True), v
    assert es.verify_store(url) == []


def test_file_urls_are_local_paths(tmp_path):
    store = _create(f"file://{tmp_path}/f.zarr")
    assert store.path == tmp_path / "f.zarr" and (tmp_path / "f.zarr" / "zarr.json").is_file()
