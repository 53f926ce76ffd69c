"""The vectorised trainer: exactness against torch.optim.SGD, the t = k/N convention, divergence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import BlockCollector, EnsembleStore, ScaledMLP, TrainConfig, digits, teacher, train_block
from ensemble_stats import errors

from ._models import sgd_in_block_order


def _single(data, width, gamma, seed, cfg: TrainConfig, steps, data_seed, on_train=False):
    """The same member trained alone (ScaledMLP + torch.optim.SGD, the data order of the block): its outputs on
    the grid, or on the training set with ``on_train``."""
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    m = ScaledMLP(
        data.d_in,
        (*cfg.inner_widths, width),
        (*cfg.inner_gammas, gamma),
        data.output_size,
        activation=cfg.activation,
        bias=cfg.bias,
        init=cfg.init,
        seed=seed,
        dtype=dtype,
    )
    opt = torch.optim.SGD(m.param_groups(alpha=cfg.alpha, layer_alpha=dict(cfg.layer_alpha)))
    # lambda (1/N) sum_i c_i^2 (docs/theory.md §4)
    decay = (
        (lambda mm: cfg.output_weight_decay * (mm.params["C"] ** 2).sum() / width) if cfg.output_weight_decay else None
    )
    sgd_in_block_order(m, opt, data, cfg, steps, data_seed, dtype, decay)
    x = torch.tensor(data.x_train, dtype=dtype)
    with torch.no_grad():
        return m(x if on_train else torch.tensor(data.grid.x, dtype=dtype)).numpy()


@pytest.mark.parametrize(
    "case",
    [
        dict(data="teacher", cfg=dict()),
        dict(
            data="teacher",
            cfg=dict(
                batch_size=7,
                inner_widths=(12, 12),
                inner_gammas=(0.7, 0.7),
                bias=True,
                activation="erf",
                output_weight_decay=0.05,
            ),
        ),
        dict(
            data="digits", cfg=dict(loss="cross_entropy", batch_size=16, init="paper", activation="sigmoid", bias=True)
        ),
        dict(data="teacher", cfg=dict(batch_size=8, bias=True, activation="tanh", output_weight_decay=0.05)),
        dict(data="teacher", cfg=dict(batch_size=8, bias=True, activation="relu")),
        dict(
            data="digits",
            cfg=dict(
                loss="cross_entropy",
                batch_size=16,
                inner_widths=(12,),
                inner_gammas=(0.6,),
                activation="relu",
                bias=True,
            ),
        ),
        dict(data="teacher", cfg=dict(batch_size=8, bias=True, activation="erf")),
        dict(data="teacher", cfg=dict(batch_size=8, bias=True, layer_alpha={"W1": 0.25, "C": 3.0})),
        dict(data="teacher", cfg=dict(inner_widths=(12,), inner_gammas=(0.6,), layer_alpha={"W2": 4.0})),
    ],
    ids=[
        "full-batch",
        "sgd-deep-bias",
        "digits-ce-paper",
        "tanh-bias-decay",
        "relu-bias",
        "deep-relu-ce",
        "erf-bias",
        "layer-alpha-shallow",
        "layer-alpha-deep",
    ],
)
def test_every_member_equals_plain_sgd_alone_to_1e10_over_200_steps(tmp_path, case):
    torch.set_num_threads(1)
    data = (
        teacher(kind="mlp", d=5, n_train=40, n_test=6, seed=1)
        if case["data"] == "teacher"
        else digits(n_train=64, n_test=20)
    )
    cfg = TrainConfig(dtype="float64", alpha=0.5, **case["cfg"])
    gammas, seeds, width = [0.5, 0.8, 1.0], [0, 3], 16
    store = EnsembleStore.create(
        tmp_path / "s.zarr",
        data.grid,
        gammas=gammas,
        widths=[width],
        seeds=seeds,
        times=[0, 50, 200],
        time_units="step",
        dtype="float64",
    )
    res = train_block(store, data, width=width, gammas=gammas, seeds=seeds, config=cfg, data_seed=5)
    assert res.members == 6 and not res.diverged
    ds = es.open_ensemble(store.path)
    for g in gammas:
        for s in seeds:
            want = _single(data, width, g, s, cfg, 200, 5)
            got = ds.prediction.sel(gamma=g, width=width, seed=s, time=200).values
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert bool(ds.written.all())
    assert np.isfinite(ds.train_loss).all() and np.isfinite(ds.output_weight_norm).all()
    if data.task == "classification":
        assert ((ds.accuracy >= 0) & (ds.accuracy <= 1)).all()
        g, s = gammas[-1], seeds[0]
        train_out = _single(data, width, g, s, cfg, 200, 5, on_train=True)
        want = (train_out.argmax(-1) == data.labels_train).mean()
        assert float(ds.train_accuracy.sel(gamma=g, width=width, seed=s, time=200)) == pytest.approx(want, abs=1e-6)


def test_a_complete_block_is_skipped_and_rerun_is_idempotent(tmp_path):
    data = teacher()
    store = EnsembleStore.create(
        tmp_path / "s.zarr", data.grid, gammas=[0.75], widths=[32], seeds=[0, 1], times=[0.0, 0.5, 1.0]
    )
    cfg = TrainConfig()
    first = train_block(store, data, width=32, gammas=[0.75], seeds=[0, 1], config=cfg)
    before = es.open_ensemble(store.path).prediction.values
    again = train_block(store, data, width=32, gammas=[0.75], seeds=[0, 1], config=cfg)
    assert not first.skipped and again.skipped and again.steps == 0
    # a half-written block is retrained and rewritten to the same values
    store.array("written")[0, 0, 1, 2] = False
    redo = train_block(store, data, width=32, gammas=[0.75], seeds=[0, 1], config=cfg)
    assert not redo.skipped
    np.testing.assert_array_equal(es.open_ensemble(store.path).prediction.values, before)


def _seed_mean_curves(tmp_path, widths, lr_rule):
    data = teacher()
    times = np.linspace(0, 1, 9)
    seeds = list(range(48))
    store = EnsembleStore.create(
        tmp_path / f"{lr_rule}.zarr", data.grid, gammas=[0.75], widths=widths, seeds=seeds, times=times
    )
    for w in widths:
        alpha = 1.0 if lr_rule == "theory" else w ** (2 - 2 * 0.75)  # 'constant': lr = 1 whatever N
        train_block(store, data, width=w, gammas=[0.75], seeds=seeds, config=TrainConfig(alpha=alpha, dtype="float64"))
    m = es.open_ensemble(store.path).prediction.mean("seed").sel(gamma=0.75)
    return {w: float(np.abs(m.sel(width=w) - m.sel(width=widths[-1])).max()) for w in widths[:-1]}


def test_scaled_time_curves_approach_each_other_as_n_grows(tmp_path):
    """With lr = N^(2g-2) and t = k/N, seed-mean curves converge in N; with an N-independent lr they do not."""
    theory = _seed_mean_curves(tmp_path, [32, 128, 512], "theory")
    constant = _seed_mean_curves(tmp_path, [32, 128, 512], "constant")
    assert theory[128] < theory[32], theory
    assert theory[128] < 0.1
    assert constant[32] > 3 * theory[32] and constant[128] > 3 * theory[128], (theory, constant)


def test_a_diverging_member_stops_alone_and_is_recorded(tmp_path):
    data = teacher()
    gammas, seeds, width = [0.5, 1.0], [0, 1], 16
    times = [0, 5, 10, 20, 40]
    # relu with alpha = 200 at N = 16: the gamma = 1 members blow up, the gamma = 1/2 ones do not
    cfg = TrainConfig(alpha=200.0, activation="relu", dtype="float64")
    a = EnsembleStore.create(
        tmp_path / "a.zarr", data.grid, gammas=gammas, widths=[width], seeds=seeds, times=times, time_units="step"
    )
    res = train_block(a, data, width=width, gammas=gammas, seeds=seeds, config=cfg)
    assert {g for g, _ in res.diverged} == {1.0}
    ds = es.open_ensemble(a.path)
    div = es.diverged_runs(ds)
    assert {(r["gamma"], r["seed"]) for r in div} == {(1.0, 0), (1.0, 1)}
    assert all(r["step"] == res.diverged[(r["gamma"], r["seed"])] for r in div)
    assert bool(ds.written.all()), "a diverged run is complete (stored as is), not missing"
    # the healthy members are exactly what they are without the diverging ones
    b = EnsembleStore.create(
        tmp_path / "b.zarr", data.grid, gammas=[0.5], widths=[width], seeds=seeds, times=times, time_units="step"
    )
    train_block(b, data, width=width, gammas=[0.5], seeds=seeds, config=cfg)
    np.testing.assert_array_equal(
        ds.prediction.sel(gamma=0.5).values, es.open_ensemble(b.path).prediction.sel(gamma=0.5).values
    )
    assert int(es.bias_variance(ds).n_seeds.sel(gamma=1.0, width=width, time=40)) == 0


@pytest.mark.parametrize(("window", "graphs"), [(3, False), (64, False), (3, True), (4, True)])
def test_the_gpu_paths_deferred_check_and_step_windows_train_exactly_the_per_step_loop(
    tmp_path, monkeypatch, window, graphs
):
    """On CUDA the fused step's losses are checked once per window of steps (no device sync per step), and full
    windows between records run as one CUDA graph. Forced here on the CPU (the window runs eagerly: the same code
    minus capture), the block must equal the per-step loop: the same first non-finite step of every member
    (inside a window, at its end, or two members in one window at different steps), the same records, the same
    losses handed to the collectors at every step."""
    import collectors._trainer as trainer

    data = teacher()  # 8 training points: batches of 4 divide them, as a window needs
    gammas, seeds, times = [0.5, 1.0], [0, 1, 2], [0, 5, 10, 20, 40]
    # relu at alpha = 200, N = 16, no blow-up rule: members go non-finite at steps 7 and 8, between records
    cfg = TrainConfig(alpha=200.0, activation="relu", dtype="float64", batch_size=4, blowup=None)

    def run(name):
        store = EnsembleStore.create(
            tmp_path / f"{name}.zarr", data.grid, gammas=gammas, widths=[16], seeds=seeds, times=times,
            time_units="step",
        )  # fmt: skip
        log = type("Rec", (Recorder, BlockCollector), {})()
        result = train_block(store, data, width=16, gammas=gammas, seeds=seeds, config=cfg, collectors=[log])
        return result.diverged, es.open_ensemble(store.path).prediction.values, log

    per_step, expected, log = run("per-step")
    assert len(set(per_step.values())) > 1 and not set(per_step.values()) & set(times), per_step
    assert len(per_step) < len(gammas) * len(seeds)  # some members train on
    monkeypatch.setattr(trainer, "_defers_check", lambda dev: True)
    monkeypatch.setattr(trainer, "_captures", lambda dev: graphs)
    monkeypatch.setattr(trainer, "DEFER_WINDOW", window)
    deferred, got, log2 = run("deferred")
    assert deferred == per_step
    np.testing.assert_array_equal(got, expected)  # the diverged members' records read as NaN from their step
    assert [s for s, _ in log2.losses] == [s for s, _ in log.losses] == list(range(1, 41))
    diverged = sorted(c for c in log.calls if c[0] == "diverged")
    assert sorted(c for c in log2.calls if c[0] == "diverged") == diverged
    # every member's losses up to its divergence (after it, a frozen member's losses are not data); to rounding:
    # between a divergence and its window's check the others' losses come from the fused step, not autograd
    first = dict.fromkeys(log.block.members, 40) | {member: k for _, member, k in diverged}
    live = np.arange(40)[:, None] <= np.array([first[m] for m in log.block.members])[None, :]
    losses = [np.stack([lo for _, lo in rec.losses]) for rec in (log2, log)]
    np.testing.assert_allclose(losses[0][live], losses[1][live], rtol=1e-13, atol=0)


@pytest.mark.parametrize("batch_size", [4, None])
def test_step_windows_replay_long_stretches_between_records_exactly(tmp_path, monkeypatch, batch_size):
    """Windows of 16 steps over 200 steps (epochs of 2 batches, reshuffled; or full batch), records every 50:
    the trained block equals the per-step loop bit for bit."""
    import collectors._trainer as trainer

    data = teacher()
    kw = dict(gammas=[0.75], widths=[32], seeds=[0, 1, 2, 3], times=[0, 50, 100, 150, 200], time_units="step")
    cfg = TrainConfig(dtype="float64", batch_size=batch_size, inner_widths=(8,), inner_gammas=(0.5,))

    def run(name):
        store = EnsembleStore.create(tmp_path / f"{name}.zarr", data.grid, **kw)
        train_block(store, data, width=32, gammas=[0.75], seeds=[0, 1, 2, 3], config=cfg)
        return es.open_ensemble(store.path)

    expected = run("per-step")
    calls = []
    monkeypatch.setattr(trainer, "_captures", lambda dev: True)
    monkeypatch.setattr(trainer, "DEFER_WINDOW", 16)
    real = trainer.StepWindow.run
    monkeypatch.setattr(trainer.StepWindow, "run", lambda self, rows: calls.append(rows) or real(self, rows))
    got = run("windows")
    assert len(calls) == 4 * 3  # 50 steps between records: three windows of 16, two single steps
    np.testing.assert_array_equal(got.prediction.values, expected.prediction.values)
    np.testing.assert_array_equal(got.train_loss.values, expected.train_loss.values)


def test_after_a_divergence_the_others_keep_the_fused_step(tmp_path, monkeypatch):
    """Frozen members no longer send the block to autograd: it steps only where a live member's loss turns
    non-finite (that step is taken with the non-finite members left alone), and the survivors equal a block
    trained without the diverging members."""
    import collectors._engines as engines

    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(engines.torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = teacher()
    cfg = TrainConfig(alpha=200.0, activation="relu", dtype="float64", batch_size=4, blowup=None)
    kw = dict(widths=[16], seeds=[0, 1, 2], times=[0, 5, 10, 20, 40], time_units="step")
    mixed = EnsembleStore.create(tmp_path / "m.zarr", data.grid, gammas=[0.5, 1.0], **kw)
    res = train_block(mixed, data, width=16, gammas=[0.5, 1.0], seeds=[0, 1, 2], config=cfg)
    assert res.diverged and len(calls) == len(set(res.diverged.values())) < 40 - min(res.diverged.values())
    alone = EnsembleStore.create(tmp_path / "a.zarr", data.grid, gammas=[0.5], **kw)  # without the gamma = 1 ones
    train_block(alone, data, width=16, gammas=[0.5], seeds=[0, 1, 2], config=cfg)
    m, a = es.open_ensemble(mixed.path), es.open_ensemble(alone.path)
    survivors = [s for s in [0, 1, 2] if (0.5, s) not in res.diverged]
    assert survivors and all((1.0, s) in res.diverged for s in [0, 1, 2])
    for s in survivors:
        np.testing.assert_array_equal(m.prediction.sel(gamma=0.5, seed=s), a.prediction.sel(gamma=0.5, seed=s))


def test_bad_input_fails_before_any_training(tmp_path):
    data = teacher()
    store = EnsembleStore.create(
        tmp_path / "s.zarr", data.grid, gammas=[0.75], widths=[8], seeds=[0], times=[0, 1], time_units="step"
    )
    before = es.open_ensemble(store.path).written.values.copy()
    with pytest.raises(errors.ValidationError, match="cross_entropy"):
        train_block(store, data, width=8, gammas=[0.75], seeds=[0], config=TrainConfig(loss="cross_entropy"))
    with pytest.raises(errors.ValidationError, match="loss 'hinge'"):
        TrainConfig(loss="hinge")
    with pytest.raises(errors.ValidationError, match="inner_gammas"):
        TrainConfig(inner_widths=(8,), inner_gammas=(0.2,))
    with (
        pytest.raises(errors.ValidationError, match="CUDA is not available")
        if not torch.cuda.is_available()
        else pytest.raises(AssertionError)
    ):
        TrainConfig(device="cuda")
        raise AssertionError("cuda available: nothing to check here")
    with pytest.raises(errors.RunNotFoundError, match=r"gamma=0\.9"):
        train_block(store, data, width=8, gammas=[0.9], seeds=[0], config=TrainConfig())
    with pytest.raises(errors.RunNotFoundError, match="width=3"):
        train_block(store, data, width=3, gammas=[0.75], seeds=[0], config=TrainConfig())
    np.testing.assert_array_equal(es.open_ensemble(store.path).written.values, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_block_matches_cpu(tmp_path):
    data = teacher()
    out = {}
    for dev in ("cpu", "cuda"):
        store = EnsembleStore.create(
            tmp_path / f"{dev}.zarr", data.grid, gammas=[0.75], widths=[64], seeds=[0, 1], times=[0, 1], dtype="float64"
        )
        train_block(store, data, width=64, gammas=[0.75], seeds=[0, 1], config=TrainConfig(device=dev, dtype="float64"))
        out[dev] = es.open_ensemble(store.path).prediction.values
    np.testing.assert_allclose(out["cuda"], out["cpu"], atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("batch_size", [4, None])
def test_cuda_graph_windows_match_the_cpu_and_the_uncaptured_steps(tmp_path, monkeypatch, batch_size):
    """256 steps in windows of 64 on CUDA: one warm-up window, one capture, three replays (minibatches of 4,
    reshuffled each epoch; or full batch), equal to the uncaptured steps and to the CPU. (Divergence inside a
    window: the CPU tests above, which run the same window code without the capture.)"""
    import collectors._trainer as trainer

    data = teacher()
    cfg = dict(dtype="float64", batch_size=batch_size, inner_widths=(8,), inner_gammas=(0.5,))
    kw = dict(gammas=[0.5, 1.0], widths=[16], seeds=[0, 1, 2, 3], times=[0, 64, 256], time_units="step")

    def run(name, dev):
        store = EnsembleStore.create(tmp_path / f"{name}.zarr", data.grid, dtype="float64", **kw)
        res = train_block(store, data, width=16, gammas=kw["gammas"], seeds=kw["seeds"],
                          config=TrainConfig(device=dev, **cfg))  # fmt: skip
        return res.diverged, es.open_ensemble(store.path).prediction.values

    cpu = run("cpu", "cpu")
    replays = []
    real = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda g: replays.append(1) or real(g))
    graphs = run("graphs", "cuda")
    assert len(replays) == 3  # steps 0-63 warm up and capture, 64-255 replay (64-step windows)
    monkeypatch.setattr(trainer, "_captures", lambda dev: False)
    steps = run("steps", "cuda")
    assert graphs[0] == steps[0] == cpu[0] == {}
    np.testing.assert_allclose(graphs[1], steps[1], atol=1e-12)
    np.testing.assert_allclose(graphs[1], cpu[1], atol=1e-10)


class Recorder:
    """A user collector that keeps every hook call (a BlockCollector subclass: the hooks it does not define are no-ops)."""

    def __init__(self, fail_at_record: int | None = None):
        self.calls, self.records, self.losses, self.fail_at = [], {}, [], fail_at_record
        self.closed = False

    def on_block_start(self, block):
        self.calls.append("start")
        self.block = block

    def on_train_step(self, step, losses):
        self.losses.append((step, losses.cpu().numpy().copy()))

    def on_record(self, step, outputs, scalars, fields):
        if self.fail_at is not None and len(self.records) == self.fail_at:
            raise RuntimeError("collector failed")
        self.records[step] = (outputs.copy(), {k: v.copy() for k, v in scalars.items()})

    def on_diverged(self, member, step):
        self.calls.append(("diverged", self.block.members[member], step))

    def on_block_end(self, result):
        self.calls.append("end")

    def close(self):
        self.closed = True


@pytest.mark.parametrize("seed_chunk", [1, 2])
def test_a_user_collector_receives_every_hook(tmp_path, seed_chunk):
    from collectors import BlockCollector

    rec_cls = type("Rec", (Recorder, BlockCollector), {})
    data = teacher()
    gammas, seeds, width, times = [0.5, 1.0], [0, 1], 16, [0, 5, 10, 20, 40]
    cfg = TrainConfig(alpha=200.0, activation="relu", dtype="float64")  # the gamma = 1 members blow up
    st = EnsembleStore.create(
        tmp_path / "a.zarr", data.grid, gammas=gammas, widths=[width], seeds=seeds, times=times, time_units="step",
        seed_chunk=seed_chunk,
    )  # fmt: skip
    rec = rec_cls()
    res = train_block(st, data, width=width, gammas=gammas, seeds=seeds, config=cfg, collectors=[rec])
    assert rec.calls[0] == "start" and rec.calls[-1] == "end" and rec.closed
    assert rec.block.members == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    assert sorted((m, k) for _, m, k in [c for c in rec.calls if c[0] == "diverged"]) == sorted(res.diverged.items())
    assert [k for k, _ in rec.losses] == list(range(1, 41))  # after every optimizer step
    ds = es.open_ensemble(st.path, diverged="keep")  # as stored, diverged members included
    assert sorted(rec.records) == times
    for k, (out, scalars) in rec.records.items():  # exactly what the store holds, member by member
        with np.errstate(over="ignore"):  # stored as float32, as the store casts (a blow-up becomes inf)
            out, loss = out.astype(np.float32), scalars["train_loss"].astype(np.float32)
        stored = ds.prediction.sel(time=float(k)).stack(member=("gamma", "seed")).transpose("member", ...)
        np.testing.assert_array_equal(stored.values.squeeze(1), out)
        np.testing.assert_array_equal(
            ds.train_loss.sel(time=float(k)).stack(member=("gamma", "seed")).values.ravel(),
            loss,
        )
    # a collector that fails stops the block, and every collector is still closed (the locks released)
    bad = rec_cls(fail_at_record=2)
    st2 = EnsembleStore.create(
        tmp_path / "b.zarr", data.grid, gammas=gammas, widths=[width], seeds=seeds, times=times, time_units="step",
        seed_chunk=seed_chunk,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="collector failed"):
        train_block(st2, data, width=width, gammas=gammas, seeds=seeds, config=cfg, collectors=[bad])
    assert bad.closed and "end" not in bad.calls
    train_block(st2, data, width=width, gammas=gammas, seeds=seeds, config=cfg)  # the locks were released
    assert bool(es.open_ensemble(st2.path).written.all())


def test_a_finite_blow_up_is_marked_diverged_frozen_and_excluded(tmp_path):
    # gamma = 1 at alpha = 100 on digits: the cross-entropy climbs by many orders of magnitude yet stays finite,
    # so without the blow-up rule these members would enter every statistic as healthy runs
    data = digits()
    times = [0, 10, 20, 40, 80, 160, 320]
    kw = dict(gammas=[1.0], widths=[64], seeds=[0, 1, 2, 3], times=times, time_units="step")
    base = dict(alpha=100.0, activation="relu", loss="cross_entropy", batch_size=32)
    off = EnsembleStore.create(tmp_path / "off.zarr", data.grid, **kw)
    res_off = train_block(
        off, data, width=64, gammas=[1.0], seeds=[0, 1, 2, 3], config=TrainConfig(**base, blowup=None)
    )
    raw = es.open_ensemble(off.path, diverged="keep")
    assert not res_off.diverged and bool(np.isfinite(raw.train_loss).all())  # finite: invisible before
    ratio = (raw.train_loss / raw.train_loss.isel(time=0)).max("time")
    assert float(ratio.min()) > 1e3  # and yet every member blew up

    on = EnsembleStore.create(tmp_path / "on.zarr", data.grid, **kw)
    res = train_block(on, data, width=64, gammas=[1.0], seeds=[0, 1, 2, 3], config=TrainConfig(**base))  # default 10
    assert len(res.diverged) == 4
    kept = es.open_ensemble(on.path, diverged="keep")
    for (g, s), k in res.diverged.items():
        run = kept.sel(gamma=g, width=64, seed=s)
        i = times.index(k)  # flagged at the first record whose training loss exceeds 10 x its initial one
        losses = run.train_loss.values
        assert losses[i] > 10 * losses[0] and np.all(losses[:i] <= 10 * losses[0]), (s, k, losses)
        assert (run.prediction.values[i:] == run.prediction.values[i]).all()  # frozen from then on
        assert int(run.diverged_step) == k
    assert {(r["gamma"], r["seed"]) for r in es.diverged_runs(kept)} == set(res.diverged)
    ds = es.open_ensemble(on.path)  # the default leaves them out of every statistic, and counts them
    bv = es.bias_variance(ds).compute()
    last = bv.isel(time=-1, gamma=0, width=0)
    assert int(last.n_seeds) == 0 and int(last.n_excluded) == 4
    assert TrainConfig(**base).describe()["blowup"].startswith("training loss > 10 x")
    with pytest.raises(errors.ValidationError, match="blowup must be None"):
        TrainConfig(blowup=0.5)


def test_an_output_bound_flags_a_member_whose_outputs_grow(tmp_path):
    data = teacher()
    kw = dict(gammas=[0.5], widths=[16], seeds=[0, 1], times=[0, 5, 10, 20], time_units="step")
    st = EnsembleStore.create(tmp_path / "b.zarr", data.grid, **kw)
    free = train_block(st, data, width=16, gammas=[0.5], seeds=[0, 1], config=TrainConfig(dtype="float64"))
    peak = float(np.abs(es.open_ensemble(st.path).prediction).max())
    assert not free.diverged
    st2 = EnsembleStore.create(tmp_path / "c.zarr", data.grid, **kw)
    res = train_block(
        st2, data, width=16, gammas=[0.5], seeds=[0, 1], config=TrainConfig(dtype="float64", max_output=peak * 0.999)
    )
    assert res.diverged and all(k in (0, 5, 10, 20) for k in res.diverged.values())


def test_layer_alpha_scales_the_named_layers_and_is_refused_for_unknown_layers():
    from collectors import Architecture, learning_rates

    arch = Architecture(3, (8, 16), (0.75, 0.6), 1, "tanh", True)
    base, scaled = learning_rates(arch, 2.0), learning_rates(arch, 2.0, {"W1": 0.1, "C": 5.0})
    for k in base:
        factor = 0.1 if k in ("W1", "b1") else 5.0 if k in ("C", "c0") else 1.0
        assert scaled[k] == pytest.approx(factor * base[k], rel=1e-15), k
    with pytest.raises(
        errors.ValidationError, match=r"'W3' is not a layer of this net; use some of \['W1', 'W2', 'C'\]"
    ):
        learning_rates(arch, 1.0, {"W3": 2.0})
    with pytest.raises(errors.ValidationError, match="positive finite"):
        TrainConfig(layer_alpha={"W1": 0.0})
    assert TrainConfig(layer_alpha={"C": 2, "W1": 0.5}).describe()["layer_alpha"] == {"C": 2, "W1": 0.5}


def test_layer_alpha_in_a_sweep_config_round_trips_and_bad_keys_name_the_table():
    from collectors import SweepSpec

    from .conftest import TINY_SWEEP

    spec = SweepSpec.from_toml(TINY_SWEEP + "[optimizer]\nlayer_alpha = { W1 = 0.5, C = 2.0 }\n")
    assert spec.train.layer_alpha == (("C", 2.0), ("W1", 0.5))
    assert SweepSpec.from_json(spec.to_json()).to_json() == spec.to_json()
    assert "layer_alpha" not in SweepSpec.from_toml(TINY_SWEEP).to_json()  # absent when unused: old configs unchanged
    with pytest.raises(errors.ConfigError, match=r"\[optimizer\].*layer_alpha key 'W9'"):
        SweepSpec.from_toml(TINY_SWEEP + "[optimizer]\nlayer_alpha = { W9 = 0.5 }\n")


def test_records_evaluate_in_chunks_of_points_with_the_same_result(tmp_path, monkeypatch):
    """A block too large to evaluate the training set at once (members x points x width) is evaluated in chunks."""
    import collectors._trainer as trainer

    data = teacher(kind="mlp", d=3, n_train=40, n_test=7)
    out = []
    for limit in (1 << 25, 16):  # 16 elements: as many points per pass as the block's 64 parameters allow, 4
        monkeypatch.setattr(trainer, "EVAL_ELEMENTS", limit)
        st = EnsembleStore.create(
            tmp_path / f"c{limit}.zarr", data.grid, gammas=[0.5], widths=[8], seeds=[0, 1], times=[0, 3],
            time_units="step", dtype="float64",
        )  # fmt: skip
        train_block(st, data, width=8, gammas=[0.5], seeds=[0, 1], config=TrainConfig(dtype="float64", batch_size=5))
        out.append(es.open_ensemble(tmp_path / f"c{limit}.zarr").load())
    np.testing.assert_allclose(out[0].prediction.values, out[1].prediction.values, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(out[0].train_loss.values, out[1].train_loss.values, rtol=1e-13)


def test_every_collector_gets_the_records_fields_through_the_hook_signature(tmp_path):
    """The store writer is one collector among the others: what NTKCollector returns from record_fields reaches
    every collector's on_record as ``fields``, exactly as the store holds it."""
    from collectors import BlockCollector, NTKCollector

    rec_cls = type("Rec", (Recorder, BlockCollector), {})
    fields_seen = {}

    class Fields(BlockCollector):
        def on_record(self, step, outputs, scalars, fields):
            fields_seen[step] = {k: v.copy() for k, v in fields.items()}

    data = teacher()
    st = EnsembleStore.create(
        tmp_path / "f.zarr", data.grid, gammas=[0.5], widths=[16], seeds=[0, 1], times=[0, 2, 4], time_units="step",
        layers=["W1", "C"], dtype="float64",
    )  # fmt: skip
    cfg = TrainConfig(alpha=1.0, dtype="float64")
    train_block(
        st, data, width=16, gammas=[0.5], seeds=[0, 1], config=cfg, collectors=[NTKCollector(), Fields(), rec_cls()]
    )
    stored = es.open_ensemble(st.path).displacement
    assert sorted(fields_seen) == [0, 2, 4]
    for k, f in fields_seen.items():
        assert set(f) == {"displacement"}
        np.testing.assert_array_equal(f["displacement"], stored.sel(time=float(k)).squeeze(["gamma", "width"]).values)
    assert np.all(fields_seen[4]["displacement"] > 0) and np.all(fields_seen[0]["displacement"] == 0)


