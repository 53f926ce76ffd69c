"""Offline data sets: synthetic teacher, scikit-learn digits, mnist1d's generator, MNIST / CIFAR-10 from disk.

Nothing here downloads. Every loader returns a :class:`DataSet` whose test inputs form the evaluation grid.
"""

from __future__ import annotations

import gzip
import inspect
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble_stats.errors import DataNotFoundError, ValidationError, require
from ensemble_stats.store import EvalGrid


@dataclass(frozen=True, eq=False)
class DataSet:
    """Training data and the evaluation grid.

    Attributes
    ----------
    x_train : (n, d) float64
    y_train : (n, output) float64
        Regression targets, or one-hot rows for classification.
    grid : EvalGrid
        Test inputs and targets: where outputs are recorded.
    labels_train : (n,) int64 or None
        Class labels (classification).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    grid: EvalGrid
    labels_train: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return "classification" if self.labels_train is not None else "regression"

    @property
    def d_in(self) -> int:
        return self.x_train.shape[1]

    @property
    def output_size(self) -> int:
        return self.y_train.shape[1]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "n_train": len(self.x_train),
            "n_grid": self.grid.n_points,
            "d_in": self.d_in,
            "outputs": self.output_size,
            **self.info,
        }


def _classification(name, x, labels, x_test, labels_test, n_classes, info) -> DataSet:
    eye = np.eye(n_classes)
    return DataSet(
        name,
        np.asarray(x, np.float64),
        eye[labels],
        EvalGrid(x_test, eye[labels_test]),
        labels_train=np.asarray(labels, np.int64),
        info=info,
    )


def teacher(
    *,
    kind: str = "circle",
    d: int = 2,
    n_train: int = 8,
    n_test: int = 5,
    teacher_width: int = 64,
    noise: float = 0.0,
    seed: int = 0,
    grid: str = "test",
) -> DataSet:
    """Synthetic regression.

    ``kind="circle"``: docs/theory.md §1.6, ``n_train`` points on the unit circle, y = sin 3 theta + cos(theta)/2,
    grid at ``n_test`` angles between them. ``kind="mlp"``: inputs N(0, I_d / d), targets from a random tanh
    teacher network of ``teacher_width`` units (plus Gaussian ``noise``). ``grid="train"`` evaluates on the
    training points (with their noisy targets) instead of the test points, e.g. to watch interpolation.
    """
    if grid not in ("test", "train"):
        raise ValidationError(f"teacher grid={grid!r}: use 'test' (held-out points) or 'train' (the training points).")
    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0):
        raise ValidationError(f"teacher noise={noise!r}: must be a finite number >= 0 (the targets' noise std).")
    rng = np.random.default_rng(seed)
    if kind == "circle":

        def circle(n, offset):
            th = 2 * np.pi * (np.arange(n) + offset) / n
            return np.stack([np.cos(th), np.sin(th)], 1), (np.sin(3 * th) + 0.5 * np.cos(th))[:, None]

        x, y = circle(n_train, 0.0)
        xt, yt = circle(n_test, 0.5)
        info = {"teacher": "sin(3 theta) + cos(theta)/2 on the unit circle"}
    elif kind == "mlp":
        w = rng.normal(size=(d, teacher_width))
        c = rng.normal(size=(teacher_width, 1)) / np.sqrt(teacher_width)
        x = rng.normal(size=(n_train, d)) / np.sqrt(d)
        xt = rng.normal(size=(n_test, d)) / np.sqrt(d)
        y, yt = np.tanh(x @ w) @ c, np.tanh(xt @ w) @ c
        info = {"teacher": f"tanh MLP, width {teacher_width}, seed {seed}"}
    else:
        raise ValidationError(f"teacher kind={kind!r}: use 'circle' or 'mlp'.")
    if noise:
        y = y + noise * rng.normal(size=y.shape)
    if grid == "train":
        xt, yt = x, y
    return DataSet(f"teacher-{kind}", x, y, EvalGrid(xt, yt), info={**info, "noise": noise, "grid": grid})


def digits(*, n_train: int | None = None, n_test: int = 300, seed: int = 0, standardize: bool = True) -> DataSet:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), split by a seeded permutation."""
    bunch = require("sklearn.datasets", "the digits data set").load_digits()
    x, labels = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    test, train = perm[:n_test], perm[n_test:]
    if n_train is not None:
        train = train[:n_train]
    if standardize:
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
        x = (x - mu) / sd
    return _classification(
        "digits",
        x[train],
        labels[train],
        x[test],
        labels[test],
        10,
        {"source": "sklearn.datasets.load_digits", "split_seed": seed},
    )


