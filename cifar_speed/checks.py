"""Range checks for every number a user can give (recipe fields and command-line flags).

A number outside its range is one line that names the field or flag, where it came from and the
range: NaN, infinities, a negative batch or a 70-bit seed never reach the code that would misuse
them (a zero-epoch run that exits 0, a traceback deep in PyTorch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import CifarSpeedError

# torch.manual_seed / Generator.manual_seed take at most 64 bits; keep seeds portable (signed too).
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Range:
    """Allowed values: low..high, each end closed unless *_open; integer-only when `integer`."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    why: str = ""  # said after the range when the bound is not obvious (e.g. "the size of the test set")

    def describe(self) -> str:
        lo = f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
        hi = f"{'<' if self.high_open else '<='} {_fmt(self.high)}"
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} {lo} and {hi}" + (f" ({self.why})" if self.why else "")

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check(value, rng: Range, what: str):
    """`value` if `rng` holds it, else one line: '<what> = <value>: must be <range>'.

    `what` says the field and its source, e.g. "[data] batch_size in train/x.toml" or "--epochs".
    """
    if not rng.contains(value):
        raise CifarSpeedError(f"{what} = {_show(value)}: must be {rng.describe()}")
    return value


def _show(value) -> str:
    # A 10,000-digit integer must not become a 10,000-character line (or hit int->str limits).
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)[:80]


SEED = Range(0, MAX_SEED, integer=True, why="a seed fits in 63 bits")
