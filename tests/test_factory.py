"""The module engine: any nn.Module from a factory, vectorised with torch.func, exact against a per-seed loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ensemble_stats as es
from collectors import DataSet, EnsembleStore, EvalGrid, ScaledConvNet, ScaledMLP, TrainConfig, teacher, train_block
from ensemble_stats import errors

from . import _configs
from ._models import sgd_in_block_order

F64 = torch.float64


class BNNet(nn.Module):
    """A user's own model: Linear - [BatchNorm] - tanh - Linear, initialised from its seed."""

    def __init__(self, seed: int, width: int, d_in: int, d_out: int, batchnorm: bool):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(d_in, width), nn.BatchNorm1d(width) if batchnorm else nn.Identity(), nn.Tanh(),
            nn.Linear(width, d_out),
        ).to(F64)  # fmt: skip

    def forward(self, x):
        return self.net(x)


def _rates(m: nn.Module, alpha: float) -> list[dict]:
    fn = getattr(m, "learning_rates", None)
    rates = fn(alpha) if fn else {n: alpha for n, _ in m.named_parameters()}
    return [{"params": [p], "lr": rates[n]} for n, p in m.named_parameters()]


def _loop(factory, data: DataSet, width, gamma, seed, cfg: TrainConfig, steps, data_seed) -> np.ndarray:
    """One member trained alone with torch.optim.SGD in the block's data order; its grid outputs in eval mode."""
    m = factory(seed, width, gamma)
    opt = torch.optim.SGD(_rates(m, cfg.alpha))
    sgd_in_block_order(m, opt, data, cfg, steps, data_seed, F64)
    m.eval()
    with torch.no_grad():
        return m(torch.tensor(data.grid.x, dtype=F64)).numpy()


def _block(tmp_path, data, factory, gammas, seeds, width, cfg, steps, name="s.zarr", data_seed=0):
    st = EnsembleStore.create(
        tmp_path / name, data.grid, gammas=gammas, widths=[width], seeds=seeds, times=[0, steps],
        time_units="step", dtype="float64", seed_chunk=len(seeds),
    )  # fmt: skip
    train_block(
        st, data, width=width, gammas=gammas, seeds=seeds, config=cfg, model_factory=factory, data_seed=data_seed
    )
    return es.open_ensemble(tmp_path / name).load()


def test_factory_scaled_mlp_equals_the_fused_mlp_engine(tmp_path):
    data = teacher(kind="mlp", d=3, n_train=24, n_test=6)
    cfg = TrainConfig(dtype="float64", batch_size=8, alpha=4.0)
    gammas, seeds = [0.5, 0.875], [0, 1, 2]
    ds = _block(tmp_path, data, lambda s, w, g: ScaledMLP(3, w, g, seed=s, dtype=F64), gammas, seeds, 32, cfg, 30)
    st = EnsembleStore.create(
        tmp_path / "mlp.zarr", data.grid, gammas=gammas, widths=[32], seeds=seeds, times=[0, 30],
        time_units="step", dtype="float64", seed_chunk=3,
    )  # fmt: skip
    train_block(st, data, width=32, gammas=gammas, seeds=seeds, config=cfg)
    ref = es.open_ensemble(tmp_path / "mlp.zarr").load()
    np.testing.assert_allclose(ds.prediction.values, ref.prediction.values, rtol=1e-10, atol=1e-12)
    assert not np.allclose(ds.prediction.isel(time=0), ds.prediction.isel(time=-1))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_factory_block_equals_a_per_seed_loop(tmp_path, batchnorm):
    data = teacher(kind="mlp", d=3, n_train=24, n_test=6)
    cfg = TrainConfig(dtype="float64", batch_size=8, alpha=0.3)

    def factory(seed, width, gamma):
        return BNNet(seed, width, 3, 1, batchnorm)

    ds = _block(tmp_path, data, factory, [0.5, 1.0], [0, 1, 2], 16, cfg, 25, data_seed=4)
    for g in (0.5, 1.0):
        for s in (0, 1, 2):
            want = _loop(factory, data, 16, g, s, cfg, 25, data_seed=4)
            got = ds.prediction.sel(gamma=g, seed=s).isel(width=0, time=-1).values
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    moved = np.abs(ds.prediction.isel(time=-1) - ds.prediction.isel(time=0)).max()
    assert float(moved) > 1e-3


