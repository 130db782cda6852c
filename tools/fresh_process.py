"""What the probe tools share: running one measurement in a fresh Python process under an
environment setting ("VAR=VALUE ...", '' for the plain environment) and reading back the JSON line it
prints last (tools/host_phases.py, tools/process_state_probe.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def env_setting_ok(text: str) -> bool:
    """Whether `text` is a setting: VAR=VALUE pairs separated by spaces, or nothing."""
    return all("=" in kv for kv in text.split())


def run_json_child(cmd: list[str], env_text: str, tool: str):
    """`cmd` run to its end with `env_text`'s variables added to this environment: the JSON of its
    last line of output. A failed process ends the tool with its last line of error and status 2."""
    env = {**os.environ, **dict(kv.split("=", 1) for kv in env_text.split())}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"{tool}: error: a probe process failed: {last}", file=sys.stderr)
        raise SystemExit(2)
    return json.loads(done.stdout.strip().splitlines()[-1])
