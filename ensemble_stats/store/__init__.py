"""The store's one home: paths, locks, integrity, layout rules, creation, opening, verification and repair.

A semi-public layer (in the manner of equinox's ``internal``): the toolkit's own packages (``collectors``, the
CLI) reach the store through the names here and nowhere else; a user who builds their own writer or tooling
may use them too, but only the names also exported by ``ensemble_stats`` and ``collectors`` (``open_ensemble``,
``verify_store``, ``EnsembleStore``, ``EvalGrid``, ``StoreSpec``) are the stable API.

The files, in the order data meets them:

- ``_paths.py``: one canonical location per path or URL, atomic outputs, object storage;
- ``_grid.py``: :class:`EvalGrid`, the evaluation grid and its content hash;
- ``_spec.py``: :class:`StoreSpec` (what a store is), the layout rules and the size checks;
- ``_build.py``: :func:`build`, a complete new store made visible atomically;
- ``_store.py``: :class:`EnsembleStore`, the only writer (records, divergence marks, repair);
- ``_locks.py``: the per-run (or per-seed-block) write locks;
- ``_integrity.py``: the record digests and the metadata manifest;
- ``_verify.py``: :func:`verify_store`, every problem a store can have, and the sweeper of partial files;
- ``_open.py``: :func:`open_ensemble`, the analysis side's view of one or more stores.
"""

from ._build import build
from ._grid import EvalGrid
from ._locks import RunLock, is_free, lock_dir, lock_name
from ._open import corruption_error, open_ensemble, sweep_config
from ._paths import (
    atomic_output,
    has_group,
    is_store,
    is_url,
    local_store_path,
    location,
    remote_exists,
    same_or_nested,
)
from ._spec import (
    MAX_CHUNK_FILES,
    MAX_COORDINATE,
    MAX_RECORDS,
    StoreSpec,
    check_chunk_ownership,
    default_time_chunk,
    new_spec,
    resolve_ntk_points,
    size_problems,
)
from ._store import EnsembleStore
from ._verify import StoreProblem, sweep_partial_files, verify_store

__all__ = [
    "EnsembleStore",
    "EvalGrid",
    "MAX_CHUNK_FILES",
    "MAX_COORDINATE",
    "MAX_RECORDS",
    "RunLock",
    "StoreProblem",
    "StoreSpec",
    "atomic_output",
    "build",
    "check_chunk_ownership",
    "corruption_error",
    "default_time_chunk",
    "has_group",
    "is_free",
    "is_store",
    "is_url",
    "local_store_path",
    "location",
    "lock_dir",
    "lock_name",
    "new_spec",
    "open_ensemble",
    "remote_exists",
    "resolve_ntk_points",
    "same_or_nested",
    "size_problems",
    "sweep_config",
    "sweep_partial_files",
    "verify_store",
]
