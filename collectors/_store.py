"""The ensemble store: a Zarr v3 group laid out by ``ensemble_stats.schema``, written only through here.

Layout rules (docs/store.md):

* every chunk of a per-run array holds exactly one run (or one seed block of ``seed_chunk`` seeds), so
  concurrent writers never share a chunk;
* ``time`` is chunked, so a writer flushes completed time chunks without rewriting earlier ones;
* every array carries a crc32c checksum, so corruption is an error on read, never a wrong number;
* ``written`` is the commit mark, set after the data and scalars of a record are stored;
* no consolidated metadata (it goes stale).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import operator
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.sync import sync as _sync

import ensemble_stats
from ensemble_stats import _integrity, schema
from ensemble_stats._locks import NullLock, RunLock, lock_dir, lock_name
from ensemble_stats._paths import location, remote_exists, remote_fs, remove_stale_siblings, temp_sibling
from ensemble_stats._verify import verify_store
from ensemble_stats.errors import (
    EnsembleStatsError,
    GridMismatchError,
    RunNotFoundError,
    SpecMismatchError,
    StoreCorruptionError,
    StoreNotFoundError,
    StoreWriteError,
    ValidationError,
    shorten,
)

from ._grid import EvalGrid

_RECORD_TARGET_BYTES = 4 << 20  # default time chunk aims at about 4 MiB of predictions per chunk
_FLOAT_DTYPES = ("float32", "float64")


def _codecs():
    return [Crc32cCodec()]


# A chunk equal to the fill value (an all-NaN diverged record) must still be written: otherwise `written`
# would mark a chunk that does not exist. It also spares zarr a full comparison of every chunk to the fill.
_ALWAYS_WRITE = {"write_empty_chunks": True}


@dataclass(frozen=True)
class StoreSpec:
    """Everything that defines a store's layout; two stores with equal specs are interchangeable.

    ``extra`` maps each extra sweep dim (e.g. ``data_seed``) to its coordinate values, in dim order.
    """

    gammas: tuple[float, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    times: tuple[float, ...]
    time_units: str
    n_points: int
    n_features: int
    output_size: int
    grid_hash: str
    time_chunk: int
    seed_chunk: int = 1
    dtype: str = "float32"
    extra: tuple[tuple[str, tuple[float, ...]], ...] = field(default_factory=tuple)
    metrics: tuple[str, ...] = ()

    @property
    def extra_dims(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.extra)

    @property
    def run_shape(self) -> tuple[int, ...]:
        return (len(self.gammas), len(self.widths), len(self.seeds), *(len(v) for _, v in self.extra))

    @property
    def run_chunks(self) -> tuple[int, ...]:
        return (1, 1, self.seed_chunk, *(1 for _ in self.extra))

    def differences(self, other: StoreSpec) -> list[str]:
        """Human-readable differences, field by field."""
        out = []
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: store has {_short(a)}, requested {_short(b)}")
        return out


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 120 else s[:117] + "..."


def default_time_chunk(n_times: int, n_points: int, output_size: int, seed_chunk: int) -> int:
    record = max(1, n_points * output_size * 4 * seed_chunk)
    return int(max(1, min(n_times, _RECORD_TARGET_BYTES // record)))


def _validate_layout(spec: StoreSpec) -> list[str]:
    problems = []  # the coordinates themselves are validated, uncoerced, in EnsembleStore.create
    for name, values in spec.extra:
        if name in (*schema.RUN_DIMS, schema.TIME, schema.POINT, schema.OUTPUT, schema.FEATURE):
            problems.append(f"extra dim '{name}' clashes with a schema dim; choose another name.")
        problems += schema.validate_seeds(values, name) if name.endswith("seed") else []
    if spec.dtype not in _FLOAT_DTYPES:
        problems.append(f"dtype {spec.dtype!r} is not one of {_FLOAT_DTYPES}.")
    if not (isinstance(spec.time_chunk, int) and spec.time_chunk >= 1):
        problems.append(f"time_chunk must be an integer >= 1, got {spec.time_chunk!r}.")
    if not (isinstance(spec.seed_chunk, int) and spec.seed_chunk >= 1):
        problems.append(f"seed_chunk must be an integer >= 1, got {spec.seed_chunk!r}.")
    elif len(spec.seeds) % spec.seed_chunk:
        problems.append(
            f"seed_chunk={spec.seed_chunk} does not divide the {len(spec.seeds)} seeds: the last chunk would be "
            "shared by a partial block; choose a seed_chunk that divides the number of seeds."
        )
    if spec.output_size < 1:
        problems.append(f"output_size must be >= 1, got {spec.output_size}.")
    return problems


def check_chunk_ownership(shape: Sequence[int], chunks: Sequence[int], n_run_dims: int, seed_chunk: int) -> list[str]:
    """Problems with a chunk layout that would let two writers share a chunk.

    A per-run array of dims (run dims..., time[, point, output]) may chunk the run dims only by 1, except
    ``seed`` (axis 2), which may be chunked by the writer's seed block.
    """
    problems = []
    for axis in range(n_run_dims):
        allowed = seed_chunk if axis == 2 else 1
        if chunks[axis] != allowed:
            problems.append(
                f"chunk size {chunks[axis]} along run axis {axis} puts {chunks[axis]} runs in one chunk; "
                f"writers own whole chunks, so it must be {allowed}."
            )
    for axis in range(n_run_dims + 1, len(shape)):
        if chunks[axis] != shape[axis]:
            problems.append(
                f"axis {axis} is chunked by {chunks[axis]} of {shape[axis]}; point and output must be whole in a chunk."
            )
    return problems


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
        if not isinstance(grid, EvalGrid):
            raise ValidationError(f"grid must be a collectors.EvalGrid, got {type(grid).__name__}.", "create")
        path = location(path, "store")
        problems = []
        try:
            output_size = grid.output_size if output_size is None else operator.index(output_size)
        except TypeError:
            problems.append(f"output_size must be an integer, got {shorten(output_size)}.")
            output_size = grid.output_size
        if output_size != grid.output_size:
            problems.append(f"output_size={output_size} but the grid's target has {grid.output_size} columns.")
        # sizes first: a coordinate of 10**8 values must be refused before anything allocates it
        extra_dims = dict(extra_dims or {})
        if isinstance(metrics, str):
            metrics = [metrics]
        metrics = (
            dict(metrics) if isinstance(metrics, Mapping) else {m: str(m).replace("_", " ") for m in metrics or ()}
        )
        problems += schema.validate_metrics(list(metrics))
        counts = {"gammas": gammas, "widths": widths, "seeds": seeds, "times": times, **extra_dims}
        problems += [p for name, v in counts.items() for p in _count_problems(name, v)]
        ValidationError.raise_if(problems, "EnsembleStore.create")
        extra = tuple((str(k), tuple(np.asarray(v).tolist())) for k, v in extra_dims.items())
        times_t = tuple(float(t) for t in np.asarray(times, dtype=np.float64).ravel()) if _numeric(times) else ()
        if not times_t:
            problems.append(f"times: expected a non-empty list of numbers, got {shorten(times)}.")
        base = dict(
            gammas=_tuple(gammas, float),
            widths=_tuple(widths, int),
            seeds=_tuple(seeds, int),
            times=times_t,
            time_units=time_units,
            n_points=grid.n_points,
            n_features=grid.n_features,
            output_size=output_size,
            grid_hash=grid.hash,
            seed_chunk=seed_chunk,
            dtype=str(dtype),
            extra=extra,
            metrics=tuple(metrics),
        )
        # validate raw values first (coercion above keeps them comparable but may hide non-integers)
        problems += schema.validate_gammas(gammas) + schema.validate_widths(widths) + schema.validate_seeds(seeds)
        if times_t:
            problems += schema.validate_times(times, time_units)
        train = _train_arrays(train, grid, problems)
        if metrics:
            attrs = {**attrs, schema.ATTR_METRICS: {str(k): str(v) for k, v in metrics.items()}}
        ValidationError.raise_if(problems, "EnsembleStore.create")
        tc = time_chunk or default_time_chunk(len(times_t), grid.n_points, output_size, seed_chunk)
        spec = StoreSpec(**base, time_chunk=tc)
        ValidationError.raise_if(_validate_layout(spec), "EnsembleStore.create")

        explicit = time_chunk is not None
        if isinstance(path, str):
            ValidationError.raise_if(size_problems(spec, None), "EnsembleStore.create")
            return cls._create_remote(path, grid, spec, attrs, explicit, train)
        if path.exists() and not path.is_dir():
            raise ValidationError(f"{path} exists and is a file, not a store directory; choose another path.")
        if path.is_dir() and any(path.iterdir()):
            return cls._open_existing(path, grid, spec, explicit_time_chunk=time_chunk is not None, attrs=attrs)
        ValidationError.raise_if(size_problems(spec, path if check_space else None), "EnsembleStore.create")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_siblings(path, "creating")  # left by creators killed mid-build
            tmp = temp_sibling(path, "creating")
        except OSError as e:
            raise _write_error(path, e) from None
        try:
            cls._build(tmp, grid, spec, attrs, train)
            try:
                os.rename(tmp, path)  # atomic: the first creator wins, the others see a complete store
            except OSError:
                if not (path.is_dir() and any(path.iterdir())):
                    raise
                return cls._open_existing(path, grid, spec, explicit_time_chunk=time_chunk is not None, attrs=attrs)
        except OSError as e:
            if isinstance(e, EnsembleStatsError):
                raise
            raise _write_error(path, e) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls.open(path)

    @classmethod
    def _create_remote(
        cls, url: str, grid: EvalGrid, spec: StoreSpec, attrs: dict, explicit: bool, train=None
    ) -> EnsembleStore:
        """Create a store on object storage: built locally, uploaded, its root ``zarr.json`` last.

        Object stores have no rename, so concurrent creators first race for a claim object ``<url>.creating``
        with a conditional put (``If-None-Match: *``): one uploads, the others wait for its ``zarr.json`` and
        then open the store and compare, as on a local disk. A claim older than ``STALE_CLAIM_SECONDS`` whose
        store never appeared was left by a killed creator and is taken over.
        """
        import json
        import socket
        import tempfile
        import time

        if remote_exists(url):
            return cls._open_existing(url, grid, spec, explicit, attrs)
        fs, root = remote_fs(url)
        claim = f"{root}.creating"
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()
        deadline = time.time() + CLAIM_WAIT_SECONDS
        while True:
            try:
                fs.pipe_file(claim, me, mode="create")
                break
            except FileExistsError:
                if remote_exists(url):
                    return cls._open_existing(url, grid, spec, explicit, attrs)
                try:
                    holder = json.loads(fs.cat_file(claim))
                except (FileNotFoundError, ValueError):
                    continue
                if time.time() - float(holder.get("since", 0)) > STALE_CLAIM_SECONDS:
                    fs.rm_file(claim)  # its creator died before finishing
                    continue
                if time.time() > deadline:
                    raise StoreWriteError(
                        f"{url} is being created by pid {holder.get('pid')} on {holder.get('host')} and did not "
                        f"appear within {CLAIM_WAIT_SECONDS} s; if that process is gone, delete {claim} and retry."
                    ) from None
                time.sleep(0.2)
            except OSError as e:
                raise StoreWriteError(f"cannot create the store {url} ({type(e).__name__}: {e}).") from None
        try:
            if remote_exists(url):  # created by the previous claimant between our check and our claim
                return cls._open_existing(url, grid, spec, explicit, attrs)
            with tempfile.TemporaryDirectory(prefix="ensemble-stats-") as d:
                local = Path(d) / "store.zarr"
                cls._build(local, grid, spec, attrs, train)
                files = sorted(p for p in local.rglob("*") if p.is_file())
                for f in [p for p in files if p != local / "zarr.json"] + [local / "zarr.json"]:
                    fs.put_file(str(f), f"{root}/{f.relative_to(local).as_posix()}")
        except OSError as e:
            raise StoreWriteError(f"cannot create the store {url} ({type(e).__name__}: {e}).") from None
        finally:
            try:
                fs.rm_file(claim)
            except OSError:
                pass
        return cls.open(url)

    @classmethod
    def _open_existing(
        cls, path: Path, grid: EvalGrid, spec: StoreSpec, explicit_time_chunk: bool, attrs: dict
    ) -> EnsembleStore:
        store = cls.open(path)
        store.check_grid(grid)
        requested = spec
        if not explicit_time_chunk:
            requested = StoreSpec(**{**spec.__dict__, "time_chunk": store.spec.time_chunk})
        diffs = store.spec.differences(requested)
        # a sweep's training config is part of what the store holds: two creators with different configs racing
        # on a new path must not share it (the loser would write other training into the winner's store)
        if schema.ATTR_CONFIG in attrs and store.attrs.get(schema.ATTR_CONFIG) != attrs[schema.ATTR_CONFIG]:
            diffs.append(f"attrs['{schema.ATTR_CONFIG}']: the store was created by another sweep configuration")
        if diffs:
            raise SpecMismatchError(
                [*diffs, "Use a new path for a different sweep, or open this one with EnsembleStore.open(path)."],
                f"a different store already exists at {path}",
            )
        return store

    @classmethod
    def _build(cls, path: Path, grid: EvalGrid, spec: StoreSpec, attrs: dict, train=None) -> None:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:  # pragma: no cover - collectors always has torch
            torch_version = None
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        g.attrs.update(
            {
                **_jsonable(attrs),
                schema.ATTR_SCHEMA_VERSION: schema.SCHEMA_VERSION,
                schema.ATTR_TOOLKIT_VERSION: ensemble_stats.__version__,
                schema.ATTR_GRID_HASH: spec.grid_hash,
                schema.ATTR_EXTRA_DIMS: list(spec.extra_dims),
                schema.ATTR_TORCH_VERSION: torch_version,
                schema.ATTR_CREATED: _dt.datetime.now(_dt.UTC).isoformat(),
                schema.ATTR_STORE_ID: uuid.uuid4().hex,
                "layout": {"time_chunk": spec.time_chunk, "seed_chunk": spec.seed_chunk, "dtype": spec.dtype},
            }
        )

        def coord(name, values, dtype, **a):
            arr = g.create_array(
                name, shape=(len(values),), dtype=dtype, dimension_names=(name,), compressors=_codecs(), fill_value=0
            )
            arr[:] = np.asarray(values, dtype=dtype)
            arr.attrs.update(a)

        coord(schema.GAMMA, spec.gammas, "float64")
        coord(schema.WIDTH, spec.widths, "int64")
        coord(schema.SEED, spec.seeds, "int64")
        for name, values in spec.extra:
            coord(name, values, np.asarray(values).dtype.str)
        coord(schema.TIME, spec.times, "float64", units=spec.time_units)
        coord(schema.POINT, np.arange(spec.n_points), "int64")
        coord(schema.OUTPUT, np.arange(spec.output_size), "int64")
        coord(schema.FEATURE, np.arange(spec.n_features), "int64")
        for name, values in ((schema.X, grid.x), (schema.TARGET, grid.target)):
            dims = (schema.POINT, schema.FEATURE) if name == schema.X else (schema.POINT, schema.OUTPUT)
            arr = g.create_array(
                name,
                shape=values.shape,
                dtype="float64",
                dimension_names=dims,
                compressors=_codecs(),
                fill_value=np.nan,
            )
            arr[:] = values
        if train is not None:
            x_train, y_train = train
            rows = max(1, (4 << 20) // (8 * x_train.shape[1]))  # about 4 MiB per chunk
            for name, values, dims, what in (
                (schema.X_TRAIN, x_train, (schema.TRAIN_POINT, schema.FEATURE), "training inputs"),
                (schema.Y_TRAIN, y_train, (schema.TRAIN_POINT, schema.OUTPUT), "training targets"),
            ):
                arr = g.create_array(
                    name,
                    shape=values.shape,
                    chunks=(min(rows, len(values)), values.shape[1]),
                    dtype="float64",
                    dimension_names=dims,
                    compressors=_codecs(),
                    fill_value=np.nan,
                )
                arr[:] = values
                arr.attrs.update({"long_name": what})
            g.attrs.update({schema.ATTR_TRAIN_HASH: schema.grid_hash(x_train, y_train)})

        rshape, rchunks = spec.run_shape, spec.run_chunks
        T, tc = len(spec.times), spec.time_chunk
        rdims = schema.record_dims(spec.extra_dims)
        pshape = (*rshape, T, spec.n_points, spec.output_size)
        pchunks = (*rchunks, tc, spec.n_points, spec.output_size)
        ValidationError.raise_if(check_chunk_ownership(pshape, pchunks, len(rshape), spec.seed_chunk), "layout")
        g.create_array(
            schema.PREDICTION,
            shape=pshape,
            chunks=pchunks,
            dtype=spec.dtype,
            fill_value=np.nan,
            dimension_names=schema.prediction_dims(spec.extra_dims),
            compressors=_codecs(),
        ).attrs.update({"long_name": "raw network output (pre-softmax)"})
        declared = attrs.get(schema.ATTR_METRICS, {})
        for name, dtype, fill in (
            (schema.WRITTEN, "bool", False),
            (schema.STEP, "int64", schema.MISSING_STEP),
            *((s, "float32", np.nan) for s in (*schema.SCALAR_VARIABLES, *spec.metrics)),
        ):
            arr = g.create_array(
                name,
                shape=(*rshape, T),
                chunks=(*rchunks, tc),
                dtype=dtype,
                fill_value=fill,
                dimension_names=rdims,
                compressors=_codecs(),
            )
            long_name = declared.get(name) or schema.LONG_NAMES.get(name, ("",))[0]
            if long_name:
                arr.attrs.update({"long_name": long_name})
        for name, what in (
            (schema.DIGEST, "keyed hash of the record's prediction and step bytes, 0 if never written"),
            (schema.SCALAR_DIGEST, "keyed hash of the record's step and per-record scalars, 0 if never written"),
        ):
            g.create_array(
                name,
                shape=(*rshape, T),
                chunks=(*rchunks, tc),
                dtype="uint64",
                fill_value=0,
                dimension_names=rdims,
                compressors=_codecs(),
            ).attrs.update({"long_name": what})
        g.create_array(
            schema.DIVERGED_STEP,
            shape=rshape,
            chunks=rchunks,
            dtype="int64",
            fill_value=schema.MISSING_STEP,
            dimension_names=rdims[:-1],
            compressors=_codecs(),
        ).attrs.update({"long_name": "first optimizer step with non-finite outputs, -1 if none"})
        g.attrs.update({schema.ATTR_MANIFEST: _integrity.build_manifest(g)})

    # ------------------------------------------------------------------ opening
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
        path = location(path, "store")
        found = remote_exists(path) if isinstance(path, str) else (path / "zarr.json").is_file()
        if not found:
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
        layout = attrs.get("layout", {})
        extra = tuple((name, tuple(g[name][:].tolist())) for name in attrs.get(schema.ATTR_EXTRA_DIMS, []))
        pred = g[schema.PREDICTION]
        spec = StoreSpec(
            gammas=tuple(g[schema.GAMMA][:].tolist()),
            widths=tuple(g[schema.WIDTH][:].tolist()),
            seeds=tuple(g[schema.SEED][:].tolist()),
            times=tuple(g[schema.TIME][:].tolist()),
            time_units=g[schema.TIME].attrs["units"],
            n_points=pred.shape[-2],
            n_features=g[schema.X].shape[1],
            output_size=pred.shape[-1],
            grid_hash=attrs[schema.ATTR_GRID_HASH],
            time_chunk=int(layout.get("time_chunk", pred.chunks[-3])),
            seed_chunk=int(layout.get("seed_chunk", pred.chunks[2])),
            dtype=str(pred.dtype),
            extra=extra,
            metrics=tuple(attrs.get(schema.ATTR_METRICS, {})),
        )
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
        return (*schema.SCALAR_VARIABLES, *self.spec.metrics)

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name``, configured to write every chunk (array config is not persisted)."""
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
        """Optimizer step of each recording time for a run of ``width`` (t = k/N for scaled time).

        Raises
        ------
        ValidationError
            Two recording times map to the same step, or epoch units without ``steps_per_epoch``.
        """
        t = self.times
        units = self.spec.time_units
        if units == "step":
            steps = np.rint(t).astype(np.int64)
        elif units == "scaled":
            steps = np.rint(t * width).astype(np.int64)
        else:
            if not steps_per_epoch or steps_per_epoch < 1:
                raise ValidationError(
                    "time_units='epoch' needs steps_per_epoch (optimizer steps per epoch, an integer >= 1); "
                    f"got {steps_per_epoch!r}."
                )
            steps = np.rint(t * steps_per_epoch).astype(np.int64)
        if np.any(np.diff(steps) <= 0):
            i = int(np.argmax(np.diff(steps) <= 0))
            raise ValidationError(
                f"recording times {t[i]} and {t[i + 1]} ({units}) both map to optimizer step {steps[i]} at "
                f"width {width}; use coarser times or larger widths so each time is a distinct step."
            )
        return steps

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
            if f"/{schema.DIVERGED_STEP}/" in p.path.replace("\\", "/"):
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
                    for name in (*schema.RECORD_VARIABLES, *self.spec.metrics):
                        if name not in self._array_names:
                            continue
                        arr = self.group[name]
                        coords = (*run_chunk, int(c[1:]), *(0 for _ in arr.shape[n_run + 1 :]))
                        keys.append(f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}")
                if "diverged" in chunks:
                    arr = self.group[schema.DIVERGED_STEP]
                    keys.append(f"{arr.path}/{arr.metadata.encode_chunk_key(run_chunk)}")
                for key in keys:  # the commit mark goes first: a repair killed midway leaves records uncommitted
                    _sync(store.delete(key))
            out.append(self.run_coords((unit[0], unit[1], unit[2], *unit[3:])))
        return out

    def written_mask(self, index: Sequence[int]) -> np.ndarray:
        """Bool (time,) of committed records of one run."""
        return np.asarray(self.array(schema.WRITTEN)[tuple(index)])

    def lock(self, index: Sequence[int | slice]) -> RunLock:
        """The (unacquired) write lock of the writer unit holding run ``index``: the run itself, or its seed
        block when ``seed_chunk > 1`` (``index`` may give the seed as a block slice)."""
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

        Writes data, then scalars and steps, then ``written`` (the commit mark). Writing the same records
        twice leaves the same store.
        """
        sel, block = self._selection(index)
        ti = np.asarray(time_index)
        if ti.dtype.kind not in "iu":  # a float index would be truncated silently
            raise ValidationError(
                f"time_index has dtype {ti.dtype}; expected integer indices into time.",
                f"write_records({self._describe(index)})",
            )
        ti = ti.astype(np.int64)
        steps = np.asarray(step)
        pred = np.asarray(prediction)
        lead = (block,) if block else ()
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
        scalars = dict(scalars or {})
        names = self.scalar_names
        for name, values in scalars.items():
            if name not in names:
                problems.append(
                    f"unknown scalar {name!r}; this store records {list(names)} (declare further metrics with "
                    "EnsembleStore.create(..., metrics=...))."
                )
            elif np.shape(values) != (*lead, ti.size):
                problems.append(f"scalar {name!r} has shape {np.shape(values)}, expected {(*lead, ti.size)}.")
        ValidationError.raise_if(problems, f"write_records({self._describe(index)})")

        contiguous = ti[-1] - ti[0] + 1 == ti.size
        region = (*sel, slice(int(ti[0]), int(ti[-1]) + 1) if contiguous else ti)
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
        data.update({name: shaped(scalars.get(name, nan), np.float32) for name in names})
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
        finite = np.isfinite(pred).reshape(*lead, ti.size, -1).all(axis=-1)
        ones = shaped(np.ones((*lead, ti.size), dtype=bool), bool)
        try:
            if contiguous:
                # data, scalars, steps and digests go out concurrently on zarr's event loop: one round trip
                _sync(_gather([self.array(n)._async_array.setitem(region, v) for n, v in data.items()]))
            else:
                for name, values in data.items():
                    self.array(name).oindex[region] = values
            if not finite.all():
                self._mark_diverged(sel, finite, steps)
            # the commit mark, only once everything above is stored
            if contiguous:
                self.array(schema.WRITTEN)[region] = ones
            else:
                self.array(schema.WRITTEN).oindex[region] = ones
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

    @property
    def has_digests(self) -> bool:
        """Whether this store keeps per-record digests (stores created before them do not)."""
        return schema.DIGEST in self._array_names and schema.ATTR_STORE_ID in self.attrs_cached

    @functools.cached_property
    def _array_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.group.arrays())

    @functools.cached_property
    def attrs_cached(self) -> dict:
        """The group attrs as read when first needed (they do not change after creation)."""
        return self.group.attrs.asdict()

    def _schedule_problems(self, sel, ti: np.ndarray, steps: np.ndarray) -> list[str]:
        """Steps that contradict the recording times (step units: step = t; scaled: step = round(t N))."""
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
        arr = self.array(schema.DIVERGED_STEP)
        current = int(np.asarray(arr[sel]).reshape(-1)[0])
        if current == schema.MISSING_STEP or step < current:
            arr[sel] = np.full(np.shape(arr[sel]), int(step), dtype=np.int64)

    def _mark_diverged(self, sel, finite, steps) -> None:
        """Keep the earliest step with non-finite outputs per run (idempotent under rewrites)."""
        arr = self.array(schema.DIVERGED_STEP)
        never = np.iinfo(np.int64).max
        finite = finite.reshape(-1, finite.shape[-1])
        candidate = np.where(finite.all(axis=-1), never, steps[np.argmax(~finite, axis=-1)])
        current = np.asarray(arr[sel])
        first = np.minimum(candidate.reshape(current.shape), np.where(current == schema.MISSING_STEP, never, current))
        arr[sel] = np.where(first == never, schema.MISSING_STEP, first)

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


def _tuple(values, kind) -> tuple:
    try:
        return tuple(kind(v) for v in np.asarray(values).ravel().tolist())
    except (TypeError, ValueError):
        return ()


def _numeric(values) -> bool:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.ndim == 1 and a.size > 0


def _jsonable(obj):
    """Attrs must be plain JSON; numpy scalars and tuples are converted, anything else is refused."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise ValidationError(
        f"store attribute value {obj!r} of type {type(obj).__name__} is not JSON; pass str/number/list/dict."
    )


