"""`cifar-speed compare OLD.json NEW.json [--fail-on images_per_s:-5%]`: what changed between two runs.

Cells are matched by (model, backend, precision, batch, mode, threads, memory format, backend options). For each
metric the change is (new - old) / old, and it is *inside the noise* when it is within NOISE_Z
standard errors of the two figures (each run's error from the spread of its own trials,
harness.relative_se: of the trial medians, or of the per-round ratios for the speed-up), as pyperf
refuses to call a difference it cannot tell from chance a change. Files whose cells carry no trials
fall back to overlap of the two runs' ranges; a cell without either has unknown noise and its
change counts as real. (The ranges alone no longer serve: with the adaptive trial count a noisy
cell's min-max widens the more trials it gets, while its median's error shrinks.)

Host speed: runs made with a canary (harness.Canary, a fixed matmul timed between trials) also carry
each cell's time in canary units. On a shared VM the whole host gets 10-30 % slower or faster over
half an hour, which moves every cell of a run together; dividing by the canary takes that out. Where
both runs have it, the verdict and --fail-on judge the host-normalised change (the raw change is
printed beside it); `--raw` judges the raw figures instead.

Host state around one cell: the canary is read right after each trial, so a cell that leaves work
running past its trials (another runtime's threads, queues) or that ran in a state the rest of its
run did not, reads a slower canary around its own trials than the run as a whole. compare names the
cells whose canary offset (around-the-cell / run median - 1) differs between the runs by more than
CANARY_SHIFT_SHOWN: their change may be that state, not the code (shown, never divided out).

`--fail-on METRIC:PCT` (repeatable) makes a change past PCT in the bad direction, outside the noise,
a regression: exit status 1. A negative PCT is a floor (images_per_s:-5%, speedup_vs_eager_fp32:-5%),
a positive one a ceiling (median_ms:+5%). Both files may also be pytest-benchmark's
--benchmark-json output of bench/ (report.load_results reads either).

`--within METRIC[@bBATCH]:PCT` (repeatable) is a reproducibility bound instead: two runs of the same
cells must agree within PCT either way, noise or not (issue 11's acceptance: `--within
speedup_vs_eager_fp32:7% --within images_per_s@b128:7% --within images_per_s@b1:10%`). compare counts
the figures past their bound, host-normalised where both cells have it (raw with --raw) and raw
beside it, and exits 1 when any judged figure is past.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import CifarSpeedError

# metric -> (what a run's Cell gives as (value, [low, high]), higher is better)
METRICS = ("images_per_s", "speedup_vs_eager_fp32", "median_ms")
HIGHER_IS_BETTER = {"images_per_s": True, "speedup_vs_eager_fp32": True, "median_ms": False}
SHORT = {"images_per_s": "img/s", "speedup_vs_eager_fp32": "x eager", "median_ms": "p50 ms"}
# A change within this many standard errors of the two runs' medians is noise (~0.3 % of changes
# would pass it by chance: a 174-metric comparison may show one).
NOISE_Z = 3.0


def cell_name(key: tuple) -> str:
    """'cnn onnxrt fp32 b128 2t' (+ options, layout, mode when not device): a matched cell on one line."""
    model, backend, precision, batch, mode, threads, layout, options = key
    return " ".join(str(x) for x in (model, backend, options, precision, layout, f"b{batch}",
                                     f"{threads}t" if threads else None, mode if mode != "device" else None) if x)


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare two bench results files cell by cell, with their noise")
    p.add_argument("old", metavar="OLD.json", help="the reference run (cifar-speed bench or pytest-benchmark JSON)")
    p.add_argument("new", metavar="NEW.json", help="the run to judge")
    p.add_argument("--fail-on", action="append", default=[], metavar="METRIC:PCT",
                   help=f"exit 1 when a cell's METRIC ({', '.join(METRICS)}) moves past PCT in the bad direction, "
                        "outside both runs' noise, e.g. images_per_s:-5%% or median_ms:+5%% (repeatable)")
    p.add_argument("--within", action="append", default=[], metavar="METRIC[@bBATCH]:PCT",
                   help="exit 1 when a figure of METRIC (at batch BATCH, or any) differs between the runs by more "
                        "than PCT either way, noise or not: a run-to-run reproducibility bound, e.g. "
                        "speedup_vs_eager_fp32:7%% or images_per_s@b1:10%% (repeatable)")
    p.add_argument("--raw", action="store_true",
                   help="judge the raw figures even where both runs measured the host's speed (canary)")
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
class Bound:
    """Two runs' figures of `metric` (at `batch`, or every batch) agree within +-fraction."""
    metric: str
    batch: int | None
    fraction: float

    def text(self) -> str:
        return f"{self.metric}{f'@b{self.batch}' if self.batch else ''}:{self.fraction * 100:g}%"


