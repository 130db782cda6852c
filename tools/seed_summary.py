#!/usr/bin/env python3
"""Gather the runs of one recipe trained with different seeds into one results file: test accuracy
(and TTA and JPEG-75 accuracy where recorded, with the JPEG drop) per seed, mean, sample standard deviation, min and max, and the
training wall time of each run with its CPU load.

--recorded takes a run whose weights were not kept (a session's runs/ folder is gone) from its training
record as committed in results/ (`train-*.json`): read and validated as a sidecar, never loaded as
weights, so its figures are those training wrote and the run says `weights_verified: false`.

--score-jpeg scores a run whose sidecar has no JPEG-75 top-1 (trained before that set existed) on it
now, from the weights as stored, and says so in the run (`test_accuracy_jpeg75_scored_by`): a
shipped checkpoint of that age can then be the baseline of a JPEG-robust retraining.

Every figure is read from the sidecars `cifar-speed train` wrote; nothing is re-typed. Weights that
are not shipped (runs/ is not in git) are identified by their sha256, and the sidecars are copied
whole into the results file so that each number keeps its provenance.

    .venv/bin/python tools/seed_summary.py results/checkpoints/fast.json runs/fast_s1.json \\
        runs/fast_s2.json --out results/amd-epyc-2c-avx512bf16/fast-seeds.json
    .venv/bin/python tools/seed_summary.py results/checkpoints/bases/mobilenetv3_small-scratch.json \\
        --score-jpeg --out results/amd-epyc-2c-avx512bf16/mobilenetv3_small-seeds.json
    .venv/bin/python tools/seed_summary.py runs/m_s1.json runs/m_s2.json \\
        --recorded results/amd-epyc-2c-avx512bf16/train-m.json --out results/amd-epyc-2c-avx512bf16/m-seeds.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed.checkpoint import load_checkpoint, read_sidecar, trained_weights_sha256  # noqa: E402
from cifar_speed.errors import CifarSpeedError  # noqa: E402
from cifar_speed.fileio import atomic_write_text  # noqa: E402
from cifar_speed.provenance import provenance  # noqa: E402
from cifar_speed.train.recipe import with_added_fields  # noqa: E402


def _stats(values: list[float]) -> dict:
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def _recipe_name(meta: dict) -> str:
    """The recipe file's stem (`fast_jpeg50`), not the run's --name (`fast_jpeg50_s1`)."""
    recipe = meta["recipe"]
    return Path(recipe["path"]).stem if recipe.get("path") else recipe.get("name") or meta["name"]


def _settings(recorded: dict) -> dict:
    """A recorded recipe without its seed and name, fields added since at their defaults, so two seeds of
    one recipe trained either side of a field's addition compare equal."""
    return {k: v for k, v in with_added_fields(recorded).items() if k not in ("seed", "name", "path")}


def _score_jpeg75(model, meta, data_dir) -> dict:
    """The JPEG-75 top-1 of a checkpoint whose training did not record it, scored as training scores it."""
    from cifar_speed import data as D
    from cifar_speed.evaluation import jpeg75_scores

    return {**jpeg75_scores(model, D.load_split("test", data_dir), meta.mean, meta.std, "cpu"),
            "test_accuracy_jpeg75_scored_by": "tools/seed_summary.py"}


def _jpeg75(run: dict) -> float | None:
    """A run's JPEG-75 top-1: as its training recorded it, else as --score-jpeg scored it."""
    recorded = run["meta"].get("test_accuracy_jpeg75")
    return recorded if recorded is not None else run["scored"].get("test_accuracy_jpeg75")


