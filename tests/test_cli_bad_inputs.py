"""Bad input through the real `cifar-speed` entry point (issue 14): a table of data, recipe, checkpoint,
artifact, output-path and flag faults. Every row must end with exit status 2, exactly one line on
stderr, no traceback, and no file appearing or changing in the output folder (nor anywhere in the
row's workspace).

Rows run in-process through the console-script entry point that `pip install` wires to
`cifar-speed` (fast, and faults such as a full disk or an unreadable file can be injected); a few
also run as a real subprocess of the installed script.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from _fakedata import REPO
from _infer_util import make_checkpoint

SCRIPT = Path(sys.executable).with_name("cifar-speed")

RECIPE = 'model = "lightnn"\n[data]\nbatch_size = 500\n'


def snapshot(root: Path) -> dict:
    """Every file under root with its content hash and mode (what "nothing changed" compares)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def _corrupt_data(ws: Path, fake: Path) -> None:
    bad = ws / "baddata" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    for f in (fake / "cifar-10-batches-py").iterdir():
        (bad / f.name).write_bytes(f.read_bytes()[:1000])


def _dir_data(ws: Path, fake: Path) -> None:
    d = ws / "dirdata" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for f in (fake / "cifar-10-batches-py").iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "test_batch").unlink()
    (d / "test_batch").mkdir()


