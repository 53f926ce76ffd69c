"""Theory references (docs/theory.md): the expansion's exponent sets, kernels and limits.

Every formula here refers to a section of docs/theory.md; reconstructions there are tested against simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy import special

from . import schema
from .errors import ValidationError

__all__ = [
    "ACTIVATIONS",
    "activation",
    "gaussian_expectation",
    "nngp_kernel",
    "ntk_kernel",
    "init_moments",
    "shallow_kernels",
    "kernel_limit",
    "critical_alpha",
    "CATAPULT_REGIMES",
    "kernel_condition_number",
    "nu",
    "mean_exponents",
    "variance_exponents",
    "variance_rate",
    "READOUT_LAWS",
    "RATE_FORMULAS",
    "readout_law",
    "bias_rate",
    "ratio_rate",
    "bias_variance_order_switch",
]

READOUT_LAWS: dict[str, str] = {
    "symmetric": "readout law symmetric about 0 (C ~ N(0, 1), U(-1, 1), antithetic pairs): odd orders in "
    "N^(gamma - 1) have mean 0",
    "skewed": "mean-zero readout law with E C^3 != 0 (e.g. C ~ Exp(1) - 1): every order in N^(gamma - 1) is present",
}
"""The readout laws the bias law distinguishes (docs/theory.md §1.4), by name."""

RATE_FORMULAS: dict[str, dict[str, str]] = {
    "variance": {"symmetric": "1 - 2 gamma", "skewed": "1 - 2 gamma"},
    "bias": {"symmetric": "2 gamma - 2", "skewed": "gamma - 1"},
    "ratio": {"symmetric": "6 gamma - 5", "skewed": "4 gamma - 3"},
}
"""The leading exponents of N (``variance_rate``, ``bias_rate``, ``ratio_rate``) as text, by readout law."""

_INIT_READOUT = {"theory": "symmetric", "skewed": "skewed", "paper": "skewed"}


def _check_readout(readout: str) -> str:
    if readout not in READOUT_LAWS:
        raise ValidationError(
            f"readout={readout!r} is not a readout law; use one of {sorted(READOUT_LAWS)} (docs/theory.md §1.4)."
        )
    return readout


def _step(readout: str) -> int:
    """Spacing of the orders that survive in the mean: 2 (odd orders cancel) or 1."""
    return 2 if _check_readout(readout) == "symmetric" else 1


def _check_gamma(gamma: float) -> float:
    g = float(gamma)
    if not (math.isfinite(g) and 0.5 <= g <= 1.0):
        raise ValidationError(f"gamma={gamma!r} is outside [0.5, 1]; the 1/N^gamma theory covers gamma in [0.5, 1].")
    return g


def nu(gamma: float) -> int:
    """Return the number of deterministic orders before the Gaussian term (docs/theory.md §1.3 [R]).

    ``nu = max(1, ceil((2 gamma - 1) / (2 (1 - gamma))))``; nu -> infinity as gamma -> 1, where the expansion is
    singular, so ``nu(1.0)`` raises.

    Parameters
    ----------
    gamma : in [1/2, 1)

    Returns
    -------
    int

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.nu(0.75), theory.nu(0.875)
    (1, 3)
    """
    g = _check_gamma(gamma)
    if g == 1.0:
        raise ValidationError("nu(1) is infinite: at gamma = 1 (mean field) the expansion in N^(gamma-1) is singular.")
    # guard against round-off at the interval endpoints (2 nu - 1)/(2 nu)
    return max(1, math.ceil((2 * g - 1) / (2 * (1 - g)) - 1e-12))


def mean_exponents(gamma: float, max_terms: int | None = None, readout: str = "symmetric") -> np.ndarray:
    """Exponents p of the mean expansion E h^N = h + sum_j N^(-p_j) Q^j (docs/theory.md §1.3, 1.4 [R]).

    The orders j (1 - g) with j < nu: ``[0, 2(1-g), 4(1-g), ...]`` for a symmetric readout law (the odd orders
    average to 0), ``[0, (1-g), 2(1-g), ...]`` for a skewed one. At gamma = 1 there is no finite set;
    ``max_terms`` then (or always, if given) caps the number of terms.

    Parameters
    ----------
    gamma : in [1/2, 1]
    max_terms : the most terms returned
    readout : a key of ``READOUT_LAWS``

    Returns
    -------
    array of exponents, ascending

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.mean_exponents(0.875).tolist()
    [0.0, 0.25]
    >>> theory.mean_exponents(0.875, readout="skewed").tolist()
    [0.0, 0.125, 0.25]
    """
    g = _check_gamma(gamma)
    step = _step(readout)
    orders = np.arange(0, nu(g), step) if g < 1 else np.arange(max_terms or 1) * step
    if max_terms is not None:
        orders = orders[:max_terms]
    return orders * (1 - g)


def variance_exponents(gamma: float, corrections: int = 1, readout: str = "symmetric") -> np.ndarray:
    """Exponents p of the variance law Var = sum_k a_k N^(-p_k) (docs/theory.md §1.4, 9.3 [R]).

    Leading 2g - 1, then the corrections in steps of 2(1 - g) for a symmetric readout law (the fluctuation's
    next correction has relative size N^(2g-2)), of (1 - g) for a skewed one. At gamma = 1 the corrections
    coincide with the leading exponent, so only the leading one is returned.

    Parameters
    ----------
    gamma : in [1/2, 1]
    corrections : the number of correction terms after the leading one
    readout : a key of ``READOUT_LAWS``

    Returns
    -------
    array of exponents, ascending

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.variance_exponents(0.75).tolist()  # N^(-1/2), then the first correction N^(-1)
    [0.5, 1.0]
    >>> theory.variance_exponents(0.75, readout="skewed").tolist()
    [0.5, 0.75]
    """
    g = _check_gamma(gamma)
    return (2 * g - 1) + np.arange(1 if g == 1 else corrections + 1) * _step(readout) * (1 - g)


def variance_rate(gamma: float) -> float:
    """Leading log-log slope of the seed variance in N: ``1 - 2 gamma`` (1.4 [R], checked by simulation S).

    Parameters
    ----------
    gamma : in [1/2, 1]

    Returns
    -------
    float

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.variance_rate(0.75)
    -0.5
    """
    return 1 - 2 * _check_gamma(gamma)


def bias_rate(gamma: float, readout: str = "symmetric") -> float:
    """Leading log-log slope of |E h^N - h_t| in N (docs/theory.md §1.4 [R]).

    ``2 gamma - 2`` for a symmetric readout law (the order-N^(gamma-1) term is odd in the readout weights and
    averages to 0), ``gamma - 1`` for a skewed one.

    Parameters
    ----------
    gamma : in [1/2, 1]
    readout : a key of ``READOUT_LAWS``

    Returns
    -------
    float

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.bias_rate(0.75), theory.bias_rate(0.75, readout="skewed")
    (-0.5, -0.25)
    """
    return _step(readout) * (_check_gamma(gamma) - 1)


def ratio_rate(gamma: float, readout: str = "symmetric") -> float:
    """Leading log-log slope of bias^2 / variance in N: ``6 gamma - 5`` (symmetric), ``4 gamma - 3`` (skewed).

    Parameters
    ----------
    gamma : in [1/2, 1]
    readout : a key of ``READOUT_LAWS``

    Returns
    -------
    float

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.ratio_rate(0.75), theory.ratio_rate(0.75, readout="skewed")
    (-0.5, 0.0)
    """
    return 2 * bias_rate(gamma, readout) - variance_rate(gamma)


def bias_variance_order_switch(readout: str = "symmetric") -> float:
    """Return the gamma where bias^2 / variance changes from falling to growing with N (docs/theory.md §1.4).

    5/6 for a symmetric readout law (6 gamma - 5 = 0), 3/4 for a skewed one (4 gamma - 3 = 0): below it the
    variance dominates the mean-square deviation from h_t at large N, above it the bias.

    Parameters
    ----------
    readout : a key of ``READOUT_LAWS``

    Returns
    -------
    float

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> round(theory.bias_variance_order_switch(), 4), theory.bias_variance_order_switch("skewed")
    (0.8333, 0.75)
    """
    s = _step(readout)
    return (2 * s + 1) / (2 * s + 2)  # the root of 2 s (g - 1) - (1 - 2 g)


def readout_law(ds: xr.Dataset | None = None, readout: str | None = None) -> tuple[str, str]:
    """Return the readout law that sets the bias law, and where it came from.

    ``readout`` if given; else the Dataset's ``readout_law`` attribute (``testing.synthetic_ensemble`` sets it);
    else the stored sweep config's ``[model] init``: ``"theory"`` draws C ~ N(0, 1) (symmetric), ``"skewed"``
    C ~ Exp(1) - 1, and ``"paper"``'s C ~ U(0, 1) has no reflection symmetry, so no order cancels (taken as
    skewed; its non-zero mean adds terms the theory does not cover, docs/theory.md §1.1); else ``"symmetric"``,
    the theory's own init law, marked as assumed.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`, optional
    readout : a key of ``READOUT_LAWS``, optional

    Returns
    -------
    (law, source) : the key of ``READOUT_LAWS`` and a phrase saying where it came from

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> theory.readout_law(readout="skewed")
    ('skewed', 'given')
    """
    if readout is not None:
        return _check_readout(readout), "given"
    if ds is None:
        return "symmetric", "assumed (no store given)"
    if "readout_law" in ds.attrs:
        return _check_readout(str(ds.attrs["readout_law"])), "the dataset's readout_law attribute"
    if schema.ATTR_CONFIG in ds.attrs:
        from .store import sweep_config

        init = sweep_config(ds).get("model", {}).get("init", "theory")
        if init in _INIT_READOUT:
            return _INIT_READOUT[init], f"the store's config (init = {init!r})"
    return "symmetric", "assumed: the store does not record its readout law; pass readout= to say"


# ------------------------------------------------------------------------------------------ activations
_C_NR = math.sqrt(1 - 1 / math.pi)


def _sigmoid(z):
    return special.expit(z)


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "erf": (special.erf, lambda z: 2 / math.sqrt(math.pi) * np.exp(-(z**2))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "normalized_relu": (
        lambda z: (math.sqrt(2) * np.maximum(z, 0.0) - 1 / math.sqrt(math.pi)) / _C_NR,
        lambda z: math.sqrt(2) * (z > 0) / _C_NR,
    ),
}
"""numpy activation and derivative by name; the same names as the trainer's models (docs/theory.md §5, 6)."""


