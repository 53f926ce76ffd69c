"""Selection at a common scaled time, the assessment functions and the plots, against known truth."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import scipy.stats
import xarray as xr

import ensemble_stats as es
from ensemble_stats.errors import ScaledTimeWarning, ValidationError
from ensemble_stats.testing import synthetic_ensemble

SPE = 64  # optimizer steps per epoch of the epoch-indexed store below


def epoch_store(**kw) -> xr.Dataset:
    """A synthetic ensemble indexed by epoch: epoch e is k = 64 e steps, so t = k / N differs per width."""
    ds = synthetic_ensemble(widths=[64, 128, 256], times=np.arange(9.0), n_seeds=8, n_points=6, seed=5, **kw)
    epochs = np.arange(ds.sizes["time"])
    ds = ds.assign_coords(time=epochs.astype(float))
    ds["time"].attrs["units"] = "epoch"
    ds["step"] = (xr.ones_like(ds.step) * xr.DataArray(epochs * SPE, dims="time")).astype(np.int64)
    return ds


def test_common_times_and_the_selection_pick_each_widths_own_record():
    ds = epoch_store()
    # width 64 reaches t = 0..8, width 128 t = 0, 0.5, ..., 4, width 256 t = 0, 0.25, ..., 2: shared 0, 1, 2
    np.testing.assert_array_equal(es.common_times(ds), [0.0, 1.0, 2.0])
    out = es.at_common_time(ds)
    assert out.sizes["time"] == 1 and out.time.item() == 2.0 and out.time.attrs["units"] == "scaled"
    np.testing.assert_array_equal(out.record_time.values, [2.0, 4.0, 8.0])  # the epoch of each width's record
    for w, e in zip((64, 128, 256), (2, 4, 8), strict=True):
        got = out.prediction.sel(width=w).isel(time=0).values
        np.testing.assert_array_equal(got, ds.prediction.sel(width=w, time=float(e)).values)
        assert int(out.step.sel(width=w).max()) == e * SPE
    assert out.prediction.dims == ds.prediction.dims  # the source's dim order
    xr.testing.assert_equal(out.x, ds.x)  # variables without time are untouched
    one = es.at_common_time(ds, 1.0)
    np.testing.assert_array_equal(one.record_time.values, [1.0, 2.0, 4.0])
    with pytest.raises(ValidationError, match=r"t = 1.5 is not a scaled time .* share t = 0, 1, 2"):
        es.at_common_time(ds, 1.5)


def test_unwritten_records_are_not_a_common_time():
    ds = epoch_store()
    ds["step"] = ds.step.where(~((ds.width == 256) & (ds.time == 8.0)), -1)  # width 256 never reached epoch 8
    np.testing.assert_array_equal(es.common_times(ds), [0.0, 1.0])


def test_fit_rate_on_an_epoch_store_warns_or_selects_a_common_time():
    ds = epoch_store()
    with pytest.warns(ScaledTimeWarning, match="at='common'"):
        es.fit_rate(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        common = es.fit_rate(ds, at="common").compute()
        per_record = es.fit_rate(ds, at="record").compute()
        at1 = es.fit_rate(ds, at=1.0).compute()
    xr.testing.assert_allclose(common, es.fit_rate(es.at_common_time(ds)).compute())
    xr.testing.assert_allclose(at1, es.fit_rate(es.at_common_time(ds, 1.0)).compute())
    assert per_record.sizes["time"] == 9 and common.time.item() == 2.0
    with pytest.raises(es.errors.FitError, match="at="):
        es.fit_rate(ds, at="latest")
    with warnings.catch_warnings():  # scaled stores never warn
        warnings.simplefilter("error")
        es.fit_rate(synthetic_ensemble(n_seeds=8, seed=1))


@pytest.mark.parametrize(
    ("cases", "outcome", "text"),
    [
        ([True, True, True], "holds", "holds (3 of 3 cases)"),
        ([False, False], "does not hold", "does not hold (0 of 2 cases)"),
        ([True, False, True], "inconclusive", "inconclusive (2 of 3 cases)"),
        ([True, None], "inconclusive", "inconclusive (1 of 2 cases)"),
        ([], "inconclusive", "inconclusive (0 of 0 cases)"),
        (None, "inconclusive", "inconclusive (0 of 1 cases)"),
        (True, "holds", "holds (1 of 1 cases)"),
        (xr.DataArray([[True, True], [True, np.nan]]), "inconclusive", "inconclusive (3 of 4 cases)"),
    ],
)
def test_verdict_rules(cases, outcome, text):
    v = es.verdict(cases)
    assert v.outcome == outcome and str(v) == text and v.markdown() == f"**{outcome}**"
    assert v.outcome in es.OUTCOMES


def test_covers_reads_the_interval():
    res = xr.Dataset(
        {"slope_lo": ("g", [0.0, 0.0, np.nan]), "slope_hi": ("g", [1.0, 0.4, 1.0]), "theory": ("g", [0.5] * 3)}
    )
    assert es.covers(res).values.tolist() == [True, False, False]
    assert es.covers(res, 0.2).values.tolist() == [True, True, False]


def test_covers_can_leave_cases_without_an_interval_undecided():
    res = xr.Dataset(
        {"slope_lo": ("g", [0.0, 0.0, np.nan]), "slope_hi": ("g", [1.0, 0.4, 1.0]), "theory": ("g", [0.5, 0.5, 0.5])}
    )
    got = es.covers(res, nan="undecided")
    assert got.values.tolist()[:2] == [1.0, 0.0] and np.isnan(got.values[2])
    assert es.verdict(got) == es.verdict([True, False, None])
    res["theory"][0] = np.nan  # no value to compare with is undecided too
    assert np.isnan(es.covers(res, nan="undecided").values[0]) and not bool(es.covers(res).values[0])
    with pytest.raises(ValidationError, match=r"nan='maybe'"):
        es.covers(res, nan="maybe")
    with pytest.raises(ValidationError, match="margin"):
        es.covers(res, margin=-1.0)


def test_covers_with_a_margin_is_an_equivalence_test_at_the_intervals_level():
    """Monte Carlo with a known truth: t intervals of the mean of 10 normal draws (sd 1, interval half-width
    about 0.72), margin 1. A true difference of 0 is declared equivalent in most replicates and different in
    almost none; a true difference of 3 is declared different in most and equivalent in almost none; a true
    difference on the margin's edge is declared equivalent in at most about 2.5% (the one-sided level)."""
    rng = np.random.default_rng(7)
    reps, n = 4000, 10
    t = scipy.stats.t.ppf(0.975, n - 1)
    for delta, lo_eq, hi_eq, lo_diff, hi_diff in ((0.0, 0.6, 1.0, 0.0, 0.001), (3.0, 0.0, 0.001, 0.95, 1.0)):
        x = rng.normal(delta, 1.0, (reps, n))
        m, se = x.mean(1), x.std(1, ddof=1) / np.sqrt(n)
        res = xr.Dataset({"slope_lo": ("rep", m - t * se), "slope_hi": ("rep", m + t * se)})
        got = es.covers(res, 0.0, margin=1.0, nan="undecided").values
        assert lo_eq <= np.mean(got == 1.0) <= hi_eq, (delta, np.mean(got == 1.0))
        assert lo_diff <= np.mean(got == 0.0) <= hi_diff, (delta, np.mean(got == 0.0))
        assert np.array_equal(es.covers(res, 0.0, margin=1.0).values, got == 1.0)  # undecided -> False by default
    x = rng.normal(1.0, 1.0, (reps, n))  # on the edge of the margin
    m, se = x.mean(1), x.std(1, ddof=1) / np.sqrt(n)
    res = xr.Dataset({"slope_lo": ("rep", m - t * se), "slope_hi": ("rep", m + t * se)})
    assert np.mean(es.covers(res, 0.0, margin=1.0).values) <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / reps)


