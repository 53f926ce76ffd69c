"""The studies runner behind `make experiments` (examples/experiments/run.py), at its smoke scale."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_stats.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "examples" / "experiments" / "run.py"


STUDIES = ("shallow", "deep", "clt", "conditioning", "collapse", "expansion", "lazy", "catapult", "anchor", "rates")


@pytest.fixture(scope="module")
def runner():
    """The study loader run.py uses (a library function: no import of the script itself)."""
    import types

    from collectors import load_study

    return types.SimpleNamespace(load_study=load_study, STUDIES=STUDIES)


def test_every_study_config_parses_at_every_scale(runner):
    import torch

    import ensemble_stats as es

    assert set(runner.STUDIES) == set(es.claims.STUDIES)  # every study has its claims in the library

    for name in runner.STUDIES:
        for scale in ("smoke", "default"):
            meta, _, specs = runner.load_study(RUN.parent / f"{name}.toml", scale)
            assert meta["title"] and meta["claims"] and meta["differences"], (name, scale)
            assert specs, (name, scale)
        if torch.cuda.is_available():
            _, _, full = runner.load_study(RUN.parent / f"{name}.toml", "full")
            assert all(s.train.device == "cuda" for s in full.values()), name
        else:  # the papers' sizes ask for a GPU, and say so before anything runs
            with pytest.raises(ConfigError, match="CUDA is not available"):
                runner.load_study(RUN.parent / f"{name}.toml", "full")


def test_scale_overrides_apply_and_mnist_variants_need_a_path(runner, tmp_path):
    _, _, default = runner.load_study(RUN.parent / "shallow.toml", "default")
    _, _, smoke = runner.load_study(RUN.parent / "shallow.toml", "smoke")
    _, _, with_mnist = runner.load_study(RUN.parent / "shallow.toml", "default", mnist=str(tmp_path))
    assert "mnist-cross_entropy" not in default and "mnist-cross_entropy" in with_mnist
    assert set(smoke) == {
        "digits-cross_entropy",
        "digits-mse",
        "digits-cross_entropy-theory-init",
        "digits-cross_entropy-alpha-map",
    }
    assert default["mnist1d-cross_entropy"].load_data().x_train.shape[0] == 4000  # the standard 4000 / 1000 split
    assert list(default["digits-cross_entropy-alpha-map"].alphas) == [10.0, 100.0, 1000.0]
    assert list(smoke["digits-mse"].widths) == [20, 40] and list(default["digits-mse"].widths) == [100, 200, 400]
    assert default["digits-mse"].train.loss == "mse"


def test_a_malformed_override_is_a_config_error(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (RUN.parent / "collapse.toml")
        .read_text()
        .replace('name = "circle"\nset = {}', 'name = "x"\nset = { widths = 3 }')
    )
    with pytest.raises(ConfigError, match=r"table\.key"):
        runner.load_study(bad)


def _smoke(tmp_path, only: tuple[str, ...] = STUDIES):
    """Run the studies ``only`` at smoke scale into a fresh document; returns (document, command, environment)."""
    doc = tmp_path / "EXPERIMENTS.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(RUN), "--scale", "smoke", "--out", str(tmp_path / "out"), "--doc", str(doc)]
    proc = subprocess.run([*cmd, "--no-progress", "--only", ",".join(only)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    sections = re.findall(r"^## \d+\. (.+)$", text, flags=re.M)
    assert len(sections) == len(only), sections
    assert text.count("Training took") == len(only) and text.count("FLOP in all") >= len(only)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images, "no figures referenced"
    for rel in images:
        png = doc.parent / rel
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    return doc, cmd, env


def test_smoke_scale_of_three_studies_writes_their_sections_and_a_rerun_rewrites_only_its_own(tmp_path):
    # deep (the x2 search and its measured diagnosis), collapse and catapult: the full set is the slow test below
    doc, cmd, env = _smoke(tmp_path, ("deep", "collapse", "catapult"))
    text = doc.read_text()
    assert "Why the configurations that do not learn do not (measured)" in text  # the recorded diagnostics
    verdicts = re.findall(r"\*\*(holds|does not hold|inconclusive)\*\*", text)
    assert len(verdicts) >= 5, verdicts
    not_run = re.search(r"^Not yet run: (.+?) \(", text, flags=re.M)
    assert not_run and set(not_run[1].split(", ")) == set(STUDIES) - {"deep", "collapse", "catapult"}
    # a second run of some studies resumes their stores (nothing is trained again, so no training time changes)
    # and rewrites their sections only; the document keeps every other one
    seconds = {p: p.read_text() for p in (tmp_path / "out").rglob("*.seconds.json")}
    assert len(seconds) >= 3
    sections_dir = doc.parent / "experiments"
    kept = {p.name: p.read_text() for p in sections_dir.glob("*.md")}
    (sections_dir / "collapse.md").write_text("## stale\n")
    once = subprocess.run([*cmd, "--no-progress", "--only", "collapse,catapult"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert once.returncode == 0, once.stderr[-3000:]
    assert {p: p.read_text() for p in seconds} == seconds
    assert (sections_dir / "collapse.md").read_text().startswith("## The variance collapse")
    rerun = {"collapse.md", "catapult.md"}
    assert {p.name: p.read_text() for p in sections_dir.glob("*.md") if p.name not in rerun} == {
        k: v for k, v in kept.items() if k not in rerun
    }
    assert len(re.findall(r"^## \d+\. ", doc.read_text(), flags=re.M)) == 3


@pytest.mark.slow
def test_smoke_scale_runs_every_study_and_writes_the_document(tmp_path):
    doc, _, _ = _smoke(tmp_path)
    text = doc.read_text()
    assert "Not yet run" not in text
    verdicts = re.findall(r"\*\*(holds|does not hold|inconclusive)\*\*", text)
    assert len(verdicts) >= 10, verdicts
