"""Harness: percentiles and the p99 rule, trial statistics, paired ratios, the two views of
disturbance (a runner that sleeps, a second process spinning), round-robin order, peak probes."""
from __future__ import annotations

import dataclasses
import random
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

from cifar_speed import harness
from cifar_speed.backends import Runner
from cifar_speed.errors import UnavailableError
from cifar_speed.harness import CpuCounters, Disturbance, ProbeReading, Trial


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


def test_summarize_withholds_p99_below_100_calls():
    times = [0.010] * 9 + [0.020]           # seconds per batch of 100
    s = harness.summarize(times, 100)
    assert s["n"] == 10
    assert s["median_ms"] == pytest.approx(10.0)
    assert s["min_ms"] == pytest.approx(10.0) and s["max_ms"] == pytest.approx(20.0)
    assert s["mean_ms"] == pytest.approx(11.0)
    assert s["p90_ms"] == pytest.approx(11.0)      # linear between 10 and 20 at 0.1 of the way
    assert s["p99_ms"] is None and "only 10 timed calls" in s["p99_note"] and "100" in s["p99_note"]
    assert s["images_per_s"] == pytest.approx(10_000.0)
    assert s["ms_per_image"] == pytest.approx(0.1)


def test_p99_rule_at_the_boundary():
    xs = [float(i) for i in range(1, 100)]           # 99 calls: p99 would be ~the maximum
    assert harness.p99(xs) == (None, "only 99 timed calls; p99 needs at least 100")
    xs.append(100.0)
    value, why = harness.p99(xs)
    assert why is None and value == pytest.approx(float(np.percentile(xs, 99)))


def _trial(round_, ms, disturbed=False):
    return Trial(round_, [m / 1e3 for m in ms], Disturbance(1.0, 2.0, 2, 2.0, 0.0, 0.0, disturbed))


def test_summarize_trials_figure_is_the_lower_quartile_of_trial_medians_and_spread():
    trials = [_trial(0, [10, 11, 12]), _trial(1, [20, 20, 21]), _trial(2, [14, 15, 16]),
              _trial(3, [13, 13, 13]), _trial(4, [30, 9, 31])]
    s = harness.summarize_trials(trials, 10)
    medians = [11, 20, 15, 13, 30]
    assert s["median_ms"] == pytest.approx(15.0)                        # median of the five trial medians
    assert s["trial_median_ms"]["min"] == pytest.approx(11) and s["trial_median_ms"]["max"] == pytest.approx(30)
    assert s["trial_median_ms"]["iqr"] == pytest.approx(np.percentile(medians, 75) - np.percentile(medians, 25))
    assert s["n"] == 15 and s["trials"] == 5
    assert s["pooled_median_ms"] == pytest.approx(float(np.median([10, 11, 12, 20, 20, 21, 14, 15, 16, 13, 13, 13, 30, 9, 31])))
    assert s["lower_quartile_ms"] == pytest.approx(np.percentile(medians, 25)) == pytest.approx(13.0)
    assert s["figure"] == "lower_quartile_ms"
    assert s["images_per_s"] == pytest.approx(10 / 0.013)                 # from the figure, not the median
    assert s["ms_per_image"] == pytest.approx(1.3)
    assert s["images_per_s_range"] == pytest.approx([10 / 0.030, 10 / 0.011])
    assert s["p99_ms"] is None and s["disturbed"] is False and s["trials_disturbed"] == 0


def test_cell_is_disturbed_when_most_trials_were():
    two = [_trial(i, [10], disturbed=i < 2) for i in range(5)]
    three = [_trial(i, [10], disturbed=i < 3) for i in range(5)]
    assert harness.summarize_trials(two, 1)["disturbed"] is False
    assert harness.summarize_trials(three, 1)["disturbed"] is True
    assert harness.summarize_trials(three, 1)["trials_disturbed"] == 3


