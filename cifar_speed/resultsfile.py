"""A bench run on disk: the results JSON, its cells as CSV and its skipped combinations as a second
CSV, written side by side as one atomic set. Every CSV row carries the run's columns (created,
machine, commit) so CSVs of several runs concatenate (pandas.concat) without losing which run a
row came from.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from dataclasses import asdict
from pathlib import Path

from .fileio import atomic_write_many
from .provenance import machine_slug
from .sweep import Cell, cells_of

RUN_COLUMNS = ["created", "machine", "commit"]
CSV_COLUMNS = RUN_COLUMNS + [
    "model", "backend", "precision", "memory_format", "variant_options", "device", "batch_size", "mode", "threads",
    "trials", "n",
    "status", "images_per_s", "images_per_s_min", "images_per_s_max", "lower_quartile_ms", "median_ms", "trial_median_min_ms",
    "trial_median_max_ms", "trial_median_iqr_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "gflops",
    "peak_fraction", "peak_denominator", "speedup_vs_eager_fp32", "speedup_paired_median", "speedup_min", "speedup_max", "top1",
    "top1_jpeg75", "agreement", "max_logit_diff", "accuracy_flagged", "disturbed", "trials_disturbed",
    "cpu_wall_ratio", "canary_ms", "wake_us", "host_normalized", "speedup_host_normalized", "lower_quartile_rse", "median_rse", "speedup_rse", "reason"]
SKIPPED_COLUMNS = RUN_COLUMNS + ["model", "backend", "precision", "reason"]


def _run_columns(results: dict) -> dict:
    prov = results.get("provenance", {})
    return {"created": results.get("created"), "machine": prov.get("machine"), "commit": prov.get("git_commit")}


def csv_row(cell: Cell, run: dict) -> dict:
    lat, acc = cell.latency or {}, cell.accuracy or {}
    trial = lat.get("trial_median_ms") or {}
    ips = cell.images_per_s_range or [None, None]
    sp = cell.speedup_range or [None, None]
    return {**run, **{k: v for k, v in asdict(cell).items() if k in CSV_COLUMNS},
            "trials": lat.get("trials"), "n": lat.get("n"), "images_per_s_min": ips[0], "images_per_s_max": ips[1],
            **{k: lat.get(k) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "cpu_wall_ratio",
                                      "trials_disturbed", "median_rse", "lower_quartile_ms", "lower_quartile_rse")},
            "trial_median_min_ms": trial.get("min"), "trial_median_max_ms": trial.get("max"),
            "trial_median_iqr_ms": trial.get("iqr"), "speedup_min": sp[0], "speedup_max": sp[1],
            "canary_ms": (lat.get("canary_ms") or {}).get("median"),
            "wake_us": (lat.get("wake_us") or {}).get("median"),
            "host_normalized": (lat.get("host_normalized") or {}).get("median"),
            **{k: acc.get(k) for k in ("top1", "top1_jpeg75", "agreement", "max_logit_diff")}}


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_csv(results: dict) -> str:
    """One row per cell, the run's columns on every row, so several runs' CSVs concatenate."""
    run = _run_columns(results)
    return _csv([csv_row(c, run) for c in cells_of(results)], CSV_COLUMNS)


def skipped_csv(results: dict) -> str:
    run = _run_columns(results)
    return _csv([{**run, **s} for s in results.get("skipped", [])], SKIPPED_COLUMNS)


def skipped_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + "-skipped.csv")


def default_results_path(name: str | None = None) -> Path:
    name = name or "bench-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    from .locate import results_dir

    return results_dir(machine_slug()) / f"{name}.json"


def write_results(results: dict, path) -> tuple[Path, Path]:
    """JSON, the cells' CSV and the skipped combinations' CSV (skipped_path) side by side, each
    written atomically."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    csv_path = path.with_suffix(".csv")
    # One set: all three are staged and fsynced before any is moved into place (a full disk or a bad
    # folder leaves none of them, never a JSON without its CSV).
    text = json.dumps(results, indent=2, sort_keys=False, default=str) + "\n"  # as atomic_write_json writes it
    atomic_write_many({skipped_path(csv_path): skipped_csv(results).encode(), csv_path: to_csv(results).encode(),
                       path: text.encode()})
    return path, csv_path


def figure_quantile(results: dict) -> int:
    """The percentile of the trial medians a run's img/s and speed-ups are (harness.FIGURE_QUANTILE
    when it was written); files from before the setting existed took the median (50)."""
    return (results.get("harness") or {}).get("figure_quantile") or 50


def quantile_words(quantile: int) -> str:
    """'lower quartile', 'median', '10th percentile' ...: a percentile's name in prose."""
    return {25: "lower quartile", 50: "median", 75: "upper quartile"}.get(quantile, f"{quantile}th percentile")
