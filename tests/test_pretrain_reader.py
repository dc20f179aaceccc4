"""Pretraining's reader (doll.pretraining.reader, issue 37's speed-up) delivers the samples
a straightforward reference delivers, bit for bit: every row read through HDF5's gzip
filter, float16 masks, the label rule map by map, one float32 ``warpAffine`` per mask and
the intensity changes computed per pixel. The label file mixes every kind of map the
faster paths treat apart (with and without zeros, one level, empty, absent classes, more
than 16 classes) and one class never explained."""
from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import torch

from doll.data.dataset import ArrayDataset, augment, decode_masks
from doll.data.policies import apply_policy
from doll.errors import DollError
from doll.labels import store
from doll.labels.rule import apply_rule
from doll.pretraining.train import LabelRows

N, C, S = 6, 18, 48


def reference_rule(saliency: np.ndarray, rule: str) -> np.ndarray:
    kind, _, arg = rule.partition(":")
    flat = saliency.reshape(-1, *saliency.shape[-2:])
    out = np.zeros(flat.shape, bool)
    for i, s in enumerate(flat):
        if not s.any():
            continue
        if kind == "otsu":
            nz = s[s > 0]
            if nz.min() == nz.max():
                out[i] = s > 0
                continue
            t, _ = cv2.threshold(nz.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            out[i] = s > t
            continue
        t = float(arg) if kind == "threshold" else np.quantile(s, float(arg))
        out[i] = (s >= t) & (s > 0)
    return out.reshape(saliency.shape)


def reference_augment(img, masks, rng):
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
    masks = np.stack([cv2.warpAffine(k, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
                      for k in masks.astype(np.float32)])
    return out, masks


def reference_sample(path, row: int, used, rule: str, soft: bool, key) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, mask float32) of file row ``row`` as the reader before issue 37 made them."""
    with h5py.File(path, "r") as f:
        img, sal = f["images"][row], f["saliency"][row]
        explained = f["targets"][row][used] & (f["labels"][row][used] != 0)
    m = np.zeros((len(used), S, S), np.float16)
    ks = np.flatnonzero(explained)
    if len(ks):
        sal = sal[used[ks]]
        m[ks] = sal / 255.0 if soft else reference_rule(sal, rule)
    if key is None:
        return img, m.astype(np.float32)
    return reference_augment(img, m, np.random.default_rng(key))


@pytest.fixture(scope="module", params=["mixed", "all explained"])
def label_file(request, tmp_path_factory):
    """``mixed``: absent and unknown labels, one class never explained; ``all explained``:
    every class explained, rows 0-2 with every label positive (the whole row is the input)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:S, 0:S]
    sal = np.zeros((N, C, S, S), np.uint8)
    for i in range(N):
        for c in range(C):
            kind = (i + c) % 6
            low = cv2.resize(rng.random((4, 4), dtype=np.float32), (S, S), interpolation=cv2.INTER_CUBIC)
            smooth = (low.clip(0, 1) * 255).astype(np.uint8)
            if kind == 0:  # smooth with zeros
                sal[i, c] = np.where((xx + yy + i) % 7 == 0, 0, smooth)
            elif kind == 1:  # no zero at all (explain's maps without a lung field)
                sal[i, c] = np.maximum(smooth, 1)
            elif kind == 2:  # one level, no zero
                sal[i, c] = 9
            elif kind == 3:  # one level inside a field of zeros
                sal[i, c] = np.where(yy < S // 2, 200, 0)
            elif kind == 4:  # empty
                pass
            else:  # noise
                sal[i, c] = rng.integers(0, 256, (S, S), dtype=np.uint8)
    targets = np.ones((N, C), bool)
    labels = np.array([1, 0, -1, np.nan], np.float32)[rng.choice(4, (N, C), p=[0.5, 0.2, 0.15, 0.15])]
    if request.param == "mixed":
        targets[:, 5] = False  # a class never explained: not among the reader's classes
    else:
        labels[:3] = 1
    images = rng.integers(0, 256, (N, S, S), dtype=np.uint8)
    path = tmp_path_factory.mktemp("reader") / "labels.h5"
    store.write_label_file(path, {"saliency": sal, "images": images, "targets": targets, "labels": labels,
                                  "probs": np.zeros((N, C), np.float32), "done": np.ones(N, bool),
                                  "paths": [f"p{i}" for i in range(N)]},
                           {"classes": [f"c{k}" for k in range(C)], "method": "ig", "settings": {},
                            "label_rule": "otsu", "image_size": S, "dataset": "phantom"})
    return path


@pytest.mark.parametrize("rule,soft", [("otsu", False), ("quantile:0.9", False), ("threshold:100", False),
                                       ("otsu", True)])
def test_reader_samples_equal_the_reference_bit_for_bit(label_file, rule, soft):
    rows = np.array([4, 0, 2, 5, 1])  # not in file order: row j is file row rows[j]
    with store.LabelFile(label_file) as lf:
        data = LabelRows(lf, rows, rule, soft)
    used = data.used
    assert len(used) > 16  # two bit planes of masks
    assert len(used) == (C if data.all_used else C - 1)  # mixed: class 5 left out
    assert not data.all_used or data.explained.all(axis=1).sum() == 3  # file rows 0-2: every map explained
    y, w = apply_policy(data.labels, "ignore", "ignore")
    for aug in (False, True):
        ds = ArrayDataset(data.images, y, w, masks=data.masks, valid=data.valid, augment=aug, seed=11)
        for epoch in (0, 3):
            ds.set_epoch(epoch)
            for j in range(len(rows)):
                got = ds[j]
                assert got["mask"].dtype == (torch.uint8 if soft else torch.bool), j  # 1 byte a pixel to the device
                got = decode_masks(got)
                img, mask = reference_sample(label_file, int(rows[j]), used, rule, soft,
                                             [11, epoch, j] if aug else None)
                assert got["mask"].dtype == torch.float32 and torch.equal(got["mask"], torch.from_numpy(mask)), j
                assert torch.equal(got["image"], ArrayDataset(img[None])[0]["image"]), j
                assert torch.equal(got["valid"], torch.as_tensor(data.valid[j])) and got["index"] == j
        # masks[j] keeps its float16 targets: the same values
        for j in range(len(rows)):
            ref = reference_sample(label_file, int(rows[j]), used, rule, soft, None)[1]
            assert data.masks[j].dtype == np.float16 and np.array_equal(data.masks[j].astype(np.float32), ref)


def test_rule_equals_the_reference_on_every_kind_of_map(label_file):
    with h5py.File(label_file, "r") as f:
        sal = f["saliency"][:]
    extra = np.stack([np.full((S, S), v, np.uint8) for v in (0, 1, 128, 255)])
    maps = np.concatenate([sal.reshape(-1, S, S), extra])
    for rule in ("otsu", "quantile:0.5", "threshold:0", "threshold:255"):
        assert np.array_equal(apply_rule(maps, rule), reference_rule(maps, rule)), rule
    strided = maps[:, ::2, ::3]  # a view that is not contiguous
    assert np.array_equal(apply_rule(strided, "otsu"), reference_rule(strided, "otsu"))


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float16, np.float32])
def test_augment_moves_every_mask_dtype_as_one_float32_warp_per_mask(dtype):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    masks = rng.integers(0, 2, (35, 40, 40)).astype(dtype)  # 35: three bit planes for bool masks
    if dtype in (np.float16, np.float32):
        masks = (masks * rng.random(masks.shape)).astype(dtype)
    masks[[0, 3, 16, 17, 34]] = 0  # classes a row does not explain: zero maps, which are not warped
    if dtype is np.float16:
        masks[5] = -0.0  # zero too: not warped, +0.0 out (equal in value to the warped -0.0)
    for seed in range(6):
        out, moved = augment(img, masks, np.random.default_rng(seed))
        ref_img, ref = reference_augment(img, masks, np.random.default_rng(seed))
        assert np.array_equal(out, ref_img)
        assert moved.dtype == (np.float32 if dtype == np.float16 else dtype)
        assert np.array_equal(moved.astype(np.float32), ref)


