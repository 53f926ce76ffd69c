"""Provenance of results: CF-style global attributes that trace a result to the stores it was computed from."""

from __future__ import annotations

import datetime
import hashlib
import json

import xarray as xr

from . import schema

CONVENTIONS = "CF-1.10"


def config_hash(config) -> str:
    """Return the first 16 hex digits of the SHA-256 of a store's config (a dict or its JSON text); ``"none"``."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            pass
    if not config:
        return "none"
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def history_line(what: str) -> str:
    """``<UTC date>: ensemble-stats <version>: <what>``, one line of a CF ``history`` attribute."""
    from . import __version__

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now}: ensemble-stats {__version__}: {what}"


def source_attrs(ds: xr.Dataset) -> dict[str, str]:
    """Global attributes naming the store behind ``ds`` (from :func:`open_ensemble`): empty for in-memory data.

    ``Conventions``, ``source_stores`` (its path or URL), ``source_store_ids`` and ``source_config_hashes``.
    """
    source = ds.encoding.get("source")
    if source is None and schema.ATTR_STORE_ID not in ds.attrs:
        return {}
    return {
        "Conventions": CONVENTIONS,
        "source_stores": str(source or "unknown"),
        "source_store_ids": str(ds.attrs.get(schema.ATTR_STORE_ID, "none")),
        "source_config_hashes": config_hash(ds.attrs.get(schema.ATTR_CONFIG)),
    }


def with_provenance(res: xr.Dataset, ds: xr.Dataset, what: str) -> xr.Dataset:
    """Finish a result ``res`` of ``ds``: one-line labels, units and provenance.

    Labels and units by :func:`schema.set_labels`; :func:`source_attrs` of ``ds`` with a ``history`` line saying
    what computed it.
    """
    schema.set_labels(res)
    attrs = source_attrs(ds)
    if attrs:
        res.attrs.update(attrs | {"history": history_line(what)})
    return res
