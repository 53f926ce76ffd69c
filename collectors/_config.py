"""Sweep configuration: TOML -> validated, frozen SweepSpec (parsed once; config -> spec -> run).

A complete example is in README.md ("Sweep configuration"). Every problem is reported at once, naming the
key and what is allowed. The canonical form (``SweepSpec.canonical()``) is stored in the store's attrs, so a
rerun with a different config is refused with the differences listed.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_stats import schema
from ensemble_stats.errors import ConfigError, ValidationError, shorten
from ensemble_stats.store import MAX_COORDINATE, StoreSpec, default_time_chunk, resolve_ntk_points, size_problems

from ._data import LOADERS, DataSet, load_dataset, validate_options
from ._models import ACTIVATIONS, INIT_DESCRIPTIONS
from ._trainer import DEFAULT_BLOWUP, DTYPES, LOSSES, TrainConfig

MAX_CELLS = 1_000_000
"""Most cells (Dask tasks) one sweep may have."""
MAX_STEPS = 100_000_000
"""Most optimizer steps one run may take (the papers' longest runs take a few million; 10^8 steps are a day
of a GPU at a millisecond a step)."""
OPEN_FILES_RESERVE = 256
"""Open files a training process needs besides its run locks (libraries, store chunks, the Dask worker)."""

# table -> key -> (python types accepted, default; REQUIRED means no default)
REQUIRED = object()
TOML_KEYS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "sweep": {
        "gammas": ((list,), REQUIRED),
        "widths": ((list,), REQUIRED),
        "seeds": ((int, list), REQUIRED),
        "seed_block": ((int,), None),
        "data_seeds": ((list,), []),
        "alphas": ((list,), []),
        "antithetic": ((bool,), False),
    },
    "time": {
        "units": ((str,), "scaled"),
        "horizon": ((int, float), REQUIRED),
        "times": ((list,), []),
        "n_times": ((int,), 0),
    },
    "model": {
        "activation": ((str,), "tanh"),
        "bias": ((bool,), False),
        "init": ((str,), "theory"),
        "inner_widths": ((list,), []),
        "inner_gammas": ((list,), []),
        "batchnorm": ((bool,), False),
    },
    "data": {"name": ((str,), REQUIRED), "options": ((dict,), {})},
    "optimizer": {
        "alpha": ((int, float), None),
        "layer_alpha": ((dict,), {}),
        "loss": ((str,), "mse"),
        "batch_size": ((int,), 0),
        "shuffle": ((bool,), True),
        "output_weight_decay": ((int, float), 0.0),
        "blowup": ((int, float), DEFAULT_BLOWUP),
        "max_output": ((int, float), 0.0),
        "data_seed": ((int,), 0),
    },
    "run": {
        "dtype": ((str,), "float32"),
        "device": ((str,), "cpu"),
        "precision": ((str,), "ieee"),
        "step_kernel": ((str,), "torch"),
    },
    "record": {
        "ntk_points": ((int, list, str), 0),
        "ntk_every": ((int,), 1),
        "displacement": ((bool,), False),
        "layer_diagnostics": ((bool,), False),
    },
}


def _type_name(types) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true/false", dict: "a table"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: what to train (gammas x widths x seeds), how, on which data, recorded when."""

    gammas: tuple[float, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    seed_block: int
    data_seeds: tuple[int, ...]
    time_units: str
    horizon: float
    times: tuple[float, ...]
    data_name: str
    data_options: tuple[tuple[str, Any], ...]
    train: TrainConfig
    data_seed: int
    alphas: tuple[float, ...] = ()
    ntk_points: int | str | tuple[int, ...] = 0
    """The NTK sub-grid: 0 (none), a count (evenly spaced grid points), ``"all"``, or grid point indices."""
    ntk_every: int = 1
    displacement: bool = False

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, config) -> SweepSpec:
        """Return a SweepSpec from a SweepSpec, a TOML path or text, or a dict of tables (as ``tomllib`` returns)."""
        if isinstance(config, SweepSpec):
            return config
        if isinstance(config, Mapping):
            return cls.from_dict(dict(config))
        if isinstance(config, str | os.PathLike):
            return cls.from_toml(config)
        raise ConfigError(
            f"a sweep config must be a SweepSpec, a TOML file's path, TOML text or a dict of tables; got a "
            f"{type(config).__name__}.",
            "config",
        )

    @classmethod
    def from_toml(cls, source: str | os.PathLike) -> SweepSpec:
        """Parse a TOML file (a path) or TOML text; raises :class:`ConfigError` listing every problem."""
        text = source
        name = "<text>"
        if isinstance(source, os.PathLike) or (
            isinstance(source, str) and "\n" not in source and source.endswith(".toml")
        ):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist.", "config")
            name = str(path)
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(
                    f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); TOML files "
                    "must be UTF-8: re-save it as UTF-8.",
                    "config",
                ) from None
            except OSError as e:
                raise ConfigError(f"config file {path} cannot be read ({type(e).__name__}: {e}).", "config") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{name} is not valid TOML: {e}.", "config") from None
        return cls.from_dict(raw, name)

    @classmethod
    def from_dict(cls, raw: dict, name: str = "config") -> SweepSpec:
        problems: list[str] = []
        values: dict[str, dict[str, Any]] = {}
        for table in raw:
            if table not in TOML_KEYS:
                problems.append(f"[{table}]: unknown table; allowed tables are {sorted(TOML_KEYS)}.")
        for table, keys in TOML_KEYS.items():
            given = raw.get(table, {})
            if not isinstance(given, dict):
                problems.append(f"[{table}] must be a table, got {type(given).__name__}.")
                given = {}
            for key in given:
                if key not in keys:
                    problems.append(f"[{table}].{key}: unknown key; allowed keys are {sorted(keys)}.")
            values[table] = {}
            for key, (types, default) in keys.items():
                if key not in given:
                    if default is REQUIRED:
                        problems.append(f"[{table}].{key} is required ({_type_name(types)}).")
                    values[table][key] = None if default is REQUIRED else default
                    continue
                v = given[key]
                ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
                if not ok:
                    problems.append(f"[{table}].{key} = {v!r}: expected {_type_name(types)}.")
                    v = None if default is REQUIRED else default
                values[table][key] = v
        if problems:
            raise ConfigError(problems, name)
        return cls._build(values, name)

    @classmethod
    def _build(cls, v: dict[str, dict[str, Any]], name: str) -> SweepSpec:
        sw, tm, md, dt, op, rn, rec = (v[k] for k in ("sweep", "time", "model", "data", "optimizer", "run", "record"))
        _refuse_huge(sw, tm, name)  # before anything the size of these is allocated
        problems, seeds, block = _sweep_problems(sw, op)
        time_problems, times = _time_problems(tm)
        problems += time_problems + _choice_problems(md, dt, op, rn) + _record_problems(rec)
        if problems:
            raise ConfigError(problems, name)
        return cls(
            gammas=tuple(float(g) for g in sw["gammas"]),
            widths=tuple(int(w) for w in sw["widths"]),
            seeds=tuple(int(s) for s in seeds),
            seed_block=int(block),
            data_seeds=tuple(int(s) for s in sw["data_seeds"]),
            time_units=tm["units"],
            horizon=float(tm["horizon"]),
            times=tuple(float(t) for t in times),
            data_name=dt["name"],
            data_options=tuple(sorted(dt["options"].items())),
            train=_train_config(md, op, rn, sw["antithetic"], name, bool(rec["layer_diagnostics"])),
            data_seed=int(op["data_seed"]),
            alphas=tuple(float(a) for a in sw["alphas"]),
            ntk_points=tuple(rec["ntk_points"]) if isinstance(rec["ntk_points"], list) else rec["ntk_points"],
            ntk_every=int(rec["ntk_every"]),
            displacement=bool(rec["displacement"]),
        )

    # ------------------------------------------------------------------ use
    def canonical(self) -> dict:
        """Return the config as plain JSON-able data, in a fixed order (stored in the store's attrs)."""
        t = self.train
        return {
            "sweep": {
                "gammas": list(self.gammas),
                "widths": list(self.widths),
                "seeds": list(self.seeds),
                "seed_block": self.seed_block,
                "data_seeds": list(self.data_seeds),
                # written only when used: older configs keep their canonical form
                **({"alphas": list(self.alphas)} if self.alphas else {}),
                **({"antithetic": True} if t.antithetic else {}),
            },
            "time": {"units": self.time_units, "horizon": self.horizon, "times": list(self.times)},
            "model": {
                "activation": t.activation,
                "bias": t.bias,
                "init": t.init,
                "inner_widths": list(t.inner_widths),
                "inner_gammas": list(t.inner_gammas),
                **({"batchnorm": True} if t.batchnorm else {}),
            },
            "data": {"name": self.data_name, "options": dict(self.data_options)},
            "optimizer": {
                "alpha": t.alpha,
                **({"layer_alpha": dict(t.layer_alpha)} if t.layer_alpha else {}),
                "loss": t.loss,
                "batch_size": t.batch_size or 0,
                "shuffle": t.shuffle,
                "output_weight_decay": t.output_weight_decay,
                # written only where they differ from the defaults: older configs keep their canonical form
                **({"blowup": t.blowup or 0.0} if t.blowup != DEFAULT_BLOWUP else {}),
                **({"max_output": t.max_output} if t.max_output else {}),
                "data_seed": self.data_seed,
            },
            # precision and step kernel written only when not the defaults: older configs keep their canonical form
            "run": {
                "dtype": t.dtype,
                **({"precision": t.precision} if t.precision != "ieee" else {}),
                **({"step_kernel": t.step_kernel} if t.step_kernel != "torch" else {}),
            },
            # written only when used: older configs keep their canonical form
            **(
                {"record": self._record_table()}
                if self.ntk_points or self.displacement or self.train.layer_diagnostics
                else {}
            ),
        }

    def _record_table(self) -> dict:
        pts = self.ntk_points
        return {
            "ntk_points": list(pts) if isinstance(pts, tuple) else pts,
            "ntk_every": self.ntk_every,
            "displacement": self.displacement,
            # written only when used: older configs keep their canonical form
            **({"layer_diagnostics": True} if self.train.layer_diagnostics else {}),
        }

    def ntk_grid(self, n_points: int) -> tuple[int, ...] | None:
        """Return the NTK sub-grid's point indices for a grid of ``n_points``, or None when the NTK is not recorded."""
        pts = self.ntk_points
        if not pts:
            return None
        if pts == "all":
            return tuple(range(n_points))
        if isinstance(pts, int):
            return tuple(int(i) for i in np.unique(np.linspace(0, n_points - 1, min(pts, n_points)).round()))
        return tuple(pts)

    def to_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, device: str = "cpu") -> SweepSpec:
        raw = json.loads(text)
        raw["run"]["device"] = device
        raw["time"].pop("n_times", None)
        if raw["sweep"].get("alphas"):  # the canonical form keeps the unused constant alpha = 1 beside alphas
            raw["optimizer"].pop("alpha", None)
        return cls.from_dict(raw, "stored config")

    def with_device(self, device: str) -> SweepSpec:
        """Return the same sweep on another device (the device is not part of what a store records)."""
        from dataclasses import replace

        return replace(self, train=replace(self.train, device=device))

    def load_data(self) -> DataSet:
        return load_dataset(self.data_name, **dict(self.data_options))

    def check(self, data: DataSet, store: str | os.PathLike | None = None) -> list[str]:
        """Problems that only show with the data at hand, found before any store is created or cell trained.

        Each width's recording schedule (distinct optimizer steps), the loss against the task, the batch size
        against the training set, the model at every (width, gamma), the memory one cell's block needs, and the
        store's size (records, chunk files and, given ``store``, the free space where it will be written).
        """
        problems = []
        t = self.train
        n = len(data.x_train)
        if t.batch_size and t.batch_size > n:
            problems.append(f"[optimizer].batch_size = {t.batch_size} exceeds the {n} training points; use <= {n}.")
        if t.loss == "cross_entropy" and data.task != "classification":
            problems.append(
                f"[optimizer].loss = 'cross_entropy' needs a classification data set; {self.data_name} is "
                f"{data.task}: use loss = 'mse'."
            )
        steps_per_epoch = math.ceil(n / (t.batch_size or n))
        per_unit = {"step": 1, "scaled": max(self.widths), "epoch": steps_per_epoch}[self.time_units]
        if self.horizon * per_unit > MAX_STEPS:
            problems.append(
                f"[time].horizon = {self.horizon:g} ({self.time_units}) is {self.horizon * per_unit:,.0f} optimizer "
                f"steps per run"
                + (f" at width {max(self.widths)}" if self.time_units == "scaled" else "")
                + f"; at most {MAX_STEPS:,} (a day of a GPU at a millisecond a step): lower the horizon."
            )
            return problems  # the recording schedule of such a horizon is not worth computing
        files = _open_file_limit()
        if files and len(self.gammas) > files - OPEN_FILES_RESERVE:
            problems.append(
                f"[sweep].gammas has {len(self.gammas):,} values; a cell trains every gamma together and holds one "
                f"write lock (an open file) per gamma: it needs {len(self.gammas) + OPEN_FILES_RESERVE:,} open files "
                f"and this process may open {files:,} (ulimit -n). Split the gammas over several stores, or raise "
                "the limit."
            )
        for w in self.widths:
            try:
                schema.record_steps(self.times, self.time_units, w, steps_per_epoch)
            except ValidationError as e:
                problems.append(f"[time]: {e.problems[0]}")
                break
        try:
            for w in self.widths:
                for g in self.gammas:
                    t.architecture(data.d_in, data.output_size, w, g)
        except ValidationError as e:
            problems += [f"[model]: {p}" for p in getattr(e, "problems", [str(e)])]
        need = self.cell_bytes(data)
        total = _physical_memory()
        if total and need > 0.8 * total:
            problems.append(
                f"one cell trains {len(self.gammas) * self.seed_block} members at width {max(self.widths)} and needs "
                f"about {need / 1e9:.3g} GB of memory; this machine has {total / 1e9:.3g} GB. Lower [sweep].seed_block "
                "or the widths."
            )
        cells = (
            len(self.widths)
            * (len(self.seeds) // self.seed_block)
            * max(1, len(self.data_seeds))
            * max(1, len(self.alphas))
        )
        if cells > MAX_CELLS:
            problems.append(
                f"the sweep has {cells:,} cells (widths x seed blocks x alphas x data seeds), each a Dask task; at most "
                f"{MAX_CELLS:,}: raise [sweep].seed_block."
            )
        found: list[str] = []  # the store's own check of the sub-grid, before any store exists
        ntk = resolve_ntk_points(self.ntk_grid(data.grid.n_points), data.grid.n_points, found)
        problems += [f"[record].{p}" for p in found]
        layers = self.layers(data)
        base = dict(
            gammas=self.gammas,
            widths=self.widths,
            seeds=self.seeds,
            times=self.times,
            time_units=self.time_units,
            n_points=data.grid.n_points,
            n_features=data.grid.n_features,
            output_size=data.output_size,
            grid_hash="",
            seed_chunk=self.seed_block,
            dtype="float64" if t.dtype == "float64" else "float32",
            extra=tuple(self.extra_dims().items()),
            ntk_points=ntk,
            layers=layers,
        )
        fields = StoreSpec(**base, time_chunk=1).field_bytes
        tc = default_time_chunk(len(self.times), data.grid.n_points, data.output_size, self.seed_block, fields)
        return problems + size_problems(StoreSpec(**base, time_chunk=tc), Path(store) if store is not None else None)

    def metrics(self) -> dict[str, str]:
        """Return the further per-record scalars the store declares: the layer diagnostics, when recorded."""
        if not self.train.layer_diagnostics:
            return {}
        return schema.layer_diagnostic_metrics(len(self.train.inner_widths) + 1)

    def layers(self, data: DataSet) -> tuple[str, ...]:
        """Return the parameter tensors whose displacement is recorded (all of the model's), or () when not recorded."""
        if not self.displacement:
            return ()
        return tuple(self.train.architecture(data.d_in, data.output_size, self.widths[0], self.gammas[0]).shapes())

    def cell_bytes(self, data: DataSet) -> int:
        """Rough memory of training one cell: parameters, gradients and workspace of the widest block."""
        t = self.train
        members = len(self.gammas) * self.seed_block
        widths = (*t.inner_widths, max(self.widths))
        fan_in = (data.d_in, *widths[:-1])
        params = sum(a * b for a, b in zip(fan_in, widths, strict=True)) + widths[-1] * data.output_size
        batch = t.batch_size or len(data.x_train)
        acts = sum(widths) * (batch + data.grid.n_points)
        item = 8 if t.dtype == "float64" else 4
        ntk = len(self.ntk_grid(data.grid.n_points) or ()) * data.output_size  # Jacobian rows of a vmap chunk
        return int(members * item * (4 * params + 3 * acts) + 4 * item * ntk * params)

    def budget(self, data: DataSet) -> dict:
        """Return what the sweep's training costs: optimizer steps and scaled time t = k / N per run, and FLOP.

        FLOP count the matrix products of training only (forward 2, backward 4 multiply-adds per weight and
        example: 6 x weights x examples per step), summed over every member; records, the NTK and elementwise
        work are not counted. Returns a dict with ``steps`` and ``scaled_time`` ({width: value}),
        ``runs_per_width`` and ``flop`` (total).
        """
        t = self.train
        n = len(data.x_train)
        batch = t.batch_size or n
        steps_per_epoch = math.ceil(n / batch)
        runs = len(self.gammas) * len(self.seeds) * max(1, len(self.data_seeds)) * max(1, len(self.alphas))
        steps, scaled, flop = {}, {}, 0.0
        for w in self.widths:
            k = int(schema.record_steps([self.horizon], self.time_units, w, steps_per_epoch)[0])
            widths = (*t.inner_widths, int(w))
            fan_in = (data.d_in, *widths[:-1])
            weights = sum(a * b for a, b in zip(fan_in, widths, strict=True)) + widths[-1] * data.output_size
            steps[int(w)], scaled[int(w)] = k, k / int(w)
            flop += 6.0 * weights * batch * k * runs
        return {"steps": steps, "scaled_time": scaled, "runs_per_width": runs, "flop": flop}

    def extra_dims(self) -> dict[str, tuple]:
        """Return the store's extra sweep dims, in order: ``alpha`` (when ``alphas`` are swept), then ``data_seed``."""
        out: dict[str, tuple] = {}
        if self.alphas:
            out[schema.ALPHA] = self.alphas
        if self.data_seeds:
            out[schema.DATA_SEED] = self.data_seeds
        return out

    def blocks(self) -> list[tuple[int, tuple[int, ...]]]:
        """(width, seed block) cells, widest first so the longest tasks start early."""
        seeds = self.seeds
        blocks = [seeds[i : i + self.seed_block] for i in range(0, len(seeds), self.seed_block)]
        return [(w, b) for w in sorted(self.widths, reverse=True) for b in blocks]


def _record_problems(rec: dict) -> list[str]:
    problems = []
    pts = rec["ntk_points"]
    if isinstance(pts, str) and pts != "all":
        problems.append(f"[record].ntk_points = {pts!r}: give 'all', a count of grid points, or a list of indices.")
    elif isinstance(pts, int) and not isinstance(pts, bool) and pts < 0:
        problems.append(f"[record].ntk_points = {pts}: a count >= 1 (0 records no NTK).")
    elif isinstance(pts, list) and (
        not pts or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pts)
    ):
        problems.append(f"[record].ntk_points = {shorten(pts)}: grid point indices (integers >= 0).")
    if rec["ntk_every"] < 1:
        problems.append(f"[record].ntk_every = {rec['ntk_every']}: an integer >= 1 (every k-th record).")
    return problems


