"""bias_variance: brute-force oracle, unbiasedness, identities, exclusions, laziness, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

import ensemble_stats as es
from ensemble_stats import errors
from ensemble_stats.testing import synthetic_ensemble


def _brute(pred, ref, ci=0.95):
    """Loop oracle for one cell: pred (seed, point), ref (point,): estimates and explicit leave-one-out CIs."""
    pred = pred.astype(np.float64)
    ok = np.isfinite(pred).all(axis=1)
    x = pred[ok]
    S = len(x)

    def stat(x):
        m, v = x.mean(0), x.var(0, ddof=1)
        b2 = (m - ref) ** 2 - v / len(x)
        return {"mse": (b2 + v).mean(), "bias2": b2.mean(), "variance": v.mean()}

    full = stat(x)
    loo = [stat(np.delete(x, i, axis=0)) for i in range(S)]
    t = stats.t.ppf(0.5 + ci / 2, S - 1)
    out = dict(full, n_seeds=S)
    for k in ("mse", "bias2", "variance"):
        th = np.array([d[k] for d in loo])
        se = np.sqrt((S - 1) / S * ((th - th.mean()) ** 2).sum())
        out[f"{k}_lo"], out[f"{k}_hi"] = full[k] - t * se, full[k] + t * se
        out[f"{k}_stderr"] = se
    return out


def test_jackknife_method_matches_a_brute_force_loop_with_explicit_leave_one_out():
    ds = synthetic_ensemble(
        gammas=[0.6, 0.9],
        widths=[16, 32],
        n_seeds=7,
        times=[0.0, 1.0],
        n_points=5,
        n_outputs=2,
        missing_fraction=0.1,
        diverged_runs=2,
        seed=4,
    )
    res = es.bias_variance(ds, ci_method="jackknife")
    auto = es.bias_variance(ds)
    pred = ds.prediction.values
    target = ds.target.values
    for k in ("mse", "bias2", "variance"):  # estimates and standard errors do not depend on the interval method
        xr.testing.assert_identical(res[k], auto[k])
        xr.testing.assert_identical(res[f"{k}_stderr"], auto[f"{k}_stderr"])
    for gi in range(2):
        for wi in range(2):
            for ti in range(2):
                cell = pred[gi, wi, :, ti].reshape(7, -1)
                want = _brute(cell, target.reshape(-1))
                got = res.isel(gamma=gi, width=wi, time=ti)
                for k, v in want.items():
                    np.testing.assert_allclose(float(got[k]), v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_mse_is_exactly_bias2_plus_variance_and_dims_empty_keeps_points():
    ds = synthetic_ensemble(n_seeds=6, seed=1)
    res = es.bias_variance(ds, dims=())
    assert res.variance.dims == ("gamma", "width", "time", "point", "output")
    np.testing.assert_allclose(res.mse, res.bias2 + res.variance, rtol=1e-12)
    # and equals the plain seed mean of squared errors
    sq = ((ds.prediction.astype(np.float64) - ds.target) ** 2).mean("seed")
    np.testing.assert_allclose(res.mse, sq, rtol=1e-10)


def test_bias2_is_unbiased_where_the_plain_estimator_is_not():
    # 4 seeds per cell, 4000 independent points at gamma = 1/2 (variance does not shrink with N):
    # the finite-seed correction is what makes the average right
    ds, truth = synthetic_ensemble(
        gammas=[0.5], widths=[64], n_seeds=4, times=[0.5], n_points=4000, return_truth=True, seed=9
    )
    res = es.bias_variance(ds, dims=())
    true_b2 = ((truth["mean"] - ds.target) ** 2).values.ravel()
    err = res.bias2.values.ravel() - true_b2
    plain_err = ((ds.prediction.mean("seed") - ds.target) ** 2).values.ravel() - true_b2
    se = err.std(ddof=1) / np.sqrt(err.size)
    assert abs(err.mean()) < 3 * se, (err.mean(), se)
    assert plain_err.mean() > 8 * se, "the uncorrected estimator should be visibly biased here"
    np.testing.assert_allclose(plain_err.mean() - err.mean(), (truth["variance"] / 4).mean(), rtol=0.15)
    # and the variance estimate is unbiased for the true variance
    v_err = res.variance.values.ravel() - truth["variance"].values.ravel()
    assert abs(v_err.mean()) < 3 * v_err.std(ddof=1) / np.sqrt(v_err.size)


def test_variance_interval_covers_the_true_variance_at_its_level_pointwise():
    ds, truth = synthetic_ensemble(
        gammas=[0.75], widths=[64], n_seeds=48, times=[0.5], n_points=2000, return_truth=True, seed=5
    )
    res = es.bias_variance(ds, dims=())
    v = truth["variance"]
    cover = float(((res.variance_lo <= v) & (v <= res.variance_hi)).mean())
    assert 0.92 <= cover <= 0.975, cover


def test_unwritten_and_diverged_runs_are_excluded_and_counted():
    ds = synthetic_ensemble(n_seeds=10, missing_fraction=0.2, diverged_runs=5, seed=2)
    res = es.bias_variance(ds)
    finite = np.isfinite(ds.prediction).all(("point", "output"))
    np.testing.assert_array_equal(res.n_seeds, finite.sum("seed"))
    excluded = ds.written & ~finite
    np.testing.assert_array_equal(res.n_excluded, excluded.sum("seed"))
    assert int(res.n_excluded.sum()) >= 5
    assert np.isfinite(res.mse).all()


def test_reference_dataarray_broadcasts_and_bad_ones_are_refused():
    ds = synthetic_ensemble(n_seeds=5, seed=3)
    h = ds.target.expand_dims(time=ds.time.values) * 0.5
    res = es.bias_variance(ds, reference=h)
    manual = es.bias_variance(ds.assign(target=ds.target * 0.5))
    np.testing.assert_allclose(res.bias2, manual.bias2)
    with pytest.raises(errors.ValidationError, match="does not broadcast"):
        es.bias_variance(ds, reference=xr.DataArray(np.zeros(3), dims="banana"))
    with pytest.raises(errors.ValidationError, match="7 values along 'point'"):
        es.bias_variance(ds, reference=xr.DataArray(np.zeros(7), dims="point"))
    with pytest.raises(errors.ValidationError, match="'target' or a DataArray"):
        es.bias_variance(ds, reference="truth")
    with pytest.raises(errors.ValidationError, match="not grid dims"):
        es.bias_variance(ds, dims=("seed",))


def test_lazy_graph_equals_in_memory_and_accessor_is_sugar():
    ds = synthetic_ensemble(n_seeds=6, seed=7)
    lazy = ds.chunk({"gamma": 1, "width": 1, "seed": 2})
    res = es.bias_variance(lazy)
    assert res.variance.chunks is not None
    xr.testing.assert_allclose(res.compute(), es.bias_variance(ds))
    xr.testing.assert_identical(ds.ens.bias_variance(dims=("point",)), es.bias_variance(ds, dims=("point",)))


def test_one_pass_seed_moments_equal_xarray_eager_and_chunked():
    from ensemble_stats._stats import seed_moments

    ds = synthetic_ensemble(n_seeds=11, missing_fraction=0.2, diverged_runs=3, seed=2)
    x = ds.prediction.astype(np.float64)
    x = x.where(np.isfinite(x).all(("point", "output")))
    for pred in (ds.prediction, ds.prediction.chunk({"seed": 3, "gamma": 1})):
        m = seed_moments(pred).compute()
        np.testing.assert_allclose(m["mean"], x.mean("seed"), rtol=1e-12)
        np.testing.assert_allclose(m["variance"], x.var("seed", ddof=1), rtol=1e-10)
        count = np.isfinite(x).all(("point", "output")).sum("seed")
        assert bool((m["n_seeds"] == count).all())  # per grid value, the same count at every point
