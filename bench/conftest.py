"""pytest-benchmark suites: collected with the tests, run only with `pytest --benchmark-only`.

Plain `pytest` skips every item under bench/ (timings are not tests); `--benchmark-json` output gets
the same provenance as `cifar-speed bench` results (machine, CPU flags, GPU, versions, threads,
commit, load) under "cifar_speed", and the same allocator setting as `cifar-speed bench --allocator`
(`CIFAR_SPEED_BENCH_ALLOCATOR=retain|system`, default retain; cifar_speed/allocator.py says why).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent


def pytest_configure(config):
    if config.getoption("benchmark_only", default=False):
        from cifar_speed import allocator

        try:
            config.cifar_speed_allocator = allocator.configure(os.environ.get("CIFAR_SPEED_BENCH_ALLOCATOR",
                                                                              allocator.DEFAULT))
        except ValueError as e:
            raise pytest.UsageError(f"CIFAR_SPEED_BENCH_ALLOCATOR: {e}") from None


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest bench --benchmark-only`")
    for item in items:
        if BENCH_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    from cifar_speed.provenance import provenance

    output_json["cifar_speed"] = {"provenance": provenance(),
                                  "timer": "perf_counter around a call that ends in torch.cuda.synchronize() on CUDA",
                                  "allocator": getattr(config, "cifar_speed_allocator", None)}
