"""bench --processes N: several processes' sweeps merged into one results document (issue 11)."""
from __future__ import annotations

import copy
import statistics

import pytest

from cifar_speed import harness, processes, sweep
from cifar_speed.sweep import Cell

from _infer_util import fake_split, make_checkpoint


def _trial(round_: int, ms: float) -> dict:
    """A trial record as a sweep writes it: three calls of `ms` milliseconds."""
    times = [ms / 1e3] * 3
    dist = harness.Disturbance(0.1, 0.2, 2, 2.0, 0.0, 0.0, False)
    return harness.Trial(round_, times, dist, canary_ms=1.0).to_dict()


def _cell(backend: str, trial_ms: list[float], baseline: bool) -> dict:
    return Cell(model="m", architecture="m", backend=backend, precision="fp32", device="cpu", batch_size=4,
                mode="device", threads=2, baseline=baseline, latency={"median_ms": 0.0, "threads": 2},
                images_per_s=1.0, accuracy={"top1": 0.5}, trials=[_trial(r, ms) for r, ms in enumerate(trial_ms)]).to_dict()


def _part(eager_ms: list[float], onnx_ms: list[float]) -> dict:
    return {"harness": {"order": "round-robin"}, "peak": {"fp32_gflops": 100.0, "denominators": {"fp32": "matmul"}},
            "models": {"m": {"flops_per_image": 1e6}}, "created": "now",
            "cells": [_cell("eager", eager_ms, True), _cell("onnxrt", onnx_ms, False)]}


def test_merge_pools_trials_and_pairs_speedups_within_a_process():
    # Process 2 is slower for both cells (a state of that process): each round's ratio is still 2.
    merged = processes.merge([_part([10, 10, 10], [5, 5, 5]), _part([14, 14, 14], [7, 7, 7])])
    eager, onnx = (Cell.from_dict(c) for c in merged["cells"])
    assert merged["harness"]["processes"] == 2 and len(merged["process_runs"]) == 2
    assert len(onnx.trials) == 6 and len({t["round"] for t in onnx.trials}) == 6
    assert [t["process"] for t in onnx.trials] == [0, 0, 0, 1, 1, 1]
    assert onnx.speedup_vs_eager_fp32 == pytest.approx(2.0) and onnx.speedup_range == pytest.approx([2.0, 2.0])
    assert onnx.latency["median_ms"] == pytest.approx(statistics.median([5, 5, 5, 7, 7, 7]))
    assert onnx.latency["trials"] == 6 and onnx.images_per_s == pytest.approx(4 / 6e-3)
    assert [p["median_ms"] for p in onnx.processes] == pytest.approx([5.0, 7.0])
    assert onnx.accuracy == {"top1": 0.5} and eager.speedup_vs_eager_fp32 == pytest.approx(1.0)
    assert onnx.gflops == pytest.approx(1e6 * onnx.images_per_s / 1e9)
    assert onnx.peak_fraction == pytest.approx(onnx.gflops / 100.0)


def test_each_process_counts_once_however_many_trials_it_ran():
    # The adaptive count gave the slow process 7 trials: pooled, its trials would be the median.
    parts = [_part([10], [5]), _part([12], [6]), _part([20] * 7, [5] * 7)]
    eager, onnx = (Cell.from_dict(c) for c in processes.merge(parts)["cells"])
    assert eager.latency["median_ms"] == pytest.approx(12.0) and eager.latency["median_of"] == "process medians"
    assert eager.images_per_s == pytest.approx(4 / 12e-3) and eager.latency["trials"] == 9
    assert onnx.speedup_vs_eager_fp32 == pytest.approx(2.0)      # per process 2, 2 and 4
    assert [p["speedup_vs_eager_fp32"] for p in onnx.processes] == pytest.approx([2.0, 2.0, 4.0])
    assert onnx.median_rse() is not None


def test_host_normalised_figures_count_each_process_once_too():
    # what `compare` judges: pooled, the slow process's 7 trials would make its canary units the median
    parts = [_part([10], [5]), _part([12], [6]), _part([20] * 7, [5] * 7)]
    eager, onnx = (Cell.from_dict(c) for c in processes.merge(parts)["cells"])
    host = eager.latency["host_normalized"]
    assert host["median"] == pytest.approx(12.0) and host["median_of"] == "process medians"
    assert [p["host_normalized_median"] for p in eager.processes] == pytest.approx([10.0, 12.0, 20.0])
    assert host["median_rse"] == pytest.approx(harness.relative_se([10.0, 12.0, 20.0]))
    assert onnx.speedup_host_normalized == pytest.approx(2.0)
    assert [p["speedup_host_normalized"] for p in onnx.processes] == pytest.approx([2.0, 2.0, 4.0])


