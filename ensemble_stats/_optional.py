"""Optional dependencies: every import of one goes through :func:`require`, which names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

EXTRAS: dict[str, tuple[str, str | None]] = {
    "matplotlib": ("matplotlib", "report"),
    "sklearn": ("scikit-learn", "data"),
    "mnist1d": ("mnist1d", "data"),
    "nbclient": ("nbclient", "data"),
    "s3fs": ("s3fs", "s3"),
    "gcsfs": ("gcsfs", None),
    "adlfs": ("adlfs", None),
    "dask_jobqueue": ("dask-jobqueue", "slurm"),
    "lightning": ("lightning", "lightning"),
}
"""Top-level module -> (PyPI package, the ensemble-stats extra that brings it, or None)."""


def install_hint(module: str) -> str:
    """``pip install 'ensemble-stats[EXTRA]'`` (or the package itself) for a top-level module."""
    package, extra = EXTRAS.get(module, (module, None))
    return f"pip install 'ensemble-stats[{extra}]'" if extra else f"pip install {package}"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``), or raise :class:`MissingDependencyError` naming what
    needs it and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".", 1)[0]
        package = EXTRAS.get(top, (top, None))[0]
        raise MissingDependencyError(
            f"{purpose} needs the optional package {package}, which is not installed ({type(e).__name__}: "
            f"{str(e)[:200]}). Install it: {install_hint(top)}."
        ) from None
