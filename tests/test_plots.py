"""Figures: fixed colours per backend x precision, a marker per model, labels apart, names that say
what they show, at most ~1,600 px wide."""
from __future__ import annotations

import struct
from itertools import combinations

import pytest

from cifar_speed import plots, report

from test_report import _cell, synthetic_results

MODELS = ["lightnn", "lightnn_kd", "lightnn_cosine", "lightnn_kd_tuned", "lightnn_regressor", "cnn", "fast", "mlp"]
COMBOS = [("eager", "fp32"), ("eager", "bf16"), ("compile", "fp32"), ("compile", "bf16"), ("compile", "int8"),
          ("onnxrt", "fp32"), ("onnxrt", "int8")]


def crowded_results() -> dict:
    """Five near-identical models in one cluster (the lightnn family), each a step of the Pareto
    front (a little faster, a little less accurate than the one before), every backend x precision."""
    r = synthetic_results()
    cells = []
    for i, model in enumerate(MODELS):
        base = 10000.0 * (1 + 0.05 * i) if i < 5 else 300.0 * i
        top1 = 0.71 - 0.002 * i if i < 5 else 0.6 + 0.04 * i
        for j, (backend, precision) in enumerate(COMBOS):
            cells.append(_cell(model, backend, precision, 128, base * (1 + 0.3 * j + 0.01 * i), top1, base))
    r["cells"] = cells
    return r


def png_width(path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_colours_are_fixed_and_distinct():
    pairs = [(b, p) for b in plots.BACKEND_CMAPS for p in plots.PRECISION_SHADE]
    colours = [plots.colour(b, p) for b, p in pairs]
    assert len(set(colours)) == len(pairs)
    assert plots.colour("onnxrt", "int8") == colours[pairs.index(("onnxrt", "int8"))]   # a pure function
    assert plots.colour("newbackend", "fp32") == plots.colour("newbackend", "fp32")


def test_variants_of_one_backend_and_precision_are_separate_series(tmp_path):
    """`--option onnxrt.fold_bn=off,on` gives two cells per backend x precision: two series with their
    own legend labels (the non-default one named by its option, as eager channels_last always was),
    and the figures are drawn with both."""
    plain = _cell("fast", "onnxrt", "int8", 128, 3000.0, 0.93, 800.0)
    folded = {**_cell("fast", "onnxrt", "int8", 128, 3600.0, 0.93, 800.0), "variant_options": "fold_bn=off"}
    layout = {**_cell("fast", "eager", "fp32", 128, 900.0, 0.93, 800.0), "memory_format": "channels_last"}
    keys = plots.combo_order(plots.combo_key(c) for c in (plain, folded, layout))
    assert [plots.combo_label(k) for k in keys] == ["eager fp32 channels_last", "onnxrt int8", "onnxrt int8 fold_bn=off"]
    r = synthetic_results()
    r["cells"] = [_cell("fast", "eager", "fp32", 128, 800.0, 0.93, 800.0), plain, folded]
    paths = report.plot([r], tmp_path)
    assert paths and all(p.is_file() for p in paths)


def test_one_marker_per_model_whatever_the_order():
    markers = plots.marker_map(MODELS)
    assert len(set(markers.values())) == len(MODELS)
    assert plots.marker_map(reversed(MODELS)) == markers


def test_the_round_looking_shapes_come_last():
    # The AMX machine's overview draws 21 models: the shipped ones and the earlier weights of four of them.
    shapes = list(map(str, plots.marker_map([f"model{i:02d}" for i in range(len(plots.MARKERS))]).values()))
    assert len(set(shapes)) == len(shapes) and shapes[-2:] == ["8", "H"]


def test_every_shipped_checkpoint_has_a_shape_of_its_own():
    from cifar_speed.checkpoint import shipped_checkpoints

    names = [path.stem for path in shipped_checkpoints()]
    assert len(set(plots.marker_map(names).values())) == len(names)


def test_file_names_say_what_they_show(tmp_path):
    r = crowded_results()
    machine = plots.slug(r["provenance"]["machine"])
    names = sorted(p.name for p in report.plot([r, synthetic_results()], tmp_path))
    assert names == sorted([
        f"{machine}-accuracy-vs-throughput-b128-device-cnn-fast-and-6-more.png",
        f"{machine}-speedup-over-eager-fp32-b128-device-cnn-fast-and-6-more.png",
        f"{machine}-accuracy-vs-throughput-b128-device-cnn-fast.png",
        f"{machine}-speedup-over-eager-fp32-b128-device-cnn-fast.png"])
    overview = report.plot_overview([r], tmp_path)
    assert overview.name == f"{machine}-accuracy-vs-throughput-b128-device-overview.png"
    for p in list(tmp_path.glob("*.png")):
        assert png_width(p) <= plots.MAX_WIDTH_PX, p.name


def test_same_models_twice_do_not_overwrite(tmp_path):
    r = synthetic_results()
    eager_only = {**r, "cells": [c for c in r["cells"] if c.get("backend") == "eager"]}
    paths = report.plot([r, eager_only, r], tmp_path)
    assert len(set(paths)) == 6 and all(p.is_file() for p in paths)
    # The second file is named by its backends, not by its position; only a true re-run is numbered.
    stems = sorted(p.stem.split("cnn-fast")[1] for p in paths if "accuracy" in p.name)
    assert stems == ["", "-eager", "-eager-onnxrt"]


def test_overview_labels_do_not_overlap(tmp_path, monkeypatch):
    figures = []
    real_save = plots.save

    def keep(fig, path, extra=None):
        figures.append(fig)
        fig.canvas.draw()
        boxes = [t.get_window_extent() for t in fig.axes[0].texts]
        figures.append(boxes)
        return real_save(fig, path, extra)

    monkeypatch.setattr(plots, "save", keep)
    assert report.plot_overview([crowded_results()], tmp_path) is not None
    boxes = figures[1]
    assert len(boxes) >= 5
    for a, b in combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)


