"""The opt-in precision of a float32 block's products (``TrainConfig(precision=...)``, ``[run] precision``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ensemble_stats as es
from collectors import EnsembleStore, SweepSpec, TrainConfig, digits, train_block
from collectors._precision import _cpu_has_bf16
from ensemble_stats import errors

from ._configs import sweep, toml

needs_bf16 = pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no bfloat16 instructions")


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        (dict(precision="fp8"), ["'fp8'", "'bf16'", "'ieee'", "'tf32'"]),
        (dict(precision="bf16", dtype="float64"), ["rounds float32 products", "float64", "dtype='float32'"]),
        (dict(precision="tf32"), ["'tf32' is a cuda mode", "'cpu'", "precision='bf16'"]),
        (dict(precision="bf16", device="cuda"), ["'bf16' is a cpu mode", "precision='tf32'"]),
    ],
)
def test_a_precision_that_cannot_apply_is_refused_saying_what_to_use(kw, words):
    with pytest.raises(errors.ValidationError) as e:
        TrainConfig(**kw)
    for w in words:
        assert w in str(e.value)


def _train(tmp_path, name, collectors=(), **kw):
    data = digits(n_train=256, n_test=50)
    store = EnsembleStore.create(
        tmp_path / f"{name}.zarr", data.grid, gammas=[0.5, 1.0], widths=[128], seeds=[0, 1, 2, 3], times=[0, 60],
        time_units="step", seed_chunk=4,
    )  # fmt: skip
    cfg = TrainConfig(loss="cross_entropy", batch_size=16, **kw)
    train_block(store, data, width=128, gammas=[0.5, 1.0], seeds=[0, 1, 2, 3], config=cfg, collectors=collectors)
    return es.open_ensemble(store).prediction.isel(time=-1).values.astype(np.float64)


def _switches():
    return (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision)


@needs_bf16
def test_bf16_rounds_the_products_close_to_ieee_and_restores_torchs_switches(tmp_path):
    before = _switches()
    ieee = _train(tmp_path, "ieee")
    default_again = _train(tmp_path, "ieee-again", precision="ieee")
    bf16 = _train(tmp_path, "bf16", precision="bf16")
    assert _switches() == before
    np.testing.assert_array_equal(default_again, ieee)  # "ieee" is the default
    rel = np.sqrt(np.mean((bf16 - ieee) ** 2)) / np.sqrt(np.mean(ieee**2))
    # bfloat16 operands carry 8 significant bits (relative rounding 2^-9 = 2e-3): the mode applied, and stays there
    assert 1e-4 < rel < 2e-2, rel


@needs_bf16
def test_ieee_is_exact_float32_even_where_the_process_enabled_bf16(tmp_path):
    ieee = _train(tmp_path, "ieee")
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        again = _train(tmp_path, "again")
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"  # the caller's setting is given back
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = "none"
    np.testing.assert_array_equal(again, ieee)


@needs_bf16
def test_the_switches_are_restored_when_the_block_fails(tmp_path):
    from collectors import BlockCollector

    class Boom(BlockCollector):
        def on_train_step(self, step, losses):
            raise RuntimeError("a collector failed")

    before = _switches()
    with pytest.raises(RuntimeError, match="a collector failed"):
        _train(tmp_path, "boom", collectors=[Boom()], precision="bf16")
    assert _switches() == before


def test_the_config_records_a_reduced_precision_and_keeps_older_configs_canonical(tmp_path):
    plain = SweepSpec.from_toml(_write(tmp_path / "plain.toml", sweep()))
    assert "precision" not in plain.to_json()
    assert plain.train.precision == "ieee"
    if not _cpu_has_bf16():
        return
    spec = SweepSpec.from_toml(_write(tmp_path / "bf16.toml", sweep(run={"precision": "bf16"})))
    assert spec.train.precision == "bf16"
    assert SweepSpec.from_json(spec.to_json()) == spec
    assert spec != plain  # a store written at one precision refuses a run at another
    with pytest.raises(errors.ValidationError, match="'bf16' is a cpu mode"):
        spec.with_device("cuda")


def test_a_config_with_a_bad_precision_names_the_table(tmp_path):
    with pytest.raises(errors.ConfigError) as e:
        SweepSpec.from_toml(_write(tmp_path / "bad.toml", sweep(run={"precision": "half", "dtype": "float64"})))
    assert "[run]" in str(e.value) and "'half'" in str(e.value)


def _write(path, cfg):
    path.write_text(toml(cfg))
    return path