def activation(name: str | Callable, derivative: Callable | None = None) -> tuple[Callable, Callable | None]:
    """(sigma, sigma') for a name in ``ACTIVATIONS`` or a user callable (derivative optional).

    Parameters
    ----------
    name : a key of ``ACTIVATIONS`` (``"tanh"``, ``"relu"``, ``"erf"``, ...) or a callable sigma
    derivative : sigma' for a callable ``name`` (None when unknown: closed forms needing it then refuse)

    Returns
    -------
    (sigma, sigma') : numpy-vectorised functions

    Examples
    --------
    >>> from ensemble_stats import theory
    >>> f, df = theory.activation("tanh")
    >>> float(f(0.0)), float(df(0.0))
    (0.0, 1.0)
    """
    return _activation(name, derivative)


def _activation(name: str | Callable, derivative: Callable | None = None) -> tuple[Callable, Callable | None]:
    # the functions below take a parameter named ``activation``: they call this one
    if callable(name):
        return name, derivative
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValidationError(
            f"activation {name!r} is not one of {sorted(ACTIVATIONS)} (or pass a callable)."
        ) from None


_GH = np.polynomial.hermite_e.hermegauss(48)


def gaussian_expectation(f: Callable, g: Callable, k11, k12, k22) -> np.ndarray:
    """E[f(u) g(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), elementwise, by 48x48 Gauss-Hermite quadrature.

    Parameters
    ----------
    f, g : numpy-vectorised functions
    k11, k12, k22 : the covariance's entries, arrays broadcast together

    Returns
    -------
    array of the broadcast shape of the covariance entries

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> round(float(theory.gaussian_expectation(lambda u: u, lambda v: v, 1.0, 0.5, 1.0)), 12)  # E[uv] = k12
    0.5
    """
    k11, k12, k22 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (k11, k12, k22)))
    z, w = _GH
    w = w / math.sqrt(2 * math.pi)
    a = np.sqrt(np.maximum(k11, 0.0))[..., None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where((k11 > 0) & (k22 > 0), k12 / np.sqrt(k11 * k22), 0.0)
    rho = np.clip(rho, -1.0, 1.0)[..., None, None]
    b = np.sqrt(np.maximum(k22, 0.0))[..., None, None]
    z1, z2 = z[:, None], z[None, :]
    u = a * z1
    v = b * (rho * z1 + np.sqrt(1 - rho**2) * z2)
    return (w[:, None] * w[None, :] * f(u) * g(v)).sum((-2, -1))


_CLOSED_FORM = ("relu", "normalized_relu", "erf")


def _closed_form(name: str, k11, k12, k22):
    """(E[s(u)s(v)], E[s'(u)s'(v)]) in closed form for relu, erf and normalized_relu; None otherwise."""
    if name in ("relu", "normalized_relu"):
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.clip(k12 / np.sqrt(k11 * k22), -1.0, 1.0)
        th = np.arccos(c)
        rr = np.sqrt(k11 * k22) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
        dd = (np.pi - th) / (2 * np.pi)
        if name == "relu":
            return rr, dd
        m1, m2 = np.sqrt(k11 / (2 * np.pi)), np.sqrt(k22 / (2 * np.pi))
        s = math.sqrt(2)
        ss = (2 * rr - s / math.sqrt(math.pi) * (m1 + m2) + 1 / math.pi) / (1 - 1 / math.pi)
        return ss, 2 * dd / (1 - 1 / math.pi)
    if name == "erf":
        d = (1 + 2 * k11) * (1 + 2 * k22)
        return 2 / np.pi * np.arcsin(2 * k12 / np.sqrt(d)), 4 / np.pi / np.sqrt(d - 4 * k12**2)
    return None


def _moments(act, k11, k12, k22, derivative: bool = True):
    """(E[s(u)s(v)], E[s'(u)s'(v)]); the second is None when not ``derivative`` (the NNGP needs only the first)."""
    name = act if isinstance(act, str) else None
    closed = _closed_form(name, k11, k12, k22) if name else None
    if closed is not None:
        return closed
    f, df = activation(act)
    ss = gaussian_expectation(f, f, k11, k12, k22)
    if not derivative:
        return ss, None
    dd = gaussian_expectation(df, df, k11, k12, k22) if df is not None else np.full_like(ss, np.nan)
    return ss, dd


def _pair_moments(act, k1, K, k2, symmetric: bool, derivative: bool):
    """Moments over every pair (i, j); for a symmetric Gram matrix the quadrature runs on one triangle only."""
    if not symmetric or act in _CLOSED_FORM:
        return _moments(act, k1[:, None], K, k2[None, :], derivative)
    i, j = np.triu_indices(K.shape[0])
    tri = _moments(act, k1[i], K[i, j], k2[j], derivative)
    out = []
    for m in tri:
        if m is None:
            out.append(None)
            continue
        full = np.empty_like(K)
        full[i, j] = m
        full[j, i] = m
        out.append(full)
    return tuple(out)


def _layers(x, x2, act, depth, sigma_w, sigma_b, widths, gammas, ntk: bool = True, first_layer: str = "ntk"):
    """Yield (K, Theta) of the input layer and after each of ``depth`` hidden layers (Theta None unless ``ntk``)."""
    symmetric = x2 is None
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    x2 = x if x2 is None else np.atleast_2d(np.asarray(x2, dtype=np.float64))
    d = x.shape[1]
    K = sigma_b**2 + sigma_w**2 * (x @ x2.T) / d
    k1 = sigma_b**2 + sigma_w**2 * (x**2).sum(1) / d
    k2 = sigma_b**2 + sigma_w**2 * (x2**2).sum(1) / d
    theta = (K.copy() if first_layer == "ntk" else x @ x2.T) if ntk else None
    yield K, theta
    for layer in range(depth):
        sw2 = sigma_w**2
        if widths is not None:  # 1/N^gamma nets: the conditional variance at finite N (docs/theory.md §6)
            sw2 = sigma_w**2 * widths[layer] ** (1 - 2 * gammas[layer])
        ss, dd = _pair_moments(act, k1, K, k2, symmetric, ntk)
        s1, _ = _moments(act, k1, k1, k1, derivative=False)
        s2 = s1 if symmetric else _moments(act, k2, k2, k2, derivative=False)[0]
        K_new = sigma_b**2 + sw2 * ss
        if ntk:
            theta = K_new + sw2 * dd * theta
        K, k1, k2 = K_new, sigma_b**2 + sw2 * s1, sigma_b**2 + sw2 * s2
        yield K, theta


def _recursion(x, x2, act, depth, sigma_w, sigma_b, widths, gammas, ntk: bool = True, first_layer: str = "ntk"):
    for K, theta in _layers(x, x2, act, depth, sigma_w, sigma_b, widths, gammas, ntk, first_layer):  # noqa: B007
        pass
    return K, theta


def nngp_kernel(
    x,
    x2=None,
    *,
    activation: str | Callable = "relu",
    depth: int = 1,
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    widths: Sequence[int] | None = None,
    gammas: Sequence[float] | None = None,
) -> np.ndarray:
    """NNGP kernel of a fully connected net with ``depth`` hidden layers (docs/theory.md §6, [V] for relu and erf).

    K1 = sigma_b^2 + sigma_w^2 x.x'/d;  K_{l+1} = sigma_b^2 + sigma_w^2 E[s(u) s(v)], (u, v) ~ N(0, K_l).
    ReLU, erf and normalized ReLU in closed form; tanh, sigmoid and callables by Gauss-Hermite quadrature.
    With ``widths`` and ``gammas`` (one per hidden layer) sigma_w^2 becomes sigma_w^2 N_l^(1 - 2 gamma_l): the
    width-corrected recursion for 1/N^gamma nets.

    Parameters
    ----------
    x : (n, d), x2 : (m, d) or None (= x)

    Returns
    -------
    (n, m) kernel matrix

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> theory.nngp_kernel(x, activation="relu").round(4)  # the arc-cosine kernel: |x|^2 / 4 on the diagonal
    array([[0.25  , 0.0796],
           [0.0796, 0.25  ]])
    """
    return _recursion(x, x2, activation, depth, sigma_w, sigma_b, widths, gammas, ntk=False)[0]


def ntk_kernel(
    x,
    x2=None,
    *,
    activation: str | Callable = "relu",
    depth: int = 1,
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    widths: Sequence[int] | None = None,
    gammas: Sequence[float] | None = None,
    first_layer: str = "ntk",
) -> np.ndarray:
    """NTK of the same net: Theta1 = K1, Theta_{l+1} = K_{l+1} + sigma_w^2 E[s'(u) s'(v)] Theta_l (docs/theory.md §6).

    ``first_layer="ntk"``: the first layer's weights are N(0, 1) times sigma_w / sqrt(d) in the forward pass
    (Jacot's parametrization), Theta1 = K1. ``"scaled_mlp"``: they are drawn N(0, sigma_w^2 / d) and used as they
    are (``collectors.ScaledMLP``), so their gradients give Theta1 = x.x'. With ``widths``, ``gammas``,
    ``sigma_b=0`` and ``first_layer="scaled_mlp"`` this is the expected empirical NTK (sum over parameters of
    df(x)/dp df(x')/dp) of a bias-free ScaledMLP at initialisation: exact at every width for one hidden layer,
    up to O(1/N) for deeper nets.

    Parameters
    ----------
    x, x2 : inputs (n, d) and (m, d); ``x2`` defaults to ``x``
    activation, depth, sigma_w, sigma_b : the net, as for :func:`nngp_kernel`
    widths, gammas : the hidden widths and their exponents, for the finite-width (1/N^gamma) recursion
    first_layer : ``"ntk"`` or ``"scaled_mlp"`` (see above)

    Returns
    -------
    array (n, m)

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> theory.ntk_kernel(x, activation="relu").round(4)
    array([[0.5   , 0.0796],
           [0.0796, 0.5   ]])
    """
    if first_layer not in ("ntk", "scaled_mlp"):
        raise ValidationError(f"first_layer={first_layer!r}: use 'ntk' or 'scaled_mlp'.")
    return _recursion(x, x2, activation, depth, sigma_w, sigma_b, widths, gammas, first_layer=first_layer)[1]


# ------------------------------------------------------------------------------------------ init laws
def _sample_neurons(law: str, d: int, n: int, rng, sigma_w: float = 1.0):
    if law == "theory":  # collectors.theory_init: W ~ N(0, sigma_w^2/d), C ~ N(0, 1), no biases
        return rng.normal(scale=sigma_w / math.sqrt(d), size=(n, d)), np.zeros(n), rng.normal(size=n)
    if law == "paper":  # W ~ N(0, 1), b ~ U(+-1/sqrt(d)), C ~ U(0, 1)
        return rng.normal(size=(n, d)), rng.uniform(-1, 1, n) / math.sqrt(d), rng.uniform(0, 1, n)
    raise ValidationError(f"init law {law!r}: use 'theory' or 'paper'.")


def init_moments(
    x,
    *,
    width: int,
    gamma: float,
    activation: str | Callable = "tanh",
    law: str = "theory",
    n_mc: int = 400_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact finite-N mean and covariance of the shallow 1/N^gamma net's output at initialisation.

    Neurons are i.i.d., so E g(x) = N^(1-gamma) E[C s(W.x+b)] and Cov = N^(1-2gamma) Cov(C s(W.x+b), C s(W.x'+b))
    (docs/theory.md §6); the per-neuron moments are computed by Monte Carlo over the init law. For law="paper" the
    output bias c0 ~ U(+-1/sqrt(N)) adds 1/(3N) to the variance.

    Parameters
    ----------
    x : grid inputs (point, d)
    width, gamma : N and the normalization exponent
    activation : a name of ``ACTIVATIONS`` or a callable
    law : ``"theory"`` (W ~ N(0, 1/d), C ~ N(0, 1)) or ``"paper"`` (the authors' code)
    n_mc, seed : Monte-Carlo samples of one neuron and their seed

    Returns
    -------
    mean (point,), cov (point, point)

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> mean, cov = theory.init_moments(np.array([[1.0, 0.0]]), width=256, gamma=0.75, n_mc=100_000)
    >>> bool(abs(mean[0]) < 0.05), cov.shape  # mean-zero readout: E h = 0 up to Monte-Carlo error
    (True, (1, 1))
    """
    _check_gamma(gamma)
    f, _ = _activation(activation)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    rng = np.random.default_rng(seed)
    W, b, C = _sample_neurons(law, x.shape[1], n_mc, rng)
    feats = C[:, None] * f(W @ x.T + b[:, None])  # (n_mc, point)
    mean = width ** (1 - gamma) * feats.mean(0)
    cov = width ** (1 - 2 * gamma) * np.cov(feats, rowvar=False).reshape(len(x), len(x))
    if law == "paper":
        cov = cov + 1 / (3 * width)
    return mean, cov


# ------------------------------------------------------------------------------------------ kernel limit
def shallow_kernels(
    x,
    x2=None,
    *,
    activation: str | Callable = "tanh",
    sigma_w: float = 1.0,
    alpha: float = 1.0,
    layer_alpha: Mapping[str, float] | None = None,
    n_mc: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the kernels A and Sigma of the shallow net under the theory init law (docs/theory.md §1.2-1.3).

    A(x, x') = alpha a_C E[s(w.x) s(w.x')] + alpha a_W1 E[C^2] E[s'(w.x) s'(w.x')] x.x',
    Sigma(x, x') = E[C^2] E[s(w.x) s(w.x')], with w ~ N(0, sigma_w^2 I / d), C ~ N(0, 1), no biases;
    a_C, a_W1 are the per-layer rate multipliers ``layer_alpha`` (default 1): the readout's and the first
    layer's shares of the kernel. Computed by quadrature (or Monte Carlo with ``n_mc`` samples, for checks).

    Parameters
    ----------
    x, x2 : inputs (n, d) and (m, d); ``x2`` defaults to ``x``
    activation, sigma_w : the hidden layer's activation and its weights' scale
    alpha, layer_alpha : the learning-rate constant and the per-layer multipliers (``{"W1": a, "C": b}``)
    n_mc : Monte-Carlo samples instead of quadrature (0: quadrature)

    Returns
    -------
    A (n, m), Sigma (n, m)

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> A, Sigma = theory.shallow_kernels(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> A.shape, bool(np.allclose(Sigma, Sigma.T))
    ((2, 2), True)
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    x2 = x if x2 is None else np.atleast_2d(np.asarray(x2, dtype=np.float64))
    d = x.shape[1]
    f, df = _activation(activation)
    if n_mc:
        w = np.random.default_rng(0).normal(scale=sigma_w / math.sqrt(d), size=(n_mc, d))
        z1, z2 = w @ x.T, w @ x2.T
        ss = f(z1).T @ f(z2) / n_mc
        dd = df(z1).T @ df(z2) / n_mc
    else:
        k = sigma_w**2 / d
        k11 = k * (x**2).sum(1)[:, None]
        k22 = k * (x2**2).sum(1)[None, :]
        k12 = k * (x @ x2.T)
        ss, dd = _moments(activation, k11, k12, k22)
    sigma = ss
    la = dict(layer_alpha or {})
    A = alpha * la.get("C", 1.0) * ss + alpha * la.get("W1", 1.0) * dd * (x @ x2.T)
    return A, sigma


def _phi(lam: np.ndarray, t: float, M: int) -> np.ndarray:
    """(1 - exp(-t lam / M)) / lam, with its limit t / M at lam = 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = -np.expm1(-t * lam / M) / lam
    return np.where(np.abs(lam) < 1e-12, t / M, out)


def kernel_limit(
    train_x,
    train_y,
    grid_x,
    times,
    *,
    activation: str | Callable = "tanh",
    sigma_w: float = 1.0,
    alpha: float = 1.0,
    layer_alpha: Mapping[str, float] | None = None,
) -> xr.Dataset:
    """Return the gamma in (1/2, 1) kernel limit for full-batch GD on M training points and O outputs.

    See docs/theory.md §1.2-1.4 [R].

    h_t(x) = A_xX phi_t(A_XX) Y and K_t(x) = K_0(x) - A_xX phi_t(A_XX) K_0(X) with K_0 ~ GP(0, Sigma), where
    phi_t(lam) = (1 - e^{-t lam / (M O)}) / lam through the eigendecomposition (no inverse of a singular A).
    With O outputs the tangent kernel is A (x) I_O at leading order (independent output weights) and the loss
    (1/2 the mean over the M points and O outputs) puts 1 / (M O) in the gradient flow; each output's K_t has
    the same variance.

    Parameters
    ----------
    train_x : (M, d); train_y : (M,) or (M, O); grid_x : (P, d); times : scaled times t
    alpha, layer_alpha : the rate constant and per-layer multipliers (``{"W1": a, "C": b}``), see
        :func:`shallow_kernels`

    Returns
    -------
    Dataset with ``h`` (time, point, output) and ``var_k`` (time, point): the limit and Var K_t on the grid.

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> lim = theory.kernel_limit(x, np.array([1.0, -1.0]), x, [0.0, 1.0, 10.0])
    >>> lim.h.dims, lim.var_k.dims
    (('time', 'point', 'output'), ('time', 'point'))
    >>> lim.h.isel(time=-1, output=0).values.round(2)  # gradient flow fits the training targets
    array([ 0.99, -0.99])
    """
    X = np.atleast_2d(np.asarray(train_x, dtype=np.float64))
    Y = np.asarray(train_y, dtype=np.float64).reshape(len(X), -1)
    G = np.atleast_2d(np.asarray(grid_x, dtype=np.float64))
    M, O = Y.shape  # noqa: E741
    kw = {"activation": activation, "sigma_w": sigma_w, "alpha": alpha, "layer_alpha": layer_alpha}
    A_XX, S_XX = shallow_kernels(X, **kw)
    A_GX, S_GX = shallow_kernels(G, X, **kw)
    _, S_GG = shallow_kernels(G, **kw)
    lam, U = np.linalg.eigh((A_XX + A_XX.T) / 2)
    h, var = [], []
    for t in np.atleast_1d(times):
        P = U @ np.diag(_phi(lam, float(t), M * O)) @ U.T  # phi_t(A_XX)
        L = A_GX @ P  # (P, M)
        h.append(L @ Y)
        var.append(np.diag(S_GG) - 2 * (L * S_GX).sum(1) + np.einsum("pm,mn,pn->p", L, S_XX, L))
    dims = (schema.TIME, schema.POINT)
    out = xr.Dataset(
        {"h": ((*dims, schema.OUTPUT), np.array(h)), "var_k": (dims, np.array(var))},
        coords={schema.TIME: np.atleast_1d(times).astype(float), schema.POINT: np.arange(len(G))},
        attrs={
            "source": "docs/theory.md §1.2-1.3 [R]",
            "activation": str(activation),
            "alpha": alpha,
            **({"layer_alpha": dict(layer_alpha)} if layer_alpha else {}),
            "sigma_w": sigma_w,
        },
    )
    out["h"].attrs["long_name"] = "kernel-limit mean output h_t"
    out["var_k"].attrs["long_name"] = "kernel-limit variance Var K_t of the rescaled fluctuation (every output)"
    return out


CATAPULT_REGIMES: tuple[tuple[str, float, float], ...] = (
    ("lazy", 0.0, 2.0),
    ("catapult", 2.0, 4.0),
    ("divergent", 4.0, math.inf),
)
"""The large-learning-rate regimes by r_0 = eta lambda_0 / (M O), each ``(name, lower, upper)`` with
``lower <= r_0 < upper`` (docs/theory.md §13, Lewkowycz et al.): below 2 the linear step is stable (lazy); from
2 to about 4 the loss first rises and the kernel's top eigenvalue falls until the step is stable again (the
catapult); above about 4 training diverges (for ReLU nets they report up to 12)."""


def critical_alpha(
    train_x,
    width: int,
    *,
    gamma: float = 0.5,
    n_outputs: int = 1,
    activation: str | Callable = "tanh",
    sigma_w: float = 1.0,
    layer_alpha: Mapping[str, float] | None = None,
) -> float:
    """Return the rate constant alpha at which full-batch GD on the shallow net's linearization stops being stable.

    See docs/theory.md §13: eta lambda_max(Theta) / (M O) = 2 with eta = alpha N^(2 gamma - 2) and the tangent kernel
    Theta = N^(1 - 2 gamma) A of the infinite-width limit, so alpha_c = 2 M O N / lambda_max(A_XX).

    Between alpha_c and about 2 alpha_c (eta between 2 / lambda_0 and 4 / lambda_0 in the loss's units) the
    catapult is expected: the loss spikes, lambda_max falls until the step is stable again; above, divergence.

    Parameters
    ----------
    train_x : (M, d) training inputs; width : N; n_outputs : O
    activation, sigma_w, layer_alpha : as for :func:`shallow_kernels` (the init law's kernel)

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> a256, a512 = theory.critical_alpha(x, 256), theory.critical_alpha(x, 512)
    >>> round(a512 / a256, 6)  # alpha_c = 2 M O N / lambda_max(A): linear in N at gamma = 1/2
    2.0
    """
    X = np.atleast_2d(np.asarray(train_x, dtype=np.float64))
    _check_gamma(gamma)
    A, _ = shallow_kernels(X, activation=activation, sigma_w=sigma_w, layer_alpha=layer_alpha)
    lam = float(np.linalg.eigvalsh((A + A.T) / 2)[-1])
    return 2.0 * len(X) * int(n_outputs) * int(width) / lam


# ------------------------------------------------------------------------------------------ conditioning
def kernel_condition_number(
    x,
    *,
    activation: str | Callable = "normalized_relu",
    depth: int | Sequence[int] = 1,
    normalize_inputs: bool = True,
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
) -> float | np.ndarray:
    """Condition number of the NNGP Gram matrix of ``x`` after ``depth`` layers (Agarwal et al.; docs/theory.md §5).

    Inputs are scaled to unit norm times sqrt(d) (so K1 has unit diagonal) when ``normalize_inputs``. A
    sequence of depths returns an array of condition numbers, one per depth, from a single recursion.

    Parameters
    ----------
    x : inputs (n, d)
    activation : a name of ``ACTIVATIONS`` or a callable
    depth : one depth, or several (one recursion computes them all)
    normalize_inputs, sigma_w, sigma_b : see above and :func:`nngp_kernel`

    Returns
    -------
    float, or array (one per depth)

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_stats import theory
    >>> x = np.random.default_rng(0).normal(size=(6, 3))
    >>> kappa = theory.kernel_condition_number(x, depth=[1, 4])
    >>> bool(kappa[1] < kappa[0])  # depth conditions the Gram matrix (Agarwal et al.)
    True
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if normalize_inputs:
        x = x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(x.shape[1])
    depths = [int(depth)] if np.ndim(depth) == 0 else [int(d) for d in depth]
    if not depths or min(depths) < 0:
        raise ValidationError(
            f"depth = {depth!r}: expected a non-negative number of hidden layers, or a non-empty sequence of them"
        )
    conds = {}
    layers = _layers(x, None, activation, max(depths), sigma_w, sigma_b, None, None, ntk=False)
    for layer, (K, _) in enumerate(layers):
        if layer in depths:
            conds[layer] = float(np.linalg.cond(K))
    return conds[depths[0]] if np.ndim(depth) == 0 else np.array([conds[d] for d in depths])