def _paired(rng, reps, seeds, shared_sd, delta):
    z = rng.normal(0, shared_sd, (reps, seeds))  # noise both share (the initial weights)
    a = xr.DataArray(1.0 + delta + z + rng.standard_t(5, (reps, seeds)), dims=("rep", "seed"))
    b = xr.DataArray(1.0 + z + rng.standard_t(5, (reps, seeds)), dims=("rep", "seed"))
    return a, b


def test_paired_difference_covers_the_truth_and_removes_the_shared_noise():
    rng = np.random.default_rng(7)
    a, b = _paired(rng, 2000, 8, shared_sd=5.0, delta=0.3)
    d = es.paired_difference(a, b)
    cover = float(((d.mean_lo <= 0.3) & (0.3 <= d.mean_hi)).mean())
    assert 0.93 <= cover <= 0.97, cover  # Student t on heavy-tailed (t5) pairs, 2000 replicates
    unpaired = es.seed_mean(a).stderr ** 2 + es.seed_mean(b).stderr ** 2
    assert float((d.stderr**2 / unpaired).median()) < 0.1  # the shared noise cancels
    with pytest.raises(ValidationError, match="different seed coordinates"):
        es.paired_difference(a.assign_coords(seed=np.arange(8)), b.assign_coords(seed=np.arange(1, 9)))


