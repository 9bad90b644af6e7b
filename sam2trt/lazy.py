"""Modules imported on first use: :func:`lazy_import`, as Polygraphy's ``polygraphy.mod.lazy_import``.

The rule of the package (checked by ``tests/test_imports.py``): every import of
a ``sam2trt`` module is at the top of its file. A module whose top level
imports torch or the official ``sam2`` package (:mod:`sam2trt.export.modules`)
is named there with :func:`lazy_import` instead, so that the commands that do
not export (``track``, ``doctor``, ``--help``) never import torch::

    modules = lazy_import("sam2trt.export.modules")   # at the top of the file
    ...
    modules.ImageEncoder(model)                        # imported here, once

Optional third-party packages (tensorrt, cuda-python, onnxruntime, openvino,
ray, torch) are imported inside the functions that need them, next to the
error that names their install command.

A leaf: imports no other ``sam2trt`` module.
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for a module until one of its attributes is read; then imports it and delegates.

    The import goes through :func:`importlib.import_module` on every attribute
    read (a ``sys.modules`` lookup once imported), so a module replaced in
    ``sys.modules`` (a test's stand-in) is the one used.
    """

    def __init__(self, name: str):
        super().__init__(name, f"imported on first use: {name}")

    def _module(self) -> types.ModuleType:
        return importlib.import_module(self.__name__)

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):  # copy/pickle/inspect probes: do not import
            raise AttributeError(attr)
        return getattr(self._module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


def lazy_import(name: str) -> LazyModule:
    """A stand-in for module ``name`` that imports it when one of its attributes is first read.

    Args:
        name: absolute module name, e.g. ``"sam2trt.export.modules"``.

    Returns:
        A :class:`LazyModule`. Reading an attribute raises what importing
        ``name`` raises (``ImportError`` when it or a dependency is missing).
    """
    return LazyModule(name)
