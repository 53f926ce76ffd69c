"""collectors.lightning: a real lightning.Trainer records on the store's schedule and resumes from a checkpoint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import EnsembleStore, ScaledMLP, teacher
from ensemble_stats.errors import RunExistsError

pl = pytest.importorskip("lightning.pytorch")
from collectors.lightning import OutputCollectorCallback  # noqa: E402

WIDTH, GAMMA = 32, 0.75
BATCH = 4  # 8 training points: 2 optimizer steps per epoch


class Tiny(pl.LightningModule):
    def __init__(self, seed: int):
        super().__init__()
        self.net = ScaledMLP(2, WIDTH, GAMMA, seed=seed, dtype=torch.float64)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return 0.5 * ((self(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.param_groups(alpha=1.0))


def _loader(data):
    ds = torch.utils.data.TensorDataset(torch.tensor(data.x_train), torch.tensor(data.y_train))
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=False)


def _trainer(tmp_path, epochs, callbacks):
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )


def _store(path, data, units="epoch"):
    times = [0, 1, 2, 3, 4, 5, 6] if units == "epoch" else [0, 3, 5, 8, 12]
    return EnsembleStore.create(
        path, data.grid, gammas=[GAMMA], widths=[WIDTH], seeds=[0, 1], times=times, time_units=units, dtype="float64"
    )


@pytest.fixture(autouse=True)
def _quiet_lightning():
    # Lightning's advice for real jobs (dataloader workers, small batches) is not about the code under test
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"lightning\..*")
        warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|log_every_n_steps).*")
        yield


def test_a_fit_records_on_the_schedule_and_a_resumed_fit_writes_the_same_bytes(tmp_path):
    data = teacher()
    whole, split = _store(tmp_path / "whole.zarr", data), _store(tmp_path / "split.zarr", data)

    torch.manual_seed(0)
    cb = OutputCollectorCallback(whole, gamma=GAMMA, width=WIDTH, seed=0)
    _trainer(tmp_path / "a", 6, [cb]).fit(Tiny(0), _loader(data))

    # the same run interrupted after 3 epochs, checkpointed, and resumed by a new process's objects
    first = OutputCollectorCallback(split, gamma=GAMMA, width=WIDTH, seed=0)
    t1 = _trainer(tmp_path / "b", 3, [first])
    t1.fit(Tiny(0), _loader(data))
    ckpt = tmp_path / "mid.ckpt"
    t1.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["callbacks"]
    assert state[first.state_key]["step"] == 6 and state[first.state_key]["next_index"] == 4
    done = es.open_ensemble(split.path).written.sel(seed=0).values.ravel()
    assert done.tolist() == [True] * 4 + [False] * 3  # epochs 0-3 durable at the checkpoint

    second = OutputCollectorCallback(split, gamma=GAMMA, width=WIDTH, seed=0)
    _trainer(tmp_path / "c", 6, [second]).fit(Tiny(99), _loader(data), ckpt_path=ckpt)  # weights from ckpt

    a, b = es.open_ensemble(whole.path), es.open_ensemble(split.path)
    assert bool(a.written.sel(seed=0).all()) and bool(b.written.sel(seed=0).all())
    np.testing.assert_array_equal(a.step.sel(seed=0).values.ravel(), [0, 2, 4, 6, 8, 10, 12])
    pa, pb = a.prediction.sel(seed=0).values, b.prediction.sel(seed=0).values
    assert pa.tobytes() == pb.tobytes()  # bitwise: no record lost, duplicated or shifted
    assert not np.allclose(pa[..., 0, :, :], pa[..., -1, :, :])  # and the net did train
    assert es.verify_store(split.path) == []


def test_step_units_and_a_second_fresh_fit_into_a_recorded_run_is_refused(tmp_path):
    data = teacher()
    st = _store(tmp_path / "s.zarr", data, units="step")
    _trainer(tmp_path / "a", 6, [OutputCollectorCallback(st, gamma=GAMMA, width=WIDTH, seed=1)]).fit(
        Tiny(1), _loader(data)
    )
    ds = es.open_ensemble(st.path)
    np.testing.assert_array_equal(ds.step.sel(seed=1).values.ravel(), [0, 3, 5, 8, 12])
    assert not bool(ds.written.sel(seed=0).any())  # another run of the store is untouched
    with pytest.raises(RunExistsError, match=r"already has 5 of 5 records.*ckpt_path=") as err:
        _trainer(tmp_path / "b", 6, [OutputCollectorCallback(st, gamma=GAMMA, width=WIDTH, seed=1)]).fit(
            Tiny(1), _loader(data)
        )
    assert "resume=True" not in str(err.value)  # the callback has no such option: the checkpoint is the way
    with pytest.raises(es.errors.RunNotFoundError):
        OutputCollectorCallback(st, gamma=GAMMA, width=WIDTH, seed=7)


def _resumed_against_whole(tmp_path, data, loader):
    """Train 6 epochs whole, and 3 + 3 with a checkpoint between (fresh objects, the global seed reset as a new
    process would); return which of the 7 records are bitwise equal, and the resumed store's steps."""
    whole, split = _store(tmp_path / "whole.zarr", data), _store(tmp_path / "split.zarr", data)
    pl.seed_everything(0)
    _trainer(tmp_path / "a", 6, [OutputCollectorCallback(whole, gamma=GAMMA, width=WIDTH, seed=0)]).fit(
        Tiny(0), loader(data)
    )
    pl.seed_everything(0)
    t1 = _trainer(tmp_path / "b", 3, [OutputCollectorCallback(split, gamma=GAMMA, width=WIDTH, seed=0)])
    t1.fit(Tiny(0), loader(data))
    t1.save_checkpoint(tmp_path / "mid.ckpt")
    pl.seed_everything(0)
    _trainer(tmp_path / "c", 6, [OutputCollectorCallback(split, gamma=GAMMA, width=WIDTH, seed=0)]).fit(
        Tiny(99), loader(data), ckpt_path=tmp_path / "mid.ckpt"
    )
    a, b = es.open_ensemble(whole.path).sel(seed=0), es.open_ensemble(split.path).sel(seed=0)
    pa, pb = a.prediction.values, b.prediction.values
    equal = [bool((pa[..., i, :, :] == pb[..., i, :, :]).all()) for i in range(pa.shape[-3])]
    return equal, b.step.values.ravel().tolist(), bool(b.written.all())


