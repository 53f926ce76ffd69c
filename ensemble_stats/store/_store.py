"""The ensemble store: create or open a Zarr v3 store, and read and write its records (written only through here).

What a store is and its layout rules are in ``_spec.py``, its atomic creation in ``_build.py``; the writing rules:

* ``written`` is the commit mark, set after the data and scalars of a record are stored;
* writers own whole chunks (one run, or one seed block) and hold the unit's lock while writing;
* every record carries digests bound to its position and its store (``_integrity.py``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import zarr
from zarr.core.sync import sync as _sync

from .. import schema
from ..errors import (
    EphemeralStoreWarning,
    GridMismatchError,
    RunNotFoundError,
    SpecMismatchError,
    StoreCorruptionError,
    StoreNotFoundError,
    StoreWriteError,
    ValidationError,
    shorten,
)
from . import _integrity
from ._build import build
from ._grid import EvalGrid
from ._locks import NullLock, RunLock, lock_dir, lock_name
from ._paths import has_group, location
from ._spec import StoreSpec, new_spec, spec_attrs
from ._verify import verify_store

# A chunk equal to the fill value (an all-NaN diverged record) must still be written: otherwise `written`
# would mark a chunk that does not exist. It also spares zarr a full comparison of every chunk to the fill.
_ALWAYS_WRITE = {"write_empty_chunks": True}


class EnsembleStore:
    """A Zarr v3 ensemble store on a local path (see docs/store.md).

    Use :meth:`create` or :meth:`open`; write through :class:`~collectors.OutputCollector` or
    :meth:`write_records`.
    """

    def __init__(self, path: str | os.PathLike, group: zarr.Group, spec: StoreSpec):
        self.path = location(path)  # a local Path, or the URL of a store on object storage
        self.group = group
        self.spec = spec
        self._arrays: dict[str, zarr.Array] = {}
        self._coords = {
            schema.GAMMA: np.asarray(spec.gammas, dtype=np.float64),
            schema.WIDTH: np.asarray(spec.widths, dtype=np.int64),
            schema.SEED: np.asarray(spec.seeds, dtype=np.int64),
            **{name: np.asarray(v) for name, v in spec.extra},
        }

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        grid: EvalGrid,
        *,
        gammas: Sequence[float],
        widths: Sequence[int],
        seeds: Sequence[int],
        times: Sequence[float],
        time_units: str = "scaled",
        output_size: int | None = None,
        extra_dims: Mapping[str, Sequence] | None = None,
        time_chunk: int | None = None,
        seed_chunk: int = 1,
        dtype: str = "float32",
        check_space: bool = True,
        train: tuple | None = None,
        metrics: Mapping[str, str] | Sequence[str] | None = None,
        antithetic: bool = False,
        ntk_points: Sequence[int] | str | None = None,
        layers: Sequence[str] | None = None,
        **attrs,
    ) -> EnsembleStore:
        """Create a store, or open it if an identical one exists (safe under concurrent creators).

        Parameters
        ----------
        path
            Local directory to create (``*.zarr`` by convention).
        grid
            The evaluation grid, dims x (point, feature), target (point, output).
        gammas, widths, seeds, times
            Coordinates of the sweep dims and recording times.
        time_units
            ``"scaled"`` (t = k / N), ``"step"`` or ``"epoch"``.
        output_size
            Number of network outputs; defaults to the grid's target width.
        extra_dims
            Further sweep dims in order, e.g. ``{"data_seed": [0, 1]}``.
        time_chunk, seed_chunk
            Records per time chunk (default: about 4 MiB per chunk) and seeds per chunk (one writer's block).
        dtype
            Storage dtype of ``prediction``: ``"float32"`` (default) or ``"float64"``.
        check_space
            Refuse a store whose complete size exceeds the free space of its file system (default).
        train
            Optional training set ``(x_train, y_train)``, shapes (M, features) and (M, outputs), stored as
            ``x_train`` / ``y_train`` so the analysis can compute the kernel limit from the store alone.
        metrics
            Further per-record scalars beyond ``schema.SCALAR_VARIABLES`` (e.g. a gradient norm), as
            ``{name: long_name}`` or names: each becomes a float32 variable with the record dims, written by
            collectors whose ``metrics`` return it. Declared here, once, so concurrent writers never change
            the store's layout.
        antithetic
            The seeds are antithetic pairs by position (2k, 2k+1): a ``pair`` coordinate on ``seed`` (the pair's
            first seed) tells the analysis to use the pair-aware estimators. ``seed_chunk`` must be even.
        ntk_points, layers
            Declare the fields of :class:`~collectors.NTKCollector`: the grid points (``"all"`` or indices) of the
            empirical NTK ``ntk`` (record dims, ntk_point, ntk_point_2, output, output_2), and the parameter
            tensors of ``displacement`` (record dims, layer). A record of the NTK on P points and O outputs takes
            4 P^2 O^2 bytes per member: 40 kB at P = 100.
        **attrs
            Stored as group attributes, e.g. ``model={...}`` describing architecture, init law, lr rule.

        Raises
        ------
        ValidationError
            Listing every problem with the arguments.
        SpecMismatchError
            A store exists at ``path`` with a different specification, or with a different ``config`` attr.
        StoreWriteError
            The store cannot be written there (read-only, disk full); nothing is left behind.
        """
        path = location(path, "store")
        spec, metrics, train = new_spec(
            grid,
            gammas=gammas,
            widths=widths,
            seeds=seeds,
            times=times,
            time_units=time_units,
            output_size=output_size,
            extra_dims=extra_dims,
            time_chunk=time_chunk,
            seed_chunk=seed_chunk,
            dtype=dtype,
            train=train,
            metrics=metrics,
            antithetic=antithetic,
            ntk_points=ntk_points,
            layers=layers,
        )
        attrs = {**attrs, **spec_attrs(spec, metrics)}
        if isinstance(path, str) and path.startswith("memory://"):
            warnings.warn(
                f"{path} is held in this process's memory and vanishes when it exits (other processes, Dask "
                "workers included, never see it); use a directory or object storage for runs you want to keep.",
                EphemeralStoreWarning,
                stacklevel=3,
            )
        if build(path, spec, grid=grid, attrs=attrs, train=train, check_space=check_space):
            return cls.open(path)
        store = cls.open(path)
        store._check_request(grid, spec, attrs, explicit_time_chunk=time_chunk is not None)
        return store

    def _check_request(self, grid: EvalGrid, spec: StoreSpec, attrs: Mapping, explicit_time_chunk: bool) -> None:
        """Refuse an existing store that is not the one ``create`` was asked for."""
        self.check_grid(grid)
        requested = spec if explicit_time_chunk else replace(spec, time_chunk=self.spec.time_chunk)
        diffs = self.spec.differences(requested)
        # a sweep's training config is part of what the store holds: two creators with different configs racing
        # on a new path must not share it (the loser would write other training into the winner's store)
        if schema.ATTR_CONFIG in attrs and self.attrs.get(schema.ATTR_CONFIG) != attrs[schema.ATTR_CONFIG]:
            diffs.append(f"attrs['{schema.ATTR_CONFIG}']: the store was created by another sweep configuration")
        if diffs:
            raise SpecMismatchError(
                [*diffs, "Use a new path for a different sweep, or open this one with EnsembleStore.open(path)."],
                f"a different store already exists at {self.path}",
            )

    @classmethod
    def open(
        cls, path: str | os.PathLike, mode: str = "r+", *, storage: zarr.abc.store.Store | None = None
    ) -> EnsembleStore:
        """Open an existing store for writing (``mode="r+"``) or reading (``"r"``).

        ``storage`` replaces the zarr store used for I/O (e.g. a ``zarr.storage.WrapperStore`` around the
        local directory, for fault injection or instrumentation); ``path`` still names the store's directory,
        which holds the run locks and is what ``verify_store`` checks.

        Raises
        ------
        StoreNotFoundError
            ``path`` does not exist or is not an ensemble store.
        StoreCorruptionError
            The store's metadata, coordinates or grid no longer match what it was created with.
        """
        if mode not in ("r", "r+"):
            raise ValidationError(
                f"EnsembleStore.open(..., mode={shorten(mode)}): a store opens for reading ('r') or writing into its "
                "records ('r+', the default); zarr's 'w', 'w-' and 'a' would create or overwrite the group and "
                "lose the store's runs. Use EnsembleStore.create(path, grid, ...) for a new store."
            )
        path = location(path, "store")
        if not has_group(path):
            raise StoreNotFoundError(
                f"{path} is not an ensemble store (no zarr.json found); create one with EnsembleStore.create(...) "
                "or check the path."
            )
        try:
            g = zarr.open_group(storage if storage is not None else str(path), mode=mode, zarr_format=3)
        except Exception as e:  # noqa: BLE001 - any failure to parse means "not a store"
            raise StoreNotFoundError(f"{path} could not be opened as a Zarr v3 group ({e}).") from None
        attrs = g.attrs.asdict()
        if attrs.get(schema.ATTR_SCHEMA_VERSION) != schema.SCHEMA_VERSION:
            raise StoreNotFoundError(
                f"{path} is a Zarr group but not an ensemble store of schema v{schema.SCHEMA_VERSION} "
                f"(schema_version={attrs.get(schema.ATTR_SCHEMA_VERSION)!r})."
            )
        try:
            problems = _integrity.check_manifest(g)
        except Exception as e:  # noqa: BLE001 - unreadable metadata is corruption too
            problems = [f"the store's metadata cannot be read ({type(e).__name__}: {e})"]
        if problems:
            raise StoreCorruptionError(problems, str(path), repairable=False)
        spec = StoreSpec.from_group(g)
        return cls(path, g, spec)

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"EnsembleStore({str(self.path)!r}, gammas={len(s.gammas)}, widths={len(s.widths)}, seeds={len(s.seeds)}, "
            f"times={len(s.times)} [{s.time_units}], points={s.n_points}, outputs={s.output_size})"
        )

    @property
    def scalar_names(self) -> tuple[str, ...]:
        """The per-record scalars this store records: the known ones, then its declared metrics."""
        return self.spec.scalar_names

    def array(self, name: str) -> zarr.Array:
        """Return the zarr array ``name``, configured to write every chunk (array config is not persisted)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name].with_config(_ALWAYS_WRITE)
        return self._arrays[name]

    @property
    def attrs(self) -> dict:
        return self.group.attrs.asdict()

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.spec.times)

    def grid(self) -> EvalGrid:
        return EvalGrid(self.array(schema.X)[:], self.array(schema.TARGET)[:])

    # ------------------------------------------------------------------ runs
    def run_index(self, gamma: float, width: int, seed: int, **extra) -> tuple[int, ...]:
        """Integer index of a run along (gamma, width, seed, *extra dims).

        Raises
        ------
        RunNotFoundError
            A coordinate value is not in the store.
        """
        wanted = {schema.GAMMA: gamma, schema.WIDTH: width, schema.SEED: seed, **extra}
        unknown = set(extra) - set(self.spec.extra_dims)
        missing = [d for d in self.spec.extra_dims if d not in extra]
        problems = []
        if unknown:
            problems.append(
                f"unknown sweep dims {sorted(unknown)}; this store has extra dims {list(self.spec.extra_dims)}."
            )
        if missing:
            problems.append(f"missing values for sweep dims {missing}; pass them as keyword arguments.")
        idx = []
        for dim in (*schema.RUN_DIMS, *self.spec.extra_dims):
            if dim not in wanted:
                continue
            coord = self._coords[dim]
            value = wanted[dim]
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                problems.append(f"{dim}={shorten(value)} is not a number.")
                continue
            if np.issubdtype(coord.dtype, np.integer) and not float(value).is_integer():
                # 15.9999999999999 must not pass for width 16 (nor get width 15's schedule)
                problems.append(
                    f"{dim}={value!r} is not an integer; {dim} values are integers {shorten(coord.tolist())}."
                )
                continue
            hits = np.flatnonzero(np.isclose(coord, float(value), rtol=1e-12, atol=1e-12))
            if hits.size != 1:
                problems.append(f"{dim}={wanted[dim]!r} is not in the store; it has {dim} in {coord.tolist()}.")
            else:
                idx.append(int(hits[0]))
        if problems:
            raise RunNotFoundError("run not in store: " + " ".join(problems))
        return tuple(idx)

    def run_coords(self, index: Sequence[int]) -> dict:
        """Coordinate values of a run index, e.g. ``{'gamma': 0.75, 'width': 128, 'seed': 3}``."""
        dims = (*schema.RUN_DIMS, *self.spec.extra_dims)
        return {d: self._coords[d][i].item() for d, i in zip(dims, index, strict=True)}

    def record_steps(self, width: int, steps_per_epoch: int | None = None) -> np.ndarray:
        """Return the optimizer step of each recording time for a run of ``width``.

        See :func:`ensemble_stats.schema.record_steps`.
        """
        return schema.record_steps(self.times, self.spec.time_units, width, steps_per_epoch)

    def repair(self) -> list[dict]:
        """Un-commit every record that :func:`ensemble_stats.verify_store` flags, so resumed writers rewrite it.

        The flagged record chunks (corrupt, missing, or not matching their digest) are deleted from every
        per-record array, commit mark first, under their runs' write locks; a corrupt ``diverged_step`` chunk
        is reset. Stray partial files of dead writers are swept. A resumed sweep (``run_sweep``, ``ensemble-stats
        run``) then retrains exactly the cells that lost records.

        Returns
        -------
        list of dict
            The writer units un-committed, as run coordinates (``seed`` is the block's first seed).

        Raises
        ------
        StoreCorruptionError
            With ``repairable=False``, if the store's metadata, coordinates or grid are damaged: retraining
            cannot fix that.
        RunLockedError
            A live writer holds one of the affected runs; repair once it has finished.
        """
        problems = verify_store(self.path, clean=True)
        fatal = [p for p in problems if p.kind != "partial" and p.region is None]
        if fatal:
            raise StoreCorruptionError(fatal, str(self.path), repairable=False)
        n_run = len(self.spec.run_shape)
        targets: dict[tuple[int, ...], set[str]] = {}
        for p in problems:
            if p.region is None:
                continue
            unit = tuple(a for a, _ in p.region[:n_run])
            tc = self.spec.time_chunk
            chunks = targets.setdefault(unit, set())
            t0, t1 = p.region[n_run]
            chunks.update(f"t{k}" for k in range(t0 // tc, (t1 - 1) // tc + 1))
            if any(f"/{n}/" in p.path.replace("\\", "/") for n in (schema.DIVERGED_STEP, schema.DIVERGED_DIGEST)):
                chunks.add("diverged")
        store = self.group.store
        out = []
        for unit, chunks in sorted(targets.items()):
            index = (unit[0], unit[1], slice(unit[2], unit[2] + self.spec.seed_chunk), *unit[3:])
            with self.lock(index):
                sc = self.spec.seed_chunk
                run_chunk = (unit[0], unit[1], unit[2] // sc, *unit[3:])
                keys = []
                for c in sorted(k for k in chunks if k.startswith("t")):
                    for name in schema.record_variables(self.attrs_cached):
                        if name not in self._array_names:
                            continue
                        arr = self.group[name]
                        coords = (*run_chunk, int(c[1:]), *(0 for _ in arr.shape[n_run + 1 :]))
                        keys.append(f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}")
                if "diverged" in chunks:
                    for name in (schema.DIVERGED_STEP, schema.DIVERGED_DIGEST):
                        if name in self._array_names:
                            arr = self.group[name]
                            keys.append(f"{arr.path}/{arr.metadata.encode_chunk_key(run_chunk)}")
                for key in keys:  # the commit mark goes first: a repair killed midway leaves records uncommitted
                    _sync(store.delete(key))
            out.append(self.run_coords((unit[0], unit[1], unit[2], *unit[3:])))
        return out

    def written_mask(self, index: Sequence[int]) -> np.ndarray:
        """Bool (time,) of committed records of one run."""
        return np.asarray(self.array(schema.WRITTEN)[tuple(index)])

    def lock(self, index: Sequence[int | slice]) -> RunLock:
        """Return the (unacquired) write lock of the writer unit holding run ``index``.

        The run itself, or its seed block when ``seed_chunk > 1`` (``index`` may give the seed as a block
        slice).
        """
        seed = index[2]
        first = seed.start if isinstance(seed, slice) else int(seed)
        key = (int(index[0]), int(index[1]), first // self.spec.seed_chunk, *(int(i) for i in index[3:]))
        if isinstance(self.path, str):
            return NullLock(self._describe(index))  # object storage: see NullLock for why none is needed
        return RunLock(lock_dir(self.path) / lock_name(key), self._describe(index))

    def check_grid(self, grid: EvalGrid) -> None:
        """Raise :class:`GridMismatchError` naming the first differing point if ``grid`` is not the store's."""
        if grid.hash == self.spec.grid_hash:
            return
        mine = self.grid()
        if mine.x.shape != grid.x.shape or mine.target.shape != grid.target.shape:
            detail = f"store grid has x {mine.x.shape}, target {mine.target.shape}; given x {grid.x.shape}, target {grid.target.shape}"
        else:
            diff = np.flatnonzero(np.any(mine.x != grid.x, axis=1) | np.any(mine.target != grid.target, axis=1))
            i = int(diff[0])
            detail = f"first difference at point {i}: store x={mine.x[i].tolist()}, given x={grid.x[i].tolist()}"
        raise GridMismatchError(
            f"the evaluation grid differs from the store's ({detail}); use the store's grid: store.grid()."
        )

    # ------------------------------------------------------------------ writing
    def write_records(
        self,
        index: Sequence[int | slice],
        time_index: Sequence[int],
        prediction: np.ndarray,
        step: Sequence[int],
        scalars: Mapping[str, np.ndarray] | None = None,
        fields: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write records of one run (or one whole seed block) and commit them.

        Parameters
        ----------
        index
            Run index along (gamma, width, seed, *extra); ``seed`` may be a slice covering whole seed chunks.
        time_index : (n,)
            Strictly increasing indices into ``time``.
        prediction : array, dims ([seed,] n, point, output)
            Raw outputs; a leading seed axis only when ``index`` has a seed slice.
        step : (n,)
            Optimizer step of each record.
        scalars
            Optional per-record scalars (``schema.SCALAR_VARIABLES`` and the store's declared metrics), shape
            ([seed,] n).
        fields
            Optional per-record fields the store declares (``ntk``, ``displacement``), shape ([seed,] n, ...);
            NaN where not given (e.g. records at which the NTK is not computed).

        Writes data, then scalars and steps, then ``written`` (the commit mark). Writing the same records
        twice leaves the same store.
        """
        sel, block = self._selection(index)
        where = f"write_records({self._describe(index)})"
        ti = np.asarray(time_index)
        if ti.dtype.kind not in "iu":  # a float index would be truncated silently
            raise ValidationError(f"time_index has dtype {ti.dtype}; expected integer indices into time.", where)
        ti, steps, pred = ti.astype(np.int64), np.asarray(step), np.asarray(prediction)
        lead = (block,) if block else ()
        scalars, fields = dict(scalars or {}), dict(fields or {})
        problems = self._record_problems(sel, lead, ti, steps, pred)
        problems += self._scalar_problems(scalars, (*lead, ti.size))
        problems += self._field_problems(fields, (*lead, ti.size))
        ValidationError.raise_if(problems, where)
        data = self._record_data(sel, lead, ti, pred, steps, scalars, fields)
        # judged on the values as stored: a float64 1e300 becomes +inf in a float32 store and marks the run diverged
        finite = np.isfinite(data[schema.PREDICTION]).reshape(*lead, ti.size, -1).all(axis=-1)
        try:
            self._commit(sel, ti, data, finite, steps)
        except OSError as e:
            tc = self.spec.time_chunk
            chunks = sorted({int(t) // tc for t in ti})
            err = StoreWriteError(
                f"writing records {ti.tolist()} of run ({self._describe(index)}) to {self.path} failed in time "
                f"chunk(s) {chunks} ({type(e).__name__}: {e}). Records not marked written are not committed and a "
                "resumed writer re-writes them: fix the cause (e.g. free disk space), then resume (resume=True)."
            )
            err.errno = e.errno
            raise err from e

    def _record_problems(self, sel, lead: tuple, ti: np.ndarray, steps: np.ndarray, pred: np.ndarray) -> list[str]:
        """List what is wrong with the time indices, predictions and steps of a write."""
        problems = []
        T = len(self.spec.times)
        if ti.ndim != 1 or ti.size == 0 or np.any(np.diff(ti) <= 0) or ti.min() < 0 or ti.max() >= T:
            problems.append(f"time_index must be strictly increasing indices in [0, {T}), got {ti.tolist()}.")
        expected = (*lead, ti.size, self.spec.n_points, self.spec.output_size)
        if pred.shape != expected:
            problems.append(f"prediction has shape {pred.shape}, expected {expected} ([seed,] time, point, output).")
        if not np.issubdtype(pred.dtype, np.floating):
            problems.append(
                f"prediction has dtype {pred.dtype}; expected floating point (stored as {self.spec.dtype})."
            )
        if steps.shape != (ti.size,) or not np.issubdtype(steps.dtype, np.integer) or (steps.size and steps.min() < 0):
            problems.append(f"step must be {ti.size} non-negative integers, got {steps.tolist()}.")
        elif np.any(np.diff(steps) <= 0):
            problems.append(f"steps must be strictly increasing, got {shorten(steps.tolist())}.")
        elif not problems:
            problems += self._schedule_problems(sel, ti, steps)
        return problems

    def _scalar_problems(self, scalars: Mapping, shape: tuple) -> list[str]:
        problems = []
        names = self.scalar_names
        for name, values in scalars.items():
            if name not in names:
                problems.append(
                    f"unknown scalar {name!r}; this store records {list(names)} (declare further metrics with "
                    "EnsembleStore.create(..., metrics=...))."
                )
            elif np.shape(values) != shape:
                problems.append(f"scalar {name!r} has shape {np.shape(values)}, expected {shape}.")
            elif np.asarray(values).dtype.kind not in "biuf":
                problems.append(
                    f"scalar {name!r} has dtype {np.asarray(values).dtype}; expected numbers (stored as float32)."
                )
        return problems

    def _field_problems(self, fields: Mapping, shape: tuple) -> list[str]:
        problems = []
        shapes = self.spec.field_shapes
        for name, values in fields.items():
            if name not in shapes:
                problems.append(
                    f"unknown field {name!r}; this store records {list(shapes) or 'no fields'} (declare them with "
                    "EnsembleStore.create(..., ntk_points=..., layers=...))."
                )
            elif np.shape(values) != (*shape, *shapes[name]):
                problems.append(f"field {name!r} has shape {np.shape(values)}, expected {(*shape, *shapes[name])}.")
        return problems

    def _record_data(self, sel, lead: tuple, ti, pred, steps, scalars: Mapping, fields: Mapping) -> dict:
        """Every array of the records as it will be stored (region shape), digests included."""
        full = (*(_len(r) for r in sel), ti.size)

        def shaped(values, dtype) -> np.ndarray:
            with np.errstate(over="ignore"):  # a diverging run's huge values become +-inf: stored as is
                values = np.asarray(values, dtype=dtype)
            return values.reshape(full + values.shape[len(lead) + 1 :])

        data = {
            schema.PREDICTION: shaped(pred, self.spec.dtype),
            schema.STEP: shaped(np.broadcast_to(steps, (*lead, ti.size)), np.int64),
        }
        # every scalar is written, NaN where not given: a record's stored state is then what this call wrote,
        # whatever an earlier write left, and its digest can be computed from the values at hand
        nan = np.full((*lead, ti.size), np.nan, dtype=np.float32)
        names = self.scalar_names
        data.update({name: shaped(scalars.get(name, nan), np.float32) for name in names})
        for name, trailing in self.spec.field_shapes.items():  # like the scalars: NaN where not given
            given = fields.get(name)
            data[name] = shaped(
                np.full((*lead, ti.size, *trailing), np.nan) if given is None else given, self.spec.dtype
            )
        if self.has_digests:
            key = _integrity.store_key(self.attrs_cached[schema.ATTR_STORE_ID])
            positions = [np.arange(r.start, r.stop) for r in sel] + [ti]
            keys = _integrity.position_keys(key, positions)
            data[schema.DIGEST] = _integrity.record_digest(
                keys, _integrity.prediction_parts(data[schema.PREDICTION], data[schema.STEP])
            )
            data[schema.SCALAR_DIGEST] = _integrity.record_digest(
                keys, _integrity.scalar_parts(data[schema.STEP], [data[n] for n in names])
            )
        return data

    def _commit(self, sel, ti: np.ndarray, data: Mapping, finite: np.ndarray, steps: np.ndarray) -> None:
        """Store the records' arrays, the divergence marks, then ``written`` (the commit mark) last."""
        contiguous = ti[-1] - ti[0] + 1 == ti.size
        region = (*sel, slice(int(ti[0]), int(ti[-1]) + 1) if contiguous else ti)
        ones = np.ones(data[schema.STEP].shape, dtype=bool)
        if contiguous:
            # data, scalars, steps and digests go out concurrently on zarr's event loop: one round trip
            _sync(_gather([self.array(n)._async_array.setitem(region, v) for n, v in data.items()]))
        else:
            for name, values in data.items():
                self.array(name).oindex[region] = values
        if not finite.all():
            self._mark_diverged(sel, finite, steps)
        if contiguous:  # the commit mark, only once everything above is stored
            self.array(schema.WRITTEN)[region] = ones
        else:
            self.array(schema.WRITTEN).oindex[region] = ones

    @property
    def has_digests(self) -> bool:
        """Whether this store keeps per-record digests (stores created before them do not)."""
        return schema.DIGEST in self._array_names and schema.ATTR_STORE_ID in self.attrs_cached

    @functools.cached_property
    def _array_names(self) -> frozenset[str]:
        return frozenset(_integrity.member_arrays(self.group)[0])

    @functools.cached_property
    def attrs_cached(self) -> dict:
        """The group attrs as read when first needed (they do not change after creation)."""
        return self.group.attrs.asdict()

    def _schedule_problems(self, sel, ti: np.ndarray, steps: np.ndarray) -> list[str]:
        """List the steps that contradict the recording times (step units: step = t; scaled: step = round(t N))."""
        units = self.spec.time_units
        if units == "epoch":
            return []  # steps per epoch are the writer's to know
        width = int(self.spec.widths[sel[1].start])
        try:
            schedule = self.record_steps(width)
        except ValidationError:
            return []  # times that collide at this width: no collector can record them; direct writes may
        want = schedule[ti]
        if not np.array_equal(want, steps):
            i = int(np.flatnonzero(want != steps)[0])
            return [
                f"step {int(steps[i])} does not match recording time {self.spec.times[int(ti[i])]} ({units}) at width "
                f"{width}, which is step {int(want[i])}; pass the optimizer step of each scheduled record."
            ]
        return []

    def mark_diverged(self, index: Sequence[int], step: int, *, owner_of_block: bool = False) -> None:
        """Set a run's ``diverged_step`` to ``step`` unless an earlier step is already recorded.

        With seed blocks (``seed_chunk > 1``) only the writer that owns the run's whole block may call this,
        saying so with ``owner_of_block=True``.
        """
        if owner_of_block:
            sel = tuple(slice(int(i), int(i) + 1) for i in index)
        else:
            sel, _ = self._selection(index)
        current = np.asarray(self.array(schema.DIVERGED_STEP)[sel])
        first = int(current.reshape(-1)[0])
        if first == schema.MISSING_STEP or step < first:
            self._set_diverged(sel, np.full(current.shape, int(step), dtype=np.int64))

    def _mark_diverged(self, sel, finite, steps) -> None:
        """Keep the earliest step with non-finite outputs per run (idempotent under rewrites)."""
        never = np.iinfo(np.int64).max
        finite = finite.reshape(-1, finite.shape[-1])
        candidate = np.where(finite.all(axis=-1), never, steps[np.argmax(~finite, axis=-1)])
        current = np.asarray(self.array(schema.DIVERGED_STEP)[sel])
        first = np.minimum(candidate.reshape(current.shape), np.where(current == schema.MISSING_STEP, never, current))
        self._set_diverged(sel, np.where(first == never, schema.MISSING_STEP, first))

    def _set_diverged(self, sel, values: np.ndarray) -> None:
        """Write runs' ``diverged_step`` and, where the store keeps one, its digest (one round trip)."""
        values = np.asarray(values, dtype=np.int64)
        writes = [self.array(schema.DIVERGED_STEP)._async_array.setitem(sel, values)]
        if schema.DIVERGED_DIGEST in self._array_names:
            key = _integrity.store_key(self.attrs_cached[schema.ATTR_STORE_ID])
            digest = _integrity.diverged_digests(key, [s.start for s in sel], values)
            writes.append(self.array(schema.DIVERGED_DIGEST)._async_array.setitem(sel, digest))
        _sync(_gather(writes))

    def _selection(self, index: Sequence[int | slice]) -> tuple[tuple, int]:
        n = len(self.spec.run_shape)
        if len(index) != n:
            raise ValidationError(
                f"run index has {len(index)} entries, expected {n} ({(*schema.RUN_DIMS, *self.spec.extra_dims)})."
            )
        sel, block = [], 0
        for axis, i in enumerate(index):
            size = self.spec.run_shape[axis]
            if isinstance(i, slice):
                start, stop, stride = i.indices(size)
                if axis != 2 or stride != 1:
                    raise ValidationError(f"only the seed axis may be written as a block, got a slice on axis {axis}.")
                c = self.spec.seed_chunk
                if start % c or (stop % c and stop != size) or stop <= start:
                    raise ValidationError(
                        f"seed block {start}:{stop} does not cover whole seed chunks of {c}; writers own whole "
                        "chunks, so write blocks aligned to seed_chunk."
                    )
                sel.append(slice(start, stop))
                block = stop - start
            else:
                if isinstance(i, bool) or not isinstance(i, int | np.integer):
                    raise ValidationError(
                        f"run index entry {shorten(i)} on axis {axis} is not an integer; pass integer indices "
                        "(EnsembleStore.run_index(gamma, width, seed) gives them)."
                    )
                i = int(i)
                if not 0 <= i < size:
                    raise RunNotFoundError(f"run index {i} on axis {axis} is outside [0, {size}).")
                if axis == 2 and self.spec.seed_chunk != 1:
                    raise ValidationError(
                        f"this store chunks {self.spec.seed_chunk} seeds together, so one seed cannot be written alone "
                        "without sharing a chunk; write the whole seed block (the vectorised trainer does)."
                    )
                sel.append(slice(i, i + 1))
        return tuple(sel), block

    def _describe(self, index) -> str:
        try:
            if isinstance(index[2], slice):  # a seed block
                a, b = index[2].start, index[2].stop - 1
                run = self.run_coords((*index[:2], a, *index[3:]))
                run[schema.SEED] = f"{self.spec.seeds[a]}..{self.spec.seeds[b]}"
                return schema.describe_run(run)
            return schema.describe_run(self.run_coords(index))
        except Exception:  # noqa: BLE001 - slices or bad indices: fall back to the raw index
            return repr(tuple(index))


async def _gather(coros):
    return await asyncio.gather(*coros)


def _len(s: slice) -> int:
    return s.stop - s.start
