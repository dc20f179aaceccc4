"""Stage 1: an ensemble of multi-label chest X-ray classifiers trained on image labels."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from doll.data import labels_of, open_dataset, split_arrays
from doll.data.dataset import NORMALISATION, ArrayDataset
from doll.data.policies import apply_policy
from doll.errors import DollError
from doll.models.checkpoint import load_into
from doll.models.classifier import CLASSIFIER_ARCHS, build_classifier, load_pretrained
from doll.models.lung_field import lung_model_config, mask_images, predict_lung_fields
from doll.outputs import releases_outputs
from doll.train import distributed as dist
from doll.train.engine import Engine, EngineSettings, predict_all
from doll.train.stage import Stage
from doll.train.objectives import ClassificationObjective
from doll.train.metrics import auroc_per_class
from doll.classification.settings import ClassifierSettings  # noqa: F401 - doll.classification.train.ClassifierSettings
from doll.utils import check_positive, resolve_paths

AUTO_VALID_FRACTION = 0.1  # validation patients carved from train when a data set has no valid split


def member_archs(arch: str, members: int) -> list[str]:
    archs = [a.strip() for a in arch.split(",") if a.strip()]
    for a in archs:
        if a not in CLASSIFIER_ARCHS:
            raise DollError(f"unknown --arch {a!r}; choose one of {', '.join(CLASSIFIER_ARCHS)}")
    return cycled(archs, members)


def cycled(values: list, members: int) -> list:
    """One value per member: the values given, repeated in turn."""
    return [values[i % len(values)] for i in range(members)]


def member_hides(hide: float | str, members: int) -> list[float]:
    """The Hide-and-Seek probability of each member: one value, or several cycled over the members."""
    try:
        values = [float(v) for v in str(hide).split(",") if v.strip()]
    except ValueError:
        raise DollError(f"--hide takes probabilities in [0, 1), comma-separated, got {hide!r}") from None
    if not values:
        raise DollError("--hide is empty; give a probability in [0, 1) (0: off)")
    for v in values:
        if not 0 <= v < 1:
            raise DollError(f"--hide is a probability in [0, 1), got {v}")
    return cycled(values, members)


def member_inits(init: str, archs: list[str]) -> list[str]:
    """Each member's initial weights: ``random`` or ``imagenet:<absolute path>`` (one value, or
    several cycled over the members); a file is checked against its member's architecture
    before anything is trained."""
    values = [v.strip() for v in init.split(",") if v.strip()] or ["random"]
    for i, v in enumerate(values):
        if v != "random" and not (v.startswith("imagenet:") and v.split(":", 1)[1].strip()):
            raise DollError(f"--init takes random or imagenet:/path/to/weights.safetensors (torchvision's weights for "
                            f"--arch, a local file: doll never downloads them), got {v!r}")
        if v.startswith("imagenet:"):
            values[i] = "imagenet:" + str(Path(v.split(":", 1)[1]).expanduser().resolve())
    inits = cycled(values, len(archs))
    for arch, v in sorted(set(zip(archs, inits))):
        if v != "random":
            load_pretrained(build_classifier(arch, 1), arch, v.split(":", 1)[1])
    return inits


class TrainClassifiers(Stage):
    """Stage 1 on the run skeleton: the data and its label policies checked (and the images
    decoded) before --out is made, then one network per member."""

    command = "train-classifiers"

    def inputs(self, s: ClassifierSettings) -> dict:
        return {"--root": s.root, "--lung-model": s.lung_model or None,
                **{f"--init {i}": v for i, v in enumerate(s.init.split(",")) if v.startswith("imagenet:")}}

    def prepare(self, s: ClassifierSettings, device) -> SimpleNamespace:
        hides, archs = member_hides(s.hide, s.members), member_archs(s.arch, s.members)
        inits = member_inits(s.init, archs)  # a bad weights file fails before the data is read
        # a bad --root, --dataset, --uncertain or --valid-fraction leaves no empty folder
        opts = {"views": s.views, "valid_fraction": s.valid_fraction, "seed": s.seed}
        validation = "the data set's valid split" if s.valid_fraction == 0 else f"{s.valid_fraction:.0%} of train patients"
        fmt = open_dataset(s.dataset, s.root, **opts)  # opened once
        if s.valid_fraction == 0 and not fmt.items("valid"):
            # NIH, QaTa, folder sets without a split column: validate on patients carved from train
            fmt.carve_from_train(fmt.items(), AUTO_VALID_FRACTION, s.seed)
            validation = f"{AUTO_VALID_FRACTION:.0%} of train patients (the data set has no valid split)"
        show = s.progress and dist.is_main()
        train = split_arrays(fmt, "train", s.image_size, progress=show)
        val = split_arrays(fmt, "valid", s.image_size, progress=show)
        classes = list(fmt.classes)
        if not classes:
            raise DollError(f"dataset {s.dataset!r} has no image labels to train classifiers on")
        y_train, w_train = apply_policy(labels_of(train, len(classes)), s.uncertain, s.blank, s.seed)
        y_val, w_val = apply_policy(labels_of(val, len(classes)), "ignore", "ignore")
        if w_train.sum() == 0:
            raise DollError("every training label is uncertain or blank under this policy; try --uncertain zeros")
        return SimpleNamespace(device=device, validation=validation, train=train, val=val, classes=classes,
                               y_train=y_train, w_train=w_train, y_val=y_val, w_val=w_val,
                               hides=hides, archs=archs, inits=inits)

    def config(self, s: ClassifierSettings, p) -> dict:
        return {"classes": p.classes, "member_archs": p.archs, "member_inits": p.inits, "n_train": len(p.train.items),
                "n_valid": len(p.val.items), "validation": p.validation}

    def train(self, s: ClassifierSettings, p, out: Path) -> dict:
        train_images, val_images = p.train.images, p.val.images
        if s.lung_model:  # shortcut suppression: nothing outside the predicted lung field reaches the classifier
            train_images = mask_images(train_images, predict_lung_fields(s.lung_model, train_images, p.device,
                                                                         s.batch_size))
            val_images = mask_images(val_images, predict_lung_fields(s.lung_model, val_images, p.device, s.batch_size))
        train_set = ArrayDataset(train_images, p.y_train, p.w_train, augment=True, seed=s.seed)
        val_set = ArrayDataset(val_images, p.y_val, p.w_val)
        members, probs = [], []
        for m, arch in enumerate(p.archs):
            member, prob = train_member(s, p, m, arch, train_set, val_set, out / f"member_{m}")
            members.append(member)
            probs.append(prob)
        ens = auroc_per_class(np.mean(probs, axis=0), p.y_val, p.w_val, p.classes)
        return {"command": "train-classifiers", "mean_auroc": ens["mean"], "per_class_auroc": ens["per_class"],
                "members": members, "n_train": len(p.train.items), "n_valid": len(p.val.items),
                "validation": p.validation}


def train_member(s: ClassifierSettings, p, m: int, arch: str, train_set: ArrayDataset, val_set: ArrayDataset,
                 folder: Path) -> tuple[dict, np.ndarray]:
    """Member ``m``: its network trained (best weights by validation AUROC) and its validation probabilities."""
    seed = s.seed + m
    torch.manual_seed(seed)
    model = build_classifier(arch, len(p.classes))
    if p.inits[m] != "random":
        load_pretrained(model, arch, p.inits[m].split(":", 1)[1])
    settings = EngineSettings(epochs=s.epochs, max_steps=s.max_steps, val_every=s.val_every, batch_size=s.batch_size,
                              lr=s.lr, seed=seed, device=s.device, num_workers=s.num_workers, monitor="val_auroc",
                              monitor_mode="max", progress=s.progress, accumulate=s.accumulate, patience=s.patience)
    train_set.seed, train_set.hide = seed, p.hides[m]
    folder.mkdir(parents=True, exist_ok=True)
    ck = {"kind": "classifier", "arch": arch, "classes": p.classes, "in_channels": 1, "image_size": s.image_size,
          "normalisation": NORMALISATION, "seed": seed, "dataset": s.dataset, "uncertain": s.uncertain,
          "lung_model": s.lung_model, "hide": p.hides[m], "init": p.inits[m]}  # lung_model absolute (resolve_paths)
    task = ClassificationObjective(p.classes)
    engine = Engine(model, task, settings, folder, ck)
    metrics = engine.fit(train_set, val_set, resume=s.resume)
    load_into(engine.model, folder)  # evaluate the best weights, not the last epoch's
    pred = predict_all(engine.model, task, val_set, s.batch_size, engine.device)
    return ({"name": folder.name, "arch": arch, "init": p.inits[m], "seed": seed, "hide": p.hides[m],
             "best_step": metrics["best_step"],
             "val_auroc": auroc_per_class(pred["prob"], p.y_val, p.w_val, p.classes)["mean"],
             "history": metrics["history"]}, pred["prob"])


@releases_outputs
def train_classifiers(settings: ClassifierSettings | None = None, **kwargs) -> dict:
    """Train ``members`` classifiers; returns (and writes to ``out/metrics.json``) their metrics."""
    s = settings or ClassifierSettings(**kwargs)
    resolve_paths(s, "root", "lung_model")
    check_positive(members=s.members, epochs=s.epochs, batch_size=s.batch_size, image_size=s.image_size, lr=s.lr)
    if s.lung_model:
        lung_model_config(s.lung_model)  # a bad --lung-model fails before any output is written
    return TrainClassifiers().run(s)
