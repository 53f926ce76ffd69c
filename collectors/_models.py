"""1/N^gamma-scaled MLPs, their initialisation laws and the theory's learning-rate rules (docs/theory.md §1, 2, 8).

Network with L hidden layers of widths N_1..N_L and exponents gamma_1..gamma_L:

    h_1 = s(W_1 x + b_1)
    h_l = s(N_{l-1}^-gamma_{l-1} W_l h_{l-1} + b_l)         (l = 2..L)
    g   = N_L^-gamma_L C h_L + c_0

The same functional forward serves one model (:class:`ScaledMLP`, an ``nn.Module`` a user trains with
``torch.optim.SGD``) and a block of B members with stacked parameters (leading axis B) in the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ensemble_stats import schema
from ensemble_stats.errors import ValidationError

_SQRT_PI = math.sqrt(math.pi)


def _normalized_relu(x: torch.Tensor) -> torch.Tensor:
    """(sqrt(2) relu(x) - 1/sqrt(pi)) / sqrt(1 - 1/pi): zero mean, unit second moment under N(0,1) (5)."""
    return (math.sqrt(2.0) * torch.relu(x) - 1 / _SQRT_PI) / math.sqrt(1 - 1 / math.pi)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "erf": torch.special.erf,
    "normalized_relu": _normalized_relu,
}


_C_NORM = math.sqrt(2.0) / math.sqrt(1 - 1 / math.pi)

ACTIVATION_BACKWARD: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    # grad * s'(z), from the pre-activation z and h = s(z), with torch's fused kernels where they exist
    "tanh": lambda grad, z, h: torch.ops.aten.tanh_backward(grad, h),
    "sigmoid": lambda grad, z, h: torch.ops.aten.sigmoid_backward(grad, h),
    "relu": lambda grad, z, h: torch.ops.aten.threshold_backward(grad, z, 0),
    "erf": lambda grad, z, h: grad * (2 / _SQRT_PI) * torch.exp(-z * z),
    "normalized_relu": lambda grad, z, h: torch.ops.aten.threshold_backward(grad, z, 0) * _C_NORM,
}


def activation_fn(activation: str | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the torch function for an activation name (see ``ACTIVATIONS``) or a callable passed through."""
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValidationError(
            f"activation {activation!r} is not one of {sorted(ACTIVATIONS)} (or pass a callable)."
        ) from None


