"""report.best_cells_markdown: the per-model summary of a sweep (fastest unflagged cell per batch)."""
from cifar_speed.report import best_cells_markdown


def _cell(model, backend, precision, batch, ips, *, baseline=False, flagged=False, status="ok", threads=2, speedup=None):
    return {"model": model, "backend": backend, "precision": precision, "device": "cpu", "batch_size": batch,
            "mode": "device", "threads": threads, "status": status, "baseline": baseline, "images_per_s": ips,
            "accuracy_flagged": flagged, "speedup_vs_eager_fp32": speedup,
            "accuracy": {"top1": 0.9, "top1_jpeg75": 0.85, "images": 10000}}


def test_summary_picks_the_fastest_cell_that_keeps_accuracy():
    cells = [_cell("m", "eager", "fp32", 1, 100.0, baseline=True, speedup=1.0),
             _cell("m", "onnxrt", "int8", 1, 900.0, flagged=True),          # fastest, but it lost top-1
             _cell("m", "openvino", "bf16", 1, 400.0, threads=1, speedup=4.0),
             _cell("m", "eager", "fp32", 128, 1000.0, baseline=True, speedup=1.0),
             _cell("m", "compile", "int8", 128, 5000.0, status="failed"),
             _cell("m", "compile", "bf16", 128, 3000.0, speedup=3.0)]
    md = best_cells_markdown([{"cells": cells}])
    lines = md.splitlines()
    assert lines[0].count("batch 1:") == 1 and "batch 128:" in lines[0]
    row = lines[2]
    assert "| m | 90.00 % | 85.00 % |" in row
    assert "openvino bf16, 1 thread: 400 (4.00x)" in row and "onnxrt" not in row
    assert "compile bf16, 2 threads: 3,000 (3.00x)" in row and "5,000" not in row


def test_summary_marks_a_batch_without_a_usable_cell():
    cells = [_cell("m", "eager", "fp32", 1, 100.0, baseline=True),
             _cell("n", "eager", "fp32", 128, 50.0, baseline=True)]
    md = best_cells_markdown([{"cells": cells}])
    assert md.splitlines()[2].endswith("| - |") and md.splitlines()[3].split("|")[4].strip() == "-"
