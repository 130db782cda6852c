"""Harness: percentile maths, summaries, the disturbed-measurement flag, warm-up, DAWNBench mode."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch

from cifar_speed import harness
from cifar_speed.backends import Runner


def test_percentile_matches_numpy_linear():
    rng = random.Random(0)
    for n in (1, 2, 7, 100, 1001):
        xs = [rng.random() for _ in range(n)]
        for q in (0, 1, 25, 50, 90, 99, 100):
            assert harness.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12, abs=1e-15)


def test_percentile_small_cases():
    assert harness.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert harness.percentile([1.0, 2.0], 50) == 1.5
    assert harness.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    with pytest.raises(ValueError):
        harness.percentile([], 50)
    with pytest.raises(ValueError):
        harness.percentile([1.0], 101)


def test_summarize():
    times = [0.010] * 9 + [0.020]           # seconds per batch of 100
    s = harness.summarize(times, 100)
    assert s["n"] == 10
    assert s["median_ms"] == pytest.approx(10.0)
    assert s["min_ms"] == pytest.approx(10.0) and s["max_ms"] == pytest.approx(20.0)
    assert s["mean_ms"] == pytest.approx(11.0)
    assert s["p90_ms"] == pytest.approx(11.0)      # linear between 10 and 20 at 0.1 of the way
    assert s["p99_ms"] == pytest.approx(19.1)
    assert s["images_per_s"] == pytest.approx(10_000.0)
    assert s["ms_per_image"] == pytest.approx(0.1)


@pytest.mark.parametrize("cpu,wall,threads,expected", [
    (2.0, 1.0, 2, False),   # both cores busy the whole time
    (1.9, 1.0, 2, False),
    (1.0, 1.0, 2, True),    # half the machine was someone else's
    (0.1, 1.0, 1, True),
    (0.9, 1.0, 1, False),
    (0.0, 0.0, 2, True),
])
def test_disturbed_flag(cpu, wall, threads, expected):
    flag, ratio = harness.disturbed(cpu, wall, threads)
    assert flag is expected
    if wall:
        assert ratio == pytest.approx(cpu / wall)


def test_is_stable():
    assert not harness.is_stable([1.0] * 5, window=3, tolerance=0.05)
    assert harness.is_stable([1.0, 1.01, 0.99, 1.0, 1.02, 0.98], window=3, tolerance=0.05)
    assert not harness.is_stable([5.0, 5.0, 5.0, 1.0, 1.0, 1.0], window=3, tolerance=0.05)


def _runner(fn):
    return Runner(fn, "test", "fp32", "cpu")


def test_measure_records_everything_and_rotates_inputs():
    seen = []

    def fn(x):
        seen.append(x.data_ptr())
        return x.sum(dim=(1, 2, 3)).unsqueeze(1).expand(-1, 10)

    s = harness.measure(_runner(fn), 8, harness.QUICK)
    for key in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "images_per_s", "mode", "cpu_wall_ratio",
                "disturbed", "warmup_reps", "warmup_stable", "threads", "timer"):
        assert key in s
    assert s["n"] >= harness.QUICK.min_reps and s["mode"] == "device" and s["batch_size"] == 8
    assert len(set(seen)) == harness.QUICK.n_inputs == s["inputs_rotated"]


def test_sleeping_runner_is_flagged_disturbed():
    # A call that waits instead of computing uses no CPU: exactly what a preempted run looks like.
    def fn(x):
        time.sleep(0.002)
        return torch.zeros(len(x), 10)

    s = harness.measure(_runner(fn), 4, harness.QUICK)
    assert s["disturbed"] is True and s["cpu_wall_ratio"] < 0.5


def test_warmup_waits_for_stability():
    calls = {"n": 0}

    def fn(x):   # the first calls are slow (compilation, caches), then steady
        calls["n"] += 1
        time.sleep(0.02 if calls["n"] <= 3 else 0.001)
        return torch.zeros(len(x), 10)

    settings = harness.Settings(min_time_s=0.01, min_reps=3, warmup_min_reps=1, warmup_max_s=5, warmup_window=3,
                                warmup_tolerance=0.5)
    s = harness.measure(_runner(fn), 2, settings)
    # The three slow calls all happened during warm-up (it needs two agreeing windows after them).
    assert s["warmup_stable"] and s["warmup_reps"] >= 3 + 3
    assert calls["n"] == s["warmup_reps"] + s["n"]


def test_measure_rejects_unknown_mode():
    with pytest.raises(ValueError):
        harness.measure(_runner(lambda x: x), 2, harness.QUICK, mode="teleport")


def test_make_inputs_from_source_and_noise():
    src = torch.randn(50, 3, 32, 32)
    xs = harness.make_inputs(16, "cpu", "device", 4, src)
    assert len(xs) == 4 and all(x.shape == (16, 3, 32, 32) for x in xs)
    assert not torch.equal(xs[0], xs[1])
    noise = harness.make_inputs(64, "cpu", "device", 2, src)    # source too small: seeded noise
    assert noise[0].shape == (64, 3, 32, 32)


def test_dawnbench_one_image_at_a_time():
    sizes = []

    def fn(x):
        sizes.append(len(x))
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    images, labels = torch.randn(20, 3, 32, 32), torch.tensor([0] * 10 + [1] * 10)
    r = harness.dawnbench_latency(_runner(fn), images, labels, warmup=3)
    assert set(sizes) == {1} and len(sizes) == 23
    assert r["images"] == 20 and r["top1"] == pytest.approx(0.5)
    assert r["ms_per_image"] == pytest.approx(r["total_s"] / 20 * 1e3)


def test_matmul_peak_is_positive():
    assert harness.matmul_peak(torch.float32, "cpu", size=64, seconds=0.01) > 0
    assert harness.matmul_peak(torch.int8, "cpu", size=64, seconds=0.01) > 0  # torch._int_mm


@pytest.mark.gpu
def test_measure_on_cuda_uses_events():
    r = Runner(lambda x: x.flatten(1)[:, :10] * 2, "test", "fp32", "cuda")
    for mode in ("device", "host"):
        s = harness.measure(r, 32, harness.QUICK, mode=mode)
        assert s["timer"] == "cuda-events" and s["mode"] == mode and s["disturbed"] is None