def parse_within(text: str) -> Bound:
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*(?:@\s*b(\d+))?\s*:\s*\+?(\d+(?:\.\d+)?)\s*%?\s*", str(text))
    if not m or m.group(1) not in METRICS:
        raise CifarSpeedError(f"--within {text!r}: expected METRIC[@bBATCH]:PCT with METRIC one of {', '.join(METRICS)} "
                              "(e.g. images_per_s@b128:7%)")
    if float(m.group(3)) == 0 or (m.group(2) is not None and int(m.group(2)) == 0):
        raise CifarSpeedError(f"--within {text!r}: the bound and the batch must be positive")
    return Bound(m.group(1), int(m.group(2)) if m.group(2) else None, float(m.group(3)) / 100)


@dataclass(frozen=True)
class Reading:
    """One metric of one cell in one run: its value, the range its trials spanned and the relative
    standard error of the value (None: unknown); `host`: the same metric from trial medians divided
    by the host's canary (None: no canary)."""
    value: float
    low: float | None
    high: float | None
    host: "Reading | None" = None
    rse: float | None = None


def _rse(values, quantile: int = 50) -> float | None:
    from ..harness import finite, relative_se

    return finite(relative_se(list(values), quantile))


def _ratio_rse(cell, baseline, normalized: bool) -> float | None:
    if baseline is None:
        return None
    base, own = baseline.trial_medians(normalized), cell.trial_medians(normalized)
    return _rse(base[r] / v for r, v in own.items() if r in base)


def _host_readings(cell, baseline) -> dict[str, Reading]:
    """images/s and p50 in canary units (their ratios between runs are what matters, not the unit)."""
    from ..harness import FIGURE_QUANTILE

    units = (cell.latency or {}).get("host_normalized")
    out = {}
    if units:
        b, trials = cell.batch_size, cell.trial_medians(True).values()
        per_process = _per_process(cell, "host_normalized_median")
        rse = _rse(per_process or trials)
        figure = units.get("lower_quartile")   # the figure images/s comes from (files before it: the median)
        if figure and figure > 0:
            per_process = _per_process(cell, "host_normalized_lower_quartile")
            figure_rse = _rse(per_process) if per_process else _rse(trials, FIGURE_QUANTILE)
        else:
            figure, figure_rse = units["median"], rse
        out["images_per_s"] = Reading(b / figure, b / units["max"], b / units["min"], rse=figure_rse)
        out["median_ms"] = Reading(units["median"], units["min"], units["max"], rse=rse)
    if cell.speedup_host_normalized and not cell.baseline:
        lo, hi = cell.speedup_host_normalized_range or (None, None)
        per_process = _per_process(cell, "speedup_host_normalized")
        out["speedup_vs_eager_fp32"] = Reading(cell.speedup_host_normalized, lo, hi,
                                               rse=_rse(per_process) if per_process else _ratio_rse(cell, baseline, True))
    return out


def _per_process(cell, field: str) -> list[float] | None:
    """A merged cell's (bench --processes) per-process values of `field`, which its figure is the
    median of; None for one process or a file from before they were recorded."""
    values = [p.get(field) for p in cell.processes or [] if isinstance(p, dict)]
    ok = len(values) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
    return values if ok else None


