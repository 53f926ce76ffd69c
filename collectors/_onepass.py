"""The shallow ScaledMLP block's SGD step as one pass over the first layer's weights (a Triton kernel).

For a large block the step is memory-bound: torch's kernels read W1 (S, N, d) for the forward product and read and
write it again for the update, and move (S, N, n) activations several times. This kernel takes a tile of hidden
units of one member and, in registers, (1) recomputes step k's pre-activations from the tile and batch k,
(2) applies step k's update to the tile of W1 and of the readout C, (3) computes the tile's share of the outputs
on batch k + 1 with the new weights: W1 is read once and written once per step, and no activation reaches memory.
The outputs' shares of the tiles are summed by torch in a fixed order (no atomics: the same numbers every run).

Step k's update is applied at the start of step k + 1 (it needs the outputs of batch k, which the step-k kernel
computes): the pending update is kept in fixed buffers (batch, readout error, and a 0/1 switch), so a window of
steps can be replayed as a CUDA graph, and :meth:`OnePass.flush` applies it before anything reads the weights.

Shallow nets (one hidden layer) without biases, activations tanh, sigmoid or relu. On the CPU the kernel runs in
Triton's interpreter (``TRITON_INTERPRET=1``): the tests compare it with ``torch.optim.SGD`` in float64.
"""

from __future__ import annotations

import functools
import os

import torch

from ._fused import SIGMOID_FAMILY, loss_and_gradient

ACTIVATIONS = ("tanh", "sigmoid", "relu")
TILE = 32
"""Hidden units per program: a (32, d) tile of W1 and a (32, n) tile of activations stay in registers."""


