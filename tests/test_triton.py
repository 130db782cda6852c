"""`cifar-speed export --format triton`: the model repository, checked with Triton's own schema.

config.pbtxt is parsed with `tritonclient.grpc.model_config_pb2.ModelConfig` (what Triton parses) and
compared with the exported ONNX graph; the dtype mapping is checked through tritonclient's own
numpy -> Triton table, not this project's. One real ONNX export per module (it takes seconds); the
overwrite and TensorRT tests reuse that file through a stand-in exporter.
"""
from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (Triton's config schema)")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402
from tritonclient.utils import np_to_triton_dtype  # noqa: E402

from cifar_speed import cli, triton  # noqa: E402
from cifar_speed import data as D  # noqa: E402
from cifar_speed.backends import onnxrt  # noqa: E402
from cifar_speed.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cifar_speed.models import create_model  # noqa: E402


def _checkpoint(folder: Path, name: str = "lightnn", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(folder / name, create_model("lightnn"),
                           {"model": "lightnn", "name": name,
                            "normalize": {"mean": list(D.IMAGENET_MEAN), "std": list(D.IMAGENET_STD)}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One real export through the CLI: (checkpoint sidecar, repository folder)."""
    tmp = tmp_path_factory.mktemp("triton")
    ckpt = _checkpoint(tmp)
    rc = cli.main(["export", str(ckpt), "--format", "triton", "--backend", "onnxrt", "--out", str(tmp / "repo")])
    assert rc == 0
    return ckpt, tmp / "repo"


@pytest.fixture
def fake_exporter(exported, monkeypatch):
    """export_onnx stand-in that copies the module's real export (same graph, no seconds of tracing)."""
    _, repo = exported
    real = repo / "lightnn" / "1" / "model.onnx"
    calls = []

    def fake(model, path, **kw):
        calls.append(kw)
        shutil.copyfile(real, path)
        return Path(path)

    monkeypatch.setattr(onnxrt, "export_onnx", fake)
    return calls


def _parse(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def test_repository_layout(exported):
    _, repo = exported
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    assert files == ["lightnn", "lightnn/1", "lightnn/1/model.onnx", "lightnn/cifar-speed.json",
                     "lightnn/config.pbtxt", "lightnn/labels.txt"]
    assert (repo / "lightnn" / "labels.txt").read_text().split() == list(D.CLASSES)


def test_config_parses_with_tritons_schema_and_matches_the_onnx_graph(exported):
    import onnx

    _, repo = exported
    cfg = _parse(repo / "lightnn")
    assert cfg.name == "lightnn" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 128
    assert list(cfg.dynamic_batching.preferred_batch_size) == [32, 64, 128]
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO
    assert (repo / "lightnn" / "1" / cfg.default_model_filename).is_file()

    graph = onnx.load(str(repo / "lightnn" / "1" / "model.onnx")).graph
    inits = {t.name for t in graph.initializer}
    for values, declared in (([v for v in graph.input if v.name not in inits], cfg.input), (graph.output, cfg.output)):
        assert [v.name for v in values] == [d.name for d in declared]
        for v, d in zip(values, declared):
            t = v.type.tensor_type
            np_dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            assert mc.DataType.Name(d.data_type) == "TYPE_" + np_to_triton_dtype(np_dtype)
            batch, *rest = t.shape.dim
            assert batch.dim_param and not batch.HasField("dim_value"), "batch dimension must be dynamic"
            assert list(d.dims) == [x.dim_value for x in rest]
    assert [d.name for d in cfg.input] == ["input"] and list(cfg.input[0].dims) == [3, 32, 32]
    assert [d.name for d in cfg.output] == ["logits"] and list(cfg.output[0].dims) == [10]
    assert cfg.output[0].label_filename == "labels.txt"


def test_served_graph_computes_the_checkpoint_at_every_preferred_batch(exported):
    import onnxruntime as ort

    ckpt, repo = exported
    model, _ = load_checkpoint(ckpt)
    sess = ort.InferenceSession(str(repo / "lightnn" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for n in (1, 32, 128):
        x = torch.randn(n, 3, 32, 32, generator=gen)
        (y,) = sess.run(["logits"], {"input": x.numpy()})
        assert y.shape == (n, 10) and y.dtype == np.float32
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-4)


def test_metadata_records_normalisation_and_artifact_hash(exported):
    import json

    from cifar_speed.fileio import sha256_file

    ckpt, repo = exported
    info = json.loads((repo / "lightnn" / "cifar-speed.json").read_text())
    assert info["normalize"] == {"mean": list(D.IMAGENET_MEAN), "std": list(D.IMAGENET_STD)}
    assert info["artifact_sha256"] == sha256_file(repo / "lightnn" / "1" / "model.onnx")
    assert info["identity"]["weights_sha256"] == json.loads(ckpt.read_text())["weights_sha256"]


def test_same_export_again_is_a_no_op(exported, capsys):
    ckpt, repo = exported
    before = (repo / "lightnn" / "1" / "model.onnx").stat().st_mtime_ns
    assert cli.main(["export", str(ckpt), "--out", str(repo)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (repo / "lightnn" / "1" / "model.onnx").stat().st_mtime_ns == before


def test_different_model_is_refused_without_force_and_replaced_with_it(tmp_path, exported, fake_exporter, capsys):
    _, repo = exported
    mine = tmp_path / "repo"
    shutil.copytree(repo, mine)
    other = _checkpoint(tmp_path, name="lightnn", seed=1)       # same name, other weights
    assert cli.main(["export", str(other), "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0] and "weights_sha256" in err[0]
    assert _parse(mine / "lightnn") == _parse(repo / "lightnn")
    assert cli.main(["export", str(other), "--out", str(mine), "--force", "--instances", "2"]) == 0
    assert _parse(mine / "lightnn").instance_group[0].count == 2
    assert sorted(p.name for p in mine.iterdir()) == ["lightnn"]    # no temporary or old folder left


def test_other_models_in_the_repository_are_kept(tmp_path, fake_exporter):
    ckpt = _checkpoint(tmp_path, name="student")
    repo = tmp_path / "repo"
    (repo / "resnet").mkdir(parents=True)
    (repo / "resnet" / "config.pbtxt").write_text('name: "resnet"\n')
    res = triton.export_triton(ckpt, repo, precision="fp16", max_batch_size=64, instance_kind="gpu")
    assert res.written and sorted(p.name for p in repo.iterdir()) == ["resnet", "student"]
    cfg = _parse(repo / "student")
    assert cfg.name == "student" and cfg.max_batch_size == 64
    assert list(cfg.dynamic_batching.preferred_batch_size) == [32, 64]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert fake_exporter[-1]["precision"] == "fp16"


@pytest.mark.parametrize("argv, message", [
    (["--format", "savedmodel"], "invalid choice: 'savedmodel'"),
    (["--backend", "compile"], "invalid choice: 'compile'"),
    (["--precision", "int4"], "invalid choice: 'int4'"),
    (["--name", "../escape"], "model name '../escape'"),
    (["--max-batch-size", "0"], "--max-batch-size"),
    (["--instance-kind", "tpu"], "invalid choice: 'tpu'"),
    (["--backend", "trt", "--instance-kind", "cpu"], "GPU only"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "repo"
    try:
        code = cli.main(["export", str(ckpt), "--out", str(out), *argv])
    except SystemExit as e:  # argparse rejects a value outside an option's choices before main's try
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cifar-speed: error:") and message in err[0], err
    assert not out.exists()


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "repo"
    assert cli.main(["export", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json not found" in err[0]
    assert not out.exists()


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    from cifar_speed.errors import CifarSpeedError

    def broken(model, path, **kw):
        Path(path).write_bytes(b"half")
        raise CifarSpeedError("ONNX export failed: simulated")

    monkeypatch.setattr(onnxrt, "export_onnx", broken)
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "repo"
    assert cli.main(["export", str(ckpt), "--out", str(out)]) == 2
    assert "simulated" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_trt_without_tensorrt_or_gpu_is_one_clear_line(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    assert cli.main(["export", str(ckpt), "--backend", "trt", "--out", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backend trt needs TensorRT and a CUDA GPU" in err[0]
    assert not (tmp_path / "repo").exists()


class _FakeTensorRT(types.ModuleType):
    """Just enough of the TensorRT Python API for build_plan, recording what it is asked."""

    def __init__(self):
        super().__init__("tensorrt")
        self.__version__ = "10.9.0"
        self.seen = {"shapes": {}, "flags": []}
        seen = self.seen

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Tensor:
            name, shape = "input", (-1, 3, 32, 32)

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return Tensor()

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                seen["parsed"] = Path(path).read_bytes()[:4]
                return True

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                seen["shapes"][name] = (lo, opt, hi)

        class Config:
            def add_optimization_profile(self, p):
                seen["profiles"] = seen.get("profiles", 0) + 1

            def set_flag(self, flag):
                seen["flags"].append(flag)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                seen["network_flags"] = flags
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"PLAN-BYTES"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, Parser
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16")
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)


def test_trt_plan_export_with_the_builder_api(tmp_path, monkeypatch, fake_exporter):
    """No GPU here: a stand-in `tensorrt` checks the builder calls and the repository around the plan."""
    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import cifar_speed.provenance
    monkeypatch.setattr(cifar_speed.provenance, "provenance", lambda: {"stub": "no GPU to describe"})
    assert triton.trt_unavailable_reason() is None
    ckpt = _checkpoint(tmp_path)
    res = triton.export_triton(ckpt, tmp_path / "repo", backend="trt", precision="fp16")
    folder = tmp_path / "repo" / "lightnn"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "1", "1/model.plan", "cifar-speed.json", "config.pbtxt", "labels.txt"]     # no model.onnx left
    assert res.artifact.read_bytes() == b"PLAN-BYTES"
    assert fake.seen["shapes"] == {"input": ((1, 3, 32, 32), (64, 3, 32, 32), (128, 3, 32, 32))}
    assert fake.seen["flags"] == ["FP16"] and fake.seen["profiles"] == 1 and fake.seen["network_flags"] == 0
    assert fake_exporter[-1]["precision"] == "fp32"       # TensorRT gets the fp32 graph + the FP16 flag
    cfg = _parse(folder)
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert [i.name for i in cfg.input] == ["input"] and list(cfg.output[0].dims) == [10]


@pytest.mark.gpu
def test_trt_plan_builds_and_deserializes_on_a_gpu(tmp_path):
    """Where TensorRT is installed: a real plan whose I/O matches config.pbtxt."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this GPU machine")
    ckpt = _checkpoint(tmp_path)
    res = triton.export_triton(ckpt, tmp_path / "repo", backend="trt")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(res.artifact.read_bytes())
    assert engine is not None
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    cfg = _parse(res.folder)
    assert sorted(names) == sorted([t.name for t in cfg.input] + [t.name for t in cfg.output])
    assert tuple(engine.get_tensor_profile_shape("input", 0)[2]) == (128, 3, 32, 32)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_serves_the_benched_artifact_and_its_top1(tmp_path, fake_data, monkeypatch, precision):
    """The served model.onnx is the very file `bench` timed (same sha256; int8: the calibrated QDQ
    graph), and it reproduces the cell's top-1 on the same test images."""
    import onnxruntime as ort

    from cifar_speed import harness, sweep
    from cifar_speed.fileio import sha256_file

    monkeypatch.setenv("CIFAR_SPEED_DATA", str(fake_data))
    ckpt = _checkpoint(tmp_path, seed=5)
    _, meta = load_checkpoint(ckpt)
    split = D.load_split("test", str(fake_data))
    res = sweep.run_sweep(sweep.SweepConfig(
        checkpoints=[ckpt], backends=["onnxrt"], precisions=[precision], batches=[16], device="cpu",
        settings=harness.QUICK, peak_gflops=1000.0, test_split=split, jpeg_split=split, threads=1,
        data_dir=str(fake_data)), progress=False)
    cell = next(c for c in res["cells"] if c["backend"] == "onnxrt" and c["status"] == "ok")
    assert cli.main(["export", str(ckpt), "--precision", precision, "--out", str(tmp_path / "repo")]) == 0
    served = tmp_path / "repo" / "lightnn" / "1" / "model.onnx"
    assert sha256_file(served) == cell["runner"]["artifact_sha256"]
    sess = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"])
    x = D.normalize(split.images, meta["normalize"]["mean"], meta["normalize"]["std"]).numpy()
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    top1 = float((logits.argmax(1) == split.labels.numpy()).mean())
    assert top1 == pytest.approx(cell["accuracy"]["top1"], abs=1e-9)