def _images(n_train=64, n_test=16, side=8, seed=0) -> DataSet:
    """Two classes of 3 x side x side images: a bright square top-left, or bottom-right, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 2, n)
        x = rng.normal(0, 0.5, (n, 3, side, side))
        h = side // 2
        for i, c in enumerate(labels):
            x[i, :, :h, :h] += 1.0 if c == 0 else 0.0
            x[i, :, h:, h:] += 1.0 if c == 1 else 0.0
        return x.reshape(n, -1), labels

    x, lab = make(n_train)
    xg, labg = make(n_test)
    onehot = np.eye(2)
    return DataSet("squares", x, onehot[lab], EvalGrid(xg, onehot[labg]), labels_train=lab.astype(np.int64))


def _cnn(seed, width, gamma, dropout=0.0):
    return ScaledConvNet(
        width, gamma, in_channels=3, image_size=8, classes=2, channels=4, convs=2, dropout=dropout, seed=seed,
        dtype=F64,
    )  # fmt: skip


def test_scaled_convnet_trains_on_images_and_equals_a_per_seed_loop(tmp_path):
    data = _images()
    cfg = TrainConfig(dtype="float64", batch_size=16, alpha=20.0, loss="cross_entropy")
    ds = _block(tmp_path, data, _cnn, [0.5, 1.0], [0, 1], 16, cfg, 60)
    for g in (0.5, 1.0):
        want = _loop(_cnn, data, 16, g, 1, cfg, 60, data_seed=0)
        np.testing.assert_allclose(
            ds.prediction.sel(gamma=g, seed=1).isel(width=0, time=-1).values, want, rtol=1e-10, atol=1e-12
        )
    acc = ds.train_accuracy.isel(time=-1)
    assert float(acc.min()) > 0.8, acc.values  # learned: chance is 0.5
    assert float(ds.train_loss.isel(time=-1).max()) < float(ds.train_loss.isel(time=0).min())


def test_scaled_convnet_rates_and_dropout(tmp_path):
    m = _cnn(0, 16, 0.75)
    rates = m.learning_rates(2.0)
    assert set(rates) == {n for n, _ in m.named_parameters()}
    assert rates["readout.weight"] == pytest.approx(2.0 * 16 ** (2 * 0.75 - 2))
    assert rates["norms.0.weight"] == rates["convs.0.weight"] == rates["convs.0.bias"]
    data = _images()
    cfg = TrainConfig(dtype="float64", batch_size=16, alpha=20.0, loss="cross_entropy")
    drop = lambda s, w, g: _cnn(s, w, g, dropout=0.5)  # noqa: E731
    state = torch.random.get_rng_state()
    a = _block(tmp_path, data, drop, [0.75], [0, 1], 16, cfg, 10, "a.zarr")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left as it was
    b = _block(tmp_path, data, drop, [0.75], [0, 1], 16, cfg, 10, "b.zarr")
    np.testing.assert_array_equal(a.prediction.values, b.prediction.values)  # seeded by data_seed: reproducible
    with pytest.raises(errors.ValidationError, match="image_size"):
        ScaledConvNet(16, 0.5, image_size=4, convs=8)


def test_factory_refusals(tmp_path):
    data = teacher()
    st = EnsembleStore.create(tmp_path / "r.zarr", data.grid, gammas=[0.5], widths=[8], seeds=[0, 1], times=[0, 1])
    with pytest.raises(errors.ValidationError, match="readout"):
        train_block(
            st, data, width=8, gammas=[0.5], seeds=[0, 1], config=TrainConfig(antithetic=True),
            model_factory=lambda s, w, g: BNNet(s, w, 2, 1, False),
        )  # fmt: skip
    with pytest.raises(errors.ValidationError, match="learning_rates"):
        train_block(
            st, data, width=8, gammas=[0.5], seeds=[0, 1], config=TrainConfig(layer_alpha={"W1": 0.5}),
            model_factory=lambda s, w, g: BNNet(s, w, 2, 1, False).float(),
        )  # fmt: skip
    with pytest.raises(errors.ValidationError, match=r"nn\.Module"):
        train_block(
            st, data, width=8, gammas=[0.5], seeds=[0, 1], config=TrainConfig(), model_factory=lambda s, w, g: 3
        )


def test_batchnorm_scaled_mlp_from_the_config_equals_a_per_seed_loop(tmp_path):
    data = teacher(kind="mlp", d=3, n_train=24, n_test=6)
    cfg = TrainConfig(
        dtype="float64", batch_size=8, alpha=2.0, activation="relu", inner_widths=(12,), inner_gammas=(0.5,),
        batchnorm=True,
    )  # fmt: skip
    ds = _block(tmp_path, data, None, [0.5, 1.0], [0, 1], 16, cfg, 20)

    def factory(seed, width, gamma):
        return ScaledMLP(3, (12, width), (0.5, gamma), activation="relu", seed=seed, dtype=F64, batchnorm=True)

    for g in (0.5, 1.0):
        want = _loop(factory, data, 16, g, 1, cfg, 20, data_seed=0)
        got = ds.prediction.sel(gamma=g, seed=1).isel(width=0, time=-1).values
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert "BatchNorm" in cfg.describe()["normalization"]
    m = factory(0, 16, 0.5)
    groups = {g["name"]: g["lr"] for g in torch.optim.SGD(m.param_groups(alpha=2.0)).param_groups}
    assert groups["norms.1.weight"] == groups["W2"] and groups["norms.0.bias"] == groups["W1"]


def _sweep_factory(seed, width, gamma):
    """Module-level: a sweep's factory must be picklable (it travels to the workers)."""
    return BNNet(seed, width, 2, 1, True)


