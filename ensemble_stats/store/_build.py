"""Building a store: a complete new group of a :class:`StoreSpec`, made visible atomically.

A store is built complete under a temporary name and renamed into place (on object storage: uploaded with its
root ``zarr.json`` last, concurrent creators serialized by a conditional put). :func:`build` never opens or
changes a store that already exists: it says so, and :meth:`EnsembleStore.create` opens and compares it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from .. import __version__, schema
from ..errors import EnsembleStatsError, StoreWriteError, ValidationError
from . import _integrity
from ._grid import EvalGrid
from ._paths import remote_exists, remote_fs, remove_stale_siblings, temp_sibling
from ._spec import StoreSpec, check_chunk_ownership, size_problems

CLAIM_WAIT_SECONDS = 120
STALE_CLAIM_SECONDS = 600
"""A creation claim on object storage older than this, with no store behind it, was left by a killed creator."""


def _codecs():
    return [Crc32cCodec()]


def build(
    path: Path | str,
    spec: StoreSpec,
    *,
    grid: EvalGrid,
    attrs: Mapping,
    train: tuple[np.ndarray, np.ndarray] | None = None,
    check_space: bool = True,
) -> bool:
    """Create the store of ``spec`` at the canonical ``path`` (a local Path or a URL), atomically.

    Returns True when this call created it, False when a store (or anything) already is there: nothing is
    written then, and the caller opens it and compares. ``attrs`` are the store's group attributes.

    Raises
    ------
    ValidationError
        The store would be too big (records, chunk files, free space when ``check_space``), or ``path`` is a file.
    StoreWriteError
        The store cannot be written there; nothing is left behind.
    """
    if isinstance(path, str):
        ValidationError.raise_if(size_problems(spec, None), "EnsembleStore.create")
        return _build_remote(path, spec, grid, attrs, train)
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{path} exists and is a file, not a store directory; choose another path.")
    if path.is_dir() and any(path.iterdir()):
        return False
    ValidationError.raise_if(size_problems(spec, path if check_space else None), "EnsembleStore.create")
    return _build_local(path, spec, grid, attrs, train)


def _build_local(path: Path, spec: StoreSpec, grid: EvalGrid, attrs: Mapping, train) -> bool:
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
            return False
    except OSError as e:
        if isinstance(e, EnsembleStatsError):
            raise
        raise _write_error(path, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _build_remote(url: str, spec: StoreSpec, grid: EvalGrid, attrs: Mapping, train) -> bool:
    """Create a store on object storage: built locally, uploaded, its root ``zarr.json`` last.

    Object stores have no rename, so concurrent creators first race for a claim object ``<url>.creating``
    with a conditional put (``If-None-Match: *``): one uploads, the others wait for its ``zarr.json`` and
    then open the store and compare, as on a local disk.
    """
    if remote_exists(url):
        return False
    fs, root = remote_fs(url)
    claim = f"{root}.creating"
    if not _claim(fs, claim, url):
        return False
    try:
        if remote_exists(url):  # created by the previous claimant between our check and our claim
            return False
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
    return True


def _claim(fs, claim: str, url: str) -> bool:
    """Take the creation claim; False when the store appeared meanwhile (another creator finished it).

    A claim older than ``STALE_CLAIM_SECONDS`` whose store never appeared was left by a killed creator and is
    taken over.
    """
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()
    deadline = time.time() + CLAIM_WAIT_SECONDS
    while True:
        try:
            fs.pipe_file(claim, me, mode="create")
            return True
        except FileExistsError:
            if remote_exists(url):
                return False
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


def _torch_version() -> str | None:
    """Return the installed torch's version, without importing it (this package never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def build_group(path: Path, grid: EvalGrid, spec: StoreSpec, attrs: Mapping, train=None) -> None:
    """Write a complete new store group at ``path`` (not yet visible under its final name)."""
    g = zarr.open_group(str(path), mode="w-", zarr_format=3)  # a fresh temporary: never an existing group
    g.attrs.update(
        {
            **_jsonable(attrs),
            schema.ATTR_SCHEMA_VERSION: schema.SCHEMA_VERSION,
            schema.ATTR_TOOLKIT_VERSION: __version__,
            schema.ATTR_GRID_HASH: spec.grid_hash,
            schema.ATTR_EXTRA_DIMS: list(spec.extra_dims),
            schema.ATTR_TORCH_VERSION: _torch_version(),
            schema.ATTR_CREATED: _dt.datetime.now(_dt.UTC).isoformat(),
            schema.ATTR_STORE_ID: uuid.uuid4().hex,
            schema.ATTR_LAYOUT: {"time_chunk": spec.time_chunk, "seed_chunk": spec.seed_chunk, "dtype": spec.dtype},
        }
    )
    _write_coords(g, spec)
    _write_grid(g, grid, train)
    _write_record_arrays(g, spec, attrs.get(schema.ATTR_METRICS, {}))
    g.attrs.update({schema.ATTR_MANIFEST: _integrity.build_manifest(g)})


def _coord(g, name, values, dtype, **attrs) -> None:
    arr = g.create_array(
        name, shape=(len(values),), dtype=dtype, dimension_names=(name,), compressors=_codecs(), fill_value=0
    )
    arr[:] = np.asarray(values, dtype=dtype)
    arr.attrs.update(attrs)


