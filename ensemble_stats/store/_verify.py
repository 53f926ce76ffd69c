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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .. import schema
from ..errors import StoreNotFoundError
from . import _integrity
from ._locks import is_free, lock_dir, lock_name
from ._paths import has_group, location

PARTIAL_MARKERS = (".partial",)
STALE_PARTIAL_SECONDS = 60.0
"""A partial file of a non-run array (written by no run's writer) is swept only once this old."""


CLOCK_SKEW_SECONDS = 5.0
"""How far in the future a file's time may lie and still be read as "just written" (clocks of shared file
systems differ by this much)."""


def is_stale(mtime: float, now: float) -> bool:
    """Whether a file last written at ``mtime`` is ``STALE_PARTIAL_SECONDS`` old, by this host's clock ``now``.

    A time further in the future than ``CLOCK_SKEW_SECONDS`` was stamped by a clock that is not ours (or set
    by hand): its age cannot be known, so it counts as stale, never as forever young.
    """
    age = now - mtime
    return age > STALE_PARTIAL_SECONDS or age < -CLOCK_SKEW_SECONDS


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


class _Where:
    """Chunk locations of a local store (files) or of one on object storage (keys of its zarr store)."""

    def __init__(self, root: Path | str, group: zarr.Group | None = None):
        self.root, self.group = root, group
        self.remote = isinstance(root, str)

    def chunk(self, arr: zarr.Array, coords) -> str:
        key = f"{arr.path}/{arr.metadata.encode_chunk_key(tuple(coords))}"
        return f"{self.root}/{key}" if self.remote else str(self.root / key)

    def exists(self, arr: zarr.Array, coords) -> bool:
        if not self.remote:
            return Path(self.chunk(arr, coords)).exists()
        from zarr.core.sync import sync

        return bool(sync(self.group.store.exists(f"{arr.path}/{arr.metadata.encode_chunk_key(tuple(coords))}")))

    def join(self, *parts: str) -> str:
        return "/".join([str(self.root), *parts]) if self.remote else str(Path(self.root, *parts))


def _record_arrays(group: zarr.Group) -> list[str]:
    return [n for n in schema.record_variables(group.attrs) if n in group]


def _describe_region(region, dims) -> str:
    return ", ".join(f"{d} {a}" if b - a == 1 else f"{d} {a}..{b - 1}" for d, (a, b) in zip(dims, region, strict=True))


def verify_store(path: str | os.PathLike, *, clean: bool = False) -> list[StoreProblem]:
    """Read every chunk of a store (local, or a URL on object storage) and report what is wrong.

    Never raises on what it finds.

    Parameters
    ----------
    path
        A local store directory or an fsspec URL.
    clean
        Remove stray partial files of writers that are gone (a live writer's are spared) after reporting them.
        Object storage has no partial files: its puts are atomic.

    Returns
    -------
    list of StoreProblem
        Empty when the store is sound.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import ensemble_stats as es
    >>> from ensemble_stats.store import EnsembleStore, EvalGrid
    >>> folder = tempfile.TemporaryDirectory()
    >>> grid = EvalGrid(np.linspace(-1, 1, 5)[:, None], np.zeros(5))
    >>> store = EnsembleStore.create(f"{folder.name}/runs.zarr", grid, gammas=[0.75], widths=[64], seeds=[0],
    ...                              times=[0.0])
    >>> es.verify_store(store.path)
    []
    >>> folder.cleanup()
    """
    root = location(path)
    problems: list[StoreProblem] = []
    if not has_group(root):
        raise StoreNotFoundError(f"{root} is not an ensemble store (no zarr.json).")
    if not isinstance(root, str):
        problems += [
            StoreProblem("partial", str(p), "temporary file of an interrupted write") for p in _partial_files(root)
        ]
        if clean:
            sweep_partial_files(root)
    try:
        group = zarr.open_group(str(root), mode="r", zarr_format=3)
        attrs = group.attrs.asdict()
        arrays, unreadable = _integrity.member_arrays(group)
    except Exception as e:  # noqa: BLE001 - an unreadable zarr.json is what verify is for
        return [*problems, StoreProblem("metadata", f"{root}/zarr.json", f"{type(e).__name__}: {e}")]
    where = _Where(root, group)
    for name, why in unreadable.items():
        problems.append(
            StoreProblem("metadata", where.join(name, "zarr.json"), f"array metadata cannot be read ({why})")
        )
    if not unreadable:
        try:
            manifest = _integrity.check_manifest(group, members=(arrays, unreadable))  # listed once
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
            if name in (schema.DIVERGED_STEP, schema.DIVERGED_DIGEST):
                region = (
                    *((c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, arr.chunks, arr.shape, strict=True)),
                    (0, arrays[schema.WRITTEN].shape[-1]),
                )
            try:
                arr.blocks[tuple(coords)]
            except Exception as e:  # noqa: BLE001 - any decode failure is corruption
                problems.append(
                    StoreProblem("corrupt", where.chunk(arr, coords), f"chunk {coords} of '{name}': {_err(e)}", region)
                )
    if not any(p.kind == "corrupt" for p in problems):
        problems += _verify_diverged(where, arrays, attrs)
    problems += _verify_records(where, arrays, record, rdims, attrs)
    return problems


