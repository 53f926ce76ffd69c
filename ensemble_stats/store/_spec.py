"""What a store is: its frozen :class:`StoreSpec`, the layout rules every store follows, and the size checks.

Layout rules (docs/store.md):

* every chunk of a per-run array holds exactly one run (or one seed block of ``seed_chunk`` seeds), so
  concurrent writers never share a chunk;
* ``time`` is chunked, so a writer flushes completed time chunks without rewriting earlier ones;
* every array carries a crc32c checksum, so corruption is an error on read, never a wrong number;
* no consolidated metadata (it goes stale).

:func:`new_spec` turns the arguments of :meth:`EnsembleStore.create` into a spec, reporting every problem at
once; ``_build.py`` writes a store of a spec; ``_store.py`` opens and writes one.
"""

from __future__ import annotations

import operator
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import schema
from ..errors import ValidationError, shorten
from ._grid import EvalGrid

_RECORD_TARGET_BYTES = 4 << 20  # default time chunk aims at about 4 MiB of predictions per chunk
_FLOAT_DTYPES = ("float32", "float64")
_WHERE = "EnsembleStore.create"

MAX_COORDINATE = 1_000_000
"""Most values one coordinate may have (a million seeds or recording times; split larger sweeps into stores)."""
MAX_RECORDS = 1 << 31
"""Most records (gamma x width x seed x extra x time) one store may have: ``written`` is read whole on open."""
MAX_CHUNK_FILES = 10_000_000
"""Most chunk files a complete store may have (each small file costs an inode and a file-system block)."""


