"""int8: calibration from training images only, quantized artifacts, cache keys, availability, CLI."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from torch import nn

from cifar_speed import artifacts, backends, calibration, harness, sweep
from cifar_speed import data as D
from cifar_speed.backends import onnxrt, torch_compile, trt
from cifar_speed.checkpoint import load_checkpoint
from cifar_speed.cli import main
from cifar_speed.data import CIFAR_MEAN, CIFAR_STD, Split, normalize
from cifar_speed.errors import CifarSpeedError

from _infer_util import fake_split, make_checkpoint

META = {"normalize": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}}
INT8_CPU = backends.precision_on_device("int8", "cpu")[0]
needs_int8_cpu = pytest.mark.skipif(not INT8_CPU, reason="int8 needs AVX2, AVX512-VNNI or AMX on this CPU")


def train_split(n: int = 300) -> Split:
    """A stand-in training split whose images differ from fake_split's (the stand-in test split)."""
    return fake_split(n, seed=123)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


# -- calibration ----------------------------------------------------------------------------------

def test_calibration_reads_the_training_split_only(tmp_path, monkeypatch):
    loaded = []
    train = train_split()

    def spy(split, data_dir=None, verify=True):
        loaded.append(split)
        if split != "train":
            raise AssertionError(f"calibration loaded the {split} split")
        return train

    monkeypatch.setattr(calibration, "load_split", spy)
    calib = calibration.calibration_sample(META, 64, 0)
    assert loaded == ["train"]
    assert calib.size == 64 and calib.indices.max() < len(train) and len(set(calib.indices.tolist())) == 64
    torch.testing.assert_close(calib.images, normalize(train.images[calib.indices], CIFAR_MEAN, CIFAR_STD))
    d = calib.describe()
    assert d["split"] == "train" and d["size"] == 64 and d["seed"] == 0 and len(d["indices_sha256"]) == 64


def test_compile_int8_never_loads_test_images(tmp_path, fake_data, monkeypatch):
    """End to end through `compile`: every split the loader is asked for is recorded."""
    loaded = []
    real = D._load

    def spy(folder, split, check):
        loaded.append(split)
        return real(folder, split, check)

    spy.cache_clear = real.cache_clear      # the fake_data fixture clears the loader's cache on teardown
    monkeypatch.setattr(D, "_load", spy)
    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "onnxrt", "int8", "cpu", [8], tmp_path / "a",
                                       calibration_size=32, data_dir=fake_data)
    assert loaded and set(loaded) == {"train"}
    side = artifacts.read_artifact_sidecar(res.artifact)
    assert side["calibration"]["split"] == "train" and side["calibration"]["size"] == 32


def test_calibration_is_deterministic_and_seeded():
    train = train_split()
    a = calibration.calibration_sample(META, 32, 0, train=train)
    b = calibration.calibration_sample(META, 32, 0, train=train)
    c = calibration.calibration_sample(META, 32, 1, train=train)
    assert torch.equal(a.indices, b.indices) and a.describe() == b.describe()
    assert a.describe()["indices_sha256"] != c.describe()["indices_sha256"]
    assert sum(x.shape[0] for x in a.batches(10)) == 32


@pytest.mark.parametrize("size,seed,message", [
    (0, 0, "positive"), (-3, 0, "positive"), ("abc", 0, "must be an integer"), (8, -1, "non-negative"),
    (8, "1.5", "must be an integer"), (10_000, 0, "exceeds the 300 training images"),
])
def test_calibration_bad_parameters(size, seed, message):
    with pytest.raises(CifarSpeedError, match=message):
        calibration.calibration_sample(META, size, seed, train=train_split())


def test_calibration_needs_normalisation():
    with pytest.raises(CifarSpeedError, match="normalisation"):
        calibration.calibration_sample({}, 8, 0, train=train_split())


# -- availability -----------------------------------------------------------------------------------

def test_int8_is_a_precision():
    assert "int8" in backends.PRECISIONS


def test_eager_int8_is_unavailable_with_reason():
    ok, reason = backends.availability("eager", "int8", "cpu")
    assert not ok and "int8" in reason and "onnxrt" in reason


def test_int8_needs_vnni_or_amx_on_cpu(monkeypatch):
    monkeypatch.setattr(backends, "cpu_has_fast_int8", lambda: False)
    for name in ("compile", "onnxrt"):
        ok, reason = backends.availability(name, "int8", "cpu")
        assert not ok and "VNNI" in reason


