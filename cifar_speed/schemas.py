"""Reading JSON we did not necessarily write (sidecars, results files), checked with JSON Schema.

Any file handed to the CLI may be truncated, hand-edited or hostile. `read_json_file` turns every way
the bytes can be wrong into one line; `schema_error` says, in one phrase, the first way a parsed
document breaks a schema (jsonschema does the checking). `RESULTS_READ` is what `report` reads from a
results file: every field it formats or sorts, with the type it needs, so a file that passes cannot
crash the report.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import CifarSpeedError


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json_file(path: str | Path, what: str):
    """A parsed JSON file, or one line. NaN and Infinity (Python's extension to JSON) are refused, so
    no non-finite number gets past a schema's range checks."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as e:
        raise CifarSpeedError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError; so are 5,000-digit ints
        raise CifarSpeedError(f"{what} {path} is not valid JSON ({' '.join(str(e).split())[:120]})") from None


def schema_error(obj, schema: dict) -> str | None:
    """The first way `obj` breaks `schema`, as a short phrase, or None."""
    import jsonschema

    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if err is None:
        return None
    where = "/".join(map(str, err.absolute_path)) or "top level"
    message = " ".join(err.message.split())
    return f"{message[:100] + '...' if len(message) > 100 else message} (at {where[:80]})"


_STR = {"type": "string"}
_NUM = {"type": "number"}
_OPT_NUM = {"type": ["number", "null"]}

_OK_CELL = {
    "required": ["model", "backend", "precision", "batch_size", "mode", "images_per_s", "latency", "accuracy"],
    "properties": {
        "model": _STR, "backend": _STR, "precision": _STR, "mode": _STR,
        "batch_size": {"type": "integer", "minimum": 1},
        "images_per_s": {"type": "number", "exclusiveMinimum": 0},
        "latency": {"type": "object", "required": ["median_ms"], "properties": {"median_ms": _NUM}},
        "accuracy": {"type": "object", "required": ["top1"],
                     "properties": {"top1": _NUM, "agreement": _NUM, "max_logit_diff": _NUM}},
        "speedup_vs_eager_fp32": _OPT_NUM, "peak_fraction": _OPT_NUM,
    },
}

RESULTS_READ = {
    "type": "object",
    "required": ["provenance", "created", "harness", "cells"],
    "properties": {
        "created": _STR,
        "provenance": {
            "type": "object", "required": ["machine", "cpu", "versions", "torch_threads"],
            "properties": {
                "machine": {"type": "string", "minLength": 1, "pattern": "^[^/\\\\]+$"},  # names the plot files
                "cpu": {"type": "object", "required": ["model", "usable_cpus", "features"],
                        "properties": {"model": _STR, "features": {"type": "array", "items": _STR}}},
                "gpu": {"type": ["object", "null"], "required": ["name"], "properties": {"name": _STR}},
                "versions": {"type": "object", "properties": {"torch_tensorrt": {"type": ["string", "null"]}}},
            },
        },
        "harness": {"type": "object", "required": ["accuracy_images"],
                    "properties": {"accuracy_images": {"type": "integer", "minimum": 0}}},
        "peak": {"type": "object", "patternProperties": {"_(gflops|gops)$": _NUM}},
        "cells": {"type": "array", "items": {
            "type": "object", "required": ["status"], "properties": {"status": _STR},
            "allOf": [
                {"if": {"properties": {"status": {"const": "ok"}}}, "then": _OK_CELL},
                {"if": {"properties": {"status": {"const": "failed"}}},
                 "then": {"required": ["model", "backend", "precision", "reason"]}},
            ]}},
        "skipped": {"type": "array", "items": {
            "type": "object", "required": ["backend", "precision", "reason"],
            "properties": {"backend": _STR, "precision": _STR, "reason": _STR}}},
    },
}