def test_compare_takes_a_merged_cells_error_from_its_processes():
    from cifar_speed.commands import compare

    parts = [_part([10], [5]), _part([12], [6]), _part([20] * 7, [5] * 7)]
    cells = [Cell.from_dict(c) for c in processes.merge(parts)["cells"]]
    host = compare.readings(cells[1], cells[0])["images_per_s"].host
    assert host.rse == pytest.approx(harness.relative_se([5.0, 6.0, 5.0]))


def test_remerge_recomputes_a_merged_file_from_its_trials():
    parts = [_part([10], [5]), _part([12], [6]), _part([20] * 7, [5] * 7)]
    merged = processes.merge(parts)
    assert processes.remerge(merged)["cells"] == merged["cells"]
    old = copy.deepcopy(merged)                 # as an older merge wrote it: pooled canary units
    for c in old["cells"]:
        c["latency"]["host_normalized"]["median"] = 20.0
        for p in c["processes"]:
            p.pop("host_normalized_median", None)
    assert processes.remerge(old)["cells"] == merged["cells"]


def test_merge_marks_a_cell_failed_in_any_process_as_failed():
    second = _part([10, 10], [5, 5])
    second["cells"][1] = {**second["cells"][1], "status": "failed", "reason": "boom", "trials": []}
    merged = processes.merge([_part([10, 10], [5, 5]), second])
    onnx = Cell.from_dict(merged["cells"][1])
    assert onnx.status == "failed" and onnx.reason == "failed in process 2 of 2: boom"
    missing = copy.deepcopy(second)
    del missing["cells"][1]
    assert Cell.from_dict(processes.merge([_part([10], [5]), missing])["cells"][1]).reason == "not measured in process 2 of 2"


def test_trial_records_read_back_as_the_harness_wrote_them():
    record = _trial(3, 2.5)
    t = processes.trial_from_record(record, threads=2, offset=processes.ROUND_STRIDE)
    assert t.round == processes.ROUND_STRIDE + 3 and t.median_ms == pytest.approx(2.5)
    assert t.disturbance.disturbed is False and t.canary_ms == 1.0


def test_sweep_in_two_processes_end_to_end(tmp_path):
    """Two spawned processes each run the sweep; the merged document has both processes' trials."""
    cfg = sweep.SweepConfig(checkpoints=[make_checkpoint(tmp_path)], backends=["eager"], precisions=["fp32"],
                            batches=[8], device="cpu", settings=harness.QUICK, peak_gflops=1000.0,
                            test_split=fake_split(64), threads=1, jpeg_quality=None, single_thread_at_batch1=False)
    said = []
    res = processes.run_in_processes(cfg, 2, progress=False, say=said.append)
    assert said[0::2] == ["process 1 of 2", "process 2 of 2"]
    assert all(line.startswith(f"process {k} of 2: ") and "timed trials" in line for k, line in ((1, said[1]), (2, said[3])))
    for run in res["process_runs"]:   # where each process's time went
        assert run["wall_s"] > 0 and run["timed_s"] > 0
        assert run["other_s"] == pytest.approx(run["wall_s"] - run["build_and_eval_s"] - run["timed_s"])
    (cell,) = [c for c in res["cells"] if c["status"] == "ok"]
    assert len(cell["trials"]) == 2 * harness.QUICK.trials and {t["process"] for t in cell["trials"]} == {0, 1}
    assert [p["trials"] for p in cell["processes"]] == [harness.QUICK.trials] * 2
    # The first process scores every test image; the second only its timing inputs (4 batches of 8),
    # and the merged cell's accuracy is the first process's.
    assert [p["accuracy_images"] for p in res["process_runs"]] == [64, harness.QUICK.n_inputs * 8]
    assert cell["accuracy"]["images"] == 64
    sweep.validate_results(res)


def test_a_bad_checkpoint_in_a_process_is_one_line(tmp_path):
    cfg = sweep.SweepConfig(checkpoints=[tmp_path / "missing.json"], backends=["eager"], precisions=["fp32"],
                            batches=[8], device="cpu", settings=harness.QUICK, test_split=fake_split(16))
    with pytest.raises(Exception) as e:
        processes.run_in_processes(cfg, 2, progress=False, say=lambda _: None)
    assert type(e.value).__name__ == "CifarSpeedError" and "\n" not in str(e.value)


