"""Hostile input and crashes (issue 14): each defect class, tested as a class.

Resume under a crash at every write and rename of a save, recipe ranges for every numeric field,
the compile cache keyed on the weights' content, sidecars trusted no further than their schema,
byte-reproducible checkpoints, and OS errors as one line with nothing half-written.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from cifar_speed import artifacts, backends, fileio
from cifar_speed.checkpoint import load_checkpoint, paths_for, read_sidecar, save_checkpoint
from cifar_speed.errors import CifarSpeedError
from cifar_speed.models import create_model
from cifar_speed.train import resume as resume_store
from cifar_speed.train.loop import train
from cifar_speed.train.recipe import RANGES, SECTIONS, parse_recipe

from _infer_util import make_checkpoint

# 6 steps an epoch on 600 fake images, one thread (two OpenMP threads on two shared cores spin and run
# ~10x slower): a crash test trains in about two seconds.
SMALL = 'model = "lightnn"\nseed = 3\n[data]\nbatch_size = 100\n[train]\nprecision = "fp32"\n'


@pytest.fixture(scope="module")
def _tiny_folder(tmp_path_factory):
    from _fakedata import write_fake_cifar

    root = tmp_path_factory.mktemp("tiny_cifar")
    return root, write_fake_cifar(root / "cifar-10-batches-py", n_train=600, n_test=100)


@pytest.fixture(scope="module")
def tiny_env(_tiny_folder):
    """The tiny data set accepted by the loader, and one torch thread, for the module's tests."""
    from cifar_speed import data as D

    root, sums = _tiny_folder
    mp = pytest.MonkeyPatch()
    mp.setattr(D, "SHA256", sums)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    D._load.cache_clear()
    yield root
    D._load.cache_clear()
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture
def tiny(tiny_env):
    return tiny_env


def _train(data, out, epochs=3, resume=False, text=SMALL):
    return train(parse_recipe(text, name="small"), data_dir=data, out_dir=out, epochs=epochs, resume=resume,
                 show_progress=False)