def available() -> bool:
    """Whether Triton can be imported here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreted() -> bool:
    """Whether Triton kernels run in its interpreter here (``TRITON_INTERPRET=1``: on the CPU, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def too_large(d: int, batch: int, outputs: int, itemsize: int) -> str | None:
    """Why a program's tiles would not fit on chip (about 96 KB), or None.

    A program holds W1's (32, d) tile and the (batch, d) inputs of two steps; the bound is a conservative
    estimate, not a measurement (the kernel does not loop over d yet).
    """
    nbytes = itemsize * (2 * _pow2(batch) * _pow2(d) + TILE * _pow2(d) + 2 * TILE * _pow2(outputs))
    if nbytes > 96 * 1024:
        return (
            f"a program of the one-pass kernel would hold {nbytes // 1024} KB of tiles (inputs d = {d}, batch "
            f"{batch}, {outputs} outputs; at most about 96 KB fit on chip)"
        )
    return None


def unsupported(hidden_layers: int, bias: bool, activation, batchnorm: bool) -> str | None:
    """Return why :class:`OnePass` cannot step this net, or None.

    It takes one hidden layer without biases or BatchNorm and a supported activation.
    """
    if hidden_layers == 1 and not bias and not batchnorm and activation in ACTIVATIONS:
        return None
    return (
        f"step_kernel 'onepass' steps shallow nets without biases or BatchNorm, activation one of {ACTIVATIONS}; "
        f"this one has {hidden_layers} hidden layer(s), bias={bias}, batchnorm={batchnorm}, activation "
        f"{activation!r}"
    )


@functools.cache
def _kernel(interpret: bool):
    """Return the kernel, compiled for the GPU or (``interpret``) for Triton's interpreter: one of each."""
    import triton
    import triton.language as tl

    @triton.jit
    def onepass(
        W, C, XP, GP, ON, XN, P, LRW, LRC, WD2, N, D, NB, O, T,  # noqa: E741
        A: tl.constexpr, K: tl.constexpr, CC: tl.constexpr, RELU: tl.constexpr, FORWARD: tl.constexpr,
        BN: tl.constexpr, DP: tl.constexpr, NP: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)
        t = tl.program_id(1)
        rows = t * BN + tl.arange(0, BN)
        cols = tl.arange(0, DP)
        pts = tl.arange(0, NP)
        outs = tl.arange(0, OP)
        rm, cm, pm, om = rows < N, cols < D, pts < NB, outs < O
        w_at = W + b * N * D + rows[:, None] * D + cols[None, :]
        w_mask = rm[:, None] & cm[None, :]
        c_at = C + b * O * N + outs[None, :] * N + rows[:, None]  # the tile of C^T, (BN, OP)
        c_mask = rm[:, None] & om[None, :]
        w = tl.load(w_at, mask=w_mask, other=0.0)
        ct = tl.load(c_at, mask=c_mask, other=0.0)
        # step k's update (a zero update where none is pending: ON = 0 and the buffers hold zeros)
        on = tl.load(ON)
        xp = tl.load(XP + pts[:, None] * D + cols[None, :], mask=pm[:, None] & cm[None, :], other=0.0)
        g = tl.load(GP + b * O * NB + outs[:, None] * NB + pts[None, :], mask=om[:, None] & pm[None, :], other=0.0)
        z = K * tl.dot(w, tl.trans(xp), input_precision=PREC)  # (BN, NP)
        dh = tl.dot(ct, g, input_precision=PREC)  # C^T Gs
        if RELU:
            h = tl.maximum(z, 0.0)
            dz = tl.where(z > 0, dh, 0.0)
        else:
            s = tl.sigmoid(z)
            h = A * s + CC
            dz = dh * (A * K) * s * (1.0 - s)
        dct = tl.dot(h, tl.trans(g), input_precision=PREC)  # (BN, OP): dC^T = h Gs^T
        w = w - (on * tl.load(LRW + b)) * tl.dot(dz, xp, input_precision=PREC)
        # rows past N: zero, as loaded (h = phi(0) is not zero for sigmoid, and they would reach the outputs)
        ct = tl.where(c_mask, ct - (on * tl.load(LRC + b)) * (dct + tl.load(WD2) * ct), 0.0)
        tl.store(w_at, w, mask=w_mask)
        tl.store(c_at, ct, mask=c_mask)
        if FORWARD:  # this tile's share of the outputs on the next batch, C h, with the new weights
            xn = tl.load(XN + pts[:, None] * D + cols[None, :], mask=pm[:, None] & cm[None, :], other=0.0)
            zn = K * tl.dot(w, tl.trans(xn), input_precision=PREC)
            if RELU:
                hn = tl.maximum(zn, 0.0)
            else:
                hn = A * tl.sigmoid(zn) + CC
            part = tl.dot(tl.trans(ct), hn, input_precision=PREC)  # (OP, NP)
            tl.store(P + ((b * T + t) * O + outs[:, None]) * NB + pts[None, :], part, mask=om[:, None] & pm[None, :])

    return onepass


def _pow2(v: int, low: int = 16) -> int:
    return max(low, 1 << (int(v) - 1).bit_length())


class OnePass:
    """The one-pass step of a shallow block: ``step`` returns each member's loss on its batch before the step.

    Parameters
    ----------
    params : W1 (B, N, d) and C (B, O, N), updated in place
    scale : N^-gamma per member, (B, 1, 1)
    lr : the W1 and C rates, tensors broadcastable to (B, 1, 1)
    """

    def __init__(self, params, arch, scale, lr, loss: str, weight_decay: float, width: int, batch: int, precision):
        self.W, self.C = params["W1"], params["C"]
        B, N, d = self.W.shape
        O = self.C.shape[1]  # noqa: E741
        self.arch, self.loss, self.wd, self.width, self.scale = arch, loss, weight_decay, width, scale
        like = dict(dtype=self.W.dtype, device=self.W.device)
        self.lrw = (lr["W1"] * torch.ones(B, 1, 1, **like)).reshape(B).contiguous()
        self.lrc = (lr["C"] * torch.ones(B, 1, 1, **like)).reshape(B).contiguous()
        self.tiles = -(-N // TILE)
        self.x_prev = torch.zeros(batch, d, **like)
        self.g_prev = torch.zeros(B, O, batch, **like)
        self.on = torch.zeros((), **like)
        self.wd2 = torch.full((), 2 * weight_decay / width, **like)  # a tensor: a Python float would go as float32
        self.parts = torch.zeros(B, self.tiles, O, batch, **like)
        a, k, c = SIGMOID_FAMILY.get(arch.activation, (1.0, 1.0, 0.0))
        self.meta = dict(
            A=a, K=k, CC=c, RELU=arch.activation == "relu", BN=TILE, DP=_pow2(d), NP=_pow2(batch), OP=_pow2(O),
            PREC="tf32" if precision == "tf32" else "ieee",
        )  # fmt: skip
        self.sizes = (N, d, batch, O, self.tiles)
        self.pending = False

    def _launch(self, x_next: torch.Tensor | None) -> None:
        forward = x_next is not None
        _kernel(interpreted())[(self.W.shape[0], self.tiles)](
            self.W, self.C, self.x_prev, self.g_prev, self.on, x_next if forward else self.x_prev, self.parts,
            self.lrw, self.lrc, self.wd2, *self.sizes, FORWARD=forward, **self.meta,
        )  # fmt: skip

    def step(self, x, y, labels) -> torch.Tensor:
        """Apply the pending update, then return the losses (B,) on this batch, whose update becomes pending."""
        self._launch(x.contiguous())
        out = (self.parts.sum(1) * self.scale).transpose(1, 2)  # (B, n, O)
        losses, G = loss_and_gradient(out, y, labels, self.loss, self.C, self.wd, self.width)
        self.g_prev.copy_((G * self.scale).transpose(1, 2))
        self.x_prev.copy_(x)
        self.on.fill_(1.0)
        self.pending = True
        return losses

    def flush(self) -> None:
        """Apply the pending update (the weights are then those after every step taken)."""
        if self.pending:
            self._launch(None)
            self.discard()

    def discard(self) -> None:
        """Drop the pending update (its step is taken another way)."""
        self.on.fill_(0.0)
        self.g_prev.zero_()
        self.pending = False
