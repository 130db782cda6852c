"""Which (checkpoint, backend, precision, threads) to ship: the fastest measured cell that meets an
accuracy bar on the full 10,000-image test set *in that cell*.

An int8 or bf16 cell is judged by its own top-1, never by its fp32 sibling's, so a model that loses
accuracy when quantised meets a bar only at the precision that keeps it. Machines are never mixed:
the answer is per machine (results folder), from the committed sweep files or the ones given.

A cell that timed weights the shipped checkpoint of its name no longer holds (the model was retrained
since) still answers: its speed is the shipped network's, same shapes and operators. Its top-1s are the
earlier weights', so the answer says so and gives the shipped weights' own top-1s beside them.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import CifarSpeedError
from .sweep import Cell, cells_of

FULL_TEST_SET = 10_000


@dataclass(frozen=True)
class Query:
    min_top1: float                       # a fraction, 0.85
    batch: int = 128
    device: str | None = None             # None: the machine's fastest cell on whichever device it has
    min_top1_jpeg: float | None = None    # on the quality-75 JPEG copy of the test set
    include_disturbed: bool = False
    mode: str = "device"                  # one call at a time; "async" = requests in flight (served throughput)


@dataclass(frozen=True)
class Shipped:
    """A checkpoint as shipped today: its stored weights' sha256, the trained weights an fp16 copy was made
    from (they score the same: ship_checkpoints checks it), and the top-1s its sidecar records."""
    name: str
    weights_sha256: str
    source_weights_sha256: str | None
    top1: float | None
    top1_jpeg75: float | None

    def holds(self, weights_sha256: str) -> bool:
        return weights_sha256 in (self.weights_sha256, self.source_weights_sha256)


def shipped_weights(sidecars: dict[str, dict]) -> dict[str, Shipped]:
    """checkpoint name -> Shipped, from the shipped sidecars (name -> its JSON)."""
    return {name: Shipped(name, meta.get("weights_sha256") or "", (meta.get("shipping") or {}).get("source_weights_sha256"),
                          meta.get("test_accuracy"), meta.get("test_accuracy_jpeg75"))
            for name, meta in sidecars.items()}


def superseded_by(model: str, weights_sha256: str | None, shipped: dict[str, Shipped]) -> Shipped | None:
    """The checkpoint shipped today under `model`'s name (a view's: its checkpoint's, fast for fast_tta)
    where it holds other weights than those a results file timed; None where it holds them, or where
    nothing of that name is shipped or the file does not say which weights it timed."""
    from .locate import VIEWS

    now = shipped.get(VIEWS.get(model, (model,))[0])
    if now is None or not weights_sha256 or not now.weights_sha256 or now.holds(weights_sha256):
        return None
    return now


@dataclass(frozen=True)
class Choice:
    machine: str
    results_file: str
    checkpoint: str
    backend: str
    precision: str
    device: str
    variant: str | None                   # e.g. torch.compile's mode ("reduce-overhead": CUDA graphs)
    threads: int | None
    mode: str | None
    batch: int
    images_per_s: float
    latency_ms: float | None
    latency_spread_ms: list | None
    top1: float
    top1_jpeg75: float | None
    disturbed: bool | None
    command: str
    shipped_now: Shipped | None = None    # set where the cell timed earlier weights than those shipped today

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """"fast_tta compile bf16 (reduce-overhead) on cuda" / "frontier_m openvino int8, 2 threads"."""
        what = f"{self.checkpoint} {self.backend} {self.precision}" + (f" ({self.variant})" if self.variant else "")
        return f"{what} on {self.device}" if self.device != "cpu" else f"{what}, {self.threads or '?'} threads"


def _top1(cell: Cell) -> float | None:
    acc = cell.accuracy or {}
    if acc.get("images") != FULL_TEST_SET:
        return None  # a cell scored on a subset cannot vouch for the bar
    return acc.get("top1")


def _jpeg(cell: Cell) -> float | None:
    return (cell.accuracy or {}).get("top1_jpeg75")


def eligible(cell: Cell, q: Query) -> bool:
    """Whether the cell answers the query's question at all, bars aside: measured, scored on the whole
    test set, of the query's device, batch and mode, and (unless asked) not mostly disturbed."""
    if cell.status != "ok" or _top1(cell) is None or cell.images_per_s is None:
        return False
    if (q.device and cell.device != q.device) or cell.batch_size != q.batch or cell.mode != q.mode:
        return False
    return q.include_disturbed or not cell.disturbed


def _meets_top1(cell: Cell, q: Query) -> bool:
    return _top1(cell) >= q.min_top1


def _meets_jpeg(cell: Cell, q: Query) -> bool:
    return q.min_top1_jpeg is None or (_jpeg(cell) is not None and _jpeg(cell) >= q.min_top1_jpeg)


