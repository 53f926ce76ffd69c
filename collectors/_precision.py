"""The precision of a float32 block's matrix products: exact float32, TF32 on CUDA, bfloat16 on the CPU.

Weights, activations and their updates stay float32 in every mode; a mode changes only how a float32 GEMM or
convolution rounds its operands (each product is still accumulated in float32). torch keeps these switches
per process, so the trainer sets them for one block and restores them after it, even when the block fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = {
    "ieee": "float32 products, operands unrounded (exact float32 arithmetic)",
    "tf32": "float32 products on CUDA tensor cores, operands rounded to TF32 (10-bit mantissa)",
    "bf16": "float32 products on the CPU through oneDNN, operands rounded to bfloat16 (7-bit mantissa)",
}
"""Each ``precision`` of :class:`collectors.TrainConfig` and ``[run] precision``, with what it computes."""

_DEVICE = {"tf32": "cuda", "bf16": "cpu"}


def precision_problems(precision: str, dtype: str, device: str) -> list[str]:
    """Return what is wrong with ``precision`` for a block of ``dtype`` on ``device`` (empty when it applies)."""
    if precision not in PRECISIONS:
        return [f"precision {precision!r} is not one of {sorted(PRECISIONS)}."]
    if precision == "ieee":
        return []
    problems = []
    if dtype != "float32":
        problems.append(
            f"precision {precision!r} rounds float32 products; the block is {dtype}. Use dtype='float32' or "
            f"precision='ieee'."
        )
    on = "cuda" if str(device).startswith("cuda") else "cpu"
    if on != _DEVICE[precision]:
        problems.append(
            f"precision {precision!r} is a {_DEVICE[precision]} mode ({PRECISIONS[precision]}); the block runs on "
            f"{device!r}, where torch has no such mode for float32 products. Use "
            f"precision={'tf32' if on == 'cuda' else 'bf16'!r} there, or 'ieee'."
        )
    elif precision == "bf16" and not _cpu_has_bf16():
        problems.append(
            "precision 'bf16' needs oneDNN and a CPU with bfloat16 instructions (AVX512-BF16 or AMX); this torch "
            "build or CPU has none, and torch would compute in float32 while the store recorded bf16. Use 'ieee'."
        )
    return problems


def _cpu_has_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.backends.mkldnn.is_available() and check is not None and bool(check())


def _switches(device: torch.device) -> list:
    if device.type == "cuda":
        return [torch.backends.cuda.matmul, torch.backends.cudnn.conv]
    return [torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv]


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Run the block's float32 products at ``precision`` on ``device``, restoring torch's switches after.

    ``"ieee"`` is set explicitly too: a process that enabled TF32 elsewhere does not round a block that records
    exact float32.
    """
    switches = _switches(torch.device(device))
    saved = [s.fp32_precision for s in switches]
    try:
        for s in switches:
            s.fp32_precision = precision
        yield
    finally:
        for s, value in zip(switches, saved, strict=True):
            s.fp32_precision = value
