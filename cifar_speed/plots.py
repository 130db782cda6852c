"""The report's PNG figures, drawn to one visual grammar so they can be read side by side.

  colour   backend x precision, the same in every figure (a hue per backend, darker = wider type)
  marker   model, the same in every figure of one call (assigned over every results file given)
  hollow   eager in channels_last layout, where a run made the layout an axis
  red ring a disturbed cell (another process shared the CPU while it was timed)
  whisker  from a point down (or up) to the same cell's top-1 on the JPEG-compressed test set, where
           it was scored on one: the vertical drop is what compression costs that artifact

File names say what a figure shows: machine, measure, batch size, input mode and, for the figures of
one results file, its models. Width is kept under MAX_WIDTH_PX; labels are moved apart by adjustText.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

from .fileio import atomic_path

MAX_WIDTH_PX = 1600
DPI = 120
# A sequential colormap per backend; precisions take fixed positions on it (fp32 darkest).
BACKEND_CMAPS = {"eager": "Greys", "compile": "Blues", "onnxrt": "Oranges", "openvino": "Purples", "trt": "Greens"}
SPARE_CMAPS = ("Reds", "YlOrBr", "PuRd", "BuGn", "RdPu")   # backends added later, picked by a hash of the name
PRECISION_SHADE = {"fp32": 0.95, "bf16": 0.6, "fp16": 0.45, "int8": 0.3}
# The most distinct first: matplotlib's filled shapes, stars given as (points, 1, angle) and card
# suits drawn from the font, with the round-looking hexagons and octagon last (a three-point star
# read as a triangle and a heptagon as a circle, so neither is here), so that every shipped model
# keeps a shape of its own; each takes a face colour, because a hollow face means channels_last.
# A flag and a flower come before them since the AMX machine's overview, 21 models, drew its 21st
# (mobilenetv3_small) as the octagon, which no reader tells from cnn's circle.
MARKERS = (*"os^Dv*XP<>pd", (4, 1, 0), (6, 1, 0), (8, 1, 0), "$\u2665$", "$\u2663$", "$\u2660$", (4, 1, 45),
           "h", "$\u2691$", "$\u273f$", *"8H")


def colour(backend: str, precision: str) -> tuple:
    """The RGBA colour of a backend x precision: a pure function of the two names."""
    from matplotlib import colormaps

    cmap = BACKEND_CMAPS.get(backend) or SPARE_CMAPS[zlib.crc32(backend.encode()) % len(SPARE_CMAPS)]
    shade = PRECISION_SHADE.get(precision, 0.3 + (zlib.crc32(precision.encode()) % 5) / 10)
    return colormaps[cmap](shade)


def combo_key(c: dict) -> tuple[str, str, str]:
    """(backend, precision, variant) of a cell: what a colour (and hollowness) stands for. The variant
    names options away from their default ('channels_last', 'fold_bn=off'), '' for none, so that two
    variants of one backend x precision are two series, not one drawn over the other."""
    variant = c.get("variant_options") or ""
    if not variant and c["backend"] == "eager" and c.get("memory_format") == "channels_last":
        variant = "channels_last"   # files from before backend options
    return c["backend"], c["precision"], variant


def combo_label(key: tuple[str, str, str]) -> str:
    return f"{key[0]} {key[1]}" + (f" {key[2]}" if key[2] else "")


def combo_order(keys) -> list[tuple[str, str, str]]:
    """Legend order: backends as registered here, then precisions fp32 -> int8."""
    backends = list(BACKEND_CMAPS)
    precisions = list(PRECISION_SHADE)
    return sorted(set(keys), key=lambda k: (backends.index(k[0]) if k[0] in backends else len(backends), k[0],
                                            precisions.index(k[1]) if k[1] in precisions else len(precisions), k[2]))


def marker_map(models) -> dict[str, str | tuple]:
    """One marker per model, in name order (so a call's figures agree); repeats only past 22 models."""
    return {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(sorted(set(models)))}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def models_tag(models: list[str]) -> str:
    """The models of a figure for its file name: all of them up to three, else two and a count."""
    names = sorted(set(models))
    return "-".join(names) if len(names) <= 3 else "-".join(names[:2]) + f"-and-{len(names) - 2}-more"


# -- figures --------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def jpeg_top1(c: dict) -> tuple[str, float] | None:
    """('JPEG-75', top-1 in %) of a cell scored on a JPEG-compressed test set as well, else None."""
    for key, value in sorted((c.get("accuracy") or {}).items()):
        quality = re.fullmatch(r"top1_jpeg(\d+)", key)
        if quality and value is not None:
            return f"JPEG-{quality.group(1)}", value * 100
    return None


def _whisker_points(cells: list[dict]) -> tuple[list[float], list[float]]:
    """Where the whiskers end, for label placement to keep clear of them as of the points."""
    ends = [(c["images_per_s"], jpeg_top1(c)[1]) for c in cells if jpeg_top1(c)]
    return [x for x, _ in ends], [y for _, y in ends]


def _scatter(ax, cells: list[dict], markers: dict[str, str | tuple]) -> None:
    """Every cell as a point: x images/s, y top-1, colour backend x precision, marker model; a
    whisker in the cell's colour to its JPEG top-1, ended by a short bar, where it has one."""
    scored = [c for c in cells if jpeg_top1(c)]
    if scored:
        xs = [c["images_per_s"] for c in scored]
        ends = [jpeg_top1(c)[1] for c in scored]
        tints = [colour(*combo_key(c)[:2]) for c in scored]
        ax.vlines(xs, ends, [c["accuracy"]["top1"] * 100 for c in scored], colors=tints, linewidths=0.9, zorder=2)
        ax.scatter(xs, ends, marker="_", s=36, c=tints, linewidths=1.2, zorder=2)
    for c in cells:
        key = combo_key(c)
        face = "none" if key[2] else colour(key[0], key[1])
        ax.scatter(c["images_per_s"], c["accuracy"]["top1"] * 100, marker=markers[c["model"]], s=42,
                   facecolors=face, edgecolors=colour(key[0], key[1]) if key[2] else "black", linewidths=0.5,
                   zorder=3)
    shaky = [c for c in cells if c.get("disturbed")]
    if shaky:
        ax.scatter([c["images_per_s"] for c in shaky], [c["accuracy"]["top1"] * 100 for c in shaky], s=130,
                   facecolors="none", edgecolors="red", linewidths=0.9, zorder=4)


def _legends(ax, cells: list[dict], markers: dict[str, str | tuple]):
    """Two legends outside the axes: colours (backend x precision) and markers (models). Returns the
    first: an axes keeps only one legend of its own, the other is an extra artist savefig must see."""
    from matplotlib.lines import Line2D

    combos = [Line2D([], [], linestyle="none", marker="o", markersize=7,
                     markerfacecolor="none" if k[2] else colour(k[0], k[1]),
                     markeredgecolor=colour(k[0], k[1]) if k[2] else "black", markeredgewidth=0.5,
                     label=combo_label(k)) for k in combo_order(combo_key(c) for c in cells)]
    jpeg = next((jpeg_top1(c)[0] for c in cells if jpeg_top1(c)), None)
    if jpeg:
        combos.append(Line2D([], [], linestyle="none", marker="$\u22a5$", markersize=8, markerfacecolor="0.3",
                             markeredgecolor="0.3", label=f"whisker: top-1 on {jpeg}"))
    if any(c.get("disturbed") for c in cells):
        combos.append(Line2D([], [], linestyle="none", marker="o", markersize=10, markerfacecolor="none",
                             markeredgecolor="red", label="disturbed"))
    shown = sorted({c["model"] for c in cells})
    models = [Line2D([], [], linestyle="none", marker=markers[m], markersize=7, markerfacecolor="white",
                     markeredgecolor="black", label=m) for m in shown]
    first = ax.legend(handles=combos, title="backend precision", fontsize=7, title_fontsize=7,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    # Beside the first legend, not under it: with many models and backends the two columns of
    # entries are taller than the axes and a legend below overlapped the first. The legend's extent
    # needs only a renderer, not a draw of every point of the figure.
    extent = first.get_window_extent(ax.figure.canvas.get_renderer())
    right = extent.transformed(ax.transAxes.inverted()).x1
    ax.legend(handles=models, title="model", fontsize=7, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(right + 0.01, 1.0))
    return first


def _speed_tick(x: float, _pos=None) -> str:
    if x >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    return f"{x / 1000:g}k" if x >= 1000 else f"{x:g}"


def _accuracy_axes(ax, batch: int, mode: str, jpeg: str | None = None) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    # Labels at 1, 2 and 5 of each decade, as 2k / 10k: matplotlib's default labels every minor tick
    # of a narrow range in 10^x notation, and they run into each other.
    ax.xaxis.set_major_formatter(FuncFormatter(_speed_tick))
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(FuncFormatter(_speed_tick))
    ax.set_xlabel(f"images/s at batch {batch}, {mode}-resident inputs (log scale)")
    ax.set_ylabel("top-1 on the test set (%)" + (f"\nwhiskers: on the {jpeg} test set" if jpeg else ""))
    ax.grid(True, alpha=0.3)


# adjustText stops after 1 s of wall time unless told a number of iterations: a figure then depended on
# how busy the machine was (the same results drew labels elsewhere, and the PNG changed bytes).
LABEL_ITERATIONS = 300


def accuracy_vs_throughput(cells: list[dict], markers: dict[str, str | tuple], title: str, path: Path,
                           batch: int, mode: str, front: list[dict] | None = None) -> Path:
    """The scatter; with `front`, the Pareto front as a step line and each model's fastest point on
    it labelled (labels pushed apart, with a leader line, by adjustText)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.2))
    _scatter(ax, cells, markers)
    _accuracy_axes(ax, batch, mode, next((jpeg_top1(c)[0] for c in cells if jpeg_top1(c)), None))
    if front:
        from adjustText import adjust_text

        xs = [c["images_per_s"] for c in front]
        ys = [c["accuracy"]["top1"] * 100 for c in front]
        ax.step(xs, ys, where="post", color="black", linewidth=0.8, zorder=2)
        texts = []
        for model in dict.fromkeys(c["model"] for c in front):
            c = max((c for c in front if c["model"] == model), key=lambda c: c["images_per_s"])
            texts.append(ax.text(c["images_per_s"], c["accuracy"]["top1"] * 100,
                                 f"{model}: {c['backend']} {c['precision']}", fontsize=7, zorder=5,
                                 bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.6}))
        ax.autoscale_view()
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi * 2.5)   # room on the right for the fastest points' labels
        ends_x, ends_y = _whisker_points(cells)
        adjust_text(texts, ax=ax, x=[c["images_per_s"] for c in cells] + ends_x,
                    y=[c["accuracy"]["top1"] * 100 for c in cells] + ends_y,
                    expand=(1.3, 1.6), min_arrow_len=0, iter_lim=LABEL_ITERATIONS,
                    arrowprops={"arrowstyle": "-", "color": "0.3", "linewidth": 0.6})
    ax.set_title(title, fontsize=10)
    return save(fig, path, extra=[_legends(ax, cells, markers)])


def speedup_bars(cells: list[dict], title: str, path: Path, batch: int) -> Path:
    """Speed-up over eager fp32 per model (groups) and backend x precision (bars, fixed colours)."""
    plt = _pyplot()
    models = sorted({c["model"] for c in cells})
    keys = [k for k in combo_order(combo_key(c) for c in cells)]
    width = 0.8 / max(1, len(keys))
    fig, ax = plt.subplots(figsize=(min(12.5, max(6.0, 0.16 * len(models) * len(keys) + 2)), 4.5))
    for j, key in enumerate(keys):
        xs, ys = [], []
        for i, m in enumerate(models):
            c = next((c for c in cells if c["model"] == m and combo_key(c) == key), None)
            if c and c.get("speedup_vs_eager_fp32"):
                xs.append(i + (j - (len(keys) - 1) / 2) * width)
                ys.append(c["speedup_vs_eager_fp32"])
        ax.bar(xs, ys, width, color="white" if key[2] else colour(key[0], key[1]), edgecolor=colour(key[0], key[1])
               if key[2] else "black", linewidth=0.4, hatch="///" if key[2] else None, label=combo_label(key))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(models)), models, rotation=30 if len(models) > 4 else 0, ha="right" if len(models) > 4 else "center",
                  fontsize=8)
    ax.set_ylabel(f"speed-up over eager fp32 (batch {batch})")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(title="backend precision", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, path)


def save(fig, path: Path, extra: list | None = None) -> Path:
    """PNG, atomically, at DPI or less so that the figure with its outside legends fits MAX_WIDTH_PX."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    # Given extra artists replace matplotlib's default list rather than adding to it: pass both.
    extra = fig.get_default_bbox_extra_artists() + list(extra or [])
    box = fig.get_tightbbox(fig.canvas.get_renderer(), bbox_extra_artists=extra)
    # + savefig's pad_inches on both sides, and 3 % for text that measures wider at another dpi
    dpi = min(DPI, 0.97 * MAX_WIDTH_PX / (box.width + 0.2))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", bbox_extra_artists=extra, format="png")
    plt.close(fig)
    return path


# -- what the report draws --------------------------------------------------------------------------

def _with_top1(cells: list[dict]) -> list[dict]:
    return [c for c in cells if "top1" in (c.get("accuracy") or {})]


def per_results_file(results_list: list[dict], out_dir) -> list[Path]:
    """For each results file and input mode, at its largest batch: accuracy vs throughput, and
    speed-up over eager fp32. Markers are shared by every file of the call."""
    from .report import _largest_batch_cells, _modes

    out_dir = Path(out_dir)
    markers = marker_map(c["model"] for r in results_list for c in r["cells"] if "model" in c)
    written: list[Path] = []
    for results in results_list:
        machine = results["provenance"]["machine"]
        for mode in _modes(results):
            cells = _largest_batch_cells(results, mode)
            if not cells:
                continue
            batch = cells[0]["batch_size"]
            models = sorted({c["model"] for c in cells})
            tag = slug(f"b{batch}-{mode}-{models_tag(models)}")
            backends = slug("-".join(sorted({c["backend"] for c in cells})))
            acc_path = _unused(out_dir / f"{slug(machine)}-accuracy-vs-throughput-{tag}.png", written, backends)
            written.append(accuracy_vs_throughput(
                _with_top1(cells), markers, f"accuracy vs throughput: {_listed(models)}\n{machine}, batch {batch}, "
                f"{mode}-resident inputs", acc_path, batch, mode))
            speed_path = _unused(out_dir / f"{slug(machine)}-speedup-over-eager-fp32-{tag}.png", written, backends)
            written.append(speedup_bars(cells, f"speed-up over eager fp32, {machine}, batch {batch}, {mode}-resident inputs",
                                        speed_path, batch))
    return written


def overview(results_list: list[dict], out_dir, mode: str = "device", machine: str | None = None) -> Path | None:
    """Every model x backend x precision of one machine at its largest batch, with the Pareto front
    (which model + backend + precision to ship for a given speed) of the cells not marked `superseded`
    (weights no longer shipped: shown, never a choice). None for several machines: their speeds do not
    belong on one axis; `machine` names the one machine of files whose provenance names differ (a
    results folder holds one machine; its first files predate the CPU-tier suffix of today's names)."""
    from .report import _ok, pareto_front

    machines = {machine} if machine else {r["provenance"]["machine"] for r in results_list}
    cells = [c for r in results_list for c in _ok(r, mode)]
    if len(machines) != 1 or not cells:
        return None
    machine = machines.pop()
    batch = max(c["batch_size"] for c in cells)
    cells = _with_top1([c for c in cells if c["batch_size"] == batch])
    if not cells:
        return None
    choices = [c for c in cells if not c.get("superseded")]
    points = pareto_front([(c["images_per_s"], c["accuracy"]["top1"] * 100) for c in choices])
    front = [next(c for c in choices if (c["images_per_s"], c["accuracy"]["top1"] * 100) == p) for p in points]
    markers = marker_map(c["model"] for r in results_list for c in r["cells"] if "model" in c)
    path = Path(out_dir) / f"{slug(machine)}-accuracy-vs-throughput-b{batch}-{mode}-overview.png"
    return accuracy_vs_throughput(cells, markers, f"every model x backend x precision, {machine}: "
                                  f"batch {batch}, {mode}-resident inputs; line: the Pareto front", path, batch,
                                  mode, front=sorted(front, key=lambda c: c["images_per_s"]))


def _listed(models: list[str]) -> str:
    return ", ".join(models) if len(models) <= 8 else f"{len(models)} models (see the legend)"


def _unused(path: Path, taken: list[Path], hint: str) -> Path:
    """Two results files of the same models must not overwrite each other's figures: the second is
    named by what tells it apart, its backends (`hint`), and only a true re-run gets a number."""
    if path not in taken:
        return path
    path = path.with_name(f"{path.stem}-{hint}{path.suffix}")
    n, candidate = 2, path
    while candidate in taken:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
