import subprocess
import sys


def test_ensemble_stats_does_not_import_torch():
    code = "import sys, ensemble_stats, ensemble_stats.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_exist():
    import collectors
    import ensemble_stats

    for mod in (ensemble_stats, collectors):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name} in __all__ but missing"


def test_errors_inherit_builtins():
    from ensemble_stats import errors

    assert issubclass(errors.ValidationError, ValueError)
    assert issubclass(errors.StoreNotFoundError, FileNotFoundError)
    assert issubclass(errors.RunExistsError, FileExistsError)
    assert issubclass(errors.RunNotFoundError, LookupError)
    helpers = {"install_hint", "require"}  # the optional-dependency helpers that raise MissingDependencyError
    assert helpers <= set(errors.__all__)
    for name in set(errors.__all__) - helpers:
        cls = getattr(errors, name)
        base = errors.EnsembleStatsWarning if issubclass(cls, Warning) else errors.EnsembleStatsError
        assert issubclass(cls, base), name
    assert issubclass(errors.ScaledTimeWarning, UserWarning)


def test_the_plot_module_imports_matplotlib_only_when_drawing():
    code = "import sys, ensemble_stats.plot; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_examples_and_benchmarks_use_only_public_names():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*(root / "examples").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                parts = n.split(".")
                if parts[0] in ("ensemble_stats", "collectors") and any(p.startswith("_") for p in parts[1:]):
                    found.append(f"{path.relative_to(root)}: {n}")
    assert found == [], found
