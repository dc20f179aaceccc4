"""Segmentation for classification (``doll finetune --task seg4cls``).

Train a segmenter on a *few* pixel-labelled images, then turn its probability maps
into image labels with a summarizing function g(.), and compare against a plain
classifier and a multitask (Y-Net style) network trained in the same run.

Data
  * test split: ``test`` when the data set has one, else ``valid``;
  * validation split (choosing t/tau and training the summarizers; the classifier's and
    the multitask net's model selection): ``valid`` when it exists and differs from the
    test split, else a seeded 20 % of the training *patients* (taken out of train);
  * classes: the data set's image classes that have a mask structure of the same name
    (phantom: the 13 findings). Otherwise a known alias (``infection`` masks <->
    ``COVID-19`` images: COVID-QU-Ex, QaTa), or, when the data set has exactly one
    structure and one class, that pair. Anything else is a DollError;
  * masks for the segmenter: a seeded ``--label-fraction`` of the training images (at
    least one), cycled so that an epoch has as many samples as there are training
    images (as many as the classifier sees; each copy augmented differently); image
    labels: all training images. A class map counts as labelled
    where its mask file exists, where the image label is 0 (empty mask), and always on
    the phantom (a finding without a mask file is absent there);
  * raw labels 1 / 0 / -1 / NaN; -1 and NaN are left out of every AUROC and loss.

Methods (``metrics.json`` keys)
  * ``seg4cls_rule``: per class, t in {0.3, 0.5, 0.7, 0.9} and tau (pixels) in {0} and
    the 0, 10, ..., 90 % quantiles of the validation positives' pixel counts, less one; an
    image is positive when more than tau pixels have probability > t; (t, tau) maximise balanced
    accuracy on validation. The continuous score for AUROC is the number of pixels with
    probability > t (so AUROC depends on t, not on tau);
  * ``seg4cls_linear``: per class, logistic regression on its probability map average-
    pooled to 8x8;
  * ``seg4cls_pool-linear``: per class, [max, mean, top-1 % mean] -> logistic regression;
  * ``seg4cls_cnn-mask``: a tiny CNN on all (C, H, W) probability maps -> C logits;
  * ``seg4cls_embedding``: logistic regression (D -> C, ridge penalty 0.05 x sum of
    squared weights) on the segmenter's decoder features (the input of its
    segmentation head), global average- and max-pooled, standardised.
  The trained summarizers learn from the *validation* split's image labels (masked BCE,
  AdamW, 200 steps of up to 64 images): the segmenter's maps on its own training images
  would be over-confident. Choose some with ``--summarizer`` ("all", the default, or a
  comma-separated list).
  * ``classifier``: torchvision ``--encoder`` (resnet18 if not a classifier arch)
    trained on all training image labels; the best validation-AUROC epoch is kept;
  * ``multitask``: the same PSPNet plus global-average-pool(last encoder feature) ->
    linear, trained on seg loss (only on the masked subset) + masked BCE (all images).

Semi-supervised (``pseudo="pseudo"`` / ``"boosted"``, CLI ``--pseudo`` / ``--boosted``): the
segmenter above is the *teacher*; its masks (probability > 0.5) become pseudo-masks of
the training images that have no real mask, and a *student* (same init and settings)
is trained on real + pseudo masks for ``--epochs``; the student is the segmenter whose
maps the summarizers read. With ``boosted``, per image and class: image label 0 -> an
empty pseudo-mask; label 1 and an empty teacher mask -> left out (no segmentation loss
for that class on that image); label 1 and a non-empty teacher mask -> the teacher's
mask; unknown label (-1 / blank) -> left out. Plain ``pseudo`` keeps every teacher mask.
Images with real masks always keep them. Both the teacher's and the student's IoU are
reported.

Reported on the test split: AUROC per class and mean; recall at a per-class threshold
giving 90 % specificity on the test negatives, by ground-truth lesion-area tercile and
by location (upper/middle/lower third x image-left/right half, from the mask
centroid), pooled over classes; the segmenter's IoU (prob > 0.5) on test positives;
on the phantom, the robust Pneumothorax AUROC (positives without chest tube vs
negatives with one; ``findings/ground_truth.csv``; images without a ground-truth row
count as without tube).

Image size: ``--image-size``, else the pretrained network's, else the phantom's own
size (phantom), else 256.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from doll.classify.train import ClassificationTask
from doll.data import labels_of, load_split, open_dataset
from doll.data.base import class_structure_pairs
from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.errors import DollError
from doll.models.adapters import set_mode
from doll.models.checkpoint import load_into, read_config
from doll.models.classifier import CLASSIFIER_ARCHS, build_classifier
from doll.models.segmenter import smp_config
from doll.pretrain.train import SegmentationTask
from doll.tasks.finetune import FinetuneSettings, build_model
from doll.train import distributed as dist
from doll.train.engine import Engine, EngineSettings, predict_all
from doll.train.losses import masked_bce, multilabel_seg_loss
from doll.train.metrics import auroc, auroc_per_class
from doll.utils import (
    check_fraction,
    check_positive,
    prepare_out_dir,
    resolve_device,
    write_json,
)

SUMMARIZERS = ("rule", "linear", "pool-linear", "cnn-mask", "embedding")
PSEUDO = ("none", "pseudo", "boosted")
RULE_T = (0.3, 0.5, 0.7, 0.9)
RULE_Q = tuple(np.round(np.arange(0, 1.0, 0.1), 2))
VAL_FRACTION = 0.2
SPECIFICITY = 0.9
EMBEDDING_L2 = 0.05


# ----------------------------------------------------------------------------- data
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


def _patient_holdout(pats: list[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean (N,) mask of a seeded ``fraction`` of the patients (at least one, never all)."""
    uniq = sorted(set(pats))
    if len(uniq) < 2:
        raise DollError("too few training images to carve a validation split; use a larger data set")
    k = min(len(uniq) - 1, max(1, int(round(fraction * len(uniq)))))
    chosen = set(np.random.default_rng(seed).permutation(uniq)[:k].tolist())
    return np.array([p in chosen for p in pats])


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

    def part(split):
        _, arr = load_split(s.dataset, s.root, split, size, structures=sources, progress=s.progress and dist.is_main())
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
        hold = _patient_holdout(train.patients, VAL_FRACTION, s.seed)
        val, train = train.take(hold), train.take(~hold)
        val_desc = f"{int(VAL_FRACTION * 100)}% of train patients (seed {s.seed})"
    if not ((train.raw == 1) | (train.raw == 0)).any():
        raise DollError(f"{s.dataset} has no image labels in its training split for {', '.join(p[0] for p in pairs)}")
    return [p[0] for p in pairs], sources, train, val, test, test_split, val_desc


