"""Full verification of a store on disk, and the sweeper of stray partial files.

``verify_store`` reads every chunk and reports, without raising on anything it finds:

* ``metadata`` — a ``zarr.json`` that cannot be read, array metadata or coordinates or the grid changed after
  creation (see ``_integrity``): not repairable by retraining;
* ``corrupt`` — a chunk whose checksum or decoding fails;
* ``missing`` — a chunk absent although its records are marked written;
* ``mismatch`` — records whose bytes do not match their digest: a chunk swapped across runs, copied from
  another store, or a per-record scalar chunk lost;
* ``partial`` — a temporary file of an interrupted write.

Every record problem names its region (index ranges along the run dims and time), which
``EnsembleStore.repair`` un-commits so that a resumed sweep rewrites it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from . import _integrity, schema
from ._locks import is_free, lock_dir, lock_name
from ._paths import is_url
from .errors import StoreNotFoundError, ValidationError

PARTIAL_MARKERS = (".partial",)
STALE_PARTIAL_SECONDS = 60.0
"""A partial file of a non-run array (written by no run's writer) is swept only once this old."""


@dataclass(frozen=True)
class StoreProblem:
    """One problem found by :func:`verify_store`.

    ``kind`` is ``"metadata"``, ``"corrupt"``, ``"missing"``, ``"mismatch"`` or ``"partial"`` (see the module
    docstring). ``region`` gives, for problems with records, the (start, stop) index range along each record dim
    (run dims..., time) that must be rewritten; None otherwise.
    """

    kind: str
    path: str
    detail: str
    region: tuple[tuple[int, int], ...] | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.path} ({self.detail})"

    @property
    def repairable(self) -> bool:
        """Whether retraining the runs of ``region`` fixes it (partial files are swept instead)."""
        return self.region is not None


def _chunk_path(root: Path, arr: zarr.Array, coords) -> Path:
    return root / arr.path / arr.metadata.encode_chunk_key(tuple(coords))


def _record_arrays(group: zarr.Group) -> list[str]:
    return [n for n in schema.RECORD_VARIABLES if n in group]


def _describe_region(region, dims) -> str:
    return ", ".join(f"{d} {a}" if b - a == 1 else f"{d} {a}..{b - 1}" for d, (a, b) in zip(dims, region, strict=True))


def verify_store(path: str | os.PathLike, *, clean: bool = False) -> list[StoreProblem]:
    """Read every chunk of a local store and report what is wrong (never raises on what it finds).

    Parameters
    ----------
    path
        A local store directory.
    clean
        Remove stray partial files of writers that are gone (a live writer's are spared) after reporting them.

    Returns
    -------
    list of StoreProblem
        Empty when the store is sound.
    """
    if is_url(path):
        raise ValidationError(f"verify reads chunk files directly and supports local stores only, got {path}.")
    root = Path(path)
    if not (root / "zarr.json").is_file():
        raise StoreNotFoundError(f"{root} is not an ensemble store (no zarr.json).")
    problems: list[StoreProblem] = [
        StoreProblem("partial", str(p), "temporary file of an interrupted write") for p in _partial_files(root)
    ]
    if clean:
        sweep_partial_files(root)
    try:
        group = zarr.open_group(str(root), mode="r", zarr_format=3)
        attrs = group.attrs.asdict()
        arrays = dict(group.arrays())
    except Exception as e:  # noqa: BLE001 - an unreadable zarr.json is what verify is for
        return [*problems, StoreProblem("metadata", str(root / "zarr.json"), f"{type(e).__name__}: {e}")]
    for name in _unreadable_arrays(root, arrays):
        problems.append(StoreProblem("metadata", str(root / name / "zarr.json"), "array metadata cannot be read"))
    try:
        manifest = _integrity.check_manifest(group)
    except Exception as e:  # noqa: BLE001
        manifest = [f"{type(e).__name__}: {e}"]
    problems += [StoreProblem("metadata", str(root), p) for p in manifest]
    if any(p.kind == "metadata" for p in problems) or schema.WRITTEN not in arrays:
        return problems  # records cannot be placed when coordinates or metadata are wrong

    extra = tuple(attrs.get(schema.ATTR_EXTRA_DIMS, ()))
    rdims = schema.record_dims(extra)
    record = _record_arrays(group)
    for name, arr in sorted(arrays.items()):
        if name in record:
            continue
        for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
            region = None
            if name == schema.DIVERGED_STEP:
                region = (
                    *((c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, arr.chunks, arr.shape, strict=True)),
                    (0, arrays[schema.WRITTEN].shape[-1]),
                )
            try:
                arr.blocks[tuple(coords)]
            except Exception as e:  # noqa: BLE001 - any decode failure is corruption
                cpath = _chunk_path(root, arr, coords)
                problems.append(StoreProblem("corrupt", str(cpath), f"chunk {coords} of '{name}': {_err(e)}", region))
    problems += _verify_records(root, group, arrays, record, rdims, attrs)
    return problems


