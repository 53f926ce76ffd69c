"""The vectorised ensemble trainer: one width, a block of seeds x gammas trained in one set of batched ops.

Every member b = (gamma, seed) has its own parameters, stacked along a leading axis, and takes plain SGD steps
with its own learning rates (docs/theory.md §1.1, 2): ScaledMLPs through the hand-written batched step of
``_fused``, anything else (and frozen members) through autograd on the sum of the members' losses, which gives
each member exactly its own gradient (``_engines``). The data order (``data_seed``) is shared by the block.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ensemble_stats import schema
from ensemble_stats.errors import ValidationError
from ensemble_stats.store import EnsembleStore

from ._data import DataSet
from ._engines import ModelFactory, member_losses
from ._graphs import Batches, StepWindow
from ._models import (
    INIT_DESCRIPTIONS,
    LR_FORMULA,
    Architecture,
    ScaledMLP,
    init_params,
    layer_alpha_problems,
    learning_rates,
)
from ._precision import PRECISIONS, matmul_precision, precision_problems
from ._records import Block, BlockCollector, BlockModel, StoreWriter, call_hooks

LOSSES = ("mse", "cross_entropy")
STEP_KERNELS = ("torch", "onepass")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


DEFAULT_BLOWUP = 10.0
"""Default blow-up bound: a member's training loss above this multiple of its initial one."""


READOUT = ("C", "c0")
"""The readout's parameters: negated in the second member of an antithetic pair."""
ANTITHETIC_RULE = (
    "seeds in mirror pairs (positions 2k, 2k+1; coordinate 'pair' on seed): the second member starts from the "
    "first one's parameters with the readout C and its bias c0 negated"
)