def test_paired_ratio_uses_the_baseline_trial_of_the_same_round():
    # The machine slows down in rounds 1 and 3 for both cells: paired, the cell is exactly 2x faster.
    base = [_trial(r, [m]) for r, m in enumerate([10, 20, 10, 20, 10])]
    cell = [_trial(r, [m]) for r, m in enumerate([5, 10, 5, 10, 5])]
    r = harness.paired_ratio(base, cell)
    assert r["median"] == pytest.approx(2.0) and r["min"] == pytest.approx(2.0) and r["max"] == pytest.approx(2.0)
    assert r["n"] == 5
    # Unpaired, dividing medians of different rounds would read 10 / 5 = 2 or 20 / 5 = 4.
    assert harness.paired_ratio(base, [_trial(7, [5])]) is None   # no baseline trial in that round


def test_figure_ratio_divides_lower_quartiles_of_the_rounds_both_ran():
    # The host slows the baseline 3x in two rounds and the cell only 1.5x (it meets fewer barriers):
    # the per-round ratios read 2 in the quiet rounds and 4 in the slow ones, and their median moves
    # with how many rounds were slow; the lower quartiles read the quiet speeds.
    base = [_trial(r, [m]) for r, m in enumerate([10, 30, 10, 30, 10, 10, 10])]
    cell = [_trial(r, [m]) for r, m in enumerate([5, 7.5, 5, 7.5, 5, 5, 5])]
    r = harness.figure_ratio(base, cell)
    assert r["value"] == pytest.approx(2.0)
    assert r["paired_median"] == pytest.approx(2.0) and r["max"] == pytest.approx(4.0) and r["n"] == 7
    slower = [_trial(r, [m]) for r, m in enumerate([30, 30, 30, 30, 10, 10, 10])]
    slowed_cell = [_trial(r, [m]) for r, m in enumerate([7.5, 7.5, 7.5, 7.5, 5, 5, 5])]
    assert harness.paired_ratio(slower, slowed_cell)["median"] == pytest.approx(4.0)   # the mixture moved it
    assert harness.figure_ratio(slower, slowed_cell)["value"] == pytest.approx(2.0)
    # Only the rounds both ran: a baseline trial from a round the cell skipped does not count.
    extra = base + [_trial(9, [1])]
    assert harness.figure_ratio(extra, cell)["value"] == pytest.approx(2.0)
    assert harness.figure_ratio(base, [_trial(7, [5])]) is None


def test_figure_ratio_in_canary_units():
    dist = Disturbance(1.0, 2.0, 2, 2.0, 0.0, 0.0, False)
    base = [Trial(r, [0.010 * k], dist, canary_ms=0.1 * k) for r, k in enumerate([1, 2, 1, 1])]
    cell = [Trial(r, [0.005 * k], dist, canary_ms=0.1 * k) for r, k in enumerate([1, 2, 1, 1])]
    assert harness.figure_ratio(base, cell, normalized=True)["value"] == pytest.approx(2.0)


def test_relative_se_of_a_quartile_is_wider_than_of_the_median():
    values = [1.0, 1.1, 1.3, 0.9, 1.2, 1.05]
    assert harness.relative_se(values, 25) == pytest.approx(harness.relative_se(values) * 1.3626 / 1.2533)
    with pytest.raises(KeyError):
        harness.relative_se(values, 10)   # no error formula for it: say so rather than guess


def test_judge_process_view():
    d = harness.judge(1.0, 0.5, 2, None, None)
    assert d.disturbed and "cpu/wall 0.50" in d.why and d.others_cpu_s is None
    assert harness.judge(1.0, 1.95, 2, None, None).disturbed is False


