"""``doll data check``: validate a data set in place (counts, labels, masks, files)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from doll.data.images import read_raw, same_grid
from doll.data.registry import open_dataset
from doll.errors import DollError


def check_dataset(dataset: str, root: str, decode: int = 200, progress: bool = True, **options) -> dict:
    """Counts per split, label statistics per class, masks per structure, missing and
    unreadable files. ``decode`` images (spread over the set; 0 = all) are decoded to
    catch corrupt files; every listed file is checked for existence.

    Formats that read a partial download (``nih``, ``folder``: index rows whose image is
    not there are skipped) report those rows as ``rows_without_image``: counted and
    shown, but not a problem, since every command skips them too. A file that a
    command *would* read and cannot is a problem (``ok`` false)."""
    fmt = open_dataset(dataset, root, **options)
    items = fmt.items()
    report: dict = {"dataset": dataset, "root": str(fmt.root), "images": len(items), "splits": {},
                    "classes": list(fmt.classes), "structures": list(fmt.structures)}
    for it in items:
        report["splits"][it.split] = report["splits"].get(it.split, 0) + 1
    # the key every patient-level split (hold-outs, validation carved from train) groups images by
    patients = {it.patient for it in items if it.patient}
    report["patients"] = len(patients)
    report["patient_key"] = (getattr(fmt, "PATIENT_KEY", "") or "the format's patient field") if patients else \
        "none: this format has no patient ids, so each image is its own patient"
    if fmt.classes:
        raw = np.stack([it.labels if it.labels is not None else np.full(len(fmt.classes), np.nan) for it in items])
        report["labels"] = {c: {"positive": int((raw[:, k] == 1).sum()), "negative": int((raw[:, k] == 0).sum()),
                                "uncertain": int((raw[:, k] == -1).sum()), "blank": int(np.isnan(raw[:, k]).sum())}
                            for k, c in enumerate(fmt.classes)}
    if fmt.structures:
        report["masks"] = {s: sum(s in it.masks for it in items) for s in fmt.structures}
    if any(it.boxes for it in items):
        report["boxes"] = sum(len(b) for it in items for b in it.boxes.values())
    missing = [str(it.image) for it in items if not it.image.exists()]
    missing += [str(p) for it in items for p in it.masks.values() if not p.exists()]
    report["missing_files"] = len(missing)
    report["missing_examples"] = missing[:10]
    skipped = list(map(str, getattr(fmt, "missing", []) or []))
    report["rows_without_image"] = len(skipped)
    report["rows_without_image_examples"] = skipped[:10]
    present = [it for it in items if it.image.exists()]
    if decode and len(present) > decode:
        pick = np.linspace(0, len(present) - 1, decode).round().astype(int)
        present = [present[i] for i in sorted(set(pick.tolist()))]

    def try_read(it):
        """(why the image or a mask cannot be read, the image's shape, its dtype, masks whose size is wrong)"""
        try:
            img = read_raw(it.image)
        except DollError as exc:
            return str(exc), None, None, []
        wrong = []
        for mask in it.masks.values():
            if not mask.exists():
                continue  # counted as missing
            try:
                m = read_raw(mask)
            except DollError as exc:
                return str(exc), img.shape, str(img.dtype), wrong
            if m.shape[:2] != img.shape[:2] and not (fmt.subsampled_masks and same_grid(m.shape[:2], img.shape[:2])):
                wrong.append(mask_size_problem(mask, m.shape[:2], it.image, img.shape[:2]))
        return None, img.shape, str(img.dtype), wrong

    with ThreadPoolExecutor(4) as pool:
        results = list(tqdm(pool.map(try_read, present), total=len(present), desc="decoding", leave=False,
                            disable=not progress))
    bad = [r[0] for r in results if r[0]]
    shapes = [r[1] for r in results if r[1]]
    wrong_size = [w for r in results for w in r[3]]
    report["decoded"] = len(present)
    report["unreadable"] = len(bad)
    report["unreadable_examples"] = bad[:10]
    report["mask_size_mismatch"] = len(wrong_size)
    report["mask_size_examples"] = wrong_size[:10]
    if shapes:
        hs, ws = np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes])
        report["image_size"] = {"min": [int(hs.min()), int(ws.min())], "max": [int(hs.max()), int(ws.max())]}
        report["dtypes"] = sorted({r[2] for r in results if r[2]})
    report["ok"] = not missing and not bad and not wrong_size
    return report


def mask_size_problem(mask, mask_shape, image, image_shape) -> str:
    """``mask M is 128x128 but its image I is 256x256 (0.5x its width, 0.5x its height)``:
    usually a mask paired with the wrong image, or masks of another resolution of the set."""
    (mh, mw), (ih, iw) = mask_shape, image_shape
    return (f"mask {mask} is {mw}x{mh} but its image {image} is {iw}x{ih} "
            f"({mw / iw:.3g}x its width, {mh / ih:.3g}x its height)")


def format_report(r: dict) -> str:
    lines = [f"{r['dataset']} at {r['root']}: {r['images']} images "
             f"({', '.join(f'{k} {v}' for k, v in sorted(r['splits'].items()))})"]
    if "patient_key" in r:
        lines.append(f"  patients: {r['patients']} (split key: {r['patient_key']})")
    for c, st in (r.get("labels") or {}).items():
        lines.append(f"  {c:28s} +{st['positive']:<6d} -{st['negative']:<6d} ?{st['uncertain']:<6d} blank {st['blank']}")
    for s, n in (r.get("masks") or {}).items():
        lines.append(f"  mask {s:23s} {n}")
    if "boxes" in r:
        lines.append(f"  boxes {r['boxes']}")
    if "image_size" in r:
        lines.append(f"  image size {r['image_size']['min']} .. {r['image_size']['max']}, dtypes {', '.join(r['dtypes'])}")
    lines.append(f"  missing files: {r['missing_files']}; unreadable: {r['unreadable']} of {r['decoded']} decoded")
    for ex in r["missing_examples"][:3] + r["unreadable_examples"][:3]:
        lines.append(f"    {ex}")
    if r.get("mask_size_mismatch"):
        lines.append(f"  masks whose size is not their image's: {r['mask_size_mismatch']} (of the decoded images' masks)")
        for ex in r["mask_size_examples"][:3]:
            lines.append(f"    {ex}")
    if r.get("rows_without_image"):
        lines.append(f"  index rows naming an image that is not here: {r['rows_without_image']} (skipped by every "
                     f"command; expected for a partial download), e.g. {', '.join(r['rows_without_image_examples'][:3])}")
    lines.append("OK" if r["ok"] else "PROBLEMS FOUND")
    return "\n".join(lines)

