"""Sweep: planning and unavailability, Cell records from interleaved trials, paired speed-ups,
threads and layout axes, accuracy (clean and JPEG) and agreement, files, table."""
from __future__ import annotations

import csv
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from cifar_speed import backends, harness, report, resultsfile, sweep
from cifar_speed.errors import CifarSpeedError, UnavailableError

from _infer_util import fake_split, make_checkpoint


def cfg(tmp_path, **kw):
    base = dict(checkpoints=[make_checkpoint(tmp_path)], backends=["eager", "onnxrt"], precisions=None,
                batches=[8, 16], device="cpu", settings=harness.QUICK, cache_dir=str(tmp_path / "cache"),
                peak_gflops=1000.0, test_split=fake_split(40), threads=2, jpeg_split=fake_split(40, seed=1))
    base.update(kw)
    return sweep.SweepConfig(**base)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return sweep.run_sweep(cfg(tmp_path_factory.mktemp("sweep")), progress=False)


# -- plan ------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only planning")
def test_plan_explicit_unavailable_backend_is_an_error():
    with pytest.raises(UnavailableError, match="trt needs torch-tensorrt and a CUDA GPU"):
        sweep.plan(["trt"], None, "cpu")


def test_plan_explicit_unavailable_precision_is_an_error():
    with pytest.raises(UnavailableError, match="fp16 needs CUDA"):
        sweep.plan(["eager"], ["fp16"], "cpu")


def test_plan_default_skips_and_lists():
    run, skipped = sweep.plan(None, None, "cpu")
    assert ("eager", "fp32") in run
    listed = {(s["backend"], s["precision"]) for s in skipped}
    assert ("eager", "fp16") in listed and all(s["reason"] for s in skipped)
    assert not set(run) & listed


def test_plan_unknown_names():
    with pytest.raises(CifarSpeedError, match="valid backends"):
        sweep.plan(["tvm"], None, "cpu")
    with pytest.raises(CifarSpeedError, match="valid precisions"):
        sweep.plan(None, ["int4"], "cpu")


# -- the run ----------------------------------------------------------------------------------------

def test_results_schema(results):
    assert results["schema"] == sweep.SCHEMA
    prov = results["provenance"]
    for key in ("cpu", "gpu", "versions", "torch_threads", "git_commit", "date", "machine"):
        assert key in prov
    assert "features" in prov["cpu"] and "onnxruntime" in prov["versions"]
    h = results["harness"]
    assert h["trial_time_s"] == harness.QUICK.trial_time_s and h["trials"] == harness.QUICK.trials
    assert h["modes"] == ["device"] and h["accuracy_images"] == 40 and h["threads"] == 2 and h["jpeg_quality"] == 75
    assert h["thread_groups"] == [{"threads": 2, "batches": [8, 16]}]   # no batch 1: no 1-thread cells
    assert results["peak"]["given_gflops"] == 1000.0 and "command line" in results["peak"]["source"]
    m = results["models"]["lightnn"]
    assert m["flops_per_image"] > 0 and m["params"] > 0 and "eager_fp32_top1" in m
    assert {s["precision"] for s in results["skipped"]} >= {"fp16"}


