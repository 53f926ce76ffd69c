"""ensemble-stats report: every figure is written and every image the HTML page references exists."""

from __future__ import annotations

import re

from click.testing import CliRunner

import ensemble_stats as es
from collectors import teacher
from ensemble_stats.cli import main
from ensemble_stats.testing import synthetic_ensemble

from .conftest import store_from_synthetic


def _images(index):
    """The page and the figure files it names; every image is embedded, and equals its file."""
    import base64

    page = index.read_text()
    uris = re.findall(r'<img src="([^"]+)"', page)
    names = re.findall(r"<figcaption>.*? \(([\w.]+\.png)\)</figcaption>", page)
    assert len(uris) == len(names), (len(uris), names)
    for uri, name in zip(uris, names, strict=True):
        assert uri.startswith("data:image/png;base64,"), uri[:40]
        assert base64.b64decode(uri.split(",", 1)[1]) == (index.parent / name).read_bytes(), name
    return page, names


def test_report_on_a_store_with_missing_and_diverged_runs(tmp_path):
    ds = synthetic_ensemble(
        gammas=[0.5, 0.75, 1.0],
        widths=[32, 64, 128],
        n_seeds=8,
        n_points=5,
        missing_fraction=0.1,
        diverged_runs=3,
        seed=31,
    )
    store = store_from_synthetic(tmp_path / "s.zarr", ds)
    r = CliRunner().invoke(main, ["report", str(store.path), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    page, srcs = _images(tmp_path / "rep" / "index.html")
    assert {"completeness.png", "variance_vs_width.png", "bias_variance.png"} <= set(srcs)
    for s in srcs:
        assert (tmp_path / "rep" / s).stat().st_size > 5000, s
    assert "slope of log variance vs log N" in page and "<table>" in page


def test_report_reuses_the_results_it_is_given_and_draws_the_collapse_from_the_store(tmp_path, monkeypatch):
    import ensemble_stats._report as rep
    import ensemble_stats._stats as st_mod
    from collectors import EnsembleStore, TrainConfig, train_block

    data = teacher()
    st = EnsembleStore.create(
        tmp_path / "t.zarr",
        data.grid,
        gammas=[0.75, 0.875],
        widths=[64, 128],
        seeds=list(range(8)),
        times=[0.0, 0.5, 1.0],
        seed_chunk=8,
        train=(data.x_train, data.y_train),
    )
    for w in (64, 128):
        train_block(st, data, width=w, gammas=[0.75, 0.875], seeds=list(range(8)), config=TrainConfig())
    ds = es.open_ensemble(st.path)
    assert ds.x_train.dims == ("train_point", "feature") and ds.y_train.shape == (len(data.x_train), 1)
    results = {
        "bias_variance": es.bias_variance(ds).compute(),
        "fit_rate": es.fit_rate(ds).compute(),
        "fit_expansion": es.fit_expansion(ds, quantity="variance").compute(),
        "fit_expansion_mean": es.fit_expansion(ds, quantity="mean").compute(),
        "seed_mean": es.seed_mean(ds).compute(),
        "compare_to_theory": es.compare_to_theory(ds, activation="tanh").compute(),  # the store's training set
    }

    def recomputed(*a, **k):
        raise AssertionError("report recomputed a result it was given")

    monkeypatch.setattr(st_mod, "bias_variance", recomputed)
    monkeypatch.setattr(es, "bias_variance", recomputed)
    monkeypatch.setattr("ensemble_stats._fit.fit_rate", recomputed)
    monkeypatch.setattr("ensemble_stats._fit.fit_expansion", recomputed)
    monkeypatch.setattr("ensemble_stats._limit.bias_variance", recomputed)
    index = es.report(ds, tmp_path / "rep", results=results)
    _, names = _images(index)
    assert {"collapse.png", "test_loss.png", "train_loss.png", "variance_vs_width.png", "mean_expansion.png"} <= set(
        names
    )
    assert set(results) <= set(rep.RESULTS)
    page = index.read_text()
    assert ds.attrs["store_id"] in page and "config hash " in page and "ensemble-stats 0.1.0: report" in page
    assert "fit of the mean" in page  # es.expansion_table of the mean fit beside the rate table


def test_report_on_a_single_width_store_says_why_there_are_no_fits(tmp_path):
    ds = synthetic_ensemble(gammas=[0.5], widths=[32], n_seeds=4, n_points=3, seed=32)
    index = es.report(ds, tmp_path / "rep")
    page, names = _images(index)
    assert "no fits" in page and names == ["completeness.png"]


CHROMIUM = "/usr/bin/chromium"
# flags for a closed network: no background connections, no component updates
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def test_report_page_renders_in_headless_chromium_without_errors(tmp_path):
    import os

    import numpy as np
    import pytest

    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (scripts/install-chromium.sh needs root and apt-get)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    ds = synthetic_ensemble(
        gammas=[0.5, 1.0], widths=[32, 64, 128], n_seeds=6, n_points=4, missing_fraction=0.1, diverged_runs=1, seed=33
    )
    index = es.report(ds, tmp_path / "rep")
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
            page.goto(index.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
            page.screenshot(path=str(tmp_path / "shot.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert len(images) == 4 and all(w > 100 for _, w in images), images  # every figure decoded by the browser
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"), dtype=float)
    assert shot.std() > 10 and (shot < 128).mean() > 0.01, "the screenshot is blank"
