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
    page = index.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    return page, srcs


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
    assert "slope of log Var vs log N" in page and "<table>" in page


def test_report_with_theory_inputs_adds_the_collapse(tmp_path):
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
    )
    for w in (64, 128):
        train_block(st, data, width=w, gammas=[0.75, 0.875], seeds=list(range(8)), config=TrainConfig())
    index = es.report(es.open_ensemble(st.path), tmp_path / "rep", train_x=data.x_train, train_y=data.y_train)
    _, srcs = _images(index)
    assert {"collapse.png", "test_loss.png", "train_loss.png"} <= set(srcs)
    assert all((index.parent / s).exists() for s in srcs)


def test_report_on_a_single_width_store_says_why_there_are_no_fits(tmp_path):
    ds = synthetic_ensemble(gammas=[0.5], widths=[32], n_seeds=4, n_points=3, seed=32)
    index = es.report(ds, tmp_path / "rep")
    page, srcs = _images(index)
    assert "no fits" in page and srcs == ["completeness.png"]


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
    assert len(images) == 3 and all(w > 100 for _, w in images), images  # every figure decoded by the browser
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"), dtype=float)
    assert shot.std() > 10 and (shot < 128).mean() > 0.01, "the screenshot is blank"