def _write_coords(g, spec: StoreSpec) -> None:
    _coord(g, schema.GAMMA, spec.gammas, "float64")
    _coord(g, schema.WIDTH, spec.widths, "int64")
    _coord(g, schema.SEED, spec.seeds, "int64")
    for name, values in spec.extra:
        _coord(g, name, values, np.asarray(values).dtype.str)
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
    _coord(g, schema.TIME, spec.times, "float64", units=spec.time_units)
    _coord(g, schema.POINT, np.arange(spec.n_points), "int64")
    _coord(g, schema.OUTPUT, np.arange(spec.output_size), "int64")
    _coord(g, schema.FEATURE, np.arange(spec.n_features), "int64")
    if spec.ntk_points:
        _coord(g, schema.NTK_POINT, spec.ntk_points, "int64")
        _coord(g, schema.NTK_POINT_2, spec.ntk_points, "int64")
        _coord(g, schema.OUTPUT_2, np.arange(spec.output_size), "int64")
    if spec.layers:
        # zarr v3 has no specified string dtype: the index here, the names in attrs (open_ensemble shows names)
        _coord(g, schema.LAYER, np.arange(len(spec.layers)), "int64")


def _write_grid(g, grid: EvalGrid, train) -> None:
    """Write the evaluation grid ``x``, ``target`` and, when given, the training set ``x_train``, ``y_train``."""
    for name, values in ((schema.X, grid.x), (schema.TARGET, grid.target)):
        dims = (schema.POINT, schema.FEATURE) if name == schema.X else (schema.POINT, schema.OUTPUT)
        arr = g.create_array(
            name, shape=values.shape, dtype="float64", dimension_names=dims, compressors=_codecs(), fill_value=np.nan
        )
        arr[:] = values
    if train is None:
        return
    x_train, y_train = train
    rows = max(1, (4 << 20) // (8 * x_train.shape[1]))  # about 4 MiB per chunk
    for name, values, dims in (
        (schema.X_TRAIN, x_train, (schema.TRAIN_POINT, schema.FEATURE)),
        (schema.Y_TRAIN, y_train, (schema.TRAIN_POINT, schema.OUTPUT)),
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
        arr.attrs.update({"long_name": schema.LONG_NAMES[name]})
    g.attrs.update({schema.ATTR_TRAIN_HASH: schema.grid_hash(x_train, y_train)})


def _per_run(g, name, shape, chunks, dtype, fill, dims, long_name) -> None:
    g.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, dimension_names=dims, compressors=_codecs()
    ).attrs.update({"long_name": long_name})


def _write_record_arrays(g, spec: StoreSpec, declared: Mapping[str, str]) -> None:
    """Create the per-run and per-record arrays, each chunk owned by one writer (one run or one seed block)."""
    rshape, rchunks = spec.run_shape, spec.run_chunks
    T, tc = len(spec.times), spec.time_chunk
    rdims = schema.record_dims(spec.extra_dims)
    pshape = (*rshape, T, spec.n_points, spec.output_size)
    pchunks = (*rchunks, tc, spec.n_points, spec.output_size)
    ValidationError.raise_if(check_chunk_ownership(pshape, pchunks, len(rshape), spec.seed_chunk), "layout")
    pdims = schema.prediction_dims(spec.extra_dims)
    _per_run(g, schema.PREDICTION, pshape, pchunks, spec.dtype, np.nan, pdims, schema.LONG_NAMES[schema.PREDICTION])
    field_dims = {
        schema.NTK: (schema.NTK_POINT, schema.NTK_POINT_2, schema.OUTPUT, schema.OUTPUT_2),
        schema.DISPLACEMENT: (schema.LAYER,),
    }
    for name, trailing in spec.field_shapes.items():
        # the predictions' dtype: a float64 store keeps its kernels exact too
        dims = (*rdims, *field_dims[name])
        shape, chunks = (*rshape, T, *trailing), (*rchunks, tc, *trailing)
        _per_run(g, name, shape, chunks, spec.dtype, np.nan, dims, schema.LONG_NAMES[name])
    for name, dtype, fill in (
        (schema.WRITTEN, "bool", False),
        (schema.STEP, "int64", schema.MISSING_STEP),
        *((s, "float32", np.nan) for s in spec.scalar_names),
    ):
        long_name = declared.get(name) or schema.LONG_NAMES[name]
        _per_run(g, name, (*rshape, T), (*rchunks, tc), dtype, fill, rdims, long_name)
    for name, what in (
        (schema.DIGEST, "keyed hash of the record's prediction and step bytes, 0 if never written"),
        (schema.SCALAR_DIGEST, "keyed hash of the record's step and per-record scalars, 0 if never written"),
    ):
        _per_run(g, name, (*rshape, T), (*rchunks, tc), "uint64", 0, rdims, what)
    what = schema.LONG_NAMES[schema.DIVERGED_STEP]
    _per_run(g, schema.DIVERGED_STEP, rshape, rchunks, "int64", schema.MISSING_STEP, rdims[:-1], what)
    what = "keyed hash of the run's diverged_step, 0 if it never diverged"
    _per_run(g, schema.DIVERGED_DIGEST, rshape, rchunks, "uint64", 0, rdims[:-1], what)


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
