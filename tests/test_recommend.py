"""`cifar-speed recommend`: the fastest cell that meets the bar in that very cell, per machine."""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest
from _fakedata import REPO

from cifar_speed.errors import CifarSpeedError
from cifar_speed.recommend import ANSWERS_FORMAT, ANSWERS_INDEX, Query, closest, default_results_files, recommend
from cifar_speed.sweep import Cell


def _cell(model, backend, precision, ips, top1, batch=128, images=10_000, jpeg=None, disturbed=False, status="ok"):
    acc = {"top1": top1, "images": images}
    if jpeg is not None:
        acc["top1_jpeg75"] = jpeg
    return Cell(model=model, architecture=model, backend=backend, precision=precision, device="cpu",
                batch_size=batch, mode="device", threads=2, status=status, images_per_s=ips,
                latency={"median_ms": 1000 * batch / ips}, accuracy=acc, disturbed=disturbed).to_dict()


@functools.cache
def _real() -> dict:
    """A committed results file lends the run-level fields (provenance, harness, peak): only cells vary
    here. Read when a test needs it, not at import: collecting the suite must not need results/."""
    return json.loads((REPO / "results" / "amd-epyc-2c-avx512bf16" / "sweep-fast-cnn.json").read_text())


def _results(cells):
    real = _real()
    models = {name: {**real["models"]["fast"], "checkpoint": f"results/checkpoints/{name}.json"} for name in ("small", "big")}
    return {**real, "models": models, "skipped": [], "cells": cells}


CELLS = [
    _cell("small", "eager", "fp32", 10_000, 0.852),
    _cell("small", "onnxrt", "int8", 30_000, 0.846),   # fastest, but quantisation cost it the bar
    _cell("small", "compile", "fp32", 12_000, 0.852),
    _cell("big", "onnxrt", "int8", 3_000, 0.935, jpeg=0.92),
    _cell("big", "eager", "fp32", 1_000, 0.936, jpeg=0.921),
    _cell("small", "onnxrt", "fp32", 50_000, 0.86, images=500),        # scored on a subset: not evidence
    _cell("small", "eager", "bf16", 40_000, 0.86, disturbed=True),      # mostly disturbed trials
    _cell("small", "compile", "int8", 60_000, 0.86, status="failed"),
]


def test_int8_that_misses_the_bar_loses_to_fp32_that_meets_it():
    answer = recommend([("results/m1/sweep-a.json", _results(CELLS))], Query(min_top1=0.85))
    c = answer["m1"]
    assert (c.checkpoint, c.backend, c.precision) == ("small", "compile", "fp32")
    assert "--backend compile --precision fp32 --batch 128" in c.command and "--threads 2" in c.command


def test_lower_bar_takes_the_int8_cell():
    c = recommend([("results/m1/sweep-a.json", _results(CELLS))], Query(min_top1=0.84))["m1"]
    assert (c.backend, c.precision) == ("onnxrt", "int8")


def test_jpeg_bar_and_batch_and_disturbed():
    res = [("results/m1/sweep-a.json", _results(CELLS))]
    c = recommend(res, Query(min_top1=0.9, min_top1_jpeg=0.921))["m1"]
    assert (c.checkpoint, c.backend) == ("big", "eager")
    assert recommend(res, Query(min_top1=0.85, batch=1))["m1"] is None
    c = recommend(res, Query(min_top1=0.85, include_disturbed=True))["m1"]
    assert (c.backend, c.precision) == ("eager", "bf16")


def test_machines_are_never_mixed():
    slow = _results([_cell("big", "eager", "fp32", 500, 0.95)])
    fast = _results([_cell("big", "eager", "fp32", 5_000, 0.95)])
    answer = recommend([("results/slow/sweep-a.json", slow), ("results/fast/sweep-a.json", fast)], Query(0.9))
    assert answer["slow"].images_per_s == 500 and answer["fast"].images_per_s == 5_000


