"""The one-pass Triton step (``TrainConfig(step_kernel="onepass")``): on the CPU in Triton's interpreter, against
torch.optim.SGD in float64; on a GPU (make gpu-check) compiled, against the CPU."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import EnsembleStore, SweepSpec, TrainConfig, digits, teacher, train_block
from ensemble_stats import errors

from ._configs import sweep, toml
from .test_trainer import _single

pytest.importorskip("triton")


@pytest.fixture
def interpreter():
    """Triton's interpreter (conftest sets it before Triton is imported): on a GPU machine the compiled kernel is
    tested instead."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the compiled kernel is tested instead of the interpreter")
    assert os.environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET=1 where there is no CUDA"


def _block(tmp_path, name, data, cfg, gammas=(0.5, 1.0), seeds=(0, 3), width=40, times=(0, 20, 60)):
    store = EnsembleStore.create(
        tmp_path / f"{name}.zarr", data.grid, gammas=list(gammas), widths=[width], seeds=list(seeds),
        times=list(times), time_units="step", dtype=cfg.dtype,
    )  # fmt: skip
    res = train_block(store, data, width=width, gammas=list(gammas), seeds=list(seeds), config=cfg, data_seed=5)
    return res, es.open_ensemble(store.path)


@pytest.mark.parametrize(
    "case",
    [
        dict(data="teacher", cfg=dict(batch_size=8, activation="tanh")),
        dict(data="teacher", cfg=dict(activation="sigmoid", output_weight_decay=0.05)),
        dict(data="teacher", cfg=dict(batch_size=10, activation="relu", output_weight_decay=0.05)),
        dict(data="digits", cfg=dict(loss="cross_entropy", batch_size=16, activation="tanh")),
    ],
    ids=["tanh-sgd", "sigmoid-full-batch-decay", "relu-sgd-decay", "digits-ce"],
)
def test_every_member_equals_plain_sgd_alone_to_1e10(tmp_path, case, interpreter):
    """N = 40 (a tile of 32 and a masked one), d = 5 or 64, batch 8, 10, 16 or 40, 1 or 10 outputs; records at
    steps 20 and 60 apply the pending update before reading the weights."""
    data = (
        teacher(kind="mlp", d=5, n_train=40, n_test=6, seed=1)
        if case["data"] == "teacher"
        else digits(n_train=64, n_test=20)
    )
    cfg = TrainConfig(dtype="float64", alpha=0.5, step_kernel="onepass", **case["cfg"])
    res, ds = _block(tmp_path, "s", data, cfg)
    assert not res.diverged
    for g in (0.5, 1.0):
        for s in (0, 3):
            for t in (20, 60):
                want = _single(data, 40, g, s, cfg, t, 5)
                got = ds.prediction.sel(gamma=g, seed=s, time=t).isel(width=0).values
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    _, ds2 = _block(tmp_path, "t", data, TrainConfig(dtype="float64", alpha=0.5, **case["cfg"]))
    np.testing.assert_allclose(ds.train_loss.values, ds2.train_loss.values, rtol=1e-12)
    np.testing.assert_allclose(ds.output_weight_norm.values, ds2.output_weight_norm.values, rtol=1e-12)


def test_a_diverging_member_is_found_at_the_same_step_and_the_others_train_on(tmp_path, interpreter):
    data = teacher()
    cfg = dict(alpha=150.0, activation="relu", dtype="float64", batch_size=4, blowup=None)
    kw = dict(gammas=(0.5, 1.0), seeds=(0, 1, 2), width=16, times=(0, 5, 10, 20, 40))
    ref, want = _block(tmp_path, "torch", data, TrainConfig(**cfg), **kw)
    got, ds = _block(tmp_path, "onepass", data, TrainConfig(step_kernel="onepass", **cfg), **kw)
    assert ref.diverged and len(ref.diverged) < 6
    assert got.diverged == ref.diverged
    np.testing.assert_allclose(ds.prediction.values, want.prediction.values, rtol=1e-10, atol=1e-10, equal_nan=True)


