"""compare: cells matched across runs, changes judged against both runs' noise, exit codes."""
from __future__ import annotations

import json

import pytest

from cifar_speed import sweep
from cifar_speed.cli import main
from cifar_speed.commands import compare as C
from cifar_speed.provenance import provenance


def _cell(backend, ips, lo, hi, batch=128, threads=2, speedup=None, sp_range=None, **kw):
    c = sweep.Cell(model="cnn", architecture="cnn", backend=backend, precision="fp32", device="cpu", batch_size=batch,
                   mode="device", threads=threads, memory_format="nchw" if backend == "eager" else None,
                   baseline=backend == "eager", images_per_s=ips, images_per_s_range=[lo, hi],
                   latency={"median_ms": batch / ips * 1e3,
                            "trial_median_ms": {"min": batch / hi * 1e3, "max": batch / lo * 1e3, "iqr": 0.0}},
                   speedup_vs_eager_fp32=speedup if backend != "eager" else 1.0,
                   speedup_range=sp_range if backend != "eager" else [1.0, 1.0], accuracy={"top1": 0.8}, **kw)
    return c.to_dict()


def _results(cells) -> dict:
    return {"schema": sweep.SCHEMA, "created": "2026-01-01T00:00:00+00:00", "provenance": provenance(),
            "harness": {"accuracy_images": 10000, "modes": ["device"]}, "peak": {}, "models": {}, "skipped": [],
            "cells": cells}


def _write(tmp_path, name, cells) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(_results(cells)))
    return str(path)


def _run(capsys, *argv):
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def old(tmp_path):
    return _write(tmp_path, "old", [_cell("eager", 1000, 980, 1020),
                                    _cell("onnxrt", 2000, 1960, 2040, speedup=2.0, sp_range=[1.95, 2.05])])


def test_same_run_is_all_inside_the_noise(capsys, old):
    code, out, _ = _run(capsys, old, old, "--fail-on", "images_per_s:-5%")
    assert code == 0
    assert "REGRESSION" not in out and "inside the noise" in out
    assert "2 cells matched" in out and "0 regression(s) beyond images_per_s:-5%" in out


def test_regression_outside_the_noise_fails(capsys, tmp_path, old):
    new = _write(tmp_path, "new", [_cell("eager", 1000, 980, 1020),
                                   _cell("onnxrt", 1600, 1580, 1620, speedup=1.6, sp_range=[1.55, 1.65])])
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%")
    assert code == 1 and "REGRESSION (images_per_s:-5%)" in out and "-20.0%" in out
    code, out, _ = _run(capsys, old, new)                       # no threshold: a report, not a verdict
    assert code == 0 and "worse" in out and "REGRESSION" not in out
    code, _, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-25%")   # within the allowed drop
    assert code == 0
    code, out, _ = _run(capsys, old, new, "--fail-on", "speedup_vs_eager_fp32:-10%")
    assert code == 1 and "REGRESSION (speedup_vs_eager_fp32:-10%)" in out


def test_a_drop_inside_either_runs_noise_does_not_fail(capsys, tmp_path, old):
    # -20 % at the median, but the new run's trials spanned up to 2,100 img/s: the runs overlap.
    new = _write(tmp_path, "new", [_cell("eager", 1000, 980, 1020),
                                   _cell("onnxrt", 1600, 1200, 2100, speedup=1.6, sp_range=[1.2, 2.1])])
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%", "--fail-on", "median_ms:+5%")
    assert code == 0 and "inside the noise" in out and "REGRESSION" not in out


def test_latency_threshold_is_a_ceiling(capsys, tmp_path, old):
    new = _write(tmp_path, "new", [_cell("eager", 1000, 980, 1020), _cell("onnxrt", 1600, 1580, 1620, speedup=1.6,
                                                                          sp_range=[1.55, 1.65])])
    code, out, _ = _run(capsys, old, new, "--fail-on", "median_ms:+10%")
    assert code == 1 and "REGRESSION (median_ms:+10%)" in out