@dataclass(frozen=True)
class TrainConfig:
    """How every member of a block is trained. Frozen and validated once.

    Parameters
    ----------
    inner_widths, inner_gammas
        Widths N_1..N_{L-1} and exponents of hidden layers before the last (empty: one hidden layer). The last
        hidden width is the swept width N and its gamma the swept gamma.
    activation, bias, init
        See :class:`ScaledMLP`.
    alpha
        Learning-rate constant of the theory's rules (:func:`learning_rates`).
    layer_alpha
        Multipliers of those rates per layer, e.g. ``{"W1": 0.1}`` (first layer) or ``{"C": 2.0}`` (readout);
        biases follow their layer. Stored as sorted pairs.
    loss
        ``"mse"`` (1/2 mean over batch and outputs of the squared error) or ``"cross_entropy"``.
    batch_size
        None for full-batch gradient descent, else minibatch SGD with a per-epoch order drawn from ``data_seed``.
    shuffle
        Draw a new order every epoch (False: the data set order, like the authors' unshuffled loader).
    output_weight_decay
        lambda of the 2-norm regularizer lambda (1/N) sum c_i^2 added to the loss (docs/theory.md §4).
    blowup, max_output
        A member whose training loss at a record exceeds ``blowup`` times its initial training loss, or whose
        largest output on the grid exceeds ``max_output`` in absolute value, has blown up: it is marked
        diverged at that record's step and frozen, like a member with non-finite values (its records are
        stored as they are; ``open_ensemble`` leaves them out of every statistic). None disables a check.
    batchnorm
        BatchNorm on every hidden layer's pre-activation (``ScaledMLP(batchnorm=True)``), trained through the
        module engine with per-member running statistics; evaluation uses them (eval mode).
    antithetic
        Seeds come in mirror pairs, by position in the block (0 and 1, 2 and 3, ...): the second member of a pair
        starts from the first one's parameters with the readout (``C`` and its bias ``c0``) negated, so its
        initial output is the negated first one and the leading Gaussian fluctuation cancels in the pair mean
        (docs/theory.md, "Antithetic pairs"). The second seed number is a label; it draws nothing.
    dtype, device
        ``"float32"`` (default) or ``"float64"``; ``"cpu"`` (default) or ``"cuda"``.
    precision
        How a float32 block's matrix products round their operands (``PRECISIONS``): ``"ieee"`` (default, exact
        float32), ``"tf32"`` (CUDA tensor cores) or ``"bf16"`` (the CPU's bfloat16 units). Weights and updates stay
        float32; the deviation from float64 is measured in docs/gpu.md.
    step_kernel
        ``"torch"`` (default): the fused step of torch's kernels (``_fused``); ``"onepass"``: a Triton kernel that
        reads and writes the first layer's weights once per step and keeps the activations in registers
        (``_onepass``; CUDA, shallow nets without biases, tanh, sigmoid or relu, minibatches of one size).
    layer_diagnostics
        Record each member's per-layer diagnostics (saturation, input spread, gradient norm and relative update
        of every layer: :func:`layer_diagnostics`) at every record, as metrics the store must declare
        (``metrics=ensemble_stats.schema.layer_diagnostic_metrics(depth)``; a sweep's ``[record]
        layer_diagnostics = true`` does). ScaledMLP members only (not with ``batchnorm`` or a model factory).
    """

    inner_widths: tuple[int, ...] = ()
    inner_gammas: tuple[float, ...] = ()
    activation: str = "tanh"
    bias: bool = False
    init: str = "theory"
    alpha: float = 1.0
    layer_alpha: tuple[tuple[str, float], ...] = ()
    loss: str = "mse"
    batch_size: int | None = None
    shuffle: bool = True
    output_weight_decay: float = 0.0
    blowup: float | None = DEFAULT_BLOWUP
    max_output: float | None = None
    antithetic: bool = False
    batchnorm: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    precision: str = "ieee"
    step_kernel: str = "torch"
    layer_diagnostics: bool = False

    def __post_init__(self):
        problems = []
        object.__setattr__(self, "inner_widths", tuple(self.inner_widths))
        object.__setattr__(self, "inner_gammas", tuple(float(g) for g in self.inner_gammas))
        la = self.layer_alpha
        pairs = la.items() if isinstance(la, Mapping) else la
        try:
            object.__setattr__(self, "layer_alpha", tuple(sorted((str(k), v) for k, v in pairs)))
        except (TypeError, ValueError):
            problems.append(f"layer_alpha must map layer names to multipliers, e.g. {{'W1': 0.1}}; got {la!r}.")
            object.__setattr__(self, "layer_alpha", ())
        problems += layer_alpha_problems(dict(self.layer_alpha), len(self.inner_widths) + 1)
        if len(self.inner_widths) != len(self.inner_gammas):
            problems.append(f"{len(self.inner_widths)} inner widths but {len(self.inner_gammas)} inner gammas.")
        # layers may repeat a width or a gamma (e.g. 100-100-100): only the swept coordinates must be unique
        if self.inner_widths:
            problems += schema.validate_widths(list(self.inner_widths), "inner_widths", unique=False)
        if self.inner_gammas:
            problems += schema.validate_gammas(list(self.inner_gammas), "inner_gammas", unique=False)
        problems += self._option_problems()
        ValidationError.raise_if(problems, "TrainConfig")

    def _option_problems(self) -> list[str]:
        """Check the loss, batch, rate, dtype, device, init law and divergence options."""
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss {self.loss!r} is not one of {LOSSES}.")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            problems.append(f"batch_size must be None (full batch) or an integer >= 1, got {self.batch_size!r}.")
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0):
            problems.append(f"alpha must be a positive number, got {self.alpha!r}.")
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}.")
        if self.device != "cpu" and not str(self.device).startswith("cuda"):
            problems.append(f"device {self.device!r}: use 'cpu' or 'cuda'.")
        elif str(self.device).startswith("cuda") and not torch.cuda.is_available():
            problems.append(f"device {self.device!r} requested but CUDA is not available here; use device='cpu'.")
        problems += precision_problems(self.precision, self.dtype, self.device)
        problems += self._kernel_problems()
        if self.init not in INIT_DESCRIPTIONS:
            problems.append(f"init {self.init!r} is not one of {sorted(INIT_DESCRIPTIONS)}.")
        elif self.antithetic and self.init != "theory":
            problems.append(
                f"antithetic pairs need a readout law symmetric about 0 (the mirror member must be a draw of the "
                f"same law); init {self.init!r} draws {INIT_DESCRIPTIONS[self.init]}. Use init='theory' or "
                f"antithetic=False."
            )
        if not (
            isinstance(self.output_weight_decay, int | float)
            and math.isfinite(self.output_weight_decay)
            and self.output_weight_decay >= 0
        ):
            problems.append(f"output_weight_decay must be a finite number >= 0, got {self.output_weight_decay!r}.")
        if self.layer_diagnostics and self.batchnorm:
            problems.append(
                "layer_diagnostics measure ScaledMLP members; with batchnorm=True the members are modules. Turn "
                "one of them off."
            )
        for name, low in (("blowup", 1.0), ("max_output", 0.0)):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > low):
                problems.append(f"{name} must be None (off) or a finite number > {low:g}, got {v!r}.")
        return problems

    def _kernel_problems(self) -> list[str]:
        from . import _onepass

        if self.step_kernel not in STEP_KERNELS:
            return [f"step_kernel {self.step_kernel!r} is not one of {STEP_KERNELS}."]
        if self.step_kernel == "torch":
            return []
        problems = []
        why = _onepass.unsupported(len(self.inner_widths) + 1, self.bias, self.activation, self.batchnorm)
        if why:
            problems.append(f"{why}. Use step_kernel='torch'.")
        if not _onepass.available():
            problems.append("step_kernel 'onepass' needs Triton (pip install triton); use step_kernel='torch'.")
        elif not str(self.device).startswith("cuda") and not _onepass.interpreted():
            problems.append(
                "step_kernel 'onepass' is a CUDA kernel; on the CPU it runs only in Triton's interpreter "
                "(TRITON_INTERPRET=1, for tests). Use device='cuda' or step_kernel='torch'."
            )
        return problems

    def architecture(self, d_in: int, d_out: int, width: int, gamma: float) -> Architecture:
        return Architecture(
            d_in,
            (*self.inner_widths, int(width)),
            (*self.inner_gammas, float(gamma)),
            d_out,
            self.activation,
            self.bias,
        )

    def describe(self) -> dict:
        return {
            "init": f"{self.init}: {INIT_DESCRIPTIONS[self.init]}",
            "lr_rule": LR_FORMULA,
            "alpha": self.alpha,
            **({"layer_alpha": dict(self.layer_alpha)} if self.layer_alpha else {}),
            "loss": self.loss,
            "optimizer": "full-batch gradient descent" if self.batch_size is None else f"SGD, batch {self.batch_size}",
            "batch_size": self.batch_size or 0,
            "output_weight_decay": self.output_weight_decay,
            "blowup": "off"
            if self.blowup is None and self.max_output is None
            else " or ".join(
                ([f"training loss > {self.blowup:g} x the member's initial training loss"] if self.blowup else [])
                + ([f"|output| > {self.max_output:g} on the grid"] if self.max_output else [])
            )
            + " at a record: marked diverged at that step, frozen",
            **({"antithetic": ANTITHETIC_RULE} if self.antithetic else {}),
            **(
                {"normalization": "BatchNorm1d before every hidden activation, running statistics per member"}
                if self.batchnorm
                else {}
            ),
            "dtype": self.dtype,
            **({"precision": f"{self.precision}: {PRECISIONS[self.precision]}"} if self.precision != "ieee" else {}),
            **({"step_kernel": self.step_kernel} if self.step_kernel != "torch" else {}),
        }


