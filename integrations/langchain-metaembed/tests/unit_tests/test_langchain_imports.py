"""The public API (``__all__``) and the package's declared dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import langchain_metaembed

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

EXPECTED_ALL = [
    "MLLMRerankCompressor",
    "MODEL_ENV_VAR",
    "MetaEmbedEmbeddings",
    "MetaEmbedReranker",
    "MetaEmbedRetriever",
    "MetaEmbedVectorStore",
    "__version__",
]


def test_all_imports() -> None:
    assert sorted(langchain_metaembed.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(langchain_metaembed, name) is not None, name


def _requirements(group: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {Requirement(line).name: Requirement(line) for line in lines}


def test_runtime_dependencies_include_the_default_model() -> None:
    deps = _requirements()
    # MetaEmbedEmbeddings() loads the packaged default model, which needs the `default-model`
    # extra (the MiniLM backbone package and peft); faiss for the store's coarse stage.
    assert {"faiss", "default-model"} <= deps["metaembed-rag"].extras
    assert "langchain-core" in deps
    assert "langchain" not in deps  # never the umbrella package
    for name in ("langchain-classic", "langchain-tests", "pytest"):
        assert name not in deps, f"{name} is a test-only dependency"
    for name, req in deps.items():
        ops = {spec.operator for spec in req.specifier}
        assert ">=" in ops and "<" in ops, f"{name}: give a version range, got {req}"


def test_test_extra_has_the_standard_suites() -> None:
    test = _requirements("test")
    assert {"langchain-tests", "langchain-classic", "pytest", "pytest-asyncio"} <= set(test)
