"""`cifar-speed compare OLD.json NEW.json [--fail-on images_per_s:-5%]`: what changed between two runs.

Cells are matched by (model, backend, precision, batch, mode, threads, memory format). For each
metric the change is (new - old) / old, and it is *inside the noise* when the two runs' trial ranges
overlap (min-max of the trial medians, or of the paired ratios for the speed-up): neither run can
tell the two apart, as hyperfine and pyperf refuse to call such a difference a change. A cell
without a recorded range (files written before trials, or cells of one call) has unknown noise and
its change counts as real.

`--fail-on METRIC:PCT` (repeatable) makes a change past PCT in the bad direction, outside the noise,
a regression: exit status 1. A negative PCT is a floor (images_per_s:-5%, speedup_vs_eager_fp32:-5%),
a positive one a ceiling (median_ms:+5%). Both files may also be pytest-benchmark's
--benchmark-json output of bench/ (report.load_results reads either).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CifarSpeedError

# metric -> (what a run's Cell gives as (value, [low, high]), higher is better)
METRICS = ("images_per_s", "speedup_vs_eager_fp32", "median_ms")
HIGHER_IS_BETTER = {"images_per_s": True, "speedup_vs_eager_fp32": True, "median_ms": False}
SHORT = {"images_per_s": "img/s", "speedup_vs_eager_fp32": "x eager", "median_ms": "p50 ms"}


def cell_name(key: tuple) -> str:
    """'cnn onnxrt fp32 b128 2t' (+ layout, + mode when not device): a matched cell on one line."""
    model, backend, precision, batch, mode, threads, layout = key
    return " ".join(str(x) for x in (model, backend, precision, layout, f"b{batch}", f"{threads}t" if threads else None,
                                     mode if mode != "device" else None) if x)


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare two bench results files cell by cell, with their noise")
    p.add_argument("old", metavar="OLD.json", help="the reference run (cifar-speed bench or pytest-benchmark JSON)")
    p.add_argument("new", metavar="NEW.json", help="the run to judge")
    p.add_argument("--fail-on", action="append", default=[], metavar="METRIC:PCT",
                   help=f"exit 1 when a cell's METRIC ({', '.join(METRICS)}) moves past PCT in the bad direction, "
                        "outside both runs' noise, e.g. images_per_s:-5%% or median_ms:+5%% (repeatable)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Threshold:
    metric: str
    fraction: float        # signed: -0.05 = fail below -5 %, +0.05 = fail above +5 %

    def breached(self, change: float) -> bool:
        return change < self.fraction if self.fraction < 0 else change > self.fraction

    def text(self) -> str:
        return f"{self.metric}:{self.fraction * 100:+g}%"


def parse_fail_on(text: str) -> Threshold:
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*:\s*([+-]?\d+(?:\.\d+)?)\s*%?\s*", str(text))
    if not m or m.group(1) not in METRICS:
        raise CifarSpeedError(f"--fail-on {text!r}: expected METRIC:PCT with METRIC one of {', '.join(METRICS)} "
                              "(e.g. images_per_s:-5%)")
    fraction = float(m.group(2)) / 100
    if fraction == 0:
        raise CifarSpeedError(f"--fail-on {text!r}: a 0 % threshold fails on any change; give a signed percentage")
    worse_is_down = HIGHER_IS_BETTER[m.group(1)]
    if (fraction > 0) == worse_is_down:
        raise CifarSpeedError(f"--fail-on {text!r}: for {m.group(1)} a regression is a "
                              f"{'fall' if worse_is_down else 'rise'}; use a {'negative' if worse_is_down else 'positive'} percentage")
    return Threshold(m.group(1), fraction)


@dataclass(frozen=True)
class Reading:
    """One metric of one cell in one run: its value and the range its trials spanned (None: unknown)."""
    value: float
    low: float | None
    high: float | None


def readings(cell) -> dict[str, Reading]:
    out = {}
    if cell.images_per_s:
        lo, hi = cell.images_per_s_range or (None, None)
        out["images_per_s"] = Reading(cell.images_per_s, lo, hi)
    if cell.speedup_vs_eager_fp32 and not cell.baseline:
        lo, hi = cell.speedup_range or (None, None)
        out["speedup_vs_eager_fp32"] = Reading(cell.speedup_vs_eager_fp32, lo, hi)
    lat = cell.latency or {}
    if lat.get("median_ms"):
        trial = lat.get("trial_median_ms") or {}
        out["median_ms"] = Reading(lat["median_ms"], trial.get("min"), trial.get("max"))
    return out


@dataclass(frozen=True)
class Change:
    key: tuple
    metric: str
    old: Reading
    new: Reading

    @property
    def fraction(self) -> float:
        return (self.new.value - self.old.value) / self.old.value

    @property
    def inside_noise(self) -> bool | None:
        """True when the runs' ranges overlap; None when either range was not recorded."""
        if None in (self.old.low, self.old.high, self.new.low, self.new.high):
            return None
        return self.old.low <= self.new.high and self.new.low <= self.old.high

    def regression(self, thresholds: list[Threshold]) -> Threshold | None:
        if self.inside_noise:
            return None
        return next((t for t in thresholds if t.metric == self.metric and t.breached(self.fraction)), None)