@pytest.fixture
def ws(tmp_path, fake_data):
    """The workspace of one row: data, recipes, a checkpoint, results files and an output folder
    that already holds a file (so a change to it would show)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("already here\n")
    (tmp_path / "file").write_text("a regular file\n")
    r = tmp_path / "recipes"
    r.mkdir()
    recipes = {
        "ok": RECIPE, "batch_neg": RECIPE.replace("500", "-1"), "batch_zero": RECIPE.replace("500", "0"),
        "epochs_nan": RECIPE + "[train]\nepochs = nan\n", "epochs_inf": RECIPE + "[train]\nepochs = inf\n",
        "lr_neg": RECIPE + "[optim]\nlr = -1\n", "translate_neg": RECIPE + "[augment]\ntranslate = -2\n",
        "rotate_neg": RECIPE + "[augment]\nrotate_degrees = -10.0\n", "seed_huge": f"seed = {2**70}\n" + RECIPE,
        "not_toml": RECIPE + "[data\n", "typo": RECIPE + "[optim]\nlearning_rate = 0.1\n",
        "momentum": RECIPE + "[optim]\nname = \"sgd\"\nmomentum = 1.0\n",
    }
    for name, text in recipes.items():
        (r / f"{name}.toml").write_text(text)
    (r / "binary.toml").write_bytes(b"\xff\xfe\x00model")
    (r / "folder.toml").mkdir()
    ck = tmp_path / "ck"
    make_checkpoint(ck, stem="good")
    for stem, change in {"kwargs_path": {"model_kwargs": {"imagenet_weights": str(tmp_path / "file")}},
                         "kwargs_unknown": {"model_kwargs": {"width": 3}}, "nan": None, "truncated": None,
                         "badweights": None, "weightsdir": None, "unreadable": None}.items():
        make_checkpoint(ck, stem=stem, name="mobilenetv3_small" if stem == "kwargs_path" else "lightnn")
        side = ck / f"{stem}.json"
        if change:
            side.write_text(json.dumps({**json.loads(side.read_text()), **change}))
    (ck / "nan.json").write_text((ck / "nan.json").read_text().replace('"test_accuracy": 0.1', '"test_accuracy": NaN'))
    (ck / "truncated.json").write_text((ck / "truncated.json").read_text()[:50])
    w = ck / "badweights.safetensors"
    w.write_bytes(w.read_bytes()[:300])
    (ck / "weightsdir.safetensors").unlink()
    (ck / "weightsdir.safetensors").mkdir()
    res = tmp_path / "res"
    res.mkdir()
    (res / "notjson.json").write_text("{cells: [")
    (res / "nan.json").write_text('{"schema": 1, "cells": [NaN]}')
    (res / "wrong.json").write_text(json.dumps({"schema": "something-else", "cells": []}))
    (res / "dir.json").mkdir()
    _corrupt_data(tmp_path, fake_data)
    _dir_data(tmp_path, fake_data)
    return {"ws": tmp_path, "data": fake_data}


def _deny(monkeypatch, target: Path):
    """Reading `target` fails as it would for a file this user may not read (tests run as root, so
    chmod alone would not do)."""
    real = io.open

    def guarded(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == target.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real(file, *a, **k)

    monkeypatch.setattr(io, "open", guarded)
    monkeypatch.setattr(builtins, "open", guarded)


def _full_disk(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


T = ["train", "--no-progress", "--data-dir", "{data}", "--out", "{ws}/out"]
E = ["eval", "--data-dir", "{data}"]
B = ["bench", "{ws}/ck/good.json", "--backend", "eager", "--precision", "fp32", "--batch", "8", "--no-progress",
     "--data-dir", "{data}", "--out", "{ws}/out/r.json"]
C = ["compile", "{ws}/ck/good.json", "--backend", "onnxrt", "--out", "{ws}/out"]

# (id, argv, the message must contain, fault)
ROWS = [
    # data
    ("data-missing", ["train", "{ws}/recipes/ok.toml", "--data-dir", "{ws}/nodata", "--out", "{ws}/out"], "CIFAR-10 not found", None),
    ("data-truncated", ["train", "{ws}/recipes/ok.toml", "--data-dir", "{ws}/baddata", "--out", "{ws}/out"], "truncated", None),
    ("data-unreadable", [*T, "{ws}/recipes/ok.toml"], "Permission denied", ("deny", "{data}/cifar-10-batches-py/data_batch_1")),
    ("data-file-is-folder", [*E[:1], "{ws}/ck/good.json", "--data-dir", "{ws}/dirdata"], "test_batch", None),
    # recipe
    ("recipe-batch-negative", [*T, "{ws}/recipes/batch_neg.toml"], "[data] batch_size in", None),
    ("recipe-batch-zero", [*T, "{ws}/recipes/batch_zero.toml"], "batch_size", None),
    ("recipe-epochs-nan", [*T, "{ws}/recipes/epochs_nan.toml"], "[train] epochs in", None),
    ("recipe-epochs-inf", [*T, "{ws}/recipes/epochs_inf.toml"], "[train] epochs in", None),
    ("recipe-lr-negative", [*T, "{ws}/recipes/lr_neg.toml"], "[optim] lr in", None),
    ("recipe-translate-negative", [*T, "{ws}/recipes/translate_neg.toml"], "[augment] translate", None),
    ("recipe-rotate-negative", [*T, "{ws}/recipes/rotate_neg.toml"], "[augment] rotate_degrees", None),
    ("recipe-momentum-one", [*T, "{ws}/recipes/momentum.toml"], "[optim] momentum", None),
    ("recipe-seed-70-bit", [*T, "{ws}/recipes/seed_huge.toml"], "71-bit integer", None),
    ("recipe-not-toml", [*T, "{ws}/recipes/not_toml.toml"], "not valid TOML", None),
    ("recipe-not-utf8", [*T, "{ws}/recipes/binary.toml"], "not UTF-8", None),
    ("recipe-is-folder", [*T, "{ws}/recipes/folder.toml"], "is a folder", None),
    ("recipe-missing", [*T, "{ws}/recipes/none.toml"], "not found", None),
    ("recipe-unknown-key", [*T, "{ws}/recipes/typo.toml"], "learning_rate", None),
    # checkpoint
    ("ckpt-folder", [*E, "{ws}/ck/"], "is a folder, not a checkpoint", None),
    ("ckpt-sidecar-truncated", [*E, "{ws}/ck/truncated.json"], "not valid JSON", None),
    ("ckpt-sidecar-nan", [*E, "{ws}/ck/nan.json"], "not valid JSON", None),
    ("ckpt-kwargs-path", [*E, "{ws}/ck/kwargs_path.json"], "imagenet_weights", None),
    ("ckpt-kwargs-unknown", [*E, "{ws}/ck/kwargs_unknown.json"], "does not take", None),
    ("ckpt-weights-truncated", [*E, "{ws}/ck/badweights.json"], "does not match the sha256", None),
    ("ckpt-weights-folder", [*E, "{ws}/ck/weightsdir.json"], "is a folder", None),
    ("ckpt-weights-unreadable", [*E, "{ws}/ck/unreadable.json"], "Permission denied", ("deny", "{ws}/ck/unreadable.safetensors")),
    ("ckpt-sidecar-unreadable", [*E, "{ws}/ck/unreadable.json"], "Permission denied", ("deny", "{ws}/ck/unreadable.json")),
    ("ckpt-wrong-model", [*E, "{ws}/ck/good.json", "--model", "cnn"], "not 'cnn'", None),
    # artifact
    ("compile-out-under-file", [*C[:-1], "{ws}/file/art"], "is a file, not a folder", None),
    ("compile-out-is-file", [*C[:-1], "{ws}/file"], "is a file, not a folder", None),
    ("compile-precision", [*C, "--precision", "fp8"], "'fp8'", None),
    ("compile-calib-size-huge", [*C, "--precision", "int8", "--calib-size", "1000000"], "calibration size", None),
    ("compile-calib-seed-huge", [*C, "--precision", "int8", "--calib-seed", str(2**70)], "calibration seed", None),
    ("compile-full-disk", [*C], "No space left on device", ("enospc",)),
    # output paths
    ("train-out-is-file", ["train", "{ws}/recipes/ok.toml", "--data-dir", "{data}", "--out", "{ws}/file"], "is a file, not a folder", None),
    ("train-out-under-file", ["train", "{ws}/recipes/ok.toml", "--data-dir", "{data}", "--out", "{ws}/file/sub"], "is a file, not a folder", None),
    ("train-full-disk", [*T, "{ws}/recipes/ok.toml", "--epochs", "0.1"], "No space left on device", ("enospc",)),
    ("bench-out-is-folder", [*B[:-1], "{ws}/out"], "is a folder", None),
    ("bench-out-under-file", [*B[:-1], "{ws}/file/r.json"], "is a file, not a folder", None),
    ("report-out-under-file", ["report", "{ws}/res/wrong.json", "--out", "{ws}/file/rep"], "", None),
    ("report-not-json", ["report", "{ws}/res/notjson.json", "--out", "{ws}/out/rep"], "not valid JSON", None),
    ("report-nan", ["report", "{ws}/res/nan.json", "--out", "{ws}/out/rep"], "not valid JSON", None),
    ("report-wrong-schema", ["report", "{ws}/res/wrong.json", "--out", "{ws}/out/rep"], "results file", None),
    ("report-folder", ["report", "{ws}/res/dir.json", "--out", "{ws}/out/rep"], "is a folder", None),
    # flags
    ("train-epochs-nan", [*T, "{ws}/recipes/ok.toml", "--epochs", "nan"], "--epochs = nan", None),
    ("train-epochs-inf", [*T, "{ws}/recipes/ok.toml", "--epochs", "inf"], "--epochs = inf", None),
    ("train-epochs-text", [*T, "{ws}/recipes/ok.toml", "--epochs", "ten"], "invalid float value", None),
    ("train-seed-huge", [*T, "{ws}/recipes/ok.toml", "--seed", str(2**70)], "--seed = a 71-bit integer", None),
    ("train-nproc-zero", [*T, "{ws}/recipes/ok.toml", "--nproc", "0"], "--nproc", None),
    ("train-name-escapes", [*T, "{ws}/recipes/ok.toml", "--name", "../escape"], "--name", None),
    ("bench-min-time-nan", [*B, "--min-time", "nan"], "--min-time", None),
    ("bench-max-warmup-inf", [*B, "--max-warmup", "inf"], "--max-warmup", None),
    ("bench-min-reps-zero", [*B, "--min-reps", "0"], "--min-reps", None),
    ("bench-peak-negative", [*B, "--peak-gflops", "-5"], "--peak-gflops = -5.0", None),
    ("bench-peak-nan", [*B, "--peak-gflops", "nan"], "--peak-gflops = nan", None),
    ("bench-tolerance-nan", [*B, "--tolerance", "nan"], "--tolerance", None),
    ("bench-calib-seed-huge", [*B, "--calib-seed", str(2**70)], "calibration seed", None),
    ("bench-batch-zero", [*B, "--batch", "0"], "not a positive integer", None),
    ("unknown-flag", ["eval", "{ws}/ck/good.json", "--fast"], "unrecognized arguments", None),
]


def _fill(argv, ws, data):
    return [a.replace("{ws}", str(ws)).replace("{data}", str(data)) for a in argv]


def _entry_main():
    """The function the installed `cifar-speed` script calls. From a checkout that is on PYTHONPATH but
    not installed (the lent GPU machines), the one pyproject.toml names: collection must not fail there."""
    found = entry_points(group="console_scripts", name="cifar-speed")
    if found:
        return next(iter(found)).load()
    import importlib
    import tomllib

    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["cifar-speed"]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _run_entry(argv, capsys) -> tuple[int, str]:
    main = _entry_main()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse exits; the installed script would too
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(row, ws, capsys, monkeypatch):
    name, argv, needle, fault = row
    root, data = ws["ws"], ws["data"]
    monkeypatch.chdir(root)
    monkeypatch.setenv("CIFAR_SPEED_CACHE", str(root / "cache"))  # compile's default cache stays in the row
    before = snapshot(root)
    if fault and fault[0] == "deny":
        _deny(monkeypatch, Path(_fill([fault[1]], root, data)[0]))
    elif fault and fault[0] == "enospc":
        _full_disk(monkeypatch)
    rc, err = _run_entry(_fill(argv, root, data), capsys)
    monkeypatch.undo()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("cifar-speed: error: "), err
    assert "Traceback" not in err
    assert needle in lines[0], (needle, lines[0])
    assert snapshot(root) == before, "a file appeared or changed"


def test_the_table_is_long_enough():
    assert len(ROWS) >= 30


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--min-time", "nan", "--out", "{ws}/out/r.json"], "--min-time"),
    (["eval", "{ws}/ck/"], "is a folder"),
    (["train", "{ws}/recipes/batch_neg.toml", "--out", "{ws}/out"], "batch_size"),
])
def test_the_installed_script(argv, needle, ws):
    """The same contract through the script pip installed, in a fresh process."""
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} not installed")
    root = ws["ws"]
    before = snapshot(root)
    p = subprocess.run([str(SCRIPT), *_fill(argv, root, ws["data"])], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "CIFAR_SPEED_CACHE": str(root / "cache")}, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert snapshot(root) == before
