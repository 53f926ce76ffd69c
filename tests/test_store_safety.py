"""Issue 30: no path, mode or missing attribute can destroy or silently change a store (the third round of outside
faults). Each test records (fault, tried, held) for RELIABILITY.md."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import ensemble_stats as es
from collectors import EnsembleStore, EvalGrid, SweepSpec
from ensemble_stats.cli import main
from ensemble_stats.errors import (
    ConfigError,
    EnsembleStatsError,
    StoreCorruptionError,
    ValidationError,
)
from ensemble_stats.testing import synthetic_ensemble

from .conftest import TINY_SWEEP, store_from_synthetic, tree_digest
from .test_reliability_store import scalar_store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.reliability


# ------------------------------------------------------------------------------------------- 30.1 --out paths
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    ds = synthetic_ensemble(gammas=[0.5, 1.0], widths=[64, 128, 256], n_seeds=6, n_points=4, seed=2)
    return store_from_synthetic(d / "pristine.zarr", ds).path


def _scene(tmp: Path, pristine: Path) -> dict[str, Path]:
    """A folder as a user has it: the store, a foreign folder (named like a result and not), a foreign file,
    and symbolic links to each."""
    shutil.copytree(pristine, tmp / "runs.zarr")
    for folder in ("important", "keep.zarr"):
        (tmp / folder).mkdir()
        (tmp / folder / "thesis.tex").write_text("a month of writing")
    (tmp / "notes.nc").write_text("my notes")
    for link, to in (
        ("store-link.zarr", "runs.zarr"),
        ("keep-link.zarr", "keep.zarr"),
        ("notes-link.nc", "notes.nc"),
        ("important-link", "important"),
    ):
        (tmp / link).symlink_to(to)
    return {"store": tmp / "runs.zarr", "important": tmp / "important", "keep": tmp / "keep.zarr"}


def _listing(tmp: Path) -> set[str]:
    return {str(Path(d, n).relative_to(tmp)) for d, dirs, files in os.walk(tmp) for n in (*dirs, *files)}


# (command, --out as typed, what it resolves to): every spelling reaches something that is not this command's result
OUT_CASES = [
    (cmd, out, target)
    for cmd in ("fit", "decompose")
    for out, target in (
        ("nosuchdir/../runs.zarr", "the store through a missing folder"),
        ("runs.zarr/", "the store with a trailing slash"),
        ("store-link.zarr", "the store through a symlink"),
        ("./x/../store-link.zarr/", "the store through a missing folder, a symlink and a slash"),
        ("runs.zarr/fit.zarr", "a result inside the store"),
        ("x/../keep.zarr", "a foreign folder through a missing folder"),
        ("keep.zarr/", "a foreign folder with a trailing slash"),
        ("keep-link.zarr", "a foreign folder through a symlink"),
        ("q/../notes.nc", "a foreign file through a missing folder"),
        ("notes-link.nc", "a foreign file through a symlink"),
    )
] + [
    ("report", out, target)
    for out, target in (
        ("z/../runs.zarr", "the store through a missing folder"),
        ("runs.zarr/", "the store with a trailing slash"),
        ("store-link.zarr", "the store through a symlink"),
        ("runs.zarr/report", "a folder inside the store"),
        ("z/../important", "a foreign folder through a missing folder"),
        ("important/", "a foreign folder with a trailing slash"),
        ("important-link", "a foreign folder through a symlink"),
        ("z/../notes.nc", "a foreign file through a missing folder"),
        ("notes-link.nc", "a foreign file through a symlink"),
    )
]


def test_out_through_missing_folders_symlinks_and_slashes_never_replaces_a_store_or_foreign_data(
    tmp_path, monkeypatch, small_store, reliability
):
    monkeypatch.chdir(tmp_path)
    _scene(tmp_path, small_store)
    before, names = tree_digest(tmp_path), _listing(tmp_path)
    runner = CliRunner()
    failed = []
    for cmd, out, target in OUT_CASES:
        r = runner.invoke(main, [cmd, "runs.zarr", "--out", out])
        one_line = r.exit_code == 2 and r.output.startswith("error: ") and "Traceback" not in r.output
        unchanged = tree_digest(tmp_path) == before and _listing(tmp_path) == names
        if not (one_line and unchanged):
            failed.append(f"{cmd} --out {out} ({target}): exit {r.exit_code}, unchanged {unchanged}")
    tried = len(OUT_CASES)
    reliability(
        "30.1",
        "--out of fit / decompose / report through a missing folder (x/../), a symlink or a trailing slash, "
        "reaching the store, a folder inside it, a foreign folder or a foreign file",
        tried,
        tried - len(failed),
        "each refused with one error line (exit 2); every file and folder unchanged byte for byte, and no folder "
        "created. " + ("; ".join(failed) if failed else "none failed"),
    )
    assert not failed, failed


def test_out_through_missing_folders_and_symlinks_writes_where_the_kernel_resolves_it(
    tmp_path, monkeypatch, small_store
):
    """The refusals above are not blanket ones: a new result goes where the path resolves, and a symlink to an
    earlier result of the same command is rewritten in place."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_store, tmp_path / "runs.zarr")
    runner = CliRunner()
    r = runner.invoke(main, ["decompose", "runs.zarr", "--out", "nosuchdir/../res.nc"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "res.nc").is_file() and not (tmp_path / "nosuchdir").exists()
    (tmp_path / "latest.nc").symlink_to("res.nc")
    first = (tmp_path / "res.nc").stat().st_mtime_ns
    time.sleep(0.01)
    r = runner.invoke(main, ["decompose", "runs.zarr", "--out", "latest.nc"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "latest.nc").is_symlink() and (tmp_path / "res.nc").stat().st_mtime_ns != first
    r = runner.invoke(main, ["fit", "runs.zarr", "--out", "latest.nc"])  # a decompose result is not fit's
    assert r.exit_code == 2 and "result of `ensemble-stats decompose`" in r.output


def test_urls_with_dot_segments_are_refused_before_anything_is_written():
    for url in ("memory://bucket/x/../runs.zarr", "memory://bucket/./runs.zarr", "memory://bucket//runs.zarr"):
        with pytest.raises(ValidationError, match=r"'\.', '\.\.' or empty"):
            es.store.location(url)
    assert es.store.location("memory://bucket/runs.zarr/") == "memory://bucket/runs.zarr"


# ----------------------------------------------------------------------------------------- 30.2 open modes
def test_open_with_a_destructive_mode_is_refused_and_the_store_is_untouched(tmp_path, reliability):
    st = scalar_store(tmp_path / "s.zarr")
    before = tree_digest(st.path)
    modes = ["w", "w-", "a", "x", "rw"]
    held = 0
    for mode in modes:
        try:
            EnsembleStore.open(st.path, mode=mode)
        except ValidationError as e:
            held += "EnsembleStore.create" in str(e) and tree_digest(st.path) == before
    reading = EnsembleStore.open(st.path, mode="r")
    ok = held == len(modes) and reading.spec == EnsembleStore.open(st.path).spec and es.verify_store(st.path) == []
    reliability(
        "30.2",
        "EnsembleStore.open(path, mode=...) with zarr's destructive or creating modes (w, w-, a, x, rw)",
        len(modes),
        held if ok else 0,
        "each refused with a ValidationError naming EnsembleStore.create; the store unchanged byte for byte and "
        "verify clean",
    )
    assert ok


def test_no_zarr_call_in_the_package_passes_a_destructive_mode():
    """Audit: every zarr open / to_zarr call passes a literal read or create-only mode; EnsembleStore.open passes
    the mode it has checked."""
    calls = {"open_group", "open", "open_array", "open_consolidated", "to_zarr", "open_zarr"}
    found = []
    for pkg in ("ensemble_stats", "collectors"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in calls:
                    continue
                for kw in node.keywords:
                    if kw.arg != "mode":
                        continue
                    literal = isinstance(kw.value, ast.Constant) and kw.value.value in ("r", "r+", "w-")
                    checked = path.name == "_store.py" and isinstance(kw.value, ast.Name) and kw.value.id == "mode"
                    if not (literal or checked):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} mode={ast.unparse(kw.value)}")
    assert not found, found


# ------------------------------------------------------------------------------------- 30.3 integrity marks
def _attrs_edit(store: Path, fn) -> None:
    doc = json.loads((store / "zarr.json").read_text())
    fn(doc["attributes"])
    (store / "zarr.json").write_text(json.dumps(doc))


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def _rewrite_diverged(store: Path, value: int) -> None:
    """Rewrite one run's divergence mark through zarr: a valid chunk with a valid checksum."""
    arr = zarr.open_group(str(store), mode="r+")["diverged_step"]
    arr[0, 1, 0] = value


def _edit_coord(store: Path, name: str, fn) -> None:
    arr = zarr.open_group(str(store), mode="r+")[name]
    arr[...] = fn(arr[...])


SWITCH_OFFS = {
    "store_id deleted, then prediction chunks swapped across gamma": lambda s: (
        _attrs_edit(s, lambda a: a.pop("store_id")),
        _swap(s / "prediction/c/0/0/0/0/0/0", s / "prediction/c/1/0/0/0/0/0"),
    ),
    "manifest deleted, then the gamma coordinate reversed": lambda s: (
        _attrs_edit(s, lambda a: a.pop("manifest")),
        _edit_coord(s, "gamma", lambda v: v[::-1].copy()),
    ),
    "manifest deleted, then x edited": lambda s: (
        _attrs_edit(s, lambda a: a.pop("manifest")),
        _edit_coord(s, "x", lambda v: v + 1e-3),
    ),
    "the manifest's attribute fingerprints deleted, then layout.seed_chunk edited": lambda s: _attrs_edit(
        s, lambda a: (a["manifest"].pop("attrs"), a["layout"].update(seed_chunk=2))
    ),
    "diverged_step rewritten: a run marked diverged": lambda s: _rewrite_diverged(s, 2),
    "diverged_step rewritten: the diverged run's mark removed": lambda s: _edit_coord(
        s, "diverged_step", lambda v: np.full_like(v, -1)
    ),
    "diverged_digest array deleted": lambda s: shutil.rmtree(s / "diverged_digest"),
    "config attribute edited": lambda s: _attrs_edit(s, lambda a: a.update(config={"optimizer": {"alpha": 2.0}})),
    "layout.seed_chunk edited": lambda s: _attrs_edit(s, lambda a: a["layout"].update(seed_chunk=2)),
    "model attribute deleted": lambda s: _attrs_edit(s, lambda a: a.pop("model")),
    "metrics attribute added": lambda s: _attrs_edit(s, lambda a: a.update(metrics={"test_loss": "x"})),
}


def test_edits_that_switched_integrity_off_are_found_refused_and_named(tmp_path, reliability):
    pristine = tmp_path / "pristine.zarr"
    scalar_store(pristine, config={"optimizer": {"alpha": 1.0}}, model={"activation": "tanh"})
    assert es.verify_store(pristine) == []
    runner = CliRunner()
    rows = []
    for k, (kind, edit) in enumerate(SWITCH_OFFS.items()):
        path = tmp_path / f"e{k}.zarr"
        shutil.copytree(pristine, path)
        edit(path)
        problems = es.verify_store(path)
        try:
            es.open_ensemble(path).load()
            refused = False
        except StoreCorruptionError:
            refused = True
        r = runner.invoke(main, ["decompose", str(path), "--out", str(tmp_path / f"d{k}.nc")])
        v = runner.invoke(main, ["info", str(path), "--verify"])
        ok = bool(problems) and refused and r.exit_code == 2 and v.exit_code == 1 and "Traceback" not in v.output
        rows.append((kind, ok, str(problems[0]) if problems else "-"))
    held = sum(ok for _, ok, _ in rows)
    reliability(
        "30.3",
        "edits that switch integrity off or go unchecked: store_id or manifest deleted (then a chunk swap, a "
        "reversed gamma, an edited x), attribute fingerprints deleted, diverged_step rewritten either way, its "
        "digest deleted, config / layout / model / metrics attributes edited",
        len(rows),
        held,
        "each: verify names it, open_ensemble refuses with StoreCorruptionError, decompose exits 2, info --verify "
        "exits 1 without a traceback. "
        + "; ".join(f"{k}: {'held' if ok else 'FAILED'} ({p[:90]})" for k, ok, p in rows),
    )
    assert held == len(rows), [r for r in rows if not r[1]]


def test_a_rewritten_diverged_step_chunk_no_longer_drops_seeds_silently(tmp_path):
    st = scalar_store(tmp_path / "s.zarr")
    clean = es.bias_variance(es.open_ensemble(st.path)).compute()
    assert int(clean.n_seeds.sel(gamma=0.5, width=8).min()) == 2
    _rewrite_diverged(st.path, 0)  # gamma 0.5, width 8, seed 0 "diverged at step 0"
    problems = es.verify_store(st.path)
    assert [p.kind for p in problems] == ["mismatch"] and "diverged_step" in problems[0].path
    with pytest.raises(StoreCorruptionError, match="diverged_step"):
        es.open_ensemble(st.path)
    reopened = EnsembleStore.open(st.path)
    assert reopened.repair()  # un-commits that run: a resumed writer retrains it
    assert es.verify_store(st.path) == []
    ds = es.open_ensemble(st.path)
    assert int(ds.written.sel(gamma=0.5, width=8, seed=0).sum()) == 0 and int(ds.diverged_step.max()) >= 0


def test_an_edited_config_attribute_refuses_the_resume_of_the_edited_config(tmp_path):
    """A store trained with alpha = 1 whose config attribute was edited to alpha = 2 must not accept a run with
    alpha = 2 (it would write alpha = 2 training beside alpha = 1 records)."""
    from collectors._sweep import prepare_store

    one = SweepSpec.from_toml(TINY_SWEEP + "[optimizer]\nalpha = 1.0\n")
    two = SweepSpec.from_toml(TINY_SWEEP + "[optimizer]\nalpha = 2.0\n")
    store = prepare_store(one, tmp_path / "s.zarr")
    _attrs_edit(store.path, lambda a: a.update(config=two.canonical()))
    with pytest.raises(StoreCorruptionError, match="'config' was changed"):
        prepare_store(two, tmp_path / "s.zarr")
    assert any("config" in str(p) for p in es.verify_store(store.path))


# ---------------------------------------------------------------------------------------- 30.4 configs
def _open_file_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _gammas(n: int) -> str:
    return "[" + ", ".join(repr(0.5 + 0.5 * i / (n - 1)) for i in range(n)) + "]"


CONFIGS = {
    "horizon = 1e12 (scaled)": (TINY_SWEEP.replace("horizon = 1.0", "horizon = 1e12"), "optimizer steps per run"),
    "units = epoch, horizon = 1e9": (
        TINY_SWEEP.replace('units = "scaled"', 'units = "epoch"').replace("horizon = 1.0", "horizon = 1e9"),
        "1,000,000,000 optimizer steps",
    ),
    "more gammas than open files": (
        TINY_SWEEP.replace("gammas = [0.5, 1.0]", f"gammas = {_gammas(max(_open_file_limit() - 200, 3))}"),
        "open files",
    ),
    "data_seed = -1": (TINY_SWEEP + "[optimizer]\ndata_seed = -1\n", "data_seed = -1"),
    "seed_block = 0": (TINY_SWEEP.replace("seed_block = 2", "seed_block = 0"), "seed_block = 0"),
    "alphas with [optimizer].alpha = 1.0": (
        TINY_SWEEP.replace("seed_block = 2", "seed_block = 2\nalphas = [1.0, 2.0]") + "[optimizer]\nalpha = 1.0\n",
        "both given",
    ),
    "a 5 MB activation string": (TINY_SWEEP + "[model]\nactivation = '" + "x" * 5_000_000 + "'\n", "characters cut"),
}


def test_configs_that_cannot_run_are_refused_before_any_store_exists(tmp_path, reliability):
    from collectors._sweep import prepare_store

    rows = []
    for k, (kind, (text, says)) in enumerate(CONFIGS.items()):
        store = tmp_path / f"c{k}.zarr"
        t0 = time.perf_counter()
        try:
            prepare_store(SweepSpec.from_toml(text), store)
            err = None
        except ConfigError as e:
            err = str(e)
        seconds = time.perf_counter() - t0
        ok = err is not None and says in err and len(err) <= 4000 and not store.exists() and seconds < 30
        rows.append((kind, ok, seconds, (err or "accepted")[:120]))
    held = sum(r[1] for r in rows)
    reliability(
        "30.4",
        "configs that created a store before failing or were accepted silently: horizon 1e12, 1e9 epochs, more "
        "gammas than open files, data_seed = -1, seed_block = 0, alphas beside alpha, a 5 MB string",
        len(rows),
        held,
        "each a ConfigError saying what it needs, at most 4,000 characters, within 30 s, and no store created. "
        + "; ".join(f"{k}: {'held' if ok else 'FAILED'} ({s:.2f} s)" for k, ok, s, _ in rows),
    )
    assert held == len(rows), [r for r in rows if not r[1]]


def test_the_largest_int64_seed_trains_and_differs_from_seed_zero(tmp_path):
    from collectors._sweep import run_sweep

    text = TINY_SWEEP.replace("seeds = 4\nseed_block = 2", "seeds = [0, 9223372036854775807]")
    run_sweep(SweepSpec.from_toml(text), tmp_path / "s.zarr", workers=1, progress=False)  # SweepError if a cell fails
    ds = es.open_ensemble(tmp_path / "s.zarr")
    assert bool(ds.written.all())
    a, b = (ds.prediction.isel(seed=i, time=-1).values for i in (0, 1))
    assert np.isfinite(a).all() and np.isfinite(b).all() and not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------- 30.5 API inputs
def _grid():
    rng = np.random.default_rng(0)
    return EvalGrid(rng.normal(size=(3, 2)), rng.normal(size=(3, 1)))


BASE = dict(gammas=[0.5], widths=[4], seeds=[0, 1], times=[0, 1, 2], time_units="step")


def test_bad_api_inputs_raise_the_packages_own_errors_and_write_nothing(tmp_path, reliability):
    from collectors._sweep import run_sweep

    grid = _grid()
    st = EnsembleStore.create(tmp_path / "ok.zarr", grid, **BASE)
    ds = es.open_ensemble(st.path)
    cases = {
        "create(widths=[2**63])": lambda p: EnsembleStore.create(p, grid, **{**BASE, "widths": [2**63]}),
        "create(seeds=[2**63])": lambda p: EnsembleStore.create(p, grid, **{**BASE, "seeds": [0, 2**63]}),
        "a NUL byte in the path": lambda p: EnsembleStore.create(str(p) + "\x00x", grid, **BASE),
        "create(time_chunk=0)": lambda p: EnsembleStore.create(p, grid, **BASE, time_chunk=0),
        "create(dtype='float16')": lambda p: EnsembleStore.create(p, grid, **BASE, dtype=np.float16),
        "a path that is a dict": lambda p: EnsembleStore.create({"path": str(p)}, grid, **BASE),
        "write_records with string scalars": lambda p: st.write_records(
            (0, 0, 0), [0, 1], np.zeros((2, 3, 1)), [0, 1], {"test_loss": np.array(["a", "b"])}
        ),
        "bias_variance without a seed dim": lambda p: es.bias_variance(ds.isel(seed=0)),
        "run_sweep(42)": lambda p: run_sweep(42, p, workers=1, progress=False),
        "steps_per_epoch = 2.5": lambda p: st.record_steps(4, steps_per_epoch=2.5),
    }
    rows = []
    for k, (kind, call) in enumerate(cases.items()):
        p = tmp_path / f"a{k}.zarr"
        try:
            call(p)
            got = "no error"
        except EnsembleStatsError as e:
            got = type(e).__name__
        except Exception as e:  # noqa: BLE001 - a raw builtin exception is what this test catches
            got = f"raw {type(e).__name__}"
        ok = not got.startswith(("raw", "no error")) and not p.exists()
        rows.append((kind, ok, got))
    held = sum(r[1] for r in rows)
    reliability(
        "30.5",
        "API inputs that raised raw builtin exceptions or were accepted: overflowing widths and seeds, a NUL byte, "
        "time_chunk = 0, float16, a dict as path, string scalars, bias_variance without seeds, run_sweep(42), "
        "steps_per_epoch = 2.5",
        len(rows),
        held,
        "each an ensemble_stats error, nothing written. " + "; ".join(f"{k}: {g}" for k, _, g in rows),
    )
    assert held == len(rows), [r for r in rows if not r[1]]


def test_numpy_dtypes_and_dict_configs_are_accepted(tmp_path):
    st = EnsembleStore.create(tmp_path / "f64.zarr", _grid(), **BASE, dtype=np.float64)
    assert st.spec.dtype == "float64"
    from collectors._sweep import prepare_store

    raw = __import__("tomllib").loads(TINY_SWEEP)
    assert prepare_store(SweepSpec.parse(raw), tmp_path / "d.zarr").spec.seed_chunk == 2


def test_a_prediction_that_overflows_the_store_dtype_marks_the_run_diverged(tmp_path):
    st = EnsembleStore.create(tmp_path / "s.zarr", _grid(), **BASE)
    pred = np.zeros((3, 3, 1))
    pred[1:] = 1e300  # finite in float64, +inf once stored as float32
    st.write_records((0, 0, 1), [0, 1, 2], pred, [0, 1, 2])
    ds = es.open_ensemble(st.path)
    assert int(ds.diverged_step.sel(gamma=0.5, width=4, seed=1)) == 1
    raw = zarr.open_group(str(st.path), mode="r")["prediction"][0, 0, 1]
    assert np.isinf(raw[1:]).all() and (raw[0] == 0).all()  # stored as is; the analysis excludes it
    assert es.verify_store(st.path) == []


def test_a_memory_store_warns_that_it_is_not_persistent():
    with pytest.warns(es.errors.EphemeralStoreWarning, match="vanishes"):
        EnsembleStore.create("memory://safety/runs.zarr", _grid(), **BASE)


def test_error_messages_are_capped():
    e = ValidationError(["x" * 5_000_000])
    assert len(str(e)) <= 4000 and str(e).endswith("characters cut)")


# --------------------------------------------------------------------------- 30.6 no stray tracebacks
@pytest.mark.parametrize("broken", ["{", "[]", "garbage", '{"zarr_format": 2}', ""])
def test_verify_on_a_broken_array_zarr_json_prints_no_stray_traceback(tmp_path, broken):
    st = scalar_store(tmp_path / "s.zarr")
    for name in ("prediction", "step"):
        (st.path / name / "zarr.json").write_text(broken)
    r = subprocess.run(
        [str(Path(sys.executable).with_name("ensemble-stats")), "info", str(st.path), "--verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "Traceback" not in out and "Task exception" not in out and "Warning" not in out, out
    assert "prediction/zarr.json" in out and "step/zarr.json" in out


# ---------------------------------------------------------------------------------------- 30.7 clock skew
def test_a_partial_file_dated_in_the_future_is_swept(tmp_path, reliability):
    from ensemble_stats.store import sweep_partial_files

    st = scalar_store(tmp_path / "s.zarr")
    dated = {"an hour ahead": 3600.0, "a year ahead": 365 * 86400.0, "two seconds ahead": 2.0, "now": 0.0}
    files = {}
    for k, ahead in enumerate(dated.values()):
        p = st.path / "x" / f"c.{k}.partial"  # a partial file of a non-run array: only its age can tell
        p.write_bytes(b"half a chunk")
        t = time.time() + ahead
        os.utime(p, (t, t))
        files[ahead] = p
    removed, spared = sweep_partial_files(st.path)
    gone = {ahead: not p.exists() for ahead, p in files.items()}
    ok = gone[3600.0] and gone[365 * 86400.0] and not gone[2.0] and not gone[0.0]
    reliability(
        "30.7",
        "partial files dated in the future (clock skew) beside fresh ones",
        2,
        2 if ok else 0,
        f"removed {removed}, spared {spared}: future-dated beyond 5 s swept ({gone}), fresh ones kept",
    )
    assert ok, gone
