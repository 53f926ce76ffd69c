"""Names and rules of the ensemble store, schema v1 (see docs/store.md).

Every dimension and variable name used anywhere in the toolkit is defined here once. The ``validate_*``
functions return a list of problems (complete sentences) so callers can report all of them at once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import ValidationError
from .errors import shorten as _show

SCHEMA_VERSION = 1

# dimensions
GAMMA = "gamma"
WIDTH = "width"
SEED = "seed"
TIME = "time"
POINT = "point"
OUTPUT = "output"
FEATURE = "feature"
TRAIN_POINT = "train_point"
ALPHA = "alpha"
"""Extra sweep dim: the learning-rate constant alpha of the theory's rules, one value per run."""
DATA_SEED = "data_seed"
"""Extra sweep dim: the seed of the SGD data order."""
PAIR = "pair"
"""Coordinate on ``seed`` of antithetic stores: seeds with the same pair number are mirror images at init."""
NTK_POINT = "ntk_point"
"""Dim of the ``ntk`` sub-grid: its coordinate holds the grid ``point`` of each entry."""
NTK_POINT_2 = "ntk_point_2"
OUTPUT_2 = "output_2"
LAYER = "layer"
"""Dim of ``displacement``: one entry per parameter tensor (``W1``, ``C``, ...), named by the coordinate."""
SETTING_DIMS: tuple[str, ...] = (ALPHA,)
"""Extra sweep dims that change what is trained (results are shown per value); other extra dims (``data_seed``)
are replicates that figures may average over."""

RUN_DIMS: tuple[str, ...] = (GAMMA, WIDTH, SEED)
"""Dims that identify one training run (extra sweep dims such as ``data_seed`` are appended)."""
GRID_DIMS: tuple[str, ...] = (POINT, OUTPUT)

# variables
PREDICTION = "prediction"
X = "x"
TARGET = "target"
X_TRAIN = "x_train"
"""The training inputs, dims (train_point, feature); optional (stores written from version 0.2 on)."""
Y_TRAIN = "y_train"
"""The training targets, dims (train_point, output); optional, beside ``x_train``."""
WRITTEN = "written"
STEP = "step"
TRAIN_LOSS = "train_loss"
TEST_LOSS = "test_loss"
ACCURACY = "accuracy"
TRAIN_ACCURACY = "train_accuracy"
OUTPUT_WEIGHT_NORM = "output_weight_norm"
DIVERGED_STEP = "diverged_step"
DIGEST = "digest"
"""uint64 per record: keyed hash of its ``prediction`` and ``step`` bytes (see ``_integrity``); 0 = never written."""
SCALAR_DIGEST = "scalar_digest"
"""uint64 per record: keyed hash of its ``step`` and every per-record scalar."""
DIVERGED_DIGEST = "diverged_digest"
"""uint64 per run (run dims): keyed hash of its ``diverged_step``; 0 while the run has none."""
NTK = "ntk"
"""Optional: the empirical NTK sum_p df(x)/dp df(x')/dp per record, dims (record dims..., ntk_point, ntk_point_2,
output, output_2)."""
DISPLACEMENT = "displacement"
"""Optional: ||theta_t - theta_0|| / ||theta_0|| per parameter tensor, dims (record dims..., layer)."""
INTERNAL_VARIABLES: tuple[str, ...] = (DIGEST, SCALAR_DIGEST)
"""Integrity variables: checked by ``open_ensemble`` and ``verify_store``, not part of the opened Dataset."""

SCALAR_VARIABLES: tuple[str, ...] = (TRAIN_LOSS, TEST_LOSS, ACCURACY, TRAIN_ACCURACY, OUTPUT_WEIGHT_NORM)
"""Optional per-record float32 scalars, dims (run dims..., time)."""

RECORD_VARIABLES: tuple[str, ...] = (WRITTEN, STEP, PREDICTION, *SCALAR_VARIABLES, *INTERNAL_VARIABLES)
"""Variables with one entry per record, chunked alike along (run dims..., time); ``written`` first."""

