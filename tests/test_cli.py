"""The command line as a new user meets it: instant help, quiet runs, names for shipped checkpoints,
one output width, a doctor that answers 'what runs here'."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

from cifar_speed import cli
from cifar_speed.errors import CifarSpeedError

from _fakedata import REPO
from _infer_util import make_checkpoint


# -- help without importing torch ----------------------------------------------------------------

def test_help_imports_no_command_and_no_torch():
    code = ("import sys\nfrom cifar_speed import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
            "print(sorted(m for m in sys.modules if m.startswith('cifar_speed.commands.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "NO-TORCH" in out and "[]" in out, out
    assert "Train, compile and benchmark CIFAR-10 classifiers" in out
    for name in cli.command_names():
        assert f"    {name} " in out, name


def test_every_command_help_imports_no_torch():
    """`cifar-speed COMMAND --help` answers in a fraction of a second: no command imports torch to
    print its options (one process for all commands, each --help run in turn)."""
    code = ("import sys\nfrom cifar_speed import cli\n"
            f"for name in {cli.command_names()!r}:\n"
            "    try:\n        cli.main([name, '--help'])\n    except SystemExit:\n        pass\n"
            "    print('RESULT', name, 'TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    results = dict(line.split()[1:] for line in out.splitlines() if line.startswith("RESULT "))
    assert results == {name: "NO-TORCH" for name in cli.command_names()}, results


def test_help_choices_match_the_backend_registry():
    """defaults.py spells the backend names and precisions for --help; the registry is the truth."""
    from cifar_speed import backends, defaults
    from cifar_speed.commands.compile import artifact_backends

    assert tuple(backends.BACKENDS) == defaults.BACKENDS
    assert tuple(artifact_backends()) == defaults.ARTIFACT_BACKENDS
    assert backends.PRECISIONS is defaults.PRECISIONS


def test_a_new_backend_module_is_listed_without_touching_anything_else(tmp_path):
    from cifar_speed import defaults

    (tmp_path / "eager.py").write_text('@register_backend("eager", order=0)\ndef availability(p, d):\n    pass\n')
    (tmp_path / "mine.py").write_text('import torch\n\n@register_backend("mine", order=5)\ndef availability(p, d):\n'
                                      '    pass\n\ndef save(*a):\n    pass\n')
    (tmp_path / "helpers.py").write_text("def register_backend():\n    pass\n")     # no backend here
    assert defaults._scan_backends(tmp_path) == (("eager", "mine"), ("mine",))


def test_help_table_matches_every_command_module():
    parser = cli.build_parser(None)   # every command module imported and registered
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: cli.COMMANDS[name] for name in cli.command_names()}


def test_verbose_flag_before_or_after_the_command():
    for argv in (["-v", "doctor"], ["doctor", "-v"]):
        assert cli.build_parser(argv).parse_args(argv).verbose == 1
    assert cli.build_parser(["doctor"]).parse_args(["doctor"]).verbose == 0


# -- third-party output: kept in the log, out of the default output --------------------------------

def _noisy_registry():
    """What torchao, Inductor, ONNX Runtime's quantizer and torch's C++ logging do during a build."""
    from cifar_speed.commands.models import RegistryRow

    for _ in range(2):
        warnings.warn("maxpool2d QuantizationConfig(...) is deprecated", UserWarning)
        logging.getLogger("onnxruntime.quantization").warning("Axis 1 is out-of-range for weight w")
        logging.warning("root-level line from a library")
        os.write(2, b"W1125 21:33:42.520000 5598 torch/utils/cpp_extension.py:183] [0/0] No CUDA runtime is found\n")
    return [RegistryRow("lightnn", 1, 2)]


NOISE = ["maxpool2d QuantizationConfig(...) is deprecated", "Axis 1 is out-of-range for weight w",
         "root-level line from a library", "No CUDA runtime is found"]


@pytest.fixture
def noisy_models(monkeypatch, tmp_path):
    from cifar_speed.commands import models

    monkeypatch.setattr(models, "registry_rows", _noisy_registry)
    monkeypatch.setattr(models, "shipped_rows", lambda registry: [])
    monkeypatch.setenv("CIFAR_SPEED_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


def test_third_party_output_is_logged_not_shown(noisy_models, capfd):
    assert cli.main(["models", "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["registry"][0]["name"] == "lightnn"   # stdout: only our document
    assert err == ""                                               # nothing by default
    logs = list(noisy_models.glob("models-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    for needle in NOISE:
        assert needle in text, needle
    assert "torch/utils/cpp_extension.py:183" in text               # where it came from is kept


def test_verbose_shows_each_distinct_message_once(noisy_models, capfd):
    assert cli.main(["models", "--json", "-v"]) == 0
    out, err = capfd.readouterr()
    json.loads(out)
    assert "third-party output, 4 distinct message(s)" in err
    for needle in NOISE:
        assert err.count(needle) == 1, (needle, err)
    assert "W1125" not in err and "(x2)" in err                     # timestamps gone, repeats counted


def test_capture_leaves_logging_and_warnings_as_they_were():
    from cifar_speed import capture

    root = logging.getLogger()
    handlers, showwarning = root.handlers[:], warnings.showwarning
    with capture.capture(fd_level=False) as sink:
        warnings.warn("inside", UserWarning)
    assert root.handlers == handlers and warnings.showwarning is showwarning
    assert [m.text for m in sink.messages.values()][0].startswith("UserWarning: inside")


def test_normalise_strips_volatile_prefixes():
    from cifar_speed.capture import normalise

    assert normalise("W1125 21:33:42.520000 5598 torch/_pytree.py:630] <enum 'K'> is deprecated") == \
        "torch/_pytree.py:630: <enum 'K'> is deprecated"
    assert normalise("2026-11-25 21:33:42.1 [W:onnxruntime:, x] msg") == "[W:onnxruntime:, x] msg"


# -- checkpoints by name ---------------------------------------------------------------------------

@pytest.fixture
def shipped_here(tmp_path, monkeypatch):
    """A folder with its own results/checkpoints, as a user's working folder would have."""
    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / "results" / "checkpoints", "lightnn", stem="tiny")
    return tmp_path


