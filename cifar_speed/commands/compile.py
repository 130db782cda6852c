"""`cifar-speed compile CKPT --backend B --precision P`: write a compiled artifact and its sidecar (cached)."""
from __future__ import annotations

from .. import defaults

CKPT_HELP = "a shipped checkpoint's name (`cifar-speed models`), or a sidecar / its stem"


def artifact_backends() -> list[str]:
    """The backends with a saved artifact (a `save` function): what `compile` can write. `--help`
    shows defaults.ARTIFACT_BACKENDS, which tests/test_cli.py checks against this."""
    from .. import backends

    return [b for b in backends.BACKENDS if hasattr(backends.get_backend(b), "save")]


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a checkpoint into a saved artifact (ONNX, AOTInductor .pt2, TensorRT)")
    p.add_argument("checkpoint", metavar="CKPT", help=CKPT_HELP)
    p.add_argument("--backend", required=True, choices=defaults.ARTIFACT_BACKENDS,
                   help="compile: AOTInductor .pt2, onnxrt: .onnx, trt: Torch-TensorRT .ep (and any other backend with an artifact)")
    p.add_argument("--precision", default="fp32", choices=defaults.PRECISIONS, help="default fp32")
    p.add_argument("--batch", default="32,64,128", help="batch sizes the artifact must serve (sets the min/opt/max profile)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--out", help="output folder (default: ~/.cache/cifar-speed/artifacts/<machine>)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache holds a matching artifact")
    p.add_argument("--calib-size", default=str(defaults.CALIB_SIZE), metavar="N",
                   help="int8: training images in the calibration sample (default %(default)s; never test images)")
    p.add_argument("--calib-seed", default=str(defaults.CALIB_SEED), metavar="SEED",
                   help="int8: seed that draws the calibration sample (default %(default)s)")
    p.add_argument("--data-dir", help="int8: CIFAR-10 folder for the calibration images "
                                      "(default: $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import artifacts, backends, calibration

    backends.get_backend(args.backend)
    backends.check_precision(args.precision)
    batches = backends.parse_batches(args.batch)
    calib_size, calib_seed = calibration.check_params(args.calib_size, args.calib_seed)
    if args.out:
        from ..fileio import check_output_dir

        check_output_dir(args.out)  # before the build, which can take minutes
    from ..console import clear_status, make_console, status
    from ..locate import resolve_checkpoint

    status(f"compiling {args.checkpoint} with {args.backend} {args.precision}")
    res = artifacts.compile_checkpoint(resolve_checkpoint(args.checkpoint), args.backend, args.precision, args.device,
                                       batches, args.out, force=args.force, calibration_size=calib_size,
                                       calibration_seed=calib_seed, data_dir=args.data_dir)
    clear_status()
    make_console().print(f"{res.note}: {res.artifact} ({res.seconds:.1f} s; sidecar {res.sidecar.name}; key {res.key[:12]})")
    return 0
