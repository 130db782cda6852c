"""Backends: registry, availability reasons, logits against eager, batch profiles, artifacts and cache."""
from __future__ import annotations

import dataclasses
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from cifar_speed import artifacts, backends
from cifar_speed.backends import eager, onnxrt, trt
from cifar_speed.errors import CifarSpeedError, UnavailableError
from cifar_speed.models import create_model

from _infer_util import make_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("lightnn").eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# -- registry and parsing -----------------------------------------------------------------------

def test_unknown_backend_lists_valid_ones():
    with pytest.raises(CifarSpeedError, match="valid backends: eager, compile, onnxrt, trt"):
        backends.get_backend("tensorflow")


def test_unknown_precision_lists_valid_ones():
    with pytest.raises(CifarSpeedError, match="valid precisions: fp32, fp16, bf16"):
        backends.check_precision("fp8")


@pytest.mark.parametrize("text", ["0", "-1", "abc", "3.5", "", "32,,64", "1e3"])
def test_bad_batch_sizes(text):
    with pytest.raises(CifarSpeedError, match="not a positive integer"):
        backends.parse_batches(text)


def test_batch_parsing():
    assert backends.parse_batches("32, 64,128") == [32, 64, 128]


def test_every_backend_module_has_the_interface():
    for name in backends.BACKENDS:
        m = backends.get_backend(name)
        assert callable(m.availability) and callable(m.build)
        ok, reason = m.availability("fp32", "cpu")
        assert isinstance(ok, bool) and (ok or reason)


# -- batch profiles (TensorRT rejects opt == min) ------------------------------------------------

@pytest.mark.parametrize("batches,expected", [
    ([32, 64, 128], {"min": 1, "opt": 128, "max": 128}),
    ([128], {"min": 1, "opt": 128, "max": 128}),
    ([1], {"min": 1, "opt": 2, "max": 2}),
    ([64, 8], {"min": 1, "opt": 64, "max": 64}),
])
def test_batch_profile_covers_sweep_and_opt_differs_from_min(batches, expected):
    p = backends.batch_profile(batches)
    assert p == expected
    assert p["min"] < p["opt"] <= p["max"]
    assert all(p["min"] <= b <= p["max"] for b in batches)


def test_batch_profile_rejects_non_positive():
    with pytest.raises(CifarSpeedError):
        backends.batch_profile([0, 32])


# -- availability reasons -------------------------------------------------------------------------

def test_fp16_on_cpu_is_unavailable_with_reason():
    for name in ("eager", "compile", "onnxrt"):
        ok, reason = backends.availability(name, "fp16", "cpu")
        assert not ok and "fp16 needs CUDA" in reason


def test_build_refuses_unavailable_instead_of_falling_back(model):
    with pytest.raises(UnavailableError, match="fp16 needs CUDA"):
        backends.build("eager", model, {}, "fp16", "cpu", [8])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_trt_without_gpu_says_what_is_missing():
    ok, reason = backends.availability("trt", "fp32", "cpu")
    assert not ok and reason.startswith("trt needs") and "CUDA GPU" in reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_precisions_without_gpu():
    ok, reason = backends.availability("eager", "fp16", "cuda")
    assert not ok and "CUDA" in reason


def test_trt_version_mismatch_is_reported(monkeypatch):
    fake = types.ModuleType("torch_tensorrt")
    fake.__version__ = "2.9.0"
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok, reason = trt.availability("fp32", "cuda")
    assert not ok and "pairs with torch 2.9" in reason


def test_onnxrt_bf16_on_cpu_is_honest():
    ok, reason = onnxrt.availability("bf16", "cpu")
    # Either ORT really runs a bf16 Conv here, or the cell is unavailable and says why: ORT's own
    # limit, or (on a CPU without native bf16, such as an AVX2-only one) the machine's.
    assert ok or ("bf16" in reason and ("onnxruntime" in reason or "AVX512-BF16" in reason))


# -- Torch-TensorRT settings, checked against a stand-in module (no GPU needed) --------------------

