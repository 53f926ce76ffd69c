"""Every public analysis works on the dask-backed arrays open_ensemble returns, whatever their chunking (issue 31,
item 1: ``es.trend(acc)`` raised dask's "multiple chunks along a core dimension" on every store)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import ensemble_stats as es
from ensemble_stats.testing import synthetic_ensemble

from .conftest import store_from_synthetic


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    ds = synthetic_ensemble(
        gammas=[0.5, 0.75, 1.0], widths=[64, 128, 256, 512], n_seeds=8, n_points=4, times=[0.25, 0.5, 1.0], seed=6
    )
    path = tmp_path_factory.mktemp("chunks") / "s.zarr"
    store_from_synthetic(path, ds)
    return es.open_ensemble(path)


def _scalar(ds: xr.Dataset) -> xr.DataArray:
    """A per-record scalar (dims gamma, width, seed, time) as a study would use the final accuracy."""
    return ds.prediction.isel(point=0, output=0, drop=True)


CALLS = {
    "bias_variance": lambda ds: es.bias_variance(ds),
    "fit_expansion(mean)": lambda ds: es.fit_expansion(ds, quantity="mean"),
    "fit_expansion(variance)": lambda ds: es.fit_expansion(ds, quantity="variance"),
    "fit_expansion(free)": lambda ds: es.fit_expansion(ds, quantity="variance", terms="free"),
    "fit_rate(variance)": lambda ds: es.fit_rate(ds),
    "fit_rate(bias)": lambda ds: es.fit_rate(ds, quantity="bias"),
    "seed_mean": lambda ds: es.seed_mean(ds),
    "trend over gamma": lambda ds: es.trend(_scalar(ds).isel(time=-1)),
    "trend over width": lambda ds: es.trend(_scalar(ds).isel(time=-1), "width"),
    "plateau over time": lambda ds: es.plateau(_scalar(ds)),
    "paired_difference": lambda ds: es.paired_difference(
        _scalar(ds).isel(gamma=-1, drop=True), _scalar(ds).isel(gamma=0, drop=True)
    ),
    "completeness": lambda ds: es.completeness(ds),
}


def _chunked(opened: xr.Dataset, chunking: str) -> xr.Dataset:
    if chunking == "as opened":
        return opened
    if chunking == "one value per chunk along every dim":
        return opened.chunk(dict.fromkeys(opened.dims, 1))
    # a coordinate chunked apart from the data (at_common_time's per-width step): xarray's DataArray.chunksizes
    # raises "inconsistent chunks" on it, which the README's assessment block hit in CI
    tag = da.zeros((opened.sizes["width"], opened.sizes["seed"]), chunks=(3, 5))
    return opened.assign_coords(tag=(("width", "seed"), tag))


@pytest.mark.parametrize("chunking", ["as opened", "one value per chunk along every dim", "a coordinate apart"])
@pytest.mark.parametrize("name", list(CALLS))
def test_public_analyses_work_on_any_chunking_and_equal_the_in_memory_result(opened, name, chunking):
    ds = _chunked(opened, chunking)
    lazy = CALLS[name](ds)
    got = lazy.compute() if hasattr(lazy, "compute") else lazy
    want = CALLS[name](opened.load())
    want = want.compute() if hasattr(want, "compute") else want
    # dask reduces over chunks in another order than numpy does in one pass: rounding-level differences, which
    # the free fit's exponent search (to a tolerance of about 1e-8 in p) turns into slightly larger ones
    tol = 1e-4 if "free" in name else 1e-7
    xr.testing.assert_allclose(got, want, rtol=tol, atol=1e-10)
    assert any(np.isfinite(v).any() for v in (got.data_vars.values() if hasattr(got, "data_vars") else [got]))
