"""Shared test set-up: the real CIFAR-10 beside the repo, GPU tests skipped without CUDA."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CIFAR_SPEED_DATA", REPO.parent / "shared" / "cifar10"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible to PyTorch)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.fail(f"the real CIFAR-10 is expected at {DATA_DIR} (set CIFAR_SPEED_DATA)")
    return DATA_DIR


def write_fake_cifar(folder: Path, n_train: int = 5500, n_test: int = 500, seed: int = 0) -> dict:
    """A small data set in the real on-disk format (Python-2-style pickles of numpy arrays), with
    class-dependent colours so models can learn something. Returns its array checksums."""
    import hashlib
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def make(n):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        base = (labels[:, None] * 25).astype(np.int64)
        data = np.clip(base + rng.integers(0, 40, (n, 3072)), 0, 255).astype(np.uint8)
        return data, labels

    def dump(path, data, labels):
        with open(path, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": "fake"}, f, protocol=2)

    sums = {}
    train_data, train_labels = make(n_train)
    for i, chunk in enumerate(np.array_split(np.arange(n_train), 5), 1):
        dump(folder / f"data_batch_{i}", train_data[chunk], train_labels[chunk])
    test_data, test_labels = make(n_test)
    dump(folder / "test_batch", test_data, test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["c%d" % i for i in range(10)]}, f, protocol=2)
    for split, (d, l) in {"train": (train_data, train_labels), "test": (test_data, test_labels)}.items():
        sums[split] = (hashlib.sha256(d.tobytes()).hexdigest(), hashlib.sha256(l.astype(np.uint8).tobytes()).hexdigest())
    return sums


@pytest.fixture(scope="session")
def _fake_cifar_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_cifar")
    sums = write_fake_cifar(root / "cifar-10-batches-py")
    return root, sums


@pytest.fixture
def fake_data(_fake_cifar_folder, monkeypatch):
    """A small fake CIFAR-10 accepted by the loader (its checksums patched in) for fast training tests."""
    from cifar_speed import data as D

    root, sums = _fake_cifar_folder
    monkeypatch.setattr(D, "SHA256", sums)
    D._load.cache_clear()
    yield root
    D._load.cache_clear()
