"""Stores whose claims have a known outcome, built directly (no training): the truth is put in by construction."""

from __future__ import annotations

import numpy as np

from ensemble_stats import theory
from ensemble_stats.store import EnsembleStore, EvalGrid

MODEL = {
    "architecture": "1-hidden-layer MLP, d_in=2, d_out=1, bias=False",
    "activation": "tanh",
    "init": "theory: W ~ N(0, 1/d), C ~ N(0, 1)",
    "loss": "mse",
    "optimizer": "full-batch gradient descent",
    "output_weight_decay": 0.0,
    "alpha": 1.0,
}
"""What the kernel limit and the stability threshold need of a store's model description."""


def _circle(n: int, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def collapse_store(
    path, *, scale: dict[float, float], widths=(64, 256, 1024), seeds: int = 256, times=(0.0, 0.5, 1.0), excess=0.0
):
    """A shallow kernel-limit store whose seed variance is exactly ``scale[gamma]**2`` times the limit's, times
    ``1 + excess N^(2 gamma - 2)`` (the theory's order of the relative correction).

    Each width's predictions are h_t + N^(1/2 - gamma) sqrt(Var K_t) c z with z standardized over the seeds at
    every grid point (sample mean 0, variance 1): the collapse ratio N^(2 gamma - 1) Var / Var K_t is c^2 (times
    the correction) at every t, exactly, and its interval is that of a seed variance from ``seeds`` draws.
    """
    x_train, y_train = _circle(8), np.sin(3 * np.arange(8.0))[:, None]
    grid = EvalGrid(_circle(5, 0.3), np.zeros((5, 1)))
    gammas = sorted(scale)
    store = EnsembleStore.create(
        path, grid, gammas=gammas, widths=list(widths), seeds=list(range(seeds)), times=list(times),
        dtype="float64", train=(x_train, y_train), model=MODEL, seed_chunk=seeds,
    )  # fmt: skip
    lim = theory.kernel_limit(x_train, y_train, grid.x, list(times), activation="tanh")
    rng = np.random.default_rng(0)
    for gi, g in enumerate(gammas):
        for wi, n in enumerate(widths):
            z = rng.normal(size=(seeds, grid.n_points))
            z = (z - z.mean(0)) / z.std(0, ddof=1)
            sd = n ** (0.5 - g) * np.sqrt(lim.var_k.values * (1 + excess * n ** (2 * g - 2))) * scale[g]
            pred = lim.h.values[None] + sd[None, :, :, None] * z[:, None, :, None]  # (seed, time, point, output)
            steps = [round(t * n) for t in times]
            store.write_records((gi, wi, slice(0, seeds)), list(range(len(times))), pred, steps)
    return store.path


def catapult_store(path, *, r0: list[float], behaviour: list[str], width: int = 256, seeds: int = 4):
    """A gamma = 1/2 store over alpha whose runs start at the given r_0 = eta lambda_0 / (M O) (one alpha each)
    and behave as ``behaviour`` says: ``"lazy"`` (the loss falls), ``"catapult"`` (the loss rises 3-fold, then
    falls, and lambda_max ends at r_final = 1), ``"unstable"`` (the loss rises and r stays at r_0) or
    ``"diverge"`` (marked diverged at step 2)."""
    M, times = 8, [0, 1, 2, 3, 4]
    x_train = _circle(M)
    grid = EvalGrid(x_train, np.sin(3 * np.arange(8.0))[:, None])
    alphas = [float(10 * (k + 1)) for k in range(len(r0))]  # any distinct values: eta follows from alpha
    store = EnsembleStore.create(
        path, grid, gammas=[0.5], widths=[width], seeds=list(range(seeds)), times=times, time_units="step",
        dtype="float64", train=(x_train, grid.target), model=MODEL, extra_dims={"alpha": alphas},
        ntk_points="all", seed_chunk=seeds,
    )  # fmt: skip
    u = np.ones(M) / np.sqrt(M)
    losses = {
        "lazy": [1.0, 0.8, 0.6, 0.5, 0.4],
        "catapult": [1.0, 3.0, 2.0, 0.5, 0.3],
        "unstable": [1.0, 2.0, 2.5, 2.2, 2.4],
        "diverge": [1.0, 5.0, 9.0, 9.0, 9.0],
    }
    for ai, (a, r, how) in enumerate(zip(alphas, r0, behaviour, strict=True)):
        eta = a * width ** (2 * 0.5 - 2)
        lam0 = r * M / eta
        lam_end = (1.0 if how == "catapult" else r) * M / eta
        lam = np.linspace(lam0, lam_end, len(times))
        ntk = lam[:, None, None, None, None] * np.outer(u, u)[None, :, :, None, None]  # (time, P, P, O, O)
        block = (0, 0, slice(0, seeds), ai)
        store.write_records(
            block, list(range(len(times))), np.zeros((seeds, len(times), M, 1)), times,
            scalars={"train_loss": np.tile(losses[how], (seeds, 1))},
            fields={"ntk": np.broadcast_to(ntk, (seeds, *ntk.shape))},
        )  # fmt: skip
        if how == "diverge":
            for s in range(seeds):
                store.mark_diverged((0, 0, s, ai), 2, owner_of_block=True)
    return store.path


def lazy_store(path, *, drift: dict[float, float], displacement: dict[float, float], widths=(64, 256, 1024)):
    """A store whose kernel drift and parameter displacement fall as N^drift[gamma] and N^displacement[gamma].

    Each run's NTK is (1 + d) times the identity at the last record (d = 0.3 N^p (1 + 0.02 z), z a standard
    normal per seed), so its relative drift is exactly d; the displacement of each layer is recorded alike.
    """
    gammas, seeds, P = sorted(drift), 8, 3
    x = _circle(P)
    grid = EvalGrid(x, np.zeros((P, 1)))
    store = EnsembleStore.create(
        path, grid, gammas=gammas, widths=list(widths), seeds=list(range(seeds)), times=[0.0, 1.0],
        dtype="float64", ntk_points="all", layers=["W1", "C"], seed_chunk=seeds,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    eye = np.eye(P)[:, :, None, None]  # (P, P, O, O)
    for gi, g in enumerate(gammas):
        for wi, n in enumerate(widths):
            d = 0.3 * n ** drift[g] * (1 + 0.02 * rng.normal(size=seeds))
            m = 0.3 * n ** displacement[g] * (1 + 0.02 * rng.normal(size=(seeds, 2)))
            ntk = np.stack([np.broadcast_to(eye, (seeds, P, P, 1, 1)), (1 + d)[:, None, None, None, None] * eye], 1)
            disp = np.stack([np.zeros((seeds, 2)), m], 1)
            store.write_records(
                (gi, wi, slice(0, seeds)), [0, 1], np.zeros((seeds, 2, P, 1)), [0, n],
                fields={"ntk": ntk, "displacement": disp},
            )  # fmt: skip
    return store.path


def conditioning_stores(
    folder,
    *,
    accuracy: dict[tuple[str, int], float | dict[float, float]],
    seeds: int = 8,
    diverged: dict[tuple[str, int, float], int] | None = None,
) -> dict[str, object]:
    """One store per (activation, depth), named as the conditioning study names them, whose runs end at the
    given training accuracy (seed noise sd 0.005) and at training loss 0.1 (1 - accuracy); a dict of
    ``{alpha: accuracy}`` makes a store over that alpha grid, and ``diverged[(activation, depth, alpha)] = k``
    makes its first k seeds diverge at the last record (non-finite outputs)."""
    x_train = _circle(8)
    grid = EvalGrid(_circle(5, 0.3), np.eye(2)[np.arange(5) % 2])
    rng = np.random.default_rng(2)
    out = {}
    for (act, L), acc in accuracy.items():
        name = f"{act}-L{L}"
        by_alpha = acc if isinstance(acc, dict) else {None: acc}
        extra = {"extra_dims": {"alpha": sorted(by_alpha)}} if isinstance(acc, dict) else {}
        store = EnsembleStore.create(
            f"{folder}/{name}.zarr", grid, gammas=[0.5], widths=[128], seeds=list(range(seeds)), times=[0.0, 1.0],
            dtype="float64", train=(x_train, np.eye(2)[np.arange(8) % 2]), seed_chunk=seeds, **extra,
        )  # fmt: skip
        for ai, a in enumerate(sorted(by_alpha) if extra else [None]):
            final = by_alpha[a] + 0.005 * rng.normal(size=seeds)
            pred = np.zeros((seeds, 2, 5, 2))
            pred[: (diverged or {}).get((act, L, a), 0), 1] = np.nan
            store.write_records(
                (0, 0, slice(0, seeds), *([ai] if extra else [])), [0, 1], pred, [0, 128],
                scalars={"train_accuracy": np.stack([np.full(seeds, 0.5), final], 1),
                         "train_loss": np.stack([np.full(seeds, 0.5), 0.1 * (1 - final)], 1)},
            )  # fmt: skip
        out[name] = store.path
    return out


def clt_stores(
    folder, *, n_var: dict[str, list[float]], bound: float = 10.0, widths=(64, 256), seeds: int = 32, loss=None
):
    """One gamma = 1 store per variant whose N x seed variance follows ``n_var[variant]`` over the times
    0, 1, ..., exactly at every grid point and width (standardized draws), with output weight norm ``bound``
    and a training loss ``loss(t)`` (default 1 / (1 + t): far from interpolation)."""
    out = {}
    T = len(next(iter(n_var.values())))
    times = [float(t) for t in range(T)]
    grid = EvalGrid(_circle(5, 0.3), np.zeros((5, 1)))
    rng = np.random.default_rng(3)
    for name, curve in n_var.items():
        store = EnsembleStore.create(
            f"{folder}/{name}.zarr", grid, gammas=[1.0], widths=list(widths), seeds=list(range(seeds)), times=times,
            dtype="float64", seed_chunk=seeds,
        )  # fmt: skip
        for wi, n in enumerate(widths):
            z = rng.normal(size=(seeds, 5))
            z = (z - z.mean(0)) / z.std(0, ddof=1)
            sd = np.sqrt(np.asarray(curve) / n)  # (time,)
            pred = sd[None, :, None, None] * z[:, None, :, None]
            store.write_records(
                (0, wi, slice(0, seeds)), list(range(T)), pred, [round(t * n) for t in times],
                scalars={"output_weight_norm": np.full((seeds, T), bound),
                         "train_loss": np.tile((loss or (lambda t: 1 / (1 + t)))(np.asarray(times)), (seeds, 1))},
            )  # fmt: skip
        out[name] = store.path
    return out


def deep_stores(folder, *, accuracy, levels=(0.5, 1.0), seeds: int = 8) -> dict[str, object]:
    """One store per (gamma_1, gamma_2) sweeping gamma_3, as the deep study lays them out, whose final test
    accuracy is ``accuracy(g1, g2, g3)`` (+ seed noise sd 0.01) and whose logits' seed variance is N^(1 - 2 g3)."""
    import json

    rng = np.random.default_rng(4)
    labels = np.arange(10) % 10
    grid = EvalGrid(rng.normal(size=(10, 4)), np.eye(10)[labels])  # chance: 1 / 10
    out = {}
    for g1 in levels:
        for g2 in levels:
            config = {"model": {"inner_gammas": [g1, g2], "inner_widths": [32, 32]}, "optimizer": {"alpha": 1.0}}
            store = EnsembleStore.create(
                f"{folder}/g{g1}-{g2}.zarr", grid, gammas=list(levels), widths=[64], seeds=list(range(seeds)),
                times=[0.0, 1.0], dtype="float64", seed_chunk=seeds, config=json.dumps(config),
            )  # fmt: skip
            for gi, g3 in enumerate(levels):
                acc = accuracy(g1, g2, g3) + 0.01 * rng.normal(size=seeds)
                sd = 64 ** (0.5 - g3)
                pred = sd * rng.normal(size=(seeds, 2, 10, 10))
                store.write_records(
                    (gi, 0, slice(0, seeds)), [0, 1], pred, [0, 64],
                    scalars={"accuracy": np.stack([np.full(seeds, 0.1), acc], 1),
                             "train_loss": np.stack([np.full(seeds, 2.3), np.full(seeds, 0.5)], 1)},
                )  # fmt: skip
            out[f"g{g1}-{g2}"] = store.path
    return out


def shallow_store(path, *, accuracy, widths=(32, 128), gammas=(0.5, 0.75, 1.0), seeds: int = 8, flat_init=False):
    """A shallow-study store whose final test accuracy is ``accuracy(gamma)`` (+ seed noise sd 0.005, shared by
    the gammas of a seed like common random numbers) and whose logits' seed variance is exactly N^(1 - 2 gamma)
    (at t = 0 too, as the init law gives it, unless ``flat_init``: then 1 for every gamma at t = 0)."""
    import json

    rng = np.random.default_rng(5)
    times = [0.0, 0.5, 1.0]
    grid = EvalGrid(rng.normal(size=(6, 3)), np.eye(2)[np.arange(6) % 2])
    config = {"model": {"init": "theory", "bias": False}, "optimizer": {"alpha": 1.0}}
    store = EnsembleStore.create(
        path, grid, gammas=list(gammas), widths=list(widths), seeds=list(range(seeds)), times=times,
        dtype="float64", seed_chunk=seeds, config=json.dumps(config),
    )  # fmt: skip
    shared = 0.005 * rng.normal(size=seeds)
    for wi, n in enumerate(widths):
        z = rng.normal(size=(seeds, 6, 2))
        z = (z - z.mean(0)) / z.std(0, ddof=1)
        for gi, g in enumerate(gammas):
            acc = np.stack([np.full(seeds, 0.5), accuracy(g) - 0.05 + shared, accuracy(g) + shared], 1)
            pred = np.broadcast_to(np.sqrt(n ** (1 - 2 * g)) * z[:, None], (seeds, 3, 6, 2)).copy()
            if flat_init:
                pred[:, 0] = z
            store.write_records(
                (gi, wi, slice(0, seeds)), [0, 1, 2], pred, [round(t * n) for t in times],
                scalars={"accuracy": acc, "train_accuracy": acc},
            )  # fmt: skip
    return store.path


def anchor_stores(folder, *, configs: dict[str, dict[float, tuple[float, float, float]]], seeds: int = 8, diverge=()):
    """One classification store per variant over alpha, whose runs end at ``configs[variant][alpha]`` =
    (test accuracy, train accuracy, train loss): the test accuracy's seed mean is exact (standardized noise, sd
    0.02). The (variant, alpha) pairs in ``diverge`` have one run diverged (non-finite outputs) at the end."""
    x_train = _circle(8)
    grid = EvalGrid(_circle(5, 0.3), np.eye(2)[np.arange(5) % 2])
    rng = np.random.default_rng(9)
    out = {}
    for name, by_alpha in configs.items():
        alphas = sorted(by_alpha)
        store = EnsembleStore.create(
            f"{folder}/{name}.zarr", grid, gammas=[0.5], widths=[64], seeds=list(range(seeds)), times=[0.0, 1.0],
            dtype="float64", train=(x_train, np.eye(2)[np.arange(8) % 2]), seed_chunk=seeds,
            extra_dims={"alpha": alphas},
        )  # fmt: skip
        for ai, a in enumerate(alphas):
            test, train, loss = by_alpha[a]
            z = rng.normal(size=seeds)
            z = (z - z.mean()) / z.std(ddof=1)
            start = np.full(seeds, 0.5)
            pred = np.zeros((seeds, 2, 5, 2))
            if (name, a) in diverge:
                pred[0, 1] = np.nan
            store.write_records(
                (0, 0, slice(0, seeds), ai), [0, 1], pred, [0, 64],
                scalars={"accuracy": np.stack([start, test + 0.02 * z], 1),
                         "train_accuracy": np.stack([start, np.full(seeds, train)], 1),
                         "train_loss": np.stack([np.full(seeds, 2.0), np.full(seeds, loss)], 1)},
            )  # fmt: skip
        out[name] = store.path
    return out


def rates_store(
    path, *, accuracy, edge: dict, widths=(32,), gammas=(0.5, 0.75, 1.0), alphas=(1.0, 2.0, 4.0), seeds=8,
    plateaued: bool = True,
):  # fmt: skip
    """A (gamma, alpha) map of the rates study: runs at alpha <= ``edge[gamma]`` end at test accuracy
    ``accuracy(gamma, alpha)`` (standardized seed noise, sd 0.005), their training accuracy plateaued over the last
    half of training (``plateaued=False``: still rising by 0.1 an epoch); above the edge one seed diverges
    (non-finite outputs at the last record)."""
    import json

    rng = np.random.default_rng(11)
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    grid = EvalGrid(rng.normal(size=(6, 3)), np.eye(2)[np.arange(6) % 2])
    config = {"model": {"init": "paper", "bias": True}, "data": {"name": "digits"}, "optimizer": {}}
    store = EnsembleStore.create(
        path, grid, gammas=list(gammas), widths=list(widths), seeds=list(range(seeds)), times=times,
        time_units="epoch", dtype="float64", seed_chunk=seeds, config=json.dumps(config),
        extra_dims={"alpha": list(alphas)},
    )  # fmt: skip
    train = np.broadcast_to([0.5, 0.9, 0.99, 0.99, 0.99] if plateaued else [0.5, 0.6, 0.7, 0.8, 0.9], (seeds, 5))
    for wi, _ in enumerate(widths):
        for gi, g in enumerate(gammas):
            for ai, a in enumerate(alphas):
                z = rng.normal(size=seeds)
                z = (z - z.mean()) / z.std(ddof=1)
                acc = np.linspace(0.5, 1.0, 5)[None, :] * 0 + accuracy(g, a) + 0.005 * z[:, None]
                acc[:, 0] = 0.5
                pred = rng.normal(size=(seeds, 5, 6, 2))
                if a > edge[g]:
                    pred[0, -1] = np.nan
                store.write_records(
                    (gi, wi, slice(0, seeds), ai), list(range(5)), pred, [0, 10, 20, 30, 40],
                    scalars={"accuracy": acc, "train_accuracy": train},
                )  # fmt: skip
    return store.path


def deep_search_store(path, *, cases: dict[float, dict[float, dict]], g1=0.5, g2=1.0, seeds: int = 8):
    """A deep x2-search store of one (gamma_1, gamma_2) over gamma_3 and alpha, with layer diagnostics:
    ``cases[g3][alpha]`` gives the final test ``acc`` (seed noise sd 0.005) and the diagnostics at both records
    (``saturation``: 3 layers, ``spread``: 3 layers and the output, ``ratio``: W1, W2, W3, C), ``diverged``: how
    many seeds diverge at the last record."""
    import json

    from ensemble_stats import schema

    g3s = sorted(cases)
    alphas = sorted(next(iter(cases.values())))
    config = {
        "model": {"inner_gammas": [g1, g2], "inner_widths": [32, 32]},
        "optimizer": {"alpha": 1.0, "layer_alpha": {"W1": 100.0, "W2": 1.0, "W3": 0.01}},
    }
    rng = np.random.default_rng(5)
    grid = EvalGrid(rng.normal(size=(10, 4)), np.eye(10)[np.arange(10)])
    store = EnsembleStore.create(
        path, grid, gammas=g3s, widths=[100], seeds=list(range(seeds)), times=[0.0, 1.0], dtype="float64",
        seed_chunk=seeds, config=json.dumps(config), extra_dims={"alpha": alphas},
        metrics=schema.layer_diagnostic_metrics(3),
    )  # fmt: skip
    for gi, g3 in enumerate(g3s):
        for ai, a in enumerate(alphas):
            c = cases[g3][a]
            acc = c["acc"] + 0.005 * rng.normal(size=seeds)
            pred = rng.normal(size=(seeds, 2, 10, 10))
            pred[: c.get("diverged", 0), 1] = np.nan
            sc = {"accuracy": np.stack([np.full(seeds, 0.1), acc], 1)}
            for i, v in enumerate(c["saturation"]):
                sc[f"saturation_{i + 1}"] = np.full((seeds, 2), v)
            for i, v in enumerate(c["spread"]):
                sc[f"spread_{i + 1}" if i < 3 else "spread_out"] = np.full((seeds, 2), v)
            for w, v in zip(("w1", "w2", "w3", "c"), c["ratio"], strict=True):
                sc[f"update_ratio_{w}"] = np.full((seeds, 2), v)
                sc[f"grad_norm_{w}"] = np.full((seeds, 2), 1.0)
            store.write_records((gi, 0, slice(0, seeds), ai), [0, 1], pred, [0, 100], scalars=sc)
    return store.path