def readings(cell, baseline=None) -> dict[str, Reading]:
    """The cell's metrics; `baseline` (its eager fp32 cell of the same run) gives the speed-up's error."""
    host = _host_readings(cell, baseline)
    rse = cell.median_rse()
    out = {}
    if cell.images_per_s:
        lo, hi = cell.images_per_s_range or (None, None)
        out["images_per_s"] = Reading(cell.images_per_s, lo, hi, host.get("images_per_s"), cell.figure_rse())
    if cell.speedup_vs_eager_fp32 and not cell.baseline:
        lo, hi = cell.speedup_range or (None, None)
        recorded = cell.recorded_speedup_rse()
        out["speedup_vs_eager_fp32"] = Reading(cell.speedup_vs_eager_fp32, lo, hi, host.get("speedup_vs_eager_fp32"),
                                               recorded if recorded is not None else _ratio_rse(cell, baseline, False))
    lat = cell.latency or {}
    if lat.get("median_ms"):
        trial = lat.get("trial_median_ms") or {}
        out["median_ms"] = Reading(lat["median_ms"], trial.get("min"), trial.get("max"), host.get("median_ms"), rse)
    return out


def _change(old: Reading, new: Reading) -> float:
    return (new.value - old.value) / old.value


def _inside_noise(old: Reading, new: Reading) -> bool | None:
    """Within NOISE_Z standard errors where both readings have one; else whether the ranges overlap;
    None when neither is known."""
    if old.rse is not None and new.rse is not None:
        return abs(math.log(new.value / old.value)) <= NOISE_Z * math.hypot(old.rse, new.rse)
    if None in (old.low, old.high, new.low, new.high):
        return None
    return old.low <= new.high and new.low <= old.high


@dataclass(frozen=True)
class Change:
    key: tuple
    metric: str
    old: Reading
    new: Reading
    raw: bool = False      # judge the raw figures even where both runs have host-normalised ones

    @property
    def host_normalized(self) -> bool:
        """Whether the verdict uses the canary-normalised readings."""
        return not self.raw and self.old.host is not None and self.new.host is not None

    @property
    def fraction(self) -> float:
        """The raw change of the metric, (new - old) / old."""
        return _change(self.old, self.new)

    @property
    def host_fraction(self) -> float | None:
        return _change(self.old.host, self.new.host) if self.old.host and self.new.host else None

    @property
    def judged_fraction(self) -> float:
        return self.host_fraction if self.host_normalized else self.fraction

    @property
    def inside_noise(self) -> bool | None:
        """Whether the judged readings cannot be told apart (_inside_noise); None when unknown."""
        if self.host_normalized:
            return _inside_noise(self.old.host, self.new.host)
        return _inside_noise(self.old, self.new)

    def regression(self, thresholds: list[Threshold]) -> Threshold | None:
        if self.inside_noise:
            return None
        return next((t for t in thresholds if t.metric == self.metric and t.breached(self.judged_fraction)), None)


def _ok_cells(results: dict) -> dict:
    from ..sweep import cells_of

    return {c.key: c for c in cells_of(results) if c.status == "ok"}


def _baseline(cell, cells: dict):
    """The run's eager fp32 NCHW cell that the cell's speed-up divides (async cells: the device mode)."""
    model, _, _, batch, mode, threads, _, _ = cell.key
    return cells.get((model, "eager", "fp32", batch, "device" if mode == "async" else mode, threads, "nchw", None))


def compare(old: dict, new: dict, raw: bool = False) -> tuple[list[Change], list[tuple], list[tuple]]:
    """(changes of every matched cell and metric, keys only in old, keys only in new)."""
    a, b = _ok_cells(old), _ok_cells(new)
    changes = []
    for key in a.keys() & b.keys():
        ra, rb = readings(a[key], _baseline(a[key], a)), readings(b[key], _baseline(b[key], b))
        changes += [Change(key, m, ra[m], rb[m], raw) for m in METRICS if m in ra and m in rb]
    order = {k: i for i, k in enumerate(list(a) + [k for k in b if k not in a])}
    changes.sort(key=lambda c: (order[c.key], METRICS.index(c.metric)))
    return changes, [k for k in a if k not in b], [k for k in b if k not in a]