def check_compatible(config: TrainConfig, data: DataSet) -> None:
    """Errors before any training: a loss that does not fit the data's task or output size."""
    problems = []
    if config.loss == "cross_entropy" and data.task != "classification":
        problems.append(f"loss 'cross_entropy' needs a classification data set; {data.name} is a regression task.")
    if config.loss == "cross_entropy" and data.output_size < 2:
        problems.append(f"loss 'cross_entropy' needs >= 2 outputs, the data has {data.output_size}.")
    ValidationError.raise_if(problems, "train_block")


@dataclass
class BlockResult:
    """What :func:`train_block` did: members trained, steps, diverged members, wall time."""

    width: int
    members: int
    steps: int
    skipped: bool
    diverged: dict[tuple[float, int], int]
    seconds: float


def train_block(
    store: EnsembleStore,
    data: DataSet,
    *,
    width: int,
    gammas: Sequence[float],
    seeds: Sequence[int],
    config: TrainConfig,
    data_seed: int = 0,
    extra_coords: dict | None = None,
    progress: Callable[[int], None] | None = None,
    collectors: Sequence[BlockCollector] = (),
    model_factory: ModelFactory | None = None,
) -> BlockResult:
    """Train seeds x gammas at one width, vectorised, and record every member through an OutputCollector.

    Members whose records are all written are skipped; if every member is complete nothing is trained.
    Otherwise the block is trained from its initial parameters (deterministic given seeds and ``data_seed``)
    and records are re-written idempotently. A member whose loss becomes non-finite is frozen, marked
    diverged at that step, and its remaining records are stored as they are (NaN/inf).

    Parameters
    ----------
    store : the store the sweep writes to; its grid must be ``data.grid``
    data : a :class:`DataSet`
    width, gammas, seeds : the block
    config : :class:`TrainConfig`
    data_seed : seed of the minibatch order (shared by the block)
    extra_coords : values of the store's extra sweep dims for this block, e.g. ``{"data_seed": 1}``
    progress : called with the number of records written after each recording
    collectors : further :class:`BlockCollector` s; each receives every hook (after the store's own writer), and is
        closed however the block ends. Not called for a block whose records are all written already.
    model_factory : ``make_model(seed, width, gamma) -> nn.Module``, optional
        Train the factory's modules instead of ScaledMLP members: any architecture (e.g.
        :class:`ScaledConvNet`), stacked with ``torch.func`` and stepped with one vectorised ``vmap(grad)`` per
        gamma. Rates: the module's ``learning_rates(alpha, layer_alpha)`` if it has one, else ``config.alpha``
        for every parameter. BatchNorm keeps per-member running statistics; dropout draws per member (seeded by
        ``data_seed``). ``config``'s model fields (activation, init, widths of a ScaledMLP) are not used.
    """
    t_start = time.perf_counter()
    check_compatible(config, data)
    if model_factory is not None or config.batchnorm:
        ValidationError.raise_if(
            [
                *(
                    ["antithetic pairs negate a ScaledMLP's readout; a factory's model has no known readout."]
                    if config.antithetic
                    else []
                ),
                *(
                    ["layer_diagnostics measure ScaledMLP members' layers; a factory's model has no known layers."]
                    if config.layer_diagnostics and model_factory is not None
                    else []
                ),
                *(
                    [
                        "output_weight_decay acts on a ScaledMLP's readout C; add the penalty to your model's loss instead."
                    ]
                    if config.output_weight_decay
                    else []
                ),
            ],
            "train_block (module engine)",
        )
    store.check_grid(data.grid)
    extra_coords = dict(extra_coords or {})
    gammas = [float(g) for g in gammas]
    seeds = [int(s) for s in seeds]
    steps_per_epoch = math.ceil(len(data.x_train) / (config.batch_size or len(data.x_train)))
    schedule = store.record_steps(int(width), steps_per_epoch)
    block = Block(store, int(width), tuple(gammas), tuple(seeds), schedule, extra_coords)
    writer = StoreWriter(block)  # holds the writer units' locks until closed
    try:
        if writer.complete():
            return BlockResult(int(width), len(block.members), 0, True, {}, time.perf_counter() - t_start)
        hooks = [writer, *collectors]
        call_hooks(hooks, "on_block_start", block)
        # a factory's dropout draws from the global RNG, seeded by data_seed: the caller's random state is restored
        cpu = not str(config.device).startswith("cuda")
        rng = torch.random.fork_rng(devices=[] if cpu else None) if model_factory else contextlib.nullcontext()
        with rng, matmul_precision(config.precision, torch.device(config.device)):
            result = _train(
                data,
                config,
                block=block,
                steps_per_epoch=steps_per_epoch,
                hooks=hooks,
                data_seed=data_seed,
                progress=progress,
                t_start=t_start,
                model_factory=model_factory,
            )
        call_hooks(hooks, "on_block_end", result)
        return result
    finally:
        with contextlib.ExitStack() as closing:  # every collector is closed, the writer (the locks) last of all
            closing.callback(writer.close)
            for c in collectors:
                closing.callback(c.close)