CLAIM_WAIT_SECONDS = 120
STALE_CLAIM_SECONDS = 600
"""A creation claim on object storage older than this, with no store behind it, was left by a killed creator."""

MAX_COORDINATE = 1_000_000
"""Most values one coordinate may have (a million seeds or recording times; split larger sweeps into stores)."""
MAX_RECORDS = 1 << 31
"""Most records (gamma x width x seed x extra x time) one store may have: ``written`` is read whole on open."""


def _train_arrays(train, grid: EvalGrid, problems: list[str]):
    """``train`` as two float64 arrays (M, features), (M, outputs) matching the grid, or None."""
    if train is None:
        return None
    try:
        x, y = (np.asarray(a, dtype=np.float64) for a in train)
    except (TypeError, ValueError):
        problems.append("train: expected (x_train, y_train), two numeric arrays.")
        return None
    y = y.reshape(len(y), -1) if y.ndim == 1 else y
    if x.ndim != 2 or x.shape[1] != grid.n_features:
        problems.append(f"train: x_train has shape {x.shape}; expected (M, {grid.n_features}) like the grid's x.")
    if y.ndim != 2 or len(y) != len(x) or y.shape[1] != grid.output_size:
        problems.append(f"train: y_train has shape {y.shape}; expected ({len(x)}, {grid.output_size}).")
    if len(x) == 0:
        problems.append("train: the training set is empty.")
    return (x, y) if not problems else None


