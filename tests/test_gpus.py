"""The GPU path's CPU-testable parts: which worker gets which GPU, one cell per GPU, and clear refusals."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors._sweep import GPU, _check_gpu_workers, gpu_devices, gpu_fit_problems, local_cluster
from ensemble_stats.errors import ValidationError

from .conftest import TINY_SWEEP

EXE = str(Path(sys.executable).parent / "ensemble-stats")


def test_gpus_are_the_first_n_visible_ones():
    assert gpu_devices("all", visible=["3", "5"]) == ["3", "5"]
    assert gpu_devices(1, visible=["3", "5"]) == ["3"]
    with pytest.raises(ValidationError, match=r"asks for 3 GPUs but 2 are visible \(3, 5\)"):
        gpu_devices(3, visible=["3", "5"])
    with pytest.raises(ValidationError, match="no GPU is visible"):
        gpu_devices("all", visible=[])
    for bad in ("some", 0, True):
        with pytest.raises(ValidationError, match="'all' or a number"):
            gpu_devices(bad, visible=["0"])


def test_visible_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7")
    assert gpu_devices("all") == ["2", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValidationError, match="no GPU is visible"):
        gpu_devices(1)


def test_a_cell_larger_than_its_gpu_is_refused_before_training():
    (problem,) = gpu_fit_problems(20 * 10**9, 16 * 10**9, "GPU 0")
    assert "20 GB" in problem and "16 GB" in problem and "seed_block" in problem
    assert gpu_fit_problems(10**9, 16 * 10**9, "GPU 0") == []


def _hold(seconds: float) -> tuple[str, float, float]:
    t0 = time.time()
    time.sleep(seconds)
    return os.environ["CUDA_VISIBLE_DEVICES"], t0, time.time()


def test_one_worker_per_gpu_sees_only_its_own_and_runs_one_cell_at_a_time():
    from dask.distributed import Client

    with local_cluster(gpus=["0", "1"]) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        seen = client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"])
        assert sorted(seen.values()) == ["0", "1"]
        info = client.scheduler_info()["workers"].values()
        assert all(w["resources"] == {GPU: 1} for w in info)
        _check_gpu_workers(client)  # workers that offer a GPU: accepted
        runs = client.gather([client.submit(_hold, 0.4, pure=False, resources={GPU: 1}) for _ in range(6)])
    for device in ("0", "1"):
        mine = sorted((a, b) for d, a, b in runs if d == device)
        assert mine  # both GPUs worked ...
        assert all(nxt[0] >= prev[1] - 0.01 for prev, nxt in itertools.pairwise(mine))  # ... one cell at a time


def test_a_cluster_without_gpu_workers_is_refused_with_how_to_start_them():
    from dask.distributed import Client

    with local_cluster(workers=1) as cluster, Client(cluster) as client:
        with pytest.raises(ValidationError, match=r"--resources GPU=1"):
            _check_gpu_workers(client)


def test_run_with_gpus_on_a_machine_without_any_is_one_line_and_writes_nothing(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(TINY_SWEEP)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for gpus, says in (("all", "no GPU is visible"), ("two", "give 'all' or a number")):
        proc = subprocess.run(
            [EXE, "run", str(cfg), "--store", str(tmp_path / "s.zarr"), "--gpus", gpus, "--no-progress"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "s.zarr").exists()


def test_the_paper_budget_slice_of_gpu_check_is_the_shallow_protocol_at_ten_to_the_five_steps():
    from collectors._config import SweepSpec

    root = Path(__file__).resolve().parents[1]
    text = (root / "benchmarks" / "gpu_paper_slice.toml").read_text()
    assert 'device = "cuda"' in text
    spec = SweepSpec.parse(text.replace('"cuda"', '"cpu"'))  # validated here; make gpu-check runs it on CUDA
    data = spec.load_data()
    assert spec.check(data) == [] and spec.budget(data)["steps"] == {1000: 100_000}
    assert spec.train.batch_size == 20 and not spec.train.shuffle and spec.train.init == "paper"
