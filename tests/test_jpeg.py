"""The JPEG test set and the JPEG training augmentation (issue: accuracy on compressed inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cifar_speed import data as D
from cifar_speed.errors import CifarSpeedError


def _images(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_roundtrip_is_deterministic_and_lossy():
    x = _images()
    a, b = D.jpeg_roundtrip(x, 75), D.jpeg_roundtrip(x, 75)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    # higher quality, closer to the original
    err = lambda q: (D.jpeg_roundtrip(x, q).float() - x.float()).abs().mean().item()  # noqa: E731
    assert err(95) < err(30)


def test_roundtrip_takes_one_quality_per_image():
    x = _images(4)
    q = torch.tensor([30, 75, 75, 95])
    per_image = D.jpeg_roundtrip(x, q)
    assert torch.equal(per_image[1:3], D.jpeg_roundtrip(x[1:3], 75))


def test_batched_roundtrip_gives_pillows_bytes_at_every_quality(data_dir):
    """The augmentation's torchvision.io encode is the test set's Pillow encode, image for image, on real
    test images and on noise, at each quality 1..100 (the README says the two are interchangeable)."""
    real = D.load_split("test", data_dir).images[:100]
    for x in (real, _images(100)):
        q = torch.arange(1, 101)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
        assert torch.equal(D.jpeg_roundtrip_batched(x, q), D.jpeg_roundtrip(x, q))


def test_roundtrip_subsampling_chooses_the_chroma_resolution():
    """4:4:4 keeps each pixel's colour, 4:2:0 one per 2x2 block: on noise, even at quality 100, the
    second loses far more; 4:2:0 is the default (the test set and the augmentation)."""
    x = _images()
    err = lambda s: (D.jpeg_roundtrip(x, 100, s).float() - x.float()).abs().mean().item()  # noqa: E731
    assert err("4:4:4") < err("4:2:2") < err("4:2:0")
    assert torch.equal(D.jpeg_roundtrip(x, 75), D.jpeg_roundtrip(x, 75, "4:2:0"))
    with pytest.raises(CifarSpeedError, match="subsampling"):
        D.jpeg_roundtrip(x, 75, "420")


@pytest.mark.parametrize("bad", [0, 101, -5])
def test_roundtrip_refuses_bad_quality(bad):
    with pytest.raises(CifarSpeedError, match="quality"):
        D.jpeg_roundtrip(_images(2), bad)


def test_jpeg_version_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_SPEED_CACHE", str(tmp_path))
    D._JPEG_MEMO.clear()
    split = D.Split(_images(8), torch.arange(8))
    first = D.jpeg_version(split, 60)
    files = list((tmp_path / "derived").glob("*.npy"))
    assert len(files) == 1 and not list((tmp_path / "derived").glob(".*"))  # no temporaries left
    D._JPEG_MEMO.clear()
    assert torch.equal(D.jpeg_version(split, 60).images, first.images)  # read back from disk
    files[0].write_bytes(b"")  # a damaged cache file is rebuilt, never trusted
    D._JPEG_MEMO.clear()
    assert torch.equal(D.jpeg_version(split, 60).images, first.images)
    assert torch.equal(first.labels, split.labels)


def test_official_jpeg75_set_matches_reference_checksum(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_SPEED_CACHE", str(tmp_path))
    D._JPEG_MEMO.clear()
    jpeg = D.jpeg_test_split(data_dir, 75)
    assert len(jpeg) == 10_000
    assert D.content_sha256(jpeg) == D.JPEG75_TEST_SHA256
    clean = D.load_split("test", data_dir)
    error = (jpeg.images.float() - clean.images.float()).abs().mean().item()
    assert 5.0 < error < 6.5  # the public copy: 5.8 of 255


def test_augment_compresses_about_the_fraction_and_keeps_range():
    mean, std = D.CIFAR_MEAN, D.CIFAR_STD
    x = D.normalize(_images(200), mean, std)
    aug = D.JpegAugment(fraction=0.5, quality_min=30, quality_max=95)
    y = aug(x, mean, std, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    changed = (y != x).flatten(1).any(1).float().mean().item()
    assert 0.35 < changed < 0.65
    # every output pixel is still a uint8 pixel value, normalised
    lo = D.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), mean, std)
    hi = D.normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), mean, std)
    assert (y >= lo - 1e-5).all() and (y <= hi + 1e-5).all()
    # same generator state, same batch
    assert torch.equal(y, aug(x, mean, std, torch.Generator().manual_seed(1)))


def test_augment_off_is_identity():
    x = D.normalize(_images(4), D.CIFAR_MEAN, D.CIFAR_STD)
    assert D.JpegAugment(0.0)(x, D.CIFAR_MEAN, D.CIFAR_STD, torch.Generator()) is x
