"""Names and defaults the command line shows before any heavy import: `cifar-speed COMMAND --help`
imports no torch, so the choices and defaults it prints live here, in plain Python.

Each is the one definition its owner uses (harness.Settings is this Settings, sweep's default batches
and tolerance are these, calibration's sample size and seed, backends' precisions); the backend names
are read from the backend modules' source (the registry fills itself only as they import), and
tests/test_cli.py checks the two agree.
"""
from __future__ import annotations

import ast
from dataclasses import asdict, dataclass
from pathlib import Path


def _scan_backends(folder: Path | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every backend in registry order, those that save an artifact), read from the source of
    cifar_speed/backends/*.py without importing it (torch): each module's
    `@register_backend("name", order=N)` and whether it defines `save`. So a new backend is one
    module, and `--help` lists it the moment it exists."""
    found = []
    for path in sorted((folder or Path(__file__).parent / "backends").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        saves = any(isinstance(n, ast.FunctionDef) and n.name == "save" for n in tree.body)
        for node in tree.body:
            for d in getattr(node, "decorator_list", []):
                if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register_backend":
                    order = next((k.value.value for k in d.keywords if k.arg == "order"), 100)
                    found.append((order, d.args[0].value, saves))
    found.sort()
    return tuple(name for _, name, _ in found), tuple(name for _, name, saves in found if saves)


# The backends' registry order (eager first: the baseline) and those with a saved artifact.
BACKENDS, ARTIFACT_BACKENDS = _scan_backends()
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")

DEFAULT_BATCHES = (32, 64, 128)
DEFAULT_TOLERANCE = 0.005   # top-1 may drop 0.5 percentage points below eager fp32 before a flag
DEFAULT_JPEG_QUALITY = 75
CALIB_SIZE = 512            # int8: training images in the calibration sample
CALIB_SEED = 0


@dataclass(frozen=True)
class Settings:
    """How the harness times a cell (harness.py uses this class)."""
    # Many short trials rather than a few long ones: on the 2-core VMs a trial's median moved by
    # 6-25 % (SD) from trial to trial with the machine's speed, while the calls inside one trial pin
    # its median to 1-5 % (sweep-fast-cnn_tuned-7.json): what limits a cell is the number of machine
    # states it sampled, not the calls per state. So trials are short, and a cell gets more of them
    # until its figure (harness.figure_of), and its speed-up over the baseline, are known to `target_rse`.
    trials: int = 15               # timed blocks per cell at least, run round-robin with the run's other cells
    max_trials: int = 200          # ... at most: later rounds time only the cells not yet known to target_rse
    target_rse: float = 0.015      # relative standard error of a cell's figure (and speed-up) at which it stops
    trial_time_s: float = 0.05     # each trial lasts at least this long ...
    trial_min_reps: int = 3        # ... and at least this many calls
    max_reps: int = 100_000
    warmup_min_reps: int = 5
    warmup_max_s: float = 10.0     # give up waiting for stability after this (recorded)
    warmup_window: int = 5         # stability: medians of two consecutive windows ...
    warmup_tolerance: float = 0.05 # ... differ by less than this fraction
    n_inputs: int = 4              # distinct batches rotated through (no cache-warm single input)
    disturbed_fraction: float = 0.6    # process view: cpu/wall below this x threads
    contention_fraction: float = 0.1   # machine view: others + steal took more than this share of our threads' cores
    # Untimed calls of the cell right before each trial: the switch from the previous cell (another
    # runtime's thread pool still spinning, its weights in cache) lands here, not in the timed block.
    # After ONNX Runtime calls, a 2-thread eager call ran 3-10x slower for up to ~0.1 s.
    settle_s: float = 0.03
    # The host's speed, read between trials (harness.Canary): a fixed single-thread matmul timed for
    # this long. On shared VMs other tenants slow our vCPUs without a trace in CPU time or steal.
    canary_s: float = 0.02          # 0: no canary

    def as_dict(self) -> dict:
        return asdict(self)
