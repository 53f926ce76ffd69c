"""The kernel limit as a yardstick: when it describes a store, and how far the store's variance is from it.

The gamma in (1/2, 1) limit of the shallow net under full-batch gradient descent (docs/theory.md §1.2-1.4) is
computed from the store's own training set (``theory.kernel_limit``); :func:`compare_to_theory` divides the
store's seed variance, scaled by N^(2 gamma - 1), by the limit's Var K_t.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr

from . import schema
from ._provenance import with_provenance
from ._stats import bias_variance
from .errors import ValidationError
from .theory import kernel_limit

__all__ = ["compare_to_theory", "kernel_limit_problems"]


def kernel_limit_problems(ds: xr.Dataset) -> list[str]:
    """Why the kernel limit of :func:`compare_to_theory` does not describe this store (empty if it does).

    It holds for one hidden layer, the theory init, MSE, full-batch gradient descent, no weight decay, scaled
    time (any number of outputs), and needs the training set (in the store or given).

    Parameters
    ----------
    ds : Dataset from :func:`open_ensemble` (its attrs carry the model and the training configuration)

    Returns
    -------
    list of str, one reason per line; empty when the limit applies

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> es.kernel_limit_problems(ds)  # a shallow theory-law sweep in scaled time: the limit applies
    []
    >>> folder.cleanup()
    """
    model = ds.attrs.get(schema.ATTR_MODEL)
    if not isinstance(model, dict):
        return ["the store has no model description (attrs 'model')"]
    checks = [
        (str(model.get("architecture", "")).startswith("1-hidden-layer"), "not one hidden layer"),
        (str(model.get("init", "")).startswith("theory"), "not the theory init law"),
        (model.get("loss") == "mse", "loss is not MSE"),
        (model.get("optimizer") == "full-batch gradient descent", "not full-batch gradient descent"),
        (not model.get("output_weight_decay"), "weight decay"),
        ("bias=False" in str(model.get("architecture", "")), "biases"),
        (ds[schema.TIME].attrs.get("units", "scaled") == "scaled", "time is not scaled"),
        (schema.X_TRAIN in ds and schema.Y_TRAIN in ds, "no training set in the store"),
    ]
    return [why for ok, why in checks if not ok]


def compare_to_theory(
    ds: xr.Dataset,
    train_x=None,
    train_y=None,
    *,
    activation: str | Callable | None = None,
    sigma_w: float = 1.0,
    alpha: float | None = None,
    ci: float = 0.95,
    decomposition: xr.Dataset | None = None,
) -> xr.Dataset:
    """Return the parameter-free collapse: N^(2 gamma - 1) * seed variance / Var K_t, pooled over the grid.

    Parameters
    ----------
    ds : Dataset from ``open_ensemble`` of a shallow sweep with the theory init law, scaled time, any number of
        outputs (the variance is pooled over points and outputs); the grid is ``ds.x``.
    train_x, train_y : the training set (M, d), (M,) or (M, O); default the store's ``x_train`` / ``y_train``
    activation, alpha : default the store's model (``attrs["model"]``), else ``"tanh"`` and 1; a store that
        sweeps alpha (an ``alpha`` coordinate) gets one limit per alpha. The per-layer multipliers
        (``layer_alpha``) come from the store's model.
    decomposition : a :func:`bias_variance` result of ``ds`` at level ``ci`` to reuse (computed if not given)

    Returns
    -------
    Dataset with ``ratio``, ``ratio_lo``, ``ratio_hi`` per (gamma, width, time), and the kernel limit's ``h``
    (time, point, output) and ``var_k`` (time, point). See docs/theory.md §9.3.

    Examples
    --------
    >>> import tempfile
    >>> import ensemble_stats as es
    >>> from ensemble_stats.testing import shallow_sweep
    >>> folder = tempfile.TemporaryDirectory()
    >>> ds = es.open_ensemble(shallow_sweep(f"{folder.name}/runs.zarr"))  # a real tiny sweep
    >>> cmp = es.compare_to_theory(ds)  # N^(2 gamma - 1) Var / Var K_t: 1 in the limit
    >>> cmp.ratio.dims
    ('gamma', 'width', 'time')
    >>> sorted(cmp.data_vars)
    ['h', 'n_seeds', 'ratio', 'ratio_hi', 'ratio_lo', 'var_k']
    >>> folder.cleanup()
    """
    if train_x is None or train_y is None:
        if schema.X_TRAIN not in ds or schema.Y_TRAIN not in ds:
            raise ValidationError(
                "compare_to_theory needs the training set: this store has no x_train / y_train (written by sweeps "
                "of version 0.2 on); pass train_x and train_y."
            )
        train_x = ds[schema.X_TRAIN].values if train_x is None else train_x
        train_y = ds[schema.Y_TRAIN].values if train_y is None else train_y
    model = ds.attrs.get(schema.ATTR_MODEL) if isinstance(ds.attrs.get(schema.ATTR_MODEL), dict) else {}
    activation = model.get("activation", "tanh") if activation is None else activation
    swept = alpha is None and schema.ALPHA in ds.coords
    alphas = (
        np.atleast_1d(ds[schema.ALPHA].values)
        if swept
        else [float(model.get("alpha", 1.0)) if alpha is None else alpha]
    )

    def limit(a: float) -> xr.Dataset:
        return kernel_limit(
            train_x,
            train_y,
            ds[schema.X].values,
            ds[schema.TIME].values,
            activation=activation,
            sigma_w=sigma_w,
            alpha=float(a),
            layer_alpha=model.get("layer_alpha"),
        )

    if not swept:
        lim = limit(alphas[0])
    elif ds[schema.ALPHA].ndim == 0:  # one alpha selected from a sweep: a scalar coordinate
        lim = limit(alphas[0]).assign_coords({schema.ALPHA: ds[schema.ALPHA]})
    else:
        lim = xr.concat([limit(a) for a in alphas], dim=ds[schema.ALPHA], combine_attrs="drop_conflicts")
    bv = bias_variance(ds, ci=ci) if decomposition is None else decomposition
    scale = ds[schema.WIDTH].astype(float) ** (2 * ds[schema.GAMMA] - 1)
    vk = lim["var_k"].mean(schema.POINT)
    out = xr.Dataset(
        {
            "ratio": bv["variance"] * scale / vk,
            "ratio_lo": bv["variance_lo"] * scale / vk,
            "ratio_hi": bv["variance_hi"] * scale / vk,
            "n_seeds": bv["n_seeds"],
            "h": lim["h"],
            "var_k": lim["var_k"],
        }
    )
    names = {
        "ratio": "N^(2 gamma - 1) seed variance / kernel-limit variance Var K_t (grid means)",
        **schema.bound_names("ratio", ci, "the ratio"),
        "n_seeds": "seeds used",
        "h": "kernel-limit mean output h_t",
        "var_k": "kernel-limit variance Var K_t of the rescaled fluctuation",
    }
    for k, v in names.items():
        out[k].attrs["long_name"] = v
    out.attrs.update({"ci": ci, "definition": "N^(2 gamma - 1) mean_x s^2(x) / mean_x Var K_t(x)"})
    return with_provenance(out, ds, "compare_to_theory")
