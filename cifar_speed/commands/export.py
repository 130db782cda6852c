"""`cifar-speed export CKPT --format triton`: a Triton Inference Server model repository for a checkpoint."""
from __future__ import annotations


def add_parser(sub) -> None:
    # The closed sets come from triton.py, so --help and the checks cannot drift apart.
    from ..triton import BACKENDS, FORMATS, INSTANCE_KINDS, PRECISIONS

    p = sub.add_parser("export", help="export a checkpoint for serving (a Triton Inference Server model repository)")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a shipped checkpoint's name (`cifar-speed models`), or a sidecar / its stem, e.g. results/checkpoints/cnn.json")
    p.add_argument("--format", default="triton", choices=FORMATS, help="the only format so far (default)")
    p.add_argument("--backend", default="onnxrt", choices=list(BACKENDS),
                   help="onnxrt: <model>/1/model.onnx (default); trt: <model>/1/model.plan (needs TensorRT and a CUDA GPU); "
                        "openvino: <model>/1/model.xml + model.bin (Triton's OpenVINO backend, CPU, fp32)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default fp32; inputs and logits stay fp32")
    p.add_argument("--out", default="model_repository", help="the model repository folder (default: model_repository)")
    p.add_argument("--name", help="model name, the folder under --out (default: the checkpoint's name)")
    p.add_argument("--max-batch-size", type=int, default=128, help="Triton max_batch_size (default 128)")
    p.add_argument("--instance-kind", choices=list(INSTANCE_KINDS), help="default: gpu for trt, auto for onnxrt")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing, different model folder of the same name")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import triton
    from ..console import clear_status, make_console, status
    from ..locate import resolve_checkpoint

    status("loading PyTorch, ONNX and the Triton schema")
    triton.check_request(args.format, args.backend, args.precision, args.name, args.max_batch_size,
                         args.instances, args.instance_kind)
    status(f"exporting {args.checkpoint} ({args.backend} {args.precision}) and checking the model repository")
    res = triton.export_triton(resolve_checkpoint(args.checkpoint), args.out, backend=args.backend, precision=args.precision,
                               name=args.name, max_batch_size=args.max_batch_size, instance_kind=args.instance_kind,
                               instances=args.instances, force=args.force)
    what = "already up to date" if not res.written else res.note
    clear_status()
    make_console(soft_wrap=True).print(f"{res.folder}: {what} ({res.artifact.relative_to(res.folder)}, {res.config.name})")
    return 0
