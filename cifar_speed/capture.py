"""Third-party warnings and log lines, kept out of the user's way but never thrown away.

PyTorch, torchao, Inductor and ONNX Runtime's quantizer print deprecation notices, UserWarnings and
`WARNING:root:` lines while a backend builds. They can matter (a fallback, a precision caveat), so a
command runs inside `capture()`: every such message is kept in a log file, and the user sees at most
one line per distinct message with `-v`, nothing by default.

Three channels, because the libraries use all three:
  - Python warnings (`warnings.warn`): recorded through `showwarning` inside `catch_warnings`;
  - `logging` records that reach the root logger (ONNX Runtime's quantizer logs on root);
  - raw writes to file descriptor 2 (torch's own log handlers, C++ libraries, `print(file=sys.stderr)`):
    fd 2 is pointed at a temporary file while the command runs, so nothing bypasses the capture.
Our own progress display writes to `user_stderr()`, a duplicate of the real stderr.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from .fileio import atomic_write_text

# Loggers of this package are ours: they are not third-party output.
OWN_LOGGER = "cifar_speed"
KEEP_LOGS = 50

# Prefixes that differ between repeats of one message: glog-style (torch, ONNX Runtime's C++),
# e.g. "W1125 21:33:42.520000 5598 torch/utils/cpp_extension.py:183] [0/0] ", and ISO timestamps.
_VOLATILE = [
    re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ (?P<where>\S+?:\d+)\] (\[[^\]]*\] )?"),
    re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)? ?"),
]


@dataclass
class Message:
    """One distinct third-party message and how often it appeared."""
    source: str      # "warning", "logging" or "stderr"
    text: str        # the first line, volatile prefixes removed: the key for de-duplication
    detail: str      # the whole message as it was emitted
    count: int = 1


@dataclass
class Captured:
    """Everything one command run captured, in first-seen order."""
    messages: dict[tuple[str, str], Message] = field(default_factory=dict)
    _stderr_file: IO[bytes] | None = None   # where fd 2 points while the capture runs
    _stderr_read: int = 0                   # bytes of it already turned into messages

    def drain(self, final: bool = False) -> None:
        """Turn what reached fd 2 so far into messages (complete lines only, unless final), so a
        results file written before the command ends can embed them."""
        if self._stderr_file is None:
            return
        with contextlib.suppress(Exception):
            sys.stderr.flush()   # Python-level writes still buffered belong to the capture
        self._stderr_file.seek(self._stderr_read)
        data = self._stderr_file.read()
        self._stderr_file.seek(0, os.SEEK_END)
        if not final:
            data = data[:data.rfind(b"\n") + 1]
        self._stderr_read += len(data)
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.add("stderr", line)

    def add(self, source: str, detail: str) -> None:
        detail = detail.rstrip()
        first = next((l for l in detail.splitlines() if l.strip()), "")
        text = normalise(first)
        if not text:
            return
        key = (source, text)
        if key in self.messages:
            self.messages[key].count += 1
        else:
            self.messages[key] = Message(source, text, detail)

    def lines(self, width: int = 200) -> list[str]:
        """One line per distinct message, cut at `width` (what `-v` shows; the log keeps it whole)."""
        out = []
        for m in self.messages.values():
            text = m.text if len(m.text) <= width else m.text[:width - 1] + "…"
            out.append(text + (f" (x{m.count})" if m.count > 1 else ""))
        return out

    def log_text(self) -> str:
        """Every message in full, repeats counted (what the log file keeps)."""
        return "".join(f"[{m.source}] x{m.count}\n{m.detail}\n\n" for m in self.messages.values())

    def as_records(self) -> list[dict]:
        return [{"source": m.source, "text": m.text, "count": m.count} for m in self.messages.values()]


def normalise(line: str) -> str:
    line = line.strip()
    for pattern in _VOLATILE:
        # The glog prefix's file:line says where the message comes from: keep it, drop the rest.
        line = pattern.sub(lambda m: m.group("where") + ": " if "where" in m.groupdict() else "", line)
    return line.strip()


class _Handler(logging.Handler):
    def __init__(self, sink: Captured, passthrough: list[logging.Handler]):
        super().__init__(logging.NOTSET)
        self.sink, self.passthrough = sink, passthrough

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + "."):
            for h in self.passthrough:  # our own log lines still go where they were configured to
                if record.levelno >= h.level:
                    h.handle(record)
            return
        try:
            self.sink.add("logging", f"{record.levelname}:{record.name}: {record.getMessage()}")
        except Exception:  # a broken third-party format string must not break the command
            self.handleError(record)


_active: list[tuple[Captured, IO[str]]] = []


def current() -> Captured | None:
    """The capture of the command now running (None outside one): results writers may embed it."""
    return _active[-1][0] if _active else None


def user_stderr() -> IO[str]:
    """Where our own progress and status lines go: the real stderr, even while fd 2 is captured."""
    return _active[-1][1] if _active else sys.stderr


@contextlib.contextmanager
def capture(fd_level: bool = True) -> Iterator[Captured]:
    """Capture third-party warnings, root-logger records and (fd_level) raw stderr while the body runs."""
    sink = Captured()
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    with contextlib.ExitStack() as stack:
        # Replacing root's handlers (not adding to them) also keeps `logging.warning()` from calling
        # basicConfig and printing `WARNING:root:` lines: root then has a handler already.
        root.handlers = [_Handler(sink, saved_handlers)]
        stack.callback(setattr, root, "handlers", saved_handlers)
        stack.enter_context(warnings.catch_warnings())
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sink.add(
            "warning", f"{category.__name__}: {message} ({_short(filename)}:{lineno})")
        real, tmp = sys.stderr, None
        if fd_level and _fd2_usable():
            sys.stderr.flush()
            saved_fd = os.dup(2)
            stack.callback(os.close, saved_fd)
            real = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
            stack.callback(real.close)
            tmp = stack.enter_context(tempfile.TemporaryFile(mode="w+b"))
            os.dup2(tmp.fileno(), 2)
            stack.callback(os.dup2, saved_fd, 2)
            sink._stderr_file = tmp
        _active.append((sink, real))
        stack.callback(_active.pop)
        try:
            yield sink
        finally:
            sink.drain(final=True)
            sink._stderr_file = None


def _fd2_usable() -> bool:
    try:
        os.fstat(2)
        return True
    except OSError:
        return False


def _short(filename: str) -> str:
    # site-packages/torch/_inductor/x.py -> torch/_inductor/x.py: the package is what identifies it.
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1:])
    return filename


def log_dir() -> Path:
    """$CIFAR_SPEED_LOG_DIR, else the cache folder's logs/ (beside the data and artifacts)."""
    if os.environ.get("CIFAR_SPEED_LOG_DIR"):
        return Path(os.environ["CIFAR_SPEED_LOG_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cifar-speed" / "logs"


def write_log(sink: Captured, command: str) -> Path | None:
    """Keep a run's third-party output in <log_dir>/<command>-<time>.log; None when there was none
    or the folder cannot be written (a log must never fail the command it describes)."""
    if not sink.messages:
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = log_dir() / f"{command}-{stamp}.log"
    try:
        atomic_write_text(path, f"# third-party output of `cifar-speed {command}`\n\n" + sink.log_text())
        # Only recent runs matter: keep the newest KEEP_LOGS so the folder does not grow forever.
        for old in sorted(log_dir().glob("*.log"), key=lambda p: p.stat().st_mtime)[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)
    except OSError:
        return None
    return path