def test_the_old_collector_name_and_hook_signature_still_work_with_a_deprecation_warning(tmp_path):
    import collectors

    with pytest.warns(DeprecationWarning, match="BlockCollector"):
        old = collectors.Collector
    assert old is collectors.BlockCollector
    with pytest.warns(DeprecationWarning, match=r"on_record\(step, outputs, scalars, fields\)"):

        class Old(collectors.BlockCollector):
            def __init__(self):
                self.steps = []

            def on_record(self, step, outputs, scalars):
                self.steps.append(step)

    data = teacher()
    st = EnsembleStore.create(
        tmp_path / "o.zarr", data.grid, gammas=[0.5], widths=[8], seeds=[0], times=[0, 3], time_units="step"
    )
    c = Old()
    train_block(st, data, width=8, gammas=[0.5], seeds=[0], config=TrainConfig(), collectors=[c])
    assert c.steps == [0, 3]


def test_a_block_writes_each_gammas_seeds_in_one_call_and_equals_member_by_member_writes(tmp_path, monkeypatch):
    """On a store with a chunk per seed, a record of a block is one write per gamma (the fixed cost of a large
    block), holds every run's lock, and stores what writes run by run store, divergence marks included."""
    data = teacher()
    gammas, width, times = [0.5, 1.0], 16, [0, 5, 10, 20, 40]
    cfg = TrainConfig(alpha=200.0, activation="relu", dtype="float64")  # the gamma = 1 members blow up
    calls = []
    real = EnsembleStore.write_records
    monkeypatch.setattr(
        EnsembleStore, "write_records", lambda self, index, *a, **k: calls.append(index) or real(self, index, *a, **k)
    )
    stores = {}
    for name, blocks in {"together": [[0, 1, 2, 3]], "apart": [[0, 2], [1, 3]]}.items():
        st = EnsembleStore.create(
            tmp_path / f"{name}.zarr", data.grid, gammas=gammas, widths=[width], seeds=[0, 1, 2, 3], times=times,
            time_units="step", time_chunk=5,
        )  # fmt: skip
        calls.clear()
        for seeds in blocks:
            probe = _LockProbe(st, gammas, width, seeds)
            train_block(st, data, width=width, gammas=gammas, seeds=seeds, config=cfg, collectors=[probe])
            assert probe.held == [True] * (len(gammas) * len(seeds))  # every run of the block was locked
        if name == "together":  # one call per gamma (a slice of the seeds); apart: seeds 0, 2 are not contiguous
            assert len(calls) == 2 and all(isinstance(i[2], slice) for i in calls), calls
        else:
            assert len(calls) == 8 and not any(isinstance(i[2], slice) for i in calls), calls
        stores[name] = es.open_ensemble(st.path, diverged="keep").load()
    a, b = stores["together"], stores["apart"]
    np.testing.assert_array_equal(a.prediction.values, b.prediction.values)
    np.testing.assert_array_equal(a.diverged_step.values, b.diverged_step.values)
    assert (a.diverged_step.sel(gamma=1.0) >= 0).all() and (a.diverged_step.sel(gamma=0.5) < 0).all()
    st = EnsembleStore.open(tmp_path / "together.zarr")
    for g in gammas:  # and released them all
        for s in range(4):
            st.lock(st.run_index(g, width, s)).acquire().release()


class _LockProbe(BlockCollector):
    """Records, once training starts, whether each run of the block is locked against another writer."""

    def __init__(self, store, gammas, width, seeds):
        self.store, self.runs, self.held = store, [(g, width, s) for g in gammas for s in seeds], []

    def on_train_start(self, model):
        for run in self.runs:
            try:
                self.store.lock(self.store.run_index(*run)).acquire().release()
                self.held.append(False)
            except errors.RunLockedError:
                self.held.append(True)
