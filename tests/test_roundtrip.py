"""Round trip: what a collector recorded is exactly what open_ensemble returns (Hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, OutputCollector

from ._models import TableModel


@st.composite
def cases(draw):
    n_points = draw(st.integers(1, 6))
    output_size = draw(st.integers(1, 3))
    n_times = draw(st.integers(1, 6))
    time_chunk = draw(st.integers(1, n_times))
    n_seeds = draw(st.integers(1, 3))
    floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
    values = draw(hnp.arrays(np.float32, (n_seeds, n_times, n_points, output_size), elements=floats))
    recorded = draw(st.lists(st.booleans(), min_size=n_seeds, max_size=n_seeds))
    stop = draw(st.integers(1, n_times))
    return n_points, output_size, n_times, time_chunk, values, recorded, stop


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_collector_round_trip(case):
    n_points, output_size, n_times, time_chunk, values, recorded, stop = case
    grid = EvalGrid(np.arange(n_points * 2.0).reshape(n_points, 2), np.zeros((n_points, output_size)))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.zarr"
        seeds = list(range(values.shape[0]))
        store = EnsembleStore.create(
            path,
            grid,
            gammas=[0.6],
            widths=[3],
            seeds=seeds,
            times=list(range(n_times)),
            time_units="step",
            time_chunk=time_chunk,
        )
        model = TableModel(n_points, output_size)
        for s in seeds:
            if not recorded[s]:
                continue
            with OutputCollector(store, gamma=0.6, width=3, seed=s) as col:
                for t in range(stop):
                    model.set(values[s, t])
                    col.record(model, t)
        ds = es.open_ensemble(path)
        pred = ds.prediction.sel(gamma=0.6, width=3).values
        for s in seeds:
            k = stop if recorded[s] else 0
            np.testing.assert_array_equal(pred[s, :k], values[s, :k])
            assert np.isnan(pred[s, k:]).all(), "unwritten records must read as NaN"
            assert ds.written.sel(gamma=0.6, width=3, seed=s).values.tolist() == [t < k for t in range(n_times)]
