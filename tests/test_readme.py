"""Every Python block of the README runs (issue 31, item 1): a README line can never break unnoticed.

Each block is marked ``<!-- readme-test: NAME -->`` on the line before its fence; ``SETUPS[NAME]`` prepares what
the prose around the block assumes (the user's tensors, a store the earlier steps made, a LightningModule) in a
fresh working directory, then the block runs as written. Paths outside the working directory that a block names
(a CIFAR-10 folder, a scratch file system) are mapped into it, and a SLURM cluster is dask-jobqueue's local
job-queue cluster; nothing else of a block is changed.
"""

from __future__ import annotations

import re
import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- readme-test: ([\w-]+) -->")


def blocks() -> list[tuple[str, int, str | None, str]]:
    """(file, line, setup name or None, code) of every ```python block of the README and docs/."""
    out = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```python":
                mark = MARK.fullmatch(lines[i - 1].strip()) if i else None
                end = lines.index("```", i + 1)
                out.append((doc.name, i + 2, mark.group(1) if mark else None, "\n".join(lines[i + 1 : end])))
                i = end
            i += 1
    return out


def _analysis_store(tmp: Path) -> None:
    from ensemble_stats.testing import shallow_sweep

    shallow_sweep(tmp / "runs.zarr", gammas=(0.5, 0.75, 1.0), widths=(16, 32, 64, 128), seeds=8, n_times=3)


def _orders_store(tmp: Path) -> None:
    from collectors import run_sweep

    config = {
        "sweep": {"gammas": [0.75], "widths": [16], "seeds": 4, "data_seeds": [0, 1, 2, 3]},
        "time": {"units": "epoch", "horizon": 2, "n_times": 3},
        "data": {"name": "teacher", "options": {"n_train": 8, "n_test": 4}},
        "optimizer": {"batch_size": 2},
    }
    run_sweep(config, tmp / "orders.zarr", workers=1, progress=False)


def setup_collector(tmp, ns, monkeypatch):
    import torch

    ns["x_test"] = torch.linspace(-1, 1, 10).reshape(5, 2)
    ns["y_test"] = torch.sin(ns["x_test"][:, :1])

    def check():  # the loop body is the user's ("..."): the record before training is taken and written
        import ensemble_stats as es

        written = es.open_ensemble(tmp / "runs.zarr").written.sel(gamma=0.75, width=256, seed=3)
        return written.values.tolist() == [True, False, False, False]

    ns["_check"] = check


