"""Studies: several sweeps of one question, in one TOML file (the seed papers' studies are written this way).

A study file holds the sweep tables of ``ensemble-stats run`` plus

* ``[study]``: ``title``, ``claims``, ``differences`` (from the paper, and why), optional ``analysis`` values and
  ``eta_over_critical`` (the variants' ``sweep.alphas`` as multiples of ``theory.critical_alpha``);
* ``[[variant]]``: ``name`` and ``set``, dotted-key overrides of the sweep tables (one store per variant);
  ``needs = "mnist"`` keeps a variant only when an MNIST path is given;
* ``[study.smoke]`` / ``[study.full]``: ``set`` overrides applied to every variant at that scale, an optional
  ``variants`` subset and ``analysis`` overrides.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from ensemble_stats import theory
from ensemble_stats.errors import ConfigError

from ._config import SweepSpec
from ._data import load_dataset

__all__ = ["load_study"]


def _set_dotted(raw: dict, key: str, value) -> None:
    table, _, name = key.partition(".")
    if not name:
        raise ConfigError(f"override {key!r}: use 'table.key', e.g. 'sweep.widths'.", "experiment")
    raw.setdefault(table, {})[name] = copy.deepcopy(value)


def load_study(path, scale: str = "default", mnist: str | None = None) -> tuple[dict, dict, dict[str, SweepSpec]]:
    """Parse a study file: its metadata, analysis options and one validated :class:`SweepSpec` per variant.

    Parameters
    ----------
    path : the study's TOML file
    scale : ``"default"``, or the name of a ``[study.<scale>]`` table of overrides (e.g. ``"smoke"``, ``"full"``)
    mnist : a local MNIST directory; variants that need it are left out without one

    Returns
    -------
    (meta, analysis, specs) : ``title``, ``claims``, ``differences``, ``paper_budget``; the analysis options;
    variant name -> its sweep

    Raises
    ------
    ConfigError
        A malformed override, or a variant's sweep that does not validate.
    """
    path = Path(path)
    raw = tomllib.loads(Path(path).read_text())
    study, variants = raw.pop("study", {}), raw.pop("variant", [])
    scaled = study.get(scale, {}) if scale != "default" else {}
    eta_over_critical = scaled.get("eta_over_critical", study.get("eta_over_critical"))
    analysis = {**study.get("analysis", {}), **scaled.get("analysis", {})}
    wanted, specs = scaled.get("variants"), {}
    for v in variants:
        if (wanted is not None and v["name"] not in wanted) or (v.get("needs") == "mnist" and not mnist):
            continue
        cfg = copy.deepcopy(raw)
        for key, value in {**v.get("set", {}), **scaled.get("set", {})}.items():
            _set_dotted(cfg, key, value)
        if v.get("needs") == "mnist":
            _set_dotted(cfg, "data.options", {"path": str(mnist)})
        if eta_over_critical:
            _set_dotted(cfg, "sweep.alphas", critical_alphas(cfg, eta_over_critical, f"{path.name} [{v['name']}]"))
        specs[v["name"]] = SweepSpec.from_dict(cfg, f"{path.name} [{v['name']}]")
    return {k: study.get(k, "") for k in ("title", "claims", "differences", "paper_budget")}, analysis, specs


def critical_alphas(cfg: dict, multiples, where: str) -> list[float]:
    """``sweep.alphas`` as multiples of the critical rate constant ``theory.critical_alpha`` of the variant's task."""
    widths, gammas = cfg.get("sweep", {}).get("widths", []), cfg.get("sweep", {}).get("gammas", [])
    if len(widths) != 1 or len(gammas) != 1:
        raise ConfigError(
            f"{where}: eta_over_critical needs one width and one gamma per variant (the critical alpha depends on "
            f"both); found widths {widths} and gammas {gammas}.",
            "experiment",
        )
    data = load_dataset(cfg["data"]["name"], **cfg["data"].get("options", {}))
    model = cfg.get("model", {})
    a_c = theory.critical_alpha(
        data.x_train, widths[0], gamma=gammas[0], n_outputs=data.output_size,
        activation=model.get("activation", "tanh"), layer_alpha=cfg.get("optimizer", {}).get("layer_alpha") or None,
    )  # fmt: skip
    return [float(m) * a_c for m in multiples]
