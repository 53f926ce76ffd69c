"""ScaledMLP, init laws and learning-rate rules against the theory (docs/theory.md §1, 2, 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from collectors import Architecture, ScaledMLP, init_params, learning_rates
from collectors._models import forward
from ensemble_stats import errors


def _ensemble_outputs(law, d, width, gamma, x, seeds, activation, bias):
    arch = Architecture(d, (width,), (gamma,), 1, activation, bias)
    params = [init_params(arch, law, s, torch.float64) for s in seeds]
    block = {k: torch.stack([p[k] for p in params]) for k in arch.shapes()}
    with torch.no_grad():
        return forward(block, arch, torch.tensor(x, dtype=torch.float64)).numpy()[:, :, 0]  # (S, points)


def _gauss_expect(f, sd, n=200):
    z, wts = np.polynomial.hermite_e.hermegauss(n)
    return (wts * f(sd * z)).sum() / np.sqrt(2 * np.pi)


@pytest.mark.parametrize(("law", "gamma"), [("theory", 0.75), ("paper", 0.6), ("paper", 1.0)])
def test_exact_moments_at_initialisation(law, gamma):
    """Mean N^(1-g) E[C] E[s] and variance N^(1-2g) Var(C s) (+ output-bias variance), within MC error."""
    d, width, S = 3, 64, 6000
    x = np.array([[0.3, -0.2, 0.5], [1.0, 0.0, 0.0]])
    out = _ensemble_outputs(law, d, width, gamma, x, range(S), "sigmoid", law == "paper")
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for j, xj in enumerate(x):
        if law == "theory":  # W1 ~ N(0, 1/d): z ~ N(0, |x|^2 / d); C ~ N(0, 1); no biases
            sd = np.linalg.norm(xj) / math.sqrt(d)
            mean, var = 0.0, width ** (1 - 2 * gamma) * _gauss_expect(lambda z: sig(z) ** 2, sd)
        else:  # W ~ N(0,1), b ~ U(+-1/sqrt(d)), C ~ U(0,1), c0 ~ U(+-1/sqrt(N))

            def moment(k, xj=xj):
                zb, wb = np.polynomial.legendre.leggauss(64)
                bs = zb / math.sqrt(d)
                return sum(
                    w / 2 * _gauss_expect(lambda z, b=b: sig(z + b) ** k, np.linalg.norm(xj))
                    for w, b in zip(wb, bs, strict=True)
                )

            es1, es2 = moment(1), moment(2)
            mean = width ** (1 - gamma) * 0.5 * es1
            var = width ** (1 - 2 * gamma) * (es2 / 3 - (0.5 * es1) ** 2) + 1 / (3 * width)
        got = out[:, j]
        assert abs(got.mean() - mean) < 4 * math.sqrt(var / S), (j, got.mean(), mean)
        # (S-1) s^2 / var ~ chi2(S-1) for Gaussian-ish outputs; a 4-sigma band on the ratio
        ratio = got.var(ddof=1) / var
        assert abs(ratio - 1) < 4 * math.sqrt(2 / (S - 1)) * 1.5, (j, ratio)


def test_init_is_the_same_for_every_gamma_and_differs_across_seeds():
    a = ScaledMLP(4, 32, 0.5, seed=3)
    b = ScaledMLP(4, 32, 1.0, seed=3)
    c = ScaledMLP(4, 32, 0.5, seed=4)
    for k in a.params:
        torch.testing.assert_close(a.params[k], b.params[k], rtol=0, atol=0)
    assert not torch.equal(a.params["W1"], c.params["W1"])
    x = torch.randn(5, 4)
    torch.testing.assert_close(b(x), a(x) * 32**-0.5)  # only the output scale differs: N^-1 vs N^-1/2


def test_learning_rate_tables_of_the_paper_exactly():
    N1, N2, N3, g1, g2, g3 = 100, 200, 300, 0.6, 0.7, 0.9
    r3 = learning_rates(Architecture(5, (N1, N2, N3), (g1, g2, g3)))
    want3 = {
        "C": N3 ** -(2 - 2 * g3),
        "W3": N2 ** -(1 - 2 * g2) * N3 ** -(2 - 2 * g3),
        "W2": N1 ** -(1 - 2 * g1) * N2 ** -(1 - 2 * g2) * N3 ** -(3 - 2 * g3),
        "W1": N1 ** -(1 - 2 * g1) * N2 ** -(2 - 2 * g2) * N3 ** -(3 - 2 * g3),
    }
    r2 = learning_rates(Architecture(5, (N1, N2), (g1, g2)))
    want2 = {
        "C": N2 ** -(2 - 2 * g2),
        "W2": N1 ** -(1 - 2 * g1) * N2 ** -(2 - 2 * g2),
        "W1": N1 ** -(1 - 2 * g1) * N2 ** -(3 - 2 * g2),
    }
    for got, want in ((r3, want3), (r2, want2)):
        assert set(got) == set(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-12), k
    r1 = learning_rates(Architecture(5, (256,), (0.75,), bias=True), alpha=2.0)
    assert all(v == pytest.approx(2.0 * 256 ** (2 * 0.75 - 2)) for v in r1.values()) and set(r1) == {
        "W1",
        "b1",
        "C",
        "c0",
    }


def test_param_groups_drive_plain_sgd_with_the_theory_rates():
    m = ScaledMLP(3, (8, 16), (0.6, 0.8), bias=True)
    opt = torch.optim.SGD(m.param_groups(alpha=0.5))
    rates = learning_rates(m.arch, 0.5)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == rates


def test_activations_by_name_and_normalized_relu_is_centred_and_normalized():
    z = torch.randn(2_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    from collectors import ACTIVATIONS

    v = ACTIVATIONS["normalized_relu"](z)
    assert abs(float(v.mean())) < 5e-3 and abs(float((v**2).mean()) - 1) < 5e-3
    assert set(ACTIVATIONS) == {"tanh", "sigmoid", "relu", "erf", "normalized_relu"}
    m = ScaledMLP(2, 4, 0.5, activation=lambda t: t**3)
    assert m(torch.ones(1, 2)).shape == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"gammas": 0.4}, "outside"),
        ({"gammas": 1.5}, "outside"),
        ({"hidden": 0}, "positive integers"),
        ({"hidden": (8, 8), "gammas": (0.5,)}, "one gamma per hidden layer"),
        ({"activation": "swish"}, "not one of"),
    ],
)
def test_bad_architectures(kwargs, words):
    args = {"d_in": 2, "hidden": 8, "gammas": 0.75, **kwargs}
    with pytest.raises(errors.ValidationError, match=words):
        ScaledMLP(**args)


def test_bad_alpha_and_init_law():
    with pytest.raises(errors.ValidationError, match="alpha"):
        learning_rates(Architecture(2, (4,), (0.5,)), alpha=-1)
    with pytest.raises(errors.ValidationError, match="init law"):
        ScaledMLP(2, 4, 0.5, init="xavier")
    with pytest.raises(errors.ValidationError, match="init law returned"):
        ScaledMLP(2, 4, 0.5, init=lambda arch, gen, dtype: {"W1": torch.zeros(1)})


def test_output_weight_norm_is_the_measure_2_norm():
    m = ScaledMLP(2, 50, 1.0, seed=1)
    assert m.output_weight_norm() == pytest.approx(float((m.params["C"].detach() ** 2).sum()) / 50)
    assert stats.chi2(50).ppf(0.0001) / 50 < m.output_weight_norm() < stats.chi2(50).ppf(0.9999) / 50