def test_ratio_interval_covers_the_true_ratio_of_two_variances():
    truth = []
    for s in (1, 2):
        ds, t = synthetic_ensemble(
            gammas=[0.75], widths=[128], n_seeds=16, n_points=6, replicates=400, seed=10 + s, return_truth=True
        )
        truth.append((es.bias_variance(ds).isel(time=-1).compute(), float(t.variance.isel(time=-1).mean())))
    (a, va), (b, vb) = truth
    r = es.ratio_interval(a, b)
    cover = float(((r.ratio_lo <= va / vb) & (va / vb <= r.ratio_hi)).mean())
    assert 0.92 <= cover <= 0.99, cover
    assert r.ratio.attrs["long_name"] and r.ratio_lo.attrs["long_name"]


def test_trend_finds_rises_drops_and_flat_cases():
    rng = np.random.default_rng(3)
    gammas = [0.5, 0.75, 1.0]
    shared = rng.normal(0, 1, (1, 1, 16))
    means = {"up": [0.2, 0.5, 0.8], "dip": [0.2, 0.9, 0.5], "flat": [0.5, 0.5, 0.5]}
    vals = np.array([m for m in means.values()])[:, :, None] + shared + 0.02 * rng.normal(size=(3, 3, 16))
    a = xr.DataArray(vals, dims=("case", "gamma", "seed"), coords={"case": list(means), "gamma": gammas})
    t = es.trend(a).compute()
    assert t.increasing.values.tolist() == [True, False, False]
    assert t.drops.values.tolist() == [0, 1, 0]
    np.testing.assert_allclose(t.rise.values, [0.6, 0.3, 0.0], atol=0.05)
    assert float(t.spearman.sel(case="up")) == 1.0
    with pytest.raises(ValidationError, match="at least 2 values"):
        es.trend(a.isel(gamma=[0]))


def _saturating(tau, times, n_seeds=64, noise=0.002, seed=0, dims=("case", "seed", "time")):
    """1 - exp(-t / tau) per case, with seed noise shared over time (a seed's offset) and per record."""
    rng = np.random.default_rng(seed)
    tau = np.asarray(tau, dtype=float)[:, None, None]
    y = 1 - np.exp(-times[None, None, :] / tau)
    y = (
        y
        + 0.01 * rng.normal(size=(tau.shape[0], n_seeds, 1))
        + noise * rng.normal(size=(tau.shape[0], n_seeds, times.size))
    )
    return xr.DataArray(y, dims=dims, coords={"case": np.arange(tau.shape[0]), "time": times})