@pytest.mark.parametrize("others,steal,cpus,threads,expected", [
    (0.0, 0.0, 2, 2, False),    # idle machine
    (0.1, 0.0, 2, 2, False),    # background daemons: 0.1 of a core
    (1.0, 0.0, 2, 2, True),     # another process took one of our two cores
    (0.0, 0.5, 2, 2, True),     # the hypervisor ran someone else half the time (steal)
    (0.9, 0.0, 2, 1, False),    # 1 thread on 2 cores: the other core is free for them
    (1.5, 0.0, 2, 1, True),     # ... unless they take more than it
])
def test_judge_machine_view(others, steal, cpus, threads, expected):
    before = CpuCounters(100.0, 10.0, cpus)
    after = CpuCounters(100.0 + threads * 1.0 + others, 10.0 + steal, cpus)   # 1 s wall: we used `threads` cores
    d = harness.judge(1.0, threads * 1.0, threads, before, after)
    assert d.disturbed is expected
    assert d.others_cpu_s == pytest.approx(others) and d.steal_s == pytest.approx(steal)


def test_read_cpu_counters_sums_only_our_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  300 0 300 1000 0 0 0 30 0 0\n"
                    "cpu0 100 0 100 500 0 0 0 10 0 0\n"
                    "cpu1 200 0 200 500 0 0 0 20 0 0\n"
                    "intr 12345\n")
    hz = harness.os.sysconf("SC_CLK_TCK")
    one = harness.read_cpu_counters(stat, cpus=[1])
    assert one == CpuCounters(400 / hz, 20 / hz, 1)
    both = harness.read_cpu_counters(stat, cpus=[0, 1])
    assert both.busy_s == pytest.approx(600 / hz) and both.cpus == 2
    assert harness.read_cpu_counters(tmp_path / "missing") is None


def _runner(fn):
    return Runner(fn, "test", "fp32", "cpu")


