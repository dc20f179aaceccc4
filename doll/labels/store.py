"""The DoLL label file (HDF5), format version 1.

Datasets (N images, C classes, H x W pixels):

=============  =====================  ==============================================
``saliency``   uint8 (N, C, H, W)     distilled saliency 0-255; chunked per image, gzip
``targets``    bool (N, C)            which classes were explained for each image
``labels``     float32 (N, C)         the image labels (1, 0, -1 uncertain, NaN unknown)
``probs``      float32 (N, C)         the ensemble's predicted probabilities
``images``     uint8 (N, H, W)        the preprocessed images (pretraining needs only this file)
``paths``      str (N,)               image ids (paths relative to the data root)
``done``       bool (N,)              row finished
=============  =====================  ==============================================

Attributes: ``format`` = "doll-labels", ``format_version`` = 1, ``finished`` = 1 (written last), ``classes`` (JSON list),
``method``, ``settings`` (JSON), ``label_rule``, ``classifiers`` (JSON: folder, arch,
sha256 of each member's weights), ``image_size``, ``dataset``, ``root`` and ``split``
(where the images were read; ``split`` "" = all splits, e.g. after a merge of several),
``tool_version``.

While a run is in progress, finished blocks of rows live as atomically written ``.npz``
files in ``<file>.parts/``: each row's saliency already compressed as the label file stores
it (``rows``, the chunks end to end, and ``row_ends``; blocks of doll before 2026-12-06 hold
the explained classes' maps, ``maps``, and are read too); ``--resume`` skips the blocks already there and the
final file is assembled from them (and renamed into place) at the end, so a killed run
never leaves a half-written ``.h5`` behind. The final file is written block by block, so
memory stays bounded by a block, not by the data set (CheXpert at 224 px: 191k x 14 x
224 x 224 bytes of saliency would be 134 GB). Several processes (torchrun) write blocks
into the same parts folder (which must be on a file system they all share); ``doll labels
merge`` joins files explained the same way on separate machines.

Finished marker: the file is written under a temporary name (``.<name>.XXXXXXXX.tmp``)
and renamed into place when complete, as every doll version has done: the rename is the
real marker, and the ``finished`` attribute (written last, before the rename) says so
inside the file. Readers refuse a file whose ``finished`` is present and not 1; a file
without the attribute is accepted (made before it existed, and, being at its final name,
renamed there complete).

The ``dataset`` attribute is data: readers resolve it through the built-in registry only
(:meth:`LabelFile.dataset_name`); a plug-in ``package.module:ClassName`` is honoured only
from the command line, so a shared file can never make doll import a module. Row reads go
through :func:`read_rows`: an HDF5 read failure names the file, the row and its image id.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import deflate
import h5py
import numpy as np

from doll.errors import DollError
from doll.labels.rule import DEFAULT_RULE
from doll.schema import check_label_file, check_parts_block, read_parts_settings, show
from doll.utils import atomic_path, differing_keys, jsonable, tool_version

FORMAT, FORMAT_VERSION = "doll-labels", 1
ROW_DATASETS = ("saliency", "targets", "labels", "probs", "images", "paths", "done")


BLOCK_DEFLATE_LEVEL = 1  # the .parts blocks of a running explain: fast over small (PartsWriter.write)
ROWS_PER_WRITE = 64  # rows of a big dataset copied per write (224 px, 14 classes: 45 MB of saliency)
GZIP_LEVEL = 4
COMPRESS_THREADS = min(8, os.cpu_count() or 1)  # libdeflate releases the GIL: chunks compress in parallel


class Blocks:
    """A row dataset given piece by piece, so that no process holds it whole: its full
    ``shape`` and an iterable of ``(first row, piece)``. A piece is a uint8 array of rows,
    or ``bytes``: one row as :func:`stored_rows` reads it from another label file, written
    as is (inflated once to check it, never deflated again)."""

    def __init__(self, shape: tuple[int, ...], pieces):
        self.shape, self.pieces = tuple(shape), pieces

    @classmethod
    def of(cls, array: np.ndarray) -> Blocks:
        """An array (in memory or memory-mapped), copied ``ROWS_PER_WRITE`` rows at a time."""
        return cls(array.shape, ((lo, array[lo:lo + ROWS_PER_WRITE]) for lo in range(0, len(array), ROWS_PER_WRITE)))

    @classmethod
    def copy(cls, ds: h5py.Dataset) -> Blocks:
        """Every row of a dataset of another label file, as stored where it can be."""
        return cls(ds.shape, enumerate(stored_rows(ds, range(len(ds)))))


def stored_rows(ds: h5py.Dataset, rows):
    """The given rows of a label file's big dataset, one at a time: the compressed bytes of
    the row when the dataset has the layout :func:`write_label_file` gives it (one gzip
    chunk per row), else the decoded row (an array of one row). A row whose chunk cannot be
    read or does not inflate to a row raises :func:`row_error`: a damaged row is never copied."""
    ds = ds.ds if isinstance(ds, Rows) else ds
    as_stored = ds.chunks == (1, *ds.shape[1:]) and ds.compression == "gzip" and ds.dtype == np.uint8
    tail = (0,) * (ds.ndim - 1)
    for i in rows:
        if as_stored:
            try:
                filters, chunk = ds.id.read_direct_chunk((int(i), *tail))
            except OSError as exc:
                raise unreadable_row(ds, int(i), exc) from None
            if filters == 0:  # every filter applied, as write_label_file stores it
                reason = _check_row(ds, int(i), chunk)  # inflated once: a damaged chunk is never copied as is
                if reason:
                    raise row_error(ds, int(i), reason)
                yield chunk
                continue
        yield read_rows(ds, slice(int(i), int(i) + 1))


def read_rows(ds: h5py.Dataset, index):
    """``ds[index]``, with an HDF5 read failure (a damaged chunk) turned into
    ``DollError("<file> row N (<image id>) is unreadable: <reason>; re-run doll explain for it")``.

    One row (an int ``index``) of a dataset stored as :func:`write_label_file` stores it (one
    zlib chunk per row, deflate its only filter) is read as stored and inflated by libdeflate
    (the ``deflate`` package) instead of HDF5's gzip filter: the same bytes, in 2.7-3.7x less
    CPU for a 14 x 224 x 224 row (``benchmarks/label_compression.py``, issue 37); the file
    format is unchanged. Anything else (slices, other layouts, a chunk HDF5 has not
    allocated) is read by h5py as before."""
    if isinstance(index, (int, np.integer)):
        row = _inflated_row(ds, int(index))
        if row is not None:
            return row
    try:
        return ds[index]
    except OSError as exc:
        raise unreadable_row(ds, index, exc) from None


def _inflated_row(ds: h5py.Dataset, i: int) -> np.ndarray | None:
    """Row ``i`` inflated from its stored bytes, or None where h5py is to read it instead."""
    ds = ds.ds if isinstance(ds, Rows) else ds
    shape = ds.shape
    if not (0 <= i < shape[0] and ds.dtype == np.uint8 and ds.compression == "gzip" and ds.chunks == (1, *shape[1:])
            and ds.id.get_create_plist().get_nfilters() == 1):  # deflate alone: no shuffle, no checksum
        return None
    try:
        filters, raw = ds.id.read_direct_chunk((i, *(0,) * (len(shape) - 1)))
    except (OSError, RuntimeError):  # RuntimeError: a chunk HDF5 never allocated (h5py gives the fill value)
        return None  # ... or a damaged chunk index: h5py says which row
    if filters != 0:  # a filter was skipped when the chunk was written: HDF5 knows how to read it
        return None
    size = int(np.prod(shape[1:]))
    try:
        data = deflate.zlib_decompress(raw, size)  # a bytearray: the array below is writable, like ds[i]
    except deflate.DeflateError:
        data = None
    if data is None or len(data) != size:
        reason = _check_row(ds, i, raw)  # zlib's reason, as `doll labels info --verify` gives it
        if reason:
            raise row_error(ds, i, reason)
        return None  # zlib inflates what libdeflate did not (trailing bytes?): h5py reads it as ever
    return np.frombuffer(data, np.uint8).reshape(shape[1:])


def unreadable_row(ds: h5py.Dataset, index, exc: Exception) -> DollError:
    """The error for a failed read of ``ds[index]``: the first row of ``index`` that cannot be read."""
    path, reason = ds.file.filename, _reason(exc)
    if ds.name.lstrip("/") not in ("saliency", "images"):  # not stored row by row: the dataset is what is damaged
        return DollError(f"{path}: dataset {ds.name.lstrip('/')} is unreadable: {reason}; the file is damaged, "
                         "re-run doll explain")
    n = len(ds)
    first = index[0] if isinstance(index, tuple) else index
    if isinstance(first, slice):
        rows = range(*first.indices(n))
    elif isinstance(first, (int, np.integer)):
        rows = [int(first) % n if n else 0]
    else:
        first = np.asarray(first)
        rows = np.flatnonzero(first).tolist() if first.dtype == bool else [int(r) for r in first.ravel()]
    bad = next((r for r in rows if not _row_readable(ds, r)), None)
    if bad is None:
        return DollError(f"{path}: dataset {ds.name.lstrip('/')} is unreadable: {reason}; the file is damaged, "
                         "re-run doll explain")
    return row_error(ds, bad, reason)


def row_error(ds: h5py.Dataset, row: int, reason: str) -> DollError:
    """``<file> row N (<image id>) is unreadable: <reason>; re-run doll explain for it``."""
    return DollError(f"{ds.file.filename} row {row} ({row_id(ds.file, row)}) is unreadable: {reason}; re-run doll "
                     "explain for it")


def _row_readable(ds: h5py.Dataset, row: int) -> bool:
    try:
        ds[row]
        return True
    except OSError:
        return False


def _raw_row(ds: h5py.Dataset, i: int):
    """The stored (compressed) bytes of row ``i`` when ``ds`` has write_label_file's layout; an
    OSError when even they cannot be read; None for another layout (HDF5 then decodes the row)."""
    if not (ds.chunks == (1, *ds.shape[1:]) and ds.compression == "gzip" and ds.dtype == np.uint8):
        return None
    try:
        filters, raw = ds.id.read_direct_chunk((i, *(0,) * (ds.ndim - 1)))
    except OSError as exc:
        return exc
    return raw if filters == 0 else None


def _check_row(ds: h5py.Dataset, i: int, raw) -> str | None:
    """Why row ``i`` cannot be read (None when it can): ``raw`` from :func:`_raw_row`."""
    if isinstance(raw, OSError):
        return _reason(raw)
    if raw is None:
        try:
            ds[i]
        except OSError as exc:
            return _reason(exc)
        return None
    try:
        n = len(zlib.decompress(raw))
    except zlib.error as exc:
        return f"corrupt compressed data ({exc})"
    size = int(np.prod(ds.shape[1:]))
    return None if n == size else f"the row inflates to {n} bytes, expected {size}"


def _reason(exc: Exception) -> str:
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    return text.split("] ", 1)[1] if text.startswith("[Errno") and "] " in text else text


def row_id(f: h5py.File, row: int) -> str:
    """The image id of a row of a label file ("?" if even that cannot be read)."""
    try:
        p = f["paths"][row]
        return p.decode() if isinstance(p, bytes) else str(p)
    except Exception:  # noqa: BLE001 - a damaged paths dataset still gets its row number reported
        return "?"


class Rows:
    """A dataset of a label file whose reads (``rows[i]``, ``rows[a:b]``) go through
    :func:`read_rows`; everything else (shape, dtype, chunks, id) is the dataset's."""

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds

    def __getitem__(self, index):
        return read_rows(self.ds, index)

    def __len__(self):
        return len(self.ds)

    def __getattr__(self, name):
        return getattr(self.ds, name)