def _refuse_huge(sw: dict, tm: dict, name: str) -> None:
    too_many = [
        f"[{t}].{k} has {n:,} values; at most {MAX_COORDINATE:,} (split the sweep into several stores)."
        for t, k, n in (
            ("sweep", "seeds", sw["seeds"] if isinstance(sw["seeds"], int) else len(sw["seeds"])),
            ("sweep", "gammas", len(sw["gammas"])),
            ("sweep", "widths", len(sw["widths"])),
            ("sweep", "data_seeds", len(sw["data_seeds"])),
            ("sweep", "alphas", len(sw["alphas"])),
            ("time", "n_times", tm["n_times"]),
            ("time", "times", len(tm["times"])),
        )
        if n > MAX_COORDINATE
    ]
    if too_many:
        raise ConfigError(too_many, name)


def _sweep_problems(sw: dict, op: dict) -> tuple[list[str], list, int]:
    """Check the [sweep] table (with the optimizer's seed and alpha): its problems, seeds and seed block."""
    problems = [f"[sweep].{p}" for p in schema.validate_gammas(sw["gammas"], "gammas")]
    problems += [f"[sweep].{p}" for p in schema.validate_widths(sw["widths"], "widths")]
    seeds = list(range(sw["seeds"])) if isinstance(sw["seeds"], int) else sw["seeds"]
    if isinstance(sw["seeds"], int) and sw["seeds"] < 1:
        problems.append(f"[sweep].seeds = {sw['seeds']}: give a count >= 1 or a non-empty list of seeds.")
    elif not seeds:
        problems.append("[sweep].seeds is empty: give a count >= 1 or a non-empty list of seeds.")
    else:
        problems += [f"[sweep].{p}" for p in schema.validate_seeds(seeds, "seeds")]
    block = (len(seeds) or 1) if sw["seed_block"] is None else sw["seed_block"]
    if block < 1 or (seeds and len(seeds) % block):
        problems.append(f"[sweep].seed_block = {sw['seed_block']}: must be >= 1 and divide the {len(seeds)} seeds.")
    if sw["data_seeds"]:
        problems += [f"[sweep].{p}" for p in schema.validate_seeds(sw["data_seeds"], "data_seeds")]
    if op["data_seed"] < 0:
        problems.append(f"[optimizer].data_seed = {op['data_seed']}: the minibatch order's seed must be >= 0.")
    problems += _alphas_problems(sw["alphas"], op["alpha"])
    op["alpha"] = 1.0 if op["alpha"] is None else op["alpha"]
    if sw["antithetic"] and seeds and (len(seeds) % 2 or block % 2):
        problems.append(
            f"[sweep].antithetic = true pairs seeds (2k, 2k+1 of the list): give an even number of seeds "
            f"(got {len(seeds)}) and an even seed_block (got {block}), so that no pair is split between blocks."
        )
    return problems, seeds, block


