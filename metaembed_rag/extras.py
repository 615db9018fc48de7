"""Optional dependencies: one rule for importing a module that an extra installs.

>>> require("json", "pip install json", "this doctest").__name__
'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, install: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise an ImportError saying what needs it and how to install it.

    Args:
        module: the import name (``"faiss"``, ``"qdrant_client"``...).
        install: the command that installs it (``"pip install 'metaembed-rag[qdrant]'"``).
        purpose: what needs it, the start of the message (``"The Qdrant backend"``).

    Raises:
        ImportError: ``"{purpose} needs {module}: {install}."``, chained to the original.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs {module}: {install}.") from exc
