"""ensemble_stats.theory against Monte-Carlo simulation and trained ensembles, never against its own formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import EnsembleStore, TrainConfig, init_params, teacher, train_block
from collectors._models import Architecture, forward
from ensemble_stats import errors, theory


def test_nu_and_exponent_sets():
    assert [theory.nu(g) for g in (0.5, 0.6, 0.75, 0.8, 5 / 6, 0.85, 0.9, 0.95)] == [1, 1, 1, 2, 2, 3, 4, 9]
    # a skewed readout law keeps every order below nu; a symmetric one only the even ones (docs/theory.md §1.4)
    np.testing.assert_allclose(theory.mean_exponents(0.9, readout="skewed"), [0, 0.1, 0.2, 0.3], atol=1e-12)
    np.testing.assert_allclose(theory.mean_exponents(0.9), [0, 0.2], atol=1e-12)
    np.testing.assert_allclose(theory.mean_exponents(0.8), [0])
    np.testing.assert_allclose(theory.variance_exponents(0.75, readout="skewed"), [0.5, 0.75])
    np.testing.assert_allclose(theory.variance_exponents(0.75), [0.5, 1.0])
    assert theory.variance_rate(0.75) == -0.5
    assert theory.bias_rate(0.75) == -0.5 and theory.bias_rate(0.75, readout="skewed") == -0.25
    with pytest.raises(errors.ValidationError, match="readout='normal'"):
        theory.bias_rate(0.75, readout="normal")
    with pytest.raises(errors.ValidationError, match="singular"):
        theory.nu(1.0)
    with pytest.raises(errors.ValidationError, match="outside"):
        theory.nu(0.3)


@pytest.mark.parametrize("readout", ["symmetric", "skewed"])
def test_the_order_switch_is_where_the_ratio_exponent_changes_sign(readout):
    g0 = theory.bias_variance_order_switch(readout)
    assert g0 == pytest.approx(5 / 6 if readout == "symmetric" else 3 / 4)
    for g in np.linspace(0.5, 1.0, 21):
        rate = theory.ratio_rate(g, readout)
        assert rate == pytest.approx(2 * theory.bias_rate(g, readout) - theory.variance_rate(g))
        assert np.sign(round(rate, 12)) == np.sign(round(g - g0, 12)), (g, rate)


def test_the_readout_law_comes_from_the_argument_the_dataset_or_the_store_config():
    import json

    from ensemble_stats import schema
    from ensemble_stats.testing import synthetic_ensemble

    ds = synthetic_ensemble(gammas=[0.75], widths=[64, 128], n_seeds=2, n_points=1, times=[0.0])
    assert theory.readout_law(ds) == ("symmetric", "the dataset's readout_law attribute")
    assert theory.readout_law(ds, "skewed") == ("skewed", "given")
    bare = ds.copy()
    bare.attrs = {k: v for k, v in ds.attrs.items() if k != "readout_law"}
    law, source = theory.readout_law(bare)
    assert law == "symmetric" and source.startswith("assumed")
    for init, want in (("theory", "symmetric"), ("skewed", "skewed"), ("paper", "skewed")):
        bare.attrs[schema.ATTR_CONFIG] = json.dumps({"model": {"init": init}})
        assert theory.readout_law(bare) == (want, f"the store's config (init = {init!r})")


def test_skewed_init_is_a_mean_zero_unit_variance_skewed_law_on_the_theory_inits_draws():
    arch = Architecture(3, (20000,), (0.75,), 1, "tanh", False)
    sk, th = (init_params(arch, law, 11, torch.float64) for law in ("skewed", "theory"))
    assert torch.equal(sk["W1"], th["W1"])  # common random numbers with the symmetric law
    c, z = sk["C"].flatten().numpy(), th["C"].flatten().numpy()
    n = c.size
    # Exp(1) - 1: mean 0, variance 1, third moment 2, fourth central moment 9 (sampling errors from those)
    assert abs(c.mean()) < 4 / math.sqrt(n)
    assert abs(c.var() - 1) < 4 * math.sqrt(8 / n)
    assert abs((c**3).mean() - 2) < 4 * math.sqrt(((c**6).mean() - 4) / n)
    assert (np.diff(c[np.argsort(z)]) >= 0).all()  # a monotone map of the theory law's normal draw
    with pytest.raises(errors.ValidationError, match="antithetic pairs need a readout law symmetric"):
        TrainConfig(init="skewed", antithetic=True)


def _mc_network_cov(x, act, depth, sw, sb, rng, width=256, nets=2000):
    """Output covariance over random finite networks (standard parametrization), the definition of the NNGP."""
    f, _ = theory.activation(act)
    d = x.shape[1]
    outs = []
    for _ in range(nets):
        h, fan = x.T, d
        for _ in range(depth):
            W = rng.normal(size=(width, fan)) * sw / math.sqrt(fan)
            h = f(W @ h + sb * rng.normal(size=(width, 1)))
            fan = width
        outs.append((rng.normal(size=(1, width)) * sw / math.sqrt(width)) @ h + sb * rng.normal())
    outs = np.concatenate(outs)
    return outs.T @ outs / len(outs)


@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_nngp_against_random_finite_networks(act, depth):
    rng = np.random.default_rng(depth * 10 + len(act))
    x = rng.normal(size=(3, 4))
    sw, sb = 1.5, 0.1
    K = theory.nngp_kernel(x, activation=act, depth=depth, sigma_w=sw, sigma_b=sb)
    emp = _mc_network_cov(x, act, depth, sw, sb, rng)
    # MC standard error of a second moment over 600 nets: sqrt((K_ii K_jj + K_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(K), np.diag(K)) + K**2) / 2000)
    # plus 3% of the scale for the O(1/width) bias of finite inner layers at depth >= 2
    assert (np.abs(emp - K) < 4.5 * se + 0.03 * np.abs(K).max() * (depth > 1)).all(), (emp, K)


@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
def test_ntk_against_the_empirical_tangent_kernel_of_a_wide_net(act):
    """Theta(x, x') = sum_p dg/dp(x) dg/dp(x') for a wide net in NTK parametrization, depth 1."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(3, 4)))
    n, sw, sb = 200_000, 1.3, 0.2
    f, df = theory.activation(act)
    W = torch.tensor(rng.normal(size=(n, 4)))
    b = torch.tensor(rng.normal(size=n))
    z = (sw * x @ W.T / 2 + sb * b).numpy()  # d = 4: sigma_w x.w / sqrt(d)
    c = rng.normal(size=n)
    # gradients: wrt output weights -> sw f(z)/sqrt(n); output bias -> sb; wrt W, b via f'(z)
    phi = sw * f(z) / math.sqrt(n)
    dphi = sw * c * df(z) / math.sqrt(n)
    xx = sw**2 * x.numpy() @ x.numpy().T / 4 + sb**2
    emp = phi @ phi.T + sb**2 + (dphi @ dphi.T) * xx
    K = theory.ntk_kernel(x.numpy(), activation=act, depth=1, sigma_w=sw, sigma_b=sb)
    np.testing.assert_allclose(emp, K, rtol=0.03, atol=0.01)


