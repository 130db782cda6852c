"""Markdown tables and matplotlib plots from `cifar-speed bench` results files.

    render_markdown(results_list) -> str      tables for the README, one per results file and mode
    plot(results_list, out_dir) -> [paths]    accuracy vs images/s, speed-up over eager fp32 (PNG)
    load_results(path) -> dict                a results file, checked against the schema
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CifarSpeedError
from .fileio import atomic_path
from .sweep import fastest, skipped_lines, validate_results


def load_results(path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CifarSpeedError(f"results file {path} not found") from None
    except (OSError, ValueError) as e:
        raise CifarSpeedError(f"{path} is not valid JSON ({type(e).__name__})") from None
    try:
        return validate_results(obj)
    except CifarSpeedError as e:
        raise CifarSpeedError(f"{path}: {e}") from None


def _ok(results: dict, mode: str):
    return [c for c in results["cells"] if c.get("status") == "ok" and c.get("mode") == mode]


def _modes(results: dict) -> list[str]:
    return list(dict.fromkeys(c["mode"] for c in results["cells"] if c.get("status") == "ok"))


def peak_text(peak: dict) -> str:
    """The denominators of the % peak column, as a results file recorded them."""
    if "denominator_gflops" in peak:  # files written before per-precision peaks: one bf16 matmul peak for all
        what = f"{peak['denominator_gflops']:,.0f} GFLOP/s for every precision"
    elif "given_gflops" in peak:
        what = f"{peak['given_gflops']:,.0f} GFLOP/s for every precision"
    else:
        what = ", ".join(f"{k.split('_')[0]} {v:,.0f} {'GOP/s' if k.endswith('gops') else 'GFLOP/s'}"
                         for k, v in peak.items() if k.endswith(("_gflops", "_gops")))
    return (f"{what} ({peak.get('source', '?')}"
            f"{'; measured under contention, so too low' if peak.get('disturbed') else ''})")


def render_markdown(results_list: list[dict]) -> str:
    out = []
    for results in results_list:
        prov = results["provenance"]
        cpu, gpu = prov["cpu"], prov.get("gpu")
        v = prov["versions"]
        peak = results.get("peak", {})
        out.append(f"### {prov['machine']} ({results['created']})\n")
        out.append(f"{'GPU ' + gpu['name'] + ', ' if gpu else ''}CPU {cpu['model']} ({cpu['usable_cpus']} cores; "
                   f"{' '.join(cpu['features'])}), torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}"
                   f"{', torch-tensorrt ' + v['torch_tensorrt'] if v.get('torch_tensorrt') else ''}; "
                   f"{prov['torch_threads']} threads; commit `{prov.get('git_commit')}`. Peak for the % column: "
                   f"{peak_text(peak)}. "
                   f"Accuracy on {results['harness']['accuracy_images']:,} test images.\n")
        best = fastest(results)
        for mode in _modes(results):
            cells = _ok(results, mode)
            batches = sorted({c["batch_size"] for c in cells})
            head = ["model", "backend", "precision"] + [f"b{b} img/s (x eager)" for b in batches] + \
                   [f"b{batches[-1]} p50 ms", f"b{batches[-1]} % peak", "top-1", "agree", "max Δlogit"]
            out.append(f"\n{mode}-resident inputs (**bold** = fastest for the model at that batch size):\n")
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|")
            rows: dict = {}
            for c in cells:
                rows.setdefault((c["model"], c["backend"], c["precision"]), {})[c["batch_size"]] = c
            for (model, backend, precision), by in rows.items():
                row = [model, backend, precision]
                flags = set()
                for b in batches:
                    c = by.get(b)
                    if not c:
                        row.append("-")
                        continue
                    text = f"{c['images_per_s']:,.0f}"
                    if c.get("speedup_vs_eager_fp32"):
                        text += f" ({c['speedup_vs_eager_fp32']:.2f}x)"
                    if best.get((model, b, mode)) == (backend, precision):
                        text = f"**{text}**"
                    row.append(text)
                    flags |= {"disturbed"} if c.get("disturbed") else set()
                    flags |= {"accuracy drop"} if c.get("accuracy_flagged") else set()
                last = by.get(batches[-1]) or next(iter(by.values()))
                acc = last["accuracy"]
                row += [f"{last['latency']['median_ms']:.2f}",
                        f"{last['peak_fraction'] * 100:.1f}%" if last.get("peak_fraction") is not None else "",
                        f"{acc['top1'] * 100:.2f}%" + (" ⚠" if "accuracy drop" in flags else ""),
                        f"{acc.get('agreement', 1) * 100:.2f}%", f"{acc.get('max_logit_diff', 0):.2g}"]
                if "disturbed" in flags:
                    row[2] += " (disturbed)"
                out.append("| " + " | ".join(row) + " |")
        skipped = skipped_lines(results)
        failed = [c for c in results["cells"] if c.get("status") == "failed"]
        if skipped or failed:
            out.append("\nNot run here:\n")
            out += [f"- {s}" for s in skipped]
            out += [f"- {c['model']} {c['backend']} {c['precision']}: failed ({c['reason']})" for c in failed]
        out.append("")
    return "\n".join(out) + "\n"


def _largest_batch_cells(results: dict, mode: str) -> list[dict]:
    cells = _ok(results, mode)
    if not cells:
        return []
    b = max(c["batch_size"] for c in cells)
    return [c for c in cells if c["batch_size"] == b]


def plot(results_list: list[dict], out_dir) -> list[Path]:
    """Two PNGs per results file and mode: accuracy vs images/s, and speed-up over eager fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, results in enumerate(results_list):
        tag = results["provenance"]["machine"] + (f"-{i}" if len(results_list) > 1 else "")
        for mode in _modes(results):
            cells = _largest_batch_cells(results, mode)
            if not cells:
                continue
            batch = cells[0]["batch_size"]
            models = list(dict.fromkeys(c["model"] for c in cells))
            combos = list(dict.fromkeys(f"{c['backend']} {c['precision']}" for c in cells))
            markers = "osD^v<>px*"

            fig, ax = plt.subplots(figsize=(7, 4.5))
            for j, combo in enumerate(combos):
                pts = [c for c in cells if f"{c['backend']} {c['precision']}" == combo]
                ax.scatter([c["images_per_s"] for c in pts], [c["accuracy"]["top1"] * 100 for c in pts],
                           marker=markers[j % len(markers)], label=combo)
                for c in pts:
                    ax.annotate(c["model"], (c["images_per_s"], c["accuracy"]["top1"] * 100), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel(f"images/s at batch {batch} (log scale)")
            ax.set_ylabel("top-1 on the test set (%)")
            ax.set_title(f"accuracy vs throughput, {tag}, {mode} inputs")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
            written.append(_save(fig, out_dir / f"{tag}-{mode}-accuracy-vs-speed.png"))

            fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models) * max(1, len(combos)) / 2), 4.5))
            width = 0.8 / max(1, len(combos))
            for j, combo in enumerate(combos):
                ys = []
                for m in models:
                    c = next((c for c in cells if c["model"] == m and f"{c['backend']} {c['precision']}" == combo), None)
                    ys.append(c["speedup_vs_eager_fp32"] if c and c.get("speedup_vs_eager_fp32") else 0)
                ax.bar([k + j * width for k in range(len(models))], ys, width, label=combo)
            ax.axhline(1.0, color="k", linewidth=0.8)
            ax.set_xticks([k + width * (len(combos) - 1) / 2 for k in range(len(models))], models)
            ax.set_ylabel(f"speed-up over eager fp32 (batch {batch})")
            ax.set_title(f"speed-up, {tag}, {mode} inputs")
            ax.legend(fontsize=7)
            written.append(_save(fig, out_dir / f"{tag}-{mode}-speedup.png"))
    return written


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (speed, accuracy) points that no other point beats on both, fastest first."""
    front, best_acc = [], -1.0
    for speed, acc in sorted(points, key=lambda p: (-p[0], -p[1])):
        if acc > best_acc:
            front.append((speed, acc))
            best_acc = acc
    return front


def plot_overview(results_list: list[dict], out_dir, mode: str = "device") -> Path | None:
    """One accuracy-vs-throughput plot of every model in every given results file of one machine:
    all cells at the largest batch size, each model's fastest cell labelled, and the Pareto front
    (which model + backend + precision to ship for a given speed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machines = {r["provenance"]["machine"] for r in results_list}
    cells = [c for r in results_list for c in _ok(r, mode)]
    if len(machines) != 1 or not cells:
        return None  # speeds of different machines do not belong on one axis
    batch = max(c["batch_size"] for c in cells)
    cells = [c for c in cells if c["batch_size"] == batch and c.get("accuracy")]
    fig, ax = plt.subplots(figsize=(9, 5))
    for model in dict.fromkeys(c["model"] for c in cells):
        mine = [c for c in cells if c["model"] == model]
        ax.scatter([c["images_per_s"] for c in mine], [c["accuracy"]["top1"] * 100 for c in mine], s=14, alpha=0.7,
                   label=model)
    front = pareto_front([(c["images_per_s"], c["accuracy"]["top1"] * 100) for c in cells])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k", linewidth=0.8, label="Pareto front")
    on_front = [next(c for c in cells if (c["images_per_s"], c["accuracy"]["top1"] * 100) == p) for p in front]
    for model in dict.fromkeys(c["model"] for c in on_front):  # name each model's fastest cell worth shipping
        c = max((c for c in on_front if c["model"] == model), key=lambda c: c["images_per_s"])
        ax.annotate(f"{model}: {c['backend']} {c['precision']}", (c["images_per_s"], c["accuracy"]["top1"] * 100),
                    fontsize=7, xytext=(-4, 4), textcoords="offset points", ha="right")
    ax.set_xscale("log")
    ax.set_xlabel(f"images/s at batch {batch}, {mode} inputs (log scale)")
    ax.set_ylabel("top-1 on the test set (%)")
    ax.set_title(f"every model x backend x precision, {machines.pop()}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, Path(out_dir) / f"{results_list[0]['provenance']['machine']}-{mode}-overview.png")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def write_report(paths, out_dir) -> tuple[Path, list[Path]]:
    from .fileio import atomic_write_text

    results = [load_results(p) for p in paths]
    if not results:
        raise CifarSpeedError("no results files given")
    out_dir = Path(out_dir)
    md = render_markdown(results)
    overview = plot_overview(results, out_dir)
    pngs = ([overview] if overview else []) + plot(results, out_dir)
    md += "\n" + "\n".join(f"![{p.stem}]({os.path.relpath(p, out_dir)})" for p in pngs) + "\n"
    md_path = out_dir / "report.md"
    atomic_write_text(md_path, md)
    return md_path, pngs