def test_sleeping_runner_is_flagged_disturbed():
    # A call that waits instead of computing uses no CPU: exactly what a preempted run looks like.
    def fn(x):
        time.sleep(0.002)
        return torch.zeros(len(x), 10)

    # No canary: its matmul threads spin on for a moment after it and their CPU time lands in the
    # trial, which matters for 10 ms test trials, not for the 0.15 s real ones.
    quiet = dataclasses.replace(harness.QUICK, canary_s=0)
    t = harness.CellTimer(_runner(fn), 4, quiet, counters=lambda: None)
    harness.run_round_robin([t], 3)
    assert all(tr.disturbance.disturbed for tr in t.trials)
    s = t.summary()
    assert s["disturbed"] is True and s["trials_disturbed"] == 3 and s["cpu_wall_ratio"] < 0.5


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(harness.read_cpu_counters() is None, reason="needs /proc/stat")
def test_a_second_process_spinning_is_seen_from_the_machine():
    # The process view is switched off (disturbed_fraction 0): only /proc/stat can see the spinner,
    # which takes a core the cell asked for (threads = every usable CPU).
    cpus = len(harness.usable_cpus())
    spinner = subprocess.Popen([sys.executable, "-c", "import sys,time\nprint('go', flush=True)\n"
                                "end = time.time() + 30\nwhile time.time() < end: pass"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout.readline().strip() == "go"
        settings = harness.Settings(trials=1, trial_time_s=0.3, trial_min_reps=1, warmup_min_reps=1,
                                    warmup_max_s=0.01, disturbed_fraction=0.0)
        t = harness.CellTimer(_runner(lambda x: _spin(0.01) or torch.zeros(len(x), 10)), 1, settings, threads=cpus)
        harness.run_round_robin([t], 1)
    finally:
        spinner.kill()
        spinner.wait()
    d = t.trials[0].disturbance
    assert d.others_cpu_s > 0 and d.disturbed is True and "other processes" in d.why


def test_round_robin_interleaves_cells_after_one_warm_up_each():
    order = []

    def make(name):
        return _runner(lambda x: order.append(name) or torch.zeros(len(x), 10))

    settings = harness.Settings(trials=2, trial_time_s=0.0, trial_min_reps=1, warmup_min_reps=1, warmup_window=1, settle_s=0,
                                warmup_tolerance=1.0, warmup_max_s=1.0)
    timers = [harness.CellTimer(make(n), 2, settings, counters=lambda: None) for n in "ABC"]
    harness.run_round_robin(timers, 2)
    warm = sum(t.warmup.reps for t in timers)
    assert order[warm:] == list("ABCABC")
    assert [tr.round for tr in timers[0].trials] == [0, 1]


def test_warmup_waits_for_stability():
    calls = {"n": 0}

    def fn(x):   # the first calls are slow (compilation, caches), then steady
        calls["n"] += 1
        time.sleep(0.02 if calls["n"] <= 3 else 0.001)
        return torch.zeros(len(x), 10)

    settings = harness.Settings(trials=2, trial_time_s=0.01, trial_min_reps=3, warmup_min_reps=1, warmup_max_s=5,
                                warmup_window=3, warmup_tolerance=0.5, settle_s=0)
    s = harness.measure(_runner(fn), 2, settings)
    # The three slow calls all happened during warm-up (it needs two agreeing windows after them).
    assert s["warmup_stable"] and s["warmup_reps"] >= 3 + 3
    assert calls["n"] == s["warmup_reps"] + s["n"]


def test_measure_records_everything_and_rotates_inputs():
    seen = []

    def fn(x):
        seen.append(x.data_ptr())
        return x.sum(dim=(1, 2, 3)).unsqueeze(1).expand(-1, 10)

    s = harness.measure(_runner(fn), 8, harness.QUICK)
    for key in ("median_ms", "p90_ms", "p99_ms", "p99_note", "trial_median_ms", "images_per_s_range", "mode",
                "cpu_wall_ratio", "disturbed", "warmup_reps", "warmup_stable", "threads", "timer", "trials"):
        assert key in s
    assert s["trials"] == harness.QUICK.trials == len(s["trial_records"])
    assert s["n"] >= harness.QUICK.trial_min_reps * harness.QUICK.trials and s["mode"] == "device"
    assert len(set(seen)) == harness.QUICK.n_inputs == s["inputs_rotated"]
    rec = s["trial_records"][0]
    calls = harness.decode_calls(rec["calls_ms"])          # the raw timings, recomputable
    assert len(calls) == rec["n"] and rec["median_ms"] == pytest.approx(float(np.median(calls)), rel=1e-5)


def test_encode_decode_calls_round_trip():
    times = [0.001234, 0.5, 2e-6]
    assert harness.decode_calls(harness.encode_calls(times)) == pytest.approx([1.234, 500.0, 0.002], rel=1e-6)


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
    assert r["method"] == "loop" and not r["waited"] and "p50_ms" not in r
    waited = harness.dawnbench_latency(_runner(fn), images, labels, warmup=0, wait_each=True)
    assert waited["waited"] and waited["top1"] == pytest.approx(0.5)
    assert 0 < waited["p50_ms"] <= waited["p99_ms"]


def test_dawnbench_graph_method_needs_cuda_and_a_capturable_runner():
    images = torch.randn(4, 3, 32, 32)
    with pytest.raises(UnavailableError, match="needs CUDA"):
        harness.dawnbench_latency(_runner(lambda x: x.flatten(1)[:, :10]), images, warmup=1, method="graph")
    with pytest.raises(ValueError, match="unknown DAWNBench method"):
        harness.dawnbench_latency(_runner(lambda x: x.flatten(1)[:, :10]), images, warmup=1, method="batched")


@pytest.mark.gpu
def test_dawnbench_graph_method_answers_like_the_loop():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10)).cuda().eval()
    with torch.inference_mode():
        model(torch.randn(1, 3, 32, 32, device="cuda"))

    def fn(x):
        with torch.inference_mode():
            return model(x)

    runner = Runner(fn, "test", "fp32", "cuda", graph_capturable=True)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    loop = harness.dawnbench_latency(runner, images, labels, warmup=2)
    graph = harness.dawnbench_latency(runner, images, labels, warmup=2, method="graph")
    assert graph["method"] == "graph" and graph["images"] == 64
    assert graph["top1"] == pytest.approx(loop["top1"])
    waited = harness.dawnbench_latency(runner, images, labels, warmup=2, method="graph", wait_each=True)
    assert waited["top1"] == pytest.approx(loop["top1"]) and 0 < waited["p50_ms"] <= waited["p99_ms"]
    with pytest.raises(UnavailableError, match="cannot be captured"):
        harness.dawnbench_latency(Runner(fn, "test", "fp32", "cuda"), images, warmup=1, method="graph")


