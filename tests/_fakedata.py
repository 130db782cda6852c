"""A small fake CIFAR-10 in the real on-disk format, for fast tests (imported by conftest and workers)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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
