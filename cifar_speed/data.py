"""CIFAR-10 from the standard `cifar-10-batches-py` folder into uint8 tensors, verified by content.

Read top to bottom: where the data lives -> a restricted unpickler -> checksums of the arrays ->
splits -> augmentation on whole batches of tensors -> an epoch iterator that trains on them.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CifarSpeedError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]

# sha256 of the uint8 arrays (data N x 3072 in batch order, labels as uint8), not of the pickle bytes:
# faithful copies of the data set with other pickle bytes are accepted, any changed pixel is not.
SHA256 = {
    "train": ("9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111",
              "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253"),
    "test": ("177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
             "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"),
}
# torchvision's published archive, for `cifar-speed data download`.
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"

# Per-channel statistics of the 50,000 training images (pixel / 255).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# The PyTorch distillation tutorial normalises with ImageNet's statistics; its recipes keep that.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- where the data lives --------------------------------------------------------------------------

def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cifar-speed"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, then $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed. Returns the batches folder.

    The given folder may be the `cifar-10-batches-py` folder itself or the one that contains it.
    """
    base = Path(data_dir or os.environ.get("CIFAR_SPEED_DATA") or default_data_dir()).expanduser()
    for candidate in (base, base / FOLDER):
        if (candidate / "batches.meta").is_file() or (candidate / "test_batch").is_file():
            return candidate
    raise CifarSpeedError(
        f"CIFAR-10 not found in {base} (looked for {FOLDER}/): pass --data-dir, set CIFAR_SPEED_DATA, "
        f"or run `cifar-speed data download --data-dir {base}`")


def download(data_dir: str | os.PathLike | None = None) -> Path:
    """Fetch torchvision's archive, check its published MD5, extract it (network needed)."""
    from torchvision.datasets.utils import download_and_extract_archive

    root = Path(data_dir or os.environ.get("CIFAR_SPEED_DATA") or default_data_dir()).expanduser()
    try:
        download_and_extract_archive(ARCHIVE_URL, download_root=str(root), md5=ARCHIVE_MD5)
    except Exception as e:  # network errors come in many types; the user needs one line
        raise CifarSpeedError(f"download of {ARCHIVE_URL} failed: {e}") from None
    verify(root / FOLDER)
    return root / FOLDER


