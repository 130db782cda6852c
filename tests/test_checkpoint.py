import json

import pytest
import torch

from cifar_speed.checkpoint import load_checkpoint, paths_for, save_checkpoint
from cifar_speed.errors import CifarSpeedError
from cifar_speed.fileio import atomic_path, atomic_write_text
from cifar_speed.models import create_model

META = {"model": "lightnn", "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}, "test_accuracy": 0.5}


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("lightnn")
    return save_checkpoint(tmp_path / "light", model, META), model


def test_round_trip(ckpt):
    sidecar, model = ckpt
    loaded, meta = load_checkpoint(sidecar)
    assert meta["model"] == "lightnn" and meta["test_accuracy"] == 0.5
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert not loaded.training
    # either file name works
    load_checkpoint(paths_for(sidecar)[0])


def test_checkpoint_record_reads_what_later_stages_need(ckpt):
    sidecar, _ = ckpt
    _, meta = load_checkpoint(sidecar)
    assert (meta.architecture, meta.name, meta.test_accuracy) == ("lightnn", None, 0.5)
    assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.25, 0.25, 0.25) and meta.model_kwargs == {}
    assert len(meta.weights_sha256) == 64
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    x = meta.normalize_images(images)
    assert x.dtype == torch.float32 and x[0].eq(-2.0).all() and x[1].eq(2.0).all()   # (0 - .5)/.25, (1 - .5)/.25
    assert json.loads(json.dumps(meta))["model"] == "lightnn"                        # still the sidecar, whole


def test_fp16_storage_round_trip(tmp_path):
    model = create_model("lightnn")
    sidecar = save_checkpoint(tmp_path / "half", model, META, storage_dtype=torch.float16)
    loaded, meta = load_checkpoint(sidecar)
    assert meta["storage_dtype"] == "float16"
    w = next(loaded.parameters())
    assert w.dtype == torch.float32
    assert torch.allclose(w, next(model.parameters()).half().float())


def test_other_architecture_is_refused(ckpt):
    with pytest.raises(CifarSpeedError, match="is a 'lightnn' checkpoint, not 'cnn'"):
        load_checkpoint(ckpt[0], model_name="cnn")


def test_tensors_of_another_model_are_refused(tmp_path):
    sidecar = save_checkpoint(tmp_path / "x", create_model("deepnn"), {**META, "model": "deepnn"})
    meta = json.loads(sidecar.read_text())
    meta["model"] = "lightnn"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CifarSpeedError, match="does not hold 'lightnn' weights"):
        load_checkpoint(sidecar)


def test_corrupt_weights_are_refused(ckpt):
    weights = paths_for(ckpt[0])[0]
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-100])
    with pytest.raises(CifarSpeedError, match="does not match the sha256"):
        load_checkpoint(ckpt[0])
    with pytest.raises(CifarSpeedError, match="cannot read"):
        load_checkpoint(ckpt[0], verify_hash=False)


def test_bad_sidecars(tmp_path, ckpt):
    with pytest.raises(CifarSpeedError, match="not found"):
        load_checkpoint(tmp_path / "nothing.json")
    sidecar = ckpt[0]
    sidecar.write_text("{not json")
    with pytest.raises(CifarSpeedError, match="not valid JSON"):
        load_checkpoint(sidecar)
    sidecar.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CifarSpeedError, match="not a cifar-speed checkpoint"):
        load_checkpoint(sidecar)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind
