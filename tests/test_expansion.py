"""The expansion beyond leading order: Gaussianity of the fluctuations, the bias^2 / variance rate, pair-aware
expansion fits and their information criterion, the sweep's training budget."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr

import ensemble_stats as es
from collectors import SweepSpec
from ensemble_stats import errors, schema

from . import _configs

DIMS = (schema.GAMMA, schema.WIDTH, "replicate", schema.SEED, schema.TIME, schema.POINT, schema.OUTPUT)


def _paired(rng, *, gammas, widths, pairs, reps, n_points=3, mean=None, law="gaussian", scale=1.0, var_k=None):
    """Antithetic pairs u = m + s a, v = m - s a with s = N^(1/2 - gamma) sqrt(Var K) and a drawn from ``law``
    (unit variance, correlated over the points), the second member's odd part negated as in a mirrored net."""
    var_k = np.linspace(0.5, 1.5, n_points) if var_k is None else var_k
    G, W = len(gammas), len(widths)
    L = np.linalg.cholesky(0.5 + 0.5 * np.eye(n_points))
    shape = (G, W, reps, pairs, n_points)
    if law == "gaussian":
        a = rng.standard_normal(shape)
    elif law == "skewed":  # centred exponential: skewness 2
        a = rng.exponential(size=shape) - 1.0
    a = scale * a @ L.T
    N = np.asarray(widths, float)[None, :, None, None, None]
    g = np.asarray(gammas, float)[:, None, None, None, None]
    s = N ** (0.5 - g) * np.sqrt(var_k)
    m = np.zeros(shape) if mean is None else mean(g, N) * np.ones(shape)
    u, v = m + s * a, m - s * a
    pred = np.stack([u, v], axis=4).reshape(G, W, reps, 2 * pairs, n_points)[:, :, :, :, None, :, None]
    seeds = np.arange(2 * pairs)
    ds = xr.Dataset(
        {
            schema.PREDICTION: (DIMS, pred),
            schema.TARGET: ((schema.POINT, schema.OUTPUT), np.zeros((n_points, 1))),
        },
        coords={
            schema.GAMMA: list(gammas), schema.WIDTH: list(widths), schema.SEED: seeds, schema.TIME: [1.0],
            schema.PAIR: (schema.SEED, np.repeat(seeds[0::2], 2)),
        },
    )  # fmt: skip
    limit = xr.Dataset(
        {"var_k": ((schema.TIME, schema.POINT), np.asarray(var_k)[None, :])}, coords={schema.TIME: [1.0]}
    )
    return ds, limit


def test_gaussianity_equals_a_direct_ks_test_and_is_calibrated():
    rng = np.random.default_rng(11)
    ds, limit = _paired(rng, gammas=[0.75, 0.875], widths=[64, 512], pairs=100, reps=150)
    fg = es.fluctuation_gaussianity(ds, limit=limit)
    assert int(fg.n_samples.max()) == int(fg.n_samples.min()) == 100  # one member per pair
    # one cell against scipy on z computed by hand
    sel = {schema.GAMMA: 0.875, schema.WIDTH: 512, "replicate": 3, schema.TIME: 1.0, schema.POINT: 2}
    p = ds[schema.PREDICTION].sel(sel).squeeze(schema.OUTPUT)
    z = 512**0.375 * (p.values[0::2] - p.values.mean()) / np.sqrt(float(limit.var_k.isel(time=0, point=2)))
    ref = scipy.stats.kstest(z, "norm")
    got = fg.sel(sel).squeeze(schema.OUTPUT)
    np.testing.assert_allclose([float(got.ks), float(got.pvalue)], [ref.statistic, ref.pvalue], rtol=1e-10)
    # Gaussian with the theory's variance: the per-cell test rejects at its level (binomial band over 1800 tests)
    rejected = float((fg.pvalue < 0.05).mean())
    assert 0.03 < rejected < 0.07, rejected
    assert abs(float(fg.sd.mean()) - 1.0) < 0.02
    assert ((fg.sd_lo < 1) & (1 < fg.sd_hi)).mean() > 0.9
    # the Bonferroni-combined p-value over the grid keeps (at most) its level despite the correlated points
    assert float((fg.pvalue_min < 0.05).mean()) < 0.07