def test_the_table_shows_each_process(tmp_path):
    from rich.console import Console

    from cifar_speed.report import table

    merged = processes.merge([_part([10], [5]), _part([14], [7])])
    console = Console(record=True, width=200)
    console.print(table(merged, "device"))
    assert "b4 per process: 400, 286" in console.export_text()


def test_phases_count_each_variant_build_once():
    """Every cell of a variant (its batches, modes, thread counts) carries the variant's one build time."""
    cell = lambda backend, batch, threads, wall: {"status": "ok", "model": "m", "backend": backend, "precision": "fp32",  # noqa: E731
                                                  "variant_options": None, "memory_format": None, "batch_size": batch,
                                                  "threads": threads, "build_and_eval_s": 30.0 if backend == "eager" else 50.0,
                                                  "latency": {"wall_s": wall}}
    part = {"process_wall_s": 200.0, "cells": [cell("eager", 1, 2, 1.0), cell("eager", 128, 2, 2.0), cell("eager", 1, 1, 3.0),
                                               cell("onnxrt", 1, 2, 4.0), {"status": "failed", "build_and_eval_s": 99.0}]}
    assert processes._phases(part) == {"wall_s": 200.0, "build_and_eval_s": 80.0, "timed_s": 10.0, "other_s": 110.0}


def test_a_process_in_a_slow_phase_moves_the_figure_less_than_the_median():
    # Process 3 spent most of its rounds in a slow phase of the host that slowed eager 3x and the
    # other cell 1.5x: its median and its per-round ratios say so, its lower quartile much less.
    quiet = _part([10, 10, 10, 10], [5, 5, 5, 5])
    slow = _part([10, 30, 30, 30], [5, 7.5, 7.5, 7.5])
    eager, onnx = (Cell.from_dict(c) for c in processes.merge([quiet, copy.deepcopy(quiet), slow])["cells"])
    assert [p["lower_quartile_ms"] for p in eager.processes] == pytest.approx([10.0, 10.0, 25.0])
    assert [p["median_ms"] for p in eager.processes] == pytest.approx([10.0, 10.0, 30.0])
    assert eager.latency["lower_quartile_ms"] == pytest.approx(10.0) and eager.images_per_s == pytest.approx(4 / 10e-3)
    assert eager.latency["lower_quartile_rse"] == pytest.approx(harness.relative_se([10.0, 10.0, 25.0]))
    assert [p["speedup_vs_eager_fp32"] for p in onnx.processes] == pytest.approx([2.0, 2.0, 25 / 6.875])
    assert [p["speedup_paired_median"] for p in onnx.processes] == pytest.approx([2.0, 2.0, 4.0])
    assert onnx.speedup_vs_eager_fp32 == pytest.approx(2.0) and onnx.speedup_paired_median == pytest.approx(2.0)
    assert eager.latency["host_normalized"]["lower_quartile"] == pytest.approx(10.0)


def test_remerge_records_todays_statistics():
    merged = processes.merge([_part([10], [5]), _part([12], [6]), _part([20] * 7, [5] * 7)])
    old = copy.deepcopy(merged)
    old["harness"].pop("figure", None)
    out = processes.remerge(old)
    assert out["harness"]["figure_quantile"] == harness.FIGURE_QUANTILE and "lower quartile" in out["harness"]["figure"]


def test_a_merged_speedup_range_spans_every_process_and_canary_units_need_every_process():
    # Per round 2.0 in process 0, 2.5 and 3.0 in process 1: the range holds both processes' rounds.
    eager, onnx = (Cell.from_dict(c) for c in processes.merge([_part([10, 10], [5, 5]), _part([15, 15], [6, 5])])["cells"])
    assert onnx.speedup_range == pytest.approx([2.0, 3.0])
    assert onnx.speedup_host_normalized_range == pytest.approx([2.0, 3.0])
    # A process whose trials have no canary reading: no speed-up in canary units at all, as for the
    # figure itself, rather than one from the processes that had it.
    blind = _part([10, 10], [5, 5])
    for c in blind["cells"]:
        for t in c["trials"]:
            t["canary_ms"] = None
    onnx = Cell.from_dict(processes.merge([_part([10, 10], [5, 5]), blind])["cells"][1])
    assert onnx.speedup_vs_eager_fp32 == pytest.approx(2.0) and onnx.speedup_range == pytest.approx([2.0, 2.0])
    assert onnx.speedup_host_normalized is None and onnx.speedup_host_normalized_range is None
