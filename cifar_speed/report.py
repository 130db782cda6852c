"""Markdown tables and matplotlib plots from `cifar-speed bench` results files.

    render_markdown(results_list) -> str      tables for the README, one per results file and mode
    plot(results_list, out_dir) -> [paths]    accuracy vs images/s, speed-up over eager fp32 (PNG)
    load_results(path) -> dict                a results file, checked against the schema
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import CifarSpeedError
from .fileio import require_file
from .harness import confidence_95
from .resultsfile import figure_quantile, quantile_words
from .schemas import PYTEST_BENCHMARK_READ, read_json_file, results_read_schema, schema_error
from .sweep import SCHEMA, Cell, cells_of, validate_results


def load_results(path) -> dict:
    """A `cifar-speed bench` results file, or pytest-benchmark's --benchmark-json of bench/ (converted)."""
    path = require_file(path, "results file")
    obj = read_json_file(path, "results file")
    if is_pytest_benchmark(obj):
        problem = schema_error(obj, PYTEST_BENCHMARK_READ)
        if problem:
            raise CifarSpeedError(f"{path} is not a usable pytest-benchmark file: {problem}")
        obj = from_pytest_benchmark(obj, path)
    else:
        try:
            validate_results(obj)
        except CifarSpeedError as e:
            raise CifarSpeedError(f"{path}: {e}") from None
    problem = schema_error(obj, results_read_schema())  # every field report and compare read, typed
    if problem:
        raise CifarSpeedError(f"{path} is not a usable results file: {problem}")
    return obj


def _ok(results: dict, mode: str):
    return [c for c in results["cells"] if c.get("status") == "ok" and c.get("mode") == mode]


def _modes(results: dict) -> list[str]:
    return list(dict.fromkeys(c["mode"] for c in results["cells"] if c.get("status") == "ok"))


def eager_fp32_scores(paths: list, results_list: list[dict]):
    """(model, weights sha256, accuracy record, results file) of every eager fp32 cell that scored a
    checkpoint on the whole test set, in file order: a checkpoint's accuracy found by its weights."""
    for path, res in zip(paths, results_list):
        models = res.get("models") or {}
        for c in res.get("cells", []):
            acc = c.get("accuracy") or {}
            sha = models.get(c.get("model"), {}).get("weights_sha256")
            if (c.get("status") == "ok" and (c.get("backend"), c.get("precision")) == ("eager", "fp32") and sha
                    and acc.get("images") == 10_000):
                yield c["model"], sha, acc, path


# -- pytest-benchmark's JSON -----------------------------------------------------------------------

def is_pytest_benchmark(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("benchmarks"), list) and "machine_info" in obj