# ----------------------------------------------------------------------------- tasks and models
class ProbSegTask(SegmentationTask):
    """Segmentation whose predictions are the per-class probability maps and a pooled
    embedding of the decoder's features (the segmentation head's input)."""

    def predict(self, model, batch):
        head = getattr(model, "module", model).segmentation_head
        feats = []
        hook = head.register_forward_hook(lambda _m, inputs, _o: feats.append(inputs[0].detach()))
        try:
            logits = model(batch["image"])
        finally:
            hook.remove()
        f = feats[0].float()
        out = {"prob": torch.sigmoid(logits.float()).cpu().numpy().astype(np.float16),
               "embedding": torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1).cpu().numpy()}
        if "mask" in batch:  # validation while training: the per-epoch IoU curve
            out.update(self.scored(logits, batch))
        return out

    def metrics(self, out):
        return super().metrics(out) if "inter" in out else {}


class YNet(nn.Module):
    """PSPNet + a classification head on the encoder's last feature (Y-Net style)."""

    def __init__(self, seg: nn.Module, n_classes: int):
        super().__init__()
        self.seg = seg
        self.cls_head = nn.Linear(seg.encoder.out_channels[-1], n_classes)

    def forward(self, x):
        feats = self.seg.encoder(x)
        masks = self.seg.segmentation_head(self.seg.decoder(feats))
        return masks, self.cls_head(feats[-1].float().mean(dim=(2, 3)))


