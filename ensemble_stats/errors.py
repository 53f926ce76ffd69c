"""The one exception hierarchy of ensemble-stats.

Every error raised on bad input derives from :class:`EnsembleStatsError` and from the builtin a caller would
naturally catch (``ValueError``, ``FileNotFoundError``, ...). Messages say what was found, what was expected
and what to do. Validation errors carry every problem found, not only the first.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

__all__ = [
    "EnsembleStatsError",
    "ValidationError",
    "GridMismatchError",
    "SpecMismatchError",
    "StoreNotFoundError",
    "DataNotFoundError",
    "RunNotFoundError",
    "RunExistsError",
    "RunLockedError",
    "StoreWriteError",
    "StoreCorruptionError",
    "ConfigError",
    "MissingDependencyError",
    "install_hint",
    "require",
    "FitError",
    "SweepError",
    "EnsembleStatsWarning",
    "ScaledTimeWarning",
    "EphemeralStoreWarning",
]


def shorten(value, limit: int = 160) -> str:
    """``repr(value)`` cut to ``limit`` characters (long lists, huge inputs), for error messages."""
    if isinstance(value, list | tuple) and len(value) > 12:
        head = ", ".join(repr(v) for v in list(value[:8]))
        return f"[{head}, ... ({len(value)} values)]"
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


MAX_MESSAGE = 4000
"""Longest message an error carries: a huge input (a 5 MB config string) is cut, never echoed whole."""


def _capped(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    cut = len(text) - (MAX_MESSAGE - 100)
    return f"{text[: MAX_MESSAGE - 100]} ... ({cut:,} more characters cut)"


class EnsembleStatsError(Exception):
    """Base class of every error raised by ensemble-stats and collectors.

    Its message is at most ``MAX_MESSAGE`` characters.
    """

    def __init__(self, *args):
        super().__init__(*(_capped(a) if isinstance(a, str) else a for a in args))


class ValidationError(EnsembleStatsError, ValueError):
    """One or more values break the schema or a documented rule.

    Parameters
    ----------
    problems
        Every problem found, each a complete sentence.
    context
        What was being validated, e.g. ``"EnsembleStore.create"``.
    """

    def __init__(self, problems: Iterable[str] | str, context: str = ""):
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        self.context = context
        head = f"{context}: " if context else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)

    @classmethod
    def raise_if(cls, problems: list[str], context: str = "") -> None:
        """Raise with all ``problems`` if there are any."""
        if problems:
            raise cls(problems, context)


class GridMismatchError(ValidationError):
    """An evaluation grid differs from the grid a store was created with."""


class SpecMismatchError(ValidationError):
    """An existing store was created with a different specification (dims, grid, layout, config)."""


class ConfigError(ValidationError):
    """A sweep configuration is invalid."""


class StoreNotFoundError(EnsembleStatsError, FileNotFoundError):
    """A path is not an ensemble store."""


class DataNotFoundError(EnsembleStatsError, FileNotFoundError):
    """A local data set path is missing or its files are malformed."""


class RunNotFoundError(EnsembleStatsError, LookupError):
    """A (gamma, width, seed, ...) run is not among the store's coordinates."""


class RunExistsError(EnsembleStatsError, FileExistsError):
    """A run already has written records and ``resume=True`` was not given."""


class RunLockedError(EnsembleStatsError, RuntimeError):
    """Another live writer holds the run's lock (one writer per run or seed block)."""


class StoreWriteError(EnsembleStatsError, OSError):
    """Writing records failed (disk full, I/O error); the message names the run and chunk.

    Nothing of the failed records is committed (their ``written`` marks are not set), so a resumed writer
    re-writes them. ``errno`` is the underlying error's.
    """


class StoreCorruptionError(EnsembleStatsError, OSError):
    """Chunks are missing, corrupt or misplaced, or the store's metadata no longer matches its creation.

    Parameters
    ----------
    problems
        The :class:`~ensemble_stats.StoreProblem` records (or sentences) found.
    path
        The store.
    repairable
        Whether retraining the affected runs can fix it (damaged records) or not (damaged metadata,
        coordinates or grid: restore a copy or create a new store).
    """

    def __init__(self, problems, path: str = "", *, repairable: bool = True):
        self.problems = tuple(problems)
        self.repairable = repairable
        shown = [str(p) for p in self.problems[:20]]
        if len(self.problems) > 20:
            shown.append(f"... and {len(self.problems) - 20} more (`ensemble-stats info STORE --verify` lists all)")
        lines = "\n".join(f"  - {p}" for p in shown)
        if repairable:
            advice = (
                "Rewrite the affected records: `ensemble-stats run CONFIG --store STORE --repair` for a sweep, or "
                "EnsembleStore.open(STORE).repair() and then resume those runs; remove stray '*.partial' files with "
                "`ensemble-stats info STORE --verify --clean`."
            )
        else:
            advice = "Retraining cannot fix this: restore the store from a copy, or create a new one."
        super().__init__(f"store {path!s} failed verification with {len(self.problems)} problem(s):\n{lines}\n{advice}")

    def __reduce__(self):
        """Pickle with the keyword argument (the error crosses Dask workers)."""
        return (_rebuild_corruption, (self.problems, self.args, self.repairable))


def _rebuild_corruption(problems, args, repairable):
    err = StoreCorruptionError.__new__(StoreCorruptionError)
    Exception.__init__(err, *args)
    err.problems, err.repairable = problems, repairable
    return err


class MissingDependencyError(EnsembleStatsError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra to install."""


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
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``), or raise :class:`MissingDependencyError`.

    The error names what needs the module (``purpose``) and the install command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".", 1)[0]
        package = EXTRAS.get(top, (top, None))[0]
        raise MissingDependencyError(
            f"{purpose} needs the optional package {package}, which is not installed ({type(e).__name__}: "
            f"{str(e)[:200]}). Install it: {install_hint(top)}."
        ) from None


class FitError(ValidationError):
    """An analysis cannot be carried out on the given data (too few widths, bad terms, ...)."""


class SweepError(EnsembleStatsError, RuntimeError):
    """Some cells of a sweep failed; the others completed. ``failures`` maps each cell to its error."""

    def __init__(self, failures: dict, total: int):
        self.failures = dict(failures)
        lines = "\n".join(f"  - {cell}: {err}" for cell, err in self.failures.items())
        super().__init__(
            f"{len(self.failures)} of {total} sweep cells failed (the others are complete in the store):\n{lines}\n"
            "Fix the cause and rerun the same command: complete cells are skipped."
        )


class EnsembleStatsWarning(UserWarning):
    """Base class of the warnings of ensemble-stats: a result is computed, but may not mean what is wanted."""


class ScaledTimeWarning(EnsembleStatsWarning):
    """Widths are compared at records that are different scaled times t = k / N (epoch- or step-indexed stores).

    The theory's N-scaling holds at fixed t; select one with :func:`ensemble_stats.at_common_time` (or pass
    ``at=`` to :func:`ensemble_stats.fit_rate`).
    """


class EphemeralStoreWarning(EnsembleStatsWarning):
    """The store lives in this process's memory (``memory://``): it vanishes when the process exits."""