def test_cells_match_by_threads_too(capsys, tmp_path, old):
    new = _write(tmp_path, "new", [_cell("eager", 1000, 980, 1020, threads=1),
                                   _cell("onnxrt", 2000, 1960, 2040, threads=1, speedup=2.0, sp_range=[1.9, 2.1])])
    code, _, err = _run(capsys, old, new)
    assert code == 2 and "no cell of" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("spec,needle", [
    ("images_per_s", "expected METRIC:PCT"), ("fps:-5%", "expected METRIC:PCT"),
    ("images_per_s:+5%", "use a negative percentage"), ("median_ms:-5%", "use a positive percentage"),
    ("images_per_s:0%", "0 % threshold"),
])
def test_bad_fail_on_is_one_line(capsys, old, spec, needle):
    code, _, err = _run(capsys, old, old, "--fail-on", spec)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_missing_or_foreign_file_is_one_line(capsys, tmp_path, old):
    code, _, err = _run(capsys, old, str(tmp_path / "missing.json"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    code, _, err = _run(capsys, old, str(bad))
    assert code == 2 and "not a cifar-speed results file" in err


def test_unknown_noise_counts_as_real():
    old = sweep.Cell.from_dict({**_cell("onnxrt", 2000, 1960, 2040), "images_per_s_range": None})
    new = sweep.Cell.from_dict(_cell("onnxrt", 1800, 1790, 1810))
    (change,) = [C.Change(old.key, "images_per_s", C.readings(old)["images_per_s"], C.readings(new)["images_per_s"])]
    assert change.inside_noise is None and change.fraction == pytest.approx(-0.1)
    assert change.regression([C.parse_fail_on("images_per_s:-5%")]).metric == "images_per_s"


def test_compare_reads_pytest_benchmark_json(capsys, tmp_path):
    def case(backend, median):
        return {"name": backend, "extra_info": {"model": "cnn", "backend": backend, "precision": "fp32", "batch_size": 128,
                                                "device": "cpu"},
                "stats": {"median": median, "q1": median * 0.99, "q3": median * 1.01, "min": median, "max": median,
                          "mean": median, "rounds": 30}}
    prov = provenance()
    doc = {"machine_info": {"node": "x"}, "datetime": "2026", "benchmarks": [case("eager", 0.128), case("onnxrt", 0.064)],
           "cifar_speed": {"provenance": prov}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc))
    doc["benchmarks"] = [case("eager", 0.128), case("onnxrt", 0.080)]
    b.write_text(json.dumps(doc))
    code, out, _ = _run(capsys, str(a), str(b), "--fail-on", "images_per_s:-5%")
    assert code == 1 and "REGRESSION" in out and "-20.0%" in out


def _with_canary(cell: dict, canary_ms: float) -> dict:
    """The cell as a run with a canary records it: trial medians in canary units beside the raw ones."""
    lat = cell["latency"]
    units = {k: lat["trial_median_ms"][k] / canary_ms for k in ("min", "max")}
    lat["host_normalized"] = {"median": lat["median_ms"] / canary_ms, **units}
    lat["canary_ms"] = {"median": canary_ms, "min": canary_ms, "max": canary_ms}
    if not cell["baseline"]:
        cell["speedup_host_normalized"] = cell["speedup_vs_eager_fp32"]
        cell["speedup_host_normalized_range"] = cell["speedup_range"]
    return cell


def test_a_slower_host_is_not_a_regression_where_both_runs_read_the_canary(capsys, tmp_path):
    """Every cell 20 % slower, and the canary 25 % slower too: the host changed, not the code."""
    old = _write(tmp_path, "old", [_with_canary(_cell("eager", 1000, 980, 1020), 0.10),
                                   _with_canary(_cell("onnxrt", 2000, 1960, 2040, speedup=2.0, sp_range=[1.95, 2.05]), 0.10)])
    new = _write(tmp_path, "new", [_with_canary(_cell("eager", 800, 790, 810), 0.125),
                                   _with_canary(_cell("onnxrt", 1600, 1580, 1620, speedup=2.0, sp_range=[1.95, 2.05]), 0.125)])
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%")
    assert code == 0 and "REGRESSION" not in out
    assert "-20.0%" in out and "+0.0%" in out             # raw change beside the host-normalised one
    assert "canary took +25.0% per call" in out
    assert "largest |change| of images_per_s at batch 128 (host-normalised): +0.0%" in out
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%", "--raw")
    assert code == 1 and "REGRESSION (images_per_s:-5%)" in out


def test_the_wake_up_reading_is_shown_beside_the_canary_and_never_divides(capsys, tmp_path):
    """Runs that carry the wake-up probe print its change; the verdict still judges canary units only."""
    def with_wake(cell, wake_us):
        cell["latency"]["wake_us"] = {"median": wake_us, "min": wake_us, "max": wake_us}
        return cell

    old = _write(tmp_path, "old", [with_wake(_with_canary(_cell("onnxrt", 2000, 1960, 2040), 0.10), 40.0)])
    new = _write(tmp_path, "new", [with_wake(_with_canary(_cell("onnxrt", 1600, 1580, 1620), 0.10), 60.0)])
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%")
    assert code == 1 and "a hand-off to a sleeping thread and back took +50.0% in the new run" in out


def test_compare_names_the_cells_around_which_the_canary_read_slow_in_one_run_only(capsys, tmp_path):
    """Old run: the canary read 2 % slow around onnxrt's trials (it left work running); new run: not."""
    def with_trials(cell, canary_ms):
        cell["trials"] = [{"round": r, "n": 5, "median_ms": cell["latency"]["median_ms"], "canary_ms": canary_ms}
                          for r in range(3)]
        return cell

    def run(name, onnxrt_canary):
        return _write(tmp_path, name, [with_trials(_cell("eager", 1000, 980, 1020), 0.100),
                                       with_trials(_cell("openvino", 1000, 980, 1020, speedup=1.0, sp_range=[1.0, 1.0]), 0.100),
                                       with_trials(_cell("onnxrt", 2000, 1960, 2040, speedup=2.0, sp_range=[1.95, 2.05]),
                                                   onnxrt_canary)])

    _, out, _ = _run(capsys, run("old", 0.102), run("new", 0.100))
    out = " ".join(out.split())   # the console wraps long lines
    assert "the canary around the trials of 1 cell(s) read differently" in out
    assert "Largest: cnn onnxrt fp32 b128 2t +2.0% -> +0.0%" in out
    _, out, _ = _run(capsys, run("same1", 0.1004), run("same2", 0.100))   # 0.4 %: within what quiet cells show
    assert "host state around cells" not in out
    # One run alone (bench's summary): the cell around which the canary read slow.
    from cifar_speed.commands.compare import slow_around_line
    from cifar_speed.report import load_results

    line = slow_around_line(load_results(run("alone", 0.102)))
    assert line.startswith("host state around 1 cell(s)") and "(largest: cnn onnxrt fp32 b128 2t +2.0%)" in line
    assert slow_around_line(load_results(run("quiet", 0.1004))) is None


def test_a_regression_the_canary_does_not_explain_still_fails(capsys, tmp_path):
    old = _write(tmp_path, "old", [_with_canary(_cell("onnxrt", 2000, 1960, 2040), 0.10)])
    new = _write(tmp_path, "new", [_with_canary(_cell("onnxrt", 1600, 1580, 1620), 0.10)])   # same host speed
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%")
    assert code == 1 and "REGRESSION (images_per_s:-5%)" in out


def test_one_run_without_canary_is_judged_raw(capsys, tmp_path):
    old = _write(tmp_path, "old", [_cell("onnxrt", 2000, 1960, 2040)])
    new = _write(tmp_path, "new", [_with_canary(_cell("onnxrt", 1600, 1580, 1620), 0.125)])
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%")
    assert code == 1 and "canary took" not in out


def _trials(medians_ms, canary_ms=None):
    return [{"round": r, "n": 5, "median_ms": m, "canary_ms": canary_ms} for r, m in enumerate(medians_ms)]


def _traced(backend, medians_ms, base_medians_ms):
    """A cell of recorded trials (the adaptive runs' files): figures from the trials' median."""
    import statistics

    m = statistics.median(medians_ms)
    ratios = [b / x for b, x in zip(base_medians_ms, medians_ms)]
    return _cell(backend, 128 / m * 1e3, 128 / max(medians_ms) * 1e3, 128 / min(medians_ms) * 1e3,
                 speedup=statistics.median(ratios), sp_range=[min(ratios), max(ratios)],
                 trials=_trials(medians_ms))


def test_with_trials_the_noise_is_the_medians_standard_error_not_the_range(capsys, tmp_path):
    """Many trials of a wide spread: the ranges overlap, yet the medians are known well enough to
    see a 17 % drop (3 standard errors); the same drop from 4 trials of that spread is noise."""
    base = [10.0] * 60
    spread = [8.0, 9.0, 10.0, 11.0, 12.5] * 12
    old = _write(tmp_path, "old", [_traced("eager", base, base), _traced("onnxrt", spread, base)])
    slower = [x * 1.2 for x in spread]
    new = _write(tmp_path, "new", [_traced("eager", base, base), _traced("onnxrt", slower, base)])
    code, out, _ = _run(capsys, old, new, "--fail-on", "images_per_s:-5%")
    assert code == 1 and "REGRESSION (images_per_s:-5%)" in out
    assert C.NOISE_Z == 3.0 and "within 3 standard errors" in out
    few_old = _write(tmp_path, "few_old", [_traced("eager", base[:4], base[:4]), _traced("onnxrt", spread[:4], base[:4])])
    few_new = _write(tmp_path, "few_new", [_traced("eager", base[:4], base[:4]),
                                           _traced("onnxrt", slower[:4], base[:4])])
    code, out, _ = _run(capsys, few_old, few_new, "--fail-on", "images_per_s:-5%")
    assert code == 0 and "REGRESSION" not in out


def test_the_speed_up_error_comes_from_the_per_round_ratios_with_the_baseline():
    base = [10.0, 12.0, 9.0, 11.0, 10.0, 13.0]
    cells = {sweep.Cell.from_dict(d).key: sweep.Cell.from_dict(d)
             for d in (_traced("eager", base, base), _traced("onnxrt", [x / 2 for x in base], base))}
    cell = next(c for c in cells.values() if c.backend == "onnxrt")
    r = C.readings(cell, C._baseline(cell, cells))
    assert r["speedup_vs_eager_fp32"].rse == 0.0          # the cell moved with its baseline, round by round
    assert r["images_per_s"].rse > 0.05                    # while its own trial medians spread


def test_runs_timed_under_different_allocators_are_named(capsys, tmp_path, old):
    """A file from before bench --allocator ran with the C library's defaults; compare says when the
    two runs differ in it (it moves eager and compile cells), and says nothing when they agree."""
    doc = json.loads(open(old).read())
    doc["harness"]["allocator"] = {"allocator": "retain", "requested": "retain", "applied": True, "how": "mallopt"}
    new = tmp_path / "retained.json"
    new.write_text(json.dumps(doc))
    code, out, _ = _run(capsys, old, str(new))
    assert code == 0 and "allocator: system in" in out and "retain in" in out
    _, out, _ = _run(capsys, str(new), str(new))
    assert "allocator:" not in out


def test_runs_with_different_statistics_are_named(capsys, tmp_path, old):
    """Files from before the lower-quartile figure took medians: compare says so when the runs differ."""
    doc = json.loads(open(old).read())
    doc["harness"]["figure_quantile"] = 25
    new = tmp_path / "quartile.json"
    new.write_text(json.dumps(doc))
    code, out, _ = _run(capsys, old, str(new))
    assert code == 0 and "statistics:" in out and "lower quartiles of the trial medians" in out
    assert "medians of the trial medians and per-round ratios" in out
    _, out, _ = _run(capsys, str(new), str(new))
    assert "statistics:" not in out


def test_the_figures_error_is_the_lower_quartiles_where_the_file_says_so():
    base = [10.0, 12.0, 9.0, 11.0, 10.0, 13.0]
    medians = [5.0, 6.0, 4.0, 5.5, 5.0, 7.0]
    cell = sweep.Cell.from_dict(_traced("onnxrt", medians, base))
    from cifar_speed import harness

    assert C.readings(cell)["images_per_s"].rse == pytest.approx(harness.relative_se(medians))
    cell.latency["figure"] = "lower_quartile_ms"
    assert C.readings(cell)["images_per_s"].rse == pytest.approx(harness.relative_se(medians, 25))
    cell.latency["lower_quartile_rse"] = 0.02
    assert C.readings(cell)["images_per_s"].rse == pytest.approx(0.02)
    assert C.readings(cell)["median_ms"].rse == pytest.approx(harness.relative_se(medians))   # p50 keeps its own


def test_within_bounds_judge_every_figure_either_way_noise_or_not(capsys, tmp_path, old):
    """A reproducibility bound fails on a rise as on a fall, and even inside the noise."""
    new = _write(tmp_path, "new", [_cell("eager", 1000, 980, 1020),
                                   _cell("onnxrt", 2200, 1200, 2900, speedup=2.2, sp_range=[1.2, 2.9])])  # +10 %
    code, out, _ = _run(capsys, old, new, "--within", "images_per_s:7%")
    assert code == 1
    assert "within bounds: 1 of 2 figures as judged, 1 of 2 raw" in out
    assert "past its bound: cnn onnxrt fp32 b128 2t img/s raw +10.0% (bound images_per_s:7%; inside the noise)" in out
    code, out, _ = _run(capsys, old, new, "--within", "images_per_s:12%")
    assert code == 0 and "within bounds: 2 of 2" in out and "past its bound" not in out
    code, out, _ = _run(capsys, old, new, "--within", "speedup_vs_eager_fp32:7%")   # the speed-up rose 10 % too
    assert code == 1 and "within bounds: 0 of 1" in out


def test_a_bound_for_a_batch_overrides_the_general_one(capsys, tmp_path):
    cells = lambda ips1, ips128: [_cell("eager", ips1, ips1 * 0.98, ips1 * 1.02, batch=1),
                                  _cell("eager", ips128, ips128 * 0.98, ips128 * 1.02)]
    old, new = _write(tmp_path, "old", cells(100, 1000)), _write(tmp_path, "new", cells(92, 1000))   # b1 -8 %
    code, out, _ = _run(capsys, old, new, "--within", "images_per_s:7%", "--within", "images_per_s@b1:10%")
    assert code == 0 and "within bounds: 2 of 2" in out
    code, _, _ = _run(capsys, old, new, "--within", "images_per_s:7%")
    assert code == 1


def test_within_judges_host_normalised_figures_and_counts_raw_beside(capsys, tmp_path):
    """The host got 20 % slower and so did the cell: inside the bound as judged, past it raw."""
    old = _write(tmp_path, "old", [_with_canary(_cell("onnxrt", 2000, 1960, 2040), 0.10)])
    new = _write(tmp_path, "new", [_with_canary(_cell("onnxrt", 1600, 1580, 1620), 0.125)])
    code, out, _ = _run(capsys, old, new, "--within", "images_per_s:7%")
    assert code == 0 and "within bounds: 1 of 1 figures as judged, 0 of 1 raw" in out
    code, out, _ = _run(capsys, old, new, "--within", "images_per_s:7%", "--raw")
    assert code == 1 and "0 of 1 figures as judged" in out


@pytest.mark.parametrize("spec", ["images_per_s", "fps:7%", "images_per_s@128:7%", "images_per_s:0%",
                                  "images_per_s@b0:7%", "images_per_s:-7%"])
def test_bad_within_is_one_line(capsys, old, spec):
    code, _, err = _run(capsys, old, old, "--within", spec)
    assert code == 2 and "--within" in err and len(err.strip().splitlines()) == 1


def test_a_range_with_an_end_missing_prints_as_unknown_not_a_traceback():
    # Found by the property test on a mutated results file: images_per_s_range [low, null].
    assert C._range(C.Reading(value=3.5, low=3.1, high=None), "{:.4g}") == "3.5 [?]"
    assert C._range(C.Reading(value=3.5, low=None, high=4.0), "{:.4g}") == "3.5 [?]"
    assert C._range(C.Reading(value=3.5, low=3.1, high=4.0), "{:.4g}") == "3.5 [3.1-4]"
