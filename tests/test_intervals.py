"""Interval methods: exact oracles where they exist, NaN below 4 seeds, a realistic test bed, coverage at S = 8."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

import ensemble_stats as es
from ensemble_stats.testing import INTERVALS, interval_coverage, synthetic_ensemble


def _one_cell(**kw):
    return synthetic_ensemble(gammas=[0.5], widths=[64], times=[0.5], **kw)


def test_chi2_pointwise_variance_interval_is_the_exact_gaussian_one():
    ds = _one_cell(n_seeds=9, n_points=5, n_outputs=2, seed=3)
    res = es.bias_variance(ds, dims=(), ci_method="chi2", ci=0.9)
    x = ds.prediction.values.astype(np.float64)[0, 0, :, 0]  # (seed, point, output)
    s2 = x.var(0, ddof=1)
    np.testing.assert_allclose(res.variance.values[0, 0, 0], s2, rtol=1e-10)
    np.testing.assert_allclose(res.variance_lo.values[0, 0, 0], 8 * s2 / stats.chi2.ppf(0.95, 8), rtol=1e-9)
    np.testing.assert_allclose(res.variance_hi.values[0, 0, 0], 8 * s2 / stats.chi2.ppf(0.05, 8), rtol=1e-9)
    np.testing.assert_allclose(res.variance_dof.values, 8.0)
    # the default caps the dof by the jackknife's, so it is never narrower than the Gaussian interval
    auto = es.bias_variance(ds, dims=())
    assert bool((auto.variance_dof <= 8 + 1e-9).all())
    assert bool((auto.variance_hi >= res.variance_hi - 1e-12).all())


def test_pointwise_bias2_interval_is_the_square_of_the_t_interval_of_the_mean_error():
    ds = _one_cell(n_seeds=6, n_points=40, seed=4)
    cell = ds.prediction.isel(gamma=0, width=0, time=0).astype(np.float64)
    ds = ds.assign(target=ds.target * 3 * cell.std("seed") / np.sqrt(6) + cell.mean("seed"))
    res = es.bias_variance(ds, dims=())
    x = ds.prediction.values.astype(np.float64)[0, 0, :, 0, :, 0]
    err = x.mean(0) - ds.target.values[:, 0]
    lo, hi = stats.t.interval(0.95, 5, loc=err, scale=x.std(0, ddof=1) / np.sqrt(6))
    want_lo = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo**2, hi**2))
    np.testing.assert_allclose(res.bias2_lo.values[0, 0, 0, :, 0], want_lo, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(res.bias2_hi.values[0, 0, 0, :, 0], np.maximum(lo**2, hi**2), rtol=1e-9)
    assert (want_lo == 0).any() and (want_lo > 0).any()  # both branches are exercised


def test_effective_dof_grows_with_independent_points_and_shrinks_with_correlation():
    kw = dict(n_seeds=8, n_points=16, replicates=400, seed=1)
    indep = es.bias_variance(_one_cell(**kw), ci_method="chi2").variance_dof
    corr = es.bias_variance(_one_cell(grid_correlation=1.0, **kw), ci_method="chi2").variance_dof
    assert 7 <= float(corr.median()) < 0.5 * float(indep.median())
    assert float(indep.median()) > 0.7 * 7 * 16
    assert bool(((indep >= 7 - 1e-9) & (indep <= 7 * 16 + 1e-9)).all())


@pytest.mark.parametrize("S", [2, 3])
def test_fewer_than_four_seeds_give_nan_intervals_with_a_status_never_narrow_ones(S):
    ds = synthetic_ensemble(n_seeds=S, seed=2)
    res = es.bias_variance(ds)
    assert np.isfinite(res.variance).all()
    for k in ("mse", "bias2", "variance"):
        assert res[f"{k}_lo"].isnull().all() and res[f"{k}_hi"].isnull().all()
    assert bool((res.ci_status == 1).all())
    assert "too_few_seeds" in res.ci_status.attrs["flag_meanings"]
    m = es.seed_mean(ds)
    assert m.mean_lo.isnull().all() and bool((m.ci_status == 1).all())
    assert es.fit_rate(ds).slope_lo.isnull().all()
    assert es.fit_expansion(ds).coef_lo.isnull().all()


def test_seed_mean_is_the_student_t_interval_and_drops_non_finite_values():
    ds = synthetic_ensemble(n_seeds=7, missing_fraction=0.2, seed=5)
    res = es.seed_mean(ds)
    x = ds.prediction.values.astype(np.float64)[1, 2, :, 1, 3, 0]
    x = x[np.isfinite(x)]
    lo, hi = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(x.size))
    cell = res.isel(gamma=1, width=2, time=1, point=3, output=0)
    np.testing.assert_allclose([float(cell.mean_lo), float(cell.mean_hi)], [lo, hi], rtol=1e-6)
    assert int(cell.n_seeds) == x.size
    acc = xr.DataArray(np.array([0.5, 0.6, 0.7, 0.8]), dims="seed", attrs={"long_name": "accuracy", "units": "1"})
    m = es.seed_mean(acc)
    assert float(m["mean"]) == pytest.approx(0.65) and m["mean"].attrs["units"] == "1"
    with pytest.raises(es.errors.ValidationError, match="needs a 'seed' dim"):
        es.seed_mean(acc.rename(seed="run"))


def test_the_test_bed_has_the_stated_correlation_and_marginal_variance():
    for noise in ("gaussian", "student", "skewed"):
        ds, truth = synthetic_ensemble(
            gammas=[0.5], widths=[64], times=[0.5], n_seeds=4000, n_points=6, noise=noise,
            grid_correlation=0.8, return_truth=True, seed=6,
        )  # fmt: skip
        x = ds.prediction.values.astype(np.float64)[0, 0, :, 0, :, 0]
        np.testing.assert_allclose(x.var(0, ddof=1), truth.variance.values[0, 0, 0, :, 0], rtol=0.15)
        np.testing.assert_allclose(np.corrcoef(x.T), truth.grid_correlation.values, atol=0.08)
        skew = stats.skew(x[:, 0])
        assert (skew > 0.6) if noise == "skewed" else abs(skew) < 0.6
    assert not np.allclose(truth.grid_correlation.values, np.eye(6))


@pytest.mark.parametrize("noise", ["gaussian", "student"])
def test_coverage_at_eight_seeds_on_the_correlated_test_bed_stays_above_92_percent(noise):
    # 2000 replicates: the binomial s.e. of a 95% coverage is 0.49 points, so a method at 94% fails this
    # threshold with probability ~1e-4 (z = 3.8) and one at 95% ~1e-9; the seed is fixed, so the run repeats.
    cov = interval_coverage(n_seeds=8, replicates=2000, grid_correlation=1.0, noise=noise, seed=11)
    low = {k: round(float(v), 4) for k, v in zip(INTERVALS, cov.coverage.values, strict=True) if v < 0.92}
    assert not low, low
    assert bool((cov.coverage <= 0.985).all()), cov.coverage.values  # and not uselessly wide
    legacy = interval_coverage(
        n_seeds=8, replicates=2000, grid_correlation=1.0, noise=noise, seed=11, ci_method="legacy"
    )
    assert float(legacy.coverage.sel(interval="variance (pointwise)")) < 0.9  # the check can see the old problem


def test_every_output_variable_has_its_own_long_name():
    ds = synthetic_ensemble(n_seeds=6, seed=8)
    results = {
        "bias_variance": es.bias_variance(ds),
        "fit_rate": es.fit_rate(ds),
        "fit_expansion": es.fit_expansion(ds),
        "seed_mean": es.seed_mean(ds),
    }
    for fn, res in results.items():
        for name, var in res.data_vars.items():
            assert var.attrs.get("long_name"), (fn, name)
            ln = var.attrs.get("description", var.attrs["long_name"])  # the full sentence where the label is short
            if name.endswith("_lo"):
                assert "lower" in ln, (fn, name, ln)
            if name.endswith("_hi"):
                assert "upper" in ln, (fn, name, ln)
            if name.endswith("stderr"):
                assert "standard error" in ln, (fn, name, ln)
            if name.startswith("n_"):
                assert any(w in ln for w in ("seeds", "widths")), (fn, name, ln)
        assert res.attrs.get("ci_method"), fn
    bv = results["bias_variance"]
    assert bv.variance.attrs["long_name"] != bv.n_seeds.attrs["long_name"]
    assert "squared bias" in bv.bias2.attrs["description"] and bv.bias2.attrs["long_name"] == "bias^2"


def test_bad_interval_arguments_are_refused_all_at_once():
    ds = synthetic_ensemble(n_seeds=5, seed=1)
    with pytest.raises(es.errors.ValidationError, match=r"ci=1.5 .*ci_method='bootstrap'"):
        es.bias_variance(ds, ci=1.5, ci_method="bootstrap")
    with pytest.raises(es.errors.FitError, match="ci_method"):
        es.fit_rate(ds, ci_method="jackknife")
    with pytest.raises(ValueError, match="grid_correlation"):
        synthetic_ensemble(grid_correlation=1.5)