class MultitaskTask:
    def __init__(self, classes, dice_weight: float = 0.5):
        self.classes, self.dw = classes, dice_weight

    def loss(self, model, batch):
        seg, cls = model(batch["image"])
        return (multilabel_seg_loss(seg, batch["mask"], 1.0, self.dw, batch["valid"])
                + masked_bce(cls, batch["target"], batch["weight"]))

    def predict(self, model, batch):
        _, cls = model(batch["image"])
        return {"prob": torch.sigmoid(cls.float()).cpu().numpy(), "target": batch["target"].cpu().numpy(),
                "weight": batch["weight"].cpu().numpy()}

    def metrics(self, out):
        return {"auroc": auroc_per_class(out["prob"], out["target"], out["weight"], self.classes)["mean"]}


# ----------------------------------------------------------------------------- summarizers
def rule_counts(prob: np.ndarray, t: float) -> np.ndarray:
    """(N, C) number of pixels with probability > t."""
    return (np.asarray(prob, np.float32) > t).sum(axis=(2, 3)).astype(np.float64)


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    pos, neg = y == 1, y == 0
    return 0.5 * (pred[pos].mean() + (~pred[neg]).mean())


def fit_summary_rule(prob: np.ndarray, raw: np.ndarray) -> list[dict]:
    """Per class, the (t, tau) with the best validation balanced accuracy (see the module doc)."""
    out = []
    counts = {t: rule_counts(prob, t) for t in RULE_T}
    for c in range(prob.shape[1]):
        y = raw[:, c]
        if not ((y == 1).any() and (y == 0).any()):
            out.append({"t": 0.5, "tau": 0.0, "val_balanced_accuracy": None, "fallback": True})
            continue
        best = None
        for t in RULE_T:
            n = counts[t][:, c]
            taus = sorted({0.0, *(max(0.0, math.ceil(v) - 1.0) for v in np.quantile(n[y == 1], RULE_Q))})
            for tau in taus:
                ba = _balanced_accuracy(n > tau, y)
                if best is None or ba > best["val_balanced_accuracy"] + 1e-12:
                    best = {"t": t, "tau": float(tau), "val_balanced_accuracy": float(ba), "fallback": False}
        out.append(best)
    return out


def apply_summary_rule(prob: np.ndarray, params: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, decisions): pixel counts above each class's t, and count > tau."""
    scores = np.stack([rule_counts(prob[:, c:c + 1], p["t"])[:, 0] for c, p in enumerate(params)], 1)
    return scores, scores > np.array([p["tau"] for p in params])[None]


