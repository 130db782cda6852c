#!/usr/bin/env python3
"""Where an OpenVINO cell spends its time: the CPU plugin's per-layer counters (PERF_COUNT).

    python3 tools/openvino_profile.py --model fast --precision int8 --batch 128 \
        --out results/<machine>/openvino-profile-fast-int8-b128.json

The model is the artifact `cifar-speed compile --backend openvino` caches (built there when missing),
compiled exactly as the benchmark compiles it (backends.openvino.compile_config: the same hint,
inference precision and threads) plus PERF_COUNT=YES. After a warm-up, `--iters` synchronous calls
are run and each executed layer's real time is summed; the output groups it by the plugin's
execution kernel (`exec_type`, e.g. `brgconv_avx512_I8` or `ref_any_FP32`), which shows what runs
outside the fast int8 kernels. The counters add a little overhead: compare shares, not totals, with
the benchmark.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def profile(name: str, precision: str, batch: int, iters: int) -> dict:
    import torch

    from cifar_speed import artifacts, harness
    from cifar_speed.backends import openvino as ov_backend
    from cifar_speed.locate import resolve_model

    ref = resolve_model(name)
    built = artifacts.compile_checkpoint(ref.path, "openvino", precision, "cpu", [batch], architecture=ref.architecture)
    sidecar = artifacts.read_artifact_sidecar(built.artifact) or {}
    model = ov_backend.core().read_model(str(built.artifact), str(Path(built.artifact).with_suffix(".bin")))
    model.reshape({model.inputs[0].get_any_name(): [batch, *ov_backend.INPUT_SHAPE]})
    hint = ov_backend.SYNC_HINT
    ov_device, config = ov_backend.compile_config(precision, hint)
    compiled = ov_backend.core().compile_model(model, ov_device, {**config, "PERF_COUNT": "YES"})
    req = compiled.create_infer_request()
    x = harness.make_inputs(batch, "cpu", "device", 1)[0].contiguous().numpy()
    for _ in range(10):
        req.infer({0: x}, share_inputs=True)
    layers: dict[str, dict] = {}
    for _ in range(iters):
        req.infer({0: x}, share_inputs=True)
        for p in req.profiling_info:
            if str(p.status).endswith("EXECUTED"):
                entry = layers.setdefault(p.node_name, {"node": p.node_name, "type": p.node_type,
                                                        "exec_type": p.exec_type, "ms": 0.0})
                entry["ms"] += p.real_time.total_seconds() * 1e3 / iters
    total = sum(e["ms"] for e in layers.values())
    by_kernel: dict[str, float] = defaultdict(float)
    for e in layers.values():
        by_kernel[e["exec_type"]] += e["ms"]
    return {
        "model": name, "precision": precision, "batch_size": batch, "iters": iters,
        "artifact": str(built.artifact), "artifact_sha256": sidecar.get("artifact_sha256"),
        "compile_config": {**config, "PERF_COUNT": "YES"}, "ov_device": ov_device,
        "threads": torch.get_num_threads(),
        "per_call_ms_from_counters": total,
        "by_exec_type": [{"exec_type": k, "ms": v, "share": v / total if total else 0.0}
                         for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])],
        "layers": sorted(layers.values(), key=lambda e: -e["ms"]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="shipped model name")
    p.add_argument("--precision", default="int8", choices=["fp32", "bf16", "int8"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--out", required=True, help="results JSON (written atomically)")
    p.add_argument("--top", type=int, default=12, help="layers to print (default 12)")
    args = p.parse_args(argv)

    from cifar_speed.errors import CifarSpeedError
    from cifar_speed.fileio import atomic_write_json
    from cifar_speed.provenance import provenance

    try:
        result = profile(args.model, args.precision, args.batch, args.iters)
    except CifarSpeedError as e:
        print(f"openvino_profile: error: {e}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args.out), {"format": "cifar-speed-openvino-profile/1", "provenance": provenance(), **result})
    print(f"{args.model} openvino {args.precision} b{args.batch}: {result['per_call_ms_from_counters']:.2f} ms per call "
          f"by the counters ({args.iters} calls)")
    for k in result["by_exec_type"]:
        print(f"  {k['share']:6.1%}  {k['ms']:8.3f} ms  {k['exec_type']}")
    print("slowest layers:")
    for e in result["layers"][:args.top]:
        print(f"  {e['ms']:8.3f} ms  {e['type']:<20} {e['exec_type']:<28} {e['node']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