# -- peak -------------------------------------------------------------------------------------------

def _reading(gflops, disturbed):
    return ProbeReading(gflops, Disturbance(1.0, 1.0, 2, 1.0, 0.0, 0.0, disturbed))


def test_best_reading_keeps_the_best_undisturbed():
    assert harness.best_reading([_reading(80, False), _reading(190, True), _reading(180, False)]).gflops == 180
    assert harness.best_reading([_reading(80, True), _reading(90, True)]).gflops == 90   # all shared: flagged


def test_peak_probe_threshold_is_near_all_threads():
    # 1.25 cores busy of 2 passed the old 0.6 x threads test; a probe must keep ~every thread busy.
    assert harness.judge(1.0, 1.25, 2, None, None, process_fraction=harness.PEAK_THREADS_FRACTION).disturbed
    assert not harness.judge(1.0, 1.9, 2, None, None, process_fraction=harness.PEAK_THREADS_FRACTION).disturbed


def test_measure_peak_keeps_the_higher_of_matmul_and_conv_per_precision(monkeypatch):
    # Scripted readings per probe kind (GFLOP/s, disturbed), consumed by fp32 then int8.
    script = {"matmul": [(100, False), (300, True), (110, False)], "conv": [(120, False), (90, False), (50, False)]}
    queues = {kind: iter(values * 2) for kind, values in script.items()}
    monkeypatch.setattr(harness, "sized_op", lambda make, dtype, device, scales:
                        ("matmul" if make is harness.matmul_op else "conv", 1.0, scales[-1]))
    monkeypatch.setattr(harness, "peak_precisions", lambda device: {"fp32": torch.float32, "int8": torch.int8})
    monkeypatch.setattr(harness, "probe", lambda call, flops, device, seconds, counters: _reading(*next(queues[call])))
    peak = harness.measure_peak("cpu", seconds=0.0, repeats=3)
    # matmul: best undisturbed 110 (the 300 was disturbed); conv: 120 -> the denominator is the conv's.
    assert peak["fp32_gflops"] == 120 and peak["denominators"]["fp32"] == "conv"
    assert peak["probes"]["fp32"]["matmul"]["gflops"] == 110
    assert peak["probes"]["fp32"]["matmul"]["readings"] == [100, 300, 110]
    assert peak["int8_gops"] == 120 and peak["disturbed"] is False
    assert harness.peak_for(peak, "fp32") == 120 and harness.peak_for(peak, "bf16") is None
    assert harness.peak_for({"given_gflops": 5.0}, "int8") == 5.0


def test_an_int8_probe_slower_than_fp32_is_no_denominator(monkeypatch):
    # torch._int_mm without VNNI/AMX is a reference loop: it says nothing of ORT's or Inductor's int8.
    monkeypatch.setattr(harness, "sized_op", lambda make, dtype, device, scales: (dtype, 1.0, scales[-1]))
    monkeypatch.setattr(harness, "peak_precisions", lambda device: {"fp32": torch.float32, "int8": torch.int8})
    monkeypatch.setattr(harness, "probe", lambda call, flops, device, seconds, counters:
                        _reading(150 if call == torch.float32 else 0.3, False))
    peak = harness.measure_peak("cpu", seconds=0.0, repeats=1)
    assert peak["fp32_gflops"] == 150 and "int8_gops" not in peak and "no int8 GEMM kernel" in peak["unmeasured"]["int8"]