def test_intensity_table_equals_per_pixel_arithmetic():
    """augment looks the gamma/contrast/brightness of a uint8 image up in a 256-value table."""
    values = np.tile(np.arange(256, dtype=np.uint8), 40).reshape(40, 256)  # every value, at many offsets
    for seed in range(30):
        out, _ = augment(values[:, :40].copy(), None, np.random.default_rng(seed))
        ref, _ = reference_augment(values[:, :40].copy(), np.zeros((1, 40, 40), np.uint8), np.random.default_rng(seed))
        assert np.array_equal(out, ref), seed


def test_read_rows_inflates_rows_as_stored_and_names_a_damaged_one(label_file, tmp_path):
    with h5py.File(label_file, "r") as f:
        for key in ("saliency", "images"):
            ds = f[key]
            for i in range(N):
                got = store.read_rows(ds, i)
                assert got.flags.writeable and np.array_equal(got, ds[i])
            assert np.array_equal(store.read_rows(ds, np.int64(2)), ds[2])
            assert np.array_equal(store.read_rows(ds, slice(1, 3)), ds[1:3])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:  # other layouts, and a row HDF5 never allocated, are h5py's to read
        f.create_dataset("shuffled", data=np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8), chunks=(1, 8, 8),
                         compression="gzip", shuffle=True, fletcher32=True)
        ds = f.create_dataset("sparse", shape=(3, 8, 8), dtype=np.uint8, chunks=(1, 8, 8), compression="gzip")
        ds[1] = 5
    with h5py.File(other, "r") as f:
        assert np.array_equal(store.read_rows(f["shuffled"], 3), f["shuffled"][3])
        assert not store.read_rows(f["sparse"], 0).any() and (store.read_rows(f["sparse"], 1) == 5).all()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(label_file.read_bytes())
    with h5py.File(bad, "r") as f:
        info = f["saliency"].id.get_chunk_info_by_coord((3, 0, 0, 0))
    data = bytearray(bad.read_bytes())
    mid = info.byte_offset + info.size // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    bad.write_bytes(bytes(data))
    with h5py.File(bad, "r") as f:
        with pytest.raises(DollError, match=r"bad\.h5 row 3 \(p3\) is unreadable: .+; re-run doll explain for it"):
            store.read_rows(f["saliency"], 3)
        assert np.array_equal(store.read_rows(f["saliency"], 2), h5py.File(label_file, "r")["saliency"][2])


