"""Smoke test: benchmarks/scale_out.py's index part runs end to end on tiny inputs (the Ray part
is the slow tests' job: tests/test_distributed.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("qdrant_client", reason="the benchmark needs the qdrant extra")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_scale_out_index_part_smoke(tmp_path: Path, capsys) -> None:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_scale_out", BENCH / "scale_out.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    mod.main(["--parts", "index", "--n", "300", "--dim", "16", "--chunk", "128", "--queries", "3",
              "--fetch-k", "400", "--prefixes", "64", "4+16+64", "--workdir", str(tmp_path),
              "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["index"]
    assert [r["backend"].split()[0] for r in rows] == ["local", "Qdrant", "Qdrant"]
    # fetch_k covers the collection: both are exact, so recall against exhaustive is 1
    assert all(r["recall@10"] == 1.0 for r in rows)
    assert rows[1]["bytes_per_doc_stored"] == 16 * 4 * (1 + 64)
    assert rows[2]["bytes_per_doc_stored"] == 16 * 4 * (1 + 4 + 16 + 64)
    assert rows[0]["disk_bytes"] > 0 and rows[1]["disk_bytes"] is None
    assert "recall@10 1.000" in capsys.readouterr().out