def _time_problems(tm: dict) -> tuple[list[str], list]:
    """Check the [time] table: its problems and its recording times (evenly spaced ones from n_times)."""
    problems = []
    units, horizon = tm["units"], tm["horizon"]
    if units not in schema.TIME_UNITS:
        problems.append(f"[time].units = {units!r}: allowed are {list(schema.TIME_UNITS)}.")
    if horizon is not None and not (math.isfinite(horizon) and horizon > 0):
        problems.append(f"[time].horizon = {horizon}: must be a positive number (the end of training).")
    times = tm["times"]
    if times and tm["n_times"]:
        problems.append("[time]: give either times (a list) or n_times (evenly spaced from 0 to horizon), not both.")
    if not times and tm["n_times"] < 2 and horizon is not None:
        problems.append("[time]: give times (a list) or n_times >= 2.")
    if not times and tm["n_times"] >= 2 and horizon:
        times = np.linspace(0.0, float(horizon), tm["n_times"]).tolist()
    if not times:
        return problems, times
    problems += [
        f"[time].{p}" for p in schema.validate_times(times, units if units in schema.TIME_UNITS else "scaled", "times")
    ]
    beyond = [t for t in times if isinstance(t, int | float) and horizon and t > horizon]
    if beyond:
        problems.append(f"[time].times {beyond} lie beyond the training horizon {horizon}; record within [0, horizon].")
    if horizon and isinstance(times[-1], int | float) and times[-1] < horizon:
        problems.append(
            f"[time]: the last recording time {times[-1]} is before the horizon {horizon}; training stops at the "
            "last recording, so end times at the horizon."
        )
    return problems, times