def test_where_no_cell_meets_the_bars_the_nearest_on_each_bar_are_named():
    # A JPEG bar: the most accurate cell that meets it, and the most JPEG-robust that meets the top-1 bar.
    accurate, robust = _cell("acc", "eager", "fp32", 500, 0.942, jpeg=0.86), _cell("rob", "eager", "fp32", 400, 0.93, jpeg=0.915)
    pair = [("results/m1/sweep-a.json", _results([accurate, robust]))]
    near = closest(pair, Query(min_top1=0.94, min_top1_jpeg=0.91))["m1"]
    assert [(n.meets, n.choice.checkpoint) for n in near] == [("top1_jpeg75", "rob"), ("top1", "acc")]
    res = [("results/m1/sweep-a.json", _results(CELLS))]
    near = closest(res, Query(min_top1=0.936, min_top1_jpeg=0.93))["m1"]   # only the top-1 bar is met
    assert [(n.meets, n.choice.backend, n.choice.top1_jpeg75) for n in near] == [("top1", "eager", 0.921)]
    # Neither bar met by any cell, or no JPEG bar: the most accurate cell; of equal top-1s the fastest.
    tied = _results([*CELLS, _cell("big", "compile", "fp32", 2_000, 0.936, jpeg=0.921)])
    for q in (Query(min_top1=0.99), Query(min_top1=0.99, min_top1_jpeg=0.99)):
        (n,) = closest([("results/m1/sweep-a.json", tied)], q)["m1"]
        assert (n.meets, n.choice.backend, n.choice.top1) == ("", "compile", 0.936)
    # After the nearest, each faster cell down to one point under the missed bar: what relaxing it buys.
    near = closest([("results/m1/sweep-a.json", tied)], Query(min_top1=0.94))["m1"]
    assert [(n.choice.backend, n.choice.precision, n.choice.top1) for n in near] == [
        ("compile", "fp32", 0.936), ("onnxrt", "int8", 0.935)]   # not eager fp32 (slower), not small (too far)
    # The cells recommend would not read are not offered either (subset-scored, disturbed, failed, other batch).
    near = closest(res, Query(min_top1=0.99, batch=128))["m1"]
    assert [n.choice.top1 for n in near] == [0.936]
    assert closest(res, Query(min_top1=0.85, batch=1))["m1"] == []       # nothing measured at that batch
    assert closest(res, Query(min_top1=0.85))["m1"] == []                 # a cell meets it: nothing to offer


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cifar_speed", "recommend", *args], capture_output=True, text=True)


