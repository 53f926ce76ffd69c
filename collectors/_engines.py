"""How a block's members are stepped.

The ScaledMLP engine (hand-fused step, autograd otherwise) and the module engine (any ``nn.Module`` from a factory,
vectorised over members with ``torch.func``).

The trainer's loop (``_trainer._train``) sees only the engine's interface: the live stacked parameters, the
forward pass of every member, one optimizer step with frozen members left alone, and per-member scalars.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

from ensemble_stats import schema
from ensemble_stats.errors import ValidationError

from ._fused import fused_applies, mlp_forward, mlp_step
from ._models import forward

ModelFactory = Callable[[int, int, float], torch.nn.Module]
"""``make_model(seed, width, gamma) -> nn.Module``: one member, with its initial parameters."""


def member_losses(out: torch.Tensor, y: torch.Tensor, labels, loss: str) -> torch.Tensor:
    """Per-member loss (B,) of outputs (B, n, O): 1/2 the mean squared error, or the mean cross-entropy."""
    if loss == "mse":
        return 0.5 * ((out - y) ** 2).mean(dim=(-2, -1))
    B, n, O = out.shape  # noqa: E741
    return F.cross_entropy(out.reshape(B * n, O), labels.repeat(B), reduction="none").view(B, n).mean(-1)


def _broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


class MLPEngine:
    """ScaledMLP members.

    The hand-written step of ``_fused`` while every member is live, autograd otherwise (frozen members, callable
    activations, biases at a rate other than their layer's).
    """

    def __init__(self, arch, params, lr, scales, config, width: int):
        self.arch, self.params, self.lr, self.scales = arch, params, lr, scales
        self.config, self.width = config, width
        self.fast = fused_applies(arch, lr)
        self._ws: dict[str, torch.Tensor] = {}
        self.onepass = None
        self._kept = None  # (keep mask, its version, the rates masked by it)
        B = params["C"].shape[0]
        self.buffers = {f"scale{layer}": s.view(B) for layer, s in enumerate(scales)}
        self.architecture = arch

    def apply(self, p, b, x):
        """One member's forward pass (see :class:`BlockModel`)."""
        return forward(p, self.arch, x, [b[f"scale{layer}"] for layer in range(self.arch.depth)])

    def use_onepass(self, batch: int) -> None:
        """Step with the one-pass kernel (``_onepass``; the config admitted the net); ``batch``: every minibatch's size."""
        from ._onepass import OnePass

        cfg = self.config
        self.onepass = OnePass(
            self.params, self.arch, self.scales[-1], self.lr, cfg.loss, cfg.output_weight_decay, self.width, batch,
            cfg.precision,
        )  # fmt: skip

    def _rates(self, keep: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Return the rates, zero for the members not in ``keep`` (recomputed only when ``keep`` changed: no sync)."""
        if keep is None:
            return self.lr
        if self._kept is None or self._kept[0] is not keep or self._kept[1] != keep._version:
            self._kept = (keep, keep._version, {k: v * _broadcast(keep, v).to(v.dtype) for k, v in self.lr.items()})
        return self._kept[2]

    def settle(self) -> None:
        """Apply a pending one-pass update: the parameters are then those after every step taken."""
        if self.onepass is not None:
            with torch.no_grad():
                self.onepass.flush()

    def replayed(self) -> None:
        """Note that a window of steps was replayed as a CUDA graph (the Python side of its steps did not run)."""
        if self.onepass is not None:
            self.onepass.pending = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.settle()
        if isinstance(self.arch.activation, str) and not torch.is_grad_enabled():  # the records: the fused pass
            return mlp_forward(self.params, self.arch, self.scales, x)
        return forward(self.params, self.arch, x, self.scales)

    def _output_weight_norm(self) -> torch.Tensor:
        """(1/N) sum_i c_i^2 per member: the recorded scalar and the 2-norm regularizer's term."""
        return (self.params["C"] ** 2).sum(dim=(-2, -1)) / self.width

    def scalars(self) -> dict[str, torch.Tensor]:
        self.settle()
        return {schema.OUTPUT_WEIGHT_NORM: self._output_weight_norm()}

    def diagnostics(self, x, y, labels) -> dict[str, torch.Tensor]:
        """Every member's per-layer diagnostics on the training set (:func:`collectors.layer_diagnostics`)."""
        from ._diagnostics import layer_diagnostics

        self.settle()
        return layer_diagnostics(self.params, self.arch, self.scales, self.lr, x, y, labels, self.config.loss)

    def _losses(self, out, y, labels) -> torch.Tensor:
        losses = member_losses(out, y, labels, self.config.loss)
        if self.config.output_weight_decay:
            losses = losses + self.config.output_weight_decay * self._output_weight_norm()
        return losses

    def step(
        self, xb, yb, lb, alive: torch.Tensor, every_alive: bool = False, defer: bool = False
    ) -> tuple[torch.Tensor, bool | None]:
        """One SGD step of every live member whose loss is finite.

        Returns the losses (B,) before the step and what is known of them: True, every one is finite (the fused
        step checked: the caller need not read them back); False, unchecked (the caller checks); None, applied
        unchecked (``defer``: the fused step did not sync, and a member whose loss is not finite now has
        non-finite parameters: the caller finds it from the losses before it records). ``every_alive``: the
        caller knows no member is frozen (a host flag: reading ``alive`` back would cost a device sync per step).
        """
        cfg = self.config
        if self.fast and every_alive and self.onepass is not None:
            with torch.no_grad():
                losses = self.onepass.step(xb, yb, lb)
            if defer:
                return losses, None
            if math.isfinite(float(losses.sum())):
                return losses, True
            self.onepass.discard()  # this step is taken below, the non-finite members left alone
        elif self.fast:
            self.settle()
            keep = None if every_alive else alive  # frozen members: the fused step leaves them be
            with torch.no_grad():
                losses, applied = mlp_step(
                    self.params, self.arch, self.scales, xb, yb, lb, cfg.loss, self._rates(keep),
                    cfg.output_weight_decay, self.width, self._ws, check=not defer, keep=keep,
                )  # fmt: skip
            if applied:  # updated in place; otherwise nothing was changed: the step below handles it
                return losses, None if defer else True
        self.settle()
        losses = self._losses(self.forward(xb), yb, lb)
        keep = alive & torch.isfinite(losses)
        every = bool(keep.all())
        grads = torch.autograd.grad(
            (losses if every else torch.where(keep, losses, 0.0)).sum(), list(self.params.values())
        )
        with torch.no_grad():
            for (name, p), g in zip(self.params.items(), grads, strict=True):
                if every:
                    p.addcmul_(self.lr[name], g, value=-1.0)  # p -= lr * g in one pass
                else:  # frozen members keep their parameters (their gradients may be NaN)
                    p.sub_(torch.where(_broadcast(keep, p), self.lr[name] * g, 0.0))
        return losses.detach(), False


def module_rates(module: torch.nn.Module, alpha: float, layer_alpha: Mapping[str, float]) -> dict[str, float]:
    """Per-parameter learning rates of a member.

    Its ``learning_rates(alpha, layer_alpha)`` if it defines one (ScaledMLP, ScaledConvNet), else ``alpha`` for
    every parameter.
    """
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    fn = getattr(module, "learning_rates", None)
    if fn is None:
        if layer_alpha:
            raise ValidationError(
                f"layer_alpha={dict(layer_alpha)} needs per-layer rates, but {type(module).__name__} has no "
                "learning_rates(alpha, layer_alpha) method; define one or drop layer_alpha."
            )
        return dict.fromkeys(names, float(alpha))
    rates = dict(fn(alpha, layer_alpha))
    missing = [n for n in names if n not in rates]
    if missing:
        raise ValidationError(
            f"{type(module).__name__}.learning_rates() gives no rate for parameters {missing}; it must name every "
            "trainable parameter (names of named_parameters())."
        )
    return {n: float(rates[n]) for n in names}


class ModuleEngine:
    """Members built by a factory, stepped with ``vmap(grad(...))`` over ``stack_module_state``.

    One vectorised pass per gamma group (members of one gamma share a structure).

    BatchNorm keeps per-member running statistics (the stacked buffers are updated in place by each member's
    batch, as in a per-seed loop); dropout draws independently per member (``vmap(randomness="different")``).
    The grid and the recorded training loss are evaluated in eval mode.
    """

    def __init__(self, modules: Sequence[torch.nn.Module], gammas: Sequence[float], config, device, dtype):
        self.config = config
        self.groups: list[tuple[slice, torch.nn.Module]] = []
        params: dict[str, list[torch.Tensor]] = {}
        buffers: dict[str, list[torch.Tensor]] = {}
        rates: dict[str, list[float]] = {}
        start = 0
        for g in dict.fromkeys(gammas):
            members = [m.to(device=device, dtype=dtype) for m, mg in zip(modules, gammas, strict=True) if mg == g]
            shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in members}
            if len(shapes) != 1:
                raise ValidationError(
                    f"the factory's models at gamma={g} differ in their parameters or buffers; every seed of one "
                    "gamma must build the same architecture."
                )
            p, b = stack_module_state(members)
            for k, v in p.items():
                params.setdefault(k, []).append(v.detach())
            for k, v in b.items():
                buffers.setdefault(k, []).append(v)
            for m in members:
                for k, r in module_rates(m, config.alpha, dict(config.layer_alpha)).items():
                    rates.setdefault(k, []).append(r)
            base = copy.deepcopy(members[0]).to("meta")
            self.groups.append((slice(start, start + len(members)), base))
            start += len(members)
        if any(len(v) != len(self.groups) for v in params.values()):
            raise ValidationError("the factory's models differ in their parameter names across gammas.")
        self.params = {k: torch.cat(v).requires_grad_(False) for k, v in params.items()}
        self.buffers = {k: torch.cat(v) for k, v in buffers.items()}
        self.lr = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in rates.items()}
        self.architecture = None

    def apply(self, p, b, x):
        """One member's forward pass in eval mode (see :class:`BlockModel`)."""
        base = self.groups[0][1]
        base.eval()
        return functional_call(base, (p, b), (x,))

    def _each(self, fn, train: bool):
        """``fn(base, slice)`` per gamma group with the base module in train or eval mode; results concatenated."""
        outs = []
        for sl, base in self.groups:
            base.train(train)
            outs.append(fn(base, sl))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def one(base, sl):
            p = {k: v[sl] for k, v in self.params.items()}
            b = {k: v[sl] for k, v in self.buffers.items()}
            return vmap(lambda pp, bb: functional_call(base, (pp, bb), (x,)), randomness="different")(p, b)

        with torch.no_grad():
            return torch.cat(self._each(one, False))

    def scalars(self) -> dict[str, torch.Tensor]:
        return {}

    def step(
        self, xb, yb, lb, alive: torch.Tensor, every_alive: bool = False, defer: bool = False
    ) -> tuple[torch.Tensor, bool]:
        """One SGD step of every live member whose loss is finite; the losses (B,) before it, and False (unchecked)."""
        loss_name = self.config.loss

        def one(base, sl):
            def loss_fn(p, b):
                out = functional_call(base, (p, b), (xb,))
                val = member_losses(out[None], yb, lb, loss_name)[0]
                return val, val

            p = {k: v[sl] for k, v in self.params.items()}
            b = {k: v[sl] for k, v in self.buffers.items()}  # views: BatchNorm updates them in place
            return vmap(grad(loss_fn, has_aux=True), randomness="different")(p, b)

        results = self._each(one, True)
        losses = torch.cat([r[1] for r in results])
        keep = alive & torch.isfinite(losses)
        with torch.no_grad():
            for name, p in self.params.items():
                g = torch.cat([r[0][name] for r in results])
                lr = _broadcast(self.lr[name], p)
                p.sub_(torch.where(_broadcast(keep, p), lr * g, 0.0))
        return losses, False
