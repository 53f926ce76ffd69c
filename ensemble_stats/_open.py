"""Opening ensemble stores as lazy, validated, masked xarray Datasets."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from . import schema
from ._verify import verify_store
from .errors import GridMismatchError, StoreCorruptionError, StoreNotFoundError, ValidationError

PathLike = str | os.PathLike


def _is_url(p: PathLike) -> bool:
    return "://" in str(p)


def _open_one(path: PathLike) -> xr.Dataset:
    if not _is_url(path) and not (Path(path) / "zarr.json").is_file():
        raise StoreNotFoundError(
            f"{path} is not an ensemble store (no zarr.json); pass the directory created by EnsembleStore.create "
            "or `ensemble-stats run`."
        )
    try:
        ds = xr.open_zarr(str(path), consolidated=False, chunks={}, zarr_format=3, use_zarr_fill_value_as_mask=False)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreNotFoundError(f"{path} could not be opened as a Zarr v3 ensemble store ({e}).") from None
    ds = ds.chunk(_analysis_chunks(ds))
    problems = schema.validate_dataset(ds)
    ValidationError.raise_if(problems, f"{path} does not follow ensemble schema v{schema.SCHEMA_VERSION}")
    ds.encoding["source"] = str(path)
    return ds


DASK_CHUNK_BYTES = 4 << 20


def _analysis_chunks(ds: xr.Dataset) -> dict[str, int]:
    """Dask chunks for analysis: many seeds per chunk (a multiple of the store's seed chunk, about 4 MiB).

    The store chunks one run per chunk so that writers never share one; analysis reduces over seeds, and
    thousands of one-run tasks would cost more in scheduling than in arithmetic.
    """
    pred = ds[schema.PREDICTION]
    if pred.chunks is None or schema.SEED not in pred.dims:
        return {}
    sizes = dict(zip(pred.dims, pred.chunks, strict=True))
    zarr_seed = sizes[schema.SEED][0]
    per_seed = pred.dtype.itemsize * int(np.prod([sizes[d][0] for d in pred.dims if d != schema.SEED]))
    n = max(1, DASK_CHUNK_BYTES // max(per_seed, 1) // zarr_seed) * zarr_seed
    return {schema.SEED: int(min(n, pred.sizes[schema.SEED]))}


def _combine(parts: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate stores along the one sweep dim whose coordinates differ."""
    hashes = {p.attrs[schema.ATTR_GRID_HASH] for p in parts}
    if len(hashes) > 1:
        raise GridMismatchError(
            f"stores have {len(hashes)} different evaluation grids; only stores with identical grids combine. "
            "Open them separately."
        )
    extra = tuple(parts[0].attrs.get(schema.ATTR_EXTRA_DIMS, ()))
    problems = []
    for p in parts[1:]:
        if tuple(p.attrs.get(schema.ATTR_EXTRA_DIMS, ())) != extra:
            problems.append(f"extra dims differ: {extra} vs {tuple(p.attrs.get(schema.ATTR_EXTRA_DIMS, ()))}.")
        if not np.array_equal(p[schema.TIME].values, parts[0][schema.TIME].values):
            problems.append("recording times differ between stores; only stores with the same times combine.")
        if p[schema.TIME].attrs.get("units") != parts[0][schema.TIME].attrs.get("units"):
            problems.append("time units differ between stores.")
    ValidationError.raise_if(problems, "open_ensemble")
    sweep = (*schema.RUN_DIMS, *extra)
    differing = [d for d in sweep if any(not np.array_equal(p[d].values, parts[0][d].values) for p in parts[1:])]
    if len(differing) != 1:
        raise ValidationError(
            f"stores differ along {differing or 'no'} sweep dims; they combine along exactly one (e.g. more seeds "
            "run later into a second store with the same gammas, widths and times). Was a store given twice?",
            "open_ensemble",
        )
    dim = differing[0]
    values = np.concatenate([p[dim].values for p in parts])
    uniq, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        raise ValidationError(
            f"{dim} values {uniq[counts > 1].tolist()} appear in more than one store.", "open_ensemble"
        )
    combined = xr.concat(
        parts, dim=dim, data_vars="minimal", coords="minimal", compat="override", join="exact", combine_attrs="override"
    )
    return combined.sortby(dim)


def open_ensemble(path_or_paths: PathLike | Sequence[PathLike], *, verify: bool = False) -> xr.Dataset:
    """Open one or several ensemble stores as one lazy, labelled Dataset.

    Parameters
    ----------
    path_or_paths
        A store path (or fsspec URL), or a list of stores with identical grids that differ along one sweep dim.
    verify
        Read every chunk first and raise :class:`StoreCorruptionError` listing missing, corrupt and stray
        partial files.

    Returns
    -------
    xarray.Dataset
        Dask-backed; ``prediction`` (gamma, width, seed, [extra...], time, point, output) and the per-record
        scalars are NaN where ``written`` is false. ``written`` is read when the store is opened (a consistent
        snapshot while writers run: records committed later stay masked); ``step`` is kept, as is
        ``diverged_step`` (run dims; -1 for runs that never produced non-finite outputs).
    """
    paths = [path_or_paths] if isinstance(path_or_paths, str | os.PathLike) else list(path_or_paths)
    if not paths:
        raise ValidationError("no store paths given; pass a path or a non-empty list of paths.", "open_ensemble")
    if verify:
        for p in paths:
            problems = verify_store(p)
            if problems:
                raise StoreCorruptionError(problems, str(p))
    parts = [_open_one(p) for p in paths]
    ds = parts[0] if len(parts) == 1 else _combine(parts)
    # A snapshot of the commit marks, read now: writers store data before marking it written, so every record
    # marked here is complete on disk whenever the lazy data is read later. Masking with a lazily read mark
    # could pair a mark read after a concurrent commit with data read before it (a written record read as NaN).
    written = ds[schema.WRITTEN].compute()
    ds[schema.WRITTEN] = written
    ds[schema.PREDICTION] = xr.apply_ufunc(
        functools.partial(_mask_checked, source=", ".join(str(p) for p in paths)),
        ds[schema.PREDICTION],
        written,
        ds[schema.STEP],
        ds[schema.DIVERGED_STEP],
        input_core_dims=[[schema.POINT, schema.OUTPUT], [], [], []],
        output_core_dims=[[schema.POINT, schema.OUTPUT]],
        dask="parallelized",
        output_dtypes=[ds[schema.PREDICTION].dtype],
        keep_attrs=True,
    )
    for name in schema.SCALAR_VARIABLES:
        if name in ds:
            ds[name] = ds[name].where(written)
    return ds


def _mask_checked(
    pred: np.ndarray, written: np.ndarray, step: np.ndarray, diverged: np.ndarray, *, source: str
) -> np.ndarray:
    """NaN where not written; raise where a written record reads as all fill value without having diverged.

    A chunk deleted under its commit mark reads back as zarr's fill value (NaN), which would otherwise pass
    for a diverged record: the store marks every non-finite record's run as diverged at or before its step.
    """
    allnan = np.isnan(pred).all(axis=(-2, -1))
    lost = written & allnan & ((diverged < 0) | (step < diverged))
    if lost.any():
        raise StoreCorruptionError(
            [
                f"{int(lost.sum())} record(s) are marked written but read as fill values (their chunk files are "
                "missing); `ensemble-stats info STORE --verify` lists them"
            ],
            source,
        )
    return np.where(written[..., None, None], pred, np.nan)
