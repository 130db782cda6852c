#!/usr/bin/env python3
"""Train recipes on a lent GPU machine, which gets the data only in parts (a call carries 64 MiB).

    python3 tools/gpu_train.py prepare .gpucarry         # here: CIFAR-10's six batches, xz-compressed,
                                                         # in parts p1 p2 p3 that each fit one call
    python3 tools/gpu_train.py unpack .gpucarry/p1 --data /tmp/cifar10   # there, one call per part
    python3 tools/gpu_train.py run --data /tmp/cifar10 --deadline-s 400 --pack $OUT \
        train/fast.toml:0 train/fast.toml:1 experiments/fast_jpeg80.toml:0 ...

A part unpacked in one call stays on the machine for the next while the machine is warm (outside the
checkout, which each call replaces). `run` trains each RECIPE:SEED with `cifar-speed train --device
cuda` into runs/gpu/<stem>_s<seed>, in the order given, under one deadline: a run starts only if the
time left covers the longest run of the same recipe so far (the first of each recipe always starts
while 60 s are left), and each run gets the time left as its limit. After every run the sidecars,
logs and weights are packed again into the --pack folder (atomically, within what a call may bring
back), so a deadline or a crash keeps what finished. Exit status 0 when every run that started finished.

The sidecars carry their own provenance (commit, versions, device); `gpu-train.json` in the pack lists
every run: its command, status, seconds, and accuracies.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
PARTS = {"p1": BATCHES[0:2], "p2": BATCHES[2:4], "p3": BATCHES[4:7]}
# The pickled batches are rows of 32x32 planes: a byte-delta filter before LZMA2 shrinks them further.
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def prepare(dest: Path, source: Path) -> None:
    for part, names in PARTS.items():
        (dest / part).mkdir(parents=True, exist_ok=True)
        for name in names:
            out = dest / part / f"{name}.xzr"
            if not out.exists():
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(lzma.compress((source / name).read_bytes(), format=lzma.FORMAT_RAW, filters=FILTERS))
                tmp.replace(out)
        size = sum(f.stat().st_size for f in (dest / part).glob("*.xzr"))
        print(f"{part}: {', '.join(names)}: {size / 2**20:.1f} MiB")


def unpack(part: Path, data: Path) -> None:
    folder = data / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(part.glob("*.xzr")):
        tmp = folder / f"{f.stem}.tmp"
        tmp.write_bytes(lzma.decompress(f.read_bytes(), format=lzma.FORMAT_RAW, filters=FILTERS))
        tmp.replace(folder / f.stem)
    have = sorted(p.name for p in folder.iterdir() if p.name in BATCHES)
    print(f"unpacked {part.name}: {len(have)} of {len(BATCHES)} files present ({', '.join(have)})")


def run(args) -> int:
    out = REPO / "runs" / "gpu"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start, rows, longest, failed = time.monotonic(), [], {}, False
    for spec in args.runs:
        recipe, _, seed = spec.rpartition(":")
        recipe_path = Path(recipe) if Path(recipe).is_file() else REPO / recipe
        name = f"{recipe_path.stem}_s{seed}"
        left = args.deadline_s - (time.monotonic() - start)
        need = longest.get(recipe_path.stem, 60.0)
        if left < need:
            rows.append({"name": name, "recipe": recipe, "seed": int(seed), "status": "skipped",
                         "why": f"{left:.0f} s left, a run of this recipe took up to {need:.0f} s"})
            print(f"skip {name}: {rows[-1]['why']}", flush=True)
            continue
        cmd = [sys.executable, "-m", "cifar_speed", "train", str(recipe_path), "--device", "cuda", "--seed", seed,
               "--name", name, "--out", str(out), "--data-dir", str(args.data), "--no-progress"]
        print(f"start {name} ({left:.0f} s left)", flush=True)
        t0 = time.monotonic()
        with open(out / "logs" / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=left).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = time.monotonic() - t0
        longest[recipe_path.stem] = max(longest.get(recipe_path.stem, 0.0), seconds)
        row = {"name": name, "recipe": recipe, "seed": int(seed), "command": " ".join(cmd[1:]),
               "status": "ok" if rc == 0 else f"failed ({rc})", "seconds": round(seconds, 1)}
        sidecar = out / f"{name}.json"
        if rc == 0 and sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            row.update({k: meta.get(k) for k in ("test_accuracy", "test_accuracy_tta", "test_accuracy_jpeg75",
                                                 "train_seconds", "train_precision", "device")})
        failed |= rc != 0
        rows.append(row)
        print(f"{row['status']} {name} in {seconds:.0f} s: " + json.dumps({k: row.get(k) for k in
              ("test_accuracy", "test_accuracy_tta", "test_accuracy_jpeg75")}), flush=True)
        pack(out, rows, args.pack)
    pack(out, rows, args.pack)
    return 1 if failed else 0


# What one call may bring back (the device tool's limits): 8 files, 16 MiB each, 64 MiB together.
RETURN_FILES, RETURN_FILE_BYTES, RETURN_TOTAL_BYTES = 8, 15 * 2**20, 60 * 2**20


def pack(out: Path, rows: list[dict], folder: Path) -> None:
    """Into `folder`: gpu-train.tar.gz (the run list, sidecars, logs), then the weights of the runs in
    their order as weights-N.tar files that respect the return limits. Weights that do not fit stay
    on the machine and the run list says so (a single archive of every weight was refused once)."""
    folder.mkdir(parents=True, exist_ok=True)
    groups: list[list[Path]] = []
    total, left_behind = 0, []
    for row in rows:
        weights = out / f"{row['name']}.safetensors"
        if row["status"] != "ok" or not weights.is_file():
            continue
        n = weights.stat().st_size
        fits_last = bool(groups) and sum(f.stat().st_size for f in groups[-1]) + n <= RETURN_FILE_BYTES
        room = fits_last or len(groups) < RETURN_FILES - 1   # one file is the run list's archive
        if total + n > RETURN_TOTAL_BYTES or n > RETURN_FILE_BYTES or not room:
            left_behind.append(row["name"])
            continue
        if not fits_last:
            groups.append([])
        groups[-1].append(weights)
        total += n
    (out / "gpu-train.json").write_text(json.dumps({"runs": rows, "weights_not_returned": left_behind}, indent=1) + "\n")
    _tar(folder / "gpu-train.tar.gz", out, sorted(out.glob("*.json")) + sorted((out / "logs").glob("*.log")), "w:gz")
    for i, group in enumerate(groups):
        _tar(folder / f"weights-{i + 1}.tar", out, group, "w")
    for stale in folder.glob("weights-*.tar"):  # written by an earlier pack with more groups
        if int(stale.stem.removeprefix("weights-")) > len(groups):
            stale.unlink()


def _tar(archive: Path, root: Path, files: list[Path], mode: str) -> None:
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, mode) as tar:
        for f in files:
            tar.add(f, arcname=str(f.relative_to(root)))
    tmp.replace(archive)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    pp = sub.add_parser("prepare", help="compress the data set into parts, here")
    pp.add_argument("dest", type=Path)
    pp.add_argument("--source", type=Path, default=Path(os.environ.get("CIFAR_SPEED_DATA", REPO.parent / "shared" / "cifar10"))
                    / "cifar-10-batches-py")
    pu = sub.add_parser("unpack", help="decompress one part into --data, there")
    pu.add_argument("part", type=Path)
    pu.add_argument("--data", type=Path, required=True)
    pr = sub.add_parser("run", help="train RECIPE:SEED ... on the GPU under a deadline")
    pr.add_argument("runs", nargs="+", metavar="RECIPE:SEED")
    pr.add_argument("--data", type=Path, required=True)
    pr.add_argument("--deadline-s", type=float, required=True)
    pr.add_argument("--pack", type=Path, required=True, help="folder for gpu-train.tar.gz and weights-N.tar ($OUT)")
    args = p.parse_args()
    if args.verb == "prepare":
        prepare(args.dest, args.source)
    elif args.verb == "unpack":
        unpack(args.part, args.data)
    else:
        return run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
