"""OutputCollector: records a model's outputs on the store's grid at scheduled optimizer steps."""

from __future__ import annotations

import collections
import copy
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ensemble_stats import schema
from ensemble_stats.errors import RunExistsError, ValidationError
from ensemble_stats.store import EnsembleStore

from ._records import RecordBuffer

_STATE_VERSION = 1


class CollectorHandle:
    """Returned by :meth:`OutputCollector.attach`; ``detach()`` flushes and removes the optimizer hook."""

    def __init__(self, collector: OutputCollector, hook):
        self._collector = collector
        self._hook = hook

    def detach(self) -> None:
        """Remove the hook, write what is buffered and stop the background worker."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            self._collector.close()

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
        ``metrics(model) -> {name: float}`` for further per-record scalars: the known ones (``train_loss``,
        ``output_weight_norm``, ...) or any metric the store declared at creation (``metrics=`` of
        :meth:`EnsembleStore.create`, e.g. a gradient norm or a parameter displacement).
    kernel
        Also record the fields the store declares (``ntk_points``, ``layers`` of :meth:`EnsembleStore.create`):
        the model's empirical NTK on the NTK sub-grid (:func:`model_ntk`, over its trainable parameters) and the
        displacement of the named parameters (``model.named_parameters()`` names) from their values at
        :meth:`attach` (or at the first record, which must then be step 0).
    background
        Evaluate and write on a worker thread: at each record the parameters and buffers are copied into a
        private copy of the model, which is evaluated concurrently with training. It pays only where spare
        cores exist; on 2 cores it slowed the reference loop down (``benchmarks/bench_collector.py`` measures
        both). The default evaluates the model itself, synchronously.

    Notes
    -----
    The collector holds the run's write lock from construction to :meth:`close` (:class:`RunLockedError` if
    another live writer holds it; the lock of a process that died is taken over, see ``run_lock.took_over``).
    Records are buffered and written when a time chunk completes, on :meth:`flush`, :meth:`state_dict`,
    ``detach()`` and context-manager exit; these wait for background work and re-raise its errors.
    Evaluation runs under ``torch.no_grad()`` in eval mode; the user's model keeps its mode.
    ``metrics`` receives the model that was evaluated (the private copy when ``background=True``).
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
        background: bool = False,
        kernel: bool = False,
        **extra_coords: Any,
    ):
        self.store = store
        self.index = store.run_index(gamma, width, seed, **extra_coords)
        self.run = store.run_coords(self.index)
        self.schedule = store.record_steps(int(width), steps_per_epoch)
        self.loss_fn = loss_fn
        self.metrics = metrics
        self.resume = resume
        self.kernel = kernel
        self._initial: dict[str, torch.Tensor] | None = None
        if kernel and not store.spec.field_shapes:
            raise ValidationError(
                "kernel=True but the store declares no NTK sub-grid and no layers; create it with "
                "EnsembleStore.create(..., ntk_points='all' or [indices], layers=[parameter names])."
            )
        written = store.written_mask(self.index)
        if written.any() and not resume:
            raise RunExistsError(
                f"run ({schema.describe_run(self.run)}) already has {int(written.sum())} of {written.size} records "
                f"in {store.path}; pass resume=True to continue it (records are re-written idempotently), or use "
                "another seed."
            )
        self._step = 0
        self._next = 0  # index into schedule of the next record to take
        self._grid_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.background = background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self.taken: collections.deque[tuple[int, dict[str, float]]] = collections.deque()
        """(step, scalars) of every record evaluated by this collector, in the order taken (a logger drains it)."""
        self._shadow: tuple[torch.nn.Module, torch.nn.Module] | None = None  # (source model, private copy)
        # one writer per run: a second live collector for this run is refused; a dead one's lock is taken over
        self._records = RecordBuffer(store, self.index, self.schedule)

    @property
    def run_lock(self):
        """The run's write lock (held until :meth:`close`)."""
        return self._records.run_lock

    # ------------------------------------------------------------------ hooks
    def attach(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, start_step: int | None = None
    ) -> CollectorHandle:
        """Attach to ``optimizer.step`` so outputs are recorded after each scheduled step.

        Records step 0 now if it is scheduled and not yet taken. ``start_step`` sets the optimizer step count
        when resuming from a checkpoint without a collector ``state_dict``.
        """
        if start_step is not None:
            self._seek(int(start_step))
        if self.kernel and self._step == 0 and self._initial is None:
            self._initial = {k: v.detach().clone() for k, v in model.named_parameters()}
        self.on_step(model, self._step)

        def hook(opt, args, kwargs):
            self.on_step(model, self._step + 1)

        return CollectorHandle(self, optimizer.register_step_post_hook(hook))

    def on_step(self, model: torch.nn.Module, step: int) -> bool:
        """Record ``model`` if the run's ``step`` optimizer steps are a scheduled record not yet taken.

        Record ``model`` if ``step`` is scheduled and not yet taken.

        Call it after every optimizer step (the ``attach`` hook and the Lightning callback do); calling it
        again at the same step does nothing. Returns whether a record was taken.

        Raises
        ------
        ValidationError
            ``step`` went backwards, or skipped a scheduled step (that record would be lost).
        """
        step = int(step)
        if step < self._step:
            raise ValidationError(f"optimizer step {step} is before the step already seen ({self._step}).")
        missed = self.schedule[self._next : int(np.searchsorted(self.schedule, step))]
        if missed.size:
            raise ValidationError(
                f"run ({schema.describe_run(self.run)}) went from step {self._step} to {step}, past the scheduled "
                f"record(s) at step {missed.tolist()}; call on_step after every optimizer step."
            )
        self._step = step
        if self._next < len(self.schedule) and self.schedule[self._next] == step:
            self.record(model, step)
            return True
        return False

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
        """Return the outputs (point, output) on the grid and the scalars, without recording.

        The scalars: loss_fn, accuracy and metrics.

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

    def _claim(self, step: int, scalars: Mapping[str, float]) -> int:
        """Check that ``step`` is the next (or a later) scheduled record; return its time index."""
        step = int(step)
        j = int(np.searchsorted(self.schedule, step))
        if j >= len(self.schedule) or self.schedule[j] != step:
            raise ValidationError(
                f"step {step} is not a recording step of run ({schema.describe_run(self.run)}); scheduled steps are "
                f"{self.schedule.tolist()}."
            )
        if j < self._next:
            raise ValidationError(f"step {step} was already recorded for run ({schema.describe_run(self.run)}).")
        self._records.check_scalars(scalars)
        self._raise_background_error()
        self._next = j + 1
        self._step = max(self._step, step)
        return j

    def record(self, model: torch.nn.Module, step: int, **scalars: float) -> None:
        """Evaluate ``model`` on the grid and record it as optimizer step ``step`` (must be scheduled)."""
        j = self._claim(step, scalars)
        extra = {k: float(v) for k, v in scalars.items()}
        if not self.background:
            self._take(model, j, int(step), extra)
            return
        shadow = self._shadow_of(model)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._pending.append(self._pool().submit(self._take_snapshot, shadow, state, j, int(step), extra))

    def record_output(self, step: int, output: np.ndarray, **scalars: float) -> None:
        """Record outputs computed elsewhere (e.g. by a vectorised trainer): ``output`` dims (point, output)."""
        j = self._claim(step, scalars)
        out = np.asarray(output)
        expected = (self.store.spec.n_points, self.store.spec.output_size)
        if out.shape != expected:
            raise ValidationError(f"output has shape {out.shape}, expected {expected} (point, output).")
        scalars = {k: float(v) for k, v in scalars.items()}
        self._records.add(j, int(step), out, scalars)
        self.taken.append((int(step), dict(scalars)))

    def mark_diverged(self, step: int) -> None:
        """Record that the run produced non-finite values at optimizer ``step`` (earliest step kept)."""
        self._records.mark_diverged(step)

    def _take_snapshot(self, shadow: torch.nn.Module, state: dict, j: int, step: int, extra: dict) -> None:
        shadow.load_state_dict(state)
        self._take(shadow, j, step, extra)

    def _take(self, model: torch.nn.Module, j: int, step: int, extra: dict[str, float]) -> None:
        out, auto = self.evaluate(model)
        auto.update(extra)
        self._records.add(j, step, out, auto, self._fields(model, step) if self.kernel else None)
        self.taken.append((step, dict(auto)))  # deque.append is thread-safe: the background worker

    def _fields(self, model: torch.nn.Module, step: int) -> dict[str, np.ndarray]:
        from ._ntk import _check_layers, model_ntk, relative_displacement

        spec = self.store.spec
        out = {}
        if spec.layers:
            params = dict(model.named_parameters())
            _check_layers(spec.layers, params)
            if self._initial is None:
                if step != 0:
                    raise ValidationError(
                        f"the displacement needs the initial parameters: attach() the collector before training, or "
                        f"record step 0 first (this first record is step {step})."
                    )
                self._initial = {k: v.detach().clone() for k, v in params.items()}
            disp = relative_displacement(params, self._initial, spec.layers, member_axis=False)
            out[schema.DISPLACEMENT] = disp.cpu().numpy()
        if spec.ntk_points:
            x = self._grid_tensors(model)[0][list(spec.ntk_points)]  # on the model's device and dtype
            was_training = model.training
            model.eval()
            try:
                with torch.enable_grad():
                    out[schema.NTK] = model_ntk(model, x).cpu().numpy()
            finally:
                model.train(was_training)
        return out

    def _shadow_of(self, model: torch.nn.Module) -> torch.nn.Module:
        if self._shadow is None or self._shadow[0] is not model:
            self.wait()
            try:
                copy_ = copy.deepcopy(model)
            except Exception as e:  # noqa: BLE001 - any failure to copy means background mode cannot work
                raise ValidationError(
                    f"the model could not be copied for background evaluation ({type(e).__name__}: {e}); "
                    "pass background=False to OutputCollector."
                ) from None
            copy_.eval()
            self._shadow = (model, copy_)
        return self._shadow[1]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # one intra-op thread in the worker: two OpenMP pools spinning on the same cores slow training down
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix="ensemble-collector", initializer=torch.set_num_threads, initargs=(1,)
            )
        return self._executor

    def _raise_background_error(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()  # re-raises an error from the worker in the training thread

    def wait(self) -> None:
        """Block until background evaluations are done; re-raise the first error."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def flush(self) -> None:
        """Wait for background work, then write and commit every buffered record."""
        self.wait()
        self._records.flush()

    def close(self) -> None:
        """Flush, stop the background worker and release the run's lock (even if the flush fails)."""
        try:
            self.flush()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._shadow = None
            self._records.release()

    def __enter__(self) -> OutputCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        self.wait()
        self._records.clear()
        self._step = int(state["step"])
        self._next = int(state["next_index"])