def _verify_diverged(where: _Where, arrays, attrs) -> list[StoreProblem]:
    """List the runs whose ``diverged_step`` does not match its digest.

    A rewritten chunk would silently drop or restore seeds in every statistic.
    """
    if schema.DIVERGED_DIGEST not in arrays or schema.ATTR_STORE_ID not in attrs:
        return []  # a store made before the diverged-step digest
    step, digest = arrays[schema.DIVERGED_STEP], arrays[schema.DIVERGED_DIGEST]
    bad = diverged_mismatches(_integrity.store_key(attrs[schema.ATTR_STORE_ID]), step[...], digest[...])
    problems = []
    T = arrays[schema.WRITTEN].shape[-1] if schema.WRITTEN in arrays else 0
    for coords in itertools.product(*(range(n) for n in step.cdata_shape)):
        region = tuple((c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, step.chunks, step.shape, strict=True))
        n_bad = int(bad[tuple(slice(a, b) for a, b in region)].sum())
        if n_bad:
            problems.append(
                StoreProblem(
                    "mismatch",
                    where.chunk(step, coords),
                    f"{n_bad} run(s) of chunk {coords} of '{schema.DIVERGED_STEP}' do not match their digest: the "
                    "divergence marks were edited or lost, which would drop or restore seeds in every statistic",
                    (*region, (0, T)),
                )
            )
    return problems


def diverged_mismatches(key, diverged: np.ndarray, digest: np.ndarray) -> np.ndarray:
    """Bool (run dims): runs whose ``diverged_step`` does not match its stored digest."""
    expected = _integrity.diverged_digests(key, [0] * np.ndim(diverged), diverged)
    return np.asarray(expected) != np.asarray(digest, dtype=np.uint64)