def _fake_clock(monkeypatch) -> list[float]:
    """A clock that only the calls advance (now[0] += seconds): no timing threshold, whatever the load."""
    now = [0.0]
    monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_sized_op_stops_growing_once_a_call_is_long_enough(monkeypatch):
    now = _fake_clock(monkeypatch)
    made = []

    def make(dtype, device, scale):
        made.append(scale)
        return (lambda: now.__setitem__(0, now[0] + scale * 0.01)), scale * 10

    call, flops, scale = harness.sized_op(make, torch.float32, "cpu", [1, 2, 4, 8, 16])
    assert harness.PROBE_CALL_S == 0.05 and made == [1, 2, 4, 8] and scale == 8 and flops == 80   # 8 x 0.01 s >= 0.05 s


@pytest.mark.gpu
def test_measure_on_cuda_uses_events():
    r = Runner(lambda x: x.flatten(1)[:, :10] * 2, "test", "fp32", "cuda")
    for mode in ("device", "host"):
        s = harness.measure(r, 32, harness.QUICK, mode=mode)
        assert s["timer"] == "cuda-events" and s["mode"] == mode and s["disturbed"] is None


def test_sized_op_does_not_time_the_first_call(monkeypatch):
    """A first call that pays one-off set-up (cuBLAS handles, lazy loading) must not pick a tiny probe."""
    now = _fake_clock(monkeypatch)
    made = []

    def make(dtype, device, scale):
        made.append(scale)
        calls = [0]

        def call():
            calls[0] += 1
            now[0] += (1.0 if calls[0] == 1 else 0) + scale * 0.01   # 1 s of set-up on the first call only
        return call, scale * 10

    _, _, scale = harness.sized_op(make, torch.float32, "cpu", [1, 2, 4, 8, 16])
    assert scale == 8 and made == [1, 2, 4, 8]


# -- host speed: the canary ---------------------------------------------------------------------------

def test_canary_reads_between_trials_and_normalises_the_cell():
    """Each trial keeps the mean of the readings before and after it; in a round of N cells the reading
    after one trial is the one before the next (N + 1 readings per round, not 2N)."""
    reads = iter([1.0, 2.0, 4.0, 2.0, 1.0])

    class FakeCanary(harness.Canary):
        def read(self):
            self.last_ms = next(reads)
            return self.last_ms

    canary = FakeCanary(0.001, 1)
    timers = [harness.CellTimer(_runner(lambda x: x.flatten(1)[:, :10]), 2, harness.QUICK) for _ in range(2)]
    for r in range(2):
        for t in timers:
            t.trial(r, canary)
    got = [t.canary_ms for timer in timers for t in timer.trials]
    assert got == [1.5, 3.0, 3.0, 1.5]   # cell A: (1+2)/2, (4+2)/2; cell B: (2+4)/2, (2+1)/2
    trial = timers[0].trials[0]
    assert trial.normalized == pytest.approx(trial.median_ms / 1.5) and trial.to_dict()["canary_ms"] == 1.5
    summary = timers[0].summary()
    assert summary["canary_ms"]["median"] == pytest.approx(2.25)
    assert summary["host_normalized"]["median"] == pytest.approx(
        statistics.median([t.normalized for t in timers[0].trials]))


def test_wake_probe_reads_a_round_trip_and_each_trial_keeps_the_mean_around_it():
    assert harness.WakeProbe(calls=4).read() > 0
    wakes = iter([10.0, 20.0, 40.0])

    class FakeCanary(harness.Canary):
        def read(self):
            self.last_ms, self.last_wake_us = 1.0, next(wakes)
            return self.last_ms

    canary = FakeCanary(0.001, 1)
    timer = harness.CellTimer(_runner(lambda x: x.flatten(1)[:, :10]), 2, harness.QUICK)
    timer.trial(0, canary)
    timer.trial(1, canary)
    assert [t.wake_us for t in timer.trials] == [15.0, 30.0]
    assert timer.trials[0].to_dict()["wake_us"] == 15.0
    assert timer.summary()["wake_us"]["median"] == pytest.approx(22.5)


