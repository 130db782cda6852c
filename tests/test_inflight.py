"""Mode "async" (cifar_speed/inflight.py): requests in flight timed in the harness's trials."""
from __future__ import annotations

import pytest
import torch

from cifar_speed import backends, harness, inflight
from cifar_speed.backends import Runner
from cifar_speed.checkpoint import load_checkpoint

from _infer_util import make_checkpoint

SETTINGS = harness.Settings(trials=2, trial_time_s=0.0, trial_min_reps=2, warmup_min_reps=1, warmup_max_s=0.0,
                            warmup_window=1)


class FakeServer:
    """inflight() that records what it was asked and claims `requests` in flight."""

    def __init__(self, requests: int = 3):
        self.requests, self.calls, self.shapes = requests, [], set()

    def __call__(self, batches, calls):
        self.calls.append(calls)
        self.shapes |= {tuple(b.shape) for b in batches}
        return [0.001] * calls, {"requests_in_flight": self.requests, "hint": "FAKE"}


def _runner(server=None) -> Runner:
    return Runner(lambda x: torch.zeros(len(x), 10), "fake", "fp32", "cpu", {}, inflight=server)


def test_groups_are_sized_by_the_requests_in_flight_and_recorded_per_request():
    server = FakeServer(requests=3)
    t = inflight.AsyncCellTimer(_runner(server), 4, SETTINGS, threads=1)
    t.warm_up()
    for r in range(SETTINGS.trials):
        t.trial(r)
    # First group has the minimum size, then GROUP_PER_REQUEST x requests.
    assert server.calls[0] == inflight.MIN_GROUP and set(server.calls[1:]) == {12}
    assert server.shapes == {(4, 3, 32, 32)}
    s = t.summary()
    assert s["mode"] == "async" and t.mode == "async" and t.baseline_mode == "device"
    assert s["inflight"]["hint"] == "FAKE" and s["inflight"]["calls_per_group"] == 12
    # one timed value per group; request latencies from the timed trials only (not the warm-up)
    assert s["n"] == sum(len(tr.times_s) for tr in t.trials) == 2 * SETTINGS.trials
    assert s["inflight"]["request_latency_ms"]["n"] == 12 * 2 * SETTINGS.trials
    assert s["images_per_s"] == pytest.approx(4 / (s["lower_quartile_ms"] / 1e3))


def test_a_runner_without_inflight_has_no_async_cells():
    with pytest.raises(ValueError, match="no in-flight mode"):
        inflight.AsyncCellTimer(_runner(None), 4, SETTINGS)
    assert inflight.timers_for(_runner(None), [1, 4], SETTINGS, None, 1) == []
    assert [t.batch_size for t in inflight.timers_for(_runner(FakeServer()), [1, 4], SETTINGS, None, 1)] == [1, 4]


def test_onnxrt_parallel_sessions_serve_every_request(tmp_path):
    if not backends.availability("onnxrt", "fp32", "cpu")[0]:
        pytest.skip("onnxrt unavailable")
    model, meta = load_checkpoint(make_checkpoint(tmp_path))
    runner = backends.build("onnxrt", model, meta, "fp32", "cpu", [4])
    xs = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    latencies, how = runner.inflight(xs, 5)
    assert len(latencies) == 5 and all(t > 0 for t in latencies)
    assert how == {"sessions": torch.get_num_threads(), "intra_op_threads": 1,
                   "requests_in_flight": torch.get_num_threads()}


def test_sweep_records_async_cells_beside_the_synchronous_ones(tmp_path):
    if not backends.availability("openvino", "fp32", "cpu")[0]:
        pytest.skip("openvino unavailable")
    from cifar_speed import sweep

    from _infer_util import fake_split

    cfg = sweep.SweepConfig(checkpoints=[make_checkpoint(tmp_path)], backends=["eager", "openvino"], precisions=["fp32"],
                            batches=[8], device="cpu", settings=harness.QUICK, peak_gflops=1000.0,
                            test_split=fake_split(16), threads=2, jpeg_quality=None)
    res = sweep.run_sweep(cfg, progress=False)
    cells = {(c["backend"], c["mode"]): c for c in res["cells"] if c["status"] == "ok"}
    assert set(cells) == {("eager", "device"), ("openvino", "device"), ("openvino", "async")}
    sync, served = cells[("openvino", "device")], cells[("openvino", "async")]
    assert served["batch_size"] == sync["batch_size"] == 8 and served["accuracy"] == sync["accuracy"]
    how = served["latency"]["inflight"]
    assert how["hint"] == "THROUGHPUT" and how["requests_in_flight"] >= 1 and how["calls_per_group"] >= inflight.MIN_GROUP
    assert sync["runner"]["sync"]["hint"] == "LATENCY"
    # paired against eager fp32's synchronous trials of the same round
    assert served["speedup_vs_eager_fp32"] > 0 and len(served["trials"]) == harness.QUICK.trials
