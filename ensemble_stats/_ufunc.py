"""The one way the xarray wrappers apply their numpy kernels: ``xr.apply_ufunc`` with whole core dims."""

from __future__ import annotations

import dask
import xarray as xr

CORE_BLOCK = "32MiB"
"""Block size the analyses rechunk to when they merge chunks along their core dims (kernels work in float64,
with a few temporaries of the block's size: peak memory is a small multiple of this per thread)."""


def apply_ufunc(func, *args, input_core_dims=None, **kwargs):
    """:func:`xarray.apply_ufunc`, with each argument's core dims rechunked into one dask chunk first.

    A kernel reduces over its core dims (seeds, widths, the grid), so it needs them whole; stores open chunked
    one run per chunk, and a user may rechunk anything. Rechunking here, per argument and only along its core
    dims, makes every public function work on any chunking (a no-op for numpy-backed or already whole arrays).
    """
    if input_core_dims:
        core = list(input_core_dims) + [()] * (len(args) - len(input_core_dims))
        args = tuple(whole_core(a, dims) for a, dims in zip(args, core, strict=True))
    return xr.apply_ufunc(func, *args, input_core_dims=input_core_dims, **kwargs)


def whole_core(a, dims):
    """Return ``a`` with ``dims`` in one dask chunk each, its other dims rechunked so that blocks stay bounded.

    Merging a store's chunks along seeds and widths multiplies the block size by their number (340 seeds in
    chunks of 4 at 6 widths: 510 times); the other dims then take dask's ``"auto"`` chunks of about
    ``CORE_BLOCK``, so a fit of a store larger than memory streams through it. A no-op for numpy-backed
    arrays and for core dims already whole.
    """
    if not (isinstance(a, xr.DataArray | xr.Dataset) and a.chunks and dims):
        return a
    core = [d for d in dims if d in a.dims]
    if all(len(chunks.get(d, (0,))) == 1 for chunks in _data_chunks(a) for d in core):
        return a
    with dask.config.set({"array.chunk-size": CORE_BLOCK}):  # read when "auto" is resolved, i.e. here
        return a.chunk({d: (-1 if d in core else "auto") for d in a.dims})


def _data_chunks(a):
    """Chunk sizes by dim of each data variable (coords may be chunked differently: a store's ``step``)."""
    variables = [a.variable] if isinstance(a, xr.DataArray) else list(a.data_vars.values())
    return [v.chunksizes for v in variables]
