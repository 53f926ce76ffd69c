"""The ScaledMLP block's SGD step written by hand: forward and backward of every member as batched GEMMs.

Same arithmetic as autograd on ``_models.forward`` + ``member_losses`` (tests compare every path against
torch.optim.SGD in float64), without autograd's graph, its gradient tensors and the separate update pass:

- activations are laid out (B, N, n) (a column per point), so every product is one batched GEMM with no
  transposing copy, and the first layer, whose input the members share, is one (B N, d) x (d, n) GEMM;
- each weight update is a GEMM that accumulates into the weights in place (``baddbmm_``), with the learning
  rate folded into its small operand, so no (B, N_l, N_(l-1)) gradient is ever materialised;
- tanh and sigmoid are one sigmoid pass forward and one ``sigmoid_backward`` pass back (``SIGMOID_FAMILY``);
- every (B, N, n) tensor lives in a workspace reused across steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._models import ACTIVATION_BACKWARD, activation_fn

# tanh(z) = 2 sigmoid(2z) - 1 and sigmoid(z): h = a sigmoid(k z) + c. The step keeps S = sigmoid(k z); for the
# last hidden layer it folds a, k, c into the tiny (B, O, n) readout factors, so its (B, N, n) tensors see one
# sigmoid and one sigmoid_backward (torch's CPU tanh kernel is also ~4x slower than its sigmoid kernel).
SIGMOID_FAMILY = {"tanh": (2.0, 2.0, -1.0), "sigmoid": (1.0, 1.0, 0.0)}  # activation: (a, k, c)


def fused_applies(arch, lr) -> bool:
    """Whether :func:`mlp_step` handles this architecture.

    A named activation, and each bias (if any) at its layer's rate (``learning_rates`` gives a layer one rate;
    ``layer_alpha`` keeps it so).
    """
    if not isinstance(arch.activation, str):
        return False
    return not arch.bias or all(
        torch.equal(lr[f"b{layer}"].view(-1), lr[f"W{layer}"].view(-1)) for layer in range(1, arch.depth + 1)
    )


def workspace(ws: dict, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """Return a buffer reused across steps: a fresh multi-MB tensor per step costs page faults comparable to a GEMM."""
    t = ws.get(name)
    if t is None or t.shape != shape:
        t = ws[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return t


def mlp_step(
    params, arch, scales, x, y, labels, loss: str, lr, weight_decay: float, width: int, ws: dict, check: bool = True,
    keep: torch.Tensor | None = None,
):  # fmt: skip
    """One SGD step of every member of a ScaledMLP block, in place.

    Returns the members' losses (B,) before it and whether it was applied.

    Parameters
    ----------
    params : W1..WL (B, N_l, N_(l-1)), C (B, O, N_L), biases b_l (B, N_l) and c0 (B, O) if ``arch.bias``
    scales : per-layer scales N_l^-gamma_l, tensors (B, 1, 1), l = 1..L
    x, y, labels : the minibatch shared by the members: (n, d), (n, O), (n,) or None
    lr : per-parameter learning rates, tensors broadcastable against the parameters
    ws : the workspace dict, kept by the caller across steps

    The update is applied only if the losses' sum is finite; otherwise nothing is changed (the caller steps the
    members whose loss is finite another way). ``check=False`` applies it without looking (no device sync): a
    member whose loss is not finite gets non-finite parameters, the others are untouched by it (every product is
    per member), and the caller finds it from the losses later.

    ``keep`` (B,) bool: step only these members; the others (frozen after a divergence) get no update, their
    outputs' gradient and readout update zeroed and ``lr`` zero for them (the caller's). Their parameters stay as
    they are wherever their values are finite; a frozen member whose values overflowed may turn NaN (its records
    are non-finite from its divergence on either way). Only the kept members' losses are checked.
    """
    L, act = arch.depth, arch.activation
    W1, C = params["W1"], params["C"]
    a, k, c = SIGMOID_FAMILY.get(act, (1.0, 1.0, 0.0))
    out, S, Z, U = _forward(params, arch, scales, x, ws)
    H, scale = S[-1], scales[-1]
    losses, G = loss_and_gradient(out, y, labels, loss, C, weight_decay, width)
    if keep is not None:  # the frozen members' losses may be non-finite: only the others count
        G = torch.where(keep[:, None, None], G, 0.0)
    total = losses.sum() if keep is None else torch.where(keep, losses, 0.0).sum()
    if check and not math.isfinite(float(total)):  # one reduction: a non-finite sum: some loss is one
        return losses, False

    # backward, top down. Gs = dloss/d(C h_L) (B, O, n): tiny, so scales and a, k fold in here
    Gs = (G * scale).transpose(1, 2)
    dC = torch.bmm(Gs, H.transpose(1, 2))  # (B, O, N_L)
    if c:
        dC = dC.mul_(a).add_(Gs.sum(-1, keepdim=True), alpha=c)
    if weight_decay:
        dC = dC + (2 * weight_decay / width) * C
    if keep is not None:  # 0 * inf: a frozen member's overflowed activations must not reach its readout
        dC = torch.where(keep[:, None, None], dC, 0.0)
    if L == 1:
        _first_layer_update(params, arch, x, Gs * (lr["W1"] * (a * k)), S[0], Z[0], ws)
    else:
        dZ = torch.bmm(C.transpose(1, 2), Gs * (a * k), out=workspace(ws, f"dH{L}", H.shape, W1))
        dZ = _activation_backward(act, dZ, S[-1], Z[-1])
        for layer in range(L, 1, -1):
            W, s, u = params[f"W{layer}"], scales[layer - 2], U[layer - 2]
            # dh_(l-1) = s W_l^T dz_l, taken before W_l moves, and dz_(l-1) from it while S, Z are intact
            dH = torch.bmm(W.transpose(1, 2), dZ, out=workspace(ws, f"dH{layer - 1}", u.shape, W1))
            dZ_below = _activation_backward(act, dH.mul_(s * (a * k)), S[layer - 2], Z[layer - 2])
            if arch.bias:
                params[f"b{layer}"].sub_(lr[f"b{layer}"] * dZ.sum(2))
            # W_l -= lr s dz_l h_(l-1)^T, with lr s folded into h_(l-1) (no longer needed: overwritten)
            W.baddbmm_(dZ, torch.mul(u, lr[f"W{layer}"] * s, out=u).transpose(1, 2), alpha=-1.0)
            dZ = dZ_below
        if arch.bias:
            params["b1"].sub_(lr["b1"] * dZ.sum(2))
        W1.baddbmm_(dZ, lr["W1"] * x, alpha=-1.0)
    if arch.bias:
        params["c0"].sub_(lr["c0"] * G.sum(1))
    C.sub_(lr["C"] * dC)
    return losses, True


def loss_and_gradient(out, y, labels, loss: str, C, weight_decay: float, width: int):
    """Every member's loss (B,) and its gradient with respect to the outputs ``out`` (B, n, O).

    ``weight_decay`` adds the readout's 2-norm penalty wd (1/N) sum c_i^2 to the loss (its gradient is the
    caller's: it is C's, not the outputs').
    """
    B, n, O = out.shape  # noqa: E741
    if loss == "mse":
        r = out - y
        losses = 0.5 * (r * r).mean(dim=(-2, -1))
        G = r / (n * O)
    else:
        logp = torch.log_softmax(out, -1)
        losses = -logp.gather(-1, labels.expand(B, n)[..., None])[..., 0].mean(-1)
        G = (logp.exp() - F.one_hot(labels, O).to(out.dtype)) / n
    if weight_decay:
        losses = losses + weight_decay * (C * C).sum(dim=(-2, -1)) / width
    return losses, G


def mlp_forward(params, arch, scales, x: torch.Tensor) -> torch.Tensor:
    """Every member's outputs (B, n, O) on the shared inputs ``x`` (n, d).

    The step's forward pass, without autograd (the records' evaluation; tanh costs one sigmoid pass).
    """
    return _forward(params, arch, scales, x, None)[0]


def _forward(params, arch, scales, x, ws):
    """Return the forward pass in column layout.

    Outputs (B, n, O) and, per layer, S[l] = sigmoid(k z_l) for the sigmoid family (relu(z_l) for relu, phi(z_l)
    otherwise), Z[l] (the pre-activation, where S is not in its place) and U[l] = h_l materialised as the next
    layer's input (l < L). ``ws``: the workspace, or None.
    """
    L, n, act = arch.depth, x.shape[0], arch.activation
    W1, C = params["W1"], params["C"]
    B, _, d = W1.shape
    a, k, c = SIGMOID_FAMILY.get(act, (1.0, 1.0, 0.0))
    family, phi = act in SIGMOID_FAMILY, activation_fn(act)
    buffer = (
        (lambda name, shape: workspace(ws, name, shape, W1))
        if ws is not None
        else (lambda name, shape: torch.empty(shape, dtype=W1.dtype, device=W1.device))
    )
    S, Z, U = [], [], []  # kept for the backward pass only (ws given): evaluation holds one layer at a time
    u = h = None
    for layer in range(1, L + 1):
        W = params[f"W{layer}"]
        N = W.shape[1]
        z = buffer(f"Z{layer}", (B, N, n))
        if layer == 1:  # the members share x: one (B N1, d) x (d, n) GEMM, faster than B small ones
            if arch.bias:
                z.copy_(params["b1"][:, :, None].expand(B, N, n))
            z.view(B * N, n).addmm_(W1.view(B * N, d), x.T, beta=k if arch.bias else 0.0, alpha=k)
        else:
            torch.bmm(W, u, out=z).mul_(scales[layer - 2] * k)
            if arch.bias:
                z.add_(params[f"b{layer}"][:, :, None], alpha=k)
        if family:
            h = torch.sigmoid(z, out=z)
        elif act == "relu":
            h = torch.relu_(z)
        else:
            h = phi(z)
        if layer < L:
            u = torch.mul(h, a, out=buffer(f"U{layer}", h.shape)).add_(c) if c or a != 1 else h
        if ws is not None:
            S.append(h)
            Z.append(z)
            if layer < L:
                U.append(u)
    out = torch.bmm(C, h)  # (B, O, n)
    if c:
        out = out.mul_(a).add_(C.sum(-1, keepdim=True), alpha=c)
    out = out.transpose(1, 2) * scales[-1]  # (B, n, O)
    if arch.bias:
        out = out + params["c0"][:, None, :]
    return out, S, Z, U


def _activation_backward(act: str, dH: torch.Tensor, S: torch.Tensor, Z: torch.Tensor, out=None) -> torch.Tensor:
    """Compute dz = dh * phi'(z), written into ``out`` (default: dH itself) for the sigmoid family and relu.

    Other activations return a new tensor; for the sigmoid family dH must carry the factor a k already.
    """
    out = dH if out is None else out
    if act in SIGMOID_FAMILY:
        return torch.ops.aten.sigmoid_backward.grad_input(dH, S, grad_input=out)
    if act == "relu":
        return torch.ops.aten.threshold_backward.grad_input(dH, S, 0, grad_input=out)  # h > 0 exactly where z > 0
    return ACTIVATION_BACKWARD[act](dH, Z, S)


def _first_layer_update(params, arch, x, g, S, Z, ws) -> None:
    """One hidden layer: W1 -= dz x with dz = (C^T g) * phi'(z) and g (B, O, n) carrying lr, a, k."""
    act, W1, C = arch.activation, params["W1"], params["C"]
    B, N, n = S.shape
    if C.shape[1] == 1:
        # dz = (c_i g_k) phi'(z_ik) is an outer product times phi': the (B, N, n) pass computes only
        # c_i phi'(z_ik), in place of S (no longer needed), and g_k goes into the GEMM's (B, n, d) operand
        xg = g.transpose(1, 2) * x
        dZ = _activation_backward(act, C.transpose(1, 2).expand(B, N, n), S, Z, out=S)
        if arch.bias:  # b1 shares W1's rate
            params["b1"].sub_(torch.bmm(dZ, g.transpose(1, 2))[..., 0])
    else:
        dZ = _activation_backward(act, torch.bmm(C.transpose(1, 2), g, out=workspace(ws, "dH1", S.shape, W1)), S, Z)
        xg = x.expand(B, n, x.shape[1])
        if arch.bias:
            params["b1"].sub_(dZ.sum(2))
    W1.baddbmm_(dZ, xg, alpha=-1.0)  # W1 -= lr dz x, in place: one batched GEMM