def test_in_step_windows_the_one_pass_step_trains_the_same(tmp_path, monkeypatch, interpreter):
    """Windows of 16 steps (the CUDA path's CUDA graphs, run eagerly here) between records every 50 steps."""
    import collectors._trainer as trainer

    data = teacher()
    cfg = TrainConfig(dtype="float64", batch_size=4, activation="sigmoid", step_kernel="onepass")
    kw = dict(gammas=(0.75,), seeds=(0, 1), width=40, times=(0, 50, 100))
    _, want = _block(tmp_path, "steps", data, cfg, **kw)
    monkeypatch.setattr(trainer, "_captures", lambda dev: True)
    monkeypatch.setattr(trainer, "DEFER_WINDOW", 16)
    _, got = _block(tmp_path, "windows", data, cfg, **kw)
    np.testing.assert_array_equal(got.prediction.values, want.prediction.values)
    np.testing.assert_array_equal(got.train_loss.values, want.train_loss.values)


def test_where_the_one_pass_step_cannot_run_it_is_refused_saying_why(tmp_path, monkeypatch, interpreter):
    for kw, words in [
        (dict(inner_widths=(8,), inner_gammas=(0.5,)), "2 hidden layer(s)"),
        (dict(bias=True), "bias=True"),
        (dict(activation="erf"), "activation 'erf'"),
        (dict(step_kernel="cuda-graph"), "not one of ('torch', 'onepass')"),
    ]:
        with pytest.raises(errors.ValidationError) as e:
            TrainConfig(**{"step_kernel": "onepass", **kw})
        assert words in str(e.value)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(errors.ValidationError, match="Use device='cuda' or step_kernel='torch'"):
        TrainConfig(step_kernel="onepass")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    data = teacher(kind="mlp", d=5, n_train=40, n_test=6, seed=1)
    with pytest.raises(errors.ValidationError, match="40 training points are not a multiple of the batch size 16"):
        _block(tmp_path, "b", data, TrainConfig(step_kernel="onepass", batch_size=16))
    wide = teacher(kind="mlp", d=300, n_train=64, n_test=6, seed=1)
    with pytest.raises(errors.ValidationError, match=r"inputs d = 300, batch 64.*Use step_kernel='torch'"):
        _block(tmp_path, "w", wide, TrainConfig(step_kernel="onepass", batch_size=64))


def test_the_config_records_the_step_kernel_only_where_it_is_not_the_default(tmp_path, interpreter):
    plain = tmp_path / "plain.toml"
    plain.write_text(toml(sweep()))
    one = tmp_path / "one.toml"
    one.write_text(toml(sweep(run={"step_kernel": "onepass"})))
    a, b = SweepSpec.from_toml(plain), SweepSpec.from_toml(one)
    assert "step_kernel" not in a.to_json() and b.train.step_kernel == "onepass"
    assert SweepSpec.from_json(b.to_json()) == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("batch_size", [4, None])
def test_cuda_one_pass_in_graph_windows_matches_the_cpu(tmp_path, batch_size):
    """The compiled kernel on CUDA, 256 steps in windows of 64 replayed as CUDA graphs, records between them."""
    data = teacher()
    kw = dict(gammas=(0.5, 1.0), seeds=(0, 1, 2, 3), width=40, times=(0, 64, 200, 256))
    cfg = dict(dtype="float64", batch_size=batch_size, activation="sigmoid", output_weight_decay=0.01)
    _, cpu = _block(tmp_path, "cpu", data, TrainConfig(**cfg), **kw)
    _, gpu = _block(tmp_path, "gpu", data, TrainConfig(device="cuda", step_kernel="onepass", **cfg), **kw)
    np.testing.assert_allclose(gpu.prediction.values, cpu.prediction.values, atol=1e-10)
    np.testing.assert_allclose(gpu.train_loss.values, cpu.train_loss.values, rtol=1e-10)
