"""The label file written piece by piece (``Blocks``) and ``doll labels merge`` streaming
rows: same content as writing whole arrays, whatever the piece size."""
from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from doll.errors import DollError
from doll.labels import store, tools


def _rows(n: int, seed: int, prefix: str) -> dict:
    rng = np.random.default_rng(seed)
    return {"saliency": rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8),
            "images": rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
            "targets": rng.random((n, 3)) > 0.5, "labels": rng.random((n, 3)).astype(np.float32),
            "probs": rng.random((n, 3)).astype(np.float32), "done": np.ones(n, bool),
            "paths": [f"{prefix}/{i}" for i in range(n)]}


ATTRS = {"classes": ["a", "b", "c"], "method": "ig", "settings": {"steps": 4}, "label_rule": "otsu",
         "image_size": 8, "dataset": "phantom", "classifiers": [], "root": "/r", "split": "train"}


def test_blocks_and_streamed_merge_equal_whole_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "ROWS_PER_WRITE", 3)  # several pieces per file, the last one short
    a, b = _rows(7, 0, "x"), _rows(5, 1, "y")
    b["paths"][1] = a["paths"][2]  # a duplicate row: merge keeps the first file's copy
    store.write_label_file(tmp_path / "a.h5", a, ATTRS)
    pieces = [(lo, b["saliency"][lo:lo + 2]) for lo in range(0, 5, 2)]
    store.write_label_file(tmp_path / "b.h5", {**b, "saliency": store.Blocks(b["saliency"].shape, pieces)}, ATTRS)
    with h5py.File(tmp_path / "b.h5") as f:
        assert np.array_equal(f["saliency"][:], b["saliency"]) and np.array_equal(f["images"][:], b["images"])

    def no_deflating(row):
        raise AssertionError("merge deflated a row again instead of copying it as stored")

    monkeypatch.setattr(store, "deflate_row", no_deflating)
    result = tools.merge([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], str(tmp_path / "m.h5"))
    assert result["rows"] == 11
    keep_b = np.array([True, False, True, True, True])
    with store.LabelFile(tmp_path / "m.h5") as lf:
        assert lf.paths() == a["paths"] + [p for p, k in zip(b["paths"], keep_b) if k]
        for key in ("saliency", "images", "targets", "labels", "probs"):
            assert np.array_equal(lf[key][:], np.concatenate([a[key], b[key][keep_b]])), key


def test_stored_rows_decode_a_dataset_of_another_layout(tmp_path):
    rows = _rows(5, 3, "w")
    with h5py.File(tmp_path / "other.h5", "w") as f:  # not one gzip chunk per row: rows come decoded
        f.create_dataset("plain", data=rows["images"])
        f.create_dataset("chunked", data=rows["images"], chunks=(2, 8, 8), compression="gzip")
        for key in ("plain", "chunked"):
            got = list(store.stored_rows(f[key], [4, 1]))
            assert all(isinstance(g, np.ndarray) for g in got)
            assert np.array_equal(np.concatenate(got), rows["images"][[4, 1]])
        store.write_label_file(tmp_path / "o.h5", {**rows, "images": store.Blocks.copy(f["chunked"])}, ATTRS)
    with h5py.File(tmp_path / "o.h5") as f:
        assert np.array_equal(f["images"][:], rows["images"]) and f["images"].chunks == (1, 8, 8)


def test_parts_from_another_version_are_refused(tmp_path):
    parts = store.PartsWriter(tmp_path / "l.h5.parts", {"steps": 4}, resume=False)
    parts.write(0, saliency=np.zeros((2, 3, 8, 8), np.uint8), targets=np.zeros((2, 3), bool))  # the old layout
    with pytest.raises(DollError, match="another doll version; start it again with --overwrite"):
        parts.read(0, ("targets", "maps"))
    assert set(parts.read(0, ("targets",))) == {"targets"}


def test_chunks_compressed_in_threads_read_back_through_hdf5s_gzip_filter(tmp_path):
    rows = _rows(9, 2, "z")
    rows["saliency"][4] = 0  # an all-zero row, as for images with no explained class
    store.write_label_file(tmp_path / "c.h5", rows, ATTRS)
    with h5py.File(tmp_path / "c.h5") as f:
        ds = f["saliency"]
        assert ds.compression == "gzip" and ds.compression_opts == store.GZIP_LEVEL and ds.chunks == (1, 3, 8, 8)
        assert np.array_equal(ds[:], rows["saliency"]) and np.array_equal(f["images"][2:5], rows["images"][2:5])
        mask, raw = ds.id.read_direct_chunk((4, 0, 0, 0))  # the zero row: stored deflated, all filters applied
        assert mask == 0 and len(raw) < 100 and zlib.decompress(raw) == bytes(3 * 8 * 8)
    bad = store.Blocks((9, 3, 8, 8), [(8, rows["saliency"][:2])])  # two rows from row 8 of 9
    with pytest.raises(ValueError, match="does not fit"):
        store.write_label_file(tmp_path / "d.h5", {**rows, "saliency": bad}, ATTRS)
    assert not (tmp_path / "d.h5").exists()


def test_attributes_round_trip_including_empty_strings(tmp_path):
    """`doll explain --split ''` (every split) stores split ""; reading it back must not parse it as JSON."""
    attrs = {**ATTRS, "split": "", "settings": {"steps": 4, "classes": ""}}
    store.write_label_file(tmp_path / "e.h5", _rows(2, 3, "e"), attrs)
    with store.LabelFile(tmp_path / "e.h5") as lf:
        assert lf.attr("split") == ""
        assert lf.attr("settings") == {"steps": 4, "classes": ""}
        assert lf.attr("classes") == ["a", "b", "c"] and lf.attr("image_size") == 8 and lf.attr("root") == "/r"
        assert lf.attr("missing", "x") == "x"


def test_merge_joins_splits_explained_the_same_way_and_refuses_other_settings(tmp_path):
    members = [{"folder": "member_0", "arch": "resnet18", "sha256": "ab"}]
    settings = {"steps": 4, "batch_size": 16, "root": "/r", "split": "train", "classifiers": "/m/cls", "members": members}
    store.write_label_file(tmp_path / "train.h5", _rows(3, 0, "train"), {**ATTRS, "settings": settings})
    other_machine = {**settings, "batch_size": 256, "root": "/mnt/r", "split": "valid", "classifiers": "/x/cls",
                     "members": [{**members[0], "folder": "/x/cls/member_0"}]}
    store.write_label_file(tmp_path / "valid.h5", _rows(2, 1, "valid"),
                           {**ATTRS, "settings": other_machine, "root": "/mnt/r", "split": "valid"})
    assert tools.merge([str(tmp_path / "train.h5"), str(tmp_path / "valid.h5")], str(tmp_path / "m.h5"))["rows"] == 5
    with store.LabelFile(tmp_path / "m.h5") as lf:
        assert lf.attr("split") == "" and lf.attr("root") == "/r"  # evaluation looks in every split
    retrained = {**settings, "members": [{**members[0], "sha256": "cd"}], "steps": 8}
    store.write_label_file(tmp_path / "other.h5", _rows(2, 2, "other"), {**ATTRS, "settings": retrained})
    with pytest.raises(DollError, match=r"differs from .*train.h5 in settings \(members, steps\)"):
        tools.merge([str(tmp_path / "train.h5"), str(tmp_path / "other.h5")], str(tmp_path / "m2.h5"))
