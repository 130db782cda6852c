"""Report: Markdown tables and PNG plots from results files; foreign files refused."""
from __future__ import annotations

import json

import pytest

from cifar_speed import report, sweep
from cifar_speed.errors import CifarSpeedError
from cifar_speed.provenance import provenance


def _cell(model, backend, precision, batch, ips, top1, base_ips, **kw):
    return {"model": model, "backend": backend, "precision": precision, "device": "cpu", "batch_size": batch,
            "mode": "device", "status": "ok", "images_per_s": ips,
            "latency": {"median_ms": batch / ips * 1e3}, "gflops": ips * 0.01, "peak_fraction": ips * 0.01 / 1000,
            "speedup_vs_eager_fp32": ips / base_ips, "disturbed": False, "accuracy_flagged": False,
            "accuracy": {"top1": top1, "agreement": 0.99, "max_logit_diff": 0.01, "images": 10000}, **kw}


def synthetic_results() -> dict:
    cells = []
    for model, base in (("cnn", 1000.0), ("fast", 500.0)):
        for batch in (32, 128):
            cells.append(_cell(model, "eager", "fp32", batch, base, 0.80, base))
            cells.append(_cell(model, "eager", "bf16", batch, base * 3, 0.80, base))
            cells.append(_cell(model, "onnxrt", "fp32", batch, base * 2, 0.70, base, accuracy_flagged=True))
    cells.append({"model": "cnn", "backend": "compile", "precision": "bf16", "device": "cpu", "status": "failed",
                  "reason": "RuntimeError: boom"})
    return {"schema": sweep.SCHEMA, "created": "2026-01-01T00:00:00+00:00", "provenance": provenance(),
            "harness": {"accuracy_images": 10000, "modes": ["device"]},
            "peak": {"denominator_gflops": 1000.0, "source": "test"}, "models": {}, "cells": cells,
            "skipped": [{"backend": "trt", "precision": "fp16", "reason": "trt needs torch-tensorrt and a CUDA GPU"}]}


def test_markdown_tables():
    md = report.render_markdown([synthetic_results()])
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| model"))
    assert "b32 img/s ± trials (x eager)" in header and "b128 img/s ± trials (x eager)" in header
    assert "% of best probe" in header and "threads" in header and "layout" in header and "b128 p99 ms" in header
    ncols = header.count("|")
    assert all(l.count("|") == ncols for l in lines if l.startswith("|"))   # no broken rows
    threads = synthetic_results()["provenance"]["torch_threads"]   # a /1-style cell: threads from provenance
    assert f"| cnn | eager | bf16 | - | {threads} | **3,000 (3.00x)** | **3,000 (3.00x)** |" in md
    assert f"| fast | eager | fp32 | - | {threads} | 500 (1.00x) |" in md
    assert "| n < 100 |" in md                                # no p99 without 100 timed calls
    assert "70.00% ⚠" in md                                  # the flagged accuracy drop
    assert "trt fp16: trt needs torch-tensorrt and a CUDA GPU" in md
    assert "compile bf16: failed (RuntimeError: boom)" in md


def test_plots_and_report_files(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(synthetic_results()))
    md_path, pngs = report.write_report([path], tmp_path / "out")
    assert len(pngs) == 3 and md_path.is_file() and pngs[0].name.endswith("-device-overview.png")
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.name in md_path.read_text()


def test_foreign_or_broken_results_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(CifarSpeedError, match="not a cifar-speed results file"):
        report.load_results(bad)
    bad.write_text("{truncated")
    with pytest.raises(CifarSpeedError, match="not valid JSON"):
        report.load_results(bad)
    with pytest.raises(CifarSpeedError, match="not found"):
        report.load_results(tmp_path / "missing.json")


def test_peak_text_reads_old_and_per_precision_files():
    assert "1,000 GFLOP/s for every precision" in report.peak_text({"denominator_gflops": 1000.0, "source": "old"})
    text = report.peak_text({"fp32_gflops": 190.0, "bf16_gflops": 430.0, "int8_gops": 900.0, "source": "s",
                             "disturbed": True})
    assert "fp32 190 GFLOP/s" in text and "int8 900 GOP/s" in text and "contention" in text