def write_label_file(path: str | Path, rows: dict, attrs: dict) -> None:
    """Write a complete label file atomically. ``rows`` is keyed as in the table above;
    ``saliency`` and ``images`` may be arrays or :class:`Blocks`, the rest are arrays."""
    path = Path(path)
    big = {k: rows[k] if isinstance(rows[k], Blocks) else Blocks.of(rows[k]) for k in ("saliency", "images")}
    with atomic_path(path) as tmp, ThreadPoolExecutor(COMPRESS_THREADS) as pool:
        with h5py.File(tmp, "w") as f:
            for key, blocks in big.items():
                # one gzip chunk per row, deflated here by COMPRESS_THREADS threads and stored as is:
                # the bytes h5py's own single-threaded gzip filter would store (assembling 412 labelled
                # 224 px images took 1.86 s instead of 3.32 s on 2 cores)
                ds = f.create_dataset(key, shape=blocks.shape, dtype=np.uint8, chunks=(1, *blocks.shape[1:]),
                                      compression="gzip", compression_opts=GZIP_LEVEL)
                tail = (0,) * (len(blocks.shape) - 1)
                for lo, piece in blocks.pieces:
                    if isinstance(piece, bytes):  # one row, stored as this file stores it
                        if not 0 <= lo < blocks.shape[0]:
                            raise ValueError(f"{key}: a stored row at row {lo} does not fit {blocks.shape}")
                        ds.id.write_direct_chunk((lo, *tail), piece)
                        continue
                    piece = np.ascontiguousarray(piece, dtype=np.uint8)
                    if piece.shape[1:] != blocks.shape[1:] or lo + len(piece) > blocks.shape[0]:
                        raise ValueError(f"{key}: piece {piece.shape} at row {lo} does not fit {blocks.shape}")
                    for i, chunk in enumerate(pool.map(deflate_row, piece)):
                        ds.id.write_direct_chunk((lo + i, *tail), chunk)
            for key in ("targets", "labels", "probs", "done"):
                f.create_dataset(key, data=rows[key])
            f.create_dataset("paths", data=np.array(rows["paths"], dtype=object), dtype=h5py.string_dtype())
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["tool_version"] = tool_version()
            for k, v in attrs.items():
                if k == "finished":
                    continue
                if isinstance(v, np.generic):
                    v = v.item()
                f.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(jsonable(v))
            # the finished marker, written last; the rename into place after it is what makes the
            # file appear under its name, so a reader never sees a file without it (see LabelFile)
            f.attrs["finished"] = 1