def mnist1d(*, n_samples: int = 5000, seed: int = 42, n_test: int | None = None) -> DataSet:
    """mnist1d generated offline by its package (never its download URL); 40 features, 10 classes."""
    data = require("mnist1d.data", "the mnist1d data set")
    args = data.get_dataset_args()
    args.num_samples, args.seed = int(n_samples), int(seed)
    d = data.make_dataset(args)
    xt, yt = d["x_test"], d["y_test"]
    if n_test is not None:
        xt, yt = xt[:n_test], yt[:n_test]
    return _classification("mnist1d", d["x"], d["y"], xt, yt, 10, {"source": "mnist1d.data.make_dataset", "seed": seed})


def _read_idx(path: Path, ndim_expected: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataNotFoundError(f"{path} cannot be read ({type(e).__name__}: {e}); the file is malformed.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataNotFoundError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    if ndim != ndim_expected or len(raw) < 4 + 4 * ndim:
        raise DataNotFoundError(
            f"{path}: an IDX header of {ndim} dims, expected {ndim_expected} (images: 3, labels: 1); wrong file?"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataNotFoundError(f"{path}: header says {shape} but holds {data.size} bytes; the file is truncated.")
    return data.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataNotFoundError(f"{root} has no {stem} (or {stem}.gz); expected the four MNIST IDX files there.")


def mnist(path: str | os.PathLike, *, n_train: int | None = None, n_test: int | None = None) -> DataSet:
    """Load MNIST from a local directory of IDX files (``train-images-idx3-ubyte`` etc., optionally .gz).

    Normalized with mean 0.1307 and std 0.3081 as in the authors' code. Never downloads.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(
            f"MNIST directory {root} does not exist; download the IDX files yourself and pass their folder."
        )
    xi = _read_idx(_find(root, "train-images-idx3-ubyte"), 3)
    yi = _read_idx(_find(root, "train-labels-idx1-ubyte"), 1)
    xt = _read_idx(_find(root, "t10k-images-idx3-ubyte"), 3)
    yt = _read_idx(_find(root, "t10k-labels-idx1-ubyte"), 1)
    for images, labels, which in ((xi, yi, "train"), (xt, yt, "t10k")):
        if len(images) != len(labels):
            raise DataNotFoundError(f"{root}: {which} has {len(images)} images but {len(labels)} labels.")
        _check_labels(labels, root / which)
    norm = lambda a: (a.reshape(len(a), -1) / 255.0 - 0.1307) / 0.3081  # noqa: E731
    return _classification(
        "mnist",
        norm(xi)[:n_train],
        yi[:n_train].astype(np.int64),
        norm(xt)[:n_test],
        yt[:n_test].astype(np.int64),
        10,
        {"source": str(root)},
    )


def cifar10(path: str | os.PathLike, *, n_train: int | None = None, n_test: int | None = None) -> DataSet:
    """Load CIFAR-10 from a local ``cifar-10-batches-bin`` directory, normalized per channel.

    The binary version (fixed-size records): no pickle is ever loaded. Never downloads.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(
            f"CIFAR-10 directory {root} does not exist; pass the folder of the binary version (data_batch_1.bin ...)."
        )

    def load(names):
        xs, ys = [], []
        for n in names:
            p = root / n
            if not p.is_file():
                raise DataNotFoundError(
                    f"{p} is missing; expected data_batch_1..5.bin and test_batch.bin (CIFAR-10 binary version)."
                )
            raw = np.fromfile(p, dtype=np.uint8)
            if raw.size % 3073:
                raise DataNotFoundError(f"{p} has {raw.size} bytes, not a multiple of 3073; the file is malformed.")
            rec = raw.reshape(-1, 3073)
            _check_labels(rec[:, 0], p)
            ys.append(rec[:, 0].astype(np.int64))
            xs.append(rec[:, 1:].reshape(-1, 3, 1024).astype(np.float64) / 255.0)
        return np.concatenate(xs), np.concatenate(ys)

    x, y = load([f"data_batch_{i}.bin" for i in range(1, 6)])
    xt, yt = load(["test_batch.bin"])
    mu, sd = x.mean((0, 2), keepdims=True), x.std((0, 2), keepdims=True)
    flat = lambda a: ((a - mu) / sd).reshape(len(a), -1)  # noqa: E731
    return _classification(
        "cifar10", flat(x)[:n_train], y[:n_train], flat(xt)[:n_test], yt[:n_test], 10, {"source": str(root)}
    )


def _check_labels(labels: np.ndarray, where) -> None:
    if labels.size == 0:
        raise DataNotFoundError(f"{where} holds no records; the file is empty or truncated.")
    if int(labels.max()) >= 10:
        raise DataNotFoundError(f"{where} has label {int(labels.max())}; expected classes 0..9. Wrong or corrupt file?")


LOADERS = {"teacher": teacher, "digits": digits, "mnist1d": mnist1d, "mnist": mnist, "cifar10": cifar10}


# bounds of the size options, checked before a loader allocates anything
_SIZE_LIMITS = {
    "n_train": 10_000_000,
    "n_test": 1_000_000,
    "n_samples": 10_000_000,
    "d": 100_000,
    "teacher_width": 1_000_000,
}


def validate_options(name: str, options: dict) -> list[str]:
    """Problems with a loader's keyword options (names, types, sizes), found without loading anything."""
    signature = inspect.signature(LOADERS[name]).parameters
    params = {k: p for k, p in signature.items() if p.kind is p.KEYWORD_ONLY}
    positional = [k for k, p in signature.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    problems = []
    for key, value in options.items():
        if key not in params and key not in positional:
            problems.append(
                f"{key!r} is not an option of data set {name!r}; its options are {sorted([*positional, *params])}."
            )
            continue
        problems += _option_problems(key, value, str(signature[key].annotation))
    for key in positional:
        if key not in options:
            problems.append(f'data set {name!r} needs the option {key!r} (e.g. {{ {key} = "/data/{name}" }}).')
    if name == "teacher":
        n = options.get("n_train", 8), options.get("n_test", 5), options.get("d", 2)
        if all(isinstance(v, int) for v in n) and (n[0] + n[1]) * n[2] * 8 > 4e9:
            problems.append(f"n_train, n_test, d = {n}: the data would take {(n[0] + n[1]) * n[2] * 8 / 1e9:.3g} GB.")
    return problems


def _option_problems(key: str, value, ann: str) -> list[str]:
    """One option's value against its annotation (a path, an integer in range, a number, a flag or a string)."""
    if key == "path" or "PathLike" in ann:
        return [] if isinstance(value, str) else [f"{key} = {value!r}: expected a path (a string)."]
    if "int" in ann.split("|")[0] or ann.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [] if value is None and "None" in ann else [f"{key} = {value!r}: expected an integer."]
        low, high = (0 if key == "seed" else 1), _SIZE_LIMITS.get(key, 2**63 - 1)
        return [] if low <= value <= high else [f"{key} = {value:,}: expected an integer in [{low}, {high:,}]."]
    if ann.startswith("float"):
        ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
        return [] if ok else [f"{key} = {value!r}: expected a finite number."]
    if ann.startswith("bool"):
        return [] if isinstance(value, bool) else [f"{key} = {value!r}: expected true or false."]
    if ann.startswith("str") and not isinstance(value, str):
        return [f"{key} = {value!r}: expected a string."]
    return []


def load_dataset(name: str, **kwargs) -> DataSet:
    """Load a data set by name (``teacher``, ``digits``, ``mnist1d``, ``mnist``, ``cifar10``)."""
    if name not in LOADERS:
        raise ValidationError(f"data set {name!r} is not one of {sorted(LOADERS)}.")
    try:
        return LOADERS[name](**kwargs)
    except TypeError as e:
        raise ValidationError(f"data set {name!r}: {e}.") from None