def test_compile_int8_without_pt2e_says_so(monkeypatch):
    monkeypatch.setattr(torch_compile, "_pt2e_source", lambda: None)
    ok, reason = backends.availability("compile", "int8", "cpu")
    assert not ok and "torchao" in reason and "quantize_pt2e" in reason


def test_compile_int8_on_cuda_is_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    ok, reason = torch_compile.availability("int8", "cuda")
    assert not ok and "CPU flow" in reason


def test_onnxrt_int8_on_cuda_needs_the_tensorrt_provider(monkeypatch):
    import onnxruntime as ort
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ok, reason = onnxrt.availability("int8", "cuda")
    assert not ok and "TensorRT execution provider" in reason
    assert onnxrt.availability("fp32", "cuda")[0]


def test_old_gpu_has_no_int8(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (6, 1))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla P4")
    ok, reason = backends.precision_on_device("int8", "cuda")
    assert not ok and "7.5" in reason


def _fake_trt(monkeypatch):
    fake = types.ModuleType("torch_tensorrt")
    fake.__version__ = torch.__version__
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    return fake


def test_trt_int8_without_modelopt_says_so(monkeypatch):
    _fake_trt(monkeypatch)
    monkeypatch.setattr(trt, "_has_modelopt", lambda: False)
    ok, reason = trt.availability("int8", "cuda")
    assert not ok and "nvidia-modelopt" in reason
    monkeypatch.setattr(trt, "_has_modelopt", lambda: True)
    assert trt.availability("int8", "cuda") == (True, "")