def test_pareto_front_keeps_points_nothing_beats_on_both():
    pts = [(100.0, 90.0), (200.0, 80.0), (150.0, 70.0), (50.0, 95.0), (200.0, 60.0)]
    assert report.pareto_front(pts) == [(200.0, 80.0), (100.0, 90.0), (50.0, 95.0)]


def test_overview_refuses_to_mix_machines(tmp_path):
    a, b = synthetic_results(), synthetic_results()
    b["provenance"] = {**b["provenance"], "machine": "another-machine"}
    assert report.plot_overview([a, b], tmp_path) is None
    assert report.plot_overview([a, a], tmp_path).is_file()


def test_spread_p99_and_peak_note_of_trial_cells():
    r = synthetic_results()
    c = r["cells"][0]   # cnn eager fp32 b32
    c.update({"images_per_s_range": [900.0, 1100.0], "threads": 2, "memory_format": "nchw", "peak_fraction": 1.2,
              "peak_note": "above 100 % of the best fp32 probe: test", "accuracy": {**c["accuracy"], "top1_jpeg75": 0.7},
              "latency": {"median_ms": 32.0, "p99_ms": 40.0, "n": 150}, "batch_size": 128})
    r["cells"] = [c]
    md = report.render_markdown([r])
    assert "| cnn | eager | fp32 | nchw | 2 | **1,000 ±10% range (1.00x)** | 32.00 | 40.00 | 120.0% [1] | 80.00% | 70.00% |" in md
    assert "1. cnn eager fp32 nchw 2t (device table): above 100 % of the best fp32 probe: test" in md
    c["memory_format"] = None   # a backend with no layout of its own: no double space where it would be
    assert "1. cnn eager fp32 2t (device table): above" in report.render_markdown([r])


def test_reads_pytest_benchmark_json(tmp_path):
    def case(backend, precision, median, accuracy=None):
        return {"name": f"x-{backend}-{precision}", "extra_info": {"model": "cnn", "backend": backend, "precision": precision,
                                                                    "batch_size": 64, "device": "cpu", "flops_per_image": 1e6,
                                                                    "accuracy": accuracy},
                "stats": {"median": median, "q1": median * 0.9, "q3": median * 1.1, "min": median * 0.8,
                          "max": median * 1.5, "mean": median, "rounds": 30}}
    doc = {"machine_info": {"node": "box", "cpu": {"brand_raw": "CPU", "count": 2}}, "commit_info": {"id": "abc"},
           "datetime": "2026-01-01T00:00:00", "benchmarks": [case("eager", "fp32", 0.064, {"top1": 0.8, "top1_jpeg75": 0.75, "images": 10000}),
                                                            case("onnxrt", "fp32", 0.032, {"status": "skipped", "reason": "off"}),
                                                            {"name": "foreign", "extra_info": {}, "stats": {"median": 1.0}}],
           "cifar_speed": {"provenance": provenance()}}
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(doc))
    res = report.load_results(path)
    assert res["source_format"] == "pytest-benchmark" and len(res["cells"]) == 2
    by = {c["backend"]: c for c in res["cells"]}
    assert by["eager"]["images_per_s"] == pytest.approx(1000.0)
    assert by["onnxrt"]["speedup_vs_eager_fp32"] == pytest.approx(2.0)
    assert by["onnxrt"]["images_per_s_range"] == pytest.approx([64 / 0.0352, 64 / 0.0288])
    # The suite's own scoring of the runner is the cell's top-1 and JPEG-75 top-1; an unscored case has none.
    assert by["eager"]["accuracy"] == {"top1": 0.8, "top1_jpeg75": 0.75, "images": 10000}
    assert by["onnxrt"]["accuracy"] == {} and res["harness"]["accuracy_images"] == 10000
    assert "| cnn | onnxrt | fp32 |" in report.render_markdown([res])
    path.write_text(json.dumps({**doc, "benchmarks": doc["benchmarks"][2:]}))
    with pytest.raises(CifarSpeedError, match="no cifar-speed benchmark"):
        report.load_results(path)