def _err(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"


def _unreadable_arrays(root: Path, arrays: dict) -> list[str]:
    out = []
    for entry in sorted(p for p in root.iterdir() if p.is_dir()):
        if (entry / "zarr.json").is_file() and entry.name not in arrays:
            out.append(entry.name)
    return out


def _verify_records(root, group, arrays, record, rdims, attrs) -> list[StoreProblem]:
    problems: list[StoreProblem] = []
    written_arr = arrays[schema.WRITTEN]
    store_id = attrs.get(schema.ATTR_STORE_ID)
    digests = store_id is not None and all(n in arrays for n in schema.INTERNAL_VARIABLES)
    key = _integrity.store_key(store_id) if digests else None
    for coords in itertools.product(*(range(n) for n in written_arr.cdata_shape)):
        region = tuple(
            (c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, written_arr.chunks, written_arr.shape, strict=True)
        )
        where = _describe_region(region, rdims)
        blocks: dict[str, np.ndarray] = {}
        for name in record:
            arr = arrays[name]
            full = (*coords, *(0 for _ in arr.shape[len(coords) :]))
            cpath = _chunk_path(root, arr, full)
            try:
                blocks[name] = np.asarray(arr.blocks[full])
            except Exception as e:  # noqa: BLE001 - any decode failure is corruption
                problems.append(StoreProblem("corrupt", str(cpath), f"chunk of '{name}' at {where}: {_err(e)}", region))
                continue
            blocks[name + "/exists"] = cpath.exists()
        written = blocks.get(schema.WRITTEN)
        if written is None or not written.any():
            continue
        reported = len(problems)
        for name in (schema.PREDICTION, schema.STEP):
            if name in blocks and not blocks[name + "/exists"]:
                problems.append(
                    StoreProblem(
                        "missing",
                        str(
                            _chunk_path(root, arrays[name], (*coords, *(0 for _ in arrays[name].shape[len(coords) :])))
                        ),
                        f"chunk of '{name}' at {where} is absent but its records are marked written",
                        region,
                    )
                )
        needed = (schema.PREDICTION, schema.STEP, *schema.INTERNAL_VARIABLES)
        if len(problems) > reported or not digests or any(n not in blocks for n in needed):
            continue  # a chunk already reported missing: its digest mismatch would say the same twice
        keys = _integrity.position_keys(key, _integrity.region_indices([a for a, _ in region], written.shape))
        checks = [
            (
                schema.DIGEST,
                "prediction/step",
                _integrity.prediction_parts(blocks[schema.PREDICTION], blocks[schema.STEP]),
            )
        ]
        if all(n in blocks for n in schema.SCALAR_VARIABLES):
            checks.append(
                (
                    schema.SCALAR_DIGEST,
                    "per-record scalars",
                    _integrity.scalar_parts(blocks[schema.STEP], [blocks[n] for n in schema.SCALAR_VARIABLES]),
                )
            )
        for dname, what, parts in checks:
            bad = written & (_integrity.record_digest(keys, parts) != blocks[dname])
            if bad.any():
                first = tuple(int(a) + int(i) for (a, _), i in zip(region, np.argwhere(bad)[0], strict=True))
                problems.append(
                    StoreProblem(
                        "mismatch",
                        str(root / schema.PREDICTION if dname == schema.DIGEST else root),
                        f"{int(bad.sum())} written record(s) at {where} do not match their digest ({what}; first at "
                        f"index {first}): a chunk swapped across runs, copied from another store, edited or lost",
                        region,
                    )
                )
    return problems


# --------------------------------------------------------------------------------------------- sweeper
def _partial_files(root: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            if any(m in f for m in PARTIAL_MARKERS):
                yield Path(dirpath) / f


def _run_key_of(root: Path, partial: Path, n_extra: int) -> tuple[int, ...] | None:
    """The writer unit (gamma, width, seed block, *extra) owning the chunk a partial file belongs to."""
    rel = partial.relative_to(root).parts
    if len(rel) < 3 or rel[1] != "c":
        return None
    name = rel[0]
    if name not in (*schema.RECORD_VARIABLES, schema.DIVERGED_STEP):
        return None
    last = rel[-1].split(".", 1)[0]
    try:
        coords = [int(p) for p in (*rel[2:-1], last)]
    except ValueError:
        return None
    need = 3 + n_extra
    return tuple(coords[:need]) if len(coords) >= need else None


def sweep_partial_files(path: str | os.PathLike) -> tuple[int, int]:
    """Remove stray ``*.partial`` files of writers that are gone; returns (removed, spared).

    A partial file of a run's chunk is removed only while that run's write lock is free (taken for the removal),
    so a live writer's temporary files are never touched; other partial files only once they are
    ``STALE_PARTIAL_SECONDS`` old.
    """
    root = Path(path)
    try:
        extra = zarr.open_group(str(root), mode="r", zarr_format=3).attrs.get(schema.ATTR_EXTRA_DIMS, [])
    except Exception:  # noqa: BLE001 - unreadable metadata: only the age rule applies
        extra = None
    removed = spared = 0
    for p in list(_partial_files(root)):
        key = _run_key_of(root, p, len(extra)) if extra is not None else None
        if key is None:
            try:
                old = time.time() - p.stat().st_mtime > STALE_PARTIAL_SECONDS
            except FileNotFoundError:
                continue  # its writer renamed it into place meanwhile
            if old:
                p.unlink(missing_ok=True)
                removed += 1
            else:
                spared += 1
            continue
        lock = is_free(lock_dir(root) / lock_name(key))
        if lock is None:
            spared += 1  # a live writer holds this run: the file is its write in progress
            continue
        try:
            if p.exists():
                p.unlink(missing_ok=True)
                removed += 1
        finally:
            lock.release()
    return removed, spared
