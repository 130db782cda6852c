"""Property tests (hypothesis) of everything that reads a file a user hands over: recipes, checkpoint
sidecars and results files (report, compare). Whatever the structure or the bytes, the only
exception that may escape is CifarSpeedError, the one the CLI prints as one line.

Inputs are arbitrary documents, arbitrary bytes, and (to reach past the first checks) real files of
this repository with one to three parts replaced, deleted or retyped.
"""
from __future__ import annotations

import copy
import json
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cifar_speed.checkpoint import load_checkpoint, read_sidecar
from cifar_speed.commands import compare as compare_cmd
from cifar_speed.errors import CifarSpeedError
from cifar_speed.report import load_results, render_markdown
from cifar_speed.train.recipe import build_recipe, load_recipe, parse_recipe

from _fakedata import REPO
from _infer_util import make_checkpoint

if not (REPO / "results" / "checkpoints" / "lightnn.json").is_file():
    # The examples mutate this repository's shipped sidecars and results files; a tree without them
    # (a lent GPU machine gets results/ trimmed to fit a call) has nothing to mutate.
    pytest.skip("needs the shipped results/checkpoints (trimmed from this tree)", allow_module_level=True)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TMP = Path(tempfile.mkdtemp(prefix="cifar-speed-prop-"))

_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**80, max_value=2**80)
            | st.floats() | st.text(max_size=12))
JSON = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)
# What tomllib can return: no null, but dates and times.
TOML = st.recursive(st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats() | st.text(max_size=12)
                    | st.datetimes() | st.dates() | st.times(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)


def _slots(doc, out=None):
    """(container, key) for every value inside doc, nested ones included."""
    out = [] if out is None else out
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((doc, k))
        _slots(v, out)
    return out


@st.composite
def mutated(draw, base, values):
    """`base` with 1-3 values replaced by arbitrary ones, deleted, or (for strings) given another type."""
    doc = copy.deepcopy(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        if draw(st.booleans()) and isinstance(container, dict):
            del container[key]
        else:
            container[key] = draw(values)
    return doc


def _only_our_error(fn, *args):
    try:
        fn(*args)
    except CifarSpeedError as e:
        assert "\n" not in str(e)


# -- recipes ----------------------------------------------------------------------------------------

RECIPES = [tomllib.loads(p.read_text()) for p in sorted((REPO / "train").glob("*.toml"))]


@SETTINGS
@given(mutated(RECIPES, TOML))
def test_recipe_structures(doc):
    _only_our_error(build_recipe, doc, "x", "x.toml")


@SETTINGS
@given(TOML)
def test_recipe_arbitrary_documents(doc):
    _only_our_error(build_recipe, doc if isinstance(doc, dict) else {"model": doc}, "x", "x.toml")


@SETTINGS
@given(st.text(max_size=200))
def test_recipe_text(text):
    _only_our_error(parse_recipe, text, "x", "x.toml")


@SETTINGS
@given(st.binary(max_size=200))
def test_recipe_bytes(data):
    path = TMP / "r.toml"
    path.write_bytes(data)
    _only_our_error(load_recipe, path)


# -- checkpoint sidecars ------------------------------------------------------------------------------

SIDECARS = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "checkpoints").glob("*.json"))]


@pytest.fixture(scope="module")
def ckpt():
    """A real lightnn checkpoint whose sidecar each example overwrites (its weights stay valid)."""
    return make_checkpoint(TMP / "ck")


def _write_sidecar(ckpt: Path, doc) -> None:
    ckpt.write_text(json.dumps(doc))


@SETTINGS
@given(doc=mutated([*SIDECARS[:3], json.loads((REPO / "results" / "checkpoints" / "lightnn.json").read_text())], JSON))
def test_sidecar_structures(ckpt, doc):
    original = ckpt.read_text()
    try:
        _write_sidecar(ckpt, doc)
        _only_our_error(read_sidecar, ckpt)
        _only_our_error(load_checkpoint, ckpt)  # the weights stay lightnn's: other models must be refused cleanly
    finally:
        ckpt.write_text(original)


@SETTINGS
@given(doc=JSON)
def test_sidecar_arbitrary_documents(ckpt, doc):
    original = ckpt.read_text()
    try:
        _write_sidecar(ckpt, doc)
        _only_our_error(read_sidecar, ckpt)
    finally:
        ckpt.write_text(original)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_sidecar_bytes(ckpt, data):
    original = ckpt.read_text()
    try:
        ckpt.write_bytes(data)
        _only_our_error(read_sidecar, ckpt)
    finally:
        ckpt.write_text(original)


# -- results files (report and compare) ------------------------------------------------------------------

def _results_files() -> list[dict]:
    """Committed results files the current reader accepts (older schemas included when it reads them)."""
    docs = []
    for p in sorted((REPO / "results").glob("*/*.json")):
        try:
            load_results(p)
        except CifarSpeedError:
            continue
        doc = json.loads(p.read_text())
        for key in ("cells", "benchmarks"):  # a bench file or pytest-benchmark's JSON (both are read)
            if isinstance(doc.get(key), list):
                doc[key] = doc[key][:12]  # a dozen entries reach every code path and keep examples fast
        docs.append(doc)
    return docs


RESULTS = _results_files()


def _read_and_render(doc) -> None:
    path = TMP / "results.json"
    path.write_text(json.dumps(doc))
    results = load_results(path)
    render_markdown([results])
    changes, _, _ = compare_cmd.compare(results, results)
    compare_cmd.table(changes, [])


@pytest.mark.skipif(not RESULTS, reason="no committed results file is readable by this version")
@SETTINGS
@given(mutated(RESULTS or [{}], JSON))
def test_results_structures(doc):
    _only_our_error(_read_and_render, doc)


@SETTINGS
@given(JSON)
def test_results_arbitrary_documents(doc):
    _only_our_error(_read_and_render, doc)


@SETTINGS
@given(st.binary(max_size=300))
def test_results_bytes(data):
    path = TMP / "results.json"
    path.write_bytes(data)
    _only_our_error(load_results, path)
