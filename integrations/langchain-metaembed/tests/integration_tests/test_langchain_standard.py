"""LangChain's standard integration suites (``langchain-tests``), run in full.

Embeddings and the retriever use the packaged default model; the vector-store suite drives
``MetaEmbedVectorStore`` in single-vector mode with the suite's own fake embeddings (its
``get_embeddings()``), and once more in multi-vector mode with the default model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_shared import HEALTH_TEXTS, DefaultModelEmbeddingsParams
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from langchain_metaembed import (
    MetaEmbedEmbeddings,
    MetaEmbedRetriever,
    MetaEmbedVectorStore,
)


class TestMetaEmbedEmbeddingsIntegration(DefaultModelEmbeddingsParams, EmbeddingsIntegrationTests):
    pass


class TestMetaEmbedVectorStoreSingleVector(VectorStoreIntegrationTests):
    """Single-vector mode, the suite's ``DeterministicFakeEmbedding`` (sync and async)."""

    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        store = MetaEmbedVectorStore(self.get_embeddings())
        try:
            yield store
        finally:
            store.delete()  # ids=None: every document (LangChain's delete contract)


class TestMetaEmbedVectorStoreMultiVector(VectorStoreIntegrationTests):
    """Multi-vector mode with the default model: the same contract at budget (16,64)."""

    @pytest.fixture
    def vectorstore(self, default_embeddings: MetaEmbedEmbeddings) -> Iterator[VectorStore]:
        store = MetaEmbedVectorStore(default_embeddings)
        try:
            yield store
        finally:
            store.delete()
            assert len(store) == 0


class TestMetaEmbedRetriever(RetrieversIntegrationTests):
    _store: MetaEmbedVectorStore | None = None

    @classmethod
    def _shared_store(cls) -> MetaEmbedVectorStore:
        # Built once for the class: the suite constructs several retrievers from the params.
        if TestMetaEmbedRetriever._store is None:
            TestMetaEmbedRetriever._store = MetaEmbedVectorStore.from_texts(
                HEALTH_TEXTS[:6], MetaEmbedEmbeddings(), ids=[f"d{i}" for i in range(6)]
            )
        return TestMetaEmbedRetriever._store

    @property
    def retriever_constructor(self) -> type[MetaEmbedRetriever]:
        return MetaEmbedRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": self._shared_store(), "k": 2, "budget": (8, 16)}

    @property
    def retriever_query_example(self) -> str:
        return "What causes type 2 diabetes?"
