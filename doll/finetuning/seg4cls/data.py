"""seg4cls data: the train / validation / test splits, and pseudo-masks for a student."""
from __future__ import annotations

import numpy as np

from doll.data import labels_of, open_dataset, split_arrays
from doll.data.base import class_structure_pairs
from doll.data.splits import hold_out
from doll.errors import DollError
from doll.finetuning.settings import FinetuneSettings
from doll.train import distributed as dist

VAL_FRACTION = 0.2

def _split_names(fmt) -> tuple[str, str | None]:
    def has(split):
        try:
            return bool(fmt.items(split))
        except DollError:
            return False

    test = "test" if has("test") else "valid"
    if not has(test):
        raise DollError(f"{fmt.name} at {fmt.root} has neither a test nor a valid split to evaluate on")
    val = "valid" if test != "valid" and has("valid") else None
    return test, val


class _Part:
    """One split: images, masks (N, K, S, S), mask validity (N, K), raw labels (N, K), ids."""

    def __init__(self, images, masks, mask_ok, raw, ids, patients):
        self.images, self.masks, self.mask_ok, self.raw, self.ids = images, masks, mask_ok, raw, ids
        self.patients = patients
        self.has_masks = True

    def take(self, sel):
        idx = np.flatnonzero(sel)
        return _Part(np.asarray(self.images[idx]), np.asarray(self.masks[idx]), self.mask_ok[idx], self.raw[idx],
                     [self.ids[i] for i in idx], [self.patients[i] for i in idx])

    def targets(self):
        """(targets, weights): raw 1 -> 1, 0 -> 0, -1 / NaN -> weight 0."""
        known = (self.raw == 1) | (self.raw == 0)
        return (self.raw == 1).astype(np.float32), known.astype(np.float32)

    def __len__(self):
        return len(self.images)


def load_parts(s: FinetuneSettings, size: int, need_val: bool = True, test_needs_masks: bool = False):
    """(classes, mask structures, train, val, test, test split name, validation description).
    ``test_needs_masks`` (only with ``need_val=False``): a test split without any mask
    file is replaced by the ``valid`` split when there is one."""
    fmt = open_dataset(s.dataset, s.root)
    classes, structures = list(fmt.classes), list(fmt.structures)
    pairs = class_structure_pairs(classes, structures)
    if not pairs:
        raise DollError(f"--task seg4cls needs image classes that have masks of the same name; {s.dataset} has classes "
                        f"[{', '.join(classes) or 'none'}] and masks [{', '.join(structures) or 'none'}]")
    test_split, val_split = _split_names(fmt)
    sources = [st for _, _, st in pairs]
    cls_idx = [i for _, i, _ in pairs]
    phantom = s.dataset == "phantom"

    def part(split):  # from the one opened data set
        arr = split_arrays(fmt, split, size, structures=sources, progress=s.progress and dist.is_main())
        raw = labels_of(arr, len(classes))[:, cls_idx]
        has = np.asarray(arr.has_mask, bool)
        mask_ok = np.ones_like(has) if phantom else (has | (raw == 0))
        p = _Part(arr.images, arr.masks, mask_ok.astype(np.float32), raw, [it.id for it in arr.items],
                  [it.patient or it.id for it in arr.items])
        p.has_masks = phantom or bool(has.any())
        return p

    train = part("train")
    test = part(test_split)
    if test_needs_masks and not test.has_masks and val_split is not None and not need_val:
        test_split, val_split = val_split, None  # e.g. COVID-QU-Ex ships its test split without masks
        test = part(test_split)
    if val_split is not None and need_val:
        val = part(val_split)
        val_desc = val_split
    elif not need_val:
        val, val_desc = None, None
    else:
        held = hold_out(train.patients, VAL_FRACTION, s.seed)  # the patient hold-out of every stage
        if not held:
            raise DollError("too few training patients to carve a validation split; use a larger data set")
        hold = np.array([p in held for p in train.patients])
        val, train = train.take(hold), train.take(~hold)
        val_desc = f"{int(VAL_FRACTION * 100)}% of train patients (seed {s.seed})"
    if not ((train.raw == 1) | (train.raw == 0)).any():
        raise DollError(f"{s.dataset} has no image labels in its training split for {', '.join(p[0] for p in pairs)}")
    return [p[0] for p in pairs], sources, train, val, test, test_split, val_desc



def pseudo_masks(teacher_prob: np.ndarray, train, real: np.ndarray, boosted: bool) -> tuple[np.ndarray, np.ndarray]:
    """(masks (N, C, H, W) uint8, valid (N, C) float32) for the student: real masks at
    the indices ``real``, the teacher's (probability > 0.5) elsewhere; ``boosted``
    applies the image-label rule of the module doc."""
    masks = (np.asarray(teacher_prob, np.float32) > 0.5).astype(np.uint8)
    valid = np.ones(masks.shape[:2], np.float32)
    if boosted:
        raw = train.raw
        masks[raw == 0] = 0
        empty = ~masks.reshape(*masks.shape[:2], -1).any(-1)
        valid[((raw == 1) & empty) | ~((raw == 1) | (raw == 0))] = 0
    masks[real] = np.asarray(train.masks[real])
    valid[real] = train.mask_ok[real]
    return masks, valid