@pytest.mark.parametrize(("law", "scale"), [("skewed", 1.0), ("gaussian", 1.5)])
def test_gaussianity_rejects_a_wrong_shape_or_scale(law, scale):
    rng = np.random.default_rng(5)
    ds, limit = _paired(rng, gammas=[0.75], widths=[256], pairs=200, reps=40, law=law, scale=scale)
    fg = es.fluctuation_gaussianity(ds, limit=limit)
    assert float((fg.pvalue_min < 0.05).mean()) > 0.9


def test_gaussianity_without_pairs_and_bad_input():
    rng = np.random.default_rng(2)
    ds, limit = _paired(rng, gammas=[0.75], widths=[128], pairs=50, reps=2)
    fg = es.fluctuation_gaussianity(ds, limit=limit, pairs=False)
    assert int(fg.n_samples.max()) == 100 and fg.z.sizes["sample"] == 100
    with pytest.raises(errors.ValidationError, match="var_k"):
        es.fluctuation_gaussianity(ds, limit=limit.rename({"var_k": "v"}))
    with pytest.raises(errors.ValidationError, match="not grid dims"):
        es.fluctuation_gaussianity(ds, limit=limit, dims=("seed",))


def test_fit_expansion_on_pairs_uses_the_pair_means():
    rng = np.random.default_rng(4)
    widths = [64, 128, 256, 512, 1024]
    truth = lambda g, N: 0.3 + 0.8 * N ** (2 * g - 2)  # noqa: E731  h + Q N^(2 gamma - 2), the symmetric law's bias
    ds, _ = _paired(rng, gammas=[0.75], widths=widths, pairs=32, reps=1, mean=truth)
    even = 0.02 * rng.standard_normal((*ds[schema.PREDICTION].shape[:4], 1, 1, 1))  # shared by a pair
    ds[schema.PREDICTION] = ds[schema.PREDICTION] + np.repeat(even[:, :, :, 0::2], 2, axis=3)
    fit = es.fit_expansion(ds, terms="leading")
    pm = ds[schema.PREDICTION].values.reshape(1, 5, 1, 32, 2, 1, 3, 1).mean(4)
    by_hand = xr.Dataset(
        {schema.PREDICTION: (DIMS, pm)},
        coords={schema.GAMMA: [0.75], schema.WIDTH: widths, schema.SEED: np.arange(32), schema.TIME: [1.0]},
    )
    direct = es.fit_expansion(by_hand, terms="leading")
    np.testing.assert_allclose(fit.coef.values, direct.coef.values, rtol=1e-12)
    np.testing.assert_allclose(fit.stderr.values, direct.stderr.values, rtol=1e-12)
    naive = es.fit_expansion(ds, terms="leading", pairs=False)
    assert float((fit.stderr / naive.stderr).max()) < 0.3  # the pairs cancel the odd fluctuation
    assert float(((fit.coef_lo.isel(term=0) <= 0.3) & (0.3 <= fit.coef_hi.isel(term=0))).mean()) >= 2 / 3


def test_aic_is_the_weighted_chi2_and_selects_the_true_exponent():
    import statsmodels.api as sm

    rng = np.random.default_rng(8)
    widths = [64, 128, 256, 512, 1024, 2048]
    N = np.array(widths, float)
    # the truth follows the symmetric law's exponent 2 - 2 gamma = 0.5 at gamma = 0.75 ...
    ds, _ = _paired(rng, gammas=[0.75], widths=widths, pairs=64, reps=60, mean=lambda g, N: 1.0 * N ** (2 * g - 2))
    ds[schema.PREDICTION] = ds[schema.PREDICTION] + 0.05 * rng.standard_normal(ds[schema.PREDICTION].shape)
    lead, free = es.fit_expansion(ds, terms="leading"), es.fit_expansion(ds, terms="free")
    # chi2 is statsmodels' weighted residual sum of squares with the fit's weights S / s^2 (pair means here)
    cell = {schema.GAMMA: 0.75, "replicate": 0, schema.TIME: 1.0, schema.POINT: 1, schema.OUTPUT: 0}
    pm = ds[schema.PREDICTION].sel(cell).values.reshape(6, 64, 2).mean(-1)
    w = 64 / pm.var(axis=1, ddof=1)
    X = np.stack([np.ones(6), N**-0.5], 1)
    ols = sm.WLS(pm.mean(1), X, weights=w).fit()
    np.testing.assert_allclose(float(lead.chi2.sel(cell)), ols.ssr, rtol=1e-9)
    np.testing.assert_allclose(float(lead.aic.sel(cell)), ols.ssr + 4, rtol=1e-9)
    assert float((free.aic - lead.aic > 0).mean()) > 0.6  # the nested, true model wins most cells
    # ... and a mean with exponent 0.9 is not described by 2 - 2 gamma: the free exponent wins
    ds2, _ = _paired(rng, gammas=[0.75], widths=widths, pairs=64, reps=60, mean=lambda g, N: 5.0 * N**-0.9)
    ds2[schema.PREDICTION] = ds2[schema.PREDICTION] + 0.05 * rng.standard_normal(ds2[schema.PREDICTION].shape)
    lead2, free2 = es.fit_expansion(ds2, terms="leading"), es.fit_expansion(ds2, terms="free")
    assert float((free2.aic - lead2.aic < 0).mean()) > 0.95
    assert abs(float(free2.exponent.isel(term=-1).median()) - 0.9) < 0.1


