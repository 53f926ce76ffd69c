"""Opening ensemble stores as lazy, validated, masked xarray Datasets."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence

import dask
import numpy as np
import xarray as xr
import zarr

from .. import schema
from .._ufunc import apply_ufunc
from ..errors import GridMismatchError, StoreCorruptionError, StoreNotFoundError, ValidationError
from . import _integrity
from ._paths import has_group, is_url, location
from ._store import EnsembleStore
from ._verify import diverged_mismatches, verify_store

PathLike = str | os.PathLike


def _open_one(path: PathLike) -> xr.Dataset:
    if is_url(path):
        location(path)  # a URL whose file system is not installed: one clear error, not fsspec's traceback
    if not is_url(path) and not has_group(path):
        raise StoreNotFoundError(
            f"{path} is not an ensemble store (no zarr.json); pass the directory created by EnsembleStore.create "
            "or `ensemble-stats run`."
        )
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        raise StoreNotFoundError(f"{path} could not be opened as a Zarr v3 ensemble store ({e}).") from None
    try:
        problems = _integrity.check_manifest(group)
    except Exception as e:  # noqa: BLE001 - metadata that cannot even be parsed is corruption
        problems = [f"the store's metadata cannot be read ({type(e).__name__}: {e})"]
    if problems:
        raise StoreCorruptionError(problems, str(path), repairable=False)
    try:
        ds = xr.open_zarr(str(path), consolidated=False, chunks={}, zarr_format=3, use_zarr_fill_value_as_mask=False)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreNotFoundError(f"{path} could not be opened as a Zarr v3 ensemble store ({e}).") from None
    if schema.PAIR in ds.data_vars:
        ds = ds.set_coords(schema.PAIR)
    if ds.attrs.get(schema.ATTR_LAYERS) and schema.LAYER in ds.dims:
        ds = ds.assign_coords({schema.LAYER: list(ds.attrs[schema.ATTR_LAYERS])})
    ds = ds.chunk(_analysis_chunks(ds))
    problems = schema.validate_dataset(ds)
    ValidationError.raise_if(problems, f"{path} does not follow ensemble schema v{schema.SCHEMA_VERSION}")
    ds = _masked(ds, str(path))
    ds[schema.PREDICTION].attrs["long_name"] = schema.prediction_long_name(_loss(ds.attrs))
    schema.set_labels(ds)
    ds.encoding["source"] = str(path)
    return ds


def _loss(attrs) -> str | None:
    """Return the loss the store's runs were trained with (trainer's model description, else the sweep config)."""
    model = attrs.get(schema.ATTR_MODEL)
    if isinstance(model, dict) and model.get("loss"):
        return str(model["loss"])
    config = attrs.get(schema.ATTR_CONFIG)
    if isinstance(config, str):
        import json

        try:
            config = json.loads(config)
        except ValueError:
            return None
    return (config or {}).get("optimizer", {}).get("loss") if isinstance(config, dict) else None


def corruption_error(path: PathLike, error: Exception) -> StoreCorruptionError:
    """Return a :class:`StoreCorruptionError` for a read of ``path`` that failed with ``error``.

    It names the bad chunks (found by :func:`verify_store`).
    """
    if isinstance(error, StoreCorruptionError):
        return error
    try:
        found = [p for p in verify_store(path) if p.kind != "partial"]
    except Exception:  # noqa: BLE001 - verification itself failed: report the original error
        found = []
    if found:
        return StoreCorruptionError(found, str(path), repairable=all(p.repairable for p in found))
    return StoreCorruptionError([f"reading failed: {type(error).__name__}: {str(error)[:300]}"], str(path))


def _masked(ds: xr.Dataset, source: str) -> xr.Dataset:
    """Unwritten records masked to NaN; written ones checked against their digests when the data is read."""
    # A snapshot of the commit marks, read now: writers store data before marking it written, so every record
    # marked here is complete on disk whenever the lazy data is read later. Masking with a lazily read mark
    # could pair a mark read after a concurrent commit with data read before it (a written record read as NaN).
    guarded = schema.DIVERGED_DIGEST in ds and schema.ATTR_STORE_ID in ds.attrs
    try:  # with diverged_step and its digest (small: run dims, needed by every read), in one pass
        written, diverged, *digest = dask.compute(
            ds[schema.WRITTEN],
            ds[schema.DIVERGED_STEP],
            *([ds[schema.DIVERGED_DIGEST]] if guarded else []),
            scheduler="threads",
        )
    except Exception as e:  # noqa: BLE001 - a corrupt commit mark: name the files
        raise corruption_error(source, e) from None
    if guarded:
        key = _integrity.store_key(ds.attrs[schema.ATTR_STORE_ID])
        if diverged_mismatches(key, diverged.values, digest[0].values).any():
            raise corruption_error(source, ValueError("diverged_step does not match its digest"))
    ds[schema.DIVERGED_STEP] = diverged
    ds[schema.WRITTEN] = written
    rdims = list(written.dims)
    digests = all(n in ds for n in schema.INTERNAL_VARIABLES) and schema.ATTR_STORE_ID in ds.attrs
    key = _integrity.store_key(ds.attrs[schema.ATTR_STORE_ID]) if digests else None
    chunks = ds[schema.STEP].chunksizes
    positions = [xr.DataArray(np.arange(ds.sizes[d]), dims=d).chunk({d: chunks[d]}) for d in rdims]
    common = dict(dask="parallelized", keep_attrs=True)
    checks = [ds[schema.DIGEST], *positions] if digests else []  # stores written before digests have none
    pred = apply_ufunc(
        functools.partial(_mask_prediction, key=key, source=source),
        ds[schema.PREDICTION],
        written,
        ds[schema.STEP],
        ds[schema.DIVERGED_STEP],
        *checks,
        input_core_dims=[[schema.POINT, schema.OUTPUT], *([[]] * (3 + len(checks)))],
        output_core_dims=[[schema.POINT, schema.OUTPUT]],
        output_dtypes=[ds[schema.PREDICTION].dtype],
        **common,
    )
    ds[schema.PREDICTION] = pred
    declared = schema.scalar_names(ds.attrs)
    names = [n for n in declared if n in ds]
    if digests and len(names) == len(declared):
        masked = apply_ufunc(
            functools.partial(_mask_scalars, key=key, source=source, n=len(names)),
            written,
            ds[schema.STEP],
            ds[schema.SCALAR_DIGEST],
            *(ds[n] for n in names),
            *positions,
            output_core_dims=[[]] * len(names),
            output_dtypes=[np.float32] * len(names),
            **common,
        )
        for name, values in zip(names, masked, strict=True):
            ds[name] = values.assign_attrs(ds[name].attrs)
    else:
        for name in names:
            ds[name] = ds[name].where(written)
    for name in schema.field_names(ds.attrs):  # NTK and displacement: not in the digests; masked like the rest
        if name in ds:
            ds[name] = ds[name].where(written).assign_attrs(ds[name].attrs)
    ds = ds.drop_vars([n for n in (*schema.INTERNAL_VARIABLES, schema.DIVERGED_DIGEST) if n in ds])
    for name, long_name in schema.LONG_NAMES.items():  # stores written before they were set
        if name in ds.variables and "long_name" not in ds[name].attrs:
            ds[name].attrs["long_name"] = long_name
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


def sweep_config(ds: xr.Dataset) -> dict:
    """Return the sweep configuration a store was run with: its TOML tables, parsed (a fresh dict per call).

    Stores written by ``run_sweep`` (or ``ensemble-stats run``) keep the whole validated config, defaults
    filled in, in the group attribute ``config``: ``[sweep]``, ``[time]``, ``[model]``, ``[data]``,
    ``[optimizer]``, ``[run]``, ``[record]``.

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble`

    Returns
    -------
    dict of tables

    Raises
    ------
    ValidationError
        The store was not written by a sweep (an ``OutputCollector`` or ``train_block`` store has no config).

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))
    >>> cfg = es.sweep_config(ds)
    >>> cfg["sweep"]["gammas"], cfg["data"]["name"], cfg["optimizer"]["alpha"]
    ([0.75], 'teacher', 1.0)
    >>> folder.cleanup()
    """
    raw = ds.attrs.get(schema.ATTR_CONFIG)
    if raw is None:
        raise ValidationError(
            "the store has no sweep configuration (attrs['config']): it was not written by run_sweep / "
            "`ensemble-stats run`. Read what you need from its coordinates, or pass the values explicitly."
        )
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"the store's attrs['config'] is not a JSON object ({type(e).__name__}: {e}).") from None
    if not isinstance(cfg, dict):
        raise ValidationError(f"the store's attrs['config'] is a {type(cfg).__name__}, not a table of tables.")
    return cfg


CONFIG_DIMS: dict[str, tuple[str, str, float]] = {
    schema.ALPHA: ("optimizer", "alpha", 1.0),
    schema.DATA_SEED: ("optimizer", "data_seed", 0),
}
"""Sweep dims a store without them still has one value of: dim -> (config table, key, default)."""


def _add_config_dims(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    """Give a store that lacks a swept config dim (alpha, data_seed) the one value its config trained with.

    A sweep over alpha and a first run at the default alpha combine: the latter becomes alpha = its configured
    value (length one along the new dim), so the stores differ along that one dim as :func:`_combine` needs.
    """
    extras = [tuple(p.attrs.get(schema.ATTR_EXTRA_DIMS, ())) for p in parts]
    longest = max(extras, key=len)
    if all(e == longest for e in extras):
        return parts
    out = []
    for p, extra in zip(parts, extras, strict=True):
        missing = [d for d in longest if d not in extra]
        if [d for d in longest if d in extra] != list(extra) or any(d not in CONFIG_DIMS for d in missing):
            out.append(p)  # not a subset in order, or not a config value: _combine reports the difference
            continue
        try:
            config = sweep_config(p)
        except ValidationError:
            out.append(p)
            continue
        for d in missing:
            table, key, default = CONFIG_DIMS[d]
            value = config.get(table, {}).get(key)
            value = default if value is None else value
            at = 3 + longest.index(d)  # after gamma, width, seed and the extra dims before it
            runs = [v for v in p.data_vars if schema.SEED in p[v].dims]
            p = p.assign({v: p[v].expand_dims({d: [value]}, axis=at) for v in runs})
        p.attrs[schema.ATTR_EXTRA_DIMS] = list(longest)
        out.append(p)
    return out


def _combine(parts: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate stores along the one sweep dim whose coordinates differ."""
    parts = _add_config_dims(parts)
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
        for attr in (schema.ATTR_NTK_POINTS, schema.ATTR_LAYERS):
            if p.attrs.get(attr) != parts[0].attrs.get(attr):
                problems.append(
                    f"the stores record different {attr} ({p.attrs.get(attr)} vs {parts[0].attrs.get(attr)})."
                )
        if (schema.PAIR in p.coords) != (schema.PAIR in parts[0].coords):
            problems.append(
                "one store has antithetic seed pairs (a 'pair' coordinate) and another has not; their seeds are "
                "drawn differently, so open them separately."
            )
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


def open_ensemble(
    path_or_paths: PathLike | Sequence[PathLike], *, verify: bool = False, diverged: str = "exclude"
) -> xr.Dataset:
    """Open one or several ensemble stores as one lazy, labelled Dataset.

    Parameters
    ----------
    path_or_paths
        A store path (or fsspec URL, or an open :class:`EnsembleStore`), or a list of them with identical grids
        that differ along one sweep dim.
    verify
        Read every chunk first and raise :class:`StoreCorruptionError` listing missing, corrupt and stray
        partial files.
    diverged : {"exclude", "keep"}
        ``"exclude"`` (default): the records of a diverged run from its ``diverged_step`` on (non-finite values,
        or a blow-up the trainer flagged) read as NaN, so every statistic leaves them out and counts them;
        ``"keep"``: as stored.

    Returns
    -------
    xarray.Dataset
        Dask-backed; ``prediction`` (gamma, width, seed, [extra...], time, point, output) and the per-record
        scalars are NaN where ``written`` is false. ``written`` is read when the store is opened (a consistent
        snapshot while writers run: records committed later stay masked); ``step`` is kept, as is
        ``diverged_step`` (run dims; -1 for runs that never produced non-finite outputs).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import ensemble_stats as es
    >>> from ensemble_stats.store import EnsembleStore, EvalGrid
    >>> folder = tempfile.TemporaryDirectory()
    >>> grid = EvalGrid(np.linspace(-1, 1, 5)[:, None], np.zeros(5))
    >>> store = EnsembleStore.create(f"{folder.name}/runs.zarr", grid, gammas=[0.75], widths=[64], seeds=[0, 1],
    ...                              times=[0.0, 1.0])
    >>> store.write_records((0, 0, 0), [0, 1], np.zeros((2, 5, 1)), [0, 64])  # run (gamma 0.75, N 64, seed 0)
    >>> ds = es.open_ensemble(store.path)
    >>> ds.prediction.dims
    ('gamma', 'width', 'seed', 'time', 'point', 'output')
    >>> ds.written.sum().item()  # seed 1 is not written yet
    2
    >>> folder.cleanup()
    """
    one = isinstance(path_or_paths, str | os.PathLike | EnsembleStore)
    paths = [p.path if isinstance(p, EnsembleStore) else p for p in ([path_or_paths] if one else path_or_paths)]
    if not paths:
        raise ValidationError("no store paths given; pass a path or a non-empty list of paths.", "open_ensemble")
    if diverged not in ("exclude", "keep"):
        raise ValidationError(f"diverged={diverged!r}: use 'exclude' or 'keep'.", "open_ensemble")
    if verify:
        for p in paths:
            problems = verify_store(p)
            if problems:
                raise StoreCorruptionError(problems, str(p))
    parts = [_open_one(p) for p in paths]
    ds = parts[0] if len(parts) == 1 else _combine(parts)
    return _exclude_diverged(ds) if diverged == "exclude" else ds


def _exclude_diverged(ds: xr.Dataset) -> xr.Dataset:
    """Mask the records at or after a run's ``diverged_step`` as NaN (prediction and every per-record scalar)."""
    div = ds[schema.DIVERGED_STEP]
    if not bool((div >= 0).any()):
        return ds
    keep = (div < 0) | (ds[schema.STEP] < div)
    fields = schema.field_names(ds.attrs)
    for name in (schema.PREDICTION, *(n for n in (*schema.scalar_names(ds.attrs), *fields) if n in ds)):
        ds[name] = ds[name].where(keep).assign_attrs(ds[name].attrs)
    ds.attrs["diverged_records"] = "excluded: NaN from each diverged run's diverged_step on (open_ensemble)"
    return ds


def _axes(positions) -> list[np.ndarray]:
    """Return the 1-D index along each record dim from broadcast position blocks.

    The blocks have the record dims, length 1 elsewhere.
    """
    out = []
    for axis, p in enumerate(positions):
        p = np.asarray(p)
        idx = [0] * p.ndim
        idx[axis] = slice(None)
        out.append(p[tuple(idx)])
    return out


def _mask_prediction(
    pred: np.ndarray, written: np.ndarray, step: np.ndarray, diverged: np.ndarray, *rest, key, source: str
) -> np.ndarray:
    """NaN where not written; raise where a written record is not what was written.

    With digests (``rest`` = digest, then one position array per record dim), every written record's bytes
    must match its digest: a chunk swapped across runs, copied from another store or lost raises. Without,
    a written record that reads as all fill value without having diverged raises (its chunk was deleted).
    """
    written = np.broadcast_to(written, pred.shape[:-2])
    if key is not None:
        digest, positions = rest[0], rest[1:]
        keys = position_keys_for(key, positions, pred.shape[:-2])
        stepb = np.broadcast_to(step, pred.shape[:-2])
        bad = written & (_integrity.record_digest(keys, _integrity.prediction_parts(pred, stepb)) != digest)
        what = "do not match their digests (a chunk swapped across runs, copied from another store, edited or lost)"
    else:
        allnan = np.isnan(pred).all(axis=(-2, -1))
        bad = written & allnan & ((diverged < 0) | (step < diverged))
        what = "read as fill values (their chunk files are missing)"
    if bad.any():
        raise StoreCorruptionError(
            [
                f"{int(bad.sum())} record(s) are marked written but {what}; `ensemble-stats info STORE --verify` lists them"
            ],
            source,
        )
    return np.where(written[..., None, None], pred, np.nan)


def position_keys_for(key, positions, shape) -> np.ndarray:
    """Keys of a block of record ``shape`` whose index along each record dim is given by ``positions``."""
    axes = _axes([np.broadcast_to(p, shape) for p in positions])
    return _integrity.position_keys(key, axes)


def _mask_scalars(written, step, digest, *rest, key, source: str, n: int):
    scalars, positions = rest[:n], rest[n:]
    shape = np.broadcast_shapes(*(np.shape(a) for a in (written, step, digest, *scalars)))
    written = np.broadcast_to(written, shape)
    keys = position_keys_for(key, positions, shape)
    parts = _integrity.scalar_parts(np.broadcast_to(step, shape), [np.broadcast_to(s, shape) for s in scalars])
    bad = written & (_integrity.record_digest(keys, parts) != np.broadcast_to(digest, shape))
    if bad.any():
        raise StoreCorruptionError(
            [
                f"{int(bad.sum())} record(s) are marked written but their per-record scalars do not match their "
                "digests (a scalar chunk lost, swapped or edited); `ensemble-stats info STORE --verify` lists them"
            ],
            source,
        )
    return tuple(np.where(written, s, np.nan).astype(np.float32) for s in scalars)
