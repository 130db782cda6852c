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
_OPT_INT = {"type": ["integer", "null"]}
_OPT_OBJ = {"type": ["object", "null"]}
_RANGE = {"type": ["array", "null"], "minItems": 2, "maxItems": 2, "items": _OPT_NUM}

# JSON types of the annotations sweep.Cell uses; a field the readers use gets a finer schema below.
_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "dict": "object",
               "list": "array", "None": "null"}


def _cell_field_schema(annotation: str) -> dict:
    return {"type": sorted({_JSON_TYPES[t.strip()] for t in str(annotation).split("|")})}


_SPREAD = {"type": ["object", "null"], "required": ["median", "min", "max"],
           "properties": {"median": _NUM, "min": _NUM, "max": _NUM, "lower_quartile": _OPT_NUM}}
_LATENCY = {"type": "object", "properties": {
    "median_ms": _NUM, "lower_quartile_ms": _OPT_NUM, "lower_quartile_rse": _OPT_NUM,
    "figure": {"type": ["string", "null"]}, "p90_ms": _OPT_NUM, "p99_ms": _OPT_NUM, "mean_ms": _OPT_NUM, "min_ms": _OPT_NUM,
    "max_ms": _OPT_NUM, "n": _OPT_INT, "threads": _OPT_INT, "cpu_wall_ratio": _OPT_NUM,
    "trial_median_ms": {"type": ["object", "null"], "properties": {"min": _OPT_NUM, "max": _OPT_NUM, "iqr": _OPT_NUM}},
    "host_normalized": _SPREAD, "canary_ms": _SPREAD, "wake_us": _SPREAD}}


def results_read_schema() -> dict:
    """What `report` and `compare` read from a results file: every field of sweep.Cell with the type
    its annotation declares (so the schema follows the record), the nested ones they format, and what
    an ok cell must have."""
    import dataclasses

    from .sweep import Cell

    cell_props = {f.name: _cell_field_schema(f.type) for f in dataclasses.fields(Cell)}
    cell_props.update({
        "latency": _LATENCY, "images_per_s_range": _RANGE, "speedup_range": _RANGE,
        "speedup_host_normalized_range": _RANGE, "accuracy": {"type": "object", "additionalProperties": _OPT_NUM},
        "runner": {"type": "object", "properties": {"memory_format": {"type": ["string", "null"]}}},
    })
    ok_cell = {"required": ["model", "backend", "precision", "batch_size", "mode", "images_per_s", "latency"],
               "properties": {"batch_size": {"type": "integer", "minimum": 1},
                              "images_per_s": {"type": "number", "exclusiveMinimum": 0},
                              "latency": {"required": ["median_ms"]}}}
    return {
        "type": "object",
        "required": ["provenance", "created", "harness", "cells"],
        "properties": {
            "created": _STR,
            "provenance": {
                "type": "object", "required": ["machine", "cpu", "versions", "torch_threads"],
                "properties": {
                    "machine": {"type": "string", "minLength": 1, "pattern": "^[^/\\\\]+$"},  # names plot files
                    "cpu": {"type": "object", "required": ["model", "usable_cpus", "features"],
                            "properties": {"model": _STR, "features": {"type": "array", "items": _STR}}},
                    "gpu": {"type": ["object", "null"], "required": ["name"], "properties": {"name": _STR}},
                    "versions": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                    "torch_threads": _OPT_INT,
                },
            },
            "harness": {"type": "object", "required": ["accuracy_images"],
                        "properties": {"accuracy_images": {"type": "integer", "minimum": 0}}},
            "peak": {"type": "object", "patternProperties": {"_(gflops|gops)$": _NUM},
                     "properties": {"denominators": {"type": "object"}, "unmeasured": _OPT_OBJ}},
            "cells": {"type": "array", "items": {
                "type": "object", "required": ["model", "status"], "properties": cell_props,
                "allOf": [
                    {"if": {"properties": {"status": {"const": "ok"}}}, "then": ok_cell},
                    {"if": {"properties": {"status": {"const": "failed"}}},
                     "then": {"required": ["backend", "precision", "reason"]}},
                ]}},
            "skipped": {"type": "array", "items": {
                "type": "object", "required": ["backend", "precision", "reason"],
                "properties": {"backend": _STR, "precision": _STR, "reason": _STR}}},
        },
    }


# What report.from_pytest_benchmark reads from pytest-benchmark's --benchmark-json before converting.
_STATS = {"type": ["object", "null"], "properties": {k: _NUM for k in ("median", "q1", "q3", "min", "max", "mean")}
          | {"rounds": _OPT_INT}}
PYTEST_BENCHMARK_READ = {
    "type": "object",
    "properties": {
        "machine_info": {"type": ["object", "null"], "properties": {
            "cpu": {"type": ["object", "null"], "properties": {"brand_raw": _STR, "count": _OPT_INT}}}},
        "commit_info": _OPT_OBJ,
        "cifar_speed": {"type": ["object", "null"], "properties": {"provenance": _OPT_OBJ}},
        "benchmarks": {"type": "array", "items": {"type": "object", "properties": {
            "stats": _STATS,
            "extra_info": {"type": ["object", "null"], "properties": {
                "model": _STR, "precision": _STR, "backend": {"type": ["string", "null"]}, "device": _STR,
                "batch_size": _OPT_INT, "flops_per_image": _OPT_NUM, "runner": _OPT_OBJ}}}}},
    },
}