LONG_NAMES: dict[str, str] = {
    PREDICTION: "network output",
    X: "evaluation grid inputs",
    TARGET: "target on the evaluation grid",
    X_TRAIN: "training inputs",
    Y_TRAIN: "training targets",
    WRITTEN: "record written (commit mark)",
    STEP: "optimizer steps taken at the record, -1 if not written",
    TRAIN_LOSS: "training loss",
    TEST_LOSS: "test loss",
    ACCURACY: "test accuracy",
    TRAIN_ACCURACY: "training accuracy",
    OUTPUT_WEIGHT_NORM: "norm of the output weights",
    PAIR: "antithetic pair (its first seed)",
    NTK: "empirical neural tangent kernel sum_p df(x)/dp df(x')/dp",
    DISPLACEMENT: "relative parameter displacement ||theta_t - theta_0|| / ||theta_0||",
    DIVERGED_STEP: "optimizer step at which the run diverged (non-finite values or a blow-up), -1 if none",
}
"""``long_name`` of every store variable, set on the variables ``open_ensemble`` returns."""

TIME_UNITS: tuple[str, ...] = ("scaled", "step", "epoch")
GAMMA_RANGE = (0.5, 1.0)

# store attributes
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_TOOLKIT_VERSION = "toolkit_version"
ATTR_GRID_HASH = "grid_hash"
ATTR_EXTRA_DIMS = "extra_dims"
ATTR_MODEL = "model"
ATTR_TORCH_VERSION = "torch_version"
ATTR_CREATED = "created"
ATTR_CONFIG = "config"
ATTR_STORE_ID = "store_id"
ATTR_MANIFEST = "manifest"
ATTR_TRAIN_HASH = "train_hash"
ATTR_METRICS = "metrics"
"""Group attr: the further per-record scalars declared at creation, name -> long_name, in order."""
ATTR_TRAIN_SET = "train_set"
ATTR_NTK_POINTS = "ntk_points"
"""Group attr of stores that record the NTK: the grid points of its sub-grid."""
ATTR_LAYERS = "layers"
"""Group attr of stores that record displacements: the parameter tensors' names."""
ATTR_LAYOUT = "layout"
"""Group attr: the chunking the store was built with (time_chunk, seed_chunk, dtype)."""
STORE_ATTRS: tuple[str, ...] = (
    ATTR_SCHEMA_VERSION, ATTR_TOOLKIT_VERSION, ATTR_GRID_HASH, ATTR_EXTRA_DIMS, ATTR_MODEL, ATTR_TORCH_VERSION,
    ATTR_CREATED, ATTR_CONFIG, ATTR_STORE_ID, ATTR_TRAIN_HASH, ATTR_METRICS, ATTR_TRAIN_SET, ATTR_NTK_POINTS,
    ATTR_LAYERS, ATTR_LAYOUT,
)  # fmt: skip
"""The group attrs the toolkit writes and reads: each one changes what the store's numbers mean, so each is
fingerprinted in the manifest when the store is built."""
MISSING_STEP = -1
INT64_MAX = 2**63 - 1
MAX_STEP = 2**62
"""Largest optimizer step a record may carry (int64 with room for arithmetic)."""


def record_steps(times, units: str, width: int, steps_per_epoch: int | None = None) -> np.ndarray:
    """Return the optimizer step k of each recording time for a run of ``width``.

    K = t for ``"step"``, k = round(t N) for ``"scaled"`` (t = k / N), k = round(t * steps_per_epoch) for
    ``"epoch"``.

    Raises
    ------
    ValidationError
        Two recording times map to the same step, or epoch units without ``steps_per_epoch``.
    """
    t = np.asarray(times, dtype=np.float64)
    if steps_per_epoch is not None or units == "epoch":
        whole = isinstance(steps_per_epoch, int | np.integer) and not isinstance(steps_per_epoch, bool)
        if not whole or steps_per_epoch < 1:
            raise ValidationError(
                "steps_per_epoch is the number of optimizer steps per epoch, an integer >= 1 (needed with "
                f"time_units='epoch'); got {steps_per_epoch!r}."
            )
    factor = 1 if units == "step" else int(width) if units == "scaled" else int(steps_per_epoch)
    exact = np.rint(t * factor)
    if t.size and not np.all(np.abs(exact) <= MAX_STEP):
        raise ValidationError(
            f"recording time {t[np.argmax(~(np.abs(exact) <= MAX_STEP))]:g} ({units}) is optimizer step "
            f"{np.nanmax(np.abs(exact)):.4g} at width {width}; steps must stay below {MAX_STEP:.3g}."
        )
    steps = exact.astype(np.int64)
    if np.any(np.diff(steps) <= 0):
        i = int(np.argmax(np.diff(steps) <= 0))
        raise ValidationError(
            f"recording times {t[i]} and {t[i + 1]} ({units}) both map to optimizer step {steps[i]} at "
            f"width {width}; use coarser times or larger widths so each time is a distinct step."
        )
    return steps


