"""Let a module that shares its name with an API function be called like that function.

``doll.explain`` is both a function (``doll.explain(classifiers=...)``, the documented
Python API) and a subpackage (``doll.explain.run``). Once the subpackage is imported,
Python binds the name ``doll.explain`` to it, so the package itself must be callable.
"""
from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling module ``module_name`` calls ``target`` ("package.module:function")."""
    module_path, function = target.split(":")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(module_path), function)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
