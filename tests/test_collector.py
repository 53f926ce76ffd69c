"""OutputCollector: scheduling, hooks, eval-mode handling, scalars, state_dict, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector
from ensemble_stats.errors import RunExistsError, RunLockedError, ValidationError

from ._models import Shallow, TableModel
from .conftest import oracle


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("background", [True, False])
def test_attach_records_scaled_times_without_changing_the_loop(tmp_path, background):
    rng = np.random.default_rng(1)
    grid = EvalGrid(rng.normal(size=(6, 2)), rng.normal(size=(6, 1)))
    times = [0.0, 0.25, 0.5, 1.0]
    store = EnsembleStore.create(tmp_path / "a.zarr", grid, gammas=[0.75], widths=[8, 16], seeds=[0], times=times)
    x = torch.tensor(rng.normal(size=(10, 2)), dtype=torch.float32)
    y = torch.tensor(rng.normal(size=(10, 1)), dtype=torch.float32)
    expected = {}
    for width in (8, 16):
        torch.manual_seed(0)
        model = Shallow(2, width, 0.75)
        opt = torch.optim.SGD(model.parameters(), lr=width ** (2 * 0.75 - 2))
        col = OutputCollector(store, gamma=0.75, width=width, seed=0, background=background)
        # reference: the same run, outputs taken by hand at steps round(t * width)
        torch.manual_seed(0)
        ref = Shallow(2, width, 0.75)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=width ** (2 * 0.75 - 2))
        gx = torch.tensor(grid.x, dtype=torch.float32)
        outs, k = [], 0
        for t in times:
            _train(ref, ref_opt, x, y, round(t * width) - k)
            k = round(t * width)
            with torch.no_grad():
                outs.append(ref(gx).numpy())
        expected[width] = np.stack(outs)
        with col.attach(model, opt):
            _train(model, opt, x, y, width)
        assert col.done and col.step == width
    ds = es.open_ensemble(tmp_path / "a.zarr")
    for width in (8, 16):
        got = ds.prediction.sel(gamma=0.75, width=width, seed=0).values
        np.testing.assert_array_equal(got, expected[width])
        np.testing.assert_array_equal(
            ds.step.sel(gamma=0.75, width=width, seed=0).values, [round(t * width) for t in times]
        )
    assert bool(ds.written.all())


@pytest.mark.parametrize("background", [False, True])
def test_eval_mode_is_restored_and_no_grad_is_used(make_store, small_grid, background):
    store = make_store()
    seen = []

    class Probe(TableModel):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return super().forward(x)

    model = Probe(7, 2)
    model.train()
    col = OutputCollector(store, gamma=0.5, width=4, seed=0, background=background)
    col.record(model, 0)
    col.flush()
    assert seen == [(False, False)]
    assert model.training
    model.eval()
    col.record(model, 1)
    assert not model.training


def test_background_errors_surface_in_the_training_thread(make_store):
    store = make_store()

    def bad_metrics(model):
        raise RuntimeError("metric exploded")

    col = OutputCollector(store, gamma=0.5, width=4, seed=0, metrics=bad_metrics, background=True)
    col.record(TableModel(7, 2), 0)
    with pytest.raises(RuntimeError, match="metric exploded"):
        col.flush()
    assert not store.written_mask(col.index).any()


def test_scalars_loss_accuracy_and_metrics(make_store, small_grid):
    store = make_store()
    model = TableModel(7, 2)
    model.set(small_grid.target * 2)
    col = OutputCollector(
        store,
        gamma=0.5,
        width=4,
        seed=1,
        loss_fn=lambda out, tgt: ((out - tgt) ** 2).mean(),
        metrics=lambda m: {"output_weight_norm": 3.5},
    )
    col.record(model, 0, train_loss=0.25)
    col.flush()
    ds = es.open_ensemble(store.path)
    rec = ds.isel(time=0).sel(gamma=0.5, width=4, seed=1)
    np.testing.assert_allclose(float(rec.test_loss), np.mean(small_grid.target**2), rtol=1e-6)
    assert float(rec.accuracy) == 1.0  # 2 * one-hot-ish rows keep their argmax
    assert float(rec.train_loss) == 0.25
    assert float(rec.output_weight_norm) == 3.5
    # unrecorded scalars of other records stay NaN (masked, since not written)
    assert np.isnan(float(ds.train_loss.isel(time=1).sel(gamma=0.5, width=4, seed=1)))


def test_unknown_scalar_and_unscheduled_step_are_refused(make_store):
    store = make_store()
    col = OutputCollector(store, gamma=0.5, width=4, seed=0)
    with pytest.raises(ValidationError, match="unknown scalars"):
        col.record(TableModel(7, 2), 0, loss_of_doom=1.0)
    with pytest.raises(ValidationError, match="not a recording step"):
        col.record(TableModel(7, 2), 7)
    col.record(TableModel(7, 2), 2)
    with pytest.raises(ValidationError, match="already recorded"):
        col.record(TableModel(7, 2), 1)


def test_state_dict_resume_continues_without_loss_or_duplicates(make_store):
    store = make_store(time_chunk=2)
    model = TableModel(7, 2)
    col = OutputCollector(store, gamma=1.0, width=8, seed=2)
    for t in range(3):
        model.set(oracle(1.0, 8, 2, t, 7, 2))
        col.record(model, t)
    state = col.state_dict()  # flushes the half-full second chunk
    assert store.written_mask(col.index).tolist() == [True, True, True, False, False]
    with pytest.raises(RunExistsError, match="resume=True"):
        OutputCollector(store, gamma=1.0, width=8, seed=2)
    with pytest.raises(RunLockedError, match=r"being written by pid \d+"):  # col still holds the run
        OutputCollector(store, gamma=1.0, width=8, seed=2, resume=True)
    col.close()
    col2 = OutputCollector(store, gamma=1.0, width=8, seed=2, resume=True)
    col2.load_state_dict(state)
    assert col2.step == 2
    for t in range(3, 5):
        model.set(oracle(1.0, 8, 2, t, 7, 2))
        col2.record(model, t)
    col2.flush()
    ds = es.open_ensemble(store.path)
    got = ds.prediction.sel(gamma=1.0, width=8, seed=2).values
    np.testing.assert_array_equal(got, np.stack([oracle(1.0, 8, 2, t, 7, 2) for t in range(5)]))
    np.testing.assert_array_equal(ds.step.sel(gamma=1.0, width=8, seed=2).values, np.arange(5))


def test_load_state_dict_of_another_run_is_refused(make_store):
    store = make_store()
    a = OutputCollector(store, gamma=1.0, width=8, seed=2)
    b = OutputCollector(store, gamma=1.0, width=8, seed=1)
    with pytest.raises(ValidationError, match="belongs to run"):
        b.load_state_dict(a.state_dict())


def test_diverged_run_is_stored_as_is_and_reported(make_store):
    store = make_store()
    model = TableModel(7, 2)
    col = OutputCollector(store, gamma=0.75, width=4, seed=1)
    for t in range(5):
        vals = oracle(0.75, 4, 1, t, 7, 2)
        if t >= 3:
            vals[0, 0] = np.nan if t == 3 else np.inf
        model.set(vals)
        col.record(model, t)
    col.close()
    ds = es.open_ensemble(store.path, diverged="keep")
    run = ds.sel(gamma=0.75, width=4, seed=1)
    assert bool(run.written.all()), "a diverged record is written, not missing"
    assert np.isnan(run.prediction.values[3, 0, 0]) and np.isinf(run.prediction.values[4, 0, 0])
    excluded = es.open_ensemble(store.path).sel(gamma=0.75, width=4, seed=1)  # the default for statistics
    assert np.isnan(excluded.prediction.values[3:]).all() and np.isfinite(excluded.prediction.values[:3]).all()
    assert int(run.diverged_step) == 3
    assert es.diverged_runs(ds) == [{"gamma": 0.75, "width": 4, "seed": 1, "step": 3}]
    assert int(ds.diverged_step.sel(gamma=0.75, width=4, seed=0)) == -1


def test_epoch_units_need_steps_per_epoch(make_store):
    store = make_store(name="e.zarr", time_units="epoch", times=[0, 1, 2])
    with pytest.raises(ValidationError, match="steps_per_epoch"):
        OutputCollector(store, gamma=0.5, width=4, seed=0)
    col = OutputCollector(store, gamma=0.5, width=4, seed=0, steps_per_epoch=5)
    assert col.schedule.tolist() == [0, 5, 10]


def test_scaled_times_too_fine_for_a_width_are_refused(make_store):
    store = make_store(name="f.zarr", time_units="scaled", times=[0.0, 0.01, 0.02])
    with pytest.raises(ValidationError, match="both map to optimizer step"):
        OutputCollector(store, gamma=0.5, width=4, seed=0)


def test_on_step_records_each_scheduled_step_once_and_refuses_to_lose_one(tmp_path):
    rng = np.random.default_rng(2)
    grid = EvalGrid(rng.normal(size=(4, 2)), rng.normal(size=(4, 1)))
    store = EnsembleStore.create(
        tmp_path / "s.zarr", grid, gammas=[0.75], widths=[8], seeds=[0], times=[0, 2, 5], time_units="step"
    )
    model = Shallow(2, 8, 0.75)
    with OutputCollector(store, gamma=0.75, width=8, seed=0) as col:
        taken = [col.on_step(model, k) for k in (0, 0, 1, 2, 2, 3)]  # a step seen twice records once
        assert taken == [True, False, False, True, False, False]
        with pytest.raises(ValidationError, match="before the step already seen"):
            col.on_step(model, 1)
        with pytest.raises(ValidationError, match=r"past the scheduled record\(s\) at step \[5\]"):
            col.on_step(model, 6)
        assert col.on_step(model, 5) and col.done
    np.testing.assert_array_equal(es.open_ensemble(store.path).step.values.ravel(), [0, 2, 5])


def test_a_declared_metric_round_trips_with_its_long_name_and_its_digest(tmp_path):
    rng = np.random.default_rng(3)
    grid = EvalGrid(rng.normal(size=(4, 2)), rng.normal(size=(4, 1)))
    kw = dict(gammas=[0.75], widths=[8], seeds=[0, 1], times=[0, 1, 2], time_units="step")
    store = EnsembleStore.create(tmp_path / "m.zarr", grid, metrics={"grad_norm": "gradient 2-norm"}, **kw)
    model = Shallow(2, 8, 0.75)
    x, y = torch.tensor(rng.normal(size=(6, 2)), dtype=torch.float32), torch.zeros(6, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    norms = []

    def metrics(m):
        norm = float(sum((p.grad**2).sum() for p in m.parameters() if p.grad is not None) ** 0.5)
        norms.append(norm)
        return {"grad_norm": norm, "train_loss": 1.0}

    with OutputCollector(store, gamma=0.75, width=8, seed=0, metrics=metrics).attach(model, opt):
        _train(model, opt, x, y, 2)
    ds = es.open_ensemble(store.path)
    assert ds.grad_norm.dims == ("gamma", "width", "seed", "time")
    assert ds.grad_norm.attrs["long_name"] == "gradient 2-norm"
    np.testing.assert_allclose(ds.grad_norm.sel(seed=0).values.ravel(), norms, rtol=1e-6)
    assert np.isnan(ds.grad_norm.sel(seed=1)).all()  # the other run was never recorded
    assert es.verify_store(store.path) == []
    # undeclared names are refused with what to do; the store's layout is fixed at creation
    with pytest.raises(ValidationError, match=r"unknown scalars \['lr'\].*metrics=\{name: long_name\}"):
        with OutputCollector(store, gamma=0.75, width=8, seed=1, metrics=lambda m: {"lr": 0.1}) as col:
            col.record(model, 0)
    with pytest.raises(es.errors.SpecMismatchError, match="metrics"):
        EnsembleStore.create(tmp_path / "m.zarr", grid, metrics=["other"], **kw)
    # an edited metric value is caught by the record's scalar digest
    store.array("grad_norm")[0, 0, 0, 1] = 123.0
    assert any("per-record scalars" in str(p) for p in es.verify_store(store.path))


@pytest.mark.parametrize(
    ("metrics", "match"),
    [(["Grad"], "lowercase identifier"), (["accuracy"], "known scalar"), (["written"], "variable or dim")],
)
def test_bad_metric_names_are_refused_before_anything_is_written(tmp_path, metrics, match):
    grid = EvalGrid(np.zeros((2, 2)), np.zeros((2, 1)))
    with pytest.raises(ValidationError, match=match):
        EnsembleStore.create(
            tmp_path / "b.zarr", grid, gammas=[0.5], widths=[8], seeds=[0], times=[0.0], metrics=metrics
        )
    assert not (tmp_path / "b.zarr").exists()


def test_a_partial_file_of_a_declared_metric_is_swept_like_any_run_chunk(tmp_path):
    from ensemble_stats import sweep_partial_files

    grid = EvalGrid(np.zeros((2, 2)), np.zeros((2, 1)))
    store = EnsembleStore.create(
        tmp_path / "p.zarr", grid, gammas=[0.5], widths=[8], seeds=[0], times=[0.0], metrics=["grad_norm"]
    )
    partial = store.path / "grad_norm" / "c" / "0" / "0" / "0" / "0.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half a chunk")  # fresh: only the run's free lock says its writer is gone
    with OutputCollector(store, gamma=0.5, width=8, seed=0):
        assert sweep_partial_files(store.path) == (0, 1) and partial.exists()  # a live writer's file is spared
    assert sweep_partial_files(store.path) == (1, 0) and not partial.exists()