def test_plateau_finds_the_time_a_saturating_curve_settles_and_refuses_a_rising_one():
    times = np.arange(0.0, 101.0, 2.0)
    tol, taus = 0.01, [5.0, 10.0, 15.0]
    a = _saturating(taus, times)
    p = es.plateau(a, tol=tol).compute()
    assert p.reached.values.all()
    for tau, t_star in zip(taus, p.plateau_time.values, strict=True):
        # the remaining change exp(-t/tau) - exp(-T/tau) first falls below tol at t_true; noise moves it a record or two
        t_true = -tau * np.log(tol + np.exp(-times[-1] / tau))
        assert abs(t_star - t_true) <= 2 * 2.0 + 1e-9, (tau, t_star, t_true)
    np.testing.assert_allclose(p.value.values, a.mean("seed").sel(time=p.plateau_time.values).values.diagonal())
    assert (p.gain_hi <= tol).all() and (p.gain_lo >= -tol).all()
    lazy = es.plateau(a.chunk({"case": 1}), tol=tol)
    assert lazy.plateau_time.chunks is not None  # dask-backed in, dask-backed out
    xr.testing.assert_allclose(lazy.compute(), p)
    # a curve that keeps rising (tau far beyond the horizon) is flat only at its last record: not reached
    slow = es.plateau(_saturating([400.0], times), tol=tol).compute()
    assert not bool(slow.reached[0]) and np.isnan(float(slow.plateau_time[0])) and np.isnan(float(slow.value[0]))
    # a loose tolerance calls the same slow curve flat early; window = 0 accepts a plateau of one record
    assert float(es.plateau(_saturating([400.0], times), tol=0.5).plateau_time[0]) == 0.0
    # every seed saturating at exactly 1 (a training accuracy of 100%): no spread, yet flat
    full = xr.DataArray(np.minimum(1.0, times / 40 + np.zeros((1, 6, 1))), dims=("case", "seed", "time"))
    assert float(es.plateau(full.assign_coords(time=times), tol=tol).plateau_time[0]) == 40.0
    last = es.plateau(_saturating([400.0], times), tol=tol, window=0.0)
    assert bool(last.reached[0]) and float(last.plateau_time[0]) >= 0.9 * times[-1]


def test_plateau_rarely_calls_a_curve_flat_before_it_is_with_few_seeds_and_heavy_tails():
    # 400 replicates of 8 seeds: a saturating curve plus a per-seed offset and Student-t(3) record noise. The rule
    # (a paired interval of the change still to come inside [-tol, tol] at every later record) should declare
    # the plateau before the true time (the remaining change of the mean above tol) in at most ~5% of replicates.
    rng = np.random.default_rng(11)
    times, tau, tol, reps, seeds = np.arange(0.0, 61.0, 2.0), 8.0, 0.02, 400, 8
    mean = 1 - np.exp(-times / tau)
    y = mean + 0.03 * rng.normal(size=(reps, seeds, 1)) + 0.004 * rng.standard_t(3, size=(reps, seeds, times.size))
    a = xr.DataArray(y, dims=("case", "seed", "time"), coords={"time": times})
    p = es.plateau(a, tol=tol).compute()
    t_true = times[np.argmax(mean[-1] - mean <= tol)]
    early = float((p.plateau_time < t_true).mean())
    assert early <= 0.05, early
    assert float(p.reached.mean()) > 0.8  # and the rule is not so strict that it never decides
    assert float(p.plateau_time.median()) <= t_true + 3 * 2.0


def test_plateau_matches_a_loop_over_t_intervals_and_reports_every_bad_argument():
    from scipy import stats

    times = np.arange(0.0, 41.0, 4.0)
    a = _saturating([8.0, 30.0], times, n_seeds=12, noise=0.01, seed=4)
    p = es.plateau(a, tol=0.02).compute()
    for c in range(2):
        y = a.isel(case=c).values
        flat = []
        for k in range(times.size):
            d = y[:, -1] - y[:, k]
            half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size) if d.any() else 0.0
            flat.append(-0.02 <= d.mean() - half and d.mean() + half <= 0.02)
        first = next(k for k in range(times.size) if all(flat[k:]))
        expected = times[first] if times[first] <= 0.8 * times[-1] else np.nan
        np.testing.assert_equal(float(p.plateau_time[c]), expected)
    with pytest.raises(ValidationError) as e:
        es.plateau(a.isel(seed=0), tol=-1, window=1.5)
    assert "'seed'" in str(e.value) and "tol = -1" in str(e.value) and "window = 1.5" in str(e.value)