def test_cells(results):
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    combos = {(c["backend"], c["precision"]) for c in ok}
    assert ("eager", "fp32") in combos and ("onnxrt", "fp32") in combos
    assert {c["batch_size"] for c in ok} == {8, 16}
    flops = results["models"]["lightnn"]["flops_per_image"]
    for c in ok:
        lat = c["latency"]
        assert lat["trial_median_ms"]["min"] <= lat["median_ms"] <= lat["trial_median_ms"]["max"]
        assert lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"]
        if lat["n"] < 100:   # how many calls fit in the quick trials depends on the machine's speed
            assert lat["p99_ms"] is None and "p99 needs at least 100" in lat["p99_note"]
        else:
            assert lat["median_ms"] <= lat["p99_ms"] <= lat["max_ms"] and lat["p99_note"] is None
        assert c["images_per_s"] == pytest.approx(c["batch_size"] / lat["lower_quartile_ms"] * 1e3)
        assert lat["lower_quartile_ms"] <= lat["median_ms"]
        assert c["images_per_s_range"][0] <= c["images_per_s"] <= c["images_per_s_range"][1]
        assert c["threads"] == 2 and len(c["trials"]) == harness.QUICK.trials == lat["trials"]
        assert [t["round"] for t in c["trials"]] == list(range(harness.QUICK.trials))
        assert "top1_jpeg75" in c["accuracy"] and 0 <= c["accuracy"]["top1_jpeg75"] <= 1
        assert c["gflops"] == pytest.approx(flops * c["images_per_s"] / 1e9)
        assert c["peak_fraction"] == pytest.approx(c["gflops"] / 1000.0)
        assert c["accuracy"]["images"] == 40 and 0 <= c["accuracy"]["top1"] <= 1
        assert isinstance(c["disturbed"], bool)
        if (c["backend"], c["precision"]) == ("eager", "fp32"):
            assert c["speedup_vs_eager_fp32"] == 1.0 and c["baseline"] and c["memory_format"] == "nchw"
            assert c["accuracy"]["agreement"] == 1.0 and c["accuracy"]["max_logit_diff"] == 0.0
        else:
            assert c["speedup_vs_eager_fp32"] > 0
        if (c["backend"], c["precision"]) == ("onnxrt", "fp32"):
            assert c["accuracy"]["agreement"] == 1.0 and c["accuracy"]["max_logit_diff"] < 1e-4
            assert not c["accuracy_flagged"]


def test_accuracy_drop_is_flagged(tmp_path, monkeypatch):
    real_build = sweep.build_runner

    def broken(v, *a, **kw):
        r = real_build(v, *a, **kw)
        if v.backend == "onnxrt":
            fn = r.fn
            r.fn = lambda x: -fn(x) * 1000    # a "compiled" model that gets the classes wrong
        return r

    # Labels = the model's own eager predictions, so eager fp32 scores 100 % and a broken build cannot.
    from cifar_speed.checkpoint import load_checkpoint
    from cifar_speed.data import Split, normalize
    ckpt = make_checkpoint(tmp_path)
    model, meta = load_checkpoint(ckpt)
    split = fake_split(40)
    with torch.no_grad():
        labels = model(normalize(split.images, meta["normalize"]["mean"], meta["normalize"]["std"])).argmax(1)
    monkeypatch.setattr(sweep, "build_runner", broken)
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[ckpt], batches=[8], precisions=["fp32"],
                              test_split=Split(split.images, labels)), progress=False)
    by = {c["backend"]: c for c in res["cells"]}
    assert by["onnxrt"]["accuracy_flagged"] and by["onnxrt"]["accuracy"]["agreement"] < 0.5
    assert not by["eager"]["accuracy_flagged"]


def test_failed_backend_is_recorded_not_fatal(tmp_path, monkeypatch):
    real_build = sweep.build_runner

    def failing(v, *a, **kw):
        if v.backend == "onnxrt":
            raise RuntimeError("exporter exploded\nsecond line")
        return real_build(v, *a, **kw)

    monkeypatch.setattr(sweep, "build_runner", failing)
    res = sweep.run_sweep(cfg(tmp_path, batches=[8], precisions=["fp32"]), progress=False)
    failed = [c for c in res["cells"] if c["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "RuntimeError: exporter exploded"


def test_a_runner_failing_while_timed_is_a_failed_cell_not_a_lost_sweep(tmp_path, monkeypatch):
    """Built and scored fine, then raises once timed: its cells fail with a one-line reason; the
    baseline's cells are still timed and written."""
    real = sweep.build_and_score

    def breaks_after_scoring(v, *a, **kw):
        runner, logits, acc, seconds = real(v, *a, **kw)
        if v.backend == "onnxrt":
            runner.fn = lambda x: (_ for _ in ()).throw(RuntimeError("device lost\nsecond line"))
        return runner, logits, acc, seconds

    monkeypatch.setattr(sweep, "build_and_score", breaks_after_scoring)
    res = sweep.run_sweep(cfg(tmp_path, batches=[8], precisions=["fp32"], backends=["eager", "onnxrt"],
                              single_thread_at_batch1=False), progress=False)
    by = {c["backend"]: c for c in res["cells"] if c.get("mode") != "async"}
    assert by["onnxrt"]["status"] == "failed" and by["onnxrt"]["reason"] == "RuntimeError: device lost"
    assert by["eager"]["status"] == "ok" and len(by["eager"]["trials"]) == harness.QUICK.trials


def test_bench_times_the_compiled_artifact(tmp_path):
    """onnxrt cells run the file `cifar-speed compile` writes: compile first, and the sweep's cell is a
    cache hit on that very file (path and sha256 recorded); eager has no artifact beyond the checkpoint."""
    from cifar_speed import artifacts
    from cifar_speed.fileio import sha256_file

    ckpt = make_checkpoint(tmp_path)
    compiled = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [32, 64, 128],
                                            out_dir=tmp_path / "cache" / "artifacts")
    assert not compiled.cache_hit
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[ckpt], batches=[8], precisions=["fp32"]), progress=False)
    by = {c["backend"]: c for c in res["cells"] if c["status"] == "ok"}
    runner = by["onnxrt"]["runner"]
    assert runner["cache_hit"] and runner["artifact"] == str(compiled.artifact)   # other batch sizes, same file
    assert runner["artifact_sha256"] == sha256_file(compiled.artifact)
    assert "artifact" not in by["eager"]["runner"]