def scalar_names(attrs: Mapping) -> tuple[str, ...]:
    """Return the per-record scalars of a store: the known ``SCALAR_VARIABLES``, then the metrics it declared."""
    return (*SCALAR_VARIABLES, *attrs.get(ATTR_METRICS, {}))


def field_names(attrs: Mapping) -> tuple[str, ...]:
    """Return the per-record arrays with trailing dims that a store declared: ``ntk``, ``displacement``."""
    return (*((NTK,) if attrs.get(ATTR_NTK_POINTS) else ()), *((DISPLACEMENT,) if attrs.get(ATTR_LAYERS) else ()))


def record_variables(attrs: Mapping) -> tuple[str, ...]:
    """Every per-record array of a store: ``RECORD_VARIABLES``, the metrics it declared, then its fields."""
    return (*RECORD_VARIABLES, *attrs.get(ATTR_METRICS, {}), *field_names(attrs))


def layer_diagnostic_metrics(depth: int) -> dict[str, str]:
    """Return the per-record metrics of the trainer's layer diagnostics for a net of ``depth`` hidden layers.

    ``saturation_l`` and ``spread_l`` for hidden layers l = 1..depth, ``spread_out`` for the outputs, and
    ``grad_norm_P`` and ``update_ratio_P`` for P = W1..W{depth}, C; name -> long_name (``[record]
    layer_diagnostics`` declares them; :func:`collectors.layer_diagnostics` computes them).
    """
    out: dict[str, str] = {}
    for layer in range(1, depth + 1):
        out[f"saturation_{layer}"] = f"saturated fraction of layer {layer}"
        out[f"spread_{layer}"] = f"input spread of layer {layer}"
    out["spread_out"] = "input spread of the outputs"
    for p in (*(f"W{layer}" for layer in range(1, depth + 1)), "C"):
        out[f"grad_norm_{p.lower()}"] = f"gradient norm of {p}"
        out[f"update_ratio_{p.lower()}"] = f"relative update of {p}"
    return out


def validate_metrics(metrics) -> list[str]:
    """Problems with further per-record scalar names (a mapping name -> long_name, or names)."""
    import re

    reserved = {
        *RECORD_VARIABLES, X, TARGET, X_TRAIN, Y_TRAIN, DIVERGED_STEP, DIVERGED_DIGEST, *RUN_DIMS, TIME, POINT, OUTPUT, FEATURE,
        TRAIN_POINT, NTK, DISPLACEMENT, NTK_POINT, NTK_POINT_2, OUTPUT_2, LAYER, PAIR, ALPHA, DATA_SEED,
    }  # fmt: skip
    problems = []
    for name in metrics:
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            problems.append(
                f"metric name {_show(name)} is not a lowercase identifier (a-z, 0-9, _; starting with a letter)."
            )
        elif name in SCALAR_VARIABLES:
            problems.append(f"metric {name!r} is a known scalar already; record it without declaring it.")
        elif name in reserved:
            problems.append(f"metric name {name!r} is a variable or dim of the store; choose another name.")
    return problems


def record_dims(extra_dims: Sequence[str] = ()) -> tuple[str, ...]:
    """Dims of one record: ``(gamma, width, seed, *extra_dims, time)``."""
    return (*RUN_DIMS, *extra_dims, TIME)


def prediction_dims(extra_dims: Sequence[str] = ()) -> tuple[str, ...]:
    """Dims of ``prediction``: ``(gamma, width, seed, *extra_dims, time, point, output)``."""
    return (*record_dims(extra_dims), POINT, OUTPUT)