def test_anova_effects_against_the_sums_of_squares_of_a_balanced_design():
    import pandas as pd

    rng = np.random.default_rng(0)
    f1, f2, _ = np.meshgrid([0, 1, 2], [0, 1], np.arange(10), indexing="ij")
    y = 2.0 * f1 + 0.0 * f2 + rng.normal(size=f1.shape)
    frame = pd.DataFrame({"y": y.ravel(), "f1": f1.ravel(), "f2": f2.ravel()})
    e = es.anova_effects(frame, "y", ["f1", "f2"])
    grand = frame.y.mean()
    ss1 = sum(len(g) * (g.y.mean() - grand) ** 2 for _, g in frame.groupby("f1"))
    ss2 = sum(len(g) * (g.y.mean() - grand) ** 2 for _, g in frame.groupby("f2"))
    resid = (
        (frame.y - frame.groupby("f1").y.transform("mean") - frame.groupby("f2").y.transform("mean") + grand) ** 2
    ).sum()
    assert e["f1"] == pytest.approx(ss1 / (ss1 + resid), rel=1e-9)
    assert e["f2"] == pytest.approx(ss2 / (ss2 + resid), rel=1e-9)
    assert e["p_f1"] < 1e-10 and e["p_f2"] > 0.01


def test_rate_table_in_every_format():
    rate = es.fit_rate(synthetic_ensemble(n_seeds=16, seed=2)).compute()
    last = rate.isel(time=-1)
    text = es.rate_table(rate)
    for g in rate.gamma.values:
        row = next(ln.split() for ln in text.splitlines() if ln.split()[:1] == [f"{g:g}"])
        assert float(row[1]) == round(float(last.slope.sel(gamma=g)), 3)
        assert row[-1] == ("yes" if bool(es.covers(last.sel(gamma=g))) else "no")
    md = es.rate_table(rate, fmt="markdown")
    assert md.splitlines()[0].startswith("| gamma | slope |") and md.count("\n") == 1 + rate.sizes["gamma"]
    html = es.format_table(["a<b"], [["<script>"]], "html", caption="x & y")
    assert "<script>" not in html and "&lt;script&gt;" in html and "x &amp; y" in html
    with pytest.raises(ValidationError, match="reduce the dims"):
        es.rate_table(rate.expand_dims(data_seed=[0, 1]))
    with pytest.raises(ValidationError, match="fmt="):
        es.format_table(["a"], [], "latex")


def test_compare_to_theory_needs_a_training_set():
    ds = synthetic_ensemble(n_seeds=4, seed=3)
    with pytest.raises(ValidationError, match="x_train"):
        es.compare_to_theory(ds)
    assert "no training set in the store" in es.kernel_limit_problems(ds.assign_attrs(model={}))


