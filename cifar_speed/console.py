"""One output policy for every command: width when piped, progress for slow steps.

Width: on a terminal, the terminal's width. Piped or redirected (CI logs, `| less`, a file), rich
would fall back to 80 columns and squeeze tables (per-class accuracy printed as `0.…`); every
command uses PIPED_WIDTH instead, unless $COLUMNS says otherwise (rich reads it).

Progress: a step that may take more than a second shows a transient spinner with the step's name
and elapsed time on the real stderr when it is a terminal, and nothing when it is not, so piped
output and logs hold only results. Either `with step("loading the test set"):` around the step, or
`status("loading the test set")` before each step of a command: one line that names the step now
running, cleared by `clear_status()` (cli.py calls it when the command ends, however it ends).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from rich.console import Console

from . import capture

PIPED_WIDTH = 160


def make_console(stderr: bool = False, **kwargs) -> Console:
    """The Console every command prints through (stdout, or stderr for status lines)."""
    if stderr:
        kwargs.setdefault("file", capture.user_stderr())
    console = Console(**kwargs)
    if not console.is_terminal and "width" not in kwargs and not os.environ.get("COLUMNS"):
        kwargs["width"] = PIPED_WIDTH
        console = Console(**kwargs)
    return console


@contextlib.contextmanager
def step(what: str, enabled: bool = True) -> Iterator[None]:
    """A spinner with `what` and the elapsed seconds while the body runs (terminal only, transient)."""
    console = make_console(stderr=True)
    if not enabled or not console.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True, redirect_stdout=False, redirect_stderr=False) as progress:
        progress.add_task(what, total=None)
        yield


_status: list[Any] = []   # the running (Progress, task id) of status(), at most one


def status(what: str) -> None:
    """Name the step now running (replaces the previous one; its elapsed time restarts)."""
    if not _status:
        console = make_console(stderr=True)
        if not console.is_terminal:
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=console, transient=True,
                            # rich would route sys.stderr through itself, past the capture of third-party output
                            redirect_stdout=False, redirect_stderr=False)
        progress.start()
        _status.append((progress, progress.add_task(what, total=None)))
        return
    progress, task = _status[0]
    progress.reset(task, description=what, what=what)


def status_count(done: int, total: int, unit: str = "images") -> None:
    """Per-batch progress of the running step: 'N / M images' after its name (no-op off a terminal)."""
    if not _status:
        return
    progress, task = _status[0]
    what = progress.tasks[0].fields.get("what") or progress.tasks[0].description
    progress.update(task, description=f"{what}: {done:,} / {total:,} {unit}", what=what)


def clear_status() -> None:
    """Remove the status line (before printing results, and when the command ends)."""
    while _status:
        _status.pop()[0].stop()