def grid_hash(x: np.ndarray, target: np.ndarray) -> str:
    """Content hash of an evaluation grid (shapes and float64 values of ``x`` and ``target``)."""
    h = hashlib.sha256()
    for a in (x, target):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def _as_1d(values, name: str, problems: list[str]) -> np.ndarray | None:
    try:
        arr = np.asarray(values)
    except Exception:  # noqa: BLE001 - anything unconvertible is reported, not raised
        problems.append(f"{name}: could not be read as an array (got {_show(values)}); pass a list of numbers.")
        return None
    if arr.ndim != 1 or arr.size == 0:
        problems.append(f"{name}: expected a non-empty 1-D list, got shape {arr.shape}.")
        return None
    return arr


def _check_unique(arr: np.ndarray, name: str, problems: list[str]) -> None:
    vals, counts = np.unique(arr, return_counts=True)
    dups = vals[counts > 1]
    if dups.size:
        problems.append(f"{name}: duplicate values {_show(dups.tolist())}; each value may appear once.")


def validate_gammas(values, name: str = GAMMA, *, unique: bool = True) -> list[str]:
    """Problems with normalization exponents: finite, in [0.5, 1], unique (a coordinate; not per-layer values)."""
    problems: list[str] = []
    arr = _as_1d(values, name, problems)
    if arr is None:
        return problems
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        return [f"{name}: expected numbers in [0.5, 1], got {_show(arr.tolist())}."]
    arr = arr.astype(np.float64)
    bad = [v for v in arr.tolist() if not (math.isfinite(v) and GAMMA_RANGE[0] <= v <= GAMMA_RANGE[1])]
    if bad:
        problems.append(
            f"{name}: {_show(bad)} outside [0.5, 1] or not finite; the 1/N^gamma theory covers gamma in [0.5, 1] "
            "(0.5 = NTK, 1 = mean field)."
        )
    if unique:
        _check_unique(arr, name, problems)
    return problems


def validate_widths(values, name: str = WIDTH, *, unique: bool = True) -> list[str]:
    """Problems with hidden widths: positive integers, unique (a coordinate; not per-layer values)."""
    problems: list[str] = []
    arr = _as_1d(values, name, problems)
    if arr is None:
        return problems
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        return [f"{name}: expected positive integers, got {_show(arr.tolist())}; widths N must be integers >= 1."]
    bad = [v for v in arr.tolist() if not (math.isfinite(v) and float(v).is_integer() and 1 <= v < 2.0**63)]
    if bad:
        problems.append(
            f"{name}: {_show(bad or arr.tolist())} not positive integers below 2^63; widths N must be integers >= 1."
        )
        return problems
    if unique:
        _check_unique(arr, name, problems)
    return problems


def validate_seeds(values, name: str = SEED) -> list[str]:
    """Problems with seeds (or any integer sweep coordinate): non-negative integers, unique."""
    problems: list[str] = []
    arr = _as_1d(values, name, problems)
    if arr is None:
        return problems
    if not np.issubdtype(arr.dtype, np.integer) and not (
        np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)
    ):
        problems.append(f"{name}: expected integers, got {_show(arr.tolist())}.")
        return problems
    if np.any(arr < 0):
        problems.append(f"{name}: negative values {_show(arr[arr < 0].tolist())}; seeds must be >= 0.")
    big = [v for v in arr.tolist() if v > INT64_MAX or (isinstance(v, float) and v >= 2.0**63)]
    if big:
        problems.append(f"{name}: {_show(big)} exceed 2^63 - 1; seeds are int64 values.")
    _check_unique(arr, name, problems)
    return problems


