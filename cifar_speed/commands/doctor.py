"""`cifar-speed doctor`: what runs on this machine, and why not where it does not.

By default: this machine's best device only (CUDA where visible, else the CPU), one verdict line per
backend, each runtime's version and providers/devices, whether the data set is found and verified,
and the machine facts a results file records. `--all` adds the full backend x precision x device
matrix with every reason.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="what runs on this machine: a verdict per backend, runtimes, data set, machine facts")
    p.add_argument("--all", action="store_true", help="every device (cpu and cuda), every backend x precision with its reason")
    p.add_argument("--peak", action="store_true", help="also measure this machine's matmul peak per precision: fp32, bf16, int8 (a few seconds)")
    p.add_argument("--data-dir", help="CIFAR-10 folder to check (default: $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed)")
    p.add_argument("--json", action="store_true", help="print the facts as JSON (the matrix covers every device)")
    p.set_defaults(func=run)


@dataclass
class Runtime:
    """One inference runtime as this process sees it."""
    name: str
    version: str | None          # None: not installed
    detail: str                  # execution providers, devices, or why it cannot run here


def _torch_runtime() -> Runtime:
    import torch

    if torch.cuda.is_available():
        devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        detail = f"CUDA {torch.version.cuda}: {devices}"
    else:
        detail = "CPU only (no CUDA GPU visible)" + (f"; built with CUDA {torch.version.cuda}" if torch.version.cuda else "")
    return Runtime("torch", torch.__version__, detail)


def _onnxruntime_runtime() -> Runtime:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return Runtime("onnxruntime", None, f"not importable ({e})")
    return Runtime("onnxruntime", ort.__version__, "execution providers: " + ", ".join(ort.get_available_providers()))


def _tensorrt_runtime() -> Runtime:
    from ..provenance import _version

    trt, tt = _version("tensorrt"), _version("torch-tensorrt") or _version("torch_tensorrt")
    if not trt and not tt:
        return Runtime("tensorrt", None, "not installed (pip install -e '.[trt]' on a CUDA machine)")
    return Runtime("tensorrt", trt, f"torch-tensorrt {tt or 'not installed'}")


def _openvino_runtime() -> Runtime:
    from ..backends import openvino as ov_backend

    if ov_backend.version() is None:
        return Runtime("openvino", None, "not installed (pip install -e '.[openvino]')")
    names = ov_backend.device_names()
    caps = ", ".join(ov_backend.cpu_capabilities())
    from ..provenance import _version

    return Runtime("openvino", _version("openvino") or ov_backend.version(),
                   "devices: " + ", ".join(f"{d} ({n})" for d, n in names.items()) + f"; CPU capabilities: {caps}")


# One probe per runtime, in the order doctor prints them. A new backend's runtime adds its probe
# here; nothing else in doctor changes.
RUNTIME_PROBES: list[Callable[[], Runtime]] = [_torch_runtime, _onnxruntime_runtime, _tensorrt_runtime,
                                               _openvino_runtime]


def runtimes() -> list[Runtime]:
    return [probe() for probe in RUNTIME_PROBES]


def matrix(devices=("cpu", "cuda")) -> list[dict]:
    from .. import backends

    rows = []
    for device in devices:
        for b in backends.BACKENDS:
            for p in backends.PRECISIONS:
                ok, reason = backends.availability(b, p, device)
                rows.append({"device": device, "backend": b, "precision": p, "available": ok, "reason": reason})
    return rows


def backend_options() -> dict[str, dict]:
    """Each backend's declared options (`bench --option BACKEND.NAME=VALUES`)."""
    from .. import backends

    return {b: {name: asdict(o) for name, o in backends.declared_options(b).items()}
            for b in backends.BACKENDS if backends.declared_options(b)}


def verdicts(rows: list[dict], device: str) -> dict[str, str]:
    """backend -> one line: the precisions it runs on `device`, and why not the others."""
    out: dict[str, str] = {}
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend and r["device"] == device]
        runs = [r["precision"] for r in mine if r["available"]]
        why: dict[str, list[str]] = {}
        for r in mine:
            if not r["available"]:
                why.setdefault(r["reason"], []).append(r["precision"])
        if not runs:
            reasons = list(why)
            out[backend] = "unavailable: " + (reasons[0] if len(reasons) == 1 else "; ".join(
                f"{', '.join(ps)}: {reason}" for reason, ps in why.items()))
            continue
        line = "runs " + ", ".join(runs)
        if why:
            line += "; " + "; ".join(f"{', '.join(ps)}: {reason}" for reason, ps in why.items())
        out[backend] = line
    return out


@dataclass
class DataStatus:
    found: bool
    verified: bool
    folder: str | None
    detail: str


