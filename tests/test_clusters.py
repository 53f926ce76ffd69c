"""Beyond one machine: a separately started `dask scheduler` + `dask worker`, scheduler files, dask-jobqueue's
local job-queue cluster (the SLURM path without SLURM), unreachable schedulers, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ensemble_stats as es

from .conftest import TINY_SWEEP

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXE = str(BIN / "ensemble-stats")

SWEEP = TINY_SWEEP


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.stat().st_size > 0:
            try:
                json.loads(path.read_text())
                return
            except ValueError:
                pass
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear")


@pytest.fixture
def external_cluster(tmp_path):
    """`dask scheduler` and `dask worker` started as separate processes in another working directory."""
    elsewhere = tmp_path / "cluster-cwd"
    elsewhere.mkdir()
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sched = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0"],
        cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for(sched_file)
    worker = subprocess.Popen(
        [str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file), "--nworkers", "2", "--nthreads", "1",
         "--host", "127.0.0.1", "--no-dashboard"],
        cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    from dask.distributed import Client

    with Client(scheduler_file=str(sched_file), timeout="30s") as c:
        c.wait_for_workers(2, timeout=60)
        address = c.scheduler.address
    try:
        yield sched_file, address
    finally:
        for p in (worker, sched):
            p.terminate()
        for p in (worker, sched):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _run(args, cwd, timeout=300):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_cli_on_a_separately_started_cluster_with_a_relative_store_and_netcdf_out(tmp_path, external_cluster):
    sched_file, address = external_cluster
    (tmp_path / "sweep.toml").write_text(SWEEP)
    r = _run(
        [EXE, "run", "sweep.toml", "--store", "rel.zarr", "--scheduler-file", str(sched_file), "--no-progress"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "cluster-cwd" / "rel.zarr").exists()  # the workers wrote the caller's path
    assert bool(es.open_ensemble(tmp_path / "rel.zarr").written.all())
    r = _run([EXE, "decompose", "rel.zarr", "--out", "bv.nc", "--scheduler", address], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run([EXE, "fit", "rel.zarr", "--out", "fit.nc", "--scheduler-file", str(sched_file)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    import xarray as xr

    with xr.open_dataset(tmp_path / "bv.nc") as bv:
        want = es.bias_variance(es.open_ensemble(tmp_path / "rel.zarr")).compute()
        np.testing.assert_allclose(bv.variance.values, want.variance.values, rtol=1e-6)


def test_unreachable_and_malformed_schedulers_are_one_line_and_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.toml").write_text(SWEEP)
    (tmp_path / "sched.json").write_text("{}")
    cases = [
        (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
        (["--scheduler", "sched.json"], "--scheduler-file"),
        (["--scheduler-file", "missing.json"], "does not exist"),
        (["--scheduler-file", "sched.json"], "not a Dask scheduler file"),
        (["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "not both"),
    ]
    from click.testing import CliRunner

    from ensemble_stats.cli import main

    for k, (extra, words) in enumerate(cases):
        t0 = time.time()
        if k == 0:  # once as a real process: what a user's shell sees
            r = _run([EXE, "run", "sweep.toml", "--store", "s.zarr", "--no-progress", *extra], tmp_path)
            code, err = r.returncode, r.stderr
        else:
            r = CliRunner().invoke(main, ["run", "sweep.toml", "--store", "s.zarr", "--no-progress", *extra])
            code, err = r.exit_code, r.output
        seconds = time.time() - t0
        assert code == 2, (extra, err)
        assert words in err and "Traceback" not in err, (extra, err)
        assert len(err.strip().splitlines()) <= 3 and seconds < 25, (extra, seconds, err)
    assert not (tmp_path / "s.zarr").exists()


# dask-jobqueue's local "job" launcher leaves its Popen objects to the garbage collector: its warnings, not ours
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_dask_jobqueue_cluster_through_the_api_and_the_cli(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    from dask.distributed import Client
    from dask_jobqueue.local import LocalCluster as JobQueueCluster

    from collectors import run_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp_path / "sweep.toml").write_text(SWEEP)
    with JobQueueCluster(
        cores=1,
        processes=1,
        memory="2GB",
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        worker_extra_args=["--host", "127.0.0.1"],
    ) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            rep = run_sweep(tmp_path / "sweep.toml", "api.zarr", client, progress=False)
            assert rep.trained == rep.cells
            # what a SLURM job script does: publish the scheduler's address in a file the CLI is given
            (tmp_path / "jq.json").write_text(json.dumps({"address": cluster.scheduler_address}))
            r = _run(
                [EXE, "run", "sweep.toml", "--store", "cli.zarr", "--scheduler-file", "jq.json", "--no-progress"],
                tmp_path,
            )
            assert r.returncode == 0, r.stderr[-3000:]
    a, b = es.open_ensemble(tmp_path / "api.zarr").load(), es.open_ensemble(tmp_path / "cli.zarr").load()
    assert np.array_equal(a.prediction.values, b.prediction.values) and bool(a.written.all())


def test_ctrl_c_during_run_exits_130_with_one_line_and_the_rerun_completes(tmp_path):
    text = SWEEP.replace("widths = [8, 16]", "widths = [64, 128, 256, 512]").replace("seeds = 4", "seeds = 16")
    text = text.replace("horizon = 1.0", "horizon = 4.0")
    (tmp_path / "sweep.toml").write_text(text)
    args = [EXE, "run", "sweep.toml", "--store", "s.zarr", "--no-progress"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    written = tmp_path / "s.zarr" / "written" / "c"
    deadline = time.time() + 120
    while time.time() < deadline and not (written.exists() and any(written.rglob("*"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted: stopped; stores and outputs are consistent. Rerun the same command to resume."
    ], err
    assert [p for p in es.verify_store(tmp_path / "s.zarr") if p.kind != "partial"] == []
    r = _run(args, tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert bool(es.open_ensemble(tmp_path / "s.zarr").written.all())