@pytest.mark.parametrize("readout", ["symmetric", "skewed"])
def test_bias2_over_variance_rate_covers_the_readout_laws_exponent(readout):
    """Independent seeds with mean h + Q N^(bias rate) and variance N^(1 - 2 gamma): the ratio's exponent is
    6 gamma - 5 (symmetric law) or 4 gamma - 3 (skewed), negative below the switch and positive above, covered in
    most of 100 replicates."""
    gammas = (0.625, 0.875)
    ds, truth = es.testing.synthetic_ensemble(
        gammas=gammas, widths=(64, 128, 256, 512, 1024), n_seeds=64, times=(1.0,), n_points=4,
        mean_terms=[0.0], replicates=100, seed=3, return_truth=True, readout=readout,
    )  # fmt: skip
    g = ds[schema.GAMMA]
    step = 2 if readout == "symmetric" else 1
    bias = 2.0 * ds[schema.WIDTH].astype(float) ** (step * (g - 1))  # added to every seed: a known bias against h
    ds[schema.PREDICTION] = ds[schema.PREDICTION] + bias
    r = es.fit_rate(ds, quantity="ratio", reference=truth["mean_coef"].isel(term=0, drop=True))
    np.testing.assert_allclose(r.theory.values, [(2 * step + 2) * x - (2 * step + 1) for x in gammas])
    hits = ((r.slope_lo <= r.theory) & (r.theory <= r.slope_hi)).mean("replicate")
    assert bool(((hits > 0.85) & (hits < 1.0)).all()), hits.values
    assert bool((np.sign(r.slope.median("replicate")) == np.sign(r.theory)).all())
    with pytest.raises(errors.FitError, match="'ratio'"):
        es.fit_rate(ds, quantity="bias2")


def test_sweep_budget_counts_steps_and_flop():
    spec = SweepSpec.parse(_configs.sweep(sweep={"widths": [16, 64]}, time={"horizon": 2.0, "n_times": 3}))
    b = spec.budget(spec.load_data())
    assert b["steps"] == {16: 32, 64: 128} and b["scaled_time"] == {16: 2.0, 64: 2.0}
    assert b["runs_per_width"] == 8
    # 6 x weights (2 N + N) x 8 examples x steps x 8 runs
    assert b["flop"] == pytest.approx(6 * 8 * 8 * (3 * 16 * 32 + 3 * 64 * 128))


def test_kernel_eigenvalues_are_those_of_the_flattened_ntk(tmp_path):
    from collectors import EnsembleStore, NTKCollector, TrainConfig, teacher, train_block

    data = teacher()
    path = tmp_path / "n.zarr"
    st = EnsembleStore.create(
        path, data.grid, gammas=[0.5], widths=[16], seeds=[0, 1], times=[0, 0.5, 1.0], ntk_points="all",
        seed_chunk=2, dtype="float64",
    )  # fmt: skip
    cfg = TrainConfig(dtype="float64")
    train_block(st, data, width=16, gammas=[0.5], seeds=[0, 1], config=cfg, collectors=[NTKCollector(every=2)])
    ds = es.open_ensemble(path)
    lam = es.kernel_eigenvalues(ds, k=3).compute()
    assert lam.sizes["eigen"] == 3
    theta = ds.ntk.isel(gamma=0, width=0, seed=1, time=0).values  # (P, P2, O, O2)
    P, O = theta.shape[0], theta.shape[2]  # noqa: E741
    direct = np.linalg.eigvalsh(theta.transpose(0, 2, 1, 3).reshape(P * O, P * O))[::-1][:3]
    np.testing.assert_allclose(lam.isel(gamma=0, width=0, seed=1, time=0).values, direct, rtol=1e-12)
    step = lam.diff("eigen")
    assert bool(((step <= 0) | step.isnull()).all()) and bool((step < 0).any())  # largest first
    assert bool(lam.isel(time=1).isnull().all()) and bool(lam.isel(time=2).notnull().all())  # every 2nd record
    with pytest.raises(errors.ValidationError, match="k="):
        es.kernel_eigenvalues(ds, k=0)
    with pytest.raises(errors.ValidationError, match="no 'ntk'"):
        es.kernel_eigenvalues(ds.drop_vars("ntk"))