def test_compile_cells_time_the_aoti_package_on_cpu_in_default_mode(tmp_path):
    from cifar_speed import artifacts

    rule = backends.get_backend("compile").timed_from_artifact
    assert rule("fp32", "cpu", {"mode": "default"}) and rule("fp32", "cpu", {})
    assert not rule("fp32", "cpu", {"mode": "max-autotune"}) and not rule("fp16", "cuda", {"mode": "default"})
    ckpt = make_checkpoint(tmp_path)
    compiled = artifacts.compile_checkpoint(ckpt, "compile", "fp32", "cpu", [8], out_dir=tmp_path / "cache" / "artifacts")
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[ckpt], backends=["compile"], batches=[8], precisions=["fp32"]),
                          progress=False)
    cell = next(c for c in res["cells"] if c["backend"] == "compile")
    assert cell["status"] == "ok" and cell["runner"]["cache_hit"] and cell["runner"]["artifact"] == str(compiled.artifact)
    assert cell["runner"]["program"] == "AOTInductor package" and cell["accuracy"]["max_logit_diff"] < 1e-4


def test_predict_pads_the_tail_batch():
    shapes = []

    def fn(x):
        shapes.append(x.shape[0])
        return x.flatten(1)[:, :10]

    from cifar_speed.backends import Runner
    images = torch.randn(21, 3, 32, 32)
    out = sweep.predict(Runner(fn, "t", "fp32", "cpu"), images, 8)
    assert shapes == [8, 8, 8] and out.shape == (21, 10)
    torch.testing.assert_close(out, images.flatten(1)[:, :10])


def test_accuracy_and_agreement():
    labels = torch.tensor([0, 1, 2, 3])
    ref = torch.nn.functional.one_hot(labels, 10).float()
    logits = ref.clone()
    logits[3] = torch.nn.functional.one_hot(torch.tensor(5), 10).float() * 2
    a = sweep.accuracy(logits, labels, ref)
    assert a["top1"] == 0.75 and a["agreement"] == 0.75 and a["max_logit_diff"] == pytest.approx(2.0)


def test_bad_batches_and_no_checkpoints(tmp_path):
    with pytest.raises(CifarSpeedError, match="positive integers"):
        sweep.run_sweep(cfg(tmp_path, batches=[0]), progress=False)
    with pytest.raises(CifarSpeedError, match="no checkpoints"):
        sweep.run_sweep(cfg(tmp_path, checkpoints=[]), progress=False)


# -- files -----------------------------------------------------------------------------------------

