#!/usr/bin/env python3
"""What stays outside int8 in ONNX Runtime's optimised graph of a checkpoint's int8 model, with and
without `--option onnxrt.fold_bn=on` (issue 12: "check what stays outside int8 in the optimised graph").

    .venv/bin/python tools/onnx_int8_graph.py fast frontier_l --out results/<machine>/onnx-int8-graph.json

For each checkpoint and fold setting: the QDQ model is built as `bench` builds it (the same
calibration sample), ONNX Runtime optimises it as a session does (ORT_ENABLE_ALL, CPU provider) and
writes the optimised graph, whose operators are counted: the int8 kernels (QLinear*, QGemm,
MatMulInteger, ...), the float operators between them, and the Quantize/Dequantize pairs left.
Structure only, no timing: `bench` measures what the difference is worth.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed import backends  # noqa: E402
from cifar_speed.checkpoint import load_checkpoint  # noqa: E402
from cifar_speed.fileio import atomic_write_text  # noqa: E402
from cifar_speed.locate import resolve_model  # noqa: E402
from cifar_speed.provenance import provenance  # noqa: E402

QDQ = {"QuantizeLinear", "DequantizeLinear"}


def is_int8_kernel(op: str) -> bool:
    return op.startswith("QLinear") or op in {"QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}


def optimised_ops(onnx_path: Path, out_path: Path) -> collections.Counter:
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(out_path)
    ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(out_path)).graph.node)


def graph_of(ref, fold: str) -> dict:
    model, meta = load_checkpoint(ref.path, model_name=ref.architecture)
    with tempfile.TemporaryDirectory(prefix="cifar-speed-graph-") as tmp:
        # bench's int8 build (its default calibration sample), the .onnx kept in `tmp`
        info = backends.build("onnxrt", model, meta, "int8", "cpu", [128], tmp, fold_bn=fold).info
        (onnx_file,) = Path(tmp).glob("*.onnx")
        ops = optimised_ops(onnx_file, Path(tmp) / "optimised.onnx.opt")
    kernels = {op: n for op, n in ops.items() if is_int8_kernel(op)}
    qdq = {op: n for op, n in ops.items() if op in QDQ}
    floats = {op: n for op, n in ops.items() if op not in kernels and op not in qdq}
    return {"fold_bn": fold, "folded_batchnorms": info.get("fold_bn", 0), "int8_kernels": kernels,
            "quantize_dequantize": qdq, "float_ops": floats, "all_ops": dict(ops)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="shipped names or sidecars")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = []
    for name in args.checkpoints:
        ref = resolve_model(name)
        for fold in ("off", "on"):
            row = {"checkpoint": name, **graph_of(ref, fold)}
            rows.append(row)
            print(f"{name} fold_bn={fold}: int8 kernels {sum(row['int8_kernels'].values())}, Q/DQ "
                  f"{sum(row['quantize_dequantize'].values())}, float ops {row['float_ops']}")
    atomic_write_text(args.out, json.dumps({"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                            "graphs": rows, "provenance": provenance()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