def test_trials_without_wake_readings_leave_it_out_of_the_summary():
    class FakeCanary(harness.Canary):
        def read(self):
            self.last_ms = 1.0
            return self.last_ms

    timer = harness.CellTimer(_runner(lambda x: x.flatten(1)[:, :10]), 2, harness.QUICK)
    timer.trial(0, FakeCanary(0.001, 1))
    assert timer.trials[0].wake_us is None and "wake_us" not in timer.summary()


def test_paired_ratio_in_canary_units_takes_out_a_host_slowdown():
    """Round 1 ran on a host twice as slow for the cell only: raw ratios differ, normalised ones agree."""
    dist = Disturbance(1.0, 1.0, 1, 1.0, 0.0, 0.0, False)
    base = [harness.Trial(0, [0.010] * 3, dist, 1.0), harness.Trial(1, [0.010] * 3, dist, 1.0)]
    cell = [harness.Trial(0, [0.005] * 3, dist, 1.0), harness.Trial(1, [0.010] * 3, dist, 2.0)]
    raw = harness.paired_ratio(base, cell)
    host = harness.paired_ratio(base, cell, normalized=True)
    assert (raw["min"], raw["max"]) == pytest.approx((1.0, 2.0))
    assert (host["min"], host["max"]) == pytest.approx((2.0, 2.0))
    assert harness.paired_ratio(base, [harness.Trial(0, [0.005] * 3, dist)], normalized=True) is None


def test_no_canary_on_cuda_or_when_switched_off():
    cpu = harness.CellTimer(_runner(lambda x: x.flatten(1)[:, :10]), 2, harness.QUICK)
    assert isinstance(harness.Canary.for_timers([cpu]), harness.Canary)
    off = harness.CellTimer(_runner(lambda x: x.flatten(1)[:, :10]), 2, harness.Settings(canary_s=0))
    assert harness.Canary.for_timers([off]) is None
    reading = harness.Canary(0.001, 1).read()
    assert reading > 0
    cpu.trial(0)                      # without a canary a trial has no reading and no normalised figures
    assert cpu.trials[0].canary_ms is None and "host_normalized" not in cpu.summary()


def test_settle_calls_run_before_each_trial_and_are_not_timed():
    calls = []

    def fn(x):
        calls.append(time.perf_counter())
        return x.flatten(1)[:, :10]

    settings = dataclasses.replace(harness.QUICK, settle_s=0.01, canary_s=0)
    t = harness.CellTimer(_runner(fn), 2, settings)
    before = len(calls)
    trial = t.trial(0)
    assert len(calls) - before > len(trial.times_s) >= settings.trial_min_reps   # settle calls were made, untimed
    off = harness.CellTimer(_runner(fn), 2, dataclasses.replace(settings, settle_s=0))
    before = len(calls)
    assert len(off.trial(0).times_s) == len(calls) - before


def test_relative_se_of_the_median():
    assert harness.relative_se([2.0, 2.0, 2.0, 2.0]) == 0.0
    assert harness.relative_se([1.0, 2.0]) == float("inf")      # too few to say
    logs = np.log([1.0, 2.0, 4.0, 8.0, 16.0] * 2)                 # MAD of the logs = log 2
    assert harness.relative_se(np.exp(logs)) == pytest.approx(1.2533 * 1.4826 * np.log(2) / np.sqrt(10))
    # more trials of the same spread: a smaller error, by sqrt(n)
    assert harness.relative_se([1.0, 2.0, 4.0] * 8) == pytest.approx(harness.relative_se([1.0, 2.0, 4.0] * 4) / 2 ** 0.5)


