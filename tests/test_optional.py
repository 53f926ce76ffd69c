"""Optional dependencies: a missing one is one error line naming the extra, never a traceback (issue 31, item 2).

Each case runs the CLI (or an import) in a fresh interpreter in which the package is hidden by an import hook,
so the real import machinery fails exactly as it would on a machine without it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import TINY_SWEEP

HIDE = """
import importlib.abc, sys
class _Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {mod!r} or name.startswith({mod!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Hidden())
for _m in [m for m in sys.modules if m == {mod!r} or m.startswith({mod!r} + ".")]:
    del sys.modules[_m]
"""


def _run_hidden(module: str, body: str, cwd) -> subprocess.CompletedProcess:
    code = HIDE.format(mod=module) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def _cli(*args: str) -> str:
    return f"""
from ensemble_stats.cli import main
sys.argv = ["ensemble-stats", *{list(args)!r}]
main()
"""


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from ensemble_stats.testing import synthetic_ensemble

    from .conftest import store_from_synthetic

    d = tmp_path_factory.mktemp("optional")
    ds = synthetic_ensemble(gammas=[0.5, 1.0], widths=[64, 128, 256], n_seeds=4, n_points=3, seed=1)
    return store_from_synthetic(d / "runs.zarr", ds).path


CASES = {
    "report without matplotlib": ("matplotlib", "report", "ensemble-stats[report]"),
    "a digits sweep without scikit-learn": ("sklearn", "digits", "ensemble-stats[data]"),
    "an mnist1d sweep without mnist1d": ("mnist1d", "mnist1d", "ensemble-stats[data]"),
    "info s3:// without s3fs": ("s3fs", "info-s3", "ensemble-stats[s3]"),
    "info gs:// without gcsfs": ("gcsfs", "info-gs", "pip install gcsfs"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_extra_is_one_line_naming_it(case, tiny_store, tmp_path):
    module, what, hint = CASES[case]
    if what == "report":
        body = _cli("report", str(tiny_store), "--out", str(tmp_path / "rep"))
    elif what in ("digits", "mnist1d"):
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            TINY_SWEEP.replace('name = "teacher"', f'name = "{what}"').replace(
                'options = { kind = "circle", n_train = 8, n_test = 4 }', "options = {}"
            )
        )
        body = _cli("run", str(cfg), "--store", str(tmp_path / "s.zarr"), "--workers", "1", "--no-progress")
    else:
        scheme = what.split("-")[1]
        body = _cli("info", f"{scheme}://bucket/runs.zarr")
    r = _run_hidden(module, body, tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and len(lines) <= 3, r.stderr[-2000:]
    assert lines[0].startswith("error: ") and hint in r.stderr, r.stderr
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "rep").exists()


def test_the_lightning_callback_without_lightning_names_the_extra(tmp_path):
    r = _run_hidden(
        "lightning",
        """
        try:
            import collectors.lightning
        except ImportError as e:
            from ensemble_stats.errors import MissingDependencyError
            assert isinstance(e, MissingDependencyError), type(e)
            print(e)
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pip install 'ensemble-stats[lightning]'" in r.stdout
