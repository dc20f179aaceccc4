"""DoLL: diagnosis-oriented localization labels for chest X-ray segmentation.

Every CLI command is a Python call taking the same settings (keyword arguments or
the settings dataclass) and returning the metrics it writes::

    import doll
    doll.make_phantoms("data/phantom", n=200, size=64)
    doll.train_classifiers(dataset="phantom", root="data/phantom", out="runs/cls")
    doll.import_classifier(source="torchvision", arch="resnet18", weights="r18.pt", classes="A,B", out="runs/cls")
    doll.explain(classifiers="runs/cls", dataset="phantom", root="data/phantom", out="runs/labels.h5")
    doll.evaluate_labels("runs/labels.h5")
    doll.pretrain(labels="runs/labels.h5", out="runs/pretrain")
    doll.finetune(task="jsrt", dataset="jsrt", root="data/phantom/anatomy", init="runs/pretrain", out="runs/ft")
    doll.study(task="jsrt", dataset="jsrt", root="data/phantom/anatomy", inits="random,runs/pretrain", out="runs/study")
    doll.predict(model="runs/ft", inputs=["my_images/"], out="runs/pred")
    model, config = doll.load_segmenter("runs/ft")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# doll.<name> -> the module defining it. No API name is also a module's name (the stage
# packages are nouns: doll.explanation holds doll.explain), so nothing shadows a function.
_API = {
    "make_phantoms": "doll.data.phantom",
    "check_dataset": "doll.data.check",
    "open_dataset": "doll.data.registry",
    "train_classifiers": "doll.classification.train",
    "import_classifier": "doll.classification.importer",
    "explain": "doll.explanation.run",
    "evaluate_labels": "doll.labels.evaluate",
    "show_labels": "doll.report.overlay",
    "pretrain": "doll.pretraining.train",
    "finetune": "doll.finetuning.run",
    "study": "doll.studies.run",
    "predict": "doll.prediction.run",
    "load_segmenter": "doll.prediction.model",
    "demo": "doll.demonstration",
}


def __getattr__(name: str):
    """``doll.<name>``: the function, imported on first use (``import doll`` stays fast; torch
    loads then)."""
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'doll' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