def test_a_few_values_get_their_standard_deviation_not_a_lucky_mad():
    three = [2714.0, 2494.0, 2714.0]          # three process medians, two alike: their MAD is 0
    assert harness.relative_se(three) == pytest.approx(1.2533 * np.std(np.log(three), ddof=1) / np.sqrt(3))
    assert harness.relative_se(three) > 0.02
    # one wild value among many moves the robust estimate no more than a tame one would
    tame, wild = [1.0, 1.1] * 6 + [1.3], [1.0, 1.1] * 6 + [50.0]
    assert harness.relative_se(wild) == pytest.approx(harness.relative_se(tame))


class _ScriptedTimer(harness.CellTimer):
    """A cell whose trial medians follow a script (no clock): the adaptive rounds' logic alone."""

    def __init__(self, name, medians_ms, settings, fail_at=None, log=None):
        self.name, self.script, self.settings, self.fail_at, self.log = name, medians_ms, settings, fail_at, log
        self.cuda, self.trials, self.failure, self.warmup = False, [], None, None

    def warm_up(self):
        self.log.append((self.name, "warm"))

    def trial(self, round_, canary=None):
        if round_ == self.fail_at:
            raise RuntimeError(f"{self.name} broke")
        self.log.append((self.name, round_))
        ms = self.script[len(self.trials) % len(self.script)]
        self.trials.append(Trial(round_, [ms / 1e3], Disturbance(1, 1, 1, 1, None, None, False)))


def test_extra_rounds_time_only_unsettled_cells_and_their_baselines():
    s = dataclasses.replace(harness.QUICK, trials=4, max_trials=9, target_rse=0.05, canary_s=0)
    log = []
    base = _ScriptedTimer("base", [1.0], s, log=log)
    steady = _ScriptedTimer("steady", [0.5], s, log=log)            # known at once: stops at 4
    noisy = _ScriptedTimer("noisy", [1.0, 2.0, 4.0], s, log=log)    # never within 5 %: runs to 9
    other = _ScriptedTimer("other", [3.0], s, log=log)               # no baseline, steady
    baselines = {id(steady): base, id(noisy): base}
    harness.run_round_robin([base, steady, noisy, other], baseline_of=lambda t: baselines.get(id(t)))
    assert [len(t.trials) for t in (base, steady, noisy, other)] == [9, 4, 9, 4]
    # interleaved, and each extra round pairs the noisy cell with its baseline in the same round
    assert log[4:8] == [("base", 0), ("steady", 0), ("noisy", 0), ("other", 0)]
    assert log[-2:] == [("base", 8), ("noisy", 8)]
    assert harness.paired_ratio(base.trials, noisy.trials)["n"] == 9


def test_a_steady_baseline_alone_needs_no_extra_rounds_and_explicit_trials_are_exact():
    s = dataclasses.replace(harness.QUICK, trials=3, max_trials=50, target_rse=0.01, canary_s=0)
    t = _ScriptedTimer("a", [1.0], s, log=[])
    harness.run_round_robin([t])
    assert len(t.trials) == 3
    u = _ScriptedTimer("b", [1.0, 3.0], s, log=[])
    harness.run_round_robin([u], 5)            # an explicit count: exactly that many, however noisy
    assert len(u.trials) == 5


def test_a_failing_cell_leaves_the_rounds_and_the_others_go_on():
    s = dataclasses.replace(harness.QUICK, trials=3, max_trials=3, canary_s=0)
    log = []
    good, bad = _ScriptedTimer("good", [1.0], s, log=log), _ScriptedTimer("bad", [1.0], s, fail_at=1, log=log)
    harness.run_round_robin([good, bad])
    assert len(good.trials) == 3 and len(bad.trials) == 1
    assert isinstance(bad.failure, RuntimeError) and good.failure is None
    with pytest.raises(RuntimeError, match="broke"):   # one cell on its own: the failure is raised
        harness.measure(_runner(lambda x: (_ for _ in ()).throw(RuntimeError("broke"))), 2, s)
