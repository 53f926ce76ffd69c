"""Per-layer diagnostics of a block of ScaledMLP members: why a net does or does not learn.

Recorded beside the outputs with ``[record] layer_diagnostics = true`` (``TrainConfig(layer_diagnostics=True)``);
the store declares them as metrics (:func:`ensemble_stats.schema.layer_diagnostic_metrics`). Measured on (at
most ``DIAGNOSTIC_POINTS`` of) the training set:

- ``saturation_l``: the fraction of (input, unit) pairs of hidden layer l whose activation derivative is below 1%
  of its largest value (sigmoid or tanh units in their flat tails; ReLU units that are off);
- ``spread_l`` / ``spread_out``: how much layer l's pre-activations (the outputs) depend on the input: the
  standard deviation over inputs divided by the root mean square, averaged over units (0: every input gives the
  same value, so the layers above see one input);
- ``grad_norm_p``: the Frobenius norm of the training loss's gradient in weight P (W1..WL, C);
- ``update_ratio_p``: lr_P |grad_P| / |P|, the relative change of P that one full-batch step would make.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ensemble_stats import schema

from ._engines import member_losses
from ._models import Architecture, activation_fn

DIAGNOSTIC_POINTS = 1024
"""Most training points the diagnostics use (the first ones): they cost one forward and backward pass over them."""

_FLAT = 0.01  # a unit is saturated where its activation's derivative is below this fraction of its largest value


def _derivative_peak(act) -> float:
    """Return the largest derivative of an activation over [-10, 10] (sigmoid 1/4, tanh 1, ReLU 1)."""
    z = torch.linspace(-10, 10, 4001, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(act(z).sum(), z)
    return float(d.abs().max())


def _spread(z: torch.Tensor) -> torch.Tensor:
    """(B,) input dependence of (B, n, units): sd over the n inputs / rms over them, averaged over units."""
    rms = z.pow(2).mean(1).sqrt()
    sd = z.std(1, correction=0)
    return torch.where(rms > 0, sd / rms.clamp_min(torch.finfo(z.dtype).tiny), torch.zeros_like(rms)).mean(-1)


def layer_diagnostics(
    params: Mapping[str, torch.Tensor],
    arch: Architecture,
    scales: Sequence[torch.Tensor | float],
    lr: Mapping[str, torch.Tensor | float],
    x: torch.Tensor,
    y: torch.Tensor,
    labels: torch.Tensor | None,
    loss: str,
) -> dict[str, torch.Tensor]:
    """Measure every member's per-layer diagnostics (see the module's docstring).

    Parameters
    ----------
    params : W1..WL, C (and biases), each with a leading member axis B
    arch : the members' :class:`Architecture` (the widths; gamma only through ``scales``)
    scales : per hidden layer after the first and the output, the members' 1/N^gamma factors, (B, 1, 1) or floats
    lr : the members' learning rate per parameter, (B, 1, ...) or floats
    x, y, labels : training inputs (n, d_in), targets (n, outputs), class labels (n,) or None
    loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    name -> (B,) values, the names of :func:`ensemble_stats.schema.layer_diagnostic_metrics` (``arch.depth``)
    """
    act = activation_fn(arch.activation)
    flat = _FLAT * _derivative_peak(act)
    x, y = x[:DIAGNOSTIC_POINTS], y[:DIAGNOSTIC_POINTS]
    labels = labels[:DIAGNOSTIC_POINTS] if labels is not None else None
    weights = [*(f"W{layer}" for layer in range(1, arch.depth + 1)), "C"]
    out: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(k in weights) for k, v in params.items()}
        h = x
        for layer in range(1, arch.depth + 1):
            z = h @ leaves[f"W{layer}"].transpose(-1, -2)
            if layer > 1:
                z = scales[layer - 2] * z
            if arch.bias:
                z = z + leaves[f"b{layer}"][:, None, :]
            pre = z.detach().requires_grad_(True)
            h_pre = act(pre)
            (slope,) = torch.autograd.grad(h_pre.sum(), pre)
            out[f"saturation_{layer}"] = (slope.abs() < flat).to(x.dtype).mean(dim=(-2, -1))
            out[f"spread_{layer}"] = _spread(pre.detach())
            h = act(z)
        o = scales[-1] * (h @ leaves["C"].transpose(-1, -2))
        if arch.bias:
            o = o + leaves["c0"][:, None, :]
        out["spread_out"] = _spread(o.detach())
        grads = torch.autograd.grad(member_losses(o, y, labels, loss).sum(), [leaves[k] for k in weights])
    for name, g in zip(weights, grads, strict=True):
        p = params[name].detach()
        gnorm = g.flatten(1).norm(dim=1)
        rate = torch.as_tensor(lr[name], dtype=x.dtype, device=x.device).reshape(-1)
        out[f"grad_norm_{name.lower()}"] = gnorm
        out[f"update_ratio_{name.lower()}"] = rate * gnorm / p.flatten(1).norm(dim=1).clamp_min(1e-30)
    return {k: out[k].detach() for k in schema.layer_diagnostic_metrics(arch.depth)}
