"""Random edits of real files never make a reader crash (issue 33, part 5).

hypothesis edits files that doll's own save functions wrote (a classifier's and a segmenter's
``config.json``, a label file's attributes and datasets, a phantom data set's ``phantom.json``)
and runs the CLI command that reads each. Every case ends in success (exit 0) or in exit 2 with
one ``error:`` line: never an internal error (exit 1, a traceback), and nothing is written
outside the command's output (the workspace is compared before and after; outputs sit deep
enough that a ``..`` in a name read from a file would land in the workspace).

Cases per reader (``max_examples``, derandomized so that every run tries the same ones; each
test prints how many ran): classifier config.json 40 (`doll explain`), segmenter config.json
40 (`doll labels refine`), label-file attributes 100 and label-file datasets 100 (`doll labels
info` and `doll labels export` each), phantom.json 40 (`doll data check`). About 20 s on one core.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import cli_exit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_schema import save_classifier, save_labels, save_segmenter

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**66, 2**66) | st.floats() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=8)
SIZES = st.sampled_from([0, 1, 15, 16, 32, 4096, 4097, 10**9, -5]) | st.floats(-1e12, 1e12)
NAMES = st.sampled_from(["..", ".", "", "/etc", "../../../x", "a/../../..", "C:\\x", "x\0y", "ok", "Edema"]) | \
    st.text(max_size=12)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace: pristine files under originals/, the copies commands read, out/ for outputs."""
    root = tmp_path_factory.mktemp("fuzz")
    orig = root / "originals"
    orig.mkdir()
    save_classifier(orig / "cls")
    save_segmenter(orig / "seg")
    save_labels(orig / "labels.h5")
    shutil.copytree(orig / "cls", root / "cls")
    shutil.copytree(orig / "seg", root / "seg")
    shutil.copy(orig / "labels.h5", root / "labels.h5")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` but out/: (size, mtime)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).parts[0] == "out"}


def run_cli(capsys, root: Path, *args) -> int:
    """Run `doll ARGS`: exit 0, or exit 2 with one `error:` line; nothing written outside out/."""
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    (out / "a" / "b" / "c").mkdir(parents=True)
    before = snapshot(root)
    args = [*map(str, args)]
    if args[0] not in ("labels", "show"):
        args.append("--quiet")
    code, err = cli_exit(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert snapshot(root) == before, "a file outside the output was written"
    return code


def json_paths(doc, prefix=()) -> list[tuple]:
    """Every key path of a JSON document (containers too)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += json_paths(v, (*prefix, i))
    return out


def json_edits(doc, used: list[tuple]):
    """1-3 edits of ``doc``: set a key path (the fields readers use more often) to a random value,
    drop it, add a key; or replace the whole file (random JSON, random bytes)."""
    paths = st.sampled_from(used) | st.sampled_from(json_paths(doc))
    value = JSON | SIZES | NAMES
    one = st.one_of(st.tuples(st.just("set"), paths, value), st.tuples(st.just("drop"), paths, st.none()),
                    st.tuples(st.just("add"), paths, value))
    return st.one_of(st.lists(one, min_size=1, max_size=3), st.tuples(st.just("whole"), JSON),
                     st.tuples(st.just("bytes"), st.binary(max_size=40)))


def apply_json(original: dict, edits) -> bytes:
    if isinstance(edits, tuple):
        kind, value = edits
        return value if kind == "bytes" else json.dumps(value).encode()
    doc = json.loads(json.dumps(original))
    for kind, path, value in edits:
        parent, key = doc, None
        try:
            for k in path[:-1]:
                parent = parent[k]
            key = path[-1]
            if kind == "set":
                parent[key] = value
            elif kind == "drop":
                del parent[key]
            elif isinstance(parent[key], dict):
                parent[key]["fuzz"] = value
            elif isinstance(parent[key], list):
                parent[key].append(value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    return json.dumps(doc).encode()


CLASSIFIER_FIELDS = [("doll",), ("doll", "kind"), ("doll", "arch"), ("doll", "classes"), ("doll", "image_size"),
                     ("doll", "in_channels"), ("doll", "normalisation"), ("doll", "lung_model"), ("doll", "classes", 0)]
SEGMENTER_FIELDS = [("doll",), ("doll", "kind"), ("doll", "encoder"), ("doll", "decoder"), ("doll", "classes"),
                    ("doll", "image_size"), ("doll", "mode"), ("doll", "aux"), ("doll", "stage"), ("_model_class",),
                    ("classes",), ("encoder_name",), ("in_channels",), ("doll", "classes", 0)]


def test_classifier_config_fuzz(ws, capsys):
    config = ws / "cls" / "config.json"
    original = json.loads((ws / "originals" / "cls" / "config.json").read_text())
    cases = []

    @settings(max_examples=40, **SETTINGS)
    @given(json_edits(original, CLASSIFIER_FIELDS))
    def case(edits):
        config.write_bytes(apply_json(original, edits))
        cases.append(run_cli(capsys, ws, "explain", "--classifiers", ws / "cls", "--dataset", "phantom", "--root",
                             ws / "no-data", "--out", ws / "out" / "a" / "b" / "c" / "l.h5", "--steps", 1))

    case()
    print(f"classifier config.json: {len(cases)} cases, exit codes {sorted(set(cases))}")
    assert len(cases) >= 30


def test_segmenter_config_fuzz(ws, capsys):
    config = ws / "seg" / "config.json"
    original = json.loads((ws / "originals" / "seg" / "config.json").read_text())
    cases = []

    @settings(max_examples=40, **SETTINGS)
    @given(json_edits(original, SEGMENTER_FIELDS))
    def case(edits):
        config.write_bytes(apply_json(original, edits))
        cases.append(run_cli(capsys, ws, "labels", "refine", ws / "originals" / "labels.h5", "--model", ws / "seg",
                             "--out", ws / "out" / "a" / "b" / "c" / "r.h5"))

    case()
    print(f"segmenter config.json: {len(cases)} cases, exit codes {sorted(set(cases))}")
    assert len(cases) >= 30 and 0 in cases


LABEL_ATTRS = ["format", "format_version", "finished", "classes", "method", "settings", "label_rule", "classifiers",
               "image_size", "dataset", "root", "split", "tool_version"]
DTYPES = ["uint8", "int8", "int32", "int64", "float16", "float32", "float64", "bool", "S4", "str"]


@st.composite
def arrays(draw, shape=None):
    dtype = draw(st.sampled_from(DTYPES))
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 9), max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    data = rng.integers(0, 256, shape) if shape else rng.integers(0, 256)
    if dtype == "str":
        return np.asarray(data).astype(str).astype(object)
    if dtype.startswith("float") and draw(st.booleans()):
        data = np.where(rng.random(shape) < 0.3, np.nan, rng.normal(0, 100, shape)) if shape else np.nan
    return np.asarray(data).astype(dtype)


ATTR_VALUES = st.one_of(JSON.map(json.dumps), st.text(max_size=12), st.integers(-2**63, 2**63 - 1),
                        st.floats(), st.booleans(), SIZES.filter(lambda v: abs(v) < 2**63), NAMES.map(json.dumps),
                        st.lists(NAMES, max_size=3).map(json.dumps), arrays())


def _write_attr(f, key, value):
    if isinstance(value, str) and "\0" in value:
        value = value.replace("\0", "")  # HDF5 strings end at NUL
    if isinstance(value, np.ndarray) and value.dtype == object:
        f.attrs.create(key, value, dtype=h5py.string_dtype())
    else:
        f.attrs[key] = value


def reset_labels(ws: Path) -> Path:
    labels = ws / "labels.h5"
    shutil.copy(ws / "originals" / "labels.h5", labels)
    return labels


def read_labels(capsys, ws: Path, labels: Path) -> list[int]:
    out = ws / "out" / "a" / "b" / "c" / "e"
    return [run_cli(capsys, ws, "labels", "info", labels), run_cli(capsys, ws, "labels", "export", labels, "--out", out)]


def test_label_attributes_fuzz(ws, capsys):
    cases = []
    edit = st.tuples(st.sampled_from(LABEL_ATTRS + ["fuzz"]), st.none() | ATTR_VALUES)

    @settings(max_examples=100, **SETTINGS)
    @given(st.lists(edit, min_size=1, max_size=3))
    def case(edits):
        labels = reset_labels(ws)
        with h5py.File(labels, "a") as f:
            for key, value in edits:
                if value is None:
                    if key in f.attrs:
                        del f.attrs[key]
                else:
                    _write_attr(f, key, value)
        cases.append(read_labels(capsys, ws, labels))

    case()
    print(f"label-file attributes: {len(cases)} cases, exit codes {sorted({c for cs in cases for c in cs})}")
    assert len(cases) >= 80


ROW_DATASETS = ("saliency", "targets", "labels", "probs", "images", "paths", "done")


@st.composite
def dataset_edit(draw, shapes, dtypes):
    key = draw(st.sampled_from(ROW_DATASETS))
    how = draw(st.sampled_from(["values", "array", "same shape", "near shape", "group", "drop"]))
    if how in ("group", "drop"):
        return key, how, None
    shape = shapes[key]
    if how == "values":  # the file's dtype and shape, other contents
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        dtype = dtypes[key]
        if dtype == object:
            return key, how, rng.choice(np.array(["", "..", "a/b", "x" * 50], dtype=object), shape)
        data = rng.normal(0, 2, shape) if dtype.kind == "f" else rng.integers(0, 256 if dtype.kind == "u" else 2, shape)
        if dtype.kind == "f":
            data[rng.random(shape) < 0.2] = np.nan
        return key, how, data.astype(dtype)
    if how == "near shape":
        shape = tuple(draw(st.integers(0, 9)) if draw(st.booleans()) else d for d in shape)
    return key, how, draw(arrays(None if how == "array" else shape))


def test_label_datasets_fuzz(ws, capsys):
    with h5py.File(ws / "originals" / "labels.h5") as f:
        shapes = {k: f[k].shape for k in ROW_DATASETS}
        dtypes = {k: object if k == "paths" else f[k].dtype for k in ROW_DATASETS}
    cases = []

    @settings(max_examples=100, **SETTINGS)
    @given(st.lists(dataset_edit(shapes, dtypes), min_size=1, max_size=2))
    def case(edits):
        labels = reset_labels(ws)
        with h5py.File(labels, "a") as f:
            for key, how, data in edits:
                if key in f:
                    del f[key]
                if how == "group":
                    f.create_group(key)
                elif how != "drop":
                    if data.dtype == object:
                        f.create_dataset(key, data=data, dtype=h5py.string_dtype())
                    else:
                        f.create_dataset(key, data=data)
        cases.append(read_labels(capsys, ws, labels))

    case()
    print(f"label-file datasets: {len(cases)} cases, exit codes {sorted({c for cs in cases for c in cs})}")
    assert len(cases) >= 80


PHANTOM_FIELDS = [("format",), ("version",), ("n",), ("size",), ("chexpert_dir",), ("classes",), ("summary",)]


def test_phantom_json_fuzz(ws, phantom, capsys):
    root = ws / "phantom"
    if not root.exists():
        shutil.copytree(phantom, root)
    meta = root / "phantom.json"
    original = json.loads((phantom / "phantom.json").read_text())
    cases = []

    @settings(max_examples=40, **SETTINGS)
    @given(json_edits(original, PHANTOM_FIELDS))
    def case(edits):
        meta.write_bytes(apply_json(original, edits))
        cases.append(run_cli(capsys, ws, "data", "check", "--dataset", "phantom", "--root", root, "--decode", 2))

    try:
        case()
    finally:
        meta.write_text(json.dumps(original))
    print(f"phantom.json: {len(cases)} cases, exit codes {sorted(set(cases))}")
    assert len(cases) >= 30