def test_trt_int8_settings_and_modelopt_calibration(monkeypatch):
    """The documented ModelOpt flow, checked against a stand-in (no GPU / modelopt here)."""
    seen = {}
    mtq = types.ModuleType("modelopt.torch.quantization")
    mtq.INT8_DEFAULT_CFG = {"name": "int8-default"}

    def quantize(model, cfg, forward_loop):
        seen["cfg"] = cfg
        batches = []
        orig = model.forward
        model.forward = lambda x: (batches.append(x), orig(x))[1]
        forward_loop(model)
        seen["batches"] = batches
        return model

    mtq.quantize = quantize
    for name in ("modelopt", "modelopt.torch"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", mtq)
    torch.manual_seed(0)
    from cifar_speed.models import create_model
    model = create_model("lightnn").eval()
    calib = calibration.calibration_sample(META, 100, 0, train=train_split())
    q = trt.quantize_modelopt(model, calib, device="cpu")
    assert seen["cfg"] is mtq.INT8_DEFAULT_CFG and q is not model
    torch.testing.assert_close(torch.cat(seen["batches"]), calib.images)
    assert trt.compile_settings("int8", None)["enabled_precisions"] == {torch.float32, torch.int8}


# -- ONNX Runtime int8 (QDQ) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ort_int8(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    ckpt = make_checkpoint(tmp)
    res = artifacts.compile_checkpoint(ckpt, "onnxrt", "int8", "cpu", [16], tmp / "art",
                                       calibration_size=64, train_split=train_split())
    return ckpt, res, tmp


@needs_int8_cpu
def test_onnxrt_int8_is_quantized_and_documented(ort_int8):
    import onnx

    _, res, _ = ort_int8
    ops = {n.op_type for n in onnx.load(str(res.artifact)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    side = artifacts.read_artifact_sidecar(res.artifact)
    q = side["quantization"]
    assert q["quant_format"] == "QDQ" and q["per_channel"] and (q["activation_type"], q["weight_type"]) == ("QUInt8", "QInt8")
    assert side["calibration"] == q["calibration"]
    assert side["calibration"]["size"] == 64 and side["calibration"]["seed"] == 0
    assert side["calibration"]["split"] == "train"


@needs_int8_cpu
def test_onnxrt_int8_roundtrip_and_close_to_fp32(ort_int8):
    ckpt, res, _ = ort_int8
    model, meta = load_checkpoint(ckpt)
    runner, side = artifacts.load_artifact(res.artifact)
    assert runner.precision == "int8"
    x = normalize(fake_split(64).images, CIFAR_MEAN, CIFAR_STD)
    y = runner(x)
    # Built again in memory from the same calibration: the same program, the same logits.
    calib = calibration.calibration_sample(meta, 64, 0, train=train_split())
    fresh = backends.build("onnxrt", model, meta, "int8", "cpu", [16], calibration=calib)
    torch.testing.assert_close(fresh(x), y)
    ref = model(x).detach()
    assert (y - ref).abs().max() <= 0.1 * ref.abs().max() + 1e-3
    assert agreement(y, ref) >= 0.8


@needs_int8_cpu
def test_int8_cache_key_follows_calibration(ort_int8):
    ckpt, first, tmp = ort_int8
    kw = dict(train_split=train_split())
    again = artifacts.compile_checkpoint(ckpt, "onnxrt", "int8", "cpu", [16], tmp / "art", calibration_size=64, **kw)
    assert again.cache_hit and again.key == first.key
    k = dict(weights_sha256="a", model="lightnn", backend="onnxrt", precision="int8", profile={"min": 1},
             device="cpu:x", lib_versions={})
    calib = {s: calibration.calibration_sample(META, s[0], s[1], train=train_split()).describe()
             for s in ((64, 0), (32, 0), (64, 1))}
    keys = {s: artifacts.cache_key(**k, options={"calibration": d}) for s, d in calib.items()}
    assert len(set(keys.values())) == 3
    bigger = artifacts.compile_checkpoint(ckpt, "onnxrt", "int8", "cpu", [16], tmp / "art", calibration_size=32, **kw)
    assert not bigger.cache_hit and bigger.note == "rebuilt: inputs changed"
    assert artifacts.read_artifact_sidecar(bigger.artifact)["calibration"]["size"] == 32


# -- torch.compile int8 (PT2E) -------------------------------------------------------------------------

needs_pt2e = pytest.mark.skipif(not backends.availability("compile", "int8", "cpu")[0],
                                reason=backends.availability("compile", "int8", "cpu")[1])


@needs_pt2e
def test_compile_int8_pt2e_close_to_fp32(tmp_path):
    from cifar_speed.models import create_model
    torch.manual_seed(0)
    model = create_model("lightnn").eval()
    calib = calibration.calibration_sample(META, 64, 0, train=train_split())
    r = backends.build("compile", model, META, "int8", "cpu", [16], calibration=calib)
    x = normalize(fake_split(32).images, CIFAR_MEAN, CIFAR_STD)
    ref = model(x).detach()
    y = r(x[:16])
    assert r.info["quantization"]["flow"] == "pt2e"
    assert (y - ref[:16]).abs().max() <= 0.1 * ref.abs().max() + 1e-3


def test_plain_layers_keeps_the_function_with_torch_classes():
    """fast's subclassed Conv / BatchNorm become nn.Conv2d / nn.BatchNorm2d with the same weights,
    settings (eps 1e-12, padding) and output; the original model is left as it was."""
    from cifar_speed.models import create_model
    from cifar_speed.models.fast import BatchNorm, Conv

    torch.manual_seed(0)
    model = create_model("frontier_s").eval()
    plain = torch_compile.plain_layers(model)
    kinds = {type(m) for m in plain.modules()}
    assert Conv not in kinds and BatchNorm not in kinds and nn.Conv2d in kinds and nn.BatchNorm2d in kinds
    assert any(isinstance(m, Conv) for m in model.modules())
    assert [m.eps for m in plain.modules() if isinstance(m, nn.BatchNorm2d)][0] == 1e-12
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(plain(x), model(x))


@needs_pt2e
def test_pt2e_quantizes_every_conv_of_the_airbench_layout():
    """Every convolution and the head of the fast / frontier layout get int8 weights (a per-channel
    dequantize feeding them): with the subclassed layers, or padding="same", the quantizer skipped
    all six 3x3 convs."""
    from cifar_speed.models import create_model

    torch.manual_seed(0)
    model = create_model("frontier_s").eval()
    calib = calibration.calibration_sample(META, 16, 0, train=train_split())
    gm = torch_compile.quantize_pt2e(model, calib)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    layers = [n for n in nodes if n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    assert len(layers) == 8   # the whitening conv, six 3x3 convs, the head
    for n in layers:
        assert "dequantize_per_channel" in str(n.args[1].target), n


@needs_pt2e
@pytest.mark.slow
def test_compile_int8_aoti_roundtrip(tmp_path):
    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "compile", "int8", "cpu", [8], tmp_path / "a",
                                       calibration_size=32, train_split=train_split())
    runner, side = artifacts.load_artifact(res.artifact)
    assert side["calibration"]["size"] == 32 and side["quantization"]["flow"] == "pt2e"
    model, _ = load_checkpoint(ckpt)
    x = normalize(fake_split(8).images, CIFAR_MEAN, CIFAR_STD)
    ref = model(x).detach()
    assert (runner(x) - ref).abs().max() <= 0.1 * ref.abs().max() + 1e-3


# -- sweep and CLI --------------------------------------------------------------------------------------

@needs_int8_cpu
def test_sweep_reports_int8_cells(tmp_path):
    cfg = sweep.SweepConfig(checkpoints=[make_checkpoint(tmp_path)], backends=["onnxrt"], precisions=["int8"],
                            batches=[16], device="cpu", settings=harness.QUICK, peak_gflops=1000.0,
                            test_split=fake_split(40), train_split=train_split(), calib_size=48, calib_seed=3)
    res = sweep.run_sweep(cfg, progress=False)
    by = {(c["backend"], c["precision"]): c for c in res["cells"]}
    cell = by[("onnxrt", "int8")]
    assert cell["status"] == "ok" and cell["requested"] and cell["images_per_s"] > 0
    assert cell["accuracy"]["images"] == 40 and "agreement" in cell["accuracy"]
    assert cell["speedup_vs_eager_fp32"] > 0
    want = calibration.calibration_sample(META, 48, 3, train=train_split()).describe()
    assert cell["runner"]["quantization"]["calibration"] == want
    assert res["harness"]["calibration"] == {"size": 48, "seed": 3, "split": "train"}


def _one_line(capsys, argv, *needles):
    code = main(argv)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cifar-speed: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("extra,needle", [
    (["--calib-size", "0"], "calibration size must be a positive"),
    (["--calib-size", "many"], "calibration size must be an integer"),
    (["--calib-seed", "-2"], "calibration seed must be a non-negative"),
])
def test_cli_bad_calibration_is_one_line(capsys, tmp_path, extra, needle):
    ckpt = make_checkpoint(tmp_path)
    out = tmp_path / "a"
    _one_line(capsys, ["compile", str(ckpt), "--backend", "onnxrt", "--precision", "int8", "--device", "cpu",
                       "--out", str(out), *extra], needle)
    _one_line(capsys, ["bench", str(ckpt), "--precision", "int8", "--no-progress", "--out", str(out / "r.json"),
                       *extra], needle)
    assert not out.exists()


def test_cli_eager_int8_is_one_line(capsys, tmp_path):
    ckpt = make_checkpoint(tmp_path)
    _one_line(capsys, ["bench", str(ckpt), "--backend", "eager", "--precision", "int8", "--device", "cpu",
                       "--no-progress", "--out", str(tmp_path / "r.json")], "eager has no int8")
    assert not (tmp_path / "r.json").exists()


def test_doctor_lists_int8(capsys):
    assert main(["doctor", "--json"]) == 0
    rows = {(r["device"], r["backend"], r["precision"]): r for r in json.loads(capsys.readouterr().out)["matrix"]}
    assert not rows[("cpu", "eager", "int8")]["available"] and rows[("cpu", "eager", "int8")]["reason"]


# -- GPU (skipped without CUDA) --------------------------------------------------------------------------

@pytest.mark.gpu
def test_trt_int8_build_save_load(tmp_path):
    ok, reason = backends.availability("trt", "int8", "cuda")
    if not ok:
        pytest.skip(reason)
    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "trt", "int8", "cuda", [8, 16], tmp_path / "a",
                                       calibration_size=64, train_split=train_split())
    runner, side = artifacts.load_artifact(res.artifact)
    assert side["calibration"]["size"] == 64
    model, _ = load_checkpoint(ckpt)
    x = normalize(fake_split(16).images, CIFAR_MEAN, CIFAR_STD)
    y = runner(x.cuda()).cpu()
    assert agreement(y, model(x).detach()) >= 0.8


def test_sweep_without_training_images(tmp_path):
    """A default sweep skips int8 with the reason; int8 asked for by name is a one-line error."""
    base = dict(checkpoints=[make_checkpoint(tmp_path)], backends=["onnxrt"], batches=[8], device="cpu",
                settings=harness.QUICK, peak_gflops=1000.0, test_split=fake_split(16), data_dir=str(tmp_path / "none"))
    res = sweep.run_sweep(sweep.SweepConfig(precisions=None, **base), progress=False)
    skipped = {s["precision"]: s["reason"] for s in res["skipped"]}
    assert "int8" in skipped and "training images" in skipped["int8"]
    assert not any(c["precision"] == "int8" for c in res["cells"])
    with pytest.raises(CifarSpeedError, match="CIFAR-10 not found"):
        sweep.run_sweep(sweep.SweepConfig(precisions=["int8"], **base), progress=False)