def test_write_results_json_and_csv(results, tmp_path):
    j, c = resultsfile.write_results(results, tmp_path / "r" / "run1.json")
    back = sweep.validate_results(json.loads(j.read_text()))
    assert back["cells"] == json.loads(json.dumps(results["cells"], default=str))
    rows = list(csv.DictReader(io.StringIO(c.read_text())))
    assert len(rows) == len(results["cells"])          # skipped combinations are not cell rows ...
    assert set(resultsfile.CSV_COLUMNS) == set(rows[0])
    for col in ("created", "machine", "commit", "threads", "trials", "n"):   # the run's columns on every row
        assert all(r[col] for r in rows), col
    ok = [r for r in rows if r["status"] == "ok"]    # a CPU sweep reads the host's canary between trials
    assert ok and all(float(r["canary_ms"]) > 0 and float(r["host_normalized"]) > 0 for r in ok)
    cells = [c for c in results["cells"] if c["status"] == "ok" and not c["baseline"]]
    assert cells and all(c["speedup_host_normalized"] > 0 for c in cells)
    skipped = list(csv.DictReader(io.StringIO(resultsfile.skipped_path(c).read_text())))
    assert len(skipped) == len(results["skipped"]) and all(r["reason"] and r["created"] for r in skipped)
    assert [p.name for p in j.parent.iterdir()] and not list(j.parent.glob(".*tmp"))


def test_write_results_is_atomic(results, tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    target.write_text("previous")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises((OSError, CifarSpeedError)):   # fileio turns an OSError into one line
        resultsfile.write_results(results, target)
    assert target.read_text() == "previous"
    assert not target.with_suffix(".csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]   # no temporary left behind


def test_default_results_path_is_per_machine():
    from cifar_speed.provenance import machine_slug
    p = resultsfile.default_results_path("x")
    assert p.parent.name == machine_slug() and p.parent.parent.name == "results" and p.name == "x.json"


def test_recorded_machine_spells_an_old_slug_with_its_cpu_tier():
    """Files from before the slug carried the CPU's tier name both AMD EPYCs "amd-epyc-2c"; their recorded
    features tell which, so a baseline and a run from the same kind of machine compare as one machine."""
    from cifar_speed.provenance import cpu_info, gpu_info, machine_slug, recorded_machine
    epyc = {"model": "AMD EPYC", "usable_cpus": 2, "features": ["avx2", "avx512f", "avx512_bf16"]}
    avx512 = {"machine": "amd-epyc-2c", "gpu": None, "cpu": epyc}
    assert recorded_machine(avx512) == "amd-epyc-2c-avx512bf16"
    assert recorded_machine({**avx512, "cpu": {**epyc, "features": ["avx2"]}}) == "amd-epyc-2c-avx2"
    assert recorded_machine({**avx512, "machine": "amd-epyc-2c-avx512bf16"}) == "amd-epyc-2c-avx512bf16"
    assert recorded_machine({**avx512, "machine": "nvidia-h200", "gpu": {"name": "NVIDIA H200"}}) == "nvidia-h200"
    assert recorded_machine({"machine": "amd-epyc-2c"}) == "amd-epyc-2c"   # no features recorded: as written
    assert recorded_machine({}) == "?"
    # This machine's own record spells as machine_slug() does: one spelling, not two that could drift.
    # (where a GPU names the machine, the recorded name stands).
    assert recorded_machine({"machine": "x", "gpu": gpu_info(), "cpu": cpu_info()}) == ("x" if gpu_info() else machine_slug())


def test_validate_rejects_foreign():
    with pytest.raises(CifarSpeedError, match="not a cifar-speed results file"):
        sweep.validate_results({"schema": "other", "cells": []})


def test_table_marks_fastest(results):
    console = Console(record=True, width=200)
    console.print(report.table(results))
    text = console.export_text()
    assert "★" in text and "lightnn" in text and "onnxrt fp32" in text and "b16 img/s" in text and "±" in text
    assert "2 threads" in text and "threads │" not in text   # one thread count: said once, not a column
    console.print(report.accuracy_table(results))
    acc = console.export_text()
    assert "top-1" in acc and "agree" in acc and "onnxrt fp32" in acc
    best = report.fastest(results)
    # onnxrt also has mode "async" (requests in flight, cifar_speed/inflight.py): its own fastest per batch
    assert set(best) == {("lightnn", b, m) for b in (8, 16) for m in ("device", "async")}
    # A faster cell that loses accuracy does not get the star.
    flagged = dict(next(c for c in results["cells"] if c["status"] == "ok" and c["mode"] == "device"
                        and c["batch_size"] == 8), backend="openvino", precision="int8", accuracy_flagged=True)
    flagged["images_per_s"] = 1e12
    assert report.fastest({**results, "cells": results["cells"] + [flagged]}) == best


def test_baseline_always_measured_and_dawnbench(tmp_path):
    res = sweep.run_sweep(cfg(tmp_path, backends=["onnxrt"], precisions=["fp32"], batches=[8], dawnbench=True),
                          progress=False)
    by = {(c["backend"], c["precision"]): c for c in res["cells"]}
    assert by[("eager", "fp32")]["baseline"] and not by[("eager", "fp32")]["requested"]
    assert by[("onnxrt", "fp32")]["requested"]
    d = by[("onnxrt", "fp32")]["dawnbench"]
    assert d["images"] == 40 and d["ms_per_image"] > 0 and 0 <= d["top1"] <= 1
    # The same runner, each answer waited for: per-request percentiles, the same answers.
    assert d["per_request"]["p50_ms"] <= d["per_request"]["p99_ms"] and d["per_request"]["top1"] == d["top1"]


def test_checkpoints_of_one_architecture_get_their_own_rows(tmp_path):
    """lightnn and its distilled variants share an architecture; each checkpoint is its own row."""
    a = make_checkpoint(tmp_path, seed=0, stem="student_a")
    b = make_checkpoint(tmp_path, seed=1, stem="student_b")
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[a, b], backends=["eager"], precisions=["fp32"], batches=[8]),
                          progress=False)
    assert set(res["models"]) == {"student_a", "student_b"}
    assert {c["model"] for c in res["cells"]} == {"student_a", "student_b"}
    assert {c["architecture"] for c in res["cells"]} == {"lightnn"}
    by = {c["model"]: c for c in res["cells"]}
    assert by["student_a"]["accuracy"]["top1"] >= 0 and by["student_a"]["speedup_vs_eager_fp32"] == 1.0
    # Both students' cells are timed in every round 0..trials-1.
    assert all(len(c["trials"]) == harness.QUICK.trials for c in res["cells"])