def bound_for(change: Change, bounds: list[Bound]) -> Bound | None:
    """The bound that judges a figure: one for its batch first, else one for every batch."""
    mine = [b for b in bounds if b.metric == change.metric and b.batch in (change.key[3], None)]
    return min(mine, key=lambda b: b.batch is None, default=None)


@dataclass(frozen=True)
class BoundsCheck:
    """Which figures of a comparison lie past their --within bound: judged as the verdicts are
    (host-normalised where both cells have it) and raw."""
    judged: int
    past: list          # (Change, Bound) past the bound as judged
    past_raw: list      # the same, raw

    def text(self) -> str:
        return (f"within bounds: {self.judged - len(self.past)} of {self.judged} figures as judged, "
                f"{self.judged - len(self.past_raw)} of {self.judged} raw")


def check_bounds(changes: list[Change], bounds: list[Bound]) -> BoundsCheck:
    bounded = [(c, b) for c in changes if (b := bound_for(c, bounds)) is not None]
    return BoundsCheck(len(bounded), [(c, b) for c, b in bounded if abs(c.judged_fraction) > b.fraction],
                       [(c, b) for c, b in bounded if abs(c.fraction) > b.fraction])


def _range(r: Reading, fmt: str) -> str:
    if r.low is None or r.high is None:   # a range with an end missing (a hand-edited file) is unknown
        return fmt.format(r.value) + " [?]"
    return f"{fmt.format(r.value)} [{fmt.format(r.low)}-{fmt.format(r.high)}]"


def _verdict(c: Change, thresholds: list[Threshold]) -> str:
    hit = c.regression(thresholds)
    if hit:
        return f"REGRESSION ({hit.text()})"
    if c.inside_noise:
        return "inside the noise"
    better = (c.judged_fraction > 0) == HIGHER_IS_BETTER[c.metric]
    return ("better" if better else "worse") + ("" if c.inside_noise is False else " (noise unknown)")


def table(changes: list[Change], thresholds: list[Threshold]):
    from rich.table import Table
    from rich.text import Text

    # Text, not markup: "[980-1020]" is data, not a style tag.
    t = Table(title=Text("per cell: old and new [range over trials]; change, raw and host-normalised (divided by "
                         f"the canary; judged where both runs have it); inside the noise = within {NOISE_Z:g} standard "
                         "errors of the two figures (runs without trials: the ranges overlap)"))
    for col in ("cell", "metric", "old", "new", "change", "host-norm.", "verdict"):
        t.add_column(col, justify="left" if col in ("cell", "metric", "verdict") else "right", no_wrap=col != "verdict")
    fmts = {"images_per_s": "{:,.0f}", "speedup_vs_eager_fp32": "{:.2f}x", "median_ms": "{:.4g}"}
    for c in changes:
        host = f"{c.host_fraction * 100:+.1f}%" if c.host_fraction is not None else "-"
        row = [cell_name(c.key), SHORT[c.metric], _range(c.old, fmts[c.metric]), _range(c.new, fmts[c.metric]),
               f"{c.fraction * 100:+.1f}%", host, _verdict(c, thresholds)]
        t.add_row(*(Text(x) for x in row))
    return t


def largest_changes(changes: list[Change]) -> list[str]:
    """The largest |change| per metric and batch size, raw and host-normalised: what a run-to-run
    acceptance bound reads."""
    lines = []
    for label, value in (("raw", lambda c: c.fraction), ("host-normalised", lambda c: c.host_fraction)):
        worst: dict = {}
        for c in changes:
            if value(c) is None:
                continue
            k = (c.metric, c.key[3])
            if k not in worst or abs(value(c)) > abs(value(worst[k])):
                worst[k] = c
        lines += [f"largest |change| of {m} at batch {b} ({label}): {value(c) * 100:+.1f}% ({cell_name(c.key)})"
                  for (m, b), c in sorted(worst.items())]
    return lines