def _choice_problems(md: dict, dt: dict, op: dict, rn: dict) -> list[str]:
    """Names that must be one of a known set, and the optimizer's numbers, of [model], [data], [optimizer], [run]."""
    problems = []
    for table, key, value, allowed in (
        ("model", "activation", md["activation"], sorted(ACTIVATIONS)),
        ("model", "init", md["init"], sorted(INIT_DESCRIPTIONS)),
        ("data", "name", dt["name"], sorted(LOADERS)),
        ("optimizer", "loss", op["loss"], list(LOSSES)),
    ):
        if value not in allowed:
            problems.append(f"[{table}].{key} = {value!r}: allowed are {allowed}.")
    if not (math.isfinite(op["alpha"]) and op["alpha"] > 0):
        problems.append(f"[optimizer].alpha = {op['alpha']}: must be a positive number.")
    if op["batch_size"] < 0:
        problems.append(f"[optimizer].batch_size = {op['batch_size']}: 0 means full batch, else a batch size >= 1.")
    if rn["dtype"] not in DTYPES:
        problems.append(f"[run].dtype = {rn['dtype']!r}: allowed are {sorted(DTYPES)}.")
    if rn["device"] != "cpu" and not rn["device"].startswith("cuda"):
        problems.append(f"[run].device = {rn['device']!r}: use 'cpu' or 'cuda'.")
    if not (math.isfinite(op["output_weight_decay"]) and op["output_weight_decay"] >= 0):
        problems.append(f"[optimizer].output_weight_decay = {op['output_weight_decay']}: must be a finite number >= 0.")
    for key, low in (("blowup", 1.0), ("max_output", 0.0)):
        v = op[key]
        if not (math.isfinite(v) and (v == 0 or v > low)):
            problems.append(f"[optimizer].{key} = {v}: 0 turns the check off, else a finite number > {low:g}.")
    if dt["name"] in LOADERS:
        problems += [f"[data].options: {p}" for p in validate_options(dt["name"], dt["options"])]
    return problems


