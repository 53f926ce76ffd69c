"""Issue 31, item 3: results a user can plot and trace: one-line axis labels, the sentence in ``description``,
CF units on dimensionless quantities, and the prediction named for the store's task."""

from __future__ import annotations

import pytest
from xarray.plot.utils import label_from_attrs

import ensemble_stats as es
from collectors import EnsembleStore, TrainConfig, digits, run_sweep, train_block
from ensemble_stats import schema
from ensemble_stats.testing import shallow_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return es.open_ensemble(shallow_sweep(tmp_path_factory.mktemp("labels") / "runs.zarr"))


def _results(ds):
    return {
        "store": ds,
        "bias_variance": es.bias_variance(ds),
        "seed_mean": es.seed_mean(ds),
        "fit_expansion": es.fit_expansion(ds, quantity="variance"),
        "fit_rate": es.fit_rate(ds),
        "fit_rate(bias)": es.fit_rate(ds, quantity="bias"),
        "kernel_drift": es.kernel_drift(ds),
        "compare_to_theory": es.compare_to_theory(ds),
        "fluctuation_gaussianity": es.fluctuation_gaussianity(ds),
        "learning_rate_regimes": es.learning_rate_regimes(ds),
    }


def test_every_variable_of_every_result_has_a_one_line_axis_label(sweep):
    wrapped, lost = [], []
    for what, res in _results(sweep).items():
        for name in res.variables:
            attrs = res[name].attrs
            if "\n" in label_from_attrs(res[name]):  # xarray wraps long_name [units] at 30 characters
                wrapped.append(f"{what}.{name}: {attrs.get('long_name')!r}")
            if "description" in attrs and len(attrs["description"]) <= len(attrs["long_name"]):
                lost.append(f"{what}.{name}")
    assert wrapped == [] and lost == []
    bv = _results(sweep)["bias_variance"]
    assert bv.mse.attrs["long_name"] == "MSE" and "unbiased" in bv.mse.attrs["description"]
    assert bv.variance_lo.attrs["long_name"] == "seed variance, lower CI"
    assert "95%" in bv.variance_lo.attrs["description"]


def test_dimensionless_quantities_carry_cf_units(sweep):
    for name in (schema.ACCURACY, schema.TRAIN_LOSS, schema.TEST_LOSS, schema.WIDTH):
        if name in sweep.variables:
            assert sweep[name].attrs["units"] == "1", name
    assert sweep[schema.TIME].attrs["units"] == "scaled"  # the time keeps its units: the toolkit reads them
    assert es.bias_variance(sweep).n_seeds.attrs["units"] == "1"


def test_the_prediction_is_named_for_the_stores_task(sweep, tmp_path):
    assert sweep.prediction.attrs["long_name"] == "network output"  # an MSE regression, not "pre-softmax"
    config = {
        "sweep": {"gammas": [1.0], "widths": [8, 16], "seeds": 2},
        "time": {"units": "step", "horizon": 2, "n_times": 2},
        "data": {"name": "digits", "options": {"n_train": 32, "n_test": 8}},
        "optimizer": {"alpha": 1.0, "loss": "cross_entropy"},
    }
    run_sweep(config, tmp_path / "ce.zarr", progress=False)
    assert es.open_ensemble(tmp_path / "ce.zarr").prediction.attrs["long_name"] == "logit (pre-softmax output)"
    # a store of the user's own loop does not say its loss: the neutral name, never a wrong one
    data = digits(n_train=32, n_test=8)
    store = EnsembleStore.create(tmp_path / "own.zarr", data.grid, gammas=[1.0], widths=[8], seeds=[0], times=[0, 1])
    train_block(store, data, width=8, gammas=[1.0], seeds=[0], config=TrainConfig(loss="cross_entropy"))
    assert es.open_ensemble(store.path).prediction.attrs["long_name"] == "network output"