# ---------------------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class Architecture:
    """Shapes and scalings of a ScaledMLP; validated on creation.

    Parameters
    ----------
    d_in : input dimension
    hidden : widths N_1..N_L of the hidden layers (N_L is the width N of the expansion)
    gammas : exponents gamma_1..gamma_L, each in [0.5, 1]
    d_out : number of outputs
    activation : name in ``ACTIVATIONS`` or a callable
    bias : hidden and output biases
    """

    d_in: int
    hidden: tuple[int, ...]
    gammas: tuple[float, ...]
    d_out: int = 1
    activation: str | Callable = "tanh"
    bias: bool = False

    def __post_init__(self):
        problems = []
        hidden = tuple(self.hidden) if isinstance(self.hidden, Sequence) else (self.hidden,)
        gammas = tuple(self.gammas) if isinstance(self.gammas, Sequence) else (self.gammas,)
        object.__setattr__(self, "hidden", hidden)
        object.__setattr__(
            self,
            "gammas",
            tuple(float(g) for g in gammas) if all(isinstance(g, int | float) for g in gammas) else gammas,
        )
        if not (isinstance(self.d_in, int) and self.d_in >= 1):
            problems.append(f"d_in must be an integer >= 1, got {self.d_in!r}.")
        if not (isinstance(self.d_out, int) and self.d_out >= 1):
            problems.append(f"d_out must be an integer >= 1, got {self.d_out!r}.")
        if not hidden:
            problems.append("hidden must list at least one width.")
        # layers may repeat a width or a gamma (e.g. 100-100-100)
        problems += schema.validate_widths(list(hidden), "hidden", unique=False) if hidden else []
        problems += schema.validate_gammas(list(gammas), "gammas", unique=False)
        if len(hidden) != len(gammas):
            problems.append(f"{len(hidden)} hidden widths but {len(gammas)} gammas; give one gamma per hidden layer.")
        if not callable(self.activation) and self.activation not in ACTIVATIONS:
            problems.append(f"activation {self.activation!r} is not one of {sorted(ACTIVATIONS)} (or pass a callable).")
        ValidationError.raise_if(problems, "ScaledMLP")

    @property
    def depth(self) -> int:
        return len(self.hidden)

    @property
    def width(self) -> int:
        """N_L, the width of the expansion and of scaled time t = k / N_L."""
        return self.hidden[-1]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes: W1..WL, C (weights), b1..bL, c0 (biases when ``bias``)."""
        dims = (self.d_in, *self.hidden)
        out = {}
        for layer in range(1, self.depth + 1):
            out[f"W{layer}"] = (dims[layer], dims[layer - 1])
            if self.bias:
                out[f"b{layer}"] = (dims[layer],)
        out["C"] = (self.d_out, self.width)
        if self.bias:
            out["c0"] = (self.d_out,)
        return out

    def scales(self) -> list[float]:
        """N_l^-gamma_l for l = 1..L."""
        return [n**-g for n, g in zip(self.hidden, self.gammas, strict=True)]

    def describe(self) -> dict:
        act = self.activation if isinstance(self.activation, str) else getattr(self.activation, "__name__", "callable")
        return {
            "architecture": f"{self.depth}-hidden-layer MLP, d_in={self.d_in}, d_out={self.d_out}, bias={self.bias}",
            "activation": act,
            "formula": "h_1 = s(W_1 x + b_1); h_l = s(N_{l-1}^-gamma_{l-1} W_l h_{l-1} + b_l); g = N_L^-gamma_L C h_L + c0",
        }


def forward(params: Mapping[str, torch.Tensor], arch: Architecture, x: torch.Tensor, scales=None) -> torch.Tensor:
    """Return the ScaledMLP forward for one model or a block (parameters with a leading axis B).

    Parameters
    ----------
    params : W1..WL, C (and biases); shapes of ``arch.shapes()``, optionally with a leading block axis B
    x : (n, d_in), or (B, n, d_in)
    scales : per-layer scales, floats or tensors broadcastable to (B, 1, 1); default ``arch.scales()``

    Returns
    -------
    (n, d_out), or (B, n, d_out) for a block
    """
    act = activation_fn(arch.activation)
    scales = arch.scales() if scales is None else scales
    block = params["C"].ndim == 3

    def bias(name):
        b = params[name]
        return b[:, None, :] if block else b

    if block and x.ndim == 2:
        # the block shares its inputs: one large GEMM x [W1_1; ...; W1_B]^T instead of B small ones
        W1 = params["W1"]
        h = (x @ W1.reshape(-1, W1.shape[-1]).T).view(x.shape[0], W1.shape[0], W1.shape[1])  # (n, B, N1)
        if arch.bias:
            h = h + params["b1"]
        h = act(h).transpose(0, 1)  # (B, n, N1), a view
    else:
        h = x @ params["W1"].transpose(-1, -2)
        if arch.bias:
            h = h + bias("b1")
        h = act(h)
    for layer in range(2, arch.depth + 1):
        z = scales[layer - 2] * (h @ params[f"W{layer}"].transpose(-1, -2))
        if arch.bias:
            z = z + bias(f"b{layer}")
        h = act(z)
    out = scales[-1] * (h @ params["C"].transpose(-1, -2))
    if arch.bias:
        out = out + bias("c0")
    return out


# ---------------------------------------------------------------------------------------------- init laws
InitLaw = Callable[[Architecture, torch.Generator, torch.dtype], dict[str, torch.Tensor]]


def theory_init(
    arch: Architecture, gen: torch.Generator, dtype=torch.float32, sigma_w: float = 1.0, sigma_b: float = 0.0
) -> dict[str, torch.Tensor]:
    """Initialise by the theory's law.

    W_1 ~ N(0, sigma_w^2 / d_in), inner W_l ~ N(0, 1), C ~ N(0, 1) (mean zero), biases N(0, sigma_b^2). The inner
    N^-gamma scaling replaces a 1/sqrt(fan_in) factor. Independent of gamma.
    """
    out = {}
    for name, shape in arch.shapes().items():
        z = torch.randn(shape, generator=gen, dtype=dtype)
        if name == "W1":
            z = z * (sigma_w / math.sqrt(arch.d_in))
        elif name.startswith("b") or name == "c0":
            z = z * sigma_b
        out[name] = z
    return out


def skewed_init(arch: Architecture, gen: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Initialise by the theory's law with a skewed readout: C ~ Exp(1) - 1 (mean 0, variance 1, E C^3 = 2).

    Every draw is the theory law's (the same generator calls), and C is the monotone transform
    -log(1 - Phi(Z)) - 1 of its normal draw Z: a seed's hidden weights equal ``theory_init``'s and its readout
    has the same ranks, so the two laws are compared on common random numbers (docs/theory.md §1.4).
    """
    out = theory_init(arch, gen, dtype)
    z = out["C"].double()
    out["C"] = (-torch.special.log_ndtr(-z) - 1).to(dtype)
    return out