def initial_params(arch, config: TrainConfig, seeds: Sequence[int], dtype) -> dict[int, dict[str, torch.Tensor]]:
    """Each seed's initial parameters (shared by every gamma: common random numbers).

    With ``antithetic``, the second seed of each pair takes the first one's with the readout negated.
    """
    if config.antithetic and len(seeds) % 2:
        raise ValidationError(
            f"antithetic training pairs seeds by position; the block has {len(seeds)} seeds: give an even number."
        )
    drawn_seeds = list(seeds[0::2] if config.antithetic else seeds)
    # each seed draws from its own CPU generator, so the draws can run side by side (torch's kernels release the
    # GIL) and stay what they are drawn one by one: the same parameters on every device and thread count
    workers = min(len(drawn_seeds), os.cpu_count() or 1, 16)
    draw = lambda s: init_params(arch, config.init, s, dtype)  # noqa: E731
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            drawn = dict(zip(drawn_seeds, pool.map(draw, drawn_seeds), strict=True))
    else:
        drawn = {s: draw(s) for s in drawn_seeds}
    if not config.antithetic:
        return drawn
    out = {}
    for first, second in zip(seeds[0::2], seeds[1::2], strict=True):
        out[first] = drawn[first]
        out[second] = {k: -v if k in READOUT else v.clone() for k, v in drawn[first].items()}
    return out


