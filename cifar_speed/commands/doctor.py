"""`cifar-speed doctor`: which backend x precision runs here (and why not), and the machine facts."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from .. import backends
from ..provenance import provenance
from ..report import peak_text


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="list every backend x precision as available / unavailable, with the reason")
    p.add_argument("--peak", action="store_true", help="also measure this machine's matmul peak per precision: fp32, bf16, int8 (a few seconds)")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=run)


def matrix() -> list[dict]:
    rows = []
    for device in ("cpu", "cuda"):
        for b in backends.BACKENDS:
            for p in backends.PRECISIONS:
                ok, reason = backends.availability(b, p, device)
                rows.append({"device": device, "backend": b, "precision": p, "available": ok, "reason": reason})
    return rows


def run(args) -> int:
    facts = {"matrix": matrix(), "provenance": provenance()}
    if args.peak:
        from ..sweep import measure_peak
        facts["peak"] = {d: measure_peak(d) for d in (["cpu", "cuda"] if backends.default_device() == "cuda" else ["cpu"])}
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    t = Table(title="backends x precisions on this machine")
    for col in ("device", "backend", "precision", "status", "why not"):
        t.add_column(col)
    for r in facts["matrix"]:
        t.add_row(r["device"], r["backend"], r["precision"],
                  "[green]available[/]" if r["available"] else "[red]unavailable[/]", r["reason"])
    console.print(t)
    prov = facts["provenance"]
    cpu, gpu, v = prov["cpu"], prov["gpu"], prov["versions"]
    console.print(f"machine: {prov['machine']}  host {prov['host']}  commit {prov['git_commit']}")
    console.print(f"cpu: {cpu['model']}, {cpu['usable_cpus']} usable cores, features {' '.join(cpu['features']) or '-'}; "
                  f"torch threads {prov['torch_threads']}; load {prov['load_average']}")
    console.print(f"gpu: {gpu['name'] + ' driver ' + str(gpu.get('driver')) if gpu else 'none'}")
    console.print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    for device, peak in facts.get("peak", {}).items():
        console.print(f"peak on {device}: {peak_text(peak)}")
    return 0