def test_accessor_methods_have_the_functions_signatures():
    from ensemble_stats import plot

    ds = synthetic_ensemble(n_seeds=4, seed=3)
    for name in (
        "bias_variance",
        "seed_mean",
        "variance_components",
        "kernel_drift",
        "fit_expansion",
        "fit_rate",
        "at_common_time",
        "compare_to_theory",
        "report",
        "scaled_time",
        "sweep_config",
        "learning_rate_regimes",
    ):
        want = list(inspect.signature(getattr(es, name)).parameters.values())[1:]
        got = list(inspect.signature(getattr(ds.ens, name)).parameters.values())
        assert got == want, name
    for name in ("curves", "completeness", "collapse", "bias_variance", "variance_vs_width", "kernel_drift"):
        fn = getattr(plot, name)
        kw = [p for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
        got = [p for p in inspect.signature(getattr(ds.ens.plot, name)).parameters.values() if p.kind == p.KEYWORD_ONLY]
        assert got == kw, name


def test_gamma_alpha_map_draws_a_panel_per_width_and_leaves_missing_cells_blank():
    import matplotlib.pyplot as plt

    from ensemble_stats import plot

    vals = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4) / 100
    vals[1, 2, 3] = np.nan  # a diverged or unplateaued cell
    da = xr.DataArray(
        vals,
        dims=("width", "gamma", "alpha"),
        coords={"width": [100, 400], "gamma": [0.5, 0.75, 1.0], "alpha": [1.0, 10.0, 100.0, 1000.0]},
        attrs={"long_name": "test accuracy"},
    )
    try:
        fig = plot.gamma_alpha_map(da)
        panels = [a for a in fig.axes if a.get_title()]
        assert [a.get_title() for a in panels] == ["N = 100", "N = 400"] and len(fig.axes) == 3  # and a colour bar
        assert [t.get_text() for t in panels[0].get_xticklabels()] == ["1", "10", "100", "1000"]
        assert [t.get_text() for t in panels[0].get_yticklabels()] == ["0.5", "0.75", "1"]
        cells = {(t.get_position(), t.get_text()) for t in panels[1].texts}
        assert len(panels[1].texts) == 11 and ((3, 2), "nan") not in cells  # 12 cells, the NaN one blank
        assert ((0, 0), f"{vals[1, 0, 0]:.2f}") in cells and ((3, 1), f"{vals[1, 1, 3]:.2f}") in cells
        assert fig.axes[-1].get_ylabel() == "test accuracy"
        fig = plot.gamma_alpha_map(da.sel(width=100) + 1e-3, log=True, fmt=".1e")
        assert fig.axes[-1].get_ylabel() == "log10 test accuracy"
        with pytest.raises(ValidationError, match=r"select or reduce \['seed'\]"):
            plot.gamma_alpha_map(da.expand_dims(seed=[0, 1]))
        with pytest.raises(ValidationError, match="needs \\(gamma, alpha\\)"):
            plot.gamma_alpha_map(da.sel(alpha=1.0))
    finally:
        plt.close("all")


def test_plots_return_figures_with_the_expected_axes():
    import matplotlib.pyplot as plt

    from ensemble_stats import plot

    ds = synthetic_ensemble(gammas=[0.5, 1.0], widths=[64, 128, 256, 512, 1024, 2048, 4096, 8192], n_seeds=6, seed=4)
    ds["test_loss"] = (ds.prediction - ds.target).pipe(lambda e: (e**2).mean(["point", "output"]))
    bv, rate = es.bias_variance(ds).compute(), es.fit_rate(ds).compute()
    try:
        fig = ds.ens.plot.variance_vs_width()
        (ax,) = fig.axes
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [str(w) for w in ds.width.values]  # one plain label per width, none overlapping
        assert len(ax.xaxis.get_minor_ticks()) == 0
        assert "seed variance" in ax.get_ylabel() and len(ax.get_legend().get_texts()) == 2
        assert fig.get_layout_engine() is not None  # constrained: the y label is not clipped
        fig = plot.curves(ds, "test_loss")
        assert len(fig.axes) == ds.sizes["width"] and fig.axes[0].get_yscale() == "log"
        assert len(fig.axes[0].get_lines()) == ds.sizes["gamma"] and fig.axes[0].get_xlabel() == "scaled time t = k / N"
        fig = plot.bias_variance(bv)
        assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "scaled time t = k / N"
        assert fig.axes[0].get_ylabel().startswith("bias^2 (solid), variance (dashed)")  # says what is drawn
        fig = ds.ens.plot.mean_expansion(point=1)
        (ax,) = fig.axes
        fit = es.fit_expansion(ds, quantity="mean").isel(time=-1, point=1, output=0)
        h = [float(fit.coef.sel(gamma=g).isel(term=0)) for g in ds.gamma.values]
        dashed = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
        np.testing.assert_allclose(dashed, h)  # the limit h_t of each gamma, as fitted
        assert (
            len(ax.get_legend().get_texts()) == ds.sizes["gamma"]
            and "h_t = " in ax.get_legend().get_texts()[0].get_text()
        )
        fig = plot.completeness(ds)
        assert fig.axes[0].get_xlabel() == "width N" and len(fig.axes) == 2  # the map and its colour bar
        cmp = xr.Dataset({k: bv.variance for k in ("ratio", "ratio_lo", "ratio_hi")})
        fig = plot.collapse(cmp)
        assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == ["gamma = 0.5", "gamma = 1"]
        _, axes = plt.subplots(1, 3)
        with pytest.raises(ValidationError, match="3 axes given"):
            plot.curves(ds, "test_loss", ax=axes)
        assert plot.variance_vs_width(bv, rate, ax=axes[0]) is axes[0].figure
    finally:
        plt.close("all")


