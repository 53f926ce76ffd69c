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
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.EnsembleStatsError)
