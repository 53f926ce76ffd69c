"""The trainer's per-layer diagnostics against an independent numpy forward pass and torch's autograd, and their
recording by a sweep (``[record] layer_diagnostics``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import Architecture, ScaledMLP, SweepSpec, TrainConfig, init_params, layer_diagnostics, learning_rates
from collectors._sweep import pending_cells, prepare_store, run_cell
from ensemble_stats import errors, schema

from ._configs import sweep


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _block(members, d_in=5, d_out=3, inner=(6,), width=7, alpha=3.0):
    """Stacked parameters, scales and rates of (gamma, seed) members of a sigmoid net with biases (float64)."""
    archs = [Architecture(d_in, (*inner, width), (0.6, g), d_out, "sigmoid", True) for g, _ in members]
    init = [init_params(a, "paper", s, torch.float64) for a, (_, s) in zip(archs, members, strict=True)]
    params = {k: torch.stack([p[k] for p in init]) for k in init[0]}
    B = len(members)
    scales = [torch.tensor([a.scales()[i] for a in archs], dtype=torch.float64).view(B, 1, 1) for i in range(2)]
    rates = [learning_rates(a, alpha) for a in archs]
    lr = {
        k: torch.tensor([r[k] for r in rates], dtype=torch.float64).view(B, *[1] * (params[k].ndim - 1)) for k in params
    }
    return archs, params, scales, lr, rates


def _numpy_forward(p, arch):
    """Pre-activations of every hidden layer and the outputs of one member, in numpy."""
    s = arch.scales()
    x = p["x"]
    z1 = x @ p["W1"].T + p["b1"]
    z2 = s[0] * (_sigmoid(z1) @ p["W2"].T) + p["b2"]
    out = s[1] * (_sigmoid(z2) @ p["C"].T) + p["c0"]
    return [z1, z2], out


def _spread(z):
    return float(np.mean(z.std(0) / np.sqrt((z**2).mean(0))))


def test_layer_diagnostics_equal_a_numpy_forward_and_autograd_of_each_member():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(40, 5)))
    labels = torch.tensor(rng.integers(0, 3, size=40))
    y = torch.nn.functional.one_hot(labels, 3).double()
    members = [(0.5, 0), (0.75, 1), (1.0, 2)]
    archs, params, scales, lr, rates = _block(members)
    got = layer_diagnostics(params, archs[0], scales, lr, x, y, labels, "cross_entropy")
    assert set(got) == set(schema.layer_diagnostic_metrics(2))
    for b, arch in enumerate(archs):
        p = {k: v[b].numpy() for k, v in params.items()} | {"x": x.numpy()}
        (z1, z2), out = _numpy_forward(p, arch)
        for layer, z in ((1, z1), (2, z2)):
            slope = _sigmoid(z) * (1 - _sigmoid(z))
            assert float(got[f"saturation_{layer}"][b]) == pytest.approx(np.mean(slope < 0.01 * 0.25), abs=1e-12)
            assert float(got[f"spread_{layer}"][b]) == pytest.approx(_spread(z), rel=1e-10)
        assert float(got["spread_out"][b]) == pytest.approx(_spread(out), rel=1e-10)
        # the gradients: torch's autograd through the ordinary nn.Module of this member
        model = ScaledMLP(
            5, (6, 7), (0.6, members[b][0]), d_out=3, activation="sigmoid", bias=True, dtype=torch.float64
        )
        with torch.no_grad():
            for k, v in params.items():
                model.params[k].copy_(v[b])
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        for name in ("W1", "W2", "C"):
            g = float(model.params[name].grad.norm())
            assert float(got[f"grad_norm_{name.lower()}"][b]) == pytest.approx(g, rel=1e-10)
            ratio = rates[b][name] * g / float(params[name][b].norm())
            assert float(got[f"update_ratio_{name.lower()}"][b]) == pytest.approx(ratio, rel=1e-10)
    # the pre-activations of a member with ten times the first-layer weights saturate more
    loud = {**params, "W1": params["W1"] * 10}
    louder = layer_diagnostics(loud, archs[0], scales, lr, x, y, labels, "cross_entropy")
    assert bool((louder["saturation_1"] > got["saturation_1"] + 0.3).all())


def test_a_layer_that_sees_one_input_has_zero_spread_and_relu_counts_units_that_are_off():
    x = torch.randn(30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(30, 1, dtype=torch.float64)
    arch = Architecture(4, (8, 8), (0.5, 0.5), 1, "relu", False)
    p = {k: v[None] for k, v in init_params(arch, "theory", 0, torch.float64).items()}
    zero = {**p, "W1": torch.zeros_like(p["W1"])}  # every input maps to 0: the layers above see one input
    scales = [torch.tensor(a).view(1, 1, 1) for a in arch.scales()]
    got = layer_diagnostics(zero, arch, scales, {k: 1.0 for k in p}, x, y, None, "mse")
    assert float(got["spread_1"][0]) == 0.0 and float(got["spread_2"][0]) == 0.0
    assert float(got["saturation_1"][0]) == 1.0  # relu'(0) = 0 in torch: every unit is off
    live = layer_diagnostics(p, arch, scales, {k: 1.0 for k in p}, x, y, None, "mse")
    z1 = (x @ p["W1"][0].T).numpy()
    assert float(live["saturation_1"][0]) == pytest.approx(np.mean(z1 <= 0), abs=1e-12)


def test_a_sweep_records_the_diagnostics_it_declares(tmp_path):
    cfg = sweep(
        sweep={"gammas": [0.5, 1.0], "widths": [16], "seeds": 2, "seed_block": 2},
        model={"inner_widths": [12], "inner_gammas": [0.5]},
        record={"layer_diagnostics": True},
        run={"dtype": "float64"},
    )
    spec = SweepSpec.from_dict(cfg)
    assert SweepSpec.from_json(spec.to_json()) == spec
    assert "record" not in SweepSpec.from_dict(sweep()).canonical()  # older configs keep their form
    store = prepare_store(spec, tmp_path / "d.zarr")
    for cell in pending_cells(store, spec):
        run_cell(str(tmp_path / "d.zarr"), spec.to_json(), "cpu", cell)
    ds = es.open_ensemble(tmp_path / "d.zarr").load()
    for name, long_name in schema.layer_diagnostic_metrics(2).items():
        assert ds[name].attrs["long_name"] == long_name and bool(np.isfinite(ds[name]).all())
    # the first record is the initial net: the diagnostics of its parameters, measured directly
    data = spec.load_data()
    arch = spec.train.architecture(data.d_in, data.output_size, 16, 1.0)
    p = {k: v[None] for k, v in init_params(arch, "theory", 1, torch.float64).items()}
    scales = [torch.tensor(a).view(1, 1, 1) for a in arch.scales()]
    want = layer_diagnostics(
        p, arch, scales, learning_rates(arch), torch.tensor(data.x_train), torch.tensor(data.y_train), None, "mse"
    )
    first = ds.sel(gamma=1.0, seed=1, width=16).isel(time=0)
    for name, v in want.items():
        assert float(first[name]) == pytest.approx(float(v[0]), rel=1e-5, abs=1e-12), name
    # training moved the weights: the last record's update ratios differ from the first's
    assert float(abs(ds.update_ratio_c.isel(time=-1) - ds.update_ratio_c.isel(time=0)).max()) > 0


def test_diagnostics_of_modules_are_refused_with_the_reason():
    with pytest.raises(errors.ValidationError, match="layer_diagnostics measure ScaledMLP members"):
        TrainConfig(batchnorm=True, layer_diagnostics=True)
    with pytest.raises(errors.ConfigError, match="layer_diagnostics"):
        SweepSpec.from_dict(sweep(model={"batchnorm": True}, record={"layer_diagnostics": True}))
