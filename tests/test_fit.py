"""fit_expansion / fit_rate: statsmodels oracle, coverage, recovery, laziness on a real cluster, bad input."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import statsmodels.api as sm
import xarray as xr

import ensemble_stats as es
from ensemble_stats import errors, theory
from ensemble_stats._fit import wls_kernel
from ensemble_stats.testing import synthetic_ensemble


def test_wls_kernel_equals_statsmodels_on_200_random_cells():
    rng = np.random.default_rng(0)
    widths = np.array([64, 128, 256, 512, 1024, 2048])
    cells = 200
    p = np.stack([np.zeros(cells), rng.uniform(0.05, 0.5, cells), rng.uniform(0.55, 1.0, cells)], -1)
    X = widths[None, :, None] ** -p[:, None, :]
    coef_true = rng.normal(size=(cells, 3))
    w = rng.uniform(0.5, 20.0, size=(cells, widths.size))
    y = (X * coef_true[:, None, :]).sum(-1) + rng.normal(size=(cells, widths.size)) / np.sqrt(w)
    coef, se, cov, chi2_dof, n, status = wls_kernel(y, w, p, widths=widths)
    assert (status == 0).all() and (n == 6).all()
    for i in range(cells):
        fit = sm.WLS(y[i], X[i], weights=w[i]).fit()
        np.testing.assert_allclose(coef[i], fit.params, rtol=1e-8)
        np.testing.assert_allclose(se[i], fit.bse, rtol=1e-8)
        np.testing.assert_allclose(cov[i], fit.cov_params(), rtol=1e-7, atol=1e-14)
        np.testing.assert_allclose(chi2_dof[i], fit.scale, rtol=1e-8)


def test_mean_coefficients_recovered_with_honest_95pct_intervals():
    ds, truth = synthetic_ensemble(
        gammas=[0.75], n_seeds=32, times=[0.5], n_points=2000, mean_terms=[0, 0.25], return_truth=True, seed=11
    )
    fit = es.fit_expansion(ds, quantity="mean", terms=[0, 0.25])
    inside = (fit.coef_lo <= truth.mean_coef) & (truth.mean_coef <= fit.coef_hi)
    for k in range(2):
        cover = float(inside.isel(term=k).mean())
        assert 0.93 <= cover <= 0.97, (k, cover)
    # standardized errors follow Student t with the residual dof (5 widths - 2 terms)
    from scipy import stats

    z = ((fit.coef - truth.mean_coef) / fit.model_stderr).values.ravel()
    assert stats.kstest(z, stats.t(3).cdf).pvalue > 0.001
    assert stats.kstest(z, stats.norm.cdf).pvalue < 0.001, "a normal reference would be wrong at 3 dof"


def test_variance_law_coefficient_covered_and_exponent_recovered():
    ds, truth = synthetic_ensemble(
        gammas=[0.625, 0.875], n_seeds=64, times=[0.5], n_points=1000, return_truth=True, seed=12
    )
    cover = []
    for g in (0.625, 0.875):
        sub = ds.sel(gamma=[g])
        f = es.fit_expansion(sub, quantity="variance", terms=[2 * g - 1])
        tv = truth.variance_coef.sel(gamma=[g]).isel(variance_term=0)
        cover.append(float(((f.coef_lo.isel(term=0) <= tv) & (tv <= f.coef_hi.isel(term=0))).mean()))
    assert all(0.92 <= c <= 0.975 for c in cover), cover
    free = es.fit_expansion(ds, quantity="variance", terms="free")
    true_p = 2 * ds.gamma - 1
    inside = (free.exponent_lo <= true_p) & (true_p <= free.exponent_hi)
    assert 0.9 <= float(inside.mean()) <= 0.985, float(inside.mean())
    assert float(np.abs(free.exponent.isel(term=0) - true_p).median()) < 0.1


def test_fit_rate_recovers_one_minus_two_gamma_within_its_interval():
    ds = synthetic_ensemble(n_seeds=48, n_points=16, seed=13)
    r = es.fit_rate(ds)
    inside = (r.slope_lo <= r.theory) & (r.theory <= r.slope_hi)
    assert float(inside.mean()) >= 0.8  # 15 cells at 95%
    assert (np.abs(r.slope - r.theory) < 4 * r.stderr).all()
    np.testing.assert_allclose(r.theory.values, 1 - 2 * ds.gamma.values)


def test_fit_rate_bias_against_a_known_limit():
    ds, truth = synthetic_ensemble(
        gammas=[0.875, 0.95], n_seeds=64, n_points=32, times=[1.0], mean_terms=[0, 0.125], return_truth=True, seed=14
    )
    h = truth.mean_coef.isel(term=0, gamma=0, drop=True)  # the limit h_t, the same for every gamma
    r = es.fit_rate(ds, quantity="bias", reference=h)
    # the synthetic bias decays like N^-0.125 whatever gamma: the fitted slope says so
    assert (np.abs(r.slope + 0.125) < 4 * r.stderr).all(), (r.slope.values, r.stderr.values)


@pytest.mark.parametrize("readout", ["symmetric", "skewed"])
def test_bias_law_follows_the_readout_law_and_its_interval_excludes_the_other_law(readout):
    other = "skewed" if readout == "symmetric" else "symmetric"
    g = 0.75
    p = -theory.bias_rate(g, readout)
    ds, truth = synthetic_ensemble(
        gammas=[g], n_seeds=64, n_points=32, times=[1.0], mean_terms=[0, p], readout=readout, return_truth=True,
        seed=21,
    )  # fmt: skip
    h = truth.mean_coef.isel(term=0, drop=True)
    r = es.fit_rate(ds, quantity="bias", reference=h).isel(gamma=0, time=0)
    assert r.attrs["readout_law"] == readout
    assert float(r.theory) == pytest.approx(-p)
    assert bool(es.covers(r)), (float(r.slope_lo), float(r.slope_hi), -p)
    competing = theory.bias_rate(g, other)
    assert not float(r.slope_lo) <= competing <= float(r.slope_hi), "these widths and seeds separate the laws"
    # the same data read under the wrong law: the theory column changes, the estimate does not
    wrong = es.fit_rate(ds, quantity="bias", reference=h, readout=other).isel(gamma=0, time=0)
    assert float(wrong.theory) == pytest.approx(competing) and float(wrong.slope) == float(r.slope)
    assert not bool(es.covers(wrong))
    ratio = es.fit_rate(ds, quantity="ratio", reference=h)
    assert float(ratio.theory.item()) == pytest.approx(theory.ratio_rate(g, readout))
    # terms="leading" is the limit and the law's bias term; its coefficients are covered
    lead = es.fit_expansion(ds, terms="leading")
    np.testing.assert_allclose(lead.exponent.sel(gamma=g).values, [0, p])
    inside = (lead.coef_lo <= truth.mean_coef) & (truth.mean_coef <= lead.coef_hi)
    assert float(inside.mean()) >= 0.85, float(inside.mean())


def test_theory_terms_follow_nu_and_failed_cells_become_nan_with_status():
    ds = synthetic_ensemble(gammas=[0.7, 0.8, 0.9], widths=[32, 64, 128, 256, 512, 1024], n_seeds=16, seed=15)
    f = es.fit_expansion(ds, quantity="mean")
    for g in (0.7, 0.8, 0.9):
        e = f.exponent.sel(gamma=g).values
        want = theory.mean_exponents(g)
        np.testing.assert_allclose(e[: len(want)], want)
        assert np.isnan(e[len(want) :]).all()
    assert theory.nu(0.7) == 1 and theory.nu(0.8) == 2 and theory.nu(0.9) == 4
    # cells with every width missing (all seeds unwritten at gamma 0.7, time 0): NaN and a status, no abort
    bad = ds.copy(deep=True)
    bad["prediction"][dict(gamma=0, time=0)] = np.nan
    g = es.fit_expansion(bad, quantity="mean")
    assert (g.status.isel(gamma=0, time=0) == 4).all()
    assert g.coef.isel(gamma=0, time=0).isnull().all()
    assert (g.status.isel(gamma=0, time=slice(1, None)) == 0).all() and (g.status.isel(gamma=slice(1, None)) == 0).all()
    with pytest.raises(errors.FitError, match="could not be fitted"):
        es.fit_expansion(bad, quantity="mean", errors="raise")


def test_graph_building_computes_nothing_and_cluster_result_equals_in_memory():
    from dask.distributed import Client, LocalCluster

    ds = synthetic_ensemble(n_seeds=12, n_points=6, seed=16)
    lazy = ds.chunk({"gamma": 1, "seed": 4, "width": 1})
    calls = []

    def spy(dsk, keys, **kw):
        calls.append(1)
        return dask.get(dsk, keys, **kw)

    with dask.config.set(scheduler=spy):
        fit = es.fit_expansion(lazy, quantity="variance")
        rate = es.fit_rate(lazy)
        bv = es.bias_variance(lazy)
    assert calls == [], "building the graph must not compute"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        got = xr.merge([fit.rename({v: f"fit_{v}" for v in fit.data_vars}), bv], compat="override").compute()
        got_rate = rate.compute()
    want = es.fit_expansion(ds, quantity="variance")
    xr.testing.assert_allclose(
        got[[f"fit_{v}" for v in want.data_vars]].rename({f"fit_{v}": v for v in want.data_vars}), want
    )
    xr.testing.assert_allclose(got_rate, es.fit_rate(ds))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"quantity": "median"}, "quantity='median'"),
        ({"terms": [0, float("nan")]}, "finite exponents"),
        ({"terms": ["a"]}, "not numbers"),
        ({"terms": [0, 0]}, "repeat an exponent"),
        ({"terms": "all"}, "terms='all'"),
        ({"terms": [0, 0.1, 0.2, 0.3, 0.4, 0.5]}, "cannot determine 6 terms"),
        ({"width_min": 4096}, "at least 2 widths"),
    ],
)
def test_bad_fit_arguments(kwargs, words):
    ds = synthetic_ensemble(n_seeds=4, seed=17)
    with pytest.raises(errors.FitError, match=words) as info:
        es.fit_expansion(ds, **kwargs)
    assert isinstance(info.value, ValueError)


def test_one_width_is_refused_by_both_fits():
    ds = synthetic_ensemble(widths=[64], n_seeds=4, seed=18)
    for call in (es.fit_expansion, es.fit_rate):
        with pytest.raises(errors.FitError, match="at least 2 widths"):
            call(ds)
    with pytest.raises(errors.FitError, match="quantity='mean'"):
        es.fit_rate(synthetic_ensemble(n_seeds=4), quantity="mean")


def _jackknife_by_deletion(pred, p, *, widths, quantity):
    """The definition the fast kernel must equal: delete seed i at every width, recompute the moments from the
    remaining seeds, redo the fit; S + 1 fits, no downdating, no batching."""
    from ensemble_stats._np_fit import _fit_moments

    def _moments(xx):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN widths
            return np.nanmean(xx, -1), np.nanvar(xx, -1, ddof=1), np.isfinite(xx).sum(-1).astype(float)

    x = np.asarray(pred, dtype=np.float64)
    full = _fit_moments(*_moments(x), p, widths=widths, quantity=quantity, scaled=True)
    used = np.isfinite(x).any(-2)
    coefs = []
    for i in range(x.shape[-1]):
        xi = x.copy()
        xi[..., i] = np.nan
        coefs.append(
            np.where(
                used[..., i, None],
                _fit_moments(*_moments(xi), p, widths=widths, quantity=quantity, scaled=True)[0],
                np.nan,
            )
        )
    c = np.stack(coefs, 0)
    k = np.isfinite(c).all(-1).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bar = np.nansum(c, 0) / k[..., None]
        se = np.sqrt((k - 1)[..., None] / k[..., None] * np.nansum((c - bar) ** 2, 0))
    return full[0], np.where(np.isfinite(full[0]) & (k >= 4)[..., None], se, np.nan)


@pytest.mark.parametrize("quantity", ["mean", "variance"])
def test_fast_jackknife_equals_refitting_with_each_seed_deleted(quantity):
    """Issue 35: the downdated, batched jackknife equals S + 1 separate fits to 1e-10 in float64, with missing
    values (a seed absent at one width, a cell with three seeds) and heavy tails."""
    from ensemble_stats._np_fit import jackknife_fit_kernel

    rng = np.random.default_rng(7)
    widths = np.array([64, 128, 256, 512, 1024, 2048])
    cells, S = 3000, 12
    law = 0.3 + 2.0 * widths**-0.25 if quantity == "mean" else 0.5 * widths**-0.5
    noise = rng.standard_t(3, size=(cells, widths.size, S)) * (0.05 if quantity == "mean" else 1.0)
    pred = law[:, None] + noise * (1.0 if quantity == "mean" else np.sqrt(law)[:, None])
    pred[5, 2, 3] = np.nan  # one seed missing at one width
    pred[9, :, 3:] = np.nan  # a cell with three seeds: no interval
    pred[11, 4, :] = np.nan  # a width with no seeds
    p = np.array([0.0, 0.25]) if quantity == "mean" else np.array([0.5, 1.0])
    fast = jackknife_fit_kernel(pred, p, widths=widths, quantity=quantity)
    coef, se = _jackknife_by_deletion(pred, p, widths=widths, quantity=quantity)
    np.testing.assert_allclose(fast[0], coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast[6], se, rtol=1e-10, atol=1e-12)
    assert np.isnan(fast[6][9]).all() and np.isfinite(fast[6][5]).all()
    assert np.isfinite(fast[6]).mean() > 0.99


def test_wls_kernel_keeps_its_accuracy_where_terms_are_nearly_dependent():
    """Exponents 0.25 and 0.3 make nearly parallel columns: the normal equations would square their condition
    number, so those cells are solved by QR; the result still equals statsmodels (which uses a pseudo-inverse)."""
    from ensemble_stats._np_fit import WEAK_PIVOT, _solve_normal

    rng = np.random.default_rng(4)
    widths = np.array([64, 128, 256, 512, 1024, 2048])
    cells = 50
    p = np.tile([0.0, 0.25, 0.3], (cells, 1))
    X = widths[None, :, None] ** -p[:, None, :]
    w = rng.uniform(0.5, 20.0, size=(cells, widths.size))
    y = (X * rng.normal(size=(cells, 1, 3))).sum(-1) + 1e-3 * rng.normal(size=(cells, widths.size)) / np.sqrt(w)
    used = np.ones((cells, 3), dtype=bool)
    basis = widths[None, None, :] ** -p[:, :, None]
    weak = np.isnan(_solve_normal(w, y, basis, used, (cells,), want_inverse=False)[0]).any(-1)
    assert weak.all(), f"pivots should fall below {WEAK_PIVOT} for every cell"
    coef, se, _, chi2_dof, _, status = wls_kernel(y, w, p, widths=widths)
    assert (status == 0).all()
    for i in range(cells):
        fit = sm.WLS(y[i], X[i], weights=w[i]).fit()
        np.testing.assert_allclose(coef[i], fit.params, rtol=1e-6)
        np.testing.assert_allclose(se[i], fit.bse, rtol=1e-6)
        np.testing.assert_allclose(chi2_dof[i], fit.scale, rtol=1e-6)


def test_jackknife_errors_of_a_gamma_with_fewer_terms_do_not_depend_on_its_neighbours():
    """gamma = 1 has one variance term where gamma = 3/4 has two (its row is NaN-padded): its jackknife errors are
    those of the gamma = 1 store alone, not NaN because the padding term counted as a failed replicate."""
    ds = synthetic_ensemble(gammas=[0.75, 1.0], widths=[64, 128, 256, 1024], n_seeds=8, seed=0)
    both = es.fit_expansion(ds, quantity="variance").sel(gamma=1.0).isel(term=0)
    alone = es.fit_expansion(ds.sel(gamma=[1.0]), quantity="variance").sel(gamma=1.0).isel(term=0)
    assert np.isfinite(both.stderr).all()
    np.testing.assert_allclose(both.stderr, alone.stderr, rtol=1e-12)
    np.testing.assert_allclose(both.coef_lo, alone.coef_lo, rtol=1e-12)
    table = es.expansion_table(es.fit_expansion(ds, quantity="variance"))
    assert "nan" not in table and "8 of 8" in table


@pytest.mark.parametrize(
    ("quantity", "p"),
    [
        ("mean", [0.0, 0.25]),
        ("mean", [0.0, 0.5, 1.0]),  # three terms: the general Cholesky
        ("mean", [0.0, 0.5, np.nan]),  # a term this gamma does not use
        ("mean", [0.0, 1e-5]),  # nearly dependent columns: every replicate goes to the QR path
        ("variance", [0.5, 1.0]),
        ("variance", [1.0, np.nan]),
    ],
)
@pytest.mark.parametrize("scaled", [True, False])
def test_compiled_jackknife_equals_the_numpy_reference(quantity, p, scaled):
    """Issue 35: the compiled kernel (one pass per cell) gives the numpy path's numbers to 1e-10 in float64, and
    the same NaN wherever a cell or a replicate cannot be fitted."""
    from ensemble_stats._np_fit import _jackknife_block, _jackknife_block_numpy

    rng = np.random.default_rng(11)
    widths = np.array([64, 128, 256, 512, 1024, 2048])
    N = widths.astype(float)[None, :, None]
    x = 1 + 0.3 * N**-0.25 + N**-0.25 * rng.standard_t(4, size=(2000, widths.size, 16))
    x[rng.random(x.shape) < 0.05] = np.nan  # scattered missing values
    x[:5] = np.nan  # cells with nothing
    x[5:10, :4] = np.nan  # cells with two widths
    x[10:20, :, 3] = np.nan  # a seed absent everywhere
    x[20:25, :, 2:] = np.nan  # two seeds: no variance
    p = np.array(p)
    fast = _jackknife_block(x, p, widths=widths, quantity=quantity, scaled=scaled)
    ref = _jackknife_block_numpy(x, p, widths=widths, quantity=quantity, scaled=scaled)
    assert len(fast) == len(ref) == 11
    for got, want in zip(fast, ref, strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    per_cell = np.where(np.arange(2000)[:, None] % 2 == 0, p, np.array([0.0, 0.75, 1.5][: p.size]))
    fast = _jackknife_block(x, per_cell, widths=widths, quantity=quantity, scaled=scaled)
    ref = _jackknife_block_numpy(x, per_cell, widths=widths, quantity=quantity, scaled=scaled)
    for got, want in zip(fast, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_store_chunked_along_the_grid_is_fitted_without_a_pass_over_the_grid(tmp_path):
    """Issue 35: "a seed counts only if finite over the grid" as a reduction over the grid made Dask keep every
    chunk it read until the fit read it again (18 GB of RSS for an 8 GB store). A store's records are finite
    everywhere or masked whole, so no such pass is built for it, and the result is the in-memory one."""
    from .conftest import store_from_synthetic

    ds = synthetic_ensemble(gammas=[0.75], widths=[64, 128, 256, 512], n_seeds=8, n_points=12, diverged_runs=2, seed=9)
    opened = es.open_ensemble(store_from_synthetic(tmp_path / "s.zarr", ds).path).chunk({"point": 3})
    lazy = es.fit_expansion(opened, quantity="variance")

    def names(a):
        return {str(k[0] if isinstance(k, tuple) else k).split("-")[0] for k in a.data.__dask_graph__()}

    added = names(lazy.coef) - names(opened.prediction)  # what the fit builds on top of the opened store
    assert "jackknife_fit_kernel" in added and not added & {"all", "isfinite", "where"}, added
    xr.testing.assert_allclose(lazy.compute(), es.fit_expansion(opened.load(), quantity="variance"))
