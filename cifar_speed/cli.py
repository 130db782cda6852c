"""`cifar-speed` entry point: one module per subcommand in cifar_speed/commands/.

Each command module defines `add_parser(subparsers)` and `run(args) -> int`. A CifarSpeedError
anywhere becomes one line on stderr and exit status 2; nothing else is caught, so real bugs keep
their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__
from .errors import CifarSpeedError


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(prog="cifar-speed", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cifar-speed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CifarSpeedError as e:
        print(f"cifar-speed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cifar-speed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