def test_one_round_spans_every_model_and_thread_count(tmp_path, monkeypatch):
    """Rounds run over the whole run: round r of every cell (both models, 2 threads and 1) is timed
    before round r + 1 of any, so no model or thread count gets a few minutes of the host to itself."""
    a = make_checkpoint(tmp_path, seed=0, stem="student_a")
    b = make_checkpoint(tmp_path, seed=1, stem="student_b")
    order = []
    real_trial = harness.CellTimer.trial

    def logged(self, round_, canary=None):
        order.append((round_, self.threads))
        return real_trial(self, round_, canary)

    monkeypatch.setattr(harness.CellTimer, "trial", logged)
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[a, b], backends=["eager"], precisions=["fp32"], batches=[1],
                              threads=2), progress=False)
    rounds = [r for r, _ in order]
    assert rounds == sorted(rounds) and set(rounds) == set(range(harness.QUICK.trials))
    per_round = [sorted(t for r, t in order if r == k) for k in range(harness.QUICK.trials)]
    assert all(threads == [1, 1, 2, 2] for threads in per_round)   # 2 models x (2 threads, 1 thread)
    ok = [c for c in res["cells"] if c["status"] == "ok"]
    assert {(c["model"], c["threads"]) for c in ok} == {(m, t) for m in ("student_a", "student_b") for t in (1, 2)}
    assert all(c["speedup_vs_eager_fp32"] == 1.0 for c in ok)   # each is its own group's baseline


def test_peak_fraction_divides_by_the_peak_of_the_cells_own_precision():
    peak = {"fp32_gflops": 100.0, "bf16_gflops": 400.0, "int8_gops": 800.0}
    assert sweep.peak_for(peak, "fp32") == 100.0
    assert sweep.peak_for(peak, "bf16") == 400.0
    assert sweep.peak_for(peak, "int8") == 800.0
    assert sweep.peak_for(peak, "fp16") is None  # not measured on a CPU: no fraction rather than a wrong one
    assert sweep.peak_for({"given_gflops": 5.0}, "int8") == 5.0


