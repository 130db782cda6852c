"""OpenVINO backend: availability reasons, IR round trip, NNCF int8, in-flight requests, Triton layout."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("openvino", reason="needs the openvino package (pip install 'cifar-speed[openvino]')")

from cifar_speed import artifacts, backends, calibration  # noqa: E402
from cifar_speed.backends import openvino as ovb  # noqa: E402
from cifar_speed.checkpoint import load_checkpoint  # noqa: E402
from cifar_speed.errors import CifarSpeedError  # noqa: E402

from _infer_util import fake_split, make_checkpoint  # noqa: E402

INT8_CPU = backends.availability("openvino", "int8", "cpu")[0]


# -- registry and availability ----------------------------------------------------------------------

def test_openvino_is_a_registered_backend_and_eager_stays_first():
    assert "openvino" in backends.BACKENDS and list(backends.BACKENDS)[0] == "eager"
    assert backends.get_backend("openvino") is ovb


def test_a_backend_name_cannot_be_registered_twice():
    def availability(precision, device):
        return True, ""
    availability.__module__ = "somewhere.else"
    with pytest.raises(RuntimeError, match="registered twice"):
        backends.register_backend("onnxrt")(availability)
    assert backends.BACKENDS["onnxrt"] == "onnxrt"


@pytest.mark.parametrize("caps,ok", [(["FP32", "INT8", "BIN"], False), (["FP32", "BF16", "INT8"], True)])
def test_bf16_follows_the_cpu_plugins_native_bf16(monkeypatch, caps, ok):
    monkeypatch.setattr(ovb, "cpu_capabilities", lambda: caps)
    got, reason = ovb.availability("bf16", "cpu")
    assert got is ok
    if not ok:
        assert "native bf16" in reason and "FP32, INT8, BIN" in reason


@pytest.mark.parametrize("devices,ok", [(["CPU"], False), (["CPU", "GPU.0"], True)])
def test_fp16_needs_an_intel_gpu_device(monkeypatch, devices, ok):
    monkeypatch.setattr(ovb, "devices", lambda: devices)
    got, reason = ovb.availability("fp16", "cpu")
    assert got is ok
    if not ok:
        assert "Intel GPU" in reason and "CPU" in reason
    else:
        assert ovb.compile_config("fp16", "LATENCY") == ("GPU.0", {"PERFORMANCE_HINT": "LATENCY",
                                                                   "INFERENCE_PRECISION_HINT": "f16"})


def test_cuda_and_missing_packages_are_unavailable_with_reasons(monkeypatch):
    ok, reason = ovb.availability("fp32", "cuda")
    assert not ok and "NVIDIA" in reason
    monkeypatch.setattr(ovb.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(ovb, "precision_on_device", lambda p, d: (True, ""))
    ok, reason = ovb.availability("int8", "cpu")
    assert not ok and "nncf" in reason.lower()
    monkeypatch.setattr(ovb, "_ov", lambda: None)
    ok, reason = ovb.availability("fp32", "cpu")
    assert not ok and "openvino package" in reason


def test_int8_without_int8_kernels_says_so(monkeypatch):
    monkeypatch.setattr(ovb, "precision_on_device", lambda p, d: (False, "int8 on CPU needs AVX2 (none here)"))
    assert ovb.availability("int8", "cpu") == (False, "int8 on CPU needs AVX2 (none here)")


def test_fp32_is_pinned_to_f32_and_int8_rest_follows_native_bf16(monkeypatch):
    _, cfg = ovb.compile_config("fp32", "THROUGHPUT")
    assert cfg["INFERENCE_PRECISION_HINT"] == "f32" and cfg["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert cfg["INFERENCE_NUM_THREADS"] == torch.get_num_threads()
    monkeypatch.setattr(ovb, "cpu_capabilities", lambda: ["FP32", "INT8"])
    assert ovb.compile_config("int8", "LATENCY")[1]["INFERENCE_PRECISION_HINT"] == "f32"
    monkeypatch.setattr(ovb, "cpu_capabilities", lambda: ["FP32", "BF16", "INT8"])
    assert ovb.compile_config("int8", "LATENCY")[1]["INFERENCE_PRECISION_HINT"] == "bf16"


# -- fp32: build, artifact round trip ------------------------------------------------------------------
# One checkpoint, one runner and one compiled artifact per module (each conversion is an ONNX export);
# tests that damage an artifact work on a copy.

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ov-ckpt"))


@pytest.fixture(scope="module")
def fp32_runner(ckpt):
    model, meta = load_checkpoint(ckpt)
    return model, backends.build("openvino", model, meta, "fp32", "cpu", [1, 7])


def test_fp32_runner_matches_eager_and_records_what_the_plugin_chose(fp32_runner):
    model, runner = fp32_runner
    g = torch.Generator().manual_seed(0)
    for n in (1, 7):
        x = torch.randn(n, 3, 32, 32, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)
    sync = runner.info["sync"]
    assert sync["hint"] == "LATENCY" and sync["inference_precision"] == "f32" and sync["ov_device"] == "CPU"
    assert sync["streams"] == 1 and sync["threads"] == torch.get_num_threads()
    assert runner.info["openvino"] == ovb.version()


def test_inflight_runs_every_call_with_the_throughput_hint(fp32_runner):
    _, runner = fp32_runner
    xs = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    latencies, how = runner.inflight(xs, 7)
    assert len(latencies) == 7 and all(t > 0 for t in latencies)
    assert how["hint"] == "THROUGHPUT" and how["requests_in_flight"] >= 1 and how["streams"] >= 1
    # The queue is kept between calls (built outside the timed groups); each call reports only its own requests.
    latencies, again = runner.inflight(xs, 5)
    assert len(latencies) == 5 and again["requests_in_flight"] == how["requests_in_flight"]


def test_fold_bn_leaves_no_batchnorm_arithmetic_behind_the_max_pools():
    """openvino.fold_bn=on (off by default, see the backend's OPTIONS): the airbench layout's BatchNorms,
    also the three behind a max-pool that the plugin would keep as Multiply + Add nodes, go into the
    convs; on these random weights the logits stay eager's (on trained fast they do not in f32)."""
    from _infer_util import with_trained_batchnorm

    net = with_trained_batchnorm("frontier_m_s2")
    x = torch.randn(3, 3, 32, 32)
    ops = {}
    for fold in ("off", "on"):
        ov_model, facts = ovb.ov_model_for(net, {}, "fp32", 8, {"fold_bn": fold})
        ops[fold] = [op.get_type_name() for op in ov_model.get_ordered_ops()]
        runner = ovb.runner_for(ov_model, "fp32", "cpu", facts, probe_batch=3)
        # 1e-3, not 1e-4: the plugin's GELU kernel differs from torch's erf in the 4th decimal, fold or not
        torch.testing.assert_close(runner(x), net(x).detach(), atol=1e-3, rtol=1e-3)
    assert facts["fold_bn"] == 6
    assert ops["on"].count("Multiply") < ops["off"].count("Multiply")
    assert "BatchNormInference" not in ops["on"]


@pytest.fixture(scope="module")
def _compiled_once(ckpt, tmp_path_factory):
    return artifacts.compile_checkpoint(ckpt, "openvino", "fp32", "cpu", [8], tmp_path_factory.mktemp("ov-art"))


@pytest.fixture
def compiled(ckpt, _compiled_once, tmp_path):
    """(checkpoint, a CompileResult whose files are this test's own copies)."""
    import dataclasses
    import shutil

    for f in _compiled_once.artifact.parent.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    art = tmp_path / _compiled_once.artifact.name
    return ckpt, dataclasses.replace(_compiled_once, artifact=art, sidecar=artifacts.sidecar_path(art))


def test_compile_writes_ir_xml_and_bin_with_hashes(compiled):
    _, res = compiled
    assert res.artifact.suffix == ".xml" and res.artifact.with_suffix(".bin").is_file()
    side = artifacts.read_artifact_sidecar(res.artifact)
    assert side["artifact_format"] == "openvino-ir" and side["weights_precision"] == "fp32"
    assert list(side["companions"]) == [res.artifact.with_suffix(".bin").name]
    assert ovb.version().startswith(side["provenance"]["versions"]["openvino"])


def test_saved_ir_loads_and_matches_eager(compiled):
    ckpt, res = compiled
    model, _ = load_checkpoint(ckpt)
    runner, side = artifacts.load_artifact(res.artifact)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)
    assert runner.backend == "openvino" and runner.info["artifact"] == str(res.artifact)