def meets_bars(cell: Cell, q: Query) -> bool:
    """Whether an eligible cell meets the query's top-1 bar and its JPEG-75 bar, where it sets one."""
    return _meets_top1(cell, q) and _meets_jpeg(cell, q)


def variant_values(cell: Cell) -> str | None:
    """The values of the cell's non-default backend options ("reduce-overhead" for compile's CUDA-graph
    mode), None for a backend run with its defaults."""
    if not cell.variant_options:
        return None
    return ",".join(kv.partition("=")[2] for kv in cell.variant_options.split(","))


def reproduce_command(cell: Cell, checkpoint: str) -> str:
    parts = ["cifar-speed", "bench", checkpoint, "--backend", cell.backend, "--precision", cell.precision,
             "--batch", str(cell.batch_size), "--device", cell.device]
    for option in filter(None, (cell.variant_options or "").split(",")):
        parts += ["--option", f"{cell.backend}.{option}"]
    if cell.threads and cell.device == "cpu":   # on a GPU the host's thread count is not an axis
        parts += ["--threads", str(cell.threads)]
    return shlex.join(parts)


def _bench_name(cell: Cell, model_info: dict) -> str:
    """What `bench` takes to time this row again: a view's name (fast_tta), else the checkpoint's stem."""
    from .locate import VIEWS

    if cell.model in VIEWS:
        return cell.model
    checkpoint = model_info.get("checkpoint") or cell.model
    return Path(checkpoint).stem if checkpoint.endswith(".json") else checkpoint


def _choice(cell: Cell, results: dict, path: str, shipped: dict[str, Shipped]) -> Choice:
    model_info = (results.get("models") or {}).get(cell.model, {})
    lat = cell.latency or {}
    acc = cell.accuracy or {}
    return Choice(
        machine=(results.get("provenance") or {}).get("machine") or Path(path).parent.name,
        results_file=path, checkpoint=cell.model, backend=cell.backend, precision=cell.precision,
        device=cell.device, variant=variant_values(cell),
        threads=cell.threads, mode=cell.mode, batch=cell.batch_size, images_per_s=cell.images_per_s,
        latency_ms=lat.get("median_ms"), latency_spread_ms=_trial_range(lat),
        top1=acc["top1"], top1_jpeg75=acc.get("top1_jpeg75"), disturbed=cell.disturbed,
        command=reproduce_command(cell, _bench_name(cell, model_info)),
        shipped_now=superseded_by(cell.model, model_info.get("weights_sha256"), shipped))


def _trial_range(latency: dict) -> list | None:
    """[min, max] of the per-trial median latencies (files of the trials harness; None before it)."""
    trial = latency.get("trial_median_ms") or {}
    return [trial["min"], trial["max"]] if trial.get("min") is not None else None


def folder_of(path: str) -> str:
    """Results are kept per machine in results/<machine>/: the folder is the machine."""
    return Path(path).parent.name


Row = tuple[Cell, dict, str]   # a cell, its results file's document, that file's path


def eligible_rows(results: list[tuple[str, dict]], q: Query) -> dict[str, list[Row]]:
    """machine folder -> the cells of its files that answer the query bars aside (eligible), in file
    order; every machine read is a key, with no rows where nothing was measured for the query."""
    rows: dict[str, list[Row]] = {}
    for path, res in results:
        rows.setdefault(folder_of(path), []).extend((c, res, path) for c in cells_of(res) if eligible(c, q))
    return rows


def recommend(results: list[tuple[str, dict]], q: Query, shipped: dict[str, Shipped] | None = None) -> dict[str, Choice | None]:
    """machine folder -> the fastest cell meeting the query (None where no cell does; the first of equal
    speeds). `shipped` (shipped_weights): what is shipped today, so that an answer from earlier weights says so."""
    out: dict[str, Choice | None] = {}
    for machine, rows in eligible_rows(results, q).items():
        best = max((r for r in rows if meets_bars(r[0], q)), key=lambda r: r[0].images_per_s, default=None)
        out[machine] = _choice(*best, shipped or {}) if best else None
    return out


@dataclass(frozen=True)
class NearMiss:
    """A cell that comes near where none meets the query: `meets` names the bar it does meet
    ("top1_jpeg75" or "top1"), or is "" for a cell that meets neither."""
    meets: str
    choice: Choice

    def to_dict(self) -> dict:
        return {"meets": self.meets, **self.choice.to_dict()}


NEAR_CELLS = 3        # at most, per bar missed
NEAR_DEPTH = 0.01     # how far under the missed bar the cells after the nearest may score (one point)