def test_speedup_is_recomputable_from_the_trial_records(results):
    """The file's speed-up is the baseline's lower quartile of trial medians over the cell's, from the
    rounds both ran; beside it the median of the per-round ratios and their range."""
    cells = [c for c in results["cells"] if c["status"] == "ok"]
    assert results["harness"]["figure_quantile"] == 25
    for c in cells:
        base = next(b for b in cells if b["baseline"] and b["batch_size"] == c["batch_size"]
                    and b["threads"] == c["threads"])
        by_round = {t["round"]: t["median_ms"] for t in base["trials"]}
        own = {t["round"]: t["median_ms"] for t in c["trials"] if t["round"] in by_round}
        figure = np.percentile([by_round[r] for r in own], 25) / np.percentile(list(own.values()), 25)
        assert c["speedup_vs_eager_fp32"] == pytest.approx(figure)
        ratios = sorted(by_round[r] / m for r, m in own.items())
        assert c["speedup_paired_median"] == pytest.approx(ratios[len(ratios) // 2])
        assert c["speedup_range"] == pytest.approx([ratios[0], ratios[-1]])
        for t in c["trials"]:   # raw per-call timings: the trial median is recomputable too
            calls = harness.decode_calls(t["calls_ms"])
            assert len(calls) == t["n"] and t["median_ms"] == pytest.approx(float(np.median(calls)), rel=1e-5)


def test_thread_groups():
    assert sweep.thread_groups(2, [1, 128], True) == [(2, [1, 128]), (1, [1])]
    assert sweep.thread_groups(2, [32, 128], True) == [(2, [32, 128])]     # no batch 1
    assert sweep.thread_groups(1, [1], True) == [(1, [1])]                 # already 1 thread
    assert sweep.thread_groups(4, [1], False) == [(4, [1])]


def test_batch1_also_at_one_thread_and_layout_axis(tmp_path):
    res = sweep.run_sweep(cfg(tmp_path, backends=["eager"], precisions=["fp32"], batches=[1, 8],
                                  options={"eager": {"memory_format": ["nchw", "channels_last"]}}),
                          progress=False)
    keys = {(c["memory_format"], c["batch_size"], c["threads"]) for c in res["cells"] if c["status"] == "ok"}
    assert keys == {(f, b, t) for f in ("nchw", "channels_last") for b, t in ((1, 2), (8, 2), (1, 1))}
    for c in res["cells"]:
        assert c["baseline"] == (c["memory_format"] == "nchw")
        if c["baseline"]:
            assert c["speedup_vs_eager_fp32"] == 1.0     # each thread count has its own baseline
    assert {c.key for c in sweep.cells_of(res)} == {("lightnn", "eager", "fp32", b, "device", t, f, None)
                                                     for f, b, t in keys}


def test_old_results_files_still_read():
    """Cells of a /1 file (one timed block, no threads or trials) become Cell records."""
    old = {"schema": "cifar-speed-bench/1", "provenance": {"torch_threads": 2}, "cells": [
        {"model": "cnn", "architecture": "cnn", "backend": "eager", "precision": "bf16", "device": "cpu",
         "batch_size": 128, "mode": "device", "status": "ok", "runner": {"memory_format": "channels_last"},
         "latency": {"median_ms": 20.0, "p99_ms": 25.0}, "images_per_s": 6400.0, "gflops": 1.0,
         "peak_fraction": 0.5, "speedup_vs_eager_fp32": 3.4, "accuracy": {"top1": 0.8}, "disturbed": False}]}
    sweep.validate_results(old)
    (c,) = sweep.cells_of(old)
    assert c.threads == 2 and c.memory_format == "channels_last" and c.trials == [] and c.images_per_s_range is None
    assert resultsfile.csv_row(c, {})["images_per_s"] == 6400.0


def test_fast_tta_is_a_view_of_the_fast_checkpoint(tmp_path, monkeypatch):
    """`bench fast_tta` times the fast checkpoint built with test-time augmentation, in its own row."""
    from cifar_speed import locate

    ck = make_checkpoint(tmp_path, name="fast")
    monkeypatch.setattr(locate, "shipped", lambda: {"fast": ck})
    ref = locate.resolve_model("fast_tta")
    assert ref == locate.ModelRef(ck, "fast_tta") and ref.name == "fast_tta"
    assert locate.resolve_model("fast") == locate.ModelRef(ck)
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[ref, ck], backends=["eager"], precisions=["fp32"], batches=[4],
                              test_split=fake_split(8), jpeg_split=None, jpeg_quality=None), progress=False)
    assert set(res["models"]) == {"fast_tta", "fast"}
    assert res["models"]["fast_tta"]["architecture"] == "fast_tta"
    assert res["models"]["fast_tta"]["checkpoint"] == res["models"]["fast"]["checkpoint"]
    by = {c["model"]: c for c in res["cells"]}
    assert by["fast_tta"]["architecture"] == "fast_tta" and by["fast"]["architecture"] == "fast"
    # Its agreement reference is its own eager fp32 (a view is a model of its own, not a variant of fast).
    assert by["fast_tta"]["accuracy"]["max_logit_diff"] == 0.0


