"""The inference commands end to end: one clear line and exit 2 for every bad input, nothing written."""
from __future__ import annotations

import json

import pytest
import torch

from cifar_speed import backends
from cifar_speed.cli import main

from _infer_util import make_checkpoint


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse rejects a value outside an option's choices before main's try
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifar-speed: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("argv,needles", [
    (["--backend", "tvm"], ["unknown backend 'tvm'", "eager, compile, onnxrt, trt"]),
    (["--precision", "fp8"], ["unknown precision 'fp8'", "fp32, fp16, bf16"]),
    (["--batch", "0"], ["not a positive integer"]),
    (["--batch", "32,abc"], ["'abc' is not a positive integer"]),
    (["--batch", "-4"], ["not a positive integer"]),
    (["--backend", "eager", "--precision", "fp16", "--device", "cpu"], ["fp16 needs CUDA"]),
    (["--processes", "0"], ["--processes"]),
])
def test_bench_bad_input(capsys, tmp_path, ckpt, argv, needles):
    out = tmp_path / "res" / "r.json"
    code, _, err = run_cli(capsys, "bench", str(ckpt), "--out", str(out), "--no-progress", *argv)
    assert_one_line_error(code, err, *needles)
    assert not out.parent.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_bench_explicit_trt_here(capsys, tmp_path, ckpt):
    code, _, err = run_cli(capsys, "bench", str(ckpt), "--backend", "trt", "--out", str(tmp_path / "r.json"))
    assert_one_line_error(code, err, "trt needs torch-tensorrt and a CUDA GPU")
    assert not (tmp_path / "r.json").exists()


def test_bench_corrupt_checkpoint(capsys, tmp_path, ckpt):
    weights = ckpt.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli(capsys, "bench", str(ckpt), "--out", str(tmp_path / "r.json"), "--no-progress",
                           "--backend", "eager", "--data-dir", str(tmp_path))
    assert_one_line_error(code, err, "sha256")
    assert not (tmp_path / "r.json").exists()


def test_bench_smoke_writes_results(capsys, tmp_path, ckpt, fake_data, monkeypatch):
    import os
    import warnings

    from cifar_speed import sweep

    predict = sweep.predict

    def noisy_predict(*a, **k):   # a library that warns and writes to fd 2 while a cell is scored
        warnings.warn("a library's caveat", UserWarning)
        os.write(2, b"a native library's line\n")
        return predict(*a, **k)

    monkeypatch.setattr(sweep, "predict", noisy_predict)
    monkeypatch.setenv("CIFAR_SPEED_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "res" / "smoke.json"
    code, stdout, err = run_cli(capsys, "bench", str(ckpt), "--backend", "eager,onnxrt", "--batch", "16",
                                "--data-dir", str(fake_data), "--min-time", "0.05", "--min-reps", "3",
                                "--trials", "3", "--max-trials", "3",   # a fixed count: not a measurement
                                "--max-warmup", "0.5", "--peak-gflops", "500", "--no-progress",
                                "--cache-dir", str(tmp_path / "cache"), "--out", str(out))
    assert code == 0, err
    res = json.loads(out.read_text())
    ok = [c for c in res["cells"] if c["status"] == "ok"]
    assert {(c["backend"], c["precision"]) for c in ok} >= {("eager", "fp32"), ("onnxrt", "fp32")}
    assert all(c["accuracy"]["images"] == 500 for c in ok)
    assert out.with_suffix(".csv").is_file()
    assert "★" in stdout and "results:" in stdout
    # Third-party output: in the results file (and the log), not on the screen.
    texts = [m["text"] for m in res["third_party_output"]]
    assert any("a library's caveat" in t for t in texts) and "a native library's line" in texts
    assert "caveat" not in err and "native library" not in err and "caveat" not in stdout


def test_compile_bad_inputs(capsys, tmp_path, ckpt):
    # --backend lists the backends with an artifact (argparse choices): eager has none.
    code, _, err = run_cli(capsys, "compile", str(ckpt), "--backend", "eager", "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "invalid choice: 'eager'", "onnxrt")
    code, _, err = run_cli(capsys, "compile", str(ckpt), "--backend", "nope")
    assert_one_line_error(code, err, "invalid choice: 'nope'")
    code, _, err = run_cli(capsys, "compile", str(ckpt), "--backend", "onnxrt", "--precision", "fp16",
                           "--device", "cpu", "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "fp16 needs CUDA")
    code, _, err = run_cli(capsys, "compile", str(tmp_path / "missing"), "--backend", "onnxrt")
    assert_one_line_error(code, err, "not found")
    code, _, err = run_cli(capsys, "compile", str(ckpt), "--backend", "onnxrt", "--batch", "x")
    assert_one_line_error(code, err, "not a positive integer")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_compile_trt_here(capsys, ckpt, tmp_path):
    code, _, err = run_cli(capsys, "compile", str(ckpt), "--backend", "trt", "--precision", "fp16",
                           "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "trt needs torch-tensorrt and a CUDA GPU")


def test_compile_twice_is_a_cache_hit(capsys, tmp_path, ckpt):
    args = ["compile", str(ckpt), "--backend", "onnxrt", "--batch", "8", "--device", "cpu", "--out", str(tmp_path / "a")]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and out.startswith("built")
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and out.startswith("cache hit")


def test_report_bad_input(capsys, tmp_path):
    f = tmp_path / "x.json"
    f.write_text("[]")
    code, _, err = run_cli(capsys, "report", str(f), "--out", str(tmp_path / "rep"))
    assert_one_line_error(code, err, "not a cifar-speed results file")
    assert not (tmp_path / "rep").exists()


def test_doctor(capsys):
    code, out, _ = run_cli(capsys, "doctor", "--json")
    assert code == 0
    facts = json.loads(out)
    rows = {(r["device"], r["backend"], r["precision"]): r for r in facts["matrix"]}
    assert len(rows) == 2 * len(backends.BACKENDS) * len(backends.PRECISIONS)
    assert rows[("cpu", "eager", "fp32")]["available"]
    assert not rows[("cpu", "eager", "fp16")]["available"] and rows[("cpu", "eager", "fp16")]["reason"]
    assert "versions" in facts["provenance"] and "features" in facts["provenance"]["cpu"]
    code, out, _ = run_cli(capsys, "doctor")
    assert code == 0 and "unavailable" in out and "machine:" in out


def test_doctor_peak_prints_every_precision(capsys, monkeypatch):
    from cifar_speed import sweep
    monkeypatch.setattr(sweep, "measure_peak", lambda device: {"fp32_gflops": 190.0, "bf16_gflops": 420.0,
                                                              "int8_gops": 890.0, "source": "stub"})
    code, out, _ = run_cli(capsys, "doctor", "--peak")
    assert code == 0 and "fp32 190 GFLOP/s" in out and "int8 890 GOP/s" in out
