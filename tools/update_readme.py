#!/usr/bin/env python3
"""Regenerate the README's measured sections from files the tool wrote; no figure is typed by hand.

    .venv/bin/python tools/update_readme.py --bench results/<machine>/<sweep>.json [--bench more.json]
        [--bench-summary results/<machine>/<part>.json ... --summary-report results/<machine>/<report>.md]

Replaces the text between `<!-- BEGIN name -->` and `<!-- END name -->` markers:
  models     the shipped checkpoints' sidecars (accuracy, size, training time and speed)
  bench      `cifar-speed report` of the --bench files, with its plots; the --bench-summary files (a
             sweep too long to print, e.g. one file per model) as one table of each model's fastest
             cell per batch size, with a link to their full `cifar-speed report`
  vs-report  the report's own figures (cited, marked as theirs) beside ours from the same files
  acceptance back-to-back pairs of one sweep (--accept-pair OLD.json:NEW.json) judged by `cifar-speed
             compare --within` at issue 11's run-to-run bounds (ACCEPTANCE_BOUNDS)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cifar_speed.checkpoint import shipped_sidecars, trained_weights_sha256  # noqa: E402
from cifar_speed.commands.compare import (CANARY_SHIFT_SHOWN, SHORT, cell_name, check_bounds, compare, figure_of,  # noqa: E402
                                          host_speed_change, parse_within, slow_around)
from cifar_speed.fileio import atomic_write_many  # noqa: E402
from cifar_speed.harness import FIGURE_QUANTILE, relative_se  # noqa: E402
from cifar_speed.models import count_params, create_model  # noqa: E402
from cifar_speed.processes import remerge  # noqa: E402
from cifar_speed.provenance import recorded_machine  # noqa: E402
from cifar_speed.resultsfile import figure_quantile  # noqa: E402
from cifar_speed.report import (best_cells_markdown, eager_fp32_scores, fastest_cells, load_results, plot,  # noqa: E402
                                plot_overview, render_markdown)
from cifar_speed.sweep import cells_of  # noqa: E402
from cifar_speed.train.recipe import Recipe, load_recipe, with_added_fields  # noqa: E402

# The report's figures (../shared/seed/report-fr.txt), cited: accuracy as it reported it, on its own
# splits, and its "ms/image" (1,000 images through Keras predict on a T4 GPU).
THEIRS = {
    "mlp": ("52.09 % (validation, its 20 % split)", "0.1333 ms/image (T4, Keras predict, 1,000 images)"),
    "cnn": ("82.44 % (its 10 % split); 83.14 % validation", "1.2110 ms/image (T4, Keras predict, 1,000 images)"),
    "cnn_tuned": ("(the report's CNN; our recipe, train/cnn_tuned.toml)", "see cnn"),
    "mobilenetv3_small": ("65-70 % (ImageNet-pretrained, upscaled; abandoned)", "not measured"),
    "deepnn": ("75.66 %", "not measured"),
    "lightnn": ("70.90 %", "not measured"),
    "lightnn_kd": ("70.69 %", "not measured"),
    "lightnn_cosine": ("69.63 %", "not measured"),
    "lightnn_regressor": ("not run", "not run"),
    "fast": ("(not in the report)", ""),
}
TARGETS = {"mlp": 0.52, "cnn": 0.83, "cnn_tuned": 0.83, "deepnn": 0.75, "lightnn": 0.70, "mobilenetv3_small": 0.80, "fast": 0.94,
           "frontier_s": 0.85, "frontier_s_plain": 0.85, "frontier_m": 0.90, "frontier_m_plain": 0.90, "frontier_l": 0.90,
           "frontier_l_plain": 0.90, "frontier_m_s2": 0.85, "frontier_m_s2_plain": 0.85}


def _pct(x) -> str:
    return f"{x * 100:.2f} %" if isinstance(x, (int, float)) else "-"


def _seeds_for(meta: dict, seed_files: list[dict]) -> dict | None:
    """The seeds file that holds this checkpoint's own weights (by sha256: a seed of an experiment
    shipped under the model's name is found too), else one of the checkpoint's recipe as it is today
    (seeds trained elsewhere). Never a file of the recipe as it was before it changed, nor a file that
    merely holds a run of the same name (frontier_m's seed 2 ran as `frontier_m_s2`, also a model of its own)."""
    sha = trained_weights_sha256(meta)
    holding = next((f for f in seed_files if sha and sha in {r.get("weights_sha256") for r in f["runs"]}), None)
    if holding is not None:
        return holding
    name = meta["name"]
    same = [f for f in seed_files if f.get("recipe") == name and not recipe_changes(f)]
    return next((f for f in same if name in {r["name"] for r in f["runs"]}), None) or next(iter(same), None)


def _on_cpu(run: dict) -> bool:
    """A seeds file's run trained on a CPU (older files do not say: taken as CPU, as they all were)."""
    return run.get("training_record", {}).get("device", "cpu") == "cpu"


def _threads_text(run: dict) -> str:
    """" on 1 of 2 cores" for a CPU run given fewer threads than the machine has (two seeds trained at once,
    a core each): its minutes are no training-speed figure beside a run that had them all."""
    prov = run.get("training_record", {}).get("provenance", {})
    threads, cores = prov.get("torch_threads"), (prov.get("cpu") or {}).get("usable_cpus")
    return f" on {threads} of {cores} cores" if _on_cpu(run) and threads and cores and threads < cores else ""


class TrainedOn(NamedTuple):
    """Where a run trained: the results folder's machine name, the device type and the precision."""
    machine: str
    device: str
    precision: str

    def __str__(self) -> str:
        return f"{self.machine} ({self.device} {self.precision})"


def _trained_where(sidecar: dict) -> TrainedOn:
    """Where a training sidecar's run trained: nvidia-h100-80gb-hbm3, cuda, bfloat16."""
    return TrainedOn(recorded_machine(sidecar.get("provenance", {})), str(sidecar.get("device", "?")),
                     str(sidecar.get("train_precision", "?")))


def trained_on(f: dict) -> tuple[TrainedOn, ...]:
    """Where a seeds file's runs trained, from their own sidecars (one entry where all ran alike)."""
    return tuple(sorted({_trained_where(r["training_record"]) for r in f.get("runs", []) if "training_record" in r}))


def trained_on_text(f: dict) -> str:
    return ", ".join(map(str, trained_on(f))) or "?"


def seeds_lines(seed_files: list[dict], paths: list[str]) -> list[str]:
    """One paragraph per multi-seed results file (tools/seed_summary.py)."""
    out = []
    for f, path in zip(seed_files, paths):
        runs = sorted(f["runs"], key=lambda r: r["seed"])
        per_seed = ", ".join(f"seed {r['seed']} {_pct(r['test_accuracy'])}"
                             + (f" ({_pct(r['test_accuracy_tta'])} TTA)" if r.get("test_accuracy_tta") is not None else "")
                             + f" in {r['train_seconds'] / 60:,.1f} min{_threads_text(r)}"
                             + (" (cores shared)" if r.get("train_disturbed") else
                                " (load not recorded)" if r.get("train_disturbed") is None and _on_cpu(r) else "")
                             for r in runs)
        acc, tta = f["test_accuracy"], f.get("test_accuracy_tta")
        line = (f"**{f['recipe']} over {len(runs)} seeds** ([`{path}`]({path})): {per_seed}. "
                f"Mean {_pct(acc['mean'])} (sample std {acc['std'] * 100:.2f} pt)" if acc["std"] is not None
                else f"**{f['recipe']}**: {per_seed}. Mean {_pct(acc['mean'])}")
        if tta:
            line += f"; with TTA mean {_pct(tta['mean'])} (std {tta['std'] * 100:.2f} pt, min {_pct(tta['min'])})"
        out.append(line + f". Trained on {trained_on_text(f)}.")
    return out


def jpeg75_from_bench(paths: list[str], results_list: list[dict]) -> dict[str, tuple[float, str]]:
    """checkpoint name -> (top-1 on the JPEG-75 set, results file) from the first eager fp32 cell of a
    bench run that timed the shipped weights (its `weights_sha256`) on the whole set: the checkpoint as it
    is, as training's own evaluation scores it; for checkpoints trained before that set existed."""
    shipped = {name: meta.get("weights_sha256") for name, meta in shipped_sidecars().items()}
    out = {}
    for model, sha, acc, path in eager_fp32_scores(paths, results_list):
        if acc.get("top1_jpeg75") is not None and sha == shipped.get(model):
            out.setdefault(model, (acc["top1_jpeg75"], path))
    return out


def fine_tuned_text(m: dict) -> str:
    """" (fine-tuned from [x](path))" for a checkpoint that started from another one in the repository."""
    start = (m.get("fine_tuned_from") or {}).get("checkpoint", "")
    if not start.startswith("results/"):
        return ""
    return f" (fine-tuned from [{Path(start).stem}]({start}))"


def training_cost(m: dict) -> str:
    """"epochs | training time" of a checkpoint; a fine-tuned one's start counted too ("10 + 4")."""
    start = m.get("fine_tuned_from")
    epochs, minutes = f"{m.get('epochs_run')}", f"{m.get('train_seconds', 0) / 60:,.1f} min"
    if start and start.get("epochs_run") is not None and start.get("train_seconds") is not None:
        epochs = f"{start['epochs_run']} + {epochs}"
        minutes = f"{start['train_seconds'] / 60:,.1f} + {minutes}"
    return f"{epochs} | {minutes}"


def models_section(seed_files: list[dict] | None = None, seed_paths: list[str] | None = None,
                   jpeg_bench: dict[str, tuple[float, str]] | None = None, rel=lambda p: p,
                   goals: dict[str, str] | None = None) -> str:
    """The shipped checkpoints' table; `goals`: jpeg_goals, issue 15's verdict per checkpoint, in its target cell."""
    seed_files, jpeg_bench, goals, from_bench, scored_later = seed_files or [], jpeg_bench or {}, goals or {}, False, False
    rows = ["| checkpoint | model | params | MFLOP/image | test top-1 | JPEG-75 top-1 (drop) | target | epochs | training time | train img/s | where trained | stored |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    shipped = shipped_sidecars()
    metas = list(shipped.values())
    plain_student = next((m["test_accuracy"] for m in metas if m.get("name") == "lightnn"), None)
    by_name = {m.get("name"): m for m in metas}
    for stem, m in shipped.items():
        acc = _pct(m.get("test_accuracy"))
        if "test_accuracy_tta" in m:
            acc += f" ({_pct(m['test_accuracy_tta'])} with TTA)"
        target = TARGETS.get(m.get("name"))
        reached = ""
        if target is not None:
            best = max(m.get("test_accuracy", 0), m.get("test_accuracy_tta", 0))
            reached = f"≥ {target * 100:.0f} % {'met' if best >= target else '**missed**'}"
            f = _seeds_for(m, seed_files)
            if m.get("model") == "fast":  # the target is a mean over at least 3 seeds
                n = len(f["runs"]) if f else 1
                tta = bool(f.get("test_accuracy_tta")) if f else "test_accuracy_tta" in m
                mean = (f.get("test_accuracy_tta") or f["test_accuracy"])["mean"] if f else best
                verdict = "met" if n >= 3 and mean >= target else "**missed**"
                reached = (f"≥ 94 % mean of ≥ 3 seeds: {n} seed{'s' if n > 1 else ''}, mean {_pct(mean)}"
                           f"{' with TTA' if tta else ''}: {verdict}")
            elif f:  # other seeds of the same recipe: their mean beside this run
                mean = f["test_accuracy"]["mean"]
                this_run = {m["name"], (m.get("shipping") or {}).get("trained_as")}
                elsewhere = "" if this_run & {r["name"] for r in f["runs"]} else f" trained on {trained_on_text(f)}"
                reached += (f" by this run; mean of {len(f['runs'])} seeds{elsewhere} {_pct(mean)}: "
                            f"{'met' if mean >= target else '**missed**'}")
        elif m.get("name", "").startswith("lightnn_") and plain_student is not None:
            reached = f"{(m['test_accuracy'] - plain_student) * 100:+.2f} pt vs lightnn"
        if m.get("name", "").startswith("frontier_") and f"{m['name']}_plain" in by_name:
            plain = by_name[f"{m['name']}_plain"]
            reached = (f"{reached}; " if reached else "") + (
                f"distillation {(m['test_accuracy'] - plain['test_accuracy']) * 100:+.2f} pt "
                f"(JPEG-75 {(m['test_accuracy_jpeg75'] - plain['test_accuracy_jpeg75']) * 100:+.2f} pt) vs {m['name']}_plain")
        if m.get("name") in goals:
            reached = (f"{reached}; " if reached else "") + f"JPEG goal (drop ≤ 2 pt, top-1 within 0.3 pt): {goals[m['name']]}"
        prov = m.get("provenance", {})
        where = f"{m.get('device')} {m.get('train_precision')}, {prov.get('cpu', {}).get('model', '?')}"
        jpeg, jpeg_source = m.get("test_accuracy_jpeg75"), ""
        if jpeg is not None and m.get("test_accuracy_jpeg75_scored_by"):
            jpeg_source, scored_later = " ‡", True
        if jpeg is None and m.get("name") in jpeg_bench:
            jpeg, path = jpeg_bench[m["name"]]
            jpeg_source, from_bench = f" [†]({rel(path)})", True
        jpeg_text = "-" if jpeg is None else f"{_pct(jpeg)} ({(jpeg - m['test_accuracy']) * 100:+.2f} pt){jpeg_source}"
        rows.append(f"| [{m['name']}](results/checkpoints/{stem}.json){fine_tuned_text(m)} | {m['model']} | {count_params(create_model(m['model']), trainable_only=False):,} | "
                    f"{m.get('flops_per_image', 0) / 1e6:,.1f} | {acc} | {jpeg_text} | {reached} | {training_cost(m)} | "
                    f"{m.get('train_images_per_s', 0):,.0f} | {where} | "
                    f"{m.get('storage_dtype')} |")
    if len(rows) == 2:
        rows.append("| (no checkpoint shipped yet) | | | | | | | | | | | |")
    if scored_later:
        rows += ["", "‡ trained before the JPEG-75 set existed: scored on the shipped weights afterwards, as training "
                 "scores it (`tools/ship_checkpoints.py --score-jpeg`; the sidecar's `test_accuracy_jpeg75_scored_by` "
                 "and `test_accuracy_jpeg75_provenance` say by what, when and where)."]
    if from_bench:
        rows += ["", "† the training record has no JPEG-75 top-1 (trained before the set existed): the top-1 of the "
                 "eager fp32 cell of a bench run that timed these same weights (linked), on the same 10,000 images."]
    lines = seeds_lines(seed_files, seed_paths or [])
    return "\n".join(rows) + ("\n\n" + "\n\n".join(lines) if lines else "")


def _variant(cell: dict) -> str:
    """"compile bf16 (reduce-overhead)": the values of the cell's non-default backend options."""
    from cifar_speed.recommend import variant_values
    from cifar_speed.sweep import Cell

    mode = variant_values(Cell.from_dict(cell))
    return f"{cell['backend']} {cell['precision']}" + (f" ({mode})" if mode else "")


def _where(cell: dict) -> str:
    """"compile bf16 (reduce-overhead), nvidia-h200": a figure from any machine names its machine."""
    return f"{_variant(cell)}, {cell['_machine']}"


def _tag_machines(paths: list[str], results_list: list[dict]) -> None:
    """Each cell learns its machine (the results folder): columns that pick a best over files name it."""
    for path, res in zip(paths, results_list):
        for c in res["cells"]:
            c["_machine"] = Path(path).parent.name


# How the per-image loop issued each image (cifar_speed.harness.dawnbench_latency); files older than
# the "graph" method hold no method field and ran the loop.
DAWNBENCH_METHODS = {"loop": "loop", "graph": "CUDA graph"}


def dawnbench_section(paths: list[str], results_list: list[dict], rel) -> str:
    """Batch-1 latency the DAWNBench way (every test image alone, host to device and back, total time
    / 10,000), per machine: the best cell of each model x backend x precision that measured it."""
    rows = ["| machine | model | backend precision | method | ms per image | one client, each answer waited for: p50 / p99 ms | top-1 in that run | source |",
            "|---|---|---|---|---:|---:|---:|---|"]
    best: dict[tuple, tuple[dict, str]] = {}
    for path, res in zip(paths, results_list):
        for c in res["cells"]:
            d = c.get("dawnbench")
            if c.get("status") != "ok" or not isinstance(d, dict) or "ms_per_image" not in d or d.get("images") != 10_000:
                continue
            key = (Path(path).parent.name, c["model"], _variant(c))
            if key not in best or d["ms_per_image"] < best[key][0]["dawnbench"]["ms_per_image"]:
                best[key] = (c, path)
    for key, (c, path) in sorted(best.items(), key=lambda kv: (kv[0][0], kv[1][0]["dawnbench"]["ms_per_image"])):
        d = c["dawnbench"]
        top1 = _pct(d["top1"]) if d.get("top1") is not None else "-"
        method = DAWNBENCH_METHODS[d.get("method", "loop")]
        waited = d.get("per_request") or {}
        per_request = f"{waited['p50_ms']:.3f} / {waited['p99_ms']:.3f}" if "p50_ms" in waited else "not measured"
        rows.append(f"| {key[0]} | {c['model']} | {key[2]} | {method} | {d['ms_per_image']:.3f} | {per_request} | {top1} | "
                    f"[`{Path(path).name}`]({rel(path)}) |")
    return "\n".join(rows) if len(rows) > 2 else "No results file given holds a DAWNBench measurement."


def _best_cell(results_list, model, batch):
    """The raw cell (it carries its machine) that report.fastest_cells picks over every file."""
    pairs = [(record, raw) for r in results_list for record, raw in zip(cells_of(r), r["cells"])]
    best = fastest_cells([record for record, _ in pairs]).get((model, batch, "device"))
    return next((raw for record, raw in pairs if record is best), None)


def _dawn(results_list, model):
    cells = [c for r in results_list for c in r["cells"] if c.get("status") == "ok" and c["model"] == model
             and isinstance(c.get("dawnbench"), dict) and "ms_per_image" in c["dawnbench"]]
    return min(cells, key=lambda c: c["dawnbench"]["ms_per_image"], default=None)


def vs_report_section(results_list) -> str:
    rows = ["| model | theirs: accuracy | theirs: speed | ours: official test top-1 | ours: batch-1 latency (DAWNBench, 10,000 images one at a time) | ours: batch-128 time per image (best backend) |",
            "|---|---|---|---:|---:|---:|"]
    metas = {m["name"]: m for m in shipped_sidecars().values()}
    for name, (acc, speed) in THEIRS.items():
        m = metas.get(name)
        ours = _pct(m["test_accuracy"]) if m else "not trained yet"
        if m and "report_split_test_accuracy" in m:
            ours += f" ({_pct(m['report_split_test_accuracy'])} on the report's 10 % split)"
        d = _dawn(results_list, name)
        dawn = f"{d['dawnbench']['ms_per_image']:.3f} ms ({_where(d)})" if d else "not measured"
        b = _best_cell(results_list, name, 128)
        per_image = f"{1e3 / b['images_per_s']:.4f} ms ({_where(b)})" if b else "not measured"
        rows.append(f"| {name} | {acc} | {speed} | {ours} | {dawn} | {per_image} |")
    return "\n".join(rows)


BARS = (0.85, 0.90, 0.94)


def earlier_weights(paths: list[str], results_list: list[dict]) -> dict[tuple[str, str], dict]:
    """(results file, model) -> that file's record of the model, where it timed other weights than the
    checkpoint shipped today (the model was retrained since): its speeds still describe the shipped
    model (same architecture and shapes), its accuracies describe the earlier weights."""
    from cifar_speed.recommend import shipped_weights, superseded_by

    shipped = shipped_weights(shipped_sidecars())
    out = {}
    for path, res in zip(paths, results_list):
        for model, rec in (res.get("models") or {}).items():
            if now := superseded_by(model, rec.get("weights_sha256"), shipped):   # what `recommend` flags too
                out[path, model] = {**rec, "shipped_sha256": now.weights_sha256, "shipped_top1": now.top1}
    return out


def earlier_weights_apart(paths: list[str], results_list: list[dict], earlier: dict) -> list[dict]:
    """The results with each earlier-weights model renamed "<model> (earlier weights)" in its cells: the
    overview plot then gives it a marker and legend entry of its own instead of one marker for two
    checkpoints' accuracies, and marked `superseded`: no longer shipped, it stays off the Pareto front."""
    out = []
    for path, res in zip(paths, results_list):
        gone = {model for p, model in earlier if p == path}
        cells = [{**c, "model": f"{c['model']} (earlier weights)", "superseded": True} if c.get("model") in gone else c
                 for c in res["cells"]]
        out.append({**res, "cells": cells} if gone else res)
    return out


def earlier_weights_note(earlier: dict[tuple[str, str], dict], rel) -> str:
    if not earlier:
        return ""
    items = [f"{model} in [`{Path(path).name}`]({rel(path)}) (weights {rec['weights_sha256'][:8]}, "
             + (f"top-1 {_pct(rec['checkpoint_test_accuracy'])}" if rec.get("checkpoint_test_accuracy") is not None else "")
             + f"; shipped now: {rec['shipped_sha256'][:8]}"
             + (f", top-1 {_pct(rec['shipped_top1'])}" if rec.get("shipped_top1") is not None else "") + ")"
             for (path, model), rec in sorted(earlier.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    return ("*Earlier weights*: these files timed a checkpoint that has been retrained since: " + "; ".join(items)
            + ". Their speeds hold for the shipped checkpoint (the same architecture and shapes); their "
            "accuracies are the earlier weights'.")


def answer_section(paths: list[str], results_list: list[dict], rel, earlier: dict | None = None) -> str:
    """The README's first answer: `cifar-speed recommend` for each accuracy bar at batch 1 and 128,
    per machine, straight from the results files (the same function the command runs)."""
    from cifar_speed.recommend import Query, closest, recommend

    loaded = list(zip(paths, results_list))
    machines = sorted({Path(p).parent.name for p in paths})
    out, marked = [], {}
    for machine in machines:
        mine = [(p, r) for p, r in loaded if Path(p).parent.name == machine]
        rows = [f"**{machine}** (`cifar-speed recommend --min-top1 BAR --batch N`; top-1 of the cell itself, "
                "single view, on the 10,000 test images; JPEG: the same images at quality 75)", "",
                "| top-1 bar | batch | fastest cell that meets it | img/s | ms per batch (trial range) | top-1 | top-1 JPEG-75 | source |",
                "|---|---:|---|---:|---:|---:|---:|---|"]
        for bar in BARS:
            for batch in (1, 128):
                q = Query(min_top1=bar, batch=batch)
                c, what = recommend(mine, q)[machine], ""
                if c is None:   # the most accurate cell measured instead, said to be that (closest)
                    near = closest(mine, q)[machine]
                    if not near:
                        rows.append(f"| ≥ {bar:.0%} | {batch} | none measured | | | | | |")
                        continue
                    c, what = near[0].choice, "none measured; the most accurate: "
                spread = (f" ({c.latency_spread_ms[0]:.3f}-{c.latency_spread_ms[1]:.3f})"
                          if c.latency_spread_ms else "")
                jpeg = _pct(c.top1_jpeg75) if c.top1_jpeg75 is not None else "-"
                old = ""
                if (c.results_file, c.checkpoint) in (earlier or {}):
                    marked[c.results_file, c.checkpoint] = earlier[c.results_file, c.checkpoint]
                    old = " (*earlier weights*)"
                rows.append(f"| ≥ {bar:.0%} | {batch} | {what}{c.label()}{old} | "
                            f"{c.images_per_s:,.0f} | {c.latency_ms:.3f}{spread} | {_pct(c.top1)} | {jpeg} | "
                            f"[`{Path(c.results_file).name}`]({rel(c.results_file)}) |")
        out.append("\n".join(rows))
    return "\n\n".join(out + ([earlier_weights_note(marked, rel)] if marked else []))


def _statistic_words(results_list: list[dict]) -> tuple[str, str]:
    """img/s's and x's statistics in words over a folder's runs (report.figure_words), 'X or Y' where
    they differ."""
    from cifar_speed.report import figure_words
    words = [figure_words(r) for r in results_list]
    return tuple(" or ".join(dict.fromkeys(w[i] for w in words)) for i in (0, 1))


def summary_markdown(paths: list[str], results_list: list[dict], reports: list[str], rel) -> str:
    """Per machine: the --bench-summary files as one table of each model's fastest cell per batch,
    what ran them (CPU, commits, dates, files), and a link to their full report."""
    out = []
    for folder in dict.fromkeys(Path(p).parent for p in paths):
        mine = [(p, r) for p, r in zip(paths, results_list) if Path(p).parent == folder]
        prov = [r["provenance"] for _, r in mine]
        cpu = prov[0]["cpu"]
        commits = sorted({(p.get("git_commit") or "?")[:7] for p in prov})
        created = sorted(r["created"] for _, r in mine)
        report = next((m for m in reports if Path(m).parent == folder or Path(m).parent.parent == folder), None)
        figure, ratio = _statistic_words([r for _, r in mine])
        out.append(f"### {folder.name}: every shipped checkpoint, the fastest cell per batch size\n")
        out.append(f"CPU {cpu['model']} ({cpu['usable_cpus']} cores; {' '.join(cpu['features'])}); "
                   f"{len(mine)} runs from {created[0]} to {created[-1]}, commit{'s' if len(commits) > 1 else ''} "
                   f"{', '.join(f'`{c}`' for c in commits)}; files: "
                   + ", ".join(f"[`{Path(p).name}`]({rel(p)})" for p, _ in mine)
                   + (f". Every cell, with spreads, accuracy and plots: [`{rel(report)}`]({rel(report)})" if report else "")
                   + f". Fastest = the highest img/s ({figure}) among cells whose top-1 "
                   f"stays within the run's tolerance of eager fp32; x = {ratio} at that batch"
                   + (". A model marked *(earlier weights)* was retrained after its file ran: its speeds hold, its "
                      "top-1s are the earlier weights' (*Earlier weights* at the end of this section)"
                      if any(c.get("superseded") for _, r in mine for c in r["cells"]) else "") + ".\n")
        out.append(best_cells_markdown([r for _, r in mine]) + "\n")
    return "\n".join(out) + ("\n" if out else "")


def aoti_section(paths: list[str], rel) -> str:
    """torch.compile's two programs side by side (tools/aoti_vs_jit.py): the JIT that `bench` times and
    the AOTInductor package that `cifar-speed compile` writes, per-round ratio of their times."""
    rows = ["| machine | model | precision | batch | JIT img/s | AOTI img/s | AOTI / JIT time, median [range of rounds] | max logit diff | source |",
            "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for path in paths:
        doc = json.loads(Path(path).read_text())
        for r in doc["rows"]:
            q = r["aoti_over_jit_time"]
            rows.append(f"| {doc['provenance']['machine']} | {r['model']} | {r['precision']} | {r['batch_size']} | "
                        f"{r['jit']['images_per_s']:,.0f} | {r['aoti']['images_per_s']:,.0f} | "
                        f"{q['median']:.3f} [{q['min']:.3f}-{q['max']:.3f}] | {r['max_logit_diff']:.1g} | "
                        f"[`{Path(path).name}`]({rel(path)}) |")
    return "\n".join(rows) if len(rows) > 2 else "No tools/aoti_vs_jit.py results given."


# Issue 11's acceptance: a second run of the same sweep agrees with the first within these, either way.
ACCEPTANCE_BOUNDS = ("speedup_vs_eager_fp32:7%", "images_per_s@b128:7%", "images_per_s@b1:10%")
PAST_SHOWN = 6   # figures past their bound named per pair, the largest first


def _judged_as_merged_today(results: dict) -> dict:
    """A `bench --processes` file with its cells recomputed from its recorded trials by today's merge
    (tools/remerge.py): files written by an older merge are judged as the current one would; a file
    that records today's statistic is judged as recorded."""
    if (results.get("harness") or {}).get("processes", 1) < 2 or figure_quantile(results) == FIGURE_QUANTILE:
        return results
    out = remerge(results)
    out["harness"]["remerged"] = "cells recomputed from the recorded trials by tools/update_readme.py"
    return out


def _run_minutes(results: dict) -> str:
    """How long a `bench --processes` run took (its processes' wall times); '-' for a file without them."""
    walls = [p.get("wall_s") for p in results.get("process_runs") or []]
    return f"{sum(walls) / 60:.0f} min" if walls and all(isinstance(w, (int, float)) for w in walls) else "-"


def _statistic(results: dict) -> str:
    """Which statistic a pair was judged by: today's, recomputed from the trials, or the file's own."""
    remerged = (results.get("harness") or {}).get("remerged")
    return f"{figure_of(results)}{' (recomputed today)' if remerged else ' (as recorded)'}"


def acceptance_section(pairs: list[str], rel) -> str:
    """One row per back-to-back pair: how many of its speed-ups and images/s stayed within
    ACCEPTANCE_BOUNDS (judged host-normalised where both cells have the canary, and raw), and which not."""
    bounds = [parse_within(b) for b in ACCEPTANCE_BOUNDS]
    rows = ["| pair | processes x trials (max) | a run's time | statistic | figures | within, host-normalised | within, raw | canary | slow canary around (run 1, run 2) | past the bound (change as judged) |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for pair in pairs:
        old_path, new_path = pair.split(":")
        old, new = (_judged_as_merged_today(load_results(p)) for p in (old_path, new_path))
        changes, _, _ = compare(old, new)
        checked = check_bounds(changes, bounds)
        h = old["harness"]
        canary = host_speed_change(old, new)
        worst = sorted(checked.past, key=lambda cb: -abs(cb[0].judged_fraction))
        past = "; ".join(f"{cell_name(c.key)} {SHORT[c.metric]} {c.judged_fraction * 100:+.1f} % (bound "
                         f"{b.fraction * 100:g} %)" for c, b in worst[:PAST_SHOWN]) or "none"
        if len(worst) > PAST_SHOWN:
            past += f"; {len(worst) - PAST_SHOWN} more (`cifar-speed compare --within` lists them all)"
        rows.append(f"| [`{Path(old_path).name}`]({rel(old_path)}), [`{Path(new_path).name}`]({rel(new_path)}) | "
                    f"{h.get('processes', 1)} x {h.get('trials')} ({h.get('max_trials')}) | {_run_minutes(old)} | "
                    f"{_statistic(old)} | {checked.judged} | "
                    f"{checked.judged - len(checked.past)} | {checked.judged - len(checked.past_raw)} | "
                    f"{f'{canary * 100:+.1f} %' if canary is not None else '-'} | "
                    f"{len(slow_around(old))}, {len(slow_around(new))} | {past} |")
    command = "cifar-speed compare OLD NEW " + " ".join(f"--within {b}" for b in ACCEPTANCE_BOUNDS)
    return (f"Judged by `{command}` "
            f"(exit 1 when a figure is past): every speed-up over eager fp32 and every images/s at batch 1 "
            f"and 128; *canary*: how much slower the host's reference matmul ran in the second run; *slow canary "
            f"around*: in each run, the cells right after whose trials the canary read more than "
            f"{CANARY_SHIFT_SHOWN:.1%} slower than the run's median (`compare` and `bench` name them): cells that "
            f"left work running past their trials, or ran in a state the rest of their run did not.\n\n"
            + "\n".join(rows))


def ov_profile_section(paths: list[str], rel) -> str:
    """Where OpenVINO cells spend their time (tools/openvino_profile.py): share per execution kernel
    and the slowest layer, from the plugin's PERF_COUNT counters."""
    rows = ["| machine | model | precision | batch | ms per call (counters) | time by kernel | slowest layer | source |",
            "|---|---|---|---:|---:|---|---|---|"]
    for path in paths:
        d = json.loads(Path(path).read_text())
        kernels = ", ".join(f"{k['exec_type']} {k['share']:.0%}" for k in d["by_exec_type"] if k["share"] >= 0.01)
        top = d["layers"][0]
        total = d["per_call_ms_from_counters"]
        rows.append(f"| {d['provenance']['machine']} | {d['model']} | {d['precision']} | {d['batch_size']} | "
                    f"{total:.2f} | {kernels} | {top['type']} `{top['exec_type']}` {top['ms'] / total:.0%} | "
                    f"[`{Path(path).name}`]({rel(path)}) |")
    return "\n".join(rows) if len(rows) > 2 else "No tools/openvino_profile.py results given."


def _ratio_rse_of_trials(trials: dict) -> float | None:
    """For overhead files written before they recorded `overhead_rse`: the relative standard error of
    the per-round ratios (aug + step) / step, the trials paired by round as harness.paired_ratio pairs them."""
    step = {t["round"]: t["median_ms"] for t in trials.get("step", [])}
    ratios = [t["median_ms"] / step[t["round"]] for t in trials.get("jpeg+step", []) if step.get(t["round"])]
    return relative_se(ratios) if ratios else None


# Recorded recipe fields that do not change what is trained.
_NOT_THE_RECIPE = {"seed", "name", "path", "description"}
# Fields that do nothing while their switch is off: a recipe without JPEG augmentation or without
# distillation trained the same whatever they hold, so a change of them says nothing about the runs.
_INERT_WHILE_OFF = {("augment", "jpeg_fraction"): ("jpeg_quality_min", "jpeg_quality_max"),
                    ("distill", "kind"): None}   # None: every other field of the switch's section


def _inert_fields(then: dict, now: dict) -> set[tuple[str, str]]:
    """(section, field) pairs that are inert in the recorded recipe or in today's: their switch is off."""
    inert = set()
    for (section, switch), fields in _INERT_WHILE_OFF.items():
        if all((r.get(section) or {}).get(switch) for r in (then, now)):
            continue
        names = fields if fields is not None else [f for f in (now.get(section) or {}) if f != switch]
        inert |= {(section, f) for f in names}
    return inert


def recipe_changes(f: dict) -> list[str] | None:
    """How the recipe a seeds file's runs recorded differs from train/<recipe>.toml today, one
    "section.field recorded (now current)" each; [] where it is the same, None where no such file is
    shipped (an experiment). A field added to a recorded section after the runs trained counts as its
    default, which is what they trained with (mobilenetv3_small's record has no augment.jpeg_fraction: it trained without JPEG),
    and a teacher pin added later is the weights of the teacher the record names."""
    path = ROOT / "train" / f"{f['recipe']}.toml"
    if not path.is_file():
        return None
    now = load_recipe(path).to_dict()
    record = (f["runs"][0].get("training_record") or {}) if f.get("runs") else {}
    then = record.get("recipe", {})
    if not then:
        return []
    defaults = Recipe(model=now["model"]).to_dict()
    # A teacher pinned after the runs trained: what they trained with is the teacher their record names.
    defaults["distill"]["teacher_sha256"] = (record.get("teacher") or {}).get("weights_sha256", "")
    filled = with_added_fields(then, defaults)
    inert = _inert_fields(filled, now)
    out = []
    for section in then:   # a section the record does not hold: nothing to say
        if section in _NOT_THE_RECIPE:
            continue
        value = filled[section]
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for field, v in pairs:
            current = now.get(section) if field is None else (now.get(section) or {}).get(field)
            if v != current and (section, field) not in inert:
                out.append(f"{section}{'.' + field if field else ''} {_shown(v)} (now {_shown(current)})")
    return out


def _shown(value) -> str:
    """A recipe value as the changes list prints it: an empty string or list (a switch off, no teacher, no ensemble) as "none"."""
    return "none" if value in ("", []) else str(value)


def shipped_by_weights() -> dict[str, str]:
    """trained weights' sha256 -> the shipped checkpoint's name."""
    return {trained_weights_sha256(meta): name for name, meta in shipped_sidecars().items()}


def shipped_as(f: dict, shipped: dict[str, str] | None = None) -> str:
    """"shipped as frontier_l" for a seeds file one of whose runs is a shipped checkpoint's weights
    (`shipped`: shipped_by_weights(), read once by a caller that asks for many files)."""
    shipped = shipped_by_weights() if shipped is None else shipped
    names = sorted({shipped[r["weights_sha256"]] for r in f.get("runs", []) if r.get("weights_sha256") in shipped})
    return f"shipped as {', '.join(names)}" if names else ""


def experiment_line(recipe: str, model: str) -> str:
    """The shipped recipe an experiment belongs to: the longest train/<name>.toml whose name begins the
    experiment's recipe name (frontier_l_plain for frontier_l_plain_jpeg95_q60_e14, not frontier_l,
    which is distilled), else its model's."""
    shipped = [p.stem for p in (ROOT / "train").glob("*.toml")]
    lines = [name for name in shipped if recipe.startswith(name + "_")]
    return max(lines, key=len) if lines else model


def _sd_text(stat: dict) -> str:
    """" (sd 0.25)" after a mean over seeds; nothing for a single run, which has no spread."""
    return "" if stat.get("std") is None else f" (sd {stat['std'] * 100:.2f})"


def _seeds_text(f: dict) -> str:
    """How many seeds a seeds file gathers: "3", or "1 (seed 42)" for a single run, as the experiments' rows say it."""
    n, seeds = f["test_accuracy"]["n"], [r.get("seed") for r in f.get("runs", [])]
    return f"1 (seed {seeds[0]})" if n == 1 and seeds and seeds[0] is not None else str(n)


def _top1_text(seeds: dict) -> str:
    """A seeds file's mean top-1, with its TTA mean where the model has one (fast): a recipe can keep the
    plain top-1 and still lose the TTA figure that a 94 % tier rests on."""
    return _pct(seeds["test_accuracy"]["mean"]) + _tta_text(_tta_mean(seeds))


def _tta_mean(seeds: dict) -> float | None:
    """A seeds file's mean TTA top-1; None for a model without test-time augmentation."""
    return (seeds.get("test_accuracy_tta") or {}).get("mean")


def _tta_text(tta: float | None) -> str:
    return f" (TTA {_pct(tta)})" if tta is not None else ""


class Versus(NamedTuple):
    """A run's clean accuracy against its baseline's: fractions, TTA where both have one; `named` says which
    baseline where it is not the obvious one (another machine, a file that is no row); `se`, the standard
    error of the top-1 difference where both sides have several seeds."""
    top1: float
    tta: float | None
    named: str
    se: float | None = None


def _spread(summary: dict) -> tuple[float, int] | None:
    """(sample sd, seeds) of a seeds file's top-1 summary; None for a single run, which has no spread."""
    return (summary["std"], summary["n"]) if summary.get("std") is not None and summary.get("n", 0) > 1 else None


def _difference_se(a: tuple[float, int] | None, b: tuple[float, int] | None) -> float | None:
    """The standard error of the difference of two means over seeds: how far apart two recipes' means can
    land from seed noise alone (about twice it is the usual bar)."""
    return None if a is None or b is None else math.sqrt(a[0] ** 2 / a[1] + b[0] ** 2 / b[1])


# Issue 15's goal: at most 2 points lost on the JPEG-75 set, clean top-1 within 0.3 point of the baseline.
JPEG_DROP_GOAL_PT, CLEAN_LOSS_GOAL_PT = 2.0, 0.3


def _versus_text(vs: Versus | None) -> str:
    if vs is None:
        return "-"
    text = (f"{vs.top1 * 100:+.2f} pt" + (f" ± {vs.se * 100:.2f}" if vs.se is not None else "")
            + (f", TTA {vs.tta * 100:+.2f} pt" if vs.tta is not None else ""))
    return text + (f" (vs {vs.named})" if vs.named else "")


def _goal_text(drop: float, vs: Versus | None) -> str:
    """Whether a run meets the goal: "met", or what misses it; "-" for a row with no baseline to keep within
    0.3 point of. Judged on the exact means (to 1e-4 point, below float32's noise on a count of images), so a
    miss the row's two decimals hide (-0.303 prints as -0.30) names its third decimal."""
    if vs is None:
        return "-"
    checks = (("drop", drop * 100, lambda pt: pt > JPEG_DROP_GOAL_PT, JPEG_DROP_GOAL_PT),
              ("top-1", vs.top1 * 100, lambda pt: pt < -CLEAN_LOSS_GOAL_PT, -CLEAN_LOSS_GOAL_PT),
              ("TTA", None if vs.tta is None else vs.tta * 100, lambda pt: pt < -CLEAN_LOSS_GOAL_PT, -CLEAN_LOSS_GOAL_PT))
    misses = [what + (f" ({pt:+.3f} pt)" if round(pt, 2) == bound else "")
              for what, pt, fails, bound in checks if pt is not None and fails(round(pt, 4))]
    return f"**missed**: {', '.join(misses)}" if misses else "met"


class JpegRow(NamedTuple):
    """One multi-seed file's row of issue 15's table: what it is (label: "baseline", "shipped", "shipped as
    frontier_l", "" for an experiment), what changed, and its clean top-1 against its baseline (None: none)."""
    seeds: dict
    path: str
    label: str
    changed: str
    versus: Versus | None


def _with_recipe_changes(seed_files: list[dict], seed_paths: list[str]) -> list[tuple[dict, str, list[str] | None]]:
    """(file, path, recipe_changes) for each seeds file: read once for the rows and the baselines alike."""
    return [(f, path, recipe_changes(f)) for f, path in zip(seed_files, seed_paths)]   # diff: None for an experiment


def jpeg_rows(everything: list[tuple[dict, str, list[str] | None]], base: dict) -> list[JpegRow]:
    """Each multi-seed file that records JPEG-75 accuracy (a shipped recipe, today's or as it was before it
    changed, or an experiment), with the baseline its clean top-1 is compared with: the same line trained on
    the same machine (else on one of the same device and precision, named). `everything`: _with_recipe_changes;
    `base`: its _baselines."""
    # Every seeds file of a shipped recipe can be a baseline, a JPEG-scored one first; only JPEG-scored files are rows.
    files = [(f, path, diff) for f, path, diff in everything if f.get("jpeg75_drop")]
    # Each shipped recipe (train/<recipe>.toml: frontier_m, frontier_m_plain, ...) is a baseline; an experiment
    # is compared with its own line's recipe (frontier_m for frontier_m_*, experiment_line), never a plain twin, which differs
    # by its distillation. Where a file records a shipped recipe as it was before it changed (issue 15
    # retrained frontier_m), that earlier recipe is the baseline: "within 0.3 point of today's" means the
    # accuracy before the change, and today's recipe is compared with it like an experiment.
    shipped = shipped_by_weights()
    earlier = {f["recipe"] for f, _, diff in files if diff}
    rows = []
    for f, path, diff in files:
        acc, where, tta = f["test_accuracy"], trained_on(f), _tta_mean(f)
        if diff:
            label, changed, vs = "baseline", "the recipe shipped before: " + ", ".join(diff), None
        elif diff is not None and f["recipe"] in earlier:
            label, changed, vs = "shipped", "the shipped recipe", _versus(base, f["recipe"], where, acc["mean"], tta, _spread(acc))
        elif diff is not None:
            label, changed, vs = "baseline", "the shipped recipe", None
        else:
            label, changed = shipped_as(f, shipped), f["runs"][0]["training_record"]["recipe"].get("description", "")
            vs = _versus(base, experiment_line(f["recipe"], f["model"]), where, acc["mean"], tta, _spread(acc))
        rows.append(JpegRow(f, path, label, changed, vs))
    return rows


class Baseline(NamedTuple):
    """A shipped recipe's seeds file as the JPEG table compares runs with it: mean top-1, mean TTA top-1 (or
    None), the file's name where it is no row of the table (else ""), and its top-1 _spread."""
    top1: float
    tta: float | None
    unlisted: str
    spread: tuple[float, int] | None


def _baselines(everything: list[tuple[dict, str, list[str] | None]]) -> dict[tuple, Baseline]:
    """(recipe, where) -> Baseline for every seeds file of a shipped recipe, as (file, path, recipe_changes) triples."""
    base = {}
    # Earlier recipes last, and among equals JPEG-scored files last: they win.
    for f, path, diff in sorted(everything, key=lambda row: (bool(row[2]), bool(row[0].get("jpeg75_drop")))):
        if diff is not None:
            base[f["recipe"], trained_on(f)] = Baseline(f["test_accuracy"]["mean"], _tta_mean(f),
                                                        "" if f.get("jpeg75_drop") else Path(path).name,
                                                        _spread(f["test_accuracy"]))
    return base


def _versus(base: dict, recipe: str, where: tuple[TrainedOn, ...], clean: float, tta: float | None,
            spread: tuple[float, int] | None = None) -> Versus | None:
    """Against the baseline trained on the same machine; failing that, on one machine of the same
    device and precision (two lent GPUs: same code path, another host), which the cell names;
    failing that, of the same device in another precision (a CPU whose recipe's "auto" picks fp32
    where another picked bf16), which the cell names with its precision. A baseline without
    JPEG-75 figures is no row here, so the cell names its file. Where both have a TTA top-1 (fast),
    its difference too: a recipe can keep the plain top-1 and lose the TTA figure a 94 % tier rests on.
    `spread`: the run's _spread, for the standard error of the difference."""
    def single_baseline(same):
        """A baseline of this recipe from one machine with this run's `same(where)`, if the run has one kind."""
        if len({(w.device, w.precision) for w in where}) != 1:
            return None
        return next((w for r, w in base if r == recipe and len(w) == 1 and same(w[0]) == same(where[0])), None)
    other = where if (recipe, where) in base else single_baseline(lambda t: (t.device, t.precision))
    precision = ""
    if other is None and (other := single_baseline(lambda t: t.device)) is not None:
        precision = f"{other[0].device} {other[0].precision}"
    if other is None:
        return None
    b = base[recipe, other]
    machine = " ".join(n for n in (other[0].machine if other != where else "", precision) if n)
    named = [n for n in (machine, f"`{b.unlisted}`" if b.unlisted else "") if n]
    return Versus(clean - b.top1, None if tta is None or b.tta is None else tta - b.tta, ", ".join(named),
                  _difference_se(spread, b.spread))


class JpegTable(NamedTuple):
    """The JPEG table's multi-seed rows (jpeg_rows) and the baselines they were judged against, which judge
    the single-run experiments too; built once per README for the models table and the JPEG table alike."""
    rows: list[JpegRow]
    base: dict[tuple, Baseline]


def jpeg_table(seed_files: list[dict], seed_paths: list[str]) -> JpegTable:
    everything = _with_recipe_changes(seed_files, seed_paths)
    base = _baselines(everything)
    return JpegTable(jpeg_rows(everything, base), base)


def jpeg_goals(table: JpegTable) -> dict[str, str]:
    """Shipped checkpoint -> issue 15's verdict on the seeds file that holds its weights ("met", "**missed**: ..."),
    for the models table; only where the file has a baseline to judge it against."""
    shipped, out = shipped_by_weights(), {}
    for row in table.rows:
        for run in row.seeds.get("runs", []):
            name = shipped.get(run.get("weights_sha256"))
            if name and row.versus is not None:
                out[name] = _goal_text(row.seeds["jpeg75_drop"]["mean"], row.versus)
    return out


def jpeg_training_section(table: JpegTable, experiments: list[str], overhead: list[str], rel,
                          breakdown: list[str] = ()) -> str:
    """Issue 15's table: each multi-seed file that records JPEG-75 accuracy (jpeg_rows), then each single-run
    experiment (a training sidecar: its recipe says what changed); the goal column says whether the run keeps
    within the issue's bars (_goal_text); then what the augmentation costs a step."""
    rows = ["| run | what changed | seeds | top-1 | top-1 JPEG-75 | drop | top-1 vs baseline | goal | trained on | source |",
            "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    base = table.base   # also the single-run experiments' below
    for f, path, label, changed, vs in table.rows:
        jpeg, drop = f["test_accuracy_jpeg75"], f["jpeg75_drop"]
        rows.append(f"| {f['recipe']}{f' ({label})' if label else ''} | {changed} | {_seeds_text(f)} | {_top1_text(f)} | "
                    f"{_pct(jpeg['mean'])} | {drop['mean'] * 100:.2f} pt{_sd_text(drop)} | {_versus_text(vs)} | "
                    f"{_goal_text(drop['mean'], vs)} | {trained_on_text(f)} | [`{Path(path).name}`]({path}) |")
    for path in experiments:
        d = json.loads(Path(path).read_text())
        clean, jpeg = d["test_accuracy"], d.get("test_accuracy_jpeg75")
        if jpeg is None:   # trained before the JPEG-75 set existed: nothing to compare
            continue
        where = _trained_where(d)
        recipe = Path(d["recipe"]["path"]).stem if d["recipe"].get("path") else d["name"]
        start = d.get("fine_tuned_from") or {}
        if start.get("test_accuracy") is not None:   # a fine-tune: against the very weights it started from
            vs = Versus(clean - start["test_accuracy"], None, f"its start, {Path(start['checkpoint']).stem}")
        else:
            vs = _versus(base, experiment_line(recipe, d["model"]), (where,), clean, d.get("test_accuracy_tta"))
        rows.append(f"| {d['name']} | {d['recipe'].get('description', '')} | 1 (seed {d['recipe'].get('seed', 0)}) | "
                    f"{_pct(clean)}{_tta_text(d.get('test_accuracy_tta'))} | {_pct(jpeg)} | {(clean - jpeg) * 100:.2f} pt | "
                    f"{_versus_text(vs)} | {_goal_text(clean - jpeg, vs)} | {where} | [`{Path(path).name}`]({rel(path)}) |")
    text = "\n".join(rows)
    for path in overhead:
        d = json.loads(Path(path).read_text())
        lo, hi = d["overhead_range"]
        rse = d["overhead_rse"] if "overhead_rse" in d else _ratio_rse_of_trials(d.get("trials") or {})
        text += (f"\n\nWhat the augmentation costs ([`{Path(path).name}`]({rel(path)}), "
                 f"`tools/jpeg_augment_overhead.py`): a {d['model']} training step at batch {d['batch_size']} with "
                 f"{d['jpeg_fraction']:.0%} of the batch JPEG-compressed changed the step time by {d['overhead']:+.1%}"
                 + (f" (± {1.96 * rse:.1%} at 95 % confidence)" if rse is not None else "")
                 + f", median of {d['rounds']} interleaved rounds (single rounds ranged from {lo:+.0%} to {hi:+.0%}), "
                 f"on {d['provenance']['machine']} with {d['threads']} threads.")
    return text + jpeg_breakdown_text(list(breakdown), rel)


def jpeg_breakdown_text(paths: list[str], rel) -> str:
    """tools/jpeg_breakdown.py's files: each checkpoint's JPEG drop beside the drops of its two parts."""
    text = ""
    for path in paths:
        d = json.loads(Path(path).read_text())
        q = d["quality"]
        text += (f"\n\nWhich part of the round trip costs the top-1 ([`{Path(path).name}`]({rel(path)}), "
                 f"`tools/jpeg_breakdown.py`, single view, on {d['provenance']['machine']}): quantisation alone is "
                 f"quality {q} with 4:4:4 chroma, subsampling alone is quality 100 with 4:2:0 chroma; the two "
                 f"parts need not add up to the whole.\n\n"
                 f"| checkpoint | top-1 | drop at quality {q}, 4:2:0 (the JPEG-{q} set) | quantisation alone | "
                 f"4:2:0 subsampling alone |\n|---|---:|---:|---:|---:|")
        for r in d["rows"]:
            text += (f"\n| {r['checkpoint']} | {_pct(r['top1'])} | {r['drop_points']:.2f} pt | "
                     f"{r['drop_quantisation_points']:.2f} pt | {r['drop_subsampling_points']:.2f} pt |")
    return text


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- BEGIN {name} --> ... <!-- END {name} --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", action="append", default=[], help="a results file of `cifar-speed bench`")
    ap.add_argument("--seeds", action="append", default=[], help="a multi-seed results file of tools/seed_summary.py")
    ap.add_argument("--aoti", action="append", default=[], help="a results file of tools/aoti_vs_jit.py")
    ap.add_argument("--ov-profile", action="append", default=[], help="a results file of tools/openvino_profile.py")
    ap.add_argument("--jpeg-experiment", action="append", default=[],
                    help="a training sidecar of a JPEG-robustness experiment (one seed)")
    ap.add_argument("--jpeg-overhead", action="append", default=[], help="a results file of tools/jpeg_augment_overhead.py")
    ap.add_argument("--jpeg-breakdown", action="append", default=[], help="a results file of tools/jpeg_breakdown.py")
    ap.add_argument("--jpeg-seeds", action="append", default=[],
                    help="a multi-seed file for the JPEG table only (a baseline trained elsewhere, or an experiment)")
    ap.add_argument("--bench-summary", action="append", default=[],
                    help="a results file shown as a summary row per model (answer table and plots as --bench)")
    ap.add_argument("--summary-report", action="append", default=[],
                    help="the `cifar-speed report` Markdown of the --bench-summary files of one machine, linked")
    ap.add_argument("--accept-pair", action="append", default=[], metavar="OLD.json:NEW.json",
                    help="two back-to-back runs of one sweep, judged at issue 11's run-to-run bounds")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    full = [load_results(p) for p in args.bench]
    summarised = [load_results(p) for p in args.bench_summary]
    paths, results = args.bench + args.bench_summary, full + summarised
    _tag_machines(paths, results)
    text = args.readme.read_text()
    seed_files = [json.loads(Path(p).read_text()) for p in args.seeds]
    seed_paths = [os.path.relpath(p, args.readme.parent) for p in args.seeds]
    rel = lambda p: os.path.relpath(p, args.readme.parent)  # noqa: E731
    jpeg_files = seed_files + [json.loads(Path(p).read_text()) for p in args.jpeg_seeds]
    jpeg_paths = seed_paths + [rel(p) for p in args.jpeg_seeds]
    jpeg = jpeg_table(jpeg_files, jpeg_paths)
    text = replace(text, "models", models_section(seed_files, seed_paths, jpeg75_from_bench(paths, results), rel,
                                                  jpeg_goals(jpeg)))
    if results:
        machines: dict[Path, list[dict]] = {}
        earlier = earlier_weights(paths, results)
        apart = earlier_weights_apart(paths, results, earlier)
        for path, res in zip(paths, apart):
            machines.setdefault(Path(path).parent, []).append(res)
        answer = answer_section(paths, results, rel, earlier)
        for folder, group in machines.items():  # plots never mix machines
            overview = plot_overview(group, folder, machine=folder.name)
            if overview:
                answer += f"\n\n![{folder.name}: every model, backend and precision at the largest batch]({rel(overview)})"
        # A summary row's top-1 is the weights its file timed: a model retrained since gets a row of its own name
        # (the summary files are the last of `paths`).
        md = summary_markdown(args.bench_summary, apart[len(full):], args.summary_report, rel)
        for folder in dict.fromkeys(Path(p).parent for p in args.bench):
            group = [r for p, r in zip(args.bench, full) if Path(p).parent == folder]
            md += render_markdown(group)
            md += "\n" + "\n".join(f"![{p.stem}]({rel(p)})" for p in plot(group, folder)) + "\n\n"
        md += "Source: " + ", ".join(f"[`{rel(p)}`]({rel(p)})" for p in paths)
        if earlier:
            md += "\n\n" + earlier_weights_note(earlier, rel)
        text = replace(text, "bench", md)
        if "<!-- BEGIN answer -->" in text:
            text = replace(text, "answer", answer)
        if "<!-- BEGIN dawnbench -->" in text:
            text = replace(text, "dawnbench", dawnbench_section(paths, results, rel))
    text = replace(text, "vs-report", vs_report_section(results))
    if args.aoti:
        text = replace(text, "aoti", aoti_section(args.aoti, rel))
    if args.accept_pair:
        text = replace(text, "acceptance", acceptance_section(args.accept_pair, rel))
    if args.ov_profile:
        text = replace(text, "ov-profile", ov_profile_section(args.ov_profile, rel))
    if args.jpeg_experiment or args.jpeg_overhead or args.jpeg_seeds:
        text = replace(text, "jpeg-training", jpeg_training_section(jpeg, args.jpeg_experiment, args.jpeg_overhead,
                                                                    rel, args.jpeg_breakdown))
    files = {args.readme: text.encode()}
    index = answer_index_file(args.readme.parent / "results", paths) if results else None
    if index is not None:
        files[index[0]] = index[1]
    atomic_write_many(files)   # one set: the README and the index of its answers never disagree
    print(f"updated {', '.join(map(str, files))}")
    return 0


def answer_index_file(root: Path, paths: list[str]) -> tuple[Path, bytes] | None:
    """results/answers.json: the files the answer tables were made from, which `cifar-speed recommend` reads
    by default, so that the command answers what the README says it does. None (and a line saying why)
    where a file lies outside a machine folder of `root`: the index names files there only."""
    from cifar_speed.recommend import ANSWERS_FORMAT, ANSWERS_INDEX

    root, entries = root.resolve(), []
    for p in paths:
        f = Path(p).resolve()
        if not f.is_relative_to(root) or len(f.relative_to(root).parts) != 2:
            print(f"{ANSWERS_INDEX} not written: {p} is not in a machine folder of {root}")
            return None
        entries.append(f.relative_to(root).as_posix())
    index = {"format": ANSWERS_FORMAT, "written_by": "tools/update_readme.py (tools/regen_readme.sh)",
             "about": "the results files behind the README's answer tables: `cifar-speed recommend` reads these, "
                      "and every bench-*.json, by default",
             "files": sorted(set(entries))}
    return root / ANSWERS_INDEX, (json.dumps(index, indent=1) + "\n").encode()


if __name__ == "__main__":
    raise SystemExit(main())
