"""Pretraining's reader, before and after issue 37's speed-up, in one process (A/B).

Writes a label file as benchmarks/scale.py's ``labels`` stage does (14 classes at 224 px,
every class explained, smooth random uint8 saliency, CheXpert-like image labels: about 12
of the 14 maps per row carry a target, the others are empty because the label says
absent), then times one pass of pretraining's training loader over it per arm:

* ``before``: the reader as it was (kept here, not in doll): ``LabelRows`` reading each row
  through HDF5's gzip filter, float16 masks, the label rule per map, augmentation with one
  ``cv2.warpAffine`` per mask in float32 and float arithmetic per pixel, a float32 copy of
  the masks;
* ``after``: doll's own ``LabelRows`` and ``ArrayDataset``.

Both arms go through ``ArrayDataset`` -> ``DataLoader`` (batch 16, shuffled,
``num_workers=0``: in-process, so images per CPU second is the rate of one worker on one
core), ``torch.set_num_threads(1)``. The arms alternate for ``--rounds`` rounds; the figures
are medians over rounds of images per wall second and per CPU second
(``time.process_time``). Before timing, every sample of both arms is compared (image,
mask, valid, target, weight; augmented and not): the script stops if one differs by a bit.

    python benchmarks/pretrain_reader.py --rows 256 --rounds 5 > pretrain_reader.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doll.data.dataset import ArrayDataset, decode_masks, to_tensor  # noqa: E402
from doll.data.policies import apply_policy  # noqa: E402
from doll.labels.rule import apply_rule  # noqa: E402
from doll.labels.store import LabelFile, unreadable_row, write_label_file  # noqa: E402
from doll.pretraining.train import LabelRows  # noqa: E402

C, S = 14, 224


# ------------------------------------------------------------------ the reader as it was

def old_read_rows(ds, index):
    try:
        return ds[index]
    except OSError as exc:
        raise unreadable_row(ds, index, exc) from None


class OldLabelRows:
    """doll/pretraining/train.py's LabelRows before issue 37's speed-up (reads and masks)."""

    def __init__(self, lf: LabelFile, rows: np.ndarray, rule: str, soft: bool):
        targets = lf["targets"][:]
        self.used = np.flatnonzero(targets.any(axis=0))
        self.path, self.rows, self.rule, self.soft = str(lf.path), np.asarray(rows), rule, soft
        self.labels = lf["labels"][:][self.rows][:, self.used]
        self.explained = targets[self.rows][:, self.used] & (self.labels != 0)
        self.valid = ((self.labels == 0) | self.explained).astype(np.float32)
        self.shape = lf["images"].shape[1:]
        self.images, self.masks = Column(self._image, len(self.rows)), Column(self._mask, len(self.rows))
        self._f = None

    def _file(self) -> h5py.File:
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        return self._f

    def _image(self, j: int) -> np.ndarray:
        return old_read_rows(self._file()["images"], self.rows[j])

    def _mask(self, j: int) -> np.ndarray:
        m = np.zeros((len(self.used), *self.shape), np.float16)
        ks = np.flatnonzero(self.explained[j])
        if len(ks):
            sal = old_read_rows(self._file()["saliency"], self.rows[j])[self.used[ks]]
            m[ks] = sal / 255.0 if self.soft else apply_rule(sal, self.rule)
        return m


class Column:
    def __init__(self, read, n: int):
        self.read, self.n = read, n

    def __getitem__(self, j):
        return self.read(int(j))

    def __len__(self):
        return self.n


def old_augment(img, masks, rng, hide=0.0):
    """doll/data/dataset.py's augment before issue 37's speed-up (no Hide-and-Seek here)."""
    s = img.shape[0]
    angle = rng.uniform(-7, 7)
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * s
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    m[:, 2] += (tx, ty)
    out = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x = out.astype(np.float32) / 255.0
    x = np.clip(x ** rng.uniform(0.8, 1.25), 0, 1)
    x = np.clip((x - 0.5) * rng.uniform(0.9, 1.1) + 0.5 + rng.uniform(-0.1, 0.1), 0, 1)
    out = (x * 255).round().astype(np.uint8)
    if masks is not None:
        if masks.dtype == np.float16:
            masks = masks.astype(np.float32)
        masks = np.stack([cv2.warpAffine(k, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
                          for k in masks])
    return out, masks


class OldArrayDataset(ArrayDataset):
    """ArrayDataset.__getitem__ before issue 37's speed-up."""

    def __getitem__(self, i):
        j = int(self.indices[i])
        img = np.asarray(self.images[j])
        masks = np.asarray(self.masks[j]) if self.masks is not None else None
        if self.augment:
            key = [self.seed, self.epoch, j, i] if self.repeats else [self.seed, self.epoch, j]
            img, masks = old_augment(img, masks, np.random.default_rng(key), self.hide)
        sample = {"image": to_tensor(img), "index": j}
        if self.targets is not None:
            sample["target"] = torch.as_tensor(self.targets[j], dtype=torch.float32)
            sample["weight"] = torch.as_tensor(self.weights[j], dtype=torch.float32)
        if masks is not None:
            sample["mask"] = torch.tensor(masks, dtype=torch.float32)
        if self.valid is not None:
            sample["valid"] = torch.as_tensor(self.valid[j], dtype=torch.float32)
        return sample


