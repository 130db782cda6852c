import pickle

import pytest
import torch

from cifar_speed import data as D
from cifar_speed.errors import CifarSpeedError


def test_real_data_matches_published_checksums(data_dir):
    sums = D.verify(data_dir)
    assert sums["test"]["data_sha256"].startswith("177777c3")
    test = D.load_split("test", data_dir)
    train = D.load_split("train", data_dir)
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert train.images.shape == (50000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert torch.bincount(train.labels).tolist() == [5000] * 10


def test_train_mean_matches_published_statistics(data_dir):
    train = D.load_split("train", data_dir)
    mean = train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(D.CIFAR_MEAN), atol=1e-4)


def test_loaded_once_per_process(data_dir):
    assert D.load_split("test", data_dir) is D.load_split("test", data_dir)


def test_missing_folder_says_how_to_get_the_data(tmp_path):
    with pytest.raises(CifarSpeedError, match="cifar-speed data download"):
        D.load_split("test", tmp_path)


def test_env_variable_is_used(monkeypatch, fake_data):
    monkeypatch.setenv("CIFAR_SPEED_DATA", str(fake_data))
    assert D.resolve_data_dir(None) == fake_data / D.FOLDER


def _copy(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_batch_is_refused(fake_data, tmp_path):
    folder = _copy(fake_data / D.FOLDER, tmp_path / D.FOLDER)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CifarSpeedError, match="truncated"):
        D.load_split("test", tmp_path)


def test_changed_pixel_fails_the_checksum(fake_data, tmp_path):
    folder = _copy(fake_data / D.FOLDER, tmp_path / D.FOLDER)
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # test-only: our own fake file
    batch["data"][0, 0] ^= 1
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(CifarSpeedError, match="checksums"):
        D.load_split("test", tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unpickler_refuses_code(tmp_path, fake_data):
    folder = _copy(fake_data / D.FOLDER, tmp_path / D.FOLDER)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f, protocol=2)
    with pytest.raises(CifarSpeedError, match=r"refusing to load (__builtin__|builtins)\.print"):
        D.load_split("test", tmp_path)


def test_report_split_is_70_20_10_disjoint_and_seeded(data_dir):
    train = D.load_split("train", data_dir)
    a, b, c = D.report_split(train, seed=42)
    assert (len(a), len(b), len(c)) == (35000, 10000, 5000)
    a2, _, _ = D.report_split(train, seed=42)
    assert torch.equal(a.labels, a2.labels)
    a3, _, _ = D.report_split(train, seed=1)
    assert not torch.equal(a.labels, a3.labels)


def test_holdout_sizes_and_bounds(fake_data):
    train = D.load_split("train", fake_data)
    tr, val = D.holdout(train, 500, seed=0)
    assert len(tr) + len(val) == len(train) and len(val) == 500
    with pytest.raises(CifarSpeedError):
        D.holdout(train, len(train), seed=0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_mirrors_exactly_the_selected_images():
    x = torch.randn(64, 3, 8, 8)
    y = D.random_flip(x, _gen())
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert torch.all(flipped | kept) and flipped.any() and kept.any()


def test_translate_keeps_shape_and_content_shifted():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    y = D.random_translate(x, 2, _gen())
    assert y.shape == x.shape
    for i in range(2):  # each output is a window of the reflection-padded input
        padded = torch.nn.functional.pad(x[i:i + 1], (2, 2, 2, 2), mode="reflect")[0]
        assert any(torch.equal(y[i], padded[:, a:a + 8, b:b + 8]) for a in range(5) for b in range(5))


def test_cutout_zeroes_a_square():
    x = torch.ones(16, 3, 32, 32)
    y = D.cutout(x, 8, _gen())
    zeros_per_image = (y[:, 0] == 0).flatten(1).sum(1)
    assert torch.all(zeros_per_image > 0) and torch.all(zeros_per_image <= 81)
    assert torch.equal(y[:, 0] == 0, y[:, 2] == 0)  # same square on every channel


def test_affine_and_full_augment_shapes():
    x = torch.randn(8, 3, 32, 32)
    aug = D.Augment(flip=True, translate=4, rotate_degrees=15, shift_fraction=0.1, cutout=8)
    assert aug(x, _gen()).shape == x.shape
    assert torch.equal(aug(x, _gen(3)), aug(x, _gen(3)))  # deterministic given the generator


def test_batches_normalise_and_shard(fake_data):
    train = D.load_split("train", fake_data)
    whole = list(D.batches(train, 100, D.CIFAR_MEAN, D.CIFAR_STD))
    assert sum(len(y) for _, _, y in whole) == len(train)
    x0 = whole[0][1]
    assert x0.dtype == torch.float32 and abs(x0.mean().item()) < 5
    ranks = [list(D.batches(train, 100, D.CIFAR_MEAN, D.CIFAR_STD, rank=r, world_size=2)) for r in range(2)]
    for (i0, _, _), (i1, _, _), (i, _, _) in zip(*ranks, whole):
        assert torch.equal(torch.cat([i0, i1]), i)  # two ranks together cover each global batch


def test_normalize_matches_formula():
    img = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = D.normalize(img, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(out, torch.full_like(out, 2.0))