def _weights(sidecar) -> dict:
    return load_checkpoint(sidecar)[0].state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so no `except Exception` in the code under test sees it."""


def _fail_at(n: int, real):
    calls = {"n": 0}

    def fake(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise _Killed(f"killed at call {n}")
        return real(*a, **k)

    return fake, calls


def _counting(real, calls: dict, key: str):
    def wrapper(*a, **k):
        calls[key] += 1
        return real(*a, **k)

    return wrapper


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_env):
    """An uninterrupted 3-epoch run's weights, and how many renames and resume-file writes it made
    (counted on a second run, once caches such as the JPEG test set are warm)."""
    _train(tiny_env, tmp_path_factory.mktemp("warm"))
    calls = {"replace": 0, "write": 0}
    mp = pytest.MonkeyPatch()
    mp.setattr(os, "replace", _counting(os.replace, calls, "replace"))
    mp.setattr(resume_store, "_write_synced", _counting(resume_store._write_synced, calls, "write"))
    try:
        sidecar = _train(tiny_env, tmp_path_factory.mktemp("ref"))
    finally:
        mp.undo()
    return _weights(sidecar), calls


@pytest.mark.parametrize("target,attr,count", [(os, "replace", "replace"), (resume_store, "_write_synced", "write")])
def test_resume_after_a_crash_at_every_rename_and_write_is_bit_identical(tiny, tmp_path, reference, monkeypatch,
                                                                        target, attr, count):
    """A kill at the n-th rename (or resume-file write) of a run, for every n the run makes; then
    --resume must finish with exactly the weights of a run that was never interrupted."""
    ref, counts = reference
    assert counts["replace"] >= 5 and counts["write"] == 9  # 3 epoch commits (3 files each) + final weights, sidecar
    real = getattr(target, attr)
    for n in range(1, counts[count] + 1):
        out = tmp_path / f"crash{n}"
        monkeypatch.setattr(target, attr, _fail_at(n, real)[0])
        with pytest.raises(_Killed):
            _train(tiny, out)
        monkeypatch.setattr(target, attr, real)
        sidecar = _train(tiny, out, resume=True)
        assert _same(_weights(sidecar), ref), f"killed at {attr} call {n}: the resumed run differs"
        assert not [p for p in (out / "small.work").iterdir() if p.name.startswith(".")], "stale temporaries left"


def test_resume_cleans_what_a_kill_left_and_falls_back_past_a_damaged_epoch(tiny, tmp_path, reference, capsys):
    ref, _ = reference
    out = tmp_path / "run"
    _train(tiny, out, epochs=2)  # commits epoch-00001 and epoch-00002 (the last two are kept)
    work = out / "small.work"
    assert sorted(p.name for p in work.iterdir()) == ["epoch-00001", "epoch-00002"]
    # what SIGKILL in the middle of a save leaves: a staging folder and an atomic-write temporary
    (work / ".epoch-00003.x.tmp").mkdir()
    (work / ".epoch-00003.x.tmp" / "state.pt").write_bytes(b"partial")
    (work / ".small.json.abc.tmp").write_bytes(b"partial")
    weights = work / "epoch-00002" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # a flipped bit after the commit (disk fault, tampering)
    weights.write_bytes(bytes(data))
    sidecar = _train(tiny, out, resume=True)
    assert "epoch-00002 is incomplete or corrupt" in capsys.readouterr().out
    assert _same(_weights(sidecar), ref)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def _epoch_dir(out) -> Path:
    return max((out / "small.work").glob("epoch-*"))


def _rewrite_manifest(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(m))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cifar-speed-pwned",))


@pytest.mark.parametrize("damage,message", [
    ("pickle", "cannot resume from"),
    ("truncated", "cannot resume from"),
    ("recipe", "different recipe"),
    ("legacy", "without a manifest"),
])
def test_resume_refuses_what_it_cannot_trust_in_one_line(tiny, tmp_path, damage, message):
    out = tmp_path / "run"
    _train(tiny, out, epochs=1)
    folder = _epoch_dir(out)
    text = SMALL
    if damage == "pickle":  # a manifest that matches a malicious state.pt: weights_only refuses it
        _rewrite_manifest(folder, "state.pt", pickle.dumps({"optimizer": _Payload()}, protocol=2))
    elif damage == "truncated":
        _rewrite_manifest(folder, "state.pt", (folder / "state.pt").read_bytes()[:200])
    elif damage == "recipe":
        text = SMALL.replace("seed = 3", "seed = 4")
    else:  # the layout before manifests: three files renamed separately
        for f in resume_store._LEGACY:
            (out / "small.work" / f).write_bytes(b"{}")
        for d in (out / "small.work").glob("epoch-*"):
            import shutil
            shutil.rmtree(d)
    with pytest.raises(CifarSpeedError, match=message) as e:
        _train(tiny, out, epochs=2, resume=True, text=text)
    assert "\n" not in str(e.value)
    assert not Path("/tmp/cifar-speed-pwned").exists()


# -- recipes: every numeric field has a range ---------------------------------------------------------

def test_every_numeric_recipe_field_has_a_range():
    missing = [f"[{s}] {f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
               if isinstance(f.default, (int, float)) and not isinstance(f.default, bool) and (s, f.name) not in RANGES]
    assert not missing, f"give these numeric recipe fields a range in recipe.RANGES: {missing}"
    for (section, key), rng in RANGES.items():  # and every default is inside its own range
        if section:
            default = {f.name: f.default for f in dataclasses.fields(SECTIONS[section])}.get(key)
            if default is not None:
                assert rng.contains(default), (section, key, default)


@pytest.mark.parametrize("section,line,needle", [
    ("data", "batch_size = -1", "[data] batch_size in x.toml = -1: must be an integer >= 1"),
    ("data", "batch_size = 0", "[data] batch_size in x.toml = 0"),
    ("data", "batch_size = 100000", "test set"),
    ("train", "epochs = nan", "[train] epochs in x.toml = nan: must be a finite number > 0"),
    ("train", "epochs = inf", "[train] epochs in x.toml = inf"),
    ("train", "epochs = 0", "[train] epochs in x.toml = 0"),
    ("optim", "lr = -1", "[optim] lr in x.toml = -1"),
    ("optim", "momentum = 1.5", "[optim] momentum"),
    ("augment", "translate = -2", "[augment] translate in x.toml = -2"),
    ("augment", "rotate_degrees = -15.0", "[augment] rotate_degrees"),
    ("augment", "cutout = -1", "[augment] cutout"),
    ("schedule", "warmup_fraction = 1.5", "[schedule] warmup_fraction"),
    ("train", "label_smoothing = -0.1", "[train] label_smoothing"),
    ("distill", "temperature = 0.0", "[distill] temperature"),
])
def test_recipe_numbers_out_of_range_name_the_field_and_file(section, line, needle):
    with pytest.raises(CifarSpeedError) as e:
        parse_recipe(f'model = "lightnn"\n[{section}]\n{line}\n', path="x.toml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_huge_seed_is_one_short_line():
    with pytest.raises(CifarSpeedError, match="seed in x.toml = a 100-bit integer") as e:
        parse_recipe(f'model = "lightnn"\nseed = {2**99}\n', path="x.toml")
    assert len(str(e.value)) < 200


# -- the compile cache covers the weights' content -----------------------------------------------------

def test_cache_key_covers_the_weights_file_even_without_a_recorded_hash(tmp_path, monkeypatch):
    module = backends.get_backend("onnxrt")
    monkeypatch.setattr(module, "save", lambda model, meta, precision, device, batches, tmp, **kw:
                        Path(tmp).write_bytes(b"artifact of " + next(iter(model.state_dict().values())).numpy().tobytes()) and {})
    ck = make_checkpoint(tmp_path / "ck", seed=0)
    meta = json.loads(ck.read_text())
    meta.pop("weights_sha256")
    ck.write_text(json.dumps(meta))
    out = tmp_path / "art"
    first = artifacts.compile_checkpoint(ck, "onnxrt", "fp32", "cpu", out_dir=out)
    assert not first.cache_hit
    assert artifacts.compile_checkpoint(ck, "onnxrt", "fp32", "cpu", out_dir=out).cache_hit
    other = make_checkpoint(tmp_path / "other", seed=1)  # swap in other weights, keep the hash-less sidecar
    paths_for(ck)[0].write_bytes(paths_for(other)[0].read_bytes())
    again = artifacts.compile_checkpoint(ck, "onnxrt", "fp32", "cpu", out_dir=out)
    assert not again.cache_hit and again.key != first.key and again.note == "rebuilt: inputs changed"


def test_cache_key_covers_model_kwargs():
    base = dict(weights_sha256="a" * 64, model="cnn", backend="onnxrt", precision="fp32", profile={}, device="cpu",
                lib_versions={})
    assert artifacts.cache_key(**base) != artifacts.cache_key(**base, model_kwargs={"num_classes": 10})


# -- sidecars are trusted no further than their schema ---------------------------------------------------

def _edit_sidecar(ck: Path, **changes) -> None:
    meta = json.loads(ck.read_text())
    meta.update(changes)
    ck.write_text(json.dumps(meta))


@pytest.mark.parametrize("changes,needle", [
    ({"model_kwargs": {"imagenet_weights": "/etc/passwd"}}, "refused"),
    ({"model_kwargs": {"num_classes": 10**9}}, "refused"),
    ({"model_kwargs": {"depth": 3}}, "does not take"),
    ({"model_kwargs": ["num_classes"]}, "model_kwargs"),
    ({"normalize": {"mean": [0.5], "std": [0.2] * 3}}, "normalize/mean"),
    ({"normalize": {"mean": [0.5] * 3, "std": [0, 1, 1]}}, "normalize/std"),
    ({"weights_sha256": "not-a-hash"}, "weights_sha256"),
    ({"test_accuracy": "high"}, "test_accuracy"),
])
def test_sidecar_fields_are_validated(tmp_path, monkeypatch, changes, needle):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a path from a sidecar was opened"))
    ck = make_checkpoint(tmp_path, name="mobilenetv3_small" if "imagenet_weights" in str(changes) else "lightnn", stem="ck")
    _edit_sidecar(ck, **changes)
    with pytest.raises(CifarSpeedError, match="ck.json") as e:
        load_checkpoint(ck)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_sidecar_with_nan_or_bad_bytes_is_one_line(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    ck.write_text(ck.read_text().replace('"test_accuracy": 0.1', '"test_accuracy": NaN'))
    with pytest.raises(CifarSpeedError, match="not valid JSON"):
        read_sidecar(ck)
    ck.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CifarSpeedError, match="not UTF-8"):
        read_sidecar(ck)


def test_a_folder_given_as_checkpoint_is_named_as_such(tmp_path):
    (tmp_path / "ck").mkdir()
    with pytest.raises(CifarSpeedError, match="is a folder, not a checkpoint"):
        read_sidecar(str(tmp_path / "ck") + "/")


# -- files: byte-reproducible, one mode, atomic as a set ---------------------------------------------------

def test_checkpoint_files_are_byte_reproducible_with_one_mode(tmp_path):
    torch.manual_seed(0)
    model = create_model("lightnn")
    meta = {"model": "lightnn", "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    digests = set()
    for i in range(6):  # safetensors orders its metadata map differently from one call to the next
        save_checkpoint(tmp_path / f"c{i}", model, meta)
        digests.add(fileio.sha256_file(tmp_path / f"c{i}.safetensors"))
    assert len(digests) == 1
    umask = fileio._umask()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {0o666 & ~umask}


def test_a_set_of_files_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    real = os.fsync
    calls = {"n": 0}

    def full_disk(fd):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CifarSpeedError, match="cannot write .*b.csv: No space left on device"):
        fileio.atomic_write_many({tmp_path / "a.json": b"{}", tmp_path / "b.csv": b"x"})
    assert list(tmp_path.iterdir()) == []


def test_write_errors_name_the_path_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(CifarSpeedError, match=r"cannot write .*x\.json: No space left on device"):
        fileio.atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(CifarSpeedError, match="Not a directory|File exists"):
        fileio.atomic_write_text(tmp_path / "file" / "sub" / "x.json", "")


def test_output_checks_refuse_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CifarSpeedError, match="is a file, not a folder"):
        fileio.check_output_dir(tmp_path / "file" / "out")
    with pytest.raises(CifarSpeedError, match="is a folder"):
        fileio.check_output_file(tmp_path)
    assert fileio.check_output_dir(tmp_path / "new" / "deeper") and not (tmp_path / "new").exists()


def test_a_missing_teacher_is_named_once(tmp_path, monkeypatch):
    from cifar_speed.train import teacher

    monkeypatch.setattr(teacher, "SHIPPED_DIR", tmp_path / "shipped")
    recipe = parse_recipe('model = "lightnn"\n[distill]\nkind = "kd"\nteacher = "somewhere/deepnn.json"\n', path="x.toml")
    with pytest.raises(CifarSpeedError, match="not found") as e:
        teacher.find_teacher(recipe, tmp_path)
    assert ".json.json" not in str(e.value) and str(tmp_path / "deepnn.json") in str(e.value)


def test_a_first_save_that_fails_leaves_no_empty_work_folder(tmp_path, monkeypatch):
    def full_disk(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(resume_store, "_write_synced", full_disk)
    work = tmp_path / "run" / "small.work"
    with pytest.raises(CifarSpeedError, match="cannot save the resume point of epoch 1"):
        resume_store.save_epoch(work, 1, {"weights.safetensors": b"w"})
    assert not work.exists() and (tmp_path / "run").is_dir()
