"""No integration package imports a sibling package at run time (the fast half of
``test_standalone_installs.py``, which installs each package alone and is ``slow``).

A sibling is not a dependency of the package (each depends only on the core and its
framework), so ``from llama_index.embeddings.metaembed import ...`` inside the reranker package
works in this repository's environment, where every package is installed, and fails for a user
who installed only the reranker. What the packages share lives in the core
(``metaembed_rag.frameworks``). Imports under ``if TYPE_CHECKING:`` are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _integration_packages import PACKAGES

MODULES = [module for _, module, _ in PACKAGES]


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _sibling(name: str, own: str) -> str | None:
    for module in MODULES:
        if module != own and (name == module or name.startswith(module + ".")):
            return module
    return None


@pytest.mark.parametrize(("folder", "module", "_"), PACKAGES, ids=[p[0].name for p in PACKAGES])
def test_package_code_imports_no_sibling_package(folder: Path, module: str, _: str) -> None:
    code = folder / Path(*module.split("."))
    files = sorted(code.rglob("*.py"))
    assert files, f"no Python files under {code}"
    bad = [
        f"{path.relative_to(folder)}:{line} imports {name}"
        for path in files
        for line, name in _runtime_imports(ast.parse(path.read_text(), str(path)))
        if _sibling(name, module)
    ]
    assert not bad, "sibling packages imported at run time (import from the core instead):\n" + (
        "\n".join(bad)
    )


def test_the_check_sees_a_sibling_import() -> None:
    """The scan flags the import that once broke the reranker's standalone install, and lets
    a ``TYPE_CHECKING`` one through."""
    code = (
        "from typing import TYPE_CHECKING\n"
        "from llama_index.embeddings.metaembed.inputs import node_input\n"
        "if TYPE_CHECKING:\n"
        "    from llama_index.vector_stores.metaembed import MetaEmbedVectorStore\n"
    )
    names = [n for _, n in _runtime_imports(ast.parse(code))]
    own = "llama_index.postprocessor.metaembed_rerank"
    assert [n for n in names if _sibling(n, own)] == ["llama_index.embeddings.metaembed.inputs"]