def test_trt_input_spec_and_settings(monkeypatch, tmp_path):
    recorded = {}

    class Input:
        def __init__(self, **kw):
            recorded.update(kw)

    fake = types.ModuleType("torch_tensorrt")
    fake.Input = Input
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    trt.input_spec(backends.batch_profile([32, 64, 128]))
    assert recorded["min_shape"] == (1, 3, 32, 32)
    assert recorded["opt_shape"] == (128, 3, 32, 32) == recorded["max_shape"]
    assert recorded["dtype"] == torch.float32
    s = trt.compile_settings("fp16", tmp_path)
    assert s["enabled_precisions"] == {torch.float32, torch.float16}
    assert s["cache_built_engines"] and s["reuse_cached_engines"] and s["engine_cache_dir"] == str(tmp_path)
    assert trt.compile_settings("fp32", None)["enabled_precisions"] == {torch.float32}


# -- logits against eager ---------------------------------------------------------------------------

def test_eager_fp32_is_the_model(model, x):
    r = backends.build("eager", model, {}, "fp32", "cpu", [6])
    assert torch.equal(r(x), model(x).detach())
    assert r.info["memory_format"] == "nchw"


@pytest.mark.skipif(not backends.availability("eager", "bf16", "cpu")[0], reason="no fast bf16 CPU")
def test_eager_bf16_close_to_fp32(model, x):
    ref = model(x).detach()
    y = backends.build("eager", model, {}, "bf16", "cpu", [6])(x)
    assert y.dtype == torch.float32
    assert (y - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3


def test_eager_channels_last_matches(model, x):
    r = eager.build(model, {}, "fp32", "cpu", [6], memory_format="channels_last")
    torch.testing.assert_close(r(x), model(x).detach(), atol=1e-5, rtol=1e-4)


def test_onnxrt_fp32_matches_eager_with_dynamic_batch(model, x, tmp_path):
    r = backends.build("onnxrt", model, {}, "fp32", "cpu", [4], tmp_path)
    ref = model(x).detach()
    for n in (1, 3, 6):   # dynamic batch: sizes other than the export example
        torch.testing.assert_close(r(x[:n]), ref[:n], atol=1e-4, rtol=1e-4)
    assert r.info["provider"] == "CPUExecutionProvider"


def test_onnxrt_fold_bn_removes_every_batchnorm_and_keeps_the_logits(tmp_path):
    """--option onnxrt.fold_bn=on: the airbench layout's BatchNorms (also the ones behind a max-pool)
    go into the convs before export; the graph has none left and the logits are eager's."""
    import onnx
    from _infer_util import with_trained_batchnorm

    net = with_trained_batchnorm("frontier_s")
    x = torch.randn(3, 3, 32, 32)
    r = backends.build("onnxrt", net, {}, "fp32", "cpu", [3], tmp_path, fold_bn="on")
    assert r.info["fold_bn"] == 6
    (onnx_file,) = tmp_path.glob("*.onnx")
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(onnx_file)).graph.node}
    torch.testing.assert_close(r(x), net(x).detach(), atol=1e-4, rtol=1e-4)


def test_export_onnx_is_checked_and_dynamic(model, tmp_path):
    import onnx

    path = onnxrt.export_onnx(model, tmp_path / "m.onnx")
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    assert not list(tmp_path.glob("*.data")) and not list(tmp_path.glob("*.tmp"))


def test_torch_compile_fp32_matches_eager(model, x):
    r = backends.build("compile", model, {}, "fp32", "cpu", [6])
    torch.testing.assert_close(r(x), model(x).detach(), atol=1e-4, rtol=1e-4)


def test_compile_reduce_overhead_needs_cuda(model):
    with pytest.raises(UnavailableError, match="reduce-overhead needs CUDA"):
        backends.build("compile", model, {}, "fp32", "cpu", [6], mode="reduce-overhead")


# -- artifacts: cache hits, invalidation, corrupt / foreign files ------------------------------------