def test_fast_jpeg_tta_is_a_view_of_the_fast_jpeg_checkpoint_in_a_row_of_its_own(tmp_path, monkeypatch):
    """The JPEG-robust fast's TTA view is built as fast_tta but named fast_jpeg_tta: it must not merge with
    (or be taken for) the fast_tta row of the other weights."""
    from cifar_speed import locate

    fast, fast_jpeg = make_checkpoint(tmp_path, name="fast"), make_checkpoint(tmp_path, name="fast", seed=1, stem="fast_jpeg")
    monkeypatch.setattr(locate, "shipped", lambda: {"fast": fast, "fast_jpeg": fast_jpeg})
    ref = locate.resolve_model("fast_jpeg_tta")
    assert ref == locate.ModelRef(fast_jpeg, "fast_tta", "fast_jpeg_tta") and ref.name == "fast_jpeg_tta"
    res = sweep.run_sweep(cfg(tmp_path, checkpoints=[locate.resolve_model("fast_tta"), ref], backends=["eager"],
                              precisions=["fp32"], batches=[4], test_split=fake_split(8), jpeg_split=None,
                              jpeg_quality=None), progress=False)
    assert set(res["models"]) == {"fast_tta", "fast_jpeg_tta"}
    assert res["models"]["fast_jpeg_tta"]["architecture"] == "fast_tta"
    assert res["models"]["fast_jpeg_tta"]["checkpoint"].endswith("fast_jpeg.json")
    assert {c["model"] for c in res["cells"]} == {"fast_tta", "fast_jpeg_tta"}


@pytest.mark.gpu
def test_cuda_sweep_times_with_events_in_both_modes(tmp_path):
    res = sweep.run_sweep(cfg(tmp_path, backends=["eager", "compile"], precisions=["fp32", "fp16"], batches=[1, 8],
                              device="cuda", options={"compile": {"mode": ["reduce-overhead"]}}, dawnbench=True), progress=False)
    ok = [c for c in res["cells"] if c["status"] == "ok"]
    assert {c["mode"] for c in ok} == {"device", "host"} and not [c for c in res["cells"] if c["status"] != "ok"]
    assert {(c["backend"], c["precision"]) for c in ok} == {("eager", "fp32"), ("eager", "fp16"),
                                                            ("compile", "fp32"), ("compile", "fp16")}
    assert all(c["latency"]["timer"] == "cuda-events" and c["disturbed"] is None and c["device"] == "cuda" for c in ok)
    assert {c["threads"] for c in ok} == {res["harness"]["threads"]}   # no 1-thread axis on a GPU
    assert all(c["runner"]["mode"] == "reduce-overhead" for c in ok if c["backend"] == "compile")
    assert all(c["dawnbench"]["images"] == 40 and c["dawnbench"]["ms_per_image"] > 0 for c in ok)
    # eager can be captured whole: both DAWNBench methods ran, the faster is the figure; CUDA-graph
    # compile (reduce-overhead) replays graphs of its own, so only the loop.
    for c in ok:
        d = c["dawnbench"]
        other = {"graph": "loop", "loop": "graph"}[d["method"]]
        assert (other in d) == (c["backend"] == "eager"), c
        assert other not in d or d[other]["ms_per_image"] >= d["ms_per_image"]


# -- backend options --------------------------------------------------------------------------------

