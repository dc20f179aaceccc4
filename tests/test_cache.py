"""The decoded-image cache (doll/data/arrays.py): same arrays as a plain decode, memory
bounded by one chunk, a stopped build resumes where it stopped, concurrent callers
decode once, bad files leave nothing behind."""
from __future__ import annotations

import json
import multiprocessing as mp
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from doll.data import arrays
from doll.data.arrays import load_arrays
from doll.data.base import Item
from doll.errors import DollError

N, SIZE = 40, 32


def make_items(root: Path, n: int = N) -> list[Item]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        image = root / f"img{i:03d}.png"
        cv2.imwrite(str(image), rng.integers(0, 256, (48, 48), dtype=np.uint8))
        masks = {}
        if i % 3:  # every third image has no mask
            mask = root / f"heart{i:03d}.png"
            cv2.imwrite(str(mask), (rng.random((48, 48)) > 0.5).astype(np.uint8) * 255)
            masks["heart"] = mask
        items.append(Item(id=f"img{i:03d}", image=image, masks=masks))
    return items


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DOLL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_equals_a_plain_decode_and_is_memory_mapped(tmp_path, cache):
    items = make_items(tmp_path)
    plain = load_arrays(items, SIZE, ["heart"], cache=False, progress=False)
    built = load_arrays(items, SIZE, ["heart"], progress=False)
    again = load_arrays(items, SIZE, ["heart"], progress=False)
    for a in (built, again):
        assert isinstance(a.images, np.memmap) and a.images.shape == (N, SIZE, SIZE)
        assert np.array_equal(a.images, plain.images) and np.array_equal(a.masks, plain.masks)
        assert a.has_mask.tolist() == [[bool(i % 3)] for i in range(N)]
    assert plain.masks[0].sum() == 0 and plain.masks[1].sum() > 0
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == [cache.glob("*/images.npy").__next__().parent.name]


def test_memory_stays_at_one_chunk(tmp_path, cache, monkeypatch):
    """The build writes each chunk into the memory-mapped file: the peak of Python-side
    allocations is a few chunks, not the whole set (the former list + np.stack held it twice)."""
    items = make_items(tmp_path, 64)
    monkeypatch.setattr(arrays, "CHUNK", 8)
    size = 96
    tracemalloc.start()
    load_arrays(items, size, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    whole = 64 * size * size
    assert peak < 0.5 * whole, (peak, whole)


def test_a_stopped_build_resumes_where_it_stopped(tmp_path, cache, monkeypatch):
    items = make_items(tmp_path)
    monkeypatch.setattr(arrays, "CHUNK", 8)
    real = arrays.load_image
    calls: list[str] = []

    def dying(path, size, with_shape=False):
        if len(calls) == 20:
            raise KeyboardInterrupt  # Ctrl-C in the third chunk
        calls.append(Path(path).name)
        return real(path, size, with_shape=with_shape)

    monkeypatch.setattr(arrays, "load_image", dying)
    with pytest.raises(KeyboardInterrupt):
        load_arrays(items, SIZE, ["heart"], progress=False)
    partial = next(cache.glob("*.partial"))
    assert json.loads((partial / "progress.json").read_text()) == {"n": N, "done": 16}

    calls.clear()
    monkeypatch.setattr(arrays, "load_image", lambda p, s, with_shape=False: (calls.append(Path(p).name),
                                                                              real(p, s, with_shape=with_shape))[1])
    resumed = load_arrays(items, SIZE, ["heart"], progress=False)
    assert calls == [f"img{i:03d}.png" for i in range(16, N)]  # the first two chunks are not decoded again
    assert not list(cache.glob("*.partial"))
    plain = load_arrays(items, SIZE, ["heart"], cache=False, progress=False)
    assert np.array_equal(resumed.images, plain.images) and np.array_equal(resumed.masks, plain.masks)


def _count_decodes(args):
    cache, root, out = args
    import os
    import time

    os.environ["DOLL_CACHE"] = cache
    from doll.data import arrays as arr

    real, n = arr.load_image, []

    def slow(path, size, with_shape=False):
        n.append(1)
        time.sleep(0.02)
        return real(path, size, with_shape=with_shape)

    arr.load_image = slow
    items = [Item(id=p.stem, image=p) for p in sorted(Path(root).glob("img*.png"))]
    a = arr.load_arrays(items, SIZE, progress=False)
    np.save(out, np.asarray(a.images))
    return len(n)


def test_concurrent_callers_decode_once(tmp_path, cache):
    make_items(tmp_path)
    jobs = [(str(cache), str(tmp_path), str(tmp_path / f"out{k}.npy")) for k in range(2)]
    with mp.get_context("spawn").Pool(2) as pool:
        counts = pool.map(_count_decodes, jobs)
    assert sorted(counts) == [0, N]  # one process decoded, the other waited and memory-mapped its result
    assert np.array_equal(np.load(jobs[0][2]), np.load(jobs[1][2]))


def test_bad_files_raise_and_leave_no_partial_build(tmp_path, cache):
    items = make_items(tmp_path, 12)
    items[5].image.write_bytes(b"not an image")
    with pytest.raises(DollError, match=r"1 of the 12 images could not be read \(first: .*img005"):
        load_arrays(items, SIZE, progress=False)
    for it in items:
        it.image.write_bytes(b"broken")
    with pytest.raises(DollError, match="none of the 12 images could be read"):
        load_arrays(items, SIZE, progress=False)
    assert not list(cache.glob("*.partial")) and not list(cache.glob("*/images.npy"))


def test_decode_cache_benchmark(phantom, tmp_path, capsys):
    """benchmarks/decode_cache.py: one JSON line, the phantom's train split, a baseline comparison."""
    import importlib.util
    import os

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "decode_cache.py"
    spec = importlib.util.spec_from_file_location("decode_cache", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = os.environ.get("DOLL_CACHE")
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"images_per_s": 1e9}))
    out = bench.main(["--dataset", "phantom", "--root", str(phantom), "--split", "train", "--image-size", "32",
                      "--baseline-json", str(base)])
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(printed) == 1 and json.loads(printed[0]) == out
    assert out["images"] > 0 and out["image_size"] == 32 and out["images_per_s"] > 0
    assert out["array_mb"] == round(out["images"] * 32 * 32 / 2**20, 1) and out["baseline_ratio"] > 1000
    assert os.environ.get("DOLL_CACHE") == before  # the temporary cache is not left in the environment
