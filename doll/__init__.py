"""DoLL: diagnosis-oriented localization labels for chest X-ray segmentation.

Every CLI command is a Python call taking the same settings (keyword arguments or
the settings dataclass) and returning the metrics it writes::

    import doll
    doll.make_phantoms("data/phantom", n=200, size=64)
    doll.train_classifiers(dataset="phantom", root="data/phantom", out="runs/cls")
    doll.explain(classifiers="runs/cls", dataset="phantom", root="data/phantom", out="runs/labels.h5")
    doll.evaluate_labels("runs/labels.h5")
    doll.pretrain(labels="runs/labels.h5", out="runs/pretrain")
    doll.finetune(task="jsrt", dataset="jsrt", root="data/phantom/anatomy", init="runs/pretrain", out="runs/ft")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "make_phantoms": "doll.data.phantom",
    "check_dataset": "doll.data.check",
    "open_dataset": "doll.data.registry",
    "train_classifiers": "doll.classify.train",
    "explain": "doll.explain.run",
    "evaluate_labels": "doll.labels.evaluate",
    "show_labels": "doll.report.overlay",
    "pretrain": "doll.pretrain.train",
    "finetune": "doll.finetune.run",
    "demo": "doll.demo",
}


def __getattr__(name):  # lazy: `import doll` stays fast, torch loads on first use
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'doll' has no attribute {name!r}")


__all__ = ["__version__", *_API]
