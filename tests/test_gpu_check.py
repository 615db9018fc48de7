"""benchmarks/gpu_check.py without a GPU: one message, status 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CUDA device is present: the check would run"
)
def test_gpu_check_exits_with_a_message_on_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: no CUDA device")
