"""Bad input raises a specific EnsembleStatsError (and builtin) and leaves the store's bytes unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector
from ensemble_stats import errors

from ._models import TableModel
from .conftest import oracle, tree_digest

BASE = dict(gammas=[0.5, 1.0], widths=[4], seeds=[0, 1], times=[0, 1, 2], time_units="step")


@pytest.fixture
def store(tmp_path, small_grid):
    s = EnsembleStore.create(tmp_path / "s.zarr", small_grid, **BASE)
    with OutputCollector(s, gamma=1.0, width=4, seed=1) as col:
        model = TableModel(7, 2)
        for t in range(3):
            model.set(oracle(1.0, 4, 1, t, 7, 2))
            col.record(model, t)
    return s


@pytest.mark.parametrize(
    ("change", "exc", "words"),
    [
        ({"gammas": [0.4, 1.0]}, errors.ValidationError, "0.4"),
        ({"gammas": [float("nan")]}, errors.ValidationError, "not finite"),
        ({"widths": [0]}, errors.ValidationError, "positive integers"),
        ({"widths": [2.5]}, errors.ValidationError, "positive integers"),
        ({"times": [0, 2, 1]}, errors.ValidationError, "strictly increasing"),
        ({"times": [0, 1, 1]}, errors.ValidationError, "strictly increasing"),
        ({"time_units": "hours"}, errors.ValidationError, "hours"),
        ({"seeds": [0, 0]}, errors.ValidationError, "duplicate"),
    ],
)
def test_bad_create_arguments_on_an_existing_store(store, small_grid, change, exc, words):
    before = tree_digest(store.path)
    with pytest.raises(exc, match=words) as info:
        EnsembleStore.create(store.path, small_grid, **{**BASE, **change})
    assert isinstance(info.value, ValueError)
    assert tree_digest(store.path) == before


def test_every_problem_is_reported_at_once(tmp_path, small_grid):
    with pytest.raises(errors.ValidationError) as info:
        EnsembleStore.create(tmp_path / "n.zarr", small_grid, gammas=[2.0], widths=[-1], seeds=[0], times=[1, 0])
    assert len(info.value.problems) == 3
    assert not (tmp_path / "n.zarr").exists()


def test_grid_with_non_finite_values_is_refused():
    with pytest.raises(errors.ValidationError, match=r"first at index \(1, 0\)"):
        EvalGrid(np.array([[0.0], [np.inf]]), np.zeros(2))
    with pytest.raises(errors.ValidationError, match="2 points but target has 3"):
        EvalGrid(np.zeros((2, 1)), np.zeros(3))


def test_a_different_grid_names_the_first_differing_point(store, small_grid):
    before = tree_digest(store.path)
    x = small_grid.x.copy()
    x[4, 1] += 1e-9
    other = EvalGrid(x, small_grid.target)
    with pytest.raises(errors.GridMismatchError, match="first difference at point 4"):
        EnsembleStore.create(store.path, other, **BASE)
    with pytest.raises(errors.GridMismatchError, match="point 4"):
        store.check_grid(other)
    assert tree_digest(store.path) == before


def test_wrong_prediction_shape_dtype_and_steps(store):
    before = tree_digest(store.path)
    idx = store.run_index(0.5, 4, 0)
    with pytest.raises(errors.ValidationError, match=r"shape \(1, 7, 3\), expected \(1, 7, 2\)"):
        store.write_records(idx, [0], np.zeros((1, 7, 3)), [0])
    with pytest.raises(errors.ValidationError, match="floating point"):
        store.write_records(idx, [0], np.zeros((1, 7, 2), dtype=np.int32), [0])
    with pytest.raises(errors.ValidationError, match="strictly increasing"):
        store.write_records(idx, [1, 0], np.zeros((2, 7, 2)), [1, 0])
    for background in (False, True):
        col = OutputCollector(store, gamma=0.5, width=4, seed=0, background=background)
        with pytest.raises(errors.ValidationError, match=r"model output on the grid has shape \(7, 5\)"):
            col.record(TableModel(7, 5), 0)
            col.flush()  # in background mode the worker's error surfaces here
        col.run_lock.release()  # the writer gives up; the next collector for this run may lock it
    assert tree_digest(store.path) == before


def test_collector_for_a_run_not_in_the_store(store):
    before = tree_digest(store.path)
    with pytest.raises(errors.RunNotFoundError, match=r"gamma=0\.75 is not in the store") as info:
        OutputCollector(store, gamma=0.75, width=4, seed=0)
    assert isinstance(info.value, LookupError)
    with pytest.raises(errors.RunNotFoundError, match="seed=9"):
        OutputCollector(store, gamma=0.5, width=4, seed=9)
    assert tree_digest(store.path) == before


def test_writing_a_complete_run_without_resume(store):
    before = tree_digest(store.path)
    with pytest.raises(errors.RunExistsError, match="3 of 3 records") as info:
        OutputCollector(store, gamma=1.0, width=4, seed=1)
    assert isinstance(info.value, FileExistsError)
    assert tree_digest(store.path) == before


def test_rewriting_a_run_with_resume_is_idempotent(store):
    before = tree_digest(store.path)
    with OutputCollector(store, gamma=1.0, width=4, seed=1, resume=True) as col:
        model = TableModel(7, 2)
        for t in range(3):
            model.set(oracle(1.0, 4, 1, t, 7, 2))
            col.record(model, t)
    assert tree_digest(store.path) == before


def test_a_path_that_is_not_a_store(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("hello")
    before = tree_digest(tmp_path / "plain")
    for call in (lambda: EnsembleStore.open(tmp_path / "plain"), lambda: es.open_ensemble(tmp_path / "plain")):
        with pytest.raises(errors.StoreNotFoundError, match="not an ensemble store") as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
    assert tree_digest(tmp_path / "plain") == before


def test_seed_block_layout_refuses_single_seed_writes(tmp_path, small_grid):
    s = EnsembleStore.create(tmp_path / "b.zarr", small_grid, **{**BASE, "seeds": [0, 1, 2, 3]}, seed_chunk=2)
    with pytest.raises(errors.ValidationError, match="whole seed block"):
        s.write_records(s.run_index(0.5, 4, 1), [0], np.zeros((1, 7, 2)), [0])
    with pytest.raises(errors.ValidationError, match="whole seed chunks"):
        s.write_records((0, 0, slice(1, 3)), [0], np.zeros((2, 1, 7, 2)), [0])
    s.write_records((0, 0, slice(2, 4)), [0], np.ones((2, 1, 7, 2)), [0])
    ds = es.open_ensemble(s.path)
    assert ds.written.sel(gamma=0.5, width=4, time=0).values.tolist() == [False, False, True, True]
    with pytest.raises(errors.ValidationError, match="does not divide"):
        EnsembleStore.create(tmp_path / "c.zarr", small_grid, **{**BASE, "seeds": [0, 1, 2]}, seed_chunk=2)


def test_chunk_layout_sharing_runs_is_refused():
    from ensemble_stats.store import check_chunk_ownership

    assert check_chunk_ownership((2, 3, 4, 5, 7, 1), (1, 1, 1, 5, 7, 1), 3, 1) == []
    problems = check_chunk_ownership((2, 3, 4, 5, 7, 1), (1, 3, 2, 5, 3, 1), 3, 1)
    assert len(problems) == 3