def _ok_cells(results: dict) -> dict:
    from ..sweep import cells_of

    return {c.key: c for c in cells_of(results) if c.status == "ok"}


def compare(old: dict, new: dict) -> tuple[list[Change], list[tuple], list[tuple]]:
    """(changes of every matched cell and metric, keys only in old, keys only in new)."""
    a, b = _ok_cells(old), _ok_cells(new)
    changes = []
    for key in a.keys() & b.keys():
        ra, rb = readings(a[key]), readings(b[key])
        changes += [Change(key, m, ra[m], rb[m]) for m in METRICS if m in ra and m in rb]
    order = {k: i for i, k in enumerate(list(a) + [k for k in b if k not in a])}
    changes.sort(key=lambda c: (order[c.key], METRICS.index(c.metric)))
    return changes, [k for k in a if k not in b], [k for k in b if k not in a]


def _range(r: Reading, fmt: str) -> str:
    return f"{fmt.format(r.value)} [{fmt.format(r.low)}-{fmt.format(r.high)}]" if r.low is not None else fmt.format(r.value) + " [?]"


def _verdict(c: Change, thresholds: list[Threshold]) -> str:
    hit = c.regression(thresholds)
    if hit:
        return f"REGRESSION ({hit.text()})"
    if c.inside_noise:
        return "inside the noise"
    better = (c.fraction > 0) == HIGHER_IS_BETTER[c.metric]
    return ("better" if better else "worse") + ("" if c.inside_noise is False else " (noise unknown)")


def table(changes: list[Change], thresholds: list[Threshold]):
    from rich.table import Table
    from rich.text import Text

    # Text, not markup: "[980-1020]" is data, not a style tag.
    t = Table(title=Text("per cell: old and new [range over trials]; change; inside the noise = the ranges overlap"))
    for col in ("cell", "metric", "old", "new", "change", "verdict"):
        t.add_column(col, justify="right" if col in ("old", "new", "change") else "left", no_wrap=col != "verdict")
    fmts = {"images_per_s": "{:,.0f}", "speedup_vs_eager_fp32": "{:.2f}x", "median_ms": "{:.3f}"}
    for c in changes:
        row = [cell_name(c.key), SHORT[c.metric], _range(c.old, fmts[c.metric]), _range(c.new, fmts[c.metric]),
               f"{c.fraction * 100:+.1f}%", _verdict(c, thresholds)]
        t.add_row(*(Text(x) for x in row))
    return t


def largest_changes(changes: list[Change]) -> list[str]:
    """The largest |change| per metric and batch size: what a run-to-run acceptance bound reads."""
    worst: dict = {}
    for c in changes:
        k = (c.metric, c.key[3])
        if k not in worst or abs(c.fraction) > abs(worst[k].fraction):
            worst[k] = c
    return [f"largest |change| of {m} at batch {b}: {c.fraction * 100:+.1f}% ({cell_name(c.key)})"
            for (m, b), c in sorted(worst.items())]


def run(args) -> int:
    from .. import report
    from ..console import make_console

    thresholds = [parse_fail_on(t) for t in args.fail_on]
    old, new = report.load_results(args.old), report.load_results(args.new)
    changes, only_old, only_new = compare(old, new)
    if not changes:
        raise CifarSpeedError(f"no cell of {args.old} matches a cell of {args.new} "
                              "(matched by model, backend, precision, batch, mode, threads, layout)")
    console = make_console()
    console.print(table(changes, thresholds))
    for key in only_old:
        console.print(f"only in {args.old}: {cell_name(key)}", markup=False)
    for key in only_new:
        console.print(f"only in {args.new}: {cell_name(key)}", markup=False)
    for line in largest_changes(changes):
        console.print(line, markup=False)
    noisy = sum(1 for c in changes if c.inside_noise)
    regressions = [c for c in changes if c.regression(thresholds)]
    console.print(f"{len({c.key for c in changes})} cells matched, {len(changes)} metric changes: {noisy} inside the "
                  f"noise, {len(changes) - noisy} outside it or with unknown noise; "
                  f"{len(regressions)} regression(s)" + (f" beyond {', '.join(t.text() for t in thresholds)}"
                                                        if thresholds else " (no --fail-on given)"))
    return 1 if regressions else 0
