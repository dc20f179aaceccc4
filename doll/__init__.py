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
import sys
import types

__version__ = "0.1.0"

_API = {
    "make_phantoms": "doll.data.phantom",
    "check_dataset": "doll.data.check",
    "open_dataset": "doll.data.registry",
    "train_classifiers": "doll.classify.train",
    "import_classifier": "doll.classify.importer",
    "explain": "doll.explain.run",
    "evaluate_labels": "doll.labels.evaluate",
    "show_labels": "doll.report.overlay",
    "pretrain": "doll.pretrain.train",
    "finetune": "doll.finetune.run",
    "study": "doll.study.run",
    "predict": "doll.predict.run",
    "load_segmenter": "doll.predict.model",
    "demo": "doll.demo",
}


def _api_function(name: str, module: str) -> property:
    """``doll.<name>``: the function ``<module>.<name>``, imported on first use (``import doll``
    stays fast; torch loads then). Several of these names are also subpackages or modules
    (``doll.explain``, ``doll.pretrain``, ``doll.demo``): importing one makes Python bind it as
    an attribute of ``doll``, over the function. That binding is kept aside here, so the
    name stays the function; the module is reached by importing it (``from doll.explain
    import run``, ``importlib.import_module("doll.demo")``). A value set on purpose (a
    monkeypatched function) is returned as set."""

    def get(package):
        value = package.__dict__.get(name)
        if value is None or isinstance(value, types.ModuleType):
            return getattr(importlib.import_module(module), name)
        return value

    def set_(package, value):
        package.__dict__[name] = value

    def delete(package):
        package.__dict__.pop(name, None)

    return property(get, set_, delete, doc=f"{module}.{name}")


class _Package(types.ModuleType):
    """The class of the module ``doll``: its API names are data descriptors, which the import
    system's ``setattr(doll, "explain", <module doll.explain>)`` cannot replace."""


for _name, _module in _API.items():
    setattr(_Package, _name, _api_function(_name, _module))
sys.modules[__name__].__class__ = _Package  # the one place: every subpackage stays a plain module

__all__ = ["__version__", *_API]