def allocator_of(results: dict) -> str:
    """The allocator a run's cells were timed under (bench --allocator); files written before the
    setting existed ran with the C library's defaults."""
    record = (results.get("harness") or {}).get("allocator") or {}
    return record.get("allocator", "system")


def figure_of(results: dict) -> str:
    """Which statistic a run's img/s and speed-ups are (resultsfile.figure_quantile)."""
    from ..resultsfile import figure_quantile, quantile_words

    quantile = figure_quantile(results)
    if quantile == 50:
        return "medians of the trial medians and per-round ratios"
    return f"{quantile_words(quantile)}s of the trial medians"


# Around quiet cells the canary reads within ~0.1 % of its run's median (committed pairs); the
# OpenVINO async cells of a failed pair read +0.3 to +1.7 % in the run where they were slow.
CANARY_SHIFT_SHOWN = 0.005


def canary_offsets(results: dict) -> dict:
    """Per cell (key): how much slower (+) the canary read around its trials than the run's median
    reading, from the recorded trials; cells without a reading for every trial are left out."""
    import statistics

    cells = {k: c for k, c in _ok_cells(results).items() if c.trials and all(t.get("canary_ms") for t in c.trials)}
    if not cells:
        return {}
    run = statistics.median(t["canary_ms"] for c in cells.values() for t in c.trials)
    return {k: statistics.median(t["canary_ms"] for t in c.trials) / run - 1 for k, c in cells.items()}


def canary_shifts(old: dict, new: dict) -> list[tuple[tuple, float, float]]:
    """(key, old offset, new offset) of the cells whose canary offset moved by more than
    CANARY_SHIFT_SHOWN between the runs, the largest move first."""
    a, b = canary_offsets(old), canary_offsets(new)
    moved = [(k, a[k], b[k]) for k in a.keys() & b.keys() if abs(b[k] - a[k]) > CANARY_SHIFT_SHOWN]
    return sorted(moved, key=lambda m: -abs(m[2] - m[1]))


def slow_around(results: dict) -> list[tuple[tuple, float]]:
    """(key, offset) of the cells around whose trials the canary read more than CANARY_SHIFT_SHOWN
    slower than the run's median, the slowest first."""
    return sorted(((k, o) for k, o in canary_offsets(results).items() if o > CANARY_SHIFT_SHOWN), key=lambda x: -x[1])


def slow_around_line(results: dict) -> str | None:
    """For one run (bench's summary): the cells slow_around names, on one line, or None."""
    slow = slow_around(results)
    if not slow:
        return None
    shown = ", ".join(f"{cell_name(k)} {o * 100:+.1f}%" for k, o in slow[:3])
    return (f"host state around {len(slow)} cell(s): the canary read more than {CANARY_SHIFT_SHOWN:.1%} slower right "
            f"after their trials than the run's median (largest: {shown}): they left work running past their trials, "
            "or ran in a state the rest of the run did not; compare a second run before trusting their figures")


def _print_canary_shifts(console, old: dict, new: dict) -> None:
    moved = canary_shifts(old, new)
    if not moved:
        return
    shown = ", ".join(f"{cell_name(k)} {o * 100:+.1f}% -> {n * 100:+.1f}%" for k, o, n in moved[:3])
    console.print(f"host state around cells: the canary around the trials of {len(moved)} cell(s) read differently "
                  f"against its run in the two runs (by more than {CANARY_SHIFT_SHOWN:.1%}): they left work running past "
                  f"their trials, or ran in a state the rest of their run did not, in one run; their change may be "
                  f"that state, not the code. Largest: {shown}", markup=False)