def closest(results: list[tuple[str, dict]], q: Query, shipped: dict[str, Shipped] | None = None) -> dict[str, list[NearMiss]]:
    """machine folder -> where no cell meets the query, the cells that come nearest (an empty list where
    one meets it, or none was measured at that batch): with a JPEG bar, those that meet it ranked by
    top-1, and those that meet the top-1 bar ranked by JPEG-75 top-1; where neither exists, or there is
    no JPEG bar, all ranked by top-1. Of each ranking the best cell (the fastest of equal scores), then
    each faster cell down to NEAR_DEPTH under the bar missed, at most NEAR_CELLS: what relaxing it buys."""
    return {machine: [] if any(meets_bars(c, q) for c, _, _ in rows) else _nearest(rows, q, shipped or {})
            for machine, rows in eligible_rows(results, q).items()}


def _nearest(rows: list[Row], q: Query, shipped: dict[str, Shipped]) -> list[NearMiss]:
    def frontier(bar: str, keep, score, missed: float) -> list[NearMiss]:
        ranked = sorted((r for r in rows if keep(r[0])), key=lambda r: (-score(r[0]), -r[0].images_per_s))
        picked: list[Row] = []
        for r in ranked:
            if len(picked) == NEAR_CELLS or (picked and score(r[0]) < missed - NEAR_DEPTH):
                break
            if not picked or r[0].images_per_s > picked[-1][0].images_per_s:
                picked.append(r)
        return [NearMiss(bar, _choice(cell, res, path, shipped)) for cell, res, path in picked]

    near = []
    if q.min_top1_jpeg is not None:
        near += frontier("top1_jpeg75", lambda c: _meets_jpeg(c, q), _top1, q.min_top1)
        near += frontier("top1", lambda c: _meets_top1(c, q) and _jpeg(c) is not None, _jpeg, q.min_top1_jpeg)
    return near or frontier("", lambda c: True, _top1, q.min_top1)


# The results files the README's answer tables are made from, listed by tools/update_readme.py in the results
# folder, so that `recommend` answers what the README says it answers: a machine's folder also keeps repeated
# runs and probes, and reading them all would hand each bar the luckiest of several runs of one cell.
ANSWERS_INDEX = "answers.json"
ANSWERS_FORMAT = "cifar-speed-answers/1"
OWN_RUNS = "bench-*.json"      # what `cifar-speed bench` writes without --name: the user's own runs
UNINDEXED = "sweep-*.json"     # what a results folder without an index is read for
_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\.json")


def answer_index(root: Path) -> list[Path] | None:
    """The files `<root>/answers.json` names, each checked to be a plain file of a machine's folder right
    under root (never a path of its choosing elsewhere, never a link); None where root has no index."""
    path = Path(root) / ANSWERS_INDEX
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CifarSpeedError(f"{path}: unreadable ({type(e).__name__}); regenerate it (tools/regen_readme.sh)") from None
    if not isinstance(data, dict) or data.get("format") != ANSWERS_FORMAT or not isinstance(data.get("files"), list):
        raise CifarSpeedError(f"{path} is not a cifar-speed answers index ({ANSWERS_FORMAT})")
    files = []
    for entry in data["files"]:
        if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
            raise CifarSpeedError(f"{path} lists {entry!r}: each entry must be <machine>/<name>.json")
        f = Path(root) / entry
        link = f.is_symlink() or f.parent.is_symlink()
        if link or not f.is_file():
            raise CifarSpeedError(f"{path} lists {entry}, which is {'a link' if link else 'missing'}; "
                                  "regenerate the index (tools/regen_readme.sh) or pass --results")
        files.append(f)
    return files


def machine_files(folder: Path, index: list[Path] | None) -> list[Path]:
    """What recommend reads of one machine's folder: the files the index names there (every sweep-*.json
    where its results folder has no index), then the runs `cifar-speed bench` wrote there unnamed."""
    folder = Path(folder)
    chosen = sorted(folder.glob(UNINDEXED)) if index is None else [f for f in index if f.parent.name == folder.name]
    named = {f.name for f in chosen}   # by name: the index's paths and the folder's may be spelled differently
    return chosen + [f for f in sorted(folder.glob(OWN_RUNS)) if f.name not in named]


def _machine_folders(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.is_symlink())


def is_results_root(folder: Path) -> bool:
    """Whether a folder holds machine folders (like ./results) rather than being one machine's: it has an
    answers index, or no results files of its own while a folder under it has some."""
    folder = Path(folder)
    if (folder / ANSWERS_INDEX).is_file():
        return True
    return not machine_files(folder, None) and any(machine_files(sub, None) for sub in _machine_folders(folder))


def default_results_files(roots: list[Path]) -> list[Path]:
    """machine_files of every machine folder of each results root (locate.results_roots)."""
    files: list[Path] = []
    for root in roots:
        index = answer_index(root)
        for folder in _machine_folders(root):
            files += [f for f in machine_files(folder, index) if f not in files]
    if not files:
        where = ", ".join(str(r) for r in roots) or "./results"
        raise CifarSpeedError(f"no results to recommend from under {where}: run `cifar-speed bench` or pass --results FILE")
    return files