def test_the_regime_of_a_run_follows_the_bounds_of_the_theory_and_its_behaviour_is_judged_against_it():
    from ensemble_stats._ntk import _regimes

    r0 = [0.5, 1.9, 2.0, 3.0, 3.0, 4.0, 9.0, 9.0, np.nan]
    reg = xr.Dataset(
        {
            "r_0": ("run", r0),
            "loss_spike": ("run", [1.0, 1.5, 3.0, 3.0, 3.0, 50.0, 50.0, 2.0, 1.0]),
            "diverged": ("run", [False, False, False, False, False, True, True, False, False]),
            "r_final": ("run", [0.5, 1.9, 1.0, 1.5, 2.5, np.nan, np.nan, 1.0, np.nan]),
        }
    )
    code, behaved = _regimes(reg, spike=1.01)
    assert code.values.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, -1]
    # lazy without a spike; lazy that spiked; catapults that settle (twice) or end unstable; divergent (twice)
    # and one that survived; no r_0: nothing predicted
    assert behaved.values.tolist() == [True, False, True, True, False, True, True, False, False]
    bounds = [(lo, hi) for _, lo, hi in es.theory.CATAPULT_REGIMES]
    assert bounds == [(0.0, 2.0), (2.0, 4.0), (4.0, np.inf)]  # docs/theory.md §13
    assert code.attrs["flag_meanings"] == "lazy catapult divergent"


def test_critical_alpha_and_the_catapult_regimes(tmp_path):
    """At gamma = 1/2 the measured r_0 = eta lambda_0 / (M O) is 2 alpha / alpha_c up to finite-N noise; below
    alpha_c the loss never rises, at 1.5 alpha_c it spikes and lambda_max falls until the step is stable again."""
    from collectors import EnsembleStore, NTKCollector, TrainConfig, teacher, train_block

    data = teacher(grid="train")
    a_c = es.theory.critical_alpha(data.x_train, 256)
    for c in (0.5, 1.5):
        cfg = TrainConfig(dtype="float64", alpha=c * a_c, blowup=1e6)
        sub = tmp_path / f"c{c}.zarr"
        st = EnsembleStore.create(
            sub, data.grid, gammas=[0.5], widths=[256], seeds=[0, 1, 2], times=list(range(31)), time_units="step",
            ntk_points="all", seed_chunk=3, dtype="float64", train=(data.x_train, data.y_train),
            model=cfg.architecture(2, 1, 256, 0.5).describe() | cfg.describe(),
        )  # fmt: skip
        train_block(st, data, width=256, gammas=[0.5], seeds=[0, 1, 2], config=cfg, collectors=[NTKCollector()])
        reg = es.learning_rate_regimes(es.open_ensemble(sub))
        assert all(reg[k].dims == reg.diverged.dims for k in ("r_0", "r_final", "loss_spike", "lambda_0"))
        reg = reg.squeeze()
        np.testing.assert_allclose(reg.r_0.values, 2 * c, rtol=0.15)
        assert not bool(reg.diverged.any())
        if c < 1:
            assert float(reg.loss_spike.max()) <= 1.0 + 1e-12
        else:
            assert float(reg.loss_spike.min()) > 2 and bool((reg.r_final < 2).all())
        assert (reg.regime == (0 if c < 1 else 1)).all() and bool(reg.as_predicted.all())
    with pytest.raises(errors.ValidationError, match="learning_rate_regimes"):
        es.learning_rate_regimes(es.open_ensemble(sub).drop_vars("x_train"))
