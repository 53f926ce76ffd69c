"""OutputCollector: records a model's outputs on the store's grid at scheduled optimizer steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ensemble_stats import schema
from ensemble_stats.errors import RunExistsError, ValidationError

from ._store import EnsembleStore

_STATE_VERSION = 1


class CollectorHandle:
    """Returned by :meth:`OutputCollector.attach`; ``detach()`` flushes and removes the optimizer hook."""

    def __init__(self, collector: OutputCollector, hook):
        self._collector = collector
        self._hook = hook

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            self._collector.flush()

    def __enter__(self) -> CollectorHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


class OutputCollector:
    """Record one run's outputs on the store's evaluation grid.

    Parameters
    ----------
    store
        An :class:`EnsembleStore` (opened for writing).
    gamma, width, seed
        The run; extra sweep dims (e.g. ``data_seed=1``) are keyword arguments.
    steps_per_epoch
        Needed when the store's ``time_units`` is ``"epoch"``.
    resume
        Allow writing into a run that already has records (a restarted or retried run). Without it a run with
        records is refused, so two jobs never silently write the same run.
    loss_fn
        ``loss_fn(output, target) -> tensor`` evaluated on the grid and stored as ``test_loss``.
    metrics
        ``metrics(model) -> {name: float}`` for further per-record scalars (``train_loss``,
        ``output_weight_norm``, ...); names must be in ``schema.SCALAR_VARIABLES``.

    Notes
    -----
    Records are buffered and written when a time chunk completes, on :meth:`flush`, :meth:`state_dict`,
    ``detach()`` and context-manager exit. Evaluation runs under ``torch.no_grad()`` in eval mode, and the
    model's mode is restored afterwards.
    """

    def __init__(
        self,
        store: EnsembleStore,
        *,
        gamma: float,
        width: int,
        seed: int,
        steps_per_epoch: int | None = None,
        resume: bool = False,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        metrics: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
        **extra_coords: Any,
    ):
        self.store = store
        self.index = store.run_index(gamma, width, seed, **extra_coords)
        self.run = store.run_coords(self.index)
        self.schedule = store.record_steps(int(width), steps_per_epoch)
        self.loss_fn = loss_fn
        self.metrics = metrics
        self.resume = resume
        written = store.written_mask(self.index)
        if written.any() and not resume:
            raise RunExistsError(
                f"run ({schema.describe_run(self.run)}) already has {int(written.sum())} of {written.size} records "
                f"in {store.path}; pass resume=True to continue it (records are re-written idempotently), or use "
                "another seed."
            )
        self._step = 0
        self._next = 0  # index into schedule of the next record to take
        self._buffer: list[tuple[int, int, np.ndarray, dict[str, float]]] = []
        self._grid_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._time_chunk = store.spec.time_chunk

    # ------------------------------------------------------------------ hooks
    def attach(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, start_step: int | None = None
    ) -> CollectorHandle:
        """Hook ``optimizer.step`` so outputs are recorded after each scheduled step.

        Records step 0 now if it is scheduled and not yet taken. ``start_step`` sets the optimizer step count
        when resuming from a checkpoint without a collector ``state_dict``.
        """
        if start_step is not None:
            self._seek(int(start_step))
        if self._next < len(self.schedule) and self.schedule[self._next] == self._step:
            self.record(model, self._step)

        def hook(opt, args, kwargs):
            self._step += 1
            if self._next < len(self.schedule) and self.schedule[self._next] == self._step:
                self.record(model, self._step)

        return CollectorHandle(self, optimizer.register_step_post_hook(hook))

    def _seek(self, step: int) -> None:
        self._step = step
        self._next = int(np.searchsorted(self.schedule, step, side="left"))

    @property
    def step(self) -> int:
        """Optimizer steps seen so far."""
        return self._step

    @property
    def done(self) -> bool:
        """All scheduled records taken (and flushed or buffered)."""
        return self._next >= len(self.schedule)

    # ------------------------------------------------------------------ recording
    def _grid_tensors(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        p = next(model.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        device = p.device if p is not None else torch.device("cpu")
        key = (dtype, device)
        if key not in self._grid_cache:
            grid = self.store.grid()
            self._grid_cache[key] = (
                torch.tensor(grid.x, dtype=dtype, device=device),
                torch.tensor(grid.target, dtype=dtype, device=device),
            )
        return self._grid_cache[key]

    def evaluate(self, model: torch.nn.Module) -> tuple[np.ndarray, dict[str, float]]:
        """Outputs (point, output) on the grid and the scalars (loss_fn, accuracy, metrics), without recording.

        ``metrics`` is called in eval mode under ``torch.no_grad()`` like the grid evaluation.
        """
        x, target = self._grid_tensors(model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x)
                if out.ndim == 1:
                    out = out[:, None]
                scalars: dict[str, float] = {}
                if self.loss_fn is not None:
                    scalars[schema.TEST_LOSS] = float(self.loss_fn(out, target))
                if out.shape[-1] > 1 and out.shape == target.shape:
                    scalars[schema.ACCURACY] = float((out.argmax(-1) == target.argmax(-1)).float().mean())
                if self.metrics is not None:
                    scalars.update({k: float(v) for k, v in self.metrics(model).items()})
        finally:
            model.train(was_training)
        expected = (self.store.spec.n_points, self.store.spec.output_size)
        if tuple(out.shape) != expected:
            raise ValidationError(
                f"model output on the grid has shape {tuple(out.shape)}, expected {expected} (point, output); "
                "check the model's output layer against the store's output_size."
            )
        return out.detach().cpu().numpy(), scalars

    def record(self, model: torch.nn.Module, step: int, **scalars: float) -> None:
        """Evaluate ``model`` on the grid and record it as optimizer step ``step`` (must be scheduled)."""
        step = int(step)
        j = int(np.searchsorted(self.schedule, step))
        if j >= len(self.schedule) or self.schedule[j] != step:
            raise ValidationError(
                f"step {step} is not a recording step of run ({schema.describe_run(self.run)}); scheduled steps are "
                f"{self.schedule.tolist()}."
            )
        if j < self._next:
            raise ValidationError(f"step {step} was already recorded for run ({schema.describe_run(self.run)}).")
        out, auto = self.evaluate(model)
        auto.update({k: float(v) for k, v in scalars.items()})
        unknown = set(auto) - set(schema.SCALAR_VARIABLES)
        if unknown:
            raise ValidationError(f"unknown scalars {sorted(unknown)}; allowed: {list(schema.SCALAR_VARIABLES)}.")
        self._buffer.append((j, step, out, auto))
        self._next = j + 1
        self._step = max(self._step, step)
        if (j + 1) % self._time_chunk == 0 or j + 1 == len(self.schedule):
            self.flush()

    def flush(self) -> None:
        """Write and commit every buffered record."""
        if not self._buffer:
            return
        ti = np.array([b[0] for b in self._buffer])
        steps = np.array([b[1] for b in self._buffer], dtype=np.int64)
        pred = np.stack([b[2] for b in self._buffer])
        names = sorted({k for b in self._buffer for k in b[3]})
        scalars = {n: np.array([b[3].get(n, np.nan) for b in self._buffer], dtype=np.float32) for n in names}
        self.store.write_records(self.index, ti, pred, steps, scalars)
        self._buffer.clear()

    def __enter__(self) -> OutputCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Flush, then return the state needed to resume: run, grid hash, step count, next record.

        Save it with the model and optimizer checkpoint; everything before it is durable in the store.
        """
        self.flush()
        return {
            "version": _STATE_VERSION,
            "run": dict(self.run),
            "grid_hash": self.store.spec.grid_hash,
            "step": self._step,
            "next_index": self._next,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`; refuses a state of another run or grid."""
        problems = []
        if state.get("version") != _STATE_VERSION:
            problems.append(f"state version {state.get('version')!r}, expected {_STATE_VERSION}.")
        if state.get("grid_hash") != self.store.spec.grid_hash:
            problems.append("state was taken on a different evaluation grid than this store's.")
        run = dict(state.get("run", {}))
        if run != dict(self.run):
            problems.append(f"state belongs to run {run}, not ({schema.describe_run(self.run)}).")
        ValidationError.raise_if(problems, "OutputCollector.load_state_dict")
        self._buffer.clear()
        self._step = int(state["step"])
        self._next = int(state["next_index"])
