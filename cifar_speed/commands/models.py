"""`cifar-speed models`: the model registry and the shipped checkpoints, with params, FLOPs, top-1 and JPEG-75 top-1.

Registry figures are counted from a freshly built model (PyTorch's FlopCounterMode, 2 FLOPs per MAC);
a shipped checkpoint's figures come from its sidecar, written when it was trained and evaluated (a JPEG-75
top-1 of a checkpoint older than that set: scored since by tools/ship_checkpoints.py --score-jpeg, marked *).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass
class RegistryRow:
    name: str
    params: int
    flops_per_image: int


@dataclass
class ShippedRow:
    name: str          # what `bench NAME`, `eval NAME` ... accept
    model: str
    params: int
    flops_per_image: int
    test_top1: float | None
    test_top1_tta: float | None
    test_top1_jpeg75: float | None   # None: trained before the JPEG-75 set existed, never scored since
    test_top1_jpeg75_scored_by: str | None   # set where that figure was scored after training, by this
    sidecar: str


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model registry and the shipped checkpoints with params, FLOPs and top-1 (clean, JPEG-75)")
    p.add_argument("--json", action="store_true", help="print both lists as JSON")
    p.set_defaults(func=run)


def registry_rows() -> list[RegistryRow]:
    from ..models import count_params, create_model, flops_per_image, list_models

    rows = []
    for name in list_models():
        model = create_model(name)
        rows.append(RegistryRow(name, count_params(model, trainable_only=False), flops_per_image(model)))
    return rows


def shipped_rows(registry: list[RegistryRow]) -> list[ShippedRow]:
    """Params and FLOPs counted from the architecture the same way as the registry's (some older
    sidecars counted trainable parameters only); top-1 from the sidecar."""
    from ..checkpoint import read_sidecar
    from ..locate import shipped
    from ..models import count_params, create_model, flops_per_image

    counted = {r.name: (r.params, r.flops_per_image) for r in registry}
    rows = []
    for name, sidecar in shipped().items():
        ckpt = read_sidecar(sidecar)
        if ckpt.model_kwargs:  # a variant of its architecture: count this one
            model = create_model(ckpt.architecture, **ckpt.model_kwargs)
            params, flops = count_params(model, trainable_only=False), flops_per_image(model)
        else:
            params, flops = counted[ckpt.architecture]
        rows.append(ShippedRow(name, ckpt.architecture, params, flops, ckpt.test_accuracy,
                               ckpt.get("test_accuracy_tta"), ckpt.get("test_accuracy_jpeg75"),
                               ckpt.get("test_accuracy_jpeg75_scored_by"), str(sidecar)))
    return rows


def _jpeg_text(r: ShippedRow) -> str:
    """"84.38 %*" for a figure scored after training. Printed in a left-justified column at a fixed width
    so the decimals line up whether or not a mark follows (rich trims a trailing pad, even a no-break one)."""
    if r.test_top1_jpeg75 is None:
        return "-"
    return f"{r.test_top1_jpeg75 * 100:6.2f} %" + ("*" if r.test_top1_jpeg75_scored_by else "")


def _mflops(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def run(args) -> int:
    from rich.table import Table

    from ..console import make_console, step

    with step("building every registered model to count its parameters and FLOPs"):
        registry = registry_rows()
        ckpts = shipped_rows(registry)
    if args.json:
        print(json.dumps({"registry": [asdict(r) for r in registry], "shipped": [asdict(r) for r in ckpts]}, indent=2))
        return 0
    console = make_console()
    t = Table(title="model registry (create_model(name); a recipe in train/ trains one)")
    for col, just in (("model", "left"), ("params", "right"), ("MFLOP/image", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for r in registry:
        t.add_row(r.name, f"{r.params:,}", _mflops(r.flops_per_image))
    console.print(t)
    later = any(r.test_top1_jpeg75_scored_by for r in ckpts)
    t = Table(title="shipped checkpoints (pass the name to bench, eval, compile or export)",
              caption="JPEG-75: top-1 on the test images after a JPEG round trip at quality 75, as recorded at "
                      "training" + ("; * scored on the shipped weights after training (the checkpoint predates "
                                    "that set)" if later else "")
                      + ("; - never scored (`cifar-speed eval NAME` scores it)"
                         if any(r.test_top1_jpeg75 is None for r in ckpts) else ""))
    for col, just in (("name", "left"), ("model", "left"), ("params", "right"), ("MFLOP/image", "right"),
                      ("test top-1", "right"), ("JPEG-75", "left"), ("with TTA", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for r in ckpts:
        t.add_row(r.name, r.model, f"{r.params:,}", _mflops(r.flops_per_image),
                  f"{r.test_top1 * 100:.2f} %" if r.test_top1 is not None else "-",
                  _jpeg_text(r),
                  f"{r.test_top1_tta * 100:.2f} %" if r.test_top1_tta is not None else "")
    console.print(t)
    if not ckpts:
        console.print("no shipped checkpoints under ./results/checkpoints (train one with `cifar-speed train`)")
    return 0
