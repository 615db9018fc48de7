"""scripts/suite_table.py: the docs' suite tables and the default model's target checks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "suite_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("suite_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _res(a: list[float], b: list[float], bm25: tuple[float, float], mp: tuple[float, float]):
    budgets = ["1,1", "2,4", "16,64"]

    def row(curve, b0, m0):
        return {
            "budgets": {k: {"ndcg@10": v} for k, v in zip(budgets, curve, strict=True)},
            "baselines": {"bm25": {"ndcg@10": b0}, "mean-pool": {"ndcg@10": m0}},
        }

    sets = {"x": row(a, bm25[0], mp[0]), "y": row(b, bm25[1], mp[1])}
    macro = row([(p + q) / 2 for p, q in zip(a, b, strict=True)], sum(bm25) / 2, sum(mp) / 2)
    return {"datasets": sets, "macro": macro}


def test_table_and_targets(tmp_path: Path) -> None:
    mod = _module()
    res = _res([0.50, 0.52, 0.56], [0.60, 0.61, 0.64], (0.50, 0.55), (0.52, 0.60))
    text = mod.table(res, "ndcg@10")
    assert "| x | 0.5000 | 0.5200 | 0.5600 | 0.5000 | 0.5200 |" in text
    assert "| **macro** | 0.5500 | 0.5650 | 0.6000 | 0.5250 | 0.5600 |" in text
    lines = mod.targets(res, "ndcg@10")
    assert lines[0].endswith("met (+0.0400)")  # 0.600 vs max(0.525, 0.560) + 0.02
    assert "met (worst x +0.0400)" in lines[1]
    assert lines[2].endswith("met (+0.0500)")
    assert lines[3].startswith("macro non-decreasing within 0.003: met")
    worse = _res([0.50, 0.49, 0.51], [0.60, 0.58, 0.57], (0.50, 0.55), (0.52, 0.60))
    missed = mod.targets(worse, "ndcg@10")
    assert all("missed" in line for line in missed), missed
    assert (
        "worst y -0.0300" in missed[1] and "largest drop below a smaller budget 0.0150" in missed[3]
    )
    # the command line prints the table, a difference table and the checks
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(res))
    b.write_text(json.dumps(worse))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(a), "--against", str(b)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| y | +0.0000 | +0.0300 | +0.0700 |" in out
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"budgets": {}}))
    bad = subprocess.run([sys.executable, str(SCRIPT), str(single)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")