def test_declared_options_become_variants_and_an_axis_becomes_rows():
    pairs = [("eager", "fp32"), ("compile", "fp32"), ("onnxrt", "fp32")]
    default = sweep.variants(pairs)
    assert [v.options for v in default] == [(("memory_format", "nchw"),), (("mode", "default"),), (("fold_bn", "on"), ("spin", "on"))]
    assert [v.non_default for v in default] == [None, None, None]
    axes = backends.option_axes(["compile.mode=default,max-autotune", "eager.memory_format=nchw,channels_last"])
    got = sweep.variants(pairs, axes)
    assert [v.label() for v in got] == ["eager fp32 nchw", "eager fp32 channels_last", "compile fp32",
                                        "compile fp32 max-autotune", "onnxrt fp32"]
    assert [v.non_default for v in got][2:4] == [None, "mode=max-autotune"]   # part of the cell's key
    only_cl = sweep.variants(pairs[:1], backends.option_axes(["eager.memory_format=channels_last"]))
    assert [v.label() for v in only_cl] == ["eager fp32 nchw", "eager fp32 channels_last"]   # the baseline stays


@pytest.mark.parametrize("text,needle", [
    ("compile.mode", "expected BACKEND.NAME=VALUE"), ("tvm.mode=x", "unknown backend 'tvm'"),
    ("onnxrt.mode=default", "has no option 'mode' (its options: fold_bn, spin)"),
    ("openvino.mode=default", "has no option 'mode' (its options: fold_bn)"),
    ("compile.mode=fastest", "compile.mode takes default, max-autotune, reduce-overhead"),
])
def test_bad_backend_option_is_one_clear_error(text, needle):
    with pytest.raises(CifarSpeedError, match=re.escape(needle)):
        backends.option_axes([text])


def test_old_files_compile_mode_reads_as_a_variant_option():
    """Files written before backend options carried the mode in runner info only: compare still matches."""
    old = sweep.Cell.from_dict({"model": "m", "backend": "compile", "precision": "fp16", "runner": {"mode": "reduce-overhead"}})
    assert old.variant_options == "mode=reduce-overhead" and old.key[-1] == "mode=reduce-overhead"
    plain = sweep.Cell.from_dict({"model": "m", "backend": "compile", "precision": "fp16", "runner": {"mode": "default"}})
    assert plain.variant_options is None


def test_a_cell_reads_its_variant_from_the_artifact_options_it_recorded():
    """A file that did not write variant_options (the options were defaults then) is labelled by what
    its runner recorded, judged against today's defaults: a default that changed since the run must
    not pass the cell off as today's default. Cells from before fold_bn existed ran the unfolded graph.
    onnxrt's fold_bn defaults to on, openvino's to off."""
    def cell(backend, runner, **kw):
        return sweep.Cell.from_dict({"model": "m", "backend": backend, "precision": "int8", "status": "ok",
                                     "runner": runner, **kw}).variant_options
    assert cell("onnxrt", {"artifact": "x"}) == "fold_bn=off"          # before the option
    assert cell("openvino", {"artifact": "x"}) is None                 # before it, and off is the default
    assert cell("onnxrt", {"artifact": "x", "artifact_options": {"fold_bn": "on"}}) is None
    assert cell("openvino", {"artifact": "x", "artifact_options": {"fold_bn": "on"}}) == "fold_bn=on"
    assert cell("onnxrt", {"fold_bn": 6}) is None                      # an in-memory build that folded
    assert cell("onnxrt", {}) is None                                  # no runner record: nothing known
    assert cell("openvino", {}, variant_options="fold_bn=on") == "fold_bn=on"
    assert cell("eager", {"threads": 2}) is None and cell("train-step", {"x": 1}) is None


def test_a_timed_cache_hit_hashes_the_artifact_once(tmp_path, monkeypatch):
    """runner_for checks the cached file's sha256 (compile_checkpoint) and loads it without hashing
    it a second time; a corrupt file is still refused (rebuilt)."""
    from cifar_speed import artifacts, fileio

    ckpt = make_checkpoint(tmp_path)
    first = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out_dir=tmp_path / "cache" / "artifacts")
    hashed = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda p: hashed.append(os.path.basename(p)) or real(p))
    runner = artifacts.runner_for(ckpt, "onnxrt", "fp32", "cpu", [8], cache_dir=tmp_path / "cache")
    assert runner.info["cache_hit"] and hashed.count(first.artifact.name) == 1
    assert runner.info["artifact_sha256"] == fileio.sha256_file(first.artifact)
