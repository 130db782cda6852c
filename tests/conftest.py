"""Shared test set-up: the real CIFAR-10 beside the repo, GPU tests skipped without CUDA."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from _fakedata import REPO, write_fake_cifar  # noqa: F401  (shared with tests that run subprocesses)

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


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Every test's artifacts, JPEG sets and teacher logits go to a throw-away cache, never ~/.cache:
    a test must not depend on, or leave behind, what an earlier run built."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CIFAR_SPEED_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()
