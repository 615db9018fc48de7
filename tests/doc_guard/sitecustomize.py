"""Installed by tests/test_docs.py (on PYTHONPATH) for the commands of bash blocks: wraps
``MultiVectorIndex.search_rows`` with the empty-filter guard when the module is imported."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_TARGET = "metaembed_rag.index.multivector"


class _GuardFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_guard(module):  # type: ignore[no-untyped-def]
            exec_module(module)
            from empty_filter_guard import guarded

            cls = module.MultiVectorIndex
            cls.search_rows = guarded(cls.search_rows)

        spec.loader.exec_module = exec_and_guard  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _GuardFinder())