# ------------------------------------------------------------------ the label file

def build_label_file(path: Path, n: int, seed: int = 0) -> None:
    """benchmarks/scale.py's label file: smooth saliency, every class explained, 224 px."""
    rng = np.random.default_rng(seed)
    low = rng.random((n * C, 8, 8), dtype=np.float32)
    sal = (np.stack([cv2.resize(m, (S, S), interpolation=cv2.INTER_CUBIC) for m in low]).clip(0, 1) * 255) \
        .astype(np.uint8).reshape(n, C, S, S)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    chest = 60 + 120 * np.exp(-(((xx - S / 2) / (0.45 * S)) ** 2)) * np.clip(yy / S + 0.3, 0, 1)
    images = np.clip(chest[None] + rng.normal(0, 12, (n, S, S)), 0, 255).astype(np.uint8)
    # CheXpert-like: positive 12 %, negative 13 %, uncertain 5 %, blank 70 %
    labels = np.array([1, 0, -1, np.nan], np.float32)[rng.choice(4, (n, C), p=[0.12, 0.13, 0.05, 0.70])]
    write_label_file(path, {"saliency": sal, "images": images, "targets": np.ones((n, C), bool), "labels": labels,
                            "probs": np.zeros((n, C), np.float32), "done": np.ones(n, bool),
                            "paths": [f"p{i}.jpg" for i in range(n)]},
                     {"classes": [f"c{k}" for k in range(C)], "method": "ig", "settings": {}, "label_rule": "otsu",
                      "image_size": S, "dataset": "chexpert", "classifiers": [], "root": "", "split": "train"})


def datasets(path: Path, rule: str, soft: bool, augment: bool, seed: int = 0) -> dict:
    out = {}
    for arm, rows_cls, ds_cls in (("before", OldLabelRows, OldArrayDataset), ("after", LabelRows, ArrayDataset)):
        with LabelFile(path) as lf:
            data = rows_cls(lf, np.flatnonzero(lf.done), rule, soft)
        y, w = apply_policy(data.labels, "ignore", "ignore")
        out[arm] = ds_cls(data.images, y, w, masks=data.masks, valid=data.valid, augment=augment, seed=seed)
        out[arm].rows = data
    return out


def same(a: dict, b: dict) -> bool:
    """Sample ``a`` of the reader before and ``b`` of today's, whose masks are decoded first (the
    loader hands them over coded since 2026-12-06; the engine decodes them on the device)."""
    b = decode_masks(dict(b))
    return a.keys() == b.keys() and all(
        a[k] == b[k] if k == "index" else (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])) for k in a)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--check", type=int, default=64, help="rows compared sample by sample per setting")
    ap.add_argument("--label-file", default=None, help="an existing label file (default: one written here)")
    ap.add_argument("--soft", action="store_true", help="time --soft targets instead of the otsu rule")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="doll-reader-") as tmp:
        path = Path(args.label_file or Path(tmp) / "labels.h5")
        if not args.label_file:
            build_label_file(path, args.rows)
        for rule, soft in (("otsu", False), ("quantile:0.9", False), ("threshold:128", False), ("otsu", True)):
            for aug in (True, False):
                arms = datasets(path, rule, soft, aug, seed=3)
                for i in range(min(args.check, len(arms["after"]))):
                    if not same(arms["before"][i], arms["after"][i]):
                        raise SystemExit(f"sample {i} differs ({rule}, soft={soft}, augment={aug})")
        print(f"[reader] samples identical (4 label settings x augmented or not, {args.check} rows each)",
              file=sys.stderr, flush=True)
        arms = datasets(path, "otsu", args.soft, True)
        rates: dict = {arm: ([], []) for arm in arms}
        n = len(arms["after"])
        for r in range(args.rounds):
            for arm in (("before", "after") if r % 2 == 0 else ("after", "before")):
                ds = arms[arm]
                ds.set_epoch(r)
                loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=0,
                                                     generator=torch.Generator().manual_seed(r))
                t0, c0 = time.perf_counter(), time.process_time()
                # both arms end with float32 masks: today's decoded here, as on a CPU-only run
                seen = sum(len(decode_masks(b)["image"]) for b in loader)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                rates[arm][0].append(seen / wall)
                rates[arm][1].append(seen / cpu)
        result = {"rows": n, "classes": C, "size": S, "rounds": args.rounds, "batch": 16, "num_workers": 0,
                  "targets": "soft" if args.soft else "otsu",
                  "maps_with_a_target_per_row": round(float(arms["after"].valid.sum()) / n, 2),
                  "explained_maps_per_row": round(float(arms["after"].rows.explained.sum()) / n, 2),
                  "bytes_per_row": int(path.stat().st_size / n)}
        for arm, (w, c) in rates.items():
            result[arm] = {"images_per_s": round(statistics.median(w), 1), "per_cpu_s": round(statistics.median(c), 1),
                           "per_cpu_s_rounds": [round(x, 1) for x in c]}
        result["speedup_per_cpu_s"] = round(result["after"]["per_cpu_s"] / result["before"]["per_cpu_s"], 2)
    json.dump(result, sys.stdout)
    print()
    return result


if __name__ == "__main__":
    main()