@pytest.mark.parametrize("soft", [False, True])
def test_loader_batches_carry_coded_masks_that_decode_to_the_samples_values(label_file, soft):
    """The DataLoader collates the coded masks (1 byte a pixel: 4x less to copy into worker shared memory
    and to the GPU); the engine's transfer decodes them, each sample with its own table, bit for bit."""
    from torch.utils.data import DataLoader

    from doll.train.engine import _to_device

    rows = np.array([4, 0, 2, 5, 1])
    with store.LabelFile(label_file) as lf:
        data = LabelRows(lf, rows, "otsu", soft)
    y, w = apply_policy(data.labels, "ignore", "ignore")
    ds = ArrayDataset(data.images, y, w, masks=data.masks, valid=data.valid, augment=True, seed=3)
    batch = next(iter(DataLoader(ds, batch_size=len(rows))))
    assert batch["mask"].element_size() == 1 and ("mask_values" in batch) == soft
    if soft:  # the GPU's look-up (torch.gather; OpenCV's on the CPU) gives the same numbers
        gathered = torch.gather(batch["mask_values"], 1, batch["mask"].reshape(len(rows), -1).long())
        assert torch.equal(gathered.view(batch["mask"].shape), decode_masks(dict(batch))["mask"])
    on_device = _to_device(batch, torch.device("cpu"), channels_last=False)
    assert "mask_values" not in on_device and on_device["mask"].dtype == torch.float32
    for j in range(len(rows)):
        assert torch.equal(on_device["mask"][j], decode_masks(ds[j])["mask"]), j