def test_cli_json_and_exit_codes(tmp_path):
    path = tmp_path / "m1" / "sweep-a.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_results(CELLS)))
    r = _cli("--min-top1", "85", "--results", str(path), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["answer"]["m1"]
    assert (got["backend"], got["precision"]) == ("compile", "fp32")
    missed = _cli("--min-top1", "99", "--min-top1-jpeg", "92.1", "--results", str(path))
    assert missed.returncode == 1   # nothing meets it; the nearest is named, with its command
    lines = " ".join(missed.stdout.split())
    assert ("with JPEG-75 top-1 >= 92.1%, the most accurate (then each faster cell down to 1 point under the top-1 "
            "bar): big eager fp32, 2 threads — 1,000 img/s, 128.000 ms per batch; top-1 93.60%, JPEG-75 92.10%") in lines
    assert "reproduce: cifar-speed bench big --backend eager" in lines
    near = json.loads(_cli("--min-top1", "99", "--results", str(path), "--json").stdout)
    assert near["answer"]["m1"] is None and [(n["meets"], n["backend"]) for n in near["closest"]["m1"]] == [("", "eager")]
    bad = _cli("--min-top1", "850", "--results", str(path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_gpu_machine_is_answered_from_its_cuda_cells_with_the_command_that_reproduces_them():
    fast = Cell(**{**_cell("fast_tta", "compile", "bf16", 100_000, 0.942), "device": "cuda", "threads": 16,
                   "runner": {"mode": "reduce-overhead"}})
    slow = Cell(**{**_cell("fast_tta", "eager", "fp32", 30_000, 0.942), "device": "cuda", "threads": 16})
    res = _results([fast.to_dict(), slow.to_dict()])
    res["models"]["fast_tta"] = {**_real()["models"]["fast"], "checkpoint": "results/checkpoints/fast.json"}
    c = recommend([("results/gpu/sweep-a.json", res)], Query(min_top1=0.94))["gpu"]
    assert (c.backend, c.precision, c.device, c.variant) == ("compile", "bf16", "cuda", "reduce-overhead")
    # The row is the fast checkpoint viewed as fast_tta: the command names the view, its compile mode,
    # and no thread count (not an axis on a GPU).
    assert c.command == ("cifar-speed bench fast_tta --backend compile --precision bf16 --batch 128 --device cuda "
                         "--option compile.mode=reduce-overhead")
    assert c.label() == "fast_tta compile bf16 (reduce-overhead) on cuda"
    assert recommend([("results/gpu/sweep-a.json", res)], Query(min_top1=0.94, device="cpu"))["gpu"] is None


def test_an_answer_from_weights_retrained_since_says_so_with_todays_top1():
    """The cell still answers (its speed is the shipped network's) but names the checkpoint shipped now,
    whose weights it did not score; a view (fast_tta) is judged by its checkpoint (fast)."""
    from cifar_speed.recommend import shipped_weights

    res = _results(CELLS)
    timed = res["models"]["big"]["weights_sha256"]
    now = shipped_weights({"big": {"weights_sha256": "f" * 64, "test_accuracy": 0.941, "test_accuracy_jpeg75": 0.93}})
    c = recommend([("results/m1/sweep-a.json", res)], Query(min_top1=0.93), now)["m1"]
    assert c.checkpoint == "big" and c.top1 == 0.935
    assert (c.shipped_now.name, c.shipped_now.top1, c.shipped_now.top1_jpeg75) == ("big", 0.941, 0.93)
    assert json.loads(json.dumps(c.to_dict()))["shipped_now"]["weights_sha256"] == "f" * 64
    # Today's weights, as stored or as trained (an fp16 copy's source), or nothing shipped by that name: no flag.
    for sidecars in ({"big": {"weights_sha256": timed}},
                     {"big": {"weights_sha256": "f" * 64, "shipping": {"source_weights_sha256": timed}}},
                     {"other": {"weights_sha256": "f" * 64}}):
        assert recommend([("results/m1/sweep-a.json", res)], Query(min_top1=0.93), shipped_weights(sidecars))["m1"].shipped_now is None
    view = _results([_cell("fast_tta", "eager", "fp32", 1_000, 0.94)])
    view["models"]["fast_tta"] = {**_real()["models"]["fast"]}
    flagged = recommend([("results/m1/sweep-a.json", view)], Query(min_top1=0.93), now | shipped_weights(
        {"fast": {"weights_sha256": "e" * 64}}))["m1"]
    assert flagged.shipped_now.name == "fast"


def test_cli_names_the_shipped_checkpoint_an_answer_no_longer_describes(tmp_path):
    path = tmp_path / "m1" / "sweep-a.json"
    path.parent.mkdir()
    res = _results([_cell("frontier_l", "eager", "fp32", 1_000, 0.915)])
    res["models"]["frontier_l"] = {**_real()["models"]["fast"], "weights_sha256": "0" * 64}   # not what is shipped
    path.write_text(json.dumps(res))
    r = _cli("--min-top1", "90", "--results", str(path))
    assert r.returncode == 0, r.stderr
    assert "earlier weights: frontier_l was retrained after this run (now top-1" in " ".join(r.stdout.split())


def test_cli_takes_a_machine_folder_for_its_sweep_files(tmp_path):
    path = tmp_path / "m1" / "sweep-a.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_results(CELLS)))
    (tmp_path / "m1" / "seeds.json").write_text("{}")   # not a sweep file: not read
    by_folder = _cli("--min-top1", "85", "--results", str(path.parent), "--json")
    assert by_folder.returncode == 0, by_folder.stderr
    assert json.loads(by_folder.stdout)["answer"] == json.loads(_cli("--min-top1", "85", "--results", str(path), "--json").stdout)["answer"]
    (tmp_path / "empty").mkdir()
    empty = _cli("--min-top1", "85", "--results", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no sweep-*.json, no bench-*.json" in empty.stderr and "Traceback" not in empty.stderr


def _index(root, *entries):
    (root / ANSWERS_INDEX).write_text(json.dumps({"format": ANSWERS_FORMAT, "files": list(entries)}))


def _machine_folders(root):
    """m1: a run the index names, a faster repeat of it that it does not, the user's own unnamed run;
    m2: only a probe the index does not name."""
    for name, ips in (("m1/sweep-a.json", 1_000), ("m1/sweep-a-2.json", 9_000), ("m1/bench-20261207-080000.json", 2_000),
                      ("m2/sweep-probe.json", 5_000)):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(json.dumps(_results([_cell("big", "eager", "fp32", ips, 0.95)])))


def test_the_default_reads_the_files_the_readme_answers_from_and_the_users_own_runs(tmp_path):
    _machine_folders(tmp_path)
    read = lambda: [f.relative_to(tmp_path).as_posix() for f in default_results_files([tmp_path])]  # noqa: E731
    # Without an index, a folder is read for every sweep-*.json, as before the index existed.
    assert read() == ["m1/sweep-a-2.json", "m1/sweep-a.json", "m1/bench-20261207-080000.json", "m2/sweep-probe.json"]
    _index(tmp_path, "m1/sweep-a.json")
    assert read() == ["m1/sweep-a.json", "m1/bench-20261207-080000.json"]   # not the lucky repeat, not the probe
    by_folder = _cli("--min-top1", "90", "--results", str(tmp_path / "m1"), "--json")
    assert by_folder.returncode == 0, by_folder.stderr
    assert json.loads(by_folder.stdout)["answer"]["m1"]["images_per_s"] == 2_000   # the user's run is faster
    probe_only = _cli("--min-top1", "90", "--results", str(tmp_path / "m2"))
    assert probe_only.returncode == 2 and "none named in" in probe_only.stderr and "Traceback" not in probe_only.stderr


def test_a_results_folder_of_machine_folders_is_read_as_the_default_reads_it(tmp_path):
    _machine_folders(tmp_path)
    answer = lambda *args: json.loads(_cli("--min-top1", "90", *args, "--json").stdout)["answer"]  # noqa: E731
    every = [str(f) for f in default_results_files([tmp_path])]
    assert answer("--results", str(tmp_path)) == answer("--results", *every)   # without an index: each machine
    _index(tmp_path, "m1/sweep-a.json")
    indexed = answer("--results", str(tmp_path))
    assert set(indexed) == {"m1"} and indexed["m1"]["images_per_s"] == 2_000


@pytest.mark.parametrize("entry", ["../m1/sweep-a.json", "/etc/passwd", "m1/../../x.json", "m1/sub/x.json", "m1/x.txt",
                                   "m1/link.json", "m1/missing.json", 7])
def test_an_index_is_refused_for_an_entry_outside_a_machine_folder_a_link_or_a_missing_file(tmp_path, entry):
    _machine_folders(tmp_path)
    (tmp_path / "m1" / "link.json").symlink_to(tmp_path / "m1" / "sweep-a.json")
    _index(tmp_path, "m1/sweep-a.json", entry)
    with pytest.raises(CifarSpeedError) as err:
        default_results_files([tmp_path])
    assert "\n" not in str(err.value) and str(tmp_path / ANSWERS_INDEX) in str(err.value)
    r = _cli("--min-top1", "90", "--results", str(tmp_path / "m1"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_unreadable_index_is_one_line(tmp_path):
    _machine_folders(tmp_path)
    for text in ("{", json.dumps({"format": "other", "files": []}), json.dumps([1])):
        (tmp_path / ANSWERS_INDEX).write_text(text)
        with pytest.raises(CifarSpeedError, match="answers.json"):
            default_results_files([tmp_path])
