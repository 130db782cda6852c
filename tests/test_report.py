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
    assert "b32 img/s (x eager)" in header and "b128 img/s (x eager)" in header and "% peak" in header
    ncols = header.count("|")
    assert all(l.count("|") == ncols for l in lines if l.startswith("|"))   # no broken rows
    assert "| cnn | eager | bf16 | **3,000 (3.00x)** | **3,000 (3.00x)** |" in md
    assert "| fast | eager | fp32 | 500 (1.00x) |" in md
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