def test_second_compile_is_a_cache_hit_and_a_changed_bin_rebuilds(compiled):
    ckpt, res = compiled
    again = artifacts.compile_checkpoint(ckpt, "openvino", "fp32", "cpu", [8], res.artifact.parent)
    assert again.cache_hit
    weights = res.artifact.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CifarSpeedError, match="does not match its sidecar"):
        artifacts.load_artifact(res.artifact)
    rebuilt = artifacts.compile_checkpoint(ckpt, "openvino", "fp32", "cpu", [8], res.artifact.parent)
    assert not rebuilt.cache_hit
    artifacts.load_artifact(rebuilt.artifact)


def test_missing_bin_is_refused(compiled):
    _, res = compiled
    res.artifact.with_suffix(".bin").unlink()
    with pytest.raises(CifarSpeedError, match="missing or does not match"):
        artifacts.load_artifact(res.artifact)


# -- int8 (NNCF) ---------------------------------------------------------------------------------------

def _trained_lightnn(train, steps: int = 40):
    """lightnn fitted briefly to fake images whose class sets their colour: a model with a real
    top-1 to lose, so an int8 drop would show."""
    from cifar_speed.data import CIFAR_MEAN, CIFAR_STD, normalize
    from cifar_speed.models import create_model

    torch.manual_seed(0)
    model = create_model("lightnn")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = normalize(train.images, CIFAR_MEAN, CIFAR_STD)
    for i in range(steps):
        idx = torch.arange(i * 32, i * 32 + 32) % len(x)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _coloured_split(n: int, seed: int):
    from cifar_speed.data import Split

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    base = (labels * 25).view(n, 1, 1, 1)
    images = (base + torch.randint(0, 40, (n, 3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
    return Split(images, labels)


@pytest.mark.skipif(not INT8_CPU, reason="openvino int8 unavailable here")
def test_int8_top1_close_to_fp32_and_records_its_settings():
    from cifar_speed.data import CIFAR_MEAN, CIFAR_STD, normalize

    train, test = _coloured_split(640, 1), _coloured_split(500, 2)
    model = _trained_lightnn(train)
    meta = {"normalize": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}}
    calib = calibration.calibration_sample(meta, 128, 0, train=train)
    runner = backends.build("openvino", model, meta, "int8", "cpu", [100], calibration=calib)
    x = normalize(test.images, CIFAR_MEAN, CIFAR_STD)
    with torch.no_grad():
        ref = model(x)
    y = torch.cat([runner(x[i:i + 100]) for i in range(0, 500, 100)])
    top1 = lambda logits: (logits.argmax(1) == test.labels).float().mean().item()  # noqa: E731
    assert top1(ref) >= 0.5, "the fixture model should have learned the colours"
    assert abs(top1(y) - top1(ref)) <= 0.03 and (y.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.9
    q = runner.info["quantization"]
    assert q["calibration"] == calib.describe() and q["target_device"] == "CPU"
    assert runner.info["int8_isa"] == q["int8_isa"] and q["overflow_fix"] in ("enable", "first_layer_only")


@pytest.mark.skipif(not INT8_CPU, reason="openvino int8 unavailable here")
def test_int8_ir_is_quantized(tmp_path, capfd):
    ckpt = make_checkpoint(tmp_path)
    res = artifacts.compile_checkpoint(ckpt, "openvino", "int8", "cpu", [8], tmp_path / "art",
                                       calibration_size=32, train_split=fake_split(64, seed=5))
    assert "Statistics collection" not in capfd.readouterr().out   # NNCF's progress bars are not ours to print
    side = artifacts.read_artifact_sidecar(res.artifact)
    assert side["calibration"]["size"] == 32 and side["quantization"]["calibration"]["split"] == "train"
    assert "FakeQuantize" in res.artifact.read_text()   # NNCF's quantizers are in the saved graph
    runner, _ = artifacts.load_artifact(res.artifact)
    model, _ = load_checkpoint(ckpt)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    assert (runner(x).argmax(1) == ref.argmax(1)).float().mean().item() >= 0.75


# -- Triton export --------------------------------------------------------------------------------------

def test_triton_export_layout_config_and_served_ir(tmp_path):
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (Triton's config schema)")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from cifar_speed import cli
    from cifar_speed.fileio import sha256_file

    ckpt = make_checkpoint(tmp_path, stem="lightnn")
    rc = cli.main(["export", str(ckpt), "--format", "triton", "--backend", "openvino", "--out", str(tmp_path / "repo")])
    assert rc == 0
    repo = tmp_path / "repo"
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    assert files == ["lightnn", "lightnn/1", "lightnn/1/model.bin", "lightnn/1/model.xml", "lightnn/cifar-speed.json",
                     "lightnn/config.pbtxt", "lightnn/labels.txt"]
    cfg = text_format.Parse((repo / "lightnn" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.backend == "openvino" and cfg.platform == "" and cfg.default_model_filename == "model.xml"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert cfg.parameters["PERFORMANCE_HINT"].string_value == "THROUGHPUT"
    assert [(d.name, list(d.dims)) for d in cfg.input] == [("input", [3, 32, 32])]
    assert [(d.name, list(d.dims)) for d in cfg.output] == [("logits", [10])]
    import json
    meta = json.loads((repo / "lightnn" / "cifar-speed.json").read_text())
    assert meta["companions"] == {"model.bin": sha256_file(repo / "lightnn" / "1" / "model.bin")}

    # The IR Triton would load: names as in the config, batch dynamic, the checkpoint's logits.
    ir = ovb.core().read_model(str(repo / "lightnn" / "1" / "model.xml"))
    assert ir.inputs[0].get_any_name() == "input" and ir.outputs[0].get_any_name() == "logits"
    assert ir.inputs[0].get_partial_shape()[0].is_dynamic
    compiled = ovb.core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    model, _ = load_checkpoint(ckpt)
    for n in (1, 32):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(compiled({0: x.numpy()})[0]), model(x), rtol=1e-4, atol=1e-4)


def test_triton_openvino_int8_serves_the_benched_ir(tmp_path, fake_data, monkeypatch):
    """export --backend openvino --precision int8 copies the NNCF-quantized IR that bench times."""
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    ok, why = ovb.availability("int8", "cpu")
    if not ok:
        pytest.skip(why)
    from cifar_speed import artifacts, cli
    from cifar_speed.fileio import sha256_file

    monkeypatch.setenv("CIFAR_SPEED_DATA", str(fake_data))
    monkeypatch.setenv("CIFAR_SPEED_CACHE", str(tmp_path / "cache"))
    ckpt = make_checkpoint(tmp_path, stem="lightnn")
    built = artifacts.compile_checkpoint(ckpt, "openvino", "int8", "cpu", [128])
    assert cli.main(["export", str(ckpt), "--format", "triton", "--backend", "openvino", "--precision", "int8",
                     "--out", str(tmp_path / "repo")]) == 0
    served = tmp_path / "repo" / "lightnn" / "1" / "model.xml"
    assert sha256_file(served) == sha256_file(built.artifact)
    assert sha256_file(served.with_suffix(".bin")) == sha256_file(built.artifact.with_suffix(".bin"))
    import json
    meta = json.loads((tmp_path / "repo" / "lightnn" / "cifar-speed.json").read_text())
    assert meta["compiled_artifact"]["cache_hit"] and meta["quantization"]["flow"].startswith("nncf")


@pytest.mark.parametrize("extra,needle", [(["--precision", "fp16"], "exports fp32, int8 only"),
                                          (["--instance-kind", "gpu"], "CPU instances")])
def test_triton_openvino_bad_options_are_one_line(tmp_path, capsys, extra, needle):
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from cifar_speed import cli

    ckpt = make_checkpoint(tmp_path)
    rc = cli.main(["export", str(ckpt), "--backend", "openvino", "--out", str(tmp_path / "repo"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "repo").exists()


def test_doctor_lists_openvinos_version_and_devices():
    from cifar_speed.commands import doctor

    (ov,) = [r for r in doctor.runtimes() if r.name == "openvino"]
    assert ov.version and ovb.version().startswith(ov.version)
    assert "devices: CPU" in ov.detail and "CPU capabilities:" in ov.detail
