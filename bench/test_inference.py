"""Inference benchmarks: shipped checkpoints x backends / precisions available here x batch sizes.

    pytest bench --benchmark-only [--benchmark-json out.json]
    CIFAR_SPEED_BENCH_BATCHES=128 pytest bench --benchmark-only -k "cnn and compile"
    CIFAR_SPEED_BENCH_ACCURACY=0 pytest bench --benchmark-only     # timings only, no scoring

Each case rotates among four input batches already on the device. On CUDA the timed call ends with
torch.cuda.synchronize(), so pytest-benchmark's wall-clock timer sees the kernels, not their launch.
`cifar-speed bench` is the full harness (warm-up until stable, accuracy, the disturbed flag); this
suite is the pytest-benchmark view of the same runners (artifacts.runner_for: for onnxrt and
openvino, the artifact in the cache that `cifar-speed compile` writes). Each runner is also scored
once, as `bench` scores a cell: top-1 on the official test set and on its JPEG round trip
(`top1_jpeg75`), at the largest batch, in the case's extra_info["accuracy"].
"""
from __future__ import annotations

import itertools
import os

import pytest
import torch

from cifar_speed import artifacts, backends, sweep
from cifar_speed.checkpoint import load_checkpoint, shipped_checkpoints
from cifar_speed.defaults import DEFAULT_JPEG_QUALITY
from cifar_speed.errors import CifarSpeedError
from cifar_speed.models import flops_per_image

DEVICE = backends.default_device()
BATCHES = [int(b) for b in os.environ.get("CIFAR_SPEED_BENCH_BATCHES", "32,64,128").split(",")]
CHECKPOINTS = shipped_checkpoints()
COMBOS = [(b, p) for b in backends.BACKENDS for p in backends.PRECISIONS
          if backends.availability(b, p, DEVICE)[0]]
SCORE = os.environ.get("CIFAR_SPEED_BENCH_ACCURACY", "1") != "0"

_runners: dict = {}
_test_sets: dict = {}


def _accuracy(runner, meta) -> dict:
    """The runner's top-1 on the test set and its JPEG round trip, as `cifar-speed bench` scores a
    cell (sweep.score at the largest batch); a reason instead where it cannot be scored."""
    if not SCORE:
        return {"status": "skipped", "reason": "CIFAR_SPEED_BENCH_ACCURACY=0"}
    try:
        if not _test_sets:
            from cifar_speed.data import jpeg_test_split, load_split

            _test_sets["clean"], _test_sets["jpeg"] = load_split("test"), jpeg_test_split(quality=DEFAULT_JPEG_QUALITY)
    except CifarSpeedError as e:
        return {"status": "unavailable", "reason": str(e)}
    clean, jpeg = _test_sets["clean"], _test_sets["jpeg"]
    ev = sweep.EvalSet(meta.normalize_images(clean.images), clean.labels, meta.normalize_images(jpeg.images),
                       DEFAULT_JPEG_QUALITY)
    return sweep.score(runner, ev, max(BATCHES))[1]


def _runner(ckpt, backend, precision):
    key = (str(ckpt), backend, precision)
    if key not in _runners:
        _runners.clear()   # one compiled program alive at a time
        model, meta = load_checkpoint(ckpt)
        # The same runner `cifar-speed bench` times: the cached artifact where the backend has one.
        runner = artifacts.runner_for(ckpt, backend, precision, DEVICE, BATCHES, model=model, meta=meta)
        _runners[key] = (runner, flops_per_image(model), _accuracy(runner, meta))
    return _runners[key]


cases = [pytest.param(c, b, p, n, id=f"{c.stem}-{b}-{p}-b{n}")
         for c in CHECKPOINTS for (b, p) in COMBOS for n in BATCHES]
if not cases:
    cases = [pytest.param(None, None, None, None, marks=pytest.mark.skip(
        reason="no shipped checkpoints in results/checkpoints/ (train them first)"), id="no-checkpoints")]


@pytest.mark.parametrize("ckpt,backend,precision,batch", cases)
def test_inference(benchmark, ckpt, backend, precision, batch):
    runner, flops, accuracy = _runner(ckpt, backend, precision)
    g = torch.Generator().manual_seed(0)
    inputs = itertools.cycle([torch.randn(batch, 3, 32, 32, generator=g).to(DEVICE) for _ in range(4)])
    if DEVICE == "cuda":
        def call():
            y = runner(next(inputs))
            torch.cuda.synchronize()
            return y
    else:
        def call():
            return runner(next(inputs))
    for _ in range(5):      # compile / autotune outside the timed rounds
        call()
    benchmark.extra_info.update({"model": ckpt.stem, "backend": backend, "precision": precision,
                                 "batch_size": batch, "device": DEVICE, "runner": runner.info,
                                 "flops_per_image": flops, "accuracy": accuracy})
    benchmark.pedantic(call, rounds=30, iterations=1, warmup_rounds=5)
    median = benchmark.stats.stats.median
    benchmark.extra_info["images_per_s_median"] = batch / median
    benchmark.extra_info["gflops_median"] = flops * batch / median / 1e9