def _count_problems(name: str, values) -> list[str]:
    try:
        n = len(values)
    except TypeError:
        return []  # not a sized sequence: the coordinate checks report it
    if n > MAX_COORDINATE:
        return [
            f"{name}: {n:,} values; a coordinate may have at most {MAX_COORDINATE:,}. Split the sweep into "
            "several stores (open_ensemble combines them)."
        ]
    return []


def store_bytes(spec: StoreSpec) -> tuple[int, int]:
    """(records, bytes) of a complete store of ``spec``: predictions, per-record arrays and digests."""
    records = int(np.prod(spec.run_shape, dtype=np.float64) * len(spec.times))
    per_record = spec.n_points * spec.output_size * np.dtype(spec.dtype).itemsize
    per_record += 1 + 8 + 4 * (len(schema.SCALAR_VARIABLES) + len(spec.metrics)) + 8 * len(schema.INTERNAL_VARIABLES)
    return records, int(records * per_record)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


MAX_CHUNK_FILES = 10_000_000
"""Most chunk files a complete store may have (each small file costs an inode and a file-system block)."""


def size_problems(spec: StoreSpec, path: Path | None = None) -> list[str]:
    """What a complete store of ``spec`` would be too big for: records, chunk files, and (given ``path``) the
    free space of its file system. Nothing is allocated to find out."""
    records, size = store_bytes(spec)
    problems = []
    if records > MAX_RECORDS:
        problems.append(
            f"the sweep has {records:,} records (gamma x width x seed x extra dims x time); a store holds at most "
            f"{MAX_RECORDS:,}. Split it into several stores or record fewer times."
        )
    chunks = records // max(1, spec.seed_chunk * min(spec.time_chunk, len(spec.times))) * len(schema.RECORD_VARIABLES)
    if chunks > MAX_CHUNK_FILES:
        problems.append(
            f"the store would have {chunks:,} chunk files (one per seed block x time chunk of each of "
            f"{len(schema.RECORD_VARIABLES)} per-record arrays); at most {MAX_CHUNK_FILES:,}. Use larger seed blocks "
            "([sweep].seed_block, seed_chunk=) or split the sweep into several stores."
        )
    if path is None or problems:
        return problems
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return problems
    if size > free:
        problems.append(
            f"the complete store would take {_gb(size)} ({records:,} records of {spec.n_points} points x "
            f"{spec.output_size} outputs), but {probe} has {_gb(free)} free. Reduce the sweep, use a bigger disk, or "
            "pass check_space=False if the file system will grow."
        )
    return problems


def _write_error(path: Path, e: OSError) -> StoreWriteError:
    reason = {30: "the file system is read-only", 28: "the disk is full", 13: "permission denied"}.get(
        e.errno or 0, f"{type(e).__name__}: {e}"
    )
    err = StoreWriteError(
        f"cannot create the store {path}: {reason}. Nothing was left behind; choose a writable path with enough "
        "free space."
    )
    err.errno = e.errno
    return err
