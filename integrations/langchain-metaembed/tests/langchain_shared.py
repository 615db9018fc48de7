"""Shared by the langchain-metaembed test files (imported by name: pytest puts this folder on
``sys.path`` for its ``conftest.py``): a small health/space corpus and the parameters of the
standard embeddings suites."""

from __future__ import annotations

from typing import Any

from metaembed_rag import DEFAULT_MODEL

from langchain_metaembed import MetaEmbedEmbeddings

#: Short passages: five about health, three about space (the last ones added later).
HEALTH_TEXTS = [
    "Insulin resistance is a major cause of type 2 diabetes.",
    "Regular exercise improves insulin sensitivity.",
    "The Moon orbits the Earth roughly every 27 days.",
    "Vitamin D deficiency is common in northern latitudes.",
    "Statins lower LDL cholesterol.",
    "Paris is the capital of France.",
    "Type 1 diabetes is an autoimmune disease.",
    "Jupiter is the largest planet.",
]


class DefaultModelEmbeddingsParams:
    """What LangChain's standard embeddings suites (unit and integration) construct: a
    :class:`MetaEmbedEmbeddings` on the packaged default model."""

    @property
    def embeddings_class(self) -> type[MetaEmbedEmbeddings]:
        return MetaEmbedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model_name": DEFAULT_MODEL}
