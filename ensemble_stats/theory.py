"""Theory references (THEORY.md): the expansion's exponent sets and, as they land, kernels and limits.

Every formula here is tagged in THEORY.md; [R] statements are reconstructions, tested against simulation.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "nu",
    "mean_exponents",
    "variance_exponents",
    "variance_rate",
    "bias_rate",
    "bias_variance_order_switch",
]

bias_variance_order_switch = 0.75
"""gamma at which (bias^2 / variance) ~ N^(4 gamma - 3) changes sign of its exponent (THEORY.md 1.4, 9.8)."""


def _check_gamma(gamma: float) -> float:
    from .errors import ValidationError

    g = float(gamma)
    if not (math.isfinite(g) and 0.5 <= g <= 1.0):
        raise ValidationError(f"gamma={gamma!r} is outside [0.5, 1]; the 1/N^gamma theory covers gamma in [0.5, 1].")
    return g


def nu(gamma: float) -> int:
    """Number of deterministic orders before the Gaussian term (THEORY.md 1.3 [R]).

    ``nu = max(1, ceil((2 gamma - 1) / (2 (1 - gamma))))``; nu -> infinity as gamma -> 1, where the expansion is
    singular, so ``nu(1.0)`` raises.
    """
    g = _check_gamma(gamma)
    if g == 1.0:
        from .errors import ValidationError

        raise ValidationError("nu(1) is infinite: at gamma = 1 (mean field) the expansion in N^(gamma-1) is singular.")
    # guard against round-off at the interval endpoints (2 nu - 1)/(2 nu)
    return max(1, math.ceil((2 * g - 1) / (2 * (1 - g)) - 1e-12))


def mean_exponents(gamma: float, max_terms: int | None = None) -> np.ndarray:
    """Exponents p of the mean expansion h + sum_j N^(-p_j) Q^j: ``[0, (1-g), ..., (nu-1)(1-g)]`` (1.3 [R]).

    At gamma = 1 there is no finite set; ``max_terms`` then (or always, if given) caps the number of terms.
    """
    g = _check_gamma(gamma)
    n = nu(g) if g < 1 else (max_terms or 1)
    if max_terms is not None:
        n = min(n, max_terms)
    return np.arange(n) * (1 - g)


def variance_exponents(gamma: float, corrections: int = 1) -> np.ndarray:
    """Exponents p of the variance law Var = sum_k a_k N^(-p_k): leading 2g-1, then +k(1-g) (1.4, 9.3 [R]).

    At gamma = 1 the corrections coincide with the leading exponent, so only the leading one is returned.
    """
    g = _check_gamma(gamma)
    return (2 * g - 1) + np.arange(1 if g == 1 else corrections + 1) * (1 - g)


def variance_rate(gamma: float) -> float:
    """Leading log-log slope of the seed variance in N: ``1 - 2 gamma`` (1.4 [R], checked by simulation S)."""
    return 1 - 2 * _check_gamma(gamma)


def bias_rate(gamma: float) -> float:
    """Leading log-log slope of |E h^N - h_t| in N: ``gamma - 1`` (1.4 [R], not verified quantitatively)."""
    return _check_gamma(gamma) - 1
