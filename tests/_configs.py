"""One builder for the small sweep configs the tests train (instead of a TOML text per test file)."""

from __future__ import annotations

import copy
import json

BASE: dict[str, dict] = {
    "sweep": {"gammas": [0.5, 1.0], "widths": [16, 32], "seeds": 4},
    "time": {"units": "scaled", "horizon": 1.0, "n_times": 5},
    "data": {"name": "teacher", "options": {"kind": "circle", "n_train": 8, "n_test": 5}},
}
"""Trains in seconds: 2 gammas x 2 widths x 4 seeds on the 8-point circle task, 5 records to t = 1."""


def sweep(**tables: dict) -> dict:
    """``BASE`` with each given table's keys replaced (a key set to None is removed; a new table is added)."""
    cfg = copy.deepcopy(BASE)
    for table, keys in tables.items():
        target = cfg.setdefault(table, {})
        for key, value in keys.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(value)
    return cfg


def toml(cfg: dict) -> str:
    """The config as TOML text (for the CLI and file-based tests): tables of numbers, strings, lists, inline tables."""

    def value(v) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)  # numbers, and strings with TOML-compatible escapes

    return "\n".join(
        f"[{table}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items()) for table, keys in cfg.items()
    )