def test_console_title_names_cpu_threads_only():
    from rich.console import Console

    def title(device):
        r = synthetic_results()
        for c in r["cells"]:
            c.update(device=device, threads=16)
        console = Console(width=300, record=True)
        console.print(report.table(r, "device"))
        text = console.export_text()
        return " ".join(line.strip() for line in text[:text.index("┏")].splitlines())   # the title, unwrapped

    assert "16 threads" in title("cpu") and "threads" not in title("cuda")   # a GPU's speed is not the host's threads


def test_the_plus_minus_is_the_medians_confidence_from_its_trials():
    from cifar_speed import report
    from cifar_speed.harness import relative_se
    from cifar_speed.sweep import Cell

    medians = [1.0, 1.1, 0.9, 1.2, 0.95, 1.05, 1.0, 0.98, 1.02, 0.97, 1.01, 0.99]   # enough for 1.96
    cell = Cell(model="m", architecture="m", backend="eager", precision="fp32", device="cpu", batch_size=1,
                images_per_s=1000.0, images_per_s_range=[500.0, 2000.0],
                trials=[{"round": r, "median_ms": m} for r, m in enumerate(medians)])
    assert report.spread_text(cell) == f"±{1.96 * relative_se(medians) * 100:.1f}%"   # not the wide range
    cell.latency = {"median_rse": 0.01}
    assert report.spread_text(cell) == "±2.0%"
    for junk in (float("nan"), float("inf"), -0.1, True, "0.01"):   # a damaged file: from the trials instead
        cell.latency = {"median_rse": junk}
        assert cell.median_rse() == relative_se(medians)
        cell.speedup_rse = junk
        assert cell.recorded_speedup_rse() is None
    cell.speedup_rse = 0.02
    assert cell.recorded_speedup_rse() == 0.02


def test_the_plus_minus_and_the_legend_follow_the_files_figure():
    from cifar_speed import report
    from cifar_speed.harness import relative_se
    from cifar_speed.sweep import Cell

    medians = [1.0, 1.1, 0.9, 1.2, 0.95, 1.05, 1.0, 0.98, 1.02, 0.97, 1.01, 0.99]
    cell = Cell(model="m", architecture="m", backend="eager", precision="fp32", device="cpu", batch_size=1,
                images_per_s=1000.0, latency={"figure": "lower_quartile_ms", "median_rse": 0.5},
                trials=[{"round": r, "median_ms": m} for r, m in enumerate(medians)])
    assert report.spread_text(cell) == f"±{1.96 * relative_se(medians, 25) * 100:.1f}%"   # not the median's
    cell.latency["lower_quartile_rse"] = 0.01
    assert report.spread_text(cell) == "±2.0%"
    assert "lower quartile" in report.figure_words({"harness": {"figure_quantile": 25}})[0]
    assert report.figure_words({"harness": {}}) == ("the median of the trial medians",
                                                    "median of per-round ratios against eager fp32")


def test_report_and_compare_name_a_files_statistic_from_one_reading():
    from cifar_speed import report
    from cifar_speed.commands import compare

    lower, older, tenth = {"harness": {"figure_quantile": 25}}, {"harness": {}}, {"harness": {"figure_quantile": 10}}
    assert compare.figure_of(lower) == "lower quartiles of the trial medians"
    assert compare.figure_of(older) == "medians of the trial medians and per-round ratios"
    assert compare.figure_of(tenth) == "10th percentiles of the trial medians"
    assert report.figure_words(lower)[1] == "eager fp32's lower quartile over the cell's, from the rounds both ran"
    assert report.figure_words(tenth)[0] == "the 10th percentile of the trial medians"


def test_a_few_processes_medians_get_students_t_not_the_normal_quantile():
    from cifar_speed import report
    from cifar_speed.harness import relative_se
    from cifar_speed.sweep import Cell

    per_process = [0.40, 0.37, 0.40]          # ms; two alike
    cell = Cell(model="m", architecture="m", backend="eager", precision="fp32", device="cpu", batch_size=1,
                images_per_s=2500.0, latency={"median_rse": relative_se(per_process)},
                trials=[{"round": r, "median_ms": 0.4} for r in range(45)],
                processes=[{"median_ms": m} for m in per_process])
    assert cell.median_count() == 3
    assert report.spread_text(cell) == f"±{4.303 * relative_se(per_process) * 100:.1f}%"
    assert report.spread_text(cell) != "±0.0%"
