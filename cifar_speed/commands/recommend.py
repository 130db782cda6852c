"""`cifar-speed recommend --min-top1 85`: the fastest measured (checkpoint, backend, precision, threads)
that meets the bar on the 10,000 test images in that very cell, per machine, with the command that
reproduces it."""
from __future__ import annotations

import argparse
import json


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be a top-1 in percent, 0 < x <= 100, got {text!r}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("recommend", help="the fastest model/backend/precision that meets an accuracy bar, from measured results")
    p.add_argument("--min-top1", type=_percent, required=True, metavar="PCT",
                   help="top-1 on the 10,000 test images, in percent (e.g. 85), met by the cell itself")
    p.add_argument("--min-top1-jpeg", type=_percent, metavar="PCT",
                   help="also require this top-1 on the quality-75 JPEG copy of the test set")
    p.add_argument("--batch", type=int, default=128, choices=[1, 32, 64, 128],
                   help="batch size the cell was measured at (default 128; 1 = latency)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="only cells of this device (default: each machine's "
                   "fastest, on whichever device its results were measured)")
    p.add_argument("--results", nargs="+", metavar="PATH",
                   help="results files, machine folders, or results folders of machine folders (default: every "
                   "machine folder of ./results and of the checkout's results). A machine folder is read for the "
                   "files its results folder's "
                   "answers.json names (those the README's answer tables come from; all its sweep-*.json "
                   "where there is no index) and for the bench-*.json runs `cifar-speed bench` writes "
                   "without --name; machines are never mixed")
    p.add_argument("--mode", default="device", choices=["device", "host", "async"],
                   help="device: one call at a time on resident inputs (default); async: requests in flight")
    p.add_argument("--include-disturbed", action="store_true",
                   help="also consider cells whose trials were mostly disturbed by other load")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import shipped_sidecars
    from ..locate import results_roots
    from ..recommend import Query, closest, default_results_files, recommend, shipped_weights
    from ..report import load_results

    files = _expand_folders(args.results) if args.results else [str(f) for f in default_results_files(results_roots())]
    loaded = [(str(f), load_results(f)) for f in files]
    q = Query(min_top1=args.min_top1 / 100, batch=args.batch, device=args.device,
              min_top1_jpeg=None if args.min_top1_jpeg is None else args.min_top1_jpeg / 100,
              include_disturbed=args.include_disturbed, mode=args.mode)
    shipped = shipped_weights(shipped_sidecars())
    answer, near = recommend(loaded, q, shipped), closest(loaded, q, shipped)
    if args.json:
        print(json.dumps({"query": q.__dict__, "answer": {m: c.to_dict() if c else None for m, c in answer.items()},
                          "closest": {m: [n.to_dict() for n in ns] for m, ns in near.items() if ns}}, indent=2))
        return 0 if any(answer.values()) else 1
    _print(answer, near, q)
    return 0 if any(answer.values()) else 1


def _expand_folders(paths: list[str]) -> list[str]:
    """--results as given, each machine folder replaced by what the default reads of it
    (recommend.machine_files), each results folder of machine folders by what the default reads of it all."""
    from pathlib import Path

    from ..errors import CifarSpeedError
    from ..recommend import (ANSWERS_INDEX, OWN_RUNS, UNINDEXED, answer_index, default_results_files,
                             is_results_root, machine_files)

    files = []
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            files.append(path)
            continue
        if is_results_root(folder):   # e.g. `--results results`: every machine folder under it, as the default
            files += map(str, default_results_files([folder]))
            continue
        root = folder.resolve().parent
        index = answer_index(root)
        found = machine_files(folder, index)
        if not found:
            named = f"none named in {root / ANSWERS_INDEX}" if index is not None else f"no {UNINDEXED}"
            raise CifarSpeedError(f"{path} holds no results files recommend reads ({named}, no {OWN_RUNS}): "
                                  "give the files themselves")
        files += map(str, found)
    return files


def _print(answer, near, q) -> None:
    from ..console import make_console
    from ..recommend import NEAR_DEPTH

    out = make_console()
    top1_bar = f"top-1 >= {q.min_top1:.1%}"
    jpeg_bar = f"JPEG-75 top-1 >= {q.min_top1_jpeg:.1%}" if q.min_top1_jpeg is not None else ""
    bar = top1_bar + (f" and {jpeg_bar}" if jpeg_bar else "")
    for machine, c in sorted(answer.items()):
        if c is None:
            out.print(f"[bold]{machine}[/]: no measured {q.device + ' ' if q.device else ''}cell at batch {q.batch} "
                      f"meets {bar}")
            for meets in dict.fromkeys(n.meets for n in near.get(machine, [])):
                what, missed = {"top1_jpeg75": (f"with {jpeg_bar}, the most accurate", "top-1"),
                                 "top1": (f"with {top1_bar}, the most JPEG-robust", "JPEG-75")}.get(
                    meets, ("the most accurate measured", "top-1"))
                out.print(f"  {what} (then each faster cell down to {NEAR_DEPTH * 100:g} point under the {missed} bar):")
                for n in (n for n in near[machine] if n.meets == meets):
                    out.print(f"    {_cell_line(n.choice)}")
                    out.print(f"      from {n.choice.results_file}; reproduce: {n.choice.command}")
            continue
        out.print(f"[bold]{machine}[/], batch {q.batch}, {bar}: [bold]{c.label()}[/] — {_cell_line(c, label=False)}")
        out.print(f"  from {c.results_file}; reproduce: {c.command}")
        if c.shipped_now:
            out.print(f"  [yellow]earlier weights[/]: {_retrained(c.shipped_now)}")


def _cell_line(c, label: bool = True) -> str:
    """"frontier_l openvino int8, 2 threads — 3,413 img/s, 0.293 ms per batch; top-1 91.68%, JPEG-75 89.81%"."""
    speed = f"{c.images_per_s:,.0f} img/s" + (f", {c.latency_ms:.3f} ms per batch" if c.latency_ms else "")
    jpeg = f", JPEG-75 {c.top1_jpeg75:.2%}" if c.top1_jpeg75 is not None else ""
    old = " (earlier weights)" if c.shipped_now else ""
    return (f"{c.label()}{old} — " if label else "") + f"{speed}; top-1 {c.top1:.2%}{jpeg}"


def _retrained(now) -> str:
    """What an answer from earlier weights means for the checkpoint shipped today."""
    scores = ", ".join(f"{what} {value:.2%}" for what, value in (("top-1", now.top1), ("JPEG-75", now.top1_jpeg75))
                       if value is not None)
    return (f"{now.name} was retrained after this run{f' (now {scores}, by its sidecar)' if scores else ''}; "
            "the speed holds (the same network), the top-1s above are the earlier weights': the command "
            "above measures today's")
