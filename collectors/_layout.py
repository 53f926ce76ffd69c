"""Store layout and creation: the rules every store follows, its size checks, and its atomic creation.

Layout rules (docs/store.md):

* every chunk of a per-run array holds exactly one run (or one seed block of ``seed_chunk`` seeds), so
  concurrent writers never share a chunk;
* ``time`` is chunked, so a writer flushes completed time chunks without rewriting earlier ones;
* every array carries a crc32c checksum, so corruption is an error on read, never a wrong number;
* no consolidated metadata (it goes stale).

A store is built complete under a temporary name and renamed into place (on object storage: uploaded with its
root ``zarr.json`` last, concurrent creators serialized by a conditional put). Opening and writing are in
``_store.py``.
"""

from __future__ import annotations

import datetime as _dt
import operator
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

import ensemble_stats
from ensemble_stats import _integrity, schema
from ensemble_stats._paths import location, remote_exists, remote_fs, remove_stale_siblings, temp_sibling
from ensemble_stats.errors import (
    EnsembleStatsError,
    EphemeralStoreWarning,
    SpecMismatchError,
    StoreWriteError,
    ValidationError,
    shorten,
)

from ._grid import EvalGrid

if TYPE_CHECKING:
    from ._store import EnsembleStore

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
    pairs: tuple[int, ...] = ()
    """Antithetic stores: each seed's pair number (the pair's first seed); empty otherwise."""
    ntk_points: tuple[int, ...] = ()
    """Stores that record the empirical NTK: the grid points of its sub-grid; empty otherwise."""
    layers: tuple[str, ...] = ()
    """Stores that record parameter displacements: the parameter tensors' names; empty otherwise."""

    @property
    def field_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trailing shape of each per-record field (``ntk``, ``displacement``) the store declares."""
        P, O = len(self.ntk_points), self.output_size  # noqa: E741
        return {
            **({schema.NTK: (P, P, O, O)} if P else {}),
            **({schema.DISPLACEMENT: (len(self.layers),)} if self.layers else {}),
        }

    @property
    def field_bytes(self) -> int:
        """Bytes of the fields of one record (in the store's dtype)."""
        return np.dtype(self.dtype).itemsize * sum(int(np.prod(s)) for s in self.field_shapes.values())

    @property
    def scalar_names(self) -> tuple[str, ...]:
        """The per-record scalars: the known ones, then the declared metrics."""
        return (*schema.SCALAR_VARIABLES, *self.metrics)

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


def resolve_ntk_points(points, n_points: int, problems: list[str]) -> tuple[int, ...]:
    """The NTK sub-grid: None (no NTK), ``"all"``, or grid point indices."""
    if points is None:
        return ()
    if isinstance(points, str):
        if points == "all":
            return tuple(range(n_points))
        problems.append(f"ntk_points={points!r}: give 'all', or a list of grid point indices.")
        return ()
    try:
        pts = [operator.index(p) for p in points]
    except TypeError:
        problems.append(f"ntk_points must be grid point indices (integers), got {shorten(points)}.")
        return ()
    bad = [p for p in pts if not 0 <= p < n_points]
    if not pts or bad or len(set(pts)) != len(pts):
        problems.append(
            f"ntk_points {shorten(pts)}: give distinct grid point indices in [0, {n_points})"
            + (f"; {shorten(bad)} are outside" if bad else "")
            + "."
        )
        return ()
    return tuple(pts)


def _layers(layers, problems: list[str]) -> tuple[str, ...]:
    if layers is None:
        return ()
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        problems.append(f"layers must be distinct non-empty parameter names, e.g. ['W1', 'C']; got {shorten(names)}.")
        return ()
    return tuple(names)


def antithetic_pairs(seeds: tuple[int, ...], problems: list[str]) -> tuple[int, ...]:
    """The ``pair`` coordinate of antithetic seeds: positions 2k and 2k+1 form pair ``seeds[2k]``."""
    if len(seeds) % 2:
        problems.append(f"antithetic stores pair seeds by position; {len(seeds)} seeds given: give an even number.")
        return ()
    return tuple(s for s in seeds[0::2] for _ in range(2))


def default_time_chunk(n_times: int, n_points: int, output_size: int, seed_chunk: int, field_bytes: int = 0) -> int:
    record = max(1, (n_points * output_size * 4 + field_bytes) * seed_chunk)
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
    elif spec.pairs and spec.seed_chunk % 2:
        problems.append(
            f"seed_chunk={spec.seed_chunk} would split antithetic pairs between writers; use an even seed_chunk."
        )
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


def create_store(
    cls,
    path,
    grid: EvalGrid,
    *,
    gammas,
    widths,
    seeds,
    times,
    time_units: str,
    output_size,
    extra_dims,
    time_chunk,
    seed_chunk: int,
    dtype: str,
    check_space: bool,
    train,
    metrics,
    attrs: dict,
    antithetic: bool = False,
    ntk_points=None,
    layers=None,
):
    """The body of :meth:`EnsembleStore.create` (see there): validate everything, then create atomically."""
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
    metrics = dict(metrics) if isinstance(metrics, Mapping) else {m: str(m).replace("_", " ") for m in metrics or ()}
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
        dtype=_dtype_name(dtype),
        extra=extra,
        metrics=tuple(metrics),
        pairs=antithetic_pairs(_tuple(seeds, int), problems) if antithetic else (),
        ntk_points=resolve_ntk_points(ntk_points, grid.n_points, problems),
        layers=_layers(layers, problems),
    )
    # validate raw values first (coercion above keeps them comparable but may hide non-integers)
    problems += schema.validate_gammas(gammas) + schema.validate_widths(widths) + schema.validate_seeds(seeds)
    if times_t:
        problems += schema.validate_times(times, time_units)
    train = _train_arrays(train, grid, problems)
    if metrics:
        attrs = {**attrs, schema.ATTR_METRICS: {str(k): str(v) for k, v in metrics.items()}}
    if base["ntk_points"]:
        attrs = {**attrs, schema.ATTR_NTK_POINTS: list(base["ntk_points"])}
    if base["layers"]:
        attrs = {**attrs, schema.ATTR_LAYERS: list(base["layers"])}
    ValidationError.raise_if(problems, "EnsembleStore.create")
    spec = StoreSpec(**base, time_chunk=1)
    tc = default_time_chunk(len(times_t), grid.n_points, output_size, seed_chunk, spec.field_bytes)
    tc = tc if time_chunk is None else time_chunk  # an explicit 0 is refused by the layout check, never replaced
    spec = StoreSpec(**base, time_chunk=tc)
    ValidationError.raise_if(_validate_layout(spec), "EnsembleStore.create")

    explicit = time_chunk is not None
    if isinstance(path, str) and path.startswith("memory://"):
        warnings.warn(
            f"{path} is held in this process's memory and vanishes when it exits (other processes, Dask workers "
            "included, never see it); use a directory or object storage for runs you want to keep.",
            EphemeralStoreWarning,
            stacklevel=4,
        )
    if isinstance(path, str):
        ValidationError.raise_if(size_problems(spec, None), "EnsembleStore.create")
        return _create_remote(cls, path, grid, spec, attrs, explicit, train)
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{path} exists and is a file, not a store directory; choose another path.")
    if path.is_dir() and any(path.iterdir()):
        return _open_existing(cls, path, grid, spec, explicit_time_chunk=time_chunk is not None, attrs=attrs)
    ValidationError.raise_if(size_problems(spec, path if check_space else None), "EnsembleStore.create")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(path, "creating")  # left by creators killed mid-build
        tmp = temp_sibling(path, "creating")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        build_group(tmp, grid, spec, attrs, train)
        try:
            os.rename(tmp, path)  # atomic: the first creator wins, the others see a complete store
        except OSError:
            if not (path.is_dir() and any(path.iterdir())):
                raise
            return _open_existing(cls, path, grid, spec, explicit_time_chunk=time_chunk is not None, attrs=attrs)
    except OSError as e:
        if isinstance(e, EnsembleStatsError):
            raise
        raise _write_error(path, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return cls.open(path)


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
        return _open_existing(cls, url, grid, spec, explicit, attrs)
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
                return _open_existing(cls, url, grid, spec, explicit, attrs)
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
            return _open_existing(cls, url, grid, spec, explicit, attrs)
        with tempfile.TemporaryDirectory(prefix="ensemble-stats-") as d:
            local = Path(d) / "store.zarr"
            build_group(local, grid, spec, attrs, train)
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


def build_group(path: Path, grid: EvalGrid, spec: StoreSpec, attrs: dict, train=None) -> None:
    """Write a complete new store group at ``path`` (not yet visible under its final name)."""
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - collectors always has torch
        torch_version = None
    g = zarr.open_group(str(path), mode="w-", zarr_format=3)  # a fresh temporary: never an existing group
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
            schema.ATTR_LAYOUT: {"time_chunk": spec.time_chunk, "seed_chunk": spec.seed_chunk, "dtype": spec.dtype},
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
    if spec.pairs:
        arr = g.create_array(
            schema.PAIR,
            shape=(len(spec.pairs),),
            dtype="int64",
            dimension_names=(schema.SEED,),
            compressors=_codecs(),
            fill_value=0,
        )
        arr[:] = np.asarray(spec.pairs, dtype="int64")
        arr.attrs.update({"long_name": schema.LONG_NAMES[schema.PAIR]})
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
            (schema.X_TRAIN, x_train, (schema.TRAIN_POINT, schema.FEATURE), schema.LONG_NAMES[schema.X_TRAIN]),
            (schema.Y_TRAIN, y_train, (schema.TRAIN_POINT, schema.OUTPUT), schema.LONG_NAMES[schema.Y_TRAIN]),
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
    ).attrs.update({"long_name": schema.LONG_NAMES[schema.PREDICTION]})
    field_dims = {
        schema.NTK: (schema.NTK_POINT, schema.NTK_POINT_2, schema.OUTPUT, schema.OUTPUT_2),
        schema.DISPLACEMENT: (schema.LAYER,),
    }
    if spec.ntk_points:
        coord(schema.NTK_POINT, spec.ntk_points, "int64")
        coord(schema.NTK_POINT_2, spec.ntk_points, "int64")
        coord(schema.OUTPUT_2, np.arange(spec.output_size), "int64")
    if spec.layers:
        # zarr v3 has no specified string dtype: the index here, the names in attrs (open_ensemble shows names)
        coord(schema.LAYER, np.arange(len(spec.layers)), "int64")
    for name, trailing in spec.field_shapes.items():
        g.create_array(
            name,
            shape=(*rshape, T, *trailing),
            chunks=(*rchunks, tc, *trailing),
            dtype=spec.dtype,  # the predictions' dtype: a float64 store keeps its kernels exact too
            fill_value=np.nan,
            dimension_names=(*rdims, *field_dims[name]),
            compressors=_codecs(),
        ).attrs.update({"long_name": schema.LONG_NAMES[name]})
    declared = attrs.get(schema.ATTR_METRICS, {})
    for name, dtype, fill in (
        (schema.WRITTEN, "bool", False),
        (schema.STEP, "int64", schema.MISSING_STEP),
        *((s, "float32", np.nan) for s in spec.scalar_names),
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
        arr.attrs.update({"long_name": declared.get(name) or schema.LONG_NAMES[name]})
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
    ).attrs.update({"long_name": schema.LONG_NAMES[schema.DIVERGED_STEP]})
    g.create_array(
        schema.DIVERGED_DIGEST,
        shape=rshape,
        chunks=rchunks,
        dtype="uint64",
        fill_value=0,
        dimension_names=rdims[:-1],
        compressors=_codecs(),
    ).attrs.update({"long_name": "keyed hash of the run's diverged_step, 0 if it never diverged"})
    g.attrs.update({schema.ATTR_MANIFEST: _integrity.build_manifest(g)})


def _dtype_name(dtype) -> str:
    """``"float32"`` for "float32", np.float32 or np.dtype("float32"); anything else as text (refused later)."""
    try:
        return np.dtype(dtype).name
    except (TypeError, ValueError):
        return str(dtype)


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
    per_record += 1 + 8 + 4 * len(spec.scalar_names) + 8 * len(schema.INTERNAL_VARIABLES) + spec.field_bytes
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
