"""Offline data sets: shapes, determinism, local-file formats and their errors. Nothing downloads."""

from __future__ import annotations

import gzip
import socket

import numpy as np
import pytest

from collectors import cifar10, digits, load_dataset, mnist, mnist1d, teacher
from ensemble_stats import errors


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a data loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_teacher_circle_and_mlp():
    c = teacher()
    assert c.x_train.shape == (8, 2) and c.y_train.shape == (8, 1) and c.grid.n_points == 5
    np.testing.assert_allclose(np.linalg.norm(c.x_train, axis=1), 1.0)
    m1, m2 = teacher(kind="mlp", d=6, n_train=30, seed=3), teacher(kind="mlp", d=6, n_train=30, seed=3)
    np.testing.assert_array_equal(m1.x_train, m2.x_train)
    assert m1.task == "regression" and m1.d_in == 6
    with pytest.raises(errors.ValidationError, match="kind='rbf'"):
        teacher(kind="rbf")


def test_digits_one_hot_split_and_standardized():
    d = digits(n_test=200)
    assert d.task == "classification" and d.output_size == 10
    assert len(d.x_train) + d.grid.n_points == 1797
    np.testing.assert_array_equal(d.y_train.argmax(1), d.labels_train)
    assert abs(d.x_train.mean()) < 1e-6


def test_mnist1d_is_generated_offline():
    d = mnist1d(n_samples=500, n_test=50)
    assert d.x_train.shape == (400, 40) and d.grid.n_points == 50 and d.output_size == 10


def _idx(path, arr, gz=False):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def test_mnist_from_local_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 12))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)), gz=True)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 5), gz=True)
    d = mnist(tmp_path)
    assert d.x_train.shape == (12, 784) and d.grid.n_points == 5
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x0c\x01")
    with pytest.raises(errors.DataNotFoundError, match="truncated"):
        mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(errors.DataNotFoundError, match="magic"):
        mnist(tmp_path)


def test_cifar10_binary_and_missing_paths(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in [*((f"data_batch_{i}.bin", 4) for i in range(1, 6)), ("test_batch.bin", 3)]:
        rec = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], 1).astype(np.uint8)
        (tmp_path / name).write_bytes(rec.tobytes())
    d = cifar10(tmp_path)
    assert d.x_train.shape == (20, 3072) and d.grid.n_points == 3
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(errors.DataNotFoundError, match="not a multiple of 3073"):
        cifar10(tmp_path)
    for loader in (mnist, cifar10):
        with pytest.raises(errors.DataNotFoundError, match="does not exist") as info:
            loader(tmp_path / "nowhere")
        assert isinstance(info.value, FileNotFoundError)


def test_load_dataset_by_name():
    assert load_dataset("teacher", n_train=4).x_train.shape == (4, 2)
    with pytest.raises(errors.ValidationError, match="'imagenet' is not one of"):
        load_dataset("imagenet")
    with pytest.raises(errors.ValidationError, match="unexpected keyword"):
        load_dataset("teacher", colour="red")
