"""The core package type-checks clean under mypy (settings in pyproject.toml, ``[tool.mypy]``).

Skipped when mypy is not installed (it is in the ``dev`` extra).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_core_package_type_checks() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "metaembed_rag"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        "mypy metaembed_rag found type errors:\n" + result.stdout[-6000:] + result.stderr[-2000:]
    )