def data_status(data_dir: str | None) -> DataStatus:
    from .. import data
    from ..errors import CifarSpeedError

    try:
        folder = data.resolve_data_dir(data_dir)
    except CifarSpeedError as e:
        return DataStatus(False, False, None, str(e))
    try:
        data.verify(data_dir)
    except CifarSpeedError as e:
        return DataStatus(True, False, str(folder), str(e))
    return DataStatus(True, True, str(folder), "50,000 train and 10,000 test images match their sha256")


def load_text(load: list[float] | None, cores: int) -> str:
    """`os.getloadavg()` made readable: runnable processes per core, and what that means for timings."""
    if not load:
        return "load average not available on this platform"
    one, five, fifteen = load
    verdict = ("idle enough to measure" if one < 0.25 * cores else
               "busy: timings now would be disturbed (bench flags such cells)")
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f} over 1 / 5 / 15 min on {cores} usable cores: {verdict}"


def auto_training_precision(device: str) -> str:
    """What `precision = "auto"` resolves to here: bf16 only where it trains faster (devices.resolve_precision)."""
    import torch

    from ..backends import TORCH_DTYPES
    from ..devices import resolve_precision

    dtype = resolve_precision("auto", torch.device(device))
    return next(name for name, d in TORCH_DTYPES.items() if d == dtype)


def run(args) -> int:
    from .. import backends
    from ..console import make_console, step
    from ..provenance import provenance

    device = backends.default_device()
    with step("checking backends, runtimes and the data set"):
        facts = {"device": device, "matrix": matrix(), "options": backend_options(),
                 "runtimes": [asdict(r) for r in runtimes()],
                 "data": asdict(data_status(args.data_dir)), "provenance": provenance()}
    if args.peak:
        from ..sweep import measure_peak

        with step("measuring the matmul peak of each precision"):
            facts["peak"] = {d: measure_peak(d) for d in (["cpu", "cuda"] if device == "cuda" else ["cpu"])}
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
        return 0
    from rich.markup import escape

    console = make_console()
    prov = facts["provenance"]
    cpu, gpu = prov["cpu"], prov["gpu"]
    devices = ["cpu", "cuda"] if args.all else [device]
    console.print(f"[bold]device[/]: {device} ({gpu['name'] if gpu else cpu['model']})"
                  + ("" if device == "cuda" else "; no CUDA GPU visible") + "  (--all: every device)")
    for d in devices:
        for backend, line in verdicts(facts["matrix"], d).items():
            colour = "red" if line.startswith("unavailable") else "green"
            console.print(f"  [{colour}]{backend:8}[/] {d:4}  {escape(line)}", highlight=False)
    for backend, options in facts["options"].items():
        for name, o in options.items():
            console.print(escape(f"  option {backend}.{name} = {' | '.join(o['choices'])} (default "
                                 f"{o['default'] or 'per precision'}): {o['help']}"), highlight=False)
    if args.all:
        _print_matrix(console, facts["matrix"])
    console.print("[bold]runtimes[/]:")
    for r in facts["runtimes"]:
        console.print(escape(f"  {r['name']:12} {r['version'] or '-':12} {r['detail']}"), highlight=False)
    ds = facts["data"]
    state = "found and verified" if ds["verified"] else ("found, NOT verified" if ds["found"] else "not found")
    console.print(f"[bold]data[/]: CIFAR-10 {state}" + escape((f" in {ds['folder']}" if ds["folder"] else "") + f": {ds['detail']}"))
    console.print(f"[bold]machine[/]: {prov['machine']}  host {prov['host']}  commit {prov['git_commit']}")
    console.print(f"[bold]cpu[/]: {cpu['model']}, {cpu['usable_cpus']} usable cores, features "
                  f"{' '.join(cpu['features']) or '-'}; torch threads {prov['torch_threads']}")
    console.print(f"[bold]training[/]: a recipe's precision = \"auto\" trains in {auto_training_precision(device)} on {device}")
    console.print(f"[bold]load[/]: {load_text(prov['load_average'], cpu['usable_cpus'])}")
    console.print(f"[bold]gpu[/]: {gpu['name'] + ', driver ' + str(gpu.get('driver')) if gpu else 'none'}")
    console.print("[bold]versions[/]: " + ", ".join(f"{k} {val}" for k, val in prov["versions"].items() if val))
    if args.peak:
        from ..report import peak_text
    for d, peak in facts.get("peak", {}).items():
        console.print(f"[bold]peak on {d}[/]: {peak_text(peak)}")
    return 0


def _print_matrix(console, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="backend x precision x device")
    for col in ("device", "backend", "precision", "status", "why not"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["device"], r["backend"], r["precision"],
                  "[green]available[/]" if r["available"] else "[red]unavailable[/]", r["reason"])
    console.print(t)
