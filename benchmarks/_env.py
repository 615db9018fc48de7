"""The start every synthetic-vector benchmark shares, and the small helpers they share. Import
it first, before numpy and torch:

    import _env  # before numpy / torch: thread settings
    _THREADS_DEFAULT = _env.setup(2)

``setup`` fixes the thread counts that numpy, torch and FAISS read when they load, and puts the
repository root and this folder on ``sys.path`` (the benchmarks run from a checkout, and share
``_synthetic``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def setup(threads: int = 2) -> int:
    """Default ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` to ``threads`` (a variable already set
    wins) and ``OMP_WAIT_POLICY`` to ``PASSIVE``: torch and faiss-cpu each bring an OpenMP
    runtime, and on a shared 2-core CPU their spinning worker threads starve each other (a 1 ms
    flat search took 48 ms). Returns ``threads`` (the ``--threads`` default)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for path in (str(HERE), str(HERE.parent)):  # the root ends up first, as before
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    return threads


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
