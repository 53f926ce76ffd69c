"""What binds a store's bytes to their meaning: fingerprints of its metadata and coordinates, per-record digests.

A chunk's crc32c checksum proves its bytes are the bytes written, not that they belong where they are. Three
further checks do that:

* a **manifest** in the group attrs, written at creation: a fingerprint of every array's metadata (dtype,
  endianness, shape, chunks, codecs, fill value), of every coordinate's values and of every group attribute,
  and the grid hash. An edited ``zarr.json``, a permuted or rescaled coordinate, an edited ``x`` / ``target``,
  an edited ``config`` or ``layout`` no longer match it;
* a **record digest** per record (dims gamma, width, seed, [extra], time): a 64-bit hash of the record's stored
  bytes (``prediction`` and ``step``; and ``step`` with every per-record scalar), keyed by the store's random
  ``store_id`` and the record's position. A chunk swapped across gamma or width, or copied from another store,
  no longer matches its digest; neither does a scalar chunk deleted under its commit mark;
* a **diverged digest** per run (run dims), keyed the same way, of its ``diverged_step``: a rewritten mark
  would silently drop or restore seeds in every statistic.

None of these can be switched off by deleting it: a store that has one generation's marks must have all of
them (record digests need ``store_id`` and the manifest; the diverged digest needs the attribute fingerprints).

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

from .. import schema

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
    """Return the 64-bit key of a store, from its random ``store_id``."""
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
    """Return the 32-bit words of each record's bytes: (records..., words) from arrays (records..., payload...)."""
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


_DIVERGED_DOMAIN = np.uint64(0x6469766572676564)  # "diverged": run keys never equal a record's keys


def diverged_digests(key: np.uint64, starts: Sequence[int], diverged: np.ndarray) -> np.ndarray:
    """Return the digest (uint64, run dims) beside each run's ``diverged_step`` in the region at ``starts``.

    0 for a run that never diverged (the fill), else a keyed hash of the step and the run's position.
    """
    diverged = np.asarray(diverged, dtype=np.int64)
    keys = position_keys(key ^ _DIVERGED_DOMAIN, region_indices(starts, diverged.shape))
    digest = record_digest(keys, [diverged]) if diverged.size else np.zeros(diverged.shape, np.uint64)
    return np.where(diverged == schema.MISSING_STEP, np.uint64(0), digest)


def prediction_parts(prediction: np.ndarray, step: np.ndarray) -> list[np.ndarray]:
    return [prediction, np.asarray(step, dtype=np.int64)]


def scalar_parts(step: np.ndarray, scalars: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(step, dtype=np.int64), *(np.asarray(s, dtype=np.float32) for s in scalars)]


# ------------------------------------------------------------------------------------------------ manifest
def member_arrays(group) -> tuple[dict, dict[str, str]]:
    """Return the group's arrays by name, and the names whose metadata cannot be read (with the reason).

    Read one array at a time: zarr's own listing reads them all concurrently, and when one fails it leaves the
    others' tasks behind on its event loop, to print "Task exception was never retrieved" tracebacks at exit.
    """
    import warnings

    from zarr.core.sync import sync

    async def names():
        return [n async for n in group.store.list_dir(group.path)]

    arrays, unreadable = {}, {}
    for name in sorted(n.rstrip("/") for n in sync(names())):
        if name == "zarr.json" or "." in name:  # the group's metadata; stray partial or temporary files
            continue
        prefix = f"{group.path}/{name}" if group.path else name
        if not sync(group.store.exists(f"{prefix}/zarr.json")):
            continue
        try:
            with warnings.catch_warnings():  # a broken node's complaint is reported below, not printed
                warnings.simplefilter("ignore")
                node = group[name]
        except Exception as e:  # noqa: BLE001 - any failure to parse is unreadable metadata
            unreadable[name] = f"{type(e).__name__}: {str(e)[:200]}"
            continue
        if hasattr(node, "shape"):
            arrays[name] = node
    return arrays, unreadable


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


def attr_fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def build_manifest(group) -> dict:
    """Return the manifest of a freshly built store group (see the module docstring).

    Every array's metadata, every coordinate's values and every group attribute (``schema.STORE_ATTRS`` and any
    other given at creation).
    """
    extra = tuple(group.attrs.get(schema.ATTR_EXTRA_DIMS, ()))
    arrays = {name: array_fingerprint(arr.metadata.to_dict()) for name, arr in member_arrays(group)[0].items()}
    coords = {}
    pair = (schema.PAIR,) if schema.PAIR in group else ()
    for name in (*coordinate_names(extra), *pair):
        arr = group[name]
        coords[name] = values_fingerprint(arr[...], arr.attrs.get("units"))
    attrs = {k: attr_fingerprint(v) for k, v in group.attrs.asdict().items() if k != schema.ATTR_MANIFEST}
    return {"arrays": arrays, "coords": coords, "attrs": attrs}