def test_overview_is_the_same_figure_on_a_busy_machine(tmp_path, monkeypatch):
    """Label placement runs a fixed number of iterations, not a time budget: a clock that races (a
    loaded machine) must not move a label, so regenerating the README leaves the PNG's bytes alone."""
    import adjustText

    first = report.plot_overview([crowded_results()], tmp_path / "idle").read_bytes()
    ticks = iter(range(0, 10**9, 10))   # every reading 10 s after the last
    monkeypatch.setattr(adjustText, "timer", lambda: next(ticks))
    assert report.plot_overview([crowded_results()], tmp_path / "busy").read_bytes() == first


def test_overview_front_leaves_out_superseded_cells(tmp_path, monkeypatch):
    """A cell of weights no longer shipped (update_readme marks it) is drawn but never on the front."""
    r = synthetic_results()
    best = max((c for c in r["cells"] if c.get("status") == "ok" and c["batch_size"] == 128), key=lambda c: c["images_per_s"])
    best["images_per_s"] *= 10
    best["accuracy"] = {**(best.get("accuracy") or {}), "top1": 0.99}
    fronts = []
    real = plots.accuracy_vs_throughput

    def keep(cells, markers, title, path, batch, mode, front=None):
        fronts.append(front)
        return real(cells, markers, title, path, batch, mode, front=front)

    monkeypatch.setattr(plots, "accuracy_vs_throughput", keep)
    name = lambda c: (c["model"], c["backend"], c["precision"], c["images_per_s"])  # noqa: E731
    assert report.plot_overview([r], tmp_path) is not None
    assert name(best) in map(name, fronts[-1])
    best["superseded"] = True
    assert report.plot_overview([r], tmp_path) is not None
    assert name(best) not in map(name, fronts[-1]) and fronts[-1]


def test_overview_of_one_folder_whose_files_name_the_machine_differently(tmp_path):
    a, b = synthetic_results(), synthetic_results()
    b["provenance"] = {**b["provenance"], "machine": b["provenance"]["machine"] + "-avx512bf16"}
    assert report.plot_overview([a, b], tmp_path) is None          # two machines by their names
    path = report.plot_overview([a, b], tmp_path, machine="box-avx512bf16")
    assert path is not None and path.name.startswith("box-avx512bf16-accuracy-vs-throughput")


@pytest.mark.parametrize("n_models", [1, 15])
def test_width_stays_under_the_limit(tmp_path, n_models):
    r = synthetic_results()
    r["cells"] = [_cell(f"model_with_a_long_name_{i}", b, p, 128, 100.0 * (i + 1) * (j + 1), 0.5 + i / 100, 100.0)
                  for i in range(n_models) for j, (b, p) in enumerate(COMBOS)]
    for p in report.plot([r], tmp_path) + [report.plot_overview([r], tmp_path)]:
        assert png_width(p) <= plots.MAX_WIDTH_PX, (p.name, png_width(p))


def test_speed_ticks_read_as_people_write_them():
    assert [plots._speed_tick(x) for x in (500, 2000, 500_000, 1_000_000, 2_000_000)] == \
        ["500", "2k", "500k", "1M", "2M"]


def test_jpeg_top1_is_drawn_as_a_whisker_from_the_clean_point(tmp_path, monkeypatch):
    """Issue 15: the accuracy-vs-speed figure shows both top-1s: each cell scored on the JPEG set gets
    a vertical segment from its clean top-1 to its JPEG top-1, at its own throughput; others get none."""
    r = synthetic_results()
    ok = [c for c in r["cells"] if c.get("status") == "ok" and c["batch_size"] == 128]
    for c in ok[:2]:
        c["accuracy"] = {**c["accuracy"], "top1_jpeg75": c["accuracy"]["top1"] - 0.05}
    axes = []
    real_save = plots.save

    def keep(fig, path, extra=None):
        axes.append(fig.axes[0])
        return real_save(fig, path, extra)

    monkeypatch.setattr(plots, "save", keep)
    assert report.plot_overview([r], tmp_path) is not None
    from matplotlib.collections import LineCollection

    (whiskers,) = [col for col in axes[0].collections if isinstance(col, LineCollection)]
    segments = sorted(tuple(map(tuple, s.round(6))) for s in whiskers.get_segments())
    expected = sorted(((c["images_per_s"], round(c["accuracy"]["top1_jpeg75"] * 100, 6)),
                       (c["images_per_s"], round(c["accuracy"]["top1"] * 100, 6))) for c in ok[:2])
    assert segments == expected
    assert "JPEG-75" in axes[0].get_ylabel()
    assert plots.jpeg_top1(ok[2]) is None and plots.jpeg_top1(ok[0])[0] == "JPEG-75"
