"""Fixtures for the langchain-metaembed tests: the default model (loaded once) and SciFact.

Layout as in LangChain's partner packages: ``unit_tests/`` (no data set; the standard
``EmbeddingsUnitTests``, imports, packaging, the single-vector store with fake embeddings) and
``integration_tests/`` (the default model and SciFact: the standard integration suites, the
chains). The folders have no ``__init__.py``, like every test folder of this repository (pytest
runs them all from the root in one session), so test file names are unique across the
repository (``test_langchain_*``).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

if TYPE_CHECKING:
    from langchain_metaembed import MetaEmbedEmbeddings, MetaEmbedVectorStore

#: ../shared/data/scifact beside the repository (never copied into it).
SCIFACT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "scifact"
#: Files of SciFact the acceptance tests read.
SCIFACT_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
#: SciFact documents used by the chain tests (a few hundred are enough to exercise ranking).
NUM_SCIFACT_DOCS = 200


def _mark_async_tests(*suites: type) -> None:
    """Give the standard suites' ``async def`` tests the ``asyncio`` mark.

    LangChain's own packages run these suites with ``asyncio_mode = "auto"``; this repository
    keeps pytest-asyncio's default strict mode, where an unmarked coroutine test is not run.
    The mark is stored on the suites' function objects themselves (not on overrides), so the
    suites' ``test_no_overrides_DO_NOT_OVERRIDE`` check still sees the original tests. In auto
    mode the mark is redundant and harmless.
    """
    for suite in suites:
        for cls in suite.__mro__:
            for name, fn in vars(cls).items():
                if name.startswith("test_") and inspect.iscoroutinefunction(fn):
                    marks = getattr(fn, "pytestmark", [])
                    if not any(m.name == "asyncio" for m in marks):
                        pytest.mark.asyncio(fn)


_mark_async_tests(
    EmbeddingsUnitTests,
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)


@pytest.fixture(scope="session")
def default_embeddings() -> MetaEmbedEmbeddings:
    """``MetaEmbedEmbeddings()`` on the packaged default model (loaded once per session)."""
    from langchain_metaembed import MetaEmbedEmbeddings

    return MetaEmbedEmbeddings(max_length=128)


@pytest.fixture(scope="session")
def other_model_embeddings() -> MetaEmbedEmbeddings:
    """Another MetaEmbed model on the default model's backbone: fresh Meta tokens (seed 1), so
    another fingerprint with the same shapes (16 x 384 per query, 64 x 384 per document)."""
    from metaembed_rag import MetaEmbedModel

    from langchain_metaembed import MetaEmbedEmbeddings

    return MetaEmbedEmbeddings(client=MetaEmbedModel.from_backbone(seed=1, max_length=128))


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    """The SciFact folder. Missing data fails the tests (they are acceptance tests, never
    skipped): the message says where the data is expected."""
    missing = [name for name in SCIFACT_FILES if not (SCIFACT / name).is_file()]
    assert not missing, (
        f"SciFact is missing {missing} in {SCIFACT}: the LangChain acceptance tests need the "
        "BEIR SciFact folder at ../shared/data/scifact beside the repository "
        "(corpus.jsonl, queries.jsonl, qrels/test.tsv)."
    )
    return SCIFACT


@pytest.fixture(scope="session")
def scifact_corpus(scifact_dir: Path) -> list[dict]:
    """The first ``NUM_SCIFACT_DOCS`` SciFact documents (``_id``, ``title``, ``text``)."""
    path = scifact_dir / "corpus.jsonl"
    docs = []
    with path.open() as f:
        for line in f:
            docs.append(json.loads(line))
            if len(docs) == NUM_SCIFACT_DOCS:
                break
    return docs


@pytest.fixture(scope="session")
def scifact_store(
    default_embeddings: MetaEmbedEmbeddings, scifact_corpus: list[dict]
) -> MetaEmbedVectorStore:
    """A multi-vector ``MetaEmbedVectorStore`` of the SciFact documents (default model)."""
    from langchain_metaembed import MetaEmbedVectorStore

    store = MetaEmbedVectorStore(default_embeddings)
    store.add_texts(
        [f"{d['title']}. {d['text']}" for d in scifact_corpus],
        [{"title": d["title"], "year_bucket": i % 3} for i, d in enumerate(scifact_corpus)],
        ids=[d["_id"] for d in scifact_corpus],
    )
    return store