def _to_device(tensors: list[torch.Tensor], dev: torch.device) -> torch.Tensor:
    """Stack the members' tensors on ``dev``: on a GPU through pinned host memory, copied without blocking."""
    if dev.type != "cuda":
        return torch.stack(tensors)
    host = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype, pin_memory=True)
    torch.stack(tensors, out=host)
    return host.to(dev, non_blocking=True)


def _engine(data, config, block: Block, model_factory, dtype, dev):
    """Return the block's engine: ScaledMLP members (the default), or a factory's modules through torch.func."""
    from ._engines import MLPEngine, ModuleEngine

    width, gammas, seeds, members = block.width, list(block.gammas), list(block.seeds), block.members
    if model_factory is None and config.batchnorm:
        model_factory = lambda s, w, g: ScaledMLP(  # noqa: E731
            data.d_in, (*config.inner_widths, w), (*config.inner_gammas, g), data.output_size,
            activation=config.activation, bias=config.bias, init=config.init, seed=s, dtype=dtype, batchnorm=True,
        )  # fmt: skip
    if model_factory is not None:
        modules = [model_factory(int(s), int(width), float(g)) for g, s in members]
        bad = [type(m).__name__ for m in modules if not isinstance(m, torch.nn.Module)]
        if bad:
            raise ValidationError(f"model_factory returned {bad[0]}, expected a torch.nn.Module.", "train_block")
        return ModuleEngine(modules, [g for g, _ in members], config, dev, dtype)
    archs = [config.architecture(data.d_in, data.output_size, width, g) for g in gammas]
    arch = archs[0]
    init = initial_params(arch, config, seeds, dtype)
    params = {k: _to_device([init[s][k] for _, s in members], dev).requires_grad_(True) for k in arch.shapes()}
    B = len(members)
    shape_b = lambda v, name: torch.tensor(v, dtype=dtype, device=dev).view(B, *([1] * len(arch.shapes()[name])))  # noqa: E731
    per_gamma = [learning_rates(a, config.alpha, dict(config.layer_alpha)) for a in archs]
    lr = {k: shape_b([per_gamma[gammas.index(g)][k] for g, _ in members], k) for k in arch.shapes()}
    scales = [
        torch.tensor([a.scales()[layer] for a in archs for _ in seeds], dtype=dtype, device=dev).view(B, 1, 1)
        for layer in range(arch.depth)
    ]
    return MLPEngine(arch, params, lr, scales, config, int(width))


