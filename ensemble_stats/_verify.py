"""Full verification of a store on disk: corrupt chunks, chunks missing under a commit mark, stray files."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from . import schema
from .errors import StoreNotFoundError, ValidationError

PARTIAL_MARKERS = (".partial",)


@dataclass(frozen=True)
class StoreProblem:
    """One problem found by :func:`verify_store`.

    ``kind`` is ``"corrupt"`` (checksum or decode failure), ``"missing"`` (a chunk absent although its
    records are marked written) or ``"partial"`` (a stray temporary file left by a killed writer).
    """

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path} ({self.detail})"


def _chunk_path(root: Path, arr: zarr.Array, coords) -> Path:
    return root / arr.path / arr.metadata.encode_chunk_key(tuple(coords))


def verify_store(path: str | os.PathLike, *, clean: bool = False) -> list[StoreProblem]:
    """Read every chunk of a local store and report what is wrong.

    Parameters
    ----------
    path
        A local store directory.
    clean
        Remove stray partial files after reporting them.

    Returns
    -------
    list of StoreProblem
        Empty when the store is sound.
    """
    root = Path(path)
    if "://" in str(path):
        raise ValidationError(f"verify reads chunk files directly and supports local stores only, got {path}.")
    if not (root / "zarr.json").is_file():
        raise StoreNotFoundError(f"{root} is not an ensemble store (no zarr.json).")
    group = zarr.open_group(str(root), mode="r", zarr_format=3)
    problems: list[StoreProblem] = []

    for dirpath, _, files in os.walk(root):
        for f in files:
            if any(m in f for m in PARTIAL_MARKERS):
                p = Path(dirpath) / f
                problems.append(StoreProblem("partial", str(p), "temporary file of an interrupted write"))
                if clean:
                    p.unlink(missing_ok=True)

    written = None
    if schema.WRITTEN in group:
        try:
            written = np.asarray(group[schema.WRITTEN][...])
        except Exception:  # noqa: BLE001 - a corrupt commit mark is reported chunk by chunk below
            written = None
    record_arrays = {schema.PREDICTION, schema.STEP}
    for name, arr in sorted(group.arrays()):
        for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
            cpath = _chunk_path(root, arr, coords)
            if not cpath.exists():
                if name in record_arrays and written is not None:
                    sl = tuple(slice(c * s, (c + 1) * s) for c, s in zip(coords, arr.chunks, strict=False))
                    if written[sl[: written.ndim]].any():
                        problems.append(
                            StoreProblem(
                                "missing",
                                str(cpath),
                                f"chunk {coords} of '{name}' is absent but its records are marked written",
                            )
                        )
                continue
            try:
                arr.blocks[tuple(coords)]
            except Exception as e:  # noqa: BLE001 - any decode failure is corruption
                problems.append(
                    StoreProblem("corrupt", str(cpath), f"chunk {coords} of '{name}': {type(e).__name__}: {e}")
                )
    return problems