def setup_lightning(tmp, ns, monkeypatch):
    import lightning.pytorch as pl
    import torch

    from collectors import EnsembleStore, ScaledMLP, teacher

    data = teacher()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ScaledMLP(2, 256, 0.75, seed=3)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return 0.5 * ((self(x) - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.net.param_groups(alpha=1.0))

    train = torch.utils.data.TensorDataset(torch.tensor(data.x_train).float(), torch.tensor(data.y_train).float())
    ns["module"], ns["loader"] = Module(), torch.utils.data.DataLoader(train, batch_size=4)
    ns["store"] = EnsembleStore.create(
        tmp / "runs.zarr", data.grid, gammas=[0.75], widths=[256], seeds=[3], times=[0, 1, 2, 3, 4], time_units="epoch"
    )
    monkeypatch.setattr(pl.Trainer, "__init__", _quiet_trainer(pl.Trainer.__init__))

    def check():  # 4 epochs in two fits: all 5 records, and the logger got them
        import ensemble_stats as es

        logged = "".join(p.read_text() for p in tmp.glob("logs/**/metrics.csv"))
        return bool(es.open_ensemble(tmp / "runs.zarr").written.all()) and "grid/test_loss" in logged

    ns["_check"] = check


def _quiet_trainer(init):
    def quiet(self, *a, **k):
        k.setdefault("enable_progress_bar", False)
        k.setdefault("enable_model_summary", False)
        k.setdefault("accelerator", "cpu")
        init(self, *a, **k)

    return quiet


def setup_convnet(tmp, ns, monkeypatch):
    from collectors import EnsembleStore, TrainConfig, cifar10

    folder = tmp / "cifar-10-batches-bin"  # the binary format, 2 random images per file
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([rng.integers(0, 10, (2, 1)), rng.integers(0, 256, (2, 3072))], axis=1)
        records.astype(np.uint8).tofile(folder / name)
    ns["PATHS"] = {"/data/cifar-10-batches-bin": str(folder)}
    grid = cifar10(folder).grid
    ns["store"] = EnsembleStore.create(
        tmp / "cifar.zarr", grid, gammas=[0.5, 1.0], widths=[3000], seeds=range(8), times=[0, 1], time_units="step"
    )
    ns["cfg"] = TrainConfig(loss="cross_entropy", batch_size=5)
    ns["_check"] = lambda: bool(ns["store"].written_mask(ns["store"].run_index(1.0, 3000, 7)).all())


def setup_analysis(tmp, ns, monkeypatch):
    _analysis_store(tmp)
    ns["_check"] = lambda: bool(np.isfinite(ns["rate"].slope).all()) and int((ns["fit"].status == 0).sum()) > 0


def setup_assessment(tmp, ns, monkeypatch):
    import ensemble_stats as es

    _analysis_store(tmp)
    _orders_store(tmp)
    ns["es"], ns["ds"] = es, es.open_ensemble(tmp / "runs.zarr")
    ns["_check"] = lambda: (
        {"init", "data_order"} <= {str(c) for c in ns["vc"].component.values} and "regime" in ns["reg"]
    )


def setup_claims(tmp, ns, monkeypatch):
    _analysis_store(tmp)
    ns["_check"] = lambda: str(ns["claim"].verdict).split(" (")[0] in ("holds", "does not hold", "inconclusive")


def setup_slurm(tmp, ns, monkeypatch):
    from dask_jobqueue.local import LocalCluster as JobQueueCluster

    class LocalSLURM(JobQueueCluster):
        """dask-jobqueue's local job-queue cluster in SLURMCluster's place: each job a local process; one job."""

        def __init__(self, *, cores, processes, memory, walltime):
            super().__init__(
                cores=1,
                processes=1,
                memory="2GB",
                scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
                worker_extra_args=["--host", "127.0.0.1"],
            )

        def scale(self, n=None, jobs=0, memory=None, cores=None):
            return super().scale(jobs=min(jobs, 1))

    monkeypatch.setattr("dask_jobqueue.SLURMCluster", LocalSLURM)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp / "sweep.toml").write_text(
        "[sweep]\ngammas = [0.75]\nwidths = [16]\nseeds = 2\n[time]\nhorizon = 1.0\nn_times = 2\n"
        '[data]\nname = "teacher"\noptions = { n_train = 8, n_test = 4 }\n'
    )
    ns["PATHS"] = {"/scratch/runs.zarr": str(tmp / "scratch-runs.zarr")}

    def check():
        from dask.distributed import default_client

        import ensemble_stats as es

        default_client().close()
        ns["cluster"].close()
        return bool(es.open_ensemble(tmp / "scratch-runs.zarr").written.all())

    ns["_check"] = check


SETUPS = {
    "collector": setup_collector,
    "lightning": setup_lightning,
    "convnet": setup_convnet,
    "analysis": setup_analysis,
    "assessment": setup_assessment,
    "claims": setup_claims,
    "slurm": setup_slurm,
}


def test_every_python_block_is_marked_with_a_setup():
    found = blocks()
    assert len(found) >= 7
    assert [(f, line) for f, line, name, _ in found if name not in SETUPS] == []


# dask-jobqueue's local "job" launcher leaves its Popen objects to the garbage collector: its warnings, not ours
_JOBQUEUE = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=f"{b[0]}:{b[1]}:{b[2]}", marks=[_JOBQUEUE] if b[2] == "slurm" else []) for b in blocks()],
)
def test_readme_block_runs(block, tmp_path, monkeypatch):
    doc, line, name, code = block
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    SETUPS[name](tmp_path, ns, monkeypatch)
    for outside, inside in ns.pop("PATHS", {}).items():
        assert outside in code, f"{doc}:{line} no longer names {outside}"
        code = code.replace(outside, inside)
    check = ns.pop("_check", None)
    with warnings.catch_warnings():
        # the block's own output and third-party advice (Lightning's num_workers tips) are not under test
        warnings.filterwarnings("ignore", module=r"lightning\..*")
        warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|log_every_n_steps).*")
        script = tmp_path / f"{Path(doc).stem}_{line}.py"  # run as a script, the way a user would paste it
        script.write_text(code)
        ns.update(runpy.run_path(str(script), init_globals=ns, run_name="__readme__"))
    assert check is not None and check(), f"{doc}:{line} ran but did not do what its prose says"