def test_width_corrected_recursion_matches_a_finite_one_over_n_gamma_net():
    """Deep 1/N^gamma net, gamma_1 = 0.75: inner pre-activation variance shrinks like N^(1-2 gamma)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2))
    N, g = 64, 0.75
    arch = Architecture(2, (N, 32), (g, 0.5), 1, "tanh")
    outs = []
    for s in range(3000):
        p = {k: v.double() for k, v in init_params(arch, "theory", s).items()}
        with torch.no_grad():
            outs.append(forward(p, arch, torch.tensor(x)).numpy()[:, 0])
    outs = np.array(outs)
    emp = outs.T @ outs / len(outs)
    # output = 32^-1/2 C tanh(N^-g W2 tanh(W1 x)): NNGP with sigma_w^2 -> N^(1-2g) on the inner layer, C ~ N(0,1)
    K = theory.nngp_kernel(x, activation="tanh", depth=2, widths=[N, 32], gammas=[g, 0.5])
    se = np.sqrt((np.outer(np.diag(K), np.diag(K)) + K**2) / len(outs))
    assert (np.abs(emp - K) < 4.5 * se + 0.05 * np.abs(K).max()).all(), (emp, K)


@pytest.mark.parametrize("law", ["theory", "paper"])
def test_init_moments_against_the_trainers_init_code(law):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 3))
    width, gamma, S = 32, 0.6, 5000
    arch = Architecture(3, (width,), (gamma,), 1, "sigmoid", law == "paper")
    outs = []
    for s in range(S):
        p = {k: v.double() for k, v in init_params(arch, law, s).items()}
        with torch.no_grad():
            outs.append(forward(p, arch, torch.tensor(x)).numpy()[:, 0])
    outs = np.array(outs)
    mean, cov = theory.init_moments(x, width=width, gamma=gamma, activation="sigmoid", law=law)
    se_mean = np.sqrt(np.diag(cov) / S)
    assert (np.abs(outs.mean(0) - mean) < 4 * se_mean).all(), (outs.mean(0), mean)
    assert (np.abs(np.cov(outs, rowvar=False) / cov - 1) < 0.15).all()


def test_kernel_limit_matches_a_wide_trained_network(tmp_path):
    """h_t against N = 2048, gamma = 3/4, full-batch GD to t = 1 (the N >= 8192 run is in the slow suite)."""
    _wide_check(tmp_path, width=2048, seeds=16)


@pytest.mark.slow
def test_kernel_limit_matches_an_8192_wide_trained_network(tmp_path):
    _wide_check(tmp_path, width=8192, seeds=16)


def _wide_check(tmp_path, width, seeds):
    data = teacher()
    times = [0.0, 0.5, 1.0]
    st = EnsembleStore.create(
        tmp_path / "w.zarr",
        data.grid,
        gammas=[0.75],
        widths=[width],
        seeds=list(range(seeds)),
        times=times,
        seed_chunk=seeds,
    )
    train_block(st, data, width=width, gammas=[0.75], seeds=list(range(seeds)), config=TrainConfig(dtype="float64"))
    ds = es.open_ensemble(st.path).isel(gamma=0, width=0, output=0)
    lim = theory.kernel_limit(data.x_train, data.y_train, data.grid.x, times)
    m = ds.prediction.mean("seed").values
    se = ds.prediction.std("seed").values / math.sqrt(seeds)
    # the seed mean differs from h_t by sampling error plus the N^(gamma-1) bias: 4 SE + 0.03 (docs/theory.md §1.6
    # measured 0.020 at N = 512 and 0.006 at N = 2048)
    h = lim.h.isel(output=0).values
    assert (np.abs(m - h) < 4 * se + 0.03).all(), (m, h, se)
    np.testing.assert_allclose(lim.h.sel(time=0.0), 0.0, atol=1e-12)


def test_variance_collapse_ratio_on_a_simulated_ensemble(tmp_path):
    """N^(2g-1) Var / Var K_t in 0.8-1.25 at t <= 1 for g in {0.625, 0.75, 0.875} (docs/theory.md §1.6, 9.3)."""
    data = teacher()
    gammas, widths, seeds = [0.625, 0.75, 0.875], [256, 512], list(range(96))
    st = EnsembleStore.create(
        tmp_path / "c.zarr", data.grid, gammas=gammas, widths=widths, seeds=seeds, times=[0.0, 0.5, 1.0], seed_chunk=96
    )
    for w in widths:
        train_block(st, data, width=w, gammas=gammas, seeds=seeds, config=TrainConfig())
    r = es.compare_to_theory(es.open_ensemble(st.path), data.x_train, data.y_train).compute()
    assert ((r.ratio > 0.8) & (r.ratio < 1.25)).all(), r.ratio.to_pandas()
    assert (r.ratio_lo < r.ratio).all() and (r.ratio < r.ratio_hi).all()


def test_condition_number_falls_with_depth_for_the_normalized_relu_only():
    x = np.random.default_rng(11).normal(size=(20, 8))
    cn = [theory.kernel_condition_number(x, activation="normalized_relu", depth=L) for L in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in itertools.pairwise(cn)), cn
    assert cn[-1] < 1.5
    relu = [theory.kernel_condition_number(x, activation="relu", depth=L) for L in (1, 16)]
    assert relu[1] > relu[0], relu


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_condition_numbers_at_several_depths_come_from_one_recursion_and_equal_single_depths(act):
    x = np.random.default_rng(5).normal(size=(12, 6))
    depths = [0, 1, 3, 5]
    many = theory.kernel_condition_number(x, activation=act, depth=depths)
    one = [theory.kernel_condition_number(x, activation=act, depth=d) for d in depths]
    np.testing.assert_allclose(many, one, rtol=1e-12)
    assert isinstance(one[0], float) and many.shape == (4,)
    # the symmetric Gram matrix is evaluated on one triangle: exactly symmetric, and equal to the full (x, x2 = x)
    # evaluation to quadrature accuracy (whose (i, j) and (j, i) quadratures differ by ~1e-7)
    tri = theory.nngp_kernel(x, activation=act, depth=3)
    np.testing.assert_array_equal(tri, tri.T)
    np.testing.assert_allclose(tri, theory.nngp_kernel(x, x, activation=act, depth=3), rtol=1e-5, atol=1e-9)
    with pytest.raises(errors.ValidationError, match=r"depth = \[-1\]: expected a non-negative"):
        theory.kernel_condition_number(x, depth=[-1])


def test_quadrature_against_monte_carlo_for_a_user_activation():
    rng = np.random.default_rng(2)
    u = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=2_000_000)
    f = lambda z: np.sin(z) + z**2  # noqa: E731
    want = (f(u[:, 0]) * f(u[:, 1])).mean()
    got = theory.gaussian_expectation(f, f, 1.0, 0.3, 0.5)
    assert abs(got - want) < 5e-3


def test_kernel_limit_with_two_outputs_matches_a_trained_ensemble(tmp_path):
    """Two regression outputs: the limit is A (x) I with 1 / (M O) in the flow (the loss averages over outputs)."""
    from collectors import DataSet, EvalGrid

    base = teacher()
    th_train = np.arctan2(base.x_train[:, 1], base.x_train[:, 0])
    th_grid = np.arctan2(base.grid.x[:, 1], base.grid.x[:, 0])
    two = lambda th: np.stack([np.sin(3 * th) + 0.5 * np.cos(th), 2 * np.cos(2 * th)], 1)  # noqa: E731
    data = DataSet("two-output circle", base.x_train, two(th_train), EvalGrid(base.grid.x, two(th_grid)))
    times, seeds, width = [0.0, 0.5, 1.0], 32, 2048
    st = EnsembleStore.create(
        tmp_path / "two.zarr", data.grid, gammas=[0.75], widths=[width], seeds=list(range(seeds)), times=times,
        seed_chunk=seeds, train=(data.x_train, data.y_train),
    )  # fmt: skip
    train_block(st, data, width=width, gammas=[0.75], seeds=list(range(seeds)), config=TrainConfig(dtype="float64"))
    ds = es.open_ensemble(st.path).isel(gamma=0, width=0)
    lim = theory.kernel_limit(data.x_train, data.y_train, data.grid.x, times)
    assert lim.h.dims == ("time", "point", "output") and lim.h.sizes["output"] == 2
    m = ds.prediction.mean("seed").values
    se = ds.prediction.std("seed").values / math.sqrt(seeds)
    assert (np.abs(m - lim.h.values) < 4 * se + 0.03).all(), (m, lim.h.values, se)
    # each output alone, as if it were the only one, runs on a clock O = 2 times too fast: measurably wrong
    alone = np.stack(
        [theory.kernel_limit(data.x_train, data.y_train[:, o], data.grid.x, times).h.values[..., 0] for o in (0, 1)], -1
    )
    assert np.abs(m - alone)[-1].max() > 3 * np.abs(m - lim.h.values)[-1].max()
    r = es.compare_to_theory(es.open_ensemble(st.path), activation="tanh").compute()  # pooled over both outputs
    assert ((r.ratio > 0.6) & (r.ratio < 1.6)).all(), r.ratio.values
