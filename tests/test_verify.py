"""Corruption is found: a flipped byte, a truncated chunk, a deleted chunk marked written, stray partial files."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import ensemble_stats as es
from collectors import OutputCollector
from ensemble_stats.cli import main
from ensemble_stats.errors import StoreCorruptionError

from ._models import TableModel
from .conftest import oracle


@pytest.fixture
def full_store(make_store):
    store = make_store(time_chunk=5)
    model = TableModel(7, 2)
    for g in store.spec.gammas:
        for w in store.spec.widths:
            for s in store.spec.seeds:
                with OutputCollector(store, gamma=g, width=w, seed=s) as col:
                    for t in range(5):
                        model.set(oracle(g, w, s, t, 7, 2))
                        col.record(model, t)
    return store


def _chunk(store, idx):
    return store.path / "prediction" / "c" / "/".join(str(i) for i in idx)


def test_sound_store_verifies_clean(full_store):
    assert es.verify_store(full_store.path) == []
    result = CliRunner().invoke(main, ["info", str(full_store.path), "--verify"])
    assert result.exit_code == 0, result.output
    assert "verify: 0 problem(s)" in result.output


def test_flipped_byte_deleted_chunk_truncation_and_partial_file_are_reported(full_store):
    flipped = _chunk(full_store, (0, 0, 0, 0, 0, 0))
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    deleted = _chunk(full_store, (1, 1, 2, 0, 0, 0))
    deleted.unlink()
    truncated = _chunk(full_store, (2, 0, 1, 0, 0, 0))
    truncated.write_bytes(truncated.read_bytes()[:10])
    partial = full_store.path / "prediction" / "c" / "0" / "0" / "0" / "0.partial"
    partial.write_bytes(b"junk")

    problems = es.verify_store(full_store.path)
    found = {(p.kind, p.path) for p in problems}
    assert found == {
        ("corrupt", str(flipped)),
        ("missing", str(deleted)),
        ("corrupt", str(truncated)),
        ("partial", str(partial)),
    }
    with pytest.raises(StoreCorruptionError) as info:
        es.open_ensemble(full_store.path, verify=True)
    assert len(info.value.problems) == 4

    result = CliRunner().invoke(main, ["info", str(full_store.path), "--verify"])
    assert result.exit_code == 1
    for _, path in found:
        assert path in result.output

    # reading a corrupt chunk raises instead of returning wrong numbers
    ds = es.open_ensemble(full_store.path)
    with pytest.raises(ValueError, match="checksum"):
        ds.prediction.sel(gamma=0.5, width=4, seed=0).values  # noqa: B018

    es.verify_store(full_store.path, clean=True)
    assert not partial.exists()


def test_info_reports_completeness_and_diverged(make_store):
    store = make_store()
    model = TableModel(7, 2)
    with OutputCollector(store, gamma=0.5, width=8, seed=0) as col:
        for t in range(5):
            vals = oracle(0.5, 8, 0, t, 7, 2)
            vals[1, 1] = np.nan if t == 4 else vals[1, 1]
            model.set(vals)
            col.record(model, t)
    result = CliRunner().invoke(main, ["info", str(store.path)])
    assert result.exit_code == 0, result.output
    assert "33.3%" in result.output  # 1 of 3 seeds of the (0.5, 8) cell
    assert "diverged runs: 1" in result.output and "gamma=0.5, width=8, seed=0, step=4" in result.output


def test_info_on_a_missing_store_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path / "nope.zarr")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "not an ensemble store" in result.output
    assert "Traceback" not in result.output


def test_an_all_nan_record_chunk_is_written_and_verifies_clean(make_store):
    """A diverged run whose chunk equals the fill value must exist on disk, not only in the commit mark."""
    store = make_store(time_chunk=1)
    model = TableModel(7, 2)
    with OutputCollector(store, gamma=1.0, width=4, seed=0) as col:
        for t in range(5):
            model.set(np.full((7, 2), np.nan, dtype=np.float32))
            col.record(model, t)
    assert es.verify_store(store.path) == []
    assert (store.path / "prediction" / "c" / "2" / "0" / "0" / "4" / "0" / "0").exists()
    ds = es.open_ensemble(store.path)
    assert bool(ds.written.sel(gamma=1.0, width=4, seed=0).all())
    assert es.diverged_runs(ds) == [{"gamma": 1.0, "width": 4, "seed": 0, "step": 0}]
