"""Benchmark: the block trainer against the torch.func ensembling recipe and a per-seed loop, side by side.

Same work for every trainer: S seeds of one gamma, minibatch SGD with the theory's per-layer rates, MSE, tanh,
float32, the same batches. Interleaved in one process (--repeats rounds; the best of each is kept), with the
float32 matmul peak measured before, in every round and after (percentages use the best peak seen so far):

- shallow: S = 32, N = 1024, d = 64, batch 32, 500 steps;
- deep: 3 hidden layers of 256, S = 32, d = 64, batch 32, 200 steps (both: the block trainer's hand-written step,
  ``collectors/_fused.py``);
- the block trainer's scaling table over S in {8, 64, 512} x N in {256, 1024, 4096} (steps scaled to equal work):
  seconds per step from the difference of two step counts, and the fixed cost of a block (init, records, writes).

Beside each comparison, a bound: the kernels no SGD step of the net can skip (every GEMM, the readout's two
products, one sigmoid pass and one backward pass per hidden activation), each timed alone at the trainer's
shapes. Their sum bounds any trainer built on torch's kernels, so it says how far the block trainer is from that
floor and how large a ratio to the recipe is possible.

The recipe is PyTorch's documented model ensembling: ``torch.func.stack_module_state`` of the S modules,
``vmap(grad(loss))`` over them, and an in-place SGD update of the stacked parameters; it also runs with its
whole step under ``torch.compile`` (the ecosystem's fuser; compile time not counted). The block trainer's time
includes one record of the outputs at the end (a 256-point grid). Matmul FLOPs count the forward and both
backward products of every layer.

On CUDA (or with --large) also a large shallow block, S = 1000, N = 4096: seconds per step of each step kernel
(torch's, and the one-pass Triton kernel, ``step_kernel="onepass"``) at float32 and TF32, and of the recipe, as a
percentage of the roofline floor (the larger of the GEMM time at the fp32 peak and W1's memory traffic at the
measured bandwidth), and each block's fixed cost.

Run: make bench   (or python benchmarks/bench_trainer.py [--device cuda] [--repeats 3] [--no-table] [--large])
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import tempfile
import time
from pathlib import Path

import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from collectors import EnsembleStore, ScaledMLP, TrainConfig, teacher, train_block

D, BATCH, GAMMA = 64, 32, 0.75


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, n: int = 2048, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def step_flops(widths: tuple[int, ...], outputs: int = 1) -> int:
    """Matmul FLOPs of one member's step: forward, weight gradient and input gradient of every layer (no input
    gradient for the first)."""
    dims = (D, *widths, outputs)
    return sum((2 if i == 0 else 3) * 2 * BATCH * a * b for i, (a, b) in enumerate(itertools.pairwise(dims)))


def kernel_floor(S: int, widths: tuple[int, ...], device: str, reps: int = 50) -> float:
    """Seconds per step of the kernels no SGD step of this net can skip, each timed alone at the block trainer's
    shapes: every layer's forward GEMM, input-gradient GEMM (not the first layer's) and weight-gradient GEMM, one
    sigmoid pass over every hidden activation (tanh's cheapest form in torch), one backward pass over it
    (``sigmoid_backward``), and the readout's two products with the last activation (its forward and its weight
    gradient). The loss and every other small op are left out, so the block trainer can only be slower."""
    dims, n = (D, *widths), BATCH
    ops = []
    for layer, (d_in, N) in enumerate(itertools.pairwise(dims), start=1):
        W = torch.randn(S, N, d_in, device=device)
        Z, U = torch.randn(S, N, n, device=device), torch.randn(S, d_in, n, device=device)
        if layer == 1:
            x = torch.randn(n, d_in, device=device)
            ops.append(lambda W=W, Z=Z, x=x: torch.mm(W.view(-1, W.shape[-1]), x.T, out=Z.view(-1, Z.shape[-1])))
            ops.append(lambda W=W, Z=Z, x=x: W.baddbmm_(Z, x.expand(S, *x.shape), alpha=-1e-12))
        else:
            ops.append(lambda W=W, Z=Z, U=U: torch.bmm(W, U, out=Z))
            ops.append(lambda W=W, Z=Z, U=U: torch.bmm(W.transpose(1, 2), Z, out=U))
            ops.append(lambda W=W, Z=Z, U=U: W.baddbmm_(Z, U.transpose(1, 2), alpha=-1e-12))
        # separate outputs, so that no input drifts into subnormal numbers over the repetitions
        H, dZ = torch.empty_like(Z), torch.empty_like(Z)
        g = torch.randn(S, N, 1, device=device).expand(S, N, n)  # the cheapest form: a broadcast gradient
        ops.append(lambda Z=Z, H=H: torch.sigmoid(Z, out=H))
        ops.append(lambda H=H, g=g, dZ=dZ: torch.ops.aten.sigmoid_backward.grad_input(g, H, grad_input=dZ))
    C, G = torch.randn(S, 1, widths[-1], device=device), torch.randn(S, 1, n, device=device)
    ops.append(lambda H=H: torch.bmm(C, H))
    ops.append(lambda H=H: torch.bmm(G, H.transpose(1, 2)))
    total = 0.0
    for op in ops:
        best = float("inf")
        for _ in range(3):
            op()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            _sync(device)
            best = min(best, (time.perf_counter() - t0) / reps)
        total += best
    return total


def _models(S: int, widths, device: str):
    inner, N = tuple(widths[:-1]), widths[-1]
    return [ScaledMLP(D, (*inner, N), (*([GAMMA] * len(inner)), GAMMA), seed=s).to(device) for s in range(S)]


def _batches(data, steps: int, device: str):
    x = torch.tensor(data.x_train, dtype=torch.float32, device=device)
    y = torch.tensor(data.y_train, dtype=torch.float32, device=device)
    n = len(x)
    gen = torch.Generator().manual_seed(0)
    order = torch.arange(n)
    out = []
    for k in range(steps):
        i = (k % (n // BATCH)) * BATCH
        if i == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[i : i + BATCH].to(device)
        out.append((x[idx], y[idx]))
    return out


def per_seed_loop(data, S, widths, steps, device) -> float:
    models, batches = _models(S, widths, device), _batches(data, steps, device)
    _sync(device)
    t0 = time.perf_counter()
    for m in models:
        opt = torch.optim.SGD(m.param_groups())
        for xb, yb in batches:
            opt.zero_grad()
            loss = 0.5 * ((m(xb) - yb) ** 2).mean()
            loss.backward()
            opt.step()
    _sync(device)
    return time.perf_counter() - t0


def torch_func_recipe(data, S, widths, steps, device, compiled: bool = False) -> float:
    """The recipe's training time; ``compiled``: its whole step (gradients and update) under ``torch.compile``,
    compiled by one extra step before the clock starts."""
    models, batches = _models(S, widths, device), _batches(data, steps, device)
    params, buffers = stack_module_state(models)
    rates = models[0].learning_rates()  # one gamma: every member has the same rates
    base = copy.deepcopy(models[0]).to("meta")

    def loss_fn(p, b, xb, yb):
        return 0.5 * ((functional_call(base, (p, b), (xb,)) - yb) ** 2).mean()

    grads_of = vmap(grad(loss_fn), in_dims=(0, 0, None, None))

    def sgd(params, buffers, xb, yb):
        grads = grads_of(params, buffers, xb, yb)
        with torch.no_grad():
            for name, p in params.items():
                p.sub_(rates[name] * grads[name])

    if compiled:
        torch._dynamo.reset()  # a fresh compile per call: no recompile limit across rounds
        sgd = torch.compile(sgd, dynamic=False)
        sgd(params, buffers, *batches[0])
    _sync(device)
    t0 = time.perf_counter()
    for xb, yb in batches:
        sgd(params, buffers, xb, yb)
    _sync(device)
    return time.perf_counter() - t0


def block_trainer(data, S, widths, steps, device, root: Path, **cfg) -> float:
    store = EnsembleStore.create(
        root / f"v{time.time_ns()}.zarr", data.grid, gammas=[GAMMA], widths=[widths[-1]], seeds=list(range(S)),
        times=[steps], time_units="step", seed_chunk=S, check_space=False,
    )  # fmt: skip
    cfg = TrainConfig(
        batch_size=BATCH,
        device=device,
        inner_widths=tuple(widths[:-1]),
        inner_gammas=(GAMMA,) * (len(widths) - 1),
        **cfg,
    )
    _sync(device)
    t0 = time.perf_counter()
    train_block(store, data, width=widths[-1], gammas=[GAMMA], seeds=list(range(S)), config=cfg)
    _sync(device)
    return time.perf_counter() - t0


def compare(name, data, S, widths, steps, device, root, repeats, peak) -> tuple[float, float]:
    """Best-of-``repeats`` times of the trainers, interleaved; the matmul peak is measured in every round too and
    its best (with ``peak``) is the reference, so a slow spell of the machine cannot inflate the percentages.
    Returns the block trainer's training time and the peak used."""
    trainers = {
        "block trainer + records": lambda: block_trainer(data, S, widths, steps, device, root),
        "(its records alone)": lambda: block_trainer(data, S, widths, 0, device, root),
        "torch.func recipe": lambda: torch_func_recipe(data, S, widths, steps, device),
        "recipe + torch.compile": lambda: torch_func_recipe(data, S, widths, steps, device, compiled=True),
        "per-seed torch.optim.SGD": lambda: per_seed_loop(data, S, widths, steps, device),
    }
    best = dict.fromkeys(trainers, float("inf"))
    block_trainer(data, S, widths, 5, device, root)  # warm-up
    for _ in range(repeats):  # interleaved: each round runs every trainer once
        for k, fn in trainers.items():
            best[k] = min(best[k], fn())
        peak = max(peak, matmul_peak(device))
    # the block trainer evaluates its members at the start (the blow-up rule's reference) and records the grid and
    # training loss at the end; the others do neither: its training alone is the difference of the two runs
    best["block trainer, training"] = best["block trainer + records"] - best.pop("(its records alone)")
    flops = step_flops(widths) * S * steps
    print(
        f"{name}: S={S}, widths={widths}, d={D}, batch={BATCH}, {steps} steps, float32; "
        f"peak (best of the rounds): {peak / 1e9:.1f} GFLOP/s"
    )
    ref = best["block trainer, training"]
    for k, t in best.items():
        print(
            f"  {k:<26} {t:7.2f} s  {flops / t / 1e9:6.1f} GFLOP/s  {100 * flops / t / peak:5.1f}% of peak  "
            f"{t / ref:5.2f}x the block trainer's training time"
        )
    floor = kernel_floor(S, widths, device) * steps
    recipe = best["torch.func recipe"]  # the documented recipe: the reference of the ratio
    print(
        f"  bound: the step's unskippable kernels timed alone take {floor:.2f} s for these steps "
        f"({100 * flops / floor / peak:.1f}% of peak): no trainer doing them can be faster than "
        f"{recipe / floor:.2f}x the recipe; the block trainer spends {100 * floor / ref:.0f}% of its time in them"
    )
    return ref, peak