def test_cache_key_changes_with_every_input():
    base = dict(weights_sha256="a", model="lightnn", backend="onnxrt", precision="fp32",
                profile={"min": 1, "opt": 128, "max": 128}, device="cpu:x", options={},
                lib_versions={"torch": "2.14.1", "onnxruntime": "1.32.0"})
    k = artifacts.cache_key(**base)
    assert artifacts.cache_key(**base) == k
    changes = {"weights_sha256": "b", "model": "cnn", "backend": "compile", "precision": "bf16",
               "profile": {"min": 1, "opt": 64, "max": 64}, "device": "cuda:H100", "options": {"mode": "x"},
               "lib_versions": {"torch": "2.11.0", "onnxruntime": "1.32.0"}, "code_sha256": "c"}
    for field, value in changes.items():
        assert artifacts.cache_key(**{**base, field: value}) != k, field


def test_builder_code_digest_covers_backend_and_models(tmp_path, monkeypatch):
    """An edit to the backend's module or to a model definition changes the digest in the cache key,
    so an artifact built by the old code is rebuilt rather than served."""
    from cifar_speed.backends import onnxrt, openvino

    assert artifacts.builder_code_sha256(onnxrt) == artifacts.builder_code_sha256(onnxrt)
    assert artifacts.builder_code_sha256(onnxrt) != artifacts.builder_code_sha256(openvino)
    fake = tmp_path / "fake_backend.py"
    fake.write_text("x = 1\n")
    module = type("M", (), {"__file__": str(fake)})
    before = artifacts.builder_code_sha256(module)
    fake.write_text("x = 2\n")
    assert artifacts.builder_code_sha256(module) != before


def test_compile_cache_hit_and_invalidation(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path, "lightnn", seed=0)
    out = tmp_path / "art"
    first = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out)
    assert not first.cache_hit and first.artifact.is_file() and first.sidecar.is_file()
    side = artifacts.read_artifact_sidecar(first.artifact)
    assert side["checkpoint"]["weights_sha256"] and side["batch_profile"] == {"min": 1, "opt": 8, "max": 8}
    assert side["backend"] == "onnxrt" and side["precision"] == "fp32" and "versions" in side["provenance"]
    mtime = first.artifact.stat().st_mtime_ns

    second = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out)
    assert second.cache_hit and second.artifact.stat().st_mtime_ns == mtime

    # Other batch sizes: an ONNX file serves them all, so `compile` then `bench --batch ...` share it ...
    assert artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [16], out).cache_hit
    # ... while a backend whose artifact is shaped by the profile (a TensorRT engine) rebuilds.
    monkeypatch.setattr(backends.get_backend("onnxrt"), "PROFILE_SHAPES_ARTIFACT", True)
    third = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [16], out)   # profile changed
    assert not third.cache_hit and third.note == "rebuilt: inputs changed"

    make_checkpoint(tmp_path, "lightnn", seed=1)                                      # weights changed
    fourth = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [16], out)
    assert not fourth.cache_hit and fourth.key != third.key

    with open(fourth.artifact, "ab") as f:                                            # corrupted
        f.write(b"junk")
    with pytest.raises(CifarSpeedError, match="sha256"):
        artifacts.load_artifact(fourth.artifact)
    fifth = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [16], out)
    assert not fifth.cache_hit and "corrupt" in fifth.note
    runner, meta = artifacts.load_artifact(fifth.artifact)
    assert runner(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_artifact_option_variants_are_two_cache_entries_and_the_default_is_named_in_the_key(tmp_path, monkeypatch):
    """onnxrt's fold_bn: the default variant keeps the plain name (what `cifar-speed compile` without
    --option builds), the other one gets `+fold_bn=off`; both stay cached side by side. The key holds
    the option's value even at its default, so an entry built under another default is rebuilt."""
    ckpt = make_checkpoint(tmp_path, "lightnn", seed=0)
    out = tmp_path / "art"
    on = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out)
    off = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out, options={"fold_bn": "off"})
    assert on.artifact.name == "lightnn.onnxrt-fp32-cpu.onnx" and off.artifact.name == "lightnn.onnxrt-fp32-cpu+fold_bn=off.onnx"
    assert on.key != off.key and not off.cache_hit
    assert artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out, options={"fold_bn": "on"}).cache_hit
    assert artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out, options={"fold_bn": "off"}).cache_hit
    module = backends.get_backend("onnxrt")
    monkeypatch.setitem(module.OPTIONS, "fold_bn", dataclasses.replace(module.OPTIONS["fold_bn"], default="off"))
    moved = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [8], out)   # same name, other default
    assert moved.artifact == on.artifact and moved.key == off.key and not moved.cache_hit