def is_label_file(path: str | Path) -> bool:
    """Whether ``path`` is a DoLL label file (any version): what ``--overwrite`` may replace."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def deflate_row(row: np.ndarray) -> bytes:
    """A row's chunk as the label file stores it: one zlib stream at ``GZIP_LEVEL`` (what
    HDF5's gzip filter reads), made by libdeflate (the ``deflate`` package), which releases
    the GIL: on rows of 14 x 224 x 224 smooth maps 1.8x less CPU than zlib at the same level
    and about the same size (5.5 vs 9.9 ms, 331 KB; 2 of 14 classes explained: 1.5 vs 2.9 ms,
    48 vs 49 KB; one core, 2026-12-06)."""
    return deflate.zlib_compress(np.ascontiguousarray(row, dtype=np.uint8).tobytes(), GZIP_LEVEL)


def saliency_row_chunks(maps: np.ndarray, targets: np.ndarray) -> list[bytes]:
    """Each row's stored saliency chunk (:func:`deflate_row`) from a block's explained maps
    (uint8 (explained targets, H, W), in the row-major order of ``targets``, bool (rows, C))."""
    rows, classes = targets.shape
    ends = np.cumsum(targets.sum(1))
    chunks, empty = [], None
    for j in range(rows):
        if not targets[j].any():  # a row with nothing explained: all zero, compressed once
            empty = empty or deflate_row(np.zeros((classes, *maps.shape[1:]), np.uint8))
            chunks.append(empty)
            continue
        row = np.zeros((classes, *maps.shape[1:]), np.uint8)
        row[targets[j]] = maps[ends[j] - targets[j].sum():ends[j]]
        chunks.append(deflate_row(row))
    return chunks


class LabelFile:
    """Read-only access to a DoLL label file; validates format and version on open."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            parts = Path(str(self.path) + ".parts")
            if parts.is_dir():  # a doll explain that did not finish: its blocks are there
                raise DollError(unfinished_parts(self.path, parts))
            raise DollError(f"label file {self.path} does not exist; make one with `doll explain`")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError:
            raise DollError(f"{self.path} is not an HDF5 file (corrupt, or not made by doll)") from None
        try:
            # format, version, the attributes readers use and the datasets' dtypes and shapes (doll.schema)
            self._attrs = check_label_file(self.f, self.path, FORMAT, FORMAT_VERSION)
            self.done = self["done"][:]
        except DollError:
            self.f.close()
            raise
        finished = self._attrs["finished"]  # absent in files made before it: complete (see the module's notes)
        if finished is not None and finished != 1:
            self.f.close()
            raise DollError(f"{self.path} is an unfinished label file ({int(self.done.sum())} of {len(self.done)} rows "
                            "done); finish it with `doll explain --resume`")
        if not self.done.any():
            self.f.close()
            raise DollError(f"{self.path} has no finished rows; finish it with `doll explain --resume`")

    def attr(self, key: str, default=None):
        """An attribute: those readers use as checked on open (:func:`doll.schema.check_label_file`),
        others as stored (lists and dicts are stored as JSON)."""
        if key in self._attrs:
            v = self._attrs[key]
            return default if v is None else v
        v = self.f.attrs.get(key, default)
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, str) and v.startswith(("[", "{")):
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v

    @property
    def classes(self) -> list[str]:
        return self.attr("classes")

    @property
    def label_rule(self) -> str:
        """The rule the file was made with (the default rule for a file that names none)."""
        return self.attr("label_rule") or DEFAULT_RULE

    def saliency_field(self) -> tuple[str, float]:
        """The lung model whose predicted field multiplied the saliency ('' when none) and
        that field's margin (files made before ``--field-margin`` used the 4 % input field)."""
        from doll.models.lung_field import INPUT_MARGIN

        settings = self.attr("settings") or {}
        model = settings.get("field_model") or settings.get("lung_model") or ""
        margin = settings.get("field_margin")  # checked on open: a number in [0, 0.5) when present
        return model, float(INPUT_MARGIN if margin is None else margin)

    def __len__(self):
        return len(self.done)

    def __getitem__(self, key):
        """A dataset of the file; its reads name the row that cannot be read (:class:`Rows`)."""
        return Rows(self.f[key])

    def dataset_name(self) -> str:
        """The file's ``dataset`` attribute, resolved through the built-in registry only ("" when
        the file names none). A label file is data: anything else (a plug-in
        ``package.module:ClassName`` included) is refused, never imported; a format of your
        own is named on the command line (``--dataset``)."""
        from doll.data.registry import FORMATS

        value = self.attr("dataset")
        if value is None or value == "":
            return ""
        if isinstance(value, str) and value in FORMATS:
            return value
        raise DollError(f"{self.path}: its attribute dataset={value!r} is not a built-in data set "
                        f"({', '.join(FORMATS)}); doll never imports code that a file names; pass your format with "
                        "--dataset on the command line")

    def verify(self) -> list[dict]:
        """Read every chunk of the file; one entry ``{"row", "id", "dataset", "reason"}`` per
        unreadable row (``row`` None for a dataset that cannot be read at all)."""
        bad: list[dict] = []
        for key in ("done", "targets", "labels", "probs", "paths"):
            try:
                self.f[key][:]
            except OSError as exc:
                bad.append({"row": None, "id": None, "dataset": key, "reason": _reason(exc)})
        with ThreadPoolExecutor(COMPRESS_THREADS) as pool:  # zlib releases the GIL: rows inflate in parallel
            for key in ("saliency", "images"):
                ds = self.f[key]
                for lo in range(0, len(ds), ROWS_PER_WRITE):
                    rows = range(lo, min(len(ds), lo + ROWS_PER_WRITE))
                    for i, reason in zip(rows, pool.map(lambda i, raw, ds=ds: _check_row(ds, i, raw),
                                                        rows, [_raw_row(ds, i) for i in rows])):
                        if reason:
                            bad.append({"row": i, "id": row_id(self.f, i), "dataset": key, "reason": reason})
        return bad

    def require_readable(self) -> None:
        """Refuse a file with a damaged row before anything is written from it (``labels
        export``, ``pretrain``): :meth:`verify`'s first unreadable row as :func:`row_error`.
        One pass over the file's chunks, less than one epoch of pretraining reads."""
        bad = self.verify()
        if not bad:
            return
        first = bad[0]
        if first["row"] is None:
            raise DollError(f"{self.path}: dataset {first['dataset']} is unreadable: {first['reason']}; the file is "
                            "damaged, re-run doll explain")
        raise row_error(self.f[first["dataset"]], first["row"], first["reason"])

    def paths(self) -> list[str]:
        return [p.decode() if isinstance(p, bytes) else p for p in self.f["paths"][:]]

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self) -> dict:
        n, c, h, w = self.f["saliency"].shape
        return {"path": str(self.path), "format_version": self._attrs["format_version"],
                "tool_version": self.attr("tool_version"), "rows": n, "done": int(self.done.sum()),
                "classes": self.classes, "image_size": [h, w], "method": self.attr("method"),
                "settings": self.attr("settings"), "label_rule": self.label_rule,
                "targets_per_class": dict(zip(self.classes, self.f["targets"][:].sum(axis=0).tolist())),
                "classifiers": self.attr("classifiers"), "dataset": self.attr("dataset"),
                "finished": self._attrs["finished"] in (None, 1)}


