"""What binds a store's bytes to their meaning: fingerprints of its metadata and coordinates, per-record digests.

A chunk's crc32c checksum proves its bytes are the bytes written, not that they belong where they are. Three
further checks do that:

* a **manifest** in the group attrs, written at creation: a fingerprint of every array's metadata (dtype,
  endianness, shape, chunks, codecs, fill value) and of every coordinate's values, and the grid hash. An edited
  ``zarr.json``, a permuted or rescaled coordinate, an edited ``x`` / ``target`` no longer match it;
* a **record digest** per record (dims gamma, width, seed, [extra], time): a 64-bit hash of the record's stored
  bytes (``prediction`` and ``step``; and ``step`` with every per-record scalar), keyed by the store's random
  ``store_id`` and the record's position. A chunk swapped across gamma or width, or copied from another store,
  no longer matches its digest; neither does a scalar chunk deleted under its commit mark.

A record's digest is crc32c of its bytes started from a 32-bit key mixed (splitmix64) from the store key and the
record's indices: hardware crc32c, one call per record. It detects accidents and tools gone wrong, not a
deliberate forger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
from crc32c import crc32c as _crc32c

from . import schema

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def store_key(store_id: str) -> np.uint64:
    """The 64-bit key of a store, from its random ``store_id``."""
    return np.uint64(int.from_bytes(hashlib.sha256(str(store_id).encode()).digest()[:8], "little"))


def position_keys(key: np.uint64, indices: Sequence[np.ndarray]) -> np.ndarray:
    """Keys (uint64) of the records at the outer product of ``indices``: one 1-D index array per record dim."""
    shape = tuple(len(i) for i in indices)
    k = np.full(shape, key, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for axis, idx in enumerate(indices):
            idx = np.asarray(idx, dtype=np.uint64).reshape([-1 if a == axis else 1 for a in range(len(shape))])
            k = _mix(k + _GOLDEN * np.uint64(axis + 1) + idx)
    return k


def region_indices(starts: Sequence[int], shape: Sequence[int]) -> list[np.ndarray]:
    """Index arrays of a contiguous region."""
    return [np.arange(int(a), int(a) + int(n)) for a, n in zip(starts, shape, strict=True)]


def _words(parts: Sequence[np.ndarray], n_records_dims: int) -> np.ndarray:
    """The 32-bit words of each record's bytes: (records..., words) from arrays (records..., payload...)."""
    lead = parts[0].shape[:n_records_dims]
    cols = []
    for a in parts:
        a = np.ascontiguousarray(a)
        flat = a.reshape(*lead, -1) if a.ndim > n_records_dims else a.reshape(*lead, 1)
        cols.append(np.ascontiguousarray(flat).view(np.uint32).reshape(*lead, -1))
    return np.concatenate(cols, axis=-1)


def record_digest(keys: np.ndarray, parts: Sequence[np.ndarray]) -> np.ndarray:
    """Digest (uint64, dims of ``keys``) of records whose payload is the bytes of ``parts``, in order.

    Each part has the record dims of ``keys`` first (e.g. prediction (..., time, point, output) and step
    (..., time)); its trailing dims and dtype make the record's bytes. The digest is crc32c of those bytes
    started from the record's key (so equal bytes at another position or in another store differ), plus one
    (0 is the fill of a digest never written).
    """
    words = _words(parts, keys.ndim)
    row = words.shape[-1] * 4
    flat = memoryview(np.ascontiguousarray(words).reshape(-1)).cast("B")
    seeds = (np.asarray(keys, dtype=np.uint64).reshape(-1) & np.uint64(0xFFFFFFFF)).tolist()
    out = np.fromiter(
        (_crc32c(flat[i * row : (i + 1) * row], s) for i, s in enumerate(seeds)), dtype=np.uint64, count=len(seeds)
    )
    return (out + np.uint64(1)).reshape(keys.shape)


def prediction_parts(prediction: np.ndarray, step: np.ndarray) -> list[np.ndarray]:
    return [prediction, np.asarray(step, dtype=np.int64)]