def summarise(sidecars: list[Path], score_jpeg: bool = False, data_dir=None, recorded: list[Path] = ()) -> dict:
    runs = []
    for s in sidecars:
        model, meta = load_checkpoint(s)  # verifies the weights' sha256 against the sidecar
        runs.append({"sidecar": str(s), "seed": meta["recipe"]["seed"], "meta": meta, "model": model})
    for s in recorded:   # validated as a sidecar; its weights are gone, so nothing to verify or score
        meta = read_sidecar(s)
        runs.append({"sidecar": str(s), "seed": meta["recipe"]["seed"], "meta": meta, "model": None})
    if not runs:
        raise CifarSpeedError("no runs given")
    models = {r["meta"]["model"] for r in runs}
    recipes = {json.dumps(_settings(r["meta"]["recipe"]), sort_keys=True) for r in runs}
    if len(models) != 1 or len(recipes) != 1:
        raise CifarSpeedError("these checkpoints are not one recipe trained with different seeds")
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise CifarSpeedError(f"two checkpoints share a seed: {seeds}")
    for r in runs:   # scored once the runs are known to belong together: a refusal costs no evaluation
        unscored = score_jpeg and r["meta"].get("test_accuracy_jpeg75") is None
        if unscored and r["model"] is None:
            raise CifarSpeedError(f"{r['sidecar']} records no JPEG-75 top-1 and its weights were not kept to score one")
        r["scored"] = _score_jpeg75(r["model"], r["meta"], data_dir) if unscored else {}
    out = {
        "schema": "cifar-speed-seeds/1",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": models.pop(),
        "recipe": _recipe_name(runs[0]["meta"]),
        "seeds": seeds,
        "test_accuracy": _stats([r["meta"]["test_accuracy"] for r in runs]),
        "train_seconds": _stats([r["meta"]["train_seconds"] for r in runs]),
        "runs": [{"seed": r["seed"], "name": r["meta"]["name"], "sidecar": r["sidecar"],
                  "test_accuracy": r["meta"]["test_accuracy"],
                  "test_accuracy_tta": r["meta"].get("test_accuracy_tta"),
                  "test_accuracy_jpeg75": _jpeg75(r),
                  "train_seconds": r["meta"]["train_seconds"],
                  "train_images_per_s": r["meta"]["train_images_per_s"],
                  "train_cpu_wall_ratio": r["meta"].get("train_cpu_wall_ratio"),
                  "train_disturbed": r["meta"].get("train_disturbed"),
                  "weights_sha256": trained_weights_sha256(r["meta"]),
                  "weights_verified": r["model"] is not None,
                  **{k: v for k, v in r["scored"].items() if k != "test_accuracy_jpeg75"},
                  "training_record": r["meta"]} for r in runs],   # as training wrote it, never the scores added here
        "provenance": provenance(),
    }
    if all(r["meta"].get("test_accuracy_tta") is not None for r in runs):
        out["test_accuracy_tta"] = _stats([r["meta"]["test_accuracy_tta"] for r in runs])
    if all(_jpeg75(r) is not None for r in runs):   # with what JPEG-75 inputs cost each seed, in points of top-1
        out["test_accuracy_jpeg75"] = _stats([_jpeg75(r) for r in runs])
        out["jpeg75_drop"] = _stats([r["meta"]["test_accuracy"] - _jpeg75(r) for r in runs])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sidecars", nargs="*", type=Path)
    ap.add_argument("--recorded", action="append", default=[], type=Path,
                    help="a run's committed training record whose weights were not kept (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--score-jpeg", action="store_true",
                    help="score a run that has no JPEG-75 top-1 on that set now (from its stored weights)")
    ap.add_argument("--data-dir", help="folder holding cifar-10-batches-py (for --score-jpeg)")
    args = ap.parse_args(argv)
    try:
        summary = summarise(args.sidecars, args.score_jpeg, args.data_dir, args.recorded)
    except CifarSpeedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, json.dumps(summary, indent=2) + "\n")
    acc = summary["test_accuracy"]
    line = f"{summary['model']}: {acc['n']} seed{'s' if acc['n'] > 1 else ''}, test top-1 mean {acc['mean'] * 100:.2f} %"
    if "test_accuracy_tta" in summary:
        line += f", with TTA {summary['test_accuracy_tta']['mean'] * 100:.2f} %"
    print(f"{line} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
