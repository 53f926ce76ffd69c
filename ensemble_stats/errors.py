"""The one exception hierarchy of ensemble-stats.

Every error raised on bad input derives from :class:`EnsembleStatsError` and from the builtin a caller would
naturally catch (``ValueError``, ``FileNotFoundError``, ...). Messages say what was found, what was expected
and what to do. Validation errors carry every problem found, not only the first.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    "FitError",
    "SweepError",
]


class EnsembleStatsError(Exception):
    """Base class of every error raised by ensemble-stats and collectors."""


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
    """Chunks are missing, corrupt, or stray partial files were found.

    Parameters
    ----------
    problems
        The :class:`~ensemble_stats.StoreProblem` records found.
    """

    def __init__(self, problems, path: str = ""):
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"store {path!s} failed verification with {len(self.problems)} problem(s):\n{lines}\n"
            "Re-run the affected runs with resume=True (corrupt or missing records are re-written), and remove "
            "stray '*.partial' files with `ensemble-stats info STORE --verify --clean`."
        )


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