# -- reading the batches safely --------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers, nothing else: a hostile pickle cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles the bytes inside an array (protocol 2); only encodes a str
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy 2 moved it; avoid the deprecation shim
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CifarSpeedError(f"{path} is missing: the CIFAR-10 folder is incomplete") from None
    try:
        # The original batches are Python 2 pickles; latin1 is the encoding numpy documents for them.
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64)
    except Exception as e:
        raise CifarSpeedError(f"{path} is truncated or not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise CifarSpeedError(f"{path} has shape {data.shape}, expected N x 3072 with N labels")
    return data, labels


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@dataclass(frozen=True)
class Split:
    """Images as uint8 [N, 3, 32, 32] and labels as int64 [N], on the CPU."""
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@functools.lru_cache(maxsize=4)
def _load(folder: str, split: str, check: bool) -> Split:
    files = TRAIN_FILES if split == "train" else TEST_FILES
    parts = [_read_batch(Path(folder) / f) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if check:
        want_data, want_labels = SHA256[split]
        if _sha256(data) != want_data or _sha256(labels.astype(np.uint8)) != want_labels:
            raise CifarSpeedError(
                f"CIFAR-10 {split} data in {folder} does not match the known checksums "
                "(a changed or corrupt copy): re-download it with `cifar-speed data download`")
    images = torch.from_numpy(data).view(-1, 3, 32, 32)
    return Split(images, torch.from_numpy(labels))


def load_split(split: str, data_dir: str | os.PathLike | None = None, verify: bool = True) -> Split:
    """The official 50,000 training or 10,000 test images, read once per process and kept in memory."""
    if split not in SHA256:
        raise CifarSpeedError(f"unknown split {split!r}: use 'train' or 'test'")
    return _load(str(resolve_data_dir(data_dir)), split, verify)


def verify(data_dir: str | os.PathLike | None = None) -> dict:
    """Load and checksum both splits; returns the checksums for sidecars."""
    for split in SHA256:
        load_split(split, data_dir, verify=True)
    return {s: {"data_sha256": d, "labels_sha256": l} for s, (d, l) in SHA256.items()}


# -- splits ----------------------------------------------------------------------------------------

def holdout(train: Split, n_val: int, seed: int) -> tuple[Split, Split]:
    """A seeded validation hold-out from the training images (for recipes that early-stop)."""
    if not 0 < n_val < len(train):
        raise CifarSpeedError(f"validation hold-out of {n_val} images needs 0 < n < {len(train)} training images")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(perm[n_val:]), train.subset(perm[:n_val])


def report_split(train: Split, seed: int = 42) -> tuple[Split, Split, Split]:
    """The report's 70 / 20 / 10 split of the 50,000 training images (train / validation / its 'test')."""
    n = len(train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = int(0.7 * n), int(0.9 * n)
    return train.subset(perm[:a]), train.subset(perm[a:b]), train.subset(perm[b:])


# -- preprocessing and augmentation, on whole batches ----------------------------------------------

def normalize(images: torch.Tensor, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float, (x/255 - mean) / std."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((images.float() / 255.0 - mean_t) / std_t).to(dtype)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(len(x), generator=gen, device=gen.device).to(x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `pad` pixels in x and y (reflection padding), as random crops do.

    One slice per distinct shift, so the cost is (2*pad+1)^2 batched copies, not one per image.
    """
    if pad == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x.float() if x.dtype == torch.uint8 else x, (pad,) * 4, mode="reflect").to(x.dtype)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    out = torch.empty_like(x)
    for i in range(2 * pad + 1):
        for j in range(2 * pad + 1):
            sel = (dy == i) & (dx == j)
            if sel.any():
                out[sel] = padded[sel, :, i:i + h, j:j + w]
    return out


def random_affine(x: torch.Tensor, max_degrees: float, max_shift: float, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (+-max_degrees) and shift (+-max_shift of the size) as Keras' generator does,
    for a float batch, with one affine_grid + grid_sample call."""
    n = len(x)
    angle = (torch.rand(n, generator=gen, device=gen.device) * 2 - 1) * max_degrees * torch.pi / 180
    shift = (torch.rand(n, 2, generator=gen, device=gen.device) * 2 - 1) * max_shift * 2  # grid units are [-1, 1]
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, torch.float32), list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(x.dtype)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square at a random centre of each image (clipped at the border)."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=gen, device=gen.device).to(x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=gen, device=gen.device).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(inside.unsqueeze(1), 0)


@dataclass
class Augment:
    """What a recipe asks for; all zeros means no augmentation (the tutorial's recipes)."""
    flip: bool = False
    translate: int = 0          # pixels, reflection padded
    rotate_degrees: float = 0.0  # Keras-style rotation range
    shift_fraction: float = 0.0  # Keras-style width/height shift range
    cutout: int = 0              # square side in pixels

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """x: a normalised float batch [N,3,32,32]."""
        if self.flip:
            x = random_flip(x, gen)
        if self.translate:
            x = random_translate(x, self.translate, gen)
        if self.rotate_degrees or self.shift_fraction:
            x = random_affine(x, self.rotate_degrees, self.shift_fraction, gen)
        if self.cutout:
            x = cutout(x, self.cutout, gen)
        return x


def batches(split: Split, batch_size: int, mean, std, *, augment: Augment | None = None, shuffle: bool = False,
            gen: torch.Generator | None = None, device: str | torch.device = "cpu", drop_last: bool = False,
            rank: int = 0, world_size: int = 1, dtype: torch.dtype = torch.float32):
    """Yield (index, images, labels) batches: normalised, augmented on `device`, no per-image Python.

    With world_size > 1 each rank takes its own contiguous slice of every global batch, so all ranks
    see the same permutation (same `gen` seed) and together cover exactly one global batch per step.
    """
    n = len(split)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        if world_size > 1:
            idx = idx.tensor_split(world_size)[rank]
        x = normalize(split.images[idx].to(device, non_blocking=True), mean, std)
        if augment is not None:
            x = augment(x, gen)
        yield idx, x.to(dtype).contiguous(), split.labels[idx].to(device, non_blocking=True)


# -- JPEG: the test set as users' images arrive, and a training augmentation that matches it ---------

# The encoder is Pillow's (libjpeg-turbo in its wheels), baseline, 4:2:0 chroma subsampling, no
# optimisation passes: the common default of cameras and web pipelines. A different libjpeg build may
# round differently; `jpeg_test_split` records the content hash so a reader can tell.
# sha256 of the official test set after the quality-75 round trip with Pillow 13's libjpeg-turbo: a
# regression check on the encoder (tests), and how `data jpeg` tells a reader whether their copy matches.
JPEG75_TEST_SHA256 = "b698d41aa1bb3aac2930e97e34e4b1e42590c494dd5190151a30ba1d80a0cbed"
JPEG_SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # Pillow's codes


def jpeg_roundtrip(images: torch.Tensor, quality: int | torch.Tensor, subsampling: str = "4:2:0") -> torch.Tensor:
    """uint8 [N,3,H,W] -> the same images encoded as JPEG at `quality` (one int, or one per image) with
    `subsampling` chroma and decoded back, uint8 [N,3,H,W]. Deterministic: same input, same Pillow,
    same bytes. The test set and the augmentation use 4:2:0; tools/jpeg_breakdown.py the others."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise CifarSpeedError(f"jpeg_roundtrip needs uint8 [N,3,H,W] images, got {images.dtype} {tuple(images.shape)}")
    if subsampling not in JPEG_SUBSAMPLINGS:
        raise CifarSpeedError(f"JPEG chroma subsampling must be one of {', '.join(JPEG_SUBSAMPLINGS)}, got {subsampling!r}")
    n = images.shape[0]
    qualities = quality.tolist() if isinstance(quality, torch.Tensor) else [int(quality)] * n
    if any(not 1 <= q <= 100 for q in qualities):
        raise CifarSpeedError(f"JPEG quality must be in 1..100, got {min(qualities)}..{max(qualities)}")
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(hwc)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(hwc[i]).save(buf, format="JPEG", quality=qualities[i], subsampling=JPEG_SUBSAMPLINGS[subsampling])
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def jpeg_roundtrip_batched(images: torch.Tensor, qualities: torch.Tensor) -> torch.Tensor:
    """`jpeg_roundtrip` for the training augmentation: torchvision.io's libjpeg-turbo, one call per
    distinct quality instead of a Python loop over images (Pillow's per-image overhead dominates 32x32
    images). Its defaults are Pillow's (4:2:0, baseline, fancy upsampling), so the bytes are the
    same; a test holds the two to equality at every quality.
    torchvision 0.29 deprecates its image codecs for TorchCodec: where they are gone, Pillow does it."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    except ImportError:
        return jpeg_roundtrip(images, qualities)
    out = torch.empty_like(images)
    with warnings.catch_warnings():  # the deprecation notice, once per call: not the user's concern
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)
        for q in qualities.unique().tolist():
            idx = (qualities == q).nonzero().flatten()
            encoded = encode_jpeg(list(images[idx]), quality=int(q))
            out[idx] = torch.stack(decode_jpeg(encoded, mode=ImageReadMode.RGB))
    return out


def cache_root() -> Path:
    """The one cache folder of every derived file (artifacts, JPEG sets, teacher logits):
    $CIFAR_SPEED_CACHE, else the XDG cache folder's cifar-speed/."""
    base = os.environ.get("CIFAR_SPEED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cifar-speed")
    return Path(base)


def jpeg_cache_dir() -> Path:
    return cache_root() / "derived"


_JPEG_MEMO: dict[tuple[str, int], Split] = {}


def jpeg_version(split: Split, quality: int = 75) -> Split:
    """`split` after a JPEG round trip at `quality`, built once per content and quality and cached on
    disk (numpy .npy, loaded without pickle; a damaged cache file is rebuilt, never trusted)."""
    from .fileio import atomic_path

    source = _sha256(split.images.numpy())
    key = (source, int(quality))
    if key in _JPEG_MEMO:
        return _JPEG_MEMO[key]
    path = jpeg_cache_dir() / f"jpeg{int(quality)}-{source[:16]}.npy"
    images = None
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == tuple(split.images.shape) and arr.dtype == np.uint8:
                images = torch.from_numpy(arr)
        except (OSError, ValueError, EOFError):
            images = None
    if images is None:
        images = jpeg_roundtrip(split.images, quality)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no suffix
            np.save(f, images.numpy(), allow_pickle=False)
    _JPEG_MEMO[key] = Split(images, split.labels)
    return _JPEG_MEMO[key]


def jpeg_test_split(data_dir: str | os.PathLike | None = None, quality: int = 75) -> Split:
    """The official 10,000 test images after a JPEG round trip at `quality`."""
    return jpeg_version(load_split("test", data_dir), quality)


def content_sha256(split: Split) -> str:
    """sha256 of a split's uint8 image array: recorded beside every top1_jpeg figure."""
    return _sha256(split.images.numpy())


@dataclass(frozen=True)
class JpegAugment:
    """JPEG-compress a random `fraction` of each training batch at a quality drawn uniformly from
    [quality_min, quality_max], so a model learns to ignore block and ringing artefacts."""
    fraction: float = 0.0
    quality_min: int = 30
    quality_max: int = 95

    def __call__(self, x: torch.Tensor, mean, std, gen: torch.Generator) -> torch.Tensor:
        """x: a normalised float batch [N,3,H,W] whose pixels came from uint8 images (exact round trip)."""
        if self.fraction <= 0:
            return x
        pick = (torch.rand(len(x), generator=gen) < self.fraction).nonzero().flatten()
        qualities = torch.randint(self.quality_min, self.quality_max + 1, (len(pick),), generator=gen)
        if len(pick) == 0:
            return x
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        chosen = x[pick.to(x.device)].float().cpu()
        pixels = ((chosen * std_t + mean_t) * 255.0).round().clamp(0, 255).to(torch.uint8)
        compressed = normalize(jpeg_roundtrip_batched(pixels, qualities), mean, std).to(x.dtype)
        x = x.clone()
        x[pick.to(x.device)] = compressed.to(x.device)
        return x
