"""The ensemble-stats CLI: fit / decompose write results, print tables, and fail in one clear line."""

from __future__ import annotations

import numpy as np
import xarray as xr
from click.testing import CliRunner

import ensemble_stats as es
from ensemble_stats.cli import main
from ensemble_stats.testing import synthetic_ensemble

from .conftest import store_from_synthetic


def test_fit_and_decompose_on_a_real_store(tmp_path):
    ds = synthetic_ensemble(gammas=[0.5, 0.75, 1.0], widths=[64, 256, 1024], n_seeds=16, n_points=5, seed=21)
    store = store_from_synthetic(tmp_path / "s.zarr", ds)
    runner = CliRunner()
    r = runner.invoke(main, ["fit", str(store.path), "--out", str(tmp_path / "fit.nc"), "--quantity", "variance"])
    assert r.exit_code == 0, r.output
    rate = es.fit_rate(es.open_ensemble(store.path)).isel(time=-1)
    assert "slope of log variance vs log N" in r.output  # es.rate_table, one row per gamma
    assert "fit of the variance" in r.output  # es.expansion_table before it
    rate_lines = r.output.split("slope of log variance vs log N")[1].splitlines()
    for g in (0.5, 0.75, 1.0):
        row = [ln.split() for ln in rate_lines if ln.split()[:1] == [f"{g:g}"]]
        assert len(row) == 1 and float(row[0][1]) == round(float(rate.slope.sel(gamma=g)), 3), (g, r.output)
    got = xr.open_dataset(tmp_path / "fit.nc")
    want = es.fit_expansion(es.open_ensemble(store.path), quantity="variance")
    xr.testing.assert_allclose(got.load().drop_vars(list(got.coords)), want.compute().drop_vars(list(want.coords)))
    got.close()

    r = runner.invoke(main, ["decompose", str(store.path), "--out", str(tmp_path / "bv.zarr")])
    assert r.exit_code == 0, r.output
    bv = xr.open_zarr(tmp_path / "bv.zarr").load()  # consolidated: no warning (pytest turns warnings into errors)
    np.testing.assert_allclose(bv.variance, es.bias_variance(ds).variance, rtol=1e-6)
    assert "1024" in r.output and "bias2" in r.output
    store_id = store.attrs["store_id"]
    for result in (bv, xr.open_dataset(tmp_path / "fit.nc")):  # traceable to the store, as CF readers expect
        assert result.attrs["Conventions"] == "CF-1.10" and "ensemble-stats" in result.attrs["history"]
        assert result.attrs["source_store_ids"] == store_id and str(store.path) == result.attrs["source_stores"]
        result.close()

    r = runner.invoke(
        main, ["fit", str(store.path), "--out", str(tmp_path / "f.zarr"), "--terms", "0,0.25", "--quantity", "mean"]
    )
    assert r.exit_code == 0, r.output
    # the table asked for (issue 31, item 4): the mean's fit, not the variance's rate
    assert "fit of the mean" in r.output and "slope of log variance" not in r.output, r.output
    mean_fit = xr.open_zarr(tmp_path / "f.zarr").load()
    row = next(ln for ln in r.output.splitlines() if ln.split()[:1] == ["0.75"])
    want = float(
        mean_fit.coef.sel(gamma=0.75)
        .isel(time=-1, term=0)
        .where(mean_fit.status.sel(gamma=0.75).isel(time=-1) == 0)
        .median()
    )
    assert f"{want:.4g}," in row, (row, want)
    # the readout law sets the bias term of terms="leading": N^-(2 - 2 gamma) symmetric, N^-(1 - gamma) skewed
    g = ds.gamma.values[ds.gamma.values < 1]  # gamma = 1 has no bias term
    for law, p in (("symmetric", 2 - 2 * g), ("skewed", 1 - g)):
        dest = tmp_path / f"lead-{law}.nc"
        args = ["fit", str(store.path), "--out", str(dest), "--terms", "leading", "--quantity", "mean"]
        r = runner.invoke(main, [*args, "--readout", law])
        assert r.exit_code == 0 and f"readout law {law} from given" in r.output, r.output
        with xr.open_dataset(dest) as lead:
            assert lead.attrs["readout_law"] == law
            np.testing.assert_allclose(lead.exponent.isel(term=1).sel(gamma=g).values, p)


def test_user_errors_are_one_line_without_traceback(tmp_path):
    ds = synthetic_ensemble(widths=[64], n_seeds=4, n_points=3, gammas=[0.5], seed=22)
    store = store_from_synthetic(tmp_path / "one.zarr", ds)
    runner = CliRunner()
    for args, words in (
        (["fit", str(store.path), "--out", str(tmp_path / "x.nc")], "at least 2 widths"),
        (["fit", str(store.path), "--out", str(tmp_path / "x.txt")], None),
        (["fit", str(store.path), "--out", str(tmp_path / "x.nc"), "--terms", "a,b"], "--terms"),
        (["decompose", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "y.nc")], "not an ensemble store"),
    ):
        r = runner.invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
        if words:
            assert words in r.output
    r = runner.invoke(main, ["--debug", "decompose", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "y.nc")])
    assert "Traceback" in r.output