EVAL_ELEMENTS = 1 << 25
"""Fewest hidden activations (members x points x width) one evaluation pass may hold: records evaluate the grid
and the training set in chunks of points, so memory stays bounded however large the block and the data are."""


def _evaluate(engine, x: torch.Tensor, width: int, members: int) -> torch.Tensor:
    """Every member's outputs (B, n, O) on ``x``, in chunks of points.

    A pass holds up to max(:data:`EVAL_ELEMENTS`, the block's parameter count) activations: every pass reads all
    the weights, so chunks as large as the weights keep the weight traffic of a record within twice one read of
    the points at once, at most doubling the block's memory (a block of 1000 members at N = 4096: 4 passes over
    256 points instead of 32, measured 4x faster records on a CPU).
    """
    params = sum(p.numel() for p in engine.params.values())
    chunk = max(1, max(EVAL_ELEMENTS, params) // max(1, members * width))
    if len(x) <= chunk:
        return engine.forward(x)
    return torch.cat([engine.forward(x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=1)


def _measure(engine, config, task: str, train, grid, widest: int, bound, alive):
    """Measure one record: outputs on the grid, scalars, and which live members blew up.

    Returns the outputs (member, point, output), the scalars name -> (member,), and a (member,) mask of the live
    members whose training loss exceeds ``bound`` or whose output exceeds ``config.max_output``.
    """
    (x, y, labels), (xg, yg, lg) = train, grid
    B = len(alive)
    with torch.no_grad():
        out = _evaluate(engine, xg, widest, B)
        test_loss = member_losses(out, yg, lg, config.loss)
        out_train = _evaluate(engine, x, widest, B)
        train_loss = member_losses(out_train, y, labels, config.loss)
        blown = torch.zeros_like(alive)
        if config.blowup is not None:
            blown |= train_loss > bound  # finite but exploded (non-finite values are divergence already)
        if config.max_output is not None:
            blown |= out.abs().flatten(1).amax(1) > config.max_output
        blown &= alive
    sc = {
        schema.TEST_LOSS: test_loss.cpu().numpy(),
        schema.TRAIN_LOSS: train_loss.cpu().numpy(),
        **{k: v.detach().cpu().numpy() for k, v in engine.scalars().items()},
    }
    if config.layer_diagnostics:
        sc.update({k: v.cpu().numpy() for k, v in engine.diagnostics(x, y, labels).items()})
    if task == "classification":
        sc[schema.ACCURACY] = (out.argmax(-1) == lg).to(out.dtype).mean(-1).cpu().numpy()
        sc[schema.TRAIN_ACCURACY] = (out_train.argmax(-1) == labels).to(out.dtype).mean(-1).cpu().numpy()
    return out.cpu().numpy(), sc, blown


def _train(
    data,
    config,
    *,
    block: Block,
    steps_per_epoch,
    hooks: list[BlockCollector],
    data_seed,
    progress,
    t_start,
    model_factory,
):
    """Run the training loop of :func:`train_block`: every record, step and divergence goes to ``hooks``."""
    width, schedule, members = block.width, block.schedule, block.members
    dtype, dev = DTYPES[config.dtype], torch.device(config.device)
    if model_factory is not None:
        torch.manual_seed(int(data_seed))  # dropout draws: reproducible given the block
    engine = _engine(data, config, block, model_factory, dtype, dev)
    B = len(members)
    widest = max((int(width), *config.inner_widths))
    x = torch.tensor(data.x_train, dtype=dtype, device=dev)
    y = torch.tensor(data.y_train, dtype=dtype, device=dev)
    labels = torch.tensor(data.labels_train, device=dev) if data.labels_train is not None else None
    xg = torch.tensor(data.grid.x, dtype=dtype, device=dev)
    model = BlockModel(engine.params, engine.buffers, engine.apply, xg, engine.architecture)
    yg = torch.tensor(data.grid.target, dtype=dtype, device=dev)
    lg = yg.argmax(-1)
    watch = _Divergence(members, hooks, dev, defer=_defers_check(dev))
    alive = watch.alive
    gen = torch.Generator().manual_seed(int(data_seed))
    n = len(x)
    total = int(schedule[-1])
    written = 0
    bound = None
    if config.blowup is not None:
        with torch.no_grad():  # the reference of the blow-up rule: each member's initial training loss
            bound = config.blowup * member_losses(_evaluate(engine, x, widest, B), y, labels, config.loss)

    def record(step: int) -> None:
        nonlocal written
        watch.check_window()
        out_np, sc, blown = _measure(engine, config, data.task, (x, y, labels), (xg, yg, lg), widest, bound, alive)
        watch.mark(blown, lambda b: step)  # frozen from here on, as after non-finite values
        fields = {}
        for c in hooks:
            got = c.record_fields(step, model)
            fields.update(
                {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in got.items()}
            )
        call_hooks(hooks, "on_record", step, out_np, sc, fields)
        written += B
        if progress:
            progress(B)

    call_hooks(hooks, "on_train_start", model)
    batches = Batches(n, config.batch_size, steps_per_epoch, config.shuffle, gen, dev) if config.batch_size else None
    if config.step_kernel == "onepass":
        _use_onepass(engine, config, batches, n)
    window = _step_window(engine, (x, y, labels), batches, dev)

    def step_one(k: int) -> None:
        xb, yb, lb = x, y, labels
        if batches is not None:
            idx = batches.device_rows(k)
            xb, yb, lb = x[idx], y[idx], labels[idx] if labels is not None else None
        losses, finite = engine.step(xb, yb, lb, alive, watch.every_alive, defer=watch.defer)
        watch.after_step(k, losses, finite)
        call_hooks(hooks, "on_train_step", k + 1, losses)

    def step_window(k: int) -> None:
        losses = window.run(batches.host_rows(k, window.steps) if batches is not None else None)
        watch.after_window(k, losses)
        for j in range(window.steps):
            call_hooks(hooks, "on_train_step", k + j + 1, losses[j])

    k = 0
    for at in schedule:  # strictly increasing record steps, the last one the block's end
        while k < at:
            if window is not None and watch.every_alive and k + window.steps <= at:
                step_window(k)
                k += window.steps
            else:
                step_one(k)
                k += 1
        record(at)
    return BlockResult(int(width), B, total, False, watch.diverged, time.perf_counter() - t_start)


DEFER_WINDOW = 64
"""On a GPU, the fused step's losses are checked for non-finite values once per this many steps (and before every
record), not once per step, and this many steps make one CUDA graph (:class:`StepWindow`)."""


def _defers_check(dev: torch.device) -> bool:
    """Whether the finiteness check is deferred to windows: on CUDA (a sync is free on the CPU)."""
    return dev.type == "cuda"


def _captures(dev: torch.device) -> bool:
    """Whether full windows of fused steps run as CUDA graphs: on CUDA (launches cost little on the CPU)."""
    return dev.type == "cuda"


def _use_onepass(engine, config, batches: Batches | None, n: int) -> None:
    """Switch the engine to the one-pass kernel, or say why it cannot."""
    if batches is not None and not batches.full:
        raise ValidationError(
            f"step_kernel 'onepass' needs minibatches of one size: {n} training points are not a multiple of the "
            f"batch size {config.batch_size}. Choose a batch size that divides them, or step_kernel='torch'."
        )
    from ._onepass import too_large

    if not hasattr(engine, "use_onepass"):
        raise ValidationError(
            "step_kernel 'onepass' steps ScaledMLP members; a model factory's modules are stepped through "
            "torch.func. Use step_kernel='torch'."
        )
    W1, C = engine.params["W1"], engine.params["C"]
    why = too_large(W1.shape[-1], config.batch_size or n, C.shape[1], W1.element_size())
    if why:
        raise ValidationError(f"step_kernel 'onepass': {why}. Use step_kernel='torch'.")
    engine.use_onepass(config.batch_size or n)  # the net itself was checked with the config


def _step_window(engine, data: tuple, batches: Batches | None, dev: torch.device) -> StepWindow | None:
    """Return the window of fused steps a block replays between records, or None where they go one by one.

    Only the fused step (every member live), and minibatches that all have the batch size (the data divide into
    them).
    """
    if not (getattr(engine, "fast", False) and _captures(dev)) or (batches is not None and not batches.full):
        return None
    x, y, labels = data
    size = batches.batch if batches is not None else None
    return StepWindow(engine, x, y, labels, size, DEFER_WINDOW, capture=dev.type == "cuda")


class _Divergence:
    """Which members of a block have diverged (non-finite losses, or a blow-up at a record), frozen from then on.

    ``alive`` (B,) is the device mask the engines read; ``every_alive`` its copy on the host (reading the mask
    back would cost a device sync per step). With ``defer`` the fused step's losses are kept and checked once per
    ``DEFER_WINDOW`` steps and before every record, each member marked at its first non-finite step.
    """

    def __init__(self, members, hooks, dev: torch.device, defer: bool):
        self.members, self.hooks, self.defer = members, hooks, defer
        self.alive = torch.ones(len(members), dtype=torch.bool, device=dev)
        self.every_alive = True
        self.diverged: dict[tuple[float, int], int] = {}
        self.window: list[tuple[int, torch.Tensor]] = []

    def mark(self, bad: torch.Tensor, step_of) -> None:
        """Freeze the live members flagged in ``bad`` (B,), each diverged at ``step_of(member)``."""
        for b in torch.nonzero(bad & self.alive).flatten().tolist():
            self.every_alive = False
            self.diverged[self.members[b]] = step_of(b)
            call_hooks(self.hooks, "on_diverged", b, step_of(b))
        self.alive.logical_and_(~bad)

    def after_step(self, k: int, losses: torch.Tensor, finite: bool | None) -> None:
        """Take step ``k``'s losses; ``finite`` as the engine's step returns it."""
        if finite is None:
            self.window.append((k, losses))
            if len(self.window) >= DEFER_WINDOW:
                self.check_window()
        # one reduction per step while every loss is finite, none where the fused step checked already
        elif not finite and not math.isfinite(float(losses.sum())):
            self.mark(~torch.isfinite(losses), lambda b: k)

    def after_window(self, k: int, losses: torch.Tensor) -> None:
        """Take the losses (steps, B) of a window of steps starting at ``k``, and check them (one device sync)."""
        self.window.extend((k + j, lo) for j, lo in enumerate(losses))
        self.check_window()

    def check_window(self) -> None:
        """Mark the members whose loss was not finite at a deferred step: one device sync for the window."""
        if not self.window:
            return
        bad = ~torch.isfinite(torch.stack([lo for _, lo in self.window]))  # (steps, B)
        if bool(bad.any()):
            first = bad.int().argmax(0).tolist()  # each member's first non-finite step in the window
            steps = [k for k, _ in self.window]
            self.mark(bad.any(0), lambda b: steps[first[b]])
        self.window.clear()
