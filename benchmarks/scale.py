"""A CheXpert-size rehearsal of doll's data path (issue 37, item 1).

Builds a synthetic data set in CheXpert-v1.0-small's layout (``train.csv``/``valid.csv``
with the real columns and labels drawn with CheXpert's per-class frequencies, ``Path``
relative to the folder above the root, JPEGs of the
small set's sizes: frontal about 320 wide x 390 high, lateral 390 x 320, about 77 %
frontal (CheXpert: 85 %)) at each ``--sizes`` (images in train.csv), then times every
stage's data path, each in a fresh process (``python -c`` or the ``doll`` CLI), and
prints one JSON list on stdout (progress on stderr), one row per stage and size::

    {"stage", "n", "images_per_s", "per_core", "peak_rss_mb", "disk_mb", "seconds", ...}

``n``: images the stage went through; ``seconds``: wall time of the timed part (the
whole process for the CLI stages; ``process_s`` is the whole process always);
``images_per_s`` = n / seconds; ``per_core`` = n / CPU seconds of the timed part (all
threads and DataLoader workers): the rate of one core, what the extrapolation scales;
``peak_rss_mb``: the process's peak RSS (``os.wait4``; DataLoader workers are
separate processes and ``worker_peak_rss_mb`` gives theirs), and, at the end of the
timed part, ``rss_anon_mb`` (allocated) and ``rss_file_mb`` (pages of memory-mapped
files, which the kernel reclaims under pressure; Linux); ``disk_mb``: what the
stage leaves on disk (cache, label file). Stages (``--stages``, comma-separated):

* ``check``: ``doll data check --dataset chexpert --root R --decode 0`` (every image decoded);
* ``cache``: ``load_split`` at 224 px in a fresh process with an empty ``DOLL_CACHE``
  (``cache_cold``: decode + write), then again (``cache_warm``: open the memory maps and
  read every image once: a warm epoch's image reads; the files are in the page cache);
* ``classify``: one epoch of train-classifiers' training set (``ArrayDataset``
  with augmentation, ``DataLoader`` with num_workers=0, batch 32, shuffled), no model;
* ``explain``: explain's CPU side, through explain's own block functions on random
  float32 maps (the IG engine replaced; its measured GPU cost, 0.0168 s per image and
  member on one H100, DenseNet-121, 224 px, 16 steps, is stated in the row, not spent):
  the maps copied for the device, each row compressed as the label file stores it and
  written in ``PartsWriter`` blocks of 64 images (``write_block``), then the label file
  assembled from the blocks as ``explain`` does. ``distill_block``, which runs on the GPU
  in explain, runs here on the CPU and is timed apart (``distill_s``, what a run without
  a GPU pays);
* ``labels``: a label file of 14 classes at 224 px written with ``write_label_file``
  (smooth random uint8 saliency, every class explained, or with ``--targets positive`` the
  positive labels only, as explain's default, the other maps zero; the cached images:
  ``label_file_write``, with its bytes per image), then, in another process, the rows/s
  that pretraining's ``LabelRows`` reads (image + 14 masks as the loader takes them,
  ``masks.coded``: ``label_file_read``);
* ``pretrain``: pretraining's loader (``LabelRows`` + ``ArrayDataset``, augmented,
  batch 16) over that file with 0 (in-process: the rate of one worker on one core), 1, 2
  and 4 DataLoader workers (``per_worker``);
* ``merge``: ``doll labels merge`` of 2 shards of that file.

A last row ``{"stage": "extrapolation"}`` projects each stage to 224,316 images and to
one 8-GPU server with 16 CPU cores (``--server-cores``), and names the stage that
bounds it. Only the standard library, numpy, OpenCV and doll (CheXpert's class list and the
default ensemble size are doll's own).

    python benchmarks/scale.py --sizes 500,2000 --out /tmp/scale > scale.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from doll.classification.settings import ClassifierSettings
from doll.data.base import CHEXPERT_CLASSES as CLASSES

CHEXPERT_IMAGES = 224_316
GPU_S_PER_IMAGE_MEMBER = 0.0168  # one H100, DenseNet-121, 224 px, 16 steps (docs/results.md)
MEMBERS = ClassifierSettings.__dataclass_fields__["members"].default  # train-classifiers' default ensemble
EXPLAINED = {"all": "every class explained (--targets all, the worst case)",
             "positive": "the positive labels explained (explain's default --targets positive)"}
ALL_STAGES = ["check", "cache", "classify", "explain", "labels", "pretrain", "merge"]
SIZE = 224
# CheXpert's label frequencies per class, (positive, negative, uncertain) of the 191,027 frontal
# rows of CheXpert-v1.0's train.csv (torchxrayvision/data/chexpert_train.csv.gz, mlmed/torchxrayvision);
# the rest is blank. 2.41 positive labels an image: what explain's default --targets explains.
LABEL_FREQUENCIES = {
    "No Finding": (0.089, 0.000, 0.000),
    "Enlarged Cardiomediastinum": (0.048, 0.080, 0.054),
    "Cardiomegaly": (0.122, 0.041, 0.035),
    "Lung Opacity": (0.493, 0.026, 0.023),
    "Lung Lesion": (0.037, 0.004, 0.006),
    "Edema": (0.260, 0.083, 0.062),
    "Consolidation": (0.068, 0.103, 0.128),
    "Pneumonia": (0.024, 0.010, 0.084),
    "Atelectasis": (0.156, 0.005, 0.156),
    "Pneumothorax": (0.093, 0.250, 0.014),
    "Pleural Effusion": (0.403, 0.132, 0.050),
    "Pleural Other": (0.013, 0.001, 0.009),
    "Fracture": (0.039, 0.010, 0.003),
    "Support Devices": (0.561, 0.028, 0.005),
}


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def du_mb(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 2**20, 2)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2) if path.exists() else 0.0


# ---------------------------------------------------------------- the synthetic data set

def chest_film(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, chest-film-like uint8 image (so that JPEG sizes are realistic)."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 60 + 120 * np.exp(-(((xx - w / 2) / (0.45 * w)) ** 2)) * np.clip(yy / h + 0.3, 0, 1)
    for cx in (0.3, 0.7):  # two darker lung fields
        img -= 70 * np.exp(-(((xx - cx * w) / (0.14 * w)) ** 2 + ((yy - 0.45 * h) / (0.25 * h)) ** 2))
    low = cv2.resize(rng.normal(0, 18, (h // 16, w // 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += low + rng.normal(0, 6, (h, w)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def build_dataset(base: Path, n: int, seed: int = 0) -> Path:
    """``base/CheXpert-v1.0-small`` with ``n`` train rows and ``max(8, n // 100)`` valid rows."""
    import cv2

    root = base / "CheXpert-v1.0-small"
    if (root / "train.csv").exists():
        return root
    rng = np.random.default_rng(seed)
    templates = [chest_film(rng, 390, 320) for _ in range(8)]  # frontal h x w; laterals are transposed
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CLASSES]
    values = np.array(["1.0", "0.0", "-1.0", ""])
    edges = np.cumsum([LABEL_FREQUENCIES[c] for c in CLASSES], axis=1)  # per class: <pos, <pos+neg, <pos+neg+unc
    label_rng = np.random.default_rng(seed + 1)  # apart from the images' draws: the same images whatever the labels
    patient = 0
    for split, count in (("train", n), ("valid", max(8, n // 100))):
        rows = []
        while len(rows) < count:
            patient += 1
            for study in range(1, int(rng.integers(1, 4)) + 1):
                for view in range(1, int(rng.integers(1, 3)) + 1):
                    if len(rows) == count:
                        break
                    frontal = view == 1 or rng.random() < 0.3
                    rel = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study{study}/view{view}_{'frontal' if frontal else 'lateral'}.jpg"
                    img = templates[int(rng.integers(len(templates)))]
                    img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
                    dh, dw = int(rng.integers(-10, 11)), int(rng.integers(-8, 9))
                    img = cv2.resize(img, (320 + dw, 390 + dh))
                    if not frontal:
                        img = np.ascontiguousarray(img.T)
                    path = base / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
                    labels = values[(label_rng.random((len(CLASSES), 1)) >= edges).sum(axis=1)]
                    rows.append([rel, rng.choice(["Male", "Female"]), int(rng.integers(18, 90)),
                                 "Frontal" if frontal else "Lateral",
                                 (rng.choice(["AP", "PA"]) if frontal else ""), *labels])
        with open(root / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
    return root


# ---------------------------------------------------------------- the stages, as child code
# Each child gets one JSON argument (sys.argv[1]) and prints one JSON object as its last
# stdout line: ``n``, ``seconds`` and ``cpu_s`` of its timed part, and anything else.

PRELUDE = r"""
import json, os, resource, sys, time
import numpy as np
A = json.loads(sys.argv[1])
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
def done(**kw):
    kw["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    try:  # resident memory at the end of the timed part, split: allocated (anonymous) / pages of mapped files
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        kw["rss_anon_mb"] = round(int(status["RssAnon"].split()[0]) / 1024, 1)
        kw["rss_file_mb"] = round((int(status["RssFile"].split()[0]) + int(status["RssShmem"].split()[0])) / 1024, 1)
    except (OSError, KeyError, ValueError):  # not Linux
        pass
    print(json.dumps(kw))
"""

CACHE = r"""
from doll.data import load_split
t0, c0 = time.perf_counter(), cpu()
_, arr = load_split("chexpert", A["root"], None, A["size"], progress=False)
total = 0
for lo in range(0, len(arr.images), 256):  # read every image once: a warm epoch's reads
    total += int(np.asarray(arr.images[lo:lo + 256]).sum(dtype=np.int64))
done(n=len(arr.images), seconds=time.perf_counter() - t0, cpu_s=cpu() - c0)
"""

CLASSIFY = r"""
import torch
from torch.utils.data import DataLoader, RandomSampler
from doll.data import labels_of, open_dataset, split_arrays
from doll.data.dataset import ArrayDataset
from doll.data.policies import apply_policy
torch.set_num_threads(1)
fmt = open_dataset("chexpert", A["root"], views="frontal", valid_fraction=0.0, seed=0)
train = split_arrays(fmt, "train", A["size"], progress=False)
y, w = apply_policy(labels_of(train, len(fmt.classes)), "ignore", "ignore", 0)
ds = ArrayDataset(train.images, y, w, augment=True, seed=0)
loader = DataLoader(ds, batch_size=32, sampler=RandomSampler(ds), num_workers=0)
t0, c0 = time.perf_counter(), cpu()
seen = 0
for batch in loader:
    seen += len(batch["image"])
done(n=seen, seconds=time.perf_counter() - t0, cpu_s=cpu() - c0)
"""

EXPLAIN = r"""
import shutil
from pathlib import Path
from types import SimpleNamespace
import torch
from doll.data import labels_of, load_split
from doll.explanation.run import distill_block, write_block
from doll.labels.store import Blocks, PartsWriter, write_label_file
from doll.utils import Stopwatch
fmt, arr = load_split("chexpert", A["root"], None, A["size"], progress=False)
raw = labels_of(arr, len(fmt.classes))
targets = [np.flatnonzero(r == 1).tolist() for r in raw]  # explain's default --targets positive
n, S, B, M, C = len(arr.images), A["size"], 64, A["members"], len(fmt.classes)
out = Path(A["out"])
shutil.rmtree(str(out) + ".parts", ignore_errors=True)
parts = PartsWriter(str(out) + ".parts", {"bench": 1}, resume=False)
parts.expect(n=n, block=B, classes=C, size=S, members=M)
# what explain's block functions read of its Job (doll.explanation.run.Job)
job = SimpleNamespace(s=SimpleNamespace(block=B, sign="positive", smooth=0.03), n=n, targets=targets,
                      classes=list(fmt.classes), size=S, fields=None, arrays=arr, device=torch.device("cpu"),
                      member_names=[f"member_{k}" for k in range(M)], watch=Stopwatch())
rng = np.random.default_rng(0)
side = cpu_side = dist = cpu_dist = 0.0
for b, lo in enumerate(range(0, n, B)):
    tg = targets[lo:lo + B]
    # the IG engine's output, replaced: one float32 (T, S, S) map per image and member (not timed)
    per_member = [[rng.standard_normal((len(t), S, S), dtype=np.float32) for t in tg] for _ in range(M)]
    # on a GPU server the CPU copies the maps for the device (stacked, then staged by the driver): timed as
    # two copies of the block's maps, the CPU side's share of the distillation
    t0, c0 = time.perf_counter(), cpu()
    for maps in per_member:
        np.concatenate([m for m in maps if len(m)] or [np.zeros((0, S, S), np.float32)]).copy()
    side, cpu_side = side + time.perf_counter() - t0, cpu_side + cpu() - c0
    t0, c0 = time.perf_counter(), cpu()
    maps, tmask = distill_block(job, b, per_member)  # on the device in explain (here the CPU)
    dist, cpu_dist = dist + time.perf_counter() - t0, cpu_dist + cpu() - c0
    t0, c0 = time.perf_counter(), cpu()
    write_block(job, parts, b, maps, tmask, [[0.0] * int(tmask.sum())] * M)  # the writer thread's work
    side, cpu_side = side + time.perf_counter() - t0, cpu_side + cpu() - c0
blocks = list(range((n + B - 1) // B))
def pieces():
    for b in blocks:
        yield from parts.saliency_pieces(b)
t0, c0 = time.perf_counter(), cpu()
tm = np.zeros((n, C), bool)
for b in blocks:
    tm[b * B:b * B + B] = parts.read(b)["targets"]
write_label_file(out, {"saliency": Blocks((n, C, S, S), pieces()), "targets": tm, "labels": raw,
                       "probs": np.zeros((n, C), np.float32), "images": np.asarray(arr.images),
                       "paths": [it.id for it in arr.items], "done": np.ones(n, bool)},
                 {"classes": list(fmt.classes), "method": "ig", "settings": {}, "label_rule": "otsu", "image_size": S,
                  "dataset": "chexpert", "classifiers": [], "root": A["root"], "split": ""})
assemble, cpu_assemble = time.perf_counter() - t0, cpu() - c0
parts_mb = sum(p.stat().st_size for p in Path(str(out) + ".parts").glob("*")) / 2**20
shutil.rmtree(str(out) + ".parts", ignore_errors=True)
done(n=n, seconds=side + assemble, cpu_s=cpu_side + cpu_assemble, write_s=round(side, 3),
     assemble_s=round(assemble, 3), distill_s=round(dist, 3), distill_cpu_s=round(cpu_dist, 3),
     targets=int(sum(map(len, targets))), parts_mb=round(parts_mb, 2))
"""

LABELS = r"""
import cv2
from pathlib import Path
from doll.data import labels_of, load_split
from doll.labels.store import Blocks, LabelFile, stored_rows, write_label_file
fmt, arr = load_split("chexpert", A["root"], None, A["size"], progress=False)
raw = labels_of(arr, len(fmt.classes))
n, S, C = len(arr.images), A["size"], len(fmt.classes)
rng = np.random.default_rng(1)
def smooth_maps(k):  # smooth random saliency, like distilled maps (pure noise would not compress)
    low = rng.random((k * C, 8, 8), dtype=np.float32)
    return (np.stack([cv2.resize(m, (S, S), interpolation=cv2.INTER_CUBIC) for m in low]).clip(0, 1) * 255) \
        .astype(np.uint8).reshape(k, C, S, S)
maps = [smooth_maps(64) for _ in range(4)]  # made before the clock starts; blocks reuse them
ATTRS = {"classes": list(fmt.classes), "method": "ig", "settings": {}, "label_rule": "otsu", "image_size": S,
         "dataset": "chexpert", "classifiers": [], "root": A["root"], "split": "train"}
explained = np.ones((n, C), bool) if A["targets"] == "all" else raw == 1  # explain's --targets all / positive
def pieces():
    for b, lo in enumerate(range(0, n, 64)):
        hi = min(n, lo + 64)
        yield lo, maps[b % len(maps)][:hi - lo] * explained[lo:hi, :, None, None]  # unexplained classes: zero maps
def rows(lo, hi, sal, images):
    return {"saliency": sal, "targets": explained[lo:hi], "labels": raw[lo:hi],
            "probs": np.zeros((hi - lo, C), np.float32), "images": images,
            "paths": [it.id for it in arr.items[lo:hi]], "done": np.ones(hi - lo, bool)}
full = Path(A["out"])
t0, c0 = time.perf_counter(), cpu()
write_label_file(full, rows(0, n, Blocks((n, C, S, S), pieces()), np.asarray(arr.images)), ATTRS)
write_s, write_cpu = time.perf_counter() - t0, cpu() - c0
cuts = np.linspace(0, n, A["shards"] + 1).astype(int)
with LabelFile(full) as lf:  # the shards: slices of the full file, streamed row by row as stored
    for k in range(A["shards"]):
        lo, hi = int(cuts[k]), int(cuts[k + 1])
        def streamed(key):
            for i, piece in enumerate(stored_rows(lf[key], np.arange(lo, hi))):
                yield i, piece
        write_label_file(A["out"] + f".shard{k}.h5",
                         rows(lo, hi, Blocks((hi - lo, C, S, S), streamed("saliency")),
                              Blocks((hi - lo, S, S), streamed("images"))), ATTRS)
done(n=n, seconds=write_s, cpu_s=write_cpu, bytes_per_image=int(full.stat().st_size / n))
"""

LABELS_READ = r"""
from doll.labels.store import LabelFile
from doll.pretraining.train import LabelRows
with LabelFile(A["labels"]) as lf:
    rows = LabelRows(lf, np.flatnonzero(lf.done), "otsu", False)
n = len(rows.rows)
order = np.random.default_rng(2).permutation(n)
t0, c0 = time.perf_counter(), cpu()
for j in order:
    rows.images[j], rows.masks.coded(j)  # what ArrayDataset takes (masks[j] adds a float16 copy)
done(n=n, seconds=time.perf_counter() - t0, cpu_s=cpu() - c0,
     explained_maps_per_image=round(float(rows.explained.sum()) / n, 2))
"""

PRETRAIN = r"""
import torch
from torch.utils.data import DataLoader, RandomSampler
from doll.data.dataset import ArrayDataset
from doll.data.policies import apply_policy
from doll.labels.store import LabelFile
from doll.pretraining.train import LabelRows
torch.set_num_threads(1)
with LabelFile(A["labels"]) as lf:
    data = LabelRows(lf, np.flatnonzero(lf.done), "otsu", False)
y, w = apply_policy(data.labels, "ignore", "ignore")
idx = np.arange(min(len(data.rows), A["cap"]))
ds = ArrayDataset(data.images, y, w, masks=data.masks, valid=data.valid, augment=True, seed=0, indices=idx)
loader = DataLoader(ds, batch_size=16, sampler=RandomSampler(ds), num_workers=A["workers"])
t0, c0 = time.perf_counter(), cpu()
seen = 0
it = iter(loader)
for batch in it:
    seen += len(batch["image"])
del it  # the workers exit: their CPU time is counted
done(n=seen, seconds=time.perf_counter() - t0, cpu_s=cpu() - c0, workers=A["workers"], classes=len(data.names))
"""

MERGE = r"""
from doll.labels.tools import merge
t0, c0 = time.perf_counter(), cpu()
r = merge(A["inputs"], A["out"], overwrite=True)
done(n=r["rows"], seconds=time.perf_counter() - t0, cpu_s=cpu() - c0)
"""


def run_child(argv: list[str], env: dict, timeout: float) -> tuple[dict, float, float, str]:
    """Run one process; returns (its JSON output or {}, with ``process_cpu_s`` added: the
    whole process's CPU seconds; wall seconds; peak RSS MB; stderr tail)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    # the child's own peak: read from /proc is gone by now; RUSAGE_CHILDREN is the max over all
    # children so far, so each child's peak comes from wait4 instead (see _reap)
    rss, cpu_s = _PEAKS.pop(proc.pid, (0.0, None))
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {err[-2000:]}")
    try:
        parsed = json.loads(out)  # a whole-output JSON object (doll ... --json)
    except ValueError:
        lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
        parsed = json.loads(lines[-1]) if lines else {}
    if isinstance(parsed, dict):
        parsed.setdefault("process_cpu_s", cpu_s)
    return parsed, wall, rss, err[-500:]


_PEAKS: dict[int, float] = {}
_orig_try_wait = subprocess.Popen._try_wait


def _try_wait(self, wait_flags):
    """Popen's wait through ``os.wait4``, keeping each child's peak RSS (its own, and its
    reaped children's: DataLoader workers)."""
    try:
        pid, sts, usage = os.wait4(self.pid, wait_flags)
    except ChildProcessError:
        pid, sts = self.pid, 0
        usage = None
    if pid and usage is not None:
        _PEAKS[pid] = (round(usage.ru_maxrss / 1024, 1), usage.ru_utime + usage.ru_stime)
    return pid, sts


subprocess.Popen._try_wait = _try_wait


def child(code: str, args: dict, env: dict, timeout: float):
    return run_child([sys.executable, "-c", PRELUDE + code, json.dumps(args)], env, timeout)


def row(stage: str, n: int, seconds: float, cpu_s: float | None, rss: float, disk: float, process_s: float, **extra) -> dict:
    r = {"stage": stage, "n": n, "images_per_s": round(n / seconds, 1) if seconds > 0 else None,
         "per_core": round(n / cpu_s, 1) if cpu_s else None, "peak_rss_mb": rss, "disk_mb": disk,
         "seconds": round(seconds, 3), "process_s": round(process_s, 2)}
    r.update(extra)
    return r


def memory(result: dict) -> dict:
    """A child's resident memory at the end of its timed part, allocated (``rss_anon_mb``) and
    pages of mapped files (``rss_file_mb``: the decode cache and label file read through memory
    maps, which the kernel reclaims under pressure), where the system says (Linux)."""
    return {k: result[k] for k in ("rss_anon_mb", "rss_file_mb") if k in result}


def doll_cli() -> list[str]:
    exe = Path(sys.executable).parent / "doll"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("doll")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from doll_cli.main import main; sys.argv[0] = 'doll'; main()"]


def run_size(n: int, base: Path, stages: list[str], workers: list[int], cap: int, timeout: float,
             targets: str = "all") -> list[dict]:
    rows: list[dict] = []
    t0 = time.perf_counter()
    data_base = base / f"n{n}"
    root = build_dataset(data_base, n)
    log(f"n={n}: data set at {root} ({du_mb(root)} MB, {time.perf_counter() - t0:.1f} s to build)")
    cache = base / f"cache{n}"
    env = dict(os.environ, DOLL_CACHE=str(cache), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = {"root": str(root), "size": SIZE}
    labels = base / f"labels{n}.h5"
    if "check" in stages:
        log(f"n={n}: data check")
        proc_out, wall, rss, _ = run_child([*doll_cli(), "data", "check", "--dataset", "chexpert", "--root", str(root),
                                            "--decode", "0", "--json", "--quiet"], env, timeout)
        rows.append(row("data check", int(proc_out.get("decoded") or n), wall, proc_out["process_cpu_s"], rss, du_mb(root), wall,
                        note="whole CLI process (imports included); frontal views (the default), every one decoded"))
    if "cache" in stages or any(s in stages for s in ("classify", "explain", "labels", "pretrain", "merge")):
        shutil.rmtree(cache, ignore_errors=True)
        log(f"n={n}: decode cache, cold")
        cold, wall, rss, _ = child(CACHE, args, env, timeout)
        if "cache" in stages:
            rows.append(row("cache_cold", cold["n"], cold["seconds"], cold["cpu_s"], rss, du_mb(cache), wall, **memory(cold)))
            log(f"n={n}: decode cache, warm")
            warm, wall, rss, _ = child(CACHE, args, env, timeout)
            rows.append(row("cache_warm", warm["n"], warm["seconds"], warm["cpu_s"], rss, du_mb(cache), wall, **memory(warm),
                            cold_over_warm=round(cold["seconds"] / max(warm["seconds"], 1e-9), 1),
                            note="memory maps opened and every image read once; files in the page cache"))
    if "classify" in stages:
        log(f"n={n}: classifier loader")
        r, wall, rss, _ = child(CLASSIFY, args, env, timeout)
        rows.append(row("classify_loader", r["n"], r["seconds"], r["cpu_s"], rss, 0.0, wall, **memory(r),
                        note="one epoch, train split, frontal, batch 32, augmented, num_workers=0, no model"))
    if "explain" in stages:
        log(f"n={n}: explain CPU side")
        out = base / f"explain{n}.h5"
        r, wall, rss, _ = child(EXPLAIN, {**args, "out": str(out), "members": MEMBERS}, env, timeout)
        gpu_s = GPU_S_PER_IMAGE_MEMBER * MEMBERS
        cpu_per_image = r["cpu_s"] / r["n"]
        rows.append(row("explain_cpu", r["n"], r["seconds"], r["cpu_s"], rss, du_mb(out), wall, **memory(r),
                        members=MEMBERS, targets=r["targets"], write_s=r["write_s"],
                        assemble_s=r["assemble_s"], parts_mb=r["parts_mb"],
                        distill_s=r["distill_s"], distill_cpu_s_per_image=round(r["distill_cpu_s"] / r["n"], 4),
                        gpu_s_per_image_stated=round(gpu_s, 4),
                        cpu_s_per_image=round(cpu_per_image, 4),
                        cpu_fraction_of_gpu=round(cpu_per_image / gpu_s, 3),
                        note=f"IG engine replaced by random maps; GPU cost stated, not run: "
                             f"{GPU_S_PER_IMAGE_MEMBER} s per image and member (one H100, DenseNet-121, 224 px, 16 steps). "
                             "CPU side: the maps copied for the device, rows compressed and blocks written (writer "
                             "thread), the label file assembled; the distillation runs on the GPU in explain and is "
                             "timed apart (distill_s, distill_cpu_s_per_image: its cost on this CPU, what a run "
                             "without a GPU pays; its GPU time is not measured here)"))
        out.unlink(missing_ok=True)
    if any(s in stages for s in ("labels", "pretrain", "merge")):
        log(f"n={n}: label file, write (+ 2 shards, untimed)")
        r, wall, rss, _ = child(LABELS, {**args, "out": str(labels), "shards": 2, "targets": targets}, env, timeout)
        if "labels" in stages:
            rows.append(row("label_file_write", r["n"], r["seconds"], r["cpu_s"], rss, du_mb(labels), wall, **memory(r),
                            bytes_per_image=r["bytes_per_image"], targets=targets,
                            note=f"write_label_file, 14 classes, {EXPLAINED[targets]}, smooth random uint8 saliency, "
                                 "224 px, gzip level 4 per row; peak RSS includes making the 2 shards"))
            log(f"n={n}: label file, read rate")
            r2, wall, rss, _ = child(LABELS_READ, {"labels": str(labels)}, env, timeout)
            rows.append(row("label_file_read", r2["n"], r2["seconds"], r2["cpu_s"], rss, du_mb(labels), wall, **memory(r2),
                            bytes_per_image=r["bytes_per_image"], explained_maps_per_image=r2["explained_maps_per_image"],
                            targets=targets,
                            note="LabelRows rows (image + 14 masks as the loader takes them, masks.coded; otsu rule) read in random order, one process"))
    if "pretrain" in stages:
        for w in workers:
            log(f"n={n}: pretraining loader, {w} worker(s)")
            r, wall, rss, _ = child(PRETRAIN, {"labels": str(labels), "workers": w, "cap": cap}, env, timeout)
            rows.append(row(f"pretrain_loader_w{w}", r["n"], r["seconds"], r["cpu_s"], rss, 0.0, wall, **memory(r),
                            workers=w, classes=r["classes"], per_worker=round(r["n"] / r["seconds"] / max(w, 1), 1),
                            targets=targets,
                            worker_peak_rss_mb=r["worker_peak_rss_mb"],
                            note="one epoch (at most --loader-cap rows), batch 16, augmented, no model"))
    if "merge" in stages:
        log(f"n={n}: labels merge of 2 shards")
        out = base / f"merged{n}.h5"
        inputs = [str(labels) + f".shard{i}.h5" for i in range(2)]
        r, wall, rss, _ = run_child([*doll_cli(), "labels", "merge", *inputs, "--out", str(out), "--overwrite"],
                                    env, timeout)
        rows.append(row("labels_merge", n, wall, r["process_cpu_s"], rss, du_mb(out), wall,
                        note="whole CLI process (imports included), 2 shards"))
        out.unlink(missing_ok=True)
    for p in [labels, *[Path(str(labels) + f".shard{i}.h5") for i in range(2)]]:
        p.unlink(missing_ok=True)
    return rows


def extrapolate(rows: list[dict], cores: int, gpus: int) -> dict:
    """Each stage at its largest measured n, projected to CheXpert on one server."""
    largest: dict[str, dict] = {}
    for r in rows:
        if r["stage"] not in largest or r["n"] > largest[r["stage"]]["n"]:
            largest[r["stage"]] = r
    by_n: dict[str, list] = {}
    for r in rows:
        by_n.setdefault(r["stage"], []).append(r)
    stages = {}
    for name, r in largest.items():
        rate = r["per_core"] or r["images_per_s"]  # per core where CPU time was measured
        if not rate:
            continue
        parallel = cores if r["per_core"] else 1
        hours = CHEXPERT_IMAGES / (rate * parallel) / 3600
        runs = sorted(by_n[name], key=lambda x: x["n"])
        growth = anon_growth = None
        if len(runs) >= 2 and runs[0]["peak_rss_mb"]:
            growth = round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3)
        if len(runs) >= 2 and runs[0].get("rss_anon_mb") and runs[-1].get("rss_anon_mb"):
            anon_growth = round(runs[-1]["rss_anon_mb"] / runs[0]["rss_anon_mb"], 3)
        disk = r["disk_mb"] * CHEXPERT_IMAGES / max(r["n"], 1) / 1024 if r["disk_mb"] else 0.0
        s = {"hours_on_server": round(hours, 3), "cores_used": parallel, "rate_used": rate,
             "disk_gb": round(disk, 1), "rss_growth": growth, "anon_rss_growth": anon_growth,
             "images_per_s_on_server": round(rate * parallel, 1)}
        if name.startswith("explain"):
            gpu_h = CHEXPERT_IMAGES * r["gpu_s_per_image_stated"] / gpus / 3600
            s["gpu_hours_on_server"] = round(gpu_h, 3)
            s["cpu_fraction_of_gpu"] = r["cpu_fraction_of_gpu"]
        stages[name] = s
    # the CPU path the GPUs wait on: the slowest stage that runs once per epoch or per image
    # next to the GPUs (not the one-off check, cache build or merge)
    beside = [k for k in stages if k.startswith(("classify", "explain", "pretrain", "label_file_read"))]
    bound = max(beside, key=lambda k: stages[k]["hours_on_server"]) if beside else None
    slowest = max(stages, key=lambda k: stages[k]["hours_on_server"]) if stages else None
    return {"stage": "extrapolation", "n": CHEXPERT_IMAGES, "server_cores": cores, "server_gpus": gpus,
            "stages": stages, "bounding_stage": bound, "slowest_stage": slowest,
            "note": "hours = 224,316 / (per_core x server cores) (perfect scaling assumed; per_core of the CLI "
                    "stages includes their imports); bounding_stage: the slowest CPU path beside the GPUs (per epoch "
                    "or per image: loaders, explain's CPU side), slowest_stage: of all; disk scaled linearly; rss_growth = peak RSS at the largest / smallest size; anon_rss_growth = the same for "
                    "allocated memory at the end of the timed part (rss_anon_mb; without the mapped files' pages)"}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,8000", help="train.csv rows per data set, comma-separated")
    ap.add_argument("--stages", default=",".join(ALL_STAGES), help=f"comma-separated, of {','.join(ALL_STAGES)}")
    ap.add_argument("--workers", default="0,1,2,4", help="DataLoader workers for the pretraining loader (0: in-process)")
    ap.add_argument("--loader-cap", type=int, default=4000, help="rows per pretraining-loader epoch at most")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--server-cores", type=int, default=16)
    ap.add_argument("--server-gpus", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per stage process")
    ap.add_argument("--targets", choices=sorted(EXPLAINED), default="all",
                    help="the label file's explained classes: all (the worst case for size and reads) or positive "
                         "(explain's default: each image's positive labels; the others are zero maps)")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in ALL_STAGES]
    if bad:
        ap.error(f"unknown stage(s) {bad}; choose from {ALL_STAGES}")
    sizes = [int(x) for x in args.sizes.split(",") if x]
    workers = [int(x) for x in args.workers.split(",") if x]
    import tempfile

    tmp = None
    if args.out:
        base = Path(args.out)
        base.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="doll-scale-")
        base = Path(tmp)
    rows: list[dict] = []
    try:
        for n in sizes:
            rows.extend(run_size(n, base, stages, workers, args.loader_cap, args.timeout, args.targets))
        rows.append(extrapolate(rows, args.server_cores, args.server_gpus))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    json.dump(rows, sys.stdout)
    print()
    return rows


if __name__ == "__main__":
    main()