def test_the_training_set_is_stored_and_guarded(tmp_path):
    from collectors import EnsembleStore, teacher

    data = teacher()
    kw = dict(gammas=[0.75], widths=[64], seeds=[0], times=[0.0])
    st = EnsembleStore.create(tmp_path / "t.zarr", data.grid, train=(data.x_train, data.y_train), **kw)
    ds = es.open_ensemble(st.path)
    np.testing.assert_array_equal(ds.x_train.values, data.x_train)
    assert ds.x_train.attrs["long_name"] == "training inputs"
    st.array("x_train")[0, 0] = 99.0  # edited after creation
    with pytest.raises(es.errors.StoreCorruptionError, match="training set"):
        es.open_ensemble(st.path)
    with pytest.raises(ValidationError, match="y_train has shape"):
        EnsembleStore.create(tmp_path / "u.zarr", data.grid, train=(data.x_train, data.y_train[:-1]), **kw)
    assert not (tmp_path / "u.zarr").exists()


def _crossed(rng, R, I, J, P, comps, heavy=True):  # noqa: E741
    """y = a_i + b_j + e_ij on P correlated grid points (correlation 0.6), R independent replicates."""
    L = np.linalg.cholesky(0.6 * np.ones((P, P)) + 0.4 * np.eye(P))
    a = rng.normal(size=(R, I, 1, P)) @ L.T * np.sqrt(comps[0])
    b = rng.normal(size=(R, 1, J, P)) @ L.T * np.sqrt(comps[1])
    noise = rng.standard_t(5, size=(R, I, J, P)) / np.sqrt(5 / 3) if heavy else rng.normal(size=(R, I, J, P))
    y = a + b + noise @ L.T * np.sqrt(comps[2])
    return xr.DataArray(y[..., None], dims=("rep", "seed", "data_seed", "point", "output"), name="prediction")


def test_variance_components_are_unbiased_and_their_intervals_cover_the_truth():
    truth = np.array([1.0, 0.5, 0.3])  # init, data order, interaction
    y = _crossed(np.random.default_rng(12), 1000, 16, 4, 6, truth)
    vc = es.variance_components(y).compute()
    assert vc.component.values.tolist() == ["init", "data_order", "interaction"]
    mean, mc_se = vc.variance.mean("rep").values, vc.variance.std("rep").values / np.sqrt(1000)
    assert (np.abs(mean - truth) < 3.5 * mc_se).all(), (mean, truth, mc_se)
    cover = ((vc.variance_lo <= xr.DataArray(truth, dims="component")) & (vc.variance_hi >= truth)).mean("rep")
    # measured with t5 interaction noise on a correlated grid: 0.95 (init), 0.90 (4 data seeds), 0.98 (interaction)
    assert 0.92 <= float(cover.sel(component="init")) <= 0.98, cover.values
    assert 0.85 <= float(cover.sel(component="data_order")) <= 0.97, cover.values
    assert 0.93 <= float(cover.sel(component="interaction")) <= 0.995, cover.values
    np.testing.assert_allclose(vc.share.sum("component"), 1.0)
    assert int(vc.n_seeds.min()) == 16 and int(vc.n_data_seeds.max()) == 4 and int(vc.ci_status.max()) == 0