def host_speed_change(old: dict, new: dict, reading: str = "canary_ms") -> float | None:
    """How much slower (+) or faster (-) the host ran in the new run by one of its readings (the
    canary's `canary_ms`, the wake-up probe's `wake_us`): the median over cells of each cell's median
    reading; None when either run lacks it."""
    import statistics

    def median_reading(results):
        readings = [c.latency[reading]["median"] for c in _ok_cells(results).values()
                    if (c.latency or {}).get(reading)]
        return statistics.median(readings) if readings else None

    a, b = median_reading(old), median_reading(new)
    return (b - a) / a if a and b else None


def run(args) -> int:
    from .. import report
    from ..console import make_console

    thresholds = [parse_fail_on(t) for t in args.fail_on]
    bounds = [parse_within(t) for t in args.within]
    old, new = report.load_results(args.old), report.load_results(args.new)
    changes, only_old, only_new = compare(old, new, raw=args.raw)
    if not changes:
        raise CifarSpeedError(f"no cell of {args.old} matches a cell of {args.new} "
                              "(matched by model, backend, backend options, precision, batch, mode, threads, layout)")
    console = make_console()
    console.print(table(changes, thresholds))
    for key in only_old:
        console.print(f"only in {args.old}: {cell_name(key)}", markup=False)
    for key in only_new:
        console.print(f"only in {args.new}: {cell_name(key)}", markup=False)
    for line in largest_changes(changes):
        console.print(line, markup=False)
    host = host_speed_change(old, new)
    if host is not None:
        judged = "raw figures (--raw)" if args.raw else "host-normalised figures where both cells have them"
        console.print(f"host speed: the canary took {host * 100:+.1f}% per call in the new run; verdicts judge the "
                      f"{judged}", markup=False)
    _print_canary_shifts(console, old, new)
    wake = host_speed_change(old, new, "wake_us")
    if wake is not None:
        console.print(f"host wake-up: a hand-off to a sleeping thread and back took {wake * 100:+.1f}% in the new run "
                      "(shown, not divided out: cells handing work between threads pay it per call)", markup=False)
    if figure_of(old) != figure_of(new):
        console.print(f"statistics: {args.old}'s figures are {figure_of(old)}, {args.new}'s {figure_of(new)}: "
                      "img/s and speed-ups moved for that reason too (tools/remerge.py recomputes a bench --processes "
                      "file from its trials with today's)", markup=False)
    if allocator_of(old) != allocator_of(new):
        console.print(f"allocator: {allocator_of(old)} in {args.old}, {allocator_of(new)} in {args.new} (bench "
                      "--allocator): eager and compile cells also moved for that reason", markup=False)
    noisy = sum(1 for c in changes if c.inside_noise)
    regressions = [c for c in changes if c.regression(thresholds)]
    console.print(f"{len({c.key for c in changes})} cells matched, {len(changes)} metric changes: {noisy} inside the "
                  f"noise, {len(changes) - noisy} outside it or with unknown noise; "
                  f"{len(regressions)} regression(s)" + (f" beyond {', '.join(t.text() for t in thresholds)}"
                                                        if thresholds else " (no --fail-on given)"))
    past = _print_bounds(console, changes, bounds) if bounds else []
    return 1 if regressions or past else 0


def _noise_word(c: Change) -> str:
    return {True: "inside the noise", False: "outside the noise"}.get(c.inside_noise, "noise unknown")


def _print_bounds(console, changes: list[Change], bounds: list[Bound]) -> list:
    checked = check_bounds(changes, bounds)
    console.print(f"{checked.text()} ({', '.join(b.text() for b in bounds)}, either way)", markup=False)
    for c, b in checked.past:
        host = f", host-normalised {c.host_fraction * 100:+.1f}%" if c.host_normalized else ""
        console.print(f"past its bound: {cell_name(c.key)} {SHORT[c.metric]} raw {c.fraction * 100:+.1f}%{host} "
                      f"(bound {b.text()}; {_noise_word(c)})", markup=False)
    return checked.past