def test_checkpoint_by_name_path_or_error(shipped_here):
    from cifar_speed.locate import resolve_checkpoint

    assert resolve_checkpoint("tiny") == (shipped_here / "results" / "checkpoints" / "tiny.json").resolve()
    assert resolve_checkpoint("results/checkpoints/tiny.json").name == "tiny.json"
    assert str(resolve_checkpoint("elsewhere/missing.json")) == "elsewhere/missing.json"  # the loader says why
    with pytest.raises(CifarSpeedError, match=r"'nosuch': no such file and no shipped checkpoint.*tiny"):
        resolve_checkpoint("nosuch")


def test_eval_accepts_a_shipped_name(shipped_here, fake_data, capsys):
    assert cli.main(["eval", "tiny", "--data-dir", str(fake_data), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("tiny.json")


def test_eval_takes_a_view_name_as_the_checkpoint_built_with_test_time_augmentation(shipped_here, fake_data, capsys):
    """`eval fast_jpeg_tta` is `eval fast_jpeg --model fast_tta`: the same checkpoint, six views an image."""
    make_checkpoint(shipped_here / "results" / "checkpoints", "fast", stem="fast_jpeg")
    args = ["--data-dir", str(fake_data), "--json", "--device", "cpu"]
    assert cli.main(["eval", "fast_jpeg_tta", *args]) == 0
    view = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", "fast_jpeg", "--model", "fast_tta", *args]) == 0
    assert json.loads(capsys.readouterr().out) == view
    assert view["checkpoint"].endswith("fast_jpeg.json") and view["model"] == "fast_tta"


def test_unknown_name_is_one_line(shipped_here, capsys):
    assert cli.main(["eval", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no shipped checkpoint" in err[0]


def test_models_lists_registry_and_shipped(shipped_here, capsys):
    from cifar_speed.models import list_models

    assert cli.main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in doc["registry"]] == list_models()
    lightnn = next(r for r in doc["registry"] if r["name"] == "lightnn")
    tiny = next(r for r in doc["shipped"] if r["name"] == "tiny")
    assert tiny["model"] == "lightnn" and tiny["params"] == lightnn["params"] and tiny["test_top1"] == 0.1
    assert tiny["test_top1_jpeg75"] is None   # its sidecar records none: shown as "-", never as a number
    assert cli.main(["models"]) == 0
    assert "- never scored" in " ".join(capsys.readouterr().out.split())
    sidecar = shipped_here / "results" / "checkpoints" / "tiny.json"
    meta = json.loads(sidecar.read_text())   # scored after training (tools/ship_checkpoints.py --score-jpeg): marked
    sidecar.write_text(json.dumps({**meta, "test_accuracy_jpeg75": 0.0834, "test_accuracy_jpeg75_scored_by": "x"}))
    other = make_checkpoint(shipped_here / "results" / "checkpoints", "lightnn", stem="tinier")   # recorded at training
    other.write_text(json.dumps({**json.loads(other.read_text()), "test_accuracy_jpeg75": 0.6421}))
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    out = " ".join(text.split())
    assert "8.34 %*" in out and "* scored on the shipped weights after training" in out
    # The mark takes no place of its own: the two figures' decimal points share a column.
    marked, unmarked = (next(line for line in text.splitlines() if f" {n} " in line) for n in ("tiny", "tinier"))
    assert marked.index(".34 %*") == unmarked.index(".21 %")


# -- one width policy; results under the current folder ------------------------------------------

def test_piped_output_has_one_width(monkeypatch):
    import io

    from cifar_speed.console import PIPED_WIDTH, make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console(file=io.StringIO()).width == PIPED_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console(file=io.StringIO()).width == 100


def test_results_go_under_the_current_folder(tmp_path, monkeypatch):
    from cifar_speed.locate import results_dir

    monkeypatch.chdir(tmp_path)
    assert results_dir("m") == tmp_path / "results" / "m"


# -- doctor ------------------------------------------------------------------------------------------

def test_doctor_default_is_this_device_with_runtimes_and_data(fake_data, capsys):
    from cifar_speed import backends

    assert cli.main(["doctor", "--data-dir", str(fake_data)]) == 0
    out = capsys.readouterr().out
    device = backends.default_device()
    verdicts = [l for l in out.splitlines() if l.startswith("  ") and l.split()[1] in ("cpu", "cuda")]
    assert len(verdicts) == len(backends.BACKENDS) and all(l.split()[1] == device for l in verdicts)
    assert "execution providers:" in out and "CPUExecutionProvider" in out
    assert "CIFAR-10 found and verified" in out
    assert "over 1 / 5 / 15 min" in out
    from cifar_speed.commands.doctor import auto_training_precision

    assert f'precision = "auto" trains in {auto_training_precision(device)} on {device}' in out
    assert cli.main(["doctor", "--all", "--data-dir", str(fake_data)]) == 0
    out = capsys.readouterr().out
    verdicts = [l for l in out.splitlines() if l.startswith("  ") and l.split()[1] in ("cpu", "cuda")]
    assert {l.split()[1] for l in verdicts} == {"cpu", "cuda"}


def test_doctor_says_when_the_data_is_missing(tmp_path, capsys):
    assert cli.main(["doctor", "--json", "--data-dir", str(tmp_path / "none")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["data"]["found"] is False and "not found" in facts["data"]["detail"]
    assert {r["name"] for r in facts["runtimes"]} >= {"torch", "onnxruntime"}


def test_doctor_verdicts_group_reasons():
    from cifar_speed.commands.doctor import load_text, verdicts

    rows = [{"device": "cpu", "backend": "x", "precision": p, "available": p == "fp32",
             "reason": "" if p == "fp32" else "needs CUDA"} for p in ("fp32", "fp16", "bf16")]
    rows += [{"device": "cpu", "backend": "y", "precision": "fp32", "available": False, "reason": "no GPU"}]
    assert verdicts(rows, "cpu") == {"x": "runs fp32; fp16, bf16: needs CUDA", "y": "unavailable: no GPU"}
    assert "idle enough" in load_text([0.1, 0.2, 0.3], 2) and "busy" in load_text([2.0, 2.0, 2.0], 2)
