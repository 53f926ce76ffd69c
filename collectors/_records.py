"""One record path: the record buffer, the trainer's collector interface and its store writer.

The record buffer every writer builds on, the :class:`BlockCollector` interface of the trainer, and the
trainer's store writer (one block collector among the others).

A :class:`RecordBuffer` is one writer unit of a store (a run, or one gamma's seed block when the store is
chunked by seed block): it holds the unit's write lock, checks the scalar names against the store, buffers
records and writes them when a time chunk completes, and marks divergence. :class:`OutputCollector` (a user's
own loop) and the block trainer's store writer both write through it.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ensemble_stats.errors import ValidationError
from ensemble_stats.store import EnsembleStore

__all__ = ["Block", "BlockCollector", "BlockModel", "RecordBuffer", "call_hooks"]


def stack_records(buffer: list, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, dict]:
    """Arrays for ``EnsembleStore.write_records`` from buffered ``(time_index, step, output, scalars, fields)`` records.

    Records are stacked along ``axis``: 0 for one run's (point, output) outputs, 1 for a block whose outputs
    carry a leading member axis. A scalar or field missing from a record is NaN there.
    """
    ti = np.array([b[0] for b in buffer])
    steps = np.array([b[1] for b in buffer], dtype=np.int64)
    out = np.stack([b[2] for b in buffer], axis)
    names = sorted({k for b in buffer for k in b[3]})
    with np.errstate(over="ignore"):  # a diverging run's huge values become +-inf: stored as is
        scalars = {
            n: np.stack([np.asarray(b[3].get(n, np.nan), dtype=np.float32) for b in buffer], axis) for n in names
        }
    fields = {}
    for n in sorted({k for b in buffer for k in b[4]}):
        like = next(np.asarray(b[4][n]) for b in buffer if n in b[4])
        fields[n] = np.stack(
            [np.asarray(b[4].get(n, np.full(like.shape, np.nan)), dtype=np.float64) for b in buffer], axis
        )
    return ti, steps, out, scalars, fields


class RecordBuffer:
    """The buffered records of one writer unit of ``store``, written at time-chunk boundaries.

    Parameters
    ----------
    store : the store
    index : the unit's index along (gamma, width, seed, *extra); the seed may be a slice of whole seed chunks
    schedule : optimizer step of every recording time, for this unit's width

    The unit's write lock is taken here and released by :meth:`close` (or :meth:`release`).
    """

    def __init__(self, store: EnsembleStore, index: Sequence[int | slice], schedule: np.ndarray):
        self.store, self.index, self.schedule = store, tuple(index), np.asarray(schedule)
        self.block = isinstance(self.index[2], slice)
        self._time_chunk = store.spec.time_chunk
        self._buffer: list[tuple[int, int, np.ndarray, dict]] = []
        self._mutex = threading.Lock()  # records may arrive from a background evaluation thread
        seed = self.index[2]
        # a unit of several seeds that are chunks of their own holds each run's lock; a seed block, its block's
        runs = (
            [(*self.index[:2], k, *self.index[3:]) for k in range(seed.start, seed.stop)]
            if self.block and store.spec.seed_chunk == 1
            else [self.index]
        )
        self._locks = []
        try:
            for run in runs:
                self._locks.append(store.lock(run).acquire())
        except BaseException:
            self.release()
            raise
        self.run_lock = self._locks[0]

    def check_scalars(self, names) -> None:
        """Refuse scalar names the store does not record, saying how to declare them."""
        unknown = set(names) - set(self.store.scalar_names)
        if unknown:
            raise ValidationError(
                f"unknown scalars {sorted(unknown)}; this store records {list(self.store.scalar_names)}. Declare "
                "further metrics when the store is created: EnsembleStore.create(..., metrics={name: long_name})."
            )

    def add(
        self, j: int, step: int, out: np.ndarray, scalars: Mapping[str, Any], fields: Mapping[str, Any] | None = None
    ) -> None:
        """Buffer record ``j`` (time index) taken at optimizer ``step``; write the chunk once it is complete."""
        self.check_scalars(scalars)
        with self._mutex:
            self._buffer.append((int(j), int(step), out, dict(scalars), dict(fields or {})))
            if (j + 1) % self._time_chunk == 0 or j + 1 == len(self.schedule):
                self._write()

    def flush(self) -> None:
        """Write and commit every buffered record."""
        with self._mutex:
            self._write()

    def _write(self) -> None:
        if not self._buffer:
            return
        ti, steps, out, scalars, fields = stack_records(self._buffer, axis=1 if self.block else 0)
        self.store.write_records(self.index, ti, out, steps, scalars, fields)
        self._buffer.clear()

    def clear(self) -> None:
        """Drop what is buffered (a resumed collector rewinds to its saved state)."""
        with self._mutex:
            self._buffer.clear()

    def mark_diverged(self, step: int, seed_offset: int | None = None) -> None:
        """Mark the run (or, in a block, the seed at ``seed_offset``) diverged at ``step`` (earliest kept)."""
        if not self.block:
            self.store.mark_diverged(self.index, int(step))
            return
        run = (*self.index[:2], self.index[2].start + int(seed_offset), *self.index[3:])
        self.store.mark_diverged(run, int(step), owner_of_block=True)

    def complete(self) -> bool:
        """Every record of the unit is written."""
        return bool(self.store.written_mask(self.index).all())

    def release(self) -> None:
        for lock in self._locks:
            lock.release()

    def close(self) -> None:
        """Flush, then release the lock (also when the flush fails)."""
        try:
            self.flush()
        finally:
            self.release()


@dataclass(frozen=True)
class Block:
    """What the block trainer trains: ``members`` = [(gamma, seed), ...] in the order of the member axis."""

    store: EnsembleStore
    width: int
    gammas: tuple[float, ...]
    seeds: tuple[int, ...]
    schedule: np.ndarray
    extra_coords: Mapping[str, Any]

    @property
    def members(self) -> list[tuple[float, int]]:
        return [(g, s) for g in self.gammas for s in self.seeds]


@dataclass(frozen=True)
class BlockModel:
    """The block's model as the trainer holds it, for collectors that need more than its outputs.

    ``params``: name -> the live parameter tensor of every member, stacked on a leading member axis (do not
    modify); ``buffers``: name -> per-member constants, stacked alike (e.g. each member's 1/N^gamma scales);
    ``apply(member_params, member_buffers, x)``: the forward pass of one member (the same names without the
    member axis) on inputs ``x`` (n, d_in), returning (n, outputs), usable under ``torch.func`` transforms
    (``vmap`` over both dicts gives the block); ``grid``: the evaluation grid's inputs on the training device;
    ``architecture``: the :class:`~collectors.Architecture` when the block is a ScaledMLP (closed-form paths use
    it), else None.
    """

    params: Mapping[str, Any]
    buffers: Mapping[str, Any]
    apply: Callable[[Mapping[str, Any], Mapping[str, Any], Any], Any]
    grid: Any
    architecture: Any = None


class BlockCollector:
    """A hook into the block trainer (:func:`~collectors.train_block` and the sweep).

    In the style of Lightning's ``Callback``: every hook is a no-op; override the ones you need.

    Hooks are called in this order, on every collector the same way (:func:`call_hooks`), the store's own
    writer first: ``on_block_start`` once; ``on_train_start`` once the parameters are initialised;
    ``record_fields`` then ``on_record`` at each scheduled record (step 0 first) and ``on_train_step`` after
    each optimizer step, interleaved as training goes; ``on_diverged`` when a member stops; ``on_block_end``
    once; ``close`` always, also after an error.

    (Not to be confused with :class:`~collectors.OutputCollector`, which records one run of your own training
    loop through the optimizer's hook.)
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        hook = cls.on_record
        if hook is BlockCollector.on_record or _takes_fields(hook):
            return
        warnings.warn(
            f"{cls.__qualname__}.on_record(step, outputs, scalars) takes no 'fields': the hook is now "
            "on_record(step, outputs, scalars, fields) (fields: name -> (member, ...) arrays the collectors' "
            "record_fields returned). The old form is called without them and goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )

        def on_record(self, step, outputs, scalars, fields, _old=hook):
            _old(self, step, outputs, scalars)

        cls.on_record = on_record

    @property
    def state_key(self) -> str:
        """The key of this collector's state in a checkpoint of several collectors."""
        return type(self).__qualname__

    def on_block_start(self, block: Block) -> None:
        """Start a block (its members, width and recording schedule are in ``block``)."""

    def on_train_start(self, model: BlockModel) -> None:
        """Start training: the members' parameters are initialised (``model.params``); no step is taken yet."""

    def record_fields(self, step: int, model: BlockModel) -> Mapping[str, Any]:
        """Per-member fields to store with the record at ``step``, name -> array (member, ...).

        Fields the store declares (``ntk``, ``displacement``; see :class:`~collectors.NTKCollector`). Default:
        none.
        """
        return {}

    def on_train_step(self, step: int, losses) -> None:
        """Receive the batch losses once ``step`` optimizer steps are done.

        ``losses`` (member,) is the batch loss of each member at that step (a detached tensor on the training
        device).
        """

    def on_record(
        self, step: int, outputs: np.ndarray, scalars: Mapping[str, np.ndarray], fields: Mapping[str, np.ndarray]
    ) -> None:
        """Receive the scheduled record at optimizer ``step``.

        ``outputs`` (member, point, output) on the grid, ``scalars`` name -> (member,) values (losses,
        accuracies, output weight norm), ``fields`` name -> (member, ...) arrays returned by the collectors'
        :meth:`record_fields` (empty when none declares any).
        """

    def on_diverged(self, member: int, step: int) -> None:
        """Member ``member`` produced non-finite values at ``step`` and is frozen from now on.

        Called before the next record (on a GPU the trainer checks the losses once per window of steps, so
        ``on_train_step`` may have seen later steps first).
        """

    def on_block_end(self, result) -> None:
        """Training finished; ``result`` is the :class:`~collectors.BlockResult`."""

    def close(self) -> None:
        """Release what the collector holds; called however the block ends."""

    def state_dict(self) -> dict[str, Any]:
        """Return the collector's state for a checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state :meth:`state_dict` returned."""
        return None


def _takes_fields(hook) -> bool:
    """Whether an ``on_record`` override accepts the ``fields`` argument (a fourth after ``self``)."""
    try:
        params = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return True  # not introspectable: trust it
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 5


def call_hooks(collectors: Sequence[BlockCollector], hook: str, *args) -> None:
    """Call ``hook`` with ``args`` on every collector, in order: the one way the trainer calls its collectors."""
    for c in collectors:
        getattr(c, hook)(*args)


class StoreWriter(BlockCollector):
    """The trainer's store writer, the first of a block's collectors: one :class:`RecordBuffer` per writer unit.

    A unit is one gamma's seeds when they are contiguous in the store (with seed blocks, ``seed_chunk > 1``,
    they must be), so that a record of the block is written in one call per gamma, whole chunks at once;
    otherwise one member's run.
    """

    def __init__(self, block: Block):
        store, width, extra = block.store, block.width, dict(block.extra_coords)
        self.S = len(block.seeds)
        self.units: list[RecordBuffer] = []
        self._rows: list[int | slice] = []  # the members (rows of a record) each unit takes
        self._member: list[tuple[int, int | None]] = []  # member -> (its unit, its offset in a seed block)
        try:  # the units hold the locks: released however this ends, so a retry can take them
            for gi, g in enumerate(block.gammas):
                idx = [store.run_index(g, width, s, **extra) for s in block.seeds]
                si = [i[2] for i in idx]
                contiguous = si == list(range(si[0], si[0] + self.S))
                if store.spec.seed_chunk > 1 and not contiguous:
                    raise ValidationError(
                        f"seeds {list(block.seeds)} are not contiguous in the store; a block must be whole seed chunks."
                    )
                first = gi * self.S
                if contiguous:
                    index = (idx[0][0], idx[0][1], slice(si[0], si[0] + self.S), *idx[0][3:])
                    self.units.append(RecordBuffer(store, index, block.schedule))
                    self._rows.append(slice(first, first + self.S))
                    self._member += [(len(self.units) - 1, k) for k in range(self.S)]
                else:
                    for k, i in enumerate(idx):
                        self.units.append(RecordBuffer(store, i, block.schedule))
                        self._rows.append(first + k)
                        self._member.append((len(self.units) - 1, None))
        except BaseException:
            self.close()
            raise

    def complete(self) -> bool:
        """Whether every record of the block is already written (nothing to train)."""
        return all(u.complete() for u in self.units)

    def on_record(
        self, step: int, outputs: np.ndarray, scalars: Mapping[str, np.ndarray], fields: Mapping[str, np.ndarray]
    ) -> None:
        j = int(np.searchsorted(self.units[0].schedule, step))
        for unit, rows in zip(self.units, self._rows, strict=True):
            unit.add(
                j,
                step,
                outputs[rows],
                {k: v[rows] for k, v in scalars.items()},
                {k: v[rows] for k, v in fields.items()},
            )

    def on_diverged(self, member: int, step: int) -> None:
        unit, offset = self._member[member]
        self.units[unit].mark_diverged(step, offset)

    def on_block_end(self, result) -> None:
        for unit in self.units:
            unit.flush()

    def close(self) -> None:
        for unit in self.units:
            unit.release()
