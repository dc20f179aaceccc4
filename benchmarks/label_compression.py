"""The label file's saliency compression, compared by size x read rate (issue 37).

Builds saliency rows as a label file holds them (uint8, 14 classes x 224 x 224, one HDF5
chunk per row), stores the same rows with each candidate and prints one JSON list on
stdout, one object per (maps, codec, reader):

    {"maps", "codec", "reader", "bytes_per_image", "ratio", "write_ms", "write_cpu_ms",
     "read_ms", "read_cpu_ms", "rounds", ...}

``maps`` (``--maps``): ``smooth``, benchmarks/scale.py's label-file maps (bicubic 8 x 8
noise, every pixel non-zero: a worst case), or ``distill``, explain's own
:func:`doll.explanation.distill.distill` of 2 members' smooth random attributions
(Gaussian noise; the positive part, smoothed and normalised: about half the pixels 0).

Codecs: gzip at levels 1, 4 (``doll.labels.store.GZIP_LEVEL``, today's files) and 6, written
as doll writes them (``zlib.compress`` per row, stored with ``write_direct_chunk``); lzf
(h5py's own filter); and, when ``hdf5plugin`` is installed, blosc-lz4, blosc-zstd (levels 1
and 5), lz4 and zstd (level 3) through HDF5 filters. ``write_ms``: one row compressed and
stored, one thread.

Readers (``read_ms``: one whole row, the way doll reads it, rows in a shuffled order, the
file in the page cache, never in HDF5's chunk cache): ``h5py`` (``ds[i]``: HDF5's filter pipeline; every codec), and for
the gzip files, which keep today's format, the raw chunk (``read_direct_chunk``) inflated
by ``zlib``, ``isal`` (python-isal's ``isal_zlib``), ``zlib-ng`` and ``libdeflate``
(the ``deflate`` package), where installed. The arms are interleaved: each of ``--rounds``
rounds reads every row once with every (codec, reader), in one shuffled order, and the
figures are the medians over rounds (wall and ``time.process_time`` CPU, per row), so the
shared machine's load falls on every arm alike.

    pip install hdf5plugin isal zlib-ng  # the optional candidates (deflate comes with doll)
    python benchmarks/label_compression.py --rows 48 --rounds 7 > label_compression.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("BLOSC_NTHREADS", "1")  # one thread per reader, as a DataLoader worker has

import h5py  # noqa: E402
import numpy as np  # noqa: E402

C, S = 14, 224


def smooth_maps(rng: np.random.Generator, k: int) -> np.ndarray:
    """benchmarks/scale.py's label-file maps: bicubic 8 x 8 noise, (k, C, S, S) uint8."""
    import cv2

    low = rng.random((k * C, 8, 8), dtype=np.float32)
    return (np.stack([cv2.resize(m, (S, S), interpolation=cv2.INTER_CUBIC) for m in low]).clip(0, 1) * 255) \
        .astype(np.uint8).reshape(k, C, S, S)


def distill_maps(rng: np.random.Generator, k: int, members: int = 2) -> np.ndarray:
    """explain's distill of ``members`` random attributions per class, (k, C, S, S) uint8."""
    from doll.explanation.distill import distill

    return np.stack([distill([rng.standard_normal((C, S, S), dtype=np.float32) for _ in range(members)])
                     for _ in range(k)])


def codecs() -> dict:
    """name -> h5py create_dataset keywords, or ("zlib", level) for doll's own gzip writes."""
    from doll.labels.store import GZIP_LEVEL

    out = {f"gzip-{lv}" + (" (today)" if lv == GZIP_LEVEL else ""): ("zlib", lv) for lv in sorted({1, GZIP_LEVEL, 6})}
    out["lzf"] = {"compression": "lzf"}
    try:
        import hdf5plugin
    except ImportError:
        return out
    out["blosc-lz4"] = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
    out["blosc-zstd-1"] = dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
    out["blosc-zstd-5"] = dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
    out["lz4"] = dict(hdf5plugin.LZ4())
    out["zstd-3"] = dict(hdf5plugin.Zstd(clevel=3))
    return out


def inflaters() -> dict:
    """name -> f(raw zlib stream, size) -> bytes-like: the inflaters of today's gzip chunks."""
    out = {"zlib": lambda raw, n: zlib.decompress(raw, bufsize=n)}
    try:
        from isal import isal_zlib
        out["isal"] = lambda raw, n: isal_zlib.decompress(raw, bufsize=n)
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng
        out["zlib-ng"] = lambda raw, n: zlib_ng.decompress(raw, bufsize=n)
    except ImportError:
        pass
    try:
        import deflate
        out["libdeflate"] = lambda raw, n: deflate.zlib_decompress(raw, n)
    except ImportError:
        pass
    return out