def from_pytest_benchmark(obj: dict, path=None) -> dict:
    """pytest-benchmark's --benchmark-json of our bench/ suite as a results dict, one cell per case.

    Its rounds are single calls timed back to back, not interleaved trials: the spread is the rounds'
    IQR (images/s at q3 and q1) and the speed-up the ratio of medians against eager fp32 in the same
    file, not a paired one. Cases without model / precision / batch_size in extra_info are not ours."""
    ours = obj.get("cifar_speed") or {}
    info = obj.get("machine_info") or {}
    prov = ours.get("provenance") or {
        "machine": str(info.get("node") or "unknown"), "versions": {}, "torch_threads": None, "gpu": None,
        "cpu": {"model": (info.get("cpu") or {}).get("brand_raw", "?"), "usable_cpus": (info.get("cpu") or {}).get("count"),
                "features": []}, "git_commit": (obj.get("commit_info") or {}).get("id")}
    cells = []
    for b in obj["benchmarks"]:
        e, st = b.get("extra_info") or {}, b.get("stats") or {}
        batch, med = e.get("batch_size"), st.get("median")
        if not (e.get("model") and e.get("precision") and isinstance(batch, int) and batch > 0 and med):
            continue
        q1, q3 = st.get("q1", med), st.get("q3", med)
        runner = e.get("runner") or {}
        flops = e.get("flops_per_image")
        cells.append({
            "model": e["model"], "architecture": e["model"], "backend": e.get("backend") or "train-step",
            "precision": e["precision"], "device": e.get("device", "cpu"), "batch_size": batch, "mode": "device",
            "threads": prov.get("torch_threads"),
            "memory_format": runner.get("memory_format") or ("channels_last" if e.get("channels_last") else None),
            "status": "ok", "runner": runner, "images_per_s": batch / med,
            "images_per_s_range": [batch / q3 if q3 else None, batch / q1 if q1 else None],
            "latency": {"n": st.get("rounds"), "median_ms": med * 1e3, "min_ms": st.get("min", med) * 1e3,
                        "max_ms": st.get("max", med) * 1e3, "mean_ms": st.get("mean", med) * 1e3,
                        "trial_median_ms": {"min": q1 * 1e3, "max": q3 * 1e3, "iqr": (q3 - q1) * 1e3},
                        "spread": "IQR of pytest-benchmark rounds"},
            "gflops": flops * batch / med / 1e9 if flops else None, "peak_fraction": None,
            "speedup_vs_eager_fp32": None, "accuracy": _scored(e.get("accuracy")), "disturbed": None})
    if not cells:
        raise CifarSpeedError(f"{path}: a pytest-benchmark file with no cifar-speed benchmark in it "
                              "(extra_info needs model, precision, batch_size)")
    base = {(c["model"], c["batch_size"]): c["images_per_s"] for c in cells
            if (c["backend"], c["precision"]) == ("eager", "fp32")}
    for c in cells:
        if (c["model"], c["batch_size"]) in base:
            c["speedup_vs_eager_fp32"] = c["images_per_s"] / base[(c["model"], c["batch_size"])]
    scored = [c["accuracy"]["images"] for c in cells if isinstance(c["accuracy"].get("images"), int)]
    return {"schema": SCHEMA, "source_format": "pytest-benchmark", "created": str(obj.get("datetime")),
            "provenance": prov, "harness": {"accuracy_images": max(scored, default=0), "modes": ["device"]}, "peak": {},
            "models": {}, "skipped": [], "cells": cells}