def paper_init(arch: Architecture, gen: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Initialise as the authors' code does (docs/theory.md §1.5).

    Hidden W ~ N(0, 1), output C ~ U(0, 1), PyTorch default biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Output
    weights are not mean zero.
    """
    out = {}
    shapes = arch.shapes()
    for name, shape in shapes.items():
        if name == "C":
            out[name] = torch.rand(shape, generator=gen, dtype=dtype)
        elif name.startswith("W"):
            out[name] = torch.randn(shape, generator=gen, dtype=dtype)
        else:
            weight = "C" if name == "c0" else "W" + name[1:]
            bound = 1 / math.sqrt(shapes[weight][1])
            out[name] = (torch.rand(shape, generator=gen, dtype=dtype) * 2 - 1) * bound
    return out


INIT_LAWS: dict[str, InitLaw] = {"theory": theory_init, "skewed": skewed_init, "paper": paper_init}
INIT_DESCRIPTIONS = {
    "theory": "W1 ~ N(0, 1/d_in), inner W ~ N(0,1), C ~ N(0,1), biases 0",
    "skewed": "as 'theory' but C ~ Exp(1) - 1 (mean 0, variance 1, skewness 2), a monotone map of the same draw",
    "paper": "W ~ N(0,1), C ~ U(0,1), PyTorch default biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
}


def generator_seed(seed: int, size: int, fan_in: int) -> int:
    """Return the torch generator seed of run ``seed`` for a net of the given size.

    The odd multiplier keeps distinct run seeds distinct, and reducing mod 2^64 keeps every int64 seed in the range
    torch accepts (a seed below 2^44 gets the value it always had).
    """
    return (int(seed) * 1_000_003 + int(size) * 7919 + int(fan_in)) % 2**64


def init_params(arch: Architecture, law: str | InitLaw, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Return the initial parameters of run ``seed``.

    A function of (seed, shapes) only, so the same for every gamma (common random numbers).
    """
    fn = INIT_LAWS.get(law) if isinstance(law, str) else law
    if fn is None:
        raise ValidationError(f"init law {law!r} is not one of {sorted(INIT_LAWS)} (or pass a callable).")
    gen = torch.Generator().manual_seed(generator_seed(seed, sum(arch.hidden), arch.d_in))
    params = fn(arch, gen, dtype)
    wrong = {k: tuple(v.shape) for k, v in params.items() if tuple(v.shape) != arch.shapes().get(k)}
    if set(params) != set(arch.shapes()) or wrong:
        raise ValidationError(
            f"init law returned {sorted(params)} with shapes {wrong or 'ok'}; expected {arch.shapes()}."
        )
    return params


# ---------------------------------------------------------------------------------------------- lr rules
def layer_alpha_problems(layer_alpha: Mapping[str, float], depth: int) -> list[str]:
    """Problems with per-layer rate multipliers: keys ``W1`` .. ``W{depth}`` and ``C``, positive finite values."""
    allowed = [*(f"W{layer}" for layer in range(1, depth + 1)), "C"]
    problems = []
    for k, v in layer_alpha.items():
        if k not in allowed:
            problems.append(f"layer_alpha key {k!r} is not a layer of this net; use some of {allowed}.")
        elif not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            problems.append(f"layer_alpha[{k!r}] = {v!r}: must be a positive finite number.")
    return problems


def learning_rates(
    arch: Architecture, alpha: float = 1.0, layer_alpha: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-parameter learning rates of the theory (docs/theory.md §1.1 and 2).

    Output layer: alpha * N_L^-(2 - 2 gamma_L). Hidden layer l: alpha * prod_{m=max(1,l-1)}^{L-1}
    N_m^-(1 - 2 gamma_m) * N_L^-(2 - 2 gamma_L) * prod_{m=l+1}^{L} N_m^-1. This reproduces the authors'
    2- and 3-hidden-layer tables exactly and gives the shallow rule alpha N^(2 gamma - 2) for every parameter
    at L = 1. Biases take their layer's rate. ``layer_alpha`` multiplies the rates of layers by name
    (``{"W1": 0.1}``: the first layer ten times slower; ``"C"``: the readout), biases with their layer.
    """
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValidationError(f"alpha must be a positive finite number, got {alpha!r}.")
    layer_alpha = dict(layer_alpha or {})
    ValidationError.raise_if(layer_alpha_problems(layer_alpha, arch.depth), "learning_rates")
    N, g, L = arch.hidden, arch.gammas, arch.depth
    a = [N[m] ** -(1 - 2 * g[m]) for m in range(L)]  # a[m] for layer m+1
    b_L = N[L - 1] ** -(2 - 2 * g[L - 1])
    rates = {}
    for layer in range(1, L + 1):
        r = alpha * b_L
        for m in range(max(1, layer - 1), L):
            r *= a[m - 1]
        for m in range(layer + 1, L + 1):
            r /= N[m - 1]
        rates[f"W{layer}"] = r
        rates[f"b{layer}"] = r
    rates["C"] = rates["c0"] = alpha * b_L
    for layer, factor in layer_alpha.items():
        bias = "c0" if layer == "C" else f"b{layer[1:]}"
        rates[layer] *= factor
        rates[bias] *= factor
    return {k: v for k, v in rates.items() if k in arch.shapes()}


LR_FORMULA = (
    "lr(C) = alpha N_L^-(2-2 gamma_L); lr(W_l) = alpha prod_{m=max(1,l-1)}^{L-1} N_m^-(1-2 gamma_m) "
    "N_L^-(2-2 gamma_L) prod_{m=l+1}^{L} 1/N_m; shallow: alpha N^(2 gamma - 2)"
)


# ---------------------------------------------------------------------------------------------- nn.Module
class ScaledMLP(nn.Module):
    """A 1/N^gamma-scaled MLP as an ordinary ``nn.Module``.

    Parameters
    ----------
    d_in : int
    hidden : int or sequence of int
        Widths N_1..N_L; an int means one hidden layer.
    gammas : float or sequence of float
        gamma_l per hidden layer, in [0.5, 1].
    d_out, activation, bias
        See :class:`Architecture`.
    init : "theory", "paper" or callable
    seed : int
        Seed of the initial parameters (the same for every gamma).
    batchnorm : bool
        BatchNorm (``nn.BatchNorm1d``, affine, running statistics) on every hidden layer's pre-activation, before
        the activation: h_l = s(BN(z_l)). Its parameters take their layer's rate. Trained by the block trainer's
        module engine (``TrainConfig(batchnorm=True)``); the fused step covers nets without it.

    Examples
    --------
    >>> model = ScaledMLP(2, 256, 0.75)
    >>> opt = torch.optim.SGD(model.param_groups(alpha=1.0))
    """

    def __init__(
        self,
        d_in: int,
        hidden,
        gammas,
        d_out: int = 1,
        *,
        activation="tanh",
        bias=False,
        init: str | InitLaw = "theory",
        seed: int = 0,
        dtype=torch.float32,
        batchnorm: bool = False,
    ):
        super().__init__()
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        gammas = (gammas,) * len(hidden) if isinstance(gammas, int | float) else tuple(gammas)
        self.arch = Architecture(d_in, hidden, gammas, d_out, activation, bias)
        self.params = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in init_params(self.arch, init, seed, dtype).items()}
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(n, dtype=dtype) for n in hidden) if batchnorm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norms is None:
            return forward(self.params, self.arch, x)
        p, arch, act = self.params, self.arch, activation_fn(self.arch.activation)
        scales = arch.scales()
        h = x
        for layer in range(1, arch.depth + 1):
            z = h @ p[f"W{layer}"].T
            if layer > 1:
                z = scales[layer - 2] * z
            if arch.bias:
                z = z + p[f"b{layer}"]
            h = act(self.norms[layer - 1](z))
        out = scales[-1] * (h @ p["C"].T)
        return out + p["c0"] if arch.bias else out

    def learning_rates(self, alpha: float = 1.0, layer_alpha: Mapping[str, float] | None = None) -> dict[str, float]:
        """Return the theory's rate of every parameter, by its name in ``named_parameters()``.

        Used by the module engine; BatchNorm's parameters take their layer's rate.
        """
        rates = learning_rates(self.arch, alpha, layer_alpha)
        out = {f"params.{k}": v for k, v in rates.items()}
        for layer, norm in enumerate(self.norms or ()):
            for name, _ in norm.named_parameters():
                out[f"norms.{layer}.{name}"] = rates[f"W{layer + 1}"]
        return out

    def param_groups(self, alpha: float = 1.0, layer_alpha: Mapping[str, float] | None = None) -> list[dict]:
        """Parameter groups with the theory's learning rates (times ``layer_alpha`` per layer), for SGD."""
        rates = learning_rates(self.arch, alpha, layer_alpha)
        groups = [{"params": [p], "lr": rates[name], "name": name} for name, p in self.params.items()]
        for layer, norm in enumerate(self.norms or ()):
            for name, p in norm.named_parameters():
                groups.append({"params": [p], "lr": rates[f"W{layer + 1}"], "name": f"norms.{layer}.{name}"})
        return groups

    def output_weight_norm(self) -> float:
        """(1/N_L) sum_i c_i^2 (summed over outputs): the 2-norm of the measure (docs/theory.md §4)."""
        return float((self.params["C"].detach() ** 2).sum() / self.arch.width)