def validate_times(values, units: str, name: str = TIME) -> list[str]:
    """Problems with recording times: finite, >= 0, strictly increasing; known units."""
    problems: list[str] = []
    if units not in TIME_UNITS:
        problems.append(f"time_units: {units!r} is not one of {list(TIME_UNITS)}.")
    arr = _as_1d(values, name, problems)
    if arr is None:
        return problems
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        return [*problems, f"{name}: expected numbers, got {_show(arr.tolist())}."]
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        problems.append(f"{name}: values must be finite and >= 0, got {_show(arr.tolist())}.")
    diffs = np.diff(arr)
    if np.any(diffs <= 0):
        i = int(np.argmax(diffs <= 0))
        problems.append(
            f"{name}: not strictly increasing at index {i + 1} ({arr[i]} then {arr[i + 1]}); "
            "list each recording time once, in increasing order."
        )
    if units == "step" and np.all(np.isfinite(arr)) and not np.all(np.mod(arr, 1) == 0):
        problems.append(
            f"{name}: with time_units='step' times must be whole optimizer steps, got {_show(arr.tolist())}."
        )
    return problems


def validate_dataset(ds, extra_dims: Sequence[str] | None = None) -> list[str]:
    """Problems with an opened ensemble Dataset against schema v1 (structure only, no data read)."""
    problems: list[str] = []
    version = ds.attrs.get(ATTR_SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        problems.append(f"attrs['{ATTR_SCHEMA_VERSION}'] is {version!r}, expected {SCHEMA_VERSION}.")
    if extra_dims is None:
        extra_dims = tuple(ds.attrs.get(ATTR_EXTRA_DIMS, ()))
    pdims = prediction_dims(extra_dims)
    for name, dims in (
        (PREDICTION, pdims),
        (WRITTEN, record_dims(extra_dims)),
        (STEP, record_dims(extra_dims)),
        (X, (POINT, FEATURE)),
        (TARGET, (POINT, OUTPUT)),
    ):
        if name not in ds.variables:
            problems.append(f"variable '{name}' is missing; expected dims {dims}.")
        elif tuple(ds[name].dims) != dims:
            problems.append(f"variable '{name}' has dims {tuple(ds[name].dims)}, expected {dims}.")
    for dim in (*RUN_DIMS, *extra_dims, TIME):
        if dim not in ds.coords:
            problems.append(f"coordinate '{dim}' is missing.")
    if GAMMA in ds.coords:
        problems += validate_gammas(ds[GAMMA].values)
    if WIDTH in ds.coords:
        problems += validate_widths(ds[WIDTH].values)
    if TIME in ds.coords:
        problems += validate_times(ds[TIME].values, ds[TIME].attrs.get("units", "<missing>"))
    return problems


def describe_run(run: Mapping[str, object]) -> str:
    """``gamma=0.75, width=128, seed=3`` for messages."""
    return ", ".join(f"{k}={v}" for k, v in run.items())


def bound_names(name: str, ci: float, of: str) -> dict[str, str]:
    """Return the long names of the bounds ``{name}_lo`` and ``{name}_hi`` of a level-``ci`` interval of ``of``.

    Examples
    --------
    >>> from ensemble_stats import schema
    >>> schema.bound_names("slope", 0.95, "the slope")["slope_lo"]
    'lower 95% confidence bound of the slope'
    """
    return {
        f"{name}_{side}": f"{word} {ci:.0%} confidence bound of {of}"
        for side, word in (("lo", "lower"), ("hi", "upper"))
    }


def label_bounds(ds, name: str, ci: float, of: str) -> None:
    """Set the long names of ``ds[name + "_lo"]`` and ``ds[name + "_hi"]`` (see :func:`bound_names`)."""
    for key, long_name in bound_names(name, ci, of).items():
        ds[key].attrs["long_name"] = long_name


LABEL_CHARS = 30
"""xarray wraps an automatic axis label, ``long_name [units]``, at 30 characters: long names stay within one line."""

SHORT_NAMES: dict[str, str] = {
    PREDICTION: "network output",
    DIVERGED_STEP: "divergence step",
    STEP: "optimizer steps",
    NTK: "empirical NTK",
    DISPLACEMENT: "parameter displacement",
    TARGET: "target",
    "mse": "MSE",
    "bias2": "bias^2",
    "variance": "seed variance",
    "variance_dof": "variance dof",
    "mean": "seed mean",
    "coef": "coefficient c_k",
    "cov": "covariance of c_k",
    "model_stderr": "WLS std. error",
    "exponent": "exponent p",
    "slope": "slope in log N",
    "intercept": "intercept (log fit)",
    "chi2_dof": "chi^2 / dof",
    "aic": "AIC",
    "aicc": "AICc",
    "ratio": "ratio",
    "n_seeds": "seeds used",
    "n_samples": "independent samples",
    "drift": "kernel drift",
    "drift_mean": "kernel drift, seed mean",
    "drift_slope": "drift exponent",
    "drift_theory": "drift exponent, theory",
    "h": "kernel-limit mean h_t",
    "var_k": "kernel-limit Var K_t",
    "z": "rescaled fluctuation z",
    "sd": "sd of z",
    "ks": "KS statistic",
    "pvalue": "KS p-value",
    "pvalue_min": "smallest KS p-value",
    "eta": "learning rate",
    "lambda_0": "lambda_max at start",
    "lambda_final": "lambda_max at end",
    "loss_spike": "loss spike",
    "as_predicted": "as predicted",
    "diverged": "diverged",
    "regime": "predicted regime",
    "r_0": "r at start",
    "r_final": "r at end",
}
"""One-line ``long_name`` of variables whose full sentence moves to ``description`` (:func:`set_labels`)."""

UNITS: dict[str, str] = {
    ACCURACY: "1",
    TRAIN_ACCURACY: "1",
    TRAIN_LOSS: "1",
    TEST_LOSS: "1",
    WIDTH: "1",
    "n_seeds": "1",
}
"""CF ``units`` of dimensionless quantities (``"1"``), set by :func:`set_labels` where a variable has none."""

_SUFFIXES = {"_lo": "lower CI", "_hi": "upper CI", "_stderr": "std. error"}


def short_name(name: str, long_name: str) -> str:
    """Return a one-line label for variable ``name``.

    :data:`SHORT_NAMES`, its base's for a bound or standard error (``slope_lo`` -> ``"slope in log N, lower
    CI"``), else ``long_name`` up to its first clause.

    Examples
    --------
    >>> from ensemble_stats import schema
    >>> schema.short_name("slope_hi", "upper 95% confidence bound of the slope")
    'slope in log N, upper CI'
    """
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    for suffix, word in _SUFFIXES.items():
        base = name.removesuffix(suffix)
        if base != name and base in SHORT_NAMES:
            return f"{SHORT_NAMES[base]}, {word}"
    if name in ("stderr",):
        return "std. error"
    for sep in (" (", ", ", ": ", "; ", " - "):
        long_name = long_name.split(sep)[0]
    return long_name


def set_labels(ds):
    """Give every variable of ``ds`` a one-line ``long_name`` (xarray's axis labels) and CF ``units`` where known.

    A ``long_name`` that with its units would wrap (over :data:`LABEL_CHARS`) moves to ``description`` and is
    replaced by :func:`short_name`. Modifies ``ds`` in place and returns it.

    Examples
    --------
    >>> import xarray as xr
    >>> from ensemble_stats import schema
    >>> ds = xr.Dataset({"accuracy": ((), 0.5, {"long_name": "test accuracy"})})
    >>> schema.set_labels(ds)["accuracy"].attrs
    {'long_name': 'test accuracy', 'units': '1'}
    """
    for name, var in ds.variables.items():
        attrs = var.attrs
        if name in UNITS and "units" not in attrs:
            attrs["units"] = UNITS[name]
        long_name = attrs.get("long_name")
        if not long_name:
            continue
        units = f" [{attrs['units']}]" if "units" in attrs else ""
        if len(long_name) + len(units) > LABEL_CHARS:
            attrs.setdefault("description", long_name)
            attrs["long_name"] = short_name(str(name), long_name)
    return ds


def prediction_long_name(loss: str | None) -> str:
    """Return the ``long_name`` of ``prediction`` for a store trained with ``loss`` (its config's optimizer.loss).

    Examples
    --------
    >>> from ensemble_stats import schema
    >>> schema.prediction_long_name("cross_entropy"), schema.prediction_long_name("mse")
    ('logit (pre-softmax output)', 'network output')
    """
    return {"cross_entropy": "logit (pre-softmax output)"}.get(str(loss), "network output")
