"""The empirical neural tangent kernel and parameter displacement, recorded beside the outputs.

``Theta(x, x')_{ab} = sum_p df_a(x)/dp df_b(x')/dp`` over every trainable parameter p (no learning-rate
weighting), on the store's NTK sub-grid, by ``torch.func``: ``jacrev`` of one member's forward pass, ``vmap``-ed
over the members of a block in chunks. The displacement of each parameter tensor is ||theta_t - theta_0|| /
||theta_0||. See docs/theory.md ("Lazy and feature learning") for what they measure and docs/store.md for the
variables and what they cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

from ensemble_stats import schema
from ensemble_stats.errors import ValidationError

from ._records import Block, BlockCollector, BlockModel

__all__ = ["NTKCollector", "empirical_ntk", "model_ntk", "relative_displacement", "shallow_ntk"]


def _kernel_of(jac: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
    """(n, n, O, O) kernel from per-parameter Jacobians (n, O, *shape)."""
    outputs = next(iter(jac.values())).shape[1]
    J = torch.cat([j.reshape(n * outputs, -1) for j in jac.values()], dim=1)  # (n O, parameters)
    return (J @ J.T).reshape(n, outputs, n, outputs).permute(0, 2, 1, 3)


def empirical_ntk(
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    apply: Callable,
    x: torch.Tensor,
    *,
    chunk_size: int | None = 4,
) -> torch.Tensor:
    """Return the empirical NTK of every member of a block.

    Parameters
    ----------
    params, buffers : name -> (member, ...) tensors (see :class:`BlockModel`)
    apply : ``apply(member_params, member_buffers, x) -> (n, O)``
    x : (n, d_in) inputs
    chunk_size : members per ``vmap`` pass (memory: chunk_size x n O x parameters Jacobian entries)

    Returns
    -------
    (member, n, n, O, O) tensor
    """
    params = {k: v.detach() for k, v in params.items()}

    def one(p, b):
        return _kernel_of(jacrev(lambda q: apply(q, b, x))(p), x.shape[0])

    return vmap(one, chunk_size=chunk_size)(params, dict(buffers))


def shallow_ntk(params: Mapping[str, torch.Tensor], scale: torch.Tensor, x: torch.Tensor, arch) -> torch.Tensor:
    """Return the empirical NTK of a one-hidden-layer ScaledMLP block in closed form: (member, n, n, O, O).

    With h = s(W x + b), D = s'(W x + b) and the output scale k = N^-gamma (``scale``, (member,)):
    Theta_ab(x, x') = delta_ab (k^2 h(x).h(x') [+ 1]) + k^2 (x.x' [+ 1]) sum_i C_ai C_bi D_i(x) D_i(x'), the bracketed
    terms with biases. P^2 O^2 N operations per member, against P^2 O^2 (d + 1) N for the Jacobian product of
    :func:`empirical_ntk`, which it equals (tests compare them).
    """
    from ._models import activation_fn

    W, C = params["W1"].detach(), params["C"].detach()  # (B, N, d), (B, O, N)
    z = torch.einsum("bnd,pd->bpn", W, x)
    if arch.bias:
        z = z + params["b1"].detach()[:, None, :]
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        h = activation_fn(arch.activation)(z)
        (dz,) = torch.autograd.grad(h.sum(), z)
    h = h.detach()
    B, n, O = W.shape[0], x.shape[0], C.shape[1]  # noqa: E741
    k2 = (scale.reshape(B) ** 2)[:, None, None]
    gram = x @ x.T + (1.0 if arch.bias else 0.0)
    readout = k2 * torch.bmm(h, h.transpose(1, 2)) + (1.0 if arch.bias else 0.0)  # (B, n, n)
    E = (dz[:, :, None, :] * C[:, None, :, :]).reshape(B, n * O, -1)  # (B, n O, N): D_i(x) C_ai
    inner = torch.bmm(E, E.transpose(1, 2)).reshape(B, n, O, n, O).permute(0, 1, 3, 2, 4)
    eye = torch.eye(O, dtype=x.dtype, device=x.device)
    return readout[..., None, None] * eye + (k2 * gram)[..., None, None] * inner


def model_ntk(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return the empirical NTK (n, n, O, O) of one ``nn.Module`` over its trainable parameters (buffers held fixed)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())

    def f(p):
        out = functional_call(model, (p, buffers), (x,))
        return out.reshape(x.shape[0], -1)

    return _kernel_of(jacrev(f)(params), x.shape[0])


def relative_displacement(
    params: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor], layers, *, member_axis: bool = True
) -> torch.Tensor:
    """||theta_t - theta_0|| / ||theta_0|| per parameter tensor in ``layers``: (member, layer), or (layer,)."""
    cols = []
    for name in layers:
        p, p0 = params[name].detach(), initial[name]
        dims = tuple(range(1, p.ndim)) if member_axis else tuple(range(p.ndim))
        cols.append(torch.linalg.vector_norm(p - p0, dim=dims) / torch.linalg.vector_norm(p0, dim=dims))
    return torch.stack(cols, dim=-1)


def _check_layers(layers, names) -> None:
    missing = [n for n in layers if n not in names]
    if missing:
        raise ValidationError(
            f"the store records the displacement of parameters {list(layers)}, but the model has no {missing}; its "
            f"parameters are {sorted(names)}. Create the store with layers= among these."
        )


class NTKCollector(BlockCollector):
    """Record the empirical NTK on the store's NTK sub-grid and the per-layer displacement, for the block trainer.

    The store must declare them (``EnsembleStore.create(..., ntk_points=..., layers=...)``, or ``[record]`` in
    a sweep config). Every ``every``-th scheduled record (and the last) gets the NTK; the others hold NaN there.
    The displacement is recorded at every record, against the parameters at the start of training.

    Parameters
    ----------
    every : record the NTK at records 0, every, 2 every, ... and the last
    chunk_size : members per ``vmap`` pass of the Jacobian (bounds its memory)
    autodiff : always use the Jacobian product (:func:`empirical_ntk`); by default one-hidden-layer ScaledMLP
        blocks use the closed form (:func:`shallow_ntk`), d + 1 times fewer operations, same values
    """

    def __init__(self, every: int = 1, chunk_size: int | None = 4, autodiff: bool = False):
        if not (isinstance(every, int) and every >= 1):
            raise ValidationError(f"every must be an integer >= 1, got {every!r}.")
        self.every, self.chunk_size, self.autodiff = every, chunk_size, autodiff
        self._points: tuple[int, ...] = ()
        self._layers: tuple[str, ...] = ()
        self._initial: dict[str, torch.Tensor] = {}
        self._schedule = np.zeros(0, dtype=np.int64)

    def on_block_start(self, block: Block) -> None:
        spec = block.store.spec
        self._points, self._layers, self._schedule = spec.ntk_points, spec.layers, np.asarray(block.schedule)
        if not (self._points or self._layers):
            raise ValidationError(
                "NTKCollector: the store declares no NTK sub-grid and no layers; create it with "
                "EnsembleStore.create(..., ntk_points='all' or [indices], layers=['W1', 'C'])."
            )

    def on_train_start(self, model: BlockModel) -> None:
        _check_layers(self._layers, model.params)
        self._initial = {k: model.params[k].detach().clone() for k in self._layers}

    def record_fields(self, step: int, model: BlockModel) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        if self._layers:
            out[schema.DISPLACEMENT] = relative_displacement(model.params, self._initial, self._layers)
        j = int(np.searchsorted(self._schedule, step))
        if self._points and (j % self.every == 0 or j == len(self._schedule) - 1):
            x = model.grid[list(self._points)]
            arch = model.architecture
            if arch is not None and arch.depth == 1 and not self.autodiff:
                out[schema.NTK] = shallow_ntk(model.params, model.buffers["scale0"], x, arch)
            else:
                out[schema.NTK] = empirical_ntk(model.params, model.buffers, model.apply, x, chunk_size=self.chunk_size)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every}

    def close(self) -> None:
        self._initial = {}