def test_sweep_cells_train_a_factory(tmp_path):
    from collectors import SweepSpec
    from collectors._sweep import pending_cells, prepare_store, run_cell

    spec = SweepSpec.parse(
        _configs.sweep(
            sweep={"widths": [8, 16], "seeds": 2},
            time={"units": "step", "horizon": 10, "times": [0, 5, 10], "n_times": None},
            data={"options": None},
            optimizer={"alpha": 0.5, "batch_size": 4},
            run={"dtype": "float64"},
        )
    )
    st = prepare_store(spec, tmp_path / "f.zarr", _sweep_factory)
    for cell in pending_cells(st, spec):
        run_cell(str(tmp_path / "f.zarr"), spec.to_json(), "cpu", cell, model_factory=_sweep_factory)
    ds = es.open_ensemble(tmp_path / "f.zarr").load()
    assert "_sweep_factory" in ds.attrs["model"]["architecture"]
    data = spec.load_data()
    want = _loop(_sweep_factory, data, 16, 1.0, 1, spec.train, 10, data_seed=0)
    np.testing.assert_allclose(ds.prediction.sel(gamma=1.0, seed=1, width=16).isel(time=-1).values, want, rtol=1e-10)
    assert not pending_cells(st, spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_module_engine_and_ntk_match_cpu(tmp_path):
    """The module engine (BatchNorm) and the NTK recorder on CUDA give the CPU's numbers."""
    from collectors import NTKCollector

    data = teacher(kind="mlp", d=3, n_train=24, n_test=6)
    out = {}
    for dev in ("cpu", "cuda"):
        st = EnsembleStore.create(
            tmp_path / f"{dev}.zarr", data.grid, gammas=[0.75], widths=[16], seeds=[0, 1], times=[0, 10],
            time_units="step", dtype="float64", ntk_points="all",
        )  # fmt: skip
        cfg = TrainConfig(device=dev, dtype="float64", batch_size=8, batchnorm=True, activation="relu")
        train_block(
            st, data, width=16, gammas=[0.75], seeds=[0, 1], config=cfg, collectors=[NTKCollector(autodiff=True)]
        )
        out[dev] = es.open_ensemble(st.path).load()
    np.testing.assert_allclose(out["cuda"].prediction.values, out["cpu"].prediction.values, atol=1e-10)
    np.testing.assert_allclose(out["cuda"].ntk.values, out["cpu"].ntk.values, rtol=1e-9, atol=1e-12)
