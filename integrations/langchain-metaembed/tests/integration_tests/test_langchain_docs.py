"""The package README's Python block and examples/langchain_rag.py run (default model)."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2]
REPO = PACKAGE.parents[1]


def test_readme_python_block_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (PACKAGE / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md[python block {i}]", "exec"), {"__name__": "__readme__"})


def test_example_runs_end_to_end(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    scifact_dir: Path,
) -> None:
    argv = ["langchain_rag.py", "--docs", "12", "--save", str(tmp_path / "store")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "examples" / "langchain_rag.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "indexed 12 documents" in out  # SciFact (scifact_dir asserts it is there)
    assert "\nA: According to [" in out
    assert "reopened store gives the same top 5: True" in out
    assert (tmp_path / "store" / "langchain_metaembed.json").is_file()