def write(path: Path, rows: np.ndarray, spec) -> tuple[list[float], list[float], int]:
    """Store ``rows`` one chunk per row with ``spec``; per-row wall and CPU seconds, bytes stored."""
    wall, cpu = [], []
    with h5py.File(path, "w") as f:
        if isinstance(spec, tuple):
            ds = f.create_dataset("saliency", shape=rows.shape, dtype=np.uint8, chunks=(1, *rows.shape[1:]),
                                  compression="gzip", compression_opts=spec[1])
        else:
            ds = f.create_dataset("saliency", shape=rows.shape, dtype=np.uint8, chunks=(1, *rows.shape[1:]), **spec)
        for i, r in enumerate(rows):
            t0, c0 = time.perf_counter(), time.process_time()
            if isinstance(spec, tuple):
                ds.id.write_direct_chunk((i, 0, 0, 0), zlib.compress(r.tobytes(), spec[1]))
            else:
                ds[i] = r
            f.flush()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        stored = ds.id.get_storage_size()
    return wall, cpu, stored


def reader(ds: h5py.Dataset, inflate):
    """f(i) -> the row as a (C, S, S) uint8 array."""
    if inflate is None:
        return lambda i: ds[i]
    shape, n = ds.shape[1:], int(np.prod(ds.shape[1:]))

    def read(i):
        _, raw = ds.id.read_direct_chunk((i, 0, 0, 0))
        return np.frombuffer(inflate(raw, n), np.uint8).reshape(shape)
    return read


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=48, help="rows per file (more than HDF5's chunk cache holds: 12)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--maps", default="smooth,distill")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.rows < 24:
        ap.error("--rows must be at least 24: fewer would fit HDF5's chunk cache and time memory copies")
    rng = np.random.default_rng(args.seed)
    specs, infl = codecs(), inflaters()
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="doll-compression-") as tmp:
        for kind in [m for m in args.maps.split(",") if m]:
            rows = (smooth_maps if kind == "smooth" else distill_maps)(rng, args.rows)
            print(f"[compression] {kind}: {args.rows} rows, {float((rows == 0).mean()):.2f} of pixels 0",
                  file=sys.stderr, flush=True)
            files, base = {}, {}
            for name, spec in specs.items():
                path = Path(tmp) / f"{kind}-{name.split()[0]}.h5"
                wall, cpu, stored = write(path, rows, spec)
                files[name] = (path, isinstance(spec, tuple))
                base[name] = {"maps": kind, "codec": name, "bytes_per_image": int(stored / len(rows)),
                              "ratio": round(rows.nbytes / stored, 2),
                              "write_ms": round(1e3 * statistics.median(wall), 2),
                              "write_cpu_ms": round(1e3 * statistics.median(cpu), 2)}
            handles = {name: h5py.File(p, "r") for name, (p, _) in files.items()}
            arms = []
            for name, (_, gz) in files.items():
                ds = handles[name]["saliency"]
                arms.append((name, "h5py", reader(ds, None)))
                if gz:
                    arms += [(name, k, reader(ds, f)) for k, f in infl.items()]
            # one order for every pass: a row comes back only after all the others, so HDF5's chunk
            # cache (8 MiB by default in HDF5 2.0, 11 rows) never holds it, as in an epoch over a big file
            order = rng.permutation(len(rows))
            for name, how, read in arms:  # every arm reads back exactly what was written
                if not all(np.array_equal(read(int(i)), rows[i]) for i in order):
                    raise SystemExit(f"{kind} {name} {how}: rows read back differ")
            times: dict = {(a[0], a[1]): ([], []) for a in arms}
            for _ in range(args.rounds):
                for a in rng.permutation(len(arms)):
                    name, how, read = arms[a]
                    t0, c0 = time.perf_counter(), time.process_time()
                    for i in order:
                        read(int(i))
                    w, c = times[(name, how)]
                    w.append((time.perf_counter() - t0) / len(rows))
                    c.append((time.process_time() - c0) / len(rows))
            for (name, how), (w, c) in times.items():
                results.append({**base[name], "reader": how, "read_ms": round(1e3 * statistics.median(w), 3),
                                "read_cpu_ms": round(1e3 * statistics.median(c), 3), "rounds": args.rounds,
                                "rows": args.rows})
            for h in handles.values():
                h.close()
    json.dump(results, sys.stdout, indent=None)
    print()
    return results


if __name__ == "__main__":
    main()
