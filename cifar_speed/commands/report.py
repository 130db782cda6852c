"""`cifar-speed report RESULTS...`: Markdown tables and PNG plots from bench results files."""
from __future__ import annotations

from pathlib import Path

from ..fileio import check_output_dir


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render Markdown tables and PNG plots from bench results")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results JSON files from `cifar-speed bench`")
    p.add_argument("--out", help="output folder (default: beside the first results file, <name>-report/)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import report
    from ..console import make_console

    first = Path(args.results[0])
    out = Path(args.out) if args.out else first.with_name(first.stem + "-report")
    check_output_dir(out)  # before reading and plotting: a bad --out is one line, not a late traceback
    md_path, pngs = report.write_report(args.results, out)
    print(md_path.read_text(), end="")
    make_console(stderr=True).print(f"wrote {md_path} and {len(pngs)} plot(s) in {out}")
    return 0