def test_what_a_resume_keeps_with_shuffled_loaders(tmp_path):
    """The README's condition for "bitwise": an order that is a function of the epoch. A loader shuffled from the
    process's global RNG draws a new order after the resume: the store is still complete and consistent (no record
    lost or taken twice), the records before the checkpoint are bitwise those of the whole run, the later ones are a
    differently shuffled (equally valid) run. A sampler seeded per epoch (Lightning calls its set_epoch) resumes
    bitwise."""

    def global_shuffle(data):
        ds = torch.utils.data.TensorDataset(torch.tensor(data.x_train), torch.tensor(data.y_train))
        return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)

    def epoch_seeded(data):
        ds = torch.utils.data.TensorDataset(torch.tensor(data.x_train), torch.tensor(data.y_train))
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
        return torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=sampler)

    data = teacher()
    equal, steps, complete = _resumed_against_whole(tmp_path / "global", data, global_shuffle)
    assert complete and steps == [0, 2, 4, 6, 8, 10, 12]
    assert equal[:4] == [True] * 4 and not any(equal[4:])
    equal, steps, complete = _resumed_against_whole(tmp_path / "epoch", data, epoch_seeded)
    assert complete and steps == [0, 2, 4, 6, 8, 10, 12] and all(equal)


def test_log_sends_each_records_scalars_to_the_trainers_loggers(tmp_path):
    import csv

    data = teacher()
    st = _store(tmp_path / "s.zarr", data, units="step")
    loss = lambda out, y: 0.5 * ((out - y) ** 2).mean()  # noqa: E731
    cb = OutputCollectorCallback(
        st, gamma=GAMMA, width=WIDTH, seed=0, loss_fn=loss, metrics=lambda m: {"train_loss": 0.25}, log=True
    )
    trainer = pl.Trainer(
        max_epochs=6,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(tmp_path / "logs", name="run"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
    )
    trainer.fit(Tiny(0), _loader(data))
    with open(trainer.logger.experiment.metrics_file_path) as f:
        rows = list(csv.DictReader(f))
    logged = {int(r["step"]): float(r["grid/test_loss"]) for r in rows if r.get("grid/test_loss")}
    ds = es.open_ensemble(st.path).sel(seed=0)
    assert sorted(logged) == ds.step.values.ravel().tolist() == [0, 3, 5, 8, 12]
    np.testing.assert_allclose([logged[k] for k in sorted(logged)], ds.test_loss.values.ravel(), rtol=1e-6)
    assert all(float(r["grid/train_loss"]) == 0.25 for r in rows if r.get("grid/train_loss"))
