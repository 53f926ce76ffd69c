"""open_ensemble: laziness, masking, schema validation, combining stores."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector
from ensemble_stats import errors

from ._models import TableModel
from .conftest import oracle


def _fill(store, seeds, times=range(3)):
    model = TableModel(7, 2)
    for s in seeds:
        with OutputCollector(store, gamma=0.5, width=4, seed=s) as col:
            for t in times:
                model.set(oracle(0.5, 4, s, t, 7, 2))
                col.record(model, t)


def test_lazy_masked_and_labelled(tmp_path, small_grid):
    store = EnsembleStore.create(
        tmp_path / "a.zarr", small_grid, gammas=[0.5], widths=[4], seeds=[0, 1], times=[0, 1, 2], time_units="step"
    )
    _fill(store, [0], times=[0, 1])
    ds = es.open_ensemble(store.path)
    assert isinstance(ds.prediction.data, da.Array)
    assert ds.time.attrs["units"] == "step"
    assert ds.prediction.dims == ("gamma", "width", "seed", "time", "point", "output")
    assert ds.step.dtype == np.int64 and ds.written.dtype == bool
    np.testing.assert_array_equal(ds.x.values, small_grid.x)
    assert np.isnan(ds.prediction.sel(seed=0, time=2).values).all()
    assert int(ds.step.sel(gamma=0.5, width=4, seed=0, time=2)) == -1
    assert ds.attrs["grid_hash"] == small_grid.hash


def test_more_seeds_later_combine_along_seed(tmp_path, small_grid):
    kw = dict(gammas=[0.5], widths=[4], times=[0, 1, 2], time_units="step")
    a = EnsembleStore.create(tmp_path / "a.zarr", small_grid, seeds=[0, 1], **kw)
    b = EnsembleStore.create(tmp_path / "b.zarr", small_grid, seeds=[2], **kw)
    _fill(a, [0, 1])
    _fill(b, [2])
    ds = es.open_ensemble([b.path, a.path])
    assert ds.seed.values.tolist() == [0, 1, 2]
    # open stores stand for their paths, alone or in a list
    assert es.open_ensemble([b, a]).identical(ds)
    assert es.open_ensemble(a).seed.values.tolist() == [0, 1]
    for s in range(3):
        np.testing.assert_array_equal(
            ds.prediction.sel(gamma=0.5, width=4, seed=s).values,
            np.stack([oracle(0.5, 4, s, t, 7, 2) for t in range(3)]),
        )
    assert ds.x.dims == ("point", "feature")

    with pytest.raises(errors.ValidationError, match="given twice"):
        es.open_ensemble([a.path, a.path])
    overlap = EnsembleStore.create(tmp_path / "o.zarr", small_grid, seeds=[1, 5], **kw)
    with pytest.raises(errors.ValidationError, match=r"seed values \[1\] appear in more than one store"):
        es.open_ensemble([a.path, overlap.path])
    other = EvalGrid(small_grid.x + 1, small_grid.target)
    c = EnsembleStore.create(tmp_path / "c.zarr", other, seeds=[3], **kw)
    with pytest.raises(errors.GridMismatchError):
        es.open_ensemble([a.path, c.path])


def test_schema_violation_is_reported(tmp_path, small_grid):
    import zarr

    store = EnsembleStore.create(tmp_path / "a.zarr", small_grid, gammas=[0.5], widths=[4], seeds=[0], times=[0, 1])
    g = zarr.open_group(str(store.path), mode="r+")
    del g["step"]
    with pytest.raises(errors.StoreCorruptionError, match="'step' is missing"):
        es.open_ensemble(store.path)