def test_onnxrt_spin_is_a_run_time_option_of_the_same_cached_file(tmp_path):
    """--option onnxrt.spin=off: the session that runs the artifact lets its threads sleep after each
    call; the file (and its cache entry) is the one spin=on runs, and the logits are the same."""
    ckpt = make_checkpoint(tmp_path, "lightnn", seed=0)
    assert artifacts.run_options("onnxrt", None) == {"spin": "on"} and artifacts.run_options("openvino", {}) == {}
    x = torch.randn(4, 3, 32, 32)
    on = artifacts.runner_for(ckpt, "onnxrt", "fp32", "cpu", [4], cache_dir=tmp_path / "c")
    off = artifacts.runner_for(ckpt, "onnxrt", "fp32", "cpu", [4], options={"spin": "off"}, cache_dir=tmp_path / "c")
    assert off.info["cache_hit"] and off.info["artifact"] == on.info["artifact"]
    assert (on.info["spin"], off.info["spin"]) == ("on", "off") and off.info["run_options"] == {"spin": "off"}
    assert torch.equal(on(x), off(x))
    from cifar_speed.checkpoint import load_checkpoint

    assert backends.build("onnxrt", *load_checkpoint(ckpt), "fp32", "cpu", [4], spin="off").info["spin"] == "off"


def test_loaded_artifact_matches_eager(tmp_path):
    from cifar_speed.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "onnxrt", "fp32", "cpu", [4], tmp_path / "a")
    runner, _ = artifacts.load_artifact(res.sidecar)       # the sidecar path works too
    model, _ = load_checkpoint(ckpt)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(runner(x), model(x).detach(), atol=1e-4, rtol=1e-4)


def test_foreign_artifact_is_refused(tmp_path):
    foreign = tmp_path / "model.onnx"
    foreign.write_bytes(b"not onnx")
    with pytest.raises(CifarSpeedError, match="foreign"):
        artifacts.load_artifact(foreign)
    (tmp_path / "model.onnx.json").write_text('{"format": "something-else"}')
    with pytest.raises(CifarSpeedError, match="foreign"):
        artifacts.load_artifact(foreign)


@pytest.mark.slow
def test_aoti_package_roundtrip_with_dynamic_batch(tmp_path):
    from cifar_speed.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "compile", "fp32", "cpu", [8], tmp_path / "a")
    assert res.artifact.suffix == ".pt2" and not list((tmp_path / "a").glob(".*"))
    runner, meta = artifacts.load_artifact(res.artifact)
    assert meta["artifact_format"] == "aoti-pt2"
    model, _ = load_checkpoint(ckpt)
    for n in (3, 8):
        x = torch.randn(n, 3, 32, 32)
        torch.testing.assert_close(runner(x), model(x).detach(), atol=1e-4, rtol=1e-4)


def test_eager_has_no_artifact(tmp_path):
    ckpt = make_checkpoint(tmp_path)
    with pytest.raises(CifarSpeedError, match="no saved artifact"):
        artifacts.compile_checkpoint(ckpt, "eager", "fp32", "cpu", [8], tmp_path)


def test_build_leaves_the_callers_module_as_it_was(x):
    """Backends move, cast, re-layout and switch to eval the module they run; the caller's must not change."""
    torch.manual_seed(0)
    mine = create_model("lightnn").train()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    r = backends.build("eager", mine, {}, "fp32", "cpu", [6], memory_format="channels_last")
    assert mine.training and all(p.is_contiguous() for p in mine.parameters())
    after = mine.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert torch.allclose(r(x), mine.eval()(x), atol=1e-5)