def _features(prob: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C, F) per-class features of the probability maps."""
    if kind == "linear":
        return F.adaptive_avg_pool2d(prob, 8).flatten(2)
    flat = prob.flatten(2)
    k = max(1, int(round(0.01 * flat.shape[-1])))
    return torch.stack([flat.amax(-1), flat.mean(-1), flat.topk(k, dim=-1).values.mean(-1)], -1)


class PerClassLinear(nn.Module):
    def __init__(self, n_classes: int, n_features: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_classes, n_features))
        self.b = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x):  # (N, C, F)
        return (x * self.w).sum(-1) + self.b


class MaskCNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_classes, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, n_classes))

    def forward(self, x):
        return self.net(x)


def train_summarizer(kind: str, prob: np.ndarray, raw: np.ndarray, seed: int = 0, steps: int = 200):
    """Fit a trained summarizer on (N, C, H, W) maps (``embedding``: (N, D) decoder
    features) and raw labels; returns a scoring function of the same kind of input."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the models are tiny: more threads only add overhead
    try:
        return _train_summarizer(kind, prob, raw, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _train_summarizer(kind, prob, raw, seed, steps):
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(prob, np.float32))
    y = torch.as_tensor((raw == 1).astype(np.float32))
    w = torch.as_tensor(((raw == 1) | (raw == 0)).astype(np.float32))
    C = y.shape[1]
    if kind == "cnn-mask":
        model, feat = MaskCNN(C), (lambda p: p)
    elif kind == "embedding":
        model, feat = nn.Linear(x.shape[1], C), (lambda p: p)
    else:
        f0 = _features(x[:1], kind)
        model, feat = PerClassLinear(C, f0.shape[-1]), (lambda p: _features(p, kind))
    fx = feat(x)
    mu = fx.mean(0, keepdim=True) if kind != "cnn-mask" else 0.0
    sd = fx.std(0, keepdim=True).clamp_min(1e-3) if kind != "cnn-mask" and len(fx) > 1 else 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=0.02 if kind != "cnn-mask" else 0.005, weight_decay=1e-2)
    bs = 64
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=g)[:bs]
        loss = masked_bce(model((fx[idx] - mu) / sd), y[idx], w[idx])
        if kind == "embedding":  # hundreds of features, few labelled images: a ridge penalty
            loss = loss + EMBEDDING_L2 * model.weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    def score(p: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(model((feat(torch.as_tensor(np.asarray(p, np.float32))) - mu) / sd)).numpy()

    return score


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


# ----------------------------------------------------------------------------- evaluation
def masked_aurocs(scores: np.ndarray, raw: np.ndarray, names: list[str]) -> dict:
    known = ((raw == 1) | (raw == 0)).astype(np.float32)
    return auroc_per_class(scores, np.nan_to_num(raw), known, names)


def conditioned_recall(scores: np.ndarray, test) -> dict | None:
    """Recall at 90 % specificity on the test negatives, by lesion-area tercile and location."""
    raw, masks, ok = test.raw, test.masks, test.mask_ok
    H, W = masks.shape[-2:]
    rows = []  # (detected, area fraction, cy, cx)
    for c in range(raw.shape[1]):
        neg = scores[raw[:, c] == 0, c]
        if not len(neg):
            continue
        thr = np.quantile(neg, SPECIFICITY, method="higher")
        for i in np.flatnonzero((raw[:, c] == 1) & (ok[:, c] > 0)):
            m = np.asarray(masks[i, c]) > 0
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            rows.append((bool(scores[i, c] > thr), m.mean(), ys.mean() / H, xs.mean() / W))
    if not rows:
        return None
    det = np.array([r[0] for r in rows])
    area = np.array([r[1] for r in rows])
    edges = np.quantile(area, [1 / 3, 2 / 3])
    tercile = np.digitize(area, edges, right=True)

    def cell(sel):
        return {"recall": float(det[sel].mean()) if sel.any() else None, "n": int(sel.sum())}

    size = {name: cell(tercile == k) for k, name in enumerate(("small", "medium", "large"))}
    size["edges_area_fraction"] = [float(e) for e in edges]
    row = np.minimum((np.array([r[2] for r in rows]) * 3).astype(int), 2)
    side = np.array([r[3] for r in rows]) >= 0.5
    loc = {f"{v}_{h}": cell((row == k) & (side == s))
           for k, v in enumerate(("upper", "middle", "lower")) for s, h in ((False, "image_left"), (True, "image_right"))}
    return {"specificity": SPECIFICITY, "overall": cell(np.ones(len(det), bool)), "by_size": size, "by_location": loc}


def segmenter_iou(prob: np.ndarray, test, names: list[str]) -> dict:
    per = {}
    for c, name in enumerate(names):
        ious = []
        for i in np.flatnonzero(test.mask_ok[:, c] > 0):
            t = np.asarray(test.masks[i, c]) > 0
            if not t.any():
                continue
            p = np.asarray(prob[i, c], np.float32) > 0.5
            ious.append((p & t).sum() / max((p | t).sum(), 1))
        per[name] = float(np.mean(ious)) if ious else None
    vals = [v for v in per.values() if v is not None]
    return {"per_class": per, "mean": float(np.mean(vals)) if vals else None}


def chest_tubes(root: str, ids: list[str]) -> np.ndarray | None:
    """(N,) bool chest tube per test image from the phantom's ground truth, or None.
    ``chest_tubes.csv`` lists every image; older phantoms only have ``ground_truth.csv``,
    whose rows are per finding (an image with a tube and no finding is missing there)."""
    path = Path(root) / "findings" / "chest_tubes.csv"
    if not path.is_file():
        path = Path(root) / "findings" / "ground_truth.csv"
    if not path.is_file():
        return None
    tube: dict[str, bool] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "chest_tube" not in (reader.fieldnames or []):
            return None
        for row in reader:
            p = row["Path"].strip()
            v = row["chest_tube"].strip() in ("1", "1.0", "True", "true")
            for key in (p, p.split("/", 1)[-1]):
                tube[key] = tube.get(key, False) or v
    return np.array([tube.get(i, tube.get(i.split("/", 1)[-1], False)) for i in ids])


def robust_pneumothorax(methods: dict, test, names: list[str], root: str) -> dict | None:
    if "Pneumothorax" not in names:
        return None
    tube = chest_tubes(root, test.ids)
    if tube is None:
        return None
    c = names.index("Pneumothorax")
    y = test.raw[:, c]
    keep = ((y == 1) & ~tube) | ((y == 0) & tube)
    out = {"n_pos_without_tube": int(((y == 1) & ~tube).sum()), "n_neg_with_tube": int(((y == 0) & tube).sum()),
           "auroc": {}}
    for m, sc in methods.items():
        out["auroc"][m] = auroc(sc[keep, c], (y[keep] == 1).astype(int)) if keep.any() else math.nan
    return out


# ----------------------------------------------------------------------------- the run
def engine_settings(s, epochs, batch_size, monitor="epoch"):
    return EngineSettings(epochs=epochs, batch_size=batch_size, lr=s.lr, seed=s.seed, device=s.device,
                          num_workers=s.num_workers, monitor=monitor, monitor_mode="max", progress=s.progress,
                          accumulate=s.accumulate)


def task_image_size(s: FinetuneSettings) -> int:
    if s.image_size:
        check_positive(image_size=s.image_size)
        return s.image_size
    if s.init != "random" and not s.init.startswith("imagenet:"):
        size = read_config(s.init, kind="segmenter")["doll"].get("image_size")
        if size:
            return int(size)
    if s.dataset == "phantom":
        meta = Path(s.root) / "phantom.json"
        if meta.is_file():
            try:
                return int(json.loads(meta.read_text()).get("size") or 256)
            except (OSError, ValueError):
                pass
    return 256


def choices(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """A comma-separated option value ("all" = every allowed one) checked against ``allowed``."""
    value = str(value or "")
    if value == "all":
        return list(allowed)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if not chosen or any(v not in allowed for v in chosen):
        raise DollError(f"unknown {option} {value!r}; choose all or some of {', '.join(allowed)} (comma-separated)")
    return chosen


def check_single_seed_run(s: FinetuneSettings) -> None:
    """The checks every single-seed task (seg4cls, mixed) makes before loading data."""
    check_fraction(s.label_fraction)
    check_positive(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr)
    resolve_device(s.device)
    if s.seeds != 1:
        raise DollError(f"--task {s.task} runs one seed; use --seed N and repeat the command for more")


def seg4cls(s: FinetuneSettings) -> dict:
    check_single_seed_run(s)
    chosen = choices(s.summarizer or "all", SUMMARIZERS, "--summarizer")
    if s.pseudo not in PSEUDO:
        raise DollError(f"unknown pseudo-mask mode {s.pseudo!r}; choose one of {', '.join(PSEUDO)}")
    t0 = time.time()
    torch.manual_seed(s.seed)
    size = task_image_size(s)
    names, sources, train, val, test, test_split, val_desc = load_parts(s, size)
    C = len(names)
    out = prepare_out_dir(s.out, resume=s.resume, overwrite=s.overwrite, settings=asdict(s)) if dist.is_main() \
        else Path(s.out)
    config = {"command": "finetune", **asdict(s), "summarizers": chosen, "image_size_used": size, "classes": names,
              "mask_structures": sources, "test_split": test_split, "validation": val_desc}
    if dist.is_main():
        write_json(out / "config.json", config)

    # -- 1. segmenter on a few masks
    n = len(train)
    k = max(1, int(round(s.label_fraction * n)))
    subset = np.sort(np.random.default_rng(s.seed).permutation(n)[:k])
    # the few masks cycled to one pass over the training images per epoch: as many samples as
    # the classifier sees (each copy augmented differently); BatchNorm needs two per batch
    seg_idx = np.resize(subset, max(n, 2))
    model, init_info = build_model(s, C)
    params = set_mode(model, s.mode, size)
    seg_task = ProbSegTask(names, background_weight=1.0, dice_weight=0.5)
    seg_train = ArrayDataset(train.images, masks=train.masks, valid=train.mask_ok, augment=True,
                             seed=s.seed, indices=seg_idx)
    ck = {"kind": "segmenter", "stage": "finetune", "task": "seg4cls", "classes": names, "mode": s.mode,
          "in_channels": 1, "image_size": size, "normalisation": NORMALISATION, **init_info,
          "run": {"command": "finetune", **asdict(s)}}
    engine = Engine(model, seg_task, engine_settings(s, s.epochs, min(s.batch_size, len(seg_idx))),
                    out / "segmenter", ck, smp_config(model))
    seg_val = ArrayDataset(val.images, masks=val.masks, valid=val.mask_ok)  # scored every epoch, not selected on
    seg_curve = [{"epoch": r["epoch"], "val_iou": r.get("val_iou")}
                 for r in engine.fit(seg_train, seg_val, resume=s.resume)["history"]]
    bs = s.batch_size
    semi = None
    if s.pseudo != "none":
        teacher_test = predict_all(engine.model, seg_task, ArrayDataset(test.images), bs, engine.device)["prob"]
        teacher_train = predict_all(engine.model, seg_task, ArrayDataset(train.images), bs, engine.device)["prob"]
        masks, valid = pseudo_masks(teacher_train, train, subset, boosted=s.pseudo == "boosted")
        torch.manual_seed(s.seed)
        student, _ = build_model(s, C)
        set_mode(student, s.mode, size)
        engine = Engine(student, seg_task, engine_settings(s, s.epochs, min(bs, n)), out / "student",
                        {**ck, "semi_supervised": s.pseudo}, smp_config(student))
        engine.fit(ArrayDataset(train.images, masks=masks, valid=valid, augment=True, seed=s.seed), None,
                   resume=s.resume)
        has_real = np.zeros(n, bool)
        has_real[subset] = True
        semi = {"mode": s.pseudo, "teacher_iou_on_test_positives": segmenter_iou(teacher_test, test, names),
                "pseudo_images": int((~has_real).sum()),
                "pseudo_class_maps_used": int(valid[~has_real].sum()),
                "pseudo_class_maps_dropped": int((valid[~has_real] == 0).sum())}
    pred_val = predict_all(engine.model, seg_task, ArrayDataset(val.images), bs, engine.device)
    pred_test = predict_all(engine.model, seg_task, ArrayDataset(test.images), bs, engine.device)
    prob_val, prob_test = pred_val["prob"], pred_test["prob"]

    scores: dict[str, np.ndarray] = {}
    details: dict[str, dict] = {}
    if "rule" in chosen:
        rule = fit_summary_rule(prob_val, val.raw)
        sc, dec = apply_summary_rule(prob_test, rule)
        scores["seg4cls_rule"] = sc
        y = test.raw
        test_ba = {}
        for c, name in enumerate(names):
            yc = y[:, c]
            test_ba[name] = float(_balanced_accuracy(dec[:, c], yc)) if (yc == 1).any() and (yc == 0).any() else None
        details["seg4cls_rule"] = {"score": "pixels with probability > t",
                                   "thresholds": {name: rule[c] for c, name in enumerate(names)},
                                   "test_balanced_accuracy": test_ba}
    for kind in ("linear", "pool-linear", "cnn-mask", "embedding"):
        if kind in chosen:
            if not ((val.raw == 1) | (val.raw == 0)).any():
                raise DollError("the validation split has no known image labels to train the summarizers on")
            key = "embedding" if kind == "embedding" else "prob"
            f = train_summarizer(kind, pred_val[key], val.raw, seed=s.seed)
            scores[f"seg4cls_{kind}"] = f(pred_test[key])
            details[f"seg4cls_{kind}"] = {"trained_on": f"validation image labels ({val_desc}, n={len(val)})"}

    if s.baselines:
        _baselines(s, names, train, val, test, subset, size, out, ck, scores, details)

    # -- 4. metrics
    methods = {}
    for m, sc in scores.items():
        a = masked_aurocs(sc, test.raw, names)
        methods[m] = {"auroc": a["per_class"], "mean_auroc": a["mean"],
                      "conditioned_recall": conditioned_recall(sc, test), **details.get(m, {})}
    seg_iou = segmenter_iou(prob_test, test, names)
    val_iou = segmenter_iou(prob_val, val, names)
    result = {"command": "finetune", "task": "seg4cls", "dataset": s.dataset, "init": s.init, "mode": s.mode,
              "label_fraction": s.label_fraction, "image_size": size, "test_split": test_split,
              "validation": val_desc, "classes": names, "mask_structures": sources,
              "n_train": n, "n_masks": int(k), "n_val": len(val), "n_test": len(test),
              "mask_ids": [train.ids[i] for i in subset][:50],
              "mean_auroc": {m: v["mean_auroc"] for m, v in methods.items()},
              "mean_iou": seg_iou["mean"], "segmenter": {"iou_on_test_positives": seg_iou, "iou_on_validation_positives": val_iou,
                                         "curve": seg_curve, **params},
              "methods": methods, "semi_supervised": semi, "robust_pneumothorax": None, "seconds": None}
    if s.dataset == "phantom":
        result["robust_pneumothorax"] = robust_pneumothorax(scores, test, names, s.root)
    result["seconds"] = round(time.time() - t0, 2)
    if dist.is_main():
        write_json(out / "metrics.json", result)
    return result


def _baselines(s, names, train, val, test, subset, size, out, ck, scores, details) -> None:
    """Train the plain classifier and the Y-Net-style multitask net; add their test scores."""
    C, n, bs = len(names), len(train), s.batch_size
    # -- 2. plain classifier on all training image labels
    y_tr, w_tr = train.targets()
    y_va, w_va = val.targets()
    y_te, w_te = test.targets()
    arch = s.encoder if s.encoder in CLASSIFIER_ARCHS else "resnet18"
    if s.init != "random" and not s.init.startswith("imagenet:"):
        enc = read_config(s.init, kind="segmenter")["doll"].get("encoder")
        arch = enc if enc in CLASSIFIER_ARCHS else "resnet18"
    torch.manual_seed(s.seed)
    clf = build_classifier(arch, C)
    cls_task = ClassificationTask(names)
    val_cls = ArrayDataset(val.images, y_va, w_va)
    test_cls = ArrayDataset(test.images, y_te, w_te)
    ce = Engine(clf, cls_task, engine_settings(s, s.epochs, bs, "val_auroc"), out / "classifier",
                {"kind": "classifier", "arch": arch, "classes": names, "in_channels": 1, "image_size": size,
                 "normalisation": NORMALISATION, "seed": s.seed, "dataset": s.dataset})
    ce.fit(ArrayDataset(train.images, y_tr, w_tr, augment=True, seed=s.seed), val_cls, resume=s.resume)
    load_into(ce.model, out / "classifier")
    scores["classifier"] = predict_all(ce.model, cls_task, test_cls, bs, ce.device)["prob"]
    # the baseline classifier always starts from random weights and trains fully, whatever --init
    # and --mode say about the segmenters: with a pretrained --init the comparison favours those
    details["classifier"] = {"arch": arch, "n_train": n, "init": "random", "mode": "full"}

    # -- 3. multitask (Y-Net style)
    torch.manual_seed(s.seed)
    seg2, _ = build_model(s, C)
    set_mode(seg2, s.mode, size)
    ynet = YNet(seg2, C)
    seg_w = np.zeros_like(train.mask_ok)
    seg_w[subset] = train.mask_ok[subset]
    mt_task = MultitaskTask(names)
    me = Engine(ynet, mt_task, engine_settings(s, s.epochs, bs, "val_auroc"), out / "multitask",
                {**ck, "kind": "multitask"})
    me.fit(ArrayDataset(train.images, y_tr, w_tr, masks=train.masks, augment=True, seed=s.seed, valid=seg_w),
           ArrayDataset(val.images, y_va, w_va, masks=val.masks, valid=np.zeros_like(val.mask_ok)),
           resume=s.resume)
    load_into(me.model, out / "multitask")
    scores["multitask"] = predict_all(me.model, mt_task, ArrayDataset(test.images, y_te, w_te, masks=test.masks,
                                                                    valid=np.zeros_like(test.mask_ok)),
                                      bs, me.device)["prob"]
    details["multitask"] = {"n_masks": len(subset), "n_images": n}