def test_variance_components_drop_diverged_seeds_and_need_three_data_seeds_for_intervals():
    y = _crossed(np.random.default_rng(13), 2, 8, 3, 4, [1.0, 0.5, 0.3], heavy=False).copy()
    y[0, 2, 1, 0, 0] = np.nan  # a diverged run
    vc = es.variance_components(y)
    assert vc.n_seeds.values.tolist() == [7, 8]
    two = es.variance_components(y.isel(data_seed=[0, 1]))
    assert np.isfinite(two.variance).all() and np.isnan(two.variance_lo).all() and (two.ci_status == 1).all()
    with pytest.raises(ValidationError, match="data_seed"):
        es.variance_components(y.isel(data_seed=0))


def test_seed_bootstrap_covers_a_known_mean_for_normal_and_heavy_tailed_seeds():
    """Monte Carlo: 400 ensembles of 16 seeds (vectorised: the statistic keeps the replicate dim); the percentile
    interval of the seed mean covers the true mean near its level (the percentile bootstrap runs a little short at
    16 seeds: about 0.92 for normal seeds)."""
    rng = np.random.default_rng(3)
    for draw in (lambda size: rng.normal(2.0, 1.0, size), lambda size: 2.0 + rng.standard_t(4, size)):
        data = xr.DataArray(draw((400, 16)), dims=("rep", "seed"))
        b = es.seed_bootstrap(lambda d: d.mean("seed").values, data, n_boot=400)
        hit = float(((b.estimate_lo < 2.0) & (2.0 < b.estimate_hi)).mean())
        assert 0.87 <= hit <= 0.97, hit
        np.testing.assert_allclose(b.estimate, data.mean("seed"))
        assert b.replicates.dims == ("resample", "dim_0") and b.sizes["resample"] == 400


def test_seed_bootstrap_of_a_dataframe_relabels_repeated_seeds_as_the_studies_did():
    """The deep study's interval of eta^2(gamma_3) - max(eta^2(gamma_1), eta^2(gamma_2)): a seed drawn twice enters
    as two block levels. The library's resampling must give the very numbers of the loop the study carried."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    levels = [0.5, 1.0]
    rows = [
        {"g1": a, "g2": b, "g3": c, "seed": s, "acc": 0.8 + 0.05 * c + 0.01 * a + 0.02 * rng.normal()}
        for a in levels for b in levels for c in levels for s in range(6)
    ]  # fmt: skip
    acc = pd.DataFrame(rows)
    factors = ["g1", "g2", "g3", "seed"]

    def stat(frame):
        e = es.anova_effects(frame, "acc", factors)
        return e["g3"] - max(e["g1"], e["g2"])

    b = es.seed_bootstrap(stat, acc, n_boot=30)
    # the loop the study carried (examples/experiments/run.py before the claims moved into the library)
    gen, seeds, diffs = np.random.default_rng(0), acc.seed.unique(), []
    for _ in range(30):
        pick = gen.choice(seeds, size=len(seeds), replace=True)
        diffs.append(stat(pd.concat([acc[acc.seed == s].assign(seed=i) for i, s in enumerate(pick)])))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    np.testing.assert_array_equal(b.replicates.values, diffs)
    assert (float(b.estimate_lo), float(b.estimate_hi)) == (lo, hi)
    assert float(b.estimate) == stat(acc) > 0
    with pytest.raises(ValidationError, match="'seed' column"):
        es.seed_bootstrap(stat, acc.drop(columns="seed"))
    with pytest.raises(ValidationError, match="at least 2"):
        es.seed_bootstrap(stat, acc[acc.seed == 0])