def test_a_fit_that_cannot_fit_any_cell_says_why_and_writes_nothing(tmp_path):
    """Issue 31, item 4: the free mean law (2 terms and the exponent) on 3 widths exited 0 with "0 of 30 cells
    fitted" and no reason."""
    ds = synthetic_ensemble(gammas=[0.5, 1.0], widths=[64, 128, 256], n_seeds=8, n_points=5, seed=1)
    store = store_from_synthetic(tmp_path / "s.zarr", ds)
    out = tmp_path / "f.nc"
    r = CliRunner().invoke(main, ["fit", str(store.path), "--out", str(out), "--quantity", "mean", "--terms", "free"])
    assert r.exit_code == 2 and r.output.startswith("error: fit_expansion(mean, terms=free) fitted none"), r.output
    assert "no_residual_dof: 30" in r.output and "add a width" in r.output and not out.exists()
    r = CliRunner().invoke(
        main, ["fit", str(store.path), "--out", str(out), "--quantity", "variance", "--terms", "free"]
    )
    assert r.exit_code == 0 and out.exists(), r.output


def test_json_output_for_scripts(tmp_path):
    """Issue 31, item 6: info, fit and decompose print one JSON object with --json; its numbers are the API's."""
    import json

    ds = synthetic_ensemble(gammas=[0.5, 1.0], widths=[64, 256, 1024], n_seeds=8, n_points=4, seed=5, diverged_runs=1)
    store = store_from_synthetic(tmp_path / "s.zarr", ds)
    runner = CliRunner()
    r = runner.invoke(main, ["info", str(store.path), "--json", "--verify"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    opened = es.open_ensemble(store.path)
    assert info == json.loads(json.dumps(es.store_summary(opened))) | {"problems": []}
    assert info["dims"]["seed"] == 8 and len(info["diverged"]) == 1 and set(info["completeness"]) == {"0.5", "1"}

    r = runner.invoke(main, ["fit", str(store.path), "--out", str(tmp_path / "f.nc"), "--json"])
    assert r.exit_code == 0, r.output
    fit = json.loads(r.output)
    rate = es.fit_rate(opened)
    assert fit["quantity"] == "variance" and fit["cells_fitted"] <= fit["cells"] == 2 * 3 * 4
    assert len(fit["rate"]) == rate.slope.size
    one = next(x for x in fit["rate"] if x["gamma"] == 1.0 and x["time"] == float(rate.time[-1]))
    np.testing.assert_allclose(one["slope"], float(rate.slope.sel(gamma=1.0).isel(time=-1)), rtol=1e-9)

    r = runner.invoke(main, ["decompose", str(store.path), "--out", str(tmp_path / "bv.nc"), "--json"])
    assert r.exit_code == 0, r.output
    bv = json.loads(r.output)
    want = es.bias_variance(opened).isel(time=-1)
    assert len(bv["rows"]) == 2 * 3
    row = next(x for x in bv["rows"] if x["gamma"] == 0.5 and x["width"] == 256)
    np.testing.assert_allclose(row["variance"], float(want.variance.sel(gamma=0.5, width=256)), rtol=1e-9)


def test_api_results_carry_their_stores_provenance_when_saved(tmp_path):
    """Issue 31, item 3: a result the API computed from a store, saved by the user, names the store it came from."""
    ds = synthetic_ensemble(gammas=[0.75], widths=[64, 256, 1024], n_seeds=8, n_points=3, seed=2)
    store = store_from_synthetic(tmp_path / "s.zarr", ds)
    opened = es.open_ensemble(store.path)
    for name, res in (
        ("bias_variance", es.bias_variance(opened)),
        ("fit_rate", es.fit_rate(opened)),
        ("fit_expansion", es.fit_expansion(opened, quantity="mean")),
        ("seed_mean", es.seed_mean(opened)),
    ):
        res.to_netcdf(tmp_path / f"{name}.nc")
        with xr.open_dataset(tmp_path / f"{name}.nc") as back:
            assert back.attrs["source_store_ids"] == store.attrs["store_id"], name
            assert back.attrs["source_stores"] == str(store.path) and back.attrs["Conventions"] == "CF-1.10"
            assert f"ensemble-stats {es.__version__}: {name}" in back.attrs["history"]
    assert "source_stores" not in es.bias_variance(ds).attrs  # in-memory data has no store to name
