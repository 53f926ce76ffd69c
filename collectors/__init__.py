"""collectors: the training side of ensemble-stats (PyTorch).

Create a store with a fixed evaluation grid, attach an :class:`OutputCollector` to a training run, and the
run's outputs on the grid are written at the scheduled times. Or train whole blocks of the ensemble with the
vectorised trainer (:func:`train_block`) and :class:`ScaledMLP` models with the theory's learning rates.
"""

from ensemble_stats.store import EnsembleStore, EvalGrid, StoreSpec

from ._collector import CollectorHandle, OutputCollector
from ._config import SweepSpec
from ._convnet import ScaledConvNet
from ._data import DataSet, cifar10, digits, load_dataset, mnist, mnist1d, teacher
from ._demo import run_demo
from ._diagnostics import layer_diagnostics
from ._models import ACTIVATIONS, Architecture, ScaledMLP, init_params, learning_rates, paper_init, theory_init
from ._ntk import NTKCollector, empirical_ntk, model_ntk, relative_displacement, shallow_ntk
from ._records import Block, BlockCollector, BlockModel, RecordBuffer
from ._study import load_study
from ._sweep import SweepReport, prepare_store, run_sweep
from ._trainer import BlockResult, TrainConfig, train_block

__all__ = [
    "ACTIVATIONS",
    "Architecture",
    "Block",
    "BlockModel",
    "BlockResult",
    "BlockCollector",
    "CollectorHandle",
    "DataSet",
    "EnsembleStore",
    "EvalGrid",
    "NTKCollector",
    "OutputCollector",
    "RecordBuffer",
    "ScaledConvNet",
    "ScaledMLP",
    "StoreSpec",
    "SweepReport",
    "SweepSpec",
    "TrainConfig",
    "cifar10",
    "digits",
    "empirical_ntk",
    "init_params",
    "layer_diagnostics",
    "learning_rates",
    "load_dataset",
    "load_study",
    "mnist",
    "mnist1d",
    "model_ntk",
    "paper_init",
    "prepare_store",
    "relative_displacement",
    "run_demo",
    "run_sweep",
    "shallow_ntk",
    "teacher",
    "theory_init",
    "train_block",
]


def __getattr__(name: str):
    if name == "Collector":  # renamed: it is the block trainer's hook interface, not the base of OutputCollector
        import warnings

        warnings.warn(
            "collectors.Collector is now collectors.BlockCollector (the block trainer's hook interface); the old "
            "name goes in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return BlockCollector
    raise AttributeError(f"module 'collectors' has no attribute {name!r}")