def memory_bandwidth(device: str, gb: float = 1.0) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    a = torch.empty(int(gb * 2**28), device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(5):
        b.copy_(a)
    _sync(device)
    return 2 * a.numel() * 4 * 5 / (time.perf_counter() - t0)


def large(data, device: str, root: Path, peak: float, S: int = 1000, N: int = 4096) -> None:
    """Seconds per step of a large shallow block (from 50 and 550 steps), each step kernel and precision, and
    the recipe, beside the roofline floor: the larger of the step's GEMM FLOP at the fp32 peak and its memory
    traffic at the measured bandwidth (W1 read for the forward product, read and written by the update)."""
    bw = memory_bandwidth(device)
    flop = step_flops((N,)) * S
    traffic = 3 * S * N * D * 4
    floor = max(flop / peak, traffic / bw)
    print(
        f"large shallow block: S={S}, N={N}, d={D}, batch={BATCH}, float32; floor {1e3 * floor:.3f} ms per step "
        f"(GEMM {1e3 * flop / peak:.3f} ms at {peak / 1e12:.1f} TFLOP/s, traffic {traffic / 1e9:.2f} GB at "
        f"{bw / 1e12:.2f} TB/s: {1e3 * traffic / bw:.3f} ms)"
    )
    runs = {"block trainer (torch kernels)": {}}
    if device.startswith("cuda"):
        runs["block trainer (torch kernels, tf32)"] = dict(precision="tf32")
        if importlib.util.find_spec("triton") is not None:
            runs["block trainer (one pass)"] = dict(step_kernel="onepass")
            runs["block trainer (one pass, tf32)"] = dict(step_kernel="onepass", precision="tf32")
    for name, cfg in runs.items():
        t = {k: block_trainer(data, S, (N,), k, device, root, **cfg) for k in (50, 550)}
        step = (t[550] - t[50]) / 500
        print(
            f"  {name:<36} {1e3 * step:8.3f} ms per step  {100 * floor / step:5.1f}% of the floor  "
            f"fixed {t[50] - 50 * step:6.2f} s per block"
        )
    recipe = (torch_func_recipe(data, S, (N,), 60, device) - torch_func_recipe(data, S, (N,), 10, device)) / 50
    print(f"  {'torch.func recipe':<36} {1e3 * recipe:8.3f} ms per step  {100 * floor / recipe:5.1f}% of the floor")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-table", action="store_true")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--large", action="store_true", help="the S = 1000, N = 4096 block (default on CUDA)")
    args = ap.parse_args()
    dev = args.device
    data = teacher(kind="mlp", d=D, n_train=BATCH * 64, n_test=256, seed=0)
    where = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory(dir=".") as d:
        root = Path(d)
        peak = matmul_peak(dev)
        print(f"device: {where}; float32 matmul peak (2048^2): {peak / 1e9:.1f} GFLOP/s")
        if not args.table_only:
            peak = compare("shallow", data, 32, (1024,), 500, dev, root, args.repeats, peak)[1]
            peak = compare("deep", data, 32, (256, 256, 256), 200, dev, root, args.repeats, peak)[1]
        if not args.no_table:
            small = teacher(kind="mlp", d=D, n_train=BATCH * 8, n_test=64, seed=0)  # cheap records at large S x N
            print(
                "block trainer scaling (steps for about 2e10 matmul FLOP per cell; seconds per step from two runs of "
                "the same block, k and k/10 steps, best of 2 each: their difference holds no fixed cost; fixed: "
                "the rest of the shorter run, i.e. initialisation, the records and the writes):"
            )
            print(
                f"  {'S':>5} {'N':>6} {'steps':>6} {'s':>7} {'ms/step':>8} {'GFLOP/s':>8} {'% peak':>7} {'fixed s':>8}"
            )
            for S in (8, 64, 512):
                for N in (256, 1024, 4096):
                    per_step = step_flops((N,)) * S
                    steps = max(20, min(500, int(2e10 / per_step)))
                    short = steps // 10
                    run = lambda k, S=S, N=N: min(block_trainer(small, S, (N,), k, dev, root) for _ in range(2))  # noqa: E731
                    t_long, t_short = run(steps), run(short)
                    step_s = max(t_long - t_short, 1e-9) / (steps - short)
                    t = step_s * steps
                    f = per_step * steps
                    print(
                        f"  {S:>5} {N:>6} {steps:>6} {t:>7.2f} {1e3 * step_s:>8.3f} {f / t / 1e9:>8.1f} "
                        f"{100 * f / t / peak:>6.1f}% {t_short - short * step_s:>8.2f}"
                    )
        if args.large or (dev.startswith("cuda") and not args.table_only):
            small = teacher(kind="mlp", d=D, n_train=BATCH * 8, n_test=64, seed=0)
            large(small, dev, root, peak)
        peak2 = matmul_peak(dev)
        print(f"matmul peak again at the end: {peak2 / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
