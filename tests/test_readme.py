"""The README states the two commands a new user needs (its code blocks run in test_docs.py;
.ci/run runs the two commands themselves on a clean clone)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _marked(text: str, marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\n(.*?)<!-- /{marker} -->", text, flags=re.S)
    assert m, f"README.md has no <!-- {marker} --> block"
    return m.group(1)


def test_readme_has_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    main = _marked(text, "main-command")
    assert "pip install torch==2.13.0" in main
    assert "metaembed-rag index examples/sample_docs" in main and "metaembed-rag search" in main
    tests = _marked(text, "test-command")
    assert "python -m pytest" in tests
    assert "integrations/llama-index-metaembed" in tests
    assert "integrations/langchain-metaembed" in tests
    assert text.index("main-command") < text.index("test-command") < text.index("## What it is")