def _scored(accuracy) -> dict:
    """A case's top-1 figures as the suite recorded them (bench/test_inference.py), {} where it was not
    scored (its status and reason instead) or the record is not ours."""
    if not isinstance(accuracy, dict) or not isinstance(accuracy.get("top1"), (int, float)):
        return {}
    return {k: v for k, v in accuracy.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# -- the bench command's console table ---------------------------------------------------------------

def mode_text(mode: str) -> str:
    """How a table names a mode: where the inputs live, or for "async" how the requests are served."""
    if mode == "async":
        return "async: several requests in flight, images/s = served throughput"
    return f"{mode}-resident inputs"


def fastest_cells(cells: list[Cell]) -> dict[tuple[str, int, str], Cell]:
    """(model, batch, mode) -> the cell of the highest images/s among ok cells that keep eager fp32's
    top-1 (a cell flagged ACCURACY DROP is not one to ship, however fast); the first on a tie."""
    best: dict = {}
    for c in cells:
        if c.status != "ok" or c.accuracy_flagged or not c.images_per_s:
            continue
        k = (c.model, c.batch_size, c.mode)
        if k not in best or c.images_per_s > best[k].images_per_s:
            best[k] = c
    return best


def fastest(results: dict) -> dict[tuple[str, int, str], tuple[str, str]]:
    """(model, batch, mode) -> (backend, precision) of fastest_cells."""
    return {k: (c.backend, c.precision) for k, c in fastest_cells(cells_of(results)).items()}


def skipped_lines(results: dict) -> list[str]:
    seen, out = set(), []
    for s in results.get("skipped", []):
        k = (s["backend"], s["precision"], s["reason"])
        if k not in seen:
            seen.add(k)
            out.append(f"{s['backend']} {s['precision']}: {s['reason']}")
    return out


def artifact_lines(results: dict) -> list[str]:
    """One line per artifact file the run timed: which cells, where, its sha256, cache hit or built."""
    seen, out = set(), []
    for c in results.get("cells", []):
        r = c.get("runner") or {}
        if c.get("status") != "ok" or not r.get("artifact") or r["artifact"] in seen:
            continue
        seen.add(r["artifact"])
        how = "cache hit" if r.get("cache_hit") else "built into the cache"
        out.append(f"{c['model']} {c['backend']} {c['precision']}: {r['artifact']} "
                   f"(sha256 {r.get('artifact_sha256', '?')[:12]}, {how})")
    return out


def backend_label(c: Cell) -> str:
    """The backend with any non-default option of its variant: 'compile (mode=max-autotune)'."""
    return c.backend + (f" ({c.variant_options})" if c.variant_options else "")


def _row_key(c: Cell) -> tuple:
    return (c.model, backend_label(c), c.precision, c.memory_format or "", c.threads or 0)


def figure_words(results: dict) -> tuple[str, str]:
    """What a run's img/s and its x (speed-up) are, in words for a legend (resultsfile.figure_quantile):
    a percentile of the trial medians and the ratio of two such (harness.figure_ratio), or in files
    from before, the median and the median of per-round ratios."""
    quantile = figure_quantile(results)
    if quantile == 50:
        return "the median of the trial medians", "median of per-round ratios against eager fp32"
    name = quantile_words(quantile)
    return f"the {name} of the trial medians", f"eager fp32's {name} over the cell's, from the rounds both ran"


def spread_text(c: Cell) -> str:
    """'±3%': the 95 % confidence half-width of the figure img/s is from (1.96 standard errors from
    its trials; Student's t below 10 values: a few processes' figures or trials); files without
    trials: half the min-max range of the trials' images/s ('±3% range')."""
    if not c.images_per_s:
        return ""
    rse = c.figure_rse()
    if rse is not None:
        return f"±{confidence_95(rse, c.median_count()) * 100:.1f}%"
    lo, hi = c.images_per_s_range or (None, None)
    return f"±{(hi - lo) / 2 / c.images_per_s * 100:.0f}% range" if lo and hi else ""


def _mode_cells(results: dict, mode: str | None) -> tuple[list[Cell], str]:
    cells = [c for c in cells_of(results) if mode is None or c.mode == mode]
    mode = mode or (cells[0].mode if cells else "device")
    return [c for c in cells if c.mode == mode], mode


def process_note(c: Cell) -> str:
    """bench --processes: each process's img/s, so a process that ran in another state stands out."""
    per_process = ", ".join(f"{c.batch_size / (p.get('lower_quartile_ms', p['median_ms']) / 1e3):,.0f}"
                            for p in c.processes)
    return f"b{c.batch_size} per process: {per_process}"


def table(results: dict, mode: str | None = None):
    """A rich Table of speed: rows model x backend/precision/layout(/threads), a column pair per batch
    size; ★ = fastest; img/s with the trials' spread, speed-up with the paired ratios' range. Accuracy
    is accuracy_table's: with four batch sizes both would not fit a 160-column console."""
    from rich.table import Table

    cells, mode = _mode_cells(results, mode)
    batches = sorted({c.batch_size for c in cells if c.batch_size})
    threads = sorted({c.threads for c in cells if c.threads})
    one_thread_count = len(threads) <= 1   # a GPU run, or a CPU run without the 1-thread axis
    best = fastest(results)
    figure, ratio = figure_words(results)
    t = Table(title=f"images/s ({mode_text(mode)}; {figure} ± its 95 % confidence; x = speed-up over eager fp32 "
                    f"({ratio}); ★ fastest per model without an accuracy drop"
                    + (f"; {threads[0]} threads)" if one_thread_count and threads
                       and not any(c.device.startswith("cuda") for c in cells) else ")"))
    for col in ("model", "backend precision", "layout") + (() if one_thread_count else ("threads",)):
        t.add_column(col, no_wrap=True)
    for b in batches:
        t.add_column(f"b{b} img/s", justify="right", no_wrap=True)
        t.add_column(f"b{b} x", justify="right", no_wrap=True)
    t.add_column("notes")
    rows: dict = {}
    for c in cells:
        rows.setdefault(_row_key(c), {})[c.batch_size] = c
    for (model, backend, precision, layout, n_threads), by_batch in rows.items():
        row = [model, f"{backend} {precision}", layout or "-"] + ([] if one_thread_count else [str(n_threads or "")])
        notes = set()
        for b in batches:
            c = by_batch.get(b)
            if not c or c.status != "ok":
                row += ["failed" if c else "-", ""]
                if c:
                    notes.add((c.reason or "")[:60])
                continue
            star = best.get((model, b, mode)) == (backend, precision)
            ips = f"{c.images_per_s:,.0f} {spread_text(c)}".strip() + (" ★" if star else "")
            row += [f"[bold green]{ips}[/]" if star else ips,
                    f"{c.speedup_vs_eager_fp32:.2f}" if c.speedup_vs_eager_fp32 else ""]
            if c.disturbed:
                notes.add("disturbed")
            if c.accuracy_flagged:
                notes.add("ACCURACY DROP")
            if c.processes:
                notes.add(process_note(c))
        t.add_row(*row, ", ".join(sorted(notes)))
    return t


def accuracy_table(results: dict, mode: str | None = None):
    """Top-1 (clean and JPEG), agreement with eager fp32 and the largest logit difference, one row per
    model x backend x precision x layout (the same program at every batch size and thread count)."""
    from rich.table import Table

    cells, _ = _mode_cells(results, mode)
    t = Table(title="accuracy on the test images (the cell's own program; agree = same top-1 class as eager fp32)")
    for col in ("model", "backend precision", "layout"):
        t.add_column(col, no_wrap=True)
    for col in ("top-1", "JPEG-75", "agree", "max Δlogit", "notes"):
        t.add_column(col, justify="right" if col != "notes" else "left")
    seen = set()
    for c in cells:
        key = (c.model, backend_label(c), c.precision, c.memory_format)
        if key in seen or c.status != "ok" or not c.accuracy:
            continue
        seen.add(key)
        acc = c.accuracy
        jpeg = next((v for k, v in acc.items() if k.startswith("top1_jpeg")), None)
        t.add_row(c.model, f"{backend_label(c)} {c.precision}", c.memory_format or "-",
                  f"{acc['top1'] * 100:.2f}%" if "top1" in acc else "",
                  f"{jpeg * 100:.2f}%" if jpeg is not None else "",
                  f"{acc['agreement'] * 100:.2f}%" if "agreement" in acc else "",
                  f"{acc['max_logit_diff']:.3g}" if acc.get("max_logit_diff") is not None else "",
                  "ACCURACY DROP" if c.accuracy_flagged else "")
    return t


def peak_text(peak: dict) -> str:
    """The denominators of the % peak column, as a results file recorded them."""
    if "denominator_gflops" in peak:  # files written before per-precision peaks: one bf16 matmul peak for all
        what = f"{peak['denominator_gflops']:,.0f} GFLOP/s for every precision"
    elif "given_gflops" in peak:
        what = f"{peak['given_gflops']:,.0f} GFLOP/s for every precision"
    else:
        kinds = peak.get("denominators", {})   # which probe (matmul or conv) each precision's figure came from
        what = ", ".join(f"{k.split('_')[0]} {v:,.0f} {'GOP/s' if k.endswith('gops') else 'GFLOP/s'}"
                         + (f" ({kinds[k.split('_')[0]]})" if k.split('_')[0] in kinds else "")
                         for k, v in peak.items() if k.endswith(("_gflops", "_gops")))
    missing = "".join(f"; {k}: {why}" for k, why in (peak.get("unmeasured") or {}).items())
    return (f"{what} ({peak.get('source', '?')}"
            f"{'; measured under contention, so too low' if peak.get('disturbed') else ''}{missing})")


def render_markdown(results_list: list[dict]) -> str:
    out = []
    for results in results_list:
        prov = results["provenance"]
        cpu, gpu = prov["cpu"], prov.get("gpu")
        v = prov["versions"]
        peak = results.get("peak", {})
        out.append(f"### {prov['machine']} ({results['created']})\n")
        out.append(f"{'GPU ' + gpu['name'] + ', ' if gpu else ''}CPU {cpu['model']} ({cpu['usable_cpus']} cores; "
                   f"{' '.join(cpu['features'])}), torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}"
                   f"{', torch-tensorrt ' + v['torch_tensorrt'] if v.get('torch_tensorrt') else ''}; "
                   f"{prov['torch_threads']} threads; commit `{prov.get('git_commit')}`. Peak for the % column: "
                   f"{peak_text(peak)}. "
                   f"Accuracy on {results['harness']['accuracy_images']:,} test images.\n")
        out += _mode_tables(results)
        skipped = skipped_lines(results)
        failed = [c for c in results["cells"] if c.get("status") == "failed"]
        if skipped or failed:
            out.append("\nNot run here:\n")
            out += [f"- {s}" for s in skipped]
            out += [f"- {c['model']} {c['backend']} {c['precision']}: failed ({c['reason']})" for c in failed]
        out.append("")
    return "\n".join(out) + "\n"


def _mode_tables(results: dict) -> list[str]:
    """One Markdown table per input mode: a row per model x backend x precision x layout x threads."""
    out = []
    best = fastest(results)
    all_cells = cells_of(results)
    notes: list[str] = []
    for mode in _modes(results):
        cells = [c for c in all_cells if c.status == "ok" and c.mode == mode]
        batches = sorted({c.batch_size for c in cells})
        last_b = batches[-1]
        head = (["model", "backend", "precision", "layout", "threads"]
                + [f"b{b} img/s ± trials (x eager)" for b in batches]
                + [f"b{last_b} p50 ms", f"b{last_b} p99 ms", f"b{last_b} % of best probe", "top-1", "top-1 JPEG-75",
                   "agree", "max Δlogit"])
        figure, ratio = figure_words(results)
        out.append(f"\n{mode_text(mode)} (**bold** = fastest for the model at that batch size without an accuracy drop; img/s from "
                   f"{figure}; ± = its 95 % confidence, 1.96 standard errors from its trials (below 10 trials or processes: "
                   f"Student's t); x = {ratio}):\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|")
        rows: dict = {}
        for c in cells:
            rows.setdefault(_row_key(c), {})[c.batch_size] = c
        for (model, backend, precision, layout, threads), by in rows.items():
            row = [model, backend, precision, layout or "-", str(threads or "")]
            flags = set()
            for b in batches:
                c = by.get(b)
                if not c:
                    row.append("-")
                    continue
                text = f"{c.images_per_s:,.0f} {spread_text(c)}".strip()
                if c.speedup_vs_eager_fp32:
                    text += f" ({c.speedup_vs_eager_fp32:.2f}x)"
                if best.get((model, b, mode)) == (backend, precision):
                    text = f"**{text}**"
                row.append(text)
                flags |= {"disturbed"} if c.disturbed else set()
                flags |= {"accuracy drop"} if c.accuracy_flagged else set()
            last = by.get(last_b) or next(iter(by.values()))
            acc = last.accuracy or {}
            jpeg = next((v for k, v in acc.items() if k.startswith("top1_jpeg")), None)
            p99 = last.latency.get("p99_ms")
            if (last.latency.get("n") or 0) < 100:   # older files kept a p99 of fewer calls: ~their maximum
                p99 = None
            frac = f"{last.peak_fraction * 100:.1f}%" if last.peak_fraction is not None else ""
            note = last.peak_note or (
                "above the peak of a file written before the conv-shaped probe: its one square-matmul probe, "
                "judged at 0.6 x threads, could read low under contention" if (last.peak_fraction or 0) > 1 else None)
            if note:
                label = " ".join(part for part in (model, backend, precision, layout) if part)   # no layout: no gap
                notes.append(f"{label} {threads}t ({mode} table): {note}")   # numbered across both tables
                frac += f" [{len(notes)}]"
            row += [f"{last.latency['median_ms']:.2f}", f"{p99:.2f}" if p99 is not None else "n < 100", frac,
                    f"{acc['top1'] * 100:.2f}%" + (" ⚠" if "accuracy drop" in flags else "") if "top1" in acc else "",
                    f"{jpeg * 100:.2f}%" if jpeg is not None else "",
                    # Only what was measured: a pytest-benchmark case is scored but not compared with eager's logits.
                    f"{acc['agreement'] * 100:.2f}%" if "agreement" in acc else "",
                    f"{acc['max_logit_diff']:.2g}" if "max_logit_diff" in acc else ""]
            if "disturbed" in flags:
                row[2] += " (disturbed)"
            out.append("| " + " | ".join(row) + " |")
    if notes:
        out.append("\nAbove 100 % of the best probe:\n")
        out += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    return out


def _largest_batch_cells(results: dict, mode: str) -> list[dict]:
    """The cells of the largest batch at the run's own thread count (the 1-thread cells are batch 1 extras)."""
    cells = _ok(results, mode)
    if not cells:
        return []
    b = max(c["batch_size"] for c in cells)
    cells = [c for c in cells if c["batch_size"] == b]
    threads = max((c.get("threads") or 0 for c in cells), default=0)
    return [c for c in cells if (c.get("threads") or 0) == threads]


def plot(results_list: list[dict], out_dir) -> list[Path]:
    """Two PNGs per results file and mode: accuracy vs images/s, and speed-up over eager fp32
    (cifar_speed/plots.py: fixed colours per backend x precision, a marker per model)."""
    from .plots import per_results_file

    return per_results_file(results_list, out_dir)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (speed, accuracy) points that no other point beats on both, fastest first."""
    front, best_acc = [], -1.0
    for speed, acc in sorted(points, key=lambda p: (-p[0], -p[1])):
        if acc > best_acc:
            front.append((speed, acc))
            best_acc = acc
    return front


def plot_overview(results_list: list[dict], out_dir, mode: str = "device", machine: str | None = None) -> Path | None:
    """One accuracy-vs-throughput figure of every model, backend and precision of one machine with
    its Pareto front (cifar_speed/plots.py); None when the files come from several machines, unless
    the caller names the one machine they all ran on (`machine`: their results folder)."""
    from .plots import overview

    return overview(results_list, out_dir, mode, machine)


def write_report(paths, out_dir) -> tuple[Path, list[Path]]:
    from .fileio import atomic_write_text

    results = [load_results(p) for p in paths]
    if not results:
        raise CifarSpeedError("no results files given")
    out_dir = Path(out_dir)
    md = render_markdown(results)
    overview = plot_overview(results, out_dir)
    pngs = ([overview] if overview else []) + plot(results, out_dir)
    md += "\n" + "\n".join(f"![{p.stem}]({os.path.relpath(p, out_dir)})" for p in pngs) + "\n"
    md_path = out_dir / "report.md"
    atomic_write_text(md_path, md)
    return md_path, pngs


def best_cells_markdown(results_list: list[dict], mode: str = "device") -> str:
    """One row per model of one machine's results files: its eager fp32 top-1, then per batch size the
    fastest cell that keeps eager fp32's top-1 (not flagged), its img/s and paired speed-up. The
    summary of a sweep whose full tables are too long to read inline."""
    cells = [c for r in results_list for c in cells_of(r) if c.mode == mode]
    batches = sorted({c.batch_size for c in cells if c.batch_size})
    models = list(dict.fromkeys(c.model for c in cells))
    head = ["model", "eager fp32 top-1", "JPEG-75"] + [f"batch {b}: fastest cell, img/s (x eager fp32)" for b in batches]
    rows = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---|" * len(batches)]
    best = fastest_cells(cells)
    for model in models:
        mine = [c for c in cells if c.model == model]
        base = next((c for c in mine if c.baseline and c.status == "ok" and c.accuracy), None)
        acc = (base.accuracy if base else {}) or {}
        jpeg = next((v for k, v in acc.items() if k.startswith("top1_jpeg")), None)
        row = [model, f"{acc['top1'] * 100:.2f} %" if "top1" in acc else "-",
               f"{jpeg * 100:.2f} %" if jpeg is not None else "-"]
        for b in batches:
            c = best.get((model, b, mode))
            if c is None:
                row.append("-")
                continue
            threads = f", {c.threads} thread{'s' if c.threads != 1 else ''}" if c.threads else ""
            speedup = f" ({c.speedup_vs_eager_fp32:.2f}x)" if c.speedup_vs_eager_fp32 else ""
            row.append(f"{backend_label(c)} {c.precision}{threads}: {c.images_per_s:,.0f}{speedup}")
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)