def unfinished_parts(path: Path, parts: Path) -> str:
    """What to say of a label file that does not exist while its parts folder does: a doll
    explain that did not finish, how far it got and the command that finishes it."""
    try:
        settings = read_parts_settings(parts / "settings.json")
    except DollError:
        settings = {}
    blocks = sorted(int(m.group(1)) for p in parts.glob("block_*.npz") if (m := re.fullmatch(r"block_(\d+)\.npz", p.name)))
    n, size = (settings.get("data") or {}).get("images"), settings.get("block")
    if n is not None and size:
        done = sum(max(0, min(size, n - b * size)) for b in blocks)
        progress = f"{done} of {n} rows done in {parts}"
    else:
        progress = f"{len(blocks)} block(s) done in {parts}"
    flags = [f"--{k} {settings[k]}" for k in ("classifiers", "dataset", "root") if settings.get(k)]
    if settings.get("split") not in (None, "", "train"):
        flags.append(f"--split {settings['split']}")
    command = " ".join(["doll explain", *flags, f"--out {path}", "--resume"])
    return (f"label file {path} is unfinished ({progress}, by a doll explain that did not finish); finish it with "
            f"`{command}` (and the first run's other options)")


def is_parts_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds only what :class:`PartsWriter` writes (settings, blocks and
    their temporaries): what ``explain --overwrite`` may delete."""
    return all(p.is_file() and (p.name == "settings.json" or (p.name.startswith("block_") and p.suffix == ".npz")
                                or (p.name.startswith(".") and p.suffix == ".tmp"))
               for p in Path(folder).iterdir())


class PartsWriter:
    """Blocks of finished rows as atomic ``.npz`` files, for resuming and sharding."""

    def __init__(self, folder: str | Path, settings: dict, resume: bool, owner: bool = True):
        """``owner`` (rank 0) checks a previous run's settings and records these; other
        ranks only write blocks."""
        self.folder = Path(folder)
        self.layout: dict = {}  # what every block must hold (:meth:`expect`)
        if not owner:
            return
        settings_file = self.folder / "settings.json"
        if self.folder.exists() and settings_file.exists():
            previous = read_parts_settings(settings_file)
            if not resume:
                raise DollError(f"{self.folder} holds an unfinished run; pass --resume to continue it or --overwrite")
            if previous != json.loads(json.dumps(settings)):
                changed = differing_keys(previous, settings)
                what = "other images or labels" if changed == ["data"] else f"different settings ({', '.join(changed)})"
                raise DollError(f"--resume with {what}; use the first run's settings and data, or --overwrite")
        elif any(self.folder.glob("block_*.npz")):  # blocks of a run whose settings are unknown: never reuse them
            raise DollError(f"{self.folder} holds blocks but no settings.json; pass --overwrite to start again")
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(settings_file) as tmp:
            tmp.write_text(json.dumps(settings, sort_keys=True))

    def expect(self, n: int, block: int, classes: int, size: int, members: int) -> None:
        """The run's layout, which every block read back must fit: ``n`` images in blocks of
        ``block``, ``classes`` classes, maps of ``size`` pixels, ``members`` classifiers."""
        self.layout = {"n": n, "block": block, "classes": classes, "size": size, "members": members}

    def block_file(self, block: int) -> Path:
        return self.folder / f"block_{block:07d}.npz"

    def has(self, block: int) -> bool:
        return self.block_file(block).exists()

    def write(self, block: int, **arrays) -> None:
        """An ``.npz`` that ``np.load`` reads as ever. ``rows``, a list of each row's saliency
        chunk as the label file stores it (:func:`saliency_row_chunks`), is kept as it is
        compressed (``rows`` uint8, the chunks end to end, and ``row_ends``), so the label
        file is assembled without deflating anything again; the other arrays are deflated at
        level 1 (they are small). The blocks are temporary."""
        chunks = arrays.pop("rows", None)
        stored = {}
        if chunks is not None:
            stored["rows"] = np.frombuffer(b"".join(chunks), np.uint8)
            stored["row_ends"] = np.cumsum([len(c) for c in chunks], dtype=np.int64)
        with atomic_path(self.block_file(block)) as tmp:
            with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED,
                                                         compresslevel=BLOCK_DEFLATE_LEVEL) as zf:
                for key, value in [*arrays.items(), *stored.items()]:
                    name = zipfile.ZipInfo(key + ".npy") if key in stored else key + ".npy"  # a ZipInfo: stored as is
                    with zf.open(name, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    def saliency_pieces(self, block: int) -> list[tuple[int, np.ndarray | bytes]]:
        """The block's saliency as :class:`Blocks` pieces ``(first row, piece)``: one row's
        stored chunk each (or, for a block of doll before 2026-12-06, the block's rows as one
        array, from its explained maps)."""
        z = self.read(block)
        first = block * self.layout["block"]
        if "rows" in z and "row_ends" in z:
            data, ends = z["rows"].tobytes(), z["row_ends"].tolist()
            return [(first + i, data[lo:hi]) for i, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends))]
        if "maps" in z and "targets" in z:
            size = self.layout["size"]
            piece = np.zeros((len(z["targets"]), self.layout["classes"], size, size), np.uint8)
            piece[z["targets"]] = z["maps"]
            return [(first, piece)]
        raise DollError(f"{self.block_file(block)} lacks the saliency (rows or maps): the unfinished run was made by "
                        "another doll version; start it again with --overwrite")

    def read(self, block: int, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The arrays of a block, checked (:func:`doll.schema.check_parts_block`) against the
        layout given to :meth:`expect`; a damaged block names itself and how to redo it."""
        path = self.block_file(block)
        redo = f"delete {path} and finish the run with the same doll explain command and --resume"
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in (keys or ()) if k not in z.files]
                if missing:
                    raise DollError(f"{path} lacks {', '.join(missing)}: the unfinished run was made by "
                                    "another doll version; start it again with --overwrite")
                arrays = {}
                for k in keys or z.files:
                    try:
                        arrays[k] = z[k]
                    except ValueError as exc:  # np.load refuses object arrays (pickles) without allow_pickle
                        what = "an object array (pickled Python objects)" if "allow_pickle" in str(exc) else \
                            f"unreadable ({exc})"
                        raise DollError(f"{path}: {k} is {what}; expected an array of numbers, {redo}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DollError(f"{path}: the content is not a block of arrays ({show(str(exc))}); {redo}") from None
        lay = self.layout
        rows = min(lay["block"], lay["n"] - block * lay["block"]) if lay else None
        return check_parts_block(path, arrays, rows=rows, classes=lay.get("classes"), size=lay.get("size"),
                                 members=lay.get("members"))