def scalar_parts(step: np.ndarray, scalars: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(step, dtype=np.int64), *(np.asarray(s, dtype=np.float32) for s in scalars)]


# ------------------------------------------------------------------------------------------------ manifest
def array_fingerprint(metadata: dict) -> str:
    """Fingerprint of an array's metadata (everything but its attributes)."""
    meta = {k: v for k, v in metadata.items() if k != "attributes"}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:24]


def values_fingerprint(values: np.ndarray, units: str | None = None) -> str:
    a = np.ascontiguousarray(np.asarray(values))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}{units}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:24]


def coordinate_names(extra_dims: Sequence[str]) -> tuple[str, ...]:
    return (*schema.RUN_DIMS, *extra_dims, schema.TIME, schema.POINT, schema.OUTPUT, schema.FEATURE)


def build_manifest(group) -> dict:
    """The manifest of a freshly built store group (see the module docstring)."""
    extra = tuple(group.attrs.get(schema.ATTR_EXTRA_DIMS, ()))
    arrays = {name: array_fingerprint(arr.metadata.to_dict()) for name, arr in group.arrays()}
    coords = {}
    pair = (schema.PAIR,) if schema.PAIR in group else ()
    for name in (*coordinate_names(extra), *pair):
        arr = group[name]
        coords[name] = values_fingerprint(arr[...], arr.attrs.get("units"))
    return {"arrays": arrays, "coords": coords}


def check_manifest(group, grid_x=None, grid_target=None) -> list[str]:
    """Problems of a store group against its manifest and grid hash (empty for stores made before manifests).

    ``grid_x`` / ``grid_target`` may be given when already read; otherwise they are read here.
    """
    attrs = group.attrs.asdict()
    manifest = attrs.get(schema.ATTR_MANIFEST)
    if not isinstance(manifest, dict):
        return []
    problems = []
    present = {name: arr for name, arr in group.arrays()}
    for name, fp in sorted(manifest.get("arrays", {}).items()):
        if name not in present:
            problems.append(f"array '{name}' is missing from the store")
        elif array_fingerprint(present[name].metadata.to_dict()) != fp:
            problems.append(
                f"the metadata of array '{name}' (its zarr.json: dtype, endianness, shape, chunks or codecs) was "
                "changed after the store was created; its values cannot be trusted"
            )
    for name, fp in sorted(manifest.get("coords", {}).items()):
        if name not in present:
            continue
        arr = present[name]
        try:
            now = values_fingerprint(arr[...], arr.attrs.get("units"))
        except Exception as e:  # noqa: BLE001 - a coordinate that cannot be read is corrupt
            problems.append(f"coordinate '{name}' cannot be read ({type(e).__name__}: {e})")
            continue
        if now != fp:
            problems.append(
                f"coordinate '{name}' differs from the values the store was created with (permuted, rescaled or "
                "edited): records would be labelled with the wrong coordinates"
            )
    if schema.X in present and schema.TARGET in present:
        try:
            x = present[schema.X][...] if grid_x is None else grid_x
            t = present[schema.TARGET][...] if grid_target is None else grid_target
        except Exception as e:  # noqa: BLE001
            problems.append(f"the evaluation grid cannot be read ({type(e).__name__}: {e})")
        else:
            if schema.grid_hash(x, t) != attrs.get(schema.ATTR_GRID_HASH):
                problems.append(
                    "the evaluation grid (x, target) does not match the store's grid hash: it was edited after "
                    "the store was created"
                )
    if schema.X_TRAIN in present and schema.Y_TRAIN in present:
        try:
            same = schema.grid_hash(present[schema.X_TRAIN][...], present[schema.Y_TRAIN][...])
        except Exception as e:  # noqa: BLE001
            problems.append(f"the training set cannot be read ({type(e).__name__}: {e})")
        else:
            if same != attrs.get(schema.ATTR_TRAIN_HASH):
                problems.append(
                    "the training set (x_train, y_train) does not match the store's train hash: it was edited "
                    "after the store was created"
                )
    return problems