def _err(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"


def _verify_records(where: _Where, arrays, record, rdims, attrs) -> list[StoreProblem]:
    problems: list[StoreProblem] = []
    written_arr = arrays[schema.WRITTEN]
    store_id = attrs.get(schema.ATTR_STORE_ID)
    digests = store_id is not None and all(n in arrays for n in schema.INTERNAL_VARIABLES)
    key = _integrity.store_key(store_id) if digests else None
    scalars = schema.scalar_names(attrs)
    # chunks without a digest (the NTK fields) are checked for presence: a lost one would read as NaN, which for
    # them also means "not computed at this record"
    present = (schema.PREDICTION, schema.STEP, *(n for n in schema.field_names(attrs) if n in arrays))
    for coords in itertools.product(*(range(n) for n in written_arr.cdata_shape)):
        region = tuple(
            (c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, written_arr.chunks, written_arr.shape, strict=True)
        )
        at = _describe_region(region, rdims)
        blocks: dict[str, np.ndarray] = {}
        sel = tuple(slice(a, b) for a, b in region)
        for name, got in zip(record, _read_all([arrays[n] for n in record], sel), strict=True):
            arr = arrays[name]
            full = (*coords, *(0 for _ in arr.shape[len(coords) :]))
            if isinstance(got, Exception):  # any decode failure is corruption
                problems.append(
                    StoreProblem("corrupt", where.chunk(arr, full), f"chunk of '{name}' at {at}: {_err(got)}", region)
                )
                continue
            blocks[name] = got
            if name in present:
                blocks[name + "/exists"] = where.exists(arr, full)
        written = blocks.get(schema.WRITTEN)
        if written is None or not written.any():
            continue
        reported = len(problems)
        for name in present:
            if name in blocks and not blocks[name + "/exists"]:
                full = (*coords, *(0 for _ in arrays[name].shape[len(coords) :]))
                problems.append(
                    StoreProblem(
                        "missing",
                        where.chunk(arrays[name], full),
                        f"chunk of '{name}' at {at} is absent but its records are marked written",
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
        if all(n in blocks for n in scalars):
            checks.append(
                (
                    schema.SCALAR_DIGEST,
                    "per-record scalars",
                    _integrity.scalar_parts(blocks[schema.STEP], [blocks[n] for n in scalars]),
                )
            )
        for dname, what, parts in checks:
            bad = written & (_integrity.record_digest(keys, parts) != blocks[dname])
            if bad.any():
                first = tuple(int(a) + int(i) for (a, _), i in zip(region, np.argwhere(bad)[0], strict=True))
                problems.append(
                    StoreProblem(
                        "mismatch",
                        where.join(schema.PREDICTION) if dname == schema.DIGEST else str(where.root),
                        f"{int(bad.sum())} written record(s) at {at} do not match their digest ({what}; first at "
                        f"index {first}): a chunk swapped across runs, copied from another store, edited or lost",
                        region,
                    )
                )
    return problems


def _read_all(arrays: list[zarr.Array], sel: tuple) -> list:
    """Return the same region of several arrays, read concurrently in one round trip.

    An exception in place of each array that cannot be read.
    """
    import asyncio

    from zarr.core.sync import sync

    async def one(arr):
        try:
            return np.asarray(await arr._async_array.getitem(sel))
        except Exception as e:  # noqa: BLE001 - reported by the caller as corruption
            return e

    async def all_():
        return await asyncio.gather(*(one(a) for a in arrays))

    return sync(all_())


# --------------------------------------------------------------------------------------------- sweeper
def _partial_files(root: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            if any(m in f for m in PARTIAL_MARKERS):
                yield Path(dirpath) / f


def _run_key_of(root: Path, partial: Path, n_extra: int, run_arrays: Sequence[str]) -> tuple[int, ...] | None:
    """Return the writer unit (gamma, width, seed block, *extra) owning the chunk a partial file belongs to."""
    rel = partial.relative_to(root).parts
    if len(rel) < 3 or rel[1] != "c":
        return None
    name = rel[0]
    if name not in run_arrays:
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

    Parameters
    ----------
    path : a local store

    Returns
    -------
    (removed, spared) : the partial files removed, and those left (a live writer's, or too recent to judge)

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import ensemble_stats as es
    >>> from ensemble_stats.store import EnsembleStore, EvalGrid
    >>> folder = tempfile.TemporaryDirectory()
    >>> grid = EvalGrid(np.linspace(-1, 1, 5)[:, None], np.zeros(5))
    >>> store = EnsembleStore.create(f"{folder.name}/runs.zarr", grid, gammas=[0.75], widths=[64], seeds=[0],
    ...                              times=[0.0])
    >>> es.sweep_partial_files(store.path)  # (removed, spared): nothing stray here
    (0, 0)
    >>> folder.cleanup()
    """
    root = Path(path)
    try:
        attrs = zarr.open_group(str(root), mode="r", zarr_format=3).attrs.asdict()
        extra = attrs.get(schema.ATTR_EXTRA_DIMS, [])
        run_arrays = (*schema.record_variables(attrs), schema.DIVERGED_STEP, schema.DIVERGED_DIGEST)
    except Exception:  # noqa: BLE001 - unreadable metadata: only the age rule applies
        extra, run_arrays = None, ()
    removed = spared = 0
    for p in list(_partial_files(root)):
        key = _run_key_of(root, p, len(extra), run_arrays) if extra is not None else None
        if key is None:
            try:
                old = is_stale(p.stat().st_mtime, time.time())
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
