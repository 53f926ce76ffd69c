"""The one way the xarray wrappers apply their numpy kernels: ``xr.apply_ufunc`` with whole core dims."""

from __future__ import annotations

import xarray as xr


def apply_ufunc(func, *args, input_core_dims=None, **kwargs):
    """:func:`xarray.apply_ufunc`, with each argument's core dims rechunked into one dask chunk first.

    A kernel reduces over its core dims (seeds, widths, the grid), so it needs them whole; stores open chunked
    one run per chunk, and a user may rechunk anything. Rechunking here, per argument and only along its core
    dims, makes every public function work on any chunking (a no-op for numpy-backed or already whole arrays).
    """
    if input_core_dims:
        core = list(input_core_dims) + [()] * (len(args) - len(input_core_dims))
        args = tuple(_whole(a, dims) for a, dims in zip(args, core, strict=True))
    return xr.apply_ufunc(func, *args, input_core_dims=input_core_dims, **kwargs)


def _whole(a, dims):
    if isinstance(a, xr.DataArray | xr.Dataset) and a.chunks and dims:
        return a.chunk({d: -1 for d in dims if d in a.dims})
    return a
