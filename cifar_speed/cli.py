"""`cifar-speed` entry point: one module per subcommand in cifar_speed/commands/.

Each command module defines `add_parser(subparsers)` and `run(args) -> int`. Only the module of the
command being run is imported (most import torch, seconds), so `cifar-speed --help` lists COMMANDS
without importing any. A command runs inside capture.capture(): third-party warnings go to a log
file, and to stderr (one line each) only with -v. A CifarSpeedError anywhere becomes one line on
stderr and exit status 2; nothing else is caught, so real bugs keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Callable

from . import __version__
from .errors import CifarSpeedError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is the same one line as every other bad input (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"cifar-speed: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(text: str) -> str:
    # Messages may quote user input or library text; the contract is one line on stderr.
    return " ".join(str(text).split())


DESCRIPTION = ("Train, compile and benchmark CIFAR-10 classifiers: which model and which inference backend "
               "(eager PyTorch, torch.compile, ONNX Runtime, OpenVINO, TensorRT) to ship, how fast and how accurate, "
               "measured on this machine.")
EPILOG = ("Start with `cifar-speed doctor` (what runs here) and `cifar-speed models` (what ships); "
          "`cifar-speed COMMAND --help` lists a command's options.")
VERBOSE_HELP = "also print third-party warnings (one line each; they are always kept in a log file)"

# The one-line help of every command, so `cifar-speed --help` needs no command module imported.
# tests/test_cli.py checks it against the help each module registers.
COMMANDS: dict[str, str] = {
    "bench": "benchmark checkpoints across backends, precisions and batch sizes",
    "compare": "compare two bench results files cell by cell, with their noise",
    "compile": "compile a checkpoint into a saved artifact (ONNX, AOTInductor .pt2, TensorRT)",
    "data": "verify or download CIFAR-10; build its JPEG test set",
    "doctor": "what runs on this machine: a verdict per backend, runtimes, data set, machine facts",
    "eval": "evaluate a checkpoint on the official CIFAR-10 test set",
    "export": "export a checkpoint for serving (a Triton Inference Server model repository)",
    "models": "list the model registry and the shipped checkpoints with params, FLOPs and top-1 (clean, JPEG-75)",
    "recommend": "the fastest model/backend/precision that meets an accuracy bar, from measured results",
    "report": "render Markdown tables and PNG plots from bench results",
    "train": "train a model from a recipe file",
}
# Commands whose own stderr must stay live: train --nproc relays its workers' output through fd 2.
NO_FD_CAPTURE = {"train"}


def command_names() -> list[str]:
    from . import commands

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__))


def _command_in(argv: list[str]) -> str | None:
    # The top-level options (-h, -v, --version) take no value: the first other word is the command.
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser of the command named in `argv` (every command when argv is None), and a
    help-only entry for each other command."""
    parser = _Parser(prog="cifar-speed", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"cifar-speed {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = None if argv is None else _command_in(argv)
    for name in command_names():
        if argv is not None and name != wanted:
            sub.add_parser(name, help=COMMANDS.get(name, f"see `cifar-speed {name} --help`"))
            continue
        module = importlib.import_module(f"{__package__}.commands.{name}")
        module.add_parser(sub)
        p = sub.choices[name]
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        p.set_defaults(func=_captured(name, p.get_default("func")))
    return parser


def _captured(command: str, run: Callable) -> Callable:
    """`run` inside a capture of third-party output; afterwards the log is written and, with -v,
    each distinct message printed once."""
    def func(args) -> int:
        from . import capture
        from .console import clear_status

        sink = None
        try:
            with capture.capture(fd_level=command not in NO_FD_CAPTURE) as sink:
                try:
                    return run(args)
                finally:
                    clear_status()   # while the real stderr it draws on is still open
        finally:
            if sink is not None:
                path = capture.write_log(sink, command)
                if getattr(args, "verbose", 0) and sink.messages:
                    where = f"; in full in {path}" if path else ""
                    print(f"third-party output, {len(sink.messages)} distinct message(s){where}:", file=sys.stderr)
                    for line in sink.lines():
                        print(f"  {line}", file=sys.stderr)
    return func


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CifarSpeedError as e:
        print(f"cifar-speed: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, a folder where a file should be, a full disk: the path and the cause
        from .fileio import os_error_line

        print(f"cifar-speed: error: {_one_line(os_error_line(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cifar-speed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