# -- GPU paths (skipped without CUDA) ---------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_eager_cuda_matches_cpu(model, x, precision):
    ref = model(x).detach()
    r = backends.build("eager", model, {}, precision, "cuda", [6])
    y = r(x.cuda()).cpu()
    tol = 1e-3 if precision == "fp32" else 0.05 * ref.abs().max().item() + 1e-3
    assert (y - ref).abs().max() <= tol


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_compile_cuda_matches_eager(model, x, mode, precision):
    """torch.compile on CUDA, with and without CUDA graphs, computes what eager computes at that precision;
    with CUDA graphs each call's output survives the next replay (it is cloned)."""
    eager = backends.build("eager", model, {}, precision, "cuda", [6])
    r = backends.build("compile", model, {}, precision, "cuda", [6], mode=mode)
    assert r.info["mode"] == mode
    xc = x.cuda()
    first = r(xc)
    second = r(torch.flip(xc, dims=[0]))
    ref = eager(xc)
    tol = 1e-3 if precision == "fp32" else 0.05 * ref.abs().max().item() + 1e-3
    assert first.dtype == torch.float32 and (first - ref).abs().max() <= tol
    assert (second - eager(torch.flip(xc, dims=[0]))).abs().max() <= tol


_AOTI_CUDA_CHILD = """
import sys, torch
from pathlib import Path
from cifar_speed import artifacts, backends
from cifar_speed.checkpoint import load_checkpoint
ckpt, out, precision = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
res = artifacts.compile_checkpoint(ckpt, "compile", precision, "cuda", [4, 8], out)
runner, meta = artifacts.load_artifact(res.artifact)
assert meta["device"] == "cuda" and meta["artifact_format"] == "aoti-pt2", meta
model, _ = load_checkpoint(ckpt)
eager = backends.build("eager", model, {}, precision, "cuda", [8])
for n in (4, 8):
    x = torch.randn(n, 3, 32, 32, device="cuda")
    ref, y = eager(x), runner(x)
    tol = 1e-3 if precision == "fp32" else 0.05 * ref.abs().max().item() + 1e-3
    assert y.dtype == torch.float32 and (y - ref).abs().max() <= tol, (n, (y - ref).abs().max())
again = artifacts.compile_checkpoint(ckpt, "compile", precision, "cuda", [4, 8], out)
assert again.cache_hit and again.artifact_sha256 == res.artifact_sha256
"""


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_aoti_package_on_cuda_builds_loads_and_hits_the_cache(tmp_path, precision):
    """`cifar-speed compile --backend compile --device cuda` writes a CUDA AOTInductor package that loads
    back, computes what eager computes at that precision at any batch in its profile, and is a cache
    hit the second time. In a child process: loading the package crashed the interpreter (SIGSEGV in
    torch's package loader) on the lent H200's torch 2.11 (results/nvidia-h200/RUNS.md), and a crash
    must fail this test, not end the whole run."""
    import subprocess

    ckpt = make_checkpoint(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _AOTI_CUDA_CHILD, str(ckpt), str(tmp_path / "a"),
                            precision], capture_output=True, text=True, env=env, timeout=600)
    tail = "\n".join((child.stdout + child.stderr).splitlines()[-25:])
    assert child.returncode == 0, f"child exited {child.returncode}:\n{tail}"


@pytest.mark.gpu
def test_onnxrt_cuda_io_binding(model, x, tmp_path):
    ok, reason = backends.availability("onnxrt", "fp32", "cuda")
    if not ok:
        pytest.skip(reason)
    r = backends.build("onnxrt", model, {}, "fp32", "cuda", [6], tmp_path)
    assert r.info.get("io_binding")
    torch.testing.assert_close(r(x.cuda()).cpu(), model(x).detach(), atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
def test_trt_build_save_load(tmp_path):
    ok, reason = backends.availability("trt", "fp16", "cuda")
    if not ok:
        pytest.skip(reason)
    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "trt", "fp16", "cuda", [8, 16], tmp_path / "a")
    runner, _ = artifacts.load_artifact(res.artifact)
    assert runner(torch.randn(16, 3, 32, 32, device="cuda")).shape == (16, 10)
    assert artifacts.compile_checkpoint(ckpt, "trt", "fp16", "cuda", [8, 16], tmp_path / "a").cache_hit