@dataclass(frozen=True)
class StoreSpec:
    """Everything that defines a store's layout; two stores with equal specs are interchangeable.

    ``extra`` maps each extra sweep dim (e.g. ``data_seed``) to its coordinate values, in dim order.
    """

    gammas: tuple[float, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    times: tuple[float, ...]
    time_units: str
    n_points: int
    n_features: int
    output_size: int
    grid_hash: str
    time_chunk: int
    seed_chunk: int = 1
    dtype: str = "float32"
    extra: tuple[tuple[str, tuple[float, ...]], ...] = field(default_factory=tuple)
    metrics: tuple[str, ...] = ()
    pairs: tuple[int, ...] = ()
    """Antithetic stores: each seed's pair number (the pair's first seed); empty otherwise."""
    ntk_points: tuple[int, ...] = ()
    """Stores that record the empirical NTK: the grid points of its sub-grid; empty otherwise."""
    layers: tuple[str, ...] = ()
    """Stores that record parameter displacements: the parameter tensors' names; empty otherwise."""

    @property
    def field_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trailing shape of each per-record field (``ntk``, ``displacement``) the store declares."""
        P, O = len(self.ntk_points), self.output_size  # noqa: E741
        return {
            **({schema.NTK: (P, P, O, O)} if P else {}),
            **({schema.DISPLACEMENT: (len(self.layers),)} if self.layers else {}),
        }

    @property
    def field_bytes(self) -> int:
        """Bytes of the fields of one record (in the store's dtype)."""
        return np.dtype(self.dtype).itemsize * sum(int(np.prod(s)) for s in self.field_shapes.values())

    @property
    def scalar_names(self) -> tuple[str, ...]:
        """The per-record scalars: the known ones, then the declared metrics."""
        return (*schema.SCALAR_VARIABLES, *self.metrics)

    @property
    def extra_dims(self) -> tuple[str, ...]:
        """The extra sweep dims, in order."""
        return tuple(name for name, _ in self.extra)

    @property
    def run_shape(self) -> tuple[int, ...]:
        """Shape of the run dims (gamma, width, seed, extra...)."""
        return (len(self.gammas), len(self.widths), len(self.seeds), *(len(v) for _, v in self.extra))

    @property
    def run_chunks(self) -> tuple[int, ...]:
        """Chunks of the run dims: one run, or one seed block, per chunk."""
        return (1, 1, self.seed_chunk, *(1 for _ in self.extra))

    @classmethod
    def from_group(cls, g) -> StoreSpec:
        """Return the spec of an existing store's zarr group (its coordinates, arrays and attributes)."""
        attrs = g.attrs.asdict()
        layout = attrs.get(schema.ATTR_LAYOUT, {})
        pred = g[schema.PREDICTION]
        return cls(
            gammas=tuple(g[schema.GAMMA][:].tolist()),
            widths=tuple(g[schema.WIDTH][:].tolist()),
            seeds=tuple(g[schema.SEED][:].tolist()),
            times=tuple(g[schema.TIME][:].tolist()),
            time_units=g[schema.TIME].attrs["units"],
            n_points=pred.shape[-2],
            n_features=g[schema.X].shape[1],
            output_size=pred.shape[-1],
            grid_hash=attrs[schema.ATTR_GRID_HASH],
            time_chunk=int(layout.get("time_chunk", pred.chunks[-3])),
            seed_chunk=int(layout.get("seed_chunk", pred.chunks[2])),
            dtype=str(pred.dtype),
            extra=tuple((name, tuple(g[name][:].tolist())) for name in attrs.get(schema.ATTR_EXTRA_DIMS, [])),
            metrics=tuple(attrs.get(schema.ATTR_METRICS, {})),
            pairs=tuple(g[schema.PAIR][:].tolist()) if schema.PAIR in g else (),
            ntk_points=tuple(attrs.get(schema.ATTR_NTK_POINTS, ())),
            layers=tuple(attrs.get(schema.ATTR_LAYERS, ())),
        )

    def differences(self, other: StoreSpec) -> list[str]:
        """Human-readable differences, field by field."""
        out = []
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: store has {_short(a)}, requested {_short(b)}")
        return out


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 120 else s[:117] + "..."


def resolve_ntk_points(points, n_points: int, problems: list[str]) -> tuple[int, ...]:
    """Return the NTK sub-grid: None (no NTK), ``"all"``, or grid point indices."""
    if points is None:
        return ()
    if isinstance(points, str):
        if points == "all":
            return tuple(range(n_points))
        problems.append(f"ntk_points={points!r}: give 'all', or a list of grid point indices.")
        return ()
    try:
        pts = [operator.index(p) for p in points]
    except TypeError:
        problems.append(f"ntk_points must be grid point indices (integers), got {shorten(points)}.")
        return ()
    bad = [p for p in pts if not 0 <= p < n_points]
    if not pts or bad or len(set(pts)) != len(pts):
        problems.append(
            f"ntk_points {shorten(pts)}: give distinct grid point indices in [0, {n_points})"
            + (f"; {shorten(bad)} are outside" if bad else "")
            + "."
        )
        return ()
    return tuple(pts)


def _layers(layers, problems: list[str]) -> tuple[str, ...]:
    if layers is None:
        return ()
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        problems.append(f"layers must be distinct non-empty parameter names, e.g. ['W1', 'C']; got {shorten(names)}.")
        return ()
    return tuple(names)


def antithetic_pairs(seeds: tuple[int, ...], problems: list[str]) -> tuple[int, ...]:
    """Return the ``pair`` coordinate of antithetic seeds: positions 2k and 2k+1 form pair ``seeds[2k]``."""
    if len(seeds) % 2:
        problems.append(f"antithetic stores pair seeds by position; {len(seeds)} seeds given: give an even number.")
        return ()
    return tuple(s for s in seeds[0::2] for _ in range(2))


def default_time_chunk(n_times: int, n_points: int, output_size: int, seed_chunk: int, field_bytes: int = 0) -> int:
    """Return the records per time chunk for about 4 MiB of predictions (and fields) per chunk, at most all times."""
    record = max(1, (n_points * output_size * 4 + field_bytes) * seed_chunk)
    return int(max(1, min(n_times, _RECORD_TARGET_BYTES // record)))


def validate_layout(spec: StoreSpec) -> list[str]:
    problems = []  # the coordinates themselves are validated, uncoerced, in EnsembleStore.create
    for name, values in spec.extra:
        if name in (*schema.RUN_DIMS, schema.TIME, schema.POINT, schema.OUTPUT, schema.FEATURE):
            problems.append(f"extra dim '{name}' clashes with a schema dim; choose another name.")
        problems += schema.validate_seeds(values, name) if name.endswith("seed") else []
    if spec.dtype not in _FLOAT_DTYPES:
        problems.append(f"dtype {spec.dtype!r} is not one of {_FLOAT_DTYPES}.")
    if not (isinstance(spec.time_chunk, int) and spec.time_chunk >= 1):
        problems.append(f"time_chunk must be an integer >= 1, got {spec.time_chunk!r}.")
    if not (isinstance(spec.seed_chunk, int) and spec.seed_chunk >= 1):
        problems.append(f"seed_chunk must be an integer >= 1, got {spec.seed_chunk!r}.")
    elif spec.pairs and spec.seed_chunk % 2:
        problems.append(
            f"seed_chunk={spec.seed_chunk} would split antithetic pairs between writers; use an even seed_chunk."
        )
    elif len(spec.seeds) % spec.seed_chunk:
        problems.append(
            f"seed_chunk={spec.seed_chunk} does not divide the {len(spec.seeds)} seeds: the last chunk would be "
            "shared by a partial block; choose a seed_chunk that divides the number of seeds."
        )
    if spec.output_size < 1:
        problems.append(f"output_size must be >= 1, got {spec.output_size}.")
    return problems


def check_chunk_ownership(shape: Sequence[int], chunks: Sequence[int], n_run_dims: int, seed_chunk: int) -> list[str]:
    """Problems with a chunk layout that would let two writers share a chunk.

    A per-run array of dims (run dims..., time[, point, output]) may chunk the run dims only by 1, except
    ``seed`` (axis 2), which may be chunked by the writer's seed block.
    """
    problems = []
    for axis in range(n_run_dims):
        allowed = seed_chunk if axis == 2 else 1
        if chunks[axis] != allowed:
            problems.append(
                f"chunk size {chunks[axis]} along run axis {axis} puts {chunks[axis]} runs in one chunk; "
                f"writers own whole chunks, so it must be {allowed}."
            )
    for axis in range(n_run_dims + 1, len(shape)):
        if chunks[axis] != shape[axis]:
            problems.append(
                f"axis {axis} is chunked by {chunks[axis]} of {shape[axis]}; point and output must be whole in a chunk."
            )
    return problems


def new_spec(
    grid: EvalGrid,
    *,
    gammas,
    widths,
    seeds,
    times,
    time_units: str,
    output_size,
    extra_dims,
    time_chunk,
    seed_chunk: int,
    dtype,
    train,
    metrics,
    antithetic: bool = False,
    ntk_points=None,
    layers=None,
) -> tuple[StoreSpec, dict[str, str], tuple[np.ndarray, np.ndarray] | None]:
    """Return the spec of a new store from the arguments of :meth:`EnsembleStore.create` (see there).

    Returns the spec, the declared metrics ``{name: long_name}`` and the training set as two float64 arrays
    (or None). Every problem is reported at once in one :class:`ValidationError`; sizes are checked before
    anything is allocated from them.
    """
    if not isinstance(grid, EvalGrid):
        raise ValidationError(f"grid must be a collectors.EvalGrid, got {type(grid).__name__}.", "create")
    problems: list[str] = []
    output_size = _output_size(grid, output_size, problems)
    extra_dims = dict(extra_dims or {})
    metrics = _metrics(metrics)
    problems += schema.validate_metrics(list(metrics))
    counts = {"gammas": gammas, "widths": widths, "seeds": seeds, "times": times, **extra_dims}
    problems += [p for name, v in counts.items() for p in _count_problems(name, v)]
    ValidationError.raise_if(problems, _WHERE)
    times_t = tuple(float(t) for t in np.asarray(times, dtype=np.float64).ravel()) if _numeric(times) else ()
    if not times_t:
        problems.append(f"times: expected a non-empty list of numbers, got {shorten(times)}.")
    spec = StoreSpec(
        gammas=_tuple(gammas, float),
        widths=_tuple(widths, int),
        seeds=_tuple(seeds, int),
        times=times_t,
        time_units=time_units,
        n_points=grid.n_points,
        n_features=grid.n_features,
        output_size=output_size,
        grid_hash=grid.hash,
        time_chunk=1,
        seed_chunk=seed_chunk,
        dtype=_dtype_name(dtype),
        extra=tuple((str(k), tuple(np.asarray(v).tolist())) for k, v in extra_dims.items()),
        metrics=tuple(metrics),
        pairs=antithetic_pairs(_tuple(seeds, int), problems) if antithetic else (),
        ntk_points=resolve_ntk_points(ntk_points, grid.n_points, problems),
        layers=_layers(layers, problems),
    )
    # the raw values are validated too: the coercion above keeps them comparable but may hide non-integers
    problems += schema.validate_gammas(gammas) + schema.validate_widths(widths) + schema.validate_seeds(seeds)
    if times_t:
        problems += schema.validate_times(times, time_units)
    train = _train_arrays(train, grid, problems)
    ValidationError.raise_if(problems, _WHERE)
    if time_chunk is None:  # an explicit 0 is refused by the layout check, never replaced
        time_chunk = default_time_chunk(len(times_t), grid.n_points, output_size, seed_chunk, spec.field_bytes)
    spec = replace(spec, time_chunk=time_chunk)
    ValidationError.raise_if(validate_layout(spec), _WHERE)
    return spec, metrics, train


def spec_attrs(spec: StoreSpec, metrics: Mapping[str, str]) -> dict:
    """Return the group attributes that declare a spec's optional fields (metrics, NTK points, layers)."""
    return {
        **({schema.ATTR_METRICS: {str(k): str(v) for k, v in metrics.items()}} if metrics else {}),
        **({schema.ATTR_NTK_POINTS: list(spec.ntk_points)} if spec.ntk_points else {}),
        **({schema.ATTR_LAYERS: list(spec.layers)} if spec.layers else {}),
    }


def _output_size(grid: EvalGrid, output_size, problems: list[str]) -> int:
    try:
        output_size = grid.output_size if output_size is None else operator.index(output_size)
    except TypeError:
        problems.append(f"output_size must be an integer, got {shorten(output_size)}.")
        return grid.output_size
    if output_size != grid.output_size:
        problems.append(f"output_size={output_size} but the grid's target has {grid.output_size} columns.")
    return output_size


def _metrics(metrics) -> dict:
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        return dict(metrics)
    return {m: str(m).replace("_", " ") for m in metrics or ()}


def _dtype_name(dtype) -> str:
    """``"float32"`` for "float32", np.float32 or np.dtype("float32"); anything else as text (refused later)."""
    try:
        return np.dtype(dtype).name
    except (TypeError, ValueError):
        return str(dtype)


def _tuple(values, kind) -> tuple:
    try:
        return tuple(kind(v) for v in np.asarray(values).ravel().tolist())
    except (TypeError, ValueError):
        return ()


def _numeric(values) -> bool:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.ndim == 1 and a.size > 0


def _train_arrays(train, grid: EvalGrid, problems: list[str]):
    """``train`` as two float64 arrays (M, features), (M, outputs) matching the grid, or None."""
    if train is None:
        return None
    try:
        x, y = (np.asarray(a, dtype=np.float64) for a in train)
    except (TypeError, ValueError):
        problems.append("train: expected (x_train, y_train), two numeric arrays.")
        return None
    y = y.reshape(len(y), -1) if y.ndim == 1 else y
    if x.ndim != 2 or x.shape[1] != grid.n_features:
        problems.append(f"train: x_train has shape {x.shape}; expected (M, {grid.n_features}) like the grid's x.")
    if y.ndim != 2 or len(y) != len(x) or y.shape[1] != grid.output_size:
        problems.append(f"train: y_train has shape {y.shape}; expected ({len(x)}, {grid.output_size}).")
    if len(x) == 0:
        problems.append("train: the training set is empty.")
    return (x, y) if not problems else None


def _count_problems(name: str, values) -> list[str]:
    try:
        n = len(values)
    except TypeError:
        return []  # not a sized sequence: the coordinate checks report it
    if n > MAX_COORDINATE:
        return [
            f"{name}: {n:,} values; a coordinate may have at most {MAX_COORDINATE:,}. Split the sweep into "
            "several stores (open_ensemble combines them)."
        ]
    return []


def store_bytes(spec: StoreSpec) -> tuple[int, int]:
    """Return (records, bytes) of a complete store of ``spec``: predictions, per-record arrays and digests."""
    records = int(np.prod(spec.run_shape, dtype=np.float64) * len(spec.times))
    per_record = spec.n_points * spec.output_size * np.dtype(spec.dtype).itemsize
    per_record += 1 + 8 + 4 * len(spec.scalar_names) + 8 * len(schema.INTERNAL_VARIABLES) + spec.field_bytes
    return records, int(records * per_record)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def size_problems(spec: StoreSpec, path: Path | None = None) -> list[str]:
    """Return what a complete store of ``spec`` would be too big for.

    Records, chunk files, and (given ``path``) the free space of its file system. Nothing is allocated to find out.
    """
    records, size = store_bytes(spec)
    problems = []
    if records > MAX_RECORDS:
        problems.append(
            f"the sweep has {records:,} records (gamma x width x seed x extra dims x time); a store holds at most "
            f"{MAX_RECORDS:,}. Split it into several stores or record fewer times."
        )
    chunks = records // max(1, spec.seed_chunk * min(spec.time_chunk, len(spec.times))) * len(schema.RECORD_VARIABLES)
    if chunks > MAX_CHUNK_FILES:
        problems.append(
            f"the store would have {chunks:,} chunk files (one per seed block x time chunk of each of "
            f"{len(schema.RECORD_VARIABLES)} per-record arrays); at most {MAX_CHUNK_FILES:,}. Use larger seed blocks "
            "([sweep].seed_block, seed_chunk=) or split the sweep into several stores."
        )
    if path is None or problems:
        return problems
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return problems
    if size > free:
        problems.append(
            f"the complete store would take {_gb(size)} ({records:,} records of {spec.n_points} points x "
            f"{spec.output_size} outputs), but {probe} has {_gb(free)} free. Reduce the sweep, use a bigger disk, or "
            "pass check_space=False if the file system will grow."
        )
    return problems
