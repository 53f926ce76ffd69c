"""Selecting by time: the theory's scaled time of every record, and the sweep config a store keeps."""

from __future__ import annotations

import numpy as np
import pytest

import ensemble_stats as es
from collectors import SweepSpec, prepare_store, train_block
from ensemble_stats.errors import ValidationError
from ensemble_stats.testing import synthetic_ensemble


def _epoch_store(tmp_path, alpha: float, alphas=None):
    raw = {
        "sweep": {"gammas": [0.75], "widths": [8, 32], "seeds": 2, **({"alphas": alphas} if alphas else {})},
        "time": {"units": "epoch", "horizon": 3, "times": [0, 1, 3]},
        "data": {"name": "teacher", "options": {"n_train": 8}},
        "optimizer": {"batch_size": 2, **({} if alphas else {"alpha": alpha})},
    }
    spec = SweepSpec.parse(raw)
    store = prepare_store(spec, tmp_path / f"a{alpha}-{bool(alphas)}.zarr")
    data = spec.load_data()
    for extra in [{"alpha": a} for a in alphas] if alphas else [{}]:
        cfg = spec.train if not extra else spec.train.__class__(**{**spec.train.__dict__, "alpha": extra["alpha"]})
        for w in spec.widths:
            train_block(store, data, width=w, gammas=spec.gammas, seeds=spec.seeds, config=cfg, extra_coords=extra)
    return es.open_ensemble(store.path), spec


def test_scaled_time_is_alpha_steps_over_width_from_the_config_or_the_alpha_coordinate(tmp_path):
    ds, _ = _epoch_store(tmp_path, alpha=2.0)
    assert es.sweep_config(ds)["optimizer"]["alpha"] == 2.0 and es.sweep_config(ds)["data"]["name"] == "teacher"
    t = es.scaled_time(ds)
    steps_per_epoch = 4  # 8 training points, batches of 2
    for w in (8, 32):
        expected = 2.0 * np.array([0, 1, 3]) * steps_per_epoch / w
        np.testing.assert_allclose(t.sel(width=w).isel(gamma=0, seed=0).values, expected)
    assert t.attrs["long_name"].startswith("scaled time") and t.dims == ds.step.dims
    swept, _ = _epoch_store(tmp_path, alpha=1.0, alphas=[0.5, 4.0])
    ts = es.scaled_time(swept)
    later = ts.isel(time=slice(1, None))
    np.testing.assert_allclose(later.sel(alpha=4.0) / later.sel(alpha=0.5), 8.0)  # equal steps, 8x the rate
    assert float(abs(ts.isel(time=0)).max()) == 0.0


def test_a_store_without_a_sweep_config_says_so_and_scaled_time_assumes_alpha_one():
    ds = synthetic_ensemble(gammas=[0.75], widths=[64], n_seeds=2, times=[0.0, 1.0], seed=0)
    with pytest.raises(ValidationError, match="no sweep configuration"):
        es.sweep_config(ds)
    np.testing.assert_allclose(es.scaled_time(ds).isel(gamma=0, seed=0, width=0), [0.0, 1.0])
    with pytest.raises(ValidationError, match="not a JSON object"):
        es.sweep_config(ds.assign_attrs(config="{not json"))
    with pytest.raises(ValidationError, match="no 'step'"):
        es.scaled_time(ds.drop_vars("step"))


def test_open_ensemble_joins_a_store_without_the_swept_dim_at_its_configured_value(tmp_path):
    """An alpha map and the first run at the configured alpha (no alpha dim) open as one (gamma, alpha) sweep;
    the runs of the latter are those of alpha = 1, unchanged."""
    import tomllib

    from tests import _configs

    paths = {}
    for name, tables in {
        "base": {"sweep": {"widths": [8]}},
        "map": {"sweep": {"widths": [8], "alphas": [2.0, 4.0]}},
    }.items():
        cfg = tomllib.loads(_configs.toml(_configs.sweep(**tables)))  # the TOML round trip of the builder too
        spec = SweepSpec.parse(cfg)
        store = prepare_store(spec, tmp_path / f"{name}.zarr")
        data = spec.load_data()
        for a in spec.alphas or [None]:
            train = spec.train if a is None else spec.train.__class__(**{**spec.train.__dict__, "alpha": a})
            train_block(store, data, width=8, gammas=spec.gammas, seeds=spec.seeds, config=train,
                        extra_coords={} if a is None else {"alpha": a})  # fmt: skip
        paths[name] = store.path
    joined = es.open_ensemble([paths["map"], paths["base"]])
    assert joined.alpha.values.tolist() == [1.0, 2.0, 4.0]
    assert joined.prediction.dims == ("gamma", "width", "seed", "alpha", "time", "point", "output")
    alone = es.open_ensemble(paths["base"])
    np.testing.assert_array_equal(joined.prediction.sel(alpha=1.0).values, alone.prediction.values)
    np.testing.assert_array_equal(joined.x.values, alone.x.values)  # grid variables keep their dims
    assert "alpha" not in joined.x.dims
    # the runs at alpha = 1 were trained at alpha = 1: their scaled time is k / N
    np.testing.assert_allclose(es.scaled_time(joined).sel(alpha=1.0), es.scaled_time(alone))