def _train_config(
    md: dict, op: dict, rn: dict, antithetic: bool, name: str, layer_diagnostics: bool = False
) -> TrainConfig:
    try:
        return TrainConfig(
            inner_widths=tuple(md["inner_widths"]),
            inner_gammas=tuple(md["inner_gammas"]),
            activation=md["activation"],
            bias=md["bias"],
            init=md["init"],
            alpha=float(op["alpha"]),
            layer_alpha=dict(op["layer_alpha"]),
            loss=op["loss"],
            batch_size=op["batch_size"] or None,
            shuffle=op["shuffle"],
            output_weight_decay=float(op["output_weight_decay"]),
            blowup=float(op["blowup"]) or None,
            max_output=float(op["max_output"]) or None,
            antithetic=antithetic,
            batchnorm=md["batchnorm"],
            dtype=rn["dtype"],
            device=rn["device"],
            precision=rn["precision"],
            step_kernel=rn["step_kernel"],
            layer_diagnostics=layer_diagnostics,
        )
    except ValidationError as e:  # TrainConfig's own checks: re-raise as a config error naming the tables
        raise ConfigError([f"[model]/[optimizer]/[run]: {p}" for p in getattr(e, "problems", [str(e)])], name) from None


def _alphas_problems(alphas: list, alpha: float) -> list[str]:
    if not alphas:
        return []
    problems = []
    bad = [
        a for a in alphas if isinstance(a, bool) or not isinstance(a, int | float) or not (math.isfinite(a) and a > 0)
    ]
    if bad:
        problems.append(f"[sweep].alphas: {shorten(bad)} are not positive numbers; every alpha must be > 0.")
    elif len(set(alphas)) != len(alphas):
        problems.append(f"[sweep].alphas = {shorten(alphas)} repeats a value; give each alpha once.")
    if alpha is not None:
        problems.append(
            f"[optimizer].alpha = {alpha} and [sweep].alphas are both given: alphas sweeps the constant, so drop "
            "[optimizer].alpha (per-layer multipliers go in [optimizer].layer_alpha)."
        )
    return problems


def config_differences(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    """Key-by-key differences between two canonical configs."""
    out = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key, "<absent>"), requested.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: store has {shorten(a)}, config has {shorten(b)}")
    return out


def _open_file_limit() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError):
        return 0
    return 0 if soft == resource.RLIM_INFINITY else int(soft)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