def _switched_off(attrs: dict, manifest, present: dict) -> list[str]:
    """Return what is missing of the checks a store was built with (a deleted ``store_id``, manifest or part of it).

    The checks came in generations; a store carries all of its generation's marks, so any one of them shows
    that the others were removed: record digests need ``store_id`` and the manifest; the diverged-step digest
    comes with the manifest's attribute fingerprints.
    """
    problems = []
    digests = [n for n in schema.INTERNAL_VARIABLES if n in present]
    if digests or schema.ATTR_STORE_ID in attrs:
        for name, what in ((schema.ATTR_STORE_ID, "its random id"), (schema.ATTR_MANIFEST, "its manifest")):
            if name not in attrs:
                problems.append(
                    f"the group attribute '{name}' ({what}) is missing although the store keeps record digests "
                    f"({', '.join(digests) or 'store_id'}): it was deleted, and without it no record can be checked"
                )
    if isinstance(manifest, dict):
        listed = manifest.get("arrays", {})
        generation2 = schema.DIVERGED_DIGEST in present or schema.DIVERGED_DIGEST in listed
        if generation2 and not isinstance(manifest.get("attrs"), dict):
            problems.append(
                "the manifest's attribute fingerprints are missing although the store keeps a diverged-step "
                "digest: they were deleted, and without them edited attributes (config, layout) pass unseen"
            )
        for name in schema.INTERNAL_VARIABLES:
            if name in present and name not in listed:
                problems.append(f"array '{name}' is not in the manifest: the manifest was edited")
    elif manifest is not None:
        problems.append(f"the group attribute '{schema.ATTR_MANIFEST}' is not a mapping ({type(manifest).__name__})")
    return problems


def _attr_problems(attrs: dict, fingerprints: dict) -> list[str]:
    problems = []
    for name, fp in sorted(fingerprints.items()):
        if name not in attrs:
            problems.append(f"the group attribute '{name}' was deleted after the store was created")
        elif attr_fingerprint(attrs[name]) != fp:
            problems.append(
                f"the group attribute '{name}' was changed after the store was created; what the records mean "
                "(their config, layout or labels) can no longer be trusted"
            )
    for name in schema.STORE_ATTRS:
        if name in attrs and name not in fingerprints:
            problems.append(f"the group attribute '{name}' was added after the store was created")
    return problems


def check_manifest(group, grid_x=None, grid_target=None, members=None) -> list[str]:
    """Return the problems of a store group against its manifest and grid hash; empty for a sound store.

    Checks that were switched off (a deleted ``store_id`` or manifest) are problems too; stores made before
    these checks existed have none. ``grid_x`` / ``grid_target`` may be given when already read, and
    ``members`` (what :func:`member_arrays` returned) when already listed; otherwise they are read here.
    """
    attrs = group.attrs.asdict()
    manifest = attrs.get(schema.ATTR_MANIFEST)
    present, unreadable = member_arrays(group) if members is None else members
    problems = [f"the metadata of array '{n}' (its zarr.json) cannot be read ({why})" for n, why in unreadable.items()]
    problems += _switched_off(attrs, manifest, present)
    if not isinstance(manifest, dict):
        return problems
    if isinstance(manifest.get("attrs"), dict):
        problems += _attr_problems(attrs, manifest["attrs"])
    problems += _array_problems(manifest.get("arrays", {}), present)
    problems += _coord_problems(manifest.get("coords", {}), present)
    return problems + _hash_problems(attrs, present, grid_x, grid_target)


def _array_problems(fingerprints: dict, present: dict) -> list[str]:
    problems = []
    for name, fp in sorted(fingerprints.items()):
        if name not in present:
            problems.append(f"array '{name}' is missing from the store")
        elif array_fingerprint(present[name].metadata.to_dict()) != fp:
            problems.append(
                f"the metadata of array '{name}' (its zarr.json: dtype, endianness, shape, chunks or codecs) was "
                "changed after the store was created; its values cannot be trusted"
            )
    return problems


def _coord_problems(fingerprints: dict, present: dict) -> list[str]:
    problems = []
    for name, fp in sorted(fingerprints.items()):
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
    return problems


def _hash_problems(attrs: dict, present: dict, grid_x, grid_target) -> list[str]:
    """Check the evaluation grid and the training set against the hashes the store was created with."""
    problems = []
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
