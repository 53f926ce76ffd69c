"""The seed paper's 1/N^gamma-scaled convolutional net for CIFAR-10, trained through the module engine.

Architecture (docs/theory.md §1.5; the authors' code sets what is fixed here): ``convs`` 3x3 convolutions of
``channels`` channels, each output multiplied by channels^-gamma_conv, each followed by BatchNorm (optional) and
ReLU, a 2x2 max-pool after every second convolution; then one fully connected hidden layer of N units,
h = s(fan_in^-1/2 W flat + b), dropout, and the readout g = N^-gamma C h + c0. Initialisation as the authors':
every weight N(0, 1), biases 0, BatchNorm's affine parameters (1, 0).

Rates (per layer, :meth:`ScaledConvNet.learning_rates`): the deep MLP rule of ``learning_rates`` with the
channel counts as the widths of the convolutional layers: layers (conv_1 .. conv_L, fc) have widths
(channels, ..., channels, N) and exponents (gamma_conv, ..., gamma_conv, gamma); a convolution's BatchNorm and
bias take its rate, the readout alpha N^(2 gamma - 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ensemble_stats.errors import ValidationError

from ._models import Architecture, activation_fn, generator_seed, learning_rates

__all__ = ["ScaledConvNet"]


class ScaledConvNet(nn.Module):
    """A 1/N^gamma-scaled CNN: ``convs`` scaled convolutions, one hidden layer of ``width`` units, a readout.

    Parameters
    ----------
    width, gamma : the hidden layer's N and its exponent (the swept coordinates)
    in_channels, image_size, classes : the input (C, H, W = image_size) and the number of outputs
    channels, convs : channels of every convolution, and how many (even: a max-pool after every second)
    gamma_conv : the convolutions' exponent (default: ``gamma``)
    batchnorm, dropout : BatchNorm after each convolution; dropout probability on the hidden layer
    activation : of the hidden layer (the convolutions use ReLU)
    seed : the initial parameters are a function of the seed (and the shapes) only
    """

    def __init__(
        self,
        width: int,
        gamma: float,
        *,
        in_channels: int = 3,
        image_size: int = 32,
        classes: int = 10,
        channels: int = 64,
        convs: int = 8,
        gamma_conv: float | None = None,
        batchnorm: bool = True,
        dropout: float = 0.5,
        activation: str = "relu",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        problems = []
        if convs < 2 or convs % 2:
            problems.append(f"convs={convs}: an even number >= 2 (a max-pool follows every second convolution).")
        side = image_size // 2 ** (convs // 2) if convs >= 2 else 0
        if side < 1:
            problems.append(
                f"image_size={image_size} is too small for {convs // 2} max-pools; use fewer convolutions or larger "
                "images."
            )
        if not 0 <= dropout < 1:
            problems.append(f"dropout={dropout}: a probability in [0, 1).")
        ValidationError.raise_if(problems, "ScaledConvNet")
        self.width, self.gamma = int(width), float(gamma)
        self.gamma_conv = float(gamma if gamma_conv is None else gamma_conv)
        self.channels, self.n_convs, self.activation = channels, convs, activation
        gen = torch.Generator().manual_seed(generator_seed(seed, width, channels))
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = in_channels
        for _ in range(convs):
            conv = nn.Conv2d(c_in, channels, 3, padding=1, dtype=dtype)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=dtype))
                conv.bias.zero_()
            self.convs.append(conv)
            self.norms.append(nn.BatchNorm2d(channels, dtype=dtype) if batchnorm else nn.Identity())
            c_in = channels
        self.fan_in = channels * side * side
        self.fc = nn.Linear(self.fan_in, width, dtype=dtype)
        self.readout = nn.Linear(width, classes, dtype=dtype)
        with torch.no_grad():
            for layer in (self.fc, self.readout):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=dtype))
                layer.bias.zero_()
        self.drop = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) images, or (n, C*H*W) flattened ones, to (n, classes) raw outputs."""
        if x.ndim == 2:
            side = math.isqrt(x.shape[1] // self.convs[0].in_channels)
            x = x.view(x.shape[0], self.convs[0].in_channels, side, side)
        h = x
        scale = self.channels**-self.gamma_conv
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = torch.relu(norm(conv(h) * scale))
            if i % 2 == 1:
                h = self.pool(h)
        h = activation_fn(self.activation)(self.fc(h.flatten(1)) * self.fan_in**-0.5)
        return self.readout(self.drop(h)) * self.width**-self.gamma

    def architecture(self) -> Architecture:
        """Return the layer widths and exponents the rate rule uses.

        (channels x convs, N), (gamma_conv x convs, gamma).
        """
        hidden = (*([self.channels] * self.n_convs), self.width)
        gammas = (*([self.gamma_conv] * self.n_convs), self.gamma)
        return Architecture(self.convs[0].in_channels, hidden, gammas, self.readout.out_features, "relu", True)

    def learning_rates(self, alpha: float = 1.0, layer_alpha: Mapping[str, float] | None = None) -> dict[str, float]:
        """Return the per-parameter rates (see the module docstring).

        ``layer_alpha`` keys are ``W1`` .. ``W{convs}`` (convolutions), ``W{convs + 1}`` (the hidden layer) and
        ``C`` (readout).
        """
        r = learning_rates(self.architecture(), alpha, layer_alpha)
        out = {}
        for i in range(self.n_convs):
            for name, _ in self.convs[i].named_parameters():
                out[f"convs.{i}.{name}"] = r[f"W{i + 1}"]
            for name, _ in self.norms[i].named_parameters():
                out[f"norms.{i}.{name}"] = r[f"W{i + 1}"]
        out["fc.weight"] = out["fc.bias"] = r[f"W{self.n_convs + 1}"]
        out["readout.weight"] = out["readout.bias"] = r["C"]
        return out
